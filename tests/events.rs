//! Server events serialize to JSON for an audit log, and no serialized event carries a secret,
//! a presence key, a code or a token, whatever the flow (auto link, wrong guesses, manual code,
//! lockout).

use chrono::{DateTime, TimeDelta, Utc};
use lanlink::event::ServerEvent;
use lanlink::secret::PresenceKey;
use lanlink::server::{Server, ServerConfig};
use lanlink::wire::{AgentMessage, Announce, LinkRequest, RedeemRequest, WIRE_VERSION};
use lanlink::{AccountId, ForwardedHeaders, LinkCode, LocalSecret, Refusal};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn drain(server: &mut Server, into: &mut Vec<ServerEvent>) {
    while let Some(event) = server.poll_event() {
        into.push(event);
    }
}

#[test]
fn every_server_event_serializes_without_secrets() {
    let mut server = Server::new(ServerConfig::default()).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
    let home = "203.0.113.7".parse().unwrap();
    let elsewhere = "198.51.100.9".parse().unwrap();
    let none = ForwardedHeaders::NONE;
    let key = PresenceKey::from_bytes([0x5a; 32]);
    let secret = LocalSecret::from_bytes([0xa5; 32]);
    let id = key.instance_id();
    let announce = Announce {
        candidates: Vec::new(),
        version: WIRE_VERSION,
        instance_id: id,
        private_ip: "192.168.1.50".parse().unwrap(),
        port: 8080,
        info: Default::default(),
        commitment: secret.commitment(&id),
        presence_key: key.clone(),
    };
    let alice = AccountId::new("alice").unwrap();
    let mut events = Vec::new();
    let mut forbidden: Vec<String> = vec![
        secret.to_hex().to_string(),
        key.to_hex().to_string(),
        secret.commitment(&id).to_hex(),
    ];

    server.handle_announce(now, home, none, &announce).unwrap();
    server.handle_discover(now, home, none).unwrap();
    // Wrong guesses from elsewhere, up to a lockout.
    for n in 0..6u8 {
        let guess = LinkRequest {
            instance_id: id,
            local_secret: LocalSecret::from_bytes([n; 32]),
            nonce: None,
        };
        forbidden.push(guess.local_secret.to_hex().to_string());
        let _ = server.handle_link(now, &mut rng, &alice, elsewhere, none, guess);
    }
    let right = LinkRequest {
        instance_id: id,
        local_secret: secret.clone(),
        nonce: None,
    };
    server
        .handle_link(now, &mut rng, &alice, home, none, right)
        .unwrap();
    let reply = server.handle_announce(now, home, none, &announce).unwrap();
    let Some(AgentMessage::VerifyAndRedeem { code, .. }) = reply.messages.first() else {
        panic!("the message");
    };
    forbidden.push(code.expose().to_owned());
    let redeem = RedeemRequest {
        instance_id: id,
        code: code.clone(),
        presence_key: None,
        attempt: 0,
    };
    let redeemed = server
        .handle_redeem(now, &mut rng, home, none, &redeem)
        .unwrap();
    forbidden.push(redeemed.reply.auth_token.to_hex().to_string());
    // A manual code, a wrong one and the right one.
    let later = now + TimeDelta::seconds(1);
    let manual = server.mint_code(later, &mut rng, &alice).unwrap().code;
    forbidden.push(manual.expose().to_owned());
    let wrong = RedeemRequest {
        instance_id: id,
        code: LinkCode::parse("wrong-code").unwrap(),
        presence_key: None,
        attempt: 0,
    };
    assert_eq!(
        server
            .handle_redeem(later, &mut rng, home, none, &wrong)
            .unwrap_err(),
        Refusal::UnknownCode
    );
    drain(&mut server, &mut events);

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
