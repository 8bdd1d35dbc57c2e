//! [`Backend`], what a [`Server`](crate::server::Server) runs on, and the in-memory
//! [`MemoryStore`].
//! A backend must not decide anything of the protocol: it applies the core's pure functions as they
//! are.
//!
//! One record per public network ([`NetworkRecord`]) and one per code ([`CodeRecord`]). Every
//! change is the core's pure function applied to a whole record, written back atomically: a
//! shared store loads the record, applies the function, and writes it back with one
//! compare-and-swap, retrying from a fresh load when another instance wrote first.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::addr::PublicNetwork;
use crate::code::CodeKey;
pub use crate::error::store_error::StoreError;
use crate::error::Refusal;
use crate::server::budget::{CounterKey, CounterRecord};
use crate::server::config::ServerConfig;
use crate::server::record::{CodeRecord, NetworkRecord};

impl From<StoreError> for Refusal {
    fn from(err: StoreError) -> Self {
        Refusal::Store(err)
    }
}

/// A function applied to a pruned network record. A store may call it more than once (each
/// time on a freshly loaded record, after another writer won a compare-and-swap); only the last
/// call's changes are kept, so it must leave its result where the caller reads it afterwards.
pub type NetworkFn<'a> = dyn FnMut(&mut NetworkRecord) + Send + 'a;

/// A function given a network record to read (see [`Backend::read_network`]).
pub type ReadFn<'a> = dyn FnMut(&NetworkRecord) + Send + 'a;

/// A function applied to a live code record; see [`NetworkFn`].
pub type CodeFn<'a> = dyn FnMut(&mut CodeRecord) + Send + 'a;

/// A function applied to a counter record (a guessing budget or a mint quota); see
/// [`NetworkFn`].
pub type CounterFn<'a> = dyn FnMut(&mut CounterRecord) + Send + 'a;

/// What a [`Server`](crate::server::Server) runs on: the in-memory [`MemoryStore`] (one
/// process, the default), `Records` over any
/// [`Store`](crate::server::Store) (feature `shared-store`: shared by many instances), the Redis
/// store (feature `redis`), or an `Arc` of any of them. Object safe.
///
/// Its methods are the crate's own (hidden, not covered by semver): each applies one of the
/// core's functions to a stored record in one atomic step, and their records change as the
/// protocol does. A database joins through [`Store`](crate::server::Store) and `Records`, never
/// seeing a record.
///
/// ```
/// use std::sync::Arc;
/// use lanlink::server::{Backend, Events, MemoryStore, Server, ServerConfig};
/// // Several servers over one backend act as one.
/// let backend: Arc<dyn Backend> = Arc::new(MemoryStore::default());
/// let a = Server::with_store(ServerConfig::default(), backend.clone(), Events::discard()).unwrap();
/// let b = Server::with_store(ServerConfig::default(), backend, Events::discard()).unwrap();
/// # drop((a, b));
/// ```
#[async_trait]
pub trait Backend: Send + Sync {
    /// Applies `f` to the record of `network`, pruned at `now`, and writes the result back
    /// atomically (deleting a record left empty, and expiring it with the record's own
    /// [`expires_at`](NetworkRecord::expires_at)). A missing record is created empty only if
    /// `create`; otherwise `f` is not called and `Ok(false)` comes back.
    #[doc(hidden)]
    async fn update_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        create: bool,
        f: &mut NetworkFn<'_>,
    ) -> Result<bool, StoreError>;

    /// Gives the record of `network` to `f` to read, writing nothing; `Ok(false)` (and `f` not
    /// called) when there is none. The record may hold entries that expired before `now`
    /// (readers such as [`NetworkRecord::discover`] skip them).
    ///
    /// The default runs [`update_network`](Self::update_network) without creating; a store
    /// overrides it to serve reads (discovery, the most frequent request) without a write.
    #[doc(hidden)]
    async fn read_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        f: &mut ReadFn<'_>,
    ) -> Result<bool, StoreError> {
        self.update_network(network, now, config, false, &mut |record| f(record))
            .await
    }

    /// Writes a new code record unless a live one holds `key` (`Ok(false)` then). It expires at
    /// the record's `expires_at`.
    #[doc(hidden)]
    async fn create_code(
        &self,
        key: &CodeKey,
        record: &CodeRecord,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Applies `f` to the live record of `key` and writes it back atomically; `Ok(false)` (and
    /// `f` not called) when there is no live record.
    #[doc(hidden)]
    async fn update_code(
        &self,
        key: &CodeKey,
        now: DateTime<Utc>,
        f: &mut CodeFn<'_>,
    ) -> Result<bool, StoreError>;

    /// Deletes a code record (if any).
    #[doc(hidden)]
    async fn delete_code(&self, key: &CodeKey) -> Result<(), StoreError>;

    /// Applies `f` to the counter record of `key`, pruned at `now` (a missing one is given
    /// empty), and writes it back atomically: deleted when left empty, else expiring at its
    /// [`expires_ms`](CounterRecord::expires_ms). This is the step that admits a guess (see
    /// [`budget`](crate::server::budget)): it must be atomic across every instance sharing the store,
    /// or concurrent guesses get checked past their budget.
    #[doc(hidden)]
    async fn update_counter(
        &self,
        key: &CounterKey,
        now: DateTime<Utc>,
        f: &mut CounterFn<'_>,
    ) -> Result<(), StoreError>;

    /// Drops what has expired at `now`. A store whose records expire by themselves (Redis TTLs)
    /// has nothing to do.
    #[doc(hidden)]
    async fn purge(&self, now: DateTime<Utc>, config: &ServerConfig) -> Result<(), StoreError>;

    /// This backend as the in-memory store, if it is one: a server then calls the store's
    /// methods directly (they finish at once), with no future to allocate and poll. Any other
    /// backend keeps the default, `None`.
    #[doc(hidden)]
    fn in_memory(&self) -> Option<&MemoryStore> {
        None
    }
}

/// A single-process store: the default store of a [`Server`](crate::server::Server). Records are
/// replaced whole under one lock, as a shared store would apply them with one compare-and-swap
/// each; its futures are ready at their first poll.
///
/// ```
/// use lanlink::server::MemoryStore;
/// let store = MemoryStore::default();
/// assert_eq!((store.networks(), store.codes()), (0, 0));
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<MemoryRecords>);

/// The records of a [`MemoryStore`], under its lock.
#[derive(Debug, Default)]
pub(crate) struct MemoryRecords {
    /// Boxed: a hash table keeps up to twice its entries' room free, so an entry is a key and a
    /// pointer (the record itself, about 190 bytes, is allocated once per network).
    networks: HashMap<PublicNetwork, Box<NetworkRecord>>,
    codes: HashMap<CodeKey, CodeRecord>,
    counters: HashMap<CounterKey, CounterRecord>,
}

impl MemoryStore {
    fn records(&self) -> std::sync::MutexGuard<'_, MemoryRecords> {
        crate::lock_unpoisoned(&self.0)
    }

    /// A copy of the record of `network`, if any (for inspection and tests).
    #[doc(hidden)]
    pub fn network(&self, network: &PublicNetwork) -> Option<NetworkRecord> {
        self.records()
            .networks
            .get(network)
            .map(|record| (**record).clone())
    }

    /// Replaces the record of `network` (an empty record is deleted).
    #[doc(hidden)]
    pub fn put_network(&self, network: PublicNetwork, record: NetworkRecord) {
        let mut records = self.records();
        if record.is_empty() {
            records.networks.remove(&network);
        } else {
            records.networks.insert(network, Box::new(record));
        }
    }

    /// A copy of the record of a code, if any.
    #[doc(hidden)]
    pub fn code(&self, key: &CodeKey) -> Option<CodeRecord> {
        self.records().codes.get(key).cloned()
    }

    /// Replaces a code's record.
    #[doc(hidden)]
    pub fn put_code(&self, key: CodeKey, record: CodeRecord) {
        self.records().codes.insert(key, record);
    }

    /// A copy of the counter record of `key`, if any (it may hold expired charges).
    #[doc(hidden)]
    pub fn counter(&self, key: &CounterKey) -> Option<CounterRecord> {
        self.records().counters.get(key).cloned()
    }

    /// How many wrong guesses from `network` are charged at its own address at `now` (its
    /// finest budget level).
    ///
    /// ```
    /// use lanlink::server::MemoryStore;
    /// let network = lanlink::PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// assert_eq!(MemoryStore::default().failures(&network, chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())), 0);
    /// ```
    pub fn failures(&self, network: &PublicNetwork, now: DateTime<Utc>) -> u64 {
        self.records()
            .counters
            .get(&CounterKey::network(network))
            .map_or(0, |record| record.live(now.timestamp_millis()))
    }

    /// Whether `network`'s own address is locked out at `now`.
    pub fn is_locked(&self, network: &PublicNetwork, now: DateTime<Utc>) -> bool {
        self.records()
            .counters
            .get(&CounterKey::network(network))
            .is_some_and(|record| record.is_locked(now.timestamp_millis()))
    }

    /// How many counter records are held.
    pub fn counters(&self) -> usize {
        self.records().counters.len()
    }

    /// How many network records are held.
    pub fn networks(&self) -> usize {
        self.records().networks.len()
    }

    /// How many code records are held.
    pub fn codes(&self) -> usize {
        self.records().codes.len()
    }
}

impl MemoryRecords {
    /// Applies `f` to the record of `network`, pruned at `now`, in place, with one hash lookup.
    /// A missing record is created only if `create` (else `f` is not called and `None` comes
    /// back); a record left empty is deleted.
    #[inline]
    fn update<R>(
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
                let mut record = Box::<NetworkRecord>::default();
                let result = f(&mut record);
                if !record.is_empty() {
                    entry.insert(record);
                }
                Some(result)
            }
            Entry::Vacant(_) => None,
        }
    }

    /// Gives the record of `network` (not pruned) to `f`; `false` when there is none.
    fn read(&self, network: &PublicNetwork, f: impl FnOnce(&NetworkRecord)) -> bool {
        self.networks.get(network).map(|record| f(record)).is_some()
    }

    /// Inserts a code record unless a live one holds `key`.
    fn create_code(&mut self, key: &CodeKey, record: &CodeRecord, now: DateTime<Utc>) -> bool {
        match self.codes.entry(*key) {
            Entry::Occupied(entry) if entry.get().is_live(now) => false,
            Entry::Occupied(mut entry) => {
                entry.insert(record.clone());
                true
            }
            Entry::Vacant(entry) => {
                entry.insert(record.clone());
                true
            }
        }
    }

    /// Applies `f` to the live record of `key`.
    fn update_code(&mut self, key: &CodeKey, now: DateTime<Utc>, f: &mut CodeFn<'_>) -> bool {
        match self.codes.get_mut(key) {
            Some(record) if record.is_live(now) => {
                f(record);
                true
            }
            _ => false,
        }
    }

    /// Applies `f` to the counter of `key`, pruned at `now`; an empty one is deleted.
    fn update_counter(&mut self, key: &CounterKey, now: DateTime<Utc>, f: &mut CounterFn<'_>) {
        let now_ms = now.timestamp_millis();
        match self.counters.get_mut(key) {
            Some(record) => {
                record.prune(now_ms);
                f(record);
                if record.is_empty() {
                    self.counters.remove(key);
                }
            }
            None => {
                let mut record = CounterRecord::default();
                f(&mut record);
                if !record.is_empty() {
                    self.counters.insert(key.clone(), record);
                }
            }
        }
    }

    /// Drops expired codes and prunes every network and counter record, deleting empty ones.
    fn purge(&mut self, now: DateTime<Utc>, config: &ServerConfig) {
        self.codes.retain(|_, code| code.is_live(now));
        let now_ms = now.timestamp_millis();
        self.counters.retain(|_, record| {
            record.prune(now_ms);
            !record.is_empty()
        });
        self.networks.retain(|_, record| {
            record.prune(now, config);
            !record.is_empty()
        });
    }
}

/// The in-memory store's network calls, each finished when it returns: its [`Backend`] methods
/// are these behind futures ready at their first poll, and a server over it calls these directly
/// ([`Backend::in_memory`]).
impl MemoryStore {
    fn update_network_now(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        create: bool,
        f: &mut NetworkFn<'_>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .records()
            .update(network, now, config, create, f)
            .is_some())
    }

    fn read_network_now(
        &self,
        network: PublicNetwork,
        f: &mut ReadFn<'_>,
    ) -> Result<bool, StoreError> {
        Ok(self.records().read(&network, f))
    }
}

/// Every method finishes before it returns: the futures are ready at their first poll.
#[async_trait]
impl Backend for MemoryStore {
    async fn update_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        create: bool,
        f: &mut NetworkFn<'_>,
    ) -> Result<bool, StoreError> {
        self.update_network_now(network, now, config, create, f)
    }

    async fn read_network(
        &self,
        network: PublicNetwork,
        _now: DateTime<Utc>,
        _config: &ServerConfig,
        f: &mut ReadFn<'_>,
    ) -> Result<bool, StoreError> {
        self.read_network_now(network, f)
    }

    async fn create_code(
        &self,
        key: &CodeKey,
        record: &CodeRecord,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.records().create_code(key, record, now))
    }

    async fn update_code(
        &self,
        key: &CodeKey,
        now: DateTime<Utc>,
        f: &mut CodeFn<'_>,
    ) -> Result<bool, StoreError> {
        Ok(self.records().update_code(key, now, f))
    }

    async fn delete_code(&self, key: &CodeKey) -> Result<(), StoreError> {
        self.records().codes.remove(key);
        Ok(())
    }

    async fn update_counter(
        &self,
        key: &CounterKey,
        now: DateTime<Utc>,
        f: &mut CounterFn<'_>,
    ) -> Result<(), StoreError> {
        self.records().update_counter(key, now, f);
        Ok(())
    }

    async fn purge(&self, now: DateTime<Utc>, config: &ServerConfig) -> Result<(), StoreError> {
        self.records().purge(now, config);
        Ok(())
    }

    fn in_memory(&self) -> Option<&MemoryStore> {
        Some(self)
    }
}

/// A shared handle to a store is the store (several servers, or a server and a tool, over one).
#[async_trait]
impl<T: Backend + ?Sized> Backend for std::sync::Arc<T> {
    async fn update_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        create: bool,
        f: &mut NetworkFn<'_>,
    ) -> Result<bool, StoreError> {
        (**self)
            .update_network(network, now, config, create, f)
            .await
    }

    async fn read_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        f: &mut ReadFn<'_>,
    ) -> Result<bool, StoreError> {
        (**self).read_network(network, now, config, f).await
    }

    async fn create_code(
        &self,
        key: &CodeKey,
        record: &CodeRecord,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        (**self).create_code(key, record, now).await
    }

    async fn update_code(
        &self,
        key: &CodeKey,
        now: DateTime<Utc>,
        f: &mut CodeFn<'_>,
    ) -> Result<bool, StoreError> {
        (**self).update_code(key, now, f).await
    }

    async fn delete_code(&self, key: &CodeKey) -> Result<(), StoreError> {
        (**self).delete_code(key).await
    }

    async fn update_counter(
        &self,
        key: &CounterKey,
        now: DateTime<Utc>,
        f: &mut CounterFn<'_>,
    ) -> Result<(), StoreError> {
        (**self).update_counter(key, now, f).await
    }

    async fn purge(&self, now: DateTime<Utc>, config: &ServerConfig) -> Result<(), StoreError> {
        (**self).purge(now, config).await
    }

    fn in_memory(&self) -> Option<&MemoryStore> {
        (**self).in_memory()
    }
}

/// How an operation reaches its backend: a network record of the in-memory store directly (its
/// calls finish before they return, with nothing boxed), any other backend, and every other call,
/// through the backend's futures. The same names and arguments as [`Backend`]'s methods.
#[derive(Clone, Copy)]
pub(crate) struct StoreRef<'a> {
    backend: &'a dyn Backend,
    memory: Option<&'a MemoryStore>,
}

/// A store call: finished already (the in-memory store), or a backend's future.
pub(crate) enum StoreCall<'a, T> {
    Done(std::future::Ready<T>),
    Pending(std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>),
}

impl<T> std::future::Future for StoreCall<'_, T> {
    type Output = T;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        match self.get_mut() {
            StoreCall::Done(done) => std::pin::Pin::new(done).poll(cx),
            StoreCall::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl<'a> StoreRef<'a> {
    pub(crate) fn new(backend: &'a dyn Backend) -> Self {
        Self {
            memory: backend.in_memory(),
            backend,
        }
    }

    pub(crate) fn update_network<'b>(
        self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &'b ServerConfig,
        create: bool,
        f: &'b mut NetworkFn<'_>,
    ) -> StoreCall<'b, Result<bool, StoreError>>
    where
        'a: 'b,
    {
        match self.memory {
            Some(memory) => StoreCall::Done(std::future::ready(
                memory.update_network_now(network, now, config, create, f),
            )),
            None => {
                StoreCall::Pending(self.backend.update_network(network, now, config, create, f))
            }
        }
    }

    pub(crate) fn read_network<'b>(
        self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &'b ServerConfig,
        f: &'b mut ReadFn<'_>,
    ) -> StoreCall<'b, Result<bool, StoreError>>
    where
        'a: 'b,
    {
        match self.memory {
            Some(memory) => {
                StoreCall::Done(std::future::ready(memory.read_network_now(network, f)))
            }
            None => StoreCall::Pending(self.backend.read_network(network, now, config, f)),
        }
    }
}

/// Every other store call goes to the backend's own method.
impl<'a> std::ops::Deref for StoreRef<'a> {
    type Target = dyn Backend + 'a;

    fn deref(&self) -> &Self::Target {
        self.backend
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::Arc;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    fn home() -> PublicNetwork {
        PublicNetwork::from_ip("203.0.113.7".parse().expect("ip"), 64)
    }

    /// Whether `call` finished without a future (the direct path), and its output.
    fn direct<T>(call: StoreCall<'_, T>) -> (bool, T) {
        let done = matches!(call, StoreCall::Done(_));
        let mut call = std::pin::pin!(call);
        let waker = std::task::Waker::noop();
        match call
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Ready(out) => (done, out),
            std::task::Poll::Pending => panic!("a store call over memory was not ready"),
        }
    }

    #[test]
    fn the_memory_store_is_called_directly_whatever_holds_it() {
        let config = ServerConfig::default();
        let memory = MemoryStore::default();
        let shared: Arc<dyn Backend> = Arc::new(MemoryStore::default());
        let arc = Arc::new(MemoryStore::default());
        for backend in [&memory as &dyn Backend, &shared, &arc] {
            let store = StoreRef::new(backend);
            let (done, created) =
                direct(
                    store.update_network(home(), now(), &config, true, &mut |record| {
                        record.mark_used(
                            now(),
                            &ServerConfig::default(),
                            crate::InstanceId::from_bytes([1; 16]),
                        )
                    }),
                );
            assert!(done, "the in-memory store answers without a future");
            assert_eq!(created, Ok(true));
            let mut used = false;
            let (done, read) = direct(store.read_network(home(), now(), &config, &mut |record| {
                used = !record.used().is_empty();
            }));
            assert!(
                done && read == Ok(true) && used,
                "the write is what the read sees"
            );
        }
    }

    #[cfg(feature = "shared-store")]
    #[test]
    fn any_other_backend_goes_through_its_futures() {
        use crate::server::store::{MemoryBytes, Records, RecordsConfig, StoreKey};
        let config = ServerConfig::default();
        let records = Records::new(
            MemoryBytes::default(),
            RecordsConfig::new(StoreKey::from_bytes([7; 32])),
        );
        let store = StoreRef::new(&records);
        let (done, created) =
            direct(
                store.update_network(home(), now(), &config, true, &mut |record| {
                    record.mark_used(
                        now(),
                        &ServerConfig::default(),
                        crate::InstanceId::from_bytes([1; 16]),
                    )
                }),
            );
        assert!(
            !done,
            "a backend that is not the in-memory store keeps its own futures"
        );
        assert_eq!(created, Ok(true));
    }
}
