//! Per-client token buckets for the pages' POSTs: a burst of `per_minute` requests, refilled
//! evenly over a minute. They slow password and code guessing (and form spam) from one client
//! long before the per-user lockout is reached, and cost one map lookup. Time comes from the
//! caller (the app's clock), so tests drive it with a manual clock.
//!
//! A client is an IPv4 address, or an IPv6 /64: one subscriber usually holds a whole /64, so
//! limiting single IPv6 addresses would give an attacker 2^64 buckets. An IPv4-mapped IPv6
//! address (`::ffff:a.b.c.d`, what a dual-stack socket reports) is the IPv4 address.
//!
//! The table holds at most `capacity` clients. When a new one arrives at a full table, the
//! tenth least recently used are forgotten (one pass per tenth of the table, so the cost is
//! amortised): never the whole table, which would hand every attacker a fresh burst.
//!
//! Each replica keeps its own buckets: behind a load balancer the effective limit is
//! `per_minute × replicas`, which is fine for a brake (the per-user lockout lives in the
//! database and is exact).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use time::OffsetDateTime;

/// Most clients remembered by default.
const MAX_TRACKED: usize = 100_000;

/// A request costs this many units; a bucket refills `per_minute` units per millisecond, up to
/// `per_minute` requests: exact integer arithmetic.
const COST: u64 = 60_000;

/// Whose bucket a request draws on: the same client the password lock counts per
/// (`tessera_core::throttle::AddressBucket`; see the module doc).
type Client = tessera_core::throttle::AddressBucket;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: u64,
    /// Last use (Unix milliseconds): the refill's starting point and the eviction order.
    at: i64,
}

/// Per-client token buckets (see the module doc).
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    capacity: usize,
    buckets: Mutex<HashMap<Client, Bucket>>,
}

impl RateLimiter {
    /// `per_minute` requests per client per minute (0: unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self::with_capacity(per_minute, MAX_TRACKED)
    }

    /// As [`RateLimiter::new`], remembering at most `capacity` clients (at least 1).
    pub fn with_capacity(per_minute: u32, capacity: usize) -> Self {
        Self { per_minute, capacity: capacity.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Take one request for the client at `ip` at `now`: `Ok(())`, or `Err(seconds)` to wait
    /// first.
    pub fn check(&self, ip: IpAddr, now: OffsetDateTime) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let client = Client::from(ip);
        let rate = u64::from(self.per_minute);
        let cap = rate * COST;
        let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let mut map = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.capacity && !map.contains_key(&client) {
            evict_least_recently_used(&mut map, (self.capacity / 10).max(1));
        }
        let b = map.entry(client).or_insert(Bucket { units: cap, at: now_ms });
        let elapsed = u64::try_from(now_ms.saturating_sub(b.at)).unwrap_or(0);
        b.units = b.units.saturating_add(elapsed.saturating_mul(rate)).min(cap);
        b.at = b.at.max(now_ms);
        if b.units >= COST {
            b.units -= COST;
            Ok(())
        } else {
            let wait_ms = (COST - b.units).div_ceil(rate);
            Err(wait_ms.div_ceil(1000).max(1))
        }
    }
}

/// Forget the `n` buckets used longest ago.
fn evict_least_recently_used(map: &mut HashMap<Client, Bucket>, n: usize) {
    let mut by_age: Vec<(i64, Client)> = map.iter().map(|(c, b)| (b.at, *c)).collect();
    if by_age.len() > n {
        by_age.select_nth_unstable_by_key(n - 1, |(at, _)| *at);
        by_age.truncate(n);
    }
    for (_, c) in by_age {
        map.remove(&c);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::RateLimiter;
    use std::net::IpAddr;
    use time::{Duration, macros::datetime};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bursts_then_refills() {
        let l = RateLimiter::new(3);
        let t = datetime!(2026-01-01 0:00 UTC);
        for _ in 0..3 {
            assert_eq!(l.check(ip("192.0.2.1"), t), Ok(()));
        }
        assert_eq!(l.check(ip("192.0.2.1"), t), Err(20), "one token every 20 s");
        assert_eq!(l.check(ip("192.0.2.2"), t), Ok(()), "another address has its own bucket");
        assert_eq!(l.check(ip("192.0.2.1"), t + Duration::seconds(19)), Err(1));
        assert_eq!(l.check(ip("192.0.2.1"), t + Duration::seconds(20)), Ok(()));
        assert!(l.check(ip("192.0.2.1"), t + Duration::seconds(20)).is_err());
        assert_eq!(RateLimiter::new(0).check(ip("192.0.2.1"), t), Ok(()));
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_ipv4_is_ipv4() {
        let t = datetime!(2026-01-01 0:00 UTC);
        let l = RateLimiter::new(1);
        assert_eq!(l.check(ip("2001:db8:1:2::1"), t), Ok(()));
        assert!(l.check(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t).is_err(), "same /64, same bucket");
        assert_eq!(l.check(ip("2001:db8:1:3::1"), t), Ok(()), "the next /64 has its own");
        assert_eq!(l.check(ip("203.0.113.9"), t), Ok(()));
        assert!(l.check(ip("::ffff:203.0.113.9"), t).is_err(), "IPv4-mapped is the IPv4 address");
        assert_eq!(l.check(ip("203.0.113.10"), t), Ok(()), "IPv4 is per address");
        // Every IPv4-mapped address is not one /64 (::ffff:0:0/96 lies inside ::/64).
        assert_eq!(l.check(ip("::ffff:203.0.113.11"), t), Ok(()));
        assert_eq!(l.check(ip("::1"), t), Ok(()));
        assert!(l.check(ip("::2"), t).is_err(), "::/64 is one client");
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_used_tenth_only() {
        let t = datetime!(2026-01-01 0:00 UTC);
        let ms = Duration::milliseconds;
        let l = RateLimiter::with_capacity(1, 20);
        let attacker = ip("198.51.100.66");
        assert_eq!(l.check(attacker, t), Ok(()), "the attacker's burst");
        for i in 1..20u8 {
            assert_eq!(l.check(ip(&format!("192.0.2.{i}")), t + ms(i64::from(i))), Ok(()));
        }
        // The attacker keeps trying, so it is the most recently used.
        assert!(l.check(attacker, t + ms(100)).is_err());
        assert_eq!(l.buckets.lock().unwrap().len(), 20);
        // A new client at the full table: the two used longest ago (.1 and .2) are forgotten.
        assert_eq!(l.check(ip("192.0.2.100"), t + ms(200)), Ok(()));
        assert_eq!(l.buckets.lock().unwrap().len(), 19);
        assert!(l.check(attacker, t + ms(300)).is_err(), "the attacker's empty bucket is kept");
        assert!(l.check(ip("192.0.2.3"), t + ms(300)).is_err(), "so is every recent one");
        assert_eq!(l.check(ip("192.0.2.1"), t + ms(300)), Ok(()), "the oldest was forgotten");
        assert_eq!(l.check(ip("192.0.2.2"), t + ms(300)), Ok(()), "and the next oldest");
    }
}
