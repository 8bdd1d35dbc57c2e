//! A public network's record.
//! Pure, like every record function: it must not do I/O or read a clock (`now` is an argument).

mod shared;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::code::LinkCode;
use crate::confirm::{ConfirmNonce, DisplayName};
use crate::error::Refusal;
use crate::id::{AccountId, InstanceId};
use crate::secret::LocalSecret;
use crate::server::config::ServerConfig;
use crate::server::shared::SharedSignal;
use crate::wire::{
    AgentMessage, Announce, DiscoveredAgent, DiscoveredAgents, LinkRequest, LinkState, Visibility,
};

use super::{kept_candidates, later, later_ms, unix_ms, unverified_commitment, Presence};

/// A secret and code queued for an agent.
///
/// It serializes with its secret and code, for a store that encrypts records at rest (the Redis
/// store does); never write a serialized record anywhere a secret may not go.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingMessage {
    /// The secret the linker presented (dropped on delivery or expiry).
    #[serde(with = "crate::wire::secret_hex")]
    pub secret: LocalSecret,
    /// The auto-link code.
    #[serde(with = "crate::wire::code_text")]
    pub code: LinkCode,
    /// When the message is dropped undelivered.
    pub expires_at: DateTime<Utc>,
    /// The linking account's display name, forwarded to the agent (revision 1.4; absent when
    /// the account has none that passes [`DisplayName::new`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
    /// The linker's nonce, forwarded to the agent (revision 1.4; absent when the linker sent
    /// none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<ConfirmNonce>,
}

/// A link's progress, as its account may query it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkRecord {
    /// The agent.
    #[serde(rename = "i")]
    pub instance_id: InstanceId,
    /// The account the link is for.
    #[serde(rename = "u")]
    pub account: AccountId,
    /// The state.
    #[serde(rename = "s")]
    pub state: LinkState,
    /// The queued message, until delivered.
    #[serde(rename = "m")]
    pub message: Option<PendingMessage>,
    /// When the record is dropped.
    #[serde(rename = "e")]
    pub expires_at: DateTime<Utc>,
}

/// Everything the server knows about one public network.
///
/// Laid out for a server holding a million of them: the usual single agent sits inline, and the
/// rarer parts (links, failures, lockout, used ids) live behind one pointer that is empty for most
/// networks.
///
/// It serializes (for a shared store) with any queued message's secret and code: see
/// [`PendingMessage`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Agents announcing from this network.
    #[serde(rename = "p", default)]
    pub presences: SmallVec<[Presence; 1]>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    extras: Option<Box<Extras>>,
}

/// The less common parts of a [`NetworkRecord`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Extras {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    links: Vec<LinkRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    used: Vec<(InstanceId, DateTime<Utc>)>,
    /// Recent discoverers (revision 1.2): short per-network hashes of the accounts, never ids.
    #[serde(rename = "d", default, skip_serializing_if = "Vec::is_empty")]
    pub(super) discoverers: Vec<Discoverer>,
    /// The sticky shared-network mark (revision 1.2).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    shared: Option<SharedMark>,
}

/// An account that discovered from the network, as its short hash
/// ([`discoverer_tag`](super::shared::discoverer_tag)), until when it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Discoverer {
    #[serde(rename = "t")]
    tag: u64,
    #[serde(rename = "e", deserialize_with = "unix_ms::bounded")]
    expires_ms: i64,
}

/// A network judged shared by a stateful signal, until `until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SharedMark {
    #[serde(rename = "u", deserialize_with = "unix_ms::bounded")]
    until_ms: i64,
    #[serde(rename = "g")]
    signal: SharedSignal,
}

impl Extras {
    fn is_empty(&self) -> bool {
        self.links.is_empty()
            && self.used.is_empty()
            && self.discoverers.is_empty()
            && self.shared.is_none()
    }
}

static NO_EXTRAS: Extras = Extras {
    links: Vec::new(),
    used: Vec::new(),
    discoverers: Vec::new(),
    shared: None,
};

/// What a successful announcement returns.
#[derive(Debug)]
#[non_exhaustive]
pub struct Announced {
    /// Messages to deliver (their secrets are no longer in the record).
    pub messages: Vec<AgentMessage>,
    /// How discovery shows the agent after this announcement (the network's address signals
    /// are the caller's to add: see [`NetworkRecord::visibility_of`]).
    pub visibility: Visibility,
    /// The stateful signal this announcement tripped, when it newly marked the network shared.
    pub judged: Option<SharedSignal>,
    /// Until when the server may hold the request open (revision 1.6): set when the
    /// announcement asked for a hold, the server grants one, and no message was delivered. The
    /// presence then lives until one presence lifetime past it.
    pub held_until: Option<DateTime<Utc>>,
}

impl NetworkRecord {
    pub(super) fn ext(&self) -> &Extras {
        self.extras.as_deref().unwrap_or(&NO_EXTRAS)
    }

    fn ext_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Links requested from (or completed in) this network.
    pub fn links(&self) -> &[LinkRecord] {
        &self.ext().links
    }

    /// Instances whose secret was used or whose window is over, with the end of their replay
    /// horizon: they may not announce afresh or link again until then.
    pub fn used(&self) -> &[(InstanceId, DateTime<Utc>)] {
        &self.ext().used
    }

    /// Drops whatever has expired at `now`: presences, links, queued messages (zeroizing their
    /// secrets). (Failures and lockouts are the [budgets](super::budget)' records.)
    pub fn prune(&mut self, now: DateTime<Utc>, _config: &ServerConfig) {
        let now_ms = now.timestamp_millis();
        // Most calls find nothing expired: look before `retain` moves anything.
        if self.presences.iter().any(|p| p.expires_ms <= now_ms) {
            self.presences.retain(|p| p.expires_ms > now_ms);
        }
        let Some(extras) = self.extras.as_deref_mut() else {
            return;
        };
        for link in &mut extras.links {
            if link.message.as_ref().is_some_and(|m| m.expires_at <= now) {
                link.message = None;
                if link.state == LinkState::Pending {
                    // Never delivered: the link is over.
                    link.expires_at = now;
                }
            }
        }
        extras.links.retain(|l| l.expires_at > now);
        extras.used.retain(|(_, until)| *until > now);
        extras.discoverers.retain(|d| d.expires_ms > now_ms);
        if extras.shared.is_some_and(|m| m.until_ms <= now_ms) {
            extras.shared = None;
        }
        if extras.is_empty() {
            self.extras = None;
        }
    }

    #[cfg(feature = "shared-store")]
    /// Takes every queued message out of the record (for a store that keeps them under their
    /// own, shorter expiry), with the instance each is for.
    pub(crate) fn take_messages(&mut self) -> Vec<(InstanceId, PendingMessage)> {
        let Some(extras) = self.extras.as_deref_mut() else {
            return Vec::new();
        };
        extras
            .links
            .iter_mut()
            .filter_map(|link| link.message.take().map(|m| (link.instance_id, m)))
            .collect()
    }

    #[cfg(feature = "shared-store")]
    /// Puts back messages taken by [`take_messages`](Self::take_messages). A pending link whose
    /// message is gone (its store entry expired) is over at `now`, as [`prune`](Self::prune)
    /// would have ended it: prune after this.
    pub(crate) fn restore_messages(
        &mut self,
        messages: Vec<(InstanceId, PendingMessage)>,
        now: DateTime<Utc>,
    ) {
        let Some(extras) = self.extras.as_deref_mut() else {
            return;
        };
        let mut messages = messages;
        for link in &mut extras.links {
            if let Some(index) = messages.iter().position(|(id, _)| *id == link.instance_id) {
                link.message = Some(messages.swap_remove(index).1);
            } else if link.state == LinkState::Pending && link.message.is_none() {
                link.expires_at = link.expires_at.min(now);
            }
        }
    }

    #[cfg(feature = "shared-store")]
    /// The latest expiry of a queued message, if any.
    pub(crate) fn messages_expire_at(&self) -> Option<DateTime<Utc>> {
        self.links()
            .iter()
            .filter_map(|l| l.message.as_ref().map(|m| m.expires_at))
            .max()
    }

    /// Whether the record holds nothing (and may be deleted).
    pub fn is_empty(&self) -> bool {
        self.presences.is_empty() && self.ext().is_empty()
    }

    /// The latest expiry of anything in the record: a store may drop the whole record then.
    pub fn expires_at(&self, _config: &ServerConfig) -> Option<DateTime<Utc>> {
        let extras = self.ext();
        let presences = self.presences.iter().map(Presence::expires_at);
        let links = extras.links.iter().map(|l| l.expires_at);
        let used = extras.used.iter().map(|(_, until)| *until);
        let ms = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let discoverers = extras.discoverers.iter().map(|d| ms(d.expires_ms));
        let shared = extras.shared.iter().map(|m| ms(m.until_ms));
        presences
            .chain(links)
            .chain(used)
            .chain(discoverers)
            .chain(shared)
            .max()
    }

    /// Whether `instance_id` was used (its secret accepted, or its window over).
    pub fn is_used(&self, instance_id: &InstanceId) -> bool {
        self.ext().used.iter().any(|(id, _)| id == instance_id)
    }

    /// Marks `instance_id` used until the replay horizon; bounded, dropping what expires first.
    pub fn mark_used(
        &mut self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        instance_id: InstanceId,
    ) {
        const MAX_USED: usize = 256;
        if self.is_used(&instance_id) {
            return;
        }
        let used = &mut self.ext_mut().used;
        while used.len() >= MAX_USED {
            if let Some((index, _)) = used.iter().enumerate().min_by_key(|(_, (_, t))| *t) {
                used.remove(index);
            }
        }
        used.push((instance_id, later(now, config.replay_horizon)));
    }

    /// Records an announcement (protocol step 3) and takes the agent's queued messages.
    ///
    /// `private_ip` and every candidate (revision 1.3) must be announceable private addresses
    /// (else [`Refusal::NotPrivateIp`], with nothing changed); the presence keeps the candidates
    /// in order, without repeats or the first endpoint, at most [`MAX_CANDIDATES`].
    ///
    /// The announcement must carry the presence key its instance id derives from (else
    /// [`Refusal::ForgedInstance`]). The first announcement of an instance pins its commitment; a
    /// later one with another commitment marks the presence contested (hidden and unlinkable until
    /// it lapses) and is refused. An instance whose secret was used, or that has announced for longer than any
    /// agent's window ([`crate::MAX_DISCOVERY_WINDOW`] plus one presence lifetime), is refused.
    ///
    /// The two kinds of presence never touch: an announcement carrying the public
    /// [`unverified_commitment`] mark, or naming an unverified (Obico) presence, is refused
    /// ([`Refusal::ForgedInstance`]) before anything in the record changes, so it can neither
    /// create, refresh, move nor contest such a presence, nor reset the clock its minimum poll gap
    /// reads. Call on a pruned record.
    pub fn announce(
        &mut self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        announce: &Announce,
    ) -> Result<Announced, Refusal> {
        self.announce_holding(now, config, announce, TimeDelta::zero())
    }

    /// [`announce`](Self::announce) for a request the server may hold for `hold` (revision
    /// 1.6; zero: answered at once): when no message was delivered, the presence lives until
    /// one presence lifetime past the hold (within the window), and
    /// [`Announced::held_until`] says until when to hold.
    pub fn announce_holding(
        &mut self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        announce: &Announce,
        hold: TimeDelta,
    ) -> Result<Announced, Refusal> {
        // Every endpoint a linker may be pointed at passes the same check (revision 1.3).
        if !crate::addr::is_announceable_private_ip(announce.private_ip)
            || announce
                .candidates
                .iter()
                .any(|c| !crate::addr::is_announceable_private_ip(c.ip()))
        {
            return Err(Refusal::NotPrivateIp);
        }
        self.check_verified_kind(announce)?;
        let candidates = kept_candidates(announce);
        // Only the agent holds the key its id derives from: an id learned from discovery, or a
        // secret learned on the LAN, does not let anyone else announce as it. The key is checked
        // whenever an announcement could change what the server holds or sends (a new presence,
        // a changed commitment, address, port or info, a queued message); a plain refresh of an
        // unchanged presence only extends its life, within the window, and skips the hash.
        let proven = || announce.presence_key.proves(&announce.instance_id);
        let now_ms = now.timestamp_millis();
        let expires_ms = later_ms(now_ms, config.presence_ttl);
        let pending = self
            .links()
            .iter()
            .any(|l| l.instance_id == announce.instance_id && l.message.is_some());
        match self
            .presences
            .iter_mut()
            .find(|p| p.instance_id == announce.instance_id)
        {
            Some(presence) => {
                // A commitment is a hash of 256 random bits and no secret; learning it by timing
                // would only let someone refresh an unchanged presence. Plain equality here; the
                // check that matters, secret against commitment, is constant time.
                let same_commitment = presence.commitment == announce.commitment;
                let unchanged = same_commitment
                    && presence.private_ip == announce.private_ip
                    && presence.port == announce.port
                    && presence.candidates == candidates
                    && presence.info.fingerprint() == announce.info.fingerprint();
                if (pending || !unchanged) && !proven() {
                    return Err(Refusal::ForgedInstance);
                }
                // A commitment that changes within a window is refused even from the agent (which
                // never does that), and fails closed.
                if presence.contested || !same_commitment {
                    presence.contested = true;
                    return Err(Refusal::PresenceConflict);
                }
                if now_ms > presence.window_ends_ms {
                    let instance_id = presence.instance_id;
                    self.presences.retain(|p| p.instance_id != instance_id);
                    self.mark_used(now, config, instance_id);
                    return Err(Refusal::WindowOver);
                }
                presence.expires_ms = expires_ms;
                if !unchanged {
                    // An authenticated agent may move (a new DHCP lease) or rename itself.
                    presence.private_ip = announce.private_ip;
                    presence.port = announce.port;
                    presence.candidates = candidates;
                    presence.info = announce.info.clone();
                }
            }
            None => {
                if !proven() {
                    return Err(Refusal::ForgedInstance);
                }
                // A used instance may keep announcing while its pinned presence lives (that is
                // how its agent receives the message), but may not appear afresh.
                if self.is_used(&announce.instance_id) {
                    return Err(Refusal::InstanceUsed);
                }
                if self.presences.len() >= config.max_agents_per_network {
                    return Err(Refusal::NetworkFull);
                }
                // Most networks hold one agent: grow one slot at a time rather than Vec's
                // default of four (which would triple a server's memory per agent).
                self.presences.reserve_exact(1);
                self.presences.push(Presence {
                    instance_id: announce.instance_id,
                    private_ip: announce.private_ip,
                    port: announce.port,
                    info: announce.info.clone(),
                    commitment: announce.commitment,
                    expires_ms,
                    contested: false,
                    link_requested: false,
                    window_ends_ms: later_ms(
                        later_ms(now_ms, config.max_window),
                        config.presence_ttl,
                    ),
                    extra: None,
                    candidates,
                });
            }
        }
        let mut messages = Vec::new();
        let links = match self.extras.as_deref_mut() {
            Some(extras) => extras.links.as_mut_slice(),
            None => &mut [],
        };
        for link in links {
            if link.instance_id != announce.instance_id {
                continue;
            }
            if let Some(message) = link.message.take() {
                link.state = LinkState::Delivered;
                messages.push(AgentMessage::VerifyAndRedeem {
                    instance_id: link.instance_id,
                    local_secret: message.secret.clone(),
                    code: message.code.clone(),
                    // A `DisplayName` passed its check when it was made (a stored one when it
                    // was read back: it deserializes through the same check).
                    display_name: message
                        .display_name
                        .as_ref()
                        .map(|name| name.as_str().to_owned()),
                    nonce: message.nonce,
                });
                // `message` drops here: the record keeps no copy of the secret.
            }
        }
        // A held request (revision 1.6) keeps its agent present until one presence lifetime
        // past the hold, within the agent's window: the agent announces again only once the
        // hold is answered.
        let held_until = match self
            .presences
            .iter_mut()
            .find(|p| p.instance_id == announce.instance_id)
        {
            Some(presence) if messages.is_empty() && hold > TimeDelta::zero() => {
                let until_ms = later_ms(now_ms, hold).min(presence.window_ends_ms);
                presence.expires_ms = presence
                    .expires_ms
                    .max(later_ms(until_ms, config.presence_ttl));
                (until_ms > now_ms)
                    .then(|| DateTime::from_timestamp_millis(until_ms))
                    .flatten()
            }
            _ => None,
        };
        let judged = self.judge_subnets(now, config);
        let visibility = self.visibility_of(now, config, &announce.instance_id);
        Ok(Announced {
            messages,
            visibility,
            judged,
            held_until,
        })
    }

    /// Keeps a core announcement to its own kind of presence: one whose commitment is the public
    /// unverified mark (anyone can send it; the mark verifies no secret), or whose instance id
    /// names an unverified presence (held for an agent with no presence key, so no key can speak
    /// for it), is refused without looking further. Checked before any write, so a refusal
    /// leaves the record as it was.
    fn check_verified_kind(&self, announce: &Announce) -> Result<(), Refusal> {
        let names_unverified = || {
            self.presences
                .iter()
                .any(|p| p.instance_id == announce.instance_id && p.is_unverified())
        };
        if announce.commitment == unverified_commitment() || names_unverified() {
            return Err(Refusal::ForgedInstance);
        }
        Ok(())
    }

    /// The presences live at `now` (they count toward `max_visible`). Expired ones count for
    /// nothing, so this is right on a record that was not pruned.
    #[inline]
    pub fn present(&self, now: DateTime<Utc>) -> usize {
        let now_ms = now.timestamp_millis();
        self.presences
            .iter()
            .filter(|p| p.expires_ms > now_ms)
            .count()
    }

    /// What a linker of this network is shown at `now` (protocol step 4): nothing when more than
    /// `max_visible` agents are present; otherwise the live ones that are neither contested nor
    /// already used. Reads only (expired presences are skipped, not pruned), so a store may
    /// serve discovery from a plain read.
    #[inline]
    pub fn discover(&self, now: DateTime<Utc>, config: &ServerConfig) -> DiscoveredAgents {
        self.shown(now, config, |p| !p.is_unverified())
    }

    /// The live, uncontested, unlinked presences that `kind` accepts, as discovery shows them,
    /// or none when more than `max_visible` agents are present.
    #[inline]
    pub(crate) fn shown(
        &self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        kind: impl Fn(&Presence) -> bool,
    ) -> DiscoveredAgents {
        self.shown_within(now, config.max_visible, kind)
    }

    /// [`shown`](Self::shown) with `limit` in place of `max_visible`.
    #[inline]
    pub(crate) fn shown_within(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        kind: impl Fn(&Presence) -> bool,
    ) -> DiscoveredAgents {
        if self.present(now) > limit
            && !crate::mutant::active(crate::mutant::Mutant::OneVisibleSkipped)
        {
            return DiscoveredAgents::new();
        }
        let now_ms = now.timestamp_millis();
        let mut shown = DiscoveredAgents::new();
        for p in &self.presences {
            if p.expires_ms > now_ms && !p.contested && !p.link_requested && kind(p) {
                shown.push(
                    DiscoveredAgent::new(p.instance_id, p.private_ip, p.port, p.info.clone())
                        .with_candidates(p.candidates.to_vec()),
                );
            }
        }
        shown
    }

    /// Checks a link request (protocol step 6) without changing anything. Call on a pruned
    /// record.
    pub fn check_link(
        &self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        instance_id: &InstanceId,
        secret: &LocalSecret,
    ) -> Result<(), Refusal> {
        // A network judged shared refuses every auto link, before anything about the agent is
        // looked at (not a guess: nothing is learnt but what discovery says).
        if self.shared_mark(now).is_some() {
            return Err(Refusal::SharedNetwork);
        }
        if self.is_used(instance_id) || self.links().iter().any(|l| l.instance_id == *instance_id) {
            return Err(Refusal::AlreadyLinking);
        }
        let Some(presence) = self
            .presences
            .iter()
            .find(|p| p.instance_id == *instance_id)
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
        if !presence.commitment.verify(instance_id, secret)
            && !crate::mutant::active(crate::mutant::Mutant::SecretUnchecked)
        {
            return Err(Refusal::WrongSecret);
        }
        Ok(())
    }

    /// Accepts a checked link request: marks the secret used and queues `{secret, code}` for the
    /// agent, with the account's display name (revision 1.4) and the linker's nonce.
    /// `code_expires_at` bounds the link record.
    #[allow(clippy::too_many_arguments)]
    pub fn accept_link(
        &mut self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        request: LinkRequest,
        account: AccountId,
        display_name: Option<DisplayName>,
        code: LinkCode,
        code_expires_at: DateTime<Utc>,
    ) {
        let LinkRequest {
            instance_id,
            local_secret: secret,
            nonce,
            ..
        } = request;
        if let Some(presence) = self
            .presences
            .iter_mut()
            .find(|p| p.instance_id == instance_id)
        {
            presence.link_requested = true;
        }
        self.mark_used(now, config, instance_id);
        self.make_room_for_link();
        self.ext_mut().links.push(LinkRecord {
            instance_id,
            account,
            state: LinkState::Pending,
            message: Some(PendingMessage {
                secret,
                code,
                expires_at: later(now, config.message_ttl),
                display_name,
                nonce,
            }),
            expires_at: code_expires_at,
        });
    }

    /// Records a completed link (protocol step 8): the agent leaves discovery and the account can
    /// read `Linked` until the status lapses.
    pub fn complete_link(
        &mut self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        instance_id: InstanceId,
        account: &AccountId,
    ) {
        self.presences.retain(|p| p.instance_id != instance_id);
        self.mark_used(now, config, instance_id);
        let expires_at = later(now, config.link_status_ttl);
        let links = &mut self.ext_mut().links;
        match links
            .iter_mut()
            .find(|l| l.instance_id == instance_id && l.account == *account)
        {
            Some(link) => {
                link.state = LinkState::Linked;
                link.message = None;
                link.expires_at = expires_at;
            }
            None => {
                self.make_room_for_link();
                self.ext_mut().links.push(LinkRecord {
                    instance_id,
                    account: account.clone(),
                    state: LinkState::Linked,
                    message: None,
                    expires_at,
                });
            }
        }
    }

    /// Keeps the link list bounded: drops the record that expires first.
    fn make_room_for_link(&mut self) {
        const MAX_LINKS: usize = 64;
        let links = &mut self.ext_mut().links;
        while links.len() >= MAX_LINKS {
            if let Some((index, _)) = links.iter().enumerate().min_by_key(|(_, l)| l.expires_at) {
                links.remove(index);
            }
        }
    }

    /// The state of `account`'s link to `instance_id`. Call on a pruned record.
    pub fn link_state(&self, account: &AccountId, instance_id: &InstanceId) -> LinkState {
        self.links()
            .iter()
            .find(|l| l.instance_id == *instance_id && l.account == *account)
            .map_or(LinkState::Unknown, |l| l.state)
    }
}

impl NetworkRecord {
    /// Takes the message queued for `instance_id`, if any (at most one), marking its link
    /// delivered; the record keeps no copy of the secret.
    pub fn take_message(&mut self, instance_id: &InstanceId) -> Option<PendingMessage> {
        let extras = self.extras.as_deref_mut()?;
        let link = extras
            .links
            .iter_mut()
            .find(|l| l.instance_id == *instance_id && l.message.is_some())?;
        link.state = LinkState::Delivered;
        link.message.take()
    }
}
