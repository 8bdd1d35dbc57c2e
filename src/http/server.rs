//! The server's HTTP routes over a [`Server`] on any store: a thin shell over the
//! core's [`server::endpoint`](crate::server::endpoint).
//! It must not decide a status, a limit or a header rule: the core's function does.
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
//! Every rule is the core's: the routes hand the request's method, target, header lines, socket
//! peer ([`Peer`]) and the state of its body (read only for the routes that take one, within
//! [`MAX_BODY_BYTES`] and [`serve()`](super::serve())'s request deadline) to
//! [`endpoint::handle`], and write its answer as it is. Where
//! a route needs a user, the [`Authenticator`] answers: its account (and, for `POST …/link`, its
//! display name), or its [`Rejection`](super::Rejection) (the router's own
//! `401 unauthorized`, or the host's own response). Another HTTP stack that calls the same
//! function answers byte for byte alike (`examples/blocking_server.rs`).
//!
//! The same routes serve a server over the in-memory store or a shared one such as Redis; a
//! store that cannot be reached answers `503 store_unavailable`.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, Response, StatusCode};
use axum::routing::any;
use axum::Router;
use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::hold::{Bell, LinkBell};
use super::{read_body_state, Authenticator, Peer, MAX_BODY_BYTES};
use crate::event::ServerEvent;
use crate::server::endpoint::{
    self, Handled, Held, HttpRequest, RequestBody, ServerResponse, User,
};
use crate::server::{Backend, Server};
use crate::WireCode;

/// A server shared between request handlers: the in-memory one. Over another store, the
/// routes take an `Arc<Server<S>>` alike.
pub type SharedServer = Arc<Server>;

struct App<S> {
    server: Arc<Server<S>>,
    auth: Arc<dyn Authenticator>,
    /// The route prefix, without a trailing slash.
    prefix: String,
    /// What wakes held requests (revision 1.6).
    bell: Arc<dyn Bell>,
}

impl<S: Backend + 'static> Wire for App<S> {
    fn reads_body(&self, request: &HttpRequest<'_>) -> bool {
        endpoint::reads_body(&self.prefix, request.method, request.path)
    }

    fn handle<'a, R: CryptoRng + RngCore + Send>(
        &'a self,
        now: DateTime<Utc>,
        rng: &'a mut R,
        request: &'a HttpRequest<'a>,
        body: RequestBody<'a>,
        user: Option<&'a User>,
    ) -> impl Future<Output = Handled> + Send + 'a {
        let prefix = self.prefix.as_str();
        endpoint::handle(&*self.server, now, rng, prefix, request, body, user)
    }

    fn resume<'a>(
        &'a self,
        now: DateTime<Utc>,
        held: &'a Held,
    ) -> impl Future<Output = Option<ServerResponse>> + Send + 'a {
        endpoint::resume(&*self.server, now, held)
    }

    fn bell(&self) -> Option<&dyn Bell> {
        Some(&*self.bell)
    }

    fn unauthorized(&self) -> ServerResponse {
        ServerResponse::unauthorized()
    }

    fn authenticator(&self) -> &dyn Authenticator {
        &*self.auth
    }

    fn answered(&self) {
        log_events(&self.server, "lanlink::server");
    }
}

/// The server's routes under `prefix` (e.g. [`super::DEFAULT_PREFIX`]), over a server on any
/// store: the in-memory one, or a shared one such as `Records` over a `RedisStore` (feature
/// `redis`), so that
/// several processes act as one server. Events a server [queues](crate::server::Events::queue)
/// are drained and logged ([`log_event`]) after each request; give a server over a shared
/// store [`Events::sink`](crate::server::Events::sink)`(`[`log_event`]`)`.
///
/// ```
/// use std::sync::Arc;
/// use lanlink::http::{server::{log_event, router}, BearerTokens, DEFAULT_PREFIX};
/// use lanlink::server::{Events, MemoryStore, Server, ServerConfig};
/// let server = Arc::new(Server::new(ServerConfig::default()).unwrap());
/// let app = router(server, Arc::new(BearerTokens::default()), DEFAULT_PREFIX);
/// // Over a shared store (here an in-memory one; a RedisStore spans processes):
/// let store = Arc::new(MemoryStore::default());
/// let shared = Server::with_store(ServerConfig::default(), store, Events::sink(log_event)).unwrap();
/// let app = app.merge(router(Arc::new(shared), Arc::new(BearerTokens::default()), "/other"));
/// # let _ = app;
/// ```
pub fn router<S: Backend + 'static>(
    server: Arc<Server<S>>,
    auth: Arc<dyn Authenticator>,
    prefix: &str,
) -> Router {
    router_with_bell(server, auth, prefix, Arc::new(LinkBell::default()))
}

/// [`router`], with the [`Bell`] that wakes its held requests (revision 1.6): a
/// `http::hold::RedisBell` (feature `redis`) when several instances share a
/// store, so that a link accepted on one instance answers the agent's request held on another
/// at once. [`router`] uses a [`LinkBell`] of its own, which wakes only the requests held by
/// the same router.
///
/// ```
/// use std::sync::Arc;
/// use lanlink::http::hold::LinkBell;
/// use lanlink::http::{server::router_with_bell, BearerTokens, DEFAULT_PREFIX};
/// use lanlink::server::{Server, ServerConfig};
/// let server = Arc::new(Server::new(ServerConfig::default()).unwrap());
/// let bell = Arc::new(LinkBell::default());
/// let app = router_with_bell(server, Arc::new(BearerTokens::default()), DEFAULT_PREFIX, bell);
/// # let _ = app;
/// ```
pub fn router_with_bell<S: Backend + 'static>(
    server: Arc<Server<S>>,
    auth: Arc<dyn Authenticator>,
    prefix: &str,
    bell: Arc<dyn Bell>,
) -> Router {
    let prefix = prefix.trim_end_matches('/');
    let app = Arc::new(App {
        server,
        auth,
        prefix: prefix.to_owned(),
        bell,
    });
    // Every method of the known paths, and every other path under the prefix, goes to the core
    // (which answers 405 with `Allow`, and 404). No router-wide fallback, so the routes merge
    // into (or nest inside) a host app that has its own.
    Router::new()
        .route(&format!("{prefix}/agent/announce"), any(answer::<App<S>>))
        .route(&format!("{prefix}/agent/redeem"), any(answer::<App<S>>))
        .route(&format!("{prefix}/discover"), any(answer::<App<S>>))
        .route(&format!("{prefix}/link"), any(answer::<App<S>>))
        .route(
            &format!("{prefix}/link/{{instance_id}}"),
            any(answer::<App<S>>),
        )
        .route(&format!("{prefix}/codes"), any(answer::<App<S>>))
        .route(&format!("{prefix}/{{*rest}}"), any(answer::<App<S>>))
        .with_state(app)
}

/// Spawns a task that drops expired records from `server` every `every` (every operation ignores
/// what has expired, but only this frees the memory of networks no one asks about again, and drops
/// undelivered secrets at once).
///
/// ```no_run
/// # async fn demo(server: lanlink::http::server::SharedServer) {
/// let task = lanlink::http::server::spawn_purge(server, std::time::Duration::from_secs(10));
/// # drop(task);
/// # }
/// ```
pub fn spawn_purge<S: Backend + 'static>(
    server: Arc<Server<S>>,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            if let Err(err) = server.purge_expired(wall_now()).await {
                tracing::warn!(target: "lanlink::server", %err, "purge failed");
            }
            log_events(&server, "lanlink::server");
        }
    })
}

/// `404 {"error":"not_found"}`: what the crate's routers answer for unknown paths under their
/// prefix. They set no router-wide fallback (so they compose with a host app that has its own);
/// a standalone lanlink server adds this one for every other path.
///
/// ```
/// use std::sync::Arc;
/// use lanlink::http::{server, BearerTokens, DEFAULT_PREFIX};
/// use lanlink::server::{Server, ServerConfig};
/// let shared = Arc::new(Server::new(ServerConfig::default()).unwrap());
/// let app = server::router(shared, Arc::new(BearerTokens::default()), DEFAULT_PREFIX)
///     .fallback(server::not_found);
/// # let _ = app;
/// ```
pub async fn not_found() -> Response<Body> {
    into_response(ServerResponse::for_code(WireCode::NotFound))
}

fn wall_now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

/// The socket peer of a request: [`Peer`] from [`super::serve()`], or axum's `ConnectInfo`.
pub(crate) fn peer_of(parts: &Parts) -> Option<IpAddr> {
    if let Some(Peer(addr)) = parts.extensions.get::<Peer>() {
        return Some(addr.ip());
    }
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// A request's header lines as the core takes them: (name, bytes), in order.
pub(crate) fn header_pairs(parts: &Parts) -> Vec<(&str, &[u8])> {
    parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect()
}

/// The core's view of a request's head ([`HttpRequest`]), over its `headers`
/// ([`header_pairs`]).
pub(crate) fn core_request<'a>(
    parts: &'a Parts,
    headers: &'a [(&'a str, &'a [u8])],
) -> HttpRequest<'a> {
    HttpRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        authority: parts.uri.authority().map(|a| a.as_str()),
        headers,
        peer: peer_of(parts),
    }
}

/// Logs one server event (events carry no secrets): a server's sink, as
/// [`Events::sink`](crate::server::Events::sink)`(log_event)`; the routers log what a server
/// [queues](crate::server::Events::queue) with it. A gap in the record ([`ServerEvent::EventsLost`]) is a warning.
pub fn log_event(event: ServerEvent) {
    match event {
        ServerEvent::EventsLost { .. } => tracing::warn!(target: "lanlink::server", ?event),
        _ => tracing::info!(target: "lanlink::server", ?event),
    }
}

/// Logs and drops the events `server` queued, if it queues them, under `target`
/// (`lanlink::server` with [`log_event`]'s levels, or a profile's own).
pub(crate) fn log_events<S: Backend>(server: &Server<S>, target: &'static str) {
    while let Some(event) = server.poll_event() {
        match target {
            "lanlink::server" => log_event(event),
            _ => tracing::info!(target: "lanlink::obico", ?event),
        }
    }
}

/// A wire function the routers are a shell over: the core's ([`endpoint::handle`]) or a
/// profile's (the Obico routes'). The shell moves bytes; every rule is the wire's.
pub(crate) trait Wire: Send + Sync + 'static {
    /// Whether the request's route reads its body.
    fn reads_body(&self, request: &HttpRequest<'_>) -> bool;

    /// One call of the wire function.
    fn handle<'a, R: CryptoRng + RngCore + Send>(
        &'a self,
        now: DateTime<Utc>,
        rng: &'a mut R,
        request: &'a HttpRequest<'a>,
        body: RequestBody<'a>,
        user: Option<&'a User>,
    ) -> impl Future<Output = Handled> + Send + 'a;

    /// Looks again at a request the wire holds (revision 1.6; the core's [`endpoint::resume`]).
    fn resume<'a>(
        &'a self,
        now: DateTime<Utc>,
        held: &'a Held,
    ) -> impl Future<Output = Option<ServerResponse>> + Send + 'a;

    /// What wakes the wire's held requests and hears its rings; `None`: a wire that holds
    /// nothing (its holds, if any, would wait on their timers alone).
    fn bell(&self) -> Option<&dyn Bell> {
        None
    }

    /// The wire's own `401`, for [`Rejection::Unauthorized`](super::Rejection::Unauthorized).
    fn unauthorized(&self) -> ServerResponse;

    /// Who a user request is from.
    fn authenticator(&self) -> &dyn Authenticator;

    /// Called once the wire answered (to log an in-memory server's events).
    fn answered(&self);
}

/// Hands one request to a wire function (asking the [`Authenticator`] when the route needs a
/// user) and writes its answer: the one handler of the crate's server-side routers.
pub(crate) async fn answer<W: Wire>(
    State(wire): State<Arc<W>>,
    request: Request,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let headers = header_pairs(&parts);
    let request = core_request(&parts, &headers);
    // The body is read only for a route that takes one; it may carry a secret.
    let read = if wire.reads_body(&request) {
        read_body_state(body, MAX_BODY_BYTES).await
    } else {
        Ok(Zeroizing::new(Vec::new()))
    };
    let body = match &read {
        Ok(bytes) => RequestBody::Complete(bytes),
        Err(state) => *state,
    };
    let (now, mut rng) = (wall_now(), crate::os_rng());
    // The wire's future is boxed, so that it takes memory only while it runs: a held request
    // keeps this handler's future for up to its hold, and should keep no more than it needs.
    let handled = match Box::pin(wire.handle(now, &mut rng, &request, body, None)).await {
        Handled::NeedsUser { display_name } => {
            let auth = wire.authenticator();
            let account = match auth.authenticate(&parts).await {
                Ok(account) => account,
                Err(rejection) => {
                    return rejection.into_response(|| into_response(wire.unauthorized()))
                }
            };
            let display_name = match display_name {
                true => auth.display_name(&parts, &account).await,
                false => None,
            };
            let user = User {
                account,
                display_name,
            };
            Box::pin(wire.handle(now, &mut rng, &request, body, Some(&user))).await
        }
        handled => handled,
    };
    // The request is answered from here on: its head and body go now (the body may hold a
    // secret), rather than stay for a hold.
    drop(read);
    drop(headers);
    drop(parts);
    let answer = match handled {
        Handled::Answer(answer) => answer,
        Handled::Hold(held) => {
            wire.answered();
            hold(&*wire, &held).await
        }
        // With a user given, the wire always answers.
        _ => wire.unauthorized(),
    };
    if let (Some(instance_id), Some(bell)) = (&answer.ring, wire.bell()) {
        bell.ring(instance_id);
    }
    wire.answered();
    into_response(answer)
}

/// Keeps a held request (revision 1.6) until the core answers it: on each ring of its
/// instance's bell, and at each time the core names ([`Held::next_check`]).
async fn hold<W: Wire>(wire: &W, held: &Held) -> ServerResponse {
    let timers_only = LinkBell::default();
    let bell = wire.bell().unwrap_or(&timers_only);
    super::hold::wait_out(bell, &held.instance_id(), || async {
        let now = wall_now();
        match wire.resume(now, held).await {
            Some(answer) => Ok(answer),
            None => Err((held.next_check(now) - now).to_std().unwrap_or_default()),
        }
    })
    .await
}

/// The core's answer as an axum response (`Connection: close` when the core says so).
pub(crate) fn into_response(answer: ServerResponse) -> Response<Body> {
    let mut response = response_of(answer.status, answer.headers, &answer.body);
    if answer.close {
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A core's status, header lines and body (the server's or the agent's endpoint's) as an axum
/// response: a status out of range is a `500`, a header value axum refuses is left out.
pub(crate) fn response_of(
    status: u16,
    header_lines: Vec<(&'static str, String)>,
    body: &[u8],
) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_vec()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in header_lines {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    response
}
