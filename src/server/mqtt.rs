//! The server's MQTT wire as a function (feature `ticket`), with no MQTT library in it
//! (sans-IO): a request's topic and payload go in; the reply to publish, and on which topic,
//! comes out, with every rule of `PROTOCOL.md`'s MQTT section applied. Any MQTT client serves
//! the server by handing each publish it receives on the servers' shared subscription to
//! [`handle_up`] and publishing what it returns; the rumqttc consumer
//! (`mqtt::server::MqttServer`, feature `mqtt`) is one such shell.
//! The function must not do I/O, read a clock or draw from a global RNG: `now`, an RNG and the
//! ticket key come in as arguments (any I/O below it is the store's).
//!
//! | topic | published by | payload |
//! | --- | --- | --- |
//! | `{prefix}/up/{client_id}` ([`up_topic`]) | the agent | [`UpMessage`] |
//! | `{prefix}/down/{client_id}` ([`down_topic`]) | a server | [`DownMessage`] |
//!
//! What [`handle_up`] decides, in this order, so that no client library re-implements it:
//!
//! 1. **Dropped, unanswered** ([`Dropped`]): a topic that is not `{prefix}/up/{client_id}` with
//!    a [valid](valid_name) client id; a payload over [`MAX_UP_BYTES`]; a payload that does not
//!    decode strictly as an [`UpMessage`] (bad JSON, an unknown `type`, an unknown or missing
//!    field, a bad field); a correlation id that is not [valid](valid_name). There is no one to
//!    answer (the topic names none, or the reply could not name the request).
//! 2. **Refused** ([`DownMessage::Refused`], on the topic's own down topic, with the request's
//!    id): a ticket that does not verify (`403 bad_ticket`, `403 ticket_expired`,
//!    `403 ticket_wrong_instance`, see [`crate::ticket`]); a topic whose client id is not the
//!    ticket instance's (`403 wrong_client`: a reply goes only to the instance's own topic); an
//!    announcement of another wire version (`400 unsupported_version`); then any refusal of the
//!    operation, with the status and code the HTTP route answers ([`Refusal::status`],
//!    [`Refusal::code`]).
//! 3. **Answered**: the announcement or redemption applied to the ticket's network, with every
//!    check of the HTTP route ([`DownMessage::Announced`], [`DownMessage::Redeemed`]). A
//!    redemption claims the code, awaits the server's [`LinkHook`](super::LinkHook) outside any
//!    lock, then finishes the link, as [`endpoint::handle`](super::endpoint::handle) does: a hook
//!    that awaits links.
//!
//! The server's events go where its [`Events`](super::Events) say (with [`Server::new`], a
//! queue for the host to drain with [`Server::poll_event`]).
//!
//! When a link is accepted, the agent is told to announce at once: [`wake`] is the message and
//! its topic, [`wake_after`] says which HTTP answer calls for one.
//!
//! ```
//! use lanlink::secret::PresenceKey;
//! use lanlink::server::mqtt::{self, DownMessage, Dropped, UpMessage, DEFAULT_TOPIC_PREFIX};
//! use lanlink::server::{Server, ServerConfig};
//! use lanlink::ticket::TicketKey;
//! use lanlink::wire::{Announce, WIRE_VERSION};
//! use lanlink::{LocalSecret, PublicNetwork};
//! # let mut fut = std::pin::pin!(async {
//! let server = Server::new(ServerConfig::default()).unwrap();
//! let mut rng = lanlink::os_rng();
//! let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
//! let key = TicketKey::generate(&mut rng);
//! let prefix = DEFAULT_TOPIC_PREFIX;
//!
//! // The agent: its ticket (fetched over HTTP) names its network and its client id.
//! let (presence, secret) = (PresenceKey::generate(&mut rng), LocalSecret::generate(&mut rng));
//! let id = presence.instance_id();
//! let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
//! let ticket = key.issue(now, chrono::TimeDelta::minutes(5), network, id).token;
//! let client_id = key.client_id(&id);
//! let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), presence);
//! let request = UpMessage::Announce { id: "r1".into(), ticket, announce };
//! let payload = lanlink::wire::encode(&request);
//!
//! // The server: topic and payload in, the reply and its topic out.
//! let up = mqtt::up_topic(prefix, &client_id);
//! let reply = mqtt::handle_up(&server, now, &mut rng, &key, prefix, &up, &payload).await.unwrap();
//! assert_eq!(reply.topic, mqtt::down_topic(prefix, &client_id));
//! let down: DownMessage = lanlink::wire::decode(&reply.payload, mqtt::MAX_DOWN_BYTES).unwrap();
//! assert!(matches!(down, DownMessage::Announced { id, .. } if id == "r1"));
//!
//! // Not JSON: dropped, with no reply.
//! let dropped = mqtt::handle_up(&server, now, &mut rng, &key, prefix, &up, b"{").await;
//! assert_eq!(dropped.unwrap_err(), Dropped::Malformed);
//! # });
//! # use std::future::Future;
//! # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
//! ```

use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::endpoint::status_of_wire_error;
use super::{Backend, Server};
use crate::addr::PublicNetwork;
use crate::error::{Refusal, WireCode};
use crate::id::InstanceId;
use crate::ticket::TicketKey;
use crate::wire::{self, Announce, AnnounceReply, LinkState, LinkStatusReply, RedeemReply};
use crate::wire::{RedeemRequest, WireError, MAX_ANNOUNCE_BYTES, MAX_MESSAGE_BYTES, WIRE_VERSION};

/// The default topic prefix.
pub const DEFAULT_TOPIC_PREFIX: &str = "lanlink/v1";

/// Largest agent → server payload accepted, in bytes (an announcement, a ticket, an id): larger
/// ones are [dropped](Dropped::TooLarge).
pub const MAX_UP_BYTES: usize = MAX_ANNOUNCE_BYTES + 1024;

/// Largest server → agent payload an agent accepts, in bytes.
pub const MAX_DOWN_BYTES: usize = MAX_MESSAGE_BYTES;

/// Longest correlation id (or client id, or group) accepted, in characters.
pub const MAX_ID_CHARS: usize = 64;

/// Whether `name` is a group, client id or correlation id the MQTT wire accepts: 1 to
/// [`MAX_ID_CHARS`] of `[A-Za-z0-9_-]`.
///
/// ```
/// use lanlink::server::mqtt::valid_name;
/// assert!(valid_name("ll-0f3a") && valid_name("9b0c_1"));
/// assert!(!valid_name("") && !valid_name("a/b") && !valid_name(&"a".repeat(65)));
/// ```
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ID_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The topic agent `client_id` publishes its requests on: `{prefix}/up/{client_id}`.
///
/// ```
/// assert_eq!(lanlink::server::mqtt::up_topic("lanlink/v1", "ll-ab"), "lanlink/v1/up/ll-ab");
/// ```
pub fn up_topic(prefix: &str, client_id: &str) -> String {
    format!("{prefix}/up/{client_id}")
}

/// The topic agent `client_id` receives replies and wakes on: `{prefix}/down/{client_id}`.
///
/// ```
/// assert_eq!(lanlink::server::mqtt::down_topic("lanlink/v1", "ll-ab"), "lanlink/v1/down/ll-ab");
/// ```
pub fn down_topic(prefix: &str, client_id: &str) -> String {
    format!("{prefix}/down/{client_id}")
}

/// The client id in `topic`, if it is `{prefix}/up/{client_id}` with a [valid](valid_name)
/// client id.
///
/// ```
/// use lanlink::server::mqtt::client_of_up_topic;
/// assert_eq!(client_of_up_topic("lanlink/v1", "lanlink/v1/up/ll-ab"), Some("ll-ab"));
/// for other in ["lanlink/v1/up/", "lanlink/v1/up/a/b", "lanlink/v1/down/x", "lanlink/v1/up/a+"] {
///     assert_eq!(client_of_up_topic("lanlink/v1", other), None);
/// }
/// ```
pub fn client_of_up_topic<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix("/up/")?;
    valid_name(rest).then_some(rest)
}

/// Agent → server, on `{prefix}/up/{client_id}`. `Debug` redacts the ticket (a bearer credential).
///
/// ```
/// # use lanlink::server::mqtt::{handle_up, up_topic, DownMessage, Dropped, UpMessage, DEFAULT_TOPIC_PREFIX};
/// # use lanlink::server::{Server, ServerConfig};
/// # use lanlink::ticket::TicketKey;
/// # use lanlink::wire::Announce;
/// # use lanlink::{secret::PresenceKey, LocalSecret, PublicNetwork};
/// # let mut fut = std::pin::pin!(async {
/// # let server = Server::new(ServerConfig::default()).unwrap();
/// # let key = TicketKey::generate(&mut lanlink::os_rng());
/// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let presence = PresenceKey::from_bytes([1; 32]);
/// # let id = presence.instance_id();
/// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(),
/// #     LocalSecret::from_bytes([2; 32]).commitment(&id), presence);
/// # let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
/// # let ticket = key.issue(now, chrono::TimeDelta::minutes(5), network, id).token;
/// # let topic = up_topic(DEFAULT_TOPIC_PREFIX, &key.client_id(&id));
/// # let mut rng = lanlink::os_rng();
/// let up = UpMessage::Announce { id: "req-1".into(), ticket: ticket.clone(), announce };
/// // Debug never shows the ticket (a bearer credential).
/// assert!(!format!("{up:?}").contains(&ticket));
/// let payload = serde_json::to_vec(&up).unwrap();
/// assert!(handle_up(&server, now, &mut rng, &key, DEFAULT_TOPIC_PREFIX, &topic, &payload).await.is_ok());
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum UpMessage {
    /// An announcement (the reply is [`DownMessage::Announced`]).
    Announce {
        /// The correlation id, echoed in the reply.
        id: String,
        /// The agent's network ticket.
        ticket: String,
        /// The announcement.
        announce: Announce,
    },
    /// A redemption (the reply is [`DownMessage::Redeemed`]).
    Redeem {
        /// The correlation id, echoed in the reply.
        id: String,
        /// The agent's network ticket.
        ticket: String,
        /// The redemption.
        redeem: RedeemRequest,
    },
}

impl std::fmt::Debug for UpMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Announce { id, announce, .. } => f
                .debug_struct("Announce")
                .field("id", id)
                .field("ticket", &"<redacted>")
                .field("announce", announce)
                .finish(),
            Self::Redeem { id, redeem, .. } => f
                .debug_struct("Redeem")
                .field("id", id)
                .field("ticket", &"<redacted>")
                .field("redeem", redeem)
                .finish(),
        }
    }
}

/// Server → agent, on `{prefix}/down/{client_id}`.
///
/// ```
/// # use lanlink::server::mqtt::{handle_up, up_topic, DownMessage, Dropped, UpMessage, DEFAULT_TOPIC_PREFIX};
/// # use lanlink::server::{Server, ServerConfig};
/// # use lanlink::ticket::TicketKey;
/// # use lanlink::wire::Announce;
/// # use lanlink::{secret::PresenceKey, LocalSecret, PublicNetwork};
/// # let mut fut = std::pin::pin!(async {
/// # let server = Server::new(ServerConfig::default()).unwrap();
/// # let key = TicketKey::generate(&mut lanlink::os_rng());
/// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let presence = PresenceKey::from_bytes([1; 32]);
/// # let id = presence.instance_id();
/// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(),
/// #     LocalSecret::from_bytes([2; 32]).commitment(&id), presence);
/// # let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
/// # let ticket = key.issue(now, chrono::TimeDelta::minutes(5), network, id).token;
/// # let topic = up_topic(DEFAULT_TOPIC_PREFIX, &key.client_id(&id));
/// # let mut rng = lanlink::os_rng();
/// let up = UpMessage::Announce { id: "req-1".into(), ticket, announce };
/// let payload = serde_json::to_vec(&up).unwrap();
/// let reply = handle_up(&server, now, &mut rng, &key, DEFAULT_TOPIC_PREFIX, &topic, &payload).await.unwrap();
/// let down: DownMessage = serde_json::from_slice(&reply.payload).unwrap();
/// assert!(matches!(down, DownMessage::Announced { id, .. } if id == "req-1"));
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DownMessage {
    /// The reply to an announcement.
    Announced {
        /// The request's correlation id.
        id: String,
        /// The reply.
        reply: AnnounceReply,
    },
    /// The reply to a redemption.
    Redeemed {
        /// The request's correlation id.
        id: String,
        /// The reply.
        reply: RedeemReply,
    },
    /// A refusal: the HTTP-style status and stable code the HTTP route would have answered.
    Refused {
        /// The request's correlation id.
        id: String,
        /// The status, e.g. 403.
        status: u16,
        /// The code, e.g. `"ticket_expired"`.
        error: String,
    },
    /// Something is waiting for the agent: announce now. Carries nothing else.
    Wake,
    /// A message type this version does not know; ignored.
    #[serde(other)]
    Unknown,
}

/// What to publish: the payload (QoS 1, not retained) on the topic. `Debug` shows neither the
/// payload (it may carry a secret, a code or a token) nor the topic (it names the agent's
/// client id, a credential).
///
/// ```
/// # use lanlink::server::mqtt::{handle_up, up_topic, DownMessage, Dropped, UpMessage, DEFAULT_TOPIC_PREFIX};
/// # use lanlink::server::{Server, ServerConfig};
/// # use lanlink::ticket::TicketKey;
/// # use lanlink::wire::Announce;
/// # use lanlink::{secret::PresenceKey, LocalSecret, PublicNetwork};
/// # let mut fut = std::pin::pin!(async {
/// # let server = Server::new(ServerConfig::default()).unwrap();
/// # let key = TicketKey::generate(&mut lanlink::os_rng());
/// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let presence = PresenceKey::from_bytes([1; 32]);
/// # let id = presence.instance_id();
/// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(),
/// #     LocalSecret::from_bytes([2; 32]).commitment(&id), presence);
/// # let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
/// # let ticket = key.issue(now, chrono::TimeDelta::minutes(5), network, id).token;
/// # let topic = up_topic(DEFAULT_TOPIC_PREFIX, &key.client_id(&id));
/// # let mut rng = lanlink::os_rng();
/// // An expired ticket: the reply is a refusal, on the agent's down topic.
/// let later = now + chrono::TimeDelta::minutes(6);
/// let up = UpMessage::Announce { id: "req-2".into(), ticket, announce };
/// let payload = serde_json::to_vec(&up).unwrap();
/// let reply = handle_up(&server, later, &mut rng, &key, DEFAULT_TOPIC_PREFIX, &topic, &payload).await.unwrap();
/// assert_eq!(reply.refused, Some("ticket_expired"));
/// assert_eq!(reply.instance_id, id);
/// assert!(!format!("{reply:?}").contains(&reply.topic), "Debug shows no client id");
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[derive(Clone)]
#[non_exhaustive]
#[must_use]
pub struct Reply {
    /// The topic to publish on: the agent's down topic.
    pub topic: String,
    /// The encoded [`DownMessage`], zeroized when dropped.
    pub payload: Zeroizing<Vec<u8>>,
    /// For the host's log: the instance the reply is for (as the request named it).
    pub instance_id: InstanceId,
    /// For the host's log: the refusal's code, when the reply is a [`DownMessage::Refused`].
    pub refused: Option<&'static str>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("payload_len", &self.payload.len())
            .field("instance_id", &self.instance_id)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

/// Why [`handle_up`] dropped a request without a reply.
///
/// ```
/// # use lanlink::server::mqtt::{handle_up, up_topic, DownMessage, Dropped, UpMessage, DEFAULT_TOPIC_PREFIX};
/// # use lanlink::server::{Server, ServerConfig};
/// # use lanlink::ticket::TicketKey;
/// # use lanlink::wire::Announce;
/// # use lanlink::{secret::PresenceKey, LocalSecret, PublicNetwork};
/// # let mut fut = std::pin::pin!(async {
/// # let server = Server::new(ServerConfig::default()).unwrap();
/// # let key = TicketKey::generate(&mut lanlink::os_rng());
/// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let presence = PresenceKey::from_bytes([1; 32]);
/// # let id = presence.instance_id();
/// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(),
/// #     LocalSecret::from_bytes([2; 32]).commitment(&id), presence);
/// # let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
/// # let ticket = key.issue(now, chrono::TimeDelta::minutes(5), network, id).token;
/// # let topic = up_topic(DEFAULT_TOPIC_PREFIX, &key.client_id(&id));
/// # let mut rng = lanlink::os_rng();
/// # let _ = (ticket, announce);
/// let not_up = format!("{DEFAULT_TOPIC_PREFIX}/down/x");
/// assert_eq!(handle_up(&server, now, &mut rng, &key, DEFAULT_TOPIC_PREFIX, &not_up, b"{}").await.unwrap_err(), Dropped::Topic);
/// assert_eq!(handle_up(&server, now, &mut rng, &key, DEFAULT_TOPIC_PREFIX, &topic, b"{}").await.unwrap_err(), Dropped::Malformed);
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Dropped {
    /// The topic is not `{prefix}/up/{client_id}` with a [valid](valid_name) client id.
    #[error("not an up topic")]
    Topic,
    /// The payload is over [`MAX_UP_BYTES`].
    #[error("request too large")]
    TooLarge,
    /// The payload does not decode strictly as an [`UpMessage`].
    #[error("malformed request")]
    Malformed,
    /// The correlation id is not [valid](valid_name).
    #[error("bad correlation id")]
    BadId,
}

/// A refusal's status and code, as the reply carries them.
struct Refused {
    status: u16,
    code: &'static str,
}

impl Refused {
    fn of(refusal: &Refusal) -> Self {
        Self::code(refusal.code())
    }

    /// `code`, with its status from the classification table.
    fn code(code: WireCode) -> Self {
        let (status, code) = code.answer();
        Self { status, code }
    }

    fn wire(err: &WireError) -> Self {
        let (status, code) = status_of_wire_error(err);
        Self { status, code }
    }

    /// The reply that carries it, to the request `id`.
    fn message(self, id: String) -> DownMessage {
        DownMessage::Refused {
            id,
            status: self.status,
            error: self.code.to_owned(),
        }
    }
}

/// The reply [`handle_up`] sends for `refusal` to the request `id` (for the error model's
/// round-trip test).
#[cfg(test)]
pub(crate) fn refusal_message(id: String, refusal: &Refusal) -> DownMessage {
    Refused::of(refusal).message(id)
}

/// Answers one request published on `topic` under `prefix` (e.g. [`DEFAULT_TOPIC_PREFIX`]),
/// at `now`, checking tickets with `key` (the key the HTTP ticket route signs with); `rng`
/// draws tokens. `Ok` is the reply to publish; `Err` says why the request is dropped
/// unanswered. See the [module docs](self) for the rules, in order.
///
/// ```
/// # use lanlink::server::mqtt::{handle_up, up_topic, DownMessage, Dropped, UpMessage, DEFAULT_TOPIC_PREFIX};
/// # use lanlink::server::{Server, ServerConfig};
/// # use lanlink::ticket::TicketKey;
/// # use lanlink::wire::Announce;
/// # use lanlink::{secret::PresenceKey, LocalSecret, PublicNetwork};
/// # let mut fut = std::pin::pin!(async {
/// # let server = Server::new(ServerConfig::default()).unwrap();
/// # let key = TicketKey::generate(&mut lanlink::os_rng());
/// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let presence = PresenceKey::from_bytes([1; 32]);
/// # let id = presence.instance_id();
/// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(),
/// #     LocalSecret::from_bytes([2; 32]).commitment(&id), presence);
/// # let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
/// # let ticket = key.issue(now, chrono::TimeDelta::minutes(5), network, id).token;
/// # let topic = up_topic(DEFAULT_TOPIC_PREFIX, &key.client_id(&id));
/// # let mut rng = lanlink::os_rng();
/// // A topic of another client than the ticket's instance: refused, not answered as that agent.
/// let stranger = up_topic(DEFAULT_TOPIC_PREFIX, &key.client_id(&lanlink::InstanceId::from_bytes([9; 16])));
/// let up = UpMessage::Announce { id: "req-3".into(), ticket, announce };
/// let payload = serde_json::to_vec(&up).unwrap();
/// let reply = handle_up(&server, now, &mut rng, &key, DEFAULT_TOPIC_PREFIX, &stranger, &payload).await.unwrap();
/// assert_eq!(reply.refused, Some("wrong_client"));
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
pub async fn handle_up<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    server: &Server<S>,
    now: DateTime<Utc>,
    rng: &mut R,
    key: &TicketKey,
    prefix: &str,
    topic: &str,
    payload: &[u8],
) -> Result<Reply, Dropped> {
    let client_id = client_of_up_topic(prefix, topic).ok_or(Dropped::Topic)?;
    if payload.len() > MAX_UP_BYTES {
        return Err(Dropped::TooLarge);
    }
    let message =
        wire::decode::<UpMessage>(payload, MAX_UP_BYTES).map_err(|_| Dropped::Malformed)?;
    let (id, instance_id, answer) = match message {
        UpMessage::Announce {
            id,
            ticket,
            announce,
        } => {
            if !valid_name(&id) {
                return Err(Dropped::BadId);
            }
            let answer = match network(key, now, client_id, &ticket, &announce.instance_id) {
                Err(refused) => Err(refused),
                Ok(_) if announce.version != WIRE_VERSION => {
                    Err(Refused::wire(&WireError::Version))
                }
                Ok(network) => server
                    .announce(now, network, &announce)
                    .await
                    .map(Answer::Announced)
                    .map_err(|refusal| Refused::of(&refusal)),
            };
            (id, announce.instance_id, answer)
        }
        UpMessage::Redeem { id, ticket, redeem } => {
            if !valid_name(&id) {
                return Err(Dropped::BadId);
            }
            let answer = match network(key, now, client_id, &ticket, &redeem.instance_id) {
                Err(refused) => Err(refused),
                Ok(network) => server
                    .redeem(now, rng, network, &redeem)
                    .await
                    .map(|redeemed| Answer::Redeemed(redeemed.reply))
                    .map_err(|refusal| Refused::of(&refusal)),
            };
            (id, redeem.instance_id, answer)
        }
    };
    let refused = answer.as_ref().err().map(|refused| refused.code);
    let message = match answer {
        Ok(Answer::Announced(reply)) => DownMessage::Announced { id, reply },
        Ok(Answer::Redeemed(reply)) => DownMessage::Redeemed { id, reply },
        Err(refused) => refused.message(id),
    };
    Ok(Reply {
        topic: down_topic(prefix, client_id),
        payload: wire::encode(&message),
        instance_id,
        refused,
    })
}

/// An operation's reply.
enum Answer {
    Announced(AnnounceReply),
    Redeemed(RedeemReply),
}

/// The network of a request from `client_id` for `instance_id`: the ticket must verify, and the
/// client id must be the instance's (so a reply goes only to the instance's own topic).
fn network(
    key: &TicketKey,
    now: DateTime<Utc>,
    client_id: &str,
    ticket: &str,
    instance_id: &InstanceId,
) -> Result<PublicNetwork, Refused> {
    let ticket = key
        .verify(now, ticket, instance_id)
        .map_err(|err| Refused::code(err.wire_code()))?;
    if !key.is_client_id(client_id, instance_id) {
        return Err(Refused::code(WireCode::WrongClient));
    }
    Ok(ticket.network)
}

/// The wake for `instance_id`'s agent: `{"type":"wake"}` on its down topic (its client id under
/// `key`). It carries nothing; the agent answers it by announcing at once.
///
/// ```
/// use lanlink::server::mqtt::{self, DownMessage};
/// use lanlink::ticket::TicketKey;
/// let key = TicketKey::generate(&mut lanlink::os_rng());
/// let id = lanlink::InstanceId::generate(&mut lanlink::os_rng());
/// let wake = mqtt::wake(&key, "lanlink/v1", &id);
/// assert_eq!(wake.topic, mqtt::down_topic("lanlink/v1", &key.client_id(&id)));
/// assert_eq!(&wake.payload[..], br#"{"type":"wake"}"#);
/// ```
pub fn wake(key: &TicketKey, prefix: &str, instance_id: &InstanceId) -> Reply {
    Reply {
        topic: down_topic(prefix, &key.client_id(instance_id)),
        payload: wire::encode(&DownMessage::Wake),
        instance_id: *instance_id,
        refused: None,
    }
}

/// The [`wake`] an HTTP answer of the server calls for: a `POST` answered `202` with a pending
/// [`LinkStatusReply`] (an accepted link, `POST {prefix}/link`) wakes its instance; any other
/// answer none. A host may skip reading the body of an answer whose status is not `202`.
///
/// ```
/// use lanlink::server::mqtt;
/// use lanlink::ticket::TicketKey;
/// let key = TicketKey::generate(&mut lanlink::os_rng());
/// let id = lanlink::InstanceId::generate(&mut lanlink::os_rng());
/// let body = format!(r#"{{"instance_id":"{id}","state":"pending"}}"#);
/// let wake = mqtt::wake_after(&key, "lanlink/v1", "POST", 202, body.as_bytes()).unwrap();
/// assert_eq!(wake.instance_id, id);
/// assert!(mqtt::wake_after(&key, "lanlink/v1", "GET", 202, body.as_bytes()).is_none());
/// assert!(mqtt::wake_after(&key, "lanlink/v1", "POST", 200, body.as_bytes()).is_none());
/// ```
pub fn wake_after(
    key: &TicketKey,
    prefix: &str,
    method: &str,
    status: u16,
    body: &[u8],
) -> Option<Reply> {
    if method != "POST" || status != 202 {
        return None;
    }
    let reply = wire::decode::<LinkStatusReply>(body, MAX_MESSAGE_BYTES).ok()?;
    (reply.state == LinkState::Pending).then(|| wake(key, prefix, &reply.instance_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_messages_are_strict() {
        let unknown = br#"{"type":"announce","id":"1","ticket":"t","announce":{},"x":1}"#;
        assert!(wire::decode::<UpMessage>(unknown, MAX_UP_BYTES).is_err());
        let other = br#"{"type":"delete","id":"1"}"#;
        assert!(wire::decode::<UpMessage>(other, MAX_UP_BYTES).is_err());
        let down: DownMessage =
            wire::decode(br#"{"type":"future","x":1}"#, MAX_DOWN_BYTES).unwrap();
        assert!(matches!(down, DownMessage::Unknown));
    }

    #[test]
    fn a_reply_shows_no_topic_nor_payload() {
        let key = TicketKey::from_bytes([7; 32]);
        let id = InstanceId::generate(&mut crate::os_rng());
        let wake = wake(&key, DEFAULT_TOPIC_PREFIX, &id);
        let shown = format!("{wake:?}");
        assert!(!shown.contains(&key.client_id(&id)), "{shown}");
        assert!(!shown.contains("wake"), "{shown}");
    }
}
