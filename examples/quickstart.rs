//! All three parties in one process: an agent on a home LAN, the cloud server, and the user's
//! linker, wired together by hand on a virtual clock, printing each protocol step. Then two
//! attacks that fail, and the manual-code fallback.
//!
//! Run with `cargo run --example quickstart`.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use lanlink::agent::{Agent, AgentConfig, AgentTransmit, SecretRequest};
use lanlink::linker::{FetchFailure, Linker, LinkerConfig, LinkerTransmit};
use lanlink::server::{Server, ServerConfig};
use lanlink::{AccountId, DeviceInfo, ForwardedHeaders};

const HOME_PUBLIC: &str = "203.0.113.7";
const AGENT_LAN: &str = "192.168.1.50";
const LINKER_LAN: &str = "192.168.1.20";

/// A virtual clock: a monotonic instant for agent and linker, a wall clock for the server.
struct Clock {
    start: Instant,
    wall_start: DateTime<Utc>,
    elapsed: Duration,
}

impl Clock {
    fn now(&self) -> Instant {
        self.start + self.elapsed
    }
    fn wall(&self) -> DateTime<Utc> {
        self.wall_start + TimeDelta::from_std(self.elapsed).expect("small duration")
    }
    fn advance_to(&mut self, when: Instant) {
        self.elapsed = self.elapsed.max(when.saturating_duration_since(self.start));
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("literal address")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = lanlink::os_rng();
    let mut clock = Clock {
        start: Instant::now(),
        wall_start: DateTime::<Utc>::from(SystemTime::now()),
        elapsed: Duration::ZERO,
    };
    let cloud_origin = "https://cloud.example";
    let alice = AccountId::new("alice").expect("valid account id");
    let home = ip(HOME_PUBLIC);
    let no_proxy = ForwardedHeaders::NONE;

    println!(
        "lanlink quickstart: agent {AGENT_LAN} and linker {LINKER_LAN} behind {HOME_PUBLIC}\n"
    );

    let mut server = Server::new(ServerConfig::default())?;
    let info = DeviceInfo::new("voron.local", "Voron 2.4", "lanlink-demo-agent", "0.1.0")?;
    let config = AgentConfig::new(ip(AGENT_LAN), 8080, info).allow_origin(cloud_origin);
    let mut agent = Agent::new(config, clock.now(), &mut rng)?;
    println!(
        "1. agent: discovery on, instance_id {}, window {:?}",
        agent.instance_id(),
        agent.config().window_length()
    );

    // 2-3. The agent announces; the server records it under the home's public network.
    let Some(AgentTransmit::Announce(announce)) = agent.poll_transmit(clock.now()) else {
        unreachable!("the first announcement is due at once");
    };
    println!(
        "2. agent → server: announce {} at {}:{} with commitment {:?} (the secret stays home)",
        announce.instance_id, announce.private_ip, announce.port, announce.commitment
    );
    let reply = server.handle_announce(clock.wall(), home, no_proxy, &announce)?;
    agent.handle_announce_reply(clock.now(), reply);
    println!(
        "3. server: recorded under network {}",
        server.config().network_of(home)
    );

    // 4. The linker discovers.
    let mut linker = Linker::new(LinkerConfig::default(), clock.now());
    let Some(LinkerTransmit::Discover) = linker.poll_transmit(clock.now()) else {
        unreachable!("the linker starts with a discovery");
    };
    let found = server.handle_discover(clock.wall(), home, no_proxy);
    if let Ok(reply) = &found {
        for a in &reply.agents {
            println!(
                "4. linker ← server: found {} \"{}\" ({}) at {}:{}",
                a.instance_id,
                a.info.hostname(),
                a.info.model(),
                a.private_ip,
                a.port
            );
        }
    }
    linker.handle_discover_reply(clock.now(), found)?;

    // 5. The linker fetches the secret over the LAN.
    let Some(LinkerTransmit::FetchSecret {
        agent: at,
        instance_id,
    }) = linker.poll_transmit(clock.now())
    else {
        unreachable!("one agent found: fetch its secret");
    };
    let host = at.to_string();
    let instance = instance_id.to_string();
    let request = SecretRequest {
        peer: ip(LINKER_LAN),
        forwarded: no_proxy,
        host: Some(&host),
        origin: Some(cloud_origin),
        instance_id: &instance,
    };
    let secret = agent.handle_secret_request(clock.now(), &request);
    if let Ok(reply) = &secret {
        println!(
            "5. linker ← agent (LAN): local_secret {} (32 random bytes, never printed)",
            reply.local_secret
        );
    }
    linker.handle_secret_reply(clock.now(), secret.map_err(FetchFailure::Refused))?;

    // 6. The linker asks the server to link.
    let Some(LinkerTransmit::Link(link)) = linker.poll_transmit(clock.now()) else {
        unreachable!("secret fetched: link");
    };
    let accepted = server.handle_link(clock.wall(), &mut rng, &alice, home, no_proxy, link);
    println!(
        "6. server: link request from {home} checked against the commitment: {:?}",
        accepted.as_ref().map(|r| r.state)
    );
    linker.handle_link_reply(clock.now(), accepted)?;

    // 7-8. The agent's next announcement carries {secret, code}; it verifies and redeems.
    let next = agent.poll_timeout().expect("discovering");
    clock.advance_to(next);
    while let Some(transmit) = agent.poll_transmit(clock.now()) {
        match transmit {
            AgentTransmit::Announce(announce) => {
                let reply = server.handle_announce(clock.wall(), home, no_proxy, &announce)?;
                println!(
                    "7. agent ← server: {} message(s); verifying the secret in constant time",
                    reply.messages.len()
                );
                agent.handle_announce_reply(clock.now(), reply);
            }
            AgentTransmit::Redeem(request) => {
                let redeemed =
                    server.handle_redeem(clock.wall(), &mut rng, home, no_proxy, &request);
                if let Ok(r) = &redeemed {
                    println!(
                        "8. server: code redeemed; auth token {} minted for {} / {}",
                        r.reply.auth_token, r.account, r.instance_id
                    );
                }
                agent.handle_redeem_reply(clock.now(), redeemed.map(|r| r.reply))?;
            }
            _ => {}
        }
    }
    println!("   agent status: {:?}", agent.status());

    // The linker polls the link's state.
    while !linker.is_finished() {
        let Some(when) = linker.poll_timeout() else {
            break;
        };
        clock.advance_to(when);
        if let Some(LinkerTransmit::LinkStatus { instance_id }) = linker.poll_transmit(clock.now())
        {
            let status =
                server.handle_link_status(clock.wall(), &alice, home, no_proxy, &instance_id);
            linker.handle_link_status(clock.now(), status)?;
        }
    }
    println!("   linker: linked {:?}\n", linker.linked());

    // Attacks that fail.
    let elsewhere = ip("198.51.100.9");
    let seen = server.handle_discover(clock.wall(), elsewhere, no_proxy)?;
    println!(
        "attack: a linker on another public network ({elsewhere}) sees {} agents",
        seen.agents.len()
    );
    let mut second = Agent::new(
        AgentConfig::new(ip("192.168.1.51"), 8080, DeviceInfo::default()),
        clock.now(),
        &mut rng,
    )?;
    let id = second.instance_id().to_string();
    let off_lan = SecretRequest {
        peer: home,
        forwarded: no_proxy,
        host: Some("192.168.1.51:8080"),
        origin: None,
        instance_id: &id,
    };
    println!(
        "attack: a secret request from off the LAN ({home}): {:?}",
        second
            .handle_secret_request(clock.now(), &off_lan)
            .map(|_| ())
    );

    // Manual fallback: alice gets a code and types it into the second device.
    let code = server.mint_code(clock.wall(), &mut rng, &alice)?;
    println!(
        "\nmanual: server minted a 6-digit code for alice, valid until {}",
        code.expires_at
    );
    second.enter_code(clock.now(), code.code)?;
    if let Some(AgentTransmit::Redeem(request)) = second.poll_transmit(clock.now()) {
        let redeemed = server.handle_redeem(clock.wall(), &mut rng, home, no_proxy, &request);
        second.handle_redeem_reply(clock.now(), redeemed.map(|r| r.reply))?;
    }
    println!("manual: second agent status: {:?}", second.status());

    println!("\nserver audit log:");
    while let Some(event) = server.poll_event() {
        println!("  {event:?}");
    }
    Ok(())
}
