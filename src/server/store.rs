//! The in-memory store: one [`NetworkRecord`] per public network and one [`CodeRecord`] per code
//! key, each read and written back as a whole.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::record::{CodeRecord, NetworkRecord};
use super::ServerConfig;
use crate::addr::PublicNetwork;
use crate::code::CodeKey;

/// A single-process store. Records are replaced whole, as a shared store would apply them with
/// one compare-and-swap each.
///
/// ```
/// use lanlink::server::MemoryStore;
/// let store = MemoryStore::default();
/// assert_eq!((store.networks(), store.codes()), (0, 0));
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    networks: HashMap<PublicNetwork, NetworkRecord>,
    codes: HashMap<CodeKey, CodeRecord>,
}

impl MemoryStore {
    /// The record of `network`, if any.
    pub fn network(&self, network: &PublicNetwork) -> Option<&NetworkRecord> {
        self.networks.get(network)
    }

    /// Replaces the record of `network` (an empty record is deleted).
    pub fn put_network(&mut self, network: PublicNetwork, record: NetworkRecord) {
        if record.is_empty() {
            self.networks.remove(&network);
        } else {
            self.networks.insert(network, record);
        }
    }

    /// The record of a code, if any.
    pub fn code(&self, key: &CodeKey) -> Option<&CodeRecord> {
        self.codes.get(key)
    }

    /// Replaces a code's record.
    pub fn put_code(&mut self, key: CodeKey, record: CodeRecord) {
        self.codes.insert(key, record);
    }

    /// Applies `f` to the record of `network`, pruned at `now`, in place, with one hash lookup.
    /// A missing record is created only if `create` (else `f` is not called and `None` comes
    /// back); a record left empty is deleted.
    pub(crate) fn update<R>(
        &mut self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        create: bool,
        f: impl FnOnce(&mut NetworkRecord) -> R,
    ) -> Option<R> {
        match self.networks.entry(network) {
            Entry::Occupied(mut entry) => {
                let record = entry.get_mut();
                record.prune(now, config);
                let result = f(record);
                if record.is_empty() {
                    entry.remove();
                }
                Some(result)
            }
            Entry::Vacant(entry) if create => {
                let mut record = NetworkRecord::default();
                let result = f(&mut record);
                if !record.is_empty() {
                    entry.insert(record);
                }
                Some(result)
            }
            Entry::Vacant(_) => None,
        }
    }

    /// The record of a code, for an operation that writes.
    pub(crate) fn code_mut(&mut self, key: &CodeKey) -> Option<&mut CodeRecord> {
        self.codes.get_mut(key)
    }

    /// How many network records are held.
    pub fn networks(&self) -> usize {
        self.networks.len()
    }

    /// How many code records are held.
    pub fn codes(&self) -> usize {
        self.codes.len()
    }

    /// Drops expired codes and prunes every network record, deleting empty ones.
    pub fn purge(&mut self, now: DateTime<Utc>, config: &ServerConfig) {
        self.codes.retain(|_, code| code.is_live(now));
        self.networks.retain(|_, record| {
            record.prune(now, config);
            !record.is_empty()
        });
    }
}
