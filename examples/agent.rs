//! A lanlink agent over HTTP: announces to the server, serves its secret on the LAN, and links.
//!
//! ```text
//! cargo run --example agent -- --server http://127.0.0.1:8080 --listen 127.0.0.1:0
//! ```
//!
//! Prints on stdout one JSON line once its local endpoint listens, then one per event: the
//! event's own JSON (`lanlink::event::AgentEvent`'s shape, tagged by `event`) with a `state` key
//! (`discovering` with its `instance_id` first, last `linked` with the token file's path, or
//! `stopped` with the reason). A manual code can be given with `--code`, or typed on stdin. Logs
//! go to stderr.
//!
//! An `https://` server needs the feature `tls` (`cargo run --example agent --features tls --
//! --server https://cloud.example`); `--ca-cert ca.pem` trusts a private CA besides the system's
//! roots. Without the feature an `https://` URL is an error. The local endpoint is plain HTTP.
//!
//! With `--confirm approve` or `--confirm compare` (revision 1.4) a link waits for the owner:
//! the agent prints a `confirmation_requested` line (the account's name and, under `compare`,
//! the short code the linking page shows too) and takes `approve` or `refuse` on stdin
//! (`--auto-approve` approves by itself, for tests and demos).
//!
//! A device with several addresses (a second interface, a container's internal address behind a
//! published port) listens on all of them and names them (revision 1.3 candidates):
//!
//! ```text
//! cargo run --example agent -- --server https://cloud.example --listen 0.0.0.0:5000 \
//!     --private-ip 172.17.0.2 --advertise 192.168.1.20:5000
//! ```

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ipnet::IpNet;
use lanlink::agent::{Agent, AgentConfig, AgentStatus};
use lanlink::confirm::{Confirmation, Decision};
use lanlink::driver::{lock, run_agent, DriverConfig, SharedAgent};
use lanlink::event::AgentEvent;
use lanlink::http::{self, client::HttpAgentClient, ServeConfig, DEFAULT_PREFIX};
use lanlink::{DeviceInfo, LinkCode, LocalPolicy};
use serde_json::json;

/// Runs a lanlink agent.
#[derive(Parser, Debug)]
#[command(about = "Runs a lanlink agent: announces, serves its secret on the LAN, links")]
struct Args {
    /// The server's base URL (`https://` needs the feature `tls`).
    #[arg(long)]
    server: String,
    /// A PEM file of root certificates to trust for the server besides the system's (a private
    /// cloud's CA); feature `tls`.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// The server's base URL over the other address family (dual stack: e.g. `--server
    /// http://203.0.113.1 --also-server http://[2001:db8::1]`): the agent announces over both
    /// at once (`lanlink::dual::DualStack`), so a browser on either family finds it.
    #[arg(long)]
    also_server: Option<String>,
    /// Address of the local secret endpoint (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The private address to announce (default: the listen address's IP).
    #[arg(long)]
    private_ip: Option<IpAddr>,
    /// The endpoint linkers try first (protocol revision 1.3), e.g. the host's LAN address when
    /// this agent runs in a container with its port published: `--advertise 192.168.1.20:5000`.
    /// The announced private address then becomes a candidate.
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// A further endpoint of this agent (another interface's address and the port it is served
    /// on), tried after the first (revision 1.3). Repeatable; at most 8 are announced;
    /// container-internal and link-local ones go last.
    #[arg(long = "candidate")]
    candidates: Vec<SocketAddr>,
    /// A proxy network whose forwarding headers are trusted. Repeatable; default none.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<IpNet>,
    /// A network counted as local. Repeatable; replaces the default (RFC 1918, loopback,
    /// link-local, ULA).
    #[arg(long = "local-net")]
    local_nets: Vec<IpNet>,
    /// An origin allowed to fetch the secret from a browser (e.g. https://cloud.example).
    #[arg(long = "allow-origin")]
    allow_origins: Vec<String>,
    /// A host name the endpoint may be addressed as, besides IP literals.
    #[arg(long = "host-name")]
    host_names: Vec<String>,
    /// The discovery window in seconds (at most 600).
    #[arg(long, default_value_t = 600)]
    window: u64,
    /// How long, in seconds, the server is asked to hold each announcement open so that a
    /// link arrives at once (revision 1.6; at most 25, 0 never asks).
    #[arg(long, default_value_t = 20)]
    hold: u64,
    /// The device's host name shown to the user.
    #[arg(long, default_value = "lanlink-device")]
    hostname: String,
    /// The device model shown to the user.
    #[arg(long, default_value = "example")]
    model: String,
    /// A manual code to redeem at start (otherwise a line on stdin is taken as one).
    #[arg(long)]
    code: Option<String>,
    /// Where to write the auth token once linked (default: a file in the temp directory).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Route prefix (server and local endpoint).
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    /// Confirmation policy: none, approve or compare (revision 1.4).
    #[arg(long, default_value = "none")]
    confirm: String,
    /// Approve a confirmation request by itself (after printing it).
    #[arg(long)]
    auto_approve: bool,
}

/// An event as this example prints it: the event's own JSON (`AgentEvent`'s `Serialize`, tagged
/// by `event`), plus the `state` key the example has always printed (`discovering` and
/// `redeeming` for `discovery_started` and `redeem_started`, else the event's name) and, where it
/// helps a person, a `message`.
fn event_json(event: &AgentEvent) -> serde_json::Value {
    let mut line = serde_json::to_value(event).unwrap_or_else(|_| json!({ "event": event.name() }));
    let state = match event {
        AgentEvent::DiscoveryStarted { .. } => "discovering",
        AgentEvent::RedeemStarted { .. } => "redeeming",
        other => other.name(),
    };
    let message = match event {
        AgentEvent::ConfirmationRequested {
            display_name,
            short_code: Some(code),
            ..
        } => Some(format!(
            "{display_name} wants to link this device. If the linking page shows {code}, type approve; otherwise type refuse."
        )),
        AgentEvent::ConfirmationRequested { display_name, .. } => Some(format!(
            "{display_name} wants to link this device. Type approve if that is you, otherwise refuse."
        )),
        // The server's view in plain words, for the device's user.
        AgentEvent::Visibility { visibility } => {
            Some(lanlink::agent::describe_visibility(*visibility).to_owned())
        }
        _ => None,
    };
    if let Some(fields) = line.as_object_mut() {
        fields.insert("state".to_owned(), state.into());
        if let Some(message) = message {
            fields.insert("message".to_owned(), message.into());
        }
    }
    line
}

/// The client for `server`: HTTPS needs the feature `tls` (with it, `ca_cert` is a PEM file of
/// roots trusted besides the system's); without it an `https://` URL is refused here, never
/// tried over plain HTTP.
fn server_client(
    server: &str,
    ca_cert: Option<&std::path::Path>,
) -> Result<lanlink::http::reqwest::Client, Box<dyn std::error::Error>> {
    #[cfg(feature = "tls")]
    {
        let _ = server;
        Ok(match ca_cert {
            Some(path) => http::client::default_client_with_roots(&std::fs::read(path)?)?,
            None => http::client::default_client()?,
        })
    }
    #[cfg(not(feature = "tls"))]
    {
        if server
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            return Err(format!(
                "{server}: HTTPS needs the feature tls (cargo run --example agent --features tls)"
            )
            .into());
        }
        if ca_cert.is_some() {
            return Err("--ca-cert needs the feature tls".into());
        }
        Ok(http::client::default_client()?)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // The clients first: a server URL this build cannot reach is an error before anything runs.
    let server_http = server_client(&args.server, args.ca_cert.as_deref())?;
    let also_http = match &args.also_server {
        Some(other) => Some(server_client(other, args.ca_cert.as_deref())?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let info = DeviceInfo::new(
        &args.hostname,
        &args.model,
        "lanlink-example-agent",
        env!("CARGO_PKG_VERSION"),
    )?;
    let policy = match args.confirm.as_str() {
        "none" => Confirmation::None,
        "approve" => Confirmation::Approve,
        "compare" => Confirmation::Compare,
        other => return Err(format!("--confirm: none, approve or compare, not {other}").into()),
    };
    // No crate in the dependency tree lists the host's interfaces, so further addresses come
    // from the operator (`--advertise`, `--candidate`).
    let mut config = AgentConfig::new(args.private_ip.unwrap_or(addr.ip()), addr.port(), info)
        .window(Duration::from_secs(args.window))
        .hold(Duration::from_secs(args.hold))
        .trusted_proxies(args.trusted_proxies)
        .candidates(args.candidates)
        .confirmation(policy);
    if let Some(endpoint) = args.advertise {
        config = config.advertise(endpoint);
    }
    if !args.local_nets.is_empty() {
        config = config.local_policy(LocalPolicy::new(args.local_nets));
    }
    for origin in &args.allow_origins {
        config = config.allow_origin(origin);
    }
    for name in &args.host_names {
        config = config.allow_host(name);
    }
    let agent: SharedAgent = Arc::new(Mutex::new(Agent::new(
        config,
        Instant::now(),
        &mut lanlink::os_rng(),
    )?));
    let endpoints: Vec<String> = lock(&agent)
        .endpoints()
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "{}",
        json!({ "listening": addr.to_string(), "endpoints": endpoints })
    );

    let endpoint =
        http::agent::router(Arc::clone(&agent), &args.prefix).fallback(http::server::not_found);
    tokio::spawn(http::serve(
        listener,
        endpoint,
        ServeConfig::default(),
        std::future::pending(),
    ));

    let enter = |agent: &SharedAgent, text: &str| match LinkCode::parse(text.trim()) {
        _ if matches!(text.trim(), "approve" | "refuse") => {
            let decision = match text.trim() {
                "approve" => Decision::Approve,
                _ => Decision::Refuse,
            };
            if let Err(err) = lock(agent).confirm(Instant::now(), decision) {
                eprintln!("nothing to {}: {err}", text.trim());
            }
        }
        Some(code) => {
            if let Err(err) = lock(agent).enter_code(Instant::now(), code) {
                eprintln!("cannot enter a code now: {err}");
            }
        }
        None => eprintln!("not a code"),
    };
    if let Some(code) = &args.code {
        enter(&agent, code);
    } else {
        let stdin_agent = Arc::clone(&agent);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if !line.trim().is_empty() {
                    enter(&stdin_agent, &line);
                }
            }
        });
    }

    let transport = HttpAgentClient::with_client(server_http, &args.server, &args.prefix);
    let auto_agent = Arc::clone(&agent);
    let on_event = |event: AgentEvent| {
        // The last line, `linked`, is printed below with the token file's path.
        if !matches!(event, AgentEvent::Linked { .. }) {
            println!("{}", event_json(&event));
        }
        if args.auto_approve && matches!(event, AgentEvent::ConfirmationRequested { .. }) {
            // The driver holds the agent while it hands out events: decide once it lets go.
            let agent = Arc::clone(&auto_agent);
            std::thread::spawn(move || {
                let _ = lock(&agent).confirm(Instant::now(), Decision::Approve);
            });
        }
    };
    let status = match (&args.also_server, also_http) {
        (Some(other), Some(other_http)) => {
            let other = HttpAgentClient::with_client(other_http, other, &args.prefix);
            let dual = lanlink::dual::DualStack::new(transport, other);
            run_agent(&agent, &dual, &DriverConfig::default(), on_event).await
        }
        _ => run_agent(&agent, &transport, &DriverConfig::default(), on_event).await,
    };
    if status == AgentStatus::Linked {
        let path = args.token_file.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("lanlink-{}.token", lock(&agent).instance_id()))
        });
        let (instance_id, token) = {
            let guard = lock(&agent);
            (guard.instance_id(), guard.auth_token().map(|t| t.to_hex()))
        };
        if let Some(token) = token {
            write_private(&path, token.as_bytes())?;
        }
        println!(
            "{}",
            json!({ "event": "linked", "state": "linked", "instance_id": instance_id, "token_file": path })
        );
        Ok(())
    } else {
        std::process::exit(1);
    }
}

/// Writes `bytes` to a new file readable only by its owner (where the platform allows).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}
