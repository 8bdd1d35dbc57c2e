//! The decoders' harnesses (`wire_decode`, `adapter_decode`).
//! They must not catch a panic: a decoder that panics on any bytes is a finding.

use super::*;

/// Decodes `data` as a `T` (at most `limit` bytes); what decodes must re-encode, decode again,
/// and re-encode to the same bytes.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    data: &[u8],
    limit: usize,
) -> Option<T> {
    let value = wire::decode::<T>(data, limit).ok()?;
    let encoded = wire::encode(&value);
    let again: T = match wire::decode(&encoded, limit) {
        Ok(again) => again,
        Err(err) => panic!("re-encoded value does not decode: {err}"),
    };
    assert_eq!(
        encoded.as_slice(),
        wire::encode(&again).as_slice(),
        "round trip changed the value"
    );
    Some(value)
}

/// Decodes arbitrary bytes as every wire type; whatever decodes must re-encode and decode to the
/// same encoding.
///
/// ```
/// use lanlink::fuzz::wire_decode;
/// // A finding is a panic; these inputs (empty, short, and a longer pseudo-random one) find none.
/// let long: Vec<u8> = (0..512u32).map(|i| (i * 37 % 251) as u8).collect();
/// for input in [&b""[..], b"\x00\x01\x02\x03", b"{}", &long] {
///     assert!(std::panic::catch_unwind(|| wire_decode(input)).is_ok());
/// }
/// ```
pub fn wire_decode(data: &[u8]) {
    round_trip::<wire::Announce>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::AnnounceReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::RedeemRequest>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::RedeemReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::DiscoverReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::SecretReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::LinkRequest>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::LinkStatusReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::CodeReply>(data, wire::MAX_MESSAGE_BYTES);
    round_trip::<wire::ErrorBody>(data, wire::MAX_MESSAGE_BYTES);
    if let Ok(announce) = wire::decode_announce(data) {
        assert!(wire::encode(&announce).len() <= wire::MAX_ANNOUNCE_BYTES);
    }
}

/// The formats outside the core's wire messages, from arbitrary bytes:
///
/// - the server's stored records ([`NetworkRecord`](crate::server::NetworkRecord),
///   [`CodeRecord`](crate::server::CodeRecord), [`CounterRecord`](crate::server::CounterRecord)),
///   as a compromised store could write them (a budget never admits past its limit): what
///   decodes round-trips, and every read of it (prune, discover, expiry) is panic-free at any
///   time;
/// - (feature `shared-store`) [`Records`](crate::server::Records) over a store handing back
///   these bytes, raw or sealed under the right key: every operation answers without panic;
/// - (feature `ticket`) network tickets: a ticket signed here and then changed by the fuzzer
///   verifies only if the change left it the same (hex case aside), and then says the same;
///   arbitrary text never verifies; the [`TicketReply`](crate::ticket::TicketReply) round-trips;
/// - (feature `mqtt`) every MQTT payload type round-trips;
/// - (feature `obico`) an Obico `unlinked` poll body parses without panic, into fields within
///   the limits.
///
/// ```
/// use lanlink::fuzz::adapter_decode;
/// // A finding is a panic; these inputs (empty, short, and a longer pseudo-random one) find none.
/// let long: Vec<u8> = (0..512u32).map(|i| (i * 37 % 251) as u8).collect();
/// for input in [&b""[..], b"\x00\x01\x02\x03", b"{}", &long] {
///     assert!(std::panic::catch_unwind(|| adapter_decode(input)).is_ok());
/// }
/// ```
pub fn adapter_decode(data: &[u8]) {
    use crate::server::{CodeRecord, NetworkRecord};

    let config = ServerConfig::default();
    if let Some(mut record) = round_trip::<NetworkRecord>(data, usize::MAX) {
        for now in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            DateTime::<Utc>::MAX_UTC,
        ] {
            let shown = record.discover(now, &config);
            assert!(shown.len() <= record.present(now));
            let _ = record.expires_at(&config);
        }
        record.prune(
            DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            &config,
        );
        record.prune(DateTime::<Utc>::MAX_UTC, &config);
        assert_eq!(record.present(DateTime::<Utc>::MAX_UTC), 0);
    }
    if let Some(code) = round_trip::<CodeRecord>(data, usize::MAX) {
        let _ = code.is_live(DateTime::<Utc>::MAX_UTC);
    }
    if let Some(counter) = round_trip::<crate::server::CounterRecord>(data, usize::MAX) {
        // A budget read from a compromised store never admits past its limit.
        for now_ms in [i64::MIN, 0, 1_800_000_000_000, i64::MAX] {
            let mut record = counter.clone();
            let before = record.live(now_ms);
            let admitted = record.admit(now_ms, now_ms.saturating_add(1), 3, Some(1));
            if admitted != crate::server::budget::Admission::Refused {
                assert!(before < 3 && !counter.is_locked(now_ms));
            }
            record.refund(now_ms, now_ms.saturating_add(1), 3);
            let _ = record.expires_ms();
        }
    }

    #[cfg(feature = "shared-store")]
    crate::server::store::fuzz_records(data);
    #[cfg(feature = "ticket")]
    ticket_tamper(data);
    #[cfg(feature = "ticket")]
    round_trip::<crate::ticket::TicketReply>(data, usize::MAX);
    #[cfg(feature = "mqtt")]
    {
        round_trip::<crate::mqtt::UpMessage>(data, usize::MAX);
        round_trip::<crate::mqtt::DownMessage>(data, usize::MAX);
    }
    #[cfg(feature = "obico-wire")]
    if let Some(poll) = crate::obico::endpoint::poll_from_bytes(data) {
        let info = &poll.info;
        for (field, limit) in [
            (info.hostname(), wire::limits::HOSTNAME),
            (info.model(), wire::limits::MODEL),
            (info.agent(), wire::limits::AGENT),
            (info.agent_version(), wire::limits::AGENT_VERSION),
        ] {
            assert!(field.len() <= limit && !field.chars().any(wire::is_hidden));
        }
        assert!(poll.endpoint.is_none_or(|(_, port)| port != 0));
        assert!(poll
            .one_time_passcode
            .as_ref()
            .is_none_or(|p| p.chars().count() <= 64));
    }
}

/// A ticket signed for a fuzzer-chosen network, instance and time, then edited by the fuzzer.
#[cfg(feature = "ticket")]
fn ticket_tamper(data: &[u8]) {
    use crate::addr::PublicNetwork;
    use crate::ticket::{TicketError, TicketKey};

    #[derive(Debug, Arbitrary)]
    struct Edit {
        v6: bool,
        addr: [u8; 16],
        prefix: u8,
        id: [u8; 16],
        ttl_s: u32,
        /// (position, new byte) pairs applied to the token's text.
        changes: Vec<(u16, u8)>,
        /// Arbitrary text, verified as is.
        text: String,
    }
    let Ok(edit) = Edit::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let key = TicketKey::from_bytes([0x42; 32]);
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let network = if edit.v6 {
        PublicNetwork::from_ip(IpAddr::from(edit.addr), edit.prefix.clamp(1, 128))
    } else {
        let [a, b, c, d, ..] = edit.addr;
        PublicNetwork::from_ip(IpAddr::from([a, b, c, d]), 64)
    };
    let id = InstanceId::from_bytes(edit.id);
    let issued = key.issue(now, TimeDelta::seconds(i64::from(edit.ttl_s)), network, id);
    assert_eq!(key.verify(now, &issued.token, &id), Ok(issued.ticket));
    let mut token = issued.token.clone().into_bytes();
    for (at, byte) in edit.changes.iter().take(8) {
        let len = token.len();
        if let Some(slot) = token.get_mut(usize::from(*at) % len) {
            *slot = *byte;
        }
    }
    let Ok(token) = String::from_utf8(token) else {
        return;
    };
    let got = key.verify(now, &token, &id);
    if token.eq_ignore_ascii_case(&issued.token) {
        assert_eq!(got, Ok(issued.ticket), "an unchanged ticket verifies");
    } else {
        assert!(got.is_err(), "a changed ticket verified: {token}");
    }
    // Text the fuzzer wrote never carries this key's signature.
    assert!(
        matches!(
            key.verify(now, &edit.text, &id),
            Err(TicketError::Malformed | TicketError::BadSignature)
        ) || edit.text.eq_ignore_ascii_case(&issued.token)
    );
}
