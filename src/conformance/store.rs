// (1046 lines: one concern, because the store suite is one check per semantic of the `Store` contract, in the order they run.)
//! The store suite: checks any [`Store`] against the contract its trait states, one check per
//! semantic, as a [`Report`] like the rest of the kit.
//! It must not reach the store but through the [`Store`] trait, as a server does, nor assume an
//! empty database (see below).
//!
//! For whoever writes a store for lanlink (PostgreSQL, SQLite, DynamoDB, etcd): run
//! [`check_store`] on it, with the database it will use, and every line must say `PASS`. The
//! crate's in-memory [`MemoryBytes`](crate::server::MemoryBytes) and the SQLite store of
//! `examples/sqlite_store` pass it (`tests/store_suite.rs`); deliberately broken stores (a swap
//! that does not compare, or is not atomic across its two writes or across callers, a purge
//! that drops early, a `load_many` that reorders, …) fail the checks they break.
//!
//! ```
//! use std::sync::Arc;
//! use lanlink::conformance::store::check_store;
//! use lanlink::server::MemoryBytes;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let now = chrono::Utc::now();
//! let report = check_store(Arc::new(MemoryBytes::default()), now).await;
//! print!("{report}");
//! assert!(report.complete(), "{}", report.summary());
//! # }
//! ```
//!
//! Two parts. The first checks the store alone, call by call, against what the [`Store`] trait
//! states (`store.load.*` to `store.expiry.*`). The second runs the server's records over it
//! ([`Records`](crate::server::Records), through two [`Server`](crate::server::Server)s), as a
//! deployment does (`store.records.*`): a device linked with each step on the other instance,
//! wrong guesses racing through both instances against one budget, and a fault injected at each
//! store call of a wrong guess, a redemption and a link, before the call applies or after it
//! applied with its reply lost (`StoreError::Unavailable`), checking that no guess is charged
//! twice or lost, that a code is used only by a redemption that said so, and that a link that
//! failed can be retried.
//!
//! # What running it does to the store
//!
//! Every check writes under fresh random slots (64 random bits each), so one store runs the
//! suite again and again, and a real database needs no wiping between runs: what a run leaves
//! is a few hundred keys, each expiring a day after `now` at the latest (the 1 MiB value
//! included), and dropped by the first [`Store::purge`] after that. The records checks write
//! under a fresh random [`StoreKey`](crate::server::StoreKey) each run, so their key names are
//! new too; they leave a few hundred sealed records (presences, codes, budgets) expiring with
//! the protocol's lifetimes (at most a day). Its [`Store::purge`] calls
//! are at times up to a day after `now`: they drop whatever else the database holds that
//! expires by then, so **run it on a database of its own, not on one serving a deployment**.
//!
//! The races spawn Tokio tasks (the suite must run inside a Tokio runtime; on a
//! multi-threaded one they run in parallel) that all start at one barrier and yield before
//! their swap (and, in the counter race, between their read and their swap), so that even on a
//! single thread every racer has read before any writes. Each check runs in a task of its own:
//! a store that panics fails the check it panicked in, and the suite goes on. A store whose
//! calls never return stalls the suite: there is no timeout of its own.
//!
//! # What it cannot check
//!
//! A store's errors (an error means nothing was written, except a lost reply after a swap) are
//! not provoked: the suite cannot make a database fail. [`Store::pause`] is called between
//! retries, not timed. Atomicity is checked by races, which catch a store that is not atomic
//! when its callers interleave, not one that could lose a write only in a crash.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::store_records as records;
use super::{CheckSpec, Recorder, Report, Verdict};
use crate::server::{Key, Store, Write};

const LOAD: &str = "`Store::load`";
const LOAD_MANY: &str = "`Store::load_many`";
const SWAP: &str = "`Store::swap`";
const PURGE: &str = "`Store::purge`";
const VALUES: &str = "`Store`: values and keys";
const RECORDS: &str = "`Records` over the store";

const fn spec(id: &'static str, section: &'static str, expects: &'static str) -> CheckSpec {
    CheckSpec {
        id,
        section,
        expects,
    }
}

/// Every store check, in the order the suite makes them.
pub const STORE_CHECKS: &[CheckSpec] = &[
    spec("store.load.absent", LOAD, "None for a key never written, from load and from load_many"),
    spec("store.create.once", SWAP, "a create-if-absent (expected None) applies once; a second one, with other bytes, answers false and the first value stays"),
    spec("store.swap.exact", SWAP, "a swap applies only when the key holds exactly the expected bytes: expecting another value, a prefix of the value, the value and one byte more, or None, answers false and writes nothing"),
    spec("store.swap.absent", SWAP, "a swap expecting a value at a key that holds none answers false and leaves it absent"),
    spec("store.delete", SWAP, "a write of None deletes (load answers None, a create applies again); a delete expecting another value answers false and the value stays"),
    spec("store.swap.two_keys", SWAP, "a swap of two keys of one slot applies both writes, or, when either expectation is wrong, neither"),
    spec("store.race.swap", SWAP, "of concurrent swaps of one key expecting the same value, exactly one answers true, each round, and the key holds its value"),
    spec("store.race.create", SWAP, "of concurrent creates-if-absent of one key, exactly one answers true, each round, and the key holds its value"),
    spec("store.race.two_keys", SWAP, "of concurrent two-key swaps expecting the same values, exactly one applies, each round, and both keys hold that racer's values"),
    spec("store.race.counter", SWAP, "a counter incremented by concurrent read-swap-retry loops ends at exactly the number of increments (no update lost)"),
    spec("store.load_many", LOAD_MANY, "load_many answers what load answers for each key, in the order asked (absent keys as None)"),
    spec("store.value.large", VALUES, "a 1 MiB value round-trips byte for byte, and a swap expecting it applies"),
    spec("store.value.empty", VALUES, "a 0-byte value round-trips as a value (Some, not None): a create over it loses, a swap expecting it applies"),
    spec("store.keys.independent", VALUES, "writes to one key change no other: not another kind of the same slot, not the same kind of another slot, not a key whose name extends it"),
    spec("store.expiry.kept", PURGE, "purge(t) keeps every value expiring after t (even by 1 ms): a value is never dropped before its expiry"),
    spec("store.expiry.purged", PURGE, "purge(t) drops the values expiring at t or before (or, for a store with its own expiry, they are gone once it has passed)"),
    spec("store.expiry.rewritten", PURGE, "a value's expiry is the one of its last write: rewritten to expire later it survives its first expiry, rewritten to expire earlier it is dropped at the new one"),
    spec("store.records.two_instances", RECORDS, "two servers over Records of the store act as one: announce on A, discover on B, link on A, the agent's poll on B, redeem on A, status on B linked; the code single use"),
    spec("store.records.budget", RECORDS, "wrong guesses from one address racing through two servers: at most the lockout threshold (5) checked, each one checked charged once"),
    spec("store.records.fault.wrong_guess", RECORDS, "a wrong redemption with a fault at any store call (before it applies, or after with the reply lost): charged once when refused unknown_code, at most once when it failed, no budget charged twice"),
    spec("store.records.fault.redeem", RECORDS, "a right redemption with a fault at any store call: the code is used only if the redemption said so (retried: code_used after a success, a success after a failure); only a replay is charged"),
    spec("store.records.fault.link", RECORDS, "a link with a wrong secret with a fault at any store call: charged once (wrong_secret) or at most once (failed); a right link with a fault at any call, retried on store errors, is accepted and charges nothing"),
];

/// How the suite runs: how many racers, how many rounds, and whether the store drops values by
/// itself. [`check_store`] runs it with the defaults.
///
/// ```
/// use std::time::Duration;
/// use lanlink::conformance::store::StoreSuite;
/// // A store on Redis, whose values expire through their TTLs (purge does nothing).
/// let suite = StoreSuite::new().racers(16).rounds(20).expires_by_itself(Duration::from_secs(2));
/// # let _ = suite;
/// ```
#[derive(Debug, Clone)]
pub struct StoreSuite {
    racers: usize,
    rounds: usize,
    own_expiry: Option<Duration>,
    opted_out: Vec<String>,
}

impl Default for StoreSuite {
    fn default() -> Self {
        Self::new()
    }
}

impl StoreSuite {
    /// 8 racers, 10 rounds of each race, purge drops expired values.
    ///
    /// ```
    /// use lanlink::conformance::store::StoreSuite;
    /// // `new` and `default` are the same suite.
    /// assert_eq!(format!("{:?}", StoreSuite::new()), format!("{:?}", StoreSuite::default()));
    /// ```
    pub fn new() -> Self {
        Self {
            racers: 8,
            rounds: 10,
            own_expiry: None,
            opted_out: Vec::new(),
        }
    }

    /// How many tasks race in each race (at least 2; default 8). The counter race makes
    /// `racers × 5` increments.
    ///
    /// ```
    /// use lanlink::conformance::store::StoreSuite;
    /// // At least 2: one racer is no race.
    /// assert_eq!(format!("{:?}", StoreSuite::new().racers(0)), format!("{:?}", StoreSuite::new().racers(2)));
    /// ```
    pub fn racers(mut self, racers: usize) -> Self {
        self.racers = racers.max(2);
        self
    }

    /// How many rounds of each race (at least 1; default 10).
    ///
    /// ```
    /// use lanlink::conformance::store::StoreSuite;
    /// assert_eq!(format!("{:?}", StoreSuite::new().rounds(0)), format!("{:?}", StoreSuite::new().rounds(1)));
    /// ```
    pub fn rounds(mut self, rounds: usize) -> Self {
        self.rounds = rounds.max(1);
        self
    }

    /// The store's database drops values by itself (Redis TTLs) at most `within` after their
    /// expiry, and its [`Store::purge`] may do nothing. Then `store.expiry.purged` writes a
    /// value expiring one second after `now`, which must then be the wall clock, waits until
    /// `within` past that, and checks it is gone; and `store.expiry.rewritten` checks only what
    /// survives.
    pub fn expires_by_itself(mut self, within: Duration) -> Self {
        self.own_expiry = Some(within);
        self
    }

    /// Accepts that check `id` (of [`STORE_CHECKS`]) fails: it is reported skipped instead, with
    /// what was seen. For a store that knowingly departs from the contract; a server on it may
    /// then misbehave where the check says.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::StoreSuite;
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let suite = StoreSuite::new().racers(2).rounds(1).opt_out("store.value.large");
    /// let report = suite.run(Arc::new(MemoryBytes::default()), lanlink::chrono::Utc::now()).await;
    /// // An opted-out check that runs still passes or fails: this store passes it.
    /// assert!(report.get("store.value.large").is_some_and(|c| c.passed()));
    /// # }
    /// ```
    pub fn opt_out(mut self, id: &str) -> Self {
        self.opted_out.push(id.to_owned());
        self
    }

    /// Runs every check of [`STORE_CHECKS`] on `store`, writing values that expire relative to
    /// `now`. Call it inside a Tokio runtime (the races spawn tasks).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lanlink::conformance::store::StoreSuite;
    /// use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let suite = StoreSuite::new().racers(4).rounds(2);
    /// let report = suite.run(Arc::new(MemoryBytes::default()), lanlink::chrono::Utc::now()).await;
    /// assert!(report.complete(), "{report}");
    /// # }
    /// ```
    pub async fn run(&self, store: Arc<dyn Store>, now: DateTime<Utc>) -> Report {
        let mut rec = Recorder::new(STORE_CHECKS, &self.opted_out);
        let ctx = Ctx {
            now,
            racers: self.racers,
            rounds: self.rounds,
            own_expiry: self.own_expiry,
        };
        let runtime = tokio::runtime::Handle::try_current().is_ok();
        for (id, check) in CHECKS {
            // Each check in a task of its own: a store that panics fails the check it panicked
            // in, and the suite goes on.
            let verdict = if runtime {
                match tokio::spawn(check(Arc::clone(&store), ctx)).await {
                    Ok(verdict) => verdict,
                    Err(_) => {
                        Err("the store panicked (or the check's task was cancelled)".to_owned())
                    }
                }
            } else {
                Err("not run: no Tokio runtime (the suite runs each check in a task)".to_owned())
            };
            match verdict {
                Err(got) if rec.opted_out(id) => rec.skip(id, format!("failed: {got}")),
                verdict => {
                    rec.verdict(id, verdict);
                }
            }
        }
        rec.finish()
    }
}

/// What every check is given besides the store.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    now: DateTime<Utc>,
    racers: usize,
    rounds: usize,
    own_expiry: Option<Duration>,
}

/// One check, run in a task of its own.
type Run = fn(Arc<dyn Store>, Ctx) -> Pin<Box<dyn Future<Output = Verdict> + Send>>;

/// Every check, in catalog order.
const CHECKS: [(&str, Run); 22] = [
    ("store.load.absent", |s, _| {
        Box::pin(async move { load_absent(&*s).await })
    }),
    ("store.create.once", |s, c| {
        Box::pin(async move { create_once(&*s, c.now).await })
    }),
    ("store.swap.exact", |s, c| {
        Box::pin(async move { swap_exact(&*s, c.now).await })
    }),
    ("store.swap.absent", |s, c| {
        Box::pin(async move { swap_absent(&*s, c.now).await })
    }),
    ("store.delete", |s, c| {
        Box::pin(async move { delete(&*s, c.now).await })
    }),
    ("store.swap.two_keys", |s, c| {
        Box::pin(async move { two_keys(&*s, c.now).await })
    }),
    ("store.race.swap", |s, c| {
        Box::pin(async move { race_one_key(&s, c.now, c.racers, c.rounds, false).await })
    }),
    ("store.race.create", |s, c| {
        Box::pin(async move { race_one_key(&s, c.now, c.racers, c.rounds, true).await })
    }),
    ("store.race.two_keys", |s, c| {
        Box::pin(async move { race_two_keys(&s, c.now, c.racers, c.rounds).await })
    }),
    ("store.race.counter", |s, c| {
        Box::pin(async move { race_counter(&s, c.now, c.racers).await })
    }),
    ("store.load_many", |s, c| {
        Box::pin(async move { load_many(&*s, c.now).await })
    }),
    ("store.value.large", |s, c| {
        Box::pin(async move { large(&*s, c.now).await })
    }),
    ("store.value.empty", |s, c| {
        Box::pin(async move { empty(&*s, c.now).await })
    }),
    ("store.keys.independent", |s, c| {
        Box::pin(async move { independent(&*s, c.now).await })
    }),
    ("store.expiry.kept", |s, c| {
        Box::pin(async move { expiry_kept(&*s, c.now).await })
    }),
    ("store.expiry.purged", |s, c| {
        Box::pin(async move { expiry_purged(&*s, c.now, c.own_expiry).await })
    }),
    ("store.expiry.rewritten", |s, c| {
        Box::pin(async move { expiry_rewritten(&*s, c.now, c.own_expiry.is_some()).await })
    }),
    ("store.records.two_instances", |s, c| {
        Box::pin(async move { records::two_instances(&s, c.now).await })
    }),
    ("store.records.budget", |s, c| {
        Box::pin(async move { records::budget(&s, c.now, c.racers).await })
    }),
    ("store.records.fault.wrong_guess", |s, c| {
        Box::pin(async move { records::fault_wrong_guess(&s, c.now).await })
    }),
    ("store.records.fault.redeem", |s, c| {
        Box::pin(async move { records::fault_redeem(&s, c.now).await })
    }),
    ("store.records.fault.link", |s, c| {
        Box::pin(async move { records::fault_link(&s, c.now).await })
    }),
];

/// Checks `store` against every semantic of the [`Store`] contract, then runs the server's
/// records over it with faults injected (every check of [`STORE_CHECKS`]), with
/// [`StoreSuite`]'s defaults; values expire relative to `now` (give the wall clock for a real
/// database). Call it inside a Tokio runtime. Read "What running it does to the store" in the
/// [module docs](self) first: it purges up to a day past `now`.
pub async fn check_store(store: Arc<dyn Store>, now: DateTime<Utc>) -> Report {
    StoreSuite::new().run(store, now).await
}

/// The check's outcome so far: `Err` is what went wrong, in words.
type Step<T> = Result<T, String>;

/// A fresh random slot: 16 hex digits.
fn slot() -> String {
    let mut bytes = [0u8; 8];
    rand::RngCore::fill_bytes(&mut crate::os_rng(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(kind: &str, slot: &str) -> Key {
    Key::new(kind, slot).unwrap_or_else(|| unreachable!("the suite's kinds and slots are valid"))
}

/// A key of a fresh slot.
fn fresh(kind: &str) -> Key {
    key(kind, &slot())
}

/// A value as the layer above writes them: 24 fresh random bytes, then `tag` (which names it
/// in the report).
fn value(tag: &str) -> Vec<u8> {
    let mut bytes = vec![0u8; 24];
    rand::RngCore::fill_bytes(&mut crate::os_rng(), &mut bytes);
    bytes.extend_from_slice(tag.as_bytes());
    bytes
}

/// A value in words: `none`, `"tag"` for one of the suite's values, or its length.
fn show(value: Option<&[u8]>) -> String {
    match value {
        None => "none".to_owned(),
        Some(bytes) => match bytes.get(24..).map(std::str::from_utf8) {
            Some(Ok(tag)) if !tag.is_empty() && tag.len() <= 40 => format!("\"{tag}\""),
            _ => format!("{} bytes", bytes.len()),
        },
    }
}

fn day(now: DateTime<Utc>) -> DateTime<Utc> {
    now + TimeDelta::days(1)
}

async fn load(store: &dyn Store, key: &Key) -> Step<Option<Vec<u8>>> {
    store
        .load(key)
        .await
        .map_err(|err| format!("load {}: {err}", key.as_str()))
}

async fn swap(store: &dyn Store, writes: &[Write<'_>]) -> Step<bool> {
    store
        .swap(writes)
        .await
        .map_err(|err| format!("swap: {err}"))
}

/// Creates `key` holding `value` until `until`, which must apply.
async fn put(store: &dyn Store, key: &Key, value: &[u8], until: DateTime<Utc>) -> Step<()> {
    match swap(store, &[Write::new(key, None, Some((value, until)))]).await? {
        true => Ok(()),
        false => Err(format!(
            "a create of the fresh key {} answered false",
            key.as_str()
        )),
    }
}

/// Checks that `key` holds `want`; `what` says when.
async fn holds(store: &dyn Store, key: &Key, want: Option<&[u8]>, what: &str) -> Step<()> {
    let got = load(store, key).await?;
    if got.as_deref() == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: {} held {}, expected {}",
            key.as_str(),
            show(got.as_deref()),
            show(want)
        ))
    }
}

/// Checks that a swap answered `want`.
fn answered(got: bool, want: bool, what: &str) -> Step<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} answered {got}"))
    }
}

async fn load_absent(store: &dyn Store) -> Verdict {
    let (a, b) = (fresh("net"), fresh("msg"));
    holds(store, &a, None, "never written").await?;
    let many = store
        .load_many(&[&a, &b])
        .await
        .map_err(|err| format!("load_many: {err}"))?;
    if many != [None, None] {
        return Err(format!(
            "load_many of two keys never written answered {:?}",
            many.iter().map(|v| show(v.as_deref())).collect::<Vec<_>>()
        ));
    }
    Ok("None".to_owned())
}

async fn create_once(store: &dyn Store, now: DateTime<Utc>) -> Verdict {
    let k = fresh("code");
    let (one, two) = (value("one"), value("two"));
    let first = swap(store, &[Write::new(&k, None, Some((&one, day(now))))]).await?;
    answered(first, true, "the first create")?;
    holds(store, &k, Some(&one), "after the first create").await?;
    let second = swap(store, &[Write::new(&k, None, Some((&two, day(now))))]).await?;
    answered(second, false, "a second create")?;
    holds(store, &k, Some(&one), "after a second create lost").await?;
    Ok("the first create applied, the second answered false".to_owned())
}

async fn swap_exact(store: &dyn Store, now: DateTime<Utc>) -> Verdict {
    let k = fresh("net");
    let (v1, other, v2) = (value("v1"), value("other"), value("v2"));
    put(store, &k, &v1, day(now)).await?;
    let prefix = &v1[..v1.len() - 1];
    let longer = [v1.as_slice(), b"x"].concat();
    let wrong: [(Option<&[u8]>, &str); 4] = [
        (Some(&other), "another value"),
        (Some(prefix), "a prefix of the value"),
        (Some(&longer), "the value and one byte more"),
        (None, "None"),
    ];
    for (expected, what) in wrong {
        let applied = swap(store, &[Write::new(&k, expected, Some((&v2, day(now))))]).await?;
        answered(applied, false, &format!("a swap expecting {what}"))?;
        holds(
            store,
            &k,
            Some(&v1),
            &format!("after a swap expecting {what}"),
        )
        .await?;
    }
    let applied = swap(store, &[Write::new(&k, Some(&v1), Some((&v2, day(now))))]).await?;
    answered(applied, true, "a swap expecting the value held")?;
    holds(
        store,
        &k,
        Some(&v2),
        "after a swap expecting the value held",
    )
    .await?;
    Ok("applied only on the exact bytes; 4 wrong expectations wrote nothing".to_owned())
}

async fn swap_absent(store: &dyn Store, now: DateTime<Utc>) -> Verdict {
    let k = fresh("code");
    let (ghost, new) = (value("ghost"), value("new"));
    let applied = swap(
        store,
        &[Write::new(&k, Some(&ghost), Some((&new, day(now))))],
    )
    .await?;
    answered(applied, false, "a swap expecting a value at an absent key")?;
    holds(store, &k, None, "after it").await?;
    let applied = swap(store, &[Write::new(&k, Some(&ghost), None)]).await?;
    answered(
        applied,
        false,
        "a delete expecting a value at an absent key",
    )?;
    holds(store, &k, None, "after it").await?;
    Ok("false, the key stays absent".to_owned())
}

async fn delete(store: &dyn Store, now: DateTime<Utc>) -> Verdict {
    let k = fresh("msg");
    let (v1, other, again) = (value("v1"), value("other"), value("again"));
    put(store, &k, &v1, day(now)).await?;
    let applied = swap(store, &[Write::new(&k, Some(&other), None)]).await?;
    answered(applied, false, "a delete expecting another value")?;
    holds(
        store,
        &k,
        Some(&v1),
        "after a delete expecting another value",
    )
    .await?;
    let applied = swap(store, &[Write::new(&k, Some(&v1), None)]).await?;
    answered(applied, true, "a delete expecting the value held")?;
    holds(store, &k, None, "after the delete").await?;
    let applied = swap(store, &[Write::new(&k, None, Some((&again, day(now))))]).await?;
    answered(applied, true, "a create after the delete")?;
    holds(store, &k, Some(&again), "after a create after the delete").await?;
    Ok("deleted; a wrong delete wrote nothing; created again".to_owned())
}

async fn two_keys(store: &dyn Store, now: DateTime<Utc>) -> Verdict {
    let s = slot();
    let (a, b) = (key("net", &s), key("msg", &s));
    let (a1, b1, a2, b2, wrong) = (
        value("a1"),
        value("b1"),
        value("a2"),
        value("b2"),
        value("wrong"),
    );
    let t = day(now);
    // Both created in one swap.
    let both = [
        Write::new(&a, None, Some((&a1, t))),
        Write::new(&b, None, Some((&b1, t))),
    ];
    answered(swap(store, &both).await?, true, "a two-key create")?;
    holds(store, &a, Some(&a1), "after a two-key create").await?;
    holds(store, &b, Some(&b1), "after a two-key create").await?;
    // The second expectation wrong, then the first: neither key changes.
    let cases: [([Option<&[u8]>; 2], &str); 3] = [
        (
            [Some(&a1), Some(&wrong)],
            "the second key's expectation wrong",
        ),
        (
            [Some(&wrong), Some(&b1)],
            "the first key's expectation wrong",
        ),
        (
            [Some(&a1), None],
            "the second expecting None while it holds a value",
        ),
    ];
    for ([ea, eb], what) in cases {
        let writes = [
            Write::new(&a, ea, Some((&a2, t))),
            Write::new(&b, eb, Some((&b2, t))),
        ];
        answered(
            swap(store, &writes).await?,
            false,
            &format!("a two-key swap with {what}"),
        )?;
        holds(
            store,
            &a,
            Some(&a1),
            &format!("after a two-key swap with {what}"),
        )
        .await?;
        holds(
            store,
            &b,
            Some(&b1),
            &format!("after a two-key swap with {what}"),
        )
        .await?;
    }
    // A rewrite of one and a delete of the other, both right.
    let writes = [
        Write::new(&a, Some(&a1), Some((&a2, t))),
        Write::new(&b, Some(&b1), None),
    ];
    answered(
        swap(store, &writes).await?,
        true,
        "a right two-key swap (rewrite and delete)",
    )?;
    holds(store, &a, Some(&a2), "after a right two-key swap").await?;
    holds(store, &b, None, "after a right two-key swap").await?;
    Ok("both applied together; 3 swaps with one expectation wrong changed neither key".to_owned())
}

/// Runs `racers` tasks of `race` (given the racer's number), started together at one barrier,
/// and answers their results in racer order.
async fn race<T, F, Fut>(racers: usize, race: F) -> Step<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Step<T>> + Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("not run: no Tokio runtime to race tasks on".to_owned());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(racers));
    let handles: Vec<_> = (0..racers)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let run = race(i);
            tokio::spawn(async move {
                barrier.wait().await;
                run.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(racers);
    for handle in handles {
        match handle.await {
            Ok(result) => results.push(result?),
            Err(_) => return Err("a racer's task panicked".to_owned()),
        }
    }
    Ok(results)
}

/// The racers that answered true.
fn winners(applied: &[bool]) -> Vec<usize> {
    (0..applied.len()).filter(|&i| applied[i]).collect()
}

/// Racers swapping one key, all expecting the same value: a `start` value put first (`create`
/// false), or nothing (`create`: create-if-absent). Exactly one wins each round, and its value
/// is what the key holds.
async fn race_one_key(
    store: &Arc<dyn Store>,
    now: DateTime<Utc>,
    racers: usize,
    rounds: usize,
    create: bool,
) -> Verdict {
    let what = if create {
        "creates of one key"
    } else {
        "swaps expecting the same value"
    };
    for round in 0..rounds {
        let k = fresh(if create { "code" } else { "net" });
        let start = (!create).then(|| value("start"));
        if let Some(start) = &start {
            put(&**store, &k, start, day(now)).await?;
        }
        let values: Vec<Vec<u8>> = (0..racers).map(|i| value(&format!("racer {i}"))).collect();
        let applied = race(racers, |i| {
            let (store, k, start, mine) = (
                Arc::clone(store),
                k.clone(),
                start.clone(),
                values[i].clone(),
            );
            async move {
                // Every racer read the same state: it expects it, whenever its swap runs.
                tokio::task::yield_now().await;
                let writes = [Write::new(&k, start.as_deref(), Some((&mine, day(now))))];
                swap(&*store, &writes).await
            }
        })
        .await?;
        let won = winners(&applied);
        let [winner] = won[..] else {
            return Err(format!(
                "round {round}: {} of {racers} {what} answered true",
                won.len()
            ));
        };
        holds(
            &**store,
            &k,
            Some(&values[winner]),
            &format!("round {round}, after the race"),
        )
        .await?;
    }
    Ok(format!("exactly one of {racers} won, {rounds} rounds"))
}

async fn race_two_keys(
    store: &Arc<dyn Store>,
    now: DateTime<Utc>,
    racers: usize,
    rounds: usize,
) -> Verdict {
    for round in 0..rounds {
        let s = slot();
        let (a, b) = (key("net", &s), key("msg", &s));
        let (a0, b0) = (value("a start"), value("b start"));
        let t = day(now);
        let both = [
            Write::new(&a, None, Some((&a0, t))),
            Write::new(&b, None, Some((&b0, t))),
        ];
        answered(
            swap(&**store, &both).await?,
            true,
            "a two-key create of fresh keys",
        )?;
        let values: Vec<(Vec<u8>, Vec<u8>)> = (0..racers)
            .map(|i| {
                (
                    value(&format!("a of racer {i}")),
                    value(&format!("b of racer {i}")),
                )
            })
            .collect();
        let applied = race(racers, |i| {
            let (store, a, b) = (Arc::clone(store), a.clone(), b.clone());
            let (a0, b0, (ai, bi)) = (a0.clone(), b0.clone(), values[i].clone());
            async move {
                // Every racer read `a0` and `b0`.
                tokio::task::yield_now().await;
                let writes = [
                    Write::new(&a, Some(&a0), Some((&ai, t))),
                    Write::new(&b, Some(&b0), Some((&bi, t))),
                ];
                swap(&*store, &writes).await
            }
        })
        .await?;
        let won = winners(&applied);
        let [winner] = won[..] else {
            return Err(format!("round {round}: {} of {racers} two-key swaps expecting the same values answered true", won.len()));
        };
        let what = format!("round {round}, after the race");
        holds(&**store, &a, Some(&values[winner].0), &what).await?;
        holds(&**store, &b, Some(&values[winner].1), &what).await?;
    }
    Ok(format!(
        "exactly one of {racers} applied both writes, {rounds} rounds"
    ))
}

/// Increments per racer in the counter race.
const INCREMENTS: usize = 5;

/// The most tries of one increment before the counter race gives up on a store.
const MAX_TRIES: u32 = 10_000;

fn counter(n: u64) -> Vec<u8> {
    let mut bytes = value("");
    bytes.extend_from_slice(&n.to_be_bytes());
    bytes
}

fn count(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(24..32)?.try_into().ok()?))
}

async fn race_counter(store: &Arc<dyn Store>, now: DateTime<Utc>, racers: usize) -> Verdict {
    let k = fresh("ctr");
    let increments = race(racers, |_| {
        let (store, k) = (Arc::clone(store), k.clone());
        async move {
            let mut done = 0usize;
            for _ in 0..INCREMENTS {
                let mut attempt = 0;
                loop {
                    let seen = load(&*store, &k).await?;
                    let n = match seen.as_deref() {
                        None => 0,
                        Some(bytes) => count(bytes)
                            .ok_or("the counter holds a value the suite did not write")?,
                    };
                    tokio::task::yield_now().await;
                    let next = counter(n + 1);
                    if swap(
                        &*store,
                        &[Write::new(&k, seen.as_deref(), Some((&next, day(now))))],
                    )
                    .await?
                    {
                        done += 1;
                        break;
                    }
                    attempt += 1;
                    if attempt >= MAX_TRIES {
                        return Err(format!("an increment lost {MAX_TRIES} races in a row"));
                    }
                    store.pause(attempt).await;
                }
            }
            Ok(done)
        }
    })
    .await?;
    let applied: usize = increments.iter().sum();
    let end = load(&**store, &k).await?;
    let want = (racers * INCREMENTS) as u64;
    match end.as_deref().and_then(count) {
        Some(n) if n == want && applied == racers * INCREMENTS => {
            Ok(format!("{racers} racers × {INCREMENTS} increments: {n}"))
        }
        got => Err(format!(
            "{racers} racers × {INCREMENTS} increments ({applied} swaps answered true) left the counter at {}",
            got.map_or_else(|| "none".to_owned(), |n| n.to_string())
        )),
    }
}

async fn load_many(store: &dyn Store, now: DateTime<Utc>) -> Verdict {
    let s = slot();
    let (net, msg, code) = (key("net", &s), key("msg", &s), key("code", &s));
    let (vn, vm) = (value("net value"), value("msg value"));
    put(store, &net, &vn, day(now)).await?;
    put(store, &msg, &vm, day(now)).await?;
    let asks: [Vec<&Key>; 5] = [
        vec![&net, &msg],
        vec![&msg, &net],
        vec![&net, &code],
        vec![&code, &msg],
        vec![&msg],
    ];
    for keys in asks {
        let many = store
            .load_many(&keys)
            .await
            .map_err(|err| format!("load_many: {err}"))?;
        let mut one = Vec::with_capacity(keys.len());
        for key in &keys {
            one.push(load(store, key).await?);
        }
        if many != one {
            let names: Vec<&str> = keys.iter().map(|k| k.kind()).collect();
            let shown = |values: &[Option<Vec<u8>>]| -> Vec<String> {
                values.iter().map(|v| show(v.as_deref())).collect()
            };
            return Err(format!(
                "load_many of {names:?} answered {:?}; load answered {:?}",
                shown(&many),
                shown(&one)
            ));
        }
    }
    Ok("agrees with load, in order, for 5 lists of keys".to_owned())
}

async fn large(store: &dyn Store, now: DateTime<Utc>) -> Verdict {
    let k = fresh("net");
    let mut big = vec![0u8; 1 << 20];
    rand::RngCore::fill_bytes(&mut crate::os_rng(), &mut big);
    put(store, &k, &big, day(now)).await?;
    holds(store, &k, Some(&big), "after writing 1 MiB").await?;
    let mut next = big.clone();
    next[(1 << 20) - 1] ^= 1;
    let applied = swap(
        store,
        &[Write::new(&k, Some(&big), Some((&next, day(now))))],
    )
    .await?;
    answered(applied, true, "a swap expecting the 1 MiB value")?;
    holds(store, &k, Some(&next), "after swapping 1 MiB for 1 MiB").await?;
    let applied = swap(store, &[Write::new(&k, Some(&next), None)]).await?;
    answered(applied, true, "a delete expecting the 1 MiB value")?;
    Ok("1 MiB round-trips".to_owned())
}

async fn empty(store: &dyn Store, now: DateTime<Utc>) -> Verdict {
    let k = fresh("msg");
    let other = value("other");
    put(store, &k, b"", day(now)).await?;
    holds(store, &k, Some(b""), "after writing 0 bytes").await?;
    let applied = swap(store, &[Write::new(&k, None, Some((&other, day(now))))]).await?;
    answered(applied, false, "a create over a 0-byte value")?;
    holds(store, &k, Some(b""), "after a create over a 0-byte value").await?;
    let applied = swap(
        store,
        &[Write::new(&k, Some(b""), Some((&other, day(now))))],
    )
    .await?;
    answered(applied, true, "a swap expecting the 0-byte value")?;
    holds(
        store,
        &k,
        Some(&other),
        "after a swap expecting the 0-byte value",
    )
    .await?;
    Ok("0 bytes round-trip as a value".to_owned())
}

async fn independent(store: &dyn Store, now: DateTime<Utc>) -> Verdict {
    let s = slot();
    let s2 = slot();
    let keys = [
        key("net", &s),
        key("msg", &s),
        key("code", &s),
        key("net", &s2),
        key(&"n".repeat(8), &s),
        key("net", &format!("{s}0")),
        key("net", &s[..15]),
    ];
    let values: Vec<Vec<u8>> = keys.iter().map(|k| value(k.as_str())).collect();
    // Each written in turn, every other key checked unchanged after each write.
    for (i, k) in keys.iter().enumerate() {
        put(store, k, &values[i], day(now)).await?;
        for (j, other) in keys.iter().enumerate() {
            let want = (j <= i).then(|| values[j].as_slice());
            holds(store, other, want, &format!("after writing {}", k.as_str())).await?;
        }
    }
    // Each deleted in turn.
    for (i, k) in keys.iter().enumerate() {
        answered(
            swap(store, &[Write::new(k, Some(&values[i]), None)]).await?,
            true,
            "a delete",
        )?;
        for (j, other) in keys.iter().enumerate() {
            let want = (j > i).then(|| values[j].as_slice());
            holds(
                store,
                other,
                want,
                &format!("after deleting {}", k.as_str()),
            )
            .await?;
        }
    }
    Ok(format!(
        "{} keys written and deleted one by one, each alone",
        keys.len()
    ))
}

async fn purge(store: &dyn Store, at: DateTime<Utc>) -> Step<()> {
    store.purge(at).await.map_err(|err| format!("purge: {err}"))
}

async fn expiry_kept(store: &dyn Store, now: DateTime<Utc>) -> Verdict {
    let t = now + TimeDelta::hours(1);
    let ms = TimeDelta::milliseconds(1);
    let soon = fresh("net");
    let later = fresh("code");
    let (vs, vl) = (value("1 ms after t"), value("a day after now"));
    put(store, &soon, &vs, t + ms).await?;
    put(store, &later, &vl, day(now)).await?;
    purge(store, now).await?;
    holds(
        store,
        &soon,
        Some(&vs),
        "after purge(now), an hour before its expiry",
    )
    .await?;
    purge(store, t).await?;
    holds(
        store,
        &soon,
        Some(&vs),
        "after purge(t), 1 ms before its expiry",
    )
    .await?;
    holds(store, &later, Some(&vl), "after purge(t)").await?;
    Ok("kept until their expiry".to_owned())
}

async fn expiry_purged(store: &dyn Store, now: DateTime<Utc>, own: Option<Duration>) -> Verdict {
    if let Some(within) = own {
        let k = fresh("net");
        let at = now + TimeDelta::seconds(1);
        put(store, &k, &value("expires in 1 s"), at).await?;
        let wait = Duration::from_secs(1) + within;
        tokio::time::sleep(wait).await;
        purge(store, at).await?;
        holds(
            store,
            &k,
            None,
            &format!("{} ms after writing it to expire in 1 s", wait.as_millis()),
        )
        .await?;
        return Ok("gone by itself".to_owned());
    }
    let t = now + TimeDelta::hours(1);
    let at = fresh("net");
    let before = fresh("msg");
    let after = fresh("code");
    let (va, vb, vc) = (
        value("expires at t"),
        value("expires before t"),
        value("expires after t"),
    );
    put(store, &at, &va, t).await?;
    put(store, &before, &vb, t - TimeDelta::minutes(30)).await?;
    put(store, &after, &vc, t + TimeDelta::seconds(1)).await?;
    purge(store, t).await?;
    holds(
        store,
        &at,
        None,
        "after purge(t), for a value expiring at t",
    )
    .await?;
    holds(
        store,
        &before,
        None,
        "after purge(t), for a value expiring before t",
    )
    .await?;
    holds(
        store,
        &after,
        Some(&vc),
        "after purge(t), for a value expiring after t",
    )
    .await?;
    Ok("dropped at and before t, kept after".to_owned())
}

async fn expiry_rewritten(store: &dyn Store, now: DateTime<Utc>, own_expiry: bool) -> Verdict {
    let t1 = now + TimeDelta::hours(1);
    let t2 = now + TimeDelta::hours(2);
    // Later: written to expire at t1, rewritten to expire at t2.
    let later = fresh("net");
    let (l1, l2) = (value("until t1"), value("until t2"));
    put(store, &later, &l1, t1).await?;
    answered(
        swap(store, &[Write::new(&later, Some(&l1), Some((&l2, t2)))]).await?,
        true,
        "a rewrite",
    )?;
    // Earlier: written to expire at t2, rewritten to expire at t1.
    let earlier = fresh("msg");
    let (e1, e2) = (value("until t2"), value("until t1"));
    put(store, &earlier, &e1, t2).await?;
    answered(
        swap(store, &[Write::new(&earlier, Some(&e1), Some((&e2, t1)))]).await?,
        true,
        "a rewrite",
    )?;
    purge(store, t1).await?;
    holds(
        store,
        &later,
        Some(&l2),
        "after purge(t1), rewritten to expire at t2",
    )
    .await?;
    if own_expiry {
        return Ok(
            "kept past its first expiry (the store's own expiry drops the other)".to_owned(),
        );
    }
    holds(
        store,
        &earlier,
        None,
        "after purge(t1), rewritten to expire at t1",
    )
    .await?;
    Ok("the last write's expiry counts, later and earlier".to_owned())
}
