//! The store suite's second part: the server's records ([`Records`]) over the store under test,
//! through the one [`Server`] type, as a deployment runs them: two instances sharing the store,
//! guesses racing through both against one budget, and a fault at each store call of a wrong
//! guess, a redemption and a link (before the call applies, or after it applied with its reply
//! lost), checking what the server promises: a guess is charged once, never twice and never
//! lost; a code is used only by a redemption that said so; a link that failed can be retried.
//! It must not reach the store but through the [`Store`] trait, nor assume the store holds
//! nothing else.
//!
//! Each run of a check is under a fresh random [`StoreKey`]: its key names (keyed hashes) are
//! new, so it starts from an empty namespace in a store that holds anything else.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ipnet::{IpNet, Ipv4Net};

use super::Verdict;
use crate::addr::PublicNetwork;
use crate::code::LinkCode;
use crate::error::Refusal;
use crate::id::{AccountId, InstanceId};
use crate::secret::{LocalSecret, PresenceKey};
use crate::server::{
    Backend, CodeSpace, CounterKey, Events, Key, Records, RecordsConfig, Server, ServerConfig,
    Store, StoreError, StoreKey, User, Write,
};
use crate::wire::{AgentMessage, Announce, LinkRequest, LinkState, RedeemRequest};
use crate::DeviceInfo;

/// A server over the records of `store` under `key`.
type Instance = Server<Records<Arc<dyn Store>>>;

/// The lockout threshold of the default config: wrong guesses one address may make.
const THRESHOLD: usize = 5;

/// The most store calls one operation may make before the fault loop gives up on it.
const MAX_CALLS: usize = 200;

fn instance(store: &Arc<dyn Store>, key: &StoreKey) -> Result<Instance, String> {
    let records = Records::new(Arc::clone(store), RecordsConfig::new(key.clone()));
    Server::with_store(ServerConfig::default(), records, Events::discard())
        .map_err(|err| format!("the default config: {err}"))
}

fn fresh_key() -> StoreKey {
    StoreKey::generate(&mut crate::os_rng())
}

fn alice() -> User {
    User::new(AccountId::new("alice").unwrap_or_else(|| unreachable!("a valid account")))
}

/// A network of the benchmarking range, 198.18.0.0/15 (no one's).
fn network(host: u8) -> (PublicNetwork, Ipv4Addr) {
    let ip = Ipv4Addr::new(198, 18, 7, host);
    (PublicNetwork::from_ip(IpAddr::V4(ip), 64), ip)
}

/// A device's announcement with fresh keys, and its secret.
fn device() -> (Announce, LocalSecret) {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut crate::os_rng(), &mut bytes);
    let key = PresenceKey::from_bytes(bytes);
    let secret = LocalSecret::generate(&mut crate::os_rng());
    let id = key.instance_id();
    let private = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 50));
    let announce = Announce::new(
        id,
        private,
        8080,
        DeviceInfo::default(),
        secret.commitment(&id),
        key,
    );
    (announce, secret)
}

fn unknown_code() -> RedeemRequest {
    let code = LinkCode::parse("abcdef").unwrap_or_else(|| unreachable!("a valid code"));
    RedeemRequest::new(InstanceId::generate(&mut crate::os_rng()), code)
}

/// The live charges of a counter.
async fn charges<S: Backend>(records: &S, key: &CounterKey, now: DateTime<Utc>) -> Step<u64> {
    let mut live = 0;
    records
        .update_counter(key, now, &mut |record| {
            live = record.live(now.timestamp_millis());
        })
        .await
        .map_err(|err| format!("reading a budget: {err}"))?;
    Ok(live)
}

/// The live charges of every budget a guess from `ip` touches: each level of its address, then
/// the code spaces' global budgets.
async fn every_budget<S: Backend>(records: &S, ip: Ipv4Addr, now: DateTime<Utc>) -> Step<Vec<u64>> {
    let mut keys: Vec<CounterKey> = [32u8, 24, 16, 8]
        .iter()
        .filter_map(|len| Ipv4Net::new(ip, *len).ok())
        .map(|net| CounterKey::Guesses(IpNet::V4(net.trunc())))
        .collect();
    keys.push(CounterKey::SpaceGuesses(CodeSpace::Manual));
    keys.push(CounterKey::SpaceGuesses(CodeSpace::Fallback));
    let mut live = Vec::with_capacity(keys.len());
    for key in &keys {
        live.push(charges(records, key, now).await?);
    }
    Ok(live)
}

type Step<T> = Result<T, String>;

/// The refusal's name, or `ok`.
fn said<T>(result: &Result<T, Refusal>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(refusal) => format!("{refusal:?}"),
    }
}

/// Calls `op` until it answers something other than a store error, as a client retries
/// `503 store_unavailable` (at most 10 times).
async fn retried<T, F, Fut>(mut op: F) -> Result<T, Refusal>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Refusal>>,
{
    let mut last = op().await;
    for _ in 0..10 {
        match last {
            Err(Refusal::Store(_)) => last = op().await,
            _ => break,
        }
    }
    last
}

/// `store.records.two_instances`: the whole link flow with each step on the other instance.
pub(super) async fn two_instances(store: &Arc<dyn Store>, now: DateTime<Utc>) -> Verdict {
    let key = fresh_key();
    let (a, b) = (instance(store, &key)?, instance(store, &key)?);
    let (home, _) = network(10);
    let (x, secret) = device();
    let step = |what: &str, refusal: Refusal| format!("{what}: refused {refusal:?}");
    a.announce(now, home, &x)
        .await
        .map_err(|r| step("announce on A", r))?;
    let found = b
        .discover(now, home, &alice())
        .await
        .map_err(|r| step("discover on B", r))?;
    if found.agents.len() != 1 {
        return Err(format!(
            "B discovered {} agents, expected the one A heard",
            found.agents.len()
        ));
    }
    let request = LinkRequest::new(x.instance_id, secret);
    let mut rng = crate::os_rng();
    let linked = a
        .link(now, &mut rng, home, &alice(), request)
        .await
        .map_err(|r| step("link on A", r))?;
    if linked.state != LinkState::Pending {
        return Err(format!(
            "link on A answered {:?}, expected Pending",
            linked.state
        ));
    }
    let polled = b
        .announce(now, home, &x)
        .await
        .map_err(|r| step("the agent's poll on B", r))?;
    let [AgentMessage::VerifyAndRedeem { code, .. }] = polled.messages.as_slice() else {
        return Err(format!(
            "the agent's poll on B carried {} messages, expected the link",
            polled.messages.len()
        ));
    };
    let redeem = RedeemRequest::new(x.instance_id, code.clone());
    a.redeem(now, &mut rng, home, &redeem)
        .await
        .map_err(|r| step("redeem on A", r))?;
    let status = b
        .link_status(now, home, &alice().account, &x.instance_id)
        .await
        .map_err(|r| step("link status on B", r))?;
    if status.state != LinkState::Linked {
        return Err(format!(
            "the link's status on B is {:?}, expected Linked",
            status.state
        ));
    }
    let again = b.redeem(now, &mut rng, home, &redeem).await;
    if !matches!(again, Err(Refusal::CodeUsed)) {
        return Err(format!(
            "the code redeemed again on B answered {}, expected CodeUsed",
            said(&again)
        ));
    }
    Ok(
        "announce A, discover B, link A, poll B, redeem A, status B: linked; the code single use"
            .to_owned(),
    )
}

/// `store.records.budget`: wrong guesses from one address racing through two instances: no
/// more than the threshold are checked, and each one checked is charged.
pub(super) async fn budget(store: &Arc<dyn Store>, now: DateTime<Utc>, racers: usize) -> Verdict {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("not run: no Tokio runtime to race tasks on".to_owned());
    }
    let key = fresh_key();
    let servers = [
        Arc::new(instance(store, &key)?),
        Arc::new(instance(store, &key)?),
    ];
    let (guesser, _) = network(20);
    let guesses = racers.max(THRESHOLD + 2);
    let barrier = Arc::new(tokio::sync::Barrier::new(guesses));
    let handles: Vec<_> = (0..guesses)
        .map(|i| {
            let server = Arc::clone(&servers[i % 2]);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                let mut rng = crate::os_rng();
                server
                    .redeem(now, &mut rng, guesser, &unknown_code())
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let mut checked = 0;
    let mut seen = Vec::new();
    for handle in handles {
        let result = handle
            .await
            .map_err(|_| "a guess's task panicked".to_owned())?;
        match result {
            Err(Refusal::UnknownCode) => checked += 1,
            Err(Refusal::LockedOut | Refusal::Store(_)) => {}
            other => seen.push(said(&other)),
        }
    }
    if !seen.is_empty() {
        return Err(format!("unexpected answers to a wrong guess: {seen:?}"));
    }
    let records = servers[0].store();
    let charged = charges(records, &CounterKey::network(&guesser), now).await?;
    if checked > THRESHOLD || checked == 0 || charged != checked as u64 {
        return Err(format!(
            "{guesses} racing wrong guesses through two instances: {checked} checked (at most {THRESHOLD}), {charged} charged"
        ));
    }
    Ok(format!(
        "{guesses} racing wrong guesses: {checked} checked, {charged} charged"
    ))
}

/// What the store does at the chosen call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Fails as unavailable without applying.
    Before,
    /// Applies, then answers unavailable: its reply lost.
    After,
}

/// The store under test, failing its chosen call (numbered over loads and swaps).
struct Faulty {
    inner: Arc<dyn Store>,
    calls: AtomicUsize,
    fault: Mutex<Option<(usize, Fault)>>,
}

impl Faulty {
    fn new(inner: &Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::clone(inner),
            calls: AtomicUsize::new(0),
            fault: Mutex::new(None),
        })
    }

    /// Fails the `n`th call from now.
    fn arm(&self, n: usize, fault: Fault) {
        let at = self.calls.load(Ordering::SeqCst) + n;
        *crate::lock_unpoisoned(&self.fault) = Some((at, fault));
    }

    /// Drops the fault; whether it had fired.
    fn disarm(&self) -> bool {
        crate::lock_unpoisoned(&self.fault).take().is_none()
    }

    fn call(&self) -> Option<Fault> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let mut fault = crate::lock_unpoisoned(&self.fault);
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
        match self.call() {
            Some(_) => Err(StoreError::Unavailable),
            None => self.inner.load(key).await,
        }
    }

    async fn load_many(&self, keys: &[&Key]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        match self.call() {
            Some(_) => Err(StoreError::Unavailable),
            None => self.inner.load_many(keys).await,
        }
    }

    async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
        match self.call() {
            Some(Fault::Before) => Err(StoreError::Unavailable),
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

    async fn pause(&self, attempt: u32) {
        self.inner.pause(attempt).await
    }
}

/// One run of a fault check: the faulty store and a server over it, under a fresh key.
struct Run {
    faulty: Arc<Faulty>,
    server: Instance,
}

impl Run {
    fn new(store: &Arc<dyn Store>) -> Result<Self, String> {
        let faulty = Faulty::new(store);
        let as_store: Arc<dyn Store> = faulty.clone();
        let server = instance(&as_store, &fresh_key())?;
        Ok(Self { faulty, server })
    }
}

/// Runs `scenario` with a fault of each kind at each of its store calls in turn (from 0 until
/// one passes its last call), each on a fresh run; `scenario` answers whether the fault fired.
async fn at_every_call<F, Fut>(store: &Arc<dyn Store>, mut scenario: F) -> Verdict
where
    F: FnMut(Run, usize, Fault) -> Fut,
    Fut: std::future::Future<Output = Step<bool>>,
{
    let mut runs = 0;
    for fault in [Fault::Before, Fault::After] {
        let mut n = 0;
        loop {
            let fired = scenario(Run::new(store)?, n, fault)
                .await
                .map_err(|got| format!("{fault:?} call {n}: {got}"))?;
            runs += 1;
            if !fired {
                break;
            }
            n += 1;
            if n > MAX_CALLS {
                return Err(format!("more than {MAX_CALLS} store calls"));
            }
        }
    }
    Ok(format!(
        "{runs} runs, a fault before and after each store call"
    ))
}

/// `store.records.fault.wrong_guess`: a wrong redemption with a fault at each store call is
/// charged once when refused as wrong, at most once when it failed, never twice anywhere.
pub(super) async fn fault_wrong_guess(store: &Arc<dyn Store>, now: DateTime<Utc>) -> Verdict {
    at_every_call(store, |run, n, fault| async move {
        let (guesser, ip) = network(30);
        let mut rng = crate::os_rng();
        run.faulty.arm(n, fault);
        let result = run
            .server
            .redeem(now, &mut rng, guesser, &unknown_code())
            .await
            .map(|_| ());
        let fired = run.faulty.disarm();
        let records = run.server.store();
        let charged = charges(records, &CounterKey::network(&guesser), now).await?;
        let budgets = every_budget(records, ip, now).await?;
        if budgets.iter().any(|n| *n > 1) {
            return Err(format!(
                "one wrong guess charged more than once: {budgets:?}"
            ));
        }
        match (&result, charged) {
            (Err(Refusal::UnknownCode), 1) | (Err(Refusal::Store(_)), 0 | 1) => Ok(fired),
            _ => Err(format!(
                "answered {}, charged {charged} times",
                said(&result)
            )),
        }
    })
    .await
}

/// `store.records.fault.redeem`: a right redemption with a fault at each store call uses the
/// code only if it said so: retried, it is refused as used after a success, and succeeds after
/// a failure; the right guess stays uncharged, the replay of a used code is charged once.
pub(super) async fn fault_redeem(store: &Arc<dyn Store>, now: DateTime<Utc>) -> Verdict {
    at_every_call(store, |run, n, fault| async move {
        let (home, _) = network(40);
        let mut rng = crate::os_rng();
        let minted = run
            .server
            .mint_code(now, &mut rng, &alice().account)
            .await
            .map_err(|r| format!("mint: {r:?}"))?;
        let request = RedeemRequest::new(InstanceId::generate(&mut rng), minted.code);
        run.faulty.arm(n, fault);
        let first = run.server.redeem(now, &mut rng, home, &request).await.map(|_| ());
        let fired = run.faulty.disarm();
        let again = run.server.redeem(now, &mut rng, home, &request).await.map(|_| ());
        let replayed = match (&first, &again) {
            (Ok(()), Err(Refusal::CodeUsed)) => 1,
            (Err(Refusal::Store(_)), Ok(())) => 0,
            _ => {
                return Err(format!(
                    "the redemption answered {}, then again {} (expected ok then CodeUsed, or a store error then ok)",
                    said(&first),
                    said(&again)
                ))
            }
        };
        let charged = charges(run.server.store(), &CounterKey::network(&home), now).await?;
        if charged != replayed {
            return Err(format!("charged {charged} times, expected {replayed} (only a replay is)"));
        }
        Ok(fired)
    })
    .await
}

/// `store.records.fault.link`: a link with the wrong secret, with a fault at each store call, is
/// charged once when refused as wrong and at most once when it failed; a right link with a
/// fault at each call, retried on store errors, is accepted (never refused as already linking).
pub(super) async fn fault_link(store: &Arc<dyn Store>, now: DateTime<Utc>) -> Verdict {
    at_every_call(store, |run, n, fault| async move {
        let mut rng = crate::os_rng();
        let (wrong_home, wrong_ip) = network(50);
        let (x, _) = device();
        run.server
            .announce(now, wrong_home, &x)
            .await
            .map_err(|r| format!("announce: {r:?}"))?;
        let guess = LinkRequest::new(x.instance_id, LocalSecret::generate(&mut rng));
        run.faulty.arm(n, fault);
        let result = run
            .server
            .link(now, &mut rng, wrong_home, &alice(), guess)
            .await
            .map(|_| ());
        let wrong_fired = run.faulty.disarm();
        let records = run.server.store();
        let charged = charges(records, &CounterKey::network(&wrong_home), now).await?;
        let budgets = every_budget(records, wrong_ip, now).await?;
        if budgets.iter().any(|n| *n > 1) {
            return Err(format!(
                "one wrong secret charged more than once: {budgets:?}"
            ));
        }
        match (&result, charged) {
            (Err(Refusal::WrongSecret), 1) | (Err(Refusal::Store(_)), 0 | 1) => {}
            _ => {
                return Err(format!(
                    "a wrong secret answered {}, charged {charged} times",
                    said(&result)
                ))
            }
        }
        let (right_home, _) = network(51);
        let (y, secret) = device();
        run.server
            .announce(now, right_home, &y)
            .await
            .map_err(|r| format!("announce: {r:?}"))?;
        let request = LinkRequest::new(y.instance_id, secret);
        run.faulty.arm(n, fault);
        let server = &run.server;
        let linked = retried(|| {
            let request = request.clone();
            let mut rng = crate::os_rng();
            async move {
                server
                    .link(now, &mut rng, right_home, &alice(), request)
                    .await
            }
        })
        .await;
        let right_fired = run.faulty.disarm();
        match linked {
            Ok(reply) if reply.state == LinkState::Pending => {}
            other => {
                return Err(format!(
                    "the right link, retried, answered {}",
                    said(&other)
                ))
            }
        }
        let charged = charges(records, &CounterKey::network(&right_home), now).await?;
        if charged != 0 {
            return Err(format!("the right link left {charged} charges"));
        }
        Ok(wrong_fired || right_fired)
    })
    .await
}
