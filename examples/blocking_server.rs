//! The lanlink server with no tokio and no axum: the core's server endpoint
//! ([`lanlink::server::endpoint`]) served over `tiny_http`, a blocking HTTP library, on the
//! in-memory store.
//!
//! ```text
//! cargo run --example blocking_server -- --listen 127.0.0.1:8080 --user alice=TOKEN [--trusted-proxy CIDR]...
//! ```
//!
//! It takes the flags of `examples/server.rs` that apply to an in-memory server (not `--redis*`,
//! `--profile` or `--max-connections-per-client`: `tiny_http` has no connection caps), plus
//! `--request-timeout-ms`, and prints the line it prints once listening
//! (`{"listening":"127.0.0.1:8080"}`; there is no linking page here). The server's events go to
//! stderr. It needs no feature of the crate (`default-features = false` builds it).
//!
//! Every rule is the core's: each request's method, target, header lines, socket peer and the
//! state of its body go to [`endpoint::handle`], and its answer is written as it is. What is
//! left here moves bytes (reading a body within the limit and the deadline, writing an answer,
//! a `block_on`) or is the host's own (flags, the users' bearer tokens, printing events).
//!
//! `tiny_http` has none of `lanlink::http::serve`'s limits, and no read timeouts: the request
//! deadline is checked whenever body bytes arrive, so a body that trickles in past it is answered
//! `408 request_timeout`, but a client that stops sending holds its thread until it closes. Its
//! parser differs from hyper's where `tiny_http` decides alone: a header line with a byte that is
//! not ASCII closes the connection unanswered, and a body of at most 1 KiB that breaks off is
//! never handed over. Put a proxy with limits in front of it on a network that needs them.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use ipnet::IpNet;
use lanlink::server::endpoint::{self, Backend, Handled, HttpRequest, RequestBody, User};
use lanlink::server::endpoint::{ServerResponse, MAX_BODY_BYTES};
use lanlink::server::{Server, ServerConfig};
use lanlink::transport::DEFAULT_PREFIX;
use lanlink::AccountId;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Runs a lanlink server over blocking HTTP.
#[derive(Parser, Debug)]
#[command(about = "Runs a lanlink server over blocking HTTP (tiny_http), with no tokio")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A user as NAME=TOKEN: requests with `Authorization: Bearer TOKEN` act as NAME. Repeatable.
    #[arg(long = "user", value_parser = parse_user)]
    users: Vec<(String, AccountId)>,
    /// A proxy network whose forwarding headers are trusted. Repeatable; default none.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<IpNet>,
    /// Most agents shown per network; with more present none is shown.
    #[arg(long, default_value_t = 1)]
    max_visible: usize,
    /// Most Obico agents shown per network when all poll from one private host.
    #[arg(long, default_value_t = 2)]
    max_visible_one_host: usize,
    /// Failures from one network (in 10 minutes) that lock it out for 10 minutes.
    #[arg(long, default_value_t = 5)]
    lockout_threshold: u32,
    /// IPv6 prefix length that groups addresses into one network.
    #[arg(long, default_value_t = 64)]
    ipv6_prefix: u8,
    /// A NAT64/SIIT prefix whose clients stand for the IPv4 address they embed. Repeatable.
    #[arg(long = "nat64-prefix")]
    nat64_prefixes: Vec<ipnet::Ipv6Net>,
    /// A web origin whose pages may send the state-changing user requests. Repeatable.
    #[arg(long = "allow-origin")]
    allowed_origins: Vec<String>,
    /// Route prefix.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    /// How long a request's body may take to arrive, from when its headers were read.
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,
}

fn parse_user(text: &str) -> Result<(String, AccountId), String> {
    let (name, token) = text.split_once('=').ok_or("expected NAME=TOKEN")?;
    let account = AccountId::new(name).ok_or("invalid account name")?;
    if token.len() < 8 {
        return Err("the token must be at least 8 characters".into());
    }
    Ok((token.to_owned(), account))
}

/// What every request thread shares.
struct Host {
    server: Mutex<Server>,
    users: Vec<(Zeroizing<String>, AccountId)>,
    prefix: String,
    request_timeout: Duration,
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let config = args
        .allowed_origins
        .iter()
        .fold(ServerConfig::default(), |config, origin| {
            config.allow_origin(origin)
        })
        .trusted_proxies(args.trusted_proxies)
        .max_visible(args.max_visible)
        .max_visible_one_host(args.max_visible_one_host)
        .lockout_threshold(args.lockout_threshold)
        .ipv6_prefix(args.ipv6_prefix)
        .nat64_prefixes(args.nat64_prefixes);
    let host = Arc::new(Host {
        server: Mutex::new(Server::new(config)?),
        users: args
            .users
            .into_iter()
            .map(|(token, account)| (Zeroizing::new(token), account))
            .collect(),
        prefix: args.prefix,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
    });
    let listener = TcpListener::bind(args.listen)?;
    let addr = listener.local_addr()?;
    let http = tiny_http::Server::from_listener(listener, None)?;
    println!("{}", serde_json::json!({ "listening": addr.to_string() }));
    let mut last_purge = Instant::now();
    for request in http.incoming_requests() {
        // Housekeeping, as `http::server::spawn_purge` does every 10 s.
        if last_purge.elapsed() >= Duration::from_secs(10) {
            lock(&host.server).purge_expired(wall_now());
            last_purge = Instant::now();
        }
        // One thread per request: a slow body holds its own thread only.
        let host = Arc::clone(&host);
        std::thread::spawn(move || serve(&host, request));
    }
    Ok(())
}

// ─────────────────────── byte-moving: request in, answer out ───────────────────────

/// Answers one request with the core's endpoint.
fn serve(host: &Host, mut request: tiny_http::Request) {
    let deadline = Instant::now() + host.request_timeout;
    // Owned copies: the body is read through a mutable borrow of the request.
    let (url, method) = (
        request.url().to_owned(),
        request.method().as_str().to_owned(),
    );
    let target = endpoint::split_target(&url);
    let read = if endpoint::reads_body(&host.prefix, &method, target.path) {
        read_body(&mut request, deadline)
    } else {
        Ok(Zeroizing::new(Vec::new()))
    };
    let body = match &read {
        Ok(bytes) => RequestBody::Complete(bytes),
        Err(state) => *state,
    };
    let headers: Vec<(&str, &[u8])> = request
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str(), h.value.as_bytes()))
        .collect();
    let http_request = HttpRequest {
        method: &method,
        path: target.path,
        query: target.query,
        authority: target.authority,
        headers: &headers,
        peer: request.remote_addr().map(|addr| addr.ip()),
    };
    let answer = answer(host, &http_request, body);
    drop(headers);
    print_events(host);
    let mut lines: Vec<tiny_http::Header> = answer
        .headers
        .iter()
        .filter_map(|(name, value)| {
            tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
        })
        .collect();
    if answer.close {
        lines.extend(tiny_http::Header::from_bytes(&b"connection"[..], &b"close"[..]).ok());
    }
    let bytes: &[u8] = &answer.body;
    let response = tiny_http::Response::new(
        tiny_http::StatusCode(answer.status),
        lines,
        bytes,
        Some(bytes.len()),
        None,
    );
    if let Err(err) = request.respond(response) {
        eprintln!("blocking_server: cannot answer: {err}");
    }
}

/// The core's answer, asking the host's users when the route needs one.
fn answer(host: &Host, request: &HttpRequest<'_>, body: RequestBody<'_>) -> ServerResponse {
    let backend = Backend::Local(&host.server);
    let (now, mut rng, prefix) = (wall_now(), lanlink::os_rng(), host.prefix.as_str());
    let handle = |user: Option<&User>, rng: &mut _| {
        block_on(endpoint::handle(
            backend, now, rng, prefix, request, body, user,
        ))
    };
    match handle(None, &mut rng) {
        Handled::Answer(answer) => answer,
        Handled::NeedsUser { .. } => match account(host, request) {
            Some(account) => handle(Some(&User::new(account)), &mut rng)
                .into_answer()
                .unwrap_or_else(ServerResponse::unauthorized),
            None => ServerResponse::unauthorized(),
        },
    }
}

/// Reads a body of at most [`MAX_BODY_BYTES`] by `deadline` into a buffer that is zeroized when
/// dropped, or says what became of it.
fn read_body(
    request: &mut tiny_http::Request,
    deadline: Instant,
) -> Result<Zeroizing<Vec<u8>>, RequestBody<'static>> {
    let declared = request.body_length();
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(RequestBody::TooLarge);
    }
    // Room for the whole body at once: a reallocation would leave an unzeroized copy behind.
    let mut body = Zeroizing::new(Vec::with_capacity(MAX_BODY_BYTES));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    let reader = request.as_reader();
    loop {
        if Instant::now() >= deadline {
            return Err(RequestBody::TimedOut);
        }
        match reader.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) if body.len() + n > MAX_BODY_BYTES => return Err(RequestBody::TooLarge),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(RequestBody::Broken),
        }
    }
    if declared.is_some_and(|length| body.len() < length) {
        return Err(RequestBody::Broken);
    }
    Ok(body)
}

/// Runs a future to completion on this thread (no runtime: the thread sleeps until woken).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

// ─────────────────────── the host's own: users, events, the clock ───────────────────────

/// The account of the request's bearer token (`Authorization: Bearer …`, the scheme in any
/// case), compared with every user's token in constant time.
fn account(host: &Host, request: &HttpRequest<'_>) -> Option<AccountId> {
    let (_, value) = request
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))?;
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut found = None;
    for (known, account) in &host.users {
        if bool::from(known.as_bytes().ct_eq(token.trim().as_bytes())) {
            found = Some(account.clone());
        }
    }
    found
}

/// Prints the server's events to stderr (they carry no secrets).
fn print_events(host: &Host) {
    let mut server = lock(&host.server);
    while let Some(event) = server.poll_event() {
        eprintln!("lanlink::server: {event:?}");
    }
}

fn lock(server: &Mutex<Server>) -> std::sync::MutexGuard<'_, Server> {
    server
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wall_now() -> lanlink::chrono::DateTime<lanlink::chrono::Utc> {
    lanlink::chrono::DateTime::<lanlink::chrono::Utc>::from(SystemTime::now())
}
