//! A server instance for the tests that run several: the built `server` example as a process
//! when cargo built it (a plain `cargo test --all-features` does), else an app served in
//! process. Stopped on drop.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use axum::Router;
use lanlink::http::{self, ServeConfig};
use lanlink::server::StoreKey;

/// The built `server` example, next to this test binary, if cargo built it.
pub fn server_binary() -> Option<PathBuf> {
    super::example::if_built("server")
}

/// One server instance: a process or an in-process app, with the address it listens on.
pub enum Instance {
    /// The example, as a child process.
    Process(Child, SocketAddr),
    /// An app served by this test process.
    InProcess(tokio::task::JoinHandle<()>, SocketAddr),
}

impl Instance {
    /// Starts the example at `binary` on a free loopback port for user `alice` with `token`,
    /// the store key `key`, quiet logs and the per-client connection cap raised (every test
    /// client is on loopback), plus `args`; returns once it printed its listening line.
    pub fn spawn(binary: &Path, token: &str, key: &StoreKey, args: &[&str]) -> Self {
        let mut child = Command::new(binary)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--user",
                &format!("alice={token}"),
            ])
            .args(["--max-connections-per-client", "512"])
            .args(args)
            .env("LANLINK_STORE_KEY", key.to_hex().as_str())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("server example starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listening line");
        let value: serde_json::Value = serde_json::from_str(&line).expect("json line");
        let addr = value["listening"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("listening address");
        Self::Process(child, addr)
    }

    /// Serves `app` in this process on a free loopback port, the per-client connection cap
    /// raised as for the example.
    pub async fn serve(app: Router) -> Self {
        println!("note: the server example is not built; in-process instances instead");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let serve_config = ServeConfig {
                max_connections_per_client: 512,
                ..ServeConfig::default()
            };
            let _ = http::serve(listener, app, serve_config, std::future::pending()).await;
        });
        Self::InProcess(task, addr)
    }

    /// `http://` and the address.
    pub fn base(&self) -> String {
        match self {
            Self::Process(_, addr) | Self::InProcess(_, addr) => format!("http://{addr}"),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        match self {
            Self::Process(child, _) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Self::InProcess(task, _) => task.abort(),
        }
    }
}
