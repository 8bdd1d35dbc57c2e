//! Servers, agents and clients over loopback sockets (127.0.0.1 only), for the HTTP tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use lanlink::agent::{Agent, AgentConfig};
use lanlink::driver::SharedAgent;
use lanlink::http::server::SharedServer;
use lanlink::http::{self, serve, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::server::{Server, ServerConfig};
use lanlink::{AccountId, DeviceInfo};
use reqwest::header::HeaderMap;
use tokio::net::TcpListener;

/// The route prefix every test serves under.
pub const P: &str = DEFAULT_PREFIX;

/// Bounds `future` by `limit`; panics saying `what` did not answer.
pub async fn bounded_by<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {limit:?}"))
}

/// The device info the test agents announce.
pub fn info() -> DeviceInfo {
    DeviceInfo::new("printer.local", "Voron 2.4", "lanlink-test", "0.1.0").unwrap()
}

/// Serves `router` with `serve_config` on 127.0.0.1:0, in a task of its own; its address.
pub async fn serve_on_loopback(router: Router, serve_config: ServeConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        router,
        serve_config,
        std::future::pending(),
    ));
    addr
}

/// Bearer tokens for `users` (`(token, account)`).
pub fn bearer(users: &[(&str, &str)]) -> Arc<BearerTokens> {
    let tokens = users
        .iter()
        .map(|(token, account)| ((*token).to_owned(), AccountId::new(*account).unwrap()))
        .collect();
    Arc::new(BearerTokens::new(tokens))
}

/// Starts the server's routes with `config` and `users` (`(token, account)`) on 127.0.0.1:0.
pub async fn start_server(
    config: ServerConfig,
    users: &[(&str, &str)],
) -> (SharedServer, SocketAddr) {
    start_server_auth(config, bearer(users), ServeConfig::default()).await
}

/// Starts the server's routes with `config` and the host's `auth` on 127.0.0.1:0.
pub async fn start_server_auth(
    config: ServerConfig,
    auth: Arc<dyn http::Authenticator>,
    serve_config: ServeConfig,
) -> (SharedServer, SocketAddr) {
    let server = Arc::new(Server::new(config).expect("server config"));
    let router =
        http::server::router(Arc::clone(&server), auth, P).fallback(http::server::not_found);
    (server, serve_on_loopback(router, serve_config).await)
}

/// Starts an agent and its local endpoint on 127.0.0.1:0; `make` builds the configuration from
/// the bound address (the agent announces that address and port).
pub async fn start_agent(
    make: impl FnOnce(SocketAddr) -> AgentConfig,
) -> (SharedAgent, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let agent =
        Agent::new(make(addr), Instant::now(), &mut lanlink::os_rng()).expect("agent config");
    let agent: SharedAgent = Arc::new(Mutex::new(agent));
    let router = http::agent::router(Arc::clone(&agent), P).fallback(http::server::not_found);
    tokio::spawn(serve(
        listener,
        router,
        ServeConfig::default(),
        std::future::pending(),
    ));
    (agent, addr)
}

/// A reqwest client that sends every request as coming from `from` (through a trusted proxy
/// that writes `X-Forwarded-For`), each request bounded by `limit`, following no redirect.
pub fn client_from(from: &str, limit: Duration) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", from.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(limit)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

/// A client without connection reuse (so no idle keep-alive connection holds a server slot),
/// each request bounded by `limit`, following no redirect.
pub fn plain_client(limit: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(limit)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}
