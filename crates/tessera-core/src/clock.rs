//! Time as a parameter: the only place in Tessera that reads the wall clock.
//!
//! Rules take `now: OffsetDateTime`; services hold an `Arc<dyn Clock>`; tests use
//! [`ManualClock`] to move time by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

/// A source of the current time, truncated to whole milliseconds (the precision we store).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

/// Milliseconds since the Unix epoch of `t` (the form timestamps take in storage).
pub fn to_millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The time `ms` milliseconds after the Unix epoch (saturating at the representable range).
pub fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned read of the wall clock
    fn now(&self) -> OffsetDateTime {
        from_millis(to_millis(OffsetDateTime::now_utc()))
    }
}

/// A clock that moves only when told to: for tests of every time-dependent rule.
#[derive(Debug, Clone)]
pub struct ManualClock {
    ms: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock stopped at `start` (truncated to milliseconds).
    pub fn new(start: OffsetDateTime) -> Self {
        Self { ms: Arc::new(AtomicI64::new(to_millis(start))) }
    }
    /// A clock stopped at `secs` seconds after the Unix epoch.
    pub fn at_unix(secs: i64) -> Self {
        Self { ms: Arc::new(AtomicI64::new(secs.saturating_mul(1000))) }
    }
    /// Move the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: time::Duration) {
        let ms = i64::try_from(by.whole_milliseconds()).unwrap_or(i64::MAX);
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
    /// Set the clock to `t`.
    pub fn set(&self, t: OffsetDateTime) {
        self.ms.store(to_millis(t), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        from_millis(self.ms.load(Ordering::SeqCst))
    }
}
