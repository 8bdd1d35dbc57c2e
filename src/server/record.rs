//! The server's records: one [`NetworkRecord`] per public network and one [`CodeRecord`] per
//! code. Every operation is a pure function of (record, input, `now`) that changes the record in
//! place on a copy; the server writes the copy back as a whole, so a shared store can apply each
//! operation with a single compare-and-swap.
//!
//! Wall-clock times (`DateTime<Utc>`) because several server instances share these records.

use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::addr::PublicNetwork;
use crate::code::LinkCode;
use crate::confirm::{ConfirmNonce, DisplayName};
use crate::error::Refusal;
use crate::id::{AccountId, InstanceId};
use crate::secret::{Commitment, LocalSecret};
use crate::server::shared::{subnet_of, SharedSignal};
use crate::server::ServerConfig;
use crate::wire::{
    AgentMessage, Announce, DeviceInfo, DiscoveredAgent, DiscoveredAgents, HiddenReason,
    LinkRequest, LinkState, Visibility, MAX_CANDIDATES,
};

/// `at + delta`, saturating at the end of representable time (no panic on any `now`).
pub(crate) fn later(at: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    at.checked_add_signed(delta)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// One agent's presence in a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Presence {
    /// The agent.
    #[serde(rename = "i")]
    pub instance_id: InstanceId,
    /// Its LAN address.
    #[serde(rename = "a")]
    pub private_ip: IpAddr,
    /// Its local endpoint's port.
    #[serde(rename = "p")]
    pub port: u16,
    /// What to show.
    #[serde(rename = "d")]
    pub info: DeviceInfo,
    /// The commitment pinned by the first announcement.
    #[serde(rename = "k", with = "commitment_hex")]
    pub commitment: Commitment,
    /// When the presence lapses unless refreshed, in Unix milliseconds (integers, because every
    /// announcement of every agent updates it).
    #[serde(rename = "e", deserialize_with = "unix_ms::bounded")]
    pub expires_ms: i64,
    /// A conflicting announcement was seen: hidden and unlinkable until it expires.
    #[serde(rename = "c")]
    pub contested: bool,
    /// A link was accepted with this presence's secret (single-use).
    #[serde(rename = "l")]
    pub link_requested: bool,
    /// When this instance has announced for longer than any window, in Unix milliseconds
    /// (its first announcement + the longest window + one presence lifetime).
    #[serde(rename = "w", deserialize_with = "unix_ms::bounded")]
    pub window_ends_ms: i64,
    /// What an Obico agent's poll says besides [`DeviceInfo`] (none for a lanlink agent).
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Box<ObicoInfo>>,
    /// Further endpoints of its local endpoint, in the order to try them after
    /// `private_ip:port` (revision 1.3): each private, none repeated, none equal to the first,
    /// at most [`MAX_CANDIDATES`]. Absent in records written before 1.3 (read as none).
    #[serde(rename = "n", default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<SocketAddr>,
}

/// An announcement's candidates as a presence keeps them: those other than `private_ip:port`,
/// first occurrence only, at most [`MAX_CANDIDATES`] (decoding already refuses more; a list
/// built in code is cut, so a record stays bounded either way). The caller has checked that each
/// is private.
pub(crate) fn kept_candidates(announce: &Announce) -> Vec<SocketAddr> {
    let first = SocketAddr::new(announce.private_ip, announce.port);
    let mut kept: Vec<SocketAddr> = Vec::new();
    for &candidate in &announce.candidates {
        if kept.len() == MAX_CANDIDATES {
            break;
        }
        if candidate != first && !kept.contains(&candidate) {
            kept.push(candidate);
        }
    }
    kept
}

/// The fields of an Obico poll that Obico's web app shows besides [`DeviceInfo`], each at most
/// [`ObicoInfo::MAX_FIELD`] bytes (cut on a character boundary, hidden characters dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObicoInfo {
    /// `os`.
    #[serde(rename = "o", default)]
    pub os: String,
    /// `arch`.
    #[serde(rename = "a", default)]
    pub arch: String,
    /// `octopi_version`.
    #[serde(rename = "v", default)]
    pub octopi_version: String,
    /// `machine_type`.
    #[serde(rename = "m", default)]
    pub machine_type: String,
    /// `printerprofile`.
    #[serde(rename = "p", default)]
    pub printerprofile: String,
}

impl ObicoInfo {
    /// The most bytes each field keeps.
    pub const MAX_FIELD: usize = 64;
}

impl Presence {
    /// When the presence lapses unless refreshed.
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.expires_ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// `at + delta` in Unix milliseconds, saturating.
fn later_ms(at_ms: i64, delta: TimeDelta) -> i64 {
    at_ms.saturating_add(delta.num_milliseconds())
}

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
struct Extras {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    links: Vec<LinkRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    used: Vec<(InstanceId, DateTime<Utc>)>,
    /// Recent discoverers (revision 1.2): short per-network hashes of the accounts, never ids.
    #[serde(rename = "d", default, skip_serializing_if = "Vec::is_empty")]
    discoverers: Vec<Discoverer>,
    /// The sticky shared-network mark (revision 1.2).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    shared: Option<SharedMark>,
}

/// An account that discovered from the network, as its short hash
/// ([`discoverer_tag`](super::shared::discoverer_tag)), until when it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Discoverer {
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

/// Times read from a store, in Unix milliseconds, bounded when decoded to the range a
/// `DateTime<Utc>` holds: a record from a corrupt or hostile store cannot hold a time that
/// outlives the end of time (and so a presence that no pruning removes) or precedes its start.
pub(crate) mod unix_ms {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer};

    /// The earliest time a record may hold.
    pub(crate) fn min() -> i64 {
        DateTime::<Utc>::MIN_UTC.timestamp_millis()
    }

    /// The latest time a record may hold.
    pub(crate) fn max() -> i64 {
        DateTime::<Utc>::MAX_UTC.timestamp_millis()
    }

    /// `ms`, clamped to what a `DateTime<Utc>` holds.
    pub(crate) fn clamp(ms: i64) -> i64 {
        ms.clamp(min(), max())
    }

    /// Reads a time and bounds it ([`clamp`]).
    pub(crate) fn bounded<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        i64::deserialize(d).map(clamp)
    }
}

/// A commitment as 64 hex characters (serde `with` helper for the stored records).
mod commitment_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::secret::Commitment;

    pub fn serialize<S: Serializer>(commitment: &Commitment, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&commitment.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Commitment, D::Error> {
        let text = <&str>::deserialize(d)?;
        Commitment::from_hex(text).ok_or_else(|| serde::de::Error::custom("bad commitment"))
    }
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
}

impl NetworkRecord {
    fn ext(&self) -> &Extras {
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
        self.presences.retain(|p| p.expires_ms > now_ms);
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
        let judged = self.judge_subnets(now, config);
        let visibility = self.visibility_of(now, config, &announce.instance_id);
        Ok(Announced {
            messages,
            visibility,
            judged,
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
                        .with_candidates(p.candidates.clone()),
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

/// Shared-network detection over the record (see [`super::shared`]): pure functions of the
/// record, the policy and `now`, applied in the same store update that admits what they judge.
impl NetworkRecord {
    /// The stateful signal the network is marked shared by at `now`, if the mark is live. Reads
    /// only (right on a record that was not pruned).
    #[inline]
    pub fn shared_mark(&self, now: DateTime<Utc>) -> Option<SharedSignal> {
        let mark = self.extras.as_deref()?.shared?;
        (mark.until_ms > now.timestamp_millis()).then_some(mark.signal)
    }

    /// Why discovery of this network hides its agents at `now`, if it does: `shared_network`
    /// (a live mark, or `address` — the network's address signal, from
    /// [`SharedNetworkPolicy::judge_address`](super::SharedNetworkPolicy::judge_address)), else
    /// `too_many_agents` when more than `max_visible` are present. Reads only.
    #[inline]
    pub fn hidden(
        &self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        address: Option<SharedSignal>,
    ) -> Option<HiddenReason> {
        if address.is_some() || self.shared_mark(now).is_some() {
            return Some(HiddenReason::SharedNetwork);
        }
        (self.present(now) > config.max_visible).then_some(HiddenReason::TooManyAgents)
    }

    /// How discovery shows `instance_id` at `now` (from the record's own state: add the
    /// network's address signal with [`hidden`](Self::hidden)).
    pub fn visibility_of(
        &self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        _instance_id: &InstanceId,
    ) -> Visibility {
        match self.hidden(now, config, None) {
            Some(reason) => Visibility::Hidden(reason),
            None => Visibility::Visible,
        }
    }

    /// Whether the account with discoverer hash `tag` discovered from this network within the
    /// window (it is counted already). Reads only.
    #[inline]
    pub(crate) fn knows_discoverer(&self, now: DateTime<Utc>, tag: u64) -> bool {
        let now_ms = now.timestamp_millis();
        self.extras.as_deref().is_some_and(|e| {
            e.discoverers
                .iter()
                .any(|d| d.tag == tag && d.expires_ms > now_ms)
        })
    }

    /// Counts the account with discoverer hash `tag` (for the policy's window; the set is
    /// bounded by [`MAX_DISCOVERERS`](super::shared::MAX_DISCOVERERS), dropping the entry that
    /// expires first) and, when the distinct accounts exceed `max_accounts`, marks the network
    /// shared. Returns the signal when this call newly marked it. Call on a pruned record.
    pub(crate) fn note_discoverer(
        &mut self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        tag: u64,
    ) -> Option<SharedSignal> {
        let policy = &config.shared;
        if !policy.enabled || self.knows_discoverer(now, tag) {
            return None;
        }
        let now_ms = now.timestamp_millis();
        let discoverers = &mut self.ext_mut().discoverers;
        discoverers.retain(|d| d.expires_ms > now_ms);
        while discoverers.len() >= super::shared::MAX_DISCOVERERS {
            if let Some((index, _)) = discoverers
                .iter()
                .enumerate()
                .min_by_key(|(_, d)| d.expires_ms)
            {
                discoverers.remove(index);
            }
        }
        discoverers.push(Discoverer {
            tag,
            expires_ms: later_ms(now_ms, policy.window),
        });
        let distinct = discoverers.len();
        (distinct > policy.max_accounts)
            .then(|| self.mark_shared(now, config, SharedSignal::ManyAccounts))
            .flatten()
    }

    /// Marks the network shared by `signal` until `now + sticky` (a live mark is extended, and
    /// keeps its first signal). Returns the signal when the network was not marked before.
    pub(crate) fn mark_shared(
        &mut self,
        now: DateTime<Utc>,
        config: &ServerConfig,
        signal: SharedSignal,
    ) -> Option<SharedSignal> {
        let was = self.shared_mark(now);
        let until_ms = later_ms(now.timestamp_millis(), config.shared.sticky);
        let extras = self.ext_mut();
        extras.shared = Some(SharedMark {
            until_ms,
            signal: was.unwrap_or(signal),
        });
        was.is_none().then_some(signal)
    }

    /// The distinct private subnets (/24, /64) of the agents present at `now`.
    pub fn present_subnets(&self, now: DateTime<Utc>) -> usize {
        let now_ms = now.timestamp_millis();
        let mut seen: SmallVec<[ipnet::IpNet; 2]> = SmallVec::new();
        for p in self.presences.iter().filter(|p| p.expires_ms > now_ms) {
            let net = subnet_of(p.private_ip);
            if !seen.contains(&net) {
                seen.push(net);
            }
        }
        seen.len()
    }

    /// Marks the network shared when its present agents announce more distinct private subnets
    /// than `max_subnets`; returns the signal when newly marked.
    fn judge_subnets(&mut self, now: DateTime<Utc>, config: &ServerConfig) -> Option<SharedSignal> {
        let policy = &config.shared;
        if !policy.enabled || self.presences.len() <= policy.max_subnets {
            return None;
        }
        if self.present_subnets(now) > policy.max_subnets {
            return self.mark_shared(now, config, SharedSignal::ManySubnets);
        }
        None
    }
}

/// A live code: minted for an account, optionally bound to one instance and one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// The account a redemption links to.
    pub account: AccountId,
    /// The only instance that may redeem it (auto codes).
    pub instance_id: Option<InstanceId>,
    /// The only network it may be redeemed from (auto codes).
    pub network: Option<PublicNetwork>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// Whether it was redeemed (single-use).
    pub redeemed: bool,
    /// The instance that redeemed it, while `redeemed`: the only one that may redeem it again
    /// after a lost reply, by proving its presence key ([`CodeRecord::redeem_by`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeemed_by: Option<InstanceId>,
    /// Per [`kind`](Self::kind): for a link code, the newest attempt of the redeemer's that
    /// claimed the code (see [`RedeemRequest::attempt`](crate::wire::RedeemRequest::attempt)).
    /// For an [`InstanceClaim`](CodeKind::InstanceClaim), how many link requests hold the claim:
    /// 1 when created, one more for each request of the same network that joins it, one less
    /// for each that fails after joining; 0 in a claim written before holders were counted,
    /// whose holder is unknown and which is therefore never released. Unused by other kinds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub claim_attempt: u32,
    /// Whether it is a manual code.
    pub manual: bool,
    /// What the record is: a link code (the default), or another profile's code-like record.
    #[serde(default)]
    pub kind: CodeKind,
    /// Whether the mint-quota slots of this manual code were returned (its link completed): set
    /// once, by the atomic write in which [`release_quota`](Self::release_quota) says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quota_released: bool,
}

impl CodeRecord {
    /// Whether the code may still be redeemed at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }

    /// Redeems the code for `instance_id` presenting from `network` (protocol step 8), marking it
    /// used. Refuses without change when any check fails.
    pub fn redeem(
        &mut self,
        now: DateTime<Utc>,
        instance_id: &InstanceId,
        network: &PublicNetwork,
    ) -> Result<(), Refusal> {
        self.redeem_by(now, instance_id, network, false, 0)
            .map(|_| ())
    }

    /// [`redeem`](Self::redeem), where `proven` says the presenter proved it is `instance_id`
    /// (its presence key) and `attempt` numbers its attempts. A proven presenter may redeem
    /// again a code that it redeemed itself, while the code is live, with an attempt newer than
    /// the one that last claimed it: the retry after a lost reply ([`Redemption::Again`]); an
    /// older or equal attempt is [`Refusal::Superseded`]. Anyone else gets
    /// [`Refusal::CodeUsed`] for a used code, as before.
    ///
    /// ```
    /// # use lanlink::server::{CodeRecord, CodeKind};
    /// # use lanlink::server::record::Redemption;
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork, Refusal};
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let (me, other) = (InstanceId::from_bytes([1; 16]), InstanceId::from_bytes([2; 16]));
    /// let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// let mut code = CodeRecord {
    ///     account: AccountId::new("alice").unwrap(), instance_id: None, network: None,
    ///     expires_at: now + chrono::TimeDelta::minutes(10), redeemed: false, redeemed_by: None,
    ///     claim_attempt: 0, manual: true, kind: CodeKind::Link, quota_released: false,
    /// };
    /// assert_eq!(code.redeem_by(now, &me, &home, true, 1), Ok(Redemption::First));
    /// assert_eq!(code.redeem_by(now, &me, &home, true, 3), Ok(Redemption::Again));
    /// // A late duplicate of attempt 2 cannot replace attempt 3's token.
    /// assert_eq!(code.redeem_by(now, &me, &home, true, 2), Err(Refusal::Superseded));
    /// assert_eq!(code.redeem_by(now, &me, &home, false, 4), Err(Refusal::CodeUsed));
    /// assert_eq!(code.redeem_by(now, &other, &home, true, 4), Err(Refusal::CodeUsed));
    /// ```
    pub fn redeem_by(
        &mut self,
        now: DateTime<Utc>,
        instance_id: &InstanceId,
        network: &PublicNetwork,
        proven: bool,
        attempt: u32,
    ) -> Result<Redemption, Refusal> {
        if !self.is_live(now) || !matches!(self.kind, CodeKind::Link) {
            return Err(Refusal::UnknownCode);
        }
        if self.instance_id.is_some_and(|id| id != *instance_id) {
            return Err(Refusal::CodeWrongAgent);
        }
        if self.network.is_some_and(|n| n != *network) {
            return Err(Refusal::CodeWrongNetwork);
        }
        if self.redeemed && !crate::mutant::active(crate::mutant::Mutant::UsedCodeAccepted) {
            if !proven || self.redeemed_by != Some(*instance_id) {
                return Err(Refusal::CodeUsed);
            }
            if attempt <= self.claim_attempt {
                return Err(Refusal::Superseded);
            }
            self.claim_attempt = attempt;
            return Ok(Redemption::Again);
        }
        self.redeemed = true;
        self.redeemed_by = Some(*instance_id);
        self.claim_attempt = attempt;
        Ok(Redemption::First)
    }

    /// Marks the mint-quota slots of a redeemed manual code returned, when a link redeemed with
    /// it completed (its life is over). `true` for the one call that marked them (its caller
    /// returns the slots), `false` for a code that holds none (an auto code), that is not
    /// redeemed, or whose slots were already returned: so they are returned exactly once,
    /// whichever attempt or instance completes the link, however often.
    ///
    /// ```
    /// # use lanlink::server::{CodeRecord, CodeKind};
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork};
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let me = InstanceId::from_bytes([1; 16]);
    /// # let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// # let mut code = CodeRecord {
    /// #     account: AccountId::new("alice").unwrap(), instance_id: None, network: None,
    /// #     expires_at: now + chrono::TimeDelta::minutes(10), redeemed: false, redeemed_by: None,
    /// #     claim_attempt: 0, manual: true, kind: CodeKind::Link, quota_released: false,
    /// # };
    /// assert!(!code.release_quota(), "not redeemed: still live, still holds its slots");
    /// code.redeem_by(now, &me, &home, true, 1).unwrap();
    /// code.redeem_by(now, &me, &home, true, 2).unwrap(); // a retry after a lost reply
    /// assert!(code.release_quota(), "the first completion returns them");
    /// assert!(!code.release_quota(), "the second does not");
    /// ```
    pub fn release_quota(&mut self) -> bool {
        if !self.manual || !self.redeemed || self.quota_released {
            return false;
        }
        self.quota_released = true;
        true
    }

    /// Gives back a code that attempt `attempt` of `instance_id` claimed by
    /// [`redeem_by`](Self::redeem_by) (its link could not be completed), so that the agent's
    /// retry redeems it. Only that very claim is undone: if a newer attempt of the agent has
    /// claimed the code since (and may be completing its link), nothing changes, so a code can
    /// never be left redeemable beside a completed link. Returns whether it was given back.
    ///
    /// ```
    /// # use lanlink::server::{CodeRecord, CodeKind};
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork};
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let me = InstanceId::from_bytes([1; 16]);
    /// # let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// # let mut code = CodeRecord {
    /// #     account: AccountId::new("alice").unwrap(), instance_id: None, network: None,
    /// #     expires_at: now + chrono::TimeDelta::minutes(10), redeemed: false, redeemed_by: None,
    /// #     claim_attempt: 0, manual: true, kind: CodeKind::Link, quota_released: false,
    /// # };
    /// code.redeem_by(now, &me, &home, true, 1).unwrap();
    /// code.redeem_by(now, &me, &home, true, 2).unwrap(); // a retry claimed it meanwhile
    /// assert!(!code.give_back(&me, 1), "attempt 1 may not undo attempt 2's claim");
    /// assert!(code.redeemed);
    /// assert!(code.give_back(&me, 2));
    /// assert!(!code.redeemed);
    /// ```
    pub fn give_back(&mut self, instance_id: &InstanceId, attempt: u32) -> bool {
        if !self.redeemed || self.redeemed_by != Some(*instance_id) || self.claim_attempt != attempt
        {
            return false;
        }
        self.redeemed = false;
        self.redeemed_by = None;
        self.claim_attempt = 0;
        true
    }
}

/// The holders of an [`InstanceClaim`](CodeKind::InstanceClaim), counted in
/// [`claim_attempt`](CodeRecord::claim_attempt).
impl CodeRecord {
    /// Joins the instance claim of `network`: counts one more holder and returns the claim's
    /// expiry, which names this claim among any that ever hold its key (see
    /// [`release_claim`](Self::release_claim)); `None`, changing nothing, when the record is not
    /// a claim of `network`'s. A claim whose holder count is unknown (0: written before holders
    /// were counted) counts that holder as one that never lets go, so the count goes to 2 and
    /// the joiner's release can never free it.
    pub(crate) fn join_claim(&mut self, network: &PublicNetwork) -> Option<DateTime<Utc>> {
        if !matches!(self.kind, CodeKind::InstanceClaim) || self.network != Some(*network) {
            return None;
        }
        self.claim_attempt = match self.claim_attempt {
            0 => 2,
            holders => holders.saturating_add(1),
        };
        Some(self.expires_at)
    }

    /// Lets go of a hold on the instance claim of `network` whose expiry was `held` (the hold
    /// of a link request that failed after claiming): one holder fewer, and when none is left
    /// the claim ends at `now` (a store then drops it as expired). Changes nothing, returning
    /// `false`, unless the record is that very claim (a claim that lapsed and was created
    /// again has another expiry: its holders are not this request's to release), or when its
    /// count cannot be trusted: 0 (a legacy claim, see [`join_claim`](Self::join_claim)) or
    /// saturated (a hold may have gone uncounted). Returns whether the claim ended.
    pub(crate) fn release_claim(
        &mut self,
        now: DateTime<Utc>,
        network: &PublicNetwork,
        held: DateTime<Utc>,
    ) -> bool {
        if !matches!(self.kind, CodeKind::InstanceClaim)
            || self.network != Some(*network)
            || self.expires_at != held
            || matches!(self.claim_attempt, 0 | u32::MAX)
        {
            return false;
        }
        self.claim_attempt -= 1;
        if self.claim_attempt > 0 {
            return false;
        }
        self.expires_at = now;
        true
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What [`CodeRecord::redeem_by`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// The code was unused and is now redeemed.
    First,
    /// The code was already redeemed by the same, proven instance: a retry after a lost reply.
    Again,
}

/// What a [`CodeRecord`] stands for. Only [`CodeKind::Link`] records can be redeemed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CodeKind {
    /// A link code (manual or auto), redeemed by an agent for a token.
    #[default]
    Link,
    /// A one-time passcode shown by an Obico agent (feature `obico`, `crate::obico`): never
    /// redeemable. Its `instance_id` and `network` are the showing agent's; `redeemed` means a
    /// user claimed it, and `account` is that user (a placeholder before). Boxed, so that link
    /// code records grow by one pointer only.
    ObicoPasscode(Box<ObicoPasscode>),
    /// An instance's link claim, under [`CodeKey::instance_claim`](crate::code::CodeKey::instance_claim):
    /// the first link request that passed every check for the instance, in any network, writes it
    /// (create-if-absent, one atomic step) before it accepts the link, and a link request for the
    /// instance from any other network is refused while it lives (`409 already_linking`). An agent
    /// announcing over IPv4 and IPv6 is present in two networks; this makes its secret good for
    /// one link in all of them. Its `network` and `instance_id` are the claimant's; never
    /// redeemable. Concurrent requests of the claimant's network share it, counted in
    /// [`claim_attempt`](CodeRecord::claim_attempt): a request that fails after claiming lets go
    /// of its hold, and the claim ends when no request holds it; an accepted link keeps its
    /// hold, so the claim then lives its full time.
    InstanceClaim,
}

/// A link code is stored as `"link"`; an Obico passcode as `{"obico_passcode": {"v": …}}`, with
/// the code it holds for the agent (if any). A shared store encrypts every record whole (see
/// `RedisStore`, feature `redis`), so the held code is never at rest in the clear.
impl Serialize for CodeKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Link => serializer.serialize_unit_variant("CodeKind", 0, "link"),
            Self::InstanceClaim => {
                serializer.serialize_unit_variant("CodeKind", 2, "instance_claim")
            }
            Self::ObicoPasscode(state) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("obico_passcode", &StoredPasscode::of(state))?;
                map.end()
            }
        }
    }
}

/// An [`ObicoPasscode`] as stored.
#[derive(Serialize, Deserialize)]
struct StoredPasscode {
    #[serde(rename = "v", default, with = "held_code")]
    verification: Option<LinkCode>,
}

impl StoredPasscode {
    fn of(state: &ObicoPasscode) -> Self {
        Self {
            verification: state.verification.clone(),
        }
    }
}

/// An optional held code (serde `with` helper).
mod held_code {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::code::LinkCode;

    pub fn serialize<S: Serializer>(code: &Option<LinkCode>, s: S) -> Result<S::Ok, S::Error> {
        match code {
            Some(code) => s.serialize_some(code.expose()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LinkCode>, D::Error> {
        let text: Option<zeroize::Zeroizing<String>> =
            Option::<String>::deserialize(d)?.map(zeroize::Zeroizing::new);
        match text {
            None => Ok(None),
            Some(text) => LinkCode::parse(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("bad code")),
        }
    }
}

/// Reads back what [`Serialize`] writes (no buffering: a held code is read straight into its
/// place).
impl<'de> Deserialize<'de> for CodeKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Kind;
        impl<'de> serde::de::Visitor<'de> for Kind {
            type Value = CodeKind;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"link\", \"instance_claim\" or an Obico passcode")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<CodeKind, E> {
                match text {
                    "link" => Ok(CodeKind::Link),
                    "instance_claim" => Ok(CodeKind::InstanceClaim),
                    other => Err(E::unknown_variant(
                        other,
                        &["link", "instance_claim", "obico_passcode"],
                    )),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<CodeKind, A::Error> {
                let mut kind = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'_, str>>()? {
                    if key != "obico_passcode" || kind.is_some() {
                        return Err(serde::de::Error::unknown_field(&key, &["obico_passcode"]));
                    }
                    let stored: StoredPasscode = map.next_value()?;
                    kind = Some(CodeKind::ObicoPasscode(Box::new(ObicoPasscode {
                        verification: stored.verification,
                    })));
                }
                kind.ok_or_else(|| serde::de::Error::missing_field("obico_passcode"))
            }
        }
        deserializer.deserialize_any(Kind)
    }
}

/// The state of an Obico one-time passcode (see [`CodeKind::ObicoPasscode`]).
#[derive(Clone, Default)]
pub struct ObicoPasscode {
    /// The code minted for the claiming user, bound to the agent's network, held in the clear
    /// only until the agent's next poll takes it (as a queued auto code is).
    pub verification: Option<LinkCode>,
}

impl ObicoPasscode {
    fn held(&self) -> Option<&str> {
        self.verification.as_ref().map(LinkCode::expose)
    }
}

impl PartialEq for ObicoPasscode {
    fn eq(&self, other: &Self) -> bool {
        match (self.held(), other.held()) {
            (Some(a), Some(b)) => {
                a.len() == b.len()
                    && bool::from(subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()))
            }
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for ObicoPasscode {}

impl std::fmt::Debug for ObicoPasscode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObicoPasscode")
            .field("verification_held", &self.verification.is_some())
            .finish()
    }
}

/// The commitment that marks an *unverified* presence: one announced over a wire with no
/// commitment and no presence key (the Obico profile). Such a presence is never shown by the
/// core's discovery, and no secret verifies against it.
pub fn unverified_commitment() -> Commitment {
    static MARK: std::sync::OnceLock<Commitment> = std::sync::OnceLock::new();
    *MARK.get_or_init(|| {
        use sha2::{Digest, Sha256};
        Commitment::from_bytes(Sha256::digest(b"lanlink/v1/unverified-presence\0").into())
    })
}

impl Presence {
    /// Whether this presence was announced without a commitment or presence key (see
    /// [`unverified_commitment`]).
    pub fn is_unverified(&self) -> bool {
        self.commitment == unverified_commitment()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::PresenceKey;

    fn announce(n: u8) -> Announce {
        let key = PresenceKey::from_bytes([n; 32]);
        let id = key.instance_id();
        Announce::new(
            id,
            IpAddr::from([192, 168, 1, n]),
            8080,
            DeviceInfo::default(),
            LocalSecret::from_bytes([n; 32]).commitment(&id),
            key,
        )
    }

    /// A queued message keeps the display name and the nonce through a shared store (revision
    /// 1.4); one written before 1.4 reads with neither; a stored name that fails the display
    /// name's check is refused as corrupt (fail closed), never forwarded.
    #[test]
    fn pending_messages_keep_name_and_nonce_through_serde() {
        let message = PendingMessage {
            secret: LocalSecret::from_bytes([5; 32]),
            code: LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap(),
            expires_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            display_name: DisplayName::new("alice@example.com"),
            nonce: Some(ConfirmNonce::from_bytes([3; 16])),
        };
        let value = serde_json::to_value(&message).unwrap();
        let back: PendingMessage = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(back.display_name, message.display_name);
        assert_eq!(back.nonce, message.nonce);
        let mut old = value.clone();
        old.as_object_mut().unwrap().remove("display_name");
        old.as_object_mut().unwrap().remove("nonce");
        let back: PendingMessage = serde_json::from_value(old).unwrap();
        assert!(back.display_name.is_none() && back.nonce.is_none());
        let mut forged = value;
        forged["display_name"] = serde_json::json!("alice\u{202E}moc.elpmaxe");
        assert!(serde_json::from_value::<PendingMessage>(forged).is_err());
    }

    /// Revision 1.3: every candidate is checked like `private_ip` (a refusal records nothing);
    /// the presence keeps them in order without repeats or the first endpoint, at most
    /// `MAX_CANDIDATES`; a change needs the presence key, like a move; discovery shows them;
    /// and a record written before 1.3 (no `n`) reads as a presence without candidates.
    #[test]
    fn candidates_are_checked_kept_and_read_from_old_records() {
        let config = ServerConfig::default();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mut record = NetworkRecord::default();
        for public in [
            "8.8.8.8:80",
            "[2001:db8::1]:80",
            "100.64.0.1:80",
            "0.0.0.0:80",
        ] {
            let mut bad = announce(1);
            bad.candidates = vec![addr("10.0.0.1:80"), addr(public)];
            assert_eq!(
                record.announce(t0, &config, &bad).unwrap_err(),
                Refusal::NotPrivateIp,
                "{public}"
            );
            assert!(record.is_empty());
        }
        let mut good = announce(1);
        good.candidates = vec![
            addr("10.0.0.1:80"),
            addr("192.168.1.1:8080"), // the first endpoint again
            addr("[fe80::1]:80"),
            addr("10.0.0.1:80"),
        ];
        good.candidates
            .extend((2..20).map(|n| SocketAddr::from(([10, 0, 0, n], 80))));
        record.announce(t0, &config, &good).unwrap();
        let kept = &record.presences[0].candidates;
        assert_eq!(kept.len(), MAX_CANDIDATES);
        assert_eq!(
            kept[..3],
            [
                addr("10.0.0.1:80"),
                addr("[fe80::1]:80"),
                addr("10.0.0.2:80")
            ]
        );
        let shown = record.discover(t0, &config);
        assert_eq!(&shown[0].candidates, kept);

        // A change of candidates without the key is refused, and changes nothing.
        let mut moved = good.clone();
        moved.candidates = vec![addr("10.9.9.9:80")];
        let mut unproven = moved.clone();
        unproven.presence_key = crate::secret::PresenceKey::from_bytes([99; 32]);
        assert_eq!(
            record.announce(t0, &config, &unproven).unwrap_err(),
            Refusal::ForgedInstance
        );
        assert_eq!(record.presences[0].candidates.len(), MAX_CANDIDATES);
        record.announce(t0, &config, &moved).unwrap();
        assert_eq!(record.presences[0].candidates, [addr("10.9.9.9:80")]);

        // Stored with a short key, absent when empty; an old record reads.
        let text = serde_json::to_string(&record).unwrap();
        assert!(text.contains(r#""n":["10.9.9.9:80"]"#), "{text}");
        record.presences[0].candidates.clear();
        let old = serde_json::to_string(&record).unwrap();
        assert!(!old.contains(r#""n":"#), "{old}");
        let back: NetworkRecord = serde_json::from_str(&old).unwrap();
        assert!(back.presences[0].candidates.is_empty());
        assert_eq!(back.presences[0].private_ip, good.private_ip);
    }

    /// An instance claim counts its holders: joined only by its own network (and only a claim),
    /// let go by each holder, ended (expiring at `now`) with the last; a legacy claim (0) and a
    /// saturated count are never ended; a release names the claim it held by its expiry, so it
    /// never touches a claim created afresh after that one lapsed.
    #[test]
    fn instance_claims_count_their_holders() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let later = t0 + TimeDelta::minutes(10);
        let (home, other) = (
            PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
            PublicNetwork::from_ip("2001:db8:7:1::20".parse().unwrap(), 64),
        );
        let claim = |holders, kind| CodeRecord {
            account: AccountId::new("alice").unwrap(),
            instance_id: None,
            network: Some(home),
            expires_at: later,
            redeemed: false,
            redeemed_by: None,
            claim_attempt: holders,
            manual: false,
            kind,
            quota_released: false,
        };
        // Another network's claim, or a record of another kind: not joined, not released.
        let mut record = claim(1, CodeKind::InstanceClaim);
        assert_eq!(record.join_claim(&other), None);
        assert!(!record.release_claim(t0, &other, later));
        let mut link = claim(1, CodeKind::Link);
        assert_eq!(link.join_claim(&home), None);
        assert!(!link.release_claim(t0, &home, later));
        assert_eq!((link.claim_attempt, link.expires_at), (1, later));
        // Two holders: the first release keeps it, the second ends it.
        assert_eq!(record.join_claim(&home), Some(later));
        assert_eq!(record.claim_attempt, 2);
        assert!(!record.release_claim(t0, &home, later));
        assert!(record.is_live(t0));
        assert!(record.release_claim(t0, &home, later));
        assert_eq!(record.claim_attempt, 0);
        assert!(!record.is_live(t0), "ended at once");
        // A claim created afresh (another expiry) is not this hold's to release.
        let mut fresh = claim(1, CodeKind::InstanceClaim);
        fresh.expires_at = later + TimeDelta::seconds(1);
        assert!(!fresh.release_claim(t0, &home, later));
        assert_eq!(fresh.claim_attempt, 1);
        // A legacy claim's unknown holder never lets go.
        let mut legacy = claim(0, CodeKind::InstanceClaim);
        assert!(!legacy.release_claim(t0, &home, later));
        assert_eq!(legacy.join_claim(&home), Some(later));
        assert_eq!(legacy.claim_attempt, 2);
        assert!(!legacy.release_claim(t0, &home, later));
        assert_eq!(legacy.claim_attempt, 1);
        assert!(legacy.is_live(t0));
        // A saturated count may have missed a hold: kept for good, no overflow.
        let mut full = claim(u32::MAX, CodeKind::InstanceClaim);
        assert_eq!(full.join_claim(&home), Some(later));
        assert!(!full.release_claim(t0, &home, later));
        assert_eq!(full.claim_attempt, u32::MAX);
        // The count goes to a shared store and back; 1 is written, 0 (legacy) is not.
        let text = serde_json::to_string(&claim(1, CodeKind::InstanceClaim)).unwrap();
        assert!(text.contains(r#""claim_attempt":1"#), "{text}");
        let back: CodeRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.claim_attempt, 1);
    }

    /// Every kind of code record goes to a shared store and comes back as it was (a passcode
    /// with its held code, or without); anything else is refused as corrupt.
    #[test]
    fn code_records_of_every_kind_round_trip_through_serde() {
        let code = LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap();
        let record = |kind| CodeRecord {
            account: AccountId::new("alice").unwrap(),
            instance_id: None,
            network: None,
            expires_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            redeemed: false,
            redeemed_by: None,
            claim_attempt: 0,
            manual: true,
            kind,
            quota_released: false,
        };
        for kind in [
            CodeKind::Link,
            CodeKind::InstanceClaim,
            CodeKind::ObicoPasscode(Box::default()),
            CodeKind::ObicoPasscode(Box::new(ObicoPasscode {
                verification: Some(code.clone()),
            })),
        ] {
            let original = record(kind);
            let text = serde_json::to_string(&original).unwrap();
            let back: CodeRecord = serde_json::from_str(&text).unwrap();
            assert_eq!(back, original, "{text}");
        }
        // Records written before kinds existed read as link codes.
        let old = r#"{"account":"alice","instance_id":null,"network":null,"expires_at":"2027-01-15T08:00:00Z","redeemed":false,"manual":true}"#;
        assert_eq!(
            serde_json::from_str::<CodeRecord>(old).unwrap().kind,
            CodeKind::Link
        );
        for bad in [
            r#""other""#,
            r#"{"obico_passcode":{"v":"not a code!"}}"#,
            r#"{"x":{}}"#,
            "{}",
            "7",
        ] {
            assert!(serde_json::from_str::<CodeKind>(bad).is_err(), "{bad}");
        }
    }

    /// A core announcement never creates, refreshes, moves or contests an unverified (Obico)
    /// presence, and the public unverified mark is never accepted as a commitment: each refusal
    /// is `forged_instance` and leaves the record exactly as it was.
    #[test]
    fn core_announce_never_touches_an_unverified_presence() {
        let config = ServerConfig::default();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let later = t0 + TimeDelta::milliseconds(500);
        let snapshot = |r: &NetworkRecord| serde_json::to_string(r).unwrap();

        // The mark as the commitment of a fresh, proven instance: no presence is created (it
        // would pass for an Obico device in the Obico routes).
        let mut marked = announce(1);
        marked.commitment = unverified_commitment();
        let mut record = NetworkRecord::default();
        assert_eq!(
            record.announce(t0, &config, &marked).unwrap_err(),
            Refusal::ForgedInstance
        );
        assert!(record.is_empty());

        // An unverified presence, as an Obico poll leaves it. Its id is here derived from a key
        // the test holds, the strongest announcer there could be: even a proven announcement
        // may not touch it.
        let agent = announce(2);
        record.presences.push(Presence {
            instance_id: agent.instance_id,
            private_ip: agent.private_ip,
            port: agent.port,
            info: agent.info.clone(),
            commitment: unverified_commitment(),
            expires_ms: t0.timestamp_millis() + 15_000,
            contested: false,
            link_requested: false,
            window_ends_ms: t0.timestamp_millis() + 600_000,
            extra: None,
            candidates: Vec::new(),
        });
        let before = snapshot(&record);
        let mut refresh = agent.clone();
        refresh.commitment = unverified_commitment();
        let mut moved = refresh.clone();
        moved.private_ip = IpAddr::from([192, 168, 1, 99]);
        let committed = agent.clone();
        for attempt in [&refresh, &moved, &committed] {
            assert_eq!(
                record.announce(later, &config, attempt).unwrap_err(),
                Refusal::ForgedInstance
            );
            assert_eq!(
                snapshot(&record),
                before,
                "a refused announce changes nothing"
            );
        }
        // Nor with a link pending for it: the queued message stays for the Obico poll.
        let link = LinkRequest::new(agent.instance_id, LocalSecret::from_bytes([9; 32]));
        let account = AccountId::new("alice").unwrap();
        let code = LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap();
        record.accept_link(
            t0,
            &config,
            link,
            account,
            None,
            code,
            t0 + TimeDelta::minutes(10),
        );
        let before = snapshot(&record);
        for attempt in [&refresh, &committed] {
            assert_eq!(
                record.announce(later, &config, attempt).unwrap_err(),
                Refusal::ForgedInstance
            );
            assert_eq!(snapshot(&record), before);
        }
        assert!(record.take_message(&agent.instance_id).is_some());

        // A verified agent announces as before beside it.
        record.announce(later, &config, &announce(3)).unwrap();
    }

    /// Discovery reads a record without pruning it (a store serves it from a plain read), so
    /// it must skip expired presences itself: they are neither shown nor counted toward the
    /// one-visible rule.
    #[test]
    fn discovery_skips_expired_presences_without_pruning() {
        let config = ServerConfig::default();
        let ttl = config.presence_ttl;
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let (a, b) = (announce(1), announce(2));
        let mut record = NetworkRecord::default();
        record.announce(t0, &config, &a).unwrap();
        let just_before = t0 + ttl - TimeDelta::milliseconds(1);
        assert_eq!(record.present(just_before), 1);
        assert_eq!(record.discover(just_before, &config).len(), 1);
        assert_eq!(record.present(t0 + ttl), 0);
        assert!(record.discover(t0 + ttl, &config).is_empty());
        assert_eq!(record.presences.len(), 1, "not pruned");

        // Two live agents: none shown (max_visible 1). Once the first lapses, the second is
        // shown, though the first is still in the record.
        let half = t0 + ttl / 2;
        record.announce(half, &config, &b).unwrap();
        assert_eq!(record.present(half), 2);
        assert!(record.discover(half, &config).is_empty());
        let shown = record.discover(t0 + ttl, &config);
        assert_eq!(record.presences.len(), 2, "not pruned");
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].instance_id, b.instance_id);
    }
    /// Signal "many accounts": the fifth distinct discoverer marks the network (default
    /// `max_accounts` 4); repeats do not count; the set stays bounded; the mark is sticky and
    /// lapses with the policy's `sticky`.
    #[test]
    fn many_accounts_signal_is_counted_bounded_and_sticky() {
        let config = ServerConfig::default();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut record = NetworkRecord::default();
        for tag in 0..4u64 {
            assert_eq!(record.note_discoverer(t0, &config, tag), None);
            assert_eq!(record.note_discoverer(t0, &config, tag), None, "a repeat");
        }
        assert!(record.shared_mark(t0).is_none());
        assert_eq!(
            record.note_discoverer(t0, &config, 4),
            Some(SharedSignal::ManyAccounts)
        );
        assert_eq!(record.shared_mark(t0), Some(SharedSignal::ManyAccounts));
        assert_eq!(
            record.hidden(t0, &config, None),
            Some(HiddenReason::SharedNetwork)
        );
        // Already marked: a further account extends the mark, reports nothing new.
        assert_eq!(record.note_discoverer(t0, &config, 5), None);
        for tag in 6..100u64 {
            record.note_discoverer(t0, &config, tag);
        }
        assert_eq!(
            record.ext().discoverers.len(),
            crate::server::MAX_DISCOVERERS
        );
        // Linking is refused while marked.
        let (id, secret) = (
            InstanceId::from_bytes([1; 16]),
            LocalSecret::from_bytes([1; 32]),
        );
        assert_eq!(
            record.check_link(t0, &config, &id, &secret),
            Err(Refusal::SharedNetwork)
        );
        // The mark and the discoverers lapse after ten minutes; the pruned record is empty.
        let after = t0 + TimeDelta::minutes(10);
        assert!(record.shared_mark(after).is_none());
        assert_eq!(record.expires_at(&config), Some(after));
        record.prune(after, &config);
        assert!(record.is_empty());
        // Windows apart, accounts do not add up.
        let mut record = NetworkRecord::default();
        for (n, tag) in (0..8u64).enumerate() {
            let at = t0 + TimeDelta::minutes(3 * n as i64);
            record.prune(at, &config);
            assert_eq!(record.note_discoverer(at, &config, tag), None);
        }
    }

    /// Signal "many subnets": a third private subnet among the present agents marks the network
    /// (default `max_subnets` 2), in the update that admits the announcement; two subnets (a
    /// main and a guest VLAN) do not.
    #[test]
    fn many_subnets_signal_is_judged_in_the_admitting_update() {
        let config = ServerConfig::default().max_visible(4);
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut record = NetworkRecord::default();
        let at = |n: u8, ip: [u8; 4]| {
            let mut a = announce(n);
            a.private_ip = IpAddr::from(ip);
            a
        };
        let main = record
            .announce(t0, &config, &at(1, [192, 168, 1, 10]))
            .unwrap();
        assert_eq!(main.visibility, Visibility::Visible);
        let same = record
            .announce(t0, &config, &at(2, [192, 168, 1, 11]))
            .unwrap();
        assert_eq!(same.judged, None);
        let guest = record
            .announce(t0, &config, &at(3, [192, 168, 2, 10]))
            .unwrap();
        assert_eq!(guest.judged, None);
        assert_eq!(record.present_subnets(t0), 2);
        let third = record
            .announce(t0, &config, &at(4, [10, 0, 0, 10]))
            .unwrap();
        assert_eq!(third.judged, Some(SharedSignal::ManySubnets));
        assert_eq!(
            third.visibility,
            Visibility::Hidden(HiddenReason::SharedNetwork)
        );
        assert!(
            record.discover(t0, &config).len() == 4,
            "discover itself is unchanged"
        );
        assert_eq!(
            record.hidden(t0, &config, None),
            Some(HiddenReason::SharedNetwork)
        );
        // Disabled, nothing is judged.
        let off = ServerConfig::default()
            .max_visible(4)
            .shared_network(crate::server::SharedNetworkPolicy::disabled());
        let mut record = NetworkRecord::default();
        for (n, ip) in [[192, 168, 1, 1], [10, 0, 0, 1], [172, 16, 0, 1]]
            .into_iter()
            .enumerate()
        {
            let judged = record
                .announce(t0, &off, &at(n as u8 + 10, ip))
                .unwrap()
                .judged;
            assert_eq!(judged, None);
        }
    }

    /// Too many agents: the one-visible rule says so in the reply (no count, no id), and the
    /// agent's visibility says it too.
    #[test]
    fn too_many_agents_is_a_hidden_reason() {
        let config = ServerConfig::default();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut record = NetworkRecord::default();
        record.announce(t0, &config, &announce(1)).unwrap();
        assert_eq!(record.hidden(t0, &config, None), None);
        let second = record.announce(t0, &config, &announce(2)).unwrap();
        assert_eq!(
            second.visibility,
            Visibility::Hidden(HiddenReason::TooManyAgents)
        );
        assert_eq!(
            record.hidden(t0, &config, None),
            Some(HiddenReason::TooManyAgents)
        );
        // An address signal outranks it.
        assert_eq!(
            record.hidden(t0, &config, Some(SharedSignal::CarrierNat)),
            Some(HiddenReason::SharedNetwork)
        );
    }

    /// Records written before revision 1.2 read as before; the new fields round-trip.
    #[test]
    fn shared_state_round_trips_and_old_records_still_read() {
        let config = ServerConfig::default();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut record = NetworkRecord::default();
        record.announce(t0, &config, &announce(1)).unwrap();
        let old = serde_json::to_string(&record).unwrap();
        assert!(
            !old.contains(r#""x""#),
            "no extras for a plain record: {old}"
        );
        let back: NetworkRecord = serde_json::from_str(&old).unwrap();
        assert!(back.shared_mark(t0).is_none());
        for tag in 0..5u64 {
            record.note_discoverer(t0, &config, tag);
        }
        let text = serde_json::to_string(&record).unwrap();
        let back: NetworkRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.shared_mark(t0), Some(SharedSignal::ManyAccounts));
        assert!(back.knows_discoverer(t0, 3));
        assert!(!text.contains("alice"));
    }
}
