//! The linker's harness (`linker_ops`).
//! Its clock starts at one `Instant` taken at the start and moves only as the input says; the
//! linker is built without a nonce, so no RNG is drawn.
//! It must not read the wall clock, touch the network or draw from the OS RNG.

use super::*;

/// One input to the linker.
///
/// ```
/// use arbitrary::{Arbitrary, Unstructured};
/// use lanlink::fuzz::LinkerOp;
/// // The fuzzer's bytes pick the variant: all zeros pick the first.
/// let op = LinkerOp::arbitrary(&mut Unstructured::new(&[0; 8]))?;
/// assert!(matches!(op, LinkerOp::Advance(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Arbitrary)]
pub enum LinkerOp {
    /// Time moves forward by this many milliseconds.
    Advance(u32),
    /// Drain transmits.
    Poll,
    /// A discovery reply (agents at the given addresses, with candidate endpoints of any
    /// kind: revision 1.3), or a refusal.
    Discovered(Option<Vec<FuzzedAgent>>),
    /// The user picks the n-th choice.
    Select(u8),
    /// A secret reply, or a refusal, to the n-th latest secret request (0: the one in flight;
    /// more: a late answer to an earlier one, which must be refused as stale).
    Secret(Option<[u8; 32]>, u8),
    /// The link reply.
    LinkReply(bool),
    /// A status reply.
    Status(u8, bool),
    /// A transport error.
    TransportError,
}

/// One agent of a fuzzed discovery reply: its address, port, id and candidate endpoints.
pub type FuzzedAgent = (PeerKind, u16, [u8; 16], Vec<(PeerKind, u16)>);

/// Feeds the linker arbitrary replies in arbitrary order; checks it only fetches from private
/// addresses, only links with a fetched secret, and stays finished once finished.
///
/// ```
/// use lanlink::fuzz::linker_ops;
/// // A finding is a panic; these inputs (empty, short, and a longer pseudo-random one) find none.
/// let long: Vec<u8> = (0..512u32).map(|i| (i * 37 % 251) as u8).collect();
/// for input in [&b""[..], b"\x00\x01\x02\x03", b"{}", &long] {
///     assert!(std::panic::catch_unwind(|| linker_ops(input)).is_ok());
/// }
/// ```
pub fn linker_ops(data: &[u8]) {
    let mut now = Instant::now();
    let mut linker = Linker::without_nonce(LinkerConfig::default(), now);
    let mut fetched: Option<InstanceId> = None;
    let mut last_fetch: Option<InstanceId> = None;
    // Every secret request the linker made, oldest first.
    let mut fetches: Vec<crate::linker::FetchId> = Vec::new();
    for op in ops::<LinkerOp>(data) {
        let was_finished = linker.is_finished();
        match op {
            LinkerOp::Advance(ms) => {
                now = now
                    .checked_add(Duration::from_millis(u64::from(ms)))
                    .unwrap_or(now)
            }
            LinkerOp::Poll => {
                while let Some(transmit) = linker.poll_transmit(now) {
                    assert!(!was_finished, "a finished linker transmitted");
                    match transmit {
                        LinkerTransmit::FetchSecret {
                            agent,
                            instance_id,
                            fetch,
                        } => {
                            assert!(
                                crate::addr::is_announceable_private_ip(agent.ip())
                                    && agent.port() != 0,
                                "fetch from a public address or port 0"
                            );
                            last_fetch = Some(instance_id);
                            fetches.push(fetch);
                        }
                        LinkerTransmit::Link(request) => {
                            assert_eq!(
                                Some(request.instance_id),
                                fetched,
                                "link without a fetched secret"
                            );
                        }
                        LinkerTransmit::Discover | LinkerTransmit::LinkStatus { .. } => {}
                    }
                }
            }
            LinkerOp::Discovered(reply) => {
                let reply = reply
                    .map(|agents| {
                        DiscoverReply::new(
                            agents
                                .into_iter()
                                .map(|(peer, port, id, candidates)| DiscoveredAgent {
                                    instance_id: InstanceId::from_bytes(id),
                                    private_ip: peer.ip(),
                                    port,
                                    info: DeviceInfo::default(),
                                    candidates: candidates
                                        .into_iter()
                                        .map(|(peer, port)| {
                                            std::net::SocketAddr::new(peer.ip(), port)
                                        })
                                        .collect(),
                                })
                                .collect(),
                        )
                    })
                    .ok_or(Refusal::LockedOut.code());
                let _ = linker.handle_discover_reply(now, reply);
            }
            LinkerOp::Select(i) => {
                let choice = linker.choices().get(usize::from(i)).map(|a| a.instance_id);
                if let Some(id) = choice {
                    let _ = linker.select(now, id);
                }
            }
            LinkerOp::Secret(secret, back) => {
                let reply = secret
                    .map(|s| SecretReply::new(LocalSecret::from_bytes(s)))
                    .ok_or(FetchFailure::Unreachable);
                let ok = reply.is_ok();
                // The request it answers: the latest, or an earlier one.
                let Some(at) = fetches.len().checked_sub(1 + usize::from(back)) else {
                    continue;
                };
                let answered = linker.handle_secret_reply(now, fetches[at], reply);
                if at + 1 < fetches.len() {
                    assert!(answered.is_err(), "a stale secret reply was taken");
                }
                if answered.is_ok() && ok && !linker.is_finished() {
                    fetched = last_fetch;
                }
            }
            LinkerOp::LinkReply(ok) => {
                let id = fetched.unwrap_or_else(|| InstanceId::from_bytes([0; 16]));
                let reply = if ok {
                    Ok(LinkStatusReply::new(id, LinkState::Pending))
                } else {
                    Err(Refusal::WrongSecret.code())
                };
                let _ = linker.handle_link_reply(now, reply);
            }
            LinkerOp::Status(state, ok) => {
                let id = fetched.unwrap_or_else(|| InstanceId::from_bytes([0; 16]));
                let state = [
                    LinkState::Pending,
                    LinkState::Delivered,
                    LinkState::Linked,
                    LinkState::Unknown,
                ][usize::from(state) % 4];
                let reply = if ok {
                    Ok(LinkStatusReply::new(id, state))
                } else {
                    Err(Refusal::LockedOut.code())
                };
                let _ = linker.handle_link_status(now, reply);
            }
            LinkerOp::TransportError => linker.handle_transport_error(now),
        }
        if was_finished {
            assert!(linker.is_finished(), "a finished linker came back to life");
        }
        if let Some(id) = linker.linked() {
            assert_eq!(
                Some(id),
                fetched,
                "linked an agent whose secret was never fetched"
            );
        }
        while linker.poll_event().is_some() {}
    }
}
