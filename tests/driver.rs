//! The tokio drivers over a flaky in-process transport: retries with back-off on transport
//! errors, a clean stop when linked, when the server stays unreachable, and when an announcement
//! refusal ends discovery. Real (short) time; bounded.
#![cfg(feature = "tokio")]

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lanlink::agent::{Agent, AgentConfig, AgentStatus};
use lanlink::driver::{lock, run_agent, DriverConfig};
use lanlink::event::{RequestKind, StopReason};
use lanlink::server::{Server, ServerConfig};
use lanlink::transport::{AgentServerTransport, TransportError};
use lanlink::wire::{Announce, AnnounceReply, RedeemReply, RedeemRequest};
use lanlink::{AccountId, DeviceInfo, ForwardedHeaders, Refusal};

const HOME: &str = "203.0.113.7";

/// A transport to an in-process server that fails the first `fail_announces` announcements and
/// the first `fail_redeems` redemptions as unreachable.
struct Flaky {
    server: Server,
    fail_announces: AtomicU32,
    fail_redeems: AtomicU32,
    announces: AtomicU32,
    redeems: AtomicU32,
}

impl Flaky {
    fn new(fail_announces: u32, fail_redeems: u32) -> Self {
        let config = ServerConfig::default()
            .announce_interval(Duration::from_millis(100))
            .presence_ttl(Duration::from_millis(250));
        Self {
            server: Server::new(config).unwrap(),
            fail_announces: AtomicU32::new(fail_announces),
            fail_redeems: AtomicU32::new(fail_redeems),
            announces: AtomicU32::new(0),
            redeems: AtomicU32::new(0),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from(std::time::SystemTime::now())
    }

    fn take_failure(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[async_trait]
impl AgentServerTransport for Flaky {
    async fn announce(&self, announce: &Announce) -> Result<AnnounceReply, TransportError> {
        self.announces.fetch_add(1, Ordering::SeqCst);
        if Self::take_failure(&self.fail_announces) {
            return Err(TransportError::Unreachable("down".into()));
        }
        let peer: IpAddr = HOME.parse().unwrap();
        let refused = |refusal: Refusal| TransportError::Refused {
            status: 403,
            code: refusal.code(),
        };
        let network = self
            .server
            .caller(RequestKind::Announce, peer, ForwardedHeaders::NONE)
            .map_err(refused)?;
        self.server
            .announce(Self::now(), network, announce)
            .await
            .map_err(refused)
    }

    async fn redeem(&self, request: &RedeemRequest) -> Result<RedeemReply, TransportError> {
        self.redeems.fetch_add(1, Ordering::SeqCst);
        if Self::take_failure(&self.fail_redeems) {
            return Err(TransportError::Unreachable("down".into()));
        }
        let peer: IpAddr = HOME.parse().unwrap();
        let refused = |refusal: Refusal| TransportError::Refused {
            status: 403,
            code: refusal.code(),
        };
        let network = self
            .server
            .caller(RequestKind::Redeem, peer, ForwardedHeaders::NONE)
            .map_err(refused)?;
        self.server
            .redeem(Self::now(), &mut lanlink::os_rng(), network, request)
            .await
            .map(|redeemed| redeemed.reply)
            .map_err(refused)
    }
}

fn fast() -> DriverConfig {
    DriverConfig {
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(40),
        max_attempts: 4,
    }
}

fn agent(window: Duration) -> Arc<Mutex<Agent>> {
    let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default())
        .window(window)
        .announce_interval(Duration::from_millis(100))
        .redeem_timeout(Duration::from_millis(2500));
    Arc::new(Mutex::new(
        Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap(),
    ))
}

/// A manual code, minted on the transport's server and entered into the agent.
async fn enter_code(transport: &Flaky, agent: &Arc<Mutex<Agent>>) {
    let alice = AccountId::new("alice").unwrap();
    let code = transport
        .server
        .mint_code(Flaky::now(), &mut lanlink::os_rng(), &alice)
        .await
        .unwrap()
        .code;
    lock(agent).enter_code(Instant::now(), code).unwrap();
}

#[tokio::test]
async fn driver_retries_a_flaky_server_and_stops_when_linked() {
    let transport = Flaky::new(3, 2);
    let agent = agent(Duration::from_secs(30));
    enter_code(&transport, &agent).await;
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        run_agent(&agent, &transport, &fast(), |_| {}),
    )
    .await
    .expect("bounded");
    assert_eq!(status, AgentStatus::Linked);
    // Two failed redemptions, then the one that worked: retried, not given up.
    assert_eq!(transport.redeems.load(Ordering::SeqCst), 3);
    assert!(lock(&agent).auth_token().is_some());
}

#[tokio::test]
async fn driver_gives_up_on_an_unreachable_server_and_stops_cleanly() {
    let transport = Flaky::new(0, u32::MAX);
    let agent = agent(Duration::from_secs(30));
    enter_code(&transport, &agent).await;
    let started = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        run_agent(&agent, &transport, &fast(), |_| {}),
    )
    .await
    .expect("bounded");
    assert_eq!(status, AgentStatus::Stopped(StopReason::ServerUnreachable));
    // The agent retried on its own schedule (at 0, ≥ 0.375 s and ≥ 1.125 s: 500 ms doubling,
    // shortened by at most a quarter) and stopped at its 2.5 s redeem deadline, not before.
    let redeems = transport.redeems.load(Ordering::SeqCst);
    assert!((3..=5).contains(&redeems), "{redeems} attempts");
    assert!(started.elapsed() >= Duration::from_millis(2500));
}

#[tokio::test]
async fn driver_keeps_announcing_through_outages_until_the_window_ends() {
    let transport = Flaky::new(5, 0);
    let agent = agent(Duration::from_millis(1500));
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        run_agent(&agent, &transport, &fast(), |_| {}),
    )
    .await
    .expect("bounded");
    assert_eq!(status, AgentStatus::Stopped(StopReason::WindowExpired));
    // Five failures, and announcements kept coming after them.
    assert!(transport.announces.load(Ordering::SeqCst) > 6);
}

#[tokio::test]
async fn driver_stops_when_an_announcement_refusal_ends_discovery() {
    let transport = Flaky::new(0, 0);
    let agent = agent(Duration::from_secs(30));
    // The server already knows this instance as used (a code was redeemed for it from the same
    // network), so its announcements are refused with `instance_used`, which ends discovery.
    let id = lock(&agent).instance_id();
    {
        let alice = AccountId::new("alice").unwrap();
        let server = &transport.server;
        let code = server
            .mint_code(Flaky::now(), &mut lanlink::os_rng(), &alice)
            .await
            .unwrap()
            .code;
        let home = server
            .caller(
                RequestKind::Redeem,
                HOME.parse().unwrap(),
                ForwardedHeaders::NONE,
            )
            .unwrap();
        server
            .redeem(
                Flaky::now(),
                &mut lanlink::os_rng(),
                home,
                &RedeemRequest::new(id, code),
            )
            .await
            .unwrap();
    }
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        run_agent(&agent, &transport, &fast(), |_| {}),
    )
    .await
    .expect("bounded");
    assert_eq!(
        status,
        AgentStatus::Stopped(StopReason::AnnounceRefused(Refusal::InstanceUsed.code()))
    );
    assert_eq!(
        transport.announces.load(Ordering::SeqCst),
        1,
        "no retry after a final refusal"
    );
}

/// A linker's server whose link answers are all lost (the server accepted the first request):
/// discovery shows one agent, the link's state reads `linked`.
struct LostLinkAnswer {
    id: lanlink::InstanceId,
    links: AtomicU32,
}

#[async_trait]
impl lanlink::transport::LinkerServerTransport for LostLinkAnswer {
    async fn discover(&self) -> Result<lanlink::wire::DiscoverReply, TransportError> {
        let agent = lanlink::wire::DiscoveredAgent::new(
            self.id,
            "192.168.1.50".parse().unwrap(),
            8080,
            DeviceInfo::default(),
        );
        Ok(lanlink::wire::DiscoverReply::new(vec![agent].into()))
    }
    async fn link(
        &self,
        _: &lanlink::wire::LinkRequest,
    ) -> Result<lanlink::wire::LinkStatusReply, TransportError> {
        self.links.fetch_add(1, Ordering::SeqCst);
        Err(TransportError::Unreachable(
            "the answer was lost".to_owned(),
        ))
    }
    async fn link_status(
        &self,
        instance_id: &lanlink::InstanceId,
    ) -> Result<lanlink::wire::LinkStatusReply, TransportError> {
        let state = if self.links.load(Ordering::SeqCst) > 0 {
            lanlink::wire::LinkState::Linked
        } else {
            lanlink::wire::LinkState::Unknown
        };
        Ok(lanlink::wire::LinkStatusReply::new(*instance_id, state))
    }
    async fn mint_code(&self) -> Result<lanlink::wire::CodeReply, TransportError> {
        Err(TransportError::Unreachable("not asked".to_owned()))
    }
}

#[async_trait]
impl lanlink::transport::LinkerAgentTransport for LostLinkAnswer {
    async fn fetch_secret(
        &self,
        _: std::net::SocketAddr,
        _: &lanlink::InstanceId,
    ) -> Result<lanlink::wire::SecretReply, TransportError> {
        Ok(lanlink::wire::SecretReply::new(
            lanlink::LocalSecret::from_bytes([9; 32]),
        ))
    }
}

/// Issue 24's finding, through the driver: a link request whose answer is lost is sent once (a
/// second copy would be refused `already_linking` while the device links) and the linker asks
/// the link's state, ending linked with the device. The driver that retried the request and then
/// gave up with a transport error fails this.
#[tokio::test]
async fn a_lost_link_answer_ends_linked_through_the_driver() {
    let transport = LostLinkAnswer {
        id: lanlink::InstanceId::from_bytes([7; 16]),
        links: AtomicU32::new(0),
    };
    let config = lanlink::linker::LinkerConfig {
        status_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let mut linker = lanlink::linker::Linker::new(config, Instant::now(), &mut lanlink::os_rng());
    let linked = tokio::time::timeout(
        Duration::from_secs(10),
        lanlink::driver::run_linker(
            &mut linker,
            &transport,
            &transport,
            &fast(),
            |_| None,
            |_| {},
        ),
    )
    .await
    .expect("bounded");
    assert_eq!(linked.expect("linked"), transport.id);
    assert_eq!(transport.links.load(Ordering::SeqCst), 1, "sent once");
}
