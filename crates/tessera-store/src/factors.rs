//! Factors and their sealed TOTP secrets; the replay guard.

use crate::audit::{self, NewAuditEvent};
use crate::recovery::{self, NewRecoveryCode};
use crate::{Store, StoreError, attempts, sessions};
use sqlx::AnyConnection;
use tessera_core::clock::{from_millis, to_millis};
use tessera_core::factor::{Factor, FactorKind, FactorStatus};
use tessera_core::otp::{Algorithm, TotpParams};
use time::OffsetDateTime;

/// A sealed secret as stored (see `tessera_core::seal::Sealed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Keyring key id.
    pub key_id: String,
    /// AEAD nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext with tag.
    pub ciphertext: Vec<u8>,
}

/// A TOTP factor to insert, pending.
#[derive(Debug, Clone)]
pub struct NewTotpFactor {
    /// Factor id (UUID), also bound into the sealed secret's associated data.
    pub id: String,
    /// Owner.
    pub subject_id: String,
    /// Label.
    pub label: String,
    /// Algorithm, digits, period.
    pub params: TotpParams,
    /// The sealed secret.
    pub sealed: SealedSecret,
    /// When.
    pub created_at: OffsetDateTime,
    /// The session that started it (pages); `None` for a service's enrolment over gRPC.
    pub session_id: Option<String>,
}

/// A TOTP factor with its sealed secret and replay guard.
#[derive(Debug, Clone)]
pub struct TotpDevice {
    /// The factor.
    pub factor: Factor,
    /// Algorithm, digits, period.
    pub params: TotpParams,
    /// The sealed secret.
    pub sealed: SealedSecret,
    /// The last time step accepted (codes of this step or older are refused).
    pub last_used_step: Option<u64>,
}

/// A confirmation to apply: a pending device whose first code matched.
#[derive(Debug, Clone)]
pub struct Confirmation<'a> {
    /// Owner.
    pub subject_id: &'a str,
    /// The pending device.
    pub factor_id: &'a str,
    /// The session confirming it: it must be the one that started the device (`None`: a
    /// service over gRPC, which may confirm only what it enrolled).
    pub session_id: Option<&'a str>,
    /// Devices started at or before this instant have expired.
    pub pending_cutoff: OffsetDateTime,
    /// The matched time step (it counts as used).
    pub step: u64,
    /// Now.
    pub now: OffsetDateTime,
    /// Recovery codes to store if this is the subject's first active factor.
    pub first_codes: &'a [NewRecoveryCode],
    /// Audit events: the confirmation; the first recovery codes.
    pub audit_confirm: &'a NewAuditEvent,
    /// See `audit_confirm`.
    pub audit_codes: &'a NewAuditEvent,
    /// If this is the first factor: raise this session to the second-factor level under a new
    /// token (its stable id and the new token's hash). Every other session of the subject is
    /// revoked in any case when it is the first: they were opened with the password alone.
    pub raise: Option<(&'a str, &'a [u8])>,
    /// Sessions idle since before this instant are not raised.
    pub idle_cutoff: OffsetDateTime,
}

/// What confirming a pending device did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// Active now; `first` when it is the subject's first active factor (the recovery codes
    /// passed in were stored, the other sessions revoked and `raise` applied).
    Confirmed {
        /// Whether this is the subject's first active factor.
        first: bool,
        /// Other sessions of the subject revoked (first factor only).
        sessions_revoked: u64,
        /// Whether the confirming session was raised under its new token.
        raised: bool,
    },
    /// The factor is not pending (already active, gone, expired, or started by another
    /// session).
    NotPending,
    /// The step was already used.
    Replayed,
}

#[derive(sqlx::FromRow)]
pub(crate) struct FactorRow {
    id: String,
    subject_id: String,
    kind: String,
    label: String,
    status: String,
    created_at: i64,
    confirmed_at: Option<i64>,
    last_used_at: Option<i64>,
    session_id: Option<String>,
    disabled_at: Option<i64>,
}

impl TryFrom<FactorRow> for Factor {
    type Error = StoreError;
    fn try_from(r: FactorRow) -> Result<Self, StoreError> {
        Ok(Factor {
            kind: FactorKind::parse(&r.kind).ok_or_else(|| StoreError::Corrupt(format!("factor kind {:?}", r.kind)))?,
            status: FactorStatus::parse(&r.status)
                .ok_or_else(|| StoreError::Corrupt(format!("factor status {:?}", r.status)))?,
            id: r.id,
            subject_id: r.subject_id,
            label: r.label,
            created_at: from_millis(r.created_at),
            confirmed_at: r.confirmed_at.map(from_millis),
            last_used_at: r.last_used_at.map(from_millis),
            disabled_at: r.disabled_at.map(from_millis),
            started_in: r.session_id,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DeviceRow {
    #[sqlx(flatten)]
    factor: FactorRow,
    algorithm: String,
    digits: i64,
    period: i64,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    last_used_step: Option<i64>,
}

impl TryFrom<DeviceRow> for TotpDevice {
    type Error = StoreError;
    fn try_from(r: DeviceRow) -> Result<Self, StoreError> {
        let corrupt = |e: tessera_core::CoreError| StoreError::Corrupt(e.to_string());
        let alg = Algorithm::parse(&r.algorithm).map_err(corrupt)?;
        let params = TotpParams::new(alg, u32::try_from(r.digits).unwrap_or(0), u32::try_from(r.period).unwrap_or(0))
            .map_err(corrupt)?;
        Ok(TotpDevice {
            factor: r.factor.try_into()?,
            params,
            sealed: SealedSecret { key_id: r.key_id, nonce: r.nonce, ciphertext: r.ciphertext },
            last_used_step: r.last_used_step.and_then(|s| u64::try_from(s).ok()),
        })
    }
}

// A device's last use (`last_used_at` below): the accept's (`totp_secrets`, migrations sqlite
// 0005 / postgres 0004), else the confirmation's (`factors`).
const DEVICE_SELECT: &str = "SELECT f.id, f.subject_id, f.kind, f.label, f.status, f.created_at, f.confirmed_at, \
    COALESCE(s.last_used_at, f.last_used_at) AS last_used_at, f.session_id, f.disabled_at, \
    s.algorithm, s.digits, s.period, s.key_id, s.nonce, s.ciphertext, s.last_used_step \
    FROM factors f JOIN totp_secrets s ON s.factor_id = f.id";

/// The subject's active devices in use (not disabled), oldest first (`$1`: the subject); also
/// run by the SQLite writer thread (`batch`).
pub(crate) static ACTIVE_DEVICES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{DEVICE_SELECT} WHERE f.subject_id = $1 AND f.status = 'active' AND f.disabled_at IS NULL \
         ORDER BY f.created_at, f.id"
    )
});

impl DeviceRow {
    /// A row of [`DEVICE_SELECT`] read by rusqlite (the SQLite writer thread).
    pub(crate) fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            factor: FactorRow {
                id: r.get(0)?,
                subject_id: r.get(1)?,
                kind: r.get(2)?,
                label: r.get(3)?,
                status: r.get(4)?,
                created_at: r.get(5)?,
                confirmed_at: r.get(6)?,
                last_used_at: r.get(7)?,
                session_id: r.get(8)?,
                disabled_at: r.get(9)?,
            },
            algorithm: r.get(10)?,
            digits: r.get(11)?,
            period: r.get(12)?,
            key_id: r.get(13)?,
            nonce: r.get(14)?,
            ciphertext: r.get(15)?,
            last_used_step: r.get(16)?,
        })
    }
}

/// A time step as stored (`BIGINT`).
pub(crate) fn step_i64(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

/// The replay guard: record `step` as used unless it (or a later step) already was.
/// One row changed, or the code must be refused.
async fn use_step(conn: &mut AnyConnection, factor_id: &str, step: u64) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE totp_secrets SET last_used_step = $2 \
         WHERE factor_id = $1 AND (last_used_step IS NULL OR last_used_step < $2)",
    )
    .bind(factor_id)
    .bind(step_i64(step))
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Delete the subject's pending devices started at or before `cutoff`.
async fn purge_expired(conn: &mut AnyConnection, subject_id: &str, cutoff: OffsetDateTime) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM totp_secrets WHERE factor_id IN \
         (SELECT id FROM factors WHERE subject_id = $1 AND status = 'pending' AND created_at <= $2)",
    )
    .bind(subject_id)
    .bind(to_millis(cutoff))
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM factors WHERE subject_id = $1 AND status = 'pending' AND created_at <= $2")
        .bind(subject_id)
        .bind(to_millis(cutoff))
        .execute(conn)
        .await?;
    Ok(())
}

async fn active_count(conn: &mut AnyConnection, subject_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM factors WHERE subject_id = $1 AND status = 'active'")
        .bind(subject_id)
        .fetch_one(conn)
        .await?)
}

impl Store {
    /// Insert a pending TOTP factor with its sealed secret, unless the subject already has
    /// `max_factors` factors (then `false`, nothing written). The subject's pending devices
    /// started at or before `pending_cutoff` (expired) are deleted first.
    pub async fn insert_totp_factor(
        &self,
        f: &NewTotpFactor,
        max_factors: u32,
        pending_cutoff: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        purge_expired(&mut tx, &f.subject_id, pending_cutoff).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM factors WHERE subject_id = $1")
            .bind(&f.subject_id)
            .fetch_one(&mut *tx)
            .await?;
        if n >= i64::from(max_factors) {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO factors (id, subject_id, kind, label, status, created_at, session_id) \
             VALUES ($1, $2, 'totp', $3, 'pending', $4, $5)",
        )
        .bind(&f.id)
        .bind(&f.subject_id)
        .bind(&f.label)
        .bind(to_millis(f.created_at))
        .bind(&f.session_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO totp_secrets (factor_id, algorithm, digits, period, key_id, nonce, ciphertext) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&f.id)
        .bind(f.params.algorithm().as_str())
        .bind(i64::from(f.params.digits()))
        .bind(i64::from(f.params.period()))
        .bind(&f.sealed.key_id)
        .bind(&f.sealed.nonce)
        .bind(&f.sealed.ciphertext)
        .execute(&mut *tx)
        .await?;
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A subject's factors, oldest first, without pending devices started at or before
    /// `pending_cutoff` (expired).
    pub async fn list_factors(
        &self,
        subject_id: &str,
        pending_cutoff: OffsetDateTime,
    ) -> Result<Vec<Factor>, StoreError> {
        sqlx::query_as::<_, FactorRow>(
            "SELECT f.id, f.subject_id, f.kind, f.label, f.status, f.created_at, f.confirmed_at, \
             COALESCE(s.last_used_at, f.last_used_at) AS last_used_at, f.session_id, f.disabled_at \
             FROM factors f LEFT JOIN totp_secrets s ON s.factor_id = f.id WHERE f.subject_id = $1 \
             AND (f.status <> 'pending' OR f.created_at > $2) ORDER BY f.created_at, f.id",
        )
        .bind(subject_id)
        .bind(to_millis(pending_cutoff))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Factor::try_from)
        .collect()
    }

    /// One TOTP device of a subject (any status).
    pub async fn totp_device(&self, subject_id: &str, factor_id: &str) -> Result<Option<TotpDevice>, StoreError> {
        sqlx::query_as::<_, DeviceRow>(sqlx::AssertSqlSafe(format!(
            "{DEVICE_SELECT} WHERE f.subject_id = $1 AND f.id = $2"
        )))
        .bind(subject_id)
        .bind(factor_id)
        .fetch_optional(&self.pool)
        .await?
        .map(TotpDevice::try_from)
        .transpose()
    }

    /// A subject's active TOTP devices.
    pub async fn active_totp_devices(&self, subject_id: &str) -> Result<Vec<TotpDevice>, StoreError> {
        sqlx::query_as::<_, DeviceRow>(sqlx::AssertSqlSafe(ACTIVE_DEVICES.as_str()))
            .bind(subject_id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(TotpDevice::try_from)
            .collect()
    }

    /// Activate a pending device whose first code matched (see [`Confirmation`]): in one
    /// transaction, mark it active — only if it is still pending, unexpired and started by the
    /// confirming session — record the step as used, reset the counters, and, if it is the
    /// subject's first active factor, replace their recovery codes with the first batch, revoke
    /// every other session of the subject and raise the confirming one under its new token.
    pub async fn confirm_totp(&self, c: &Confirmation<'_>) -> Result<ConfirmOutcome, StoreError> {
        let mut tx = self.begin().await?;
        // The counters row first (the lock order of `attempts::gate_accept_pg`); nothing is
        // kept unless the whole confirmation commits.
        attempts::reset(&mut tx, c.subject_id, attempts::SECOND_FACTOR).await?;
        crate::users::lock_user(&mut tx, self.backend, c.subject_id).await?;
        // Pending, unexpired, started by the confirming session — which must still be live (a
        // session revoked after it was resolved must not finish its setup).
        let n = sqlx::query(
            "UPDATE factors SET status = 'active', confirmed_at = $3, last_used_at = $3, session_id = NULL \
             WHERE id = $1 AND subject_id = $2 AND status = 'pending' AND created_at > $4 \
             AND COALESCE(session_id, '') = COALESCE($5, '') \
             AND ($5 IS NULL OR EXISTS (SELECT 1 FROM sessions s WHERE s.id = $5 AND s.user_id = $2 \
                  AND s.revoked_at IS NULL AND s.expires_at > $3 AND s.last_seen_at > $6))",
        )
        .bind(c.factor_id)
        .bind(c.subject_id)
        .bind(to_millis(c.now))
        .bind(to_millis(c.pending_cutoff))
        .bind(c.session_id)
        .bind(to_millis(c.idle_cutoff))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(ConfirmOutcome::NotPending);
        }
        if !use_step(&mut tx, c.factor_id, c.step).await? {
            return Ok(ConfirmOutcome::Replayed);
        }
        let first = active_count(&mut tx, c.subject_id).await? == 1;
        audit::insert(&mut tx, c.audit_confirm).await?;
        let (mut sessions_revoked, mut raised) = (0, false);
        if first {
            recovery::replace(&mut tx, c.subject_id, c.first_codes, c.now).await?;
            audit::insert(&mut tx, c.audit_codes).await?;
            let keep = c.raise.map(|(id, _)| id);
            sessions_revoked = sessions::revoke_others(&mut tx, c.subject_id, keep, c.now).await?;
            if let Some((session_id, new_token_hash)) = c.raise {
                let r = sessions::Rotation {
                    session_id,
                    user_id: c.subject_id,
                    new_token_hash,
                    aal: 2,
                    password_verified_at: None,
                    mfa_verified_at: Some(c.now),
                };
                raised = sessions::rotate(&mut tx, &r, c.now, c.idle_cutoff).await?;
            }
        }
        tx.commit().await?;
        Ok(ConfirmOutcome::Confirmed { first, sessions_revoked, raised })
    }

    /// Take the subject's TOTP devices out of use (too many consecutive failures); returns how
    /// many were still in use. `audit` is appended only when some were.
    pub async fn disable_totp(
        &self,
        subject_id: &str,
        now: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE factors SET disabled_at = $2 \
             WHERE subject_id = $1 AND kind = 'totp' AND status = 'active' AND disabled_at IS NULL",
        )
        .bind(subject_id)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            audit::insert(&mut tx, audit).await?;
            tx.commit().await?;
        }
        Ok(n)
    }

    /// Remove a factor (`pending_only`: only if it is still a pending setup — decided in the
    /// deleting statement, so a setup confirmed meanwhile is not removed). When no active factor
    /// remains, the subject's recovery codes go too (they are a backup for factors, not a factor
    /// of their own). `false` if there was no such factor.
    pub async fn remove_factor(
        &self,
        subject_id: &str,
        factor_id: &str,
        pending_only: bool,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        let pending_only = i64::from(pending_only);
        let mut tx = self.begin().await?;
        // The factor row first, then its secret: the order `confirm_totp` locks them in.
        let n = sqlx::query("DELETE FROM factors WHERE id = $1 AND subject_id = $2 AND ($3 = 0 OR status = 'pending')")
            .bind(factor_id)
            .bind(subject_id)
            .bind(pending_only)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // (The foreign key's cascade has removed the secret with its row; this is a no-op then.)
        sqlx::query(
            "DELETE FROM totp_secrets WHERE factor_id = $1 AND NOT EXISTS (SELECT 1 FROM factors WHERE id = $1)",
        )
        .bind(factor_id)
        .execute(&mut *tx)
        .await?;
        if n != 1 {
            return Ok(false);
        }
        if active_count(&mut tx, subject_id).await? == 0 {
            sqlx::query("DELETE FROM recovery_codes WHERE subject_id = $1").bind(subject_id).execute(&mut *tx).await?;
        }
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl Store {
    /// Whether the subject has at least one active factor.
    pub async fn has_active_factor(&self, subject_id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM factors WHERE subject_id = $1 AND status = 'active'")
            .bind(subject_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }
}
