//! The whole simulator's harness (`protocol_sim`).
//! It must not read the wall clock or an unseeded RNG: it runs on the simulator's virtual clock,
//! with a seeded RNG.

use super::*;

/// An attacker's move in the whole-protocol simulation.
///
/// ```
/// use arbitrary::{Arbitrary, Unstructured};
/// use lanlink::fuzz::SimOp;
/// // The fuzzer's bytes pick the variant: all zeros pick the first.
/// let op = SimOp::arbitrary(&mut Unstructured::new(&[0; 8]))?;
/// assert!(matches!(op, SimOp::Advance(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Arbitrary)]
pub enum SimOp {
    /// Time moves forward by this many milliseconds (at most about 65 s a step).
    Advance(u16),
    /// The victim's linker starts (on the victim's LAN).
    StartLinker,
    /// The attacker asks the victim agent for its secret from a position it may hold: off the
    /// LAN (public, CGNAT), or as a web page or rebinding name in the victim's browser.
    Fetch {
        /// Where the request comes from.
        peer: PeerKind,
        /// Whether it comes from the victim's LAN (as a foreign page in the user's browser).
        in_browser: bool,
        /// Host header kind.
        host: HostKind,
    },
    /// The attacker asks to link the victim agent with a guessed secret.
    Link {
        /// From the victim's public network (else its own).
        same_network: bool,
        /// The guess.
        guess: [u8; 32],
    },
    /// The attacker announces the victim's id with its own commitment.
    Impersonate {
        /// From the victim's public network.
        same_network: bool,
    },
    /// The attacker announces its own agent on the victim's network.
    ExtraAgent,
    /// The attacker tries a manual code.
    Redeem {
        /// From the victim's public network.
        same_network: bool,
        /// The guess.
        guess: u32,
    },
    /// The victim mints a manual code and types it into the agent.
    ManualLink,
    /// Let everything run.
    Settle,
}

/// The whole protocol on the simulator with an attacker choosing its moves: asserts that the
/// attacker never learns the victim's secret and no attacker account is ever linked.
///
/// ```
/// use lanlink::fuzz::protocol_sim;
/// // A finding is a panic; these inputs (empty, short, and a longer pseudo-random one) find none.
/// let long: Vec<u8> = (0..512u32).map(|i| (i * 37 % 251) as u8).collect();
/// for input in [&b""[..], b"\x00\x01\x02\x03", b"{}", &long] {
///     assert!(std::panic::catch_unwind(|| protocol_sim(input)).is_ok());
/// }
/// ```
pub fn protocol_sim(data: &[u8]) {
    let mut sim = crate::sim::Sim::new(3);
    let home = sim.add_lan(
        "203.0.113.7"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    );
    let away = sim.add_lan(
        "198.51.100.9"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    );
    let config = AgentConfig::new(
        Ipv4Addr::new(192, 168, 1, 50).into(),
        8080,
        DeviceInfo::default(),
    )
    .allow_origin("https://cloud.example");
    let Ok(victim) = sim.add_agent_with(home, config) else {
        unreachable!("valid configuration")
    };
    let attacker = AccountId::new("mallory").unwrap_or_else(|| unreachable!("valid account"));
    let mut linker_started = false;
    let mut rng = StdRng::seed_from_u64(4);
    let mut attacker_secrets: Vec<LocalSecret> = Vec::new();
    // Where the attacker speaks from: the victim's public network, or another.
    let (home_ip, away_ip) = (sim.lans[home].public_ip, sim.lans[away].public_ip);
    let attacker_ip = |same_network: bool| if same_network { home_ip } else { away_ip };
    for op in ops::<SimOp>(data) {
        let now = sim.now();
        let wall = sim.wall();
        let victim_id = sim.agent(victim).instance_id();
        match op {
            SimOp::Advance(ms) => sim.advance(Duration::from_millis(u64::from(ms))),
            SimOp::Settle => sim.settle(),
            SimOp::StartLinker => {
                if !linker_started {
                    linker_started = true;
                    sim.add_linker_with(
                        home,
                        Ipv4Addr::new(192, 168, 1, 20).into(),
                        "alice",
                        LinkerConfig::default(),
                        Some("https://cloud.example".into()),
                    );
                }
            }
            SimOp::Fetch {
                peer,
                in_browser,
                host,
            } => {
                // Off the LAN the attacker is any address that is not local; in the user's
                // browser it is on the LAN but speaks as a foreign page or a rebinding name.
                let ip = if in_browser {
                    Ipv4Addr::new(192, 168, 1, 20).into()
                } else {
                    peer.ip()
                };
                if !in_browser && reference_is_local(ip) {
                    continue;
                }
                let id = victim_id.to_string();
                let host_text = match host {
                    HostKind::OwnIp => "192.168.1.50".to_owned(),
                    HostKind::OwnIpPort | HostKind::Missing => "192.168.1.50:8080".to_owned(),
                    HostKind::V6Literal => "[fd00::50]".to_owned(),
                    HostKind::AllowedName | HostKind::Evil => "attacker.example".to_owned(),
                    HostKind::Raw(text) => text,
                };
                // A foreign page's fetch always carries its Origin.
                let origin = in_browser.then_some("https://evil.example");
                let request = SecretRequest {
                    peer: ip,
                    forwarded: ForwardedHeaders::NONE,
                    host: Some(&host_text),
                    origin,
                    instance_id: &id,
                };
                if let Ok(reply) = sim.agents[victim]
                    .agent
                    .handle_secret_request(now, &request)
                {
                    attacker_secrets.push(reply.local_secret);
                }
            }
            SimOp::Link {
                same_network,
                guess,
            } => {
                let from = attacker_ip(same_network);
                let request = LinkRequest::new(victim_id, LocalSecret::from_bytes(guess));
                let result = sim.server.link_now(
                    wall,
                    &mut rng,
                    &User::new(attacker.clone()),
                    from,
                    ForwardedHeaders::NONE,
                    request,
                );
                assert!(result.is_err(), "a guessed secret was accepted");
            }
            SimOp::Impersonate { same_network } => {
                let from = attacker_ip(same_network);
                let announce = attacker_announce(victim_id, PresenceKey::from_bytes([0x66; 32]));
                if let Ok(reply) =
                    sim.server
                        .announce_now(wall, from, ForwardedHeaders::NONE, &announce)
                {
                    assert!(
                        reply.messages.is_empty(),
                        "an impersonator received the victim's messages"
                    );
                }
            }
            SimOp::ExtraAgent => {
                let key = PresenceKey::from_bytes([0x67; 32]);
                let announce = attacker_announce(key.instance_id(), key);
                if let Ok(reply) = sim.server.announce_now(
                    wall,
                    sim.lans[home].public_ip,
                    ForwardedHeaders::NONE,
                    &announce,
                ) {
                    for message in reply.messages {
                        if let AgentMessage::VerifyAndRedeem { local_secret, .. } = message {
                            // Only a secret fetched from this (non-existent) device could be here.
                            assert!(
                                !sim.agents[victim].agent.is_discovering()
                                    || !local_secret.ct_eq(&LocalSecret::from_bytes([0; 32]))
                            );
                        }
                    }
                }
            }
            SimOp::Redeem {
                same_network,
                guess,
            } => {
                let from = attacker_ip(same_network);
                let Some(code) = LinkCode::parse(&format!("{:06}", guess % 1_000_000)) else {
                    continue;
                };
                let request = RedeemRequest::new(InstanceId::from_bytes([0x66; 16]), code);
                // A guess may hit a live manual code; that links the attacker's device to the
                // victim's account (the brute-force risk the lockout bounds), never the victim's
                // device to the attacker: checked below.
                let _ =
                    sim.server
                        .redeem_now(wall, &mut rng, from, ForwardedHeaders::NONE, &request);
            }
            SimOp::ManualLink => {
                let alice =
                    AccountId::new("alice").unwrap_or_else(|| unreachable!("valid account"));
                if let Ok(reply) = at_once(sim.server.mint_code(wall, &mut rng, &alice)) {
                    let _ = sim.agents[victim].agent.enter_code(now, reply.code);
                }
            }
        }
        sim.settle();
        assert!(
            attacker_secrets.is_empty(),
            "the attacker obtained the victim's secret"
        );
        for event in &sim.server_events {
            if let ServerEvent::Linked {
                instance_id,
                account,
                ..
            } = event
            {
                if *instance_id == victim_id {
                    assert_ne!(
                        account, &attacker,
                        "the victim's agent was linked to the attacker"
                    );
                }
                if *account == attacker {
                    panic!("an attacker account was linked: {event:?}");
                }
            }
        }
    }
}

/// An announcement of `id` by the attacker's device (on a LAN address of its own, committing to
/// a secret of its own), with the presence key `key`.
fn attacker_announce(id: InstanceId, key: PresenceKey) -> Announce {
    Announce::new(
        id,
        Ipv4Addr::new(192, 168, 1, 66).into(),
        8080,
        DeviceInfo::default(),
        LocalSecret::from_bytes([0x66; 32]).commitment(&id),
        key,
    )
}
