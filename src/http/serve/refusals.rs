//! Warnings about refused connections and requests, at a bounded rate: one warning per
//! interval at most, carrying the count of every refusal since the previous one.
//! It must not log or read a clock itself: `now` comes in, and [`serve()`](super::serve) writes the
//! warning, so that a flood of refusals never becomes a flood of log lines.

use std::fmt;
use std::time::{Duration, Instant};

/// Why [`serve()`](super::serve) refused a connection or cut a request off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The peer's client group had `max_connections_per_client` open.
    PerClient,
    /// A coarser prefix of the peer had its share open.
    PerPrefix,
    /// `max_connections` were open.
    Total,
    /// The request was not complete by its deadline.
    Deadline,
}

impl Refused {
    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::PerClient => "per-client connection cap reached",
            Self::PerPrefix => "a prefix's connection share reached",
            Self::Total => "connection cap reached",
            Self::Deadline => "request deadline passed",
        }
    }
}

/// Refusals counted since the last warning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) per_client: u64,
    pub(super) per_prefix: u64,
    pub(super) total: u64,
    pub(super) deadline: u64,
}

impl Counts {
    fn add(&mut self, refused: Refused) {
        let count = match refused {
            Refused::PerClient => &mut self.per_client,
            Refused::PerPrefix => &mut self.per_prefix,
            Refused::Total => &mut self.total,
            Refused::Deadline => &mut self.deadline,
        };
        *count = count.saturating_add(1);
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "per_client={} per_prefix={} total={} deadline={}",
            self.per_client, self.per_prefix, self.total, self.deadline
        )
    }
}

/// The rate limiter, on a clock passed in: [`RefusalLog::record`] counts a refusal and says
/// when a warning is due; [`RefusalLog::flush`] reports what was counted once the interval has
/// passed, without a new refusal.
#[derive(Debug)]
pub(super) struct RefusalLog {
    interval: Duration,
    last_warning: Option<Instant>,
    counts: Counts,
}

impl RefusalLog {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_warning: None,
            counts: Counts::default(),
        }
    }

    /// Counts `refused` at `now`. Returns the counts to warn about (this refusal included) when
    /// no warning was given in the last interval; otherwise `None`, and the refusal is reported
    /// with the next warning.
    #[must_use]
    pub(super) fn record(&mut self, now: Instant, refused: Refused) -> Option<Counts> {
        self.counts.add(refused);
        self.due(now)
    }

    /// The counts not yet reported, once the interval since the last warning has passed.
    #[must_use]
    pub(super) fn flush(&mut self, now: Instant) -> Option<Counts> {
        if self.counts.is_empty() {
            return None;
        }
        self.due(now)
    }

    fn due(&mut self, now: Instant) -> Option<Counts> {
        let quiet = self
            .last_warning
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !quiet {
            return None;
        }
        self.last_warning = Some(now);
        Some(std::mem::take(&mut self.counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn one_warning_per_interval_with_the_count_of_what_it_covers() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(SECOND);
        // The first refusal is reported at once.
        let first = log.record(t0, Refused::PerClient).expect("first warning");
        assert_eq!(first.per_client, 1);
        // A flood within the interval: no warning at all.
        let mut warnings = 0;
        for i in 0..10_000u32 {
            let at = t0 + Duration::from_micros(u64::from(i) * 90);
            let refused = [
                Refused::PerClient,
                Refused::Total,
                Refused::Deadline,
                Refused::PerPrefix,
            ][i as usize % 4];
            warnings += usize::from(log.record(at, refused).is_some());
        }
        assert_eq!(warnings, 0, "the flood lasted 0.9 s");
        assert_eq!(log.flush(t0 + Duration::from_millis(999)), None);
        // The next refusal after the interval reports everything since the first warning.
        let next = log
            .record(t0 + SECOND, Refused::Deadline)
            .expect("the interval passed");
        assert_eq!(
            next,
            Counts {
                per_client: 2500,
                per_prefix: 2500,
                total: 2500,
                deadline: 2501
            }
        );
        assert_eq!(
            next.to_string(),
            "per_client=2500 per_prefix=2500 total=2500 deadline=2501"
        );
        // Nothing left to report.
        assert_eq!(log.flush(t0 + 5 * SECOND), None);
    }

    #[test]
    fn refusals_after_the_last_warning_are_flushed_once_the_interval_passes() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(SECOND);
        assert!(log.record(t0, Refused::Total).is_some());
        assert!(log.record(t0 + SECOND / 2, Refused::Total).is_none());
        assert_eq!(log.flush(t0 + SECOND / 2), None, "too early");
        let flushed = log.flush(t0 + SECOND).expect("due");
        assert_eq!(flushed.total, 1);
        // The flush was a warning: the next refusal within the interval waits.
        assert!(log
            .record(t0 + SECOND + SECOND / 2, Refused::Total)
            .is_none());
        // A clock that goes backwards never panics and never warns early.
        assert!(log.record(t0, Refused::Total).is_none());
    }
}
