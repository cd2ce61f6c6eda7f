//! Tokens mailed to prove a mailbox (a password reset now; email verification and email change
//! later). Only a token's SHA-256 is stored. A token is single use, expires, and is voided by
//! a newer one of its purpose, a sign-in or a password change. Finding a token is an indexed
//! equality on the SHA-256 of 256 random bits: timing reveals nothing a guesser can use.

use crate::audit::{self, NewAuditEvent};
use crate::outbox::{NewNotification, insert_notification};
use crate::{Store, StoreError, sessions};
use tessera_core::clock::to_millis;
use time::OffsetDateTime;

/// The purpose of a password-reset link.
pub const PASSWORD_RESET: &str = "password_reset";

/// A token to issue.
#[derive(Debug, Clone, Copy)]
pub struct NewMailToken<'a> {
    /// SHA-256 of the token.
    pub token_hash: &'a [u8],
    /// Whose.
    pub user_id: &'a str,
    /// What it is for (e.g. [`PASSWORD_RESET`]).
    pub purpose: &'a str,
    /// The address it was mailed to (what it proves).
    pub email: &'a str,
    /// It is refused from this instant.
    pub expires_at: OffsetDateTime,
}

/// A password reset to apply (see [`Store::reset_password`]).
#[derive(Debug, Clone, Copy)]
pub struct PasswordReset<'a> {
    /// SHA-256 of the link's token.
    pub token_hash: &'a [u8],
    /// The user the token was found for (it is used only if it is still theirs and live).
    pub user_id: &'a str,
    /// The new password's PHC string.
    pub password_hash: &'a str,
    /// The key of the email's password-failure total; per-address keys are this, `@`, a bucket.
    pub password_attempts: &'a str,
    /// Audit event and notice, written with the change.
    pub audit: &'a NewAuditEvent,
    /// See `audit`.
    pub notice: &'a NewNotification,
    /// Now.
    pub now: OffsetDateTime,
}

impl Store {
    /// Issue a token with the message that carries it, in one transaction — unless
    /// `max_recent` tokens of this purpose were issued to the user since `since` (then nothing
    /// is written: `false`). The user's unused tokens of the purpose are voided first (a newer
    /// link voids the older).
    pub async fn issue_mail_token(
        &self,
        t: &NewMailToken<'_>,
        mail: &NewNotification,
        since: OffsetDateTime,
        max_recent: u32,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        crate::users::lock_user(&mut tx, self.backend, t.user_id).await?;
        let recent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM mail_tokens WHERE user_id = $1 AND purpose = $2 AND created_at > $3",
        )
        .bind(t.user_id)
        .bind(t.purpose)
        .bind(to_millis(since))
        .fetch_one(&mut *tx)
        .await?;
        if recent >= i64::from(max_recent) {
            return Ok(false);
        }
        void(&mut tx, t.user_id, t.purpose, now).await?;
        sqlx::query(
            "INSERT INTO mail_tokens (token_hash, user_id, purpose, email, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(t.token_hash)
        .bind(t.user_id)
        .bind(t.purpose)
        .bind(t.email)
        .bind(to_millis(now))
        .bind(to_millis(t.expires_at))
        .execute(&mut *tx)
        .await?;
        insert_notification(&mut tx, mail, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The user a live token of `purpose` (unused, unexpired) belongs to, without using it.
    pub async fn mail_token_user(
        &self,
        token_hash: &[u8],
        purpose: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM mail_tokens \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(purpose)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Set a new password with a reset link, in one transaction: use the token (only if it is
    /// still the user's, unused and unexpired — else `false` and nothing changes), set the
    /// password, void the user's other reset links and open login challenges, revoke every
    /// session, clear the email's password failures (the total and every address's, which
    /// lifts a suspension), and write the audit event and the notice. Factors and recovery
    /// codes are not touched: the new password is only the first factor.
    pub async fn reset_password(&self, r: &PasswordReset<'_>) -> Result<bool, StoreError> {
        let now = to_millis(r.now);
        let mut tx = self.begin().await?;
        // Counters before the user row: the order every transaction that takes both keeps.
        // (Rolled back with the rest if the token is not live.)
        sqlx::query("DELETE FROM attempts WHERE kind = $1 AND (subject_id = $2 OR subject_id LIKE $3)")
            .bind(crate::PASSWORD)
            .bind(r.password_attempts)
            .bind(format!("{}@%", r.password_attempts))
            .execute(&mut *tx)
            .await?;
        crate::users::lock_user(&mut tx, self.backend, r.user_id).await?;
        let used = sqlx::query(
            "UPDATE mail_tokens SET used_at = $3 \
             WHERE token_hash = $1 AND user_id = $2 AND purpose = $4 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(r.token_hash)
        .bind(r.user_id)
        .bind(now)
        .bind(PASSWORD_RESET)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if used != 1 {
            return Ok(false);
        }
        sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(r.user_id)
            .bind(r.password_hash)
            .execute(&mut *tx)
            .await?;
        void(&mut tx, r.user_id, PASSWORD_RESET, r.now).await?;
        sqlx::query("UPDATE login_challenges SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL")
            .bind(r.user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sessions::revoke_others(&mut tx, r.user_id, None, r.now).await?;
        audit::insert(&mut tx, r.audit).await?;
        insert_notification(&mut tx, r.notice, r.now).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Void the user's unused tokens of `purpose` (in the caller's transaction).
pub(crate) async fn void(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    purpose: &str,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    Ok(sqlx::query("UPDATE mail_tokens SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL")
        .bind(user_id)
        .bind(purpose)
        .bind(to_millis(now))
        .execute(conn)
        .await?
        .rows_affected())
}
