//! Confirmation at both ends (PROTOCOL.md revision 1.4), on the deterministic simulator: each
//! policy's outcomes (approved, refused, never answered), a server that forwards a different
//! name or nonce (the codes differ and nothing redeems without approval), and a proptest
//! invariant: under a policy no redemption is ever sent before `confirm(Approve)`.
#![cfg(feature = "sim")]

mod support;
use support::steps::Steps;

use std::net::IpAddr;
use std::time::Duration;

use lanlink::agent::{AgentConfig, AgentStatus, AgentTransmit, SecretRequest};
use lanlink::confirm::{short_code, ConfirmNonce, Confirmation, Decision, DisplayName};
use lanlink::event::{AgentEvent, ServerEvent, StopReason};
use lanlink::sim::{AgentId, LanId, LinkerId, Sim};
use lanlink::wire::{AgentMessage, AnnounceReply};
use lanlink::{AgentError, DeviceInfo, ForwardedHeaders, LinkCode, SecretRefusal, VerifyFailure};
use proptest::prelude::*;
use rand::SeedableRng;

const HOME: &str = "203.0.113.7";
const AGENT_IP: &str = "192.168.1.50";
const LINKER_IP: &str = "192.168.1.20";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// An agent at [`AGENT_IP`] under `policy`.
fn agent_config(policy: Confirmation) -> AgentConfig {
    AgentConfig::new(ip(AGENT_IP), 8080, DeviceInfo::default()).confirmation(policy)
}

/// A simulation from `seed` with one home LAN and one agent of `config` on it, settled.
fn lan_with_agent(seed: u64, config: AgentConfig) -> (Sim, LanId, AgentId) {
    let mut sim = Sim::new(seed);
    let lan = sim.add_lan(ip(HOME));
    let agent = sim.add_agent_with(lan, config).unwrap();
    sim.settle();
    (sim, lan, agent)
}

/// A home with one agent under `policy` and one linker for `alice@example.com`, settled: the
/// link is accepted and queued, the agent has not announced since.
fn home(policy: Confirmation) -> (Sim, AgentId, LinkerId) {
    let config = agent_config(policy).confirm_timeout(Duration::from_secs(30));
    let (mut sim, lan, agent) = lan_with_agent(11, config);
    let linker = sim.add_linker(lan, ip(LINKER_IP), "alice@example.com");
    sim.settle();
    (sim, agent, linker)
}

/// The owner's `decision` at the agent, now.
fn decide(sim: &mut Sim, agent: AgentId, decision: Decision) -> Result<(), AgentError> {
    let now = sim.now();
    sim.agents[agent].agent.confirm(now, decision)
}

/// Runs until the linker says linked (at most 10 s); whether it did.
fn until_linked(sim: &mut Sim, linker: LinkerId) -> bool {
    sim.run_until(Duration::from_secs(10), |sim| {
        sim.linker(linker).linked().is_some()
    })
}

/// Runs until the agent asks for confirmation.
fn until_asked(sim: &mut Sim, agent: AgentId) {
    let asked = sim.run_until(Duration::from_secs(10), |sim| {
        matches!(sim.agent(agent).status(), AgentStatus::Confirming { .. })
    });
    assert!(
        asked,
        "the agent never asked: {:?}",
        sim.agent(agent).status()
    );
}

fn asked_code(sim: &Sim, agent: AgentId) -> (String, Option<String>) {
    let asked: Vec<_> = sim.agents[agent]
        .events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ConfirmationRequested {
                display_name,
                short_code,
                ..
            } => Some((display_name.to_string(), short_code.map(|c| c.to_string()))),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "{:?}", sim.agents[agent].events);
    asked[0].clone()
}

fn redeem_started(sim: &Sim, agent: AgentId) -> bool {
    sim.agents[agent]
        .events
        .iter()
        .any(|e| matches!(e, AgentEvent::RedeemStarted { .. }))
}

#[test]
fn compare_approved_links_and_both_ends_show_the_same_code() {
    let (mut sim, agent, linker) = home(Confirmation::Compare);
    until_asked(&mut sim, agent);
    let (name, code) = asked_code(&sim, agent);
    assert_eq!(name, "alice@example.com");
    let page = sim.linker(linker).short_code().expect("the linker's code");
    assert_eq!(code, Some(page.to_string()));
    // Waiting: nothing redeemed, however long the owner takes inside the deadline.
    sim.advance(Duration::from_secs(20));
    assert!(!redeem_started(&sim, agent) && sim.agents[agent].minted.is_none());
    assert!(sim.agent(agent).poll_timeout().is_some());
    decide(&mut sim, agent, Decision::Approve).unwrap();
    assert!(until_linked(&mut sim, linker));
    assert_eq!(sim.agent(agent).status(), AgentStatus::Linked);
    assert!(sim.agents[agent].minted.is_some());
}

#[test]
fn approve_shows_the_name_without_a_code_and_links_on_approval() {
    let (mut sim, agent, linker) = home(Confirmation::Approve);
    until_asked(&mut sim, agent);
    assert_eq!(
        asked_code(&sim, agent),
        ("alice@example.com".to_owned(), None)
    );
    assert!(!redeem_started(&sim, agent));
    decide(&mut sim, agent, Decision::Approve).unwrap();
    assert!(until_linked(&mut sim, linker));
    // A second decision has nothing to decide.
    assert_eq!(
        decide(&mut sim, agent, Decision::Approve),
        Err(AgentError::NoConfirmationPending)
    );
}

#[test]
fn refusal_ends_discovery_and_the_link_never_completes() {
    let (mut sim, agent, linker) = home(Confirmation::Compare);
    until_asked(&mut sim, agent);
    decide(&mut sim, agent, Decision::Refuse).unwrap();
    assert_eq!(
        sim.agent(agent).status(),
        AgentStatus::Stopped(StopReason::ConfirmationRefused)
    );
    // The secret is gone: no local caller gets it any more.
    let id = sim.agent(agent).instance_id().to_string();
    let request = SecretRequest {
        peer: ip(LINKER_IP),
        forwarded: ForwardedHeaders::NONE,
        host: Some("192.168.1.50:8080"),
        origin: None,
        instance_id: &id,
    };
    let now = sim.now();
    assert_eq!(
        sim.agents[agent]
            .agent
            .handle_secret_request(now, &request)
            .unwrap_err(),
        SecretRefusal::NotDiscovering
    );
    sim.run_until(Duration::from_secs(400), |sim| {
        sim.linker(linker).is_finished()
    });
    assert!(sim.linker(linker).linked().is_none());
    assert!(sim.linker(linker).failure().is_some());
    assert!(!redeem_started(&sim, agent) && sim.agents[agent].minted.is_none());
}

#[test]
fn no_answer_before_the_deadline_ends_discovery() {
    let (mut sim, agent, linker) = home(Confirmation::Approve);
    until_asked(&mut sim, agent);
    let AgentStatus::Confirming { deadline } = sim.agent(agent).status() else {
        panic!()
    };
    assert_eq!(sim.agent(agent).poll_timeout(), Some(deadline));
    assert!(deadline <= sim.now() + Duration::from_secs(30));
    sim.run_until(Duration::from_secs(60), |sim| {
        !matches!(sim.agent(agent).status(), AgentStatus::Confirming { .. })
    });
    assert!(sim.now() >= deadline);
    assert_eq!(
        sim.agent(agent).status(),
        AgentStatus::Stopped(StopReason::ConfirmationExpired)
    );
    // Too late to approve.
    assert_eq!(
        decide(&mut sim, agent, Decision::Approve),
        Err(AgentError::NoConfirmationPending)
    );
    sim.run_until(Duration::from_secs(400), |sim| {
        sim.linker(linker).is_finished()
    });
    assert!(sim.linker(linker).linked().is_none());
    assert!(!redeem_started(&sim, agent));
}

#[test]
fn the_confirmation_deadline_never_passes_the_window() {
    let config = agent_config(Confirmation::Approve).window(Duration::from_secs(20));
    let (mut sim, lan, agent) = lan_with_agent(12, config);
    let AgentStatus::Discovering { deadline: window } = sim.agent(agent).status() else {
        panic!()
    };
    sim.add_linker(lan, ip(LINKER_IP), "alice@example.com");
    until_asked(&mut sim, agent);
    let AgentStatus::Confirming { deadline } = sim.agent(agent).status() else {
        panic!()
    };
    assert_eq!(deadline, window, "60 s default cut to the window's end");
}

/// The next announcement's reply, as the server built it, for the test to tamper with.
fn next_reply(sim: &mut Sim, agent: AgentId) -> AnnounceReply {
    sim.elapsed += Duration::from_secs(2);
    let now = sim.now();
    let Some(AgentTransmit::Announce(announce)) = sim.agents[agent].agent.poll_transmit(now) else {
        panic!("an announcement was due")
    };
    let wall = sim.wall();
    let reply = sim
        .server
        .announce_now(wall, ip(HOME), ForwardedHeaders::NONE, &announce)
        .unwrap();
    assert_eq!(reply.messages.len(), 1, "the queued link");
    reply
}

/// The confirmation fields of the reply's one message: the display name and the nonce.
fn confirmation_fields(
    reply: &mut AnnounceReply,
) -> (&mut Option<String>, &mut Option<ConfirmNonce>) {
    let AgentMessage::VerifyAndRedeem {
        display_name,
        nonce,
        ..
    } = &mut reply.messages[0]
    else {
        panic!("a link's message")
    };
    (display_name, nonce)
}

fn feed(sim: &mut Sim, agent: AgentId, reply: AnnounceReply) {
    let now = sim.now();
    sim.agents[agent].agent.handle_announce_reply(now, reply);
    while let Some(event) = sim.agents[agent].agent.poll_event() {
        sim.agents[agent].events.push(event);
    }
}

#[test]
fn a_server_forwarding_another_name_or_nonce_makes_the_codes_differ() {
    for forge in ["name", "nonce"] {
        let (mut sim, agent, linker) = home(Confirmation::Compare);
        let page = sim.linker(linker).short_code().expect("the page's code");
        let mut reply = next_reply(&mut sim, agent);
        let (display_name, nonce) = confirmation_fields(&mut reply);
        assert_eq!(display_name.as_deref(), Some("alice@example.com"));
        assert_eq!(*nonce, sim.linker(linker).nonce());
        match forge {
            "name" => *display_name = Some("mallory@example.com".to_owned()),
            _ => *nonce = Some(ConfirmNonce::from_bytes([0xee; 16])),
        }
        feed(&mut sim, agent, reply);
        let (_, code) = asked_code(&sim, agent);
        assert_ne!(
            code,
            Some(page.to_string()),
            "{forge}: the owner sees a mismatch"
        );
        // Whatever the codes, nothing is redeemed without the owner's approval.
        sim.advance(Duration::from_secs(29));
        assert!(!redeem_started(&sim, agent), "{forge}");
        assert!(matches!(
            sim.agent(agent).status(),
            AgentStatus::Confirming { .. }
        ));
        decide(&mut sim, agent, Decision::Refuse).unwrap();
        sim.advance(Duration::from_secs(5));
        assert!(sim.linker(linker).linked().is_none(), "{forge}");
    }
}

#[test]
fn a_hidden_character_or_a_missing_field_is_refused_on_receipt() {
    for (policy, forge, why) in [
        (
            Confirmation::Approve,
            "name-bidi",
            VerifyFailure::BadDisplayName,
        ),
        // Checked under every policy, even one that shows no name.
        (
            Confirmation::None,
            "name-bidi",
            VerifyFailure::BadDisplayName,
        ),
        (
            Confirmation::Approve,
            "no-name",
            VerifyFailure::ConfirmationUnavailable,
        ),
        (
            Confirmation::Compare,
            "no-nonce",
            VerifyFailure::ConfirmationUnavailable,
        ),
    ] {
        let (mut sim, agent, _) = home(policy);
        let mut reply = next_reply(&mut sim, agent);
        let (display_name, nonce) = confirmation_fields(&mut reply);
        match forge {
            "name-bidi" => *display_name = Some("alice\u{202E}moc.elpmaxe".to_owned()),
            "no-name" => *display_name = None,
            _ => *nonce = None,
        }
        feed(&mut sim, agent, reply);
        assert_eq!(
            sim.agent(agent).status(),
            AgentStatus::Stopped(StopReason::VerifyFailed(why.clone())),
            "{policy:?} {forge}"
        );
        assert!(!redeem_started(&sim, agent));
    }
}

#[test]
fn without_a_policy_the_flow_is_unchanged() {
    let (mut sim, agent, linker) = home(Confirmation::None);
    assert!(until_linked(&mut sim, linker));
    assert!(!sim.agents[agent]
        .events
        .iter()
        .any(|e| matches!(e, AgentEvent::ConfirmationRequested { .. })));
    // Nothing to confirm.
    assert_eq!(
        decide(&mut sim, agent, Decision::Approve),
        Err(AgentError::NoConfirmationPending)
    );
}

#[test]
fn the_linker_and_the_agent_derive_the_code_from_the_same_transcript() {
    let (mut sim, agent, linker) = home(Confirmation::Compare);
    let id = sim.agent(agent).instance_id();
    until_asked(&mut sim, agent);
    let page = sim.linker(linker).short_code().unwrap();
    // Recomputed from the public parts: the secret itself is not an input, its commitment is.
    let record = sim.linker(linker).nonce().unwrap();
    let name = DisplayName::new("alice@example.com").unwrap();
    let (_, shown) = asked_code(&sim, agent);
    assert_eq!(shown, Some(page.to_string()));
    assert_ne!(
        short_code(
            &id,
            &lanlink::LocalSecret::from_bytes([0; 32]).commitment(&id),
            &name,
            &record
        ),
        page,
        "another secret's commitment gives another code"
    );
}

#[derive(Debug, Clone)]
enum Step {
    Advance(u64),
    Approve,
    Refuse,
    ManualCode,
    Cancel,
    Restart,
    Link,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u64..40).prop_map(Step::Advance),
        2 => Just(Step::Approve),
        1 => Just(Step::Refuse),
        1 => Just(Step::ManualCode),
        1 => Just(Step::Cancel),
        1 => Just(Step::Restart),
        3 => Just(Step::Link),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Under a policy, every automatic redemption follows its own `confirm(Approve)` of a
    /// pending request (a manual code, typed at the device, is the owner's own act and counted
    /// apart), and the server links this agent for an account only after one. Checked after
    /// every step of random interleavings of time, linkers, decisions, cancels and restarts.
    #[test]
    fn no_redemption_without_approval(
        seed in 0u64..1000,
        compare in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..25),
    ) {
        let policy = if compare { Confirmation::Compare } else { Confirmation::Approve };
        let config = agent_config(policy).window(Duration::from_secs(120));
        let (mut sim, lan, agent) = lan_with_agent(seed, config);
        let (mut approvals, mut manual) = (0usize, 0usize);
        let mut linkers = 0u8;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
        for step in steps {
            let now = sim.now();
            let pending = sim.agent(agent).pending_confirmation().is_some();
            match step {
                Step::Advance(s) => sim.advance(Duration::from_secs(s)),
                Step::Approve => {
                    let result = sim.agents[agent].agent.confirm(now, Decision::Approve);
                    prop_assert_eq!(result.is_ok(), pending);
                    approvals += usize::from(result.is_ok());
                }
                Step::Refuse => {
                    let result = sim.agents[agent].agent.confirm(now, Decision::Refuse);
                    prop_assert_eq!(result.is_ok(), pending);
                    if result.is_ok() {
                        prop_assert_eq!(
                            sim.agent(agent).status(),
                            AgentStatus::Stopped(StopReason::ConfirmationRefused)
                        );
                    }
                }
                Step::ManualCode => {
                    let code = LinkCode::parse("482913").unwrap();
                    manual += usize::from(sim.agents[agent].agent.enter_code(now, code).is_ok());
                }
                Step::Cancel => sim.agents[agent].agent.cancel(),
                Step::Restart => {
                    let _ = sim.agents[agent].agent.restart_discovery(now, &mut rng);
                }
                Step::Link => {
                    linkers += 1;
                    sim.add_linker(lan, ip(LINKER_IP), &format!("user{linkers}@example.com"));
                }
            }
            sim.settle();
            while let Some(event) = sim.agents[agent].agent.poll_event() {
                sim.agents[agent].events.push(event);
            }
            let events = &sim.agents[agent].events;
            let automatic = events
                .iter()
                .filter(|e| matches!(e, AgentEvent::RedeemStarted { manual: false }))
                .count();
            let typed = events
                .iter()
                .filter(|e| matches!(e, AgentEvent::RedeemStarted { manual: true }))
                .count();
            prop_assert_eq!(automatic, approvals, "an automatic redemption without approval");
            prop_assert_eq!(typed, manual);
            // No automatic link completes at the server without an approval.
            let linked = sim
                .server_events
                .iter()
                .filter(|e| matches!(e, ServerEvent::Linked { .. }))
                .count();
            prop_assert!(linked <= approvals, "{} links, {} approvals", linked, approvals);
        }
    }
}

/// The server checks the name when it builds the message: an account id that is no valid
/// display name (a bidi override; account ids refuse only controls) is not forwarded, so an agent
/// with a policy refuses the link (fail closed), and the linker derives no code.
#[test]
fn the_server_forwards_no_name_that_fails_the_check() {
    let (mut sim, lan, agent) = lan_with_agent(13, agent_config(Confirmation::Approve));
    let linker = sim.add_linker(lan, ip(LINKER_IP), "alice\u{202E}moc.elpmaxe");
    sim.settle();
    assert!(sim.linker(linker).short_code().is_none());
    let mut reply = next_reply(&mut sim, agent);
    assert!(confirmation_fields(&mut reply).0.is_none());
    feed(&mut sim, agent, reply);
    assert_eq!(
        sim.agent(agent).status(),
        AgentStatus::Stopped(StopReason::VerifyFailed(
            VerifyFailure::ConfirmationUnavailable
        ))
    );
}

/// The display name reaches the agent only inside its message: not in discovery (for anyone,
/// the linking account included), not in the rest of the announce reply, not in status polls.
#[test]
fn the_display_name_is_only_in_the_delivered_message() {
    let (mut sim, agent, linker) = home(Confirmation::Compare);
    let id = sim.agent(agent).instance_id();
    let wall = sim.wall();
    let neighbour = lanlink::AccountId::new("bob").unwrap();
    for account in [
        neighbour,
        lanlink::AccountId::new("alice@example.com").unwrap(),
    ] {
        let found = sim
            .server
            .discover_as_now(wall, &account, ip(HOME), ForwardedHeaders::NONE)
            .unwrap();
        let text = serde_json::to_string(&found).unwrap();
        assert!(!text.contains("alice"), "{text}");
    }
    let status = sim
        .server
        .link_status_now(
            wall,
            &lanlink::AccountId::new("alice@example.com").unwrap(),
            ip(HOME),
            ForwardedHeaders::NONE,
            &id,
        )
        .unwrap();
    assert!(status.display_name.is_none());
    let mut reply = next_reply(&mut sim, agent);
    let message = serde_json::to_string(&reply.messages).unwrap();
    assert!(message.contains("\"display_name\":\"alice@example.com\""));
    reply.messages.clear();
    let rest = serde_json::to_string(&reply).unwrap();
    assert!(!rest.contains("alice"), "{rest}");
    let _ = linker;
}

/// The linker derives a code only from a name that passes the display name's check, and only
/// with its own nonce; the code it derives is the agent's for the same transcript.
#[test]
fn the_linker_derives_the_code_from_what_the_server_named() {
    use lanlink::linker::{Linker, LinkerConfig, LinkerTransmit};
    use lanlink::wire::{DiscoverReply, DiscoveredAgent, LinkState, LinkStatusReply, SecretReply};
    use std::time::Instant;
    let id = lanlink::InstanceId::from_bytes([7; 16]);
    let secret = lanlink::LocalSecret::from_bytes([9; 32]);
    let run = |name: Option<&str>, with_nonce: bool| {
        let now = Instant::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut linker = if with_nonce {
            Linker::new(LinkerConfig::default(), now, &mut rng)
        } else {
            Linker::without_nonce(LinkerConfig::default(), now)
        };
        assert!(matches!(
            linker.poll_transmit(now),
            Some(LinkerTransmit::Discover)
        ));
        let agent = DiscoveredAgent::new(id, ip(AGENT_IP), 8080, DeviceInfo::default());
        let reply = DiscoverReply::new(vec![agent].into());
        linker.handle_discover_reply(now, Ok(reply)).unwrap();
        let Some(LinkerTransmit::FetchSecret { fetch, .. }) = linker.poll_transmit(now) else {
            panic!("a secret request")
        };
        let fetched = SecretReply::new(secret.clone());
        linker.handle_secret_reply(now, fetch, Ok(fetched)).unwrap();
        let Some(LinkerTransmit::Link(request)) = linker.poll_transmit(now) else {
            panic!()
        };
        assert_eq!(request.nonce, linker.nonce());
        let accepted = {
            let mut m = LinkStatusReply::new(id, LinkState::Pending);
            m.display_name = name.map(str::to_owned);
            m
        };
        linker.handle_link_reply(now, Ok(accepted)).unwrap();
        (linker.short_code(), linker.nonce())
    };
    let (code, nonce) = run(Some("alice@example.com"), true);
    let name = DisplayName::new("alice@example.com").unwrap();
    let expected = short_code(&id, &secret.commitment(&id), &name, &nonce.unwrap());
    assert_eq!(code, Some(expected));
    assert_eq!(
        run(Some("alice\u{202E}x"), true).0,
        None,
        "a hidden character"
    );
    assert_eq!(run(None, true).0, None, "an older server names no one");
    let (code, nonce) = run(Some("alice@example.com"), false);
    assert_eq!(
        (code, nonce),
        (None, None),
        "a linker without a nonce has no code"
    );
}
