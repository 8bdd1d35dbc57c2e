//! The HTTP adapter over real loopback sockets (127.0.0.1 only): the auto and manual flows through
//! the drivers and the reqwest clients, the attacks that need a socket (forwarding headers and
//! proxies, Host, Origin, bearer tokens), CORS at the agent's endpoint, malformed input, and the
//! robustness of `http::serve`. The protocol's own attacks (wrong secret, replay, lockouts,
//! forged or conflicting announcements, bound codes, the window) are told once, sans IO, in
//! `tests/scenarios.rs`.
//!
//! Other client addresses are emulated with `X-Forwarded-For` from the loopback peer, which the
//! server (and, where a test says so, the agent) trusts as its proxy: the test then speaks as a
//! linker on the home network 203.0.113.7, an attacker on 198.51.100.9, a LAN caller
//! 192.168.1.20, a CGNAT neighbour, and so on. Every refusal is asserted by status and exact
//! `{"error": code}` body, together with what did not change on the server (and at the agent).
#![cfg(feature = "http")]

mod support;
use support::net::{self, bearer, bounded_by, info, start_agent, start_server, start_server_auth};

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lanlink::agent::{AgentConfig, AgentStatus, AgentTransmit};
use lanlink::driver::{lock, run_agent, DriverConfig, SharedAgent};
use lanlink::http::client::{default_client, HttpAgentClient, HttpLinkerClient};
use lanlink::http::server::SharedServer;
use lanlink::http::{self, ServeConfig};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::server::{CounterKey, ServerConfig};
use lanlink::transport::{AgentServerTransport, LinkerServerTransport};
use lanlink::wire::{self, Announce, AnnounceReply, LinkRequest, RedeemRequest};
use lanlink::WireCode;
use lanlink::{AccountId, InstanceId, LinkCode, LocalPolicy, LocalSecret, PublicNetwork};
use reqwest::header::{self, HeaderMap};
use reqwest::Method;
use serde_json::{json, Value};
use support::linking::{link_first, spawn_agent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use support::net::P;
/// The victim's home: its public address.
const HOME: &str = "203.0.113.7";
/// Somewhere else on the internet: the attacker's public address.
const ELSEWHERE: &str = "198.51.100.9";
/// The user's browser on the home LAN.
const LINKER_IP: &str = "192.168.1.20";
/// The cloud's web origin, allowed by the agents.
const ORIGIN: &str = "https://cloud.example";
const ALICE: &str = "alice-token-0123456789abcdef";
const MALLORY: &str = "mallory-token-0123456789abcdef";
const USERS: [(&str, &str); 2] = [(ALICE, "alice"), (MALLORY, "mallory")];
/// The most any single network operation of a test may take.
const LIMIT: Duration = Duration::from_secs(10);

// ───────────────────────────── setup ─────────────────────────────

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn loopback() -> ipnet::IpNet {
    "127.0.0.0/8".parse().unwrap()
}

/// Bounds a future in time.
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    bounded_by(LIMIT, what, future).await
}

async fn start_server_with(
    config: ServerConfig,
    users: &[(&str, &str)],
    serve_config: ServeConfig,
) -> (SharedServer, SocketAddr) {
    start_server_auth(config, bearer(users), serve_config).await
}

/// A server behind a trusted proxy (the loopback peer), so `X-Forwarded-For` names the caller.
/// Presences live 60 s so that a single announcement lasts the whole test.
fn proxied() -> ServerConfig {
    ServerConfig::default()
        .trusted_proxies(vec![loopback()])
        .presence_ttl(Duration::from_secs(60))
}

/// A plain agent at its own loopback address.
fn plain_agent(at: SocketAddr) -> AgentConfig {
    AgentConfig::new(at.ip(), at.port(), info())
}

/// An agent behind a trusted local proxy (so `X-Forwarded-For` names the caller), allowing the
/// cloud's origin and the name `printer.local`.
fn proxied_agent(at: SocketAddr) -> AgentConfig {
    plain_agent(at)
        .trusted_proxies(vec![loopback()])
        .allow_origin(ORIGIN)
        .allow_host("printer.local")
}

/// A reqwest client that sends every request as coming from `from` (through the trusted proxy).
fn client_from(from: &str) -> reqwest::Client {
    net::client_from(from, LIMIT)
}

/// A client without connection reuse (so no idle keep-alive connection holds a server slot).
fn plain_client() -> reqwest::Client {
    net::plain_client(LIMIT)
}

/// An HTTP answer, read whole.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = bounded("request", request.send())
        .await
        .expect("the request was answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = bounded("body", response.bytes()).await.unwrap().to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// A success with `status` and a JSON body.
fn assert_ok(reply: &Reply, status: u16) -> Value {
    assert_eq!(
        reply.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let mut body = reply.json();
    // The server's replies state their wire revision (the crate's; tests/revisions.rs checks
    // every one); the bodies are compared without it.
    if let Some(revision) = body.as_object_mut().and_then(|map| map.remove("revision")) {
        assert_eq!(revision, json!(wire::Revision::CURRENT.to_string()));
    }
    body
}

/// A refusal: exactly `status` and `{"error": code}`, nothing else in the body.
#[track_caller]
fn assert_refused(reply: &Reply, status: u16, code: &str) {
    assert_eq!(
        (reply.status, reply.json()),
        (status, json!({ "error": code })),
        "expected {status} {code}"
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

/// The server's routes, called as any client may.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: SocketAddr) -> Self {
        Self {
            client: default_client().unwrap(),
            base: format!("http://{server}{P}"),
        }
    }

    /// Without connection reuse: no idle keep-alive connection holds a server slot, and none is
    /// reused after the server's header timeout closed it.
    fn unpooled(server: SocketAddr) -> Self {
        Self {
            client: plain_client(),
            base: format!("http://{server}{P}"),
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        from: Option<&str>,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(from) = from {
            request = request.header("x-forwarded-for", from);
        }
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request
    }

    fn with_body(request: reqwest::RequestBuilder, body: Vec<u8>) -> reqwest::RequestBuilder {
        request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
    }

    async fn discover(&self, from: Option<&str>, token: Option<&str>) -> Reply {
        send(self.request(Method::GET, "/discover", from, token)).await
    }

    async fn link(&self, from: Option<&str>, token: Option<&str>, body: Vec<u8>) -> Reply {
        let request = self.request(Method::POST, "/link", from, token);
        send(Self::with_body(request, body)).await
    }

    async fn link_status(&self, from: Option<&str>, token: Option<&str>, id: &str) -> Reply {
        send(self.request(Method::GET, &format!("/link/{id}"), from, token)).await
    }

    async fn codes(&self, token: Option<&str>) -> Reply {
        send(self.request(Method::POST, "/codes", None, token)).await
    }

    async fn announce(&self, from: Option<&str>, body: Vec<u8>) -> Reply {
        let request = self.request(Method::POST, "/agent/announce", from, None);
        send(Self::with_body(request, body)).await
    }

    async fn redeem(&self, from: Option<&str>, body: Vec<u8>) -> Reply {
        let request = self.request(Method::POST, "/agent/redeem", from, None);
        send(Self::with_body(request, body)).await
    }

    /// The instance ids a discovery from `from` shows (asserting a 200).
    async fn discovered(&self, from: &str) -> Vec<String> {
        let body = assert_ok(&self.discover(Some(from), Some(ALICE)).await, 200);
        body["agents"]
            .as_array()
            .expect("an agents array")
            .iter()
            .map(|a| a["instance_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn link_body(instance_id: InstanceId, secret: &LocalSecret) -> Vec<u8> {
    wire::encode(&LinkRequest::new(instance_id, secret.clone())).to_vec()
}

fn redeem_body(instance_id: InstanceId, code: &str) -> Vec<u8> {
    wire::encode(&RedeemRequest::new(
        instance_id,
        LinkCode::parse(code).unwrap(),
    ))
    .to_vec()
}

/// `GET {prefix}/secret?{query}` at the agent, as `from` (through its proxy) with extra headers.
async fn fetch_raw(
    agent: SocketAddr,
    from: Option<&str>,
    query: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = plain_client().get(format!("http://{agent}{P}/secret?{query}"));
    if let Some(from) = from {
        request = request.header("x-forwarded-for", from);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

async fn fetch(agent: SocketAddr, from: Option<&str>, id: &str, headers: &[(&str, &str)]) -> Reply {
    fetch_raw(agent, from, &format!("instance_id={id}"), headers).await
}

/// The secret, fetched the honest way: from the LAN, with the cloud's origin.
async fn real_secret(agent: SocketAddr, id: InstanceId) -> LocalSecret {
    let reply = fetch(
        agent,
        Some(LINKER_IP),
        &id.to_string(),
        &[("origin", ORIGIN)],
    )
    .await;
    let body = assert_ok(&reply, 200);
    LocalSecret::from_hex(body["local_secret"].as_str().unwrap()).expect("64 hex characters")
}

/// Takes the agent's due announcement and sends it as coming from `from`.
async fn announce_once(agent: &SharedAgent, server: SocketAddr, from: &str) -> Announce {
    let transmit = lock(agent).poll_transmit(Instant::now());
    let Some(AgentTransmit::Announce(announce)) = transmit else {
        panic!("an announcement is due, got {transmit:?}");
    };
    let reply = announce_as(&announce, server, from).await;
    assert!(reply.messages.is_empty());
    announce
}

/// Sends `announce` through the agent's HTTP client as coming from `from`.
async fn announce_as(announce: &Announce, server: SocketAddr, from: &str) -> AnnounceReply {
    let transport = HttpAgentClient::with_client(client_from(from), &format!("http://{server}"), P);
    bounded("announce", transport.announce(announce))
        .await
        .expect("announcement accepted")
}

fn is_discovering(agent: &SharedAgent) -> bool {
    lock(agent).is_discovering()
}

/// The server's state, for "nothing changed" checks: per network, everything but the failure
/// counter (presences, links, lockout, used ids) and the failure count; and the number of codes.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    networks: Vec<(String, String, usize)>,
    codes: usize,
}

fn snapshot(server: &SharedServer, networks: &[&str]) -> Snapshot {
    let store = server.store();
    let networks = networks
        .iter()
        .map(|name| {
            let network = PublicNetwork::from_ip(ip(name), 64);
            let record = store.network(&network).unwrap_or_default();
            let locked_until = store
                .counter(&CounterKey::network(&network))
                .and_then(|counter| counter.locked_until_ms());
            let shape = format!(
                "{:?} {:?} {:?} {:?}",
                record.presences,
                record.links(),
                locked_until,
                record.used()
            );
            let failures = store.failures(
                &network,
                chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()),
            );
            (
                (*name).to_owned(),
                shape,
                usize::try_from(failures).unwrap_or(usize::MAX),
            )
        })
        .collect();
    Snapshot {
        networks,
        codes: store.codes(),
    }
}

/// After a refusal with `code` to a caller on `caller`: nothing changed, except that the caller
/// network's failure counter grew by one if the refusal counts as a failure.
#[track_caller]
fn assert_kept(before: &Snapshot, after: &Snapshot, caller: Option<&str>, code: &str) {
    let counted = WireCode::parse(code).is_some_and(|c| c.class().counts_as_guess);
    assert_eq!(after.codes, before.codes, "{code}: codes");
    for ((name, shape, failures), (_, shape_after, failures_after)) in
        before.networks.iter().zip(&after.networks)
    {
        assert_eq!(shape_after, shape, "{code}: record of {name}");
        let grew = usize::from(counted && caller == Some(name.as_str()));
        assert_eq!(
            *failures_after,
            failures + grew,
            "{code}: failures of {name}"
        );
    }
}

/// A server (trusting the loopback proxy) and one proxied agent that has announced once from the
/// home network.
struct Home {
    server: SharedServer,
    server_at: SocketAddr,
    api: Api,
    agent: SharedAgent,
    agent_at: SocketAddr,
    id: InstanceId,
    announce: Announce,
}

async fn home() -> Home {
    home_on(start_server(proxied(), &USERS).await).await
}

/// [`home`] on a server already started.
async fn home_on((server, server_at): (SharedServer, SocketAddr)) -> Home {
    let (agent, agent_at) = start_agent(proxied_agent).await;
    let announce = announce_once(&agent, server_at, HOME).await;
    Home {
        server,
        server_at,
        api: Api::new(server_at),
        agent,
        agent_at,
        id: announce.instance_id,
        announce,
    }
}

impl Home {
    fn snapshot(&self) -> Snapshot {
        snapshot(&self.server, &[HOME, ELSEWHERE])
    }

    fn id(&self) -> String {
        self.id.to_string()
    }
}

/// Sends raw bytes on a fresh connection, optionally half-closes, and reads until the server
/// closes (or resets) the connection.
async fn raw_exchange(at: SocketAddr, request: &[u8], half_close: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(at).await.unwrap();
    stream.write_all(request).await.unwrap();
    if half_close {
        stream.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    // A reset after the answer is fine: keep what arrived.
    let _ = bounded("raw exchange", stream.read_to_end(&mut out)).await;
    out
}

/// Parses a raw HTTP/1.1 answer with a `Content-Length` body into (status, body).
fn parse_raw(answer: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    (status, serde_json::from_str(body).expect("a JSON body"))
}

// ───────────────────────────── the flows ─────────────────────────────

#[tokio::test]
async fn full_auto_flow_links_over_http() {
    let config = proxied().announce_interval(Duration::from_millis(500));
    let (server, server_at) = start_server(config, &USERS).await;
    let base = format!("http://{server_at}");
    let api = Api::new(server_at);
    // The agent's endpoint trusts no proxy: the linker's loopback peer is local, as on a LAN.
    let (agent, agent_at) =
        start_agent(|at| plain_agent(at).announce_interval(Duration::from_millis(500))).await;
    let id = lock(&agent).instance_id();

    let agent_task = spawn_agent(
        &agent,
        HttpAgentClient::with_client(client_from(HOME), &base, P),
    );
    let client = HttpLinkerClient::with_client(client_from(HOME), &base, P, P, ALICE);
    let config = LinkerConfig {
        discover_interval: Duration::from_millis(200),
        status_interval: Duration::from_millis(200),
        ..LinkerConfig::default()
    };
    let mut linker = Linker::without_nonce(config, Instant::now());
    let linked = bounded(
        "linker",
        link_first(&mut linker, &client, &DriverConfig::default(), |_| {}),
    )
    .await;
    assert_eq!(linked, Ok(id));
    let status = bounded("agent", agent_task).await.unwrap();
    assert_eq!(status, AgentStatus::Linked);
    let token = lock(&agent).auth_token().expect("a token").to_hex();
    assert_eq!(token.len(), 64);

    // The server says linked, to alice on her network only.
    let reply = api
        .link_status(Some(HOME), Some(ALICE), &id.to_string())
        .await;
    assert_eq!(
        assert_ok(&reply, 200),
        json!({ "instance_id": id.to_string(), "state": "linked" })
    );
    for (from, token) in [(HOME, MALLORY), (ELSEWHERE, ALICE)] {
        let reply = api
            .link_status(Some(from), Some(token), &id.to_string())
            .await;
        assert_eq!(assert_ok(&reply, 200)["state"], "unknown", "{from} {token}");
    }
    // The linked agent is no longer discoverable, and its secret is gone.
    assert!(api.discovered(HOME).await.is_empty());
    let reply = fetch(agent_at, None, &id.to_string(), &[]).await;
    assert_refused(&reply, 403, "not_discovering");
    let record = snapshot(&server, &[HOME]);
    assert!(record.networks[0].1.contains("Linked"), "{record:?}");
    assert_eq!(
        record.codes, 2,
        "one auto code, redeemed, and the instance's link claim"
    );
}

/// Issue 23 (revision 1.6): the linker learns of the link within one round trip of the agent's
/// redemption, not at its next poll. The server's announce interval (its held requests' recheck)
/// and the linker's status interval are long (20 s, 5 s); the test plays the agent by hand,
/// announcing once the link is accepted and redeeming at once. With the default
/// `status_hold` the linker sees `linked` within 1 s of the redemption; the same run with
/// `status_hold` zero (no `hold_ms` sent) sees it only at its next poll, seconds later, so this
/// test fails if the linker stops asking for a hold.
#[tokio::test]
async fn a_held_status_request_sees_the_link_at_once_over_http() {
    use lanlink::event::LinkerEvent;
    for hold in [lanlink::linker::DEFAULT_STATUS_HOLD, Duration::ZERO] {
        let config = proxied().announce_interval(Duration::from_secs(20));
        let (_server, server_at) = start_server(config, &USERS).await;
        let base = format!("http://{server_at}");
        let (agent, _agent_at) = start_agent(plain_agent).await;
        let announce = announce_once(&agent, server_at, HOME).await;
        let (requested, mut link_requested) = tokio::sync::mpsc::unbounded_channel();
        let linker_task = tokio::spawn(async move {
            let client = HttpLinkerClient::with_client(client_from(HOME), &base, P, P, ALICE);
            let config = LinkerConfig {
                discover_interval: Duration::from_millis(200),
                status_interval: Duration::from_secs(5),
                status_hold: hold,
                ..LinkerConfig::default()
            };
            let mut linker = Linker::without_nonce(config, Instant::now());
            let linked = link_first(&mut linker, &client, &DriverConfig::default(), |event| {
                if matches!(event, LinkerEvent::LinkRequested { .. }) {
                    let _ = requested.send(());
                }
            })
            .await;
            (linked, Instant::now())
        });
        bounded("link requested", link_requested.recv())
            .await
            .expect("the linker asked to link");
        // The linker's first status request is on its way (held, when it asks for a hold).
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The agent announces: the message waits; it redeems at once.
        let reply = announce_as(&announce, server_at, HOME).await;
        assert_eq!(reply.messages.len(), 1, "{reply:?}");
        lock(&agent).handle_announce_reply(Instant::now(), reply);
        let transmit = lock(&agent).poll_transmit(Instant::now());
        let Some(AgentTransmit::Redeem(request)) = transmit else {
            panic!("a redemption is due, got {transmit:?}");
        };
        let transport =
            HttpAgentClient::with_client(client_from(HOME), &format!("http://{server_at}"), P);
        let redeemed = bounded("redeem", transport.redeem(&request))
            .await
            .expect("redeemed");
        let at = Instant::now();
        lock(&agent)
            .handle_redeem_reply(at, Ok(redeemed))
            .expect("the agent's redemption");
        let (linked, seen) = bounded("linker", linker_task).await.unwrap();
        assert_eq!(linked, Ok(announce.instance_id));
        let late = seen.saturating_duration_since(at);
        println!("status_hold {hold:?}: linked seen {late:?} after the redemption");
        if hold.is_zero() {
            // The control: without a hold, the next poll (5 s after the last) tells.
            assert!(late >= Duration::from_secs(2), "{late:?} without a hold");
        } else {
            assert!(late < Duration::from_secs(1), "{late:?} with a hold");
        }
    }
}

/// Revision 1.6: `HttpLinkerClient` gives a held status request its hold plus
/// `HELD_REQUEST_MARGIN` as its own timeout, whatever the client's: over a client whose
/// timeout (1 s) is shorter than the hold the server grants (2 s), the held request still gets
/// its answer at the hold's end (without the per-request timeout it fails at 1 s, unanswered).
#[tokio::test]
async fn a_held_status_request_outlives_the_clients_own_timeout() {
    let config = proxied().max_hold(Duration::from_secs(2));
    let home = home_on(start_server(config, &USERS).await).await;
    let base = format!("http://{}", home.server_at);
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HOME.parse().unwrap());
    let short = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(1))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let client = HttpLinkerClient::with_client(short, &base, P, P, ALICE);
    let secret = real_secret(home.agent_at, home.id).await;
    let accepted = bounded("link", client.link(&LinkRequest::new(home.id, secret)))
        .await
        .expect("the link is accepted");
    assert_eq!(accepted.state, wire::LinkState::Pending);
    let started = Instant::now();
    let reply = bounded(
        "held status",
        client.link_status_held(&home.id, Duration::from_secs(20)),
    )
    .await
    .expect("answered at the hold's end, not given up at the client's timeout");
    let took = started.elapsed();
    assert_eq!(reply.state, wire::LinkState::Pending);
    // Held for the server's most (2 s), not the 20 s asked.
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn manual_code_flow_links_over_http() {
    let config = proxied().announce_interval(Duration::from_millis(500));
    let (server, server_at) = start_server(config, &USERS).await;
    let api = Api::new(server_at);
    let (agent, _) = start_agent(proxied_agent).await;
    let id = lock(&agent).instance_id();

    let before = DateTime::<Utc>::from(std::time::SystemTime::now());
    let reply = api.codes(Some(ALICE)).await;
    let body = assert_ok(&reply, 201);
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    let code = body["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    let expires_at: DateTime<Utc> = body["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires_at - before;
    assert!(
        ttl > chrono::TimeDelta::seconds(595) && ttl <= chrono::TimeDelta::seconds(605),
        "{ttl}"
    );
    assert_eq!(snapshot(&server, &[HOME]).codes, 1);

    // The user types it into the agent; its driver redeems it.
    lock(&agent)
        .enter_code(Instant::now(), LinkCode::parse(&code).unwrap())
        .unwrap();
    let transport =
        HttpAgentClient::with_client(client_from(HOME), &format!("http://{server_at}"), P);
    let status = bounded(
        "agent",
        run_agent(&agent, &transport, &DriverConfig::default(), |_| {}),
    )
    .await;
    assert_eq!(status, AgentStatus::Linked);
    assert!(lock(&agent).auth_token().is_some());
    let reply = api
        .link_status(Some(HOME), Some(ALICE), &id.to_string())
        .await;
    assert_eq!(assert_ok(&reply, 200)["state"], "linked");

    // Single use: the same code again is an invalid code (and counts as a failure).
    let before = snapshot(&server, &[HOME]);
    let reply = api.redeem(Some(HOME), redeem_body(id, &code)).await;
    assert_refused(&reply, 403, "invalid_code");
    assert_kept(
        &before,
        &snapshot(&server, &[HOME]),
        Some(HOME),
        "invalid_code",
    );
}

// ───────────────────────────── attacks ─────────────────────────────

#[tokio::test]
async fn attack_spoofed_x_forwarded_for_from_untrusted_peer_over_http() {
    // Neither the server nor the agent trusts any proxy.
    let config = ServerConfig::default().presence_ttl(Duration::from_secs(60));
    let (server, server_at) = start_server(config, &USERS).await;
    let api = Api::new(server_at);
    let lan_only = LocalPolicy::new(vec!["192.168.0.0/16".parse().unwrap()]);
    let (agent, agent_at) = start_agent(|at| plain_agent(at).local_policy(lan_only)).await;

    // The server: a claimed address is ignored, the peer 127.0.0.1 is the caller's network.
    let announce = announce_once(&agent, server_at, HOME).await;
    let id = announce.instance_id;
    let nets = [HOME, ELSEWHERE, "127.0.0.1"];
    let state = snapshot(&server, &nets);
    // Nothing under the claimed address.
    assert_eq!(
        state.networks[0],
        (HOME.to_owned(), "[] [] None []".to_owned(), 0)
    );
    assert!(state.networks[2].1.contains(&id.to_string()));
    // A linker claiming another network still sees 127.0.0.1's agent...
    assert_eq!(api.discovered(ELSEWHERE).await, vec![id.to_string()]);
    // ...and its guesses count against 127.0.0.1, not against the claimed network.
    let guess = LocalSecret::generate(&mut lanlink::os_rng());
    for claimed in [ELSEWHERE, HOME] {
        let before = snapshot(&server, &nets);
        let reply = api
            .link(Some(claimed), Some(MALLORY), link_body(id, &guess))
            .await;
        assert_refused(&reply, 403, "wrong_secret");
        assert_kept(
            &before,
            &snapshot(&server, &nets),
            Some("127.0.0.1"),
            "wrong_secret",
        );
    }
    assert_eq!(server.store().networks(), 1);

    // The agent: 127.0.0.1 is not local under this policy, and a forwarding header claiming a LAN
    // address does not make it so.
    for (name, value) in [
        ("x-forwarded-for", LINKER_IP),
        ("forwarded", "for=192.168.1.20"),
        ("x-real-ip", LINKER_IP),
    ] {
        let reply = fetch(agent_at, None, &id.to_string(), &[(name, value)]).await;
        assert_refused(&reply, 403, "not_local");
    }
    let reply = fetch(agent_at, None, &id.to_string(), &[]).await;
    assert_refused(&reply, 403, "not_local");
    assert!(is_discovering(&agent));
}

#[tokio::test]
async fn attack_trusted_proxy_without_client_address_over_http() {
    // The 2021 incident: the balancer stops passing the client address.
    let h = home().await;
    let secret = real_secret(h.agent_at, h.id).await;
    let before = h.snapshot();
    let id = h.id();
    for xff in [None, Some("unknown"), Some("127.0.0.9"), Some("")] {
        let what = format!("{xff:?}");
        let replies = [
            h.api.discover(xff, Some(ALICE)).await,
            h.api.link(xff, Some(ALICE), link_body(h.id, &secret)).await,
            h.api.link_status(xff, Some(ALICE), &id).await,
            h.api
                .announce(xff, wire::encode(&h.announce).to_vec())
                .await,
            h.api.redeem(xff, redeem_body(h.id, "123456")).await,
        ];
        for reply in &replies {
            assert_refused(reply, 403, "unresolvable_client");
        }
        assert_kept(&before, &h.snapshot(), None, &what);
        assert_eq!(h.server.store().networks(), 1, "{what}");

        // The agent behind its own trusted proxy fails closed the same way.
        let reply = fetch(h.agent_at, xff, &id, &[]).await;
        assert_refused(&reply, 403, "unresolvable_client");
    }
    let reply = fetch(h.agent_at, None, &id, &[("forwarded", "for=_hidden")]).await;
    assert_refused(&reply, 403, "unresolvable_client");
    assert!(is_discovering(&h.agent));
    // With the address, everything works.
    assert_eq!(h.api.discovered(HOME).await, vec![id]);
}

#[tokio::test]
async fn attack_client_written_forwarded_behind_an_appending_proxy_over_http() {
    // A proxy that appends X-Forwarded-For and passes a client's own `Forwarded` through: the
    // client must not choose its address by writing the other header. Both: refused.
    let h = home().await;
    let id = h.id();
    let before = h.snapshot();
    let reply = fetch(
        h.agent_at,
        Some(ELSEWHERE),
        &id,
        &[("forwarded", "for=192.168.1.20")],
    )
    .await;
    assert_refused(&reply, 403, "unresolvable_client");
    let reply = send(
        h.api
            .request(Method::GET, "/discover", Some(ELSEWHERE), Some(MALLORY))
            .header("forwarded", format!("for={HOME}")),
    )
    .await;
    assert_refused(&reply, 403, "unresolvable_client");
    assert_kept(&before, &h.snapshot(), None, "both headers");
    assert!(is_discovering(&h.agent));
    // Each header alone still works as the proxy wrote it.
    assert!(h.api.discovered(ELSEWHERE).await.is_empty());
    assert_eq!(h.api.discovered(HOME).await, vec![id]);
}

#[tokio::test]
async fn attack_ipv4_mapped_addresses_over_http() {
    let h = home().await;
    // At the agent: a mapped LAN address is local; a mapped public or CGNAT one is not.
    let reply = fetch(h.agent_at, Some("::ffff:192.168.1.20"), &h.id(), &[]).await;
    assert_ok(&reply, 200);
    for from in [
        "::ffff:203.0.113.99",
        "::ffff:100.64.0.1",
        "[::ffff:8.8.8.8]:443",
    ] {
        let reply = fetch(h.agent_at, Some(from), &h.id(), &[]).await;
        assert_refused(&reply, 403, "not_local");
    }
    assert!(is_discovering(&h.agent));
    // At the server: the mapped form of the home address is the home network...
    assert_eq!(h.api.discovered("::ffff:203.0.113.7").await, vec![h.id()]);
    // ...and the mapped form of another address is another network.
    assert!(h.api.discovered("::ffff:198.51.100.9").await.is_empty());
    let secret = real_secret(h.agent_at, h.id).await;
    let before = h.snapshot();
    let reply = h
        .api
        .link(
            Some("::ffff:198.51.100.9"),
            Some(MALLORY),
            link_body(h.id, &secret),
        )
        .await;
    assert_refused(&reply, 404, "agent_not_found");
    assert_kept(&before, &h.snapshot(), Some(ELSEWHERE), "agent_not_found");
    // A mapped home address links.
    let reply = h
        .api
        .link(
            Some("::ffff:203.0.113.7"),
            Some(ALICE),
            link_body(h.id, &secret),
        )
        .await;
    assert_eq!(assert_ok(&reply, 202)["state"], "pending");
}

#[tokio::test]
async fn attack_dns_rebinding_host_over_http() {
    let h = home().await;
    let id = h.id();
    for host in [
        "evil.example",
        "evil.example:8080",
        "printer.local.evil.example",
        "192.168.1.50.evil.example",
        "",
    ] {
        let reply = fetch(h.agent_at, Some(LINKER_IP), &id, &[("host", host)]).await;
        assert_refused(&reply, 403, "bad_host");
    }
    // A request without any Host, and one with two, over a raw connection.
    let path = format!("{P}/secret?instance_id={id}");
    for hosts in ["", "Host: 127.0.0.1\r\nHost: evil.example\r\n"] {
        let request = format!(
            "GET {path} HTTP/1.1\r\n{hosts}X-Forwarded-For: {LINKER_IP}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw_exchange(h.agent_at, request.as_bytes(), false).await;
        assert_eq!(
            parse_raw(&answer),
            (403, json!({ "error": "bad_host" })),
            "{hosts:?}"
        );
    }
    assert!(is_discovering(&h.agent));
    // An IP literal and the configured name are accepted.
    for host in [
        h.agent_at.to_string(),
        "printer.local:8080".to_owned(),
        "PRINTER.local".to_owned(),
    ] {
        let reply = fetch(h.agent_at, Some(LINKER_IP), &id, &[("host", &host)]).await;
        assert_ok(&reply, 200);
    }
}

#[tokio::test]
async fn attack_foreign_origin_over_http() {
    let h = home().await;
    for origin in [
        "https://evil.example",
        "null",
        "http://cloud.example",
        "https://cloud.example.evil.example",
        "https://cloud.example:8443",
    ] {
        let reply = fetch(h.agent_at, Some(LINKER_IP), &h.id(), &[("origin", origin)]).await;
        assert_refused(&reply, 403, "bad_origin");
        assert_eq!(reply.header("access-control-allow-origin"), None);
    }
    // Two Origin lines, one of them allowed: ambiguous, refused.
    let reply = fetch(
        h.agent_at,
        Some(LINKER_IP),
        &h.id(),
        &[("origin", ORIGIN), ("origin", "https://evil.example")],
    )
    .await;
    assert_refused(&reply, 403, "bad_origin");
    assert!(is_discovering(&h.agent));
    // The configured origin, in any case, is served.
    let reply = fetch(
        h.agent_at,
        Some(LINKER_IP),
        &h.id(),
        &[("origin", "HTTPS://Cloud.Example")],
    )
    .await;
    assert_ok(&reply, 200);
}

#[tokio::test]
async fn attack_spoof_prepended_through_a_trusted_proxy_over_http() {
    // A remote caller writes a LAN address into X-Forwarded-For; the trusted proxy appends the
    // address it really saw. The rightmost untrusted hop is the caller.
    let h = home().await;
    for chain in [
        format!("{LINKER_IP}, {ELSEWHERE}"),
        format!("{LINKER_IP}, {ELSEWHERE}, 127.0.0.1"),
    ] {
        let reply = fetch(h.agent_at, Some(&chain), &h.id(), &[]).await;
        assert_refused(&reply, 403, "not_local");
    }
    // The same as two header lines.
    let reply = fetch(
        h.agent_at,
        Some(LINKER_IP),
        &h.id(),
        &[("x-forwarded-for", ELSEWHERE)],
    )
    .await;
    assert_refused(&reply, 403, "not_local");
    // At the server, claiming the victim's address ahead of one's own shows nothing.
    assert!(h
        .api
        .discovered(&format!("{HOME}, {ELSEWHERE}"))
        .await
        .is_empty());
    assert!(is_discovering(&h.agent));
}

#[tokio::test]
async fn attack_unauthenticated_user_routes_over_http() {
    let h = home().await;
    let secret = real_secret(h.agent_at, h.id).await;
    let before = h.snapshot();
    let id = h.id();
    let base = format!("http://{}{P}", h.server_at);
    let client = default_client().unwrap();
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer "),
        Some("Basic YWxpY2U6cGFzcw=="),
        Some("alice-token-0123456789abcdef"),
        Some("Bearer alice-token-0123456789abcde"),
    ] {
        let requests = [
            client.get(format!("{base}/discover")),
            client
                .post(format!("{base}/link"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(link_body(h.id, &secret)),
            client.get(format!("{base}/link/{id}")),
            client.post(format!("{base}/codes")),
        ];
        for request in requests {
            let request = request.header("x-forwarded-for", HOME);
            let request = match auth {
                Some(value) => request.header(header::AUTHORIZATION, value),
                None => request,
            };
            let reply = send(request).await;
            assert_refused(&reply, 401, "unauthorized");
        }
        assert_kept(&before, &h.snapshot(), Some(HOME), "unauthorized");
    }
    assert!(is_discovering(&h.agent));
}

// ───────────────────────────── cross-site requests ─────────────────────────────

/// The host's cookie sessions: `Cookie: session=<token>` signs in the token's account. A browser
/// attaches the cookie to every request to the server, those another site's page starts included
/// (`SameSite` does not stop a sibling subdomain: it is the same site).
struct CookieSessions;

#[async_trait::async_trait]
impl http::Authenticator for CookieSessions {
    async fn authenticate(
        &self,
        parts: &http::http::request::Parts,
    ) -> Result<AccountId, http::Rejection> {
        let cookie = parts
            .headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok());
        USERS
            .iter()
            .find(|(token, _)| cookie == Some(&format!("session={token}")))
            .map(|(_, account)| AccountId::new(*account).unwrap())
            .ok_or(http::Rejection::Unauthorized)
    }
}

/// [`home`] whose server signs users in by [`CookieSessions`], with `config`.
async fn cookie_home(config: ServerConfig) -> Home {
    let auth = Arc::new(CookieSessions);
    home_on(start_server_auth(config, auth, ServeConfig::default()).await).await
}

/// A user `POST` to `path` as alice's browser at home would send it: her session cookie, the
/// `Content-Type` and `Origin` given (none when `None`), and `body`.
async fn browser_post(
    h: &Home,
    path: &str,
    content_type: Option<&str>,
    origin: Option<&str>,
    body: Vec<u8>,
) -> Reply {
    let mut request = client_from(HOME)
        .post(format!("http://{}{P}{path}", h.server_at))
        .header(header::COOKIE, format!("session={ALICE}"))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    send(request).await
}

/// The content types an HTML form (or a page's `fetch` without a preflight) can send.
const SIMPLE_CONTENT_TYPES: [&str; 4] = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
];

/// Issue 25, finding 6: a state-changing user route with a session cookie is refused unless its
/// body is declared JSON (`415 unsupported_media_type`) — even a right secret links nothing and
/// the agent keeps discovering — and a bodyless `POST /codes` with a form's content type mints
/// nothing. The linking page's own requests (JSON, its own origin) still link.
#[tokio::test]
async fn a_cookie_post_that_is_not_json_is_refused_and_links_nothing() {
    let h = cookie_home(proxied()).await;
    let secret = real_secret(h.agent_at, h.id).await;
    let before = h.snapshot();
    let not_json = SIMPLE_CONTENT_TYPES.iter().map(|t| Some(*t)).chain([None]);
    for content_type in not_json {
        // A form posts no Origin in older browsers; a same-origin one is no excuse either.
        for origin in [None, Some(format!("http://{}", h.server_at))] {
            let reply = browser_post(
                &h,
                "/link",
                content_type,
                origin.as_deref(),
                link_body(h.id, &secret),
            )
            .await;
            assert_refused(&reply, 415, "unsupported_media_type");
            assert_kept(&before, &h.snapshot(), Some(HOME), "unsupported_media_type");
        }
    }
    for content_type in SIMPLE_CONTENT_TYPES {
        let reply = browser_post(&h, "/codes", Some(content_type), None, Vec::new()).await;
        assert_refused(&reply, 415, "unsupported_media_type");
        assert_kept(&before, &h.snapshot(), Some(HOME), "unsupported_media_type");
    }
    assert!(is_discovering(&h.agent));
    // The page's own requests: JSON (with a charset, the media type in any case) from its own
    // origin, and a bodyless mint with no content type at all.
    let own = format!("http://{}", h.server_at);
    let json = Some("Application/JSON; charset=utf-8");
    let reply = browser_post(&h, "/link", json, Some(&own), link_body(h.id, &secret)).await;
    assert_eq!(assert_ok(&reply, 202)["state"], "pending");
    let linked = h.snapshot();
    assert_ok(
        &browser_post(&h, "/codes", None, Some(&own), Vec::new()).await,
        201,
    );
    assert_eq!(h.snapshot().codes, linked.codes + 1);
}

/// Issue 25, finding 6: a state-changing user request whose `Origin` is another site's (a
/// sibling subdomain, another port, a sandboxed `null`) is refused `403 bad_origin` even as
/// JSON, and changes nothing; reads are served whatever the `Origin` (no CORS: another origin
/// cannot read them).
#[tokio::test]
async fn a_cookie_post_from_another_origin_is_refused() {
    let h = cookie_home(proxied()).await;
    let secret = real_secret(h.agent_at, h.id).await;
    let before = h.snapshot();
    let port = h.server_at.port();
    let foreign = [
        "https://evil.example".to_owned(),
        format!("http://evil.127.0.0.1.nip.io:{port}"),
        format!("http://127.0.0.1:{}", port.wrapping_add(1)),
        "null".to_owned(),
    ];
    for origin in &foreign {
        let json = Some("application/json");
        let reply = browser_post(&h, "/link", json, Some(origin), link_body(h.id, &secret)).await;
        assert_refused(&reply, 403, "bad_origin");
        let reply = browser_post(&h, "/codes", None, Some(origin), Vec::new()).await;
        assert_refused(&reply, 403, "bad_origin");
        assert_kept(&before, &h.snapshot(), Some(HOME), "bad_origin");
    }
    assert!(is_discovering(&h.agent));
    let discover = client_from(HOME)
        .get(format!("http://{}{P}/discover", h.server_at))
        .header(header::COOKIE, format!("session={ALICE}"))
        .header(header::ORIGIN, "https://evil.example");
    assert_eq!(
        assert_ok(&send(discover).await, 200)["agents"][0]["instance_id"],
        h.id()
    );
}

/// With configured origins (`ServerConfig::allow_origin`), a state-changing request is accepted
/// from those only: not even the server's own host is implied any more.
#[tokio::test]
async fn configured_origins_replace_the_own_host() {
    let h = cookie_home(proxied().allow_origin(ORIGIN)).await;
    let own = format!("http://{}", h.server_at);
    assert_refused(
        &browser_post(&h, "/codes", None, Some(&own), Vec::new()).await,
        403,
        "bad_origin",
    );
    assert_ok(
        &browser_post(&h, "/codes", None, Some(ORIGIN), Vec::new()).await,
        201,
    );
    // A client that is no browser sends no Origin.
    assert_ok(
        &browser_post(&h, "/codes", None, None, Vec::new()).await,
        201,
    );
}

// ───────────────────────────── CORS at the agent ─────────────────────────────

#[tokio::test]
async fn cors_preflight_and_origin_echo_over_http() {
    let h = home().await;
    let url = format!("http://{}{P}/secret", h.agent_at);
    let preflight = |origin: &str, method: &str, private: bool| {
        let mut request = plain_client()
            .request(Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", method);
        if private {
            request = request.header("access-control-request-private-network", "true");
        }
        send(request)
    };

    let reply = preflight(ORIGIN, "GET", true).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(
        reply.header("access-control-allow-private-network"),
        Some("true")
    );
    assert_eq!(reply.header("access-control-allow-methods"), Some("GET"));
    assert_eq!(reply.header("access-control-max-age"), Some("60"));
    assert_eq!(reply.header("vary"), Some("Origin"));
    assert!(reply.body.is_empty());
    // Without the private-network request, no private-network grant.
    let reply = preflight(ORIGIN, "GET", false).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(reply.header("access-control-allow-private-network"), None);

    // A foreign origin, or another method: refused, and no CORS grant.
    for (origin, method) in [
        ("https://evil.example", "GET"),
        ("null", "GET"),
        (ORIGIN, "POST"),
        (ORIGIN, "get"),
    ] {
        let reply = preflight(origin, method, true).await;
        assert_refused(&reply, 403, "bad_origin");
        assert_eq!(reply.header("access-control-allow-origin"), None);
        assert_eq!(reply.header("access-control-allow-private-network"), None);
    }
    // No Origin at all is not a preflight to grant.
    let reply = send(
        plain_client()
            .request(Method::OPTIONS, &url)
            .header("access-control-request-method", "GET"),
    )
    .await;
    assert_refused(&reply, 403, "bad_origin");
    // A rebinding Host is refused at the preflight too.
    let reply = send(
        plain_client()
            .request(Method::OPTIONS, &url)
            .header("host", "evil.example")
            .header("origin", ORIGIN)
            .header("access-control-request-method", "GET"),
    )
    .await;
    assert_refused(&reply, 403, "bad_host");
    assert_eq!(reply.header("access-control-allow-origin"), None);

    // A successful GET with the allowed origin echoes that exact origin, never `*`.
    let reply = fetch(h.agent_at, Some(LINKER_IP), &h.id(), &[("origin", ORIGIN)]).await;
    assert_ok(&reply, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(reply.header("vary"), Some("Origin"));
    // Without an Origin there is nothing to echo.
    let reply = fetch(h.agent_at, Some(LINKER_IP), &h.id(), &[]).await;
    assert_ok(&reply, 200);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    // A refused GET carries no grant either.
    let reply = fetch(h.agent_at, Some(ELSEWHERE), &h.id(), &[("origin", ORIGIN)]).await;
    assert_refused(&reply, 403, "not_local");
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert!(is_discovering(&h.agent));
}

// ───────────────────────────── malformed input ─────────────────────────────

/// The server routes that take a body.
#[derive(Debug, Clone, Copy)]
enum Route {
    Announce,
    Link,
    Redeem,
}

/// Sends `body` to `route` from the home network, expects the refusal, checks that nothing
/// changed and that the server still answers a normal request.
async fn refused_body(h: &Home, route: Route, what: &str, body: Vec<u8>, status: u16, code: &str) {
    let before = h.snapshot();
    let reply = match route {
        Route::Announce => h.api.announce(Some(HOME), body).await,
        Route::Link => h.api.link(Some(HOME), Some(ALICE), body).await,
        Route::Redeem => h.api.redeem(Some(HOME), body).await,
    };
    assert_eq!(reply.status, status, "{route:?}: {what}");
    assert_refused(&reply, status, code);
    assert_kept(&before, &h.snapshot(), Some(HOME), code);
    assert_eq!(h.api.discovered(HOME).await, vec![h.id()], "{what}");
}

fn to_vec(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

#[tokio::test]
async fn malformed_bodies_are_refused_without_change_over_http() {
    let h = home().await;
    let secret = real_secret(h.agent_at, h.id).await;
    let id = h.id();
    let hex = secret.to_hex().to_string();
    // The honest link body, as JSON: the cases below differ from it in one way each.
    assert_eq!(
        to_vec(json!({ "instance_id": id, "local_secret": hex })),
        link_body(h.id, &secret)
    );
    let announce = serde_json::to_value(&h.announce).unwrap();
    let with = |path: &[&str], value: Value| {
        let mut announce = announce.clone();
        let (last, parents) = path.split_last().unwrap();
        let target = parents.iter().fold(&mut announce, |v, key| &mut v[*key]);
        target[*last] = value;
        to_vec(announce)
    };
    let without = |key: &str| {
        let mut announce = announce.clone();
        announce.as_object_mut().unwrap().remove(key);
        to_vec(announce)
    };
    // A valid announcement padded with whitespace past its 4 KiB limit (under 16 KiB).
    let mut padded = wire::encode(&h.announce).to_vec();
    padded.extend(std::iter::repeat_n(b' ', 5000));
    let huge = vec![b' '; 17 * 1024];

    for (what, body) in [
        ("invalid JSON", b"{".to_vec()),
        ("empty", Vec::new()),
        ("an array", b"[]".to_vec()),
        ("port as text", with(&["port"], json!("8080"))),
        ("port out of range", with(&["port"], json!(70000))),
        (
            "private_ip not an address",
            with(&["private_ip"], json!("printer")),
        ),
        ("unknown field", with(&["extra"], json!(1))),
        ("unknown info field", with(&["info", "serial"], json!("x"))),
        ("missing commitment", without("commitment")),
        ("missing instance_id", without("instance_id")),
        ("short commitment", with(&["commitment"], json!("00"))),
        (
            "version 1 UUID",
            with(
                &["instance_id"],
                json!("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
            ),
        ),
    ] {
        refused_body(&h, Route::Announce, what, body, 400, "malformed").await;
    }
    for (what, body) in [
        (
            "model too long",
            with(&["info", "model"], json!("m".repeat(65))),
        ),
        (
            "hostname too long",
            with(&["info", "hostname"], json!("h".repeat(254))),
        ),
        (
            "agent_version too long",
            with(&["info", "agent_version"], json!("1".repeat(33))),
        ),
        (
            "control character",
            with(&["info", "agent"], json!("a\u{1b}[2J")),
        ),
        (
            "bidi override",
            with(&["info", "hostname"], json!("printer\u{202E}lacol.")),
        ),
        (
            "zero-width space",
            with(&["info", "model"], json!("Prusa\u{200B}MK4")),
        ),
    ] {
        refused_body(&h, Route::Announce, what, body, 400, "bad_field").await;
    }
    let version = with(&["version"], json!(2));
    refused_body(
        &h,
        Route::Announce,
        "version 2",
        version,
        400,
        "unsupported_version",
    )
    .await;
    refused_body(&h, Route::Announce, "over 4 KiB", padded, 413, "too_large").await;
    refused_body(
        &h,
        Route::Announce,
        "over 16 KiB",
        huge.clone(),
        413,
        "too_large",
    )
    .await;

    for (what, body) in [
        ("invalid JSON", b"not json".to_vec()),
        ("null", b"null".to_vec()),
        (
            "id as a number",
            to_vec(json!({ "instance_id": 5, "local_secret": hex })),
        ),
        (
            "secret as bytes",
            to_vec(json!({ "instance_id": id, "local_secret": [1, 2, 3] })),
        ),
        // The real secret, but an unknown field: refused, and nothing is linked.
        (
            "unknown field",
            to_vec(json!({ "instance_id": id, "local_secret": hex, "x": 1 })),
        ),
        ("missing secret", to_vec(json!({ "instance_id": id }))),
        ("missing id", to_vec(json!({ "local_secret": hex }))),
        (
            "bad id",
            to_vec(json!({ "instance_id": "not-a-uuid", "local_secret": hex })),
        ),
        (
            "short secret",
            to_vec(json!({ "instance_id": id, "local_secret": &hex[..63] })),
        ),
        (
            "non-hex secret",
            to_vec(json!({ "instance_id": id, "local_secret": "z".repeat(64) })),
        ),
    ] {
        refused_body(&h, Route::Link, what, body, 400, "malformed").await;
    }
    refused_body(
        &h,
        Route::Link,
        "over 16 KiB",
        huge.clone(),
        413,
        "too_large",
    )
    .await;

    for (what, body) in [
        ("missing code", to_vec(json!({ "instance_id": id }))),
        (
            "code with a space",
            to_vec(json!({ "instance_id": id, "code": "12 34" })),
        ),
        (
            "empty code",
            to_vec(json!({ "instance_id": id, "code": "" })),
        ),
        (
            "code as a number",
            to_vec(json!({ "instance_id": id, "code": 123456 })),
        ),
        (
            "code too long",
            to_vec(json!({ "instance_id": id, "code": "1".repeat(65) })),
        ),
        (
            "unknown field",
            to_vec(json!({ "instance_id": id, "code": "123456", "x": 1 })),
        ),
    ] {
        refused_body(&h, Route::Redeem, what, body, 400, "malformed").await;
    }
    refused_body(&h, Route::Redeem, "over 16 KiB", huge, 413, "too_large").await;

    // After all of it the agent is untouched and the real secret still links.
    assert!(is_discovering(&h.agent));
    let reply = h
        .api
        .link(Some(HOME), Some(ALICE), link_body(h.id, &secret))
        .await;
    assert_eq!(assert_ok(&reply, 202)["state"], "pending");
}

#[tokio::test]
async fn malformed_routes_are_refused_without_change_over_http() {
    let h = home().await;
    let id = h.id();
    let server = |path: &str| format!("http://{}{P}{path}", h.server_at);
    let agent = |path: &str| format!("http://{}{P}{path}", h.agent_at);
    let cases = [
        (
            Method::GET,
            server("/agent/announce"),
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            server("/agent/redeem"),
            405,
            "method_not_allowed",
        ),
        (Method::PUT, server("/link"), 405, "method_not_allowed"),
        (Method::DELETE, server("/codes"), 405, "method_not_allowed"),
        (Method::POST, server("/discover"), 405, "method_not_allowed"),
        (
            Method::POST,
            agent(&format!("/secret?instance_id={id}")),
            405,
            "method_not_allowed",
        ),
        (Method::GET, server("/nope"), 404, "not_found"),
        (Method::GET, server("/discover/"), 404, "not_found"),
        (
            Method::GET,
            format!("http://{}/lanlink/v2/discover", h.server_at),
            404,
            "not_found",
        ),
        (
            Method::GET,
            format!("http://{}/", h.server_at),
            404,
            "not_found",
        ),
        (
            Method::GET,
            server(&format!("/link/{id}/extra")),
            404,
            "not_found",
        ),
        (Method::GET, agent("/nope"), 404, "not_found"),
        (Method::GET, server("/link/not-a-uuid"), 400, "malformed"),
        // A version-1 UUID is not an instance id; nor is a truncated one.
        (
            Method::GET,
            server("/link/6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
            400,
            "malformed",
        ),
        (
            Method::GET,
            server(&format!("/link/{}", &id[..35])),
            400,
            "malformed",
        ),
        // The agent's endpoint wants exactly one instance_id.
        (Method::GET, agent("/secret"), 400, "malformed"),
        (
            Method::GET,
            agent(&format!("/secret?id={id}")),
            400,
            "malformed",
        ),
        (
            Method::GET,
            agent(&format!("/secret?instance_id={id}&instance_id={id}")),
            400,
            "malformed",
        ),
        (
            Method::GET,
            agent(&format!("/secret?instance_id=x&instance_id={id}")),
            400,
            "malformed",
        ),
    ];
    let client = default_client().unwrap();
    for (method, url, status, code) in cases {
        let before = h.snapshot();
        let request = client
            .request(method.clone(), &url)
            .header("x-forwarded-for", LINKER_IP)
            .header(header::AUTHORIZATION, format!("Bearer {ALICE}"));
        let reply = send(request).await;
        assert_eq!(reply.status, status, "{method} {url}");
        assert_refused(&reply, status, code);
        assert_kept(&before, &h.snapshot(), Some(HOME), code);
        assert_eq!(
            h.api.discovered(HOME).await,
            vec![id.clone()],
            "{method} {url}"
        );
    }
    assert!(is_discovering(&h.agent));
    assert_ok(&fetch(h.agent_at, Some(LINKER_IP), &id, &[]).await, 200);
}

#[tokio::test]
async fn truncated_body_is_refused_without_change_over_http() {
    let h = home().await;
    let before = h.snapshot();
    // Content-Length 100, then 10 bytes, then the client closes its side.
    let request = format!(
        "POST {P}/link HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ALICE}\r\n\
         X-Forwarded-For: {HOME}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n\
         {{\"instance",
        h.server_at
    );
    let answer = raw_exchange(h.server_at, request.as_bytes(), true).await;
    assert_eq!(parse_raw(&answer), (400, json!({ "error": "malformed" })));
    assert_kept(&before, &h.snapshot(), Some(HOME), "malformed");
    // The same on the announce route, and with the connection dropped outright (no answer owed).
    let announce = request.replace("/link", "/agent/announce");
    let answer = raw_exchange(h.server_at, announce.as_bytes(), true).await;
    assert_eq!(parse_raw(&answer), (400, json!({ "error": "malformed" })));
    drop(
        TcpStream::connect(h.server_at)
            .await
            .unwrap()
            .write_all(request.as_bytes())
            .await,
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_kept(&before, &h.snapshot(), Some(HOME), "malformed");
    // The server still answers.
    assert_eq!(h.api.discovered(HOME).await, vec![h.id()]);
}

// ───────────────────────────── robustness of serve ─────────────────────────────

#[tokio::test]
async fn slow_header_clients_do_not_block_others_over_http() {
    let serve_config = ServeConfig {
        header_read_timeout: Duration::from_secs(1),
        ..ServeConfig::default()
    };
    let (_server, at) = start_server_with(ServerConfig::default(), &USERS, serve_config).await;
    let api = Api::unpooled(at);
    // Several clients send half a header line, then stall.
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(at).await.unwrap();
        stream
            .write_all(
                format!("GET {P}/discover HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthori").as_bytes(),
            )
            .await
            .unwrap();
        stalled.push(stream);
    }
    // And one that connects and sends nothing at all.
    stalled.push(TcpStream::connect(at).await.unwrap());
    let started = Instant::now();
    // Meanwhile normal requests are answered at once.
    for _ in 0..3 {
        let reply = timeout(Duration::from_millis(900), api.discover(None, Some(ALICE)))
            .await
            .expect("answered while others stall");
        assert_eq!(assert_ok(&reply, 200), json!({ "agents": [] }));
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // The stalled connections are closed after the header timeout, with no success.
    for mut stream in stalled {
        let mut answer = Vec::new();
        let read = timeout(Duration::from_secs(4), stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the stalled connection was not closed");
        let text = String::from_utf8_lossy(&answer);
        assert!(!text.contains(" 200 "), "{text:?}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    // And the server still serves.
    assert_eq!(
        assert_ok(&api.discover(None, Some(ALICE)).await, 200),
        json!({ "agents": [] })
    );
}

#[tokio::test]
async fn connection_cap_closes_extra_connections_over_http() {
    let serve_config = ServeConfig {
        max_connections: 2,
        ..ServeConfig::default()
    };
    let (_server, at) = start_server_with(ServerConfig::default(), &USERS, serve_config).await;
    let api = Api::unpooled(at);
    assert_eq!(api.discover(None, Some(ALICE)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Two idle connections take both slots.
    let first = TcpStream::connect(at).await.unwrap();
    let second = TcpStream::connect(at).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third is closed at once, without an answer, even with a complete request.
    let mut third = TcpStream::connect(at).await.unwrap();
    let request =
        format!("GET {P}/discover HTTP/1.1\r\nHost: {at}\r\nAuthorization: Bearer {ALICE}\r\n\r\n");
    let _ = third.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let read = timeout(Duration::from_secs(2), third.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the third connection was not closed");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    // So is a normal client's.
    let refused = timeout(
        LIMIT,
        api.request(Method::GET, "/discover", None, Some(ALICE))
            .send(),
    )
    .await
    .expect("closed in time");
    assert!(refused.is_err(), "{refused:?}");

    // Once the idle ones close, the server serves again.
    drop(first);
    drop(second);
    let served = bounded("serving again", async {
        loop {
            if let Ok(response) = api
                .request(Method::GET, "/discover", None, Some(ALICE))
                .send()
                .await
            {
                break response.status().as_u16();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(served, 200);
}

#[tokio::test]
async fn oversized_headers_and_garbage_cost_one_connection_over_http() {
    let h = home().await;
    let before = h.snapshot();
    // Headers far beyond the 64 KiB read buffer: refused by the HTTP layer, connection closed.
    let big = "a".repeat(300 * 1024);
    let request = format!(
        "GET {P}/discover HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n\
         X-Forwarded-For: {HOME}\r\nX-Big: {big}\r\n\r\n"
    );
    let answer = raw_exchange(h.server_at, request.as_bytes(), false).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // Not HTTP at all.
    let answer = raw_exchange(h.server_at, b"\x16\x03\x01\x02\x00garbage\r\n\r\n", false).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_kept(&before, &h.snapshot(), Some(HOME), "malformed");
    assert_eq!(h.api.discovered(HOME).await, vec![h.id()]);
}

#[tokio::test]
async fn head_on_the_secret_route_is_refused_and_bearer_scheme_is_case_insensitive() {
    let h = home().await;
    let id = h.id();
    let url = format!("http://{}{P}/secret?instance_id={id}", h.agent_at);
    let reply = send(
        plain_client()
            .head(url)
            .header("x-forwarded-for", LINKER_IP),
    )
    .await;
    assert_eq!(reply.status, 405);
    assert!(is_discovering(&h.agent));
    let served = lanlink::driver::lock(&h.agent)
        .poll_event()
        .into_iter()
        .any(|e| matches!(e, lanlink::event::AgentEvent::SecretServed { .. }));
    assert!(!served, "a HEAD must not count as serving the secret");
    let reply = send(
        h.api
            .request(Method::GET, "/discover", Some(HOME), None)
            .header("authorization", format!("bearer {ALICE}")),
    )
    .await;
    assert_ok(&reply, 200);
}

#[tokio::test]
async fn spawn_purge_drops_expired_networks() {
    let config = ServerConfig::default()
        .announce_interval(Duration::from_millis(100))
        .presence_ttl(Duration::from_millis(250));
    let (server, server_at) = start_server(config, &USERS).await;
    let (agent, _) = start_agent(plain_agent).await;
    announce_once(&agent, server_at, HOME).await;
    assert_eq!(server.store().networks(), 1);
    let task = http::server::spawn_purge(Arc::clone(&server), Duration::from_millis(50));
    bounded("purge", async {
        while server.store().networks() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    task.abort();
}

/// An account holds at most its quota of live manual codes (5): the sixth mint answers
/// `429 mint_quota`, and redeeming one gives its slot back.
#[tokio::test]
async fn mints_past_the_account_quota_answer_429_mint_quota() {
    let (_server, server_at) = start_server(proxied(), &USERS).await;
    let base = format!("http://{server_at}");
    let client = HttpLinkerClient::with_client(client_from(HOME), &base, P, P, ALICE);
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(
            bounded("mint", client.mint_code())
                .await
                .expect("mint")
                .code,
        );
    }
    let refused = bounded("mint", client.mint_code()).await.unwrap_err();
    assert!(
        matches!(&refused, lanlink::transport::TransportError::Refused { status: 429, code } if *code == WireCode::MintQuota),
        "{refused:?}"
    );
    let agent = HttpAgentClient::with_client(client_from(HOME), &base, P);
    let redeem = RedeemRequest::new(
        lanlink::InstanceId::from_bytes([5; 16]),
        codes.pop().expect("a code"),
    );
    bounded("redeem", agent.redeem(&redeem))
        .await
        .expect("redeemed");
    bounded("mint", client.mint_code())
        .await
        .expect("the redeemed code's slot is free again");
}

/// Revision 1.2 over HTTP: the announce reply's `visibility` and discovery's `hidden` reason,
/// `too_many_agents` for two devices and `shared_network` for a carrier-NAT caller seen through
/// the trusted proxy, whose link request is refused `409 shared_network`.
#[tokio::test]
async fn visibility_and_hidden_reasons_over_http() {
    let (_server, server_at) = start_server(proxied(), &USERS).await;
    let api = Api::new(server_at);
    // One device: visible, and discovery hides nothing (no `hidden` key at all).
    let (first, _) = start_agent(proxied_agent).await;
    let transmit = lock(&first).poll_transmit(Instant::now());
    let Some(AgentTransmit::Announce(announce)) = transmit else {
        panic!("an announcement is due");
    };
    let raw = api
        .announce(Some(HOME), serde_json::to_vec(&announce).unwrap())
        .await;
    assert_eq!(assert_ok(&raw, 200)["visibility"], json!("visible"));
    let body = assert_ok(&api.discover(Some(HOME), Some(ALICE)).await, 200);
    assert_eq!(body["agents"].as_array().unwrap().len(), 1);
    assert!(body.get("hidden").is_none(), "{body}");
    // Two devices: none shown, and the reply says why without naming or counting them.
    let (second, _) = start_agent(proxied_agent).await;
    let transmit = lock(&second).poll_transmit(Instant::now());
    let Some(AgentTransmit::Announce(announce)) = transmit else {
        panic!("an announcement is due");
    };
    let reply = announce_as(&announce, server_at, HOME).await;
    assert_eq!(
        reply.visibility,
        lanlink::wire::Visibility::Hidden(lanlink::wire::HiddenReason::TooManyAgents)
    );
    let body = assert_ok(&api.discover(Some(HOME), Some(ALICE)).await, 200);
    assert_eq!(
        body,
        json!({"agents": [], "hidden": {"reason": "too_many_agents"}})
    );
    // A carrier-NAT caller through the trusted proxy: shared, told so, links refused.
    let cgnat = "100.64.7.7";
    let (third, _) = start_agent(proxied_agent).await;
    let transmit = lock(&third).poll_transmit(Instant::now());
    let Some(AgentTransmit::Announce(announce)) = transmit else {
        panic!("an announcement is due");
    };
    let raw = api
        .announce(Some(cgnat), serde_json::to_vec(&announce).unwrap())
        .await;
    assert_eq!(
        assert_ok(&raw, 200)["visibility"],
        json!({"hidden": "shared_network"})
    );
    let body = assert_ok(&api.discover(Some(cgnat), Some(ALICE)).await, 200);
    assert_eq!(
        body,
        json!({"agents": [], "hidden": {"reason": "shared_network"}})
    );
    let link = api
        .link(
            Some(cgnat),
            Some(ALICE),
            link_body(announce.instance_id, &LocalSecret::from_bytes([1; 32])),
        )
        .await;
    assert_eq!(link.status, 409);
    assert_eq!(link.json(), json!({"error": "shared_network"}));
    // The manual code still works from there.
    assert_eq!(api.codes(Some(ALICE)).await.status, 201);
}
