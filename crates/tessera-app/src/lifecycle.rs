//! The account around the factor: a forgotten password (more of the lifecycle — password
//! change, email verification, email change — comes here).
//!
//! Two rules hold for every mailed link: it proves a mailbox, never a factor; and it signs no
//! one in. A reset link sets a new password and nothing else: factors and recovery codes stay,
//! every session ends, and the user signs in as usual (password, then a factor if they have
//! one). Its token lives in the database only as a SHA-256, and in the queued message sealed
//! under the keyring until delivery.

use crate::identity::{new_token, normalise_email, password_subject, token_hash};
use crate::{App, AppError, ClientContext};
use serde_json::json;
use tessera_core::factor::AuditKind;
use tessera_core::password::{self, Password};
use tessera_core::seal::Aad;
use tessera_store::{NewMailToken, NewNotification, PASSWORD_RESET, PasswordReset};
use time::Duration;
use zeroize::Zeroizing;

/// How long a reset link works.
pub const RESET_TTL: Duration = Duration::minutes(30);
/// Reset links mailed to one user per hour at most; beyond, the same answer and no mail.
pub const RESETS_PER_HOUR: u32 = 3;

/// Purpose bound into a mailed token's associated data (with the outbox row's id).
pub(crate) const MAIL_TOKEN_PURPOSE: &str = "mail-token";
/// Format version of a sealed mailed token (its characters).
pub(crate) const MAIL_TOKEN_FORMAT: u8 = 1;

/// The associated data of the token a queued message carries.
pub(crate) fn mail_aad<'a>(outbox_id: &'a str, user_id: &'a str) -> Aad<'a> {
    Aad { purpose: MAIL_TOKEN_PURPOSE, version: MAIL_TOKEN_FORMAT, factor_id: outbox_id, subject_id: user_id }
}

/// What a reset link's page may show before it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetLink {
    /// Live: the form may be shown.
    Live,
    /// Unknown, used, voided or expired (one answer for all).
    Invalid,
}

impl App {
    /// Mail a password-reset link to `email` if it is a user's. The answer is the same for
    /// every well-formed address, known or not, and whether or not a mail went out (at most
    /// [`RESETS_PER_HOUR`] per user). A newer link voids the older.
    pub async fn request_password_reset(&self, email: &str, ctx: &ClientContext) -> Result<(), AppError> {
        let email_norm = normalise_email(email)?;
        let now = self.clock.now();
        let Some(user) = self.store.user_by_email(&email_norm).await? else { return Ok(()) };
        let token = new_token()?;
        let id = uuid::Uuid::new_v4().to_string();
        let sealed = self.keys.get().seal(&mail_aad(&id, &user.id), token.as_bytes())?;
        let notice = NewNotification {
            id,
            user_id: user.id.clone(),
            email: user.email.clone(),
            kind: "password_reset".into(),
            detail: json!({ "at": now.unix_timestamp(), "ip": ctx.ip(), "user_agent": ctx.user_agent(),
                            "minutes": RESET_TTL.whole_minutes() })
            .to_string(),
            secret: Some(crate::factors::to_sealed(sealed)),
        };
        let t = NewMailToken {
            token_hash: &token_hash(&token),
            user_id: &user.id,
            purpose: PASSWORD_RESET,
            email: &user.email,
            expires_at: now + RESET_TTL,
        };
        if self.store.issue_mail_token(&t, &notice, now - Duration::hours(1), RESETS_PER_HOUR, now).await? {
            self.mail_queued();
            self.store.append_audit(&self.event(now, &user.id, None, AuditKind::PasswordResetRequested, ctx)).await?;
        } else {
            tracing::info!(user_id = %user.id, "password reset not mailed: {RESETS_PER_HOUR} links in the last hour");
        }
        Ok(())
    }

    /// As [`App::request_password_reset`], answered at once: the address is checked for shape
    /// here, and the rest (the lookup, and for a user the token, the sealed mail and the audit
    /// row) runs on its own task, so a known address takes no longer to answer than an unknown
    /// one. What transports call.
    pub fn request_password_reset_in_background(&self, email: &str, ctx: &ClientContext) -> Result<(), AppError> {
        normalise_email(email)?;
        let (app, email, ctx) = (self.clone(), email.to_owned(), ctx.clone());
        tokio::spawn(async move {
            if let Err(e) = app.request_password_reset(&email, &ctx).await {
                tracing::warn!(error = %e, "password reset request failed");
            }
        });
        Ok(())
    }

    /// Whether a reset link's token is live (for its page; using it is
    /// [`App::complete_password_reset`]).
    pub async fn password_reset_link(&self, token: &str) -> Result<ResetLink, AppError> {
        Ok(match self.store.mail_token_user(&token_hash(token), PASSWORD_RESET, self.clock.now()).await? {
            Some(_) => ResetLink::Live,
            None => ResetLink::Invalid,
        })
    }

    /// Set a new password with a reset link's token. The password meets the rules of sign-up
    /// (length, context words, the breached-password check). On success: the link is used,
    /// the user's other links and open login challenges are void, every session ends, the
    /// password failures of the email are cleared (which lifts a suspension), an audit event
    /// and a notice are written; factors and recovery codes are untouched, and nobody is
    /// signed in. `FailedPrecondition` for a token that is unknown, used, voided or expired.
    pub async fn complete_password_reset(
        &self,
        token: &str,
        new_password: &str,
        ctx: &ClientContext,
    ) -> Result<(), AppError> {
        let invalid =
            || AppError::FailedPrecondition("this link has expired or was already used; request a new one".into());
        let hash = token_hash(token);
        let user_id = self.store.mail_token_user(&hash, PASSWORD_RESET, self.clock.now()).await?.ok_or_else(invalid)?;
        let user = self.store.user_by_id(&user_id).await?.ok_or_else(invalid)?;
        let p = Password::new_checked(new_password, self.config.min_password_chars)?;
        password::check_context_words(&p, &user.email, &self.config.issuer)?;
        self.pwned.check(&p).await?;
        let phc = Zeroizing::new(self.hash_password(p).await?);
        let now = self.clock.now();
        let audit = self.event(now, &user.id, None, AuditKind::PasswordReset, ctx);
        let notice = NewNotification {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            email: user.email.clone(),
            kind: "password_reset_done".into(),
            detail: json!({ "at": now.unix_timestamp(), "ip": ctx.ip(), "user_agent": ctx.user_agent() }).to_string(),
            secret: None,
        };
        let r = PasswordReset {
            token_hash: &hash,
            user_id: &user.id,
            password_hash: &phc,
            password_attempts: &password_subject(&normalise_email(&user.email)?),
            audit: &audit,
            notice: &notice,
            now,
        };
        if !self.store.reset_password(&r).await? {
            return Err(invalid());
        }
        self.mail_queued();
        tracing::info!(user_id = %user.id, "password set with a reset link; sessions revoked");
        Ok(())
    }
}
