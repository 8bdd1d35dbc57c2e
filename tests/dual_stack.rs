//! Dual-stack presence (issue 15): an agent with IPv4 and IPv6 connectivity announces over both,
//! so the server holds one presence (one instance, one presence key) in two public networks.
//! A linker of either network finds and links it; its secret is good for one link in all of
//! them; neither network sees the other's agents.

mod support;

use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use lanlink::server::{Server, ServerConfig};
use lanlink::wire::{AgentMessage, LinkRequest, RedeemRequest};
use lanlink::{AccountId, ForwardedHeaders, Refusal};

const V4: &str = "203.0.113.7";
const V6: &str = "2001:db8:7:1::20";
const ELSEWHERE: &str = "198.51.100.1";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("time")
}

fn alice() -> AccountId {
    AccountId::new("alice").expect("account")
}

fn link(
    server: &mut Server,
    now: DateTime<Utc>,
    from: &str,
    request: LinkRequest,
) -> Result<(), Refusal> {
    server
        .handle_link(
            now,
            &mut lanlink::os_rng(),
            &alice(),
            ip(from),
            ForwardedHeaders::NONE,
            request,
        )
        .map(|_| ())
}

/// The dual-stack agent is shown in both of its networks; an agent present only in the IPv4
/// network is never shown to the IPv6 one (nor the reverse), and a third network sees nothing.
#[test]
fn a_presence_in_two_networks_shows_each_only_its_own() {
    let mut server = Server::new(ServerConfig::default().max_visible(2)).expect("server");
    let now = t0();
    let (dual, _) = support::announcement(1, "192.168.1.50");
    let (v4_only, _) = support::announcement(2, "192.168.1.51");
    let (v6_only, _) = support::announcement(3, "192.168.1.52");
    for (from, announce) in [(V4, &dual), (V6, &dual), (V4, &v4_only), (V6, &v6_only)] {
        server
            .handle_announce(now, ip(from), ForwardedHeaders::NONE, announce)
            .expect("announce");
    }
    let shown = |server: &mut Server, from: &str| {
        let mut ids: Vec<_> = server
            .handle_discover(now, ip(from), ForwardedHeaders::NONE)
            .expect("discover")
            .agents
            .iter()
            .map(|a| a.instance_id)
            .collect();
        ids.sort();
        ids
    };
    let mut want_v4 = vec![dual.instance_id, v4_only.instance_id];
    want_v4.sort();
    let mut want_v6 = vec![dual.instance_id, v6_only.instance_id];
    want_v6.sort();
    assert_eq!(shown(&mut server, V4), want_v4);
    assert_eq!(shown(&mut server, V6), want_v6);
    assert!(shown(&mut server, ELSEWHERE).is_empty());
}

/// Linked through one network, the instance is unlinkable from the other (`already_linking`,
/// with the right secret); the code is delivered in the linking network only and redeems from
/// there only.
#[test]
fn one_link_per_instance_across_its_networks() {
    for (first, second) in [(V4, V6), (V6, V4)] {
        let mut server = Server::new(ServerConfig::default()).expect("server");
        let now = t0();
        let (announce, secret) = support::announcement(1, "192.168.1.50");
        let id = announce.instance_id;
        for from in [first, second] {
            server
                .handle_announce(now, ip(from), ForwardedHeaders::NONE, &announce)
                .expect("announce");
        }
        let request = || LinkRequest {
            instance_id: id,
            local_secret: secret.clone(),
        };
        link(&mut server, now, first, request()).expect("the first link");
        assert_eq!(
            link(&mut server, now, second, request()),
            Err(Refusal::AlreadyLinking),
            "linked from {first}, then from {second}"
        );
        // The message comes in the linking network's reply only.
        let later = now + TimeDelta::seconds(2);
        let elsewhere = server
            .handle_announce(later, ip(second), ForwardedHeaders::NONE, &announce)
            .expect("announce");
        assert!(elsewhere.messages.is_empty());
        let reply = server
            .handle_announce(later, ip(first), ForwardedHeaders::NONE, &announce)
            .expect("announce");
        let code = match reply.messages.as_slice() {
            [AgentMessage::VerifyAndRedeem { code, .. }] => code.clone(),
            other => panic!("one message expected, got {other:?}"),
        };
        let redeem = RedeemRequest {
            instance_id: id,
            code,
            presence_key: Some(announce.presence_key.clone()),
            attempt: 1,
        };
        let wrong_way = server.handle_redeem(
            later,
            &mut lanlink::os_rng(),
            ip(second),
            ForwardedHeaders::NONE,
            &redeem,
        );
        assert_eq!(wrong_way.unwrap_err(), Refusal::CodeWrongNetwork);
        let redeemed = server
            .handle_redeem(
                later,
                &mut lanlink::os_rng(),
                ip(first),
                ForwardedHeaders::NONE,
                &redeem,
            )
            .expect("redeem through the linking network");
        assert_eq!(redeemed.instance_id, id);
        // After completion, still unlinkable in every network it was in.
        for from in [first, second] {
            assert_eq!(
                link(&mut server, later, from, request()),
                Err(Refusal::AlreadyLinking),
                "after the link, from {from}"
            );
        }
    }
}

/// The claim lives as long as any presence of the instance can, and no longer: a wrong secret
/// never writes one (it cannot block the owner's network), and a claim of the same network
/// is the request's own (a retry after a fault goes through).
#[test]
fn a_wrong_secret_claims_nothing() {
    let mut server = Server::new(ServerConfig::default()).expect("server");
    let now = t0();
    let (announce, secret) = support::announcement(1, "192.168.1.50");
    let id = announce.instance_id;
    for from in [V4, V6] {
        server
            .handle_announce(now, ip(from), ForwardedHeaders::NONE, &announce)
            .expect("announce");
    }
    let wrong = LinkRequest {
        instance_id: id,
        local_secret: lanlink::LocalSecret::from_bytes([9; 32]),
    };
    assert_eq!(link(&mut server, now, V6, wrong), Err(Refusal::WrongSecret));
    let right = LinkRequest {
        instance_id: id,
        local_secret: secret,
    };
    link(&mut server, now, V4, right).expect("the owner's link is not blocked");
}
