// (1089 lines: one concern, because each of the server's steps is one method of `Ops` over the store, its checks and writes side by side; the budgets' charging is in ops/budget.rs.)
//! The server's operations, written once over any [`Backend`](super::Backend): each
//! [`Server`] step runs one of them over the server's store.
//! An operation must not decide a record's rules itself (the records' pure functions do), read a
//! clock or draw from a global RNG; its only I/O is the store's.
//!
//! Each operation loads the records it needs, applies the core's pure functions
//! ([`NetworkRecord`](super::NetworkRecord), [`CodeRecord`]) and writes each record back with one
//! atomic store call. Operations that touch two records order their writes so that a fault
//! between them leaves nothing usable and nothing that blocks a retry:
//!
//! - **link**: charge the guess → check (read only) → claim the instance (create-if-absent, or
//!   join this network's claim, counting holders) → create the auto code (a new record, only if
//!   no live code has that key) → check again and accept, in one atomic write of the network
//!   record. The code is
//!   128 random bits bound to one instance and one network and is never shown until the accept is
//!   written; if the accept fails it is deleted (and, were that to fail too, it expires unused).
//!   A request that fails after claiming lets go of its hold, and the claim ends with its last
//!   holder; an accepted link keeps it.
//! - **redeem**: charge the guess (every budget, before anything is checked) → mark the code
//!   redeemed (atomic: single use across instances) → complete the link in the network record.
//!   If that last write fails, the code is marked unredeemed again so the agent's retry can
//!   complete; no token is handed out unless every write succeeded.
//! - Every guess (link, redeem) is charged against its [budgets](super::budget) in atomic store
//!   steps *before* it is checked, and refunded only when it proves right (or was no guess): a
//!   burst of concurrent guesses never has more than a budget's threshold checked. If a charge
//!   cannot be written, the request is refused with the store error (never checked); a guess
//!   whose check then fails on a store error is refunded too (its caller learns nothing of it),
//!   as far as the store allows: a refund that fails leaves its charge until the window ends.
//!
//! [`Server`]: super::Server

mod budget;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};

use super::budget::{CodeSpace, Guess};
use super::config::ServerConfig;
#[cfg(doc)]
use super::hook::LinkHook;
use super::hook::{CompletedLink, HookError, LinkVia, PendingLink, TokenDigest};
use super::limits::MINT_ATTEMPTS;
use super::record::Redemption;
use super::record::{later, Announced, CodeKind, CodeRecord, NetworkRecord};
use super::shared::{discoverer_tag, SharedSignal};
#[cfg(doc)]
use super::store::Backend;
use super::store::{StoreError, StoreRef};
use crate::addr::{ForwardedHeaders, PublicNetwork};
use crate::code::{CodeKey, LinkCode};
use crate::confirm::DisplayName;
use crate::error::Refusal;
use crate::event::{RequestKind, ServerEvent};
use crate::id::{AccountId, InstanceId};
use crate::secret::AuthToken;
use crate::wire::Announce;
use crate::wire::{
    AnnounceReply, CodeReply, DiscoverReply, DiscoveredAgents, Hidden, HiddenReason, LinkRequest,
    LinkState, LinkStatusReply, RedeemReply, RedeemRequest, Visibility,
};

/// The most events a [queue](super::Events::queue) holds undrained, so that an
/// embedder that never drains cannot be made to grow memory without bound. Past it, events are
/// not queued but counted, and one [`ServerEvent::EventsLost`] stands in the queue where they
/// would have been: [`Server::poll_event`](super::Server::poll_event) yields it in its turn.
pub const MAX_QUEUED_EVENTS: usize = 4096;

/// Events waiting to be drained: at most [`MAX_QUEUED_EVENTS`], then one
/// [`ServerEvent::EventsLost`] counting the rest.
#[derive(Default)]
pub(crate) struct EventQueue {
    events: VecDeque<ServerEvent>,
    /// How many events were lost in all (each also counted by an `EventsLost` in the queue).
    lost: u64,
}

impl std::fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventQueue")
            .field("queued", &self.events.len())
            .field("lost", &self.lost)
            .finish()
    }
}

impl EventQueue {
    /// Queues `event`. When the queue holds `MAX_QUEUED_EVENTS`
    /// entries (an `EventsLost` counts as one), the event is lost and counted by the
    /// `EventsLost` at the queue's end (one is pushed if the last entry is not one already): the
    /// queue holds at most `MAX_QUEUED_EVENTS + 1` entries, and its order says where each gap
    /// was.
    pub(crate) fn push_back(&mut self, event: ServerEvent) {
        if self.events.len() < MAX_QUEUED_EVENTS {
            self.events.push_back(event);
            return;
        }
        self.lost = self.lost.saturating_add(1);
        match self.events.back_mut() {
            Some(ServerEvent::EventsLost { count }) => *count = count.saturating_add(1),
            _ => self.events.push_back(ServerEvent::EventsLost { count: 1 }),
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }

    pub(crate) fn drain(self) -> impl Iterator<Item = ServerEvent> {
        self.events.into_iter()
    }
}

/// Where events go as they are made: the server's [`Events`](super::Events).
pub(crate) trait Emit: Sync {
    /// Hands `event` on (to the sink or the queue, or drops it when discarding).
    fn emit_one(&self, event: ServerEvent);
}

/// Where one operation's events go: each is handed on as the operation makes it, so an
/// operation that stops half way (its future dropped while a shared store answers) has still
/// reported what it did, and no buffer is allocated per call.
#[derive(Clone, Copy)]
pub(crate) struct OpEvents<'a>(pub(crate) &'a dyn Emit);

impl OpEvents<'_> {
    /// Hands `event` on, after those already made.
    pub(crate) fn push_back(&mut self, event: ServerEvent) {
        self.0.emit_one(event);
    }
}

/// Who claims a code.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Claimant {
    /// A core agent, `proven` when its presence key proved `instance_id`.
    Agent {
        instance_id: InstanceId,
        proven: bool,
        attempt: u32,
    },
    /// An Obico agent (the code's binding names it; `fresh` for a manual code).
    #[cfg_attr(not(feature = "obico-wire"), allow(dead_code))]
    Obico { fresh: InstanceId },
}

/// One operation's view of the server: its configuration, its records, and where its events go.
pub(crate) struct Ops<'a> {
    pub(crate) config: &'a ServerConfig,
    pub(crate) store: StoreRef<'a>,
    pub(crate) events: OpEvents<'a>,
}

/// The core's listing of a network not judged shared: its verified agents, and why none is shown
/// (`too_many_agents`), if so.
#[inline]
pub(crate) fn core_listing(
    record: &NetworkRecord,
    now: DateTime<Utc>,
    config: &ServerConfig,
) -> (DiscoveredAgents, Option<HiddenReason>) {
    (
        record.discover(now, config),
        record.hidden(now, config, None),
    )
}

/// What a discovery read from a network record.
#[derive(Debug, Default)]
pub(crate) struct Found<L = DiscoveredAgents> {
    pub(crate) agents: L,
    pub(crate) present: usize,
    pub(crate) hidden: Option<HiddenReason>,
    /// Whether the discovering account is already among the record's recent discoverers.
    known: bool,
}

impl<L: Default> Found<L> {
    /// What a discovery reads from `record`: nothing listed while the network is marked shared,
    /// else what `list` says (the profile's listing, and why it hides its agents, if it does).
    #[inline]
    fn of(
        record: &NetworkRecord,
        now: DateTime<Utc>,
        config: &ServerConfig,
        tag: Option<u64>,
        list: &impl Fn(&NetworkRecord, DateTime<Utc>, &ServerConfig) -> (L, Option<HiddenReason>),
    ) -> Self {
        let (agents, hidden) = match record.hidden(now, config, None) {
            Some(HiddenReason::SharedNetwork) => (L::default(), Some(HiddenReason::SharedNetwork)),
            _ => list(record, now, config),
        };
        Self {
            agents,
            present: record.present(now),
            hidden,
            known: tag.is_some_and(|tag| record.knows_discoverer(now, tag)),
        }
    }
}

impl Ops<'_> {
    /// What a discovery finds in a network judged shared by its address alone (no read), with
    /// the judgement's event; `None` when the address trips no signal.
    #[inline]
    fn judged_by_address<L: Default>(&mut self, network: PublicNetwork) -> Option<Found<L>> {
        let signal = self.config.shared.judge_address(&network)?;
        self.events.push_back(ServerEvent::NetworkJudgedShared {
            network,
            signal,
            sticky: false,
        });
        Some(Found {
            hidden: Some(HiddenReason::SharedNetwork),
            ..Found::default()
        })
    }

    /// The event of a stateful signal that newly marked `network` shared, if one did.
    pub(crate) fn judged_shared(&mut self, network: PublicNetwork, judged: Option<SharedSignal>) {
        if let Some(signal) = judged {
            self.events.push_back(ServerEvent::NetworkJudgedShared {
                network,
                signal,
                sticky: true,
            });
        }
    }

    /// Resolves the caller's network, or refuses (with an event).
    #[inline]
    pub(crate) fn caller(
        &mut self,
        request: RequestKind,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<PublicNetwork, Refusal> {
        match self.config.resolver.resolve(peer, headers) {
            Ok(ip) => Ok(self.config.network_of(ip)),
            Err(err) => Err(self.refuse(None, request, Refusal::ClientAddr(err))),
        }
    }

    pub(crate) fn refuse(
        &mut self,
        network: Option<PublicNetwork>,
        request: RequestKind,
        reason: Refusal,
    ) -> Refusal {
        self.events.push_back(ServerEvent::Refused {
            network,
            request,
            reason: reason.clone(),
        });
        reason
    }

    fn store_failed(
        &mut self,
        network: Option<PublicNetwork>,
        request: RequestKind,
        err: StoreError,
    ) -> Refusal {
        self.refuse(network, request, err.into())
    }

    /// What a store call on `network`'s record (an `update_network` or `read_network` of
    /// [`Backend`]) came to: a failure refuses `request` (with its event).
    pub(crate) fn stored(
        &mut self,
        request: RequestKind,
        network: PublicNetwork,
        result: Result<bool, StoreError>,
    ) -> Result<(), Refusal> {
        match result {
            Ok(_) => Ok(()),
            Err(err) => Err(self.store_failed(Some(network), request, err)),
        }
    }

    /// An announcement, and until when its request may be held (revision 1.6; `None`: answer
    /// at once). Only a transport that holds (`holds`) grants the hold an announcement asks
    /// for; any other answers at once and keeps the presence its usual lifetime.
    pub(crate) async fn announce_held(
        &mut self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        announce: &Announce,
        holds: bool,
    ) -> Result<(AnnounceReply, Option<DateTime<Utc>>), Refusal> {
        let hold = match holds {
            true => self.config.hold_granted(announce.hold_ms),
            false => chrono::TimeDelta::zero(),
        };
        // Refusals change nothing but what failing closed requires (the contested mark, or an
        // overdue instance dropped and remembered as used): `announce` checks before it writes.
        // A store may run the function more than once: only the written attempt's result counts
        // (an earlier attempt's messages were never taken from the stored record).
        let config = self.config;
        let mut result = Err(Refusal::NetworkFull);
        let written = self
            .store
            .update_network(network, now, config, true, &mut |record| {
                result = record.announce_holding(now, config, announce, hold);
            })
            .await;
        self.stored(RequestKind::Announce, network, written)?;
        let held_until = result.as_ref().ok().and_then(|a| a.held_until);
        self.announced(network, announce, result)
            .map(|reply| (reply, held_until))
    }

    /// Whether a message waits for `instance_id` in `network` (a link accepted and not yet
    /// delivered): a plain read, what a held announcement checks before it announces again.
    pub(crate) async fn message_waits(
        &mut self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        instance_id: &InstanceId,
    ) -> Result<bool, Refusal> {
        let mut waits = false;
        let read = self
            .store
            .read_network(network, now, self.config, &mut |record| {
                waits = record
                    .links()
                    .iter()
                    .any(|l| l.instance_id == *instance_id && l.state == LinkState::Pending);
            })
            .await;
        self.stored(RequestKind::Announce, network, read)?;
        Ok(waits)
    }

    /// The reply to an announcement that the store applied, with its event.
    pub(crate) fn announced(
        &mut self,
        network: PublicNetwork,
        announce: &Announce,
        result: Result<Announced, Refusal>,
    ) -> Result<AnnounceReply, Refusal> {
        match result {
            Ok(announced) => {
                self.judged_shared(network, announced.judged);
                self.events.push_back(ServerEvent::Announced {
                    network,
                    instance_id: announce.instance_id,
                    delivered: announced.messages.len(),
                });
                let visibility = match self.config.shared.judge_address(&network) {
                    Some(_) => Visibility::Hidden(HiddenReason::SharedNetwork),
                    None => announced.visibility,
                };
                Ok(AnnounceReply::new(announced.messages, self.poll_after_ms())
                    .with_visibility(visibility))
            }
            Err(reason) => Err(self.refuse(Some(network), RequestKind::Announce, reason)),
        }
    }

    fn poll_after_ms(&self) -> u64 {
        u64::try_from(self.config.announce_interval.num_milliseconds()).unwrap_or(2000)
    }

    /// What `account` (when authenticated) finds discovering `network`, for every profile's
    /// discovery route; `list` is the profile's listing of a network not judged shared. Feeds
    /// the shared-network signals exactly once for all of them: a network judged by its address
    /// lists nothing (no read); otherwise a plain read, and one write the first time in a window
    /// that an account discovers from the network, which counts it among the recent discoverers
    /// and judges the count (`many_accounts`) in that same atomic update. A network marked shared
    /// lists nothing. Pushes the judgement's event; the caller pushes the `Discovered` one
    /// ([`discovered`](Self::discovered), or the profile's).
    pub(crate) async fn discover_in<L: Default + Send>(
        &mut self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        account: Option<&AccountId>,
        list: &(impl Fn(&NetworkRecord, DateTime<Utc>, &ServerConfig) -> (L, Option<HiddenReason>)
              + Sync),
    ) -> Result<Found<L>, Refusal> {
        let config = self.config;
        if let Some(found) = self.judged_by_address(network) {
            return Ok(found);
        }
        let tag = account
            .filter(|_| config.shared.enabled)
            .map(|account| discoverer_tag(&network, account));
        let mut found = Found::default();
        let read = self
            .store
            .read_network(network, now, config, &mut |record| {
                found = Found::of(record, now, config, tag, list);
            })
            .await;
        self.stored(RequestKind::Discover, network, read)?;
        if let (Some(tag), false) = (tag, found.known) {
            let mut judged = None;
            let written = self
                .store
                .update_network(network, now, config, true, &mut |record| {
                    judged = record.note_discoverer(now, config, tag);
                    found = Found::of(record, now, config, Some(tag), list);
                })
                .await;
            self.stored(RequestKind::Discover, network, written)?;
            self.judged_shared(network, judged);
        }
        Ok(found)
    }

    /// The reply to a discovery that read `found` from the store, with its event.
    pub(crate) fn discovered(&mut self, network: PublicNetwork, found: Found) -> DiscoverReply {
        let Found {
            agents,
            present,
            hidden,
            ..
        } = found;
        self.events.push_back(ServerEvent::Discovered {
            network,
            shown: agents.len(),
            present,
            hidden,
        });
        {
            let mut m = DiscoverReply::new(agents);
            m.hidden = hidden.map(|reason| Hidden { reason });
            m
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn link<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        display_name: Option<DisplayName>,
        network: PublicNetwork,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal> {
        // 0. The guess is charged before anything is checked.
        let guess = self
            .admit_guess(now, network, None, RequestKind::Link)
            .await?;
        let instance_id = request.instance_id;
        let secret = request.local_secret.clone();
        self.accept_checked_link(
            now,
            rng,
            account,
            network,
            guess,
            request,
            display_name.clone(),
            Claim::Instance,
            |record, now, config| record.check_link(now, config, &instance_id, &secret),
        )
        .await?;
        Ok({
            let mut m = LinkStatusReply::new(instance_id, LinkState::Pending);
            m.display_name = display_name.map(String::from);
            m
        })
    }

    /// Steps 1 to 4 of a link request whose guess was admitted (shared by the core's link and
    /// the Obico profile's, which differ only in `check`): check, reading only (a refused request
    /// writes no code) → claim the instance for this network (create-if-absent; a claim of
    /// another network's is `already_linking`) → create the auto code, a new record, only if no
    /// live code has that key → check again and accept in one atomic write of the network record
    /// (another instance may have accepted a link for this agent since step 1). The guess is settled on every path:
    /// charged for good when `check` refuses it as a failure, refunded otherwise. A request that
    /// claimed and then fails lets go of its hold ([`release_claim`](Self::release_claim)).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn accept_checked_link<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        network: PublicNetwork,
        guess: Guess,
        request: LinkRequest,
        display_name: Option<DisplayName>,
        claim: Claim,
        check: impl Fn(&NetworkRecord, DateTime<Utc>, &ServerConfig) -> Result<(), Refusal> + Sync,
    ) -> Result<(), Refusal> {
        let config = self.config;
        let instance_id = request.instance_id;
        // A network judged shared refuses auto links: by its address (no read), or by its
        // sticky mark, checked with the rest in both steps below (so in the accepting write).
        if config.shared.judge_address(&network).is_some() {
            return Err(self
                .refused_guess(now, guess, RequestKind::Link, Refusal::SharedNetwork)
                .await);
        }
        let check = |record: &NetworkRecord, now: DateTime<Utc>, config: &ServerConfig| {
            if record.shared_mark(now).is_some() {
                return Err(Refusal::SharedNetwork);
            }
            check(record, now, config)
        };
        // 1. Check, reading only.
        let mut checked = Err(Refusal::AgentNotFound);
        let read = self
            .store
            .update_network(network, now, config, false, &mut |record| {
                checked = check(record, now, config);
            })
            .await;
        if let Err(err) = read {
            // The caller learns nothing of its guess from a store error: refunded.
            self.settle_guess(now, guess, None).await;
            return Err(self.store_failed(Some(network), RequestKind::Link, err));
        }
        if let Err(reason) = checked {
            return Err(self
                .refused_guess(now, guess, RequestKind::Link, reason)
                .await);
        }
        // 2. The instance's claim: one link per instance in all networks (an agent that announces
        // over IPv4 and IPv6 is present in two). Written only by a request whose secret was right
        // (step 1). An accepted link keeps its hold for good (the claim lives as long as any
        // presence of the instance can); a request that fails below lets go of it.
        let held = match claim {
            Claim::Instance => {
                self.claim_instance(now, account, network, instance_id)
                    .await
            }
            Claim::None => Ok(None),
        };
        let held = match held {
            Ok(held) => held,
            Err(refusal) => {
                return Err(match refusal {
                    Ok(reason) => {
                        self.refused_guess(now, guess, RequestKind::Link, reason)
                            .await
                    }
                    Err(err) => {
                        self.settle_guess(now, guess, None).await;
                        self.store_failed(Some(network), RequestKind::Link, err)
                    }
                });
            }
        };
        // 3. The auto code's record, before anything refers to it.
        let expires_at = later(now, config.auto_code_ttl);
        let code_record = CodeRecord {
            account: account.clone(),
            instance_id: Some(instance_id),
            network: Some(network),
            expires_at,
            redeemed: false,
            redeemed_by: None,
            claim_attempt: 0,
            manual: false,
            kind: CodeKind::Link,
            quota_released: false,
        };
        let code = match self
            .create_code(now, rng, LinkCode::generate_auto, &code_record)
            .await
        {
            Ok(code) => code,
            Err(refusal) => {
                // No code is known to anyone (one written before a lost reply is bound, never
                // shown, and expires): the claim is let go.
                self.release_claim(now, network, instance_id, held).await;
                // The check passed: no failure to count.
                self.settle_guess(now, guess, None).await;
                return Err(refusal);
            }
        };
        // 4. Check again and accept in one write.
        let mut accepted = Err(Refusal::AgentNotFound);
        let written = self
            .store
            .update_network(network, now, config, false, &mut |record| {
                accepted = check(record, now, config).map(|()| {
                    record.accept_link(
                        now,
                        config,
                        request.clone(),
                        account.clone(),
                        display_name.clone(),
                        code.clone(),
                        expires_at,
                    );
                });
            })
            .await;
        let refusal = match (written, accepted) {
            (Ok(_), Ok(())) => {
                self.settle_guess(now, guess, None).await;
                self.events.push_back(ServerEvent::LinkAccepted {
                    network,
                    instance_id,
                    account: account.clone(),
                });
                return Ok(());
            }
            (Ok(_), Err(reason)) => Ok(reason),
            (Err(err), _) => Err(err),
        };
        // Not accepted: the code must not outlive the attempt. If the delete fails too, the code
        // stays unknown to everyone and expires with its TTL.
        let deleted = self.store.delete_code(&code.key()).await.is_ok();
        // And the claim is let go: after a refusal (nothing was written), or after a store error
        // once the code is gone (an accept that landed before a lost reply then names a code
        // that no longer exists). A store error whose code could not be deleted keeps the
        // claim: that accept may stand, with its code.
        if refusal.is_ok() || deleted {
            self.release_claim(now, network, instance_id, held).await;
        }
        match refusal {
            Ok(reason) => Err(self
                .refused_guess(now, guess, RequestKind::Link, reason)
                .await),
            Err(err) => {
                self.settle_guess(now, guess, None).await;
                Err(self.store_failed(Some(network), RequestKind::Link, err))
            }
        }
    }

    /// Claims `instance_id` for links from `network` ([`CodeKind::InstanceClaim`]): creates the
    /// claim if none lives (one atomic create-if-absent, with one holder), or joins the live one
    /// (one more holder, counted in the same write that reads whose it is). A claim of this
    /// network's is shared (a retry after a fault, or a concurrent request of the same network,
    /// which the network record's accepting write then orders); another network's refuses with
    /// [`Refusal::AlreadyLinking`]. `Err(Err(_))` is a store error, after which the request
    /// holds nothing it knows of: a hold written before a lost reply stays until the claim
    /// lapses. `Ok(Some(expiry))` is this request's hold, which
    /// [`release_claim`](Self::release_claim) lets go.
    async fn claim_instance(
        &mut self,
        now: DateTime<Utc>,
        account: &AccountId,
        network: PublicNetwork,
        instance_id: InstanceId,
    ) -> Result<Option<DateTime<Utc>>, Result<Refusal, StoreError>> {
        let config = self.config;
        let key = CodeKey::instance_claim(&instance_id);
        let claim = CodeRecord {
            account: account.clone(),
            instance_id: Some(instance_id),
            network: Some(network),
            // As long as any presence of the instance can live, in any network.
            expires_at: later(later(now, config.max_window), config.presence_ttl),
            redeemed: false,
            redeemed_by: None,
            // Its holders: this request.
            claim_attempt: 1,
            manual: false,
            kind: CodeKind::InstanceClaim,
            quota_released: false,
        };
        // Twice: a claim that ends between the create and the read is created afresh.
        for _ in 0..2 {
            if self
                .store
                .create_code(&key, &claim, now)
                .await
                .map_err(Err)?
            {
                return Ok(Some(claim.expires_at));
            }
            // A store may run the function more than once: only the written attempt's counts.
            let mut joined = None;
            let found = self
                .store
                .update_code(&key, now, &mut |record| {
                    joined = record.join_claim(&network);
                })
                .await
                .map_err(Err)?;
            match (found, joined) {
                (true, Some(expiry)) => return Ok(Some(expiry)),
                (true, None) => return Err(Ok(Refusal::AlreadyLinking)),
                (false, _) => {}
            }
        }
        Err(Ok(Refusal::AlreadyLinking))
    }

    /// Lets go of a failed link request's hold on its instance's claim (`held`, from
    /// [`claim_instance`](Self::claim_instance); nothing when `None`), in one write: one holder
    /// fewer, and the claim ends with its last holder, so that the instance's other network may
    /// link at once ([`CodeRecord::release_claim`]). A claim that other requests of the network
    /// still hold, or an accepted link, is kept. Best effort: if the write fails, the claim
    /// stays until it lapses (the other network waits), and the request's own refusal stands
    /// unchanged.
    async fn release_claim(
        &mut self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        instance_id: InstanceId,
        held: Option<DateTime<Utc>>,
    ) {
        let Some(held) = held else {
            return;
        };
        let key = CodeKey::instance_claim(&instance_id);
        let _ = self
            .store
            .update_code(&key, now, &mut |record| {
                record.release_claim(now, &network, held);
            })
            .await;
    }

    /// Draws codes until one can be created (no live code holds its key), and writes `record`
    /// for it.
    pub(crate) async fn create_code<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        mut draw: impl FnMut(&mut R) -> LinkCode,
        record: &CodeRecord,
    ) -> Result<LinkCode, Refusal> {
        for _ in 0..MINT_ATTEMPTS {
            let code = draw(rng);
            match self.store.create_code(&code.key(), record, now).await {
                Ok(true) => return Ok(code),
                Ok(false) => {}
                Err(err) => return Err(self.store_failed(None, RequestKind::MintCode, err)),
            }
        }
        Err(self.refuse(None, RequestKind::MintCode, Refusal::CodeSpaceExhausted))
    }

    pub(crate) async fn link_status(
        &mut self,
        now: DateTime<Utc>,
        account: &AccountId,
        network: PublicNetwork,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, Refusal> {
        let mut state = LinkState::Unknown;
        let written = self
            .store
            .update_network(network, now, self.config, false, &mut |record| {
                state = record.link_state(account, instance_id);
            })
            .await;
        self.stored(RequestKind::LinkStatus, network, written)?;
        Ok(LinkStatusReply::new(*instance_id, state))
    }

    pub(crate) async fn mint_code<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
    ) -> Result<CodeReply, Refusal> {
        let config = self.config;
        let expires_at = later(now, config.manual_code_ttl);
        // The quotas first (the account's live codes, the space's), in atomic steps; they pick
        // the format: the short one unless its space is suspended or full.
        let (space, charges) = self.reserve_mint(now, account, expires_at).await?;
        let record = CodeRecord {
            account: account.clone(),
            instance_id: None,
            network: None,
            expires_at,
            redeemed: false,
            redeemed_by: None,
            claim_attempt: 0,
            manual: true,
            kind: CodeKind::Link,
            quota_released: false,
        };
        let format = match space {
            CodeSpace::Manual => &config.code_format,
            _ => &config.budgets.fallback_format,
        };
        let code = match self
            .create_code(now, rng, |rng| format.generate(rng), &record)
            .await
        {
            Ok(code) => code,
            Err(refusal) => {
                self.release_mint(now, charges).await;
                return Err(refusal);
            }
        };
        self.events.push_back(ServerEvent::CodeMinted {
            account: account.clone(),
        });
        Ok(CodeReply::new(code, expires_at))
    }

    /// Claims the code of an agent's redemption (the first of the hook order, see
    /// [`super::hook`]). A presence key that does not prove the instance is refused before the
    /// code is looked at.
    pub(crate) async fn begin_redeem<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        request: &RedeemRequest,
        with_info: bool,
    ) -> Result<PendingLink, Refusal> {
        let proven = match &request.presence_key {
            None => false,
            Some(key) if key.proves(&request.instance_id) => true,
            Some(_) => {
                return Err(self.refuse(
                    Some(network),
                    RequestKind::Redeem,
                    Refusal::ForgedInstance,
                ))
            }
        };
        let claimant = Claimant::Agent {
            instance_id: request.instance_id,
            proven,
            attempt: request.attempt,
        };
        self.claim_code(now, rng, network, &request.code, claimant, with_info)
            .await
    }

    /// Charges the guess (every budget, before the code is looked at), then marks the code
    /// redeemed by the claimant in one write (single use across every instance; a proven agent
    /// may claim again a code it claimed itself), and mints the token. The link is not complete
    /// until [`finish_redeem`](Self::finish_redeem).
    pub(crate) async fn claim_code<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        code: &LinkCode,
        claimant: Claimant,
        with_info: bool,
    ) -> Result<PendingLink, Refusal> {
        let config = self.config;
        // 1. The guess, charged against every budget before the code is looked at.
        let space = config.budgets.space_of(&config.code_format, code);
        let guess = self
            .admit_guess(now, network, space, RequestKind::Redeem)
            .await?;
        // 2. The code, marked redeemed in one write: single use across every instance.
        let key = code.key();
        let mut claimed = Err(Refusal::UnknownCode);
        let written = self
            .store
            .update_code(&key, now, &mut |record| {
                let (instance_id, proven, attempt) = match claimant {
                    Claimant::Agent {
                        instance_id,
                        proven,
                        attempt,
                    } => (instance_id, proven, attempt),
                    // The Obico wire names no device: the code's own binding decides (a manual
                    // code gets a fresh id), and nothing proves a retry.
                    Claimant::Obico { fresh } => (record.instance_id.unwrap_or(fresh), false, 0),
                };
                claimed = record
                    .redeem_by(now, &instance_id, &network, proven, attempt)
                    .map(|redemption| {
                        (
                            redemption,
                            instance_id,
                            record.account.clone(),
                            record.manual,
                            record.expires_at,
                        )
                    });
            })
            .await;
        if let Err(err) = written {
            // The caller learns nothing of its guess from a store error: refunded.
            self.settle_guess(now, guess, None).await;
            return Err(self.store_failed(Some(network), RequestKind::Redeem, err));
        }
        let (redemption, instance_id, account, manual, code_expires_at) = match claimed {
            Ok(claimed) => claimed,
            Err(reason) => {
                return Err(self
                    .refused_guess(now, guess, RequestKind::Redeem, reason)
                    .await);
            }
        };
        // The code was right: its charges are refunded.
        self.settle_guess(now, guess, None).await;
        // What the device announced, for the hook (best effort: a plain read).
        let mut info = None;
        if with_info {
            let _ = self
                .store
                .read_network(network, now, config, &mut |record| {
                    info = record
                        .presences
                        .iter()
                        .find(|p| p.instance_id == instance_id)
                        .map(|p| p.info.clone());
                })
                .await;
        }
        let token = AuthToken::generate(rng);
        let via = match (claimant, manual) {
            (Claimant::Obico { .. }, _) => LinkVia::Obico,
            (_, true) => LinkVia::Manual,
            (_, false) => LinkVia::Auto,
        };
        Ok(PendingLink {
            link: CompletedLink {
                account,
                instance_id,
                network,
                info,
                via,
                token_digest: TokenDigest::of(&token),
                reissued: redemption == Redemption::Again,
                attempt: match claimant {
                    Claimant::Agent { attempt, .. } => attempt,
                    Claimant::Obico { .. } => 0,
                },
                at: now,
            },
            token,
            attempt: match claimant {
                Claimant::Agent { attempt, .. } => attempt,
                Claimant::Obico { .. } => 0,
            },
            key,
            first: redemption == Redemption::First,
            manual,
            space,
            code_expires_at,
        })
    }

    /// Completes a claimed redemption once the hook answered: on success the link is completed
    /// in the network record and the token returned; on failure (of the hook, or of that write)
    /// a first claim gives the code back, so that the agent's retry links. Nothing is
    /// half-linked: no token is returned unless every step succeeded.
    pub(crate) async fn finish_redeem(
        &mut self,
        now: DateTime<Utc>,
        pending: PendingLink,
        outcome: Result<(), HookError>,
    ) -> Result<Redeemed, Refusal> {
        let config = self.config;
        let PendingLink {
            link,
            token,
            attempt,
            key,
            first,
            manual,
            space,
            code_expires_at,
        } = pending;
        let network = link.network;
        if let Err(err) = outcome {
            self.events.push_back(ServerEvent::LinkHookFailed {
                network,
                instance_id: link.instance_id,
                account: link.account.clone(),
                message: err.message().to_owned(),
            });
            if first {
                self.give_back(now, &key, link.instance_id, attempt).await;
            }
            return Err(self.refuse(Some(network), RequestKind::Redeem, Refusal::LinkUnavailable));
        }
        // 3. The link, completed in the network record.
        let (instance_id, account) = (link.instance_id, &link.account);
        let written = self
            .store
            .update_network(network, now, config, true, &mut |record| {
                record.complete_link(now, config, instance_id, account);
            })
            .await;
        if let Err(refusal) = self.stored(RequestKind::Redeem, network, written) {
            // Give the code back so that the agent's retry can complete the link; no token was
            // handed out. Were this to fail too, the code stays claimed by the agent, whose
            // proven retry completes it (an unproven one finds it used).
            if first {
                self.give_back(now, &key, instance_id, attempt).await;
            }
            return Err(refusal);
        }
        // 4. The code's life ended with its link: its quota slots are returned, exactly once
        // whichever attempt (or instance) completed the link, as marked in one atomic write of
        // the code. A code given back above is still live and keeps them. If the mark cannot be
        // written the slots stand until the code expires (fail closed).
        if manual {
            let mut release = false;
            let marked = self
                .store
                .update_code(&key, now, &mut |code| {
                    release = code.release_quota();
                })
                .await;
            if matches!(marked, Ok(true)) && release {
                self.release_redeemed(now, account, space, code_expires_at)
                    .await;
            }
        }
        self.events.push_back(ServerEvent::Linked {
            network,
            instance_id,
            account: account.clone(),
            manual,
            via: link.via,
            reissued: link.reissued,
        });
        Ok(Redeemed {
            reply: RedeemReply::new(token, attempt),
            account: link.account.clone(),
            instance_id,
            link,
            code_expires_at,
        })
    }

    /// Marks a code unredeemed again if it is still this claim's (its link could not be
    /// completed).
    pub(crate) async fn give_back(
        &mut self,
        now: DateTime<Utc>,
        key: &CodeKey,
        instance_id: InstanceId,
        attempt: u32,
    ) {
        let _ = self
            .store
            .update_code(key, now, &mut |code| {
                code.give_back(&instance_id, attempt);
            })
            .await;
    }

    pub(crate) async fn purge(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.store.purge(now, self.config).await
    }
}

/// Whether a link claims its instance in every network ([`CodeKind::InstanceClaim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// A presence proven by its presence key: one link in all the networks it announced from.
    Instance,
    /// An unverified (Obico) presence: no key proves it, anyone may announce its id from any
    /// network, so a claim would let an impostor's network block the real one. Such agents
    /// announce over one family.
    #[cfg_attr(not(feature = "obico-wire"), allow(dead_code))]
    // Built by the Obico profile only.
    None,
}

/// A successful redemption: the reply for the agent, and the link the [`LinkHook`] saw.
///
/// ```
/// # use lanlink::server::{Server, ServerConfig};
/// # use lanlink::wire::RedeemRequest;
/// # use lanlink::{AccountId, InstanceId, PublicNetwork};
/// # let mut fut = std::pin::pin!(async {
/// let server = Server::new(ServerConfig::default()).unwrap();
/// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// let mut rng = lanlink::os_rng();
/// let alice = AccountId::new("alice").unwrap();
/// let minted = server.mint_code(now, &mut rng, &alice).await.unwrap();
/// let id = InstanceId::generate(&mut rng);
/// let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
/// let redeemed = server.redeem(now, &mut rng, network, &RedeemRequest::new(id, minted.code)).await.unwrap();
/// assert_eq!((redeemed.account, redeemed.instance_id), (alice, id));
/// assert_eq!(redeemed.code_expires_at, minted.expires_at);
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Redeemed {
    /// The reply for the agent (carries the token).
    pub reply: RedeemReply,
    /// The account the agent is now linked to.
    pub account: AccountId,
    /// The agent.
    pub instance_id: InstanceId,
    /// The completed link (the token's digest, how it was linked, the device's info).
    pub link: CompletedLink,
    /// When the redeemed code would have expired.
    pub code_expires_at: DateTime<Utc>,
}

/// Where a [`Server`](crate::server::Server) sends its events (they carry no secrets).
pub type EventSink = Arc<dyn Fn(ServerEvent) + Send + Sync>;
