//! The MQTT consumer checks: the kit plays agents that publish requests on their up topics,
//! with network tickets it signs itself, and reads what the consumer publishes back.
//! They must not call the server behind the consumer: only [`MqttConsumer`] is used.
//!
//! The consumer is driven through [`MqttConsumer`]: one request in (topic and payload), the
//! reply it publishes out, or none. No broker is needed: the core's
//! [`handle_up`](crate::server::mqtt::handle_up) is checked as a plain function
//! (`tests/mqtt_conformance.rs`); a consumer behind a broker is checked through a client that
//! publishes the request and waits a while for a reply on the down topic.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Map, Value};

use super::reply::is_hex64;
use super::server::{random_hex32, KitAgent};
use super::{CheckSpec, MqttConsumer, MqttTarget, Recorder, Report, Verdict};
use crate::id::InstanceId;
use crate::secret::PresenceKey;
use crate::server::mqtt::{down_topic, up_topic, MAX_UP_BYTES};
use crate::ticket::TicketKey;

const MQTT: &str = "MQTT (feature `mqtt`)";
const TICKET: &str = "The network ticket (features `http` + `ticket`)";

const fn spec(id: &'static str, section: &'static str, expects: &'static str) -> CheckSpec {
    CheckSpec {
        id,
        section,
        expects,
    }
}

/// Every MQTT consumer check, in catalog order.
pub const MQTT_CHECKS: &[CheckSpec] = &[
    spec("mqtt.announce.ok", MQTT, "announced {\"messages\": [], \"poll_after_ms\": n} for an announcement with a valid ticket"),
    spec("mqtt.reply.topic_and_id", MQTT, "every reply on {prefix}/down/{client_id} of the topic the request came on, with the request's id"),
    spec("mqtt.announce.unsupported_version", MQTT, "refused 400 unsupported_version for version 2 with a valid ticket"),
    spec("mqtt.announce.forged_instance", MQTT, "refused 403 forged_instance for a new instance whose presence_key does not derive its instance_id (with a valid ticket for that id)"),
    spec("mqtt.ticket.not_a_ticket", TICKET, "refused 403 bad_ticket for a ticket that is not one"),
    spec("mqtt.ticket.forged", TICKET, "refused 403 bad_ticket for a ticket signed with another key"),
    spec("mqtt.ticket.expired", TICKET, "refused 403 ticket_expired for a ticket past its expiry"),
    spec("mqtt.ticket.wrong_instance", TICKET, "refused 403 ticket_wrong_instance for another instance's ticket"),
    spec("mqtt.topic.wrong_client", MQTT, "refused 403 wrong_client for a request with a valid ticket on another instance's up topic"),
    spec("mqtt.topic.not_up", MQTT, "dropped (no reply) for a request on a topic that is not {prefix}/up/{client_id}"),
    spec("mqtt.drop.too_large", MQTT, "dropped for a valid request padded to over 5 KiB"),
    spec("mqtt.drop.malformed_json", MQTT, "dropped for a payload that is not JSON"),
    spec("mqtt.drop.unknown_field", MQTT, "dropped for a request with an unknown field"),
    spec("mqtt.drop.unknown_type", MQTT, "dropped for a request of an unknown type"),
    spec("mqtt.drop.bad_id", MQTT, "dropped for a correlation id that is empty, 65 characters long, or holds '/' or a space"),
    spec("mqtt.redeem.ok", MQTT, "redeemed {\"auth_token\": 64 hex, \"attempt\": 1} for the target's code, redeemed with the presence key as attempt 1"),
    spec("mqtt.redeem.used_code", MQTT, "refused 403 invalid_code for the same code from another instance"),
    spec("mqtt.redeem.unknown_code", MQTT, "refused 403 invalid_code for an unknown code"),
];

/// The consumer's answer to one request: `None` when it published nothing.
type Answer = Option<(String, Vec<u8>)>;

struct Session<'a, C: ?Sized> {
    target: &'a MqttTarget,
    consumer: &'a C,
    rec: Recorder,
    /// The kit's clock (the consumer is expected to read the same wall clock).
    now: DateTime<Utc>,
    /// How many replies came, and what was wrong with the topic or id of each that erred.
    replies: usize,
    misrouted: Vec<String>,
}

pub(crate) async fn run<C: MqttConsumer + ?Sized>(target: &MqttTarget, consumer: &C) -> Report {
    let mut session = Session {
        target,
        consumer,
        rec: Recorder::new(MQTT_CHECKS, &target.opted_out),
        now: DateTime::<Utc>::from(std::time::SystemTime::now()),
        replies: 0,
        misrouted: Vec::new(),
    };
    session.run().await;
    session.rec.finish()
}

impl<C: MqttConsumer + ?Sized> Session<'_, C> {
    async fn run(&mut self) {
        let agent = KitAgent::new();
        self.announce_checks(&agent).await;
        self.ticket_checks(&agent).await;
        self.topic_checks(&agent).await;
        self.drop_checks(&agent).await;
        self.redeem_checks(&agent).await;
        self.routing();
    }

    // ───────────────────────────── requests ─────────────────────────────

    fn client_id(&self, id: &InstanceId) -> String {
        self.target.key.client_id(id)
    }

    fn up(&self, id: &InstanceId) -> String {
        up_topic(&self.target.prefix, &self.client_id(id))
    }

    /// A ticket for `id` on the target's network, valid for 5 minutes from the kit's clock.
    fn ticket(&self, id: &InstanceId) -> String {
        self.ticket_at(&self.target.key, self.now, id)
    }

    fn ticket_at(&self, key: &TicketKey, at: DateTime<Utc>, id: &InstanceId) -> String {
        key.issue(at, TimeDelta::minutes(5), self.target.network, *id)
            .token
    }

    /// Hands `payload` on `topic` to the consumer.
    async fn send(&self, topic: String, payload: Vec<u8>) -> Answer {
        self.consumer.request(topic, payload).await
    }

    /// Sends a request (with correlation id `id`) on the up topic of `client`'s instance and
    /// reads the reply, noting whether it came on that topic's down topic with `id`.
    async fn ask(&mut self, topic: String, client: &str, id: &str, request: &Value) -> Reply {
        let answer = self.send(topic, body(request)).await;
        let reply = Reply::of(answer);
        if let Reply::Message { topic, message } = &reply {
            self.replies += 1;
            let want = down_topic(&self.target.prefix, client);
            let got_id = message.get("id").and_then(Value::as_str);
            if *topic != want {
                self.misrouted
                    .push(format!("a reply to {id} on another topic than its own"));
            }
            if got_id != Some(id) {
                self.misrouted
                    .push(format!("a reply to {id} with id {got_id:?}"));
            }
        }
        reply
    }

    /// An announcement request of `agent` (with `announce` as its body) and `ticket`.
    async fn announce(&mut self, agent: &KitAgent, ticket: String, announce: Value) -> Reply {
        let id = random_hex32();
        let request = json!({"type": "announce", "id": id, "ticket": ticket, "announce": announce});
        let client = self.client_id(&agent.id);
        self.ask(self.up(&agent.id), &client, &id, &request).await
    }

    fn check(&mut self, id: &'static str, verdict: Verdict) -> bool {
        self.rec.verdict(id, verdict)
    }

    // ───────────────────────────── checks ─────────────────────────────

    async fn announce_checks(&mut self, agent: &KitAgent) {
        let reply = self
            .announce(agent, self.ticket(&agent.id), agent.announce())
            .await;
        self.check("mqtt.announce.ok", announced(&reply));

        let mut announce = agent.announce();
        announce["version"] = json!(2);
        let reply = self.announce(agent, self.ticket(&agent.id), announce).await;
        self.check(
            "mqtt.announce.unsupported_version",
            reply.refused(400, "unsupported_version"),
        );

        // A new instance announced with another key than the one its id derives from: a valid
        // ticket for the id does not make it the agent's announcement.
        let fresh = KitAgent::new();
        let mut announce = fresh.announce();
        let other = PresenceKey::generate(&mut crate::os_rng());
        announce["presence_key"] = json!(other.to_hex().as_str());
        let reply = self
            .announce(&fresh, self.ticket(&fresh.id), announce)
            .await;
        self.check(
            "mqtt.announce.forged_instance",
            reply.refused(403, "forged_instance"),
        );
    }

    async fn ticket_checks(&mut self, agent: &KitAgent) {
        let reply = self
            .announce(agent, "not-a-ticket".to_owned(), agent.announce())
            .await;
        self.check("mqtt.ticket.not_a_ticket", reply.refused(403, "bad_ticket"));

        let other_key = TicketKey::generate(&mut crate::os_rng());
        let forged = self.ticket_at(&other_key, self.now, &agent.id);
        let reply = self.announce(agent, forged, agent.announce()).await;
        self.check("mqtt.ticket.forged", reply.refused(403, "bad_ticket"));

        let expired = self.ticket_at(&self.target.key, self.now - TimeDelta::hours(1), &agent.id);
        let reply = self.announce(agent, expired, agent.announce()).await;
        self.check("mqtt.ticket.expired", reply.refused(403, "ticket_expired"));

        let another = InstanceId::generate(&mut crate::os_rng());
        let reply = self
            .announce(agent, self.ticket(&another), agent.announce())
            .await;
        self.check(
            "mqtt.ticket.wrong_instance",
            reply.refused(403, "ticket_wrong_instance"),
        );
    }

    async fn topic_checks(&mut self, agent: &KitAgent) {
        // The agent's own valid request, published on another instance's up topic: the reply
        // (a refusal) goes to that topic's down topic.
        let other = InstanceId::generate(&mut crate::os_rng());
        let (client, id) = (self.client_id(&other), random_hex32());
        let request = self.announce_request(agent, &id);
        let reply = self.ask(self.up(&other), &client, &id, &request).await;
        self.check(
            "mqtt.topic.wrong_client",
            reply.refused(403, "wrong_client"),
        );

        let own = self.client_id(&agent.id);
        let prefix = self.target.prefix.clone();
        let topics = [
            down_topic(&prefix, &own),
            format!("{prefix}/up/{own}/x"),
            format!("{prefix}/up/"),
            format!("{prefix}/up/{own}+"),
            format!("{prefix}-other/up/{own}"),
        ];
        let mut verdict = Ok(format!("dropped on {} other topics", topics.len()));
        for topic in topics {
            let request = self.announce_request(agent, &random_hex32());
            if let Some((_, payload)) = self.send(topic.clone(), body(&request)).await {
                verdict = Err(format!(
                    "answered a request on {topic:?}: {}",
                    excerpt(&payload)
                ));
                break;
            }
        }
        self.check("mqtt.topic.not_up", verdict);
    }

    /// A valid announcement request of `agent`, with correlation id `id`.
    fn announce_request(&self, agent: &KitAgent, id: &str) -> Value {
        json!({
            "type": "announce",
            "id": id,
            "ticket": self.ticket(&agent.id),
            "announce": agent.announce(),
        })
    }

    async fn drop_checks(&mut self, agent: &KitAgent) {
        let up = self.up(&agent.id);
        // Valid JSON, padded with white space past the limit: only its size is wrong.
        let mut padded = body(&self.announce_request(agent, &random_hex32()));
        padded.resize(MAX_UP_BYTES + 1, b' ');
        let verdict = dropped(
            self.send(up.clone(), padded).await,
            "a 5 KiB + 1 byte request",
        );
        self.check("mqtt.drop.too_large", verdict);

        let verdict = dropped(
            self.send(up.clone(), b"{\"type\": \"announce\",".to_vec())
                .await,
            "a payload that is not JSON",
        );
        self.check("mqtt.drop.malformed_json", verdict);

        let mut request = self.announce_request(agent, &random_hex32());
        request["extra"] = json!(1);
        let verdict = dropped(
            self.send(up.clone(), body(&request)).await,
            "an unknown field",
        );
        self.check("mqtt.drop.unknown_field", verdict);

        let mut request = self.announce_request(agent, &random_hex32());
        request["type"] = json!("delete");
        let verdict = dropped(
            self.send(up.clone(), body(&request)).await,
            "an unknown type",
        );
        self.check("mqtt.drop.unknown_type", verdict);

        let mut verdict = Ok("dropped for 4 bad ids".to_owned());
        for id in [
            String::new(),
            "a".repeat(65),
            "a/b".to_owned(),
            "a b".to_owned(),
        ] {
            let request = self.announce_request(agent, &id);
            if let Some((_, payload)) = self.send(up.clone(), body(&request)).await {
                verdict = Err(format!("answered id {id:?}: {}", excerpt(&payload)));
                break;
            }
        }
        self.check("mqtt.drop.bad_id", verdict);
    }

    /// A redemption of `code` by `agent`, with its presence key, as attempt 1.
    async fn redeem(&mut self, agent: &KitAgent, code: &str) -> Reply {
        let id = random_hex32();
        let request = json!({
            "type": "redeem",
            "id": id,
            "ticket": self.ticket(&agent.id),
            "redeem": {
                "instance_id": agent.id.to_string(),
                "code": code,
                "presence_key": agent.key.to_hex().as_str(),
                "attempt": 1,
            },
        });
        let client = self.client_id(&agent.id);
        self.ask(self.up(&agent.id), &client, &id, &request).await
    }

    async fn redeem_checks(&mut self, agent: &KitAgent) {
        match self.target.code.clone() {
            Some(code) => {
                let reply = self.redeem(&KitAgent::new(), code.expose()).await;
                if self.check("mqtt.redeem.ok", redeemed(&reply)) {
                    let reply = self.redeem(&KitAgent::new(), code.expose()).await;
                    self.check("mqtt.redeem.used_code", reply.refused(403, "invalid_code"));
                } else {
                    self.rec
                        .skip("mqtt.redeem.used_code", "needs mqtt.redeem.ok to pass");
                }
            }
            None => self.rec.skip_all(
                &["mqtt.redeem.ok", "mqtt.redeem.used_code"],
                "no code given (MqttTarget::code)",
            ),
        }
        let reply = self.redeem(agent, &random_hex32()).await;
        self.check(
            "mqtt.redeem.unknown_code",
            reply.refused(403, "invalid_code"),
        );
    }

    fn routing(&mut self) {
        let verdict = match (self.replies, self.misrouted.first()) {
            (0, _) => Err("no reply came at all".to_owned()),
            (n, None) => Ok(format!("{n} replies, each on its down topic with its id")),
            (n, Some(first)) => Err(format!(
                "{} of {n} replies misrouted, first: {first}",
                self.misrouted.len()
            )),
        };
        self.check("mqtt.reply.topic_and_id", verdict);
    }
}

/// What the consumer published for a request.
enum Reply {
    /// Nothing.
    Dropped,
    /// A payload that is not a JSON object (in short).
    NotJson(String),
    /// A JSON object, on `topic`.
    Message {
        topic: String,
        message: Map<String, Value>,
    },
}

impl Reply {
    fn of(answer: Answer) -> Self {
        match answer {
            None => Self::Dropped,
            Some((topic, payload)) => match serde_json::from_slice::<Value>(&payload) {
                Ok(Value::Object(message)) => Self::Message { topic, message },
                _ => Self::NotJson(excerpt(&payload)),
            },
        }
    }

    /// The message, if its `type` is `kind`; else what came instead.
    fn of_type(&self, kind: &str) -> Result<&Map<String, Value>, String> {
        match self {
            Self::Dropped => Err("no reply (dropped)".to_owned()),
            Self::NotJson(text) => Err(format!("a reply of {text}")),
            Self::Message { message, .. } => match message.get("type").and_then(Value::as_str) {
                Some(got) if got == kind => Ok(message),
                _ => Err(describe(message)),
            },
        }
    }

    /// A refusal with `status` and `code`.
    fn refused(&self, status: u16, code: &str) -> Verdict {
        let message = self.of_type("refused")?;
        let got_status = message.get("status").and_then(Value::as_u64);
        let got_code = message.get("error").and_then(Value::as_str);
        if got_status == Some(u64::from(status)) && got_code == Some(code) {
            Ok(format!("refused {status} {code}"))
        } else {
            Err(describe(message))
        }
    }
}

/// An `announced` reply with no message and a poll interval.
fn announced(reply: &Reply) -> Verdict {
    let message = reply.of_type("announced")?;
    let inner = message.get("reply").and_then(Value::as_object);
    let messages = inner
        .and_then(|r| r.get("messages"))
        .and_then(Value::as_array);
    let poll = inner
        .and_then(|r| r.get("poll_after_ms"))
        .and_then(Value::as_u64);
    match (messages, poll) {
        (Some(messages), Some(poll)) if messages.is_empty() => {
            Ok(format!("announced, poll_after_ms {poll}"))
        }
        // Messages carry secrets and codes: count them, never show them.
        _ => Err(format!(
            "announced with {} messages and poll_after_ms {poll:?}",
            messages.map_or_else(|| "no array of".to_owned(), |m| m.len().to_string())
        )),
    }
}

/// A `redeemed` reply with a 64-hex token and attempt 1.
fn redeemed(reply: &Reply) -> Verdict {
    let message = reply.of_type("redeemed")?;
    let inner = message.get("reply").and_then(Value::as_object);
    let token = inner
        .and_then(|r| r.get("auth_token"))
        .and_then(Value::as_str);
    let attempt = inner.and_then(|r| r.get("attempt")).and_then(Value::as_u64);
    match (token, attempt) {
        (Some(token), Some(1)) if is_hex64(token) => {
            Ok("redeemed, auth_token (64 hex), attempt 1".to_owned())
        }
        // The token is a secret: say only what is wrong with the shape.
        _ => Err(format!(
            "redeemed with auth_token {} and attempt {attempt:?}",
            if token.is_some_and(is_hex64) {
                "(64 hex)"
            } else {
                "missing or not 64 hex"
            }
        )),
    }
}

/// No reply, for `what`.
fn dropped(answer: Answer, what: &str) -> Verdict {
    match answer {
        None => Ok(format!("dropped {what}")),
        Some((_, payload)) => Err(format!("answered {what}: {}", excerpt(&payload))),
    }
}

/// A reply in short: its type, and a refusal's status and code (never a reply's secrets).
fn describe(message: &Map<String, Value>) -> String {
    let kind = message.get("type").and_then(Value::as_str).unwrap_or("?");
    match kind {
        "refused" => {
            let field = |name: &str| match message.get(name) {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => format!("(no {name})"),
            };
            format!("refused {} {}", field("status"), field("error"))
        }
        other => format!("a reply of type {other:?}"),
    }
}

/// A payload in short: its type and refusal, or its size if it is no JSON object (never its
/// bytes, which may hold a secret).
fn excerpt(payload: &[u8]) -> String {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(message)) => describe(&message),
        _ => format!("{} bytes that are not a JSON object", payload.len()),
    }
}

fn body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
