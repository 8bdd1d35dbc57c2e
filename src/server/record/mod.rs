//! The server's records: one [`NetworkRecord`] per public network and one [`CodeRecord`] per
//! code. Every operation is a pure function of (record, input, `now`) that changes the record in
//! place on a copy; the server writes the copy back as a whole, so a shared store can apply each
//! operation with a single compare-and-swap.
//! The functions must not do I/O, read a clock or draw randomness: `now` and every input are
//! arguments.
//!
//! Wall-clock times (`DateTime<Utc>`) because several server instances share these records.

//!
//! One file per record: `presence` (an agent's presence), `network` (a public network's
//! record: presences, links, queued messages, failures, used ids, and its shared-network
//! judgement), `code` (a code's record: link codes, instance claims, Obico passcodes). This
//! module must not do IO or read a clock: `now` is an argument.

mod code;
mod network;
mod presence;
#[cfg(test)]
mod tests;

use chrono::{DateTime, TimeDelta, Utc};

pub use self::code::{CodeKind, CodeRecord, ObicoPasscode, Redemption};
pub use self::network::{Announced, LinkRecord, NetworkRecord, PendingMessage};
pub(crate) use self::presence::kept_candidates;
pub use self::presence::{unverified_commitment, Candidates, ObicoInfo, Presence};

/// `at + delta`, saturating at the end of representable time (no panic on any `now`).
pub(crate) fn later(at: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    at.checked_add_signed(delta)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at + delta` in Unix milliseconds, saturating.
fn later_ms(at_ms: i64, delta: TimeDelta) -> i64 {
    at_ms.saturating_add(delta.num_milliseconds())
}

/// Times read from a store, in Unix milliseconds, bounded when decoded to the range a
/// `DateTime<Utc>` holds: a record from a corrupt or hostile store cannot hold a time that
/// outlives the end of time (and so a presence that no pruning removes) or precedes its start.
pub(crate) mod unix_ms {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer};

    /// The earliest time a record may hold.
    pub(crate) fn min() -> i64 {
        DateTime::<Utc>::MIN_UTC.timestamp_millis()
    }

    /// The latest time a record may hold.
    pub(crate) fn max() -> i64 {
        DateTime::<Utc>::MAX_UTC.timestamp_millis()
    }

    /// `ms`, clamped to what a `DateTime<Utc>` holds.
    pub(crate) fn clamp(ms: i64) -> i64 {
        ms.clamp(min(), max())
    }

    /// Reads a time and bounds it ([`clamp`]).
    pub(crate) fn bounded<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        i64::deserialize(d).map(clamp)
    }
}

/// A commitment as 64 hex characters (serde `with` helper for the stored records).
mod commitment_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::secret::Commitment;

    pub fn serialize<S: Serializer>(commitment: &Commitment, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&commitment.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Commitment, D::Error> {
        let text = <&str>::deserialize(d)?;
        Commitment::from_hex(text).ok_or_else(|| serde::de::Error::custom("bad commitment"))
    }
}
