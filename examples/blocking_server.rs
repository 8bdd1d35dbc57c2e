//! The lanlink server with no tokio and no axum: the core's server endpoint
//! ([`lanlink::server::endpoint`]) served by a small blocking HTTP/1.1 shell of its own, on
//! `std::net::TcpListener` with `httparse` reading request heads, one thread per connection, on
//! the in-memory store.
//!
//! ```text
//! cargo run --example blocking_server -- --listen 127.0.0.1:8080 --user alice=TOKEN [--trusted-proxy CIDR]...
//! ```
//!
//! It takes the flags of `examples/server.rs` that apply to an in-memory server (not `--redis*`,
//! `--profile` or `--max-connections-per-client`), plus `--request-timeout-ms`, and prints the
//! line it prints once listening (`{"listening":"127.0.0.1:8080"}`; there is no linking page
//! here). The server's events go to stderr. It needs no feature of the crate
//! (`default-features = false` builds it).
//!
//! Every rule is the core's: each request's method, target, header lines (as raw bytes, so a
//! line that is not text reaches the core, which skips it), socket peer and the state of its
//! body go to [`endpoint::handle`], and its answer is written as it is. A head too large to take
//! goes to the core unparsed, which refuses it by its size. What is left here moves bytes
//! (HTTP/1.1 framing: heads, bodies by `Content-Length` or chunked, read only for the routes
//! that take one, within [`MAX_BODY_BYTES`] and the deadline; answers; keep-alive; a
//! `block_on`) or is the host's own (flags, the users' bearer tokens, printing events, how many
//! connections it serves).
//!
//! Its limits:
//!
//! - `--request-timeout-ms` (default 10 s) bounds each request from its first byte: a body not
//!   in by then is handed over as timed out (`408 request_timeout`, connection closed); a head not
//!   in by then closes the connection unanswered, as hyper does. A kept-alive connection waits at
//!   most 10 s for its next request, and for its client to take an answer.
//! - At most 512 connections at once, and from one client and each prefix around it as many as
//!   the core's [`ConnectionShares`] allow by default (an IPv4 address or an IPv6 /64 32);
//!   further ones are closed unanswered, as `lanlink::http::serve` does. Behind a reverse proxy
//!   every connection is the proxy's: bound them there.
//! - A head that is not HTTP/1.x (`httparse` refuses it) closes the connection unanswered;
//!   hyper answers those `400`.
//! - Plain HTTP/1.1 only: no TLS (put a TLS-terminating proxy in front and name it with
//!   `--trusted-proxy`), no HTTP/2, no `Upgrade`; answers always carry a `Content-Length`.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use ipnet::IpNet;
use lanlink::server::connections::{ConnectionShares, Groups};
use lanlink::server::endpoint::{self, Handled, HttpRequest, RequestBody, User};
use lanlink::server::endpoint::{ServerResponse, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use lanlink::server::{Server, ServerConfig};
use lanlink::transport::DEFAULT_PREFIX;
use lanlink::AccountId;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Connections served at once (`lanlink::http::serve`'s default); further ones are closed.
const MAX_CONNECTIONS: usize = 512;
/// How long a connection waits for its next request, and for its client to take an answer.
const PATIENCE: Duration = Duration::from_secs(10);
/// The buffer a request head is read into: every head the core takes ([`MAX_HEAD_BYTES`] of
/// target and header lines), with room for the method, the version, spaces and line breaks.
const HEAD_BUFFER: usize = MAX_HEAD_BYTES + 4096;
/// The longest line of chunked framing (a chunk's size line, a trailer line), and the most
/// trailer bytes.
const MAX_FRAMING_LINE: usize = 4096;
/// After an answer that closes the connection, the rest of what the client sends is read and
/// dropped for this long (at most [`LINGER_BYTES`]): closing with bytes unread would reset the
/// connection, and the client could lose the answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// Runs a lanlink server over blocking HTTP.
#[derive(Parser, Debug)]
#[command(
    about = "Runs a lanlink server over blocking HTTP/1.1 (std::net, httparse), with no tokio"
)]
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
    /// How long a request (its head and its body) may take to arrive, from its first byte.
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

/// What every connection thread shares.
struct Host {
    server: Server,
    users: Vec<(Zeroizing<String>, AccountId)>,
    prefix: String,
    request_timeout: Duration,
    shares: ConnectionShares,
    open: Mutex<Open>,
}

/// The connections open: in all, and in each group of their peers' addresses.
#[derive(Default)]
struct Open {
    total: usize,
    groups: HashMap<IpNet, usize>,
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
        server: Server::new(config)?,
        users: args
            .users
            .into_iter()
            .map(|(token, account)| (Zeroizing::new(token), account))
            .collect(),
        prefix: args.prefix,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        shares: ConnectionShares::default(),
        open: Mutex::new(Open::default()),
    });
    let listener = TcpListener::bind(args.listen)?;
    let addr = listener.local_addr()?;
    println!("{}", serde_json::json!({ "listening": addr.to_string() }));
    // Housekeeping, as `http::server::spawn_purge` does every 10 s.
    let purging = Arc::clone(&host);
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(10));
        // Over the in-memory store a purge cannot fail.
        let _ = block_on(purging.server.purge_expired(wall_now()));
        print_events(&purging);
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // Out of descriptors and the like: wait a moment rather than spin.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let Ok(peer) = stream.peer_addr().map(|addr| addr.ip()) else {
            continue;
        };
        // No room: closed unanswered.
        let Some(slot) = Slot::take(&host, peer) else {
            continue;
        };
        // One thread per connection: a slow client holds its own thread only.
        let host = Arc::clone(&host);
        let spawned = std::thread::Builder::new().spawn(move || {
            serve_connection(&host, stream, peer);
            drop(slot);
        });
        if let Err(err) = spawned {
            eprintln!("blocking_server: cannot start a connection thread: {err}");
        }
    }
    Ok(())
}

/// One open connection, counted in all and in every group of its peer's address; given back
/// when dropped.
struct Slot {
    host: Arc<Host>,
    groups: Groups,
}

impl Slot {
    /// A slot for a connection from `peer`, if there is room: fewer than [`MAX_CONNECTIONS`] in
    /// all, and room in every group of `peer` as the core's [`ConnectionShares`] decide.
    fn take(host: &Arc<Host>, peer: IpAddr) -> Option<Self> {
        let mut open = lock(&host.open);
        if open.total >= MAX_CONNECTIONS {
            return None;
        }
        let count = |group: &IpNet| open.groups.get(group).copied().unwrap_or(0);
        let groups = host.shares.admit(peer, count).ok()?;
        open.total += 1;
        for (group, _) in &groups {
            *open.groups.entry(*group).or_insert(0) += 1;
        }
        Some(Self {
            host: Arc::clone(host),
            groups,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.host.open);
        open.total = open.total.saturating_sub(1);
        for (group, _) in &self.groups {
            if let Some(count) = open.groups.get_mut(group) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.groups.remove(group);
                }
            }
        }
    }
}

// ─────────────────────── byte-moving: requests in, answers out ───────────────────────

/// Serves the requests of one connection, one after the other, until it closes.
fn serve_connection(host: &Host, stream: TcpStream, peer: IpAddr) {
    let _ = stream.set_write_timeout(Some(PATIENCE));
    let mut conn = Conn::new(stream);
    while let Some((head, deadline)) = conn.head(host.request_timeout) {
        match serve_request(host, &mut conn, peer, &head, deadline) {
            Next::KeepAlive => {}
            Next::Close => return conn.close(),
            Next::Drop => return,
        }
    }
}

/// What becomes of a connection after a request.
enum Next {
    /// It may carry another request.
    KeepAlive,
    /// Answered; closed.
    Close,
    /// Closed as it is (unanswered, or the answer could not be written).
    Drop,
}

/// Answers one request, whose head came; `deadline` is when all of it is due.
fn serve_request(
    host: &Host,
    conn: &mut Conn,
    peer: IpAddr,
    head: &Head,
    deadline: Instant,
) -> Next {
    let head = match head {
        Head::Whole(bytes) => bytes,
        Head::TooLarge(bytes) => {
            // Handed over unparsed, as one line of what came: the core refuses a head by its
            // size, before anything else.
            let lines = [("", &bytes[..])];
            let request = HttpRequest {
                method: "",
                path: "",
                query: None,
                authority: None,
                headers: &lines,
                peer: Some(peer),
            };
            let answer = answer(host, &request, RequestBody::Complete(&[]));
            print_events(host);
            return match conn.write_answer(&answer, true) {
                true => Next::Close,
                false => Next::Drop,
            };
        }
    };
    // A slot for every line, so that no head the core takes has too many lines for `httparse`.
    let mut lines = vec![httparse::EMPTY_HEADER; head.iter().filter(|&&b| b == b'\n').count()];
    let mut parsed = httparse::Request::new(&mut lines);
    // Not an HTTP/1.x head: closed unanswered.
    let Ok(httparse::Status::Complete(_)) = parsed.parse(head) else {
        return Next::Drop;
    };
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Next::Drop;
    };
    let headers: Vec<(&str, &[u8])> = parsed.headers.iter().map(|h| (h.name, h.value)).collect();
    let framing = Framing::of(&headers);
    let target = endpoint::split_target(target);
    let reads = endpoint::reads_body(&host.prefix, method, target.path);
    let read = if reads {
        if version == 1 && framing != Framing::None && expects_continue(&headers) {
            conn.write_continue();
        }
        conn.read_body(framing, deadline)
    } else {
        Ok(Zeroizing::new(Vec::new()))
    };
    let body = match &read {
        Ok(bytes) => RequestBody::Complete(bytes),
        Err(state) => *state,
    };
    let request = HttpRequest {
        method,
        path: target.path,
        query: target.query,
        authority: target.authority,
        headers: &headers,
        peer: Some(peer),
    };
    let answer = answer(host, &request, body);
    print_events(host);
    // Another request may follow only if the core does not close, the client keeps the
    // connection alive, and nothing of this request is left unread.
    let keep =
        !answer.close && keeps_alive(&headers, version) && (reads || framing == Framing::None);
    match conn.write_answer(&answer, !keep) {
        false => Next::Drop,
        true if keep => Next::KeepAlive,
        true => Next::Close,
    }
}

/// A request head, taken off the connection.
enum Head {
    /// Up to and including its empty line.
    Whole(Zeroizing<Vec<u8>>),
    /// Its first [`HEAD_BUFFER`] bytes: it did not fit.
    TooLarge(Zeroizing<Vec<u8>>),
}

/// How a request's body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes (more than none).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A `Content-Length` that is no number (or several that differ), a `Transfer-Encoding`
    /// whose last coding is not `chunked`: where the body ends cannot be told.
    Invalid,
}

impl Framing {
    fn of(headers: &[(&str, &[u8])]) -> Self {
        if let Some(codings) = values(headers, "transfer-encoding").last() {
            let last = codings.rsplit(|&b| b == b',').next().unwrap_or_default();
            return match last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                true => Self::Chunked,
                false => Self::Invalid,
            };
        }
        let mut length = None;
        for value in values(headers, "content-length") {
            let value = value.trim_ascii();
            let parsed = match value.iter().all(u8::is_ascii_digit) {
                true => std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok()),
                false => None,
            };
            match (parsed, length) {
                (Some(n), Some(m)) if n != m => return Self::Invalid,
                (Some(n), _) => length = Some(n),
                (None, _) => return Self::Invalid,
            }
        }
        match length {
            None | Some(0) => Self::None,
            Some(n) => Self::Length(n),
        }
    }
}

/// The values of header `name` (any case), in order.
fn values<'a>(headers: &'a [(&str, &'a [u8])], name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// The comma-separated tokens of header `name`, trimmed.
fn tokens<'a>(headers: &'a [(&str, &'a [u8])], name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    values(headers, name).flat_map(|v| v.split(|&b| b == b',').map(<[u8]>::trim_ascii))
}

/// Whether the connection may carry another request (RFC 9112 §9.3): HTTP/1.1 unless
/// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`, and never after a request
/// with both `Transfer-Encoding` and `Content-Length` (§6.1).
fn keeps_alive(headers: &[(&str, &[u8])], version: u8) -> bool {
    let says = |word: &[u8]| tokens(headers, "connection").any(|t| t.eq_ignore_ascii_case(word));
    let both = values(headers, "transfer-encoding").next().is_some()
        && values(headers, "content-length").next().is_some();
    !says(b"close") && !both && (version == 1 || says(b"keep-alive"))
}

/// Whether the client waits for `100 Continue` before it sends the body.
fn expects_continue(headers: &[(&str, &[u8])]) -> bool {
    tokens(headers, "expect").any(|t| t.eq_ignore_ascii_case(b"100-continue"))
}

/// A chunk's size: hex digits before any `;` extension.
fn chunk_size(line: &[u8]) -> Option<usize> {
    let digits = line.split(|&b| b == b';').next()?.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    usize::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Where a request head ends in `bytes` (just after its empty line), searching from `from`.
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    (from.saturating_sub(2)..bytes.len()).find_map(|at| match &bytes[at..] {
        [b'\n', b'\n', ..] => Some(at + 2),
        [b'\n', b'\r', b'\n', ..] => Some(at + 3),
        _ => None,
    })
}

/// Why reading stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// The deadline passed.
    TimedOut,
    /// The client closed the connection, or it failed.
    Closed,
}

impl From<Stop> for RequestBody<'static> {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::TimedOut => Self::TimedOut,
            Stop::Closed => Self::Broken,
        }
    }
}

/// One connection: its stream, and what was read from it but not used yet
/// (`buffer[start..end]`; zeroized when dropped, as it may hold a token or a secret).
struct Conn {
    stream: TcpStream,
    buffer: Zeroizing<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buffer: Zeroizing::new(vec![0; HEAD_BUFFER]),
            start: 0,
            end: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buffer[self.start..self.end]
    }

    /// Moves what is pending to the front of the buffer.
    fn compact(&mut self) {
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }

    /// Reads more bytes, by `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), Stop> {
        if self.end == self.buffer.len() {
            self.compact();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Stop::TimedOut);
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|_| Stop::Closed)?;
            match self.stream.read(&mut self.buffer[self.end..]) {
                Ok(0) => return Err(Stop::Closed),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Stop::TimedOut)
                }
                Err(_) => return Err(Stop::Closed),
            }
        }
    }

    /// The next request's head and its deadline (`request_timeout` after its first byte);
    /// `None` when the client closed, sent nothing for [`PATIENCE`], or did not send a whole
    /// head by the deadline.
    fn head(&mut self, request_timeout: Duration) -> Option<(Head, Instant)> {
        let idle = Instant::now() + PATIENCE;
        loop {
            // Empty lines before a request line are skipped (RFC 9112 §2.2).
            let blank = self
                .pending()
                .iter()
                .take_while(|&&b| matches!(b, b'\r' | b'\n'));
            self.start += blank.count();
            if self.start < self.end {
                break;
            }
            self.fill(idle).ok()?;
        }
        let deadline = Instant::now() + request_timeout;
        self.compact();
        let mut scanned = 0;
        loop {
            if let Some(end) = head_end(&self.buffer[..self.end], scanned) {
                self.start = end;
                return Some((
                    Head::Whole(Zeroizing::new(self.buffer[..end].to_vec())),
                    deadline,
                ));
            }
            if self.end == self.buffer.len() {
                self.start = self.end;
                return Some((
                    Head::TooLarge(Zeroizing::new(self.buffer.to_vec())),
                    deadline,
                ));
            }
            scanned = self.end;
            self.fill(deadline).ok()?;
        }
    }

    /// Reads the body of a route that takes one, by `deadline`: whole, or what became of it.
    fn read_body(
        &mut self,
        framing: Framing,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, RequestBody<'static>> {
        // Room for the whole body at once: a reallocation would leave an unzeroized copy behind.
        let mut body = Zeroizing::new(Vec::with_capacity(MAX_BODY_BYTES));
        match framing {
            Framing::None => {}
            Framing::Invalid => return Err(RequestBody::Broken),
            Framing::Length(length) => {
                let length = usize::try_from(length).unwrap_or(usize::MAX);
                if length > MAX_BODY_BYTES {
                    return Err(RequestBody::TooLarge);
                }
                self.take(&mut body, length, deadline)?;
            }
            Framing::Chunked => {
                loop {
                    let size = self.line(deadline, chunk_size)?;
                    let size = size.ok_or(RequestBody::Broken)?;
                    if size == 0 {
                        break;
                    }
                    if size > MAX_BODY_BYTES - body.len() {
                        return Err(RequestBody::TooLarge);
                    }
                    self.take(&mut body, size, deadline)?;
                    if !self.line(deadline, <[u8]>::is_empty)? {
                        return Err(RequestBody::Broken);
                    }
                }
                // Trailer lines, up to an empty one.
                let mut trailers = 0;
                loop {
                    match self.line(deadline, <[u8]>::len)? {
                        0 => break,
                        length => trailers += length,
                    }
                    if trailers > MAX_FRAMING_LINE {
                        return Err(RequestBody::Broken);
                    }
                }
            }
        }
        Ok(body)
    }

    /// Moves the next `length` bytes into `body`, by `deadline`.
    fn take(
        &mut self,
        body: &mut Vec<u8>,
        mut length: usize,
        deadline: Instant,
    ) -> Result<(), Stop> {
        while length > 0 {
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
                self.fill(deadline)?;
            }
            let piece = length.min(self.end - self.start);
            body.extend_from_slice(&self.buffer[self.start..self.start + piece]);
            self.start += piece;
            length -= piece;
        }
        Ok(())
    }

    /// The next line of chunked framing (at most [`MAX_FRAMING_LINE`] bytes), without its line
    /// break, given to `read`, by `deadline`.
    fn line<T>(
        &mut self,
        deadline: Instant,
        read: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, RequestBody<'static>> {
        let mut scanned = 0;
        loop {
            let pending = self.pending();
            if let Some(at) = pending[scanned..].iter().position(|&b| b == b'\n') {
                let line = &pending[..scanned + at];
                let value = read(line.strip_suffix(b"\r").unwrap_or(line));
                self.start += scanned + at + 1;
                return Ok(value);
            }
            if pending.len() > MAX_FRAMING_LINE {
                return Err(RequestBody::Broken);
            }
            scanned = pending.len();
            self.fill(deadline)?;
        }
    }

    /// Tells a client that waits for it to send its body.
    fn write_continue(&mut self) {
        let _ = self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    /// Writes the core's answer: its status, its header lines as they are, this shell's framing
    /// (`content-length`, `date`, and `connection: close` when `close`), its body. Whether it
    /// was written.
    fn write_answer(&mut self, answer: &ServerResponse, close: bool) -> bool {
        let reason = http::StatusCode::from_u16(answer.status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or_default();
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", answer.status);
        // A value no header line may carry (a control byte: a line break would end the line) is
        // left out, as the axum shell's `HeaderValue::from_str` leaves it out.
        let valid = |value: &str| {
            value
                .bytes()
                .all(|b| b == b'\t' || (b >= b' ' && b != 0x7f))
        };
        for (name, value) in answer.headers.iter().filter(|(_, value)| valid(value)) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let date = wall_now().format("%a, %d %b %Y %H:%M:%S GMT");
        head.push_str(&format!(
            "content-length: {}\r\ndate: {date}\r\n",
            answer.body.len()
        ));
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        // One write, into a buffer that holds it all (the body may hold a token).
        let mut bytes = Zeroizing::new(Vec::with_capacity(head.len() + answer.body.len()));
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend_from_slice(&answer.body);
        self.stream.write_all(&bytes).is_ok()
    }

    /// Closes the connection after an answer: no more is written, and what the client still
    /// sends is read and dropped for a while ([`LINGER`]), so that its answer is not lost to a
    /// reset.
    fn close(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let until = Instant::now() + LINGER;
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            (self.start, self.end) = (0, 0);
            match self.fill(until) {
                Ok(()) => dropped += self.end,
                Err(_) => break,
            }
        }
    }
}

/// The core's answer, asking the host's users when the route needs one.
fn answer(host: &Host, request: &HttpRequest<'_>, body: RequestBody<'_>) -> ServerResponse {
    let (now, mut rng, prefix) = (wall_now(), lanlink::os_rng(), host.prefix.as_str());
    let handle = |user: Option<&User>, rng: &mut _| {
        block_on(endpoint::handle(
            &host.server,
            now,
            rng,
            prefix,
            request,
            body,
            user,
        ))
    };
    match handle(None, &mut rng) {
        Handled::Answer(answer) => answer,
        Handled::Hold(held) => hold(host, &held),
        Handled::NeedsUser { .. } => match account(host, request) {
            Some(account) => match handle(Some(&User::new(account)), &mut rng) {
                Handled::Hold(held) => hold(host, &held),
                other => other
                    .into_answer()
                    .unwrap_or_else(ServerResponse::unauthorized),
            },
            None => ServerResponse::unauthorized(),
        },
        // A kind of outcome newer than this host: no answer it can give but a refusal.
        _ => ServerResponse::unauthorized(),
    }
}

/// How often a held request is looked at again here (this host hears no bell): a link or a
/// redemption answers a held request within this long.
const HOLD_POLL: Duration = Duration::from_millis(100);

/// A held request (revision 1.6), on this connection's thread: the core looks again every
/// [`HOLD_POLL`] until it answers (at the hold's end at the latest).
fn hold(host: &Host, held: &endpoint::Held) -> ServerResponse {
    loop {
        let now = wall_now();
        if let Some(answer) = block_on(endpoint::resume(&host.server, now, held)) {
            return answer;
        }
        let wait = (held.next_check(now) - now)
            .to_std()
            .unwrap_or_default()
            .clamp(Duration::from_millis(1), HOLD_POLL);
        std::thread::sleep(wait);
    }
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
    while let Some(event) = host.server.poll_event() {
        eprintln!("lanlink::server: {event:?}");
    }
}

/// Locks `mutex`; nothing here panics while holding one, so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wall_now() -> lanlink::chrono::DateTime<lanlink::chrono::Utc> {
    lanlink::chrono::DateTime::<lanlink::chrono::Utc>::from(SystemTime::now())
}
