//! The protocol's story, step by step, and its attacks: one scenario each, on the deterministic
//! simulator (`lanlink::sim`). Every refusal is asserted exactly, together with what did not change.
#![cfg(feature = "sim")]

mod support;
use support::steps::Steps;

use std::net::IpAddr;
use std::time::Duration;

use lanlink::agent::{AgentConfig, AgentStatus, AgentTransmit, SecretRequest};
use lanlink::event::{AgentEvent, ServerEvent, StopReason};
use lanlink::server::{NetworkRecord, ServerConfig};
use lanlink::sim::{AgentId, LanId, Sim};
use lanlink::wire::{self, AgentMessage, Announce, LinkRequest, LinkState, RedeemRequest};
use lanlink::{
    AccountId, ClientAddrError, ConfigError, DeviceInfo, ForwardedHeaders, InstanceId, LinkCode,
    LocalSecret, PublicNetwork, Refusal, SecretRefusal, VerifyFailure, WireCode,
};

const HOME: &str = "203.0.113.7";
const ELSEWHERE: &str = "198.51.100.9";
const AGENT_IP: &str = "192.168.1.50";
const LINKER_IP: &str = "192.168.1.20";
const ORIGIN: &str = "https://cloud.example";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn alice() -> AccountId {
    AccountId::new("alice").unwrap()
}

fn mallory() -> AccountId {
    AccountId::new("mallory").unwrap()
}

/// A home LAN with one agent that allows the cloud's origin; the agent has announced once.
fn home() -> (Sim, LanId, AgentId) {
    home_with(ServerConfig::default())
}

fn home_with(config: ServerConfig) -> (Sim, LanId, AgentId) {
    let mut sim = Sim::with_server(7, config).unwrap();
    let lan = sim.add_lan(ip(HOME));
    let config = AgentConfig::new(ip(AGENT_IP), 8080, DeviceInfo::default())
        .allow_origin(ORIGIN)
        .allow_host("printer.local");
    let agent = sim.add_agent_with(lan, config).unwrap();
    sim.settle();
    (sim, lan, agent)
}

/// A well-formed local secret request for `agent`.
fn local_request(sim: &Sim, agent: AgentId) -> (String, String) {
    (
        sim.agent(agent).instance_id().to_string(),
        format!("{AGENT_IP}:8080"),
    )
}

fn fetch(
    sim: &mut Sim,
    agent: AgentId,
    peer: &str,
    host: Option<&str>,
    origin: Option<&str>,
    instance: &str,
) -> Result<LocalSecret, SecretRefusal> {
    let now = sim.now();
    let request = SecretRequest {
        peer: ip(peer),
        forwarded: ForwardedHeaders::NONE,
        host,
        origin,
        instance_id: instance,
    };
    sim.agents[agent]
        .agent
        .handle_secret_request(now, &request)
        .map(|reply| reply.local_secret)
}

/// Fetches the secret the honest way: on the LAN, right host, right origin.
fn real_secret(sim: &mut Sim, agent: AgentId) -> LocalSecret {
    let (id, host) = local_request(sim, agent);
    fetch(sim, agent, LINKER_IP, Some(&host), Some(ORIGIN), &id).unwrap()
}

fn net(text: &str) -> PublicNetwork {
    PublicNetwork::from_ip(ip(text), 64)
}

fn record(sim: &Sim, network: &str) -> NetworkRecord {
    sim.server
        .store()
        .network(&net(network))
        .unwrap_or_default()
}

/// Everything in a network record (its failures are counted apart, in the budgets).
fn shape(record: &NetworkRecord) -> String {
    format!("{:?} {:?}", record.presences, record.links())
}

/// The wrong guesses charged at `network`'s own address.
fn failures(sim: &Sim, network: &str) -> u64 {
    sim.server.store().failures(&net(network), sim.wall())
}

fn link(
    sim: &mut Sim,
    account: &AccountId,
    from: &str,
    instance_id: InstanceId,
    secret: LocalSecret,
) -> Result<LinkState, Refusal> {
    let wall = sim.wall();
    sim.server
        .link_now(
            wall,
            &mut sim.rng,
            account,
            ip(from),
            ForwardedHeaders::NONE,
            LinkRequest::new(instance_id, secret),
        )
        .map(|reply| reply.state)
}

fn discover(sim: &mut Sim, from: &str) -> Vec<InstanceId> {
    let wall = sim.wall();
    sim.server
        .discover_now(wall, ip(from), ForwardedHeaders::NONE)
        .unwrap()
        .agents
        .into_iter()
        .map(|a| a.instance_id)
        .collect()
}

fn redeem(sim: &mut Sim, from: &str, instance_id: InstanceId, code: &str) -> Result<(), Refusal> {
    let wall = sim.wall();
    let request = RedeemRequest::new(instance_id, LinkCode::parse(code).unwrap());
    sim.server
        .redeem_now(
            wall,
            &mut sim.rng,
            ip(from),
            ForwardedHeaders::NONE,
            &request,
        )
        .map(|_| ())
}

/// The agent's announcement, taken straight from the state machine (due or not).
fn announce_of(sim: &mut Sim, agent: AgentId) -> Announce {
    sim.advance(Duration::from_secs(2));
    // `advance` let the sim deliver the due announcement; build one the same way.
    let later = sim.now() + Duration::from_secs(2);
    match sim.agents[agent].agent.poll_transmit(later) {
        Some(AgentTransmit::Announce(a)) => a,
        other => panic!("expected an announcement, got {other:?}"),
    }
}

fn is_stopped(sim: &Sim, agent: AgentId) -> bool {
    matches!(sim.agent(agent).status(), AgentStatus::Stopped(_))
}

// ───────────────────────────── the protocol, step by step ─────────────────────────────

#[test]
fn step1_discovery_starts_with_fresh_id_secret_and_a_window_of_at_most_ten_minutes() {
    let (mut sim, lan, agent) = home();
    let id = sim.agent(agent).instance_id();
    assert_eq!(id.as_uuid().get_version_num(), 4);
    let secret = real_secret(&mut sim, agent);
    assert_eq!(secret.to_hex().len(), 64);

    // A second agent gets another id and another secret.
    let other = sim.add_agent(lan, ip("192.168.1.51"));
    assert_ne!(sim.agent(other).instance_id(), id);
    let other_secret = {
        let id = sim.agent(other).instance_id().to_string();
        fetch(&mut sim, other, LINKER_IP, Some("192.168.1.51"), None, &id).unwrap()
    };
    assert!(!secret.ct_eq(&other_secret));

    // The default window is 10 minutes on the monotonic clock.
    let start = sim.now();
    assert_eq!(
        sim.agent(agent).status(),
        AgentStatus::Discovering {
            deadline: start + Duration::from_secs(600) - Duration::from_secs(0)
        }
    );
    // Longer than 10 minutes is refused; shorter is allowed.
    let long =
        AgentConfig::new(ip(AGENT_IP), 1, DeviceInfo::default()).window(Duration::from_secs(601));
    assert_eq!(
        sim.add_agent_with(lan, long).unwrap_err(),
        ConfigError::DiscoveryWindow
    );
    let short = AgentConfig::new(ip("192.168.1.52"), 1, DeviceInfo::default())
        .window(Duration::from_secs(60));
    let short = sim.add_agent_with(lan, short).unwrap();
    sim.agents[short]
        .agent
        .handle_timeout(start + Duration::from_secs(59));
    assert!(sim.agent(short).is_discovering());
    sim.agents[short]
        .agent
        .handle_timeout(start + Duration::from_secs(60));
    assert_eq!(
        sim.agent(short).status(),
        AgentStatus::Stopped(StopReason::WindowExpired)
    );
}

#[test]
fn step2_announcements_carry_a_commitment_never_the_secret_every_interval() {
    let (mut sim, _, agent) = home();
    let secret = real_secret(&mut sim, agent);
    let id = sim.agent(agent).instance_id();
    let announce = announce_of(&mut sim, agent);
    assert_eq!(announce.instance_id, id);
    assert_eq!(announce.private_ip, ip(AGENT_IP));
    assert_eq!(announce.commitment, secret.commitment(&id));
    let bytes = wire::encode(&announce);
    assert!(bytes.len() <= wire::MAX_ANNOUNCE_BYTES);
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(!text.contains(secret.to_hex().as_str()));

    // Paced by the interval: nothing 1.9 s after an announcement, one at 2 s.
    let (mut sim, _, agent) = home();
    let t0 = sim.now();
    assert!(sim.agents[agent]
        .agent
        .poll_transmit(t0 + Duration::from_millis(1900))
        .is_none());
    assert!(matches!(
        sim.agents[agent]
            .agent
            .poll_transmit(t0 + Duration::from_secs(2)),
        Some(AgentTransmit::Announce(_))
    ));
}

#[test]
fn step3_server_records_by_public_network_with_expiring_presence() {
    // IPv6 announcers are grouped by /64: a linker on another address of the prefix sees them.
    let mut sim = Sim::new(3);
    let lan = sim.add_lan(ip("2001:db8:5:6::1"));
    let agent = sim.add_agent(lan, ip("fd00::50"));
    sim.settle();
    let id = sim.agent(agent).instance_id();
    assert_eq!(discover(&mut sim, "2001:db8:5:6:aaaa::9"), vec![id]);
    assert_eq!(
        discover(&mut sim, "2001:db8:5:7::1"),
        Vec::<InstanceId>::new()
    );

    // Presence lapses after presence_ttl (6 s) without announcements.
    let (mut sim, _, agent) = home();
    let id = sim.agent(agent).instance_id();
    sim.agents[agent].agent.cancel();
    sim.advance(Duration::from_secs(5));
    assert_eq!(discover(&mut sim, HOME), vec![id]);
    sim.advance(Duration::from_secs(1));
    assert_eq!(discover(&mut sim, HOME), Vec::<InstanceId>::new());

    // The config refuses presence_ttl < 2.5 × announce_interval.
    let short = ServerConfig::default()
        .announce_interval(Duration::from_secs(2))
        .presence_ttl(Duration::from_millis(4999));
    assert_eq!(short.validate(), Err(ConfigError::PresenceTtlTooShort));
    let exact = ServerConfig::default()
        .announce_interval(Duration::from_secs(2))
        .presence_ttl(Duration::from_secs(5));
    assert_eq!(exact.validate(), Ok(()));

    // A public private_ip is refused, and nothing is recorded: the agent's own announcement
    // or a fresh instance's (its own presence key), public, CGNAT or IPv6.
    let (mut sim, _, agent) = home();
    let before = shape(&record(&sim, HOME));
    let own = announce_of(&mut sim, agent);
    let before_after_announce = shape(&record(&sim, HOME));
    for (n, public) in ["8.8.8.8", "100.64.0.1", "2001:db8::1"]
        .into_iter()
        .enumerate()
    {
        let mut fresh = own.clone();
        let key = lanlink::secret::PresenceKey::from_bytes([0x60 + n as u8; 32]);
        fresh.instance_id = key.instance_id();
        fresh.presence_key = key;
        for mut announce in [own.clone(), fresh] {
            announce.private_ip = ip(public);
            let wall = sim.wall();
            assert_eq!(
                sim.server
                    .announce_now(wall, ip(HOME), ForwardedHeaders::NONE, &announce)
                    .unwrap_err(),
                Refusal::NotPrivateIp,
                "{public}"
            );
            assert_eq!(shape(&record(&sim, HOME)), before_after_announce);
        }
    }
    assert_eq!(failures(&sim, HOME), 0, "not a guess");
    assert_eq!(discover(&mut sim, HOME), vec![own.instance_id]);
    assert!(!before.is_empty());
}

#[test]
fn step4_linkers_see_only_their_own_networks_fresh_agents() {
    let (mut sim, _, agent) = home();
    let id = sim.agent(agent).instance_id();
    assert_eq!(discover(&mut sim, HOME), vec![id]);
    assert_eq!(discover(&mut sim, ELSEWHERE), Vec::<InstanceId>::new());
    assert_eq!(
        discover(&mut sim, "::ffff:203.0.113.7"),
        vec![id],
        "a mapped address is the same network"
    );
}

#[test]
fn step5_the_secret_is_served_only_when_every_condition_holds() {
    let (mut sim, _, agent) = home();
    let (id, host) = local_request(&sim, agent);
    // Every condition holds: served, with and without an Origin, by IP literal or allowed name.
    assert!(fetch(&mut sim, agent, LINKER_IP, Some(&host), None, &id).is_ok());
    assert!(fetch(&mut sim, agent, LINKER_IP, Some(&host), Some(ORIGIN), &id).is_ok());
    assert!(fetch(
        &mut sim,
        agent,
        "fe80::1",
        Some("printer.local:8080"),
        None,
        &id
    )
    .is_ok());
    assert!(fetch(&mut sim, agent, "127.0.0.1", Some("[::1]:8080"), None, &id).is_ok());
    // Each failing condition has its own reason (more in the attack scenarios below).
    let wrong_id = InstanceId::from_bytes([9; 16]).to_string();
    assert_eq!(
        fetch(&mut sim, agent, LINKER_IP, Some(&host), None, &wrong_id).unwrap_err(),
        SecretRefusal::WrongInstance
    );
    assert_eq!(
        fetch(&mut sim, agent, LINKER_IP, Some(&host), None, "garbage").unwrap_err(),
        SecretRefusal::WrongInstance
    );
    assert_eq!(
        fetch(&mut sim, agent, LINKER_IP, None, None, &id).unwrap_err(),
        SecretRefusal::BadHost
    );
    sim.settle();
    let refusals: Vec<_> = sim.agents[agent]
        .events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::SecretRefused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        refusals,
        vec![
            SecretRefusal::WrongInstance,
            SecretRefusal::WrongInstance,
            SecretRefusal::BadHost
        ]
    );
    assert!(sim.agent(agent).is_discovering(), "refusals change nothing");
}

#[test]
fn step6_link_requests_are_checked_then_the_secret_is_queued_once_for_the_agent() {
    let (mut sim, _, agent) = home();
    let id = sim.agent(agent).instance_id();
    let announce = announce_of(&mut sim, agent);
    let secret = real_secret(&mut sim, agent);
    assert_eq!(
        link(&mut sim, &alice(), HOME, id, secret.clone()),
        Ok(LinkState::Pending)
    );
    let rec = record(&sim, HOME);
    assert_eq!(rec.links().len(), 1);
    assert!(rec.links()[0].message.is_some(), "queued for the agent");
    assert_eq!(
        sim.server.store().codes(),
        2,
        "an auto code was minted, and the instance claimed"
    );

    // The agent's next announcement takes the message; the server keeps no copy of the secret.
    sim.advance(Duration::from_secs(4));
    assert_eq!(sim.agent(agent).status(), AgentStatus::Linked);
    let rec = record(&sim, HOME);
    assert!(rec.links()[0].message.is_none());
    assert_eq!(rec.links()[0].state, LinkState::Linked);
    let wall = sim.wall();
    let again = sim
        .server
        .announce_now(wall, ip(HOME), ForwardedHeaders::NONE, &announce);
    // A linked instance is gone from discovery and cannot reappear under its used id.
    assert_eq!(again.unwrap_err(), Refusal::InstanceUsed);

    // Undelivered messages expire after 60 s and take the secret with them.
    let (mut sim, _, agent) = home();
    let id = sim.agent(agent).instance_id();
    let secret = real_secret(&mut sim, agent);
    sim.agents[agent].agent.cancel(); // the agent goes quiet
    assert_eq!(
        link(&mut sim, &alice(), HOME, id, secret),
        Ok(LinkState::Pending)
    );
    sim.advance(Duration::from_secs(59));
    let wall = sim.wall();
    sim.server.purge_now(wall);
    assert!(record(&sim, HOME).links()[0].message.is_some());
    sim.advance(Duration::from_secs(1));
    let wall = sim.wall();
    sim.server.purge_now(wall);
    assert!(
        record(&sim, HOME).links().is_empty(),
        "message and secret dropped"
    );
    let status = sim
        .server
        .link_status_now(wall, &alice(), ip(HOME), ForwardedHeaders::NONE, &id)
        .unwrap();
    assert_eq!(status.state, LinkState::Unknown);
}

#[test]
fn step7_the_agent_verifies_the_forwarded_secret_and_any_failure_ends_discovery() {
    for (case, expected) in [
        ("wrong secret", VerifyFailure::WrongSecret),
        ("wrong id", VerifyFailure::WrongInstance),
        ("late", VerifyFailure::Late),
    ] {
        let (mut sim, _, agent) = home();
        let id = sim.agent(agent).instance_id();
        let real = real_secret(&mut sim, agent);
        let (instance_id, local_secret) = match case {
            "wrong secret" => (id, LocalSecret::from_bytes([1; 32])),
            "wrong id" => (InstanceId::from_bytes([2; 16]), real),
            _ => (id, real),
        };
        let mut now = sim.now();
        if case == "late" {
            now += Duration::from_secs(600);
        }
        let message = AgentMessage::VerifyAndRedeem {
            instance_id,
            local_secret,
            code: LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap(),
            display_name: None,
            nonce: None,
        };
        sim.agents[agent]
            .agent
            .handle_announce_reply(now, wire::AnnounceReply::new(vec![message], 2000));
        let status = sim.agent(agent).status();
        let want = if case == "late" {
            StopReason::WindowExpired
        } else {
            StopReason::VerifyFailed(expected.clone())
        };
        assert_eq!(status, AgentStatus::Stopped(want), "{case}");
        assert!(
            sim.agents[agent].agent.poll_transmit(now).is_none(),
            "{case}: no redeem"
        );
        let events: Vec<_> = std::iter::from_fn(|| sim.agents[agent].agent.poll_event()).collect();
        assert!(
            events.contains(&AgentEvent::MessageRejected {
                reason: expected.clone()
            }),
            "{case}: {events:?}"
        );
        // The secret is gone: no caller gets it any more.
        let (id_text, host) = local_request(&sim, agent);
        assert!(fetch(&mut sim, agent, LINKER_IP, Some(&host), None, &id_text).is_err());
    }
}

#[test]
fn step8_redeeming_the_code_mints_a_token_and_the_agent_reports_linked() {
    let (mut sim, lan, agent) = home();
    let linker = sim.add_linker_with(
        lan,
        ip(LINKER_IP),
        "alice",
        Default::default(),
        Some(ORIGIN.to_owned()),
    );
    assert!(sim.run_until(Duration::from_secs(60), |s| s.linker(linker).is_finished()));
    let id = sim.agent(agent).instance_id();
    assert_eq!(sim.linker(linker).linked(), Some(id));
    assert_eq!(sim.agent(agent).status(), AgentStatus::Linked);
    let token = sim.agent(agent).auth_token().unwrap();
    let minted = sim.agents[agent].minted.as_ref().unwrap();
    assert!(token.ct_eq(&minted.auth_token));
    assert_eq!(token.to_hex().len(), 64, "256-bit token");
    assert!(sim.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Linked { instance_id, account, manual: false, .. }
            if *instance_id == id && *account == alice()
    )));
    // Once linked the agent is no longer discoverable.
    assert_eq!(discover(&mut sim, HOME), Vec::<InstanceId>::new());
}

#[test]
fn step9_manual_codes_are_short_random_single_use_and_expire() {
    let (mut sim, _, agent) = home();
    let wall = sim.wall();
    let reply = sim
        .server
        .mint_code_now(wall, &mut sim.rng, &alice())
        .unwrap();
    assert_eq!(reply.code.expose().len(), 6);
    assert!(reply.code.expose().bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(reply.expires_at, wall + chrono::TimeDelta::minutes(10));
    // Codes are unique among live ones (minted for 200 accounts: each holds a few at most).
    let mut seen = std::collections::HashSet::new();
    seen.insert(reply.code.expose().to_owned());
    for n in 0..200 {
        let account = AccountId::new(format!("user-{n}")).unwrap();
        let code = sim
            .server
            .mint_code_now(wall, &mut sim.rng, &account)
            .unwrap();
        assert!(seen.insert(code.code.expose().to_owned()));
    }
    // An account holds at most its quota of live codes (5): alice has one, four more mint.
    for _ in 0..4 {
        sim.server
            .mint_code_now(wall, &mut sim.rng, &alice())
            .unwrap();
    }
    assert_eq!(
        sim.server
            .mint_code_now(wall, &mut sim.rng, &alice())
            .unwrap_err(),
        Refusal::MintQuota
    );

    // The user types it into the agent: linked to alice.
    let now = sim.now();
    sim.agents[agent]
        .agent
        .enter_code(now, reply.code.clone())
        .unwrap();
    sim.settle();
    assert_eq!(sim.agent(agent).status(), AgentStatus::Linked);
    let id = sim.agent(agent).instance_id();
    assert!(sim.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Linked { instance_id, account, manual: true, .. }
            if *instance_id == id && *account == alice()
    )));
    // Single-use.
    assert_eq!(
        redeem(&mut sim, HOME, id, reply.code.expose()),
        Err(Refusal::CodeUsed)
    );

    // Expired after 10 minutes.
    let (mut sim, _, agent) = home();
    let wall = sim.wall();
    let code = sim
        .server
        .mint_code_now(wall, &mut sim.rng, &alice())
        .unwrap()
        .code;
    sim.advance(Duration::from_secs(600));
    let id = sim.agent(agent).instance_id();
    assert_eq!(
        redeem(&mut sim, HOME, id, code.expose()),
        Err(Refusal::UnknownCode)
    );

    // Length and alphabet are configurable.
    let format = lanlink::CodeFormat::new(8, "ABCDEFGHJKMNPQRSTUVWXYZ").unwrap();
    let (mut sim, _, _) = home_with(ServerConfig::default().code_format(format.clone()));
    let wall = sim.wall();
    let code = sim
        .server
        .mint_code_now(wall, &mut sim.rng, &alice())
        .unwrap()
        .code;
    assert!(format.matches(&code));
}

// ───────────────────────────── attacks ─────────────────────────────

#[test]
fn attack_linker_on_another_public_network_sees_nothing_and_cannot_link() {
    let (mut sim, _, agent) = home();
    let id = sim.agent(agent).instance_id();
    let secret = real_secret(&mut sim, agent); // even holding the real secret
    assert!(discover(&mut sim, ELSEWHERE).is_empty());
    let home_before = shape(&record(&sim, HOME));
    assert_eq!(
        link(&mut sim, &mallory(), ELSEWHERE, id, secret.clone()),
        Err(Refusal::AgentNotFound)
    );
    assert_eq!(shape(&record(&sim, HOME)), home_before);
    assert_eq!(failures(&sim, ELSEWHERE), 1, "counted");
    assert!(sim.agent(agent).is_discovering());
    // The home network still links with it.
    assert_eq!(
        link(&mut sim, &alice(), HOME, id, secret),
        Ok(LinkState::Pending)
    );
}

#[test]
fn attack_same_public_network_but_off_lan_gets_no_secret() {
    let (mut sim, _, agent) = home();
    let (id, host) = local_request(&sim, agent);
    // From the internet side: the home's own public address (e.g. a port forward), the
    // attacker's, any other.
    for from in [HOME, ELSEWHERE, "8.8.8.8"] {
        assert_eq!(
            fetch(&mut sim, agent, from, Some(&host), None, &id).unwrap_err(),
            SecretRefusal::NotLocal,
            "{from}"
        );
    }
    assert!(sim.agent(agent).is_discovering());
    assert!(fetch(&mut sim, agent, LINKER_IP, Some(&host), None, &id).is_ok());
}

#[test]
fn attack_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let (mut sim, _, agent) = home();
    let (id, host) = local_request(&sim, agent);
    let now = sim.now();
    let xff = [LINKER_IP];
    let request = SecretRequest {
        peer: ip(ELSEWHERE),
        forwarded: ForwardedHeaders {
            forwarded: &[],
            x_forwarded_for: &xff,
        },
        host: Some(&host),
        origin: None,
        instance_id: &id,
    };
    assert_eq!(
        sim.agents[agent]
            .agent
            .handle_secret_request(now, &request)
            .unwrap_err(),
        SecretRefusal::NotLocal
    );
    // At the server: claiming the victim's public address changes nothing.
    let wall = sim.wall();
    let spoof = [HOME];
    let headers = ForwardedHeaders {
        forwarded: &[],
        x_forwarded_for: &spoof,
    };
    let reply = sim
        .server
        .discover_now(wall, ip(ELSEWHERE), headers)
        .unwrap();
    assert!(reply.agents.is_empty());
}

#[test]
fn attack_trusted_proxy_that_drops_the_client_address_fails_closed() {
    // The 2021 incident: the balancer stopped passing the client address.
    let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse().unwrap()]);
    let (sim, _, agent) = home_with(config);
    let wall = sim.wall();
    assert_eq!(
        sim.server
            .discover_now(wall, ip("10.0.0.2"), ForwardedHeaders::NONE),
        Err(Refusal::ClientAddr(ClientAddrError::MissingForwarded))
    );
    // With the header, the client's own network is used.
    let xff = [HOME];
    let headers = ForwardedHeaders {
        forwarded: &[],
        x_forwarded_for: &xff,
    };
    let reply = sim
        .server
        .discover_now(wall, ip("10.0.0.2"), headers)
        .unwrap();
    assert_eq!(reply.agents.len(), 1);
    assert_eq!(reply.agents[0].instance_id, sim.agent(agent).instance_id());
}

#[test]
fn attack_ipv4_mapped_ipv6_addresses_are_normalized() {
    let (mut sim, _, agent) = home();
    let (id, host) = local_request(&sim, agent);
    assert!(fetch(
        &mut sim,
        agent,
        "::ffff:192.168.1.20",
        Some(&host),
        None,
        &id
    )
    .is_ok());
    assert_eq!(
        fetch(
            &mut sim,
            agent,
            "::ffff:203.0.113.99",
            Some(&host),
            None,
            &id
        )
        .unwrap_err(),
        SecretRefusal::NotLocal
    );
    assert_eq!(
        fetch(&mut sim, agent, "::ffff:100.64.0.1", Some(&host), None, &id).unwrap_err(),
        SecretRefusal::NotLocal
    );
    // The server sees the mapped form of the home address as the home network, and the mapped
    // form of another address as another network.
    let agent_id = sim.agent(agent).instance_id();
    assert_eq!(discover(&mut sim, "::ffff:203.0.113.7"), vec![agent_id]);
    assert!(discover(&mut sim, "::ffff:198.51.100.9").is_empty());
}

/// Clients reaching the server through NAT64 or SIIT arrive as IPv6 addresses of one prefix;
/// grouped by /64 they would all share one network (each other's agents, each other's lockouts).
/// Each is the network of the IPv4 address it embeds instead.
#[test]
fn attack_nat64_clients_are_mapped_back_to_their_ipv4_networks() {
    let config = ServerConfig::default()
        .trusted_proxies(vec!["10.0.0.0/8".parse().unwrap()])
        .nat64_prefixes(vec!["2001:db8:64::/96".parse().unwrap()]);
    let (mut sim, _, agent) = home_with(config);
    let agent_id = sim.agent(agent).instance_id();
    // 64:ff9b::203.0.113.7 is 203.0.113.7's network; 64:ff9b::198.51.100.9 is another.
    assert_eq!(net("64:ff9b::203.0.113.7"), net(HOME));
    assert_ne!(net("64:ff9b::203.0.113.7"), net("64:ff9b::198.51.100.9"));
    assert_eq!(discover(&mut sim, "64:ff9b::203.0.113.7"), vec![agent_id]);
    assert!(discover(&mut sim, "64:ff9b::198.51.100.9").is_empty());
    // The operator's own /96 likewise; without the setting it would be one /64.
    assert_eq!(
        discover(&mut sim, "2001:db8:64::203.0.113.7"),
        vec![agent_id]
    );
    assert!(discover(&mut sim, "2001:db8:64::198.51.100.9").is_empty());
    // Through a trusted proxy the resolved client is mapped.
    let wall = sim.wall();
    let xff = ForwardedHeaders {
        forwarded: &[],
        x_forwarded_for: &["64:ff9b::203.0.113.7"],
    };
    let shown = sim
        .server
        .discover_now(wall, ip("10.0.0.2"), xff)
        .unwrap()
        .agents;
    assert_eq!(shown.len(), 1);
    // A trusted proxy that names no client is still refused, NAT64 or not.
    assert_eq!(
        sim.server
            .discover_now(wall, ip("10.0.0.2"), ForwardedHeaders::NONE)
            .unwrap_err(),
        Refusal::ClientAddr(ClientAddrError::MissingForwarded)
    );
    // Another IPv4 user of the same translator does not share a guesser's lockout.
    let guesser = "64:ff9b::198.51.100.9";
    let attacker = InstanceId::from_bytes([3; 16]);
    for _ in 0..5 {
        assert_eq!(
            redeem(&mut sim, guesser, attacker, "000000"),
            Err(Refusal::UnknownCode)
        );
    }
    assert_eq!(
        redeem(&mut sim, guesser, attacker, "000000"),
        Err(Refusal::LockedOut)
    );
    assert_eq!(
        redeem(&mut sim, ELSEWHERE, attacker, "000000"),
        Err(Refusal::LockedOut),
        "the guesser's own IPv4 address is the locked network"
    );
    assert_eq!(
        redeem(&mut sim, "64:ff9b::198.51.100.10", attacker, "000000"),
        Err(Refusal::UnknownCode)
    );
    assert!(failures(&sim, "64:ff9b::198.51.100.10") == 1);
    // At the agent, a NAT64 address is a remote host, whatever it embeds.
    let (id, host) = local_request(&sim, agent);
    assert_eq!(
        fetch(
            &mut sim,
            agent,
            "64:ff9b::192.168.1.20",
            Some(&host),
            None,
            &id
        )
        .unwrap_err(),
        SecretRefusal::NotLocal
    );
}

#[test]
fn attack_cgnat_neighbour_is_not_local() {
    let (mut sim, _, agent) = home();
    let (id, host) = local_request(&sim, agent);
    for peer in ["100.64.0.1", "100.127.255.254", "100.100.100.100"] {
        assert_eq!(
            fetch(&mut sim, agent, peer, Some(&host), None, &id).unwrap_err(),
            SecretRefusal::NotLocal
        );
    }
    assert!(sim.agent(agent).is_discovering());
}

#[test]
fn attack_dns_rebinding_host_is_refused() {
    let (mut sim, _, agent) = home();
    let (id, _) = local_request(&sim, agent);
    for host in [
        "evil.example",
        "evil.example:8080",
        "printer.local.evil.example",
        "",
    ] {
        assert_eq!(
            fetch(&mut sim, agent, LINKER_IP, Some(host), None, &id).unwrap_err(),
            SecretRefusal::BadHost,
            "{host}"
        );
    }
    assert_eq!(
        fetch(&mut sim, agent, LINKER_IP, None, None, &id).unwrap_err(),
        SecretRefusal::BadHost
    );
    assert!(sim.agent(agent).is_discovering());
}

#[test]
fn attack_foreign_origin_is_refused() {
    let (mut sim, _, agent) = home();
    let (id, host) = local_request(&sim, agent);
    for origin in [
        "https://evil.example",
        "null",
        "http://cloud.example",
        "https://cloud.example.evil.example",
    ] {
        assert_eq!(
            fetch(&mut sim, agent, LINKER_IP, Some(&host), Some(origin), &id).unwrap_err(),
            SecretRefusal::BadOrigin,
            "{origin}"
        );
    }
    assert!(fetch(
        &mut sim,
        agent,
        LINKER_IP,
        Some(&host),
        Some("HTTPS://Cloud.Example"),
        &id
    )
    .is_ok());
}

#[test]
fn attack_wrong_secret_is_refused_by_the_server_and_never_reaches_the_agent() {
    let (mut sim, _, agent) = home();
    let id = sim.agent(agent).instance_id();
    let before = shape(&record(&sim, HOME));
    assert_eq!(
        link(
            &mut sim,
            &mallory(),
            HOME,
            id,
            LocalSecret::from_bytes([0; 32])
        ),
        Err(Refusal::WrongSecret)
    );
    assert_eq!(shape(&record(&sim, HOME)), before);
    assert_eq!(failures(&sim, HOME), 1);
    sim.advance(Duration::from_secs(4));
    assert!(
        sim.agent(agent).is_discovering(),
        "no DoS: the agent never saw it"
    );
    // The real secret still links.
    let secret = real_secret(&mut sim, agent);
    assert_eq!(
        link(&mut sim, &alice(), HOME, id, secret),
        Ok(LinkState::Pending)
    );
}

#[test]
fn attack_replayed_secret_after_linking_is_refused() {
    let (mut sim, _, agent) = home();
    let id = sim.agent(agent).instance_id();
    // The agent's own announcement, kept to replay later (it carries the agent's presence key).
    let own_announce = announce_of(&mut sim, agent);
    let secret = real_secret(&mut sim, agent);
    assert_eq!(
        link(&mut sim, &alice(), HOME, id, secret.clone()),
        Ok(LinkState::Pending)
    );
    // Replayed before the agent picked it up, by the same or another account.
    assert_eq!(
        link(&mut sim, &mallory(), HOME, id, secret.clone()),
        Err(Refusal::AlreadyLinking)
    );
    sim.advance(Duration::from_secs(4));
    assert_eq!(sim.agent(agent).status(), AgentStatus::Linked);
    // Replayed after linking, by another account or the same one: refused, counted as a guess,
    // nothing else changes.
    let before = shape(&record(&sim, HOME));
    for account in [mallory(), alice()] {
        let failed = failures(&sim, HOME);
        assert_eq!(
            link(&mut sim, &account, HOME, id, secret.clone()),
            Err(Refusal::AlreadyLinking)
        );
        assert_eq!(failures(&sim, HOME), failed + 1, "{account:?}: counted");
    }
    assert_eq!(shape(&record(&sim, HOME)), before);
    // The linked agent hands out nothing any more.
    let (local_id, host) = local_request(&sim, agent);
    assert_eq!(
        fetch(
            &mut sim,
            agent,
            LINKER_IP,
            Some(&host),
            Some(ORIGIN),
            &local_id
        )
        .unwrap_err(),
        SecretRefusal::NotDiscovering
    );
    // Someone who knows (id, secret) recomputes the commitment and announces the instance, from
    // the home network or another: without the agent's presence key that is a forgery.
    let forged = lanlink::wire::Announce::new(
        id,
        ip("192.168.1.66"),
        8080,
        DeviceInfo::default(),
        secret.commitment(&id),
        lanlink::secret::PresenceKey::from_bytes([0x42; 32]),
    );
    for from in [HOME, ELSEWHERE] {
        let wall = sim.wall();
        assert_eq!(
            sim.server
                .announce_now(wall, ip(from), ForwardedHeaders::NONE, &forged)
                .unwrap_err(),
            Refusal::ForgedInstance
        );
    }
    // Even the agent's own announcement, replayed after the link status lapsed, is refused: used
    // ids are remembered for 24 hours.
    sim.advance(Duration::from_secs(601));
    let wall = sim.wall();
    assert_eq!(
        sim.server
            .announce_now(wall, ip(HOME), ForwardedHeaders::NONE, &own_announce)
            .unwrap_err(),
        Refusal::InstanceUsed
    );
    assert_eq!(
        link(&mut sim, &mallory(), HOME, id, secret.clone()),
        Err(Refusal::AlreadyLinking)
    );
    // After the replay horizon the id is forgotten; the announcement is then a fresh agent's.
    sim.advance(Duration::from_secs(24 * 3600));
    let wall = sim.wall();
    assert!(sim
        .server
        .announce_now(wall, ip(HOME), ForwardedHeaders::NONE, &own_announce)
        .is_ok());
}

#[test]
fn attack_request_after_the_window_is_refused_and_discovery_is_off() {
    let (mut sim, _, agent) = home();
    let (id, host) = local_request(&sim, agent);
    sim.advance(Duration::from_secs(600));
    assert_eq!(
        fetch(&mut sim, agent, LINKER_IP, Some(&host), None, &id).unwrap_err(),
        SecretRefusal::WindowExpired
    );
    assert_eq!(
        sim.agent(agent).status(),
        AgentStatus::Stopped(StopReason::WindowExpired)
    );
    // No more announcements: the presence lapses; the endpoint stays closed.
    sim.advance(Duration::from_secs(7));
    assert!(discover(&mut sim, HOME).is_empty());
    assert_eq!(
        fetch(&mut sim, agent, LINKER_IP, Some(&host), None, &id).unwrap_err(),
        SecretRefusal::WindowExpired
    );
}

#[test]
fn attack_two_agents_in_one_network_hide_each_other() {
    let (mut sim, lan, agent) = home();
    let id = sim.agent(agent).instance_id();
    let secret = real_secret(&mut sim, agent);
    // An impostor announces from the same public network.
    let impostor = sim.add_agent(lan, ip("192.168.1.66"));
    sim.settle();
    assert!(discover(&mut sim, HOME).is_empty(), "fail closed");
    let before = shape(&record(&sim, HOME));
    assert_eq!(
        link(&mut sim, &alice(), HOME, id, secret.clone()),
        Err(Refusal::TooManyAgents)
    );
    assert_eq!(shape(&record(&sim, HOME)), before);
    assert_eq!(failures(&sim, HOME), 0, "not a guess");
    // Nor can the impostor's own secret link it.
    let impostor_id = sim.agent(impostor).instance_id();
    let impostor_secret = fetch(
        &mut sim,
        impostor,
        LINKER_IP,
        Some("192.168.1.66:8080"),
        None,
        &impostor_id.to_string(),
    )
    .unwrap();
    assert_eq!(
        link(&mut sim, &mallory(), HOME, impostor_id, impostor_secret),
        Err(Refusal::TooManyAgents)
    );
    assert_eq!(shape(&record(&sim, HOME)), before);
    assert_eq!(failures(&sim, HOME), 0, "not a guess");
    assert!(sim.agent(agent).is_discovering() && sim.agent(impostor).is_discovering());

    // With max_visible = 2 both are shown, and a third hides all.
    let (mut sim, lan, _) = home_with(ServerConfig::default().max_visible(2));
    sim.add_agent(lan, ip("192.168.1.66"));
    sim.settle();
    assert_eq!(discover(&mut sim, HOME).len(), 2);
    sim.add_agent(lan, ip("192.168.1.67"));
    sim.settle();
    assert!(discover(&mut sim, HOME).is_empty());
}

#[test]
fn attack_impostor_announcing_the_victims_id_is_refused_and_contests_it() {
    let (mut sim, _, agent) = home();
    let id = sim.agent(agent).instance_id();
    let secret = real_secret(&mut sim, agent);
    let own = announce_of(&mut sim, agent);
    // The impostor knows the id (from discovery) and even the secret (say, from the LAN), but not
    // the presence key the id derives from: a forgery, from any network, and nothing changes.
    let mut forged = own.clone();
    forged.presence_key = lanlink::secret::PresenceKey::from_bytes([5; 32]);
    forged.private_ip = ip("192.168.1.66");
    for from in [HOME, ELSEWHERE] {
        let before = shape(&record(&sim, from));
        let wall = sim.wall();
        assert_eq!(
            sim.server
                .announce_now(wall, ip(from), ForwardedHeaders::NONE, &forged)
                .unwrap_err(),
            Refusal::ForgedInstance
        );
        assert_eq!(shape(&record(&sim, from)), before);
        assert_eq!(failures(&sim, from), 0, "not a guess");
    }
    assert_eq!(discover(&mut sim, HOME), vec![id]);
    // The agent's own key with another commitment fails closed: hidden and unlinkable until the
    // presence lapses.
    let mut changed = own;
    changed.commitment = LocalSecret::from_bytes([5; 32]).commitment(&id);
    let wall = sim.wall();
    assert_eq!(
        sim.server
            .announce_now(wall, ip(HOME), ForwardedHeaders::NONE, &changed)
            .unwrap_err(),
        Refusal::PresenceConflict
    );
    // The one change such a refusal makes: the presence is now contested.
    let presences = record(&sim, HOME).presences;
    assert_eq!(presences.len(), 1);
    assert!(presences[0].contested);
    assert!(discover(&mut sim, HOME).is_empty());
    let before = shape(&record(&sim, HOME));
    assert_eq!(
        link(&mut sim, &alice(), HOME, id, secret),
        Err(Refusal::AgentContested)
    );
    assert_eq!(shape(&record(&sim, HOME)), before);
    assert_eq!(failures(&sim, HOME), 0, "not a guess");
    // The real agent's own next announcement is refused too, which ends its discovery.
    sim.advance(Duration::from_secs(4));
    assert_eq!(
        sim.agent(agent).status(),
        AgentStatus::Stopped(StopReason::AnnounceRefused(WireCode::PresenceConflict))
    );
    let (local_id, host) = local_request(&sim, agent);
    assert_eq!(
        fetch(&mut sim, agent, LINKER_IP, Some(&host), None, &local_id).unwrap_err(),
        SecretRefusal::NotDiscovering
    );
}

#[test]
fn attack_manual_code_brute_force_ends_in_lockout() {
    let (mut sim, _, agent) = home();
    let wall = sim.wall();
    let code = sim
        .server
        .mint_code_now(wall, &mut sim.rng, &alice())
        .unwrap()
        .code;
    let id = sim.agent(agent).instance_id();
    let attacker = InstanceId::from_bytes([3; 16]);
    let wrong = if code.expose() == "000000" {
        "000001"
    } else {
        "000000"
    };
    for _ in 0..4 {
        assert_eq!(
            redeem(&mut sim, ELSEWHERE, attacker, wrong),
            Err(Refusal::UnknownCode)
        );
    }
    assert_eq!(
        redeem(&mut sim, ELSEWHERE, attacker, wrong),
        Err(Refusal::UnknownCode)
    );
    assert!(sim
        .server_events
        .iter()
        .chain(
            std::iter::from_fn(|| sim.server.poll_event())
                .collect::<Vec<_>>()
                .iter()
        )
        .any(|e| matches!(e, ServerEvent::LockedOut { .. })));
    // Locked: even the right code is refused from that network, for any agent, and does not
    // burn.
    assert_eq!(failures(&sim, ELSEWHERE), 5);
    for instance in [attacker, id] {
        assert_eq!(
            redeem(&mut sim, ELSEWHERE, instance, code.expose()),
            Err(Refusal::LockedOut)
        );
    }
    // Another network is unaffected; the legitimate agent redeems it.
    assert_eq!(redeem(&mut sim, HOME, id, code.expose()), Ok(()));
    // The lockout lifts after its duration.
    sim.advance(Duration::from_secs(600));
    assert_eq!(
        redeem(&mut sim, ELSEWHERE, attacker, wrong),
        Err(Refusal::UnknownCode)
    );
}

#[test]
fn attack_secret_guessing_ends_in_lockout() {
    let (mut sim, _, agent) = home();
    let id = sim.agent(agent).instance_id();
    for i in 0..5 {
        assert_eq!(
            link(
                &mut sim,
                &mallory(),
                HOME,
                id,
                LocalSecret::from_bytes([i; 32])
            ),
            Err(Refusal::WrongSecret)
        );
    }
    let secret = real_secret(&mut sim, agent);
    let before = shape(&record(&sim, HOME));
    assert_eq!(
        link(&mut sim, &alice(), HOME, id, secret.clone()),
        Err(Refusal::LockedOut)
    );
    assert_eq!(shape(&record(&sim, HOME)), before);
    assert_eq!(
        failures(&sim, HOME),
        5,
        "the locked refusal is not counted again"
    );
    assert!(
        sim.agent(agent).is_discovering(),
        "the agent never saw the guesses"
    );
    sim.advance(Duration::from_secs(600));
    // The agent's window closed meanwhile: the lockout outlived it, as intended.
    assert!(is_stopped(&sim, agent));
}

#[test]
fn attack_code_minted_for_one_agent_redeemed_by_another_is_refused() {
    let (mut sim, lan, agent) = home();
    let other = sim.add_agent(lan, ip("192.168.1.51"));
    let id = sim.agent(agent).instance_id();
    let other_id = sim.agent(other).instance_id();
    let secret = real_secret(&mut sim, agent);
    // Linking requires one visible agent: let the other one go quiet first.
    sim.agents[other].agent.cancel();
    sim.advance(Duration::from_secs(7));
    // Take the victim agent's announcement ourselves, so we can read its message.
    let announce = announce_of(&mut sim, agent);
    sim.agents[agent].agent.cancel();
    assert_eq!(
        link(&mut sim, &alice(), HOME, id, secret),
        Ok(LinkState::Pending)
    );
    let wall = sim.wall();
    let reply = sim
        .server
        .announce_now(wall, ip(HOME), ForwardedHeaders::NONE, &announce)
        .unwrap();
    let Some(AgentMessage::VerifyAndRedeem { code, .. }) = reply.messages.into_iter().next() else {
        panic!("message expected");
    };
    assert_eq!(code.expose().len(), 32, "an auto code");
    assert_eq!(
        redeem(&mut sim, HOME, other_id, code.expose()),
        Err(Refusal::CodeWrongAgent)
    );
    // Bound to the network too.
    assert_eq!(
        redeem(&mut sim, ELSEWHERE, id, code.expose()),
        Err(Refusal::CodeWrongNetwork)
    );
    // Neither attempt burnt the code: its own agent, from its own network, redeems it.
    assert_eq!(redeem(&mut sim, HOME, id, code.expose()), Ok(()));
    let wall = sim.wall();
    let status = sim
        .server
        .link_status_now(wall, &alice(), ip(HOME), ForwardedHeaders::NONE, &id)
        .unwrap();
    assert_eq!(status.state, LinkState::Linked);
}

#[test]
fn attack_wrong_instance_id_at_the_agent_is_refused() {
    let (mut sim, _, agent) = home();
    let (id, host) = local_request(&sim, agent);
    let other = InstanceId::from_bytes([9; 16]).to_string();
    for wrong in [other.as_str(), "garbage", "", &id[..35]] {
        assert_eq!(
            fetch(&mut sim, agent, LINKER_IP, Some(&host), None, wrong).unwrap_err(),
            SecretRefusal::WrongInstance,
            "{wrong:?}"
        );
    }
    assert!(sim.agent(agent).is_discovering());
    // Its own id, in either accepted form, in any case, is served.
    let simple = sim
        .agent(agent)
        .instance_id()
        .as_uuid()
        .simple()
        .to_string();
    for own in [id.clone(), simple, id.to_uppercase()] {
        assert!(
            fetch(&mut sim, agent, LINKER_IP, Some(&host), None, &own).is_ok(),
            "{own}"
        );
    }
}

#[test]
fn refusal_codes_give_no_hint_about_codes() {
    for refusal in [
        Refusal::UnknownCode,
        Refusal::CodeUsed,
        Refusal::CodeWrongAgent,
        Refusal::CodeWrongNetwork,
    ] {
        assert_eq!(refusal.code().as_str(), "invalid_code");
        assert_eq!(refusal.to_string(), "invalid code");
    }
}

#[test]
fn attack_agent_announcing_past_any_window_is_cut_off_by_the_server() {
    // A buggy or hostile agent that never closes its window: the server enforces the limit too.
    let (mut sim, _, agent) = home();
    let announce = announce_of(&mut sim, agent);
    sim.agents[agent].agent.cancel();
    let mut refused = None;
    for _ in 0..200 {
        sim.advance(Duration::from_secs(5));
        let wall = sim.wall();
        if let Err(reason) =
            sim.server
                .announce_now(wall, ip(HOME), ForwardedHeaders::NONE, &announce)
        {
            refused = Some((reason, sim.elapsed));
            break;
        }
    }
    let (reason, at) = refused.expect("refused at some point");
    assert_eq!(reason, Refusal::WindowOver);
    assert!(at > Duration::from_secs(600 + 6) && at <= Duration::from_secs(600 + 6 + 5 + 4));
    assert!(discover(&mut sim, HOME).is_empty());
    let wall = sim.wall();
    assert_eq!(
        sim.server
            .announce_now(wall, ip(HOME), ForwardedHeaders::NONE, &announce)
            .unwrap_err(),
        Refusal::InstanceUsed
    );
}

/// Revision 1.3, a device in a container: it listens behind a published port, the operator
/// pinned an address that turns out stale (`--advertise`), its LAN address is a candidate and its
/// container-internal address goes last. The linker is refused a connection at the pinned one,
/// links through the LAN one, and never tries the container's.
#[test]
fn container_agent_links_through_its_lan_candidate() {
    let mut sim = Sim::new(13);
    let lan = sim.add_lan(ip(HOME));
    let stale: std::net::SocketAddr = "192.168.1.77:8080".parse().unwrap();
    let lan_endpoint: std::net::SocketAddr = "192.168.1.50:8080".parse().unwrap();
    let internal: std::net::SocketAddr = "172.17.0.2:8080".parse().unwrap();
    let config = AgentConfig::new(internal.ip(), internal.port(), DeviceInfo::default())
        .advertise(stale)
        .candidates(vec![lan_endpoint]);
    let agent = sim.add_agent_with(lan, config).unwrap();
    assert_eq!(
        sim.agent(agent).endpoints(),
        [stale, lan_endpoint, internal]
    );
    sim.unreachable.insert(stale);
    sim.unreachable.insert(internal);
    sim.settle();
    let linker = sim.add_linker(lan, ip(LINKER_IP), "alice");
    assert!(sim.run_until(Duration::from_secs(60), |s| s.linker(linker).is_finished()));
    let id = sim.agent(agent).instance_id();
    assert_eq!(sim.linker(linker).linked(), Some(id));
    assert_eq!(sim.agent(agent).status(), AgentStatus::Linked);
    let events = &sim.linkers[linker].events;
    let tried: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            lanlink::event::LinkerEvent::EndpointUnreachable { endpoint, .. } => Some(*endpoint),
            _ => None,
        })
        .collect();
    assert_eq!(
        tried,
        [stale],
        "only the stale pinned endpoint failed; the internal one was never asked"
    );
    assert!(
        events.contains(&lanlink::event::LinkerEvent::SecretFetched {
            instance_id: id,
            from: lan_endpoint
        })
    );
}

/// Revision 1.3: when every endpoint of the agent is unreachable, the linker fails as
/// unreachable after asking each once, and nothing is linked (the page then offers the code).
#[test]
fn no_reachable_candidate_fails_unreachable() {
    let mut sim = Sim::new(14);
    let lan = sim.add_lan(ip(HOME));
    let internal: std::net::SocketAddr = "172.30.33.4:8080".parse().unwrap();
    let link_local: std::net::SocketAddr = "169.254.7.7:8080".parse().unwrap();
    let config = AgentConfig::new(internal.ip(), internal.port(), DeviceInfo::default())
        .candidates(vec![link_local]);
    let agent = sim.add_agent_with(lan, config).unwrap();
    sim.unreachable.insert(internal);
    sim.unreachable.insert(link_local);
    sim.settle();
    let linker = sim.add_linker(lan, ip(LINKER_IP), "alice");
    assert!(sim.run_until(Duration::from_secs(60), |s| s.linker(linker).is_finished()));
    assert_eq!(
        sim.linker(linker).failure(),
        Some(&lanlink::linker::LinkerFailure::Fetch(
            lanlink::linker::FetchFailure::Unreachable
        ))
    );
    assert!(sim.agent(agent).is_discovering(), "the agent is untouched");
    let tried = sim.linkers[linker]
        .events
        .iter()
        .filter(|e| matches!(e, lanlink::event::LinkerEvent::EndpointUnreachable { .. }))
        .count();
    assert_eq!(tried, 2);
}
