//! The HTTP/1.1 adapter (feature `http`, which is both halves: `http-server` and `http-client`):
//! JSON over HTTP under a route prefix (default [`DEFAULT_PREFIX`]), documented route by route in
//! `PROTOCOL.md`.
//! The adapter must not decide protocol rules: routes, statuses, limits and header rules are the
//! core's wire functions' ([`crate::server::endpoint`], [`crate::endpoint`]), and the adapter moves
//! bytes between them and the network (the ticket route's is
//! `server::endpoint::issue_ticket`, feature `ticket`).
//!
//! Feature `http-server` (axum):
//! - [`server::router`]: the server's routes (agent-facing and user-facing), over [`crate::server::Server`].
//! - [`agent::router`]: the agent's local endpoint (`GET …/secret`), over a shared [`crate::agent::Agent`].
//! - [`web::router`]: the linking page for browsers and the browser linker module (`lanlink.js`).
//! - `ticket::router` (feature `ticket`): `POST …/agent/ticket`, issuing signed network tickets.
//! - [`serve()`]: a hardened accept loop (connection caps in total, per client and per coarser
//!   prefix, header, request and connection timeouts).
//! - [`Authenticator`] and [`BearerTokens`]: who a user request is from.
//!
//! Every refusal is `{"error": "<code>"}` with a fitting status; see [`status_of`].
//!
//! Feature `http-client` (reqwest):
//! - [`client`]: reqwest clients implementing the [`crate::transport`] traits.

// Handlers return a ready refusal `Response` as their error: it is what gets sent, and boxing it
// would cost an allocation per refusal for nothing.
#![allow(clippy::result_large_err)]

#[cfg(feature = "http-server")]
pub mod agent;
#[cfg(feature = "http-client")]
pub mod client;
#[cfg(feature = "http-server")]
pub mod hold;
#[cfg(feature = "http-server")]
mod serve;
#[cfg(feature = "http-server")]
pub mod server;
#[cfg(all(feature = "http-server", feature = "ticket"))]
pub mod ticket;
#[cfg(feature = "http-server")]
pub mod web;

#[cfg(feature = "http-server")]
use std::net::SocketAddr;

#[cfg(feature = "http-server")]
use async_trait::async_trait;
#[cfg(feature = "http-server")]
use axum::body::Body;
#[cfg(feature = "http-server")]
use axum::http::request::Parts;
#[cfg(feature = "http-server")]
use axum::http::{header, HeaderMap, Response, StatusCode};
#[cfg(feature = "http-server")]
use subtle::ConstantTimeEq;
#[cfg(feature = "http-server")]
use zeroize::Zeroizing;

#[cfg(feature = "http-server")]
use self::serve::RequestDeadline;
#[cfg(feature = "http-server")]
pub use self::serve::{serve, ServeConfig, HOLD_GRACE, REFUSAL_LOG_INTERVAL};
#[cfg(feature = "http-server")]
use crate::confirm::DisplayName;
#[cfg(feature = "http-server")]
use crate::error::Refusal;
#[cfg(feature = "http-server")]
use crate::id::AccountId;
/// The axum version the routers are built with (their `Router`, `Rejection`'s `Response`);
/// feature `http-server`.
#[cfg(feature = "http-server")]
pub use axum;
/// The `http` crate version of the types in the routers' signatures (the `Authenticator`'s
/// `request::Parts`, `Rejection`'s `Response`, [`status_of`]'s `StatusCode`), the one axum and
/// reqwest both build on: `axum::http`, re-exported; feature `http-server`. With `http-client`
/// alone, the clients' header types are under `reqwest::header`.
#[cfg(feature = "http-server")]
pub use axum::http;
/// The reqwest version the clients take (`reqwest::Client`, and `Credential::Header`'s
/// `reqwest::header::HeaderName`); feature `http-client`.
#[cfg(feature = "http-client")]
pub use reqwest;

/// The default route prefix (the core's [`transport::DEFAULT_PREFIX`](crate::transport::DEFAULT_PREFIX)).
pub const DEFAULT_PREFIX: &str = crate::transport::DEFAULT_PREFIX;

#[cfg(feature = "http-server")]
/// Largest request body accepted, in bytes (larger: `413 too_large`).
pub const MAX_BODY_BYTES: usize = crate::server::endpoint::MAX_BODY_BYTES;

#[cfg(feature = "http-server")]
/// The socket peer of a request, put in its extensions by [`serve()`] (or by axum's
/// `into_make_service_with_connect_info::<SocketAddr>()`).
///
/// ```
/// use lanlink::http::Peer;
/// // What `serve()` puts in each request's extensions, and a handler reads back.
/// let mut parts = axum::http::Request::new(()).into_parts().0;
/// parts.extensions.insert(Peer("192.168.1.20:51234".parse().unwrap()));
/// assert_eq!(parts.extensions.get::<Peer>().map(|p| p.0.port()), Some(51234));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

#[cfg(feature = "http-server")]
/// Maps a request to an account: the embedder's user authentication, over the whole request
/// head (headers, URI and the extensions a host's session layer put there), so that it can reuse
/// the host's own sessions instead of parsing headers by hand.
///
/// A request it does not admit is answered with its [`Rejection`]: the router's own
/// `401 unauthorized` (in the router's shape), or the host's own response (a 403, a 503 when its
/// session store is down, a redirect to its sign-in page).
///
/// ```
/// use async_trait::async_trait;
/// use axum::http::{request::Parts, Response, StatusCode};
/// use lanlink::http::{Authenticator, Rejection};
/// use lanlink::AccountId;
///
/// /// What the host's session middleware puts in the request's extensions.
/// #[derive(Clone)]
/// struct SignedIn(AccountId);
///
/// struct Sessions;
///
/// #[async_trait]
/// impl Authenticator for Sessions {
///     async fn authenticate(&self, parts: &Parts) -> Result<AccountId, Rejection> {
///         match parts.extensions.get::<SignedIn>() {
///             Some(SignedIn(account)) => Ok(account.clone()),
///             None => {
///                 let mut to_sign_in = Response::new(axum::body::Body::empty());
///                 *to_sign_in.status_mut() = StatusCode::SEE_OTHER;
///                 to_sign_in.headers_mut().insert("location", "/sign-in".parse().unwrap());
///                 Err(Rejection::Response(to_sign_in))
///             }
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The account making the request, or why not.
    ///
    /// ```
    /// # use axum::http::Request;
    /// # use lanlink::http::{Authenticator, BearerTokens, Rejection};
    /// # use lanlink::AccountId;
    /// # let mut fut = std::pin::pin!(async {
    /// let tokens = BearerTokens::new(vec![("s3cret-token".into(), AccountId::new("alice").unwrap())]);
    /// let with = |value: &str| Request::builder().header("authorization", value).body(()).unwrap().into_parts().0;
    /// assert_eq!(tokens.authenticate(&with("Bearer s3cret-token")).await.unwrap().as_str(), "alice");
    /// assert!(matches!(tokens.authenticate(&with("Bearer guess")).await, Err(Rejection::Unauthorized)));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn authenticate(&self, parts: &Parts) -> Result<AccountId, Rejection>;

    /// The display name forwarded to the agent with a link request of `account` (revision
    /// 1.4: what a device with a confirmation policy shows, "… wants to link this device").
    /// Default: the account id itself ([`DisplayName::of_account`]). Return something the
    /// device's owner recognises (an e-mail address), never a secret; `None` sends no name, and
    /// an agent with a policy then refuses the link.
    ///
    /// ```
    /// # use axum::http::Request;
    /// # use lanlink::http::{Authenticator, BearerTokens, Rejection};
    /// # use lanlink::AccountId;
    /// # let mut fut = std::pin::pin!(async {
    /// let tokens = BearerTokens::new(vec![("s3cret-token".into(), AccountId::new("alice").unwrap())]);
    /// let with = |value: &str| Request::builder().header("authorization", value).body(()).unwrap().into_parts().0;
    /// // The default: the account id itself.
    /// let alice = AccountId::new("alice").unwrap();
    /// let name = tokens.display_name(&with("Bearer s3cret-token"), &alice).await;
    /// assert_eq!(name.map(|n| n.to_string()).as_deref(), Some("alice"));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn display_name(&self, parts: &Parts, account: &AccountId) -> Option<DisplayName> {
        let _ = parts;
        DisplayName::of_account(account)
    }
}

#[cfg(feature = "http-server")]
/// Why an [`Authenticator`] did not admit a request, and so what the router answers.
///
/// ```
/// # use axum::http::Request;
/// # use lanlink::http::{Authenticator, BearerTokens, Rejection};
/// # use lanlink::AccountId;
/// # let mut fut = std::pin::pin!(async {
/// let tokens = BearerTokens::new(vec![("s3cret-token".into(), AccountId::new("alice").unwrap())]);
/// let with = |value: &str| Request::builder().header("authorization", value).body(()).unwrap().into_parts().0;
/// // No Authorization header at all: the router's own 401.
/// let anonymous = Request::new(()).into_parts().0;
/// assert!(matches!(tokens.authenticate(&anonymous).await, Err(Rejection::Unauthorized)));
/// # let _ = with;
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Rejection {
    /// The router's own `401 unauthorized` (`{"error":"unauthorized"}`, or Obico's
    /// `{"detail":"unauthorized"}` on the Obico routes).
    Unauthorized,
    /// The host's own response, sent as it is.
    Response(Response<Body>),
}

#[cfg(feature = "http-server")]
impl Rejection {
    /// The response for this rejection, with `unauthorized` the router's own 401.
    pub(crate) fn into_response(
        self,
        unauthorized: impl FnOnce() -> Response<Body>,
    ) -> Response<Body> {
        match self {
            Self::Unauthorized => unauthorized(),
            Self::Response(response) => response,
        }
    }
}

#[cfg(feature = "http-server")]
/// An [`Authenticator`] over a fixed list of bearer tokens (`Authorization: Bearer <token>`),
/// compared in constant time. For examples and tests; a real service has its own sessions.
///
/// ```
/// use lanlink::http::BearerTokens;
/// use lanlink::AccountId;
/// let tokens = BearerTokens::new(vec![("s3cret-token".into(), AccountId::new("alice").unwrap())]);
/// assert_eq!(tokens.len(), 1);
/// ```
#[derive(Default)]
pub struct BearerTokens {
    tokens: Vec<(Zeroizing<String>, AccountId)>,
}

#[cfg(feature = "http-server")]
impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerTokens")
            .field(
                "accounts",
                &self.tokens.iter().map(|(_, a)| a).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(feature = "http-server")]
impl BearerTokens {
    /// Accepts each `(token, account)` pair.
    ///
    /// ```
    /// use lanlink::http::BearerTokens;
    /// use lanlink::AccountId;
    /// let tokens = BearerTokens::new(vec![("s3cret-token".into(), AccountId::new("alice").unwrap())]);
    /// // Debug names the accounts, never a token.
    /// let shown = format!("{tokens:?}");
    /// assert!(shown.contains("alice") && !shown.contains("s3cret-token"));
    /// ```
    pub fn new(tokens: Vec<(String, AccountId)>) -> Self {
        Self {
            tokens: tokens
                .into_iter()
                .map(|(token, account)| (Zeroizing::new(token), account))
                .collect(),
        }
    }

    /// How many tokens are accepted.
    ///
    /// ```
    /// use lanlink::{http::BearerTokens, AccountId};
    /// let alice = AccountId::new("alice").unwrap();
    /// let tokens = BearerTokens::new(vec![("t1".into(), alice.clone()), ("t2".into(), alice)]);
    /// assert_eq!(tokens.len(), 2, "two tokens for one account");
    /// ```
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is accepted.
    ///
    /// ```
    /// use lanlink::http::BearerTokens;
    /// assert!(BearerTokens::default().is_empty(), "admits nobody");
    /// assert!(BearerTokens::new(Vec::new()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(feature = "http-server")]
#[async_trait]
impl Authenticator for BearerTokens {
    async fn authenticate(&self, parts: &Parts) -> Result<AccountId, Rejection> {
        self.account(&parts.headers).ok_or(Rejection::Unauthorized)
    }
}

#[cfg(feature = "http-server")]
impl BearerTokens {
    /// The account of the bearer token in `headers`, if it is one of ours.
    fn account(&self, headers: &HeaderMap) -> Option<AccountId> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        // The scheme is case-insensitive (RFC 7235 §2.1).
        let (scheme, token) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let presented = token.trim().as_bytes();
        // Compare against every token, so the time does not tell which one (or whether any)
        // matched first.
        let mut found = None;
        for (token, account) in &self.tokens {
            if bool::from(token.as_bytes().ct_eq(presented)) {
                found = Some(account.clone());
            }
        }
        found
    }
}

#[cfg(feature = "http-server")]
/// The HTTP status of a server refusal, as axum's `StatusCode` ([`Refusal::status`], which
/// every stack reads).
///
/// ```
/// use lanlink::http::status_of;
/// use lanlink::Refusal;
/// assert_eq!(status_of(&Refusal::LockedOut).as_u16(), 429);
/// assert_eq!(status_of(&Refusal::AgentNotFound).as_u16(), 404);
/// ```
pub fn status_of(refusal: &Refusal) -> StatusCode {
    // Every status `Refusal::status` gives is a valid one.
    StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(feature = "http-server")]
/// Reads a request body of at most `limit` bytes into a buffer that is zeroized when dropped, or
/// says what became of it ([`RequestBody`](crate::server::endpoint::RequestBody)): too large,
/// cut off by [`serve()`]'s request deadline, or broken off.
pub(crate) async fn read_body_state(
    body: Body,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, crate::server::endpoint::RequestBody<'static>> {
    use crate::server::endpoint::RequestBody;
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Zeroizing::new(collected.to_bytes().to_vec())),
        Err(err) if err.is::<LengthLimitError>() => Err(RequestBody::TooLarge),
        Err(err) if RequestDeadline::caused(&*err) => Err(RequestBody::TimedOut),
        Err(_) => Err(RequestBody::Broken),
    }
}
