//! Wire messages, version 1: serde types for every message any party sends, and bounded
//! decoding.
//! Decoding must not panic or read past its bound on any bytes, and nothing here may show a secret:
//! the secret fields are redacted in `Debug`, and a decoding error names a field, never its value.
//!
//! Requests to the server and to the agent are strict (`deny_unknown_fields`); replies ignore
//! unknown fields so a newer server can add some. Secrets appear only in the three types that must
//! carry them ([`AgentMessage::VerifyAndRedeem`], [`LinkRequest`], [`SecretReply`]) and in
//! [`RedeemReply`]; [`encode`] returns a buffer that is zeroized when dropped.

use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::code::LinkCode;
use crate::confirm::ConfirmNonce;
use crate::id::InstanceId;
use crate::secret::{AuthToken, Commitment, LocalSecret, PresenceKey};

mod agent;
mod device_info;
mod revision;
pub use self::agent::{
    AgentMessage, Announce, AnnounceReply, Hidden, HiddenReason, RedeemReply, RedeemRequest,
    Visibility, MAX_HOLD_MS,
};
pub use self::device_info::DeviceInfo;
pub use crate::error::wire_error::WireError;
pub use crate::hidden::is_hidden;
#[cfg(feature = "obico-wire")]
pub(crate) use crate::hidden::sanitized;
pub use revision::{Revision, RevisionError};

/// The wire version these types implement.
pub const WIRE_VERSION: u16 = 1;

/// Largest announcement accepted or produced, in bytes of JSON.
pub const MAX_ANNOUNCE_BYTES: usize = 4096;

/// Largest body of any other message, in bytes of JSON.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The most further local endpoints an announcement may list in
/// [`candidates`](Announce::candidates) (revision 1.3); a longer list is refused at decoding
/// ([`WireError::BadField`]`("candidates")`, `400 bad_field`).
pub const MAX_CANDIDATES: usize = 8;

/// Limits on [`DeviceInfo`] fields, in bytes of UTF-8.
pub mod limits {
    /// `hostname` (a DNS name's limit).
    pub const HOSTNAME: usize = 253;
    /// `model`.
    pub const MODEL: usize = 64;
    /// `agent` (the agent software's name).
    pub const AGENT: usize = 64;
    /// `agent_version`.
    pub const AGENT_VERSION: usize = 32;
}

/// Decodes `bytes` as `T`, refusing more than `limit` bytes before parsing.
///
/// ```
/// use lanlink::wire::{decode, LinkRequest, MAX_MESSAGE_BYTES, WireError};
/// let bad = br#"{"instance_id":"x","local_secret":"00"}"#;
/// assert_eq!(decode::<LinkRequest>(bad, MAX_MESSAGE_BYTES).unwrap_err(), WireError::Malformed);
/// ```
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge { limit });
    }
    serde_json::from_slice(bytes).map_err(|err| {
        // serde_json's messages can quote the input; keep only our own field errors.
        let text = err.to_string();
        FIELD_NAMES
            .iter()
            .chain(&["candidates", "hold_ms"])
            .find_map(|name| {
                if text.starts_with(revision::UNSUPPORTED) {
                    Some(WireError::Version)
                } else if text.starts_with(&format!("bad field {name} ")) {
                    Some(WireError::BadField(name))
                } else if text.starts_with(&format!("hidden char {name} ")) {
                    Some(WireError::HiddenCharacter(name))
                } else {
                    None
                }
            })
            .unwrap_or(WireError::Malformed)
    })
}

/// Decodes an announcement: at most [`MAX_ANNOUNCE_BYTES`], version checked, fields bounded.
///
/// ```
/// # use lanlink::wire::{self, Announce, WireError};
/// # use lanlink::{secret::PresenceKey, LocalSecret};
/// # let key = PresenceKey::from_bytes([2; 32]);
/// # let id = key.instance_id();
/// let announce = Announce::new(id, "192.168.1.50".parse()?, 8080, Default::default(),
///     LocalSecret::from_bytes([1; 32]).commitment(&id), key);
/// let bytes = wire::encode(&announce);
/// assert_eq!(wire::decode_announce(&bytes)?, announce);
/// // Another version is refused.
/// let v2 = String::from_utf8(bytes.to_vec())?.replace(r#""version":1"#, r#""version":2"#);
/// assert_eq!(wire::decode_announce(v2.as_bytes()), Err(WireError::Version));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_announce(bytes: &[u8]) -> Result<Announce, WireError> {
    let announce: Announce = decode(bytes, MAX_ANNOUNCE_BYTES)?;
    if announce.version != WIRE_VERSION {
        return Err(WireError::Version);
    }
    Ok(announce)
}

/// Encodes `value` as JSON into a buffer that is zeroized when dropped.
///
/// ```
/// use lanlink::wire::{self, LinkState, LinkStatusReply, MAX_MESSAGE_BYTES};
/// let reply = LinkStatusReply::new(lanlink::InstanceId::from_bytes([7; 16]), LinkState::Linked);
/// let bytes = wire::encode(&reply);
/// assert!(std::str::from_utf8(&bytes)?.contains(r#""state":"linked""#));
/// let back: LinkStatusReply = wire::decode(&bytes, MAX_MESSAGE_BYTES)?;
/// assert_eq!(back, reply);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode<T: Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(256));
    // Cannot fail: every wire type serializes to JSON (string map keys, no non-finite floats).
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.clear();
    }
    out
}

/// The header lines of a JSON answer over HTTP, the agent's local endpoint's and the server's
/// alike: its type, and `Cache-Control: no-store` (a body may carry a secret or a token).
pub(crate) fn json_headers() -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".to_owned()),
        ("cache-control", "no-store".to_owned()),
    ]
}

const FIELD_NAMES: [&str; 4] = ["hostname", "model", "agent", "agent_version"];

/// One agent as shown to a linker.
///
/// ```
/// use lanlink::wire::DiscoveredAgent;
/// use lanlink::{DeviceInfo, InstanceId};
/// let info = DeviceInfo::new("octopi", "MK4", "", "")?;
/// let agent = DiscoveredAgent::new(InstanceId::from_bytes([7; 16]), "192.168.1.50".parse()?, 8080, info);
/// let json = serde_json::to_string(&agent)?;
/// assert!(!json.contains("candidates"), "left out when empty");
/// assert_eq!(serde_json::from_str::<DiscoveredAgent>(&json)?, agent);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DiscoveredAgent {
    /// The agent's instance id.
    pub instance_id: InstanceId,
    /// Where to fetch the secret on the LAN.
    pub private_ip: IpAddr,
    /// The local endpoint's port.
    pub port: u16,
    /// What to show the user.
    pub info: DeviceInfo,
    /// Further endpoints of the agent, to try in order after `private_ip:port` when it does not
    /// answer (revision 1.3; optional, empty when absent, left out when empty). A linker applies
    /// the same checks to each as to `private_ip` (see
    /// [`Linker`](crate::linker::Linker)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<SocketAddr>,
}

impl DiscoveredAgent {
    /// An agent at `private_ip:port` with no candidates.
    ///
    /// ```
    /// use lanlink::wire::DiscoveredAgent;
    /// let agent = DiscoveredAgent::new(lanlink::InstanceId::from_bytes([7; 16]),
    ///     "192.168.1.50".parse().unwrap(), 8080, Default::default())
    ///     .with_candidates(vec!["10.0.0.5:8080".parse().unwrap()]);
    /// assert_eq!(agent.endpoints().len(), 2);
    /// ```
    pub fn new(instance_id: InstanceId, private_ip: IpAddr, port: u16, info: DeviceInfo) -> Self {
        Self {
            instance_id,
            private_ip,
            port,
            info,
            candidates: Vec::new(),
        }
    }

    /// The same, with further endpoints (revision 1.3).
    ///
    /// ```
    /// use lanlink::wire::DiscoveredAgent;
    /// let agent = DiscoveredAgent::new(lanlink::InstanceId::from_bytes([7; 16]),
    ///     "192.168.1.50".parse()?, 8080, Default::default())
    ///     .with_candidates(vec!["192.168.1.50:8080".parse()?, "10.0.0.5:8080".parse()?]);
    /// // The repeat of the first endpoint is dropped.
    /// let expected: Vec<std::net::SocketAddr> = vec!["192.168.1.50:8080".parse()?, "10.0.0.5:8080".parse()?];
    /// assert_eq!(agent.endpoints(), expected);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_candidates(mut self, candidates: Vec<SocketAddr>) -> Self {
        self.candidates = candidates;
        self
    }

    /// Every endpoint the agent announced, in the order to try them: `private_ip:port` first,
    /// then the candidates, without repeats (revision 1.3). No address is checked here.
    ///
    /// ```
    /// use lanlink::wire::DiscoveredAgent;
    /// let agent: DiscoveredAgent = serde_json::from_str(
    ///     r#"{"instance_id":"7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90","private_ip":"172.17.0.2",
    ///         "port":5000,"info":{},"candidates":["192.168.1.20:5000","172.17.0.2:5000"]}"#,
    /// ).unwrap();
    /// let endpoints: Vec<String> = agent.endpoints().iter().map(|e| e.to_string()).collect();
    /// assert_eq!(endpoints, ["172.17.0.2:5000", "192.168.1.20:5000"]);
    /// ```
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        let mut out = Vec::with_capacity(1 + self.candidates.len());
        for endpoint in std::iter::once(SocketAddr::new(self.private_ip, self.port))
            .chain(self.candidates.iter().copied())
        {
            if !out.contains(&endpoint) {
                out.push(endpoint);
            }
        }
        out
    }
}

/// Server → linker: the discoverable agents of the linker's own network (step 4).
///
/// ```
/// use lanlink::wire::{DiscoverReply, DiscoveredAgent, MAX_MESSAGE_BYTES};
/// let agent = DiscoveredAgent::new(lanlink::InstanceId::from_bytes([7; 16]),
///     "192.168.1.50".parse()?, 8080, Default::default());
/// let reply = DiscoverReply::new(vec![agent].into());
/// let back: DiscoverReply = lanlink::wire::decode(&lanlink::wire::encode(&reply), MAX_MESSAGE_BYTES)?;
/// assert_eq!(back, reply);
/// assert_eq!(back.agents.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DiscoverReply {
    /// At most `max_visible` agents; none when more are present.
    pub agents: DiscoveredAgents,
    /// Set when agents present on the network are not shown, with why (revision 1.2): no count,
    /// no id. Absent when nothing is hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Hidden>,
    /// The server's wire revision (revision 1.5; absent from a server of 1.4 or earlier).
    /// Constructors state [`Revision::CURRENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
}

impl DiscoverReply {
    /// A reply of this revision showing `agents`, hiding nothing.
    ///
    /// ```
    /// use lanlink::wire::{DiscoverReply, HiddenReason};
    /// let reply = DiscoverReply::new(Default::default()).with_hidden(HiddenReason::SharedNetwork);
    /// assert!(reply.agents.is_empty() && reply.hidden.is_some());
    /// ```
    pub fn new(agents: DiscoveredAgents) -> Self {
        Self {
            agents,
            hidden: None,
            revision: Some(Revision::CURRENT),
        }
    }

    /// The same, saying why agents are hidden (revision 1.2).
    ///
    /// ```
    /// use lanlink::wire::{DiscoverReply, HiddenReason};
    /// let reply = DiscoverReply::new(Default::default()).with_hidden(HiddenReason::TooManyAgents);
    /// assert_eq!(reply.hidden.map(|h| h.reason), Some(HiddenReason::TooManyAgents));
    /// ```
    pub fn with_hidden(mut self, reason: HiddenReason) -> Self {
        self.hidden = Some(Hidden { reason });
        self
    }

    /// The same, stating `revision` instead (`None`: as a server before 1.5).
    ///
    /// ```
    /// use lanlink::wire::{DiscoverReply, Revision};
    /// let reply = DiscoverReply::new(Default::default());
    /// assert_eq!(reply.revision, Some(Revision::CURRENT));
    /// assert_eq!(reply.with_revision(None).revision, None);
    /// ```
    pub fn with_revision(mut self, revision: Option<Revision>) -> Self {
        self.revision = revision;
        self
    }
}

/// The agents of a [`DiscoverReply`]: a vector that holds one agent without allocating (the
/// default `max_visible` is 1, and discovery is the server's most frequent request). It
/// dereferences to a slice; build one with `.into()` from a `Vec` or `collect()`.
///
/// ```
/// use lanlink::wire::{DiscoverReply, DiscoveredAgents};
/// let reply = DiscoverReply::new(DiscoveredAgents::new());
/// assert!(reply.agents.is_empty());
/// ```
pub type DiscoveredAgents = smallvec::SmallVec<[DiscoveredAgent; 1]>;

/// Linker → agent's local endpoint: the reply carrying the secret (step 5).
///
/// ```
/// use lanlink::wire::{self, SecretReply, MAX_MESSAGE_BYTES};
/// use lanlink::LocalSecret;
/// let secret = LocalSecret::generate(&mut lanlink::os_rng());
/// let reply = SecretReply::new(secret.clone());
/// assert_eq!(format!("{reply:?}"), "SecretReply { local_secret: LocalSecret(<redacted>) }");
/// let back: SecretReply = wire::decode(&wire::encode(&reply), MAX_MESSAGE_BYTES)?;
/// assert!(back.local_secret.ct_eq(&secret));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SecretReply {
    /// The agent's secret.
    #[serde(with = "secret_hex")]
    pub local_secret: LocalSecret,
}

impl SecretReply {
    /// A reply carrying `local_secret`.
    ///
    /// ```
    /// let reply = lanlink::wire::SecretReply::new(lanlink::LocalSecret::from_bytes([1; 32]));
    /// assert_eq!(lanlink::wire::encode(&reply).len(), 83);
    /// ```
    pub fn new(local_secret: LocalSecret) -> Self {
        Self { local_secret }
    }
}

/// Linker → server: link this agent to my account (step 6).
///
/// ```
/// use lanlink::wire::{decode, LinkRequest, WireError, MAX_MESSAGE_BYTES};
/// // Requests are strict: an unknown field is refused.
/// let body = format!(r#"{{"instance_id":"{}","local_secret":"{}","extra":1}}"#,
///     lanlink::InstanceId::from_bytes([7; 16]), "ab".repeat(32));
/// assert_eq!(decode::<LinkRequest>(body.as_bytes(), MAX_MESSAGE_BYTES).unwrap_err(), WireError::Malformed);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LinkRequest {
    /// The agent to link.
    pub instance_id: InstanceId,
    /// The secret fetched from it.
    #[serde(with = "secret_hex")]
    pub local_secret: LocalSecret,
    /// A fresh nonce the linker drew for this request (revision 1.4; optional), forwarded to the
    /// agent for the [short code](crate::confirm::short_code). Requests are strict, so a 1.3
    /// server refuses it (`400 malformed`): upgrade servers before linkers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<ConfirmNonce>,
    /// The sender's wire revision (revision 1.5; optional). A client states it only once the
    /// server has stated 1.5 or later in a reply (a server before 1.5 refuses the field); absent,
    /// the sender is of revision 1.4 or earlier. Another major is refused
    /// (`400 unsupported_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
}

impl LinkRequest {
    /// A request to link `instance_id` with the secret fetched from it: no nonce, no stated
    /// revision (a 1.0 request; add them with the `with_` methods).
    ///
    /// ```
    /// use lanlink::wire::LinkRequest;
    /// use lanlink::confirm::ConfirmNonce;
    /// use lanlink::{InstanceId, LocalSecret};
    /// let request = LinkRequest::new(InstanceId::from_bytes([7; 16]), LocalSecret::from_bytes([1; 32]))
    ///     .with_nonce(ConfirmNonce::from_bytes([3; 16]));
    /// assert!(request.nonce.is_some() && request.revision.is_none());
    /// ```
    pub fn new(instance_id: InstanceId, local_secret: LocalSecret) -> Self {
        Self {
            instance_id,
            local_secret,
            nonce: None,
            revision: None,
        }
    }

    /// The same, with the linker's nonce (revision 1.4).
    ///
    /// ```
    /// use lanlink::wire::LinkRequest;
    /// use lanlink::{confirm::ConfirmNonce, InstanceId, LocalSecret};
    /// let nonce = ConfirmNonce::generate(&mut lanlink::os_rng());
    /// let request = LinkRequest::new(InstanceId::from_bytes([7; 16]), LocalSecret::from_bytes([1; 32]))
    ///     .with_nonce(nonce);
    /// assert_eq!(request.nonce, Some(nonce));
    /// ```
    pub fn with_nonce(mut self, nonce: ConfirmNonce) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// The same, stating `revision` (revision 1.5).
    ///
    /// ```
    /// use lanlink::wire::{LinkRequest, Revision};
    /// use lanlink::{InstanceId, LocalSecret};
    /// let request = LinkRequest::new(InstanceId::from_bytes([7; 16]), LocalSecret::from_bytes([1; 32]))
    ///     .with_revision(Revision::CURRENT);
    /// assert_eq!(request.revision, Some(Revision::CURRENT));
    /// ```
    pub fn with_revision(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }
}

/// The progress of a link as the requesting account sees it.
///
/// ```
/// use lanlink::wire::LinkState;
/// assert_eq!(serde_json::to_string(&LinkState::Delivered)?, r#""delivered""#);
/// assert_eq!(serde_json::from_str::<LinkState>(r#""linked""#)?, LinkState::Linked);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LinkState {
    /// Accepted; waiting for the agent's next announcement.
    Pending,
    /// Delivered to the agent; waiting for it to redeem.
    Delivered,
    /// The agent redeemed its code: linked.
    Linked,
    /// Nothing (or nothing live) is known for this account and instance.
    Unknown,
}

/// Server → linker: a link's state.
///
/// ```
/// use lanlink::wire::{LinkState, LinkStatusReply};
/// // Replies ignore unknown fields, so a newer server may add some.
/// let reply: LinkStatusReply = serde_json::from_str(
///     r#"{"instance_id":"00000000-0000-4000-8000-000000000000","state":"pending","new":true}"#)?;
/// assert_eq!(reply.state, LinkState::Pending);
/// assert_eq!(reply.display_name, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LinkStatusReply {
    /// The agent.
    pub instance_id: InstanceId,
    /// Its state.
    pub state: LinkState,
    /// The display name the server forwards to the agent with this link (revision 1.4;
    /// optional): only in the reply to `POST /link`, so that the linker can derive the same
    /// [short code](crate::confirm::short_code) as the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The server's wire revision (revision 1.5; absent from a server of 1.4 or earlier).
    /// Constructors state [`Revision::CURRENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
}

impl LinkStatusReply {
    /// A reply of this revision: `instance_id` is in `state`.
    ///
    /// ```
    /// use lanlink::wire::{LinkState, LinkStatusReply};
    /// let reply = LinkStatusReply::new(lanlink::InstanceId::from_bytes([7; 16]), LinkState::Pending)
    ///     .with_display_name("Alice".into());
    /// assert_eq!(reply.display_name.as_deref(), Some("Alice"));
    /// ```
    pub fn new(instance_id: InstanceId, state: LinkState) -> Self {
        Self {
            instance_id,
            state,
            display_name: None,
            revision: Some(Revision::CURRENT),
        }
    }

    /// The same, forwarding `display_name` (revision 1.4; the reply to `POST /link` only).
    ///
    /// ```
    /// use lanlink::wire::{LinkState, LinkStatusReply};
    /// let reply = LinkStatusReply::new(lanlink::InstanceId::from_bytes([7; 16]), LinkState::Pending);
    /// assert!(!serde_json::to_string(&reply)?.contains("display_name"));
    /// let named = reply.with_display_name("alice@example.com".into());
    /// assert!(serde_json::to_string(&named)?.contains(r#""display_name":"alice@example.com""#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_display_name(mut self, display_name: String) -> Self {
        self.display_name = Some(display_name);
        self
    }
}

/// Server → user: a manual code to type into the agent (step 9).
///
/// ```
/// use lanlink::wire::CodeReply;
/// let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// let reply = CodeReply::new(lanlink::LinkCode::parse("123456").unwrap(), at);
/// assert!(format!("{reply:?}").contains("LinkCode(<redacted>)"));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CodeReply {
    /// The code.
    #[serde(with = "code_text")]
    pub code: LinkCode,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// The server's wire revision (revision 1.5; absent from a server of 1.4 or earlier).
    /// Constructors state [`Revision::CURRENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
}

impl CodeReply {
    /// A reply of this revision carrying `code`, valid until `expires_at`.
    ///
    /// ```
    /// let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let reply = lanlink::wire::CodeReply::new(lanlink::LinkCode::parse("ABCD-2345").unwrap(), at);
    /// assert_eq!(reply.expires_at, at);
    /// ```
    pub fn new(code: LinkCode, expires_at: DateTime<Utc>) -> Self {
        Self {
            code,
            expires_at,
            revision: Some(Revision::CURRENT),
        }
    }
}

/// Any refusal: a stable snake_case code and nothing else (not even the revision: a refusal
/// carries one fact).
///
/// ```
/// use lanlink::{wire::ErrorBody, WireCode};
/// let body: ErrorBody = serde_json::from_str(r#"{"error":"locked_out"}"#)?;
/// assert_eq!(WireCode::parse(&body.error), Some(WireCode::LockedOut));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorBody {
    /// The code, e.g. `"wrong_secret"`.
    pub error: String,
}

impl ErrorBody {
    /// A refusal with the code `error`.
    ///
    /// ```
    /// let body = lanlink::wire::ErrorBody::new("wrong_secret");
    /// assert_eq!(lanlink::wire::encode(&body).as_slice(), br#"{"error":"wrong_secret"}"#);
    /// ```
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
        }
    }
}

impl Serialize for Commitment {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Commitment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Commitment::from_hex(&text).ok_or_else(|| serde::de::Error::custom("bad commitment"))
    }
}

/// Reads a string into a zeroizing buffer.
fn zeroizing_string<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
    String::deserialize(d).map(Zeroizing::new)
}

/// Serde helpers for [`LocalSecret`] fields: 64 hex characters.
pub mod secret_hex {
    use super::*;

    /// Writes the secret as hex.
    ///
    /// ```
    /// use lanlink::{wire::secret_hex, LocalSecret};
    /// let secret = LocalSecret::generate(&mut lanlink::os_rng());
    /// let value = secret_hex::serialize(&secret, serde_json::value::Serializer)?;
    /// assert_eq!(value.as_str().map(str::len), Some(64));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn serialize<S: Serializer>(secret: &LocalSecret, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&secret.to_hex())
    }

    /// Reads 64 hex characters.
    ///
    /// ```
    /// use lanlink::{wire::secret_hex, LocalSecret};
    /// let secret = secret_hex::deserialize(serde_json::json!("0a".repeat(32)))?;
    /// assert!(secret.ct_eq(&LocalSecret::from_bytes([10; 32])));
    /// assert!(secret_hex::deserialize(serde_json::json!("0a")).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LocalSecret, D::Error> {
        let text = zeroizing_string(d)?;
        LocalSecret::from_hex(&text).ok_or_else(|| serde::de::Error::custom("bad secret"))
    }
}

/// Serde helpers for [`PresenceKey`] fields: 64 hex characters.
pub mod presence_key_hex {
    use super::*;

    /// Writes the key as hex.
    ///
    /// ```
    /// use lanlink::{secret::PresenceKey, wire::presence_key_hex};
    /// let key = PresenceKey::generate(&mut lanlink::os_rng());
    /// let value = presence_key_hex::serialize(&key, serde_json::value::Serializer)?;
    /// assert!(presence_key_hex::deserialize(value)?.ct_eq(&key));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn serialize<S: Serializer>(key: &PresenceKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&key.to_hex())
    }

    /// Reads 64 hex characters.
    ///
    /// ```
    /// use lanlink::{secret::PresenceKey, wire::presence_key_hex};
    /// let key = presence_key_hex::deserialize(serde_json::json!("07".repeat(32)))?;
    /// assert!(key.ct_eq(&PresenceKey::from_bytes([7; 32])));
    /// assert!(presence_key_hex::deserialize(serde_json::json!(7)).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PresenceKey, D::Error> {
        let text = zeroizing_string(d)?;
        PresenceKey::from_hex(&text).ok_or_else(|| serde::de::Error::custom("bad presence key"))
    }
}

/// Serde helpers for optional [`PresenceKey`] fields: 64 hex characters, or absent.
pub mod presence_key_opt_hex {
    use super::*;

    /// Writes the key as hex (skip `None` with `skip_serializing_if`).
    ///
    /// ```
    /// use lanlink::{secret::PresenceKey, wire::presence_key_opt_hex};
    /// let none = presence_key_opt_hex::serialize(&None, serde_json::value::Serializer)?;
    /// assert!(none.is_null());
    /// let some = presence_key_opt_hex::serialize(&Some(PresenceKey::from_bytes([1; 32])), serde_json::value::Serializer)?;
    /// assert!(some.is_string());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn serialize<S: Serializer>(key: &Option<PresenceKey>, s: S) -> Result<S::Ok, S::Error> {
        match key {
            Some(key) => presence_key_hex::serialize(key, s),
            None => s.serialize_none(),
        }
    }

    /// Reads 64 hex characters.
    ///
    /// ```
    /// use lanlink::{secret::PresenceKey, wire::presence_key_opt_hex};
    /// let key = presence_key_opt_hex::deserialize(serde_json::json!("01".repeat(32)))?;
    /// assert!(key.is_some_and(|k| k.ct_eq(&PresenceKey::from_bytes([1; 32]))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PresenceKey>, D::Error> {
        presence_key_hex::deserialize(d).map(Some)
    }
}

/// Serde helpers for [`AuthToken`] fields: 64 hex characters.
pub mod token_hex {
    use super::*;

    /// Writes the token as hex.
    ///
    /// ```
    /// use lanlink::{wire::token_hex, AuthToken};
    /// let token = AuthToken::generate(&mut lanlink::os_rng());
    /// let value = token_hex::serialize(&token, serde_json::value::Serializer)?;
    /// assert!(token_hex::deserialize(value)?.ct_eq(&token));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn serialize<S: Serializer>(token: &AuthToken, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&token.to_hex())
    }

    /// Reads 64 hex characters.
    ///
    /// ```
    /// use lanlink::wire::token_hex;
    /// assert!(token_hex::deserialize(serde_json::json!("zz".repeat(32))).is_err());
    /// assert!(token_hex::deserialize(serde_json::json!("AB".repeat(32))).is_ok());
    /// ```
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AuthToken, D::Error> {
        let text = zeroizing_string(d)?;
        AuthToken::from_hex(&text).ok_or_else(|| serde::de::Error::custom("bad token"))
    }
}

/// Serde helpers for [`LinkCode`] fields.
pub mod code_text {
    use super::*;

    /// Writes the code.
    ///
    /// ```
    /// use lanlink::{wire::code_text, LinkCode};
    /// let code = LinkCode::parse("123456").unwrap();
    /// let value = code_text::serialize(&code, serde_json::value::Serializer)?;
    /// assert_eq!(code_text::deserialize(value)?.key(), code.key());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn serialize<S: Serializer>(code: &LinkCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(code.expose())
    }

    /// Reads a code (see [`LinkCode::parse`]).
    ///
    /// ```
    /// use lanlink::wire::code_text;
    /// assert!(code_text::deserialize(serde_json::json!("with space")).is_err());
    /// assert!(code_text::deserialize(serde_json::json!("")).is_err());
    /// assert!(code_text::deserialize(serde_json::json!("ABCD-2345")).is_ok());
    /// ```
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LinkCode, D::Error> {
        let text = zeroizing_string(d)?;
        LinkCode::parse(&text).ok_or_else(|| serde::de::Error::custom("bad code"))
    }
}

#[cfg(test)]
mod tests;
