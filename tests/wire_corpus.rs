//! One corpus of raw requests, sent over TCP to the axum server (`http::server::router` on
//! `http::serve`) and to `examples/blocking_server.rs` (the same core on the example's own
//! blocking HTTP/1.1 shell over `std::net` and `httparse`, no tokio), both started here with the
//! same configuration and the same users and fed the same requests in the same order: every
//! answer must be identical byte for byte — the status line, every header line in order, and the
//! body — apart from:
//!
//! - where each HTTP layer puts the framing headers it writes itself ([`FRAMING`]:
//!   `content-length`, `date`, `connection`): hyper writes the core's `connection: close` among
//!   the core's lines and its own after `content-length`, the example writes them all after the
//!   core's. They are compared apart, as a set, and the date's value is not compared;
//! - the values each server draws at random or reads from its clock ([`MASKED`]: `code`,
//!   `expires_at`, `auth_token`), whose string values are masked in both bodies;
//! - a request that names a code minted by the server (`{CODE}`) names each server's own.
//!
//! Two requests `tiny_http` (the example's former HTTP library) did not hand over are asserted
//! apart, answered alike ([`requests_tiny_http_dropped_are_answered_alike`]): a forwarding line
//! that is not text, and a body of at most 1 KiB that breaks off.
//!
//! The example binary is built by a plain `cargo test` (cargo builds the examples of the
//! package); with a target filter (`cargo test --test wire_corpus`) build it first:
//! `cargo build --examples` (with the same features).

#![cfg(feature = "http-server")]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
use lanlink::endpoint::{self, HttpRequest};
use lanlink::http::{self, BearerTokens, ServeConfig};
use lanlink::server::{Server, ServerConfig};
use lanlink::wire::{self, Announce, RedeemRequest};
use lanlink::{AccountId, DeviceInfo, LinkCode};
use serde_json::Value;

const P: &str = "/lanlink/v1";
const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789";
/// What every request names as its host (both servers are reached on loopback).
const HOST: &str = "cloud.example";
/// The public networks the trusted proxy (127.0.0.1) names.
const HOME: &str = "203.0.113.7";
const TWO: &str = "203.0.113.20";
const FULL: &str = "203.0.113.30";
const LONE: &str = "203.0.113.40";
const GUESSER: &str = "198.51.100.66";
const CONFLICT: &str = "198.51.100.77";
const CGNAT: &str = "100.64.0.5";
/// The request deadline both servers are given.
const DEADLINE: Duration = Duration::from_secs(2);

/// Header lines each HTTP layer writes itself (hyper's and the example's: the same three; no
/// `server`, `transfer-encoding` or `keep-alive`, which are compared as the core's lines),
/// compared apart from the core's, as a set.
const FRAMING: [&str; 3] = ["content-length", "date", "connection"];
/// JSON keys whose string values are random or read from the clock, masked in both bodies.
const MASKED: [&str; 3] = ["code", "expires_at", "auth_token"];

// ───────────────────────────── the two servers ─────────────────────────────

fn config() -> ServerConfig {
    ServerConfig::default().trusted_proxies(vec!["127.0.0.1/32".parse().unwrap()])
}

/// The axum server, on a runtime of its own.
fn start_axum(runtime: &tokio::runtime::Runtime) -> SocketAddr {
    runtime.block_on(async {
        let server = Arc::new(Server::new(config()).unwrap());
        let users = vec![
            (ALICE.to_owned(), AccountId::new("alice").unwrap()),
            (BOB.to_owned(), AccountId::new("bob").unwrap()),
        ];
        let app = http::server::router(server, Arc::new(BearerTokens::new(users)), P)
            .fallback(http::server::not_found);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve_config = ServeConfig {
            request_timeout: DEADLINE,
            ..ServeConfig::default()
        };
        tokio::spawn(http::serve(
            listener,
            app,
            serve_config,
            std::future::pending(),
        ));
        addr
    })
}

/// The blocking server, as a child process killed when dropped.
struct Blocking(Child);

impl Drop for Blocking {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_blocking() -> (Blocking, SocketAddr) {
    let mut child = Command::new(example_binary())
        .args(["--listen", "127.0.0.1:0", "--trusted-proxy", "127.0.0.1/32"])
        .args([
            "--user",
            &format!("alice={ALICE}"),
            "--user",
            &format!("bob={BOB}"),
        ])
        .args(["--request-timeout-ms", &DEADLINE.as_millis().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the blocking server starts");
    let stdout = child.stdout.take().unwrap();
    let child = Blocking(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let listening: Value = serde_json::from_str(&line).expect("a JSON line");
    let addr = listening["listening"].as_str().unwrap().parse().unwrap();
    (child, addr)
}

/// The built example, next to this test binary.
fn example_binary() -> PathBuf {
    support::example::built("blocking_server")
}

// ───────────────────────────── raw requests ─────────────────────────────

/// How a request is sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Send {
    /// All at once.
    Whole,
    /// All at once, then the client closes its side (a body that breaks off).
    HalfClose,
    /// The bytes, then one more byte every 200 ms until the answer (a body that trickles past
    /// the deadline).
    Trickle,
}

struct Case {
    name: String,
    /// From the trusted proxy (127.0.0.1) or from an untrusted peer (127.0.0.2).
    proxy: bool,
    bytes: Vec<u8>,
    send: Send,
    /// Keep the `code` of the answer as `{CODE}` for later cases.
    keep_code: bool,
}

/// A request: the request line, `Host`, the given header lines, `Connection: close`, a
/// `Content-Length` for a body, and the body.
fn raw(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nhost: {HOST}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn xff(from: &str) -> (&'static str, String) {
    ("x-forwarded-for", from.to_owned())
}

/// The answer as compared: the status line, the header lines but the framing ones, the
/// framing ones sorted (`date` without its value), the body with [`MASKED`] values masked.
/// `None`: the connection closed with no answer.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status_line: String,
    headers: Vec<String>,
    framing: Vec<String>,
    body: String,
}

fn connect(to: SocketAddr, proxy: bool) -> TcpStream {
    let from: IpAddr = if proxy { "127.0.0.1" } else { "127.0.0.2" }
        .parse()
        .unwrap();
    // std cannot bind before it connects: tokio's socket can, then hands the stream over.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        socket.connect(to).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

fn exchange(to: SocketAddr, case: &Case, bytes: &[u8]) -> (Option<Answer>, Option<String>) {
    let mut stream = connect(to, case.proxy);
    let _ = stream.write_all(bytes);
    let done = Arc::new(AtomicBool::new(false));
    let trickler = match case.send {
        Send::Whole => None,
        Send::HalfClose => {
            let _ = stream.shutdown(Shutdown::Write);
            None
        }
        Send::Trickle => {
            let mut writer = stream.try_clone().unwrap();
            let done = Arc::clone(&done);
            Some(std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if writer.write_all(b" ").is_err() {
                        break;
                    }
                }
            }))
        }
    };
    let head_request = bytes.starts_with(b"HEAD ");
    let answer = read_answer(&mut stream, head_request);
    done.store(true, Ordering::Relaxed);
    if let Some(trickler) = trickler {
        let _ = trickler.join();
    }
    answer
}

/// Reads one answer by its framing; also returns the raw `code` of its body, if any.
fn read_answer(stream: &mut TcpStream, head_request: bool) -> (Option<Answer>, Option<String>) {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).unwrap_or(0) == 0 {
        return (None, None);
    }
    let (mut headers, mut framing) = (Vec::new(), Vec::new());
    let (mut length, mut chunked) = (None, false);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("name: value");
        let (name, value) = (name.to_ascii_lowercase(), value.trim().to_owned());
        match name.as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            _ => {}
        }
        match name.as_str() {
            "date" => framing.push(name),
            framed if FRAMING.contains(&framed) => framing.push(format!("{name}: {value}")),
            _ => headers.push(format!("{name}: {value}")),
        }
    }
    let mut body = Vec::new();
    if head_request {
    } else if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body).unwrap();
    } else {
        reader.read_to_end(&mut body).unwrap();
    }
    let body = String::from_utf8(body).expect("a text body");
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned));
    let masked = mask(&body);
    if masked != body {
        // A masked value (a fresh code, a time whose fraction of a second chrono writes in 3, 6
        // or 9 digits) may differ in length between two answers alike: so may their length.
        for line in &mut framing {
            if line.starts_with("content-length: ") {
                *line = "content-length: *".to_owned();
            }
        }
    }
    framing.sort();
    let answer = Answer {
        status_line: status_line.trim_end().to_owned(),
        headers,
        framing,
        body: masked,
    };
    (Some(answer), code)
}

/// The body with the string value of every [`MASKED`] key replaced by `*`.
fn mask(body: &str) -> String {
    let mut out = body.to_owned();
    for key in MASKED {
        let opening = format!("\"{key}\":\"");
        let mut from = 0;
        while let Some(at) = out[from..].find(&opening) {
            let start = from + at + opening.len();
            let Some(end) = out[start..].find('"') else {
                break;
            };
            out.replace_range(start..start + end, "*");
            from = start + 1;
        }
    }
    out
}

// ───────────────────────────── the seeded state ─────────────────────────────

fn info() -> DeviceInfo {
    DeviceInfo::new("printer.local", "Voron 2.4", "lanlink-corpus", "0.1.0").unwrap()
}

/// An agent at `192.168.1.{host}:8080` and its first announcement.
fn agent(host: u8) -> (Agent, Announce) {
    let ip: IpAddr = format!("192.168.1.{host}").parse().unwrap();
    let config = AgentConfig::new(ip, 8080, info());
    let mut agent = Agent::new(config, std::time::Instant::now(), &mut lanlink::os_rng()).unwrap();
    let Some(AgentTransmit::Announce(announce)) = agent.poll_transmit(std::time::Instant::now())
    else {
        panic!("an announcement is due");
    };
    (agent, announce)
}

/// The agent's local secret, fetched from its endpoint (in process) as a LAN browser would.
fn secret_of(agent: &mut Agent, host: u8) -> String {
    let query = format!("instance_id={}", agent.instance_id());
    let authority = format!("192.168.1.{host}:8080");
    let headers = [("host", authority.as_bytes())];
    let request = HttpRequest {
        method: "GET",
        path: "/lanlink/v1/secret",
        query: Some(&query),
        authority: None,
        headers: &headers,
        peer: Some("192.168.1.20".parse().unwrap()),
    };
    let now = std::time::Instant::now();
    let answer = endpoint::handle(agent, now, &mut lanlink::os_rng(), P, &request);
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    body["local_secret"].as_str().unwrap().to_owned()
}

fn json(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

// ───────────────────────────── the corpus ─────────────────────────────

#[derive(Default)]
struct Corpus(Vec<Case>);

impl Corpus {
    fn add(&mut self, name: impl Into<String>, proxy: bool, bytes: Vec<u8>) -> &mut Case {
        self.0.push(Case {
            name: name.into(),
            proxy,
            bytes,
            send: Send::Whole,
            keep_code: false,
        });
        self.0.last_mut().unwrap()
    }

    fn post(&mut self, name: &str, path: &str, from: &str, body: &[u8]) -> &mut Case {
        let (x, from) = xff(from);
        let headers = [("content-type", "application/json"), (x, from.as_str())];
        self.add(
            name,
            true,
            raw("POST", &format!("{P}{path}"), &headers, body),
        )
    }

    fn user(&mut self, name: &str, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) {
        let bearer = format!("Bearer {ALICE}");
        let mut headers = vec![
            ("authorization", bearer.as_str()),
            ("x-forwarded-for", HOME),
        ];
        headers.extend_from_slice(extra);
        self.add(
            name,
            true,
            raw(method, &format!("{P}{path}"), &headers, body),
        );
    }
}

fn corpus() -> Corpus {
    let mut c = Corpus::default();
    let (mut home, home_announce) = agent(50);
    let home_bytes = wire::encode(&home_announce).to_vec();
    let home_id = home.instance_id().to_string();
    let home_secret = secret_of(&mut home, 50);

    // Agents announce: one at home, two in one network, seventeen in another (sixteen fit).
    c.post("announce at home", "/agent/announce", HOME, &home_bytes);
    let mut two_ids = Vec::new();
    for host in [60, 61] {
        let announce = agent(host).1;
        two_ids.push(announce.instance_id.to_string());
        let bytes = wire::encode(&announce).to_vec();
        c.post(
            &format!("announce {host} in a shared network"),
            "/agent/announce",
            TWO,
            &bytes,
        );
    }
    for host in 100..117 {
        let bytes = wire::encode(&agent(host).1).to_vec();
        c.post(
            &format!("announce {host} into a full network"),
            "/agent/announce",
            FULL,
            &bytes,
        );
    }
    let (lone, lone_announce) = agent(70);
    c.post(
        "announce alone",
        "/agent/announce",
        LONE,
        &wire::encode(&lone_announce),
    );
    let lone_id = lone.instance_id().to_string();

    // Announcements refused.
    let announce_value: Value = serde_json::from_slice(&home_bytes).unwrap();
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut value = announce_value.clone();
        edit(&mut value);
        json(value)
    };
    let other_id = agent(71).1.instance_id.to_string();
    c.post(
        "announce forged",
        "/agent/announce",
        HOME,
        &edited(&|v| v["instance_id"] = other_id.clone().into()),
    );
    let conflict = agent(72).1;
    let conflict_value = serde_json::to_value(&conflict).unwrap();
    c.post(
        "announce to conflict",
        "/agent/announce",
        CONFLICT,
        &json(conflict_value.clone()),
    );
    let mut conflicting = conflict_value.clone();
    conflicting["commitment"] = "ab".repeat(32).into();
    c.post(
        "announce a presence conflict",
        "/agent/announce",
        CONFLICT,
        &json(conflicting),
    );
    c.post(
        "announce a public private_ip",
        "/agent/announce",
        HOME,
        &edited(&|v| v["private_ip"] = "8.8.8.8".into()),
    );
    c.post(
        "announce version 2",
        "/agent/announce",
        HOME,
        &edited(&|v| v["version"] = 2.into()),
    );
    c.post(
        "announce an unknown field",
        "/agent/announce",
        HOME,
        &edited(&|v| v["extra"] = 1.into()),
    );
    c.post(
        "announce without a field",
        "/agent/announce",
        HOME,
        &edited(&|v| {
            v.as_object_mut().unwrap().remove("port");
        }),
    );
    c.post(
        "announce a long hostname",
        "/agent/announce",
        HOME,
        &edited(&|v| v["info"]["hostname"] = "h".repeat(300).into()),
    );
    c.post(
        "announce a hidden character",
        "/agent/announce",
        HOME,
        &edited(&|v| v["info"]["model"] = "Prusa\u{202E}4KM".into()),
    );
    c.post(
        "announce bad JSON",
        "/agent/announce",
        HOME,
        b"{\"instance_id\":",
    );
    c.post("announce an empty body", "/agent/announce", HOME, b"");
    c.post(
        "announce 5 KiB (over the announcement's 4 KiB)",
        "/agent/announce",
        HOME,
        &vec![b' '; 5 * 1024],
    );
    c.post(
        "announce 20 KiB (over the body limit)",
        "/agent/announce",
        HOME,
        &vec![b' '; 20 * 1024],
    );
    let chunked = {
        let mut out = format!(
            "POST {P}/agent/announce HTTP/1.1\r\nhost: {HOST}\r\ncontent-type: application/json\r\n\
             x-forwarded-for: {HOME}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        )
        .into_bytes();
        for piece in home_bytes.chunks(100) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    };
    c.add("announce chunked", true, chunked);

    // Who is the client.
    let announce = |c: &mut Corpus, name: &str, proxy: bool, headers: &[(&str, &str)]| {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        c.add(
            name,
            proxy,
            raw("POST", &format!("{P}/agent/announce"), &all, &home_bytes),
        );
    };
    announce(&mut c, "a trusted proxy names no client", true, &[]);
    announce(
        &mut c,
        "both forwarding headers",
        true,
        &[
            ("forwarded", &format!("for={HOME}")),
            ("x-forwarded-for", HOME),
        ],
    );
    announce(
        &mut c,
        "Forwarded from the trusted proxy",
        true,
        &[("forwarded", &format!("for={HOME}"))],
    );
    announce(
        &mut c,
        "Forwarded over two lines",
        true,
        &[
            ("forwarded", "for=192.0.2.1"),
            ("forwarded", &format!("for={HOME};proto=https")),
        ],
    );
    announce(
        &mut c,
        "Forwarded, an IPv6 client",
        true,
        &[("forwarded", "for=\"[2001:db8::7]:4711\"")],
    );
    announce(
        &mut c,
        "X-Forwarded-For over two lines",
        true,
        &[("x-forwarded-for", "192.0.2.1"), ("x-forwarded-for", HOME)],
    );
    announce(
        &mut c,
        "X-Forwarded-For names unknown",
        true,
        &[("x-forwarded-for", "unknown")],
    );
    announce(
        &mut c,
        "X-Forwarded-For names garbage",
        true,
        &[("x-forwarded-for", "not-an-address")],
    );
    announce(
        &mut c,
        "X-Forwarded-For names only trusted hops",
        true,
        &[("x-forwarded-for", "127.0.0.1")],
    );
    announce(
        &mut c,
        "Forwarded obfuscated",
        true,
        &[("forwarded", "for=_hidden")],
    );
    let hops = vec![HOME; 33].join(", ");
    announce(&mut c, "33 hops", true, &[("x-forwarded-for", &hops)]);
    let hops = vec![HOME; 32].join(", ");
    announce(&mut c, "32 hops", true, &[("x-forwarded-for", &hops)]);
    announce(
        &mut c,
        "an IPv4-mapped client",
        true,
        &[("x-forwarded-for", &format!("::ffff:{HOME}"))],
    );
    // An untrusted peer's own forwarding lines are not read: it is its own client.
    let bearer = format!("Bearer {ALICE}");
    c.add(
        "discover, spoofed from an untrusted peer",
        false,
        raw(
            "GET",
            &format!("{P}/discover"),
            &[("authorization", &bearer), ("x-forwarded-for", HOME)],
            b"",
        ),
    );
    c.add(
        "discover, spoofed Forwarded from an untrusted peer",
        false,
        raw(
            "GET",
            &format!("{P}/discover"),
            &[
                ("authorization", &bearer),
                ("forwarded", &format!("for={HOME}")),
            ],
            b"",
        ),
    );

    // Users: discovery.
    c.add(
        "discover without a user",
        true,
        raw(
            "GET",
            &format!("{P}/discover"),
            &[("x-forwarded-for", HOME)],
            b"",
        ),
    );
    c.add(
        "discover with an unknown token",
        true,
        raw(
            "GET",
            &format!("{P}/discover"),
            &[
                ("authorization", "Bearer nope-nope-nope"),
                ("x-forwarded-for", HOME),
            ],
            b"",
        ),
    );
    c.add(
        "discover with another scheme",
        true,
        raw(
            "GET",
            &format!("{P}/discover"),
            &[
                ("authorization", &format!("Basic {ALICE}")),
                ("x-forwarded-for", HOME),
            ],
            b"",
        ),
    );
    c.add(
        "discover with a lowercase scheme",
        true,
        raw(
            "GET",
            &format!("{P}/discover"),
            &[
                ("authorization", &format!("bearer {ALICE}")),
                ("x-forwarded-for", HOME),
            ],
            b"",
        ),
    );
    c.user("discover at home", "GET", "/discover", &[], b"");
    c.user("HEAD discover", "HEAD", "/discover", &[], b"");
    c.user(
        "discover with a 1 KiB body (ignored)",
        "GET",
        "/discover",
        &[],
        &[b'x'; 1024],
    );
    c.add(
        "discover in a network of two",
        true,
        raw(
            "GET",
            &format!("{P}/discover"),
            &[("authorization", &bearer), ("x-forwarded-for", TWO)],
            b"",
        ),
    );
    c.add(
        "discover in a full network",
        true,
        raw(
            "GET",
            &format!("{P}/discover"),
            &[("authorization", &bearer), ("x-forwarded-for", FULL)],
            b"",
        ),
    );
    c.add(
        "discover behind carrier NAT",
        true,
        raw(
            "GET",
            &format!("{P}/discover"),
            &[("authorization", &bearer), ("x-forwarded-for", CGNAT)],
            b"",
        ),
    );
    c.add(
        "discover, absolute-form target",
        true,
        raw(
            "GET",
            &format!("http://{HOST}{P}/discover"),
            &[("authorization", &bearer), ("x-forwarded-for", HOME)],
            b"",
        ),
    );
    c.user("POST discover", "POST", "/discover", &[], b"");
    c.user(
        "OPTIONS discover",
        "OPTIONS",
        "/discover",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
        b"",
    );

    // Users: links.
    let link_body = |id: &str, secret: &str| {
        json(serde_json::json!({ "instance_id": id, "local_secret": secret }))
    };
    let json_type = ("content-type", "application/json");
    c.add(
        "link without a user",
        true,
        raw(
            "POST",
            &format!("{P}/link"),
            &[json_type, ("x-forwarded-for", HOME)],
            &link_body(&home_id, &home_secret),
        ),
    );
    c.user(
        "link from another origin",
        "POST",
        "/link",
        &[json_type, ("origin", "https://evil.example")],
        &link_body(&home_id, &home_secret),
    );
    c.user(
        "link from Origin null",
        "POST",
        "/link",
        &[json_type, ("origin", "null")],
        &link_body(&home_id, &home_secret),
    );
    c.user(
        "link with two Origin lines",
        "POST",
        "/link",
        &[
            json_type,
            ("origin", "https://cloud.example"),
            ("origin", "https://cloud.example"),
        ],
        &link_body(&home_id, &home_secret),
    );
    c.user(
        "link as text/plain",
        "POST",
        "/link",
        &[("content-type", "text/plain")],
        &link_body(&home_id, &home_secret),
    );
    c.user(
        "link with no content type",
        "POST",
        "/link",
        &[],
        &link_body(&home_id, &home_secret),
    );
    c.user(
        "link, bad JSON",
        "POST",
        "/link",
        &[json_type],
        b"{\"instance_id\":",
    );
    c.user(
        "link, 20 KiB",
        "POST",
        "/link",
        &[json_type],
        &vec![b' '; 20 * 1024],
    );
    c.user(
        "link with the wrong secret",
        "POST",
        "/link",
        &[json_type],
        &link_body(&home_id, &"ab".repeat(32)),
    );
    c.user(
        "link an unknown instance",
        "POST",
        "/link",
        &[json_type],
        &link_body(&other_id, &home_secret),
    );
    c.add(
        "link in a network of two",
        true,
        raw(
            "POST",
            &format!("{P}/link"),
            &[
                json_type,
                ("authorization", &bearer),
                ("x-forwarded-for", TWO),
            ],
            &link_body(&two_ids[0], &home_secret),
        ),
    );
    c.add(
        "link behind carrier NAT",
        true,
        raw(
            "POST",
            &format!("{P}/link"),
            &[
                json_type,
                ("authorization", &bearer),
                ("x-forwarded-for", CGNAT),
            ],
            &link_body(&lone_id, &home_secret),
        ),
    );
    c.user(
        "link from the page's own origin",
        "POST",
        "/link",
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("origin", "http://cloud.example"),
        ],
        &link_body(&home_id, &home_secret),
    );
    c.user(
        "link again",
        "POST",
        "/link",
        &[json_type],
        &link_body(&home_id, &home_secret),
    );
    c.user("link status", "GET", &format!("/link/{home_id}"), &[], b"");
    c.user(
        "HEAD link status",
        "HEAD",
        &format!("/link/{home_id}"),
        &[],
        b"",
    );
    c.user(
        "link status of another",
        "GET",
        &format!("/link/{lone_id}"),
        &[],
        b"",
    );
    c.user(
        "link status, percent-encoded id",
        "GET",
        &format!("/link/{}", home_id.replace('-', "%2D")),
        &[],
        b"",
    );
    c.user("link status, bad id", "GET", "/link/not-a-uuid", &[], b"");
    c.user("link status, not UTF-8", "GET", "/link/%ff", &[], b"");
    c.user(
        "link status, extra segment",
        "GET",
        &format!("/link/{home_id}/extra"),
        &[],
        b"",
    );
    c.user("link status, empty id", "GET", "/link/", &[], b"");
    c.user(
        "PUT link status",
        "PUT",
        &format!("/link/{home_id}"),
        &[],
        b"",
    );
    c.user("GET link", "GET", "/link", &[], b"");

    // Users: codes, and redeeming them.
    c.add(
        "codes without a user",
        true,
        raw("POST", &format!("{P}/codes"), &[], b""),
    );
    c.user(
        "codes as text/plain",
        "POST",
        "/codes",
        &[("content-type", "text/plain")],
        b"",
    );
    c.user(
        "codes from another origin",
        "POST",
        "/codes",
        &[("origin", "https://evil.example")],
        b"",
    );
    c.user("GET codes", "GET", "/codes", &[], b"");
    c.user("codes", "POST", "/codes", &[], b"");
    c.0.last_mut().unwrap().keep_code = true;
    let redeem = |attempt: u32| {
        let request = RedeemRequest::new(
            home_announce.instance_id,
            LinkCode::parse("000000").unwrap(),
        )
        .with_presence_key(home_announce.presence_key.clone())
        .with_attempt(attempt);
        let text = String::from_utf8(wire::encode(&request).to_vec()).unwrap();
        text.replace("\"000000\"", "\"{CODE}\"").into_bytes()
    };
    c.post("redeem the code", "/agent/redeem", HOME, &redeem(2));
    c.post(
        "redeem it again, an older attempt",
        "/agent/redeem",
        HOME,
        &redeem(1),
    );
    c.post(
        "redeem it again from another network, proven",
        "/agent/redeem",
        LONE,
        &redeem(3),
    );
    let unproven = String::from_utf8(redeem(4)).unwrap();
    let unproven =
        serde_json::from_str::<Value>(&unproven.replace("{CODE}", "000000")).map(|mut v| {
            v.as_object_mut().unwrap().remove("presence_key");
            serde_json::to_string(&v)
                .unwrap()
                .replace("000000", "{CODE}")
        });
    c.post(
        "redeem it again unproven",
        "/agent/redeem",
        HOME,
        unproven.unwrap().as_bytes(),
    );
    c.post("redeem, bad JSON", "/agent/redeem", HOME, b"[]");
    c.add(
        "GET redeem",
        true,
        raw("GET", &format!("{P}/agent/redeem"), &[], b""),
    );
    c.add(
        "HEAD announce",
        true,
        raw("HEAD", &format!("{P}/agent/announce"), &[], b""),
    );
    c.add(
        "OPTIONS announce",
        true,
        raw("OPTIONS", &format!("{P}/agent/announce"), &[], b""),
    );
    let guess = json(serde_json::json!({ "instance_id": lone_id, "code": "123456" }));
    for n in 1..=6 {
        c.post(
            &format!("guess a code, {n}"),
            "/agent/redeem",
            GUESSER,
            &guess,
        );
    }
    for n in 1..=6 {
        let bob = format!("Bearer {BOB}");
        c.add(
            format!("bob mints code {n}"),
            true,
            raw(
                "POST",
                &format!("{P}/codes"),
                &[("authorization", &bob)],
                b"",
            ),
        );
    }

    // Unknown paths.
    for path in [
        "/",
        "/nope",
        "/lanlink/v2/discover",
        "/lanlink/v1",
        "/lanlink/v1/",
        "/lanlink/v1/discover/",
        "/lanlink/v1/agent",
        "/lanlink/v1/dis%63over",
    ] {
        c.add(format!("GET {path}"), true, raw("GET", path, &[], b""));
    }
    c.add("OPTIONS *", true, raw("OPTIONS", "*", &[], b""));
    c.add(
        "DELETE an unknown path",
        true,
        raw("DELETE", &format!("{P}/secret"), &[], b""),
    );

    // Bodies that break off, and a body that trickles past the deadline (after the rest: they
    // take time, and presences live 6 s).
    let mut truncated = raw(
        "POST",
        &format!("{P}/agent/announce"),
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", HOME),
        ],
        b"",
    );
    truncated = String::from_utf8(truncated)
        .unwrap()
        .replace("content-length: 0", "content-length: 2000")
        .into_bytes();
    truncated.extend_from_slice(&home_bytes[..100]);
    c.add("announce breaks off", true, truncated.clone()).send = Send::HalfClose;
    c.add("announce trickles past the deadline", true, truncated)
        .send = Send::Trickle;
    let mut slow_link = raw(
        "POST",
        &format!("{P}/link"),
        &[
            json_type,
            ("authorization", &bearer),
            ("x-forwarded-for", HOME),
        ],
        b"",
    );
    slow_link = String::from_utf8(slow_link)
        .unwrap()
        .replace("content-length: 0", "content-length: 2000")
        .into_bytes();
    slow_link.extend_from_slice(b"{\"instance_id\":");
    c.add("link trickles past the deadline", true, slow_link)
        .send = Send::Trickle;
    c
}

// ───────────────────────────── the test ─────────────────────────────

#[test]
fn the_axum_and_the_blocking_server_answer_one_corpus_byte_for_byte() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let axum = start_axum(&runtime);
    let (_child, blocking) = start_blocking();
    let corpus = corpus();
    assert!(corpus.0.len() >= 60, "{} requests", corpus.0.len());
    let mut codes: [HashMap<&str, String>; 2] = Default::default();
    let mut statuses = Vec::new();
    for case in &corpus.0 {
        let mut answers = Vec::new();
        for (side, to) in [axum, blocking].into_iter().enumerate() {
            let mut bytes = case.bytes.clone();
            if let Some(code) = codes[side].get("CODE") {
                let text = String::from_utf8(bytes).unwrap().replace("{CODE}", code);
                bytes = text.into_bytes();
            }
            let (answer, code) = exchange(to, case, &bytes);
            if case.keep_code {
                codes[side].insert("CODE", code.expect("a minted code"));
            }
            answers.push(answer);
        }
        assert_eq!(
            answers[0], answers[1],
            "{}: the axum server (left) and the blocking server (right) differ",
            case.name
        );
        let answer = answers[0]
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no answer", case.name));
        statuses.push((
            case.name.clone(),
            answer.status_line.clone(),
            answer.body.clone(),
        ));
    }
    // A few answers the corpus must reach (the rest are compared, not predicted).
    let status = |name: &str| {
        let found = statuses.iter().find(|(n, _, _)| n == name);
        let (_, line, body) = found.unwrap_or_else(|| panic!("no case {name}"));
        (
            line.split(' ').nth(1).unwrap().parse::<u16>().unwrap(),
            body.clone(),
        )
    };
    for (name, code, error) in [
        ("announce into a full network", 429, "network_full"),
        ("announce forged", 403, "forged_instance"),
        ("announce a presence conflict", 409, "presence_conflict"),
        ("announce a public private_ip", 403, "not_private_ip"),
        ("announce version 2", 400, "unsupported_version"),
        ("announce a long hostname", 400, "bad_field"),
        ("announce 20 KiB (over the body limit)", 413, "too_large"),
        (
            "a trusted proxy names no client",
            403,
            "unresolvable_client",
        ),
        ("discover without a user", 401, "unauthorized"),
        ("link from another origin", 403, "bad_origin"),
        ("link as text/plain", 415, "unsupported_media_type"),
        ("link with the wrong secret", 403, "wrong_secret"),
        ("link an unknown instance", 404, "agent_not_found"),
        ("link in a network of two", 409, "too_many_agents"),
        ("link behind carrier NAT", 409, "shared_network"),
        ("link status, not UTF-8", 400, "malformed"),
        ("redeem it again, an older attempt", 409, "superseded"),
        ("redeem it again unproven", 403, "invalid_code"),
        ("guess a code, 6", 429, "locked_out"),
        ("bob mints code 6", 429, "mint_quota"),
        ("POST discover", 405, "method_not_allowed"),
        ("GET /nope", 404, "not_found"),
        ("announce breaks off", 400, "malformed"),
        (
            "announce trickles past the deadline",
            408,
            "request_timeout",
        ),
        ("link trickles past the deadline", 408, "request_timeout"),
    ] {
        let name = if name == "announce into a full network" {
            "announce 116 into a full network"
        } else {
            name
        };
        assert_eq!(
            status(name),
            (code, format!("{{\"error\":\"{error}\"}}")),
            "{name}"
        );
    }
    for (name, code) in [
        ("link from the page's own origin", 202),
        ("codes", 201),
        ("redeem the code", 200),
        ("redeem it again from another network, proven", 200),
        ("HEAD discover", 200),
        ("discover with a 1 KiB body (ignored)", 200),
    ] {
        assert_eq!(status(name).0, code, "{name}");
    }
    let allow = |name: &str| {
        let case = corpus.0.iter().find(|c| c.name == name).unwrap();
        exchange(axum, case, &case.bytes).0.unwrap().headers
    };
    assert!(allow("OPTIONS discover").contains(&"allow: GET,HEAD".to_owned()));
    assert!(allow("GET codes").contains(&"allow: POST".to_owned()));
    println!("{} requests answered alike", corpus.0.len());
}

/// Two requests the example's former HTTP library (`tiny_http`) never handed over, answered
/// alike now that the example's shell hands them to the core as hyper does; and the core's rule
/// where the first one reaches it.
#[test]
fn requests_tiny_http_dropped_are_answered_alike() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let axum = start_axum(&runtime);
    let (_child, blocking) = start_blocking();
    let bearer = format!("Bearer {ALICE}");
    let discover = |extra: &[u8]| {
        let mut bytes = format!("GET {P}/discover HTTP/1.1\r\nhost: {HOST}\r\nauthorization: {bearer}\r\nx-forwarded-for: {HOME}\r\n").into_bytes();
        bytes.extend_from_slice(extra);
        bytes.extend_from_slice(b"connection: close\r\n\r\n");
        Case {
            name: "discover".into(),
            proxy: true,
            bytes,
            send: Send::Whole,
            keep_code: false,
        }
    };
    let plain = discover(b"");
    let expected = exchange(axum, &plain, &plain.bytes).0;
    assert_eq!(exchange(blocking, &plain, &plain.bytes).0, expected);
    // A forwarding line that is not text (a byte that is not ASCII): both shells hand it over
    // as bytes, and the core skips it (the answer is the one without it). tiny_http closed the
    // connection unanswered.
    let not_text = discover(b"x-forwarded-for: 198.51.100.\xff\r\n");
    assert!(expected.is_some());
    assert_eq!(exchange(axum, &not_text, &not_text.bytes).0, expected);
    assert_eq!(exchange(blocking, &not_text, &not_text.bytes).0, expected);
    // The core's rule itself, as any stack reaches it.
    let server = Server::new(config()).unwrap();
    let now = lanlink::chrono::DateTime::<lanlink::chrono::Utc>::from(std::time::SystemTime::now());
    let run = |lines: &[(&str, &[u8])]| {
        let mut headers = vec![
            ("host", HOST.as_bytes()),
            ("x-forwarded-for", HOME.as_bytes()),
        ];
        headers.extend_from_slice(lines);
        let request = HttpRequest {
            method: "GET",
            path: "/lanlink/v1/discover",
            query: None,
            authority: None,
            headers: &headers,
            peer: Some("127.0.0.1".parse().unwrap()),
        };
        let user = lanlink::server::endpoint::User::new(AccountId::new("alice").unwrap());
        let mut rng = lanlink::os_rng();
        let future = lanlink::server::endpoint::handle(
            &server,
            now,
            &mut rng,
            P,
            &request,
            lanlink::server::endpoint::RequestBody::Complete(&[]),
            Some(&user),
        );
        runtime.block_on(future).into_answer().unwrap()
    };
    let base = run(&[]);
    assert_eq!(base.status, 200);
    assert_eq!(run(&[("x-forwarded-for", b"198.51.100.\xff")]), base);
    assert_eq!(run(&[("x-forwarded-for", b"198.51.100.1\x01")]), base);
    assert_eq!(run(&[("forwarded", "for=198.51.100.1 é".as_bytes())]), base);
    // A body of at most 1 KiB that breaks off: both shells hand the request over with its body
    // broken off, and the core answers 400 malformed. tiny_http read such a body before handing
    // the request over, and closed the connection unanswered.
    let mut short = format!("POST {P}/agent/announce HTTP/1.1\r\nhost: {HOST}\r\ncontent-type: application/json\r\nx-forwarded-for: {HOME}\r\ncontent-length: 100\r\n\r\n{{\"instance").into_bytes();
    let case = Case {
        name: "short".into(),
        proxy: true,
        bytes: std::mem::take(&mut short),
        send: Send::HalfClose,
        keep_code: false,
    };
    let answer = exchange(axum, &case, &case.bytes).0.unwrap();
    assert_eq!(
        (answer.status_line.as_str(), answer.body.as_str()),
        ("HTTP/1.1 400 Bad Request", "{\"error\":\"malformed\"}")
    );
    assert_eq!(exchange(blocking, &case, &case.bytes).0, Some(answer));
}
