// (1085 lines, 562 of them docs and doc examples: one concern, because it is the agent's state machine; its configuration, local endpoint and redemption are in agent/.)
//! The agent: runs on the device, makes the instance id and the secret, announces, hands the secret
//! only to local callers during the window, verifies what the server forwards, redeems its code.
//! It must not do I/O, read a clock, sleep or draw from a global RNG (time and randomness are
//! arguments), and must not hand its secret to anyone but a local caller inside its window.
//!
//! A sans-IO state machine: the embedder feeds it inputs (`handle_*`, each with `now` from a
//! monotonic clock) and drains its outputs (`poll_transmit`, `poll_event`, `poll_timeout`) after
//! every input.
//!
//! # Driving it
//!
//! The agent does no I/O and reads no clock; a driver (the crate's
//! `driver::run_agent` (feature `tokio`), or a loop of your own on any stack) owns the sockets
//! and the timer. After **every** `handle_*` call and after every wake-up, in this order:
//!
//! 1. [`poll_transmit`](Agent::poll_transmit) until `None`: send each
//!    [`AgentTransmit`] to the server, and feed its answer back —
//!    [`handle_announce_reply`](Agent::handle_announce_reply) for an announcement's reply, or
//!    [`handle_announce_failed`](Agent::handle_announce_failed) with the transport's error
//!    (a refusal, no answer, an unreadable one). An announcement may ask the server to hold it
//!    open (revision 1.6, [`AgentConfig::hold`]): give it a timeout longer than its `hold_ms`,
//!    and drop it once [`wants_announce_reply`](Agent::wants_announce_reply) says its answer no
//!    longer matters;
//!    [`handle_redeem_reply`](Agent::handle_redeem_reply) for a redemption's answer (a token or a
//!    refusal, [`transport::reply_from`](crate::transport::reply_from) maps status and body), or
//!    [`handle_redeem_failed`](Agent::handle_redeem_failed) when no answer came (connection
//!    lost, timeout, unreadable body).
//! 2. [`poll_event`](Agent::poll_event) until `None`: log or show each event.
//! 3. [`poll_timeout`](Agent::poll_timeout): sleep until that instant (or until a local request
//!    or an answer arrives), then call [`handle_timeout`](Agent::handle_timeout) and start again
//!    at 1. While discovering or redeeming it always names a deadline; `None` means the agent is
//!    linked or stopped and nothing will ever be due.
//!
//! Requests to the local endpoint go to [`endpoint::handle`](crate::endpoint::handle) (or
//! [`handle_secret_request`](Agent::handle_secret_request)) at any time; drain the events after.
//!
//! Under a [confirmation policy](AgentConfig::confirmation) (revision 1.4) the device's own UI
//! answers [`AgentEvent::ConfirmationRequested`] with [`Agent::confirm`] at any time before its
//! deadline; drain the transmits after (the approved redemption is due at once). The crate's
//! driver looks again every `driver::CONFIRM_POLL` (100 ms) while it waits.
//!
//! The agent owns its retransmissions: a redemption is handed out again by `poll_transmit` when
//! its timer runs out or after a retryable refusal (0.5 s doubling to 8 s), always the same
//! request with the agent's presence key, so that a retry after a lost reply still links (see
//! `PROTOCOL.md`); it stops at its [redeem deadline](AgentConfig::redeem_timeout). A driver sends
//! each transmit once and never retries on its own. Several attempts may be in flight over a
//! transport without replies of its own (MQTT): any answer to any of them counts.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
//! use lanlink::DeviceInfo;
//!
//! let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default());
//! let now = Instant::now();
//! let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
//! // The first announcement is due at once.
//! let Some(AgentTransmit::Announce(announce)) = agent.poll_transmit(now) else { panic!() };
//! assert_eq!(announce.instance_id, agent.instance_id());
//! // Nothing more until the announce interval has passed.
//! assert!(agent.poll_transmit(now).is_none());
//! assert_eq!(agent.poll_timeout(), Some(now + Duration::from_secs(2)));
//! ```

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{CryptoRng, RngCore};

use crate::addr::ForwardedHeaders;
use crate::code::LinkCode;
#[cfg(doc)]
use crate::confirm::Confirmation;
use crate::confirm::{short_code, ConfirmNonce, Decision, DisplayName, ShortCode};
use crate::error::{AgentError, ConfigError, SecretRefusal, VerifyFailure, WireCode};
use crate::event::{AgentEvent, StopReason};
use crate::id::InstanceId;
use crate::secret::{AuthToken, LocalSecret, PresenceKey};
use crate::transport::TransportError;
use crate::wire::{
    AgentMessage, Announce, AnnounceReply, RedeemReply, RedeemRequest, Revision, SecretReply,
    Visibility, MAX_HOLD_MS,
};

mod config;
mod local;
mod redeem;

pub use self::config::{
    describe_visibility, order_endpoints, AgentConfig, CONTAINER_NETWORKS,
    DEFAULT_ANNOUNCE_INTERVAL, DEFAULT_CONFIRM_TIMEOUT, DEFAULT_HOLD, DEFAULT_REDEEM_TIMEOUT,
    HOLD_FAILURES_BEFORE_FALLBACK, MAX_DISCOVERY_WINDOW, MAX_HOLD, MAX_POLL_AFTER,
    REDEEM_RETRY_BASE, REDEEM_RETRY_CAP,
};

/// A request for the secret at the agent's local endpoint, as the transport saw it.
///
/// ```
/// # use std::time::Instant;
/// # use lanlink::agent::{Agent, AgentConfig, SecretRequest};
/// # use lanlink::{ForwardedHeaders, SecretRefusal};
/// # let now = Instant::now();
/// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
/// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
/// let request = SecretRequest { peer: "192.168.1.20".parse()?, forwarded: ForwardedHeaders::NONE,
///     host: Some("192.168.1.50"), origin: None, instance_id: "00000000-0000-4000-8000-000000000000" };
/// assert_eq!(agent.handle_secret_request(now, &request).unwrap_err(), SecretRefusal::WrongInstance);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SecretRequest<'a> {
    /// The socket peer.
    pub peer: IpAddr,
    /// Forwarding headers (read only if `peer` is a trusted proxy).
    pub forwarded: ForwardedHeaders<'a>,
    /// The `Host` header, if any.
    pub host: Option<&'a str>,
    /// The `Origin` header, if any.
    pub origin: Option<&'a str>,
    /// The `instance_id` the caller asked for.
    pub instance_id: &'a str,
}

/// What the agent wants sent to the server.
///
/// ```
/// # use std::time::Instant;
/// # use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
/// # let now = Instant::now();
/// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
/// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
/// match agent.poll_transmit(now) {
///     Some(AgentTransmit::Announce(announce)) => assert_eq!(announce.instance_id, agent.instance_id()),
///     other => panic!("expected an announcement, got {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AgentTransmit {
    /// Announce presence; feed the reply to [`Agent::handle_announce_reply`].
    Announce(Announce),
    /// Redeem a code; feed the reply to [`Agent::handle_redeem_reply`].
    Redeem(RedeemRequest),
}

/// The agent's state, as the embedder may show it (no secrets).
///
/// ```
/// # use std::time::{Duration, Instant};
/// # use lanlink::agent::{Agent, AgentConfig, AgentStatus};
/// # use lanlink::event::StopReason;
/// # let now = Instant::now();
/// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
/// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
/// assert!(matches!(agent.status(), AgentStatus::Discovering { deadline } if deadline > now));
/// agent.cancel();
/// assert_eq!(agent.status(), AgentStatus::Stopped(StopReason::Cancelled));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentStatus {
    /// Discovery is on until `deadline`.
    Discovering {
        /// When the window closes.
        deadline: Instant,
    },
    /// A verified link waits for the owner's decision ([`Agent::confirm`]) until `deadline`.
    Confirming {
        /// When the request lapses.
        deadline: Instant,
    },
    /// A code is being redeemed.
    Redeeming,
    /// Linked; the token is available from [`Agent::auth_token`].
    Linked,
    /// Discovery ended without a link.
    Stopped(StopReason),
}

enum State {
    Discovering {
        secret: LocalSecret,
        deadline: Instant,
        next_announce: Instant,
    },
    Confirming(Box<Confirming>),
    Redeeming(Box<Redeeming>),
    Linked {
        token: AuthToken,
    },
    Stopped {
        reason: StopReason,
    },
}

/// A verified link waiting for the owner (the secret is already dropped: it is single-use).
struct Confirming {
    code: LinkCode,
    pending: PendingConfirmation,
}

/// A link waiting for the owner's decision, as the device shows it
/// ([`Agent::pending_confirmation`]).
///
/// ```
/// # use std::time::Instant;
/// # use lanlink::agent::{Agent, AgentConfig};
/// # let now = Instant::now();
/// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
/// let agent = Agent::new(config, now, &mut lanlink::os_rng())?;
/// // Nothing waits for the owner until a verified link arrives (see `AgentConfig::confirmation`).
/// assert!(agent.pending_confirmation().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingConfirmation {
    /// The linking account, as the server named it.
    pub display_name: DisplayName,
    /// The code to compare with the page's (under [`Confirmation::Compare`] only).
    pub short_code: Option<ShortCode>,
    /// When the request lapses and discovery ends.
    pub deadline: Instant,
}

/// A redemption in flight: the agent owns its retransmissions.
struct Redeeming {
    /// What is sent, the same each attempt (the presence key lets a retry after a lost reply
    /// complete the link again).
    request: RedeemRequest,
    /// Attempts handed out so far.
    attempts: u32,
    /// When the next attempt is due (the retransmission timer, while one is in flight).
    next_send: Instant,
    /// When the agent stops retrying.
    give_up: Instant,
}

/// The agent's state machine. See the [module docs](self).
///
/// ```
/// use std::time::Instant;
/// use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
/// use lanlink::wire::AnnounceReply;
/// let now = Instant::now();
/// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
/// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
/// // Sans-IO: the embedder sends what `poll_transmit` gives and feeds the replies back.
/// let Some(AgentTransmit::Announce(_announce)) = agent.poll_transmit(now) else { panic!() };
/// agent.handle_announce_reply(now, AnnounceReply::new(Vec::new(), 2000));
/// assert!(agent.is_discovering());
/// assert!(agent.poll_timeout().is_some_and(|at| at > now));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Agent {
    config: AgentConfig,
    /// The announced endpoints, ordered once at start: `private_ip:port`, then the candidates.
    endpoints: Vec<SocketAddr>,
    instance_id: InstanceId,
    presence_key: PresenceKey,
    state: State,
    events: VecDeque<AgentEvent>,
    /// How the server last said it shows this agent (none yet in this window).
    visibility: Option<Visibility>,
    /// The wire revision the server stated in its last announce reply (`None`: none stated, a
    /// server of 1.4 or earlier, or one that refused a request as malformed since).
    server_revision: Option<Revision>,
    /// A server that states no revision refused an announcement carrying candidates as
    /// malformed (a server before 1.3): announce without them from now on.
    candidates_refused: bool,
    /// The same for a redemption carrying its presence key and attempt (a server before 1.1):
    /// redeem as 1.0 did from now on.
    proof_refused: bool,
    /// Whether the last announcement handed out asked for a hold (revision 1.6).
    hold_in_flight: bool,
    /// Held announcements that failed in a row (no answer, or no server's answer), this window.
    hold_failures: u32,
    /// Held announcements failed [`HOLD_FAILURES_BEFORE_FALLBACK`] times in a row: no hold is
    /// asked for again this window.
    hold_fallen_back: bool,
    /// When the last announcement was handed out (the server's `poll_after_ms` counts from it).
    announced_at: Option<Instant>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("instance_id", &self.instance_id)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Checks `config` and starts discovery at `now`: a fresh instance id and secret from `rng`.
    ///
    /// ```
    /// use std::time::Instant;
    /// use lanlink::agent::{Agent, AgentConfig};
    /// use lanlink::ConfigError;
    /// let now = Instant::now();
    /// let mut rng = lanlink::os_rng();
    /// let a = Agent::new(AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default()), now, &mut rng)?;
    /// let b = Agent::new(AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default()), now, &mut rng)?;
    /// assert_ne!(a.instance_id(), b.instance_id(), "a fresh id each time");
    /// // A public address is refused.
    /// let public = AgentConfig::new("203.0.113.5".parse()?, 8080, Default::default());
    /// assert_eq!(Agent::new(public, now, &mut rng).unwrap_err(), ConfigError::AgentAddress);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new<R: CryptoRng + RngCore + ?Sized>(
        config: AgentConfig,
        now: Instant,
        rng: &mut R,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let endpoints = config.endpoints();
        // Cannot be empty: the configured address was checked above, so it is kept.
        if endpoints.is_empty() {
            return Err(ConfigError::AgentAddress);
        }
        let mut agent = Self {
            config,
            endpoints,
            instance_id: InstanceId::from_bytes([0; 16]),
            presence_key: PresenceKey::from_bytes([0; 32]),
            state: State::Stopped {
                reason: StopReason::Cancelled,
            },
            events: VecDeque::new(),
            visibility: None,
            server_revision: None,
            candidates_refused: false,
            proof_refused: false,
            hold_in_flight: false,
            hold_failures: 0,
            hold_fallen_back: false,
            announced_at: None,
        };
        agent.start(now, rng);
        Ok(agent)
    }

    fn start<R: CryptoRng + RngCore + ?Sized>(&mut self, now: Instant, rng: &mut R) {
        let presence_key = PresenceKey::generate(rng);
        self.instance_id = presence_key.instance_id();
        self.presence_key = presence_key;
        self.visibility = None;
        // Holds are judged per window: a new one asks again.
        self.hold_in_flight = false;
        self.hold_failures = 0;
        self.hold_fallen_back = false;
        self.announced_at = None;
        // An unrepresentable deadline (never in practice) closes the window at once: fail closed.
        let deadline = now.checked_add(self.config.window).unwrap_or(now);
        self.state = State::Discovering {
            secret: LocalSecret::generate(rng),
            deadline,
            next_announce: now,
        };
        self.events.push_back(AgentEvent::DiscoveryStarted {
            instance_id: self.instance_id,
            deadline,
        });
    }

    // ---- getters ----

    /// How the server last said it shows this agent to linkers of its network (revision 1.2):
    /// `None` before the first announce reply of this window.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # use lanlink::wire::{AnnounceReply, HiddenReason, Visibility};
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// assert_eq!(agent.visibility(), None);
    /// let hidden = Visibility::Hidden(HiddenReason::TooManyAgents);
    /// agent.handle_announce_reply(now, AnnounceReply::new(Vec::new(), 2000).with_visibility(hidden));
    /// assert_eq!(agent.visibility(), Some(hidden));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn visibility(&self) -> Option<Visibility> {
        self.visibility
    }

    /// The endpoints the agent announces, in order: `private_ip:port`, then the candidates
    /// (revision 1.3; see [`AgentConfig::endpoints`]).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .candidates(vec!["10.0.0.5:8080".parse()?]);
    /// let agent = Agent::new(config.clone(), now, &mut lanlink::os_rng())?;
    /// assert_eq!(agent.endpoints(), config.endpoints().as_slice());
    /// assert_eq!(agent.endpoints().len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// This window's instance id.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # use lanlink::event::AgentEvent;
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// let id = agent.instance_id();
    /// assert!(matches!(agent.poll_event(), Some(AgentEvent::DiscoveryStarted { instance_id, .. }) if instance_id == id));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn instance_id(&self) -> InstanceId {
        self.instance_id
    }

    /// The state, without secrets.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use lanlink::agent::{Agent, AgentConfig, AgentStatus};
    /// # use lanlink::event::StopReason;
    /// # let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .window(Duration::from_secs(60));
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// assert_eq!(agent.status(), AgentStatus::Discovering { deadline: now + Duration::from_secs(60) });
    /// agent.handle_timeout(now + Duration::from_secs(60));
    /// assert_eq!(agent.status(), AgentStatus::Stopped(StopReason::WindowExpired));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> AgentStatus {
        match &self.state {
            State::Discovering { deadline, .. } => AgentStatus::Discovering {
                deadline: *deadline,
            },
            State::Confirming(confirming) => AgentStatus::Confirming {
                deadline: confirming.pending.deadline,
            },
            State::Redeeming(_) => AgentStatus::Redeeming,
            State::Linked { .. } => AgentStatus::Linked,
            State::Stopped { reason } => AgentStatus::Stopped(reason.clone()),
        }
    }

    /// Whether discovery is on (the window may still have run out; see [`Agent::handle_timeout`]).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// assert!(agent.is_discovering());
    /// agent.cancel();
    /// assert!(!agent.is_discovering());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_discovering(&self) -> bool {
        matches!(self.state, State::Discovering { .. })
    }

    /// The link waiting for the owner's decision, if any.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, SecretRequest};
    /// # use lanlink::confirm::Confirmation;
    /// # use lanlink::wire::{AgentMessage, AnnounceReply};
    /// # use lanlink::LinkCode;
    /// # let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .confirmation(Confirmation::Approve);
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// # let id = agent.instance_id().to_string();
    /// # let request = SecretRequest { peer: "192.168.1.20".parse()?,
    /// #     forwarded: lanlink::ForwardedHeaders::NONE, host: Some("192.168.1.50"), origin: None,
    /// #     instance_id: &id };
    /// # let secret = agent.handle_secret_request(now, &request).unwrap().local_secret;
    /// let message = AgentMessage::VerifyAndRedeem { instance_id: agent.instance_id(), local_secret: secret,
    ///     code: LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap(),
    ///     display_name: Some("alice@example.com".into()), nonce: None };
    /// agent.handle_announce_reply(now, AnnounceReply::new(vec![message], 2000));
    /// let pending = agent.pending_confirmation().unwrap();
    /// assert_eq!(pending.display_name.as_str(), "alice@example.com");
    /// assert!(pending.short_code.is_none(), "Approve shows no short code");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pending_confirmation(&self) -> Option<&PendingConfirmation> {
        match &self.state {
            State::Confirming(confirming) => Some(&confirming.pending),
            _ => None,
        }
    }

    /// The auth token, once linked.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
    /// # use lanlink::wire::RedeemReply;
    /// # use lanlink::{AuthToken, LinkCode};
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// assert!(agent.auth_token().is_none());
    /// agent.enter_code(now, LinkCode::parse("482913").unwrap())?;
    /// let Some(AgentTransmit::Redeem(request)) = agent.poll_transmit(now) else { panic!() };
    /// let token = AuthToken::generate(&mut lanlink::os_rng());
    /// agent.handle_redeem_reply(now, Ok(RedeemReply::new(token.clone(), request.attempt)))?;
    /// assert!(agent.auth_token().is_some_and(|t| t.ct_eq(&token)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn auth_token(&self) -> Option<&AuthToken> {
        match &self.state {
            State::Linked { token } => Some(token),
            _ => None,
        }
    }

    /// The configuration.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// assert_eq!(agent.config().port(), 8080);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    // ---- inputs ----

    /// Advances time: closes the window when it has run out, ends a confirmation no one
    /// answered by its deadline ([`AgentConfig::confirm_timeout`]), and stops a redemption that
    /// had no answer by its deadline ([`AgentConfig::redeem_timeout`]). A spurious call is a
    /// no-op.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # use lanlink::event::{AgentEvent, StopReason};
    /// # let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .window(Duration::from_secs(30));
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// agent.handle_timeout(now + Duration::from_secs(29)); // early: nothing happens
    /// assert!(agent.is_discovering());
    /// agent.handle_timeout(now + Duration::from_secs(30));
    /// assert!(std::iter::from_fn(|| agent.poll_event())
    ///     .any(|e| e == AgentEvent::Stopped { reason: StopReason::WindowExpired }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::Discovering { deadline, .. } if now >= *deadline => {
                self.stop(StopReason::WindowExpired);
            }
            State::Confirming(confirming) if now >= confirming.pending.deadline => {
                self.stop(StopReason::ConfirmationExpired);
            }
            State::Redeeming(redeeming) if now >= redeeming.give_up => {
                self.stop(StopReason::ServerUnreachable);
            }
            _ => {}
        }
    }

    /// The server's reply to an announcement: queued messages to verify (protocol step 7), and
    /// when to announce next: one announce interval, or the server's `poll_after_ms` if longer
    /// (at most [`MAX_POLL_AFTER`]), after the announcement was *sent* — so a held announcement
    /// (revision 1.6, [`AgentConfig::hold`]) answered after that time is followed by the next
    /// one at once. A reply to a held announcement clears its run of failures
    /// ([`handle_announce_failed`](Self::handle_announce_failed)).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
    /// use lanlink::wire::AnnounceReply;
    /// let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// let _first = agent.poll_transmit(now).unwrap();
    /// agent.handle_announce_reply(now, AnnounceReply::new(Vec::new(), 2000));
    /// assert_eq!(agent.poll_timeout(), Some(now + Duration::from_secs(2)));
    /// let sent = now + Duration::from_secs(2);
    /// let Some(AgentTransmit::Announce(held)) = agent.poll_transmit(sent) else { panic!() };
    /// assert!(held.hold_ms.is_some());
    /// // The server held it 20 s: the next announcement is due at once.
    /// let answered = sent + Duration::from_secs(20);
    /// agent.handle_announce_reply(answered, AnnounceReply::new(Vec::new(), 2000));
    /// assert!(agent.poll_transmit(answered).is_some());
    /// ```
    pub fn handle_announce_reply(&mut self, now: Instant, reply: AnnounceReply) {
        if std::mem::take(&mut self.hold_in_flight) {
            self.hold_failures = 0;
        }
        self.server_revision = reply.revision.filter(Revision::is_compatible);
        if self.is_discovering() && self.visibility != Some(reply.visibility) {
            self.visibility = Some(reply.visibility);
            self.events.push_back(AgentEvent::Visibility {
                visibility: reply.visibility,
            });
        }
        if let State::Discovering { next_announce, .. } = &mut self.state {
            let interval = self.config.announce_interval;
            let wanted = Duration::from_millis(reply.poll_after_ms)
                .min(MAX_POLL_AFTER)
                .max(interval);
            // The announce just sent set next_announce = sent + interval; only ever slow down,
            // counting from when it was sent (a held one may come back long after).
            let sent = self.announced_at.unwrap_or(now).min(now);
            if let Some(later) = sent.checked_add(wanted) {
                if later > *next_announce {
                    *next_announce = later;
                }
            }
        }
        for message in reply.messages {
            match message {
                AgentMessage::VerifyAndRedeem {
                    instance_id,
                    local_secret,
                    code,
                    display_name,
                    nonce,
                } => self.verify(
                    now,
                    instance_id,
                    &local_secret,
                    code,
                    display_name.as_deref(),
                    nonce,
                ),
                AgentMessage::Unknown => {}
            }
        }
    }

    /// The server refused an announcement with `code`. A code that
    /// [ends discovery](crate::Class::ends_discovery) stops the agent (fail closed; so does a
    /// code this version does not know, [`WireCode::Unknown`]); any other is ignored and the
    /// agent announces again on time.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, AgentStatus};
    /// # use lanlink::event::StopReason;
    /// # use lanlink::WireCode;
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// agent.handle_announce_refused(now, WireCode::LockedOut); // not fatal: announce again later
    /// assert!(agent.is_discovering());
    /// agent.handle_announce_refused(now, WireCode::ForgedInstance); // fail closed
    /// assert_eq!(agent.status(), AgentStatus::Stopped(StopReason::AnnounceRefused(WireCode::ForgedInstance)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_announce_refused(&mut self, now: Instant, code: WireCode) {
        self.handle_timeout(now);
        if code.class().ends_discovery && self.is_discovering() {
            self.stop(StopReason::AnnounceRefused(code));
        }
    }

    /// An announcement got no reply to read: `error` as the transport gave it. The one entry
    /// point a driver needs for a failed announcement (the crate's
    /// `driver::run_agent` (feature `tokio`) calls nothing else):
    ///
    /// - `400 malformed` ([`TransportError::is_malformed_request`]) goes to
    ///   [`handle_request_malformed`](Self::handle_request_malformed) (an older server);
    /// - a refusal with the server's code goes to
    ///   [`handle_announce_refused`](Self::handle_announce_refused);
    /// - anything else means the server's answer never came: the server was unreachable or the
    ///   request timed out or was cut ([`TransportError::Unreachable`]), something between
    ///   answered instead of it (a refusal without a code, [`WireCode::NoCode`]: a proxy's
    ///   `502` or `504` page), or the reply could not be read ([`TransportError::Malformed`]).
    ///   The agent announces again on time. If the announcement asked for a hold (revision
    ///   1.6), it counts as a failed hold: after [`HOLD_FAILURES_BEFORE_FALLBACK`] in a row
    ///   (with no reply to a held announcement between them) the agent asks for no hold for
    ///   the rest of its window and emits [`AgentEvent::HoldFallback`] — a proxy that cuts idle
    ///   requests then costs two announcements, not every one.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
    /// use lanlink::event::AgentEvent;
    /// use lanlink::transport::TransportError;
    /// use lanlink::wire::AnnounceReply;
    /// use lanlink::WireCode;
    /// let mut now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// let _first = agent.poll_transmit(now).unwrap();
    /// agent.handle_announce_reply(now, AnnounceReply::new(Vec::new(), 2000)); // a 1.6 server
    /// // A proxy cuts every held announcement after 10 s with its own 504 page.
    /// let cut = TransportError::Refused { status: 504, code: WireCode::NoCode };
    /// for _ in 0..2 {
    ///     now += Duration::from_secs(2);
    ///     let Some(AgentTransmit::Announce(held)) = agent.poll_transmit(now) else { panic!() };
    ///     assert!(held.hold_ms.is_some());
    ///     now += Duration::from_secs(10);
    ///     agent.handle_announce_failed(now, &cut);
    /// }
    /// assert!(std::iter::from_fn(|| agent.poll_event())
    ///     .any(|e| matches!(e, AgentEvent::HoldFallback { failures: 2 })));
    /// let Some(AgentTransmit::Announce(plain)) = agent.poll_transmit(now) else { panic!() };
    /// assert_eq!(plain.hold_ms, None);
    /// ```
    pub fn handle_announce_failed(&mut self, now: Instant, error: &TransportError) {
        let held = std::mem::take(&mut self.hold_in_flight);
        if error.is_malformed_request() {
            self.handle_request_malformed(now);
            return;
        }
        if let Some(code) = error.refused_code() {
            self.handle_announce_refused(now, code);
            return;
        }
        self.handle_timeout(now);
        if held && self.is_discovering() && !self.hold_fallen_back {
            self.hold_failures = self.hold_failures.saturating_add(1);
            if self.hold_failures >= HOLD_FAILURES_BEFORE_FALLBACK {
                self.hold_fallen_back = true;
                self.events.push_back(AgentEvent::HoldFallback {
                    failures: self.hold_failures,
                });
            }
        }
    }

    /// Whether the reply to an announcement of `instance_id` still matters at `now`: the agent
    /// still discovers as that instance, inside its window. A driver waiting on a held
    /// announcement (revision 1.6) looks now and then, and drops the request once it no longer
    /// does — a code typed at the device ([`enter_code`](Self::enter_code)), a cancel, a
    /// restart or the window's end then takes effect at once instead of after the hold. A
    /// dropped announcement needs no call: the agent announces again when due.
    ///
    /// ```
    /// use std::time::Instant;
    /// use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
    /// use lanlink::LinkCode;
    /// let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// let Some(AgentTransmit::Announce(sent)) = agent.poll_transmit(now) else { panic!() };
    /// assert!(agent.wants_announce_reply(now, sent.instance_id));
    /// agent.enter_code(now, LinkCode::parse("482913").unwrap()).unwrap();
    /// assert!(!agent.wants_announce_reply(now, sent.instance_id));
    /// ```
    #[must_use]
    pub fn wants_announce_reply(&self, now: Instant, instance_id: InstanceId) -> bool {
        match &self.state {
            State::Discovering { deadline, .. } => {
                now < *deadline && instance_id == self.instance_id
            }
            _ => false,
        }
    }

    /// Starts a new discovery window with a fresh id and secret, after the last one stopped.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let mut rng = lanlink::os_rng();
    /// let mut agent = Agent::new(config, now, &mut rng)?;
    /// let first = agent.instance_id();
    /// agent.cancel();
    /// agent.restart_discovery(now, &mut rng)?;
    /// assert!(agent.is_discovering());
    /// assert_ne!(agent.instance_id(), first, "a new window has a new id");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn restart_discovery<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        now: Instant,
        rng: &mut R,
    ) -> Result<(), AgentError> {
        match self.state {
            State::Linked { .. } => Err(AgentError::AlreadyLinked),
            State::Redeeming { .. } => Err(AgentError::RedeemInProgress),
            State::Discovering { .. } | State::Confirming(_) | State::Stopped { .. } => {
                if self.is_discovering() || matches!(self.state, State::Confirming(_)) {
                    self.stop(StopReason::Cancelled);
                }
                self.start(now, rng);
                Ok(())
            }
        }
    }

    /// Turns discovery off now (zeroizing the secret), or drops a link waiting for confirmation.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// agent.cancel();
    /// assert!(agent.poll_transmit(now).is_none(), "no more announcements");
    /// assert_eq!(agent.poll_timeout(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&mut self) {
        if self.is_discovering() || matches!(self.state, State::Confirming(_)) {
            self.stop(StopReason::Cancelled);
        }
    }

    fn stop(&mut self, reason: StopReason) {
        self.state = State::Stopped {
            reason: reason.clone(),
        };
        self.events.push_back(AgentEvent::Stopped { reason });
    }

    // ---- outputs ----

    /// The next message for the server, if one is due at `now`.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # use lanlink::wire::AnnounceReply;
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// assert!(agent.poll_transmit(now).is_some()); // the first announcement is due at once
    /// agent.handle_announce_reply(now, AnnounceReply::new(Vec::new(), 2000));
    /// assert!(agent.poll_transmit(now).is_none(), "the next is due in 2 s");
    /// assert!(agent.poll_transmit(now + Duration::from_secs(2)).is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<AgentTransmit> {
        self.handle_timeout(now);
        if let State::Redeeming(redeeming) = &mut self.state {
            if now < redeeming.next_send {
                return None;
            }
            redeeming.attempts = redeeming.attempts.saturating_add(1);
            redeeming.request.attempt = redeeming.attempts;
            if self.proof_refused {
                // A 1.0 server: the request as 1.0 sent it (no proven retries there).
                redeeming.request.attempt = 0;
                redeeming.request.presence_key = None;
            }
            redeeming.request.revision = Revision::V1_5
                .known_to(self.server_revision)
                .then_some(Revision::CURRENT);
            // The retransmission timer: sent again if no answer comes by then.
            redeeming.next_send = retry_at(now, redeeming.attempts, &self.instance_id);
            return Some(AgentTransmit::Redeem(redeeming.request.clone()));
        }
        let State::Discovering {
            secret,
            next_announce,
            deadline,
        } = &mut self.state
        else {
            return None;
        };
        if now < *next_announce {
            return None;
        }
        *next_announce = now
            .checked_add(self.config.announce_interval)
            .unwrap_or(now);
        self.announced_at = Some(now);
        // A hold (revision 1.6) only to a server that stated 1.6 or later (older ones refuse
        // the field), never past the window's end, and not after held ones kept failing.
        let hold = if Revision::V1_6.known_to(self.server_revision) && !self.hold_fallen_back {
            self.config
                .hold
                .min(deadline.saturating_duration_since(now))
                .min(MAX_HOLD)
        } else {
            Duration::ZERO
        };
        let hold_ms = u32::try_from(hold.as_millis()).unwrap_or(MAX_HOLD_MS);
        self.hold_in_flight = hold_ms > 0;
        let first = self
            .endpoints
            .first()
            .copied()
            .unwrap_or(SocketAddr::new(self.config.private_ip, self.config.port));
        let mut announce = Announce::new(
            self.instance_id,
            first.ip(),
            first.port(),
            self.config.info.clone(),
            secret.commitment(&self.instance_id),
            self.presence_key.clone(),
        );
        if !self.candidates_refused {
            announce = announce.with_candidates(self.endpoints.iter().skip(1).copied().collect());
        }
        // Stated only to a server that stated 1.5 or later: older ones refuse the field.
        if Revision::V1_5.known_to(self.server_revision) {
            announce = announce.with_revision(Revision::CURRENT);
        }
        if hold_ms > 0 {
            announce = announce.with_hold(hold_ms);
        }
        Some(AgentTransmit::Announce(announce))
    }

    /// The wire revision the server stated in its last announce reply: `None` before any, for a
    /// server of revision 1.4 or earlier (which states none), and after a request was refused
    /// as malformed ([`handle_request_malformed`](Self::handle_request_malformed)).
    ///
    /// ```
    /// use std::time::Instant;
    /// use lanlink::agent::{Agent, AgentConfig};
    /// use lanlink::wire::{AnnounceReply, Revision};
    /// let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// assert_eq!(agent.server_revision(), None);
    /// let _announce = agent.poll_transmit(now).unwrap();
    /// agent.handle_announce_reply(now, AnnounceReply::new(Vec::new(), 2000));
    /// assert_eq!(agent.server_revision(), Some(Revision::CURRENT));
    /// ```
    pub fn server_revision(&self) -> Option<Revision> {
        self.server_revision
    }

    /// The server refused the agent's last request (an announcement or a redemption) as
    /// malformed (`400 malformed`). From this crate, that means the server is older than a field
    /// the request carried: the agent stops stating its revision until a reply states 1.5 or
    /// later again (a fleet of servers being upgraded answers from either revision). When no
    /// server stated a revision, it also drops what the request carried from a later revision
    /// than the server's, for the rest of the window: an announcement's candidates (a server
    /// before 1.3, [`AgentEvent::CandidatesRefused`]), a redemption's presence key and attempt (a
    /// server before 1.1, [`AgentEvent::RedeemProofRefused`]: a retry after a lost reply is then
    /// refused as a used code, as 1.0 did). The request is sent again at once (nothing was
    /// redeemed: a malformed request changes nothing at the server); the redemption's attempts
    /// still count toward its deadline.
    ///
    /// ```
    /// use std::time::Instant;
    /// use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
    /// use lanlink::event::AgentEvent;
    /// let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default())
    ///     .candidates(vec!["10.0.0.5:8080".parse().unwrap()]);
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
    /// let Some(AgentTransmit::Announce(first)) = agent.poll_transmit(now) else { panic!() };
    /// assert_eq!(first.candidates.len(), 1);
    /// agent.handle_request_malformed(now); // a 1.2 server
    /// let Some(AgentTransmit::Announce(again)) = agent.poll_transmit(now) else { panic!() };
    /// assert!(again.candidates.is_empty());
    /// assert!(std::iter::from_fn(|| agent.poll_event())
    ///     .any(|e| matches!(e, AgentEvent::CandidatesRefused)));
    /// ```
    pub fn handle_request_malformed(&mut self, now: Instant) {
        self.handle_timeout(now);
        let stated = self.server_revision.take();
        // The request stated the revision only to a server that had stated 1.5 or later.
        let mut dropped = Revision::V1_5.known_to(stated);
        match &mut self.state {
            State::Discovering { next_announce, .. } => {
                if stated.is_none() && !self.candidates_refused && self.endpoints.len() > 1 {
                    self.candidates_refused = true;
                    self.events.push_back(AgentEvent::CandidatesRefused);
                    dropped = true;
                }
                // Again at once only without what was refused: a server that refuses every
                // announcement gets one per interval, never a loop.
                if dropped {
                    *next_announce = now;
                }
            }
            State::Redeeming(redeeming) if redeeming.attempts > 0 => {
                if stated.is_none() && !self.proof_refused {
                    self.proof_refused = true;
                    self.events.push_back(AgentEvent::RedeemProofRefused);
                    dropped = true;
                }
                // Nothing was redeemed (a malformed request changes nothing): again at once
                // without what was refused, else on the retransmission timer.
                if dropped {
                    redeeming.next_send = now;
                }
            }
            _ => {}
        }
    }

    /// When the agent next needs [`Agent::handle_timeout`] or [`Agent::poll_transmit`]: always
    /// a deadline while discovering or redeeming (the next announcement, the window's end, the
    /// next attempt at the redemption or its deadline); `None` once linked or stopped, when
    /// nothing will ever be due.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # let now = Instant::now();
    /// let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default())
    ///     .window(Duration::from_secs(60));
    /// let agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// // While discovering there is always a deadline, never past the window's end.
    /// assert!(agent.poll_timeout().is_some_and(|at| at <= now + Duration::from_secs(60)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Discovering {
                deadline,
                next_announce,
                ..
            } => Some((*deadline).min(*next_announce)),
            State::Confirming(confirming) => Some(confirming.pending.deadline),
            State::Redeeming(redeeming) => Some(redeeming.next_send.min(redeeming.give_up)),
            _ => None,
        }
    }

    /// The next event.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig};
    /// # use lanlink::event::{AgentEvent, StopReason};
    /// # let now = Instant::now();
    /// # let config = AgentConfig::new("192.168.1.50".parse()?, 8080, Default::default());
    /// let mut agent = Agent::new(config, now, &mut lanlink::os_rng())?;
    /// agent.cancel();
    /// let events: Vec<AgentEvent> = std::iter::from_fn(|| agent.poll_event()).collect();
    /// assert!(matches!(events[0], AgentEvent::DiscoveryStarted { .. }));
    /// assert_eq!(events.last(), Some(&AgentEvent::Stopped { reason: StopReason::Cancelled }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }
}

/// When attempt `attempts + 1` at a redemption is due, from `now`: [`REDEEM_RETRY_BASE`]
/// doubled per attempt, capped at [`REDEEM_RETRY_CAP`], shortened by up to a quarter by the
/// instance id (so that agents interrupted together do not retry in step).
fn retry_at(now: Instant, attempts: u32, instance_id: &InstanceId) -> Instant {
    let doubling = 1u32 << attempts.saturating_sub(1).min(8);
    let delay = REDEEM_RETRY_BASE
        .saturating_mul(doubling)
        .min(REDEEM_RETRY_CAP);
    let spread = u32::from(instance_id.as_bytes()[15]);
    let delay = delay - delay / 4 * spread / 255;
    now.checked_add(delay).unwrap_or(now)
}

fn valid_port_suffix(after: &str) -> bool {
    match after.strip_prefix(':') {
        None => after.is_empty(),
        Some(port) => {
            !port.is_empty()
                && port.len() <= 5
                && port.parse::<u16>().is_ok()
                && port.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

#[cfg(test)]
mod tests;
