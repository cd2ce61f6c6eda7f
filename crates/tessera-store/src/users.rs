//! Users: their rows, password hashes, the row lock a sign-in and a first factor take, and the
//! support reset.

use crate::audit::{self, NewAuditEvent};
use crate::mail_tokens::NewMailToken;
use crate::outbox::{NewNotification, insert_notification};
use crate::{Store, StoreError, attempts};
use tessera_core::clock::to_millis;
use time::OffsetDateTime;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// User id (also the subject id of their factors).
    pub id: String,
    /// Email as given.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Whether the address is proven (by a mailed link, a password reset, or the service that
    /// created the user): only then may the user sign in.
    pub email_verified: bool,
    /// When the user signed up.
    pub created_at: OffsetDateTime,
}

/// A user to insert (see [`Store::create_user`]).
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    /// User id.
    pub id: &'a str,
    /// Email as given.
    pub email: &'a str,
    /// Normalised email (unique).
    pub email_norm: &'a str,
    /// argon2id PHC string.
    pub password_hash: &'a str,
    /// Verified from the start (a service vouched for the address), or waiting for its link.
    pub verified: bool,
    /// An unverified user of the same address who signed up before this, and whose last
    /// verification link has expired, is replaced (the address is free again).
    pub pending_until: OffsetDateTime,
    /// A public sign-up (not a service's or an operator's user): only such a row, left
    /// unconfirmed, may be replaced.
    pub self_registered: bool,
}

/// Delete the unverified user of `email_norm` who signed up before `before`, has no live
/// verification link and no factor (in the caller's transaction): an address someone signed up
/// with and never confirmed is free again once its links have expired. Their tokens go with
/// them (the foreign key cascades).
pub(crate) async fn delete_stale_unverified(
    conn: &mut sqlx::AnyConnection,
    email_norm: &str,
    before: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM users WHERE email_norm = $1 AND email_verified_at IS NULL AND self_registered = 1 \
         AND created_at < $2 \
         AND NOT EXISTS (SELECT 1 FROM mail_tokens t WHERE t.user_id = users.id AND t.used_at IS NULL \
                         AND t.expires_at > $3) \
         AND NOT EXISTS (SELECT 1 FROM factors f WHERE f.subject_id = users.id) \
         AND NOT EXISTS (SELECT 1 FROM recovery_codes r WHERE r.subject_id = users.id)",
    )
    .bind(email_norm)
    .bind(to_millis(before))
    .bind(to_millis(now))
    .execute(conn)
    .await?
    .rows_affected())
}

/// What a support reset removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResetReport {
    /// Factors removed (with their secrets).
    pub factors: u64,
    /// Recovery codes removed.
    pub recovery_codes: u64,
    /// Sessions revoked.
    pub sessions: u64,
}

/// Lock a user's row for the rest of the transaction (PostgreSQL; SQLite's `BEGIN IMMEDIATE`
/// already serialises writers): a password-level sign-in and a first factor's confirmation take
/// it, so neither can slip a session past the other.
pub(crate) async fn lock_user(
    conn: &mut dyn crate::exec::Exec,
    backend: crate::Backend,
    user_id: &str,
) -> Result<(), StoreError> {
    if backend == crate::Backend::Postgres {
        conn.execute("SELECT id FROM users WHERE id = $1 FOR UPDATE", crate::exec::args![user_id]).await?;
    }
    Ok(())
}

/// Lock the user's row (see [`lock_user`]) and say whether their password hash is still
/// `password_hash`, the one a sign-in checked: a reset or change since then ended every session,
/// and a sign-in in flight must not outlive it.
pub(crate) async fn lock_if_password_is(
    conn: &mut sqlx::AnyConnection,
    backend: crate::Backend,
    user_id: &str,
    password_hash: &str,
) -> Result<bool, StoreError> {
    lock_user(&mut *conn, backend, user_id).await?;
    let same: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = $1 AND password_hash = $2")
        .bind(user_id)
        .bind(password_hash)
        .fetch_one(conn)
        .await?;
    Ok(same == 1)
}

impl Store {
    /// Insert a user unless the normalised email is taken (then `false` and nothing is
    /// written). With `link`, the verification token and the message that carries it are
    /// written in the same transaction, so no user is left waiting for a link never queued.
    pub async fn create_user(
        &self,
        u: &NewUser<'_>,
        link: Option<(&NewMailToken<'_>, &NewNotification)>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if delete_stale_unverified(&mut tx, u.email_norm, u.pending_until, now).await? > 0 {
            tracing::info!("an unconfirmed sign-up of this address expired; its row is replaced");
        }
        let n = sqlx::query(
            "INSERT INTO users (id, email, email_norm, password_hash, created_at, email_verified_at, self_registered) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (email_norm) DO NOTHING",
        )
        .bind(u.id)
        .bind(u.email)
        .bind(u.email_norm)
        .bind(u.password_hash)
        .bind(to_millis(now))
        .bind(u.verified.then(|| to_millis(now)))
        .bind(i32::from(u.self_registered))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        if let Some((t, mail)) = link {
            crate::mail_tokens::insert(&mut tx, t, now).await?;
            insert_notification(&mut tx, mail, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
    /// The user with this normalised email.
    pub async fn user_by_email(&self, email_norm: &str) -> Result<Option<UserRow>, StoreError> {
        self.user_where(
            "SELECT id, email, password_hash, email_verified_at, created_at FROM users WHERE email_norm = $1",
            email_norm,
        )
        .await
    }
    async fn user_where(&self, sql: &'static str, key: &str) -> Result<Option<UserRow>, StoreError> {
        let r: Option<(String, String, String, Option<i64>, i64)> =
            sqlx::query_as(sql).bind(key).fetch_optional(&self.pool).await?;
        Ok(r.map(|(id, email, password_hash, verified, created)| UserRow {
            id,
            email,
            password_hash,
            email_verified: verified.is_some(),
            created_at: tessera_core::clock::from_millis(created),
        }))
    }
    /// Replace a user's password hash (a rehash with current parameters).
    pub async fn rehash_password(&self, user_id: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        // Only over the hash that was checked: a reset or change since must not be undone.
        let n = sqlx::query("UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2")
            .bind(user_id)
            .bind(old)
            .bind(new)
            .execute(&mut *self.write().await?)
            .await?
            .rows_affected();
        Ok(n == 1)
    }
    /// The user with this id.
    pub async fn user_by_id(&self, user_id: &str) -> Result<Option<UserRow>, StoreError> {
        self.user_where(
            "SELECT id, email, password_hash, email_verified_at, created_at FROM users WHERE id = $1",
            user_id,
        )
        .await
    }
    /// Support reset, in one transaction: remove every factor (and secret) and recovery code
    /// of the user, revoke their sessions, void their login challenges, clear their
    /// second-factor counters, queue `notice` and append `audit`.
    pub async fn support_reset(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        notice: &NewNotification,
        audit: &NewAuditEvent,
    ) -> Result<ResetReport, StoreError> {
        let mut tx = self.begin().await?;
        // The counters row first (the lock order of `verify`).
        attempts::lock_row(&mut tx, user_id, crate::SECOND_FACTOR).await?;
        attempts::reset(&mut tx, user_id, crate::SECOND_FACTOR).await?;
        // Factor rows first; their secrets go with them (the foreign key cascades): the order
        // `FactorChange` locks them in, so the two never deadlock.
        let factors = sqlx::query("DELETE FROM factors WHERE subject_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        crate::trust::void(&mut tx, user_id).await?;
        let recovery_codes = sqlx::query("DELETE FROM recovery_codes WHERE subject_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let sessions = sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user_id)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE login_challenges SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL")
            .bind(user_id)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
        crate::mail_tokens::void_all(&mut tx, user_id, now).await?;
        insert_notification(&mut tx, notice, now).await?;
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(ResetReport { factors, recovery_codes, sessions })
    }
}
