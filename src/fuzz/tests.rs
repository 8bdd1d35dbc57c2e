//! The harnesses on fixed inputs, and the recorded findings.
//! They read the committed corpus and findings from disk, which the harnesses themselves must not
//! do.

use super::agent::reference_host_ok;
use super::client_addr::{reference_embed, reference_network};
#[cfg(feature = "obico-wire")]
use super::obico::obico_run;
use super::*;
use crate::addr::LocalPolicy;

/// Every harness runs on a few fixed inputs in ordinary test runs.
#[test]
fn harnesses_run_on_fixed_inputs() {
    let mut rng = StdRng::seed_from_u64(9);
    for len in [0usize, 1, 7, 64, 512, 4096] {
        let mut data = vec![0u8; len];
        rand::RngCore::fill_bytes(&mut rng, &mut data);
        agent_ops(&data);
        server_ops(&data);
        linker_ops(&data);
        protocol_sim(&data);
        wire_decode(&data);
        client_addr(&data);
        adapter_decode(&data);
        #[cfg(feature = "obico-wire")]
        obico_ops(&data);
    }
}

/// `agent_ops` holds under each confirmation policy (its first byte picks it) on the
/// committed corpus (whose inputs reach verified messages, so confirmations and decisions)
/// and on random inputs.
#[test]
fn agent_ops_holds_under_every_policy() {
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/agent_ops");
    let mut seen = 0;
    for entry in std::fs::read_dir(corpus).into_iter().flatten().flatten() {
        let Ok(data) = std::fs::read(entry.path()) else {
            continue;
        };
        for policy in 0..3u8 {
            let mut data = data.clone();
            if let Some(first) = data.first_mut() {
                *first = policy;
            }
            agent_ops(&data);
        }
        seen += 1;
    }
    assert!(seen > 0, "the corpus at {corpus}");
    let mut rng = StdRng::seed_from_u64(5);
    for i in 0..30_000usize {
        let mut data = vec![0u8; 1 + i % 300];
        rand::RngCore::fill_bytes(&mut rng, &mut data);
        data[0] = (i % 3) as u8;
        agent_ops(&data);
    }
}

/// The reference NAT64 layout agrees with RFC 6052's own example (192.0.2.33 under a /40),
/// and `client_addr` holds on many random inputs (every one reaches the network checks).
#[test]
fn client_addr_models_nat64_networks() {
    let prefix: ipnet::Ipv6Net = "2001:db8:100::/40".parse().unwrap();
    let embedded = reference_embed(prefix, Ipv4Addr::new(192, 0, 2, 33));
    assert_eq!(embedded, "2001:db8:1c0:2:21::".parse::<Ipv6Addr>().unwrap());
    assert_eq!(
        reference_network(IpAddr::V6(embedded), &[prefix]),
        crate::addr::PublicNetwork::V4(Ipv4Addr::new(192, 0, 2, 33))
    );
    let mut rng = StdRng::seed_from_u64(64);
    for len in [32usize, 64, 128, 256].into_iter().cycle().take(4000) {
        let mut data = vec![0u8; len];
        rand::RngCore::fill_bytes(&mut rng, &mut data);
        client_addr(&data);
    }
}

/// `wire_decode`'s round trip holds on its checked-in seeds and on discovery replies whose
/// info holds hidden characters, raw or JSON-escaped (refused on decode, so never
/// re-encoded), beside ordinary non-ASCII names (which round-trip).
#[test]
fn wire_decode_holds_on_seeds_and_hidden_characters() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/wire_decode");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    let agent = r#"{"instance_id":"7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90","private_ip":"192.168.1.5","port":80,"info":{"hostname":"NAME"}}"#;
    let reply = |name: &str| format!(r#"{{"agents":[{}]}}"#, agent.replace("NAME", name));
    let decodes = |text: &str| {
        wire::decode::<wire::DiscoverReply>(text.as_bytes(), wire::MAX_MESSAGE_BYTES).is_ok()
    };
    for name in [
        "a\\u202eb",
        "a\\u200db",
        "a\\u00adb",
        "\\udb40\\udc01",
        "a\u{FE0F}",
    ] {
        assert!(!decodes(&reply(name)), "{name}");
        inputs.push(reply(name).into_bytes());
    }
    assert!(decodes(&reply("é中🖨")));
    inputs.push(reply("é中🖨").into_bytes());
    for data in &inputs {
        wire_decode(data);
    }
}

/// The checked-in seeds of `adapter_decode` each decode as the format they are named after,
/// so the fuzzer starts inside every format rather than at its first byte.
#[cfg(all(feature = "mqtt", feature = "obico-wire"))]
#[test]
fn adapter_seeds_decode() {
    use crate::server::{CodeRecord, NetworkRecord};
    fn decodes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> bool {
        serde_json::from_slice::<T>(bytes).is_ok()
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/adapter_decode");
    type Check = fn(&[u8]) -> bool;
    let checks: [(&str, Check); 6] = [
        ("seed-network-record.json", decodes::<NetworkRecord>),
        ("seed-code-record.json", decodes::<CodeRecord>),
        ("seed-mqtt-up.json", decodes::<crate::mqtt::UpMessage>),
        ("seed-mqtt-down.json", decodes::<crate::mqtt::DownMessage>),
        (
            "seed-ticket-reply.json",
            decodes::<crate::ticket::TicketReply>,
        ),
        ("seed-obico-poll.json", |b| {
            crate::obico::endpoint::poll_from_bytes(b).is_some()
        }),
    ];
    for (name, check) in checks {
        let bytes = std::fs::read(dir.join(name)).expect(name);
        assert!(check(&bytes), "{name} does not decode");
        adapter_decode(&bytes);
    }
}

/// The Obico harness reaches its checks: a link delivered and redeemed, a passcode claimed
/// and its code redeemed; and the attacks it checks are refused along the way.
#[cfg(feature = "obico-wire")]
#[test]
fn obico_harness_reaches_delivery_redemption_and_claims() {
    use ObicoOp::*;
    let poll = |net, device, passcode| Poll {
        net,
        device,
        moved: false,
        passcode,
    };
    let ops = vec![
        poll(0, 0, None),
        Discover { net: 0 },
        Discover { net: 1 },
        // From another network: refused (agent not found there).
        Link {
            net: 1,
            device: 0,
            account: 1,
            secret: Some(1),
        },
        Link {
            net: 0,
            device: 0,
            account: 0,
            secret: Some(0),
        },
        Advance(250),
        // The device's id polled from elsewhere gets nothing.
        poll(1, 0, None),
        Advance(250),
        poll(0, 0, None),
        // Redeemed from the wrong network: refused; from its own: once.
        Verify {
            net: 1,
            code: CodeChoice::HandedOut(0),
        },
        Verify {
            net: 0,
            code: CodeChoice::HandedOut(0),
        },
        Verify {
            net: 0,
            code: CodeChoice::HandedOut(0),
        },
        // A second device asks for a passcode; a user claims it; the device's next poll
        // gets the code, which redeems from the device's network.
        Advance(250),
        poll(2, 1, Some(0)),
        Verify {
            net: 2,
            code: CodeChoice::Passcode(0),
        },
        Claim {
            net: 0,
            account: 2,
            passcode: Some(0),
        },
        Claim {
            net: 0,
            account: 1,
            passcode: Some(0),
        },
        Advance(250),
        poll(2, 1, Some(0)),
        Verify {
            net: 2,
            code: CodeChoice::HandedOut(1),
        },
    ];
    let reached = obico_run(1, ops);
    assert_eq!(reached.delivered, 1, "{reached:?}");
    assert_eq!(reached.claimed, 1, "{reached:?}");
    assert_eq!(reached.redeemed, 2, "{reached:?}");
}

#[test]
fn reference_host_check_agrees_on_examples() {
    for (host, ok) in [
        ("192.168.1.50", true),
        ("printer.local:80", true),
        ("[::1]:8080", true),
        ("evil", false),
        ("1.2.3.4:", false),
        ("[::1", false),
    ] {
        assert_eq!(reference_host_ok(host, "printer.local"), ok, "{host}");
    }
}

#[test]
fn peers_cover_the_policy_classes() {
    assert!(reference_is_local(PeerKind::MappedLan(3).ip()));
    assert!(!reference_is_local(PeerKind::Cgnat(3).ip()));
    assert_eq!(
        reference_is_local(PeerKind::Ula(1).ip()),
        LocalPolicy::default().is_local(PeerKind::Ula(1).ip())
    );
}
