//! # lanlink
//!
//! Links a device on a home network (a printer's agent, a camera, any LAN appliance) to a user's
//! cloud account without the user typing anything, with a second factor that only a device on the
//! same LAN can obtain.
//! Its protocol core must not do I/O, read a clock, sleep or use a global RNG, and no state
//! machine may panic on any input (see "What this crate is, and is not").
//!
//! ```text
//!   agent (device, 192.168.1.50)         server (cloud)              linker (browser, same LAN)
//!   ────────────────────────────         ──────────────              ─────────────────────────
//!   new presence_key, local_secret;
//!   instance_id = H(presence_key)
//!   announce {id, ip, port, info,  ───►  key proves id? record under the
//!     H(tag‖id‖secret), key}             announcer's public network (IPv4 / IPv6 /64)
//!                                        discover: same network only, ◄───  GET discover
//!                                        ≤ max_visible, else none     ───►  [{id, ip, port, info}]
//!   secret only to a local caller,  ◄──────────────────────────────────────  GET secret?id (LAN)
//!   valid Host / Origin, in window  ───────────────────────────────────────► {local_secret}
//!                                        same network again, secret   ◄───  link {id, secret}
//!                                        vs commitment (constant time),
//!                                        lockout, mint code
//!   announce                        ───► deliver {secret, code} once
//!   verify secret (constant time);
//!   any failure ends discovery
//!   redeem {id, code}               ───► live, unused, bound to id and
//!                                        network → auth token
//!   Linked                                                             ◄───  link status: linked
//! ```
//!
//! Manual fallback: the server mints a short code for the account ([`server::Server::mint_code`]);
//! the user types it into the agent ([`agent::Agent::enter_code`]), which redeems it through the
//! same checks and the same lockout.
//!
//! ## What this crate is, and is not
//! - A **sans-IO** protocol core: one state machine per party ([`agent::Agent`],
//!   [`server::Server`], [`linker::Linker`]), fed inputs with the current time and an injected
//!   RNG, and drained of outputs. It opens no socket, reads no clock, sleeps never, and uses no
//!   global RNG. On top: the [`transport`] traits, the tokio drivers (`driver`, feature `tokio`),
//!   and the HTTP adapter (`http`, feature `http`, on by default, in two halves `http-server` and
//!   `http-client`; the wire is in `PROTOCOL.md`).
//!   The server's records sit behind the [`server::Backend`] trait: one [`server::Server`] type
//!   runs the operations over any store, in memory by default, or Redis shared by many instances
//!   (`server::redis`, feature `redis`).
//! - It does **not** defend against an attacker on the same LAN during the discovery window: such
//!   a device can fetch the secret as the user's browser can. The window (10 minutes at most) and
//!   the one-visible rule bound that exposure; manual codes exist for networks that cannot rely on
//!   it.
//! - The contract of every state machine: **no panic on any input**. A panic is a bug.
//!
//! ## Security properties
//! - The client address comes from the socket peer unless that peer is a configured trusted proxy
//!   ([`ClientAddrResolver`]); a trusted proxy that does not name its client gets a refusal, never
//!   its own address (the 2021 Obico incident).
//! - The server keeps only a commitment to the secret; the secret passes through it once, on its
//!   way to the agent, and is dropped on delivery or after 60 s.
//! - No one but the agent can announce as the agent: its instance id derives from a presence key
//!   that only it holds and sends only to the server ([`secret::PresenceKey`]).
//! - Secrets, codes and tokens are redacted in `Debug`/`Display`, compared with [`subtle`],
//!   zeroized on drop, and drawn from a CSPRNG ([`os_rng`] for everyday use).
//! - Failed guesses (secrets, instance ids, codes) lock the guessing network out.
//!
//! ## Features
//!
//! The core (the state machines, [`wire`], [`transport`], [`endpoint`], the server's routes as a
//! function ([`server::endpoint`]), the in-memory store)
//! needs none of them: `default-features = false` builds it alone. Each feature builds on its own.
//!
//! | feature | default | enables | public dependencies it exposes |
//! | --- | --- | --- | --- |
//! | (core) | always | everything not listed below | `chrono` 0.4 (with `now`: `lanlink::chrono::Utc::now()`), `ipnet` 2, `rand` 0.9, `async-trait` 0.1, `serde` 1, `zeroize` 1, re-exported as `lanlink::{chrono, ipnet, rand, async_trait, serde, zeroize}` |
//! | `http` | on | `http-server` and `http-client` together | those of both halves |
//! | `http-server` | via `http` | `http::{server, agent, web, serve, Authenticator, BearerTokens, status_of, …}`: the axum routers for the server, the agent's local endpoint and the linking page, the hardened serve loop; with `ticket`, `http::ticket`. Implies `tokio` | `axum` 0.8 and `http` 1 (`Router`, `request::Parts`, `Response`, `StatusCode`), re-exported as `lanlink::http::{axum, http}`; `tokio` 1 (`JoinHandle`) |
//! | `http-client` | via `http` | `http::client`: the reqwest clients (`HttpAgentClient`, `HttpLinkerClient`, `Credential`), plain HTTP only | `reqwest` 0.13 (`Client`, `ClientBuilder`, `header::HeaderName`), re-exported as `lanlink::http::reqwest` |
//! | `tls` | off | HTTPS for the `http-client` clients: reqwest's `rustls` (the aws-lc-rs provider, built with no system package; the platform's verifier), and `http::client::default_client_with_roots` to trust a private CA. Requests to devices stay plain HTTP. Implies `http-client` | those of `http-client` (`reqwest::Certificate`) |
//! | `tokio` | via `http-server` | `driver`: the async drivers of the agent and the linker over the transport traits | `tokio` 1 (the drivers need a tokio runtime with the time driver) |
//! | `redis` | off | `server::redis`: the store in Redis or a Redis Cluster, shared by many instances. Implies `tokio` | `redis` 1 (`RedisError`, `aio::ConnectionManager`, `ConnectionLike`), re-exported as `lanlink::redis` |
//! | `ticket` | off | `ticket`: signed network tickets; `server::mqtt`: the server's MQTT wire as a function; with `http-server` the ticket route, with `http-client` `HttpAgentClient::ticket` | none |
//! | `mqtt` | off | `mqtt`: the agent ↔ server channel over an MQTT broker. Implies `tokio`, `http-server`, `http-client`, `ticket` | `rumqttc` 0.25, re-exported as `lanlink::mqtt::rumqttc` |
//! | `obico-wire` | via `obico` | `obico` without adapters: the profile's operations, `ObicoConfig`, `obico::tokens`, and its HTTP wire as a function (`obico::endpoint`), served by any HTTP stack | none |
//! | `obico` | off | `obico`: the Obico wire profile, `obico-wire` with its axum routes (`obico::server`, a shell over `obico::endpoint`) and a reqwest linker. Implies `obico-wire`, `http-server`, `http-client` | those of both halves |
//! | `sim` | off | `sim`: the deterministic three-party simulator | none |
//! | `fuzz` | off | `fuzz`: the fuzzing harnesses of `fuzz/`. Implies `sim` | none |
//!
//! The versions are the semver ranges the crate is built against (`Cargo.toml`); an embedder that
//! names these types through the re-exports always gets the very versions lanlink was built with.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
// On docs.rs, each item behind a feature is marked with that feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod addr;
pub mod agent;
pub mod code;
pub mod confirm;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "tokio")]
pub mod driver;
#[cfg(feature = "tokio")]
pub mod dual;
pub mod endpoint;
pub mod error;
pub mod event;
#[cfg(feature = "fuzz")]
pub mod fuzz;
mod hidden;
#[cfg(any(feature = "http-server", feature = "http-client"))]
pub mod http;
pub mod id;
pub mod linker;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[doc(hidden)]
pub mod mutant;
#[cfg(feature = "obico-wire")]
pub mod obico;
pub mod secret;
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "ticket")]
pub mod ticket;
pub mod transport;
pub mod wire;

pub use addr::{ClientAddrError, ClientAddrResolver, ForwardedHeaders, LocalPolicy, PublicNetwork};
pub use agent::MAX_DISCOVERY_WINDOW;
pub use code::{CodeFormat, LinkCode};
pub use error::{
    AgentError, Class, ConfigError, LinkerError, Refusal, SecretRefusal, UnknownCode,
    VerifyFailure, WireCode,
};
pub use id::{AccountId, InstanceId};
pub use secret::{AuthToken, Commitment, LocalSecret};
pub use server::hook::TokenDigest;
pub use wire::DeviceInfo;

// The crates whose types appear in public signatures, re-exported so that an embedder names the
// very versions the crate was built with (`lanlink::chrono::DateTime`, `lanlink::rand::CryptoRng`,
// `#[lanlink::async_trait]` for the `Store` and transport traits). `chrono` is built with its
// `now` feature, so `lanlink::chrono::Utc::now()` is the wall clock the server's operations take
// (not `clock`, which would add the local time zone's crates); `serde` for the events and wire
// types that implement `Serialize`; `zeroize` for the `Zeroizing` that secrets come back in.
pub use async_trait::async_trait;
/// The chrono version of the server's times, with the wall clock (its `now` feature):
///
/// ```
/// let now: lanlink::chrono::DateTime<lanlink::chrono::Utc> = lanlink::chrono::Utc::now();
/// # let _ = now;
/// ```
pub use chrono;
pub use ipnet;
pub use rand;
/// The redis version of [`server::redis`]'s signatures (`RedisError`, the connection types);
/// feature `redis`.
#[cfg(feature = "redis")]
pub use redis;
/// The serde version behind the crate's `Serialize`/`Deserialize` types (the wire messages, the
/// events).
pub use serde;
/// The zeroize version of the `Zeroizing` that secrets come back in (for example
/// `wire::encode`'s bytes).
pub use zeroize;

/// The README's Rust examples, compiled and run as doctests (with the features of the test run:
/// `cargo test --doc --no-default-features` checks that they need none).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The guide's Rust examples (`docs/GUIDE.md`), compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/GUIDE.md")]
pub struct GuideDoctests;

/// The operating system's CSPRNG, as an RNG the state machines accept.
///
/// Panics only if the operating system cannot provide randomness at all, which a running system
/// does not do; the state machines themselves never call it.
///
/// ```
/// let secret = lanlink::LocalSecret::generate(&mut lanlink::os_rng());
/// # let _ = secret;
/// ```
pub fn os_rng() -> rand::rand_core::UnwrapErr<rand::rngs::OsRng> {
    rand::TryRngCore::unwrap_err(rand::rngs::OsRng)
}

/// Locks a mutex whose holders never panic while holding it: a poisoned lock still guards a
/// consistent value, and is used as is (the one place the crate says so).
pub(crate) fn lock_unpoisoned<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
