//! "Trust this browser": browsers that may sign a user in with the password alone, for a while.
//! Only the SHA-256 of a browser's token is kept. Every trust of a user is void (`void`) in the
//! transactions that add or remove a factor, change or reset the password, or reset MFA.

use crate::audit::{self, NewAuditEvent};
use crate::outbox::{NewNotification, insert_notification};
use crate::sessions::{NewSession, insert_session};
use crate::{Store, StoreError};
use tessera_core::clock::{from_millis, to_millis};
use time::OffsetDateTime;

/// A browser to trust.
#[derive(Debug, Clone)]
pub struct NewTrust {
    /// Id (UUID).
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// SHA-256 of the browser's token.
    pub token_hash: Vec<u8>,
    /// "Firefox on Linux"-like label (from its User-Agent: a hint, not a fact).
    pub label: String,
    /// Now.
    pub created_at: OffsetDateTime,
    /// When the trust ends.
    pub expires_at: OffsetDateTime,
}

/// A trusted browser as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRow {
    /// Id.
    pub id: String,
    /// Label.
    pub label: String,
    /// When trusted.
    pub created_at: OffsetDateTime,
    /// When it last signed the user in.
    pub last_used_at: Option<OffsetDateTime>,
    /// When the trust ends.
    pub expires_at: OffsetDateTime,
}

type Raw = (String, String, i64, Option<i64>, i64);

fn row((id, label, created_at, last_used_at, expires_at): Raw) -> TrustRow {
    TrustRow {
        id,
        label,
        created_at: from_millis(created_at),
        last_used_at: last_used_at.map(from_millis),
        expires_at: from_millis(expires_at),
    }
}

/// End every trust of `user_id` (in the caller's transaction); how many.
pub(crate) async fn void(conn: &mut dyn crate::exec::Exec, user_id: &str) -> Result<u64, StoreError> {
    conn.execute("DELETE FROM trusted_browsers WHERE user_id = $1", crate::exec::args![user_id]).await
}

impl Store {
    /// Trust a browser, with its audit event and notice, in one transaction (expired trusts of
    /// the user are deleted first).
    pub async fn trust_browser(
        &self,
        t: &NewTrust,
        audit: &NewAuditEvent,
        notice: &NewNotification,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM trusted_browsers WHERE user_id = $1 AND expires_at <= $2")
            .bind(&t.user_id)
            .bind(to_millis(t.created_at))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO trusted_browsers (id, user_id, token_hash, label, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.id)
        .bind(&t.user_id)
        .bind(&t.token_hash)
        .bind(&t.label)
        .bind(to_millis(t.created_at))
        .bind(to_millis(t.expires_at))
        .execute(&mut *tx)
        .await?;
        audit::insert(&mut tx, audit).await?;
        insert_notification(&mut tx, notice, t.created_at).await?;
        tx.commit().await
    }

    /// When this browser's live trust by `user_id` was made, if it has one.
    pub async fn trusted_since(
        &self,
        user_id: &str,
        token_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let t: Option<i64> = sqlx::query_scalar(
            "SELECT created_at FROM trusted_browsers WHERE user_id = $1 AND token_hash = $2 AND expires_at > $3",
        )
        .bind(user_id)
        .bind(token_hash)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(t.map(from_millis))
    }

    /// Open a session for a trusted browser, in one transaction: only while the password is
    /// still the one checked and the trust still stands (a factor change, a password change or
    /// a support reset in between voided it); records the trust's use. `false`: nothing written.
    pub async fn open_trusted_session(
        &self,
        session: &NewSession,
        password_hash: &str,
        token_hash: &[u8],
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if !crate::users::lock_if_password_is(&mut tx, self.backend(), &session.user_id, password_hash).await? {
            return Ok(false);
        }
        let used = sqlx::query(
            "UPDATE trusted_browsers SET last_used_at = $3 WHERE user_id = $1 AND token_hash = $2 AND expires_at > $3",
        )
        .bind(&session.user_id)
        .bind(token_hash)
        .bind(to_millis(session.created_at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if used != 1 {
            return Ok(false);
        }
        insert_session(&mut tx, session).await?;
        audit::insert(&mut tx, audit).await?;
        crate::mail_tokens::void(&mut tx, &session.user_id, crate::PASSWORD_RESET, session.created_at).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The user's trusted browsers (trust not ended), most recently trusted first.
    pub async fn trusted_browsers(&self, user_id: &str, now: OffsetDateTime) -> Result<Vec<TrustRow>, StoreError> {
        let rows: Vec<Raw> = sqlx::query_as(
            "SELECT id, label, created_at, last_used_at, expires_at FROM trusted_browsers \
             WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at DESC, id",
        )
        .bind(user_id)
        .bind(to_millis(now))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(row).collect())
    }

    /// End the trust `id` of the user (or, `None`, every one), appending `audit` when one ended;
    /// how many ended.
    pub async fn revoke_trust(
        &self,
        user_id: &str,
        id: Option<&str>,
        audit: &NewAuditEvent,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM trusted_browsers WHERE user_id = $1 AND id = COALESCE($2, id)")
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            audit::insert(&mut tx, audit).await?;
            tx.commit().await?;
        }
        Ok(n)
    }
}
