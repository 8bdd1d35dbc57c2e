//! Saturating wall-clock arithmetic and bounded store times: the bottom of the server, read by
//! its records and its budgets.
//! It must not read a clock or panic on any time: every sum saturates.

use chrono::{DateTime, TimeDelta, Utc};

/// `at + delta`, saturating at the end of representable time (no panic on any `now`).
pub(crate) fn later(at: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    at.checked_add_signed(delta)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at + delta` in Unix milliseconds, saturating.
pub(crate) fn later_ms(at_ms: i64, delta: TimeDelta) -> i64 {
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
