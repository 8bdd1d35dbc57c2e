//! Server and agent events serialize to JSON for an audit log, and no serialized event carries a
//! secret, a presence key, a code or a token, whatever the flow (auto link, wrong guesses, manual
//! code, lockout).

mod support;
use support::steps::Steps;

use chrono::{DateTime, TimeDelta, Utc};
use lanlink::event::ServerEvent;
use lanlink::secret::PresenceKey;
use lanlink::server::{Events, Server, ServerConfig, MAX_QUEUED_EVENTS};
use lanlink::wire::{AgentMessage, Announce, LinkRequest, RedeemRequest};
use lanlink::{AccountId, ForwardedHeaders, LinkCode, LocalSecret, PublicNetwork, Refusal};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn drain(server: &Server, into: &mut Vec<ServerEvent>) {
    while let Some(event) = server.poll_event() {
        into.push(event);
    }
}

#[test]
fn every_server_event_serializes_without_secrets() {
    let server = Server::new(ServerConfig::default()).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
    let home = "203.0.113.7".parse().unwrap();
    let elsewhere = "198.51.100.9".parse().unwrap();
    let none = ForwardedHeaders::NONE;
    let key = PresenceKey::from_bytes([0x5a; 32]);
    let secret = LocalSecret::from_bytes([0xa5; 32]);
    let id = key.instance_id();
    let announce = Announce::new(
        id,
        "192.168.1.50".parse().unwrap(),
        8080,
        Default::default(),
        secret.commitment(&id),
        key.clone(),
    );
    let alice = AccountId::new("alice").unwrap();
    let mut events = Vec::new();
    let mut forbidden: Vec<String> = vec![
        secret.to_hex().to_string(),
        key.to_hex().to_string(),
        secret.commitment(&id).to_hex(),
    ];

    server.announce_now(now, home, none, &announce).unwrap();
    server.discover_now(now, home, none).unwrap();
    // Wrong guesses from elsewhere, up to a lockout.
    for n in 0..6u8 {
        let guess = LinkRequest::new(id, LocalSecret::from_bytes([n; 32]));
        forbidden.push(guess.local_secret.to_hex().to_string());
        let _ = server.link_now(now, &mut rng, &alice, elsewhere, none, guess);
    }
    let right = LinkRequest::new(id, secret.clone());
    server
        .link_now(now, &mut rng, &alice, home, none, right)
        .unwrap();
    let reply = server.announce_now(now, home, none, &announce).unwrap();
    let Some(AgentMessage::VerifyAndRedeem { code, .. }) = reply.messages.first() else {
        panic!("the message");
    };
    forbidden.push(code.expose().to_owned());
    let redeem = RedeemRequest::new(id, code.clone());
    let redeemed = server
        .redeem_now(now, &mut rng, home, none, &redeem)
        .unwrap();
    forbidden.push(redeemed.reply.auth_token.to_hex().to_string());
    // A manual code, a wrong one and the right one.
    let later = now + TimeDelta::seconds(1);
    let manual = server.mint_code_now(later, &mut rng, &alice).unwrap().code;
    forbidden.push(manual.expose().to_owned());
    let wrong = RedeemRequest::new(id, LinkCode::parse("wrong-code").unwrap());
    assert_eq!(
        server
            .redeem_now(later, &mut rng, home, none, &wrong)
            .unwrap_err(),
        Refusal::UnknownCode
    );
    drain(&server, &mut events);

    let kinds: std::collections::BTreeSet<String> = events
        .iter()
        .map(|event| {
            let json = serde_json::to_string(event).unwrap();
            for secret in &forbidden {
                assert!(!json.contains(secret.as_str()), "{json} leaks a secret");
            }
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            value["event"].as_str().unwrap().to_owned()
        })
        .collect();
    for kind in [
        "announced",
        "discovered",
        "refused",
        "locked_out",
        "link_accepted",
        "linked",
        "code_minted",
    ] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    // A refusal reads as its stable code.
    let refused = events
        .iter()
        .find(|e| matches!(e, ServerEvent::Refused { .. }))
        .unwrap();
    let value = serde_json::to_value(refused).unwrap();
    assert_eq!(value["reason"], "agent_not_found", "not on that network");
    assert_eq!(value["request"], "link");
    assert_eq!(value["network"], "198.51.100.9");
}

/// The `n`th of many public addresses, each its own network.
fn peer(n: usize) -> std::net::IpAddr {
    std::net::IpAddr::from([198, 18 + (n >> 16) as u8, (n >> 8) as u8, n as u8])
}

/// One discovery from `peer(n)`: exactly one event, naming its network.
fn discover(server: &Server, n: usize) {
    let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
    server
        .discover_now(now, peer(n), ForwardedHeaders::NONE)
        .unwrap();
}

fn discovered(n: usize) -> impl Fn(&ServerEvent) -> bool {
    move |event| {
        matches!(event, ServerEvent::Discovered { network, .. }
            if *network == PublicNetwork::from_ip(peer(n), 64))
    }
}

#[test]
fn a_full_queue_reports_the_events_it_lost_where_they_were() {
    let server = Server::new(ServerConfig::default()).unwrap();
    for n in 0..MAX_QUEUED_EVENTS + 3 {
        discover(&server, n);
    }
    // The host sees the loss in the stream it drains: the first events in order, then one
    // `EventsLost` counting the three that found no room, and nothing invented after it.
    let mut events = Vec::new();
    drain(&server, &mut events);
    assert_eq!(events.len(), MAX_QUEUED_EVENTS + 1);
    for (n, event) in events[..MAX_QUEUED_EVENTS].iter().enumerate() {
        assert!(
            discovered(n)(event),
            "event {n} is the {n}th discovery: {event:?}"
        );
    }
    assert_eq!(
        events[MAX_QUEUED_EVENTS],
        ServerEvent::EventsLost { count: 3 }
    );
    assert_eq!(
        serde_json::to_string(&events[MAX_QUEUED_EVENTS]).unwrap(),
        r#"{"event":"events_lost","count":3}"#
    );
    assert_eq!(server.lost_events(), 3);

    // Drained, the queue records again.
    discover(&server, 1_000_000);
    assert!(server
        .poll_event()
        .is_some_and(|e| discovered(1_000_000)(&e)));
    assert!(server.poll_event().is_none());

    // Full again, and drained only in part: what comes next queues after the gap, in order.
    for n in 0..MAX_QUEUED_EVENTS + 2 {
        discover(&server, n);
    }
    assert!(server.poll_event().is_some_and(|e| discovered(0)(&e)));
    assert!(server.poll_event().is_some_and(|e| discovered(1)(&e)));
    discover(&server, 1_000_001);
    let mut events = Vec::new();
    drain(&server, &mut events);
    assert_eq!(events.len(), MAX_QUEUED_EVENTS);
    assert!(discovered(MAX_QUEUED_EVENTS - 1)(
        &events[MAX_QUEUED_EVENTS - 3]
    ));
    assert_eq!(
        events[MAX_QUEUED_EVENTS - 2],
        ServerEvent::EventsLost { count: 2 }
    );
    assert!(discovered(1_000_001)(&events[MAX_QUEUED_EVENTS - 1]));
    assert_eq!(server.lost_events(), 5);
}

#[test]
fn with_a_sink_no_event_is_lost() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = Server::new(ServerConfig::default()).unwrap();
    // Queued before the sink is set: handed to it, not stranded in the queue.
    discover(&server, 0);
    let log = seen.clone();
    let server = server.with_events(Events::sink(move |event| log.lock().unwrap().push(event)));
    for n in 1..MAX_QUEUED_EVENTS + 3 {
        discover(&server, n);
    }
    assert!(server.poll_event().is_none());
    assert_eq!(server.lost_events(), 0);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), MAX_QUEUED_EVENTS + 3);
    for (n, event) in seen.iter().enumerate() {
        assert!(discovered(n)(event), "{event:?}");
    }
}

/// Everything `agent` has to say, drained.
fn drain_agent(agent: &mut lanlink::agent::Agent, into: &mut Vec<lanlink::event::AgentEvent>) {
    while let Some(event) = agent.poll_event() {
        into.push(event);
    }
}

#[test]
fn agent_events_serialize_without_secrets_through_a_whole_link() {
    use lanlink::agent::{Agent, AgentConfig, AgentTransmit, SecretRequest};
    use lanlink::DeviceInfo;
    use std::time::{Duration, Instant};

    let server = Server::new(ServerConfig::default()).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let wall = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
    let start = Instant::now();
    let home = "203.0.113.7".parse().unwrap();
    let none = ForwardedHeaders::NONE;
    let alice = AccountId::new("alice").unwrap();
    let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default());
    let mut agent = Agent::new(config.clone(), start, &mut rng).unwrap();
    let mut events = Vec::new();
    let mut forbidden = Vec::new();

    // Announce; a linker on the LAN fetches the secret (and a wrong caller is refused).
    let Some(AgentTransmit::Announce(announce)) = agent.poll_transmit(start) else {
        panic!("the first announcement");
    };
    forbidden.push(announce.presence_key.to_hex().to_string());
    let reply = server.announce_now(wall, home, none, &announce).unwrap();
    agent.handle_announce_reply(start, reply);
    let id = agent.instance_id().to_string();
    let request = |peer: &str| SecretRequest {
        peer: peer.parse().unwrap(),
        forwarded: ForwardedHeaders::NONE,
        host: Some("192.168.1.50:8080"),
        origin: None,
        instance_id: &id,
    };
    assert!(agent
        .handle_secret_request(start, &request("8.8.8.8"))
        .is_err());
    let secret = agent
        .handle_secret_request(start, &request("192.168.1.20"))
        .unwrap()
        .local_secret;
    forbidden.push(secret.to_hex().to_string());

    // Link; the next announcement delivers the code; the agent verifies and redeems it.
    let link = LinkRequest::new(agent.instance_id(), secret);
    server
        .link_now(wall, &mut rng, &alice, home, none, link)
        .unwrap();
    let later = start + Duration::from_secs(10);
    let Some(AgentTransmit::Announce(announce)) = agent.poll_transmit(later) else {
        panic!("the second announcement");
    };
    let reply = server.announce_now(wall, home, none, &announce).unwrap();
    if let Some(AgentMessage::VerifyAndRedeem { code, .. }) = reply.messages.first() {
        forbidden.push(code.expose().to_owned());
    }
    agent.handle_announce_reply(later, reply);
    let Some(AgentTransmit::Redeem(redeem)) = agent.poll_transmit(later) else {
        panic!("the redemption");
    };
    let redeemed = server
        .redeem_now(wall, &mut rng, home, none, &redeem)
        .unwrap();
    forbidden.push(redeemed.reply.auth_token.to_hex().to_string());
    agent
        .handle_redeem_reply(later, Ok(redeemed.reply))
        .unwrap();
    drain_agent(&mut agent, &mut events);

    // Another agent is given a manual code the server does not know: it stops.
    let mut other = Agent::new(config, start, &mut rng).unwrap();
    let typed = LinkCode::parse("wrong-code").unwrap();
    forbidden.push(typed.expose().to_owned());
    other.enter_code(start, typed).unwrap();
    loop {
        match other.poll_transmit(start) {
            Some(AgentTransmit::Announce(announce)) => {
                let reply = server.announce_now(wall, home, none, &announce).unwrap();
                other.handle_announce_reply(start, reply);
            }
            Some(AgentTransmit::Redeem(redeem)) => {
                let refusal = server
                    .redeem_now(wall, &mut rng, home, none, &redeem)
                    .unwrap_err();
                other
                    .handle_redeem_reply(start, Err(refusal.code()))
                    .unwrap();
            }
            _ => break,
        }
    }
    drain_agent(&mut other, &mut events);

    let mut names = std::collections::BTreeSet::new();
    for event in &events {
        let json = serde_json::to_string(event).unwrap();
        for secret in &forbidden {
            assert!(!json.contains(secret.as_str()), "{json} leaks a secret");
        }
        names.insert(event.name());
    }
    for name in [
        "discovery_started",
        "visibility",
        "secret_refused",
        "secret_served",
        "secret_verified",
        "redeem_started",
        "linked",
        "stopped",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    let stopped = serde_json::to_value(events.last().unwrap()).unwrap();
    assert_eq!(
        stopped,
        serde_json::json!({ "event": "stopped", "reason": "redeem_refused", "refusal": "invalid_code" })
    );
}

/// The audit keeps the precise reason the wire collapses: a replayed code and a wrong guess
/// both answer `invalid_code`, and their `refused` events tell them apart by `detail`.
#[test]
fn the_audit_tells_a_replayed_code_from_a_wrong_guess() {
    let server = Server::new(ServerConfig::default()).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
    let home = "203.0.113.7".parse().unwrap();
    let none = ForwardedHeaders::NONE;
    let alice = AccountId::new("alice").unwrap();
    let agent = |n: u8| {
        let key = PresenceKey::from_bytes([n; 32]);
        let id = key.instance_id();
        let secret = LocalSecret::from_bytes([n ^ 0xff; 32]);
        Announce::new(
            id,
            "192.168.1.50".parse().unwrap(),
            8080,
            Default::default(),
            secret.commitment(&id),
            key,
        )
    };
    let (first, second) = (agent(1), agent(2));
    server.announce_now(now, home, none, &first).unwrap();
    server.announce_now(now, home, none, &second).unwrap();
    let code = server.mint_code_now(now, &mut rng, &alice).unwrap().code;
    let redeem = |id, code: &LinkCode| RedeemRequest::new(id, code.clone());
    server
        .redeem_now(now, &mut rng, home, none, &redeem(first.instance_id, &code))
        .unwrap();
    drain(&server, &mut Vec::new());

    // The same code again, by another agent: a replay.
    let replayed = server
        .redeem_now(
            now,
            &mut rng,
            home,
            none,
            &redeem(second.instance_id, &code),
        )
        .unwrap_err();
    // A code nobody minted: a wrong guess.
    let guessed = server
        .redeem_now(
            now,
            &mut rng,
            home,
            none,
            &redeem(second.instance_id, &LinkCode::parse("wrong-code").unwrap()),
        )
        .unwrap_err();
    assert_eq!(guessed, Refusal::UnknownCode);
    assert_ne!(replayed, guessed, "the server knows which is which");
    // The wire collapses them ...
    assert_eq!(replayed.code(), guessed.code());
    assert_eq!(replayed.code().as_str(), "invalid_code");
    // ... the audit does not.
    let mut events = Vec::new();
    drain(&server, &mut events);
    let refused: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Refused { .. }))
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    for (value, refusal) in refused.iter().zip([&replayed, &guessed]) {
        assert_eq!(value["event"], "refused");
        assert_eq!(value["request"], "redeem");
        assert_eq!(value["reason"], "invalid_code", "the wire's code");
        assert_eq!(value["detail"], refusal.detail(), "the precise reason");
    }
    assert_eq!(refused[1]["detail"], "unknown_code");
    assert_ne!(refused[0]["detail"], refused[1]["detail"]);
    // Nothing but these keys (no code, no input).
    for value in &refused {
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in &keys {
            assert!(
                ["event", "network", "request", "reason", "detail"].contains(key),
                "{key} in {value}"
            );
        }
    }
}
