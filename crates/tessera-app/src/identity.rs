//! Identity use cases: sign-up, the two-step login (password, then a second factor when the
//! user has one), sessions, accounts and their MFA policy, and the per-account access check
//! that reasons over the account's current policy.

use crate::{App, AppError, ClientContext, Outcome};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::atomic::Ordering;
use tessera_core::factor::AuditKind;
use tessera_core::password::{self, Password};
use tessera_core::policy::{self, AccountAccess, Assurance, LoginRequirement};
use tessera_core::throttle::Gate;
use tessera_core::{CoreError, random};
use tessera_store::{GateResult, NewNotification, NewSession, PASSWORD, PasswordSession, UserRow};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// How long a login challenge (between password and second factor) lives.
pub const CHALLENGE_TTL: Duration = Duration::minutes(5);

/// What a login step led to. The same `Failed` answers a wrong password and an unknown email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Signed in. Show `token` to the client once (a cookie, a bearer token).
    Authenticated {
        /// The session token (only its hash is stored).
        token: Zeroizing<String>,
        /// The user.
        user_id: String,
        /// What the session proved.
        assurance: Assurance,
        /// Accounts closed to this session until the user enrols a factor.
        enrolment_required: Vec<String>,
        /// Accounts open only until their grace deadline.
        grace: Vec<(String, OffsetDateTime)>,
        /// A new known-browser token for the client to keep (a long-lived cookie) in place of
        /// the one it presented (a sign-in); `None` for a re-authentication.
        browser_token: Option<Zeroizing<String>>,
    },
    /// The password was right and the user has a factor: complete with a code and this
    /// challenge (single use, 5 minutes).
    SecondFactorRequired {
        /// The challenge token.
        challenge: Zeroizing<String>,
    },
    /// Wrong email or password (indistinguishable on purpose).
    Failed,
    /// A wrong second-factor code; the challenge stays usable.
    Rejected {
        /// Attempts left before a lock.
        attempts_remaining: u32,
    },
    /// Too many failures; any open challenge is void.
    Locked {
        /// End of the lock.
        until: OffsetDateTime,
    },
    /// The challenge is unknown, used, voided or expired: sign in again.
    ChallengeInvalid,
    /// Password sign-in for this email is suspended after too many consecutive failures from
    /// everywhere: only a browser that signed this user in before may try (known and unknown
    /// emails get the same answer).
    Suspended,
    /// The user's authenticator apps were taken out of use after too many consecutive wrong
    /// codes: sign in with a recovery code (or ask support).
    TotpDisabled,
    /// A security key or passkey's answer was refused (a login challenge stays usable: begin
    /// again).
    KeyRefused(crate::KeyRefusal),
}

/// How a password check treats an email whose password sign-in is suspended (100 consecutive
/// failures from everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suspension {
    /// A sign-in: only a browser that signed the user in before may try.
    KnownBrowsersOnly,
    /// Re-authentication in a session: nobody may try (a stolen session must not become a
    /// way around the ceiling).
    Refuse,
}

/// How long a browser stays known after its last completed sign-in.
const KNOWN_BROWSER_TTL: Duration = Duration::days(400);

/// What a password check found.
pub(crate) enum PasswordCheck {
    /// Right; the user.
    Ok(Box<UserRow>),
    /// Wrong password or unknown email.
    Failed,
    /// Too many failures from this address: locked until then.
    Locked(OffsetDateTime),
    /// Too many failures from everywhere, and this browser never signed the user in.
    Suspended,
}

/// A notice of `kind` to a user's address (no link).
pub(crate) fn notice_to(user: &UserRow, kind: &str, detail: serde_json::Value) -> NewNotification {
    NewNotification {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user.id.clone(),
        email: user.email.clone(),
        kind: kind.to_owned(),
        detail: detail.to_string(),
        secret: None,
    }
}

pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub(crate) fn new_token() -> Result<Zeroizing<String>, CoreError> {
    Ok(Zeroizing::new(data_encoding::BASE64URL_NOPAD.encode(&random::bytes::<32>()?)))
}

/// Whether `t` has the shape of a token we issue (43 base64url characters: session, challenge,
/// known-browser and mailed-link tokens): anything else a client sends is refused or ignored
/// without a lookup.
pub fn well_formed_token(t: &str) -> bool {
    t.len() == 43 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Normalise an email for uniqueness and lookup: trimmed, lower-cased; checked for shape, and
/// deliverable: an address the mail library would refuse to write to is refused here, so no
/// account holds one (its mail would fail for ever).
pub fn normalise_email(email: &str) -> Result<String, CoreError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.trim().parse::<lettre::Address>().is_ok();
    if ok { Ok(e) } else { Err(CoreError::invalid("email", "is not an email address")) }
}

/// The counter key for an email's password attempts across every address (a total that only a
/// success resets), for known and unknown emails alike (so it reveals nothing about which
/// accounts exist).
pub(crate) fn password_subject(email_norm: &str) -> String {
    let digest = Sha256::digest(email_norm.as_bytes());
    format!("pw-{}", data_encoding::HEXLOWER.encode(digest.get(..16).unwrap_or_default()))
}

/// The counter key for an email's password attempts from one client address (IPv6 per /64):
/// locks here stop a guesser at that address without locking the owner out elsewhere.
fn password_subject_from(email_norm: &str, ctx: &ClientContext) -> String {
    let at = ctx.ip().map_or_else(|| "unknown".to_owned(), |ip| tessera_core::throttle::address_bucket(&ip));
    format!("{}@{at}", password_subject(email_norm))
}

impl App {
    /// Run argon2id off the async threads, on the hashing threads (one per core).
    async fn verify_password_blocking(&self, p: Password, phc: String) -> Result<password::Verified, AppError> {
        self.password_verifications.fetch_add(1, Ordering::Relaxed);
        self.hashers.run(move |ws| password::verify_with(ws, &p, &phc)).await
    }

    pub(crate) async fn hash_password(&self, p: Password) -> Result<String, AppError> {
        self.hashers.run(move |ws| password::hash_with(ws, &p)).await?.map_err(AppError::from)
    }

    /// How many password hash verifications this process has run (for tests that prove an
    /// unknown email costs the same as a wrong password).
    pub fn password_verifications(&self) -> u64 {
        self.password_verifications.load(Ordering::Relaxed)
    }

    /// A completed sign-in makes the browser known for `user_id` under a freshly minted token
    /// (returned, for the client to keep), replacing the one it presented: only tokens the
    /// server minted are ever recorded, so a value planted in a victim's browser never becomes
    /// a known browser of theirs. A browser the user never signed in with before (but for
    /// their very first) is worth a notice: when, from where, which browser.
    pub(crate) async fn known_browser(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        ctx: &ClientContext,
    ) -> Result<Option<Zeroizing<String>>, AppError> {
        let token = new_token()?;
        let old = ctx.browser.as_deref().filter(|t| well_formed_token(t)).map(token_hash);
        let seen = self.store.remember_browser(user_id, &token_hash(&token), old.as_deref(), now).await?;
        if seen == tessera_store::BrowserSeen::New {
            self.notify_user(user_id, "new_browser", crate::lifecycle::event_detail(now, ctx), now).await?;
        }
        Ok(Some(token))
    }

    /// Open a password-level session (recording which accounts stay closed until enrolment).
    async fn password_session(
        &self,
        user: &UserRow,
        now: OffsetDateTime,
        enrolment_required: Vec<String>,
        grace: Vec<(String, OffsetDateTime)>,
        ctx: &ClientContext,
    ) -> Result<LoginOutcome, AppError> {
        let user_id = user.id.as_str();
        let (token, hash) = self.fresh_token()?;
        let session = self.session_row(user_id, hash, 1, now, None, ctx);
        let mut ev = self.event(now, user_id, None, AuditKind::LoginSucceeded, ctx);
        ev.detail = json!({ "assurance": "password", "enrolment_required": enrolment_required }).to_string();
        match self.store.create_password_session(&session, &user.password_hash, &ev).await? {
            PasswordSession::Opened => {}
            // A first factor was confirmed since the password was checked: ask for it.
            PasswordSession::HasFactor => return self.challenge(user, now, ctx, None).await,
            // The password was reset or changed meanwhile: the one checked is no longer it.
            PasswordSession::PasswordChanged => return Ok(LoginOutcome::Failed),
        }
        let browser_token = self.known_browser(user_id, now, ctx).await?;
        Ok(LoginOutcome::Authenticated {
            token,
            user_id: user_id.to_owned(),
            assurance: Assurance::Password,
            enrolment_required,
            grace,
            browser_token,
        })
    }

    /// A session row to insert: proven the password now (and a second factor if `mfa_at`).
    pub(crate) fn session_row(
        &self,
        user_id: &str,
        token_hash: Vec<u8>,
        aal: i64,
        now: OffsetDateTime,
        mfa_at: Option<OffsetDateTime>,
        ctx: &ClientContext,
    ) -> NewSession {
        NewSession {
            id: uuid::Uuid::new_v4().simple().to_string(),
            token_hash,
            user_id: user_id.to_owned(),
            aal,
            password_verified_at: Some(now),
            mfa_verified_at: mfa_at,
            created_at: now,
            expires_at: now + self.config.sessions.lifetime,
            ip: ctx.ip(),
            user_agent: ctx.user_agent(),
            trusted_since: None,
        }
    }

    /// Check an email's password with the throttles: locks per (email, client address) with
    /// the escalating lock, and — across every address — a consecutive-failure total that only
    /// a success resets: from `suspend_after` (100) on, only a known browser of the user may
    /// try (when `suspension` applies). Always exactly one hash verification when the
    /// attempt is checked, whether or not the email is known.
    pub(crate) async fn check_password(
        &self,
        email: &str,
        password: &str,
        ctx: &ClientContext,
        suspension: Suspension,
        accept_unverified: bool,
    ) -> Result<PasswordCheck, AppError> {
        let email_norm = normalise_email(email)?;
        let policy = &self.config.password_throttle;
        let total_key = password_subject(&email_norm);
        let key = password_subject_from(&email_norm, ctx);
        let now = self.clock.now();
        let user = self.store.user_by_email(&email_norm).await?;
        // Known and unknown emails answer alike: the lookup runs for both.
        let browser = ctx.browser.as_deref().filter(|t| well_formed_token(t)).map(token_hash).unwrap_or_default();
        let uid = user.as_ref().map_or("", |u| u.id.as_str());
        let known = suspension == Suspension::KnownBrowsersOnly
            && user.is_some()
            && self.store.is_known_browser(uid, &browser, now - KNOWN_BROWSER_TTL).await?;
        let suspended = policy.suspends_after(self.store.attempt_state(&total_key, PASSWORD).await?.total_failures);
        if suspended && !known {
            return Ok(PasswordCheck::Suspended);
        }
        let reserved = match self.store.gate_attempt(&key, PASSWORD, now, policy).await? {
            GateResult::Locked(until) => return Ok(PasswordCheck::Locked(until)),
            GateResult::Reserved(n) if policy.gate(n) == Gate::Refuse => {
                let ev = self.event(now, &key, None, AuditKind::Locked, ctx);
                let until = self.store.lock_if_due(&key, PASSWORD, policy, now, &ev).await?;
                return Ok(until.map_or(PasswordCheck::Failed, PasswordCheck::Locked));
            }
            GateResult::Reserved(n) => n,
        };
        // Reserve this attempt's place in the email's total before the hash runs (as the gate
        // does per address), so a burst cannot have more than the ceiling checked: every attempt
        // counts as a failure until it succeeds; beyond the ceiling only a known browser may go on.
        let total =
            if suspended { policy.suspend_after } else { self.store.count_failure(&total_key, PASSWORD).await? };
        if total > policy.suspend_after && !known {
            return Ok(PasswordCheck::Suspended);
        }
        let phc = user.as_ref().map_or_else(|| password::dummy_hash().to_owned(), |u| u.password_hash.clone());
        let checked = self.verify_password_blocking(Password::normalise(password), phc).await?;
        // An unverified user's right password is a failure like any other, but where the
        // address is being confirmed: otherwise "sign up, then sign in with the password just
        // chosen" would tell a stranger whether the address was free (a new, unverified user)
        // or registered (a wrong password).
        let Some(user) = user.filter(|u| checked.ok && (accept_unverified || u.email_verified)) else {
            let mut ev = self.event(now, &key, None, AuditKind::PasswordRejected, ctx);
            ev.detail = json!({ "attempts_remaining": policy.remaining(reserved) }).to_string();
            self.store.append_audit(&ev).await?;
            if total == policy.suspend_after && !suspended {
                self.password_suspended(&email_norm, now, ctx).await?;
            }
            if policy.locks_after(reserved) {
                let ev = self.event(now, &key, None, AuditKind::Locked, ctx);
                if let Some(until) = self.store.lock_if_due(&key, PASSWORD, policy, now, &ev).await? {
                    return Ok(PasswordCheck::Locked(until));
                }
            }
            return Ok(PasswordCheck::Failed);
        };
        self.store.reset_attempts(&key, PASSWORD).await?;
        self.store.reset_attempts(&total_key, PASSWORD).await?;
        let mut user = user;
        if checked.needs_rehash {
            let fresh = self.hash_password(Password::normalise(password)).await?;
            if self.store.rehash_password(&user.id, &user.password_hash, &fresh).await? {
                user.password_hash = fresh;
            }
        }
        Ok(PasswordCheck::Ok(Box::new(user)))
    }

    /// The 100th consecutive password failure for an email: audit it and tell the user (if
    /// the email is a user's).
    async fn password_suspended(
        &self,
        email_norm: &str,
        now: OffsetDateTime,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let Some(user) = self.store.user_by_email(email_norm).await? else { return Ok(()) };
        tracing::warn!(user_id = %user.id, "password sign-in suspended after too many failures");
        let mut ev = self.event(now, &user.id, None, AuditKind::PasswordSignInSuspended, ctx);
        ev.detail = json!({ "failures": self.config.password_throttle.suspend_after }).to_string();
        self.store.append_audit(&ev).await?;
        if !user.email_verified {
            // Nobody has confirmed this address: no mail goes to it on a stranger's behalf.
            return Ok(());
        }
        self.notify(&user, "password_suspended", json!({ "at": now.unix_timestamp() }), now).await
    }

    /// Queue a notice to a user unless `max` of its kind went to them in the last `per`
    /// (notices a stranger or a repeated action can cause).
    pub(crate) async fn notify_limited(
        &self,
        user: &UserRow,
        kind: &str,
        detail: serde_json::Value,
        max: u32,
        per: Duration,
        now: OffsetDateTime,
    ) -> Result<bool, AppError> {
        let n = notice_to(user, kind, detail);
        let queued = self.store.queue_notification_limited(&n, now - per, max, now).await?;
        if queued {
            self.mail_queued();
        }
        Ok(queued)
    }

    /// Queue a notice to a user.
    pub(crate) async fn notify(
        &self,
        user: &UserRow,
        kind: &str,
        detail: serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<(), AppError> {
        self.store.queue_notification(&notice_to(user, kind, detail), now).await?;
        self.mail_queued();
        Ok(())
    }

    /// First step of a login: check the password (always exactly one hash verification,
    /// whether or not the email is known), then either sign in or ask for the second factor.
    pub async fn begin_login(
        &self,
        email: &str,
        password: &str,
        ctx: &ClientContext,
    ) -> Result<LoginOutcome, AppError> {
        self.begin_login_returning(email, password, ctx, None).await
    }

    /// [`App::begin_login`], remembering in the login challenge (when a second step is needed)
    /// where the sign-in returns once it completes: `return_to`, which the transport has
    /// checked (forward auth's `rd`). Read it back with [`App::challenge_return_to`].
    pub async fn begin_login_returning(
        &self,
        email: &str,
        password: &str,
        ctx: &ClientContext,
        return_to: Option<&str>,
    ) -> Result<LoginOutcome, AppError> {
        let user = match self.check_password(email, password, ctx, Suspension::KnownBrowsersOnly, false).await? {
            PasswordCheck::Ok(u) => u,
            PasswordCheck::Failed => return Ok(LoginOutcome::Failed),
            PasswordCheck::Locked(until) => return Ok(LoginOutcome::Locked { until }),
            PasswordCheck::Suspended => return Ok(LoginOutcome::Suspended),
        };
        let now = self.clock.now();
        let has_factor = self.store.has_active_factor(&user.id).await?;
        let accounts = self.store.account_policies_of(&user.id).await?;
        match policy::login_requirement(has_factor, &accounts, now) {
            LoginRequirement::SecondFactor => match self.trusted_sign_in(&user, &accounts, now, ctx).await? {
                Some(signed_in) => Ok(signed_in),
                None => self.challenge(&user, now, ctx, return_to).await,
            },
            LoginRequirement::Complete { enrolment_required, grace } => {
                self.password_session(&user, now, enrolment_required, grace, ctx).await
            }
        }
    }

    /// The password was right and the user has a factor: a single-use challenge for the second
    /// step.
    async fn challenge(
        &self,
        user: &UserRow,
        now: OffsetDateTime,
        ctx: &ClientContext,
        return_to: Option<&str>,
    ) -> Result<LoginOutcome, AppError> {
        let user_id = user.id.as_str();
        let challenge = new_token()?;
        let hash = token_hash(&challenge);
        let (pw, expires) = (&user.password_hash, now + CHALLENGE_TTL);
        if !self.store.create_challenge_returning(&hash, user_id, pw, now, expires, return_to).await? {
            // The password was reset or changed since it was checked.
            return Ok(LoginOutcome::Failed);
        }
        self.store.append_audit(&self.event(now, user_id, None, AuditKind::SecondFactorChallenged, ctx)).await?;
        Ok(LoginOutcome::SecondFactorRequired { challenge })
    }

    /// Where the sign-in of `challenge` returns once it completes (what
    /// [`App::begin_login_returning`] stored; the transport checks it again before following
    /// it). Readable until the challenge expires, after its second step too.
    pub async fn challenge_return_to(&self, challenge: &str) -> Result<Option<String>, AppError> {
        if !well_formed_token(challenge) {
            return Ok(None);
        }
        Ok(self.store.challenge_return_to(&token_hash(challenge), self.clock.now()).await?)
    }

    /// `TotpDisabled` when the user's authenticator apps are all out of use after too many
    /// wrong codes (so no attempt is spent on them).
    pub(crate) async fn totp_disabled_outcome(&self, user_id: &str) -> Result<Option<LoginOutcome>, AppError> {
        let factors = self.store.list_factors(user_id, self.clock.now()).await?;
        let active: Vec<_> = factors
            .iter()
            .filter(|f| {
                f.status == tessera_core::factor::FactorStatus::Active
                    && f.kind == tessera_core::factor::FactorKind::Totp
            })
            .collect();
        let all_disabled = !active.is_empty() && active.iter().all(|f| f.disabled_at.is_some());
        Ok(all_disabled.then_some(LoginOutcome::TotpDisabled))
    }

    /// Second step with a TOTP code.
    pub async fn complete_login_totp(
        &self,
        challenge: &str,
        code: &str,
        ctx: &ClientContext,
    ) -> Result<LoginOutcome, AppError> {
        tessera_core::otp::Code::parse(code)?;
        let Some(user) = self.store.challenge_user(&token_hash(challenge), self.clock.now()).await? else {
            return Ok(LoginOutcome::ChallengeInvalid);
        };
        if let Some(o) = self.totp_disabled_outcome(&user).await? {
            return Ok(o);
        }
        self.complete_login(challenge, ctx, |app, user| {
            let code = code.to_owned();
            let ctx = ctx.clone();
            async move { app.verify_totp(&user, &code, &ctx).await }
        })
        .await
    }

    /// Second step with a recovery code (used up on success).
    pub async fn complete_login_recovery(
        &self,
        challenge: &str,
        code: &str,
        ctx: &ClientContext,
    ) -> Result<LoginOutcome, AppError> {
        tessera_core::recovery::RecoveryCode::parse(code)?;
        self.complete_login(challenge, ctx, |app, user| {
            let code = code.to_owned();
            let ctx = ctx.clone();
            async move { app.redeem_recovery_code(&user, &code, &ctx).await.map(|(o, _)| o) }
        })
        .await
    }

    async fn complete_login<F, Fut>(
        &self,
        challenge: &str,
        ctx: &ClientContext,
        check: F,
    ) -> Result<LoginOutcome, AppError>
    where
        F: FnOnce(App, String) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome, AppError>>,
    {
        let now = self.clock.now();
        let ch = token_hash(challenge);
        let Some(user_id) = self.store.challenge_user(&ch, now).await? else {
            return Ok(LoginOutcome::ChallengeInvalid);
        };
        match check(self.clone(), user_id.clone()).await? {
            Outcome::Accepted { .. } => self.second_step_passed(challenge, &user_id, "code", ctx).await,
            Outcome::Rejected { attempts_remaining } => Ok(LoginOutcome::Rejected { attempts_remaining }),
            Outcome::Locked { until } => {
                // A locked login cannot go on guessing: every open challenge is void.
                let n = self.store.void_challenges(&user_id, now).await?;
                if n > 0 {
                    self.store.append_audit(&self.event(now, &user_id, None, AuditKind::ChallengesVoided, ctx)).await?;
                }
                Ok(LoginOutcome::Locked { until })
            }
        }
    }

    /// The second step of a login passed (`with`: how, for the audit trail): use the challenge
    /// up and open a session at the second-factor level.
    pub(crate) async fn second_step_passed(
        &self,
        challenge: &str,
        user_id: &str,
        with: &str,
        ctx: &ClientContext,
    ) -> Result<LoginOutcome, AppError> {
        let now = self.clock.now();
        let (token, hash) = self.fresh_token()?;
        let session = self.session_row(user_id, hash, 2, now, Some(now), ctx);
        let mut ev = self.event(now, user_id, None, AuditKind::LoginSucceeded, ctx);
        ev.detail = json!({ "assurance": "password+second_factor", "with": with }).to_string();
        if !self.store.complete_challenge(&token_hash(challenge), &session, &ev).await? {
            return Ok(LoginOutcome::ChallengeInvalid);
        }
        self.signed_in_beyond_password(token, user_id, now, ctx).await
    }

    /// A session at the second-factor level was opened under `token` (a second step, a passkey,
    /// a trusted browser): remember the browser, and say so.
    pub(crate) async fn signed_in_beyond_password(
        &self,
        token: Zeroizing<String>,
        user_id: &str,
        now: OffsetDateTime,
        ctx: &ClientContext,
    ) -> Result<LoginOutcome, AppError> {
        let browser_token = self.known_browser(user_id, now, ctx).await?;
        Ok(LoginOutcome::Authenticated {
            token,
            user_id: user_id.to_owned(),
            assurance: Assurance::PasswordAndSecondFactor,
            enrolment_required: Vec::new(),
            grace: Vec::new(),
            browser_token,
        })
    }

    /// May the session of `token` use this account's resources now? Evaluated against the
    /// account's current policy and the user's current factors. `NotFound` for an unknown
    /// session or a user who is not a member.
    pub async fn account_access(&self, token: &str, account_id: &str) -> Result<AccountAccess, AppError> {
        let s = self.session(token).await?.ok_or(AppError::NotFound("session"))?;
        Ok(self.account_for(&s, account_id).await?.1)
    }

    /// Sign out this session; `false` if it was not live (unknown, expired or revoked).
    pub async fn logout(&self, token: &str, ctx: &ClientContext) -> Result<bool, AppError> {
        let now = self.clock.now();
        let Some(s) = self.session(token).await? else { return Ok(false) };
        let revoked = self.store.revoke_session(&token_hash(token), now).await?;
        if revoked {
            self.store.append_audit(&self.event(now, s.user_id(), None, AuditKind::SessionsRevoked, ctx)).await?;
        }
        Ok(revoked)
    }

    /// Sign out every session of a user (a service's action, e.g. an operator's); returns how
    /// many were live. `NotFound` for an unknown user.
    pub async fn logout_everywhere(&self, user_id: &str, ctx: &ClientContext) -> Result<u64, AppError> {
        let user_id = tessera_core::validate::subject_id(user_id)?;
        self.store.user_by_id(user_id).await?.ok_or(AppError::NotFound("user"))?;
        let now = self.clock.now();
        let n = self.store.revoke_sessions_of(user_id, now).await?;
        let mut ev = self.event(now, user_id, None, AuditKind::SessionsRevoked, ctx);
        ev.detail = json!({ "count": n, "scope": "everywhere" }).to_string();
        self.store.append_audit(&ev).await?;
        Ok(n)
    }
}

impl App {
    /// Support-driven recovery (no SMS, on purpose): after verifying the user out of band, a
    /// support agent removes every factor and recovery code of the user, which also revokes
    /// their sessions; the user is notified and the audit trail records who, why and the
    /// ticket. A reason, a ticket reference and the actor are required.
    pub async fn support_reset_mfa(
        &self,
        email: &str,
        reason: &str,
        ticket: &str,
        actor: &str,
        ctx: &ClientContext,
    ) -> Result<tessera_store::ResetReport, AppError> {
        let email_norm = normalise_email(email)?;
        let reason = tessera_core::validate::display_name("reason", reason, 500)?;
        let ticket = tessera_core::validate::display_name("ticket", ticket, 100)?;
        let actor = tessera_core::validate::display_name("actor", actor, 100)?;
        let user = self.store.user_by_email(&email_norm).await?.ok_or(AppError::NotFound("user"))?;
        let now = self.clock.now();
        let mut ev = self.event(now, &user.id, None, AuditKind::SupportMfaReset, ctx);
        ev.actor = Some(actor.to_owned());
        ev.detail = json!({ "reason": reason, "ticket": ticket }).to_string();
        let notice = tessera_store::NewNotification {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            email: user.email.clone(),
            kind: "mfa_reset".into(),
            detail: json!({ "ticket": ticket, "at": now.unix_timestamp() }).to_string(),
            secret: None,
        };
        let report = self.store.support_reset(&user.id, now, &notice, &ev).await?;
        self.mail_queued();
        // Support has checked who they are: lift a password-sign-in suspension too.
        self.store.reset_attempts(&password_subject(&email_norm), PASSWORD).await?;
        tracing::warn!(user_id = %user.id, actor, ticket, factors = report.factors, "support reset of MFA");
        Ok(report)
    }
}

impl App {
    /// An operator lifts the suspension of password sign-in for an email (100 consecutive
    /// failures) after checking who is asking, without touching factors, sessions or known
    /// browsers; a reason and the actor are required and audited. `NotFound` for an email that
    /// is no user's.
    pub async fn support_unlock(
        &self,
        email: &str,
        reason: &str,
        actor: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let reason = tessera_core::validate::display_name("reason", reason, 500)?;
        let actor = tessera_core::validate::display_name("actor", actor, 100)?;
        let email_norm = normalise_email(email)?;
        let user = self.store.user_by_email(&email_norm).await?.ok_or(AppError::NotFound("user"))?;
        self.store.reset_attempts(&password_subject(&email_norm), PASSWORD).await?;
        let now = self.clock.now();
        let mut ev = self.event(now, &user.id, None, AuditKind::PasswordSignInSuspended, ctx);
        ev.actor = Some(actor.to_owned());
        ev.detail = json!({ "lifted": true, "reason": reason }).to_string();
        self.store.append_audit(&ev).await?;
        tracing::warn!(user_id = %user.id, actor, "password sign-in suspension lifted by support");
        Ok(())
    }

    /// An operator signs one user (by email) or every user (`None`) out of every session, e.g.
    /// after a suspected leak; a reason and the actor are required and audited (per user when
    /// one is named; under the subject `*` for everyone). Factors and passwords are untouched.
    /// Returns how many sessions were live.
    pub async fn support_sign_out(
        &self,
        email: Option<&str>,
        reason: &str,
        actor: &str,
        ctx: &ClientContext,
    ) -> Result<u64, AppError> {
        let reason = tessera_core::validate::display_name("reason", reason, 500)?;
        let actor = tessera_core::validate::display_name("actor", actor, 100)?;
        let now = self.clock.now();
        let (subject, n) = match email {
            Some(e) => {
                let user = self.store.user_by_email(&normalise_email(e)?).await?.ok_or(AppError::NotFound("user"))?;
                let n = self.store.revoke_sessions_of(&user.id, now).await?;
                (user.id, n)
            }
            None => ("*".to_owned(), self.store.revoke_all_sessions(now).await?),
        };
        let mut ev = self.event(now, &subject, None, AuditKind::SessionsRevoked, ctx);
        ev.actor = Some(actor.to_owned());
        ev.detail = json!({ "count": n, "scope": if email.is_some() { "everywhere" } else { "all users" },
                            "reason": reason })
        .to_string();
        self.store.append_audit(&ev).await?;
        tracing::warn!(actor, sessions = n, all = email.is_none(), "operator sign-out");
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_tokens_are_256_bit_and_distinct() {
        let tokens: std::collections::HashSet<String> =
            (0..1000).map(|_| super::new_token().unwrap().to_string()).collect();
        assert_eq!(tokens.len(), 1000);
        for t in &tokens {
            let raw = data_encoding::BASE64URL_NOPAD.decode(t.as_bytes()).unwrap();
            assert_eq!(raw.len(), 32, "256 bits from the OS CSPRNG");
            assert!(super::well_formed_token(t));
        }
    }

    #[test]
    fn known_browser_tokens() {
        assert!(super::well_formed_token(&"A".repeat(43)));
        assert!(!super::well_formed_token(&"A".repeat(42)));
        assert!(!super::well_formed_token(&format!("{}=", "A".repeat(42))));
    }

    #[test]
    fn emails() {
        assert_eq!(super::normalise_email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in ["", "ada", "@x", "ada@", "a b@c.d", "a@b@c"] {
            assert!(super::normalise_email(bad).is_err(), "{bad}");
        }
        assert_ne!(super::password_subject("a@b.c"), super::password_subject("a@b.d"));
    }
}
