//! The model checker's world (issue 24, `MODEL.md`): the crate's real `Agent`, `Server` (over
//! the in-memory store, one or two instances) and `Linker`s, attackers, a cloud network that an
//! attacker drops, duplicates, delays and reorders, and time as an action.
//!
//! A state is the sequence of actions taken ([`State::log`]), replayed deterministically from a
//! fixed seed: no crate type needs `Hash` or `Eq`, and an in-flight server operation (a future
//! parked between two store calls) is part of the state. States are told apart by a fingerprint
//! of everything observable that can influence a later step (each party's state, the store's
//! records, the messages in flight, the attackers' knowledge and the property bookkeeping), so
//! interleavings that reach the same protocol state are explored once.
#![allow(dead_code)]

#[path = "../support/gated.rs"]
mod gated;
use gated::{Gate, Gated, YieldOnce};

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lanlink::agent::{Agent, AgentConfig, AgentStatus, AgentTransmit, SecretRequest};
use lanlink::confirm::{ConfirmNonce, Confirmation, Decision, DisplayName};
use lanlink::event::{AgentEvent, RequestKind, ServerEvent, StopReason};
use lanlink::linker::{FetchFailure, Linker, LinkerConfig, LinkerTransmit};
use lanlink::secret::PresenceKey;
use lanlink::server::{Events, MemoryStore, Server, ServerConfig, StoreError, User};
use lanlink::wire::{
    AgentMessage, Announce, AnnounceReply, CodeReply, DiscoverReply, HiddenReason, LinkRequest,
    LinkStatusReply, RedeemReply, RedeemRequest,
};
use lanlink::{
    AccountId, DeviceInfo, ForwardedHeaders, InstanceId, LinkCode, LocalSecret, PublicNetwork,
    Refusal,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use stateright::{Checker, Model, Property};

/// The seed every random draw derives from.
pub const SEED: u64 = 24;
/// The home LAN's public address (the neighbour shares it: same public network).
pub const HOME: &str = "203.0.113.7";
const AGENT_IP: &str = "192.168.1.50";
const PORT: u16 = 8080;

// ---------------------------------------------------------------------------------------------
// Scenarios

/// One bounded configuration of the world: which parties exist, what the attackers may do, and
/// the bounds.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name (in figures and stories).
    pub name: &'static str,
    /// The device's confirmation policy.
    pub policy: Confirmation,
    /// Linkers on the home LAN: (account, display name). The first is the owner's.
    pub linkers: Vec<(&'static str, &'static str)>,
    /// What a neighbour on the same public network (another LAN behind the same NAT) does, in
    /// this order (it may stop at any point; its steps interleave with everyone else's in every
    /// way). Empty: no neighbour.
    pub neighbour: Vec<Act>,
    /// A LAN attacker on the home LAN during the window (fetches the secret, links as "Alice").
    pub mallory: bool,
    /// A page on a foreign origin in a browser on the home LAN (DNS rebinding).
    pub rebinder: bool,
    /// The owner links with a manual code instead of auto-discovery.
    pub manual: bool,
    /// Server instances sharing one store: with 2, each store call is a step of its own.
    pub instances: u8,
    /// How many messages the network attacker may drop or duplicate.
    pub faults: u8,
    /// How many times time may advance (`None`: whenever a party waits for a timer).
    pub ticks: Option<u8>,
    /// The network's guessing threshold.
    pub threshold: u32,
    /// The search depth (actions).
    pub depth: usize,
    /// A fair, prompt network: time passes only when no message is in flight.
    pub prompt: bool,
}

impl Scenario {
    fn base(name: &'static str) -> Self {
        Self {
            name,
            policy: Confirmation::None,
            linkers: vec![("alice", "Alice")],
            neighbour: Vec::new(),
            mallory: false,
            rebinder: false,
            manual: false,
            instances: 1,
            faults: 0,
            ticks: Some(2),
            threshold: 2,
            depth: 14,
            prompt: false,
        }
    }

    /// The owner and a second account link the same device at the same time, over a network
    /// that drops or duplicates one message and delays the rest.
    pub fn race() -> Self {
        Self {
            linkers: vec![("alice", "Alice"), ("bob", "Bob")],
            faults: 1,
            ticks: Some(1),
            depth: 13,
            ..Self::base("race")
        }
    }

    /// A neighbour on the same public network races the owner: discovers, guesses secrets and
    /// codes until locked out, shows a device of its own, mints a code.
    pub fn neighbour() -> Self {
        Self {
            neighbour: vec![
                Act::NeighbourDiscover,
                Act::NeighbourGuessSecret,
                Act::NeighbourGuessCode,
                Act::NeighbourGuessSecret,
                Act::NeighbourAnnounce,
                Act::NeighbourDiscover,
                Act::NeighbourMint,
            ],
            ticks: Some(1),
            depth: 10,
            ..Self::base("neighbour")
        }
    }

    /// Two server instances share one store, every store call a step: the neighbour's guesses
    /// race each other across the instances.
    pub fn instances() -> Self {
        Self {
            linkers: vec![],
            neighbour: vec![
                Act::NeighbourGuessSecret,
                Act::NeighbourGuessCode,
                Act::NeighbourGuessSecret,
            ],
            instances: 2,
            ticks: Some(0),
            depth: 32,
            ..Self::base("instances")
        }
    }

    /// Two accounts link the same device at the same time through two server instances that
    /// share one store, every store call a step.
    pub fn instances_race() -> Self {
        Self {
            linkers: vec![("alice", "Alice"), ("bob", "Bob")],
            instances: 2,
            ticks: Some(1),
            depth: 30,
            ..Self::base("instances_race")
        }
    }

    /// A LAN attacker during the window (the documented exposure) against a device that asks
    /// its owner to compare short codes, and a rebinding page.
    pub fn window() -> Self {
        Self {
            policy: Confirmation::Compare,
            mallory: true,
            rebinder: true,
            ticks: Some(1),
            depth: 16,
            ..Self::base("window")
        }
    }

    /// The owner links with a manual code; the reply to the device is lost and it retries; the
    /// neighbour replays the code once used.
    pub fn code() -> Self {
        Self {
            linkers: vec![],
            manual: true,
            neighbour: vec![Act::NeighbourReplayCode],
            faults: 1,
            ticks: Some(2),
            depth: 10,
            ..Self::base("code")
        }
    }

    /// A fair network (nothing lost), time free to run: every attempt must end in one outcome.
    pub fn fair() -> Self {
        Self {
            policy: Confirmation::Approve,
            ticks: None,
            prompt: true,
            depth: 60,
            ..Self::base("fair")
        }
    }

    /// Every scenario at its CI bounds.
    pub fn all() -> Vec<Self> {
        vec![
            Self::race(),
            Self::neighbour(),
            Self::instances(),
            Self::instances_race(),
            Self::window(),
            Self::code(),
            Self::fair(),
        ]
    }

    /// The same scenario with every depth cut to `depth` at most (a smoke run).
    pub fn smoke(mut self, depth: usize) -> Self {
        self.depth = self.depth.min(depth);
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Actions and parties

/// A party of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// The device's agent.
    Agent,
    /// A linker on the home LAN (its index in [`Scenario::linkers`]).
    Linker(u8),
    /// The neighbour (account "nina"), on another LAN behind the same public address.
    Neighbour,
    /// The LAN attacker (account "mallory", display name "Alice").
    Mallory,
    /// A page from a foreign origin in a browser on the home LAN.
    Rebinder,
    /// The owner's account page (mints manual codes).
    Owner,
}

/// One step of the world.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Act {
    /// The network delivers request `msg` of the pool to server instance `instance`.
    Deliver { msg: u8, instance: u8 },
    /// In-flight server operation `op` makes its next store call (two instances only).
    Step { op: u8 },
    /// The network delivers reply `msg` of the pool to its party.
    Answer { msg: u8 },
    /// The network attacker drops message `msg` (its sender sees a transport error).
    Lose { msg: u8 },
    /// The network attacker duplicates request `msg`.
    Duplicate { msg: u8 },
    /// Time advances to the next timer of any party.
    Tick,
    /// The neighbour asks for agents.
    NeighbourDiscover,
    /// The neighbour sends a link request for the device with a guessed secret.
    NeighbourGuessSecret,
    /// The neighbour's fake device redeems a guessed code.
    NeighbourGuessCode,
    /// The neighbour's fake device announces on the same public network.
    NeighbourAnnounce,
    /// The neighbour mints a manual code for its own account.
    NeighbourMint,
    /// The neighbour's fake device replays the code the owner's device sent (once used, a code
    /// is treated as public).
    NeighbourReplayCode,
    /// The LAN attacker asks the agent's local endpoint for the secret.
    MalloryFetch,
    /// The LAN attacker links with the secret it fetched.
    MalloryLink,
    /// The rebinding page asks the agent's local endpoint for the secret.
    RebinderFetch,
    /// The owner mints a manual code on the account page.
    OwnerMint,
    /// The owner types the minted code into the device.
    EnterCode,
    /// The owner approves the link on the device (only when it shows "Alice" and, under
    /// `Compare`, the code the owner's page shows).
    Approve,
    /// The owner refuses the link on the device.
    Refuse,
}

// ---------------------------------------------------------------------------------------------
// Property bookkeeping

/// An always-property: its bit in [`View::violated`] and its name.
pub const ALWAYS: [&str; 10] = [
    "linked only to an account that fetched the secret on the LAN or minted the code",
    "one account per instance",
    "a code is redeemed at most once",
    "the secret reaches only the agent and its LAN callers",
    "the one-visible rule",
    "nothing redeems without approval",
    "short codes are bound to one session",
    "checked wrong guesses stay within the budget window's threshold",
    "finished parties agree on the outcome",
    "the server accepts a link only for an account that fetched the secret on the LAN",
];
/// A sometimes-property (reachability): its bit in [`View::reached`] and its name.
pub const SOMETIMES: [&str; 6] = [
    "a link completes",
    "a lockout happens",
    "a reissue after a lost reply happens",
    "a shared-network downgrade happens",
    "a confirmation is refused",
    "every party ends with one outcome",
];
/// The eventually-property's name.
pub const EVENTUALLY: &str = "every attempt ends in exactly one outcome at all three parties";

/// What a replay leaves behind for the checker.
#[derive(Debug, Default)]
pub struct View {
    /// The actions enabled next.
    pub enabled: Vec<Act>,
    /// Bits of [`ALWAYS`] violated on the way here.
    pub violated: u32,
    /// Bits of [`SOMETIMES`] reached on the way here.
    pub reached: u32,
    /// Every party has finished with one outcome, all agreeing.
    pub settled: bool,
}

/// A state: the actions taken from the start, and what replaying them showed.
#[derive(Debug, Clone)]
pub struct State {
    /// The actions taken.
    pub log: Vec<Act>,
    fingerprint: u64,
    /// What the replay showed.
    pub view: Arc<View>,
}

impl Hash for State {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.fingerprint.hash(state);
    }
}
impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}
impl Eq for State {}

// ---------------------------------------------------------------------------------------------
// The store: the in-memory store, each call a step of its own when instances race

/// The crate's `MemoryStore`, shared by every server instance; with `stepped`, each call first
/// yields once (without waking: the checker polls), so that an operation advances one store call
/// per poll.
pub type ModelStore = Gated<Arc<MemoryStore>, Step>;

/// The gate of [`ModelStore`].
#[derive(Clone, Default)]
pub struct Step {
    stepped: bool,
}

impl Gate for Step {
    fn before(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        let stepped = self.stepped;
        Box::pin(async move {
            if stepped {
                YieldOnce::new(false).await;
            }
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

#[derive(Debug, Clone)]
enum Req {
    Announce(Announce),
    Discover,
    Link(LinkRequest),
    Status(InstanceId),
    Redeem(RedeemRequest),
    Mint,
}

#[derive(Debug, Clone)]
enum Rep {
    Announce(Result<AnnounceReply, Refusal>),
    Discover(Result<DiscoverReply, Refusal>),
    Link(Result<LinkStatusReply, Refusal>),
    Status(Result<LinkStatusReply, Refusal>),
    Redeem(Result<RedeemReply, Refusal>),
    Mint(Result<CodeReply, Refusal>),
}

#[derive(Debug, Clone)]
enum Msg {
    Request { from: Party, seq: u32, req: Req },
    Reply { to: Party, rep: Rep },
}

type OpFuture<'a> = Pin<Box<dyn Future<Output = Rep> + 'a>>;

struct Op<'a> {
    from: Party,
    req: Req,
    started: Duration,
    polls: u32,
    future: OpFuture<'a>,
}

// ---------------------------------------------------------------------------------------------
// The world during one replay

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn wall_epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

fn rng_for(tag: &str, party: Party, n: u32) -> StdRng {
    let mut h = DefaultHasher::new();
    (SEED, tag, party, n).hash(&mut h);
    StdRng::seed_from_u64(h.finish())
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn account(name: &str) -> AccountId {
    AccountId::new(name).unwrap_or_else(|| unreachable!("model accounts are valid"))
}

fn fingerprint_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
    lines.sort();
    lines
}

macro_rules! tell {
    ($w:expr, $($arg:tt)*) => {
        if $w.story.is_some() {
            let line = format!($($arg)*);
            $w.tell(line);
        }
    };
}

struct LinkerSlot {
    linker: Linker,
    user: User,
    ip: IpAddr,
    nonce: Option<ConfirmNonce>,
}

/// The ghost state the properties read.
#[derive(Debug, Default, Hash)]
struct Ghost {
    /// Parties that hold the agent's secret.
    secret_holders: BTreeSet<Party>,
    /// Accounts the server reported linked to the device, with whether by a manual code.
    linked: Vec<(String, bool, bool)>,
    /// Accounts the server reported linked to the neighbour's fake device.
    fake_linked: Vec<String>,
    /// Manual codes minted, by account.
    minted: BTreeMap<String, String>,
    /// The code the device redeems (manual), once typed.
    entered: Option<String>,
    /// Instances each code was redeemed by (successful replies).
    redeemed: BTreeMap<String, BTreeSet<[u8; 16]>>,
    /// Start times (ms) of accepted announces, per instance.
    announced: BTreeMap<[u8; 16], Vec<u64>>,
    /// The owner approved on the device.
    approved: bool,
    /// The nonce of the link the device is asked to confirm.
    confirming_nonce: Option<[u8; 16]>,
    /// Times (ms) of the refusals that counted as failures.
    failures: Vec<u64>,
    violated: u32,
    reached: u32,
    faults_left: u8,
    ticks_left: Option<u8>,
    /// The neighbour's next step in its script.
    neighbour_next: u8,
    mallory_fetched: bool,
    mallory_linked: bool,
    rebinder_fetched: bool,
    owner_minted: bool,
    owner_code: Option<String>,
    sent_code: Option<String>,
    entered_code: bool,
    seqs: BTreeMap<Party, u32>,
}

/// The world mid-replay (without the servers, which the in-flight operations borrow).
pub struct World {
    sc: Scenario,
    elapsed: Duration,
    agent: Agent,
    linkers: Vec<LinkerSlot>,
    pool: Vec<Msg>,
    ghost: Ghost,
    mallory_secret: Option<LocalSecret>,
    mallory_nonce: ConfirmNonce,
    /// The agent's commitment, as it announces it (public).
    commitment: Option<lanlink::Commitment>,
    fake_key: PresenceKey,
    fake_secret: LocalSecret,
    /// The story, when one is told.
    pub story: Option<Vec<String>>,
}

/// The server instances of one replay.
pub struct Servers {
    servers: Vec<Server<ModelStore>>,
    config: ServerConfig,
}

impl Servers {
    /// The instances of `sc` over one fresh store.
    pub fn new(sc: &Scenario) -> Self {
        let config = ServerConfig::default().lockout_threshold(sc.threshold);
        let store = Arc::new(MemoryStore::default());
        let servers = (0..sc.instances.max(1))
            .map(|_| {
                Server::with_store(
                    config.clone(),
                    ModelStore {
                        inner: store.clone(),
                        gate: Step {
                            stepped: sc.instances > 1,
                        },
                    },
                    Events::queue(),
                )
                .unwrap_or_else(|_| unreachable!("the default configuration is valid"))
            })
            .collect();
        Self { servers, config }
    }

    fn store_fingerprint(&self) -> Vec<String> {
        match self.servers.first() {
            Some(server) => fingerprint_lines(&format!("{:#?}", server.store().inner)),
            None => Vec::new(),
        }
    }
}

const BIT_SECRET_HOLDER: u32 = 1 << 0;
const BIT_ONE_ACCOUNT: u32 = 1 << 1;
const BIT_CODE_ONCE: u32 = 1 << 2;
const BIT_SECRET_LAN: u32 = 1 << 3;
const BIT_ONE_VISIBLE: u32 = 1 << 4;
const BIT_APPROVAL: u32 = 1 << 5;
const BIT_SHORT_CODE: u32 = 1 << 6;
const BIT_BUDGET: u32 = 1 << 7;
const BIT_AGREE: u32 = 1 << 8;
const BIT_ACCEPTED: u32 = 1 << 9;

const R_LINKED: u32 = 1 << 0;
const R_LOCKOUT: u32 = 1 << 1;
const R_REISSUE: u32 = 1 << 2;
const R_SHARED: u32 = 1 << 3;
const R_REFUSED_CONFIRM: u32 = 1 << 4;
const R_SETTLED: u32 = 1 << 5;

impl World {
    /// The world of `sc` at time zero.
    pub fn new(sc: &Scenario) -> Self {
        let agent_config = AgentConfig::new(
            ip(AGENT_IP),
            PORT,
            DeviceInfo::new("printer", "model", "lanlink-model", "1").unwrap_or_default(),
        )
        .window(Duration::from_secs(20))
        .redeem_timeout(Duration::from_secs(12))
        .confirm_timeout(Duration::from_secs(10))
        .confirmation(sc.policy);
        let now = epoch();
        let agent = Agent::new(agent_config, now, &mut rng_for("agent", Party::Agent, 0))
            .unwrap_or_else(|_| unreachable!("the model's agent configuration is valid"));
        let linker_config = LinkerConfig {
            give_up_after: Duration::from_secs(30),
            ..LinkerConfig::default()
        };
        let linkers = sc
            .linkers
            .iter()
            .enumerate()
            .map(|(i, (name, display))| {
                let party = Party::Linker(i as u8);
                let linker =
                    Linker::new(linker_config.clone(), now, &mut rng_for("linker", party, 0));
                let nonce = linker.nonce();
                LinkerSlot {
                    linker,
                    user: User::named(account(name), DisplayName::new(*display)),
                    ip: ip(&format!("192.168.1.{}", 20 + i)),
                    nonce,
                }
            })
            .collect();
        let mut r = rng_for("attackers", Party::Mallory, 0);
        let mut fake = [0u8; 32];
        r.fill_bytes(&mut fake);
        let mut fake_secret = [0u8; 32];
        r.fill_bytes(&mut fake_secret);
        Self {
            elapsed: Duration::ZERO,
            agent,
            linkers,
            pool: Vec::new(),
            ghost: Ghost {
                faults_left: sc.faults,
                ticks_left: sc.ticks,
                ..Ghost::default()
            },
            mallory_secret: None,
            commitment: None,
            mallory_nonce: ConfirmNonce::generate(&mut r),
            fake_key: PresenceKey::from_bytes(fake),
            fake_secret: LocalSecret::from_bytes(fake_secret),
            story: None,
            sc: sc.clone(),
        }
    }

    fn now(&self) -> Instant {
        epoch() + self.elapsed
    }

    fn wall(&self) -> DateTime<Utc> {
        wall_epoch() + chrono::TimeDelta::from_std(self.elapsed).unwrap_or_default()
    }

    fn ms(&self) -> u64 {
        self.elapsed.as_millis() as u64
    }

    fn tell(&mut self, line: String) {
        let t = self.elapsed.as_secs_f32();
        if let Some(story) = &mut self.story {
            story.push(format!("[t={t:>4.1}s] {line}"));
        }
    }

    fn party_name(&self, party: Party) -> String {
        match party {
            Party::Agent => "the device".into(),
            Party::Linker(i) => format!(
                "{}'s linker",
                self.linkers[i as usize].user.account.as_str()
            ),
            Party::Neighbour => "the neighbour (nina)".into(),
            Party::Mallory => "the LAN attacker (mallory)".into(),
            Party::Rebinder => "the rebinding page".into(),
            Party::Owner => "alice's account page".into(),
        }
    }

    fn account_of(&self, party: Party) -> Option<AccountId> {
        match party {
            Party::Linker(i) => Some(self.linkers[i as usize].user.account.clone()),
            Party::Neighbour => Some(account("nina")),
            Party::Mallory => Some(account("mallory")),
            Party::Owner => Some(account("alice")),
            Party::Agent | Party::Rebinder => None,
        }
    }

    fn user_of(&self, party: Party) -> Option<User> {
        match party {
            Party::Linker(i) => Some(self.linkers[i as usize].user.clone()),
            Party::Mallory => Some(User::named(account("mallory"), DisplayName::new("Alice"))),
            Party::Neighbour => Some(User::named(account("nina"), DisplayName::new("Nina"))),
            Party::Owner => Some(User::named(account("alice"), DisplayName::new("Alice"))),
            Party::Agent | Party::Rebinder => None,
        }
    }

    fn next_seq(&mut self, party: Party) -> u32 {
        let seq = self.ghost.seqs.entry(party).or_default();
        *seq += 1;
        *seq
    }

    fn send(&mut self, from: Party, req: Req) {
        let seq = self.next_seq(from);
        let what = describe_req(&req);
        let who = self.party_name(from);
        tell!(self, "{who} sends {what}");
        self.pool.push(Msg::Request { from, seq, req });
    }

    /// Drains every party's transmits: cloud requests go into the pool, secret fetches go over
    /// the LAN at once.
    fn settle(&mut self) {
        let now = self.now();
        for _ in 0..64 {
            let mut moved = false;
            if let Some(t) = self.agent.poll_transmit(now) {
                moved = true;
                match t {
                    AgentTransmit::Announce(a) => {
                        self.commitment = Some(a.commitment);
                        self.send(Party::Agent, Req::Announce(a))
                    }
                    AgentTransmit::Redeem(r) => {
                        self.ghost.sent_code = Some(r.code.expose().to_owned());
                        self.send(Party::Agent, Req::Redeem(r))
                    }
                    _ => {}
                }
            }
            for i in 0..self.linkers.len() {
                let Some(t) = self.linkers[i].linker.poll_transmit(now) else {
                    continue;
                };
                moved = true;
                let party = Party::Linker(i as u8);
                match t {
                    LinkerTransmit::Discover => self.send(party, Req::Discover),
                    LinkerTransmit::Link(r) => self.send(party, Req::Link(r)),
                    LinkerTransmit::LinkStatus { instance_id, .. } => {
                        self.send(party, Req::Status(instance_id))
                    }
                    LinkerTransmit::FetchSecret {
                        agent,
                        instance_id,
                        fetch,
                    } => {
                        let peer = self.linkers[i].ip;
                        let reply = self.lan_fetch(party, peer, agent, &instance_id, None);
                        let _ = self.linkers[i]
                            .linker
                            .handle_secret_reply(now, fetch, reply);
                    }
                    _ => {}
                }
            }
            if !moved {
                break;
            }
        }
        self.observe();
    }

    /// A request to the agent's local endpoint from `peer` on the home LAN.
    fn lan_fetch(
        &mut self,
        party: Party,
        peer: IpAddr,
        endpoint: SocketAddr,
        instance_id: &InstanceId,
        origin: Option<&str>,
    ) -> Result<lanlink::wire::SecretReply, FetchFailure> {
        if !self.agent.endpoints().contains(&endpoint) && party != Party::Rebinder {
            return Err(FetchFailure::Unreachable);
        }
        let host = if party == Party::Rebinder {
            "evil.example:8080".to_owned()
        } else {
            endpoint.to_string()
        };
        let instance = instance_id.to_string();
        let request = SecretRequest {
            peer,
            forwarded: ForwardedHeaders::NONE,
            host: Some(&host),
            origin,
            instance_id: &instance,
        };
        let now = self.now();
        let reply = self.agent.handle_secret_request(now, &request);
        let who = self.party_name(party);
        match &reply {
            Ok(_) => {
                tell!(self, "{who} fetches the secret over the LAN: served");
                self.ghost.secret_holders.insert(party);
                if party == Party::Rebinder {
                    self.ghost.violated |= BIT_SECRET_LAN;
                }
            }
            Err(refusal) => tell!(self, "{who} asks the agent for its secret: {refusal}"),
        }
        reply.map_err(|refusal| FetchFailure::Refused(refusal.code()))
    }

    /// Reads the parties' events into the ghost state and checks the state properties.
    fn observe(&mut self) {
        while let Some(event) = self.agent.poll_event() {
            match &event {
                AgentEvent::RedeemStarted { manual: false }
                    if self.sc.policy.requires_decision() && !self.ghost.approved =>
                {
                    self.ghost.violated |= BIT_APPROVAL;
                }
                AgentEvent::Stopped {
                    reason: StopReason::ConfirmationRefused,
                } => self.ghost.reached |= R_REFUSED_CONFIRM,
                _ => {}
            }
            tell!(self, "the device: {event:?}");
        }
        for i in 0..self.linkers.len() {
            while let Some(event) = self.linkers[i].linker.poll_event() {
                let who = self.party_name(Party::Linker(i as u8));
                tell!(self, "{who}: {event:?}");
            }
        }
        // Short codes: the code the device shows names the session it confirms. A linker of
        // another session (another nonce) shows, or would show for the same account name, a
        // different code (computed with the crate's own `short_code`).
        if let Some(pending) = self.agent.pending_confirmation() {
            if let (Some(shown), Some(commitment)) = (pending.short_code, &self.commitment) {
                let id = self.agent.instance_id();
                for slot in &self.linkers {
                    let Some(nonce) = slot.nonce else { continue };
                    if Some(*nonce.as_bytes()) == self.ghost.confirming_nonce {
                        continue;
                    }
                    let theirs = slot.linker.short_code().or_else(|| {
                        Some(lanlink::confirm::short_code(
                            &id,
                            commitment,
                            &pending.display_name,
                            &nonce,
                        ))
                    });
                    if theirs == Some(shown) {
                        self.ghost.violated |= BIT_SHORT_CODE;
                    }
                }
            }
        }
        // Outcomes: once every party has finished, they agree.
        let agent_done = matches!(
            self.agent.status(),
            AgentStatus::Linked | AgentStatus::Stopped(_)
        );
        let linkers_done = self.linkers.iter().all(|l| l.linker.is_finished());
        if agent_done && linkers_done && self.pool.is_empty() {
            let agent_linked = self.agent.status() == AgentStatus::Linked;
            let server_linked: BTreeSet<&str> = self
                .ghost
                .linked
                .iter()
                .map(|(a, _, _)| a.as_str())
                .collect();
            let mut agree = agent_linked != server_linked.is_empty();
            for slot in &self.linkers {
                let linked = slot.linker.linked() == Some(self.agent.instance_id());
                agree &= linked == server_linked.contains(slot.user.account.as_str());
            }
            if agree {
                self.ghost.reached |= R_SETTLED;
            } else {
                self.ghost.violated |= BIT_AGREE;
            }
        }
    }

    fn server_events(&mut self, server: &Server<ModelStore>) {
        let agent_id = self.agent.instance_id();
        let fake_id = self.fake_key.instance_id();
        while let Some(event) = server.poll_event() {
            match &event {
                ServerEvent::Linked {
                    instance_id,
                    account,
                    manual,
                    reissued,
                    ..
                } => {
                    self.ghost.reached |= R_LINKED;
                    if *reissued {
                        self.ghost.reached |= R_REISSUE;
                    }
                    if *instance_id == agent_id {
                        let name = account.as_str().to_owned();
                        // Linked only to an account that fetched the secret over the LAN, or
                        // that minted the code the device redeemed.
                        let allowed = if *manual {
                            self.ghost
                                .entered
                                .as_ref()
                                .is_some_and(|code| self.ghost.minted.get(code) == Some(&name))
                        } else {
                            self.ghost
                                .secret_holders
                                .iter()
                                .any(|p| self.account_of(*p).is_some_and(|a| a.as_str() == name))
                        };
                        if !allowed {
                            self.ghost.violated |= BIT_SECRET_HOLDER;
                        }
                        self.ghost.linked.push((name, *manual, *reissued));
                        let accounts: BTreeSet<&str> = self
                            .ghost
                            .linked
                            .iter()
                            .map(|(a, _, _)| a.as_str())
                            .collect();
                        if accounts.len() > 1 {
                            self.ghost.violated |= BIT_ONE_ACCOUNT;
                        }
                    } else if *instance_id == fake_id {
                        self.ghost.fake_linked.push(account.as_str().to_owned());
                    }
                }
                ServerEvent::LinkAccepted {
                    instance_id,
                    account,
                    ..
                } if *instance_id == agent_id => {
                    let holder = self.ghost.secret_holders.iter().any(|p| {
                        self.account_of(*p)
                            .is_some_and(|a| a.as_str() == account.as_str())
                    });
                    if !holder {
                        self.ghost.violated |= BIT_ACCEPTED;
                    }
                }
                ServerEvent::LockedOut { .. } => self.ghost.reached |= R_LOCKOUT,
                ServerEvent::NetworkJudgedShared { .. } => self.ghost.reached |= R_SHARED,
                ServerEvent::Refused { reason, .. } if reason.counts_as_failure() => {
                    let now = self.ms();
                    self.ghost.failures.push(now);
                    let window = 600_000;
                    let recent = self
                        .ghost
                        .failures
                        .iter()
                        .filter(|t| now.saturating_sub(**t) < window)
                        .count();
                    if recent > self.sc.threshold as usize {
                        self.ghost.violated |= BIT_BUDGET;
                    }
                }
                _ => {}
            }
            tell!(self, "  server: {event:?}");
        }
    }

    /// An operation finished with `rep`: bookkeeping, then the reply goes into the pool.
    fn finished(&mut self, from: Party, req: &Req, started: Duration, rep: Rep) {
        match (req, &rep) {
            (Req::Announce(a), Rep::Announce(Ok(_))) => {
                self.ghost
                    .announced
                    .entry(*a.instance_id.as_bytes())
                    .or_default()
                    .push(started.as_millis() as u64);
            }
            (Req::Discover, Rep::Discover(Ok(reply))) => {
                if reply.hidden.as_ref().map(|h| h.reason) == Some(HiddenReason::SharedNetwork) {
                    self.ghost.reached |= R_SHARED;
                }
                // The one-visible rule: nothing shown while more than one agent is present.
                let at = started.as_millis() as u64;
                let ttl = 6_000;
                let present = self
                    .ghost
                    .announced
                    .values()
                    .filter(|times| times.iter().any(|t| *t <= at && at < t + ttl))
                    .count();
                if !reply.agents.is_empty() && present > 1 {
                    self.ghost.violated |= BIT_ONE_VISIBLE;
                }
            }
            (Req::Redeem(r), Rep::Redeem(Ok(_))) => {
                let set = self
                    .ghost
                    .redeemed
                    .entry(r.code.expose().to_owned())
                    .or_default();
                set.insert(*r.instance_id.as_bytes());
                if set.len() > 1 {
                    self.ghost.violated |= BIT_CODE_ONCE;
                }
            }
            (Req::Mint, Rep::Mint(Ok(reply))) => {
                let code = reply.code.expose().to_owned();
                if let Some(name) = self.account_of(from) {
                    self.ghost
                        .minted
                        .insert(code.clone(), name.as_str().to_owned());
                }
                if from == Party::Owner {
                    self.ghost.owner_code = Some(code);
                }
            }
            _ => {}
        }
        let who = self.party_name(from);
        let what = describe_rep(&rep);
        tell!(self, "  the server answers {who}: {what}");
        self.pool.push(Msg::Reply { to: from, rep });
    }

    fn answer(&mut self, to: Party, rep: Rep) {
        let now = self.now();
        let who = self.party_name(to);
        let what = describe_rep(&rep);
        tell!(self, "{who} receives {what}");
        match (to, rep) {
            (Party::Agent, Rep::Announce(Ok(reply))) => {
                for m in &reply.messages {
                    if let AgentMessage::VerifyAndRedeem { nonce, .. } = m {
                        if self.agent.is_discovering() {
                            self.ghost.confirming_nonce = nonce.map(|n| *n.as_bytes());
                        }
                    }
                }
                self.agent.handle_announce_reply(now, reply);
            }
            (Party::Agent, Rep::Announce(Err(refusal))) => {
                self.agent.handle_announce_refused(now, refusal.code())
            }
            (Party::Agent, Rep::Redeem(reply)) => {
                let _ = self
                    .agent
                    .handle_redeem_reply(now, reply.map_err(|r| r.code()));
            }
            (Party::Linker(i), rep) => {
                let linker = &mut self.linkers[i as usize].linker;
                let _ = match rep {
                    Rep::Discover(r) => linker.handle_discover_reply(now, r.map_err(|e| e.code())),
                    Rep::Link(r) => linker.handle_link_reply(now, r.map_err(|e| e.code())),
                    Rep::Status(r) => linker.handle_link_status(now, r.map_err(|e| e.code())),
                    _ => Ok(()),
                };
            }
            (Party::Owner, _) | (Party::Neighbour, _) | (Party::Mallory, _) => {}
            _ => {}
        }
    }

    fn lost(&mut self, msg: Msg) {
        let now = self.now();
        let (party, what) = match &msg {
            Msg::Request { from, req, .. } => (*from, describe_req(req)),
            Msg::Reply { to, rep } => (*to, describe_rep(rep)),
        };
        let who = self.party_name(party);
        tell!(self, "the network attacker drops {what} ({who}'s)");
        let is_announce = matches!(
            &msg,
            Msg::Request {
                req: Req::Announce(_),
                ..
            } | Msg::Reply {
                rep: Rep::Announce(_),
                ..
            }
        );
        match party {
            Party::Agent if !is_announce => {
                let _ = self.agent.handle_redeem_failed(now);
            }
            Party::Linker(i) => self.linkers[i as usize].linker.handle_transport_error(now),
            _ => {}
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let agent = self.agent.poll_timeout();
        let linkers = self.linkers.iter().filter_map(|l| l.linker.poll_timeout());
        agent.into_iter().chain(linkers).min()
    }

    /// The actions enabled now.
    fn enabled(&self, ops: usize) -> Vec<Act> {
        let mut acts = Vec::new();
        let g = &self.ghost;
        for (i, m) in self.pool.iter().enumerate() {
            let msg = i as u8;
            match m {
                Msg::Request { .. } => {
                    for instance in 0..self.sc.instances.max(1) {
                        acts.push(Act::Deliver { msg, instance });
                    }
                    if g.faults_left > 0 {
                        acts.push(Act::Duplicate { msg });
                    }
                }
                Msg::Reply { .. } => acts.push(Act::Answer { msg }),
            }
            if g.faults_left > 0 {
                acts.push(Act::Lose { msg });
            }
        }
        for op in 0..ops {
            acts.push(Act::Step { op: op as u8 });
        }
        let idle = self.pool.is_empty() && ops == 0;
        if g.ticks_left != Some(0) && self.next_wakeup().is_some() && (idle || !self.sc.prompt) {
            acts.push(Act::Tick);
        }
        if let Some(next) = self.sc.neighbour.get(usize::from(g.neighbour_next)) {
            // A code is replayed once the device sent one.
            if *next != Act::NeighbourReplayCode || g.sent_code.is_some() {
                acts.push(next.clone());
            }
        }
        if self.sc.mallory {
            if !g.mallory_fetched {
                acts.push(Act::MalloryFetch);
            }
            if self.mallory_secret.is_some() && !g.mallory_linked {
                acts.push(Act::MalloryLink);
            }
        }
        if self.sc.rebinder && !g.rebinder_fetched {
            acts.push(Act::RebinderFetch);
        }
        if self.sc.manual {
            if !g.owner_minted {
                acts.push(Act::OwnerMint);
            }
            if g.owner_code.is_some() && !g.entered_code {
                acts.push(Act::EnterCode);
            }
        }
        if let Some(pending) = self.agent.pending_confirmation() {
            let owner_code = self.linkers.first().and_then(|l| l.linker.short_code());
            let looks_right = pending.display_name.as_str() == "Alice"
                && (!self.sc.policy.shows_short_code()
                    || (pending.short_code.is_some() && pending.short_code == owner_code));
            if looks_right {
                acts.push(Act::Approve);
            }
            acts.push(Act::Refuse);
        }
        acts
    }

    fn fingerprint(&self, servers: &Servers, ops: &[Op<'_>]) -> u64 {
        let mut h = DefaultHasher::new();
        self.elapsed.hash(&mut h);
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}",
            self.agent.status(),
            self.agent.poll_timeout(),
            self.agent.pending_confirmation(),
            self.agent.visibility(),
            self.agent.auth_token().is_some()
        )
        .hash(&mut h);
        for slot in &self.linkers {
            format!("{:?}", slot.linker).hash(&mut h);
        }
        format!("{:?}", self.pool).hash(&mut h);
        for op in ops {
            format!("{:?}{:?}{:?}{}", op.from, op.req, op.started, op.polls).hash(&mut h);
        }
        servers.store_fingerprint().hash(&mut h);
        self.ghost.hash(&mut h);
        self.mallory_secret.is_some().hash(&mut h);
        h.finish()
    }
}

fn describe_req(req: &Req) -> String {
    match req {
        Req::Announce(_) => "an announcement".into(),
        Req::Discover => "a discovery request".into(),
        Req::Link(r) => format!("a link request for {}", short_id(&r.instance_id)),
        Req::Status(_) => "a link-status request".into(),
        Req::Redeem(r) => format!(
            "a redemption of code {} (attempt {})",
            r.code.expose(),
            r.attempt
        ),
        Req::Mint => "a request to mint a code".into(),
    }
}

fn describe_rep(rep: &Rep) -> String {
    fn res<T>(r: &Result<T, Refusal>, ok: impl Fn(&T) -> String) -> String {
        match r {
            Ok(v) => ok(v),
            Err(refusal) => format!("refused: {refusal}"),
        }
    }
    match rep {
        Rep::Announce(r) => res(r, |a| {
            if a.messages.is_empty() {
                "announce ok".into()
            } else {
                "announce ok, with a verify_and_redeem message".into()
            }
        }),
        Rep::Discover(r) => res(r, |d| {
            format!(
                "discovery: {} agent(s) shown{}",
                d.agents.len(),
                d.hidden
                    .as_ref()
                    .map(|h| format!(", hidden: {}", h.reason.code()))
                    .unwrap_or_default()
            )
        }),
        Rep::Link(r) => res(r, |s| format!("link accepted ({:?})", s.state)),
        Rep::Status(r) => res(r, |s| format!("link status {:?}", s.state)),
        Rep::Redeem(r) => res(r, |_| "a token (linked)".into()),
        Rep::Mint(r) => res(r, |c| format!("code {}", c.code.expose())),
    }
}

fn short_id(id: &InstanceId) -> String {
    id.to_string().chars().take(8).collect()
}

fn start_op<'a>(
    server: &'a Server<ModelStore>,
    wall: DateTime<Utc>,
    network: PublicNetwork,
    user: Option<User>,
    req: Req,
    mut rng: StdRng,
) -> OpFuture<'a> {
    Box::pin(async move {
        let user = user.unwrap_or_else(|| User::new(account("nobody")));
        match req {
            Req::Announce(a) => Rep::Announce(server.announce(wall, network, &a).await),
            Req::Discover => Rep::Discover(server.discover(wall, network, &user).await),
            Req::Link(r) => Rep::Link(server.link(wall, &mut rng, network, &user, r).await),
            Req::Status(id) => {
                Rep::Status(server.link_status(wall, network, &user.account, &id).await)
            }
            Req::Redeem(r) => Rep::Redeem(
                server
                    .redeem(wall, &mut rng, network, &r)
                    .await
                    .map(|redeemed| redeemed.reply),
            ),
            Req::Mint => Rep::Mint(server.mint_code(wall, &mut rng, &user.account).await),
        }
    })
}

fn kind_of(req: &Req) -> RequestKind {
    match req {
        Req::Announce(_) => RequestKind::Announce,
        Req::Discover => RequestKind::Discover,
        Req::Link(_) => RequestKind::Link,
        Req::Status(_) => RequestKind::LinkStatus,
        Req::Redeem(_) => RequestKind::Redeem,
        Req::Mint => RequestKind::Discover,
    }
}

/// The result of replaying a log.
pub struct Replayed {
    /// What the checker reads.
    pub view: View,
    /// The fingerprint.
    pub fingerprint: u64,
    /// The story, if asked for.
    pub story: Vec<String>,
}

/// Replays `log` in `sc` from the start; tells the story when `tell`, and then skips (and says
/// so) an action that is not enabled where it comes (the real code refusing a mutant's story).
pub fn replay(sc: &Scenario, log: &[Act], tell: bool) -> Replayed {
    let servers = Servers::new(sc);
    let mut w = World::new(sc);
    if tell {
        w.story = Some(vec![format!(
            "scenario {}: {} instance(s), policy {:?}",
            sc.name, sc.instances, sc.policy
        )]);
    }
    let mut ops: Vec<Op<'_>> = Vec::new();
    w.settle();
    for act in log {
        if tell && !w.enabled(ops.len()).contains(act) {
            tell!(w, "(not possible here, skipped: {act:?})");
            continue;
        }
        apply(&servers, &mut w, &mut ops, act);
        w.settle();
    }
    let fingerprint = w.fingerprint(&servers, &ops);
    let view = View {
        enabled: w.enabled(ops.len()),
        violated: w.ghost.violated,
        reached: w.ghost.reached,
        settled: w.ghost.reached & R_SETTLED != 0,
    };
    Replayed {
        view,
        fingerprint,
        story: w.story.take().unwrap_or_default(),
    }
}

fn poll_op(op: &mut Op<'_>) -> Option<Rep> {
    op.polls += 1;
    let waker = std::task::Waker::noop();
    match op.future.as_mut().poll(&mut Context::from_waker(waker)) {
        Poll::Ready(rep) => Some(rep),
        Poll::Pending => None,
    }
}

fn apply<'a>(servers: &'a Servers, w: &mut World, ops: &mut Vec<Op<'a>>, act: &Act) {
    let now = w.now();
    match act {
        Act::Deliver { msg, instance } => {
            let Msg::Request { from, seq, req } = w.pool.remove(*msg as usize) else {
                return;
            };
            let server = &servers.servers[*instance as usize];
            let peer = ip(HOME);
            let who = w.party_name(from);
            let what = describe_req(&req);
            let to = if servers.servers.len() > 1 {
                format!("server instance {instance}")
            } else {
                "the server".into()
            };
            let what = what
                .strip_prefix("an ")
                .or_else(|| what.strip_prefix("a "))
                .unwrap_or(&what);
            tell!(w, "the network delivers {who}'s {what} to {to}");
            let network = match server.caller(kind_of(&req), peer, ForwardedHeaders::NONE) {
                Ok(n) => n,
                Err(refusal) => {
                    w.finished(from, &req, w.elapsed, Rep::Discover(Err(refusal)));
                    return;
                }
            };
            let future = start_op(
                server,
                w.wall(),
                network,
                w.user_of(from),
                req.clone(),
                rng_for("op", from, seq),
            );
            let mut op = Op {
                from,
                req,
                started: w.elapsed,
                polls: 0,
                future,
            };
            if servers.servers.len() > 1 {
                // Runs to its first store call; each later store call is a step.
                match poll_op(&mut op) {
                    Some(rep) => {
                        w.server_events(server);
                        w.finished(op.from, &op.req, op.started, rep);
                    }
                    None => ops.push(op),
                }
            } else {
                let rep = loop {
                    if let Some(rep) = poll_op(&mut op) {
                        break rep;
                    }
                };
                w.server_events(server);
                w.finished(op.from, &op.req, op.started, rep);
            }
        }
        Act::Step { op } => {
            let index = *op as usize;
            let who = w.party_name(ops[index].from);
            let what = describe_req(&ops[index].req);
            tell!(
                w,
                "  a server instance makes the next store call for {who}'s {what}"
            );
            if let Some(rep) = poll_op(&mut ops[index]) {
                let op = ops.remove(index);
                for server in &servers.servers {
                    w.server_events(server);
                }
                w.finished(op.from, &op.req, op.started, rep);
            } else {
                for server in &servers.servers {
                    w.server_events(server);
                }
            }
        }
        Act::Answer { msg } => {
            if let Msg::Reply { to, rep } = w.pool.remove(*msg as usize) {
                w.answer(to, rep);
            }
        }
        Act::Lose { msg } => {
            w.ghost.faults_left -= 1;
            let m = w.pool.remove(*msg as usize);
            w.lost(m);
        }
        Act::Duplicate { msg } => {
            w.ghost.faults_left -= 1;
            let m = w.pool[*msg as usize].clone();
            if let Msg::Request { req, from, .. } = &m {
                let who = w.party_name(*from);
                let what = describe_req(req);
                tell!(w, "the network attacker duplicates {who}'s {what}");
            }
            w.pool.push(m);
        }
        Act::Tick => {
            if let Some(t) = w.ghost.ticks_left.as_mut() {
                *t -= 1;
            }
            if let Some(next) = w.next_wakeup() {
                let gap = next.saturating_duration_since(now);
                w.elapsed += gap.max(Duration::from_millis(1));
            }
            let now = w.now();
            tell!(w, "time passes to the next timer");
            w.agent.handle_timeout(now);
            for slot in &mut w.linkers {
                slot.linker.handle_timeout(now);
            }
        }
        Act::NeighbourDiscover => {
            w.ghost.neighbour_next += 1;
            w.send(Party::Neighbour, Req::Discover);
        }
        Act::NeighbourGuessSecret => {
            w.ghost.neighbour_next += 1;
            let n = w.next_seq(Party::Neighbour);
            let mut bytes = [0u8; 32];
            rng_for("guess", Party::Neighbour, n).fill_bytes(&mut bytes);
            let request = LinkRequest::new(w.agent.instance_id(), LocalSecret::from_bytes(bytes));
            w.send(Party::Neighbour, Req::Link(request));
        }
        Act::NeighbourGuessCode => {
            w.ghost.neighbour_next += 1;
            let n = w.next_seq(Party::Neighbour);
            let guess = 100_000 + rng_for("code", Party::Neighbour, n).next_u32() % 900_000;
            let code =
                LinkCode::parse(&guess.to_string()).unwrap_or_else(|| unreachable!("six digits"));
            let request = RedeemRequest::new(w.fake_key.instance_id(), code)
                .with_presence_key(w.fake_key.clone())
                .with_attempt(1);
            w.send(Party::Neighbour, Req::Redeem(request));
        }
        Act::NeighbourAnnounce => {
            w.ghost.neighbour_next += 1;
            let id = w.fake_key.instance_id();
            let announce = Announce::new(
                id,
                ip("192.168.7.9"),
                PORT,
                DeviceInfo::default(),
                w.fake_secret.commitment(&id),
                w.fake_key.clone(),
            );
            w.send(Party::Neighbour, Req::Announce(announce));
        }
        Act::NeighbourMint => {
            w.ghost.neighbour_next += 1;
            w.send(Party::Neighbour, Req::Mint);
        }
        Act::NeighbourReplayCode => {
            w.ghost.neighbour_next += 1;
            if let Some(code) = w.ghost.sent_code.clone().and_then(|c| LinkCode::parse(&c)) {
                let request = RedeemRequest::new(w.fake_key.instance_id(), code)
                    .with_presence_key(w.fake_key.clone())
                    .with_attempt(1);
                w.send(Party::Neighbour, Req::Redeem(request));
            }
        }
        Act::MalloryFetch => {
            w.ghost.mallory_fetched = true;
            let endpoint = SocketAddr::new(ip(AGENT_IP), PORT);
            let id = w.agent.instance_id();
            if let Ok(reply) = w.lan_fetch(Party::Mallory, ip("192.168.1.66"), endpoint, &id, None)
            {
                w.mallory_secret = Some(reply.local_secret);
            }
        }
        Act::MalloryLink => {
            w.ghost.mallory_linked = true;
            if let Some(secret) = w.mallory_secret.clone() {
                let request =
                    LinkRequest::new(w.agent.instance_id(), secret).with_nonce(w.mallory_nonce);
                w.send(Party::Mallory, Req::Link(request));
            }
        }
        Act::RebinderFetch => {
            w.ghost.rebinder_fetched = true;
            let endpoint = SocketAddr::new(ip(AGENT_IP), PORT);
            let id = w.agent.instance_id();
            let _ = w.lan_fetch(
                Party::Rebinder,
                ip("192.168.1.77"),
                endpoint,
                &id,
                Some("https://evil.example"),
            );
        }
        Act::OwnerMint => {
            w.ghost.owner_minted = true;
            w.send(Party::Owner, Req::Mint);
        }
        Act::EnterCode => {
            w.ghost.entered_code = true;
            if let Some(code) = w.ghost.owner_code.clone() {
                tell!(w, "the owner types code {code} into the device");
                w.ghost.entered = Some(code.clone());
                if let Some(code) = LinkCode::parse(&code) {
                    let _ = w.agent.enter_code(now, code);
                }
            }
        }
        Act::Approve => {
            tell!(w, "the owner approves the link on the device");
            w.ghost.approved = true;
            let _ = w.agent.confirm(now, Decision::Approve);
        }
        Act::Refuse => {
            tell!(w, "the owner refuses the link on the device");
            let _ = w.agent.confirm(now, Decision::Refuse);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The stateright model

/// The checked model: one scenario.
pub struct ProtocolModel {
    /// The scenario.
    pub sc: Scenario,
}

impl ProtocolModel {
    fn state(&self, log: Vec<Act>) -> State {
        let replayed = replay(&self.sc, &log, false);
        State {
            log,
            fingerprint: replayed.fingerprint,
            view: Arc::new(replayed.view),
        }
    }
}

macro_rules! always {
    ($bit:expr) => {
        Property::always(ALWAYS[$bit], |_: &ProtocolModel, s: &State| {
            s.view.violated & (1 << $bit) == 0
        })
    };
}
macro_rules! sometimes {
    ($bit:expr) => {
        Property::sometimes(SOMETIMES[$bit], |_: &ProtocolModel, s: &State| {
            s.view.reached & (1 << $bit) != 0
        })
    };
}

impl Model for ProtocolModel {
    type State = State;
    type Action = Act;

    fn init_states(&self) -> Vec<State> {
        vec![self.state(Vec::new())]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Act>) {
        actions.extend(state.view.enabled.iter().cloned());
    }

    fn next_state(&self, last: &State, action: Act) -> Option<State> {
        let mut log = last.log.clone();
        log.push(action);
        Some(self.state(log))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut p = vec![
            always!(0),
            always!(1),
            always!(2),
            always!(3),
            always!(4),
            always!(5),
            always!(6),
            always!(7),
            always!(8),
            always!(9),
            sometimes!(0),
            sometimes!(1),
            sometimes!(2),
            sometimes!(3),
            sometimes!(4),
            sometimes!(5),
        ];
        if self.sc.ticks.is_none() && self.sc.faults == 0 {
            p.push(Property::eventually(
                EVENTUALLY,
                |_: &ProtocolModel, s: &State| s.view.settled,
            ));
        }
        p
    }
}

/// What one bounded check found.
pub struct Report {
    /// The scenario's name.
    pub name: &'static str,
    /// States generated.
    pub states: usize,
    /// Unique states.
    pub unique: usize,
    /// The deepest level reached.
    pub depth: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Violated always/eventually properties, each with its counterexample.
    pub violations: Vec<(&'static str, Vec<Act>)>,
    /// The sometimes-properties reached (by name).
    pub reached: Vec<&'static str>,
}

/// Checks `sc` exhaustively to its depth.
pub fn check(sc: Scenario) -> Report {
    check_until(sc, None)
}

/// Checks `sc` to its depth, stopping at the first counterexample to `property` if one is named.
pub fn check_until(sc: Scenario, property: Option<&'static str>) -> Report {
    let name = sc.name;
    let depth = sc.depth;
    let started = Instant::now();
    let mut builder = ProtocolModel { sc }
        .checker()
        .threads(2)
        .target_max_depth(depth);
    if let Some(property) = property {
        builder = builder.finish_when(stateright::HasDiscoveries::AnyOf(
            [property].into_iter().collect(),
        ));
    }
    let checker = builder.spawn_bfs().join();
    let discoveries = checker.discoveries();
    let mut violations = Vec::new();
    let mut reached = Vec::new();
    for (name, path) in discoveries {
        if SOMETIMES.contains(&name) {
            reached.push(name);
        } else {
            violations.push((name, path.into_actions()));
        }
    }
    violations.sort_by_key(|(n, a)| (a.len(), *n));
    Report {
        name,
        states: checker.state_count(),
        unique: checker.unique_state_count(),
        depth: checker.max_depth(),
        elapsed: started.elapsed(),
        violations,
        reached,
    }
}

/// The violated always-properties of replaying `log` in `sc`, by name, and its story.
pub fn violations_of(sc: &Scenario, log: &[Act]) -> (Vec<&'static str>, Vec<String>) {
    let replayed = replay(sc, log, true);
    let names = ALWAYS
        .iter()
        .enumerate()
        .filter(|(i, _)| replayed.view.violated & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    (names, replayed.story)
}

/// Whether every action of `log` was enabled when it was taken (a replayed counterexample is
/// the same story, not a shorter one).
pub fn all_enabled(sc: &Scenario, log: &[Act]) -> bool {
    (0..log.len()).all(|i| replay(sc, &log[..i], false).view.enabled.contains(&log[i]))
}
