//! The multi-tenant MFA decision: whether a login needs a second factor, and whether a
//! session may use an account's resources — reasoning over every account the user belongs to.
//!
//! Pure functions; the app evaluates them on every login and on every access to an account,
//! with the account's *current* policy and the user's *current* factors, so turning on
//! `require_mfa` or removing the last factor takes effect at once for existing sessions.

use time::OffsetDateTime;

/// What a session has proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Assurance {
    /// Password only.
    Password,
    /// Password and a second factor (TOTP or recovery code).
    PasswordAndSecondFactor,
}

/// An account's MFA policy, as it stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPolicy {
    /// Account id.
    pub account_id: String,
    /// Whether members must use a second factor.
    pub require_mfa: bool,
    /// Until then, members without a factor may still enter (with a warning).
    pub grace_until: Option<OffsetDateTime>,
    /// When the account requires MFA: the most days a browser its members trust may skip the
    /// second factor ("trust this browser"; 0: never). `None`: no cap of its own.
    pub max_trust_days: Option<u32>,
}

/// Whether a trust made at `since` still satisfies an account whose cap is `max_days` (`None`:
/// no cap of its own; 0: never).
pub fn trust_allowed(since: OffsetDateTime, max_days: Option<u32>, now: OffsetDateTime) -> bool {
    max_days.is_none_or(|d| d > 0 && since > now - time::Duration::days(i64::from(d)))
}

/// The strictest "trust this browser" cap over a user's accounts (`None`: none caps it). Only
/// an account that requires MFA caps it: the others do not ask for a factor at all.
pub fn trust_cap_days(accounts: &[AccountPolicy]) -> Option<u32> {
    accounts.iter().filter(|a| a.require_mfa).filter_map(|a| a.max_trust_days).min()
}

/// What a login must do after a correct password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRequirement {
    /// The user has an active factor: ask for it, whatever the accounts say.
    SecondFactor,
    /// The password is enough to sign in. `enrolment_required` lists the accounts that
    /// require MFA and stay closed to this session until the user enrols (those still in a
    /// grace period are open, with a warning, and are listed in `grace`).
    Complete {
        /// Accounts closed until enrolment.
        enrolment_required: Vec<String>,
        /// Accounts open only until their grace deadline.
        grace: Vec<(String, OffsetDateTime)>,
    },
}

/// Decide what a login needs. Rule: an active factor always means a second factor;
/// otherwise the login completes and the accounts that require MFA are reported.
pub fn login_requirement(has_active_factor: bool, accounts: &[AccountPolicy], now: OffsetDateTime) -> LoginRequirement {
    if has_active_factor {
        return LoginRequirement::SecondFactor;
    }
    let mut enrolment_required = Vec::new();
    let mut grace = Vec::new();
    for a in accounts.iter().filter(|a| a.require_mfa) {
        match a.grace_until {
            Some(until) if until > now => grace.push((a.account_id.clone(), until)),
            _ => enrolment_required.push(a.account_id.clone()),
        }
    }
    LoginRequirement::Complete { enrolment_required, grace }
}

/// May a session use an account's resources now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAccess {
    /// Yes.
    Open,
    /// Yes, until the grace deadline: tell the user to enrol.
    OpenUntil(OffsetDateTime),
    /// No: the user has no factor; lead them to enrolment.
    EnrolmentRequired,
    /// No: the user has a factor but this session has not used it; ask for a code.
    SecondFactorRequired,
}

/// Decide access to one account. A session's second-factor claim counts only while the user
/// still has an active factor (removing the last factor ends it).
pub fn account_access(
    session: Assurance,
    has_active_factor: bool,
    account: &AccountPolicy,
    now: OffsetDateTime,
) -> AccountAccess {
    if !account.require_mfa {
        return AccountAccess::Open;
    }
    if session == Assurance::PasswordAndSecondFactor && has_active_factor {
        return AccountAccess::Open;
    }
    match account.grace_until {
        Some(until) if until > now => AccountAccess::OpenUntil(until),
        _ if has_active_factor => AccountAccess::SecondFactorRequired,
        _ => AccountAccess::EnrolmentRequired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccountAccess::*;
    use Assurance::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }
    fn acct(id: &str, require: bool, grace_secs: Option<i64>) -> AccountPolicy {
        AccountPolicy {
            account_id: id.into(),
            require_mfa: require,
            grace_until: grace_secs.map(|s| now() + time::Duration::seconds(s)),
            max_trust_days: None,
        }
    }

    #[test]
    fn the_strictest_trust_cap_of_accounts_that_require_mfa() {
        let cap = |a: &AccountPolicy, d: Option<u32>| AccountPolicy { max_trust_days: d, ..a.clone() };
        let (req, free) = (acct("a", true, None), acct("b", false, None));
        assert_eq!(trust_cap_days(&[]), None);
        assert_eq!(trust_cap_days(&[req.clone(), free.clone()]), None, "no cap set");
        assert_eq!(trust_cap_days(&[cap(&req, Some(7)), cap(&req, Some(3))]), Some(3));
        assert_eq!(
            trust_cap_days(&[cap(&req, Some(7)), cap(&free, Some(0))]),
            Some(7),
            "only accounts that require MFA"
        );
        assert_eq!(trust_cap_days(&[cap(&req, Some(0)), cap(&req, Some(30))]), Some(0), "0: never");
        let day = time::Duration::days(1);
        assert!(trust_allowed(now() - 29 * day, None, now()));
        assert!(!trust_allowed(now(), Some(0), now()), "0: never");
        assert!(trust_allowed(now() - day + time::Duration::seconds(1), Some(1), now()));
        assert!(!trust_allowed(now() - day, Some(1), now()), "a day old under a one-day cap");
    }

    #[test]
    fn login_decision_table() {
        let none = [acct("a", false, None), acct("b", false, None)];
        let one_of_three = [acct("a", false, None), acct("b", true, None), acct("c", false, None)];
        let complete = |e: &[&str], g: &[&str]| LoginRequirement::Complete {
            enrolment_required: e.iter().map(|s| s.to_string()).collect(),
            grace: g.iter().map(|s| (s.to_string(), now() + time::Duration::hours(1))).collect(),
        };
        let cases: Vec<(&str, bool, Vec<AccountPolicy>, LoginRequirement)> = vec![
            ("no factor, none requires", false, none.to_vec(), complete(&[], &[])),
            ("factor, none requires", true, none.to_vec(), LoginRequirement::SecondFactor),
            ("no factor, 1 of 3 requires", false, one_of_three.to_vec(), complete(&["b"], &[])),
            ("factor, one requires", true, one_of_three.to_vec(), LoginRequirement::SecondFactor),
            ("no accounts, no factor", false, vec![], complete(&[], &[])),
            ("no accounts, factor", true, vec![], LoginRequirement::SecondFactor),
            ("grace before deadline", false, vec![acct("g", true, Some(3600))], complete(&[], &["g"])),
            ("grace after deadline", false, vec![acct("g", true, Some(-1))], complete(&["g"], &[])),
            ("grace ends exactly now", false, vec![acct("g", true, Some(0))], complete(&["g"], &[])),
        ];
        for (name, has, accounts, want) in cases {
            assert_eq!(login_requirement(has, &accounts, now()), want, "{name}");
        }
    }

    #[test]
    fn account_access_table() {
        let open = acct("o", false, None);
        let req = acct("r", true, None);
        let grace = acct("g", true, Some(60));
        let expired = acct("e", true, Some(-60));
        let cases = [
            // (name, session, has factor, account, expected)
            ("policy off: password session", Password, false, &open, Open),
            ("policy off: 2FA session", PasswordAndSecondFactor, true, &open, Open),
            ("required, 2FA session, factor", PasswordAndSecondFactor, true, &req, Open),
            ("required, password session, no factor", Password, false, &req, EnrolmentRequired),
            ("required, password session, has factor", Password, true, &req, SecondFactorRequired),
            ("last factor removed ends the 2FA claim", PasswordAndSecondFactor, false, &req, EnrolmentRequired),
            ("grace before deadline", Password, false, &grace, OpenUntil(now() + time::Duration::seconds(60))),
            ("grace after deadline", Password, false, &expired, EnrolmentRequired),
        ];
        for (name, session, has, account, want) in cases {
            assert_eq!(account_access(session, has, account, now()), want, "{name}");
        }
    }

    #[test]
    fn policy_turned_on_mid_session() {
        // A password-only session of a user without a factor: open while the policy is off,
        // closed the moment it is turned on (the check reads the current policy).
        let mut a = acct("a", false, None);
        assert_eq!(account_access(Password, false, &a, now()), Open);
        a.require_mfa = true;
        assert_eq!(account_access(Password, false, &a, now()), EnrolmentRequired);
        // and after the user enrols and steps up, it opens again
        assert_eq!(account_access(PasswordAndSecondFactor, true, &a, now()), Open);
    }
}
