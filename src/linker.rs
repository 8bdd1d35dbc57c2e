//! The linker: the user's browser or app. Discovers agents on its network through the server,
//! fetches the chosen agent's secret over the LAN, asks the server to link, and waits for the link.
//!
//! A sans-IO state machine driven like the agent: inputs through `handle_*` with a monotonic
//! `now`, outputs from `poll_transmit`, `poll_event` and `poll_timeout`.
//!
//! ```
//! use std::time::Instant;
//! use lanlink::linker::{Linker, LinkerConfig, LinkerTransmit};
//!
//! let now = Instant::now();
//! let mut linker = Linker::new(LinkerConfig::default(), now);
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
use crate::error::{LinkerError, Refusal, SecretRefusal};
use crate::event::LinkerEvent;
use crate::id::InstanceId;
use crate::secret::Commitment;
use crate::wire::{
    DiscoverReply, DiscoveredAgent, HiddenReason, LinkRequest, LinkState, LinkStatusReply,
    SecretReply,
};

/// The linker's configuration.
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
}

impl Default for LinkerConfig {
    fn default() -> Self {
        Self {
            discover_interval: Duration::from_secs(5),
            status_interval: Duration::from_secs(1),
            give_up_after: Duration::from_secs(300),
            auto_select: true,
        }
    }
}

/// What the linker wants sent.
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkerTransmit {
    /// Ask the server for agents; feed the reply to [`Linker::handle_discover_reply`].
    Discover,
    /// Ask the agent at `agent` for its secret; feed the reply to [`Linker::handle_secret_reply`].
    FetchSecret {
        /// The agent's local endpoint.
        agent: SocketAddr,
        /// The instance to ask for.
        instance_id: InstanceId,
    },
    /// Ask the server to link; feed the reply to [`Linker::handle_link_reply`]. Drop the request
    /// (zeroizing the secret) once sent.
    Link(LinkRequest),
    /// Ask the server for the link's state; feed the reply to [`Linker::handle_link_status`].
    LinkStatus {
        /// The instance.
        instance_id: InstanceId,
    },
}

/// Why fetching the secret failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchFailure {
    /// The agent refused.
    #[error("the agent refused: {0}")]
    Refused(SecretRefusal),
    /// The agent could not be reached (not on this LAN, blocked, down).
    #[error("the agent could not be reached")]
    Unreachable,
}

/// Why the linker gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkerFailure {
    /// `give_up_after` passed.
    #[error("timed out")]
    Timeout,
    /// The agent would not hand out its secret.
    #[error("could not fetch the secret: {0}")]
    Fetch(FetchFailure),
    /// The server refused the link.
    #[error("the server refused: {0}")]
    Refused(Refusal),
    /// The server hides auto-discovery on this network (`shared_network`): link with a manual
    /// code instead.
    #[error("devices on this network are not shown ({}); use a code", .0.code())]
    Hidden(HiddenReason),
    /// The server lost the link (the agent never redeemed it).
    #[error("the link expired before the agent completed it")]
    LinkLost,
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
        in_flight: bool,
    },
    Linking {
        request: Option<LinkRequest>,
        instance_id: InstanceId,
        commitment: Commitment,
    },
    Waiting {
        instance_id: InstanceId,
        next: Instant,
        in_flight: bool,
    },
    Linked {
        instance_id: InstanceId,
    },
    Failed(LinkerFailure),
}

/// The linker's state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Linker {
    config: LinkerConfig,
    deadline: Instant,
    state: State,
    events: VecDeque<LinkerEvent>,
    nonce: Option<ConfirmNonce>,
    short_code: Option<ShortCode>,
}

impl Linker {
    /// Starts a linking attempt at `now`: the first transmit is a discovery. The link request
    /// carries no nonce (as before revision 1.4), so no short code can be derived and an agent
    /// with the `Compare` policy refuses the link; prefer [`Linker::with_rng`].
    pub fn new(config: LinkerConfig, now: Instant) -> Self {
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
        }
    }

    /// [`Linker::new`], with a fresh [`ConfirmNonce`] from `rng` for the link request (revision
    /// 1.4; requests are strict, so upgrade servers before linkers), from which the linker
    /// derives the link's [short code](Linker::short_code).
    ///
    /// ```
    /// use std::time::Instant;
    /// use lanlink::linker::{Linker, LinkerConfig};
    /// let linker = Linker::with_rng(LinkerConfig::default(), Instant::now(), &mut lanlink::os_rng());
    /// assert!(linker.nonce().is_some());
    /// assert!(linker.short_code().is_none()); // until the server accepts the link
    /// ```
    pub fn with_rng<R: CryptoRng + RngCore + ?Sized>(
        config: LinkerConfig,
        now: Instant,
        rng: &mut R,
    ) -> Self {
        let mut linker = Self::new(config, now);
        linker.nonce = Some(ConfirmNonce::generate(rng));
        linker
    }

    /// The nonce this linker sends with its link request, if any.
    pub fn nonce(&self) -> Option<ConfirmNonce> {
        self.nonce
    }

    /// The link's short code, once the server accepted the link request and named the account
    /// (revision 1.4): the code a device with the `Compare` policy shows for this link.
    pub fn short_code(&self) -> Option<ShortCode> {
        self.short_code
    }

    /// Whether the linker has finished (linked or failed).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Linked { .. } | State::Failed(_))
    }

    /// The linked instance, once linked.
    pub fn linked(&self) -> Option<InstanceId> {
        match self.state {
            State::Linked { instance_id } => Some(instance_id),
            _ => None,
        }
    }

    /// The failure, once failed.
    pub fn failure(&self) -> Option<&LinkerFailure> {
        match &self.state {
            State::Failed(reason) => Some(reason),
            _ => None,
        }
    }

    /// The agents offered for a choice (when `auto_select` is off or several were shown).
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

    /// Advances time: gives up after `give_up_after`. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline && !self.is_finished() {
            self.fail(LinkerFailure::Timeout);
        }
    }

    /// The server's discovery reply. Agents whose address is not private are dropped (a server
    /// must not point the user's browser at a public host).
    pub fn handle_discover_reply(
        &mut self,
        now: Instant,
        reply: Result<DiscoverReply, Refusal>,
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
            Ok(reply) => reply,
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
        self.state = match agents.len() {
            0 => State::Discovering {
                next: now
                    .checked_add(self.config.discover_interval)
                    .unwrap_or(now),
                in_flight: false,
            },
            1 if self.config.auto_select => State::Fetching {
                agent: agents.remove(0),
                in_flight: false,
            },
            _ => State::Choosing { agents },
        };
        Ok(())
    }

    /// The user chose an agent from [`Linker::choices`].
    pub fn select(&mut self, now: Instant, instance_id: InstanceId) -> Result<(), LinkerError> {
        self.handle_timeout(now);
        let State::Choosing { agents } = &mut self.state else {
            return Err(self.unexpected());
        };
        let Some(index) = agents.iter().position(|a| a.instance_id == instance_id) else {
            return Err(LinkerError::NotDiscovered);
        };
        let agent = agents.swap_remove(index);
        self.state = State::Fetching {
            agent,
            in_flight: false,
        };
        Ok(())
    }

    /// The agent's answer to the secret request.
    pub fn handle_secret_reply(
        &mut self,
        now: Instant,
        reply: Result<SecretReply, FetchFailure>,
    ) -> Result<(), LinkerError> {
        self.handle_timeout(now);
        let State::Fetching {
            agent,
            in_flight: true,
        } = &self.state
        else {
            return Err(self.unexpected());
        };
        let instance_id = agent.instance_id;
        match reply {
            Ok(reply) => {
                self.events
                    .push_back(LinkerEvent::SecretFetched { instance_id });
                let commitment = reply.local_secret.commitment(&instance_id);
                self.state = State::Linking {
                    request: Some(LinkRequest {
                        instance_id,
                        local_secret: reply.local_secret,
                        nonce: self.nonce,
                    }),
                    instance_id,
                    commitment,
                };
            }
            Err(failure) => self.fail(LinkerFailure::Fetch(failure)),
        }
        Ok(())
    }

    /// The server's answer to the link request.
    pub fn handle_link_reply(
        &mut self,
        now: Instant,
        reply: Result<LinkStatusReply, Refusal>,
    ) -> Result<(), LinkerError> {
        self.handle_timeout(now);
        let State::Linking {
            request: None,
            instance_id,
            commitment,
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
                };
            }
            Err(refusal) => self.fail(LinkerFailure::Refused(refusal)),
        }
        Ok(())
    }

    /// The server's answer to a link-status poll.
    pub fn handle_link_status(
        &mut self,
        now: Instant,
        reply: Result<LinkStatusReply, Refusal>,
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
            _ => {
                self.state = State::Waiting {
                    instance_id,
                    next: now.checked_add(self.config.status_interval).unwrap_or(now),
                    in_flight: false,
                };
            }
        }
        Ok(())
    }

    /// A transmit could not be delivered (network error, not a refusal): it is sent again after
    /// the state's interval. A failed secret fetch should go to [`Linker::handle_secret_reply`]
    /// as [`FetchFailure::Unreachable`] instead; a lost link request cannot be resent (its secret
    /// is gone), so it fails the attempt.
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
            State::Fetching { .. } => self.fail(LinkerFailure::Fetch(FetchFailure::Unreachable)),
            State::Linking { request: None, .. } => self.fail(LinkerFailure::Timeout),
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

    /// The next thing to send, if one is due at `now`.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<LinkerTransmit> {
        self.handle_timeout(now);
        match &mut self.state {
            State::Discovering { next, in_flight } if !*in_flight && now >= *next => {
                *in_flight = true;
                Some(LinkerTransmit::Discover)
            }
            State::Fetching { agent, in_flight } if !*in_flight => {
                *in_flight = true;
                Some(LinkerTransmit::FetchSecret {
                    agent: SocketAddr::new(agent.private_ip, agent.port),
                    instance_id: agent.instance_id,
                })
            }
            State::Linking { request, .. } => request.take().map(LinkerTransmit::Link),
            State::Waiting {
                instance_id,
                next,
                in_flight,
                ..
            } if !*in_flight && now >= *next => {
                *in_flight = true;
                Some(LinkerTransmit::LinkStatus {
                    instance_id: *instance_id,
                })
            }
            _ => None,
        }
    }

    /// When the linker next needs [`Linker::poll_transmit`] or [`Linker::handle_timeout`].
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
            State::Linked { .. } | State::Failed(_) => return None,
            _ => None,
        };
        Some(next.map_or(self.deadline, |n| n.min(self.deadline)))
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<LinkerEvent> {
        self.events.pop_front()
    }
}
