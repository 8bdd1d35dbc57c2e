//! The embedding example (`examples/embed/`): its binary runs the whole demo and exits 0, and
//! the same host app (`examples/embed/host.rs`, included here) driven in process:
//!
//! - a device linked by alice's session cookie lands in the host's table as alice's, with a
//!   digest that verifies the agent's token, and `/device/whoami` answers with it;
//! - `/device/whoami` with a wrong, malformed or missing token is the host's `401`;
//! - a token lost with its redeem reply is replaced: the host keeps one row, whose digest is the
//!   final token's, and the lost token no longer authenticates;
//! - lanlink's user routes without a session (or after logout) get the host's own rejection;
//! - unknown paths get the host's fallback, and lanlink keeps its JSON 404 under its prefix.
#![cfg(feature = "http")]

// Not every item of the host module is used by every test.
#[allow(dead_code)]
#[path = "../examples/embed/host.rs"]
mod host;
mod support;
use lanlink::transport::AgentServerTransport;
use support::lose_reply::LoseFirstReply;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use lanlink::agent::{AgentConfig, AgentStatus};
use lanlink::driver::{lock, DriverConfig, SharedAgent};
use lanlink::http::client::{Credential, HttpAgentClient, HttpLinkerClient};
use lanlink::http::{self, Peer, ServeConfig, DEFAULT_PREFIX};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::server::LinkVia;
use lanlink::{AuthToken, TokenDigest};
use support::linking::{link_first, spawn_agent};
use tokio::time::timeout;
use tower::ServiceExt;

const LIMIT: Duration = Duration::from_secs(30);

/// The built `embed` example, next to this test binary, if cargo built it (a plain
/// `cargo test` does; `cargo test --test embed` alone does not).
fn example_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join("embed");
    path.is_file().then_some(path)
}

#[test]
fn the_example_runs_the_whole_demo_and_exits_0() {
    let Some(binary) = example_binary() else {
        let message = "the embed example is not built (`cargo test` builds it, or `cargo build --example embed`)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        println!("SKIP: {message}; the in-process tests below cover the same app");
        return;
    };
    let mut child = Command::new(binary)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the example did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "exit {status}\n{stdout}\n{stderr}");

    let device = stdout
        .lines()
        .find_map(|line| line.strip_prefix("agent   | device "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the agent's line")
        .to_owned();
    for line in [
        format!("device  | GET /device/whoami with its token: device {device} belongs to alice"),
        format!(
            "host    | hook wrote its table: device {device} belongs to alice (via auto)"
        ),
        format!("host    | anonymous GET {DEFAULT_PREFIX}/discover: 401 {{\"host_error\":\"sign in first\",\"login\":\"/login\"}}"),
        "device  | GET /device/whoami with a made-up token: 401 {\"host_error\":\"unknown device\"}".to_owned(),
        "host    | GET /no/such/page: 404 {\"host_error\":\"no such page\"}".to_owned(),
        format!("done    | device {device} belongs to alice"),
    ] {
        assert!(stdout.lines().any(|l| l == line), "missing {line:?} in\n{stdout}");
    }
    // The audit log: JSON lines, among them the link; never the token or the secret.
    let audit: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("audit   | "))
        .map(|json| serde_json::from_str(json).expect("an audit line is JSON"))
        .collect();
    assert!(audit.iter().any(|e| e["event"] == "linked"
        && e["instance_id"] == device.as_str()
        && e["account"] == "alice"));
    for line in stdout.lines() {
        // No 64-hex-character run (a token, a secret or a digest) anywhere in the output.
        let longest_hex = line
            .split(|c: char| !c.is_ascii_hexdigit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest_hex < 64, "a secret-sized hex string in {line:?}");
        assert!(
            !line.contains("host_session="),
            "the session cookie in {line:?}"
        );
    }
}

/// The host app served on a free loopback port (the audit log collected), its table, base URL.
struct Running {
    db: Arc<host::HostDb>,
    base: String,
    audit: Arc<Mutex<Vec<String>>>,
}

async fn start_host() -> Running {
    let audit = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let audit = Arc::clone(&audit);
        move |event: lanlink::event::ServerEvent| {
            audit
                .lock()
                .unwrap()
                .push(serde_json::to_string(&event).unwrap());
        }
    };
    let (app, db) = host::app(sink).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(http::serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending(),
    ));
    Running { db, base, audit }
}

async fn start_agent() -> SharedAgent {
    let (agent, _) = support::net::start_agent(|at| {
        AgentConfig::new(at.ip(), at.port(), support::net::info())
            .announce_interval(Duration::from_millis(300))
    })
    .await;
    agent
}

fn web() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs `user` in through the host's `/login`; the session cookie (`name=value`) it set.
async fn sign_in(base: &str, user: &str) -> String {
    let response = web()
        .post(format!("{base}/login"))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "user": user }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{}=", host::SESSION_COOKIE)))
        .expect("a session cookie")
        .to_owned()
}

/// Links `agent` by auto-discovery with the session `cookie`, the agent over `transport`.
async fn link<T: AgentServerTransport + 'static>(
    base: &str,
    cookie: &str,
    agent: &SharedAgent,
    transport: T,
) {
    let agent_task = spawn_agent(agent, transport);
    let client = HttpLinkerClient::with_credential(
        web(),
        base,
        DEFAULT_PREFIX,
        DEFAULT_PREFIX,
        Credential::Cookie(cookie.to_owned().into()),
    );
    let mut linker = Linker::without_nonce(LinkerConfig::default(), Instant::now());
    let linked = timeout(
        LIMIT,
        link_first(&mut linker, &client, &DriverConfig::default(), |_| {}),
    )
    .await
    .expect("the linker finishes")
    .expect("linked");
    assert_eq!(linked, lock(agent).instance_id());
    let status = timeout(LIMIT, agent_task).await.unwrap().unwrap();
    assert_eq!(status, AgentStatus::Linked);
}

/// `GET /device/whoami` with `authorization` (if any): status and JSON body.
async fn whoami(base: &str, authorization: Option<&str>) -> (StatusCode, serde_json::Value) {
    let mut request = web().get(format!("{base}/device/whoami"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn a_device_linked_with_the_hosts_session_is_in_its_table_and_authenticates() {
    let host = start_host().await;
    let cookie = sign_in(&host.base, "alice").await;
    let agent = start_agent().await;
    let id = lock(&agent).instance_id();
    link(
        &host.base,
        &cookie,
        &agent,
        HttpAgentClient::new(&host.base).unwrap(),
    )
    .await;

    // The hook wrote alice's row, with the digest of the very token the agent holds.
    let token = lock(&agent).auth_token().unwrap().clone();
    let row = host
        .db
        .device(&id)
        .expect("the hook wrote the device's row");
    assert_eq!(row.account.as_str(), "alice");
    assert_eq!(row.via, LinkVia::Auto);
    assert!(row.token_digest.verify(&token));
    assert_eq!(row.token_digest, TokenDigest::of(&token));
    assert_eq!(host.db.device_count(), 1);

    // The device authenticates with its token; the host answers from the stored digest.
    let (status, body) = whoami(
        &host.base,
        Some(&format!("Bearer {}", token.to_hex().as_str())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device"], id.to_string());
    assert_eq!(body["user"], "alice");
    assert_eq!(body["via"], "auto");
    // The scheme is case-insensitive.
    let (status, _) = whoami(
        &host.base,
        Some(&format!("bearer {}", token.to_hex().as_str())),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Anything else is the host's 401.
    let wrong = AuthToken::generate(&mut lanlink::os_rng());
    let digest_as_token = row.token_digest.to_hex();
    for authorization in [
        Some(format!("Bearer {}", wrong.to_hex().as_str())),
        // The digest the host keeps is not a credential.
        Some(format!("Bearer {digest_as_token}")),
        Some("Bearer not-hex".to_owned()),
        Some(format!("Basic {}", token.to_hex().as_str())),
        Some(cookie.clone()),
        None,
    ] {
        let (status, body) = whoami(&host.base, authorization.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(body, serde_json::json!({ "host_error": "unknown device" }));
    }

    // The audit log saw the link, as JSON lines with no token or digest in them.
    let audit = host.audit.lock().unwrap().clone();
    assert!(audit
        .iter()
        .any(|line| line.contains(r#""event":"linked""#)));
    for line in &audit {
        assert!(!line.contains(token.to_hex().as_str()));
        assert!(!line.contains(&row.token_digest.to_hex()));
    }
}

#[tokio::test]
async fn a_reissued_token_replaces_the_hosts_digest() {
    let host = start_host().await;
    let cookie = sign_in(&host.base, "alice").await;
    let agent = start_agent().await;
    let id = lock(&agent).instance_id();
    let lost = Arc::new(Mutex::new(None));
    let transport = LoseFirstReply {
        inner: HttpAgentClient::new(&host.base).unwrap(),
        lost: Arc::clone(&lost),
    };
    link(&host.base, &cookie, &agent, transport).await;
    let token = lock(&agent).auth_token().unwrap().clone();
    let lost = lost.lock().unwrap().clone().expect("a reply was lost");
    assert!(!lost.ct_eq(&token));

    // One row, holding the final token's digest.
    assert_eq!(host.db.device_count(), 1);
    let row = host.db.device(&id).unwrap();
    assert!(row.token_digest.verify(&token));
    assert!(!row.token_digest.verify(&lost));
    let bearer = |t: &AuthToken| format!("Bearer {}", t.to_hex().as_str());
    assert_eq!(
        whoami(&host.base, Some(&bearer(&token))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        whoami(&host.base, Some(&bearer(&lost))).await.0,
        StatusCode::UNAUTHORIZED
    );
    let audit = host.audit.lock().unwrap().clone();
    assert!(audit
        .iter()
        .any(|line| line.contains(r#""event":"linked""#) && line.contains(r#""reissued":true"#)));
}

/// One request to `app` in process, from `peer`, with `cookie` if any: status and body.
async fn call(
    app: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> (StatusCode, String, axum::http::HeaderMap) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let mut request = request.body(Body::from(body.to_owned())).unwrap();
    let peer: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    request.extensions_mut().insert(Peer(peer));
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        String::from_utf8_lossy(&bytes).into_owned(),
        headers,
    )
}

fn set_cookie(headers: &axum::http::HeaderMap) -> String {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{}=", host::SESSION_COOKIE)))
        .expect("a session cookie")
        .to_owned()
}

const SIGN_IN_FIRST: &str = r#"{"host_error":"sign in first","login":"/login"}"#;

#[tokio::test]
async fn lanlink_routes_without_a_session_get_the_hosts_rejection() {
    let (app, _db) = host::app(|_| {}).unwrap();
    let discover = format!("{DEFAULT_PREFIX}/discover");
    let codes = format!("{DEFAULT_PREFIX}/codes");
    // No session, a made-up session cookie: the host's own 401, not lanlink's.
    for cookie in [None, Some("host_session=made-up")] {
        for (method, path) in [("GET", discover.as_str()), ("POST", codes.as_str())] {
            let (status, body, _) = call(&app, method, path, cookie, "").await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::UNAUTHORIZED, SIGN_IN_FIRST),
                "{method} {path} {cookie:?}"
            );
        }
    }
    // Signed in through the host's session layer: served, as alice.
    let (status, _, headers) = call(&app, "POST", "/login", None, r#"{"user":"alice"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = set_cookie(&headers);
    let (status, body, _) = call(&app, "GET", &discover, Some(&cookie), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["agents"], serde_json::json!([]));
    let (status, body, _) = call(&app, "GET", "/", Some(&cookie), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["signed_in_as"],
        "alice"
    );
    // Signed out: the same cookie gets the host's rejection again.
    let (status, _, _) = call(&app, "POST", "/logout", Some(&cookie), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = call(&app, "GET", &discover, Some(&cookie), "").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, SIGN_IN_FIRST)
    );
    // The agent-facing routes need no user session (the agent proves itself otherwise).
    let (status, body, _) = call(
        &app,
        "POST",
        &format!("{DEFAULT_PREFIX}/agent/announce"),
        None,
        "{}",
    )
    .await;
    assert_ne!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.starts_with(r#"{"error":"#), "{body}");
}

#[tokio::test]
async fn unknown_paths_get_the_hosts_fallback() {
    let (app, _db) = host::app(|_| {}).unwrap();
    let not_found = r#"{"host_error":"no such page"}"#;
    for path in ["/no/such/page", "/lanlink", "/lanlink/other", "/device"] {
        let (status, body, _) = call(&app, "GET", path, None, "").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, not_found),
            "{path}"
        );
    }
    // Under lanlink's own prefix, lanlink's JSON 404.
    let (status, body, _) = call(
        &app,
        "GET",
        &format!("{DEFAULT_PREFIX}/no-such-route"),
        None,
        "",
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#)
    );
}
