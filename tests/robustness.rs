//! No panic on any input: extreme clocks, extreme configurations, and arbitrary bytes on the wire.

mod support;
use support::steps::Steps;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lanlink::agent::{Agent, AgentConfig, AgentTransmit};
use lanlink::server::{Server, ServerConfig, MAX_TTL};
use lanlink::wire::{self, AnnounceReply, LinkRequest, RedeemRequest};
use lanlink::{AccountId, ConfigError, DeviceInfo, ForwardedHeaders, LocalSecret};
use proptest::prelude::*;
use rand::SeedableRng;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn server_survives_the_ends_of_time() {
    for now in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
        let server = Server::new(ServerConfig::default()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let key = lanlink::secret::PresenceKey::from_bytes([1; 32]);
        let id = key.instance_id();
        let secret = LocalSecret::from_bytes([2; 32]);
        let announce = wire::Announce::new(
            id,
            ip("192.168.0.2"),
            1,
            DeviceInfo::default(),
            secret.commitment(&id),
            key,
        );
        let peer = ip("203.0.113.1");
        let h = ForwardedHeaders::NONE;
        let alice = AccountId::new("alice").unwrap();
        let _ = server.announce_now(now, peer, h, &announce);
        let _ = server.discover_now(now, peer, h);
        for _ in 0..6 {
            let _ = server.link_now(
                now,
                &mut rng,
                &alice,
                peer,
                h,
                LinkRequest::new(id, LocalSecret::from_bytes([9; 32])),
            );
        }
        let code = server.mint_code_now(now, &mut rng, &alice).unwrap().code;
        let _ = server.redeem_now(now, &mut rng, peer, h, &RedeemRequest::new(id, code));
        let _ = server.link_status_now(now, &alice, peer, h, &id);
        server.purge_now(now);
    }
}

#[test]
fn oversized_durations_are_refused_not_overflowed() {
    let config = ServerConfig::default().presence_ttl(Duration::from_secs(u64::MAX / 4));
    assert_eq!(config.validate(), Err(ConfigError::Ttl));
    let config =
        ServerConfig::default().replay_horizon(MAX_TTL.to_std().unwrap() + Duration::from_secs(1));
    assert_eq!(config.validate(), Err(ConfigError::Ttl));
    let config = ServerConfig::default().message_ttl(Duration::ZERO);
    assert_eq!(config.validate(), Err(ConfigError::Ttl));
    let config = ServerConfig::default()
        .message_ttl(Duration::from_secs(300))
        .auto_code_ttl(Duration::from_secs(120));
    assert_eq!(config.validate(), Err(ConfigError::Ttl));
}

#[test]
fn agent_with_a_long_interval_accepts_any_poll_after() {
    let config = AgentConfig::new(ip("10.0.0.9"), 1, DeviceInfo::default())
        .announce_interval(Duration::from_secs(120));
    let now = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut agent = Agent::new(config, now, &mut rng).unwrap();
    assert!(matches!(
        agent.poll_transmit(now),
        Some(AgentTransmit::Announce(_))
    ));
    for poll_after_ms in [0, 1, 30_000, u64::MAX] {
        agent.handle_announce_reply(now, AnnounceReply::new(vec![], poll_after_ms));
    }
    // Never sooner than the configured interval.
    assert!(agent.poll_timeout().unwrap() >= now + Duration::from_secs(120));
}

proptest! {
    #[test]
    fn wire_decoding_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        macro_rules! check {
            ($ty:ty) => {
                if let Ok(value) = wire::decode::<$ty>(&bytes, wire::MAX_MESSAGE_BYTES) {
                    let again = wire::encode(&value);
                    let back: $ty = wire::decode(&again, wire::MAX_MESSAGE_BYTES).unwrap();
                    prop_assert_eq!(wire::encode(&back).to_vec(), again.to_vec());
                }
            };
        }
        check!(wire::Announce);
        check!(wire::AnnounceReply);
        check!(wire::RedeemRequest);
        check!(wire::RedeemReply);
        check!(wire::DiscoverReply);
        check!(wire::SecretReply);
        check!(wire::LinkRequest);
        check!(wire::LinkStatusReply);
        check!(wire::CodeReply);
        check!(wire::ErrorBody);
        let _ = wire::decode_announce(&bytes);
    }

    #[test]
    fn json_shaped_announcements_never_panic(
        id in "[0-9a-f-]{0,40}",
        ip in "[0-9a-f:.]{0,40}",
        port in any::<i64>(),
        host in ".{0,300}",
        commitment in "[0-9a-fA-F]{0,70}",
    ) {
        let body = serde_json::json!({
            "version": 1, "instance_id": id, "private_ip": ip, "port": port,
            "info": {"hostname": host}, "commitment": commitment,
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        if let Ok(announce) = wire::decode_announce(&bytes) {
            prop_assert!(announce.info.hostname().len() <= wire::limits::HOSTNAME);
        }
    }
}
