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
