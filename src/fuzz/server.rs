//! The server's harness (`server_ops`).
//! Its clock starts at a fixed timestamp and moves only as the input says; its RNG is seeded.
//! It must not read the wall clock, touch the network or draw from the OS RNG.

use super::*;

/// One input to the server.
///
/// ```
/// use arbitrary::{Arbitrary, Unstructured};
/// use lanlink::fuzz::ServerOp;
/// // The fuzzer's bytes pick the variant: all zeros pick the first.
/// let op = ServerOp::arbitrary(&mut Unstructured::new(&[0; 8]))?;
/// assert!(matches!(op, ServerOp::Advance(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Arbitrary)]
pub enum ServerOp {
    /// Time moves forward by this many milliseconds.
    Advance(u32),
    /// An announcement.
    Announce {
        /// Which of four public networks (two IPv4, two IPv6 prefixes) it comes from.
        net: u8,
        /// Which of four agents.
        agent: u8,
        /// Announce another commitment than the agent's.
        forged: bool,
        /// Announce a public address instead of the private one.
        public_ip: bool,
        /// Announce without the agent's presence key.
        forged_key: bool,
        /// Candidate endpoints (revision 1.3): the low four bits say how many (up to 15, more
        /// than the record keeps), bit 4 makes the last one public, bits 5–6 shift the ports.
        candidates: u8,
    },
    /// A discovery.
    Discover {
        /// From which network.
        net: u8,
    },
    /// A link request.
    Link {
        /// From which network.
        net: u8,
        /// For which agent.
        agent: u8,
        /// With its real secret.
        real: bool,
        /// By which of three accounts.
        account: u8,
    },
    /// A link-status query.
    Status {
        /// From which network.
        net: u8,
        /// For which agent.
        agent: u8,
        /// By which account.
        account: u8,
    },
    /// A manual code mint.
    Mint {
        /// For which account.
        account: u8,
    },
    /// A redemption.
    Redeem {
        /// From which network.
        net: u8,
        /// As which agent.
        agent: u8,
        /// Which known code (minted or harvested), or a guess.
        code: u8,
        /// A guessed code when `code` names none.
        guess: u32,
        /// The presence key sent: 0 none, 1 the agent's own, anything else another's.
        proof: u8,
        /// The attempt number sent.
        attempt: u8,
    },
    /// Housekeeping.
    Purge,
}

const NETS: [&str; 4] = [
    "203.0.113.7",
    "198.51.100.9",
    "2001:db8:1:2::10",
    "2001:db8:1:3::10",
];

pub(super) fn net_ip(i: u8) -> IpAddr {
    NETS[usize::from(i) % NETS.len()]
        .parse()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn presence_key(i: u8) -> PresenceKey {
    PresenceKey::from_bytes([i % 4 + 1; 32])
}

fn identity(i: u8) -> (InstanceId, LocalSecret) {
    let i = i % 4;
    (
        presence_key(i).instance_id(),
        LocalSecret::from_bytes([i + 11; 32]),
    )
}

/// Drives the server with arbitrary requests from four networks; checks the one-visible rule,
/// that refusals change nothing but the failure counter, that links need the real secret, and that
/// codes are single-use and bound.
///
/// ```
/// use lanlink::fuzz::server_ops;
/// // A finding is a panic; these inputs (empty, short, and a longer pseudo-random one) find none.
/// let long: Vec<u8> = (0..512u32).map(|i| (i * 37 % 251) as u8).collect();
/// for input in [&b""[..], b"\x00\x01\x02\x03", b"{}", &long] {
///     assert!(std::panic::catch_unwind(|| server_ops(input)).is_ok());
/// }
/// ```
pub fn server_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let max_visible = u.int_in_range(1..=3).unwrap_or(1);
    let Ok(server) = Server::new(ServerConfig::default().max_visible(max_visible)) else {
        unreachable!("valid configuration")
    };
    let mut rng = StdRng::seed_from_u64(2);
    let mut now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let accounts: Vec<AccountId> = ["a", "b", "c"]
        .iter()
        .filter_map(|a| AccountId::new(*a))
        .collect();
    let mut codes: Vec<(LinkCode, Option<InstanceId>, Option<IpAddr>)> = Vec::new();
    // Each redeemed code: who redeemed it, and its newest completed attempt.
    let mut redeemed: HashMap<String, (InstanceId, u32)> = HashMap::new();
    let rest = u.take_rest();
    for op in ops::<ServerOp>(rest) {
        match op {
            ServerOp::Advance(ms) => now += TimeDelta::milliseconds(i64::from(ms)),
            ServerOp::Purge => server.purge_now(now),
            ServerOp::Announce {
                net,
                agent,
                forged,
                public_ip,
                forged_key,
                candidates,
            } => {
                let (id, secret) = identity(agent);
                let public_candidate = candidates & 0x10 != 0 && candidates & 0x0f != 0;
                let candidate_list: Vec<std::net::SocketAddr> = (0..candidates & 0x0f)
                    .map(|i| {
                        let ip = if public_candidate && i + 1 == candidates & 0x0f {
                            IpAddr::V4(Ipv4Addr::new(203, 0, 113, i))
                        } else {
                            IpAddr::V4(Ipv4Addr::new(10, 0, agent % 4, i % 6))
                        };
                        std::net::SocketAddr::new(ip, 8080 + u16::from(candidates >> 5))
                    })
                    .collect();
                let commitment = if forged {
                    LocalSecret::from_bytes([0x55; 32]).commitment(&id)
                } else {
                    secret.commitment(&id)
                };
                let private_ip = if public_ip {
                    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8))
                } else {
                    IpAddr::V4(Ipv4Addr::new(192, 168, 1, agent % 4 + 10))
                };
                let announce = Announce::new(
                    id,
                    private_ip,
                    8080,
                    DeviceInfo::default(),
                    commitment,
                    if forged_key {
                        PresenceKey::from_bytes([0x99; 32])
                    } else {
                        presence_key(agent)
                    },
                )
                .with_candidates(candidate_list);
                let network = server.config().network_of(net_ip(net));
                server.purge_now(now);
                let before = snapshot(&server, &network);
                // Without the key only a plain refresh of an unchanged presence may pass.
                let unchanged_refresh = server.store().network(&network).is_some_and(|r| {
                    r.presences.iter().any(|p| {
                        p.instance_id == id
                            && p.commitment == announce.commitment
                            && p.private_ip == announce.private_ip
                            && p.port == announce.port
                            && p.info.fingerprint() == announce.info.fingerprint()
                            && p.candidates == crate::server::record::kept_candidates(&announce)
                    })
                });
                match server.announce_now(now, net_ip(net), ForwardedHeaders::NONE, &announce) {
                    Ok(reply) => {
                        assert!(!public_ip, "a public private_ip was accepted");
                        assert!(!public_candidate, "a public candidate was accepted");
                        let kept = server.store().network(&network).and_then(|r| {
                            r.presences
                                .iter()
                                .find(|p| p.instance_id == id)
                                .map(|p| p.candidates.to_vec())
                        });
                        if let Some(kept) = kept {
                            assert!(kept.len() <= wire::MAX_CANDIDATES, "record unbounded");
                            assert!(
                                kept.iter()
                                    .all(|c| crate::addr::is_announceable_private_ip(c.ip())),
                                "a kept candidate is not private"
                            );
                        }
                        if forged_key {
                            assert!(
                                unchanged_refresh && reply.messages.is_empty(),
                                "an announcement without the agent's key changed or received something"
                            );
                        }
                        for message in reply.messages {
                            if let AgentMessage::VerifyAndRedeem {
                                instance_id,
                                local_secret,
                                code,
                                ..
                            } = message
                            {
                                assert_eq!(instance_id, id, "a message for another instance");
                                assert!(
                                    local_secret.ct_eq(&secret),
                                    "a forwarded secret that is not the agent's"
                                );
                                codes.push((code, Some(instance_id), Some(net_ip(net))));
                            }
                        }
                    }
                    Err(refusal) => {
                        if !matches!(refusal, Refusal::PresenceConflict | Refusal::WindowOver) {
                            assert_eq!(
                                before,
                                snapshot(&server, &network),
                                "refused announce changed state: {refusal:?}"
                            );
                        }
                    }
                }
            }
            ServerOp::Discover { net } => {
                let network = server.config().network_of(net_ip(net));
                server.purge_now(now);
                let present = server
                    .store()
                    .network(&network)
                    .map_or(0, |r| r.presences.len());
                let Ok(reply) =
                    server.discover_now(now, &fuzz_user(), net_ip(net), ForwardedHeaders::NONE)
                else {
                    panic!("discover refused without proxies")
                };
                assert!(
                    reply.agents.len() <= max_visible,
                    "more than max_visible shown"
                );
                if present > max_visible {
                    assert!(
                        reply.agents.is_empty(),
                        "agents shown while more than max_visible present"
                    );
                }
            }
            ServerOp::Link {
                net,
                agent,
                real,
                account,
            } => {
                let (id, secret) = identity(agent);
                let presented = if real {
                    secret
                } else {
                    LocalSecret::from_bytes([0x77; 32])
                };
                let network = server.config().network_of(net_ip(net));
                server.purge_now(now);
                let before = snapshot(&server, &network);
                let account = &accounts[usize::from(account) % accounts.len()];
                let request = LinkRequest::new(id, presented);
                match server.link_now(
                    now,
                    &mut rng,
                    &User::new(account.clone()),
                    net_ip(net),
                    ForwardedHeaders::NONE,
                    request,
                ) {
                    Ok(_) => assert!(real, "a link accepted without the real secret"),
                    Err(refusal) => assert_eq!(
                        before,
                        snapshot(&server, &network),
                        "refused link changed state: {refusal:?}"
                    ),
                }
            }
            ServerOp::Status {
                net,
                agent,
                account,
            } => {
                let (id, _) = identity(agent);
                let account = &accounts[usize::from(account) % accounts.len()];
                let _ =
                    server.link_status_now(now, account, net_ip(net), ForwardedHeaders::NONE, &id);
            }
            ServerOp::Mint { account } => {
                let account = &accounts[usize::from(account) % accounts.len()];
                if let Ok(reply) = at_once(server.mint_code(now, &mut rng, account)) {
                    assert_eq!(reply.code.expose().len(), 6);
                    codes.push((reply.code, None, None));
                }
            }
            ServerOp::Redeem {
                net,
                agent,
                code,
                guess,
                proof,
                attempt,
            } => {
                let (id, _) = identity(agent);
                let attempt = u32::from(attempt);
                let presence_key = match proof {
                    0 => None,
                    1 => Some(presence_key(agent % 4)),
                    _ => Some(PresenceKey::from_bytes([0xee; 32])),
                };
                let proven = proof == 1;
                let known = codes.get(usize::from(code)).cloned();
                let text = match &known {
                    Some((c, ..)) => c.expose().to_owned(),
                    None => format!("{:06}", guess % 1_000_000),
                };
                let Some(link_code) = LinkCode::parse(&text) else {
                    continue;
                };
                let network = server.config().network_of(net_ip(net));
                server.purge_now(now);
                let before = snapshot(&server, &network);
                let request = {
                    let mut m = RedeemRequest::new(id, link_code).with_attempt(attempt);
                    m.presence_key = presence_key;
                    m
                };
                match server.redeem_now(
                    now,
                    &mut rng,
                    net_ip(net),
                    ForwardedHeaders::NONE,
                    &request,
                ) {
                    Ok(redeemed_now) => {
                        assert!(proof <= 1, "redeemed with a key that is not the agent's");
                        assert_eq!(redeemed_now.reply.attempt, attempt, "the attempt echoed");
                        match redeemed.get_mut(&text) {
                            // Again: only by the proven redeemer, only with a newer attempt.
                            Some((by, last)) => {
                                assert!(proven, "a code redeemed twice without proof");
                                assert_eq!(*by, id, "a code redeemed again by another instance");
                                assert!(attempt > *last, "an older attempt completed again");
                                assert!(redeemed_now.link.reissued);
                                *last = attempt;
                            }
                            None => {
                                redeemed.insert(text.clone(), (id, attempt));
                            }
                        }
                        if let Some((_, bound_id, bound_net)) = known {
                            if let Some(bound) = bound_id {
                                assert_eq!(bound, id, "an auto code redeemed by another instance");
                            }
                            if let Some(bound) = bound_net {
                                assert_eq!(
                                    server.config().network_of(bound),
                                    network,
                                    "an auto code redeemed from another network"
                                );
                            }
                        }
                    }
                    Err(refusal) => assert_eq!(
                        before,
                        snapshot(&server, &network),
                        "refused redeem changed state: {refusal:?}"
                    ),
                }
            }
        }
        while let Some(event) = server.poll_event() {
            if let ServerEvent::Discovered { shown, .. } = event {
                assert!(shown <= max_visible);
            }
        }
    }
}

/// The public network of a caller at `ip` (no proxies: its own address).
#[cfg(feature = "obico")]
pub(super) fn network_of(server: &Server, ip: IpAddr) -> crate::addr::PublicNetwork {
    server.config().network_of(ip)
}

/// The account the server harness discovers as.
fn fuzz_user() -> User {
    User::new(AccountId::new("fuzz").unwrap_or_else(|| unreachable!()))
}

/// A network record without its failure counter and lockout (which refusals may change).
fn snapshot(server: &Server, network: &crate::addr::PublicNetwork) -> String {
    let empty = crate::server::NetworkRecord::default();
    let r = server.store().network(network).unwrap_or(empty);
    format!(
        "{:?} {:?} {:?} codes={}",
        r.presences,
        r.links(),
        r.used(),
        server.store().codes()
    )
}
