//! Throttling of attempts: after N consecutive failures a subject is locked for a delay that
//! doubles with each further lock, up to a cap; a success resets.
//!
//! ```text
//!            failure (n < N)            failure n = N
//!   open ─────────────────────► open ─────────────────► locked (base × 2^(locks-1), capped)
//!    ▲                                                      │ lock ends: count starts again,
//!    │ success: everything resets                           │ the total does not
//!    └──────────────────────────────────────────────────────┘
//!   total ≥ `suspend_after` (100, NIST 800-63B's ceiling) ──► suspended: the caller takes the
//!   factor (or password sign-in from unknown browsers) out of use and tells the user
//! ```
//!
//! The lock alone would allow N guesses per capped lock for ever; the total, which only a
//! success resets, bounds them at `suspend_after`.
//!
//! The store keeps the counters and applies them atomically (see tessera-store's attempts
//! repository); the rules — when to refuse, when to lock, for how long, when to suspend —
//! live here.

use time::{Duration, OffsetDateTime};

/// The configurable rule. Defaults: 5 failures, 1 minute, doubling, capped at 1 hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Consecutive failures that lock the subject (at least 1).
    pub max_failures: u32,
    /// Length of the first lock.
    pub base_lock: Duration,
    /// Longest lock.
    pub max_lock: Duration,
    /// Consecutive failures in all (across locks; only a success resets them) at which the
    /// subject is suspended (at most 100: NIST SP 800-63B 5.2.2).
    pub suspend_after: u32,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self { max_failures: 5, base_lock: Duration::minutes(1), max_lock: Duration::hours(1), suspend_after: 100 }
    }
}

/// A subject's counters for one kind of attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttemptState {
    /// Failures since the last success or lock (attempts in flight count as failures until
    /// they succeed: that is what bounds concurrent guessing).
    pub consecutive_failures: u32,
    /// Locks since the last success.
    pub lock_count: u32,
    /// End of the current lock, if any.
    pub locked_until: Option<OffsetDateTime>,
    /// Failures since the last success, across locks.
    pub total_failures: u32,
}

impl AttemptState {
    /// Whether the subject is locked at `now`.
    pub fn is_locked(&self, now: OffsetDateTime) -> bool {
        self.locked_until.is_some_and(|u| u > now)
    }
}

/// What the gate says to an attempt that has reserved failure number `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Check the code.
    Proceed,
    /// More attempts are in flight than the budget allows: refuse without checking.
    Refuse,
}

impl ThrottlePolicy {
    /// The length of lock number `lock_number` (1 for the first): base × 2^(n-1), capped.
    pub fn lock_duration(&self, lock_number: u32) -> Duration {
        let doublings = lock_number.saturating_sub(1).min(30);
        let d = self.base_lock.saturating_mul(1i32 << doublings);
        if d > self.max_lock { self.max_lock } else { d }
    }

    /// An attempt reserves a failure slot before its code is checked (so N concurrent
    /// guesses cannot all be checked). `reserved` is the failure count including this one.
    pub fn gate(&self, reserved: u32) -> Gate {
        if reserved <= self.budget() { Gate::Proceed } else { Gate::Refuse }
    }

    /// The highest failure slot the gate admits (slots `1..=budget` proceed). A store that
    /// applies the gate inside SQL binds this number, so the rule stays this one.
    pub fn budget(&self) -> u32 {
        self.max_failures
    }

    /// Whether a failure that brought the count to `failures` locks the subject.
    pub fn locks_after(&self, failures: u32) -> bool {
        failures >= self.max_failures
    }

    /// Attempts left after `failures` consecutive failures.
    pub fn remaining(&self, failures: u32) -> u32 {
        self.max_failures.saturating_sub(failures)
    }

    /// Whether `total` consecutive failures (across locks) suspend the subject.
    pub fn suspends_after(&self, total: u32) -> bool {
        total >= self.suspend_after
    }

    /// The state after a lock is applied at `now` to `state` (the total is kept).
    pub fn apply_lock(&self, state: AttemptState, now: OffsetDateTime) -> AttemptState {
        let lock_count = state.lock_count.saturating_add(1);
        AttemptState {
            consecutive_failures: 0,
            lock_count,
            locked_until: Some(now + self.lock_duration(lock_count)),
            total_failures: state.total_failures,
        }
    }

    /// The state after a failed attempt at `now` (the sequential model of the rule, which the
    /// store's atomic statements implement).
    pub fn record_failure(&self, state: AttemptState, now: OffsetDateTime) -> AttemptState {
        let failures = state.consecutive_failures.saturating_add(1);
        let total_failures = state.total_failures.saturating_add(1);
        let s = AttemptState { consecutive_failures: failures, total_failures, ..state };
        if self.locks_after(failures) { self.apply_lock(s, now) } else { s }
    }

    /// The state after a success: everything resets.
    pub fn record_success(&self) -> AttemptState {
        AttemptState::default()
    }
}

/// One client, as attempts are counted (the password lock, the pages' rate limit): an IPv4
/// address itself, an IPv6 address's /64 (one subscriber usually holds a whole /64, so counting
/// per address would give them 2^64 budgets), an IPv4-mapped IPv6 address as its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressBucket {
    /// An IPv4 address.
    V4(std::net::Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl From<std::net::IpAddr> for AddressBucket {
    fn from(ip: std::net::IpAddr) -> Self {
        match ip.to_canonical() {
            std::net::IpAddr::V4(a) => Self::V4(a),
            std::net::IpAddr::V6(a) => Self::V6Prefix(u64::try_from(a.to_bits() >> 64).unwrap_or(u64::MAX)),
        }
    }
}

impl std::fmt::Display for AddressBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V4(a) => write!(f, "{a}"),
            Self::V6Prefix(p) => write!(f, "{}/64", std::net::Ipv6Addr::from_bits(u128::from(*p) << 64)),
        }
    }
}

/// The counting key of an address given as text (see [`AddressBucket`]); anything that is not
/// an address is its own key.
pub fn address_bucket(ip: &str) -> String {
    match ip.trim().parse::<std::net::IpAddr>() {
        Ok(a) => AddressBucket::from(a).to_string(),
        Err(_) => ip.chars().take(64).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    #[test]
    fn five_failures_lock_for_a_minute() {
        let p = ThrottlePolicy::default();
        let mut s = AttemptState::default();
        for i in 1..=4 {
            s = p.record_failure(s, t0());
            assert_eq!(s.consecutive_failures, i);
            assert!(!s.is_locked(t0()));
            assert_eq!(p.remaining(i), 5 - i);
        }
        s = p.record_failure(s, t0());
        assert!(s.is_locked(t0()));
        assert_eq!(s.locked_until, Some(t0() + Duration::minutes(1)));
        assert!(s.is_locked(t0() + Duration::seconds(59)));
        assert!(!s.is_locked(t0() + Duration::seconds(60)));
    }

    #[test]
    fn locks_double_and_cap() {
        let p = ThrottlePolicy::default();
        let got: Vec<i64> = (1..=9).map(|n| p.lock_duration(n).whole_minutes()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.lock_duration(u32::MAX), Duration::hours(1));
        let mut s = AttemptState::default();
        let mut now = t0();
        for want in [1, 2, 4] {
            for _ in 0..5 {
                s = p.record_failure(s, now);
            }
            assert_eq!(s.locked_until, Some(now + Duration::minutes(want)));
            now = s.locked_until.unwrap();
        }
        assert_eq!(p.record_success(), AttemptState::default());
    }

    #[test]
    fn locks_cap_but_the_total_suspends_at_one_hundred() {
        // With the lock capped at an hour, N guesses an hour would go on for ever; the total
        // (never reset by a lock) reaches the ceiling after exactly 100 failures.
        let p = ThrottlePolicy::default();
        let mut s = AttemptState::default();
        let mut now = t0();
        let mut failures = 0;
        while !p.suspends_after(s.total_failures) {
            if s.is_locked(now) {
                now = s.locked_until.unwrap();
                continue;
            }
            s = p.record_failure(s, now);
            failures += 1;
        }
        assert_eq!(failures, 100);
        assert_eq!(s.total_failures, 100);
        assert_eq!(s.lock_count, 20, "a lock every 5 failures, none of which reset the total");
        assert!(!p.suspends_after(99));
        assert_eq!(p.record_success().total_failures, 0, "only a success resets the total");
    }

    #[test]
    fn address_buckets() {
        assert_eq!(address_bucket("203.0.113.7"), "203.0.113.7");
        assert_eq!(address_bucket("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(address_bucket("::2"), "::/64");
        assert_eq!(address_bucket("2001:db8:1:2:ffff::1"), address_bucket("2001:db8:1:2::9"), "one /64");
        assert_ne!(address_bucket("2001:db8:1:3::1"), address_bucket("2001:db8:1:2::1"));
        assert_eq!(address_bucket("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(address_bucket("unknown"), "unknown");
    }

    #[test]
    fn gate_bounds_concurrent_attempts() {
        let p = ThrottlePolicy { max_failures: 3, ..Default::default() };
        assert_eq!(p.gate(1), Gate::Proceed);
        assert_eq!(p.gate(3), Gate::Proceed);
        assert_eq!(p.gate(4), Gate::Refuse);
        // the budget a store binds into SQL is exactly the last slot `gate` admits
        assert_eq!(p.gate(p.budget()), Gate::Proceed);
        assert_eq!(p.gate(p.budget() + 1), Gate::Refuse);
        assert!(!p.locks_after(2));
        assert!(p.locks_after(3));
    }
}
