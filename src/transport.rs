//! Transport traits: one per channel, so an embedder can carry the protocol over any stack.
//!
//! - [`AgentServerTransport`]: agent ↔ server (announce and receive queued messages, redeem).
//! - [`LinkerServerTransport`]: linker ↔ server (discover, link, link status, mint a manual code).
//! - [`LinkerAgentTransport`]: linker ↔ agent (fetch the secret over the LAN).
//!
//! The traits are object-safe (`#[async_trait]`), carry only [`crate::wire`] types, and make no
//! decision: refusals come back as [`TransportError::Refused`] with the peer's stable code, which
//! the drivers hand to the state machines. The HTTP adapter ([`crate::http`]) implements all three.

use std::net::SocketAddr;

use async_trait::async_trait;

use crate::error::{Refusal, SecretRefusal};
use crate::id::InstanceId;
use crate::wire::{
    Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemReply,
    RedeemRequest, SecretReply,
};

/// The default route prefix of the HTTP wire (`PROTOCOL.md`, "Conventions"): the server's routes
/// and the agent's local endpoint live under it unless a deployment configures another.
pub const DEFAULT_PREFIX: &str = "/lanlink/v1";

/// The server route, under the prefix, of an [`AgentTransmit::Announce`](crate::agent::AgentTransmit::Announce):
/// `POST {prefix}/agent/announce` with the [`Announce`] as JSON; the reply decodes as
/// [`AnnounceReply`] (with [`reply_from`]).
///
/// ```
/// use lanlink::transport::{ANNOUNCE_PATH, DEFAULT_PREFIX};
/// assert_eq!(format!("{DEFAULT_PREFIX}{ANNOUNCE_PATH}"), "/lanlink/v1/agent/announce");
/// ```
pub const ANNOUNCE_PATH: &str = "/agent/announce";

/// The server route, under the prefix, of an [`AgentTransmit::Redeem`](crate::agent::AgentTransmit::Redeem):
/// `POST {prefix}/agent/redeem` with the [`RedeemRequest`] as JSON; the reply decodes as
/// [`RedeemReply`] (with [`reply_from`]).
pub const REDEEM_PATH: &str = "/agent/redeem";

/// Why a transport call did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer answered with a refusal: its status (HTTP-style) and stable snake_case code.
    #[error("refused ({status}): {code}")]
    Refused {
        /// The status, e.g. 403.
        status: u16,
        /// The code, e.g. `"wrong_secret"`.
        code: String,
    },
    /// The peer could not be reached or did not answer in time. Worth retrying.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer answered something that is not a valid message.
    #[error("malformed reply")]
    Malformed,
}

/// The reply a peer's answer stands for, from its status and whole body alone (any HTTP client
/// calls this after reading at most [`wire::MAX_MESSAGE_BYTES`](crate::wire::MAX_MESSAGE_BYTES)):
/// a 2xx body decodes as `T` ([`TransportError::Malformed`] if it does not, or is too large); any
/// other status is [`TransportError::Refused`] with the body's stable code, or `http_<status>` when
/// the body holds none (a proxy's page, or a code that is not snake_case: never echoed).
///
/// ```
/// use lanlink::transport::{reply_from, TransportError};
/// use lanlink::wire::CodeReply;
/// let refused = reply_from::<CodeReply>(429, br#"{"error":"mint_quota"}"#).unwrap_err();
/// assert_eq!(refused, TransportError::Refused { status: 429, code: "mint_quota".into() });
/// let proxy = reply_from::<CodeReply>(502, b"<html>Bad gateway</html>").unwrap_err();
/// assert_eq!(proxy, TransportError::Refused { status: 502, code: "http_502".into() });
/// assert_eq!(reply_from::<CodeReply>(200, b"{}").unwrap_err(), TransportError::Malformed);
/// ```
pub fn reply_from<T: serde::de::DeserializeOwned>(
    status: u16,
    body: &[u8],
) -> Result<T, TransportError> {
    use crate::wire::{self, ErrorBody, MAX_MESSAGE_BYTES};
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(TransportError::Malformed);
    }
    if (200..300).contains(&status) {
        return wire::decode(body, MAX_MESSAGE_BYTES).map_err(|_| TransportError::Malformed);
    }
    let code = wire::decode::<ErrorBody>(body, MAX_MESSAGE_BYTES)
        .ok()
        .map(|b| b.error)
        .filter(|code| {
            !code.is_empty()
                && code.len() <= 64
                && code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .unwrap_or_else(|| format!("http_{status}"));
    Err(TransportError::Refused { status, code })
}

impl TransportError {
    /// Whether retrying may help: the peer was unreachable, or said it is temporarily unable
    /// (`503`).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            Self::Refused { status, .. } => *status == 503,
            Self::Malformed => false,
        }
    }

    /// Whether the peer refused the request itself as malformed (`400 malformed`): from a
    /// server of this crate, a request carrying a field newer than the server's revision. The
    /// agent and linker drivers hand it to [`Agent::handle_request_malformed`](crate::agent::Agent::handle_request_malformed)
    /// and [`Linker::handle_link_malformed`](crate::linker::Linker::handle_link_malformed).
    ///
    /// ```
    /// use lanlink::transport::TransportError;
    /// let err = TransportError::Refused { status: 400, code: "malformed".into() };
    /// assert!(err.is_malformed_request());
    /// assert!(!TransportError::Malformed.is_malformed_request()); // a reply we could not read
    /// ```
    pub fn is_malformed_request(&self) -> bool {
        matches!(self, Self::Refused { status: 400, code } if code == "malformed")
    }

    /// The server refusal this stands for, if it is one.
    ///
    /// ```
    /// use lanlink::transport::TransportError;
    /// use lanlink::Refusal;
    /// let err = TransportError::Refused { status: 403, code: "wrong_secret".into() };
    /// assert_eq!(err.refusal(), Some(Refusal::WrongSecret));
    /// ```
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Refused { code, .. } => Refusal::from_code(code),
            _ => None,
        }
    }

    /// The agent refusal this stands for, if it is one.
    pub fn secret_refusal(&self) -> Option<SecretRefusal> {
        match self {
            Self::Refused { code, .. } => SecretRefusal::from_code(code),
            _ => None,
        }
    }
}

/// The agent's channel to the server.
#[async_trait]
pub trait AgentServerTransport: Send + Sync {
    /// Sends an announcement; the reply carries queued messages and the next poll delay.
    async fn announce(&self, announce: &Announce) -> Result<AnnounceReply, TransportError>;
    /// Redeems a code for an auth token.
    async fn redeem(&self, request: &RedeemRequest) -> Result<RedeemReply, TransportError>;
}

/// The linker's channel to the server (authenticated as the user by the implementation).
#[async_trait]
pub trait LinkerServerTransport: Send + Sync {
    /// Lists the discoverable agents of the caller's network.
    async fn discover(&self) -> Result<DiscoverReply, TransportError>;
    /// Asks to link an agent.
    async fn link(&self, request: &LinkRequest) -> Result<LinkStatusReply, TransportError>;
    /// Reads a link's state.
    async fn link_status(
        &self,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, TransportError>;
    /// Mints a manual code for the user.
    async fn mint_code(&self) -> Result<CodeReply, TransportError>;
}

/// The linker's channel to an agent's local endpoint.
#[async_trait]
pub trait LinkerAgentTransport: Send + Sync {
    /// Asks the agent at `agent` for the secret of `instance_id`.
    async fn fetch_secret(
        &self,
        agent: SocketAddr,
        instance_id: &InstanceId,
    ) -> Result<SecretReply, TransportError>;
}
