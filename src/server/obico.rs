// (834 lines, 238 of them docs and doc examples: one concern, because it is the Obico profile's server steps over the core's records.)
//! The server's operations for the Obico wire profile ([`crate::obico`]): the same records and
//! checks as the core's, for agents that have no commitment and no presence key.
//! They must not relax any check of the core's beyond what the profile cannot carry (no commitment,
//! no presence key), and do no I/O but through the store.
//!
//! Each operation resolves the caller's public network with the configured resolver, applies a
//! pure function to that network's record (and to code records), counts failed guesses toward
//! the network's lockout, and queues [`ServerEvent`]s, exactly as the core's operations do.

use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};

use super::hook::PendingLink;
use super::ops::{Claimant, Ops};
use super::record::{
    later, unverified_commitment, CodeKind, CodeRecord, ObicoInfo, ObicoPasscode, Presence,
};
use super::{Backend, NetworkRecord, Server, ServerConfig};
use crate::addr::PublicNetwork;
use crate::code::LinkCode;
use crate::error::Refusal;
use crate::event::{RequestKind, ServerEvent};
use crate::id::{AccountId, InstanceId};
use crate::obico::{
    ObicoConfig, PasscodeReply, UnlinkedPoll, UnlinkedReply, Verified, VerifyCode,
    PASSCODE_KEY_PREFIX,
};
use crate::secret::LocalSecret;
use crate::wire::{DiscoveredAgent, LinkRequest};

/// The account a passcode record holds until a user claims it (never linked to: a passcode
/// record cannot be redeemed).
const UNCLAIMED: &str = "obico:unclaimed-passcode";

fn passcode_key(passcode: &str) -> Option<crate::code::CodeKey> {
    LinkCode::parse(&format!("{PASSCODE_KEY_PREFIX}{passcode}")).map(|code| code.key())
}

impl NetworkRecord {
    /// Records an Obico poll: creates or refreshes the unverified presence of `poll.device_id`
    /// and takes at most one queued message for it. Call on a pruned record.
    ///
    /// The first poll pins the address, port and info; a poll that differs, or that comes sooner
    /// than `min_poll_gap` after the previous one (a second poller), marks the presence contested
    /// (hidden, unlinkable, messages withheld) until it lapses. A `device_id` that
    /// names a presence announced with a presence key is refused (`forged_instance`): an Obico
    /// poll can never touch a verified agent. Used ids do not reappear; an id polling longer than
    /// the window is cut off and remembered as used.
    pub fn obico_announce(
        &mut self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        obico: &ObicoConfig,
        poll: &UnlinkedPoll,
    ) -> Result<Option<VerifyCode>, Refusal> {
        let Some((ip, port)) = poll.endpoint else {
            return Err(Refusal::NotPrivateIp);
        };
        if !crate::addr::is_announceable_private_ip(ip) {
            return Err(Refusal::NotPrivateIp);
        }
        let id = poll.device_id;
        let now_ms = now.timestamp_millis();
        let expires_ms = now_ms.saturating_add(obico.presence_ttl.num_milliseconds());
        match self.presences.iter_mut().find(|p| p.instance_id == id) {
            Some(presence) => {
                if !presence.is_unverified() {
                    return Err(Refusal::ForgedInstance);
                }
                let unchanged = presence.private_ip == ip
                    && presence.port == port
                    && presence.info.fingerprint() == poll.info.fingerprint()
                    // A presence written before the extra fields were kept pins them now.
                    && presence.extra.as_deref().is_none_or(|extra| *extra == poll.extra);
                // Every poll sets `expires_ms` to its time plus the lifetime: the previous poll's
                // time is read back from it.
                let last_ms = presence
                    .expires_ms
                    .saturating_sub(obico.presence_ttl.num_milliseconds());
                let too_soon =
                    now_ms.saturating_sub(last_ms) < obico.min_poll_gap.num_milliseconds();
                if presence.contested || !unchanged || too_soon {
                    presence.contested = true;
                    return Err(Refusal::PresenceConflict);
                }
                if now_ms > presence.window_ends_ms {
                    self.presences.retain(|p| p.instance_id != id);
                    self.mark_used(now, config, id);
                    return Err(Refusal::WindowOver);
                }
                presence.expires_ms = expires_ms;
                if presence.extra.is_none() {
                    presence.extra = Some(Box::new(poll.extra.clone()));
                }
            }
            None => {
                if self.is_used(&id) {
                    return Err(Refusal::InstanceUsed);
                }
                if self.presences.len() >= config.max_agents_per_network {
                    return Err(Refusal::NetworkFull);
                }
                self.presences.reserve_exact(1);
                self.presences.push(Presence {
                    instance_id: id,
                    private_ip: ip,
                    port,
                    info: poll.info.clone(),
                    commitment: unverified_commitment(),
                    expires_ms,
                    contested: false,
                    link_requested: false,
                    window_ends_ms: now_ms
                        .saturating_add(config.max_window.num_milliseconds())
                        .saturating_add(obico.presence_ttl.num_milliseconds()),
                    extra: Some(Box::new(poll.extra.clone())),
                    candidates: Default::default(),
                });
            }
        }
        Ok(self.take_message(&id).map(|message| VerifyCode {
            device_id: id,
            code: message.code.clone(),
            secret: message.secret.clone(),
        }))
    }

    /// How many agents a linker of this network may be shown at `now`: `max_visible`, or
    /// [`max_visible_one_host`](ServerConfig::max_visible_one_host) when every present agent is
    /// an Obico agent polling with one `host_or_ip`, each on its own port (one Raspberry Pi
    /// running two printers). Any other mix — a lanlink agent among them, two hosts, two agents
    /// claiming one port — keeps `max_visible` (fail closed).
    pub fn obico_visible_limit(&self, now: DateTime<Utc>, config: &ServerConfig) -> usize {
        let now_ms = now.timestamp_millis();
        let mut live = self.presences.iter().filter(|p| p.expires_ms > now_ms);
        let Some(first) = live.next() else {
            return config.max_visible;
        };
        let mut ports: smallvec::SmallVec<[u16; 4]> = smallvec::smallvec![first.port];
        let mut one_host = first.is_unverified();
        for p in live {
            if !one_host || ports.len() > config.max_visible_one_host {
                break;
            }
            one_host =
                p.is_unverified() && p.private_ip == first.private_ip && !ports.contains(&p.port);
            ports.push(p.port);
        }
        if one_host {
            config.max_visible.max(config.max_visible_one_host)
        } else {
            config.max_visible
        }
    }

    /// What a linker of this network is shown of its Obico agents at `now` (see
    /// [`obico_visible_limit`](Self::obico_visible_limit)), each with the extra fields its poll
    /// gave. Reads only.
    pub fn obico_discover(
        &self,
        now: DateTime<Utc>,
        config: &ServerConfig,
    ) -> Vec<(DiscoveredAgent, ObicoInfo)> {
        let shown = self.shown_within(
            now,
            self.obico_visible_limit(now, config),
            Presence::is_unverified,
        );
        shown
            .into_vec()
            .into_iter()
            .map(|agent| {
                let extra = self
                    .presences
                    .iter()
                    .find(|p| p.instance_id == agent.instance_id)
                    .and_then(|p| p.extra.as_deref())
                    .cloned()
                    .unwrap_or_default();
                (agent, extra)
            })
            .collect()
    }

    /// Checks an Obico link request for `device_id` without changing anything (the core's
    /// checks but the secret's, which the server cannot make). Call on a pruned record.
    pub fn obico_check_link(
        &self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        device_id: &InstanceId,
    ) -> Result<(), Refusal> {
        if self.is_used(device_id) || self.links().iter().any(|l| l.instance_id == *device_id) {
            return Err(Refusal::AlreadyLinking);
        }
        let Some(presence) = self
            .presences
            .iter()
            .find(|p| p.instance_id == *device_id && p.is_unverified())
        else {
            return Err(Refusal::AgentNotFound);
        };
        if self.present(now) > self.obico_visible_limit(now, config) {
            return Err(Refusal::TooManyAgents);
        }
        if presence.contested {
            return Err(Refusal::AgentContested);
        }
        if presence.link_requested {
            return Err(Refusal::AlreadyLinking);
        }
        Ok(())
    }
}

/// The profile's operations, written once over any store (see [`super::ops`]), as the core's
/// are. Each record changes in one atomic store call; writes that span two records are
/// ordered as the core's are (a code is created before anything refers to it, and deleted again
/// when the write that would refer to it is refused).
impl Ops<'_> {
    /// See [`Server::obico_unlinked`].
    pub(crate) async fn obico_unlinked<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        obico: &ObicoConfig,
        network: PublicNetwork,
        poll: &UnlinkedPoll,
    ) -> Result<UnlinkedReply, Refusal> {
        let config = self.config;
        // A store may run the function more than once: only the written attempt's result counts.
        let mut announced = Err(Refusal::NetworkFull);
        let written = self
            .store
            .update_network(network, now, config, true, &mut |record| {
                announced = record.obico_announce(now, config, obico, poll);
            })
            .await;
        self.stored(RequestKind::Announce, network, written)?;
        let message = match announced {
            Ok(message) => {
                self.events.push_back(ServerEvent::Announced {
                    network,
                    instance_id: poll.device_id,
                    delivered: usize::from(message.is_some()),
                });
                message
            }
            Err(reason) => {
                self.refuse(Some(network), RequestKind::Announce, reason);
                None
            }
        };
        let passcode = match &poll.one_time_passcode {
            None => None,
            // A network over its passcode quota gets no new passcode (the refusal is an event),
            // but still a 200: a 4xx would end the agent's discovery.
            Some(shown) => {
                match self
                    .obico_passcode(now, rng, obico, network, poll.device_id, shown)
                    .await
                {
                    Ok(passcode) => Some(passcode),
                    // Nor does a network whose guessing budget refused the passcode's lookup.
                    Err(Refusal::MintQuota | Refusal::LockedOut) => None,
                    Err(refusal) => return Err(refusal),
                }
            }
        };
        Ok(UnlinkedReply { message, passcode })
    }

    /// Keeps the agent's live passcode (handing over a claimed code once, in one atomic write of
    /// the passcode's record) or mints a new one.
    ///
    /// The lookup of a shown passcode is a guess (a caller that finds this agent's claimed
    /// passcode takes its code): it is charged against the caller's network's budgets before the
    /// record is read, refunded when the record is this agent's in this network, and stays charged
    /// otherwise. A budget that refuses it refuses with `locked_out`, before any lookup or mint
    /// (the passcode shown is not replaced, and stays claimable).
    async fn obico_passcode<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        obico: &ObicoConfig,
        network: PublicNetwork,
        device_id: InstanceId,
        shown: &str,
    ) -> Result<PasscodeReply, Refusal> {
        if let (Some(key), Some(current)) = (passcode_key(shown), LinkCode::parse(shown)) {
            // 1. The guess, charged before the record is looked at.
            let guess = self
                .admit_guess(now, network, None, RequestKind::Announce)
                .await?;
            // 2. The record: this agent's in this network, or a miss.
            let mut found = None;
            let read = self
                .store
                .update_code(&key, now, &mut |record| {
                    found = None;
                    let mine =
                        record.instance_id == Some(device_id) && record.network == Some(network);
                    let redeemed = record.redeemed;
                    if let (true, CodeKind::ObicoPasscode(state)) = (mine, &mut record.kind) {
                        // A claimed passcode whose code was already handed over is spent: the
                        // agent gets a new one (its redemption may have failed).
                        found = Some(if redeemed && state.verification.is_none() {
                            None
                        } else {
                            Some(state.verification.take())
                        });
                    }
                })
                .await;
            if let Err(err) = read {
                // The caller learns nothing of its guess from a store error: refunded.
                self.settle_guess(now, guess, None).await;
                return Err(self.refuse(Some(network), RequestKind::MintCode, err.into()));
            }
            let Some(kept) = found else {
                // A miss: charged for good (an honest agent's passcode that expired costs one).
                self.settle_guess(now, guess, Some(&Refusal::UnknownCode))
                    .await;
                return self
                    .mint_passcode(now, rng, obico, network, device_id)
                    .await;
            };
            self.settle_guess(now, guess, None).await;
            if let Some(verification_code) = kept {
                return Ok(PasscodeReply {
                    one_time_passcode: current,
                    verification_code,
                });
            }
        }
        self.mint_passcode(now, rng, obico, network, device_id)
            .await
    }

    /// Mints a fresh passcode for `device_id` in `network`, within the passcode quotas (whose
    /// charges are given back if no passcode could be created).
    async fn mint_passcode<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        obico: &ObicoConfig,
        network: PublicNetwork,
        device_id: InstanceId,
    ) -> Result<PasscodeReply, Refusal> {
        let expires_at = later(now, obico.passcode_ttl);
        let charges = self
            .reserve_passcode(now, network, expires_at, &obico.passcode_format)
            .await?;
        let Some(unclaimed) = AccountId::new(UNCLAIMED) else {
            self.release_mint(now, charges).await;
            return Err(self.refuse(None, RequestKind::MintCode, Refusal::CodeSpaceExhausted));
        };
        let record = CodeRecord {
            account: unclaimed,
            instance_id: Some(device_id),
            network: Some(network),
            expires_at,
            redeemed: false,
            redeemed_by: None,
            claim_attempt: 0,
            manual: false,
            kind: CodeKind::ObicoPasscode(Box::default()),
            quota_released: false,
        };
        for _ in 0..super::MINT_ATTEMPTS {
            let candidate = obico.passcode_format.generate(rng);
            let Some(key) = passcode_key(candidate.expose()) else {
                continue;
            };
            match self.store.create_code(&key, &record, now).await {
                Ok(true) => {
                    return Ok(PasscodeReply {
                        one_time_passcode: candidate,
                        verification_code: None,
                    })
                }
                Ok(false) => {}
                Err(err) => {
                    self.release_mint(now, charges).await;
                    return Err(self.refuse(None, RequestKind::MintCode, err.into()));
                }
            }
        }
        self.release_mint(now, charges).await;
        Err(self.refuse(None, RequestKind::MintCode, Refusal::CodeSpaceExhausted))
    }

    /// See [`Server::obico_list`]. The core's discovery ([`Ops::discover_in`]): the same
    /// shared-network judgement (by address, by mark, and counting `account` among the recent
    /// discoverers in the same atomic update), with the profile's listing.
    pub(crate) async fn obico_list(
        &mut self,
        now: DateTime<Utc>,
        account: &AccountId,
        network: PublicNetwork,
    ) -> Result<Vec<(DiscoveredAgent, ObicoInfo)>, Refusal> {
        // A network judged shared lists no device (Obico's wire has no field to say why).
        let found = self
            .discover_in(now, network, Some(account), &obico_listing)
            .await?;
        self.events.push_back(ServerEvent::Discovered {
            network,
            shown: found.agents.len(),
            present: found.present,
            hidden: found.hidden,
        });
        Ok(found.agents)
    }

    /// See [`Server::obico_link`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn obico_link<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        network: PublicNetwork,
        device_id: InstanceId,
        secret: Option<LocalSecret>,
    ) -> Result<(), Refusal> {
        // 0. The guess is charged before anything is checked.
        let guess = self
            .admit_guess(now, network, None, RequestKind::Link)
            .await?;
        let Some(secret) = secret else {
            return Err(self
                .refused_guess(now, guess, RequestKind::Link, Refusal::WrongSecret)
                .await);
        };
        // The agent compares the secret, not the server: as far as the server can tell, no guess
        // fails past the checks below.
        let request = LinkRequest::new(device_id, secret);
        self.accept_checked_link(
            now,
            rng,
            account,
            network,
            guess,
            request,
            // Obico agents are told nothing of the account.
            None,
            // Nor claimed across networks: no key proves an Obico device id (see `Claim`).
            super::ops::Claim::None,
            |record, now, config| record.obico_check_link(now, config, &device_id),
        )
        .await
    }

    /// See [`Server::obico_begin_verify`].
    pub(crate) async fn obico_begin_verify<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        code: &LinkCode,
    ) -> Result<PendingLink, Refusal> {
        let fresh = InstanceId::generate(rng);
        self.claim_code(now, rng, network, code, Claimant::Obico { fresh }, true)
            .await
    }

    /// See [`Server::obico_claim`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn obico_claim<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        network: PublicNetwork,
        passcode: &str,
    ) -> Result<(), Refusal> {
        let guess = self
            .admit_guess(now, network, None, RequestKind::Redeem)
            .await?;
        let Some(key) = passcode_key(passcode.trim()) else {
            return Err(self
                .refused_guess(now, guess, RequestKind::Redeem, Refusal::UnknownCode)
                .await);
        };
        // 1. The passcode, read: live, unclaimed, a passcode.
        let mut target = None;
        let read = self
            .store
            .update_code(&key, now, &mut |record| {
                target = claimable(record);
            })
            .await;
        if let Err(err) = read {
            self.settle_guess(now, guess, None).await;
            return Err(self.refuse(Some(network), RequestKind::Redeem, err.into()));
        }
        let Some((device_id, agent_network)) = target else {
            return Err(self
                .refused_guess(now, guess, RequestKind::Redeem, Refusal::UnknownCode)
                .await);
        };
        self.settle_guess(now, guess, None).await;
        // 2. The code for the agent, bound to it and its network; it lives as an auto code does
        // (the agent's next poll is 2 s or 5 s away).
        let record = CodeRecord {
            account: account.clone(),
            instance_id: Some(device_id),
            network: Some(agent_network),
            expires_at: later(now, self.config.auto_code_ttl),
            redeemed: false,
            redeemed_by: None,
            claim_attempt: 0,
            manual: false,
            kind: CodeKind::Link,
            quota_released: false,
        };
        let code = self
            .create_code(now, rng, LinkCode::generate_auto, &record)
            .await?;
        // 3. The claim, in one write: only if the passcode is still unclaimed (another instance
        // may have claimed it since step 1).
        let mut claimed = false;
        let written = self
            .store
            .update_code(&key, now, &mut |record| {
                claimed = claimable(record) == Some((device_id, agent_network));
                if claimed {
                    record.redeemed = true;
                    record.account = account.clone();
                    record.kind = CodeKind::ObicoPasscode(Box::new(ObicoPasscode {
                        verification: Some(code.clone()),
                    }));
                }
            })
            .await;
        match (written, claimed) {
            (Ok(_), true) => {
                self.events.push_back(ServerEvent::CodeMinted {
                    account: account.clone(),
                });
                Ok(())
            }
            (Ok(_), false) => {
                let _ = self.store.delete_code(&code.key()).await;
                Err(self.refuse(Some(network), RequestKind::Redeem, Refusal::UnknownCode))
            }
            (Err(err), _) => {
                let _ = self.store.delete_code(&code.key()).await;
                Err(self.refuse(Some(network), RequestKind::Redeem, err.into()))
            }
        }
    }
}

/// The profile's listing of a network not judged shared: its Obico agents with their extra
/// fields, and `too_many_agents` when more are present than the network's limit.
fn obico_listing(
    record: &NetworkRecord,
    now: DateTime<Utc>,
    config: &ServerConfig,
) -> (
    Vec<(DiscoveredAgent, ObicoInfo)>,
    Option<crate::wire::HiddenReason>,
) {
    let hidden = (record.present(now) > record.obico_visible_limit(now, config))
        .then_some(crate::wire::HiddenReason::TooManyAgents);
    (record.obico_discover(now, config), hidden)
}

/// The agent and network of a passcode record that a user may claim.
fn claimable(record: &CodeRecord) -> Option<(InstanceId, PublicNetwork)> {
    if record.redeemed || !matches!(record.kind, CodeKind::ObicoPasscode(_)) {
        return None;
    }
    Some((record.instance_id?, record.network?))
}

/// The profile's operations (feature `obico`), over any store: each takes the caller's
/// network, resolved once by [`Server::caller`].
impl<S: Backend> Server<S> {
    /// An Obico agent polls `POST /api/v1/octo/unlinked/` from `network`.
    ///
    /// Only a store failure is an error (the route answers it 5xx: the server's fault, and the
    /// agents keep polling through a 5xx). A refused presence (not private, contested, used,
    /// window over, network full, a verified agent's id) is logged as a
    /// [`ServerEvent::Refused`] and the reply is simply empty: the Obico agents stop discovery
    /// on any 4xx, so a refusal must not let one caller end another's discovery.
    ///
    /// With `one_time_passcode` in the poll: a live passcode of this agent in this network is
    /// kept (and its claimed code, if any, handed over once); anything else gets a fresh passcode
    /// from the CSPRNG, unique among live codes, while the network holds fewer live passcodes
    /// than its quota ([`Budgets::passcodes_per_network`](super::Budgets::passcodes_per_network))
    /// and all networks fewer than theirs ([`Budgets::live_passcodes`](super::Budgets::live_passcodes));
    /// past either the reply has no passcode. Looking up a shown passcode is a guess, charged
    /// against the caller's network's budgets before the lookup and refunded when the passcode
    /// is this agent's here: a network whose budget is full gets no passcode either (its agents'
    /// passcodes are not looked up, not replaced, and stay claimable).
    ///
    /// ```
    /// # use lanlink::obico::{ObicoConfig, UnlinkedPoll};
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::{AccountId, InstanceId, LocalSecret, PublicNetwork, WireCode};
    /// # let mut fut = std::pin::pin!(async {
    /// # let server = Server::new(ServerConfig::default()).unwrap();
    /// # let obico = ObicoConfig::default();
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let mut rng = lanlink::os_rng();
    /// # let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// # let alice = AccountId::new("alice").unwrap();
    /// # let device = InstanceId::from_bytes([7; 16]);
    /// # let poll = UnlinkedPoll { device_id: device, endpoint: Some(("192.168.1.50".parse().unwrap(), 46793)),
    /// #     info: Default::default(), extra: Default::default(), one_time_passcode: None };
    /// let reply = server.obico_unlinked(now, &mut rng, &obico, home, &poll).await.unwrap();
    /// assert!(reply.message.is_none() && reply.passcode.is_none(), "nothing for it yet");
    /// // A poll asking for a passcode (moonraker-obico) gets one.
    /// let asking = UnlinkedPoll { one_time_passcode: Some(String::new()), ..poll };
    /// let reply = server.obico_unlinked(now, &mut rng, &obico, home, &asking).await.unwrap();
    /// assert!(reply.passcode.is_some());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn obico_unlinked<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        obico: &ObicoConfig,
        network: PublicNetwork,
        poll: &UnlinkedPoll,
    ) -> Result<UnlinkedReply, Refusal> {
        run!(self, |ops| ops
            .obico_unlinked(now, rng, obico, network, poll))
    }

    /// A user of `account` lists Obico agents (`GET /api/v1/printer_discovery/`), with the
    /// extra fields each agent's poll gave: the core's discovery of the caller's network
    /// (one-visible rule included, counting every present agent), limited to Obico agents.
    /// Like the core's [`discover`](Server::discover), it counts `account` among the network's
    /// recent discoverers toward the [shared-network](super::shared) judgement, and lists
    /// nothing in a network judged shared.
    ///
    /// ```
    /// # use lanlink::obico::{ObicoConfig, UnlinkedPoll};
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::{AccountId, InstanceId, LocalSecret, PublicNetwork, WireCode};
    /// # let mut fut = std::pin::pin!(async {
    /// # let server = Server::new(ServerConfig::default()).unwrap();
    /// # let obico = ObicoConfig::default();
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let mut rng = lanlink::os_rng();
    /// # let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// # let alice = AccountId::new("alice").unwrap();
    /// # let device = InstanceId::from_bytes([7; 16]);
    /// # let poll = UnlinkedPoll { device_id: device, endpoint: Some(("192.168.1.50".parse().unwrap(), 46793)),
    /// #     info: Default::default(), extra: Default::default(), one_time_passcode: None };
    /// server.obico_unlinked(now, &mut rng, &obico, home, &poll).await.unwrap();
    /// let shown = server.obico_list(now, home, &alice).await.unwrap();
    /// assert_eq!(shown.len(), 1);
    /// assert_eq!(shown[0].0.instance_id, device);
    /// // Another network sees nothing.
    /// let away = PublicNetwork::from_ip("198.51.100.1".parse().unwrap(), 64);
    /// assert!(server.obico_list(now, away, &alice).await.unwrap().is_empty());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn obico_list(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        account: &AccountId,
    ) -> Result<Vec<(DiscoveredAgent, ObicoInfo)>, Refusal> {
        run!(self, |ops| ops.obico_list(now, account, network))
    }

    /// A user asks to link an Obico agent (`POST /api/v1/printer_discovery/`). `secret` is
    /// `None` when the presented `device_secret` is not 64 hex characters (what the agents make):
    /// certainly wrong, refused as `wrong_secret` and counted.
    ///
    /// On success the server mints a 128-bit code bound to the agent and the caller's network for
    /// `account`, and queues `{code, secret}` for the agent's next poll, once. The secret is not
    /// checked (the agent has no commitment): the agent compares it.
    ///
    /// ```
    /// # use lanlink::obico::{ObicoConfig, UnlinkedPoll};
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::{AccountId, InstanceId, LocalSecret, PublicNetwork, WireCode};
    /// # let mut fut = std::pin::pin!(async {
    /// # let server = Server::new(ServerConfig::default()).unwrap();
    /// # let obico = ObicoConfig::default();
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let mut rng = lanlink::os_rng();
    /// # let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// # let alice = AccountId::new("alice").unwrap();
    /// # let device = InstanceId::from_bytes([7; 16]);
    /// # let poll = UnlinkedPoll { device_id: device, endpoint: Some(("192.168.1.50".parse().unwrap(), 46793)),
    /// #     info: Default::default(), extra: Default::default(), one_time_passcode: None };
    /// server.obico_unlinked(now, &mut rng, &obico, home, &poll).await.unwrap();
    /// let secret = LocalSecret::from_bytes([3; 32]);
    /// server.obico_link(now, &mut rng, home, &alice, device, Some(secret.clone())).await.unwrap();
    /// // The agent's next poll carries the secret (for it to compare) and a code, once.
    /// // (Polls closer than `min_poll_gap` look like two pollers: the agent polls every 5 s.)
    /// let next = now + chrono::TimeDelta::seconds(5);
    /// let message = server.obico_unlinked(next, &mut rng, &obico, home, &poll).await.unwrap().message.unwrap();
    /// assert!(message.secret.ct_eq(&secret));
    /// let after = next + chrono::TimeDelta::seconds(5);
    /// assert!(server.obico_unlinked(after, &mut rng, &obico, home, &poll).await.unwrap().message.is_none());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub async fn obico_link<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        account: &AccountId,
        device_id: InstanceId,
        secret: Option<LocalSecret>,
    ) -> Result<(), Refusal> {
        run!(self, |ops| ops
            .obico_link(now, rng, account, network, device_id, secret))
    }

    /// An Obico agent redeems a code (`POST|GET /api/v1/octo/verify/?code=…`). The wire names no
    /// device, so the code's own binding decides: an auto or passcode-claim code must be
    /// redeemed from the network it is bound to; a manual code from anywhere not locked out.
    /// Failures count toward the caller's lockout, and a locked-out network is refused even with
    /// the right code (which stays unused). The [link hook](Server::with_link_hook) is awaited
    /// between the claim and the completion, as for [`redeem`](Server::redeem).
    ///
    /// ```
    /// # use lanlink::obico::{ObicoConfig, UnlinkedPoll};
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::{AccountId, InstanceId, LocalSecret, PublicNetwork, WireCode};
    /// # let mut fut = std::pin::pin!(async {
    /// # let server = Server::new(ServerConfig::default()).unwrap();
    /// # let obico = ObicoConfig::default();
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let mut rng = lanlink::os_rng();
    /// # let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// # let alice = AccountId::new("alice").unwrap();
    /// # let device = InstanceId::from_bytes([7; 16]);
    /// # let poll = UnlinkedPoll { device_id: device, endpoint: Some(("192.168.1.50".parse().unwrap(), 46793)),
    /// #     info: Default::default(), extra: Default::default(), one_time_passcode: None };
    /// # server.obico_unlinked(now, &mut rng, &obico, home, &poll).await.unwrap();
    /// # let secret = LocalSecret::from_bytes([3; 32]);
    /// # server.obico_link(now, &mut rng, home, &alice, device, Some(secret.clone())).await.unwrap();
    /// # let now = now + chrono::TimeDelta::seconds(5);
    /// # let code = server.obico_unlinked(now, &mut rng, &obico, home, &poll).await.unwrap().message.unwrap().code;
    /// let verified = server.obico_verify(now, &mut rng, home, &code).await.unwrap();
    /// assert_eq!((verified.redeemed.account, verified.redeemed.instance_id), (alice, device));
    /// // Single use: a second redemption reads as any wrong code.
    /// let again = server.obico_verify(now, &mut rng, home, &code).await.unwrap_err();
    /// assert_eq!(again.code(), WireCode::InvalidCode);
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn obico_verify<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        code: &LinkCode,
    ) -> Result<Verified, Refusal> {
        let pending = run!(self, |ops| ops.obico_begin_verify(now, rng, network, code))?;
        self.hook_and_finish(now, pending).await.map(Verified::from)
    }

    /// The first step of [`obico_verify`](Self::obico_verify): the code claimed, the link and
    /// its token's digest ready for the profile's printer tokens and the hook; finished with
    /// `Server::finish_redeem`.
    pub(crate) async fn obico_begin_verify<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        code: &LinkCode,
    ) -> Result<PendingLink, Refusal> {
        run!(self, |ops| ops.obico_begin_verify(now, rng, network, code))
    }

    /// A user claims a one-time passcode an agent shows (`POST /api/v1/one_time_passcodes/`).
    ///
    /// The passcode must be live and unclaimed; anything else is `invalid_code`, counted toward
    /// the claimer's network's lockout like a failed redemption (a locked-out network is refused
    /// even with a right passcode, which stays claimable). On success the server mints a 128-bit
    /// code for `account`, bound to the agent and to the agent's network, and holds it for the
    /// agent's next poll (its `verification_code`).
    ///
    /// ```
    /// # use lanlink::obico::{ObicoConfig, UnlinkedPoll};
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::{AccountId, InstanceId, LocalSecret, PublicNetwork, WireCode};
    /// # let mut fut = std::pin::pin!(async {
    /// # let server = Server::new(ServerConfig::default()).unwrap();
    /// # let obico = ObicoConfig::default();
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let mut rng = lanlink::os_rng();
    /// # let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// # let alice = AccountId::new("alice").unwrap();
    /// # let device = InstanceId::from_bytes([7; 16]);
    /// # let poll = UnlinkedPoll { device_id: device, endpoint: Some(("192.168.1.50".parse().unwrap(), 46793)),
    /// #     info: Default::default(), extra: Default::default(), one_time_passcode: None };
    /// let asking = UnlinkedPoll { one_time_passcode: Some(String::new()), ..poll };
    /// let shown = server.obico_unlinked(now, &mut rng, &obico, home, &asking).await.unwrap().passcode.unwrap();
    /// let wrong = server.obico_claim(now, &mut rng, home, &alice, "ZZZZZZZZ").await.unwrap_err();
    /// assert_eq!(wrong.code(), WireCode::InvalidCode);
    /// server.obico_claim(now, &mut rng, home, &alice, shown.one_time_passcode.expose()).await.unwrap();
    /// // The agent's next poll, showing the same passcode, gets the code to redeem.
    /// let asking = UnlinkedPoll { one_time_passcode: Some(shown.one_time_passcode.expose().into()), ..asking };
    /// let next = server.obico_unlinked(now, &mut rng, &obico, home, &asking).await.unwrap().passcode.unwrap();
    /// assert!(next.verification_code.is_some());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn obico_claim<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        account: &AccountId,
        passcode: &str,
    ) -> Result<(), Refusal> {
        run!(self, |ops| ops
            .obico_claim(now, rng, account, network, passcode))
    }
}
