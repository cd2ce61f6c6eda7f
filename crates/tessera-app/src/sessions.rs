//! Sessions as the use cases see them: resolving a token (with the idle timeout and the
//! once-a-minute last-seen write), the "sudo mode" check that every sensitive action makes,
//! re-authentication (which always issues a new token), and the user's list of sessions.
//!
//! Who may do what:
//! - any live session: read its own user's pages, sign itself out, cancel a pending device;
//! - a session whose second factor was proven within the re-authentication window (or, for a
//!   user without a factor, whose password was): add or remove a factor, new recovery codes,
//!   sign out other sessions, and every change to an account's policy, members and roles;
//! - nothing raises a session's level except proving a factor the user already had
//!   ([`App::reauthenticate`], the second step of a login) or confirming the user's *first*
//!   factor in it (which also ends every other session of the user).

use crate::identity::{new_token, token_hash};
use crate::{App, AppError, ClientContext, LoginOutcome, Outcome};
use serde_json::json;
use tessera_core::factor::AuditKind;
use tessera_core::policy::Assurance;
use tessera_core::session::Recency;
use tessera_store::{Rotation, SessionRow};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// A live session, resolved from its token by [`App::session`] (the only way to get one, so a
/// transport cannot claim a session it was not shown the token of).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    row: SessionRow,
    assurance: Assurance,
}

impl Session {
    /// The session's stable id (not a secret: it survives token rotation).
    pub fn id(&self) -> &str {
        &self.row.id
    }
    /// Whose.
    pub fn user_id(&self) -> &str {
        &self.row.user_id
    }
    /// What it has proven. The second-factor level lapses when the user has no active factor
    /// left.
    pub fn assurance(&self) -> Assurance {
        self.assurance
    }
    /// When the password was last proven in it.
    pub fn password_verified_at(&self) -> Option<OffsetDateTime> {
        self.row.password_verified_at
    }
    /// When a second factor was last proven in it.
    pub fn second_factor_verified_at(&self) -> Option<OffsetDateTime> {
        self.row.mfa_verified_at
    }
    /// When it was opened.
    pub fn created_at(&self) -> OffsetDateTime {
        self.row.created_at
    }
    /// When it was last used (to within a minute).
    pub fn last_seen_at(&self) -> OffsetDateTime {
        self.row.last_seen_at
    }
    /// Its absolute end.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.row.expires_at
    }
    /// Where it was opened.
    pub fn ip(&self) -> Option<&str> {
        self.row.ip.as_deref()
    }
    /// Opened by a trusted browser (the password alone, no factor proven): when that trust was
    /// made.
    pub fn trusted_since(&self) -> Option<OffsetDateTime> {
        self.row.trusted_since
    }
    /// The browser it was opened in.
    pub fn user_agent(&self) -> Option<&str> {
        self.row.user_agent.as_deref()
    }
}

/// What re-authentication takes.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// A current code from an active authenticator app.
    Totp(&'a str),
    /// An unused recovery code (used up).
    RecoveryCode(&'a str),
    /// The password: only for a user without an active factor.
    Password(&'a str),
    /// A security key or passkey: the answer to the ceremony [`App::begin_reauth_key`] began.
    Key {
        /// The ceremony id.
        ceremony: &'a str,
        /// The browser's answer (PublicKeyCredential JSON).
        response: &'a str,
    },
}

impl App {
    fn assurance_of(&self, row: &SessionRow, has_factor: bool) -> Assurance {
        if row.aal >= 2 && has_factor { Assurance::PasswordAndSecondFactor } else { Assurance::Password }
    }

    /// The live session of `token` (not revoked, not expired, not idle for longer than the idle
    /// timeout), or `None`. Records the use, at most once a minute.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, AppError> {
        let now = self.clock.now();
        let p = &self.config.sessions;
        let Some(row) = self.store.session(&token_hash(token), now, p.idle_cutoff(now)).await? else {
            return Ok(None);
        };
        Ok(Some(self.live_session(row, now).await?))
    }

    /// A live session's row as a [`Session`]: records the use (at most once a minute) and works
    /// out its level against the user's factors now.
    pub(crate) async fn live_session(&self, row: SessionRow, now: OffsetDateTime) -> Result<Session, AppError> {
        let p = &self.config.sessions;
        if p.needs_touch(row.last_seen_at, now) {
            self.store.touch_session(&row.id, now, now - p.touch_every).await?;
        }
        let has_factor = self.store.has_active_factor(&row.user_id).await?;
        let assurance = self.assurance_of(&row, has_factor);
        Ok(Session { row, assurance })
    }

    /// When `s` ends if it is not used again (the idle timeout, or its absolute end if sooner).
    pub fn session_ends_at(&self, s: &Session) -> OffsetDateTime {
        self.config.sessions.ends_at(s.last_seen_at(), s.expires_at())
    }

    /// Whether `s` may do a sensitive action now ("sudo mode"): `Ok`, or
    /// [`AppError::ReauthRequired`] saying what to prove again.
    pub async fn require_recent(&self, s: &Session) -> Result<(), AppError> {
        let has_factor = self.store.has_active_factor(s.user_id()).await?;
        match self.config.sessions.recent_auth(
            has_factor,
            s.assurance,
            s.password_verified_at(),
            s.second_factor_verified_at(),
            self.clock.now(),
        ) {
            Recency::Recent => Ok(()),
            other => Err(AppError::ReauthRequired(other)),
        }
    }

    /// What re-authenticating `s` takes now: a factor, or (for a user without one) the password.
    pub async fn reauth_needs(&self, s: &Session) -> Result<Recency, AppError> {
        Ok(if self.store.has_active_factor(s.user_id()).await? {
            Recency::NeedSecondFactor
        } else {
            Recency::NeedPassword
        })
    }

    /// Prove a factor (or, for a user without one, the password) again in session `s`. On
    /// success the session gets a new token (the old one stops working) recording the proof,
    /// and the outcome is `Authenticated` with that token; otherwise `Rejected`, `Locked`
    /// (the same counters as a sign-in), `Failed` (a wrong password) or `Suspended` (100
    /// consecutive password failures for this email: no password is checked here until a
    /// sign-in succeeds or support lifts it).
    pub async fn reauthenticate(
        &self,
        s: &Session,
        proof: Proof<'_>,
        ctx: &ClientContext,
    ) -> Result<LoginOutcome, AppError> {
        let user = s.user_id().to_owned();
        let has_factor = self.store.has_active_factor(&user).await?;
        let outcome = match (proof, has_factor) {
            (Proof::Password(_), true) => {
                return Err(AppError::Invalid(tessera_core::CoreError::invalid(
                    "password",
                    "confirm with your authenticator app or a recovery code: this account has two-factor authentication",
                )));
            }
            (Proof::Totp(_) | Proof::RecoveryCode(_) | Proof::Key { .. }, false) => {
                return Err(AppError::Invalid(tessera_core::CoreError::invalid(
                    "code",
                    "this account has no two-factor authentication: confirm with the password",
                )));
            }
            (Proof::Totp(code), true) => {
                tessera_core::otp::Code::parse(code)?;
                if let Some(o) = self.totp_disabled_outcome(&user).await? {
                    return Ok(o);
                }
                self.verify_totp(&user, code, ctx).await?
            }
            (Proof::RecoveryCode(code), true) => self.redeem_recovery_code(&user, code, ctx).await?.0,
            (Proof::Key { ceremony, response }, true) => match self.check_reauth_key(s, ceremony, response, ctx).await?
            {
                crate::KeyOutcome::Accepted { factor_id } => Outcome::Accepted { factor_id: Some(factor_id) },
                crate::KeyOutcome::Refused(r) => return Ok(LoginOutcome::KeyRefused(r)),
            },
            (Proof::Password(password), false) => {
                let email = self.store.user_by_id(&user).await?.ok_or(AppError::NotFound("user"))?.email;
                match self.check_password(&email, password, ctx, crate::identity::Suspension::Refuse, false).await? {
                    crate::identity::PasswordCheck::Ok(_) => Outcome::Accepted { factor_id: None },
                    crate::identity::PasswordCheck::Locked(until) => Outcome::Locked { until },
                    crate::identity::PasswordCheck::Failed => return Ok(LoginOutcome::Failed),
                    crate::identity::PasswordCheck::Suspended => return Ok(LoginOutcome::Suspended),
                }
            }
        };
        match outcome {
            Outcome::Accepted { .. } => {
                let now = self.clock.now();
                let token = new_token()?;
                let second = has_factor;
                let hash = token_hash(&token);
                let r = Rotation {
                    session_id: s.id(),
                    user_id: &user,
                    new_token_hash: &hash,
                    aal: if second { 2 } else { s.row.aal },
                    password_verified_at: (!second).then_some(now),
                    mfa_verified_at: second.then_some(now),
                };
                let mut ev = self.event(now, &user, None, AuditKind::Reauthenticated, ctx);
                ev.detail = json!({ "with": if second { "second_factor" } else { "password" } }).to_string();
                let p = &self.config.sessions;
                if !self.store.rotate_session(&r, now, p.idle_cutoff(now), &ev).await? {
                    return Ok(LoginOutcome::ChallengeInvalid);
                }
                Ok(LoginOutcome::Authenticated {
                    token,
                    user_id: user,
                    assurance: if second { Assurance::PasswordAndSecondFactor } else { s.assurance },
                    enrolment_required: Vec::new(),
                    grace: Vec::new(),
                    browser_token: None,
                })
            }
            Outcome::Rejected { attempts_remaining } => Ok(LoginOutcome::Rejected { attempts_remaining }),
            Outcome::Locked { until } => Ok(LoginOutcome::Locked { until }),
        }
    }

    /// The live sessions of `s`'s user, most recently used first, with `s` marked current.
    pub async fn sessions_of(&self, s: &Session) -> Result<Vec<(Session, bool)>, AppError> {
        let now = self.clock.now();
        let has_factor = self.store.has_active_factor(s.user_id()).await?;
        let rows = self.store.sessions_of(s.user_id(), now, self.config.sessions.idle_cutoff(now)).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let current = row.id == s.row.id;
                let assurance = self.assurance_of(&row, has_factor);
                (Session { row, assurance }, current)
            })
            .collect())
    }

    /// Sign out one session of `s`'s user by its id. Signing out `s` itself is always allowed;
    /// any other needs a recent second factor (a stale session must not sign the owner out).
    /// `NotFound` if the user has no such live session.
    pub async fn revoke_session(&self, s: &Session, session_id: &str, ctx: &ClientContext) -> Result<(), AppError> {
        if session_id != s.id() {
            self.require_recent(s).await?;
        }
        let now = self.clock.now();
        let mut ev = self.event(now, s.user_id(), None, AuditKind::SessionsRevoked, ctx);
        ev.detail = json!({ "count": 1, "scope": if session_id == s.id() { "this" } else { "one" } }).to_string();
        if self.store.revoke_session_id(s.user_id(), session_id, now, &ev).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("session"))
        }
    }

    /// Sign out every other session of `s`'s user (needs a recent second factor); returns how
    /// many were live.
    pub async fn logout_others(&self, s: &Session, ctx: &ClientContext) -> Result<u64, AppError> {
        self.require_recent(s).await?;
        let now = self.clock.now();
        let mut ev = self.event(now, s.user_id(), None, AuditKind::SessionsRevoked, ctx);
        ev.detail = json!({ "scope": "others" }).to_string();
        Ok(self.store.revoke_other_sessions(s.user_id(), s.id(), now, &ev).await?)
    }

    /// A new session token (for a caller that opens or raises sessions).
    pub(crate) fn fresh_token(&self) -> Result<(Zeroizing<String>, Vec<u8>), AppError> {
        let t = new_token()?;
        let h = token_hash(&t);
        Ok((t, h))
    }
}
