//! Guessing budgets under concurrency and against attackers with many addresses (in memory):
//! guesses interleaved step by step over a store that yields at every call, a burst on a
//! multi-threaded runtime, and attackers holding an IPv6 /32 or 10,000 spread IPv4 addresses
//! guessing for a whole code lifetime on a virtual clock. Redis and HTTP: `tests/redis.rs`.

mod support;
use support::gated::{interleave, Gate, Gated, YieldOnce};
use support::steps::Steps;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, TimeDelta, Utc};
use lanlink::server::{Events, MemoryStore, Redeemed, Server, ServerConfig, StoreError};
use lanlink::wire::RedeemRequest;
use lanlink::{AccountId, ForwardedHeaders, InstanceId, LinkCode, PublicNetwork, Refusal};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("time")
}

/// The in-memory store, yielding before every call: operations on it interleave at every store
/// step, as they would on a shared store with many instances.
type Yielding = Gated<MemoryStore, Yields>;

/// The gate of [`Yielding`]: pending once (waking itself), then on.
#[derive(Default)]
struct Yields;

impl Gate for Yields {
    fn before(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(async {
            YieldOnce::new(true).await;
            Ok(())
        })
    }
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<Redeemed, Refusal>> + 'a>>;

fn account(name: &str) -> AccountId {
    AccountId::new(name).expect("account")
}

fn checked(result: &Result<Redeemed, Refusal>) -> bool {
    !matches!(
        result,
        Err(Refusal::LockedOut
            | Refusal::CodesSuspended
            | Refusal::Store(lanlink::server::StoreError::Contention))
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Guesses from addresses of one /24 (some sharing an address), interleaved at every store
    /// step in any order: no address has more than its threshold (5) of wrong guesses checked,
    /// the /24 no more than its own (32), and a right code among them redeems only if it was
    /// admitted.
    #[test]
    fn interleaved_guesses_never_pass_a_budget(
        hosts in prop::collection::vec(1u8..12, 20..80),
        right_at in 0usize..80,
        schedule in prop::collection::vec(0usize..1000, 1..200),
    ) {
        let store = Arc::new(Yielding::default());
        let service = Server::with_store(ServerConfig::default(), store.clone(), Events::discard()).expect("config");
        let now = start();
        let mut rng = StdRng::seed_from_u64(7);
        let right = ready(service.mint_code(now, &mut rng, &account("alice"))).expect("mint").code;
        let right_at = right_at % hosts.len();
        let requests: Vec<(PublicNetwork, RedeemRequest)> = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let network = PublicNetwork::from_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, *host)), 64);
                let code = if i == right_at {
                    right.clone()
                } else {
                    // Wrong: never the right code (a 6-digit code other than it).
                    let text = format!("{:06}", (i as u32 * 7919 + 1) % 1_000_000);
                    let wrong = LinkCode::parse(&text).expect("code");
                    if wrong.expose() == right.expose() {
                        LinkCode::parse("0000000").expect("code")
                    } else {
                        wrong
                    }
                };
                (network, RedeemRequest::new(InstanceId::from_bytes([i as u8; 16]), code))
            })
            .collect();
        let rngs: Vec<Mutex<StdRng>> = (0..requests.len()).map(|i| Mutex::new(StdRng::seed_from_u64(i as u64))).collect();
        let futures: Vec<Boxed<'_>> = requests
            .iter()
            .zip(&rngs)
            .map(|((network, request), rng)| {
                let service = &service;
                Box::pin(async move {
                    let mut rng = rng.lock().expect("rng").clone();
                    service.redeem(now, &mut rng, *network, request).await
                }) as Boxed<'_>
            })
            .collect();
        let results = interleave(futures, &schedule);
        let mut per_host = std::collections::HashMap::<u8, usize>::new();
        let mut wrong_checked = 0;
        for (i, result) in results.iter().enumerate() {
            if i == right_at {
                prop_assert!(matches!(result, Ok(_) | Err(Refusal::LockedOut)), "{result:?}");
                continue;
            }
            prop_assert!(result.is_err(), "a wrong code redeemed");
            if checked(result) {
                prop_assert!(matches!(result, Err(Refusal::UnknownCode)), "{result:?}");
                *per_host.entry(hosts[i]).or_default() += 1;
                wrong_checked += 1;
            }
        }
        prop_assert!(per_host.values().all(|n| *n <= 5), "{per_host:?}");
        prop_assert!(wrong_checked <= 32, "{wrong_checked}");
        // What was charged is what was checked: the address budgets in the store agree.
        let inner = &store.inner;
        for (host, n) in &per_host {
            let network = PublicNetwork::from_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, *host)), 64);
            prop_assert_eq!(inner.failures(&network, now), *n as u64);
        }
    }
}

/// Polls a future over the in-memory store to completion (its calls never wait on IO).
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
}

/// 300 concurrent redemptions from one IPv4 address on a two-thread runtime through the
/// a server over a shared in-memory store, the right code at a random place in the burst: at most the threshold
/// (5) of wrong codes are checked; the right code, if it came after, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_one_address_has_at_most_the_threshold_checked() {
    let store = Arc::new(MemoryStore::default());
    let service = Arc::new(
        Server::with_store(ServerConfig::default(), store.clone(), Events::discard())
            .expect("config"),
    );
    let now = start();
    let right = service
        .mint_code(now, &mut lanlink::os_rng(), &account("alice"))
        .await
        .expect("mint")
        .code;
    let right_at = lanlink::os_rng().random_range(0..300usize);
    let network = PublicNetwork::from_ip("198.51.100.7".parse().expect("ip"), 64);
    let tasks: Vec<_> = (0..300usize)
        .map(|i| {
            let service = Arc::clone(&service);
            let code = if i == right_at {
                right.clone()
            } else {
                LinkCode::parse("abcdef").expect("a code no format mints")
            };
            tokio::spawn(async move {
                let request = RedeemRequest::new(InstanceId::from_bytes([1; 16]), code);
                service
                    .redeem(now, &mut lanlink::os_rng(), network, &request)
                    .await
            })
        })
        .collect();
    let mut checked_count = 0;
    let mut right_result = None;
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.expect("task");
        if i == right_at {
            right_result = Some(result.is_ok());
        }
        if checked(&result) {
            checked_count += 1;
        }
    }
    // The right code, when admitted, is checked too and refunded: wrong ones stay at most 5.
    let linked = right_result == Some(true);
    let wrong_checked = checked_count - usize::from(linked);
    assert!(wrong_checked <= 5, "{wrong_checked} wrong guesses checked");
    let failures = store.failures(&network, now);
    assert_eq!(failures as usize + usize::from(linked), checked_count);
    assert!(store.is_locked(&network, now));
}

/// The in-memory server, each step driven at once, on a virtual clock: one guess every 10 ms for a whole code lifetime (10
/// minutes), each from an address of `attacker(i)`; returns how many were checked, and checks
/// that a code minted for bob and redeemed from bob's own network during the attack links.
fn attack(attacker: impl Fn(usize) -> IpAddr, shorts_suspend: bool) -> usize {
    let server = Server::new(ServerConfig::default()).expect("config");
    let mut rng = StdRng::seed_from_u64(42);
    let t0 = start();
    // The victim's code, minted before the attack: the attacker's target.
    let victim = server
        .mint_code_now(t0, &mut rng, &account("alice"))
        .expect("mint")
        .code;
    let guesses = 60_000usize;
    let mut checked_count = 0;
    let mut bob_linked = false;
    for i in 0..guesses {
        let now = t0 + TimeDelta::milliseconds(10 * i as i64);
        let guess = format!("{:06}", (i * 7) % 1_000_000);
        let code = LinkCode::parse(&guess).expect("code");
        let request = RedeemRequest::new(InstanceId::from_bytes([9; 16]), code);
        let result =
            server.redeem_now(now, &mut rng, attacker(i), ForwardedHeaders::NONE, &request);
        if let Ok(redeemed) = &result {
            assert_ne!(
                redeemed.account,
                account("alice"),
                "the attacker won the victim's code"
            );
        }
        if checked(&result) {
            checked_count += 1;
        }
        if i == guesses / 2 {
            // Half-way through, bob links a device by hand from his own network.
            let code = server
                .mint_code_now(now, &mut rng, &account("bob"))
                .expect("bob's mint")
                .code;
            if shorts_suspend {
                assert_eq!(code.expose().len(), 10, "minted in the fallback format");
            }
            let request = RedeemRequest::new(InstanceId::from_bytes([2; 16]), code);
            let bob = "192.0.2.200".parse().expect("ip");
            let redeemed = server
                .redeem_now(now, &mut rng, bob, ForwardedHeaders::NONE, &request)
                .expect("bob's redemption succeeds during the attack");
            assert_eq!(redeemed.account, account("bob"));
            bob_linked = true;
        }
    }
    assert!(bob_linked);
    // The victim's code (if not guessed) still expired unguessed.
    drop(victim);
    checked_count
}

/// An attacker holding one IPv6 /32 (a fresh /64 for every guess, spread over its /48s) gets at
/// most the /32's threshold (48) of guesses checked in one code lifetime: the table's bound of
/// 48 in 10⁶ for one code.
#[test]
fn an_ipv6_slash_32_gets_at_most_its_threshold_per_code_lifetime() {
    let mut rng = StdRng::seed_from_u64(1);
    let prefixes: Vec<(u16, u16)> = (0..60_000).map(|_| (rng.random(), rng.random())).collect();
    let checked_count = attack(
        |i| {
            let (a, b) = prefixes[i];
            IpAddr::V6(Ipv6Addr::new(0x2001, 0x0db8, a, b, 0, 0, 0, 1))
        },
        false,
    );
    assert!(checked_count <= 48, "{checked_count} checked");
    assert!(
        checked_count >= 16,
        "the budget is used, not refused outright ({checked_count})"
    );
}

/// 10,000 IPv4 addresses in 10,000 different /16s, each guessing as fast as its own budget
/// allows (6 tries each): the global budget bounds the guesses checked at short codes to 1,000
/// per lifetime (1 in 1,000 for one code), and bob still links with a code minted in the
/// fallback format while short codes are suspended.
#[test]
fn ten_thousand_spread_addresses_are_bounded_by_the_global_budget() {
    let checked_count = attack(
        |i| {
            let n = (i / 6) % 10_000;
            IpAddr::V4(Ipv4Addr::new(11 + (n / 256) as u8, (n % 256) as u8, 0, 1))
        },
        true,
    );
    assert!(checked_count <= 1_000, "{checked_count} checked");
    assert!(
        checked_count >= 900,
        "the global budget is reached ({checked_count})"
    );
}
