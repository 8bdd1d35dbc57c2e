//! `Records`, the layer that makes any `Store` a server's backend, over the in-memory byte store:
//! two instances sharing one store act as one; guesses interleaved at every store call never pass
//! a budget; a fault at any store call (before it applies, or after, with its reply lost) never
//! charges a guess twice, never loses one, and never leaves a code used by a redemption that
//! failed; names and values at rest carry no address, secret or code; an expired value the
//! store still holds reads as absent.
#![cfg(feature = "shared-store")]

mod support;
use support::announcement;
use support::gated::{interleave, run as ready, YieldOnce};

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use lanlink::server::User;
use lanlink::server::{
    Backend, CodeSpace, CounterKey, Events, Key, MemoryBytes, Records, RecordsConfig, Redeemed,
    Server, ServerConfig, Store, StoreError, StoreKey, Write,
};
use lanlink::wire::{AgentMessage, LinkRequest, RedeemRequest};
use lanlink::{AccountId, InstanceId, LinkCode, PublicNetwork, Refusal};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("time")
}

fn key() -> StoreKey {
    StoreKey::from_bytes([7; 32])
}

fn account(name: &str) -> AccountId {
    AccountId::new(name).expect("account")
}

/// What the store does at a chosen call (numbered from 0 over loads and swaps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Fails as unavailable without applying.
    Before,
    /// Applies, then answers unavailable (its reply lost).
    After,
    /// Refused without applying: the store knows it did not run.
    Refused,
}

/// A byte store that yields before every call, and fails the call chosen.
#[derive(Default)]
struct Faulty {
    inner: MemoryBytes,
    calls: AtomicUsize,
    fault: Mutex<Option<(usize, Fault)>>,
    /// Further calls that fail as unavailable without applying (numbered as `calls`).
    also: Mutex<Vec<usize>>,
    yields: bool,
}

impl Faulty {
    fn yielding() -> Self {
        Self {
            yields: true,
            ..Self::default()
        }
    }

    fn fault_at(&self, n: usize, fault: Fault) {
        *self.fault.lock().expect("lock") = Some((self.calls.load(Ordering::SeqCst) + n, fault));
    }

    /// Drops the chosen fault; whether it had fired.
    fn disarm(&self) -> bool {
        self.fault.lock().expect("lock").take().is_none()
    }

    async fn call(&self) -> Option<Fault> {
        if self.yields {
            YieldOnce::new(true).await;
        }
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.also.lock().expect("lock").contains(&call) {
            return Some(Fault::Before);
        }
        let mut fault = self.fault.lock().expect("lock");
        match *fault {
            Some((at, what)) if at == call => {
                *fault = None;
                Some(what)
            }
            _ => None,
        }
    }
}

#[async_trait]
impl Store for Faulty {
    async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        match self.call().await {
            Some(Fault::Refused) => Err(StoreError::Refused),
            Some(_) => Err(StoreError::Unavailable),
            None => self.inner.load(key).await,
        }
    }

    async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
        match self.call().await {
            Some(Fault::Before) => Err(StoreError::Unavailable),
            Some(Fault::Refused) => Err(StoreError::Refused),
            Some(Fault::After) => {
                self.inner.swap(writes).await?;
                Err(StoreError::Unavailable)
            }
            None => self.inner.swap(writes).await,
        }
    }

    async fn purge(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.purge(now).await
    }
}

/// The live charges of every guessing budget a guess from `ip` touches: each level of its
/// address and the code spaces' global budgets.
fn every_budget<S: Store>(records: &Records<S>, ip: Ipv4Addr, now: DateTime<Utc>) -> Vec<u64> {
    let mut keys: Vec<CounterKey> = [32u8, 24, 16, 8]
        .iter()
        .map(|len| {
            CounterKey::Guesses(ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(ip, *len).expect("prefix").trunc(),
            ))
        })
        .collect();
    keys.push(CounterKey::SpaceGuesses(CodeSpace::Manual));
    keys.push(CounterKey::SpaceGuesses(CodeSpace::Fallback));
    keys.iter()
        .map(|key| {
            let mut live = 0;
            ready(records.update_counter(key, now, &mut |record| {
                live = record.live(now.timestamp_millis());
            }))
            .expect("counter");
            live
        })
        .collect()
}

/// The live wrong guesses charged to `network`'s own budget.
fn failures<S: Store>(records: &Records<S>, network: PublicNetwork, now: DateTime<Utc>) -> u64 {
    let mut failures = 0;
    ready(
        records.update_counter(&CounterKey::network(&network), now, &mut |record| {
            failures = record.live(now.timestamp_millis());
        }),
    )
    .expect("counter");
    failures
}

fn home() -> PublicNetwork {
    PublicNetwork::from_ip("203.0.113.7".parse().expect("ip"), 64)
}

/// A device announced on one instance is discovered, linked and told through the other.
#[test]
fn two_instances_over_one_store_link_a_device() {
    let store = Arc::new(MemoryBytes::default());
    let server = |store: &Arc<MemoryBytes>| {
        let records = Records::new(store.clone(), RecordsConfig::new(key()));
        Server::with_store(ServerConfig::default(), records, Events::discard()).expect("config")
    };
    let (a, b) = (server(&store), server(&store));
    let now = start();
    let (announce, secret) = announcement(3, "192.168.1.50");
    let id = announce.instance_id;
    ready(a.announce(now, home(), &announce)).expect("announce");
    let found = ready(b.discover(now, home(), &User::new(account("alice")))).expect("discover");
    assert_eq!(found.agents.len(), 1);
    let mut rng = StdRng::seed_from_u64(1);
    let user = User::new(account("alice"));
    ready(b.link(
        now,
        &mut rng,
        home(),
        &user,
        LinkRequest::new(id, secret.clone()),
    ))
    .expect("link");
    // The agent's next announcement, on the other instance, carries the secret to verify.
    let reply = ready(a.announce(now, home(), &announce)).expect("poll");
    assert!(
        reply
            .messages
            .iter()
            .any(|message| matches!(message, AgentMessage::VerifyAndRedeem { .. })),
        "{reply:?}"
    );
    // Nothing at rest names the network; no value holds the secret or JSON in the clear.
    let secret_hex = secret.to_hex();
    for stored in store.keys() {
        assert!(!stored.as_str().contains("203"), "{stored:?}");
        let value = ready(store.load(&stored)).expect("load").expect("value");
        assert!(!value.windows(2).any(|w| w == b"{\""), "JSON in the clear");
        assert!(
            !value.windows(8).any(|w| w == &secret_hex.as_bytes()[..8]),
            "the secret in the clear"
        );
    }
    // Another key opens nothing: the record reads as corrupt, not as absent or as another's.
    let other = Records::new(
        store.clone(),
        RecordsConfig::new(StoreKey::from_bytes([8; 32])),
    );
    let mut seen = 0;
    let read = ready(other.read_network(home(), now, &ServerConfig::default(), &mut |_| seen += 1));
    assert!(
        matches!(read, Ok(false)),
        "another key names other keys: {read:?}"
    );
    let theirs = Records::new(store.clone(), RecordsConfig::new(key()));
    let net = theirs.network_key(&home());
    let value = ready(store.load(&net)).expect("load").expect("value");
    let code = LinkCode::parse("abcdef").expect("code").key();
    let copied = theirs.code_key(&code);
    let at = now + TimeDelta::hours(1);
    assert!(ready(store.swap(&[Write::new(&copied, None, Some((&value, at)))])).expect("swap"));
    // A value moved to another key does not open there (the key's name is sealed in).
    let moved = ready(theirs.update_code(&code, now, &mut |_| {}));
    assert_eq!(moved, Err(StoreError::Corrupt));
}

/// A network's record that expired but is still held reads as absent, and a purge drops it.
#[test]
fn an_expired_value_still_held_reads_as_absent() {
    let store = Arc::new(MemoryBytes::default());
    let records = Records::new(store.clone(), RecordsConfig::new(key()));
    let server =
        Server::with_store(ServerConfig::default(), records, Events::discard()).expect("config");
    let now = start();
    let (announce, _secret) = announcement(4, "192.168.1.50");
    ready(server.announce(now, home(), &announce)).expect("announce");
    let later = now + TimeDelta::days(3);
    let held = store.len();
    assert!(held > 0);
    let records = Records::new(store.clone(), RecordsConfig::new(key()));
    let read = ready(records.read_network(home(), later, &ServerConfig::default(), &mut |_| {}));
    assert_eq!(read, Ok(false), "an expired record reads as absent");
    let mut seen = None;
    let updated = ready(records.update_network(
        home(),
        later,
        &ServerConfig::default(),
        false,
        &mut |record| seen = Some(record.present(later)),
    ));
    assert_eq!((updated, seen), (Ok(false), None), "and is not updated");
    assert_eq!(store.len(), held, "nothing dropped by a read");
    let found =
        ready(server.discover(later, home(), &User::new(account("alice")))).expect("discover");
    assert!(found.agents.is_empty());
    ready(server.purge_expired(later + TimeDelta::days(3))).expect("purge");
    assert!(store.is_empty(), "{:?}", store.keys());
}

/// A wrong guess and a right one, each with a fault at its `n`th store call: the guess is
/// charged once or not at all, and the code is used only by a redemption that succeeded.
#[test]
fn a_fault_at_any_store_call_charges_once_and_uses_a_code_only_on_success() {
    for fault in [Fault::Before, Fault::After] {
        for n in 0.. {
            let store = Arc::new(Faulty::default());
            let records = Records::new(store.clone(), RecordsConfig::new(key()));
            let server = Server::with_store(ServerConfig::default(), records, Events::discard())
                .expect("config");
            let now = start();
            let mut rng = StdRng::seed_from_u64(n as u64);
            let code = ready(server.mint_code(now, &mut rng, &account("alice")))
                .expect("mint")
                .code;
            let guesser = PublicNetwork::from_ip(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)), 64);
            let check = Records::new(store.clone(), RecordsConfig::new(key()));

            store.fault_at(n, fault);
            let wrong = RedeemRequest::new(
                InstanceId::from_bytes([5; 16]),
                LinkCode::parse("abcdef").expect("code"),
            );
            let result = ready(server.redeem(now, &mut rng, guesser, &wrong));
            let wrong_fired = store.disarm();
            let charged = failures(&check, guesser, now);
            let budgets = every_budget(&check, Ipv4Addr::new(198, 51, 100, 9), now);
            assert!(
                budgets.iter().all(|n| *n <= 1),
                "{fault:?} at {n}: {budgets:?}"
            );
            if matches!(result, Err(Refusal::UnknownCode)) {
                assert!(
                    budgets.iter().filter(|n| **n == 1).count() >= 2,
                    "{budgets:?}"
                );
            }
            match &result {
                Err(Refusal::UnknownCode) => {
                    assert_eq!(charged, 1, "{fault:?} at {n}: a refused guess charged once")
                }
                Err(Refusal::Store(_)) => {
                    assert!(charged <= 1, "{fault:?} at {n}: charged {charged} times")
                }
                other => panic!("{fault:?} at {n}: {other:?}"),
            }

            store.fault_at(n, fault);
            let right = RedeemRequest::new(InstanceId::from_bytes([6; 16]), code.clone());
            let first = ready(server.redeem(now, &mut rng, home(), &right));
            let right_fired = store.disarm();
            // Whatever the first attempt said, the retry says the truth: linked once.
            let again = ready(server.redeem(now, &mut rng, home(), &right));
            // The right code is refunded once checked; only the replay of a used code is
            // charged (a replay counts as a guess).
            let replayed = match (&first, &again) {
                (Ok(Redeemed { .. }), Err(Refusal::CodeUsed)) => 1,
                (Err(Refusal::Store(_)), Ok(_)) => 0,
                other => panic!("{fault:?} at {n}: {other:?}"),
            };
            assert_eq!(failures(&check, home(), now), replayed, "{fault:?} at {n}");
            if !wrong_fired && !right_fired {
                // Past the last call of both redemptions: every call has had its fault.
                assert!(n >= 4, "{fault:?}: only {n} store calls");
                break;
            }
        }
    }
}

/// A swap the store refused is not read back (nothing was written): the operation fails at
/// once; a swap whose reply was lost is read back.
#[test]
fn a_refused_swap_fails_at_once_and_a_lost_one_is_read_back() {
    let calls = |fault: Fault| {
        let store = Arc::new(Faulty::default());
        let records = Records::new(store.clone(), RecordsConfig::new(key()));
        let server = Server::with_store(ServerConfig::default(), records, Events::discard())
            .expect("config");
        let guesser = PublicNetwork::from_ip(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)), 64);
        let wrong = RedeemRequest::new(
            InstanceId::from_bytes([5; 16]),
            LinkCode::parse("abcdef").expect("code"),
        );
        // Call 0 loads the first budget, call 1 swaps it.
        store.fault_at(1, fault);
        let before = store.calls.load(Ordering::SeqCst);
        let result = ready(server.redeem(start(), &mut StdRng::seed_from_u64(1), guesser, &wrong));
        (result, store.calls.load(Ordering::SeqCst) - before)
    };
    let (refused, refused_calls) = calls(Fault::Refused);
    assert!(
        matches!(refused, Err(Refusal::Store(StoreError::Refused))),
        "{refused:?}"
    );
    assert_eq!(
        refused_calls, 2,
        "a load and the refused swap: no reading back"
    );
    let (lost, lost_calls) = calls(Fault::After);
    assert!(
        matches!(lost, Err(Refusal::UnknownCode)),
        "read back, recognised, and the guess checked: {lost:?}"
    );
    assert!(lost_calls > 2, "{lost_calls}");
}

/// A lost reply read back while the store keeps failing: the read-back tries again until a load
/// answers, and the guess is charged once (with a single read-back attempt the operation would
/// fail unavailable).
#[test]
fn a_read_back_retries_while_the_store_keeps_failing() {
    let store = Arc::new(Faulty::default());
    let records = Records::new(store.clone(), RecordsConfig::new(key()));
    let server =
        Server::with_store(ServerConfig::default(), records, Events::discard()).expect("config");
    let guesser = PublicNetwork::from_ip(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)), 64);
    let wrong = RedeemRequest::new(
        InstanceId::from_bytes([5; 16]),
        LinkCode::parse("abcdef").expect("code"),
    );
    // Call 0 loads the first budget, call 1 swaps it and loses its reply, calls 2 to 4 (the
    // read-back's loads) fail, call 5 answers.
    let now = store.calls.load(Ordering::SeqCst);
    store.fault_at(1, Fault::After);
    store
        .also
        .lock()
        .expect("lock")
        .extend([now + 2, now + 3, now + 4]);
    let result = ready(server.redeem(start(), &mut StdRng::seed_from_u64(1), guesser, &wrong));
    assert!(matches!(result, Err(Refusal::UnknownCode)), "{result:?}");
    let check = Records::new(store.clone(), RecordsConfig::new(key()));
    assert_eq!(failures(&check, guesser, start()), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Guesses from addresses of one /24, through two instances over one store, interleaved at
    /// every store call in any order: no address has more than its threshold (5) of wrong
    /// guesses checked, and what was charged is what was checked.
    #[test]
    fn interleaved_guesses_through_two_instances_never_pass_a_budget(
        hosts in prop::collection::vec(1u8..6, 10..40),
        schedule in prop::collection::vec(0usize..1000, 1..200),
    ) {
        let store = Arc::new(Faulty::yielding());
        let server = |store: &Arc<Faulty>| {
            let records = Records::new(store.clone(), RecordsConfig::new(key()));
            Server::with_store(ServerConfig::default(), records, Events::discard()).expect("config")
        };
        let (a, b) = (server(&store), server(&store));
        let now = start();
        let requests: Vec<(PublicNetwork, RedeemRequest)> = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let network = PublicNetwork::from_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, *host)), 64);
                let code = LinkCode::parse("abcdef").expect("a code no format mints");
                (network, RedeemRequest::new(InstanceId::from_bytes([i as u8; 16]), code))
            })
            .collect();
        type Boxed<'a> = Pin<Box<dyn Future<Output = Result<Redeemed, Refusal>> + 'a>>;
        let futures: Vec<Boxed<'_>> = requests
            .iter()
            .enumerate()
            .map(|(i, (network, request))| {
                let server = if i % 2 == 0 { &a } else { &b };
                Box::pin(async move {
                    let mut rng = StdRng::seed_from_u64(i as u64);
                    server.redeem(now, &mut rng, *network, request).await
                }) as Boxed<'_>
            })
            .collect();
        let results = interleave(futures, &schedule);
        let mut per_host = std::collections::HashMap::<u8, u64>::new();
        for (i, result) in results.iter().enumerate() {

            if matches!(result, Err(Refusal::UnknownCode)) {
                *per_host.entry(hosts[i]).or_default() += 1;
            }
        }
        prop_assert!(per_host.values().all(|n| *n <= 5), "{per_host:?}");
        let check = Records::new(store.clone(), RecordsConfig::new(key()));
        for (host, n) in &per_host {
            let network = PublicNetwork::from_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, *host)), 64);
            prop_assert_eq!(failures(&check, network, now), *n);
        }
    }
}
