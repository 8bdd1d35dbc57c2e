//! The store suite (`lanlink::conformance::store`) on the crate's `MemoryBytes`, on the SQLite
//! store of `examples/sqlite_store` (one connection, and two connections to one file taking
//! turns), and on deliberately broken stores: each fails exactly the checks its flaw breaks, and
//! every check fails for at least one of them (no check that cannot fail). Then two `Server`s,
//! each over its own connection to one SQLite file, link devices with their steps alternating
//! between the instances, and hold one guessing budget while guesses race through both (and do
//! not, over a SQLite store whose swap is not one transaction).
#![cfg(feature = "conformance")]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lanlink::conformance::store::{check_store, StoreSuite, STORE_CHECKS};
use lanlink::conformance::Report;
use lanlink::server::{Key, MemoryBytes, Store, StoreError, Write};

#[path = "../examples/sqlite_store/store.rs"]
mod sqlite_store;
use sqlite_store::SqliteStore;

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn assert_complete(report: &Report, what: &str) {
    println!("{what}:\n{report}");
    assert!(report.complete(), "{what}: {}", report.summary());
    assert_eq!(report.checks().len(), STORE_CHECKS.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bytes_passes_every_check_twice_on_one_instance() {
    let store: Arc<dyn Store> = Arc::new(MemoryBytes::default());
    for run in 0..2 {
        let report = check_store(Arc::clone(&store), now()).await;
        assert_complete(&report, &format!("MemoryBytes, run {run}"));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn memory_bytes_passes_on_one_thread_with_more_racers() {
    let suite = StoreSuite::new().racers(16).rounds(3);
    let report = suite.run(Arc::new(MemoryBytes::default()), now()).await;
    assert_complete(&report, "MemoryBytes, 16 racers, one thread");
}

/// A SQLite file under the temporary directory, removed (with its WAL files) on drop.
pub struct TempDb(pub PathBuf);

impl TempDb {
    pub fn new(name: &str) -> Self {
        let mut bytes = [0u8; 8];
        rand::RngCore::fill_bytes(&mut lanlink::os_rng(), &mut bytes);
        let tag: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(std::env::temp_dir().join(format!("lanlink-{name}-{tag}.db")))
    }

    pub fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.0).expect("open the SQLite file")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_passes_every_check_twice() {
    let db = TempDb::new("suite");
    let store: Arc<dyn Store> = Arc::new(db.open());
    for run in 0..2 {
        let report = check_store(Arc::clone(&store), now()).await;
        assert_complete(&report, &format!("SqliteStore, run {run}"));
    }
}

/// Two connections to one file, taking turns call by call: every race is between connections,
/// as between two server instances.
struct Alternating {
    stores: [SqliteStore; 2],
    next: AtomicUsize,
}

impl Alternating {
    fn pick(&self) -> &SqliteStore {
        &self.stores[self.next.fetch_add(1, Ordering::Relaxed) % 2]
    }
}

#[async_trait]
impl Store for Alternating {
    async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        self.pick().load(key).await
    }
    async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
        self.pick().swap(writes).await
    }
    async fn purge(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.pick().purge(now).await
    }
    async fn pause(&self, attempt: u32) {
        self.pick().pause(attempt).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqlite_connections_to_one_file_pass_every_check() {
    let db = TempDb::new("suite2");
    let store = Alternating {
        stores: [db.open(), db.open()],
        next: AtomicUsize::new(0),
    };
    let report = check_store(Arc::new(store), now()).await;
    assert_complete(&report, "two SqliteStore connections to one file");
}

/// What a broken store gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Flaw {
    /// Answers `Some(empty)` for a key that holds nothing.
    AbsentIsEmpty,
    /// Applies every swap, whatever the keys hold.
    NoCompare,
    /// Applies a write when the held value starts with the expected bytes.
    PrefixCompare,
    /// Applies a write expecting a value at a key that holds none.
    AbsentMatches,
    /// Answers true to a delete and keeps the value.
    IgnoresDelete,
    /// Applies the first write if its expectation holds, then checks the second.
    FirstThenSecond,
    /// Compares, lets other callers run, then writes: not atomic across callers.
    SplitSwap,
    /// `load_many` answers the values in reverse order.
    ReorderMany,
    /// Truncates values to 64 KiB.
    Truncates,
    /// Stores an empty value as no value.
    EmptyIsAbsent,
    /// Keys values by slot only, ignoring the kind.
    SlotOnly,
    /// Keeps only the first 20 characters of a key (a fixed-width column).
    KeyWidth20,
    /// Purges a second early.
    EarlyPurge,
    /// Never purges.
    NoPurge,
    /// Keeps a key's first expiry when it is rewritten.
    FirstExpiry,
    /// Answers false to every other swap it applies (as a client that resends a swap whose
    /// reply timed out, and reports the resend's answer).
    ResendFalse,
    /// Answers true to every other swap and writes nothing (an acknowledgement before the
    /// write, lost in a crash or a failover).
    AckWithoutWrite,
}

/// Each flaw and the checks it fails, exactly (but for `MAY_ALSO_FAIL`).
const CAUGHT: &[(Flaw, &[&str])] = &[
    (
        Flaw::AbsentIsEmpty,
        &[
            "store.load.absent",
            "store.swap.absent",
            "store.delete",
            "store.swap.two_keys",
            "store.race.counter",
            "store.keys.independent",
            "store.expiry.purged",
            "store.expiry.rewritten",
            "store.records.two_instances",
            "store.records.budget",
            "store.records.fault.wrong_guess",
            "store.records.fault.redeem",
            "store.records.fault.link",
        ],
    ),
    (
        Flaw::NoCompare,
        &[
            "store.create.once",
            "store.swap.exact",
            "store.swap.absent",
            "store.delete",
            "store.swap.two_keys",
            "store.race.swap",
            "store.race.create",
            "store.race.two_keys",
            "store.race.counter",
            "store.value.empty",
        ],
    ),
    (Flaw::PrefixCompare, &["store.swap.exact"]),
    (Flaw::AbsentMatches, &["store.swap.absent"]),
    (
        Flaw::IgnoresDelete,
        &[
            "store.delete",
            "store.swap.two_keys",
            "store.keys.independent",
            "store.records.fault.redeem",
            "store.records.fault.link",
        ],
    ),
    (Flaw::FirstThenSecond, &["store.swap.two_keys"]),
    (
        Flaw::SplitSwap,
        &[
            "store.race.swap",
            "store.race.create",
            "store.race.two_keys",
            "store.race.counter",
            "store.records.budget",
        ],
    ),
    (
        Flaw::ReorderMany,
        &[
            "store.load_many",
            "store.records.two_instances",
            "store.records.fault.link",
        ],
    ),
    (Flaw::Truncates, &["store.value.large"]),
    (Flaw::EmptyIsAbsent, &["store.value.empty"]),
    (
        Flaw::SlotOnly,
        &[
            "store.swap.two_keys",
            "store.race.two_keys",
            "store.load_many",
            "store.keys.independent",
            "store.records.two_instances",
            "store.records.fault.link",
        ],
    ),
    (Flaw::KeyWidth20, &["store.keys.independent"]),
    (
        Flaw::EarlyPurge,
        &["store.expiry.kept", "store.expiry.purged"],
    ),
    (
        Flaw::NoPurge,
        &["store.expiry.purged", "store.expiry.rewritten"],
    ),
    (Flaw::FirstExpiry, &["store.expiry.rewritten"]),
    (
        Flaw::ResendFalse,
        &[
            "store.swap.exact",
            "store.delete",
            "store.swap.two_keys",
            "store.race.swap",
            "store.race.create",
            "store.race.two_keys",
            "store.race.counter",
            "store.load_many",
            "store.value.large",
            "store.value.empty",
            "store.keys.independent",
            "store.expiry.kept",
            "store.expiry.purged",
            "store.expiry.rewritten",
            "store.records.fault.redeem",
            "store.records.fault.link",
        ],
    ),
    (
        Flaw::AckWithoutWrite,
        &[
            "store.swap.exact",
            "store.delete",
            "store.swap.two_keys",
            "store.race.swap",
            "store.race.create",
            "store.race.two_keys",
            "store.race.counter",
            "store.value.large",
            "store.value.empty",
            "store.keys.independent",
            "store.expiry.kept",
            "store.expiry.rewritten",
            "store.records.two_instances",
            "store.records.fault.wrong_guess",
            "store.records.fault.redeem",
            "store.records.fault.link",
        ],
    ),
];

/// Checks a flaw may fail besides its own, depending on how its run goes: without a compare,
/// whether two instances' guesses overwrite each other's charges depends on which versions
/// each instance's cache holds, which depends on the random key names (about 1 run in 20
/// passes).
const MAY_ALSO_FAIL: &[(Flaw, &[&str])] = &[(Flaw::NoCompare, &["store.records.budget"])];

/// `MemoryBytes` with one flaw. Its swap compares, then writes: atomic only on a single-threaded
/// runtime (where nothing runs in between unless the flaw yields), so its tests run on one.
struct Broken {
    inner: MemoryBytes,
    flaw: Flaw,
    /// For `FirstExpiry`: each key's first expiry.
    first: Mutex<HashMap<Key, DateTime<Utc>>>,
    /// For `ResendFalse`: the swaps applied.
    applied: AtomicUsize,
}

impl Broken {
    fn new(flaw: Flaw) -> Self {
        Self {
            inner: MemoryBytes::default(),
            flaw,
            first: Mutex::new(HashMap::new()),
            applied: AtomicUsize::new(0),
        }
    }

    /// The key the flaw stores `key` under.
    fn stored(&self, key: &Key) -> Key {
        match self.flaw {
            Flaw::SlotOnly => Key::new("net", key.slot()).expect("key"),
            Flaw::KeyWidth20 if key.as_str().len() > 20 => {
                let name = &key.as_str()[..20];
                Key::new(key.kind(), &name[key.kind().len() + 1..]).expect("key")
            }
            _ => key.clone(),
        }
    }

    /// Writes `write`'s new value whatever the key holds.
    async fn force(&self, write: &Write<'_>) -> Result<(), StoreError> {
        let key = self.stored(write.key());
        let held = self.inner.load(&key).await?;
        let mut new = write.value().zip(write.expires_at());
        if self.flaw == Flaw::Truncates {
            new = new.map(|(value, at)| (&value[..value.len().min(64 << 10)], at));
        }
        if self.flaw == Flaw::EmptyIsAbsent && new.is_some_and(|(value, _)| value.is_empty()) {
            new = None;
        }
        if self.flaw == Flaw::IgnoresDelete && new.is_none() {
            return Ok(());
        }
        if self.flaw == Flaw::FirstExpiry {
            let mut first = self.first.lock().expect("lock");
            match new {
                Some((value, at)) => new = Some((value, *first.entry(key.clone()).or_insert(at))),
                None => {
                    first.remove(&key);
                }
            }
        }
        let applied = self
            .inner
            .swap(&[Write::new(&key, held.as_deref(), new)])
            .await?;
        assert!(applied, "one caller at a time writes a broken store's key");
        Ok(())
    }

    /// Whether `write`'s expectation holds, as the flaw compares.
    async fn holds(&self, write: &Write<'_>) -> Result<bool, StoreError> {
        let held = self.inner.load(&self.stored(write.key())).await?;
        Ok(match (self.flaw, held.as_deref(), write.expected()) {
            (Flaw::NoCompare, ..) => true,
            (Flaw::PrefixCompare, Some(held), Some(expected)) => held.starts_with(expected),
            (Flaw::AbsentMatches, None, Some(_)) => true,
            (_, held, expected) => held == expected,
        })
    }
}

#[async_trait]
impl Store for Broken {
    async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        let held = self.inner.load(&self.stored(key)).await?;
        Ok(match (self.flaw, held) {
            (Flaw::AbsentIsEmpty, None) => Some(Vec::new()),
            (_, held) => held,
        })
    }

    async fn load_many(&self, keys: &[&Key]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut values = Vec::new();
        for key in keys {
            values.push(self.load(key).await?);
        }
        if self.flaw == Flaw::ReorderMany {
            values.reverse();
        }
        Ok(values)
    }

    async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
        if self.flaw == Flaw::FirstThenSecond {
            for write in writes {
                if !self.holds(write).await? {
                    return Ok(false);
                }
                self.force(write).await?;
            }
            return Ok(true);
        }
        for write in writes {
            if !self.holds(write).await? {
                return Ok(false);
            }
        }
        if self.flaw == Flaw::SplitSwap {
            tokio::task::yield_now().await;
        }
        let applied = self.applied.fetch_add(1, Ordering::SeqCst);
        if self.flaw == Flaw::AckWithoutWrite && applied % 2 == 1 {
            return Ok(true);
        }
        for write in writes {
            self.force(write).await?;
        }
        Ok(!(self.flaw == Flaw::ResendFalse && applied % 2 == 1))
    }

    async fn purge(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        match self.flaw {
            Flaw::NoPurge => Ok(()),
            Flaw::EarlyPurge => self.inner.purge(now + chrono::TimeDelta::seconds(1)).await,
            _ => self.inner.purge(now).await,
        }
    }
}

/// The checks a store fails.
fn failed(report: &Report) -> BTreeSet<&'static str> {
    report.failed_ids().into_iter().collect()
}

/// On one thread, so that the races interleave the same way every run: every racer reads and
/// compares before any writes.
#[tokio::test(flavor = "current_thread")]
async fn each_broken_store_fails_exactly_the_checks_its_flaw_breaks() {
    let mut wrong = Vec::new();
    for (flaw, want) in CAUGHT {
        let report = check_store(Arc::new(Broken::new(*flaw)), now()).await;
        let got = failed(&report);
        let want: BTreeSet<&str> = want.iter().copied().collect();
        let may: BTreeSet<&str> = MAY_ALSO_FAIL
            .iter()
            .filter(|(f, _)| f == flaw)
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        println!("{flaw:?}: fails {got:?}");
        if !want.is_subset(&got) || !got.is_subset(&(&want | &may)) {
            wrong.push(format!(
                "{flaw:?}: failed {got:?}, expected {want:?}\n{report}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_check_is_failed_by_some_broken_store() {
    let caught: BTreeSet<&str> = CAUGHT
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    let uncaught: Vec<&str> = STORE_CHECKS
        .iter()
        .map(|spec| spec.id)
        .filter(|id| !caught.contains(id))
        .collect();
    assert!(uncaught.is_empty(), "no broken store fails {uncaught:?}");
}

/// A broken store's failure is reported skipped when its check is opted out of, and only then.
#[tokio::test(flavor = "current_thread")]
async fn an_opted_out_failure_is_skipped() {
    let suite = StoreSuite::new().opt_out("store.expiry.rewritten");
    let report = suite
        .run(Arc::new(Broken::new(Flaw::FirstExpiry)), now())
        .await;
    assert!(report.passed(), "{report}");
    assert_eq!(report.skipped_ids(), ["store.expiry.rewritten"]);
    assert!(!report.complete());
}

/// A store whose database drops values by itself (as Redis does with TTLs): every load first
/// drops what expired by the wall clock; `purge` does nothing.
struct OwnExpiry(MemoryBytes);

#[async_trait]
impl Store for OwnExpiry {
    async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.purge(Utc::now()).await?;
        self.0.load(key).await
    }
    async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
        self.0.purge(Utc::now()).await?;
        self.0.swap(writes).await
    }
    async fn purge(&self, _now: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A store with its own expiry passes when the suite is told so; a store that never drops
/// anything does not. On one thread, as every test of a `Broken` store (its swap is atomic only
/// there).
#[tokio::test(flavor = "current_thread")]
async fn a_store_with_its_own_expiry_passes_when_told_and_one_without_fails() {
    let suite = StoreSuite::new().expires_by_itself(std::time::Duration::from_millis(200));
    let report = suite
        .run(Arc::new(OwnExpiry(MemoryBytes::default())), now())
        .await;
    assert_complete(&report, "a store with its own expiry");
    let report = suite.run(Arc::new(Broken::new(Flaw::NoPurge)), now()).await;
    assert_eq!(report.failed_ids(), ["store.expiry.purged"], "{report}");
    let report = check_store(Arc::new(OwnExpiry(MemoryBytes::default())), now()).await;
    assert!(
        report.failed_ids().contains(&"store.expiry.purged"),
        "{report}"
    );
}

mod two_instances {
    //! Two `Server`s, each over its own `SqliteStore` connection to one file (through
    //! `Records`), as two processes sharing a database.

    use super::*;
    use lanlink::secret::PresenceKey;
    use lanlink::server::{
        Backend, CounterKey, Events, Records, RecordsConfig, Server, ServerConfig, StoreKey, User,
    };
    use lanlink::wire::{AgentMessage, Announce, LinkRequest, LinkState, RedeemRequest};
    use lanlink::Refusal;
    use lanlink::{AccountId, DeviceInfo, InstanceId, LinkCode, LocalSecret, PublicNetwork};

    type Instance = Server<Records<SqliteStore>>;

    fn instance(db: &TempDb, key: &StoreKey) -> Instance {
        let records = Records::new(db.open(), RecordsConfig::new(key.clone()));
        Server::with_store(ServerConfig::default(), records, Events::discard()).expect("config")
    }

    fn device() -> (Announce, LocalSecret) {
        let presence = PresenceKey::generate(&mut lanlink::os_rng());
        let secret = LocalSecret::generate(&mut lanlink::os_rng());
        let id = presence.instance_id();
        let private = "192.168.1.50".parse().expect("ip");
        let commitment = secret.commitment(&id);
        let announce = Announce::new(
            id,
            private,
            8080,
            DeviceInfo::default(),
            commitment,
            presence,
        );
        (announce, secret)
    }

    fn network(host: u8) -> PublicNetwork {
        PublicNetwork::from_ip(format!("203.0.113.{host}").parse().expect("ip"), 64)
    }

    /// Six devices, each on its own network, each linked with its steps alternating between the
    /// instances (the first device starts on A, the next on B, …): announce, discover, link,
    /// the agent's poll, redeem, the link's status; the code is then refused on both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn devices_link_through_two_instances_sharing_one_sqlite_file() {
        let db = TempDb::new("link");
        let key = StoreKey::generate(&mut lanlink::os_rng());
        let (a, b) = (instance(&db, &key), instance(&db, &key));
        let alice = User::new(AccountId::new("alice").expect("account"));
        let mut rng = lanlink::os_rng();
        for n in 0..6u8 {
            let (one, other) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let home = network(10 + n);
            let (x, secret) = device();
            let id = x.instance_id;
            let now = Utc::now();
            one.announce(now, home, &x).await.expect("announce");
            let found = other.discover(now, home, &alice).await.expect("discover");
            assert_eq!(
                found.agents.len(),
                1,
                "device {n}: discovered by the other instance"
            );
            assert_eq!(found.agents[0].instance_id, id);
            let request = LinkRequest::new(id, secret);
            let pending = one
                .link(now, &mut rng, home, &alice, request)
                .await
                .expect("link");
            assert_eq!(pending.state, LinkState::Pending, "device {n}");
            let poll = other.announce(now, home, &x).await.expect("poll");
            let [AgentMessage::VerifyAndRedeem { code, .. }] = poll.messages.as_slice() else {
                panic!("device {n}: the poll carried {:?}", poll.messages);
            };
            let redeem = RedeemRequest::new(id, code.clone());
            let redeemed = one
                .redeem(now, &mut rng, home, &redeem)
                .await
                .expect("redeem");
            assert_eq!(redeemed.account, alice.account);
            let status = other
                .link_status(now, home, &alice.account, &id)
                .await
                .expect("status");
            assert_eq!(status.state, LinkState::Linked, "device {n}");
            for server in [&a, &b] {
                let again = server.redeem(now, &mut rng, home, &redeem).await;
                assert_eq!(
                    again.err(),
                    Some(Refusal::CodeUsed),
                    "device {n}: single use"
                );
            }
        }
    }

    /// A store whose swap compares, lets other callers run, then writes (`SplitSwap` over any
    /// store): a SQLite store that forgot its transaction.
    struct Unlocked<S>(S);

    #[async_trait]
    impl<S: Store> Store for Unlocked<S> {
        async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.load(key).await
        }
        async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
            for write in writes {
                if self.0.load(write.key()).await?.as_deref() != write.expected() {
                    return Ok(false);
                }
            }
            tokio::task::yield_now().await;
            for write in writes {
                let held = self.0.load(write.key()).await?;
                let new = write.value().zip(write.expires_at());
                self.0
                    .swap(&[Write::new(write.key(), held.as_deref(), new)])
                    .await?;
            }
            Ok(true)
        }
        async fn purge(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
            self.0.purge(now).await
        }
    }

    /// 16 wrong guesses from one address racing through `servers` (alternately), then 16 more
    /// one at a time: how many of the racing ones were checked, how many in all, and the
    /// charges on the address's budget.
    async fn guesses<S: Store + 'static>(
        servers: [Arc<Server<Records<S>>>; 2],
    ) -> (usize, usize, u64) {
        let guesser = network(99);
        let now = Utc::now();
        let guess = |i: usize| {
            let server = Arc::clone(&servers[i % 2]);
            async move {
                let code = LinkCode::parse("abcdef").expect("code");
                let request = RedeemRequest::new(InstanceId::from_bytes([i as u8; 16]), code);
                let mut rng = lanlink::os_rng();
                server
                    .redeem(now, &mut rng, guesser, &request)
                    .await
                    .map(|_| ())
            }
        };
        let tally = |results: &[Result<(), Refusal>]| {
            let checked = results
                .iter()
                .filter(|r| **r == Err(Refusal::UnknownCode))
                .count();
            let unexpected: Vec<_> = results
                .iter()
                .filter(|r| {
                    !matches!(
                        r,
                        Err(Refusal::UnknownCode | Refusal::LockedOut | Refusal::Store(_))
                    )
                })
                .collect();
            assert!(unexpected.is_empty(), "{unexpected:?}");
            checked
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (barrier, guess) = (Arc::clone(&barrier), guess(i));
                tokio::spawn(async move {
                    barrier.wait().await;
                    guess.await
                })
            })
            .collect();
        let mut raced = Vec::new();
        for handle in handles {
            raced.push(handle.await.expect("task"));
        }
        let in_race = tally(&raced);
        println!("16 racing guesses: {in_race} checked; {raced:?}");
        let mut after = Vec::new();
        for i in 16..32 {
            after.push(guess(i).await);
        }
        let mut charged = 0;
        servers[1]
            .store()
            .update_counter(&CounterKey::network(&guesser), now, &mut |record| {
                charged = record.live(now.timestamp_millis());
            })
            .await
            .expect("counter");
        (in_race, in_race + tally(&after), charged)
    }

    /// Wrong guesses from one address race through both instances (tasks on two threads, each
    /// instance on its own connection): across both, exactly the lockout threshold (5) of them
    /// are ever checked, each charged once; every other is refused `locked_out` (or, under
    /// contention, fails with a store error and is not checked). Over a SQLite store whose swap
    /// is not one transaction, more are checked: the test sees it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guesses_racing_through_two_instances_hold_one_budget() {
        let db = TempDb::new("budget");
        let key = StoreKey::generate(&mut lanlink::os_rng());
        let servers = [Arc::new(instance(&db, &key)), Arc::new(instance(&db, &key))];
        let (in_race, checked, charged) = guesses(servers).await;
        assert!(in_race <= 5, "{in_race} of 16 racing guesses checked");
        assert_eq!(
            (checked, charged),
            (5, 5),
            "exactly 5 checked, each charged once"
        );

        let db = TempDb::new("unlocked");
        let unlocked = || {
            let records = Records::new(Unlocked(db.open()), RecordsConfig::new(key.clone()));
            Arc::new(
                Server::with_store(ServerConfig::default(), records, Events::discard())
                    .expect("config"),
            )
        };
        let (in_race, ..) = guesses([unlocked(), unlocked()]).await;
        assert!(
            in_race > 5,
            "without a transaction, {in_race} racing guesses checked"
        );
    }
}

/// A store whose `purge` panics.
struct PanicsInPurge(MemoryBytes);

#[async_trait]
impl Store for PanicsInPurge {
    async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.load(key).await
    }
    async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
        self.0.swap(writes).await
    }
    async fn purge(&self, _now: DateTime<Utc>) -> Result<(), StoreError> {
        panic!("a deliberately broken purge");
    }
}

/// A store that panics fails the checks it panicked in, and the suite goes on to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_panics_fails_the_checks_it_panics_in() {
    let report = check_store(Arc::new(PanicsInPurge(MemoryBytes::default())), now()).await;
    assert_eq!(
        report.failed_ids(),
        [
            "store.expiry.kept",
            "store.expiry.purged",
            "store.expiry.rewritten"
        ],
        "{report}"
    );
    let check = report.get("store.expiry.kept").expect("check");
    assert!(check.to_string().contains("panicked"), "{check}");
    assert_eq!(report.checks().len(), STORE_CHECKS.len());
}

/// Outside a Tokio runtime every check fails as not run: the suite does not panic.
#[test]
fn outside_a_tokio_runtime_every_check_fails_as_not_run() {
    use std::future::Future;
    let run = check_store(Arc::new(MemoryBytes::default()), now());
    let mut run = std::pin::pin!(run);
    let waker = std::task::Waker::noop();
    let std::task::Poll::Ready(report) = run
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    else {
        panic!("the suite waited with no runtime to wake it");
    };
    assert_eq!(report.failed_ids().len(), STORE_CHECKS.len(), "{report}");
    assert!(report.to_string().contains("no Tokio runtime"), "{report}");
}
