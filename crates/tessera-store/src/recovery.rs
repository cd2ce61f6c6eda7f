//! Recovery codes: stored as keyed MACs, redeemed once, atomically.

use crate::audit::{self, NewAuditEvent};
use crate::exec::{Exec, args};
use crate::{Store, StoreError, attempts};
use sqlx::AnyConnection;
use tessera_core::clock::to_millis;
use time::OffsetDateTime;

/// One code of a new batch, as stored.
#[derive(Debug, Clone)]
pub struct NewRecoveryCode {
    /// Row id.
    pub id: String,
    /// Batch id (shared by the batch).
    pub batch_id: String,
    /// Keyring key whose MAC key made `code_mac`.
    pub key_id: String,
    /// HMAC-SHA-256 of subject and code.
    pub code_mac: Vec<u8>,
}

/// Replace every code of the subject by `codes` (regenerating voids the old batch).
pub(crate) async fn replace(
    conn: &mut dyn Exec,
    subject_id: &str,
    codes: &[NewRecoveryCode],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM recovery_codes WHERE subject_id = $1", args![subject_id]).await?;
    if codes.is_empty() {
        return Ok(());
    }
    // One statement for the batch (one round trip): `$1` subject, `$2` time, then four
    // parameters per code.
    let rows: Vec<String> = (0..codes.len())
        .map(|i| {
            let p = 3 + 4 * i;
            format!("(${}, $1, ${}, ${}, ${}, $2)", p, p + 1, p + 2, p + 3)
        })
        .collect();
    let sql = format!(
        "INSERT INTO recovery_codes (id, subject_id, batch_id, key_id, code_mac, created_at) VALUES {}",
        rows.join(", ")
    );
    let mut values = args![subject_id, to_millis(now)];
    for c in codes {
        values.extend(args![&c.id, &c.batch_id, &c.key_id, &c.code_mac]);
    }
    conn.execute(&sql, values).await?;
    Ok(())
}

impl Store {
    /// Replace the subject's recovery codes with a new batch, in one transaction.
    pub async fn replace_recovery_codes(
        &self,
        subject_id: &str,
        codes: &[NewRecoveryCode],
        now: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        replace(&mut tx, subject_id, codes, now).await?;
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Redeem the unused code whose MAC under `key_id` is `mac` (one candidate per keyring
    /// key). One atomic statement per candidate marks it used: of concurrent redeems of one
    /// code exactly one wins. On success the counters reset and `audit` is appended in the
    /// same transaction; returns the codes left, or None if no candidate matched.
    pub async fn redeem_recovery_code(
        &self,
        subject_id: &str,
        candidates: &[(String, Vec<u8>)],
        now: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<Option<u32>, StoreError> {
        let mut tx = self.begin().await?;
        let mut won = false;
        for (key_id, mac) in candidates {
            let n = sqlx::query(
                "UPDATE recovery_codes SET used_at = $4 \
                 WHERE subject_id = $1 AND key_id = $2 AND code_mac = $3 AND used_at IS NULL",
            )
            .bind(subject_id)
            .bind(key_id)
            .bind(mac)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                won = true;
                break;
            }
        }
        if !won {
            return Ok(None);
        }
        attempts::reset(&mut tx, subject_id, crate::SECOND_FACTOR).await?;
        audit::insert(&mut tx, audit).await?;
        let left = remaining(&mut tx, subject_id).await?;
        tx.commit().await?;
        Ok(Some(left))
    }

    /// Unused codes the subject has left.
    pub async fn recovery_codes_remaining(&self, subject_id: &str) -> Result<u32, StoreError> {
        let mut c = self.pool.acquire().await?;
        remaining(&mut c, subject_id).await
    }
}

async fn remaining(conn: &mut AnyConnection, subject_id: &str) -> Result<u32, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM recovery_codes WHERE subject_id = $1 AND used_at IS NULL")
        .bind(subject_id)
        .fetch_one(conn)
        .await?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}
