//! All three parties in one process, over real HTTP on loopback sockets, on an in-memory store:
//! the server, an agent with its local endpoint, and the user's linker. Prints each protocol step,
//! then two attacks that fail, then the manual-code fallback.
//!
//! The first agent holds the `compare` confirmation policy (revision 1.4): it does not redeem
//! until its owner approves, and it shows a short code that the linker shows too. Here the
//! "owner" checks that the two codes match and approves.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! With `--serve` it then keeps the server running with its linking page, starts one more agent
//! that allows the page's origin, prints the page's URL and the demo token, and waits until that
//! agent is linked from a browser (then 5 s more, for the page to show it) or Ctrl-C.
//!
//! On loopback every party shares the address 127.0.0.1, so the server groups them into one
//! "public network" and the agent counts the linker as local, as on a real home LAN.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use lanlink::agent::{Agent, AgentConfig};
use lanlink::confirm::{Confirmation, Decision, ShortCode};
use lanlink::driver::{lock, run_agent, run_linker, DriverConfig, SharedAgent};
use lanlink::event::{AgentEvent, LinkerEvent};
use lanlink::http::client::{HttpAgentClient, HttpLinkerClient};
use lanlink::http::{self, server::router, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::server::{Server, ServerConfig};
use lanlink::transport::{LinkerServerTransport, TransportError};
use lanlink::wire::LinkRequest;
use lanlink::{AccountId, DeviceInfo, LocalSecret};

/// Runs the whole protocol once over loopback HTTP and prints each step.
#[derive(Parser, Debug)]
#[command(about = "Runs server, agent and linker in one process over loopback HTTP")]
struct Args {
    /// Also print the server's audit log (on stderr).
    #[arg(long)]
    verbose: bool,
    /// Afterwards, serve the linking page and one more agent until it is linked from a browser.
    #[arg(long)]
    serve: bool,
}

const TOKEN: &str = "alice-demo-token";

async fn start_server() -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let server = Arc::new(Server::new(ServerConfig::default())?);
    let alice = AccountId::new("alice").ok_or("account id")?;
    let auth = Arc::new(BearerTokens::new(vec![(TOKEN.to_owned(), alice)]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = router(server, auth, DEFAULT_PREFIX)
        .merge(http::web::router(DEFAULT_PREFIX))
        .fallback(http::server::not_found);
    tokio::spawn(http::serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending(),
    ));
    Ok(addr)
}

async fn start_agent(
    name: &str,
    page_origin: &str,
    policy: Confirmation,
) -> Result<(SharedAgent, SocketAddr), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let info = DeviceInfo::new(name, "Voron 2.4", "lanlink-quickstart", "0.1.0")?;
    let config = AgentConfig::new(addr.ip(), addr.port(), info)
        .window(Duration::from_secs(120))
        .allow_origin("https://cloud.example")
        .allow_origin(page_origin)
        .confirmation(policy);
    let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng())?;
    let agent: SharedAgent = Arc::new(Mutex::new(agent));
    let endpoint = http::agent::router(Arc::clone(&agent), DEFAULT_PREFIX);
    tokio::spawn(http::serve(
        listener,
        endpoint,
        ServeConfig::default(),
        std::future::pending(),
    ));
    Ok((agent, addr))
}

fn print_agent(event: &AgentEvent) {
    let text = match event {
        AgentEvent::DiscoveryStarted { instance_id, .. } => {
            format!("1. discovery on: instance_id {instance_id}, fresh 32-byte secret, announcing its commitment every 2 s")
        }
        AgentEvent::SecretServed { client } => {
            format!("5. served the secret to local caller {client} (Host and Origin checked)")
        }
        AgentEvent::SecretRefused { peer, reason } => {
            format!("   refused a secret request from {peer}: {}", reason.code())
        }
        AgentEvent::SecretVerified => {
            "7. the forwarded secret matches (constant-time compare)".into()
        }
        AgentEvent::ConfirmationRequested {
            display_name,
            short_code: Some(code),
            ..
        } => format!(
            "7b. screen: \"{display_name} wants to link this printer. Code {code}. Approve?\""
        ),
        AgentEvent::ConfirmationRequested { display_name, .. } => {
            format!("7b. screen: \"{display_name} wants to link this printer. Approve?\"")
        }
        AgentEvent::RedeemStarted { manual: false } => "   redeeming the code".into(),
        AgentEvent::RedeemStarted { manual: true } => "   redeeming a manual code".into(),
        AgentEvent::Linked { instance_id } => {
            format!("8. linked: {instance_id} holds an auth token")
        }
        AgentEvent::Stopped { reason } => format!("   discovery stopped: {reason:?}"),
        _ => return,
    };
    println!("agent   | {text}");
}

fn print_linker(event: &LinkerEvent) {
    let text = match event {
        LinkerEvent::Discovered { agents } => {
            let names: Vec<String> = agents
                .iter()
                .map(|a| {
                    format!(
                        "{} \"{}\" at {}:{}",
                        a.instance_id,
                        a.info.hostname(),
                        a.private_ip,
                        a.port
                    )
                })
                .collect();
            format!("4. discovered on my network: {}", names.join(", "))
        }
        LinkerEvent::SecretFetched { from, .. } => {
            format!("5. fetched the secret over the LAN, from {from}")
        }
        LinkerEvent::EndpointUnreachable { endpoint, .. } => {
            format!("   {endpoint} did not answer: trying the device's next address")
        }
        LinkerEvent::ShortCode { short_code, .. } => {
            format!("6b. page: \"if your printer asks, check that it shows {short_code} and approve it there\"")
        }
        LinkerEvent::LinkRequested { .. } => {
            "6. server checked my network and the secret against the commitment: link pending"
                .into()
        }
        LinkerEvent::LinkState { state, .. } => format!("   link state: {state:?}"),
        LinkerEvent::Linked { instance_id } => format!("9. done: {instance_id} is linked to alice"),
        LinkerEvent::Failed { reason } => format!("   failed: {reason}"),
        _ => return,
    };
    println!("linker  | {text}");
}

/// The owner at the device: approves when the device shows the page's code, refuses otherwise
/// (or when the page shows none within 5 s).
fn owner_decides(agent: &SharedAgent, page_code: &Mutex<Option<ShortCode>>, shown: ShortCode) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let page = loop {
        let page = *page_code.lock().unwrap_or_else(|p| p.into_inner());
        if page.is_some() || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let decision = if page == Some(shown) {
        println!("owner   | the printer shows {shown}, the page shows the same: approve");
        Decision::Approve
    } else {
        println!("owner   | the printer shows {shown}, the page does not: refuse");
        Decision::Refuse
    };
    if let Err(err) = lock(agent).confirm(Instant::now(), decision) {
        println!("owner   | too late: {err}");
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.verbose {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("lanlink=info")
            .init();
    }
    let server = start_server().await?;
    let base = format!("http://{server}");
    println!("server  | listening on {server} (in-memory store)");

    // The agent: local endpoint, then the driver (announce, receive, verify, redeem).
    let (agent, endpoint) = start_agent("printer-1", &base, Confirmation::Compare).await?;
    println!("agent   | local endpoint on {endpoint} (confirmation policy: compare)");
    // The page's short code, for the "owner" below to compare with the device's.
    let page_code: Arc<Mutex<Option<ShortCode>>> = Arc::default();
    let agent_task = {
        let agent = Arc::clone(&agent);
        let transport = HttpAgentClient::new(&base)?;
        let page_code = Arc::clone(&page_code);
        tokio::spawn(async move {
            run_agent(&agent, &transport, &DriverConfig::default(), |e| {
                print_agent(&e);
                if let AgentEvent::ConfirmationRequested {
                    short_code: Some(shown),
                    ..
                } = e
                {
                    // The owner looks at both screens. The driver holds the agent while it
                    // hands out events, so the decision comes from another thread.
                    let (agent, page_code) = (Arc::clone(&agent), Arc::clone(&page_code));
                    std::thread::spawn(move || owner_decides(&agent, &page_code, shown));
                }
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("server  | 2-3. recorded the announcement under network 127.0.0.1");

    // The linker: discover, fetch, link, wait.
    let client = HttpLinkerClient::new(&base, TOKEN)?;
    let mut linker = Linker::new(
        LinkerConfig::default(),
        Instant::now(),
        &mut lanlink::os_rng(),
    );
    let linked = run_linker(
        &mut linker,
        &client,
        &client,
        &DriverConfig::default(),
        |agents| agents.first().map(|a| a.instance_id),
        |e| {
            if let LinkerEvent::ShortCode { short_code, .. } = &e {
                *page_code.lock().unwrap_or_else(|p| p.into_inner()) = Some(*short_code);
            }
            print_linker(&e)
        },
    )
    .await;
    let status = agent_task.await?;
    println!("agent   | final status: {status:?}");
    linked?;

    // Attacks that fail.
    let (second, second_at) = start_agent("printer-2", &base, Confirmation::None).await?;
    let second_id = lock(&second).instance_id();
    let plain = http::client::default_client()?;
    let url = format!("http://{second_at}{DEFAULT_PREFIX}/secret?instance_id={second_id}");
    let rebinding = plain
        .get(&url)
        .header("Host", "attacker.example")
        .send()
        .await?;
    println!(
        "attack  | DNS rebinding (Host: attacker.example): {} {}",
        rebinding.status(),
        rebinding.text().await?
    );
    let foreign = plain
        .get(&url)
        .header("Origin", "https://evil.example")
        .send()
        .await?;
    println!(
        "attack  | foreign web page (Origin: https://evil.example): {} {}",
        foreign.status(),
        foreign.text().await?
    );
    let second_transport = HttpAgentClient::new(&base)?;
    // Let the second agent announce once so the server knows it.
    let announce_once = {
        let second = Arc::clone(&second);
        tokio::spawn(async move {
            run_agent(&second, &second_transport, &DriverConfig::default(), |e| {
                if let AgentEvent::Linked { .. } = e {
                    println!("agent 2 | linked with the manual code");
                }
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let guess = client
        .link(&LinkRequest::new(
            second_id,
            LocalSecret::generate(&mut lanlink::os_rng()),
        ))
        .await;
    match guess {
        Err(TransportError::Refused { status, code }) => {
            println!("attack  | guessed secret: {status} {code} (counted toward a lockout)")
        }
        other => println!("attack  | guessed secret: unexpected {other:?}"),
    }

    // Manual fallback: alice mints a code and types it into the second agent.
    let code = client.mint_code().await?;
    println!(
        "manual  | alice minted a {}-character code, valid until {}",
        code.code.expose().len(),
        code.expires_at
    );
    lock(&second).enter_code(Instant::now(), code.code)?;
    let status = announce_once.await?;
    println!("agent 2 | final status: {status:?}");

    if !args.serve {
        println!(
            "browser | to link from a browser: `cargo run --example quickstart -- --serve`, then open the URL it prints"
        );
        return Ok(());
    }
    let (third, _) = start_agent("printer-3", &base, Confirmation::Compare).await?;
    println!("browser | open {base}/link in a browser, paste the token {TOKEN}, find the device, click Link");
    println!("browser | (or use \"Get a code\" and type the code here, then Enter)");
    println!("browser | the device asks for confirmation: type approve (if the page shows its code) or refuse");
    {
        let third = Arc::clone(&third);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                let decision = match line.trim() {
                    "approve" => Some(Decision::Approve),
                    "refuse" => Some(Decision::Refuse),
                    _ => None,
                };
                if let Some(decision) = decision {
                    if let Err(err) = lock(&third).confirm(Instant::now(), decision) {
                        println!("agent 3 | nothing to decide: {err}");
                    }
                    continue;
                }
                match lanlink::LinkCode::parse(line.trim()) {
                    Some(code) => {
                        if let Err(err) = lock(&third).enter_code(Instant::now(), code) {
                            println!("agent 3 | cannot take a code now: {err}");
                        }
                    }
                    None => println!("agent 3 | not a code"),
                }
            }
        });
    }
    let transport = HttpAgentClient::new(&base)?;
    let driver_config = DriverConfig::default();
    tokio::select! {
        status = run_agent(&third, &transport, &driver_config, |e| print_agent(&e)) => {
            println!("agent 3 | final status: {status:?}");
            // Let the page see the link's state before the server goes away.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        _ = tokio::signal::ctrl_c() => println!("browser | stopped"),
    }
    Ok(())
}
