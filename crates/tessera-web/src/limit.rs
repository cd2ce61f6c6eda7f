//! A per-client token bucket for the login and code forms: a burst of `per_minute` requests,
//! refilled evenly over a minute. It slows password and code guessing from one address long
//! before the per-user lockout is reached, and it costs one map lookup. Time comes from the
//! caller (the app's clock), so tests drive it with a manual clock.
//!
//! Each replica keeps its own buckets: behind a load balancer the effective limit is
//! `per_minute × replicas`, which is fine for a brake (the per-user lockout lives in the
//! database and is exact).

use std::collections::HashMap;
use std::sync::Mutex;
use time::OffsetDateTime;

/// Most addresses remembered; beyond it, full buckets are forgotten first.
const MAX_TRACKED: usize = 100_000;

/// Per-key token buckets, in exact integer units: a request costs 60 000 units and a bucket
/// refills `per_minute` units per millisecond, up to `per_minute` requests.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (u64, i64)>>,
}

const COST: u64 = 60_000;

impl RateLimiter {
    /// `per_minute` requests per key per minute (0: unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, buckets: Mutex::new(HashMap::new()) }
    }

    /// Take one request for `key` at `now`: `Ok(())`, or `Err(seconds)` to wait first.
    pub fn check(&self, key: &str, now: OffsetDateTime) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let rate = u64::from(self.per_minute);
        let cap = rate * COST;
        let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let refill = |units: u64, at: i64| {
            let elapsed = u64::try_from(now_ms.saturating_sub(at)).unwrap_or(0);
            units.saturating_add(elapsed.saturating_mul(rate)).min(cap)
        };
        let mut map = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_TRACKED && !map.contains_key(key) {
            map.retain(|_, (units, at)| refill(*units, *at) < cap);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let (units, at) = map.entry(key.to_owned()).or_insert((cap, now_ms));
        *units = refill(*units, *at);
        *at = now_ms;
        if *units >= COST {
            *units -= COST;
            Ok(())
        } else {
            let wait_ms = (COST - *units).div_ceil(rate);
            Err(wait_ms.div_ceil(1000).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimiter;
    use time::{Duration, macros::datetime};

    #[test]
    fn bursts_then_refills() {
        let l = RateLimiter::new(3);
        let t = datetime!(2026-01-01 0:00 UTC);
        for _ in 0..3 {
            assert_eq!(l.check("a", t), Ok(()));
        }
        assert_eq!(l.check("a", t), Err(20), "one token every 20 s");
        assert_eq!(l.check("b", t), Ok(()), "another address has its own bucket");
        assert_eq!(l.check("a", t + Duration::seconds(19)), Err(1));
        assert_eq!(l.check("a", t + Duration::seconds(20)), Ok(()));
        assert!(l.check("a", t + Duration::seconds(20)).is_err());
        assert_eq!(RateLimiter::new(0).check("a", t), Ok(()));
    }
}
