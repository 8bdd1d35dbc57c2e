use super::*;
use crate::wire::{DeviceInfo, MAX_CANDIDATES};
use rand::SeedableRng;

fn agent() -> (Agent, Instant) {
    let now = Instant::now();
    let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default())
        .allow_host("printer.local");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    (Agent::new(config, now, &mut rng).unwrap(), now)
}

/// A server that refuses every announcement as malformed gets one per interval: the agent
/// sends again at once only when it dropped something the server may not know, never in a
/// loop (a broken variant that always re-sends at once fails the second half).
#[test]
fn a_server_refusing_every_announcement_gets_no_hot_loop() {
    let (mut agent, now) = agent();
    assert!(matches!(
        agent.poll_transmit(now),
        Some(AgentTransmit::Announce(_))
    ));
    agent.handle_request_malformed(now);
    assert!(
        agent.poll_transmit(now).is_none(),
        "nothing dropped, nothing re-sent at once"
    );
    assert!(agent.poll_timeout().is_some_and(|t| t > now));

    let now = Instant::now();
    let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default())
        .candidates(vec!["10.0.0.5:8080".parse().unwrap()]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut agent = Agent::new(config, now, &mut rng).unwrap();
    assert!(agent.poll_transmit(now).is_some());
    agent.handle_request_malformed(now);
    let Some(AgentTransmit::Announce(again)) = agent.poll_transmit(now) else {
        panic!("the candidates were dropped: sent again at once");
    };
    assert!(again.candidates.is_empty());
    agent.handle_request_malformed(now);
    assert!(
        agent.poll_transmit(now).is_none(),
        "second refusal: no loop"
    );
}

/// A reply from a server of `revision` (`None`: 1.4 or earlier) asking for `poll_after_ms`.
fn reply_of(revision: Option<Revision>, poll_after_ms: u64) -> AnnounceReply {
    let mut reply = AnnounceReply::new(Vec::new(), poll_after_ms);
    reply.revision = revision;
    reply
}

/// The next announcement, due at `now`.
fn announce_at(agent: &mut Agent, now: Instant) -> Announce {
    match agent.poll_transmit(now) {
        Some(AgentTransmit::Announce(announce)) => announce,
        other => panic!("an announcement due at {now:?}: {other:?}"),
    }
}

fn hold_fallbacks(agent: &mut Agent) -> Vec<u32> {
    std::iter::from_fn(|| agent.poll_event())
        .filter_map(|event| match event {
            AgentEvent::HoldFallback { failures } => Some(failures),
            _ => None,
        })
        .collect()
}

const SEC: Duration = Duration::from_secs(1);

/// A hold is asked only of a server that stated 1.6 or later: not before any reply, not of
/// a 1.5 server or one that states none; and it is the configured length.
#[test]
fn a_hold_is_asked_only_of_a_1_6_server() {
    let (mut agent, mut now) = agent();
    assert_eq!(
        announce_at(&mut agent, now).hold_ms,
        None,
        "no revision known yet"
    );
    for (revision, expected) in [
        (None, None),
        (Some(Revision::V1_5), None),
        (Some(Revision::V1_6), Some(20_000)),
        (Some(Revision::new(1, 9)), Some(20_000)),
        (Some(Revision::V1_4), None),
    ] {
        agent.handle_announce_reply(now, reply_of(revision, 2000));
        now += 2 * SEC;
        let announce = announce_at(&mut agent, now);
        assert_eq!(announce.hold_ms, expected, "after {revision:?}");
    }
    // Zero never asks.
    let now = Instant::now();
    let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default())
        .hold(Duration::ZERO);
    let mut agent = Agent::new(config, now, &mut rand::rngs::StdRng::seed_from_u64(5)).unwrap();
    let _ = announce_at(&mut agent, now);
    agent.handle_announce_reply(now, reply_of(Some(Revision::V1_6), 2000));
    assert_eq!(announce_at(&mut agent, now + 2 * SEC).hold_ms, None);
}

/// The hold never reaches past the window's end, and none is asked in its last instant.
#[test]
fn a_hold_never_outlasts_the_window() {
    let now = Instant::now();
    let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default())
        .window(Duration::from_secs(30));
    let mut agent = Agent::new(config, now, &mut rand::rngs::StdRng::seed_from_u64(6)).unwrap();
    let _ = announce_at(&mut agent, now);
    agent.handle_announce_reply(now, reply_of(Some(Revision::V1_6), 2000));
    assert_eq!(announce_at(&mut agent, now + 2 * SEC).hold_ms, Some(20_000));
    let late = now + Duration::from_millis(25_500);
    agent.handle_announce_reply(late, reply_of(Some(Revision::V1_6), 2000));
    assert_eq!(announce_at(&mut agent, late).hold_ms, Some(4_500));
}

/// Two failed held announcements in a row (no answer, a proxy's page, an unreadable reply)
/// drop the hold for the rest of the window, with one event; a reply to a held one between
/// them resets the count; a refusal with the server's code counts neither way; a failure of
/// an announcement that asked for no hold does not count.
#[test]
fn failed_holds_fall_back_once_and_a_reply_resets_the_count() {
    let (mut agent, mut now) = agent();
    // Unheld failures (no revision known yet) do not count.
    for _ in 0..3 {
        let _ = announce_at(&mut agent, now);
        agent.handle_announce_failed(now, &TransportError::Unreachable("down".into()));
        now += 2 * SEC;
    }
    let _ = announce_at(&mut agent, now);
    agent.handle_announce_reply(now, reply_of(Some(Revision::V1_6), 2000));
    assert!(hold_fallbacks(&mut agent).is_empty());
    let cut = TransportError::Refused {
        status: 504,
        code: WireCode::NoCode,
    };
    // fail, reply, fail, coded refusal, (not a fallback yet), fail: fallback.
    now += 2 * SEC;
    assert!(announce_at(&mut agent, now).hold_ms.is_some());
    agent.handle_announce_failed(now + 10 * SEC, &cut);
    now += 10 * SEC;
    assert!(announce_at(&mut agent, now).hold_ms.is_some());
    agent.handle_announce_reply(now + 20 * SEC, reply_of(Some(Revision::V1_6), 2000));
    now += 20 * SEC;
    assert!(announce_at(&mut agent, now).hold_ms.is_some());
    agent.handle_announce_failed(now + 10 * SEC, &TransportError::Malformed);
    now += 10 * SEC;
    assert!(announce_at(&mut agent, now).hold_ms.is_some());
    let busy = TransportError::Refused {
        status: 503,
        code: WireCode::StoreUnavailable,
    };
    agent.handle_announce_failed(now, &busy);
    assert!(
        hold_fallbacks(&mut agent).is_empty(),
        "one failure since the reply"
    );
    now += 2 * SEC;
    assert!(
        announce_at(&mut agent, now).hold_ms.is_some(),
        "still holding"
    );
    agent.handle_announce_failed(now + SEC, &TransportError::Unreachable("reset".into()));
    now += SEC;
    assert_eq!(hold_fallbacks(&mut agent), [2]);
    // No hold from now on, even from a 1.6 server, and no second event.
    for _ in 0..3 {
        now += 2 * SEC;
        assert_eq!(announce_at(&mut agent, now).hold_ms, None);
        agent.handle_announce_reply(now, reply_of(Some(Revision::V1_6), 2000));
        now += 2 * SEC;
        assert_eq!(announce_at(&mut agent, now).hold_ms, None);
        agent.handle_announce_failed(now, &cut);
    }
    assert!(hold_fallbacks(&mut agent).is_empty());
    assert!(agent.is_discovering(), "a failed hold never ends discovery");
    // A new window asks again.
    agent
        .restart_discovery(now, &mut rand::rngs::StdRng::seed_from_u64(9))
        .unwrap();
    let _ = announce_at(&mut agent, now);
    agent.handle_announce_reply(now, reply_of(Some(Revision::V1_6), 2000));
    assert!(announce_at(&mut agent, now + 2 * SEC).hold_ms.is_some());
}

/// `handle_announce_failed` hands a refusal with the server's code to the same rule as
/// `handle_announce_refused`: one that ends discovery stops the agent (a held announcement
/// included), a retryable one does not; neither counts as a failed hold.
#[test]
fn a_coded_refusal_through_handle_announce_failed_keeps_its_meaning() {
    let (mut agent, now) = agent();
    let _ = announce_at(&mut agent, now);
    agent.handle_announce_reply(now, reply_of(Some(Revision::V1_6), 2000));
    let later = now + 2 * SEC;
    assert!(announce_at(&mut agent, later).hold_ms.is_some());
    let busy = TransportError::Refused {
        status: 503,
        code: WireCode::StoreUnavailable,
    };
    agent.handle_announce_failed(later, &busy);
    assert!(agent.is_discovering());
    let later = later + 2 * SEC;
    assert!(announce_at(&mut agent, later).hold_ms.is_some());
    let used = TransportError::Refused {
        status: 409,
        code: WireCode::InstanceUsed,
    };
    agent.handle_announce_failed(later, &used);
    assert_eq!(
        agent.status(),
        AgentStatus::Stopped(StopReason::AnnounceRefused(WireCode::InstanceUsed))
    );
    assert!(hold_fallbacks(&mut agent).is_empty());
}

/// `400 malformed` to a held announcement (a server behind a fleet being downgraded, say)
/// forgets the revision: the announcement goes again at once without the hold, and none is
/// asked until a reply states 1.6 again. It is no failed hold.
#[test]
fn no_hold_after_a_malformed_refusal() {
    let (mut agent, now) = agent();
    let _ = announce_at(&mut agent, now);
    agent.handle_announce_reply(now, reply_of(Some(Revision::V1_6), 2000));
    let later = now + 2 * SEC;
    assert!(announce_at(&mut agent, later).hold_ms.is_some());
    let malformed = TransportError::Refused {
        status: 400,
        code: WireCode::Malformed,
    };
    agent.handle_announce_failed(later, &malformed);
    assert_eq!(agent.server_revision(), None);
    let again = announce_at(&mut agent, later);
    assert_eq!((again.hold_ms, again.revision), (None, None));
    agent.handle_announce_failed(later, &malformed);
    assert!(agent.poll_transmit(later).is_none(), "no loop");
    assert!(hold_fallbacks(&mut agent).is_empty());
    agent.handle_announce_reply(later, reply_of(Some(Revision::V1_6), 2000));
    assert!(announce_at(&mut agent, later + 2 * SEC).hold_ms.is_some());
}

/// The cadence counts from when an announcement was sent: a held reply that comes back
/// after the interval (or the server's longer `poll_after_ms`) is followed by the next
/// announcement at once; a quick reply waits the rest of it (no spin).
#[test]
fn the_cadence_counts_from_the_send() {
    let (mut agent, now) = agent();
    let _ = announce_at(&mut agent, now);
    agent.handle_announce_reply(now, reply_of(Some(Revision::V1_6), 5000));
    assert_eq!(agent.poll_timeout(), Some(now + 5 * SEC));
    assert!(agent.poll_transmit(now + 4 * SEC).is_none());
    let sent = now + 5 * SEC;
    assert!(announce_at(&mut agent, sent).hold_ms.is_some());
    let answered = sent + 20 * SEC;
    agent.handle_announce_reply(answered, reply_of(Some(Revision::V1_6), 5000));
    assert!(
        agent.poll_transmit(answered).is_some(),
        "at once after a hold"
    );
    // Quick: no spin.
    agent.handle_announce_reply(answered, reply_of(Some(Revision::V1_6), 5000));
    assert!(agent.poll_transmit(answered).is_none());
    assert_eq!(agent.poll_timeout(), Some(answered + 5 * SEC));
    // A hold that ends before the server's poll_after waits the rest of it.
    let sent = answered + 5 * SEC;
    let _ = announce_at(&mut agent, sent);
    agent.handle_announce_reply(sent + 3 * SEC, reply_of(Some(Revision::V1_6), 5000));
    assert!(agent.poll_transmit(sent + 3 * SEC).is_none());
    assert_eq!(agent.poll_timeout(), Some(sent + 5 * SEC));
}

/// The reply to an announcement matters while the agent discovers as its instance inside
/// the window; not after a code, a cancel, a restart or the window's end.
#[test]
fn an_announcement_reply_stops_mattering() {
    let (mut agent, now) = agent();
    let id = announce_at(&mut agent, now).instance_id;
    assert!(agent.wants_announce_reply(now, id));
    assert!(!agent.wants_announce_reply(now, InstanceId::from_bytes([9; 16])));
    let end = now + MAX_DISCOVERY_WINDOW;
    assert!(!agent.wants_announce_reply(end, id), "the window's end");
    agent
        .restart_discovery(now, &mut rand::rngs::StdRng::seed_from_u64(8))
        .unwrap();
    assert!(!agent.wants_announce_reply(now, id), "another instance now");
    let id = agent.instance_id();
    assert!(agent.wants_announce_reply(now, id));
    agent.cancel();
    assert!(!agent.wants_announce_reply(now, id));
    let (mut coded, now) = super::tests::agent();
    let id = coded.instance_id();
    coded
        .enter_code(now, LinkCode::parse("482913").unwrap())
        .unwrap();
    assert!(!coded.wants_announce_reply(now, id));
}

#[test]
fn host_forms() {
    let (a, _) = agent();
    for ok in [
        "192.168.1.50",
        "192.168.1.50:8080",
        "[fe80::1]",
        "[::1]:80",
        "Printer.Local",
        "printer.local.:8080",
    ] {
        assert!(a.host_allowed(ok), "{ok}");
    }
    for bad in [
        "evil.example",
        "evil.example:8080",
        "fe80::1",
        "[fe80::1",
        "192.168.1.50:",
        "192.168.1.50:99999",
        "192.168.1.50:+80",
        "",
        "[::1]x",
        "1.2.3.4:80:80",
    ] {
        assert!(!a.host_allowed(bad), "{bad}");
    }
}

#[test]
fn config_limits() {
    let base = || AgentConfig::new("10.0.0.2".parse().unwrap(), 1, DeviceInfo::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let now = Instant::now();
    let err =
        |c: AgentConfig| Agent::new(c, now, &mut rand::rngs::StdRng::seed_from_u64(1)).unwrap_err();
    assert_eq!(
        err(base().window(MAX_DISCOVERY_WINDOW + Duration::from_secs(1))),
        ConfigError::DiscoveryWindow
    );
    assert_eq!(
        err(base().window(Duration::ZERO)),
        ConfigError::DiscoveryWindow
    );
    assert_eq!(
        err(base().announce_interval(Duration::ZERO)),
        ConfigError::AnnounceInterval
    );
    assert_eq!(
        err(base().window(Duration::from_secs(2))),
        ConfigError::AnnounceInterval
    );
    assert_eq!(
        err(AgentConfig::new(
            "8.8.8.8".parse().unwrap(),
            1,
            DeviceInfo::default()
        )),
        ConfigError::AgentAddress
    );
    assert_eq!(
        err(base().allow_origin("cloud.example")),
        ConfigError::HostOrOrigin
    );
    assert_eq!(
        err(base().allow_host("10.0.0.1")),
        ConfigError::HostOrOrigin
    );
    assert!(Agent::new(base().window(Duration::from_secs(60)), now, &mut rng).is_ok());
    assert_eq!(
        err(base().hold(MAX_HOLD + Duration::from_millis(1))),
        ConfigError::Hold
    );
    assert!(Agent::new(base().hold(MAX_HOLD), now, &mut rng).is_ok());
    assert!(Agent::new(base().hold(Duration::ZERO), now, &mut rng).is_ok());
    for public in ["8.8.8.8:80", "[2001:db8::1]:80", "100.64.0.1:80"] {
        let endpoint: SocketAddr = public.parse().unwrap();
        assert_eq!(
            err(base().candidates(vec![endpoint])),
            ConfigError::AgentAddress
        );
        assert_eq!(err(base().advertise(endpoint)), ConfigError::AgentAddress);
    }
}

/// The ordering: pinned, ordinary private, loopback, container-internal, link-local, each
/// group in the given order; repeats, scope ids, mapped forms and public addresses dropped;
/// at most 1 + MAX_CANDIDATES kept.
#[test]
fn endpoints_are_ordered_and_bounded() {
    let e = |s: &str| s.parse::<SocketAddr>().unwrap();
    let ordered = order_endpoints(
        None,
        [
            e("[fe80::1%3]:80"),
            e("169.254.1.1:80"),
            e("172.30.33.4:80"),
            e("127.0.0.1:80"),
            e("10.88.0.2:80"),
            e("172.17.0.2:80"),
            e("[::ffff:192.168.1.9]:80"),
            e("[fd00::1]:80"),
            e("192.168.1.9:80"),
            e("100.64.0.1:80"),
        ],
    );
    assert_eq!(
        ordered,
        [
            e("192.168.1.9:80"),
            e("[fd00::1]:80"),
            e("127.0.0.1:80"),
            e("172.30.33.4:80"),
            e("10.88.0.2:80"),
            e("172.17.0.2:80"),
            e("[fe80::1]:80"),
            e("169.254.1.1:80"),
        ]
    );
    let many = order_endpoints(
        Some(e("[fe80::9]:1")),
        (0..=255).map(|n| SocketAddr::from(([10, 0, 0, n], 80))),
    );
    assert_eq!(many.len(), MAX_CANDIDATES + 1);
    assert_eq!(many[0], e("[fe80::9]:1"), "the pinned endpoint stays first");
    // A public pinned endpoint is dropped like any other.
    assert_eq!(
        order_endpoints(Some(e("8.8.8.8:80")), [e("10.0.0.1:80")]),
        [e("10.0.0.1:80")]
    );
}

/// The local endpoint answers a request addressed to any of the agent's endpoints by IP
/// literal (a candidate included), as to `private_ip`; a name is still refused unless
/// configured.
#[test]
fn a_candidate_address_is_an_allowed_host() {
    let now = Instant::now();
    let config = AgentConfig::new("172.17.0.2".parse().unwrap(), 5000, DeviceInfo::default())
        .candidates(vec!["192.168.1.20:5000".parse().unwrap()]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut agent = Agent::new(config, now, &mut rng).unwrap();
    let id = agent.instance_id().to_string();
    for host in ["192.168.1.20:5000", "172.17.0.2:5000"] {
        let request = SecretRequest {
            peer: "192.168.1.30".parse().unwrap(),
            forwarded: ForwardedHeaders::NONE,
            host: Some(host),
            origin: None,
            instance_id: &id,
        };
        assert!(agent.handle_secret_request(now, &request).is_ok(), "{host}");
    }
    let request = SecretRequest {
        peer: "192.168.1.30".parse().unwrap(),
        forwarded: ForwardedHeaders::NONE,
        host: Some("printer.attacker.example:5000"),
        origin: None,
        instance_id: &id,
    };
    assert_eq!(
        agent.handle_secret_request(now, &request).unwrap_err(),
        SecretRefusal::BadHost
    );
}
