//! The agent's harness (`agent_ops`): a caller's address, host and origin classes, and the agent's state machine under them.
//! Its clock starts at one `Instant` taken at the start and moves only as the input says; its RNG
//! is seeded.
//! It must not read the wall clock, touch the network or draw from the OS RNG.

use super::*;
use crate::transport::TransportError;

/// A caller address, by kind, so the fuzzer reaches every class the policy distinguishes.
///
/// ```
/// use arbitrary::{Arbitrary, Unstructured};
/// use lanlink::fuzz::PeerKind;
/// let peer = PeerKind::arbitrary(&mut Unstructured::new(&[0, 0, 0, 0, 5]))?;
/// assert_eq!(peer.ip().to_string(), "192.168.1.5"); // the first kind, `Lan`
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum PeerKind {
    /// 192.168.1.x
    Lan(u8),
    /// 127.0.0.1
    Loopback,
    /// 169.254.x.1
    LinkLocal(u8),
    /// fd00::x
    Ula(u8),
    /// 100.64.0.x (CGNAT)
    Cgnat(u8),
    /// 203.0.113.x
    Public(u8),
    /// ::ffff:192.168.1.x
    MappedLan(u8),
    /// ::ffff:203.0.113.x
    MappedPublic(u8),
    /// Any IPv6 address.
    Raw([u8; 16]),
}

impl PeerKind {
    /// The address.
    ///
    /// ```
    /// use lanlink::fuzz::PeerKind;
    /// assert_eq!(PeerKind::Cgnat(9).ip().to_string(), "100.64.0.9");
    /// assert_eq!(PeerKind::MappedPublic(7).ip().to_string(), "::ffff:203.0.113.7");
    /// assert!(!lanlink::LocalPolicy::default().is_local(PeerKind::Public(1).ip()));
    /// ```
    pub fn ip(self) -> IpAddr {
        match self {
            Self::Lan(x) => Ipv4Addr::new(192, 168, 1, x).into(),
            Self::Loopback => Ipv4Addr::LOCALHOST.into(),
            Self::LinkLocal(x) => Ipv4Addr::new(169, 254, x, 1).into(),
            Self::Ula(x) => Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(x)).into(),
            Self::Cgnat(x) => Ipv4Addr::new(100, 64, 0, x).into(),
            Self::Public(x) => Ipv4Addr::new(203, 0, 113, x).into(),
            Self::MappedLan(x) => Ipv4Addr::new(192, 168, 1, x).to_ipv6_mapped().into(),
            Self::MappedPublic(x) => Ipv4Addr::new(203, 0, 113, x).to_ipv6_mapped().into(),
            Self::Raw(bytes) => Ipv6Addr::from(bytes).into(),
        }
    }
}

/// The reference answer to "is this caller local?" under the default policy, written plainly.
pub(super) fn reference_is_local(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            a == 10
                || (a == 172 && (16..=31).contains(&b))
                || (a == 192 && b == 168)
                || a == 127
                || (a == 169 && b == 254)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6 == Ipv6Addr::LOCALHOST || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// A `Host` header, by kind.
///
/// ```
/// use arbitrary::{Arbitrary, Unstructured};
/// use lanlink::fuzz::HostKind;
/// // The fuzzer's bytes pick the variant: all zeros pick the first.
/// let op = HostKind::arbitrary(&mut Unstructured::new(&[0; 8]))?;
/// assert!(matches!(op, HostKind::OwnIp));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Arbitrary)]
pub enum HostKind {
    /// The agent's own IP literal.
    OwnIp,
    /// The agent's IP literal with its port.
    OwnIpPort,
    /// An IPv6 literal in brackets.
    V6Literal,
    /// The allowed name.
    AllowedName,
    /// Another name.
    Evil,
    /// None at all.
    Missing,
    /// Anything.
    Raw(String),
}

/// The reference `Host` check: IPv4 literal or `[IPv6]` (optional `:port`), or the allowed name.
pub(super) fn reference_host_ok(host: &str, allowed: &str) -> bool {
    let host = host.trim();
    let port_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    };
    if let Some(rest) = host.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let after = &rest[end + 1..];
        let port_fine = after.is_empty() || after.strip_prefix(':').is_some_and(port_ok);
        return rest[..end].parse::<Ipv6Addr>().is_ok() && port_fine;
    }
    let (name, port) = match host.find(':') {
        Some(i) => (&host[..i], Some(&host[i + 1..])),
        None => (host, None),
    };
    if port.is_some_and(|p| !port_ok(p)) {
        return false;
    }
    if name.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.');
    !name.is_empty() && name.eq_ignore_ascii_case(allowed)
}

/// An `Origin` header, by kind.
///
/// ```
/// use arbitrary::{Arbitrary, Unstructured};
/// use lanlink::fuzz::OriginKind;
/// // The fuzzer's bytes pick the variant: all zeros pick the first.
/// let op = OriginKind::arbitrary(&mut Unstructured::new(&[0; 8]))?;
/// assert!(matches!(op, OriginKind::Missing));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Arbitrary)]
pub enum OriginKind {
    /// None.
    Missing,
    /// The allowed origin.
    Allowed,
    /// The allowed origin in other case.
    AllowedUpper,
    /// Another origin.
    Foreign,
    /// `null`.
    Null,
    /// Anything.
    Raw(String),
}

/// An `instance_id` parameter, by kind.
///
/// ```
/// use arbitrary::{Arbitrary, Unstructured};
/// use lanlink::fuzz::IdKind;
/// // The fuzzer's bytes pick the variant: all zeros pick the first.
/// let op = IdKind::arbitrary(&mut Unstructured::new(&[0; 8]))?;
/// assert!(matches!(op, IdKind::Own));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Arbitrary)]
pub enum IdKind {
    /// The agent's own id.
    Own,
    /// The agent's id, without hyphens.
    OwnSimple,
    /// Another id.
    Other([u8; 16]),
    /// Anything.
    Raw(String),
}

/// One input to the agent.
///
/// ```
/// use arbitrary::{Arbitrary, Unstructured};
/// use lanlink::fuzz::AgentOp;
/// // The fuzzer's bytes pick the variant: all zeros pick the first.
/// let op = AgentOp::arbitrary(&mut Unstructured::new(&[0; 8]))?;
/// assert!(matches!(op, AgentOp::Advance(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Arbitrary)]
pub enum AgentOp {
    /// Time moves forward by this many milliseconds.
    Advance(u32),
    /// A spurious or due timeout.
    Timeout,
    /// A secret request.
    Secret {
        /// The socket peer.
        peer: PeerKind,
        /// An `X-Forwarded-For` value (ignored: the agent trusts no proxy here).
        xff: Option<String>,
        /// The `Host`.
        host: HostKind,
        /// The `Origin`.
        origin: OriginKind,
        /// The `instance_id`.
        id: IdKind,
    },
    /// Drain transmits, answering announcements with an empty reply.
    Poll,
    /// A forwarded message.
    Message {
        /// Whether it names the agent's id.
        own_id: bool,
        /// Whether it carries the agent's real secret.
        real_secret: bool,
        /// The code.
        code: String,
        /// The display name it carries (revision 1.4).
        display_name: Option<String>,
        /// Whether it carries a nonce (revision 1.4).
        with_nonce: bool,
    },
    /// The owner's decision at the device: approve (`true`) or refuse (revision 1.4).
    Confirm(bool),
    /// The user types a code.
    EnterCode(String),
    /// The server's answer to a redemption.
    RedeemReply(Option<[u8; 32]>),
    /// A transport gave up on the redemption.
    RedeemFailed,
    /// The server refused an announcement (below 128: with one of its codes); or, from 128, the
    /// announcement failed without the server's answer (unreachable, a proxy's `504` page, an
    /// unreadable reply) or was refused as malformed (revision 1.6's failed holds).
    AnnounceRefused(u8),
    /// The embedder cancels.
    Cancel,
    /// The embedder restarts discovery.
    Restart,
}

fn refusal_from(index: u8) -> WireCode {
    const CODES: [&str; 16] = [
        "unresolvable_client",
        "forged_instance",
        "locked_out",
        "not_private_ip",
        "presence_conflict",
        "network_full",
        "instance_used",
        "window_over",
        "agent_not_found",
        "too_many_agents",
        "agent_contested",
        "already_linking",
        "wrong_secret",
        "invalid_code",
        "code_space_exhausted",
        // A newer peer's code: fails closed.
        "from_a_newer_peer",
    ];
    WireCode::parse(CODES[usize::from(index) % CODES.len()]).unwrap_or(WireCode::LockedOut)
}

/// Drives one agent with arbitrary inputs; checks every served secret against a reference
/// predicate for protocol step 5, that a stopped or linked agent never serves, and, under a
/// confirmation policy (the first byte picks none, approve or compare), that no redemption is
/// sent without an approval or a typed code.
///
/// ```
/// use lanlink::fuzz::agent_ops;
/// // A finding is a panic; these inputs (empty, short, and a longer pseudo-random one) find none.
/// let long: Vec<u8> = (0..512u32).map(|i| (i * 37 % 251) as u8).collect();
/// for input in [&b""[..], b"\x00\x01\x02\x03", b"{}", &long] {
///     assert!(std::panic::catch_unwind(|| agent_ops(input)).is_ok());
/// }
/// ```
pub fn agent_ops(data: &[u8]) {
    const NAME: &str = "printer.local";
    const ORIGIN: &str = "https://cloud.example";
    let start = Instant::now();
    let mut now = start;
    let mut rng = StdRng::seed_from_u64(1);
    let config = AgentConfig::new(
        Ipv4Addr::new(192, 168, 1, 50).into(),
        8080,
        DeviceInfo::default(),
    )
    .allow_host(NAME)
    .allow_origin(ORIGIN);
    let policy = match data.first().map(|b| b % 3) {
        Some(1) => Confirmation::Approve,
        Some(2) => Confirmation::Compare,
        _ => Confirmation::None,
    };
    let config = config.confirmation(policy);
    let Ok(mut agent) = Agent::new(config, now, &mut rng) else {
        unreachable!("valid configuration")
    };
    let mut secret = SecretReplyCheck::default();
    let mut redeem_sent = false;
    // Whether a redemption may be sent: after a verified message under no policy, an approval,
    // or a typed code.
    let mut may_redeem = false;
    for op in ops::<AgentOp>(data) {
        let before = agent.status();
        match op {
            AgentOp::Advance(ms) => {
                now = now
                    .checked_add(Duration::from_millis(u64::from(ms)))
                    .unwrap_or(now);
            }
            AgentOp::Timeout => agent.handle_timeout(now),
            AgentOp::Secret {
                peer,
                xff,
                host,
                origin,
                id,
            } => {
                let own = agent.instance_id();
                let host_text = match &host {
                    HostKind::OwnIp => Some("192.168.1.50".to_owned()),
                    HostKind::OwnIpPort => Some("192.168.1.50:8080".to_owned()),
                    HostKind::V6Literal => Some("[fd00::50]:8080".to_owned()),
                    HostKind::AllowedName => Some(NAME.to_owned()),
                    HostKind::Evil => Some("attacker.example".to_owned()),
                    HostKind::Missing => None,
                    HostKind::Raw(text) => Some(text.clone()),
                };
                let origin_text = match &origin {
                    OriginKind::Missing => None,
                    OriginKind::Allowed => Some(ORIGIN.to_owned()),
                    OriginKind::AllowedUpper => Some(ORIGIN.to_ascii_uppercase()),
                    OriginKind::Foreign => Some("https://evil.example".to_owned()),
                    OriginKind::Null => Some("null".to_owned()),
                    OriginKind::Raw(text) => Some(text.clone()),
                };
                let id_text = match &id {
                    IdKind::Own => own.to_string(),
                    IdKind::OwnSimple => own.as_uuid().simple().to_string(),
                    IdKind::Other(bytes) => InstanceId::from_bytes(*bytes).to_string(),
                    IdKind::Raw(text) => text.clone(),
                };
                let xff_lines: Vec<&str> = xff.iter().map(String::as_str).collect();
                let request = SecretRequest {
                    peer: peer.ip(),
                    forwarded: ForwardedHeaders {
                        forwarded: &[],
                        x_forwarded_for: &xff_lines,
                    },
                    host: host_text.as_deref(),
                    origin: origin_text.as_deref(),
                    instance_id: &id_text,
                };
                let deadline = match before {
                    AgentStatus::Discovering { deadline } => Some(deadline),
                    _ => None,
                };
                let result = agent.handle_secret_request(now, &request);
                if let Ok(reply) = &result {
                    let allowed = deadline.is_some_and(|d| now < d)
                        && reference_is_local(peer.ip())
                        && id_text.parse::<InstanceId>().ok() == Some(own)
                        && host_text
                            .as_deref()
                            .is_some_and(|h| reference_host_ok(h, NAME))
                        && origin_text
                            .as_deref()
                            .is_none_or(|o| o.trim().eq_ignore_ascii_case(ORIGIN));
                    assert!(
                        allowed,
                        "secret served against step 5: {request:?} at {:?}",
                        now - start
                    );
                    secret.seen(&reply.local_secret);
                }
                if !matches!(before, AgentStatus::Discovering { .. }) {
                    assert!(
                        result.is_err(),
                        "a stopped or linked agent served its secret"
                    );
                }
            }
            AgentOp::Poll => {
                while let Some(transmit) = agent.poll_transmit(now) {
                    match transmit {
                        AgentTransmit::Announce(a) => {
                            assert_eq!(a.instance_id, agent.instance_id());
                            // A hold (revision 1.6) within the wire's bound and the window.
                            if let Some(ms) = a.hold_ms {
                                assert!(ms > 0 && ms <= crate::wire::MAX_HOLD_MS, "hold {ms}");
                                if let AgentStatus::Discovering { deadline } = agent.status() {
                                    let until = now + Duration::from_millis(u64::from(ms));
                                    assert!(until <= deadline, "a hold past the window");
                                }
                            }
                            agent.handle_announce_reply(now, AnnounceReply::default());
                        }
                        AgentTransmit::Redeem(r) => {
                            assert_eq!(r.instance_id, agent.instance_id());
                            assert!(may_redeem, "a redemption without approval or a typed code");
                            redeem_sent = true;
                            break;
                        }
                    }
                }
            }
            AgentOp::Message {
                own_id,
                real_secret,
                code,
                display_name,
                with_nonce,
            } => {
                let Some(code) = LinkCode::parse(&code) else {
                    continue;
                };
                let instance_id = if own_id {
                    agent.instance_id()
                } else {
                    InstanceId::from_bytes([0xee; 16])
                };
                let local_secret = match (real_secret, secret.last.clone()) {
                    (true, Some(s)) => s,
                    _ => LocalSecret::from_bytes([0xaa; 32]),
                };
                let matches = secret.last.as_ref().is_some_and(|s| s.ct_eq(&local_secret));
                agent.handle_announce_reply(
                    now,
                    AnnounceReply::new(
                        vec![AgentMessage::VerifyAndRedeem {
                            instance_id,
                            local_secret,
                            code,
                            display_name: display_name.clone(),
                            nonce: with_nonce.then(|| ConfirmNonce::from_bytes([0x42; 16])),
                        }],
                        2000,
                    ),
                );
                if let AgentStatus::Discovering { deadline } = before {
                    let name = display_name.as_deref().map(DisplayName::new);
                    let verified = own_id && matches && now < deadline && name != Some(None);
                    let complete =
                        name.flatten().is_some() && (with_nonce || !policy.shows_short_code());
                    match agent.status() {
                        AgentStatus::Redeeming => {
                            assert!(
                                verified && !policy.requires_decision(),
                                "redeeming without the right secret and id in the window, or under a policy"
                            );
                            may_redeem = true;
                        }
                        AgentStatus::Confirming { deadline: asked } => {
                            assert!(verified && complete && policy.requires_decision());
                            assert!(asked <= deadline, "the confirmation outlives the window");
                            let pending = agent.pending_confirmation().map(|p| p.short_code);
                            assert_eq!(
                                pending.map(|c| c.is_some()),
                                Some(policy.shows_short_code())
                            );
                        }
                        AgentStatus::Stopped(_) => assert!(
                            !(verified && (complete || !policy.requires_decision())),
                            "a good message stopped discovery"
                        ),
                        other => panic!("after a message the agent is {other:?}"),
                    }
                } else {
                    // Only time may change a non-discovering agent: a message handled after the
                    // redeem or confirmation deadline lets the agent's timer stop it first.
                    let after = agent.status();
                    let timed_out = (before == AgentStatus::Redeeming
                        && after
                            == AgentStatus::Stopped(crate::event::StopReason::ServerUnreachable))
                        || (matches!(before, AgentStatus::Confirming { .. })
                            && after
                                == AgentStatus::Stopped(
                                    crate::event::StopReason::ConfirmationExpired,
                                ));
                    assert!(
                        after == before || timed_out,
                        "a message changed a non-discovering agent: {before:?} -> {after:?}"
                    );
                }
            }
            AgentOp::Confirm(approve) => {
                let decision = if approve {
                    Decision::Approve
                } else {
                    Decision::Refuse
                };
                let live = matches!(before, AgentStatus::Confirming { deadline } if now < deadline);
                let ok = agent.confirm(now, decision).is_ok();
                assert_eq!(
                    ok, live,
                    "a decision taken without a live request, or refused"
                );
                if ok && approve {
                    assert_eq!(agent.status(), AgentStatus::Redeeming);
                    may_redeem = true;
                    redeem_sent = false;
                } else if ok {
                    assert_eq!(
                        agent.status(),
                        AgentStatus::Stopped(crate::event::StopReason::ConfirmationRefused)
                    );
                }
            }
            AgentOp::EnterCode(text) => {
                if let Some(code) = LinkCode::parse(&text) {
                    if agent.enter_code(now, code).is_ok() {
                        // A new redemption: nothing of it is sent yet.
                        redeem_sent = false;
                        may_redeem = true;
                    }
                }
            }
            AgentOp::RedeemReply(token) => {
                let reply = match token {
                    Some(bytes) => Ok(RedeemReply::new(AuthToken::from_bytes(bytes), 0)),
                    None => Err(Refusal::UnknownCode.code()),
                };
                let accepted = agent.handle_redeem_reply(now, reply).is_ok();
                assert_eq!(
                    accepted,
                    redeem_sent && matches!(before, AgentStatus::Redeeming)
                );
                if accepted {
                    redeem_sent = false;
                }
            }
            AgentOp::RedeemFailed => {
                // An attempt without an answer: the agent stays redeeming (it retransmits, and
                // a late answer still counts) unless its redeem deadline has passed.
                let ok = agent.handle_redeem_failed(now).is_ok();
                assert_eq!(ok, redeem_sent && matches!(before, AgentStatus::Redeeming));
            }
            AgentOp::AnnounceRefused(i) if i < 128 => {
                agent.handle_announce_refused(now, refusal_from(i));
            }
            AgentOp::AnnounceRefused(i) => {
                let error = match i % 4 {
                    0 => TransportError::Unreachable("timed out".to_owned()),
                    1 => TransportError::Refused {
                        status: 504,
                        code: WireCode::NoCode,
                    },
                    2 => TransportError::Malformed,
                    _ => TransportError::Refused {
                        status: 400,
                        code: WireCode::Malformed,
                    },
                };
                agent.handle_announce_failed(now, &error);
                // No answer from the server, or an older server's refusal, never ends
                // discovery: only the window's end may have.
                if let AgentStatus::Discovering { deadline } = before {
                    if now < deadline {
                        assert!(
                            agent.is_discovering(),
                            "a failed announcement ({error}) ended discovery"
                        );
                    }
                }
            }
            AgentOp::Cancel => agent.cancel(),
            AgentOp::Restart => {
                if agent.restart_discovery(now, &mut rng).is_ok() {
                    secret = SecretReplyCheck::default();
                    redeem_sent = false;
                    may_redeem = false;
                }
            }
        }
        let after = agent.status();
        // Linked is final; a redeeming agent has no secret to serve; only a redeem reply links.
        if before == AgentStatus::Linked {
            assert_eq!(after, AgentStatus::Linked);
        }
        if after == AgentStatus::Linked {
            assert!(agent.auth_token().is_some());
        }
        while agent.poll_event().is_some() {}
    }
}

/// What the harness has seen of the agent's secret (it changes only on restart).
#[derive(Default)]
struct SecretReplyCheck {
    last: Option<LocalSecret>,
}

impl SecretReplyCheck {
    fn seen(&mut self, secret: &LocalSecret) {
        if let Some(last) = &self.last {
            assert!(last.ct_eq(secret), "the secret changed within one window");
        }
        self.last = Some(secret.clone());
    }
}
