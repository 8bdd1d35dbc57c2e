//! Async drivers (feature `tokio`): run a role's state machine over its transport with a real
//! clock. They must not decide any protocol rule (the state machines do, and a refusal goes to
//! them as it came): they move messages, sleep until the state machine's next timeout, retry
//! transport failures with capped exponential back-off and jitter, and stop when the state
//! machine says it is done.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::agent::{Agent, AgentStatus, AgentTransmit};
use crate::event::{AgentEvent, LinkerEvent};
use crate::id::InstanceId;
use crate::linker::{FetchFailure, Linker, LinkerFailure, LinkerTransmit};
use crate::transport::{
    AgentServerTransport, LinkerAgentTransport, LinkerServerTransport, TransportError,
};
use crate::wire::DiscoveredAgent;
use crate::WireCode;

/// An agent shared between its driver and its local endpoint.
pub type SharedAgent = Arc<Mutex<Agent>>;

/// Locks a shared agent. The agent never panics while locked, so a poisoned lock still holds a
/// consistent agent and is used as is.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use lanlink::agent::{Agent, AgentConfig};
/// use lanlink::driver::{lock, SharedAgent};
/// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
/// let agent: SharedAgent = Arc::new(Mutex::new(Agent::new(config, std::time::Instant::now(), &mut lanlink::os_rng()).unwrap()));
/// let other = Arc::clone(&agent);
/// // A thread that panics while holding the lock poisons it; the agent is still usable.
/// let _ = std::thread::spawn(move || { let _held = other.lock().unwrap(); panic!("host bug") }).join();
/// assert!(agent.is_poisoned());
/// assert!(lock(&agent).is_discovering());
/// ```
pub fn lock(agent: &SharedAgent) -> MutexGuard<'_, Agent> {
    crate::lock_unpoisoned(agent)
}

/// Retry settings shared by the drivers.
///
/// ```
/// use std::time::Duration;
/// use lanlink::driver::DriverConfig;
/// let config = DriverConfig { max_attempts: 3, ..Default::default() };
/// assert_eq!(config.backoff_base, Duration::from_millis(250));
/// assert_eq!(config.backoff_cap, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The first back-off delay (default 250 ms).
    pub backoff_base: Duration,
    /// The largest back-off delay (default 10 s).
    pub backoff_cap: Duration,
    /// Attempts at one linker request before giving up (default 6). The agent's redemption is
    /// retried by the agent itself, until its
    /// [redeem deadline](crate::agent::AgentConfig::redeem_timeout); the linker's link request
    /// is sent once, and the link's state asked after a lost answer.
    pub max_attempts: u32,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(10),
            max_attempts: 6,
        }
    }
}

/// Capped exponential back-off with "equal jitter": attempt *n* waits a uniformly random time in
/// `[d/2, d]`, where `d = min(cap, base · 2ⁿ)`.
///
/// ```
/// use std::time::Duration;
/// use lanlink::driver::{Backoff, DriverConfig};
/// let mut backoff = Backoff::new(&DriverConfig::default());
/// let first = backoff.next_delay(&mut lanlink::os_rng());
/// assert!(first >= Duration::from_millis(125) && first <= Duration::from_millis(250));
/// for _ in 0..20 { backoff.next_delay(&mut lanlink::os_rng()); }
/// assert!(backoff.next_delay(&mut lanlink::os_rng()) <= Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A back-off at its first step.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::driver::{Backoff, DriverConfig};
    /// // A cap below the base is raised to it.
    /// let config = DriverConfig { backoff_base: Duration::from_secs(1), backoff_cap: Duration::from_millis(10), ..Default::default() };
    /// let mut backoff = Backoff::new(&config);
    /// for _ in 0..5 {
    ///     assert!(backoff.next_delay(&mut lanlink::os_rng()) <= Duration::from_secs(1));
    /// }
    /// ```
    pub fn new(config: &DriverConfig) -> Self {
        Self {
            base: config.backoff_base,
            cap: config.backoff_cap.max(config.backoff_base),
            attempt: 0,
        }
    }

    /// The next delay.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::driver::{Backoff, DriverConfig};
    /// let mut backoff = Backoff::new(&DriverConfig::default());
    /// let _first = backoff.next_delay(&mut lanlink::os_rng());
    /// // The second attempt waits in [250 ms, 500 ms].
    /// let second = backoff.next_delay(&mut lanlink::os_rng());
    /// assert!(second >= Duration::from_millis(250) && second <= Duration::from_millis(500));
    /// ```
    pub fn next_delay<R: RngCore + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        let full = self.base.saturating_mul(factor).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = full / 2;
        let spread = u64::try_from((full - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            rng.next_u64() % (spread + 1)
        };
        half + Duration::from_micros(jitter)
    }

    /// Back to the first step (after a success).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::driver::{Backoff, DriverConfig};
    /// let mut backoff = Backoff::new(&DriverConfig::default());
    /// for _ in 0..10 { backoff.next_delay(&mut lanlink::os_rng()); }
    /// backoff.reset();
    /// assert!(backoff.next_delay(&mut lanlink::os_rng()) <= Duration::from_millis(250), "back to the first step");
    /// ```
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How often [`run_agent`] looks at an agent waiting for its owner's confirmation (revision
/// 1.4): the redemption starts within this long of [`Agent::confirm`](crate::agent::Agent::confirm).
pub const CONFIRM_POLL: Duration = Duration::from_millis(100);

/// How often [`run_agent`] looks at the agent while an announcement waits for its answer (a
/// held one, revision 1.6, may wait up to its hold): a code typed at the device, a cancel or
/// the window's end drops the request within this long
/// ([`Agent::wants_announce_reply`](crate::agent::Agent::wants_announce_reply)).
///
/// ```
/// assert!(lanlink::driver::ANNOUNCE_POLL <= lanlink::driver::CONFIRM_POLL);
/// ```
pub const ANNOUNCE_POLL: Duration = Duration::from_millis(100);

/// Runs `agent` over `transport` until it is linked or stopped, passing every event to
/// `on_event`. Returns the final status. The agent's local endpoint may share the agent meanwhile.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use lanlink::agent::{Agent, AgentConfig, AgentStatus};
/// use lanlink::driver::{run_agent, DriverConfig};
/// use lanlink::event::StopReason;
/// use lanlink::transport::{AgentServerTransport, TransportError};
/// use lanlink::wire::{Announce, AnnounceReply, RedeemReply, RedeemRequest};
/// use lanlink::WireCode;
/// /// A server that says every announcement is forged.
/// struct Refusing;
/// #[lanlink::async_trait]
/// impl AgentServerTransport for Refusing {
///     async fn announce(&self, _: &Announce) -> Result<AnnounceReply, TransportError> {
///         Err(TransportError::Refused { status: 403, code: WireCode::ForgedInstance })
///     }
///     async fn redeem(&self, _: &RedeemRequest) -> Result<RedeemReply, TransportError> { Err(TransportError::Malformed) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
/// let agent = Arc::new(Mutex::new(Agent::new(config, std::time::Instant::now(), &mut lanlink::os_rng()).unwrap()));
/// let status = run_agent(&agent, &Refusing, &DriverConfig::default(), |_event| {}).await;
/// // Fail closed: a forged-instance refusal ends discovery.
/// assert_eq!(status, AgentStatus::Stopped(StopReason::AnnounceRefused(WireCode::ForgedInstance)));
/// # }
/// ```
pub async fn run_agent<T: AgentServerTransport + ?Sized>(
    agent: &SharedAgent,
    transport: &T,
    config: &DriverConfig,
    mut on_event: impl FnMut(AgentEvent) + Send,
) -> AgentStatus {
    let mut backoff = Backoff::new(config);
    let mut rng = crate::os_rng();
    loop {
        let (transmit, wake, status) = {
            let mut guard = lock(agent);
            let transmit = guard.poll_transmit(Instant::now());
            while let Some(event) = guard.poll_event() {
                on_event(event);
            }
            (transmit, guard.poll_timeout(), guard.status())
        };
        match transmit {
            Some(AgentTransmit::Announce(announce)) => {
                // A held announcement (revision 1.6) may wait many seconds for its answer:
                // look at the agent now and then, and drop the request once its answer no
                // longer matters (a code typed at the device, a cancel, the window's end).
                let instance_id = announce.instance_id;
                let mut call = std::pin::pin!(transport.announce(&announce));
                let outcome = loop {
                    match tokio::time::timeout(ANNOUNCE_POLL, call.as_mut()).await {
                        Ok(outcome) => break Some(outcome),
                        Err(_) => {
                            if !lock(agent).wants_announce_reply(Instant::now(), instance_id) {
                                break None;
                            }
                        }
                    }
                };
                match outcome {
                    Some(Ok(reply)) => {
                        backoff.reset();
                        lock(agent).handle_announce_reply(Instant::now(), reply);
                    }
                    Some(Err(err)) => {
                        trace_transport("announce", &err);
                        // The agent decides what the failure means (an older server, a
                        // refusal, a failed hold): `Agent::handle_announce_failed`.
                        lock(agent).handle_announce_failed(Instant::now(), &err);
                        if err.is_retryable() {
                            tokio::time::sleep(backoff.next_delay(&mut rng)).await;
                        }
                    }
                    None => {}
                }
                continue;
            }
            Some(AgentTransmit::Redeem(request)) => {
                // One attempt: the agent owns the retransmissions (it hands the request out
                // again when its timer says, and stops at its redeem deadline).
                let outcome = transport.redeem(&request).await;
                let mut guard = lock(agent);
                let now = Instant::now();
                // Cannot fail: the agent just handed out this redemption.
                let _ = match outcome {
                    Ok(reply) => guard.handle_redeem_reply(now, Ok(reply)),
                    Err(err) if err.is_malformed_request() => {
                        trace_transport("redeem", &err);
                        guard.handle_request_malformed(now);
                        Ok(())
                    }
                    Err(err) => match err.refused_code() {
                        Some(code) => guard.handle_redeem_reply(now, Err(code)),
                        None => {
                            trace_transport("redeem", &err);
                            guard.handle_redeem_failed(now)
                        }
                    },
                };
                continue;
            }
            None => {}
        }
        match (status, wake) {
            (AgentStatus::Linked | AgentStatus::Stopped(_), _) | (_, None) => {
                let mut guard = lock(agent);
                while let Some(event) = guard.poll_event() {
                    on_event(event);
                }
                return guard.status();
            }
            (AgentStatus::Confirming { .. }, Some(wake)) => {
                // The owner's decision comes from another task (Agent::confirm) with no wake-up
                // of its own: look again soon rather than sleep to the deadline.
                let soon = Instant::now() + CONFIRM_POLL;
                tokio::time::sleep_until(tokio::time::Instant::from_std(wake.min(soon))).await;
            }
            (_, Some(wake)) => {
                tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
            }
        }
    }
}

/// Why [`run_linker`] ended without a link.
///
/// ```
/// use lanlink::driver::LinkerDriverError;
/// use lanlink::transport::TransportError;
/// let err = LinkerDriverError::Transport(TransportError::Refused { status: 401, code: lanlink::WireCode::Unauthorized });
/// assert_eq!(err.to_string(), "refused (401): unauthorized");
/// assert_eq!(LinkerDriverError::NotChosen.to_string(), "no agent was chosen");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkerDriverError {
    /// The linker failed (see [`LinkerFailure`]).
    #[error("{0}")]
    Linker(LinkerFailure),
    /// A transport error the protocol has no word for (for example the server refused the
    /// user's credentials).
    #[error("{0}")]
    Transport(TransportError),
    /// Several agents were found and `choose` picked none.
    #[error("no agent was chosen")]
    NotChosen,
}

/// Runs `linker` until it has linked an agent or failed. `choose` picks among several discovered
/// agents (it is called only when the linker does not pick by itself).
///
/// ```
/// use lanlink::driver::{run_linker, DriverConfig, LinkerDriverError};
/// use lanlink::linker::{Linker, LinkerConfig, LinkerFailure};
/// use lanlink::transport::{LinkerAgentTransport, LinkerServerTransport, TransportError};
/// use lanlink::wire::{CodeReply, DiscoverReply, HiddenReason, LinkRequest, LinkStatusReply, SecretReply};
/// use lanlink::InstanceId;
/// /// A server that hides every agent: the network looks shared.
/// struct Shared;
/// #[lanlink::async_trait]
/// impl LinkerServerTransport for Shared {
///     async fn discover(&self) -> Result<DiscoverReply, TransportError> {
///         Ok(DiscoverReply::new(Default::default()).with_hidden(HiddenReason::SharedNetwork))
///     }
///     async fn link(&self, _: &LinkRequest) -> Result<LinkStatusReply, TransportError> { Err(TransportError::Malformed) }
///     async fn link_status(&self, _: &InstanceId) -> Result<LinkStatusReply, TransportError> { Err(TransportError::Malformed) }
///     async fn mint_code(&self) -> Result<CodeReply, TransportError> { Err(TransportError::Malformed) }
/// }
/// # struct NoLan;
/// # #[lanlink::async_trait]
/// # impl LinkerAgentTransport for NoLan {
/// #     async fn fetch_secret(&self, _: std::net::SocketAddr, _: &InstanceId) -> Result<SecretReply, TransportError> {
/// #         Err(TransportError::Unreachable("no LAN".into()))
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut linker = Linker::new(LinkerConfig::default(), std::time::Instant::now(), &mut lanlink::os_rng());
/// let result = run_linker(&mut linker, &Shared, &NoLan, &DriverConfig::default(), |_| None, |_event| {}).await;
/// let Err(LinkerDriverError::Linker(failure)) = result else { panic!("{result:?}") };
/// assert_eq!(failure, LinkerFailure::Hidden(HiddenReason::SharedNetwork)); // offer a manual code
/// # }
/// ```
pub async fn run_linker<S, A>(
    linker: &mut Linker,
    server: &S,
    agents: &A,
    config: &DriverConfig,
    mut choose: impl FnMut(&[DiscoveredAgent]) -> Option<InstanceId> + Send,
    mut on_event: impl FnMut(LinkerEvent) + Send,
) -> Result<InstanceId, LinkerDriverError>
where
    S: LinkerServerTransport + ?Sized,
    A: LinkerAgentTransport + ?Sized,
{
    let mut backoff = Backoff::new(config);
    let mut rng = crate::os_rng();
    loop {
        let now = Instant::now();
        let transmit = linker.poll_transmit(now);
        while let Some(event) = linker.poll_event() {
            on_event(event);
        }
        if let Some(id) = linker.linked() {
            return Ok(id);
        }
        if let Some(failure) = linker.failure() {
            return Err(LinkerDriverError::Linker(failure.clone()));
        }
        let Some(transmit) = transmit else {
            if !linker.choices().is_empty() {
                let picked = choose(linker.choices()).ok_or(LinkerDriverError::NotChosen)?;
                linker
                    .select(now, picked)
                    .map_err(|_| LinkerDriverError::NotChosen)?;
                continue;
            }
            match linker.poll_timeout() {
                Some(wake) => tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await,
                None => linker.handle_timeout(Instant::now()),
            }
            continue;
        };
        // Replies are fed back; a reply the linker did not expect cannot happen here, since the
        // driver feeds each reply to the transmit that asked for it.
        let fed = match transmit {
            LinkerTransmit::Discover => match server.discover().await {
                Ok(reply) => {
                    backoff.reset();
                    linker.handle_discover_reply(Instant::now(), Ok(reply))
                }
                Err(err) => match err.refused_code() {
                    Some(code) if !err.is_retryable() => {
                        linker.handle_discover_reply(Instant::now(), Err(code))
                    }
                    _ => retry_later(linker, &err, &mut backoff, &mut rng).await?,
                },
            },
            LinkerTransmit::FetchSecret {
                agent,
                instance_id,
                fetch: request,
            } => {
                // Each endpoint gets the linker's fetch timeout (its poll_timeout now). Only the
                // agent's last endpoint is retried within it; an earlier one that fails moves
                // on to the next at once.
                let attempts = if linker.endpoints_left() > 0 {
                    1
                } else {
                    config.max_attempts
                };
                let once = DriverConfig {
                    max_attempts: attempts,
                    ..config.clone()
                };
                let fetch = with_retries(&once, &mut backoff, &mut rng, || {
                    agents.fetch_secret(agent, &instance_id)
                });
                let reply = match linker.poll_timeout() {
                    Some(at) => tokio::time::timeout_at(tokio::time::Instant::from_std(at), fetch)
                        .await
                        .unwrap_or_else(|_| {
                            Err(TransportError::Unreachable("no answer in time".to_owned()))
                        }),
                    None => fetch.await,
                };
                let reply = reply.map_err(|err| match err.refused_code() {
                    Some(code) => FetchFailure::Refused(code),
                    None if err.is_retryable() => FetchFailure::Unreachable,
                    // A peer that answers but not as an agent: a refusal to serve.
                    None => FetchFailure::Refused(WireCode::NoCode),
                });
                linker.handle_secret_reply(Instant::now(), request, reply)
            }
            LinkerTransmit::Link(request) => {
                // Sent once: the server may have accepted it before its answer was lost, and a
                // second copy would be refused as `already_linking` (a guess charged to the
                // user's own network) while the device links. The linker asks the link's state
                // instead (`Linker::handle_transport_error`).
                let reply = server.link(&request).await;
                drop(request);
                match reply {
                    Ok(reply) => {
                        backoff.reset();
                        linker.handle_link_reply(Instant::now(), Ok(reply))
                    }
                    Err(err) if err.is_malformed_request() => {
                        linker.handle_link_malformed(Instant::now())
                    }
                    Err(err) => match err.refused_code() {
                        Some(code) => linker.handle_link_reply(Instant::now(), Err(code)),
                        // Unanswered, or an answer we could not read: the link may stand.
                        None if err.is_retryable() || err == TransportError::Malformed => {
                            trace_transport("link", &err);
                            linker.handle_transport_error(Instant::now());
                            Ok(())
                        }
                        None => return Err(LinkerDriverError::Transport(err)),
                    },
                }
            }
            LinkerTransmit::LinkStatus { instance_id, hold } => {
                // Revision 1.6: held while the link is on its way, answered when it moves.
                let reply = if hold.is_zero() {
                    server.link_status(&instance_id).await
                } else {
                    server.link_status_held(&instance_id, hold).await
                };
                match reply {
                    Ok(reply) => {
                        backoff.reset();
                        linker.handle_link_status(Instant::now(), Ok(reply))
                    }
                    Err(err) => match err.refused_code() {
                        Some(code) if !err.is_retryable() => {
                            linker.handle_link_status(Instant::now(), Err(code))
                        }
                        _ => retry_later(linker, &err, &mut backoff, &mut rng).await?,
                    },
                }
            }
        };
        // Cannot be an error: each reply goes to the transmit that asked for it.
        let _ = fed;
    }
}

/// A retryable error: let the linker reschedule, and back off. Otherwise end the run.
async fn retry_later<R: RngCore>(
    linker: &mut Linker,
    err: &TransportError,
    backoff: &mut Backoff,
    rng: &mut R,
) -> Result<Result<(), crate::LinkerError>, LinkerDriverError> {
    trace_transport("linker", err);
    if !err.is_retryable() {
        return Err(LinkerDriverError::Transport(err.clone()));
    }
    linker.handle_transport_error(Instant::now());
    tokio::time::sleep(backoff.next_delay(rng)).await;
    Ok(Ok(()))
}

/// Calls `request` until it succeeds, fails for good, or `max_attempts` are spent.
async fn with_retries<T, F, Fut, R>(
    config: &DriverConfig,
    backoff: &mut Backoff,
    rng: &mut R,
    mut request: F,
) -> Result<T, TransportError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TransportError>>,
    R: RngCore,
{
    let mut attempts = 1;
    loop {
        match request().await {
            Err(err) if err.is_retryable() && attempts < config.max_attempts => {
                trace_transport("retry", &err);
                attempts += 1;
                tokio::time::sleep(backoff.next_delay(rng)).await;
            }
            other => {
                if other.is_ok() {
                    backoff.reset();
                }
                return other;
            }
        }
    }
}

fn trace_transport(what: &str, err: &TransportError) {
    tracing::debug!(what, error = %err, "transport error");
}
