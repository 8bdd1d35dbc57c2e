//! Events: every decision each role makes, with its reason, for the embedder's audit log.
//!
//! Events never carry a secret, a code or a token. Drain them with each role's `poll_event`.

use std::net::IpAddr;
use std::time::Instant;

use crate::addr::PublicNetwork;
use crate::confirm::{DisplayName, ShortCode};
use crate::error::{Refusal, SecretRefusal, VerifyFailure};
use crate::id::{AccountId, InstanceId};

/// Why an agent's discovery ended without a link.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The window ran out.
    WindowExpired,
    /// A forwarded message failed verification.
    VerifyFailed(VerifyFailure),
    /// The server refused the code.
    RedeemRefused(Refusal),
    /// The server refused an announcement in a way that ends discovery
    /// ([`Refusal::ends_discovery`]).
    AnnounceRefused(Refusal),
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

/// What the agent decided.
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
    /// The server could not complete the redemption for now (a [retryable](Refusal::is_retryable)
    /// refusal): the agent sends it again after a back-off, until its redeem deadline.
    RedeemDeferred {
        /// Why.
        reason: Refusal,
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
        signal: crate::server::SharedSignal,
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
        via: crate::server::hook::LinkVia,
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
        /// Why (serialized as its stable code, [`Refusal::code`]).
        #[serde(serialize_with = "refusal_code")]
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
        space: crate::server::CodeSpace,
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

/// Serializes a refusal as its stable code (never with any input it refused).
fn refusal_code<S: serde::Serializer>(reason: &Refusal, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(reason.code())
}

/// The kind of request a server event is about.
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
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkerEvent {
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
        reason: crate::linker::LinkerFailure,
    },
}
