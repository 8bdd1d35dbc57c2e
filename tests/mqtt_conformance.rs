//! The MQTT kit (`conformance::check_mqtt`) against the core's consumer function
//! (`server::mqtt::handle_up`), driven as a plain function: no rumqttc, no broker. Every check
//! passes on both backends; deliberately broken consumers fail exactly the checks they break;
//! and a link hook that awaits links through the function.
#![cfg(feature = "conformance")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lanlink::chrono::{DateTime, TimeDelta, Utc};
use lanlink::conformance::{check_mqtt, MqttConsumer, MqttTarget, Report, MQTT_CHECKS};
use lanlink::secret::PresenceKey;
use lanlink::server::mqtt::{self, DownMessage, DEFAULT_TOPIC_PREFIX as PREFIX};
use lanlink::server::{
    Backend, CompletedLink, Events, HookError, LinkHook, MemoryStore, Server, ServerConfig,
};
use lanlink::ticket::TicketKey;
use lanlink::wire::RedeemRequest;
use lanlink::{AccountId, LinkCode, PublicNetwork};
use serde_json::Value;

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn alice() -> AccountId {
    AccountId::new("alice").unwrap()
}

/// The core's consumer over an in-memory server or a server over a shared store: the function
/// and nothing else.
struct Core<S = MemoryStore> {
    server: Server<S>,
    key: TicketKey,
}

impl Core {
    fn local(server: Server, key: &TicketKey) -> Self {
        Self {
            server,
            key: key.clone(),
        }
    }
}

impl Core<Arc<dyn Backend>> {
    fn shared(server: Server<Arc<dyn Backend>>, key: &TicketKey) -> Self {
        Self {
            server,
            key: key.clone(),
        }
    }
}

impl<S: Backend> Core<S> {
    /// A manual code for alice, minted on the backend.
    async fn mint(&self) -> LinkCode {
        self.server
            .mint_code(now(), &mut lanlink::os_rng(), &alice())
            .await
            .unwrap()
            .code
    }
}

#[async_trait]
impl<S: Backend + 'static> MqttConsumer for Core<S> {
    async fn request(&self, topic: String, payload: Vec<u8>) -> Option<(String, Vec<u8>)> {
        let mut rng = lanlink::os_rng();
        let reply = mqtt::handle_up(
            &self.server,
            now(),
            &mut rng,
            &self.key,
            PREFIX,
            &topic,
            &payload,
        )
        .await;
        reply
            .ok()
            .map(|reply| (reply.topic, reply.payload.to_vec()))
    }
}

/// A server over a shared store (here an in-memory one behind `Arc<dyn Backend>`).
fn service() -> Server<Arc<dyn Backend>> {
    let store: Arc<dyn Backend> = Arc::new(MemoryStore::default());
    Server::with_store(ServerConfig::default(), store, Events::discard()).unwrap()
}

/// Every catalog entry appears once, in catalog order.
fn assert_covers(report: &Report) {
    let ids: Vec<_> = report.checks().iter().map(|c| c.id).collect();
    let want: Vec<_> = MQTT_CHECKS.iter().map(|c| c.id).collect();
    assert_eq!(ids, want);
}

async fn run<S: Backend + 'static>(core: &Core<S>, key: &TicketKey) -> Report {
    let target = MqttTarget::new(key.clone()).code(core.mint().await);
    let report = check_mqtt(&target, core).await;
    print!("{report}");
    println!("{}", report.summary());
    assert_covers(&report);
    report
}

#[tokio::test]
async fn the_core_consumer_function_passes_every_check_on_both_backends() {
    let key = TicketKey::generate(&mut lanlink::os_rng());
    let local = Core::local(Server::new(ServerConfig::default()).unwrap(), &key);
    let report = run(&local, &key).await;
    assert!(report.complete(), "{}:\n{report}", report.summary());
    assert!(report.skipped_ids().is_empty());
    let text = report.to_string();
    assert!(
        text.contains("PASS mqtt.ticket.expired  refused 403 ticket_expired\n"),
        "{text}"
    );

    let shared = Core::shared(service(), &key);
    let report = run(&shared, &key).await;
    assert!(report.complete(), "{}:\n{report}", report.summary());
}

#[tokio::test]
async fn without_a_code_the_redemption_checks_fail_unless_opted_out() {
    let key = TicketKey::generate(&mut lanlink::os_rng());
    let core = Core::local(Server::new(ServerConfig::default()).unwrap(), &key);
    let report = check_mqtt(&MqttTarget::new(key.clone()), &core).await;
    assert_eq!(
        report.failed_ids(),
        ["mqtt.redeem.ok", "mqtt.redeem.used_code"]
    );
    let target = MqttTarget::new(key)
        .opt_out("mqtt.redeem.ok")
        .opt_out("mqtt.redeem.used_code");
    let report = check_mqtt(&target, &core).await;
    assert!(report.passed(), "{report}");
    assert_eq!(
        report.skipped_ids(),
        ["mqtt.redeem.ok", "mqtt.redeem.used_code"]
    );
}

// ───────────────────────────── broken consumers ─────────────────────────────

/// A consumer that does not check tickets: it replaces the request's ticket with one it signs
/// itself for the request's instance (on a network of its choosing) before the core sees it.
struct IgnoresTickets {
    inner: Core,
    network: PublicNetwork,
}

#[async_trait]
impl MqttConsumer for IgnoresTickets {
    async fn request(&self, topic: String, payload: Vec<u8>) -> Option<(String, Vec<u8>)> {
        let mut payload = payload;
        if payload.len() <= mqtt::MAX_UP_BYTES {
            if let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(&payload) {
                let instance = ["announce", "redeem"]
                    .iter()
                    .find_map(|field| request.get(*field)?.get("instance_id")?.as_str())
                    .and_then(|id| id.parse().ok());
                if let Some(instance) = instance {
                    let ticket = self
                        .inner
                        .key
                        .issue(now(), TimeDelta::minutes(5), self.network, instance)
                        .token;
                    request.insert("ticket".to_owned(), Value::String(ticket));
                    payload = serde_json::to_vec(&request).unwrap();
                }
            }
        }
        self.inner.request(topic, payload).await
    }
}

/// A consumer that answers with another correlation id than the request's.
struct WrongId(Core);

#[async_trait]
impl MqttConsumer for WrongId {
    async fn request(&self, topic: String, payload: Vec<u8>) -> Option<(String, Vec<u8>)> {
        let (topic, payload) = self.0.request(topic, payload).await?;
        let mut reply: Value = serde_json::from_slice(&payload).unwrap();
        reply["id"] = Value::String("not-the-request-s".to_owned());
        Some((topic, serde_json::to_vec(&reply).unwrap()))
    }
}

/// A consumer that answers what it should drop: a request it cannot read is refused
/// `400 malformed` on the topic's down topic instead.
struct AnswersTheUnreadable(Core);

#[async_trait]
impl MqttConsumer for AnswersTheUnreadable {
    async fn request(&self, topic: String, payload: Vec<u8>) -> Option<(String, Vec<u8>)> {
        let client = mqtt::client_of_up_topic(PREFIX, &topic).map(str::to_owned);
        match (self.0.request(topic, payload).await, client) {
            (Some(reply), _) => Some(reply),
            (None, Some(client)) => Some((
                mqtt::down_topic(PREFIX, &client),
                br#"{"type":"refused","id":"x","status":400,"error":"malformed"}"#.to_vec(),
            )),
            (None, None) => None,
        }
    }
}

#[tokio::test]
async fn broken_consumers_fail_exactly_the_checks_they_break() {
    let key = TicketKey::generate(&mut lanlink::os_rng());
    let fresh = || Core::local(Server::new(ServerConfig::default()).unwrap(), &key);

    let target_network = PublicNetwork::from_ip("198.18.0.9".parse().unwrap(), 64);
    let broken = IgnoresTickets {
        inner: fresh(),
        network: target_network,
    };
    let target = MqttTarget::new(key.clone())
        .network(target_network)
        .code(broken.inner.mint().await);
    let report = check_mqtt(&target, &broken).await;
    print!("{report}");
    assert_covers(&report);
    assert_eq!(
        report.failed_ids(),
        [
            "mqtt.ticket.not_a_ticket",
            "mqtt.ticket.forged",
            "mqtt.ticket.expired",
            "mqtt.ticket.wrong_instance",
        ],
        "{report}"
    );

    let broken = WrongId(fresh());
    let target = MqttTarget::new(key.clone()).code(broken.0.mint().await);
    let report = check_mqtt(&target, &broken).await;
    assert_eq!(report.failed_ids(), ["mqtt.reply.topic_and_id"], "{report}");

    let broken = AnswersTheUnreadable(fresh());
    let target = MqttTarget::new(key.clone()).code(broken.0.mint().await);
    let report = check_mqtt(&target, &broken).await;
    assert_eq!(
        report.failed_ids(),
        [
            "mqtt.drop.too_large",
            "mqtt.drop.malformed_json",
            "mqtt.drop.unknown_field",
            "mqtt.drop.unknown_type",
            "mqtt.drop.bad_id",
        ],
        "{report}"
    );
}

// ───────────────────────────── a hook that awaits ─────────────────────────────

/// A hook that awaits a timer before it records the link, as a host awaits its database.
#[derive(Default)]
struct Sleeps {
    links: Mutex<Vec<CompletedLink>>,
}

#[async_trait]
impl LinkHook for Sleeps {
    async fn link_completed(&self, link: &CompletedLink) -> Result<(), HookError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.links.lock().unwrap().push(link.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_hook_that_awaits_links_through_the_consumer_function_on_both_backends() {
    let key = TicketKey::generate(&mut lanlink::os_rng());
    let hook = Arc::new(Sleeps::default());
    let server = Server::new(ServerConfig::default())
        .unwrap()
        .with_link_hook(Arc::clone(&hook) as Arc<dyn LinkHook>);
    let service = service().with_link_hook(Arc::clone(&hook) as Arc<dyn LinkHook>);
    let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    redeem_through(&Core::local(server, &key), &key, &hook, network, 0).await;
    redeem_through(&Core::shared(service, &key), &key, &hook, network, 1).await;
}

/// Redeems a fresh code over `core` from `network`: the `n`th link `hook` sees.
async fn redeem_through<S: Backend + 'static>(
    core: &Core<S>,
    key: &TicketKey,
    hook: &Sleeps,
    network: PublicNetwork,
    n: usize,
) {
    let presence = PresenceKey::generate(&mut lanlink::os_rng());
    let id = presence.instance_id();
    let request = RedeemRequest::new(id, core.mint().await)
        .with_presence_key(presence)
        .with_attempt(1);
    let ticket = key.issue(now(), TimeDelta::minutes(5), network, id).token;
    let up = mqtt::UpMessage::Redeem {
        id: "r1".to_owned(),
        ticket,
        redeem: request,
    };
    let topic = mqtt::up_topic(PREFIX, &key.client_id(&id));
    let (reply_topic, payload) = core
        .request(topic, lanlink::wire::encode(&up).to_vec())
        .await
        .expect("a reply");
    assert_eq!(reply_topic, mqtt::down_topic(PREFIX, &key.client_id(&id)));
    let down: DownMessage = lanlink::wire::decode(&payload, mqtt::MAX_DOWN_BYTES).unwrap();
    let DownMessage::Redeemed {
        id: reply_id,
        reply,
    } = down
    else {
        panic!("not linked: {down:?}");
    };
    assert_eq!(reply_id, "r1");
    let links = hook.links.lock().unwrap();
    assert_eq!(links.len(), n + 1, "the hook saw the link");
    let link = links.last().unwrap();
    assert_eq!((link.instance_id, link.network), (id, network));
    assert!(link.token_digest.verify(&reply.auth_token));
}
