//! Lost replies between the Redis store and Redis: a fault-injecting TCP proxy
//! (`tests/common`) forwards every command to a real `redis-server` (started on a free loopback
//! port) and, at a chosen command, forwards the command, throws its reply away and closes the
//! connection, as a network that fails after the write reached Redis does. For every command of
//! the link flow (announce, link, collect, redeem) and of two wrong guesses, the flow is run once
//! with that reply dropped; the client retries on `503 store_unavailable`, as a real one does.
//! The outcome must be what it is without faults: linked, the code used exactly once, every
//! right guess refunded, each wrong guess charged exactly once. The same over a local cluster
//! (three masters, three replicas), a proxy in front of each node.
//!
//! Without `redis-server` (and, for the cluster, `redis-cli`) on `PATH` each test prints a skip
//! line and passes, except under `CI=true`, where it fails.
#![cfg(feature = "redis")]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use lanlink::event::RequestKind;
use lanlink::server::redis::{RedisStore, RedisStoreConfig};
use lanlink::server::{
    Backend, CounterKey, Events, Records, RecordsConfig, Server, ServerConfig, StoreKey, User,
};
use lanlink::wire::{AgentMessage, Announce, LinkRequest, LinkState, RedeemRequest};
use lanlink::{AccountId, ForwardedHeaders, LinkCode, LocalSecret, PublicNetwork};
use lanlink::{InstanceId, Refusal};

mod support;
use support::redis_cluster::{Cluster, Plan, Proxy};
use support::redis_server::have;

/// The records the servers run on: sealed by `Records`, in Redis.
type Shared = Records<RedisStore>;

fn wall_now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

fn have_redis() -> bool {
    have("redis-server")
}

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start() -> Self {
        let port = support::free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.connection().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(format!("redis://{}", self.addr())).ok()?;
        let mut conn = client.get_connection().ok()?;
        redis::cmd("PING").query::<String>(&mut conn).ok()?;
        Some(conn)
    }

    /// The keys matching `pattern`.
    fn keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.connection().expect("connect");
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut conn)
            .expect("keys")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An announcement with known keys (`n` picks them).
fn announcement(n: u32) -> (Announce, LocalSecret) {
    support::announcement(n, "192.168.1.50")
}

const PEER: &str = "203.0.113.7";

fn home() -> PublicNetwork {
    PublicNetwork::from_ip(PEER.parse().expect("ip"), 64)
}

/// Where the store runs: one `redis-server` behind one proxy, or a local cluster with a proxy
/// in front of each node (the client reaches every node through its proxy; the proxies share
/// one plan, so commands are counted across the nodes).
enum Deployment {
    /// One node, its proxy, and the store's response timeout.
    Node(Redis, Proxy, Duration),
    Cluster(Cluster, Vec<Proxy>),
}

impl Deployment {
    async fn node() -> Self {
        Self::node_timing_out_after(Duration::from_millis(500)).await
    }

    async fn node_timing_out_after(timeout: Duration) -> Self {
        let redis = Redis::start();
        let proxy = Proxy::start(redis.addr()).await;
        Self::Node(redis, proxy, timeout)
    }

    async fn cluster() -> Self {
        let cluster = Cluster::start();
        let plan = Arc::new(std::sync::Mutex::new(Plan::default()));
        let mut proxies = Vec::new();
        for port in &cluster.ports {
            let upstream = SocketAddr::from(([127, 0, 0, 1], *port));
            proxies.push(Proxy::start_with(upstream, Arc::clone(&plan)).await);
        }
        Self::Cluster(cluster, proxies)
    }

    fn proxy(&self) -> &Proxy {
        match self {
            Self::Node(_, proxy, _) => proxy,
            Self::Cluster(_, proxies) => &proxies[0],
        }
    }

    /// A server on a store through the proxies, under its own key prefix, and the store.
    async fn service(&self, prefix: &str) -> (Server<Arc<Shared>>, Arc<Shared>) {
        let store = self.redis_store(prefix).await;
        let store = Arc::new(Records::new(
            store,
            RecordsConfig::new(StoreKey::from_bytes([5; 32])),
        ));
        let service = Server::with_store(ServerConfig::default(), store.clone(), Events::discard())
            .expect("config");
        (service, store)
    }

    /// The store over bytes through the proxies, under its own key prefix.
    async fn redis_store(&self, prefix: &str) -> RedisStore {
        let timeout = match self {
            Self::Node(_, _, timeout) => *timeout,
            Self::Cluster(..) => Duration::from_millis(500),
        };
        let config = match self {
            Self::Node(_, proxy, _) => RedisStoreConfig::new(proxy.url()),
            Self::Cluster(cluster, proxies) => {
                let urls = proxies.iter().map(Proxy::url);
                let mut config = RedisStoreConfig::cluster(urls);
                for (port, proxy) in cluster.ports.iter().zip(proxies) {
                    config = config.cluster_node_address(
                        ("127.0.0.1", *port),
                        ("127.0.0.1", proxy.addr.port()),
                    );
                }
                config
            }
        };
        let config = config
            .prefix(prefix)
            .response_timeout(timeout)
            .connection_timeout(Duration::from_millis(500));
        RedisStore::connect(config).await.expect("connect")
    }

    /// The keys matching `pattern`, on every node that serves slots.
    fn keys(&self, pattern: &str) -> Vec<String> {
        match self {
            Self::Node(redis, ..) => redis.keys(pattern),
            Self::Cluster(cluster, _) => cluster
                .masters()
                .into_iter()
                .flat_map(|port| {
                    let mut conn = support::redis_cluster::node_connection(port).expect("node");
                    redis::cmd("KEYS")
                        .arg(pattern)
                        .query::<Vec<String>>(&mut conn)
                        .expect("keys")
                })
                .collect(),
        }
    }
}

/// Calls `op` until it answers something other than `store_unavailable` (a client's retry).
async fn retried<T, F, Fut>(mut op: F) -> Result<T, Refusal>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Refusal>>,
{
    for _ in 0..20 {
        match op().await {
            Err(Refusal::Store(
                lanlink::server::StoreError::Unavailable | lanlink::server::StoreError::Refused,
            )) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other,
        }
    }
    panic!("still store_unavailable after 20 tries");
}

/// The wrong guesses charged at the home network's own address.
async fn failures(store: &Shared) -> u64 {
    let now = wall_now();
    let mut failures = 0;
    store
        .update_counter(&CounterKey::network(&home()), now, &mut |record| {
            failures = record.live(now.timestamp_millis());
        })
        .await
        .expect("read");
    failures
}

/// The whole link flow through `service`: announce, link, collect the message, redeem (each
/// retried on `store_unavailable`); checks that it links and that the code is single use.
async fn link_flow(service: &Server<Arc<Shared>>, n: u32) -> InstanceId {
    let (x, secret) = announcement(n);
    let alice = AccountId::new("alice").expect("account");
    let peer = PEER.parse().expect("ip");
    let none = ForwardedHeaders::NONE;
    retried(|| service.announce(wall_now(), home(), &x))
        .await
        .expect("announce");
    let request = LinkRequest::new(x.instance_id, secret.clone());
    let user = User::new(alice.clone());
    let pending = retried(|| async {
        let network = service.caller(RequestKind::Link, peer, none)?;
        service
            .link(
                wall_now(),
                &mut lanlink::os_rng(),
                network,
                &user,
                request.clone(),
            )
            .await
    })
    .await
    .expect("link accepted");
    assert_eq!(pending.state, LinkState::Pending);
    let reply = retried(|| service.announce(wall_now(), home(), &x))
        .await
        .expect("collect");
    let [AgentMessage::VerifyAndRedeem { code, .. }] = reply.messages.as_slice() else {
        panic!("one message expected, got {}", reply.messages.len());
    };
    let redeem = RedeemRequest::new(x.instance_id, code.clone());
    retried(|| async {
        service
            .redeem(wall_now(), &mut lanlink::os_rng(), home(), &redeem)
            .await
    })
    .await
    .expect("redeemed");
    let status = retried(|| async {
        let network = service.caller(RequestKind::LinkStatus, peer, none)?;
        service
            .link_status(wall_now(), network, &alice, &x.instance_id)
            .await
    })
    .await
    .expect("status");
    assert_eq!(status.state, LinkState::Linked);
    let again = retried(|| async {
        service
            .redeem(wall_now(), &mut lanlink::os_rng(), home(), &redeem)
            .await
    })
    .await
    .map(|_| ());
    assert_eq!(again, Err(Refusal::CodeUsed), "single use");
    x.instance_id
}

/// Runs `scenario` once without faults (counting its commands), then once per command with
/// that command's reply dropped, each run under a fresh key prefix; `check` sees the outcome.
async fn every_step<S, SFut, C, CFut>(backend: &Deployment, name: &str, scenario: S, check: C)
where
    S: Fn(Server<Arc<Shared>>) -> SFut,
    SFut: std::future::Future<Output = ()>,
    C: Fn(Arc<Shared>, Vec<String>) -> CFut,
    CFut: std::future::Future<Output = ()>,
{
    let proxy = backend.proxy();
    // Twice without faults: the first run loads the scripts, the second counts the commands.
    let mut steps = 0;
    for run in 0..2 {
        let prefix = format!("{name}-clean-{run}");
        let (service, store) = backend.service(&prefix).await;
        proxy.drop_reply(None);
        scenario(service).await;
        let seen = proxy.seen();
        check(store, backend.keys(&format!("{prefix}:*"))).await;
        steps = seen;
    }
    assert!(steps >= 4, "{name}: {steps} commands");
    let mut dropped = Vec::new();
    for step in 0..steps {
        let prefix = format!("{name}-{step}");
        let (service, store) = backend.service(&prefix).await;
        proxy.drop_reply(Some(step));
        scenario(service).await;
        let what = proxy.dropped().unwrap_or_else(|| "-".into());
        println!("{name}: reply of command {step} ({what}) dropped");
        dropped.push(what);
        proxy.drop_reply(None);
        check(store, backend.keys(&format!("{prefix}:*"))).await;
    }
    println!("{name}: {steps} commands, a reply dropped at each: {dropped:?}");
}

/// The link flow with a reply lost at each of its commands: it links, the code is used once,
/// no right guess stays charged (only the reuse of the code, a wrong guess, is: exactly one
/// charge), and no code but the used one is left.
async fn lost_replies_in_the_flow(backend: &Deployment) {
    every_step(
        backend,
        "flow",
        |service| async move {
            link_flow(&service, 1).await;
        },
        |store, keys| async move {
            // The right guesses refunded, the reused code charged: exactly one.
            assert_eq!(failures(&store).await, 1, "only the reused code is charged");
            let codes = keys.iter().filter(|k| k.contains(":code:")).count();
            // The used code, and the instance's link claim (a code record too).
            assert_eq!(
                codes, 2,
                "only the used code and the claim are left: {keys:?}"
            );
        },
    )
    .await;
}

/// One wrong secret and one wrong code, with a reply lost at each command: each is charged
/// exactly once (never twice for a retried write, never lost), and refused as wrong.
async fn lost_replies_in_wrong_guesses(backend: &Deployment) {
    every_step(
        backend,
        "wrong",
        |service| async move {
            let (x, _) = announcement(2);
            let alice = AccountId::new("alice").expect("account");
            let peer = PEER.parse().expect("ip");
            retried(|| service.announce(wall_now(), home(), &x))
                .await
                .expect("announce");
            let guess = LinkRequest::new(x.instance_id, LocalSecret::from_bytes([9; 32]));
            let user = User::new(alice);
            let refused = retried(|| async {
                let none = ForwardedHeaders::NONE;
                let guess = guess.clone();
                let network = service.caller(RequestKind::Link, peer, none)?;
                service
                    .link(wall_now(), &mut lanlink::os_rng(), network, &user, guess)
                    .await
            })
            .await;
            assert_eq!(refused.err(), Some(Refusal::WrongSecret));
            let redeem =
                RedeemRequest::new(x.instance_id, LinkCode::parse("123456").expect("code"));
            let refused = retried(|| async {
                service
                    .redeem(wall_now(), &mut lanlink::os_rng(), home(), &redeem)
                    .await
            })
            .await
            .map(|_| ());
            assert_eq!(refused, Err(Refusal::UnknownCode));
        },
        |store, _keys| async move {
            assert_eq!(failures(&store).await, 2, "each wrong guess charged once");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_at_any_step_of_link_and_redeem_changes_nothing() {
    if !have_redis() {
        return;
    }
    lost_replies_in_the_flow(&Deployment::node().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_never_double_counts_or_loses_a_failure() {
    if !have_redis() {
        return;
    }
    lost_replies_in_wrong_guesses(&Deployment::node().await).await;
}

/// The same with each reply delivered late instead (300 ms, after the store's 150 ms response
/// timeout) on one node: the store times out, reads the key back on a connection that stays up,
/// and recognises its write; the late reply is discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_is_recognised_like_a_lost_one() {
    if !have_redis() {
        return;
    }
    let backend = Deployment::node_timing_out_after(Duration::from_millis(150)).await;
    backend
        .proxy()
        .delay_instead(Some(Duration::from_millis(300)));
    lost_replies_in_wrong_guesses(&backend).await;
    lost_replies_in_the_flow(&backend).await;
}

/// Both, on a local cluster (three masters, three replicas) with a proxy in front of each node:
/// the cluster client resends a command whose connection failed, which the scripts recognise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_on_a_cluster_change_nothing() {
    if !have_redis() || !have("redis-cli") {
        return;
    }
    let backend = Deployment::cluster().await;
    lost_replies_in_the_flow(&backend).await;
    lost_replies_in_wrong_guesses(&backend).await;
}

/// The store over bytes when a reply is lost: a swap answers `Unavailable` (it may have applied:
/// here it did, and the key holds its value; the layer above reads it back and tells), and sent
/// again it answers applied without writing anything; a refused swap whose reply is lost also
/// answers `Unavailable` and changed nothing; a read whose reply is lost is sent again and
/// answers. On a cluster the client itself resends a command whose connection failed: the
/// script recognises its own value and answers applied.
async fn lost_replies_under_the_byte_store(backend: &Deployment, name: &str) {
    use lanlink::server::{Key, Store, StoreError, Write};
    let proxy = backend.proxy();
    proxy.drop_reply(None);
    let store = backend.redis_store(name).await;
    let at = wall_now() + chrono::Duration::seconds(60);
    let net = Key::new("net", "0a1b").expect("key");
    let msg = Key::new("msg", "0a1b").expect("key");
    // Loads the script (a first EVALSHA answers NOSCRIPT).
    let warm = Key::new("ctr", "01").expect("key");
    let warm = [Write::new(&warm, None, Some((b"w", at)))];
    assert_eq!(store.swap(&warm).await, Ok(true));

    let create = [
        Write::new(&net, None, Some((b"net-1", at))),
        Write::new(&msg, None, Some((b"msg-1", at))),
    ];
    proxy.drop_reply(Some(0));
    let lost = store.swap(&create).await;
    assert_eq!(proxy.dropped().as_deref(), Some("EVALSHA"), "{name}");
    match backend {
        Deployment::Node(..) => assert_eq!(lost, Err(StoreError::Unavailable), "{name}"),
        // Resent by the cluster client, recognised by the script.
        Deployment::Cluster(..) => assert!(
            matches!(lost, Ok(true) | Err(StoreError::Unavailable)),
            "{name}: {lost:?}"
        ),
    }
    proxy.drop_reply(None);
    let both = store.load_many(&[&net, &msg]).await;
    assert_eq!(
        both,
        Ok(vec![Some(b"net-1".to_vec()), Some(b"msg-1".to_vec())]),
        "{name}: applied"
    );
    assert_eq!(
        store.swap(&create).await,
        Ok(true),
        "{name}: resent, applied"
    );
    assert_eq!(store.load_many(&[&net, &msg]).await, both, "{name}");

    // A swap that does not apply, its reply lost: nothing changed.
    let stale = [Write::new(&net, Some(b"net-0"), Some((b"net-2", at)))];
    proxy.drop_reply(Some(0));
    let lost = store.swap(&stale).await;
    assert!(
        matches!(lost, Ok(false) | Err(StoreError::Unavailable)),
        "{name}: {lost:?}"
    );
    proxy.drop_reply(None);
    assert_eq!(
        store.load(&net).await,
        Ok(Some(b"net-1".to_vec())),
        "{name}"
    );

    // A read whose reply is lost is sent again.
    proxy.drop_reply(Some(0));
    assert_eq!(
        store.load(&net).await,
        Ok(Some(b"net-1".to_vec())),
        "{name}"
    );
    assert_eq!(proxy.dropped().as_deref(), Some("GET"), "{name}");
    proxy.drop_reply(Some(0));
    assert_eq!(store.load_many(&[&net, &msg]).await, both, "{name}");
    assert_eq!(proxy.dropped().as_deref(), Some("MGET"), "{name}");
    proxy.drop_reply(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_store_answers_unavailable_after_a_lost_reply() {
    if !have_redis() {
        return;
    }
    lost_replies_under_the_byte_store(&Deployment::node().await, "bytes-node").await;
    if have("redis-cli") {
        lost_replies_under_the_byte_store(&Deployment::cluster().await, "bytes-cluster").await;
    }
}
