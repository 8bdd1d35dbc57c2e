// (866 lines: one concern, because it is the linker's one state machine (its transitions read together); its failures are in event/vocab.rs and its tests in linker/tests.rs.)
//! The linker: the user's browser or app. Discovers agents on its network through the server,
//! fetches the chosen agent's secret over the LAN, asks the server to link, and waits for the link.
//! It must not do I/O, read a clock, sleep or draw from a global RNG (time and randomness are
//! arguments), and must never contact an endpoint that fails the private-address check.
//!
//! A sans-IO state machine driven like the agent: inputs through `handle_*` with a monotonic
//! `now`, outputs from `poll_transmit`, `poll_event` and `poll_timeout`.
//!
//! An agent may announce several endpoints (revision 1.3: `private_ip:port`, then its
//! [`candidates`](crate::wire::DiscoveredAgent::candidates)). The linker asks them one at a time,
//! in that order, each for at most [`LinkerConfig::fetch_timeout`]; it skips, with
//! [`LinkerEvent::EndpointSkipped`], any that fails the check `private_ip` must pass (private,
//! loopback, link-local or ULA; port not 0), so it never contacts one; it moves on only when an
//! endpoint is [unreachable](FetchFailure::Unreachable) or silent
//! ([`LinkerEvent::EndpointUnreachable`]), never after a refusal; and it reports the endpoint
//! that answered ([`LinkerEvent::SecretFetched`]'s `from`).
//!
//! Once the server accepted the link, the linker asks its state until it is linked. Each
//! request asks the server to hold it while the link is on its way (revision 1.6,
//! [`LinkerConfig::status_hold`], carried by [`LinkerTransmit::LinkStatus`]): a server that
//! holds answers when the state moves, so the linker sees `linked` within one round trip of the
//! agent's redemption. The next request is due at once after an answer showing a new state, and
//! otherwise one [`status_interval`](LinkerConfig::status_interval) after the previous request
//! was *sent*: at once after a held answer, never sooner after one a server gave at once (a
//! server before 1.6 ignores the hold), so no server sees a request per answer.
//!
//! ```
//! use std::time::Instant;
//! use lanlink::linker::{Linker, LinkerConfig, LinkerTransmit};
//!
//! let now = Instant::now();
//! let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
//! assert!(matches!(linker.poll_transmit(now), Some(LinkerTransmit::Discover)));
//! // Nothing else until the discovery reply comes back.
//! assert!(linker.poll_transmit(now).is_none());
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{CryptoRng, RngCore};

use crate::addr::is_announceable_private_ip;
use crate::confirm::{short_code, ConfirmNonce, DisplayName, ShortCode};
use crate::error::{LinkerError, WireCode};
pub use crate::event::vocab::{FetchFailure, LinkerFailure};
use crate::event::LinkerEvent;
use crate::id::InstanceId;
use crate::secret::Commitment;
use crate::wire::{
    DiscoverReply, DiscoveredAgent, HiddenReason, LinkRequest, LinkState, LinkStatusReply,
    Revision, SecretReply, MAX_CANDIDATES,
};

/// The linker's configuration.
///
/// ```
/// use std::time::Duration;
/// use lanlink::linker::{LinkerConfig, DEFAULT_FETCH_TIMEOUT};
/// let config = LinkerConfig { auto_select: false, give_up_after: Duration::from_secs(60), ..Default::default() };
/// assert_eq!(config.fetch_timeout, DEFAULT_FETCH_TIMEOUT);
/// assert_eq!(LinkerConfig::default().status_interval, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone)]
pub struct LinkerConfig {
    /// How often to ask the server again when no agent is found (default 5 s).
    pub discover_interval: Duration,
    /// How often to poll the link's state (default 1 s).
    pub status_interval: Duration,
    /// Give up after this long in all (default 5 minutes).
    pub give_up_after: Duration,
    /// Pick the agent by itself when exactly one is discovered (default true).
    pub auto_select: bool,
    /// How long to wait for one endpoint of the agent before trying its next one (revision 1.3
    /// candidates; default [`DEFAULT_FETCH_TIMEOUT`]). Counted from the `now` of the
    /// [`LinkerTransmit::FetchSecret`] that asked it.
    pub fetch_timeout: Duration,
    /// How long a status request asks the server to hold it while the link is on its way
    /// (revision 1.6, `?hold_ms=`; default [`DEFAULT_STATUS_HOLD`]; zero asks for none, at most
    /// [`MAX_HOLD_MS`](crate::wire::MAX_HOLD_MS) is asked): the server answers when the link's
    /// state moves, so the linker sees `linked` within one round trip of the agent's
    /// redemption. A server that does not hold answers at once, and the linker then asks again
    /// [`status_interval`](Self::status_interval) after the previous request was sent.
    pub status_hold: Duration,
}

/// How long, by default, a linker's status request asks to be held (revision 1.6): 20 seconds,
/// the server's default most ([`ServerConfig::max_hold`](crate::server::ServerConfig::max_hold)).
///
/// ```
/// use lanlink::linker::{LinkerConfig, DEFAULT_STATUS_HOLD};
/// assert_eq!(LinkerConfig::default().status_hold, DEFAULT_STATUS_HOLD);
/// assert_eq!(DEFAULT_STATUS_HOLD.as_secs(), 20);
/// ```
pub const DEFAULT_STATUS_HOLD: Duration = Duration::from_secs(20);

/// How long, by default, the linker waits for one of an agent's endpoints: 3 seconds (a LAN
/// answers in milliseconds; an unreachable address often never answers at all).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(3);

impl Default for LinkerConfig {
    fn default() -> Self {
        Self {
            discover_interval: Duration::from_secs(5),
            status_interval: Duration::from_secs(1),
            give_up_after: Duration::from_secs(300),
            auto_select: true,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            status_hold: DEFAULT_STATUS_HOLD,
        }
    }
}

/// Which secret request a reply answers ([`LinkerTransmit::FetchSecret`] carries it,
/// [`Linker::handle_secret_reply`] takes it back): a late answer from an endpoint the linker has
/// moved on from is told apart from the answer to the request in flight.
///
/// ```
/// use std::time::{Duration, Instant};
/// use lanlink::linker::{FetchFailure, Linker, LinkerConfig, LinkerTransmit};
/// use lanlink::wire::{DiscoverReply, DiscoveredAgent};
/// use lanlink::{InstanceId, LinkerError};
/// let now = Instant::now();
/// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
/// let _ = linker.poll_transmit(now); // the discovery
/// let id = InstanceId::generate(&mut lanlink::os_rng());
/// let agent = DiscoveredAgent::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default()).with_candidates(vec!["192.168.1.51:8080".parse().unwrap()]);
/// linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into()))).unwrap();
/// let Some(LinkerTransmit::FetchSecret { fetch: first, .. }) = linker.poll_transmit(now) else { panic!() };
/// // The first endpoint's time runs out: the linker asks the second.
/// let later = now + LinkerConfig::default().fetch_timeout + Duration::from_millis(1);
/// let Some(LinkerTransmit::FetchSecret { fetch: second, .. }) = linker.poll_transmit(later) else { panic!() };
/// assert_ne!(first, second);
/// // The first endpoint's late answer is not the second's.
/// let late = linker.handle_secret_reply(later, first, Err(FetchFailure::Unreachable));
/// assert_eq!(late, Err(LinkerError::StaleReply));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchId(u64);

/// What the linker wants sent.
///
/// ```
/// # use std::time::Instant;
/// # use lanlink::linker::{Linker, LinkerConfig, LinkerTransmit};
/// # use lanlink::wire::{DiscoverReply, DiscoveredAgent};
/// # let now = Instant::now();
/// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
/// assert!(matches!(linker.poll_transmit(now), Some(LinkerTransmit::Discover)));
/// let id = lanlink::InstanceId::from_bytes([7; 16]);
/// let agent = DiscoveredAgent::new(id, "192.168.1.50".parse()?, 8080, Default::default());
/// linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into())))?;
/// let Some(LinkerTransmit::FetchSecret { agent, instance_id, .. }) = linker.poll_transmit(now) else { panic!() };
/// assert_eq!((agent, instance_id), ("192.168.1.50:8080".parse()?, id));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkerTransmit {
    /// Ask the server for agents; feed the reply to [`Linker::handle_discover_reply`].
    Discover,
    /// Ask the agent at `agent` for its secret; feed the reply to [`Linker::handle_secret_reply`]
    /// with this request's `fetch`. Give up on it (feed [`FetchFailure::Unreachable`], or let
    /// [`Linker::poll_timeout`] pass) after [`LinkerConfig::fetch_timeout`]: the linker then asks
    /// the agent's next endpoint, and a late answer to this request is refused as stale.
    FetchSecret {
        /// The agent's local endpoint.
        agent: SocketAddr,
        /// The instance to ask for.
        instance_id: InstanceId,
        /// Which request this is: the reply names it, so that it is credited to this request
        /// and endpoint only.
        fetch: FetchId,
    },
    /// Ask the server to link; feed the reply to [`Linker::handle_link_reply`]. Drop the request
    /// (zeroizing the secret) once sent.
    Link(LinkRequest),
    /// Ask the server for the link's state; feed the reply to [`Linker::handle_link_status`].
    LinkStatus {
        /// The instance.
        instance_id: InstanceId,
        /// How long the server may hold the request while the link is on its way (revision
        /// 1.6, `?hold_ms=`; [`LinkerConfig::status_hold`], never past the linker's deadline nor
        /// over [`MAX_HOLD_MS`](crate::wire::MAX_HOLD_MS)): send it with
        /// [`link_status_held`](crate::transport::LinkerServerTransport::link_status_held), and
        /// give the request this long beyond its usual timeout. Zero: ask for no hold.
        hold: Duration,
    },
}

#[derive(Debug)]
enum State {
    Discovering {
        next: Instant,
        in_flight: bool,
    },
    Choosing {
        agents: Vec<DiscoveredAgent>,
    },
    Fetching {
        agent: DiscoveredAgent,
        /// The endpoints to try, in order, each already checked.
        endpoints: Vec<SocketAddr>,
        /// The one being tried.
        index: usize,
        /// When the attempt at `endpoints[index]` is given up, while one is in flight.
        attempt: Option<Instant>,
        /// The request of the attempt in flight (meaningful while `attempt` is set).
        current: FetchId,
    },
    Linking {
        request: Option<LinkRequest>,
        /// A copy of the request in flight, kept until its answer, to send again without what an
        /// older server refused (see [`Linker::handle_link_malformed`]).
        sent: Option<LinkRequest>,
        instance_id: InstanceId,
        commitment: Commitment,
    },
    Waiting {
        instance_id: InstanceId,
        /// When the next status request may be sent: one status interval after the last was
        /// sent, or at once after an answer that showed a new state.
        next: Instant,
        in_flight: bool,
        /// The link's state as last seen.
        seen: LinkState,
    },
    Linked {
        instance_id: InstanceId,
    },
    Failed(LinkerFailure),
}

/// The linker's state machine. See the [module docs](self).
///
/// ```
/// use std::time::Instant;
/// use lanlink::linker::{Linker, LinkerConfig, LinkerTransmit};
/// use lanlink::wire::{DiscoverReply, DiscoveredAgent, LinkState, LinkStatusReply, SecretReply};
/// use lanlink::{InstanceId, LocalSecret};
/// let now = Instant::now();
/// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
/// let _discover = linker.poll_transmit(now);
/// let id = InstanceId::from_bytes([7; 16]);
/// let agent = DiscoveredAgent::new(id, "192.168.1.50".parse()?, 8080, Default::default());
/// linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into())))?;
/// let Some(LinkerTransmit::FetchSecret { fetch, .. }) = linker.poll_transmit(now) else { panic!() };
/// linker.handle_secret_reply(now, fetch, Ok(SecretReply::new(LocalSecret::from_bytes([1; 32]))))?;
/// let Some(LinkerTransmit::Link(_request)) = linker.poll_transmit(now) else { panic!() };
/// linker.handle_link_reply(now, Ok(LinkStatusReply::new(id, LinkState::Pending)))?;
/// let Some(LinkerTransmit::LinkStatus { .. }) = linker.poll_transmit(now) else { panic!() };
/// linker.handle_link_status(now, Ok(LinkStatusReply::new(id, LinkState::Linked)))?;
/// assert_eq!(linker.linked(), Some(id));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Linker {
    config: LinkerConfig,
    deadline: Instant,
    state: State,
    events: VecDeque<LinkerEvent>,
    nonce: Option<ConfirmNonce>,
    short_code: Option<ShortCode>,
    /// The id the next secret request gets.
    next_fetch: u64,
    /// The wire revision the server stated in its last discovery reply (`None`: a server of
    /// 1.4 or earlier, or one that refused a request as malformed since).
    server_revision: Option<Revision>,
}

impl Linker {
    /// Starts a linking attempt at `now`: the first transmit is a discovery. The link request
    /// carries a fresh [`ConfirmNonce`] from `rng` (revision 1.4), from which the linker derives
    /// the link's [short code](Linker::short_code), so that an agent with the `Compare` policy
    /// can show the same code.
    ///
    /// ```
    /// use std::time::Instant;
    /// use lanlink::linker::{Linker, LinkerConfig};
    /// let linker = Linker::new(LinkerConfig::default(), Instant::now(), &mut lanlink::os_rng());
    /// assert!(linker.nonce().is_some());
    /// assert!(linker.short_code().is_none()); // until the server accepts the link
    /// ```
    pub fn new<R: CryptoRng + RngCore + ?Sized>(
        config: LinkerConfig,
        now: Instant,
        rng: &mut R,
    ) -> Self {
        let mut linker = Self::without_nonce(config, now);
        linker.nonce = Some(ConfirmNonce::generate(rng));
        linker
    }

    /// [`Linker::new`] without a nonce, said by name: the link request carries none (as before
    /// revision 1.4, for a server that predates it), so no short code can be derived and an agent
    /// with the `Compare` policy refuses the link.
    ///
    /// ```
    /// use std::time::Instant;
    /// use lanlink::linker::{Linker, LinkerConfig};
    /// let linker = Linker::without_nonce(LinkerConfig::default(), Instant::now());
    /// assert!(linker.nonce().is_none());
    /// ```
    pub fn without_nonce(config: LinkerConfig, now: Instant) -> Self {
        let deadline = now.checked_add(config.give_up_after).unwrap_or(now);
        Self {
            config,
            deadline,
            state: State::Discovering {
                next: now,
                in_flight: false,
            },
            events: VecDeque::new(),
            nonce: None,
            short_code: None,
            next_fetch: 0,
            server_revision: None,
        }
    }

    /// The nonce this linker sends with its link request, if any.
    ///
    /// ```
    /// use std::time::Instant;
    /// use lanlink::linker::{Linker, LinkerConfig};
    /// let mut rng = lanlink::os_rng();
    /// let a = Linker::new(LinkerConfig::default(), Instant::now(), &mut rng);
    /// let b = Linker::new(LinkerConfig::default(), Instant::now(), &mut rng);
    /// assert_ne!(a.nonce(), b.nonce(), "fresh for every link");
    /// ```
    pub fn nonce(&self) -> Option<ConfirmNonce> {
        self.nonce
    }

    /// The link's short code, once the server accepted the link request and named the account
    /// (revision 1.4): the code a device with the `Compare` policy shows for this link.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::confirm::{short_code, DisplayName};
    /// # use lanlink::linker::{Linker, LinkerConfig, LinkerTransmit};
    /// # use lanlink::wire::{DiscoverReply, DiscoveredAgent, LinkState, LinkStatusReply, SecretReply};
    /// # use lanlink::{InstanceId, LocalSecret};
    /// # let now = Instant::now();
    /// # let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// # let _ = linker.poll_transmit(now);
    /// # let id = InstanceId::from_bytes([7; 16]);
    /// # let agent = DiscoveredAgent::new(id, "192.168.1.50".parse()?, 8080, Default::default());
    /// # linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into())))?;
    /// # let Some(LinkerTransmit::FetchSecret { fetch, .. }) = linker.poll_transmit(now) else { panic!() };
    /// let secret = LocalSecret::from_bytes([1; 32]);
    /// linker.handle_secret_reply(now, fetch, Ok(SecretReply::new(secret.clone())))?;
    /// let _link = linker.poll_transmit(now);
    /// let accepted = LinkStatusReply::new(id, LinkState::Pending).with_display_name("Alice".into());
    /// linker.handle_link_reply(now, Ok(accepted))?;
    /// // The same code the device derives from the same transcript.
    /// let name = DisplayName::new("Alice").unwrap();
    /// let expected = short_code(&id, &secret.commitment(&id), &name, &linker.nonce().unwrap());
    /// assert_eq!(linker.short_code(), Some(expected));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn short_code(&self) -> Option<ShortCode> {
        self.short_code
    }

    /// Whether the linker has finished (linked or failed).
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use lanlink::linker::{Linker, LinkerConfig};
    /// # let now = Instant::now();
    /// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// assert!(!linker.is_finished());
    /// linker.handle_timeout(now + LinkerConfig::default().give_up_after);
    /// assert!(linker.is_finished());
    /// ```
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Linked { .. } | State::Failed(_))
    }

    /// The linked instance, once linked.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{Linker, LinkerConfig};
    /// let linker = Linker::new(LinkerConfig::default(), Instant::now(), &mut lanlink::os_rng());
    /// assert_eq!(linker.linked(), None, "not before the server says linked");
    /// ```
    pub fn linked(&self) -> Option<InstanceId> {
        match self.state {
            State::Linked { instance_id } => Some(instance_id),
            _ => None,
        }
    }

    /// The failure, once failed.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{Linker, LinkerConfig, LinkerFailure};
    /// # use lanlink::wire::{DiscoverReply, HiddenReason};
    /// # let now = Instant::now();
    /// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// let _ = linker.poll_transmit(now);
    /// let hidden = DiscoverReply::new(Default::default()).with_hidden(HiddenReason::SharedNetwork);
    /// linker.handle_discover_reply(now, Ok(hidden))?;
    /// // Auto-discovery is off on a shared network: use a manual code.
    /// assert_eq!(linker.failure(), Some(&LinkerFailure::Hidden(HiddenReason::SharedNetwork)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn failure(&self) -> Option<&LinkerFailure> {
        match &self.state {
            State::Failed(reason) => Some(reason),
            _ => None,
        }
    }

    /// The agents offered for a choice (when `auto_select` is off or several were shown).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{Linker, LinkerConfig};
    /// # use lanlink::wire::{DiscoverReply, DiscoveredAgent};
    /// # let now = Instant::now();
    /// let config = LinkerConfig { auto_select: false, ..Default::default() };
    /// let mut linker = Linker::new(config, now, &mut lanlink::os_rng());
    /// let _ = linker.poll_transmit(now);
    /// let id = lanlink::InstanceId::from_bytes([7; 16]);
    /// let agent = DiscoveredAgent::new(id, "192.168.1.50".parse()?, 8080, Default::default());
    /// linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into())))?;
    /// assert_eq!(linker.choices().len(), 1);
    /// assert_eq!(linker.choices()[0].instance_id, id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn choices(&self) -> &[DiscoveredAgent] {
        match &self.state {
            State::Choosing { agents } => agents,
            _ => &[],
        }
    }

    fn fail(&mut self, reason: LinkerFailure) {
        self.events.push_back(LinkerEvent::Failed {
            reason: reason.clone(),
        });
        self.state = State::Failed(reason);
    }

    /// The endpoint being asked for the secret, while one is (revision 1.3).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{Linker, LinkerConfig};
    /// # use lanlink::wire::{DiscoverReply, DiscoveredAgent};
    /// # let now = Instant::now();
    /// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// assert_eq!(linker.fetching_from(), None);
    /// let _ = linker.poll_transmit(now);
    /// let id = lanlink::InstanceId::from_bytes([7; 16]);
    /// let agent = DiscoveredAgent::new(id, "192.168.1.50".parse()?, 8080, Default::default());
    /// linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into())))?;
    /// let _fetch = linker.poll_transmit(now);
    /// assert_eq!(linker.fetching_from(), Some("192.168.1.50:8080".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fetching_from(&self) -> Option<SocketAddr> {
        match &self.state {
            State::Fetching {
                endpoints,
                index,
                attempt: Some(_),
                ..
            } => endpoints.get(*index).copied(),
            _ => None,
        }
    }

    /// How many of the agent's endpoints are left to ask after the one being asked (revision
    /// 1.3); 0 when none, or when no fetch is in progress. A driver may retry a failed fetch only
    /// when none is left, and otherwise move on at once.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{Linker, LinkerConfig};
    /// # use lanlink::wire::{DiscoverReply, DiscoveredAgent};
    /// # let now = Instant::now();
    /// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// let _ = linker.poll_transmit(now);
    /// let id = lanlink::InstanceId::from_bytes([7; 16]);
    /// let agent = DiscoveredAgent::new(id, "192.168.1.50".parse()?, 8080, Default::default())
    ///     .with_candidates(vec!["10.0.0.5:8080".parse()?]);
    /// linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into())))?;
    /// let _fetch = linker.poll_transmit(now);
    /// assert_eq!(linker.endpoints_left(), 1, "the candidate, after the first endpoint");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn endpoints_left(&self) -> usize {
        match &self.state {
            State::Fetching {
                endpoints, index, ..
            } => endpoints.len().saturating_sub(index.saturating_add(1)),
            _ => 0,
        }
    }

    /// Advances time: gives up on an endpoint that has not answered within
    /// [`LinkerConfig::fetch_timeout`] (the next one is asked), and on the whole attempt after
    /// `give_up_after`. A spurious call is a no-op.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use lanlink::linker::{Linker, LinkerConfig, LinkerFailure};
    /// # let now = Instant::now();
    /// let config = LinkerConfig { give_up_after: Duration::from_secs(30), ..Default::default() };
    /// let mut linker = Linker::new(config, now, &mut lanlink::os_rng());
    /// linker.handle_timeout(now + Duration::from_secs(29));
    /// assert!(linker.failure().is_none());
    /// linker.handle_timeout(now + Duration::from_secs(30));
    /// assert_eq!(linker.failure(), Some(&LinkerFailure::Timeout));
    /// ```
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline && !self.is_finished() {
            self.fail(LinkerFailure::Timeout);
            return;
        }
        if let State::Fetching {
            attempt: Some(at), ..
        } = self.state
        {
            if now >= at {
                self.next_endpoint();
            }
        }
    }

    /// Starts fetching from `agent`: its endpoints in the order announced, each checked as
    /// `private_ip` is (a non-private one is skipped, with an event, and never contacted), at
    /// most `1 + MAX_CANDIDATES` of them whatever the server sent.
    fn fetch(&mut self, agent: DiscoveredAgent) {
        let mut endpoints = Vec::new();
        for endpoint in agent.endpoints().into_iter().take(1 + MAX_CANDIDATES) {
            if is_announceable_private_ip(endpoint.ip()) && endpoint.port() != 0 {
                endpoints.push(endpoint);
            } else {
                self.events.push_back(LinkerEvent::EndpointSkipped {
                    instance_id: agent.instance_id,
                    endpoint,
                });
            }
        }
        if endpoints.is_empty() {
            self.fail(LinkerFailure::Fetch(FetchFailure::Unreachable));
            return;
        }
        self.state = State::Fetching {
            agent,
            endpoints,
            index: 0,
            attempt: None,
            current: FetchId(u64::MAX),
        };
    }

    /// The endpoint in flight did not answer: ask the next one, or fail when none is left.
    fn next_endpoint(&mut self) {
        let State::Fetching {
            agent,
            endpoints,
            index,
            attempt,
            ..
        } = &mut self.state
        else {
            return;
        };
        if let Some(endpoint) = endpoints.get(*index) {
            self.events.push_back(LinkerEvent::EndpointUnreachable {
                instance_id: agent.instance_id,
                endpoint: *endpoint,
            });
        }
        *index += 1;
        *attempt = None;
        if *index >= endpoints.len() {
            self.fail(LinkerFailure::Fetch(FetchFailure::Unreachable));
        }
    }

    /// The server's discovery reply. Agents whose address is not private are dropped (a server
    /// must not point the user's browser at a public host).
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::event::LinkerEvent;
    /// # use lanlink::linker::{Linker, LinkerConfig};
    /// # use lanlink::wire::{DiscoverReply, DiscoveredAgent};
    /// # let now = Instant::now();
    /// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// let _ = linker.poll_transmit(now);
    /// // A server that points at a public host: the agent is dropped, never contacted.
    /// let id = lanlink::InstanceId::from_bytes([7; 16]);
    /// let public = DiscoveredAgent::new(id, "203.0.113.9".parse()?, 8080, Default::default());
    /// linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![public].into())))?;
    /// assert!(std::iter::from_fn(|| linker.poll_event())
    ///     .any(|e| matches!(e, LinkerEvent::AgentIgnored { instance_id } if instance_id == id)));
    /// assert_eq!(linker.fetching_from(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_discover_reply(
        &mut self,
        now: Instant,
        reply: Result<DiscoverReply, WireCode>,
    ) -> Result<(), LinkerError> {
        self.handle_timeout(now);
        if !matches!(
            self.state,
            State::Discovering {
                in_flight: true,
                ..
            }
        ) {
            return Err(self.unexpected());
        }
        let reply = match reply {
            Ok(reply) => {
                self.server_revision = reply.revision.filter(Revision::is_compatible);
                reply
            }
            Err(refusal) => {
                self.fail(LinkerFailure::Refused(refusal));
                return Ok(());
            }
        };
        if let Some(hidden) = reply.hidden {
            self.events.push_back(LinkerEvent::AgentsHidden {
                reason: hidden.reason,
            });
            if hidden.reason == HiddenReason::SharedNetwork {
                self.fail(LinkerFailure::Hidden(hidden.reason));
                return Ok(());
            }
        }
        let mut agents = Vec::new();
        // An agent whose first endpoint is not private is dropped whole (its server is not to
        // be trusted with the user's LAN); a candidate that is not is skipped when fetching.
        for agent in reply.agents {
            if is_announceable_private_ip(agent.private_ip) {
                agents.push(agent);
            } else {
                self.events.push_back(LinkerEvent::AgentIgnored {
                    instance_id: agent.instance_id,
                });
            }
        }
        self.events.push_back(LinkerEvent::Discovered {
            agents: agents.clone(),
        });
        match agents.len() {
            0 => {
                self.state = State::Discovering {
                    next: now
                        .checked_add(self.config.discover_interval)
                        .unwrap_or(now),
                    in_flight: false,
                }
            }
            1 if self.config.auto_select => self.fetch(agents.remove(0)),
            _ => self.state = State::Choosing { agents },
        }
        Ok(())
    }

    /// The user chose an agent from [`Linker::choices`].
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{Linker, LinkerConfig};
    /// # use lanlink::wire::{DiscoverReply, DiscoveredAgent};
    /// # use lanlink::{InstanceId, LinkerError};
    /// # let now = Instant::now();
    /// let config = LinkerConfig { auto_select: false, ..Default::default() };
    /// let mut linker = Linker::new(config, now, &mut lanlink::os_rng());
    /// let _ = linker.poll_transmit(now);
    /// let id = InstanceId::from_bytes([7; 16]);
    /// let agent = DiscoveredAgent::new(id, "192.168.1.50".parse()?, 8080, Default::default());
    /// linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into())))?;
    /// assert_eq!(linker.select(now, InstanceId::from_bytes([8; 16])), Err(LinkerError::NotDiscovered));
    /// linker.select(now, id)?;
    /// assert!(linker.poll_transmit(now).is_some(), "the secret request");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn select(&mut self, now: Instant, instance_id: InstanceId) -> Result<(), LinkerError> {
        self.handle_timeout(now);
        let State::Choosing { agents } = &mut self.state else {
            return Err(self.unexpected());
        };
        let Some(index) = agents.iter().position(|a| a.instance_id == instance_id) else {
            return Err(LinkerError::NotDiscovered);
        };
        let agent = agents.swap_remove(index);
        self.fetch(agent);
        Ok(())
    }

    /// The agent's answer to the secret request, from the endpoint the last
    /// [`LinkerTransmit::FetchSecret`] named. [`FetchFailure::Unreachable`] moves on to the
    /// agent's next endpoint (revision 1.3), or fails when none is left; a refusal by the agent
    /// ends the attempt at once (fail closed: an agent that answered and said no is not asked
    /// again at another address). `fetch` is the id the request carried
    /// ([`LinkerTransmit::FetchSecret`]): an answer to a request the linker has moved on from
    /// (its [`fetch_timeout`](LinkerConfig::fetch_timeout) passed, or another answer ended it)
    /// is refused as [`LinkerError::StaleReply`] and changes nothing.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{FetchFailure, Linker, LinkerConfig, LinkerTransmit};
    /// # use lanlink::wire::{DiscoverReply, DiscoveredAgent};
    /// # let now = Instant::now();
    /// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// let _ = linker.poll_transmit(now);
    /// let id = lanlink::InstanceId::from_bytes([7; 16]);
    /// let agent = DiscoveredAgent::new(id, "192.168.1.50".parse()?, 8080, Default::default())
    ///     .with_candidates(vec!["10.0.0.5:8080".parse()?]);
    /// linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into())))?;
    /// let Some(LinkerTransmit::FetchSecret { fetch, .. }) = linker.poll_transmit(now) else { panic!() };
    /// // Unreachable: the next endpoint is asked.
    /// linker.handle_secret_reply(now, fetch, Err(FetchFailure::Unreachable))?;
    /// let Some(LinkerTransmit::FetchSecret { agent, .. }) = linker.poll_transmit(now) else { panic!() };
    /// assert_eq!(agent, "10.0.0.5:8080".parse()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_secret_reply(
        &mut self,
        now: Instant,
        fetch: FetchId,
        reply: Result<SecretReply, FetchFailure>,
    ) -> Result<(), LinkerError> {
        self.handle_timeout(now);
        let State::Fetching {
            agent,
            endpoints,
            index,
            attempt: Some(_),
            current,
        } = &self.state
        else {
            return Err(self.stale_or_unexpected(fetch));
        };
        if *current != fetch {
            return Err(self.stale_or_unexpected(fetch));
        }
        let instance_id = agent.instance_id;
        // Cannot be out of range: an attempt is in flight only for an existing endpoint.
        let from = endpoints
            .get(*index)
            .copied()
            .unwrap_or(SocketAddr::new(agent.private_ip, agent.port));
        match reply {
            Err(FetchFailure::Unreachable) => self.next_endpoint(),
            Ok(reply) => {
                self.events
                    .push_back(LinkerEvent::SecretFetched { instance_id, from });
                let commitment = reply.local_secret.commitment(&instance_id);
                let mut request = LinkRequest::new(instance_id, reply.local_secret);
                request.nonce = self.nonce;
                // Stated only to a server that stated 1.5 or later: older ones refuse the field.
                if Revision::V1_5.known_to(self.server_revision) {
                    request = request.with_revision(Revision::CURRENT);
                }
                self.state = State::Linking {
                    request: Some(request),
                    sent: None,
                    instance_id,
                    commitment,
                };
            }
            Err(failure) => self.fail(LinkerFailure::Fetch(failure)),
        }
        Ok(())
    }

    /// The server's answer to the link request.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{Linker, LinkerConfig, LinkerFailure, LinkerTransmit};
    /// # use lanlink::wire::{DiscoverReply, DiscoveredAgent, SecretReply};
    /// # use lanlink::{LocalSecret, WireCode};
    /// # let now = Instant::now();
    /// # let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// # let _ = linker.poll_transmit(now);
    /// # let id = lanlink::InstanceId::from_bytes([7; 16]);
    /// # let agent = DiscoveredAgent::new(id, "192.168.1.50".parse()?, 8080, Default::default());
    /// # linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into())))?;
    /// # let Some(LinkerTransmit::FetchSecret { fetch, .. }) = linker.poll_transmit(now) else { panic!() };
    /// linker.handle_secret_reply(now, fetch, Ok(SecretReply::new(LocalSecret::from_bytes([1; 32]))))?;
    /// let Some(LinkerTransmit::Link(_)) = linker.poll_transmit(now) else { panic!() };
    /// linker.handle_link_reply(now, Err(WireCode::WrongSecret))?;
    /// assert_eq!(linker.failure(), Some(&LinkerFailure::Refused(WireCode::WrongSecret)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_link_reply(
        &mut self,
        now: Instant,
        reply: Result<LinkStatusReply, WireCode>,
    ) -> Result<(), LinkerError> {
        self.handle_timeout(now);
        let State::Linking {
            request: None,
            instance_id,
            commitment,
            ..
        } = self.state
        else {
            return Err(self.unexpected());
        };
        match reply {
            Ok(reply) => {
                self.events
                    .push_back(LinkerEvent::LinkRequested { instance_id });
                // The name the server forwards to the agent: the same inputs give the same code.
                let name = reply.display_name.and_then(DisplayName::new);
                if let (Some(name), Some(nonce)) = (name, self.nonce) {
                    let code = short_code(&instance_id, &commitment, &name, &nonce);
                    self.short_code = Some(code);
                    self.events.push_back(LinkerEvent::ShortCode {
                        instance_id,
                        short_code: code,
                    });
                }
                self.state = State::Waiting {
                    instance_id,
                    next: now,
                    in_flight: false,
                    seen: reply.state,
                };
            }
            Err(refusal) => self.fail(LinkerFailure::Refused(refusal)),
        }
        Ok(())
    }

    /// The server refused the link request as malformed (`400 malformed`). From a server of
    /// this crate, that means it is older than a field the request carried, so the linker sends
    /// the request again without it, once per field: first without its stated `revision` (a
    /// fleet of servers being upgraded answers from either revision), then, when no server
    /// stated a revision, without its nonce (a server before 1.4), reporting
    /// [`LinkerEvent::NonceRefused`]: the link then carries no short code, and a device whose
    /// [policy](crate::confirm::Confirmation) needs one refuses it (fail closed). A request with
    /// neither fails the linker ([`LinkerFailure::RequestMalformed`]).
    ///
    /// ```
    /// use std::time::Instant;
    /// use lanlink::event::LinkerEvent;
    /// use lanlink::linker::{FetchId, Linker, LinkerConfig, LinkerTransmit};
    /// use lanlink::wire::{DiscoverReply, DiscoveredAgent, SecretReply};
    /// use lanlink::{InstanceId, LocalSecret};
    /// let now = Instant::now();
    /// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// let id = InstanceId::from_bytes([7; 16]);
    /// let Some(LinkerTransmit::Discover) = linker.poll_transmit(now) else { panic!() };
    /// let agent = DiscoveredAgent::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default());
    /// // A server before 1.5 states no revision.
    /// let reply = DiscoverReply::new(vec![agent].into()).with_revision(None);
    /// linker.handle_discover_reply(now, Ok(reply)).unwrap();
    /// let Some(LinkerTransmit::FetchSecret { fetch, .. }) = linker.poll_transmit(now) else { panic!() };
    /// let secret = SecretReply::new(LocalSecret::from_bytes([1; 32]));
    /// linker.handle_secret_reply(now, fetch, Ok(secret)).unwrap();
    /// let Some(LinkerTransmit::Link(first)) = linker.poll_transmit(now) else { panic!() };
    /// assert!(first.nonce.is_some() && first.revision.is_none());
    /// linker.handle_link_malformed(now).unwrap(); // a 1.3 server refused the nonce
    /// let Some(LinkerTransmit::Link(again)) = linker.poll_transmit(now) else { panic!() };
    /// assert!(again.nonce.is_none() && linker.nonce().is_none());
    /// assert!(std::iter::from_fn(|| linker.poll_event())
    ///     .any(|e| matches!(e, LinkerEvent::NonceRefused { .. })));
    /// ```
    pub fn handle_link_malformed(&mut self, now: Instant) -> Result<(), LinkerError> {
        self.handle_timeout(now);
        let State::Linking {
            request: request @ None,
            sent,
            instance_id,
            ..
        } = &mut self.state
        else {
            return Err(self.unexpected());
        };
        let instance_id = *instance_id;
        let Some(mut again) = sent.take() else {
            return Err(LinkerError::UnexpectedInput);
        };
        let stated = self.server_revision.take();
        if again.revision.take().is_none() {
            if stated.is_some() || again.nonce.take().is_none() {
                self.fail(LinkerFailure::RequestMalformed);
                return Ok(());
            }
            self.nonce = None;
            self.events
                .push_back(LinkerEvent::NonceRefused { instance_id });
        }
        *request = Some(again);
        Ok(())
    }

    /// The server's answer to a link-status poll.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{Linker, LinkerConfig, LinkerFailure, LinkerTransmit};
    /// # use lanlink::wire::{DiscoverReply, DiscoveredAgent, LinkState, LinkStatusReply, SecretReply};
    /// # use lanlink::LocalSecret;
    /// # let now = Instant::now();
    /// # let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// # let _ = linker.poll_transmit(now);
    /// # let id = lanlink::InstanceId::from_bytes([7; 16]);
    /// # let agent = DiscoveredAgent::new(id, "192.168.1.50".parse()?, 8080, Default::default());
    /// # linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into())))?;
    /// # let Some(LinkerTransmit::FetchSecret { fetch, .. }) = linker.poll_transmit(now) else { panic!() };
    /// # linker.handle_secret_reply(now, fetch, Ok(SecretReply::new(LocalSecret::from_bytes([1; 32]))))?;
    /// # let _ = linker.poll_transmit(now);
    /// linker.handle_link_reply(now, Ok(LinkStatusReply::new(id, LinkState::Pending)))?;
    /// let Some(LinkerTransmit::LinkStatus { .. }) = linker.poll_transmit(now) else { panic!() };
    /// // The server no longer knows the link: the agent never redeemed it.
    /// linker.handle_link_status(now, Ok(LinkStatusReply::new(id, LinkState::Unknown)))?;
    /// assert_eq!(linker.failure(), Some(&LinkerFailure::LinkLost));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_link_status(
        &mut self,
        now: Instant,
        reply: Result<LinkStatusReply, WireCode>,
    ) -> Result<(), LinkerError> {
        self.handle_timeout(now);
        let State::Waiting {
            instance_id,
            in_flight: true,
            ..
        } = self.state
        else {
            return Err(self.unexpected());
        };
        let reply = match reply {
            Ok(reply) if reply.instance_id == instance_id => reply,
            Ok(_) => return Err(LinkerError::UnexpectedInput),
            Err(refusal) => {
                self.fail(LinkerFailure::Refused(refusal));
                return Ok(());
            }
        };
        self.events.push_back(LinkerEvent::LinkState {
            instance_id,
            state: reply.state,
        });
        match reply.state {
            LinkState::Linked => {
                self.events.push_back(LinkerEvent::Linked { instance_id });
                self.state = State::Linked { instance_id };
            }
            // Accepted earlier, now unknown: the message or code expired unredeemed.
            LinkState::Unknown => self.fail(LinkerFailure::LinkLost),
            // Still on its way: asked again one interval after the request was sent (at once
            // after a held answer, which comes at the hold's end), or at once when the state
            // moved (the server answered on the change; a link moves at most twice before it
            // is linked, so no server makes this spin).
            state => {
                if let State::Waiting {
                    in_flight,
                    next,
                    seen,
                    ..
                } = &mut self.state
                {
                    *in_flight = false;
                    if *seen != state {
                        *seen = state;
                        *next = now;
                    }
                }
            }
        }
        Ok(())
    }

    /// A transmit could not be delivered (network error, not a refusal): it is sent again after
    /// the state's interval. A failed secret fetch should go to [`Linker::handle_secret_reply`]
    /// as [`FetchFailure::Unreachable`] instead. A link request cannot be resent (its secret is
    /// gone), and the server may have accepted it before its answer was lost: the linker asks
    /// the link's state at once ([`LinkerTransmit::LinkStatus`]), and fails with
    /// [`LinkerFailure::LinkLost`] if the server knows no link.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{Linker, LinkerConfig, LinkerTransmit};
    /// # let now = Instant::now();
    /// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// let Some(LinkerTransmit::Discover) = linker.poll_transmit(now) else { panic!() };
    /// linker.handle_transport_error(now); // the discovery request was lost
    /// assert!(linker.poll_transmit(now).is_none());
    /// let again = now + LinkerConfig::default().discover_interval;
    /// assert!(matches!(linker.poll_transmit(again), Some(LinkerTransmit::Discover)));
    /// ```
    pub fn handle_transport_error(&mut self, now: Instant) {
        self.handle_timeout(now);
        match &mut self.state {
            State::Discovering { next, in_flight } => {
                *in_flight = false;
                *next = now
                    .checked_add(self.config.discover_interval)
                    .unwrap_or(now);
            }
            State::Waiting {
                next, in_flight, ..
            } => {
                *in_flight = false;
                *next = now.checked_add(self.config.status_interval).unwrap_or(now);
            }
            State::Fetching {
                attempt: Some(_), ..
            } => self.next_endpoint(),
            State::Fetching { .. } => self.fail(LinkerFailure::Fetch(FetchFailure::Unreachable)),
            // The link request was sent and its answer lost: the server may have accepted it
            // (found by the model checker, issue 24: failing here left the linker timed out while
            // the device linked). Ask the link's state instead: pending or linked goes on as after
            // an answer; unknown (never accepted) fails as `LinkLost`.
            State::Linking {
                request: None,
                instance_id,
                ..
            } => {
                self.state = State::Waiting {
                    instance_id: *instance_id,
                    next: now,
                    in_flight: false,
                    seen: LinkState::Pending,
                };
            }
            _ => {}
        }
    }

    fn unexpected(&self) -> LinkerError {
        if self.is_finished() {
            LinkerError::Finished
        } else {
            LinkerError::UnexpectedInput
        }
    }

    /// A reply to a request this linker made and moved on from is stale; anything else was never
    /// asked for (or the linker has finished).
    fn stale_or_unexpected(&self, fetch: FetchId) -> LinkerError {
        if fetch.0 < self.next_fetch && !self.is_finished() {
            LinkerError::StaleReply
        } else {
            self.unexpected()
        }
    }

    /// The next thing to send, if one is due at `now`.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{Linker, LinkerConfig, LinkerTransmit};
    /// # use lanlink::wire::DiscoverReply;
    /// # let now = Instant::now();
    /// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// assert!(matches!(linker.poll_transmit(now), Some(LinkerTransmit::Discover)));
    /// // No agent yet: ask again one discover interval later.
    /// linker.handle_discover_reply(now, Ok(DiscoverReply::new(Default::default())))?;
    /// assert!(linker.poll_transmit(now).is_none());
    /// let later = now + LinkerConfig::default().discover_interval;
    /// assert!(matches!(linker.poll_transmit(later), Some(LinkerTransmit::Discover)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<LinkerTransmit> {
        self.handle_timeout(now);
        match &mut self.state {
            State::Discovering { next, in_flight } if !*in_flight && now >= *next => {
                *in_flight = true;
                Some(LinkerTransmit::Discover)
            }
            State::Fetching {
                agent,
                endpoints,
                index,
                attempt: attempt @ None,
                current,
            } => {
                let endpoint = *endpoints.get(*index)?;
                *attempt = Some(now.checked_add(self.config.fetch_timeout).unwrap_or(now));
                *current = FetchId(self.next_fetch);
                self.next_fetch = self.next_fetch.saturating_add(1);
                Some(LinkerTransmit::FetchSecret {
                    agent: endpoint,
                    instance_id: agent.instance_id,
                    fetch: *current,
                })
            }
            State::Linking { request, sent, .. } => request.take().map(|request| {
                *sent = Some(request.clone());
                LinkerTransmit::Link(request)
            }),
            State::Waiting {
                instance_id,
                next,
                in_flight,
                ..
            } if !*in_flight && now >= *next => {
                *in_flight = true;
                // The next request no sooner than one interval after this one is sent, however
                // soon its answer comes (a server that does not hold answers at once).
                *next = now.checked_add(self.config.status_interval).unwrap_or(now);
                let left = self.deadline.saturating_duration_since(now);
                let most = Duration::from_millis(u64::from(crate::wire::MAX_HOLD_MS));
                Some(LinkerTransmit::LinkStatus {
                    instance_id: *instance_id,
                    hold: self.config.status_hold.min(left).min(most),
                })
            }
            _ => None,
        }
    }

    /// When the linker next needs [`Linker::poll_transmit`] or [`Linker::handle_timeout`].
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::linker::{Linker, LinkerConfig};
    /// # let now = Instant::now();
    /// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// assert!(linker.poll_timeout().is_some_and(|at| at <= now + LinkerConfig::default().give_up_after));
    /// linker.handle_timeout(now + LinkerConfig::default().give_up_after);
    /// assert_eq!(linker.poll_timeout(), None, "finished: nothing will be due");
    /// ```
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = match &self.state {
            State::Discovering {
                next,
                in_flight: false,
            }
            | State::Waiting {
                next,
                in_flight: false,
                ..
            } => Some(*next),
            State::Fetching {
                attempt: Some(at), ..
            } => Some(*at),
            State::Linked { .. } | State::Failed(_) => return None,
            _ => None,
        };
        Some(next.map_or(self.deadline, |n| n.min(self.deadline)))
    }

    /// The next event.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # use lanlink::event::LinkerEvent;
    /// # use lanlink::linker::{Linker, LinkerConfig};
    /// # use lanlink::wire::{DiscoverReply, DiscoveredAgent};
    /// # let now = Instant::now();
    /// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    /// let _ = linker.poll_transmit(now);
    /// let agent = DiscoveredAgent::new(lanlink::InstanceId::from_bytes([7; 16]), "192.168.1.50".parse()?, 8080, Default::default());
    /// linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent.clone()].into())))?;
    /// assert_eq!(linker.poll_event(), Some(LinkerEvent::Discovered { agents: vec![agent] }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn poll_event(&mut self) -> Option<LinkerEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
