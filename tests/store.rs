//! The server's operations over a store that fails at a chosen call: a fault between the steps of
//! a link or a redemption leaves nothing usable and nothing that blocks the retry, which then
//! completes the flow. No Redis needed (the Redis tests kill a real one between requests).
#![cfg(feature = "tokio")]

mod support;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use support::gated::{Gate, Gated};
use support::steps::{announce_at, discover_at, link_at};

use chrono::{DateTime, Utc};
use lanlink::secret::PresenceKey;
use lanlink::server::{Backend, CodeRecord, Events, MemoryStore, Server, ServerConfig, StoreError};
use lanlink::wire::{AgentMessage, Announce, LinkRequest, LinkState, RedeemRequest};
use lanlink::{AccountId, DeviceInfo, ForwardedHeaders, LocalSecret, PublicNetwork, Refusal};
use tokio::sync::oneshot;

/// An in-memory store whose chosen calls (numbered from 0) fail as unavailable, and one of
/// whose calls may wait, before it runs, until the test lets it go on.
type Flaky = Gated<MemoryStore, Faults>;

/// The gate of [`Flaky`].
#[derive(Default)]
struct Faults {
    calls: AtomicUsize,
    fail_at: Mutex<Vec<usize>>,
    pause: Mutex<Option<Pause>>,
}

/// A call held back: it says so on `paused`, then waits for `resume` (`true`: then it fails).
struct Pause {
    at: usize,
    paused: oneshot::Sender<()>,
    resume: oneshot::Receiver<bool>,
}

impl Gated<MemoryStore, Faults> {
    fn new() -> Self {
        Self::default()
    }

    /// Fails the `n`th call from now (and any chosen before).
    fn fail_in(&self, n: usize) {
        let at = self.gate.calls.load(Ordering::SeqCst) + n;
        self.gate.fail_at.lock().expect("lock").push(at);
    }

    /// Holds back the `n`th call from now: the first channel says when it waits, the second lets
    /// it go on (`true`: and fail).
    fn pause_in(&self, n: usize) -> (oneshot::Receiver<()>, oneshot::Sender<bool>) {
        let (paused, on_pause) = oneshot::channel();
        let (go, resume) = oneshot::channel();
        let at = self.gate.calls.load(Ordering::SeqCst) + n;
        *self.gate.pause.lock().expect("lock") = Some(Pause { at, paused, resume });
        (on_pause, go)
    }
}

impl Gate for Faults {
    fn before(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail_at.lock().expect("lock").contains(&call) {
                return Err(StoreError::Unavailable);
            }
            let pause = {
                let mut pause = self.pause.lock().expect("lock");
                match pause.as_ref() {
                    Some(held) if held.at == call => pause.take(),
                    _ => None,
                }
            };
            if let Some(Pause { paused, resume, .. }) = pause {
                let _ = paused.send(());
                if resume.await.unwrap_or(false) {
                    return Err(StoreError::Unavailable);
                }
            }
            Ok(())
        })
    }
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

fn announcement() -> (Announce, LocalSecret) {
    let key = PresenceKey::from_bytes([1; 32]);
    let secret = LocalSecret::from_bytes([2; 32]);
    let id = key.instance_id();
    let announce = Announce::new(
        id,
        "192.168.1.50".parse().expect("ip"),
        8080,
        DeviceInfo::default(),
        secret.commitment(&id),
        key,
    );
    (announce, secret)
}

const PEER: &str = "203.0.113.9";

fn home() -> PublicNetwork {
    PublicNetwork::from_ip(PEER.parse().expect("ip"), 64)
}

/// The dual-stack agent's other network: the IPv6 /64 of [`V6_PEER`].
const V6_PEER: &str = "2001:db8:7:1::20";

fn v6_home() -> PublicNetwork {
    PublicNetwork::from_ip(V6_PEER.parse().expect("ip"), 64)
}

/// The record under the link claim key of `announce`'s instance, live or not.
fn claim_record(store: &Flaky, announce: &Announce) -> Option<CodeRecord> {
    let inner = &store.inner;
    let key = lanlink::code::CodeKey::instance_claim(&announce.instance_id);
    inner.code(&key)
}

/// Whether the memory store holds a live link claim of `announce`'s instance, for the home
/// network.
fn claimed(store: &Flaky, announce: &Announce) -> bool {
    claim_record(store, announce).is_some_and(|claim| {
        claim.kind == lanlink::server::CodeKind::InstanceClaim
            && claim.network == Some(home())
            && claim.is_live(now())
    })
}

/// The link codes (not counting the record under the instance's claim key, live or let go) and
/// the network's link state, straight from the memory store.
fn state(store: &Flaky, account: &AccountId, announce: &Announce) -> (usize, LinkState, usize) {
    let inner = &store.inner;
    let record = inner.network(&home());
    let state = record.map_or(LinkState::Unknown, |r| {
        r.link_state(account, &announce.instance_id)
    });
    let failures = usize::try_from(inner.failures(
        &home(),
        chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()),
    ))
    .unwrap_or(0);
    let codes = inner.codes();
    (
        codes - usize::from(claim_record(store, announce).is_some()),
        state,
        failures,
    )
}

/// A fault at each store call of a link request: refused with `store_unavailable`, then no code
/// and no link left behind (except a code whose delete itself failed: bound, unrevealed, and
/// expiring), no failure counted; the retry links. A fault after the instance's claim lets the
/// claim go too (nothing stuck for the agent's other network either).
#[tokio::test]
async fn a_fault_at_any_step_of_a_link_leaves_nothing_and_the_retry_links() {
    let alice = AccountId::new("alice").expect("account");
    let (announce, secret) = announcement();
    let request = || LinkRequest::new(announce.instance_id, secret.clone());
    let peer = PEER.parse().expect("ip");
    // A link makes 6 store calls before it succeeds: charge the guess at the address and at its
    // /24, check, claim the instance, create the code, accept (then the two refunds).
    for step in 0..6 {
        let store = Arc::new(Flaky::new());
        let service = Server::with_store(ServerConfig::default(), store.clone(), Events::discard())
            .expect("config");
        service
            .announce(now(), home(), &announce)
            .await
            .expect("announce");
        store.fail_in(step);
        let refused = link_at(
            &service,
            now(),
            &mut lanlink::os_rng(),
            &alice,
            peer,
            ForwardedHeaders::NONE,
            request(),
        )
        .await;
        assert_eq!(
            refused.unwrap_err(),
            Refusal::Store(lanlink::server::StoreError::Unavailable),
            "step {step}"
        );
        assert_eq!(
            state(&store, &alice, &announce),
            (0, LinkState::Unknown, 0),
            "step {step}: no code, no link, no failure"
        );
        assert!(
            !claimed(&store, &announce),
            "step {step}: no claim left behind"
        );
        let linked = link_at(
            &service,
            now(),
            &mut lanlink::os_rng(),
            &alice,
            peer,
            ForwardedHeaders::NONE,
            request(),
        )
        .await
        .expect("the retry links");
        assert_eq!(linked.state, LinkState::Pending);
        assert_eq!(state(&store, &alice, &announce), (1, LinkState::Pending, 0));
    }
}

/// The dual-stack agent of [`announcement`], present in the home (IPv4) network and in
/// [`v6_home`], on a service over `store`.
async fn dual_stack(store: &Arc<Flaky>, announce: &Announce) -> Server<Arc<Flaky>> {
    let service = Server::with_store(ServerConfig::default(), store.clone(), Events::discard())
        .expect("config");
    for network in [home(), v6_home()] {
        service
            .announce(now(), network, announce)
            .await
            .expect("announce");
    }
    service
}

/// `account` asks `service` to link the agent of `announce` with `secret`, from `peer`.
async fn link_from(
    service: &Server<Arc<Flaky>>,
    account: &str,
    peer: &str,
    announce: &Announce,
    secret: &LocalSecret,
) -> Result<LinkState, Refusal> {
    link_at(
        service,
        now(),
        &mut lanlink::os_rng(),
        &AccountId::new(account).expect("account"),
        peer.parse().expect("ip"),
        ForwardedHeaders::NONE,
        LinkRequest::new(announce.instance_id, secret.clone()),
    )
    .await
    .map(|reply| reply.state)
}

/// A link from the IPv4 network passes its checks and claims the instance; the agent announces
/// there again (with another commitment) before the link is accepted, so the accepting write's
/// re-check refuses it. Its claim goes with it: the IPv6 network's link is accepted at once,
/// not ten minutes later.
#[tokio::test]
async fn a_link_refused_after_its_claim_lets_the_other_network_link() {
    let (announce, secret) = announcement();
    let store = Arc::new(Flaky::new());
    let service = dual_stack(&store, &announce).await;
    // Charge, charge, check, claim, create the code: call 5 is the accepting write.
    let (paused, resume) = store.pause_in(5);
    let mut racing = announce.clone();
    racing.commitment = LocalSecret::from_bytes([3; 32]).commitment(&announce.instance_id);
    let (refused, ()) = tokio::join!(
        link_from(&service, "alice", PEER, &announce, &secret),
        async {
            paused.await.expect("the accept waits");
            assert!(claimed(&store, &announce), "the link holds the claim");
            let _ = service.announce(now(), home(), &racing).await;
            resume.send(false).expect("resume");
        }
    );
    assert_eq!(
        refused,
        Err(Refusal::AgentContested),
        "refused at the re-check"
    );
    assert!(!claimed(&store, &announce), "the claim is let go");
    assert_eq!(
        link_from(&service, "alice", V6_PEER, &announce, &secret).await,
        Ok(LinkState::Pending),
        "the other network links at once"
    );
}

/// A store fault at the code's creation (step 3) or at the accepting write (step 4), after the
/// claim: the claim is let go, and the IPv6 network's link is accepted at once. Were the code's
/// delete to fail too after a failed accept (which may have landed before a lost reply, naming
/// that code), the claim is kept: the other network waits for it to lapse.
#[tokio::test]
async fn a_fault_after_the_claim_lets_the_other_network_link() {
    let (announce, secret) = announcement();
    // Charge, charge, check, claim, then: 4 creates the code, 5 accepts, 6 deletes the code.
    for (faults, freed) in [(&[4][..], true), (&[5], true), (&[5, 6], false)] {
        let store = Arc::new(Flaky::new());
        let service = dual_stack(&store, &announce).await;
        for fault in faults {
            store.fail_in(*fault);
        }
        assert_eq!(
            link_from(&service, "alice", PEER, &announce, &secret).await,
            Err(Refusal::Store(lanlink::server::StoreError::Unavailable)),
            "faults at {faults:?}"
        );
        assert_eq!(claimed(&store, &announce), !freed, "faults at {faults:?}");
        let other = link_from(&service, "alice", V6_PEER, &announce, &secret).await;
        if freed {
            assert_eq!(other, Ok(LinkState::Pending), "faults at {faults:?}");
        } else {
            assert_eq!(other, Err(Refusal::AlreadyLinking), "faults at {faults:?}");
            // The claiming network is not stuck.
            assert_eq!(
                link_from(&service, "alice", PEER, &announce, &secret).await,
                Ok(LinkState::Pending)
            );
        }
    }
}

/// Two link requests of the IPv4 network hold the claim at once (the second joins the first's):
/// the second fails (a fault at its code's creation) and lets go of its hold, but the first
/// still holds the claim, so the IPv6 network is still refused `already_linking`. When the first
/// is accepted the claim stays for good; when it fails too, the claim ends with it and the IPv6
/// network links.
#[tokio::test]
async fn a_claim_held_by_a_concurrent_request_outlives_a_failed_one() {
    let (announce, secret) = announcement();
    for first_fails in [false, true] {
        let store = Arc::new(Flaky::new());
        let service = dual_stack(&store, &announce).await;
        // The first request waits at its accepting write (call 5).
        let (paused, resume) = store.pause_in(5);
        let (first, ()) = tokio::join!(
            link_from(&service, "alice", PEER, &announce, &secret),
            async {
                paused.await.expect("the first waits");
                // The second: charge, charge, check, claim (taken), join it, then 5 creates its
                // code, and fails.
                store.fail_in(5);
                assert_eq!(
                    link_from(&service, "bob", PEER, &announce, &secret).await,
                    Err(Refusal::Store(lanlink::server::StoreError::Unavailable))
                );
                assert!(
                    claimed(&store, &announce),
                    "the first request's hold remains"
                );
                assert_eq!(
                    link_from(&service, "alice", V6_PEER, &announce, &secret).await,
                    Err(Refusal::AlreadyLinking),
                    "claimed while the first request is in flight"
                );
                resume.send(first_fails).expect("resume");
            }
        );
        let other = link_from(&service, "alice", V6_PEER, &announce, &secret).await;
        if first_fails {
            assert_eq!(
                first,
                Err(Refusal::Store(lanlink::server::StoreError::Unavailable))
            );
            assert!(!claimed(&store, &announce), "the last holder let go");
            assert_eq!(other, Ok(LinkState::Pending));
        } else {
            assert_eq!(first, Ok(LinkState::Pending));
            assert!(
                claimed(&store, &announce),
                "an accepted link keeps its hold"
            );
            assert_eq!(other, Err(Refusal::AlreadyLinking));
        }
    }
}

/// A claim written by a server that did not count holders (0): a request that joins it and
/// fails cannot release it (its unknown holder counts as one that never lets go), so the IPv6
/// network is still refused until the claim lapses.
#[tokio::test]
async fn a_legacy_claim_is_never_released_by_a_joiner() {
    let (announce, secret) = announcement();
    let store = Arc::new(Flaky::new());
    let service = dual_stack(&store, &announce).await;
    let t = now();
    let key = lanlink::code::CodeKey::instance_claim(&announce.instance_id);
    let legacy = CodeRecord {
        account: AccountId::new("alice").expect("account"),
        instance_id: Some(announce.instance_id),
        network: Some(home()),
        expires_at: t + chrono::TimeDelta::minutes(10),
        redeemed: false,
        redeemed_by: None,
        claim_attempt: 0,
        manual: false,
        kind: lanlink::server::CodeKind::InstanceClaim,
        quota_released: false,
    };
    store.inner.put_code(key, legacy);
    // Charge, charge, check, claim (taken), join it, then 5 creates the code, and fails.
    store.fail_in(5);
    assert_eq!(
        link_from(&service, "alice", PEER, &announce, &secret).await,
        Err(Refusal::Store(lanlink::server::StoreError::Unavailable))
    );
    let claim = claim_record(&store, &announce).expect("the claim");
    assert!(claim.is_live(now()), "not released");
    assert_eq!(
        claim.claim_attempt, 1,
        "its unknown holder is counted, for good"
    );
    assert_eq!(
        link_from(&service, "alice", V6_PEER, &announce, &secret).await,
        Err(Refusal::AlreadyLinking)
    );
    // The claiming network still links, through the legacy claim.
    assert_eq!(
        link_from(&service, "alice", PEER, &announce, &secret).await,
        Ok(LinkState::Pending)
    );
}

/// A fault at each store call of a redemption: refused with `store_unavailable`, no token, the
/// code still redeemable and the link not completed; the retry redeems, once.
#[tokio::test]
async fn a_fault_at_any_step_of_a_redemption_leaves_nothing_and_the_retry_redeems() {
    let alice = AccountId::new("alice").expect("account");
    let (announce, secret) = announcement();
    let peer = PEER.parse().expect("ip");
    // A redemption makes 6 store calls: charge the guess at the address and at its /24, claim
    // the code, the two refunds (best effort: a failed refund leaves its charge, not the
    // redemption), then the network.
    for step in [0, 1, 2, 5] {
        let store = Arc::new(Flaky::new());
        let service = Server::with_store(ServerConfig::default(), store.clone(), Events::discard())
            .expect("config");
        service
            .announce(now(), home(), &announce)
            .await
            .expect("announce");
        let request = LinkRequest::new(announce.instance_id, secret.clone());
        link_at(
            &service,
            now(),
            &mut lanlink::os_rng(),
            &alice,
            peer,
            ForwardedHeaders::NONE,
            request,
        )
        .await
        .expect("link");
        let reply = service
            .announce(now(), home(), &announce)
            .await
            .expect("announce");
        let Some(AgentMessage::VerifyAndRedeem { code, .. }) = reply.messages.first() else {
            panic!("the message");
        };
        let redeem = RedeemRequest::new(announce.instance_id, code.clone());
        store.fail_in(step);
        let refused = service
            .redeem(now(), &mut lanlink::os_rng(), home(), &redeem)
            .await;
        assert_eq!(
            refused.unwrap_err(),
            Refusal::Store(lanlink::server::StoreError::Unavailable),
            "step {step}"
        );
        assert_eq!(
            state(&store, &alice, &announce),
            (1, LinkState::Delivered, 0),
            "step {step}: not linked, nothing counted"
        );
        let redeemed = service
            .redeem(now(), &mut lanlink::os_rng(), home(), &redeem)
            .await
            .expect("the retry redeems");
        assert_eq!(redeemed.account, alice);
        assert_eq!(state(&store, &alice, &announce).1, LinkState::Linked);
        let again = service
            .redeem(now(), &mut lanlink::os_rng(), home(), &redeem)
            .await;
        assert_eq!(
            again.unwrap_err(),
            Refusal::CodeUsed,
            "single use still holds"
        );
    }
}

/// A guess whose charge cannot be written is refused with `store_unavailable` before it is
/// checked (never reported as a plain `wrong_secret` that was not counted), and leaves no
/// charge; a wrong guess whose charges were written stays counted.
#[tokio::test]
async fn an_uncountable_guess_is_refused_unchecked() {
    let alice = AccountId::new("alice").expect("account");
    let (announce, _) = announcement();
    let guess = || LinkRequest::new(announce.instance_id, LocalSecret::from_bytes([9; 32]));
    // Call 0 charges the address, call 1 its /24.
    for step in 0..2 {
        let store = Arc::new(Flaky::new());
        let service = Server::with_store(ServerConfig::default(), store.clone(), Events::discard())
            .expect("config");
        service
            .announce(now(), home(), &announce)
            .await
            .expect("announce");
        store.fail_in(step);
        let refused = link_at(
            &service,
            now(),
            &mut lanlink::os_rng(),
            &alice,
            PEER.parse().expect("ip"),
            ForwardedHeaders::NONE,
            guess(),
        )
        .await;
        assert_eq!(
            refused.unwrap_err(),
            Refusal::Store(lanlink::server::StoreError::Unavailable),
            "step {step}"
        );
        assert_eq!(state(&store, &alice, &announce), (0, LinkState::Unknown, 0));
        let counted = link_at(
            &service,
            now(),
            &mut lanlink::os_rng(),
            &alice,
            PEER.parse().expect("ip"),
            ForwardedHeaders::NONE,
            guess(),
        )
        .await;
        assert_eq!(counted.unwrap_err(), Refusal::WrongSecret);
        assert_eq!(state(&store, &alice, &announce), (0, LinkState::Unknown, 1));
    }
}

/// A refund that fails after a right guess leaves the link in place and the charge standing
/// until its window ends (fail closed: one failure too many, never one too few).
#[tokio::test]
async fn a_failed_refund_keeps_the_link_and_the_charge() {
    let alice = AccountId::new("alice").expect("account");
    let (announce, secret) = announcement();
    let store = Arc::new(Flaky::new());
    let service = Server::with_store(ServerConfig::default(), store.clone(), Events::discard())
        .expect("config");
    service
        .announce(now(), home(), &announce)
        .await
        .expect("announce");
    store.fail_in(6); // after charge, charge, check, claim, create, accept: the first refund
    let linked = link_at(
        &service,
        now(),
        &mut lanlink::os_rng(),
        &alice,
        PEER.parse().expect("ip"),
        ForwardedHeaders::NONE,
        LinkRequest::new(announce.instance_id, secret),
    )
    .await
    .expect("linked");
    assert_eq!(linked.state, LinkState::Pending);
    assert_eq!(state(&store, &alice, &announce), (1, LinkState::Pending, 1));
}

/// Discovery through a `Service`, from the in-memory store's plain read and from a store that
/// keeps the trait's default (a non-creating update): the same answers, expired presences
/// neither shown nor counted, and nothing written by the read.
#[tokio::test]
async fn discovery_reads_without_writing_and_skips_expired_presences() {
    let config = ServerConfig::default();
    let (announce, _secret) = announcement();
    let t0 = now();
    let later = t0 + chrono::TimeDelta::seconds(6);
    let peer = PEER.parse().expect("ip");
    let elsewhere = "198.51.100.1".parse().expect("ip");
    let none = ForwardedHeaders::NONE;

    let memory = Arc::new(MemoryStore::default());
    let flaky = Arc::new(Flaky::new());
    let stores: [Arc<dyn Backend>; 2] = [memory.clone(), flaky.clone()];
    for store in stores {
        let service = Server::with_store(config.clone(), store, Events::discard()).expect("config");
        announce_at(&service, t0, peer, none, &announce)
            .await
            .expect("announce");
        let shown = discover_at(&service, t0, peer, none)
            .await
            .expect("discover");
        assert_eq!(shown.agents.len(), 1);
        assert_eq!(shown.agents[0].instance_id, announce.instance_id);
        let gone = discover_at(&service, later, peer, none)
            .await
            .expect("discover");
        assert!(gone.agents.is_empty(), "an expired presence is not shown");
        let other = discover_at(&service, t0, elsewhere, none)
            .await
            .expect("discover");
        assert!(other.agents.is_empty());
    }
    // The discoveries after the account's first from a network are plain reads: they left the
    // expired presence in place, behind a wrapper too. The first discovery from the other
    // network counted the account there (a record holding its discoverer's tag).
    for store in [&*memory, &flaky.inner] {
        assert_eq!(store.networks(), 2);
        assert_eq!(
            store.network(&home()).map(|r| r.presences.len()),
            Some(1),
            "not pruned by a read"
        );
    }
}
