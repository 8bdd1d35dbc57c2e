//! A hardened HTTP/1.1 accept loop for the routers of this module.
//! It must not decide a protocol rule or answer a request itself: the core's [`ConnectionShares`]
//! decides which connection is admitted, and the routers give every answer; the loop accepts,
//! counts, times out and closes.

mod clients;
mod deadline;
mod refusals;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use self::clients::{ClientGroup, ClientSlots, Full};
pub(crate) use self::deadline::RequestDeadline;
use self::deadline::{ClockedIo, DeadlineBody, RequestClock};
use self::refusals::{RefusalLog, Refused};
use super::Peer;
use crate::server::connections::ConnectionShares;
use crate::server::Level;

/// How long a connection past its `connection_timeout` may still take to answer its request in
/// flight (a held request lasts at most [`MAX_HOLD_MS`](crate::wire::MAX_HOLD_MS), 25 s) before
/// it is cut.
pub const HOLD_GRACE: Duration = Duration::from_secs(30);

/// At most one warning about refused connections and cut-off requests per this interval; the
/// warning counts every refusal since the previous one.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Limits of [`serve()`].
///
/// Clients are told apart by their **socket peer** only: [`serve()`] knows nothing of trusted
/// proxies, so behind a reverse proxy every connection comes from the proxy's address and
/// counts against one client's cap. There, set `max_connections_per_client` to
/// `max_connections` (the prefix shares are never below it) and bound connections per client
/// in the proxy.
///
/// Besides its own cap, a client shares the slots of each coarser prefix around it
/// (`ipv4_prefix_shares`, `ipv6_prefix_shares`; the decision is the core's
/// [`ConnectionShares`]): by default an IPv4 /24 holds at most 128 connections, an IPv6 /56
/// (one home) 64, a /48 128 and a /32 256, so that many /64s of one home or site cannot take
/// every connection.
///
/// ```
/// use std::time::Duration;
/// use lanlink::http::ServeConfig;
/// use lanlink::server::Level;
/// let config = ServeConfig {
///     max_connections_per_client: 8,
///     ipv6_prefix_shares: vec![Level { prefix: 56, threshold: 16 }],
///     request_timeout: Duration::from_secs(5),
///     ..ServeConfig::default()
/// };
/// assert_eq!(config.max_connections, 512);
/// ```
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Connections served at once; further ones are closed at once (default 512). An agent
    /// whose announcement is held (revision 1.6) keeps one connection open for most of its
    /// discovery window: size this for the agents discovering at once (benches/instant.rs holds
    /// 5,000 with 11,000).
    pub max_connections: usize,
    /// Connections served at once for one client — an IPv4 address, or an IPv6 /64 (an
    /// IPv4-mapped IPv6 address counts as its IPv4 address) — of the socket peer; further ones
    /// from it are closed at once (default 32). So one client cannot take every connection.
    pub max_connections_per_client: usize,
    /// Connections served at once for each coarser IPv4 prefix of the socket peer, shared by
    /// all its clients; further ones are closed at once (default: a /24 128). A share below
    /// `max_connections_per_client` counts as that. See [`ConnectionShares`].
    pub ipv4_prefix_shares: Vec<Level>,
    /// The same for IPv6 prefixes coarser than the client's /64 (default: a /56, one home's
    /// block, 64; a /48 128; a /32 256).
    pub ipv6_prefix_shares: Vec<Level>,
    /// Time allowed to send a request's headers (default 10 s): stops slow-header clients.
    pub header_read_timeout: Duration,
    /// Time allowed, from a request's first byte, for its headers **and** its body to arrive
    /// (default 10 s): a body that trickles in or never comes is cut off when it passes, the
    /// request answered `408 request_timeout` (by this crate's routes; others see their body
    /// end in an error) and the connection closed.
    pub request_timeout: Duration,
    /// How long a connection takes new requests (default 60 s). Past it the connection is
    /// closed once its request in flight, if any, is answered, within [`HOLD_GRACE`] more (a
    /// held request, revision 1.6, lasts at most 25 s): so the longest a connection stays open
    /// is `connection_timeout + HOLD_GRACE`.
    pub connection_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        let shares = ConnectionShares::default();
        Self {
            max_connections: 512,
            max_connections_per_client: shares.per_client,
            ipv4_prefix_shares: shares.ipv4,
            ipv6_prefix_shares: shares.ipv6,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(60),
        }
    }
}

/// Warnings about refusals, at most one per [`REFUSAL_LOG_INTERVAL`].
struct Refusals(Mutex<RefusalLog>);

impl Refusals {
    fn log(&self) -> std::sync::MutexGuard<'_, RefusalLog> {
        crate::lock_unpoisoned(&self.0)
    }

    fn refused(&self, refused: Refused, client: ClientGroup, prefix: Option<ipnet::IpNet>) {
        let due = self.log().record(Instant::now(), refused);
        let Some(counts) = due else { return };
        match prefix {
            Some(prefix) => tracing::warn!(
                %client,
                %prefix,
                since_last_warning = %counts,
                "{}; refusals are logged at most once per {:?}",
                refused.reason(),
                REFUSAL_LOG_INTERVAL
            ),
            None => tracing::warn!(
                %client,
                since_last_warning = %counts,
                "{}; refusals are logged at most once per {:?}",
                refused.reason(),
                REFUSAL_LOG_INTERVAL
            ),
        }
    }

    fn flush(&self) {
        let due = self.log().flush(Instant::now());
        if let Some(counts) = due {
            tracing::warn!(since_last_warning = %counts, "connections or requests refused");
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes. Each request carries its socket
/// peer as a [`Peer`] extension. Malformed, oversized, slow or truncated requests cost the
/// server one connection each, within the limits of `config`; none stops the loop.
///
/// The limits: at most `max_connections` connections, at most `max_connections_per_client`
/// from one client (IPv4 address or IPv6 /64 of the socket peer; see [`ServeConfig`] about
/// proxies), and at most each prefix share from the clients of a coarser prefix (an IPv6 /56,
/// /48, /32, an IPv4 /24; counted and given back in one step per connection) — extra
/// connections are closed unanswered; headers within
/// `header_read_timeout`; a whole request (headers and body) within `request_timeout` of its
/// first byte; new requests on a connection for `connection_timeout`, the one in flight
/// then answered within [`HOLD_GRACE`]. Refusals are logged as warnings
/// at most once per [`REFUSAL_LOG_INTERVAL`], each with the count of refusals it covers, so a
/// flood of refused connections cannot flood the log.
///
/// ```no_run
/// # async fn demo(router: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// println!("listening on {}", listener.local_addr()?);
/// lanlink::http::serve(listener, router, Default::default(), std::future::pending()).await
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let clients = ClientSlots::new(ConnectionShares {
        per_client: config.max_connections_per_client,
        ipv4: config.ipv4_prefix_shares.clone(),
        ipv6: config.ipv6_prefix_shares.clone(),
    });
    let refusals = Arc::new(Refusals(Mutex::new(RefusalLog::new(REFUSAL_LOG_INTERVAL))));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        refusals.flush();
        let group = ClientGroup::of(peer.ip());
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refusals.refused(Refused::Total, group, None);
            drop(stream);
            continue;
        };
        let slot = match clients.try_take(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                match full {
                    Full::Client => refusals.refused(Refused::PerClient, group, None),
                    Full::Prefix(prefix) => {
                        refusals.refused(Refused::PerPrefix, group, Some(prefix));
                    }
                }
                drop((stream, permit));
                continue;
            }
        };
        let router = router.clone();
        let config = config.clone();
        let refusals = Arc::clone(&refusals);
        tokio::spawn(async move {
            let _held = (permit, slot);
            serve_connection(stream, peer, group, router, &config, refusals).await;
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    group: ClientGroup,
    router: Router,
    config: &ServeConfig,
    refusals: Arc<Refusals>,
) {
    let clock = RequestClock::new();
    let io = TokioIo::new(ClockedIo::new(stream, Arc::clone(&clock)));
    let request_timeout = config.request_timeout;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let deadline = clock.begin() + request_timeout;
        request.extensions_mut().insert(Peer(peer));
        let request =
            request.map(|body| Body::new(DeadlineBody::new(body, deadline, Arc::clone(&clock))));
        let answer = router.clone().oneshot(request);
        let clock = Arc::clone(&clock);
        let refusals = Arc::clone(&refusals);
        async move {
            let Ok(mut response) = answer.await;
            if clock.end() {
                // The rest of the body may still be on its way: do not read it as a request.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                refusals.refused(Refused::Deadline, group, None);
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(64 * 1024);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    if tokio::time::timeout(config.connection_timeout, connection.as_mut())
        .await
        .is_ok()
    {
        return;
    }
    // No new request; the one in flight (a held one, say) is answered, then the connection
    // closes.
    connection.as_mut().graceful_shutdown();
    if tokio::time::timeout(HOLD_GRACE, connection).await.is_err() {
        tracing::debug!(%peer, "connection timed out");
    }
}
