//! A [`Backend`] in Redis (or Valkey), shared by every server instance that uses the same Redis,
//! prefix and [`StoreKey`] (feature `redis`).
//!
//! **Records.** One Redis string per public network and one per code, each a whole record
//! applied by the core's pure function and written back with one compare-and-swap: a Lua script
//! that writes only if the value still carries the version (the value's random nonce) that was
//! read, else the store reads again and retries (bounded by
//! [`RedisStoreConfig::max_attempts`], with jittered back-off; then [`StoreError::Contention`]).
//! An operation that changes nothing writes nothing: reads take one round trip. A write takes
//! two (`MGET` or `GET`, then `EVALSHA`), or one when this instance wrote or read the record
//! recently: it remembers the last sealed value of up to [`RedisStoreConfig::version_cache`]
//! records and swaps against that version directly; a stale one is refused with the current
//! value in the reply, so the retry needs no read either. (A result that writes nothing is
//! never taken from a remembered value: it is recomputed from a fresh read.)
//!
//! **Expiry.** Every write sets the key's expiry (`PXAT`) to the record's own expiry — the
//! latest of its presences, links, failures, lockout and used ids
//! ([`NetworkRecord::expires_at`](super::NetworkRecord::expires_at)), or the code's
//! `expires_at` — so nothing outlives its window even if every server dies, and no purge is
//! needed. The messages queued for a network's agents (each holding a secret and a code) are
//! kept under a key of their own, written in the same script and expiring with the last message
//! (60 s by default): an undelivered secret leaves Redis on time even though its network's record
//! lives on (for 24 h, for its used instance ids), and a pending link whose message has lapsed
//! is over, as in memory.
//!
//! **At rest.** Key names carry no network address and no code: they are keyed hashes
//! (HMAC-SHA-256 under a key derived from the [`StoreKey`]). Values are the records encrypted
//! with XChaCha20-Poly1305 under another derived key, with the key name as associated data (a
//! value copied to another key does not decrypt). A reader of Redis learns how many networks and
//! codes there are and when they expire, and nothing that lets it link a device: see
//! `SECURITY.md`. Auth tokens are never stored (the embedder keeps their digests).
//!
//! **Keys.** `{prefix}:net:{<hash>}`, `{prefix}:msg:{<hash>}` (the same hash: one network's
//! keys share a Redis Cluster slot, through the hash tag in braces), `{prefix}:code:{<hash>}`
//! and `{prefix}:ctr:{<hash>}` (one per guessing budget or mint quota, see
//! [`budget`](super::budget): a budget level of an address prefix, the global budget of a code
//! space, an account's live codes).
//! Every operation touches one slot — one network's keys, one code's key or one counter's key —
//! and its script gets them in `KEYS`, so the same store runs on one node (Redis or Valkey,
//! standalone or behind a proxy: [`RedisStoreConfig::new`]) or natively on a Redis Cluster or
//! Valkey cluster ([`RedisStoreConfig::cluster`], the `redis` crate's async cluster client),
//! each script running on the master of its slot. No script spans two counters: each budget
//! is its own key and slot, admitted atomically there. See `README.md`.
//!
//! **Failover.** Redis replicates asynchronously: a write acknowledged by a master that fails
//! before its replica copied it is lost when the replica is promoted. Security-critical writes
//! (budget counters, codes' redeemed marks) can wait for replicas
//! ([`RedisStoreConfig::wait_replicas`]); what each record risks is in `SECURITY.md`.
//!
//! **Faults.** The connection reconnects by itself; while Redis is down every operation fails
//! with [`StoreError::Unavailable`] (HTTP `503 store_unavailable`) and changes nothing.
//!
//! **Lost replies.** A write whose reply is lost (the connection fails or times out after the
//! command may have reached Redis) is resolved, not guessed at: every value names the last
//! versions it descends from (its lineage: the first 8 bytes of the nonces of up to 8 values
//! it replaced, sealed with the record), and each version is replaced by exactly one write, so
//! reading the key back tells whether this write applied — the key holds it or a value
//! descended from it — or not — the key holds the version read, or a value descended from that
//! version through another write. Applied, the operation returns as if the reply had come (its
//! function is not applied again); not applied, it retries from a fresh read like any lost
//! race. The scripts are idempotent too: the same script sent again after it applied finds its
//! own nonce and answers "written" without writing. Reads and `DEL` are simply sent again. So a
//! lost reply never charges a guess twice, never loses a charge or a refund, and never leaves a
//! code marked used by an operation that reported failure (`tests/redis_faults.rs` drops the
//! reply of every command of the link flow and of wrong guesses in turn). Only when the key
//! cannot be read back at all (Redis refusing connections or answering errors, or not answering
//! within 0.6 s), or more
//! than 8 writes replaced the value meanwhile, does the operation fail with
//! [`StoreError::Unavailable`] with its write possibly applied: see `SECURITY.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use lanlink::server::redis::{RedisStore, RedisStoreConfig, StoreKey};
//! use lanlink::server::{Events, Server, ServerConfig};
//! let key = StoreKey::from_hex(&std::env::var("LANLINK_STORE_KEY")?).ok_or("bad key")?;
//! let store = RedisStore::connect(RedisStoreConfig::new("redis://127.0.0.1:6379", key)).await?;
//! let events = Events::sink(|event| println!("{}", serde_json::to_string(&event).unwrap()));
//! let service = Arc::new(Server::with_store(ServerConfig::default(), store, events)?);
//! # drop(service);
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "obico-wire")]
mod tokens;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::ConnectionLike;
use ::redis::aio::ConnectionManager;
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{AsyncCommands, Client, Cmd, Pipeline, RedisError, RedisFuture, Script, Value};
use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::budget::{CounterKey, CounterRecord};
use super::record::{later, CodeRecord, NetworkRecord, PendingMessage};
use super::store::{
    Backend, CodeFn, CounterFn, Key, NetworkFn, ReadFn, Store, StoreError, Write, MAX_WRITES,
};
use super::{ServerConfig, MAX_TTL};
use crate::addr::PublicNetwork;
use crate::code::CodeKey;
use crate::id::InstanceId;

/// Bytes of the nonce that starts every stored value (and is its version).
const NONCE_LEN: usize = 24;

/// The largest stored value read back; anything larger is refused as corrupt.
const MAX_VALUE_BYTES: usize = 1 << 20;

/// How many ancestor versions a stored value names (see [`Lineage`]).
const LINEAGE_LEN: usize = 8;

/// Bytes of an ancestor's tag: the first bytes of its nonce.
const TAG_LEN: usize = 8;

/// How many times a read is sent when its reply is lost.
const READ_ATTEMPTS: u32 = 3;

/// How many reads a store makes to learn whether a write whose reply was lost applied.
const READ_BACK_ATTEMPTS: u32 = 12;

/// How long a store keeps reading back a write whose reply was lost.
const READ_BACK_WINDOW: Duration = Duration::from_millis(600);

/// The versions a stored value descends from, newest first: the tags of the values it replaced
/// (each write replaces exactly one version, since the compare-and-swap compares it). Sealed
/// inside the value with the record, so a writer whose reply was lost can read the key back
/// and tell whether its write applied, even after later writers built on it.
type Lineage = Vec<[u8; TAG_LEN]>;

/// Whether a write whose reply was lost applied, as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The key holds this write's value, or a value descended from it.
    Applied,
    /// The key still holds the version read, or a value descended from it that is not this
    /// write's: another writer replaced that version, so this write did not apply.
    NotApplied,
    /// The read-back could not tell (Redis unreachable throughout, or more than
    /// [`LINEAGE_LEN`] writes since).
    Unknown,
}

/// Compare-and-swap: writes `ARGV[2]` (expiring at `ARGV[3]`, Unix ms) or deletes the key when
/// `ARGV[2]` is empty, only if the key's value still starts with the version `ARGV[1]` (empty:
/// the key must not exist). Returns 1 when written; when another writer came first, the value
/// now held (nil when none), so that the caller can tell whether it descends from this write.
/// Idempotent: the same call sent again after it applied (a client or proxy resending a command
/// whose reply was lost) finds its own nonce in place and returns 1 without writing.
const CAS_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ver = string.sub(cur, 1, 24)
  if ARGV[2] ~= '' and ver == string.sub(ARGV[2], 1, 24) then return 1 end
  if ver ~= ARGV[1] then return cur end
elseif ARGV[1] ~= '' then
  return false
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return 1
";

/// Compare-and-swap of a network record (`KEYS[1]`, version `ARGV[1]`, value `ARGV[2]` expiring
/// at `ARGV[3]`) together with its queued messages (`KEYS[2]`, value `ARGV[4]` expiring at
/// `ARGV[5]`). An empty value deletes the key. Both keys share a hash tag (one cluster slot).
/// Replies and is idempotent on resend as [`CAS_SCRIPT`].
const NETWORK_CAS_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ver = string.sub(cur, 1, 24)
  if ARGV[2] ~= '' and ver == string.sub(ARGV[2], 1, 24) then return 1 end
  if ver ~= ARGV[1] then return cur end
elseif ARGV[1] ~= '' then
  return false
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
if ARGV[4] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[4], 'PXAT', ARGV[5])
end
return 1
";

/// [`Store::swap`]: 1 to [`MAX_WRITES`] keys (`KEYS`, of one slot) in one atomic step. Five
/// arguments per key, in order: `1` if it must hold a value, `0` if it must hold none; that
/// value; `1` if it holds a value afterwards, `0` if it is deleted; that value; its expiry (Unix
/// ms, `SET ... PXAT`). Returns 1 when applied, 0 when a key did not hold what was expected
/// (then nothing is written). Idempotent on resend: when a key already holds exactly the value
/// this swap writes (every value the layer above writes starts with 24 fresh random bytes, so
/// only this swap wrote it), the swap applied before — a client or cluster client resent the
/// command after its reply was lost — and it answers 1 without writing.
const SWAP_SCRIPT: &str = r"
local n = #KEYS
local held = {}
local holds = true
for i = 1, n do
  local at = (i - 1) * 5
  local cur = redis.call('GET', KEYS[i])
  held[i] = cur
  if ARGV[at + 1] == '1' then
    if cur ~= ARGV[at + 2] then holds = false end
  elseif cur then
    holds = false
  end
end
if not holds then
  for i = 1, n do
    local at = (i - 1) * 5
    if ARGV[at + 3] == '1' and held[i] == ARGV[at + 4] then return 1 end
  end
  return 0
end
for i = 1, n do
  local at = (i - 1) * 5
  if ARGV[at + 3] == '1' then
    redis.call('SET', KEYS[i], ARGV[at + 4], 'PXAT', ARGV[at + 5])
  else
    redis.call('DEL', KEYS[i])
  end
end
return 1
";

/// What a compare-and-swap did.
#[derive(Debug)]
enum Swap {
    /// The value was written (or the key deleted).
    Written,
    /// Another writer came first. The value it left, when the reply carried it (`Some(None)`:
    /// the key is gone), so that the next attempt needs no read; `None`: read it.
    Lost(Option<Option<Vec<u8>>>),
}

/// A value this instance wrote or read last (sealed, as stored: no plaintext is kept), with the
/// network record's queued messages; `None`: the key was absent.
type CachedValue = Option<(Vec<u8>, Option<Vec<u8>>)>;

/// The values this instance wrote or read last, by key, so that the next update of a record
/// can start from it without a read: one round trip (the compare-and-swap) when no other writer
/// came in between, and when one did, the script's reply carries the value it left. Bounded,
/// oldest entries first out.
#[derive(Default)]
struct VersionCache {
    entries: std::collections::HashMap<String, CachedValue>,
    order: std::collections::VecDeque<String>,
    capacity: usize,
}

impl VersionCache {
    fn get(&self, key: &str) -> Option<CachedValue> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: &str, value: CachedValue) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(key.to_owned(), value).is_none() {
            self.order.push_back(key.to_owned());
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }

    fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// The messages queued in one network record, stored apart under their own expiry.
type Messages = Vec<(InstanceId, PendingMessage)>;

/// The server key for data at rest: 32 random bytes that every instance sharing the store must
/// be given. Redacted in `Debug`, zeroized on drop.
#[derive(Clone)]
pub struct StoreKey(Zeroizing<[u8; 32]>);

impl StoreKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Parses 64 hex characters.
    ///
    /// ```
    /// use lanlink::server::redis::StoreKey;
    /// assert!(StoreKey::from_hex(&"ab".repeat(32)).is_some());
    /// assert!(StoreKey::from_hex("abcd").is_none());
    /// ```
    pub fn from_hex(text: &str) -> Option<Self> {
        crate::secret::decode_hex_32(text.trim()).map(Self::from_bytes)
    }

    /// A fresh key from `rng` (use [`crate::os_rng()`]).
    pub fn generate<R: CryptoRng + RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    /// The key as 64 hex characters (to hand to another instance; treat as a secret).
    pub fn to_hex(&self) -> Zeroizing<String> {
        crate::secret::encode_hex(self.0.as_ref())
    }

    /// A subkey for one purpose: HMAC-SHA-256(key, label).
    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(label);
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(<redacted>)")
    }
}

/// How to reach Redis and lay out the keys.
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    url: String,
    cluster: Vec<String>,
    address_map: Vec<(String, u16, String, u16)>,
    prefix: String,
    key: StoreKey,
    max_attempts: u32,
    response_timeout: Duration,
    connection_timeout: Duration,
    wait_replicas: u32,
    wait_timeout: Duration,
    version_cache: usize,
}

impl RedisStoreConfig {
    /// Redis at `url` (`redis://host:port/db`, `rediss://` for TLS when the crate's TLS feature
    /// is on), prefix `lanlink`, at most 64 compare-and-swap attempts per operation, 2 s response
    /// and connection timeouts.
    pub fn new(url: impl Into<String>, key: StoreKey) -> Self {
        Self {
            url: url.into(),
            cluster: Vec::new(),
            address_map: Vec::new(),
            prefix: "lanlink".into(),
            key,
            max_attempts: 64,
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(2),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
            version_cache: 4096,
        }
    }

    /// A Redis Cluster (or Valkey cluster) reached through any of `nodes` (`redis://host:port`
    /// URLs; the client learns the others and the slot map from them), with the same defaults
    /// as [`new`](Self::new). Every operation touches one slot (one network's keys, one code's
    /// key or one counter's key), so each script runs on the master of its slot.
    ///
    /// ```
    /// use lanlink::server::redis::{RedisStoreConfig, StoreKey};
    /// let key = StoreKey::from_bytes([1; 32]);
    /// let config = RedisStoreConfig::cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"], key);
    /// # drop(config);
    /// ```
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>, key: StoreKey) -> Self {
        let cluster: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let mut config = Self::new(cluster.first().cloned().unwrap_or_default(), key);
        config.cluster = cluster;
        config
    }

    /// On a cluster, reach the node that advertises itself (in the slot map) at `advertised`
    /// (`host:port`) at `reach` instead: for nodes behind NAT or a proxy. The slot map keeps the
    /// advertised addresses, so redirects still work. Ignored on one node.
    pub fn cluster_node_address(mut self, advertised: (&str, u16), reach: (&str, u16)) -> Self {
        self.address_map.push((
            advertised.0.to_owned(),
            advertised.1,
            reach.0.to_owned(),
            reach.1,
        ));
        self
    }

    /// The key prefix (no `{` or `}`; several deployments may share one Redis under distinct
    /// prefixes).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many times one operation reads and tries its compare-and-swap before it gives up
    /// with [`StoreError::Contention`] (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long one command may take before the operation fails as unavailable.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many replicas each write of a security-critical record — a budget counter (which
    /// admits guesses), a code (whose redeemed mark makes it single use) — waits for before it
    /// is acknowledged (Redis `WAIT`, sent in the same round trip as the write, to the master
    /// that ran it); 0 (the default) waits for none. Redis replicates asynchronously: without
    /// it, a master that fails after acknowledging a write and before a replica copied it
    /// loses the write when the replica is promoted (see `SECURITY.md`). `WAIT` narrows that
    /// window to writes that time out waiting (counted by
    /// [`RedisStore::unreplicated`]); it does not make Redis strongly consistent.
    ///
    /// ```
    /// use lanlink::server::redis::{RedisStoreConfig, StoreKey};
    /// let config = RedisStoreConfig::new("redis://127.0.0.1:6379", StoreKey::from_bytes([1; 32]))
    ///     .wait_replicas(1)
    ///     .wait_timeout(std::time::Duration::from_millis(50));
    /// # drop(config);
    /// ```
    pub fn wait_replicas(mut self, replicas: u32) -> Self {
        self.wait_replicas = replicas;
        self
    }

    /// How long a write waits for its replicas ([`wait_replicas`](Self::wait_replicas));
    /// 100 ms by default. A write that times out is still applied on the master.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// How many records' last values this instance remembers (4096 by default; 0: none), so
    /// that updating a record it wrote or read recently takes one round trip — the
    /// compare-and-swap, checked against the remembered version — instead of a read and a
    /// swap. A stale entry costs nothing extra: the script's refusal carries the current value.
    /// Only sealed values are kept (no plaintext), at most a few hundred bytes each.
    pub fn version_cache(mut self, entries: usize) -> Self {
        self.version_cache = entries;
        self
    }

    /// How long one (re)connection attempt may take.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }
}

/// Why a [`RedisStore`] could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisSetupError {
    /// The prefix holds a brace (it would break the cluster hash tags).
    #[error("the key prefix may not contain braces")]
    Prefix,
    /// The URL is invalid or Redis could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

/// The store's connection: to one node (self-reconnecting), or to a cluster (routing each
/// command to the master of its keys' slot, following the cluster's slot map as it changes).
/// Cheap to clone; a [`ConnectionLike`], so [`AsyncCommands`] work on it.
#[derive(Clone)]
#[non_exhaustive]
pub enum RedisConnection {
    /// One Redis node (or a proxy in front of many).
    Node(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The Redis store. Cheap to clone (one multiplexed, self-reconnecting connection, or one
/// cluster connection).
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    prefix: String,
    cipher: XChaCha20Poly1305,
    name_key: Zeroizing<[u8; 32]>,
    cas: Script,
    network_cas: Script,
    swap_script: Script,
    max_attempts: u32,
    wait_replicas: u32,
    wait_timeout_ms: u64,
    round_trips: Arc<AtomicU64>,
    unreplicated: Arc<AtomicU64>,
    cache: Arc<std::sync::Mutex<VersionCache>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A loaded value: its version (empty when absent), its lineage and the decrypted record.
struct Loaded<T> {
    version: Vec<u8>,
    lineage: Lineage,
    plaintext: Zeroizing<Vec<u8>>,
    record: T,
}

/// The lineage of a value that replaces `version` (itself with `lineage`).
fn descend(version: &[u8], lineage: &[[u8; TAG_LEN]]) -> Lineage {
    let mut next = Lineage::with_capacity(LINEAGE_LEN);
    if let Some(tag) = version.get(..TAG_LEN) {
        let mut bytes = [0; TAG_LEN];
        bytes.copy_from_slice(tag);
        next.push(bytes);
        next.extend(lineage.iter().take(LINEAGE_LEN - 1));
    }
    next
}

/// Whether `err` leaves the command's effect unknown (the connection failed or timed out after
/// it may have been sent), rather than a refusal by Redis (which applied nothing).
fn ambiguous(err: &RedisError) -> bool {
    !matches!(err.kind(), ::redis::ErrorKind::Server(_)) && !err.is_connection_refusal()
}

impl RedisStore {
    /// Connects to Redis (the connection is kept and re-established after a restart).
    pub async fn connect(config: RedisStoreConfig) -> Result<Self, RedisSetupError> {
        if config.prefix.contains(['{', '}']) {
            return Err(RedisSetupError::Prefix);
        }
        let conn = if config.cluster.is_empty() {
            let client = Client::open(config.url.as_str())?;
            let manager_config = ::redis::aio::ConnectionManagerConfig::new()
                .set_response_timeout(Some(config.response_timeout))
                .set_connection_timeout(Some(config.connection_timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            RedisConnection::Node(ConnectionManager::new_with_config(client, manager_config).await?)
        } else {
            // A few quick retries (a MOVED after a failover, a reconnection); past them the
            // operation answers unavailable rather than hold the request while the cluster has
            // no master for the slot. A lost reply is resolved by the store, not by resending.
            let map = config
                .address_map
                .iter()
                .map(|(host, port, to_host, to_port)| {
                    (
                        ::redis::cluster::NodeAddress::new(host.as_str(), *port),
                        ::redis::cluster::NodeAddress::new(to_host.as_str(), *to_port),
                    )
                })
                .collect();
            let client = ClusterClient::builder(config.cluster.iter().map(String::as_str))
                .node_address_map(map)
                .response_timeout(config.response_timeout)
                .connection_timeout(config.connection_timeout)
                .retries(3)
                .min_retry_wait(10)
                .max_retry_wait(200)
                .build()?;
            RedisConnection::Cluster(client.get_async_connection().await?)
        };
        let cipher =
            XChaCha20Poly1305::new(config.key.derive(b"lanlink store values").as_ref().into());
        Ok(Self {
            conn,
            prefix: config.prefix,
            cipher,
            name_key: config.key.derive(b"lanlink store key names"),
            cas: Script::new(CAS_SCRIPT),
            network_cas: Script::new(NETWORK_CAS_SCRIPT),
            swap_script: Script::new(SWAP_SCRIPT),
            max_attempts: config.max_attempts,
            wait_replicas: config.wait_replicas,
            wait_timeout_ms: config
                .wait_timeout
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            round_trips: Arc::new(AtomicU64::new(0)),
            unreplicated: Arc::new(AtomicU64::new(0)),
            cache: Arc::new(std::sync::Mutex::new(VersionCache {
                capacity: config.version_cache,
                ..VersionCache::default()
            })),
        })
    }

    /// The connection (for inspection and tests).
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// How many commands this store (and its clones) has sent to Redis, each one round trip
    /// (a script's reload after a Redis restart, done by the client, is not counted).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// How many security-critical writes were acknowledged by fewer replicas than
    /// [`RedisStoreConfig::wait_replicas`] asks, within its timeout (each applied on its master,
    /// and lost if that master fails before a replica copies it).
    pub fn unreplicated(&self) -> u64 {
        self.unreplicated.load(Ordering::Relaxed)
    }

    /// A connection for one command, counted.
    fn conn(&self) -> RedisConnection {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.conn.clone()
    }

    /// The Redis key of a network's record.
    pub fn network_key(&self, network: &PublicNetwork) -> String {
        let mut name = Vec::with_capacity(22);
        name.extend_from_slice(b"net\0");
        match network {
            PublicNetwork::V4(ip) => {
                name.push(4);
                name.extend_from_slice(&ip.octets());
            }
            PublicNetwork::V6(net) => {
                name.push(6);
                name.extend_from_slice(&net.network().octets());
                name.push(net.prefix_len());
            }
        }
        format!("{}:net:{{{}}}", self.prefix, self.name_hash(&name).as_str())
    }

    /// The Redis key of the messages queued in a network's record (the same hash tag).
    pub fn messages_key(&self, network: &PublicNetwork) -> String {
        let net = self.network_key(network);
        let tag = net.rsplit_once(":net:").map_or("", |(_, tag)| tag);
        format!("{}:msg:{tag}", self.prefix)
    }

    /// The Redis key of a code's record.
    pub fn code_key(&self, key: &CodeKey) -> String {
        let mut name = Vec::with_capacity(37);
        name.extend_from_slice(b"code\0");
        name.extend_from_slice(key.as_bytes());
        format!(
            "{}:code:{{{}}}",
            self.prefix,
            self.name_hash(&name).as_str()
        )
    }

    /// The Redis key of a counter record (a guessing budget or a mint quota).
    pub fn counter_key(&self, key: &CounterKey) -> String {
        format!(
            "{}:ctr:{{{}}}",
            self.prefix,
            self.name_hash(&key.to_bytes()).as_str()
        )
    }

    fn name_hash(&self, name: &[u8]) -> Zeroizing<String> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.name_key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(name);
        crate::secret::encode_hex(&mac.finalize().into_bytes()[..20])
    }

    fn seal<T: Serialize>(&self, redis_key: &str, record: &T) -> Result<Vec<u8>, StoreError> {
        let plaintext =
            Zeroizing::new(serde_json::to_vec(record).map_err(|_| StoreError::Corrupt)?);
        self.seal_bytes(redis_key, &[], &plaintext)
    }

    /// A fresh value: a random nonce (its version), then the ciphertext of `lineage` (a count
    /// byte and the tags) followed by the record's JSON. Values without a lineage (written
    /// before it existed) start their plaintext with the JSON's `{` or `[`, which no count byte
    /// equals.
    fn seal_bytes(
        &self,
        redis_key: &str,
        lineage: &[[u8; TAG_LEN]],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::os_rng().fill_bytes(&mut nonce);
        let lineage = &lineage[..lineage.len().min(LINEAGE_LEN)];
        let mut framed = Zeroizing::new(Vec::with_capacity(
            1 + lineage.len() * TAG_LEN + plaintext.len(),
        ));
        framed.push(lineage.len() as u8);
        for tag in lineage {
            framed.extend_from_slice(tag);
        }
        framed.extend_from_slice(plaintext);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: framed.as_slice(),
                    aad: redis_key.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Corrupt)?;
        let mut value = Vec::with_capacity(NONCE_LEN + sealed.len());
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&sealed);
        Ok(value)
    }

    fn open<T: DeserializeOwned>(
        &self,
        redis_key: &str,
        value: &[u8],
    ) -> Result<Loaded<T>, StoreError> {
        if value.len() < NONCE_LEN || value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::Corrupt);
        }
        let (nonce, sealed) = value.split_at(NONCE_LEN);
        let framed = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: redis_key.as_bytes(),
                    },
                )
                .map_err(|_| StoreError::Corrupt)?,
        );
        let (lineage, json) = match framed.first() {
            Some(&count) if usize::from(count) <= LINEAGE_LEN => {
                let end = 1 + usize::from(count) * TAG_LEN;
                let tags = framed.get(1..end).ok_or(StoreError::Corrupt)?;
                let lineage = tags
                    .chunks_exact(TAG_LEN)
                    .map(|tag| {
                        let mut bytes = [0; TAG_LEN];
                        bytes.copy_from_slice(tag);
                        bytes
                    })
                    .collect();
                (lineage, &framed[end..])
            }
            // Written before values carried a lineage.
            _ => (Lineage::new(), framed.as_slice()),
        };
        let plaintext = Zeroizing::new(json.to_vec());
        let record = serde_json::from_slice(&plaintext).map_err(|_| StoreError::Corrupt)?;
        Ok(Loaded {
            version: nonce.to_vec(),
            lineage,
            plaintext,
            record,
        })
    }

    async fn load_record<T: DeserializeOwned>(
        &self,
        redis_key: &str,
    ) -> Result<Option<Loaded<T>>, StoreError> {
        let value: Option<Vec<u8>> = self
            .read(|| ::redis::cmd("GET").arg(redis_key).clone())
            .await?;
        value.map(|value| self.open(redis_key, &value)).transpose()
    }

    /// Runs an idempotent command (`command()`: a read, or a `DEL`), sent again (up to
    /// [`READ_ATTEMPTS`] times in all) when its reply was lost: running it twice is running
    /// it once.
    async fn read<T: ::redis::FromRedisValue>(
        &self,
        command: impl Fn() -> ::redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            let mut conn = self.conn();
            match command().query_async(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(err) if ambiguous(&err) && attempt + 1 < READ_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                Err(_) => return Err(StoreError::Unavailable),
            }
        }
    }

    /// Writes `value` (or deletes the key when `None`) if the key still holds `version`. A
    /// reply lost on the way back is resolved by reading the key back ([`Self::read_back`]).
    ///
    /// A `critical` record's write waits for [`RedisStoreConfig::wait_replicas`] replicas.
    async fn swap_record(
        &self,
        redis_key: &str,
        version: &[u8],
        value: Option<(Vec<u8>, i64)>,
        critical: bool,
    ) -> Result<Swap, StoreError> {
        let written = value.as_ref().map(|(value, _)| value[..NONCE_LEN].to_vec());
        let mut conn = self.conn();
        let (value, expires_ms) = value.unwrap_or_default();
        if critical && self.wait_replicas > 0 {
            // The script's source (no NOSCRIPT to handle in a pipeline) and `WAIT`, in one
            // round trip to the master of the key's slot.
            let reply: Result<(Value, i64), RedisError> = ::redis::pipe()
                .cmd("EVAL")
                .arg(CAS_SCRIPT)
                .arg(1)
                .arg(redis_key)
                .arg(version)
                .arg(value)
                .arg(expires_ms)
                .cmd("WAIT")
                .arg(self.wait_replicas)
                .arg(self.wait_timeout_ms)
                .query_async(&mut conn)
                .await;
            let reply = reply.map(|(reply, replicas)| {
                if reply == Value::Int(1) && replicas < i64::from(self.wait_replicas) {
                    self.unreplicated.fetch_add(1, Ordering::Relaxed);
                }
                reply
            });
            return self
                .settle(redis_key, version, written.as_deref(), reply)
                .await;
        }
        let reply: Result<Value, RedisError> = self
            .cas
            .key(redis_key)
            .arg(version)
            .arg(value)
            .arg(expires_ms)
            .invoke_async(&mut conn)
            .await;
        self.settle(redis_key, version, written.as_deref(), reply)
            .await
    }

    /// The result of a compare-and-swap from its reply, or, when the reply was lost, from what
    /// the key holds now: applied (`true`), not applied (`false`: the caller retries from a
    /// fresh read, applying its function again), or unknown ([`StoreError::Unavailable`]).
    async fn settle(
        &self,
        redis_key: &str,
        version: &[u8],
        written: Option<&[u8]>,
        reply: Result<Value, RedisError>,
    ) -> Result<Swap, StoreError> {
        match reply {
            Ok(Value::Int(1)) => Ok(Swap::Written),
            // Another writer came first, or this very script was sent again by the client
            // after it applied and another writer built on it: the value held tells.
            Ok(Value::BulkString(current)) => {
                if written.is_some()
                    && self.classify(redis_key, version, written, Some(current.clone()))
                        == Outcome::Applied
                {
                    // Applied, then built on: the value held is not this write's.
                    self.forget(redis_key);
                    Ok(Swap::Written)
                } else {
                    Ok(Swap::Lost(Some(Some(current))))
                }
            }
            // The key is gone: a delete is done (by this write or another), a write is not.
            Ok(Value::Nil | Value::Boolean(false)) if written.is_none() => Ok(Swap::Written),
            Ok(Value::Nil | Value::Boolean(false)) => Ok(Swap::Lost(Some(None))),
            Ok(_) => Err(StoreError::Unavailable),
            Err(err) if ambiguous(&err) => {
                // Whatever the outcome, the value held is not known any more.
                self.forget(redis_key);
                match self.read_back(redis_key, version, written).await {
                    Outcome::Applied => Ok(Swap::Written),
                    Outcome::NotApplied => Ok(Swap::Lost(None)),
                    Outcome::Unknown => Err(StoreError::Unavailable),
                }
            }
            Err(_) => Err(StoreError::Unavailable),
        }
    }

    /// The value this instance last wrote or read at `redis_key`, if it remembers it.
    fn cached(&self, redis_key: &str) -> Option<CachedValue> {
        crate::lock_unpoisoned(&self.cache).get(redis_key)
    }

    /// Remembers the value now at `redis_key` (written or read by this instance).
    fn remember(&self, redis_key: &str, value: CachedValue) {
        crate::lock_unpoisoned(&self.cache).put(redis_key, value);
    }

    /// Forgets the value at `redis_key` (its state is unknown).
    fn forget(&self, redis_key: &str) {
        crate::lock_unpoisoned(&self.cache).forget(redis_key);
    }

    /// Reads `redis_key` back after a write whose reply was lost (the write replaced `version`
    /// with a value of nonce `written`, or deleted it when `None`) and tells whether it applied;
    /// retried while Redis does not answer, up to [`READ_BACK_ATTEMPTS`] reads.
    /// Gives up at once when Redis refuses connections or answers with an error (it is down,
    /// or has no master for the slot), and after [`READ_BACK_WINDOW`] in any case, so that an
    /// outage is answered promptly.
    async fn read_back(&self, redis_key: &str, version: &[u8], written: Option<&[u8]>) -> Outcome {
        let deadline = tokio::time::Instant::now() + READ_BACK_WINDOW;
        for attempt in 0..READ_BACK_ATTEMPTS {
            let mut conn = self.conn();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(remaining, conn.get::<_, Option<Vec<u8>>>(redis_key)).await {
                Ok(Ok(current)) => return self.classify(redis_key, version, written, current),
                Ok(Err(err)) if ambiguous(&err) => {
                    let pause = Duration::from_millis(10 * u64::from(attempt + 1).min(10));
                    if tokio::time::Instant::now() + pause >= deadline {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Outcome::Unknown
    }

    /// What the value now at `redis_key` says of a write of nonce `written` (or a delete) over
    /// `version`. Each version is replaced by exactly one write (the compare-and-swap compares
    /// it), and every value names the versions it descends from ([`Lineage`]); so this write
    /// applied if the value is it or descends from it, and did not if the value is `version` or
    /// descends from `version` through another write. A chain that starts afresh (the record was
    /// deleted and created again) holds neither: a delete applied, a write did not (a record is
    /// emptied only when its contents' lifetimes end, long after a lost reply is read back).
    fn classify(
        &self,
        redis_key: &str,
        version: &[u8],
        written: Option<&[u8]>,
        current: Option<Vec<u8>>,
    ) -> Outcome {
        let Some(current) = current else {
            return if written.is_none() {
                Outcome::Applied
            } else {
                Outcome::NotApplied
            };
        };
        let nonce = current.get(..NONCE_LEN).unwrap_or_default();
        if written.is_some_and(|w| w == nonce) {
            return Outcome::Applied;
        }
        let Ok(loaded) = self.open::<::serde::de::IgnoredAny>(redis_key, &current) else {
            return Outcome::Unknown;
        };
        let in_lineage = |v: &[u8]| {
            v.get(..TAG_LEN)
                .is_some_and(|tag| loaded.lineage.iter().any(|t| t.as_slice() == tag))
        };
        if written.is_some_and(in_lineage) {
            return Outcome::Applied;
        }
        if !version.is_empty() && (version == nonce || in_lineage(version)) {
            return Outcome::NotApplied;
        }
        if loaded.lineage.len() >= LINEAGE_LEN {
            return Outcome::Unknown;
        }
        if written.is_none() {
            Outcome::Applied
        } else {
            Outcome::NotApplied
        }
    }

    /// The read-apply-swap loop of a network record. Queued messages (each carrying a secret
    /// and a code) live under their own key, expiring with the last of them, so that an
    /// undelivered secret is gone from Redis when its message lapses even if no server touches
    /// the network again (the record itself may live 24 h for its used instance ids).
    async fn update_network_record(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        create: bool,
        f: &mut NetworkFn<'_>,
    ) -> Result<bool, StoreError> {
        let key = self.network_key(&network);
        let messages_key = self.messages_key(&network);
        // Start from the values this instance last saw (unverified: a write from them is
        // checked by the compare-and-swap, but a result that writes nothing is not, so it is
        // recomputed from a fresh read).
        let mut next = self.cached(&key);
        let mut conflicts = 0;
        loop {
            let cached_attempt = next.is_some();
            let (held, verified) = match next.take() {
                Some(held) => (held, false),
                None => {
                    let (main, queued): (Option<Vec<u8>>, Option<Vec<u8>>) = self
                        .read(|| ::redis::cmd("MGET").arg(&key).arg(&messages_key).clone())
                        .await
                        .inspect_err(|_| self.forget(&key))?;
                    (main.map(|main| (main, queued)), true)
                }
            };
            let (main, queued) = match &held {
                Some((main, queued)) => (Some(main.as_slice()), queued.as_deref()),
                None => (None, None),
            };
            let opened = main.map(|value| self.open::<NetworkRecord>(&key, value));
            let (version, lineage, before, mut record) = match opened {
                Some(Ok(loaded)) => {
                    let lineage = descend(&loaded.version, &loaded.lineage);
                    (
                        loaded.version,
                        lineage,
                        Some(loaded.plaintext),
                        loaded.record,
                    )
                }
                Some(Err(_)) if !verified => continue,
                Some(Err(err)) => return Err(err),
                None if create => (Vec::new(), Lineage::new(), None, NetworkRecord::default()),
                None if !verified => continue,
                None => return Ok(false),
            };
            let mut queued_before = None;
            if before.is_some() {
                let messages = match queued {
                    Some(value) => {
                        let loaded = match self.open::<Messages>(&messages_key, value) {
                            Ok(loaded) => loaded,
                            Err(_) if !verified => continue,
                            Err(err) => return Err(err),
                        };
                        queued_before = Some(loaded.plaintext);
                        loaded.record
                    }
                    None => Vec::new(),
                };
                record.restore_messages(messages, now);
                record.prune(now, config);
            }
            f(&mut record);
            let expires_at = if record.is_empty() {
                None
            } else {
                record.expires_at(config).filter(|t| *t > now)
            };
            let messages_expire = record.messages_expire_at().filter(|t| *t > now);
            let messages = record.take_messages();
            let plaintext =
                Zeroizing::new(serde_json::to_vec(&record).map_err(|_| StoreError::Corrupt)?);
            let queued_plaintext = if messages.is_empty() || messages_expire.is_none() {
                None
            } else {
                Some(Zeroizing::new(
                    serde_json::to_vec(&messages).map_err(|_| StoreError::Corrupt)?,
                ))
            };
            drop(messages);
            let (values, remembered) = match expires_at {
                None if before.is_none() => {
                    if !verified {
                        continue;
                    }
                    return Ok(true);
                }
                None => (None, None),
                Some(_)
                    if before.as_deref() == Some(&plaintext)
                        && queued_before == queued_plaintext =>
                {
                    // Nothing changed: nothing to write.
                    if !verified {
                        continue;
                    }
                    self.remember(&key, held);
                    return Ok(true);
                }
                Some(expires_at) => {
                    let cap = later(now, MAX_TTL + MAX_TTL);
                    let main_value = (
                        self.seal_bytes(&key, &lineage, &plaintext)?,
                        expires_at.min(cap).timestamp_millis(),
                    );
                    let queued_value = match (queued_plaintext, messages_expire) {
                        (Some(plaintext), Some(t)) => Some((
                            self.seal_bytes(&messages_key, &[], &plaintext)?,
                            t.min(cap).timestamp_millis(),
                        )),
                        _ => None,
                    };
                    let remembered = Some((
                        main_value.0.clone(),
                        queued_value.as_ref().map(|(value, _)| value.clone()),
                    ));
                    (Some((main_value, queued_value)), remembered)
                }
            };
            match self
                .swap_network(&key, &messages_key, &version, values)
                .await
                .inspect_err(|_| self.forget(&key))?
            {
                Swap::Written => {
                    self.remember(&key, remembered);
                    return Ok(true);
                }
                Swap::Lost(_) => {
                    // The reply carries the record but not its messages: read both again. A
                    // remembered version gone stale is no contention: not counted.
                    self.forget(&key);
                    if cached_attempt {
                        continue;
                    }
                    conflicts += 1;
                    if conflicts >= self.max_attempts {
                        return Err(StoreError::Contention);
                    }
                    backoff(conflicts - 1).await;
                }
            }
        }
    }

    /// Writes a network record and its messages (or deletes both when `None`) if the record
    /// still holds `version`.
    #[allow(clippy::type_complexity)]
    async fn swap_network(
        &self,
        key: &str,
        messages_key: &str,
        version: &[u8],
        values: Option<((Vec<u8>, i64), Option<(Vec<u8>, i64)>)>,
    ) -> Result<Swap, StoreError> {
        let mut conn = self.conn();
        let written = values
            .as_ref()
            .map(|((value, _), _)| value[..NONCE_LEN].to_vec());
        let (main, queued) = values.unwrap_or_default();
        let (queued, queued_ms) = queued.unwrap_or_default();
        let reply: Result<Value, RedisError> = self
            .network_cas
            .key(key)
            .key(messages_key)
            .arg(version)
            .arg(main.0)
            .arg(main.1)
            .arg(queued)
            .arg(queued_ms)
            .invoke_async(&mut conn)
            .await;
        self.settle(key, version, written.as_deref(), reply).await
    }

    /// The read-apply-swap loop of a code or counter record (both security-critical: their
    /// writes wait for replicas when asked). `apply` returns `false` when
    /// there is nothing to apply to (then nothing is written). The new value expires at
    /// `expiry(record)`; `None`, or a time not after `now`, deletes the key.
    async fn update<T: Serialize + DeserializeOwned>(
        &self,
        redis_key: &str,
        now: DateTime<Utc>,
        mut apply: impl FnMut(Option<T>) -> Option<T> + Send,
        expiry: impl Fn(&T) -> Option<DateTime<Utc>> + Send,
    ) -> Result<bool, StoreError> {
        // Start from the value this instance last saw (unverified, as for network records).
        let mut next: Option<Option<Vec<u8>>> = self
            .cached(redis_key)
            .map(|held| held.map(|(value, _)| value));
        let mut from_cache = next.is_some();
        let mut conflicts = 0;
        loop {
            let (held, verified) = match next.take() {
                Some(held) => (held, false),
                None => {
                    let held: Option<Vec<u8>> = self
                        .read(|| ::redis::cmd("GET").arg(redis_key).clone())
                        .await
                        .inspect_err(|_| self.forget(redis_key))?;
                    (held, true)
                }
            };
            let cached_attempt = std::mem::take(&mut from_cache);
            let loaded = match held
                .as_deref()
                .map(|value| self.open::<T>(redis_key, value))
            {
                Some(Ok(loaded)) => Some(loaded),
                Some(Err(_)) if !verified => continue,
                Some(Err(err)) => return Err(err),
                None => None,
            };
            let (version, lineage, before, record) = match loaded {
                Some(loaded) => (
                    loaded.version.clone(),
                    descend(&loaded.version, &loaded.lineage),
                    Some(loaded.plaintext),
                    Some(loaded.record),
                ),
                None => (Vec::new(), Lineage::new(), None, None),
            };
            let Some(record) = apply(record) else {
                if !verified {
                    continue;
                }
                return Ok(false);
            };
            let plaintext =
                Zeroizing::new(serde_json::to_vec(&record).map_err(|_| StoreError::Corrupt)?);
            let expires_at = expiry(&record).filter(|t| *t > now);
            let value = match expires_at {
                Some(_) if before.as_deref() == Some(&plaintext) => {
                    // Nothing changed: nothing to write.
                    if !verified {
                        continue;
                    }
                    self.remember(redis_key, held.map(|value| (value, None)));
                    return Ok(true);
                }
                Some(t) => {
                    let cap = later(now, MAX_TTL + MAX_TTL);
                    let expires_ms = t.min(cap).timestamp_millis();
                    Some((
                        self.seal_bytes(redis_key, &lineage, &plaintext)?,
                        expires_ms,
                    ))
                }
                None if before.is_none() => {
                    if !verified {
                        continue;
                    }
                    return Ok(true);
                }
                None => None,
            };
            let remembered = value.as_ref().map(|(value, _)| (value.clone(), None));
            match self
                .swap_record(redis_key, &version, value, true)
                .await
                .inspect_err(|_| self.forget(redis_key))?
            {
                Swap::Written => {
                    self.remember(redis_key, remembered);
                    return Ok(true);
                }
                Swap::Lost(held) => {
                    // A remembered version gone stale is no contention: not counted.
                    if cached_attempt {
                        next = held;
                        continue;
                    }
                    conflicts += 1;
                    if conflicts >= self.max_attempts {
                        self.forget(redis_key);
                        return Err(StoreError::Contention);
                    }
                    if conflicts == 1 {
                        // The first retry starts at once from the value the reply carried.
                        next = held;
                    } else {
                        // Contended: spread out, then read afresh (a value carried through
                        // the pause would be stale by the time it is swapped).
                        backoff(conflicts - 1).await;
                    }
                }
            }
        }
    }
}

/// Sleeps a random time below 0.2 ms × 2^attempt (capped at about 50 ms) before a retry, so that
/// writers that collided spread out.
async fn backoff(attempt: u32) {
    let ceiling_us = 200u64 << attempt.min(8);
    let wait = crate::os_rng().next_u64() % ceiling_us;
    tokio::time::sleep(Duration::from_micros(wait)).await;
}

/// Whether writes to keys of `kind` wait for replicas ([`RedisStoreConfig::wait_replicas`]):
/// the security-critical records, budget counters (which admit guesses) and codes (whose
/// redeemed mark makes them single use).
fn critical(kind: &str) -> bool {
    matches!(kind, "code" | "ctr")
}

/// `at` in Unix milliseconds for `PXAT`, rounded up (a value is never dropped before its
/// expiry) and at least 1 (Redis refuses expiries at or before the epoch; a value that expired
/// long ago is dropped at once either way).
fn expiry_ms(at: DateTime<Utc>) -> i64 {
    let ms = at.timestamp_millis();
    let ms = if at.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        ms
    } else {
        ms.saturating_add(1)
    };
    ms.max(1)
}

/// Whether `writes` is a swap a store takes: 1 to [`MAX_WRITES`] distinct keys of one slot,
/// values of at most 1 MiB.
fn well_formed(writes: &[Write<'_>]) -> bool {
    let Some(first) = writes.first() else {
        return false;
    };
    writes.len() <= MAX_WRITES
        && writes.iter().enumerate().all(|(i, write)| {
            write.key().slot() == first.key().slot()
                && write
                    .value()
                    .is_none_or(|value| value.len() <= MAX_VALUE_BYTES)
                && writes[..i].iter().all(|other| other.key() != write.key())
        })
}

impl RedisStore {
    /// The Redis key of a store [`Key`] `kind:slot`: `{prefix}:{kind}:{{slot}}`. The slot is
    /// the hash tag, so the keys of one swap (a network's record and its messages) share a
    /// Redis Cluster slot.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanlink::server::redis::{RedisStore, RedisStoreConfig, StoreKey};
    /// use lanlink::server::Key;
    /// let config = RedisStoreConfig::new("redis://127.0.0.1:6379", StoreKey::from_bytes([1; 32]));
    /// let store = RedisStore::connect(config.prefix("site")).await?;
    /// let key = Key::new("net", "0a1b").ok_or("bad key")?;
    /// assert_eq!(store.redis_key(&key), "site:net:{0a1b}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis_key(&self, key: &Key) -> String {
        format!("{}:{}:{{{}}}", self.prefix, key.kind(), key.slot())
    }

    /// A value read from Redis, refused as corrupt when larger than any value a store writes.
    fn bounded(value: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, StoreError> {
        match value {
            Some(value) if value.len() > MAX_VALUE_BYTES => Err(StoreError::Corrupt),
            value => Ok(value),
        }
    }
}

/// Opaque keys and values in Redis: `load` is one `GET`, `load_many` one `MGET`, `swap` one
/// Lua script, each one round trip ([`RedisStore::round_trips`]).
///
/// A swap whose reply is lost (the connection failed or timed out after the command may have
/// reached Redis) answers [`StoreError::Unavailable`] with the swap possibly applied, and so does
/// one Redis refused (it applied nothing): the layer above reads the key back and tells. Reads
/// are sent again, up to 3 times in all, when their reply is lost. Swaps of `code` and `ctr`
/// keys wait for replicas when [`RedisStoreConfig::wait_replicas`] asks. Every value expires in
/// Redis at its write's expiry (`PXAT`): [`purge`](Store::purge) has nothing to do.
#[async_trait]
impl Store for RedisStore {
    async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        let name = self.redis_key(key);
        Self::bounded(self.read(|| ::redis::cmd("GET").arg(&name).clone()).await?)
    }

    /// One `MGET` when the keys share their slot (they do when the layer above asks), else one
    /// `GET` after the other (on a cluster, keys of other slots may live on other nodes).
    async fn load_many(&self, keys: &[&Key]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        if keys.iter().any(|key| key.slot() != first.slot()) {
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                values.push(self.load(key).await?);
            }
            return Ok(values);
        }
        let names: Vec<String> = keys.iter().map(|key| self.redis_key(key)).collect();
        let values: Vec<Option<Vec<u8>>> = self
            .read(|| {
                let mut command = ::redis::cmd("MGET");
                for name in &names {
                    command.arg(name);
                }
                command
            })
            .await?;
        if values.len() != keys.len() {
            return Err(StoreError::Unavailable);
        }
        values.into_iter().map(Self::bounded).collect()
    }

    async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
        if !well_formed(writes) {
            return Err(StoreError::Corrupt);
        }
        let names: Vec<String> = writes.iter().map(|w| self.redis_key(w.key())).collect();
        let flag = |present: bool| if present { "1" } else { "0" };
        let mut conn = self.conn();
        let reply: Result<i64, RedisError> =
            if self.wait_replicas > 0 && writes.iter().any(|w| critical(w.key().kind())) {
                // The script's source (no NOSCRIPT to handle in a pipeline) and `WAIT`, in one
                // round trip to the master of the keys' slot.
                let mut pipe = ::redis::pipe();
                let eval = pipe.cmd("EVAL").arg(SWAP_SCRIPT).arg(names.len());
                for name in &names {
                    eval.arg(name);
                }
                for write in writes {
                    eval.arg(flag(write.expected().is_some()))
                        .arg(write.expected().unwrap_or_default())
                        .arg(flag(write.value().is_some()))
                        .arg(write.value().unwrap_or_default())
                        .arg(write.expires_at().map_or(0, expiry_ms));
                }
                pipe.cmd("WAIT")
                    .arg(self.wait_replicas)
                    .arg(self.wait_timeout_ms);
                let reply: Result<(i64, i64), RedisError> = pipe.query_async(&mut conn).await;
                reply.map(|(applied, replicas)| {
                    if applied == 1 && replicas < i64::from(self.wait_replicas) {
                        self.unreplicated.fetch_add(1, Ordering::Relaxed);
                    }
                    applied
                })
            } else {
                let mut invocation = self.swap_script.prepare_invoke();
                for name in &names {
                    invocation.key(name);
                }
                for write in writes {
                    invocation
                        .arg(flag(write.expected().is_some()))
                        .arg(write.expected().unwrap_or_default())
                        .arg(flag(write.value().is_some()))
                        .arg(write.value().unwrap_or_default())
                        .arg(write.expires_at().map_or(0, expiry_ms));
                }
                invocation.invoke_async(&mut conn).await
            };
        match reply {
            Ok(1) => Ok(true),
            Ok(0) => Ok(false),
            // A reply no script gives, a refusal (applied nothing), or a lost reply (may have
            // applied): the layer above reads the keys back.
            Ok(_) | Err(_) => Err(StoreError::Unavailable),
        }
    }

    /// Nothing to do: every value expires in Redis with its write (`PXAT`).
    async fn purge(&self, _now: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Sleeps a random time below 0.2 ms × 2^`attempt` (capped at about 50 ms).
    async fn pause(&self, attempt: u32) {
        backoff(attempt).await;
    }
}

#[async_trait]
impl Backend for RedisStore {
    async fn update_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        create: bool,
        f: &mut NetworkFn<'_>,
    ) -> Result<bool, StoreError> {
        self.update_network_record(network, now, config, create, f)
            .await
    }

    /// One `GET` of the network's record, without its queued messages (no reader needs them).
    async fn read_network(
        &self,
        network: PublicNetwork,
        _now: DateTime<Utc>,
        _config: &ServerConfig,
        f: &mut ReadFn<'_>,
    ) -> Result<bool, StoreError> {
        let key = self.network_key(&network);
        match self.load_record::<NetworkRecord>(&key).await? {
            Some(loaded) => {
                f(&loaded.record);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn create_code(
        &self,
        key: &CodeKey,
        record: &CodeRecord,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if !record.is_live(now) {
            // Expired as soon as written: nothing to write (the configuration forbids zero
            // lifetimes, so this happens only at the end of representable time).
            return Ok(true);
        }
        let redis_key = self.code_key(key);
        let value = self.seal(&redis_key, record)?;
        let written = value[..NONCE_LEN].to_vec();
        for _ in 0..2 {
            let mut conn = self.conn();
            let reply: Result<Option<String>, RedisError> = ::redis::cmd("SET")
                .arg(&redis_key)
                .arg(&value)
                .arg("NX")
                .arg("PXAT")
                .arg(record.expires_at.timestamp_millis())
                .query_async(&mut conn)
                .await;
            match reply {
                Ok(Some(_)) => {
                    self.remember(&redis_key, Some((value, None)));
                    return Ok(true);
                }
                // Taken: by another code, or by this very value (a client that resent the
                // command after its reply was lost); a code's key collides rarely, so the extra
                // read is rare too.
                Ok(None) => {
                    let held: Option<Vec<u8>> = self
                        .read(|| ::redis::cmd("GET").arg(&redis_key).clone())
                        .await?;
                    let ours = held.is_some_and(|held| held.get(..NONCE_LEN) == Some(&written));
                    return Ok(ours);
                }
                // The reply was lost: the key tells whether this value was written.
                Err(err) if ambiguous(&err) => {
                    match self.read_back(&redis_key, &[], Some(&written)).await {
                        Outcome::Applied => return Ok(true),
                        Outcome::NotApplied => {}
                        Outcome::Unknown => return Err(StoreError::Unavailable),
                    }
                }
                Err(_) => return Err(StoreError::Unavailable),
            }
        }
        Err(StoreError::Unavailable)
    }

    async fn update_code(
        &self,
        key: &CodeKey,
        now: DateTime<Utc>,
        f: &mut CodeFn<'_>,
    ) -> Result<bool, StoreError> {
        let redis_key = self.code_key(key);
        self.update::<CodeRecord>(
            &redis_key,
            now,
            |record| {
                let mut record = record.filter(|record| record.is_live(now))?;
                f(&mut record);
                Some(record)
            },
            |record| Some(record.expires_at),
        )
        .await
    }

    /// One compare-and-swap of the counter's record (`GET`, then the script): admitting a guess
    /// and charging it are one atomic step across every instance.
    async fn update_counter(
        &self,
        key: &CounterKey,
        now: DateTime<Utc>,
        f: &mut CounterFn<'_>,
    ) -> Result<(), StoreError> {
        let redis_key = self.counter_key(key);
        let now_ms = now.timestamp_millis();
        self.update::<CounterRecord>(
            &redis_key,
            now,
            |record| {
                let mut record = record.unwrap_or_default();
                record.prune(now_ms);
                f(&mut record);
                Some(record)
            },
            |record| {
                record
                    .expires_ms()
                    .and_then(DateTime::<Utc>::from_timestamp_millis)
            },
        )
        .await
        .map(|_| ())
    }

    /// `DEL`, sent again if its reply was lost (deleting twice is deleting once).
    async fn delete_code(&self, key: &CodeKey) -> Result<(), StoreError> {
        let redis_key = self.code_key(key);
        self.forget(&redis_key);
        self.read::<i64>(|| ::redis::cmd("DEL").arg(&redis_key).clone())
            .await
            .map(|_| ())
    }

    async fn purge(&self, _now: DateTime<Utc>, _config: &ServerConfig) -> Result<(), StoreError> {
        // Every key expires with its record.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_cache_stays_bounded_and_forgets() {
        let mut cache = VersionCache {
            capacity: 3,
            ..VersionCache::default()
        };
        for i in 0..100 {
            cache.put(&format!("k{i}"), Some((vec![i as u8], None)));
            if i % 2 == 0 {
                cache.forget(&format!("k{i}"));
            }
        }
        assert!(cache.entries.len() <= 3);
        assert!(cache.order.len() <= 6);
        assert_eq!(cache.get("k99"), Some(Some((vec![99], None))));
        assert_eq!(cache.get("k98"), None);
        let mut off = VersionCache::default();
        off.put("k", None);
        assert_eq!(off.get("k"), None, "capacity 0 keeps nothing");
    }

    #[test]
    fn expiries_round_up_to_the_millisecond_and_stay_positive() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        assert_eq!(expiry_ms(at), 1_800_000_000_000);
        let later = DateTime::from_timestamp(1_800_000_000, 1).expect("time");
        assert_eq!(expiry_ms(later), 1_800_000_000_001, "never dropped early");
        let ms = DateTime::from_timestamp(1_800_000_000, 2_000_000).expect("time");
        assert_eq!(expiry_ms(ms), 1_800_000_000_002);
        let old = DateTime::from_timestamp(-5, 0).expect("time");
        assert_eq!(
            expiry_ms(old),
            1,
            "Redis refuses expiries at or before the epoch"
        );
        assert_eq!(expiry_ms(DateTime::<Utc>::UNIX_EPOCH), 1);
    }

    #[test]
    fn a_swap_takes_one_or_two_distinct_keys_of_one_slot() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let net = Key::new("net", "0a").expect("key");
        let msg = Key::new("msg", "0a").expect("key");
        let other = Key::new("msg", "0b").expect("key");
        let write = |key| Write::new(key, None, Some((b"v", at)));
        assert!(well_formed(&[write(&net)]));
        assert!(well_formed(&[
            write(&net),
            Write::new(&msg, Some(b"x"), None)
        ]));
        assert!(!well_formed(&[]), "nothing to swap");
        assert!(!well_formed(&[write(&net), write(&other)]), "two slots");
        assert!(!well_formed(&[write(&net), write(&net)]), "one key twice");
        assert!(
            !well_formed(&[write(&net), write(&msg), write(&msg)]),
            "three"
        );
        let big = vec![0; MAX_VALUE_BYTES + 1];
        assert!(!well_formed(&[Write::new(&net, None, Some((&big, at)))]));
        let most = vec![0; MAX_VALUE_BYTES];
        assert!(well_formed(&[Write::new(&net, None, Some((&most, at)))]));
    }

    #[test]
    fn only_codes_and_counters_wait_for_replicas() {
        assert!(critical("code") && critical("ctr"));
        assert!(!critical("net") && !critical("msg"));
    }

    #[test]
    fn a_lineage_names_the_newest_versions_first_and_stays_bounded() {
        let mut lineage = Lineage::new();
        for i in 0..20u8 {
            lineage = descend(&[i; NONCE_LEN], &lineage);
        }
        assert_eq!(lineage.len(), LINEAGE_LEN);
        assert_eq!(lineage[0], [19; TAG_LEN]);
        assert_eq!(lineage[LINEAGE_LEN - 1], [12; TAG_LEN]);
        assert!(descend(&[], &lineage).is_empty(), "a fresh record has none");
    }
}
