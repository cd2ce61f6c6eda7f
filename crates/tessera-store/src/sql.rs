//! The statements and row types of the hot path, each written once: the sqlx path, the SQLite
//! writer thread (rusqlite, binding the same `$N` parameters by name) and PostgreSQL's one-statement
//! verification (`verify`) all build on these. A leaf module: it uses nothing else of this crate
//! but the error type, so the modules above it (`attempts`, `audit`, `batch`, `factors`,
//! `recovery`, `verify`) depend on it and not on each other's statements.
//!
//! The rules, and where each is applied:
//! - **the gate** ([`GATE`]): unless locked, one more consecutive failure, returning the slot;
//!   the total grows only within the budget ([`COUNT_FAILURE`]);
//! - **the replay guard** ([`REPLAY_GUARD`], [`unused_step`]): a step is accepted only if newer
//!   than the device's last used step, which it becomes;
//! - **the reset** ([`RESET`], [`CLEAR`]): a success clears the subject's counters, writing
//!   the row only if it is not clear already;
//! - **the audit row** ([`AUDIT_INSERT`], [`AUDIT_COLUMNS`]);
//! - **the devices in use** ([`ACTIVE_DEVICES`]).

use crate::StoreError;
use std::sync::LazyLock;
use tessera_core::clock::from_millis;
use tessera_core::factor::{AuditKind, Factor, FactorKind, FactorStatus};
use tessera_core::otp::{Algorithm, TotpParams};
use time::OffsetDateTime;

/// The counter kind for second-factor attempts (TOTP codes and recovery codes share it, so
/// switching between them gains an attacker nothing).
pub const SECOND_FACTOR: &str = "second_factor";
/// The counter kind for password attempts: never shared with the second factor, so a wrong
/// password never locks a user's authenticator.
pub const PASSWORD: &str = "password";

/// Whether a counters row is open at `now` (a parameter): not locked, or its lock has lapsed.
pub(crate) fn open(now: &str) -> String {
    format!("(attempts.locked_until IS NULL OR attempts.locked_until <= {now})")
}

/// One more failure (`SET` list of `attempts`): the consecutive count always, the total only for
/// a slot within `budget` (a parameter), so a burst refused unchecked never spends the
/// subject's 100.
pub(crate) fn count_failure(budget: &str) -> String {
    format!(
        "consecutive_failures = attempts.consecutive_failures + 1, \
         total_failures = attempts.total_failures + CASE WHEN attempts.consecutive_failures < {budget} THEN 1 ELSE 0 END"
    )
}

/// The gate (`$1` subject, `$2` kind, `$3` now in ms, `$4` the policy's budget): unless the
/// subject is locked, one more failure, returning the new consecutive count (no row while
/// locked). One statement, so concurrent attempts each get a distinct count.
pub(crate) static GATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO attempts (subject_id, kind, consecutive_failures, lock_count, locked_until, total_failures) \
         VALUES ($1, $2, 1, 0, NULL, 1) \
         ON CONFLICT (subject_id, kind) DO UPDATE SET {} WHERE {} RETURNING consecutive_failures",
        count_failure("$4"),
        open("$3")
    )
});

/// The counters after a success (`SET` list of `attempts`).
pub(crate) const CLEAR: &str = "consecutive_failures = 0, lock_count = 0, locked_until = NULL, total_failures = 0";
/// A counters row that is not [`CLEAR`] (so a success on a clear row writes nothing).
pub(crate) const NOT_CLEAR: &str = "(attempts.consecutive_failures <> 0 OR attempts.lock_count <> 0 \
     OR attempts.locked_until IS NOT NULL OR attempts.total_failures <> 0)";

/// The reset after a success (`$1` subject, `$2` kind).
pub(crate) static RESET: LazyLock<String> =
    LazyLock::new(|| format!("UPDATE attempts SET {CLEAR} WHERE subject_id = $1 AND kind = $2 AND {NOT_CLEAR}"));

/// Lock a subject's counters row of a kind (`$1` subject, `$2` kind), creating it if missing,
/// and clear it ([`CLEAR`]): a confirmation's first statement, one round trip.
pub(crate) static LOCK_AND_CLEAR: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO attempts (subject_id, kind) VALUES ($1, $2) \
         ON CONFLICT (subject_id, kind) DO UPDATE SET {CLEAR}"
    )
});

/// The replay guard's condition on a `totp_secrets` row: `step` (a parameter) is newer than
/// every step the device has accepted.
pub(crate) fn unused_step(step: &str) -> String {
    format!("(last_used_step IS NULL OR last_used_step < {step})")
}

/// The replay guard (`$1` device, `$2` step, `$3` now in ms): record the step as used, and the
/// device's last use, unless the step (or a later one) already was. One row changed, or the
/// code must be refused.
pub(crate) static REPLAY_GUARD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE totp_secrets SET last_used_step = $2, last_used_at = $3 WHERE factor_id = $1 AND {}",
        unused_step("$2")
    )
});

/// [`REPLAY_GUARD`] for a device that must be `$4`'s.
pub(crate) static OWNED_REPLAY_GUARD: LazyLock<String> =
    LazyLock::new(|| format!("{} AND EXISTS (SELECT 1 FROM factors WHERE id = $1 AND subject_id = $4)", *REPLAY_GUARD));

/// A pending TOTP device's purge (`$1` subject, `$2` cutoff): its secrets, then its factors.
pub(crate) const PURGE_PENDING_SECRETS: &str = "DELETE FROM totp_secrets WHERE factor_id IN \
     (SELECT id FROM factors WHERE subject_id = $1 AND status = 'pending' AND created_at <= $2)";
/// See [`PURGE_PENDING_SECRETS`].
pub(crate) const PURGE_PENDING_FACTORS: &str =
    "DELETE FROM factors WHERE subject_id = $1 AND status = 'pending' AND created_at <= $2";
/// How many TOTP devices a subject has (`$1`).
pub(crate) const COUNT_TOTP: &str = "SELECT COUNT(*) FROM factors WHERE subject_id = $1 AND kind = 'totp'";
/// A pending TOTP factor (`$1` id, `$2` subject, `$3` label, `$4` created, `$5` session).
pub(crate) const INSERT_PENDING_TOTP: &str = "INSERT INTO factors (id, subject_id, kind, label, status, created_at, session_id) \
     VALUES ($1, $2, 'totp', $3, 'pending', $4, $5)";
/// Its secret (`$1` factor, `$2` algorithm, `$3` digits, `$4` period, `$5` key id, `$6` nonce,
/// `$7` ciphertext).
pub(crate) const INSERT_TOTP_SECRET: &str = "INSERT INTO totp_secrets (factor_id, algorithm, digits, period, key_id, nonce, ciphertext) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// The audit table's columns, in the order of [`AUDIT_INSERT`]'s parameters.
pub(crate) const AUDIT_COLUMNS: &str = "id, at, subject_id, factor_id, actor, kind, ip, user_agent, detail";
/// The audit insert (`$1`… in [`AUDIT_COLUMNS`] order).
pub(crate) static AUDIT_INSERT: LazyLock<String> =
    LazyLock::new(|| format!("INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"));

/// An event to append. `detail` is a JSON object (the app builds it; never a secret).
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    /// When.
    pub at: OffsetDateTime,
    /// Whose factors.
    pub subject_id: String,
    /// Which factor, if one.
    pub factor_id: Option<String>,
    /// Who acted, when not the subject (a support agent, an operator's CLI).
    pub actor: Option<String>,
    /// What happened.
    pub kind: AuditKind,
    /// Client IP, when the caller passed it.
    pub ip: Option<String>,
    /// Client user agent, when the caller passed it.
    pub user_agent: Option<String>,
    /// JSON object with details.
    pub detail: String,
}

/// A matched code to accept: which device, at which step, with which audit event.
#[derive(Debug, Clone)]
pub struct Acceptance {
    /// The device that matched.
    pub factor_id: String,
    /// The matched time step (the replay guard's key).
    pub step: u64,
    /// The event to append when the code is accepted.
    pub audit: NewAuditEvent,
}

/// A stored count as `u32` (negative as 0, saturating).
pub(crate) fn u32_of(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

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

#[derive(sqlx::FromRow)]
pub(crate) struct FactorRow {
    pub(crate) id: String,
    pub(crate) subject_id: String,
    pub(crate) kind: String,
    pub(crate) label: String,
    pub(crate) status: String,
    pub(crate) created_at: i64,
    pub(crate) confirmed_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
    pub(crate) session_id: Option<String>,
    pub(crate) disabled_at: Option<i64>,
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
pub(crate) const DEVICE_COLUMNS: &str = "f.id, f.subject_id, f.kind, f.label, f.status, f.created_at, f.confirmed_at, \
    COALESCE(s.last_used_at, f.last_used_at) AS last_used_at, f.session_id, f.disabled_at, \
    s.algorithm, s.digits, s.period, s.key_id, s.nonce, s.ciphertext, s.last_used_step";
pub(crate) const DEVICE_FROM: &str = "FROM factors f JOIN totp_secrets s ON s.factor_id = f.id";
/// Which devices are in use: active and not disabled.
const IN_USE: &str = "f.status = 'active' AND f.disabled_at IS NULL";

/// The subject's active devices in use (not disabled), oldest first (`$1`: the subject); also
/// run by the SQLite writer thread (`batch`).
pub(crate) static ACTIVE_DEVICES: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {DEVICE_COLUMNS} {DEVICE_FROM} WHERE f.subject_id = $1 AND {IN_USE} ORDER BY f.created_at, f.id")
});

/// PostgreSQL: the subject's device version (see `verify`).
pub(crate) static DEVICE_VERSION: LazyLock<String> =
    LazyLock::new(|| format!("SELECT device_version FROM attempts WHERE subject_id = $1 AND kind = '{SECOND_FACTOR}'"));

impl DeviceRow {
    /// A row of [`ACTIVE_DEVICES`] read by rusqlite (the SQLite writer thread).
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
