//! Address candidates (wire revision 1.3) over real loopback sockets (127.0.0.1 only): an agent
//! whose first endpoint does not answer links through its second; the server refuses a
//! non-private candidate at announce; the discovery reply carries the candidates in order.
//!
//! The server trusts the loopback peer as its proxy, so `X-Forwarded-For` names the public
//! network (the home 203.0.113.7), as in `tests/http.rs`.
#![cfg(feature = "http")]

mod support;
use support::net::{self, bounded_by, info, start_agent, P};

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lanlink::agent::{Agent, AgentConfig, AgentStatus, AgentTransmit};
use lanlink::driver::{lock, DriverConfig};
use lanlink::event::LinkerEvent;
use lanlink::http::client::{HttpAgentClient, HttpLinkerClient};
use lanlink::http::server::SharedServer;
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::server::ServerConfig;
use lanlink::transport::{AgentServerTransport, LinkerServerTransport};
use lanlink::Refusal;
use support::linking::{link_first, spawn_agent};
use tokio::net::TcpListener;

const HOME: &str = "203.0.113.7";
const ALICE: &str = "alice-token-0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    bounded_by(LIMIT, what, future).await
}

async fn start_server() -> (SharedServer, SocketAddr) {
    let config = ServerConfig::default()
        .trusted_proxies(vec!["127.0.0.0/8".parse().unwrap()])
        .presence_ttl(Duration::from_secs(60));
    net::start_server(config, &[(ALICE, "alice")]).await
}

/// A loopback port that nothing listens on (bound, then closed: connections are refused).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

fn client_from(from: &str) -> reqwest::Client {
    net::client_from(from, LIMIT)
}

/// A loopback port that accepts connections (the kernel's backlog) but never answers them.
async fn silent_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _held = listener;
        std::future::pending::<()>().await
    });
    addr
}

/// The agent's first endpoint (`private_ip:port`) is a closed port; its candidate is where it
/// really listens. The linker is refused a connection at the first, moves on to the second, and
/// the link completes; the event says which endpoint answered.
#[tokio::test]
async fn first_endpoint_unreachable_second_answers_and_links() {
    links_past(closed_port().await).await;
}

/// The same with a first endpoint that takes the connection and never answers: the linker gives
/// up on it after `fetch_timeout` (no clock read in the linker: the driver's timer) and links
/// through the second.
#[tokio::test]
async fn first_endpoint_silent_times_out_and_second_links() {
    let started = Instant::now();
    links_past(silent_port().await).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the silent endpoint was given its whole fetch timeout"
    );
}

async fn links_past(dead: SocketAddr) {
    let (_server, server_at) = start_server().await;
    let base = format!("http://{server_at}");
    let (agent, agent_at) = start_agent(|at| {
        AgentConfig::new(dead.ip(), dead.port(), info())
            .candidates(vec![at])
            .announce_interval(Duration::from_millis(500))
    })
    .await;
    let id = lock(&agent).instance_id();
    assert_eq!(lock(&agent).endpoints(), [dead, agent_at]);

    let agent_task = spawn_agent(
        &agent,
        HttpAgentClient::with_client(client_from(HOME), &base, P),
    );
    let client = HttpLinkerClient::with_client(client_from(HOME), &base, P, P, ALICE);
    let config = LinkerConfig {
        discover_interval: Duration::from_millis(200),
        status_interval: Duration::from_millis(200),
        fetch_timeout: Duration::from_secs(2),
        ..LinkerConfig::default()
    };
    let mut linker = Linker::without_nonce(config, Instant::now());
    let mut events = Vec::new();
    let linked = bounded(
        "linker",
        link_first(&mut linker, &client, &DriverConfig::default(), |event| {
            events.push(event)
        }),
    )
    .await;
    assert_eq!(linked, Ok(id));
    assert_eq!(
        bounded("agent", agent_task).await.unwrap(),
        AgentStatus::Linked
    );
    let discovered = events
        .iter()
        .find_map(|e| match e {
            LinkerEvent::Discovered { agents } => Some(agents.clone()),
            _ => None,
        })
        .expect("a discovery");
    assert_eq!(discovered[0].endpoints(), [dead, agent_at]);
    assert!(
        events.contains(&LinkerEvent::EndpointUnreachable {
            instance_id: id,
            endpoint: dead
        }),
        "{events:?}"
    );
    assert!(
        events.contains(&LinkerEvent::SecretFetched {
            instance_id: id,
            from: agent_at
        }),
        "{events:?}"
    );
}

/// An announcement with a public candidate is refused (`403 not_private_ip`) and nothing is
/// recorded; the same announcement without it is accepted, and discovery shows the candidates
/// in the order announced, without the first endpoint repeated.
#[tokio::test]
async fn public_candidate_is_refused_at_announce() {
    let (server, server_at) = start_server().await;
    let base = format!("http://{server_at}");
    let transport = HttpAgentClient::with_client(client_from(HOME), &base, P);
    let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, info()).candidates(vec![
        "10.0.0.5:8080".parse().unwrap(),
        "[fd00::5]:8080".parse().unwrap(),
    ]);
    let now = Instant::now();
    let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    let Some(AgentTransmit::Announce(announce)) = agent.poll_transmit(now) else {
        panic!("no announcement")
    };
    for public in ["203.0.113.9:8080", "[2001:db8::5]:8080", "100.64.0.7:8080"] {
        let mut bad = announce.clone();
        bad.candidates.push(public.parse().unwrap());
        let refused = transport.announce(&bad).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Some(Refusal::NotPrivateIp.code()),
            "{public}"
        );
        let network = server.config().network_of(HOME.parse().unwrap());
        assert!(
            server.store().network(&network).is_none(),
            "{public}: something was recorded"
        );
    }
    // A repeat of the first endpoint and of a candidate is dropped, the order kept.
    let mut repeated = announce.clone();
    repeated
        .candidates
        .push("192.168.1.50:8080".parse().unwrap());
    repeated.candidates.push("10.0.0.5:8080".parse().unwrap());
    transport.announce(&repeated).await.expect("accepted");
    let client = HttpLinkerClient::with_client(client_from(HOME), &base, P, P, ALICE);
    let reply = client.discover().await.unwrap();
    assert_eq!(reply.agents.len(), 1);
    assert_eq!(
        reply.agents[0].candidates, announce.candidates,
        "candidates kept in order, repeats dropped"
    );
    // Nine candidates are refused at decoding (`400 bad_field`).
    let mut long = announce.clone();
    long.candidates = (1..=9)
        .map(|n| SocketAddr::from(([10, 0, 1, n], 8080)))
        .collect();
    let refused = transport.announce(&long).await.unwrap_err();
    assert_eq!(
        refused,
        lanlink::transport::TransportError::Refused {
            status: 400,
            code: lanlink::WireCode::BadField
        }
    );
}
