//! The linking page in a real browser: Debian's headless Chromium, driven by
//! `tests/browser/e2e.mjs` (Node + playwright-core, no downloaded browser).
//!
//! This test starts, in-process on 127.0.0.1: the server with the linking page
//! (`http::server::router` merged with `http::web::router`), three agents that allow the page's
//! origin, a "foreign" site on another port that serves the same page and module (an origin no
//! agent allows), and a small control endpoint standing in for the devices' keypads (to type a
//! manual code) and screens (their status). Then it runs the Node script, which drives Chromium
//! through each case (and a second Chromium that counts the server's address as public, with
//! `--ip-address-space-overrides`, for Local Network Access: permission denied, then granted)
//! and saves a screenshot of each state under `target/browser-screenshots/`,
//! and finally checks what the agents report: each linked the way the script says, and the
//! foreign origin was refused.
//!
//! Without `node`, Chromium (`/usr/bin/chromium`, or `LANLINK_CHROMIUM`) or
//! `tests/browser/node_modules` (`npm ci` there), the test prints a SKIP line and passes, except
//! when `CI=true`, where it fails.
#![cfg(feature = "http")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lanlink::agent::{Agent, AgentConfig, AgentStatus};
use lanlink::confirm::{Confirmation, Decision};
use lanlink::driver::{lock, run_agent, DriverConfig, SharedAgent};
use lanlink::event::AgentEvent;
use lanlink::http::client::HttpAgentClient;
use lanlink::http::{self, serve, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::server::{Server, ServerConfig};
use lanlink::{AccountId, DeviceInfo, LinkCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const TOKEN: &str = "alice-browser-token-0123456789";
/// The whole browser run may take this long.
const LIMIT: Duration = Duration::from_secs(180);

/// What the devices in the test are called, and which case each serves.
const DEVICES: [(&str, &str); 7] = [
    ("auto", "printer-auto"),
    ("popup", "printer-popup"),
    ("manual", "printer-manual"),
    ("lnadenied", "printer-lna-denied"),
    ("lnagranted", "printer-lna-granted"),
    ("blocked", "printer-popup-blocked"),
    // Under the `compare` confirmation policy (revision 1.4): the page and the device show the
    // same short code, and the device links only once its owner approves (the control endpoint).
    ("confirm", "printer-confirm"),
];

struct Device {
    agent: SharedAgent,
    addr: SocketAddr,
    /// What the agent reported: `served`, `refused:<code>`, `linked`, ….
    events: Arc<Mutex<Vec<String>>>,
}

fn skip_or_fail(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("browser test cannot run under CI=true: {why}");
    }
    eprintln!("SKIP browser test (tests/browser.rs): {why}");
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Node, Chromium and playwright-core, or why not.
fn prerequisites() -> Result<(String, PathBuf), String> {
    let chromium = std::env::var("LANLINK_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!(
            "Chromium not found at {chromium} (apt-get install chromium, or set LANLINK_CHROMIUM)"
        ));
    }
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Err("node not found (Node.js 18 or newer is needed)".into());
    }
    let script_dir = manifest_dir().join("tests/browser");
    if !script_dir.join("node_modules/playwright-core").exists() {
        return Err("tests/browser/node_modules missing: run `npm ci` in tests/browser".into());
    }
    Ok((chromium, script_dir))
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn spawn(listener: TcpListener, router: Router) {
    tokio::spawn(serve(
        listener,
        router,
        ServeConfig::default(),
        std::future::pending(),
    ));
}

async fn start_device(hostname: &str, page_origin: &str, server: &str) -> Device {
    let (listener, addr) = bind().await;
    let info = DeviceInfo::new(hostname, "Voron 2.4", "lanlink-browser-test", "0.1.0").unwrap();
    let policy = if hostname == "printer-confirm" {
        Confirmation::Compare
    } else {
        Confirmation::None
    };
    // The auto device announces first a loopback port that never answers (bound, never
    // accepted: held open, so no other listener can take it) and its real endpoint as a
    // candidate (revision 1.3): the page must give up on the first after its per-endpoint
    // timeout, move on to the second, and say so.
    let config = if hostname == "printer-auto" {
        let (silent, dead) = bind().await;
        tokio::spawn(async move {
            let _held = silent;
            std::future::pending::<()>().await
        });
        AgentConfig::new(dead.ip(), dead.port(), info).candidates(vec![addr])
    } else {
        AgentConfig::new(addr.ip(), addr.port(), info)
    }
    .window(Duration::from_secs(300))
    .allow_origin(page_origin)
    .confirmation(policy)
    .confirm_timeout(Duration::from_secs(120));
    let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap();
    let agent: SharedAgent = Arc::new(Mutex::new(agent));
    spawn(
        listener,
        http::agent::router(Arc::clone(&agent), DEFAULT_PREFIX),
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    {
        let agent = Arc::clone(&agent);
        let events = Arc::clone(&events);
        let transport = HttpAgentClient::new(server).unwrap();
        tokio::spawn(async move {
            run_agent(&agent, &transport, &DriverConfig::default(), |event| {
                let text = match &event {
                    AgentEvent::SecretServed { .. } => "served".to_owned(),
                    AgentEvent::SecretRefused { reason, .. } => {
                        format!("refused:{}", reason.code())
                    }
                    AgentEvent::RedeemStarted { manual } => format!("redeeming:manual={manual}"),
                    AgentEvent::Linked { .. } => "linked".to_owned(),
                    // What the device's screen prints.
                    AgentEvent::ConfirmationRequested {
                        display_name,
                        short_code,
                        ..
                    } => format!(
                        "confirm:{display_name}:{}",
                        short_code.map(|c| c.to_string()).unwrap_or_default()
                    ),
                    other => format!("{other:?}"),
                };
                events.lock().unwrap().push(text);
            })
            .await
        });
    }
    Device {
        agent,
        addr,
        events,
    }
}

fn status_word(agent: &SharedAgent) -> &'static str {
    match lock(agent).status() {
        AgentStatus::Discovering { .. } => "discovering",
        AgentStatus::Confirming { .. } => "confirming",
        AgentStatus::Redeeming => "redeeming",
        AgentStatus::Linked => "linked",
        _ => "stopped",
    }
}

type Devices = Arc<BTreeMap<String, SharedAgent>>;

/// The devices' keypads and screens: `POST /code/{device}` types a code, `GET /status` reads
/// each device's state.
fn control_router(devices: Devices) -> Router {
    async fn status(State(devices): State<Devices>) -> Json<Value> {
        let map: serde_json::Map<String, Value> = devices
            .iter()
            .map(|(name, agent)| (name.clone(), json!(status_word(agent))))
            .collect();
        Json(Value::Object(map))
    }
    async fn code(
        State(devices): State<Devices>,
        UrlPath(name): UrlPath<String>,
        body: String,
    ) -> StatusCode {
        let (Some(agent), Some(code)) = (devices.get(&name), LinkCode::parse(body.trim())) else {
            return StatusCode::BAD_REQUEST;
        };
        match lock(agent).enter_code(Instant::now(), code) {
            Ok(()) => StatusCode::NO_CONTENT,
            Err(_) => StatusCode::CONFLICT,
        }
    }
    /// The device's screen: the short code it shows while it waits for its owner.
    async fn shown(
        State(devices): State<Devices>,
        UrlPath(name): UrlPath<String>,
    ) -> Result<String, StatusCode> {
        let agent = devices.get(&name).ok_or(StatusCode::NOT_FOUND)?;
        let guard = lock(agent);
        let pending = guard.pending_confirmation().ok_or(StatusCode::CONFLICT)?;
        let code = pending.short_code.ok_or(StatusCode::CONFLICT)?;
        Ok(code.to_string())
    }
    /// The device's approve button.
    async fn approve(State(devices): State<Devices>, UrlPath(name): UrlPath<String>) -> StatusCode {
        let Some(agent) = devices.get(&name) else {
            return StatusCode::NOT_FOUND;
        };
        match lock(agent).confirm(Instant::now(), Decision::Approve) {
            Ok(()) => StatusCode::NO_CONTENT,
            Err(_) => StatusCode::CONFLICT,
        }
    }
    Router::new()
        .route("/status", get(status))
        .route("/code/{name}", post(code))
        .route("/shown/{name}", get(shown))
        .route("/approve/{name}", post(approve))
        .with_state(devices)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_page_in_headless_chromium() {
    let (chromium, script_dir) = match prerequisites() {
        Ok(found) => found,
        Err(why) => return skip_or_fail(&why),
    };

    // The server with its linking page. Three devices in linking mode at once on one network:
    // allow them all to be shown.
    let (listener, server_addr) = bind().await;
    let server = Server::new(ServerConfig::default().max_visible(DEVICES.len())).unwrap();
    let server = Arc::new(server);
    let auth = Arc::new(BearerTokens::new(vec![(
        TOKEN.to_owned(),
        AccountId::new("alice").unwrap(),
    )]));
    let app = http::server::router(Arc::clone(&server), auth, DEFAULT_PREFIX)
        .merge(http::web::router(DEFAULT_PREFIX));
    spawn(listener, app);
    let server_url = format!("http://{server_addr}");

    // A foreign site: the same page and module, from an origin no agent allows.
    let (listener, foreign_addr) = bind().await;
    spawn(listener, http::web::router(DEFAULT_PREFIX));
    let foreign_url = format!("http://{foreign_addr}");

    let mut devices = BTreeMap::new();
    for (name, hostname) in DEVICES {
        devices.insert(
            name.to_owned(),
            start_device(hostname, &server_url, &server_url).await,
        );
    }
    let (listener, control_addr) = bind().await;
    spawn(
        listener,
        control_router(Arc::new(
            devices
                .iter()
                .map(|(name, d)| (name.clone(), Arc::clone(&d.agent)))
                .collect(),
        )),
    );

    let screenshots = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("target"))
        .join("browser-screenshots");
    // Only this run's screenshots.
    let _ = std::fs::remove_dir_all(&screenshots);
    std::fs::create_dir_all(&screenshots).unwrap();
    let user_data = std::env::temp_dir().join(format!(
        "lanlink-chromium-{}-{}",
        std::process::id(),
        server_addr.port()
    ));

    let mut command = tokio::process::Command::new("node");
    command
        .arg(script_dir.join("e2e.mjs"))
        .current_dir(&script_dir)
        .env("LANLINK_CHROMIUM", &chromium)
        .env("LANLINK_USER_DATA", &user_data)
        .env("LANLINK_SERVER", &server_url)
        .env("LANLINK_FOREIGN", &foreign_url)
        .env("LANLINK_CONTROL", format!("http://{control_addr}"))
        .env("LANLINK_TOKEN", TOKEN)
        .env("LANLINK_PREFIX", DEFAULT_PREFIX)
        .env("LANLINK_SCREENSHOTS", &screenshots)
        .kill_on_drop(true);
    for (name, device) in &devices {
        let upper = name.to_ascii_uppercase();
        command
            .env(
                format!("LANLINK_{upper}_ID"),
                lock(&device.agent).instance_id().to_string(),
            )
            .env(format!("LANLINK_{upper}_ADDR"), device.addr.to_string());
    }
    let output = tokio::time::timeout(LIMIT, command.output())
        .await
        .expect("the browser run finished in time")
        .expect("node runs");
    let _ = std::fs::remove_dir_all(&user_data);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "e2e.mjs failed:\n{stdout}\n{stderr}"
    );

    // The script's verdicts, one JSON object per case on its last line.
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .expect("e2e.mjs prints its report as a JSON line");
    assert_eq!(report["auto"]["path"], "fetch-lna", "{report}");
    // Its first endpoint was a closed port; the candidate answered, and the page says so.
    let auto_at = devices["auto"].addr.to_string();
    assert_eq!(report["auto"]["endpoint"], auto_at.as_str(), "{report}");
    assert!(
        report["auto"]["status"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("answered at {auto_at}"))),
        "{report}"
    );
    // Revision 1.6: the page asked with a hold, and showed the link soon after the device.
    assert_eq!(report["auto"]["heldStatus"], true, "{report}");
    assert!(
        report["auto"]["pageLagMs"]
            .as_u64()
            .is_some_and(|lag| lag < 750),
        "{report}"
    );
    assert_eq!(report["popup"]["path"], "popup", "{report}");
    assert_eq!(report["blocked"]["error"], "popup_blocked", "{report}");
    assert_eq!(report["blocked"]["path"], "popup", "{report}");
    assert!(
        report["popup"]["ignoredMessages"].as_u64().unwrap_or(0) > 0,
        "forged messages from another origin reached the listener and were ignored: {report}"
    );
    assert_eq!(report["foreign"]["fetch"], "blocked", "{report}");
    // A public page under Local Network Access: denied, the popup fallback; granted, the fetch.
    // Before the request the state is "prompt"; headless Chromium answers the prompt "no".
    assert_ne!(report["lnaDenied"]["permission"], "granted", "{report}");
    assert_eq!(report["lnaDenied"]["path"], "popup", "{report}");
    assert_eq!(
        report["lnaDenied"]["attempts"], "fetch-lna:blocked,popup:ok",
        "{report}"
    );
    assert_eq!(report["lnaGranted"]["permission"], "granted", "{report}");
    assert_eq!(report["lnaGranted"]["path"], "fetch-lna", "{report}");
    assert_eq!(
        report["foreign"]["popupOwnOrigin"], "popup_timeout",
        "{report}"
    );
    // The agent served its page (the origin named is allowed), whose hello to that origin the
    // browser did not deliver to the foreign opener: no answer, so the page never fetched the
    // secret (see the served count below).
    assert_eq!(
        report["foreign"]["popupSpoofedOrigin"], "popup_timeout",
        "{report}"
    );
    assert_eq!(report["foreign"]["messagesReceived"], 0, "{report}");
    assert_eq!(
        report["foreign"]["browserSaidTargetMismatch"], true,
        "Chromium reported dropping the message: {report}"
    );
    assert_eq!(report["listener"]["ok"], true, "{report}");
    assert_eq!(report["hygiene"]["consoleSecrets"], 0, "{report}");
    assert_eq!(report["hygiene"]["urlSecrets"], 0, "{report}");
    assert_eq!(report["hygiene"]["storage"], 0, "{report}");

    // Each device reports linked, the manual one by its code.
    for (name, device) in &devices {
        assert_eq!(status_word(&device.agent), "linked", "{name}");
    }
    let events = |name: &str| devices[name].events.lock().unwrap().clone();
    // The page showed the code the device printed, and the device linked only after approval.
    let page_code = report["confirm"]["page"]
        .as_str()
        .expect("the page's short code");
    assert!(
        events("confirm").contains(&format!("confirm:alice:{page_code}")),
        "the device printed the page's code {page_code}: {:?}",
        events("confirm")
    );
    assert_eq!(report["confirm"]["device"], page_code, "{report}");
    assert_eq!(
        report["confirm"]["beforeApproval"], "confirming",
        "{report}"
    );
    let printed = events("confirm")
        .iter()
        .position(|e| e.starts_with("confirm:"))
        .unwrap();
    let redeemed = events("confirm")
        .iter()
        .position(|e| e.starts_with("redeeming"))
        .unwrap();
    assert!(printed < redeemed, "{:?}", events("confirm"));
    assert!(
        events("manual").contains(&"redeeming:manual=true".to_owned()),
        "{:?}",
        events("manual")
    );
    assert!(
        !events("manual").contains(&"served".to_owned()),
        "the manual device never handed out its secret: {:?}",
        events("manual")
    );
    // The foreign origin was refused by the agent itself, for the fetch and the popup page.
    let auto = events("auto");
    assert!(
        auto.iter().filter(|e| *e == "refused:bad_origin").count() >= 1,
        "{auto:?}"
    );
    // The secret of the device the foreign page attacked left it once: for the real page.
    assert_eq!(
        auto.iter().filter(|e| *e == "served").count(),
        1,
        "{auto:?}"
    );
    // Every device linked automatically served its secret exactly once.
    for name in ["popup", "lnadenied", "lnagranted", "blocked"] {
        let events = events(name);
        assert_eq!(
            events.iter().filter(|e| *e == "served").count(),
            1,
            "{name}: {events:?}"
        );
    }
    println!(
        "agent events: {:?}",
        devices
            .iter()
            .map(|(n, d)| (n.clone(), d.events.lock().unwrap().clone()))
            .collect::<Vec<_>>()
    );
}

/// The module's pure parts (address spaces, the path per browser, the popup listener's checks,
/// error words) under Node's test runner: `tests/browser/unit.mjs`. Needs only `node`.
#[test]
fn lanlink_js_unit_tests_under_node() {
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return skip_or_fail("node not found (Node.js 18 or newer is needed)");
    }
    let output = std::process::Command::new("node")
        .arg("--test")
        .arg("tests/browser/unit.mjs")
        .current_dir(manifest_dir())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "unit.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("# pass 12"), "{stdout}");
    assert!(stdout.contains("# fail 0"), "{stdout}");
}

/// `web/lanlink.js` and `web/app.js` type-check (strict, from their JSDoc) against
/// `web/lanlink.d.ts`, so the published types cannot drift from the module: TypeScript, pinned in
/// `tests/browser/package-lock.json`, with `tests/browser/tsconfig.json`.
#[test]
fn web_js_type_checks_against_its_d_ts() {
    let tsc = manifest_dir().join("tests/browser/node_modules/typescript/bin/tsc");
    if !tsc.exists() {
        return skip_or_fail("tests/browser/node_modules missing: run `npm ci` in tests/browser");
    }
    let output = match std::process::Command::new("node")
        .arg(&tsc)
        .args(["-p", "tests/browser"])
        .current_dir(manifest_dir())
        .output()
    {
        Ok(output) => output,
        Err(_) => return skip_or_fail("node not found (Node.js 18 or newer is needed)"),
    };
    assert!(
        output.status.success(),
        "tsc found type errors:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
