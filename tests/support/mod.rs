//! Helpers shared by test files (each file uses some of them).
#![allow(dead_code)]

#[cfg(all(feature = "http-client", feature = "tokio"))]
pub mod burst;
pub mod example;
#[cfg(feature = "redis")]
pub mod failed_link;
pub mod gated;
#[cfg(feature = "tokio")]
pub mod held;
#[cfg(all(feature = "redis", feature = "http"))]
pub mod instance;
#[cfg(feature = "tokio")]
pub mod linking;
#[cfg(feature = "http")]
pub mod lose_reply;
#[cfg(all(feature = "http-server", feature = "http-client"))]
pub mod net;
#[cfg(feature = "obico")]
pub mod obico_agent;
#[cfg(feature = "redis")]
pub mod redis_cluster;
#[cfg(feature = "redis")]
pub mod redis_server;
pub mod steps;

/// A free loopback port, and never one this process handed out before: a test that stops its
/// server and starts it again on the same port (a broker or Redis restart) finds the port still
/// its own, not handed to a test running beside it (whose server would then answer its clients).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if given.insert(port) {
            return port;
        }
    }
}

/// An announcement with known keys (`n` picks them) for an agent at `private_ip`.
pub fn announcement(n: u32, private_ip: &str) -> (lanlink::wire::Announce, lanlink::LocalSecret) {
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(&n.to_be_bytes());
    key[31] = 1;
    let mut secret = [0u8; 32];
    secret[..4].copy_from_slice(&n.to_be_bytes());
    secret[31] = 2;
    let key = lanlink::secret::PresenceKey::from_bytes(key);
    let secret = lanlink::LocalSecret::from_bytes(secret);
    let id = key.instance_id();
    let announce = lanlink::wire::Announce::new(
        id,
        private_ip.parse().expect("ip"),
        8080,
        lanlink::DeviceInfo::default(),
        secret.commitment(&id),
        key,
    );
    (announce, secret)
}
