//! Every request a linker makes to a device refuses redirects, whatever client the embedder gave
//! it for the server: a device (or anything at a candidate address) that answers with a redirect
//! cannot send the linker to a host that no address rule checked. The browser linker's twin of
//! this test is in `tests/browser/unit.mjs` ("a device's redirect is refused").
#![cfg(feature = "http-client")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lanlink::http::client::HttpLinkerClient;
use lanlink::transport::{LinkerAgentTransport, DEFAULT_PREFIX};
use lanlink::InstanceId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback HTTP server that answers every request with `reply(port of the request)` and
/// counts the requests; it closes each connection after one answer.
async fn serve(
    reply: impl Fn() -> String + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        // Bounded: a test makes a handful of requests at most.
        for _ in 0..16 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = socket.write_all(reply().as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (addr, hits)
}

/// A device that redirects every request to `elsewhere`, which would answer a secret of its own.
async fn redirecting_device() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let body = format!(
        r#"{{"local_secret":"{}","device_secret":"{}"}}"#,
        "cd".repeat(32),
        "cd".repeat(32)
    );
    let (elsewhere, elsewhere_hits) = serve(move || {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    })
    .await;
    let (device, device_hits) = serve(move || {
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{elsewhere}/elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    })
    .await;
    (device, device_hits, elsewhere_hits)
}

/// The embedder's client follows redirects (reqwest's default): the secret fetch does not.
#[tokio::test]
async fn the_rust_linker_refuses_a_devices_redirect_even_over_a_client_that_follows_them() {
    let (device, device_hits, elsewhere_hits) = redirecting_device().await;
    let follows = lanlink::http::reqwest::Client::new();
    let linker = HttpLinkerClient::with_client(
        follows,
        "http://127.0.0.1:9",
        DEFAULT_PREFIX,
        DEFAULT_PREFIX,
        "token",
    );
    let fetched = linker
        .fetch_secret(device, &InstanceId::from_bytes([5; 16]))
        .await;
    assert!(
        fetched.is_err(),
        "a redirect was followed to a secret: {fetched:?}"
    );
    assert_eq!(device_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

/// The Obico profile's linker, likewise.
#[cfg(feature = "obico")]
#[tokio::test]
async fn the_obico_linker_refuses_a_devices_redirect_even_over_a_client_that_follows_them() {
    use lanlink::obico::linker::{ObicoDevice, ObicoLinker};
    let (device, device_hits, elsewhere_hits) = redirecting_device().await;
    let linker = ObicoLinker::with_client(
        lanlink::http::reqwest::Client::new(),
        "http://127.0.0.1:9",
        "token",
    );
    let fetched = linker
        .fetch_secret(&ObicoDevice {
            device_id: InstanceId::from_bytes([5; 16]),
            host_or_ip: device.ip(),
            port: device.port(),
            hostname: String::new(),
            agent: String::new(),
        })
        .await;
    assert!(fetched.is_err(), "a redirect was followed to a secret");
    assert_eq!(device_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}
