//! Fuzzing harnesses (feature `fuzz`): each takes the fuzzer's bytes, builds a sequence of
//! operations from them with [`arbitrary`], drives a state machine (or the whole simulator), and
//! asserts the protocol's invariants after every step. A failed assertion is a finding.
//!
//! The targets in `fuzz/fuzz_targets/` are one-line calls to these functions, so the harnesses are
//! compiled and type-checked by ordinary builds (`cargo test --all-features`), as str0m does.

use std::collections::HashMap;
#[cfg(feature = "obico-wire")]
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use chrono::{DateTime, TimeDelta, Utc};
use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::addr::{ClientAddrError, ClientAddrResolver, ForwardedHeaders};
use crate::agent::{Agent, AgentConfig, AgentStatus, AgentTransmit, SecretRequest};
use crate::code::LinkCode;
use crate::confirm::{ConfirmNonce, Confirmation, Decision, DisplayName};
use crate::error::{Refusal, WireCode};
use crate::event::ServerEvent;
use crate::id::{AccountId, InstanceId};
use crate::linker::{FetchFailure, Linker, LinkerConfig, LinkerTransmit};
use crate::secret::{AuthToken, LocalSecret, PresenceKey};
use crate::server::{at_once, AtOnce, Server, ServerConfig, User};
use crate::wire::{
    self, AgentMessage, Announce, AnnounceReply, DeviceInfo, DiscoverReply, DiscoveredAgent,
    LinkRequest, LinkState, LinkStatusReply, RedeemReply, RedeemRequest, SecretReply,
};

/// Most operations read from one input.
const MAX_OPS: usize = 256;

fn ops<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Vec<T> {
    let mut u = Unstructured::new(data);
    let mut out = Vec::new();
    while out.len() < MAX_OPS && !u.is_empty() {
        match T::arbitrary(&mut u) {
            Ok(op) => out.push(op),
            Err(_) => break,
        }
    }
    out
}

/// A caller address, by kind, so the fuzzer reaches every class the policy distinguishes.
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
fn reference_is_local(ip: IpAddr) -> bool {
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
fn reference_host_ok(host: &str, allowed: &str) -> bool {
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
    /// The server refused an announcement.
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
            AgentOp::AnnounceRefused(i) => agent.handle_announce_refused(now, refusal_from(i)),
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

/// One input to the server.
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

fn net_ip(i: u8) -> IpAddr {
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
                                .map(|p| p.candidates.clone())
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
fn network_of(server: &Server, ip: IpAddr) -> crate::addr::PublicNetwork {
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

/// One input to the linker.
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

/// An attacker's move in the whole-protocol simulation.
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
                let from = if same_network {
                    sim.lans[home].public_ip
                } else {
                    sim.lans[away].public_ip
                };
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
                let from = if same_network {
                    sim.lans[home].public_ip
                } else {
                    sim.lans[away].public_ip
                };
                let announce = Announce::new(
                    victim_id,
                    Ipv4Addr::new(192, 168, 1, 66).into(),
                    8080,
                    DeviceInfo::default(),
                    LocalSecret::from_bytes([0x66; 32]).commitment(&victim_id),
                    PresenceKey::from_bytes([0x66; 32]),
                );
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
                let own_id = key.instance_id();
                let announce = Announce::new(
                    own_id,
                    Ipv4Addr::new(192, 168, 1, 66).into(),
                    8080,
                    DeviceInfo::default(),
                    LocalSecret::from_bytes([0x66; 32]).commitment(&own_id),
                    key,
                );
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
                let from = if same_network {
                    sim.lans[home].public_ip
                } else {
                    sim.lans[away].public_ip
                };
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

/// Decodes `data` as a `T` (at most `limit` bytes); what decodes must re-encode, decode again,
/// and re-encode to the same bytes.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    data: &[u8],
    limit: usize,
) -> Option<T> {
    let value = wire::decode::<T>(data, limit).ok()?;
    let encoded = wire::encode(&value);
    let again: T = match wire::decode(&encoded, limit) {
        Ok(again) => again,
        Err(err) => panic!("re-encoded value does not decode: {err}"),
    };
    assert_eq!(
        encoded.as_slice(),
        wire::encode(&again).as_slice(),
        "round trip changed the value"
    );
    Some(value)
}

/// Decodes arbitrary bytes as every wire type; whatever decodes must re-encode and decode to the
/// same encoding.
pub fn wire_decode(data: &[u8]) {
    round_trip::<wire::Announce>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::AnnounceReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::RedeemRequest>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::RedeemReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::DiscoverReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::SecretReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::LinkRequest>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::LinkStatusReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::CodeReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::ErrorBody>(data, wire::MAX_MESSAGE_BYTES);
    if let Ok(announce) = wire::decode_announce(data) {
        assert!(wire::encode(&announce).len() <= wire::MAX_ANNOUNCE_BYTES);
    }
}

/// The formats outside the core's wire messages, from arbitrary bytes:
///
/// - the server's stored records ([`NetworkRecord`](crate::server::NetworkRecord),
///   [`CodeRecord`](crate::server::CodeRecord), [`CounterRecord`](crate::server::CounterRecord)),
///   as a compromised store could write them (a budget never admits past its limit): what
///   decodes round-trips, and every read of it (prune, discover, expiry) is panic-free at any
///   time;
/// - (feature `shared-store`) [`Records`](crate::server::Records) over a store handing back
///   these bytes, raw or sealed under the right key: every operation answers without panic;
/// - (feature `ticket`) network tickets: a ticket signed here and then changed by the fuzzer
///   verifies only if the change left it the same (hex case aside), and then says the same;
///   arbitrary text never verifies; the [`TicketReply`](crate::ticket::TicketReply) round-trips;
/// - (feature `mqtt`) every MQTT payload type round-trips;
/// - (feature `obico`) an Obico `unlinked` poll body parses without panic, into fields within
///   the limits.
pub fn adapter_decode(data: &[u8]) {
    use crate::server::{CodeRecord, NetworkRecord};

    let config = ServerConfig::default();
    if let Some(mut record) = round_trip::<NetworkRecord>(data, usize::MAX) {
        for now in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            DateTime::<Utc>::MAX_UTC,
        ] {
            let shown = record.discover(now, &config);
            assert!(shown.len() <= record.present(now));
            let _ = record.expires_at(&config);
        }
        record.prune(
            DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            &config,
        );
        record.prune(DateTime::<Utc>::MAX_UTC, &config);
        assert_eq!(record.present(DateTime::<Utc>::MAX_UTC), 0);
    }
    if let Some(code) = round_trip::<CodeRecord>(data, usize::MAX) {
        let _ = code.is_live(DateTime::<Utc>::MAX_UTC);
    }
    if let Some(counter) = round_trip::<crate::server::CounterRecord>(data, usize::MAX) {
        // A budget read from a compromised store never admits past its limit.
        for now_ms in [i64::MIN, 0, 1_800_000_000_000, i64::MAX] {
            let mut record = counter.clone();
            let before = record.live(now_ms);
            let admitted = record.admit(now_ms, now_ms.saturating_add(1), 3, Some(1));
            if admitted != crate::server::budget::Admission::Refused {
                assert!(before < 3 && !counter.is_locked(now_ms));
            }
            record.refund(now_ms, now_ms.saturating_add(1), 3);
            let _ = record.expires_ms();
        }
    }

    #[cfg(feature = "shared-store")]
    crate::server::store::fuzz_records(data);
    #[cfg(feature = "ticket")]
    ticket_tamper(data);
    #[cfg(feature = "ticket")]
    round_trip::<crate::ticket::TicketReply>(data, usize::MAX);
    #[cfg(feature = "mqtt")]
    {
        round_trip::<crate::mqtt::UpMessage>(data, usize::MAX);
        round_trip::<crate::mqtt::DownMessage>(data, usize::MAX);
    }
    #[cfg(feature = "obico-wire")]
    if let Some(poll) = crate::obico::endpoint::poll_from_bytes(data) {
        let info = &poll.info;
        for (field, limit) in [
            (info.hostname(), wire::limits::HOSTNAME),
            (info.model(), wire::limits::MODEL),
            (info.agent(), wire::limits::AGENT),
            (info.agent_version(), wire::limits::AGENT_VERSION),
        ] {
            assert!(field.len() <= limit && !field.chars().any(wire::is_hidden));
        }
        assert!(poll.endpoint.is_none_or(|(_, port)| port != 0));
        assert!(poll
            .one_time_passcode
            .as_ref()
            .is_none_or(|p| p.chars().count() <= 64));
    }
}

/// A ticket signed for a fuzzer-chosen network, instance and time, then edited by the fuzzer.
#[cfg(feature = "ticket")]
fn ticket_tamper(data: &[u8]) {
    use crate::addr::PublicNetwork;
    use crate::ticket::{TicketError, TicketKey};

    #[derive(Debug, Arbitrary)]
    struct Edit {
        v6: bool,
        addr: [u8; 16],
        prefix: u8,
        id: [u8; 16],
        ttl_s: u32,
        /// (position, new byte) pairs applied to the token's text.
        changes: Vec<(u16, u8)>,
        /// Arbitrary text, verified as is.
        text: String,
    }
    let Ok(edit) = Edit::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let key = TicketKey::from_bytes([0x42; 32]);
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let network = if edit.v6 {
        PublicNetwork::from_ip(IpAddr::from(edit.addr), edit.prefix.clamp(1, 128))
    } else {
        let [a, b, c, d, ..] = edit.addr;
        PublicNetwork::from_ip(IpAddr::from([a, b, c, d]), 64)
    };
    let id = InstanceId::from_bytes(edit.id);
    let issued = key.issue(now, TimeDelta::seconds(i64::from(edit.ttl_s)), network, id);
    assert_eq!(key.verify(now, &issued.token, &id), Ok(issued.ticket));
    let mut token = issued.token.clone().into_bytes();
    for (at, byte) in edit.changes.iter().take(8) {
        let len = token.len();
        if let Some(slot) = token.get_mut(usize::from(*at) % len) {
            *slot = *byte;
        }
    }
    let Ok(token) = String::from_utf8(token) else {
        return;
    };
    let got = key.verify(now, &token, &id);
    if token.eq_ignore_ascii_case(&issued.token) {
        assert_eq!(got, Ok(issued.ticket), "an unchanged ticket verifies");
    } else {
        assert!(got.is_err(), "a changed ticket verified: {token}");
    }
    // Text the fuzzer wrote never carries this key's signature.
    assert!(
        matches!(
            key.verify(now, &edit.text, &id),
            Err(TicketError::Malformed | TicketError::BadSignature)
        ) || edit.text.eq_ignore_ascii_case(&issued.token)
    );
}

/// One request of the Obico profile.
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
#[cfg(feature = "obico-wire")]
pub fn obico_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let max_visible = u.int_in_range(1..=2).unwrap_or(1);
    obico_run(max_visible, ops::<ObicoOp>(u.take_rest()));
}

/// What an [`obico_ops`] run reached (so a test can tell the checks ran).
#[cfg(feature = "obico-wire")]
#[derive(Debug, Default, Clone, Copy)]
struct ObicoReached {
    delivered: usize,
    redeemed: usize,
    claimed: usize,
}

#[cfg(feature = "obico-wire")]
fn obico_run(max_visible: usize, ops: Vec<ObicoOp>) -> ObicoReached {
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

/// One resolver input.
#[derive(Debug, Clone, Arbitrary)]
pub struct ClientAddrInput {
    /// Trusted proxy networks, as (address, prefix).
    pub trusted: Vec<([u8; 4], u8)>,
    /// The socket peer.
    pub peer: PeerKind,
    /// `Forwarded` lines.
    pub forwarded: Vec<String>,
    /// `X-Forwarded-For` lines.
    pub xff: Vec<String>,
    /// A configured NAT64/SIIT prefix (its address; its length indexes
    /// [`NAT64_PREFIX_LENGTHS`](crate::addr::NAT64_PREFIX_LENGTHS)), and an IPv4 address to embed
    /// in it.
    pub nat64: ([u8; 16], u8, [u8; 4]),
}

/// The trusted-proxy resolver over arbitrary peers and headers, against a plain reference
/// implementation of the same rule.
pub fn client_addr(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(input) = ClientAddrInput::arbitrary(&mut u) else {
        return;
    };
    let trusted: Vec<IpNet> = input
        .trusted
        .iter()
        .take(4)
        .filter_map(|(addr, prefix)| {
            ipnet::Ipv4Net::new(Ipv4Addr::from(*addr), prefix % 33)
                .ok()
                .map(IpNet::V4)
        })
        .collect();
    let resolver = ClientAddrResolver::new(trusted.clone());
    let forwarded: Vec<&str> = input.forwarded.iter().map(String::as_str).collect();
    let xff: Vec<&str> = input.xff.iter().map(String::as_str).collect();
    let headers = ForwardedHeaders {
        forwarded: &forwarded,
        x_forwarded_for: &xff,
    };
    let got = resolver.resolve(input.peer.ip(), headers);
    let want = reference_resolve(&trusted, input.peer.ip(), &forwarded, &xff);
    assert_eq!(
        got, want,
        "resolver disagrees with the reference for {input:?}"
    );
    // Whatever it returns is never a trusted proxy.
    if let Ok(ip) = got {
        assert!(!resolver.is_trusted(ip), "resolved to a trusted proxy");
    }
    // The public network of the resolved client (and of the peer, and of an IPv4 address
    // embedded in the configured prefix), against a plain reference: NAT64 addresses stand for
    // the IPv4 address they embed, other IPv6 for its /64.
    let (prefix_bytes, length, v4) = input.nat64;
    let lengths = crate::addr::NAT64_PREFIX_LENGTHS;
    let length = lengths[usize::from(length) % lengths.len()];
    let prefix = ipnet::Ipv6Net::new(Ipv6Addr::from(prefix_bytes), length)
        .unwrap_or_default()
        .trunc();
    let config = ServerConfig::default().nat64_prefixes(vec![prefix]);
    // A refused prefix (one that overlaps the IPv4-mapped range) is not applied.
    let accepted = config.validate().is_ok();
    let prefixes: &[ipnet::Ipv6Net] = if accepted {
        &[crate::addr::NAT64_WELL_KNOWN_PREFIX, prefix]
    } else {
        &[crate::addr::NAT64_WELL_KNOWN_PREFIX]
    };
    let embedded = reference_embed(prefix, Ipv4Addr::from(v4));
    let probes = [got.ok(), Some(input.peer.ip()), Some(IpAddr::V6(embedded))];
    for ip in probes.into_iter().flatten() {
        assert_eq!(
            config.network_of(ip),
            reference_network(ip, prefixes),
            "network of {ip} under {prefix}"
        );
    }
    // Unless an earlier form (the well-known prefix, a fixed embedding form) claims it, the
    // embedded address maps back.
    if accepted && crate::addr::ipv4_embedded(embedded).is_none() {
        assert_eq!(
            config.network_of(IpAddr::V6(embedded)),
            crate::addr::PublicNetwork::V4(Ipv4Addr::from(v4))
        );
    }
}

/// `v4` embedded in `prefix` as RFC 6052 §2.2 lays it out, written with 128-bit arithmetic: the
/// address bits right after the prefix, bits 64–71 (the u octet) left zero, the suffix zero.
fn reference_embed(prefix: ipnet::Ipv6Net, v4: Ipv4Addr) -> Ipv6Addr {
    let length = u32::from(prefix.prefix_len());
    let base = u128::from(prefix.network());
    let v4 = u128::from(u32::from(v4));
    let bits = if length == 96 {
        base | v4
    } else {
        // Place the 32 bits in a 120-bit word without the u octet, then open the octet at 64.
        let word = v4 << (120 - length - 32);
        let high = word >> 56;
        let low = word & ((1u128 << 56) - 1);
        base | (high << 64) | low
    };
    Ipv6Addr::from(bits)
}

/// The public network of `ip`, written plainly: IPv4 (or mapped IPv4) as itself; an address in
/// one of `nat64` (checked in order, RFC 6052 lengths only) as the IPv4 address it embeds, read
/// with 128-bit arithmetic; other IPv6 by its /64.
fn reference_network(ip: IpAddr, nat64: &[ipnet::Ipv6Net]) -> crate::addr::PublicNetwork {
    let v6 = match ip {
        IpAddr::V4(v4) => return crate::addr::PublicNetwork::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => return crate::addr::PublicNetwork::V4(v4),
            None => v6,
        },
    };
    let bits = u128::from(v6);
    // The fixed IPv4-embedding forms, in 128-bit arithmetic: SIIT-translated ::ffff:0:0:0/96,
    // compatible ::/96 (but :: and ::1), Teredo 2001::/32 (the client inverted in the low bits).
    let low = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if bits >> 32 == 0xffff_0000 || (bits >> 32 == 0 && bits > 1) {
        return crate::addr::PublicNetwork::V4(low);
    }
    if bits >> 96 == 0x2001_0000 {
        return crate::addr::PublicNetwork::V4(Ipv4Addr::from(!u32::from(low)));
    }
    for prefix in nat64 {
        let length = u32::from(prefix.prefix_len());
        if ![32, 40, 48, 56, 64, 96].contains(&length) {
            continue;
        }
        let mask = u128::MAX << (128 - length);
        if bits & mask != u128::from(prefix.network()) & mask {
            continue;
        }
        let v4 = if length == 96 {
            bits & 0xffff_ffff
        } else {
            // Drop the u octet (bits 64–71 from the top): a 120-bit word.
            let word = ((bits >> 64) << 56) | (bits & ((1u128 << 56) - 1));
            (word >> (120 - length - 32)) & 0xffff_ffff
        };
        return crate::addr::PublicNetwork::V4(Ipv4Addr::from(u32::try_from(v4).unwrap_or(0)));
    }
    let net = u128::MAX << 64;
    crate::addr::PublicNetwork::V6(
        ipnet::Ipv6Net::new(Ipv6Addr::from(bits & net), 64).unwrap_or_default(),
    )
}

/// The rule, written out plainly: the peer unless trusted; then the one forwarding header present
/// (both: an error) right to left, skipping trusted hops; anything unusable is an error.
fn reference_resolve(
    trusted: &[IpNet],
    peer: IpAddr,
    forwarded: &[&str],
    xff: &[&str],
) -> Result<IpAddr, ClientAddrError> {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&canon(ip)));
    let peer = canon(peer);
    if !is_trusted(peer) {
        return Ok(peer);
    }
    let use_forwarded = forwarded.iter().any(|l| !l.trim().is_empty());
    let use_xff = xff.iter().any(|l| !l.trim().is_empty());
    if use_forwarded && use_xff {
        return Err(ClientAddrError::AmbiguousHeaders);
    }
    if !use_forwarded && !use_xff {
        return Err(ClientAddrError::MissingForwarded);
    }
    let lines = if use_forwarded { forwarded } else { xff };
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    for line in lines {
        for element in split_outside_quotes(line, ',') {
            if hops.len() == crate::addr::MAX_FORWARDED_HOPS {
                return Err(ClientAddrError::TooManyHops);
            }
            let node = if use_forwarded {
                forwarded_for(element.trim())
            } else {
                Some(element.trim().to_owned())
            };
            hops.push(node.and_then(|n| parse_node(&n)).map(canon));
        }
    }
    for hop in hops.into_iter().rev() {
        let ip = hop.ok_or(ClientAddrError::UnparsableHop)?;
        if !is_trusted(ip) {
            return Ok(ip);
        }
    }
    Err(ClientAddrError::OnlyTrustedHops)
}

fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

fn forwarded_for(element: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for pair in split_outside_quotes(element, ';') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("for") {
            if found.is_some() {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            found = Some(value.to_owned());
        }
    }
    found
}

fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = text.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    text.strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
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
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/adapter_decode");
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
}
