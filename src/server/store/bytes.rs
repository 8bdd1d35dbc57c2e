//! [`MemoryBytes`]: a [`Store`] in one process's memory, the reference for the store contract.
//! It must not know the protocol: keys and values are opaque bytes.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Key, Store, StoreError, Write, MAX_WRITES};

/// A [`Store`] in memory: a map from keys to values under one lock. Every server instance of
/// one process that shares it (through an `Arc`) shares the records; its futures are ready at
/// their first poll. It is the reference the store suite is written against, and a store for
/// tests; a single server is faster on [`MemoryStore`](super::MemoryStore), which keeps
/// records as they are rather than sealed.
///
/// ```
/// use lanlink::server::MemoryBytes;
/// let store = MemoryBytes::default();
/// assert_eq!(store.len(), 0);
/// ```
#[derive(Debug, Default)]
pub struct MemoryBytes(Mutex<Values>);

/// Each key's value and expiry.
type Values = HashMap<Key, (Vec<u8>, DateTime<Utc>)>;

impl MemoryBytes {
    /// How many values are held (expired ones included until [`Store::purge`]).
    pub fn len(&self) -> usize {
        self.values().len()
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key held, in order (what a reader of the database sees: kinds and keyed hashes).
    pub fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.values().keys().cloned().collect();
        keys.sort();
        keys
    }

    fn values(&self) -> std::sync::MutexGuard<'_, Values> {
        // A panic elsewhere while holding the lock leaves whole values: keep serving them.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every method finishes before it returns.
#[async_trait]
impl Store for MemoryBytes {
    async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.values().get(key).map(|(value, _)| value.clone()))
    }

    async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
        if writes.is_empty() || writes.len() > MAX_WRITES {
            return Err(StoreError::Corrupt);
        }
        let mut values = self.values();
        let holds = writes.iter().all(|write| {
            values.get(write.key()).map(|(value, _)| value.as_slice()) == write.expected()
        });
        if !holds {
            return Ok(false);
        }
        for write in writes {
            match (write.value(), write.expires_at()) {
                (Some(value), Some(at)) => {
                    values.insert(write.key().clone(), (value.to_vec(), at));
                }
                _ => {
                    values.remove(write.key());
                }
            }
        }
        Ok(true)
    }

    async fn purge(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.values().retain(|_, (_, at)| *at > now);
        Ok(())
    }
}
