//! Shared-network detection over a network's record.
//! Pure: it must not do I/O or read a clock, and must not keep an account id (only the short
//! per-network hashes of [`crate::server::shared`]).

use chrono::{DateTime, Utc};
use smallvec::SmallVec;

use crate::id::InstanceId;
use crate::server::config::ServerConfig;
use crate::server::shared::{subnet_of, SharedSignal};
use crate::wire::{HiddenReason, Visibility};

use super::super::later_ms;
use super::*;

/// Shared-network detection over the record (see [`crate::server::shared`]): pure functions of the
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
    /// bounded by [`MAX_DISCOVERERS`](crate::server::shared::MAX_DISCOVERERS), dropping the entry that
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
        while discoverers.len() >= crate::server::shared::MAX_DISCOVERERS {
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
    pub(super) fn judge_subnets(
        &mut self,
        now: DateTime<Utc>,
        config: &ServerConfig,
    ) -> Option<SharedSignal> {
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
