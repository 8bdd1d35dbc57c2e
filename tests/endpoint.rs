//! The agent's local endpoint is one core function (`lanlink::endpoint::handle`): the axum
//! adapter over real loopback HTTP answers exactly what the function answers when called by
//! hand with the same request — status, every header the core sets, and the body — for served,
//! refused, malformed, preflight and unknown requests.
#![cfg(feature = "http-server")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lanlink::agent::{Agent, AgentConfig};
use lanlink::driver::{lock, SharedAgent};
use lanlink::endpoint::{self, LocalRequest};
use lanlink::http::{self, serve, ServeConfig, DEFAULT_PREFIX};
use lanlink::DeviceInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start() -> (SharedAgent, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = AgentConfig::new(addr.ip(), addr.port(), DeviceInfo::default())
        .allow_origin("https://cloud.example");
    let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap();
    let agent: SharedAgent = Arc::new(Mutex::new(agent));
    let app = http::agent::router(Arc::clone(&agent), DEFAULT_PREFIX);
    tokio::spawn(serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending(),
    ));
    (agent, addr)
}

/// Sends `method target` with `headers` over a fresh connection; returns the status, the header
/// lines (lowercase names) and the body.
async fn over_http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, bytes[split + 4..].to_vec())
}

#[tokio::test]
async fn the_adapter_answers_exactly_what_the_core_function_answers() {
    let (agent, addr) = start().await;
    let id = lock(&agent).instance_id().to_string();
    let host = addr.to_string();
    let p = DEFAULT_PREFIX;
    let secret = format!("{p}/secret?instance_id={id}");
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        ("GET", secret.clone(), vec![("host", &host)]),
        (
            "GET",
            secret.clone(),
            vec![("host", &host), ("origin", "https://cloud.example")],
        ),
        (
            "GET",
            secret.clone(),
            vec![("host", &host), ("origin", "https://evil.example")],
        ),
        ("GET", secret.clone(), vec![("host", "rebind.example")]),
        (
            "GET",
            secret.clone(),
            vec![("host", &host), ("host", &host)],
        ),
        (
            "GET",
            format!("{p}/secret?instance_id={id}&instance_id={id}"),
            vec![("host", &host)],
        ),
        (
            "GET",
            format!("{p}/secret?instance_id=someone-else"),
            vec![("host", &host)],
        ),
        ("GET", format!("{p}/secret"), vec![("host", &host)]),
        (
            "POST",
            secret.clone(),
            vec![("host", &host), ("content-length", "0")],
        ),
        (
            "OPTIONS",
            secret.clone(),
            vec![
                ("host", &host),
                ("origin", "https://cloud.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-private-network", "true"),
            ],
        ),
        (
            "OPTIONS",
            secret.clone(),
            vec![
                ("host", &host),
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ],
        ),
        ("GET", format!("{p}/nope"), vec![("host", &host)]),
        ("DELETE", format!("{p}/popup"), vec![("host", &host)]),
    ];
    for (method, target, headers) in &cases {
        let (status, got_headers, body) = over_http(addr, method, target, headers).await;
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target.as_str(), None),
        };
        let header_bytes: Vec<(&str, &[u8])> =
            headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        let request = LocalRequest {
            method,
            path,
            query,
            authority: None,
            headers: &header_bytes,
            peer: Some("127.0.0.1".parse().unwrap()),
        };
        let want = endpoint::handle(
            &mut lock(&agent),
            Instant::now(),
            &mut lanlink::os_rng(),
            DEFAULT_PREFIX,
            &request,
        );
        let what = format!("{method} {target} {headers:?}");
        assert_eq!(status, want.status, "{what}");
        assert_eq!(body, want.body.to_vec(), "{what}");
        for (name, value) in &want.headers {
            assert!(
                got_headers.iter().any(|(n, v)| n == name && v == value),
                "{what}: {name}: {value} missing from {got_headers:?}"
            );
        }
    }
    // A sample of the answers themselves, as PROTOCOL.md gives them.
    let (status, _, body) =
        over_http(addr, "GET", &format!("{p}/secret"), &[("host", &host)]).await;
    assert_eq!(
        (status, body.as_slice()),
        (400, &br#"{"error":"malformed"}"#[..])
    );
    let (status, _, _) = over_http(addr, "HEAD", &secret, &[("host", &host)]).await;
    assert_eq!(status, 405, "HEAD would serve without a body");
}
