//! The server's HTTP routes over a shared [`Server`].
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
//! User routes need the [`Authenticator`]'s account (`401 unauthorized` otherwise). The
//! state-changing ones (`POST …/link`, `POST …/codes`) first apply the cross-site rule
//! ([`server::cross_site`](crate::server::cross_site)): `403 bad_origin` for an `Origin` that is not allowed, `415
//! unsupported_media_type` for a body not declared `application/json`. The client
//! address is resolved by the server's configured resolver from the socket peer ([`Peer`]) and
//! the forwarding headers.
//!
//! The same routes serve an in-memory [`Server`] ([`router`]) or a [`Service`] over a shared
//! store such as Redis ([`service_router`]); a store that cannot be reached answers
//! `503 store_unavailable`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Response, StatusCode};
use axum::routing::{any, get, post};
use axum::Router;
use chrono::{DateTime, Utc};

use super::{
    cross_site, error_response, header_lines, json_response, read_body, status_of,
    wire_error_response, Authenticator, Peer, MAX_BODY_BYTES,
};
use crate::addr::ForwardedHeaders;
use crate::error::Refusal;
use crate::event::ServerEvent;
use crate::id::{AccountId, InstanceId};
use crate::server::cross_site::UserRoute;
use crate::server::{PendingLink, Redeemed, Server, Service};
use crate::wire::{self, LinkRequest, RedeemRequest, MAX_MESSAGE_BYTES};

/// A server shared between request handlers.
pub type SharedServer = Arc<Mutex<Server>>;

/// Locks a shared server. The server never panics while locked, so a poisoned lock still holds a
/// consistent server and is used as is.
pub fn lock(server: &SharedServer) -> MutexGuard<'_, Server> {
    crate::lock_unpoisoned(server)
}

/// What the routes call: one locked in-memory server, or a service over a shared store.
enum Backend {
    Local(SharedServer),
    Shared(Arc<Service>),
}

struct App {
    backend: Backend,
    auth: Arc<dyn Authenticator>,
    /// The server's [`ServerConfig::allowed_origins`](crate::server::ServerConfig::allowed_origins).
    allowed_origins: Vec<String>,
}

/// The server's routes under `prefix` (e.g. [`super::DEFAULT_PREFIX`]).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use lanlink::http::{server::router, BearerTokens, DEFAULT_PREFIX};
/// use lanlink::server::{Server, ServerConfig};
/// let server = Arc::new(Mutex::new(Server::new(ServerConfig::default()).unwrap()));
/// let app = router(server, Arc::new(BearerTokens::default()), DEFAULT_PREFIX);
/// # let _ = app;
/// ```
pub fn router(server: SharedServer, auth: Arc<dyn Authenticator>, prefix: &str) -> Router {
    routes(Backend::Local(server), auth, prefix)
}

/// The server's routes under `prefix` over a [`Service`] (for example on a
/// `RedisStore` (feature `redis`), so that several processes act as one
/// server). Give the service [`log_event`] as its event sink to log its decisions.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use lanlink::http::{server::{log_event, service_router}, BearerTokens, DEFAULT_PREFIX};
/// use lanlink::server::{MemoryStore, ServerConfig, Service};
/// let store = Arc::new(Mutex::new(MemoryStore::default()));
/// let service = Service::new(ServerConfig::default(), store).unwrap().with_event_sink(log_event);
/// let app = service_router(Arc::new(service), Arc::new(BearerTokens::default()), DEFAULT_PREFIX);
/// # let _ = app;
/// ```
pub fn service_router(service: Arc<Service>, auth: Arc<dyn Authenticator>, prefix: &str) -> Router {
    routes(Backend::Shared(service), auth, prefix)
}

fn routes(backend: Backend, auth: Arc<dyn Authenticator>, prefix: &str) -> Router {
    let allowed_origins = match &backend {
        Backend::Local(server) => lock(server).config().allowed_origins().to_vec(),
        Backend::Shared(service) => service.config().allowed_origins().to_vec(),
    };
    let app = Arc::new(App {
        backend,
        auth,
        allowed_origins,
    });
    let prefix = prefix.trim_end_matches('/');
    Router::new()
        .route(&format!("{prefix}/agent/announce"), post(announce))
        .route(&format!("{prefix}/agent/redeem"), post(redeem))
        .route(&format!("{prefix}/discover"), get(discover))
        .route(&format!("{prefix}/link"), post(link))
        .route(&format!("{prefix}/link/{{instance_id}}"), get(link_status))
        .route(&format!("{prefix}/codes"), post(codes))
        // Unknown paths under the prefix only: no router-wide fallback, so the routes merge
        // into (or nest inside) a host app that has its own.
        .route(&format!("{prefix}/{{*rest}}"), any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
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
pub fn spawn_purge(
    server: SharedServer,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            lock(&server).purge_expired(wall_now());
        }
    })
}

/// `404 {"error":"not_found"}`: what the crate's routers answer for unknown paths under their
/// prefix. They set no router-wide fallback (so they compose with a host app that has its own);
/// a standalone lanlink server adds this one for every other path.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use lanlink::http::{server, BearerTokens, DEFAULT_PREFIX};
/// use lanlink::server::{Server, ServerConfig};
/// let shared = Arc::new(Mutex::new(Server::new(ServerConfig::default()).unwrap()));
/// let app = server::router(shared, Arc::new(BearerTokens::default()), DEFAULT_PREFIX)
///     .fallback(server::not_found);
/// # let _ = app;
/// ```
pub async fn not_found() -> Response<Body> {
    error_response(StatusCode::NOT_FOUND, "not_found")
}

pub(crate) async fn method_not_allowed() -> Response<Body> {
    error_response(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
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

/// What a handler needs from the request line and headers.
struct Caller {
    peer: IpAddr,
    forwarded: Vec<String>,
    x_forwarded_for: Vec<String>,
}

impl Caller {
    fn from_parts(parts: &Parts) -> Result<Self, Response<Body>> {
        // Without a peer address nothing can be decided: refuse (fail closed).
        let peer = peer_of(parts)
            .ok_or_else(|| error_response(StatusCode::FORBIDDEN, "unresolvable_client"))?;
        let lines = |name| {
            header_lines(&parts.headers, name)
                .into_iter()
                .map(str::to_owned)
                .collect()
        };
        Ok(Self {
            peer,
            forwarded: lines("forwarded"),
            x_forwarded_for: lines("x-forwarded-for"),
        })
    }

    /// The forwarding header lines, for [`ForwardedHeaders`].
    fn lines(&self) -> (Vec<&str>, Vec<&str>) {
        (
            self.forwarded.iter().map(String::as_str).collect(),
            self.x_forwarded_for.iter().map(String::as_str).collect(),
        )
    }
}

/// The forwarding headers of `caller` as [`ForwardedHeaders`] (borrowing `lines`).
fn headers<'a>(lines: &'a (Vec<&'a str>, Vec<&'a str>)) -> ForwardedHeaders<'a> {
    ForwardedHeaders {
        forwarded: &lines.0,
        x_forwarded_for: &lines.1,
    }
}

fn refusal_response(refusal: &Refusal) -> Response<Body> {
    error_response(status_of(refusal), refusal.code())
}

/// Logs one server event (events carry no secrets); the event sink for a [`Service`].
pub fn log_event(event: ServerEvent) {
    tracing::info!(target: "lanlink::server", ?event);
}

/// A redemption on a shared in-memory server: `begin` (the claim) under the lock, the server's
/// link hook awaited outside it, and the completion under the lock again.
pub(crate) async fn redeem_local(
    server: &SharedServer,
    now: DateTime<Utc>,
    begin: impl FnOnce(&mut Server, DateTime<Utc>) -> Result<PendingLink, Refusal>,
) -> Result<Redeemed, Refusal> {
    let (pending, hook) = {
        let mut server = lock(server);
        let pending = begin(&mut server, now);
        log_events(&mut server);
        (pending?, server.link_hook())
    };
    let outcome = match hook {
        Some(hook) => hook.link_completed(pending.link()).await,
        None => Ok(()),
    };
    let mut server = lock(server);
    let result = server.finish_redeem(now, pending, outcome);
    log_events(&mut server);
    result
}

/// Logs and drops the server's pending events.
fn log_events(server: &mut Server) {
    while let Some(event) = server.poll_event() {
        log_event(event);
    }
}

/// The cross-site rule of a state-changing user route
/// ([`check`](crate::server::cross_site::check)), checked before
/// the request reaches the host's [`Authenticator`].
fn same_site(app: &App, parts: &Parts, route: UserRoute) -> Result<(), Response<Body>> {
    cross_site(parts, route, &app.allowed_origins).map_err(|refusal| refusal_response(&refusal))
}

async fn account(app: &App, parts: &Parts) -> Result<AccountId, Response<Body>> {
    app.auth.authenticate(parts).await.map_err(|rejection| {
        rejection.into_response(|| error_response(StatusCode::UNAUTHORIZED, "unauthorized"))
    })
}

/// A handler's answer: the response, or an early refusal (also a response).
type Answer = Result<Response<Body>, Response<Body>>;

fn answer(answer: Answer) -> Response<Body> {
    answer.unwrap_or_else(|refusal| refusal)
}

/// Runs `op` on the locked server at the wall-clock now, logs the server's events, and answers
/// `status` with the result as JSON, or the refusal.
fn call<T: serde::Serialize>(
    server: &SharedServer,
    status: StatusCode,
    op: impl FnOnce(&mut Server, DateTime<Utc>) -> Result<T, Refusal>,
) -> Response<Body> {
    let mut server = lock(server);
    let result = op(&mut server, wall_now());
    log_events(&mut server);
    drop(server);
    reply(status, result)
}

/// Answers `status` with a result as JSON, or the refusal.
fn reply<T: serde::Serialize>(status: StatusCode, result: Result<T, Refusal>) -> Response<Body> {
    match result {
        Ok(reply) => json_response(status, wire::encode(&reply)),
        Err(refusal) => refusal_response(&refusal),
    }
}

/// Reads and decodes a request body (at most [`MAX_BODY_BYTES`]).
async fn decode_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Response<Body>> {
    // The bytes may carry a secret: keep them in a buffer that is zeroized when dropped.
    let bytes = zeroize::Zeroizing::new(read_body(body, MAX_BODY_BYTES).await?.to_vec());
    wire::decode(&bytes, MAX_MESSAGE_BYTES).map_err(|err| wire_error_response(&err))
}

async fn announce(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, body) = request.into_parts();
            let caller = Caller::from_parts(&parts)?;
            // It carries the agent's presence key: zeroized when dropped.
            let bytes = zeroize::Zeroizing::new(read_body(body, MAX_BODY_BYTES).await?.to_vec());
            let announce =
                wire::decode_announce(&bytes).map_err(|err| wire_error_response(&err))?;
            let lines = caller.lines();
            let (peer, headers) = (caller.peer, headers(&lines));
            Ok(match &app.backend {
                Backend::Local(server) => call(server, StatusCode::OK, |server, now| {
                    server.handle_announce(now, peer, headers, &announce)
                }),
                Backend::Shared(service) => reply(
                    StatusCode::OK,
                    service
                        .handle_announce(wall_now(), peer, headers, &announce)
                        .await,
                ),
            })
        }
        .await,
    )
}

async fn redeem(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, body) = request.into_parts();
            let caller = Caller::from_parts(&parts)?;
            let request: RedeemRequest = decode_body(body).await?;
            let lines = caller.lines();
            let (peer, headers) = (caller.peer, headers(&lines));
            Ok(match &app.backend {
                Backend::Local(server) => reply(
                    StatusCode::OK,
                    redeem_local(server, wall_now(), |server, now| {
                        server.begin_redeem(now, &mut crate::os_rng(), peer, headers, &request)
                    })
                    .await
                    .map(|redeemed| redeemed.reply),
                ),
                Backend::Shared(service) => reply(
                    StatusCode::OK,
                    service
                        .handle_redeem(wall_now(), &mut crate::os_rng(), peer, headers, &request)
                        .await
                        .map(|redeemed| redeemed.reply),
                ),
            })
        }
        .await,
    )
}

async fn discover(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, _) = request.into_parts();
            let account = account(&app, &parts).await?;
            let caller = Caller::from_parts(&parts)?;
            let lines = caller.lines();
            let (peer, headers) = (caller.peer, headers(&lines));
            Ok(match &app.backend {
                Backend::Local(server) => call(server, StatusCode::OK, |server, now| {
                    server.handle_discover_as(now, &account, peer, headers)
                }),
                Backend::Shared(service) => reply(
                    StatusCode::OK,
                    service
                        .handle_discover_as(wall_now(), &account, peer, headers)
                        .await,
                ),
            })
        }
        .await,
    )
}

async fn link(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, body) = request.into_parts();
            same_site(&app, &parts, UserRoute::WithBody)?;
            let account = account(&app, &parts).await?;
            let name = app.auth.display_name(&parts, &account).await;
            let caller = Caller::from_parts(&parts)?;
            let request: LinkRequest = decode_body(body).await?;
            let lines = caller.lines();
            let (peer, headers) = (caller.peer, headers(&lines));
            Ok(match &app.backend {
                Backend::Local(server) => call(server, StatusCode::ACCEPTED, |server, now| {
                    server.handle_link_as(
                        now,
                        &mut crate::os_rng(),
                        &account,
                        name,
                        peer,
                        headers,
                        request,
                    )
                }),
                Backend::Shared(service) => reply(
                    StatusCode::ACCEPTED,
                    service
                        .handle_link_as(
                            wall_now(),
                            &mut crate::os_rng(),
                            &account,
                            name,
                            peer,
                            headers,
                            request,
                        )
                        .await,
                ),
            })
        }
        .await,
    )
}

async fn link_status(
    State(app): State<Arc<App>>,
    axum::extract::Path(instance_id): axum::extract::Path<String>,
    request: Request,
) -> Response<Body> {
    answer(
        async {
            let (parts, _) = request.into_parts();
            let account = account(&app, &parts).await?;
            let caller = Caller::from_parts(&parts)?;
            let instance_id = instance_id
                .parse::<InstanceId>()
                .map_err(|_| error_response(StatusCode::BAD_REQUEST, "malformed"))?;
            let lines = caller.lines();
            let (peer, headers) = (caller.peer, headers(&lines));
            Ok(match &app.backend {
                Backend::Local(server) => call(server, StatusCode::OK, |server, now| {
                    server.handle_link_status(now, &account, peer, headers, &instance_id)
                }),
                Backend::Shared(service) => reply(
                    StatusCode::OK,
                    service
                        .handle_link_status(wall_now(), &account, peer, headers, &instance_id)
                        .await,
                ),
            })
        }
        .await,
    )
}

async fn codes(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, _) = request.into_parts();
            same_site(&app, &parts, UserRoute::Bodyless)?;
            let account = account(&app, &parts).await?;
            Ok(match &app.backend {
                Backend::Local(server) => call(server, StatusCode::CREATED, |server, now| {
                    server.mint_code(now, &mut crate::os_rng(), &account)
                }),
                Backend::Shared(service) => reply(
                    StatusCode::CREATED,
                    service
                        .mint_code(wall_now(), &mut crate::os_rng(), &account)
                        .await,
                ),
            })
        }
        .await,
    )
}
