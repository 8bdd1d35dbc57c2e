//! Where the server's records live. This module must not decide anything about the protocol:
//! the records' pure functions do, and a store applies them.
//!
//! Two layers. A [`Store`] is what any database can hold: opaque keys and values of bytes,
//! read, and written with an all-or-nothing compare-and-swap. It knows nothing of the protocol:
//! a third party writes one for PostgreSQL, SQLite, DynamoDB or etcd in a page (see
//! `examples/sqlite_store/store.rs`), and checks it with the store suite
//! (`lanlink::conformance::store`, feature `conformance`). A [`Backend`] is what a
//! [`Server`](super::Server) runs on: the server's records and the atomic steps over them.
//! [`Records`] (feature `shared-store`) makes any `Store` a `Backend`, doing once, for every
//! store, what a shared store needs: keyed-hash key names, records encrypted at rest, the
//! read-apply-swap loop with its retries, and recognising its own write after a lost reply.
//! The in-memory [`MemoryStore`], the default, is a `Backend` of its own (one process: its
//! records are replaced in place under one lock, nothing to encrypt or name).

mod backend;
mod bytes;
#[cfg(feature = "obico-wire")]
pub(crate) mod printer;
#[cfg(feature = "shared-store")]
mod records;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub(crate) use self::backend::StoreRef;
pub use self::backend::{Backend, MemoryStore, StoreError};
#[doc(hidden)]
pub use self::backend::{CodeFn, CounterFn, NetworkFn, ReadFn};
pub use self::bytes::MemoryBytes;
#[cfg(all(feature = "shared-store", feature = "fuzz"))]
pub(crate) use self::records::fuzz as fuzz_records;
#[cfg(feature = "shared-store")]
pub use self::records::{Records, RecordsConfig, StoreKey};

/// The most writes one [`Store::swap`] carries (a network's record and its queued messages).
pub const MAX_WRITES: usize = 2;

/// The longest [`Key`], in bytes.
pub const MAX_KEY_LEN: usize = 64;

/// The name of one stored value: `kind:slot`, ASCII. `kind` is a short lowercase word (`net`,
/// `msg`, `code`, `ctr`); `slot` is lowercase hex (a keyed hash: it names no network and no
/// code). The keys of one [`Store::swap`] share their slot, so a store that shards by key (a
/// Redis Cluster, through a hash tag) keeps them on one shard.
///
/// ```
/// use lanlink::server::Key;
/// let key = Key::new("net", "0a1b2c").unwrap();
/// assert_eq!((key.as_str(), key.kind(), key.slot()), ("net:0a1b2c", "net", "0a1b2c"));
/// assert!(Key::new("NET", "0a").is_none() && Key::new("net", "xyz").is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    name: String,
    colon: usize,
}

impl Key {
    /// A key from its kind (1 to 8 of `a`-`z`) and slot (1 or more of `0`-`9`, `a`-`f`), at
    /// most [`MAX_KEY_LEN`] bytes in all; `None` otherwise.
    pub fn new(kind: &str, slot: &str) -> Option<Self> {
        let kind_ok = (1..=8).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_lowercase());
        let slot_ok = !slot.is_empty()
            && slot
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        (kind_ok && slot_ok && kind.len() + 1 + slot.len() <= MAX_KEY_LEN).then(|| Self {
            name: format!("{kind}:{slot}"),
            colon: kind.len(),
        })
    }

    /// The whole key, `kind:slot`.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// What the value is (`net`, `msg`, `code`, `ctr`).
    pub fn kind(&self) -> &str {
        &self.name[..self.colon]
    }

    /// The part shared by the keys that are written together.
    pub fn slot(&self) -> &str {
        &self.name[self.colon + 1..]
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.name)
    }
}

/// One write of a [`Store::swap`]: the value `key` must hold for the swap to apply, and what
/// it holds afterwards.
///
/// ```
/// use chrono::DateTime;
/// use lanlink::server::{Key, Write};
/// let key = Key::new("ctr", "ff").unwrap();
/// let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// let create = Write::new(&key, None, Some((b"v1", at)));
/// assert!(create.expected().is_none() && create.value() == Some(&b"v1"[..]));
/// let delete = Write::new(&key, Some(b"v1"), None);
/// assert!(delete.value().is_none() && delete.expires_at().is_none());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    key: &'a Key,
    expected: Option<&'a [u8]>,
    new: Option<(&'a [u8], DateTime<Utc>)>,
}

impl<'a> Write<'a> {
    /// A write of `key`: applies only if the key holds exactly `expected` (`None`: the key
    /// holds nothing); then the key holds `new`'s value until its expiry (`None`: deleted).
    pub fn new(
        key: &'a Key,
        expected: Option<&'a [u8]>,
        new: Option<(&'a [u8], DateTime<Utc>)>,
    ) -> Self {
        Self { key, expected, new }
    }

    /// The key written.
    pub fn key(&self) -> &'a Key {
        self.key
    }

    /// The value the key must hold (`None`: no value).
    pub fn expected(&self) -> Option<&'a [u8]> {
        self.expected
    }

    /// The value the key holds afterwards (`None`: deleted).
    pub fn value(&self) -> Option<&'a [u8]> {
        self.new.map(|(value, _)| value)
    }

    /// When the new value may be dropped (`None` for a delete). A store may drop it then or
    /// later (see [`Store::purge`]), never before.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.new.map(|(_, at)| at)
    }
}

/// Opaque keys and values of bytes, shared by every server instance that uses the same
/// database: what a database must offer for lanlink to keep its records there. Object safe.
///
/// The whole contract (checked by `lanlink::conformance::store`):
/// - [`load`](Self::load) returns the value last written at a key, or `None` when none was or
///   it was deleted. It may return a value past its expiry (the layer above ignores those).
/// - [`swap`](Self::swap) is one atomic step across every instance: all its writes apply, or
///   none. Each write applies only if its key holds exactly the expected bytes (values are
///   compared whole: every value the layer writes starts with 24 fresh random bytes, so equal
///   values are the same version). Concurrent swaps expecting the same value: at most one
///   applies.
/// - A value may be dropped at its expiry or later, never before, and only by
///   [`purge`](Self::purge) or by the database's own expiry.
/// - An error means nothing was written, except for [`StoreError::Unavailable`] from `swap`,
///   which may leave the swap applied (the reply was lost, or the call timed out): the layer
///   reads the key back and tells. A store that knows its call did not run (a refused
///   connection, an error answer) says [`StoreError::Refused`]: no reading back, and the
///   operation fails at once.
///
/// Values are at most 1 MiB; keys are at most [`MAX_KEY_LEN`] bytes of ASCII.
///
/// ```
/// use chrono::DateTime;
/// use lanlink::server::{Key, MemoryBytes, Store, Write};
/// # futures_lite(async {
/// let store = MemoryBytes::default();
/// let key = Key::new("code", "c0de").unwrap();
/// let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// assert!(store.swap(&[Write::new(&key, None, Some((b"one", at)))]).await.unwrap());
/// // A second create-if-absent loses: the key holds a value.
/// assert!(!store.swap(&[Write::new(&key, None, Some((b"two", at)))]).await.unwrap());
/// assert_eq!(store.load(&key).await.unwrap().as_deref(), Some(&b"one"[..]));
/// # });
/// # fn futures_lite(f: impl std::future::Future<Output = ()>) {
/// #     let mut f = std::pin::pin!(f);
/// #     let waker = std::task::Waker::noop();
/// #     assert!(f.as_mut().poll(&mut std::task::Context::from_waker(waker)).is_ready());
/// # }
/// ```
#[async_trait]
pub trait Store: Send + Sync {
    /// The value held at `key`.
    async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError>;

    /// The values held at `keys` (all of one slot), in order. The default loads one after the
    /// other; a store that can read them in one round trip overrides it. The values need not
    /// be one snapshot (a swap checks each against what it expects).
    async fn load_many(&self, keys: &[&Key]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.load(key).await?);
        }
        Ok(values)
    }

    /// Applies all of `writes` (1 to [`MAX_WRITES`], distinct keys of one slot) in one atomic
    /// step if every key holds its expected value: `Ok(true)`. Otherwise writes nothing:
    /// `Ok(false)`.
    async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError>;

    /// Drops the values whose expiry is at or before `now`. A database with its own expiry
    /// (Redis TTLs) has nothing to do.
    async fn purge(&self, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Waits before the `attempt`-th retry (from 1) of a swap that lost a race, or of a read
    /// after a lost reply, so that colliding writers spread out. The default does not wait (a
    /// store with no timer: in one process, there is no one to wait for); an async store
    /// sleeps on its runtime's timer (a few hundred microseconds, doubling).
    async fn pause(&self, attempt: u32) {
        let _ = attempt;
    }
}

/// A shared handle to a store is the store.
#[async_trait]
impl<T: Store + ?Sized> Store for std::sync::Arc<T> {
    async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).load(key).await
    }

    async fn load_many(&self, keys: &[&Key]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        (**self).load_many(keys).await
    }

    async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
        (**self).swap(writes).await
    }

    async fn purge(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        (**self).purge(now).await
    }

    async fn pause(&self, attempt: u32) {
        (**self).pause(attempt).await
    }
}
