//! [`ServerConfig`]: the server's configuration and its checks.
//! It must not do I/O or read a clock; a configuration that fails its checks is refused, never
//! corrected in silence.

use std::net::IpAddr;
use std::time::Duration;

use chrono::TimeDelta;
use ipnet::{IpNet, Ipv6Net};

use super::budget::Budgets;
use super::cross_site;
use super::limits::MAX_TTL;
use super::shared::SharedNetworkPolicy;
use crate::addr::{ClientAddrResolver, PublicNetwork};
use crate::code::CodeFormat;
use crate::error::ConfigError;

#[cfg(doc)]
use super::shared;

/// The server's configuration. Checked by [`ServerConfig::validate`] (and [`Server::new`](crate::server::Server::new)).
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
