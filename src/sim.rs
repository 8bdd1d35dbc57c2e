//! A deterministic simulator of the three parties (feature `sim`): agents, one server and linkers
//! on one virtual clock with a seeded RNG, over a modelled network of LANs behind NATs.
//! It must not read the wall clock or an unseeded RNG into a party, nor open a socket: one virtual
//! clock (from an `Instant` taken once at creation, which has no fixed value, and a fixed
//! wall-clock epoch) and a seeded RNG, so a seed replays a run.
//!
//! Used by the crate's scenario tests, property tests and fuzz targets. The model:
//! - each [`Lan`] has one public address (its NAT); its hosts have private addresses;
//! - the server sees a host's public address as the socket peer, or, with
//!   [`Sim::put_server_behind_proxy`], the proxy's address plus an `X-Forwarded-For` naming the
//!   public address;
//! - a linker reaches an agent's local endpoint only inside the same LAN, where the agent sees the
//!   linker's private address.
//!
//! ```
//! use lanlink::sim::Sim;
//! let mut sim = Sim::new(1);
//! let lan = sim.add_lan("203.0.113.7".parse().unwrap());
//! let agent = sim.add_agent(lan, "192.168.1.50".parse().unwrap());
//! let linker = sim.add_linker(lan, "192.168.1.20".parse().unwrap(), "alice");
//! assert!(sim.run_until(std::time::Duration::from_secs(60), |s| s.linker(linker).is_finished()));
//! assert_eq!(sim.linker(linker).linked(), Some(sim.agent(agent).instance_id()));
//! assert!(sim.agent(agent).auth_token().is_some());
//! ```

use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::addr::ForwardedHeaders;
use crate::agent::{Agent, AgentConfig, AgentTransmit, SecretRequest};
use crate::event::{AgentEvent, LinkerEvent, RequestKind, ServerEvent};
use crate::id::AccountId;
use crate::linker::{FetchFailure, Linker, LinkerConfig, LinkerTransmit};
use crate::server::{at_once, Server, ServerConfig, User};
use crate::wire::{DeviceInfo, RedeemReply};

/// Index of a LAN in the simulation.
pub type LanId = usize;
/// Index of an agent.
pub type AgentId = usize;
/// Index of a linker.
pub type LinkerId = usize;

/// A local network behind one public address.
///
/// ```
/// use lanlink::sim::Sim;
/// let mut sim = Sim::new(1);
/// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
/// assert_eq!(sim.lans[lan].public_ip.to_string(), "203.0.113.7");
/// ```
#[derive(Debug, Clone)]
pub struct Lan {
    /// The NAT's public address.
    pub public_ip: IpAddr,
}

/// A simulated agent and where it lives.
///
/// ```
/// use lanlink::{event::AgentEvent, sim::Sim};
/// let mut sim = Sim::new(2);
/// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
/// let agent = sim.add_agent(lan, "192.168.1.50".parse().unwrap());
/// sim.settle();
/// assert_eq!(sim.agents[agent].lan, lan);
/// assert!(matches!(sim.agents[agent].events[0], AgentEvent::DiscoveryStarted { .. }));
/// assert!(sim.agents[agent].minted.is_none(), "no token before a link");
/// ```
#[derive(Debug)]
pub struct SimAgent {
    /// The state machine.
    pub agent: Agent,
    /// Its LAN.
    pub lan: LanId,
    /// Every event it emitted.
    pub events: Vec<AgentEvent>,
    /// The token, once the server minted one (what the server sent, for comparison).
    pub minted: Option<RedeemReply>,
}

/// A simulated linker and where it runs.
///
/// ```
/// use lanlink::sim::Sim;
/// let mut sim = Sim::new(3);
/// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
/// let linker = sim.add_linker(lan, "192.168.1.20".parse().unwrap(), "alice");
/// assert_eq!(sim.linkers[linker].account.as_str(), "alice");
/// assert_eq!(sim.linkers[linker].origin, None);
/// ```
#[derive(Debug)]
pub struct SimLinker {
    /// The state machine.
    pub linker: Linker,
    /// Its LAN.
    pub lan: LanId,
    /// Its private address on that LAN.
    pub private_ip: IpAddr,
    /// The account it links for.
    pub account: AccountId,
    /// The `Origin` it sends to agents (a browser page's origin), if any.
    pub origin: Option<String>,
    /// Every event it emitted.
    pub events: Vec<LinkerEvent>,
}

/// The simulation. Fields are public so tests can reach in and act as attackers.
///
/// ```
/// use std::time::Duration;
/// use lanlink::sim::Sim;
/// // The same seed replays the same run.
/// let run = |seed| {
///     let mut sim = Sim::new(seed);
///     let lan = sim.add_lan("203.0.113.7".parse().unwrap());
///     let agent = sim.add_agent(lan, "192.168.1.50".parse().unwrap());
///     sim.advance(Duration::from_secs(5));
///     sim.agent(agent).instance_id()
/// };
/// assert_eq!(run(7), run(7));
/// assert_ne!(run(7), run(8));
/// ```
#[derive(Debug)]
pub struct Sim {
    /// The monotonic clock's origin.
    pub epoch: Instant,
    /// The wall clock's origin.
    pub wall_epoch: DateTime<Utc>,
    /// Virtual time since the origins.
    pub elapsed: Duration,
    /// The seeded RNG every party draws from.
    pub rng: StdRng,
    /// The server.
    pub server: Server,
    /// Every server event.
    pub server_events: Vec<ServerEvent>,
    /// The LANs.
    pub lans: Vec<Lan>,
    /// The agents.
    pub agents: Vec<SimAgent>,
    /// The linkers.
    pub linkers: Vec<SimLinker>,
    /// The trusted proxy in front of the server, if any.
    pub proxy: Option<IpAddr>,
    /// Agent endpoints no linker can reach (a container's internal address, a stale pinned
    /// one): a fetch there is [`FetchFailure::Unreachable`] (revision 1.3 candidates).
    pub unreachable: std::collections::HashSet<std::net::SocketAddr>,
}

impl Sim {
    /// A simulation with the default server configuration, seeded with `seed`.
    ///
    /// ```
    /// use lanlink::sim::Sim;
    /// let sim = Sim::new(42);
    /// assert!(sim.agents.is_empty() && sim.linkers.is_empty() && sim.lans.is_empty());
    /// assert_eq!(sim.now(), sim.epoch);
    /// ```
    pub fn new(seed: u64) -> Self {
        // Cannot fail: the default configuration is valid (unit-tested).
        Self::with_server(seed, ServerConfig::default()).unwrap_or_else(|_| unreachable!())
    }

    /// A simulation with `config` for the server.
    ///
    /// ```
    /// use lanlink::{server::ServerConfig, sim::Sim, ConfigError};
    /// assert!(Sim::with_server(1, ServerConfig::default().max_visible(2)).is_ok());
    /// assert_eq!(Sim::with_server(1, ServerConfig::default().max_visible(0)).unwrap_err(), ConfigError::MaxVisible);
    /// ```
    pub fn with_server(seed: u64, config: ServerConfig) -> Result<Self, crate::ConfigError> {
        Ok(Self {
            epoch: Instant::now(),
            // Cannot fail: a fixed, valid timestamp (2027-01-15).
            wall_epoch: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            elapsed: Duration::ZERO,
            rng: StdRng::seed_from_u64(seed),
            server: Server::new(config)?,
            server_events: Vec::new(),
            lans: Vec::new(),
            agents: Vec::new(),
            linkers: Vec::new(),
            proxy: None,
            unreachable: std::collections::HashSet::new(),
        })
    }

    /// The monotonic now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// let start = sim.now();
    /// sim.advance(Duration::from_secs(3));
    /// assert_eq!(sim.now() - start, Duration::from_secs(3));
    /// ```
    pub fn now(&self) -> Instant {
        self.epoch + self.elapsed
    }

    /// The wall-clock now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// assert_eq!(sim.wall(), sim.wall_epoch, "a fixed epoch, not the real clock");
    /// sim.advance(Duration::from_secs(90));
    /// assert_eq!(sim.wall() - sim.wall_epoch, chrono::TimeDelta::seconds(90));
    /// ```
    pub fn wall(&self) -> DateTime<Utc> {
        self.wall_epoch
            + chrono::TimeDelta::from_std(self.elapsed).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// Adds a LAN behind `public_ip`.
    ///
    /// ```
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// let home = sim.add_lan("203.0.113.7".parse().unwrap());
    /// let office = sim.add_lan("198.51.100.1".parse().unwrap());
    /// assert_ne!(home, office);
    /// assert_eq!(sim.lans.len(), 2);
    /// ```
    pub fn add_lan(&mut self, public_ip: IpAddr) -> LanId {
        self.lans.push(Lan { public_ip });
        self.lans.len() - 1
    }

    /// Adds an agent at `private_ip` on `lan` with the default configuration (port 8080).
    ///
    /// ```
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// let agent = sim.add_agent(lan, "192.168.1.50".parse().unwrap());
    /// assert!(sim.agent(agent).is_discovering());
    /// assert_eq!(sim.agent(agent).config().port(), 8080);
    /// ```
    pub fn add_agent(&mut self, lan: LanId, private_ip: IpAddr) -> AgentId {
        let config = AgentConfig::new(
            private_ip,
            8080,
            DeviceInfo::new("printer", "sim", "lanlink-sim", "1").unwrap_or_default(),
        );
        self.add_agent_with(lan, config)
            .unwrap_or_else(|_| unreachable!("default agent config is valid"))
    }

    /// Adds an agent with `config` on `lan`.
    ///
    /// ```
    /// use lanlink::{agent::AgentConfig, sim::Sim, ConfigError};
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 5000, Default::default());
    /// let agent = sim.add_agent_with(lan, config).unwrap();
    /// assert_eq!(sim.agent(agent).config().port(), 5000);
    /// let public = AgentConfig::new("203.0.113.99".parse().unwrap(), 5000, Default::default());
    /// assert_eq!(sim.add_agent_with(lan, public).unwrap_err(), ConfigError::AgentAddress);
    /// ```
    pub fn add_agent_with(
        &mut self,
        lan: LanId,
        config: AgentConfig,
    ) -> Result<AgentId, crate::ConfigError> {
        let agent = Agent::new(config, self.now(), &mut self.rng)?;
        self.agents.push(SimAgent {
            agent,
            lan,
            events: Vec::new(),
            minted: None,
        });
        Ok(self.agents.len() - 1)
    }

    /// Adds a linker for `account` at `private_ip` on `lan` with the default configuration.
    ///
    /// # Panics
    ///
    /// When `account` is not an [`AccountId`], as [`add_linker_with`](Self::add_linker_with).
    ///
    /// ```
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// let linker = sim.add_linker(lan, "192.168.1.20".parse().unwrap(), "alice");
    /// assert!(!sim.linker(linker).is_finished());
    /// assert_eq!(sim.linkers[linker].private_ip.to_string(), "192.168.1.20");
    /// ```
    pub fn add_linker(&mut self, lan: LanId, private_ip: IpAddr, account: &str) -> LinkerId {
        self.add_linker_with(lan, private_ip, account, LinkerConfig::default(), None)
    }

    /// Adds a linker with `config`, sending `origin` to agents.
    ///
    /// # Panics
    ///
    /// When `account` is not an [`AccountId`] (empty, longer than
    /// [`MAX_ACCOUNT_ID_LEN`](crate::id::MAX_ACCOUNT_ID_LEN) bytes, or holding a control
    /// character): a simulation's accounts are the test's own names.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::{linker::LinkerConfig, sim::Sim};
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// let config = LinkerConfig { give_up_after: Duration::from_secs(10), ..Default::default() };
    /// let linker = sim.add_linker_with(lan, "192.168.1.20".parse().unwrap(), "alice", config, None);
    /// // No agent on the LAN: the linker gives up after its 10 s.
    /// sim.run_until(Duration::from_secs(30), |s| s.linker(linker).is_finished());
    /// assert!(sim.linker(linker).failure().is_some());
    /// ```
    pub fn add_linker_with(
        &mut self,
        lan: LanId,
        private_ip: IpAddr,
        account: &str,
        config: LinkerConfig,
        origin: Option<String>,
    ) -> LinkerId {
        let linker = Linker::new(config, self.now(), &mut self.rng);
        self.linkers.push(SimLinker {
            linker,
            lan,
            private_ip,
            account: AccountId::new(account).unwrap_or_else(|| {
                panic!("Sim::add_linker_with: {account:?} is not an account id")
            }),
            origin,
            events: Vec::new(),
        });
        self.linkers.len() - 1
    }

    /// Puts the server behind a trusted proxy at `proxy` (added to the server's trusted list by
    /// the caller's config): requests then arrive from `proxy` with `X-Forwarded-For`.
    ///
    /// ```
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// sim.put_server_behind_proxy("10.0.0.1".parse().unwrap());
    /// assert_eq!(sim.server_view(lan), ("10.0.0.1".parse().unwrap(), Some("203.0.113.7".into())));
    /// ```
    pub fn put_server_behind_proxy(&mut self, proxy: IpAddr) {
        self.proxy = Some(proxy);
    }

    /// The agent.
    ///
    /// ```
    /// use lanlink::{agent::AgentStatus, sim::Sim};
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// let agent = sim.add_agent(lan, "192.168.1.50".parse().unwrap());
    /// assert!(matches!(sim.agent(agent).status(), AgentStatus::Discovering { .. }));
    /// ```
    pub fn agent(&self, id: AgentId) -> &Agent {
        &self.agents[id].agent
    }

    /// The linker.
    ///
    /// ```
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// let linker = sim.add_linker(lan, "192.168.1.20".parse().unwrap(), "alice");
    /// assert!(sim.linker(linker).nonce().is_some());
    /// ```
    pub fn linker(&self, id: LinkerId) -> &Linker {
        &self.linkers[id].linker
    }

    /// The socket peer and `X-Forwarded-For` value with which the server sees a request from
    /// `lan`'s NAT.
    ///
    /// ```
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// assert_eq!(sim.server_view(lan), ("203.0.113.7".parse().unwrap(), None));
    /// ```
    pub fn server_view(&self, lan: LanId) -> (IpAddr, Option<String>) {
        let public = self.lans[lan].public_ip;
        match self.proxy {
            Some(proxy) => (proxy, Some(public.to_string())),
            None => (public, None),
        }
    }

    /// Advances virtual time by `by`, then runs every party until none has anything to send.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::{event::ServerEvent, sim::Sim};
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// sim.add_agent(lan, "192.168.1.50".parse().unwrap());
    /// sim.advance(Duration::from_secs(1));
    /// assert!(sim.server_events.iter().any(|e| matches!(e, ServerEvent::Announced { .. })));
    /// ```
    pub fn advance(&mut self, by: Duration) {
        // Virtual time stops at 100 years, so no clock arithmetic can overflow.
        const END: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        self.elapsed = self.elapsed.saturating_add(by).min(END);
        self.settle();
    }

    /// The earliest time any party wants to wake up.
    ///
    /// ```
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// assert_eq!(sim.next_wakeup(), None, "nobody to wake");
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// sim.add_agent(lan, "192.168.1.50".parse().unwrap());
    /// sim.settle();
    /// assert!(sim.next_wakeup().is_some_and(|at| at > sim.now()));
    /// ```
    pub fn next_wakeup(&self) -> Option<Instant> {
        let agents = self.agents.iter().filter_map(|a| a.agent.poll_timeout());
        let linkers = self.linkers.iter().filter_map(|l| l.linker.poll_timeout());
        agents.chain(linkers).min()
    }

    /// Jumps to the next wake-up (at most `limit` ahead) and settles. Returns false when nothing
    /// is scheduled.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// assert!(!sim.step(Duration::from_secs(1)), "nothing scheduled");
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// sim.add_agent(lan, "192.168.1.50".parse().unwrap());
    /// let before = sim.now();
    /// assert!(sim.step(Duration::from_secs(60)));
    /// assert!(sim.now() >= before);
    /// ```
    pub fn step(&mut self, limit: Duration) -> bool {
        let Some(next) = self.next_wakeup() else {
            return false;
        };
        let gap = next.saturating_duration_since(self.now()).min(limit);
        self.advance(gap);
        true
    }

    /// Steps until `done` holds or `limit` of virtual time has passed; returns whether it held.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// let agent = sim.add_agent(lan, "192.168.1.50".parse().unwrap());
    /// // Nobody links it: the condition never holds within the limit.
    /// assert!(!sim.run_until(Duration::from_secs(30), |s| s.agent(agent).auth_token().is_some()));
    /// assert!(sim.agent(agent).is_discovering());
    /// ```
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.elapsed + limit;
        self.settle();
        while !done(self) {
            if self.elapsed >= end {
                return false;
            }
            let left = end - self.elapsed;
            if !self.step(left) {
                self.advance(left);
            }
        }
        true
    }

    /// Runs every party until no one has anything to send at the current time.
    ///
    /// ```
    /// use lanlink::sim::Sim;
    /// let mut sim = Sim::new(1);
    /// let lan = sim.add_lan("203.0.113.7".parse().unwrap());
    /// sim.add_agent(lan, "192.168.1.50".parse().unwrap());
    /// let before = sim.now();
    /// sim.settle();
    /// assert_eq!(sim.now(), before, "settling does not move time");
    /// assert!(!sim.server_events.is_empty(), "the first announcement reached the server");
    /// ```
    pub fn settle(&mut self) {
        // Each pass moves at least one message or stops; bounded so a bug cannot hang a test.
        for _ in 0..10_000 {
            let mut moved = false;
            for id in 0..self.agents.len() {
                moved |= self.drive_agent(id);
            }
            for id in 0..self.linkers.len() {
                moved |= self.drive_linker(id);
            }
            if !moved {
                break;
            }
        }
        self.collect_events();
    }

    fn collect_events(&mut self) {
        for a in &mut self.agents {
            while let Some(e) = a.agent.poll_event() {
                a.events.push(e);
            }
        }
        for l in &mut self.linkers {
            while let Some(e) = l.linker.poll_event() {
                l.events.push(e);
            }
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
        }
    }

    fn drive_agent(&mut self, id: AgentId) -> bool {
        let now = self.now();
        let wall = self.wall();
        let (peer, xff) = self.server_view(self.agents[id].lan);
        let xff_lines: Vec<&str> = xff.iter().map(String::as_str).collect();
        let headers = ForwardedHeaders {
            forwarded: &[],
            x_forwarded_for: &xff_lines,
        };
        let Some(transmit) = self.agents[id].agent.poll_transmit(now) else {
            return false;
        };
        match transmit {
            AgentTransmit::Announce(announce) => {
                let network = self.server.caller(RequestKind::Announce, peer, headers);
                let reply = network.and_then(|n| at_once(self.server.announce(wall, n, &announce)));
                match reply {
                    Ok(reply) => self.agents[id].agent.handle_announce_reply(now, reply),
                    Err(refusal) => self.agents[id]
                        .agent
                        .handle_announce_refused(now, refusal.code()),
                }
            }
            AgentTransmit::Redeem(request) => {
                let network = self.server.caller(RequestKind::Redeem, peer, headers);
                let reply = network
                    .and_then(|n| at_once(self.server.redeem(wall, &mut self.rng, n, &request)))
                    .map(|redeemed| redeemed.reply);
                if let Ok(reply) = &reply {
                    self.agents[id].minted = Some(reply.clone());
                }
                // Cannot fail: the agent just asked for this redemption.
                let _ = self.agents[id]
                    .agent
                    .handle_redeem_reply(now, reply.map_err(|r| r.code()));
            }
        }
        true
    }

    fn drive_linker(&mut self, id: LinkerId) -> bool {
        let now = self.now();
        let wall = self.wall();
        let lan = self.linkers[id].lan;
        let (peer, xff) = self.server_view(lan);
        let xff_lines: Vec<&str> = xff.iter().map(String::as_str).collect();
        let headers = ForwardedHeaders {
            forwarded: &[],
            x_forwarded_for: &xff_lines,
        };
        let Some(transmit) = self.linkers[id].linker.poll_transmit(now) else {
            return false;
        };
        let user = User::new(self.linkers[id].account.clone());
        // Replies go back through the linker's own checks; an unexpected one is ignored.
        let _ = match transmit {
            LinkerTransmit::Discover => {
                let network = self.server.caller(RequestKind::Discover, peer, headers);
                let reply = network.and_then(|n| at_once(self.server.discover(wall, n, &user)));
                self.linkers[id]
                    .linker
                    .handle_discover_reply(now, reply.map_err(|r| r.code()))
            }
            LinkerTransmit::FetchSecret {
                agent,
                instance_id,
                fetch,
            } => {
                // An agent answers at any endpoint it announces, on its own LAN, unless that
                // endpoint is marked unreachable.
                let reachable = !self.unreachable.contains(&agent);
                let target = self
                    .agents
                    .iter_mut()
                    .find(|a| reachable && a.lan == lan && a.agent.endpoints().contains(&agent));
                let reply = match target {
                    Some(target) => {
                        let host = agent.to_string();
                        let instance = instance_id.to_string();
                        let request = SecretRequest {
                            peer: self.linkers[id].private_ip,
                            forwarded: ForwardedHeaders::NONE,
                            host: Some(&host),
                            origin: self.linkers[id].origin.as_deref(),
                            instance_id: &instance,
                        };
                        target
                            .agent
                            .handle_secret_request(now, &request)
                            .map_err(|refusal| FetchFailure::Refused(refusal.code()))
                    }
                    None => Err(FetchFailure::Unreachable),
                };
                self.linkers[id]
                    .linker
                    .handle_secret_reply(now, fetch, reply)
            }
            LinkerTransmit::Link(request) => {
                let network = self.server.caller(RequestKind::Link, peer, headers);
                let reply = network.and_then(|n| {
                    at_once(self.server.link(wall, &mut self.rng, n, &user, request))
                });
                self.linkers[id]
                    .linker
                    .handle_link_reply(now, reply.map_err(|r| r.code()))
            }
            LinkerTransmit::LinkStatus { instance_id, .. } => {
                let network = self.server.caller(RequestKind::LinkStatus, peer, headers);
                let reply = network.and_then(|n| {
                    at_once(
                        self.server
                            .link_status(wall, n, &user.account, &instance_id),
                    )
                });
                self.linkers[id]
                    .linker
                    .handle_link_status(now, reply.map_err(|r| r.code()))
            }
        };
        true
    }
}
