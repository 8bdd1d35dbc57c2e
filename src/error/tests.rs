use super::*;
use crate::transport::{reply_from, TransportError};

/// Every refusal, each once. The exhaustive match below fails to compile when a variant is
/// added, and the test fails if the variant is not also listed here.
fn every_refusal() -> Vec<Refusal> {
    let all = vec![
        Refusal::ClientAddr(ClientAddrError::MissingForwarded),
        Refusal::ClientAddr(ClientAddrError::UnparsableHop),
        Refusal::ClientAddr(ClientAddrError::OnlyTrustedHops),
        Refusal::ClientAddr(ClientAddrError::TooManyHops),
        Refusal::ClientAddr(ClientAddrError::AmbiguousHeaders),
        Refusal::LockedOut,
        Refusal::NotPrivateIp,
        Refusal::ForgedInstance,
        Refusal::PresenceConflict,
        Refusal::InstanceUsed,
        Refusal::WindowOver,
        Refusal::NetworkFull,
        Refusal::AgentNotFound,
        Refusal::TooManyAgents,
        Refusal::SharedNetwork,
        Refusal::AgentContested,
        Refusal::AlreadyLinking,
        Refusal::WrongSecret,
        Refusal::UnknownCode,
        Refusal::CodeUsed,
        Refusal::CodeWrongAgent,
        Refusal::CodeWrongNetwork,
        Refusal::CodeSpaceExhausted,
        Refusal::MintQuota,
        Refusal::CodesSuspended,
        Refusal::Store(crate::server::StoreError::Unavailable),
        Refusal::Store(crate::server::StoreError::Contention),
        Refusal::Store(crate::server::StoreError::Corrupt),
        Refusal::Store(crate::server::StoreError::Refused),
        Refusal::LinkUnavailable,
        Refusal::Superseded,
        Refusal::BadOrigin,
        Refusal::UnsupportedMediaType,
    ];
    let index = |refusal: &Refusal| match refusal {
        Refusal::ClientAddr(_) => 0,
        Refusal::LockedOut => 1,
        Refusal::NotPrivateIp => 2,
        Refusal::ForgedInstance => 3,
        Refusal::PresenceConflict => 4,
        Refusal::InstanceUsed => 5,
        Refusal::WindowOver => 6,
        Refusal::NetworkFull => 7,
        Refusal::AgentNotFound => 8,
        Refusal::TooManyAgents => 9,
        Refusal::SharedNetwork => 10,
        Refusal::AgentContested => 11,
        Refusal::AlreadyLinking => 12,
        Refusal::WrongSecret => 13,
        Refusal::UnknownCode => 14,
        Refusal::CodeUsed => 15,
        Refusal::CodeWrongAgent => 16,
        Refusal::CodeWrongNetwork => 17,
        Refusal::CodeSpaceExhausted => 18,
        Refusal::MintQuota => 19,
        Refusal::CodesSuspended => 20,
        Refusal::Store(_) => 21,
        Refusal::LinkUnavailable => 22,
        Refusal::Superseded => 23,
        Refusal::BadOrigin => 24,
        Refusal::UnsupportedMediaType => 25,
    };
    let covered: std::collections::BTreeSet<usize> = all.iter().map(index).collect();
    assert_eq!(
        covered,
        (0..26).collect(),
        "every Refusal variant is listed"
    );
    all
}

fn every_secret_refusal() -> Vec<SecretRefusal> {
    let all = vec![
        SecretRefusal::NotDiscovering,
        SecretRefusal::WindowExpired,
        SecretRefusal::ClientAddr(ClientAddrError::MissingForwarded),
        SecretRefusal::NotLocal,
        SecretRefusal::WrongInstance,
        SecretRefusal::BadHost,
        SecretRefusal::BadOrigin,
    ];
    let index = |refusal: &SecretRefusal| match refusal {
        SecretRefusal::NotDiscovering => 0,
        SecretRefusal::WindowExpired => 1,
        SecretRefusal::ClientAddr(_) => 2,
        SecretRefusal::NotLocal => 3,
        SecretRefusal::WrongInstance => 4,
        SecretRefusal::BadHost => 5,
        SecretRefusal::BadOrigin => 6,
    };
    let covered: std::collections::BTreeSet<usize> = all.iter().map(index).collect();
    assert_eq!(
        covered,
        (0..7).collect(),
        "every SecretRefusal variant is listed"
    );
    all
}

/// The rules every row of the table keeps, so status, retryability and discovery-ending
/// cannot disagree.
#[track_caller]
fn assert_coherent(code: WireCode) {
    let class = code.class();
    let status = class.status.unwrap_or_else(|| panic!("{code}: no status"));
    assert!((400..600).contains(&status), "{code}: {status}");
    // Retryable exactly at 503 (temporarily unable) and 408 (not all arrived in time).
    assert_eq!(class.retryable, matches!(status, 408 | 503), "{code}");
    if class.ends_discovery {
        assert!(!class.retryable, "{code}: ends discovery yet retryable");
        assert!(
            matches!(status, 403 | 409),
            "{code}: ends discovery at {status}"
        );
    }
    if class.counts_as_guess {
        assert!(!class.retryable && !class.ends_discovery, "{code}");
        assert!(
            matches!(status, 403 | 404 | 409),
            "{code}: a guess at {status}"
        );
    }
}

#[test]
fn every_known_code_has_one_string_one_row_and_a_coherent_class() {
    let mut texts = std::collections::BTreeSet::new();
    for code in WireCode::KNOWN {
        assert!(texts.insert(code.as_str()), "{code}: twice");
        assert_eq!(WireCode::parse(code.as_str()), Some(*code), "round trip");
        assert_eq!(code.static_str(), code.as_str());
        assert_eq!(code.to_string(), code.as_str());
        assert_eq!(
            serde_json::to_string(code).unwrap(),
            format!("\"{}\"", code.as_str())
        );
        assert_coherent(*code);
    }
    assert!(!texts.contains("no_code"), "no_code is no wire code");
}

#[test]
fn every_refusal_is_classified_by_its_wire_code() {
    let mut details = std::collections::BTreeSet::new();
    for refusal in every_refusal() {
        let code = refusal.code();
        assert!(WireCode::KNOWN.contains(&code), "{refusal:?}");
        assert_coherent(code);
        assert_eq!(refusal.class(), code.class());
        assert_eq!(Some(refusal.status()), code.class().status, "{refusal:?}");
        assert_eq!(refusal.is_retryable(), code.class().retryable);
        assert_eq!(refusal.ends_discovery(), code.class().ends_discovery);
        assert_eq!(refusal.counts_as_failure(), code.class().counts_as_guess);
        assert!(
            details.insert(refusal.detail()),
            "{refusal:?}: its detail twice"
        );
        assert!(refusal
            .detail()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_'));
    }
    // The collapse: the four code failures read alike on the wire, apart in the audit.
    for refusal in [
        Refusal::UnknownCode,
        Refusal::CodeUsed,
        Refusal::CodeWrongAgent,
        Refusal::CodeWrongNetwork,
    ] {
        assert_eq!(refusal.code(), WireCode::InvalidCode);
    }
    // The disagreement the review found is settled: 503 is retryable for everyone.
    assert!(Refusal::CodeSpaceExhausted.is_retryable());
    let client = TransportError::Refused {
        status: 503,
        code: WireCode::CodeSpaceExhausted,
    };
    assert!(client.is_retryable());
}

#[test]
fn every_secret_refusal_is_classified_by_its_wire_code() {
    for refusal in every_secret_refusal() {
        let code = refusal.code();
        assert!(WireCode::KNOWN.contains(&code), "{refusal:?}");
        assert_coherent(code);
        let class = code.class();
        assert!(!class.retryable && !class.ends_discovery && !class.counts_as_guess);
        let expected = if refusal == SecretRefusal::WrongInstance {
            404
        } else {
            403
        };
        assert_eq!(
            crate::endpoint::status_of_secret_refusal(&refusal),
            expected
        );
    }
}

#[test]
fn an_unknown_code_is_kept_bounded_and_fails_closed() {
    let newer = WireCode::parse("a_code_from_2030").unwrap();
    assert!(matches!(newer, WireCode::Unknown(_)));
    assert_eq!(newer.as_str(), "a_code_from_2030");
    let class = newer.class();
    assert_eq!(class.status, None);
    assert!(class.ends_discovery && !class.retryable && !class.counts_as_guess);
    let longest = "x".repeat(UnknownCode::MAX_LEN);
    assert_eq!(WireCode::parse(&longest).unwrap().as_str(), longest);
    for never in [
        "",
        "Wrong_Secret",
        "wrong secret",
        "wrong-secret",
        "ünïcode",
        "x\n",
        &"x".repeat(UnknownCode::MAX_LEN + 1),
    ] {
        assert_eq!(WireCode::parse(never), None, "{never:?}");
    }
    assert!(
        std::mem::size_of::<WireCode>() <= 40,
        "{}",
        std::mem::size_of::<WireCode>()
    );
    // At the client: a newer code at any status is never retried; a bare page is retried
    // only when a gateway sent it.
    for status in [400, 403, 409, 503] {
        let err = TransportError::Refused {
            status,
            code: newer,
        };
        assert!(!err.is_retryable(), "{status}");
        assert!(err.class().unwrap().ends_discovery);
        assert_eq!(err.refused_code(), Some(newer));
    }
    for (status, retryable) in [
        (502, true),
        (503, true),
        (504, true),
        (404, false),
        (500, false),
    ] {
        let err = reply_from::<serde_json::Value>(status, b"<html>oops</html>").unwrap_err();
        assert_eq!(
            err,
            TransportError::Refused {
                status,
                code: WireCode::NoCode
            }
        );
        assert_eq!(err.is_retryable(), retryable, "{status}");
        assert!(!err.class().unwrap().ends_discovery);
        assert_eq!(err.refused_code(), None);
    }
}

/// Server refusal → the HTTP answer → the client's reading: the same code, status and
/// class on both sides.
#[test]
fn every_refusal_reads_back_alike_at_the_client_over_http() {
    for refusal in every_refusal() {
        let answer = crate::server::endpoint::ServerResponse::refusal(&refusal);
        assert_eq!(answer.status, refusal.status());
        let err = reply_from::<serde_json::Value>(answer.status, &answer.body).unwrap_err();
        assert_eq!(
            err,
            TransportError::Refused {
                status: refusal.status(),
                code: refusal.code()
            },
            "{refusal:?}"
        );
        assert_eq!(err.class(), Some(refusal.class()), "{refusal:?}");
        assert_eq!(err.is_retryable(), refusal.is_retryable(), "{refusal:?}");
        assert_eq!(err.refused_code(), Some(refusal.code()));
        assert!(!err.is_malformed_request());
        #[cfg(feature = "http-server")]
        assert_eq!(crate::http::status_of(&refusal).as_u16(), refusal.status());
    }
    for secret in every_secret_refusal() {
        let status = crate::endpoint::status_of_secret_refusal(&secret);
        let body = crate::wire::encode(&crate::wire::ErrorBody::new(
            secret.code().as_str().to_owned(),
        ));
        let err = reply_from::<serde_json::Value>(status, &body).unwrap_err();
        assert_eq!(
            err,
            TransportError::Refused {
                status,
                code: secret.code()
            }
        );
        assert_eq!(err.class(), Some(secret.code().class()));
    }
}

/// Server refusal → the MQTT `refused` reply → the agent transport's reading.
#[cfg(all(feature = "mqtt", feature = "ticket"))]
#[test]
fn every_refusal_reads_back_alike_at_the_client_over_mqtt() {
    use crate::server::mqtt::DownMessage;
    for refusal in every_refusal() {
        let message = crate::server::mqtt::refusal_message("r1".to_owned(), &refusal);
        let payload = crate::wire::encode(&message);
        let decoded: DownMessage = serde_json::from_slice(&payload).unwrap();
        let DownMessage::Refused { id, status, error } = decoded else {
            panic!("{refusal:?}: not a refusal");
        };
        assert_eq!(id, "r1");
        let err = crate::mqtt::agent::refused(status, &error);
        assert_eq!(
            err,
            TransportError::Refused {
                status: refusal.status(),
                code: refusal.code()
            }
        );
        assert_eq!(err.class(), Some(refusal.class()), "{refusal:?}");
        assert_eq!(err.is_retryable(), refusal.is_retryable(), "{refusal:?}");
    }
}

/// A malformed-request refusal is recognised as one (the revision fallbacks hang on it),
/// and only with its status.
#[test]
fn a_malformed_request_is_recognised_through_its_code() {
    let (status, code) =
        crate::server::endpoint::status_of_wire_error(&crate::wire::WireError::Malformed);
    let body = crate::wire::encode(&crate::wire::ErrorBody::new(code.to_owned()));
    let err = reply_from::<serde_json::Value>(status, &body).unwrap_err();
    assert!(err.is_malformed_request());
    assert_eq!(err.code(), Some(WireCode::Malformed));
    assert!(!TransportError::Refused {
        status: 403,
        code: WireCode::Malformed
    }
    .is_malformed_request());
    assert!(!TransportError::Malformed.is_malformed_request());
}
