use super::*;
use crate::wire::DeviceInfo;

fn agent(candidates: &[&str]) -> DiscoveredAgent {
    DiscoveredAgent::new(
        InstanceId::from_bytes([7; 16]),
        "192.168.1.50".parse().unwrap(),
        8080,
        DeviceInfo::default(),
    )
    .with_candidates(candidates.iter().map(|c| c.parse().unwrap()).collect())
}

/// A linker that discovered `agent` and is about to fetch its secret.
fn fetching(agent: DiscoveredAgent, now: Instant) -> Linker {
    let mut linker = Linker::without_nonce(LinkerConfig::default(), now);
    assert!(matches!(
        linker.poll_transmit(now),
        Some(LinkerTransmit::Discover)
    ));
    let reply = DiscoverReply::new(vec![agent].into());
    linker.handle_discover_reply(now, Ok(reply)).unwrap();
    linker
}

/// Fetches the secret of the agent being fetched from (its first endpoint answers at `now`) and
/// takes the link request that follows: the instance it names.
fn link_request(linker: &mut Linker, now: Instant) -> InstanceId {
    let (_, fetch) = fetch_request(linker, now).expect("a fetch");
    linker
        .handle_secret_reply(now, fetch, Ok(secret()))
        .unwrap();
    let Some(LinkerTransmit::Link(request)) = linker.poll_transmit(now) else {
        panic!("a link request")
    };
    request.instance_id
}

/// A linker whose link request was accepted at `now` (state pending), with `config`.
fn waiting(config: LinkerConfig, now: Instant) -> (Linker, InstanceId) {
    let mut linker = Linker::without_nonce(config, now);
    assert!(matches!(
        linker.poll_transmit(now),
        Some(LinkerTransmit::Discover)
    ));
    let reply = DiscoverReply::new(vec![agent(&[])].into());
    linker.handle_discover_reply(now, Ok(reply)).unwrap();
    let id = link_request(&mut linker, now);
    let accepted = LinkStatusReply::new(id, LinkState::Pending);
    linker.handle_link_reply(now, Ok(accepted)).unwrap();
    (linker, id)
}

/// The hold of the status request due at `now`, if one is.
fn status_request(linker: &mut Linker, now: Instant) -> Option<Duration> {
    match linker.poll_transmit(now) {
        Some(LinkerTransmit::LinkStatus { hold, .. }) => Some(hold),
        Some(other) => panic!("{other:?}"),
        None => None,
    }
}

/// Issue 23 (revision 1.6): every status request asks for the configured hold (never past
/// the linker's deadline, never over the wire's most; none when configured zero), and the
/// next request is due one status interval after the previous one was sent: at once after
/// a held answer, but never sooner when a server (one before 1.6, or one granting no hold)
/// answers at once. Without the rule, an old server would see a request per answer, as fast
/// as it answers.
#[test]
fn status_requests_ask_for_a_hold_and_never_spin() {
    let interval = LinkerConfig::default().status_interval;
    let now = Instant::now();
    let (mut linker, id) = waiting(LinkerConfig::default(), now);
    assert_eq!(status_request(&mut linker, now), Some(DEFAULT_STATUS_HOLD));
    // Answered at once (no hold): nothing until one interval after the request was sent.
    let soon = now + Duration::from_millis(30);
    let pending = LinkStatusReply::new(id, LinkState::Pending);
    linker
        .handle_link_status(soon, Ok(pending.clone()))
        .unwrap();
    assert_eq!(linker.poll_timeout(), Some(now + interval));
    assert_eq!(status_request(&mut linker, soon), None);
    assert_eq!(
        status_request(&mut linker, now + interval - Duration::from_millis(1)),
        None
    );
    let sent = now + interval;
    assert_eq!(status_request(&mut linker, sent), Some(DEFAULT_STATUS_HOLD));
    // A held answer (the hold ended, still pending): asked again at once.
    let held = sent + DEFAULT_STATUS_HOLD;
    linker.handle_link_status(held, Ok(pending)).unwrap();
    assert_eq!(status_request(&mut linker, held), Some(DEFAULT_STATUS_HOLD));
    // The state moved (a held request answered on the change): asked again at once; the
    // same state again, answered at once, is no change: one interval after sending.
    let moved = held + Duration::from_millis(40);
    let delivered = LinkStatusReply::new(id, LinkState::Delivered);
    linker
        .handle_link_status(moved, Ok(delivered.clone()))
        .unwrap();
    assert_eq!(
        status_request(&mut linker, moved),
        Some(DEFAULT_STATUS_HOLD)
    );
    let again = moved + Duration::from_millis(10);
    linker.handle_link_status(again, Ok(delivered)).unwrap();
    assert_eq!(status_request(&mut linker, again), None);
    assert_eq!(linker.poll_timeout(), Some(moved + interval));
    let sent = moved + interval;
    assert_eq!(status_request(&mut linker, sent), Some(DEFAULT_STATUS_HOLD));
    // Linked as soon as the answer comes.
    let linked = LinkStatusReply::new(id, LinkState::Linked);
    linker
        .handle_link_status(sent + Duration::from_millis(5), Ok(linked))
        .unwrap();
    assert_eq!(linker.linked(), Some(id));

    // Never past the deadline, never over the wire's most, none when configured zero.
    let short = LinkerConfig {
        give_up_after: Duration::from_secs(8),
        ..LinkerConfig::default()
    };
    let (mut linker, _) = waiting(short, now);
    let later = now + Duration::from_secs(3);
    linker.handle_timeout(later);
    assert_eq!(
        status_request(&mut linker, later),
        Some(Duration::from_secs(5))
    );
    let long = LinkerConfig {
        status_hold: Duration::from_secs(60),
        ..LinkerConfig::default()
    };
    let (mut linker, _) = waiting(long, now);
    assert_eq!(
        status_request(&mut linker, now),
        Some(Duration::from_millis(u64::from(crate::wire::MAX_HOLD_MS)))
    );
    let off = LinkerConfig {
        status_hold: Duration::ZERO,
        ..LinkerConfig::default()
    };
    let (mut linker, _) = waiting(off, now);
    assert_eq!(status_request(&mut linker, now), Some(Duration::ZERO));
}

fn fetch_target(linker: &mut Linker, now: Instant) -> Option<SocketAddr> {
    fetch_request(linker, now).map(|(agent, _)| agent)
}

/// The next transmit, a secret request: its endpoint and its id.
fn fetch_request(linker: &mut Linker, now: Instant) -> Option<(SocketAddr, FetchId)> {
    match linker.poll_transmit(now) {
        Some(LinkerTransmit::FetchSecret { agent, fetch, .. }) => Some((agent, fetch)),
        Some(other) => panic!("{other:?}"),
        None => None,
    }
}

/// The id of the secret request in flight.
fn in_flight(linker: &Linker) -> FetchId {
    match &linker.state {
        State::Fetching {
            attempt: Some(_),
            current,
            ..
        } => *current,
        other => panic!("no request in flight: {other:?}"),
    }
}

fn secret() -> SecretReply {
    SecretReply::new(crate::LocalSecret::from_bytes([9; 32]))
}

fn events(linker: &mut Linker) -> Vec<LinkerEvent> {
    std::iter::from_fn(|| linker.poll_event()).collect()
}

/// Issue 24 (found by the model checker): the answer to a link request is lost after the
/// server accepted it. The linker asks the link's state instead of timing out, so it ends
/// linked with the device; a link the server never accepted ends `LinkLost`, not linked.
#[test]
fn a_lost_link_answer_is_followed_by_a_status_request() {
    for accepted in [true, false] {
        let now = Instant::now();
        let mut linker = fetching(agent(&[]), now);
        let id = link_request(&mut linker, now);
        // The answer is lost.
        linker.handle_transport_error(now);
        assert_eq!(linker.failure(), None);
        let Some(LinkerTransmit::LinkStatus { instance_id, .. }) = linker.poll_transmit(now) else {
            panic!("a status request at once")
        };
        assert_eq!(instance_id, id);
        let state = if accepted {
            LinkState::Linked
        } else {
            LinkState::Unknown
        };
        linker
            .handle_link_status(now, Ok(LinkStatusReply::new(id, state)))
            .unwrap();
        if accepted {
            assert_eq!(linker.linked(), Some(id));
        } else {
            assert_eq!(linker.failure(), Some(&LinkerFailure::LinkLost));
        }
    }
}

/// Endpoints are asked in order; an unreachable one moves on to the next; the one that
/// answers is reported; a candidate outside the local policy is never asked.
#[test]
fn tries_endpoints_in_order_and_skips_non_private_ones() {
    let now = Instant::now();
    let mut linker = fetching(
        agent(&[
            "203.0.113.9:8080",
            "10.0.0.5:8080",
            "10.0.0.5:0",
            "[fd00::5]:80",
        ]),
        now,
    );
    let id = InstanceId::from_bytes([7; 16]);
    let skipped: Vec<_> = events(&mut linker)
        .into_iter()
        .filter_map(|e| match e {
            LinkerEvent::EndpointSkipped { endpoint, .. } => Some(endpoint.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, ["203.0.113.9:8080", "10.0.0.5:0"]);
    let mut asked = Vec::new();
    for left in [2, 1] {
        let target = fetch_target(&mut linker, now).expect("a fetch");
        assert_eq!(linker.endpoints_left(), left);
        assert_eq!(linker.fetching_from(), Some(target));
        asked.push(target.to_string());
        // Nothing else while the attempt is in flight.
        assert!(linker.poll_transmit(now).is_none());
        linker
            .handle_secret_reply(now, in_flight(&linker), Err(FetchFailure::Unreachable))
            .unwrap();
    }
    let last = fetch_target(&mut linker, now).expect("a fetch");
    assert_eq!(linker.endpoints_left(), 0);
    asked.push(last.to_string());
    assert_eq!(
        asked,
        ["192.168.1.50:8080", "10.0.0.5:8080", "[fd00::5]:80"]
    );
    linker
        .handle_secret_reply(now, in_flight(&linker), Ok(secret()))
        .unwrap();
    let events = events(&mut linker);
    assert!(events.contains(&LinkerEvent::SecretFetched {
        instance_id: id,
        from: last
    }));
    assert!(matches!(
        linker.poll_transmit(now),
        Some(LinkerTransmit::Link(_))
    ));
}

/// However many candidates a server lists, a linker asks at most `1 + MAX_CANDIDATES`
/// endpoints.
#[test]
fn a_long_list_is_cut() {
    let now = Instant::now();
    let many: Vec<String> = (1..=40).map(|n| format!("10.0.0.{n}:8080")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut linker = fetching(agent(&many), now);
    let mut asked = 0;
    while fetch_target(&mut linker, now).is_some() {
        asked += 1;
        linker
            .handle_secret_reply(now, in_flight(&linker), Err(FetchFailure::Unreachable))
            .unwrap();
    }
    assert_eq!(asked, 1 + MAX_CANDIDATES);
    assert_eq!(
        linker.failure(),
        Some(&LinkerFailure::Fetch(FetchFailure::Unreachable))
    );
}

/// An agent that answers and refuses is not asked again at another address (fail closed).
#[test]
fn a_refusal_does_not_move_on() {
    let now = Instant::now();
    let mut linker = fetching(agent(&["10.0.0.5:8080"]), now);
    assert!(fetch_target(&mut linker, now).is_some());
    linker
        .handle_secret_reply(
            now,
            in_flight(&linker),
            Err(FetchFailure::Refused(
                crate::SecretRefusal::NotDiscovering.code(),
            )),
        )
        .unwrap();
    assert!(linker.poll_transmit(now).is_none());
    assert_eq!(
        linker.failure(),
        Some(&LinkerFailure::Fetch(FetchFailure::Refused(
            WireCode::NotDiscovering
        )))
    );
}

/// An endpoint that does not answer within `fetch_timeout` is given up (the deadline is
/// `poll_timeout`); after the last one the linker fails as unreachable.
#[test]
fn a_silent_endpoint_times_out_and_the_last_one_fails() {
    let now = Instant::now();
    let mut linker = fetching(agent(&["10.0.0.5:8080"]), now);
    assert!(fetch_target(&mut linker, now).is_some());
    let at = now + DEFAULT_FETCH_TIMEOUT;
    assert_eq!(linker.poll_timeout(), Some(at));
    linker.handle_timeout(at - Duration::from_millis(1));
    assert_eq!(
        linker.fetching_from(),
        Some("192.168.1.50:8080".parse().unwrap())
    );
    linker.handle_timeout(at);
    assert_eq!(
        fetch_target(&mut linker, at),
        Some("10.0.0.5:8080".parse().unwrap())
    );
    linker.handle_timeout(at + DEFAULT_FETCH_TIMEOUT);
    assert_eq!(
        linker.failure(),
        Some(&LinkerFailure::Fetch(FetchFailure::Unreachable))
    );
    // A transport error with no endpoint left fails the same way.
    let mut linker = fetching(agent(&[]), now);
    assert!(fetch_target(&mut linker, now).is_some());
    linker.handle_transport_error(now);
    assert_eq!(
        linker.failure(),
        Some(&LinkerFailure::Fetch(FetchFailure::Unreachable))
    );
}

/// Issue 22: a late answer is never credited to the request in flight. The first endpoint's
/// time runs out and the linker asks the second; the first's late answers (unreachable, or
/// even its secret) are refused as stale and change nothing: the second is still asked, and
/// its own answer is the one reported. Without the request ids, the late "unreachable"
/// would skip the second endpoint and the late secret would be reported as the second's.
#[test]
fn a_late_answer_is_not_credited_to_the_request_in_flight() {
    let now = Instant::now();
    let mut linker = fetching(agent(&["10.0.0.5:8080", "10.0.0.6:8080"]), now);
    let (first, first_id) = fetch_request(&mut linker, now).expect("a fetch");
    let later = now + DEFAULT_FETCH_TIMEOUT;
    let (second, second_id) = fetch_request(&mut linker, later).expect("the next endpoint");
    assert_ne!((first, first_id), (second, second_id));
    for late in [Err(FetchFailure::Unreachable), Ok(secret())] {
        assert_eq!(
            linker.handle_secret_reply(later, first_id, late),
            Err(LinkerError::StaleReply)
        );
        assert_eq!(linker.fetching_from(), Some(second));
        assert_eq!(linker.endpoints_left(), 1);
    }
    assert!(!events(&mut linker)
        .iter()
        .any(|e| matches!(e, LinkerEvent::SecretFetched { .. })));
    // An id it never gave out is no stale answer either.
    assert_eq!(
        linker.handle_secret_reply(later, FetchId(99), Ok(secret())),
        Err(LinkerError::UnexpectedInput)
    );
    linker
        .handle_secret_reply(later, second_id, Ok(secret()))
        .unwrap();
    let id = InstanceId::from_bytes([7; 16]);
    assert!(events(&mut linker).contains(&LinkerEvent::SecretFetched {
        instance_id: id,
        from: second
    }));
}
