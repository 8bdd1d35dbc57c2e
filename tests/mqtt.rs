//! The MQTT transport against a real `mosquitto`, started per test on a free loopback port with
//! a generated configuration. Without mosquitto the tests print a skip line and pass, except
//! under `CI=true`, where they fail.
#![cfg(feature = "mqtt")]

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use lanlink::agent::{AgentConfig, AgentStatus};
use lanlink::driver::{lock, run_agent, DriverConfig, SharedAgent};
use lanlink::event::{AgentEvent, LinkerEvent};
use lanlink::http::client::{HttpAgentClient, HttpLinkerClient};
use lanlink::http::server::{router, SharedServer};
use lanlink::http::{self, ticket, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::mqtt::agent::{MqttAgentConfig, MqttAgentTransport};
use lanlink::mqtt::rumqttc::{self, AsyncClient, Event, MqttOptions, Packet, QoS};
use lanlink::mqtt::server::{wake_on_link, MqttBackend, MqttServer, MqttServerConfig};
use lanlink::mqtt::{Broker, DownMessage, UpMessage};
use lanlink::secret::PresenceKey;
use lanlink::server::mqtt::{Dropped, Reply};
use lanlink::server::{Server, ServerConfig};
use lanlink::ticket::TicketKey;
use lanlink::transport::{AgentServerTransport, LinkerServerTransport, TransportError};
use lanlink::wire::{self, AgentMessage, Announce, LinkRequest, LinkState, RedeemRequest};
use lanlink::{AccountId, DeviceInfo, InstanceId, LocalSecret, PublicNetwork};
use support::linking::link_first;

const TOKEN: &str = "alice-token";
const SERVER_USER: &str = "lanlink-server";
const SERVER_PASSWORD: &str = "server-password-for-tests";

// ---------------------------------------------------------------------------------------------
// The broker.

/// mosquitto from `LANLINK_MOSQUITTO` if set (a path; a missing one means "not installed"),
/// else from `PATH`, else `/usr/sbin/mosquitto` (Debian's place, often not on a user's `PATH`).
fn mosquitto_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LANLINK_MOSQUITTO") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("mosquitto"))
            .find(|candidate| candidate.is_file())
    });
    from_path.or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/mosquitto");
        sbin.is_file().then_some(sbin)
    })
}

/// The mosquitto binary, or `None` after printing a skip line (a failure under `CI=true`).
fn mosquitto_or_skip(test: &str) -> Option<PathBuf> {
    match mosquitto_binary() {
        Some(path) => Some(path),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: mosquitto not found on PATH or at /usr/sbin/mosquitto, and CI=true")
        }
        None => {
            eprintln!("SKIP {test}: mosquitto not found (install it: apt-get install mosquitto)");
            None
        }
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lanlink-mqtt-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The ACL this crate documents in `PROTOCOL.md` (prefix `lanlink/v1`).
const ACL: &str = "\
# Servers: read every agent's requests, write every agent's replies.
user lanlink-server
topic read lanlink/v1/up/+
topic write lanlink/v1/down/+

# Agents (any client): write only their own up topic, read only their own down topic.
pattern write lanlink/v1/up/%c
pattern read lanlink/v1/down/%c
";

struct Mosquitto {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts mosquitto on a free port; with `acl`, with the documented ACL and a password for
    /// the server user (agents stay anonymous).
    fn start(binary: PathBuf, acl: bool) -> Self {
        let dir = temp_dir("broker");
        let port = support::free_port();
        let mut config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest file {}\nlog_type all\n",
            dir.join("mosquitto.log").display()
        );
        if acl {
            let acl_path = dir.join("acl");
            std::fs::write(&acl_path, ACL).unwrap();
            let passwords = dir.join("passwords");
            let status = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg("-c")
                .arg(&passwords)
                .arg(SERVER_USER)
                .arg(SERVER_PASSWORD)
                .status()
                .expect("mosquitto_passwd (from the mosquitto package)");
            assert!(status.success());
            config.push_str(&format!(
                "acl_file {}\npassword_file {}\n",
                acl_path.display(),
                passwords.display()
            ));
        }
        std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
        let mut broker = Self {
            binary,
            dir,
            port,
            child: None,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // What answers on the port is this broker, not another process that took the port.
        let exited = self.child.as_mut().map(|child| child.try_wait());
        assert!(
            matches!(exited, Some(Ok(None))),
            "mosquitto exited ({exited:?}): {}",
            self.log()
        );
    }

    /// SIGKILL: no clean shutdown, nothing saved.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    fn broker(&self) -> Broker {
        Broker::new("127.0.0.1", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The cloud: one in-memory server behind HTTP (with the ticket route and wakes) and MQTT
// consumers.

struct Cloud {
    server: SharedServer,
    key: TicketKey,
    base: String,
    consumers: Vec<MqttServer>,
}

fn server_config(interval: Duration) -> ServerConfig {
    ServerConfig::default()
        .announce_interval(interval)
        .presence_ttl(interval * 3)
}

async fn cloud(broker: &Broker, consumers: usize, config: ServerConfig) -> Cloud {
    cloud_with(broker, consumers, config, true).await
}

async fn cloud_with(broker: &Broker, consumers: usize, config: ServerConfig, wake: bool) -> Cloud {
    let server: SharedServer = Arc::new(Server::new(config.clone()).unwrap());
    let key = TicketKey::generate(&mut lanlink::os_rng());
    let consumers: Vec<MqttServer> = (0..consumers)
        .map(|i| {
            let config =
                MqttServerConfig::new(broker.clone(), &format!("server-{i}"), key.clone()).unwrap();
            MqttServer::spawn(config, Arc::clone(&server) as Arc<dyn MqttBackend>)
        })
        .collect();
    for consumer in &consumers {
        assert!(consumer.wait_subscribed(Duration::from_secs(10)).await);
    }
    let alice = AccountId::new("alice").unwrap();
    let auth = Arc::new(BearerTokens::new(vec![(TOKEN.to_owned(), alice)]));
    let app = router(Arc::clone(&server), auth, DEFAULT_PREFIX).merge(ticket::router(
        key.clone(),
        config,
        DEFAULT_PREFIX,
    ));
    // Wakes go out through the last consumer (a test may drop the first).
    let app = if wake {
        wake_on_link(app, consumers[consumers.len() - 1].waker())
    } else {
        app
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http::serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending(),
    ));
    Cloud {
        server,
        key,
        base: format!("http://{addr}"),
        consumers,
    }
}

async fn start_agent(interval: Duration) -> (SharedAgent, SocketAddr) {
    support::net::start_agent(|addr| {
        let info = DeviceInfo::new("printer", "MK4", "lanlink-test", "0.1.0").unwrap();
        AgentConfig::new(addr.ip(), addr.port(), info)
            .window(Duration::from_secs(120))
            .announce_interval(interval)
    })
    .await
}

fn mqtt_transport(broker: &Broker, base: &str) -> MqttAgentTransport {
    MqttAgentTransport::new(
        MqttAgentConfig::new(broker.clone()),
        HttpAgentClient::new(base).unwrap(),
    )
}

/// Waits until a linker on 127.0.0.1 discovers an agent.
async fn wait_discovered(base: &str) {
    let client = HttpLinkerClient::new(base, TOKEN).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(reply) = client.discover().await {
            if !reply.agents.is_empty() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the agent never became visible");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Events = Arc<Mutex<Vec<(Instant, AgentEvent)>>>;

fn spawn_agent_driver(
    agent: &SharedAgent,
    transport: MqttAgentTransport,
) -> (tokio::task::JoinHandle<AgentStatus>, Events) {
    let events: Events = Arc::default();
    let task = {
        let agent = Arc::clone(agent);
        let events = Arc::clone(&events);
        tokio::spawn(async move {
            run_agent(&agent, &transport, &DriverConfig::default(), |event| {
                events.lock().unwrap().push((Instant::now(), event));
            })
            .await
        })
    };
    (task, events)
}

async fn link_over_http(base: &str) -> (Result<InstanceId, String>, Option<Instant>) {
    let client = HttpLinkerClient::new(base, TOKEN).unwrap();
    let config = LinkerConfig {
        status_interval: Duration::from_millis(200),
        ..LinkerConfig::default()
    };
    let mut linker = Linker::without_nonce(config, Instant::now());
    let mut requested = None;
    let linked = link_first(&mut linker, &client, &DriverConfig::default(), |event| {
        if matches!(event, LinkerEvent::LinkRequested { .. }) {
            requested = Some(Instant::now());
        }
    })
    .await
    .map_err(|err| err.to_string());
    (linked, requested)
}

fn linked_at(events: &Events) -> Option<Instant> {
    events
        .lock()
        .unwrap()
        .iter()
        .find(|(_, e)| matches!(e, AgentEvent::Linked { .. }))
        .map(|(at, _)| *at)
}

// ---------------------------------------------------------------------------------------------
// A raw MQTT client, to send what a well-behaved agent would not.

struct RawClient {
    client: AsyncClient,
    received: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    subacks: tokio::sync::mpsc::UnboundedReceiver<Vec<rumqttc::SubscribeReasonCode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawClient {
    async fn connect(port: u16, client_id: &str) -> Self {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 64);
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        let (ack_tx, subacks) = tokio::sync::mpsc::unbounded_channel();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let _ = ack_tx.send(ack.return_codes);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), connected)
            .await
            .unwrap()
            .unwrap();
        Self {
            client,
            received,
            subacks,
            task,
        }
    }

    /// Subscribes and returns whether the broker granted it.
    async fn subscribe(&mut self, filter: &str) -> bool {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        let codes = tokio::time::timeout(Duration::from_secs(5), self.subacks.recv())
            .await
            .unwrap()
            .unwrap();
        codes
            .iter()
            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// The next message within `wait`, if any.
    async fn next(&mut self, wait: Duration) -> Option<(String, Vec<u8>)> {
        tokio::time::timeout(wait, self.received.recv())
            .await
            .ok()
            .flatten()
    }

    async fn next_down(&mut self) -> DownMessage {
        let (_, payload) = self
            .next(Duration::from_secs(5))
            .await
            .expect("a reply on the down topic");
        wire::decode(&payload, lanlink::mqtt::MAX_DOWN_BYTES).unwrap()
    }
}

fn announce_for(key: &PresenceKey, secret: &LocalSecret) -> Announce {
    let id = key.instance_id();
    Announce::new(
        id,
        "192.168.1.50".parse().unwrap(),
        8080,
        DeviceInfo::new("raw", "", "", "").unwrap(),
        secret.commitment(&id),
        key.clone(),
    )
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

fn loopback() -> PublicNetwork {
    PublicNetwork::from_ip("127.0.0.1".parse().unwrap(), 64)
}

fn refused_code(message: &DownMessage) -> Option<&str> {
    match message {
        DownMessage::Refused { error, .. } => Some(error),
        _ => None,
    }
}

fn up_announce(id: &str, ticket: String, announce: &Announce) -> Vec<u8> {
    let message: UpMessage = serde_json::from_value(serde_json::json!({
        "type": "announce", "id": id, "ticket": ticket,
        "announce": serde_json::from_slice::<serde_json::Value>(&wire::encode(announce)).unwrap(),
    }))
    .unwrap();
    wire::encode(&message).to_vec()
}

fn up_redeem(id: &str, ticket: String, redeem: &RedeemRequest) -> Vec<u8> {
    let message: UpMessage = serde_json::from_value(serde_json::json!({
        "type": "redeem", "id": id, "ticket": ticket,
        "redeem": serde_json::from_slice::<serde_json::Value>(&wire::encode(redeem)).unwrap(),
    }))
    .unwrap();
    wire::encode(&message).to_vec()
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Runs a link with the agent on MQTT (5 s announce interval) and the linker on HTTP, starting
/// the linker just after one of the agent's announcements was answered; returns the time from
/// the link being accepted to the agent being linked.
async fn link_delay(wake: bool) -> Option<Duration> {
    let binary = mosquitto_or_skip("link_over_mqtt")?;
    let mosquitto = Mosquitto::start(binary, false);
    let broker = mosquitto.broker();
    let interval = Duration::from_secs(5);
    let cloud = cloud_with(&broker, 1, server_config(interval), wake).await;
    let (agent, _) = start_agent(interval).await;
    let (task, events) = spawn_agent_driver(&agent, mqtt_transport(&broker, &cloud.base));
    wait_discovered(&cloud.base).await;
    // Right after an answered announcement, the agent's next poll is a whole interval away.
    let handled = cloud.consumers[0].handled();
    while cloud.consumers[0].handled() == handled {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let (linked, requested) = link_over_http(&cloud.base).await;
    let id = linked.expect("the linker links the agent");
    let status = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the agent finishes")
        .unwrap();
    assert_eq!(status, AgentStatus::Linked);
    assert!(lock(&agent).auth_token().is_some());
    assert_eq!(lock(&agent).instance_id(), id);
    assert!(
        cloud.consumers[0].handled() >= 3,
        "announce, announce, redeem"
    );
    // The server holds the link as linked for alice.
    let client = HttpLinkerClient::new(&cloud.base, TOKEN).unwrap();
    assert_eq!(
        client.link_status(&id).await.unwrap().state,
        LinkState::Linked
    );
    let delay = linked_at(&events).unwrap() - requested.unwrap();
    println!("wake {wake}: link accepted -> agent linked over MQTT in {delay:?} (announce interval {interval:?})");
    Some(delay)
}

/// The agent talks to the server only over MQTT (plus its one HTTP ticket call), the linker
/// only over HTTP, and the link completes. With a 5 s announce interval, the agent gets its
/// message within a fraction of a second of the link being accepted: the wake, not the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_over_mqtt_without_polling_delay() {
    let Some(delay) = link_delay(true).await else {
        return;
    };
    assert!(
        delay < Duration::from_secs(2),
        "the agent waited for its poll: {delay:?}"
    );
}

/// The control: the same flow without the wake waits for the agent's next poll (so the test
/// above measures the wake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_wake_the_agent_waits_for_its_poll() {
    let Some(delay) = link_delay(false).await else {
        return;
    };
    assert!(
        delay > Duration::from_secs(2),
        "linked before the poll without a wake: {delay:?}"
    );
}

/// Two consumers in one shared-subscription group split the requests: each request is handled
/// exactly once, and both handle some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_the_subscription() {
    let Some(binary) = mosquitto_or_skip("two_consumers_share_the_subscription") else {
        return;
    };
    let mosquitto = Mosquitto::start(binary, false);
    let broker = mosquitto.broker();
    let cloud = cloud(&broker, 2, ServerConfig::default()).await;
    let mut transports = Vec::new();
    for _ in 0..8 {
        let key = PresenceKey::generate(&mut lanlink::os_rng());
        let secret = LocalSecret::generate(&mut lanlink::os_rng());
        let config = MqttAgentConfig {
            max_hold: Duration::ZERO,
            ..MqttAgentConfig::new(broker.clone())
        };
        let transport = MqttAgentTransport::new(config, HttpAgentClient::new(&cloud.base).unwrap());
        transports.push((transport, announce_for(&key, &secret)));
    }
    let rounds = 5;
    let mut tasks = Vec::new();
    for (transport, announce) in transports {
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                transport.announce(&announce).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (a, b) = (cloud.consumers[0].handled(), cloud.consumers[1].handled());
    println!("shared subscription: consumer 0 handled {a}, consumer 1 handled {b}");
    assert_eq!(a + b, 8 * rounds, "every request handled exactly once");
    assert!(a > 0 && b > 0, "both consumers got a share: {a} / {b}");
    // All eight agents are present on the one server state.
    let present = cloud
        .server
        .store()
        .network(&loopback())
        .map(|record| record.present(now()))
        .unwrap_or(0);
    assert_eq!(present, 8);
}

/// One of two server instances goes away mid-flow: the broker hands the shared subscription's
/// requests to the other, and the link completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_leaving_mid_flow_does_not_break_linking() {
    let Some(binary) = mosquitto_or_skip("a_consumer_leaving_mid_flow_does_not_break_linking")
    else {
        return;
    };
    let mosquitto = Mosquitto::start(binary, false);
    let broker = mosquitto.broker();
    let mut cloud = cloud(&broker, 2, server_config(Duration::from_secs(2))).await;
    let (agent, _) = start_agent(Duration::from_secs(2)).await;
    let (task, _) = spawn_agent_driver(&agent, mqtt_transport(&broker, &cloud.base));
    wait_discovered(&cloud.base).await;
    drop(cloud.consumers.remove(0));
    let survivor_before = cloud.consumers[0].handled();
    let (linked, _) = link_over_http(&cloud.base).await;
    linked.expect("linked through the remaining instance");
    let status = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, AgentStatus::Linked);
    assert!(cloud.consumers[0].handled() > survivor_before);
}

/// Forged, tampered, expired and replayed tickets are refused over MQTT with their codes, and
/// nothing is recorded for them; a valid ticket for another network puts the agent in that
/// network (invisible from its real one) and cannot redeem a code bound to its real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_tickets_are_refused() {
    let Some(binary) = mosquitto_or_skip("forged_and_replayed_tickets_are_refused") else {
        return;
    };
    let mosquitto = Mosquitto::start(binary, false);
    let broker = mosquitto.broker();
    let cloud = cloud(&broker, 1, ServerConfig::default()).await;
    let key = cloud.key.clone();
    let (a_key, a_secret) = (
        PresenceKey::generate(&mut lanlink::os_rng()),
        LocalSecret::generate(&mut lanlink::os_rng()),
    );
    let b_key = PresenceKey::generate(&mut lanlink::os_rng());
    let (a, b) = (a_key.instance_id(), b_key.instance_id());
    let a_announce = announce_for(&a_key, &a_secret);
    let b_announce = announce_for(&b_key, &LocalSecret::generate(&mut lanlink::os_rng()));
    let a_client = key.client_id(&a);
    let b_client = key.client_id(&b);
    let mut raw_a = RawClient::connect(mosquitto.port, &a_client).await;
    assert!(raw_a.subscribe(&broker.down_topic(&a_client)).await);
    let mut raw_b = RawClient::connect(mosquitto.port, &b_client).await;
    assert!(raw_b.subscribe(&broker.down_topic(&b_client)).await);
    let a_up = broker.up_topic(&a_client);

    let valid = key.issue(now(), TimeDelta::minutes(5), loopback(), a).token;
    let forged = TicketKey::generate(&mut lanlink::os_rng())
        .issue(now(), TimeDelta::minutes(5), loopback(), a)
        .token;
    let mut tampered = valid.clone().into_bytes();
    tampered[20] = if tampered[20] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    let expired = key
        .issue(
            now() - TimeDelta::hours(1),
            TimeDelta::minutes(5),
            loopback(),
            a,
        )
        .token;
    let cases = [
        ("forged", forged, "bad_ticket"),
        ("tampered", tampered, "bad_ticket"),
        ("expired", expired, "ticket_expired"),
        ("garbage", "not a ticket".to_owned(), "bad_ticket"),
    ];
    for (name, ticket, code) in cases {
        raw_a
            .publish(&a_up, up_announce(name, ticket, &a_announce))
            .await;
        let reply = raw_a.next_down().await;
        assert_eq!(refused_code(&reply), Some(code), "{name}: {reply:?}");
    }
    // Replayed: A's ticket with B's announcement, from B's client id.
    raw_b
        .publish(
            &broker.up_topic(&b_client),
            up_announce("replay", valid.clone(), &b_announce),
        )
        .await;
    let reply = raw_b.next_down().await;
    assert_eq!(refused_code(&reply), Some("ticket_wrong_instance"));
    // A valid ticket for B sent from A's client id: its reply would go to the wrong topic.
    let b_ticket = key.issue(now(), TimeDelta::minutes(5), loopback(), b).token;
    raw_a
        .publish(&a_up, up_announce("wrong-client", b_ticket, &b_announce))
        .await;
    let reply = raw_a.next_down().await;
    assert_eq!(refused_code(&reply), Some("wrong_client"));
    // Nothing was recorded by any of them.
    assert!(cloud
        .server
        .store()
        .network(&loopback())
        .is_none_or(|record| record.present(now()) == 0));

    // Garbage on the up topic (not JSON, oversized, bad correlation id, binary) is dropped
    // without a reply, and the consumer keeps serving.
    let handled = cloud.consumers[0].handled();
    raw_a.publish(&a_up, b"not json".to_vec()).await;
    raw_a.publish(&a_up, vec![b'{'; 64 * 1024]).await;
    raw_a.publish(&a_up, (0..=255u8).collect()).await;
    raw_a
        .publish(
            &a_up,
            up_announce("bad id/with+wildcards", valid.clone(), &a_announce),
        )
        .await;
    raw_a
        .publish(
            &format!("{a_up}/extra"),
            up_announce("extra", valid.clone(), &a_announce),
        )
        .await;
    assert!(raw_a.next(Duration::from_millis(500)).await.is_none());
    assert_eq!(cloud.consumers[0].handled(), handled);

    // A valid ticket for another network: the agent lands there, invisible from 127.0.0.1.
    let elsewhere = PublicNetwork::from_ip("198.51.100.7".parse().unwrap(), 64);
    let away = key.issue(now(), TimeDelta::minutes(5), elsewhere, a).token;
    raw_a
        .publish(&a_up, up_announce("away", away.clone(), &a_announce))
        .await;
    assert!(matches!(
        raw_a.next_down().await,
        DownMessage::Announced { .. }
    ));
    let linker = HttpLinkerClient::new(&cloud.base, TOKEN).unwrap();
    assert!(linker.discover().await.unwrap().agents.is_empty());

    // The real network: the control case is accepted, and a link delivers a code bound to it.
    raw_a
        .publish(&a_up, up_announce("home", valid.clone(), &a_announce))
        .await;
    assert!(matches!(
        raw_a.next_down().await,
        DownMessage::Announced { .. }
    ));
    assert_eq!(linker.discover().await.unwrap().agents.len(), 1);
    let accepted = linker.link(&LinkRequest::new(a, a_secret)).await.unwrap();
    assert_eq!(accepted.state, LinkState::Pending);
    // The wake arrives first (the link handler published it), then the announce reply.
    let mut code = None;
    raw_a
        .publish(&a_up, up_announce("fetch", valid.clone(), &a_announce))
        .await;
    for _ in 0..3 {
        match raw_a.next_down().await {
            DownMessage::Wake => continue,
            DownMessage::Announced { reply, .. } => {
                for message in reply.messages {
                    if let AgentMessage::VerifyAndRedeem { code: c, .. } = message {
                        code = Some(c);
                    }
                }
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let code = code.expect("the code was delivered");
    let redeem = RedeemRequest::new(a, code);
    // Redeeming from the other network's ticket fails; from the right one it succeeds.
    raw_a.publish(&a_up, up_redeem("r1", away, &redeem)).await;
    assert_eq!(refused_code(&raw_a.next_down().await), Some("invalid_code"));
    raw_a.publish(&a_up, up_redeem("r2", valid, &redeem)).await;
    assert!(matches!(
        raw_a.next_down().await,
        DownMessage::Redeemed { .. }
    ));
    assert_eq!(
        linker.link_status(&a).await.unwrap().state,
        LinkState::Linked
    );
}

/// Whether a client connected as `intruder` on `mosquitto` receives anything meant for another
/// agent, after subscribing to that agent's topic and to every agent's topic.
async fn intruder_reads_victim(mosquitto: &Mosquitto, cloud: &Cloud) -> bool {
    let broker = mosquitto.broker();
    let key = &cloud.key;
    let victim = PresenceKey::generate(&mut lanlink::os_rng()).instance_id();
    let victim_client = key.client_id(&victim);
    let intruder_client =
        key.client_id(&PresenceKey::generate(&mut lanlink::os_rng()).instance_id());
    let mut intruder = RawClient::connect(mosquitto.port, &intruder_client).await;
    let granted_one = intruder.subscribe(&broker.down_topic(&victim_client)).await;
    let granted_all = intruder.subscribe("lanlink/v1/down/#").await;
    // mosquitto 2.0.11 answers a denied subscription with a success code and then delivers
    // nothing: what counts is delivery, checked below.
    println!("SUBACK for another's topic: {granted_one}, for all agents' topics: {granted_all}");
    let mut victim_raw = RawClient::connect(mosquitto.port, &victim_client).await;
    assert!(
        victim_raw
            .subscribe(&broker.down_topic(&victim_client))
            .await
    );
    assert!(cloud.consumers[0].waker().wake(&victim));
    let (topic, _) = victim_raw
        .next(Duration::from_secs(5))
        .await
        .expect("the victim gets its wake");
    assert_eq!(topic, broker.down_topic(&victim_client));
    intruder.next(Duration::from_millis(700)).await.is_some()
}

/// With the documented ACL, an agent receives nothing from another agent's topic (nor from all
/// of them), cannot publish as another agent, and a full link still works through it. The same
/// steps on a broker without the ACL do leak, so the check can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_keeps_agents_off_each_others_topics() {
    let Some(binary) = mosquitto_or_skip("acl_keeps_agents_off_each_others_topics") else {
        return;
    };
    // Control: without the ACL, the intruder reads the victim's topic.
    {
        let open = Mosquitto::start(binary.clone(), false);
        let cloud = cloud(&open.broker(), 1, ServerConfig::default()).await;
        assert!(
            intruder_reads_victim(&open, &cloud).await,
            "control: an open broker leaks"
        );
    }
    let mosquitto = Mosquitto::start(binary, true);
    let broker = mosquitto.broker().credentials(SERVER_USER, SERVER_PASSWORD);
    let cloud = cloud(&broker, 1, server_config(Duration::from_secs(2))).await;
    assert!(
        !intruder_reads_victim(&mosquitto, &cloud).await,
        "the ACL let an agent read another's topic"
    );

    // The intruder cannot publish as the victim: the server never sees it.
    let key = &cloud.key;
    let victim_client = key.client_id(&PresenceKey::generate(&mut lanlink::os_rng()).instance_id());
    let intruder_client =
        key.client_id(&PresenceKey::generate(&mut lanlink::os_rng()).instance_id());
    let intruder = RawClient::connect(mosquitto.port, &intruder_client).await;
    let before = cloud.consumers[0].handled();
    let junk = announce_for(
        &PresenceKey::generate(&mut lanlink::os_rng()),
        &LocalSecret::generate(&mut lanlink::os_rng()),
    );
    intruder
        .publish(
            &broker.up_topic(&victim_client),
            up_announce("x", "00".into(), &junk),
        )
        .await;
    // Its own up topic does reach the server (refused for its bad ticket): the ACL is what
    // stopped the other.
    intruder
        .publish(
            &broker.up_topic(&intruder_client),
            up_announce("y", "00".into(), &junk),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while cloud.consumers[0].handled() == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cloud.consumers[0].handled(), before + 1);

    // The protocol works under the ACL.
    let (agent, _) = start_agent(Duration::from_secs(2)).await;
    let (task, _) = spawn_agent_driver(&agent, mqtt_transport(&mosquitto.broker(), &cloud.base));
    wait_discovered(&cloud.base).await;
    let (linked, _) = link_over_http(&cloud.base).await;
    linked.expect("linked under the ACL");
    let status = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, AgentStatus::Linked);
}

/// The broker is killed (SIGKILL, no persistence) after the agent is present and restarted a
/// little later, while the linker links over HTTP: the agent reconnects, receives its message,
/// redeems, and the link completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_flow_delays_but_links() {
    let Some(binary) = mosquitto_or_skip("broker_restart_mid_flow_delays_but_links") else {
        return;
    };
    let mut mosquitto = Mosquitto::start(binary, false);
    let broker = mosquitto.broker();
    let interval = Duration::from_secs(2);
    // The presence must outlive the outage: 1.5 s down, up to 3 s of reconnect back-off on each
    // side, and a request lost meanwhile (5 s until the agent's timeout). With the default 6 s
    // (three intervals) a loaded machine lets it lapse, and the lapsed instance is refused as
    // used (`instance_used`), ending the agent's discovery: that is the protocol, not the
    // restart this test is about.
    let config = server_config(interval).presence_ttl(Duration::from_secs(30));
    let cloud = cloud(&broker, 1, config).await;
    let (agent, _) = start_agent(interval).await;
    let (task, events) = spawn_agent_driver(&agent, mqtt_transport(&broker, &cloud.base));
    wait_discovered(&cloud.base).await;

    mosquitto.kill();
    let killed = Instant::now();
    let linking = tokio::spawn({
        let base = cloud.base.clone();
        async move { link_over_http(&base).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    mosquitto.spawn();
    let restarted = Instant::now();

    let (linked, _) = tokio::time::timeout(Duration::from_secs(60), linking)
        .await
        .expect("the linker finishes")
        .unwrap();
    linked.expect("linked despite the restart");
    let status = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, AgentStatus::Linked);
    let done = linked_at(&events).unwrap();
    println!(
        "broker down {:?}; agent linked {:?} after the restart",
        restarted - killed,
        done - restarted
    );
    assert!(
        cloud.consumers[0]
            .wait_subscribed(Duration::from_secs(1))
            .await
    );
    // A transport error never ended the agent's discovery.
    assert!(!events
        .lock()
        .unwrap()
        .iter()
        .any(|(_, e)| matches!(e, AgentEvent::Stopped { .. })));
}

/// A transport without a ticket route refuses cleanly: the HTTP server answers 404 and the
/// agent's announce fails as a refusal, never a panic or a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ticket_route_is_a_clean_refusal() {
    let Some(binary) = mosquitto_or_skip("missing_ticket_route_is_a_clean_refusal") else {
        return;
    };
    let mosquitto = Mosquitto::start(binary, false);
    let server: SharedServer = Arc::new(Server::new(ServerConfig::default()).unwrap());
    let app = router(server, Arc::new(BearerTokens::default()), DEFAULT_PREFIX);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(http::serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending(),
    ));
    let transport = mqtt_transport(&mosquitto.broker(), &base);
    let key = PresenceKey::generate(&mut lanlink::os_rng());
    let announce = announce_for(&key, &LocalSecret::generate(&mut lanlink::os_rng()));
    let err = transport.announce(&announce).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Refused { status: 404, .. }),
        "{err:?}"
    );
    // And a redeem before any announce has no ticket to show.
    let redeem = RedeemRequest::new(
        key.instance_id(),
        lanlink::LinkCode::parse("123456").unwrap(),
    );
    let transport = mqtt_transport(&mosquitto.broker(), &base);
    assert!(transport.redeem(&redeem).await.is_err());
}

/// The ticket route (no broker needed): it refuses an announcement whose key does not derive its
/// id, and signs the network it resolved the same way as every route (behind a trusted proxy:
/// the forwarded client; a client-written header from an untrusted peer: ignored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_route_proves_the_key_and_resolves_the_network() {
    let key = TicketKey::generate(&mut lanlink::os_rng());
    let config = ServerConfig::default().trusted_proxies(vec!["127.0.0.2/32".parse().unwrap()]);
    let app = ticket::router(key.clone(), config, DEFAULT_PREFIX);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(http::serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending(),
    ));
    let client = HttpAgentClient::new(&base).unwrap();
    let presence = PresenceKey::generate(&mut lanlink::os_rng());
    let announce = announce_for(&presence, &LocalSecret::generate(&mut lanlink::os_rng()));
    let id = announce.instance_id;

    let reply = client.ticket(&announce).await.unwrap();
    let ticket = key.verify(now(), &reply.ticket, &id).unwrap();
    assert_eq!(ticket.network, loopback());
    assert_eq!(ticket.expires_at, reply.expires_at);
    assert!(reply.expires_at > now() + TimeDelta::minutes(4));
    assert_eq!(reply.client_id, key.client_id(&id));

    // Someone else's id with a key that does not derive it.
    let mut forged = announce.clone();
    forged.presence_key = PresenceKey::generate(&mut lanlink::os_rng());
    let err = client.ticket(&forged).await.unwrap_err();
    assert_eq!(
        err,
        TransportError::Refused {
            status: 403,
            code: lanlink::WireCode::ForgedInstance
        }
    );

    // 127.0.0.1 is not a trusted proxy: its X-Forwarded-For is not believed.
    let raw = http::client::default_client().unwrap();
    let answer = raw
        .post(format!("{base}{DEFAULT_PREFIX}/agent/ticket"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", "198.51.100.7")
        .body(wire::encode(&announce).to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let reply: lanlink::ticket::TicketReply =
        serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(
        key.verify(now(), &reply.ticket, &id).unwrap().network,
        loopback()
    );

    // From the trusted proxy 127.0.0.2, the forwarded client's network is signed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let server_addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(server_addr).await.unwrap();
    let body = wire::encode(&announce);
    let head = format!(
        "POST {DEFAULT_PREFIX}/agent/ticket HTTP/1.1\r\nHost: cloud\r\nContent-Type: application/json\r\nX-Forwarded-For: 198.51.100.7\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (_, json) = text.split_once("\r\n\r\n").unwrap();
    let reply: lanlink::ticket::TicketReply = serde_json::from_str(json).unwrap();
    let forwarded = PublicNetwork::from_ip("198.51.100.7".parse().unwrap(), 64);
    assert_eq!(
        key.verify(now(), &reply.ticket, &id).unwrap().network,
        forwarded
    );
}

/// A backend that takes 100 ms per request and records how many of its calls overlap.
struct SlowBackend {
    inner: SharedServer,
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl MqttBackend for SlowBackend {
    async fn handle_up(
        &self,
        now: DateTime<Utc>,
        key: &TicketKey,
        prefix: &str,
        topic: &str,
        payload: &[u8],
    ) -> Result<Reply, Dropped> {
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(running, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.inner.handle_up(now, key, prefix, topic, payload).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_work_is_bounded_and_every_request_is_still_answered() {
    let Some(binary) =
        mosquitto_or_skip("consumer_work_is_bounded_and_every_request_is_still_answered")
    else {
        return;
    };
    let mosquitto = Mosquitto::start(binary, false);
    let broker = mosquitto.broker();
    let server: SharedServer = Arc::new(Server::new(ServerConfig::default()).unwrap());
    let backend = Arc::new(SlowBackend {
        inner: server,
        running: Default::default(),
        most: Default::default(),
    });
    let key = TicketKey::generate(&mut lanlink::os_rng());
    let config = MqttServerConfig::new(broker.clone(), "server-bounded", key.clone())
        .unwrap()
        .max_in_flight(2);
    let consumer = MqttServer::spawn(config, Arc::clone(&backend) as Arc<dyn MqttBackend>);
    assert!(consumer.wait_subscribed(Duration::from_secs(10)).await);

    let presence = PresenceKey::generate(&mut lanlink::os_rng());
    let announce = announce_for(&presence, &LocalSecret::generate(&mut lanlink::os_rng()));
    let id = presence.instance_id();
    let client_id = key.client_id(&id);
    let mut raw = RawClient::connect(mosquitto.port, &client_id).await;
    assert!(raw.subscribe(&broker.down_topic(&client_id)).await);
    let ticket = key
        .issue(now(), TimeDelta::minutes(5), loopback(), id)
        .token;

    // Ten requests at once against a limit of two.
    let started = Instant::now();
    let requests = 10;
    for i in 0..requests {
        raw.publish(
            &broker.up_topic(&client_id),
            up_announce(&format!("r{i}"), ticket.clone(), &announce),
        )
        .await;
    }
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < requests {
        let id = match raw.next_down().await {
            DownMessage::Announced { id, .. } | DownMessage::Refused { id, .. } => id,
            other => panic!("unexpected {other:?}"),
        };
        assert!(answered.insert(id), "answered once each");
    }
    let most = backend.most.load(Ordering::SeqCst);
    assert_eq!(
        most, 2,
        "never more than the limit at once, and the limit is used"
    );
    // Two at a time, 100 ms each: the consumer waited for slots rather than drop anything.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(consumer.handled(), requests as u64);
    assert_eq!(consumer.replies_dropped(), 0);
}

/// 300 guesses at a manual code redeemed over MQTT from one network (the ticket's), handled by
/// two consumers of the shared subscription, the right code at a random place: at most the
/// threshold (5) are checked, and only the right code can redeem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redemption_burst_over_mqtt_checks_at_most_the_threshold() {
    let Some(binary) =
        mosquitto_or_skip("a_redemption_burst_over_mqtt_checks_at_most_the_threshold")
    else {
        return;
    };
    let mosquitto = Mosquitto::start(binary, false);
    let broker = mosquitto.broker();
    let cloud = cloud(&broker, 2, ServerConfig::default()).await;
    let alice = AccountId::new("alice").unwrap();
    let right = cloud
        .server
        .mint_code(now(), &mut lanlink::os_rng(), &alice)
        .await
        .unwrap()
        .code;
    let key = PresenceKey::generate(&mut lanlink::os_rng());
    let id = key.instance_id();
    let client = cloud.key.client_id(&id);
    let mut raw = RawClient::connect(mosquitto.port, &client).await;
    assert!(raw.subscribe(&broker.down_topic(&client)).await);
    let up = broker.up_topic(&client);
    let ticket = cloud
        .key
        .issue(now(), TimeDelta::minutes(5), loopback(), id)
        .token;
    let right_at = rand::Rng::random_range(&mut lanlink::os_rng(), 0..300usize);
    let (mut checked, mut redeemed) = (0, None);
    // In batches of 50, so that no reply queue overflows.
    for batch in 0..6usize {
        for n in batch * 50..(batch + 1) * 50 {
            let text = format!("{:06}", n * 3331 % 1_000_000);
            let code = if n == right_at {
                right.clone()
            } else if text == right.expose() {
                lanlink::LinkCode::parse("0000000").unwrap()
            } else {
                lanlink::LinkCode::parse(&text).unwrap()
            };
            let request = RedeemRequest::new(id, code);
            raw.publish(&up, up_redeem(&format!("g{n}"), ticket.clone(), &request))
                .await;
        }
        for _ in 0..50 {
            let (_, payload) = raw
                .next(Duration::from_secs(30))
                .await
                .expect("a reply to every guess");
            match wire::decode::<DownMessage>(&payload, lanlink::mqtt::MAX_DOWN_BYTES).unwrap() {
                DownMessage::Redeemed { id, .. } => {
                    checked += 1;
                    redeemed = Some(id);
                }
                DownMessage::Refused { error, .. } if error == "invalid_code" => checked += 1,
                DownMessage::Refused { error, .. } if error == "locked_out" => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    println!("redemption burst over MQTT: {checked} checked, right code redeemed: {redeemed:?}");
    // The right code, when admitted, is checked too (and refunded): wrong ones stay at most 5.
    let wrong_checked = checked - usize::from(redeemed.is_some());
    assert!(wrong_checked <= 5, "{wrong_checked} wrong guesses checked");
    assert!(checked >= 1, "the budget admits guesses");
    if let Some(reply_id) = redeemed {
        assert_eq!(
            reply_id,
            format!("g{right_at}"),
            "only the right code redeems"
        );
    }
}
