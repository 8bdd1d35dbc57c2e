//! The conformance kit (`lanlink::conformance`) against the crate's own axum adapters, served on
//! 127.0.0.1 by `http::serve` (every check passes), against deliberately wrong ones (exactly the
//! checks they break fail), against servers whose lockout comes at another threshold (skipped,
//! not failed, where the kit's own lockout stops a check), the `conformance` example run
//! against the `server` and `agent` examples, and the kit against `examples/blocking_server.rs`
//! (the core on a blocking HTTP/1.1 shell of its own).
#![cfg(all(feature = "conformance", feature = "http"))]

mod support;
use support::example::{if_built as example, Killed};
use support::net::serve_on_loopback;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanlink::agent::{Agent, AgentConfig};
use lanlink::conformance::{
    check_agent_endpoint, check_server, EndpointTarget, Report, ServerTarget, ENDPOINT_CHECKS,
    SERVER_CHECKS,
};
use lanlink::driver::{lock, SharedAgent};
use lanlink::http::axum::body::{to_bytes, Body};
use lanlink::http::axum::extract::Request;
use lanlink::http::axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use lanlink::http::axum::middleware::{from_fn, Next};
use lanlink::http::axum::response::Response;
use lanlink::http::axum::Router;
use lanlink::http::client::Credential;
use lanlink::http::{self, serve, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::server::{Server, ServerConfig};
use lanlink::DeviceInfo;
use tokio::net::TcpListener;

const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef";
const ORIGIN: &str = "https://cloud.example";
/// The request deadline the test servers are served with (short, so the 408 check is quick).
const DEADLINE: Duration = Duration::from_secs(2);

fn bearer(token: &str) -> Credential {
    Credential::Bearer(token.to_owned().into())
}

/// Alice's and Bob's tokens.
fn users() -> Arc<BearerTokens> {
    support::net::bearer(&[(ALICE, "alice"), (BOB, "bob")])
}

/// The server's serve configuration: a short request deadline.
fn serve_config() -> ServeConfig {
    ServeConfig {
        request_timeout: DEADLINE,
        ..ServeConfig::default()
    }
}

/// The crate's server router (as `examples/server.rs` builds it) for alice and bob, wrapped by
/// `wrap`, on 127.0.0.1 with a short request deadline.
async fn start_server(config: ServerConfig, wrap: impl FnOnce(Router) -> Router) -> String {
    let server = Arc::new(Server::new(config).unwrap());
    let app =
        http::server::router(server, users(), DEFAULT_PREFIX).fallback(http::server::not_found);
    let addr = serve_on_loopback(wrap(app), serve_config()).await;
    format!("http://{addr}")
}

/// The kit's server checks at `url` with both accounts and the servers' request deadline: the
/// report, printed, covering the whole catalog in order.
async fn check_fully(url: &str) -> Report {
    let target = ServerTarget::new(url, bearer(ALICE))
        .second_account(bearer(BOB))
        .request_timeout(DEADLINE);
    let report = check_server(&target).await;
    print!("{report}");
    assert_covers(&report, SERVER_CHECKS);
    report
}

/// The crate's agent endpoint (as `examples/agent.rs` builds it) over a discovering agent that
/// allows `ORIGIN` and the name `printer.local`, wrapped by `wrap`.
async fn start_endpoint(wrap: impl FnOnce(Router) -> Router) -> (SharedAgent, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = AgentConfig::new(addr.ip(), addr.port(), DeviceInfo::default())
        .allow_origin(ORIGIN)
        .allow_host("printer.local");
    let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap();
    let agent: SharedAgent = Arc::new(Mutex::new(agent));
    let app =
        http::agent::router(Arc::clone(&agent), DEFAULT_PREFIX).fallback(http::server::not_found);
    tokio::spawn(serve(
        listener,
        wrap(app),
        ServeConfig::default(),
        std::future::pending(),
    ));
    (agent, format!("http://{addr}"))
}

fn endpoint_target(agent: &SharedAgent, url: &str) -> EndpointTarget {
    EndpointTarget::new(url, lock(agent).instance_id(), ORIGIN)
}

/// Every catalog entry appears once, in catalog order.
fn assert_covers(report: &Report, catalog: &[lanlink::conformance::CheckSpec]) {
    let ids: Vec<_> = report.checks().iter().map(|c| c.id).collect();
    let want: Vec<_> = catalog.iter().map(|c| c.id).collect();
    assert_eq!(ids, want);
}

/// Exactly the checks `failed` failed and the checks `skipped` were skipped (catalog order).
#[track_caller]
fn assert_outcome(report: &Report, failed: &[&str], skipped: &[&str]) {
    assert_eq!(report.failed_ids(), failed, "{report}");
    assert_eq!(report.skipped_ids(), skipped, "{report}");
}

/// The report's line for the check `id`.
fn line_of(report: &Report, id: &str) -> String {
    report.get(id).unwrap().to_string()
}

#[tokio::test]
async fn the_crates_server_passes_every_check() {
    let url = start_server(ServerConfig::default(), |app| app).await;
    let report = check_fully(&url).await;
    assert!(report.complete(), "{}:\n{report}", report.summary());
    // The lines are what the report's Display promises.
    let text = report.to_string();
    assert!(
        text.contains("PASS server.link.wrong_secret  403 wrong_secret\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), SERVER_CHECKS.len());
}

/// The checks of held requests (revision 1.6).
const HOLD_CHECKS: [&str; 4] = [
    "server.hold.announce_ends",
    "server.hold.link_status_at_once",
    "server.hold.link_status_held",
    "server.hold.announce_rung",
];

/// A server that never holds a request (`max_hold` zero) while stating revision 1.6 fails the
/// hold checks that need a hold, each saying it was answered at once; the one that wants an
/// answer at once passes.
#[tokio::test]
async fn a_server_that_does_not_hold_fails_exactly_the_hold_checks() {
    let config = ServerConfig::default().max_hold(Duration::ZERO);
    let url = start_server(config, |app| app).await;
    let report = check_fully(&url).await;
    assert_outcome(
        &report,
        &[
            "server.hold.announce_ends",
            "server.hold.link_status_held",
            "server.hold.announce_rung",
        ],
        &[],
    );
    for id in ["server.hold.announce_ends", "server.hold.link_status_held"] {
        let line = report.get(id).unwrap().to_string();
        assert!(line.contains("answered at once"), "{line}");
    }
    let line = line_of(&report, "server.hold.announce_rung");
    assert!(
        line.contains("answered before the link was sent") && line.contains("not held"),
        "{line}"
    );
}

/// A bell that never rings: held requests are answered only when the server looks again on its
/// own (its announce interval, 2 s by default) or at their hold's end.
struct DeafBell(http::hold::LinkBell);

impl http::hold::Bell for DeafBell {
    fn ring(&self, _: &lanlink::InstanceId) {}

    fn listen(&self, instance_id: &lanlink::InstanceId) -> http::hold::Listener {
        self.0.listen(instance_id)
    }
}

/// A server that holds but does not ring when a link is accepted answers the held announcement
/// only at its next look, 1.5 s after the link: it fails the check that the link answers it,
/// and that one alone.
#[tokio::test]
async fn a_server_whose_link_does_not_ring_fails_exactly_the_rung_check() {
    let server = Arc::new(Server::new(ServerConfig::default()).unwrap());
    let bell = Arc::new(DeafBell(http::hold::LinkBell::default()));
    let app = http::server::router_with_bell(server, users(), DEFAULT_PREFIX, bell)
        .fallback(http::server::not_found);
    let url = format!("http://{}", serve_on_loopback(app, serve_config()).await);
    let report = check_fully(&url).await;
    assert_eq!(
        report.failed_ids(),
        ["server.hold.announce_rung"],
        "{report}"
    );
    let line = line_of(&report, "server.hold.announce_rung");
    assert!(line.contains("not when the link was accepted"), "{line}");
}

/// The revision the server states, rewritten to 1.5 in every answer.
async fn states_revision_1_5(request: Request, next: Next) -> Response {
    edit_body(next.run(request).await, |response, bytes| {
        let text =
            String::from_utf8_lossy(bytes).replace(r#""revision":"1.6""#, r#""revision":"1.5""#);
        *response.body_mut() = Body::from(text);
    })
    .await
}

/// `response` with its body read whole, then `edit`ed (given the body's bytes, the body itself
/// already put back), and without its `Content-Length` (the edit may change the length).
async fn edit_body(response: Response, edit: impl FnOnce(&mut Response, &[u8])) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, 1 << 20).await.unwrap();
    let mut response = Response::from_parts(parts, Body::from(bytes.clone()));
    edit(&mut response, &bytes);
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

/// A server stating a revision before 1.6 is not checked for held requests: those checks are
/// skipped, saying why, and the report still passes (it is not complete).
#[tokio::test]
async fn a_server_stating_an_older_revision_skips_the_hold_checks() {
    let url = start_server(ServerConfig::default(), |app| {
        app.layer(from_fn(states_revision_1_5))
    })
    .await;
    let report = check_fully(&url).await;
    assert!(report.passed(), "{report}");
    assert!(!report.complete(), "{report}");
    assert_eq!(report.skipped_ids(), HOLD_CHECKS, "{report}");
    for id in HOLD_CHECKS {
        let line = report.get(id).unwrap().to_string();
        assert!(
            line.starts_with("SKIP ") && line.contains("server states revision 1.5 < 1.6"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn the_crates_agent_endpoint_passes_every_check() {
    let (agent, url) = start_endpoint(|app| app).await;
    let target = endpoint_target(&agent, &url).host_name("printer.local");
    let report = check_agent_endpoint(&target).await;
    print!("{report}");
    assert_covers(&report, ENDPOINT_CHECKS);
    assert!(report.complete(), "{}:\n{report}", report.summary());
    // Serving the secret ended nothing: the agent still discovers.
    assert!(lock(&agent).is_discovering());
}

/// What the issue's user got wrong, on top of the crate's endpoint: CORS answered with `*`, no
/// `Cache-Control: no-store` on the secret, a repeated `instance_id` taken (the first one
/// kept), and `HEAD` answered as `GET`.
async fn wrong_endpoint(mut request: Request, next: Next) -> Response {
    let secret_route = request.uri().path().ends_with("/secret");
    if secret_route {
        if request.method() == Method::HEAD {
            *request.method_mut() = Method::GET;
        }
        if let Some(query) = request.uri().query() {
            let mut seen = false;
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| {
                    let repeat = pair.starts_with("instance_id=") && seen;
                    seen |= pair.starts_with("instance_id=");
                    !repeat
                })
                .collect();
            let uri = format!("{}?{}", request.uri().path(), kept.join("&"));
            *request.uri_mut() = uri.parse::<Uri>().unwrap();
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    if secret_route && response.status() == StatusCode::OK {
        response.headers_mut().remove(header::CACHE_CONTROL);
    }
    response
}

#[tokio::test]
async fn a_wrong_agent_endpoint_fails_exactly_the_checks_it_breaks() {
    let (agent, url) = start_endpoint(|app| app.layer(from_fn(wrong_endpoint))).await;
    // No configured host name given: that check is opted out of by name.
    let target = endpoint_target(&agent, &url).opt_out("endpoint.secret.host_name");
    let report = check_agent_endpoint(&target).await;
    print!("{report}");
    assert_covers(&report, ENDPOINT_CHECKS);
    assert!(!report.passed());
    assert_eq!(
        report.failed_ids(),
        [
            "endpoint.secret.ok",
            "endpoint.secret.allowed_origin",
            "endpoint.secret.repeated_instance",
            "endpoint.secret.head",
            "endpoint.preflight.ok",
            "endpoint.preflight.private_network",
        ],
        "{report}"
    );
    assert_eq!(report.skipped_ids(), ["endpoint.secret.host_name"]);
    let line = line_of(&report, "endpoint.secret.allowed_origin");
    assert!(
        line.starts_with("FAIL ") && line.contains("\"*\""),
        "{line}"
    );
}

/// A server that differs from `PROTOCOL.md` in two places: it answers a wrong secret with a
/// success (the crate's server refused it, and counted it), and an unknown path with an HTML
/// page.
async fn wrong_server(request: Request, next: Next) -> Response {
    edit_body(next.run(request).await, |response, bytes| {
        if bytes == br#"{"error":"wrong_secret"}"# {
            *response.status_mut() = StatusCode::OK;
            *response.body_mut() = Body::from(r#"{"state":"pending"}"#);
        } else if bytes == br#"{"error":"not_found"}"# {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            *response.body_mut() = Body::from("<h1>Not Found</h1>");
        }
    })
    .await
}

#[tokio::test]
async fn a_wrong_server_fails_exactly_the_checks_it_breaks() {
    let url = start_server(ServerConfig::default(), |app| {
        app.layer(from_fn(wrong_server))
    })
    .await;
    // No second account: the checks that need one cannot be made, which fails them (a host
    // cannot look green by leaving a check out) ...
    let report = check_server(&ServerTarget::new(&url, bearer(ALICE))).await;
    print!("{report}");
    assert_covers(&report, SERVER_CHECKS);
    assert_outcome(
        &report,
        &[
            "server.not_found",
            "server.link.wrong_secret",
            "server.link_status.other_account",
            "server.codes.mint_quota",
        ],
        &[],
    );
    let line = line_of(&report, "server.codes.mint_quota");
    assert!(line.contains("got not run: no second account"), "{line}");
    // ... unless the caller opts out of them by name: then they are skipped, and say so; the
    // request deadline is checked by default, or opted out of without waiting for it.
    let url = start_server(ServerConfig::default(), |app| {
        app.layer(from_fn(wrong_server))
    })
    .await;
    let target = ServerTarget::new(&url, bearer(ALICE))
        .opt_out("server.link_status.other_account")
        .opt_out("server.codes.mint_quota")
        .opt_out("server.body.request_timeout");
    let report = check_server(&target).await;
    assert_eq!(
        report.failed_ids(),
        ["server.not_found", "server.link.wrong_secret"],
        "{report}"
    );
    assert_eq!(
        report.skipped_ids(),
        [
            "server.body.request_timeout",
            "server.link_status.other_account",
            "server.codes.mint_quota",
        ]
    );
    let skipped = report.get("server.codes.mint_quota").unwrap().to_string();
    assert!(
        skipped.starts_with("SKIP server.codes.mint_quota  opted out (no second account"),
        "{skipped}"
    );
}

/// A server that answers `HEAD` as a `404`, a `405` without `Allow`, and a forwarding line that
/// is not text with a `500`: the rules `PROTOCOL.md` writes down (issue 21), each checked.
async fn unwritten_rules_broken(request: Request, next: Next) -> Response {
    if request.method() == Method::HEAD {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    let garbled = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .any(|v| v.to_str().is_err());
    if garbled {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return response;
    }
    let mut response = next.run(request).await;
    response.headers_mut().remove(header::ALLOW);
    response
}

#[tokio::test]
async fn a_server_breaking_the_unwritten_rules_fails_exactly_their_checks() {
    // Around the whole router: axum writes `Allow` outside each route's own layers.
    let url = start_server(ServerConfig::default(), |app| {
        Router::new()
            .fallback_service(app)
            .layer(from_fn(unwritten_rules_broken))
    })
    .await;
    let report = check_fully(&url).await;
    assert_eq!(
        report.failed_ids(),
        [
            "server.method_not_allowed.allow",
            "server.discover.head",
            "server.forwarded.non_utf8",
        ],
        "{report}"
    );
}

/// A server without the cross-site rule (issue 25, finding 6): whatever the client sent, the
/// routes see JSON and no `Origin`.
async fn no_cross_site_rule(mut request: Request, next: Next) -> Response {
    let headers = request.headers_mut();
    headers.remove(header::ORIGIN);
    if headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    next.run(request).await
}

#[tokio::test]
async fn a_server_without_the_cross_site_rule_fails_exactly_its_checks() {
    let url = start_server(ServerConfig::default(), |app| {
        app.layer(from_fn(no_cross_site_rule))
    })
    .await;
    let report = check_fully(&url).await;
    assert_outcome(
        &report,
        &[
            "server.link.text_plain",
            "server.link.form_urlencoded",
            "server.link.cross_origin",
            "server.codes.cross_origin",
        ],
        &[],
    );
    let line = line_of(&report, "server.link.text_plain");
    assert!(line.contains(r#"got 400 {"error":"malformed"}"#), "{line}");
}

#[tokio::test]
async fn a_lockout_the_kit_provoked_skips_checks_and_a_wrong_threshold_fails_only_the_lockout_check(
) {
    // The server locks out after 3 wrong guesses; told so, the kit passes, with the guesses
    // past the third skipped.
    let config = || ServerConfig::default().lockout_threshold(3);
    let url = start_server(config(), |app| app).await;
    // No second account, and the guesses past the lockout cannot be checked: opted out of.
    let opted = |target: ServerTarget| {
        target
            .opt_out("server.link_status.other_account")
            .opt_out("server.redeem.used_code")
            .opt_out("server.redeem.unknown_code")
            .opt_out("server.codes.mint_quota")
            .request_timeout(DEADLINE)
    };
    let told = opted(ServerTarget::new(&url, bearer(ALICE)).lockout_threshold(3));
    let report = check_server(&told).await;
    print!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(
        report.skipped_ids(),
        [
            "server.link_status.other_account",
            "server.redeem.used_code",
            "server.redeem.unknown_code",
            "server.codes.mint_quota",
        ],
        "{report}"
    );
    let line = line_of(&report, "server.redeem.used_code");
    assert!(
        line.contains("after the kit's own 3 wrong guesses"),
        "{line}"
    );
    assert!(report.get("server.lockout.locked_out").unwrap().passed());

    // Told the default (5), the kit fails the lockout check alone: the lockout came early.
    let url = start_server(config(), |app| app).await;
    let report = check_server(&opted(ServerTarget::new(&url, bearer(ALICE)))).await;
    print!("{report}");
    assert_eq!(
        report.failed_ids(),
        ["server.lockout.locked_out"],
        "{report}"
    );
    let line = line_of(&report, "server.lockout.locked_out");
    assert!(
        line.contains("locked out after 3 wrong guesses, not 5"),
        "{line}"
    );

    // A second run from the same (locked-out) network skips the guesses instead of failing
    // them. Its agents need a network record with room: a fresh server would not be locked
    // out, so the lockout is made first, by hand.
    let url = start_server(ServerConfig::default(), |app| app).await;
    let client = lanlink::http::client::default_client().unwrap();
    for _ in 0..5 {
        let body = format!(
            r#"{{"instance_id":"{}","code":"00112233445566778899aabbccddeeff"}}"#,
            lanlink::InstanceId::generate(&mut lanlink::os_rng())
        );
        let answer = client
            .post(format!("{url}{DEFAULT_PREFIX}/agent/redeem"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 403);
    }
    // The guess checks it could not make fail, each saying why: a run from a locked-out
    // network proves nothing about them.
    let report = check_server(&opted(ServerTarget::new(&url, bearer(ALICE)))).await;
    print!("{report}");
    assert!(!report.passed(), "{report}");
    let line = line_of(&report, "server.link.wrong_secret");
    assert!(
        line.starts_with("FAIL ")
            && line.contains("not run: 429 locked_out before the kit's first wrong guess"),
        "{line}"
    );
    assert!(report.get("server.lockout.locked_out").unwrap().failed());
    for id in report.failed_ids() {
        let line = report.get(id).unwrap().to_string();
        assert!(line.contains("not run:"), "{line}");
    }
}

/// Starts an example and reads JSON lines from its stdout until `wanted` finds what it needs.
fn spawn_example<T>(
    path: &PathBuf,
    args: &[&str],
    mut wanted: impl FnMut(&serde_json::Value) -> Option<T>,
) -> (std::process::Child, T) {
    use std::io::BufRead;
    let mut child = Command::new(path)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let found = loop {
        let line = lines.next().expect("a line").expect("stdout");
        let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        if let Some(found) = wanted(&value) {
            break found;
        }
    };
    // Keep reading in the background, so the example never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, found)
}

#[tokio::test]
async fn the_example_passes_against_the_server_and_agent_examples() {
    let (Some(kit), Some(server), Some(agent)) =
        (example("conformance"), example("server"), example("agent"))
    else {
        println!("SKIP: the conformance, server and agent examples are not built");
        assert!(
            std::env::var("CI").is_err(),
            "CI builds the examples (cargo test --all-features)"
        );
        return;
    };
    let (server, addr) = spawn_example(
        &server,
        &[
            "--listen",
            "127.0.0.1:0",
            "--user",
            &format!("alice={ALICE}"),
            "--user",
            &format!("bob={BOB}"),
        ],
        |v| v["listening"].as_str().map(str::to_owned),
    );
    let _server = Killed(server);
    // The agent announces to a closed port (so that it is not among the kit's agents in the
    // server's network); its endpoint serves all the same.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut endpoint = None;
    let (agent, instance_id) = spawn_example(
        &agent,
        &[
            "--server",
            &nowhere,
            "--listen",
            "127.0.0.1:0",
            "--allow-origin",
            ORIGIN,
            "--host-name",
            "printer.local",
        ],
        |v| {
            if let Some(at) = v["listening"].as_str() {
                endpoint = Some(format!("http://{at}"));
            }
            v["instance_id"].as_str().map(str::to_owned)
        },
    );
    let _agent = Killed(agent);
    let endpoint = endpoint.expect("the agent's listening line");
    let run = tokio::task::spawn_blocking(move || {
        Command::new(kit)
            .args(["--server", &format!("http://{addr}"), "--token", ALICE])
            .args(["--second-token", BOB])
            .args(["--endpoint", &endpoint, "--instance-id", &instance_id])
            .args(["--origin", ORIGIN, "--host-name", "printer.local"])
            .args(["--request-timeout", "10", "--strict"])
            .output()
            .expect("the kit runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    print!("{stdout}{stderr}");
    assert!(run.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("PASS ")).count(),
        SERVER_CHECKS.len() + ENDPOINT_CHECKS.len()
    );
}

#[tokio::test]
async fn the_example_exits_non_zero_when_a_check_fails() {
    let Some(kit) = example("conformance") else {
        println!("SKIP: the conformance example is not built");
        return;
    };
    let (agent, url) = start_endpoint(|app| app.layer(from_fn(wrong_endpoint))).await;
    let id = lock(&agent).instance_id().to_string();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(kit)
            .args(["--endpoint", &url, "--instance-id", &id, "--origin", ORIGIN])
            .output()
            .expect("the kit runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL endpoint.secret.head  expected 405 (HEAD refused); got 200"),
        "{stdout}"
    );
}

/// The kit against `examples/blocking_server.rs` (the core's server endpoint on the example's
/// own blocking HTTP/1.1 shell, no tokio, no axum), with a short request deadline and a second
/// account: every check passes, none is skipped, none is opted out of. Build the example first
/// when running this file alone (`cargo build --example blocking_server`).
#[tokio::test]
async fn the_blocking_server_example_passes_every_check() {
    let path = support::example::built("blocking_server");
    let deadline = DEADLINE.as_millis().to_string();
    let (server, addr) = spawn_example(
        &path,
        &[
            "--listen",
            "127.0.0.1:0",
            "--user",
            &format!("alice={ALICE}"),
            "--user",
            &format!("bob={BOB}"),
            "--request-timeout-ms",
            &deadline,
        ],
        |v| v["listening"].as_str().map(str::to_owned),
    );
    let _server = Killed(server);
    let report = check_fully(&format!("http://{addr}")).await;
    assert!(report.skipped_ids().is_empty(), "{report}");
    assert!(report.passed(), "{}:\n{report}", report.summary());
    assert!(report.complete(), "{}:\n{report}", report.summary());
}
