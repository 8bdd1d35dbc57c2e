//! The server's operations for the Obico wire profile ([`crate::obico`]): the same records and
//! checks as the core's, for agents that have no commitment and no presence key.
//!
//! Each operation resolves the caller's public network with the configured resolver, applies a
//! pure function to that network's record (and to code records), counts failed guesses toward
//! the network's lockout, and queues [`ServerEvent`]s, exactly as the core's operations do.

use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};

use super::budget::{CodeSpace, Guess};
use super::record::{later, unverified_commitment, CodeKind, CodeRecord, ObicoPasscode, Presence};
use super::{NetworkRecord, Redeemed, Server, ServerConfig};
use crate::addr::{ForwardedHeaders, PublicNetwork};
use crate::code::LinkCode;
use crate::error::Refusal;
use crate::event::{RequestKind, ServerEvent};
use crate::id::{AccountId, InstanceId};
use crate::obico::{
    ObicoConfig, PasscodeReply, UnlinkedPoll, UnlinkedReply, VerifyCode, PASSCODE_KEY_PREFIX,
};
use crate::secret::{AuthToken, LocalSecret};
use crate::wire::{DiscoveredAgent, LinkRequest, RedeemReply};

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
                    && presence.info.fingerprint() == poll.info.fingerprint();
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
                });
            }
        }
        Ok(self.take_message(&id).map(|message| VerifyCode {
            device_id: id,
            code: message.code.clone(),
            secret: message.secret.clone(),
        }))
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
        if self.present(now) > config.max_visible {
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

/// The shared operations' helpers, run over the in-memory store. The Obico profile's operations
/// run on the sync [`Server`] only: they are not yet written over the async `Store`, so the profile
/// is not served by a store-backed `Service` (see PROTOCOL.md).
impl Server {
    fn caller(
        &mut self,
        request: RequestKind,
        peer: std::net::IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<PublicNetwork, Refusal> {
        self.ops().caller(request, peer, headers)
    }

    fn refuse(
        &mut self,
        network: Option<PublicNetwork>,
        request: RequestKind,
        reason: Refusal,
    ) -> Refusal {
        self.ops().refuse(network, request, reason)
    }

    /// Charges a guess against its budgets before it is checked (see `Ops::admit_guess`).
    fn admit_guess(
        &mut self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        space: Option<CodeSpace>,
        request: RequestKind,
    ) -> Result<Guess, Refusal> {
        let mut ops = self.ops();
        super::ready(ops.admit_guess(now, network, space, request))
    }

    /// Settles a guess that proved right (or was no guess): refunded.
    fn guess_right(&mut self, now: DateTime<Utc>, guess: Guess) {
        let mut ops = self.ops();
        let settled = async {
            ops.settle_guess(now, guess, None).await;
            Ok::<(), Refusal>(())
        };
        let _ = super::ready(settled);
    }

    /// Settles a guess refused for `reason` (charged for good when it counts as a failure).
    fn guess_refused(
        &mut self,
        now: DateTime<Utc>,
        guess: Guess,
        request: RequestKind,
        reason: Refusal,
    ) -> Refusal {
        let mut ops = self.ops();
        let settled =
            async { Ok::<_, Refusal>(ops.refused_guess(now, guess, request, reason).await) };
        super::ready(settled).unwrap_or_else(|refusal| refusal)
    }

    /// Draws codes until one is not live in the store (the caller writes its record).
    fn draw_code<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        mut draw: impl FnMut(&mut R) -> LinkCode,
    ) -> Result<LinkCode, Refusal> {
        for _ in 0..super::MINT_ATTEMPTS {
            let code = draw(rng);
            if !self
                .store
                .code(&code.key())
                .is_some_and(|record| record.is_live(now))
            {
                return Ok(code);
            }
        }
        Err(self.refuse(None, RequestKind::MintCode, Refusal::CodeSpaceExhausted))
    }
}

impl Server {
    /// An Obico agent polls `POST /api/v1/octo/unlinked/`.
    ///
    /// Only an unresolvable client address is an error. A refused presence (not private,
    /// contested, used, window over, network full, a verified agent's id) is logged as a
    /// [`ServerEvent::Refused`] and the reply is simply empty: the Obico agents stop discovery on
    /// any 4xx, so a refusal must not let one caller end another's discovery.
    ///
    /// With `one_time_passcode` in the poll: a live passcode of this agent in this network is
    /// kept (and its claimed code, if any, handed over once); anything else gets a fresh passcode
    /// from the CSPRNG, unique among live codes, while the network holds fewer live passcodes
    /// than its quota ([`Budgets::passcodes_per_network`](super::Budgets::passcodes_per_network);
    /// past it the reply has no passcode).
    pub fn obico_unlinked<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        obico: &ObicoConfig,
        peer: std::net::IpAddr,
        headers: ForwardedHeaders<'_>,
        poll: &UnlinkedPoll,
    ) -> Result<UnlinkedReply, Refusal> {
        let network = self.caller(RequestKind::Announce, peer, headers)?;
        let config = &self.config;
        let announced = self
            .store
            .update(network, now, config, true, |record| {
                record.obico_announce(now, config, obico, poll)
            })
            .unwrap_or(Err(Refusal::NetworkFull));
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
                match self.obico_passcode(now, rng, obico, network, poll.device_id, shown) {
                    Ok(passcode) => Some(passcode),
                    Err(Refusal::MintQuota) => None,
                    Err(refusal) => return Err(refusal),
                }
            }
        };
        Ok(UnlinkedReply { message, passcode })
    }

    /// Keeps the agent's live passcode (handing over a claimed code once) or mints a new one.
    fn obico_passcode<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        obico: &ObicoConfig,
        network: PublicNetwork,
        device_id: InstanceId,
        shown: &str,
    ) -> Result<PasscodeReply, Refusal> {
        if let (Some(key), Some(current)) = (passcode_key(shown), LinkCode::parse(shown)) {
            if let Some(record) = self.store.code_mut(&key) {
                let mine = record.is_live(now)
                    && record.instance_id == Some(device_id)
                    && record.network == Some(network);
                if let (true, CodeKind::ObicoPasscode(state)) = (mine, &mut record.kind) {
                    // A claimed passcode whose code was already handed over is spent: the agent
                    // gets a new one (its redemption may have failed).
                    if !(record.redeemed && state.verification.is_none()) {
                        return Ok(PasscodeReply {
                            one_time_passcode: current,
                            verification_code: state.verification.take(),
                        });
                    }
                }
            }
        }
        let expires_at = later(now, obico.passcode_ttl);
        let mut ops = self.ops();
        super::ready(ops.reserve_passcode(now, network, expires_at))?;
        let format = obico.passcode_format.clone();
        let mut passcode = None;
        for _ in 0..super::MINT_ATTEMPTS {
            let candidate = format.generate(rng);
            let free = passcode_key(candidate.expose()).is_some_and(|key| {
                !self
                    .store
                    .code(&key)
                    .is_some_and(|record| record.is_live(now))
            });
            if free {
                passcode = Some(candidate);
                break;
            }
        }
        let Some(passcode) = passcode else {
            return Err(self.refuse(None, RequestKind::MintCode, Refusal::CodeSpaceExhausted));
        };
        let Some(key) = passcode_key(passcode.expose()) else {
            return Err(self.refuse(None, RequestKind::MintCode, Refusal::CodeSpaceExhausted));
        };
        let Some(unclaimed) = AccountId::new(UNCLAIMED) else {
            return Err(self.refuse(None, RequestKind::MintCode, Refusal::CodeSpaceExhausted));
        };
        self.store.put_code(
            key,
            CodeRecord {
                account: unclaimed,
                instance_id: Some(device_id),
                network: Some(network),
                expires_at,
                redeemed: false,
                manual: false,
                kind: CodeKind::ObicoPasscode(Box::default()),
            },
        );
        Ok(PasscodeReply {
            one_time_passcode: passcode,
            verification_code: None,
        })
    }

    /// A user lists Obico agents (`GET /api/v1/printer_discovery/`): the core's discovery of the
    /// caller's network (one-visible rule included, counting every present agent), limited to
    /// Obico agents.
    pub fn obico_discover(
        &mut self,
        now: DateTime<Utc>,
        peer: std::net::IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<Vec<DiscoveredAgent>, Refusal> {
        let reply = self
            .ops()
            .discover_where(now, peer, headers, Presence::is_unverified)?;
        Ok(reply.agents.into_vec())
    }

    /// A user asks to link an Obico agent (`POST /api/v1/printer_discovery/`). `secret` is
    /// `None` when the presented `device_secret` is not 64 hex characters (what the agents make):
    /// certainly wrong, refused as `wrong_secret` and counted.
    ///
    /// On success the server mints a 128-bit code bound to the agent and the caller's network for
    /// `account`, and queues `{code, secret}` for the agent's next poll, once. The secret is not
    /// checked (the agent has no commitment): the agent compares it.
    #[allow(clippy::too_many_arguments)]
    pub fn obico_link<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: std::net::IpAddr,
        headers: ForwardedHeaders<'_>,
        device_id: InstanceId,
        secret: Option<LocalSecret>,
    ) -> Result<(), Refusal> {
        let network = self.caller(RequestKind::Link, peer, headers)?;
        let guess = self.admit_guess(now, network, None, RequestKind::Link)?;
        let Some(secret) = secret else {
            return Err(self.guess_refused(now, guess, RequestKind::Link, Refusal::WrongSecret));
        };
        let config = &self.config;
        let checked = self
            .store
            .update(network, now, config, false, |record| {
                record.obico_check_link(now, config, &device_id)
            })
            .unwrap_or(Err(Refusal::AgentNotFound));
        if let Err(reason) = checked {
            return Err(self.guess_refused(now, guess, RequestKind::Link, reason));
        }
        // The agent compares the secret, not the server: as far as the server can tell, no
        // guess failed.
        self.guess_right(now, guess);
        let expires_at = later(now, self.config.auto_code_ttl);
        let code = self.draw_code(now, rng, LinkCode::generate_auto)?;
        self.store.put_code(
            code.key(),
            CodeRecord {
                account: account.clone(),
                instance_id: Some(device_id),
                network: Some(network),
                expires_at,
                redeemed: false,
                manual: false,
                kind: CodeKind::Link,
            },
        );
        let config = &self.config;
        let request = LinkRequest {
            instance_id: device_id,
            local_secret: secret,
        };
        self.store.update(network, now, config, true, |record| {
            record.accept_link(now, config, request, account.clone(), code, expires_at)
        });
        self.events.push_back(ServerEvent::LinkAccepted {
            network,
            instance_id: device_id,
            account: account.clone(),
        });
        Ok(())
    }

    /// An Obico agent redeems a code (`POST|GET /api/v1/octo/verify/?code=…`). The wire names no
    /// device, so the code's own binding decides: an auto or passcode-claim code must be
    /// redeemed from the network it is bound to; a manual code from anywhere not locked out.
    /// Failures count toward the caller's lockout, and a locked-out network is refused even with
    /// the right code (which stays unused).
    pub fn obico_verify<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: std::net::IpAddr,
        headers: ForwardedHeaders<'_>,
        code: &LinkCode,
    ) -> Result<Redeemed, Refusal> {
        let network = self.caller(RequestKind::Redeem, peer, headers)?;
        let space = self.config.budgets.space_of(&self.config.code_format, code);
        let guess = self.admit_guess(now, network, space, RequestKind::Redeem)?;
        let fresh = InstanceId::generate(rng);
        let redeemed = match self.store.code_mut(&code.key()) {
            Some(record) => {
                let instance_id = record.instance_id.unwrap_or(fresh);
                record.redeem(now, &instance_id, &network).map(|()| {
                    (
                        record.account.clone(),
                        record.manual,
                        instance_id,
                        record.expires_at,
                    )
                })
            }
            None => Err(Refusal::UnknownCode),
        };
        let (account, manual, instance_id, expires_at) = match redeemed {
            Ok(redeemed) => redeemed,
            Err(reason) => {
                return Err(self.guess_refused(now, guess, RequestKind::Redeem, reason));
            }
        };
        self.guess_right(now, guess);
        if manual {
            let mut ops = self.ops();
            let released = async {
                ops.release_redeemed(now, &account, space, expires_at).await;
                Ok::<(), Refusal>(())
            };
            let _ = super::ready(released);
        }
        let config = &self.config;
        self.store.update(network, now, config, true, |record| {
            record.complete_link(now, config, instance_id, &account)
        });
        self.events.push_back(ServerEvent::Linked {
            network,
            instance_id,
            account: account.clone(),
            manual,
        });
        Ok(Redeemed {
            reply: RedeemReply {
                auth_token: AuthToken::generate(rng),
            },
            account,
            instance_id,
        })
    }

    /// A user claims a one-time passcode an agent shows (`POST /api/v1/one_time_passcodes/`).
    ///
    /// The passcode must be live and unclaimed; anything else is `invalid_code`, counted toward
    /// the claimer's network's lockout like a failed redemption (a locked-out network is refused
    /// even with a right passcode, which stays claimable). On success the server mints a 128-bit
    /// code for `account`, bound to the agent and to the agent's network, and holds it for the
    /// agent's next poll (its `verification_code`).
    #[allow(clippy::too_many_arguments)]
    pub fn obico_claim<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: std::net::IpAddr,
        headers: ForwardedHeaders<'_>,
        passcode: &str,
    ) -> Result<(), Refusal> {
        let network = self.caller(RequestKind::Redeem, peer, headers)?;
        let guess = self.admit_guess(now, network, None, RequestKind::Redeem)?;
        let key = passcode_key(passcode.trim());
        let target = key
            .as_ref()
            .and_then(|key| self.store.code(key))
            .filter(|record| {
                record.is_live(now)
                    && !record.redeemed
                    && matches!(record.kind, CodeKind::ObicoPasscode(_))
            })
            .and_then(|record| Some((record.instance_id?, record.network?)));
        let (Some(key), Some((device_id, agent_network))) = (key, target) else {
            return Err(self.guess_refused(now, guess, RequestKind::Redeem, Refusal::UnknownCode));
        };
        self.guess_right(now, guess);
        let code = self.draw_code(now, rng, LinkCode::generate_auto)?;
        // Held for the agent's next poll (2 s or 5 s away); it lives as an auto code does.
        let expires_at = later(now, self.config.auto_code_ttl);
        self.store.put_code(
            code.key(),
            CodeRecord {
                account: account.clone(),
                instance_id: Some(device_id),
                network: Some(agent_network),
                expires_at,
                redeemed: false,
                manual: false,
                kind: CodeKind::Link,
            },
        );
        if let Some(record) = self.store.code_mut(&key) {
            record.redeemed = true;
            record.account = account.clone();
            record.kind = CodeKind::ObicoPasscode(Box::new(ObicoPasscode {
                verification: Some(code),
            }));
        }
        self.events.push_back(ServerEvent::CodeMinted {
            account: account.clone(),
        });
        Ok(())
    }
}
