//! Errors and refusals, split by who raises them. None carries a secret.

use crate::addr::ClientAddrError;

/// A configuration value the crate will not run with. Raised by the config constructors, before
/// any protocol step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The discovery window is zero or longer than [`crate::MAX_DISCOVERY_WINDOW`].
    #[error("the discovery window must be more than zero and at most 10 minutes")]
    DiscoveryWindow,
    /// The announce interval is zero or longer than the window.
    #[error("the announce interval must be more than zero and shorter than the window")]
    AnnounceInterval,
    /// The agent's redeem timeout is zero or longer than the longest window.
    #[error("the redeem timeout must be more than zero and at most 10 minutes")]
    RedeemTimeout,
    /// The agent's confirmation timeout is zero or longer than the longest window.
    #[error("the confirmation timeout must be more than zero and at most 10 minutes")]
    ConfirmTimeout,
    /// `presence_ttl` is less than 2.5 × `announce_interval`.
    #[error("presence_ttl must be at least 2.5 times announce_interval")]
    PresenceTtlTooShort,
    /// The IPv6 grouping prefix is not in 1..=128.
    #[error("the IPv6 grouping prefix must be between 1 and 128")]
    Ipv6Prefix,
    /// A NAT64/SIIT prefix is not /32, /40, /48, /56, /64 or /96 (RFC 6052), or overlaps the
    /// IPv4-mapped range `::ffff:0:0/96`.
    #[error("a NAT64 prefix must be /32, /40, /48, /56, /64 or /96, outside ::ffff:0:0/96")]
    Nat64Prefix,
    /// `max_visible` is zero.
    #[error("max_visible must be at least 1")]
    MaxVisible,
    /// `max_agents_per_network` is less than `max_visible` or larger than 1024.
    #[error("max_agents_per_network must be between max_visible and 1024")]
    MaxAgentsPerNetwork,
    /// The lockout threshold is zero, or a lockout duration or window is zero.
    #[error("the lockout threshold, window and duration must all be more than zero")]
    Lockout,
    /// The shared-network policy is out of range: `max_accounts` not in 1..=7, `max_subnets`
    /// zero, or its window or sticky period zero or longer than [`crate::server::MAX_TTL`].
    #[error("the shared-network policy is out of range")]
    SharedNetwork,
    /// A duration is zero or longer than [`crate::server::MAX_TTL`], or auto codes would expire
    /// before their message (`auto_code_ttl < message_ttl`).
    #[error("a time-to-live is zero or out of range")]
    Ttl,
    /// The code alphabet has fewer than 2 or more than 64 symbols, a repeat, or a non-printable one.
    #[error("the code alphabet must be 2 to 64 distinct printable ASCII characters")]
    CodeAlphabet,
    /// The code length is zero, over 64, or gives fewer than 10⁶ codes.
    #[error("the code length must give at least 10^6 codes and be at most 64 characters")]
    CodeLength,
    /// The agent's own address is not private, loopback, ULA or link-local.
    #[error("the agent's address is not a private, loopback, ULA or link-local address")]
    AgentAddress,
    /// Device info does not fit the wire limits.
    #[error("device info: {0}")]
    DeviceInfo(#[from] crate::wire::WireError),
    /// An allowed host name or origin is empty or malformed.
    #[error("an allowed host or origin is malformed")]
    HostOrOrigin,
    /// A mint quota is zero, or the live short codes allowed exceed a hundredth of their space.
    #[error("mint quotas must be more than zero and live codes far below the code space")]
    Quota,
}

/// Why the agent refused to hand out its secret (protocol step 5). Each condition has its own
/// variant; the agent checks them in the order listed and reports the first that fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretRefusal {
    /// Discovery is not running (never started, already used, failed, or linked).
    #[error("discovery is not active")]
    NotDiscovering,
    /// The discovery window has ended (discovery is now off).
    #[error("the discovery window has ended")]
    WindowExpired,
    /// The caller's address could not be resolved (see [`ClientAddrError`]).
    #[error("client address: {0}")]
    ClientAddr(#[from] ClientAddrError),
    /// The caller is not on the local network under the agent's [`crate::LocalPolicy`].
    #[error("the caller is not on the local network")]
    NotLocal,
    /// The request names another instance.
    #[error("the instance id does not match")]
    WrongInstance,
    /// `Host` is missing, or neither an IP literal nor a configured name (DNS rebinding).
    #[error("the Host header is not an IP literal or an allowed name")]
    BadHost,
    /// `Origin` is present and not in the configured set.
    #[error("the Origin is not allowed")]
    BadOrigin,
}

impl SecretRefusal {
    /// The refusal a wire code stands for (the inverse of [`SecretRefusal::code`]; every client
    /// address failure reads back as [`ClientAddrError::MissingForwarded`]).
    ///
    /// ```
    /// use lanlink::SecretRefusal;
    /// assert_eq!(SecretRefusal::from_code("not_local"), Some(SecretRefusal::NotLocal));
    /// assert_eq!(SecretRefusal::from_code("nonsense"), None);
    /// ```
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "not_discovering" => Self::NotDiscovering,
            "window_expired" => Self::WindowExpired,
            "unresolvable_client" => Self::ClientAddr(ClientAddrError::MissingForwarded),
            "not_local" => Self::NotLocal,
            "wrong_instance" => Self::WrongInstance,
            "bad_host" => Self::BadHost,
            "bad_origin" => Self::BadOrigin,
            _ => return None,
        })
    }

    /// A stable snake_case code for logs and wire bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotDiscovering => "not_discovering",
            Self::WindowExpired => "window_expired",
            Self::ClientAddr(_) => "unresolvable_client",
            Self::NotLocal => "not_local",
            Self::WrongInstance => "wrong_instance",
            Self::BadHost => "bad_host",
            Self::BadOrigin => "bad_origin",
        }
    }
}

/// Why the agent rejected a message forwarded by the server (protocol step 7). Every one of these
/// ends discovery and zeroizes the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyFailure {
    /// Discovery was not active when the message arrived.
    #[error("discovery is not active")]
    NotDiscovering,
    /// The message arrived after the window closed.
    #[error("the message arrived after the discovery window")]
    Late,
    /// The message names another instance.
    #[error("the message names another instance")]
    WrongInstance,
    /// The forwarded secret is not this agent's.
    #[error("the forwarded secret does not match")]
    WrongSecret,
    /// The message's display name is too long or holds a hidden character (revision 1.4).
    #[error("the message's display name is malformed")]
    BadDisplayName,
    /// The agent's [confirmation policy](crate::confirm::Confirmation) needs what the message
    /// lacks: a display name (any policy) or the linker's nonce (`Compare`). Sent by a server or
    /// linker older than revision 1.4.
    #[error("the message lacks what the confirmation policy needs")]
    ConfirmationUnavailable,
}

impl VerifyFailure {
    /// A stable snake_case code for logs and serialized events.
    ///
    /// ```
    /// assert_eq!(lanlink::VerifyFailure::WrongSecret.code(), "wrong_secret");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotDiscovering => "not_discovering",
            Self::Late => "late",
            Self::WrongInstance => "wrong_instance",
            Self::WrongSecret => "wrong_secret",
            Self::BadDisplayName => "bad_display_name",
            Self::ConfirmationUnavailable => "confirmation_unavailable",
        }
    }
}

/// Why the server refused a request. Refusals change no state other than the guessing budgets
/// of the caller's network, where the variant says so ([`Refusal::counts_as_failure`]; see
/// [`crate::server::budget`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The caller's client address could not be resolved.
    #[error("client address: {0}")]
    ClientAddr(#[from] ClientAddrError),
    /// The caller's public network is locked out after too many failures.
    #[error("too many failures from this network; try later")]
    LockedOut,
    /// An announcement's `private_ip` is not private, loopback, ULA or link-local.
    #[error("the announced address is not a private address")]
    NotPrivateIp,
    /// An announcement's presence key does not derive its instance id: someone other than the
    /// agent announced it.
    #[error("the announcement does not prove its instance id")]
    ForgedInstance,
    /// An announcement disagrees with the presence recorded for the same instance (another
    /// commitment): the instance is now hidden until its presence expires.
    #[error("the announcement conflicts with the recorded presence")]
    PresenceConflict,
    /// The instance's secret was already used (or its window ran over): it may not announce or
    /// link again.
    #[error("this instance id was already used")]
    InstanceUsed,
    /// The instance has announced for longer than any agent's discovery window.
    #[error("the instance has announced for longer than the discovery window")]
    WindowOver,
    /// The network already holds the most agents a record may hold.
    #[error("too many agents announce from this network")]
    NetworkFull,
    /// No fresh presence of this instance in the caller's public network.
    #[error("no such agent on this network")]
    AgentNotFound,
    /// More agents are present in this network than `max_visible`: none is linkable (fail closed).
    #[error("too many agents on this network")]
    TooManyAgents,
    /// The caller's network looks shared by several households (see
    /// [`SharedNetworkPolicy`](crate::server::SharedNetworkPolicy)): auto-discovery and links
    /// there are off for now; link with a manual code. Not a guess (never counted).
    #[error("this network looks shared; use a code")]
    SharedNetwork,
    /// The instance's presence was contested by a conflicting announcement.
    #[error("the agent's presence is contested")]
    AgentContested,
    /// A link was already requested for this instance (its secret is single-use).
    #[error("a link was already requested for this agent")]
    AlreadyLinking,
    /// The presented secret does not match the agent's commitment.
    #[error("the secret does not match")]
    WrongSecret,
    /// The code is not a live code.
    #[error("invalid code")]
    UnknownCode,
    /// The code was already redeemed.
    #[error("invalid code")]
    CodeUsed,
    /// The code is bound to another instance.
    #[error("invalid code")]
    CodeWrongAgent,
    /// The code is bound to another public network than the presenter's.
    #[error("invalid code")]
    CodeWrongNetwork,
    /// No fresh live code could be minted after many draws (the code space is crowded).
    #[error("no free code could be minted")]
    CodeSpaceExhausted,
    /// The account (or the whole service) holds as many live codes as it may: redeem or let one
    /// expire first.
    #[error("too many live codes; try later")]
    MintQuota,
    /// Too many wrong guesses at short manual codes across all networks: short codes are not
    /// checked for now. Ask for a new code (it is minted in the longer fallback format).
    #[error("short codes are suspended; ask for a new code")]
    CodesSuspended,
    /// The shared store could not be reached (or gave an unreadable record): nothing was
    /// changed; try again later.
    #[error("the store is unavailable; try later")]
    StoreUnavailable,
    /// Too many concurrent writers to the same record, for longer than the store's retry budget:
    /// nothing was changed; try again later.
    #[error("too much contention; try later")]
    StoreContention,
    /// The host service could not record the link (its
    /// [`LinkHook`](crate::server::hook::LinkHook) failed): the code was given back and nothing
    /// is linked; try again later.
    #[error("the link could not be recorded; try later")]
    LinkUnavailable,
    /// A retried redemption older than one the server already completed for the same instance:
    /// ignored (the newer attempt's token stands). Not a guess.
    #[error("a newer attempt at this redemption was completed")]
    Superseded,
    /// A state-changing user request came with an `Origin` that is not allowed: another site's
    /// page sent it (see [`crate::server::cross_site`]). Not a guess.
    #[error("the Origin is not allowed")]
    BadOrigin,
    /// A state-changing user request's body is not declared `application/json` (an HTML form or
    /// another site's page sends other types; see [`crate::server::cross_site`]). Not a guess.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
}

impl Refusal {
    /// The refusal a wire code stands for (the inverse of [`Refusal::code`], where several
    /// refusals share a code it gives one of them: `invalid_code` reads back as
    /// [`Refusal::UnknownCode`], `unresolvable_client` as a missing forwarding header).
    ///
    /// ```
    /// use lanlink::Refusal;
    /// assert_eq!(Refusal::from_code("wrong_secret"), Some(Refusal::WrongSecret));
    /// assert_eq!(Refusal::from_code(Refusal::CodeUsed.code()), Some(Refusal::UnknownCode));
    /// ```
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "unresolvable_client" => Self::ClientAddr(ClientAddrError::MissingForwarded),
            "locked_out" => Self::LockedOut,
            "not_private_ip" => Self::NotPrivateIp,
            "forged_instance" => Self::ForgedInstance,
            "presence_conflict" => Self::PresenceConflict,
            "network_full" => Self::NetworkFull,
            "instance_used" => Self::InstanceUsed,
            "window_over" => Self::WindowOver,
            "agent_not_found" => Self::AgentNotFound,
            "too_many_agents" => Self::TooManyAgents,
            "shared_network" => Self::SharedNetwork,
            "agent_contested" => Self::AgentContested,
            "already_linking" => Self::AlreadyLinking,
            "wrong_secret" => Self::WrongSecret,
            "invalid_code" => Self::UnknownCode,
            "code_space_exhausted" => Self::CodeSpaceExhausted,
            "mint_quota" => Self::MintQuota,
            "codes_suspended" => Self::CodesSuspended,
            "store_unavailable" => Self::StoreUnavailable,
            "store_contention" => Self::StoreContention,
            "link_unavailable" => Self::LinkUnavailable,
            "superseded" => Self::Superseded,
            "bad_origin" => Self::BadOrigin,
            "unsupported_media_type" => Self::UnsupportedMediaType,
            _ => return None,
        })
    }

    /// Whether an agent whose announcement got this refusal should end discovery (fail closed):
    /// its instance is contested, used or overdue, or its address is not private. Refusals that may
    /// pass (a lockout, a full network, an unresolvable address) are not terminal.
    pub fn ends_discovery(&self) -> bool {
        matches!(
            self,
            Self::ForgedInstance
                | Self::PresenceConflict
                | Self::InstanceUsed
                | Self::WindowOver
                | Self::NotPrivateIp
        )
    }

    /// The HTTP status of this refusal on every stack (`PROTOCOL.md`, "Refusals"): the axum
    /// adapter's `http::status_of` and [`server::endpoint`](crate::server::endpoint) both read
    /// it, so a host on another HTTP library never has to map refusals itself.
    ///
    /// ```
    /// use lanlink::Refusal;
    /// assert_eq!(Refusal::LockedOut.status(), 429);
    /// assert_eq!(Refusal::AgentNotFound.status(), 404);
    /// assert_eq!(Refusal::UnsupportedMediaType.status(), 415);
    /// ```
    pub fn status(&self) -> u16 {
        match self {
            Self::ClientAddr(_)
            | Self::ForgedInstance
            | Self::NotPrivateIp
            | Self::WindowOver
            | Self::WrongSecret
            | Self::UnknownCode
            | Self::CodeUsed
            | Self::CodeWrongAgent
            | Self::CodeWrongNetwork
            | Self::BadOrigin => 403,
            Self::UnsupportedMediaType => 415,
            Self::LockedOut | Self::NetworkFull | Self::MintQuota | Self::CodesSuspended => 429,
            Self::AgentNotFound => 404,
            Self::PresenceConflict
            | Self::InstanceUsed
            | Self::TooManyAgents
            | Self::SharedNetwork
            | Self::AgentContested
            | Self::AlreadyLinking
            | Self::Superseded => 409,
            Self::CodeSpaceExhausted
            | Self::StoreUnavailable
            | Self::StoreContention
            | Self::LinkUnavailable => 503,
        }
    }

    /// A stable snake_case code for logs and wire bodies. All code failures share `invalid_code`,
    /// so a guesser learns nothing beyond "no".
    pub fn code(&self) -> &'static str {
        match self {
            Self::ClientAddr(_) => "unresolvable_client",
            Self::LockedOut => "locked_out",
            Self::NotPrivateIp => "not_private_ip",
            Self::ForgedInstance => "forged_instance",
            Self::PresenceConflict => "presence_conflict",
            Self::NetworkFull => "network_full",
            Self::InstanceUsed => "instance_used",
            Self::WindowOver => "window_over",
            Self::AgentNotFound => "agent_not_found",
            Self::TooManyAgents => "too_many_agents",
            Self::SharedNetwork => "shared_network",
            Self::AgentContested => "agent_contested",
            Self::AlreadyLinking => "already_linking",
            Self::WrongSecret => "wrong_secret",
            Self::UnknownCode | Self::CodeUsed | Self::CodeWrongAgent | Self::CodeWrongNetwork => {
                "invalid_code"
            }
            Self::CodeSpaceExhausted => "code_space_exhausted",
            Self::MintQuota => "mint_quota",
            Self::CodesSuspended => "codes_suspended",
            Self::StoreUnavailable => "store_unavailable",
            Self::StoreContention => "store_contention",
            Self::LinkUnavailable => "link_unavailable",
            Self::Superseded => "superseded",
            Self::BadOrigin => "bad_origin",
            Self::UnsupportedMediaType => "unsupported_media_type",
        }
    }

    /// Whether the same request may succeed later unchanged: the server's store or the host's
    /// link hook was unavailable, and nothing was changed. An agent retries its redemption on
    /// these (until its redeem deadline); every other refusal is final.
    ///
    /// ```
    /// use lanlink::Refusal;
    /// assert!(Refusal::LinkUnavailable.is_retryable());
    /// assert!(!Refusal::UnknownCode.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::StoreUnavailable | Self::StoreContention | Self::LinkUnavailable
        )
    }

    /// Whether this refusal counts toward the caller network's lockout: every failed guess at a
    /// secret, an instance or a code does.
    pub fn counts_as_failure(&self) -> bool {
        matches!(
            self,
            Self::AgentNotFound
                | Self::AlreadyLinking
                | Self::WrongSecret
                | Self::UnknownCode
                | Self::CodeUsed
                | Self::CodeWrongAgent
                | Self::CodeWrongNetwork
        )
    }
}

/// An agent call made in a state where it means nothing (for example entering a code after the
/// agent is linked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The agent is already linked.
    #[error("the agent is already linked")]
    AlreadyLinked,
    /// A redemption is already in flight.
    #[error("a code redemption is already in progress")]
    RedeemInProgress,
    /// No redemption is in flight, so there is no reply to take.
    #[error("no code redemption is in progress")]
    NoRedeemInProgress,
    /// No link is waiting for the owner's confirmation.
    #[error("no link is waiting for confirmation")]
    NoConfirmationPending,
}

/// A linker call made in a state where it means nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkerError {
    /// The named instance was not in the last discovery result.
    #[error("that agent was not discovered")]
    NotDiscovered,
    /// The linker is not waiting for this input.
    #[error("the linker is not waiting for this input")]
    UnexpectedInput,
    /// The linker has finished (linked or failed).
    #[error("the linker has finished")]
    Finished,
    /// A reply to a request the linker has moved on from (a secret request whose time ran
    /// out, or that another endpoint's answer ended): dropped, and never credited to the
    /// request in flight.
    #[error("a reply to a request the linker has moved on from")]
    StaleReply,
}
