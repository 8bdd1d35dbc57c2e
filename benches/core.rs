//! The core's cost per operation, in memory, against a bare `HashMap` of the same key type in the
//! same run.
//!
//! For 1 k, 100 k and 1 M public networks (one discoverable agent each): announce, discover,
//! discover by a signed-in account (`discover_as`, what the HTTP routes call), link request,
//! secret verification, code mint and code redeem, plus the baseline (`HashMap` insert + lookup
//! of a `PublicNetwork` key). At the end a paired measurement prints announce + discover
//! operations per second and their cost as a multiple of the baseline's.
//!
//! ```text
//! cargo bench --bench core
//! ```
//!
//! `LANLINK_BENCH_SIZES=100000` (a comma-separated list) limits the run to those populations;
//! `LANLINK_BENCH_RATIO_ONLY=1` skips criterion and prints only the paired ratios.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{BenchmarkId, Criterion, Throughput};
use lanlink::event::RequestKind;
use lanlink::secret::PresenceKey;
use lanlink::server::{Server, ServerConfig, User};
use lanlink::wire::{Announce, DeviceInfo, LinkRequest, RedeemRequest};
use lanlink::{AccountId, ForwardedHeaders, InstanceId, LocalSecret, PublicNetwork};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("valid time")
}

/// The public address of network `i` (distinct for i < 2^24).
fn public(i: usize) -> IpAddr {
    IpAddr::from([
        100 + (i >> 22) as u8 % 100,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ])
}

fn agent(i: usize) -> (Announce, LocalSecret) {
    let mut key = [5u8; 32];
    key[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let key = PresenceKey::from_bytes(key);
    let id = key.instance_id();
    let mut secret = [7u8; 32];
    secret[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let secret = LocalSecret::from_bytes(secret);
    let announce = Announce::new(
        id,
        IpAddr::from([192, 168, 1, 50]),
        8080,
        DeviceInfo::new("printer", "Voron 2.4", "klipper", "1.0").expect("info"),
        secret.commitment(&id),
        key,
    );
    (announce, secret)
}

/// A server with `n` networks, one agent each, all fresh at `t0()`.
fn populated(n: usize) -> (Server, Vec<Announce>) {
    let server = Server::new(ServerConfig::default()).expect("config");
    let mut announces = Vec::with_capacity(n);
    for i in 0..n {
        let (announce, _) = agent(i);
        announce_at(&server, t0(), public(i), &announce).expect("announce");
        while server.poll_event().is_some() {}
        announces.push(announce);
    }
    (server, announces)
}

fn drain(server: &Server) {
    while server.poll_event().is_some() {}
}

/// Polls a future of the in-memory server once: it is ready at once.
fn ready<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("the in-memory server's future was not ready"),
    }
}

/// An announcement from `peer`, as the HTTP route makes it: the caller resolved, then the step.
fn announce_at(
    server: &Server,
    now: chrono::DateTime<chrono::Utc>,
    peer: IpAddr,
    announce: &Announce,
) -> Result<lanlink::wire::AnnounceReply, lanlink::Refusal> {
    let network = server.caller(RequestKind::Announce, peer, ForwardedHeaders::NONE)?;
    ready(server.announce(now, network, announce))
}

/// A discovery by `user` from `peer`, as the HTTP route makes it.
fn discover_at(
    server: &Server,
    now: chrono::DateTime<chrono::Utc>,
    user: &User,
    peer: IpAddr,
) -> Result<lanlink::wire::DiscoverReply, lanlink::Refusal> {
    let network = server.caller(RequestKind::Discover, peer, ForwardedHeaders::NONE)?;
    ready(server.discover(now, network, user))
}

fn bench_size(c: &mut Criterion, n: usize) {
    let (server, announces) = populated(n);
    let mut rng = StdRng::seed_from_u64(n as u64);
    let mut group = c.benchmark_group(format!("core/{n}_networks"));
    group.throughput(Throughput::Elements(1));
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));

    let mut map: HashMap<PublicNetwork, u64> = (0..n)
        .map(|i| (PublicNetwork::from_ip(public(i), 64), i as u64))
        .collect();
    group.bench_function(BenchmarkId::new("baseline_hashmap_insert_lookup", n), |b| {
        b.iter(|| {
            let i = rng.random_range(0..n);
            let key = PublicNetwork::from_ip(public(i), 64);
            map.insert(key, i as u64);
            black_box(map.get(&key));
        })
    });

    // Announce: refresh a random agent, one second later than the population (still fresh).
    let now = t0() + TimeDelta::seconds(1);
    group.bench_function(BenchmarkId::new("announce", n), |b| {
        b.iter(|| {
            let i = rng.random_range(0..n);
            let reply = announce_at(&server, now, public(i), &announces[i]);
            drain(&server);
            black_box(reply)
        })
    });
    // Discovery by a signed-in account (what the HTTP routes call; every discovery names its
    // user, for shared-network detection): an account's first discovery from a network in a
    // window writes its hash, every later one reads only, as this measures (each network was
    // discovered once by the account beforehand).
    let user = User::new(AccountId::new("bench-user").expect("account"));
    for i in 0..n {
        let _ = discover_at(&server, now, &user, public(i));
    }
    drain(&server);
    group.bench_function(BenchmarkId::new("discover", n), |b| {
        b.iter(|| {
            let i = rng.random_range(0..n);
            let reply = discover_at(&server, now, &user, public(i));
            drain(&server);
            black_box(reply)
        })
    });

    let (announce, secret) = agent(0);
    group.bench_function("secret_verification", |b| {
        b.iter(|| {
            black_box(
                announce
                    .commitment
                    .verify(&announce.instance_id, black_box(&secret)),
            )
        })
    });

    // Link request: each consumes an agent's secret, so each iteration links a new network's
    // agent, announced beforehand (untimed). These networks are numbered past the population.
    let alice = AccountId::new("alice").expect("account");
    let alice_user = User::new(alice.clone());
    let mut next = n;
    group.bench_function(BenchmarkId::new("link_request", n), |b| {
        b.iter_custom(|iters| {
            let mut requests = Vec::with_capacity(iters as usize);
            for _ in 0..iters {
                let (announce, secret) = agent(next);
                announce_at(&server, now, public(next), &announce).expect("announce");
                requests.push((public(next), LinkRequest::new(announce.instance_id, secret)));
                next += 1;
            }
            drain(&server);
            let start = Instant::now();
            for (peer, request) in requests {
                let reply = server
                    .caller(RequestKind::Link, peer, ForwardedHeaders::NONE)
                    .and_then(|network| {
                        ready(server.link(now, &mut rng, network, &alice_user, request))
                    });
                black_box(reply.is_ok());
            }
            let elapsed = start.elapsed();
            drain(&server);
            elapsed
        })
    });

    // Code mint: time moves 11 minutes every 50 000 codes, so live codes stay below 5 % of the
    // 6-digit space (as a real service with that many users would need a longer format).
    let mut minted = 0u64;
    let mut mint_now = now;
    group.bench_function(BenchmarkId::new("code_mint", n), |b| {
        b.iter(|| {
            minted += 1;
            if minted.is_multiple_of(50_000) {
                mint_now += TimeDelta::minutes(11);
            }
            let reply = ready(server.mint_code(mint_now, &mut rng, &alice));
            drain(&server);
            black_box(reply.is_ok())
        })
    });

    // Code redeem: codes minted beforehand (untimed), each redeemed once by agent 0's network.
    group.bench_function(BenchmarkId::new("code_redeem", n), |b| {
        b.iter_custom(|iters| {
            mint_now += TimeDelta::minutes(11);
            let mut requests = Vec::with_capacity(iters as usize);
            for i in 0..iters {
                let code = ready(server.mint_code(mint_now, &mut rng, &alice))
                    .expect("mint")
                    .code;
                let mut bytes = [9u8; 16];
                bytes[..8].copy_from_slice(&i.to_le_bytes());
                requests.push(RedeemRequest::new(InstanceId::from_bytes(bytes), code));
                if i % 40_000 == 39_999 {
                    mint_now += TimeDelta::seconds(1);
                }
            }
            drain(&server);
            let start = Instant::now();
            for request in &requests {
                let reply = server
                    .caller(RequestKind::Redeem, public(0), ForwardedHeaders::NONE)
                    .and_then(|network| ready(server.redeem(mint_now, &mut rng, network, request)));
                black_box(reply.is_ok());
            }
            let elapsed = start.elapsed();
            drain(&server);
            elapsed
        })
    });
    group.finish();
}

/// Announce + discover against the baseline, paired in one run. The same 200 000 random networks
/// go through the core and through the bare map in slices of 5 000, each slice timed on both
/// back to back (which one goes first alternates), five times over; a slice's ratio compares
/// the two under the same machine state, and the median of the 200 slices' ratios is the figure
/// (printed with its interquartile range). On a shared VM the machine's speed drifts by tens of
/// percent within seconds, which whole-run totals would mix into the ratio.
fn ratio(n: usize) {
    const PASSES: usize = 5;
    const SLICE: usize = 5_000;
    let (server, announces) = populated(n);
    let user = User::new(AccountId::new("bench-user").expect("account"));
    let mut map: HashMap<PublicNetwork, u64> = (0..n)
        .map(|i| (PublicNetwork::from_ip(public(i), 64), i as u64))
        .collect();
    let mut rng = StdRng::seed_from_u64(1);
    let order: Vec<usize> = (0..200_000).map(|_| rng.random_range(0..n)).collect();
    let now = t0() + TimeDelta::seconds(1);
    let (mut core, mut bare) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::with_capacity(PASSES * order.len() / SLICE);
    let run_core = |slice: &[usize]| {
        let start = Instant::now();
        for &i in slice {
            let reply = announce_at(&server, now, public(i), &announces[i]);
            black_box(reply.is_ok());
            let found = discover_at(&server, now, &user, public(i));
            black_box(found.is_ok());
            drain(&server);
        }
        start.elapsed()
    };
    let mut run_bare = |slice: &[usize]| {
        let start = Instant::now();
        for &i in slice {
            let key = PublicNetwork::from_ip(public(i), 64);
            map.insert(key, i as u64);
            black_box(map.get(&key));
            map.insert(key, i as u64);
            black_box(map.get(&key));
        }
        start.elapsed()
    };
    for pass in 0..PASSES {
        for (k, slice) in order.chunks(SLICE).enumerate() {
            let (c, b) = if (pass + k) % 2 == 0 {
                let c = run_core(slice);
                (c, run_bare(slice))
            } else {
                let b = run_bare(slice);
                (run_core(slice), b)
            };
            ratios.push(c.as_secs_f64() / b.as_secs_f64());
            core += c;
            bare += b;
        }
    }
    // The same work as two separate loops per pass (each loop over all 200 000 networks, as
    // the first version of this bench measured): each side then has the caches to itself.
    let (mut core_alone, mut bare_alone) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..PASSES {
        core_alone += run_core(&order);
        bare_alone += run_bare(&order);
    }
    ratios.sort_by(f64::total_cmp);
    let quantile = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    let ops = (PASSES * 2 * order.len()) as f64;
    let core_rate = ops / core.as_secs_f64();
    let bare_rate = ops / bare.as_secs_f64();
    println!(
        "ratio ({n} networks): announce+discover {:.2} M ops/s (target >= 1 M); bare HashMap insert+lookup {:.2} M ops/s; cost {:.2}x the baseline (median of {} slices, interquartile {:.2}-{:.2}; target <= 2x); in separate loops {:.2} vs {:.2} M ops/s, {:.2}x",
        core_rate / 1e6,
        bare_rate / 1e6,
        quantile(0.5),
        ratios.len(),
        quantile(0.25),
        quantile(0.75),
        ops / core_alone.as_secs_f64() / 1e6,
        ops / bare_alone.as_secs_f64() / 1e6,
        core_alone.as_secs_f64() / bare_alone.as_secs_f64(),
    );
}

/// The populations to measure: `SIZES`, or those listed in `LANLINK_BENCH_SIZES`.
fn sizes() -> Vec<usize> {
    match std::env::var("LANLINK_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("LANLINK_BENCH_SIZES: comma-separated counts")
            })
            .collect(),
        Err(_) => SIZES.to_vec(),
    }
}

fn main() {
    let sizes = sizes();
    if std::env::var_os("LANLINK_BENCH_RATIO_ONLY").is_none() {
        let mut criterion = Criterion::default().configure_from_args();
        for &n in &sizes {
            bench_size(&mut criterion, n);
        }
        criterion.final_summary();
    }
    for &n in &sizes {
        ratio(n);
    }
}
