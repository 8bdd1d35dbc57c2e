//! [`AgentConfig`], the agent's limits and defaults, and the order it announces its endpoints in.
//! It must not do I/O or read a clock: a configuration is checked when the agent is made.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use crate::addr::{is_announceable_private_ip, ClientAddrResolver, LocalPolicy};
use crate::confirm::Confirmation;
use crate::error::ConfigError;
use crate::wire::{DeviceInfo, HiddenReason, Visibility, MAX_CANDIDATES, MAX_HOLD_MS};

#[cfg(doc)]
use super::Agent;
#[cfg(doc)]
use crate::error::VerifyFailure;
#[cfg(doc)]
use crate::event::{AgentEvent, StopReason};

/// Networks that hold container-internal addresses, which a browser elsewhere on the LAN
/// usually cannot reach: Docker's default bridge `172.17.0.0/16`, the Home Assistant
/// supervisor's `172.30.32.0/23` and podman's `10.88.0.0/16`. [`order_endpoints`] puts them
/// after ordinary private addresses.
pub const CONTAINER_NETWORKS: [&str; 3] = ["172.17.0.0/16", "172.30.32.0/23", "10.88.0.0/16"];

/// The most addresses [`order_endpoints`] reads.
const MAX_ORDERED: usize = 256;

/// How likely a linker elsewhere on the LAN reaches `ip`: 0 ordinary private (RFC 1918, ULA),
/// 1 loopback (this host only), 2 container-internal, 3 link-local.
fn endpoint_rank(ip: IpAddr) -> u8 {
    let ip = crate::addr::canonical(ip);
    let container = CONTAINER_NETWORKS
        .iter()
        .filter_map(|net| net.parse::<IpNet>().ok())
        .any(|net| net.contains(&ip));
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    if link_local {
        3
    } else if container {
        2
    } else if ip.is_loopback() {
        1
    } else {
        0
    }
}

/// Orders an agent's local endpoints as it announces them (revision 1.3): the operator-pinned
/// endpoint first, when given; then ordinary private addresses (RFC 1918, ULA), then loopback,
/// then container-internal ones ([`CONTAINER_NETWORKS`]), then link-local ones (`169.254.0.0/16`,
/// `fe80::/10`), each group in the order given. Drops addresses that may not be announced
/// ([`is_announceable_private_ip`]: a public address, say), IPv6 scope ids (a browser cannot use
/// them), IPv4-mapped IPv6 forms (read as IPv4) and repeats, and keeps at most
/// `1 + `[`MAX_CANDIDATES`] endpoints: the first is the announcement's `private_ip:port`, the
/// rest its `candidates`. Reads at most the first 256 addresses given. Pure: no interface is
/// read here.
///
/// ```
/// use lanlink::agent::order_endpoints;
/// let ordered = order_endpoints(
///     Some("192.168.1.20:5000".parse().unwrap()),
///     [
///         "172.17.0.2:5000".parse().unwrap(),    // Docker's bridge: late
///         "[fe80::1]:5000".parse().unwrap(),     // link-local: last
///         "203.0.113.7:5000".parse().unwrap(),   // public: dropped
///         "10.0.0.5:5000".parse().unwrap(),      // another interface
///         "192.168.1.20:5000".parse().unwrap(),  // the pinned one again: dropped
///     ],
/// );
/// let text: Vec<String> = ordered.iter().map(|e| e.to_string()).collect();
/// assert_eq!(text, ["192.168.1.20:5000", "10.0.0.5:5000", "172.17.0.2:5000", "[fe80::1]:5000"]);
/// ```
pub fn order_endpoints(
    pinned: Option<SocketAddr>,
    endpoints: impl IntoIterator<Item = SocketAddr>,
) -> Vec<SocketAddr> {
    let clean = |endpoint: SocketAddr| {
        let ip = crate::addr::canonical(endpoint.ip());
        is_announceable_private_ip(ip).then(|| SocketAddr::new(ip, endpoint.port()))
    };
    let mut rest: Vec<SocketAddr> = Vec::new();
    let pinned = pinned.and_then(clean);
    // Bounded work on any input: at most the first MAX_ORDERED addresses are read.
    for endpoint in endpoints.into_iter().take(MAX_ORDERED).filter_map(clean) {
        if Some(endpoint) != pinned && !rest.contains(&endpoint) {
            rest.push(endpoint);
        }
    }
    // A stable sort keeps the given order within each rank.
    rest.sort_by_key(|endpoint| endpoint_rank(endpoint.ip()));
    let mut out: Vec<SocketAddr> = pinned.into_iter().chain(rest).collect();
    out.truncate(MAX_CANDIDATES + 1);
    out
}

/// How the server shows an agent, in plain words for the device's user (what the example
/// agents print). No words name or count another device.
///
/// ```
/// use lanlink::agent::describe_visibility;
/// use lanlink::wire::{HiddenReason, Visibility};
/// assert!(describe_visibility(Visibility::Visible).contains("shown"));
/// assert!(describe_visibility(Visibility::Hidden(HiddenReason::TooManyAgents)).contains("use a code"));
/// ```
pub fn describe_visibility(visibility: Visibility) -> &'static str {
    match visibility {
        Visibility::Visible => {
            "This device is shown to the linking page on your network: open it on a computer or phone on the same network."
        }
        Visibility::Hidden(HiddenReason::TooManyAgents) => {
            "Two or more devices are in linking mode on your network, so none is shown: link them one at a time, or use a code."
        }
        Visibility::Hidden(HiddenReason::SharedNetwork) => {
            "Your network looks shared with other households (a carrier's shared address, a dormitory, an office), so devices on it are not shown: use a code."
        }
        Visibility::Hidden(HiddenReason::WindowOver) => {
            "Linking mode has run too long: restart it on the device, or use a code."
        }
        Visibility::Hidden(_) => "This device is not shown on your network for now: use a code.",
    }
}

/// The longest discovery window the crate allows: 10 minutes.
pub const MAX_DISCOVERY_WINDOW: Duration = Duration::from_secs(600);

/// The default announce interval: 2 seconds.
pub const DEFAULT_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);

/// The longest pause between announcements the agent accepts from a server's `poll_after_ms`.
pub const MAX_POLL_AFTER: Duration = Duration::from_secs(30);

/// How long, by default, the agent keeps retrying a redemption without an answer before it stops
/// ([`StopReason::ServerUnreachable`]): 60 seconds, well inside an auto code's life.
pub const DEFAULT_REDEEM_TIMEOUT: Duration = Duration::from_secs(60);

/// How long, by default, a link waits for the owner's decision under a confirmation policy
/// before discovery ends ([`StopReason::ConfirmationExpired`]): 60 seconds.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);

/// The first pause before a redemption is sent again (after a retryable refusal, a lost reply or
/// no answer at all); it doubles with each attempt up to [`REDEEM_RETRY_CAP`].
pub const REDEEM_RETRY_BASE: Duration = Duration::from_millis(500);

/// The longest pause between two attempts at a redemption.
pub const REDEEM_RETRY_CAP: Duration = Duration::from_secs(8);

/// How long, by default, the agent asks a server of revision 1.6 or later to hold its
/// announcement open while no message waits: 20 seconds (see [`AgentConfig::hold`]).
///
/// ```
/// use lanlink::agent::{DEFAULT_HOLD, MAX_HOLD};
/// assert!(DEFAULT_HOLD <= MAX_HOLD);
/// ```
pub const DEFAULT_HOLD: Duration = Duration::from_secs(20);

/// The longest hold the agent may ask for: [`MAX_HOLD_MS`], 25 seconds.
///
/// ```
/// assert_eq!(lanlink::agent::MAX_HOLD.as_millis(), u128::from(lanlink::wire::MAX_HOLD_MS));
/// ```
pub const MAX_HOLD: Duration = Duration::from_millis(MAX_HOLD_MS as u64);

/// How many held announcements in a row may fail (no answer, or a proxy's page instead of the
/// server's) before the agent stops asking for holds for the rest of its window
/// ([`AgentEvent::HoldFallback`]); see [`Agent::handle_announce_failed`].
///
/// ```
/// let event = lanlink::event::AgentEvent::HoldFallback {
///     failures: lanlink::agent::HOLD_FAILURES_BEFORE_FALLBACK,
/// };
/// # let _ = event;
/// ```
pub const HOLD_FAILURES_BEFORE_FALLBACK: u32 = 2;

/// The agent's configuration. Checked by [`Agent::new`].
///
/// ```
/// use std::time::Duration;
/// use lanlink::agent::AgentConfig;
/// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
///     .window(Duration::from_secs(300))
///     .allow_host("printer.local");
/// assert_eq!(config.window_length(), Duration::from_secs(300));
/// assert_eq!(config.port(), 8080);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub(super) window: Duration,
    pub(super) announce_interval: Duration,
    pub(super) private_ip: IpAddr,
    pub(super) port: u16,
    pub(super) info: DeviceInfo,
    pub(super) local_policy: LocalPolicy,
    pub(super) resolver: ClientAddrResolver,
    pub(super) allowed_hosts: Vec<String>,
    pub(super) allowed_origins: Vec<String>,
    pub(super) redeem_timeout: Duration,
    pub(super) confirmation: Confirmation,
    pub(super) confirm_timeout: Duration,
    pub(super) advertise: Option<SocketAddr>,
    pub(super) candidates: Vec<SocketAddr>,
    pub(super) hold: Duration,
}

impl AgentConfig {
    /// A configuration with the defaults: a 10-minute window, a 2-second announce interval, the
    /// default [`LocalPolicy`], no trusted proxies, no host names (IP literals only) and no
    /// origins (any request with an `Origin` is refused).
    ///
    /// ```
    /// use lanlink::agent::{AgentConfig, DEFAULT_ANNOUNCE_INTERVAL};
    /// use lanlink::MAX_DISCOVERY_WINDOW;
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// assert_eq!(config.window_length(), MAX_DISCOVERY_WINDOW);
    /// assert_eq!(config.interval(), DEFAULT_ANNOUNCE_INTERVAL);
    /// assert!(config.allowed_origins().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(private_ip: IpAddr, port: u16, info: DeviceInfo) -> Self {
        Self {
            window: MAX_DISCOVERY_WINDOW,
            announce_interval: DEFAULT_ANNOUNCE_INTERVAL,
            private_ip,
            port,
            info,
            local_policy: LocalPolicy::default(),
            resolver: ClientAddrResolver::default(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            redeem_timeout: DEFAULT_REDEEM_TIMEOUT,
            confirmation: Confirmation::None,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            advertise: None,
            candidates: Vec::new(),
            hold: DEFAULT_HOLD,
        }
    }

    /// Sets how long the agent asks the server to hold each announcement open while no message
    /// waits for it (revision 1.6; default [`DEFAULT_HOLD`], at most [`MAX_HOLD`], else
    /// [`ConfigError::Hold`]; zero never asks). A held announcement is answered as soon as a
    /// link is accepted for the agent, so the link reaches it at once instead of at its next
    /// announcement. The hold is asked only of a server that stated revision 1.6 or later, never
    /// past the window's end, and the server may grant less. Proxies between the agent and the
    /// server must let a request stay idle this long: an agent whose held announcements fail
    /// [twice in a row](HOLD_FAILURES_BEFORE_FALLBACK) stops asking for the rest of its window
    /// ([`AgentEvent::HoldFallback`]) and announces at its interval as before 1.6. Its HTTP
    /// client must wait longer than the hold for an answer
    /// (`lanlink::http::client::HttpAgentClient` waits the hold plus 10 s).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
    /// use lanlink::wire::AnnounceReply;
    /// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default())
    ///     .hold(Duration::from_secs(15));
    /// let now = Instant::now();
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// // The first announcement asks for no hold: the server has not stated its revision yet.
    /// let Some(AgentTransmit::Announce(first)) = agent.poll_transmit(now) else { panic!() };
    /// assert_eq!(first.hold_ms, None);
    /// agent.handle_announce_reply(now, AnnounceReply::new(Vec::new(), 2000)); // a 1.6 server
    /// let later = now + Duration::from_secs(2);
    /// let Some(AgentTransmit::Announce(held)) = agent.poll_transmit(later) else { panic!() };
    /// assert_eq!(held.hold_ms, Some(15_000));
    /// // More than 25 s is refused.
    /// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default())
    ///     .hold(Duration::from_secs(26));
    /// assert_eq!(
    ///     Agent::new(config, now, &mut lanlink::os_rng()).unwrap_err(),
    ///     lanlink::ConfigError::Hold,
    /// );
    /// ```
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// How long the agent asks the server to hold its announcements ([`AgentConfig::hold`]).
    ///
    /// ```
    /// use lanlink::agent::{AgentConfig, DEFAULT_HOLD};
    /// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
    /// assert_eq!(config.hold_length(), DEFAULT_HOLD);
    /// ```
    pub fn hold_length(&self) -> Duration {
        self.hold
    }

    /// Sets the confirmation policy (revision 1.4; default [`Confirmation::None`], the flow
    /// before it). Under [`Confirmation::Approve`] or [`Confirmation::Compare`] a verified
    /// `verify_and_redeem` message is not redeemed at once: the agent emits
    /// [`AgentEvent::ConfirmationRequested`] and waits for [`Agent::confirm`]. It needs a 1.4
    /// server (which sends the display name) and, for `Compare`, a 1.4 linker (which sends the
    /// nonce); a message without them is refused
    /// ([`VerifyFailure::ConfirmationUnavailable`]) and discovery ends.
    ///
    /// ```
    /// use std::time::Instant;
    /// use lanlink::agent::{Agent, AgentConfig, AgentStatus};
    /// use lanlink::confirm::{ConfirmNonce, Confirmation, Decision};
    /// use lanlink::event::AgentEvent;
    /// use lanlink::wire::{AgentMessage, AnnounceReply};
    /// use lanlink::{LinkCode, LocalSecret};
    /// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default())
    ///     .confirmation(Confirmation::Approve);
    /// let now = Instant::now();
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// # use lanlink::agent::SecretRequest;
    /// # let id = agent.instance_id().to_string();
    /// # let request = SecretRequest { peer: "192.168.1.20".parse().unwrap(),
    /// #     forwarded: lanlink::ForwardedHeaders::NONE, host: Some("192.168.1.50"), origin: None,
    /// #     instance_id: &id };
    /// let secret = agent.handle_secret_request(now, &request).unwrap().local_secret;
    /// let message = AgentMessage::VerifyAndRedeem {
    ///     instance_id: agent.instance_id(),
    ///     local_secret: secret,
    ///     code: LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap(),
    ///     display_name: Some("alice@example.com".into()),
    ///     nonce: Some(ConfirmNonce::from_bytes([1; 16])),
    /// };
    /// let reply = AnnounceReply::new(vec![message], 2000);
    /// agent.handle_announce_reply(now, reply);
    /// assert!(matches!(agent.status(), AgentStatus::Confirming { .. }));
    /// assert!(agent.poll_transmit(now).is_none()); // nothing is redeemed yet
    /// let asked = std::iter::from_fn(|| agent.poll_event())
    ///     .any(|e| matches!(e, AgentEvent::ConfirmationRequested { display_name, .. }
    ///         if display_name.as_str() == "alice@example.com"));
    /// assert!(asked);
    /// agent.confirm(now, Decision::Approve).unwrap();
    /// assert_eq!(agent.status(), AgentStatus::Redeeming);
    /// ```
    pub fn confirmation(mut self, policy: Confirmation) -> Self {
        self.confirmation = policy;
        self
    }

    /// Sets how long a link waits for the owner's decision (more than zero, at most
    /// [`MAX_DISCOVERY_WINDOW`]; default [`DEFAULT_CONFIRM_TIMEOUT`]). The deadline never
    /// reaches past the discovery window. Keep it, plus the redeem timeout, inside the server's
    /// auto-code life (2 minutes by default).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lanlink::agent::{Agent, AgentConfig};
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .confirm_timeout(Duration::ZERO);
    /// let refused = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap_err();
    /// assert_eq!(refused, lanlink::ConfigError::ConfirmTimeout);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// The confirmation policy.
    ///
    /// ```
    /// use lanlink::{agent::AgentConfig, confirm::Confirmation};
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// assert_eq!(config.confirmation_policy(), Confirmation::None);
    /// assert_eq!(config.confirmation(Confirmation::Compare).confirmation_policy(), Confirmation::Compare);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn confirmation_policy(&self) -> Confirmation {
        self.confirmation
    }

    /// Pins the endpoint linkers try first (revision 1.3), e.g. the host's address when the
    /// agent runs in a container whose port is published (`--advertise 192.168.1.20:5000`). It
    /// is announced as `private_ip:port`; the address given to [`AgentConfig::new`] becomes a
    /// [candidate](Self::candidates). Must be private like `private_ip`
    /// ([`ConfigError::AgentAddress`]).
    ///
    /// ```
    /// use std::time::Instant;
    /// use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
    /// let config = AgentConfig::new("172.17.0.2".parse().unwrap(), 5000, Default::default())
    ///     .advertise("192.168.1.20:5000".parse().unwrap());
    /// let now = Instant::now();
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// let Some(AgentTransmit::Announce(announce)) = agent.poll_transmit(now) else { panic!() };
    /// assert_eq!((announce.private_ip.to_string(), announce.port), ("192.168.1.20".into(), 5000));
    /// assert_eq!(announce.candidates, ["172.17.0.2:5000".parse().unwrap()]);
    /// ```
    pub fn advertise(mut self, endpoint: SocketAddr) -> Self {
        self.advertise = Some(endpoint);
        self
    }

    /// Sets further endpoints of the local endpoint (the device's addresses on its other
    /// interfaces, say), announced as `candidates` (revision 1.3) in the order
    /// [`order_endpoints`] gives, at most [`MAX_CANDIDATES`]. Each must be private like
    /// `private_ip` ([`ConfigError::AgentAddress`]). The endpoint must be served on each of
    /// them: a linker tries them in turn when the first does not answer.
    ///
    /// ```
    /// use lanlink::agent::AgentConfig;
    /// let config = AgentConfig::new("172.30.33.4".parse().unwrap(), 5000, Default::default())
    ///     .candidates(vec!["192.168.1.20:5000".parse().unwrap()]);
    /// // The Home Assistant add-on's internal address goes after the LAN one.
    /// assert_eq!(config.endpoints()[0], "192.168.1.20:5000".parse().unwrap());
    /// ```
    pub fn candidates(mut self, endpoints: Vec<SocketAddr>) -> Self {
        self.candidates = endpoints;
        self
    }

    /// Every endpoint the agent announces, in order (see [`order_endpoints`]): the first is the
    /// announcement's `private_ip:port`, the rest its `candidates`.
    ///
    /// ```
    /// use lanlink::agent::AgentConfig;
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// assert_eq!(config.endpoints(), ["192.168.1.50:8080".parse::<std::net::SocketAddr>()?]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        order_endpoints(
            self.advertise,
            std::iter::once(SocketAddr::new(self.private_ip, self.port))
                .chain(self.candidates.iter().copied()),
        )
    }

    /// Sets how long the agent retries a redemption before it stops (more than zero, at most
    /// [`MAX_DISCOVERY_WINDOW`]; default [`DEFAULT_REDEEM_TIMEOUT`]). Keep it shorter than the
    /// server's auto-code life (2 minutes by default), past which a retry cannot succeed.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lanlink::agent::{Agent, AgentConfig, AgentStatus};
    /// use lanlink::event::StopReason;
    /// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default())
    ///     .redeem_timeout(Duration::from_secs(20));
    /// let now = Instant::now();
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// agent.enter_code(now, lanlink::LinkCode::parse("482913").unwrap()).unwrap();
    /// let _ = agent.poll_transmit(now); // sent; no answer ever comes
    /// agent.handle_timeout(now + Duration::from_secs(20));
    /// assert_eq!(agent.status(), AgentStatus::Stopped(StopReason::ServerUnreachable));
    /// ```
    pub fn redeem_timeout(mut self, timeout: Duration) -> Self {
        self.redeem_timeout = timeout;
        self
    }

    /// Sets the discovery window (more than zero, at most [`MAX_DISCOVERY_WINDOW`]).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lanlink::{agent::{Agent, AgentConfig}, ConfigError};
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .window(Duration::from_secs(601));
    /// let refused = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap_err();
    /// assert_eq!(refused, ConfigError::DiscoveryWindow);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets the announce interval (more than zero, less than the window).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lanlink::{agent::{Agent, AgentConfig}, ConfigError};
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .window(Duration::from_secs(60))
    ///     .announce_interval(Duration::from_secs(60));
    /// let refused = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap_err();
    /// assert_eq!(refused, ConfigError::AnnounceInterval);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn announce_interval(mut self, interval: Duration) -> Self {
        self.announce_interval = interval;
        self
    }

    /// Sets which callers are local.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, SecretRequest};
    /// # use lanlink::{ForwardedHeaders, LocalPolicy, SecretRefusal};
    /// # let now = Instant::now();
    /// let lab = LocalPolicy::new(vec!["192.168.50.0/24".parse()?]);
    /// let config = AgentConfig::new("192.168.50.2".parse()?, 8080, Default::default()).local_policy(lab);
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// let id = agent.instance_id().to_string();
    /// let request = SecretRequest { peer: "192.168.1.20".parse()?, forwarded: ForwardedHeaders::NONE,
    ///     host: Some("192.168.50.2"), origin: None, instance_id: &id };
    /// assert_eq!(agent.handle_secret_request(now, &request).unwrap_err(), SecretRefusal::NotLocal);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_policy(mut self, policy: LocalPolicy) -> Self {
        self.local_policy = policy;
        self
    }

    /// Trusts forwarding headers from these proxy networks (for an agent behind a local reverse
    /// proxy). Default: none.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, SecretRequest};
    /// # use lanlink::{ForwardedHeaders, SecretRefusal};
    /// # let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .trusted_proxies(vec!["127.0.0.1/32".parse()?]);
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// let id = agent.instance_id().to_string();
    /// // The local proxy says the caller is a public host: refused.
    /// let request = SecretRequest { peer: "127.0.0.1".parse()?,
    ///     forwarded: ForwardedHeaders { forwarded: &[], x_forwarded_for: &["203.0.113.9"] },
    ///     host: Some("192.168.1.50"), origin: None, instance_id: &id };
    /// assert_eq!(agent.handle_secret_request(now, &request).unwrap_err(), SecretRefusal::NotLocal);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trusted_proxies(mut self, proxies: Vec<IpNet>) -> Self {
        self.resolver = ClientAddrResolver::new(proxies);
        self
    }

    /// Accepts `Host: name` (besides IP literals), e.g. `"printer.local"`. Case-insensitive.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, SecretRequest};
    /// # use lanlink::{ForwardedHeaders, SecretRefusal};
    /// # let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .allow_host("printer.local");
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// let id = agent.instance_id().to_string();
    /// let mut request = SecretRequest { peer: "192.168.1.20".parse()?, forwarded: ForwardedHeaders::NONE,
    ///     host: Some("evil.example"), origin: None, instance_id: &id };
    /// assert_eq!(agent.handle_secret_request(now, &request).unwrap_err(), SecretRefusal::BadHost);
    /// request.host = Some("Printer.Local:8080");
    /// assert!(agent.handle_secret_request(now, &request).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allow_host(mut self, name: &str) -> Self {
        self.allowed_hosts
            .push(name.trim_end_matches('.').to_ascii_lowercase());
        self
    }

    /// Accepts requests carrying `Origin: origin`, e.g. `"https://cloud.example"`.
    ///
    /// ```
    /// use lanlink::agent::AgentConfig;
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .allow_origin("https://cloud.example");
    /// assert_eq!(config.allowed_origins(), ["https://cloud.example"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allow_origin(mut self, origin: &str) -> Self {
        self.allowed_origins.push(origin.to_ascii_lowercase());
        self
    }

    /// The window.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::agent::AgentConfig;
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .window(Duration::from_secs(120));
    /// assert_eq!(config.window_length(), Duration::from_secs(120));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn window_length(&self) -> Duration {
        self.window
    }

    /// The announce interval.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::agent::AgentConfig;
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .announce_interval(Duration::from_secs(5));
    /// assert_eq!(config.interval(), Duration::from_secs(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn interval(&self) -> Duration {
        self.announce_interval
    }

    /// The agent's LAN address.
    ///
    /// ```
    /// use lanlink::agent::AgentConfig;
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// assert_eq!(config.private_ip().to_string(), "192.168.1.50");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn private_ip(&self) -> IpAddr {
        self.private_ip
    }

    /// The local endpoint's port.
    ///
    /// ```
    /// use lanlink::agent::AgentConfig;
    /// assert_eq!(AgentConfig::new("10.0.0.9".parse()?, 5000, Default::default()).port(), 5000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The allowed origins.
    ///
    /// ```
    /// use lanlink::agent::AgentConfig;
    /// let config = AgentConfig::new("10.0.0.9".parse()?, 5000, Default::default())
    ///     .allow_origin("https://a.example")
    ///     .allow_origin("https://b.example");
    /// assert_eq!(config.allowed_origins().len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allowed_origins(&self) -> &[String] {
        &self.allowed_origins
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.window.is_zero() || self.window > MAX_DISCOVERY_WINDOW {
            return Err(ConfigError::DiscoveryWindow);
        }
        if self.announce_interval.is_zero() || self.announce_interval >= self.window {
            return Err(ConfigError::AnnounceInterval);
        }
        if self.redeem_timeout.is_zero() || self.redeem_timeout > MAX_DISCOVERY_WINDOW {
            return Err(ConfigError::RedeemTimeout);
        }
        if self.confirm_timeout.is_zero() || self.confirm_timeout > MAX_DISCOVERY_WINDOW {
            return Err(ConfigError::ConfirmTimeout);
        }
        if self.hold > MAX_HOLD {
            return Err(ConfigError::Hold);
        }
        if !is_announceable_private_ip(self.private_ip)
            || self
                .advertise
                .iter()
                .chain(&self.candidates)
                .any(|endpoint| !is_announceable_private_ip(endpoint.ip()))
        {
            return Err(ConfigError::AgentAddress);
        }
        if self.allowed_hosts.iter().any(|h| !valid_host_name(h)) {
            return Err(ConfigError::HostOrOrigin);
        }
        if self.allowed_origins.iter().any(|o| !valid_origin(o)) {
            return Err(ConfigError::HostOrOrigin);
        }
        // Re-check the info against the wire limits (its constructor already did).
        DeviceInfo::new(
            self.info.hostname(),
            self.info.model(),
            self.info.agent(),
            self.info.agent_version(),
        )?;
        Ok(())
    }
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && name.parse::<Ipv4Addr>().is_err()
}

fn valid_origin(origin: &str) -> bool {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!(rest, Some(host) if !host.is_empty() && !host.contains('/') && host.bytes().all(|b| b.is_ascii_graphic()))
}
