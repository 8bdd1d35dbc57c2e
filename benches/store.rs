//! The stores against their baselines, in the same run.
//!
//! - **In memory**: one record update through the [`Store`] trait (`Mutex<MemoryStore>` as a
//!   `dyn Store`: lock, prune, apply, write back) against the same change on a bare
//!   `HashMap<PublicNetwork, NetworkRecord>` (`get_mut`), at 1 k, 100 k and 1 M networks with one
//!   discoverable agent each. Target: the store at least 1/3 of the bare map's rate.
//! - **Redis**: a record update through [`RedisStore`] (read, decrypt, apply, encrypt,
//!   compare-and-swap) against the same client's raw `SET` + `GET` of a value of the same size.
//!   Round trips per operation are counted by the store's client, and the commands Redis ran by
//!   Redis itself (`total_commands_processed`, which also counts the commands a script runs). Target:
//!   at least 1/2 of the raw round trip's rate. Also the bytes Redis holds per discoverable agent
//!   (`MEMORY USAGE`). Needs `redis-server` on `PATH` (started on a free loopback port).
//!
//! Bytes per discoverable agent in memory are measured by `cargo bench --bench memory`.
//!
//! ```text
//! cargo bench --bench store
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion};
use lanlink::secret::PresenceKey;
use lanlink::server::redis::{RedisStore, RedisStoreConfig, StoreKey};
use lanlink::server::{MemoryStore, NetworkRecord, ServerConfig, Store};
use lanlink::wire::{Announce, DeviceInfo, WIRE_VERSION};
use lanlink::{LocalSecret, PublicNetwork};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
    let announce = Announce {
        version: WIRE_VERSION,
        instance_id: id,
        private_ip: IpAddr::from([192, 168, 1, 50]),
        port: 8080,
        info: DeviceInfo::new("voron.local", "Voron 2.4", "klipper-lanlink", "0.3.1")
            .expect("info"),
        commitment: secret.commitment(&id),
        presence_key: key,
    };
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
    store: Arc<dyn Store>,
    map: HashMap<PublicNetwork, NetworkRecord>,
    order: Vec<usize>,
    now: DateTime<Utc>,
    config: ServerConfig,
}

impl Memory {
    fn new(n: usize) -> Self {
        let config = ServerConfig::default();
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let mut store = MemoryStore::default();
        let mut map = HashMap::with_capacity(n);
        for i in 0..n {
            let record = record(i, now, &config);
            store.put_network(network(i), record.clone());
            map.insert(network(i), record);
        }
        let mut rng = StdRng::seed_from_u64(1);
        let order = (0..100_000).map(|_| rng.random_range(0..n)).collect();
        Self {
            store: Arc::new(Mutex::new(store)),
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
    let store = rt
        .block_on(RedisStore::connect(RedisStoreConfig::new(
            url.as_str(),
            StoreKey::from_bytes([3; 32]),
        )))
        .expect("connect");
    let mut conn = store.connection();
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
    let sample_key = store.network_key(&network(0));
    let value: Vec<u8> = rt
        .block_on(redis::AsyncCommands::get(&mut conn, &sample_key))
        .expect("get");
    let mut bytes = 0u64;
    for i in 0..N {
        let used: Option<u64> = rt
            .block_on(
                redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(store.network_key(&network(i)))
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
        let mut conn = store.connection();
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
    const OPS: usize = 5_000;
    let (mut update, mut raw) = (Duration::ZERO, Duration::ZERO);
    let (mut update_cmds, mut raw_cmds, mut update_trips) = (0, 0, 0);
    for _ in 0..3 {
        let before = commands(&url);
        let trips = store.round_trips();
        let start = Instant::now();
        for i in 0..OPS {
            store_op(i % N);
        }
        update += start.elapsed();
        update_trips += store.round_trips() - trips;
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
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    for n in SIZES {
        let mut memory = Memory::new(n);
        bench_memory(&mut criterion, n, &mut memory);
        memory_ratio(n, &mut memory);
    }
    bench_redis(&mut criterion);
    criterion.final_summary();
}
