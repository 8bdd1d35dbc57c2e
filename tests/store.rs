//! The server's operations over a store that fails at a chosen call: a fault between the steps of
//! a link or a redemption leaves nothing usable and nothing that blocks the retry, which then
//! completes the flow. No Redis needed (the Redis tests kill a real one between requests).
#![cfg(feature = "tokio")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lanlink::code::CodeKey;
use lanlink::secret::PresenceKey;
use lanlink::server::{
    CodeFn, CodeRecord, CounterFn, CounterKey, MemoryStore, NetworkFn, ServerConfig, Service,
    Store, StoreError,
};
use lanlink::wire::{AgentMessage, Announce, LinkRequest, LinkState, RedeemRequest, WIRE_VERSION};
use lanlink::{AccountId, DeviceInfo, ForwardedHeaders, LocalSecret, PublicNetwork, Refusal};

/// An in-memory store whose call number `fail_at` (counting from 0) fails as unavailable.
struct Flaky {
    inner: Mutex<MemoryStore>,
    calls: AtomicUsize,
    fail_at: AtomicUsize,
}

impl Flaky {
    fn new() -> Self {
        Self {
            inner: Mutex::new(MemoryStore::default()),
            calls: AtomicUsize::new(0),
            fail_at: AtomicUsize::new(usize::MAX),
        }
    }

    /// Fails the `n`th call from now.
    fn fail_in(&self, n: usize) {
        self.fail_at
            .store(self.calls.load(Ordering::SeqCst) + n, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call == self.fail_at.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable);
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Flaky {
    async fn update_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        create: bool,
        f: &mut NetworkFn<'_>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner
            .update_network(network, now, config, create, f)
            .await
    }

    async fn create_code(
        &self,
        key: &CodeKey,
        record: &CodeRecord,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.create_code(key, record, now).await
    }

    async fn update_code(
        &self,
        key: &CodeKey,
        now: DateTime<Utc>,
        f: &mut CodeFn<'_>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.update_code(key, now, f).await
    }

    async fn delete_code(&self, key: &CodeKey) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete_code(key).await
    }

    async fn update_counter(
        &self,
        key: &CounterKey,
        now: DateTime<Utc>,
        f: &mut CounterFn<'_>,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.update_counter(key, now, f).await
    }

    async fn purge(&self, now: DateTime<Utc>, config: &ServerConfig) -> Result<(), StoreError> {
        self.check()?;
        self.inner.purge(now, config).await
    }
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

fn announcement() -> (Announce, LocalSecret) {
    let key = PresenceKey::from_bytes([1; 32]);
    let secret = LocalSecret::from_bytes([2; 32]);
    let id = key.instance_id();
    let announce = Announce {
        candidates: Vec::new(),
        version: WIRE_VERSION,
        instance_id: id,
        private_ip: "192.168.1.50".parse().expect("ip"),
        port: 8080,
        info: DeviceInfo::default(),
        commitment: secret.commitment(&id),
        presence_key: key,
    };
    (announce, secret)
}

const PEER: &str = "203.0.113.9";

fn home() -> PublicNetwork {
    PublicNetwork::from_ip(PEER.parse().expect("ip"), 64)
}

/// Whether the memory store holds a link claim of `announce`'s instance, for the home network.
fn claimed(store: &Flaky, announce: &Announce) -> bool {
    let inner = store.inner.lock().expect("lock");
    let key = lanlink::code::CodeKey::instance_claim(&announce.instance_id);
    inner.code(&key).is_some_and(|claim| {
        claim.kind == lanlink::server::CodeKind::InstanceClaim && claim.network == Some(home())
    })
}

/// The live link codes (not counting the instance's claim, see [`claimed`]) and the network's
/// link state, straight from the memory store.
fn state(store: &Flaky, account: &AccountId, announce: &Announce) -> (usize, LinkState, usize) {
    let inner = store.inner.lock().expect("lock");
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
    drop(inner);
    (
        codes - usize::from(claimed(store, announce)),
        state,
        failures,
    )
}

/// A fault at each store call of a link request: refused with `store_unavailable`, then no code
/// and no link left behind (except a code whose delete itself failed: bound, unrevealed, and
/// expiring), no failure counted; the retry links. A fault after the instance's claim leaves the
/// claim (this network's, so the retry goes through: nothing stuck).
#[tokio::test]
async fn a_fault_at_any_step_of_a_link_leaves_nothing_and_the_retry_links() {
    let alice = AccountId::new("alice").expect("account");
    let (announce, secret) = announcement();
    let request = || LinkRequest {
        instance_id: announce.instance_id,
        local_secret: secret.clone(),
        nonce: None,
    };
    let peer = PEER.parse().expect("ip");
    // A link makes 6 store calls before it succeeds: charge the guess at the address and at its
    // /24, check, claim the instance, create the code, accept (then the two refunds).
    for step in 0..6 {
        let store = Arc::new(Flaky::new());
        let service = Service::new(ServerConfig::default(), store.clone()).expect("config");
        service
            .announce_in(now(), home(), &announce)
            .await
            .expect("announce");
        store.fail_in(step);
        let refused = service
            .handle_link(
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
            Refusal::StoreUnavailable,
            "step {step}"
        );
        assert_eq!(
            state(&store, &alice, &announce),
            (0, LinkState::Unknown, 0),
            "step {step}: no code, no link, no failure"
        );
        assert_eq!(
            claimed(&store, &announce),
            step > 3,
            "step {step}: the claim"
        );
        let linked = service
            .handle_link(
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
        let service = Service::new(ServerConfig::default(), store.clone()).expect("config");
        service
            .announce_in(now(), home(), &announce)
            .await
            .expect("announce");
        let request = LinkRequest {
            instance_id: announce.instance_id,
            local_secret: secret.clone(),
            nonce: None,
        };
        service
            .handle_link(
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
            .announce_in(now(), home(), &announce)
            .await
            .expect("announce");
        let Some(AgentMessage::VerifyAndRedeem { code, .. }) = reply.messages.first() else {
            panic!("the message");
        };
        let redeem = RedeemRequest {
            instance_id: announce.instance_id,
            code: code.clone(),
            presence_key: None,
            attempt: 0,
        };
        store.fail_in(step);
        let refused = service
            .redeem_in(now(), &mut lanlink::os_rng(), home(), &redeem)
            .await;
        assert_eq!(
            refused.unwrap_err(),
            Refusal::StoreUnavailable,
            "step {step}"
        );
        assert_eq!(
            state(&store, &alice, &announce),
            (1, LinkState::Delivered, 0),
            "step {step}: not linked, nothing counted"
        );
        let redeemed = service
            .redeem_in(now(), &mut lanlink::os_rng(), home(), &redeem)
            .await
            .expect("the retry redeems");
        assert_eq!(redeemed.account, alice);
        assert_eq!(state(&store, &alice, &announce).1, LinkState::Linked);
        let again = service
            .redeem_in(now(), &mut lanlink::os_rng(), home(), &redeem)
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
    let guess = || LinkRequest {
        instance_id: announce.instance_id,
        local_secret: LocalSecret::from_bytes([9; 32]),
        nonce: None,
    };
    // Call 0 charges the address, call 1 its /24.
    for step in 0..2 {
        let store = Arc::new(Flaky::new());
        let service = Service::new(ServerConfig::default(), store.clone()).expect("config");
        service
            .announce_in(now(), home(), &announce)
            .await
            .expect("announce");
        store.fail_in(step);
        let refused = service
            .handle_link(
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
            Refusal::StoreUnavailable,
            "step {step}"
        );
        assert_eq!(state(&store, &alice, &announce), (0, LinkState::Unknown, 0));
        let counted = service
            .handle_link(
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
    let service = Service::new(ServerConfig::default(), store.clone()).expect("config");
    service
        .announce_in(now(), home(), &announce)
        .await
        .expect("announce");
    store.fail_in(6); // after charge, charge, check, claim, create, accept: the first refund
    let linked = service
        .handle_link(
            now(),
            &mut lanlink::os_rng(),
            &alice,
            PEER.parse().expect("ip"),
            ForwardedHeaders::NONE,
            LinkRequest {
                instance_id: announce.instance_id,
                local_secret: secret,
                nonce: None,
            },
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

    let memory = Arc::new(Mutex::new(MemoryStore::default()));
    let flaky = Arc::new(Flaky::new());
    let stores: [Arc<dyn Store>; 2] = [memory.clone(), flaky.clone()];
    for store in stores {
        let service = Service::new(config.clone(), store).expect("config");
        service
            .handle_announce(t0, peer, none, &announce)
            .await
            .expect("announce");
        let shown = service
            .handle_discover(t0, peer, none)
            .await
            .expect("discover");
        assert_eq!(shown.agents.len(), 1);
        assert_eq!(shown.agents[0].instance_id, announce.instance_id);
        let gone = service
            .handle_discover(later, peer, none)
            .await
            .expect("discover");
        assert!(gone.agents.is_empty(), "an expired presence is not shown");
        let other = service
            .handle_discover(t0, elsewhere, none)
            .await
            .expect("discover");
        assert!(other.agents.is_empty());
    }
    // The plain read left the expired presence in place and created no record for the other
    // network; the default (an update) pruned it.
    let memory = memory.lock().expect("lock");
    assert_eq!(memory.networks(), 1);
    assert_eq!(
        memory.network(&home()).map(|r| r.presences.len()),
        Some(1),
        "not pruned by a read"
    );
    assert!(flaky
        .inner
        .lock()
        .expect("lock")
        .network(&home())
        .is_none_or(|r| r.presences.is_empty()));
}
