//! The Obico profile's harness (`obico_ops`).
//! Its clock starts at a fixed timestamp and moves only as the input says; its RNG is seeded.
//! It must not read the wall clock, touch the network or draw from the OS RNG.

use super::*;

/// One request of the Obico profile.
///
/// ```
/// use arbitrary::{Arbitrary, Unstructured};
/// use lanlink::fuzz::ObicoOp;
/// // The fuzzer's bytes pick the variant: all zeros pick the first.
/// let op = ObicoOp::arbitrary(&mut Unstructured::new(&[0; 8]))?;
/// assert!(matches!(op, ObicoOp::Advance(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "obico-wire")]
#[derive(Debug, Clone, Arbitrary)]
pub enum ObicoOp {
    /// Time passes.
    Advance(u16),
    /// An agent (or someone using its `device_id`) polls `unlinked` from network `net`.
    Poll {
        /// Which network.
        net: u8,
        /// Which of three devices.
        device: u8,
        /// A LAN address other than the device's usual one.
        moved: bool,
        /// Whether the poll carries `one_time_passcode`, and which passcode seen so far it shows.
        passcode: Option<u8>,
    },
    /// A user of `net` lists Obico agents.
    Discover {
        /// Which network.
        net: u8,
    },
    /// A user of `net` asks to link a device with some secret.
    Link {
        /// Which network.
        net: u8,
        /// Which device.
        device: u8,
        /// Which account.
        account: u8,
        /// The secret presented (`None`: not 64 hex characters).
        secret: Option<u8>,
    },
    /// A redemption from `net` of a code handed out so far, a passcode, or a made-up code.
    Verify {
        /// Which network.
        net: u8,
        /// Which code.
        code: CodeChoice,
    },
    /// A user of `net` claims a passcode seen so far, or a made-up one.
    Claim {
        /// Which network.
        net: u8,
        /// Which account.
        account: u8,
        /// Which passcode (`None`: made up).
        passcode: Option<u8>,
    },
    /// Expired records are dropped.
    Purge,
}

/// Which code a [`ObicoOp::Verify`] presents.
///
/// ```
/// use arbitrary::{Arbitrary, Unstructured};
/// use lanlink::fuzz::CodeChoice;
/// // The fuzzer's bytes pick the variant: all zeros pick the first.
/// let op = CodeChoice::arbitrary(&mut Unstructured::new(&[0; 8]))?;
/// assert!(matches!(op, CodeChoice::HandedOut(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "obico-wire")]
#[derive(Debug, Clone, Arbitrary)]
pub enum CodeChoice {
    /// A code handed to an agent (a `verify_code` message or a claimed passcode's code).
    HandedOut(u8),
    /// A passcode an agent was given to show.
    Passcode(u8),
    /// Made-up text.
    Text(String),
}

/// Drives the Obico profile of the in-memory server with arbitrary polls, discoveries, links,
/// redemptions and passcode claims from four networks (some of them spoofing another network's
/// `device_id`), and checks after every step:
///
/// - a `verify_code` message goes only to a poll from the network whose user asked for that
///   device, carries that user's secret, and is delivered at most once;
/// - discovery from a network shows at most `max_visible` devices, each one that polled from
///   that network;
/// - a code redeems at most once, an auto code or a claimed passcode's code only from the
///   network it is bound to, and for the account that asked; a passcode itself never redeems;
/// - a claimed passcode's code is handed only to its own device polling from its own network.
///
/// ```
/// use lanlink::fuzz::obico_ops;
/// // A finding is a panic; these inputs (empty, short, and a longer pseudo-random one) find none.
/// let long: Vec<u8> = (0..512u32).map(|i| (i * 37 % 251) as u8).collect();
/// for input in [&b""[..], b"\x00\x01\x02\x03", b"{}", &long] {
///     assert!(std::panic::catch_unwind(|| obico_ops(input)).is_ok());
/// }
/// ```
#[cfg(feature = "obico-wire")]
pub fn obico_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let max_visible = u.int_in_range(1..=2).unwrap_or(1);
    obico_run(max_visible, ops::<ObicoOp>(u.take_rest()));
}

/// What an [`obico_ops`] run reached (so a test can tell the checks ran).
#[cfg(feature = "obico-wire")]
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ObicoReached {
    pub(super) delivered: usize,
    pub(super) redeemed: usize,
    pub(super) claimed: usize,
}

#[cfg(feature = "obico-wire")]
pub(super) fn obico_run(max_visible: usize, ops: Vec<ObicoOp>) -> ObicoReached {
    use std::collections::HashMap;

    use crate::obico::{ObicoConfig, UnlinkedPoll};

    let mut reached = ObicoReached::default();
    let Ok(server) = Server::new(ServerConfig::default().max_visible(max_visible)) else {
        unreachable!("valid configuration")
    };
    let obico = ObicoConfig::default();
    let mut rng = StdRng::seed_from_u64(6);
    let mut now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let accounts: Vec<AccountId> = ["a", "b", "c"]
        .iter()
        .filter_map(|a| AccountId::new(*a))
        .collect();
    let device = |i: u8| InstanceId::from_bytes([0x40 + i % 3; 16]);
    let secret_of = |i: u8| LocalSecret::from_bytes([0x70 + i % 4; 32]);
    // (device, network) → (account, secret) of accepted links not yet delivered.
    let mut pending: HashMap<(InstanceId, IpAddr), (AccountId, LocalSecret)> = HashMap::new();
    // Devices that polled from each network.
    let mut polled: HashSet<(InstanceId, IpAddr)> = HashSet::new();
    // Codes handed out: code → (device, network, account).
    let mut handed: Vec<(LinkCode, InstanceId, IpAddr, AccountId)> = Vec::new();
    // Passcodes given to agents: passcode → (device, network).
    let mut passcodes: Vec<(LinkCode, InstanceId, IpAddr)> = Vec::new();
    // Passcode → the account that claimed it.
    let mut claims: HashMap<String, AccountId> = HashMap::new();
    // (device, network, account) of every claimed passcode.
    let mut claimed: Vec<(InstanceId, IpAddr, AccountId)> = Vec::new();
    let mut redeemed: HashSet<String> = HashSet::new();
    for op in ops {
        match op {
            ObicoOp::Advance(ms) => now += TimeDelta::milliseconds(i64::from(ms) * 8),
            ObicoOp::Purge => server.purge_now(now),
            ObicoOp::Poll {
                net,
                device: d,
                moved,
                passcode,
            } => {
                let (id, from) = (device(d), net_ip(net));
                let shown = passcode.map(|k| {
                    passcodes
                        .get(usize::from(k) % passcodes.len().max(1))
                        .map(|(p, _, _)| p.expose().to_owned())
                        .unwrap_or_default()
                });
                let poll = UnlinkedPoll {
                    device_id: id,
                    endpoint: Some((
                        IpAddr::V4(Ipv4Addr::new(
                            192,
                            168,
                            1,
                            20 + d % 3 + u8::from(moved) * 50,
                        )),
                        80,
                    )),
                    info: DeviceInfo::default(),
                    extra: Default::default(),
                    one_time_passcode: shown.clone(),
                };
                polled.insert((id, from));
                let Ok(reply) = at_once(server.obico_unlinked(
                    now,
                    &mut rng,
                    &obico,
                    network_of(&server, from),
                    &poll,
                )) else {
                    continue;
                };
                if let Some(message) = reply.message {
                    assert_eq!(message.device_id, id, "a message for another device");
                    let Some((account, secret)) = pending.remove(&(id, from)) else {
                        panic!("verify_code delivered to {from} without a link from there");
                    };
                    assert!(message.secret.ct_eq(&secret), "not the linker's secret");
                    handed.push((message.code, id, from, account));
                    reached.delivered += 1;
                }
                if let Some(reply) = reply.passcode {
                    if let Some(code) = reply.verification_code {
                        let shown = shown.unwrap_or_default();
                        let Some((_, owner, home)) =
                            passcodes.iter().find(|(p, _, _)| p.expose() == shown)
                        else {
                            panic!("a verification code for a passcode never given out");
                        };
                        assert_eq!(
                            (*owner, *home),
                            (id, from),
                            "claimed code to another poller"
                        );
                        let Some(account) = claims.get(&shown) else {
                            panic!("a verification code for an unclaimed passcode");
                        };
                        handed.push((code, id, from, account.clone()));
                    }
                    if !passcodes
                        .iter()
                        .any(|(p, _, _)| p.expose() == reply.one_time_passcode.expose())
                    {
                        passcodes.push((reply.one_time_passcode, id, from));
                    }
                }
            }
            ObicoOp::Discover { net } => {
                let from = net_ip(net);
                let account = &accounts[usize::from(net) % accounts.len()];
                let listed = at_once(server.obico_list(now, network_of(&server, from), account));
                if let Ok(shown) = listed.map(|l| l.into_iter().map(|(a, _)| a).collect::<Vec<_>>())
                {
                    assert!(shown.len() <= max_visible, "more than max_visible shown");
                    for agent in &shown {
                        assert!(
                            polled.contains(&(agent.instance_id, from)),
                            "shown to a network it never polled from"
                        );
                    }
                }
            }
            ObicoOp::Link {
                net,
                device: d,
                account,
                secret,
            } => {
                let (id, from) = (device(d), net_ip(net));
                let account = accounts[usize::from(account) % accounts.len()].clone();
                let secret = secret.map(secret_of);
                let presented = secret.clone();
                let linked = at_once(server.obico_link(
                    now,
                    &mut rng,
                    network_of(&server, from),
                    &account,
                    id,
                    secret,
                ));
                if linked.is_ok() {
                    let Some(secret) = presented else {
                        panic!("a link without a well-formed secret was accepted");
                    };
                    assert!(
                        pending.insert((id, from), (account, secret)).is_none(),
                        "a second pending link for one device and network"
                    );
                }
            }
            ObicoOp::Verify { net, code } => {
                let from = net_ip(net);
                let (text, handed_out, passcode) = match code {
                    CodeChoice::HandedOut(k) => {
                        match handed.get(usize::from(k) % handed.len().max(1)) {
                            Some((code, id, home, account)) => (
                                code.expose().to_owned(),
                                Some((*id, *home, account.clone())),
                                false,
                            ),
                            None => continue,
                        }
                    }
                    CodeChoice::Passcode(k) => {
                        match passcodes.get(usize::from(k) % passcodes.len().max(1)) {
                            Some((p, _, _)) => (p.expose().to_owned(), None, true),
                            None => continue,
                        }
                    }
                    // Text that happens to be a handed-out code counts as that code.
                    CodeChoice::Text(text) => {
                        let known = handed
                            .iter()
                            .find(|(code, _, _, _)| code.expose() == text)
                            .map(|(_, id, home, account)| (*id, *home, account.clone()));
                        let passcode = passcodes.iter().any(|(p, _, _)| p.expose() == text);
                        (text, known, passcode)
                    }
                };
                let Some(code) = LinkCode::parse(&text) else {
                    continue;
                };
                let Ok(verified) =
                    at_once(server.obico_verify(now, &mut rng, network_of(&server, from), &code))
                else {
                    continue;
                };
                assert!(!passcode, "a passcode redeemed as a link code");
                assert!(redeemed.insert(text.clone()), "a code redeemed twice");
                // The harness's RNG is seeded, so the fuzzer can learn a code the server is
                // going to mint and present it before the agent receives it (it found this
                // within 30 minutes). Such a code is the real code of a link or claim still
                // awaiting delivery, and must be bound like one: to this network, this device
                // and the account that asked. Anything else is a made-up code redeemed.
                let awaiting = pending
                    .iter()
                    .map(|((id, home), (account, _))| (*id, *home, account.clone()))
                    .chain(claimed.iter().cloned())
                    .find(|(id, home, account)| {
                        *id == verified.redeemed.instance_id
                            && *home == from
                            && *account == verified.redeemed.account
                    });
                let Some((id, home, account)) = handed_out.or(awaiting) else {
                    panic!("a made-up code redeemed: {text}");
                };
                assert_eq!(home, from, "a bound code redeemed from another network");
                assert_eq!(verified.redeemed.instance_id, id);
                assert_eq!(verified.redeemed.account, account);
                reached.redeemed += 1;
            }
            ObicoOp::Claim {
                net,
                account,
                passcode,
            } => {
                let from = net_ip(net);
                let account = accounts[usize::from(account) % accounts.len()].clone();
                let text = match passcode {
                    Some(k) => match passcodes.get(usize::from(k) % passcodes.len().max(1)) {
                        Some((p, _, _)) => p.expose().to_owned(),
                        None => continue,
                    },
                    None => "ZZZZZZZZ".to_owned(),
                };
                if at_once(server.obico_claim(
                    now,
                    &mut rng,
                    network_of(&server, from),
                    &account,
                    &text,
                ))
                .is_ok()
                {
                    assert!(
                        passcodes.iter().any(|(p, _, _)| p.expose() == text),
                        "a made-up passcode claimed"
                    );
                    if let Some((_, id, home)) =
                        passcodes.iter().find(|(p, _, _)| p.expose() == text)
                    {
                        claimed.push((*id, *home, account.clone()));
                    }
                    assert!(
                        claims.insert(text, account).is_none(),
                        "a passcode claimed twice"
                    );
                    reached.claimed += 1;
                }
            }
        }
    }
    reached
}
