//! Session rules: how long a session lives (an absolute lifetime beside an idle timeout), when
//! its last-seen time is worth writing, and whether it proved a factor recently enough for a
//! sensitive action ("sudo mode").
//!
//! ```text
//!   sign-in ──► live ──(no request for `idle`)──────────► ended (idle)
//!                │  └──(`lifetime` after sign-in)────────► ended (expired)
//!                │  └──(sign-out, revocation)────────────► ended (revoked)
//!                │
//!                ├─ second factor proven ≤ `reauth_window` ago ─► sensitive actions allowed
//!                └─ otherwise ─► re-authenticate first (a factor; the password when the
//!                                 user has none), which issues a new token
//! ```
//!
//! A session's claims are only ever raised by proving something the user already had (the
//! password, or an active factor), or by confirming the user's *first* factor in it.

use crate::policy::Assurance;
use time::{Duration, OffsetDateTime};

/// How long sessions and their proofs last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Absolute lifetime from sign-in (default 12 h).
    pub lifetime: Duration,
    /// A session unused this long ends (default 30 min).
    pub idle_timeout: Duration,
    /// A sensitive action needs a factor proven at most this long ago (default 15 min).
    pub reauth_window: Duration,
    /// The last-seen time is written at most this often (default 1 min): the idle timeout is
    /// exact to within it, and a busy session costs one write a minute, not one per request.
    pub touch_every: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            lifetime: Duration::hours(12),
            idle_timeout: Duration::minutes(30),
            reauth_window: Duration::minutes(15),
            touch_every: Duration::minutes(1),
        }
    }
}

impl SessionPolicy {
    /// A session last seen at `last_seen` is idle-expired at `now` unless it was seen after
    /// this instant.
    pub fn idle_cutoff(&self, now: OffsetDateTime) -> OffsetDateTime {
        now - self.idle_timeout
    }

    /// Whether a session seen at `last_seen` should have its last-seen time written at `now`.
    pub fn needs_touch(&self, last_seen: OffsetDateTime, now: OffsetDateTime) -> bool {
        now - last_seen >= self.touch_every
    }

    /// When a session last seen at `last_seen` and expiring at `expires` ends for idleness or
    /// age, whichever comes first.
    pub fn ends_at(&self, last_seen: OffsetDateTime, expires: OffsetDateTime) -> OffsetDateTime {
        (last_seen + self.idle_timeout).min(expires)
    }

    /// Whether a proof made at `at` is recent at `now` (within the re-authentication window;
    /// a proof from the future, e.g. a clock step back, is not trusted beyond the window).
    pub fn is_recent(&self, at: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
        at.is_some_and(|t| t > now - self.reauth_window && t <= now + self.touch_every)
    }

    /// The "sudo mode" decision for a sensitive action.
    ///
    /// A user with an active factor needs a session at the second-factor level whose second
    /// factor was proven within the window; a user without one needs the password (or a
    /// factor, if they just removed their last one) proven within the window.
    pub fn recent_auth(
        &self,
        has_active_factor: bool,
        assurance: Assurance,
        password_at: Option<OffsetDateTime>,
        second_factor_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Recency {
        if has_active_factor {
            if assurance == Assurance::PasswordAndSecondFactor && self.is_recent(second_factor_at, now) {
                Recency::Recent
            } else {
                Recency::NeedSecondFactor
            }
        } else if self.is_recent(password_at, now) || self.is_recent(second_factor_at, now) {
            Recency::Recent
        } else {
            Recency::NeedPassword
        }
    }
}

/// Whether a session may do a sensitive action now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recency {
    /// Yes.
    Recent,
    /// Prove an active factor again (a current code, a recovery code).
    NeedSecondFactor,
    /// The user has no factor: enter the password again.
    NeedPassword,
}

#[cfg(test)]
mod tests {
    use super::*;
    use Assurance::*;

    fn t(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn the_window_edges() {
        let p = SessionPolicy::default();
        let now = t(10_000);
        let w = p.reauth_window.whole_seconds();
        assert!(p.is_recent(Some(t(10_000)), now));
        assert!(p.is_recent(Some(t(10_000 - w + 1)), now), "one second inside the window");
        assert!(!p.is_recent(Some(t(10_000 - w)), now), "exactly the window ago is stale");
        assert!(!p.is_recent(None, now));
        assert!(!p.is_recent(Some(t(10_000 + 3600)), now), "a proof from the future is not trusted");
    }

    #[test]
    fn sudo_decision_table() {
        let p = SessionPolicy::default();
        let now = t(10_000);
        let fresh = Some(t(9_990));
        let stale = Some(t(10_000 - 16 * 60));
        let cases = [
            // (name, has factor, level, password at, second factor at, expected)
            ("factor, 2FA session, fresh", true, PasswordAndSecondFactor, stale, fresh, Recency::Recent),
            ("factor, 2FA session, stale", true, PasswordAndSecondFactor, fresh, stale, Recency::NeedSecondFactor),
            ("factor, password session, fresh password", true, Password, fresh, None, Recency::NeedSecondFactor),
            ("factor, password session, stamped 2FA", true, Password, fresh, fresh, Recency::NeedSecondFactor),
            ("no factor, fresh password", false, Password, fresh, None, Recency::Recent),
            ("no factor, stale password", false, Password, stale, None, Recency::NeedPassword),
            ("no factor, last one just removed", false, PasswordAndSecondFactor, stale, fresh, Recency::Recent),
        ];
        for (name, has, level, pw, mfa, want) in cases {
            assert_eq!(p.recent_auth(has, level, pw, mfa, now), want, "{name}");
        }
    }

    #[test]
    fn idle_and_touch() {
        let p = SessionPolicy::default();
        assert_eq!(p.idle_cutoff(t(1800)), t(0));
        assert!(!p.needs_touch(t(0), t(59)));
        assert!(p.needs_touch(t(0), t(60)));
        assert_eq!(p.ends_at(t(0), t(100_000)), t(1800));
        assert_eq!(p.ends_at(t(0), t(100)), t(100));
    }
}
