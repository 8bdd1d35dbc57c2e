//! The one error model (issue 22): PROTOCOL.md's refusal table and the crate's classification
//! table ([`WireCode::class`]) say the same, and a code from a newer peer fails closed at the
//! agent and the linker.

use std::time::Instant;

use lanlink::agent::{Agent, AgentConfig, AgentStatus};
use lanlink::event::StopReason;
use lanlink::linker::{Linker, LinkerConfig, LinkerFailure, LinkerTransmit};
use lanlink::{DeviceInfo, LinkCode, WireCode};

/// `(status, codes)` of each row of PROTOCOL.md's "Refusals" status table.
fn protocol_rows() -> Vec<(u16, Vec<String>)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md"))
        .expect("PROTOCOL.md");
    let section = text
        .split("\n## Refusals\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the Refusals section");
    let mut rows = Vec::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, status, codes, ..] = cells[..] else {
            continue;
        };
        let Ok(status) = status.parse::<u16>() else {
            continue;
        };
        // The backticked words that are codes (not the field names quoted in passing).
        let words = codes
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .filter(|w| !["instance_id", "candidates"].contains(w))
            .map(str::to_owned)
            .collect();
        rows.push((status, words));
    }
    rows
}

#[test]
fn protocol_md_and_the_table_agree_on_every_status() {
    let rows = protocol_rows();
    assert!(rows.len() >= 10, "{rows:?}");
    let mut listed = std::collections::HashSet::new();
    for (status, codes) in &rows {
        for text in codes {
            let code = WireCode::parse(text).unwrap_or(WireCode::NoCode);
            assert!(
                WireCode::KNOWN.contains(&code),
                "PROTOCOL.md lists `{text}`, which the crate does not know"
            );
            assert_eq!(code.class().status, Some(*status), "`{text}`");
            listed.insert(code);
        }
    }
    // Every code the crate answers is in PROTOCOL.md: in the table, or, for the MQTT ticket
    // and Obico codes, in their own sections with their status.
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md")).unwrap();
    for code in WireCode::KNOWN {
        if listed.contains(code) {
            continue;
        }
        let status = code.class().status.unwrap();
        assert!(
            text.contains(&format!("`{status} {code}`"))
                || (text.contains(&format!("`{code}`")) && text.contains(&format!("`{status}`")))
                || text.contains(&format!("`{status} {{\"detail\": \"{code}\"}}`")),
            "`{status} {code}` is not in PROTOCOL.md"
        );
    }
}

fn agent(now: Instant) -> Agent {
    let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default());
    Agent::new(config, now, &mut lanlink::os_rng()).unwrap()
}

#[test]
fn an_unknown_code_ends_discovery_and_a_passing_one_does_not() {
    let now = Instant::now();
    let newer = WireCode::parse("quarantined_by_policy").unwrap();

    let mut passing = agent(now);
    for code in [
        WireCode::LockedOut,
        WireCode::NetworkFull,
        WireCode::StoreUnavailable,
    ] {
        passing.handle_announce_refused(now, code);
        assert!(passing.is_discovering(), "{code}");
    }

    let mut closed = agent(now);
    closed.handle_announce_refused(now, newer);
    assert_eq!(
        closed.status(),
        AgentStatus::Stopped(StopReason::AnnounceRefused(newer))
    );

    // A redemption refused with it is final too (never retried).
    let mut redeeming = agent(now);
    redeeming
        .enter_code(now, LinkCode::parse("482913").unwrap())
        .unwrap();
    assert!(redeeming.poll_transmit(now).is_some());
    redeeming.handle_redeem_reply(now, Err(newer)).unwrap();
    assert_eq!(
        redeeming.status(),
        AgentStatus::Stopped(StopReason::RedeemRefused(newer))
    );
}

#[test]
fn an_unknown_code_is_final_for_the_linker() {
    let now = Instant::now();
    let newer = WireCode::parse("quarantined_by_policy").unwrap();
    let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
    assert!(matches!(
        linker.poll_transmit(now),
        Some(LinkerTransmit::Discover)
    ));
    linker.handle_discover_reply(now, Err(newer)).unwrap();
    assert_eq!(linker.failure(), Some(&LinkerFailure::Refused(newer)));
    assert!(linker.poll_transmit(now).is_none());
}

/// An agent transport that answers every request with one refusal, counting the requests.
#[cfg(feature = "tokio")]
struct Refusing {
    answer: lanlink::transport::TransportError,
    announces: std::sync::atomic::AtomicU32,
    redeems: std::sync::atomic::AtomicU32,
}

#[cfg(feature = "tokio")]
#[async_trait::async_trait]
impl lanlink::transport::AgentServerTransport for Refusing {
    async fn announce(
        &self,
        _: &lanlink::wire::Announce,
    ) -> Result<lanlink::wire::AnnounceReply, lanlink::transport::TransportError> {
        self.announces
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(self.answer.clone())
    }

    async fn redeem(
        &self,
        _: &lanlink::wire::RedeemRequest,
    ) -> Result<lanlink::wire::RedeemReply, lanlink::transport::TransportError> {
        self.redeems
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(self.answer.clone())
    }
}

/// Through the driver: a newer peer's code at `503` is neither retried nor ignored (it ends
/// discovery at once, and a redemption), while a proxy's code-less `502` is retried.
#[cfg(feature = "tokio")]
#[tokio::test]
async fn the_driver_fails_closed_on_an_unknown_code_and_retries_a_gateway_page() {
    use lanlink::driver::{run_agent, DriverConfig};
    use lanlink::transport::TransportError;
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let fast = DriverConfig {
        backoff_base: Duration::from_millis(5),
        backoff_cap: Duration::from_millis(20),
        max_attempts: 3,
    };
    let shared = |code: bool| {
        let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default())
            .window(Duration::from_millis(600))
            .announce_interval(Duration::from_millis(50))
            .redeem_timeout(Duration::from_millis(400));
        let now = Instant::now();
        let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
        if code {
            agent
                .enter_code(now, LinkCode::parse("482913").unwrap())
                .unwrap();
        }
        Arc::new(Mutex::new(agent))
    };
    let transport = |answer| Refusing {
        answer,
        announces: Default::default(),
        redeems: Default::default(),
    };
    let newer = WireCode::parse("quarantined_by_policy").unwrap();
    let bounded = Duration::from_secs(10);

    // Announcing.
    let refusing = transport(TransportError::Refused {
        status: 503,
        code: newer,
    });
    let agent = shared(false);
    let status = tokio::time::timeout(bounded, run_agent(&agent, &refusing, &fast, |_| {}))
        .await
        .expect("bounded");
    assert_eq!(
        status,
        AgentStatus::Stopped(StopReason::AnnounceRefused(newer))
    );
    assert_eq!(refusing.announces.load(Ordering::SeqCst), 1, "not retried");

    // Redeeming.
    let refusing = transport(TransportError::Refused {
        status: 503,
        code: newer,
    });
    let agent = shared(true);
    let status = tokio::time::timeout(bounded, run_agent(&agent, &refusing, &fast, |_| {}))
        .await
        .expect("bounded");
    assert_eq!(
        status,
        AgentStatus::Stopped(StopReason::RedeemRefused(newer))
    );
    assert_eq!(refusing.redeems.load(Ordering::SeqCst), 1, "not retried");

    // A gateway's page without a code: announced again and again until the window ends.
    let gateway = transport(TransportError::Refused {
        status: 502,
        code: WireCode::NoCode,
    });
    let agent = shared(false);
    let status = tokio::time::timeout(bounded, run_agent(&agent, &gateway, &fast, |_| {}))
        .await
        .expect("bounded");
    assert_eq!(status, AgentStatus::Stopped(StopReason::WindowExpired));
    assert!(gateway.announces.load(Ordering::SeqCst) > 1);
}
