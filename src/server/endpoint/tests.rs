use super::*;

/// The status route's `hold_ms` (revision 1.6): digits up to 25000, once; anything else
/// named `hold_ms` is malformed; other parameters are ignored as before 1.6.
#[test]
fn a_status_hold_is_digits_up_to_the_limit_once() {
    assert_eq!(status_hold(None).unwrap(), None);
    assert_eq!(status_hold(Some("x=1&y")).unwrap(), None);
    assert_eq!(status_hold(Some("hold_ms=20000")).unwrap(), Some(20_000));
    assert_eq!(status_hold(Some("a=b&hold_ms=00025")).unwrap(), Some(25));
    assert_eq!(status_hold(Some("hold_ms=25000")).unwrap(), Some(25_000));
    for bad in [
        "hold_ms=25001",
        "hold_ms=",
        "hold_ms=-1",
        "hold_ms=+5",
        "hold_ms=1e3",
        "hold_ms=100000",
        "hold_ms=%32",
        "hold_ms=1&hold_ms=2",
    ] {
        let refused = status_hold(Some(bad)).unwrap_err();
        assert_eq!(refused.status, 400, "{bad}");
    }
}

/// A held status request is answered when the agent redeems (its state moves), and at the
/// hold's end with the state then; a request without a hold, or for a link in no pending
/// state, is answered at once.
#[test]
fn a_held_status_request_answers_when_the_state_moves() {
    use crate::secret::PresenceKey;
    use crate::server::{Server, ServerConfig};
    use crate::wire::{Announce, LinkStatusReply};
    fn at_once<T>(future: impl std::future::Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("the in-memory store answers at once"),
        }
    }
    let server = Server::new(ServerConfig::default()).unwrap();
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let peer: IpAddr = "203.0.113.7".parse().unwrap();
    let home = PublicNetwork::from_ip(peer, 64);
    let key = PresenceKey::from_bytes([4; 32]);
    let id = key.instance_id();
    let secret = crate::LocalSecret::from_bytes([5; 32]);
    let announce = Announce::new(
        id,
        "192.168.1.50".parse().unwrap(),
        8080,
        Default::default(),
        secret.commitment(&id),
        key.clone(),
    );
    let alice = User::new(crate::AccountId::new("alice").unwrap());
    let mut rng = crate::os_rng();
    at_once(server.announce(now, home, &announce)).unwrap();
    let path = format!("/lanlink/v1/link/{id}");
    let status = |query: Option<&str>, rng: &mut _, at| {
        let request = HttpRequest {
            method: "GET",
            path: &path,
            query,
            authority: None,
            headers: &[],
            peer: Some(peer),
        };
        at_once(handle(
            &server,
            at,
            rng,
            "/lanlink/v1",
            &request,
            RequestBody::Complete(&[]),
            Some(&alice),
        ))
    };
    // Nothing pending: answered at once, hold or not.
    assert!(matches!(
        status(Some("hold_ms=20000"), &mut rng, now),
        Handled::Answer(_)
    ));
    let request = LinkRequest::new(id, secret.clone());
    at_once(server.link(now, &mut rng, home, &alice, request)).unwrap();
    // Pending without a hold: at once.
    assert!(matches!(status(None, &mut rng, now), Handled::Answer(_)));
    let Handled::Hold(held) = status(Some("hold_ms=20000"), &mut rng, now) else {
        panic!("a pending link's status is held");
    };
    assert_eq!(held.instance_id(), id);
    assert!(at_once(resume(&server, now, &held)).is_none());
    // The agent takes its message (delivered: the state moved).
    let taken = at_once(server.announce(now, home, &announce)).unwrap();
    assert_eq!(taken.messages.len(), 1);
    let answer = at_once(resume(&server, now, &held)).expect("the state moved");
    let reply: LinkStatusReply = wire::decode(&answer.body, MAX_MESSAGE_BYTES).unwrap();
    assert_eq!(reply.state, LinkState::Delivered);
    // Held again while delivered; at the hold's end, answered with the state then.
    let Handled::Hold(again) = status(Some("hold_ms=1000"), &mut rng, now) else {
        panic!("a delivered link's status is held");
    };
    assert!(at_once(resume(&server, now, &again)).is_none());
    let at_end = at_once(resume(&server, again.until(), &again)).unwrap();
    let reply: LinkStatusReply = wire::decode(&at_end.body, MAX_MESSAGE_BYTES).unwrap();
    assert_eq!(reply.state, LinkState::Delivered);
}

/// The ticket route's function: each refusal of `PROTOCOL.md`, and a good ticket for the
/// caller's own network (a forwarding line from an untrusted peer counts for nothing).
#[cfg(feature = "ticket")]
#[test]
fn the_ticket_route_proves_the_key_and_resolves_the_network() {
    use crate::secret::PresenceKey;
    use crate::ticket::{TicketKey, TicketReply};
    let key = TicketKey::from_bytes([3; 32]);
    let config = crate::server::ServerConfig::default();
    let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let presence = PresenceKey::from_bytes([4; 32]);
    let id = presence.instance_id();
    let secret = crate::LocalSecret::from_bytes([5; 32]);
    let announce = |key: PresenceKey, id| {
        wire::encode(&wire::Announce::new(
            id,
            "192.168.1.50".parse().expect("ip"),
            8080,
            wire::DeviceInfo::default(),
            secret.commitment(&id),
            key,
        ))
    };
    let good = announce(presence.clone(), id);
    let forged = announce(PresenceKey::from_bytes([6; 32]), id);
    let headers = [("x-forwarded-for", &b"203.0.113.9"[..])];
    let request = |peer: Option<&str>| HttpRequest {
        method: "POST",
        path: "/lanlink/v1/agent/ticket",
        query: None,
        authority: None,
        headers: &headers,
        peer: peer.map(|p| p.parse().expect("ip")),
    };
    let ask = |peer: Option<&str>, body: RequestBody<'_>| {
        let answer = issue_ticket(
            &key,
            &config,
            chrono::TimeDelta::hours(1),
            now,
            &request(peer),
            body,
        );
        let text = String::from_utf8_lossy(&answer.response.body).into_owned();
        (
            answer.response.status,
            text,
            answer.response.close,
            answer.issued,
        )
    };
    let peer = Some("198.51.100.7");
    let refused = [
        (
            ask(peer, RequestBody::Complete(&forged)),
            403,
            "forged_instance",
            false,
        ),
        (
            ask(None, RequestBody::Complete(&good)),
            403,
            "unresolvable_client",
            false,
        ),
        (ask(peer, RequestBody::TooLarge), 413, "too_large", true),
        (
            ask(peer, RequestBody::TimedOut),
            408,
            "request_timeout",
            true,
        ),
        (ask(peer, RequestBody::Broken), 400, "malformed", true),
        (
            ask(peer, RequestBody::Complete(b"{")),
            400,
            "malformed",
            false,
        ),
    ];
    for ((status, text, close, issued), want, code, closes) in refused {
        assert_eq!((status, close, issued), (want, closes, None), "{text}");
        assert!(text.contains(code), "{text}");
    }
    let (status, text, close, issued) = ask(peer, RequestBody::Complete(&good));
    let network = config.network_of("198.51.100.7".parse().expect("ip"));
    assert_eq!((status, close, issued), (200, false, Some((network, id))));
    let reply: TicketReply = serde_json::from_str(&text).expect("reply");
    let ticket = key.verify(now, &reply.ticket, &id).expect("a valid ticket");
    assert_eq!(
        ticket.network, network,
        "the peer's own network, not the forwarded one"
    );
    assert_eq!(reply.client_id, key.client_id(&id));
}

#[test]
fn routes_match_the_reference_router() {
    let p = "/lanlink/v1";
    let route = |method, path| Route::of(p, method, path);
    assert_eq!(route("POST", "/lanlink/v1/agent/announce"), Route::Announce);
    assert_eq!(route("HEAD", "/lanlink/v1/discover"), Route::Discover);
    assert_eq!(
        route("OPTIONS", "/lanlink/v1/discover"),
        Route::NotAllowed("GET,HEAD")
    );
    assert_eq!(route("GET", "/lanlink/v1/codes"), Route::NotAllowed("POST"));
    assert_eq!(
        route("get", "/lanlink/v1/discover"),
        Route::NotAllowed("GET,HEAD")
    );
    assert_eq!(route("GET", "/lanlink/v1/link/x"), Route::LinkStatus("x"));
    assert_eq!(
        route("PUT", "/lanlink/v1/link/x"),
        Route::NotAllowed("GET,HEAD")
    );
    for path in [
        "/lanlink/v1/link/",
        "/lanlink/v1/link/x/y",
        "/lanlink/v1/discover/",
        "/lanlink/v1",
        "/lanlink/v1/",
        "/lanlink/v1discover",
        "/",
        "",
        "*",
    ] {
        assert_eq!(route("GET", path), Route::NotFound, "{path:?}");
    }
    assert_eq!(Route::of("/", "GET", "/discover"), Route::Discover);
}

#[test]
fn header_lines_are_text_only_when_visible_ascii() {
    assert_eq!(
        header_text(b"203.0.113.7, 10.0.0.1\t"),
        Some("203.0.113.7, 10.0.0.1\t")
    );
    assert_eq!(header_text(b"caf\xc3\xa9"), None, "UTF-8 but not ASCII");
    assert_eq!(header_text(b"\xff"), None);
    assert_eq!(header_text(b"a\x01"), None);
    assert_eq!(header_text(b"a\x7f"), None);
}

/// The in-memory server's futures are ready at once.
fn ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the in-memory server waited"),
    }
}

/// A head over [`MAX_HEAD_BYTES`] is `431` with an empty body and the connection closed,
/// on any route, before routing or authentication; one at the limit is answered as usual.
#[test]
fn a_head_over_the_limit_is_431_before_any_route() {
    let server = Server::new(super::super::ServerConfig::default()).unwrap();
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let path = "/lanlink/v1/discover";
    let answer = |padding: usize| {
        let value = vec![b'a'; padding];
        let headers: [(&str, &[u8]); 1] = [("x-padding", &value)];
        let request = HttpRequest {
            method: "GET",
            path,
            query: None,
            authority: None,
            headers: &headers,
            peer: Some("203.0.113.7".parse().unwrap()),
        };
        assert_eq!(
            head_bytes(&request),
            path.len() + "x-padding".len() + 4 + padding
        );
        ready(handle(
            &server,
            now,
            &mut crate::os_rng(),
            "/lanlink/v1",
            &request,
            RequestBody::Complete(&[]),
            None,
        ))
    };
    let at_limit = MAX_HEAD_BYTES - path.len() - "x-padding".len() - 4;
    assert!(matches!(answer(at_limit), Handled::NeedsUser { .. }));
    match answer(at_limit + 1) {
        Handled::Answer(answer) => {
            assert_eq!(
                (answer.status, answer.body.len(), answer.close),
                (431, 0, true)
            );
            assert!(answer.headers.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn path_segments_decode_as_axum_does() {
    assert_eq!(percent_decode("a%2Db").as_deref(), Some("a-b"));
    assert_eq!(percent_decode("a%2").as_deref(), Some("a%2"));
    assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
    assert_eq!(percent_decode("%ff"), None);
}
