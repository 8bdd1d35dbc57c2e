//! Click → linked over real sockets (issue 23): from the link request's acceptance (its `202`)
//! to the agent ending `Linked`, and to the page's status request saying `linked`, with 0, 1,000
//! and 5,000 idle agents held by the server, on one instance (in-memory store) and across two
//! instances sharing one Redis (the link accepted on one, the agent and the page held on the
//! other). Held requests (revision 1.6) against polling (the agent's 2 s announce interval and the
//! page's 1 s status poll), in the same run. Prints p50 and p99 over at least 200 links per row,
//! and the server's resident memory per idle agent (the growth of this process's RSS while the
//! idle agents are connected; they run in a child process, so only the server's side counts).
//!
//! ```text
//! cargo bench --bench instant --features redis
//! LANLINK_BENCH_QUICK=1 cargo bench --bench instant --features redis   # 0 and 1,000 idle only
//! ```
//!
//! The delays count from the moment the linker has the `202`: the server rings the agent's bell
//! before it writes that answer, so on loopback a held agent is often linked by then (a delay
//! near 0). Each row runs in a process of its own, so its memory figure is its own; a row counts
//! the links that completed (`links`) and takes its percentiles over them.
//!
//! Bounds: every idle agent is one connection (and one task) in the child process and one in
//! this one; the measured links run 25 at a time, each with its own agent, client and task, all
//! dropped after its row. It raises its open-file limit to 12,000 (within the hard limit; it
//! says what it needs when the hard limit is lower and skips the rows that need more). Without
//! `redis-server` on the `PATH` the two-instance rows are skipped, saying so.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanlink::agent::{Agent, AgentConfig, AgentStatus, SecretRequest};
use lanlink::driver::{run_agent, DriverConfig, SharedAgent};
use lanlink::event::AgentEvent;
use lanlink::http::client::HttpAgentClient;
use lanlink::http::hold::{Bell, LinkBell};
use lanlink::http::{self, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::secret::PresenceKey;
use lanlink::server::{Backend, Server, ServerConfig};
use lanlink::wire::{self, Announce, LinkRequest, LinkState, LinkStatusReply};
use lanlink::{AccountId, DeviceInfo, LocalSecret};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const TOKEN: &str = "bench-token-0001";
/// Links measured per row.
const LINKS: usize = 200;
/// Links in flight at once.
const BATCH: usize = 25;
/// Open files this bench asks for.
const NOFILE: u64 = 12_000;
/// The child process's role: run idle agents.
const IDLE_ROLE: &str = "LANLINK_BENCH_IDLE_AGENTS";
/// The child process's role: run one row.
const SCENARIO_ROLE: &str = "LANLINK_BENCH_SCENARIO";

fn main() {
    if let Ok(spec) = std::env::var(IDLE_ROLE) {
        idle_agents(&spec);
        return;
    }
    if let Ok(spec) = std::env::var(SCENARIO_ROLE) {
        one_scenario(&spec);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then only a smoke run.
    let bench = std::env::args().any(|a| a == "--bench");
    let quick = !bench || std::env::var_os("LANLINK_BENCH_QUICK").is_some();
    let files = raise_nofile();
    let idle_counts: Vec<usize> = if quick {
        vec![0, 1_000]
    } else {
        vec![0, 1_000, 5_000]
    };
    let redis = RedisServer::start();
    println!("click → linked over loopback HTTP; {LINKS} links per row, {BATCH} at a time, each row in a process of its own");
    println!(
        "{:<10} {:<8} {:>6} | {:>5} | {:>9} {:>9} | {:>9} {:>9} | {:>12}",
        "instances",
        "mode",
        "idle",
        "links",
        "agent p50",
        "agent p99",
        "page p50",
        "page p99",
        "RSS/idle"
    );
    for instances in [1, 2] {
        if instances == 2 && redis.is_none() {
            println!("(two instances skipped: no redis-server on the PATH)");
            continue;
        }
        for &idle in &idle_counts {
            if (idle as u64) * 2 + 2_000 > files {
                println!(
                    "({idle} idle skipped: needs {} open files, have {files})",
                    idle * 2 + 2_000
                );
                continue;
            }
            for held in [true, false] {
                let url = redis.as_ref().map(RedisServer::url).unwrap_or_default();
                let spec = format!("{instances};{idle};{held};{url}");
                let output = std::process::Command::new(std::env::current_exe().expect("exe"))
                    .env(SCENARIO_ROLE, spec)
                    .output()
                    .expect("a scenario");
                let text = String::from_utf8_lossy(&output.stdout);
                let row = text
                    .lines()
                    .find_map(|l| l.strip_prefix("ROW "))
                    .unwrap_or("failed");
                println!(
                    "{:<10} {:<8} {:>6} | {row}",
                    instances,
                    if held { "held" } else { "polling" },
                    idle,
                );
            }
        }
    }
}

/// One row, in a process of its own (so that its memory figure is its own): `instances;idle;
/// held;redis url`. Prints `ROW` and the row's figures.
fn one_scenario(spec: &str) {
    let parts: Vec<&str> = spec.splitn(4, ';').collect();
    let instances: usize = parts[0].parse().expect("instances");
    let idle: usize = parts[1].parse().expect("idle");
    let held: bool = parts[2].parse().expect("held");
    let redis = parts.get(3).filter(|url| !url.is_empty()).copied();
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let row = rt.block_on(scenario(instances, idle, held, redis));
    println!(
        "ROW {:>5} | {:>7.1}ms {:>7.1}ms | {:>7.1}ms {:>7.1}ms | {:>12}",
        row.links,
        row.agent.0,
        row.agent.1,
        row.page.0,
        row.page.1,
        row.rss_per_idle
            .map_or("-".to_owned(), |b| format!("{:.1} KiB", b / 1024.0)),
    );
}

/// Raises this process's soft open-file limit to [`NOFILE`] (or the hard limit, if lower);
/// the limit it has.
fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let want = NOFILE.min(hard);
    let current = limit.current.unwrap_or(u64::MAX);
    if current < want {
        let raised = rustix::process::Rlimit {
            current: Some(want),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_err() {
            return current;
        }
    }
    if hard < NOFILE {
        println!("note: the hard open-file limit is {hard}; this bench wants {NOFILE}");
    }
    want.max(current.min(want))
}

/// This process's resident memory, in bytes.
fn rss() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib * 1024.0)
}

struct Row {
    /// Links that completed (of [`LINKS`]).
    links: usize,
    /// (p50, p99) in ms.
    agent: (f64, f64),
    page: (f64, f64),
    rss_per_idle: Option<f64>,
}

fn config() -> ServerConfig {
    ServerConfig::default().trusted_proxies(vec!["127.0.0.1/32".parse().unwrap()])
}

fn serve_config() -> ServeConfig {
    ServeConfig {
        max_connections: 11_000,
        max_connections_per_client: 11_000,
        ipv4_prefix_shares: Vec::new(),
        ipv6_prefix_shares: Vec::new(),
        ..ServeConfig::default()
    }
}

/// One server instance: its address, and how many requests it holds.
struct Instance {
    addr: SocketAddr,
    listened: Box<dyn Fn() -> usize + Send + Sync>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start<S: Backend + 'static>(
    server: Server<S>,
    bell: Arc<dyn Bell>,
    listened: Box<dyn Fn() -> usize + Send + Sync>,
) -> Instance {
    let auth = Arc::new(BearerTokens::new(vec![(
        TOKEN.into(),
        AccountId::new("bench").expect("account"),
    )]));
    let app = http::server::router_with_bell(Arc::new(server), auth, DEFAULT_PREFIX, bell);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = http::serve(listener, app, serve_config(), std::future::pending()).await;
    });
    Instance {
        addr,
        listened,
        task,
    }
}

async fn instances(count: usize, redis: Option<&str>) -> Vec<Instance> {
    if count == 1 {
        let bell = LinkBell::default();
        let counted = bell.clone();
        let server = Server::new(config()).expect("config");
        return vec![start(server, Arc::new(bell), Box::new(move || counted.listened())).await];
    }
    use lanlink::http::hold::RedisBell;
    use lanlink::server::redis::{RedisStore, RedisStoreConfig};
    use lanlink::server::{Events, Records, RecordsConfig, StoreKey};
    let url = redis.expect("redis").to_owned();
    let prefix = format!("bench{}", rand_u32());
    let mut out = Vec::new();
    for _ in 0..count {
        let store = RedisStore::connect(RedisStoreConfig::new(url.as_str()).prefix(&prefix))
            .await
            .expect("redis store");
        let records = Records::new(store, RecordsConfig::new(StoreKey::from_bytes([7; 32])));
        let server = Server::with_store(config(), records, Events::discard()).expect("config");
        let bell = RedisBell::connect(std::slice::from_ref(&url), &format!("{prefix}:bell"))
            .await
            .expect("bell");
        let counted = bell.clone();
        out.push(start(server, Arc::new(bell), Box::new(move || counted.listened())).await);
    }
    out
}

fn rand_u32() -> u32 {
    use rand::RngCore;
    lanlink::os_rng().next_u32()
}

async fn scenario(count: usize, idle: usize, held: bool, redis: Option<&str>) -> Row {
    let servers = instances(count, redis).await;
    // Warm up: one link, so that lazily made state does not count as the idle agents'.
    let _ = measure(&servers, 1, held, 2).await;
    let before = rss();
    let child = (idle > 0).then(|| spawn_idle(&servers, idle, held));
    if idle > 0 {
        let start = Instant::now();
        let listened = || servers.iter().map(|s| (s.listened)()).sum::<usize>();
        if held {
            while listened() < idle && start.elapsed() < Duration::from_secs(120) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            // Polling agents are not held: give every one time for a few polls.
            tokio::time::sleep(Duration::from_secs(8)).await;
        }
    }
    let rss_per_idle = (idle > 0).then(|| (rss() - before).max(0.0) / idle as f64);
    let (agent, page) = measure(&servers, LINKS, held, 1).await;
    drop(child);
    drop(servers);
    Row {
        links: agent.len(),
        agent: percentiles(agent),
        page: percentiles(page),
        rss_per_idle,
    }
}

fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples.get(index).copied().unwrap_or(f64::NAN)
    };
    (at(0.50), at(0.99))
}

/// The child process of idle agents, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_idle(servers: &[Instance], idle: usize, held: bool) -> Child {
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    let spec = format!(
        "{idle};{};{}",
        if held { 20_000 } else { 0 },
        addrs.join(",")
    );
    let child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env(IDLE_ROLE, spec)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("idle agents");
    Child(child)
}

/// The public address of idle agent `n`, or of measured link `n` (`group` 1): a network each.
fn public_ip(group: u8, n: usize) -> IpAddr {
    let n = n as u32;
    IpAddr::V4(Ipv4Addr::new(
        100 + group,
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ))
}

/// The child: `count` agents, each on a connection of its own and in a network of its own,
/// announcing with a hold of `hold_ms` (or every 2 s with none) until killed.
fn idle_agents(spec: &str) {
    let mut parts = spec.split(';');
    let count: usize = parts.next().and_then(|c| c.parse().ok()).expect("count");
    let hold: u32 = parts.next().and_then(|c| c.parse().ok()).expect("hold");
    let addrs: Vec<SocketAddr> = parts
        .next()
        .expect("addrs")
        .split(',')
        .map(|a| a.parse().expect("addr"))
        .collect();
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        for n in 0..count {
            let addr = addrs[n % addrs.len()];
            tokio::spawn(idle_agent(addr, n, hold));
            if n % 100 == 99 {
                // Do not flood the accept queue.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        std::future::pending::<()>().await;
    });
}

async fn idle_agent(addr: SocketAddr, n: usize, hold: u32) {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&(n as u64).to_be_bytes());
    key[31] = 9;
    let key = PresenceKey::from_bytes(key);
    let id = key.instance_id();
    let secret = LocalSecret::from_bytes([3; 32]);
    let mut announce = Announce::new(
        id,
        "192.168.1.50".parse().unwrap(),
        8080,
        DeviceInfo::default(),
        secret.commitment(&id),
        key,
    );
    if hold > 0 {
        announce = announce.with_hold(hold);
    }
    let body = wire::encode(&announce);
    let head = format!(
        "POST {DEFAULT_PREFIX}/agent/announce HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\nx-forwarded-for: {}\r\ncontent-length: {}\r\n\r\n",
        public_ip(0, n),
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    loop {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut stream = BufReader::new(stream);
        loop {
            let sent = Instant::now();
            if stream.get_mut().write_all(&request).await.is_err() {
                break;
            }
            if read_response(&mut stream).await.is_none() {
                break;
            }
            // Polling: the next announcement an interval after this one was sent.
            let next = sent + Duration::from_secs(2);
            tokio::time::sleep_until(next.into()).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads one HTTP/1.1 response with a `content-length` body; `None` when the connection ends.
async fn read_response(stream: &mut BufReader<tokio::net::TcpStream>) -> Option<()> {
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(())
}

/// Links `links` fresh agents, [`BATCH`] at a time: each link accepted by the first instance,
/// its agent and its page held by (or polling) the last. The delays (ms) from each `202` to the
/// agent's `Linked` and to the page's `linked`.
async fn measure(
    servers: &[Instance],
    links: usize,
    held: bool,
    group: u8,
) -> (Vec<f64>, Vec<f64>) {
    let accept = servers[0].addr;
    let wait_on = servers[servers.len() - 1].addr;
    let next = Arc::new(AtomicUsize::new(0));
    let (mut agent_ms, mut page_ms) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < links {
        let batch = BATCH.min(links - done);
        let flows: Vec<_> = (0..batch)
            .map(|_| {
                let n = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(one_link(accept, wait_on, held, public_ip(group, n)))
            })
            .collect();
        for flow in flows {
            if let Ok(Some((agent, page))) = flow.await {
                agent_ms.push(agent);
                page_ms.push(page);
            }
        }
        done += batch;
    }
    (agent_ms, page_ms)
}

/// One link: an agent announcing to `wait_on` from `ip`'s network; once it is announcing (and,
/// held, once its held request is in), a link accepted by `accept`; the page's status asked of
/// `wait_on`.
async fn one_link(
    accept: SocketAddr,
    wait_on: SocketAddr,
    held: bool,
    ip: IpAddr,
) -> Option<(f64, f64)> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", ip.to_string().parse().ok()?);
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(40))
        .build()
        .ok()?;
    let config =
        AgentConfig::new("192.168.1.50".parse().ok()?, 8080, DeviceInfo::default()).hold(if held {
            Duration::from_secs(20)
        } else {
            Duration::ZERO
        });
    let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).ok()?;
    let agent: SharedAgent = Arc::new(Mutex::new(agent));
    let transport =
        HttpAgentClient::with_client(client.clone(), &format!("http://{wait_on}"), DEFAULT_PREFIX);
    let linked_at = Arc::new(Mutex::new(None));
    let driver = {
        let (agent, linked_at) = (Arc::clone(&agent), Arc::clone(&linked_at));
        tokio::spawn(async move {
            run_agent(&agent, &transport, &DriverConfig::default(), |event| {
                if let AgentEvent::Linked { .. } = event {
                    *linked_at.lock().unwrap() = Some(Instant::now());
                }
            })
            .await
        })
    };
    // The first announcement states the server's revision; the held one follows an interval
    // after it. Click once it is in.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    // A click at any moment of the agent's announce interval, not in step with it.
    let phase = u64::from(rand_u32() % 2_000);
    tokio::time::sleep(Duration::from_millis(phase)).await;
    let (id, secret) = {
        let mut agent = agent.lock().unwrap();
        let id = agent.instance_id();
        let text = id.to_string();
        let request = SecretRequest {
            peer: "192.168.1.20".parse().ok()?,
            forwarded: Default::default(),
            host: Some("192.168.1.50:8080"),
            origin: None,
            instance_id: &text,
        };
        let reply = agent.handle_secret_request(Instant::now(), &request).ok()?;
        (id, reply.local_secret)
    };
    let link = wire::encode(&LinkRequest::new(id, secret)).to_vec();
    let response = client
        .post(format!("http://{accept}{DEFAULT_PREFIX}/link"))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN)
        .body(link)
        .send()
        .await
        .ok()?;
    let accepted = Instant::now();
    if response.status() != 202 {
        driver.abort();
        return None;
    }
    // The page: held status requests, or one a second.
    let status_url = format!("http://{wait_on}{DEFAULT_PREFIX}/link/{id}");
    // As the page does: held, it asks again at once after a held answer or a move of the
    // state, else no sooner than a second after it asked.
    let mut seen = LinkState::Pending;
    let page_linked = loop {
        let url = if held {
            format!("{status_url}?hold_ms=20000")
        } else {
            status_url.clone()
        };
        let asked = Instant::now();
        let reply = client.get(url).bearer_auth(TOKEN).send().await.ok()?;
        let status: LinkStatusReply =
            wire::decode(&reply.bytes().await.ok()?, wire::MAX_MESSAGE_BYTES).ok()?;
        match status.state {
            LinkState::Linked => break Instant::now(),
            state @ (LinkState::Pending | LinkState::Delivered) => {
                let moved = state != seen;
                seen = state;
                let quick = Instant::now() < asked + Duration::from_millis(50);
                if !held || (quick && !moved) {
                    tokio::time::sleep_until((asked + Duration::from_secs(1)).into()).await;
                }
            }
            _ => return None,
        }
    };
    let status = tokio::time::timeout(Duration::from_secs(30), driver)
        .await
        .ok()?
        .ok()?;
    if status != AgentStatus::Linked {
        return None;
    }
    let agent_linked = (*linked_at.lock().unwrap())?;
    let ms = |at: Instant| at.saturating_duration_since(accepted).as_secs_f64() * 1e3;
    Some((ms(agent_linked), ms(page_linked)))
}

/// A `redis-server` on a free loopback port, stopped when dropped.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(5) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self { child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
