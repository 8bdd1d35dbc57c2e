// (931 lines, 356 of them docs and doc examples: one concern, because it is the budgets' records and pure functions; their charging steps are in ops/budget.rs.)
//! Guessing budgets and mint quotas: every limit on guesses and on live codes, in one place.
//! It must not let a guess be checked before its charge stands, nor read a clock (`now` is an
//! argument); its only I/O is the store's, through [`Backend`](super::Backend).
//!
//! **Count before you check.** A guess (a link request's secret, a code redemption, an Obico
//! verify, passcode claim or an Obico poll's passcode lookup) is charged against each of its budgets *before* it is checked, each
//! charge one atomic store step ([`Backend::update_counter`](super::Backend::update_counter)) that
//! admits the guess only while the budget has room. A guess that turns out right (or is refused
//! for a reason that is no guess, such as a contested agent) is refunded afterwards; a wrong one
//! stays charged. So however many guesses arrive at once, on however many server instances
//! sharing one store, at most `threshold` wrong guesses of one budget are ever checked in one
//! window: the check is never reached without a charge already standing.
//!
//! **Levels.** A guess from a public network is charged at every level of its address: by
//! default the IPv4 address and its /24, or the IPv6 /64, /48 and /32 (each with its own
//! threshold, [`Budgets::ipv4_levels`], [`Budgets::ipv6_levels`]). A guess at a short manual
//! code is also charged against the **global** budget of that code space, which bounds the
//! wrong guesses at short codes across all networks per window
//! ([`Budgets::global_code_guesses`]). Each level is its own record, so the scheme needs no
//! transaction across records: a guess is checked only if every level admitted it, and each
//! level admits at most its threshold.
//!
//! **Windows.** A budget counts charges for a sliding `window` (10 minutes by default): each
//! charge expires a `window` after it was made (rounded up to a tenth of the window), and a
//! budget admits while fewer than `threshold` charges are live. The charge that fills a budget
//! also locks it for `lockout` (10 minutes). So any interval of one window holds at most
//! `threshold` wrong guesses of a budget, and a code that lives `T` sees at most
//! `threshold × ⌈T / window⌉` from one budget: the arithmetic of the guessing-budget table in
//! `SECURITY.md`.
//!
//! **When the global budget is spent** the short code space is *suspended*, never the service:
//! short codes are refused unchecked (`codes_suspended`, so the user asks for a new code) and
//! new manual codes are minted in the long [fallback format](Budgets::fallback_format) (10
//! characters, about 2⁴⁹ codes) until the budget has room again. An attacker who keeps the
//! budget spent makes users type longer codes; no one is locked out.
//!
//! **Quotas.** Live manual codes are capped per account ([`Budgets::codes_per_account`]) and in
//! total per format ([`Budgets::live_codes`]: far below the 10⁶ short codes, so that a guess
//! hits a live code with a chance of at most 1 in 1,000 and minting never runs out of free
//! codes); live Obico passcodes per network ([`Budgets::passcodes_per_network`]) and in
//! total ([`Budgets::live_passcodes`]). A quota charge is made at mint time, in the same atomic
//! way. It stands while the code lives (a code given back after a failed hook still lives, and
//! keeps its slot) and is refunded exactly once when the code's life ends early: when the link
//! it was redeemed for completes, whichever attempt or instance completes it (marked in one
//! atomic write of the code, [`CodeRecord::release_quota`](super::CodeRecord::release_quota)),
//! or when its mint failed. A passcode's slot stands until the passcode's record expires (a spent
//! passcode's record is what tells its agent to take a new one).

use chrono::{DateTime, TimeDelta, Utc};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::limits::MAX_TTL;
use super::time::later;
use crate::addr::PublicNetwork;
use crate::code::{CodeFormat, LinkCode};
use crate::error::ConfigError;
pub use crate::event::vocab::CodeSpace;
use crate::id::AccountId;

/// The most buckets a counter record keeps; a charge past it joins the latest bucket (which
/// only makes the charge live longer).
const MAX_BUCKETS: usize = 64;

/// What one counter record counts (the key of a [`CounterRecord`] in a store).
///
/// ```
/// use lanlink::server::{CodeSpace, CounterKey};
/// let network = lanlink::PublicNetwork::from_ip("203.0.113.7".parse()?, 64);
/// assert!(matches!(CounterKey::network(&network), CounterKey::Guesses(_)));
/// assert_ne!(CounterKey::SpaceGuesses(CodeSpace::Manual), CounterKey::LiveCodes(CodeSpace::Manual));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CounterKey {
    /// Failed guesses from an address prefix (one level of a network's budget).
    Guesses(IpNet),
    /// Failed guesses at one code space, from every network (the global budget).
    SpaceGuesses(CodeSpace),
    /// Live manual codes of one account.
    AccountCodes(AccountId),
    /// Live manual codes of one space, across all accounts.
    LiveCodes(CodeSpace),
    /// Live Obico passcodes of one public network.
    NetworkPasscodes(PublicNetwork),
    /// Live Obico passcodes of every network together.
    LivePasscodes,
}

impl CounterKey {
    /// The budget of a network's own address (its finest level): the IPv4 address, or the
    /// network's IPv6 prefix.
    ///
    /// ```
    /// use lanlink::server::CounterKey;
    /// let network = lanlink::PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// assert_eq!(
    ///     CounterKey::network(&network),
    ///     CounterKey::Guesses("203.0.113.7/32".parse().unwrap())
    /// );
    /// ```
    pub fn network(network: &PublicNetwork) -> Self {
        Self::Guesses(match network {
            PublicNetwork::V4(ip) => IpNet::V4(Ipv4Net::from(*ip)),
            PublicNetwork::V6(net) => IpNet::V6(*net),
        })
    }

    /// A stable byte encoding (what a shared store hashes into its key name).
    ///
    /// ```
    /// use lanlink::server::{CodeSpace, CounterKey};
    /// let a = CounterKey::SpaceGuesses(CodeSpace::Manual).to_bytes();
    /// let b = CounterKey::LiveCodes(CodeSpace::Manual).to_bytes();
    /// assert_ne!(a, b);
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"ctr\0".to_vec();
        match self {
            Self::Guesses(IpNet::V4(net)) => {
                out.extend_from_slice(b"g4");
                out.extend_from_slice(&net.network().octets());
                out.push(net.prefix_len());
            }
            Self::Guesses(IpNet::V6(net)) => {
                out.extend_from_slice(b"g6");
                out.extend_from_slice(&net.network().octets());
                out.push(net.prefix_len());
            }
            Self::SpaceGuesses(space) => out.extend_from_slice(&[b's', space.tag()]),
            Self::AccountCodes(account) => {
                out.push(b'a');
                out.extend_from_slice(account.as_str().as_bytes());
            }
            Self::LiveCodes(space) => out.extend_from_slice(&[b'l', space.tag()]),
            Self::LivePasscodes => out.push(b'p'),
            Self::NetworkPasscodes(network) => {
                out.push(b'n');
                match network {
                    PublicNetwork::V4(ip) => out.extend_from_slice(&ip.octets()),
                    PublicNetwork::V6(net) => {
                        out.extend_from_slice(&net.network().octets());
                        out.push(net.prefix_len());
                    }
                }
            }
        }
        out
    }
}

/// A count of live charges, each expiring at its own time, and an optional lock: the record
/// behind one budget or quota. Stored whole and replaced atomically, like every record.
///
/// ```
/// use lanlink::server::CounterRecord;
/// let record = CounterRecord::default();
/// assert_eq!(record.live(0), 0);
/// assert!(!record.is_locked(0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRecord {
    /// `(expires_ms, count)`, sorted by expiry.
    #[serde(rename = "c", default, deserialize_with = "bounded_buckets")]
    buckets: SmallVec<[(i64, u32); 2]>,
    #[serde(
        rename = "l",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_lock"
    )]
    locked_until_ms: Option<i64>,
}

/// The charges of a stored counter, their expiries bounded when decoded (see
/// [`unix_ms`](super::record::unix_ms)).
fn bounded_buckets<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<SmallVec<[(i64, u32); 2]>, D::Error> {
    let mut buckets = SmallVec::<[(i64, u32); 2]>::deserialize(d)?;
    for (expires_ms, _) in &mut buckets {
        *expires_ms = super::time::unix_ms::clamp(*expires_ms);
    }
    Ok(buckets)
}

/// A stored lock's end, bounded when decoded.
fn bounded_lock<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.map(super::time::unix_ms::clamp))
}

/// Whether [`CounterRecord::admit`] admitted a charge.
///
/// ```
/// use lanlink::server::{Admission, CounterRecord};
/// let mut record = CounterRecord::default();
/// let (now, expires, limit, lockout) = (0, 60_000, 2, Some(600_000));
/// assert_eq!(record.admit(now, expires, limit, lockout), Admission::Admitted { filled: false });
/// assert_eq!(record.admit(now, expires, limit, lockout), Admission::Admitted { filled: true });
/// assert_eq!(record.admit(now, expires, limit, lockout), Admission::Refused);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted.
    Admitted {
        /// Whether this charge filled the budget (and locked it).
        filled: bool,
    },
    /// The budget is full or locked: not charged.
    Refused,
}

impl CounterRecord {
    /// How many charges are live at `now_ms` (Unix milliseconds).
    ///
    /// ```
    /// use lanlink::server::CounterRecord;
    /// let mut record = CounterRecord::default();
    /// record.admit(0, 1_000, 10, None);
    /// record.admit(0, 5_000, 10, None);
    /// assert_eq!(record.live(0), 2);
    /// assert_eq!(record.live(1_000), 1, "the first charge expired");
    /// assert_eq!(record.live(5_000), 0);
    /// ```
    pub fn live(&self, now_ms: i64) -> u64 {
        self.buckets
            .iter()
            .filter(|(expires, _)| *expires > now_ms)
            .map(|(_, count)| u64::from(*count))
            .sum()
    }

    /// Whether the record is locked at `now_ms`.
    ///
    /// ```
    /// use lanlink::server::CounterRecord;
    /// let mut record = CounterRecord::default();
    /// record.admit(0, 60_000, 1, Some(600_000)); // fills a budget of 1: locked 10 minutes
    /// assert!(record.is_locked(599_999));
    /// assert!(!record.is_locked(600_000));
    /// ```
    pub fn is_locked(&self, now_ms: i64) -> bool {
        self.locked_until_ms.is_some_and(|t| t > now_ms)
    }

    /// When the lock ends (Unix milliseconds), if one is set.
    ///
    /// ```
    /// use lanlink::server::CounterRecord;
    /// let mut record = CounterRecord::default();
    /// assert_eq!(record.locked_until_ms(), None);
    /// record.admit(1_000, 61_000, 1, Some(600_000));
    /// assert_eq!(record.locked_until_ms(), Some(601_000));
    /// ```
    pub fn locked_until_ms(&self) -> Option<i64> {
        self.locked_until_ms
    }

    /// Whether the record holds nothing (and may be deleted).
    ///
    /// ```
    /// use lanlink::server::CounterRecord;
    /// let mut record = CounterRecord::default();
    /// assert!(record.is_empty());
    /// record.admit(0, 1_000, 5, None);
    /// assert!(!record.is_empty());
    /// record.prune(1_000);
    /// assert!(record.is_empty(), "may be deleted");
    /// ```
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty() && self.locked_until_ms.is_none()
    }

    /// The last time anything in the record is live (Unix milliseconds).
    ///
    /// ```
    /// use lanlink::server::CounterRecord;
    /// let mut record = CounterRecord::default();
    /// assert_eq!(record.expires_ms(), None);
    /// record.admit(0, 60_000, 1, Some(600_000));
    /// assert_eq!(record.expires_ms(), Some(600_000), "the lock outlives the charge");
    /// ```
    pub fn expires_ms(&self) -> Option<i64> {
        let last = self.buckets.iter().map(|(t, _)| *t).max();
        last.max(self.locked_until_ms)
    }

    /// Drops expired charges and a finished lock.
    ///
    /// ```
    /// use lanlink::server::CounterRecord;
    /// let mut record = CounterRecord::default();
    /// record.admit(0, 1_000, 1, Some(2_000));
    /// record.prune(2_000);
    /// assert!(!record.is_locked(2_000) && record.live(2_000) == 0);
    /// assert_eq!(record.locked_until_ms(), None);
    /// ```
    pub fn prune(&mut self, now_ms: i64) {
        self.buckets
            .retain(|(expires, count)| *expires > now_ms && *count > 0);
        if self.locked_until_ms.is_some_and(|t| t <= now_ms) {
            self.locked_until_ms = None;
        }
    }

    /// Admits one charge expiring at `expires_ms` while fewer than `limit` are live and the
    /// record is not locked; the charge that makes `limit` locks it until `now_ms + lockout_ms`
    /// (when given).
    ///
    /// ```
    /// use lanlink::server::{Admission, CounterRecord};
    /// let mut record = CounterRecord::default();
    /// // Without a lockout, a full budget refuses until a charge expires.
    /// assert!(matches!(record.admit(0, 1_000, 1, None), Admission::Admitted { filled: true }));
    /// assert_eq!(record.admit(500, 1_500, 1, None), Admission::Refused);
    /// assert!(matches!(record.admit(1_000, 2_000, 1, None), Admission::Admitted { .. }));
    /// ```
    pub fn admit(
        &mut self,
        now_ms: i64,
        expires_ms: i64,
        limit: u32,
        lockout_ms: Option<i64>,
    ) -> Admission {
        self.prune(now_ms);
        let live = self.live(now_ms);
        if self.is_locked(now_ms) || live >= u64::from(limit) {
            return Admission::Refused;
        }
        let full = self.buckets.len() >= MAX_BUCKETS;
        match self.buckets.iter_mut().find(|(t, _)| *t == expires_ms) {
            Some((_, count)) => *count = count.saturating_add(1),
            None if full => {
                // Join the latest bucket, moved to the later expiry: the charge lives at least
                // as long as asked.
                if let Some(last) = self.buckets.last_mut() {
                    last.0 = last.0.max(expires_ms);
                    last.1 = last.1.saturating_add(1);
                }
            }
            None => {
                let at = self.buckets.partition_point(|(t, _)| *t < expires_ms);
                self.buckets.insert(at, (expires_ms, 1));
            }
        }
        let filled = live + 1 >= u64::from(limit);
        if filled {
            if let Some(lockout) = lockout_ms {
                self.locked_until_ms = Some(now_ms.saturating_add(lockout));
            }
        }
        Admission::Admitted { filled }
    }

    /// Takes back one charge made for `expires_ms` (a guess that was right, or no guess). A lock
    /// that stood for `limit` charges is lifted once fewer are live.
    ///
    /// ```
    /// use lanlink::server::CounterRecord;
    /// let mut record = CounterRecord::default();
    /// record.admit(0, 60_000, 1, Some(600_000));
    /// assert!(record.is_locked(0));
    /// // The guess was right after all: its charge is taken back and the lock lifted.
    /// record.refund(0, 60_000, 1);
    /// assert!(!record.is_locked(0) && record.live(0) == 0);
    /// ```
    pub fn refund(&mut self, now_ms: i64, expires_ms: i64, limit: u32) {
        // The charge sits in its own bucket or, past MAX_BUCKETS, in a later one.
        let bucket = self
            .buckets
            .iter_mut()
            .find(|(t, count)| *t >= expires_ms && *count > 0);
        if let Some((_, count)) = bucket {
            *count -= 1;
        }
        self.prune(now_ms);
        if self.live(now_ms) < u64::from(limit) {
            self.locked_until_ms = None;
        }
    }
}

/// One level of a network's guessing budget: the prefix length and how many wrong guesses its
/// prefix may make per window. The same levels share connections among prefixes
/// ([`ConnectionShares`](super::connections::ConnectionShares)), where the threshold is how
/// many connections the prefix may hold at once.
///
/// ```
/// use lanlink::server::Level;
/// let level = Level { prefix: 48, threshold: 16 };
/// assert_eq!(level.threshold, 16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// The prefix length (IPv4 0..=32, IPv6 0..=128).
    pub prefix: u8,
    /// Wrong guesses admitted per window (at least 1); for a connection share, connections
    /// open at once.
    pub threshold: u32,
}

/// Every guessing budget and mint quota of a server. Set on
/// [`ServerConfig::budgets`](super::ServerConfig::budgets); see the [module docs](self).
///
/// ```
/// use lanlink::server::{Budgets, Level, ServerConfig};
/// let budgets = Budgets::default()
///     .ipv6_levels(vec![Level { prefix: 64, threshold: 5 }, Level { prefix: 40, threshold: 20 }])
///     .global_code_guesses(500);
/// let config = ServerConfig::default().budgets(budgets);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    pub(crate) ipv4: Vec<Level>,
    pub(crate) ipv6: Vec<Level>,
    pub(crate) window: TimeDelta,
    pub(crate) lockout: TimeDelta,
    pub(crate) global_code_guesses: u32,
    pub(crate) codes_per_account: u32,
    pub(crate) live_codes: u32,
    pub(crate) live_fallback_codes: u32,
    pub(crate) passcodes_per_network: u32,
    pub(crate) live_passcodes: u32,
    pub(crate) fallback_format: CodeFormat,
}

/// The alphabet of fallback codes: digits and capitals without 0/O, 1/I/L and U.
const FALLBACK_ALPHABET: &str = "ABCDEFGHJKMNPQRSTVWXYZ23456789";

impl Default for Budgets {
    /// IPv4: the address 5, its /24 32. IPv6: /64 5, /48 16, /32 48. A window and a lockout of
    /// 10 minutes. 1,000 wrong guesses at short codes per window across all networks; 5 live
    /// manual codes per account; 1,000 live short codes and 1,000,000 live fallback codes in
    /// total; 16 live Obico passcodes per network and 100,000 in total; fallback codes of 10
    /// characters from 30 symbols.
    fn default() -> Self {
        Self {
            ipv4: vec![
                Level {
                    prefix: 32,
                    threshold: 5,
                },
                Level {
                    prefix: 24,
                    threshold: 32,
                },
            ],
            ipv6: vec![
                Level {
                    prefix: 64,
                    threshold: 5,
                },
                Level {
                    prefix: 48,
                    threshold: 16,
                },
                Level {
                    prefix: 32,
                    threshold: 48,
                },
            ],
            window: TimeDelta::minutes(10),
            lockout: TimeDelta::minutes(10),
            global_code_guesses: 1000,
            codes_per_account: 5,
            live_codes: 1000,
            live_fallback_codes: 1_000_000,
            passcodes_per_network: 16,
            live_passcodes: 100_000,
            fallback_format: CodeFormat::new(10, FALLBACK_ALPHABET)
                .unwrap_or_else(|_| unreachable!("a valid format")),
        }
    }
}

impl Budgets {
    /// The IPv4 levels (prefix 0..=32, each threshold at least 1).
    ///
    /// ```
    /// use lanlink::server::{Budgets, Level, ServerConfig};
    /// use lanlink::ConfigError;
    /// let levels = vec![Level { prefix: 32, threshold: 5 }, Level { prefix: 16, threshold: 100 }];
    /// assert!(ServerConfig::default().budgets(Budgets::default().ipv4_levels(levels)).validate().is_ok());
    /// let none = Budgets::default().ipv4_levels(Vec::new());
    /// assert_eq!(ServerConfig::default().budgets(none).validate(), Err(ConfigError::Lockout));
    /// ```
    pub fn ipv4_levels(mut self, levels: Vec<Level>) -> Self {
        self.ipv4 = levels;
        self
    }

    /// The IPv6 levels (prefix 0..=128). A level finer than the server's IPv6 grouping prefix
    /// counts at the grouping prefix.
    ///
    /// ```
    /// use lanlink::server::{Budgets, Level, ServerConfig};
    /// use lanlink::ConfigError;
    /// let bad = Budgets::default().ipv6_levels(vec![Level { prefix: 129, threshold: 5 }]);
    /// assert_eq!(ServerConfig::default().budgets(bad).validate(), Err(ConfigError::Lockout));
    /// let zero = Budgets::default().ipv6_levels(vec![Level { prefix: 64, threshold: 0 }]);
    /// assert_eq!(ServerConfig::default().budgets(zero).validate(), Err(ConfigError::Lockout));
    /// ```
    pub fn ipv6_levels(mut self, levels: Vec<Level>) -> Self {
        self.ipv6 = levels;
        self
    }

    /// The window of every guessing budget (1 s to [`MAX_TTL`]).
    ///
    /// ```
    /// use lanlink::chrono::TimeDelta;
    /// use lanlink::server::{Budgets, ServerConfig};
    /// use lanlink::ConfigError;
    /// let ok = Budgets::default().window(TimeDelta::minutes(30));
    /// assert!(ServerConfig::default().budgets(ok).validate().is_ok());
    /// let short = Budgets::default().window(TimeDelta::milliseconds(500));
    /// assert_eq!(ServerConfig::default().budgets(short).validate(), Err(ConfigError::Ttl));
    /// ```
    pub fn window(mut self, window: TimeDelta) -> Self {
        self.window = window;
        self
    }

    /// How long a filled guessing budget stays locked (1 s to [`MAX_TTL`]).
    ///
    /// ```
    /// use lanlink::chrono::TimeDelta;
    /// use lanlink::server::{Budgets, ServerConfig, MAX_TTL};
    /// use lanlink::ConfigError;
    /// let long = Budgets::default().lockout(MAX_TTL + TimeDelta::seconds(1));
    /// assert_eq!(ServerConfig::default().budgets(long).validate(), Err(ConfigError::Ttl));
    /// assert!(ServerConfig::default().budgets(Budgets::default().lockout(TimeDelta::hours(1))).validate().is_ok());
    /// ```
    pub fn lockout(mut self, lockout: TimeDelta) -> Self {
        self.lockout = lockout;
        self
    }

    /// Wrong guesses at short manual codes admitted per window from all networks together.
    ///
    /// ```
    /// use lanlink::server::{Budgets, ServerConfig};
    /// use lanlink::ConfigError;
    /// let zero = Budgets::default().global_code_guesses(0);
    /// assert_eq!(ServerConfig::default().budgets(zero).validate(), Err(ConfigError::Quota));
    /// ```
    pub fn global_code_guesses(mut self, limit: u32) -> Self {
        self.global_code_guesses = limit;
        self
    }

    /// Live manual codes one account may hold.
    ///
    /// ```
    /// # use lanlink::server::{Budgets, Server, ServerConfig};
    /// # use lanlink::{AccountId, Refusal};
    /// # let mut fut = std::pin::pin!(async {
    /// let config = ServerConfig::default().budgets(Budgets::default().codes_per_account(1));
    /// let server = Server::new(config).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let alice = AccountId::new("alice").unwrap();
    /// let mut rng = lanlink::os_rng();
    /// assert!(server.mint_code(now, &mut rng, &alice).await.is_ok());
    /// assert_eq!(server.mint_code(now, &mut rng, &alice).await.unwrap_err(), Refusal::MintQuota);
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn codes_per_account(mut self, limit: u32) -> Self {
        self.codes_per_account = limit;
        self
    }

    /// Live short manual codes in total (past it, mints use the fallback format); at most a
    /// hundredth of the short format's space.
    ///
    /// ```
    /// use lanlink::server::{Budgets, ServerConfig};
    /// use lanlink::ConfigError;
    /// // At most a hundredth of the 10^6 six-digit codes may be live.
    /// let ok = Budgets::default().live_codes(10_000);
    /// assert!(ServerConfig::default().budgets(ok).validate().is_ok());
    /// let crowded = Budgets::default().live_codes(10_001);
    /// assert_eq!(ServerConfig::default().budgets(crowded).validate(), Err(ConfigError::Quota));
    /// ```
    pub fn live_codes(mut self, limit: u32) -> Self {
        self.live_codes = limit;
        self
    }

    /// Live fallback codes in total (past it, mints are refused with `mint_quota`).
    ///
    /// ```
    /// use lanlink::server::{Budgets, ServerConfig};
    /// use lanlink::ConfigError;
    /// let zero = Budgets::default().live_fallback_codes(0);
    /// assert_eq!(ServerConfig::default().budgets(zero).validate(), Err(ConfigError::Quota));
    /// ```
    pub fn live_fallback_codes(mut self, limit: u32) -> Self {
        self.live_fallback_codes = limit;
        self
    }

    /// Live Obico passcodes one public network may hold.
    ///
    /// ```
    /// use lanlink::server::{Budgets, ServerConfig};
    /// use lanlink::ConfigError;
    /// assert!(ServerConfig::default().budgets(Budgets::default().passcodes_per_network(4)).validate().is_ok());
    /// let zero = Budgets::default().passcodes_per_network(0);
    /// assert_eq!(ServerConfig::default().budgets(zero).validate(), Err(ConfigError::Quota));
    /// ```
    pub fn passcodes_per_network(mut self, limit: u32) -> Self {
        self.passcodes_per_network = limit;
        self
    }

    /// Live Obico passcodes in total, from every network (past it, polls are answered without a
    /// new passcode). At most a hundredth of the passcode format's space counts: a smaller format
    /// lowers the cap, so that minting never runs out of free passcodes.
    ///
    /// ```
    /// use lanlink::server::{Budgets, ServerConfig};
    /// use lanlink::ConfigError;
    /// let zero = Budgets::default().live_passcodes(0);
    /// assert_eq!(ServerConfig::default().budgets(zero).validate(), Err(ConfigError::Quota));
    /// ```
    pub fn live_passcodes(mut self, limit: u32) -> Self {
        self.live_passcodes = limit;
        self
    }

    /// The format of manual codes minted while the short space is suspended or full (at least
    /// 2⁴⁰ codes).
    ///
    /// ```
    /// use lanlink::server::{Budgets, ServerConfig};
    /// use lanlink::{CodeFormat, ConfigError};
    /// // 10^12 codes is under 2^40: too few for the fallback.
    /// let small = Budgets::default().fallback_format(CodeFormat::new(12, "0123456789")?);
    /// assert_eq!(ServerConfig::default().budgets(small).validate(), Err(ConfigError::CodeLength));
    /// let big = Budgets::default().fallback_format(CodeFormat::new(13, "0123456789")?);
    /// assert!(ServerConfig::default().budgets(big).validate().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fallback_format(mut self, format: CodeFormat) -> Self {
        self.fallback_format = format;
        self
    }

    /// Sets the threshold of the finest level of each family (the IPv4 address, the IPv6
    /// grouping prefix) and raises any coarser level below it: coarser levels are never
    /// stricter than the finest.
    pub(crate) fn set_network_threshold(&mut self, threshold: u32) {
        for levels in [&mut self.ipv4, &mut self.ipv6] {
            let finest = levels.iter().map(|l| l.prefix).max();
            for level in levels.iter_mut() {
                if Some(level.prefix) == finest {
                    level.threshold = threshold;
                } else {
                    level.threshold = level.threshold.max(threshold);
                }
            }
        }
    }

    pub(crate) fn validate(&self, code_format: &CodeFormat) -> Result<(), ConfigError> {
        let levels_ok = |levels: &[Level], max: u8| {
            !levels.is_empty()
                && levels.len() <= 8
                && levels.iter().all(|l| l.prefix <= max && l.threshold > 0)
        };
        if !levels_ok(&self.ipv4, 32) || !levels_ok(&self.ipv6, 128) {
            return Err(ConfigError::Lockout);
        }
        let span_ok = |d: TimeDelta| d >= TimeDelta::seconds(1) && d <= MAX_TTL;
        if !span_ok(self.window) || !span_ok(self.lockout) {
            return Err(ConfigError::Ttl);
        }
        if self.global_code_guesses == 0
            || self.codes_per_account == 0
            || self.live_codes == 0
            || self.live_fallback_codes == 0
            || self.passcodes_per_network == 0
            || self.live_passcodes == 0
        {
            return Err(ConfigError::Quota);
        }
        let short_space = code_format.space();
        if f64::from(self.live_codes) * 100.0 > short_space {
            return Err(ConfigError::Quota);
        }
        let fallback_space = self.fallback_format.space();
        if fallback_space < 2f64.powi(40)
            || fallback_space <= short_space
            || f64::from(self.live_fallback_codes) * 1e6 > fallback_space
        {
            return Err(ConfigError::CodeLength);
        }
        Ok(())
    }

    /// The keys and thresholds a guess from `network` is charged at, finest first, without
    /// duplicates (a level finer than an IPv6 network's own prefix counts at that prefix).
    pub(crate) fn levels_of(&self, network: &PublicNetwork) -> SmallVec<[(CounterKey, u32); 4]> {
        let mut out: SmallVec<[(CounterKey, u32); 4]> = SmallVec::new();
        let mut levels: SmallVec<[Level; 4]> = match network {
            PublicNetwork::V4(_) => self.ipv4.iter().copied().collect(),
            PublicNetwork::V6(_) => self.ipv6.iter().copied().collect(),
        };
        levels.sort_by_key(|l| std::cmp::Reverse(l.prefix));
        for level in levels {
            let net = match network {
                PublicNetwork::V4(ip) => Ipv4Net::new(*ip, level.prefix.min(32))
                    .map(|n| IpNet::V4(n.trunc()))
                    .ok(),
                PublicNetwork::V6(net) => {
                    Ipv6Net::new(net.network(), level.prefix.min(net.prefix_len()))
                        .map(|n| IpNet::V6(n.trunc()))
                        .ok()
                }
            };
            let Some(net) = net else { continue };
            let key = CounterKey::Guesses(net);
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, threshold)) => *threshold = (*threshold).min(level.threshold),
                None => out.push((key, level.threshold)),
            }
        }
        out
    }

    /// The code space a presented code would belong to, if it is a manual code's shape.
    pub(crate) fn space_of(&self, code_format: &CodeFormat, code: &LinkCode) -> Option<CodeSpace> {
        if code_format.matches(code) {
            Some(CodeSpace::Manual)
        } else if self.fallback_format.matches(code) {
            Some(CodeSpace::Fallback)
        } else {
            None
        }
    }

    /// The expiry of a charge made at `now`: a window later, rounded up to a tenth of the
    /// window.
    pub(super) fn guess_expiry_ms(&self, now: DateTime<Utc>) -> i64 {
        round_up(
            later(now, self.window).timestamp_millis(),
            self.window.num_milliseconds() / 10,
        )
    }
}

/// Rounds `ms` up to a multiple of `step` (a step under 1 ms rounds nothing).
fn round_up(ms: i64, step: i64) -> i64 {
    if step <= 1 {
        return ms;
    }
    let rem = ms.rem_euclid(step);
    if rem == 0 {
        ms
    } else {
        ms.saturating_add(step - rem)
    }
}

/// The expiry of a quota charge for a code expiring at `expires_at` (rounded up to a second).
pub(super) fn quota_expiry_ms(expires_at: DateTime<Utc>) -> i64 {
    round_up(expires_at.timestamp_millis(), 1000)
}

/// One charge that stands: what to refund.
#[derive(Debug, Clone)]
pub(crate) struct Charge {
    pub(super) key: CounterKey,
    pub(super) expires_ms: i64,
    pub(super) limit: u32,
}

/// A guess admitted by every budget it falls under.
#[derive(Debug)]
#[must_use = "a guess is settled: charged for good (wrong) or refunded"]
pub(crate) struct Guess {
    pub(super) network: PublicNetwork,
    pub(super) charges: SmallVec<[Charge; 4]>,
    /// Whether a charge of this guess filled a network level.
    pub(super) filled_level: bool,
    /// Whether it filled the global budget.
    pub(super) filled_space: Option<CodeSpace>,
}

/// The quota charges of one minted code.
#[derive(Debug, Default)]
pub(crate) struct MintCharges {
    pub(super) charges: SmallVec<[Charge; 2]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_admits_its_threshold_per_window_and_locks() {
        let mut record = CounterRecord::default();
        let (limit, lockout) = (3, Some(1_000));
        for i in 0..3 {
            let admitted = record.admit(i, 500 + i, limit, lockout);
            assert_eq!(admitted, Admission::Admitted { filled: i == 2 });
        }
        assert_eq!(record.admit(10, 510, limit, lockout), Admission::Refused);
        assert!(record.is_locked(10));
        // The charges expire at 500..503, the lock at 1002.
        assert_eq!(record.live(600), 0);
        assert_eq!(record.admit(600, 1_100, limit, lockout), Admission::Refused);
        assert_eq!(
            record.admit(1_002, 1_500, limit, lockout),
            Admission::Admitted { filled: false }
        );
    }

    #[test]
    fn a_refund_takes_back_one_charge_and_lifts_the_lock_it_made() {
        let mut record = CounterRecord::default();
        for i in 0..3 {
            let _ = record.admit(i, 500, 3, Some(1_000));
        }
        assert!(record.is_locked(5));
        record.refund(5, 500, 3);
        assert_eq!(record.live(5), 2);
        assert!(!record.is_locked(5));
        // A refund never goes below zero, nor touches a later charge's bucket first.
        let mut record = CounterRecord::default();
        record.refund(0, 500, 3);
        assert_eq!(record.live(0), 0);
    }

    #[test]
    fn buckets_stay_bounded_and_charges_never_expire_early() {
        let mut record = CounterRecord::default();
        for i in 0..(MAX_BUCKETS as i64 + 50) {
            let _ = record.admit(0, 1_000 + i, u32::MAX, None);
        }
        assert!(record.buckets.len() <= MAX_BUCKETS);
        // Charge i expires at 1_000 + i: at any time, every charge not yet due is still live.
        let total = MAX_BUCKETS as i64 + 50;
        for t in 999..1_000 + total {
            let due_later = (0..total).filter(|i| 1_000 + i > t).count() as u64;
            assert!(record.live(t) >= due_later, "at {t}");
        }
    }

    #[test]
    fn levels_cover_each_prefix_once_finest_first() {
        let budgets = Budgets::default();
        let v4 = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
        let keys: Vec<_> = budgets.levels_of(&v4).into_iter().collect();
        assert_eq!(
            keys,
            vec![
                (CounterKey::Guesses("203.0.113.7/32".parse().unwrap()), 5),
                (CounterKey::Guesses("203.0.113.0/24".parse().unwrap()), 32),
            ]
        );
        let v6 = PublicNetwork::from_ip("2001:db8:1:2::10".parse().unwrap(), 64);
        let keys: Vec<_> = budgets.levels_of(&v6).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                CounterKey::Guesses("2001:db8:1:2::/64".parse().unwrap()),
                CounterKey::Guesses("2001:db8:1::/48".parse().unwrap()),
                CounterKey::Guesses("2001:db8::/32".parse().unwrap()),
            ]
        );
        // Grouped by /40: the /64 and /48 levels count at the /40, under the stricter threshold.
        let v6 = PublicNetwork::from_ip("2001:db8:1:2::10".parse().unwrap(), 40);
        let keys: Vec<_> = budgets.levels_of(&v6).into_iter().collect();
        assert_eq!(
            keys,
            vec![
                (CounterKey::Guesses("2001:db8:0::/40".parse().unwrap()), 5),
                (CounterKey::Guesses("2001:db8::/32".parse().unwrap()), 48),
            ]
        );
    }

    #[test]
    fn the_defaults_validate_and_unsafe_settings_are_refused() {
        let format = CodeFormat::default();
        assert_eq!(Budgets::default().validate(&format), Ok(()));
        let too_many_live = Budgets::default().live_codes(20_000);
        assert_eq!(too_many_live.validate(&format), Err(ConfigError::Quota));
        let short_fallback =
            Budgets::default().fallback_format(CodeFormat::new(8, "0123456789").unwrap());
        assert_eq!(
            short_fallback.validate(&format),
            Err(ConfigError::CodeLength)
        );
        let zero = Budgets::default().ipv4_levels(vec![Level {
            prefix: 32,
            threshold: 0,
        }]);
        assert_eq!(zero.validate(&format), Err(ConfigError::Lockout));
    }

    #[test]
    fn the_network_threshold_sets_the_finest_level_and_raises_coarser_ones() {
        let mut budgets = Budgets::default();
        budgets.set_network_threshold(100);
        assert_eq!(
            budgets.ipv4,
            vec![
                Level {
                    prefix: 32,
                    threshold: 100
                },
                Level {
                    prefix: 24,
                    threshold: 100
                }
            ]
        );
        let mut budgets = Budgets::default();
        budgets.set_network_threshold(2);
        assert_eq!(budgets.ipv6[0].threshold, 2);
        assert_eq!(budgets.ipv6[2].threshold, 48);
    }
}
