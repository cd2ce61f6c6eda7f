//! The outbox: notices written in the transaction that causes them, delivered later
//! (`tessera_app::outbox`) and marked sent or failed.

use crate::{Store, StoreError};
use tessera_core::clock::to_millis;
use time::OffsetDateTime;

/// A notification to queue.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// Row id.
    pub id: String,
    /// To whom.
    pub user_id: String,
    /// Their address.
    pub email: String,
    /// What about (e.g. `mfa_reset`).
    pub kind: String,
    /// JSON object.
    pub detail: String,
}

/// Queue a notification (in the caller's transaction).
pub(crate) async fn insert_notification(
    conn: &mut sqlx::AnyConnection,
    n: &NewNotification,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO outbox (id, user_id, email, kind, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&n.id)
        .bind(&n.user_id)
        .bind(&n.email)
        .bind(&n.kind)
        .bind(&n.detail)
        .bind(to_millis(now))
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// Queue a notification on its own.
    pub async fn queue_notification(&self, n: &NewNotification, now: OffsetDateTime) -> Result<(), StoreError> {
        let mut c = self.write().await?;
        insert_notification(&mut c, n, now).await
    }
    /// Queued notifications not yet sent, oldest first: (id, email, kind, detail).
    pub async fn unsent_notifications(&self, limit: u32) -> Result<Vec<(String, String, String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, email, kind, detail FROM outbox WHERE sent_at IS NULL ORDER BY created_at, id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
    /// Mark a queued notification as delivered.
    pub async fn mark_notification_sent(&self, id: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        // A delivered invitation's code is no longer kept in the clear.
        sqlx::query(
            "UPDATE outbox SET sent_at = $2, attempts = attempts + 1, \
             detail = CASE WHEN kind = 'invitation' THEN '{}' ELSE detail END WHERE id = $1",
        )
        .bind(id)
        .bind(to_millis(now))
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }
    /// Count a failed delivery attempt (the notification stays queued).
    pub async fn mark_notification_failed(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }
}
