//! A lanlink agent with no tokio: the sans-IO core driven by hand over blocking HTTP, on another
//! stack than the crate's adapter — `ureq` to the server, `tiny_http` for the local endpoint.
//!
//! ```text
//! cargo run --example blocking_agent -- --server http://127.0.0.1:8080 --listen 127.0.0.1:0
//! ```
//!
//! It takes the flags of `examples/agent.rs` and prints what it prints: on stdout one JSON line
//! once the local endpoint listens (`{"listening": …}`), then one per state change, first
//! `discovering` with the `instance_id`, last `linked` with the token file's path (the token
//! itself is never printed) or `stopped` with the reason. A manual code can be given with `--code`
//! or typed on stdin. Logs go to stderr. Exit status: 0 linked, 1 discovery ended without a link,
//! 2 bad usage or a failed setup (an address that cannot be bound, a bad configuration).
//!
//! It uses only the core (`agent`, `endpoint`, `transport`, `wire`) and needs no feature of the
//! crate. Two threads share the [`Agent`] behind a mutex, each holding it only to call the core,
//! never across I/O:
//!
//! - the endpoint thread takes each request `tiny_http` parsed, hands its method, target
//!   ([`endpoint::split_target`]), headers and socket peer to [`endpoint::handle`], and writes the
//!   status, every header and the body it answers as they are;
//! - the main thread drives the agent: what [`Agent::poll_transmit`] wants sent goes to the server
//!   with `ureq` (no redirects, no proxy, bodies read up to one byte past the wire's limit); the
//!   status and body go through [`transport::reply_from`] and back into the agent; events are
//!   drained and printed; then it sleeps until [`Agent::poll_timeout`], at most
//!   [`MAX_SLEEP`] so that what the endpoint or a typed code did meanwhile is seen promptly.
//!
//! `ureq` is built without TLS here, so the server must be `http://` (loopback, a LAN, or a local
//! TLS-terminating proxy); enable one of `ureq`'s TLS features for `https://`. `tiny_http` has
//! none of `lanlink::http::serve`'s limits (connection caps, header and request deadlines, body
//! sizes): put such limits in front of it on a network that needs them.

use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clap::Parser;
use ipnet::IpNet;
use lanlink::agent::{Agent, AgentConfig, AgentStatus, AgentTransmit};
use lanlink::endpoint::{self, LocalRequest, LocalResponse};
use lanlink::event::AgentEvent;
use lanlink::transport::{self, TransportError, ANNOUNCE_PATH, DEFAULT_PREFIX, REDEEM_PATH};
use lanlink::wire::{self, AnnounceReply, RedeemReply, MAX_MESSAGE_BYTES};
use lanlink::{DeviceInfo, LinkCode, LocalPolicy};
use serde::de::DeserializeOwned;
use serde_json::json;
use zeroize::Zeroizing;

/// The longest the main loop sleeps before it looks at the agent again.
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// Runs a lanlink agent over blocking HTTP (no tokio).
#[derive(Parser, Debug)]
#[command(about = "Runs a lanlink agent over blocking HTTP (ureq, tiny_http), with no tokio")]
struct Args {
    /// The server's base URL (http:// only: this build has no TLS).
    #[arg(long)]
    server: String,
    /// Address of the local secret endpoint (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The private address to announce (default: the listen address's IP).
    #[arg(long)]
    private_ip: Option<IpAddr>,
    /// A proxy network whose forwarding headers are trusted. Repeatable; default none.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<IpNet>,
    /// A network counted as local. Repeatable; replaces the default (RFC 1918, loopback,
    /// link-local, ULA).
    #[arg(long = "local-net")]
    local_nets: Vec<IpNet>,
    /// An origin allowed to fetch the secret from a browser (e.g. https://cloud.example).
    #[arg(long = "allow-origin", alias = "allowed-origin")]
    allow_origins: Vec<String>,
    /// A host name the endpoint may be addressed as, besides IP literals.
    #[arg(long = "host-name")]
    host_names: Vec<String>,
    /// The discovery window in seconds (at most 600).
    #[arg(long, default_value_t = 600, alias = "window-secs")]
    window: u64,
    /// How long, in seconds, the server is asked to hold each announcement open so that a
    /// link arrives at once (revision 1.6; at most 25, 0 never asks).
    #[arg(long, default_value_t = 20)]
    hold: u64,
    /// The device's host name shown to the user.
    #[arg(long, default_value = "lanlink-device")]
    hostname: String,
    /// The device model shown to the user.
    #[arg(long, default_value = "example")]
    model: String,
    /// A manual code to redeem at start (otherwise a line on stdin is taken as one).
    #[arg(long)]
    code: Option<String>,
    /// Where to write the auth token once linked (default: a file in the temp directory).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Route prefix (server and local endpoint).
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
}

/// The agent, shared by the endpoint thread, the stdin thread and the main loop.
type SharedAgent = Arc<Mutex<Agent>>;

/// Locks the agent. It never panics while locked, so a poisoned lock still holds a consistent
/// agent.
fn lock(agent: &Mutex<Agent>) -> MutexGuard<'_, Agent> {
    agent
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(AgentStatus::Linked) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(err) => {
            eprintln!("blocking_agent: {err}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<AgentStatus, Box<dyn std::error::Error + Send + Sync>> {
    if !args.server.starts_with("http://") {
        return Err("--server must be an http:// URL (this build of ureq has no TLS)".into());
    }
    let listener = TcpListener::bind(args.listen)?;
    let addr = listener.local_addr()?;
    let info = DeviceInfo::new(
        &args.hostname,
        &args.model,
        "lanlink-example-blocking-agent",
        env!("CARGO_PKG_VERSION"),
    )?;
    let mut config = AgentConfig::new(args.private_ip.unwrap_or(addr.ip()), addr.port(), info)
        .window(Duration::from_secs(args.window))
        .hold(Duration::from_secs(args.hold))
        .trusted_proxies(args.trusted_proxies);
    if !args.local_nets.is_empty() {
        config = config.local_policy(LocalPolicy::new(args.local_nets));
    }
    for origin in &args.allow_origins {
        config = config.allow_origin(origin);
    }
    for name in &args.host_names {
        config = config.allow_host(name);
    }
    let agent: SharedAgent = Arc::new(Mutex::new(Agent::new(
        config,
        Instant::now(),
        &mut lanlink::os_rng(),
    )?));
    let server = tiny_http::Server::from_listener(listener, None)?;
    println!("{}", json!({ "listening": addr.to_string() }));

    let endpoint_agent = Arc::clone(&agent);
    let prefix = args.prefix.clone();
    std::thread::spawn(move || serve_endpoint(&server, &endpoint_agent, &prefix));

    if let Some(code) = &args.code {
        enter_code(&agent, code);
    } else {
        let stdin_agent = Arc::clone(&agent);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if !line.trim().is_empty() {
                    enter_code(&stdin_agent, &line);
                }
            }
        });
    }

    let client = ServerClient::new(&args.server, &args.prefix);
    let status = drive(&agent, &client);
    if status == AgentStatus::Linked {
        let (instance_id, token) = {
            let guard = lock(&agent);
            let token = guard.auth_token().map(|t| t.to_hex());
            (guard.instance_id(), token)
        };
        let path = args
            .token_file
            .unwrap_or_else(|| std::env::temp_dir().join(format!("lanlink-{instance_id}.token")));
        if let Some(token) = token {
            write_private(&path, token.as_bytes())?;
        }
        println!(
            "{}",
            json!({ "event": "linked", "state": "linked", "instance_id": instance_id, "token_file": path })
        );
    }
    Ok(status)
}

fn enter_code(agent: &Mutex<Agent>, text: &str) {
    match LinkCode::parse(text.trim()) {
        Some(code) => {
            if let Err(err) = lock(agent).enter_code(Instant::now(), code) {
                eprintln!("cannot enter a code now: {err}");
            }
        }
        None => eprintln!("not a code"),
    }
}

// ───────────────────────────── the main loop ─────────────────────────────

/// Drives the agent until it is linked or discovery has ended; returns that status.
fn drive(agent: &Mutex<Agent>, client: &ServerClient) -> AgentStatus {
    loop {
        let (transmit, wake, status) = {
            let mut guard = lock(agent);
            let transmit = guard.poll_transmit(Instant::now());
            print_events(&mut guard);
            (transmit, guard.poll_timeout(), guard.status())
        };
        match transmit {
            Some(AgentTransmit::Announce(announce)) => {
                let reply = announce_while_wanted(agent, client, &announce);
                let mut guard = lock(agent);
                let now = Instant::now();
                match reply {
                    Some(Ok(reply)) => guard.handle_announce_reply(now, reply),
                    Some(Err(err)) => {
                        eprintln!("announce: {err}");
                        // The agent decides what a failure means: an older server (`400
                        // malformed`, see PROTOCOL.md, revisions), a refusal that may end
                        // discovery, or no answer from the server (announced again at the
                        // agent's interval; a held announcement counts toward the hold's
                        // fallback).
                        guard.handle_announce_failed(now, &err);
                    }
                    // Dropped: a code was typed, or the window ended, while it was held.
                    None => {}
                }
                continue;
            }
            Some(AgentTransmit::Redeem(request)) => {
                let body = wire::encode(&request);
                drop(request);
                // One attempt: the agent owns the retries (it hands the request out again when
                // `poll_timeout` says, and stops at its redeem deadline).
                let outcome = client.post::<RedeemReply>(REDEEM_PATH, &body, None);
                let mut guard = lock(agent);
                let now = Instant::now();
                let fed = match outcome {
                    Ok(reply) => guard.handle_redeem_reply(now, Ok(reply)),
                    Err(err) if err.is_malformed_request() => {
                        guard.handle_request_malformed(now);
                        Ok(())
                    }
                    Err(err) => match err.refused_code() {
                        Some(code) => guard.handle_redeem_reply(now, Err(code)),
                        None => guard.handle_redeem_failed(now),
                    },
                };
                // Cannot fail: the agent just handed out this redemption.
                if let Err(err) = fed {
                    eprintln!("redeem: {err}");
                }
                continue;
            }
            Some(other) => {
                // A transmit this example does not know (`AgentTransmit` is non-exhaustive).
                eprintln!("not sent, unknown to this example: {other:?}");
                continue;
            }
            None => {}
        }
        if matches!(status, AgentStatus::Linked | AgentStatus::Stopped(_)) {
            print_events(&mut lock(agent));
            return status;
        }
        // `poll_timeout` names a deadline whenever discovery or a redemption is on (`None` only
        // once linked or stopped, handled above). The sleep is capped so that a code typed on
        // stdin or a request on the endpoint is noticed soon.
        let now = Instant::now();
        let sleep = wake.map_or(MAX_SLEEP, |wake| {
            wake.saturating_duration_since(now).min(MAX_SLEEP)
        });
        std::thread::sleep(sleep);
    }
}

/// Sends `announce` from a thread of its own and waits for its answer, looking at the agent
/// every [`MAX_SLEEP`] meanwhile: a held announcement (revision 1.6) may wait up to its hold,
/// and a code typed or the window's end must not wait that long. `None` once the answer no
/// longer matters ([`Agent::wants_announce_reply`]); the thread finishes on its own when the
/// server answers or its timeout passes.
fn announce_while_wanted(
    agent: &Mutex<Agent>,
    client: &ServerClient,
    announce: &wire::Announce,
) -> Option<Result<AnnounceReply, TransportError>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let client = client.clone();
    let body = wire::encode(announce);
    let hold = announce
        .hold_ms
        .map(|ms| Duration::from_millis(u64::from(ms)));
    std::thread::spawn(move || {
        let _ = tx.send(client.post::<AnnounceReply>(ANNOUNCE_PATH, &body, hold));
    });
    loop {
        match rx.recv_timeout(MAX_SLEEP) {
            Ok(reply) => return Some(reply),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                if lock(agent).wants_announce_reply(Instant::now(), announce.instance_id) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Some(Err(TransportError::Unreachable("no answer".to_owned())));
            }
        }
    }
}

/// Prints the agent's pending events, one JSON line each (`linked` is printed by `run`, with
/// the token file's path).
fn print_events(agent: &mut Agent) {
    while let Some(event) = agent.poll_event() {
        if !matches!(event, AgentEvent::Linked { .. }) {
            println!("{}", event_json(&event));
        }
    }
}

/// An event as `examples/agent.rs` prints it: the event's own JSON (`AgentEvent`'s `Serialize`,
/// tagged by `event`), plus the `state` key (`discovering` and `redeeming` for
/// `discovery_started` and `redeem_started`, else the event's name) and, for the visibility, a
/// `message` in plain words.
fn event_json(event: &AgentEvent) -> serde_json::Value {
    let mut line = serde_json::to_value(event).unwrap_or_else(|_| json!({ "event": event.name() }));
    let state = match event {
        AgentEvent::DiscoveryStarted { .. } => "discovering",
        AgentEvent::RedeemStarted { .. } => "redeeming",
        other => other.name(),
    };
    if let Some(fields) = line.as_object_mut() {
        fields.insert("state".to_owned(), state.into());
        if let AgentEvent::Visibility { visibility } = event {
            let message = lanlink::agent::describe_visibility(*visibility);
            fields.insert("message".to_owned(), message.into());
        }
    }
    line
}

// ───────────────────────────── the server, over ureq ─────────────────────────────

/// How much longer than its hold a held announcement waits for its answer (the crate's
/// `HttpAgentClient` waits as long): the timeout of every other request.
const HOLD_MARGIN: Duration = Duration::from_secs(10);

/// The agent's side of the server's agent routes, over a blocking `ureq` agent (a handle:
/// clones share its connections).
#[derive(Clone)]
struct ServerClient {
    http: ureq::Agent,
    /// The server's base URL and the prefix, without a trailing slash.
    base: String,
}

impl ServerClient {
    fn new(server: &str, prefix: &str) -> Self {
        let config = ureq::Agent::config_builder()
            // Refusals are answers: their status and body go to `reply_from`.
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(HOLD_MARGIN))
            .build();
        Self {
            http: config.into(),
            base: format!(
                "{}/{}",
                server.trim_end_matches('/'),
                prefix.trim_matches('/')
            ),
        }
    }

    /// `POST {base}{path}` with a JSON `body`; the reply as the core maps it. The body is read
    /// up to one byte past the wire's limit, so that `reply_from` sees (and refuses) a longer one.
    /// A request the server may hold (`hold`, revision 1.6) waits the hold plus
    /// [`HOLD_MARGIN`] for its answer.
    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &[u8],
        hold: Option<Duration>,
    ) -> Result<T, TransportError> {
        let unreachable =
            |err: &dyn std::fmt::Display| TransportError::Unreachable(err.to_string());
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(hold) = hold {
            request = request
                .config()
                .timeout_global(Some(hold + HOLD_MARGIN))
                .build();
        }
        let mut response = request.send(body).map_err(|err| unreachable(&err))?;
        let status = response.status().as_u16();
        // Room for the whole body at once: it may hold the secret, and a reallocation would
        // leave a copy behind that is not zeroized.
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_MESSAGE_BYTES + 1));
        response
            .body_mut()
            .as_reader()
            .take(MAX_MESSAGE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| unreachable(&err))?;
        transport::reply_from(status, &bytes)
    }
}

// ───────────────────────────── the local endpoint, over tiny_http ─────────────────────────────

/// Answers every request on `server` with the core's endpoint, one at a time.
fn serve_endpoint(server: &tiny_http::Server, agent: &Mutex<Agent>, prefix: &str) {
    for request in server.incoming_requests() {
        let answer = answer(agent, prefix, &request);
        let headers = answer
            .headers
            .iter()
            // The core writes header text only (as the axum adapter, drop what the library
            // would refuse rather than fail the answer).
            .filter_map(|(name, value)| {
                tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
            })
            .collect();
        let body: &[u8] = &answer.body;
        let response = tiny_http::Response::new(
            tiny_http::StatusCode(answer.status),
            headers,
            body,
            Some(body.len()),
            None,
        );
        if let Err(err) = request.respond(response) {
            eprintln!("local endpoint: cannot answer: {err}");
        }
    }
}

/// Hands one request to the core's endpoint.
fn answer(agent: &Mutex<Agent>, prefix: &str, request: &tiny_http::Request) -> LocalResponse {
    let headers: Vec<(&str, &[u8])> = request
        .headers()
        .iter()
        .map(|header| (header.field.as_str().as_str(), header.value.as_bytes()))
        .collect();
    let target = endpoint::split_target(request.url());
    let local = LocalRequest {
        method: request.method().as_str(),
        path: target.path,
        query: target.query,
        authority: target.authority,
        headers: &headers,
        peer: request.remote_addr().map(|addr| addr.ip()),
    };
    let answer = endpoint::handle(
        &mut lock(agent),
        Instant::now(),
        &mut lanlink::os_rng(),
        prefix,
        &local,
    );
    // The outcome only, never the body (it may hold the secret).
    let peer = local
        .peer
        .map_or("an unknown peer".to_owned(), |ip| ip.to_string());
    eprintln!(
        "local endpoint: {} {} from {peer}: {}",
        local.method, local.path, answer.status
    );
    answer
}

// ───────────────────────────── the token file ─────────────────────────────

/// Writes `bytes` to `path`, readable and writable by its owner only (where the platform allows):
/// created with mode 0600, and an existing file set to 0600 before anything is written.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)
}
