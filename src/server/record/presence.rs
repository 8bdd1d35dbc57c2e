//! An agent's presence in a network.
//! Pure data and functions: it must not do I/O or read a clock.

use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::InstanceId;
use crate::secret::Commitment;
use crate::wire::{Announce, DeviceInfo, MAX_CANDIDATES};

use super::{commitment_hex, unix_ms};

/// One agent's presence in a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Presence {
    /// The agent.
    #[serde(rename = "i")]
    pub instance_id: InstanceId,
    /// Its LAN address.
    #[serde(rename = "a")]
    pub private_ip: IpAddr,
    /// Its local endpoint's port.
    #[serde(rename = "p")]
    pub port: u16,
    /// What to show.
    #[serde(rename = "d")]
    pub info: DeviceInfo,
    /// The commitment pinned by the first announcement.
    #[serde(rename = "k", with = "commitment_hex")]
    pub commitment: Commitment,
    /// When the presence lapses unless refreshed, in Unix milliseconds (integers, because every
    /// announcement of every agent updates it).
    #[serde(rename = "e", deserialize_with = "unix_ms::bounded")]
    pub expires_ms: i64,
    /// A conflicting announcement was seen: hidden and unlinkable until it expires.
    #[serde(rename = "c")]
    pub contested: bool,
    /// A link was accepted with this presence's secret (single-use).
    #[serde(rename = "l")]
    pub link_requested: bool,
    /// When this instance has announced for longer than any window, in Unix milliseconds
    /// (its first announcement + the longest window + one presence lifetime).
    #[serde(rename = "w", deserialize_with = "unix_ms::bounded")]
    pub window_ends_ms: i64,
    /// What an Obico agent's poll says besides [`DeviceInfo`] (none for a lanlink agent).
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Box<ObicoInfo>>,
    /// Further endpoints of its local endpoint, in the order to try them after
    /// `private_ip:port` (revision 1.3): each private, none repeated, none equal to the first,
    /// at most [`MAX_CANDIDATES`]. Absent in records written before 1.3 (read as none).
    #[serde(
        rename = "n",
        default,
        skip_serializing_if = "<[SocketAddr]>::is_empty"
    )]
    pub candidates: Candidates,
}

/// A presence's further endpoints (revision 1.3): a pointer, not a `Vec`, because most agents
/// announce none and a server holds a million presences (8 bytes each rather than 24). Reads as
/// a slice; stored as a plain list, as a `Vec` was.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<SocketAddr>", into = "Vec<SocketAddr>")]
// A boxed `Vec` on purpose: its pointer is thin (8 bytes), where a `Box<[_]>` is 16.
#[allow(clippy::box_collection)]
pub struct Candidates(Option<Box<Vec<SocketAddr>>>);

impl Candidates {
    /// The endpoints, in order.
    pub fn as_slice(&self) -> &[SocketAddr] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl std::ops::Deref for Candidates {
    type Target = [SocketAddr];
    fn deref(&self) -> &[SocketAddr] {
        self.as_slice()
    }
}

impl From<Vec<SocketAddr>> for Candidates {
    fn from(list: Vec<SocketAddr>) -> Self {
        Self((!list.is_empty()).then(|| Box::new(list)))
    }
}

impl From<Candidates> for Vec<SocketAddr> {
    fn from(list: Candidates) -> Self {
        list.0.map_or_else(Vec::new, |list| *list)
    }
}

impl std::fmt::Debug for Candidates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<const N: usize> PartialEq<[SocketAddr; N]> for Candidates {
    fn eq(&self, other: &[SocketAddr; N]) -> bool {
        self.as_slice() == other
    }
}

/// An announcement's candidates as a presence keeps them: those other than `private_ip:port`,
/// first occurrence only, at most [`MAX_CANDIDATES`] (decoding already refuses more; a list
/// built in code is cut, so a record stays bounded either way). The caller has checked that each
/// is private.
pub(crate) fn kept_candidates(announce: &Announce) -> Candidates {
    let first = SocketAddr::new(announce.private_ip, announce.port);
    let mut kept: Vec<SocketAddr> = Vec::new();
    for &candidate in &announce.candidates {
        if kept.len() == MAX_CANDIDATES {
            break;
        }
        if candidate != first && !kept.contains(&candidate) {
            kept.push(candidate);
        }
    }
    kept.into()
}

/// The fields of an Obico poll that Obico's web app shows besides [`DeviceInfo`], each at most
/// [`ObicoInfo::MAX_FIELD`] bytes (cut on a character boundary, hidden characters dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObicoInfo {
    /// `os`.
    #[serde(rename = "o", default)]
    pub os: String,
    /// `arch`.
    #[serde(rename = "a", default)]
    pub arch: String,
    /// `octopi_version`.
    #[serde(rename = "v", default)]
    pub octopi_version: String,
    /// `machine_type`.
    #[serde(rename = "m", default)]
    pub machine_type: String,
    /// `printerprofile`.
    #[serde(rename = "p", default)]
    pub printerprofile: String,
}

impl ObicoInfo {
    /// The most bytes each field keeps.
    pub const MAX_FIELD: usize = 64;
}

impl Presence {
    /// When the presence lapses unless refreshed.
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.expires_ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// The commitment that marks an *unverified* presence: one announced over a wire with no
/// commitment and no presence key (the Obico profile). Such a presence is never shown by the
/// core's discovery, and no secret verifies against it.
pub fn unverified_commitment() -> Commitment {
    static MARK: std::sync::OnceLock<Commitment> = std::sync::OnceLock::new();
    *MARK.get_or_init(|| {
        use sha2::{Digest, Sha256};
        Commitment::from_bytes(Sha256::digest(b"lanlink/v1/unverified-presence\0").into())
    })
}

impl Presence {
    /// Whether this presence was announced without a commitment or presence key (see
    /// [`unverified_commitment`]).
    pub fn is_unverified(&self) -> bool {
        self.commitment == unverified_commitment()
    }
}
