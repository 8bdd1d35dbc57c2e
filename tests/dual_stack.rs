//! Dual-stack presence (issue 15): an agent with IPv4 and IPv6 connectivity announces over both,
//! so the server holds one presence (one instance, one presence key) in two public networks.
//! A linker of either network finds and links it; its secret is good for one link in all of
//! them; neither network sees the other's agents.

mod support;

use support::steps::Steps;

use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use lanlink::server::{Server, ServerConfig};
use lanlink::wire::{AgentMessage, LinkRequest, RedeemRequest};
use lanlink::{AccountId, ForwardedHeaders, Refusal};

const V4: &str = "203.0.113.7";
const V6: &str = "2001:db8:7:1::20";
const ELSEWHERE: &str = "198.51.100.1";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("time")
}

fn alice() -> AccountId {
    AccountId::new("alice").expect("account")
}

fn link(
    server: &mut Server,
    now: DateTime<Utc>,
    from: &str,
    request: LinkRequest,
) -> Result<(), Refusal> {
    server
        .link_now(
            now,
            &mut lanlink::os_rng(),
            &alice(),
            ip(from),
            ForwardedHeaders::NONE,
            request,
        )
        .map(|_| ())
}

/// The dual-stack agent is shown in both of its networks; an agent present only in the IPv4
/// network is never shown to the IPv6 one (nor the reverse), and a third network sees nothing.
#[test]
fn a_presence_in_two_networks_shows_each_only_its_own() {
    let mut server = Server::new(ServerConfig::default().max_visible(2)).expect("server");
    let now = t0();
    let (dual, _) = support::announcement(1, "192.168.1.50");
    let (v4_only, _) = support::announcement(2, "192.168.1.51");
    let (v6_only, _) = support::announcement(3, "192.168.1.52");
    for (from, announce) in [(V4, &dual), (V6, &dual), (V4, &v4_only), (V6, &v6_only)] {
        server
            .announce_now(now, ip(from), ForwardedHeaders::NONE, announce)
            .expect("announce");
    }
    let shown = |server: &mut Server, from: &str| {
        let mut ids: Vec<_> = server
            .discover_now(now, ip(from), ForwardedHeaders::NONE)
            .expect("discover")
            .agents
            .iter()
            .map(|a| a.instance_id)
            .collect();
        ids.sort();
        ids
    };
    let mut want_v4 = vec![dual.instance_id, v4_only.instance_id];
    want_v4.sort();
    let mut want_v6 = vec![dual.instance_id, v6_only.instance_id];
    want_v6.sort();
    assert_eq!(shown(&mut server, V4), want_v4);
    assert_eq!(shown(&mut server, V6), want_v6);
    assert!(shown(&mut server, ELSEWHERE).is_empty());
}

/// Linked through one network, the instance is unlinkable from the other (`already_linking`,
/// with the right secret); the code is delivered in the linking network only and redeems from
/// there only.
#[test]
fn one_link_per_instance_across_its_networks() {
    for (first, second) in [(V4, V6), (V6, V4)] {
        let mut server = Server::new(ServerConfig::default()).expect("server");
        let now = t0();
        let (announce, secret) = support::announcement(1, "192.168.1.50");
        let id = announce.instance_id;
        for from in [first, second] {
            server
                .announce_now(now, ip(from), ForwardedHeaders::NONE, &announce)
                .expect("announce");
        }
        let request = || LinkRequest::new(id, secret.clone());
        link(&mut server, now, first, request()).expect("the first link");
        assert_eq!(
            link(&mut server, now, second, request()),
            Err(Refusal::AlreadyLinking),
            "linked from {first}, then from {second}"
        );
        // The message comes in the linking network's reply only.
        let later = now + TimeDelta::seconds(2);
        let elsewhere = server
            .announce_now(later, ip(second), ForwardedHeaders::NONE, &announce)
            .expect("announce");
        assert!(elsewhere.messages.is_empty());
        let reply = server
            .announce_now(later, ip(first), ForwardedHeaders::NONE, &announce)
            .expect("announce");
        let code = match reply.messages.as_slice() {
            [AgentMessage::VerifyAndRedeem { code, .. }] => code.clone(),
            other => panic!("one message expected, got {other:?}"),
        };
        let redeem = RedeemRequest::new(id, code)
            .with_presence_key(announce.presence_key.clone())
            .with_attempt(1);
        let wrong_way = server.redeem_now(
            later,
            &mut lanlink::os_rng(),
            ip(second),
            ForwardedHeaders::NONE,
            &redeem,
        );
        assert_eq!(wrong_way.unwrap_err(), Refusal::CodeWrongNetwork);
        let redeemed = server
            .redeem_now(
                later,
                &mut lanlink::os_rng(),
                ip(first),
                ForwardedHeaders::NONE,
                &redeem,
            )
            .expect("redeem through the linking network");
        assert_eq!(redeemed.instance_id, id);
        // After completion, still unlinkable in every network it was in.
        for from in [first, second] {
            assert_eq!(
                link(&mut server, later, from, request()),
                Err(Refusal::AlreadyLinking),
                "after the link, from {from}"
            );
        }
    }
}

/// The claim lives as long as any presence of the instance can, and no longer: a wrong secret
/// never writes one (it cannot block the owner's network), and a claim of the same network
/// is the request's own (a retry after a fault goes through).
#[test]
fn a_wrong_secret_claims_nothing() {
    let mut server = Server::new(ServerConfig::default()).expect("server");
    let now = t0();
    let (announce, secret) = support::announcement(1, "192.168.1.50");
    let id = announce.instance_id;
    for from in [V4, V6] {
        server
            .announce_now(now, ip(from), ForwardedHeaders::NONE, &announce)
            .expect("announce");
    }
    let wrong = LinkRequest::new(id, lanlink::LocalSecret::from_bytes([9; 32]));
    assert_eq!(link(&mut server, now, V6, wrong), Err(Refusal::WrongSecret));
    let right = LinkRequest::new(id, secret);
    link(&mut server, now, V4, right).expect("the owner's link is not blocked");
}

/// Over real sockets: a server listening on 127.0.0.1 and [::1] (two public networks: the IPv4
/// address and the IPv6 /64), an agent announcing over both with [`DualStack`], and a linker on
/// each family linking it (a fresh agent each time). A linker whose network matches neither
/// (127.0.0.2) sees nothing. The agent's code redeems over the family that delivered it.
#[cfg(all(feature = "http", feature = "tokio"))]
mod over_sockets {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::support::linking::link_first;
    use lanlink::agent::{AgentConfig, AgentStatus};
    use lanlink::driver::{lock, run_agent, DriverConfig, SharedAgent};
    use lanlink::dual::{DualStack, Path};
    use lanlink::http::client::{HttpAgentClient, HttpLinkerClient};
    use lanlink::http::{self, serve, ServeConfig, DEFAULT_PREFIX as P};
    use lanlink::linker::{Linker, LinkerConfig};
    use lanlink::server::{Server, ServerConfig};
    use lanlink::transport::LinkerServerTransport;
    use lanlink::InstanceId;
    use tokio::net::TcpListener;

    use super::support::net;

    const TOKEN: &str = "alice-token-0123456789abcdef";
    const LIMIT: Duration = Duration::from_secs(20);

    async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
        net::bounded_by(LIMIT, what, future).await
    }

    /// The server's routes on 127.0.0.1:0 and [::1]:0 (one server, two listeners).
    async fn start_server() -> (SocketAddr, SocketAddr) {
        let config = ServerConfig::default().announce_interval(Duration::from_millis(200));
        let server = Arc::new(Server::new(config).expect("config"));
        let auth = net::bearer(&[(TOKEN, "alice")]);
        let router = http::server::router(server, auth, P).fallback(http::server::not_found);
        let mut addrs = Vec::new();
        for at in ["127.0.0.1:0", "[::1]:0"] {
            let listener = TcpListener::bind(at).await.expect("bind");
            addrs.push(listener.local_addr().expect("addr"));
            tokio::spawn(serve(
                listener,
                router.clone(),
                ServeConfig::default(),
                std::future::pending(),
            ));
        }
        (addrs[0], addrs[1])
    }

    async fn start_agent() -> SharedAgent {
        let (agent, _) = net::start_agent(|at| {
            AgentConfig::new(at.ip(), at.port(), net::info())
                .announce_interval(Duration::from_millis(200))
        })
        .await;
        agent
    }

    /// A linker's client to `server`, its connections from `local` (any when `None`).
    fn linker_client(server: SocketAddr, local: Option<&str>) -> HttpLinkerClient {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy();
        if let Some(local) = local {
            builder = builder.local_address(local.parse::<std::net::IpAddr>().expect("ip"));
        }
        let client = builder.build().expect("client");
        HttpLinkerClient::with_client(client, &format!("http://{server}"), P, P, TOKEN)
    }

    async fn shown(client: &HttpLinkerClient) -> Vec<InstanceId> {
        match client.discover().await {
            Ok(reply) => reply.agents.iter().map(|a| a.instance_id).collect(),
            Err(err) => panic!("discover: {err:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dual_stack_agent_links_from_either_family() {
        for path in [Path::First, Path::Second] {
            // A server of its own each time: the first agent's presence in the network it did
            // not link from outlives its link by its hold (revision 1.6: one presence lifetime
            // past the hold), and would hide the second agent there as a second device.
            let (v4, v6) = start_server().await;
            let family = if path == Path::First { v4 } else { v6 };
            let agent = start_agent().await;
            let id = lock(&agent).instance_id();
            let transport = Arc::new(DualStack::new(
                HttpAgentClient::new(&format!("http://{v4}")).expect("client"),
                HttpAgentClient::new(&format!("http://{v6}")).expect("client"),
            ));
            let agent_task = {
                let (agent, transport) = (Arc::clone(&agent), Arc::clone(&transport));
                tokio::spawn(async move {
                    run_agent(&agent, &*transport, &DriverConfig::default(), |_| {}).await
                })
            };
            let (on_v4, on_v6) = (linker_client(v4, None), linker_client(v6, None));
            let stranger = linker_client(v4, Some("127.0.0.2"));
            // One presence, seen from both networks; not from a third.
            bounded("both networks show the agent", async {
                loop {
                    if shown(&on_v4).await == [id] && shown(&on_v6).await == [id] {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            assert!(shown(&stranger).await.is_empty(), "127.0.0.2 sees nothing");

            let linker_client = linker_client(family, None);
            let config = LinkerConfig {
                discover_interval: Duration::from_millis(100),
                status_interval: Duration::from_millis(100),
                ..LinkerConfig::default()
            };
            let mut linker = Linker::without_nonce(config, Instant::now());
            let linked = bounded(
                "linker",
                link_first(
                    &mut linker,
                    &linker_client,
                    &DriverConfig::default(),
                    |_| {},
                ),
            )
            .await;
            assert_eq!(linked, Ok(id), "linking over {family}");
            let status = bounded("agent", agent_task).await.expect("agent task");
            assert_eq!(status, AgentStatus::Linked, "linking over {family}");
            assert!(lock(&agent).auth_token().is_some());
            // The transport redeemed over the path that delivered the code, and the server says
            // linked to the linking network only.
            let delivered = transport.routes();
            assert_eq!(delivered, vec![path], "linking over {family}");
            let other = if family == v4 { &on_v6 } else { &on_v4 };
            let status = other.link_status(&id).await.expect("status");
            assert_eq!(status.state, lanlink::wire::LinkState::Unknown);
            let status = linker_client.link_status(&id).await.expect("status");
            assert_eq!(status.state, lanlink::wire::LinkState::Linked);
        }
    }
}
