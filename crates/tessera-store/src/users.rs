//! Users: their rows, password hashes, the row lock a sign-in and a first factor take, and the
//! support reset.

use crate::audit::{self, NewAuditEvent};
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
    conn: &mut sqlx::AnyConnection,
    backend: crate::Backend,
    user_id: &str,
) -> Result<(), StoreError> {
    if backend == crate::Backend::Postgres {
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE").bind(user_id).execute(conn).await?;
    }
    Ok(())
}

impl Store {
    /// Insert a user unless the normalised email is taken (then `false`).
    pub async fn create_user(
        &self,
        id: &str,
        email: &str,
        email_norm: &str,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO users (id, email, email_norm, password_hash, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (email_norm) DO NOTHING",
        )
        .bind(id)
        .bind(email)
        .bind(email_norm)
        .bind(hash)
        .bind(to_millis(now))
        .execute(&mut *self.write().await?)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
    /// The user with this normalised email.
    pub async fn user_by_email(&self, email_norm: &str) -> Result<Option<UserRow>, StoreError> {
        self.user_where("SELECT id, email, password_hash FROM users WHERE email_norm = $1", email_norm).await
    }
    async fn user_where(&self, sql: &'static str, key: &str) -> Result<Option<UserRow>, StoreError> {
        let r: Option<(String, String, String)> = sqlx::query_as(sql).bind(key).fetch_optional(&self.pool).await?;
        Ok(r.map(|(id, email, password_hash)| UserRow { id, email, password_hash }))
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
        self.user_where("SELECT id, email, password_hash FROM users WHERE id = $1", user_id).await
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
        // The counters row first (the lock order of `attempts::gate_accept_pg`).
        attempts::reset(&mut tx, user_id, attempts::SECOND_FACTOR).await?;
        // Factor rows first; their secrets go with them (the foreign key cascades): the order
        // `FactorChange` locks them in, so the two never deadlock.
        let factors = sqlx::query("DELETE FROM factors WHERE subject_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
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
        insert_notification(&mut tx, notice, now).await?;
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(ResetReport { factors, recovery_codes, sessions })
    }
}
