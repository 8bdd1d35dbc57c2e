//! The lanlink linker over HTTP: discovers an agent on this network, fetches its secret over the
//! LAN, links it to the user's account and waits until the agent has redeemed.
//!
//! ```text
//! cargo run --example link -- --server http://127.0.0.1:8080 --token TOKEN
//! cargo run --example link -- --server http://127.0.0.1:8080 --token TOKEN --code
//! cargo run --example link --features obico -- --server http://127.0.0.1:8080 --token TOKEN --profile obico
//! cargo run --example link --features obico -- --server ... --token TOKEN --profile obico --passcode K7QX2M9D
//! ```
//!
//! With `--profile obico` (feature `obico`) it links an unmodified Obico agent through the
//! server's Obico routes (discover, fetch the secret from the agent's
//! `/plugin/obico/grab-discovery-secret`, post the link), or claims the one-time passcode a
//! moonraker-obico agent shows (`--passcode`).
//!
//! With `--code` it only mints a manual code for the user to type into the agent. Prints JSON lines
//! on stdout; exits 0 when linked (or the code was minted), 1 otherwise.
//!
//! An `https://` server needs the feature `tls` (`cargo run --example link --features tls --
//! --server https://cloud.example --token TOKEN`); `--ca-cert ca.pem` trusts a private CA
//! besides the system's roots. Without the feature an `https://` URL is an error. The agent's
//! local endpoint is always asked over plain HTTP.

use std::time::Instant;

use clap::Parser;
use lanlink::driver::{run_linker, DriverConfig};
use lanlink::event::LinkerEvent;
use lanlink::http::client::{default_client, HttpLinkerClient};
use lanlink::http::DEFAULT_PREFIX;
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::transport::LinkerServerTransport;
use serde_json::json;

/// Links an agent to your account.
#[derive(Parser, Debug)]
#[command(about = "Discovers and links an agent, or mints a manual code with --code")]
struct Args {
    /// The server's base URL (`https://` needs the feature `tls`).
    #[arg(long)]
    server: String,
    /// A PEM file of root certificates to trust for the server besides the system's (a private
    /// cloud's CA); feature `tls`.
    #[arg(long)]
    ca_cert: Option<std::path::PathBuf>,
    /// Your bearer token on the server.
    #[arg(long)]
    token: String,
    /// Mint a manual code to type into the agent instead of auto-discovery.
    #[arg(long)]
    code: bool,
    /// Route prefix of the server and the agents.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    /// `lanlink`, or `obico` for Obico agents (feature `obico`).
    #[arg(long, default_value = "lanlink")]
    profile: String,
    /// With `--profile obico`: claim this one-time passcode instead of auto-discovery.
    #[arg(long)]
    passcode: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    match args.profile.as_str() {
        "lanlink" => {}
        #[cfg(feature = "obico")]
        "obico" => return link_obico(&args).await,
        other => {
            return Err(format!("unknown profile {other:?} (built with feature obico?)").into())
        }
    }
    let client = HttpLinkerClient::with_client(
        server_client(&args.server, args.ca_cert.as_deref())?,
        &args.server,
        &args.prefix,
        &args.prefix,
        &args.token,
    );
    if args.code {
        let reply = client.mint_code().await?;
        println!(
            "{}",
            json!({ "code": reply.code.expose(), "expires_at": reply.expires_at })
        );
        return Ok(());
    }
    let mut linker = Linker::new(
        LinkerConfig::default(),
        Instant::now(),
        &mut lanlink::os_rng(),
    );
    let result = run_linker(
        &mut linker,
        &client,
        &client,
        &DriverConfig::default(),
        |agents| {
            // Several agents shown (max_visible > 1): take the first; a real UI asks the user.
            agents.first().map(|a| a.instance_id)
        },
        |event| {
            let line = match &event {
                LinkerEvent::Discovered { agents } => {
                    json!({ "event": "discovered", "agents": agents })
                }
                LinkerEvent::SecretFetched { instance_id, from } => {
                    json!({ "event": "secret_fetched", "instance_id": instance_id, "from": from })
                }
                LinkerEvent::EndpointUnreachable { instance_id, endpoint } => {
                    json!({ "event": "endpoint_unreachable", "instance_id": instance_id, "endpoint": endpoint })
                }
                LinkerEvent::LinkRequested { instance_id } => {
                    json!({ "event": "link_requested", "instance_id": instance_id })
                }
                LinkerEvent::ShortCode {
                    instance_id,
                    short_code,
                } => json!({
                    "event": "short_code",
                    "instance_id": instance_id,
                    "short_code": short_code.to_string(),
                    "message": format!("If the device asks you to confirm, check that it shows {short_code} and approve it there."),
                }),
                LinkerEvent::LinkState { instance_id, state } => {
                    json!({ "event": "link_state", "instance_id": instance_id, "state": state })
                }
                LinkerEvent::Linked { instance_id } => {
                    json!({ "event": "linked", "instance_id": instance_id })
                }
                LinkerEvent::Failed { reason } => {
                    json!({ "event": "failed", "reason": reason.to_string() })
                }
                other => json!({ "event": format!("{other:?}") }),
            };
            println!("{line}");
        },
    )
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(err) => {
            eprintln!("linking failed: {err}");
            std::process::exit(1);
        }
    }
}

/// The client for `server`: HTTPS needs the feature `tls` (with it, `ca_cert` is a PEM file of
/// roots trusted besides the system's); without it an `https://` URL is refused here, never
/// tried over plain HTTP. Requests to the agent's local endpoint are plain HTTP either way.
fn server_client(
    server: &str,
    ca_cert: Option<&std::path::Path>,
) -> Result<lanlink::http::reqwest::Client, Box<dyn std::error::Error>> {
    #[cfg(feature = "tls")]
    {
        let _ = server;
        Ok(match ca_cert {
            Some(path) => lanlink::http::client::default_client_with_roots(&std::fs::read(path)?)?,
            None => default_client()?,
        })
    }
    #[cfg(not(feature = "tls"))]
    {
        if server
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            return Err(format!(
                "{server}: HTTPS needs the feature tls (cargo run --example link --features tls)"
            )
            .into());
        }
        if ca_cert.is_some() {
            return Err("--ca-cert needs the feature tls".into());
        }
        Ok(default_client()?)
    }
}

/// Links an Obico agent (or claims a passcode) through the server's Obico routes.
#[cfg(feature = "obico")]
async fn link_obico(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    use lanlink::obico::linker::ObicoLinker;
    let client = server_client(&args.server, args.ca_cert.as_deref())?;
    let linker = ObicoLinker::with_client(client, &args.server, &args.token);
    let result = match &args.passcode {
        Some(passcode) => linker
            .claim_passcode(passcode)
            .await
            .map(|()| json!({ "event": "passcode_claimed" })),
        None => linker.link_first().await.map(|device| {
            json!({
                "event": "link_queued",
                "device_id": lanlink::obico::device_id(&device.device_id),
                "host_or_ip": device.host_or_ip.to_string(),
                "hostname": device.hostname,
            })
        }),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            Ok(())
        }
        Err(err) => {
            eprintln!("linking failed: {err}");
            std::process::exit(1);
        }
    }
}
