//! Tokens mailed to prove a mailbox: a password reset, an email verification, an email change.
//! Only a token's SHA-256 is stored. A token is single use, expires, and is voided by a newer
//! one of its purpose; reset links also by a sign-in, a password change and an email change.
//! A token proves the address it was mailed to (its `email`): it is used only while that is
//! still the user's address (or, for an email change, still free). Finding a token is an indexed
//! equality on the SHA-256 of 256 random bits: timing reveals nothing a guesser can use.

use crate::audit::{self, NewAuditEvent};
use crate::outbox::{NewNotification, insert_notification};
use crate::{Store, StoreError, sessions};
use tessera_core::clock::to_millis;
use time::OffsetDateTime;

/// The purpose of a password-reset link.
pub const PASSWORD_RESET: &str = "password_reset";
/// The purpose of an email-verification link (proves the user's address).
pub const EMAIL_VERIFICATION: &str = "email_verification";
/// The purpose of an email-change link (proves the new address, stored as the token's email).
pub const EMAIL_CHANGE: &str = "email_change";

/// What an email change with a link did (see [`Store::change_email`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailChange {
    /// The address is changed.
    Changed,
    /// The token is unknown, used, voided, expired or not the user's: nothing changed.
    Invalid,
    /// Another user has taken the new address since the link was mailed: nothing changed.
    Taken,
}

/// A password change in a session (see [`Store::change_password`]).
#[derive(Debug, Clone, Copy)]
pub struct PasswordChange<'a> {
    /// Whose.
    pub user_id: &'a str,
    /// The PHC string that was checked: the change applies only over it.
    pub old_hash: &'a str,
    /// The new password's PHC string.
    pub new_hash: &'a str,
    /// The session that changed it (kept); every other session ends.
    pub keep_session: &'a str,
    /// The SHA-256 of the known-browser token of the browser that changed it (kept); every
    /// other browser is forgotten.
    pub keep_browser: Option<&'a [u8]>,
    /// Audit event and notice, written with the change.
    pub audit: &'a NewAuditEvent,
    /// See `audit`.
    pub notice: &'a NewNotification,
    /// Now.
    pub now: OffsetDateTime,
}

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
        insert(&mut tx, t, now).await?;
        insert_notification(&mut tx, mail, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whose a live token of `purpose` (unused, unexpired) is, and the address it was mailed
    /// to, without using it.
    pub async fn mail_token(
        &self,
        token_hash: &[u8],
        purpose: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT user_id, email FROM mail_tokens \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(purpose)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The user a live token of `purpose` (unused, unexpired) belongs to, without using it.
    pub async fn mail_token_user(
        &self,
        token_hash: &[u8],
        purpose: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.mail_token(token_hash, purpose, now).await?.map(|(user, _)| user))
    }

    /// Set a new password with a reset link, in one transaction: use the token (only if it is
    /// still the user's, unused and unexpired — else `false` and nothing changes), set the
    /// password, void the user's other reset links and open login challenges, revoke every
    /// session, clear the email's password failures (the total and every address's, which
    /// lifts a suspension), and write the audit event and the notice. Factors and recovery
    /// codes stay (the new password is only the first factor), but passkeys become security
    /// keys: nothing that signs in without the password outlives its reset.
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
        if !use_token(&mut tx, r.token_hash, r.user_id, PASSWORD_RESET, r.now).await? {
            return Ok(false);
        }
        // The link proved the mailbox of the user's address: it is verified now.
        sqlx::query(
            "UPDATE users SET password_hash = $2, email_verified_at = COALESCE(email_verified_at, $3) WHERE id = $1",
        )
        .bind(r.user_id)
        .bind(r.password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Every other link too: an email change asked for by whoever had the old password must
        // not outlive the reset. Nor do known browsers (which may pass a suspension): those that
        // knew the old password are not vouched for by the new one.
        void_all(&mut tx, r.user_id, r.now).await?;
        crate::sessions::forget_browsers(&mut tx, r.user_id, None).await?;
        // A passkey signs in without the password: one added by whoever had the old password
        // must not outlive the reset as a way in. Passkeys become security keys (asked for after
        // the new password); their owner adds them again as passkeys.
        crate::trust::void(&mut tx, r.user_id).await?;
        sqlx::query("UPDATE factors SET kind = 'security_key' WHERE subject_id = $1 AND kind = 'passkey'")
            .bind(r.user_id)
            .execute(&mut *tx)
            .await?;
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
    /// Verify the user's address with a link, in one transaction: use the token (only if it
    /// is still the user's, unused, unexpired, and mailed to the user's current address —
    /// else `false` and nothing changes), mark the address verified, and append `audit`.
    pub async fn verify_email(
        &self,
        token_hash: &[u8],
        user_id: &str,
        audit: &NewAuditEvent,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        crate::users::lock_user(&mut tx, self.backend, user_id).await?;
        if !use_token(&mut tx, token_hash, user_id, EMAIL_VERIFICATION, now).await? {
            return Ok(false);
        }
        sqlx::query("UPDATE users SET email_verified_at = COALESCE(email_verified_at, $2) WHERE id = $1")
            .bind(user_id)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Change a user's password in a session, in one transaction — only over the hash that was
    /// checked (`old_hash`; else `None` and nothing changes: it was changed meanwhile): set the
    /// new hash, void the user's mailed links and open login challenges, end every other session,
    /// and write the audit event and the notice. Returns how many sessions ended.
    pub async fn change_password(&self, c: &PasswordChange<'_>) -> Result<Option<u64>, StoreError> {
        let mut tx = self.begin().await?;
        // Only from a session still live at the write (one revoked since the page checked it
        // changes nothing).
        let n = sqlx::query(
            "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2 AND EXISTS \
             (SELECT 1 FROM sessions WHERE id = $4 AND user_id = $1 AND revoked_at IS NULL AND expires_at > $5)",
        )
        .bind(c.user_id)
        .bind(c.old_hash)
        .bind(c.new_hash)
        .bind(c.keep_session)
        .bind(to_millis(c.now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(None);
        }
        void_all(&mut tx, c.user_id, c.now).await?;
        sqlx::query("UPDATE login_challenges SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL")
            .bind(c.user_id)
            .bind(to_millis(c.now))
            .execute(&mut *tx)
            .await?;
        crate::sessions::forget_browsers(&mut tx, c.user_id, c.keep_browser).await?;
        crate::trust::void(&mut tx, c.user_id).await?;
        let ended = sessions::revoke_others(&mut tx, c.user_id, Some(c.keep_session), c.now).await?;
        audit::insert(&mut tx, c.audit).await?;
        insert_notification(&mut tx, c.notice, c.now).await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    /// Change a user's address with a link mailed to the new one, in one transaction: use the
    /// token (only if it is still the user's, unused and unexpired), set the address it was
    /// mailed to (verified: the link proved it) unless another user took it meanwhile, void
    /// the user's reset, verification and other email-change links, and write the audit event
    /// and the notice (to the old address, which `notice` names). Sessions stay. An unverified
    /// user of the new address who signed up before `pending_until` and whose links have
    /// expired does not hold it: that row is deleted.
    #[allow(clippy::too_many_arguments)]
    pub async fn change_email(
        &self,
        token_hash: &[u8],
        user_id: &str,
        new_email_norm: &str,
        pending_until: OffsetDateTime,
        audit: &NewAuditEvent,
        notice: &NewNotification,
        now: OffsetDateTime,
    ) -> Result<EmailChange, StoreError> {
        let mut tx = self.begin().await?;
        crate::users::lock_user(&mut tx, self.backend, user_id).await?;
        let row: Option<String> = sqlx::query_scalar(
            "UPDATE mail_tokens SET used_at = $3 \
             WHERE token_hash = $1 AND user_id = $2 AND purpose = $4 AND used_at IS NULL AND expires_at > $3 \
             RETURNING email",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(to_millis(now))
        .bind(EMAIL_CHANGE)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(new_email) = row else { return Ok(EmailChange::Invalid) };
        crate::users::delete_stale_unverified(&mut tx, new_email_norm, pending_until, now).await?;
        let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email_norm = $1 AND id <> $2")
            .bind(new_email_norm)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        if taken > 0 {
            return Ok(EmailChange::Taken);
        }
        let changed = sqlx::query("UPDATE users SET email = $2, email_norm = $3, email_verified_at = $4 WHERE id = $1")
            .bind(user_id)
            .bind(&new_email)
            .bind(new_email_norm)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await;
        match changed {
            Ok(_) => {}
            // A sign-up that took the address between the check and the write (the unique index).
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(EmailChange::Taken),
            Err(e) => return Err(e.into()),
        }
        void_all(&mut tx, user_id, now).await?;
        audit::insert(&mut tx, audit).await?;
        insert_notification(&mut tx, notice, now).await?;
        tx.commit().await?;
        Ok(EmailChange::Changed)
    }

    /// Queue `n` unless `max_recent` messages of its kind were queued for its user since
    /// `since` (then `false`, nothing written): the limit on notices a stranger can cause,
    /// counted and written under the user's row lock so a burst cannot pass it.
    pub async fn queue_notification_limited(
        &self,
        n: &NewNotification,
        since: OffsetDateTime,
        max_recent: u32,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        crate::users::lock_user(&mut tx, self.backend, &n.user_id).await?;
        let sent: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE user_id = $1 AND kind = $2 AND created_at > $3")
                .bind(&n.user_id)
                .bind(&n.kind)
                .bind(to_millis(since))
                .fetch_one(&mut *tx)
                .await?;
        if sent >= i64::from(max_recent) {
            return Ok(false);
        }
        insert_notification(&mut tx, n, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl Store {
    /// How many messages of `kind` were queued to an address (compared case-insensitively)
    /// since `since`, whichever user they were for.
    pub async fn mails_to_address(
        &self,
        email_norm: &str,
        kind: &str,
        since: OffsetDateTime,
    ) -> Result<u32, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE kind = $2 AND created_at > $3 AND LOWER(email) = $1")
                .bind(email_norm)
                .bind(kind)
                .bind(to_millis(since))
                .fetch_one(&self.pool)
                .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// Insert a token (in the caller's transaction).
pub(crate) async fn insert(
    conn: &mut sqlx::AnyConnection,
    t: &NewMailToken<'_>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
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
    .execute(conn)
    .await?;
    Ok(())
}

/// Use a live token of `purpose` that is the user's and was mailed to the user's current
/// address (in the caller's transaction): `false` if there is none.
async fn use_token(
    conn: &mut sqlx::AnyConnection,
    token_hash: &[u8],
    user_id: &str,
    purpose: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE mail_tokens SET used_at = $3 \
         WHERE token_hash = $1 AND user_id = $2 AND purpose = $4 AND used_at IS NULL AND expires_at > $3 \
         AND email = (SELECT email FROM users WHERE id = $2)",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(to_millis(now))
    .bind(purpose)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Void every unused token of the user, whatever its purpose (in the caller's transaction).
pub(crate) async fn void_all(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    Ok(sqlx::query("UPDATE mail_tokens SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL")
        .bind(user_id)
        .bind(to_millis(now))
        .execute(conn)
        .await?
        .rows_affected())
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
