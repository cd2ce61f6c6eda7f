//! The whole access decision for a request, in one use case: may the holder of this session
//! enter (this account) at this level, now? gRPC `Authorize` (for middlewares, the `tower`
//! layer of `tessera-client` among them) and the pages' `/auth/check` (for reverse proxies:
//! nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`) are this one function.
//!
//! Every answer is computed from the database as it is now, on every call, on every replica:
//! no cache. A session revoked, timed out or rotated, a factor removed, `require_mfa` turned
//! on, a membership or role changed: the next call sees it.
//!
//! Who may do what:
//! - the caller presents a credential it was given: a session token (gRPC, or the pages'
//!   `__Host-` cookie), or a forward token (the domain-wide cookie, accepted by `/auth/check`
//!   only). What is required (level, account) is the caller's configuration, never the end
//!   user's input;
//! - a refusal names its reason, and once the session is known, whose it is: the holder of the
//!   token learns nothing they could not see on the pages.

use crate::identity::{token_hash, well_formed_token};
use crate::{App, AppError, Session};
use tessera_core::policy::{AccountAccess, Assurance};
use time::{Duration, OffsetDateTime};

/// What a request must have proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// A live session (the password, at least).
    Password,
    /// A live session that has proven a second factor (or that a trusted browser opened, within
    /// the caps of the user's accounts: see [`Session::trusted_since`]).
    SecondFactor,
}

impl Required {
    /// `password` or `second_factor` (the words of `/auth/check?require=`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "password" => Some(Self::Password),
            "second_factor" => Some(Self::SecondFactor),
            _ => None,
        }
    }
}

/// The credential a request carries.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// A session token (gRPC; the pages' own `__Host-` cookie).
    Session(&'a str),
    /// A forward token (the domain-wide cookie of `--cookie-domain`), good for `/auth/check`
    /// only.
    Forward(&'a str),
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// In.
    Allow,
    /// No credential, or one no session ever had (a rotated token, a made-up one).
    LoginRequired,
    /// The session existed but is over: signed out, revoked, past its end or idle.
    SessionRevoked,
    /// The user's address is not confirmed.
    EmailUnverified,
    /// The user is not a member of the account.
    NotAMember,
    /// The user has a factor this session has not proven.
    SecondFactorRequired,
    /// A second factor is required and the user has none (an account's grace period is over).
    EnrolmentRequired,
}

impl Decision {
    /// The reason's word (`/auth/check`'s `X-Tessera-Reason`, logs, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::LoginRequired => "login_required",
            Self::SessionRevoked => "session_revoked",
            Self::EmailUnverified => "email_unverified",
            Self::NotAMember => "not_a_member",
            Self::SecondFactorRequired => "second_factor_required",
            Self::EnrolmentRequired => "enrolment_required",
        }
    }
}

/// Whose session it is, when one is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user.
    pub user_id: String,
    /// Their address.
    pub email: String,
    /// What the session has proven (see [`Assurance`]; a trusted browser's session reports the
    /// second-factor level, and then `second_factor_verified_at` is `None`).
    pub level: Assurance,
    /// The session's stable id.
    pub session_id: String,
    /// When the session was opened (the sign-in).
    pub session_created_at: OffsetDateTime,
    /// How long ago that was.
    pub session_age: Duration,
    /// When a second factor was last proven in it.
    pub second_factor_verified_at: Option<OffsetDateTime>,
}

/// An access decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// In, or why not.
    pub decision: Decision,
    /// The session's user, whenever the session is live (refusals included).
    pub principal: Option<Principal>,
    /// Allowed only until then: the account's grace period for members without a factor.
    pub grace_until: Option<OffsetDateTime>,
}

impl Authorization {
    fn refused(decision: Decision, principal: Option<Principal>) -> Self {
        Self { decision, principal, grace_until: None }
    }
}

impl App {
    /// Decide whether the holder of `credential` may enter, at level `require`, and (with
    /// `account_id`) as a member of that account under its current MFA policy and grace
    /// period. `Invalid` only for a malformed account id; every other "no" is a [`Decision`].
    pub async fn authorize(
        &self,
        credential: Credential<'_>,
        account_id: Option<&str>,
        require: Required,
    ) -> Result<Authorization, AppError> {
        let account_id = match account_id.filter(|a| !a.is_empty()) {
            Some(a) => Some(tessera_core::validate::subject_id(a).map_err(|_| {
                AppError::Invalid(tessera_core::CoreError::invalid("account_id", "is not an account id"))
            })?),
            None => None,
        };
        let (token, forward) = match credential {
            Credential::Session(t) => (t, false),
            Credential::Forward(t) => (t, true),
        };
        if !well_formed_token(token) {
            return Ok(Authorization::refused(Decision::LoginRequired, None));
        }
        let session = if forward { self.forward_session(token).await? } else { self.session(token).await? };
        let Some(s) = session else {
            let known = self.store.session_known(&token_hash(token), forward).await?;
            let d = if known { Decision::SessionRevoked } else { Decision::LoginRequired };
            return Ok(Authorization::refused(d, None));
        };
        let user = self.store.user_by_id(s.user_id()).await?.ok_or(AppError::NotFound("user"))?;
        let now = self.clock.now();
        // A trusted browser's session proved no factor: it stands for one only within the
        // strictest cap of the user's accounts that require MFA, as they are now (a cap set or
        // lowered since the sign-in applies at once, with or without `account`).
        let mut level = s.assurance();
        if let (Some(since), None) = (s.trusted_since(), s.second_factor_verified_at()) {
            let policies = self.store.account_policies_of(s.user_id()).await?;
            if !tessera_core::policy::trust_allowed(since, tessera_core::policy::trust_cap_days(&policies), now) {
                level = Assurance::Password;
            }
        }
        let principal = Principal {
            user_id: user.id.clone(),
            email: user.email.clone(),
            level,
            session_id: s.id().to_owned(),
            session_created_at: s.created_at(),
            session_age: (now - s.created_at()).max(Duration::ZERO),
            second_factor_verified_at: s.second_factor_verified_at(),
        };
        if !user.email_verified {
            return Ok(Authorization::refused(Decision::EmailUnverified, Some(principal)));
        }
        let mut grace_until = None;
        if let Some(account_id) = account_id {
            let access = match self.account_for(&s, account_id).await {
                Ok((_, access)) => access,
                Err(AppError::NotFound(_)) => {
                    return Ok(Authorization::refused(Decision::NotAMember, Some(principal)));
                }
                Err(e) => return Err(e),
            };
            match access {
                AccountAccess::Open => {}
                AccountAccess::OpenUntil(until) => grace_until = Some(until),
                AccountAccess::SecondFactorRequired => {
                    return Ok(Authorization::refused(Decision::SecondFactorRequired, Some(principal)));
                }
                AccountAccess::EnrolmentRequired => {
                    return Ok(Authorization::refused(Decision::EnrolmentRequired, Some(principal)));
                }
            }
        }
        if require == Required::SecondFactor && level != Assurance::PasswordAndSecondFactor {
            // (The level lapses when the user has no factor left: then only enrolling helps.)
            let d = if self.store.has_active_factor(s.user_id()).await? {
                Decision::SecondFactorRequired
            } else {
                Decision::EnrolmentRequired
            };
            return Ok(Authorization::refused(d, Some(principal)));
        }
        Ok(Authorization { decision: Decision::Allow, principal: Some(principal), grace_until })
    }

    /// The live session of a forward token (the domain-wide cookie), as [`App::session`] does
    /// for a session token.
    async fn forward_session(&self, token: &str) -> Result<Option<Session>, AppError> {
        let now = self.clock.now();
        let p = &self.config.sessions;
        let Some(row) = self.store.forward_session(&token_hash(token), now, p.idle_cutoff(now)).await? else {
            return Ok(None);
        };
        Ok(Some(self.live_session(row, now).await?))
    }

    /// A forward token for the live session of `session_token`: the value of the domain-wide
    /// cookie that reverse proxies pass to `/auth/check` (only its hash is kept; an earlier one
    /// of the session stops working). `None` if the session is not live.
    pub async fn forward_token(&self, session_token: &str) -> Result<Option<zeroize::Zeroizing<String>>, AppError> {
        let Some(s) = self.session(session_token).await? else { return Ok(None) };
        let token = crate::identity::new_token()?;
        let ok = self.store.set_forward_hash(s.id(), &token_hash(&token), self.clock.now()).await?;
        Ok(ok.then_some(token))
    }
}
