//! The agent over MQTT, the linker over HTTP, one server behind both, in one process.
//!
//! ```text
//! cargo run --example mqtt --features mqtt                          # starts mosquitto itself
//! cargo run --example mqtt --features mqtt -- --broker 127.0.0.1:1883
//! ```
//!
//! Without `--broker` it starts `mosquitto` (from `PATH` or `/usr/sbin`) on a free loopback port
//! with an anonymous loopback-only configuration, and stops it at the end.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use lanlink::agent::{Agent, AgentConfig};
use lanlink::driver::{run_agent, run_linker, DriverConfig, SharedAgent};
use lanlink::event::{AgentEvent, LinkerEvent};
use lanlink::http::client::{HttpAgentClient, HttpLinkerClient};
use lanlink::http::{self, server::router, ticket, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::mqtt::agent::{MqttAgentConfig, MqttAgentTransport};
use lanlink::mqtt::server::{wake_on_link, MqttServer, MqttServerConfig};
use lanlink::mqtt::Broker;
use lanlink::server::{Server, ServerConfig};
use lanlink::ticket::TicketKey;
use lanlink::{AccountId, DeviceInfo};

/// Links an agent that talks to the server over MQTT.
#[derive(Parser, Debug)]
#[command(about = "Agent over MQTT, linker over HTTP, one server")]
struct Args {
    /// A running broker, `host:port`; without it, mosquitto is started on a free port.
    #[arg(long)]
    broker: Option<String>,
}

const TOKEN: &str = "alice-demo-token";

/// A mosquitto started for the demo, killed when dropped.
struct OwnBroker(Child, std::path::PathBuf);

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_mosquitto() -> Result<(OwnBroker, u16), Box<dyn std::error::Error>> {
    let binary = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("mosquitto"))
                .find(|p| p.is_file())
        })
        .or_else(|| Some("/usr/sbin/mosquitto".into()).filter(|p: &std::path::PathBuf| p.is_file()))
        .ok_or("mosquitto not found: install it (apt-get install mosquitto) or pass --broker")?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("lanlink-mqtt-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )?;
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let broker = OwnBroker(child, dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("mosquitto did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((broker, port))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (_own, broker) = match &args.broker {
        Some(address) => {
            let (host, port) = address.rsplit_once(':').ok_or("--broker host:port")?;
            (None, Broker::new(host, port.parse()?))
        }
        None => {
            let (own, port) = start_mosquitto()?;
            println!("broker  | started mosquitto on 127.0.0.1:{port}");
            (Some(own), Broker::new("127.0.0.1", port))
        }
    };

    // The server: HTTP routes, the ticket route, wakes over MQTT, and the MQTT consumer.
    let config = ServerConfig::default()
        .announce_interval(Duration::from_secs(5))
        .presence_ttl(Duration::from_secs(15));
    let server = Arc::new(Server::new(config.clone())?);
    let key = TicketKey::generate(&mut lanlink::os_rng());
    let consumer = MqttServer::spawn(
        MqttServerConfig::new(broker.clone(), "server-1", key.clone())?,
        Arc::new(Arc::clone(&server)),
    );
    if !consumer.wait_subscribed(Duration::from_secs(10)).await {
        return Err("the server could not subscribe at the broker".into());
    }
    let alice = AccountId::new("alice").ok_or("account id")?;
    let auth = Arc::new(BearerTokens::new(vec![(TOKEN.to_owned(), alice)]));
    let app = router(Arc::clone(&server), auth, DEFAULT_PREFIX).merge(ticket::router(
        key,
        config,
        DEFAULT_PREFIX,
    ));
    let app = wake_on_link(app, consumer.waker());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server_addr = listener.local_addr()?;
    tokio::spawn(http::serve(
        listener,
        app,
        ServeConfig::default(),
        std::future::pending(),
    ));
    let base = format!("http://{server_addr}");
    println!(
        "server  | HTTP on {server_addr}, consuming {}",
        broker.shared_up_filter("lanlink-servers")
    );

    // The agent: local endpoint over HTTP (the LAN), server channel over MQTT.
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let local_addr: SocketAddr = local.local_addr()?;
    let info = DeviceInfo::new("printer-1", "Voron 2.4", "lanlink-mqtt-example", "0.1.0")?;
    let agent_config = AgentConfig::new(local_addr.ip(), local_addr.port(), info)
        .window(Duration::from_secs(120))
        .announce_interval(Duration::from_secs(5));
    let agent: SharedAgent = Arc::new(Mutex::new(Agent::new(
        agent_config,
        Instant::now(),
        &mut lanlink::os_rng(),
    )?));
    tokio::spawn(http::serve(
        local,
        http::agent::router(Arc::clone(&agent), DEFAULT_PREFIX),
        ServeConfig::default(),
        std::future::pending(),
    ));
    let transport = MqttAgentTransport::new(
        MqttAgentConfig::new(broker.clone()),
        HttpAgentClient::new(&base)?,
    );
    let start = Instant::now();
    let agent_task = {
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            run_agent(&agent, &transport, &DriverConfig::default(), |event| {
                let at = start.elapsed();
                match event {
                    AgentEvent::DiscoveryStarted { instance_id, .. } => {
                        println!("agent   | {at:>8.2?} discovery on as {instance_id}; ticket over HTTP, then MQTT")
                    }
                    AgentEvent::SecretVerified => {
                        println!("agent   | {at:>8.2?} woken, announced, secret verified; redeeming over MQTT")
                    }
                    AgentEvent::Linked { .. } => println!("agent   | {at:>8.2?} linked"),
                    AgentEvent::Stopped { reason } => println!("agent   | stopped: {reason:?}"),
                    _ => {}
                }
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;

    // The linker, over HTTP.
    let client = HttpLinkerClient::new(&base, TOKEN)?;
    let mut linker = Linker::new(
        LinkerConfig {
            status_interval: Duration::from_millis(200),
            ..LinkerConfig::default()
        },
        Instant::now(),
        &mut lanlink::os_rng(),
    );
    let linked = run_linker(
        &mut linker,
        &client,
        &client,
        &DriverConfig::default(),
        |agents| agents.first().map(|a| a.instance_id),
        |event| {
            let at = start.elapsed();
            match event {
                LinkerEvent::Discovered { agents } => {
                    println!("linker  | {at:>8.2?} discovered {} agent(s)", agents.len())
                }
                LinkerEvent::LinkRequested { .. } => {
                    println!(
                        "linker  | {at:>8.2?} link accepted; the server wakes the agent over MQTT"
                    )
                }
                LinkerEvent::Linked { .. } => println!("linker  | {at:>8.2?} done"),
                _ => {}
            }
        },
    )
    .await;
    let status = agent_task.await?;
    println!(
        "result  | agent {status:?}, linker {:?}; the server consumer answered {} MQTT requests",
        linked.map_err(|e| e.to_string()),
        consumer.handled()
    );
    Ok(())
}
