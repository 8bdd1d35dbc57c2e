//! `http::serve` against hostile clients over loopback: one address, or the addresses of one
//! prefix, cannot take every connection, a body that trickles in or never comes is cut off by the request deadline, and
//! refusals are logged at a bounded rate.
//!
//! Client sockets are bound to other loopback addresses (127.0.0.2, …) before connecting to the
//! server on 127.0.0.1, so the server sees distinct clients: on Linux all of 127.0.0.0/8 is
//! loopback.
#![cfg(feature = "http")]

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lanlink::http::{self, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::server::{Level, Server, ServerConfig};
use lanlink::AccountId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

const P: &str = DEFAULT_PREFIX;
const ALICE: &str = "alice-token-0123456789abcdef";
/// The most any single network operation of a test may take.
const LIMIT: Duration = Duration::from_secs(10);

/// The server's routes on 127.0.0.1:0 with `config`.
async fn start(config: ServeConfig) -> SocketAddr {
    let server = Arc::new(Server::new(ServerConfig::default()).unwrap());
    let auth = Arc::new(BearerTokens::new(vec![(
        ALICE.to_owned(),
        AccountId::new("alice").unwrap(),
    )]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    tokio::spawn(http::serve(
        listener,
        http::server::router(server, auth, P),
        config,
        std::future::pending(),
    ));
    at
}

/// A connection to `at` from the loopback address `from`.
async fn connect_from(from: &str, at: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    socket.connect(at).await
}

/// An announcement's complete headers, announcing a body of `length` bytes.
fn announce_head(at: SocketAddr, length: usize) -> String {
    format!(
        "POST {P}/agent/announce HTTP/1.1\r\nHost: {at}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

fn discover_request(at: SocketAddr) -> String {
    format!("GET {P}/discover HTTP/1.1\r\nHost: {at}\r\nAuthorization: Bearer {ALICE}\r\n\r\n")
}

/// The status of a raw HTTP/1.1 answer.
fn status(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Whether the server has closed `stream` (end of stream or reset), without waiting.
fn closed_by_server(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_stalled_bodies_does_not_deny_another() {
    let config = ServeConfig::default();
    let per_client = config.max_connections_per_client;
    let at = start(config).await;

    // 127.0.0.2 opens as many connections as it can, each with complete headers and a body
    // that never arrives — more than the per-client cap.
    let attempts = 4 * per_client;
    let mut held = Vec::new();
    for _ in 0..attempts {
        let Ok(mut stream) = connect_from("127.0.0.2", at).await else {
            continue;
        };
        let _ = stream.write_all(announce_head(at, 1000).as_bytes()).await;
        held.push(stream);
    }
    // The server closes every connection beyond the cap at once, unanswered.
    let alive = timeout(LIMIT, async {
        loop {
            let alive = held.iter().filter(|s| !closed_by_server(s)).count();
            if alive <= per_client {
                break alive;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("extra connections closed");
    assert_eq!(
        alive, per_client,
        "the cap's connections stay open, waiting"
    );

    // Meanwhile 127.0.0.3 is served at once.
    let started = Instant::now();
    let mut other = connect_from("127.0.0.3", at).await.unwrap();
    other
        .write_all(discover_request(at).as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = timeout(Duration::from_secs(2), other.read(&mut answer))
        .await
        .expect("127.0.0.3 answered while 127.0.0.2 holds its cap")
        .unwrap();
    let answer = &answer[..n];
    assert_eq!(
        status(answer),
        Some(200),
        "{:?}",
        String::from_utf8_lossy(answer)
    );
    assert!(answer.ends_with(br#"{"agents":[],"revision":"1.6"}"#));
    assert!(started.elapsed() < Duration::from_secs(2));

    // And 127.0.0.2 gets a connection again once it lets one of them go.
    held.retain(|s| !closed_by_server(s));
    drop(held.pop());
    let served = timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(mut stream) = connect_from("127.0.0.2", at).await {
                let _ = stream.write_all(discover_request(at).as_bytes()).await;
                let mut answer = vec![0u8; 4096];
                if let Ok(Ok(n)) = timeout(Duration::from_secs(1), stream.read(&mut answer)).await {
                    if n > 0 {
                        break status(&answer[..n]);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a freed slot is reused");
    assert_eq!(served, Some(200));
}

/// Opens `n` connections from `from`, each with an announcement's complete headers and a body
/// that never comes, and returns those the server keeps open once it has closed all but `keep`
/// (or after [`LIMIT`], if it keeps more).
async fn hold(from: &str, at: SocketAddr, n: usize, keep: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        if let Ok(mut stream) = connect_from(from, at).await {
            let _ = stream.write_all(announce_head(at, 1000).as_bytes()).await;
            held.push(stream);
        }
    }
    let _ = timeout(LIMIT, async {
        while held.iter().filter(|s| !closed_by_server(s)).count() > keep {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    held.retain(|s| !closed_by_server(s));
    held
}

/// Whether a discovery from `from` is answered 200 within `within`.
async fn served(from: &str, at: SocketAddr, within: Duration) -> bool {
    let Ok(mut stream) = connect_from(from, at).await else {
        return false;
    };
    if stream
        .write_all(discover_request(at).as_bytes())
        .await
        .is_err()
    {
        return false;
    }
    let mut answer = vec![0u8; 4096];
    match timeout(within, stream.read(&mut answer)).await {
        Ok(Ok(n)) if n > 0 => status(&answer[..n]) == Some(200),
        _ => false,
    }
}

/// Issue 25, finding 7, over real sockets: the clients of one prefix (here the IPv4 /24
/// 127.0.0.0/24; distinct IPv6 /64s cannot be had on ::1, so `server::connections` tests those
/// with synthetic addresses) share its connections, each client within its own cap; a client
/// of another /24 is still served, and a slot given back is free again for the whole prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_one_prefix_share_its_connections() {
    let config = ServeConfig {
        max_connections_per_client: 3,
        ipv4_prefix_shares: vec![Level {
            prefix: 24,
            threshold: 5,
        }],
        ..ServeConfig::default()
    };
    let at = start(config).await;
    let mut first = hold("127.0.0.12", at, 6, 3).await;
    assert_eq!(first.len(), 3, "the client's own cap");
    let second = hold("127.0.0.13", at, 6, 2).await;
    assert_eq!(second.len(), 2, "what is left of the /24's share");
    // The /24 is full: a third client of it gets nothing, not even one connection.
    assert!(!served("127.0.0.14", at, Duration::from_secs(1)).await);
    // Another /24 is served at once.
    assert!(served("127.0.1.15", at, Duration::from_secs(2)).await);
    // One connection of the first client closes: its slot in the /24 comes back with it.
    drop(first.pop());
    let again = timeout(LIMIT, async {
        while !served("127.0.0.14", at, Duration::from_secs(1)).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        again.is_ok(),
        "the freed slot serves another client of the /24"
    );
    drop((first, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_missing_body_is_cut_off_by_the_request_deadline() {
    let config = ServeConfig {
        request_timeout: Duration::from_secs(1),
        ..ServeConfig::default()
    };
    assert_eq!(config.connection_timeout, Duration::from_secs(60));
    let at = start(config).await;
    let started = Instant::now();

    // One byte per second of a 100-byte body.
    let mut slow = connect_from("127.0.0.4", at).await.unwrap();
    slow.write_all(announce_head(at, 100).as_bytes())
        .await
        .unwrap();
    let (mut slow_read, mut slow_write) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if slow_write.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // Complete headers, and no body at all.
    let mut missing = connect_from("127.0.0.4", at).await.unwrap();
    missing
        .write_all(announce_head(at, 100).as_bytes())
        .await
        .unwrap();

    for (what, answer) in [
        ("slow body", read_all(&mut slow_read).await),
        ("missing body", read_all(&mut missing).await),
    ] {
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status(&answer), Some(408), "{what}: {text:?}");
        assert!(
            text.ends_with(r#"{"error":"request_timeout"}"#),
            "{what}: {text:?}"
        );
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{what}: {text:?}"
        );
    }
    // Closed after the deadline, long before the 60 s connection timeout.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    trickle.abort();
}

/// Everything until the server closes the connection (a reset after an answer is fine).
async fn read_all(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut answer = Vec::new();
    let _ = timeout(LIMIT, stream.read_to_end(&mut answer))
        .await
        .expect("closed in time");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_on_a_kept_alive_connection_has_its_own_deadline() {
    let config = ServeConfig {
        request_timeout: Duration::from_secs(1),
        ..ServeConfig::default()
    };
    let at = start(config).await;
    let mut stream = connect_from("127.0.0.6", at).await.unwrap();
    for round in 0..2 {
        // A complete (if invalid) announcement: answered `400 malformed`, never 408.
        let request = format!("{}{{}}", announce_head(at, 2));
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = timeout(LIMIT, stream.read(&mut answer))
            .await
            .expect("answered")
            .unwrap();
        let answer = &answer[..n];
        assert_eq!(
            status(answer),
            Some(400),
            "round {round}: {:?}",
            String::from_utf8_lossy(answer)
        );
        // Idle longer than the request deadline, within the header timeout.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

/// Log lines written by the test binary's subscriber.
fn captured() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        struct Capture;
        impl Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                captured().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(|| Capture)
            .init();
        Mutex::new(Vec::new())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_logged_at_a_bounded_rate() {
    let _ = captured();
    let config = ServeConfig {
        max_connections_per_client: 2,
        ..ServeConfig::default()
    };
    let at = start(config).await;
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..300 {
        if let Ok(stream) = connect_from("127.0.0.5", at).await {
            held.push(stream);
        }
    }
    // Wait until the server has refused all but 2.
    timeout(LIMIT, async {
        while held.iter().filter(|s| !closed_by_server(s)).count() > 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("extra connections closed");
    let elapsed = started.elapsed();
    let log = String::from_utf8_lossy(&captured().lock().unwrap()).into_owned();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("client=127.0.0.5"))
        .collect();
    // 298 refusals: one warning per started second at most, never one per refusal.
    let bound = elapsed.as_secs() as usize + 1;
    assert!(
        !warnings.is_empty() && warnings.len() <= bound,
        "{} warnings in {elapsed:?}: {warnings:#?}",
        warnings.len()
    );
    assert!(
        warnings[0].contains("per-client connection cap reached"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("per_client=1 "), "{warnings:?}");
}
