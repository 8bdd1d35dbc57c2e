//! HTTPS to the server (feature `tls`): an agent and a linker link end to end through a lanlink
//! server behind TLS, with a CA and a server certificate this test makes at run time; a client
//! that does not trust that CA is refused at the handshake and never falls back to plain HTTP.
//!
//! The server is the crate's router over an in-memory store, served by hyper directly over each
//! TLS stream (tokio-rustls, on the aws-lc-rs provider that reqwest's `rustls` feature uses too),
//! with the TCP peer put in each request as [`Peer`], as `http::serve` does: the server sees the
//! client's own address, not a proxy's. The linker fetches the agent's secret over plain HTTP
//! from its local endpoint, as it always does. The example agent and linker link the same way
//! as processes, given the CA's file with `--ca-cert` (when cargo built them with `tls`).
#![cfg(all(feature = "tls", feature = "http-server"))]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use lanlink::agent::{AgentConfig, AgentStatus};
use lanlink::driver::{run_agent, DriverConfig, SharedAgent};
use lanlink::event::{AgentEvent, ServerEvent};
use lanlink::http::client::{
    default_client, default_client_with_roots, HttpAgentClient, HttpLinkerClient,
};
use lanlink::http::{self, BearerTokens, Peer, DEFAULT_PREFIX};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::server::{Events, MemoryStore, Server, ServerConfig};
use lanlink::transport::{LinkerServerTransport, TransportError};
use lanlink::{AccountId, DeviceInfo, PublicNetwork};
use support::linking::link_first;
use tokio_rustls::rustls;
use tower::ServiceExt;

const P: &str = DEFAULT_PREFIX;
const ALICE: &str = "alice-token-0123456789abcdef";
/// The most the whole link may take.
const LIMIT: Duration = Duration::from_secs(20);

/// A CA and a server certificate it signed, for `localhost` and `127.0.0.1`.
struct Pki {
    /// The CA's certificate, PEM: what a client trusts.
    ca_pem: String,
    /// The server's certificate chain and key.
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn make_pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "lanlink test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        chain: vec![cert.der().clone(), ca.der().clone()],
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

/// The server behind TLS on 127.0.0.1: its address and its events.
struct TlsServer {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<ServerEvent>>>,
    /// Handshakes that failed (a client that does not trust the CA).
    failed_handshakes: Arc<Mutex<u32>>,
}

async fn start_tls_server(pki: &Pki) -> TlsServer {
    // The provider named here, not a process-wide default: the one reqwest uses (aws-lc-rs), and
    // no `install_default` that another test in this process could race.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let store = Arc::new(MemoryStore::default());
    let service = Server::with_store(
        ServerConfig::default(),
        store,
        Events::sink(move |event| sink.lock().unwrap().push(event)),
    )
    .unwrap();
    let auth = Arc::new(BearerTokens::new(vec![(
        ALICE.to_owned(),
        AccountId::new("alice").unwrap(),
    )]));
    let app = http::server::router(Arc::new(service), auth, P).fallback(http::server::not_found);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failed_handshakes = Arc::new(Mutex::new(0));
    let failed = Arc::clone(&failed_handshakes);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            let failed = Arc::clone(&failed);
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(LIMIT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    _ => {
                        *failed.lock().unwrap() += 1;
                        return;
                    }
                };
                // The TCP peer, as `http::serve` gives it: the router resolves the client from it.
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(Peer(peer));
                        app.clone().oneshot(request)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsServer {
        addr,
        events,
        failed_handshakes,
    }
}

/// An agent listening on 127.0.0.1 (its local endpoint, plain HTTP as on any LAN).
async fn start_agent() -> (SharedAgent, SocketAddr) {
    support::net::start_agent(|addr| {
        let info = DeviceInfo::new("printer", "tls-test", "lanlink-test", "1.0").unwrap();
        AgentConfig::new(addr.ip(), addr.port(), info).window(Duration::from_secs(120))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_and_a_linker_link_over_https() {
    let pki = make_pki();
    let server = start_tls_server(&pki).await;
    let base = format!("https://localhost:{}", server.addr.port());
    let (agent, endpoint) = start_agent().await;

    // The agent: announces and redeems over HTTPS, trusting the test's CA.
    let client = default_client_with_roots(pki.ca_pem.as_bytes()).unwrap();
    let transport = HttpAgentClient::with_client(client.clone(), &base, P);
    let agent_events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&agent_events);
    let driven = Arc::clone(&agent);
    let agent_task = tokio::spawn(async move {
        run_agent(&driven, &transport, &DriverConfig::default(), |event| {
            seen.lock().unwrap().push(event);
        })
        .await
    });

    // The linker: the server over HTTPS, the agent's endpoint over plain HTTP.
    let linker_client = HttpLinkerClient::with_client(client, &base, P, P, ALICE);
    let mut linker = Linker::without_nonce(
        LinkerConfig {
            status_interval: Duration::from_millis(100),
            ..LinkerConfig::default()
        },
        Instant::now(),
    );
    let linked = tokio::time::timeout(
        LIMIT,
        link_first(
            &mut linker,
            &linker_client,
            &DriverConfig::default(),
            |_| {},
        ),
    )
    .await
    .expect("the linker finishes in time")
    .expect("linked");
    let status = tokio::time::timeout(LIMIT, agent_task)
        .await
        .expect("the agent finishes in time")
        .unwrap();
    assert_eq!(status, AgentStatus::Linked);
    let instance_id = lanlink::driver::lock(&agent).instance_id();
    assert_eq!(linked, instance_id);
    assert!(lanlink::driver::lock(&agent).auth_token().is_some());

    // The agent's endpoint was asked over plain HTTP at its own address.
    let agent_events = agent_events.lock().unwrap().clone();
    assert!(
        agent_events.iter().any(|event| matches!(
            event,
            AgentEvent::SecretServed { client } if *client == endpoint.ip()
        )),
        "{agent_events:?}"
    );
    // The server saw the agent's and the linker's own address through TLS, and linked them.
    let loopback = PublicNetwork::from_ip("127.0.0.1".parse().unwrap(), 64);
    let events = server.events.lock().unwrap().clone();
    assert!(
        events.iter().any(|event| matches!(
            event,
            ServerEvent::Announced { network, instance_id: id, .. }
                if *network == loopback && *id == instance_id
        )),
        "{events:?}"
    );
    assert!(
        events.iter().any(|event| matches!(
            event,
            ServerEvent::Linked { network, instance_id: id, manual: false, .. }
                if *network == loopback && *id == instance_id
        )),
        "{events:?}"
    );
    assert_eq!(*server.failed_handshakes.lock().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_ca_is_refused_and_never_falls_back() {
    let pki = make_pki();
    let server = start_tls_server(&pki).await;
    let base = format!("https://localhost:{}", server.addr.port());

    // The platform's roots only: the test's CA is not among them.
    let untrusting = HttpLinkerClient::with_client(default_client().unwrap(), &base, P, P, ALICE);
    match untrusting.discover().await {
        Err(TransportError::Unreachable(reason)) => {
            assert!(!reason.contains(ALICE), "{reason}");
        }
        other => panic!("an untrusted certificate must fail the request: {other:?}"),
    }
    // Another CA's client is refused the same way.
    let other = make_pki();
    let wrong_ca = default_client_with_roots(other.ca_pem.as_bytes()).unwrap();
    let untrusting = HttpLinkerClient::with_client(wrong_ca, &base, P, P, ALICE);
    assert!(matches!(
        untrusting.discover().await,
        Err(TransportError::Unreachable(_))
    ));
    // Both were refused at the handshake: no request reached the routes, in TLS or in the clear.
    let start = Instant::now();
    while *server.failed_handshakes.lock().unwrap() < 2 {
        assert!(
            start.elapsed() < LIMIT,
            "the server saw no failed handshake"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.events.lock().unwrap().is_empty());

    // The same server, trusted: discovery answers (an empty list), so the refusals above were
    // the certificate's doing.
    let trusting = HttpLinkerClient::with_client(
        default_client_with_roots(pki.ca_pem.as_bytes()).unwrap(),
        &base,
        P,
        P,
        ALICE,
    );
    let reply = trusting.discover().await.expect("discover over HTTPS");
    assert!(reply.agents.is_empty());
}

#[test]
fn a_root_file_without_a_certificate_is_an_error() {
    assert!(default_client_with_roots(b"").is_err());
    assert!(default_client_with_roots(b"-----BEGIN CERTIFICATE-----\nnot base64\n").is_err());
}

// ───────────────────────────── the examples, as processes ─────────────────────────────

use support::example::{if_built as example, Killed};

/// The example's stdout, line by line as JSON, on a channel.
fn json_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<serde_json::Value> {
    use std::io::BufRead;
    let (send, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let value = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
            if send.send(value).is_err() {
                break;
            }
        }
    });
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_agent_and_linker_link_over_https_with_ca_cert() {
    use std::process::{Command, Stdio};
    let (Some(agent_bin), Some(link_bin)) = (example("agent"), example("link")) else {
        println!("SKIP: the agent and link examples are not built (cargo test --features tls)");
        assert!(std::env::var("CI").is_err(), "CI builds the examples");
        return;
    };
    let pki = make_pki();
    let server = start_tls_server(&pki).await;
    let base = format!("https://localhost:{}", server.addr.port());
    let dir = std::env::temp_dir().join(format!("lanlink-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let token_file = dir.join("device.token");

    let mut agent = Command::new(agent_bin)
        .args([
            "--server",
            &base,
            "--listen",
            "127.0.0.1:0",
            "--window",
            "120",
        ])
        .arg("--ca-cert")
        .arg(&ca_file)
        .arg("--token-file")
        .arg(&token_file)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agent example starts");
    let lines = json_lines(&mut agent);
    let mut agent = Killed(agent);
    let next =
        |lines: &std::sync::mpsc::Receiver<serde_json::Value>| lines.recv_timeout(LIMIT).ok();
    // Its first line says where it listens, or it exited: built without `tls`?
    let Some(first) = next(&lines) else {
        let output = agent.0.wait_with_output_stderr();
        if output.contains("needs the feature tls") && std::env::var("CI").is_err() {
            println!("SKIP: the agent example was built without tls: {output}");
            return;
        }
        panic!("the agent example said nothing: {output}");
    };
    assert!(first["listening"].is_string(), "{first}");
    let discovering = next(&lines).expect("a second line");
    assert_eq!(discovering["state"], "discovering", "{discovering}");
    assert_eq!(discovering["event"], "discovery_started", "{discovering}");
    let instance_id = discovering["instance_id"].as_str().unwrap().to_owned();

    // The example linker, over HTTPS to the server and plain HTTP to the agent.
    let linker = tokio::task::spawn_blocking({
        let base = base.clone();
        let ca_file = ca_file.clone();
        move || {
            Command::new(link_bin)
                .args(["--server", &base, "--token", ALICE])
                .arg("--ca-cert")
                .arg(&ca_file)
                .env("RUST_LOG", "warn")
                .output()
                .expect("the link example runs")
        }
    });
    let linked = tokio::time::timeout(LIMIT, linker)
        .await
        .expect("the link example finishes in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&linked.stdout);
    assert!(
        linked.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&linked.stderr)
    );
    assert!(
        stdout.contains(&format!(
            r#""event":"linked","instance_id":"{instance_id}""#
        )),
        "{stdout}"
    );
    // The agent's last line: linked, its token written.
    let last = loop {
        let line = next(&lines).expect("the agent's linked line");
        if line["state"] == "linked" {
            break line;
        }
    };
    assert_eq!(last["instance_id"], instance_id.as_str());
    let status = agent.0.wait().unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().len(), 64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a child wrote on stderr, once it has exited.
trait StderrOnExit {
    fn wait_with_output_stderr(&mut self) -> String;
}

impl StderrOnExit for std::process::Child {
    fn wait_with_output_stderr(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut text = String::new();
        if let Some(mut err) = self.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}
