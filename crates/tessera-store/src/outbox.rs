//! The outbox: notices written in the transaction that causes them, delivered later
//! (`tessera_app::outbox`) and marked sent or failed.

use crate::{SealedSecret, Store, StoreError};
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
    /// A token the message carries (a link's), sealed; blanked once delivered.
    pub secret: Option<SealedSecret>,
}

/// A queued message to deliver.
#[derive(Debug, Clone)]
pub struct QueuedMail {
    /// Row id (bound into the sealed token's associated data).
    pub id: String,
    /// To whom.
    pub user_id: String,
    /// Their address.
    pub email: String,
    /// What about.
    pub kind: String,
    /// JSON object.
    pub detail: String,
    /// The sealed token, if it carries one.
    pub secret: Option<SealedSecret>,
    /// Failed delivery attempts so far.
    pub attempts: u32,
}

#[derive(sqlx::FromRow)]
struct QueuedRow {
    id: String,
    user_id: String,
    email: String,
    kind: String,
    detail: String,
    secret_key_id: Option<String>,
    secret_nonce: Option<Vec<u8>>,
    secret_ciphertext: Option<Vec<u8>>,
    attempts: i64,
}

/// Queue a notification (in the caller's transaction).
pub(crate) async fn insert_notification(
    conn: &mut sqlx::AnyConnection,
    n: &NewNotification,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let sealed = n.secret.as_ref();
    sqlx::query(
        "INSERT INTO outbox (id, user_id, email, kind, detail, created_at, secret_key_id, secret_nonce, \
         secret_ciphertext) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&n.id)
    .bind(&n.user_id)
    .bind(&n.email)
    .bind(&n.kind)
    .bind(&n.detail)
    .bind(to_millis(now))
    .bind(sealed.map(|s| s.key_id.clone()))
    .bind(sealed.map(|s| s.nonce.clone()))
    .bind(sealed.map(|s| s.ciphertext.clone()))
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
    /// Queued notifications neither sent nor given up, oldest first.
    pub async fn unsent_notifications(&self, limit: u32) -> Result<Vec<QueuedMail>, StoreError> {
        self.queued(limit, None).await
    }

    /// Queued notifications due for a delivery attempt at `now` (never tried, or their retry
    /// time has come), oldest first.
    pub async fn due_notifications(&self, limit: u32, now: OffsetDateTime) -> Result<Vec<QueuedMail>, StoreError> {
        self.queued(limit, Some(now)).await
    }

    async fn queued(&self, limit: u32, due_at: Option<OffsetDateTime>) -> Result<Vec<QueuedMail>, StoreError> {
        let rows: Vec<QueuedRow> = sqlx::query_as(
            "SELECT id, user_id, email, kind, detail, secret_key_id, secret_nonce, secret_ciphertext, attempts \
             FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL \
             AND ($2 IS NULL OR next_attempt_at IS NULL OR next_attempt_at <= $2) \
             ORDER BY created_at, id LIMIT $1",
        )
        .bind(i64::from(limit))
        .bind(due_at.map(to_millis))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let secret = match (r.secret_key_id, r.secret_nonce, r.secret_ciphertext) {
                    (Some(key_id), Some(nonce), Some(ciphertext)) => Some(SealedSecret { key_id, nonce, ciphertext }),
                    _ => None,
                };
                QueuedMail {
                    id: r.id,
                    user_id: r.user_id,
                    email: r.email,
                    kind: r.kind,
                    detail: r.detail,
                    secret,
                    attempts: u32::try_from(r.attempts.max(0)).unwrap_or(u32::MAX),
                }
            })
            .collect())
    }
    /// Mark a queued notification as delivered.
    pub async fn mark_notification_sent(&self, id: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        // A delivered message's token or code is no longer kept (an invitation queued before
        // codes were sealed had its code in the detail).
        sqlx::query(
            "UPDATE outbox SET sent_at = $2, attempts = attempts + 1, \
             detail = CASE WHEN kind = 'invitation' THEN '{}' ELSE detail END, \
             secret_key_id = NULL, secret_nonce = NULL, secret_ciphertext = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(to_millis(now))
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }
    /// Count a failed delivery attempt: retried from `retry_at`, or (`None`) given up — then
    /// its token is blanked, as on delivery.
    pub async fn mark_notification_failed(
        &self,
        id: &str,
        now: OffsetDateTime,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        let (sql, at) = match retry_at {
            Some(at) => ("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2 WHERE id = $1", at),
            None => (
                "UPDATE outbox SET attempts = attempts + 1, failed_at = $2, detail = CASE WHEN kind = 'invitation' \
                 THEN '{}' ELSE detail END, secret_key_id = NULL, secret_nonce = NULL, secret_ciphertext = NULL \
                 WHERE id = $1",
                now,
            ),
        };
        sqlx::query(sql).bind(id).bind(to_millis(at)).execute(&mut *self.write().await?).await?;
        Ok(())
    }
}
