//! The browser-facing HTTP pieces over real loopback sockets: the agent's popup page
//! (`GET {prefix}/popup`, the fallback of the browser linker) and the linking page's router
//! (`lanlink::http::web`). The browser itself is exercised by `tests/browser.rs`.
//!
//! The popup page leads to the secret, so it keeps every refusal rule of `GET {prefix}/secret`
//! (local caller, window, instance id, Host, Origin), adds its own (a configured target origin,
//! a top-level navigation), holds no secret itself (its script fetches it only after the opener
//! answered from the target origin), posts only to that exact origin, and is never framed, cached
//! or readable by another origin.
#![cfg(feature = "http")]

mod support;
use support::net::{info, serve_on_loopback, start_agent, P};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lanlink::agent::AgentConfig;
use lanlink::driver::{lock, SharedAgent};
use lanlink::http::{self, BearerTokens, ServeConfig};
use lanlink::server::{Server, ServerConfig};
use reqwest::header::HeaderMap;
use serde_json::Value;

/// The linking page's origin, allowed by the agents.
const ORIGIN: &str = "https://cloud.example";
const LIMIT: Duration = Duration::from_secs(10);

/// An agent at its loopback address allowing [`ORIGIN`]; `more` adds to the configuration.
async fn agent(more: impl FnOnce(AgentConfig) -> AgentConfig) -> (SharedAgent, SocketAddr) {
    start_agent(|at| more(AgentConfig::new(at.ip(), at.port(), info()).allow_origin(ORIGIN))).await
}

fn client() -> reqwest::Client {
    support::net::plain_client(LIMIT)
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON data block of a popup page.
    fn popup_data(&self) -> Value {
        let start = self
            .body
            .find(r#"id="lanlink-data""#)
            .expect("a data block");
        let open = start + self.body[start..].find('>').unwrap() + 1;
        let close = open + self.body[open..].find("</script>").unwrap();
        serde_json::from_str(&self.body[open..close]).expect("the data block is JSON")
    }

    /// Whether the body holds anything shaped like a secret (64 hex digits).
    fn has_hex64(&self) -> bool {
        let bytes = self.body.as_bytes();
        bytes
            .windows(64)
            .any(|w| w.iter().all(|b| b.is_ascii_hexdigit()))
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

fn popup_url(at: SocketAddr, query: &str) -> String {
    format!("http://{at}{P}/popup?{query}")
}

fn id_of(agent: &SharedAgent) -> String {
    lock(agent).instance_id().to_string()
}

fn q(text: &str) -> String {
    text.replace(':', "%3A").replace('/', "%2F")
}

/// Extra request headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// A navigation, as Chromium sends it for a popup.
const NAVIGATE: [(&str, &str); 2] = [
    ("sec-fetch-dest", "document"),
    ("sec-fetch-mode", "navigate"),
];

/// The SecretServed events the agent has recorded (and drains them).
fn served(agent: &SharedAgent) -> usize {
    let mut guard = lock(agent);
    let mut served = 0;
    while let Some(event) = guard.poll_event() {
        if matches!(event, lanlink::event::AgentEvent::SecretServed { .. }) {
            served += 1;
        }
    }
    served
}

#[tokio::test]
async fn popup_page_holds_no_secret_and_talks_only_to_the_configured_origin() {
    let (agent, at) = agent(|c| c).await;
    let id = id_of(&agent);
    let page = get(
        &popup_url(at, &format!("instance_id={id}&origin={}", q(ORIGIN))),
        &NAVIGATE,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // The page holds no secret, and serving it served none.
    assert!(!page.has_hex64());
    assert_eq!(served(&agent), 0);
    let data = page.popup_data();
    assert_eq!(data["target"], ORIGIN);
    assert_eq!(data["instance_id"], id.as_str());
    // It fetches the secret, for the instance asked for, from its own origin (relative URL)…
    assert_eq!(data["secret_url"], format!("secret?instance_id={id}"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    // …only after the opener answered from the target origin, from the opener window, for this
    // instance; and posts only to the opener, only to the target origin, never to "*".
    assert!(page
        .body
        .contains("event.origin !== target || event.source !== opener"));
    assert!(page.body.contains("m.instance_id !== id"));
    assert!(page.body.contains("opener.postMessage(message, target)"));
    assert!(page
        .body
        .contains("opener.postMessage(data.message, target)"));
    assert_eq!(page.body.matches("postMessage(").count(), 2);
    assert!(!page.body.contains("\"*\")") && !page.body.contains("'*')"));
    // What the script fetches is the ordinary endpoint, under its checks: same origin, no
    // Origin header, so it is served (and recorded as served).
    let secret = get(
        &format!("http://{at}{P}/{}", data["secret_url"].as_str().unwrap()),
        &[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
        ],
    )
    .await;
    assert_eq!(secret.status, 200);
    assert!(secret.has_hex64());
    assert_eq!(served(&agent), 1);
}

#[tokio::test]
async fn popup_page_cannot_be_framed_cached_sniffed_or_read_by_another_origin() {
    let (agent, at) = agent(|c| c).await;
    let id = id_of(&agent);
    let url = popup_url(at, &format!("instance_id={id}&origin={}", q(ORIGIN)));
    let first = get(&url, &NAVIGATE).await;
    assert_eq!(first.status, 200);
    let csp = first.header("content-security-policy").unwrap().to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'nonce-"), "{csp}");
    assert_eq!(first.header("x-frame-options"), Some("DENY"));
    assert_eq!(first.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(first.header("cache-control"), Some("no-store"));
    assert_eq!(first.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(
        first.header("cross-origin-resource-policy"),
        Some("same-origin")
    );
    assert_eq!(first.header("access-control-allow-origin"), None);
    // The page's scripts run under the nonce; a fresh nonce per response.
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap()
        .to_owned();
    assert_eq!(nonce.len(), 32);
    assert!(first.body.contains(&format!(r#"<script nonce="{nonce}">"#)));
    let second = get(&url, &NAVIGATE).await;
    assert_ne!(second.header("content-security-policy").unwrap(), csp);
    // Even an allowed Origin header gets no CORS grant on the page.
    let with_origin = get(&url, &[NAVIGATE[0], NAVIGATE[1], ("origin", ORIGIN)]).await;
    assert_eq!(with_origin.status, 200);
    assert_eq!(with_origin.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn popup_page_refuses_loads_that_are_not_top_level_navigations() {
    let (agent, at) = agent(|c| c).await;
    let id = id_of(&agent);
    let url = popup_url(at, &format!("instance_id={id}&origin={}", q(ORIGIN)));
    for headers in [
        vec![("sec-fetch-dest", "iframe"), ("sec-fetch-mode", "navigate")],
        vec![("sec-fetch-dest", "document"), ("sec-fetch-mode", "cors")],
        vec![("sec-fetch-dest", "empty"), ("sec-fetch-mode", "no-cors")],
        vec![("sec-fetch-dest", "script")],
        vec![("sec-fetch-mode", "same-origin")],
    ] {
        let page = get(&url, &headers).await;
        assert_eq!(page.status, 403, "{headers:?}");
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert!(!page.has_hex64(), "no secret in a refusal: {headers:?}");
        assert_eq!(page.popup_data()["message"]["error"], "not_top_level");
    }
    // No refusal is counted as a served secret: nothing was served.
    assert_eq!(served(&agent), 0);
}

#[tokio::test]
async fn popup_page_needs_one_configured_target_origin() {
    let (agent, at) = agent(|c| c.allow_origin("https://other.example")).await;
    let id = id_of(&agent);
    for query in [
        format!("instance_id={id}"),
        format!("instance_id={id}&origin={}", q("https://evil.example")),
        format!(
            "instance_id={id}&origin={}",
            q("https://cloud.example.evil.example")
        ),
        format!("instance_id={id}&origin=*"),
        format!("instance_id={id}&origin=null"),
        format!(
            "instance_id={id}&origin={}&origin={}",
            q(ORIGIN),
            q("https://other.example")
        ),
    ] {
        let page = get(&popup_url(at, &query), &NAVIGATE).await;
        assert_eq!(page.status, 403, "{query}");
        assert!(!page.has_hex64(), "{query}");
        let data = page.popup_data();
        assert_eq!(data["message"]["error"], "bad_origin", "{query}");
        // Refused for the origin: nothing is posted anywhere.
        assert_eq!(data["target"], Value::Null, "{query}");
    }
    // Either configured origin works, each as its own exact target (case-normalized).
    for origin in ["https://other.example", "HTTPS://Cloud.Example"] {
        let page = get(
            &popup_url(at, &format!("instance_id={id}&origin={}", q(origin))),
            &NAVIGATE,
        )
        .await;
        assert_eq!(page.status, 200, "{origin}");
        assert_eq!(page.popup_data()["target"], origin.to_ascii_lowercase());
    }
}

#[tokio::test]
async fn popup_page_keeps_every_refusal_rule_of_the_secret_endpoint() {
    // A foreign Origin header (a POST navigation from another site, say).
    let (agent, at) = agent(|c| c).await;
    let id = id_of(&agent);
    let url = popup_url(at, &format!("instance_id={id}&origin={}", q(ORIGIN)));
    let cases: [(Headers, u16, &str); 3] = [
        (&[("origin", "https://evil.example")], 403, "bad_origin"),
        (&[("host", "attacker.example")], 403, "bad_host"),
        (&[("host", "printer.local")], 403, "bad_host"),
    ];
    for (headers, status, code) in cases {
        let page = get(&url, headers).await;
        assert_eq!(page.status, status, "{headers:?}");
        assert!(!page.has_hex64(), "{headers:?}");
        let data = page.popup_data();
        assert_eq!(data["message"]["error"], code, "{headers:?}");
        assert_eq!(data["message"]["type"], "lanlink-refused");
        // The refusal goes to the configured origin only.
        assert_eq!(data["target"], ORIGIN);
    }
    // Another instance, a missing or repeated instance id.
    let other = "7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90";
    let wrong = get(
        &popup_url(at, &format!("instance_id={other}&origin={}", q(ORIGIN))),
        &[],
    )
    .await;
    assert_eq!(wrong.status, 404);
    assert_eq!(wrong.popup_data()["message"]["error"], "wrong_instance");
    assert_eq!(wrong.popup_data()["message"]["instance_id"], other);
    assert!(!wrong.has_hex64());
    for query in [
        format!("origin={}", q(ORIGIN)),
        format!("instance_id={id}&instance_id={id}&origin={}", q(ORIGIN)),
    ] {
        let page = get(&popup_url(at, &query), &[]).await;
        assert_eq!(page.status, 400, "{query}");
        assert_eq!(page.popup_data()["message"]["error"], "malformed");
        assert!(!page.has_hex64());
    }
    // HEAD is refused (it would be "served" without a body).
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 405);
    // Once discovery is off, nothing.
    lock(&agent).cancel();
    let off = get(&url, &NAVIGATE).await;
    assert_eq!(off.status, 403);
    assert_eq!(off.popup_data()["message"]["error"], "not_discovering");
    assert!(!off.has_hex64());
}

#[tokio::test]
async fn popup_page_refuses_callers_outside_the_lan() {
    // Behind a trusted local proxy, the caller is who X-Forwarded-For names.
    let (agent, at) = agent(|c| c.trusted_proxies(vec!["127.0.0.0/8".parse().unwrap()])).await;
    let id = id_of(&agent);
    let url = popup_url(at, &format!("instance_id={id}&origin={}", q(ORIGIN)));
    for (from, code) in [
        ("198.51.100.9", "not_local"),
        ("100.64.0.7", "not_local"),
        ("unknown", "unresolvable_client"),
    ] {
        let page = get(&url, &[("x-forwarded-for", from)]).await;
        assert_eq!(page.status, 403, "{from}");
        assert_eq!(page.popup_data()["message"]["error"], code, "{from}");
        assert!(!page.has_hex64(), "{from}");
    }
    let lan = get(&url, &[("x-forwarded-for", "192.168.1.20")]).await;
    assert_eq!(lan.status, 200);
    assert_eq!(lan.popup_data()["instance_id"], id.as_str());
}

#[tokio::test]
async fn popup_page_escapes_the_origin_it_embeds() {
    // A configured origin is checked only loosely (printable ASCII): it must not break out of
    // the data block.
    let odd = "http://x<!--<script>";
    let (agent, at) = agent(|c| c.allow_origin(odd)).await;
    let id = id_of(&agent);
    let page = get(
        &popup_url(
            at,
            &format!(
                "instance_id={id}&origin={}",
                q(odd).replace('<', "%3C").replace('!', "%21")
            ),
        ),
        &NAVIGATE,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("x<!--"));
    assert!(page.body.contains("x\\u003c!--\\u003cscript\\u003e"));
    assert_eq!(page.popup_data()["target"], odd);
}

// ───────────────────────────── the linking page ─────────────────────────────

async fn start_server_with_page() -> SocketAddr {
    let server = Arc::new(Server::new(ServerConfig::default()).unwrap());
    // A standalone server: the routers, and the crate's JSON 404 for every other path.
    let app = http::server::router(server, Arc::new(BearerTokens::default()), P)
        .merge(http::web::router(P))
        .fallback(http::server::not_found);
    serve_on_loopback(app, ServeConfig::default()).await
}

#[tokio::test]
async fn linking_page_and_module_are_served_with_the_api() {
    let at = start_server_with_page().await;
    for path in ["/", "/link"] {
        let page = get(&format!("http://{at}{path}"), &[]).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(page
            .body
            .contains(r#"<meta name="lanlink-prefix" content="/lanlink/v1">"#));
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(
            page.header("cross-origin-opener-policy"),
            Some("same-origin-allow-popups")
        );
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
    }
    let module = get(&format!("http://{at}/lanlink.js"), &[]).await;
    assert_eq!(module.status, 200);
    assert_eq!(
        module.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(module.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(module.body, http::web::LANLINK_JS);
    assert!(module.body.contains("export class Linker"));
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/link.css", "text/css"),
        ("/lanlink.d.ts", "text/plain"),
    ] {
        let asset = get(&format!("http://{at}{path}"), &[]).await;
        assert_eq!(asset.status, 200, "{path}");
        assert!(asset.header("content-type").unwrap().starts_with(kind));
    }
    // The API is still there, and unknown paths still get the JSON refusal.
    let discover = get(&format!("http://{at}{P}/discover"), &[]).await;
    assert_eq!(discover.status, 401);
    let missing = get(&format!("http://{at}/nothing"), &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body, r#"{"error":"not_found"}"#);
}

#[test]
fn page_prefix_is_escaped() {
    let page = http::web::page_html(r#"/x"><script>"#);
    assert!(page.contains(r#"content="/x&quot;&gt;&lt;script&gt;""#));
    assert!(!page.contains(r#"/x"><script>"#));
}

#[test]
fn the_module_posts_only_to_the_agents_exact_origin_and_never_logs() {
    // Static guards on the shipped JavaScript: no console, no storage, and one postMessage: the
    // "ready" answer to the popup, addressed to the agent's exact origin.
    for (name, text) in [
        ("lanlink.js", http::web::LANLINK_JS),
        ("app.js", http::web::APP_JS),
    ] {
        assert!(!text.contains("console."), "{name} logs");
        assert!(!text.contains("localStorage"), "{name} uses localStorage");
        assert!(
            !text.contains("sessionStorage"),
            "{name} uses sessionStorage"
        );
    }
    assert!(!http::web::APP_JS.contains("postMessage("));
    assert_eq!(http::web::LANLINK_JS.matches("postMessage(").count(), 1);
    assert!(http::web::LANLINK_JS.contains(
        r#"popup.postMessage({ type: "lanlink-ready", version: PROTOCOL_VERSION, instance_id: agent.instance_id }, origin);"#
    ));
    assert!(http::web::LANLINK_JS.contains("const origin = agentOrigin(agent);"));
}

/// The module's `find` carries the discovery reply's `hidden` reason (revision 1.2) with plain
/// words that offer the code, and `discover` still returns the bare list; the page shows the
/// words and a `hidden` state. Run under Node when it is installed (skipped otherwise).
#[test]
fn the_module_and_page_say_why_devices_are_hidden() {
    assert!(http::web::APP_JS.contains("linker.find()"));
    assert!(http::web::APP_JS.contains(r#"setState("hidden")"#));
    assert!(http::web::LANLINK_JS.contains("export function hiddenWords"));
    let Ok(node) = std::process::Command::new("node").arg("--version").output() else {
        return;
    };
    if !node.status.success() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lanlink-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lanlink.mjs"), http::web::LANLINK_JS).unwrap();
    let script = r#"
const { Linker, hiddenWords } = await import("./lanlink.mjs");
const replies = [
  { agents: [], hidden: { reason: "shared_network" } },
  { agents: [], hidden: { reason: "too_many_agents" } },
  { agents: [{ instance_id: "x", private_ip: "192.168.1.5", port: 8080, info: {} }] },
];
let i = 0;
globalThis.fetch = async () => new Response(JSON.stringify(replies[i++]), { status: 200 });
const linker = new Linker({ token: "t", server: "http://127.0.0.1:9" });
const out = [await linker.find(), await linker.find(), await linker.discover(), hiddenWords(null)];
process.stdout.write(JSON.stringify(out));
"#;
    std::fs::write(dir.join("run.mjs"), script).unwrap();
    let run = std::process::Command::new("node")
        .arg(dir.join("run.mjs"))
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(out[0]["hidden"], "shared_network");
    assert!(out[0]["message"].as_str().unwrap().contains("use a code"));
    assert_eq!(out[1]["hidden"], "too_many_agents");
    assert!(out[1]["message"]
        .as_str()
        .unwrap()
        .starts_with("Two or more devices are in linking mode on your network, so none is shown"));
    assert_eq!(out[2].as_array().unwrap().len(), 1);
    assert!(out[3].is_null());
}
