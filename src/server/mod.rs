//! The server: records announcements per public network, shows agents to linkers of the same
//! network, checks link requests against the agent's commitment, forwards the secret, mints codes
//! and tokens, and locks out networks that guess.
//! The server must not open a socket, read a clock, sleep or draw from a global RNG: `now`, the
//! caller's network and an RNG are arguments, and any I/O is its store's or the
//! host's [hook](hook::LinkHook).
//!
//! One type, [`Server`], over any [`Store`] (the in-memory [`MemoryStore`] by default, a
//! shared one such as `Records` over a `RedisStore` (feature `redis`) for many instances),
//! with one `async fn` per protocol step. Sans-IO: each step takes the wall-clock `now` (records are shared between
//! server instances, so they carry wall-clock expiries), the caller's public network, resolved
//! once from the socket peer and the forwarding headers by [`Server::caller`], and an RNG where
//! something is minted. Decisions go where the host's [`Events`] say. The wire around the steps
//! (HTTP: [`endpoint::handle`]; MQTT: `server::mqtt::handle_up`, feature `ticket`) is a
//! function of the core too, so any stack serves the server.
//!
//! ```
//! use chrono::DateTime;
//! use lanlink::event::RequestKind;
//! use lanlink::server::{Server, ServerConfig, User};
//! use lanlink::{AccountId, ForwardedHeaders};
//! # let mut fut = std::pin::pin!(async {
//! let server = Server::new(ServerConfig::default()).unwrap();
//! let peer = "203.0.113.7".parse().unwrap();
//! let network = server.caller(RequestKind::Discover, peer, ForwardedHeaders::NONE).unwrap();
//! let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
//! let alice = User::new(AccountId::new("alice").unwrap());
//! let reply = server.discover(now, network, &alice).await.unwrap();
//! assert!(reply.agents.is_empty());
//! # });
//! # use std::future::Future;
//! # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
//! ```

/// Runs one operation of `$server` (its configuration and store, events collected for the
/// call and handed on when it ends) and awaits it.
macro_rules! run {
    ($server:ident, |$ops:ident| $call:expr) => {{
        let mut events = $crate::server::ops::OpEvents::default();
        let result = {
            let mut $ops = $server.ops(&mut events);
            $call.await
        };
        $server.events_out(events);
        result
    }};
}

pub mod budget;
pub mod connections;
pub mod cross_site;
pub mod endpoint;
mod hold;
pub mod hook;
#[cfg(feature = "ticket")]
pub mod mqtt;
#[cfg(feature = "obico-wire")]
mod obico;
mod ops;
/// The stored records: the crate's own, hidden (not covered by semver; a database joins through
/// [`Store`] and `Records` (feature `shared-store`), never seeing a record).
#[doc(hidden)]
pub mod record;
#[cfg(feature = "redis")]
pub mod redis;
pub mod shared;
pub(crate) mod store;

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ipnet::{IpNet, Ipv6Net};
use rand::{CryptoRng, RngCore};

#[doc(hidden)]
pub use self::budget::CounterRecord;
pub use self::budget::{Admission, Budgets, CodeSpace, CounterKey, Level};
use self::hook::PendingLink;
pub use self::hook::{CompletedLink, HookError, LinkHook, LinkVia, TokenDigest};
pub use self::ops::MAX_QUEUED_EVENTS;
use self::ops::{EventQueue, OpEvents, Ops};
#[doc(hidden)]
pub use self::record::{CodeKind, CodeRecord, NetworkRecord};
pub use self::shared::{SharedNetworkPolicy, SharedSignal, MAX_DISCOVERERS};
pub use self::store::{
    Backend, Key, MemoryBytes, MemoryStore, Store, StoreError, Write, MAX_KEY_LEN, MAX_WRITES,
};
#[doc(hidden)]
pub use self::store::{CodeFn, CounterFn, NetworkFn, ReadFn};
#[cfg(feature = "shared-store")]
pub use self::store::{Records, RecordsConfig, StoreKey};

use crate::addr::{ClientAddrResolver, ForwardedHeaders, PublicNetwork};
use crate::code::CodeFormat;
use crate::confirm::DisplayName;
use crate::error::{ConfigError, Refusal};
use crate::event::{RequestKind, ServerEvent};
use crate::id::{AccountId, InstanceId};
use crate::wire::{
    Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemReply,
    RedeemRequest,
};
use std::sync::{Arc, Mutex};

/// The longest any configured duration may be (a year): longer ones are refused, so that no sum
/// of them can overflow.
pub const MAX_TTL: TimeDelta = TimeDelta::days(365);

/// How many draws [`Server::mint_code`] makes before giving up on finding a free code.
pub const MINT_ATTEMPTS: usize = 16;

/// The server's configuration. Checked by [`ServerConfig::validate`] (and [`Server::new`]).
///
/// ```
/// use std::time::Duration;
/// use lanlink::{server::{Server, ServerConfig}, ConfigError};
/// let config = ServerConfig::default()
///     .announce_interval(Duration::from_secs(2))
///     .presence_ttl(Duration::from_secs(4)); // less than 2.5 × the interval
/// assert_eq!(config.validate(), Err(ConfigError::PresenceTtlTooShort));
/// assert_eq!(Server::new(config).unwrap_err(), ConfigError::PresenceTtlTooShort);
/// ```
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub(crate) announce_interval: TimeDelta,
    pub(crate) presence_ttl: TimeDelta,
    pub(crate) ipv6_prefix: u8,
    pub(crate) nat64_prefixes: Vec<Ipv6Net>,
    pub(crate) max_visible: usize,
    pub(crate) max_visible_one_host: usize,
    pub(crate) max_agents_per_network: usize,
    pub(crate) budgets: Budgets,
    pub(crate) message_ttl: TimeDelta,
    pub(crate) auto_code_ttl: TimeDelta,
    pub(crate) manual_code_ttl: TimeDelta,
    pub(crate) link_status_ttl: TimeDelta,
    pub(crate) replay_horizon: TimeDelta,
    pub(crate) max_window: TimeDelta,
    pub(crate) code_format: CodeFormat,
    pub(crate) resolver: ClientAddrResolver,
    pub(crate) shared: SharedNetworkPolicy,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) max_hold: TimeDelta,
    error: Option<ConfigError>,
}

impl Default for ServerConfig {
    /// Announce interval 2 s, presence 6 s, IPv6 /64 (NAT64's `64:ff9b::/96` read as IPv4),
    /// `max_visible` 1, 16 agents per network record, the default [`Budgets`] (a network locked
    /// out after 5 failures in 10 minutes for 10 minutes, coarser prefixes and short codes
    /// budgeted too), messages 60 s, auto codes
    /// 2 minutes, manual codes 10 minutes (6 digits), link status 10 minutes, used instance ids
    /// remembered 24 hours, no trusted proxies, the default [`SharedNetworkPolicy`].
    fn default() -> Self {
        Self {
            announce_interval: TimeDelta::seconds(2),
            presence_ttl: TimeDelta::seconds(6),
            ipv6_prefix: 64,
            nat64_prefixes: Vec::new(),
            max_visible: 1,
            max_visible_one_host: 2,
            max_agents_per_network: 16,
            budgets: Budgets::default(),
            message_ttl: TimeDelta::seconds(60),
            auto_code_ttl: TimeDelta::minutes(2),
            manual_code_ttl: TimeDelta::minutes(10),
            link_status_ttl: TimeDelta::minutes(10),
            replay_horizon: TimeDelta::hours(24),
            max_window: TimeDelta::minutes(10),
            code_format: CodeFormat::default(),
            resolver: ClientAddrResolver::default(),
            shared: SharedNetworkPolicy::default(),
            allowed_origins: Vec::new(),
            max_hold: TimeDelta::seconds(20),
            error: None,
        }
    }
}

macro_rules! duration_setter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        #[doc = concat!("Zero and more than [`MAX_TTL`] are refused ([`ConfigError::Ttl`]):\n\n```\nuse std::time::Duration;\nuse lanlink::{server::ServerConfig, ConfigError};\nlet zero = ServerConfig::default().", stringify!($name), "(Duration::ZERO);\nassert_eq!(zero.validate(), Err(ConfigError::Ttl));\nlet long = ServerConfig::default().", stringify!($name), "(Duration::from_secs(366 * 86_400));\nassert_eq!(long.validate(), Err(ConfigError::Ttl));\n```")]
        pub fn $name(mut self, value: Duration) -> Self {
            match TimeDelta::from_std(value) {
                Ok(delta) if !delta.is_zero() && delta <= MAX_TTL => self.$name = delta,
                _ => self.error = self.error.or(Some(ConfigError::Ttl)),
            }
            self
        }
    };
}

impl ServerConfig {
    duration_setter!(
        /// The agents' announce interval (the reply's `poll_after_ms`).
        announce_interval
    );
    duration_setter!(
        /// How long an announcement keeps an agent present (at least 2.5 × the interval).
        presence_ttl
    );
    /// The longest the server holds an agent's announcement or a linker's status request open
    /// while nothing has happened (revision 1.6; default 20 s, at most
    /// [`MAX_HOLD_MS`](crate::wire::MAX_HOLD_MS), 25 s). Zero never holds: every request is
    /// answered at once, as before 1.6. A held request is answered as soon as a link reaches
    /// its agent (or its state changes), else when the hold ends; proxies between agents and
    /// the server must let a request stay idle this long.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::server::ServerConfig;
    /// assert!(ServerConfig::default().max_hold(Duration::from_secs(10)).validate().is_ok());
    /// assert!(ServerConfig::default().max_hold(Duration::ZERO).validate().is_ok());
    /// assert!(ServerConfig::default().max_hold(Duration::from_secs(26)).validate().is_err());
    /// ```
    pub fn max_hold(mut self, value: Duration) -> Self {
        let limit = TimeDelta::milliseconds(i64::from(crate::wire::MAX_HOLD_MS));
        match TimeDelta::from_std(value) {
            Ok(delta) if delta <= limit => self.max_hold = delta,
            _ => self.error = self.error.or(Some(ConfigError::Ttl)),
        }
        self
    }

    /// The hold the server grants a request that asks for `asked_ms` (revision 1.6): at most
    /// [`max_hold`](Self::max_hold); zero when none was asked.
    pub(crate) fn hold_granted(&self, asked_ms: Option<u32>) -> TimeDelta {
        TimeDelta::milliseconds(i64::from(asked_ms.unwrap_or(0))).min(self.max_hold)
    }

    /// How often a held request is checked again without a ring: the announce interval, so a
    /// lost ring (a pub/sub message lost with its connection) costs at most one poll interval.
    pub(crate) fn hold_recheck(&self) -> TimeDelta {
        self.announce_interval
    }

    /// The window of every guessing budget (see [`Budgets::window`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::{server::ServerConfig, ConfigError};
    /// assert!(ServerConfig::default().lockout_window(Duration::from_secs(300)).validate().is_ok());
    /// assert_eq!(ServerConfig::default().lockout_window(Duration::ZERO).validate(), Err(ConfigError::Ttl));
    /// ```
    pub fn lockout_window(mut self, value: Duration) -> Self {
        match TimeDelta::from_std(value) {
            Ok(delta) => self.budgets.window = delta,
            Err(_) => self.error = self.error.or(Some(ConfigError::Ttl)),
        }
        self
    }

    /// How long a filled guessing budget stays locked (see [`Budgets::lockout`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::{server::ServerConfig, ConfigError};
    /// assert!(ServerConfig::default().lockout_duration(Duration::from_secs(3600)).validate().is_ok());
    /// assert_eq!(ServerConfig::default().lockout_duration(Duration::from_millis(10)).validate(), Err(ConfigError::Ttl));
    /// ```
    pub fn lockout_duration(mut self, value: Duration) -> Self {
        match TimeDelta::from_std(value) {
            Ok(delta) => self.budgets.lockout = delta,
            Err(_) => self.error = self.error.or(Some(ConfigError::Ttl)),
        }
        self
    }

    /// Every guessing budget and mint quota (default [`Budgets::default`]).
    ///
    /// ```
    /// use lanlink::server::{Budgets, ServerConfig};
    /// use lanlink::ConfigError;
    /// let config = ServerConfig::default().budgets(Budgets::default().codes_per_account(3));
    /// assert!(config.validate().is_ok());
    /// let none = ServerConfig::default().budgets(Budgets::default().codes_per_account(0));
    /// assert_eq!(none.validate(), Err(ConfigError::Quota));
    /// ```
    pub fn budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// The configured budgets.
    ///
    /// ```
    /// use lanlink::server::{Budgets, ServerConfig};
    /// assert_eq!(ServerConfig::default().budget_limits(), &Budgets::default());
    /// ```
    pub fn budget_limits(&self) -> &Budgets {
        &self.budgets
    }
    duration_setter!(
        /// How long a queued `{secret, code}` waits for the agent.
        message_ttl
    );
    duration_setter!(
        /// How long an auto-link code lives (at least `message_ttl`).
        auto_code_ttl
    );
    duration_setter!(
        /// How long a manual code lives.
        manual_code_ttl
    );
    duration_setter!(
        /// How long a completed link's state stays readable.
        link_status_ttl
    );
    duration_setter!(
        /// How long an instance id whose secret was used (or whose window ran over) is refused.
        replay_horizon
    );

    /// The IPv6 grouping prefix (1..=128, default 64).
    ///
    /// ```
    /// use lanlink::{server::ServerConfig, ConfigError};
    /// let config = ServerConfig::default().ipv6_prefix(56);
    /// assert_eq!(config.network_of("2001:db8:1:2ff::1".parse()?).to_string(), "2001:db8:1:200::/56");
    /// assert_eq!(ServerConfig::default().ipv6_prefix(0).validate(), Err(ConfigError::Ipv6Prefix));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.ipv6_prefix = prefix;
        self
    }

    /// NAT64 or SIIT prefixes, besides the well-known `64:ff9b::/96`, whose client addresses stand
    /// for the IPv4 client they embed (RFC 6052; lengths /32, /40, /48, /56, /64 or /96, else
    /// [`ConfigError::Nat64Prefix`]): each such client is its IPv4 address's network, not one of a
    /// /64 that every IPv4 user of the translator would share. Give only prefixes that your
    /// translator owns, so that a reply to such an address can only reach that IPv4 client.
    ///
    /// ```
    /// use lanlink::server::ServerConfig;
    /// let config = ServerConfig::default().nat64_prefixes(vec!["2001:db8:64::/96".parse().unwrap()]);
    /// assert_eq!(
    ///     config.network_of("2001:db8:64::203.0.113.7".parse().unwrap()),
    ///     config.network_of("203.0.113.7".parse().unwrap())
    /// );
    /// assert!(ServerConfig::default().nat64_prefixes(vec!["2001:db8::/80".parse().unwrap()]).validate().is_err());
    /// // Overlapping the IPv4-mapped range ::ffff:0:0/96, or Teredo's 2001::/32: refused.
    /// assert!(ServerConfig::default().nat64_prefixes(vec!["::/64".parse().unwrap()]).validate().is_err());
    /// assert!(ServerConfig::default().nat64_prefixes(vec!["2001:0:1::/48".parse().unwrap()]).validate().is_err());
    /// ```
    pub fn nat64_prefixes(mut self, prefixes: Vec<Ipv6Net>) -> Self {
        // An address of a fixed IPv4-embedding form (IPv4-mapped, SIIT-translated, compatible,
        // Teredo) is read as the IPv4 address it embeds, before any NAT64 prefix: a prefix that
        // overlaps those ranges would read some addresses as another IPv4 client than the one
        // they embed.
        let valid = |p: &Ipv6Net| {
            crate::addr::NAT64_PREFIX_LENGTHS.contains(&p.prefix_len())
                && crate::addr::IPV4_EMBEDDING_RANGES
                    .iter()
                    .all(|range| !p.trunc().contains(range) && !range.contains(&p.trunc()))
        };
        if !prefixes.iter().all(valid) {
            self.error = self.error.or(Some(ConfigError::Nat64Prefix));
        }
        self.nat64_prefixes = prefixes
            .iter()
            .filter(|p| valid(p))
            .map(Ipv6Net::trunc)
            .collect();
        self
    }

    /// The configured NAT64/SIIT prefixes (the well-known prefix is always mapped besides).
    ///
    /// ```
    /// use lanlink::server::ServerConfig;
    /// assert!(ServerConfig::default().nat64().is_empty(), "64:ff9b::/96 is always mapped besides");
    /// // Prefixes are kept truncated to their length.
    /// let config = ServerConfig::default().nat64_prefixes(vec!["2001:db8:64::1/96".parse()?]);
    /// assert_eq!(config.nat64(), ["2001:db8:64::/96".parse::<lanlink::ipnet::Ipv6Net>()?]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn nat64(&self) -> &[Ipv6Net] {
        &self.nat64_prefixes
    }

    /// The most agents a linker is shown; when more are present it is shown none (default 1).
    ///
    /// ```
    /// use lanlink::{server::ServerConfig, ConfigError};
    /// assert_eq!(ServerConfig::default().max_visible(3).visible_limit(), 3);
    /// assert_eq!(ServerConfig::default().max_visible(0).validate(), Err(ConfigError::MaxVisible));
    /// ```
    pub fn max_visible(mut self, max: usize) -> Self {
        self.max_visible = max;
        self
    }

    /// The Obico profile's limit for one private host (default 2, as Obico lists two since 2023:
    /// one Raspberry Pi often runs two Klipper printers): when every agent present in a network
    /// is an Obico agent polling with the same `host_or_ip`, each on its own port, a linker is
    /// shown up to this many (or `max_visible`, if more); any other mix keeps `max_visible`.
    /// `host_or_ip` is what the poll says, not proven: see SECURITY.md ("The Obico profile").
    ///
    /// ```
    /// use lanlink::{server::ServerConfig, ConfigError};
    /// assert!(ServerConfig::default().max_visible_one_host(4).validate().is_ok());
    /// assert_eq!(ServerConfig::default().max_visible_one_host(0).validate(), Err(ConfigError::MaxVisible));
    /// ```
    pub fn max_visible_one_host(mut self, max: usize) -> Self {
        self.max_visible_one_host = max;
        self
    }

    /// The most agents one network record holds (default 16).
    ///
    /// ```
    /// use lanlink::{server::ServerConfig, ConfigError};
    /// assert!(ServerConfig::default().max_agents_per_network(64).validate().is_ok());
    /// let below = ServerConfig::default().max_visible(4).max_agents_per_network(3);
    /// assert_eq!(below.validate(), Err(ConfigError::MaxAgentsPerNetwork));
    /// assert!(ServerConfig::default().max_agents_per_network(1025).validate().is_err());
    /// ```
    pub fn max_agents_per_network(mut self, max: usize) -> Self {
        self.max_agents_per_network = max;
        self
    }

    /// Failures in `lockout_window` that lock a network out (default 5): the threshold of the
    /// finest budget level (the IPv4 address, the IPv6 grouping prefix); coarser levels are
    /// raised to at least this.
    ///
    /// ```
    /// use lanlink::{server::ServerConfig, ConfigError};
    /// assert!(ServerConfig::default().lockout_threshold(10).validate().is_ok());
    /// assert_eq!(ServerConfig::default().lockout_threshold(0).validate(), Err(ConfigError::Lockout));
    /// ```
    pub fn lockout_threshold(mut self, threshold: u32) -> Self {
        if threshold == 0 {
            self.error = self.error.or(Some(ConfigError::Lockout));
        } else {
            self.budgets.set_network_threshold(threshold);
        }
        self
    }

    /// The manual code format.
    ///
    /// ```
    /// use lanlink::{server::ServerConfig, CodeFormat};
    /// let format = CodeFormat::new(8, "ABCDEFGHJKMNPQRSTVWXYZ23456789")?;
    /// assert!(ServerConfig::default().code_format(format).validate().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn code_format(mut self, format: CodeFormat) -> Self {
        self.code_format = format;
        self
    }

    /// Trusts forwarding headers from these proxy networks (default: none).
    ///
    /// ```
    /// use lanlink::{server::ServerConfig, ForwardedHeaders};
    /// let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse()?]);
    /// let via_lb = ForwardedHeaders { forwarded: &[], x_forwarded_for: &["198.51.100.7"] };
    /// assert_eq!(config.resolver().resolve("10.0.0.2".parse()?, via_lb), Ok("198.51.100.7".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trusted_proxies(mut self, proxies: Vec<IpNet>) -> Self {
        self.resolver = ClientAddrResolver::new(proxies);
        self
    }

    /// When a public network is judged shared (default [`SharedNetworkPolicy::default`]; see
    /// [`shared`]). [`SharedNetworkPolicy::disabled`] turns detection off.
    ///
    /// ```
    /// use lanlink::server::{ServerConfig, SharedNetworkPolicy};
    /// let config = ServerConfig::default().shared_network(SharedNetworkPolicy::disabled());
    /// assert!(config.validate().is_ok());
    /// assert_eq!(config.shared_network_policy(), &SharedNetworkPolicy::disabled());
    /// ```
    pub fn shared_network(mut self, policy: SharedNetworkPolicy) -> Self {
        self.shared = policy;
        self
    }

    /// Accepts state-changing user requests (`POST {prefix}/link`, `POST {prefix}/codes`, the
    /// Obico profile's user `POST`s) carrying `Origin: origin`, e.g. `"https://cloud.example"`:
    /// the web origins of the pages that call the user routes. Once any is configured, only
    /// these are accepted; with none (the default) only the origin of the request's own `Host`
    /// is (see [`cross_site`]). Configure the page's origin when a proxy rewrites `Host`, or the
    /// page lives on another origin (which then also needs CORS from the host). An origin that
    /// is not `http://` or `https://` with a host and an optional port is
    /// [`ConfigError::HostOrOrigin`].
    ///
    /// ```
    /// use lanlink::server::ServerConfig;
    /// let config = ServerConfig::default().allow_origin("https://Cloud.Example");
    /// assert_eq!(config.allowed_origins(), ["https://cloud.example"]);
    /// assert!(ServerConfig::default().allow_origin("cloud.example").validate().is_err());
    /// ```
    pub fn allow_origin(mut self, origin: &str) -> Self {
        if !cross_site::valid_origin(origin) {
            self.error = self.error.or(Some(ConfigError::HostOrOrigin));
        }
        self.allowed_origins
            .push(origin.trim().to_ascii_lowercase());
        self
    }

    /// The origins configured with [`ServerConfig::allow_origin`].
    ///
    /// ```
    /// use lanlink::server::ServerConfig;
    /// assert!(ServerConfig::default().allowed_origins().is_empty());
    /// let config = ServerConfig::default().allow_origin("https://a.example").allow_origin("http://b.example:8080");
    /// assert_eq!(config.allowed_origins(), ["https://a.example", "http://b.example:8080"]);
    /// ```
    pub fn allowed_origins(&self) -> &[String] {
        &self.allowed_origins
    }

    /// The shared-network policy.
    ///
    /// ```
    /// use lanlink::server::{ServerConfig, SharedNetworkPolicy};
    /// assert_eq!(ServerConfig::default().shared_network_policy(), &SharedNetworkPolicy::default());
    /// ```
    pub fn shared_network_policy(&self) -> &SharedNetworkPolicy {
        &self.shared
    }

    /// The client-address resolver.
    ///
    /// ```
    /// use lanlink::server::ServerConfig;
    /// assert!(ServerConfig::default().resolver().trusted_proxies().is_empty());
    /// ```
    pub fn resolver(&self) -> &ClientAddrResolver {
        &self.resolver
    }

    /// The configured `max_visible`.
    ///
    /// ```
    /// use lanlink::server::ServerConfig;
    /// assert_eq!(ServerConfig::default().visible_limit(), 1);
    /// ```
    pub fn visible_limit(&self) -> usize {
        self.max_visible
    }

    /// The public network of a (resolved) client address under this configuration: IPv4 as
    /// itself, a NAT64/SIIT address as the IPv4 address it embeds, other IPv6 by its prefix.
    ///
    /// ```
    /// use lanlink::{server::ServerConfig, PublicNetwork};
    /// let config = ServerConfig::default();
    /// // Two addresses of one /64 are one network; NAT64's well-known prefix reads as IPv4.
    /// assert_eq!(config.network_of("2001:db8::1".parse()?), config.network_of("2001:db8::2".parse()?));
    /// assert_eq!(config.network_of("64:ff9b::198.51.100.1".parse()?), PublicNetwork::V4("198.51.100.1".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn network_of(&self, ip: IpAddr) -> PublicNetwork {
        PublicNetwork::from_ip_nat64(ip, self.ipv6_prefix, &self.nat64_prefixes)
    }

    /// Checks the configuration.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::{server::ServerConfig, ConfigError};
    /// assert_eq!(ServerConfig::default().validate(), Ok(()));
    /// // Auto codes must outlive the message that carries them.
    /// let config = ServerConfig::default()
    ///     .message_ttl(Duration::from_secs(120))
    ///     .auto_code_ttl(Duration::from_secs(60));
    /// assert_eq!(config.validate(), Err(ConfigError::Ttl));
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        // presence_ttl ≥ 2.5 × interval, compared exactly as 2 × ttl ≥ 5 × interval.
        let interval_ms = self.announce_interval.num_milliseconds();
        let ttl_ms = self.presence_ttl.num_milliseconds();
        if ttl_ms.saturating_mul(2) < interval_ms.saturating_mul(5) {
            return Err(ConfigError::PresenceTtlTooShort);
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err(ConfigError::Ipv6Prefix);
        }
        if self.max_visible == 0 {
            return Err(ConfigError::MaxVisible);
        }
        if self.max_visible_one_host == 0 {
            return Err(ConfigError::MaxVisible);
        }
        if self.max_agents_per_network < self.max_visible
            || self.max_agents_per_network < self.max_visible_one_host
            || self.max_agents_per_network > 1024
        {
            return Err(ConfigError::MaxAgentsPerNetwork);
        }
        self.budgets.validate(&self.code_format)?;
        self.shared.validate()?;
        if self.auto_code_ttl < self.message_ttl {
            return Err(ConfigError::Ttl);
        }
        Ok(())
    }
}

/// A successful redemption: the reply for the agent, and the link the [`LinkHook`] saw.
///
/// ```
/// # use lanlink::server::{Server, ServerConfig};
/// # use lanlink::wire::RedeemRequest;
/// # use lanlink::{AccountId, InstanceId, PublicNetwork};
/// # let mut fut = std::pin::pin!(async {
/// let server = Server::new(ServerConfig::default()).unwrap();
/// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// let mut rng = lanlink::os_rng();
/// let alice = AccountId::new("alice").unwrap();
/// let minted = server.mint_code(now, &mut rng, &alice).await.unwrap();
/// let id = InstanceId::generate(&mut rng);
/// let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
/// let redeemed = server.redeem(now, &mut rng, network, &RedeemRequest::new(id, minted.code)).await.unwrap();
/// assert_eq!((redeemed.account, redeemed.instance_id), (alice, id));
/// assert_eq!(redeemed.code_expires_at, minted.expires_at);
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Redeemed {
    /// The reply for the agent (carries the token).
    pub reply: RedeemReply,
    /// The account the agent is now linked to.
    pub account: AccountId,
    /// The agent.
    pub instance_id: InstanceId,
    /// The completed link (the token's digest, how it was linked, the device's info).
    pub link: CompletedLink,
    /// When the redeemed code would have expired.
    pub code_expires_at: DateTime<Utc>,
}

/// The account a user request is from, as the host's own authentication found it: what the
/// user steps ([`Server::discover`], [`Server::link`]) take, and what the
/// [wire function](endpoint::handle) asks the host for ([`endpoint::Handled::NeedsUser`]).
///
/// ```
/// use lanlink::{confirm::DisplayName, server::User, AccountId};
/// // An account id too long for a display name sends none.
/// let user = User::new(AccountId::new("x".repeat(65)).unwrap());
/// assert_eq!(user.display_name, None);
/// let named = User::named(AccountId::new("u-1").unwrap(), DisplayName::new("Bob"));
/// assert_eq!(named.display_name.map(|n| n.to_string()).as_deref(), Some("Bob"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The account the request is from.
    pub account: AccountId,
    /// The name forwarded to the agent with a link request (revision 1.4: what a device with a
    /// confirmation policy shows). `None` sends none (a device with a confirmation policy then
    /// refuses the link); see `http::Authenticator::display_name` (feature `http-server`) for
    /// what to put here.
    pub display_name: Option<DisplayName>,
}

impl User {
    /// A user whose display name is the account id itself ([`DisplayName::of_account`]). A host
    /// that knows the account's real name sets [`display_name`](Self::display_name) instead.
    ///
    /// ```
    /// use lanlink::server::User;
    /// let alice = User::new(lanlink::AccountId::new("alice").unwrap());
    /// assert_eq!(alice.display_name.unwrap().as_str(), "alice");
    /// ```
    pub fn new(account: AccountId) -> Self {
        let display_name = DisplayName::of_account(&account);
        Self {
            account,
            display_name,
        }
    }

    /// A user with the display name the host gives (`None`: none is sent).
    ///
    /// ```
    /// use lanlink::confirm::DisplayName;
    /// use lanlink::server::User;
    /// let alice = User::named(lanlink::AccountId::new("u-1234").unwrap(), DisplayName::new("Alice"));
    /// assert_eq!(alice.display_name.unwrap().as_str(), "Alice");
    /// ```
    pub fn named(account: AccountId, display_name: Option<DisplayName>) -> Self {
        Self {
            account,
            display_name,
        }
    }
}

/// The server: its configuration, its [store](Store) (the in-memory [`MemoryStore`] by
/// default, or a shared one such as `Records` over a `RedisStore` (feature `redis`), over
/// which several processes act as one server), where its [events](Events) go, and the host's
/// [link hook](LinkHook). See the [module docs](self).
///
/// One `async fn` per protocol step, each taking `&self` (one server serves concurrent
/// requests; no lock is held across an await) and the caller's network, resolved once by
/// [`caller`](Self::caller). Over the in-memory store every future is ready at its first poll,
/// unless the link hook waits; a blocking host drives them with any `block_on`.
///
/// ```
/// use lanlink::event::{RequestKind, ServerEvent};
/// use lanlink::server::{Server, ServerConfig};
/// use lanlink::ForwardedHeaders;
/// let server = Server::new(ServerConfig::default())?;
/// // Resolve the caller once per request, then run the step (see `Server::discover`).
/// let network = server.caller(RequestKind::Discover, "198.51.100.4".parse()?, ForwardedHeaders::NONE)?;
/// assert_eq!(network.to_string(), "198.51.100.4");
/// assert!(server.poll_event().is_none(), "resolving is no event");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server<S = MemoryStore> {
    config: ServerConfig,
    store: S,
    events: Events,
    hook: Option<Arc<dyn LinkHook>>,
}

impl<S> std::fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("events", &self.events)
            .field("hook", &self.hook.is_some())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for dyn LinkHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkHook")
    }
}

/// Where a [`Server`] sends its events (they carry no secrets).
pub type EventSink = Arc<dyn Fn(ServerEvent) + Send + Sync>;

/// Where a [`Server`]'s events go: the host's choice, made by name. None is lost silently: a
/// [sink](Events::sink) gets each as it happens; a [queue](Events::queue) holds at most
/// [`MAX_QUEUED_EVENTS`] for [`Server::poll_event`] and reports any it had no room for
/// ([`ServerEvent::EventsLost`]); [`Events::discard`] drops them where the host wrote so.
///
/// ```
/// use lanlink::server::Events;
/// let logged = Events::sink(|event| eprintln!("{}", serde_json::to_string(&event).unwrap()));
/// let none = Events::discard(); // an explicit opt-out, for a reader to find
/// assert_eq!(format!("{logged:?} {none:?}"), "Events::sink(..) Events::discard()");
/// ```
///
/// ```compile_fail
/// // No default: events go nowhere only where the host says so.
/// let events: lanlink::server::Events = Default::default();
/// ```
pub struct Events(EventsTo);

enum EventsTo {
    Sink(EventSink),
    Queue(Mutex<EventQueue>),
    Discard,
}

impl Events {
    /// Every event goes to `sink` as the operation that made it ends.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lanlink::event::RequestKind;
    /// use lanlink::server::{Events, Server, ServerConfig};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse()?]);
    /// let server = Server::new(config)?.with_events(Events::sink(move |e| log.lock().unwrap().push(e)));
    /// let _ = server.caller(RequestKind::Discover, "10.0.0.1".parse()?, lanlink::ForwardedHeaders::NONE);
    /// assert_eq!(seen.lock().unwrap().len(), 1, "the refusal went to the sink");
    /// assert!(server.poll_event().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sink(sink: impl Fn(ServerEvent) + Send + Sync + 'static) -> Self {
        Self(EventsTo::Sink(Arc::new(sink)))
    }

    /// Events wait in a bounded queue for [`Server::poll_event`] (what [`Server::new`] uses):
    /// drain it after each call. Past [`MAX_QUEUED_EVENTS`] waiting, events are counted, not
    /// queued, and one [`ServerEvent::EventsLost`] stands where they would have been.
    ///
    /// ```
    /// use lanlink::event::{RequestKind, ServerEvent};
    /// use lanlink::server::{Events, Server, ServerConfig};
    /// let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse()?]);
    /// let server = Server::new(config)?.with_events(Events::queue());
    /// let _ = server.caller(RequestKind::Discover, "10.0.0.1".parse()?, lanlink::ForwardedHeaders::NONE);
    /// assert!(matches!(server.poll_event(), Some(ServerEvent::Refused { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue() -> Self {
        Self(EventsTo::Queue(Mutex::new(EventQueue::default())))
    }

    /// Every event is dropped. For benches and throwaway tools; a server that links real
    /// accounts should keep its decisions ([`Events::sink`]).
    ///
    /// ```
    /// use lanlink::event::RequestKind;
    /// use lanlink::server::{Events, Server, ServerConfig};
    /// let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse()?]);
    /// let server = Server::new(config)?.with_events(Events::discard());
    /// let _ = server.caller(RequestKind::Discover, "10.0.0.1".parse()?, lanlink::ForwardedHeaders::NONE);
    /// assert!(server.poll_event().is_none());
    /// assert_eq!(server.lost_events(), 0, "discarded on purpose, not lost");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn discard() -> Self {
        Self(EventsTo::Discard)
    }

    fn emit(&self, events: impl Iterator<Item = ServerEvent>) {
        match &self.0 {
            EventsTo::Sink(sink) => events.for_each(|event| sink(event)),
            EventsTo::Queue(queue) => {
                let mut queue = crate::lock_unpoisoned(queue);
                events.for_each(|event| queue.push_back(event));
            }
            EventsTo::Discard => {}
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            EventsTo::Sink(_) => f.write_str("Events::sink(..)"),
            EventsTo::Queue(queue) => {
                write!(f, "Events::queue({:?})", crate::lock_unpoisoned(queue))
            }
            EventsTo::Discard => f.write_str("Events::discard()"),
        }
    }
}

/// Polls a future once and returns its output: for the crate's own synchronous drivers (the
/// simulator, the fuzz harnesses) over the in-memory store, whose futures are ready at once. A
/// future that is not (a link hook that waits) fails closed as a store error.
#[cfg_attr(not(feature = "sim"), allow(dead_code))]
pub(crate) fn at_once<T>(
    future: impl std::future::Future<Output = Result<T, Refusal>>,
) -> Result<T, Refusal> {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => Err(Refusal::Store(StoreError::Unavailable)),
    }
}

impl Server {
    /// A server over an empty in-memory store, its events queued for
    /// [`poll_event`](Self::poll_event) ([`Events::queue`]).
    ///
    /// ```
    /// use chrono::DateTime;
    /// use lanlink::server::{Server, ServerConfig, User};
    /// use lanlink::{AccountId, ForwardedHeaders};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let network = server.caller(lanlink::event::RequestKind::Discover, "203.0.113.7".parse().unwrap(), ForwardedHeaders::NONE).unwrap();
    /// let alice = User::new(AccountId::new("alice").unwrap());
    /// let reply = server.discover(now, network, &alice).await.unwrap();
    /// assert!(reply.agents.is_empty());
    /// assert!(matches!(server.poll_event(), Some(lanlink::event::ServerEvent::Discovered { .. })));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn new(config: ServerConfig) -> Result<Self, ConfigError> {
        Self::with_store(config, MemoryStore::default(), Events::queue())
    }
}

impl<S: Backend> Server<S> {
    /// A server over `store` (checks the configuration), its events going where `events` says.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lanlink::server::{Backend, Events, MemoryStore, Server, ServerConfig};
    /// // Two servers over one store act as one (here in one process; Records over a RedisStore span many).
    /// let store: Arc<dyn Backend> = Arc::new(MemoryStore::default());
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let a = Server::with_store(ServerConfig::default(), store.clone(), Events::discard()).unwrap();
    /// let b = Server::with_store(ServerConfig::default(), store, Events::sink(move |e| log.lock().unwrap().push(e)))
    ///     .unwrap();
    /// # let _ = (a, b);
    /// ```
    pub fn with_store(config: ServerConfig, store: S, events: Events) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            store,
            events,
            hook: None,
        })
    }

    /// Sends events where `events` says from now on; any still queued go there first.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lanlink::server::{Events, Server, ServerConfig};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let server = Server::new(ServerConfig::default())
    ///     .unwrap()
    ///     .with_events(Events::sink(move |event| log.lock().unwrap().push(event)));
    /// assert!(server.poll_event().is_none());
    /// ```
    pub fn with_events(mut self, events: Events) -> Self {
        let old = std::mem::replace(&mut self.events, events);
        if let EventsTo::Queue(queue) = old.0 {
            let queued = queue.into_inner().unwrap_or_else(|e| e.into_inner());
            self.events.emit(queued.drain());
        }
        self
    }

    /// Awaits `hook` on every completed link before its token is returned (see [`hook`]):
    /// every entry point ([`redeem`](Self::redeem), [`endpoint::handle`], MQTT, the Obico
    /// profile) links through it, and no lock is held while it runs.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lanlink::server::{CompletedLink, HookError, LinkHook, Server, ServerConfig};
    /// use lanlink::wire::RedeemRequest;
    /// use lanlink::{AccountId, ForwardedHeaders, InstanceId};
    ///
    /// #[derive(Default)]
    /// struct Seen(Mutex<Vec<InstanceId>>);
    /// #[lanlink::async_trait]
    /// impl LinkHook for Seen {
    ///     async fn link_completed(&self, link: &CompletedLink) -> Result<(), HookError> {
    ///         self.0.lock().unwrap().push(link.instance_id);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # let mut fut = std::pin::pin!(async {
    /// let seen = Arc::new(Seen::default());
    /// let server = Server::new(ServerConfig::default()).unwrap().with_link_hook(seen.clone());
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let mut rng = lanlink::os_rng();
    /// let code = server.mint_code(now, &mut rng, &AccountId::new("alice").unwrap()).await.unwrap().code;
    /// let instance_id = InstanceId::generate(&mut rng);
    /// let request = RedeemRequest::new(instance_id, code).with_attempt(1);
    /// let network = lanlink::PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// server.redeem(now, &mut rng, network, &request).await.unwrap();
    /// assert_eq!(*seen.0.lock().unwrap(), [instance_id]);
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn with_link_hook(mut self, hook: Arc<dyn LinkHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The link hook, if one is set.
    ///
    /// ```
    /// use lanlink::server::{Server, ServerConfig};
    /// let server = Server::new(ServerConfig::default())?;
    /// assert!(server.link_hook().is_none(), "no hook unless `with_link_hook` sets one");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn link_hook(&self) -> Option<&Arc<dyn LinkHook>> {
        self.hook.as_ref()
    }

    /// The configuration.
    ///
    /// ```
    /// use lanlink::server::{Server, ServerConfig};
    /// let server = Server::new(ServerConfig::default().max_visible(2))?;
    /// assert_eq!(server.config().visible_limit(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The store.
    ///
    /// ```
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::AccountId;
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// assert_eq!(server.store().codes(), 0);
    /// server.mint_code(now, &mut lanlink::os_rng(), &AccountId::new("alice").unwrap()).await.unwrap();
    /// assert_eq!(server.store().codes(), 1);
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn store(&self) -> &S {
        &self.store
    }

    fn ops<'a>(&'a self, events: &'a mut OpEvents) -> Ops<'a> {
        Ops {
            config: &self.config,
            store: &self.store,
            events,
        }
    }

    fn events_out(&self, events: OpEvents) {
        let mut events = events.into_events().peekable();
        if events.peek().is_some() {
            self.events.emit(events);
        }
    }

    /// The next queued event, oldest first, when events go to a [queue](Events::queue) (as
    /// with [`Server::new`]); `None` otherwise. At most [`MAX_QUEUED_EVENTS`] wait; past that
    /// bound events are lost, never silently: one [`ServerEvent::EventsLost`] comes in their
    /// place, counting them (and [`lost_events`](Self::lost_events) counts them all).
    ///
    /// ```
    /// use lanlink::event::{RequestKind, ServerEvent};
    /// use lanlink::server::{Server, ServerConfig, MAX_QUEUED_EVENTS};
    /// use lanlink::ForwardedHeaders;
    /// let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse().unwrap()]);
    /// let server = Server::new(config).unwrap();
    /// // A trusted proxy that names no client: the caller cannot be resolved, one event each.
    /// let proxy = "10.0.0.1".parse().unwrap();
    /// for _ in 0..MAX_QUEUED_EVENTS + 3 {
    ///     let _ = server.caller(RequestKind::Discover, proxy, ForwardedHeaders::NONE);
    /// }
    /// let mut queued = 0;
    /// while let Some(event) = server.poll_event() {
    ///     if let ServerEvent::EventsLost { count } = event {
    ///         assert_eq!(count, 3);
    ///         assert!(server.poll_event().is_none(), "the gap is where the events were");
    ///         break;
    ///     }
    ///     queued += 1;
    /// }
    /// assert_eq!(queued, MAX_QUEUED_EVENTS);
    /// assert_eq!(server.lost_events(), 3);
    /// ```
    #[must_use]
    pub fn poll_event(&self) -> Option<ServerEvent> {
        match &self.events.0 {
            EventsTo::Queue(queue) => crate::lock_unpoisoned(queue).pop_front(),
            _ => None,
        }
    }

    /// How many events were lost in all because more than [`MAX_QUEUED_EVENTS`] waited
    /// undrained in the [queue](Events::queue) (for a metric: [`poll_event`](Self::poll_event)
    /// reports each loss in its place as a [`ServerEvent::EventsLost`]).
    ///
    /// ```
    /// use lanlink::server::{Server, ServerConfig};
    /// let server = Server::new(ServerConfig::default())?;
    /// assert_eq!(server.lost_events(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lost_events(&self) -> u64 {
        match &self.events.0 {
            EventsTo::Queue(queue) => crate::lock_unpoisoned(queue).lost(),
            _ => 0,
        }
    }

    /// The public network of a `request` from the socket `peer` with the forwarding `headers`
    /// it carried: the one place a caller is resolved (trusting forwarding headers only from the
    /// configured proxies, [`ServerConfig::trusted_proxies`]). A caller that cannot be resolved
    /// is refused (`unresolvable_client`, with a [`ServerEvent::Refused`]).
    ///
    /// ```
    /// use lanlink::event::RequestKind;
    /// use lanlink::server::{Server, ServerConfig};
    /// use lanlink::{ClientAddrError, ForwardedHeaders, Refusal};
    /// let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse()?]);
    /// let server = Server::new(config)?;
    /// let lb = "10.0.0.2".parse()?;
    /// let named = ForwardedHeaders { forwarded: &["for=203.0.113.50"], x_forwarded_for: &[] };
    /// assert_eq!(server.caller(RequestKind::Link, lb, named)?.to_string(), "203.0.113.50");
    /// let unnamed = server.caller(RequestKind::Link, lb, ForwardedHeaders::NONE);
    /// assert_eq!(unnamed, Err(Refusal::ClientAddr(ClientAddrError::MissingForwarded)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn caller(
        &self,
        request: RequestKind,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<PublicNetwork, Refusal> {
        let mut events = OpEvents::default();
        let result = self.ops(&mut events).caller(request, peer, headers);
        self.events_out(events);
        result
    }

    /// An agent announces from `network` (protocol step 3). The reply carries any queued
    /// messages.
    ///
    /// ```
    /// # use chrono::DateTime;
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::secret::PresenceKey;
    /// # use lanlink::wire::{Announce, WIRE_VERSION};
    /// # use lanlink::{LocalSecret, PublicNetwork};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// let (key, secret) = (PresenceKey::from_bytes([1; 32]), LocalSecret::from_bytes([2; 32]));
    /// let id = key.instance_id();
    /// let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), key);
    /// let reply = server.announce(now, home, &announce).await.unwrap();
    /// assert!(reply.messages.is_empty());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn announce(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal> {
        run!(self, |ops| ops.announce(now, network, announce))
    }

    /// [`announce`](Self::announce), and until when its request may be held (revision 1.6).
    pub(crate) async fn announce_held(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        announce: &Announce,
    ) -> Result<(AnnounceReply, Option<DateTime<Utc>>), Refusal> {
        run!(self, |ops| ops.announce_held(now, network, announce, true))
    }

    /// Whether a message waits for `instance_id` in `network`: a held announcement's check.
    pub(crate) async fn message_waits(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        instance_id: &InstanceId,
    ) -> Result<bool, Refusal> {
        run!(self, |ops| ops.message_waits(now, network, instance_id))
    }

    /// A linker of `user` asks for discoverable agents in `network` (protocol step 4). The
    /// account is counted among the network's recent discoverers, as a short per-network hash,
    /// toward the [shared-network](shared) judgement: a plain read, but for one write the first
    /// time in a window that the account discovers from the network.
    ///
    /// ```
    /// use lanlink::server::{Server, ServerConfig, User};
    /// use lanlink::wire::HiddenReason;
    /// use lanlink::{AccountId, PublicNetwork};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let dorm = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// // Four accounts: a household. The fifth distinct account marks the network shared.
    /// for n in 0..5 {
    ///     let user = User::new(AccountId::new(format!("user{n}")).unwrap());
    ///     let reply = server.discover(now, dorm, &user).await.unwrap();
    ///     let shared = reply.hidden.map(|h| h.reason) == Some(HiddenReason::SharedNetwork);
    ///     assert_eq!(shared, n == 4);
    /// }
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn discover(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        user: &User,
    ) -> Result<DiscoverReply, Refusal> {
        run!(self, |ops| ops.discover(now, network, Some(&user.account)))
    }

    /// A linker of `user`, calling from `network`, asks to link an agent (protocol step 6). The
    /// user's display name (revision 1.4) is forwarded to the agent inside its
    /// `verify_and_redeem` message (and nowhere else an agent can read), and echoed in the reply
    /// so that the linker derives the same [short code](crate::confirm::short_code); a user
    /// with none sends none, and an agent with a
    /// [confirmation policy](crate::confirm::Confirmation) then refuses the link (fail closed).
    ///
    /// ```
    /// # use chrono::DateTime;
    /// # use lanlink::confirm::DisplayName;
    /// # use lanlink::server::{Server, ServerConfig, User};
    /// # use lanlink::secret::PresenceKey;
    /// # use lanlink::wire::{AgentMessage, Announce, LinkRequest, WIRE_VERSION};
    /// # use lanlink::{AccountId, LocalSecret, PublicNetwork, Refusal};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// let (key, secret) = (PresenceKey::from_bytes([1; 32]), LocalSecret::from_bytes([2; 32]));
    /// let id = key.instance_id();
    /// let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), key);
    /// server.announce(now, home, &announce).await.unwrap();
    /// let alice = User::named(AccountId::new("u-1234").unwrap(), DisplayName::new("Alice Example"));
    /// let mut rng = lanlink::os_rng();
    /// // A wrong secret is refused (and counted toward a lockout); the right one is accepted.
    /// let wrong = LinkRequest::new(id, LocalSecret::from_bytes([3; 32]));
    /// let refused = server.link(now, &mut rng, home, &alice, wrong).await;
    /// assert_eq!(refused.unwrap_err(), Refusal::WrongSecret);
    /// let right = LinkRequest::new(id, secret);
    /// let reply = server.link(now, &mut rng, home, &alice, right).await.unwrap();
    /// assert_eq!(reply.display_name.as_deref(), Some("Alice Example"));
    /// let reply = server.announce(now, home, &announce).await.unwrap();
    /// let [AgentMessage::VerifyAndRedeem { display_name, .. }] = reply.messages.as_slice() else {
    ///     panic!()
    /// };
    /// assert_eq!(display_name.as_deref(), Some("Alice Example"));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn link<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        user: &User,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal> {
        let name = user.display_name.clone();
        run!(self, |ops| ops.link(
            now,
            rng,
            &user.account,
            name,
            network,
            request
        ))
    }

    /// The state of `account`'s link to an agent, as seen from the caller's `network`.
    ///
    /// ```
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::wire::LinkState;
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// let alice = AccountId::new("alice").unwrap();
    /// let id = InstanceId::from_bytes([7; 16]);
    /// // Nothing was asked for this instance: its state is unknown (and says no more).
    /// let reply = server.link_status(now, home, &alice, &id).await.unwrap();
    /// assert_eq!((reply.instance_id, reply.state), (id, LinkState::Unknown));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn link_status(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        account: &AccountId,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, Refusal> {
        run!(self, |ops| ops.link_status(
            now,
            account,
            network,
            instance_id
        ))
    }

    /// Mints a manual code for `account` (protocol step 9): from the CSPRNG, unique among live
    /// codes, single-use, valid for `manual_code_ttl`.
    ///
    /// ```
    /// # use chrono::DateTime;
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::AccountId;
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let alice = AccountId::new("alice").unwrap();
    /// let reply = server.mint_code(now, &mut lanlink::os_rng(), &alice).await.unwrap();
    /// assert_eq!(reply.code.expose().len(), 6);
    /// assert_eq!(reply.expires_at, now + chrono::TimeDelta::minutes(10));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn mint_code<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
    ) -> Result<CodeReply, Refusal> {
        run!(self, |ops| ops.mint_code(now, rng, account))
    }

    /// An agent redeems a code from `network` (protocol step 8, and step 9's manual codes): the
    /// code must be live, unredeemed (or redeemed by this very instance, proven by its presence
    /// key: a retry after a lost reply), bound to the presenting instance if minted for one, and
    /// presented from the network it was bound to; failures count toward the presenter
    /// network's lockout.
    ///
    /// The code is claimed (see [`hook`] for the order), the [link hook](Self::with_link_hook)
    /// is awaited, holding nothing, and the link completed; a hook that fails gives the code
    /// back (`503 link_unavailable`, retryable) so that the agent's retry links.
    ///
    /// ```
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::wire::RedeemRequest;
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork, WireCode};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let mut rng = lanlink::os_rng();
    /// let code = server.mint_code(now, &mut rng, &AccountId::new("alice").unwrap()).await.unwrap().code;
    /// let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// let request = RedeemRequest::new(InstanceId::generate(&mut rng), code);
    /// assert!(server.redeem(now, &mut rng, network, &request).await.is_ok());
    /// // Single-use: the same code again reads as any wrong code on the wire.
    /// let again = server.redeem(now, &mut rng, network, &request).await.unwrap_err();
    /// assert_eq!(again.code(), WireCode::InvalidCode);
    /// assert!(again.counts_as_failure());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn redeem<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal> {
        let with_info = self.hook.is_some();
        let pending = run!(self, |ops| ops
            .begin_redeem(now, rng, network, request, with_info))?;
        self.hook_and_finish(now, pending).await
    }

    /// Awaits the link hook (if any) on `pending`, then finishes the redemption.
    pub(crate) async fn hook_and_finish(
        &self,
        now: DateTime<Utc>,
        pending: PendingLink,
    ) -> Result<Redeemed, Refusal> {
        self.finish_around_hook(now, pending, Ok(())).await
    }

    /// The redeem around the hook, once the code is claimed (`pending`): unless `before` failed
    /// (a profile's own step, such as keeping a printer token's digest), the link hook is awaited
    /// (nothing is held meanwhile); then the link is finished, or on a failure the claim given
    /// back so that the agent's retry redeems the code.
    #[cfg_attr(not(feature = "obico-wire"), allow(dead_code))]
    pub(crate) async fn finish_around_hook(
        &self,
        now: DateTime<Utc>,
        pending: PendingLink,
        before: Result<(), HookError>,
    ) -> Result<Redeemed, Refusal> {
        let outcome = match (before, &self.hook) {
            (Ok(()), Some(hook)) => hook.link_completed(pending.link()).await,
            (before, _) => before,
        };
        self.finish_redeem(now, pending, outcome).await
    }

    /// The last step of a redemption: given the hook's `outcome`, completes the link and returns
    /// the token, or (the hook failed: `link_unavailable`) gives the code back.
    pub(crate) async fn finish_redeem(
        &self,
        now: DateTime<Utc>,
        pending: PendingLink,
        outcome: Result<(), HookError>,
    ) -> Result<Redeemed, Refusal> {
        run!(self, |ops| ops.finish_redeem(now, pending, outcome))
    }

    /// Drops every expired record from the store (a housekeeping call; every operation also
    /// ignores what has expired; a store with its own expiry, such as Redis, has nothing to do).
    ///
    /// ```
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::AccountId;
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// server.mint_code(now, &mut lanlink::os_rng(), &AccountId::new("alice").unwrap()).await.unwrap();
    /// server.purge_expired(now).await.unwrap();
    /// assert_eq!(server.store().codes(), 1, "still live");
    /// server.purge_expired(now + chrono::TimeDelta::minutes(11)).await.unwrap();
    /// assert_eq!(server.store().codes(), 0, "a manual code lives 10 minutes");
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn purge_expired(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        run!(self, |ops| ops.purge(now))
    }
}

/// The crate's fuzz harnesses call the one server type through these: the caller resolved by [`Server::caller`], then the step polled once with
/// [`at_once`] (the in-memory store's futures are ready at once).
#[cfg(feature = "fuzz")]
pub(crate) trait AtOnce {
    fn announce_now(
        &self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal>;
    fn discover_now(
        &self,
        now: DateTime<Utc>,
        user: &User,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal>;
    #[allow(clippy::too_many_arguments)]
    fn link_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        user: &User,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal>;
    fn link_status_now(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, Refusal>;
    fn redeem_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal>;
    fn purge_now(&self, now: DateTime<Utc>);
}

#[cfg(feature = "fuzz")]
impl<S: Backend> AtOnce for Server<S> {
    fn announce_now(
        &self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal> {
        let network = self.caller(RequestKind::Announce, peer, headers)?;
        at_once(self.announce(now, network, announce))
    }

    fn discover_now(
        &self,
        now: DateTime<Utc>,
        user: &User,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal> {
        let network = self.caller(RequestKind::Discover, peer, headers)?;
        at_once(self.discover(now, network, user))
    }

    fn link_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        user: &User,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal> {
        let network = self.caller(RequestKind::Link, peer, headers)?;
        at_once(self.link(now, rng, network, user, request))
    }

    fn link_status_now(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, Refusal> {
        let network = self.caller(RequestKind::LinkStatus, peer, headers)?;
        at_once(self.link_status(now, network, account, instance_id))
    }

    fn redeem_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal> {
        let network = self.caller(RequestKind::Redeem, peer, headers)?;
        at_once(self.redeem(now, rng, network, request))
    }

    fn purge_now(&self, now: DateTime<Utc>) {
        // Over the in-memory store a purge cannot fail.
        let _ = at_once(async { self.purge_expired(now).await.map_err(Refusal::from) });
    }
}
