//! The link-outcome hook and exactly-once link completion, over real loopback HTTP and directly
//! on the state machines.
//!
//! - the hook sees each completed link once, with the digest of the very token the agent got,
//!   on a server over its own in-memory store and on one over a shared store;
//! - a failing hook fails the redemption retryably (`503 link_unavailable`), the code is given
//!   back, and the agent's own retry links;
//! - a redeem reply dropped after the server committed: the agent's retry (proven by its
//!   presence key) completes the link again, the agent ends linked with a token that
//!   authenticates, the host holds exactly one link, and the lost token no longer authenticates;
//! - no event and no hook input carries a secret or a token (asserted on the serialized form);
//! - the retry of a used code is refused to anyone who cannot prove the instance;
//! - a hook that awaits (a timer) links through every entry point a host can call: the core's
//!   wire function `server::endpoint::handle` (on a tokio runtime and on a bare `block_on`), the
//!   axum router over HTTP and `Server::redeem`, on either store (the MQTT function and the Obico
//!   routes: `tests/mqtt_conformance.rs`, `tests/obico_wire.rs`); a hook that never finishes
//!   strands nothing (the proven retry links);
//! - overlapping attempts (a retry while an earlier attempt's hook still runs), driven by a hook
//!   whose outcome per attempt the test decides: the older attempt never undoes the newer, and a
//!   code's mint-quota slot comes back exactly once.
#![cfg(feature = "http")]

mod support;

use support::steps::Steps;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::DateTime;
use lanlink::agent::{Agent, AgentConfig, AgentStatus, AgentTransmit};
use lanlink::driver::{lock, run_agent, DriverConfig, SharedAgent};
use lanlink::event::{AgentEvent, StopReason};
use lanlink::http::client::{HttpAgentClient, HttpLinkerClient};
use lanlink::http::{self, serve, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::secret::PresenceKey;
use lanlink::server::{
    Backend, CompletedLink, Events, HookError, LinkHook, LinkVia, MemoryStore, Server, ServerConfig,
};
use lanlink::transport::AgentServerTransport;
use lanlink::wire::{RedeemReply, RedeemRequest};
use lanlink::WireCode;
use lanlink::{AccountId, AuthToken, ForwardedHeaders, InstanceId, LinkCode, Refusal, TokenDigest};
use support::linking::{link_first, spawn_agent};
use support::lose_reply::LoseFirstReply;
use tokio::net::TcpListener;
use tokio::time::timeout;

const P: &str = DEFAULT_PREFIX;
const ALICE: &str = "alice-token-0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(20);

use support::net::info;

fn alice() -> AccountId {
    AccountId::new("alice").unwrap()
}

/// The host's own table, written by its hook: device → (owner, digest of its current token).
#[derive(Default)]
struct Host {
    devices: Mutex<HashMap<InstanceId, (AccountId, TokenDigest, u32)>>,
    calls: Mutex<Vec<CompletedLink>>,
    /// How many of the next calls fail (the host's database is down).
    failures: AtomicU32,
}

#[async_trait]
impl LinkHook for Host {
    async fn link_completed(&self, link: &CompletedLink) -> Result<(), HookError> {
        self.calls.lock().unwrap().push(link.clone());
        // A real host awaits its database here.
        tokio::task::yield_now().await;
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HookError::new("database unavailable"));
        }
        let mut devices = self.devices.lock().unwrap();
        // An older attempt never replaces a newer one's digest.
        if devices
            .get(&link.instance_id)
            .is_none_or(|(_, _, kept)| *kept <= link.attempt)
        {
            devices.insert(
                link.instance_id,
                (link.account.clone(), link.token_digest, link.attempt),
            );
        }
        Ok(())
    }
}

impl Host {
    /// The device a presented token authenticates, from the stored digests only.
    fn authenticate(&self, token: &AuthToken) -> Option<InstanceId> {
        self.devices
            .lock()
            .unwrap()
            .iter()
            .find(|(_, (_, digest, _))| digest.verify(token))
            .map(|(id, _)| *id)
    }

    fn calls(&self) -> Vec<CompletedLink> {
        self.calls.lock().unwrap().clone()
    }
}

/// Which store the server behind the routes keeps its records in.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The server's own in-memory store.
    Local,
    /// A store shared behind an `Arc<dyn Backend>` (as several instances would share one).
    Shared,
}

struct Cloud {
    at: SocketAddr,
    host: Arc<Host>,
    /// Every event, serialized as the host's audit log would keep it.
    events: Arc<Mutex<Vec<String>>>,
}

impl Cloud {
    fn events_named(&self, name: &str) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|event| event["event"] == name)
            .collect()
    }

    fn base(&self) -> String {
        format!("http://{}", self.at)
    }
}

async fn start_cloud(kind: Kind) -> Cloud {
    let host = Arc::new(Host::default());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let events = Arc::clone(&events);
        move |event: lanlink::event::ServerEvent| {
            events
                .lock()
                .unwrap()
                .push(serde_json::to_string(&event).unwrap());
        }
    };
    let config = ServerConfig::default().presence_ttl(Duration::from_secs(60));
    let auth = Arc::new(BearerTokens::new(
        [(ALICE.to_owned(), alice())].into_iter().collect(),
    ));
    let hook: Arc<dyn LinkHook> = host.clone();
    let router = match kind {
        Kind::Local => {
            let server = Server::new(config)
                .unwrap()
                .with_events(Events::sink(sink))
                .with_link_hook(hook);
            http::server::router(Arc::new(server), auth, P)
        }
        Kind::Shared => {
            let store: Arc<dyn Backend> = Arc::new(MemoryStore::default());
            let server = Server::with_store(config, store, Events::sink(sink))
                .unwrap()
                .with_link_hook(hook);
            http::server::router(Arc::new(server), auth, P)
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        router.fallback(http::server::not_found),
        ServeConfig::default(),
        std::future::pending(),
    ));
    Cloud { at, host, events }
}

async fn start_agent() -> (SharedAgent, SocketAddr) {
    support::net::start_agent(|at| {
        AgentConfig::new(at.ip(), at.port(), info()).announce_interval(Duration::from_millis(300))
    })
    .await
}

/// Links `agent` by auto-discovery through `cloud`, the agent driven over `transport`.
async fn auto_link<T: AgentServerTransport + 'static>(
    cloud: &Cloud,
    agent: &SharedAgent,
    transport: T,
) -> AgentStatus {
    let agent_task = spawn_agent(agent, transport);
    let client = HttpLinkerClient::new(&cloud.base(), ALICE).unwrap();
    let mut linker = Linker::without_nonce(
        LinkerConfig {
            discover_interval: Duration::from_millis(200),
            status_interval: Duration::from_millis(200),
            ..LinkerConfig::default()
        },
        Instant::now(),
    );
    let id = lock(agent).instance_id();
    let linked = timeout(
        LIMIT,
        link_first(&mut linker, &client, &DriverConfig::default(), |_| {}),
    )
    .await
    .expect("the linker ends");
    assert_eq!(linked, Ok(id));
    timeout(LIMIT, agent_task)
        .await
        .expect("the agent ends")
        .unwrap()
}

/// Nothing secret in the host's audit log or in what the hook was given.
fn assert_no_secret(cloud: &Cloud, token: &AuthToken) {
    let token = token.to_hex().to_string();
    let log = cloud.events.lock().unwrap().join("\n");
    let calls = serde_json::to_string(&cloud.host.calls()).unwrap();
    for text in [&log, &calls] {
        assert!(!text.contains(&token), "a token in {text}");
        assert!(!text.contains("local_secret"), "a secret in {text}");
        assert!(!text.contains("presence_key"), "a presence key in {text}");
    }
    // The events carry no digest either: only the hook gets it.
    for call in cloud.host.calls() {
        assert!(!log.contains(&call.token_digest.to_hex()));
    }
}

#[tokio::test]
async fn the_hook_sees_each_completed_link_once_with_the_tokens_digest() {
    for kind in [Kind::Local, Kind::Shared] {
        let cloud = start_cloud(kind).await;
        let (agent, _) = start_agent().await;
        let id = lock(&agent).instance_id();
        let transport = HttpAgentClient::new(&cloud.base()).unwrap();
        assert_eq!(
            auto_link(&cloud, &agent, transport).await,
            AgentStatus::Linked,
            "{kind:?}"
        );
        let token = lock(&agent).auth_token().expect("a token").clone();
        let calls = cloud.host.calls();
        assert_eq!(calls.len(), 1, "{kind:?}: once per link");
        let link = &calls[0];
        assert_eq!(link.instance_id, id);
        assert_eq!(link.account, alice());
        assert_eq!(link.via, LinkVia::Auto);
        assert!(!link.reissued);
        assert_eq!(
            link.info.as_ref(),
            Some(&info()),
            "{kind:?}: the device's info"
        );
        assert!(
            link.token_digest.verify(&token),
            "{kind:?}: the token's digest"
        );
        // The host authenticates the device later from what it stored.
        assert_eq!(cloud.host.authenticate(&token), Some(id));
        assert_eq!(
            cloud
                .host
                .authenticate(&AuthToken::generate(&mut lanlink::os_rng())),
            None
        );
        assert_eq!(cloud.events_named("linked").len(), 1, "{kind:?}");
        assert_no_secret(&cloud, &token);
    }
}

#[tokio::test]
async fn a_failing_hook_fails_the_redemption_retryably_and_the_agents_retry_links() {
    for kind in [Kind::Local, Kind::Shared] {
        let cloud = start_cloud(kind).await;
        cloud.host.failures.store(1, Ordering::SeqCst);
        let (agent, _) = start_agent().await;
        let id = lock(&agent).instance_id();
        // A manual code, minted over HTTP and typed into the device.
        let client = HttpLinkerClient::new(&cloud.base(), ALICE).unwrap();
        let code = lanlink::transport::LinkerServerTransport::mint_code(&client)
            .await
            .expect("a code")
            .code;
        lock(&agent).enter_code(Instant::now(), code).unwrap();
        let transport = HttpAgentClient::new(&cloud.base()).unwrap();
        let mut seen = Vec::new();
        let status = timeout(
            LIMIT,
            run_agent(&agent, &transport, &DriverConfig::default(), |event| {
                seen.push(event)
            }),
        )
        .await
        .expect("bounded");
        assert_eq!(status, AgentStatus::Linked, "{kind:?}");
        assert!(
            seen.contains(&AgentEvent::RedeemDeferred {
                reason: WireCode::LinkUnavailable
            }),
            "{kind:?}: {seen:?}"
        );
        let token = lock(&agent).auth_token().unwrap().clone();
        let calls = cloud.host.calls();
        assert_eq!(calls.len(), 2, "{kind:?}: failed, then recorded");
        assert!(calls
            .iter()
            .all(|c| c.via == LinkVia::Manual && !c.reissued));
        // The failed attempt's code was given back, so the retry was a first redemption again:
        // its token is the one the host kept, and the host holds one device.
        assert_eq!(cloud.host.authenticate(&token), Some(id));
        assert_eq!(cloud.host.devices.lock().unwrap().len(), 1);
        let failed = cloud.events_named("link_hook_failed");
        assert_eq!(failed.len(), 1, "{kind:?}");
        assert_eq!(failed[0]["message"], "database unavailable");
        assert_eq!(cloud.events_named("linked").len(), 1, "{kind:?}");
        assert_no_secret(&cloud, &token);
    }
}

#[tokio::test]
async fn a_lost_redeem_reply_still_ends_linked_with_one_link_and_the_lost_token_revoked() {
    for kind in [Kind::Local, Kind::Shared] {
        let cloud = start_cloud(kind).await;
        let (agent, _) = start_agent().await;
        let id = lock(&agent).instance_id();
        let lost = Arc::new(Mutex::new(None));
        let transport = LoseFirstReply {
            inner: HttpAgentClient::new(&cloud.base()).unwrap(),
            lost: Arc::clone(&lost),
        };
        let status = auto_link(&cloud, &agent, transport).await;
        assert_eq!(status, AgentStatus::Linked, "{kind:?}");
        let token = lock(&agent).auth_token().unwrap().clone();
        let lost = lost.lock().unwrap().clone().expect("a reply was lost");
        assert!(!lost.ct_eq(&token), "a new token was issued");
        // The agent's token authenticates; the lost one no longer does.
        assert_eq!(cloud.host.authenticate(&token), Some(id), "{kind:?}");
        assert_eq!(cloud.host.authenticate(&lost), None, "{kind:?}");
        // Exactly one link: one device in the host's table, and the hook's second call says it
        // replaced the first.
        assert_eq!(cloud.host.devices.lock().unwrap().len(), 1);
        let calls = cloud.host.calls();
        assert_eq!(calls.len(), 2, "{kind:?}");
        assert!(!calls[0].reissued && calls[1].reissued);
        assert!(calls[0].token_digest.verify(&lost) && calls[1].token_digest.verify(&token));
        assert_eq!(calls[0].instance_id, calls[1].instance_id);
        let linked = cloud.events_named("linked");
        assert_eq!(linked.len(), 2);
        assert_eq!(linked[1]["reissued"], true);
        // The server's record says linked, once.
        let client = HttpLinkerClient::new(&cloud.base(), ALICE).unwrap();
        let status = lanlink::transport::LinkerServerTransport::link_status(&client, &id)
            .await
            .unwrap();
        assert_eq!(status.state, lanlink::wire::LinkState::Linked);
        assert_no_secret(&cloud, &token);
    }
}

// ───────────────────────── the state machines ─────────────────────────

fn now() -> chrono::DateTime<chrono::Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

const HOME: &str = "203.0.113.7";

/// A manual code redeemed once by an instance proving its key.
fn redeemed_once(server: &Server) -> (RedeemRequest, AuthToken) {
    let mut rng = lanlink::os_rng();
    let code = server
        .mint_code_now(now(), &mut rng, &alice())
        .unwrap()
        .code;
    let key = PresenceKey::generate(&mut rng);
    let request = RedeemRequest::new(key.instance_id(), code)
        .with_presence_key(key)
        .with_attempt(1);
    let first = server
        .redeem_now(
            now(),
            &mut rng,
            HOME.parse().unwrap(),
            ForwardedHeaders::NONE,
            &request,
        )
        .unwrap();
    (request, first.reply.auth_token)
}

fn redeem(server: &Server, request: &RedeemRequest) -> Result<AuthToken, Refusal> {
    server
        .redeem_now(
            now(),
            &mut lanlink::os_rng(),
            HOME.parse().unwrap(),
            ForwardedHeaders::NONE,
            request,
        )
        .map(|redeemed| redeemed.reply.auth_token)
}

#[test]
fn only_the_proven_redeemer_may_redeem_a_used_code_again() {
    let server = Server::new(ServerConfig::default()).unwrap();
    let (request, first) = redeemed_once(&server);
    // Without its presence key: a used code, as for an agent of wire 1.0.
    let unproven = {
        let mut m = request.clone();
        m.presence_key = None;
        m
    };
    assert_eq!(redeem(&server, &unproven).unwrap_err(), Refusal::CodeUsed);
    // With a key that does not prove the instance: refused before the code is looked at.
    let forged = {
        let mut m = request.clone();
        m.presence_key = Some(PresenceKey::generate(&mut lanlink::os_rng()));
        m
    };
    assert_eq!(
        redeem(&server, &forged).unwrap_err(),
        Refusal::ForgedInstance
    );
    // Another instance, with its own valid key: the code is used.
    let key = PresenceKey::generate(&mut lanlink::os_rng());
    let other = RedeemRequest::new(key.instance_id(), request.code.clone()).with_presence_key(key);
    assert_eq!(redeem(&server, &other).unwrap_err(), Refusal::CodeUsed);
    // The redeemer itself, with the same attempt number: a duplicate, superseded.
    assert_eq!(redeem(&server, &request).unwrap_err(), Refusal::Superseded);
    // The redeemer itself, retrying (attempt 3): a new token.
    let retry = {
        let mut m = request.clone();
        m.attempt = 3;
        m
    };
    let again = redeem(&server, &retry).unwrap();
    assert!(!again.ct_eq(&first));
    // A late duplicate of attempt 2, processed after attempt 3: superseded, so it can never
    // replace the token the agent took from attempt 3.
    let late = {
        let mut m = request.clone();
        m.attempt = 2;
        m
    };
    assert_eq!(redeem(&server, &late).unwrap_err(), Refusal::Superseded);
    // Once the code has expired, not even the redeemer.
    let later = now() + chrono::TimeDelta::minutes(11);
    let expired = server.redeem_now(
        later,
        &mut lanlink::os_rng(),
        HOME.parse().unwrap(),
        ForwardedHeaders::NONE,
        &{
            let mut m = request;
            m.attempt = 9;
            m
        },
    );
    assert_eq!(expired.unwrap_err(), Refusal::UnknownCode);
}

/// A hook that awaits a timer before it records the link, as a host awaits its database.
#[derive(Default)]
struct Sleeps {
    digests: Mutex<Vec<TokenDigest>>,
    /// Sleep on a thread of its own and wake the task from there (no tokio timer), so that a
    /// bare `block_on` drives it.
    on_a_thread: bool,
}

#[async_trait]
impl LinkHook for Sleeps {
    async fn link_completed(&self, link: &CompletedLink) -> Result<(), HookError> {
        if self.on_a_thread {
            ThreadSleep::new(Duration::from_millis(50)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.digests.lock().unwrap().push(link.token_digest);
        Ok(())
    }
}

/// A future ready once a thread has slept `for`; it wakes its task from that thread.
struct ThreadSleep(Arc<Mutex<(bool, Option<std::task::Waker>)>>);

impl ThreadSleep {
    fn new(duration: Duration) -> Self {
        let state = Arc::new(Mutex::new((false, None::<std::task::Waker>)));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            let mut state = shared.lock().unwrap();
            state.0 = true;
            if let Some(waker) = state.1.take() {
                waker.wake();
            }
        });
        Self(state)
    }
}

impl std::future::Future for ThreadSleep {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let mut state = self.0.lock().unwrap();
        if state.0 {
            return std::task::Poll::Ready(());
        }
        state.1 = Some(cx.waker().clone());
        std::task::Poll::Pending
    }
}

/// A `block_on` with no runtime, as a blocking host writes it: the thread parks until woken.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// A redeem request for a fresh manual code of alice's.
fn manual_redeem(code: LinkCode) -> RedeemRequest {
    let key = PresenceKey::generate(&mut lanlink::os_rng());
    RedeemRequest::new(key.instance_id(), code)
        .with_presence_key(key)
        .with_attempt(1)
}

/// Redeems `request` through the core's wire function; the token of the `200`.
async fn redeem_through_the_core<S: Backend>(
    server: &Server<S>,
    request: &RedeemRequest,
) -> AuthToken {
    use lanlink::server::endpoint::{self, HttpRequest, RequestBody};
    let headers = [("content-type", &b"application/json"[..])];
    let http_request = HttpRequest {
        method: "POST",
        path: "/lanlink/v1/agent/redeem",
        query: None,
        authority: None,
        headers: &headers,
        peer: Some(HOME.parse().unwrap()),
    };
    let body = lanlink::wire::encode(request);
    let answer = endpoint::handle(
        server,
        now(),
        &mut lanlink::os_rng(),
        P,
        &http_request,
        RequestBody::Complete(&body),
        None,
    )
    .await
    .into_answer()
    .unwrap();
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let reply: RedeemReply = serde_json::from_slice(&answer.body).unwrap();
    reply.auth_token
}

fn sleeping_server(hook: &Arc<Sleeps>) -> Server {
    Server::new(ServerConfig::default())
        .unwrap()
        .with_link_hook(Arc::clone(hook) as Arc<dyn LinkHook>)
}

/// A server over a shared store (as several instances would share one), with the hook.
fn sleeping_shared(hook: &Arc<Sleeps>) -> Server<Arc<dyn Backend>> {
    let store: Arc<dyn Backend> = Arc::new(MemoryStore::default());
    Server::with_store(ServerConfig::default(), store, Events::discard())
        .unwrap()
        .with_link_hook(Arc::clone(hook) as Arc<dyn LinkHook>)
}

/// The hook's last digest is the token's.
fn assert_hooked(hook: &Sleeps, token: &AuthToken) {
    let digests = hook.digests.lock().unwrap();
    assert!(digests.last().is_some_and(|digest| digest.verify(token)));
}

fn home() -> lanlink::PublicNetwork {
    lanlink::PublicNetwork::from_ip(HOME.parse().unwrap(), 64)
}

#[tokio::test]
async fn a_hook_that_awaits_links_through_the_core_wire_function_and_redeem_on_both_stores() {
    let hook = Arc::new(Sleeps::default());
    let server = sleeping_server(&hook);
    let shared = sleeping_shared(&hook);
    let mut rng = lanlink::os_rng();
    // The core's wire function.
    let code = server
        .mint_code(now(), &mut rng, &alice())
        .await
        .unwrap()
        .code;
    let token = redeem_through_the_core(&server, &manual_redeem(code)).await;
    assert_hooked(&hook, &token);
    let code = shared
        .mint_code(now(), &mut rng, &alice())
        .await
        .unwrap()
        .code;
    let token = redeem_through_the_core(&shared, &manual_redeem(code)).await;
    assert_hooked(&hook, &token);
    // The server's own step.
    let code = server
        .mint_code(now(), &mut rng, &alice())
        .await
        .unwrap()
        .code;
    let redeemed = server
        .redeem(now(), &mut rng, home(), &manual_redeem(code))
        .await
        .unwrap();
    assert_hooked(&hook, &redeemed.reply.auth_token);
    let code = shared
        .mint_code(now(), &mut rng, &alice())
        .await
        .unwrap()
        .code;
    let redeemed = shared
        .redeem(now(), &mut rng, home(), &manual_redeem(code))
        .await
        .unwrap();
    assert_hooked(&hook, &redeemed.reply.auth_token);
}

#[test]
fn a_hook_that_awaits_links_through_the_core_on_a_blocking_host() {
    let hook = Arc::new(Sleeps {
        on_a_thread: true,
        ..Sleeps::default()
    });
    let server = sleeping_server(&hook);
    let code = block_on(server.mint_code(now(), &mut lanlink::os_rng(), &alice()))
        .unwrap()
        .code;
    let token = block_on(redeem_through_the_core(&server, &manual_redeem(code)));
    assert_hooked(&hook, &token);
    // And the server's own step, on the same bare `block_on`.
    let code = block_on(server.mint_code(now(), &mut lanlink::os_rng(), &alice()))
        .unwrap()
        .code;
    let redeemed =
        block_on(server.redeem(now(), &mut lanlink::os_rng(), home(), &manual_redeem(code)))
            .unwrap();
    assert_hooked(&hook, &redeemed.reply.auth_token);
}

#[tokio::test]
async fn a_hook_that_awaits_links_through_the_axum_router_on_both_stores() {
    let hook = Arc::new(Sleeps::default());
    let server = Arc::new(sleeping_server(&hook));
    let shared = Arc::new(sleeping_shared(&hook));
    let auth = Arc::new(BearerTokens::default());
    // The routers read the wall clock.
    let wall = DateTime::from(std::time::SystemTime::now());
    let local_code = server
        .mint_code(wall, &mut lanlink::os_rng(), &alice())
        .await
        .unwrap()
        .code;
    let shared_code = shared
        .mint_code(wall, &mut lanlink::os_rng(), &alice())
        .await
        .unwrap()
        .code;
    let routers = [
        (
            http::server::router(Arc::clone(&server), auth.clone(), P),
            local_code,
        ),
        (
            http::server::router(Arc::clone(&shared), auth.clone(), P),
            shared_code,
        ),
    ];
    for (router, code) in routers {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            router,
            ServeConfig::default(),
            std::future::pending(),
        ));
        let transport = HttpAgentClient::new(&format!("http://{at}")).unwrap();
        let reply = timeout(LIMIT, transport.redeem(&manual_redeem(code)))
            .await
            .expect("an answer")
            .expect("linked");
        assert_hooked(&hook, &reply.auth_token);
    }
}

/// A hook whose outcome for each attempt of each instance the test decides, while the
/// redemption waits on it (as a host's hook waits on its database); it keeps every link it saw.
#[derive(Default)]
struct Gate {
    outcomes: Mutex<HashMap<(InstanceId, u32), Outcome>>,
    seen: Mutex<Vec<CompletedLink>>,
}

/// What a [`Gate`] answers for one attempt.
type Outcome = Result<(), &'static str>;

impl Gate {
    /// Lets attempt `attempt` of `instance` finish with `outcome`.
    fn open(&self, instance: InstanceId, attempt: u32, outcome: Outcome) {
        self.outcomes
            .lock()
            .unwrap()
            .insert((instance, attempt), outcome);
    }
}

#[async_trait]
impl LinkHook for Gate {
    async fn link_completed(&self, link: &CompletedLink) -> Result<(), HookError> {
        self.seen.lock().unwrap().push(link.clone());
        let at = (link.instance_id, link.attempt);
        std::future::poll_fn(|_| match self.outcomes.lock().unwrap().get(&at) {
            Some(outcome) => std::task::Poll::Ready(outcome.map_err(HookError::new)),
            None => std::task::Poll::Pending,
        })
        .await
    }
}

/// A redemption polled by hand (no runtime: the test decides when the gate opens).
type Redemption<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<lanlink::server::Redeemed, Refusal>> + 'a>,
>;

/// Polls a redemption once.
fn poll_once(
    future: &mut Redemption<'_>,
) -> std::task::Poll<Result<lanlink::server::Redeemed, Refusal>> {
    future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// A redemption of `request` on `server`, as a pinned future to poll by hand.
fn redemption(server: &Server, request: RedeemRequest) -> Redemption<'_> {
    Box::pin(async move {
        server
            .redeem(now(), &mut lanlink::os_rng(), home(), &request)
            .await
    })
}

/// A hook that never finishes (it waits on I/O that never answers) holds a redemption's future
/// pending, and nothing else: the host that gives up and drops it (a client gone, a timeout)
/// strands nothing. The code stays claimed by the instance, so another instance finds it used,
/// and the agent's proven retry links once the host answers.
#[test]
fn a_dropped_redemption_strands_nothing_and_the_proven_retry_links() {
    let gate = Arc::new(Gate::default());
    let server = Server::new(ServerConfig::default())
        .unwrap()
        .with_link_hook(gate.clone());
    let mut rng = lanlink::os_rng();
    let code = server
        .mint_code_now(now(), &mut rng, &alice())
        .unwrap()
        .code;
    let key = PresenceKey::generate(&mut rng);
    let attempt = |n| {
        RedeemRequest::new(key.instance_id(), code.clone())
            .with_presence_key(key.clone())
            .with_attempt(n)
    };
    let mut first = redemption(&server, attempt(1));
    assert!(poll_once(&mut first).is_pending(), "the hook holds it");
    drop(first);
    let thief = manual_redeem(code.clone());
    assert_eq!(redeem(&server, &thief).unwrap_err(), Refusal::CodeUsed);
    gate.open(key.instance_id(), 2, Ok(()));
    let redeemed = redeem_full(&server, &attempt(2)).unwrap();
    assert!(redeemed
        .link
        .token_digest
        .verify(&redeemed.reply.auth_token));
    assert_eq!(redeemed.link.via, LinkVia::Manual);
}

/// [`redeem`], keeping the whole redemption.
fn redeem_full(
    server: &Server,
    request: &RedeemRequest,
) -> Result<lanlink::server::Redeemed, Refusal> {
    server.redeem_now(
        now(),
        &mut lanlink::os_rng(),
        HOME.parse().unwrap(),
        ForwardedHeaders::NONE,
        request,
    )
}

fn agent_redeeming(timeout: Duration) -> (Agent, Instant) {
    let at = Instant::now();
    let config =
        AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, info()).redeem_timeout(timeout);
    let mut agent = Agent::new(config, at, &mut lanlink::os_rng()).unwrap();
    agent
        .enter_code(at, LinkCode::parse("482913").unwrap())
        .unwrap();
    (agent, at)
}

fn redeem_due(agent: &mut Agent, at: Instant) -> Option<RedeemRequest> {
    match agent.poll_transmit(at) {
        Some(AgentTransmit::Redeem(request)) => Some(request),
        _ => None,
    }
}

#[test]
fn the_agent_owns_its_redemption_retries_and_always_names_a_deadline() {
    let (mut agent, t0) = agent_redeeming(Duration::from_secs(30));
    let first = redeem_due(&mut agent, t0).expect("due at once");
    assert_eq!(first.attempt, 1);
    // The request proves the instance.
    assert!(first
        .presence_key
        .as_ref()
        .unwrap()
        .proves(&agent.instance_id()));
    // In flight, no answer: the retransmission timer is the deadline.
    let wake = agent.poll_timeout().expect("a deadline while in flight");
    assert!(
        wake > t0 && wake <= t0 + Duration::from_millis(500),
        "{:?}",
        wake - t0
    );
    assert!(redeem_due(&mut agent, t0).is_none());
    // No answer by then: sent again, the same request.
    let again = redeem_due(&mut agent, wake).expect("retransmitted");
    assert_eq!(again.code.expose(), first.code.expose());
    assert_eq!(again.attempt, 2, "each attempt numbered higher");
    // A retryable refusal defers; the next attempt waits its back-off (doubling).
    agent
        .handle_redeem_reply(wake, Err(WireCode::StoreUnavailable))
        .unwrap();
    assert_eq!(agent.status(), AgentStatus::Redeeming);
    let next = agent.poll_timeout().unwrap();
    assert!(
        next >= wake + Duration::from_millis(750),
        "{:?}",
        next - wake
    );
    assert!(redeem_due(&mut agent, next).is_some());
    // The answer to an earlier attempt (2), or a `superseded`, is ignored: only the latest
    // attempt's token stands at the server.
    let stale = AuthToken::generate(&mut lanlink::os_rng());
    let reply = |token, attempt| Ok(RedeemReply::new(token, attempt));
    agent.handle_redeem_reply(next, reply(stale, 2)).unwrap();
    agent
        .handle_redeem_reply(next, Err(WireCode::Superseded))
        .unwrap();
    assert_eq!(agent.status(), AgentStatus::Redeeming);
    // The latest attempt's answer links.
    let token = AuthToken::generate(&mut lanlink::os_rng());
    agent
        .handle_redeem_reply(next, reply(token.clone(), 3))
        .unwrap();
    assert_eq!(agent.status(), AgentStatus::Linked);
    assert!(agent.auth_token().unwrap().ct_eq(&token));
    assert_eq!(agent.poll_timeout(), None);
}

#[test]
fn the_agent_stops_at_its_redeem_deadline_and_on_a_final_refusal() {
    let (mut agent, t0) = agent_redeeming(Duration::from_secs(3));
    let mut at = t0;
    let mut attempts = 0;
    while let Some(wake) = agent.poll_timeout() {
        at = wake;
        if redeem_due(&mut agent, at).is_some() {
            attempts += 1;
            agent.handle_redeem_failed(at).unwrap();
        }
        assert!(attempts < 100, "bounded");
    }
    assert_eq!(
        agent.status(),
        AgentStatus::Stopped(StopReason::ServerUnreachable)
    );
    assert!(
        at >= t0 + Duration::from_secs(3) && (3..=6).contains(&attempts),
        "{attempts}"
    );

    let (mut agent, t0) = agent_redeeming(Duration::from_secs(30));
    redeem_due(&mut agent, t0).unwrap();
    agent
        .handle_redeem_reply(t0, Err(Refusal::CodeUsed.code()))
        .unwrap();
    assert_eq!(
        agent.status(),
        AgentStatus::Stopped(StopReason::RedeemRefused(WireCode::InvalidCode))
    );
    assert_eq!(agent.poll_timeout(), None);
}

/// Two attempts overlap: attempt 1's hook is still running when the agent's retry (attempt 2)
/// claims the code again and completes. Attempt 1 then fails: it must not give the code back
/// (a completed link beside a redeemable code would let the code be used twice); and had it
/// succeeded, its token is one the agent ignores, while the hook saw attempt 2's digest last.
#[test]
fn an_older_attempt_never_undoes_or_outlives_a_newer_one() {
    let gate = Arc::new(Gate::default());
    let server = Server::new(ServerConfig::default())
        .unwrap()
        .with_link_hook(gate.clone());
    let mut rng = lanlink::os_rng();
    let code = server
        .mint_code_now(now(), &mut rng, &alice())
        .unwrap()
        .code;
    let key = PresenceKey::generate(&mut rng);
    let attempt = |n| {
        RedeemRequest::new(key.instance_id(), code.clone())
            .with_presence_key(key.clone())
            .with_attempt(n)
    };
    let mut first = redemption(&server, attempt(1));
    assert!(poll_once(&mut first).is_pending(), "attempt 1's hook runs");
    gate.open(key.instance_id(), 2, Ok(()));
    let mut second = redemption(&server, attempt(2));
    let std::task::Poll::Ready(Ok(second)) = poll_once(&mut second) else {
        panic!("attempt 2 links")
    };
    assert!(second.link.reissued && second.link.attempt == 2);
    assert_eq!(second.reply.attempt, 2);
    // Attempt 1's hook fails late: the code stays redeemed (attempt 2 holds it).
    gate.open(key.instance_id(), 1, Err("timeout"));
    let std::task::Poll::Ready(late) = poll_once(&mut first) else {
        panic!("attempt 1 ends")
    };
    assert_eq!(late.unwrap_err(), Refusal::LinkUnavailable);
    let thief = manual_redeem(code.clone());
    assert_eq!(redeem(&server, &thief).unwrap_err(), Refusal::CodeUsed);
    // The agent's retries after that still work: the code is its own, the attempt newer.
    gate.open(key.instance_id(), 3, Ok(()));
    assert!(redeem(&server, &attempt(3)).is_ok());
    let attempts: Vec<u32> = gate
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.attempt)
        .collect();
    assert_eq!(
        attempts,
        [1, 2, 3],
        "each attempt's link went to the hook once"
    );
}

/// Issue 25, finding 10: a manual code holds one of its account's mint-quota slots while it
/// lives, and returns it exactly once when its life ends with a link. Given back after a failed
/// hook, the code is still live and keeps its slot; completed by a retry (attempt 2, while
/// attempt 1's hook failed), by a first attempt, or again after a lost reply, the slot comes back
/// once, never twice.
#[test]
fn a_codes_quota_slot_is_returned_once_when_its_link_completes_whichever_attempt_completes_it() {
    let gate = Arc::new(Gate::default());
    let server = Server::new(ServerConfig::default())
        .unwrap()
        .with_link_hook(gate.clone());
    let mut rng = lanlink::os_rng();
    let quota = 5;
    let mut codes: Vec<_> = (0..quota)
        .map(|_| {
            server
                .mint_code_now(now(), &mut rng, &alice())
                .unwrap()
                .code
        })
        .collect();
    let mint = |server: &Server| server.mint_code_now(now(), &mut lanlink::os_rng(), &alice());
    assert_eq!(mint(&server).unwrap_err(), Refusal::MintQuota);
    let request = |code: &lanlink::LinkCode, key: &PresenceKey, attempt| {
        RedeemRequest::new(key.instance_id(), code.clone())
            .with_presence_key(key.clone())
            .with_attempt(attempt)
    };

    // 1. Attempt 1 claims the code, attempt 2 (a retry) claims it again; attempt 1's hook fails
    // (the code stays attempt 2's), attempt 2 completes the link.
    let code = codes.pop().unwrap();
    let key = PresenceKey::generate(&mut rng);
    let mut first = redemption(&server, request(&code, &key, 1));
    assert!(poll_once(&mut first).is_pending());
    let mut second = redemption(&server, request(&code, &key, 2));
    assert!(poll_once(&mut second).is_pending());
    gate.open(key.instance_id(), 1, Err("host down"));
    let std::task::Poll::Ready(failed) = poll_once(&mut first) else {
        panic!("attempt 1 ends")
    };
    assert_eq!(failed.unwrap_err(), Refusal::LinkUnavailable);
    assert_eq!(
        mint(&server).unwrap_err(),
        Refusal::MintQuota,
        "slot returned early"
    );
    gate.open(key.instance_id(), 2, Ok(()));
    assert!(matches!(
        poll_once(&mut second),
        std::task::Poll::Ready(Ok(_))
    ));
    drop((first, second));
    // The link completed: its slot is back, once.
    codes.push(
        mint(&server)
            .expect("the completed code's slot was not returned")
            .code,
    );
    assert_eq!(mint(&server).unwrap_err(), Refusal::MintQuota);
    // A retry after a lost reply completes the link again: no second slot.
    gate.open(key.instance_id(), 3, Ok(()));
    assert!(redeem(&server, &request(&code, &key, 3)).is_ok());
    assert_eq!(
        mint(&server).unwrap_err(),
        Refusal::MintQuota,
        "slot returned twice"
    );

    // 2. A hook fails on a first attempt: the code is given back, still live, and keeps its slot;
    // the agent's retry links, and only then is the slot returned.
    let code = codes.pop().unwrap();
    let key = PresenceKey::generate(&mut rng);
    gate.open(key.instance_id(), 1, Err("host down"));
    let failed = redeem(&server, &request(&code, &key, 1));
    assert_eq!(failed.unwrap_err(), Refusal::LinkUnavailable);
    assert_eq!(
        mint(&server).unwrap_err(),
        Refusal::MintQuota,
        "a given-back code lost its slot"
    );
    gate.open(key.instance_id(), 2, Ok(()));
    assert!(redeem(&server, &request(&code, &key, 2)).is_ok());
    assert!(mint(&server).is_ok());
    assert_eq!(mint(&server).unwrap_err(), Refusal::MintQuota);
}
