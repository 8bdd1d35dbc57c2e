//! Unit tests of the records.
//! They drive the pure functions on fixed times: a test here must not read the wall clock or touch
//! a store.

use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, TimeDelta};

use super::*;
use crate::addr::PublicNetwork;
use crate::code::LinkCode;
use crate::confirm::{ConfirmNonce, DisplayName};
use crate::error::Refusal;
use crate::id::{AccountId, InstanceId};
use crate::secret::LocalSecret;
use crate::secret::PresenceKey;
use crate::server::shared::SharedSignal;
use crate::server::ServerConfig;
use crate::wire::{Announce, DeviceInfo, HiddenReason, LinkRequest, Visibility, MAX_CANDIDATES};

fn announce(n: u8) -> Announce {
    let key = PresenceKey::from_bytes([n; 32]);
    let id = key.instance_id();
    Announce::new(
        id,
        IpAddr::from([192, 168, 1, n]),
        8080,
        DeviceInfo::default(),
        LocalSecret::from_bytes([n; 32]).commitment(&id),
        key,
    )
}

/// A queued message keeps the display name and the nonce through a shared store (revision
/// 1.4); one written before 1.4 reads with neither; a stored name that fails the display
/// name's check is refused as corrupt (fail closed), never forwarded.
#[test]
fn pending_messages_keep_name_and_nonce_through_serde() {
    let message = PendingMessage {
        secret: LocalSecret::from_bytes([5; 32]),
        code: LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap(),
        expires_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        display_name: DisplayName::new("alice@example.com"),
        nonce: Some(ConfirmNonce::from_bytes([3; 16])),
    };
    let value = serde_json::to_value(&message).unwrap();
    let back: PendingMessage = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(back.display_name, message.display_name);
    assert_eq!(back.nonce, message.nonce);
    let mut old = value.clone();
    old.as_object_mut().unwrap().remove("display_name");
    old.as_object_mut().unwrap().remove("nonce");
    let back: PendingMessage = serde_json::from_value(old).unwrap();
    assert!(back.display_name.is_none() && back.nonce.is_none());
    let mut forged = value;
    forged["display_name"] = serde_json::json!("alice\u{202E}moc.elpmaxe");
    assert!(serde_json::from_value::<PendingMessage>(forged).is_err());
}

/// Revision 1.3: every candidate is checked like `private_ip` (a refusal records nothing);
/// the presence keeps them in order without repeats or the first endpoint, at most
/// `MAX_CANDIDATES`; a change needs the presence key, like a move; discovery shows them;
/// and a record written before 1.3 (no `n`) reads as a presence without candidates.
#[test]
fn candidates_are_checked_kept_and_read_from_old_records() {
    let config = ServerConfig::default();
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let mut record = NetworkRecord::default();
    for public in [
        "8.8.8.8:80",
        "[2001:db8::1]:80",
        "100.64.0.1:80",
        "0.0.0.0:80",
    ] {
        let mut bad = announce(1);
        bad.candidates = vec![addr("10.0.0.1:80"), addr(public)];
        assert_eq!(
            record.announce(t0, &config, &bad).unwrap_err(),
            Refusal::NotPrivateIp,
            "{public}"
        );
        assert!(record.is_empty());
    }
    let mut good = announce(1);
    good.candidates = vec![
        addr("10.0.0.1:80"),
        addr("192.168.1.1:8080"), // the first endpoint again
        addr("[fe80::1]:80"),
        addr("10.0.0.1:80"),
    ];
    good.candidates
        .extend((2..20).map(|n| SocketAddr::from(([10, 0, 0, n], 80))));
    record.announce(t0, &config, &good).unwrap();
    let kept = &record.presences[0].candidates;
    assert_eq!(kept.len(), MAX_CANDIDATES);
    assert_eq!(
        kept[..3],
        [
            addr("10.0.0.1:80"),
            addr("[fe80::1]:80"),
            addr("10.0.0.2:80")
        ]
    );
    let shown = record.discover(t0, &config);
    assert_eq!(shown[0].candidates.as_slice(), kept.as_slice());

    // A change of candidates without the key is refused, and changes nothing.
    let mut moved = good.clone();
    moved.candidates = vec![addr("10.9.9.9:80")];
    let mut unproven = moved.clone();
    unproven.presence_key = crate::secret::PresenceKey::from_bytes([99; 32]);
    assert_eq!(
        record.announce(t0, &config, &unproven).unwrap_err(),
        Refusal::ForgedInstance
    );
    assert_eq!(record.presences[0].candidates.len(), MAX_CANDIDATES);
    record.announce(t0, &config, &moved).unwrap();
    assert_eq!(record.presences[0].candidates, [addr("10.9.9.9:80")]);

    // Stored with a short key, absent when empty; an old record reads.
    let text = serde_json::to_string(&record).unwrap();
    assert!(text.contains(r#""n":["10.9.9.9:80"]"#), "{text}");
    record.presences[0].candidates = Default::default();
    let old = serde_json::to_string(&record).unwrap();
    assert!(!old.contains(r#""n":"#), "{old}");
    let back: NetworkRecord = serde_json::from_str(&old).unwrap();
    assert!(back.presences[0].candidates.is_empty());
    assert_eq!(back.presences[0].private_ip, good.private_ip);
}

/// An instance claim counts its holders: joined only by its own network (and only a claim),
/// let go by each holder, ended (expiring at `now`) with the last; a legacy claim (0) and a
/// saturated count are never ended; a release names the claim it held by its expiry, so it
/// never touches a claim created afresh after that one lapsed.
#[test]
fn instance_claims_count_their_holders() {
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let later = t0 + TimeDelta::minutes(10);
    let (home, other) = (
        PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
        PublicNetwork::from_ip("2001:db8:7:1::20".parse().unwrap(), 64),
    );
    let claim = |holders, kind| CodeRecord {
        account: AccountId::new("alice").unwrap(),
        instance_id: None,
        network: Some(home),
        expires_at: later,
        redeemed: false,
        redeemed_by: None,
        claim_attempt: holders,
        manual: false,
        kind,
        quota_released: false,
    };
    // Another network's claim, or a record of another kind: not joined, not released.
    let mut record = claim(1, CodeKind::InstanceClaim);
    assert_eq!(record.join_claim(&other), None);
    assert!(!record.release_claim(t0, &other, later));
    let mut link = claim(1, CodeKind::Link);
    assert_eq!(link.join_claim(&home), None);
    assert!(!link.release_claim(t0, &home, later));
    assert_eq!((link.claim_attempt, link.expires_at), (1, later));
    // Two holders: the first release keeps it, the second ends it.
    assert_eq!(record.join_claim(&home), Some(later));
    assert_eq!(record.claim_attempt, 2);
    assert!(!record.release_claim(t0, &home, later));
    assert!(record.is_live(t0));
    assert!(record.release_claim(t0, &home, later));
    assert_eq!(record.claim_attempt, 0);
    assert!(!record.is_live(t0), "ended at once");
    // A claim created afresh (another expiry) is not this hold's to release.
    let mut fresh = claim(1, CodeKind::InstanceClaim);
    fresh.expires_at = later + TimeDelta::seconds(1);
    assert!(!fresh.release_claim(t0, &home, later));
    assert_eq!(fresh.claim_attempt, 1);
    // A legacy claim's unknown holder never lets go.
    let mut legacy = claim(0, CodeKind::InstanceClaim);
    assert!(!legacy.release_claim(t0, &home, later));
    assert_eq!(legacy.join_claim(&home), Some(later));
    assert_eq!(legacy.claim_attempt, 2);
    assert!(!legacy.release_claim(t0, &home, later));
    assert_eq!(legacy.claim_attempt, 1);
    assert!(legacy.is_live(t0));
    // A saturated count may have missed a hold: kept for good, no overflow.
    let mut full = claim(u32::MAX, CodeKind::InstanceClaim);
    assert_eq!(full.join_claim(&home), Some(later));
    assert!(!full.release_claim(t0, &home, later));
    assert_eq!(full.claim_attempt, u32::MAX);
    // The count goes to a shared store and back; 1 is written, 0 (legacy) is not.
    let text = serde_json::to_string(&claim(1, CodeKind::InstanceClaim)).unwrap();
    assert!(text.contains(r#""claim_attempt":1"#), "{text}");
    let back: CodeRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back.claim_attempt, 1);
}

/// Every kind of code record goes to a shared store and comes back as it was (a passcode
/// with its held code, or without); anything else is refused as corrupt.
#[test]
fn code_records_of_every_kind_round_trip_through_serde() {
    let code = LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap();
    let record = |kind| CodeRecord {
        account: AccountId::new("alice").unwrap(),
        instance_id: None,
        network: None,
        expires_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        redeemed: false,
        redeemed_by: None,
        claim_attempt: 0,
        manual: true,
        kind,
        quota_released: false,
    };
    for kind in [
        CodeKind::Link,
        CodeKind::InstanceClaim,
        CodeKind::ObicoPasscode(Box::default()),
        CodeKind::ObicoPasscode(Box::new(ObicoPasscode {
            verification: Some(code.clone()),
        })),
    ] {
        let original = record(kind);
        let text = serde_json::to_string(&original).unwrap();
        let back: CodeRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, original, "{text}");
    }
    // Records written before kinds existed read as link codes.
    let old = r#"{"account":"alice","instance_id":null,"network":null,"expires_at":"2027-01-15T08:00:00Z","redeemed":false,"manual":true}"#;
    assert_eq!(
        serde_json::from_str::<CodeRecord>(old).unwrap().kind,
        CodeKind::Link
    );
    for bad in [
        r#""other""#,
        r#"{"obico_passcode":{"v":"not a code!"}}"#,
        r#"{"x":{}}"#,
        "{}",
        "7",
    ] {
        assert!(serde_json::from_str::<CodeKind>(bad).is_err(), "{bad}");
    }
}

/// A core announcement never creates, refreshes, moves or contests an unverified (Obico)
/// presence, and the public unverified mark is never accepted as a commitment: each refusal
/// is `forged_instance` and leaves the record exactly as it was.
#[test]
fn core_announce_never_touches_an_unverified_presence() {
    let config = ServerConfig::default();
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let later = t0 + TimeDelta::milliseconds(500);
    let snapshot = |r: &NetworkRecord| serde_json::to_string(r).unwrap();

    // The mark as the commitment of a fresh, proven instance: no presence is created (it
    // would pass for an Obico device in the Obico routes).
    let mut marked = announce(1);
    marked.commitment = unverified_commitment();
    let mut record = NetworkRecord::default();
    assert_eq!(
        record.announce(t0, &config, &marked).unwrap_err(),
        Refusal::ForgedInstance
    );
    assert!(record.is_empty());

    // An unverified presence, as an Obico poll leaves it. Its id is here derived from a key
    // the test holds, the strongest announcer there could be: even a proven announcement
    // may not touch it.
    let agent = announce(2);
    record.presences.push(Presence {
        instance_id: agent.instance_id,
        private_ip: agent.private_ip,
        port: agent.port,
        info: agent.info.clone(),
        commitment: unverified_commitment(),
        expires_ms: t0.timestamp_millis() + 15_000,
        contested: false,
        link_requested: false,
        window_ends_ms: t0.timestamp_millis() + 600_000,
        extra: None,
        candidates: Default::default(),
    });
    let before = snapshot(&record);
    let mut refresh = agent.clone();
    refresh.commitment = unverified_commitment();
    let mut moved = refresh.clone();
    moved.private_ip = IpAddr::from([192, 168, 1, 99]);
    let committed = agent.clone();
    for attempt in [&refresh, &moved, &committed] {
        assert_eq!(
            record.announce(later, &config, attempt).unwrap_err(),
            Refusal::ForgedInstance
        );
        assert_eq!(
            snapshot(&record),
            before,
            "a refused announce changes nothing"
        );
    }
    // Nor with a link pending for it: the queued message stays for the Obico poll.
    let link = LinkRequest::new(agent.instance_id, LocalSecret::from_bytes([9; 32]));
    let account = AccountId::new("alice").unwrap();
    let code = LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap();
    record.accept_link(
        t0,
        &config,
        link,
        account,
        None,
        code,
        t0 + TimeDelta::minutes(10),
    );
    let before = snapshot(&record);
    for attempt in [&refresh, &committed] {
        assert_eq!(
            record.announce(later, &config, attempt).unwrap_err(),
            Refusal::ForgedInstance
        );
        assert_eq!(snapshot(&record), before);
    }
    assert!(record.take_message(&agent.instance_id).is_some());

    // A verified agent announces as before beside it.
    record.announce(later, &config, &announce(3)).unwrap();
}

/// Discovery reads a record without pruning it (a store serves it from a plain read), so
/// it must skip expired presences itself: they are neither shown nor counted toward the
/// one-visible rule.
#[test]
fn discovery_skips_expired_presences_without_pruning() {
    let config = ServerConfig::default();
    let ttl = config.presence_ttl;
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let (a, b) = (announce(1), announce(2));
    let mut record = NetworkRecord::default();
    record.announce(t0, &config, &a).unwrap();
    let just_before = t0 + ttl - TimeDelta::milliseconds(1);
    assert_eq!(record.present(just_before), 1);
    assert_eq!(record.discover(just_before, &config).len(), 1);
    assert_eq!(record.present(t0 + ttl), 0);
    assert!(record.discover(t0 + ttl, &config).is_empty());
    assert_eq!(record.presences.len(), 1, "not pruned");

    // Two live agents: none shown (max_visible 1). Once the first lapses, the second is
    // shown, though the first is still in the record.
    let half = t0 + ttl / 2;
    record.announce(half, &config, &b).unwrap();
    assert_eq!(record.present(half), 2);
    assert!(record.discover(half, &config).is_empty());
    let shown = record.discover(t0 + ttl, &config);
    assert_eq!(record.presences.len(), 2, "not pruned");
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].instance_id, b.instance_id);
}
/// Signal "many accounts": the fifth distinct discoverer marks the network (default
/// `max_accounts` 4); repeats do not count; the set stays bounded; the mark is sticky and
/// lapses with the policy's `sticky`.
#[test]
fn many_accounts_signal_is_counted_bounded_and_sticky() {
    let config = ServerConfig::default();
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let mut record = NetworkRecord::default();
    for tag in 0..4u64 {
        assert_eq!(record.note_discoverer(t0, &config, tag), None);
        assert_eq!(record.note_discoverer(t0, &config, tag), None, "a repeat");
    }
    assert!(record.shared_mark(t0).is_none());
    assert_eq!(
        record.note_discoverer(t0, &config, 4),
        Some(SharedSignal::ManyAccounts)
    );
    assert_eq!(record.shared_mark(t0), Some(SharedSignal::ManyAccounts));
    assert_eq!(
        record.hidden(t0, &config, None),
        Some(HiddenReason::SharedNetwork)
    );
    // Already marked: a further account extends the mark, reports nothing new.
    assert_eq!(record.note_discoverer(t0, &config, 5), None);
    for tag in 6..100u64 {
        record.note_discoverer(t0, &config, tag);
    }
    assert_eq!(
        record.ext().discoverers.len(),
        crate::server::MAX_DISCOVERERS
    );
    // Linking is refused while marked.
    let (id, secret) = (
        InstanceId::from_bytes([1; 16]),
        LocalSecret::from_bytes([1; 32]),
    );
    assert_eq!(
        record.check_link(t0, &config, &id, &secret),
        Err(Refusal::SharedNetwork)
    );
    // The mark and the discoverers lapse after ten minutes; the pruned record is empty.
    let after = t0 + TimeDelta::minutes(10);
    assert!(record.shared_mark(after).is_none());
    assert_eq!(record.expires_at(&config), Some(after));
    record.prune(after, &config);
    assert!(record.is_empty());
    // Windows apart, accounts do not add up.
    let mut record = NetworkRecord::default();
    for (n, tag) in (0..8u64).enumerate() {
        let at = t0 + TimeDelta::minutes(3 * n as i64);
        record.prune(at, &config);
        assert_eq!(record.note_discoverer(at, &config, tag), None);
    }
}

/// Signal "many subnets": a third private subnet among the present agents marks the network
/// (default `max_subnets` 2), in the update that admits the announcement; two subnets (a
/// main and a guest VLAN) do not.
#[test]
fn many_subnets_signal_is_judged_in_the_admitting_update() {
    let config = ServerConfig::default().max_visible(4);
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let mut record = NetworkRecord::default();
    let at = |n: u8, ip: [u8; 4]| {
        let mut a = announce(n);
        a.private_ip = IpAddr::from(ip);
        a
    };
    let main = record
        .announce(t0, &config, &at(1, [192, 168, 1, 10]))
        .unwrap();
    assert_eq!(main.visibility, Visibility::Visible);
    let same = record
        .announce(t0, &config, &at(2, [192, 168, 1, 11]))
        .unwrap();
    assert_eq!(same.judged, None);
    let guest = record
        .announce(t0, &config, &at(3, [192, 168, 2, 10]))
        .unwrap();
    assert_eq!(guest.judged, None);
    assert_eq!(record.present_subnets(t0), 2);
    let third = record
        .announce(t0, &config, &at(4, [10, 0, 0, 10]))
        .unwrap();
    assert_eq!(third.judged, Some(SharedSignal::ManySubnets));
    assert_eq!(
        third.visibility,
        Visibility::Hidden(HiddenReason::SharedNetwork)
    );
    assert!(
        record.discover(t0, &config).len() == 4,
        "discover itself is unchanged"
    );
    assert_eq!(
        record.hidden(t0, &config, None),
        Some(HiddenReason::SharedNetwork)
    );
    // Disabled, nothing is judged.
    let off = ServerConfig::default()
        .max_visible(4)
        .shared_network(crate::server::SharedNetworkPolicy::disabled());
    let mut record = NetworkRecord::default();
    for (n, ip) in [[192, 168, 1, 1], [10, 0, 0, 1], [172, 16, 0, 1]]
        .into_iter()
        .enumerate()
    {
        let judged = record
            .announce(t0, &off, &at(n as u8 + 10, ip))
            .unwrap()
            .judged;
        assert_eq!(judged, None);
    }
}

/// Too many agents: the one-visible rule says so in the reply (no count, no id), and the
/// agent's visibility says it too.
#[test]
fn too_many_agents_is_a_hidden_reason() {
    let config = ServerConfig::default();
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let mut record = NetworkRecord::default();
    record.announce(t0, &config, &announce(1)).unwrap();
    assert_eq!(record.hidden(t0, &config, None), None);
    let second = record.announce(t0, &config, &announce(2)).unwrap();
    assert_eq!(
        second.visibility,
        Visibility::Hidden(HiddenReason::TooManyAgents)
    );
    assert_eq!(
        record.hidden(t0, &config, None),
        Some(HiddenReason::TooManyAgents)
    );
    // An address signal outranks it.
    assert_eq!(
        record.hidden(t0, &config, Some(SharedSignal::CarrierNat)),
        Some(HiddenReason::SharedNetwork)
    );
}

/// Records written before revision 1.2 read as before; the new fields round-trip.
#[test]
fn shared_state_round_trips_and_old_records_still_read() {
    let config = ServerConfig::default();
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let mut record = NetworkRecord::default();
    record.announce(t0, &config, &announce(1)).unwrap();
    let old = serde_json::to_string(&record).unwrap();
    assert!(
        !old.contains(r#""x""#),
        "no extras for a plain record: {old}"
    );
    let back: NetworkRecord = serde_json::from_str(&old).unwrap();
    assert!(back.shared_mark(t0).is_none());
    for tag in 0..5u64 {
        record.note_discoverer(t0, &config, tag);
    }
    let text = serde_json::to_string(&record).unwrap();
    let back: NetworkRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back.shared_mark(t0), Some(SharedSignal::ManyAccounts));
    assert!(back.knows_discoverer(t0, 3));
    assert!(!text.contains("alice"));
}

/// A server holds one record per public network, a million of them at scale: the records keep
/// the sizes `benches/memory.rs` budgets for (at most 256 B per discoverable agent at 1 M
/// networks, the hash table's own room included). A `Vec` of candidates in place of
/// [`Candidates`](super::Candidates) makes a presence 184 bytes and fails this.
#[test]
fn records_keep_their_size() {
    assert!(
        std::mem::size_of::<Presence>() <= 168,
        "{}",
        std::mem::size_of::<Presence>()
    );
    assert!(
        std::mem::size_of::<NetworkRecord>() <= 184,
        "{}",
        std::mem::size_of::<NetworkRecord>()
    );
    assert_eq!(std::mem::size_of::<super::Candidates>(), 8);
}
