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

mod revision;
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
pub fn decode_announce(bytes: &[u8]) -> Result<Announce, WireError> {
    let announce: Announce = decode(bytes, MAX_ANNOUNCE_BYTES)?;
    if announce.version != WIRE_VERSION {
        return Err(WireError::Version);
    }
    Ok(announce)
}

/// Encodes `value` as JSON into a buffer that is zeroized when dropped.
pub fn encode<T: Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(256));
    // Cannot fail: every wire type serializes to JSON (string map keys, no non-finite floats).
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.clear();
    }
    out
}

const FIELD_NAMES: [&str; 4] = ["hostname", "model", "agent", "agent_version"];

/// What the agent tells the server about the device, shown to the user in discovery. Every field
/// is bounded (see [`limits`]) and free of the characters [`is_hidden`] names (controls, bidi
/// controls, zero-width and other default-ignorable characters), so that no name renders as
/// another: `"Prusa\u{202E}4KM"` is refused, not shown as "PrusaMK4". Other non-ASCII text is
/// kept as sent (accents, CJK, single-code-point emoji); emoji sequences joined by U+200D or
/// styled by a variation selector are refused with the rest.
///
/// ```
/// use lanlink::DeviceInfo;
/// use lanlink::wire::WireError;
/// let info = DeviceInfo::new("printer.local", "Prusa MK4", "lanlink-agent", "0.1.0").unwrap();
/// assert_eq!(info.hostname(), "printer.local");
/// assert!(DeviceInfo::new("a\u{7}", "", "", "").is_err());
/// assert_eq!(
///     DeviceInfo::new("", "Prusa\u{202E}4KM", "", "").unwrap_err(),
///     WireError::HiddenCharacter("model")
/// );
/// assert!(DeviceInfo::new("imprimante-é", "打印机 🖨", "", "").is_ok());
/// ```
#[derive(Clone, Deserialize)]
#[serde(try_from = "RawDeviceInfo")]
pub struct DeviceInfo {
    /// The four fields back to back.
    text: InfoText,
    /// Where `hostname`, `model` and `agent` end in `text`.
    ends: [u16; 3],
    /// A hash of `text` and `ends`, kept inline so a server can tell an unchanged info from a
    /// changed one without reading the text.
    fingerprint: u64,
}

/// How many bytes of text a [`DeviceInfo`] holds inline. Most devices' four fields fit (an
/// OctoPrint or Klipper host's typically take 30–45 bytes); a server holding one per agent then
/// copies them into each discovery reply from the cache line it already read, rather than
/// chasing a pointer to a shared allocation. The size keeps `DeviceInfo` at 64 bytes.
const INLINE_INFO: usize = 46;

/// A [`DeviceInfo`]'s text: inline when short, else in one shared allocation (cloned without
/// copying). Which one depends only on the length, so equal texts have the same form.
#[derive(Clone)]
enum InfoText {
    Inline { len: u8, bytes: [u8; INLINE_INFO] },
    Shared(std::sync::Arc<str>),
}

impl InfoText {
    fn new(text: &str) -> Self {
        match u8::try_from(text.len()) {
            Ok(len) if text.len() <= INLINE_INFO => {
                let mut bytes = [0u8; INLINE_INFO];
                bytes[..text.len()].copy_from_slice(text.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Shared(std::sync::Arc::from(text)),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Self::Shared(text) => text.as_bytes(),
        }
    }

    /// The text in `start..end`, which were taken at char boundaries of a `str`.
    fn slice(&self, start: usize, end: usize) -> &str {
        match self {
            // Validates only the field read; cannot fail, as the bytes were copied from a `str`
            // and the bounds are char boundaries.
            Self::Inline { .. } => self
                .as_bytes()
                .get(start..end)
                .and_then(|field| std::str::from_utf8(field).ok())
                .unwrap_or_default(),
            Self::Shared(text) => text.get(start..end).unwrap_or_default(),
        }
    }
}

impl PartialEq for DeviceInfo {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
            && self.ends == other.ends
            && self.text.as_bytes() == other.text.as_bytes()
    }
}

impl Eq for DeviceInfo {}

impl std::hash::Hash for DeviceInfo {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.as_bytes().hash(state);
        self.ends.hash(state);
    }
}

impl Default for DeviceInfo {
    /// Four empty fields (equal to `DeviceInfo::new("", "", "", "")`).
    fn default() -> Self {
        Self::from_parts("", [0; 3])
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeviceInfo {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    agent_version: String,
}

impl TryFrom<RawDeviceInfo> for DeviceInfo {
    type Error = String;
    fn try_from(raw: RawDeviceInfo) -> Result<Self, String> {
        DeviceInfo::new(raw.hostname, raw.model, raw.agent, raw.agent_version).map_err(|err| {
            match err {
                WireError::BadField(name) => format!("bad field {name} "),
                WireError::HiddenCharacter(name) => format!("hidden char {name} "),
                _ => "malformed".to_owned(),
            }
        })
    }
}

impl Serialize for DeviceInfo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = serializer.serialize_struct("DeviceInfo", 4)?;
        out.serialize_field("hostname", self.hostname())?;
        out.serialize_field("model", self.model())?;
        out.serialize_field("agent", self.agent())?;
        out.serialize_field("agent_version", self.agent_version())?;
        out.end()
    }
}

impl std::fmt::Debug for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceInfo")
            .field("hostname", &self.hostname())
            .field("model", &self.model())
            .field("agent", &self.agent())
            .field("agent_version", &self.agent_version())
            .finish()
    }
}

impl DeviceInfo {
    /// Checks each field against its limit ([`WireError::BadField`]) and for characters that
    /// [`is_hidden`] refuses ([`WireError::HiddenCharacter`]).
    pub fn new(
        hostname: impl AsRef<str>,
        model: impl AsRef<str>,
        agent: impl AsRef<str>,
        agent_version: impl AsRef<str>,
    ) -> Result<Self, WireError> {
        let fields = [
            ("hostname", hostname.as_ref(), limits::HOSTNAME),
            ("model", model.as_ref(), limits::MODEL),
            ("agent", agent.as_ref(), limits::AGENT),
            (
                "agent_version",
                agent_version.as_ref(),
                limits::AGENT_VERSION,
            ),
        ];
        let mut text = String::with_capacity(fields.iter().map(|(_, v, _)| v.len()).sum());
        let mut ends = [0u16; 3];
        for (i, (name, value, limit)) in fields.into_iter().enumerate() {
            if value.len() > limit {
                return Err(WireError::BadField(name));
            }
            if value.chars().any(is_hidden) {
                return Err(WireError::HiddenCharacter(name));
            }
            text.push_str(value);
            if let Some(end) = ends.get_mut(i) {
                // Cannot overflow: the four limits add up to 413 bytes.
                *end = u16::try_from(text.len()).unwrap_or(u16::MAX);
            }
        }
        Ok(Self::from_parts(&text, ends))
    }

    /// The info of checked fields, back to back in `text`, ending at `ends`.
    fn from_parts(text: &str, ends: [u16; 3]) -> Self {
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut hasher);
            ends.hash(&mut hasher);
            hasher.finish()
        };
        Self {
            text: InfoText::new(text),
            ends,
            fingerprint,
        }
    }

    /// A 64-bit hash of the four fields (equal infos have equal fingerprints).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn field(&self, index: usize) -> &str {
        let start = match index {
            0 => 0,
            i => usize::from(self.ends[i - 1]),
        };
        let end = self
            .ends
            .get(index)
            .map_or(self.text.as_bytes().len(), |&e| usize::from(e));
        self.text.slice(start, end)
    }

    /// The device's host name.
    pub fn hostname(&self) -> &str {
        self.field(0)
    }
    /// The device model.
    pub fn model(&self) -> &str {
        self.field(1)
    }
    /// The agent software's name.
    pub fn agent(&self) -> &str {
        self.field(2)
    }
    /// The agent software's version.
    pub fn agent_version(&self) -> &str {
        self.field(3)
    }
}

/// Agent → server, every `announce_interval` during the window (protocol step 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Announce {
    /// Always [`WIRE_VERSION`].
    pub version: u16,
    /// The agent's instance id for this window.
    pub instance_id: InstanceId,
    /// The agent's address on its LAN (must be private, loopback, ULA or link-local).
    pub private_ip: IpAddr,
    /// The port of the agent's local endpoint.
    pub port: u16,
    /// What to show the user.
    pub info: DeviceInfo,
    /// `SHA-256(tag ‖ instance_id ‖ local_secret)`; the secret itself is never sent.
    pub commitment: Commitment,
    /// The agent's proof that it is `instance_id` ([`PresenceKey::instance_id`]); sent only to
    /// the server.
    #[serde(with = "presence_key_hex")]
    pub presence_key: PresenceKey,
    /// Further endpoints of the agent's local endpoint, to try in order after
    /// `private_ip:port` (revision 1.3; optional, empty when absent, and left out of the JSON
    /// when empty). At most [`MAX_CANDIDATES`] (more is refused at decoding, `400 bad_field`);
    /// each address must be private like `private_ip` (else `403 not_private_ip`). An agent
    /// builds the list with [`order_endpoints`](crate::agent::order_endpoints): other
    /// interfaces' addresses, container-internal and link-local ones last. A server before 1.3
    /// refuses the field (requests are strict): upgrade servers before agents.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "bounded_candidates"
    )]
    pub candidates: Vec<SocketAddr>,
    /// The sender's wire revision (revision 1.5; optional). A client states it only once the
    /// server has stated 1.5 or later in a reply (a server before 1.5 refuses the field); absent,
    /// the sender is of revision 1.4 or earlier. Another major is refused
    /// (`400 unsupported_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
    /// How long the agent asks the server to hold this request open when no message waits for
    /// it, in milliseconds (revision 1.6; optional, absent or `0`: answer at once). The server
    /// answers as soon as a message for the agent exists, or when the hold it grants (at most
    /// this, at most its own limit) ends, and keeps the agent present meanwhile. At most
    /// [`MAX_HOLD_MS`] (more is refused at decoding, `400 bad_field`). A client sends it only to
    /// a server that stated 1.6 or later: an older one refuses the field.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_hold"
    )]
    pub hold_ms: Option<u32>,
}

/// The longest hold an announcement may ask for, in milliseconds (revision 1.6): 25 s, short
/// enough for the proxies that cut a connection idle for 30 s or more.
pub const MAX_HOLD_MS: u32 = 25_000;

/// Reads a hold of at most [`MAX_HOLD_MS`].
fn bounded_hold<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let hold = u32::deserialize(d)?;
    if hold > MAX_HOLD_MS {
        return Err(serde::de::Error::custom("bad field hold_ms "));
    }
    Ok(Some(hold))
}

impl Announce {
    /// An announcement of [`WIRE_VERSION`] with no candidates, stating no revision (add them
    /// with [`with_candidates`](Self::with_candidates) and [`with_revision`](Self::with_revision)).
    ///
    /// ```
    /// use lanlink::wire::{Announce, Revision};
    /// use lanlink::secret::PresenceKey;
    /// use lanlink::{InstanceId, LocalSecret};
    /// let id = InstanceId::from_bytes([7; 16]);
    /// let secret = LocalSecret::from_bytes([1; 32]);
    /// let key = PresenceKey::from_bytes([2; 32]);
    /// let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(),
    ///     secret.commitment(&id), key)
    ///     .with_revision(Revision::CURRENT);
    /// assert!(announce.candidates.is_empty() && announce.revision == Some(Revision::CURRENT));
    /// ```
    pub fn new(
        instance_id: InstanceId,
        private_ip: IpAddr,
        port: u16,
        info: DeviceInfo,
        commitment: Commitment,
        presence_key: PresenceKey,
    ) -> Self {
        Self {
            version: WIRE_VERSION,
            instance_id,
            private_ip,
            port,
            info,
            commitment,
            presence_key,
            candidates: Vec::new(),
            revision: None,
            hold_ms: None,
        }
    }

    /// The same, announcing `candidates` (revision 1.3).
    pub fn with_candidates(mut self, candidates: Vec<SocketAddr>) -> Self {
        self.candidates = candidates;
        self
    }

    /// The same, asking the server to hold the request for up to `hold_ms` milliseconds while no
    /// message waits (revision 1.6; at most [`MAX_HOLD_MS`]).
    ///
    /// ```
    /// use lanlink::wire::{self, Announce};
    /// use lanlink::secret::PresenceKey;
    /// use lanlink::{InstanceId, LocalSecret};
    /// let key = PresenceKey::from_bytes([2; 32]);
    /// let id = key.instance_id();
    /// let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(),
    ///     LocalSecret::from_bytes([1; 32]).commitment(&id), key)
    ///     .with_hold(20_000);
    /// let json = String::from_utf8(wire::encode(&announce).to_vec()).unwrap();
    /// assert!(json.contains(r#""hold_ms":20000"#));
    /// // A hold over 25 s does not decode.
    /// let long = json.replace("20000", "25001");
    /// assert!(wire::decode_announce(long.as_bytes()).is_err());
    /// ```
    pub fn with_hold(mut self, hold_ms: u32) -> Self {
        self.hold_ms = Some(hold_ms);
        self
    }

    /// The same, stating `revision` (revision 1.5).
    pub fn with_revision(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }
}

/// Reads at most [`MAX_CANDIDATES`] socket addresses, refusing a longer list before reading it
/// whole.
fn bounded_candidates<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<SocketAddr>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "at most {MAX_CANDIDATES} socket addresses")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(addr) = seq.next_element::<SocketAddr>()? {
                if out.len() == MAX_CANDIDATES {
                    return Err(serde::de::Error::custom("bad field candidates "));
                }
                out.push(addr);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

/// Server → agent, the reply to an announcement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AnnounceReply {
    /// Messages queued for this instance (at most a few; usually none).
    pub messages: Vec<AgentMessage>,
    /// When the agent should announce next, in milliseconds.
    pub poll_after_ms: u64,
    /// How the server shows this agent to linkers of its network (revision 1.2; a reply
    /// without it reads as [`Visibility::Visible`]).
    #[serde(default)]
    pub visibility: Visibility,
    /// The server's wire revision (revision 1.5; absent from a server of 1.4 or earlier).
    /// Constructors state [`Revision::CURRENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
}

impl AnnounceReply {
    /// A reply of this revision carrying `messages`, asking for the next announcement in
    /// `poll_after_ms`, visible.
    ///
    /// ```
    /// use lanlink::wire::{AnnounceReply, HiddenReason, Revision, Visibility};
    /// let reply = AnnounceReply::new(Vec::new(), 2000)
    ///     .with_visibility(Visibility::Hidden(HiddenReason::TooManyAgents));
    /// assert_eq!(reply.revision, Some(Revision::CURRENT));
    /// ```
    pub fn new(messages: Vec<AgentMessage>, poll_after_ms: u64) -> Self {
        Self {
            messages,
            poll_after_ms,
            visibility: Visibility::Visible,
            revision: Some(Revision::CURRENT),
        }
    }

    /// The same, with `visibility` (revision 1.2).
    pub fn with_visibility(mut self, visibility: Visibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// The same, stating `revision` instead (`None`: as a server before 1.5).
    pub fn with_revision(mut self, revision: Option<Revision>) -> Self {
        self.revision = revision;
        self
    }
}

/// Why discovery shows no agent (or not this agent): a reason about the caller's own network
/// only, naming no agent and counting none.
///
/// ```
/// use lanlink::wire::HiddenReason;
/// let reason: HiddenReason = serde_json::from_str(r#""shared_network""#).unwrap();
/// assert_eq!(reason, HiddenReason::SharedNetwork);
/// // A reason from a newer server reads as `Other`.
/// assert_eq!(serde_json::from_str::<HiddenReason>(r#""future""#).unwrap(), HiddenReason::Other);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HiddenReason {
    /// More agents are in linking mode on the network than `max_visible`: none is shown.
    TooManyAgents,
    /// The network looks shared by several households (see
    /// [`SharedNetworkPolicy`](crate::server::SharedNetworkPolicy)): auto-discovery is off there,
    /// link with a manual code.
    SharedNetwork,
    /// The agent has announced for longer than any discovery window (agent side only).
    WindowOver,
    /// A reason this version does not know.
    #[serde(other)]
    Other,
}

impl HiddenReason {
    /// The reason's stable snake_case code.
    ///
    /// ```
    /// assert_eq!(lanlink::wire::HiddenReason::TooManyAgents.code(), "too_many_agents");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooManyAgents => "too_many_agents",
            Self::SharedNetwork => "shared_network",
            Self::WindowOver => "window_over",
            Self::Other => "other",
        }
    }
}

/// How the server shows an agent to the linkers of its network (the announce reply's
/// `visibility`): `"visible"`, or `{"hidden": reason}`.
///
/// ```
/// use lanlink::wire::{HiddenReason, Visibility};
/// assert_eq!(serde_json::to_string(&Visibility::Visible).unwrap(), r#""visible""#);
/// let hidden = Visibility::Hidden(HiddenReason::SharedNetwork);
/// assert_eq!(serde_json::to_string(&hidden).unwrap(), r#"{"hidden":"shared_network"}"#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Shown to linkers of the network.
    #[default]
    Visible,
    /// Not shown, and why.
    Hidden(HiddenReason),
}

/// Why a [`DiscoverReply`] shows no agent: `{"reason": …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hidden {
    /// Why.
    pub reason: HiddenReason,
}

/// A message the server queued for an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentMessage {
    /// A linker presented this secret; if it is the agent's, redeem `code` (protocol step 7).
    VerifyAndRedeem {
        /// The instance the message is for.
        instance_id: InstanceId,
        /// The secret the linker presented.
        #[serde(with = "secret_hex")]
        local_secret: LocalSecret,
        /// The single-use code to redeem.
        #[serde(with = "code_text")]
        code: LinkCode,
        /// The linking account's display name (revision 1.4; optional, absent from older
        /// servers), at most [`MAX_DISPLAY_NAME_LEN`](crate::confirm::MAX_DISPLAY_NAME_LEN)
        /// bytes and free of [`is_hidden`] characters: checked by the server when it builds the
        /// message and again by the agent on receipt. The only place an agent ever learns it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display_name: Option<String>,
        /// The nonce the linker sent with its link request (revision 1.4; optional), for the
        /// [short code](crate::confirm::short_code).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<ConfirmNonce>,
    },
    /// A message type this version does not know; agents ignore it.
    #[serde(other)]
    Unknown,
}

/// Agent → server: redeem a code for an auth token (steps 8 and 9).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedeemRequest {
    /// The redeeming agent.
    pub instance_id: InstanceId,
    /// The code.
    #[serde(with = "code_text")]
    pub code: LinkCode,
    /// The agent's presence key, proving it is `instance_id` (wire 1.1; optional). With it, a
    /// redemption retried after a lost reply completes the link again, with a new token, instead
    /// of being refused as a used code. Agents of this crate always send it.
    #[serde(
        default,
        with = "presence_key_opt_hex",
        skip_serializing_if = "Option::is_none"
    )]
    pub presence_key: Option<PresenceKey>,
    /// Which attempt at this redemption this is, from 1, higher on every retry (wire 1.1;
    /// optional, 0 when absent). A proven retry is completed only when it is newer than every
    /// attempt the server already completed, so a late duplicate can never replace the token of
    /// a newer one (`409 superseded`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// The sender's wire revision (revision 1.5; optional). A client states it only once the
    /// server has stated 1.5 or later in a reply (a server before 1.5 refuses the field); absent,
    /// the sender is of revision 1.4 or earlier. Another major is refused
    /// (`400 unsupported_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
}

impl RedeemRequest {
    /// A redemption of `code` by `instance_id`, with no presence key, attempt 0 and no stated
    /// revision: a 1.0 request (add the rest with the `with_` methods).
    ///
    /// ```
    /// use lanlink::wire::{RedeemRequest, Revision};
    /// use lanlink::secret::PresenceKey;
    /// use lanlink::{InstanceId, LinkCode};
    /// let request = RedeemRequest::new(InstanceId::from_bytes([7; 16]), LinkCode::parse("ABCD-2345").unwrap())
    ///     .with_presence_key(PresenceKey::from_bytes([2; 32]))
    ///     .with_attempt(1)
    ///     .with_revision(Revision::CURRENT);
    /// assert_eq!(request.attempt, 1);
    /// ```
    pub fn new(instance_id: InstanceId, code: LinkCode) -> Self {
        Self {
            instance_id,
            code,
            presence_key: None,
            attempt: 0,
            revision: None,
        }
    }

    /// The same, proving the agent with its presence key (revision 1.1).
    pub fn with_presence_key(mut self, key: PresenceKey) -> Self {
        self.presence_key = Some(key);
        self
    }

    /// The same, as attempt `attempt` (revision 1.1).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The same, stating `revision` (revision 1.5).
    pub fn with_revision(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Server → agent: the code was good.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RedeemReply {
    /// The agent's new credential.
    #[serde(with = "token_hex")]
    pub auth_token: AuthToken,
    /// The request's `attempt`, echoed (0 when it had none): an agent takes the token of its
    /// latest attempt only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// The server's wire revision (revision 1.5; absent from a server of 1.4 or earlier).
    /// Constructors state [`Revision::CURRENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
}

impl RedeemReply {
    /// A reply of this revision carrying `auth_token` for attempt `attempt`.
    ///
    /// ```
    /// use lanlink::wire::RedeemReply;
    /// let reply = RedeemReply::new(lanlink::AuthToken::from_bytes([9; 32]), 1);
    /// assert_eq!(reply.attempt, 1);
    /// ```
    pub fn new(auth_token: AuthToken, attempt: u32) -> Self {
        Self {
            auth_token,
            attempt,
            revision: Some(Revision::CURRENT),
        }
    }
}

/// One agent as shown to a linker.
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
    pub fn with_hidden(mut self, reason: HiddenReason) -> Self {
        self.hidden = Some(Hidden { reason });
        self
    }

    /// The same, stating `revision` instead (`None`: as a server before 1.5).
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
    pub fn with_nonce(mut self, nonce: ConfirmNonce) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// The same, stating `revision` (revision 1.5).
    pub fn with_revision(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }
}

/// The progress of a link as the requesting account sees it.
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
    pub fn with_display_name(mut self, display_name: String) -> Self {
        self.display_name = Some(display_name);
        self
    }
}

/// Server → user: a manual code to type into the agent (step 9).
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
    pub fn serialize<S: Serializer>(secret: &LocalSecret, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&secret.to_hex())
    }

    /// Reads 64 hex characters.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LocalSecret, D::Error> {
        let text = zeroizing_string(d)?;
        LocalSecret::from_hex(&text).ok_or_else(|| serde::de::Error::custom("bad secret"))
    }
}

/// Serde helpers for [`PresenceKey`] fields: 64 hex characters.
pub mod presence_key_hex {
    use super::*;

    /// Writes the key as hex.
    pub fn serialize<S: Serializer>(key: &PresenceKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&key.to_hex())
    }

    /// Reads 64 hex characters.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PresenceKey, D::Error> {
        let text = zeroizing_string(d)?;
        PresenceKey::from_hex(&text).ok_or_else(|| serde::de::Error::custom("bad presence key"))
    }
}

/// Serde helpers for optional [`PresenceKey`] fields: 64 hex characters, or absent.
pub mod presence_key_opt_hex {
    use super::*;

    /// Writes the key as hex (skip `None` with `skip_serializing_if`).
    pub fn serialize<S: Serializer>(key: &Option<PresenceKey>, s: S) -> Result<S::Ok, S::Error> {
        match key {
            Some(key) => presence_key_hex::serialize(key, s),
            None => s.serialize_none(),
        }
    }

    /// Reads 64 hex characters.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PresenceKey>, D::Error> {
        presence_key_hex::deserialize(d).map(Some)
    }
}

/// Serde helpers for [`AuthToken`] fields: 64 hex characters.
pub mod token_hex {
    use super::*;

    /// Writes the token as hex.
    pub fn serialize<S: Serializer>(token: &AuthToken, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&token.to_hex())
    }

    /// Reads 64 hex characters.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AuthToken, D::Error> {
        let text = zeroizing_string(d)?;
        AuthToken::from_hex(&text).ok_or_else(|| serde::de::Error::custom("bad token"))
    }
}

/// Serde helpers for [`LinkCode`] fields.
pub mod code_text {
    use super::*;

    /// Writes the code.
    pub fn serialize<S: Serializer>(code: &LinkCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(code.expose())
    }

    /// Reads a code (see [`LinkCode::parse`]).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LinkCode, D::Error> {
        let text = zeroizing_string(d)?;
        LinkCode::parse(&text).ok_or_else(|| serde::de::Error::custom("bad code"))
    }
}

#[cfg(test)]
mod tests;
