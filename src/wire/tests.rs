use super::device_info::InfoText;
use super::*;

fn announce() -> Announce {
    let key = PresenceKey::from_bytes([7; 32]);
    let id = key.instance_id();
    Announce::new(
        id,
        "192.168.1.50".parse().unwrap(),
        8080,
        DeviceInfo::new("h", "m", "a", "1").unwrap(),
        LocalSecret::from_bytes([1; 32]).commitment(&id),
        key,
    )
}

#[test]
fn announce_round_trip_and_limits() {
    let a = announce();
    let bytes = encode(&a);
    assert_eq!(decode_announce(&bytes).unwrap(), a);
    let big = vec![b' '; MAX_ANNOUNCE_BYTES + 1];
    assert_eq!(
        decode_announce(&big),
        Err(WireError::TooLarge {
            limit: MAX_ANNOUNCE_BYTES
        })
    );
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["info"]["model"] = "x".repeat(65).into();
    let long = serde_json::to_vec(&v).unwrap();
    assert_eq!(decode_announce(&long), Err(WireError::BadField("model")));
    v["info"]["model"] = "ok".into();
    v["info"]["agent_version"] = "1".repeat(33).into();
    let long = serde_json::to_vec(&v).unwrap();
    assert_eq!(
        decode_announce(&long),
        Err(WireError::BadField("agent_version"))
    );
    v["info"]["agent_version"] = "1".into();
    v["info"]["agent"] = "a\u{1b}".into();
    let control = serde_json::to_vec(&v).unwrap();
    assert_eq!(
        decode_announce(&control),
        Err(WireError::HiddenCharacter("agent"))
    );
    v["info"]["agent"] = "a".into();
    v["extra"] = 1.into();
    let extra = serde_json::to_vec(&v).unwrap();
    assert_eq!(decode_announce(&extra), Err(WireError::Malformed));
    let mut w: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    w["version"] = 2.into();
    assert_eq!(
        decode_announce(&serde_json::to_vec(&w).unwrap()),
        Err(WireError::Version)
    );
}

/// Every class of hidden character is refused in every field, on decode and in
/// `DeviceInfo::new`, with an error that names the field and never the text; ordinary
/// non-ASCII names pass.
#[test]
fn device_info_refuses_hidden_characters_and_keeps_other_text() {
    let classes: &[(&str, &[char])] = &[
        (
            "bidi embeddings, overrides, isolates and marks",
            &[
                '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
                '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
            ],
        ),
        (
            "zero-width characters (ZWJ too)",
            &[
                '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{2061}', '\u{2062}', '\u{2063}',
                '\u{2064}', '\u{FEFF}',
            ],
        ),
        (
            "other default-ignorables",
            &[
                '\u{00AD}',
                '\u{034F}',
                '\u{115F}',
                '\u{1160}',
                '\u{17B4}',
                '\u{17B5}',
                '\u{180B}',
                '\u{180E}',
                '\u{180F}',
                '\u{3164}',
                '\u{FE00}',
                '\u{FE0F}',
                '\u{FFA0}',
                '\u{1BCA0}',
                '\u{1BCA3}',
                '\u{1D173}',
                '\u{1D17A}',
                '\u{E0000}',
                '\u{E0001}',
                '\u{E0041}',
                '\u{E0100}',
                '\u{E0FFF}',
            ],
        ),
        (
            "controls and separators",
            &[
                '\u{0}', '\u{9}', '\u{1F}', '\u{7F}', '\u{85}', '\u{9F}', '\u{2028}', '\u{2029}',
            ],
        ),
    ];
    let bytes = encode(&announce());
    for (class, chars) in classes {
        for &c in *chars {
            for field in FIELD_NAMES {
                let text = format!("Prusa{c}MK4");
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                v["info"][field] = text.clone().into();
                let body = serde_json::to_vec(&v).unwrap();
                let err = decode_announce(&body).unwrap_err();
                let code = u32::from(c);
                assert_eq!(
                    err,
                    WireError::HiddenCharacter(field),
                    "{class} U+{code:04X}"
                );
                let message = err.to_string();
                assert!(!message.contains(c) && !message.contains("Prusa"));
                let mut fields = ["", "", "", ""];
                let at = FIELD_NAMES.iter().position(|f| *f == field).unwrap();
                fields[at] = &text;
                assert_eq!(
                    DeviceInfo::new(fields[0], fields[1], fields[2], fields[3]).unwrap_err(),
                    WireError::HiddenCharacter(field)
                );
            }
        }
    }
    // A bare hidden character at either end, and a whole field of them.
    for text in ["\u{200B}printer", "printer\u{202C}", "\u{3164}\u{3164}"] {
        assert!(DeviceInfo::new(text, "", "", "").is_err(), "{text:?}");
    }
    for name in [
        "imprimante-é",
        "Drucker für Küche",
        "打印机",
        "プリンター",
        "한국어 프린터",
        "Ελληνικά",
        "עברית",
        "العربية",
        "हिन्दी",
        "🖨 Voron 🦊",
        "👍🏽",
        "🇫🇷",
    ] {
        let info = DeviceInfo::new(name, name, "", "").unwrap();
        assert_eq!(info.hostname(), name);
        let back: DeviceInfo = serde_json::from_slice(&encode(&info)).unwrap();
        assert_eq!(back, info);
    }
    // Emoji joined by ZWJ or styled by a variation selector are refused with the rest.
    for sequence in ["👩\u{200D}🔧", "🖨\u{FE0F}"] {
        assert_eq!(
            DeviceInfo::new(sequence, "", "", "").unwrap_err(),
            WireError::HiddenCharacter("hostname")
        );
    }
}

/// Revision 1.3: candidates round-trip, are left out when empty (so a 1.3 agent without
/// any talks to a 1.2 server), read as none when absent (old agents and servers), and more
/// than [`MAX_CANDIDATES`] are refused as `bad_field`, never echoed.
#[test]
fn candidates_are_optional_and_bounded() {
    let plain = announce();
    let bytes = encode(&plain);
    assert!(!std::str::from_utf8(&bytes).unwrap().contains("candidates"));
    let mut with = plain.clone();
    with.candidates = vec![
        "10.0.0.5:8080".parse().unwrap(),
        "[fe80::1]:8080".parse().unwrap(),
    ];
    let text = String::from_utf8(encode(&with).to_vec()).unwrap();
    assert!(
        text.contains(r#""candidates":["10.0.0.5:8080","[fe80::1]:8080"]"#),
        "{text}"
    );
    assert_eq!(decode_announce(text.as_bytes()).unwrap(), with);
    with.candidates = (0..=MAX_CANDIDATES as u8)
        .map(|n| SocketAddr::from(([10, 0, 0, n], 8080)))
        .collect();
    assert_eq!(
        decode_announce(&encode(&with)),
        Err(WireError::BadField("candidates"))
    );
    with.candidates.pop();
    assert_eq!(decode_announce(&encode(&with)).unwrap(), with);
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["candidates"] = serde_json::json!(["not an address"]);
    assert_eq!(
        decode_announce(&serde_json::to_vec(&v).unwrap()),
        Err(WireError::Malformed)
    );
    // A 1.2 discovery reply (no candidates) reads, and a 1.3 one without any writes none.
    let old = r#"{"agents":[{"instance_id":"7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90","private_ip":"192.168.1.50","port":8080,"info":{}}]}"#;
    let reply: DiscoverReply = decode(old.as_bytes(), MAX_MESSAGE_BYTES).unwrap();
    assert!(reply.agents[0].candidates.is_empty());
    assert_eq!(
        reply.agents[0].endpoints(),
        ["192.168.1.50:8080".parse().unwrap()]
    );
    assert!(!String::from_utf8(encode(&reply).to_vec())
        .unwrap()
        .contains("candidates"));
}

#[test]
fn largest_announce_fits() {
    let mut a = announce();
    // Every field at its limit, in characters that JSON escapes (doubling their size).
    a.info = DeviceInfo::new(
        "\"".repeat(limits::HOSTNAME),
        "\\".repeat(limits::MODEL),
        "\"".repeat(limits::AGENT),
        "\\".repeat(limits::AGENT_VERSION),
    )
    .unwrap();
    a.private_ip = "fe80::1234:5678:9abc:def0".parse().unwrap();
    a.candidates = vec![
        "[fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        MAX_CANDIDATES
    ];
    let bytes = encode(&a);
    assert!(bytes.len() <= MAX_ANNOUNCE_BYTES, "{}", bytes.len());
    assert_eq!(decode_announce(&bytes).unwrap(), a);
}

#[test]
fn secrets_not_echoed_in_errors() {
    let body = br#"{"instance_id":"00000000-0000-4000-8000-000000000000","local_secret":"zz5ecret5ecret"}"#;
    let err = decode::<LinkRequest>(body, MAX_MESSAGE_BYTES).unwrap_err();
    assert!(!err.to_string().contains("5ecret"));
}

#[test]
fn device_info_inline_and_shared_forms_read_the_same() {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};
    let hash = |info: &DeviceInfo| {
        let mut h = DefaultHasher::new();
        info.hash(&mut h);
        h.finish()
    };
    // Every split of up to 60 characters across two fields, in one-, two- and three-byte
    // characters: texts on both sides of the inline limit, with multi-byte characters at
    // every boundary.
    for filler in ["x", "é", "漢"] {
        for h in 0..=40 {
            for m in 0..=21 {
                let (host, model) = (filler.repeat(h), filler.repeat(m));
                if model.len() > limits::MODEL {
                    continue;
                }
                let info = DeviceInfo::new(&host, &model, "", "v").unwrap();
                assert_eq!(
                    (
                        info.hostname(),
                        info.model(),
                        info.agent(),
                        info.agent_version()
                    ),
                    (host.as_str(), model.as_str(), "", "v")
                );
                let copy = info.clone();
                assert_eq!(info, copy);
                assert_eq!(hash(&info), hash(&copy));
                let back: DeviceInfo = serde_json::from_slice(&encode(&info)).unwrap();
                assert_eq!(back, info);
                assert_eq!(back.fingerprint(), info.fingerprint());
                // The same characters split differently are a different info.
                if h > 0 && model.len() + filler.len() <= limits::MODEL {
                    let moved =
                        DeviceInfo::new(filler.repeat(h - 1), filler.repeat(m + 1), "", "v")
                            .unwrap();
                    assert_ne!(moved, info);
                }
            }
        }
    }
    assert_eq!(
        DeviceInfo::default(),
        DeviceInfo::new("", "", "", "").unwrap()
    );
    assert_eq!(
        DeviceInfo::default().fingerprint(),
        DeviceInfo::new("", "", "", "").unwrap().fingerprint()
    );
    // 46 bytes stay inline (no allocation to chase), 47 do not.
    let inline = DeviceInfo::new("h".repeat(40), "m".repeat(6), "", "").unwrap();
    assert!(matches!(inline.text, InfoText::Inline { .. }));
    let shared = DeviceInfo::new("h".repeat(40), "m".repeat(7), "", "").unwrap();
    assert!(matches!(shared.text, InfoText::Shared(_)));
    assert_eq!(shared.model(), "m".repeat(7));
    assert_eq!(std::mem::size_of::<DeviceInfo>(), 64);
}

#[test]
fn unknown_message_type_is_tolerated() {
    let reply: AnnounceReply = decode(
        br#"{"messages":[{"type":"future"}],"poll_after_ms":5}"#,
        1024,
    )
    .unwrap();
    assert!(matches!(reply.messages[0], AgentMessage::Unknown));
}
