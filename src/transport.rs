//! Transport traits: one per channel, so an embedder can carry the protocol over any stack.
//! A transport must not decide any protocol rule: it carries messages, and the state machines
//! decide.
//!
//! - [`AgentServerTransport`]: agent ↔ server (announce and receive queued messages, redeem).
//! - [`LinkerServerTransport`]: linker ↔ server (discover, link, link status, mint a manual code).
//! - [`LinkerAgentTransport`]: linker ↔ agent (fetch the secret over the LAN).
//!
//! The traits are object-safe (`#[async_trait]`), carry only [`crate::wire`] types, and make no
//! decision: refusals come back as [`TransportError::Refused`] with the peer's stable code, which
//! the drivers hand to the state machines. The HTTP adapter (`lanlink::http`, features `http-server` and `http-client`)
//! implements all three.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Class, WireCode};
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
///
/// ```
/// use lanlink::transport::{reply_from, TransportError};
/// use lanlink::wire::LinkStatusReply;
/// use lanlink::WireCode;
/// // How a client matches a failed call.
/// match reply_from::<LinkStatusReply>(403, br#"{"error":"wrong_secret"}"#) {
///     Err(TransportError::Refused { code: WireCode::WrongSecret, .. }) => {} // fetch the secret again
///     other => panic!("{other:?}"),
/// }
/// let down = TransportError::Unreachable("connection refused".into());
/// assert!(down.is_retryable() && down.code().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer answered with a refusal: its status (HTTP-style) and its code, typed (a code
    /// this version does not know is [`WireCode::Unknown`], a refusal without one
    /// [`WireCode::NoCode`]).
    #[error("refused ({status}): {code}")]
    Refused {
        /// The status, e.g. 403.
        status: u16,
        /// The code, e.g. [`WireCode::WrongSecret`].
        code: WireCode,
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
/// other status is [`TransportError::Refused`] with the body's code ([`WireCode::parse`]), or
/// [`WireCode::NoCode`] when the body holds none (a proxy's page, or a code that is not
/// snake_case: never echoed).
///
/// ```
/// use lanlink::transport::{reply_from, TransportError};
/// use lanlink::wire::CodeReply;
/// use lanlink::WireCode;
/// let refused = reply_from::<CodeReply>(429, br#"{"error":"mint_quota"}"#).unwrap_err();
/// assert_eq!(refused, TransportError::Refused { status: 429, code: WireCode::MintQuota });
/// let proxy = reply_from::<CodeReply>(502, b"<html>Bad gateway</html>").unwrap_err();
/// assert_eq!(proxy, TransportError::Refused { status: 502, code: WireCode::NoCode });
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
        .and_then(|b| WireCode::parse(&b.error))
        .unwrap_or(WireCode::NoCode);
    Err(TransportError::Refused { status, code })
}

impl TransportError {
    /// The refusal's row of the classification table, as a client reads it: its code's
    /// ([`WireCode::class`]), whatever status came with it; for a refusal without a code
    /// ([`WireCode::NoCode`], a proxy's or HTTP layer's page) one made from the status alone:
    /// retryable at `502`, `503` and `504` (a gateway between), never ending discovery, never a
    /// guess. `None` when the peer did not refuse (unreachable, or a reply we could not read).
    ///
    /// ```
    /// use lanlink::transport::TransportError;
    /// use lanlink::WireCode;
    /// let busy = TransportError::Refused { status: 503, code: WireCode::StoreUnavailable };
    /// assert!(busy.class().unwrap().retryable);
    /// let proxy = TransportError::Refused { status: 502, code: WireCode::NoCode };
    /// assert!(proxy.class().unwrap().retryable);
    /// assert_eq!(TransportError::Malformed.class(), None);
    /// ```
    pub fn class(&self) -> Option<Class> {
        match self {
            Self::Refused {
                status,
                code: WireCode::NoCode,
            } => {
                let mut class = WireCode::NoCode.class();
                class.status = Some(*status);
                class.retryable = matches!(status, 502..=504);
                Some(class)
            }
            Self::Refused { code, .. } => Some(code.class()),
            Self::Unreachable(_) | Self::Malformed => None,
        }
    }

    /// Whether retrying may help: the peer was unreachable, or refused with a
    /// [retryable](Class::retryable) code ([`TransportError::class`]). A code this version does
    /// not know is never retried (fail closed).
    ///
    /// ```
    /// use lanlink::transport::TransportError;
    /// use lanlink::WireCode;
    /// assert!(TransportError::Unreachable("timeout".into()).is_retryable());
    /// let newer = TransportError::Refused { status: 503, code: WireCode::parse("brand_new").unwrap() };
    /// assert!(!newer.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            other => other.class().is_some_and(|class| class.retryable),
        }
    }

    /// The wire code of a refusal; `None` when the peer did not refuse.
    ///
    /// ```
    /// use lanlink::transport::TransportError;
    /// use lanlink::WireCode;
    /// let refused = TransportError::Refused { status: 502, code: WireCode::NoCode };
    /// assert_eq!(refused.code(), Some(WireCode::NoCode));
    /// assert_eq!(TransportError::Malformed.code(), None);
    /// ```
    pub fn code(&self) -> Option<WireCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            Self::Unreachable(_) | Self::Malformed => None,
        }
    }

    /// The code to hand the agent's and linker's state machines
    /// ([`Agent::handle_announce_refused`](crate::agent::Agent::handle_announce_refused),
    /// [`Linker::handle_link_reply`](crate::linker::Linker::handle_link_reply), …): that of
    /// every refusal but one without a code ([`WireCode::NoCode`], a proxy's or HTTP layer's
    /// page), which they treat as a transport failure. A code this version does not know is
    /// handed on: they fail closed on it. Check
    /// [`is_malformed_request`](Self::is_malformed_request) first.
    ///
    /// ```
    /// use lanlink::transport::TransportError;
    /// use lanlink::WireCode;
    /// let used = TransportError::Refused { status: 409, code: WireCode::InstanceUsed };
    /// assert_eq!(used.refused_code(), Some(WireCode::InstanceUsed));
    /// let proxy = TransportError::Refused { status: 502, code: WireCode::NoCode };
    /// assert_eq!(proxy.refused_code(), None);
    /// ```
    pub fn refused_code(&self) -> Option<WireCode> {
        self.code().filter(|code| *code != WireCode::NoCode)
    }

    /// Whether the peer refused the request itself as malformed (`400 malformed`): from a
    /// server of this crate, a request carrying a field newer than the server's revision. The
    /// agent and linker drivers hand it to [`Agent::handle_request_malformed`](crate::agent::Agent::handle_request_malformed)
    /// and [`Linker::handle_link_malformed`](crate::linker::Linker::handle_link_malformed)
    /// before anything else.
    ///
    /// ```
    /// use lanlink::transport::TransportError;
    /// use lanlink::WireCode;
    /// let err = TransportError::Refused { status: 400, code: WireCode::Malformed };
    /// assert!(err.is_malformed_request());
    /// assert!(!TransportError::Malformed.is_malformed_request()); // a reply we could not read
    /// ```
    pub fn is_malformed_request(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                status: 400,
                code: WireCode::Malformed
            }
        )
    }
}

/// The agent's channel to the server.
///
/// ```
/// use lanlink::transport::{AgentServerTransport, TransportError};
/// use lanlink::wire::{Announce, AnnounceReply, RedeemReply, RedeemRequest};
/// use lanlink::{server::Server, PublicNetwork, Refusal};
/// /// The server's own operations, in process, for a caller on one network.
/// struct InProcess { server: Server, network: PublicNetwork }
/// fn refused(r: Refusal) -> TransportError { TransportError::Refused { status: r.status(), code: r.code() } }
/// #[lanlink::async_trait]
/// impl AgentServerTransport for InProcess {
///     async fn announce(&self, a: &Announce) -> Result<AnnounceReply, TransportError> {
///         self.server.announce(lanlink::chrono::Utc::now(), self.network, a).await.map_err(refused)
///     }
///     async fn redeem(&self, r: &RedeemRequest) -> Result<RedeemReply, TransportError> {
///         let now = lanlink::chrono::Utc::now();
///         let done = self.server.redeem(now, &mut lanlink::os_rng(), self.network, r).await;
///         done.map(|d| d.reply).map_err(refused)
///     }
/// }
/// ```
#[async_trait]
pub trait AgentServerTransport: Send + Sync {
    /// Sends an announcement; the reply carries queued messages and the next poll delay.
    ///
    /// ```
    /// # use lanlink::transport::{AgentServerTransport, LinkerServerTransport, TransportError};
    /// # use lanlink::wire::{Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemReply, RedeemRequest};
    /// # use lanlink::server::{Server, ServerConfig, User};
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork, Refusal};
    /// # struct InProcess { server: Server, network: PublicNetwork, user: User }
    /// # fn refused(r: Refusal) -> TransportError { TransportError::Refused { status: r.status(), code: r.code() } }
    /// # #[lanlink::async_trait]
    /// # impl AgentServerTransport for InProcess {
    /// #     async fn announce(&self, a: &Announce) -> Result<AnnounceReply, TransportError> {
    /// #         self.server.announce(lanlink::chrono::Utc::now(), self.network, a).await.map_err(refused)
    /// #     }
    /// #     async fn redeem(&self, r: &RedeemRequest) -> Result<RedeemReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let done = self.server.redeem(lanlink::chrono::Utc::now(), &mut rng, self.network, r).await;
    /// #         done.map(|d| d.reply).map_err(refused)
    /// #     }
    /// # }
    /// # #[lanlink::async_trait]
    /// # impl LinkerServerTransport for InProcess {
    /// #     async fn discover(&self) -> Result<DiscoverReply, TransportError> {
    /// #         self.server.discover(lanlink::chrono::Utc::now(), self.network, &self.user).await.map_err(refused)
    /// #     }
    /// #     async fn link(&self, request: &LinkRequest) -> Result<LinkStatusReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link(now, &mut rng, self.network, &self.user, request.clone()).await.map_err(refused)
    /// #     }
    /// #     async fn link_status(&self, id: &InstanceId) -> Result<LinkStatusReply, TransportError> {
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link_status(now, self.network, &self.user.account, id).await.map_err(refused)
    /// #     }
    /// #     async fn mint_code(&self) -> Result<CodeReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         self.server.mint_code(lanlink::chrono::Utc::now(), &mut rng, &self.user.account).await.map_err(refused)
    /// #     }
    /// # }
    /// # let mut fut = std::pin::pin!(async {
    /// # let transport = InProcess { server: Server::new(ServerConfig::default()).unwrap(),
    /// #     network: PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
    /// #     user: User::new(AccountId::new("alice").unwrap()) };
    /// # use lanlink::{secret::PresenceKey, LocalSecret};
    /// # let key = PresenceKey::from_bytes([1; 32]);
    /// # let id = key.instance_id();
    /// # let secret = LocalSecret::from_bytes([2; 32]);
    /// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), key);
    /// let reply = transport.announce(&announce).await.unwrap();
    /// assert!(reply.messages.is_empty());
    /// assert_eq!(reply.poll_after_ms, 2000);
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn announce(&self, announce: &Announce) -> Result<AnnounceReply, TransportError>;
    /// Redeems a code for an auth token.
    ///
    /// ```
    /// # use lanlink::transport::{AgentServerTransport, LinkerServerTransport, TransportError};
    /// # use lanlink::wire::{Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemReply, RedeemRequest};
    /// # use lanlink::server::{Server, ServerConfig, User};
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork, Refusal};
    /// # struct InProcess { server: Server, network: PublicNetwork, user: User }
    /// # fn refused(r: Refusal) -> TransportError { TransportError::Refused { status: r.status(), code: r.code() } }
    /// # #[lanlink::async_trait]
    /// # impl AgentServerTransport for InProcess {
    /// #     async fn announce(&self, a: &Announce) -> Result<AnnounceReply, TransportError> {
    /// #         self.server.announce(lanlink::chrono::Utc::now(), self.network, a).await.map_err(refused)
    /// #     }
    /// #     async fn redeem(&self, r: &RedeemRequest) -> Result<RedeemReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let done = self.server.redeem(lanlink::chrono::Utc::now(), &mut rng, self.network, r).await;
    /// #         done.map(|d| d.reply).map_err(refused)
    /// #     }
    /// # }
    /// # #[lanlink::async_trait]
    /// # impl LinkerServerTransport for InProcess {
    /// #     async fn discover(&self) -> Result<DiscoverReply, TransportError> {
    /// #         self.server.discover(lanlink::chrono::Utc::now(), self.network, &self.user).await.map_err(refused)
    /// #     }
    /// #     async fn link(&self, request: &LinkRequest) -> Result<LinkStatusReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link(now, &mut rng, self.network, &self.user, request.clone()).await.map_err(refused)
    /// #     }
    /// #     async fn link_status(&self, id: &InstanceId) -> Result<LinkStatusReply, TransportError> {
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link_status(now, self.network, &self.user.account, id).await.map_err(refused)
    /// #     }
    /// #     async fn mint_code(&self) -> Result<CodeReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         self.server.mint_code(lanlink::chrono::Utc::now(), &mut rng, &self.user.account).await.map_err(refused)
    /// #     }
    /// # }
    /// # let mut fut = std::pin::pin!(async {
    /// # let transport = InProcess { server: Server::new(ServerConfig::default()).unwrap(),
    /// #     network: PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
    /// #     user: User::new(AccountId::new("alice").unwrap()) };
    /// let request = RedeemRequest::new(InstanceId::from_bytes([7; 16]), lanlink::LinkCode::parse("000000").unwrap());
    /// let err = transport.redeem(&request).await.unwrap_err();
    /// assert_eq!(err.refused_code(), Some(lanlink::WireCode::InvalidCode));
    /// assert!(!err.is_retryable());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn redeem(&self, request: &RedeemRequest) -> Result<RedeemReply, TransportError>;
}

/// The linker's channel to the server (authenticated as the user by the implementation).
///
/// ```
/// # use lanlink::transport::{AgentServerTransport, LinkerServerTransport, TransportError};
/// # use lanlink::wire::{Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemReply, RedeemRequest};
/// # use lanlink::server::{Server, ServerConfig, User};
/// # use lanlink::{AccountId, InstanceId, PublicNetwork, Refusal};
/// # struct InProcess { server: Server, network: PublicNetwork, user: User }
/// # fn refused(r: Refusal) -> TransportError { TransportError::Refused { status: r.status(), code: r.code() } }
/// # #[lanlink::async_trait]
/// # impl AgentServerTransport for InProcess {
/// #     async fn announce(&self, a: &Announce) -> Result<AnnounceReply, TransportError> {
/// #         self.server.announce(lanlink::chrono::Utc::now(), self.network, a).await.map_err(refused)
/// #     }
/// #     async fn redeem(&self, r: &RedeemRequest) -> Result<RedeemReply, TransportError> {
/// #         let mut rng = lanlink::os_rng();
/// #         let done = self.server.redeem(lanlink::chrono::Utc::now(), &mut rng, self.network, r).await;
/// #         done.map(|d| d.reply).map_err(refused)
/// #     }
/// # }
/// # #[lanlink::async_trait]
/// # impl LinkerServerTransport for InProcess {
/// #     async fn discover(&self) -> Result<DiscoverReply, TransportError> {
/// #         self.server.discover(lanlink::chrono::Utc::now(), self.network, &self.user).await.map_err(refused)
/// #     }
/// #     async fn link(&self, request: &LinkRequest) -> Result<LinkStatusReply, TransportError> {
/// #         let mut rng = lanlink::os_rng();
/// #         let now = lanlink::chrono::Utc::now();
/// #         self.server.link(now, &mut rng, self.network, &self.user, request.clone()).await.map_err(refused)
/// #     }
/// #     async fn link_status(&self, id: &InstanceId) -> Result<LinkStatusReply, TransportError> {
/// #         let now = lanlink::chrono::Utc::now();
/// #         self.server.link_status(now, self.network, &self.user.account, id).await.map_err(refused)
/// #     }
/// #     async fn mint_code(&self) -> Result<CodeReply, TransportError> {
/// #         let mut rng = lanlink::os_rng();
/// #         self.server.mint_code(lanlink::chrono::Utc::now(), &mut rng, &self.user.account).await.map_err(refused)
/// #     }
/// # }
/// # let mut fut = std::pin::pin!(async {
/// # let transport = InProcess { server: Server::new(ServerConfig::default()).unwrap(),
/// #     network: PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
/// #     user: User::new(AccountId::new("alice").unwrap()) };
/// // The linker's calls, as any implementation answers them.
/// let shown = transport.discover().await.unwrap();
/// assert!(shown.agents.is_empty());
/// let code = transport.mint_code().await.unwrap();
/// assert_eq!(code.code.expose().len(), 6);
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[async_trait]
pub trait LinkerServerTransport: Send + Sync {
    /// Lists the discoverable agents of the caller's network.
    ///
    /// ```
    /// # use lanlink::transport::{AgentServerTransport, LinkerServerTransport, TransportError};
    /// # use lanlink::wire::{Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemReply, RedeemRequest};
    /// # use lanlink::server::{Server, ServerConfig, User};
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork, Refusal};
    /// # struct InProcess { server: Server, network: PublicNetwork, user: User }
    /// # fn refused(r: Refusal) -> TransportError { TransportError::Refused { status: r.status(), code: r.code() } }
    /// # #[lanlink::async_trait]
    /// # impl AgentServerTransport for InProcess {
    /// #     async fn announce(&self, a: &Announce) -> Result<AnnounceReply, TransportError> {
    /// #         self.server.announce(lanlink::chrono::Utc::now(), self.network, a).await.map_err(refused)
    /// #     }
    /// #     async fn redeem(&self, r: &RedeemRequest) -> Result<RedeemReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let done = self.server.redeem(lanlink::chrono::Utc::now(), &mut rng, self.network, r).await;
    /// #         done.map(|d| d.reply).map_err(refused)
    /// #     }
    /// # }
    /// # #[lanlink::async_trait]
    /// # impl LinkerServerTransport for InProcess {
    /// #     async fn discover(&self) -> Result<DiscoverReply, TransportError> {
    /// #         self.server.discover(lanlink::chrono::Utc::now(), self.network, &self.user).await.map_err(refused)
    /// #     }
    /// #     async fn link(&self, request: &LinkRequest) -> Result<LinkStatusReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link(now, &mut rng, self.network, &self.user, request.clone()).await.map_err(refused)
    /// #     }
    /// #     async fn link_status(&self, id: &InstanceId) -> Result<LinkStatusReply, TransportError> {
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link_status(now, self.network, &self.user.account, id).await.map_err(refused)
    /// #     }
    /// #     async fn mint_code(&self) -> Result<CodeReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         self.server.mint_code(lanlink::chrono::Utc::now(), &mut rng, &self.user.account).await.map_err(refused)
    /// #     }
    /// # }
    /// # let mut fut = std::pin::pin!(async {
    /// # let transport = InProcess { server: Server::new(ServerConfig::default()).unwrap(),
    /// #     network: PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
    /// #     user: User::new(AccountId::new("alice").unwrap()) };
    /// # use lanlink::{secret::PresenceKey, LocalSecret};
    /// # let key = PresenceKey::from_bytes([1; 32]);
    /// # let id = key.instance_id();
    /// # let secret = LocalSecret::from_bytes([2; 32]);
    /// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), key);
    /// transport.announce(&announce).await.unwrap();
    /// let reply = transport.discover().await.unwrap();
    /// assert_eq!(reply.agents[0].instance_id, id);
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn discover(&self) -> Result<DiscoverReply, TransportError>;
    /// Asks to link an agent.
    ///
    /// ```
    /// # use lanlink::transport::{AgentServerTransport, LinkerServerTransport, TransportError};
    /// # use lanlink::wire::{Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemReply, RedeemRequest};
    /// # use lanlink::server::{Server, ServerConfig, User};
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork, Refusal};
    /// # struct InProcess { server: Server, network: PublicNetwork, user: User }
    /// # fn refused(r: Refusal) -> TransportError { TransportError::Refused { status: r.status(), code: r.code() } }
    /// # #[lanlink::async_trait]
    /// # impl AgentServerTransport for InProcess {
    /// #     async fn announce(&self, a: &Announce) -> Result<AnnounceReply, TransportError> {
    /// #         self.server.announce(lanlink::chrono::Utc::now(), self.network, a).await.map_err(refused)
    /// #     }
    /// #     async fn redeem(&self, r: &RedeemRequest) -> Result<RedeemReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let done = self.server.redeem(lanlink::chrono::Utc::now(), &mut rng, self.network, r).await;
    /// #         done.map(|d| d.reply).map_err(refused)
    /// #     }
    /// # }
    /// # #[lanlink::async_trait]
    /// # impl LinkerServerTransport for InProcess {
    /// #     async fn discover(&self) -> Result<DiscoverReply, TransportError> {
    /// #         self.server.discover(lanlink::chrono::Utc::now(), self.network, &self.user).await.map_err(refused)
    /// #     }
    /// #     async fn link(&self, request: &LinkRequest) -> Result<LinkStatusReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link(now, &mut rng, self.network, &self.user, request.clone()).await.map_err(refused)
    /// #     }
    /// #     async fn link_status(&self, id: &InstanceId) -> Result<LinkStatusReply, TransportError> {
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link_status(now, self.network, &self.user.account, id).await.map_err(refused)
    /// #     }
    /// #     async fn mint_code(&self) -> Result<CodeReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         self.server.mint_code(lanlink::chrono::Utc::now(), &mut rng, &self.user.account).await.map_err(refused)
    /// #     }
    /// # }
    /// # let mut fut = std::pin::pin!(async {
    /// # let transport = InProcess { server: Server::new(ServerConfig::default()).unwrap(),
    /// #     network: PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
    /// #     user: User::new(AccountId::new("alice").unwrap()) };
    /// # use lanlink::{secret::PresenceKey, LocalSecret};
    /// # let key = PresenceKey::from_bytes([1; 32]);
    /// # let id = key.instance_id();
    /// # let secret = LocalSecret::from_bytes([2; 32]);
    /// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), key);
    /// transport.announce(&announce).await.unwrap();
    /// let reply = transport.link(&LinkRequest::new(id, secret)).await.unwrap();
    /// assert_eq!(reply.state, lanlink::wire::LinkState::Pending);
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn link(&self, request: &LinkRequest) -> Result<LinkStatusReply, TransportError>;
    /// Reads a link's state.
    ///
    /// ```
    /// # use lanlink::transport::{AgentServerTransport, LinkerServerTransport, TransportError};
    /// # use lanlink::wire::{Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemReply, RedeemRequest};
    /// # use lanlink::server::{Server, ServerConfig, User};
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork, Refusal};
    /// # struct InProcess { server: Server, network: PublicNetwork, user: User }
    /// # fn refused(r: Refusal) -> TransportError { TransportError::Refused { status: r.status(), code: r.code() } }
    /// # #[lanlink::async_trait]
    /// # impl AgentServerTransport for InProcess {
    /// #     async fn announce(&self, a: &Announce) -> Result<AnnounceReply, TransportError> {
    /// #         self.server.announce(lanlink::chrono::Utc::now(), self.network, a).await.map_err(refused)
    /// #     }
    /// #     async fn redeem(&self, r: &RedeemRequest) -> Result<RedeemReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let done = self.server.redeem(lanlink::chrono::Utc::now(), &mut rng, self.network, r).await;
    /// #         done.map(|d| d.reply).map_err(refused)
    /// #     }
    /// # }
    /// # #[lanlink::async_trait]
    /// # impl LinkerServerTransport for InProcess {
    /// #     async fn discover(&self) -> Result<DiscoverReply, TransportError> {
    /// #         self.server.discover(lanlink::chrono::Utc::now(), self.network, &self.user).await.map_err(refused)
    /// #     }
    /// #     async fn link(&self, request: &LinkRequest) -> Result<LinkStatusReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link(now, &mut rng, self.network, &self.user, request.clone()).await.map_err(refused)
    /// #     }
    /// #     async fn link_status(&self, id: &InstanceId) -> Result<LinkStatusReply, TransportError> {
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link_status(now, self.network, &self.user.account, id).await.map_err(refused)
    /// #     }
    /// #     async fn mint_code(&self) -> Result<CodeReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         self.server.mint_code(lanlink::chrono::Utc::now(), &mut rng, &self.user.account).await.map_err(refused)
    /// #     }
    /// # }
    /// # let mut fut = std::pin::pin!(async {
    /// # let transport = InProcess { server: Server::new(ServerConfig::default()).unwrap(),
    /// #     network: PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
    /// #     user: User::new(AccountId::new("alice").unwrap()) };
    /// let reply = transport.link_status(&InstanceId::from_bytes([7; 16])).await.unwrap();
    /// assert_eq!(reply.state, lanlink::wire::LinkState::Unknown);
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn link_status(
        &self,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, TransportError>;
    /// Reads a link's state, asking the server to hold the request for up to `hold` while the
    /// link is on its way (revision 1.6, `GET {prefix}/link/{instance_id}?hold_ms=N`): the
    /// server answers when the state moves or the hold ends, so the request must be given
    /// `hold` beyond its usual timeout. A server before 1.6, or one that grants no hold,
    /// answers at once, as [`link_status`](Self::link_status) does.
    ///
    /// The default calls [`link_status`](Self::link_status) (no hold asked: a transport
    /// written before revision 1.6 keeps working, the linker then polls at its
    /// [`status_interval`](crate::linker::LinkerConfig::status_interval)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_trait::async_trait;
    /// use lanlink::transport::{LinkerServerTransport, TransportError};
    /// use lanlink::wire::{CodeReply, DiscoverReply, LinkRequest, LinkState, LinkStatusReply};
    /// use lanlink::InstanceId;
    ///
    /// /// A transport of before revision 1.6: it only knows `link_status`.
    /// struct Old;
    /// #[async_trait]
    /// impl LinkerServerTransport for Old {
    ///     async fn discover(&self) -> Result<DiscoverReply, TransportError> { Err(TransportError::Malformed) }
    ///     async fn link(&self, _: &LinkRequest) -> Result<LinkStatusReply, TransportError> { Err(TransportError::Malformed) }
    ///     async fn link_status(&self, id: &InstanceId) -> Result<LinkStatusReply, TransportError> {
    ///         Ok(LinkStatusReply::new(*id, LinkState::Pending))
    ///     }
    ///     async fn mint_code(&self) -> Result<CodeReply, TransportError> { Err(TransportError::Malformed) }
    /// }
    /// # let mut fut = std::pin::pin!(async {
    /// let id = InstanceId::from_bytes([7; 16]);
    /// let transport: &dyn LinkerServerTransport = &Old;
    /// let reply = transport.link_status_held(&id, Duration::from_secs(20)).await.unwrap();
    /// assert_eq!(reply.state, LinkState::Pending); // answered at once, without a hold
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn link_status_held(
        &self,
        instance_id: &InstanceId,
        hold: Duration,
    ) -> Result<LinkStatusReply, TransportError> {
        let _ = hold;
        self.link_status(instance_id).await
    }
    /// Mints a manual code for the user.
    ///
    /// ```
    /// # use lanlink::transport::{AgentServerTransport, LinkerServerTransport, TransportError};
    /// # use lanlink::wire::{Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemReply, RedeemRequest};
    /// # use lanlink::server::{Server, ServerConfig, User};
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork, Refusal};
    /// # struct InProcess { server: Server, network: PublicNetwork, user: User }
    /// # fn refused(r: Refusal) -> TransportError { TransportError::Refused { status: r.status(), code: r.code() } }
    /// # #[lanlink::async_trait]
    /// # impl AgentServerTransport for InProcess {
    /// #     async fn announce(&self, a: &Announce) -> Result<AnnounceReply, TransportError> {
    /// #         self.server.announce(lanlink::chrono::Utc::now(), self.network, a).await.map_err(refused)
    /// #     }
    /// #     async fn redeem(&self, r: &RedeemRequest) -> Result<RedeemReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let done = self.server.redeem(lanlink::chrono::Utc::now(), &mut rng, self.network, r).await;
    /// #         done.map(|d| d.reply).map_err(refused)
    /// #     }
    /// # }
    /// # #[lanlink::async_trait]
    /// # impl LinkerServerTransport for InProcess {
    /// #     async fn discover(&self) -> Result<DiscoverReply, TransportError> {
    /// #         self.server.discover(lanlink::chrono::Utc::now(), self.network, &self.user).await.map_err(refused)
    /// #     }
    /// #     async fn link(&self, request: &LinkRequest) -> Result<LinkStatusReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link(now, &mut rng, self.network, &self.user, request.clone()).await.map_err(refused)
    /// #     }
    /// #     async fn link_status(&self, id: &InstanceId) -> Result<LinkStatusReply, TransportError> {
    /// #         let now = lanlink::chrono::Utc::now();
    /// #         self.server.link_status(now, self.network, &self.user.account, id).await.map_err(refused)
    /// #     }
    /// #     async fn mint_code(&self) -> Result<CodeReply, TransportError> {
    /// #         let mut rng = lanlink::os_rng();
    /// #         self.server.mint_code(lanlink::chrono::Utc::now(), &mut rng, &self.user.account).await.map_err(refused)
    /// #     }
    /// # }
    /// # let mut fut = std::pin::pin!(async {
    /// # let transport = InProcess { server: Server::new(ServerConfig::default()).unwrap(),
    /// #     network: PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
    /// #     user: User::new(AccountId::new("alice").unwrap()) };
    /// let reply = transport.mint_code().await.unwrap();
    /// assert!(lanlink::CodeFormat::default().matches(&reply.code));
    /// assert!(reply.expires_at > lanlink::chrono::Utc::now());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn mint_code(&self) -> Result<CodeReply, TransportError>;
}

/// The linker's channel to an agent's local endpoint.
///
/// ```
/// use std::net::SocketAddr;
/// use std::sync::Mutex;
/// use std::time::Instant;
/// use lanlink::agent::{Agent, AgentConfig, SecretRequest};
/// use lanlink::transport::{LinkerAgentTransport, TransportError};
/// use lanlink::wire::SecretReply;
/// use lanlink::{ForwardedHeaders, InstanceId};
/// /// The agent's own check, in process, for a caller at 192.168.1.20.
/// struct Lan(Mutex<Agent>);
/// #[lanlink::async_trait]
/// impl LinkerAgentTransport for Lan {
///     async fn fetch_secret(&self, at: SocketAddr, id: &InstanceId) -> Result<SecretReply, TransportError> {
///         let (host, id) = (at.ip().to_string(), id.to_string());
///         let request = SecretRequest { peer: "192.168.1.20".parse().unwrap(),
///             forwarded: ForwardedHeaders::NONE, host: Some(&host), origin: None, instance_id: &id };
///         let answer = self.0.lock().unwrap().handle_secret_request(Instant::now(), &request);
///         answer.map_err(|r| TransportError::Refused { status: 403, code: r.code() })
///     }
/// }
/// # let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
/// # let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap();
/// # let id = agent.instance_id();
/// # let lan = Lan(Mutex::new(agent));
/// # let mut fut = std::pin::pin!(async {
/// assert!(lan.fetch_secret("192.168.1.50:8080".parse().unwrap(), &id).await.is_ok());
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[async_trait]
pub trait LinkerAgentTransport: Send + Sync {
    /// Asks the agent at `agent` for the secret of `instance_id`.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use std::sync::Mutex;
    /// # use std::time::Instant;
    /// # use lanlink::agent::{Agent, AgentConfig, SecretRequest};
    /// # use lanlink::transport::{LinkerAgentTransport, TransportError};
    /// # use lanlink::wire::SecretReply;
    /// # use lanlink::{ForwardedHeaders, InstanceId, WireCode};
    /// # struct Lan(Mutex<Agent>);
    /// # #[lanlink::async_trait]
    /// # impl LinkerAgentTransport for Lan {
    /// #     async fn fetch_secret(&self, at: SocketAddr, id: &InstanceId) -> Result<SecretReply, TransportError> {
    /// #         let (host, id) = (at.ip().to_string(), id.to_string());
    /// #         let request = SecretRequest { peer: "192.168.1.20".parse().unwrap(),
    /// #             forwarded: ForwardedHeaders::NONE, host: Some(&host), origin: None, instance_id: &id };
    /// #         let answer = self.0.lock().unwrap().handle_secret_request(Instant::now(), &request);
    /// #         answer.map_err(|r| TransportError::Refused { status: 403, code: r.code() })
    /// #     }
    /// # }
    /// # let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
    /// # let lan = Lan(Mutex::new(Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap()));
    /// # let mut fut = std::pin::pin!(async {
    /// // Asking for another instance than the agent's is refused, and says which way.
    /// let other = InstanceId::from_bytes([7; 16]);
    /// let err = lan.fetch_secret("192.168.1.50:8080".parse().unwrap(), &other).await.unwrap_err();
    /// assert_eq!(err.refused_code(), Some(WireCode::WrongInstance));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn fetch_secret(
        &self,
        agent: SocketAddr,
        instance_id: &InstanceId,
    ) -> Result<SecretReply, TransportError>;
}
