//! The full link flow over loopback HTTP against a bare axum handler, in the same run.
//!
//! One link flow is 7 requests (announce, discover, fetch secret, link, announce with delivery,
//! redeem, link status). The figure that matters is the flow's *request rate* as a share of the
//! bare handler's request rate on the same machine, server loop and client: printed at the end as
//! `ratio`. Target: at least 50 %.
//!
//! ```text
//! cargo bench --bench http
//! ```
//!
//! Every resource is set up once and reused, so the bench holds the same amount whatever the
//! number of iterations: one server and one agent endpoint (listener and serve loop), one client
//! per role with its pooled connections. Each flow gets a fresh agent (new instance, secret and
//! presence key) swapped into the endpoint's shared agent, untimed. The server's records stay
//! bounded on their own: a linked agent's presence goes, and the network's used ids are capped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use criterion::{BatchSize, Criterion, Throughput};
use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
use lanlink::driver::{lock, SharedAgent};
use lanlink::http::client::{default_client, HttpAgentClient, HttpLinkerClient};
use lanlink::http::{self, server::router, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::server::{Server, ServerConfig};
use lanlink::transport::{AgentServerTransport, LinkerAgentTransport, LinkerServerTransport};
use lanlink::wire::LinkState;
use lanlink::{AccountId, DeviceInfo};
use tokio::runtime::Runtime;

const TOKEN: &str = "bench-token-0001";
const FLOW_REQUESTS: u64 = 7;

struct World {
    rt: Runtime,
    bare_url: String,
    agent_client: HttpAgentClient,
    linker: HttpLinkerClient,
    plain: reqwest::Client,
    /// The agent behind the one local endpoint; replaced by a fresh one for each flow.
    agent: SharedAgent,
    agent_config: AgentConfig,
}

fn world() -> World {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (base, bare_url) = rt.block_on(async {
        let server = Arc::new(Server::new(ServerConfig::default()).expect("config"));
        let auth = Arc::new(BearerTokens::new(vec![(
            TOKEN.into(),
            AccountId::new("bench").expect("account"),
        )]));
        let app = router(server, auth, DEFAULT_PREFIX).route(
            "/bare",
            get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(http::serve(
            listener,
            app,
            ServeConfig::default(),
            std::future::pending(),
        ));
        (format!("http://{addr}"), format!("http://{addr}/bare"))
    });
    // The agent's local endpoint, once for the whole run.
    let (agent, agent_config) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let at = listener.local_addr().expect("addr");
        let config = AgentConfig::new(at.ip(), at.port(), DeviceInfo::default());
        let agent = Arc::new(Mutex::new(
            Agent::new(config.clone(), Instant::now(), &mut lanlink::os_rng()).expect("agent"),
        ));
        tokio::spawn(http::serve(
            listener,
            http::agent::router(Arc::clone(&agent), DEFAULT_PREFIX),
            ServeConfig::default(),
            std::future::pending(),
        ));
        (agent, config)
    });
    World {
        agent_client: HttpAgentClient::new(&base).expect("client"),
        linker: HttpLinkerClient::new(&base, TOKEN).expect("client"),
        plain: default_client().expect("client"),
        rt,
        bare_url,
        agent,
        agent_config,
    }
}

/// A fresh agent behind the local endpoint (not timed): the one before it is linked and done.
fn new_agent(world: &World) -> Instant {
    let now = Instant::now();
    let agent = Agent::new(world.agent_config.clone(), now, &mut lanlink::os_rng()).expect("agent");
    *lock(&world.agent) = agent;
    now
}

/// One complete link flow: 7 requests.
async fn link_flow(world: &World, start: Instant) {
    let agent = &world.agent;
    let announce = |at: Instant| match lock(agent).poll_transmit(at) {
        Some(AgentTransmit::Announce(a)) => a,
        other => panic!("expected an announcement, got {other:?}"),
    };
    let first = announce(start);
    let reply = world.agent_client.announce(&first).await.expect("announce");
    lock(agent).handle_announce_reply(start, reply);
    let found = world.linker.discover().await.expect("discover");
    let target = &found.agents[0];
    let at = std::net::SocketAddr::new(target.private_ip, target.port);
    let secret = world
        .linker
        .fetch_secret(at, &target.instance_id)
        .await
        .expect("secret");
    let request = lanlink::wire::LinkRequest::new(target.instance_id, secret.local_secret);
    world.linker.link(&request).await.expect("link");
    let later = start + Duration::from_secs(2);
    let second = announce(later);
    let reply = world
        .agent_client
        .announce(&second)
        .await
        .expect("announce");
    lock(agent).handle_announce_reply(later, reply);
    let redeem = match lock(agent).poll_transmit(later) {
        Some(AgentTransmit::Redeem(r)) => r,
        other => panic!("expected a redemption, got {other:?}"),
    };
    let token = world.agent_client.redeem(&redeem).await.expect("redeem");
    lock(agent)
        .handle_redeem_reply(later, Ok(token))
        .expect("redeeming");
    let status = world
        .linker
        .link_status(&target.instance_id)
        .await
        .expect("status");
    assert_eq!(status.state, LinkState::Linked);
}

async fn bare(world: &World) {
    let response = world.plain.get(&world.bare_url).send().await.expect("bare");
    assert!(response.status().is_success());
    let _ = response.bytes().await.expect("body");
}

fn benches(c: &mut Criterion, world: &World) {
    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare_handler_request", |b| {
        b.iter(|| world.rt.block_on(bare(world)))
    });
    group.throughput(Throughput::Elements(FLOW_REQUESTS));
    group.bench_function("link_flow_7_requests", |b| {
        b.iter_batched(
            || new_agent(world),
            |start| world.rt.block_on(link_flow(world, start)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Paired measurement for the printed ratio: alternate rounds of each, same run.
fn ratio(world: &World) {
    let rounds = 5;
    let flows_per_round = 40;
    let (mut flow_time, mut bare_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        for _ in 0..flows_per_round {
            let start = new_agent(world);
            let t = Instant::now();
            world.rt.block_on(link_flow(world, start));
            flow_time += t.elapsed();
        }
        let t = Instant::now();
        for _ in 0..flows_per_round * FLOW_REQUESTS as usize {
            world.rt.block_on(bare(world));
        }
        bare_time += t.elapsed();
    }
    let flow_requests = (rounds * flows_per_round) as f64 * FLOW_REQUESTS as f64;
    let flow_rate = flow_requests / flow_time.as_secs_f64();
    let bare_rate = flow_requests / bare_time.as_secs_f64();
    println!(
        "ratio: link flow {:.0} req/s ({:.0} flows/s) vs bare handler {:.0} req/s = {:.1} % (target >= 50 %)",
        flow_rate,
        flow_rate / FLOW_REQUESTS as f64,
        bare_rate,
        100.0 * flow_rate / bare_rate
    );
}

fn main() {
    let world = world();
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, &world);
    criterion.final_summary();
    ratio(&world);
}
