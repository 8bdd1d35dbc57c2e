//! The agent's messages: its announcement and the server's answer, the messages the server
//! forwards to it, its redemption and the answer.
//! It must not read a clock or do I/O; decoding refuses what `PROTOCOL.md` refuses.

use super::*;

/// Agent → server, every `announce_interval` during the window (protocol step 2).
///
/// ```
/// use lanlink::wire::{self, Announce};
/// use lanlink::{secret::PresenceKey, LocalSecret};
/// let key = PresenceKey::from_bytes([2; 32]);
/// let id = key.instance_id();
/// let announce = Announce::new(id, "192.168.1.50".parse()?, 8080, Default::default(),
///     LocalSecret::from_bytes([1; 32]).commitment(&id), key);
/// // The commitment and the presence key are redacted in Debug.
/// assert!(format!("{announce:?}").contains("PresenceKey(<redacted>)"));
/// assert!(wire::decode_announce(&wire::encode(&announce))?.presence_key.proves(&id));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    ///
    /// ```
    /// # use lanlink::wire::{self, Announce, WireError, MAX_CANDIDATES};
    /// # use lanlink::{secret::PresenceKey, LocalSecret};
    /// # let key = PresenceKey::from_bytes([2; 32]);
    /// # let id = key.instance_id();
    /// # let commitment = LocalSecret::from_bytes([1; 32]).commitment(&id);
    /// let announce = Announce::new(id, "192.168.1.50".parse()?, 8080, Default::default(), commitment, key);
    /// let ok = announce.clone().with_candidates(vec!["10.0.0.5:8080".parse()?]);
    /// assert_eq!(wire::decode_announce(&wire::encode(&ok))?.candidates.len(), 1);
    /// let too_many = announce.with_candidates(vec!["10.0.0.5:8080".parse()?; MAX_CANDIDATES + 1]);
    /// assert_eq!(wire::decode_announce(&wire::encode(&too_many)), Err(WireError::BadField("candidates")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    ///
    /// ```
    /// # use lanlink::wire::{self, Announce, Revision, WireError};
    /// # use lanlink::{secret::PresenceKey, LocalSecret};
    /// # let key = PresenceKey::from_bytes([2; 32]);
    /// # let id = key.instance_id();
    /// # let commitment = LocalSecret::from_bytes([1; 32]).commitment(&id);
    /// let announce = Announce::new(id, "192.168.1.50".parse()?, 8080, Default::default(), commitment, key);
    /// let v2 = announce.with_revision(Revision::new(2, 0));
    /// // Another major does not decode.
    /// assert_eq!(wire::decode_announce(&wire::encode(&v2)), Err(WireError::Version));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
///
/// ```
/// use lanlink::wire::{AnnounceReply, Visibility};
/// // An older server's reply: no visibility, no revision.
/// let reply: AnnounceReply = serde_json::from_str(r#"{"messages":[],"poll_after_ms":5000,"x":1}"#)?;
/// assert_eq!(reply.visibility, Visibility::Visible);
/// assert_eq!(reply.revision, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    ///
    /// ```
    /// use lanlink::wire::{AnnounceReply, HiddenReason, Visibility};
    /// let reply = AnnounceReply::new(Vec::new(), 2000)
    ///     .with_visibility(Visibility::Hidden(HiddenReason::SharedNetwork));
    /// let json = serde_json::to_string(&reply)?;
    /// assert!(json.contains(r#""visibility":{"hidden":"shared_network"}"#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_visibility(mut self, visibility: Visibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// The same, stating `revision` instead (`None`: as a server before 1.5).
    ///
    /// ```
    /// use lanlink::wire::AnnounceReply;
    /// let old = AnnounceReply::new(Vec::new(), 2000).with_revision(None);
    /// assert!(!serde_json::to_string(&old)?.contains("revision"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
///
/// ```
/// use lanlink::wire::{DiscoverReply, Hidden, HiddenReason};
/// let reply = DiscoverReply::new(Default::default()).with_hidden(HiddenReason::TooManyAgents);
/// assert_eq!(reply.hidden, Some(Hidden { reason: HiddenReason::TooManyAgents }));
/// assert!(serde_json::to_string(&reply)?.contains(r#""hidden":{"reason":"too_many_agents"}"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hidden {
    /// Why.
    pub reason: HiddenReason,
}

/// A message the server queued for an agent.
///
/// ```
/// use lanlink::wire::{AgentMessage, AnnounceReply};
/// // A message type from a newer server reads as `Unknown`, which agents ignore.
/// let reply: AnnounceReply = serde_json::from_str(
///     r#"{"messages":[{"type":"reboot_please"}],"poll_after_ms":1000}"#)?;
/// assert!(matches!(reply.messages[..], [AgentMessage::Unknown]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
///
/// ```
/// use lanlink::wire::{self, RedeemRequest, MAX_MESSAGE_BYTES};
/// use lanlink::{InstanceId, LinkCode};
/// let request = RedeemRequest::new(InstanceId::from_bytes([7; 16]), LinkCode::parse("123456").unwrap());
/// // Debug never shows the code.
/// assert!(format!("{request:?}").contains("LinkCode(<redacted>)"));
/// let back: RedeemRequest = wire::decode(&wire::encode(&request), MAX_MESSAGE_BYTES)?;
/// assert_eq!(back.attempt, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    ///
    /// ```
    /// use lanlink::wire::RedeemRequest;
    /// use lanlink::{secret::PresenceKey, LinkCode};
    /// let key = PresenceKey::from_bytes([2; 32]);
    /// let request = RedeemRequest::new(key.instance_id(), LinkCode::parse("123456").unwrap())
    ///     .with_presence_key(key);
    /// assert!(request.presence_key.as_ref().is_some_and(|k| k.proves(&request.instance_id)));
    /// ```
    pub fn with_presence_key(mut self, key: PresenceKey) -> Self {
        self.presence_key = Some(key);
        self
    }

    /// The same, as attempt `attempt` (revision 1.1).
    ///
    /// ```
    /// use lanlink::wire::RedeemRequest;
    /// use lanlink::{InstanceId, LinkCode};
    /// let first = RedeemRequest::new(InstanceId::from_bytes([7; 16]), LinkCode::parse("123456").unwrap());
    /// // Attempt 0 is left out of the JSON; a retry states its number.
    /// assert!(!String::from_utf8(lanlink::wire::encode(&first).to_vec())?.contains("attempt"));
    /// let retry = first.with_attempt(2);
    /// assert!(String::from_utf8(lanlink::wire::encode(&retry).to_vec())?.contains(r#""attempt":2"#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The same, stating `revision` (revision 1.5).
    ///
    /// ```
    /// use lanlink::wire::{RedeemRequest, Revision};
    /// use lanlink::{InstanceId, LinkCode};
    /// let request = RedeemRequest::new(InstanceId::from_bytes([7; 16]), LinkCode::parse("123456").unwrap())
    ///     .with_revision(Revision::V1_5);
    /// assert_eq!(request.revision, Some(Revision::V1_5));
    /// ```
    pub fn with_revision(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Server → agent: the code was good.
///
/// ```
/// use lanlink::wire::{self, RedeemReply, MAX_MESSAGE_BYTES};
/// use lanlink::AuthToken;
/// let reply = RedeemReply::new(AuthToken::from_bytes([9; 32]), 3);
/// assert!(format!("{reply:?}").contains("AuthToken(<redacted>)"));
/// let back: RedeemReply = wire::decode(&wire::encode(&reply), MAX_MESSAGE_BYTES)?;
/// assert!(back.auth_token.ct_eq(&reply.auth_token) && back.attempt == 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
