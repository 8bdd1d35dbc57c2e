// (1028 lines: one concern, because the sealing, naming and read-apply-swap loop share their invariants (lost-reply recognition); its printer tokens and tests are in records/.)
//! [`Records`]: the server's records in any [`Store`], sealed, under keyed-hash names.
//! It must not decide anything about the protocol: the records' functions do. Its I/O is the
//! store's; the one value it draws itself is each sealed value's nonce, from the operating
//! system's CSPRNG (`crate::os_rng`), not from the caller's RNG.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
#[cfg(test)]
use chrono::TimeDelta;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;
use zeroize::Zeroizing;

#[cfg(feature = "obico-wire")]
mod tokens;

use super::backend::{Backend, CodeFn, CounterFn, NetworkFn, ReadFn, StoreError};
use super::{Key, Store, Write};
use crate::addr::PublicNetwork;
use crate::code::CodeKey;
use crate::id::InstanceId;
use crate::server::budget::{CounterKey, CounterRecord};
use crate::server::config::ServerConfig;
use crate::server::limits::MAX_TTL;
use crate::server::record::{later, CodeRecord, NetworkRecord, PendingMessage};

/// Bytes of the nonce that starts every stored value (and is its version).
const NONCE_LEN: usize = 24;

/// The largest stored value opened; anything larger is refused as corrupt.
const MAX_VALUE_BYTES: usize = 1 << 20;

/// How many ancestor versions a stored value names (see [`Lineage`]).
const LINEAGE_LEN: usize = 8;

/// Bytes of an ancestor's tag: the first bytes of its nonce.
const TAG_LEN: usize = 8;

/// How many loads tell whether a swap whose reply was lost applied, paused between them with
/// [`Store::pause`].
const READ_BACK_ATTEMPTS: u32 = 12;

/// How many hash bytes a key's slot carries (in hex, twice as many characters).
const SLOT_BYTES: usize = 20;

/// The versions a stored value descends from, newest first: the tags of the values it replaced
/// (each write replaces exactly one version, since the swap compares it). Sealed inside the
/// value with the record, so a writer whose reply was lost can read the key back and tell
/// whether its write applied, even after later writers built on it.
type Lineage = Vec<[u8; TAG_LEN]>;

/// The messages queued in one network record, stored apart under their own expiry.
type Messages = Vec<(InstanceId, PendingMessage)>;

/// The server key for data at rest: 32 random bytes that every instance sharing the store must
/// be given. Redacted in `Debug`, zeroized on drop.
///
/// ```
/// use lanlink::server::StoreKey;
/// let key = StoreKey::generate(&mut lanlink::os_rng());
/// assert!(StoreKey::from_hex(&key.to_hex()).is_some());
/// assert_eq!(format!("{key:?}"), "StoreKey(<redacted>)");
/// ```
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
    /// use lanlink::server::StoreKey;
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

/// How [`Records`] keeps the server's records: its key, its retries, its memory.
///
/// ```
/// use lanlink::server::{RecordsConfig, StoreKey};
/// let config = RecordsConfig::new(StoreKey::from_bytes([7; 32]))
///     .max_attempts(16)
///     .version_cache(1024);
/// # drop(config);
/// ```
#[derive(Debug, Clone)]
pub struct RecordsConfig {
    key: StoreKey,
    max_attempts: u32,
    version_cache: usize,
}

impl RecordsConfig {
    /// Records sealed under `key` (every instance sharing the store must have the same), at
    /// most 64 swap attempts per operation, 4096 remembered versions.
    pub fn new(key: StoreKey) -> Self {
        Self {
            key,
            max_attempts: 64,
            version_cache: 4096,
        }
    }

    /// How many times one operation loads and tries its swap before it gives up with
    /// [`StoreError::Contention`] (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How many records' last values this instance remembers (0: none), so that updating a
    /// record it wrote or read recently takes one round trip — the swap, against the remembered
    /// version — instead of a load and a swap. Only sealed values are kept (no plaintext).
    pub fn version_cache(mut self, entries: usize) -> Self {
        self.version_cache = entries;
        self
    }
}

/// The values held at a unit's keys as stored (sealed); `None` where a key holds nothing.
type Held = Vec<Option<Vec<u8>>>;

/// The values this instance wrote or read last, by their first key, so that the next update
/// can start from them without a load. Bounded, oldest entries first out.
#[derive(Default)]
struct VersionCache {
    entries: HashMap<Key, Held>,
    order: VecDeque<Key>,
    capacity: usize,
}

impl VersionCache {
    fn get(&self, key: &Key) -> Option<Held> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: &Key, value: Held) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(key.clone(), value).is_none() {
            self.order.push_back(key.clone());
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

    fn forget(&mut self, key: &Key) {
        self.entries.remove(key);
    }
}

/// A value opened: its version, its lineage, whether it is live at the time asked, and its
/// record's JSON.
struct Opened {
    version: [u8; NONCE_LEN],
    lineage: Lineage,
    live: bool,
    json: Zeroizing<Vec<u8>>,
}

/// Whether a swap whose reply was lost applied, as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The key holds this write's value, or a value descended from it.
    Applied,
    /// The key still holds the version read, or a value descended from it that is not this
    /// write's: another writer replaced that version, so this write did not apply.
    NotApplied,
    /// The read-back could not tell.
    Unknown,
}

/// What an operation's function makes of the live records at a unit's keys: nothing to do
/// (`None`: the operation reports `false` and writes nothing), or the new JSON of each key with
/// its expiry (`None` for a key: deleted).
type Plan = Option<Vec<Option<(Zeroizing<Vec<u8>>, DateTime<Utc>)>>>;

/// The server's records in any [`Store`]: a [`Backend`] for every database.
///
/// What every shared store needs, done once above the [`Store`] trait, so a store only moves
/// bytes:
///
/// - **Names.** A key carries no network address and no code: its slot is a keyed hash
///   (HMAC-SHA-256 under a key derived from the [`StoreKey`], 20 bytes in hex). A network's
///   record (`net`) and its queued messages (`msg`) share one slot; a code (`code`) and each
///   counter (`ctr`: a budget level, a code space's global budget, an account's live codes)
///   have their own.
/// - **Values.** 24 random bytes (the value's version), then the XChaCha20-Poly1305 sealing,
///   under another derived key with the key's name as associated data (a value copied to
///   another key does not open), of: the value's lineage (below), its expiry, and the record's
///   JSON. A reader of the database learns how many records there are and when they expire, and
///   nothing that lets it link a device.
/// - **Atomic steps.** Every operation loads the record, applies the core's pure function and
///   writes the result with one [`Store::swap`] expecting the value it loaded; another
///   instance's write in between makes the swap lose, and the operation starts again from a
///   fresh load (at most [`RecordsConfig::max_attempts`] times, pausing with
///   [`Store::pause`]; then [`StoreError::Contention`]). An operation that changes nothing
///   writes nothing. A network's messages (each holding a secret and a code) are written in the
///   same swap under their own key, expiring with the last message, so an undelivered secret
///   leaves the database on time even while its network's record lives on (24 h, for its used
///   instance ids).
/// - **One round trip.** The last value this instance wrote or read at up to
///   [`RecordsConfig::version_cache`] keys is remembered (sealed, as stored) and the next
///   update swaps against it directly; a stale one loses the swap and costs one load. A result
///   that writes nothing is never taken from a remembered value.
/// - **Lost replies.** A swap answered [`StoreError::Unavailable`] may have applied. Every value
///   names the versions it descends from (its lineage: the first 8 bytes of the versions of up
///   to 8 values it replaced), and each version is replaced by exactly one write, so reading
///   the key back tells whether this write applied (the key holds it or a value descended from
///   it) or not (it holds the version read, or a value descended from that version through
///   another write). Applied, the operation returns as if the reply had come, its function not
///   applied again; not applied, it starts again. Only when the key cannot be read back either,
///   or more than 8 writes replaced the value meanwhile, does the operation fail with
///   `Unavailable`, its write possibly applied (see `SECURITY.md`).
/// - **Expiry.** Each value's expiry is sealed inside it: a value past it reads as absent,
///   whether or not the store has dropped it yet (its bytes are still what a swap expects).
///
///
/// ```
/// use std::sync::Arc;
/// use lanlink::server::{Events, MemoryBytes, Records, RecordsConfig, Server, ServerConfig, StoreKey};
/// // Two instances over one store act as one (here in one process; a database spans many).
/// let store = Arc::new(MemoryBytes::default());
/// let key = StoreKey::from_bytes([7; 32]);
/// let a = Records::new(store.clone(), RecordsConfig::new(key.clone()));
/// let b = Records::new(store, RecordsConfig::new(key));
/// let a = Server::with_store(ServerConfig::default(), a, Events::discard()).unwrap();
/// let b = Server::with_store(ServerConfig::default(), b, Events::discard()).unwrap();
/// # drop((a, b));
/// ```
pub struct Records<S> {
    store: S,
    cipher: XChaCha20Poly1305,
    name_key: Zeroizing<[u8; 32]>,
    max_attempts: u32,
    cache: Mutex<VersionCache>,
}

impl<S> fmt::Debug for Records<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// The lineage of a value that replaces the value of `version` (itself with `lineage`).
fn descend(version: &[u8; NONCE_LEN], lineage: &[[u8; TAG_LEN]]) -> Lineage {
    let mut next = Lineage::with_capacity(LINEAGE_LEN);
    let mut tag = [0; TAG_LEN];
    tag.copy_from_slice(&version[..TAG_LEN]);
    next.push(tag);
    next.extend(lineage.iter().take(LINEAGE_LEN - 1));
    next
}

impl<S: Store> Records<S> {
    /// The records of `store`, sealed as `config` says.
    pub fn new(store: S, config: RecordsConfig) -> Self {
        let cipher =
            XChaCha20Poly1305::new(config.key.derive(b"lanlink store values").as_ref().into());
        Self {
            store,
            cipher,
            name_key: config.key.derive(b"lanlink store key names"),
            max_attempts: config.max_attempts,
            cache: Mutex::new(VersionCache {
                capacity: config.version_cache,
                ..VersionCache::default()
            }),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The key of a network's record.
    ///
    /// ```
    /// use lanlink::server::{MemoryBytes, Records, RecordsConfig, StoreKey};
    /// let records = Records::new(MemoryBytes::default(), RecordsConfig::new(StoreKey::from_bytes([7; 32])));
    /// let network = lanlink::PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// let key = records.network_key(&network);
    /// assert_eq!(key.kind(), "net");
    /// assert!(!key.as_str().contains("203"));
    /// assert_eq!(records.messages_key(&network).slot(), key.slot());
    /// ```
    pub fn network_key(&self, network: &PublicNetwork) -> Key {
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
        self.key("net", &name)
    }

    /// The key of the messages queued in a network's record (the network's slot).
    pub fn messages_key(&self, network: &PublicNetwork) -> Key {
        let net = self.network_key(network);
        Key::new("msg", net.slot()).unwrap_or_else(|| unreachable!("a slot is hex"))
    }

    /// The key of a code's record.
    pub fn code_key(&self, key: &CodeKey) -> Key {
        let mut name = Vec::with_capacity(37);
        name.extend_from_slice(b"code\0");
        name.extend_from_slice(key.as_bytes());
        self.key("code", &name)
    }

    /// The key of a counter's record (a guessing budget or a mint quota).
    pub fn counter_key(&self, key: &CounterKey) -> Key {
        self.key("ctr", &key.to_bytes())
    }

    fn key(&self, kind: &str, name: &[u8]) -> Key {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.name_key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(name);
        let slot = crate::secret::encode_hex(&mac.finalize().into_bytes()[..SLOT_BYTES]);
        Key::new(kind, &slot).unwrap_or_else(|| unreachable!("a kind and hex make a key"))
    }

    /// A fresh value for `key`: a random nonce (its version), then the sealing of the lineage
    /// (a count byte and the tags), the expiry (Unix ms, 8 bytes big-endian) and the JSON.
    fn seal(
        &self,
        key: &Key,
        lineage: &[[u8; TAG_LEN]],
        expires_at: DateTime<Utc>,
        json: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::os_rng().fill_bytes(&mut nonce);
        let lineage = &lineage[..lineage.len().min(LINEAGE_LEN)];
        let mut framed = Zeroizing::new(Vec::with_capacity(
            1 + lineage.len() * TAG_LEN + 8 + json.len(),
        ));
        framed.push(lineage.len() as u8);
        for tag in lineage {
            framed.extend_from_slice(tag);
        }
        framed.extend_from_slice(&expires_at.timestamp_millis().to_be_bytes());
        framed.extend_from_slice(json);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: framed.as_slice(),
                    aad: key.as_str().as_bytes(),
                },
            )
            .map_err(|_| StoreError::Corrupt)?;
        let mut value = Vec::with_capacity(NONCE_LEN + sealed.len());
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&sealed);
        Ok(value)
    }

    /// Seals `framed` as it is (the fuzz harness: plaintext no writer of this crate makes).
    #[cfg(feature = "fuzz")]
    fn seal_framed(&self, key: &Key, framed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let nonce = [3u8; NONCE_LEN];
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: framed,
                    aad: key.as_str().as_bytes(),
                },
            )
            .map_err(|_| StoreError::Corrupt)?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Opens a value held at `key`; live if its expiry is after `now`.
    fn open(&self, key: &Key, value: &[u8], now: DateTime<Utc>) -> Result<Opened, StoreError> {
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
                        aad: key.as_str().as_bytes(),
                    },
                )
                .map_err(|_| StoreError::Corrupt)?,
        );
        let count = usize::from(*framed.first().ok_or(StoreError::Corrupt)?);
        if count > LINEAGE_LEN {
            return Err(StoreError::Corrupt);
        }
        let tags_end = 1 + count * TAG_LEN;
        let tags = framed.get(1..tags_end).ok_or(StoreError::Corrupt)?;
        let lineage = tags
            .chunks_exact(TAG_LEN)
            .map(|tag| {
                let mut bytes = [0; TAG_LEN];
                bytes.copy_from_slice(tag);
                bytes
            })
            .collect();
        let expiry: [u8; 8] = framed
            .get(tags_end..tags_end + 8)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(StoreError::Corrupt)?;
        let expires_ms = i64::from_be_bytes(expiry);
        let mut version = [0; NONCE_LEN];
        version.copy_from_slice(nonce);
        Ok(Opened {
            version,
            lineage,
            live: expires_ms > now.timestamp_millis(),
            json: Zeroizing::new(framed[tags_end + 8..].to_vec()),
        })
    }

    fn cached(&self, key: &Key) -> Option<Held> {
        crate::lock_unpoisoned(&self.cache).get(key)
    }

    fn remember(&self, key: &Key, held: Held) {
        crate::lock_unpoisoned(&self.cache).put(key, held);
    }

    fn forget(&self, key: &Key) {
        crate::lock_unpoisoned(&self.cache).forget(key);
    }

    /// What the value now at `key` says of a write of version `written` (or a delete: `None`)
    /// over `version` (`None`: the key held nothing). Each version is replaced by exactly one
    /// write (the swap compares it), and every value names the versions it descends from; so
    /// this write applied if the value is it or descends from it, and did not if the value is
    /// `version` or descends from `version` through another write. A chain that starts afresh
    /// (the record was deleted and created again) holds neither: a delete applied, a write did
    /// not (a record is emptied only when its contents' lifetimes end, long after a lost reply
    /// is read back).
    fn classify(
        &self,
        key: &Key,
        version: Option<&[u8; NONCE_LEN]>,
        written: Option<&[u8; NONCE_LEN]>,
        current: Option<&[u8]>,
    ) -> Outcome {
        let Some(current) = current else {
            return if written.is_none() {
                Outcome::Applied
            } else {
                Outcome::NotApplied
            };
        };
        let nonce = current.get(..NONCE_LEN).unwrap_or_default();
        if written.is_some_and(|w| w.as_slice() == nonce) {
            return Outcome::Applied;
        }
        // Liveness does not matter here: any time will do.
        let Ok(opened) = self.open(key, current, DateTime::<Utc>::MIN_UTC) else {
            return Outcome::Unknown;
        };
        let in_lineage = |v: &[u8; NONCE_LEN]| {
            opened
                .lineage
                .iter()
                .any(|tag| tag.as_slice() == &v[..TAG_LEN])
        };
        if written.is_some_and(in_lineage) {
            return Outcome::Applied;
        }
        if version.is_some_and(|v| v.as_slice() == nonce || in_lineage(v)) {
            return Outcome::NotApplied;
        }
        if opened.lineage.len() >= LINEAGE_LEN {
            return Outcome::Unknown;
        }
        if written.is_none() {
            Outcome::Applied
        } else {
            Outcome::NotApplied
        }
    }

    /// Loads `key` back after a swap whose reply was lost, until it answers (at most
    /// [`READ_BACK_ATTEMPTS`] loads), and tells whether the swap applied.
    async fn read_back(
        &self,
        key: &Key,
        version: Option<&[u8; NONCE_LEN]>,
        written: Option<&[u8; NONCE_LEN]>,
    ) -> Outcome {
        for attempt in 0..READ_BACK_ATTEMPTS {
            if attempt > 0 {
                self.store.pause(attempt).await;
            }
            match self.store.load(key).await {
                Ok(current) => return self.classify(key, version, written, current.as_deref()),
                // Down: no read will answer soon; the operation fails now, not later.
                Err(StoreError::Refused) => break,
                Err(_) => {}
            }
        }
        Outcome::Unknown
    }

    /// The read-apply-swap loop over a unit of keys (a network's record and its messages, or
    /// one code or counter), the first of which carries the lineage. `plan` gets the live JSON
    /// at each key. `assume` starts from those values, unverified, when nothing is remembered.
    /// `Ok(false)` when the plan was `None` on verified values.
    async fn update(
        &self,
        keys: &[&Key],
        now: DateTime<Utc>,
        assume: Option<Held>,
        mut plan: impl FnMut(&[Option<Zeroizing<Vec<u8>>>]) -> Result<Plan, StoreError> + Send,
    ) -> Result<bool, StoreError> {
        let main = keys[0];
        let mut next = self.cached(main).or(assume);
        let mut conflicts = 0;
        // The version of this operation's last write that lost its swap (a lost race, or a
        // lost reply read back as not applied): a later load holding it or a descendant means it
        // did apply after all.
        let mut pending: Option<[u8; NONCE_LEN]> = None;
        loop {
            let (held, verified) = match next.take() {
                Some(held) if held.len() == keys.len() => (held, false),
                _ => {
                    let held = self
                        .store
                        .load_many(keys)
                        .await
                        .inspect_err(|_| self.forget(main))?;
                    if held.len() != keys.len() {
                        self.forget(main);
                        return Err(StoreError::Corrupt);
                    }
                    (held, true)
                }
            };
            if let Some(written) = pending {
                if verified
                    && self.classify(main, None, Some(&written), held[0].as_deref())
                        == Outcome::Applied
                {
                    self.forget(main);
                    return Ok(true);
                }
            }
            let mut opened = Vec::with_capacity(keys.len());
            let mut unreadable = None;
            for (key, value) in keys.iter().zip(&held) {
                match value.as_deref().map(|value| self.open(key, value, now)) {
                    Some(Ok(value)) => opened.push(Some(value)),
                    Some(Err(err)) => {
                        unreadable = Some(err);
                        break;
                    }
                    None => opened.push(None),
                }
            }
            if let Some(err) = unreadable {
                self.forget(main);
                if !verified {
                    continue;
                }
                return Err(err);
            }
            let live: Vec<Option<Zeroizing<Vec<u8>>>> = opened
                .iter()
                .map(|value| {
                    value
                        .as_ref()
                        .filter(|value| value.live)
                        .map(|value| value.json.clone())
                })
                .collect();
            let Some(new) = plan(&live)? else {
                if !verified {
                    continue;
                }
                self.remember(main, held);
                return Ok(false);
            };
            let unchanged = new.len() == keys.len()
                && new.iter().zip(&live).all(|(new, old)| match (new, old) {
                    (Some((new, _)), Some(old)) => new.as_slice() == old.as_slice(),
                    (None, None) => true,
                    _ => false,
                });
            // An expired value not yet dropped is replaced like any other: its bytes are what
            // the swap expects.
            let nothing_held = held.iter().all(Option::is_none);
            if unchanged && (nothing_held || new.iter().any(Option::is_some)) {
                if !verified {
                    continue;
                }
                self.remember(main, held);
                return Ok(true);
            }
            let version = opened[0].as_ref().map(|value| value.version);
            let lineage = match &opened[0] {
                Some(value) => descend(&value.version, &value.lineage),
                None => Lineage::new(),
            };
            let cap = later(now, MAX_TTL + MAX_TTL);
            let mut sealed: Held = Vec::with_capacity(keys.len());
            let mut expiries = Vec::with_capacity(keys.len());
            for (i, (key, new)) in keys.iter().zip(&new).enumerate() {
                match new {
                    Some((json, expires_at)) => {
                        let expires_at = (*expires_at).min(cap);
                        let lineage: &[[u8; TAG_LEN]] = if i == 0 { &lineage } else { &[] };
                        sealed.push(Some(self.seal(key, lineage, expires_at, json)?));
                        expiries.push(Some(expires_at));
                    }
                    None => {
                        sealed.push(None);
                        expiries.push(None);
                    }
                }
            }
            let writes: Vec<Write<'_>> = keys
                .iter()
                .enumerate()
                .map(|(i, key)| {
                    let new = sealed[i].as_deref().zip(expiries[i]);
                    Write::new(key, held[i].as_deref(), new)
                })
                .collect();
            let written: Option<[u8; NONCE_LEN]> = sealed[0].as_ref().map(|value| {
                let mut nonce = [0; NONCE_LEN];
                nonce.copy_from_slice(&value[..NONCE_LEN]);
                nonce
            });
            let applied = match self.store.swap(&writes).await {
                Ok(applied) => applied,
                Err(StoreError::Unavailable) => {
                    self.forget(main);
                    match self
                        .read_back(main, version.as_ref(), written.as_ref())
                        .await
                    {
                        Outcome::Applied => true,
                        Outcome::NotApplied => false,
                        Outcome::Unknown => return Err(StoreError::Unavailable),
                    }
                }
                Err(err) => {
                    self.forget(main);
                    return Err(err);
                }
            };
            drop(writes);
            if applied {
                self.remember(main, sealed);
                return Ok(true);
            }
            self.forget(main);
            pending = written;
            if !verified {
                // A remembered version gone stale is no contention.
                continue;
            }
            conflicts += 1;
            if conflicts >= self.max_attempts {
                return Err(StoreError::Contention);
            }
            self.store.pause(conflicts).await;
        }
    }

    /// One record at one key: `apply` gets the live record (if any) and returns the new one
    /// (`None`: nothing to do); `expiry` says until when it is kept (`None`, or not after
    /// `now`: deleted).
    async fn update_one<T: Serialize + DeserializeOwned>(
        &self,
        key: &Key,
        now: DateTime<Utc>,
        assume: Option<Held>,
        mut apply: impl FnMut(Option<T>) -> Option<T> + Send,
        expiry: impl Fn(&T) -> Option<DateTime<Utc>> + Send + Sync,
    ) -> Result<bool, StoreError> {
        self.update(&[key], now, assume, |live| {
            let record = match &live[0] {
                Some(json) => {
                    Some(serde_json::from_slice::<T>(json).map_err(|_| StoreError::Corrupt)?)
                }
                None => None,
            };
            let Some(record) = apply(record) else {
                return Ok(None);
            };
            let new = match expiry(&record).filter(|at| *at > now) {
                Some(at) => Some((encode(&record)?, at)),
                None => None,
            };
            Ok(Some(vec![new]))
        })
        .await
    }
}

/// A record's JSON, zeroized when dropped.
fn encode<T: Serialize>(record: &T) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    serde_json::to_vec(record)
        .map(Zeroizing::new)
        .map_err(|_| StoreError::Corrupt)
}

#[async_trait]
impl<S: Store> Backend for Records<S> {
    async fn update_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        create: bool,
        f: &mut NetworkFn<'_>,
    ) -> Result<bool, StoreError> {
        let key = self.network_key(&network);
        let messages_key = self.messages_key(&network);
        self.update(&[&key, &messages_key], now, None, |live| {
            let mut record = match &live[0] {
                Some(json) => {
                    let mut record: NetworkRecord =
                        serde_json::from_slice(json).map_err(|_| StoreError::Corrupt)?;
                    let messages: Messages = match &live[1] {
                        Some(json) => {
                            serde_json::from_slice(json).map_err(|_| StoreError::Corrupt)?
                        }
                        None => Vec::new(),
                    };
                    record.restore_messages(messages, now);
                    record.prune(now, config);
                    record
                }
                None if create => NetworkRecord::default(),
                None => return Ok(None),
            };
            f(&mut record);
            let expires_at = if record.is_empty() {
                None
            } else {
                record.expires_at(config).filter(|at| *at > now)
            };
            let messages_expire = record.messages_expire_at().filter(|at| *at > now);
            let messages = record.take_messages();
            let queued = match (expires_at, messages_expire) {
                (Some(_), Some(at)) if !messages.is_empty() => Some((encode(&messages)?, at)),
                _ => None,
            };
            drop(messages);
            let main = match expires_at {
                Some(at) => Some((encode(&record)?, at)),
                None => None,
            };
            Ok(Some(vec![main, queued]))
        })
        .await
    }

    /// One load of the network's record, without its queued messages (no reader needs them).
    async fn read_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        _config: &ServerConfig,
        f: &mut ReadFn<'_>,
    ) -> Result<bool, StoreError> {
        let key = self.network_key(&network);
        let Some(value) = self.store.load(&key).await? else {
            return Ok(false);
        };
        let opened = self.open(&key, &value, now)?;
        if !opened.live {
            return Ok(false);
        }
        let record: NetworkRecord =
            serde_json::from_slice(&opened.json).map_err(|_| StoreError::Corrupt)?;
        f(&record);
        Ok(true)
    }

    /// One swap when the key is free (expecting nothing, unverified), else a load first.
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
        let store_key = self.code_key(key);
        self.update_one::<CodeRecord>(
            &store_key,
            now,
            Some(vec![None]),
            |held| match held {
                Some(live) if live.is_live(now) => None,
                _ => Some(record.clone()),
            },
            |record| Some(record.expires_at),
        )
        .await
    }

    async fn update_code(
        &self,
        key: &CodeKey,
        now: DateTime<Utc>,
        f: &mut CodeFn<'_>,
    ) -> Result<bool, StoreError> {
        let store_key = self.code_key(key);
        self.update_one::<CodeRecord>(
            &store_key,
            now,
            None,
            |record| {
                let mut record = record.filter(|record| record.is_live(now))?;
                f(&mut record);
                Some(record)
            },
            |record| Some(record.expires_at),
        )
        .await
    }

    /// Deletes the code's record, whatever it holds.
    async fn delete_code(&self, key: &CodeKey) -> Result<(), StoreError> {
        let store_key = self.code_key(key);
        // Any time will do: a delete does not look at the record.
        let now = DateTime::<Utc>::MIN_UTC;
        self.update(&[&store_key], now, None, |live| {
            Ok(live[0].is_some().then(|| vec![None]))
        })
        .await
        .map(|_| ())
    }

    /// One swap of the counter's record: admitting a guess and charging it are one atomic step
    /// across every instance.
    async fn update_counter(
        &self,
        key: &CounterKey,
        now: DateTime<Utc>,
        f: &mut CounterFn<'_>,
    ) -> Result<(), StoreError> {
        let store_key = self.counter_key(key);
        let now_ms = now.timestamp_millis();
        self.update_one::<CounterRecord>(
            &store_key,
            now,
            None,
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

    async fn purge(&self, now: DateTime<Utc>, _config: &ServerConfig) -> Result<(), StoreError> {
        self.store.purge(now).await
    }
}

/// The fuzz harness's part (`fuzz::adapter_decode`): a store handing back `data`, as
/// stored bytes and as a value sealed under the right key (a compromised instance), at a
/// network's, a code's and a counter's keys: every operation answers without panicking, and an
/// admission read from it never passes the budget's limit.
#[cfg(feature = "fuzz")]
pub(crate) fn fuzz(data: &[u8]) {
    use crate::server::store::MemoryBytes;
    let ready = |future: std::pin::Pin<&mut dyn std::future::Future<Output = ()>>| {
        let waker = std::task::Waker::noop();
        let polled = future.poll(&mut std::task::Context::from_waker(waker));
        assert!(polled.is_ready(), "the in-memory store never waits");
    };
    let records = Records::new(
        MemoryBytes::default(),
        RecordsConfig::new(StoreKey::from_bytes([7; 32])).max_attempts(2),
    );
    let network = PublicNetwork::from_ip(std::net::IpAddr::from([203, 0, 113, 7]), 64);
    let code = CodeKey::instance_claim(&crate::InstanceId::from_bytes([1; 16]));
    let counter = CounterKey::network(&network);
    let keys = [
        records.network_key(&network),
        records.messages_key(&network),
        records.code_key(&code),
        records.counter_key(&counter),
    ];
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let far = DateTime::<Utc>::MAX_UTC;
    let config = ServerConfig::default();
    for sealed in [false, true] {
        for key in &keys {
            let value = if sealed {
                let mut framed = vec![0u8];
                framed.extend_from_slice(&far.timestamp_millis().to_be_bytes());
                framed.extend_from_slice(data);
                // Lineage count and expiry from the data when it is long enough.
                let framed = if data.len() > 9 { data } else { &framed };
                match records.seal_framed(key, framed) {
                    Ok(value) => value,
                    Err(_) => continue,
                }
            } else {
                data.to_vec()
            };
            let _ = records.classify(key, None, Some(&[1; NONCE_LEN]), Some(&value));
            let writes = [Write::new(key, None, Some((&value, far)))];
            ready(std::pin::pin!(async {
                let _ = records.store.swap(&writes).await;
            }));
        }
        ready(std::pin::pin!(async {
            let _ = records
                .read_network(network, now, &config, &mut |record| {
                    let _ = record.discover(now, &config);
                })
                .await;
            let _ = records
                .update_network(network, now, &config, true, &mut |record| {
                    record.prune(now, &config);
                })
                .await;
            let _ = records.update_code(&code, now, &mut |_| {}).await;
            let mut admitted = None;
            let _ = records
                .update_counter(&counter, now, &mut |record| {
                    let before = record.live(now.timestamp_millis());
                    let now_ms = now.timestamp_millis();
                    admitted = Some((before, record.admit(now_ms, now_ms + 1, 3, Some(1))));
                })
                .await;
            if let Some((before, crate::server::budget::Admission::Admitted { .. })) = admitted {
                assert!(before < 3);
            }
            let _ = records.delete_code(&code).await;
        }));
        ready(std::pin::pin!(async {
            let _ = records.store.purge(far).await;
        }));
    }
}

#[cfg(test)]
mod tests;
