//! Shared-network detection with automatic downgrade (issue 15), on the deterministic simulator
//! (virtual clock, seeded RNG): a household keeps auto-discovery, a carrier's NAT pool is
//! downgraded within a stated number of discoveries, and an attacker who trips the detector
//! gains the downgrade and nothing else.
#![cfg(feature = "sim")]

mod support;
#[cfg(feature = "obico")]
use support::steps::ready;
use support::steps::Steps;

use std::net::IpAddr;
use std::time::Duration;

#[cfg(feature = "obico")]
use lanlink::event::RequestKind;
use lanlink::event::{AgentEvent, LinkerEvent, ServerEvent};
use lanlink::linker::LinkerFailure;
use lanlink::secret::PresenceKey;
use lanlink::server::{ServerConfig, SharedNetworkPolicy, SharedSignal};
use lanlink::sim::Sim;
use lanlink::wire::{Announce, DeviceInfo, HiddenReason, LinkRequest, RedeemRequest, Visibility};
use lanlink::{AccountId, ForwardedHeaders, LocalSecret, Refusal};

/// One public address shared by many households (a carrier's NAT pool seen from outside).
const POOL: &str = "198.51.100.9";
const HOME: &str = "203.0.113.7";

/// With the default policy (`max_accounts` 4), the pool is downgraded at the first discovery
/// of its fifth distinct account: within 5 discoveries, whatever their order.
const DOWNGRADED_WITHIN: usize = 5;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn account(n: usize) -> AccountId {
    AccountId::new(format!("user{n}")).unwrap()
}

fn judged(sim: &Sim) -> Vec<SharedSignal> {
    sim.server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::NetworkJudgedShared { signal, .. } => Some(*signal),
            _ => None,
        })
        .collect()
}

fn drain(sim: &mut Sim) {
    while let Some(event) = sim.server.poll_event() {
        sim.server_events.push(event);
    }
}

/// A household with two accounts (two people, two phones) links its printer by auto-discovery:
/// the network is never judged shared and the agent is told it is visible.
#[test]
fn a_household_with_two_accounts_keeps_auto_discovery() {
    let mut sim = Sim::new(15);
    let lan = sim.add_lan(ip(HOME));
    let agent = sim.add_agent(lan, ip("192.168.1.50"));
    let alice = sim.add_linker(lan, ip("192.168.1.20"), "alice");
    let bob = sim.add_linker(lan, ip("192.168.1.21"), "bob");
    assert!(sim.run_until(Duration::from_secs(60), |s| s
        .linker(alice)
        .linked()
        .or(s.linker(bob).linked())
        .is_some()));
    let linked = [alice, bob]
        .iter()
        .filter_map(|l| sim.linker(*l).linked())
        .collect::<Vec<_>>();
    assert_eq!(linked, vec![sim.agent(agent).instance_id()]);
    drain(&mut sim);
    assert!(judged(&sim).is_empty());
    assert!(sim.agents[agent].events.iter().any(|e| matches!(
        e,
        AgentEvent::Visibility {
            visibility: Visibility::Visible
        }
    )));
    // Each account's discoveries wrote the record once (its first), then read only.
    assert!(!sim.linkers.iter().any(|l| l
        .events
        .iter()
        .any(|e| matches!(e, LinkerEvent::AgentsHidden { .. }))));
}

/// A carrier's NAT pool: many households behind one public address, each with its own account.
/// The fifth distinct account's first discovery marks the pool shared (sticky for the window):
/// from then on no agent is shown, links are refused `shared_network`, the agents are told why,
/// and the manual code still links.
#[test]
fn a_cgnat_pool_with_many_accounts_is_downgraded_within_five_discoveries() {
    let mut sim = Sim::new(16);
    let households: Vec<_> = (0..6).map(|_| sim.add_lan(ip(POOL))).collect();
    let agent = sim.add_agent(households[0], ip("192.168.1.50"));
    sim.settle();
    let (peer, wall) = (ip(POOL), sim.wall());
    let mut discoveries = 0;
    let mut downgraded_at = None;
    // Each household's account discovers twice: repeats do not count, distinct accounts do.
    for n in 0..6 {
        for _ in 0..2 {
            let reply = sim
                .server
                .discover_as_now(wall, &account(n), peer, ForwardedHeaders::NONE)
                .unwrap();
            discoveries += 1;
            if reply.hidden.map(|h| h.reason) == Some(HiddenReason::SharedNetwork) {
                assert!(reply.agents.is_empty());
                downgraded_at.get_or_insert((n + 1, discoveries));
            } else {
                assert_eq!(reply.agents.len(), 1, "shown until downgraded");
            }
        }
    }
    // Downgraded at the fifth distinct account, on its first discovery (the 9th request here,
    // as each of the first four discovered twice).
    let (accounts, at) = downgraded_at.unwrap();
    assert_eq!(accounts, DOWNGRADED_WITHIN);
    assert_eq!(at, 2 * (DOWNGRADED_WITHIN - 1) + 1);
    drain(&mut sim);
    assert_eq!(judged(&sim), vec![SharedSignal::ManyAccounts]);

    // A linker of the pool is told why and ends, so the page offers the code.
    let linker = sim.add_linker(households[0], ip("192.168.1.20"), "user0");
    assert!(sim.run_until(Duration::from_secs(30), |s| s.linker(linker).is_finished()));
    assert_eq!(
        sim.linker(linker).failure(),
        Some(&LinkerFailure::Hidden(HiddenReason::SharedNetwork))
    );
    // The agent is told it is hidden, and why, at its next announce.
    sim.advance(Duration::from_secs(3));
    assert_eq!(
        sim.agent(agent).visibility(),
        Some(Visibility::Hidden(HiddenReason::SharedNetwork))
    );
    // The manual code still links.
    let code = sim
        .server
        .mint_code_now(sim.wall(), &mut sim.rng, &account(0))
        .unwrap()
        .code;
    let key = PresenceKey::generate(&mut sim.rng);
    let redeemed = sim.server.redeem_now(
        sim.wall(),
        &mut sim.rng,
        peer,
        ForwardedHeaders::NONE,
        &RedeemRequest::new(key.instance_id(), code).with_presence_key(key),
    );
    assert!(redeemed.is_ok());

    // Sticky for the window (10 minutes), then judged afresh.
    sim.advance(Duration::from_secs(9 * 60));
    let still = sim
        .server
        .discover_as_now(sim.wall(), &account(0), peer, ForwardedHeaders::NONE)
        .unwrap();
    assert_eq!(still.hidden.unwrap().reason, HiddenReason::SharedNetwork);
    sim.advance(Duration::from_secs(2 * 60));
    let later = sim
        .server
        .discover_as_now(sim.wall(), &account(0), peer, ForwardedHeaders::NONE)
        .unwrap();
    assert_ne!(
        later.hidden.map(|h| h.reason),
        Some(HiddenReason::SharedNetwork)
    );
}

/// Seen through a trusted proxy, a client in `100.64.0.0/10` is judged shared at its first
/// discovery (0 further discoveries), and its agents at their first announce reply.
#[test]
fn a_carrier_nat_address_through_a_trusted_proxy_is_shared_at_once() {
    let proxy = ip("10.9.9.9");
    let config = ServerConfig::default().trusted_proxies(vec!["10.9.9.9/32".parse().unwrap()]);
    let mut sim = Sim::with_server(17, config).unwrap();
    sim.put_server_behind_proxy(proxy);
    let lan = sim.add_lan(ip("100.72.4.5"));
    let agent = sim.add_agent(lan, ip("192.168.1.50"));
    let linker = sim.add_linker(lan, ip("192.168.1.20"), "alice");
    assert!(sim.run_until(Duration::from_secs(30), |s| s.linker(linker).is_finished()));
    assert_eq!(
        sim.linker(linker).failure(),
        Some(&LinkerFailure::Hidden(HiddenReason::SharedNetwork))
    );
    assert_eq!(
        sim.agent(agent).visibility(),
        Some(Visibility::Hidden(HiddenReason::SharedNetwork))
    );
    drain(&mut sim);
    assert!(judged(&sim).contains(&SharedSignal::CarrierNat));
    // Turned off, the same network keeps auto-discovery.
    let config = ServerConfig::default()
        .trusted_proxies(vec!["10.9.9.9/32".parse().unwrap()])
        .shared_network(SharedNetworkPolicy::default().carrier_nat(false));
    let mut sim = Sim::with_server(17, config).unwrap();
    sim.put_server_behind_proxy(proxy);
    let lan = sim.add_lan(ip("100.72.4.5"));
    let agent = sim.add_agent(lan, ip("192.168.1.50"));
    let linker = sim.add_linker(lan, ip("192.168.1.20"), "alice");
    assert!(sim.run_until(Duration::from_secs(60), |s| s.linker(linker).is_finished()));
    assert_eq!(
        sim.linker(linker).linked(),
        Some(sim.agent(agent).instance_id())
    );
}

fn announce_from(sim: &mut Sim, private: &str) -> Announce {
    let key = PresenceKey::generate(&mut sim.rng);
    let id = key.instance_id();
    Announce::new(
        id,
        ip(private),
        8080,
        DeviceInfo::default(),
        LocalSecret::from_bytes([7; 32]).commitment(&id),
        key,
    )
}

/// An attacker who shares the victim's public network (a neighbour on the carrier's pool)
/// trips the detector both ways it can: many accounts, and announcements from made-up private
/// subnets. It gains the downgrade and nothing else: no listing, no secret, no link; the
/// victim's device stays unlinked, and the victim's manual code still links it.
#[test]
fn an_attacker_tripping_the_detector_gains_only_the_downgrade() {
    for trip in ["accounts", "subnets"] {
        let mut sim = Sim::new(18);
        let victim_lan = sim.add_lan(ip(POOL));
        let victim = sim.add_agent(victim_lan, ip("192.168.1.50"));
        sim.settle();
        let victim_id = sim.agent(victim).instance_id();
        let (peer, wall) = (ip(POOL), sim.wall());
        match trip {
            "accounts" => {
                for n in 0..DOWNGRADED_WITHIN {
                    let _ = sim.server.discover_as_now(
                        wall,
                        &AccountId::new(format!("mallory{n}")).unwrap(),
                        peer,
                        ForwardedHeaders::NONE,
                    );
                }
            }
            _ => {
                // Two fake agents in two more subnets: three subnets present (max 2).
                for private in ["10.1.1.1", "172.16.5.5"] {
                    let fake = announce_from(&mut sim, private);
                    sim.server
                        .announce_now(wall, peer, ForwardedHeaders::NONE, &fake)
                        .unwrap();
                }
            }
        }
        drain(&mut sim);
        let want = match trip {
            "accounts" => SharedSignal::ManyAccounts,
            _ => SharedSignal::ManySubnets,
        };
        assert_eq!(judged(&sim), vec![want], "{trip}");

        // No listing for anyone on the network, attacker or not.
        let mallory = AccountId::new("mallory").unwrap();
        let reply = sim
            .server
            .discover_as_now(wall, &mallory, peer, ForwardedHeaders::NONE)
            .unwrap();
        assert!(reply.agents.is_empty(), "{trip}");
        assert_eq!(reply.hidden.unwrap().reason, HiddenReason::SharedNetwork);
        // A link for the victim's id (learnt before the downgrade) is refused before any secret
        // is checked, and not counted as a guess: no lockout for the household either.
        for _ in 0..10 {
            let link = sim.server.link_now(
                wall,
                &mut sim.rng,
                &mallory,
                peer,
                ForwardedHeaders::NONE,
                LinkRequest::new(victim_id, LocalSecret::from_bytes([1; 32])),
            );
            assert_eq!(link.unwrap_err(), Refusal::SharedNetwork, "{trip}");
        }
        assert!(!sim
            .server
            .store()
            .is_locked(&lanlink::PublicNetwork::from_ip(peer, 64), wall));
        // The victim's device is unlinked, its secret never left it, and it is told why.
        sim.advance(Duration::from_secs(3));
        assert!(sim.agent(victim).auth_token().is_none());
        assert!(!sim.agents[victim]
            .events
            .iter()
            .any(|e| matches!(e, AgentEvent::SecretServed { .. })));
        assert_eq!(
            sim.agent(victim).visibility(),
            Some(Visibility::Hidden(HiddenReason::SharedNetwork)),
            "{trip}"
        );
        // The victim links with a manual code typed on the device.
        let alice = AccountId::new("alice").unwrap();
        let code = sim
            .server
            .mint_code_now(sim.wall(), &mut sim.rng, &alice)
            .unwrap()
            .code;
        let now = sim.now();
        sim.agents[victim].agent.enter_code(now, code).unwrap();
        assert!(sim.run_until(Duration::from_secs(30), |s| s
            .agent(victim)
            .auth_token()
            .is_some()));
    }
}

/// Every judgement is a serializable event naming the network and the signal, with no account.
#[test]
fn judgements_are_events_without_secrets() {
    let mut sim = Sim::new(19);
    let _lan = sim.add_lan(ip(POOL));
    for n in 0..DOWNGRADED_WITHIN {
        let _ =
            sim.server
                .discover_as_now(sim.wall(), &account(n), ip(POOL), ForwardedHeaders::NONE);
    }
    drain(&mut sim);
    let json: Vec<String> = sim
        .server_events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    assert!(json.contains(
        &r#"{"event":"network_judged_shared","network":"198.51.100.9","signal":"many_accounts","sticky":true}"#
            .to_owned()
    ));
    assert!(json.iter().all(|line| !line.contains("user")), "{json:?}");
    assert!(json
        .last()
        .unwrap()
        .contains(r#""hidden":"shared_network""#));
}

/// Wrong secrets from one public network until its guessing budget fills: the lockout marks
/// the network shared too (`failures`), so its discovery shows nothing and says why, while a
/// neighbouring network keeps auto-discovery. With the signal off, the lockout alone stands.
#[test]
fn a_network_locked_out_by_failures_is_judged_shared() {
    for signal_on in [true, false] {
        let policy = SharedNetworkPolicy::default().failures(signal_on);
        let mut sim = Sim::with_server(21, ServerConfig::default().shared_network(policy)).unwrap();
        let pool = sim.add_lan(ip(POOL));
        let home = sim.add_lan(ip(HOME));
        let agent = sim.add_agent(pool, ip("192.168.1.50"));
        let neighbour = sim.add_agent(home, ip("192.168.7.50"));
        sim.settle();
        let (peer, wall) = (ip(POOL), sim.wall());
        let id = sim.agent(agent).instance_id();
        let mallory = AccountId::new("mallory").unwrap();
        let mut refusals = Vec::new();
        for n in 0..7u8 {
            let link = sim.server.link_now(
                wall,
                &mut sim.rng,
                &mallory,
                peer,
                ForwardedHeaders::NONE,
                LinkRequest::new(id, LocalSecret::from_bytes([n; 32])),
            );
            refusals.push(link.unwrap_err());
        }
        // Five wrong secrets are checked, the rest refused unchecked.
        assert_eq!(
            refusals[..5],
            [const { Refusal::WrongSecret }; 5],
            "{signal_on}"
        );
        assert_eq!(
            refusals[5..],
            [const { Refusal::LockedOut }; 2],
            "{signal_on}"
        );
        drain(&mut sim);
        let want: Vec<SharedSignal> = if signal_on {
            vec![SharedSignal::Failures]
        } else {
            Vec::new()
        };
        assert_eq!(judged(&sim), want, "{signal_on}");
        let reply = sim
            .server
            .discover_as_now(wall, &account(1), peer, ForwardedHeaders::NONE)
            .unwrap();
        if signal_on {
            assert!(reply.agents.is_empty());
            assert_eq!(reply.hidden.unwrap().reason, HiddenReason::SharedNetwork);
        } else {
            assert_eq!(reply.agents.len(), 1);
            assert!(reply.hidden.is_none());
        }
        // The neighbouring network is untouched either way.
        let reply = sim
            .server
            .discover_as_now(wall, &account(2), ip(HOME), ForwardedHeaders::NONE)
            .unwrap();
        assert_eq!(reply.agents.len(), 1, "{signal_on}");
        assert_eq!(
            reply.agents[0].instance_id,
            sim.agent(neighbour).instance_id()
        );
        // The device itself was never linked.
        assert!(sim.agent(agent).auth_token().is_none());
    }
}

/// A route through which users list and link printers: the core's, or (feature `obico`) the
/// Obico profile's. Each must feed the same shared-network signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Core,
    #[cfg(feature = "obico")]
    Obico,
}

const PROFILES: &[Profile] = &[
    Profile::Core,
    #[cfg(feature = "obico")]
    Profile::Obico,
];

/// A server with one printer present in the pool, announced through `profile`'s agent route.
fn pool_with_a_printer(
    profile: Profile,
    now: chrono::DateTime<chrono::Utc>,
) -> (lanlink::server::Server, lanlink::InstanceId) {
    let server = lanlink::server::Server::new(ServerConfig::default()).unwrap();
    let key = PresenceKey::from_bytes([3; 32]);
    let id = key.instance_id();
    match profile {
        Profile::Core => {
            let announce = Announce::new(
                id,
                ip("192.168.1.50"),
                8080,
                DeviceInfo::default(),
                LocalSecret::from_bytes([7; 32]).commitment(&id),
                key,
            );
            server
                .announce_now(now, ip(POOL), ForwardedHeaders::NONE, &announce)
                .unwrap();
        }
        #[cfg(feature = "obico")]
        Profile::Obico => {
            let network = server
                .caller(RequestKind::Announce, ip(POOL), ForwardedHeaders::NONE)
                .unwrap();
            let reply = ready(server.obico_unlinked(
                now,
                &mut lanlink::os_rng(),
                &lanlink::obico::ObicoConfig::default(),
                network,
                &obico_poll(id),
            ))
            .unwrap();
            assert!(reply.message.is_none());
        }
    }
    (server, id)
}

#[cfg(feature = "obico")]
fn obico_poll(id: lanlink::InstanceId) -> lanlink::obico::UnlinkedPoll {
    lanlink::obico::UnlinkedPoll {
        device_id: id,
        endpoint: Some((ip("192.168.1.50"), 5000)),
        info: DeviceInfo::default(),
        extra: Default::default(),
        one_time_passcode: None,
    }
}

/// How many printers `account` is shown through `profile`'s discovery route.
fn listed(
    server: &lanlink::server::Server,
    profile: Profile,
    now: chrono::DateTime<chrono::Utc>,
    account: &AccountId,
) -> usize {
    match profile {
        Profile::Core => {
            let reply = server
                .discover_as_now(now, account, ip(POOL), ForwardedHeaders::NONE)
                .unwrap();
            assert_eq!(
                reply.agents.is_empty(),
                reply.hidden.map(|h| h.reason) == Some(HiddenReason::SharedNetwork)
            );
            reply.agents.len()
        }
        #[cfg(feature = "obico")]
        Profile::Obico => {
            let network = server
                .caller(RequestKind::Discover, ip(POOL), ForwardedHeaders::NONE)
                .unwrap();
            ready(server.obico_list(now, network, account))
                .unwrap()
                .len()
        }
    }
}

/// A link request by `account` for `id` with a wrong secret, through `profile`'s link route.
fn link_with_a_wrong_secret(
    server: &lanlink::server::Server,
    profile: Profile,
    now: chrono::DateTime<chrono::Utc>,
    account: &AccountId,
    id: lanlink::InstanceId,
) -> Result<(), Refusal> {
    let wrong = LocalSecret::from_bytes([9; 32]);
    match profile {
        Profile::Core => server
            .link_now(
                now,
                &mut lanlink::os_rng(),
                account,
                ip(POOL),
                ForwardedHeaders::NONE,
                LinkRequest::new(id, wrong),
            )
            .map(|_| ()),
        #[cfg(feature = "obico")]
        Profile::Obico => {
            let network = server.caller(RequestKind::Link, ip(POOL), ForwardedHeaders::NONE)?;
            ready(server.obico_link(
                now,
                &mut lanlink::os_rng(),
                network,
                account,
                id,
                Some(wrong),
            ))
        }
    }
}

/// Issue 25, finding 1: every route that lists printers feeds the same shared-network signal.
/// Eight accounts behind one carrier-NAT address discover one printer through each profile's
/// route: each profile judges the address shared (`many_accounts`) at the same, fifth, distinct
/// account, lists nothing from then on, and refuses a stranger's link `shared_network` before
/// anything reaches the printer (an Obico agent stops its discovery on any wrong secret it is
/// sent, so a queued one would end it).
#[test]
fn every_profile_judges_a_pool_shared_at_the_same_discovery_and_then_hides_and_refuses() {
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let mut tripped_at = Vec::new();
    for &profile in PROFILES {
        let (server, id) = pool_with_a_printer(profile, now);
        let mut first_hidden = None;
        for n in 0..8 {
            let shown = listed(&server, profile, now, &account(n));
            if shown == 0 {
                first_hidden.get_or_insert(n + 1);
            } else {
                assert_eq!(shown, 1, "{profile:?}");
                assert!(
                    first_hidden.is_none(),
                    "{profile:?}: shown again after hidden"
                );
            }
        }
        let mut judgements = Vec::new();
        while let Some(event) = server.poll_event() {
            if let ServerEvent::NetworkJudgedShared { signal, .. } = event {
                judgements.push(signal);
            }
        }
        assert_eq!(judgements, vec![SharedSignal::ManyAccounts], "{profile:?}");
        assert_eq!(first_hidden, Some(DOWNGRADED_WITHIN), "{profile:?}");
        tripped_at.push(first_hidden);

        // A stranger's wrong secret is refused as the network is shared: before any check, not
        // counted as a guess, and nothing is queued for the printer.
        for _ in 0..6 {
            let link = link_with_a_wrong_secret(&server, profile, now, &account(7), id);
            assert_eq!(link, Err(Refusal::SharedNetwork), "{profile:?}");
        }
        assert!(!server
            .store()
            .is_locked(&lanlink::PublicNetwork::from_ip(ip(POOL), 64), now));
        #[cfg(feature = "obico")]
        if profile == Profile::Obico {
            let network = server
                .caller(RequestKind::Announce, ip(POOL), ForwardedHeaders::NONE)
                .unwrap();
            let reply = ready(server.obico_unlinked(
                now + chrono::TimeDelta::seconds(5),
                &mut lanlink::os_rng(),
                &lanlink::obico::ObicoConfig::default(),
                network,
                &obico_poll(id),
            ))
            .unwrap();
            assert!(reply.message.is_none(), "a secret reached the printer");
        }
    }
    assert!(tripped_at.windows(2).all(|w| w[0] == w[1]));
}
