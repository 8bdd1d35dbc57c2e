//! Embedding lanlink in a host service: a host axum app with its own routes, fallback and
//! session layer (tower-sessions), lanlink's server routes nested in it at `/lanlink`, an
//! `Authenticator` over the host's session, a `LinkHook` writing "device X belongs to user Y"
//! into the host's own table with the token's digest, a host route that authenticates devices
//! from that digest, and every server event as a JSON line in the host's audit log.
//!
//! ```text
//! cargo run --example embed
//! ```
//!
//! Runs the whole thing once on loopback and exits 0: the host app, an agent (with its local
//! endpoint), alice signing in through the host's `/login`, the device linked by auto-discovery
//! with her session cookie, the device calling the host's `/device/whoami` with its token, and
//! the host's own answers to an anonymous lanlink call and to an unknown path. Audit lines start
//! with `audit   | ` followed by one JSON object. No token or secret is printed.
//!
//! The host app itself is in `examples/embed/host.rs` (also driven by `tests/embed.rs`).

mod host;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanlink::agent::{Agent, AgentConfig, AgentStatus};
use lanlink::driver::{lock, run_agent, run_linker, DriverConfig, SharedAgent};
use lanlink::event::{AgentEvent, LinkerEvent, ServerEvent};
use lanlink::http::client::{Credential, HttpAgentClient, HttpLinkerClient};
use lanlink::http::reqwest::{self, header, StatusCode};
use lanlink::http::{self, ServeConfig, DEFAULT_PREFIX};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::DeviceInfo;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The host's audit log: one JSON line per server event (events carry no secrets).
fn audit(event: ServerEvent) {
    match serde_json::to_string(&event) {
        Ok(line) => println!("audit   | {line}"),
        Err(err) => eprintln!("audit   | unserializable event: {err}"),
    }
}

/// Serves the host app on a free loopback port.
async fn start_host() -> Result<(SocketAddr, Arc<host::HostDb>), Error> {
    let (app, db) = host::app(audit)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let at = listener.local_addr()?;
    // `http::serve` puts each connection's peer address in the request (lanlink resolves the
    // caller's network from it); any other server does with
    // `into_make_service_with_connect_info::<SocketAddr>()`.
    tokio::spawn(http::serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending(),
    ));
    Ok((at, db))
}

/// An agent with its local endpoint on a free loopback port, as a device on the LAN runs it.
async fn start_agent() -> Result<(SharedAgent, SocketAddr), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let at = listener.local_addr()?;
    let info = DeviceInfo::new("printer-1", "Voron 2.4", "lanlink-embed", "0.1.0")?;
    let config = AgentConfig::new(at.ip(), at.port(), info)
        .window(Duration::from_secs(120))
        .announce_interval(Duration::from_millis(500));
    let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng())?;
    let agent: SharedAgent = Arc::new(Mutex::new(agent));
    tokio::spawn(http::serve(
        listener,
        http::agent::router(Arc::clone(&agent), DEFAULT_PREFIX),
        ServeConfig::default(),
        std::future::pending(),
    ));
    Ok((agent, at))
}

/// The session cookie (`name=value`) a response set. This crate's reqwest is built without its
/// `cookies` feature, so the demo's "browser" keeps the cookie itself; a browser does this for
/// the host's page.
fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next())
        .find(|pair| pair.starts_with(&format!("{}=", host::SESSION_COOKIE)))
        .map(str::to_owned)
}

async fn body(response: reqwest::Response) -> String {
    response.text().await.unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (at, db) = start_host().await?;
    let base = format!("http://{at}");
    println!(
        "host    | listening on {base}: its own routes, lanlink nested at {}{}",
        host::MOUNT,
        host::LANLINK_PREFIX
    );

    // The device: local endpoint, then the agent driver (announce, receive, verify, redeem).
    let (agent, endpoint) = start_agent().await?;
    let device = lock(&agent).instance_id();
    println!("agent   | device {device} in linking mode, local endpoint on {endpoint}");
    let agent_task = {
        let agent = Arc::clone(&agent);
        let transport = HttpAgentClient::new(&base)?;
        tokio::spawn(async move {
            run_agent(
                &agent,
                &transport,
                &DriverConfig::default(),
                |event| match event {
                    AgentEvent::SecretServed { client } => {
                        println!("agent   | handed the local secret to {client} on the LAN")
                    }
                    AgentEvent::Linked { .. } => {
                        println!("agent   | linked: holds its device token")
                    }
                    AgentEvent::Stopped { reason } => println!("agent   | stopped: {reason:?}"),
                    _ => {}
                },
            )
            .await
        })
    };

    let web = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let discover = format!("{base}{DEFAULT_PREFIX}/discover");

    // Not signed in: lanlink's user routes answer with the host's own rejection.
    let anonymous = web.get(&discover).send().await?;
    println!(
        "host    | anonymous GET {DEFAULT_PREFIX}/discover: {} {}",
        anonymous.status().as_u16(),
        body(anonymous).await
    );

    // alice signs in through the host's own route; the host's session layer sets its cookie.
    let login = web
        .post(format!("{base}/login"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"user":"alice"}"#)
        .send()
        .await?;
    if login.status() != StatusCode::OK {
        return Err(format!("login failed: {}", login.status()).into());
    }
    let cookie = session_cookie(&login).ok_or("login set no session cookie")?;
    println!("user    | alice signed in through POST /login (session cookie kept, not shown)");
    let home = web
        .get(format!("{base}/"))
        .header(header::COOKIE, &cookie)
        .send()
        .await?;
    println!(
        "host    | GET / with her cookie: {} {}",
        home.status().as_u16(),
        body(home).await
    );

    // The linker, with alice's session cookie as its credential: discover, fetch the secret on
    // the LAN, link, wait for the agent to redeem.
    let linker_client = HttpLinkerClient::with_credential(
        web.clone(),
        &base,
        DEFAULT_PREFIX,
        DEFAULT_PREFIX,
        Credential::Cookie(cookie.clone().into()),
    );
    let mut linker = Linker::new(
        LinkerConfig::default(),
        Instant::now(),
        &mut lanlink::os_rng(),
    );
    let linked = run_linker(
        &mut linker,
        &linker_client,
        &linker_client,
        &DriverConfig::default(),
        |agents| agents.first().map(|a| a.instance_id),
        |event| match event {
            LinkerEvent::Discovered { agents } => {
                println!(
                    "linker  | alice's session sees {} device(s) on her network",
                    agents.len()
                )
            }
            LinkerEvent::LinkRequested { .. } => {
                println!("linker  | fetched the device's secret on the LAN; link requested")
            }
            LinkerEvent::Linked { instance_id } => {
                println!("linker  | device {instance_id} is linked to alice")
            }
            LinkerEvent::Failed { reason } => println!("linker  | failed: {reason}"),
            _ => {}
        },
    )
    .await?;
    let status = tokio::time::timeout(Duration::from_secs(30), agent_task).await??;
    if status != AgentStatus::Linked || linked != device {
        return Err(format!("the agent ended {status:?}").into());
    }
    let row = db.device(&device).ok_or("the hook wrote no row")?;
    println!(
        "host    | its table holds {} device: {device} -> {} (via {}, at {}; the token's digest, not the token)",
        db.device_count(),
        row.account,
        host::via_name(row.via),
        row.linked_at.format("%H:%M:%S UTC"),
    );

    // The device calls the host with its token; the host finds it by the stored digest.
    let token = lock(&agent).auth_token().ok_or("no token")?.to_hex();
    let whoami = web
        .get(format!("{base}/device/whoami"))
        .bearer_auth(token.as_str())
        .send()
        .await?;
    drop(token);
    if whoami.status() != StatusCode::OK {
        return Err(format!("whoami failed: {}", whoami.status()).into());
    }
    let answer: serde_json::Value = serde_json::from_str(&body(whoami).await)?;
    println!(
        "device  | GET /device/whoami with its token: device {} belongs to {}",
        answer["device"].as_str().unwrap_or("?"),
        answer["user"].as_str().unwrap_or("?")
    );
    let forged = lanlink::AuthToken::generate(&mut lanlink::os_rng()).to_hex();
    let wrong = web
        .get(format!("{base}/device/whoami"))
        .bearer_auth(forged.as_str())
        .send()
        .await?;
    println!(
        "device  | GET /device/whoami with a made-up token: {} {}",
        wrong.status().as_u16(),
        body(wrong).await
    );

    // The host's own fallback answers paths that are neither the host's nor lanlink's.
    let unknown = web.get(format!("{base}/no/such/page")).send().await?;
    println!(
        "host    | GET /no/such/page: {} {}",
        unknown.status().as_u16(),
        body(unknown).await
    );

    // Signed out, alice's old cookie no longer reaches lanlink's routes.
    web.post(format!("{base}/logout"))
        .header(header::COOKIE, &cookie)
        .send()
        .await?;
    let after = web
        .get(&discover)
        .header(header::COOKIE, &cookie)
        .send()
        .await?;
    println!(
        "host    | after POST /logout, GET {DEFAULT_PREFIX}/discover with the old cookie: {} {}",
        after.status().as_u16(),
        body(after).await
    );
    println!("done    | device {device} belongs to alice");
    Ok(())
}
