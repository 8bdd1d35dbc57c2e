// (870 lines, 260 of them docs and doc examples: one concern, because it is the Obico routes as one wire function; its tests are in endpoint/tests.rs.)
//! The Obico profile's HTTP wire as a function, with no HTTP library in it (sans-IO), the same
//! shape as the core's [`server::endpoint`](crate::server::endpoint): a request's method, target,
//! header lines (raw bytes), socket peer and the state of its body go in
//! ([`HttpRequest`], [`RequestBody`]); a status, header lines, a body and whether to close the
//! connection come out ([`Handled`], [`ServerResponse`]), with every rule of the profile applied.
//! Any HTTP stack serves Obico's agents by calling [`handle`] and writing its answer as given;
//! the axum routes (`obico::server`, feature `obico`) are a thin shell over it, and answer byte
//! for byte alike (`tests/obico_wire.rs`). Feature `obico-wire`: no axum, hyper, `http` crate,
//! tokio or reqwest.
//!
//! The function must not do I/O, read a clock or draw from a global RNG: `now` and an RNG come in
//! as arguments, and the body's bytes are read by the host (any I/O below it is the store's).
//!
//! | route | who | success | refusals |
//! | --- | --- | --- | --- |
//! | `POST /api/v1/octo/unlinked/` | agent | `200 {"messages": [...]}` (+ passcode fields) | `400`/`408`/`413` bad body (the agent's fault); `502 unresolvable_client`, `503` (the server's or the proxy's fault: never a 4xx, which would end discovery); `500 unresolvable_client` without a socket peer (the host's fault) |
//! | `POST`, `GET /api/v1/octo/verify/?code=…` (and older OctoPrint-Obico's `/api/v1/onetimeverificationcodes/verify/`) | agent | `200` Obico's verified code record (`id`, `printer` with `auth_token`, `code`, `expired_at`, `verified_at`) | `400` a repeated `code`, `404` invalid code, `429` locked out (with a `message` and `Retry-After`), `500`, `502`, `503` |
//! | `GET /api/v1/octo/printer/` with `Authorization: Token …` | linked agent | `200 {"printer": {...}, "user": {...}}` | `401 invalid_token`, `503` |
//! | `GET /api/v1/printer_discovery/` | user | `200 [{"device_id", "host_or_ip", "port", …}]` | `401`, `403` |
//! | `POST /api/v1/printer_discovery/` | user | `200 {"queued": true}` | `400`, `401`, `403`, `404`, `408`, `409`, `413`, `415`, `429` |
//! | `POST /api/v1/one_time_passcodes/` | user | `200 {"detail": "OK"}` | `400`, `401`, `403`, `404`, `408`, `413`, `415`, `429` |
//! | any other path | | | `404 not_found`; a known path with another method `405 method_not_allowed` with `Allow` |
//!
//! What it decides, so that no stack re-implements it:
//!
//! - **Routing**: the paths above, exactly (Obico's trailing slashes included; the query is not
//!   part of the path). `HEAD` on a route that takes `GET` answers as `GET` with no body; a known
//!   path with another method (an `OPTIONS` too) is `405` with `Allow` (`POST`; `POST,GET,HEAD`;
//!   `GET,HEAD`; `GET,HEAD,POST`); any other path is `404`. A request head over
//!   [`MAX_HEAD_BYTES`](crate::server::endpoint::MAX_HEAD_BYTES) is `431`, as in the core.
//! - **Bodies**: [`reads_body`] says which routes read one (the three `POST`s that carry JSON);
//!   the others never look at a body. A body is a JSON object of at most
//!   [`MAX_BODY_BYTES`](crate::server::endpoint::MAX_BODY_BYTES): larger `413 too_large`, not
//!   complete by the host's deadline `408 request_timeout`, broken off or not a JSON object
//!   `400 malformed`; unknown fields are ignored (the agents send more than the server keeps). A
//!   body that was not read whole leaves the connection to be closed
//!   ([`ServerResponse::close`]).
//! - **Shapes**: every refusal is `{"detail": "<code>"}` with the core's stable codes, except
//!   Obico's own `{"<field>": "missing param"}` for a missing field, and a lockout's `429`, which
//!   adds a `message` for the agents' logs and `Retry-After` (the lockout's length, in seconds).
//!   Statuses: [`status_of`] (Obico answers an unknown code with `404`), and on the agent routes
//!   [`agent_status_of`] (a client address the proxy chain did not resolve is `502`, never a
//!   4xx, which OctoPrint-Obico takes for the end of discovery).
//! - **Callers**: the socket peer and every `Forwarded` and `X-Forwarded-For` line go to the
//!   server's resolver, as in the core (a line that is not visible ASCII text is skipped).
//! - **Printers**: `GET /api/v1/octo/printer/` reads the first `Authorization` line, `Token
//!   <auth_token>`, and looks its digest up in the [`PrinterTokens`].
//! - **Users**: the two user `POST`s apply the core's cross-site rule
//!   ([`server::cross_site`](crate::server::cross_site)) first: `403 bad_origin`,
//!   `415 unsupported_media_type` (Obico's web app sends JSON). Then a user route answers
//!   [`Handled::NeedsUser`] when no [`User`] is given; the host authenticates the request its
//!   own way and either answers with its own response (for the router's own, [`unauthorized`])
//!   or calls again with the [`User`]. Nothing is read or changed before the user is known.
//! - **The redeem around the hook** (`verify`): the code is claimed, the printer token's digest
//!   kept in the [`PrinterTokens`], then the server's [`LinkHook`](crate::server::LinkHook)
//!   awaited outside any lock, then the link finished; if keeping the digest or the hook fails,
//!   the code is given back (no token was handed out) so that the agent's retry redeems it.
//!
//! [`handle`] is `async` because a shared store, the
//! [`PrinterTokens`] and a host's link hook may wait; over the in-memory server and
//! [`MemoryTokens`](super::tokens::MemoryTokens) with a hook that does not wait, its future is
//! ready at once.
//!
//! ```
//! use lanlink::obico::endpoint::{self, Profile};
//! use lanlink::obico::{tokens::MemoryTokens, ObicoConfig};
//! use lanlink::server::endpoint::{Handled, HttpRequest, RequestBody};
//! use lanlink::server::{Server, ServerConfig};
//! # let mut fut = std::pin::pin!(async {
//! let server = Server::new(ServerConfig::default()).unwrap();
//! let (tokens, config) = (MemoryTokens::default(), ObicoConfig::default());
//! let profile = Profile::new(&server, &tokens, &config);
//! let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
//! let headers = [("content-type", &b"application/json"[..]), ("x-forwarded-for", b"203.0.113.7")];
//! let request = HttpRequest {
//!     method: "POST",
//!     path: endpoint::UNLINKED_PATH,
//!     query: None,
//!     authority: None,
//!     headers: &headers,
//!     peer: Some("203.0.113.7".parse().unwrap()),
//! };
//! let poll = br#"{"device_id": "9f0c3b5e2a7d4e1f8b6c0d2e4f6a8b0c", "host_or_ip": "192.168.1.50", "port": 80}"#;
//! let mut rng = lanlink::os_rng();
//! let answer = endpoint::handle(profile, now, &mut rng, &request, RequestBody::Complete(poll), None)
//!     .await
//!     .into_answer()
//!     .unwrap();
//! assert_eq!((answer.status, &answer.body[..]), (200, &br#"{"messages":[]}"#[..]));
//! // Another method on a known path: Obico's 405, with `Allow`.
//! let get = HttpRequest { method: "GET", ..request };
//! let answer = endpoint::handle(profile, now, &mut rng, &get, RequestBody::Complete(&[]), None).await;
//! let answer = answer.into_answer().unwrap();
//! assert_eq!((answer.status, &answer.body[..]), (405, &br#"{"detail":"method_not_allowed"}"#[..]));
//! assert!(answer.headers.contains(&("allow", "POST".to_owned())));
//! // A user route needs the host's user first.
//! let discover = HttpRequest { method: "GET", path: endpoint::DISCOVERY_PATH, ..request };
//! let first = endpoint::handle(profile, now, &mut rng, &discover, RequestBody::Complete(&[]), None).await;
//! assert!(matches!(first, Handled::NeedsUser { .. }));
//! # });
//! # use std::future::Future;
//! # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
//! ```

use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::{CryptoRng, RngCore};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::tokens::{self, printer_id, LinkedPrinter, PrinterTokens};
use super::{device_id, parse_device_id, ObicoConfig, UnlinkedPoll, Verified};
use crate::code::LinkCode;
use crate::error::Refusal;
use crate::event::RequestKind;
use crate::secret::LocalSecret;
use crate::server::cross_site::UserRoute;
use crate::server::endpoint::{
    self as core, Caller, Handled, HttpRequest, RequestBody, ServerResponse, User,
};
use crate::server::record::ObicoInfo;
use crate::server::HookError;
use crate::server::{Backend, MemoryStore, Server};
use crate::wire::{limits, DeviceInfo};

/// The agent poll route.
pub const UNLINKED_PATH: &str = "/api/v1/octo/unlinked/";
/// The agent redeem route.
pub const VERIFY_PATH: &str = "/api/v1/octo/verify/";
/// The redeem route of older OctoPrint-Obico releases (`GET`), served by the same handler.
pub const LEGACY_VERIFY_PATH: &str = "/api/v1/onetimeverificationcodes/verify/";
/// The linked agent's own printer record.
pub const PRINTER_PATH: &str = "/api/v1/octo/printer/";
/// The user discovery and link route.
pub const DISCOVERY_PATH: &str = "/api/v1/printer_discovery/";
/// The user passcode-claim route.
pub const PASSCODES_PATH: &str = "/api/v1/one_time_passcodes/";

/// What [`handle`] runs on: the server (over any store), where the tokens of linked printers
/// are kept, and the profile's settings.
///
/// ```
/// # use lanlink::endpoint::HttpRequest;
/// # use lanlink::obico::endpoint::{handle, Profile, DISCOVERY_PATH};
/// # use lanlink::obico::{tokens::MemoryTokens, ObicoConfig};
/// # use lanlink::server::endpoint::{Handled, RequestBody};
/// # use lanlink::server::{Server, ServerConfig};
/// # let mut fut = std::pin::pin!(async {
/// let server = Server::new(ServerConfig::default()).unwrap();
/// let (tokens, config) = (MemoryTokens::default(), ObicoConfig::default());
/// let profile = Profile::new(&server, &tokens, &config);
/// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let mut rng = lanlink::os_rng();
/// # let get = |path: &'static str| HttpRequest { method: "GET", path, query: None, authority: None,
/// #     headers: &[], peer: Some("203.0.113.7".parse().unwrap()) };
/// // The user's discovery: the host authenticates first.
/// let first = handle(profile, now, &mut rng, &get(DISCOVERY_PATH), RequestBody::Complete(b""), None).await;
/// assert!(matches!(first, Handled::NeedsUser { .. }));
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
pub struct Profile<'a, S = MemoryStore> {
    /// The server the operations run on.
    pub server: &'a Server<S>,
    /// The linked printers, recognised by their token's digest.
    pub tokens: &'a dyn PrinterTokens,
    /// The profile's settings.
    pub config: &'a ObicoConfig,
}

impl<S> Clone for Profile<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Profile<'_, S> {}

impl<'a, S> Profile<'a, S> {
    /// The profile over `server`, `tokens` and `config`.
    ///
    /// ```
    /// # use lanlink::endpoint::HttpRequest;
    /// # use lanlink::obico::endpoint::{handle, Profile, DISCOVERY_PATH};
    /// # use lanlink::obico::{tokens::MemoryTokens, ObicoConfig};
    /// # use lanlink::server::endpoint::{Handled, RequestBody};
    /// # use lanlink::server::{Server, ServerConfig};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let (tokens, config) = (MemoryTokens::default(), ObicoConfig::default());
    /// let profile = Profile::new(&server, &tokens, &config);
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let mut rng = lanlink::os_rng();
    /// # let get = |path: &'static str| HttpRequest { method: "GET", path, query: None, authority: None,
    /// #     headers: &[], peer: Some("203.0.113.7".parse().unwrap()) };
    /// // A Profile is Copy: hand it to every request.
    /// let a = handle(profile, now, &mut rng, &get("/nowhere"), RequestBody::Complete(b""), None).await;
    /// let b = handle(profile, now, &mut rng, &get("/nowhere"), RequestBody::Complete(b""), None).await;
    /// assert!(matches!((a, b), (Handled::Answer(x), Handled::Answer(y)) if x.status == 404 && y.status == 404));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn new(
        server: &'a Server<S>,
        tokens: &'a dyn PrinterTokens,
        config: &'a ObicoConfig,
    ) -> Self {
        Self {
            server,
            tokens,
            config,
        }
    }
}

/// The server and the settings; the token store says nothing of itself.
impl<S> std::fmt::Debug for Profile<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("server", &self.server)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A route, from the method and the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Unlinked,
    Verify,
    Printer,
    Discover,
    Link,
    Claim,
    /// A known path, another method: the methods it takes.
    NotAllowed(&'static str),
    NotFound,
}

impl Route {
    fn of(method: &str, path: &str) -> Self {
        let get = matches!(method, "GET" | "HEAD");
        let post = method == "POST";
        match path {
            UNLINKED_PATH if post => Self::Unlinked,
            VERIFY_PATH | LEGACY_VERIFY_PATH if post || get => Self::Verify,
            PRINTER_PATH if get => Self::Printer,
            DISCOVERY_PATH if get => Self::Discover,
            DISCOVERY_PATH if post => Self::Link,
            PASSCODES_PATH if post => Self::Claim,
            UNLINKED_PATH | PASSCODES_PATH => Self::NotAllowed("POST"),
            VERIFY_PATH | LEGACY_VERIFY_PATH => Self::NotAllowed("POST,GET,HEAD"),
            PRINTER_PATH => Self::NotAllowed("GET,HEAD"),
            DISCOVERY_PATH => Self::NotAllowed("GET,HEAD,POST"),
            _ => Self::NotFound,
        }
    }
}

/// Whether the route of `method` and `path` reads a request body (`POST` of
/// [`UNLINKED_PATH`], [`DISCOVERY_PATH`] and [`PASSCODES_PATH`]). A host need not read the body
/// of any other request: [`handle`] never looks at it.
///
/// ```
/// use lanlink::obico::endpoint::{reads_body, DISCOVERY_PATH, UNLINKED_PATH, VERIFY_PATH};
/// assert!(reads_body("POST", UNLINKED_PATH));
/// assert!(reads_body("POST", DISCOVERY_PATH));
/// assert!(!reads_body("GET", DISCOVERY_PATH));
/// assert!(!reads_body("POST", VERIFY_PATH));
/// ```
pub fn reads_body(method: &str, path: &str) -> bool {
    matches!(
        Route::of(method, path),
        Route::Unlinked | Route::Link | Route::Claim
    )
}

/// The Obico-profile status of a refusal: the core's ([`Refusal::status`]), but `404` for a
/// code that is not (or no longer) good, as Obico answers an unknown code (and an unknown
/// passcode).
///
/// ```
/// use lanlink::obico::endpoint::status_of;
/// use lanlink::Refusal;
/// assert_eq!(status_of(&Refusal::UnknownCode), 404);
/// assert_eq!(status_of(&Refusal::LockedOut), 429);
/// ```
pub fn status_of(refusal: &Refusal) -> u16 {
    match refusal {
        Refusal::UnknownCode
        | Refusal::CodeUsed
        | Refusal::CodeWrongAgent
        | Refusal::CodeWrongNetwork => 404,
        other => other.status(),
    }
}

/// The status of a refusal on an agent route (`unlinked`, `verify`): a client address that the
/// proxy chain did not resolve is the proxy's (or the configuration's) fault, `502`, never a
/// 4xx, which OctoPrint-Obico takes for the end of discovery; else [`status_of`].
///
/// ```
/// use lanlink::obico::endpoint::agent_status_of;
/// use lanlink::{ClientAddrError, Refusal};
/// assert_eq!(agent_status_of(&Refusal::ClientAddr(ClientAddrError::MissingForwarded)), 502);
/// assert_eq!(agent_status_of(&Refusal::Store(lanlink::server::StoreError::Unavailable)), 503);
/// ```
pub fn agent_status_of(refusal: &Refusal) -> u16 {
    match refusal {
        Refusal::ClientAddr(_) => 502,
        other => status_of(other),
    }
}

/// `401 {"detail":"unauthorized"}`: the answer of the crate's Obico routes to a user route whose
/// request the host's authentication does not admit, for a host that has no answer of its own.
///
/// ```
/// let answer = lanlink::obico::endpoint::unauthorized();
/// assert_eq!((answer.status, &answer.body[..]), (401, &br#"{"detail":"unauthorized"}"#[..]));
/// ```
pub fn unauthorized() -> ServerResponse {
    detail(401, "unauthorized")
}

/// Answers one request to the Obico routes at `now`; `rng` draws codes, passcodes and tokens.
/// `user` is `None` on the first call; a user route then answers [`Handled::NeedsUser`], and the
/// host calls again with the user its own authentication found. See the [module docs](self).
///
/// ```
/// # use lanlink::endpoint::HttpRequest;
/// # use lanlink::obico::endpoint::{handle, Profile, DISCOVERY_PATH};
/// # use lanlink::obico::{tokens::MemoryTokens, ObicoConfig};
/// # use lanlink::server::endpoint::{Handled, RequestBody};
/// # use lanlink::server::{Server, ServerConfig};
/// # let mut fut = std::pin::pin!(async {
/// let server = Server::new(ServerConfig::default()).unwrap();
/// let (tokens, config) = (MemoryTokens::default(), ObicoConfig::default());
/// let profile = Profile::new(&server, &tokens, &config);
/// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let mut rng = lanlink::os_rng();
/// # let get = |path: &'static str| HttpRequest { method: "GET", path, query: None, authority: None,
/// #     headers: &[], peer: Some("203.0.113.7".parse().unwrap()) };
/// use lanlink::{server::User, AccountId};
/// let alice = User::new(AccountId::new("alice").unwrap());
/// let answer = handle(profile, now, &mut rng, &get(DISCOVERY_PATH), RequestBody::Complete(b""), Some(&alice)).await;
/// let Handled::Answer(answer) = answer else { panic!() };
/// // Nothing polled from this network: an empty list.
/// assert_eq!((answer.status, &answer.body[..]), (200, &b"[]"[..]));
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
pub async fn handle<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    profile: Profile<'_, S>,
    now: DateTime<Utc>,
    rng: &mut R,
    request: &HttpRequest<'_>,
    body: RequestBody<'_>,
    user: Option<&User>,
) -> Handled {
    if let Some(refused) = core::oversized_head(request) {
        return refused;
    }
    let route = Route::of(request.method, request.path);
    let answer = match route {
        Route::NotFound => Err(detail(404, "not_found")),
        Route::NotAllowed(allow) => {
            let mut answer = detail(405, "method_not_allowed");
            answer.headers.push(("allow", allow.to_owned()));
            Err(answer)
        }
        Route::Unlinked => unlinked(profile, now, rng, request, body).await,
        Route::Verify => verify(profile, now, rng, request).await,
        Route::Printer => printer(profile, request).await,
        Route::Discover | Route::Link | Route::Claim => {
            match user_route(profile, now, rng, route, request, body, user).await {
                Ok(Some(answer)) => Ok(answer),
                Ok(None) => {
                    return Handled::NeedsUser {
                        display_name: false,
                    }
                }
                Err(refused) => Err(refused),
            }
        }
    };
    core::sent(answer.unwrap_or_else(|refused| refused), request, body)
}

/// A route's answer, or its refusal (both sent as they are).
type Answer = Result<ServerResponse, ServerResponse>;

/// A user route: `Ok(None)` when the user is still needed.
async fn user_route<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    profile: Profile<'_, S>,
    now: DateTime<Utc>,
    rng: &mut R,
    route: Route,
    request: &HttpRequest<'_>,
    body: RequestBody<'_>,
    user: Option<&User>,
) -> Result<Option<ServerResponse>, ServerResponse> {
    if route != Route::Discover {
        // The cross-site rule of the state-changing routes, before the host's authentication.
        let origins = profile.server.config().allowed_origins();
        core::check_cross_site(request, UserRoute::WithBody, origins).map_err(|r| refusal(&r))?;
    }
    let Some(user) = user else {
        return Ok(None);
    };
    // Each user route's caller (`403` without one), then the body of those that take one: a
    // JSON object.
    let caller = caller(request, 403)?;
    match route {
        Route::Discover => discover(profile, now, caller, user).await,
        Route::Link => link(profile, now, rng, caller, object(body)?, user).await,
        _ => claim(profile, now, rng, caller, object(body)?, user).await,
    }
    .map(Some)
}

/// Resolves the caller's network as a `$kind` request (the server's one resolver), then calls
/// one of the profile's operations (`obico_*`) with it as `$net`.
macro_rules! call {
    ($profile:expr, $caller:expr, $kind:ident, |$net:ident| $method:ident($($arg:expr),* $(,)?)) => {
        match $profile
            .server
            .caller(RequestKind::$kind, $caller.peer, $caller.headers())
        {
            Ok($net) => $profile.server.$method($($arg),*).await,
            Err(refusal) => Err(refusal),
        }
    };
}

/// A JSON answer.
fn respond(status: u16, value: &Value) -> ServerResponse {
    ServerResponse::json(
        status,
        Zeroizing::new(serde_json::to_vec(value).unwrap_or_default()),
    )
}

/// `{"detail": text}` with `status`: Obico's error shape.
fn detail(status: u16, text: &str) -> ServerResponse {
    respond(status, &json!({ "detail": text }))
}

/// Obico's `{"<field>": "missing param"}`.
fn missing(field: &str) -> ServerResponse {
    respond(400, &json!({ field: "missing param" }))
}

fn refusal(refusal: &Refusal) -> ServerResponse {
    detail(status_of(refusal), refusal.code().as_str())
}

fn agent_refusal(refusal: &Refusal) -> ServerResponse {
    detail(agent_status_of(refusal), refusal.code().as_str())
}

/// A refusal of a guess (a code, a passcode, a secret): a lockout says so, with how long it
/// lasts at most (`Retry-After`, and a sentence for the agents' logs), in Obico's shape.
fn guess_refusal<S: Backend>(
    profile: Profile<'_, S>,
    refusal: &Refusal,
    status: u16,
) -> ServerResponse {
    if !matches!(refusal, Refusal::LockedOut) {
        return detail(status, refusal.code().as_str());
    }
    let lockout = profile.server.config().budget_limits().lockout;
    let seconds = lockout.num_seconds().max(1);
    let minutes = (seconds + 59) / 60;
    let mut answer = respond(
        status,
        &json!({
            "detail": refusal.code(),
            "message": format!(
                "Too many wrong codes from this network: it is locked out for up to {minutes} \
                 minutes. This is not a wrong code; try again later."
            ),
        }),
    );
    answer.headers.push(("retry-after", seconds.to_string()));
    answer
}

/// The caller of a request, or `status` without a socket peer (the host's configuration):
/// `500` on the agent routes (never a 4xx, see [`agent_status_of`]), `403` on the user routes.
fn caller<'a>(request: &HttpRequest<'a>, status: u16) -> Result<Caller<'a>, ServerResponse> {
    Caller::resolve(request).ok_or_else(|| detail(status, "unresolvable_client"))
}

/// A JSON object body, in Obico's shape when refused (its bytes zeroized once parsed).
fn object(body: RequestBody<'_>) -> Result<Map<String, Value>, ServerResponse> {
    let bytes = core::body_state(body).map_err(|(status, code)| detail(status, code))?;
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(detail(400, "malformed")),
    }
}

/// A text field, truncated to `max` bytes on a character boundary, with the characters the core
/// wire refuses ([`crate::wire::is_hidden`]: controls, bidi controls, zero-width and other
/// default-ignorable characters) dropped rather than refused: the agents are unmodified, and a
/// refused poll would leave a device with such a name unlinkable.
fn text(map: &Map<String, Value>, name: &str, max: usize) -> String {
    let raw = match map.get(name) {
        Some(Value::String(s)) => s.as_str(),
        _ => "",
    };
    crate::wire::sanitized(raw, max)
}

/// An `unlinked` poll from a body's bytes, as the route reads it (`None` where it answers 400).
#[cfg(feature = "fuzz")]
pub(crate) fn poll_from_bytes(bytes: &[u8]) -> Option<UnlinkedPoll> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => poll_of(&map).ok(),
        _ => None,
    }
}

fn poll_of(map: &Map<String, Value>) -> Result<UnlinkedPoll, ServerResponse> {
    let device = map
        .get("device_id")
        .and_then(Value::as_str)
        .and_then(parse_device_id)
        .ok_or_else(|| detail(400, "malformed"))?;
    let ip = map
        .get("host_or_ip")
        .and_then(Value::as_str)
        .and_then(|s| s.trim().parse::<IpAddr>().ok());
    let port = match map.get("port") {
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
        _ => None,
    }
    .filter(|p| *p != 0);
    let info = DeviceInfo::new(
        text(map, "hostname", limits::HOSTNAME),
        text(map, "rpi_model", limits::MODEL),
        text(map, "agent", limits::AGENT),
        text(map, "plugin_version", limits::AGENT_VERSION),
    )
    .unwrap_or_default();
    let one_time_passcode = match map.get("one_time_passcode") {
        None => None,
        Some(Value::String(s)) => Some(s.chars().take(64).collect()),
        Some(_) => Some(String::new()),
    };
    let bounded = |name| text(map, name, ObicoInfo::MAX_FIELD);
    let extra = ObicoInfo {
        os: bounded("os"),
        arch: bounded("arch"),
        octopi_version: bounded("octopi_version"),
        machine_type: bounded("machine_type"),
        printerprofile: bounded("printerprofile"),
    };
    Ok(UnlinkedPoll {
        device_id: device,
        endpoint: ip.zip(port),
        info,
        extra,
        one_time_passcode,
    })
}

/// `POST /api/v1/octo/unlinked/`: an agent's poll.
async fn unlinked<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    profile: Profile<'_, S>,
    now: DateTime<Utc>,
    rng: &mut R,
    request: &HttpRequest<'_>,
    body: RequestBody<'_>,
) -> Answer {
    let caller = caller(request, 500)?;
    let poll = poll_of(&object(body)?)?;
    let reply = call!(profile, caller, Announce, |network| obico_unlinked(
        now,
        rng,
        profile.config,
        network,
        &poll
    ))
    .map_err(|r| agent_refusal(&r))?;
    let messages: Vec<Value> = reply
        .message
        .iter()
        .map(|m| {
            json!({
                "device_id": device_id(&m.device_id),
                "type": "verify_code",
                "data": { "code": m.code.expose(), "secret": m.secret.to_hex().as_str() },
            })
        })
        .collect();
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(messages));
    if let Some(passcode) = &reply.passcode {
        out.insert(
            "one_time_passcode".into(),
            passcode.one_time_passcode.expose().into(),
        );
        out.insert(
            "one_time_passlink".into(),
            profile.config.passlink(&passcode.one_time_passcode).into(),
        );
        out.insert(
            "verification_code".into(),
            passcode
                .verification_code
                .as_ref()
                .map_or("", LinkCode::expose)
                .into(),
        );
    }
    let value = Value::Object(out);
    let answer = respond(200, &value);
    zeroize_value(value);
    Ok(answer)
}

/// Overwrites the strings of a reply that carried a secret or a code before it is dropped.
fn zeroize_value(mut value: Value) {
    fn walk(value: &mut Value) {
        match value {
            Value::String(s) => zeroize::Zeroize::zeroize(s),
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(map) => map.values_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
}

/// The `code` of a query, read as a form-urlencoded struct with one optional field is (what
/// Obico's server and axum's `Query` do): `Err` when it is given twice, other fields ignored.
fn code_param(query: Option<&str>) -> Result<Option<Zeroizing<String>>, ()> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if crate::endpoint::form_decode(key) == "code" {
            if found.is_some() {
                return Err(());
            }
            found = Some(Zeroizing::new(crate::endpoint::form_decode(value)));
        }
    }
    Ok(found)
}

/// `POST|GET /api/v1/octo/verify/?code=…`: an agent redeems a code.
async fn verify<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    profile: Profile<'_, S>,
    now: DateTime<Utc>,
    rng: &mut R,
    request: &HttpRequest<'_>,
) -> Answer {
    let caller = caller(request, 500)?;
    let code = code_param(request.query).map_err(|()| detail(400, "malformed"))?;
    let code = code
        .as_deref()
        .map(|code| code.trim())
        .and_then(LinkCode::parse)
        .ok_or_else(|| detail(404, Refusal::UnknownCode.code().as_str()))?;
    let pending = call!(profile, caller, Redeem, |network| obico_begin_verify(
        now, rng, network, &code
    ))
    .map_err(|r| guess_refusal(profile, &r, agent_status_of(&r)))?;
    let link = pending.link();
    let printer = LinkedPrinter {
        id: printer_id(&link.instance_id),
        name: link
            .info
            .as_ref()
            .map(|info| info.hostname().to_owned())
            .filter(|hostname| !hostname.is_empty())
            .unwrap_or_else(|| "My Printer".to_owned()),
        account: link.account.clone(),
        instance_id: link.instance_id,
        linked_at: now,
    };
    // The token is handed out only once its digest is kept (a printer must be able to use it)
    // and the host's hook recorded the link. If either fails, the code is given back (no token
    // was handed out, nothing is linked), so that the agent's retry redeems it: nothing is
    // stranded.
    let kept = profile
        .tokens
        .issue(*link.token_digest.as_bytes(), printer.clone())
        .await
        .map_err(|err| HookError::new(format!("printer tokens: {err}")));
    let verified = profile
        .server
        .finish_around_hook(now, pending, kept)
        .await
        .map(Verified::from)
        .map_err(|r| agent_refusal(&r))?;
    let token = verified.redeemed.reply.auth_token.to_hex();
    let mut printer_json = printer_value(&printer);
    printer_json["auth_token"] = token.as_str().into();
    let value = json!({
        "id": code_id(&code),
        "printer": printer_json,
        "code": code.expose(),
        "expired_at": iso(verified.code_expires_at),
        "verified_at": iso(now),
    });
    let answer = respond(200, &value);
    zeroize_value(value);
    Ok(answer)
}

/// Obico's time format (ISO 8601, UTC).
fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A numeric id for a code record (Obico's `id`): the first 48 bits of its key.
fn code_id(code: &LinkCode) -> u64 {
    code.key().as_bytes()[..6]
        .iter()
        .fold(0u64, |id, byte| (id << 8) | u64::from(*byte))
}

/// A printer as Obico's agent-facing routes show it (without its token).
fn printer_value(printer: &LinkedPrinter) -> Value {
    json!({
        "id": printer.id,
        "name": printer.name,
        "created_at": iso(printer.linked_at),
    })
}

/// `GET /api/v1/octo/printer/`: the linked printer that `Authorization: Token …` (the first
/// line) names.
async fn printer<S: Backend>(profile: Profile<'_, S>, request: &HttpRequest<'_>) -> Answer {
    let presented = request
        .values("authorization")
        .next()
        .and_then(core::header_text)
        .and_then(|value| value.strip_prefix("Token "))
        .unwrap_or_default();
    let found = tokens::authenticate(profile.tokens, presented)
        .await
        .map_err(|err| agent_refusal(&err.into()))?;
    let Some(printer) = found else {
        return Err(detail(401, "invalid_token"));
    };
    Ok(respond(
        200,
        &json!({
            "printer": printer_value(&printer),
            "user": { "is_pro": false },
        }),
    ))
}

/// `GET /api/v1/printer_discovery/`: the Obico agents a user's network shows. The account is
/// counted among the network's discoverers, as the core's route does.
async fn discover<S: Backend>(
    profile: Profile<'_, S>,
    now: DateTime<Utc>,
    caller: Caller<'_>,
    user: &User,
) -> Answer {
    let agents = call!(profile, caller, Discover, |network| obico_list(
        now,
        network,
        &user.account
    ))
    .map_err(|r| refusal(&r))?;
    let list: Vec<Value> = agents
        .iter()
        .map(|(a, extra)| {
            json!({
                "device_id": device_id(&a.instance_id),
                "host_or_ip": a.private_ip.to_string(),
                "port": a.port,
                "hostname": a.info.hostname(),
                "rpi_model": a.info.model(),
                "agent": a.info.agent(),
                "plugin_version": a.info.agent_version(),
                "os": extra.os,
                "arch": extra.arch,
                "octopi_version": extra.octopi_version,
                "machine_type": extra.machine_type,
                "printerprofile": extra.printerprofile,
            })
        })
        .collect();
    Ok(respond(200, &Value::Array(list)))
}

/// `POST /api/v1/printer_discovery/`: a user asks to link an agent with the secret it serves.
async fn link<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    profile: Profile<'_, S>,
    now: DateTime<Utc>,
    rng: &mut R,
    caller: Caller<'_>,
    mut map: Map<String, Value>,
    user: &User,
) -> Answer {
    let device = match map.get("device_id") {
        None => return Err(missing("device_id")),
        Some(value) => value
            .as_str()
            .and_then(parse_device_id)
            .ok_or_else(|| detail(400, "malformed"))?,
    };
    // `code` (the user's code in Obico) is accepted and never forwarded: the server mints a bound
    // 128-bit code instead.
    let secret = match map.get_mut("device_secret") {
        None => return Err(missing("device_secret")),
        Some(Value::String(s)) => {
            let parsed = LocalSecret::from_hex(s);
            zeroize::Zeroize::zeroize(s);
            parsed
        }
        Some(_) => None,
    };
    call!(profile, caller, Link, |network| obico_link(
        now,
        rng,
        network,
        &user.account,
        device,
        secret
    ))
    .map_err(|r| guess_refusal(profile, &r, status_of(&r)))?;
    Ok(respond(200, &json!({ "queued": true })))
}

/// `POST /api/v1/one_time_passcodes/`: a user claims the passcode an agent shows.
async fn claim<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    profile: Profile<'_, S>,
    now: DateTime<Utc>,
    rng: &mut R,
    caller: Caller<'_>,
    mut map: Map<String, Value>,
    user: &User,
) -> Answer {
    let passcode = match map.get_mut("one_time_passcode") {
        Some(Value::String(s)) => Zeroizing::new(std::mem::take(s)),
        Some(_) => return Err(detail(400, "malformed")),
        None => return Err(missing("one_time_passcode")),
    };
    // `verification_code` (the user's code in Obico) is accepted and ignored: the server mints a
    // code bound to the agent's network instead.
    call!(profile, caller, Link, |network| obico_claim(
        now,
        rng,
        network,
        &user.account,
        &passcode
    ))
    .map_err(|r| guess_refusal(profile, &r, status_of(&r)))?;
    Ok(detail(200, "OK"))
}

#[cfg(test)]
mod tests;
