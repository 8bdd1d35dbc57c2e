//! A `redis-server` on a free loopback port, for the tests that need a real Redis.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use super::free_port;

/// Whether `program` is on PATH; when not, prints a skip line (or fails under `CI=true`).
pub fn have(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is not on PATH, and CI=true: install it (.ci/run does)"
        );
        println!("SKIP: {program} is not on PATH; install it to run this test");
    }
    found
}

/// A `redis-server` on a loopback port, killed on drop. Its data lives in a temporary
/// directory (append-only file, fsync always), so a restart on the same port finds it again.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("lanlink-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut redis = Self {
            port,
            dir,
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL: no shutdown save).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and directory, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = client.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every key and its value.
    pub fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let client = redis::Client::open(self.url()).expect("url");
        let mut conn = client.get_connection().expect("connect");
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("keys");
        keys.into_iter()
            .map(|key| {
                let value: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut conn).expect("get");
                (key, value)
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Redis key names of a server's records: named by `Records`, laid out by `RedisStore`.
pub trait RedisNames {
    /// A network's record.
    fn network_name(&self, network: &lanlink::PublicNetwork) -> String;
    /// A network's queued messages.
    fn messages_name(&self, network: &lanlink::PublicNetwork) -> String;
    /// A code's record.
    fn code_name(&self, key: &lanlink::code::CodeKey) -> String;
    /// A counter's record.
    fn counter_name(&self, key: &lanlink::server::CounterKey) -> String;
}

impl RedisNames for lanlink::server::Records<lanlink::server::redis::RedisStore> {
    fn network_name(&self, network: &lanlink::PublicNetwork) -> String {
        self.store().redis_key(&self.network_key(network))
    }

    fn messages_name(&self, network: &lanlink::PublicNetwork) -> String {
        self.store().redis_key(&self.messages_key(network))
    }

    fn code_name(&self, key: &lanlink::code::CodeKey) -> String {
        self.store().redis_key(&self.code_key(key))
    }

    fn counter_name(&self, key: &lanlink::server::CounterKey) -> String {
        self.store().redis_key(&self.counter_key(key))
    }
}
