//! Security invariants under random and adversarial operation sequences, on the deterministic
//! simulator (`lanlink::sim`).
//!
//! Each property drives one victim LAN (an agent, later perhaps a second device and the user's
//! browser) and an attacker who talks to the agent's endpoint and to the server directly: from LAN,
//! CGNAT, public and IPv4-mapped addresses, with spoofed forwarding headers, rebinding `Host`s,
//! foreign `Origin`s, wrong and malformed instance ids, guessed, stolen and replayed secrets,
//! impersonating and fake announcements, guessed and replayed codes. After **every** operation it
//! checks the parties' replies and events against the test's own model and hand-written step-5
//! reference (it knows every real secret by fetching it as each window opens):
//!
//! 1. the secret is revealed only under protocol step 5's conditions;
//! 2. no link completes without the agent's real secret or a code the user typed into it;
//! 3. discovery never shows more than `max_visible` agents, and none when more are present;
//! 4. every secret and code is single-use, and an instance is linked at most once;
//! 5. an agent that stopped, is redeeming or is linked refuses every secret request.
//!
//! No operation may panic. The smallest sequences that broke a property are kept at the end as
//! plain regression tests.
#![cfg(feature = "sim")]

mod support;
use support::steps::Steps;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use lanlink::agent::{AgentConfig, AgentStatus, SecretRequest};
use lanlink::event::{AgentEvent, LinkerEvent, ServerEvent};
use lanlink::linker::LinkerConfig;
use lanlink::secret::PresenceKey;
use lanlink::server::ServerConfig;
use lanlink::sim::{LanId, Sim};
use lanlink::wire::{self, AgentMessage, Announce, LinkRequest, RedeemRequest};
use lanlink::{
    AccountId, Commitment, DeviceInfo, ForwardedHeaders, InstanceId, LinkCode, LocalSecret,
    PublicNetwork,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

// ───────────────────────────── the world ─────────────────────────────

/// The victim LAN's public address (its NAT).
const VICTIM_PUBLIC: &str = "203.0.113.7";
/// The attacker's own public address, on another network.
const ELSEWHERE: &str = "198.51.100.9";
/// The real agents' LAN addresses (the victim's device, then a second device).
const AGENT_IPS: [&str; 2] = ["192.168.1.50", "192.168.1.51"];
const AGENT_PORT: u16 = 8080;
/// The user's browser on the LAN.
const HONEST_LINKER_IP: &str = "192.168.1.20";
/// A foreign web page open in a browser on the LAN.
const ROGUE_PAGE_IP: &str = "192.168.1.66";
/// A neighbour behind the same carrier NAT that can reach the agent.
const CGNAT_NEIGHBOUR_IP: &str = "100.64.0.66";
/// Where the test itself fetches each fresh secret (to know the real secrets).
const ORACLE_PEER: &str = "10.99.0.1";
/// The trusted proxy in front of the server (in some cases).
const SERVER_PROXY: &str = "10.1.0.1";
/// The local reverse proxy in front of the agent's endpoint (in some cases).
const AGENT_PROXY: &str = "127.0.0.1";
const ORIGIN: &str = "https://cloud.example";
const HOST_NAME: &str = "printer.local";
/// The default server configuration's presence lifetime.
const PRESENCE_TTL: TimeDelta = TimeDelta::seconds(6);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn network(text: &str) -> PublicNetwork {
    PublicNetwork::from_ip(ip(text), 64)
}

fn alice() -> AccountId {
    AccountId::new("alice").unwrap()
}

fn mallory() -> AccountId {
    AccountId::new("mallory").unwrap()
}

/// 32 bytes derived from a salt (the attacker's randomness, reproducible from the op).
fn bytes32(salt: u64, domain: u64) -> [u8; 32] {
    let mut out = [0; 32];
    StdRng::seed_from_u64(salt ^ domain.rotate_left(32)).fill_bytes(&mut out);
    out
}

/// The attacker's own presence key for a device it makes up (the id derives from it).
fn fake_key(salt: u64) -> PresenceKey {
    PresenceKey::from_bytes(bytes32(salt, 1))
}

// ───────────────────────────── independent references ─────────────────────────────

/// `::ffff:a.b.c.d` as `a.b.c.d`; anything else unchanged.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if s[..5] == [0; 5] && s[5] == 0xffff {
                let [_, _, _, _, _, _, _, _, _, _, _, _, a, b, c, d] = v6.octets();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            } else {
                ip
            }
        }
        IpAddr::V4(_) => ip,
    }
}

/// Step 5's "local": RFC 1918, loopback, link-local, ULA. Not CGNAT, not public.
fn is_local_reference(ip: IpAddr) -> bool {
    match unmap(ip) {
        IpAddr::V4(v4) => {
            let [a, b, _, _] = v4.octets();
            a == 10
                || (a == 172 && (16..=31).contains(&b))
                || (a == 192 && b == 168)
                || a == 127
                || (a == 169 && b == 254)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6 == Ipv6Addr::LOCALHOST || first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80
        }
    }
}

/// The client the agent must see: the peer, unless the peer is the agent's trusted local proxy;
/// then the rightmost `X-Forwarded-For` hop that is not the proxy. `None`: unresolvable.
fn client_reference(peer: &str, xff: Option<&str>, agent_proxy: bool) -> Option<IpAddr> {
    let peer = unmap(ip(peer));
    if !agent_proxy || peer != ip(AGENT_PROXY) {
        return Some(peer);
    }
    let xff = xff.filter(|x| !x.trim().is_empty())?;
    for hop in xff.split(',').rev() {
        let hop = unmap(hop.trim().parse().ok()?);
        if hop != ip(AGENT_PROXY) {
            return Some(hop);
        }
    }
    None
}

// Attack inputs, each with the verdict step 5 gives it (written by hand, not computed by the crate).

const PEERS: &[&str] = &[
    "192.168.1.77",
    "10.20.30.40",
    "172.16.5.5",
    "172.31.255.1",
    "172.32.0.1",
    "127.0.0.1",
    "::ffff:127.0.0.1",
    "169.254.10.10",
    "fd12:3456::5",
    "fe80::77",
    "::1",
    "fec0::1",
    VICTIM_PUBLIC,
    "100.64.1.2",
    "100.127.255.254",
    ELSEWHERE,
    "::ffff:192.168.1.77",
    "::ffff:203.0.113.7",
    "::ffff:100.64.0.1",
    "::c0a8:14d",
    "2001:db8::7",
    "0.0.0.0",
    "255.255.255.255",
];

const XFFS: &[Option<&str>] = &[
    None,
    Some(""),
    Some("192.168.1.21"),
    Some(VICTIM_PUBLIC),
    Some("127.0.0.1"),
    Some("garbage"),
    Some("203.0.113.7, 192.168.1.21"),
    Some("192.168.1.21, 203.0.113.7"),
    Some("100.64.0.9"),
    Some("::ffff:10.0.0.8"),
];

const HOSTS: &[(Option<&str>, bool)] = &[
    (Some("192.168.1.50:8080"), true),
    (Some("192.168.1.50"), true),
    (Some("10.0.0.1"), true),
    (Some("[fe80::1]:8080"), true),
    (Some("[::1]"), true),
    (Some("printer.local"), true),
    (Some("PRINTER.local:8080"), true),
    (Some("printer.local."), true),
    (Some("evil.example"), false),
    (Some("printer.local.evil.example"), false),
    (Some("192.168.1.50.nip.io"), false),
    (Some("fe80::1"), false),
    (Some("[fe80::1"), false),
    (Some("192.168.1.50:99999"), false),
    (Some("printer.local:"), false),
    (Some("1.2.3.4:80:80"), false),
    (Some(""), false),
    (None, false),
];

const ORIGINS: &[(Option<&str>, bool)] = &[
    (None, true),
    (Some(ORIGIN), true),
    (Some("HTTPS://Cloud.Example"), true),
    (Some("https://evil.example"), false),
    (Some("null"), false),
    (Some("https://cloud.example.evil.example"), false),
    (Some("http://cloud.example"), false),
    (Some("https://cloud.example:8443"), false),
    (Some(""), false),
];

// ───────────────────────────── operations ─────────────────────────────

/// Which public network the attacker speaks from.
#[derive(Debug, Clone, Copy)]
enum Net {
    /// The victim's (a neighbour behind the same public address, off the LAN).
    Victim,
    /// Its own.
    Elsewhere,
}

/// Which instance id an attacker names.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// A real agent's current id.
    Current(usize),
    /// A real agent's earlier id (after a restart), else its current one.
    Previous(usize),
    /// One of the attacker's fake agents, else a fresh id.
    Fake(usize),
    /// A fresh random id.
    Fresh(u64),
}

/// The secret an attacker presents in a link request.
#[derive(Debug, Clone, Copy)]
enum SecretChoice {
    /// Random bytes.
    Random(u64),
    /// The real secret, if the attacker fetched it from the agent (a permitted path).
    Stolen,
    /// The real secret, if the server already accepted it (leaked after use).
    Leaked,
    /// The attacker's own secret for that id (the one it committed to in its own announcement).
    Own,
}

/// The commitment in an impersonating announcement.
#[derive(Debug, Clone, Copy)]
enum CommitChoice {
    /// Random bytes (a wrong commitment).
    Random(u64),
    /// A commitment to a secret the attacker chose.
    Own,
    /// The real commitment, if the attacker knows the real secret; else random.
    Real,
}

/// The address in an impersonating announcement.
#[derive(Debug, Clone, Copy)]
enum AddrChoice {
    Same,
    OtherIp,
    OtherPort,
    Public,
}

/// The code an attacker redeems.
#[derive(Debug, Clone, Copy)]
enum CodeChoice {
    /// A guessed 6-digit manual code.
    Manual(u32),
    /// A guessed 128-bit auto code.
    Auto(u128),
    /// A code that was already redeemed.
    Replay(usize),
    /// An auto code the server delivered to one of the attacker's own announcements.
    Captured(usize),
}

/// The `instance_id` an attacker asks the agent's endpoint for.
#[derive(Debug, Clone, Copy)]
enum IdText {
    Right,
    Simple,
    Upper,
    Braced,
    Urn,
    Padded,
    Previous,
    OtherAgent,
    Random(u64),
    Garbage(&'static str),
}

#[derive(Debug, Clone)]
enum Op {
    /// Virtual time passes.
    Advance(Duration),
    /// The user opens the linking page on the LAN (origin none or the cloud's).
    HonestLinker { origin: Option<&'static str> },
    /// A browser on the LAN runs a foreign page, or a CGNAT neighbour runs a linker.
    RogueLinker { cgnat: bool },
    /// A second real device starts on the victim LAN.
    SecondDevice,
    /// The attacker calls the agent's secret endpoint directly, `lag` after the present: before
    /// any party is driven again (the request races the agent's timers).
    SecretRequest {
        lag: Duration,
        agent: usize,
        peer: &'static str,
        xff: Option<&'static str>,
        host: (Option<&'static str>, bool),
        origin: (Option<&'static str>, bool),
        id: IdText,
    },
    /// The attacker asks the server to link an instance to its account.
    Link {
        from: Net,
        target: Target,
        secret: SecretChoice,
    },
    /// The attacker announces someone's instance id.
    Impersonate {
        from: Net,
        target: Target,
        commitment: CommitChoice,
        addr: AddrChoice,
    },
    /// The attacker announces (or refreshes) a fake agent of its own.
    FakeAgent {
        from: Net,
        refresh: Option<usize>,
        salt: u64,
    },
    /// The attacker links a device of its own: announces it, links it to its account, announces
    /// again to receive the auto code (which a later `Redeem` may use, and replay).
    OwnDevice { from: Net, salt: u64 },
    /// Someone asks the server for discoverable agents.
    Discover { from: Net },
    /// The attacker redeems a code.
    Redeem {
        from: Net,
        target: Target,
        code: CodeChoice,
    },
    /// The user mints a manual code for her account.
    MintCode,
    /// The user types a code (a minted one, or a typo) into an agent.
    EnterCode {
        agent: usize,
        code: usize,
        typo: Option<u32>,
    },
    /// The user restarts an agent's discovery.
    Restart { agent: usize },
    /// The user cancels an agent's discovery.
    Cancel { agent: usize },
}

/// The shape of one case.
#[derive(Debug, Clone)]
struct Setup {
    seed: u64,
    max_visible: usize,
    window: Duration,
    agent_proxy: bool,
    server_proxy: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<u64>(),
        prop_oneof![2 => Just(1usize), 1 => Just(2usize)],
        prop_oneof![3 => Just(600u64), 1 => 10u64..=600],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(seed, max_visible, window, agent_proxy, server_proxy)| Setup {
                seed,
                max_visible,
                window: Duration::from_secs(window),
                agent_proxy,
                server_proxy,
            },
        )
}

/// Relative weights of the operations, so that each property leans on the operations that can
/// break it.
#[derive(Debug, Clone, Copy)]
struct Mix {
    advance: u32,
    linkers: u32,
    secret_requests: u32,
    links: u32,
    announces: u32,
    discovers: u32,
    redeems: u32,
    codes: u32,
    lifecycle: u32,
}

const BALANCED: Mix = Mix {
    advance: 12,
    linkers: 4,
    secret_requests: 6,
    links: 6,
    announces: 6,
    discovers: 3,
    redeems: 6,
    codes: 4,
    lifecycle: 2,
};

fn net() -> impl Strategy<Value = Net> {
    prop_oneof![Just(Net::Victim), Just(Net::Elsewhere)]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => (0..2usize).prop_map(Target::Current),
        1 => (0..2usize).prop_map(Target::Previous),
        2 => (0..4usize).prop_map(Target::Fake),
        1 => any::<u64>().prop_map(Target::Fresh),
    ]
}

fn advance() -> impl Strategy<Value = Duration> {
    prop_oneof![
        14 => (0u64..5_000).prop_map(Duration::from_millis),
        4 => (5_000u64..60_000).prop_map(Duration::from_millis),
        2 => (60u64..700).prop_map(Duration::from_secs),
    ]
}

fn id_text() -> impl Strategy<Value = IdText> {
    prop_oneof![
        8 => Just(IdText::Right),
        1 => Just(IdText::Simple),
        1 => Just(IdText::Upper),
        1 => Just(IdText::Braced),
        1 => Just(IdText::Urn),
        1 => Just(IdText::Padded),
        1 => Just(IdText::Previous),
        1 => Just(IdText::OtherAgent),
        1 => any::<u64>().prop_map(IdText::Random),
        1 => prop::sample::select(vec![
            "",
            "not-a-uuid",
            "00000000-0000-0000-0000-000000000000",
            "c232ab00-9414-11ec-b3c8-9f6bdeced846",
        ])
        .prop_map(IdText::Garbage),
    ]
}

fn secret_request() -> impl Strategy<Value = Op> {
    (
        (
            prop_oneof![3 => Just(Duration::ZERO), 1 => advance()],
            0..2usize,
        ),
        // Half the time from the LAN, so that the later checks see a served secret.
        prop_oneof![
            1 => Just("192.168.1.77"),
            1 => prop::sample::select(PEERS),
        ],
        prop::sample::select(XFFS),
        prop_oneof![1 => Just(HOSTS[0]), 1 => prop::sample::select(HOSTS)],
        prop_oneof![1 => Just(ORIGINS[0]), 1 => prop::sample::select(ORIGINS)],
        id_text(),
    )
        .prop_map(
            |((lag, agent), peer, xff, host, origin, id)| Op::SecretRequest {
                lag,
                agent,
                peer,
                xff,
                host,
                origin,
                id,
            },
        )
}

fn link() -> impl Strategy<Value = Op> {
    let secret = prop_oneof![
        2 => any::<u64>().prop_map(SecretChoice::Random),
        2 => Just(SecretChoice::Stolen),
        2 => Just(SecretChoice::Leaked),
        2 => Just(SecretChoice::Own),
    ];
    (net(), target(), secret).prop_map(|(from, target, secret)| Op::Link {
        from,
        target,
        secret,
    })
}

fn announces() -> impl Strategy<Value = Op> {
    let commitment = prop_oneof![
        any::<u64>().prop_map(CommitChoice::Random),
        Just(CommitChoice::Own),
        Just(CommitChoice::Real),
    ];
    let addr = prop_oneof![
        3 => Just(AddrChoice::Same),
        1 => Just(AddrChoice::OtherIp),
        1 => Just(AddrChoice::OtherPort),
        1 => Just(AddrChoice::Public),
    ];
    prop_oneof![
        (net(), any::<u64>()).prop_map(|(from, salt)| Op::OwnDevice { from, salt }),
        (net(), target(), commitment, addr).prop_map(|(from, target, commitment, addr)| {
            Op::Impersonate {
                from,
                target,
                commitment,
                addr,
            }
        }),
        (
            prop_oneof![3 => Just(Net::Victim), 1 => Just(Net::Elsewhere)],
            proptest::option::of(0..4usize),
            any::<u64>()
        )
            .prop_map(|(from, refresh, salt)| Op::FakeAgent {
                from,
                refresh,
                salt
            }),
    ]
}

fn redeem() -> impl Strategy<Value = Op> {
    let code = prop_oneof![
        any::<u32>().prop_map(CodeChoice::Manual),
        any::<u128>().prop_map(CodeChoice::Auto),
        (0..8usize).prop_map(CodeChoice::Replay),
        (0..8usize).prop_map(CodeChoice::Captured),
    ];
    (net(), target(), code).prop_map(|(from, target, code)| Op::Redeem { from, target, code })
}

fn op(mix: Mix) -> impl Strategy<Value = Op> {
    prop_oneof![
        mix.advance => advance().prop_map(Op::Advance),
        mix.linkers => prop::sample::select(vec![None, Some(ORIGIN)])
            .prop_map(|origin| Op::HonestLinker { origin }),
        mix.linkers.div_ceil(2) => any::<bool>().prop_map(|cgnat| Op::RogueLinker { cgnat }),
        1 => Just(Op::SecondDevice),
        mix.secret_requests => secret_request(),
        mix.links => link(),
        mix.announces => announces(),
        mix.discovers => net().prop_map(|from| Op::Discover { from }),
        mix.redeems => redeem(),
        mix.codes => prop_oneof![
            1 => Just(Op::MintCode),
            1 => (0..2usize, 0..4usize, proptest::option::weighted(0.2, any::<u32>()))
                .prop_map(|(agent, code, typo)| Op::EnterCode { agent, code, typo }),
        ],
        mix.lifecycle => prop_oneof![
            3 => (0..2usize).prop_map(|agent| Op::Restart { agent }),
            1 => (0..2usize).prop_map(|agent| Op::Cancel { agent }),
        ],
    ]
}

fn ops(mix: Mix) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(mix), 1..100)
}

// ───────────────────────────── the harness ─────────────────────────────

/// Which invariants a property asserts (every property runs the same world).
#[derive(Debug, Clone, Copy, Default)]
struct Checks {
    step5: bool,
    no_link_without_secret: bool,
    max_visible: bool,
    single_use: bool,
    stopped_refuses: bool,
}

/// The test's own view of an agent, built from its events.
#[derive(Debug)]
struct AgentModel {
    /// `Some((id, deadline))` while discovering.
    discovering: Option<(InstanceId, Instant)>,
    /// Every instance id it has had, oldest first.
    ids: Vec<InstanceId>,
    /// How many times it reported `Linked`.
    linked: usize,
    events_seen: usize,
}

/// A fake agent of the attacker's.
#[derive(Debug, Clone)]
struct Fake {
    id: InstanceId,
    secret: LocalSecret,
    private_ip: IpAddr,
}

struct World {
    sim: Sim,
    lan: LanId,
    setup: Setup,
    checks: Checks,
    /// Where we are, for messages.
    step: usize,

    agents: Vec<AgentModel>,
    /// The real secret of every real instance id (fetched by the test as each window starts), and
    /// which agent it belongs to.
    real: HashMap<InstanceId, (usize, LocalSecret)>,
    /// Resolved clients of the direct requests that were served and whose event is not yet seen.
    direct_served: Vec<IpAddr>,

    /// The user's linkers, by index in `sim.linkers` (every other linker is rogue).
    honest_linkers: HashSet<usize>,
    linker_events_seen: Vec<usize>,
    /// Instance ids whose secret an honest linker fetched.
    honest_fetched: HashSet<InstanceId>,

    // The attacker's knowledge.
    /// Real secrets fetched from an agent's endpoint (a permitted path: on the LAN, in the window).
    stolen: HashMap<InstanceId, LocalSecret>,
    /// Secrets the attacker committed to in its own announcements, by instance id.
    own: HashMap<InstanceId, LocalSecret>,
    /// Presence keys of the devices the attacker made up (it never has a real agent's key).
    keys: HashMap<InstanceId, PresenceKey>,
    fakes: Vec<Fake>,
    /// Auto codes the server delivered to the attacker's announcements: (code, id, network).
    captured: Vec<(String, InstanceId, Net)>,

    // The user's codes.
    minted: Vec<String>,
    /// Minted codes typed into an agent, with the agent's instance id at the time.
    entered: Vec<(String, InstanceId)>,
    /// Codes known to be redeemed.
    used_codes: Vec<String>,

    // The server, as the test sees it through its events.
    server_events_seen: usize,
    /// Last accepted announcement of each instance, per network (wall clock).
    presences: HashMap<PublicNetwork, HashMap<InstanceId, DateTime<Utc>>>,
    /// Accepted links: instance → (account, network, carried the real secret).
    accepted: HashMap<InstanceId, Vec<(AccountId, PublicNetwork, bool)>>,
    /// Real instance ids whose real secret the server accepted.
    accepted_real: HashSet<InstanceId>,
    /// The attacker's accepted link requests, in order: (instance, carried the real secret).
    direct_accepts: VecDeque<(InstanceId, bool)>,
    /// `ServerEvent::Linked` per instance id.
    linked: HashMap<InstanceId, usize>,
}

type Check = Result<(), TestCaseError>;

impl World {
    fn new(setup: Setup, checks: Checks) -> Self {
        let mut config = ServerConfig::default().max_visible(setup.max_visible);
        if setup.server_proxy {
            config = config.trusted_proxies(vec![format!("{SERVER_PROXY}/32").parse().unwrap()]);
        }
        let mut sim = Sim::with_server(setup.seed, config).unwrap();
        if setup.server_proxy {
            sim.put_server_behind_proxy(ip(SERVER_PROXY));
        }
        let lan = sim.add_lan(ip(VICTIM_PUBLIC));
        let mut world = Self {
            sim,
            lan,
            setup,
            checks,
            step: 0,
            agents: Vec::new(),
            real: HashMap::new(),
            direct_served: Vec::new(),
            honest_linkers: HashSet::new(),
            linker_events_seen: Vec::new(),
            honest_fetched: HashSet::new(),
            stolen: HashMap::new(),
            own: HashMap::new(),
            keys: HashMap::new(),
            fakes: Vec::new(),
            captured: Vec::new(),
            minted: Vec::new(),
            entered: Vec::new(),
            used_codes: Vec::new(),
            server_events_seen: 0,
            presences: HashMap::new(),
            accepted: HashMap::new(),
            accepted_real: HashSet::new(),
            direct_accepts: VecDeque::new(),
            linked: HashMap::new(),
        };
        world.add_agent();
        world
    }

    fn add_agent(&mut self) {
        let index = self.agents.len();
        let mut config = AgentConfig::new(ip(AGENT_IPS[index]), AGENT_PORT, DeviceInfo::default())
            .window(self.setup.window)
            .allow_origin(ORIGIN)
            .allow_host(HOST_NAME);
        if self.setup.agent_proxy {
            config = config.trusted_proxies(vec![format!("{AGENT_PROXY}/32").parse().unwrap()]);
        }
        let id = self.sim.add_agent_with(self.lan, config).unwrap();
        assert_eq!(id, index);
        self.agents.push(AgentModel {
            discovering: None,
            ids: Vec::new(),
            linked: 0,
            events_seen: 0,
        });
        self.learn_secret(index);
    }

    /// Fetches a fresh window's secret the honest way, so the test knows every real secret.
    fn learn_secret(&mut self, agent: usize) {
        let now = self.sim.now();
        let id = self.sim.agents[agent].agent.instance_id();
        let text = id.to_string();
        let request = SecretRequest {
            peer: ip(ORACLE_PEER),
            forwarded: ForwardedHeaders::NONE,
            host: Some("10.0.0.1"),
            origin: None,
            instance_id: &text,
        };
        let reply = self.sim.agents[agent]
            .agent
            .handle_secret_request(now, &request)
            .expect("a fresh window serves a valid local request");
        self.direct_served.push(ip(ORACLE_PEER));
        self.real.insert(id, (agent, reply.local_secret));
    }

    fn now(&self) -> Instant {
        self.sim.now()
    }

    fn wall(&self) -> DateTime<Utc> {
        self.sim.wall()
    }

    /// The socket peer and `X-Forwarded-For` with which the server sees the attacker from `net`:
    /// always with a header that claims the victim's address (ignored from an untrusted peer; put
    /// first, before the proxy's own entry, behind the trusted proxy).
    fn attacker_view(&self, net: Net) -> (IpAddr, Vec<String>) {
        let real = net_ip(net);
        if self.setup.server_proxy {
            (ip(SERVER_PROXY), vec![format!("{VICTIM_PUBLIC}, {real}")])
        } else {
            (ip(real), vec![VICTIM_PUBLIC.to_owned()])
        }
    }

    fn agent_index(&self, agent: usize) -> usize {
        agent % self.agents.len()
    }

    fn current_id(&self, agent: usize) -> InstanceId {
        self.sim.agents[self.agent_index(agent)].agent.instance_id()
    }

    fn previous_id(&self, agent: usize) -> Option<InstanceId> {
        let ids = &self.agents[self.agent_index(agent)].ids;
        ids.len().checked_sub(2).map(|i| ids[i])
    }

    fn resolve(&self, target: Target) -> InstanceId {
        match target {
            Target::Current(agent) => self.current_id(agent),
            Target::Previous(agent) => self
                .previous_id(agent)
                .unwrap_or_else(|| self.current_id(agent)),
            Target::Fake(i) if !self.fakes.is_empty() => self.fakes[i % self.fakes.len()].id,
            Target::Fake(i) => fake_key(i as u64).instance_id(),
            Target::Fresh(salt) => fake_key(salt).instance_id(),
        }
    }

    /// The real secret of `id`, if the attacker knows it: stolen on the LAN, or leaked after the
    /// server accepted it.
    fn known_real_secret(&self, id: &InstanceId) -> Option<LocalSecret> {
        if let Some(secret) = self.stolen.get(id) {
            return Some(secret.clone());
        }
        if self.accepted_real.contains(id) {
            return self.real.get(id).map(|(_, s)| s.clone());
        }
        None
    }

    fn carries_real_secret(&self, id: &InstanceId, secret: &LocalSecret) -> bool {
        self.real.get(id).is_some_and(|(_, s)| s.ct_eq(secret))
    }

    fn present(&self, network: &PublicNetwork, wall: DateTime<Utc>) -> HashSet<InstanceId> {
        self.presences
            .get(network)
            .map(|p| {
                p.iter()
                    .filter(|(_, t)| **t + PRESENCE_TTL > wall)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default()
    }

    // ───────── operations ─────────

    fn apply(&mut self, op: &Op) -> Check {
        // Everyone catches up first, so the model sees the present before the attacker acts.
        self.sim.settle();
        self.observe()?;
        match op {
            Op::Advance(by) => self.sim.advance(*by),
            Op::HonestLinker { origin } => {
                let linker = self.sim.add_linker_with(
                    self.lan,
                    ip(HONEST_LINKER_IP),
                    "alice",
                    LinkerConfig::default(),
                    origin.map(str::to_owned),
                );
                self.honest_linkers.insert(linker);
            }
            Op::RogueLinker { cgnat } => {
                let (at, origin) = if *cgnat {
                    (CGNAT_NEIGHBOUR_IP, Some(ORIGIN))
                } else {
                    (ROGUE_PAGE_IP, Some("https://evil.example"))
                };
                self.sim.add_linker_with(
                    self.lan,
                    ip(at),
                    "eve",
                    LinkerConfig::default(),
                    origin.map(str::to_owned),
                );
            }
            Op::SecondDevice => {
                if self.agents.len() < AGENT_IPS.len() {
                    self.add_agent();
                }
            }
            Op::SecretRequest {
                lag,
                agent,
                peer,
                xff,
                host,
                origin,
                id,
            } => {
                self.sim.elapsed += *lag;
                self.secret_request(*agent, peer, *xff, *host, *origin, *id)?;
            }
            Op::Link {
                from,
                target,
                secret,
            } => self.link(*from, *target, *secret)?,
            Op::Impersonate {
                from,
                target,
                commitment,
                addr,
            } => self.impersonate(*from, *target, *commitment, *addr),
            Op::FakeAgent {
                from,
                refresh,
                salt,
            } => {
                self.fake_agent(*from, *refresh, *salt);
            }
            Op::OwnDevice { from, salt } => self.own_device(*from, *salt),
            Op::Discover { from } => self.discover(*from)?,
            Op::Redeem { from, target, code } => self.redeem(*from, *target, *code)?,
            Op::MintCode => {
                let wall = self.wall();
                // Past the account's quota of live codes, a mint is refused (and only then).
                match self
                    .sim
                    .server
                    .mint_code_now(wall, &mut self.sim.rng, &alice())
                {
                    Ok(reply) => self.minted.push(reply.code.expose().to_owned()),
                    Err(lanlink::Refusal::MintQuota) => assert!(self.minted.len() >= 5),
                    Err(other) => panic!("mint refused: {other:?}"),
                }
            }
            Op::EnterCode { agent, code, typo } => self.enter_code(*agent, *code, *typo),
            Op::Restart { agent } => {
                let agent = self.agent_index(*agent);
                let now = self.now();
                let restarted = self.sim.agents[agent]
                    .agent
                    .restart_discovery(now, &mut self.sim.rng);
                if restarted.is_ok() {
                    self.learn_secret(agent);
                }
            }
            Op::Cancel { agent } => {
                let agent = self.agent_index(*agent);
                self.sim.agents[agent].agent.cancel();
            }
        }
        self.sim.settle();
        self.observe()?;
        self.probe_stopped_agents()
    }

    fn secret_request(
        &mut self,
        agent: usize,
        peer: &str,
        xff: Option<&str>,
        host: (Option<&str>, bool),
        origin: (Option<&str>, bool),
        id: IdText,
    ) -> Check {
        let agent = self.agent_index(agent);
        let now = self.now();
        let current = self.current_id(agent);
        let hyphenated = current.to_string();
        let simple = current.as_uuid().simple().to_string();
        let other = (0..self.agents.len())
            .find(|a| *a != agent)
            .map(|a| self.current_id(a));
        let text = match id {
            IdText::Right => hyphenated.clone(),
            IdText::Simple => simple.clone(),
            IdText::Upper => hyphenated.to_ascii_uppercase(),
            IdText::Braced => format!("{{{hyphenated}}}"),
            IdText::Urn => format!("urn:uuid:{hyphenated}"),
            IdText::Padded => format!("{hyphenated} "),
            IdText::Previous => self
                .previous_id(agent)
                .unwrap_or_else(|| fake_key(7).instance_id())
                .to_string(),
            IdText::OtherAgent => other
                .unwrap_or_else(|| fake_key(8).instance_id())
                .to_string(),
            IdText::Random(salt) => fake_key(salt).instance_id().to_string(),
            IdText::Garbage(text) => text.to_owned(),
        };
        let lines: Vec<&str> = xff.into_iter().collect();
        let request = SecretRequest {
            peer: ip(peer),
            forwarded: ForwardedHeaders {
                forwarded: &[],
                x_forwarded_for: &lines,
            },
            host: host.0,
            origin: origin.0,
            instance_id: &text,
        };
        let result = self.sim.agents[agent]
            .agent
            .handle_secret_request(now, &request);

        // The reference: step 5, computed from the test's own model.
        let in_window = self.agents[agent]
            .discovering
            .is_some_and(|(id, deadline)| id == current && now < deadline);
        let client = client_reference(peer, xff, self.setup.agent_proxy);
        let local = client.is_some_and(is_local_reference);
        let id_matches =
            text.eq_ignore_ascii_case(&hyphenated) || text.eq_ignore_ascii_case(&simple);
        let expected = in_window && local && id_matches && host.1 && origin.1;
        if self.checks.step5 {
            prop_assert_eq!(
                result.is_ok(),
                expected,
                "step {}: secret request from {} (xff {:?}, client {:?}) host {:?} origin {:?} id {:?}: in window {}, local {}, id matches {}; agent said {:?}",
                self.step, peer, xff, client, host.0, origin.0, text, in_window, local, id_matches,
                result.as_ref().map(|_| "served").map_err(Clone::clone)
            );
        }
        if let Ok(reply) = result {
            let real = &self.real[&current].1;
            prop_assert!(
                reply.local_secret.ct_eq(real),
                "step {}: the agent served a secret that is not its own",
                self.step
            );
            self.direct_served.push(client.unwrap_or(ip(peer)));
            self.stolen.insert(current, reply.local_secret);
        }
        Ok(())
    }

    fn link(&mut self, from: Net, target: Target, choice: SecretChoice) -> Check {
        let id = self.resolve(target);
        let secret = match choice {
            SecretChoice::Random(salt) => LocalSecret::from_bytes(bytes32(salt, 2)),
            SecretChoice::Stolen => match self.stolen.get(&id) {
                Some(secret) => secret.clone(),
                None => return Ok(()),
            },
            SecretChoice::Leaked => match self.real.get(&id) {
                Some((_, secret)) if self.accepted_real.contains(&id) => secret.clone(),
                _ => return Ok(()),
            },
            SecretChoice::Own => match self.own.get(&id) {
                Some(secret) => secret.clone(),
                None => return Ok(()),
            },
        };
        let real = self.carries_real_secret(&id, &secret);
        let already_accepted = self.accepted_real.contains(&id);
        let (peer, xff) = self.attacker_view(from);
        let lines: Vec<&str> = xff.iter().map(String::as_str).collect();
        let headers = ForwardedHeaders {
            forwarded: &[],
            x_forwarded_for: &lines,
        };
        let wall = self.wall();
        let result = self.sim.server.link_now(
            wall,
            &mut self.sim.rng,
            &mallory(),
            peer,
            headers,
            LinkRequest::new(id, secret),
        );
        if self.checks.no_link_without_secret && matches!(choice, SecretChoice::Random(_)) {
            prop_assert!(
                result.is_err(),
                "step {}: a random secret was accepted for {id:?} from {from:?}",
                self.step
            );
        }
        if self.checks.single_use && real && already_accepted {
            prop_assert!(
                result.is_err(),
                "step {}: the real secret of {id:?}, already accepted once, was accepted again from {from:?} ({choice:?})",
                self.step
            );
        }
        if result.is_ok() {
            self.direct_accepts.push_back((id, real));
        }
        Ok(())
    }

    fn announce_as(
        &mut self,
        from: Net,
        id: InstanceId,
        private_ip: IpAddr,
        port: u16,
        commitment: Commitment,
    ) {
        let presence_key =
            self.keys.get(&id).cloned().unwrap_or_else(|| {
                PresenceKey::from_bytes(bytes32(u64::from(id.as_bytes()[0]), 9))
            });
        let announce = Announce::new(
            id,
            private_ip,
            port,
            DeviceInfo::default(),
            commitment,
            presence_key,
        );
        let (peer, xff) = self.attacker_view(from);
        let lines: Vec<&str> = xff.iter().map(String::as_str).collect();
        let headers = ForwardedHeaders {
            forwarded: &[],
            x_forwarded_for: &lines,
        };
        let wall = self.wall();
        match self.sim.server.announce_now(wall, peer, headers, &announce) {
            Ok(reply) => {
                for message in reply.messages {
                    if let AgentMessage::VerifyAndRedeem {
                        instance_id, code, ..
                    } = message
                    {
                        self.captured
                            .push((code.expose().to_owned(), instance_id, from));
                    }
                }
            }
            Err(lanlink::Refusal::WindowOver) => {
                // The server dropped the presence.
                if let Some(p) = self.presences.get_mut(&network(net_ip(from))) {
                    p.remove(&id);
                }
            }
            Err(_) => {}
        }
    }

    fn impersonate(&mut self, from: Net, target: Target, choice: CommitChoice, addr: AddrChoice) {
        let id = self.resolve(target);
        let own = |world: &mut Self| {
            world
                .own
                .entry(id)
                .or_insert_with(|| LocalSecret::from_bytes(bytes32(u64::from(id.as_bytes()[0]), 3)))
                .commitment(&id)
        };
        let commitment = match choice {
            CommitChoice::Random(salt) => Commitment::from_bytes(bytes32(salt, 4)),
            CommitChoice::Own => own(self),
            CommitChoice::Real => match self.known_real_secret(&id) {
                Some(secret) => secret.commitment(&id),
                None => Commitment::from_bytes(bytes32(5, 4)),
            },
        };
        let same_ip = match self.real.get(&id) {
            Some((agent, _)) => ip(AGENT_IPS[*agent]),
            None => self
                .fakes
                .iter()
                .find(|f| f.id == id)
                .map_or(ip(AGENT_IPS[0]), |f| f.private_ip),
        };
        let (private_ip, port) = match addr {
            AddrChoice::Same => (same_ip, AGENT_PORT),
            AddrChoice::OtherIp => (ip("192.168.1.99"), AGENT_PORT),
            AddrChoice::OtherPort => (same_ip, 9090),
            AddrChoice::Public => (ip("8.8.8.8"), AGENT_PORT),
        };
        self.announce_as(from, id, private_ip, port, commitment);
    }

    fn own_device(&mut self, from: Net, salt: u64) {
        let fake = self.fake_agent(from, None, salt);
        let (peer, xff) = self.attacker_view(from);
        let lines: Vec<&str> = xff.iter().map(String::as_str).collect();
        let headers = ForwardedHeaders {
            forwarded: &[],
            x_forwarded_for: &lines,
        };
        let wall = self.wall();
        let linked = self.sim.server.link_now(
            wall,
            &mut self.sim.rng,
            &mallory(),
            peer,
            headers,
            LinkRequest::new(fake.id, fake.secret.clone()),
        );
        if linked.is_ok() {
            self.direct_accepts.push_back((fake.id, false));
            let commitment = fake.secret.commitment(&fake.id);
            self.announce_as(from, fake.id, fake.private_ip, AGENT_PORT, commitment);
        }
    }

    fn fake_agent(&mut self, from: Net, refresh: Option<usize>, salt: u64) -> Fake {
        let fake = match refresh {
            Some(i) if !self.fakes.is_empty() => self.fakes[i % self.fakes.len()].clone(),
            _ => {
                let key = fake_key(salt);
                let fake = Fake {
                    id: key.instance_id(),
                    secret: LocalSecret::from_bytes(bytes32(salt, 6)),
                    private_ip: IpAddr::V4(Ipv4Addr::new(
                        192,
                        168,
                        1,
                        100 + (self.fakes.len() % 100) as u8,
                    )),
                };
                self.own.insert(fake.id, fake.secret.clone());
                self.keys.insert(fake.id, key);
                self.fakes.push(fake.clone());
                fake
            }
        };
        let commitment = fake.secret.commitment(&fake.id);
        self.announce_as(from, fake.id, fake.private_ip, AGENT_PORT, commitment);
        fake
    }

    fn discover(&mut self, from: Net) -> Check {
        let (peer, xff) = self.attacker_view(from);
        let lines: Vec<&str> = xff.iter().map(String::as_str).collect();
        let headers = ForwardedHeaders {
            forwarded: &[],
            x_forwarded_for: &lines,
        };
        let wall = self.wall();
        let reply = self.sim.server.discover_now(wall, peer, headers);
        if self.checks.max_visible {
            let reply = reply.map_err(|r| {
                TestCaseError::fail(format!("step {}: discover refused: {r:?}", self.step))
            })?;
            let present = self.present(&network(net_ip(from)), wall);
            prop_assert!(
                reply.agents.len() <= self.setup.max_visible,
                "step {}: discover from {from:?} showed {} agents, max_visible {}",
                self.step,
                reply.agents.len(),
                self.setup.max_visible
            );
            if present.len() > self.setup.max_visible {
                prop_assert!(
                    reply.agents.is_empty(),
                    "step {}: {} agents present in {from:?} but discover showed {:?}",
                    self.step,
                    present.len(),
                    reply.agents
                );
            }
            for shown in &reply.agents {
                prop_assert!(
                    present.contains(&shown.instance_id),
                    "step {}: discover from {from:?} showed {:?}, which is not fresh there",
                    self.step,
                    shown.instance_id
                );
            }
        }
        Ok(())
    }

    fn redeem(&mut self, from: Net, target: Target, choice: CodeChoice) -> Check {
        let (code, id, from) = match choice {
            CodeChoice::Manual(n) => {
                let code = format!("{:06}", n % 1_000_000);
                if self.minted.contains(&code) {
                    // A lucky guess is a valid code; the lockout bounds guessing (scenarios).
                    return Ok(());
                }
                (code, self.resolve(target), from)
            }
            CodeChoice::Auto(n) => (format!("{n:032x}"), self.resolve(target), from),
            CodeChoice::Replay(i) if !self.used_codes.is_empty() => (
                self.used_codes[i % self.used_codes.len()].clone(),
                self.resolve(target),
                from,
            ),
            CodeChoice::Captured(i) if !self.captured.is_empty() => {
                self.captured[i % self.captured.len()].clone()
            }
            CodeChoice::Replay(_) | CodeChoice::Captured(_) => return Ok(()),
        };
        let (peer, xff) = self.attacker_view(from);
        let lines: Vec<&str> = xff.iter().map(String::as_str).collect();
        let headers = ForwardedHeaders {
            forwarded: &[],
            x_forwarded_for: &lines,
        };
        let wall = self.wall();
        let request = RedeemRequest::new(id, LinkCode::parse(&code).unwrap());
        let result = self
            .sim
            .server
            .redeem_now(wall, &mut self.sim.rng, peer, headers, &request);
        match choice {
            CodeChoice::Manual(_) | CodeChoice::Auto(_) if self.checks.no_link_without_secret => {
                prop_assert!(
                    result.is_err(),
                    "step {}: a guessed code was redeemed for {id:?} from {from:?}",
                    self.step
                );
            }
            CodeChoice::Replay(_) if self.checks.single_use => {
                prop_assert!(
                    result.is_err(),
                    "step {}: a used code was redeemed again for {id:?} from {from:?}",
                    self.step
                );
            }
            _ => {}
        }
        if result.is_ok() {
            self.used_codes.push(code);
        }
        Ok(())
    }

    fn enter_code(&mut self, agent: usize, code: usize, typo: Option<u32>) {
        let agent = self.agent_index(agent);
        let text = match typo {
            Some(n) => {
                let text = format!("{:06}", n % 1_000_000);
                if self.minted.contains(&text) {
                    return;
                }
                text
            }
            None if self.minted.is_empty() => return,
            None => self.minted[code % self.minted.len()].clone(),
        };
        let now = self.now();
        let id = self.current_id(agent);
        let entered = self.sim.agents[agent]
            .agent
            .enter_code(now, LinkCode::parse(&text).unwrap());
        if entered.is_ok() && typo.is_none() {
            self.entered.push((text, id));
        }
    }

    // ───────── observation: every invariant, after every operation ─────────

    fn observe(&mut self) -> Check {
        let now = self.now();
        let wall = self.wall();
        let step = self.step;

        // The agents' events, in order, against the model.
        let mut served_to_linkers: HashSet<InstanceId> = HashSet::new();
        let mut agent_linked: Vec<InstanceId> = Vec::new();
        for a in 0..self.agents.len() {
            let events = self.sim.agents[a].events[self.agents[a].events_seen..].to_vec();
            self.agents[a].events_seen += events.len();
            for event in events {
                let model = &mut self.agents[a];
                match event {
                    AgentEvent::DiscoveryStarted {
                        instance_id,
                        deadline,
                    } => {
                        model.discovering = Some((instance_id, deadline));
                        model.ids.push(instance_id);
                    }
                    AgentEvent::SecretServed { client } => {
                        if self.checks.step5 {
                            let Some((_, deadline)) = model.discovering else {
                                return Err(TestCaseError::fail(format!(
                                    "step {step}: agent {a} served its secret to {client} while not discovering"
                                )));
                            };
                            prop_assert!(
                                now < deadline,
                                "step {}: agent {} served its secret to {} after its window",
                                step,
                                a,
                                client
                            );
                            prop_assert!(
                                is_local_reference(client),
                                "step {}: agent {} served its secret to non-local {}",
                                step,
                                a,
                                client
                            );
                        }
                        if client == ip(HONEST_LINKER_IP) {
                            if let Some((id, _)) = model.discovering {
                                served_to_linkers.insert(id);
                            }
                        } else if let Some(i) = self.direct_served.iter().position(|c| *c == client)
                        {
                            self.direct_served.swap_remove(i);
                        } else if self.checks.step5 {
                            return Err(TestCaseError::fail(format!(
                                "step {step}: agent {a} served its secret to {client}, which is neither the user's browser nor a request the step-5 reference allowed"
                            )));
                        }
                    }
                    AgentEvent::RedeemStarted { .. } | AgentEvent::Stopped { .. } => {
                        model.discovering = None;
                    }
                    AgentEvent::Linked { instance_id } => {
                        model.discovering = None;
                        model.linked += 1;
                        agent_linked.push(instance_id);
                        if self.checks.single_use {
                            prop_assert!(
                                model.linked <= 1,
                                "step {}: agent {} reached Linked twice",
                                step,
                                a
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        if self.checks.step5 {
            prop_assert!(
                self.direct_served.is_empty(),
                "step {}: served requests without a SecretServed event: {:?}",
                step,
                self.direct_served
            );
        }
        self.direct_served.clear();

        // The linkers' events: only the user's browser ever holds a secret.
        self.linker_events_seen.resize(self.sim.linkers.len(), 0);
        for l in 0..self.sim.linkers.len() {
            let events = self.sim.linkers[l].events[self.linker_events_seen[l]..].to_vec();
            self.linker_events_seen[l] += events.len();
            for event in events {
                if let LinkerEvent::SecretFetched { instance_id, .. } = event {
                    if self.checks.step5 {
                        prop_assert!(
                            self.honest_linkers.contains(&l),
                            "step {}: rogue linker {} at {} fetched the secret of {:?}",
                            step,
                            l,
                            self.sim.linkers[l].private_ip,
                            instance_id
                        );
                        prop_assert!(
                            served_to_linkers.contains(&instance_id),
                            "step {}: linker {} fetched {:?}, which no agent served as its current id",
                            step,
                            l,
                            instance_id
                        );
                    }
                    self.honest_fetched.insert(instance_id);
                }
            }
        }

        // The server's events.
        let events = self.sim.server_events[self.server_events_seen..].to_vec();
        self.server_events_seen += events.len();
        let mut server_linked: Vec<InstanceId> = Vec::new();
        for event in events {
            match event {
                ServerEvent::Announced {
                    network,
                    instance_id,
                    ..
                } => {
                    self.presences
                        .entry(network)
                        .or_default()
                        .insert(instance_id, wall);
                }
                ServerEvent::Discovered {
                    network,
                    shown,
                    present,
                    ..
                } if self.checks.max_visible => {
                    let k = self.setup.max_visible;
                    let expected = self.present(&network, wall).len();
                    prop_assert!(
                        shown <= k,
                        "step {}: {} shown {} agents, max_visible {}",
                        step,
                        network,
                        shown,
                        k
                    );
                    prop_assert_eq!(
                        present,
                        expected,
                        "step {}: the server counts {} agents present in {}, the model {}",
                        step,
                        present,
                        network,
                        expected
                    );
                    prop_assert!(
                        present <= k || shown == 0,
                        "step {}: {} present in {} but {} shown",
                        step,
                        present,
                        network,
                        shown
                    );
                }
                ServerEvent::LinkAccepted {
                    network,
                    instance_id,
                    account,
                } => {
                    let real = if account == mallory() {
                        let Some((id, real)) = self.direct_accepts.pop_front() else {
                            return Err(TestCaseError::fail(format!(
                                "step {step}: a link for mallory that the attacker did not make"
                            )));
                        };
                        prop_assert_eq!(id, instance_id);
                        real
                    } else if account == alice() {
                        // The user's browser presents what it fetched from the agent.
                        self.honest_fetched.contains(&instance_id)
                    } else {
                        if self.checks.no_link_without_secret {
                            return Err(TestCaseError::fail(format!(
                                "step {step}: a rogue linker's link for {instance_id:?} was accepted"
                            )));
                        }
                        false
                    };
                    if real && self.real.contains_key(&instance_id) {
                        if self.checks.single_use {
                            prop_assert!(
                                !self.accepted_real.contains(&instance_id),
                                "step {}: the real secret of {:?} was accepted twice (now from {} for {})",
                                step,
                                instance_id,
                                network,
                                account
                            );
                        }
                        self.accepted_real.insert(instance_id);
                    }
                    self.accepted
                        .entry(instance_id)
                        .or_default()
                        .push((account, network, real));
                }
                ServerEvent::Linked {
                    network,
                    instance_id,
                    account,
                    manual,
                    ..
                } => {
                    if let Some(p) = self.presences.get_mut(&network) {
                        p.remove(&instance_id);
                    }
                    server_linked.push(instance_id);
                    let count = self.linked.entry(instance_id).or_default();
                    *count += 1;
                    if self.checks.single_use {
                        prop_assert!(
                            *count <= 1,
                            "step {}: {:?} linked a second time (now in {} to {})",
                            step,
                            instance_id,
                            network,
                            account
                        );
                    }
                    if manual {
                        if let Some((code, _)) =
                            self.entered.iter().rev().find(|(_, id)| *id == instance_id)
                        {
                            self.used_codes.push(code.clone());
                        }
                    }
                    if self.checks.no_link_without_secret && self.real.contains_key(&instance_id) {
                        self.check_link_is_earned(network, instance_id, &account, manual)?;
                    }
                }
                _ => {}
            }
        }

        // A real agent reports Linked exactly when the server linked it.
        if self.checks.no_link_without_secret {
            for id in &agent_linked {
                prop_assert!(
                    server_linked.contains(id),
                    "step {}: the agent reports {:?} linked but the server minted no token",
                    step,
                    id
                );
            }
            for id in &server_linked {
                if self.real.contains_key(id) && !self.stolen.contains_key(id) {
                    prop_assert!(
                        agent_linked.contains(id),
                        "step {}: the server linked {:?} but the real agent did not redeem",
                        step,
                        id
                    );
                }
            }
        }

        // The model agrees with the agents' own status.
        for a in 0..self.agents.len() {
            let discovering = self.sim.agents[a].agent.is_discovering();
            prop_assert_eq!(
                discovering,
                self.agents[a].discovering.is_some(),
                "step {}: agent {} status {:?} disagrees with its events",
                step,
                a,
                self.sim.agents[a].agent.status()
            );
        }
        Ok(())
    }

    /// Invariant 2 for one `Linked` of a real instance.
    fn check_link_is_earned(
        &self,
        network: PublicNetwork,
        id: InstanceId,
        account: &AccountId,
        manual: bool,
    ) -> Check {
        let step = self.step;
        if manual {
            prop_assert!(
                *account == alice() && self.entered.iter().any(|(_, entered)| *entered == id),
                "step {}: {:?} linked to {} in {} with a manual code the user never typed into it",
                step,
                id,
                account,
                network
            );
        } else {
            let earned = self.accepted.get(&id).is_some_and(|links| {
                links
                    .iter()
                    .any(|(acc, net, real)| acc == account && *net == network && *real)
            });
            prop_assert!(
                earned,
                "step {}: {:?} linked to {} in {} without an accepted link that carried its real secret (accepted: {:?})",
                step,
                id,
                account,
                network,
                self.accepted.get(&id)
            );
        }
        if *account == mallory() {
            prop_assert!(
                self.stolen.contains_key(&id),
                "step {}: {:?} linked to the attacker's account without the attacker fetching its secret on the LAN",
                step,
                id
            );
        }
        Ok(())
    }

    /// Invariant 5: an agent that is not discovering (stopped, redeeming, linked) refuses even a
    /// perfect request; so does one whose window has run out.
    fn probe_stopped_agents(&mut self) -> Check {
        if !self.checks.stopped_refuses {
            return Ok(());
        }
        let now = self.now();
        for (a, agent_ip) in AGENT_IPS.iter().enumerate().take(self.agents.len()) {
            let status = self.sim.agents[a].agent.status();
            let open = match status {
                AgentStatus::Discovering { deadline } => now < deadline,
                _ => false,
            };
            if open {
                continue;
            }
            let text = self.sim.agents[a].agent.instance_id().to_string();
            let host = format!("{agent_ip}:{AGENT_PORT}");
            let request = SecretRequest {
                peer: ip(HONEST_LINKER_IP),
                forwarded: ForwardedHeaders::NONE,
                host: Some(&host),
                origin: Some(ORIGIN),
                instance_id: &text,
            };
            let result = self.sim.agents[a]
                .agent
                .handle_secret_request(now, &request);
            prop_assert!(
                result.is_err(),
                "step {}: agent {} in status {:?} served its secret",
                self.step,
                a,
                status
            );
        }
        Ok(())
    }
}

fn net_ip(net: Net) -> &'static str {
    match net {
        Net::Victim => VICTIM_PUBLIC,
        Net::Elsewhere => ELSEWHERE,
    }
}

fn run(setup: Setup, ops: &[Op], checks: Checks) -> Check {
    let mut world = World::new(setup, checks);
    world.sim.settle();
    world.observe()?;
    for (step, op) in ops.iter().enumerate() {
        world.step = step;
        world.apply(op)?;
    }
    Ok(())
}

// ───────────────────────────── the properties ─────────────────────────────

fn config() -> ProptestConfig {
    ProptestConfig {
        // Only this file may change: no regression files next to it.
        failure_persistence: None,
        ..ProptestConfig::with_cases(256)
    }
}

proptest! {
    #![proptest_config(config())]

    /// Invariant 1: every served secret (to the attacker's direct calls and to the simulator's
    /// linkers) was served while discovery was on, inside the window, to a local client, for the
    /// right instance, with a good `Host` and `Origin`; and the agent answers exactly as an
    /// independent step-5 reference says.
    #[test]
    fn secret_is_revealed_only_under_step5_conditions(
        setup in setup(),
        ops in ops(Mix { secret_requests: 16, linkers: 6, ..BALANCED }),
    ) {
        run(setup, &ops, Checks { step5: true, ..Checks::default() })?;
    }

    /// Invariant 2: a real agent is linked to an account only after the server accepted its real
    /// secret for that account in that network, or through a manual code the user typed into it;
    /// the attacker's account only after it fetched the secret on the LAN; guesses never pass.
    #[test]
    fn no_link_completes_without_the_real_secret_or_a_valid_code(
        setup in setup(),
        ops in ops(Mix { links: 10, announces: 8, redeems: 10, ..BALANCED }),
    ) {
        run(setup, &ops, Checks { no_link_without_secret: true, ..Checks::default() })?;
    }

    /// Invariant 3: no discovery reply shows more than `max_visible` agents, none when more are
    /// fresh, and only fresh ones; the server's count of present agents matches the model's.
    #[test]
    fn discovery_never_shows_more_than_max_visible(
        setup in setup(),
        ops in ops(Mix { announces: 12, discovers: 10, linkers: 6, ..BALANCED }),
    ) {
        run(setup, &ops, Checks { max_visible: true, ..Checks::default() })?;
    }

    /// Invariant 4: a real secret is accepted at most once, a used code never redeems again, an
    /// agent reaches Linked at most once, and the server links an instance id at most once.
    #[test]
    fn secrets_and_codes_are_single_use(
        setup in setup(),
        ops in ops(Mix { links: 10, announces: 8, redeems: 10, codes: 6, ..BALANCED }),
    ) {
        run(setup, &ops, Checks { single_use: true, ..Checks::default() })?;
    }

    /// Invariant 5: an agent that is stopped, redeeming or linked (or whose window ran out)
    /// refuses even a perfect secret request.
    #[test]
    fn stopped_or_linked_agent_refuses_every_secret_request(
        setup in setup(),
        ops in ops(Mix { lifecycle: 6, codes: 6, advance: 16, ..BALANCED }),
    ) {
        run(setup, &ops, Checks { stopped_refuses: true, ..Checks::default() })?;
    }
}

// ───────────────────────────── regressions ─────────────────────────────
//
// The smallest sequences found for the properties above, kept as plain tests (every invariant
// checked after every step).

fn all_checks() -> Checks {
    Checks {
        step5: true,
        no_link_without_secret: true,
        max_visible: true,
        single_use: true,
        stopped_refuses: true,
    }
}

fn home() -> Setup {
    Setup {
        seed: 0,
        max_visible: 1,
        window: Duration::from_secs(600),
        agent_proxy: false,
        server_proxy: false,
    }
}

/// The user links the agent; the secret, now used, is replayed from another public network after
/// announcing the instance there with its commitment (invariant 4).
#[test]
fn used_secret_replayed_from_another_network_is_refused() {
    let ops = [
        Op::HonestLinker { origin: None },
        Op::Impersonate {
            from: Net::Elsewhere,
            target: Target::Current(0),
            commitment: CommitChoice::Real,
            addr: AddrChoice::Same,
        },
        Op::Link {
            from: Net::Elsewhere,
            target: Target::Current(0),
            secret: SecretChoice::Leaked,
        },
    ];
    run(home(), &ops, all_checks()).unwrap();
}

/// Knowing only the victim's instance id (shown to anyone behind the victim's public address),
/// the attacker announces it from its own network with a commitment of its own, links it with that
/// secret and redeems the code it is sent (invariants 2 and 4).
#[test]
fn instance_id_announced_from_another_network_cannot_be_linked() {
    let announce = Op::Impersonate {
        from: Net::Elsewhere,
        target: Target::Current(0),
        commitment: CommitChoice::Own,
        addr: AddrChoice::Same,
    };
    let ops = [
        announce.clone(),
        Op::Link {
            from: Net::Elsewhere,
            target: Target::Current(0),
            secret: SecretChoice::Own,
        },
        announce,
        Op::Redeem {
            from: Net::Elsewhere,
            target: Target::Current(0),
            code: CodeChoice::Captured(0),
        },
        Op::HonestLinker { origin: None },
        Op::Advance(Duration::from_secs(2)),
    ];
    run(home(), &ops, all_checks()).unwrap();
}

/// The user links the agent; before the agent's next announcement, someone holding the used
/// secret announces the instance from the victim's network with its commitment, receives the
/// queued `{secret, code}` and redeems the code: the user's account is linked to the attacker's
/// device, and the real agent never is (invariant 2).
#[test]
fn used_secret_cannot_divert_the_agents_delivery() {
    let ops = [
        Op::HonestLinker { origin: None },
        Op::Impersonate {
            from: Net::Victim,
            target: Target::Current(0),
            commitment: CommitChoice::Real,
            addr: AddrChoice::Same,
        },
        Op::Redeem {
            from: Net::Victim,
            target: Target::Current(0),
            code: CodeChoice::Captured(0),
        },
    ];
    run(home(), &ops, all_checks()).unwrap();
}

/// Any address, of any kind: the ranks `order_endpoints` sorts by, and the ones it must drop.
fn any_endpoint() -> impl Strategy<Value = std::net::SocketAddr> {
    let v4 = prop_oneof![
        (any::<u8>(), any::<u8>()).prop_map(|(c, d)| Ipv4Addr::new(192, 168, c, d)),
        (any::<u8>(), any::<u8>()).prop_map(|(c, d)| Ipv4Addr::new(172, 17, c, d)),
        (any::<u8>(), any::<u8>()).prop_map(|(c, d)| Ipv4Addr::new(169, 254, c, d)),
        (any::<u8>(), any::<u8>()).prop_map(|(c, d)| Ipv4Addr::new(10, 88, c, d)),
        any::<u8>().prop_map(|d| Ipv4Addr::new(127, 0, 0, d)),
        any::<u32>().prop_map(Ipv4Addr::from),
    ];
    let v6 = prop_oneof![
        any::<u16>().prop_map(|x| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, x)),
        any::<u16>().prop_map(|x| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, x)),
        any::<u128>().prop_map(Ipv6Addr::from),
    ];
    let ip = prop_oneof![v4.prop_map(IpAddr::V4), v6.prop_map(IpAddr::V6)];
    (ip, 0u16..4).prop_map(|(ip, port)| std::net::SocketAddr::new(ip, 8080 + port))
}

proptest! {
    #![proptest_config(config())]

    /// Revision 1.3: whatever addresses an agent is given, what it announces is at most
    /// 1 + MAX_CANDIDATES endpoints, each announceable, none repeated, a private pinned one
    /// first, and the server accepts that announcement (no candidate it would refuse), keeping
    /// the candidates in the agent's order; a linker then asks only those endpoints, in order.
    #[test]
    fn announced_candidates_are_bounded_private_and_ordered(
        pinned in proptest::option::of(any_endpoint()),
        given in proptest::collection::vec(any_endpoint(), 0..24),
    ) {
        let ordered = lanlink::agent::order_endpoints(pinned, given.clone());
        prop_assert!(ordered.len() <= 1 + wire::MAX_CANDIDATES);
        let unique: HashSet<_> = ordered.iter().collect();
        prop_assert_eq!(unique.len(), ordered.len());
        prop_assert!(ordered.iter().all(|e| lanlink::addr::is_announceable_private_ip(e.ip())));
        if let Some(pinned) = pinned.filter(|p| lanlink::addr::is_announceable_private_ip(p.ip())) {
            prop_assert_eq!(ordered.first(), Some(&pinned));
        }
        let Some(first) = ordered.first().copied() else { return Ok(()) };
        // The same list given back (its first pinned) is announced as it is.
        let config = AgentConfig::new(first.ip(), first.port(), DeviceInfo::default())
            .advertise(first)
            .candidates(ordered[1..].to_vec());
        let now = Instant::now();
        let mut agent = lanlink::agent::Agent::new(config, now, &mut StdRng::seed_from_u64(5))
            .expect("an ordered list is a valid configuration");
        prop_assert_eq!(agent.endpoints(), &ordered[..]);
        let Some(lanlink::agent::AgentTransmit::Announce(announce)) = agent.poll_transmit(now)
        else {
            return Err(TestCaseError::fail("no announcement"));
        };
        let server = lanlink::server::Server::new(ServerConfig::default()).unwrap();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let home: IpAddr = "203.0.113.7".parse().unwrap();
        server
            .announce_now(t0, home, lanlink::ForwardedHeaders::NONE, &announce)
            .map_err(|r| TestCaseError::fail(format!("refused: {r:?}")))?;
        let shown = server
            .discover_now(t0, home, lanlink::ForwardedHeaders::NONE)
            .map_err(|r| TestCaseError::fail(format!("refused: {r:?}")))?;
        prop_assert_eq!(shown.agents.len(), 1);
        prop_assert_eq!(shown.agents[0].endpoints(), ordered.clone());
        // The linker asks exactly those endpoints, in order, while each is unreachable.
        let mut linker = lanlink::linker::Linker::without_nonce(LinkerConfig::default(), now);
        prop_assert!(matches!(linker.poll_transmit(now), Some(lanlink::linker::LinkerTransmit::Discover)));
        linker.handle_discover_reply(now, Ok(shown)).unwrap();
        let mut asked = Vec::new();
        while let Some(lanlink::linker::LinkerTransmit::FetchSecret { agent, fetch, .. }) = linker.poll_transmit(now) {
            asked.push(agent);
            linker
                .handle_secret_reply(now, fetch, Err(lanlink::linker::FetchFailure::Unreachable))
                .unwrap();
        }
        prop_assert_eq!(asked, ordered);
    }
}
