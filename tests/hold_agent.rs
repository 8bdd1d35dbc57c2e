//! Held announcements, the agent's side (wire revision 1.6, issue 23), over real loopback
//! sockets: the crate's server (`http::server::router` under `http::serve`), an agent run by
//! `driver::run_agent` over `HttpAgentClient`, and a linker speaking plain HTTP.
//!
//! - A link reaches a held agent at once: with a 5 s announce interval, the agent is `Linked`
//!   within 1 s of the link's `202` (without the hold it would wait for its next announcement,
//!   up to 5 s later).
//! - Through a proxy that cuts every request its upstream leaves idle for 1 s (`504` and an HTML
//!   page, as nginx does with a short `proxy_read_timeout`), the agent gives up holds after two
//!   cut ones, says so (`AgentEvent::HoldFallback`), polls at its interval, and still links.
//!
//! Clients speak as the home network 203.0.113.7 through `X-Forwarded-For`, which the server
//! trusts from its loopback peer.
#![cfg(feature = "http")]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lanlink::agent::{Agent, AgentConfig, AgentStatus, SecretRequest};
use lanlink::driver::{lock, run_agent, DriverConfig, SharedAgent};
use lanlink::event::AgentEvent;
use lanlink::http::client::{client_builder, HttpAgentClient, HttpLinkerClient};
use lanlink::http::{self, serve, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::server::{Server, ServerConfig};
use lanlink::transport::{AgentServerTransport, LinkerServerTransport, TransportError};
use lanlink::wire::{Announce, AnnounceReply, LinkRequest, LinkState, RedeemReply, RedeemRequest};
use lanlink::{AccountId, DeviceInfo, ForwardedHeaders};
use reqwest::header::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const P: &str = DEFAULT_PREFIX;
/// The home network's public address, as the server sees every client here.
const HOME: &str = "203.0.113.7";
const ALICE: &str = "alice-token-0123456789abcdef";

/// Starts the server's routes with `config` on 127.0.0.1:0, trusting its loopback peer's
/// `X-Forwarded-For`.
async fn start_server(config: ServerConfig) -> SocketAddr {
    let config = config.trusted_proxies(vec!["127.0.0.0/8".parse().unwrap()]);
    let server = Arc::new(Server::new(config).expect("server config"));
    let auth = Arc::new(BearerTokens::new(vec![(
        ALICE.to_owned(),
        AccountId::new("alice").unwrap(),
    )]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = http::server::router(server, auth, P).fallback(http::server::not_found);
    tokio::spawn(serve(
        listener,
        router,
        ServeConfig::default(),
        std::future::pending(),
    ));
    addr
}

/// A client that speaks as the home network, one request per connection (so that the proxy
/// below sees each request on a connection of its own).
fn home_client() -> reqwest::Client {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HOME.parse().unwrap());
    client_builder()
        .default_headers(headers)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// An agent at 127.0.0.1 (its local endpoint is not served: the test asks the agent for its
/// secret in-process, as a local caller would).
fn new_agent(interval: Duration) -> SharedAgent {
    let info = DeviceInfo::new("printer.local", "Voron 2.4", "lanlink-test", "0.1.0").unwrap();
    let config = AgentConfig::new("127.0.0.1".parse().unwrap(), 8080, info)
        .announce_interval(interval)
        .window(Duration::from_secs(120));
    let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).expect("agent");
    Arc::new(Mutex::new(agent))
}

/// The agent's transport over `HttpAgentClient`, recording the announcements it sends.
struct Recorded {
    inner: HttpAgentClient,
    /// Each announcement's `hold_ms`, as sent.
    sent: mpsc::UnboundedSender<Option<u32>>,
}

#[async_trait]
impl AgentServerTransport for Recorded {
    async fn announce(&self, announce: &Announce) -> Result<AnnounceReply, TransportError> {
        let _ = self.sent.send(announce.hold_ms);
        self.inner.announce(announce).await
    }

    async fn redeem(&self, request: &RedeemRequest) -> Result<RedeemReply, TransportError> {
        self.inner.redeem(request).await
    }
}

/// Runs `agent` over `base` (a server or the proxy), reporting the `hold_ms` of each
/// announcement sent and every event.
fn drive(
    agent: &SharedAgent,
    base: &str,
) -> (
    tokio::task::JoinHandle<AgentStatus>,
    mpsc::UnboundedReceiver<Option<u32>>,
    mpsc::UnboundedReceiver<AgentEvent>,
) {
    let (sent, announced) = mpsc::unbounded_channel();
    let (event_tx, events) = mpsc::unbounded_channel();
    let transport = Recorded {
        inner: HttpAgentClient::with_client(home_client(), base, P),
        sent,
    };
    let agent = Arc::clone(agent);
    let task = tokio::spawn(async move {
        run_agent(&agent, &transport, &DriverConfig::default(), |event| {
            let _ = event_tx.send(event);
        })
        .await
    });
    (task, announced, events)
}

/// Links the agent as alice from home: its secret, asked in-process as a LAN caller would, then
/// `POST {prefix}/link` straight to the server. Returns when the server answered `202`.
async fn link(agent: &SharedAgent, server: SocketAddr) {
    let (id, secret) = {
        let mut agent = lock(agent);
        let id = agent.instance_id();
        let text = id.to_string();
        let request = SecretRequest {
            peer: "192.168.1.20".parse().unwrap(),
            forwarded: ForwardedHeaders::NONE,
            host: Some("127.0.0.1:8080"),
            origin: None,
            instance_id: &text,
        };
        let reply = agent
            .handle_secret_request(Instant::now(), &request)
            .expect("the secret, to a local caller");
        (id, reply.local_secret)
    };
    let linker =
        HttpLinkerClient::with_client(home_client(), &format!("http://{server}"), P, P, ALICE);
    let reply = linker
        .link(&LinkRequest::new(id, secret))
        .await
        .expect("link accepted");
    assert_eq!(
        reply.state,
        LinkState::Pending,
        "202: the link is on its way"
    );
}

async fn next<T>(what: &str, rx: &mut mpsc::UnboundedReceiver<T>, within: Duration) -> T {
    timeout(within, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {within:?}"))
        .unwrap_or_else(|| panic!("{what}: channel closed"))
}

/// With a 5 s announce interval, a link reaches the held agent within 1 s of its `202`: the
/// server answers the held announcement with the message at once. An agent that sent no
/// `hold_ms` would learn of it only at its next announcement, ~4.7 s later.
#[tokio::test]
async fn a_link_reaches_a_held_agent_at_once() {
    let interval = Duration::from_secs(5);
    let server = start_server(
        ServerConfig::default()
            .announce_interval(interval)
            .presence_ttl(Duration::from_millis(12_500)),
    )
    .await;
    let agent = new_agent(Duration::from_secs(2));
    let (task, mut announced, _events) = drive(&agent, &format!("http://{server}"));

    // The first announcement learns the server's revision (1.6); the second is the one to
    // catch, 5 s later (the server's poll_after).
    let first = next("first announcement", &mut announced, Duration::from_secs(5)).await;
    assert_eq!(first, None, "no hold before the server stated its revision");
    let second = next(
        "second announcement",
        &mut announced,
        Duration::from_secs(10),
    )
    .await;
    // Let it reach the server and be held (or, without a hold, be answered).
    tokio::time::sleep(Duration::from_millis(300)).await;

    link(&agent, server).await;
    let accepted = Instant::now();
    let status = timeout(Duration::from_secs(15), task)
        .await
        .expect("the agent ends")
        .unwrap();
    let took = accepted.elapsed();
    eprintln!("linked {took:?} after the link's 202");
    assert_eq!(status, AgentStatus::Linked);
    assert!(
        took < Duration::from_secs(1),
        "linked {took:?} after the link's 202 (announce interval {interval:?}): not held"
    );
    assert_eq!(
        second,
        Some(20_000),
        "the default hold, asked of a 1.6 server"
    );
}

/// Counts the requests the proxy cut.
#[derive(Default)]
struct Cuts(AtomicU32);

/// A reverse proxy on 127.0.0.1:0 to `upstream` that waits at most `idle` for the first byte
/// of the upstream's answer, and otherwise answers `504` with an HTML page and closes both
/// connections (nginx with `proxy_read_timeout` set that short). One request per connection.
async fn cutting_proxy(upstream: SocketAddr, idle: Duration) -> (SocketAddr, Arc<Cuts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cuts = Arc::new(Cuts::default());
    let counted = Arc::clone(&cuts);
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let cuts = Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut first = vec![0u8; 16 * 1024];
                match timeout(idle, server_read.read(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {
                        let _ = client_write.write_all(&first[..n]).await;
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        cuts.0.fetch_add(1, Ordering::SeqCst);
                        let page = "<html><head><title>504 Gateway Time-out</title></head>\
                            <body><center><h1>504 Gateway Time-out</h1></center></body></html>";
                        let answer = format!(
                            "HTTP/1.1 504 Gateway Time-out\r\ncontent-type: text/html\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{page}",
                            page.len()
                        );
                        let _ = client_write.write_all(answer.as_bytes()).await;
                    }
                }
                let _ = client_write.shutdown().await;
                up.abort();
            });
        }
    });
    (addr, cuts)
}

/// Through a proxy that cuts requests idle for 1 s, two held announcements are cut, the agent
/// says it falls back (`HoldFallback { failures: 2 }`), asks for no hold again (no further
/// cut, every later announcement without `hold_ms`), and a link accepted afterwards still
/// completes within two poll intervals.
#[tokio::test]
async fn a_proxy_that_cuts_holds_makes_the_agent_fall_back_and_still_link() {
    let interval = Duration::from_secs(1);
    let server = start_server(
        ServerConfig::default()
            .announce_interval(interval)
            .presence_ttl(Duration::from_secs(3)),
    )
    .await;
    let (proxy, cuts) = cutting_proxy(server, Duration::from_secs(1)).await;
    let agent = new_agent(interval);
    let (task, mut announced, mut events) = drive(&agent, &format!("http://{proxy}"));

    let fallback = async {
        loop {
            if let AgentEvent::HoldFallback { failures } =
                next("events", &mut events, Duration::from_secs(15)).await
            {
                return failures;
            }
        }
    };
    let failures = timeout(Duration::from_secs(15), fallback)
        .await
        .expect("the agent falls back from holds within 15 s");
    assert_eq!(failures, 2);
    assert_eq!(
        cuts.0.load(Ordering::SeqCst),
        2,
        "two held announcements cut"
    );
    let mut holds = Vec::new();
    while let Ok(hold) = announced.try_recv() {
        holds.push(hold);
    }
    assert_eq!(
        holds.iter().filter(|hold| hold.is_some()).count(),
        2,
        "two announcements asked for a hold before the fallback: {holds:?}"
    );

    // It polls at its interval now: a few announcements, none held, none cut.
    let polled = Instant::now();
    for n in 0..3 {
        let hold = next("a plain poll", &mut announced, 3 * interval).await;
        assert_eq!(hold, None, "poll {n} after the fallback asked for a hold");
    }
    let took = polled.elapsed();
    assert!(
        took < 4 * interval,
        "three polls took {took:?} at an interval of {interval:?}"
    );

    link(&agent, server).await;
    let accepted = Instant::now();
    let status = timeout(Duration::from_secs(10), task)
        .await
        .expect("the agent ends")
        .unwrap();
    assert_eq!(status, AgentStatus::Linked);
    let took = accepted.elapsed();
    assert!(
        took < 2 * interval + Duration::from_millis(500),
        "linked {took:?} after the link's 202, at a poll interval of {interval:?}"
    );
    assert_eq!(
        cuts.0.load(Ordering::SeqCst),
        2,
        "no hold cut after the fallback"
    );
}

/// A code typed at the device while its announcement is held is redeemed at once: the driver
/// drops the held request (`Agent::wants_announce_reply`) instead of waiting out the 20 s hold.
/// So does a cancel: the driver ends at once.
#[tokio::test]
async fn a_code_typed_or_a_cancel_during_a_hold_does_not_wait_for_it() {
    let server = start_server(ServerConfig::default()).await;
    let base = format!("http://{server}");
    for cancel in [false, true] {
        let agent = new_agent(Duration::from_secs(2));
        let (task, mut announced, _events) = drive(&agent, &base);
        let _first = next("first announcement", &mut announced, Duration::from_secs(5)).await;
        let held = next("held announcement", &mut announced, Duration::from_secs(5)).await;
        assert_eq!(held, Some(20_000));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let typed = Instant::now();
        if cancel {
            lock(&agent).cancel();
        } else {
            let linker = HttpLinkerClient::with_client(home_client(), &base, P, P, ALICE);
            let code = linker.mint_code().await.expect("a manual code").code;
            lock(&agent)
                .enter_code(Instant::now(), code)
                .expect("a code, while discovering");
        }
        let status = timeout(Duration::from_secs(15), task)
            .await
            .expect("the agent ends")
            .unwrap();
        let took = typed.elapsed();
        let expected = if cancel {
            AgentStatus::Stopped(lanlink::event::StopReason::Cancelled)
        } else {
            AgentStatus::Linked
        };
        assert_eq!(status, expected);
        assert!(
            took < Duration::from_secs(2),
            "ended {took:?} after the {} (the hold is 20 s)",
            if cancel { "cancel" } else { "code" }
        );
    }
}

/// `HttpAgentClient` waits a held announcement out past its client's own timeout (10 s for
/// `client_builder`): an 11.5 s hold is answered normally, not cut at 10 s.
#[tokio::test]
async fn the_http_client_waits_out_a_hold_longer_than_its_timeout() {
    let hold = Duration::from_millis(11_500);
    let server = start_server(ServerConfig::default().max_hold(hold)).await;
    let client = HttpAgentClient::with_client(home_client(), &format!("http://{server}"), P);
    let (announce, _secret) = support::announcement(1, "192.168.1.50");
    let announce = announce.with_hold(11_500);
    let sent = Instant::now();
    let reply = client.announce(&announce).await;
    let took = sent.elapsed();
    let reply = reply.expect("the held announcement's answer, after its hold");
    assert!(reply.messages.is_empty());
    assert!(
        took >= Duration::from_secs(11),
        "answered after {took:?}: was it held?"
    );
}
