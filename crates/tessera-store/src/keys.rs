//! What key rotation needs from storage: which keys rows use, and re-sealing in batches.

use crate::attempts;
use crate::sql::{SECOND_FACTOR, SealedSecret};
use crate::{Store, StoreError};

/// How many rows depend on a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    /// Key id.
    pub key_id: String,
    /// Sealed TOTP secrets under it (re-encryptable).
    pub totp_secrets: u64,
    /// Recovery codes MACed under it (not re-encryptable: they go when regenerated or used).
    pub recovery_codes: u64,
    /// Queued messages whose link token is sealed under it (they go once delivered).
    pub queued_mail: u64,
}

/// A sealed secret with the row identity its associated data binds.
#[derive(Debug, Clone)]
pub struct SealedRow {
    /// Factor id.
    pub factor_id: String,
    /// Owner.
    pub subject_id: String,
    /// The sealed secret.
    pub sealed: SealedSecret,
}

#[derive(sqlx::FromRow)]
struct Row {
    factor_id: String,
    subject_id: String,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl Store {
    /// Rows per key id, over TOTP secrets, unused recovery codes and undelivered messages
    /// carrying a sealed token.
    pub async fn key_usage(&self) -> Result<Vec<KeyUsage>, StoreError> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT key_id, SUM(t), SUM(r), SUM(m) FROM ( \
               SELECT key_id, 1 AS t, 0 AS r, 0 AS m FROM totp_secrets \
               UNION ALL SELECT key_id, 0 AS t, 1 AS r, 0 AS m FROM recovery_codes WHERE used_at IS NULL \
               UNION ALL SELECT secret_key_id, 0 AS t, 0 AS r, 1 AS m FROM outbox \
                 WHERE sent_at IS NULL AND secret_key_id IS NOT NULL \
             ) u GROUP BY key_id ORDER BY key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key_id, t, r, m)| KeyUsage {
                key_id,
                totp_secrets: u64::try_from(t).unwrap_or(0),
                recovery_codes: u64::try_from(r).unwrap_or(0),
                queued_mail: u64::try_from(m).unwrap_or(0),
            })
            .collect())
    }

    /// Up to `limit` sealed TOTP secrets not under key `current`.
    pub async fn sealed_not_under(&self, current: &str, limit: u32) -> Result<Vec<SealedRow>, StoreError> {
        let rows = sqlx::query_as::<_, Row>(
            "SELECT s.factor_id, f.subject_id, s.key_id, s.nonce, s.ciphertext \
             FROM totp_secrets s JOIN factors f ON f.id = s.factor_id \
             WHERE s.key_id <> $1 ORDER BY s.factor_id LIMIT $2",
        )
        .bind(current)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| SealedRow {
                factor_id: r.factor_id,
                subject_id: r.subject_id,
                sealed: SealedSecret { key_id: r.key_id, nonce: r.nonce, ciphertext: r.ciphertext },
            })
            .collect())
    }

    /// Replace a batch of sealed secrets, each only if its row still holds the old nonce
    /// (so a row changed meanwhile is left for the next pass). One transaction per batch;
    /// returns how many rows were rewritten.
    pub async fn replace_sealed(&self, batch: &[(SealedRow, SealedSecret)]) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        // The subjects' counters rows first, in one order: the lock order of every change to a
        // subject's devices (see `verify`), whose version a new seal bumps (migration
        // postgres 0011).
        let mut subjects: Vec<&str> = batch.iter().map(|(old, _)| old.subject_id.as_str()).collect();
        subjects.sort_unstable();
        subjects.dedup();
        for s in subjects {
            attempts::lock_row(&mut tx, s, SECOND_FACTOR).await?;
        }
        let mut n = 0;
        for (old, new) in batch {
            n += sqlx::query(
                "UPDATE totp_secrets SET key_id = $3, nonce = $4, ciphertext = $5 WHERE factor_id = $1 AND nonce = $2",
            )
            .bind(&old.factor_id)
            .bind(&old.sealed.nonce)
            .bind(&new.key_id)
            .bind(&new.nonce)
            .bind(&new.ciphertext)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }
}
