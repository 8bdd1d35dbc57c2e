//! The Obico wire profile (feature `obico-wire`; `obico` adds its adapters): unmodified
//! OctoPrint-Obico and moonraker-obico agents link through a lanlink server, with the
//! server-side protections of the core in force.
//! It must not weaken the core's server-side protections beyond the one gap Obico's agents force
//! (the secret is forwarded unverified, below), and an Obico presence must never pass for a core
//! one.
//!
//! The Obico agents poll `POST /api/v1/octo/unlinked/` with a `device_id` (a version-4 UUID in
//! 32-hex form, new at every start), serve their secret to LAN callers at
//! `/plugin/obico/grab-discovery-secret`, compare a forwarded `{code, secret}` themselves and
//! redeem the code with `POST /api/v1/octo/verify/?code=…`. They send no commitment and no
//! presence key, so the server cannot check a secret: it forwards it unverified, as Obico does.
//! Everything else is the core's: the same public-network grouping and trusted-proxy client
//! address, the one-visible rule, lockouts, single use, code lifetimes, CSPRNG codes and tokens.
//!
//! - [`ObicoConfig`]: the profile's own settings (presence lifetime for a 5 s poller, passcodes).
//! - The server's operations are methods of [`crate::server::Server`] over any store
//!   (`obico_unlinked`, `obico_list`, `obico_link`, `obico_verify`, `obico_claim`), sans-IO like
//!   the core's.
//! - [`endpoint`]: the profile's HTTP wire as a sans-IO function ([`endpoint::handle`]): Obico's
//!   paths, JSON shapes and status codes, and every rule of its routes, for any HTTP stack (no
//!   adapter needed).
//! - `server::router` and `server::router_with_tokens` (feature `obico`): the axum routes, a
//!   thin shell over [`endpoint::handle`].
//! - [`tokens`]: the linked printers, recognised by their token's digest.
//! - `linker` (feature `obico`): a linker for Obico agents over those routes.
//!
//! How an Obico agent is represented: its presence is a core [`Presence`](crate::server::record::Presence)
//! whose `instance_id` is the `device_id` itself (both are version-4 UUIDs) and whose commitment is
//! the fixed [`unverified_commitment`](crate::server::record::unverified_commitment) mark. The
//! core's discovery never shows such a presence and no secret verifies against it; an Obico poll
//! can never refresh, move or receive the messages of a presence that was announced with a
//! presence key. `PROTOCOL.md` ("The Obico profile") lists what this keeps of Obico's wire and
//! what it refuses.

pub mod endpoint;
#[cfg(feature = "obico")]
pub mod linker;
#[cfg(feature = "obico")]
pub mod server;
pub mod tokens;

use std::net::IpAddr;
use std::time::Duration;

use chrono::TimeDelta;

use crate::code::{CodeFormat, LinkCode};
use crate::error::ConfigError;
use crate::id::InstanceId;
use crate::secret::LocalSecret;
use crate::wire::DeviceInfo;

/// OctoPrint-Obico's poll interval (moonraker-obico polls every 2 s).
pub const OCTOPRINT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The alphabet of the default one-time passcodes: digits and capitals without `0 O 1 I`.
pub const PASSCODE_ALPHABET: &str = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// The prefix under which passcodes are keyed in the code store, so that no passcode can ever be
/// looked up as a link code (the record kind is checked as well).
pub(crate) const PASSCODE_KEY_PREFIX: &str = "obico-passcode:";

/// The profile's settings. The core's [`ServerConfig`](crate::server::ServerConfig) still decides
/// the network grouping, trusted proxies, `max_visible`, lockouts and code lifetimes.
///
/// ```
/// use lanlink::obico::ObicoConfig;
/// use std::time::Duration;
/// assert!(ObicoConfig::default().validate().is_ok());
/// // Shorter than 2.5 polls of OctoPrint-Obico (5 s): the printer would flicker.
/// let short = ObicoConfig::default().presence_ttl(Duration::from_secs(6));
/// assert!(short.validate().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct ObicoConfig {
    pub(crate) presence_ttl: TimeDelta,
    pub(crate) passcode_ttl: TimeDelta,
    pub(crate) passcode_format: CodeFormat,
    pub(crate) passlink_base: String,
    pub(crate) min_poll_gap: TimeDelta,
    error: Option<ConfigError>,
}

impl Default for ObicoConfig {
    /// Presence 15 s (3 polls of OctoPrint-Obico), passcodes of 8 characters from
    /// [`PASSCODE_ALPHABET`] (40 bits) living 10 minutes, no passlink, minimum poll gap 1 s.
    fn default() -> Self {
        Self {
            presence_ttl: TimeDelta::seconds(15),
            passcode_ttl: TimeDelta::minutes(10),
            passcode_format: CodeFormat::new(8, PASSCODE_ALPHABET)
                .unwrap_or_else(|_| CodeFormat::default()),
            passlink_base: String::new(),
            min_poll_gap: TimeDelta::seconds(1),
            error: None,
        }
    }
}

impl ObicoConfig {
    /// How long a poll keeps an Obico agent present (at least 2.5 × [`OCTOPRINT_POLL_INTERVAL`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::{obico::ObicoConfig, ConfigError};
    /// assert!(ObicoConfig::default().presence_ttl(Duration::from_secs(20)).validate().is_ok());
    /// let short = ObicoConfig::default().presence_ttl(Duration::from_secs(12)); // under 2.5 × 5 s
    /// assert_eq!(short.validate(), Err(ConfigError::PresenceTtlTooShort));
    /// ```
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        match TimeDelta::from_std(ttl) {
            Ok(ttl) if ttl <= crate::server::MAX_TTL => self.presence_ttl = ttl,
            _ => self.error = self.error.or(Some(ConfigError::Ttl)),
        }
        self
    }

    /// How long a one-time passcode can be claimed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::{obico::ObicoConfig, ConfigError};
    /// assert!(ObicoConfig::default().passcode_ttl(Duration::from_secs(300)).validate().is_ok());
    /// assert_eq!(ObicoConfig::default().passcode_ttl(Duration::ZERO).validate(), Err(ConfigError::Ttl));
    /// ```
    pub fn passcode_ttl(mut self, ttl: Duration) -> Self {
        match TimeDelta::from_std(ttl) {
            Ok(ttl) if !ttl.is_zero() && ttl <= crate::server::MAX_TTL => self.passcode_ttl = ttl,
            _ => self.error = self.error.or(Some(ConfigError::Ttl)),
        }
        self
    }

    /// The shape of one-time passcodes (at least 10⁶ codes, as every [`CodeFormat`]).
    ///
    /// ```
    /// use lanlink::obico::{ObicoConfig, PASSCODE_ALPHABET};
    /// use lanlink::CodeFormat;
    /// let longer = ObicoConfig::default().passcode_format(CodeFormat::new(10, PASSCODE_ALPHABET)?);
    /// assert!(longer.validate().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn passcode_format(mut self, format: CodeFormat) -> Self {
        self.passcode_format = format;
        self
    }

    /// The base of the `one_time_passlink` handed to agents with a passcode (the passcode is
    /// appended); empty (the default) sends `""`.
    ///
    /// ```
    /// use lanlink::{obico::ObicoConfig, LinkCode};
    /// let config = ObicoConfig::default().passlink_base("https://app.example/link/");
    /// let passcode = LinkCode::parse("AB23CD45").unwrap();
    /// assert_eq!(config.passlink(&passcode), "https://app.example/link/AB23CD45");
    /// ```
    pub fn passlink_base(mut self, base: impl Into<String>) -> Self {
        self.passlink_base = base.into();
        self
    }

    /// Two polls of one `device_id` closer than this are taken for two pollers (the agents poll
    /// every 2 s or 5 s): the presence is contested (hidden, unlinkable, its message withheld)
    /// until it lapses. This makes it hard for someone on the same public network who copies a
    /// device's poll to take its message; zero turns the check off.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::{obico::ObicoConfig, ConfigError};
    /// assert!(ObicoConfig::default().min_poll_gap(Duration::ZERO).validate().is_ok(), "zero: off");
    /// // A gap as long as the presence would contest every agent.
    /// let gap = ObicoConfig::default().min_poll_gap(Duration::from_secs(15));
    /// assert_eq!(gap.validate(), Err(ConfigError::Ttl));
    /// ```
    pub fn min_poll_gap(mut self, gap: Duration) -> Self {
        match TimeDelta::from_std(gap) {
            Ok(gap) if gap <= crate::server::MAX_TTL => self.min_poll_gap = gap,
            _ => self.error = self.error.or(Some(ConfigError::Ttl)),
        }
        self
    }

    /// Checks the settings.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::{obico::ObicoConfig, ConfigError};
    /// assert_eq!(ObicoConfig::default().validate(), Ok(()));
    /// let huge = ObicoConfig::default().presence_ttl(Duration::from_secs(400 * 86_400));
    /// assert_eq!(huge.validate(), Err(ConfigError::Ttl));
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        let poll_ms = i64::try_from(OCTOPRINT_POLL_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        if self.presence_ttl.num_milliseconds().saturating_mul(2) < poll_ms.saturating_mul(5) {
            return Err(ConfigError::PresenceTtlTooShort);
        }
        if self.min_poll_gap >= self.presence_ttl {
            return Err(ConfigError::Ttl);
        }
        Ok(())
    }

    /// The passlink for `passcode` (empty without a base).
    ///
    /// ```
    /// use lanlink::{obico::ObicoConfig, LinkCode};
    /// // Without a base, the passlink is empty (the agent shows the passcode alone).
    /// assert_eq!(ObicoConfig::default().passlink(&LinkCode::parse("AB23CD45").unwrap()), "");
    /// ```
    pub fn passlink(&self, passcode: &LinkCode) -> String {
        if self.passlink_base.is_empty() {
            String::new()
        } else {
            format!("{}{}", self.passlink_base, passcode.expose())
        }
    }
}

/// One poll of `POST /api/v1/octo/unlinked/`, as the server uses it. `Debug` says whether a
/// passcode came, never which.
///
/// ```
/// use lanlink::obico::UnlinkedPoll;
/// let poll = UnlinkedPoll { device_id: lanlink::InstanceId::from_bytes([7; 16]), endpoint: None,
///     info: Default::default(), extra: Default::default(), one_time_passcode: Some("AB23CD45".into()) };
/// let shown = format!("{poll:?}");
/// assert!(shown.contains("<redacted>") && !shown.contains("AB23CD45"));
/// ```
#[derive(Clone)]
pub struct UnlinkedPoll {
    /// The agent's `device_id`.
    pub device_id: InstanceId,
    /// `host_or_ip` and `port`, when both are given and the address is an IP literal; a poll
    /// without them (or with a public address) records no presence, as Obico drops it.
    pub endpoint: Option<(IpAddr, u16)>,
    /// What to show (`hostname`, `rpi_model`, `agent`, `plugin_version`).
    pub info: DeviceInfo,
    /// What else Obico's web app shows (`os`, `arch`, `octopi_version`, `machine_type`,
    /// `printerprofile`), bounded.
    pub extra: crate::server::record::ObicoInfo,
    /// `one_time_passcode` when the request carried the field (moonraker-obico): `Some("")` asks
    /// for a passcode.
    pub one_time_passcode: Option<String>,
}

impl std::fmt::Debug for UnlinkedPoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnlinkedPoll")
            .field("device_id", &self.device_id)
            .field("endpoint", &self.endpoint)
            .field("info", &self.info)
            .field("extra", &self.extra)
            .field(
                "one_time_passcode",
                &self.one_time_passcode.as_ref().map(|code| {
                    if code.is_empty() {
                        ""
                    } else {
                        "<redacted>"
                    }
                }),
            )
            .finish()
    }
}

/// A `verify_code` message for the agent: the forwarded (unverified) secret and a code.
///
/// ```
/// use lanlink::obico::VerifyCode;
/// use lanlink::{InstanceId, LinkCode, LocalSecret};
/// let message = VerifyCode { device_id: InstanceId::from_bytes([7; 16]),
///     code: LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap(),
///     secret: LocalSecret::from_bytes([1; 32]) };
/// let shown = format!("{message:?}");
/// assert!(shown.contains("LinkCode(<redacted>)") && shown.contains("LocalSecret(<redacted>)"));
/// ```
#[derive(Debug)]
pub struct VerifyCode {
    /// The agent.
    pub device_id: InstanceId,
    /// The 128-bit code the server minted, bound to the agent's network.
    pub code: LinkCode,
    /// The secret the linker presented, forwarded for the agent to compare.
    pub secret: LocalSecret,
}

/// The passcode part of an unlinked reply.
///
/// ```
/// use lanlink::{obico::PasscodeReply, LinkCode};
/// let reply = PasscodeReply { one_time_passcode: LinkCode::parse("AB23CD45").unwrap(), verification_code: None };
/// assert!(!format!("{reply:?}").contains("AB23CD45"));
/// ```
#[derive(Debug)]
pub struct PasscodeReply {
    /// The passcode the agent should show.
    pub one_time_passcode: LinkCode,
    /// The code to redeem once a user claimed the passcode.
    pub verification_code: Option<LinkCode>,
}

/// The server's answer to one unlinked poll.
///
/// ```
/// use lanlink::obico::UnlinkedReply;
/// // The usual answer: nothing for the agent yet.
/// let reply = UnlinkedReply::default();
/// assert!(reply.message.is_none() && reply.passcode.is_none());
/// ```
#[derive(Debug, Default)]
pub struct UnlinkedReply {
    /// At most one message per poll.
    pub message: Option<VerifyCode>,
    /// Present when the poll carried `one_time_passcode`.
    pub passcode: Option<PasscodeReply>,
}

/// A successful Obico redemption (`verify`), for the route and the embedder.
#[derive(Debug)]
pub struct Verified {
    /// The token, the account and the agent (store the token's digest for the pair).
    pub redeemed: crate::server::Redeemed,
    /// When the redeemed code would have expired (Obico's `expired_at`).
    pub code_expires_at: chrono::DateTime<chrono::Utc>,
    /// The agent's hostname, when it polled from the redeeming network (a manual code
    /// redeemed by an agent that never polled has none).
    pub name: Option<String>,
}

impl From<crate::server::Redeemed> for Verified {
    fn from(redeemed: crate::server::Redeemed) -> Self {
        let name = redeemed
            .link
            .info
            .as_ref()
            .map(|info| info.hostname().to_owned())
            .filter(|hostname| !hostname.is_empty());
        Self {
            code_expires_at: redeemed.code_expires_at,
            name,
            redeemed,
        }
    }
}

/// The `device_id` of an instance: 32 lowercase hex characters.
///
/// ```
/// let id: lanlink::InstanceId = "9f0c3b5e2a7d4e1f8b6c0d2e4f6a8b0c".parse().unwrap();
/// assert_eq!(lanlink::obico::device_id(&id), "9f0c3b5e2a7d4e1f8b6c0d2e4f6a8b0c");
/// ```
pub fn device_id(id: &InstanceId) -> String {
    id.as_uuid().simple().to_string()
}

/// Parses a `device_id`: exactly 32 hex characters of a version-4 UUID (what `uuid4().hex` makes).
///
/// ```
/// use lanlink::obico::{device_id, parse_device_id};
/// let id = parse_device_id("9f0c3b5e2a7d4e1f8b6c0d2e4f6a8b0c").unwrap();
/// assert_eq!(device_id(&id), "9f0c3b5e2a7d4e1f8b6c0d2e4f6a8b0c");
/// // The hyphenated form is not a device_id, nor a version-1 UUID.
/// assert_eq!(parse_device_id(&id.to_string()), None);
/// assert_eq!(parse_device_id("c232ab00941411ecb3c89f6bdeced846"), None);
/// ```
pub fn parse_device_id(text: &str) -> Option<InstanceId> {
    if text.len() != 32 {
        return None;
    }
    text.parse().ok()
}
