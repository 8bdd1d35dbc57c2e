//! Load: 1,000 agents announcing, discovering and linking at once through one server over
//! loopback HTTP. Every link must complete, and none may cross (linker *i* links agent *i* for
//! account *i*, and no other account sees it linked).
//!
//! Each agent/linker pair is its own "home": a public address given by `X-Forwarded-For` from the
//! loopback peer, which the server trusts as its proxy. Bounded: 1,000 pairs, 120 s.
#![cfg(feature = "http")]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanlink::agent::{Agent, AgentConfig, AgentStatus};
use lanlink::driver::{lock, run_agent, run_linker, DriverConfig};
use lanlink::http::client::{HttpAgentClient, HttpLinkerClient};
use lanlink::http::{self, server::router, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::server::{Server, ServerConfig};
use lanlink::transport::LinkerServerTransport;
use lanlink::wire::LinkState;
use lanlink::{AccountId, DeviceInfo, InstanceId};

const PAIRS: usize = 1000;

fn home(i: usize) -> IpAddr {
    // 198.18.0.0/15 is reserved for benchmarks: 1,000 distinct "public" addresses.
    IpAddr::from([198, 18, (i / 250) as u8, (i % 250) as u8 + 1])
}

fn client_from(home: IpAddr) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        home.to_string()
            .parse()
            .expect("an address is a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_agents_link_concurrently_and_none_cross() {
    let config = ServerConfig::default().trusted_proxies(vec!["127.0.0.0/8".parse().unwrap()]);
    let server = Arc::new(Server::new(config).unwrap());
    let tokens: Vec<(String, AccountId)> = (0..PAIRS)
        .map(|i| {
            (
                format!("token-{i:04}-load-test"),
                AccountId::new(format!("user{i}")).unwrap(),
            )
        })
        .collect();
    let auth = Arc::new(BearerTokens::new(tokens.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let serve_config = ServeConfig {
        max_connections: 8 * PAIRS,
        // Every client connects from 127.0.0.1.
        max_connections_per_client: 8 * PAIRS,
        ..ServeConfig::default()
    };
    tokio::spawn(http::serve(
        listener,
        router(Arc::clone(&server), auth, DEFAULT_PREFIX),
        serve_config,
        std::future::pending(),
    ));

    let started = Instant::now();
    let mut pairs = Vec::new();
    for (i, (token, _)) in tokens.iter().enumerate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let config = AgentConfig::new(at.ip(), at.port(), DeviceInfo::default());
        let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap();
        let id = agent.instance_id();
        let agent = Arc::new(Mutex::new(agent));
        tokio::spawn(http::serve(
            listener,
            http::agent::router(Arc::clone(&agent), DEFAULT_PREFIX),
            ServeConfig::default(),
            std::future::pending(),
        ));
        let agent_client =
            HttpAgentClient::with_client(client_from(home(i)), &base, DEFAULT_PREFIX);
        let agent_task = {
            let agent = Arc::clone(&agent);
            tokio::spawn(async move {
                run_agent(&agent, &agent_client, &DriverConfig::default(), |_| {}).await
            })
        };
        let linker_client = HttpLinkerClient::with_client(
            client_from(home(i)),
            &base,
            DEFAULT_PREFIX,
            DEFAULT_PREFIX,
            token,
        );
        let linker_task = tokio::spawn(async move {
            let mut linker = Linker::without_nonce(LinkerConfig::default(), Instant::now());
            let result = run_linker(
                &mut linker,
                &linker_client,
                &linker_client,
                &DriverConfig::default(),
                |_| None,
                |_| {},
            )
            .await;
            (result, linker_client)
        });
        pairs.push((id, agent, agent_task, linker_task));
    }

    let mut linked = 0;
    let mut clients: Vec<(InstanceId, HttpLinkerClient)> = Vec::new();
    for (i, (id, agent, agent_task, linker_task)) in pairs.into_iter().enumerate() {
        let remaining = Duration::from_secs(120).saturating_sub(started.elapsed());
        let (result, client) = tokio::time::timeout(remaining, linker_task)
            .await
            .expect("bounded in time")
            .unwrap();
        assert_eq!(result, Ok(id), "linker {i} linked its own agent");
        let status = tokio::time::timeout(Duration::from_secs(10), agent_task)
            .await
            .expect("the agent finishes after linking")
            .unwrap();
        assert_eq!(status, AgentStatus::Linked, "agent {i}");
        assert!(lock(&agent).auth_token().is_some());
        linked += 1;
        clients.push((id, client));
    }
    assert_eq!(linked, PAIRS);
    let elapsed = started.elapsed();

    // None crossed: each account sees its own agent linked, and its neighbour's as unknown.
    for (i, (id, client)) in clients.iter().enumerate() {
        let own = client.link_status(id).await.unwrap();
        assert_eq!(own.state, LinkState::Linked, "pair {i}");
        let (other_id, _) = &clients[(i + 1) % PAIRS];
        let other = client.link_status(other_id).await.unwrap();
        assert_eq!(
            other.state,
            LinkState::Unknown,
            "pair {i} must not see {other_id}"
        );
    }
    let links = {
        let server = &*server;
        (0..PAIRS)
            .filter(|&i| {
                let network = server.config().network_of(home(i));
                server.store().network(&network).is_some_and(|record| {
                    record.links().len() == 1
                        && record.links()[0].instance_id == clients[i].0
                        && record.links()[0].account.as_str() == format!("user{i}")
                        && record.links()[0].state == LinkState::Linked
                })
            })
            .count()
    };
    assert_eq!(
        links, PAIRS,
        "one link per home, for its own user and agent"
    );
    eprintln!("{PAIRS} concurrent links over loopback HTTP in {elapsed:.2?}");
}
