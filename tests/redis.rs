//! The Redis store against a real `redis-server`, started by each test on a free loopback port.
//!
//! Without `redis-server` on `PATH` each test prints a skip line and passes, except under
//! `CI=true`, where it fails. Server instances are the built `server` example as separate
//! processes when `cargo test` built it (it does for a plain `cargo test --all-features`), else
//! in-process servers, each with its own Redis connection and listener.
#![cfg(all(feature = "redis", feature = "http"))]

mod support;

use support::burst::{burst, code_of, link_burst, patient_linker};
use support::instance::{server_binary, Instance};
use support::redis_server::{have, Redis, RedisNames};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use lanlink::agent::{AgentConfig, AgentStatus};
use lanlink::driver::{run_agent, DriverConfig, SharedAgent};
use lanlink::event::RequestKind;
use lanlink::http::client::{HttpAgentClient, HttpLinkerClient};
use lanlink::http::server::router;
use lanlink::http::{BearerTokens, DEFAULT_PREFIX};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::server::redis::{RedisStore, RedisStoreConfig};
use lanlink::server::{
    Backend, CounterKey, Events, Records, RecordsConfig, Server, ServerConfig, SharedNetworkPolicy,
    StoreKey, User,
};
use lanlink::transport::{AgentServerTransport, LinkerServerTransport, TransportError};
use lanlink::wire::{AgentMessage, Announce, LinkRequest, LinkState, RedeemRequest};
use lanlink::{AccountId, DeviceInfo, InstanceId, LinkCode, LocalSecret, PublicNetwork, Refusal};
use support::linking::link_first;

const TOKEN: &str = "alice-test-token";

fn wall_now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

fn store_key() -> StoreKey {
    StoreKey::from_bytes([7; 32])
}

/// The records in Redis under the instances' key (one connection of their own).
async fn store(redis: &Redis) -> Records<RedisStore> {
    let store = RedisStore::connect(RedisStoreConfig::new(redis.url()))
        .await
        .expect("connect to redis");
    Records::new(store, RecordsConfig::new(store_key()))
}

/// A server over the Redis store (one connection of its own).
async fn service(redis: &Redis, config: ServerConfig) -> Server<Records<RedisStore>> {
    Server::with_store(config, store(redis).await, Events::discard()).expect("config")
}

/// One server instance on Redis (see `support::instance`).
impl Instance {
    async fn start(redis: &Redis) -> Self {
        Self::start_with(redis, 5).await
    }

    async fn start_with(redis: &Redis, lockout_threshold: u32) -> Self {
        let threshold = lockout_threshold.to_string();
        match server_binary() {
            Some(binary) => {
                let args = ["--lockout-threshold", &threshold, "--redis", &redis.url()];
                Self::spawn(&binary, TOKEN, &store_key(), &args)
            }
            None => {
                let config = ServerConfig::default().lockout_threshold(lockout_threshold);
                let service = service(redis, config).await;
                let alice = AccountId::new("alice").expect("account");
                let auth = Arc::new(BearerTokens::new(vec![(TOKEN.to_owned(), alice)]));
                Self::serve(router(Arc::new(service), auth, DEFAULT_PREFIX)).await
            }
        }
    }
}

async fn start_agent(name: &str) -> (SharedAgent, SocketAddr) {
    support::net::start_agent(|addr| {
        let info = DeviceInfo::new(name, "test", "lanlink-test", "0.1.0").expect("info");
        AgentConfig::new(addr.ip(), addr.port(), info).window(Duration::from_secs(120))
    })
    .await
}

fn quick_driver() -> DriverConfig {
    DriverConfig {
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(500),
        max_attempts: 40,
    }
}

/// An announcement with known keys (`n` picks them).
fn announcement(n: u32) -> (Announce, LocalSecret) {
    support::announcement(n, "192.168.1.50")
}

fn network(text: &str) -> PublicNetwork {
    PublicNetwork::from_ip(text.parse().expect("ip"), 64)
}

/// Two server instances (processes) share one Redis: the agent announces to and redeems with
/// the first; the linker discovers, links and polls through the second; both end linked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_on_one_instance_linker_on_another() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let first = Instance::start(&redis).await;
    let second = Instance::start(&redis).await;
    assert_ne!(first.base(), second.base());

    let (agent, _) = start_agent("printer-1").await;
    let agent_task = {
        let agent = Arc::clone(&agent);
        let transport = HttpAgentClient::new(&first.base()).expect("client");
        tokio::spawn(async move { run_agent(&agent, &transport, &quick_driver(), |_| {}).await })
    };
    let client = HttpLinkerClient::new(&second.base(), TOKEN).expect("client");
    let mut linker = Linker::without_nonce(LinkerConfig::default(), Instant::now());
    let linked = tokio::time::timeout(
        Duration::from_secs(30),
        link_first(&mut linker, &client, &quick_driver(), |_| {}),
    )
    .await
    .expect("the linker finishes");
    let instance_id = linked.expect("linked through the second instance");
    let status = tokio::time::timeout(Duration::from_secs(30), agent_task)
        .await
        .expect("the agent finishes")
        .expect("agent task");
    assert_eq!(status, AgentStatus::Linked);
    // The link's state is readable on either instance.
    for instance in [&first, &second] {
        let client = HttpLinkerClient::new(&instance.base(), TOKEN).expect("client");
        let reply = client.link_status(&instance_id).await.expect("status");
        assert_eq!(reply.state, LinkState::Linked);
    }
}

/// The one-visible rule and the lockout hold across instances: two agents announcing to two
/// instances hide each other on both; failures counted on either instance lock the network out
/// on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_visible_and_lockout_across_instances() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let instances = [Instance::start(&redis).await, Instance::start(&redis).await];
    let agents: Vec<HttpAgentClient> = instances
        .iter()
        .map(|i| HttpAgentClient::new(&i.base()).expect("client"))
        .collect();
    let linkers: Vec<HttpLinkerClient> = instances
        .iter()
        .map(|i| HttpLinkerClient::new(&i.base(), TOKEN).expect("client"))
        .collect();
    let (x, x_secret) = announcement(1);
    let (y, _) = announcement(2);
    agents[0]
        .announce(&x)
        .await
        .expect("x announces to the first");
    assert_eq!(
        linkers[1].discover().await.expect("discover").agents.len(),
        1,
        "one agent: the second instance shows it"
    );
    agents[1]
        .announce(&y)
        .await
        .expect("y announces to the second");
    for linker in &linkers {
        assert!(
            linker.discover().await.expect("discover").agents.is_empty(),
            "two agents: neither instance shows any"
        );
    }
    let right = LinkRequest::new(x.instance_id, x_secret.clone());
    let err = linkers[1].link(&right).await.unwrap_err();
    assert_eq!(code_of(&err), Some((409, "too_many_agents")));

    // Five guesses at unknown agents, alternating instances, lock the network out on both.
    for n in 0..5u8 {
        let guess = LinkRequest::new(
            InstanceId::from_bytes([n + 100; 16]),
            LocalSecret::from_bytes([n; 32]),
        );
        let err = linkers[usize::from(n % 2)].link(&guess).await.unwrap_err();
        assert_eq!(code_of(&err), Some((404, "agent_not_found")));
    }
    for linker in &linkers {
        let err = linker.link(&right).await.unwrap_err();
        assert_eq!(code_of(&err), Some((429, "locked_out")));
    }
}

/// 200 parallel failed guesses over HTTP, split between two server processes on one Redis: each
/// answered `wrong_secret` is in the network's failure count, none lost (a `store_contention`
/// answer, if any, was not counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failures_over_two_processes() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let instances = [
        Instance::start_with(&redis, 10_000).await,
        Instance::start_with(&redis, 10_000).await,
    ];
    let (x, _) = announcement(1);
    HttpAgentClient::new(&instances[0].base())
        .expect("client")
        .announce(&x)
        .await
        .expect("announce");
    // A debug build on a shared machine may take a while under this load: a patient client.
    let patient = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .no_proxy()
        .build()
        .expect("client");
    let linkers: Arc<Vec<HttpLinkerClient>> = Arc::new(
        instances
            .iter()
            .map(|i| {
                let (base, prefix) = (i.base(), DEFAULT_PREFIX);
                HttpLinkerClient::with_client(patient.clone(), &base, prefix, prefix, TOKEN)
            })
            .collect(),
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..200u32)
        .map(|n| {
            let linkers = Arc::clone(&linkers);
            tokio::spawn(async move {
                let guess =
                    LinkRequest::new(x_id(), LocalSecret::from_bytes([(n % 250) as u8 + 3; 32]));
                linkers[(n % 2) as usize].link(&guess).await
            })
        })
        .collect();
    let (mut wrong, mut contention) = (0, 0);
    for task in tasks {
        let err = task.await.expect("task").unwrap_err();
        match code_of(&err) {
            Some((403, "wrong_secret")) => wrong += 1,
            Some((503, "store_contention")) => contention += 1,
            _ => panic!("unexpected {err:?}"),
        }
    }
    assert_eq!(wrong + contention, 200);
    println!(
        "200 parallel guesses over HTTP on two processes: {:?}, {contention} gave up under contention",
        started.elapsed()
    );
    let failures = failures_of(&store(&redis).await, network("127.0.0.1")).await;
    assert_charged(failures, wrong, contention);
}

fn lockout_config(threshold: u32) -> ServerConfig {
    ServerConfig::default()
        .lockout_threshold(threshold)
        .max_agents_per_network(1024)
        .max_visible(1)
}

/// 200 concurrent failed guesses on one network, through two services with separate
/// connections: every one is counted (no lost update), or refused as contention and then not
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failures_are_counted_exactly() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let config = lockout_config(10_000);
    let services = Arc::new([
        service(&redis, config.clone()).await,
        service(&redis, config.clone()).await,
    ]);
    let peer = "203.0.113.7".parse().expect("ip");
    let (x, _) = announcement(1);
    services[0]
        .announce(wall_now(), network("203.0.113.7"), &x)
        .await
        .expect("announce");
    let tasks = guess_burst(&services, peer);
    let (mut wrong, mut contention) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Err(Refusal::WrongSecret) => wrong += 1,
            Err(Refusal::Store(lanlink::server::StoreError::Contention)) => contention += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wrong + contention, 200);
    let failures = failures_of(services[1].store(), network("203.0.113.7")).await;
    assert_charged(failures, wrong, contention);
}

/// The link status of `x`'s instance for `account`, asked from `peer`.
async fn link_status(
    service: &Server<Records<RedisStore>>,
    peer: std::net::IpAddr,
    account: &AccountId,
    x: &Announce,
) -> lanlink::wire::LinkStatusReply {
    let caller = service
        .caller(
            RequestKind::LinkStatus,
            peer,
            lanlink::ForwardedHeaders::NONE,
        )
        .expect("a public peer");
    service
        .link_status(wall_now(), caller, account, &x.instance_id)
        .await
        .expect("status")
}

/// 200 concurrent wrong guesses by alice from `peer` at the secret of `x_id()`, split over the
/// two `services`: one task each.
fn guess_burst(
    services: &Arc<[Server<Records<RedisStore>>; 2]>,
    peer: std::net::IpAddr,
) -> Vec<tokio::task::JoinHandle<Result<lanlink::wire::LinkStatusReply, Refusal>>> {
    let alice = AccountId::new("alice").expect("account");
    (0..200u32)
        .map(|n| {
            let services = Arc::clone(services);
            let alice = alice.clone();
            tokio::spawn(async move {
                let guess =
                    LinkRequest::new(x_id(), LocalSecret::from_bytes([(n % 250) as u8 + 3; 32]));
                let service = &services[(n % 2) as usize];
                let network =
                    service.caller(RequestKind::Link, peer, lanlink::ForwardedHeaders::NONE)?;
                let user = User::new(alice);
                service
                    .link(wall_now(), &mut lanlink::os_rng(), network, &user, guess)
                    .await
            })
        })
        .collect()
}

/// The wrong guesses charged at `network`'s own address (its finest budget level), read from
/// the store.
async fn failures_of(store: &dyn Backend, network: PublicNetwork) -> u64 {
    let now = wall_now();
    let mut failures = 0;
    store
        .update_counter(&CounterKey::network(&network), now, &mut |record| {
            failures = record.live(now.timestamp_millis());
        })
        .await
        .expect("read");
    failures
}

/// Every wrong guess stays charged (no lost update); a guess refused for contention after its
/// charge was written keeps it (fail closed), one refused before has none.
#[track_caller]
fn assert_charged(failures: u64, wrong: usize, contention: usize) {
    let (failures, wrong, contention) = (failures as usize, wrong, contention);
    assert!(
        (wrong..=wrong + contention).contains(&failures),
        "{failures} charged for {wrong} wrong guesses and {contention} contended"
    );
    assert!(wrong >= 190, "contention stays rare ({contention} of 200)");
}

fn x_id() -> InstanceId {
    announcement(1).0.instance_id
}

/// 32 agents announce at once to one network through two services: all are present (each
/// write carries every presence, so this many agents on one network is already a large record).
/// Then 200 concurrent guesses with the default threshold: the network ends locked on both
/// services, nothing was accepted, and the right secret is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_announces_all_land_and_lockout_holds() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    // Presences live a minute here: 200 writers on one record take seconds in a debug build,
    // and each operation's `now` is taken when it starts.
    let config = lockout_config(5)
        .max_visible(1)
        .presence_ttl(Duration::from_secs(60));
    let started = Instant::now();
    let services = Arc::new([
        service(&redis, config.clone()).await,
        service(&redis, config.clone()).await,
    ]);
    let home = network("198.51.100.9");
    const AGENTS: usize = 32;
    let tasks: Vec<_> = (0..AGENTS as u32)
        .map(|n| {
            let services = Arc::clone(&services);
            tokio::spawn(async move {
                let (announce, _) = announcement(1000 + n);
                services[(n % 2) as usize]
                    .announce(wall_now(), home, &announce)
                    .await
            })
        })
        .collect();
    let mut contention = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => {}
            Err(Refusal::Store(lanlink::server::StoreError::Contention)) => contention += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let mut present = 0;
    println!(
        "{AGENTS} concurrent announces on one network: {:?}",
        started.elapsed()
    );
    services[0]
        .store()
        .update_network(home, wall_now(), &config, false, &mut |r| {
            present = r.present(wall_now());
        })
        .await
        .expect("read");
    assert_eq!(present + contention, AGENTS, "no announcement lost");
    assert_eq!(contention, 0, "no announcement gave up");

    // Lockout under load, on another network with one agent.
    let away = network("192.0.2.1");
    let peer = "192.0.2.1".parse().expect("ip");
    let (x, secret) = announcement(1);
    services[0]
        .announce(wall_now(), away, &x)
        .await
        .expect("announce");
    let tasks = guess_burst(&services, peer);
    for task in tasks {
        match task.await.expect("task") {
            // A guess admitted before the lockout and checked after it finds the network marked
            // shared by its failures: refused unchecked as well.
            Err(
                Refusal::WrongSecret
                | Refusal::LockedOut
                | Refusal::SharedNetwork
                | Refusal::Store(lanlink::server::StoreError::Contention),
            ) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    for service in services.iter() {
        let right = LinkRequest::new(x.instance_id, secret.clone());
        let network = service
            .caller(RequestKind::Link, peer, lanlink::ForwardedHeaders::NONE)
            .expect("a public peer");
        let user = User::new(AccountId::new("alice").expect("account"));
        let refused = service
            .link(wall_now(), &mut lanlink::os_rng(), network, &user, right)
            .await;
        // Refused before the secret is looked at: by the lockout, or by the `failures` mark
        // the lockout wrote (a guess refused `shared_network` is no guess, so its refund may lift
        // the lock while the mark stands).
        let refused = refused.unwrap_err();
        assert!(
            matches!(refused, Refusal::LockedOut | Refusal::SharedNetwork),
            "{refused:?}"
        );
    }
}

/// Redis killed mid-flow (after the link was accepted, before the agent collected its message):
/// every request answers 503 `store_unavailable`, nothing panics; once Redis is back (with its
/// data), the agent collects the message, redeems, and the linker reads `Linked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_flow() {
    if !have("redis-server") {
        return;
    }
    let mut redis = Redis::start();
    let first = Instance::start(&redis).await;
    let second = Instance::start(&redis).await;
    let agent_client = HttpAgentClient::new(&first.base()).expect("client");
    let linker = HttpLinkerClient::new(&second.base(), TOKEN).expect("client");

    let (x, secret) = announcement(1);
    let x = {
        let mut m = x;
        m.private_ip = "127.0.0.1".parse().expect("ip");
        m
    };
    agent_client.announce(&x).await.expect("announce");
    assert_eq!(linker.discover().await.expect("discover").agents.len(), 1);
    let request = LinkRequest::new(x.instance_id, secret.clone());
    let pending = linker.link(&request).await.expect("link accepted");
    assert_eq!(pending.state, LinkState::Pending);

    redis.kill();
    // Each answers 503 promptly: a command to a Redis that refuses connections fails in about
    // half a second (the client's reconnection attempts), and a refused write applied nothing,
    // so there is nothing to read back. (An outage longer than the presence's 6 s lifetime
    // would lose the pending link: the agent cannot announce meanwhile.)
    let prompt = |what: &str, started: Instant| {
        let took = started.elapsed();
        println!("Redis down: {what} answered in {took:?}");
        assert!(
            took < Duration::from_secs(2),
            "{what} took {took:?} to answer"
        );
    };
    let started = Instant::now();
    let announce = agent_client.announce(&x).await.map(|_| ());
    prompt("announce", started);
    let started = Instant::now();
    let discover = linker.discover().await.map(|_| ());
    prompt("discover", started);
    let started = Instant::now();
    let status = linker.link_status(&x.instance_id).await.map(|_| ());
    prompt("link status", started);
    let started = Instant::now();
    let mint = linker.mint_code().await.map(|_| ());
    prompt("mint", started);
    let started = Instant::now();
    let link = linker.link(&request).await.map(|_| ());
    prompt("link", started);
    let down = [announce, discover, status, mint, link];
    for result in &down {
        let err = result.as_ref().unwrap_err();
        assert_eq!(code_of(err), Some((503, "store_unavailable")), "{err:?}");
        assert!(err.is_retryable());
    }

    redis.restart();
    // The connection comes back by itself; the agent's next announcement collects the message.
    let reply = retry(|| agent_client.announce(&x)).await;
    let [AgentMessage::VerifyAndRedeem {
        instance_id,
        local_secret,
        code,
        ..
    }] = reply.messages.as_slice()
    else {
        panic!("one message expected, got {}", reply.messages.len());
    };
    assert_eq!(*instance_id, x.instance_id);
    assert!(local_secret.ct_eq(&secret));
    let redeem = RedeemRequest::new(x.instance_id, code.clone());
    agent_client.redeem(&redeem).await.expect("redeemed");
    let status = linker.link_status(&x.instance_id).await.expect("status");
    assert_eq!(status.state, LinkState::Linked);
    // Single use still holds after the restart.
    let again = agent_client.redeem(&redeem).await.unwrap_err();
    assert_eq!(code_of(&again), Some((403, "invalid_code")));
}

async fn retry<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TransportError>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(err) if err.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("still failing after the restart: {err:?}"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// After a full link (and while a secret and code wait for the agent), no key or value in Redis
/// holds the secret, the presence key, a code (or its unkeyed hash), the token, the account or the
/// network in clear; and a server with another store key cannot read the records (it refuses
/// with `store_unavailable`, no panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_in_redis_in_clear() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let service = service(&redis, ServerConfig::default()).await;
    let peer = "203.0.113.77".parse().expect("ip");
    let home = network("203.0.113.77");
    let alice = AccountId::new("alice-at-rest").expect("account");
    let (x, secret) = announcement(42);
    let mut rng = lanlink::os_rng();
    let none = lanlink::ForwardedHeaders::NONE;
    service
        .announce(wall_now(), home, &x)
        .await
        .expect("announce");
    let request = LinkRequest::new(x.instance_id, secret.clone());
    let caller = service
        .caller(RequestKind::Link, peer, none)
        .expect("a public peer");
    service
        .link(
            wall_now(),
            &mut rng,
            caller,
            &User::new(alice.clone()),
            request,
        )
        .await
        .expect("link");
    let manual = service
        .mint_code(wall_now(), &mut rng, &alice)
        .await
        .expect("mint");
    let pending_dump = redis.dump();
    let reply = service
        .announce(wall_now(), home, &x)
        .await
        .expect("announce");
    let Some(AgentMessage::VerifyAndRedeem { code, .. }) = reply.messages.first() else {
        panic!("the message");
    };
    let redeemed = service
        .redeem(
            wall_now(),
            &mut rng,
            home,
            &RedeemRequest::new(x.instance_id, code.clone()),
        )
        .await
        .expect("redeem");
    let linked_dump = redis.dump();
    assert!(pending_dump.len() >= 3, "network, auto code, manual code");

    let token = redeemed.reply.auth_token.to_hex();
    let secret_hex = secret.to_hex();
    let key_hex = x.presence_key.to_hex();
    let forbidden: Vec<(&str, Vec<u8>)> = vec![
        ("secret", unhex(&secret_hex)),
        ("secret hex", secret_hex.as_bytes().to_vec()),
        ("presence key", unhex(&key_hex)),
        ("presence key hex", key_hex.as_bytes().to_vec()),
        ("token", unhex(&token)),
        ("auto code", code.expose().as_bytes().to_vec()),
        ("auto code hash", code.key().as_bytes().to_vec()),
        (
            "auto code hash hex",
            hex(code.key().as_bytes()).into_bytes(),
        ),
        ("manual code", manual.code.expose().as_bytes().to_vec()),
        ("manual code hash", manual.code.key().as_bytes().to_vec()),
        (
            "manual code hash hex",
            hex(manual.code.key().as_bytes()).into_bytes(),
        ),
        ("token hex", token.as_bytes().to_vec()),
        ("account", b"alice-at-rest".to_vec()),
        ("network", b"203.0.113.77".to_vec()),
        ("instance id", x.instance_id.to_string().into_bytes()),
    ];
    for (key, value) in pending_dump.iter().chain(&linked_dump) {
        for (what, needle) in &forbidden {
            assert!(!contains(key.as_bytes(), needle), "{what} in key {key}");
            assert!(!contains(value, needle), "{what} in the value of {key}");
        }
    }

    // Another store key reads nothing: refused, typed, no panic.
    let other = RedisStore::connect(RedisStoreConfig::new(redis.url()))
        .await
        .expect("connect");
    let other = Records::new(other, RecordsConfig::new(StoreKey::from_bytes([8; 32])));
    let other =
        Server::with_store(ServerConfig::default(), other, Events::discard()).expect("config");
    let (y, _) = announcement(43);
    // Another key also names the records differently: it sees an empty network, never this one.
    assert!(other.announce(wall_now(), home, &y).await.is_ok());
    // A value copied under another key name does not decrypt there.
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let ours = store(&redis).await;
    let (_, value) = linked_dump
        .iter()
        .find(|(k, _)| *k == ours.network_name(&home))
        .expect("the network's record");
    let elsewhere = network("192.0.2.200");
    let _: () = redis::cmd("SET")
        .arg(ours.network_name(&elsewhere))
        .arg(value.as_slice())
        .query(&mut conn)
        .expect("set");
    let moved = service.announce(wall_now(), elsewhere, &y).await;
    // The server knows the record is unreadable (its audit says `store_corrupt`); the wire
    // says only `store_unavailable`.
    let refused = moved.unwrap_err();
    assert_eq!(refused.code().as_str(), "store_unavailable");
    assert_eq!(refused.detail(), "store_corrupt");
    assert_eq!(
        refused,
        Refusal::Store(lanlink::server::StoreError::Corrupt)
    );
}

/// A queued `{secret, code}` lives in Redis under its own key, expiring with the message: once
/// it lapses undelivered it is gone from Redis even though no server touched the network (whose
/// record lives on for its used instance ids), and the link is over, as in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_message_expires_in_redis() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let config = ServerConfig::default().message_ttl(Duration::from_secs(1));
    let service = service(&redis, config).await;
    let keys = store(&redis).await;
    let peer = "203.0.113.5".parse().expect("ip");
    let home = network("203.0.113.5");
    let alice = AccountId::new("alice").expect("account");
    let (x, secret) = announcement(5);
    let none = lanlink::ForwardedHeaders::NONE;
    service
        .announce(wall_now(), home, &x)
        .await
        .expect("announce");
    let request = LinkRequest::new(x.instance_id, secret);
    let caller = service
        .caller(RequestKind::Link, peer, none)
        .expect("a public peer");
    service
        .link(
            wall_now(),
            &mut lanlink::os_rng(),
            caller,
            &User::new(alice.clone()),
            request,
        )
        .await
        .expect("link");
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let ttl = |conn: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("PTTL").arg(key).query(conn).expect("pttl")
    };
    let message_ttl = ttl(&mut conn, &keys.messages_name(&home));
    assert!(
        (1..=1000).contains(&message_ttl),
        "message key expires with the message: {message_ttl}"
    );
    assert!(
        ttl(&mut conn, &keys.network_name(&home)) > 3_600_000,
        "the record keeps used ids"
    );
    let status = link_status(&service, peer, &alice, &x).await;
    assert_eq!(status.state, LinkState::Pending);

    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        ttl(&mut conn, &keys.messages_name(&home)),
        -2,
        "the message is gone"
    );
    assert!(
        ttl(&mut conn, &keys.network_name(&home)) > 0,
        "the record is not"
    );
    let status = link_status(&service, peer, &alice, &x).await;
    assert_eq!(
        status.state,
        LinkState::Unknown,
        "the undelivered link is over"
    );
    let reply = service
        .announce(wall_now(), home, &x)
        .await
        .expect("announce");
    assert!(reply.messages.is_empty(), "nothing to deliver");
}

/// Discovery, the most frequent request, is one `GET`: it writes nothing (a write would re-seal
/// the record under a fresh nonce, changing its bytes) and shows exactly what the last write left.
/// Without the shared-network judgement every discovery is such a read; with it (the default),
/// every one but an account's first from a network in a window is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_is_one_read_and_writes_nothing() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let store = Arc::new(store(&redis).await);
    // No discoverers counted: the plain read an unauthenticated discovery used to be.
    let uncounted = ServerConfig::default().shared_network(SharedNetworkPolicy::disabled());
    let service = Server::with_store(uncounted, store.clone(), Events::discard()).expect("config");
    let peer = "203.0.113.6".parse().expect("ip");
    let home = network("203.0.113.6");
    let none = lanlink::ForwardedHeaders::NONE;
    let (x, _secret) = announcement(6);
    service
        .announce(wall_now(), home, &x)
        .await
        .expect("announce");
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let value = |conn: &mut redis::Connection| -> Vec<u8> {
        redis::cmd("GET")
            .arg(store.network_name(&home))
            .query(conn)
            .expect("get")
    };
    let before = value(&mut conn);
    let trips = store.store().round_trips();
    let caller = service
        .caller(RequestKind::Discover, peer, none)
        .expect("a public peer");
    let alice = User::new(AccountId::new("alice").expect("account"));
    let reply = service
        .discover(wall_now(), caller, &alice)
        .await
        .expect("discover");
    assert_eq!(store.store().round_trips() - trips, 1, "one round trip");
    assert_eq!(value(&mut conn), before, "nothing written");
    assert_eq!(reply.agents.len(), 1);
    assert_eq!(reply.agents[0].instance_id, x.instance_id);
    // Another network's discovery finds nothing, also in one read.
    let trips = store.store().round_trips();
    let elsewhere = service
        .caller(
            RequestKind::Discover,
            "198.51.100.9".parse().expect("ip"),
            none,
        )
        .expect("a public peer");
    let other = service
        .discover(wall_now(), elsewhere, &alice)
        .await
        .expect("discover");
    assert!(other.agents.is_empty());
    assert_eq!(store.store().round_trips() - trips, 1);

    // Counting discoverers (the default): an account's first discovery from the network writes
    // it down once; its next ones in the window are one read again, and write nothing.
    let counting = Server::with_store(ServerConfig::default(), store.clone(), Events::discard())
        .expect("config");
    let bob = User::new(AccountId::new("bob").expect("account"));
    let first = counting
        .discover(wall_now(), caller, &bob)
        .await
        .expect("discover");
    assert_eq!(first.agents.len(), 1);
    let before = value(&mut conn);
    let trips = store.store().round_trips();
    let again = counting
        .discover(wall_now(), caller, &bob)
        .await
        .expect("discover");
    assert_eq!(store.store().round_trips() - trips, 1, "one round trip");
    assert_eq!(value(&mut conn), before, "nothing written");
    assert_eq!(again.agents.len(), 1);
    assert_eq!(again.agents[0].instance_id, x.instance_id);
}

/// An update of a record this instance wrote last takes one round trip (the compare-and-swap,
/// against the remembered version); after another instance wrote it, three (the refused swap,
/// a load, the swap), and the change lands on the current record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_record_updates_in_one_round_trip() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let (mine, other) = (Arc::new(store(&redis).await), Arc::new(store(&redis).await));
    let key = CounterKey::network(&network("203.0.113.9"));
    let charge = |store: &Arc<Records<RedisStore>>| {
        let store = store.clone();
        let key = key.clone();
        async move {
            let now = wall_now();
            let now_ms = now.timestamp_millis();
            let trips = store.store().round_trips();
            store
                .update_counter(&key, now, &mut |record| {
                    let _ = record.admit(now_ms, now_ms + 600_000, 100, None);
                })
                .await
                .expect("charge");
            store.store().round_trips() - trips
        }
    };
    assert_eq!(charge(&mine).await, 2, "first touch: read, then swap");
    assert_eq!(charge(&mine).await, 1, "remembered: the swap alone");
    assert_eq!(charge(&other).await, 2);
    // A store's swap answers only whether it applied (the script's refusal used to carry the
    // current value, saving the load): refused, loaded, swapped.
    assert_eq!(charge(&mine).await, 3, "stale: refused, then load and swap");
    assert_eq!(charge(&mine).await, 1);
    assert_eq!(failures_of(&other, network("203.0.113.9")).await, 5);
}

/// 300 concurrent redemptions from one address over HTTP on two processes sharing Redis, the
/// victim's right manual code at a random place in the burst: at most the threshold (5) are
/// checked, whatever the interleaving across the two instances; a right code after them is
/// refused (`locked_out`), and one among them links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redemption_burst_over_two_processes_checks_at_most_the_threshold() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let instances = [Instance::start(&redis).await, Instance::start(&redis).await];
    let linker = patient_linker(&instances[1].base(), TOKEN);
    let right = linker.mint_code().await.expect("mint").code;
    let agents: Arc<Vec<HttpAgentClient>> = Arc::new(
        instances
            .iter()
            .map(|i| HttpAgentClient::new(&i.base()).expect("client"))
            .collect(),
    );
    let tally = burst(300, |n, is_right| {
        let agents = Arc::clone(&agents);
        let code = if is_right {
            right.clone()
        } else {
            LinkCode::parse(&format!("{:06}", n * 3331 % 1_000_000)).expect("code")
        };
        async move {
            let request = RedeemRequest::new(announcement(7).0.instance_id, code);
            agents[n % 2].redeem(&request).await.map(|_| ())
        }
    })
    .await;
    tally.assert_wrong_checked_at_most("redemption burst over two processes", 5);
}

/// The same for link requests (secrets): 300 concurrent guesses at an announced agent's secret
/// over two processes, the right secret at a random place: at most 5 checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_burst_over_two_processes_checks_at_most_the_threshold() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let instances = [Instance::start(&redis).await, Instance::start(&redis).await];
    let bases = instances.each_ref().map(Instance::base);
    let tally = link_burst(&bases, TOKEN, announcement(1), 300).await;
    tally.assert_wrong_checked_at_most("link burst over two processes", 5);
}

/// Dual stack on a shared store: one agent present in an IPv4 and an IPv6 network, two server
/// processes, and its owner's two browsers linking it at once, one from each network, each
/// through its own process. In every round exactly one link is accepted; the other is refused
/// `already_linking` (the instance claim, created in one atomic step on Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_agent_links_once_when_both_networks_race() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let (first, second) = (
        Arc::new(service(&redis, ServerConfig::default()).await),
        Arc::new(service(&redis, ServerConfig::default()).await),
    );
    let alice = AccountId::new("alice").expect("account");
    for n in 0..20 {
        // A home of its own each round (one agent per network is shown; the refused link is
        // charged, and homes in distinct /48s keep that off one budget).
        let (v4, v6): (std::net::IpAddr, std::net::IpAddr) = (
            format!("203.0.113.{n}").parse().expect("ip"),
            format!("2001:db8:{n}:1::20").parse().expect("ip"),
        );
        let (x, secret) = announcement(1000 + n);
        let now = wall_now();
        for from in [v4, v6] {
            let network = first
                .caller(RequestKind::Announce, from, lanlink::ForwardedHeaders::NONE)
                .expect("a public peer");
            first.announce(now, network, &x).await.expect("announce");
        }
        let link = |service: Arc<Server<Records<RedisStore>>>, from: std::net::IpAddr| {
            let (alice, secret, id) = (alice.clone(), secret.clone(), x.instance_id);
            tokio::spawn(async move {
                let request = LinkRequest::new(id, secret);
                let network =
                    service.caller(RequestKind::Link, from, lanlink::ForwardedHeaders::NONE)?;
                service
                    .link(
                        now,
                        &mut lanlink::os_rng(),
                        network,
                        &User::new(alice),
                        request,
                    )
                    .await
            })
        };
        let (a, b) = (link(Arc::clone(&first), v4), link(Arc::clone(&second), v6));
        let outcomes = [a.await.expect("task"), b.await.expect("task")];
        let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(accepted, 1, "round {n}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .any(|o| o.as_ref().err() == Some(&Refusal::AlreadyLinking)),
            "round {n}: {outcomes:?}"
        );
    }
}

/// Revision 1.3: a presence's candidates go through Redis (encrypted with the rest of the
/// record) and come back in order; a later announcement by the agent replaces them, one
/// without the key is refused; a second server instance's discovery shows what the first
/// recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_round_trip_through_redis() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let first = service(&redis, ServerConfig::default()).await;
    let second = service(&redis, ServerConfig::default()).await;
    let peer = "203.0.113.8".parse().expect("ip");
    let home = network("203.0.113.8");
    let none = lanlink::ForwardedHeaders::NONE;
    let (mut x, _secret) = announcement(8);
    x.candidates = vec![
        "10.0.0.5:8080".parse().expect("addr"),
        "[fe80::5]:8080".parse().expect("addr"),
    ];
    first
        .announce(wall_now(), home, &x)
        .await
        .expect("announce");
    let anyone = User::new(AccountId::new("anyone").expect("account"));
    let caller = second
        .caller(RequestKind::Discover, peer, none)
        .expect("a public peer");
    let reply = second
        .discover(wall_now(), caller, &anyone)
        .await
        .expect("discover");
    assert_eq!(reply.agents.len(), 1);
    assert_eq!(reply.agents[0].candidates, x.candidates);
    // The agent moves: its new candidates replace the old ones.
    let mut moved = x.clone();
    moved.candidates = vec!["192.168.7.9:8080".parse().expect("addr")];
    second
        .announce(wall_now(), home, &moved)
        .await
        .expect("announce");
    let mut forged = moved.clone();
    forged.candidates = vec!["10.6.6.6:8080".parse().expect("addr")];
    forged.presence_key = lanlink::secret::PresenceKey::from_bytes([0x66; 32]);
    assert_eq!(
        first.announce(wall_now(), home, &forged).await.unwrap_err(),
        Refusal::ForgedInstance
    );
    let caller = first
        .caller(RequestKind::Discover, peer, none)
        .expect("a public peer");
    let reply = first
        .discover(wall_now(), caller, &anyone)
        .await
        .expect("discover");
    assert_eq!(reply.agents[0].candidates, moved.candidates);
}

/// Dual stack on a shared store, with a link that fails after claiming: one server instance
/// takes a link from the agent's IPv4 network, claims the instance, and before its accepting
/// write the agent's announcement through the other instance changes the presence (another
/// commitment: contested), so the re-check refuses the link. Its claim is let go in Redis (the
/// key deleted, with the link's unused code), and the IPv6 network's link through the other
/// instance is accepted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_link_lets_go_of_its_claim_in_redis() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let codes = || {
        redis
            .dump()
            .iter()
            .filter(|(key, _)| key.contains(":code:"))
            .count()
    };
    support::failed_link::a_failed_link_lets_go_of_its_claim(
        store(&redis).await,
        store(&redis).await,
        announcement(7),
        Some(&codes),
    )
    .await;
}

/// The store over bytes on one Redis node: one round trip per `GET`, `MGET` and swap; a swap
/// compares whole values (absent expected: the key must hold nothing), writes all or nothing,
/// deletes on an empty new value, sets the Redis expiry to the write's, and answers applied
/// when sent again after it applied; key names carry the slot as hash tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_over_bytes_on_one_node() {
    use lanlink::server::{Key, Store, Write};
    if !have("redis-server") {
        return;
    }
    let mut redis = Redis::start();
    let config = RedisStoreConfig::new(redis.url()).prefix("bytes");
    let store = RedisStore::connect(config).await.expect("connect");
    let net = Key::new("net", "0a1b").expect("key");
    let msg = Key::new("msg", "0a1b").expect("key");
    assert_eq!(store.redis_key(&net), "bytes:net:{0a1b}");
    assert_eq!(store.redis_key(&msg), "bytes:msg:{0a1b}");
    // A minute away, half a microsecond past a millisecond: Redis keeps it a millisecond more.
    let at = DateTime::from_timestamp_millis(wall_now().timestamp_millis() + 60_000).expect("time")
        + chrono::Duration::nanoseconds(500);
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let pexpiretime = |conn: &mut redis::Connection, key: &Key| -> i64 {
        redis::cmd("PEXPIRETIME")
            .arg(store.redis_key(key))
            .query(conn)
            .expect("pexpiretime")
    };

    let trips = store.round_trips();
    assert_eq!(store.load(&net).await, Ok(None));
    assert_eq!(store.round_trips() - trips, 1, "a load is one GET");
    let create = [
        Write::new(&net, None, Some((b"net-1", at))),
        Write::new(
            &msg,
            None,
            Some((b"msg-1", at + chrono::Duration::seconds(1))),
        ),
    ];
    let trips = store.round_trips();
    assert_eq!(store.swap(&create).await, Ok(true));
    assert_eq!(store.round_trips() - trips, 1, "a swap is one script");
    assert_eq!(pexpiretime(&mut conn, &net), at.timestamp_millis() + 1);
    assert_eq!(
        pexpiretime(&mut conn, &msg),
        (at + chrono::Duration::seconds(1)).timestamp_millis() + 1
    );
    // Sent again after it applied (its reply lost): answered applied, nothing written.
    assert_eq!(store.swap(&create).await, Ok(true));
    assert_eq!(pexpiretime(&mut conn, &net), at.timestamp_millis() + 1);
    let trips = store.round_trips();
    assert_eq!(
        store.load_many(&[&net, &msg]).await,
        Ok(vec![Some(b"net-1".to_vec()), Some(b"msg-1".to_vec())])
    );
    assert_eq!(store.round_trips() - trips, 1, "one MGET");

    // All or nothing: the second key does not hold what is expected, so neither is written.
    let wrong = [
        Write::new(&net, Some(b"net-1"), Some((b"net-2", at))),
        Write::new(&msg, Some(b"msg-0"), Some((b"msg-2", at))),
    ];
    assert_eq!(store.swap(&wrong).await, Ok(false));
    // Whole values: a prefix of the value held is not the value held; absent is not empty.
    let prefix = [Write::new(&net, Some(b"net"), Some((b"net-2", at)))];
    assert_eq!(store.swap(&prefix).await, Ok(false));
    let absent = [Write::new(&net, None, Some((b"net-2", at)))];
    assert_eq!(store.swap(&absent).await, Ok(false));
    assert_eq!(
        store.load_many(&[&net, &msg]).await,
        Ok(vec![Some(b"net-1".to_vec()), Some(b"msg-1".to_vec())])
    );

    // Replace one, delete the other, in one step.
    let later = at + chrono::Duration::seconds(30);
    let next = [
        Write::new(&net, Some(b"net-1"), Some((b"net-2", later))),
        Write::new(&msg, Some(b"msg-1"), None),
    ];
    assert_eq!(store.swap(&next).await, Ok(true));
    assert_eq!(store.load(&net).await, Ok(Some(b"net-2".to_vec())));
    assert_eq!(store.load(&msg).await, Ok(None));
    assert_eq!(pexpiretime(&mut conn, &net), later.timestamp_millis() + 1);
    // A delete of a key that holds something else, or nothing, applies nothing.
    let stale_delete = [Write::new(&msg, Some(b"msg-1"), None)];
    assert_eq!(store.swap(&stale_delete).await, Ok(false));
    let delete = [Write::new(&net, Some(b"net-2"), None)];
    assert_eq!(store.swap(&delete).await, Ok(true));
    assert_eq!(store.load(&net).await, Ok(None));
    assert_eq!(
        store.swap(&delete).await,
        Ok(false),
        "gone: nothing to delete"
    );

    // Redis drops a value at its expiry, and one already expired at once.
    let soon = [Write::new(
        &net,
        None,
        Some((b"brief", wall_now() + chrono::Duration::milliseconds(150))),
    )];
    assert_eq!(store.swap(&soon).await, Ok(true));
    assert_eq!(store.load(&net).await, Ok(Some(b"brief".to_vec())));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.load(&net).await, Ok(None));
    let past = wall_now() - chrono::Duration::seconds(1);
    assert_eq!(
        store
            .swap(&[Write::new(&net, None, Some((b"past", past)))])
            .await,
        Ok(true)
    );
    assert_eq!(store.load(&net).await, Ok(None));

    // Swaps a store does not take are refused without a round trip.
    let other_slot = Key::new("msg", "ff").expect("key");
    let trips = store.round_trips();
    let spread = [
        Write::new(&net, None, Some((b"a", at))),
        Write::new(&other_slot, None, Some((b"b", at))),
    ];
    assert_eq!(
        store.swap(&spread).await,
        Err(lanlink::server::StoreError::Corrupt)
    );
    assert_eq!(
        store.swap(&[]).await,
        Err(lanlink::server::StoreError::Corrupt)
    );
    assert_eq!(store.round_trips(), trips);
    // Keys of several slots are read one after the other.
    assert_eq!(
        store.load_many(&[&net, &other_slot]).await,
        Ok(vec![None, None])
    );
    assert_eq!(store.round_trips() - trips, 2);
    // Only the keys written are in Redis.
    let keys: Vec<String> = redis.dump().into_iter().map(|(key, _)| key).collect();
    assert!(keys.is_empty(), "{keys:?}");

    // Redis down: the first command may meet the old connection breaking (a lost reply:
    // `Unavailable`); once the client reconnects, every call is refused (never sent, nothing to
    // read back), each within 2 s.
    redis.kill();
    let _ = store.load(&net).await;
    let refused = lanlink::server::StoreError::Refused;
    let started = Instant::now();
    assert_eq!(store.swap(&absent).await, Err(refused.clone()));
    assert_eq!(store.load(&net).await, Err(refused.clone()));
    assert_eq!(store.load_many(&[&net, &msg]).await, Err(refused));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

/// Swaps of `code` and `ctr` keys, the security-critical ones, wait for replicas when asked
/// (`WAIT`, in the same round trip); those of `net` and `msg` keys do not. One node has no
/// replica: each critical swap is counted unreplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_swaps_wait_for_replicas() {
    use lanlink::server::{Key, Store, Write};
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let config = RedisStoreConfig::new(redis.url())
        .wait_replicas(1)
        .wait_timeout(Duration::from_millis(20));
    let store = RedisStore::connect(config).await.expect("connect");
    let at = wall_now() + chrono::Duration::seconds(60);
    for (kind, waits) in [
        ("net", false),
        ("msg", false),
        ("code", true),
        ("ctr", true),
    ] {
        let key = Key::new(kind, "c0ffee").expect("key");
        let (before, trips) = (store.unreplicated(), store.round_trips());
        let started = Instant::now();
        assert_eq!(
            store
                .swap(&[Write::new(&key, None, Some((b"v", at)))])
                .await,
            Ok(true)
        );
        assert_eq!(store.round_trips() - trips, 1, "{kind}: one round trip");
        assert_eq!(store.unreplicated() - before, u64::from(waits), "{kind}");
        if waits {
            assert!(
                started.elapsed() >= Duration::from_millis(20),
                "{kind} waited"
            );
        }
        assert_eq!(store.load(&key).await, Ok(Some(b"v".to_vec())));
        // A refused swap is not an unreplicated write.
        let before = store.unreplicated();
        assert_eq!(
            store
                .swap(&[Write::new(&key, None, Some((b"w", at)))])
                .await,
            Ok(false)
        );
        assert_eq!(store.unreplicated(), before, "{kind}");
    }
}

/// The store suite (`lanlink::conformance::store`) on one Redis node: every check of the
/// `Store` contract and of the records over it passes, the expiry checks through Redis's own
/// TTLs (`purge` does nothing).
#[cfg(feature = "conformance")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_suite_passes_on_one_node() {
    use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let config = RedisStoreConfig::new(redis.url()).prefix("suite");
    let store = RedisStore::connect(config).await.expect("connect");
    let suite = StoreSuite::new().expires_by_itself(Duration::from_secs(2));
    let report = suite.run(Arc::new(store), wall_now()).await;
    println!("the store suite on one Redis node:\n{report}");
    assert!(report.complete(), "{}", report.summary());
    assert_eq!(report.checks().len(), STORE_CHECKS.len());
}
