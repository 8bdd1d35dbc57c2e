//! Held requests (revision 1.6), the server's side over real sockets: a link answers an agent's
//! held announcement at once, on the same instance or across instances sharing Redis (one node
//! and a cluster); no wake-up is lost between the check and the subscription; a lost ring
//! costs one recheck at most; held requests count against their client's connection slots.
#![cfg(feature = "http")]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lanlink::http::hold::{Bell, LinkBell, Listener};
use lanlink::http::{self, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::server::{Backend, Server, ServerConfig, User};
use lanlink::wire::{self, Announce, AnnounceReply, LinkRequest};
use lanlink::{AccountId, InstanceId, LocalSecret, PublicNetwork};
use support::announcement;

const TOKEN: &str = "alice-token";

/// A server whose announce interval (and so its recheck of held requests) is 10 s: an answer
/// well within that came from a ring.
fn slow_config() -> ServerConfig {
    ServerConfig::default()
        .announce_interval(Duration::from_secs(10))
        .presence_ttl(Duration::from_secs(25))
        .max_visible(4)
}

fn auth() -> Arc<BearerTokens> {
    support::net::bearer(&[(TOKEN, "alice")])
}

/// Serves `server`'s routes, woken by `bell`, on 127.0.0.1 with `serve_config`.
async fn start<S: Backend + 'static>(
    server: Arc<Server<S>>,
    bell: Arc<dyn Bell>,
    serve_config: ServeConfig,
) -> SocketAddr {
    let router = http::server::router_with_bell(server, auth(), DEFAULT_PREFIX, bell);
    support::net::serve_on_loopback(router, serve_config).await
}

/// A client of its own (its own connection), with no pooling across tests.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Sends `announce` with a hold of `hold_ms`; the reply, and how long it took.
fn announce_held(
    addr: SocketAddr,
    announce: &Announce,
    hold_ms: u32,
) -> tokio::task::JoinHandle<Result<(AnnounceReply, Instant), String>> {
    let body = wire::encode(&announce.clone().with_hold(hold_ms)).to_vec();
    tokio::spawn(async move {
        let response = client()
            .post(format!("http://{addr}{DEFAULT_PREFIX}/agent/announce"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        }
        let reply = wire::decode(&bytes, wire::MAX_MESSAGE_BYTES).map_err(|e| e.to_string())?;
        Ok((reply, Instant::now()))
    })
}

/// Links `instance_id` with `secret` through the server at `addr`; when the `202` came.
async fn link(addr: SocketAddr, instance_id: InstanceId, secret: &LocalSecret) -> Instant {
    let body = wire::encode(&LinkRequest::new(instance_id, secret.clone())).to_vec();
    let response = client()
        .post(format!("http://{addr}{DEFAULT_PREFIX}/link"))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    let at = Instant::now();
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    at
}

/// Waits until `listened` says `n` requests are held.
async fn until_held(listened: impl Fn() -> usize, n: usize) {
    let start = Instant::now();
    while listened() < n {
        assert!(start.elapsed() < Duration::from_secs(10), "never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_link_answers_the_held_announcement_at_once() {
    let server = Arc::new(Server::new(slow_config()).unwrap());
    let bell = Arc::new(LinkBell::default());
    let addr = start(server, bell.clone(), ServeConfig::default()).await;
    // Nothing waits: the request is held; the link answers it.
    link_answers_held(addr, addr, || bell.listened(), 1).await;
}

/// An agent (`n`) held on `held_on` (whose held requests `listened` counts) is answered with
/// its message within 1 s of a link accepted by `accept` (the recheck is 10 s).
async fn link_answers_held(
    accept: SocketAddr,
    held_on: SocketAddr,
    listened: impl Fn() -> usize,
    n: u32,
) {
    let (announce, secret) = announcement(n, "192.168.1.50");
    let held = announce_held(held_on, &announce, 20_000);
    until_held(&listened, listened() + 1).await;
    let accepted = link(accept, announce.instance_id, &secret).await;
    let (reply, answered) = held.await.unwrap().unwrap();
    assert_eq!(reply.messages.len(), 1, "the link's message");
    let took = answered.saturating_duration_since(accepted);
    assert!(
        took < Duration::from_secs(1),
        "answered {took:?} after the link (the recheck is 10 s)"
    );
}

#[tokio::test]
async fn a_held_announcement_with_nothing_to_say_is_answered_at_its_hold() {
    let server = Arc::new(Server::new(slow_config()).unwrap());
    let bell = Arc::new(LinkBell::default());
    let addr = start(server, bell.clone(), ServeConfig::default()).await;
    let (announce, _) = announcement(2, "192.168.1.50");
    let sent = Instant::now();
    let (reply, answered) = announce_held(addr, &announce, 1_500)
        .await
        .unwrap()
        .unwrap();
    let took = answered - sent;
    assert!(reply.messages.is_empty());
    assert!(
        took >= Duration::from_millis(1_400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Nothing is left listening once it is answered.
    assert_eq!(bell.listened(), 0);
}

/// A bell that, the first time a request starts listening, first lets a link be accepted
/// (with its ring, which no one hears yet) and only then listens: the link lands exactly
/// between a check and a subscription if the hold checked first.
struct LinkWhileSubscribing {
    inner: LinkBell,
    armed: AtomicBool,
    link: Box<dyn Fn() + Send + Sync>,
}

impl Bell for LinkWhileSubscribing {
    fn ring(&self, instance_id: &InstanceId) {
        self.inner.ring(instance_id);
    }

    fn listen(&self, instance_id: &InstanceId) -> Listener {
        if self.armed.swap(false, Ordering::SeqCst) {
            (self.link)();
        }
        self.inner.listen(instance_id)
    }
}

#[tokio::test]
async fn a_link_between_the_check_and_the_subscription_is_not_lost() {
    let server = Arc::new(Server::new(slow_config()).unwrap());
    let (announce, secret) = announcement(3, "192.168.1.50");
    let instance_id = announce.instance_id;
    let linker = Arc::clone(&server);
    let home = PublicNetwork::from_ip("127.0.0.1".parse().unwrap(), 64);
    let bell = Arc::new(LinkWhileSubscribing {
        inner: LinkBell::default(),
        armed: AtomicBool::new(true),
        link: Box::new(move || {
            // The in-memory store answers at once: the link is accepted and its ring sent
            // before the held request listens.
            let now = DateTime::<Utc>::from(std::time::SystemTime::now());
            let user = User::new(AccountId::new("alice").unwrap());
            let request = LinkRequest::new(instance_id, secret.clone());
            let linked = support::steps::ready(linker.link(
                now,
                &mut lanlink::os_rng(),
                home,
                &user,
                request,
            ));
            assert!(linked.is_ok(), "{linked:?}");
        }),
    });
    let addr = start(server, bell.clone(), ServeConfig::default()).await;
    let sent = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(3),
        announce_held(addr, &announce, 20_000),
    )
    .await
    .expect("answered before the next recheck (10 s): the wake-up was not lost");
    let (reply, _) = answer.unwrap().unwrap();
    assert!(!bell.armed.load(Ordering::SeqCst), "the link ran");
    assert_eq!(reply.messages.len(), 1, "took {:?}", sent.elapsed());
}

/// A bell that never rings: every ring is lost.
#[derive(Default)]
struct Deaf(LinkBell);

impl Bell for Deaf {
    fn ring(&self, _: &InstanceId) {}

    fn listen(&self, instance_id: &InstanceId) -> Listener {
        self.0.listen(instance_id)
    }
}

#[tokio::test]
async fn a_lost_ring_costs_at_most_one_recheck() {
    // The default announce interval, 2 s: the recheck of a held request.
    let server = Arc::new(Server::new(ServerConfig::default()).unwrap());
    let bell = Arc::new(Deaf::default());
    let addr = start(server, bell.clone(), ServeConfig::default()).await;
    let (announce, secret) = announcement(4, "192.168.1.50");
    let held = announce_held(addr, &announce, 20_000);
    until_held(|| bell.0.listened(), 1).await;
    let accepted = link(addr, announce.instance_id, &secret).await;
    let (reply, answered) = held.await.unwrap().unwrap();
    assert_eq!(reply.messages.len(), 1);
    let took = answered.saturating_duration_since(accepted);
    assert!(
        took <= Duration::from_millis(2_500),
        "{took:?}: more than one recheck"
    );
}

#[tokio::test]
async fn held_requests_count_against_their_clients_slots() {
    let server = Arc::new(Server::new(slow_config().max_hold(Duration::from_secs(3))).unwrap());
    let bell = Arc::new(LinkBell::default());
    let serve_config = ServeConfig {
        max_connections_per_client: 3,
        ..ServeConfig::default()
    };
    let addr = start(server, bell.clone(), serve_config).await;
    let held: Vec<_> = (10..13)
        .map(|n| announce_held(addr, &announcement(n, "192.168.1.50").0, 3_000))
        .collect();
    until_held(|| bell.listened(), 3).await;
    // A fourth connection from the same client is closed unanswered while three are held.
    let (fourth, _) = announcement(13, "192.168.1.50");
    let refused = announce_held(addr, &fourth, 0).await.unwrap();
    assert!(
        refused.is_err(),
        "a fourth connection was served: {refused:?}"
    );
    // Once the holds end (and their connections close), the client is served again.
    for held in held {
        assert!(held.await.unwrap().is_ok());
    }
    let served = announce_held(addr, &fourth, 0).await.unwrap();
    assert!(served.is_ok(), "{served:?}");
}

/// A held agent stays present (discovery shows it) until one presence lifetime past its hold,
/// though it does not announce meanwhile; an announcement through the direct API (MQTT's path)
/// is never held and keeps the usual lifetime.
#[test]
fn a_held_presence_lives_one_lifetime_past_the_hold() {
    use lanlink::endpoint::HttpRequest;
    use lanlink::server::endpoint::{handle, Handled, RequestBody};
    use support::steps::ready;
    let server = Server::new(ServerConfig::default()).unwrap();
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let peer = "203.0.113.7".parse().unwrap();
    let home = PublicNetwork::from_ip(peer, 64);
    let alice = User::new(AccountId::new("alice").unwrap());
    let shown = |at: DateTime<Utc>| {
        let reply = ready(server.discover(at, home, &alice)).unwrap();
        reply.agents.iter().count()
    };
    let (held, _) = announcement(40, "192.168.1.50");
    let body = wire::encode(&held.clone().with_hold(20_000));
    let request = HttpRequest {
        method: "POST",
        path: "/lanlink/v1/agent/announce",
        query: None,
        authority: None,
        headers: &[],
        peer: Some(peer),
    };
    let handled = ready(handle(
        &server,
        t0,
        &mut lanlink::os_rng(),
        DEFAULT_PREFIX,
        &request,
        RequestBody::Complete(&body),
        None,
    ));
    let Handled::Hold(hold) = handled else {
        panic!("held")
    };
    assert_eq!(hold.until(), t0 + chrono::Duration::seconds(20));
    let at = |s: i64| t0 + chrono::Duration::milliseconds(s);
    assert_eq!(shown(at(25_900)), 1, "present until 20 s + 6 s");
    assert_eq!(shown(at(26_100)), 0, "gone after");
    // The direct API (MQTT's path) never holds: the usual 6 s.
    let (direct, _) = announcement(41, "192.168.1.60");
    let reply = ready(server.announce(at(30_000), home, &direct.with_hold(20_000))).unwrap();
    assert!(reply.messages.is_empty());
    assert_eq!(shown(at(35_900)), 1);
    assert_eq!(shown(at(36_100)), 0);
}

#[tokio::test]
async fn a_held_request_outlives_its_connections_timeout() {
    // A connection takes requests for 1 s; the request held on it for 2 s is still answered
    // (a keep-alive connection of an agent that holds again and again is not cut mid-hold).
    let server = Arc::new(Server::new(slow_config()).unwrap());
    let bell = Arc::new(LinkBell::default());
    let serve_config = ServeConfig {
        connection_timeout: Duration::from_secs(1),
        ..ServeConfig::default()
    };
    let addr = start(server, bell, serve_config).await;
    let (announce, _) = announcement(14, "192.168.1.50");
    let answer = announce_held(addr, &announce, 2_000).await.unwrap();
    assert!(answer.is_ok(), "{answer:?}");
}

#[cfg(feature = "redis")]
mod across_instances {
    use super::*;
    use lanlink::http::hold::RedisBell;
    use lanlink::server::redis::{RedisStore, RedisStoreConfig};
    use lanlink::server::{Events, Records, RecordsConfig, StoreKey};
    use support::redis_cluster::Cluster;
    use support::redis_server::Redis;

    /// Two instances over one store (`config` connects each its own way), each with its own
    /// bell on `nodes`; the second's bell for counting held requests.
    async fn two_instances(
        config: impl Fn() -> RedisStoreConfig,
        nodes: &[String],
    ) -> (SocketAddr, SocketAddr, RedisBell) {
        let mut addrs = Vec::new();
        let mut bells = Vec::new();
        for _ in 0..2 {
            let store = RedisStore::connect(config()).await.expect("redis");
            let records = Records::new(store, RecordsConfig::new(StoreKey::from_bytes([7; 32])));
            let server =
                Server::with_store(slow_config(), records, Events::discard()).expect("config");
            let bell = RedisBell::connect(nodes, "lanlink-test:bell")
                .await
                .expect("subscribed");
            addrs.push(
                start(
                    Arc::new(server),
                    Arc::new(bell.clone()),
                    ServeConfig::default(),
                )
                .await,
            );
            bells.push(bell);
        }
        (addrs[0], addrs[1], bells.pop().unwrap())
    }

    /// An agent held on B is answered at once by a link accepted on A.
    async fn wake_across(a: SocketAddr, b: SocketAddr, bell_b: &RedisBell, n: u32) {
        link_answers_held(a, b, || bell_b.listened(), n).await;
    }

    /// One Redis, and two instances on it: (the Redis, its URL, A, B and B's bell).
    async fn two_on_one_redis() -> (Redis, String, SocketAddr, SocketAddr, RedisBell) {
        let redis = Redis::start();
        let url = redis.url();
        let (a, b, bell_b) = two_instances(
            || RedisStoreConfig::new(url.clone()),
            std::slice::from_ref(&url),
        )
        .await;
        (redis, url, a, b, bell_b)
    }

    #[tokio::test]
    async fn a_link_on_one_instance_wakes_the_agent_held_on_another() {
        let (_redis, _, a, b, bell_b) = two_on_one_redis().await;
        wake_across(a, b, &bell_b, 20).await;
    }

    #[tokio::test]
    async fn a_lost_subscription_comes_back_and_every_hold_looks_again() {
        let (_redis, url, a, b, bell_b) = two_on_one_redis().await;
        let (announce, secret) = announcement(21, "192.168.1.50");
        let held = announce_held(b, &announce, 20_000);
        until_held(|| bell_b.listened(), 1).await;
        // Cut every subscription, and link at once: A's ring may be published while B is not
        // subscribed; B resubscribes and every hold of B looks again.
        let mut admin = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert!(killed >= 2, "both instances' subscriptions: {killed}");
        let accepted = link(a, announce.instance_id, &secret).await;
        let (reply, answered) = held.await.unwrap().unwrap();
        assert_eq!(reply.messages.len(), 1);
        let took = answered.saturating_duration_since(accepted);
        assert!(
            took < Duration::from_secs(3),
            "{took:?} (the recheck is 10 s)"
        );
        // And rings cross again afterwards.
        wake_across(a, b, &bell_b, 22).await;
    }

    #[tokio::test]
    async fn a_link_on_one_instance_wakes_the_agent_held_on_another_on_a_cluster() {
        let cluster = Cluster::start();
        let urls = cluster.urls();
        let (a, b, bell_b) =
            two_instances(|| RedisStoreConfig::cluster(urls.clone()), &urls[1..]).await;
        wake_across(a, b, &bell_b, 30).await;
    }
}
