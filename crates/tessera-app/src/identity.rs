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
use tessera_store::{GateResult, PASSWORD};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// How long a login challenge (between password and second factor) lives.
pub const CHALLENGE_TTL: Duration = Duration::minutes(5);
/// How long a session lives.
pub const SESSION_TTL: Duration = Duration::hours(12);

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
}

pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn new_token() -> Result<Zeroizing<String>, CoreError> {
    Ok(Zeroizing::new(data_encoding::BASE64URL_NOPAD.encode(&random::bytes::<32>()?)))
}

/// Normalise an email for uniqueness and lookup: trimmed, lower-cased; checked for shape.
pub fn normalise_email(email: &str) -> Result<String, CoreError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(e) } else { Err(CoreError::invalid("email", "is not an email address")) }
}

/// The counter key for password attempts: per normalised email, for known and unknown
/// emails alike (so lockouts reveal nothing about which accounts exist).
fn password_subject(email_norm: &str) -> String {
    let digest = Sha256::digest(email_norm.as_bytes());
    format!("pw-{}", data_encoding::HEXLOWER.encode(digest.get(..16).unwrap_or_default()))
}

impl App {
    /// Run argon2id off the async threads, at most one per core at a time.
    async fn verify_password_blocking(&self, p: Password, phc: String) -> Result<password::Verified, AppError> {
        let _permit =
            self.hash_permits.acquire().await.map_err(|_| AppError::FailedPrecondition("shutting down".into()))?;
        self.password_verifications.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || password::verify(&p, &phc))
            .await
            .map_err(|e| AppError::FailedPrecondition(format!("password check failed: {e}")))
    }

    async fn hash_password_blocking(&self, p: Password) -> Result<String, AppError> {
        let _permit =
            self.hash_permits.acquire().await.map_err(|_| AppError::FailedPrecondition("shutting down".into()))?;
        tokio::task::spawn_blocking(move || password::hash(&p))
            .await
            .map_err(|e| AppError::FailedPrecondition(format!("password hashing failed: {e}")))?
            .map_err(AppError::from)
    }

    /// How many password hash verifications this process has run (for tests that prove an
    /// unknown email costs the same as a wrong password).
    pub fn password_verifications(&self) -> u64 {
        self.password_verifications.load(Ordering::Relaxed)
    }

    /// Sign up. The email must be new (case-insensitively) and usable as the account name
    /// authenticator apps show; the password must meet the rules (length, after NFKC; none of
    /// the email's or the service's name; not breached). Returns the user id.
    pub async fn create_user(&self, email: &str, password: &str, ctx: &ClientContext) -> Result<String, AppError> {
        let email_norm = normalise_email(email)?;
        // The email becomes the account name at enrolment: refuse here what enrolment would.
        tessera_core::validate::display_name("email", email, tessera_core::validate::MAX_ACCOUNT_NAME_CHARS)?;
        let p = Password::new_checked(password, self.config.min_password_chars)?;
        password::check_context_words(&p, email, &self.config.issuer)?;
        self.pwned.check(&p).await?;
        let hash = self.hash_password_blocking(p).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.clock.now();
        if !self.store.create_user(&id, email.trim(), &email_norm, &hash, now).await? {
            return Err(AppError::FailedPrecondition("an account with this email already exists".into()));
        }
        self.store.append_audit(&self.event(now, &id, None, AuditKind::UserCreated, ctx)).await?;
        Ok(id)
    }

    /// Sign up and sign in: create the user (as [`App::create_user`]) and open a
    /// password-level session for them, without hashing the password a second time (a new
    /// user has no factor and no account, so the login would need nothing more). Returns the
    /// user id and the session token.
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
        ctx: &ClientContext,
    ) -> Result<(String, Zeroizing<String>), AppError> {
        let id = self.create_user(email, password, ctx).await?;
        let token = self.password_session(&id, self.clock.now(), &[], ctx).await?;
        Ok((id, token))
    }

    /// Open a password-level session (recording which accounts stay closed until enrolment).
    async fn password_session(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        enrolment_required: &[String],
        ctx: &ClientContext,
    ) -> Result<Zeroizing<String>, AppError> {
        let token = new_token()?;
        let mut ev = self.event(now, user_id, None, AuditKind::LoginSucceeded, ctx);
        ev.detail = json!({ "assurance": "password", "enrolment_required": enrolment_required }).to_string();
        self.store.create_session(&token_hash(&token), user_id, 1, now, now + SESSION_TTL, &ev).await?;
        Ok(token)
    }

    /// First step of a login: check the password (always exactly one hash verification,
    /// whether or not the email is known), then either sign in or ask for the second factor.
    pub async fn begin_login(
        &self,
        email: &str,
        password: &str,
        ctx: &ClientContext,
    ) -> Result<LoginOutcome, AppError> {
        let email_norm = normalise_email(email)?;
        let p = Password::normalise(password);
        let key = password_subject(&email_norm);
        let now = self.clock.now();
        let reserved = match self.store.gate_attempt(&key, PASSWORD, now).await? {
            GateResult::Locked(until) => return Ok(LoginOutcome::Locked { until }),
            GateResult::Reserved(n) if self.config.password_throttle.gate(n) == Gate::Refuse => {
                let ev = self.event(now, &key, None, AuditKind::Locked, ctx);
                let until = self.store.lock_if_due(&key, PASSWORD, &self.config.password_throttle, now, &ev).await?;
                return Ok(until.map_or(LoginOutcome::Failed, |until| LoginOutcome::Locked { until }));
            }
            GateResult::Reserved(n) => n,
        };
        let user = self.store.user_by_email(&email_norm).await?;
        let phc = user.as_ref().map_or_else(|| password::dummy_hash().to_owned(), |u| u.password_hash.clone());
        let checked = self.verify_password_blocking(p, phc).await?;
        let Some(user) = user.filter(|_| checked.ok) else {
            let mut ev = self.event(now, &key, None, AuditKind::PasswordRejected, ctx);
            ev.detail = json!({ "attempts_remaining": self.config.password_throttle.remaining(reserved) }).to_string();
            self.store.append_audit(&ev).await?;
            if self.config.password_throttle.locks_after(reserved) {
                let ev = self.event(now, &key, None, AuditKind::Locked, ctx);
                if let Some(until) =
                    self.store.lock_if_due(&key, PASSWORD, &self.config.password_throttle, now, &ev).await?
                {
                    return Ok(LoginOutcome::Locked { until });
                }
            }
            return Ok(LoginOutcome::Failed);
        };
        self.store.reset_attempts(&key, PASSWORD).await?;
        if checked.needs_rehash {
            let fresh = self.hash_password_blocking(Password::normalise(password)).await?;
            self.store.set_password_hash(&user.id, &fresh).await?;
        }
        let has_factor = self.store.has_active_factor(&user.id).await?;
        let accounts = self.store.account_policies_of(&user.id).await?;
        match policy::login_requirement(has_factor, &accounts, now) {
            LoginRequirement::SecondFactor => {
                let challenge = new_token()?;
                self.store.create_challenge(&token_hash(&challenge), &user.id, now, now + CHALLENGE_TTL).await?;
                self.store
                    .append_audit(&self.event(now, &user.id, None, AuditKind::SecondFactorChallenged, ctx))
                    .await?;
                Ok(LoginOutcome::SecondFactorRequired { challenge })
            }
            LoginRequirement::Complete { enrolment_required, grace } => {
                let token = self.password_session(&user.id, now, &enrolment_required, ctx).await?;
                Ok(LoginOutcome::Authenticated {
                    token,
                    user_id: user.id,
                    assurance: Assurance::Password,
                    enrolment_required,
                    grace,
                })
            }
        }
    }

    /// Second step with a TOTP code.
    pub async fn complete_login_totp(
        &self,
        challenge: &str,
        code: &str,
        ctx: &ClientContext,
    ) -> Result<LoginOutcome, AppError> {
        tessera_core::otp::Code::parse(code)?;
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
            Outcome::Accepted { .. } => {
                let token = new_token()?;
                let now = self.clock.now();
                let mut ev = self.event(now, &user_id, None, AuditKind::LoginSucceeded, ctx);
                ev.detail = json!({ "assurance": "password+second_factor" }).to_string();
                if !self
                    .store
                    .complete_challenge(&ch, &token_hash(&token), &user_id, 2, now, now + SESSION_TTL, &ev)
                    .await?
                {
                    return Ok(LoginOutcome::ChallengeInvalid);
                }
                Ok(LoginOutcome::Authenticated {
                    token,
                    user_id,
                    assurance: Assurance::PasswordAndSecondFactor,
                    enrolment_required: Vec::new(),
                    grace: Vec::new(),
                })
            }
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

    /// Who a live session belongs to and what it proved; `None` for an unknown, expired or
    /// revoked token. The second-factor claim lapses when the user has no active factor left.
    pub async fn session(&self, token: &str) -> Result<Option<(String, Assurance)>, AppError> {
        let Some(s) = self.store.session(&token_hash(token), self.clock.now()).await? else { return Ok(None) };
        let aal = if s.aal >= 2 && self.store.has_active_factor(&s.user_id).await? {
            Assurance::PasswordAndSecondFactor
        } else {
            Assurance::Password
        };
        Ok(Some((s.user_id, aal)))
    }

    /// May this session use this account's resources now? Evaluated against the account's
    /// current policy and the user's current factors. `NotFound` for an unknown session or
    /// a user who is not a member.
    pub async fn account_access(&self, token: &str, account_id: &str) -> Result<AccountAccess, AppError> {
        let now = self.clock.now();
        let s = self.store.session(&token_hash(token), now).await?.ok_or(AppError::NotFound("session"))?;
        if self.store.member_role(account_id, &s.user_id).await?.is_none() {
            return Err(AppError::NotFound("account membership"));
        }
        let account = self.store.account_policy(account_id).await?.ok_or(AppError::NotFound("account"))?;
        let has_factor = self.store.has_active_factor(&s.user_id).await?;
        // `account_access` itself ignores a second-factor claim once no factor is left.
        let aal = if s.aal >= 2 { Assurance::PasswordAndSecondFactor } else { Assurance::Password };
        Ok(policy::account_access(aal, has_factor, &account, now))
    }

    /// Sign out this session; `false` if it was not live (unknown, expired or revoked).
    pub async fn logout(&self, token: &str, ctx: &ClientContext) -> Result<bool, AppError> {
        let now = self.clock.now();
        let hash = token_hash(token);
        let Some(s) = self.store.session(&hash, now).await? else { return Ok(false) };
        let revoked = self.store.revoke_session(&hash, now).await?;
        if revoked {
            self.store.append_audit(&self.event(now, &s.user_id, None, AuditKind::SessionsRevoked, ctx)).await?;
        }
        Ok(revoked)
    }

    /// Sign out every session of the user; returns how many were live.
    pub async fn logout_everywhere(&self, user_id: &str, ctx: &ClientContext) -> Result<u64, AppError> {
        let now = self.clock.now();
        let n = self.store.revoke_sessions_of(user_id, now).await?;
        let mut ev = self.event(now, user_id, None, AuditKind::SessionsRevoked, ctx);
        ev.detail = json!({ "count": n, "scope": "everywhere" }).to_string();
        self.store.append_audit(&ev).await?;
        Ok(n)
    }

    /// Create an account (organisation) owned by `owner`.
    pub async fn create_account(&self, name: &str, owner: &str, ctx: &ClientContext) -> Result<String, AppError> {
        let name = tessera_core::validate::display_name("name", name, 128)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.clock.now();
        self.store.create_account(&id, name, owner, now).await?;
        let mut ev = self.event(now, owner, None, AuditKind::AccountCreated, ctx);
        ev.detail = json!({ "account_id": id }).to_string();
        self.store.append_audit(&ev).await?;
        Ok(id)
    }

    /// Add a member (`owner`, `admin` or `member`).
    pub async fn add_member(
        &self,
        account_id: &str,
        user_id: &str,
        role: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        if !matches!(role, "owner" | "admin" | "member") {
            return Err(CoreError::invalid("role", "must be owner, admin or member").into());
        }
        self.store.account_policy(account_id).await?.ok_or(AppError::NotFound("account"))?;
        self.store.add_member(account_id, user_id, role).await?;
        let mut ev = self.event(self.clock.now(), user_id, None, AuditKind::MemberAdded, ctx);
        ev.detail = json!({ "account_id": account_id, "role": role }).to_string();
        self.store.append_audit(&ev).await?;
        Ok(())
    }

    /// Require MFA of an account's members (or stop), with an optional grace deadline.
    pub async fn set_account_policy(
        &self,
        account_id: &str,
        require_mfa: bool,
        grace_until: Option<OffsetDateTime>,
        actor: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        if !self.store.set_account_policy(account_id, require_mfa, grace_until).await? {
            return Err(AppError::NotFound("account"));
        }
        let mut ev = self.event(self.clock.now(), actor, None, AuditKind::AccountPolicyChanged, ctx);
        ev.detail = json!({ "account_id": account_id, "require_mfa": require_mfa,
                            "grace_until": grace_until.map(|t| t.unix_timestamp()) })
        .to_string();
        self.store.append_audit(&ev).await?;
        Ok(())
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
        };
        let report = self.store.support_reset(&user.id, now, &notice, &ev).await?;
        tracing::warn!(user_id = %user.id, actor, ticket, factors = report.factors, "support reset of MFA");
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn emails() {
        assert_eq!(super::normalise_email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in ["", "ada", "@x", "ada@", "a b@c.d", "a@b@c"] {
            assert!(super::normalise_email(bad).is_err(), "{bad}");
        }
        assert_ne!(super::password_subject("a@b.c"), super::password_subject("a@b.d"));
    }
}
