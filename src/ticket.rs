//! Signed network tickets (feature `ticket`): how a server learns an agent's public network over
//! a transport that cannot see the caller's address (MQTT: every message comes from the broker).
//! It must not read a clock or do I/O, and must not accept a ticket whose MAC, expiry or instance
//! does not check out.
//!
//! The agent's first HTTP call (`POST {prefix}/agent/ticket`, see `PROTOCOL.md`) is answered
//! with a short-lived ticket: the public network the server resolved for that call, the agent's
//! instance id, and an expiry, MACed with HMAC-SHA-256 under a key only the servers hold. The
//! agent attaches the ticket to every MQTT request; the server checks the MAC (constant time),
//! the expiry and that the ticket's instance id is the request's, and only then hands the
//! request to [`Server::announce`](crate::server::Server::announce) /
//! [`Server::redeem`](crate::server::Server::redeem) with the ticket's network.
//!
//! Pure: no clock, no IO. `now` and the key come in as arguments; verification never panics on
//! any bytes and fails with a typed [`TicketError`].
//!
//! ```
//! use chrono::{DateTime, TimeDelta};
//! use lanlink::ticket::{TicketError, TicketKey};
//! use lanlink::{InstanceId, PublicNetwork};
//!
//! let key = TicketKey::generate(&mut lanlink::os_rng());
//! let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
//! let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
//! let id = InstanceId::from_bytes([7; 16]);
//! let ticket = key.issue(now, TimeDelta::minutes(5), network, id);
//! assert_eq!(key.verify(now, &ticket.token, &id).unwrap().network, network);
//! let later = now + TimeDelta::minutes(6);
//! assert_eq!(key.verify(later, &ticket.token, &id), Err(TicketError::Expired));
//! ```

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use ipnet::Ipv6Net;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::addr::PublicNetwork;
use crate::id::InstanceId;

/// The ticket format this module writes and reads.
pub const TICKET_VERSION: u8 = 1;

/// The default ticket lifetime: 5 minutes (an agent fetches a new one when its ticket is about
/// to lapse).
pub const DEFAULT_TICKET_TTL: TimeDelta = TimeDelta::minutes(5);

/// The longest ticket accepted, in characters (a signed IPv6 ticket is 150).
pub const MAX_TICKET_CHARS: usize = 160;

/// Domain-separation tag of the ticket MAC.
const TICKET_TAG: &[u8] = b"lanlink/v1/network-ticket\0";
/// Domain-separation tag of [`TicketKey::client_id`].
const CLIENT_ID_TAG: &[u8] = b"lanlink/v1/mqtt-client-id\0";
/// Length of the MAC at the end of a ticket.
const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a ticket is refused. Says which check failed, never what the ticket held.
///
/// ```
/// # use chrono::{DateTime, TimeDelta};
/// # use lanlink::ticket::{TicketError, TicketKey};
/// # use lanlink::{InstanceId, PublicNetwork};
/// # let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
/// let key = TicketKey::generate(&mut lanlink::os_rng());
/// let id = InstanceId::from_bytes([7; 16]);
/// let ticket = key.issue(now, TimeDelta::minutes(5), network, id);
/// let other = TicketKey::generate(&mut lanlink::os_rng());
/// assert_eq!(other.verify(now, &ticket.token, &id), Err(TicketError::BadSignature));
/// assert_eq!(key.verify(now, "not hex", &id), Err(TicketError::Malformed));
/// assert_eq!(key.verify(now, &ticket.token, &InstanceId::from_bytes([8; 16])), Err(TicketError::WrongInstance));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// Not a ticket: wrong length, not hex, unknown version or layout.
    #[error("malformed ticket")]
    Malformed,
    /// The MAC does not match (forged, tampered, or signed under another key).
    #[error("ticket signature does not verify")]
    BadSignature,
    /// The ticket's expiry is past.
    #[error("ticket expired")]
    Expired,
    /// The ticket was issued to another instance.
    #[error("ticket issued to another instance")]
    WrongInstance,
}

impl TicketError {
    /// A stable snake_case code for logs and wire bodies.
    ///
    /// ```
    /// assert_eq!(lanlink::ticket::TicketError::Expired.code(), "ticket_expired");
    /// ```
    pub fn code(&self) -> &'static str {
        self.wire_code().static_str()
    }

    /// The wire code a refused request carries (its status is the code's,
    /// [`WireCode::class`](crate::WireCode::class): `403`).
    ///
    /// ```
    /// use lanlink::ticket::TicketError;
    /// assert_eq!(TicketError::BadSignature.wire_code(), lanlink::WireCode::BadTicket);
    /// ```
    pub fn wire_code(&self) -> crate::WireCode {
        match self {
            Self::Malformed | Self::BadSignature => crate::WireCode::BadTicket,
            Self::Expired => crate::WireCode::TicketExpired,
            Self::WrongInstance => crate::WireCode::TicketWrongInstance,
        }
    }
}

/// What a valid ticket says.
///
/// ```
/// use chrono::{DateTime, TimeDelta};
/// use lanlink::ticket::{NetworkTicket, TicketKey};
/// use lanlink::{InstanceId, PublicNetwork};
/// let key = TicketKey::from_bytes([1; 32]);
/// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// let network = PublicNetwork::from_ip("2001:db8:1:2::9".parse().unwrap(), 64);
/// let id = InstanceId::from_bytes([7; 16]);
/// let issued = key.issue(now, TimeDelta::minutes(5), network, id);
/// let read: NetworkTicket = key.verify(now, &issued.token, &id).unwrap();
/// assert_eq!(read, NetworkTicket { network, instance_id: id, expires_at: now + TimeDelta::minutes(5) });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkTicket {
    /// The public network the agent's HTTP call came from.
    pub network: PublicNetwork,
    /// The instance the ticket was issued to.
    pub instance_id: InstanceId,
    /// When the ticket stops being valid (to the second).
    pub expires_at: DateTime<Utc>,
}

/// A freshly issued ticket. `Debug` redacts the signed token (a bearer credential).
///
/// ```
/// use chrono::{DateTime, TimeDelta};
/// use lanlink::ticket::TicketKey;
/// use lanlink::{InstanceId, PublicNetwork};
/// let key = TicketKey::generate(&mut lanlink::os_rng());
/// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
/// let issued = key.issue(now, TimeDelta::minutes(5), network, InstanceId::from_bytes([7; 16]));
/// assert!(format!("{issued:?}").contains(r#"token: "<redacted>""#));
/// assert!(!format!("{issued:?}").contains(&issued.token));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedTicket {
    /// The signed ticket as sent on the wire (lowercase hex).
    pub token: String,
    /// What it says.
    pub ticket: NetworkTicket,
}

impl fmt::Debug for IssuedTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedTicket")
            .field("token", &"<redacted>")
            .field("ticket", &self.ticket)
            .finish()
    }
}

/// Server → agent: the reply to `POST {prefix}/agent/ticket`. `Debug` redacts the ticket.
///
/// ```
/// use lanlink::ticket::TicketReply;
/// let reply: TicketReply = serde_json::from_str(
///     r#"{"ticket":"00ff","client_id":"ll-0123","expires_at":"2027-01-15T08:00:00Z"}"#)?;
/// assert_eq!(reply.client_id, "ll-0123");
/// assert!(!format!("{reply:?}").contains("00ff"), "the ticket is redacted");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketReply {
    /// The signed ticket (opaque to the agent).
    pub ticket: String,
    /// The MQTT client id the agent must connect with ([`TicketKey::client_id`]); its topics are
    /// named after it.
    pub client_id: String,
    /// When the ticket stops being valid.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for TicketReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketReply")
            .field("ticket", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The servers' ticket key: 32 random bytes shared by every server instance (the one that
/// issues a ticket over HTTP is often not the one that reads it from MQTT). Redacted in `Debug`,
/// zeroized on drop.
///
/// ```
/// use lanlink::ticket::TicketKey;
/// let key = TicketKey::generate(&mut lanlink::os_rng());
/// assert_eq!(format!("{key:?}"), "TicketKey(<redacted>)");
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TicketKey([u8; 32]);

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKey(<redacted>)")
    }
}

impl TicketKey {
    /// A key from `rng` (use [`crate::os_rng`]).
    ///
    /// ```
    /// use lanlink::{ticket::TicketKey, InstanceId};
    /// let mut rng = lanlink::os_rng();
    /// let (a, b) = (TicketKey::generate(&mut rng), TicketKey::generate(&mut rng));
    /// let id = InstanceId::from_bytes([7; 16]);
    /// assert_ne!(a.client_id(&id), b.client_id(&id), "two keys, two client ids");
    /// ```
    pub fn generate<R: CryptoRng + RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A key from its bytes (for instance read from the deployment's secret store).
    ///
    /// ```
    /// use lanlink::{ticket::TicketKey, InstanceId};
    /// // Every server instance builds the same key from the shared secret.
    /// let id = InstanceId::from_bytes([7; 16]);
    /// assert_eq!(TicketKey::from_bytes([9; 32]).client_id(&id), TicketKey::from_bytes([9; 32]).client_id(&id));
    /// ```
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key from 64 hex characters.
    ///
    /// ```
    /// use lanlink::{ticket::TicketKey, InstanceId};
    /// let key = TicketKey::from_hex(&"5A".repeat(32)).unwrap();
    /// let id = InstanceId::from_bytes([7; 16]);
    /// assert_eq!(key.client_id(&id), TicketKey::from_bytes([0x5a; 32]).client_id(&id));
    /// assert!(TicketKey::from_hex("5a5a").is_none());
    /// ```
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex_decode_into(text.as_bytes(), &mut bytes)?;
        Some(Self(bytes))
    }

    fn mac(&self, tag: &[u8]) -> HmacSha256 {
        // HMAC pads a key shorter than the hash's block with zeros: the padded 64-byte block is
        // the same key, and a fixed-size key makes construction infallible.
        let mut block = zeroize::Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(&self.0);
        let mut mac = <HmacSha256 as hmac::digest::KeyInit>::new(&(*block).into());
        mac.update(tag);
        mac
    }

    /// Signs a ticket for `instance_id` on `network`, valid from `now` for `ttl` (clamped to at
    /// least one second and at most a day).
    ///
    /// ```
    /// use chrono::{DateTime, TimeDelta};
    /// use lanlink::{ticket::TicketKey, InstanceId, PublicNetwork};
    /// let key = TicketKey::generate(&mut lanlink::os_rng());
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// // A lifetime over a day is clamped to a day.
    /// let issued = key.issue(now, TimeDelta::days(7), network, InstanceId::from_bytes([7; 16]));
    /// assert_eq!(issued.ticket.expires_at, now + TimeDelta::days(1));
    /// ```
    pub fn issue(
        &self,
        now: DateTime<Utc>,
        ttl: TimeDelta,
        network: PublicNetwork,
        instance_id: InstanceId,
    ) -> IssuedTicket {
        let ttl = ttl.clamp(TimeDelta::seconds(1), TimeDelta::days(1));
        let expires = now.timestamp().saturating_add(ttl.num_seconds());
        let expires_at = DateTime::from_timestamp(expires, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let ticket = NetworkTicket {
            network,
            instance_id,
            expires_at,
        };
        IssuedTicket {
            token: self.sign(&ticket),
            ticket,
        }
    }

    /// The signed, hex-encoded form of `ticket`.
    ///
    /// ```
    /// use chrono::{DateTime, TimeDelta};
    /// use lanlink::ticket::{NetworkTicket, TicketKey, MAX_TICKET_CHARS};
    /// use lanlink::{InstanceId, PublicNetwork};
    /// let key = TicketKey::generate(&mut lanlink::os_rng());
    /// let expires_at = DateTime::from_timestamp(1_800_000_300, 0).unwrap();
    /// let ticket = NetworkTicket { network: PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
    ///     instance_id: InstanceId::from_bytes([7; 16]), expires_at };
    /// let token = key.sign(&ticket);
    /// assert!(token.len() <= MAX_TICKET_CHARS);
    /// assert_eq!(key.verify(expires_at - TimeDelta::seconds(1), &token, &ticket.instance_id), Ok(ticket));
    /// ```
    pub fn sign(&self, ticket: &NetworkTicket) -> String {
        let mut body = encode_body(ticket);
        let mut mac = self.mac(TICKET_TAG);
        mac.update(&body);
        body.extend_from_slice(&mac.finalize().into_bytes());
        hex_encode(&body)
    }

    /// Checks `token` at `now` for a request from `instance_id`: shape, MAC (constant time),
    /// expiry, instance. Returns what the ticket says.
    ///
    /// ```
    /// use chrono::{DateTime, TimeDelta};
    /// use lanlink::{ticket::{TicketError, TicketKey}, InstanceId, PublicNetwork};
    /// let key = TicketKey::generate(&mut lanlink::os_rng());
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let id = InstanceId::from_bytes([7; 16]);
    /// let issued = key.issue(now, TimeDelta::minutes(5), PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64), id);
    /// // A tampered ticket (one hex digit changed) does not verify.
    /// let mut tampered = issued.token.clone().into_bytes();
    /// tampered[4] = if tampered[4] == b'0' { b'1' } else { b'0' };
    /// let tampered = String::from_utf8(tampered).unwrap();
    /// assert_eq!(key.verify(now, &tampered, &id), Err(TicketError::BadSignature));
    /// ```
    pub fn verify(
        &self,
        now: DateTime<Utc>,
        token: &str,
        instance_id: &InstanceId,
    ) -> Result<NetworkTicket, TicketError> {
        if token.len() > MAX_TICKET_CHARS || !token.len().is_multiple_of(2) {
            return Err(TicketError::Malformed);
        }
        let mut bytes = vec![0u8; token.len() / 2];
        hex_decode_into(token.as_bytes(), &mut bytes).ok_or(TicketError::Malformed)?;
        let Some(split) = bytes.len().checked_sub(MAC_LEN) else {
            return Err(TicketError::Malformed);
        };
        let (body, tag) = bytes.split_at(split);
        let mut mac = self.mac(TICKET_TAG);
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(tag)
            .map_err(|_| TicketError::BadSignature)?;
        let ticket = decode_body(body).ok_or(TicketError::Malformed)?;
        if now >= ticket.expires_at {
            return Err(TicketError::Expired);
        }
        if !bool::from(ticket.instance_id.as_bytes().ct_eq(instance_id.as_bytes())) {
            return Err(TicketError::WrongInstance);
        }
        Ok(ticket)
    }

    /// The MQTT client id of `instance_id`: `ll-` and 32 hex characters of
    /// HMAC-SHA-256(key, tag ‖ instance id). Only the servers can compute it, so an agent's
    /// topics (named after it) cannot be guessed from its instance id, which discovery shows.
    ///
    /// ```
    /// use lanlink::{ticket::TicketKey, InstanceId};
    /// let key = TicketKey::generate(&mut lanlink::os_rng());
    /// let client_id = key.client_id(&InstanceId::from_bytes([7; 16]));
    /// assert!(client_id.starts_with("ll-") && client_id.len() == 35);
    /// assert_ne!(client_id, key.client_id(&InstanceId::from_bytes([8; 16])));
    /// ```
    pub fn client_id(&self, instance_id: &InstanceId) -> String {
        let mut mac = self.mac(CLIENT_ID_TAG);
        mac.update(instance_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("ll-{}", hex_encode(&digest[..16]))
    }

    /// Whether `client_id` is [`client_id`](Self::client_id) of `instance_id` (constant time).
    ///
    /// ```
    /// use lanlink::{ticket::TicketKey, InstanceId};
    /// let key = TicketKey::generate(&mut lanlink::os_rng());
    /// let id = InstanceId::from_bytes([7; 16]);
    /// assert!(key.is_client_id(&key.client_id(&id), &id));
    /// assert!(!key.is_client_id("ll-00000000000000000000000000000000", &id));
    /// ```
    pub fn is_client_id(&self, client_id: &str, instance_id: &InstanceId) -> bool {
        self.client_id(instance_id)
            .as_bytes()
            .ct_eq(client_id.as_bytes())
            .into()
    }
}

/// `version ‖ expiry (i64 BE seconds) ‖ instance id (16) ‖ kind (4|6) ‖ address ‖ [prefix]`.
fn encode_body(ticket: &NetworkTicket) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 16 + 1 + 17 + MAC_LEN);
    out.push(TICKET_VERSION);
    out.extend_from_slice(&ticket.expires_at.timestamp().to_be_bytes());
    out.extend_from_slice(ticket.instance_id.as_bytes());
    match ticket.network {
        PublicNetwork::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        PublicNetwork::V6(net) => {
            out.push(6);
            out.extend_from_slice(&net.addr().octets());
            out.push(net.prefix_len());
        }
    }
    out
}

fn decode_body(body: &[u8]) -> Option<NetworkTicket> {
    let (&version, rest) = body.split_first()?;
    if version != TICKET_VERSION {
        return None;
    }
    let (expiry, rest) = rest.split_first_chunk::<8>()?;
    let (id, rest) = rest.split_first_chunk::<16>()?;
    let (&kind, rest) = rest.split_first()?;
    let network = match (kind, rest.len()) {
        (4, 4) => {
            let octets: [u8; 4] = rest.try_into().ok()?;
            PublicNetwork::V4(Ipv4Addr::from(octets))
        }
        (6, 17) => {
            let (addr, prefix) = rest.split_first_chunk::<16>()?;
            let prefix = *prefix.first()?;
            let net = Ipv6Net::new(Ipv6Addr::from(*addr), prefix).ok()?;
            PublicNetwork::V6(net)
        }
        _ => return None,
    };
    let expires_at = DateTime::from_timestamp(i64::from_be_bytes(*expiry), 0)?;
    Some(NetworkTicket {
        network,
        instance_id: InstanceId::from_bytes(*id),
        expires_at,
    })
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes `text` (hex, either case) into exactly `out.len()` bytes.
fn hex_decode_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len().checked_mul(2)? {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn v4() -> PublicNetwork {
        PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64)
    }

    fn v6() -> PublicNetwork {
        PublicNetwork::from_ip("2001:db8:1:2::10".parse().unwrap(), 64)
    }

    fn id() -> InstanceId {
        InstanceId::from_bytes([7; 16])
    }

    #[test]
    fn round_trip_v4_and_v6() {
        let key = TicketKey::from_bytes([1; 32]);
        for network in [v4(), v6()] {
            let issued = key.issue(now(), DEFAULT_TICKET_TTL, network, id());
            assert!(issued.token.len() <= MAX_TICKET_CHARS);
            let ticket = key.verify(now(), &issued.token, &id()).unwrap();
            assert_eq!(ticket, issued.ticket);
            assert_eq!(ticket.network, network);
            assert_eq!(ticket.expires_at, now() + DEFAULT_TICKET_TTL);
        }
    }

    #[test]
    fn forged_tampered_expired_and_replayed_are_refused() {
        let key = TicketKey::from_bytes([1; 32]);
        let other = TicketKey::from_bytes([2; 32]);
        let issued = key.issue(now(), DEFAULT_TICKET_TTL, v4(), id());
        // Forged: signed under another key.
        let forged = other.issue(now(), DEFAULT_TICKET_TTL, v4(), id());
        assert_eq!(
            key.verify(now(), &forged.token, &id()),
            Err(TicketError::BadSignature)
        );
        // Tampered: every single hex digit changed in turn.
        for i in 0..issued.token.len() {
            let mut bytes = issued.token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert_eq!(
                key.verify(now(), &tampered, &id()),
                Err(TicketError::BadSignature),
                "digit {i}"
            );
        }
        // The network rewritten and re-encoded without the key.
        let mut moved = issued.ticket;
        moved.network = PublicNetwork::from_ip("198.51.100.1".parse().unwrap(), 64);
        let mut body = encode_body(&moved);
        body.extend_from_slice(&[0u8; MAC_LEN]);
        assert_eq!(
            key.verify(now(), &hex_encode(&body), &id()),
            Err(TicketError::BadSignature)
        );
        // Expired: at and after its expiry.
        let expiry = issued.ticket.expires_at;
        assert_eq!(
            key.verify(expiry, &issued.token, &id()),
            Err(TicketError::Expired)
        );
        assert!(key
            .verify(expiry - TimeDelta::seconds(1), &issued.token, &id())
            .is_ok());
        // Replayed for another instance.
        let other_id = InstanceId::from_bytes([8; 16]);
        assert_eq!(
            key.verify(now(), &issued.token, &other_id),
            Err(TicketError::WrongInstance)
        );
    }

    #[test]
    fn malformed_inputs_are_refused_without_panic() {
        let key = TicketKey::from_bytes([1; 32]);
        for bad in [
            "",
            "0",
            "zz",
            &"0".repeat(64),
            &"0".repeat(MAX_TICKET_CHARS + 2),
            "ééé",
        ] {
            let err = key.verify(now(), bad, &id()).unwrap_err();
            assert!(matches!(
                err,
                TicketError::Malformed | TicketError::BadSignature
            ));
        }
        // A validly MACed body of the wrong layout is still refused.
        for body in [
            vec![],
            vec![TICKET_VERSION],
            vec![2; 30],
            vec![TICKET_VERSION; 40],
        ] {
            let mut mac = key.mac(TICKET_TAG);
            mac.update(&body);
            let mut signed = body.clone();
            signed.extend_from_slice(&mac.finalize().into_bytes());
            assert_eq!(
                key.verify(now(), &hex_encode(&signed), &id()),
                Err(TicketError::Malformed)
            );
        }
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let key = TicketKey::from_bytes([1; 32]);
        for t in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            let issued = key.issue(t, TimeDelta::MAX, v6(), id());
            let _ = key.verify(t, &issued.token, &id());
            let _ = key.issue(t, TimeDelta::MIN, v4(), id());
        }
    }

    #[test]
    fn client_ids_are_keyed_and_distinct() {
        let key = TicketKey::from_bytes([1; 32]);
        let id2 = InstanceId::from_bytes([8; 16]);
        let a = key.client_id(&id());
        assert_eq!(a.len(), 35);
        assert!(a.starts_with("ll-"));
        assert_ne!(a, key.client_id(&id2));
        assert_ne!(a, TicketKey::from_bytes([2; 32]).client_id(&id()));
        assert!(key.is_client_id(&a, &id()));
        assert!(!key.is_client_id(&a, &id2));
        assert!(!format!("{key:?}").contains("01"));
    }

    #[test]
    fn key_from_hex() {
        let key = TicketKey::from_hex(&"0a".repeat(32)).unwrap();
        assert_eq!(key.0, [10; 32]);
        assert!(TicketKey::from_hex("0a").is_none());
        assert!(TicketKey::from_hex(&"zz".repeat(32)).is_none());
    }
}
