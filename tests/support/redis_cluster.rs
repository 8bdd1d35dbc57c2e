//! A fault-injecting TCP proxy in front of Redis, and a local Redis Cluster (three masters,
//! three replicas) started on free loopback ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The end of the RESP value starting at `buf[at..]`, if it is complete.
fn resp_end(buf: &[u8], at: usize) -> Option<usize> {
    let kind = *buf.get(at)?;
    let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let after = line_end + 2;
    let number = || -> Option<i64> {
        std::str::from_utf8(&buf[at + 1..line_end])
            .ok()?
            .parse()
            .ok()
    };
    match kind {
        b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => Some(after),
        b'$' | b'=' | b'!' => match number()? {
            n if n < 0 => Some(after),
            n => {
                let end = after + n as usize + 2;
                (buf.len() >= end).then_some(end)
            }
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number()?;
            let count = if matches!(kind, b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut end = after;
            for _ in 0..count.max(0) {
                end = resp_end(buf, end)?;
            }
            // An attribute precedes the value it annotates.
            if kind == b'|' {
                end = resp_end(buf, end)?;
            }
            Some(end)
        }
        _ => None,
    }
}

/// The name of the command (an array of bulk strings) in `raw`, upper-cased.
fn command_name(raw: &[u8]) -> String {
    let mut lines = raw.split(|&b| b == b'\n');
    let _count = lines.next();
    let _len = lines.next();
    lines
        .next()
        .map(|name| String::from_utf8_lossy(name).trim().to_uppercase())
        .unwrap_or_default()
}

/// Which command's reply the proxy drops, and what it saw.
#[derive(Default)]
pub struct Plan {
    /// Data commands seen (every command but the connection's own setup).
    seen: usize,
    /// The data command (by its index in `seen`) whose reply is dropped.
    drop_at: Option<usize>,
    /// The name of the command whose reply was dropped.
    dropped: Option<String>,
    /// Instead of dropping the reply and closing the connection, deliver it this late (after
    /// the client's response timeout: the write applied, the client timed out, the reply
    /// arrives for a request nobody waits for any more).
    pub late: Option<Duration>,
}

/// A TCP proxy in front of Redis that forwards one command at a time and can drop a reply.
pub struct Proxy {
    pub addr: SocketAddr,
    pub plan: Arc<Mutex<Plan>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::start_with(upstream, Arc::new(Mutex::new(Plan::default()))).await
    }

    /// A proxy sharing `plan` with others (one per cluster node: commands count across them).
    pub async fn start_with(upstream: SocketAddr, plan: Arc<Mutex<Plan>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::clone(&plan);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let plan = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, plan).await;
                    }
                });
            }
        });
        Self { addr, plan, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Drops the reply of the `n`th data command from now on (counting from 0).
    pub fn drop_reply(&self, n: Option<usize>) {
        let mut plan = self.plan.lock().expect("plan");
        let late = plan.late;
        *plan = Plan {
            drop_at: n,
            late,
            ..Plan::default()
        };
    }

    /// From now on, a planned reply is delivered `late` instead of dropped (`None`: dropped).
    pub fn delay_instead(&self, late: Option<Duration>) {
        self.plan.lock().expect("plan").late = late;
    }

    pub fn seen(&self) -> usize {
        self.plan.lock().expect("plan").seen
    }

    pub fn dropped(&self) -> Option<String> {
        self.plan.lock().expect("plan").dropped.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards each command from `client` to `server` and its reply back, one at a time; at the
/// planned command, forwards it, waits for Redis to apply it and answer, throws the answer away
/// and closes both connections.
async fn relay(mut client: TcpStream, mut server: TcpStream, plan: Arc<Mutex<Plan>>) {
    let (mut from_client, mut from_server) = (Vec::new(), Vec::new());
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let end = loop {
            if let Some(end) = resp_end(&from_client, 0) {
                break end;
            }
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => from_client.extend_from_slice(&chunk[..n]),
            }
        };
        let command: Vec<u8> = from_client.drain(..end).collect();
        let name = command_name(&command);
        let (drop_this, late) = {
            let mut plan = plan.lock().expect("plan");
            let late = plan.late;
            let drop_this = if matches!(
                name.as_str(),
                "HELLO" | "CLIENT" | "PING" | "SELECT" | "CLUSTER" | "READONLY" | "ASKING"
            ) {
                false
            } else {
                let this = plan.seen;
                plan.seen += 1;
                let drop_this = plan.drop_at == Some(this);
                if drop_this {
                    plan.dropped = Some(name.clone());
                }
                drop_this
            };
            (drop_this, late)
        };
        if server.write_all(&command).await.is_err() {
            return;
        }
        let end = loop {
            if let Some(end) = resp_end(&from_server, 0) {
                break end;
            }
            match server.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => from_server.extend_from_slice(&chunk[..n]),
            }
        };
        let reply: Vec<u8> = from_server.drain(..end).collect();
        match (drop_this, late) {
            // The command applied; its reply never arrives: the connection fails.
            (true, None) => return,
            // The command applied; its reply comes after the client gave up on it.
            (true, Some(late)) => tokio::time::sleep(late).await,
            (false, _) => {}
        }
        if client.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        // Never a port this process handed out before (see `support::free_port`).
        let port = super::free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A plain connection to one node.
pub fn node_connection(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    redis::cmd("PING").query::<String>(&mut conn).ok()?;
    Some(conn)
}

/// A local Redis Cluster: six `redis-server`s with `--cluster-enabled yes` on loopback ports,
/// joined by `redis-cli --cluster create … --cluster-replicas 1` (three masters, each with one
/// replica), killed on drop. The node timeout is 1 s, so a killed master's replica takes over
/// within a few seconds.
pub struct Cluster {
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Option<Child>>,
}

impl Cluster {
    pub fn start() -> Self {
        let ports: Vec<u16> = (0..6).map(|_| free_cluster_port()).collect();
        let dir = std::env::temp_dir().join(format!(
            "lanlink-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let mut children = Vec::new();
        for port in &ports {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("temp dir");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            children.push(Some(child));
        }
        let cluster = Self {
            ports,
            dir,
            children,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in &cluster.ports {
            while node_connection(*port).is_none() {
                assert!(Instant::now() < deadline, "redis-server did not answer");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        cluster.wait_healthy(Duration::from_secs(20));
        cluster
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// Whether every running node sees the cluster as `ok` with three masters, each with a
    /// connected replica.
    pub fn healthy(&self) -> bool {
        let running: Vec<u16> = self.running();
        running.iter().all(|port| {
            let Some(mut conn) = node_connection(*port) else {
                return false;
            };
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut conn)
                .unwrap_or_default();
            info.contains("cluster_state:ok")
        }) && self.masters().len() == 3
            && self.replicas_in_sync() >= running.len().saturating_sub(3)
    }

    /// Waits until the cluster is healthy.
    pub fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.healthy() {
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The ports of the running nodes.
    pub fn running(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .collect()
    }

    /// `CLUSTER NODES` as seen by a running node: (port, is master, flags).
    fn nodes(&self) -> Vec<(u16, bool, String)> {
        for port in self.running() {
            let Some(mut conn) = node_connection(port) else {
                continue;
            };
            let Ok(text) = redis::cmd("CLUSTER")
                .arg("NODES")
                .query::<String>(&mut conn)
            else {
                continue;
            };
            return text
                .lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split(' ').collect();
                    let addr = fields.get(1)?.split('@').next()?;
                    let port = addr.rsplit(':').next()?.parse().ok()?;
                    let flags = fields.get(2)?.to_string();
                    Some((port, flags.contains("master"), flags))
                })
                .collect();
        }
        Vec::new()
    }

    /// The ports of the masters that are up and serve slots.
    pub fn masters(&self) -> Vec<u16> {
        self.nodes()
            .into_iter()
            .filter(|(port, master, flags)| {
                *master && !flags.contains("fail") && self.running().contains(port)
            })
            .map(|(port, _, _)| port)
            .collect()
    }

    /// How many replicas report their master link up.
    fn replicas_in_sync(&self) -> usize {
        self.running()
            .into_iter()
            .filter(|port| {
                node_connection(*port)
                    .and_then(|mut conn| {
                        redis::cmd("INFO")
                            .arg("replication")
                            .query::<String>(&mut conn)
                            .ok()
                    })
                    .is_some_and(|info| info.contains("master_link_status:up"))
            })
            .count()
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        for port in self.masters() {
            let Some(mut conn) = node_connection(port) else {
                continue;
            };
            let slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query(&mut conn)
                .expect("keyslot");
            let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query(&mut conn)
                .expect("slots");
            for range in slots {
                let (Some(redis::Value::Int(lo)), Some(redis::Value::Int(hi))) =
                    (range.first(), range.get(1))
                else {
                    continue;
                };
                if (*lo..=*hi).contains(&slot) {
                    if let Some(redis::Value::Array(master)) = range.get(2) {
                        if let Some(redis::Value::Int(port)) = master.get(1) {
                            return *port as u16;
                        }
                    }
                }
            }
        }
        panic!("no master serves the slot of {key}");
    }

    /// Waits until every write the master at `port` took has reached its replica.
    pub fn wait_replicated(&self, port: u16) {
        let mut conn = node_connection(port).expect("master");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut conn)
                .expect("info");
            let field = |name: &str| -> Option<i64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
            };
            let master = field("master_repl_offset:");
            let replica = info
                .lines()
                .find(|l| l.starts_with("slave0:"))
                .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("offset=")))
                .and_then(|v| v.parse::<i64>().ok());
            if master.is_some() && master == replica {
                return;
            }
            assert!(Instant::now() < deadline, "the replica did not catch up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the node at `port` at once (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        let index = self.ports.iter().position(|p| *p == port).expect("a node");
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
