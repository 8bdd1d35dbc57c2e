//! The server: records announcements per public network, shows agents to linkers of the same
//! network, checks link requests against the agent's commitment, forwards the secret, mints codes
//! and tokens, and locks out networks that guess.
//! The server must not open a socket, read a clock, sleep or draw from a global RNG: `now`, the
//! caller's network and an RNG are arguments, and any I/O is its store's or the
//! host's [hook](hook::LinkHook).
//!
//! One type, [`Server`], over any [`Store`] (the in-memory [`MemoryStore`] by default, a
//! shared one such as `Records` over a `RedisStore` (feature `redis`) for many instances),
//! with one `async fn` per protocol step. Sans-IO: each step takes the wall-clock `now` (records are shared between
//! server instances, so they carry wall-clock expiries), the caller's public network, resolved
//! once from the socket peer and the forwarding headers by [`Server::caller`], and an RNG where
//! something is minted. Decisions go where the host's [`Events`] say. The wire around the steps
//! (HTTP: [`endpoint::handle`]; MQTT: `server::mqtt::handle_up`, feature `ticket`) is a
//! function of the core too, so any stack serves the server.
//!
//! ```
//! use chrono::DateTime;
//! use lanlink::event::RequestKind;
//! use lanlink::server::{Server, ServerConfig, User};
//! use lanlink::{AccountId, ForwardedHeaders};
//! # let mut fut = std::pin::pin!(async {
//! let server = Server::new(ServerConfig::default()).unwrap();
//! let peer = "203.0.113.7".parse().unwrap();
//! let network = server.caller(RequestKind::Discover, peer, ForwardedHeaders::NONE).unwrap();
//! let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
//! let alice = User::new(AccountId::new("alice").unwrap());
//! let reply = server.discover(now, network, &alice).await.unwrap();
//! assert!(reply.agents.is_empty());
//! # });
//! # use std::future::Future;
//! # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
//! ```

pub mod budget;
mod config;
pub mod connections;
pub mod cross_site;
pub mod endpoint;
pub mod hook;
mod limits;
#[macro_use]
mod machine;
#[cfg(feature = "ticket")]
pub mod mqtt;
#[cfg(feature = "obico-wire")]
mod obico;
mod ops;
/// The stored records: the crate's own, hidden (not covered by semver; a database joins through
/// [`Store`] and `Records` (feature `shared-store`), never seeing a record).
#[doc(hidden)]
pub mod record;
#[cfg(feature = "redis")]
pub mod redis;
pub mod shared;
pub(crate) mod store;
mod time;

#[doc(hidden)]
pub use self::budget::CounterRecord;
pub use self::budget::{Admission, Budgets, CodeSpace, CounterKey, Level};
pub use self::config::ServerConfig;
pub use self::hook::{CompletedLink, HookError, LinkHook, LinkVia, TokenDigest};
pub use self::limits::{MAX_TTL, MINT_ATTEMPTS};
#[cfg_attr(not(feature = "sim"), allow(unused_imports))]
pub(crate) use self::machine::at_once;
#[cfg(feature = "fuzz")]
pub(crate) use self::machine::AtOnce;
pub use self::machine::{Events, Server, User};
pub use self::ops::{EventSink, Redeemed, MAX_QUEUED_EVENTS};
#[doc(hidden)]
pub use self::record::{CodeKind, CodeRecord, NetworkRecord};
pub use self::shared::{SharedNetworkPolicy, SharedSignal, MAX_DISCOVERERS};
pub use self::store::{
    Backend, Key, MemoryBytes, MemoryStore, Store, StoreError, Write, MAX_KEY_LEN, MAX_WRITES,
};
#[doc(hidden)]
pub use self::store::{CodeFn, CounterFn, NetworkFn, ReadFn};
#[cfg(feature = "shared-store")]
pub use self::store::{Records, RecordsConfig, StoreKey};
