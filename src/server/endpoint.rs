// (859 lines: one concern, because it is the server's HTTP wire as one function (routing, checks, answers); held requests are in endpoint/hold.rs and its tests in endpoint/tests.rs.)
//! The server's HTTP wire as a function, with no HTTP library in it (sans-IO): a request's
//! method, target, header lines (raw bytes), socket peer and the state of its body go in; a
//! status, header lines, a body and whether to close the connection come out, with every rule of
//! `PROTOCOL.md` applied. Any HTTP stack serves the server by calling [`handle`] and writing its
//! answer as given; the axum routers (`http::server`, feature `http-server`) are a thin shell over it, and
//! `examples/blocking_server.rs` serves it over a blocking HTTP/1.1 shell of its own (`std::net`
//! and `httparse`) with no tokio, so both answer byte for byte alike.
//!
//! The function must not do I/O, read a clock or draw from a global RNG: `now` and an RNG come in
//! as arguments, and the body's bytes are read by the host (any I/O below it is the store's).
//!
//! What it decides, so that no stack re-implements it:
//!
//! - **Routing** under `prefix`: the six routes below; `HEAD` on a `GET` route answers as `GET`
//!   with no body; a known path with another method is `405 method_not_allowed` with `Allow`
//!   (`POST`, or `GET,HEAD`); any other path is `404 not_found` (an `OPTIONS` too: the server
//!   grants no CORS).
//! - **Bodies**: [`reads_body`] says which routes read one (`POST …/agent/announce`,
//!   `POST …/agent/redeem`, `POST …/link`); the others never look at a body, whatever its size or
//!   state. A route that reads one refuses it where it reads it: over [`MAX_BODY_BYTES`]
//!   `413 too_large`, not complete by the host's request deadline `408 request_timeout`, broken
//!   off `400 malformed`, then the wire's own checks ([`status_of_wire_error`]). A body that was
//!   not read whole leaves the connection to be closed ([`ServerResponse::close`]).
//! - **Callers**: the socket peer (none: `403 unresolvable_client`) and every `Forwarded` and
//!   `X-Forwarded-For` line go to the server's resolver. A line that is not visible ASCII text
//!   (bytes `0x20`–`0x7e` and tab) is skipped, as if not sent.
//! - **Users**: a user route first applies the cross-site rule ([`super::cross_site`]), then
//!   answers [`Handled::NeedsUser`] when no [`User`] is given; the host authenticates the request
//!   its own way and either answers with its own response (a 401, a redirect to its sign-in page)
//!   or calls again with the [`User`]. Nothing is read or changed before the user is known.
//! - **The redeem around the hook**: the code is claimed, the host's [`LinkHook`](super::LinkHook)
//!   is awaited outside any lock, then the link is finished; a hook that awaits (I/O, a timer)
//!   links.
//!
//! | route | who | success |
//! | --- | --- | --- |
//! | `POST {prefix}/agent/announce` | agent | `200` [`AnnounceReply`](crate::wire::AnnounceReply) |
//! | `POST {prefix}/agent/redeem` | agent | `200` [`RedeemReply`](crate::wire::RedeemReply) |
//! | `GET {prefix}/discover` | user | `200` [`DiscoverReply`](crate::wire::DiscoverReply) |
//! | `POST {prefix}/link` | user | `202` [`LinkStatusReply`](crate::wire::LinkStatusReply) |
//! | `GET {prefix}/link/{instance_id}` | user | `200` [`LinkStatusReply`](crate::wire::LinkStatusReply) |
//! | `POST {prefix}/codes` | user | `201` [`CodeReply`](crate::wire::CodeReply) |
//!
//! [`handle`] is `async` because a shared store and a host's link hook may wait; over the
//! in-memory store with a hook that does not wait, its future is ready at once, so a blocking
//! host drives it with any `block_on` (one is a dozen lines of `std`: see
//! `examples/blocking_server.rs`).
//!
//! ```
//! use lanlink::endpoint::HttpRequest;
//! use lanlink::server::endpoint::{self, Handled, RequestBody, User};
//! use lanlink::server::{Server, ServerConfig};
//! use lanlink::AccountId;
//! # let mut fut = std::pin::pin!(async {
//! let server = Server::new(ServerConfig::default()).unwrap();
//! let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
//! let headers = [("host", &b"cloud.example"[..])];
//! let request = HttpRequest {
//!     method: "POST",
//!     path: "/lanlink/v1/codes",
//!     query: None,
//!     authority: None,
//!     headers: &headers,
//!     peer: Some("203.0.113.7".parse().unwrap()),
//! };
//! let prefix = lanlink::transport::DEFAULT_PREFIX;
//! let mut rng = lanlink::os_rng();
//! let body = RequestBody::Complete(&[]);
//! // A user route says it needs the user; the host's own authentication answers.
//! let first = endpoint::handle(&server, now, &mut rng, prefix, &request, body, None).await;
//! assert!(matches!(first, Handled::NeedsUser { .. }));
//! let alice = User::new(AccountId::new("alice").unwrap());
//! let answer = endpoint::handle(&server, now, &mut rng, prefix, &request, body, Some(&alice))
//!     .await
//!     .into_answer()
//!     .unwrap();
//! assert_eq!(answer.status, 201);
//! // An unknown path is the core's 404, whatever the stack.
//! let unknown = HttpRequest { path: "/lanlink/v1/nope", ..request };
//! let answer = endpoint::handle(&server, now, &mut rng, prefix, &unknown, body, None).await;
//! let answer = answer.into_answer().unwrap();
//! assert_eq!((answer.status, &answer.body[..]), (404, &br#"{"error":"not_found"}"#[..]));
//! # });
//! # use std::future::Future;
//! # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
//! ```

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::cross_site::{self, RequestHead, UserRoute};
use super::machine::Server;
pub use super::machine::User;
use super::store::Backend;
use crate::addr::{ForwardedHeaders, PublicNetwork};
use crate::error::{Refusal, WireCode};
use crate::event::RequestKind;
use crate::id::InstanceId;
use crate::wire::{
    self, ErrorBody, LinkRequest, LinkState, RedeemRequest, WireError, MAX_MESSAGE_BYTES,
};

mod hold;

pub use self::hold::{resume, Held};
pub use crate::endpoint::{split_target, HttpRequest, Target};

/// Largest request body a route reads, in bytes (larger: `413 too_large`).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Largest request head the server takes, in bytes: the target and every header line (name,
/// value and the four bytes of `: ` and the line break). A larger one is answered `431` with an
/// empty body and the connection closed, before any route runs, whatever the host's HTTP
/// library lets through ([`head_bytes`]).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The size [`MAX_HEAD_BYTES`] bounds: the request's target and its header lines, each counted
/// as `name: value` and a line break.
///
/// ```
/// use lanlink::server::endpoint::{head_bytes, HttpRequest};
/// let headers: [(&str, &[u8]); 1] = [("host", b"cloud.example")];
/// let request = HttpRequest {
///     method: "GET", path: "/lanlink/v1/discover", query: None, authority: None,
///     headers: &headers, peer: None,
/// };
/// assert_eq!(head_bytes(&request), "/lanlink/v1/discover".len() + "host: cloud.example\r\n".len());
/// ```
pub fn head_bytes(request: &HttpRequest<'_>) -> usize {
    let target = request.path.len()
        + request.query.map_or(0, |query| query.len() + 1)
        + request.authority.map_or(0, str::len);
    request.headers.iter().fold(target, |sum, (name, value)| {
        sum.saturating_add(name.len() + value.len() + 4)
    })
}

/// What became of a request's body, as the host's HTTP stack read it (at most
/// [`MAX_BODY_BYTES`] of it, within its request deadline). A host may read it only when
/// [`reads_body`] says the route reads one, and give `Complete(&[])` otherwise.
///
/// `Debug` shows a complete body's length, never its bytes (it may carry a secret).
///
/// ```
/// use lanlink::server::endpoint::RequestBody;
/// let body = RequestBody::Complete(br#"{"local_secret":"00"}"#);
/// assert_eq!(format!("{body:?}"), "Complete(21 bytes)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestBody<'a> {
    /// The whole body (empty when there was none).
    Complete(&'a [u8]),
    /// The body is longer than [`MAX_BODY_BYTES`] (read no further than that).
    TooLarge,
    /// The body was not complete by the host's request deadline.
    TimedOut,
    /// The body broke off (the connection closed or failed, bad chunked framing).
    Broken,
}

impl std::fmt::Debug for RequestBody<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete(bytes) => write!(f, "Complete({} bytes)", bytes.len()),
            Self::TooLarge => f.write_str("TooLarge"),
            Self::TimedOut => f.write_str("TimedOut"),
            Self::Broken => f.write_str("Broken"),
        }
    }
}

/// The server's answer: write the status, the headers and the body as they are (with the
/// stack's own framing headers), and close the connection after it when [`close`](Self::close)
/// says so. `Debug` shows the body's length, never its bytes (it may hold a token).
///
/// ```
/// # use lanlink::server::endpoint::{handle, Handled, HttpRequest, RequestBody};
/// # use lanlink::server::{Server, ServerConfig, User};
/// # let mut fut = std::pin::pin!(async {
/// # let server = Server::new(ServerConfig::default()).unwrap();
/// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let mut rng = lanlink::os_rng();
/// # let headers: [(&str, &[u8]); 1] = [("host", b"cloud.example")];
/// # let get = |path: &'static str| HttpRequest { method: "GET", path, query: None, authority: None,
/// #     headers: &headers, peer: Some("203.0.113.7".parse().unwrap()) };
/// let answer = handle(&server, now, &mut rng, "/lanlink/v1", &get("/lanlink/v1/nowhere"), RequestBody::Complete(b""), None).await;
/// let answer = answer.into_answer().unwrap();
/// assert_eq!((answer.status, &answer.body[..]), (404, &br#"{"error":"not_found"}"#[..]));
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerResponse {
    /// The HTTP status.
    pub status: u16,
    /// Header lines (lowercase names), in order.
    pub headers: Vec<(&'static str, String)>,
    /// The body (empty for `HEAD`); it may hold a secret or a token, and is zeroized when
    /// dropped.
    pub body: Zeroizing<Vec<u8>>,
    /// Whether to close the connection after this answer: the body was not read whole (too
    /// large, timed out or broken off), so what follows on the connection is not a request.
    pub close: bool,
    /// The instance whose bell to ring once this answer is decided (revision 1.6): a link was
    /// accepted for it (`POST {prefix}/link`, `202`) or it redeemed (`200`), so a request held
    /// for it ([`Held`]) may now be answered. A host that holds requests rings it; one that
    /// does not ignores it.
    pub ring: Option<InstanceId>,
}

impl std::fmt::Debug for ServerResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("close", &self.close)
            .field("ring", &self.ring)
            .finish()
    }
}

impl ServerResponse {
    /// A JSON answer with `Cache-Control: no-store` (bodies may carry secrets).
    pub(crate) fn json(status: u16, body: Zeroizing<Vec<u8>>) -> Self {
        Self {
            status,
            headers: wire::json_headers(),
            body,
            close: false,
            ring: None,
        }
    }

    /// `{"error": code}` with `status`.
    ///
    /// ```
    /// use lanlink::server::endpoint::ServerResponse;
    /// let answer = ServerResponse::error(404, "not_found");
    /// assert_eq!(&answer.body[..], br#"{"error":"not_found"}"#);
    /// assert!(answer.headers.contains(&("cache-control", "no-store".to_owned())));
    /// ```
    pub fn error(status: u16, code: &str) -> Self {
        Self::json(status, wire::encode(&ErrorBody::new(code.to_owned())))
    }

    /// `{"error": code}` with the code's status from the classification table
    /// ([`WireCode::class`]), so the status cannot disagree with the code. A code without a
    /// status (unknown, or none) is answered `500`.
    ///
    /// ```
    /// use lanlink::server::endpoint::ServerResponse;
    /// use lanlink::WireCode;
    /// let answer = ServerResponse::for_code(WireCode::MethodNotAllowed);
    /// assert_eq!((answer.status, &answer.body[..]), (405, &br#"{"error":"method_not_allowed"}"#[..]));
    /// ```
    pub fn for_code(code: WireCode) -> Self {
        let (status, text) = code.answer();
        Self::error(status, text)
    }

    /// `401 {"error":"unauthorized"}`: the answer of the crate's routers to a user route whose
    /// request the host's authentication does not admit, for a host that has no answer of its
    /// own (a redirect to its sign-in page, its own 401).
    ///
    /// ```
    /// use lanlink::server::endpoint::ServerResponse;
    /// let answer = ServerResponse::unauthorized();
    /// assert_eq!((answer.status, &answer.body[..]), (401, &br#"{"error":"unauthorized"}"#[..]));
    /// ```
    pub fn unauthorized() -> Self {
        Self::for_code(WireCode::Unauthorized)
    }

    /// The answer for `refusal`: its wire code, with the code's status ([`Refusal::status`]).
    ///
    /// ```
    /// use lanlink::server::endpoint::ServerResponse;
    /// use lanlink::Refusal;
    /// let answer = ServerResponse::refusal(&Refusal::LockedOut);
    /// assert_eq!((answer.status, &answer.body[..]), (429, &br#"{"error":"locked_out"}"#[..]));
    /// ```
    pub fn refusal(refusal: &Refusal) -> Self {
        Self::for_code(refusal.code())
    }
}

/// What [`handle`] made of a request.
///
/// ```
/// # use lanlink::server::endpoint::{handle, Handled, HttpRequest, RequestBody};
/// # use lanlink::server::{Server, ServerConfig, User};
/// # let mut fut = std::pin::pin!(async {
/// # let server = Server::new(ServerConfig::default()).unwrap();
/// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let mut rng = lanlink::os_rng();
/// # let headers: [(&str, &[u8]); 1] = [("host", b"cloud.example")];
/// # let get = |path: &'static str| HttpRequest { method: "GET", path, query: None, authority: None,
/// #     headers: &headers, peer: Some("203.0.113.7".parse().unwrap()) };
/// // A user route: nothing is read until the host says who the user is.
/// let first = handle(&server, now, &mut rng, "/lanlink/v1", &get("/lanlink/v1/discover"), RequestBody::Complete(b""), None).await;
/// assert!(matches!(first, Handled::NeedsUser { display_name: false }));
/// let alice = User::new(lanlink::AccountId::new("alice").unwrap());
/// let second = handle(&server, now, &mut rng, "/lanlink/v1", &get("/lanlink/v1/discover"), RequestBody::Complete(b""), Some(&alice)).await;
/// assert_eq!(second.into_answer().map(|a| a.status), Some(200));
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[derive(Debug)]
#[must_use]
#[non_exhaustive]
pub enum Handled {
    /// The answer to send.
    Answer(ServerResponse),
    /// A user route: authenticate the request with the host's own sessions, then call
    /// [`handle`] again with the [`User`] — or send the host's own answer (a `401`, a redirect).
    /// Nothing was read or changed yet.
    NeedsUser {
        /// Whether the route forwards the user's display name ([`User::display_name`]):
        /// `POST {prefix}/link` only. A host whose names cost a lookup may skip it otherwise.
        display_name: bool,
    },
    /// A request to hold open (revision 1.6): keep the connection, listen for the bell of
    /// [`Held::instance_id`], and call [`resume`] on each ring and at [`Held::next_check`]
    /// until it answers (at [`Held::until`] at the latest). A host that cannot hold calls
    /// [`resume`] on a timer alone.
    Hold(Held),
}

impl Handled {
    /// The answer, if it is one.
    ///
    /// ```
    /// # use lanlink::server::endpoint::{handle, Handled, HttpRequest, RequestBody};
    /// # use lanlink::server::{Server, ServerConfig, User};
    /// # let mut fut = std::pin::pin!(async {
    /// # let server = Server::new(ServerConfig::default()).unwrap();
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let mut rng = lanlink::os_rng();
    /// # let headers: [(&str, &[u8]); 1] = [("host", b"cloud.example")];
    /// # let get = |path: &'static str| HttpRequest { method: "GET", path, query: None, authority: None,
    /// #     headers: &headers, peer: Some("203.0.113.7".parse().unwrap()) };
    /// let user_route = handle(&server, now, &mut rng, "/lanlink/v1", &get("/lanlink/v1/discover"), RequestBody::Complete(b""), None).await;
    /// assert!(user_route.into_answer().is_none(), "not an answer yet");
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn into_answer(self) -> Option<ServerResponse> {
        match self {
            Self::Answer(answer) => Some(answer),
            Self::NeedsUser { .. } | Self::Hold(_) => None,
        }
    }
}

/// A route's outcome before the host's framing rules: an answer, or a hold.
enum Routed {
    Answer(ServerResponse),
    Hold(Held),
}

/// The status and code of a request body that does not decode: `413 too_large`,
/// `400 bad_field` (a device-info string too long or holding a hidden character),
/// `400 unsupported_version`, else `400 malformed`.
///
/// ```
/// use lanlink::server::endpoint::status_of_wire_error;
/// use lanlink::wire::WireError;
/// assert_eq!(status_of_wire_error(&WireError::Malformed), (400, "malformed"));
/// assert_eq!(status_of_wire_error(&WireError::TooLarge { limit: 16 }), (413, "too_large"));
/// ```
pub fn status_of_wire_error(err: &WireError) -> (u16, &'static str) {
    match err {
        WireError::TooLarge { .. } => WireCode::TooLarge.answer(),
        WireError::BadField(_) | WireError::HiddenCharacter(_) => WireCode::BadField.answer(),
        WireError::Version => WireCode::UnsupportedVersion.answer(),
        _ => WireCode::Malformed.answer(),
    }
}

/// A route, from the method and the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Announce,
    Redeem,
    Discover,
    Link,
    LinkStatus(&'a str),
    Codes,
    /// A known path, another method: the methods it takes.
    NotAllowed(&'static str),
    NotFound,
}

impl<'a> Route<'a> {
    fn of(prefix: &str, method: &str, path: &'a str) -> Self {
        const POST: &str = "POST";
        const GET: &str = "GET,HEAD";
        let prefix = prefix.trim_end_matches('/');
        let Some(rest) = path.strip_prefix(prefix) else {
            return Self::NotFound;
        };
        let get = matches!(method, "GET" | "HEAD");
        let post = method == "POST";
        match rest {
            "/agent/announce" if post => Self::Announce,
            "/agent/redeem" if post => Self::Redeem,
            "/link" if post => Self::Link,
            "/codes" if post => Self::Codes,
            "/agent/announce" | "/agent/redeem" | "/link" | "/codes" => Self::NotAllowed(POST),
            "/discover" if get => Self::Discover,
            "/discover" => Self::NotAllowed(GET),
            _ => match rest.strip_prefix("/link/") {
                Some(id) if !id.is_empty() && !id.contains('/') => {
                    if get {
                        Self::LinkStatus(id)
                    } else {
                        Self::NotAllowed(GET)
                    }
                }
                _ => Self::NotFound,
            },
        }
    }
}

/// Whether the route of `method` and `path` under `prefix` reads a request body
/// (`POST {prefix}/agent/announce`, `POST {prefix}/agent/redeem`, `POST {prefix}/link`). A host
/// need not read the body of any other request: [`handle`] never looks at it.
///
/// ```
/// use lanlink::server::endpoint::reads_body;
/// assert!(reads_body("/lanlink/v1", "POST", "/lanlink/v1/agent/redeem"));
/// assert!(!reads_body("/lanlink/v1", "GET", "/lanlink/v1/discover"));
/// assert!(!reads_body("/lanlink/v1", "POST", "/lanlink/v1/codes"));
/// ```
pub fn reads_body(prefix: &str, method: &str, path: &str) -> bool {
    matches!(
        Route::of(prefix, method, path),
        Route::Announce | Route::Redeem | Route::Link
    )
}

/// Whether a header line is text: visible ASCII, spaces and tabs (what the `http` crate's
/// `HeaderValue::to_str` accepts). A line that is not is skipped as if not sent.
pub(crate) fn header_text(value: &[u8]) -> Option<&str> {
    let text = value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
    if text {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// Every line of header `name` that is text ([`header_text`]), in order.
fn text_lines<'a>(request: &HttpRequest<'a>, name: &str) -> Vec<&'a str> {
    request.values(name).filter_map(header_text).collect()
}

/// Every line of header `name`, a line that is not text read as `""` (which no check accepts).
fn all_lines<'a>(request: &HttpRequest<'a>, name: &str) -> Vec<&'a str> {
    request
        .values(name)
        .map(|v| header_text(v).unwrap_or_default())
        .collect()
}

/// The cross-site rule over the request's head (`Content-Type`, `Origin`, and its own authority:
/// an absolute-form target's, else every `Host` line).
pub(crate) fn check_cross_site(
    request: &HttpRequest<'_>,
    route: UserRoute,
    allowed_origins: &[String],
) -> Result<(), Refusal> {
    let content_type = all_lines(request, "content-type");
    let origin = all_lines(request, "origin");
    let host = match request.authority {
        Some(authority) => vec![authority],
        None => all_lines(request, "host"),
    };
    let head = RequestHead {
        content_type: &content_type,
        origin: &origin,
        host: &host,
    };
    cross_site::check(route, &head, allowed_origins)
}

/// The caller: its socket peer and its forwarding lines.
pub(crate) struct Caller<'a> {
    pub(crate) peer: IpAddr,
    forwarded: Vec<&'a str>,
    x_forwarded_for: Vec<&'a str>,
}

impl<'a> Caller<'a> {
    /// The caller, or `None` without a peer address (nothing can be decided: a route refuses,
    /// failing closed).
    pub(crate) fn resolve(request: &HttpRequest<'a>) -> Option<Self> {
        Some(Self {
            peer: request.peer?,
            forwarded: text_lines(request, "forwarded"),
            x_forwarded_for: text_lines(request, "x-forwarded-for"),
        })
    }

    fn of(request: &HttpRequest<'a>) -> Result<Self, ServerResponse> {
        Self::resolve(request).ok_or_else(|| ServerResponse::for_code(WireCode::UnresolvableClient))
    }

    pub(crate) fn headers(&self) -> ForwardedHeaders<'_> {
        ForwardedHeaders {
            forwarded: &self.forwarded,
            x_forwarded_for: &self.x_forwarded_for,
        }
    }
}

/// The bytes of a body a route reads, or the status and code of its state: over
/// [`MAX_BODY_BYTES`] `413 too_large`, not complete by the deadline `408 request_timeout`,
/// broken off `400 malformed`.
pub(crate) fn body_state(body: RequestBody<'_>) -> Result<&[u8], (u16, &'static str)> {
    match body {
        RequestBody::Complete(bytes) if bytes.len() <= MAX_BODY_BYTES => Ok(bytes),
        RequestBody::Complete(_) | RequestBody::TooLarge => Err(WireCode::TooLarge.answer()),
        RequestBody::TimedOut => Err(WireCode::RequestTimeout.answer()),
        RequestBody::Broken => Err(WireCode::Malformed.answer()),
    }
}

/// The bytes of a body a route reads, or the refusal of its state ([`body_state`]).
fn body_bytes(body: RequestBody<'_>) -> Result<&[u8], ServerResponse> {
    body_state(body).map_err(|(status, code)| ServerResponse::error(status, code))
}

/// Decodes a body a route reads.
fn decode_body<T: serde::de::DeserializeOwned>(body: RequestBody<'_>) -> Result<T, ServerResponse> {
    let bytes = body_bytes(body)?;
    wire::decode(bytes, MAX_MESSAGE_BYTES).map_err(|err| wire_refusal(&err))
}

fn wire_refusal(err: &WireError) -> ServerResponse {
    let (status, code) = status_of_wire_error(err);
    ServerResponse::error(status, code)
}

/// `status` with the result as JSON, or the refusal.
fn reply<T: serde::Serialize>(status: u16, result: Result<T, Refusal>) -> ServerResponse {
    match result {
        Ok(reply) => ServerResponse::json(status, wire::encode(&reply)),
        Err(refusal) => ServerResponse::refusal(&refusal),
    }
}

/// Answers one request to the server's routes under `prefix` (e.g.
/// [`DEFAULT_PREFIX`](crate::transport::DEFAULT_PREFIX)) at `now`; `rng` draws tokens and codes.
/// `user` is `None` on the first call; a user route then answers [`Handled::NeedsUser`], and the
/// host calls again with the user its own authentication found. See the [module docs](self).
///
/// ```
/// # use lanlink::server::endpoint::{handle, Handled, HttpRequest, RequestBody};
/// # use lanlink::server::{Server, ServerConfig, User};
/// # let mut fut = std::pin::pin!(async {
/// # let server = Server::new(ServerConfig::default()).unwrap();
/// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let mut rng = lanlink::os_rng();
/// # let headers: [(&str, &[u8]); 1] = [("host", b"cloud.example")];
/// # let get = |path: &'static str| HttpRequest { method: "GET", path, query: None, authority: None,
/// #     headers: &headers, peer: Some("203.0.113.7".parse().unwrap()) };
/// // A known path asked with another method; a body too large, whatever the route.
/// let delete = HttpRequest { method: "DELETE", ..get("/lanlink/v1/discover") };
/// let answer = handle(&server, now, &mut rng, "/lanlink/v1", &delete, RequestBody::Complete(b""), None).await;
/// assert_eq!(answer.into_answer().map(|a| a.status), Some(405));
/// let post = HttpRequest { method: "POST", ..get("/lanlink/v1/agent/announce") };
/// let answer = handle(&server, now, &mut rng, "/lanlink/v1", &post, RequestBody::TooLarge, None).await;
/// assert_eq!(answer.into_answer().map(|a| a.status), Some(413));
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
pub async fn handle<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    server: &Server<S>,
    now: DateTime<Utc>,
    rng: &mut R,
    prefix: &str,
    request: &HttpRequest<'_>,
    body: RequestBody<'_>,
    user: Option<&User>,
) -> Handled {
    if let Some(refused) = oversized_head(request) {
        return refused;
    }
    let route = Route::of(prefix, request.method, request.path);
    let answer = match route {
        Route::NotFound => Ok(ServerResponse::for_code(WireCode::NotFound)),
        Route::NotAllowed(allow) => {
            let mut answer = ServerResponse::for_code(WireCode::MethodNotAllowed);
            answer.headers.push(("allow", allow.to_owned()));
            Ok(answer)
        }
        Route::Announce => match announce(server, now, request, body).await {
            Ok(Routed::Hold(held)) => return Handled::Hold(held),
            Ok(Routed::Answer(answer)) => Ok(answer),
            Err(answer) => Err(answer),
        },
        Route::Redeem => redeem(server, now, rng, request, body).await,
        Route::Discover | Route::Link | Route::LinkStatus(_) | Route::Codes => {
            match user_route(server, now, rng, route, request, body, user).await {
                Ok(Some(Routed::Answer(answer))) => Ok(answer),
                Ok(Some(Routed::Hold(held))) => return Handled::Hold(held),
                Ok(None) => {
                    return Handled::NeedsUser {
                        display_name: route == Route::Link,
                    }
                }
                Err(answer) => Err(answer),
            }
        }
    }
    .unwrap_or_else(|refusal| refusal);
    sent(answer, request, body)
}

/// The `431` of a head over [`MAX_HEAD_BYTES`], before any route: as an HTTP layer refuses it,
/// nothing is read, an empty body, the connection closed.
pub(crate) fn oversized_head(request: &HttpRequest<'_>) -> Option<Handled> {
    (head_bytes(request) > MAX_HEAD_BYTES).then(|| {
        Handled::Answer(ServerResponse {
            status: 431,
            headers: Vec::new(),
            body: Zeroizing::new(Vec::new()),
            close: true,
            ring: None,
        })
    })
}

/// A route's answer as sent: no body for a `HEAD`, and the connection closed after a body that
/// was not read whole.
pub(crate) fn sent(
    mut answer: ServerResponse,
    request: &HttpRequest<'_>,
    body: RequestBody<'_>,
) -> Handled {
    if request.method == "HEAD" {
        answer.body = Zeroizing::new(Vec::new());
    }
    // A body left unread (or cut off) leaves bytes on the connection that are no request.
    answer.close = !matches!(body, RequestBody::Complete(_));
    Handled::Answer(answer)
}

impl Caller<'_> {
    /// The caller's public network, resolved by the server ([`Server::caller`]).
    fn network<S: Backend>(
        &self,
        server: &Server<S>,
        request: RequestKind,
    ) -> Result<PublicNetwork, Refusal> {
        server.caller(request, self.peer, self.headers())
    }
}

async fn announce<S: Backend>(
    server: &Server<S>,
    now: DateTime<Utc>,
    request: &HttpRequest<'_>,
    body: RequestBody<'_>,
) -> Result<Routed, ServerResponse> {
    let caller = Caller::of(request)?;
    let announce = wire::decode_announce(body_bytes(body)?).map_err(|err| wire_refusal(&err))?;
    let network = match caller.network(server, RequestKind::Announce) {
        Ok(network) => network,
        Err(refusal) => return Ok(Routed::Answer(ServerResponse::refusal(&refusal))),
    };
    Ok(match server.announce_held(now, network, &announce).await {
        // No message, and a hold asked for and granted (revision 1.6).
        Ok((_, Some(until))) => Routed::Hold(Held::announce(
            network,
            announce,
            until,
            server.config().hold_recheck(),
        )),
        Ok((reply, None)) => Routed::Answer(ServerResponse::json(200, wire::encode(&reply))),
        Err(refusal) => Routed::Answer(ServerResponse::refusal(&refusal)),
    })
}

async fn redeem<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    server: &Server<S>,
    now: DateTime<Utc>,
    rng: &mut R,
    request: &HttpRequest<'_>,
    body: RequestBody<'_>,
) -> Result<ServerResponse, ServerResponse> {
    let caller = Caller::of(request)?;
    let redeem: RedeemRequest = decode_body(body)?;
    let result = match caller.network(server, RequestKind::Redeem) {
        Ok(network) => server.redeem(now, rng, network, &redeem).await,
        Err(refusal) => Err(refusal),
    };
    let linked = result.as_ref().ok().map(|redeemed| redeemed.instance_id);
    let mut answer = reply(200, result.map(|redeemed| redeemed.reply));
    // A status request held for this link is answered now.
    answer.ring = linked;
    Ok(answer)
}

/// A user route: `Ok(None)` when the user is still needed.
async fn user_route<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    server: &Server<S>,
    now: DateTime<Utc>,
    rng: &mut R,
    route: Route<'_>,
    request: &HttpRequest<'_>,
    body: RequestBody<'_>,
    user: Option<&User>,
) -> Result<Option<Routed>, ServerResponse> {
    // The cross-site rule of the state-changing routes, before the host's authentication.
    let checked = match route {
        Route::Link => Some(UserRoute::WithBody),
        Route::Codes => Some(UserRoute::Bodyless),
        _ => None,
    };
    if let Some(checked) = checked {
        check_cross_site(request, checked, server.config().allowed_origins())
            .map_err(|refusal| ServerResponse::refusal(&refusal))?;
    }
    let Some(user) = user else {
        return Ok(None);
    };
    let account = &user.account;
    Ok(Some(Routed::Answer(match route {
        Route::Discover => {
            let caller = Caller::of(request)?;
            let result = match caller.network(server, RequestKind::Discover) {
                Ok(network) => server.discover(now, network, user).await,
                Err(refusal) => Err(refusal),
            };
            reply(200, result)
        }
        Route::Link => {
            let caller = Caller::of(request)?;
            let link: LinkRequest = decode_body(body)?;
            let result = match caller.network(server, RequestKind::Link) {
                Ok(network) => server.link(now, rng, network, user, link).await,
                Err(refusal) => Err(refusal),
            };
            let accepted = result.as_ref().ok().map(|reply| reply.instance_id);
            let mut answer = reply(202, result);
            // A message now waits for the agent: its held announcement is answered now.
            answer.ring = accepted;
            answer
        }
        Route::LinkStatus(id) => {
            let caller = Caller::of(request)?;
            let instance_id = percent_decode(id)
                .and_then(|id| id.parse::<InstanceId>().ok())
                .ok_or_else(|| ServerResponse::for_code(WireCode::Malformed))?;
            let hold = status_hold(request.query)?;
            let network = match caller.network(server, RequestKind::LinkStatus) {
                Ok(network) => network,
                Err(refusal) => return Ok(Some(Routed::Answer(ServerResponse::refusal(&refusal)))),
            };
            let result = server
                .link_status(now, network, account, &instance_id)
                .await;
            let hold = server.config().hold_granted(hold);
            match &result {
                // A link on its way, and a hold asked for (revision 1.6): answered when its
                // state moves, or when the hold ends.
                Ok(status)
                    if hold > chrono::TimeDelta::zero()
                        && matches!(status.state, LinkState::Pending | LinkState::Delivered) =>
                {
                    return Ok(Some(Routed::Hold(Held::status(
                        network,
                        account.clone(),
                        instance_id,
                        status.state,
                        crate::server::record::later(now, hold),
                        server.config().hold_recheck(),
                        request.method == "HEAD",
                    ))));
                }
                _ => reply(200, result),
            }
        }
        // `Route::Codes`; the other routes never come here.
        _ => reply(201, server.mint_code(now, rng, account).await),
    })))
}

/// The hold a status request asks for (revision 1.6): `hold_ms=N` in its query, `N` at most
/// [`MAX_HOLD_MS`](wire::MAX_HOLD_MS) milliseconds (else `400 malformed`); other query
/// parameters are ignored, as before 1.6.
fn status_hold(query: Option<&str>) -> Result<Option<u32>, ServerResponse> {
    let mut hold = None;
    for pair in query.unwrap_or_default().split('&') {
        let Some(value) = pair.strip_prefix("hold_ms=") else {
            continue;
        };
        let parsed = (hold.is_none()
            && !value.is_empty()
            && value.len() <= 5
            && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse::<u32>().ok())
        .flatten()
        .filter(|ms| *ms <= wire::MAX_HOLD_MS);
        match parsed {
            Some(ms) => hold = Some(ms),
            None => return Err(ServerResponse::for_code(WireCode::Malformed)),
        }
    }
    Ok(hold)
}

/// Decodes `%XX` escapes in a path segment (a `%` not followed by two hex digits stays as it
/// is); `None` when the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|&b| (b as char).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push(high * 16 + low);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// What [`issue_ticket`] answered, and, when it issued one, the ticket's network and instance
/// (for the host's log: neither is a secret).
#[cfg(feature = "ticket")]
#[derive(Debug)]
#[non_exhaustive]
pub struct TicketAnswer {
    /// The answer to send.
    pub response: ServerResponse,
    /// The network and instance of the ticket issued, if one was.
    pub issued: Option<(PublicNetwork, InstanceId)>,
}

/// `POST {prefix}/agent/ticket` as a function, with no HTTP library in it (feature `ticket`):
/// the body, an [`Announce`](crate::wire::Announce), only proves its presence key (its instance
/// id must derive from the key, else `403 forged_instance`); nothing is recorded and no queued
/// message is taken. The caller's network is resolved from the socket peer and the forwarding
/// lines exactly as for every other route (`403 unresolvable_client` when it cannot be); a body
/// too large, late or broken off is answered as on every route (`413`, `408`, `400`, and the
/// connection closed). The answer is `200` [`TicketReply`](crate::ticket::TicketReply), the
/// ticket signed under `key` for `ttl`. `config` gives the client-address resolver and the IPv6
/// grouping: pass the server's own. `lanlink::http::ticket` serves it on axum.
///
/// ```
/// use chrono::{DateTime, TimeDelta};
/// use lanlink::server::endpoint::{issue_ticket, HttpRequest, RequestBody};
/// use lanlink::server::ServerConfig;
/// use lanlink::ticket::TicketKey;
/// let key = TicketKey::from_bytes([3; 32]);
/// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// let request = HttpRequest {
///     method: "POST",
///     path: "/lanlink/v1/agent/ticket",
///     query: None,
///     authority: None,
///     headers: &[],
///     peer: Some("198.51.100.7".parse().unwrap()),
/// };
/// let answer = issue_ticket(&key, &ServerConfig::default(), TimeDelta::hours(1), now, &request,
///     RequestBody::Complete(b"{}"));
/// assert_eq!((answer.response.status, answer.issued), (400, None));
/// ```
#[cfg(feature = "ticket")]
pub fn issue_ticket(
    key: &crate::ticket::TicketKey,
    config: &super::config::ServerConfig,
    ttl: chrono::TimeDelta,
    now: DateTime<Utc>,
    request: &HttpRequest<'_>,
    body: RequestBody<'_>,
) -> TicketAnswer {
    let issued = (|| {
        let caller = Caller::of(request)?;
        // The announcement carries the agent's presence key: zeroized when dropped.
        let announce =
            wire::decode_announce(body_bytes(body)?).map_err(|err| wire_refusal(&err))?;
        if !announce.presence_key.proves(&announce.instance_id) {
            return Err(ServerResponse::refusal(&Refusal::ForgedInstance));
        }
        let ip = config
            .resolver()
            .resolve(caller.peer, caller.headers())
            .map_err(|err| ServerResponse::refusal(&Refusal::ClientAddr(err)))?;
        let network = config.network_of(ip);
        let ticket = key.issue(now, ttl, network, announce.instance_id);
        let reply = crate::ticket::TicketReply {
            ticket: ticket.token,
            client_id: key.client_id(&announce.instance_id),
            expires_at: ticket.ticket.expires_at,
        };
        Ok((
            ServerResponse::json(200, wire::encode(&reply)),
            (network, announce.instance_id),
        ))
    })();
    let (mut response, issued) = match issued {
        Ok((response, issued)) => (response, Some(issued)),
        Err(response) => (response, None),
    };
    // A body left unread (or cut off) leaves bytes on the connection that are no request.
    response.close = !matches!(body, RequestBody::Complete(_));
    TicketAnswer { response, issued }
}

#[cfg(test)]
mod tests;
