//! The stores against their baselines, in the same run.
//!
//! - **In memory**: one record update through the [`Store`] trait (`MemoryStore` as a
//!   `dyn Backend`: lock, prune, apply, write back) against the same change on a bare
//!   `HashMap<PublicNetwork, NetworkRecord>` (`get_mut`), at 1 k, 100 k and 1 M networks with one
//!   discoverable agent each. Target: the store at least 1/3 of the bare map's rate.
//! - **Redis**: a record update through [`RedisStore`] (read, decrypt, apply, encrypt,
//!   compare-and-swap) against the same client's raw `SET` + `GET` of a value of the same size.
//!   Round trips per operation are counted by the store's client, and the commands Redis ran by
//!   Redis itself (`total_commands_processed`, which also counts the commands a script runs). Target:
//!   at least 1/2 of the raw round trip's rate. Also the bytes Redis holds per discoverable agent
//!   (`MEMORY USAGE`). Needs `redis-server` on `PATH` (started on a free loopback port).
//!
//! - **Redis Cluster**: the same against a local cluster (six `redis-server`s with
//!   `--cluster-enabled yes`, three masters and three replicas, joined by `redis-cli --cluster
//!   create`): the cluster store's update against the same cluster client's raw `SET` + `GET`
//!   (target: at least 1/2), and the cost of `WAIT` for one replica on counter writes. Needs
//!   `redis-cli` too.
//! - **Round trips per operation** (announce, discover, link, redeem, each through a `Server`
//!   on the Redis store), counted by the store, on one node and on the cluster.
//!
//! Bytes per discoverable agent in memory are measured by `cargo bench --bench memory`.
//!
//! ```text
//! cargo bench --bench store
//! LANLINK_BENCH_REDIS_ONLY=1 cargo bench --bench store   # Redis and cluster figures alone
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion};
use lanlink::secret::PresenceKey;
use lanlink::server::redis::{RedisStore, RedisStoreConfig};
use lanlink::server::{
    Backend, MemoryStore, NetworkRecord, Records, RecordsConfig, ServerConfig, StoreKey,
};
use lanlink::wire::{Announce, DeviceInfo};
use lanlink::{LocalSecret, PublicNetwork};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The records the Redis benches run on: sealed by `Records`, in Redis.
type Shared = Records<RedisStore>;

/// The Redis key of a network's record.
fn name(store: &Shared, network: &PublicNetwork) -> String {
    store.store().redis_key(&store.network_key(network))
}

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

fn public(i: usize) -> IpAddr {
    IpAddr::from([
        100 + (i >> 22) as u8 % 100,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ])
}

fn network(i: usize) -> PublicNetwork {
    PublicNetwork::from_ip(public(i), 64)
}

/// A network record with one discoverable agent.
fn record(i: usize, now: DateTime<Utc>, config: &ServerConfig) -> NetworkRecord {
    let mut key = [9u8; 32];
    key[..16].copy_from_slice(&(i as u128).to_le_bytes());
    let key = PresenceKey::from_bytes(key);
    let id = key.instance_id();
    let secret = LocalSecret::from_bytes([7; 32]);
    let announce = Announce::new(
        id,
        IpAddr::from([192, 168, 1, 50]),
        8080,
        DeviceInfo::new("voron.local", "Voron 2.4", "klipper-lanlink", "0.3.1").expect("info"),
        secret.commitment(&id),
        key,
    );
    let mut record = NetworkRecord::default();
    record.announce(now, config, &announce).expect("announce");
    record
}

/// The change both sides make: extend the presence by a millisecond (what a refresh does).
fn touch(record: &mut NetworkRecord) {
    if let Some(presence) = record.presences.first_mut() {
        presence.expires_ms += 1;
    }
}

/// Polls a future that must be ready at once (the in-memory store's).
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the in-memory store is always ready"),
    }
}

struct Memory {
    store: Arc<dyn Backend>,
    map: HashMap<PublicNetwork, NetworkRecord>,
    order: Vec<usize>,
    now: DateTime<Utc>,
    config: ServerConfig,
}

impl Memory {
    fn new(n: usize) -> Self {
        let config = ServerConfig::default();
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let store = MemoryStore::default();
        let mut map = HashMap::with_capacity(n);
        for i in 0..n {
            let record = record(i, now, &config);
            store.put_network(network(i), record.clone());
            map.insert(network(i), record);
        }
        let mut rng = StdRng::seed_from_u64(1);
        let order = (0..100_000).map(|_| rng.random_range(0..n)).collect();
        Self {
            store: Arc::new(store),
            map,
            order,
            now,
            config,
        }
    }

    fn store_op(&self, i: usize) {
        let done =
            ready(
                self.store
                    .update_network(network(i), self.now, &self.config, false, &mut touch),
            );
        black_box(done.is_ok());
    }

    fn bare_op(&mut self, i: usize) {
        if let Some(record) = self.map.get_mut(&network(i)) {
            touch(record);
        }
        black_box(&self.map);
    }
}

fn bench_memory(c: &mut Criterion, n: usize, memory: &mut Memory) {
    let mut group = c.benchmark_group(format!("memory_{n}"));
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    let mut k = 0usize;
    group.bench_function(BenchmarkId::new("store_update", n), |b| {
        b.iter(|| {
            k = (k + 1) % memory.order.len();
            memory.store_op(memory.order[k]);
        });
    });
    group.bench_function(BenchmarkId::new("bare_hashmap", n), |b| {
        b.iter(|| {
            k = (k + 1) % memory.order.len();
            let i = memory.order[k];
            memory.bare_op(i);
        });
    });
    group.finish();
}

/// Paired measurement: the store's rate against the bare map's.
fn memory_ratio(n: usize, memory: &mut Memory) {
    let (mut store, mut bare) = (Duration::ZERO, Duration::ZERO);
    let order = memory.order.clone();
    for _ in 0..5 {
        let start = Instant::now();
        for &i in &order {
            memory.store_op(i);
        }
        store += start.elapsed();
        let start = Instant::now();
        for &i in &order {
            memory.bare_op(i);
        }
        bare += start.elapsed();
    }
    let ops = 5.0 * order.len() as f64;
    let (store_rate, bare_rate) = (ops / store.as_secs_f64(), ops / bare.as_secs_f64());
    println!(
        "ratio in memory ({n} networks): store update {:.2} M ops/s; bare HashMap {:.2} M ops/s; store/bare = {:.2} (target >= 0.33)",
        store_rate / 1e6,
        bare_rate / 1e6,
        store_rate / bare_rate
    );
}

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<(RedisServer, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer(child);
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut conn) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
            if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                return Some((server, url));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn commands(url: &str) -> u64 {
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect");
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut conn)
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed")
}

fn bench_redis(c: &mut Criterion) {
    let Some((_server, url)) = start_redis() else {
        println!("SKIP: redis-server is not on PATH (or did not start): no Redis figures");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Records on the wall clock: presences that outlive the run.
    let config = ServerConfig::default().presence_ttl(Duration::from_secs(3600));
    let records = |config: RecordsConfig| {
        let store = rt
            .block_on(RedisStore::connect(RedisStoreConfig::new(url.as_str())))
            .expect("connect");
        Arc::new(Records::new(store, config))
    };
    let store = records(RecordsConfig::new(StoreKey::from_bytes([3; 32])));
    // The same store without the version cache: every update reads, then swaps (the path
    // before the one-round-trip update). It updates networks of its own (N..2N).
    let uncached = records(RecordsConfig::new(StoreKey::from_bytes([3; 32])).version_cache(0));
    let mut conn = store.store().connection();
    let now = DateTime::<Utc>::from(SystemTime::now());
    const N: usize = 1_000;
    for i in 0..N {
        let template = record(i, now, &config);
        rt.block_on(
            store.update_network(network(i), now, &config, true, &mut |r| {
                *r = template.clone();
            }),
        )
        .expect("populate");
    }
    // Value size for the raw baseline: the same as a stored record.
    let sample_key = name(&store, &network(0));
    let value: Vec<u8> = rt
        .block_on(redis::AsyncCommands::get(&mut conn, &sample_key))
        .expect("get");
    let mut bytes = 0u64;
    for i in 0..N {
        let used: Option<u64> = rt
            .block_on(
                redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(name(&store, &network(i)))
                    .query_async(&mut conn),
            )
            .expect("memory usage");
        bytes += used.unwrap_or(0);
    }
    println!(
        "redis: {} B stored value, {:.0} B of Redis memory per discoverable agent (MEMORY USAGE, one agent per network)",
        value.len(),
        bytes as f64 / N as f64
    );

    let store_op = |i: usize| {
        let now = DateTime::<Utc>::from(SystemTime::now());
        rt.block_on(store.update_network(network(i), now, &config, false, &mut touch))
            .expect("update");
    };
    let read_op = |i: usize| {
        let now = DateTime::<Utc>::from(SystemTime::now());
        rt.block_on(store.read_network(network(i), now, &config, &mut |r| {
            black_box(r.present(now));
        }))
        .expect("read");
    };
    let raw_op = |i: usize| {
        let mut conn = store.store().connection();
        let key = format!("bench:raw:{{{i}}}");
        rt.block_on(async {
            let _: () = redis::AsyncCommands::set(&mut conn, &key, value.as_slice())
                .await
                .expect("set");
            let got: Vec<u8> = redis::AsyncCommands::get(&mut conn, &key)
                .await
                .expect("get");
            black_box(got);
        });
    };

    let mut group = c.benchmark_group("redis");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(20);
    let mut k = 0usize;
    group.bench_function("store_update", |b| {
        b.iter(|| {
            k = (k + 1) % N;
            store_op(k);
        });
    });
    group.bench_function("store_read", |b| {
        b.iter(|| {
            k = (k + 1) % N;
            read_op(k);
        });
    });
    group.bench_function("raw_set_get", |b| {
        b.iter(|| {
            k = (k + 1) % N;
            raw_op(k);
        });
    });
    group.finish();

    // Paired measurement, with Redis's own count of commands.
    for i in N..2 * N {
        let template = record(i, now, &config);
        rt.block_on(
            uncached.update_network(network(i), now, &config, true, &mut |r| {
                *r = template.clone();
            }),
        )
        .expect("populate");
    }
    let uncached_op = |i: usize| {
        let now = DateTime::<Utc>::from(SystemTime::now());
        rt.block_on(uncached.update_network(network(N + i), now, &config, false, &mut touch))
            .expect("update");
    };
    const OPS: usize = 5_000;
    let (mut update, mut raw, mut before_path) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut update_cmds, mut raw_cmds, mut update_trips) = (0, 0, 0);
    let before_trips = uncached.store().round_trips();
    for _ in 0..3 {
        let start = Instant::now();
        for i in 0..OPS {
            uncached_op(i % N);
        }
        before_path += start.elapsed();
        let before = commands(&url);
        let trips = store.store().round_trips();
        let start = Instant::now();
        for i in 0..OPS {
            store_op(i % N);
        }
        update += start.elapsed();
        update_trips += store.store().round_trips() - trips;
        update_cmds += commands(&url) - before - 1;
        let before = commands(&url);
        let start = Instant::now();
        for i in 0..OPS {
            raw_op(i % N);
        }
        raw += start.elapsed();
        raw_cmds += commands(&url) - before - 1;
    }
    let ops = 3.0 * OPS as f64;
    let (update_rate, raw_rate) = (ops / update.as_secs_f64(), ops / raw.as_secs_f64());
    println!(
        "ratio redis: store update {:.0} ops/s ({:.2} round trips each, {:.2} commands run by Redis counting the script's own GET and SET); raw SET+GET {:.0} pairs/s ({:.2} round trips each); store/raw = {:.2} (target >= 0.5)",
        update_rate,
        update_trips as f64 / ops,
        update_cmds as f64 / ops,
        raw_rate,
        raw_cmds as f64 / ops,
        update_rate / raw_rate
    );
    let before_rate = ops / before_path.as_secs_f64();
    println!(
        "one-round-trip update on one node: {:.0} ops/s with the version cache vs {:.0} ops/s without (read, then swap; {:.2} round trips each): {:.2}x; without it store/raw = {:.2}",
        update_rate,
        before_rate,
        (uncached.store().round_trips() - before_trips) as f64 / ops,
        update_rate / before_rate,
        before_rate / raw_rate
    );
    // After the updates every value carries a full lineage (8 ancestors' tags).
    let mut bytes = 0u64;
    let mut conn = store.store().connection();
    for i in 0..N {
        let used: Option<u64> = rt
            .block_on(
                redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(name(&store, &network(i)))
                    .query_async(&mut conn),
            )
            .expect("memory usage");
        bytes += used.unwrap_or(0);
    }
    let updated: Vec<u8> = rt
        .block_on(redis::AsyncCommands::get(&mut conn, &sample_key))
        .expect("get");
    println!(
        "redis after updates: {} B stored value (with its lineage), {:.0} B of Redis memory per discoverable agent",
        updated.len(),
        bytes as f64 / N as f64
    );
    round_trips(
        "on one node, without the version cache",
        &uncached,
        50,
        0,
        &rt,
    );
    round_trips("on one node", &store, 50, 1, &rt);
}

/// Round trips per operation of the link flow through a `Server` on `store`: the mean over
/// `flows` flows, each on its own network (so each first touch of a record is a miss).
fn round_trips(
    label: &str,
    store: &Arc<Shared>,
    flows: u32,
    seed: u8,
    rt: &tokio::runtime::Runtime,
) {
    use lanlink::event::RequestKind;
    use lanlink::server::{Events, Server, User};
    use lanlink::wire::{AgentMessage, LinkRequest, RedeemRequest};
    use lanlink::{AccountId, ForwardedHeaders};
    // A bench: its events are not read, and discarding them keeps a sink out of the timing.
    let events = Events::discard();
    let service =
        Server::with_store(ServerConfig::default(), store.clone(), events).expect("config");
    let alice = User::new(AccountId::new("alice").expect("account"));
    let none = ForwardedHeaders::NONE;
    let mut totals = [0u64; 5];
    for n in 0..flows {
        let peer = IpAddr::from([198, 18 + seed % 2, (n >> 8) as u8, n as u8]);
        let home = PublicNetwork::from_ip(peer, 64);
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&n.to_be_bytes());
        key[30] = seed;
        key[31] = 0x5a;
        let key = PresenceKey::from_bytes(key);
        let id = key.instance_id();
        let secret = LocalSecret::from_bytes([n as u8 ^ 0x33; 32]);
        let announce = Announce::new(
            id,
            IpAddr::from([192, 168, 1, 50]),
            8080,
            DeviceInfo::default(),
            secret.commitment(&id),
            key,
        );
        let now = || DateTime::<Utc>::from(SystemTime::now());
        let mut count = |slot: usize, f: &mut dyn FnMut()| {
            let before = store.store().round_trips();
            f();
            totals[slot] += store.store().round_trips() - before;
        };
        count(0, &mut || {
            rt.block_on(service.announce(now(), home, &announce))
                .expect("announce");
        });
        count(1, &mut || {
            let network = service.caller(RequestKind::Discover, peer, none);
            rt.block_on(service.discover(now(), network.expect("network"), &alice))
                .expect("discover");
        });
        let request = LinkRequest::new(id, secret.clone());
        count(2, &mut || {
            let network = service.caller(RequestKind::Link, peer, none);
            rt.block_on(service.link(
                now(),
                &mut lanlink::os_rng(),
                network.expect("network"),
                &alice,
                request.clone(),
            ))
            .expect("link");
        });
        let mut code = None;
        count(3, &mut || {
            let reply = rt
                .block_on(service.announce(now(), home, &announce))
                .expect("collect");
            if let Some(AgentMessage::VerifyAndRedeem { code: c, .. }) = reply.messages.first() {
                code = Some(c.clone());
            }
        });
        let redeem = RedeemRequest::new(id, code.expect("a message"));
        count(4, &mut || {
            rt.block_on(service.redeem(now(), &mut lanlink::os_rng(), home, &redeem))
                .expect("redeem");
        });
    }
    let per = |slot: usize| totals[slot] as f64 / f64::from(flows);
    println!(
        "round trips {label}: announce {:.2}, discover {:.2}, link {:.2}, announce collecting the message {:.2}, redeem {:.2} (mean of {flows} flows, each on a fresh network)",
        per(0),
        per(1),
        per(2),
        per(3),
        per(4)
    );
}

/// A local cluster: six `redis-server`s (three masters, three replicas), killed on drop.
struct LocalCluster(Vec<RedisServer>, Vec<u16>, std::path::PathBuf);

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.0.clear();
        let _ = std::fs::remove_dir_all(&self.2);
    }
}

fn start_cluster() -> Option<LocalCluster> {
    let mut ports = Vec::new();
    while ports.len() < 6 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            ports.push(port);
        }
    }
    let dir = std::env::temp_dir().join(format!("lanlink-bench-cluster-{}", std::process::id()));
    let mut servers = Vec::new();
    for port in &ports {
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).ok()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        servers.push(RedisServer(child));
    }
    let cluster = LocalCluster(servers, ports.clone(), dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in &ports {
        let url = format!("redis://127.0.0.1:{port}");
        loop {
            let ok = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    // Every node agrees the cluster is up, and every replica is attached.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (mut ok, mut synced) = (0, 0);
        for port in &ports {
            let url = format!("redis://127.0.0.1:{port}");
            if let Ok(mut conn) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection())
            {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut conn)
                    .unwrap_or_default();
                ok += usize::from(info.contains("cluster_state:ok"));
                let repl: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut conn)
                    .unwrap_or_default();
                synced += usize::from(repl.contains("master_link_status:up"));
            }
        }
        if ok == 6 && synced == 3 {
            return Some(cluster);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cluster store against the same client's raw `SET` + `GET`, and `WAIT`'s cost.
fn bench_cluster() {
    let Some(cluster) = start_cluster() else {
        println!("SKIP: redis-server or redis-cli is not on PATH (or the cluster did not form): no cluster figures");
        return;
    };
    let urls: Vec<String> = cluster
        .1
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let key = StoreKey::from_bytes([3; 32]);
    let connect = |wait: u32| {
        let store = rt
            .block_on(RedisStore::connect(
                RedisStoreConfig::cluster(urls.clone()).wait_replicas(wait),
            ))
            .expect("connect to the cluster");
        Arc::new(Records::new(store, RecordsConfig::new(key.clone())))
    };
    let store = connect(0);
    let waiting = connect(1);
    let config = ServerConfig::default().presence_ttl(Duration::from_secs(3600));
    let now = DateTime::<Utc>::from(SystemTime::now());
    const N: usize = 1_000;
    for i in 0..N {
        let template = record(i, now, &config);
        rt.block_on(
            store.update_network(network(i), now, &config, true, &mut |r| {
                *r = template.clone();
            }),
        )
        .expect("populate");
    }
    let mut conn = store.store().connection();
    let value: Vec<u8> = rt
        .block_on(redis::AsyncCommands::get(
            &mut conn,
            name(&store, &network(0)),
        ))
        .expect("get");
    let store_op = |i: usize| {
        let now = DateTime::<Utc>::from(SystemTime::now());
        rt.block_on(store.update_network(network(i), now, &config, false, &mut touch))
            .expect("update");
    };
    let raw_op = |i: usize| {
        let mut conn = store.store().connection();
        let key = format!("bench:raw:{{{i}}}");
        rt.block_on(async {
            let _: () = redis::AsyncCommands::set(&mut conn, &key, value.as_slice())
                .await
                .expect("set");
            let got: Vec<u8> = redis::AsyncCommands::get(&mut conn, &key)
                .await
                .expect("get");
            black_box(got);
        });
    };
    // A counter charge and its refund (what a right guess costs one budget level).
    let counter_op = |store: &Arc<Shared>, i: usize| {
        let now = DateTime::<Utc>::from(SystemTime::now());
        let counter = lanlink::server::CounterKey::network(&network(i));
        let now_ms = now.timestamp_millis();
        rt.block_on(store.update_counter(&counter, now, &mut |record| {
            let _ = record.admit(now_ms, now_ms + 600_000, 1_000, None);
        }))
        .expect("charge");
    };
    const OPS: usize = 3_000;
    let (mut update, mut raw, mut plain, mut waited) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let trips = store.store().round_trips();
    for _ in 0..3 {
        let start = Instant::now();
        for i in 0..OPS {
            store_op(i % N);
        }
        update += start.elapsed();
        let start = Instant::now();
        for i in 0..OPS {
            raw_op(i % N);
        }
        raw += start.elapsed();
        let start = Instant::now();
        for i in 0..OPS {
            counter_op(&store, i % N);
        }
        plain += start.elapsed();
        let start = Instant::now();
        for i in 0..OPS {
            counter_op(&waiting, N + i % N);
        }
        waited += start.elapsed();
    }
    let ops = 3.0 * OPS as f64;
    let rate = |d: Duration| ops / d.as_secs_f64();
    let update_trips = (store.store().round_trips() - trips) as f64 / ops;
    println!(
        "ratio redis cluster: store update {:.0} ops/s; raw SET+GET on the same cluster client {:.0} pairs/s; store/raw = {:.2} (target >= 0.5); {:.2} round trips per update and counter charge",
        rate(update),
        rate(raw),
        rate(update) / rate(raw),
        update_trips / 2.0,
    );
    println!(
        "WAIT on the cluster: counter charge {:.0} ops/s without, {:.0} ops/s waiting for 1 replica ({:.2}x the rate; {} of {} writes under-replicated within 100 ms)",
        rate(plain),
        rate(waited),
        rate(waited) / rate(plain),
        waiting.store().unreplicated(),
        3 * OPS,
    );
    round_trips("on the cluster", &store, 50, 0, &rt);
    drop(cluster);
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    // LANLINK_BENCH_REDIS_ONLY=1: the Redis and cluster figures alone.
    let sizes: &[usize] = if std::env::var_os("LANLINK_BENCH_REDIS_ONLY").is_some() {
        &[]
    } else {
        &SIZES
    };
    for &n in sizes {
        let mut memory = Memory::new(n);
        bench_memory(&mut criterion, n, &mut memory);
        memory_ratio(n, &mut memory);
    }
    bench_redis(&mut criterion);
    bench_cluster();
    criterion.final_summary();
}
