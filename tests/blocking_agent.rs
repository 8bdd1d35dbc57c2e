//! `examples/blocking_agent.rs` — the agent's core driven by hand over ureq and tiny_http, with no
//! tokio — run as a process against the crate's own server and linker (over loopback only), and
//! its local endpoint compared, request by request and byte by byte, with the crate's axum
//! endpoint configured the same way.
//!
//! The example binary is built by a plain `cargo test` (cargo builds the examples of the package);
//! with a target filter (`cargo test --test blocking_agent`) build it first:
//! `cargo build --examples` (with the same features).
#![cfg(feature = "http")]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use lanlink::agent::{Agent, AgentConfig};
use lanlink::driver::{DriverConfig, SharedAgent};
use lanlink::event::{LinkerEvent, ServerEvent};
use lanlink::http::client::HttpLinkerClient;
use lanlink::http::{self, serve, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::server::{Events, MemoryStore, Server, ServerConfig};
use lanlink::transport::REDEEM_PATH;
use lanlink::wire::{self, RedeemReply, MAX_MESSAGE_BYTES};
use lanlink::{AccountId, DeviceInfo, InstanceId};
use serde_json::Value;
use support::linking::link_first;

const P: &str = DEFAULT_PREFIX;
const ALICE: &str = "alice-token-0123456789abcdef";
/// The origin both endpoints allow.
const ORIGIN: &str = "https://cloud.example";
/// The most any one step may take.
const LIMIT: Duration = Duration::from_secs(20);

// ───────────────────────────── setup ─────────────────────────────

/// The built example, next to this test binary.
fn example_binary() -> PathBuf {
    support::example::built("blocking_agent")
}

/// The server: its events, the auth tokens it minted (read off its redeem replies), its address.
struct TestServer {
    events: Arc<Mutex<Vec<ServerEvent>>>,
    minted: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

/// Records the token of every successful `POST {P}/agent/redeem` reply, and passes the reply on
/// unchanged: the lanlink routes keep no token (the link-outcome hook is still to come), so this
/// is how the test learns what the server minted.
async fn record_minted(
    State(minted): State<Arc<Mutex<Vec<String>>>>,
    request: Request,
    next: Next,
) -> Response {
    let redeem = request.uri().path() == format!("{P}{REDEEM_PATH}");
    let response = next.run(request).await;
    if !redeem || response.status() != 200 {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .expect("redeem reply body");
    let reply: RedeemReply = wire::decode(&bytes, MAX_MESSAGE_BYTES).expect("redeem reply");
    minted
        .lock()
        .unwrap()
        .push(reply.auth_token.to_hex().to_string());
    Response::from_parts(parts, Body::from(bytes))
}

/// The crate's server (routes over an in-memory store, `http::serve`, bearer tokens for alice) on
/// 127.0.0.1:0.
async fn start_server() -> TestServer {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let store = Arc::new(MemoryStore::default());
    let service = Server::with_store(
        ServerConfig::default(),
        store,
        Events::sink(move |event| sink.lock().unwrap().push(event)),
    )
    .expect("server config");
    let auth = Arc::new(BearerTokens::new(vec![(
        ALICE.to_owned(),
        AccountId::new("alice").unwrap(),
    )]));
    let minted = Arc::new(Mutex::new(Vec::new()));
    let app = http::server::router(Arc::new(service), auth, P)
        .fallback(http::server::not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&minted),
            record_minted,
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending(),
    ));
    TestServer {
        events,
        minted,
        addr,
    }
}

/// Takes the server's events so far.
fn server_events(server: &TestServer) -> Vec<ServerEvent> {
    std::mem::take(&mut *server.events.lock().unwrap())
}

/// The example as a child process: its stdout as JSON lines, its stderr kept whole. Killed on
/// drop.
struct Example {
    child: Child,
    lines: mpsc::Receiver<Result<Value, String>>,
    stdout: Arc<Mutex<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// Its stdin, where a line is a manual code (open until the example is dropped).
    stdin: Option<std::process::ChildStdin>,
}

impl Example {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(example_binary())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the example starts");
        let (send, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let seen = Arc::clone(&stdout);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                seen.lock().unwrap().push_str(&line);
                seen.lock().unwrap().push('\n');
                let value = serde_json::from_str(&line)
                    .map_err(|err| format!("not a JSON line ({err}): {line}"));
                if send.send(value).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut err = child.stderr.take().unwrap();
        let stderr = Some(std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        }));
        Self {
            child,
            lines,
            stdout,
            stderr,
            stdin,
        }
    }

    /// The next line on stdout.
    fn next_line(&self) -> Value {
        self.lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|err| panic!("no line from the example within {LIMIT:?}: {err}"))
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Lines until one whose `state` is `state` (included).
    fn lines_until(&self, state: &str) -> Vec<Value> {
        let mut lines = Vec::new();
        loop {
            let line = self.next_line();
            let done = line["state"] == state;
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Its exit status, once it has exited (within `LIMIT`).
    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(start.elapsed() < LIMIT, "the example did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it wrote on stderr, once it has exited.
    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .expect("stderr read once")
            .join()
            .expect("stderr reader")
    }

    /// The address its endpoint listens on (its first line).
    fn listening(&self) -> SocketAddr {
        let line = self.next_line();
        line["listening"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("not a listening line: {line}"))
    }

    /// Its instance id (the `discovering` line, next after the listening line).
    fn discovering(&self) -> InstanceId {
        let line = self.next_line();
        assert_eq!(line["state"], "discovering", "{line}");
        line["instance_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no instance id: {line}"))
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory under the temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("lanlink-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ───────────────────────────── linking ─────────────────────────────

#[test]
fn the_blocking_agent_links_through_the_crates_server_and_linker() {
    let rt = runtime();
    let server = rt.block_on(start_server());
    let base = format!("http://{}", server.addr);
    let dir = TempDir::new("blocking-agent");
    let token_file = dir.0.join("device.token");
    let mut example = Example::spawn(&[
        "--server",
        &base,
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        token_file.to_str().unwrap(),
        "--window",
        "120",
    ]);
    let endpoint = example.listening();
    let instance_id = example.discovering();

    // Its first announcement reached the server: the linker will find it at once.
    let start = Instant::now();
    let mut events = Vec::new();
    while !events.iter().any(|event| {
        matches!(event, ServerEvent::Announced { instance_id: id, .. } if *id == instance_id)
    }) {
        assert!(start.elapsed() < LIMIT, "no announcement: {events:?}");
        std::thread::sleep(Duration::from_millis(20));
        events.extend(server_events(&server));
    }

    // The crate's linker, over reqwest: discover, fetch the secret from the example's
    // tiny_http endpoint, link, wait until the agent has redeemed.
    let client = HttpLinkerClient::new(&base, ALICE).unwrap();
    let mut discovered = Vec::new();
    let mut linker = Linker::without_nonce(
        LinkerConfig {
            status_interval: Duration::from_millis(100),
            ..LinkerConfig::default()
        },
        Instant::now(),
    );
    let linked = rt
        .block_on(async {
            tokio::time::timeout(
                LIMIT,
                link_first(&mut linker, &client, &DriverConfig::default(), |event| {
                    if let LinkerEvent::Discovered { agents } = event {
                        discovered.extend(
                            agents
                                .iter()
                                .map(|a| (a.instance_id, SocketAddr::new(a.private_ip, a.port))),
                        );
                    }
                }),
            )
            .await
        })
        .expect("the linker finishes in time")
        .expect("linked");
    assert_eq!(linked, instance_id);
    // It was discovered at the address its tiny_http endpoint listens on.
    assert_eq!(discovered, [(instance_id, endpoint)]);

    // What the example said, in order, and that it exited 0 (linked).
    let lines = example.lines_until("linked");
    let states: Vec<&str> = lines.iter().filter_map(|l| l["state"].as_str()).collect();
    assert_eq!(
        states,
        // How the server sees it (its first announce reply) comes before anything else.
        [
            "visibility",
            "secret_served",
            "secret_verified",
            "redeeming",
            "linked"
        ],
        "{lines:?}"
    );
    assert_eq!(lines[0]["visible"], true);
    assert_eq!(lines[1]["client"], "127.0.0.1");
    assert_eq!(lines[3]["manual"], false);
    let last = lines.last().unwrap();
    assert_eq!(last["instance_id"], instance_id.to_string());
    assert_eq!(last["token_file"], token_file.to_str().unwrap());
    let status = example.wait();
    assert_eq!(status.code(), Some(0), "linked is exit status 0");

    // The token file: owner-only, and the very token the server minted for this redemption.
    let metadata = std::fs::metadata(&token_file).expect("token file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    }
    let _ = metadata;
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 64);
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(*server.minted.lock().unwrap(), std::slice::from_ref(&token));
    // The server's word on it: linked to alice, through the auto code.
    events.extend(server_events(&server));
    let linked_events: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            ServerEvent::Linked {
                instance_id,
                account,
                manual,
                ..
            } => Some((*instance_id, account.clone(), *manual)),
            _ => None,
        })
        .collect();
    assert_eq!(
        linked_events,
        [(instance_id, AccountId::new("alice").unwrap(), false)]
    );
    // The token never shows on stdout or stderr.
    let stdout = example.stdout.lock().unwrap().clone();
    let stderr = example.stderr();
    assert!(!stdout.contains(&token) && !stderr.contains(&token));
    assert!(
        stderr.contains(&format!("GET {P}/secret from 127.0.0.1: 200")),
        "the endpoint's log line: {stderr}"
    );
}

#[test]
fn discovery_that_ends_without_a_link_is_exit_status_1() {
    let rt = runtime();
    let server = rt.block_on(start_server());
    // A 3-second window (just over the announce interval) that nobody links in.
    let mut example = Example::spawn(&[
        "--server",
        &format!("http://{}", server.addr),
        "--window",
        "3",
    ]);
    example.listening();
    example.discovering();
    let lines = example.lines_until("stopped");
    assert_eq!(
        lines.last().unwrap()["reason"],
        "window_expired",
        "{lines:?}"
    );
    assert_eq!(example.wait().code(), Some(1));
}

/// A code typed on stdin while the example's announcement is held (revision 1.6: the crate's
/// server holds it up to 20 s) is redeemed at once: the example waits for the held answer on a
/// thread of its own and drops it when the agent no longer wants it.
#[test]
fn a_code_typed_during_a_held_announcement_is_redeemed_at_once() {
    let rt = runtime();
    let server = rt.block_on(start_server());
    let base = format!("http://{}", server.addr);
    let mut example = Example::spawn(&["--server", &base, "--window", "120"]);
    example.listening();
    let instance_id = example.discovering();
    // Two announcements recorded: the first learned the server's revision, the second asks
    // for a hold and finds nothing, so it is held.
    let start = Instant::now();
    let mut announced = 0;
    while announced < 2 {
        assert!(start.elapsed() < LIMIT, "not announced twice");
        std::thread::sleep(Duration::from_millis(20));
        announced += server_events(&server)
            .iter()
            .filter(|event| {
                matches!(event, ServerEvent::Announced { instance_id: id, .. } if *id == instance_id)
            })
            .count();
    }
    std::thread::sleep(Duration::from_millis(300));
    let client = HttpLinkerClient::new(&base, ALICE).unwrap();
    let code = rt
        .block_on(lanlink::transport::LinkerServerTransport::mint_code(
            &client,
        ))
        .expect("a manual code")
        .code;
    let typed = Instant::now();
    let stdin = example.stdin.as_mut().expect("stdin");
    writeln!(stdin, "{}", code.expose()).expect("typed");
    let lines = example.lines_until("linked");
    let took = typed.elapsed();
    assert!(
        lines.iter().any(|line| line["manual"] == true),
        "the typed code was redeemed: {lines:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "linked {took:?} after the code was typed (the hold is 20 s)"
    );
    assert_eq!(example.wait().code(), Some(0));
}

// ───────────────────────────── the endpoint, byte for byte ─────────────────────────────

/// A response as it came off the socket.
#[derive(Debug)]
struct Raw {
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    status_line: String,
    /// Every header line, in order, as sent (name case kept).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    /// The header lines the core writes: all but the HTTP library's own framing ones.
    fn core_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(name, _)| !FRAMING.contains(&name.to_ascii_lowercase().as_str()))
            .cloned()
            .collect()
    }

    /// The framing header lines, names lowercased (the libraries write them in different case).
    fn framing(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
            .filter(|(name, _)| FRAMING.contains(&name.as_str()))
            .collect()
    }

    fn framing_value(&self, name: &str) -> Option<String> {
        self.framing()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// Headers each HTTP library writes for itself, not the core.
const FRAMING: [&str; 5] = [
    "date",
    "content-length",
    "transfer-encoding",
    "connection",
    "server",
];

/// Sends `head` (the request line and header lines, without the final blank line) with
/// `connection: close`, over a plain socket so that no client normalises anything.
fn raw(addr: SocketAddr, head: &str) -> Raw {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream
        .write_all(format!("{head}connection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("the whole response");
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&bytes)));
    let head = String::from_utf8(bytes[..split].to_vec()).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_owned();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a header line");
            (name.to_owned(), value.trim().to_owned())
        })
        .collect();
    Raw {
        status_line,
        headers,
        body: bytes[split + 4..].to_vec(),
    }
}

/// One side of the comparison: where it listens, and its instance id.
struct Side {
    addr: SocketAddr,
    id: InstanceId,
}

/// A request, written for one side (its host and instance id).
type Case = (&'static str, fn(&Side) -> String);

/// The cases, in this order: every refusal first, the requests that are served (the secret
/// handed out) last, in case serving ever changes the agent's state.
fn cases() -> Vec<Case> {
    vec![
        ("wrong instance id", |s| {
            let other = InstanceId::generate(&mut lanlink::os_rng());
            format!(
                "GET {P}/secret?instance_id={other} HTTP/1.1\r\nhost: {}\r\n",
                s.addr
            )
        }),
        ("repeated instance_id", |s| {
            format!(
                "GET {P}/secret?instance_id={id}&instance_id={id} HTTP/1.1\r\nhost: {}\r\n",
                s.addr,
                id = s.id
            )
        }),
        ("no instance_id", |s| {
            format!("GET {P}/secret HTTP/1.1\r\nhost: {}\r\n", s.addr)
        }),
        ("disallowed Host", |s| {
            format!(
                "GET {P}/secret?instance_id={} HTTP/1.1\r\nhost: rebind.example\r\n",
                s.id
            )
        }),
        ("two Host lines", |s| {
            format!(
                "GET {P}/secret?instance_id={} HTTP/1.1\r\nhost: {a}\r\nhost: {a}\r\n",
                s.id,
                a = s.addr
            )
        }),
        ("disallowed Origin", |s| {
            format!(
                "GET {P}/secret?instance_id={} HTTP/1.1\r\nhost: {}\r\norigin: https://evil.example\r\n",
                s.id, s.addr
            )
        }),
        ("absolute-form target naming another host", |s| {
            format!(
                "GET http://rebind.example{P}/secret?instance_id={} HTTP/1.1\r\nhost: {}\r\n",
                s.id, s.addr
            )
        }),
        ("CORS preflight from the allowed origin", |s| {
            format!(
                "OPTIONS {P}/secret HTTP/1.1\r\nhost: {}\r\norigin: {ORIGIN}\r\n\
                 access-control-request-method: GET\r\n",
                s.addr
            )
        }),
        ("PNA preflight", |s| {
            format!(
                "OPTIONS {P}/secret HTTP/1.1\r\nhost: {}\r\norigin: {ORIGIN}\r\n\
                 access-control-request-method: GET\r\n\
                 access-control-request-private-network: true\r\n",
                s.addr
            )
        }),
        ("preflight from another origin", |s| {
            format!(
                "OPTIONS {P}/secret HTTP/1.1\r\nhost: {}\r\norigin: https://evil.example\r\n\
                 access-control-request-method: GET\r\n",
                s.addr
            )
        }),
        ("HEAD", |s| {
            format!(
                "HEAD {P}/secret?instance_id={} HTTP/1.1\r\nhost: {}\r\n",
                s.id, s.addr
            )
        }),
        ("POST", |s| {
            format!(
                "POST {P}/secret?instance_id={} HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\n",
                s.id, s.addr
            )
        }),
        ("lowercase method", |s| {
            format!(
                "get {P}/secret?instance_id={} HTTP/1.1\r\nhost: {}\r\n",
                s.id, s.addr
            )
        }),
        ("unknown path under the prefix", |s| {
            format!("GET {P}/nope HTTP/1.1\r\nhost: {}\r\n", s.addr)
        }),
        ("unknown path outside the prefix", |s| {
            format!("GET /nope HTTP/1.1\r\nhost: {}\r\n", s.addr)
        }),
        ("good secret fetch", |s| {
            format!(
                "GET {P}/secret?instance_id={} HTTP/1.1\r\nhost: {}\r\n",
                s.id, s.addr
            )
        }),
        ("good secret fetch from the allowed origin", |s| {
            format!(
                "GET {P}/secret?instance_id={} HTTP/1.1\r\nhost: {}\r\norigin: {ORIGIN}\r\n",
                s.id, s.addr
            )
        }),
        (
            "absolute-form target, its authority standing for Host",
            |s| {
                format!(
                    "GET http://{}{P}/secret?instance_id={} HTTP/1.1\r\nhost: rebind.example\r\n",
                    s.addr, s.id
                )
            },
        ),
    ]
}

/// `{"local_secret":"<64 lowercase hex>"}` with the hex replaced by `x`s (each agent has its
/// own secret); any other body as it is.
fn masked(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    match text
        .strip_prefix(r#"{"local_secret":""#)
        .and_then(|rest| rest.strip_suffix(r#""}"#))
    {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            format!(r#"{{"local_secret":"{}"}}"#, "x".repeat(64)).into_bytes()
        }
        _ => body.to_vec(),
    }
}

#[test]
fn the_blocking_endpoint_answers_byte_for_byte_as_the_axum_endpoint() {
    let rt = runtime();
    let server = rt.block_on(start_server());
    let example = Example::spawn(&[
        "--server",
        &format!("http://{}", server.addr),
        "--allow-origin",
        ORIGIN,
    ]);
    let blocking = Side {
        addr: example.listening(),
        id: example.discovering(),
    };
    // The crate's axum endpoint, configured as the example configures its agent, served as
    // examples/agent.rs serves it.
    let (axum_agent, axum_addr) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let info = DeviceInfo::new(
            "lanlink-device",
            "example",
            "lanlink-example-blocking-agent",
            env!("CARGO_PKG_VERSION"),
        )
        .unwrap();
        let config = AgentConfig::new(addr.ip(), addr.port(), info)
            .window(Duration::from_secs(600))
            .allow_origin(ORIGIN);
        let agent: SharedAgent = Arc::new(Mutex::new(
            Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap(),
        ));
        let app = http::agent::router(Arc::clone(&agent), P).fallback(http::server::not_found);
        tokio::spawn(serve(
            listener,
            app,
            ServeConfig::default(),
            std::future::pending(),
        ));
        (agent, addr)
    });
    let reference = Side {
        addr: axum_addr,
        id: axum_agent.lock().unwrap().instance_id(),
    };

    let mut report = Vec::new();
    for (what, request) in cases() {
        let got = raw(blocking.addr, &request(&blocking));
        let want = raw(reference.addr, &request(&reference));
        report.push(format!(
            "{what}: {}\n  tiny_http framing {:?}\n  axum      framing {:?}",
            want.status_line,
            got.framing(),
            want.framing()
        ));
        assert_eq!(got.status_line, want.status_line, "{what}");
        assert_eq!(got.core_headers(), want.core_headers(), "{what}");
        assert_eq!(masked(&got.body), masked(&want.body), "{what}");
        if want.status_line.contains(" 200 ") {
            assert_ne!(
                masked(&want.body),
                want.body,
                "{what}: the secret is served"
            );
        }
        // The framing, exactly as far as it is the same, and the differences named.
        assert!(got.framing_value("date").is_some() && want.framing_value("date").is_some());
        assert_eq!(
            got.framing_value("server").as_deref(),
            Some("tiny-http (Rust)")
        );
        assert_eq!(want.framing_value("server"), None);
        // hyper answers the request's `connection: close` in kind; tiny_http closes silently.
        assert_eq!(want.framing_value("connection").as_deref(), Some("close"));
        assert_eq!(got.framing_value("connection"), None);
        assert_eq!(got.framing_value("transfer-encoding"), None, "{what}");
        assert_eq!(want.framing_value("transfer-encoding"), None, "{what}");
        if want.status_line.contains(" 204 ") {
            // hyper sends no Content-Length on a 204 (RFC 9110 §8.6), tiny_http `0`.
            assert_eq!(want.framing_value("content-length"), None, "{what}");
            assert_eq!(got.framing_value("content-length").as_deref(), Some("0"));
        } else {
            assert_eq!(
                got.framing_value("content-length"),
                want.framing_value("content-length"),
                "{what}"
            );
        }
    }
    println!("{}", report.join("\n"));
}

/// `endpoint::split_target`, which the example uses on tiny_http's raw target, splits every
/// target the axum adapter's URI parser accepts as that parser does (the targets it refuses
/// are answered `400` by hyper before any route runs, and fall to no route in the core).
#[test]
fn split_target_agrees_with_the_axum_uri_parser() {
    let targets = [
        "/lanlink/v1/secret?instance_id=x",
        "/lanlink/v1/secret?",
        "/lanlink/v1/secret?a=1&a=2",
        "/lanlink/v1/secret?q#frag",
        "/lanlink/v1/secret#frag?q",
        "/a%20b?c%20d",
        "/",
        "*",
        "http://127.0.0.1:8080/lanlink/v1/secret?instance_id=x",
        "HTTP://127.0.0.1/lanlink/v1/secret",
        "http://[::1]:8080/a?b",
        "http://h",
        "http://h?q",
        "https://printer.local/a",
        "http://u@h/a",
    ];
    for target in targets {
        let uri: axum::http::Uri = target.parse().expect("hyper accepts it");
        let split = lanlink::endpoint::split_target(target);
        assert_eq!(
            (split.authority, split.path, split.query),
            (uri.authority().map(|a| a.as_str()), uri.path(), uri.query()),
            "{target}"
        );
    }
}

/// The hand-driven agent on another HTTP stack passes the conformance kit's every endpoint check,
/// as the crate's own axum endpoint does (`tests/conformance.rs`).
#[cfg(feature = "conformance")]
#[test]
fn the_blocking_agent_passes_the_conformance_kit() {
    use lanlink::conformance::{check_agent_endpoint, EndpointTarget, ENDPOINT_CHECKS};
    let rt = runtime();
    let server = rt.block_on(start_server());
    let example = Example::spawn(&[
        "--server",
        &format!("http://{}", server.addr),
        "--allow-origin",
        ORIGIN,
        "--host-name",
        "printer.local",
    ]);
    let at = example.listening();
    let id = example.discovering();
    let target =
        EndpointTarget::new(&format!("http://{at}"), id, ORIGIN).host_name("printer.local");
    let report = rt.block_on(check_agent_endpoint(&target));
    print!("{report}");
    let ids: Vec<_> = report.checks().iter().map(|c| c.id).collect();
    let want: Vec<_> = ENDPOINT_CHECKS.iter().map(|c| c.id).collect();
    assert_eq!(ids, want, "every check made");
    assert!(report.complete(), "{}:\n{report}", report.summary());
}
