//! The Obico profile on Redis: two server instances share one real `redis-server`, and the test's
//! Obico agents (`support::obico_agent`) link through them over loopback HTTP.
//!
//! Instances are the built `server` example (`--profile obico --redis`) as separate processes
//! when it is built (`cargo build --all-features --example server`, or a plain
//! `cargo test --all-features`), else in-process services, each with its own Redis connection.
//! Without `redis-server` on `PATH` each test prints a skip line and passes (fails under
//! `CI=true`).
//!
//! Client addresses: every instance trusts the proxy 127.0.0.2; agents and linkers connect from
//! it and name their public network in `X-Forwarded-For`.
#![cfg(all(feature = "redis", feature = "obico"))]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use lanlink::http::server::{log_event, router};
use lanlink::http::{BearerTokens, DEFAULT_PREFIX};
use lanlink::obico::linker::ObicoLinker;
use lanlink::obico::ObicoConfig;
use lanlink::server::redis::{RedisStore, RedisStoreConfig};
use lanlink::server::{Events, Server, ServerConfig};
use lanlink::server::{Records, RecordsConfig, StoreKey};
use lanlink::AccountId;
use serde_json::{json, Value};
use support::instance::{server_binary, Instance};
use support::obico_agent::*;
use support::redis_server::{have, Redis};

const TOKEN: &str = "alice-test-token";
const HOME: &str = "203.0.113.7";
const ELSEWHERE: &str = "198.51.100.9";

fn store_key() -> StoreKey {
    StoreKey::from_bytes([9; 32])
}

/// One server instance serving both profiles on Redis (see `support::instance`).
impl Instance {
    async fn start(redis: &Redis, lockout_threshold: u32) -> Self {
        let threshold = lockout_threshold.to_string();
        match server_binary() {
            Some(binary) => {
                let args = [
                    "--profile",
                    "obico",
                    "--trusted-proxy",
                    "127.0.0.2/32",
                    "--lockout-threshold",
                    &threshold,
                    "--redis",
                    &redis.url(),
                ];
                Self::spawn(&binary, TOKEN, &store_key(), &args)
            }
            None => {
                let config = ServerConfig::default()
                    .trusted_proxies(vec![format!("{PROXY}/32").parse().unwrap()])
                    .lockout_threshold(lockout_threshold);
                let store = RedisStore::connect(RedisStoreConfig::new(redis.url()))
                    .await
                    .expect("connect to redis");
                // One set of records for both: the server's and the printers' tokens.
                let store = Arc::new(Records::new(store, RecordsConfig::new(store_key())));
                let service = Arc::new(
                    Server::with_store(config, store.clone(), Events::sink(log_event))
                        .expect("config"),
                );
                let alice = AccountId::new("alice").expect("account");
                let auth = Arc::new(BearerTokens::new(vec![(TOKEN.to_owned(), alice)]));
                let obico = lanlink::obico::server::router_with_tokens(
                    Arc::clone(&service),
                    auth.clone(),
                    ObicoConfig::default(),
                    store,
                )
                .unwrap();
                Self::serve(router(service, auth, DEFAULT_PREFIX).merge(obico)).await
            }
        }
    }
}

/// Two instances on one fresh Redis.
async fn two(lockout_threshold: u32) -> Option<(Redis, Instance, Instance)> {
    if !have("redis-server") {
        return None;
    }
    let redis = Redis::start();
    let first = Instance::start(&redis, lockout_threshold).await;
    let second = Instance::start(&redis, lockout_threshold).await;
    assert_ne!(first.base(), second.base());
    Some((redis, first, second))
}

fn linker(instance: &Instance, network: &str) -> ObicoLinker {
    ObicoLinker::with_client(client(PROXY, Some(network)), &instance.base(), TOKEN)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < LIMIT * 2, "{what}: not within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn shown(linker: &ObicoLinker) -> usize {
    linker
        .discover()
        .await
        .map_or(usize::MAX, |list| list.len())
}

async fn wait_visible(linker: &ObicoLinker, n: usize) {
    let start = tokio::time::Instant::now();
    while shown(linker).await != n {
        assert!(start.elapsed() < LIMIT * 2, "{n} agents never shown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A manual code minted through the lanlink route of `instance`.
async fn mint(instance: &Instance) -> String {
    let response = client(PROXY, Some(ELSEWHERE))
        .post(format!("{}{DEFAULT_PREFIX}/codes", instance.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let body = json_of(response).await.unwrap();
    body["code"].as_str().unwrap().to_owned()
}

/// `GET /api/v1/octo/printer/` on `instance` with `token`.
async fn printer(instance: &Instance, token: &str) -> (u16, Value) {
    let response = client(PROXY, Some(HOME))
        .get(format!("{}/api/v1/octo/printer/", instance.base()))
        .header("authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, json_of(response).await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_flow_the_agent_on_one_instance_the_user_on_the_other() {
    let Some((_redis, first, second)) = two(5).await else {
        return;
    };
    let agent = ObicoAgent::start(&first.base(), HOME, Flavour::OctoPrint).await;
    let alice = linker(&second, HOME);
    wait_visible(&alice, 1).await;
    let device = alice.link_first().await.unwrap();
    assert_eq!(device.device_id, agent.instance());
    eventually("agent linked", || agent.token().is_some()).await;
    assert_eq!(agent.stopped().as_deref(), Some("verified"));
    // It links once: neither instance shows it again.
    assert_eq!(shown(&linker(&first, HOME)).await, 0);
    assert_eq!(shown(&alice).await, 0);
    // Its post-link call works on the instance that linked it, and on the other one (the
    // token's record is in Redis), and no other token is accepted on either.
    for instance in [&first, &second] {
        let (status, body) = printer(instance, &agent.token().unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["printer"]["name"], "voron");
        let (status, _) = printer(instance, &"ab".repeat(32)).await;
        assert_eq!(status, 401);
    }

    // A moonraker agent after it, acting on exactly one message.
    let moonraker = ObicoAgent::start(&second.base(), HOME, Flavour::Moonraker).await;
    let bob = linker(&first, HOME);
    wait_visible(&bob, 1).await;
    bob.link_first().await.unwrap();
    eventually("moonraker linked", || moonraker.token().is_some()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_digit_flow_minted_on_one_instance_redeemed_on_the_other() {
    let Some((_redis, first, second)) = two(5).await else {
        return;
    };
    let agent = ObicoAgent::start(&first.base(), HOME, Flavour::OctoPrint).await;
    let code = mint(&second).await;
    assert_eq!(code.len(), 6);
    let (status, body) = agent.verify(&code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["printer"]["auth_token"].as_str().unwrap().len(), 64);
    assert_eq!(body["code"], code.as_str());
    // Single use across instances.
    let other = ObicoAgent::start(&second.base(), HOME, Flavour::OctoPrint).await;
    let (status, body) = other.verify(&code).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"detail": "invalid_code"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passcode_flow_shown_through_one_instance_claimed_through_the_other() {
    let Some((redis, first, second)) = two(5).await else {
        return;
    };
    let agent = ObicoAgent::start(&first.base(), HOME, Flavour::Moonraker).await;
    eventually("passcode shown", || agent.state(|s| !s.passcode.is_empty())).await;
    let passcode = agent.state(|s| s.passcode.clone());
    // The passcode record is in Redis, encrypted: the passcode is not there in the clear.
    for (_, value) in redis.dump() {
        let text = String::from_utf8_lossy(&value);
        assert!(!text.contains(&passcode), "a passcode in the clear");
    }
    linker(&second, ELSEWHERE)
        .claim_passcode(&passcode)
        .await
        .unwrap();
    eventually("agent linked", || agent.token().is_some()).await;
    assert_eq!(agent.stopped().as_deref(), Some("verified by passcode"));
    // Claimed once: a second claim through either instance is refused.
    let again = linker(&first, ELSEWHERE).claim_passcode(&passcode).await;
    assert!(again.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_visible_rule_and_lockouts_hold_across_instances() {
    let Some((_redis, first, second)) = two(3).await else {
        return;
    };
    // Two printers of one network on two hosts, each polling its own instance: with
    // `max_visible` 1 neither instance shows either.
    let device = |n: u8| format!("{:0>32}", format!("4{n}"));
    let device_id = |n: u8| {
        let id = device(n);
        // A version-4 UUID in 32-hex form.
        format!("{}4{}8{}", &id[..12], &id[13..16], &id[17..])
    };
    let a =
        ObicoAgent::start_from(&first.base(), Some(HOME), Flavour::OctoPrint, device_id(1)).await;
    a.state(|s| s.host_or_ip = Some("192.168.1.20".into()));
    let b =
        ObicoAgent::start_from(&second.base(), Some(HOME), Flavour::OctoPrint, device_id(2)).await;
    b.state(|s| s.host_or_ip = Some("192.168.1.21".into()));
    eventually("both polled", || {
        a.state(|s| s.polls) >= 2 && b.state(|s| s.polls) >= 2
    })
    .await;
    for instance in [&first, &second] {
        assert_eq!(shown(&linker(instance, HOME)).await, 0);
    }
    // Wrong codes from one network, alternating instances, lock it out on both; the right code
    // is then refused too, and stays unused.
    let right = mint(&first).await;
    for (i, instance) in [&first, &second, &first].into_iter().enumerate() {
        let guesser = ObicoAgent::start(&instance.base(), HOME, Flavour::OctoPrint).await;
        guesser.stop("guessing only");
        let wrong = format!(
            "{:06}",
            (right.parse::<u32>().unwrap() + 1 + i as u32) % 1_000_000
        );
        let (status, _) = guesser.verify(&wrong).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "guess {i}");
    }
    for instance in [&first, &second] {
        let guesser = ObicoAgent::start(&instance.base(), HOME, Flavour::OctoPrint).await;
        guesser.stop("guessing only");
        let (status, body) = guesser.verify(&right).await;
        assert_eq!(
            (status, body["detail"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("locked_out"))
        );
    }
    // Another network is not locked out: the right code still works from there.
    let elsewhere = ObicoAgent::start(&second.base(), ELSEWHERE, Flavour::OctoPrint).await;
    let (status, _) = elsewhere.verify(&right).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_flow_ends_in_a_completed_link() {
    let Some((mut redis, first, second)) = two(5).await else {
        return;
    };
    let agent = ObicoAgent::start(&first.base(), HOME, Flavour::OctoPrint).await;
    let alice = linker(&second, HOME);
    wait_visible(&alice, 1).await;
    // The agent pauses between two polls; the link is accepted and its message waits in Redis.
    agent.state(|s| s.paused = true);
    tokio::time::sleep(POLL * 2).await;
    alice.link_first().await.unwrap();
    // Redis dies (SIGKILL) with the message queued. The agent polls on: the instances answer
    // 5xx, which the agent survives.
    redis.kill();
    let polls = agent.state(|s| s.polls);
    agent.state(|s| s.paused = false);
    eventually("two polls while Redis is down", || {
        agent.state(|s| s.polls) >= polls + 2
    })
    .await;
    assert_eq!(agent.stopped(), None, "the agent still discovers");
    assert!(agent.token().is_none());
    // Redis comes back with its data (append-only file): the agent's next poll takes the
    // message and its redemption completes the link.
    redis.restart();
    eventually("agent linked after the restart", || agent.token().is_some()).await;
    assert_eq!(agent.stopped().as_deref(), Some("verified"));
    let (status, _) = printer(&first, &agent.token().unwrap()).await;
    assert_eq!(status, 200);
}
