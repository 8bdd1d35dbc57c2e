//! One flow run on one Redis node and on a cluster: a dual-stack agent, a link that fails after
//! claiming the instance, its claim let go in Redis, the other network's link accepted at once.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lanlink::event::RequestKind;
use lanlink::server::redis::RedisStore;
use lanlink::server::{Events, Records, Server, ServerConfig, User};
use lanlink::wire::{LinkRequest, LinkState};
use lanlink::{AccountId, LocalSecret, Refusal};

use super::held::Held;
use super::redis_server::RedisNames;

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

/// Two servers over `first` and `second` (two connections to the same Redis, one node or a
/// cluster). The agent announced by `announcement` is on the networks of 203.0.113.7 and
/// 2001:db8:7:1::20. The first server takes a link from the IPv4 network and claims the
/// instance; before its accepting write (held), the agent's announcement through the second
/// changes the presence (another commitment: contested), so the re-check refuses the link
/// `agent_contested`. Its claim's key is deleted, and the IPv6 network's link is accepted at
/// once. `codes`, where the store can list its keys (one node), counts the code keys: two while
/// the accept waits (the claim and the link's code), none after.
pub async fn a_failed_link_lets_go_of_its_claim(
    first: Records<RedisStore>,
    second: Records<RedisStore>,
    (x, secret): (lanlink::wire::Announce, LocalSecret),
    codes: Option<&dyn Fn() -> usize>,
) {
    let held = Arc::new(Held::new(first));
    let first = Server::with_store(ServerConfig::default(), held.clone(), Events::discard())
        .expect("config");
    let second =
        Server::with_store(ServerConfig::default(), second, Events::discard()).expect("config");
    let alice = AccountId::new("alice").expect("account");
    let none = lanlink::ForwardedHeaders::NONE;
    let (v4, v6): (IpAddr, IpAddr) = (
        "203.0.113.7".parse().expect("ip"),
        "2001:db8:7:1::20".parse().expect("ip"),
    );
    for from in [v4, v6] {
        let network = second
            .caller(RequestKind::Announce, from, none)
            .expect("a public peer");
        second.announce(now(), network, &x).await.expect("announce");
    }
    let request = || LinkRequest::new(x.instance_id, secret.clone());
    let claim_key = held
        .inner
        .code_name(&lanlink::code::CodeKey::instance_claim(&x.instance_id));
    let claim_held = || async {
        let mut conn = held.inner.store().connection();
        let value: Option<Vec<u8>> = redis::AsyncCommands::get(&mut conn, &claim_key)
            .await
            .expect("get");
        value.is_some()
    };
    // Charge, charge, check, claim, create the code: call 5 is the accepting write.
    let (paused, resume) = held.pause_in(5);
    let racing = {
        let mut m = x.clone();
        m.commitment = LocalSecret::from_bytes([3; 32]).commitment(&x.instance_id);
        m
    };
    let mut rng = lanlink::os_rng();
    let user = User::new(alice.clone());
    let home_v4 = first
        .caller(RequestKind::Link, v4, none)
        .expect("a public peer");
    let (refused, ()) = tokio::join!(
        first.link(now(), &mut rng, home_v4, &user, request()),
        async {
            paused.await.expect("the accept waits");
            assert!(claim_held().await, "the link holds the claim");
            if let Some(codes) = codes {
                assert_eq!(codes(), 2, "the claim and the link's code");
            }
            let _ = second.announce(now(), home_v4, &racing).await;
            resume.send(()).expect("resume");
        }
    );
    assert_eq!(refused.map(|_| ()), Err(Refusal::AgentContested));
    assert!(!claim_held().await, "the claim's key is deleted");
    if let Some(codes) = codes {
        assert_eq!(codes(), 0, "the claim is deleted with the link's code");
    }
    let home_v6 = second
        .caller(RequestKind::Link, v6, none)
        .expect("a public peer");
    let linked = second
        .link(now(), &mut lanlink::os_rng(), home_v6, &user, request())
        .await
        .expect("the other network links at once");
    assert_eq!(linked.state, LinkState::Pending);
}
