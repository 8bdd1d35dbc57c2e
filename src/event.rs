//! Events: every decision each role makes, with its reason, for the embedder's audit log.
//! An event must never carry a secret, a link code or a token (a confirmation's short code is no
//! secret: see [`crate::confirm`]).
//!
//! Drain them with each role's `poll_event`.

use std::net::IpAddr;
use std::time::Instant;

pub(crate) mod vocab;

use crate::addr::PublicNetwork;
use crate::confirm::{DisplayName, ShortCode};
use crate::error::{Refusal, SecretRefusal, VerifyFailure, WireCode};
use crate::id::{AccountId, InstanceId};

/// Why an agent's discovery ended without a link.
///
/// ```
/// use lanlink::event::StopReason;
/// use lanlink::{VerifyFailure, WireCode};
/// // What a device may tell its owner, by reason.
/// fn advice(reason: &StopReason) -> &'static str {
///     match reason {
///         StopReason::WindowExpired | StopReason::Cancelled => "start linking mode again",
///         StopReason::RedeemRefused(WireCode::InvalidCode) => "check the code and try again",
///         StopReason::VerifyFailed(_) | StopReason::AnnounceRefused(_) => "someone else tried to link: start again",
///         _ => "try again later",
///     }
/// }
/// assert_eq!(advice(&StopReason::VerifyFailed(VerifyFailure::WrongSecret)), "someone else tried to link: start again");
/// assert_eq!(advice(&StopReason::ServerUnreachable), "try again later");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The window ran out.
    WindowExpired,
    /// A forwarded message failed verification.
    VerifyFailed(VerifyFailure),
    /// The server refused the code (its wire code).
    RedeemRefused(WireCode),
    /// The server refused an announcement with a code that ends discovery
    /// ([`Class::ends_discovery`](crate::Class::ends_discovery); a code this version does not
    /// know does).
    AnnounceRefused(WireCode),
    /// No answer to the redemption came before the agent's redeem deadline
    /// ([`AgentConfig::redeem_timeout`](crate::agent::AgentConfig::redeem_timeout)).
    ServerUnreachable,
    /// The embedder stopped discovery.
    Cancelled,
    /// The owner refused a link at the device ([`Decision::Refuse`](crate::confirm::Decision)).
    ConfirmationRefused,
    /// No decision came before the confirmation deadline
    /// ([`AgentConfig::confirm_timeout`](crate::agent::AgentConfig::confirm_timeout)).
    ConfirmationExpired,
}

impl StopReason {
    /// A stable snake_case code for logs and serialized events (the refusal or failure inside,
    /// if any, has its own code).
    ///
    /// ```
    /// use lanlink::event::StopReason;
    /// assert_eq!(StopReason::WindowExpired.code(), "window_expired");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Self::WindowExpired => "window_expired",
            Self::VerifyFailed(_) => "verify_failed",
            Self::RedeemRefused(_) => "redeem_refused",
            Self::AnnounceRefused(_) => "announce_refused",
            Self::ServerUnreachable => "server_unreachable",
            Self::Cancelled => "cancelled",
            Self::ConfirmationRefused => "confirmation_refused",
            Self::ConfirmationExpired => "confirmation_expired",
        }
    }
}

/// What the agent decided. Serializes to JSON for an audit log or a device's own UI: an object
/// tagged by `event` (the variant's name in snake_case, [`AgentEvent::name`]), with addresses as
/// text and refusals as their stable codes.
///
/// | `event` | its other keys |
/// | --- | --- |
/// | `discovery_started` | `instance_id` |
/// | `secret_served` | `client` |
/// | `secret_refused` | `peer`, `reason` ([`SecretRefusal::code`]) |
/// | `visibility` | `visible` (`true` or `false`); when hidden, `reason` ([`HiddenReason`](crate::wire::HiddenReason), snake_case) |
/// | `secret_verified` | none |
/// | `candidates_refused` | none |
/// | `redeem_proof_refused` | none |
/// | `confirmation_requested` | `display_name`; under `Compare`, `short_code` (six digits, `"012345"`) |
/// | `message_rejected` | `reason` ([`VerifyFailure::code`]) |
/// | `redeem_started` | `manual` |
/// | `redeem_deferred` | `reason` (the [`WireCode`]) |
/// | `linked` | `instance_id` |
/// | `stopped` | `reason` ([`StopReason::code`]); with `announce_refused` and `redeem_refused` also `refusal` (the [`WireCode`]), with `verify_failed` also `failure` ([`VerifyFailure::code`]) |
///
/// No event holds the local secret, a link code or the auth token, so none serializes one. The
/// short code is no secret: the linking page shows it too, for the owner to compare. The
/// `deadline`s are monotonic [`Instant`]s, which mean nothing outside the process: they are not
/// serialized (read them from the event). Later revisions may add events and keys; these keep
/// their names.
///
/// ```
/// use lanlink::event::{AgentEvent, StopReason};
/// use lanlink::WireCode;
/// let served = AgentEvent::SecretServed { client: "192.168.1.20".parse().unwrap() };
/// assert_eq!(
///     serde_json::to_string(&served).unwrap(),
///     r#"{"event":"secret_served","client":"192.168.1.20"}"#,
/// );
/// let stopped = AgentEvent::Stopped { reason: StopReason::RedeemRefused(WireCode::InvalidCode) };
/// assert_eq!(
///     serde_json::to_string(&stopped).unwrap(),
///     r#"{"event":"stopped","reason":"redeem_refused","refusal":"invalid_code"}"#,
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentEvent {
    /// Discovery started with a fresh id and secret.
    DiscoveryStarted {
        /// The new id.
        instance_id: InstanceId,
        /// When the window closes (monotonic).
        deadline: Instant,
    },
    /// The secret was handed to a local caller.
    SecretServed {
        /// The caller's resolved address.
        client: IpAddr,
    },
    /// A secret request was refused.
    SecretRefused {
        /// The socket peer.
        peer: IpAddr,
        /// Why.
        reason: SecretRefusal,
    },
    /// The server's view of this agent changed (the announce reply's `visibility`, revision
    /// 1.2): shown to linkers of its network, or hidden and why. Emitted on the first reply of a
    /// window and on every change; [`describe_visibility`](crate::agent::describe_visibility)
    /// says it in words.
    Visibility {
        /// How the server shows the agent.
        visibility: crate::wire::Visibility,
    },
    /// A server that states no revision refused an announcement that carried
    /// [`candidates`](crate::wire::Announce::candidates) as malformed: a server before revision
    /// 1.3. The agent announces without them from now on (linkers reach it at its first
    /// endpoint only); see [`Agent::handle_request_malformed`](crate::agent::Agent::handle_request_malformed).
    CandidatesRefused,
    /// A server that states no revision refused a redemption that carried the presence key and
    /// attempt as malformed: a server before revision 1.1. The agent redeems as 1.0 did from now
    /// on (a retry after a lost reply is refused as a used code there).
    RedeemProofRefused,
    /// Held announcements (revision 1.6, [`AgentConfig::hold`](crate::agent::AgentConfig::hold))
    /// failed `failures` times in a row: the request timed out or was cut, or something between
    /// the agent and the server (a proxy that does not let a request stay idle this long)
    /// answered instead of the server. The agent asks for no hold for the rest of its window
    /// and announces at its interval, as before 1.6: a link then reaches it at its next
    /// announcement rather than at once. Fix the proxy's idle timeout (more than the hold) or
    /// set a shorter hold; see
    /// [`Agent::handle_announce_failed`](crate::agent::Agent::handle_announce_failed).
    ///
    /// ```
    /// let event = lanlink::event::AgentEvent::HoldFallback { failures: 2 };
    /// assert_eq!(serde_json::to_string(&event).unwrap(), r#"{"event":"hold_fallback","failures":2}"#);
    /// ```
    HoldFallback {
        /// The held announcements that failed in a row.
        failures: u32,
    },
    /// A forwarded secret matched; the agent now redeems its code, or, under a
    /// [confirmation policy](crate::confirm::Confirmation), asks its owner first
    /// ([`AgentEvent::ConfirmationRequested`]).
    SecretVerified,
    /// A verified link waits for the owner's decision at the device
    /// ([`Agent::confirm`](crate::agent::Agent::confirm)) until `deadline`: show "`display_name`
    /// wants to link this device" and, under `Compare`, the short code the linking page shows
    /// too (revision 1.4).
    ConfirmationRequested {
        /// The linking account, as the server named it.
        display_name: DisplayName,
        /// The code to compare with the page's (`Compare` only).
        short_code: Option<ShortCode>,
        /// When the request lapses and discovery ends.
        deadline: Instant,
    },
    /// A forwarded message was rejected.
    MessageRejected {
        /// Why.
        reason: VerifyFailure,
    },
    /// A code redemption was queued (`manual`: typed by the user).
    RedeemStarted {
        /// Whether the code was entered by hand.
        manual: bool,
    },
    /// The server could not complete the redemption for now (a
    /// [retryable](crate::Class::retryable) refusal): the agent sends it again after a
    /// back-off, until its redeem deadline.
    RedeemDeferred {
        /// Why (the server's wire code).
        reason: WireCode,
    },
    /// The server returned an auth token: linked.
    Linked {
        /// The linked instance.
        instance_id: InstanceId,
    },
    /// Discovery ended without a link; the secret is zeroized.
    Stopped {
        /// Why.
        reason: StopReason,
    },
}

impl AgentEvent {
    /// The event's stable name, its `event` key in JSON (`"discovery_started"`, `"linked"`, …).
    ///
    /// ```
    /// use lanlink::event::{AgentEvent, StopReason};
    /// let event = AgentEvent::Stopped { reason: StopReason::Cancelled };
    /// assert_eq!(event.name(), "stopped");
    /// // The same word is the `event` key of its JSON.
    /// assert!(serde_json::to_string(&event)?.contains(r#""event":"stopped""#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Self::DiscoveryStarted { .. } => "discovery_started",
            Self::SecretServed { .. } => "secret_served",
            Self::SecretRefused { .. } => "secret_refused",
            Self::Visibility { .. } => "visibility",
            Self::SecretVerified => "secret_verified",
            Self::CandidatesRefused => "candidates_refused",
            Self::RedeemProofRefused => "redeem_proof_refused",
            Self::HoldFallback { .. } => "hold_fallback",
            Self::ConfirmationRequested { .. } => "confirmation_requested",
            Self::MessageRejected { .. } => "message_rejected",
            Self::RedeemStarted { .. } => "redeem_started",
            Self::RedeemDeferred { .. } => "redeem_deferred",
            Self::Linked { .. } => "linked",
            Self::Stopped { .. } => "stopped",
        }
    }
}

/// The shape in [`AgentEvent`]'s docs. Written by hand: the `Instant`s are left out, codes stand
/// for the reasons, and the visibility is spread over two keys.
impl serde::Serialize for AgentEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("event", self.name())?;
        match self {
            // The deadline is a monotonic instant: not serialized.
            Self::DiscoveryStarted {
                instance_id,
                deadline: _,
            } => map.serialize_entry("instance_id", instance_id)?,
            Self::SecretServed { client } => map.serialize_entry("client", client)?,
            Self::SecretRefused { peer, reason } => {
                map.serialize_entry("peer", peer)?;
                map.serialize_entry("reason", &reason.code())?;
            }
            Self::Visibility { visibility } => match visibility {
                crate::wire::Visibility::Visible => map.serialize_entry("visible", &true)?,
                crate::wire::Visibility::Hidden(reason) => {
                    map.serialize_entry("visible", &false)?;
                    map.serialize_entry("reason", reason)?;
                }
            },
            Self::SecretVerified | Self::CandidatesRefused | Self::RedeemProofRefused => {}
            Self::HoldFallback { failures } => map.serialize_entry("failures", failures)?,
            Self::ConfirmationRequested {
                display_name,
                short_code,
                deadline: _,
            } => {
                map.serialize_entry("display_name", display_name.as_str())?;
                if let Some(code) = short_code {
                    map.serialize_entry("short_code", &code.digits())?;
                }
            }
            Self::MessageRejected { reason } => map.serialize_entry("reason", reason.code())?,
            Self::RedeemStarted { manual } => map.serialize_entry("manual", manual)?,
            Self::RedeemDeferred { reason } => map.serialize_entry("reason", reason)?,
            Self::Linked { instance_id } => map.serialize_entry("instance_id", instance_id)?,
            Self::Stopped { reason } => {
                map.serialize_entry("reason", reason.code())?;
                match reason {
                    StopReason::AnnounceRefused(refusal) | StopReason::RedeemRefused(refusal) => {
                        map.serialize_entry("refusal", refusal)?;
                    }
                    StopReason::VerifyFailed(failure) => {
                        map.serialize_entry("failure", failure.code())?;
                    }
                    StopReason::WindowExpired
                    | StopReason::ServerUnreachable
                    | StopReason::Cancelled
                    | StopReason::ConfirmationRefused
                    | StopReason::ConfirmationExpired => {}
                }
            }
        }
        map.end()
    }
}

/// What the server decided. Serializes to JSON for an audit log, tagged by `event`, with
/// networks as text and refusals as their stable codes; no event carries a secret, a code or a
/// token.
///
/// ```
/// use lanlink::event::ServerEvent;
/// let event = ServerEvent::LockedOut {
///     network: lanlink::PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
/// };
/// let json = serde_json::to_string(&event).unwrap();
/// assert_eq!(json, r#"{"event":"locked_out","network":"203.0.113.7"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerEvent {
    /// An announcement was recorded.
    Announced {
        /// Where.
        #[serde(serialize_with = "network_text")]
        network: PublicNetwork,
        /// Who.
        instance_id: InstanceId,
        /// How many queued messages the reply carried.
        delivered: usize,
    },
    /// A linker discovered agents.
    Discovered {
        /// The linker's network.
        #[serde(serialize_with = "network_text")]
        network: PublicNetwork,
        /// How many agents it was shown.
        shown: usize,
        /// How many fresh agents were present.
        present: usize,
        /// Why the agents present were not shown, if they were not (revision 1.2).
        #[serde(skip_serializing_if = "Option::is_none")]
        hidden: Option<crate::wire::HiddenReason>,
    },
    /// A network was judged shared (see [`crate::server::shared`]): its discovery shows no
    /// agent and its auto links are refused `shared_network`. Emitted when a stateful signal
    /// newly marks it (sticky), and on each request judged by an address signal.
    NetworkJudgedShared {
        /// The network.
        #[serde(serialize_with = "network_text")]
        network: PublicNetwork,
        /// Which signal.
        signal: vocab::SharedSignal,
        /// Whether the judgement was written as a sticky mark (a stateful signal).
        sticky: bool,
    },
    /// A link request was accepted and the secret queued for the agent.
    LinkAccepted {
        /// The network.
        #[serde(serialize_with = "network_text")]
        network: PublicNetwork,
        /// The agent.
        instance_id: InstanceId,
        /// The requesting account.
        account: AccountId,
    },
    /// A manual code was minted.
    CodeMinted {
        /// For whom.
        account: AccountId,
    },
    /// An agent redeemed a code and a token was minted.
    Linked {
        /// The agent's network.
        #[serde(serialize_with = "network_text")]
        network: PublicNetwork,
        /// The agent.
        instance_id: InstanceId,
        /// The account it is now linked to.
        account: AccountId,
        /// Whether the code was a manual one.
        manual: bool,
        /// How the link was made.
        via: vocab::LinkVia,
        /// Whether this completed a retried redemption (after a lost reply) with a new token,
        /// which replaces the earlier one.
        reissued: bool,
    },
    /// The host's [`LinkHook`](crate::server::hook::LinkHook) failed: the redemption was refused
    /// retryably (`link_unavailable`) and the code given back.
    LinkHookFailed {
        /// The agent's network.
        #[serde(serialize_with = "network_text")]
        network: PublicNetwork,
        /// The agent.
        instance_id: InstanceId,
        /// The account it was being linked to.
        account: AccountId,
        /// The hook's description of its failure.
        message: String,
    },
    /// A request was refused.
    Refused {
        /// The caller's network, when it was resolved.
        #[serde(serialize_with = "network_opt_text")]
        network: Option<PublicNetwork>,
        /// Which request.
        request: RequestKind,
        /// Why. Serialized as two keys: `reason`, the wire code the caller was answered
        /// ([`Refusal::code`], collapsed on purpose: `invalid_code` for every failed
        /// redemption), and `detail`, the precise internal reason ([`Refusal::detail`]:
        /// `code_used` for a replayed code, `unknown_code` for a wrong guess, …), which only the
        /// audit log carries.
        #[serde(flatten, serialize_with = "refusal_fields")]
        reason: Refusal,
    },
    /// A network was locked out after too many failures (a guess from it filled one of its
    /// budget levels).
    LockedOut {
        /// The network.
        #[serde(serialize_with = "network_text")]
        network: PublicNetwork,
    },
    /// Too many wrong guesses at a code space from all networks together: its codes are not
    /// checked, and manual codes are minted in the fallback format, until the budget has room.
    CodesSuspended {
        /// The space.
        space: vocab::CodeSpace,
    },
    /// Not a decision but a gap in the record: `count` events happened here that the
    /// synchronous [`Server`](crate::server::Server)'s queue had no room for, because more than
    /// [`MAX_QUEUED_EVENTS`](crate::server::MAX_QUEUED_EVENTS) waited undrained. They are gone;
    /// this event stands where they were, so the audit log shows the gap (drain
    /// [`poll_event`](crate::server::Server::poll_event) after each call, or give the server a
    /// sink, and it never appears).
    EventsLost {
        /// How many events were lost.
        count: u64,
    },
}

/// Serializes a public network as text (`203.0.113.7`, `2001:db8:1:2::/64`).
pub(crate) fn network_text<S: serde::Serializer>(
    network: &PublicNetwork,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(network)
}

fn network_opt_text<S: serde::Serializer>(
    network: &Option<PublicNetwork>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match network {
        Some(network) => serializer.collect_str(network),
        None => serializer.serialize_none(),
    }
}

/// Serializes a refusal as its wire code (`reason`) and its precise internal reason (`detail`),
/// never with any input it refused.
fn refusal_fields<S: serde::Serializer>(
    reason: &Refusal,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(2))?;
    map.serialize_entry("reason", &reason.code())?;
    map.serialize_entry("detail", reason.detail())?;
    map.end()
}

/// The kind of request a server event is about.
///
/// ```
/// use lanlink::event::RequestKind;
/// assert_eq!(serde_json::to_string(&RequestKind::LinkStatus)?, r#""link_status""#);
/// assert_eq!(serde_json::to_string(&RequestKind::MintCode)?, r#""mint_code""#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RequestKind {
    /// An agent's announcement.
    Announce,
    /// A linker's discovery.
    Discover,
    /// A linker's link request.
    Link,
    /// A link-status query.
    LinkStatus,
    /// A manual code mint.
    MintCode,
    /// An agent's code redemption.
    Redeem,
}

/// What the linker decided.
///
/// ```
/// # use std::time::Instant;
/// use lanlink::event::LinkerEvent;
/// use lanlink::linker::{Linker, LinkerConfig};
/// use lanlink::wire::{DiscoverReply, HiddenReason};
/// # let now = Instant::now();
/// let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
/// let _ = linker.poll_transmit(now);
/// linker.handle_discover_reply(now, Ok(DiscoverReply::new(Default::default()).with_hidden(HiddenReason::SharedNetwork)))?;
/// let events: Vec<LinkerEvent> = std::iter::from_fn(|| linker.poll_event()).collect();
/// assert!(events.contains(&LinkerEvent::AgentsHidden { reason: HiddenReason::SharedNetwork }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkerEvent {
    /// The server refused the link request's nonce as malformed (a server before revision
    /// 1.4): the request was sent again without it, so this link has no short code (see
    /// [`Linker::handle_link_malformed`](crate::linker::Linker::handle_link_malformed)).
    NonceRefused {
        /// The agent being linked.
        instance_id: InstanceId,
    },
    /// A discovery reply arrived.
    Discovered {
        /// The agents that may be linked (the server's list less any with a non-private address).
        agents: Vec<crate::wire::DiscoveredAgent>,
    },
    /// The server showed no agent because some are hidden on this network, and why (revision
    /// 1.2). `too_many_agents` keeps discovering (the other device may leave);
    /// `shared_network` ends the linker with [`LinkerFailure::Hidden`](crate::linker::LinkerFailure::Hidden).
    AgentsHidden {
        /// Why.
        reason: crate::wire::HiddenReason,
    },
    /// A discovered agent was dropped because its address is not private.
    AgentIgnored {
        /// The agent.
        instance_id: InstanceId,
    },
    /// The secret was fetched from the agent.
    SecretFetched {
        /// The agent.
        instance_id: InstanceId,
        /// The endpoint that answered: `private_ip:port`, or one of the agent's candidates
        /// (revision 1.3).
        from: std::net::SocketAddr,
    },
    /// One of the agent's endpoints did not answer (unreachable, or not within
    /// [`fetch_timeout`](crate::linker::LinkerConfig::fetch_timeout)): the next one is asked,
    /// if any (revision 1.3).
    EndpointUnreachable {
        /// The agent.
        instance_id: InstanceId,
        /// The endpoint.
        endpoint: std::net::SocketAddr,
    },
    /// One of the agent's announced endpoints fails the checks its first address passes (not
    /// private, port 0): it is never contacted (revision 1.3).
    EndpointSkipped {
        /// The agent.
        instance_id: InstanceId,
        /// The endpoint.
        endpoint: std::net::SocketAddr,
    },
    /// The short code of this link (revision 1.4), derived once the server accepted it and
    /// named the account: show "if the device asks, check it shows `short_code`, and approve it
    /// there". Only a device with the `Compare` policy shows a code; one that shows another
    /// code is being linked by someone else (refuse it there).
    ShortCode {
        /// The agent.
        instance_id: InstanceId,
        /// The code.
        short_code: ShortCode,
    },
    /// The server accepted the link request.
    LinkRequested {
        /// The agent.
        instance_id: InstanceId,
    },
    /// The link's state changed.
    LinkState {
        /// The agent.
        instance_id: InstanceId,
        /// The new state.
        state: crate::wire::LinkState,
    },
    /// The agent is linked: done.
    Linked {
        /// The agent.
        instance_id: InstanceId,
    },
    /// Linking failed: done.
    Failed {
        /// Why.
        reason: vocab::LinkerFailure,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{HiddenReason, Visibility};

    /// One of each agent event, and the JSON it must read as. The match makes a new variant fail
    /// to compile here until it has its line.
    fn every_agent_event() -> Vec<(AgentEvent, String)> {
        let id: InstanceId = "7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90".parse().unwrap();
        let now = Instant::now();
        let name = DisplayName::new("alice@example.com").unwrap();
        let code = crate::confirm::short_code(
            &id,
            &crate::LocalSecret::from_bytes([7; 32]).commitment(&id),
            &name,
            &crate::confirm::ConfirmNonce::from_hex("00112233445566778899aabbccddeeff").unwrap(),
        );
        let short_code_json = format!(
            r#"{{"event":"confirmation_requested","display_name":"alice@example.com","short_code":"{}"}}"#,
            code.digits()
        );
        let events = vec![
            (
                AgentEvent::DiscoveryStarted {
                    instance_id: id,
                    deadline: now,
                },
                r#"{"event":"discovery_started","instance_id":"7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90"}"#.to_owned(),
            ),
            (
                AgentEvent::SecretServed {
                    client: "192.168.1.20".parse().unwrap(),
                },
                r#"{"event":"secret_served","client":"192.168.1.20"}"#.to_owned(),
            ),
            (
                AgentEvent::SecretRefused {
                    peer: "fe80::1".parse().unwrap(),
                    reason: SecretRefusal::BadOrigin,
                },
                r#"{"event":"secret_refused","peer":"fe80::1","reason":"bad_origin"}"#.to_owned(),
            ),
            (
                AgentEvent::Visibility {
                    visibility: Visibility::Visible,
                },
                r#"{"event":"visibility","visible":true}"#.to_owned(),
            ),
            (
                AgentEvent::Visibility {
                    visibility: Visibility::Hidden(HiddenReason::TooManyAgents),
                },
                r#"{"event":"visibility","visible":false,"reason":"too_many_agents"}"#.to_owned(),
            ),
            (AgentEvent::SecretVerified, r#"{"event":"secret_verified"}"#.to_owned()),
            (AgentEvent::CandidatesRefused, r#"{"event":"candidates_refused"}"#.to_owned()),
            (AgentEvent::RedeemProofRefused, r#"{"event":"redeem_proof_refused"}"#.to_owned()),
            (
                AgentEvent::HoldFallback { failures: 2 },
                r#"{"event":"hold_fallback","failures":2}"#.to_owned(),
            ),
            (
                AgentEvent::ConfirmationRequested {
                    display_name: name.clone(),
                    short_code: Some(code),
                    deadline: now,
                },
                short_code_json,
            ),
            (
                AgentEvent::ConfirmationRequested {
                    display_name: name,
                    short_code: None,
                    deadline: now,
                },
                r#"{"event":"confirmation_requested","display_name":"alice@example.com"}"#.to_owned(),
            ),
            (
                AgentEvent::MessageRejected {
                    reason: VerifyFailure::WrongSecret,
                },
                r#"{"event":"message_rejected","reason":"wrong_secret"}"#.to_owned(),
            ),
            (
                AgentEvent::RedeemStarted { manual: true },
                r#"{"event":"redeem_started","manual":true}"#.to_owned(),
            ),
            (
                AgentEvent::RedeemDeferred {
                    reason: WireCode::LinkUnavailable,
                },
                r#"{"event":"redeem_deferred","reason":"link_unavailable"}"#.to_owned(),
            ),
            (
                AgentEvent::Linked { instance_id: id },
                r#"{"event":"linked","instance_id":"7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90"}"#.to_owned(),
            ),
            (
                AgentEvent::Stopped {
                    reason: StopReason::WindowExpired,
                },
                r#"{"event":"stopped","reason":"window_expired"}"#.to_owned(),
            ),
            (
                AgentEvent::Stopped {
                    reason: StopReason::VerifyFailed(VerifyFailure::Late),
                },
                r#"{"event":"stopped","reason":"verify_failed","failure":"late"}"#.to_owned(),
            ),
            (
                AgentEvent::Stopped {
                    reason: StopReason::AnnounceRefused(WireCode::InstanceUsed),
                },
                r#"{"event":"stopped","reason":"announce_refused","refusal":"instance_used"}"#.to_owned(),
            ),
        ];
        for (event, _) in &events {
            match event {
                AgentEvent::DiscoveryStarted { .. }
                | AgentEvent::SecretServed { .. }
                | AgentEvent::SecretRefused { .. }
                | AgentEvent::Visibility { .. }
                | AgentEvent::SecretVerified
                | AgentEvent::CandidatesRefused
                | AgentEvent::RedeemProofRefused
                | AgentEvent::HoldFallback { .. }
                | AgentEvent::ConfirmationRequested { .. }
                | AgentEvent::MessageRejected { .. }
                | AgentEvent::RedeemStarted { .. }
                | AgentEvent::RedeemDeferred { .. }
                | AgentEvent::Linked { .. }
                | AgentEvent::Stopped { .. } => {}
            }
        }
        events
    }

    #[test]
    fn every_agent_event_serializes_to_its_documented_shape() {
        let events = every_agent_event();
        let mut names = std::collections::BTreeSet::new();
        for (event, expected) in &events {
            let json = serde_json::to_string(event).unwrap();
            assert_eq!(json, *expected);
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["event"], event.name());
            // Never a deadline, a secret, a code or a token.
            for key in value.as_object().unwrap().keys() {
                assert!(
                    [
                        "event",
                        "instance_id",
                        "client",
                        "peer",
                        "reason",
                        "visible",
                        "display_name",
                        "short_code",
                        "manual",
                        "refusal",
                        "failure",
                        "failures",
                    ]
                    .contains(&key.as_str()),
                    "{key} in {json}"
                );
            }
            names.insert(event.name());
        }
        assert_eq!(names.len(), 14, "one of each variant: {names:?}");
    }

    #[test]
    fn every_stop_reason_has_its_own_code() {
        let reasons = [
            StopReason::WindowExpired,
            StopReason::VerifyFailed(VerifyFailure::WrongSecret),
            StopReason::RedeemRefused(WireCode::InvalidCode),
            StopReason::AnnounceRefused(WireCode::InstanceUsed),
            StopReason::ServerUnreachable,
            StopReason::Cancelled,
            StopReason::ConfirmationRefused,
            StopReason::ConfirmationExpired,
        ];
        let codes: std::collections::BTreeSet<_> = reasons.iter().map(StopReason::code).collect();
        assert_eq!(codes.len(), reasons.len());
    }
}
