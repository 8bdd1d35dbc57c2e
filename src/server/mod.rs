//! The server: records announcements per public network, shows agents to linkers of the same
//! network, checks link requests against the agent's commitment, forwards the secret, mints codes
//! and tokens, and locks out networks that guess.
//!
//! Sans-IO: each `handle_*` takes the wall-clock `now` (records are shared between server
//! instances, so they carry wall-clock expiries), the socket peer and forwarding headers of the
//! request, and an RNG where something is minted. Decisions go to [`Server::poll_event`].
//!
//! ```
//! use chrono::DateTime;
//! use lanlink::server::{Server, ServerConfig};
//! use lanlink::ForwardedHeaders;
//!
//! let mut server = Server::new(ServerConfig::default()).unwrap();
//! let peer = "203.0.113.7".parse().unwrap();
//! let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
//! let reply = server.handle_discover(now, peer, ForwardedHeaders::NONE).unwrap();
//! assert!(reply.agents.is_empty());
//! ```

pub mod budget;
pub mod connections;
pub mod cross_site;
pub mod endpoint;
pub mod hook;
#[cfg(feature = "ticket")]
pub mod mqtt;
#[cfg(feature = "obico-wire")]
mod obico;
mod ops;
pub mod record;
#[cfg(feature = "redis")]
pub mod redis;
mod service;
pub mod shared;
mod store;

use std::future::Future;
use std::net::IpAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ipnet::{IpNet, Ipv6Net};
use rand::{CryptoRng, RngCore};

pub use self::budget::{Admission, Budgets, CodeSpace, CounterKey, CounterRecord, Level};
pub use self::hook::{CompletedLink, HookError, LinkHook, LinkVia, PendingLink, TokenDigest};
pub use self::ops::MAX_QUEUED_EVENTS;
use self::ops::{EventQueue, Ops};
pub use self::record::{CodeKind, CodeRecord, NetworkRecord};
pub use self::service::{EventSink, Events, Service};
pub use self::shared::{SharedNetworkPolicy, SharedSignal, MAX_DISCOVERERS};
pub use self::store::{CodeFn, CounterFn, MemoryStore, NetworkFn, ReadFn, Store, StoreError};
use crate::addr::{ClientAddrResolver, ForwardedHeaders, PublicNetwork};
use crate::code::CodeFormat;
use crate::confirm::DisplayName;
use crate::error::{ConfigError, Refusal};
use crate::event::ServerEvent;
use crate::id::{AccountId, InstanceId};
use crate::wire::{
    Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemReply,
    RedeemRequest,
};

/// The longest any configured duration may be (a year): longer ones are refused, so that no sum
/// of them can overflow.
pub const MAX_TTL: TimeDelta = TimeDelta::days(365);

/// How many draws [`Server::mint_code`] makes before giving up on finding a free code.
pub const MINT_ATTEMPTS: usize = 16;

/// The server's configuration. Checked by [`ServerConfig::validate`] (and [`Server::new`]).
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
            error: None,
        }
    }
}

macro_rules! duration_setter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
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
    /// The window of every guessing budget (see [`Budgets::window`]).
    pub fn lockout_window(mut self, value: Duration) -> Self {
        match TimeDelta::from_std(value) {
            Ok(delta) => self.budgets.window = delta,
            Err(_) => self.error = self.error.or(Some(ConfigError::Ttl)),
        }
        self
    }

    /// How long a filled guessing budget stays locked (see [`Budgets::lockout`]).
    pub fn lockout_duration(mut self, value: Duration) -> Self {
        match TimeDelta::from_std(value) {
            Ok(delta) => self.budgets.lockout = delta,
            Err(_) => self.error = self.error.or(Some(ConfigError::Ttl)),
        }
        self
    }

    /// Every guessing budget and mint quota (default [`Budgets::default`]).
    pub fn budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// The configured budgets.
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
    pub fn nat64(&self) -> &[Ipv6Net] {
        &self.nat64_prefixes
    }

    /// The most agents a linker is shown; when more are present it is shown none (default 1).
    pub fn max_visible(mut self, max: usize) -> Self {
        self.max_visible = max;
        self
    }

    /// The Obico profile's limit for one private host (default 2, as Obico lists two since 2023:
    /// one Raspberry Pi often runs two Klipper printers): when every agent present in a network
    /// is an Obico agent polling with the same `host_or_ip`, each on its own port, a linker is
    /// shown up to this many (or `max_visible`, if more); any other mix keeps `max_visible`.
    /// `host_or_ip` is what the poll says, not proven: see SECURITY.md ("The Obico profile").
    pub fn max_visible_one_host(mut self, max: usize) -> Self {
        self.max_visible_one_host = max;
        self
    }

    /// The most agents one network record holds (default 16).
    pub fn max_agents_per_network(mut self, max: usize) -> Self {
        self.max_agents_per_network = max;
        self
    }

    /// Failures in `lockout_window` that lock a network out (default 5): the threshold of the
    /// finest budget level (the IPv4 address, the IPv6 grouping prefix); coarser levels are
    /// raised to at least this.
    pub fn lockout_threshold(mut self, threshold: u32) -> Self {
        if threshold == 0 {
            self.error = self.error.or(Some(ConfigError::Lockout));
        } else {
            self.budgets.set_network_threshold(threshold);
        }
        self
    }

    /// The manual code format.
    pub fn code_format(mut self, format: CodeFormat) -> Self {
        self.code_format = format;
        self
    }

    /// Trusts forwarding headers from these proxy networks (default: none).
    pub fn trusted_proxies(mut self, proxies: Vec<IpNet>) -> Self {
        self.resolver = ClientAddrResolver::new(proxies);
        self
    }

    /// When a public network is judged shared (default [`SharedNetworkPolicy::default`]; see
    /// [`shared`]). [`SharedNetworkPolicy::disabled`] turns detection off.
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
    pub fn allowed_origins(&self) -> &[String] {
        &self.allowed_origins
    }

    /// The shared-network policy.
    pub fn shared_network_policy(&self) -> &SharedNetworkPolicy {
        &self.shared
    }

    /// The client-address resolver.
    pub fn resolver(&self) -> &ClientAddrResolver {
        &self.resolver
    }

    /// The configured `max_visible`.
    pub fn visible_limit(&self) -> usize {
        self.max_visible
    }

    /// The public network of a (resolved) client address under this configuration: IPv4 as
    /// itself, a NAT64/SIIT address as the IPv4 address it embeds, other IPv6 by its prefix.
    #[inline]
    pub fn network_of(&self, ip: IpAddr) -> PublicNetwork {
        PublicNetwork::from_ip_nat64(ip, self.ipv6_prefix, &self.nat64_prefixes)
    }

    /// Checks the configuration.
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

/// The server's state machine over an in-memory store. See the [module docs](self).
///
/// Its operations are the same code as [`Service`]'s (written once over any [`Store`]), run to
/// completion at once over the in-memory store.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    store: MemoryStore,
    events: EventQueue,
    hook: Option<std::sync::Arc<dyn LinkHook>>,
}

impl std::fmt::Debug for dyn LinkHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkHook")
    }
}

impl Server {
    /// The operations over this server's own store.
    fn ops(&mut self) -> Ops<'_, MemoryStore> {
        Ops {
            config: &self.config,
            store: &mut self.store,
            events: &mut self.events,
        }
    }
}

/// Runs one operation over the server's own store, lent to it for the call.
macro_rules! run {
    ($server:ident, |$ops:ident| $call:expr) => {{
        let mut $ops = $server.ops();
        ready($call)
    }};
}

/// Polls a future over the in-memory store once: every store call it makes is ready at once, so
/// it is finished. Were it not, the operation fails closed as a store error.
fn ready<T>(future: impl Future<Output = Result<T, Refusal>>) -> Result<T, Refusal> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        Poll::Pending => Err(Refusal::StoreUnavailable),
    }
}

impl Server {
    /// A server with an empty in-memory store. Its events wait for the host in a bounded queue
    /// ([`poll_event`](Self::poll_event), which reports any it had no room for), unless it is
    /// given a [sink](Self::with_event_sink).
    pub fn new(config: ServerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            store: MemoryStore::default(),
            events: EventQueue::default(),
            hook: None,
        })
    }

    /// Hands every event to `sink` as it happens, instead of queueing it for
    /// [`poll_event`](Self::poll_event) (which then returns `None`); any already queued go to
    /// `sink` first. The HTTP routers over a shared server drain the queue after each request
    /// and log what they drain.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lanlink::server::{Server, ServerConfig};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let mut server = Server::new(ServerConfig::default())
    ///     .unwrap()
    ///     .with_event_sink(move |event| log.lock().unwrap().push(serde_json::to_string(&event).unwrap()));
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// server.handle_discover(now, "203.0.113.7".parse().unwrap(), lanlink::ForwardedHeaders::NONE).unwrap();
    /// assert!(server.poll_event().is_none());
    /// assert!(seen.lock().unwrap()[0].starts_with(r#"{"event":"discovered""#));
    /// ```
    pub fn with_event_sink(mut self, sink: impl Fn(ServerEvent) + Send + Sync + 'static) -> Self {
        while let Some(event) = self.events.pop_front() {
            sink(event);
        }
        self.events.sink = Some(std::sync::Arc::new(sink));
        self
    }

    /// Calls `hook` on every completed link before its token is returned (see [`hook`]).
    /// [`handle_redeem`](Self::handle_redeem) runs it at once (a hook that must wait fails the
    /// redemption retryably); the HTTP routers await it between
    /// [`begin_redeem`](Self::begin_redeem) and [`finish_redeem`](Self::finish_redeem), outside
    /// the server's lock.
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
    /// let seen = Arc::new(Seen::default());
    /// let mut server = Server::new(ServerConfig::default()).unwrap().with_link_hook(seen.clone());
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let mut rng = lanlink::os_rng();
    /// let code = server.mint_code(now, &mut rng, &AccountId::new("alice").unwrap()).unwrap().code;
    /// let instance_id = InstanceId::generate(&mut rng);
    /// let request = RedeemRequest { instance_id, code, presence_key: None, attempt: 1 };
    /// let peer = "203.0.113.7".parse().unwrap();
    /// server.handle_redeem(now, &mut rng, peer, ForwardedHeaders::NONE, &request).unwrap();
    /// assert_eq!(*seen.0.lock().unwrap(), [instance_id]);
    /// ```
    pub fn with_link_hook(mut self, hook: std::sync::Arc<dyn LinkHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The link hook, if one is set.
    pub fn link_hook(&self) -> Option<std::sync::Arc<dyn LinkHook>> {
        self.hook.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The store (read-only; for inspection and tests).
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// The next event, oldest first. Without a [sink](Self::with_event_sink), events wait here
    /// for the host: drain them after each call. At most [`MAX_QUEUED_EVENTS`] wait; past that
    /// bound events are lost, never silently: one [`ServerEvent::EventsLost`] comes in their
    /// place, counting them (and [`lost_events`](Self::lost_events) counts them all).
    ///
    /// ```
    /// use lanlink::event::ServerEvent;
    /// use lanlink::server::{Server, ServerConfig, MAX_QUEUED_EVENTS};
    /// use lanlink::ForwardedHeaders;
    /// let mut server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let peer = "203.0.113.7".parse().unwrap();
    /// for _ in 0..MAX_QUEUED_EVENTS + 3 {
    ///     let _ = server.handle_discover(now, peer, ForwardedHeaders::NONE);
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
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// How many events were lost in all because more than [`MAX_QUEUED_EVENTS`] waited
    /// undrained (for a metric: [`poll_event`](Self::poll_event) reports each loss in its place
    /// as a [`ServerEvent::EventsLost`]). None are lost once a [sink](Self::with_event_sink) is set.
    pub fn lost_events(&self) -> u64 {
        self.events.lost()
    }

    /// An agent announces (protocol step 3). The reply carries any queued messages.
    pub fn handle_announce(
        &mut self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal> {
        self.ops().announce_now(now, peer, headers, announce)
    }

    /// An announcement from an agent whose public network is already known (from a transport
    /// that cannot see the caller's address, such as MQTT with a verified network ticket). The
    /// same checks as [`handle_announce`](Self::handle_announce) apply after the network is known.
    pub fn announce_in(
        &mut self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal> {
        self.ops().announce_in_now(now, network, announce)
    }

    /// A linker asks for discoverable agents (protocol step 4).
    pub fn handle_discover(
        &mut self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal> {
        self.ops().discover_now(now, peer, headers, None)
    }

    /// [`handle_discover`](Self::handle_discover) by an authenticated `account` (what the HTTP
    /// routes call): the account is counted among the network's recent discoverers, as a short
    /// per-network hash, toward the [shared-network](shared) judgement. A plain read, but for
    /// one write the first time in a window that the account discovers from the network.
    ///
    /// ```
    /// use lanlink::server::{Server, ServerConfig};
    /// use lanlink::wire::HiddenReason;
    /// use lanlink::{AccountId, ForwardedHeaders};
    /// let mut server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let dorm = "203.0.113.7".parse().unwrap();
    /// // Four accounts: a household. The fifth distinct account marks the network shared.
    /// for n in 0..5 {
    ///     let account = AccountId::new(format!("user{n}")).unwrap();
    ///     let reply = server.handle_discover_as(now, &account, dorm, ForwardedHeaders::NONE).unwrap();
    ///     let shared = reply.hidden.map(|h| h.reason) == Some(HiddenReason::SharedNetwork);
    ///     assert_eq!(shared, n == 4);
    /// }
    /// ```
    pub fn handle_discover_as(
        &mut self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal> {
        self.ops().discover_now(now, peer, headers, Some(account))
    }

    /// A linker asks to link an agent to `account` (protocol step 6).
    ///
    /// ```
    /// # use chrono::DateTime;
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::secret::PresenceKey;
    /// # use lanlink::wire::{Announce, LinkRequest, WIRE_VERSION};
    /// # use lanlink::{AccountId, ForwardedHeaders, LocalSecret, Refusal};
    /// let mut server = Server::new(ServerConfig::default()).unwrap();
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let home = "203.0.113.7".parse().unwrap();
    /// let (key, secret) = (PresenceKey::from_bytes([1; 32]), LocalSecret::from_bytes([2; 32]));
    /// let id = key.instance_id();
    /// let announce = Announce {
    ///     version: WIRE_VERSION, instance_id: id, private_ip: "192.168.1.50".parse().unwrap(),
    ///     port: 8080, info: Default::default(), commitment: secret.commitment(&id), presence_key: key,
    ///     candidates: Vec::new(),
    /// };
    /// server.handle_announce(now, home, ForwardedHeaders::NONE, &announce).unwrap();
    /// let alice = AccountId::new("alice").unwrap();
    /// let mut rng = lanlink::os_rng();
    /// // A wrong secret is refused (and counted toward a lockout); the right one is accepted.
    /// let wrong = LinkRequest { instance_id: id, local_secret: LocalSecret::from_bytes([3; 32]), nonce: None };
    /// let refused = server.handle_link(now, &mut rng, &alice, home, ForwardedHeaders::NONE, wrong);
    /// assert_eq!(refused.unwrap_err(), Refusal::WrongSecret);
    /// let right = LinkRequest { instance_id: id, local_secret: secret, nonce: None };
    /// assert!(server.handle_link(now, &mut rng, &alice, home, ForwardedHeaders::NONE, right).is_ok());
    /// ```
    ///
    /// The agent is told the account's display name (revision 1.4): here the account id itself
    /// ([`DisplayName::of_account`]); [`Server::handle_link_as`] takes the embedder's.
    pub fn handle_link<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal> {
        let name = DisplayName::of_account(account);
        self.handle_link_as(now, rng, account, name, peer, headers, request)
    }

    /// [`Server::handle_link`] with the account's display name from the embedder (revision 1.4):
    /// forwarded to the agent inside its `verify_and_redeem` message (and nowhere else an agent
    /// can read), and echoed in the reply so that the linker derives the same
    /// [short code](crate::confirm::short_code). `None` sends no name: an agent with a
    /// [confirmation policy](crate::confirm::Confirmation) then refuses the link (fail closed).
    ///
    /// ```
    /// # use chrono::DateTime;
    /// # use lanlink::confirm::DisplayName;
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::secret::PresenceKey;
    /// # use lanlink::wire::{AgentMessage, Announce, LinkRequest, WIRE_VERSION};
    /// # use lanlink::{AccountId, ForwardedHeaders, LocalSecret};
    /// # let mut server = Server::new(ServerConfig::default()).unwrap();
    /// # let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let home = "203.0.113.7".parse().unwrap();
    /// # let (key, secret) = (PresenceKey::from_bytes([1; 32]), LocalSecret::from_bytes([2; 32]));
    /// # let id = key.instance_id();
    /// # let announce = Announce {
    /// #     version: WIRE_VERSION, instance_id: id, private_ip: "192.168.1.50".parse().unwrap(),
    /// #     port: 8080, info: Default::default(), commitment: secret.commitment(&id), presence_key: key,
    /// #     candidates: Vec::new(),
    /// # };
    /// # server.handle_announce(now, home, ForwardedHeaders::NONE, &announce).unwrap();
    /// let alice = AccountId::new("u-1234").unwrap();
    /// let name = DisplayName::new("Alice Example");
    /// let link = LinkRequest { instance_id: id, local_secret: secret, nonce: None };
    /// let reply = server
    ///     .handle_link_as(now, &mut lanlink::os_rng(), &alice, name, home, ForwardedHeaders::NONE, link)
    ///     .unwrap();
    /// assert_eq!(reply.display_name.as_deref(), Some("Alice Example"));
    /// let reply = server.handle_announce(now, home, ForwardedHeaders::NONE, &announce).unwrap();
    /// let [AgentMessage::VerifyAndRedeem { display_name, .. }] = reply.messages.as_slice() else {
    ///     panic!()
    /// };
    /// assert_eq!(display_name.as_deref(), Some("Alice Example"));
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn handle_link_as<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        display_name: Option<DisplayName>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal> {
        run!(self, |ops| ops.handle_link(
            now,
            rng,
            account,
            display_name,
            peer,
            headers,
            request
        ))
    }

    /// The state of `account`'s link to an agent, as seen from the caller's network.
    pub fn handle_link_status(
        &mut self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, Refusal> {
        run!(self, |ops| ops.handle_link_status(
            now,
            account,
            peer,
            headers,
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
    /// let mut server = Server::new(ServerConfig::default()).unwrap();
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let alice = AccountId::new("alice").unwrap();
    /// let reply = server.mint_code(now, &mut lanlink::os_rng(), &alice).unwrap();
    /// assert_eq!(reply.code.expose().len(), 6);
    /// assert_eq!(reply.expires_at, now + chrono::TimeDelta::minutes(10));
    /// ```
    pub fn mint_code<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
    ) -> Result<CodeReply, Refusal> {
        run!(self, |ops| ops.mint_code(now, rng, account))
    }

    /// An agent redeems a code (protocol step 8, and step 9's manual codes): the code must be
    /// live, unredeemed (or redeemed by this very instance, proven by its presence key: a retry
    /// after a lost reply), bound to the presenting instance if minted for one, and presented
    /// from the network it was bound to; failures count toward the presenter network's lockout.
    ///
    /// Runs [`begin_redeem`](Self::begin_redeem), the [link hook](Self::with_link_hook) if any,
    /// and [`finish_redeem`](Self::finish_redeem).
    ///
    /// **A hook that awaits anything fails every redemption here** (`503 link_unavailable`,
    /// retryable, the code given back): this call is synchronous and holds `&mut self`, so it
    /// polls the hook once and cannot wait for it. Blocking instead would hold the server (and
    /// any lock around it) across the host's I/O, and would deadlock a single-threaded runtime
    /// whose timer or reactor the hook needs. A host whose hook awaits serves redemptions with
    /// [`endpoint::handle`] (the HTTP routes, any stack), [`Service::handle_redeem`], or calls
    /// [`begin_redeem`](Self::begin_redeem), awaits the hook, then
    /// [`finish_redeem`](Self::finish_redeem) itself.
    pub fn handle_redeem<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal> {
        let pending = self.begin_redeem(now, rng, peer, headers, request)?;
        self.finish_at_once(now, pending)
    }

    /// A redemption from an agent whose public network is already known (see
    /// [`announce_in`](Self::announce_in)); the same checks as
    /// [`handle_redeem`](Self::handle_redeem) apply after the network is known.
    pub fn redeem_in<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal> {
        let pending = self.begin_redeem_in(now, rng, network, request)?;
        self.finish_at_once(now, pending)
    }

    /// Runs the hook (if any) at once and finishes.
    pub(crate) fn finish_at_once(
        &mut self,
        now: DateTime<Utc>,
        pending: PendingLink,
    ) -> Result<Redeemed, Refusal> {
        let outcome = match &self.hook {
            Some(hook) => hook::run_at_once(&**hook, pending.link()),
            None => Ok(()),
        };
        self.finish_redeem(now, pending, outcome)
    }

    /// The first step of a redemption: charges and checks the guess and claims the code for the
    /// agent (see [`hook`] for the order). Give [`PendingLink::link`] to the host's hook, then
    /// its outcome to [`finish_redeem`](Self::finish_redeem); the server need not be borrowed
    /// meanwhile.
    ///
    /// ```
    /// # use chrono::DateTime;
    /// # use lanlink::server::{Server, ServerConfig, HookError, LinkVia};
    /// # use lanlink::wire::RedeemRequest;
    /// # use lanlink::{AccountId, ForwardedHeaders, Refusal, TokenDigest};
    /// # use lanlink::secret::PresenceKey;
    /// let mut server = Server::new(ServerConfig::default()).unwrap();
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let mut rng = lanlink::os_rng();
    /// let code = server.mint_code(now, &mut rng, &AccountId::new("alice").unwrap()).unwrap().code;
    /// let key = PresenceKey::generate(&mut rng);
    /// let request = RedeemRequest { instance_id: key.instance_id(), code, presence_key: Some(key), attempt: 0 };
    /// let peer = "203.0.113.7".parse().unwrap();
    ///
    /// // The host's store is down: the redemption fails retryably and the code is given back.
    /// let pending = server.begin_redeem(now, &mut rng, peer, ForwardedHeaders::NONE, &request).unwrap();
    /// assert_eq!(pending.link().via, LinkVia::Manual);
    /// let failed = server.finish_redeem(now, pending, Err(HookError::new("db down")));
    /// assert_eq!(failed.unwrap_err(), Refusal::LinkUnavailable);
    ///
    /// // The retry links; the token is the one whose digest the hook was given.
    /// let pending = server.begin_redeem(now, &mut rng, peer, ForwardedHeaders::NONE, &request).unwrap();
    /// let digest = pending.link().token_digest;
    /// let redeemed = server.finish_redeem(now, pending, Ok(())).unwrap();
    /// assert!(digest.verify(&redeemed.reply.auth_token));
    /// ```
    pub fn begin_redeem<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: &RedeemRequest,
    ) -> Result<PendingLink, Refusal> {
        let with_info = self.hook.is_some();
        run!(self, |ops| ops
            .begin_redeem(now, rng, peer, headers, request, with_info))
    }

    /// [`begin_redeem`](Self::begin_redeem) for an agent whose public network is already known.
    pub fn begin_redeem_in<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        request: &RedeemRequest,
    ) -> Result<PendingLink, Refusal> {
        let with_info = self.hook.is_some();
        run!(self, |ops| ops
            .begin_redeem_in(now, rng, network, request, with_info))
    }

    /// The last step of a redemption: given the hook's `outcome`, completes the link and returns
    /// the token, or (the hook failed: `link_unavailable`) gives the code back so that the
    /// agent's retry links.
    pub fn finish_redeem(
        &mut self,
        now: DateTime<Utc>,
        pending: PendingLink,
        outcome: Result<(), HookError>,
    ) -> Result<Redeemed, Refusal> {
        run!(self, |ops| ops.finish_redeem(now, pending, outcome))
    }

    /// Drops every expired record from the store (a housekeeping call; every operation also
    /// ignores what has expired).
    pub fn purge_expired(&mut self, now: DateTime<Utc>) {
        self.store.purge(now, &self.config);
    }
}
