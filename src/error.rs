// (879 lines, 400 of them docs and doc examples: one concern, because it is the error model and its one table of codes; store and wire errors are in error/.)
//! Errors and refusals, split by who raises them. None may carry a secret, a code or a token, in
//! a field or in its message: errors are logged and shown.
//! It must not depend on anything above the vocabulary (wire, state machines, adapters).

use crate::addr::ClientAddrError;

pub(crate) mod store_error;
pub(crate) mod wire_error;

/// Defines [`WireCode`]'s known codes, their strings and their row of the classification table in
/// one place, so a code cannot be added without its string and its class.
macro_rules! wire_codes {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $text:literal => ($status:literal, $retryable:literal, $ends:literal, $guess:literal),
    )*) => {
        /// A refusal code as the wire carries it (`PROTOCOL.md`, "Refusals"): the collapsed,
        /// stable snake_case word of a refusal body (`{"error": "<code>"}`, over MQTT the
        /// `refused` reply's `error`), typed.
        ///
        /// It is what a client sees, and all it sees: the server's precise reason
        /// ([`Refusal`], [`Refusal::detail`]) collapses into it on purpose (every failed
        /// redemption reads [`WireCode::InvalidCode`]). A code this version does not know (from
        /// a newer peer) is [`WireCode::Unknown`], held bounded and never longer than
        /// [`UnknownCode::MAX_LEN`]; a refusal without a readable code (a proxy's page) is
        /// [`WireCode::NoCode`].
        ///
        /// Every code has one row in the classification table, [`WireCode::class`], which
        /// every classifier of the crate reads.
        ///
        /// ```
        /// use lanlink::WireCode;
        /// let code = WireCode::parse("wrong_secret").unwrap();
        /// assert_eq!(code, WireCode::WrongSecret);
        /// assert_eq!(code.as_str(), "wrong_secret");
        /// assert_eq!(code.class().status, Some(403));
        /// assert!(code.class().counts_as_guess);
        /// // A newer peer's code: kept (bounded), and it fails closed.
        /// let newer = WireCode::parse("tea_time").unwrap();
        /// assert!(matches!(newer, WireCode::Unknown(_)));
        /// assert!(newer.class().ends_discovery && !newer.class().retryable);
        /// assert_eq!(WireCode::parse("Not A Code"), None);
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum WireCode {
            $(
                $(#[$doc])*
                $variant,
            )*
            /// A well-formed code this version does not know (a newer peer's).
            Unknown(UnknownCode),
            /// The refusal carried no readable code (an empty body, a proxy's page, a code that
            /// is not snake_case): classified by its status alone (see
            /// [`TransportError::class`](crate::transport::TransportError::class)).
            NoCode,
        }

        impl WireCode {
            /// Every known code (neither [`WireCode::Unknown`] nor [`WireCode::NoCode`]), in
            /// table order.
            pub const KNOWN: &'static [WireCode] = &[$(Self::$variant,)*];

            /// The code as the wire carries it. [`WireCode::NoCode`] reads `no_code` (a word no
            /// peer sends: such a refusal had none).
            ///
            /// ```
            /// use lanlink::WireCode;
            /// assert_eq!(WireCode::TooManyAgents.as_str(), "too_many_agents");
            /// assert_eq!(WireCode::NoCode.as_str(), "no_code");
            /// assert_eq!(WireCode::parse("from_the_future").unwrap().as_str(), "from_the_future");
            /// // Every known code reads back as itself.
            /// assert!(WireCode::KNOWN.iter().all(|c| WireCode::parse(c.as_str()) == Some(*c)));
            /// ```
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Unknown(code) => code.as_str(),
                    Self::NoCode => "no_code",
                }
            }

            /// The code as a `'static` word, for this crate's own answers: every code its
            /// refusals collapse to is known (the table test checks it); an unknown code or none
            /// reads `no_code`.
            pub(crate) fn static_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Unknown(_) | Self::NoCode => "no_code",
                }
            }

            /// This crate's answer for the code: its status (from the table) and its word.
            pub(crate) fn answer(&self) -> (u16, &'static str) {
                (self.class().status.unwrap_or(500), self.static_str())
            }

            /// The code a wire word stands for: a known code, or [`WireCode::Unknown`] for a
            /// well-formed word this version does not know (1 to [`UnknownCode::MAX_LEN`] of
            /// `[a-z0-9_]`). `None` for anything else (it is never kept or echoed).
            ///
            /// ```
            /// use lanlink::WireCode;
            /// // How a client matches a refusal body's code.
            /// match WireCode::parse("locked_out") {
            ///     Some(WireCode::LockedOut) => {} // back off for the lockout's duration
            ///     other => panic!("{other:?}"),
            /// }
            /// assert_eq!(WireCode::parse(""), None);
            /// assert_eq!(WireCode::parse(&"a".repeat(33)), None, "longer than UnknownCode::MAX_LEN");
            /// ```
            pub fn parse(text: &str) -> Option<Self> {
                Some(match text {
                    $($text => Self::$variant,)*
                    other => Self::Unknown(UnknownCode::new(other)?),
                })
            }

            /// The classification table: this code's row. The only place a code is classified;
            /// [`Refusal::status`], [`Refusal::is_retryable`], [`Refusal::ends_discovery`],
            /// [`Refusal::counts_as_failure`], the HTTP adapters' statuses and
            /// [`TransportError`](crate::transport::TransportError)'s classifiers all read it.
            /// A code this version does not know fails closed (it ends discovery and is never
            /// retried); a refusal without a code is classified by its status at the client.
            ///
            /// | code | status | retryable | ends discovery | counts as a guess |
            /// | --- | --- | --- | --- | --- |
            $(
            #[doc = concat!("| `", $text, "` | ", $status, " | ", $retryable, " | ", $ends, " | ", $guess, " |")]
            )*
            /// | (unknown) | — | false | true | false |
            /// | (no code) | — | false | false | false |
            ///
            /// ```
            /// use lanlink::WireCode;
            /// let class = WireCode::StoreUnavailable.class();
            /// assert_eq!(class.status, Some(503));
            /// assert!(class.retryable && !class.ends_discovery && !class.counts_as_guess);
            /// assert!(WireCode::ForgedInstance.class().ends_discovery);
            /// assert_eq!(WireCode::NoCode.class().status, None);
            /// ```
            pub fn class(&self) -> Class {
                match self {
                    $(Self::$variant => Class {
                        status: Some($status),
                        retryable: $retryable,
                        ends_discovery: $ends,
                        counts_as_guess: $guess,
                    },)*
                    Self::Unknown(_) => Class {
                        status: None,
                        retryable: false,
                        ends_discovery: true,
                        counts_as_guess: false,
                    },
                    Self::NoCode => Class {
                        status: None,
                        retryable: false,
                        ends_discovery: false,
                        counts_as_guess: false,
                    },
                }
            }
        }
    };
}

wire_codes! {
    /// `400`: bad JSON, a wrong type, an unknown or missing field, a bad `instance_id`. From a
    /// server of this crate, also a request carrying a field newer than the server's revision.
    Malformed = "malformed" => (400, false, false, false),
    /// `400`: a device-info string too long or holding a hidden character; too many candidates.
    BadField = "bad_field" => (400, false, false, false),
    /// `400`: the announcement's protocol version is not served.
    UnsupportedVersion = "unsupported_version" => (400, false, false, false),
    /// `401`: a user route without a valid account.
    Unauthorized = "unauthorized" => (401, false, false, false),
    /// `401`: an Obico-profile agent route without a valid auth token.
    InvalidToken = "invalid_token" => (401, false, false, false),
    /// `403`: the caller's client address could not be resolved.
    UnresolvableClient = "unresolvable_client" => (403, false, false, false),
    /// `403`: the announcement does not prove its instance id.
    ForgedInstance = "forged_instance" => (403, false, true, false),
    /// `403`: an announced address is not private.
    NotPrivateIp = "not_private_ip" => (403, false, true, false),
    /// `403`: the instance announced for longer than any discovery window.
    WindowOver = "window_over" => (403, false, true, false),
    /// `403`: the secret does not match the agent's commitment.
    WrongSecret = "wrong_secret" => (403, false, false, true),
    /// `403`: the code is unknown, expired, used, or bound elsewhere (all read alike).
    InvalidCode = "invalid_code" => (403, false, false, true),
    /// `403`: the `Origin` is not allowed (at the server's state-changing user routes, and at
    /// the agent).
    BadOrigin = "bad_origin" => (403, false, false, false),
    /// `403`, at the agent: discovery is off.
    NotDiscovering = "not_discovering" => (403, false, false, false),
    /// `403`, at the agent: the discovery window has ended.
    WindowExpired = "window_expired" => (403, false, false, false),
    /// `403`, at the agent: the caller is not on the local network.
    NotLocal = "not_local" => (403, false, false, false),
    /// `403`, at the agent: `Host` is not an IP literal or an allowed name.
    BadHost = "bad_host" => (403, false, false, false),
    /// `403`, at the agent's popup page: not a top-level navigation.
    NotTopLevel = "not_top_level" => (403, false, false, false),
    /// `403`, over MQTT: not a ticket, or its MAC does not verify.
    BadTicket = "bad_ticket" => (403, false, false, false),
    /// `403`, over MQTT: the ticket has expired.
    TicketExpired = "ticket_expired" => (403, false, false, false),
    /// `403`, over MQTT: the ticket names another instance.
    TicketWrongInstance = "ticket_wrong_instance" => (403, false, false, false),
    /// `403`, over MQTT: the topic's client id is not the ticket instance's.
    WrongClient = "wrong_client" => (403, false, false, false),
    /// `404`: no fresh presence of the instance in the caller's network.
    AgentNotFound = "agent_not_found" => (404, false, false, true),
    /// `404`: no such route.
    NotFound = "not_found" => (404, false, false, false),
    /// `404`, at the agent: the instance id is not this agent's.
    WrongInstance = "wrong_instance" => (404, false, false, false),
    /// `405`: a known path asked with another method.
    MethodNotAllowed = "method_not_allowed" => (405, false, false, false),
    /// `408`: the request was not complete by the request deadline; nothing was read or changed.
    RequestTimeout = "request_timeout" => (408, true, false, false),
    /// `409`: the announcement conflicts with the recorded presence.
    PresenceConflict = "presence_conflict" => (409, false, true, false),
    /// `409`: the instance's secret was already used (or its window ran over).
    InstanceUsed = "instance_used" => (409, false, true, false),
    /// `409`: more agents are present than `max_visible`: none is linkable.
    TooManyAgents = "too_many_agents" => (409, false, false, false),
    /// `409`: the network looks shared; link with a manual code.
    SharedNetwork = "shared_network" => (409, false, false, false),
    /// `409`: the agent's presence is contested.
    AgentContested = "agent_contested" => (409, false, false, false),
    /// `409`: a link was already requested for this instance.
    AlreadyLinking = "already_linking" => (409, false, false, true),
    /// `409`: a newer attempt at this redemption was completed.
    Superseded = "superseded" => (409, false, false, false),
    /// `413`: the body is too large.
    TooLarge = "too_large" => (413, false, false, false),
    /// `415`: a state-changing user request's body is not declared `application/json`.
    UnsupportedMediaType = "unsupported_media_type" => (415, false, false, false),
    /// `429`: the caller's network is locked out after too many failures.
    LockedOut = "locked_out" => (429, false, false, false),
    /// `429`: the network already holds the most agents a record may hold.
    NetworkFull = "network_full" => (429, false, false, false),
    /// `429`: too many live manual codes.
    MintQuota = "mint_quota" => (429, false, false, false),
    /// `429`: short codes are suspended; ask for a new code.
    CodesSuspended = "codes_suspended" => (429, false, false, false),
    /// `503`: no free manual code after many draws; nothing was changed, try again later.
    CodeSpaceExhausted = "code_space_exhausted" => (503, true, false, false),
    /// `503`: the host could not record the link; the code was given back.
    LinkUnavailable = "link_unavailable" => (503, true, false, false),
    /// `503`: the shared store is unavailable; nothing was changed.
    StoreUnavailable = "store_unavailable" => (503, true, false, false),
    /// `503`: too much contention at the shared store; nothing was changed.
    StoreContention = "store_contention" => (503, true, false, false),
}

impl std::fmt::Display for WireCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for WireCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A well-formed refusal code this version does not know (a newer peer's): 1 to
/// [`UnknownCode::MAX_LEN`] of `[a-z0-9_]`, held inline (no allocation, bounded, so a peer
/// cannot put more than that into the caller's logs).
///
/// ```
/// use lanlink::{UnknownCode, WireCode};
/// let Some(WireCode::Unknown(code)) = WireCode::parse("quota_v2") else { unreachable!() };
/// assert_eq!(code.as_str(), "quota_v2");
/// assert_eq!(format!("{code:?}"), "UnknownCode(\"quota_v2\")");
/// assert!(code.as_str().len() <= UnknownCode::MAX_LEN);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownCode {
    len: u8,
    bytes: [u8; UnknownCode::MAX_LEN],
}

impl UnknownCode {
    /// The longest code kept; a longer word is no code ([`WireCode::NoCode`]).
    pub const MAX_LEN: usize = 32;

    fn new(text: &str) -> Option<Self> {
        let well_formed = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            return None;
        }
        let mut bytes = [0; Self::MAX_LEN];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(Self {
            len: u8::try_from(text.len()).ok()?,
            bytes,
        })
    }

    /// The code.
    ///
    /// ```
    /// use lanlink::WireCode;
    /// let Some(WireCode::Unknown(code)) = WireCode::parse("v9_refusal") else { unreachable!() };
    /// assert_eq!(code.as_str(), "v9_refusal");
    /// ```
    pub fn as_str(&self) -> &str {
        self.bytes
            .get(..usize::from(self.len))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl std::fmt::Debug for UnknownCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UnknownCode({:?})", self.as_str())
    }
}

/// A wire code's row of the classification table ([`WireCode::class`]).
///
/// ```
/// use lanlink::{Class, WireCode};
/// let Class { status, retryable, .. } = WireCode::RequestTimeout.class();
/// assert_eq!(status, Some(408));
/// assert!(retryable);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Class {
    /// The HTTP-style status this crate's server answers the code with (the MQTT `refused`
    /// reply carries the same); `None` for a code it never sends (unknown, or none). The Obico
    /// profile answers a few codes otherwise (see `obico::endpoint::status_of`).
    pub status: Option<u16>,
    /// Whether the same request may succeed later unchanged (nothing was changed at the
    /// server): the drivers retry it with back-off, the agent sends its redemption again.
    pub retryable: bool,
    /// Whether an agent whose announcement got this code ends discovery (fail closed).
    pub ends_discovery: bool,
    /// Whether the server charged the refused request to the caller's guessing budgets (a
    /// failed guess at a secret, an instance or a code).
    pub counts_as_guess: bool,
}

/// A configuration value the crate will not run with. Raised by the config constructors, before
/// any protocol step.
///
/// ```
/// use lanlink::{CodeFormat, ConfigError};
/// let err = CodeFormat::new(6, "01").unwrap_err();
/// assert_eq!(err, ConfigError::CodeLength);
/// assert!(err.to_string().contains("10^6"));
/// ```
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
    /// The agent's [hold](crate::agent::AgentConfig::hold) is longer than
    /// [`MAX_HOLD`](crate::agent::MAX_HOLD) (25 s).
    #[error("the agent's hold must be at most 25 seconds")]
    Hold,
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
    DeviceInfo(#[from] self::wire_error::WireError),
    /// An allowed host name or origin is empty or malformed.
    #[error("an allowed host or origin is malformed")]
    HostOrOrigin,
    /// A mint quota is zero, or the live short codes allowed exceed a hundredth of their space.
    #[error("mint quotas must be more than zero and live codes far below the code space")]
    Quota,
}

/// Why the agent refused to hand out its secret (protocol step 5). Each condition has its own
/// variant; the agent checks them in the order listed and reports the first that fails.
///
/// ```
/// use lanlink::{ClientAddrError, SecretRefusal, WireCode};
/// let refusal = SecretRefusal::from(ClientAddrError::TooManyHops);
/// assert_eq!(refusal.code(), WireCode::UnresolvableClient);
/// assert_eq!(refusal.to_string(), "client address: too many forwarding hops");
/// assert_eq!(SecretRefusal::BadHost.code().class().status, Some(403));
/// ```
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
    /// The wire code of this refusal (its status is the code's, [`WireCode::class`]).
    ///
    /// ```
    /// use lanlink::{SecretRefusal, WireCode};
    /// assert_eq!(SecretRefusal::NotLocal.code(), WireCode::NotLocal);
    /// ```
    pub fn code(&self) -> WireCode {
        match self {
            Self::NotDiscovering => WireCode::NotDiscovering,
            Self::WindowExpired => WireCode::WindowExpired,
            Self::ClientAddr(_) => WireCode::UnresolvableClient,
            Self::NotLocal => WireCode::NotLocal,
            Self::WrongInstance => WireCode::WrongInstance,
            Self::BadHost => WireCode::BadHost,
            Self::BadOrigin => WireCode::BadOrigin,
        }
    }
}

/// Why the agent rejected a message forwarded by the server (protocol step 7). Every one of these
/// ends discovery and zeroizes the secret.
///
/// ```
/// use lanlink::VerifyFailure;
/// let failure = VerifyFailure::Late;
/// assert_eq!(failure.code(), "late");
/// assert_eq!(failure.to_string(), "the message arrived after the discovery window");
/// ```
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
///
/// ```
/// use lanlink::{Refusal, WireCode};
/// // How a host matches refusals: by variant for its own audit, by code for the wire.
/// fn advice(refusal: &Refusal) -> &'static str {
///     match refusal {
///         Refusal::LockedOut => "wait",
///         r if r.is_retryable() => "retry",
///         r if r.code() == WireCode::InvalidCode => "check the code",
///         _ => "give up",
///     }
/// }
/// assert_eq!(advice(&Refusal::CodeWrongNetwork), "check the code");
/// assert_eq!(advice(&Refusal::LinkUnavailable), "retry");
/// assert_eq!(Refusal::CodeWrongNetwork.to_string(), "invalid code");
/// ```
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
    /// The server's store failed (see [`StoreError`](crate::server::StoreError)): it could not
    /// be reached, gave an unreadable record, or too many concurrent writers held the same
    /// record for longer than its retry budget. Nothing was changed; try again later. On the
    /// wire `store_contention` for contention and `store_unavailable` otherwise; the audit
    /// ([`Refusal::detail`]) tells an unreadable record (`store_corrupt`) apart.
    #[error("{0}; try later")]
    Store(store_error::StoreError),
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
    /// The wire code this refusal collapses to: the only map from the server's internal reason
    /// to the wire. All code failures share [`WireCode::InvalidCode`], so a guesser learns nothing
    /// beyond "no"; the precise reason stays in the server's audit ([`Refusal::detail`]).
    ///
    /// ```
    /// use lanlink::{Refusal, WireCode};
    /// assert_eq!(Refusal::CodeUsed.code(), WireCode::InvalidCode);
    /// assert_eq!(Refusal::WrongSecret.code().as_str(), "wrong_secret");
    /// ```
    pub fn code(&self) -> WireCode {
        match self {
            Self::ClientAddr(_) => WireCode::UnresolvableClient,
            Self::LockedOut => WireCode::LockedOut,
            Self::NotPrivateIp => WireCode::NotPrivateIp,
            Self::ForgedInstance => WireCode::ForgedInstance,
            Self::PresenceConflict => WireCode::PresenceConflict,
            Self::NetworkFull => WireCode::NetworkFull,
            Self::InstanceUsed => WireCode::InstanceUsed,
            Self::WindowOver => WireCode::WindowOver,
            Self::AgentNotFound => WireCode::AgentNotFound,
            Self::TooManyAgents => WireCode::TooManyAgents,
            Self::SharedNetwork => WireCode::SharedNetwork,
            Self::AgentContested => WireCode::AgentContested,
            Self::AlreadyLinking => WireCode::AlreadyLinking,
            Self::WrongSecret => WireCode::WrongSecret,
            Self::UnknownCode | Self::CodeUsed | Self::CodeWrongAgent | Self::CodeWrongNetwork => {
                WireCode::InvalidCode
            }
            Self::CodeSpaceExhausted => WireCode::CodeSpaceExhausted,
            Self::MintQuota => WireCode::MintQuota,
            Self::CodesSuspended => WireCode::CodesSuspended,
            Self::Store(err) => match err {
                store_error::StoreError::Contention => WireCode::StoreContention,
                store_error::StoreError::Unavailable
                | store_error::StoreError::Corrupt
                | store_error::StoreError::Refused => WireCode::StoreUnavailable,
            },
            Self::LinkUnavailable => WireCode::LinkUnavailable,
            Self::Superseded => WireCode::Superseded,
            Self::BadOrigin => WireCode::BadOrigin,
            Self::UnsupportedMediaType => WireCode::UnsupportedMediaType,
        }
    }

    /// The precise internal reason, a stable snake_case word for the server's audit log (the
    /// [`ServerEvent::Refused`](crate::event::ServerEvent::Refused) event's `detail`), never
    /// sent on the wire: an operator tells a replayed code (`code_used`) from a wrong guess
    /// (`unknown_code`) where the wire says `invalid_code` for both.
    ///
    /// ```
    /// use lanlink::Refusal;
    /// assert_eq!(Refusal::CodeUsed.detail(), "code_used");
    /// assert_eq!(Refusal::UnknownCode.detail(), "unknown_code");
    /// assert_eq!(Refusal::CodeUsed.code().as_str(), "invalid_code");
    /// ```
    pub fn detail(&self) -> &'static str {
        match self {
            Self::ClientAddr(err) => match err {
                ClientAddrError::MissingForwarded => "client_missing_forwarded",
                ClientAddrError::UnparsableHop => "client_unparsable_hop",
                ClientAddrError::OnlyTrustedHops => "client_only_trusted_hops",
                ClientAddrError::TooManyHops => "client_too_many_hops",
                ClientAddrError::AmbiguousHeaders => "client_ambiguous_headers",
            },
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
            Self::UnknownCode => "unknown_code",
            Self::CodeUsed => "code_used",
            Self::CodeWrongAgent => "code_wrong_agent",
            Self::CodeWrongNetwork => "code_wrong_network",
            Self::CodeSpaceExhausted => "code_space_exhausted",
            Self::MintQuota => "mint_quota",
            Self::CodesSuspended => "codes_suspended",
            Self::Store(err) => match err {
                store_error::StoreError::Unavailable => "store_unavailable",
                store_error::StoreError::Contention => "store_contention",
                store_error::StoreError::Corrupt => "store_corrupt",
                store_error::StoreError::Refused => "store_refused",
            },
            Self::LinkUnavailable => "link_unavailable",
            Self::Superseded => "superseded",
            Self::BadOrigin => "bad_origin",
            Self::UnsupportedMediaType => "unsupported_media_type",
        }
    }

    /// This refusal's row of the classification table: its wire code's
    /// ([`WireCode::class`]).
    ///
    /// ```
    /// use lanlink::{Refusal, WireCode};
    /// assert_eq!(Refusal::CodeUsed.class(), WireCode::InvalidCode.class());
    /// assert_eq!(Refusal::TooManyAgents.class().status, Some(409));
    /// ```
    pub fn class(&self) -> Class {
        self.code().class()
    }

    /// Whether an agent whose announcement got this refusal should end discovery (fail closed):
    /// its instance is contested, used or overdue, or its address is not private. Read from the
    /// table ([`WireCode::class`]).
    ///
    /// ```
    /// use lanlink::Refusal;
    /// assert!(Refusal::ForgedInstance.ends_discovery());
    /// assert!(Refusal::InstanceUsed.ends_discovery());
    /// assert!(!Refusal::LockedOut.ends_discovery());
    /// ```
    pub fn ends_discovery(&self) -> bool {
        self.class().ends_discovery
    }

    /// The HTTP status of this refusal on every stack (`PROTOCOL.md`, "Refusals"), read from the
    /// table ([`WireCode::class`]): the axum adapter's `http::status_of` and
    /// [`server::endpoint`](crate::server::endpoint) both read it, so a host on another HTTP
    /// library never has to map refusals itself.
    ///
    /// ```
    /// use lanlink::Refusal;
    /// assert_eq!(Refusal::LockedOut.status(), 429);
    /// assert_eq!(Refusal::AgentNotFound.status(), 404);
    /// assert_eq!(Refusal::UnsupportedMediaType.status(), 415);
    /// ```
    pub fn status(&self) -> u16 {
        // Every code a refusal collapses to has a status (the table test checks it).
        self.class().status.unwrap_or(500)
    }

    /// Whether the same request may succeed later unchanged (nothing was changed), read from
    /// the table ([`WireCode::class`]): the store, the host's link hook or the code space was
    /// unavailable. An agent retries its redemption on these (until its redeem deadline).
    ///
    /// ```
    /// use lanlink::Refusal;
    /// assert!(Refusal::LinkUnavailable.is_retryable());
    /// assert!(Refusal::CodeSpaceExhausted.is_retryable());
    /// assert!(!Refusal::UnknownCode.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.class().retryable
    }

    /// Whether this refusal counts toward the caller network's lockout: every failed guess at a
    /// secret, an instance or a code does. Read from the table ([`WireCode::class`]).
    ///
    /// ```
    /// use lanlink::Refusal;
    /// assert!(Refusal::WrongSecret.counts_as_failure());
    /// assert!(Refusal::UnknownCode.counts_as_failure());
    /// assert!(!Refusal::SharedNetwork.counts_as_failure(), "not a guess");
    /// assert!(!Refusal::BadOrigin.counts_as_failure());
    /// ```
    pub fn counts_as_failure(&self) -> bool {
        self.class().counts_as_guess
    }
}

/// An agent call made in a state where it means nothing (for example entering a code after the
/// agent is linked).
///
/// ```
/// use lanlink::AgentError;
/// let err = AgentError::AlreadyLinked;
/// assert_eq!(err.to_string(), "the agent is already linked");
/// assert!(matches!(err, AgentError::AlreadyLinked));
/// ```
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
///
/// ```
/// use lanlink::LinkerError;
/// assert_eq!(LinkerError::NotDiscovered.to_string(), "that agent was not discovered");
/// assert_ne!(LinkerError::Finished, LinkerError::StaleReply);
/// ```
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

#[cfg(test)]
mod tests;
