// (822 lines, 267 of them docs and doc examples: one concern, because it is the Redis store: one script, one connection, its errors.)
//! A [`Store`] in Redis (or Valkey), on one node or natively on a Redis Cluster (feature
//! `redis`): the bytes of the server's records, which [`Records`](super::Records) names, seals
//! and updates. Every server instance that uses the same Redis, prefix and
//! [`StoreKey`] shares the records:
//! `Server::with_store(config, Records::new(redis_store, RecordsConfig::new(key)), events)`.
//!
//! **Commands.** [`Store::load`] is one `GET`, [`Store::load_many`] one `MGET`, and
//! [`Store::swap`] one Lua script over its one or two keys: it compares each key's whole value
//! with the expected one (an expected absence: the key must not exist) and, if all hold, sets
//! each (`SET ... PXAT` the write's expiry) or deletes it, else writes nothing. Each is one round
//! trip ([`RedisStore::round_trips`]). Discovery, the most frequent request, is one `GET`; an
//! update is one swap when [`Records`](super::Records) remembers the value (its version cache),
//! else a load and a swap.
//!
//! **Expiry.** Every write sets the key's expiry (`PXAT`) to the record's own (see
//! [`Records`](super::Records)), so nothing outlives its window even if every server dies:
//! [`Store::purge`] has nothing to do. A network's queued messages (each holding a secret and a
//! code) are kept under a key of their own, expiring with the last message (60 s by default).
//!
//! **Keys.** A store [`Key`] `kind:slot` is the Redis key `{prefix}:{kind}:{{slot}}`
//! ([`RedisStore::redis_key`]): `net`, `msg` (a network's record and messages, one slot),
//! `code`, `ctr` (one per guessing budget or mint quota, see [`budget`](super::budget)) and,
//! with the Obico profile, `tok`. The slot, a keyed hash, names no network and no code; in
//! braces it is the hash tag, so the keys of one swap share a Redis Cluster slot and every
//! command touches one slot. The same store runs on one node (Redis or Valkey, standalone or
//! behind a proxy: [`RedisStoreConfig::new`]) or natively on a Redis Cluster or Valkey cluster
//! ([`RedisStoreConfig::cluster`], the `redis` crate's async cluster client), each script
//! running on the master of its slot. Redis 6.2 or newer (for `PXAT`).
//!
//! **Failover.** Redis replicates asynchronously: a write acknowledged by a master that fails
//! before its replica copied it is lost when the replica is promoted. Swaps of the
//! security-critical keys (`ctr`: budget counters; `code`: codes' redeemed marks) can wait for
//! replicas ([`RedisStoreConfig::wait_replicas`]); what each record risks is in `SECURITY.md`.
//!
//! **Faults.** The connection reconnects by itself; while Redis is down every operation fails
//! at once with [`StoreError::Refused`] (HTTP `503 store_unavailable`).
//!
//! **Lost replies.** A swap whose reply is lost (the connection fails or times out after the
//! command may have reached Redis), or that Redis answered with an error, answers
//! [`StoreError::Unavailable`]: [`Records`](super::Records) reads the key back and tells from
//! the value's lineage whether it applied. A call whose connection Redis refused (it is down)
//! answers [`StoreError::Refused`], so an outage costs no reading back. The script is idempotent: sent again after it applied (the cluster client resends a
//! command whose connection failed) it finds its own value in place and answers applied without
//! writing. Reads are sent again, up to 3 times in all. So a lost reply never charges a guess
//! twice, never loses a charge or a refund, and never leaves a code marked used by an operation
//! that reported failure (`tests/redis_faults.rs` drops the reply of every command of the link
//! flow and of wrong guesses in turn, on one node and on a cluster).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use lanlink::server::redis::{RedisStore, RedisStoreConfig};
//! use lanlink::server::{Events, Records, RecordsConfig, Server, ServerConfig, StoreKey};
//! let key = StoreKey::from_hex(&std::env::var("LANLINK_STORE_KEY")?).ok_or("bad key")?;
//! let store = RedisStore::connect(RedisStoreConfig::new("redis://127.0.0.1:6379")).await?;
//! let records = Records::new(store, RecordsConfig::new(key));
//! let events = Events::sink(|event| println!("{}", serde_json::to_string(&event).unwrap()));
//! let service = Arc::new(Server::with_store(ServerConfig::default(), records, events)?);
//! # drop(service);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::ConnectionLike;
use ::redis::aio::ConnectionManager;
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, Script, Value};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::RngCore;

use super::store::{Key, Store, StoreError, Write, MAX_WRITES};

/// The server key for data at rest, now [`server::StoreKey`](super::StoreKey) (it belongs to
/// [`Records`](super::Records), for every store); kept here for the transition.
pub use super::StoreKey;

/// The largest value written or read; anything larger is refused as corrupt.
const MAX_VALUE_BYTES: usize = 1 << 20;

/// How many times a read is sent when its reply is lost.
const READ_ATTEMPTS: u32 = 3;

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

/// How to reach Redis and lay out the keys.
///
/// ```
/// use lanlink::server::redis::{RedisSetupError, RedisStore, RedisStoreConfig};
/// // Checked when connecting: a URL that is not one fails at once, before any network I/O.
/// let config = RedisStoreConfig::new("not a url").prefix("site-a");
/// let mut connect = std::pin::pin!(RedisStore::connect(config));
/// # use std::future::Future;
/// let waker = std::task::Waker::noop();
/// let done = connect.as_mut().poll(&mut std::task::Context::from_waker(waker));
/// assert!(matches!(done, std::task::Poll::Ready(Err(RedisSetupError::Redis(_)))));
/// ```
///
/// Its `Debug` leaves out any password or user name in the URLs (`redis://:***@host`):
///
/// ```
/// use lanlink::server::redis::RedisStoreConfig;
/// let config = RedisStoreConfig::new("redis://:hunter2@10.0.0.5:6379/0");
/// let shown = format!("{config:?}");
/// assert!(shown.contains("10.0.0.5:6379") && !shown.contains("hunter2"));
/// ```
#[derive(Clone)]
pub struct RedisStoreConfig {
    url: String,
    cluster: Vec<String>,
    address_map: Vec<(String, u16, String, u16)>,
    prefix: String,
    response_timeout: Duration,
    connection_timeout: Duration,
    wait_replicas: u32,
    wait_timeout: Duration,
}

impl std::fmt::Debug for RedisStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cluster: Vec<String> = self
            .cluster
            .iter()
            .map(|u| without_credentials(u))
            .collect();
        f.debug_struct("RedisStoreConfig")
            .field("url", &without_credentials(&self.url))
            .field("cluster", &cluster)
            .field("address_map", &self.address_map)
            .field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

/// `url` with whatever stands before an `@` in its authority (a user name, a password) shown as
/// `***`: what a Redis URL may carry that no log may.
fn without_credentials(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

impl RedisStoreConfig {
    /// Redis at `url` (`redis://host:port/db`, `rediss://` for TLS when the crate's TLS feature
    /// is on), prefix `lanlink`, 2 s response and connection timeouts, no wait for replicas.
    /// The key that seals the records is [`Records`](super::Records)' (in its
    /// [`RecordsConfig`](super::RecordsConfig)).
    ///
    /// ```
    /// use lanlink::server::redis::RedisStoreConfig;
    /// let config = RedisStoreConfig::new("redis://127.0.0.1:6379").prefix("site-a");
    /// # drop(config);
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster: Vec::new(),
            address_map: Vec::new(),
            prefix: "lanlink".into(),
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(2),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
        }
    }

    /// A Redis Cluster (or Valkey cluster) reached through any of `nodes` (`redis://host:port`
    /// URLs; the client learns the others and the slot map from them), with the same defaults
    /// as [`new`](Self::new). Every command touches one slot (a swap's keys share their slot,
    /// through the hash tag), so each script runs on the master of its slot.
    ///
    /// ```
    /// use lanlink::server::redis::RedisStoreConfig;
    /// let config = RedisStoreConfig::cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]);
    /// # drop(config);
    /// ```
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        let cluster: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let mut config = Self::new(cluster.first().cloned().unwrap_or_default());
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
    ///
    /// ```
    /// use lanlink::server::redis::{RedisSetupError, RedisStore, RedisStoreConfig};
    /// // A brace would break the cluster hash tags: refused before connecting.
    /// let config = RedisStoreConfig::new("redis://127.0.0.1:6379").prefix("site{a}");
    /// let mut connect = std::pin::pin!(RedisStore::connect(config));
    /// # use std::future::Future;
    /// let done = connect.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    /// assert!(matches!(done, std::task::Poll::Ready(Err(RedisSetupError::Prefix))));
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one command may take before it fails as unavailable (a swap's reply then
    /// counts as lost: [`Records`](super::Records) reads the key back).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many replicas each swap of a security-critical key — `ctr`, a budget counter (which
    /// admits guesses), `code`, a code (whose redeemed mark makes it single use) — waits for
    /// before it is acknowledged (Redis `WAIT`, sent in the same round trip as the write, to the master
    /// that ran it); 0 (the default) waits for none. Redis replicates asynchronously: without
    /// it, a master that fails after acknowledging a write and before a replica copied it
    /// loses the write when the replica is promoted (see `SECURITY.md`). `WAIT` narrows that
    /// window to writes that time out waiting (counted by
    /// [`RedisStore::unreplicated`]); it does not make Redis strongly consistent.
    ///
    /// ```
    /// use lanlink::server::redis::RedisStoreConfig;
    /// let config = RedisStoreConfig::new("redis://127.0.0.1:6379")
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

    /// How long one (re)connection attempt may take.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }
}

/// Why a [`RedisStore`] could not be set up.
///
/// ```
/// use lanlink::server::redis::{RedisSetupError, RedisStore, RedisStoreConfig};
/// let config = RedisStoreConfig::cluster(["redis://127.0.0.1:7000"]).prefix("}");
/// let mut connect = std::pin::pin!(RedisStore::connect(config));
/// # use std::future::Future;
/// let done = connect.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
/// let std::task::Poll::Ready(Err(err)) = done else { panic!("refused before connecting") };
/// assert!(matches!(err, RedisSetupError::Prefix));
/// ```
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
/// Cheap to clone; a [`ConnectionLike`], so [`AsyncCommands`](::redis::AsyncCommands) work on
/// it.
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

/// The Redis store: opaque keys and values of bytes in Redis, a [`Store`]. Cheap to clone (one
/// multiplexed, self-reconnecting connection, or one cluster connection; clones share the
/// counters).
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    prefix: String,
    swap_script: Script,
    wait_replicas: u32,
    wait_timeout_ms: u64,
    round_trips: Arc<AtomicU64>,
    unreplicated: Arc<AtomicU64>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Whether `err` leaves the command's effect unknown (the connection failed or timed out after
/// it may have been sent), rather than a refusal by Redis (which applied nothing).
fn ambiguous(err: &RedisError) -> bool {
    !matches!(err.kind(), ::redis::ErrorKind::Server(_)) && !err.is_connection_refusal()
}

impl RedisStore {
    /// Connects to Redis (the connection is kept and re-established after a restart).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanlink::server::redis::{RedisStore, RedisStoreConfig};
    /// let store = RedisStore::connect(RedisStoreConfig::new("redis://127.0.0.1:6379").prefix("site-a")).await?;
    /// assert_eq!(store.round_trips(), 0, "connecting sends no store command");
    /// # Ok(()) }
    /// ```
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
            // no master for the slot. A command resent after its reply was lost is recognised
            // by the script; a lost reply is resolved above the store, not by resending.
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
        Ok(Self {
            conn,
            prefix: config.prefix,
            swap_script: Script::new(SWAP_SCRIPT),
            wait_replicas: config.wait_replicas,
            wait_timeout_ms: config
                .wait_timeout
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            round_trips: Arc::new(AtomicU64::new(0)),
            unreplicated: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The connection (for inspection and tests).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanlink::server::redis::{RedisConnection, RedisStore, RedisStoreConfig};
    /// let store = RedisStore::connect(RedisStoreConfig::new("redis://127.0.0.1:6379")).await?;
    /// assert!(matches!(store.connection(), RedisConnection::Node(_)));
    /// # Ok(()) }
    /// ```
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// How many commands this store (and its clones) has sent to Redis, each one round trip
    /// (a script's reload after a Redis restart, done by the client, is not counted).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanlink::server::redis::{RedisStore, RedisStoreConfig};
    /// let store = RedisStore::connect(RedisStoreConfig::new("redis://127.0.0.1:6379")).await?;
    /// let clone = store.clone();
    /// // Clones share the counter.
    /// assert_eq!(clone.round_trips(), store.round_trips());
    /// # Ok(()) }
    /// ```
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// How many swaps of security-critical keys were acknowledged by fewer replicas than
    /// [`RedisStoreConfig::wait_replicas`] asks, within its timeout (each applied on its master,
    /// and lost if that master fails before a replica copies it).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanlink::server::redis::{RedisStore, RedisStoreConfig};
    /// // Waiting for no replica (the default), no write is ever counted as unreplicated.
    /// let store = RedisStore::connect(RedisStoreConfig::new("redis://127.0.0.1:6379")).await?;
    /// assert_eq!(store.unreplicated(), 0);
    /// # Ok(()) }
    /// ```
    pub fn unreplicated(&self) -> u64 {
        self.unreplicated.load(Ordering::Relaxed)
    }

    /// A connection for one command, counted.
    fn conn(&self) -> RedisConnection {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.conn.clone()
    }

    /// Runs an idempotent command (`command()`: a read), sent again (up to
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
                // Still lost after the resends.
                Err(err) if ambiguous(&err) => return Err(StoreError::Unavailable),
                // Refused (Redis down) or answered with an error: a read that did not run.
                Err(_) => return Err(StoreError::Refused),
            }
        }
    }
}

/// The longest pause before the `attempt`-th retry (from 1), in microseconds: 0.2 ms for the
/// first, doubling, capped at 51.2 ms (from the 9th).
fn pause_ceiling_us(attempt: u32) -> u64 {
    200u64 << attempt.saturating_sub(1).min(8)
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
    /// use lanlink::server::redis::{RedisStore, RedisStoreConfig};
    /// use lanlink::server::Key;
    /// let config = RedisStoreConfig::new("redis://127.0.0.1:6379");
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
/// reached Redis), or that Redis answered with an error, answers [`StoreError::Unavailable`]
/// with the swap possibly applied: the layer above reads the key back and tells. One whose
/// connection was refused (Redis down: never sent) answers [`StoreError::Refused`], and so does a
/// read that Redis refused or answered with an error, so that an outage is answered at once.
/// Reads are sent again, up to 3 times in all, when their reply is lost. Swaps of `code` and `ctr`
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
            // The connection was refused: the command was never sent.
            Err(err) if err.is_connection_refusal() => Err(StoreError::Refused),
            // A lost reply (it may have applied), an error answer (a script's write may have
            // applied before it), or a reply no script gives: the layer above reads the keys
            // back (and a Redis answering errors refuses that read at once).
            Ok(_) | Err(_) => Err(StoreError::Unavailable),
        }
    }

    /// Nothing to do: every value expires in Redis with its write (`PXAT`).
    async fn purge(&self, _now: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Sleeps a random time below 0.2 ms × 2^(`attempt` − 1), capped at about 50 ms, so that
    /// writers that collided spread out. (The first retry waits at most 0.2 ms: each retry
    /// also loads the keys again, a round trip of its own.)
    async fn pause(&self, attempt: u32) {
        let wait = crate::os_rng().next_u64() % pause_ceiling_us(attempt);
        tokio::time::sleep(Duration::from_micros(wait)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn pauses_start_below_a_fifth_of_a_millisecond_and_double_to_about_fifty() {
        assert_eq!(pause_ceiling_us(0), 200);
        assert_eq!(pause_ceiling_us(1), 200);
        assert_eq!(pause_ceiling_us(2), 400);
        assert_eq!(pause_ceiling_us(8), 25_600);
        assert_eq!(pause_ceiling_us(9), 51_200);
        assert_eq!(pause_ceiling_us(u32::MAX), 51_200);
    }

    #[test]
    fn only_codes_and_counters_wait_for_replicas() {
        assert!(critical("code") && critical("ctr"));
        assert!(!critical("net") && !critical("msg"));
    }
}

#[cfg(test)]
mod credential_tests {
    use super::{without_credentials, RedisStoreConfig};

    /// A password in a Redis URL never reaches `Debug` (the derived one printed it).
    #[test]
    fn debug_leaves_out_credentials() {
        for url in [
            "redis://:hunter2@10.0.0.5:6379/0",
            "rediss://admin:hunter2@cache.example:6380",
            "redis://hunter2@h",
            "redis://u:p@ss:hunter2@h/0?x=@",
        ] {
            let shown = format!("{:?}", RedisStoreConfig::new(url));
            assert!(!shown.contains("hunter2"), "{shown}");
            let shown = format!("{:?}", RedisStoreConfig::cluster([url]));
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(
            without_credentials("redis://10.0.0.5:6379/0"),
            "redis://10.0.0.5:6379/0"
        );
        assert_eq!(
            without_credentials("redis://:pw@h:1/0"),
            "redis://***@h:1/0"
        );
        assert_eq!(without_credentials("not a url"), "not a url");
    }
}
