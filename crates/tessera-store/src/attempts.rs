//! Attempt counters: the atomic gate that bounds guessing, locks, and resets.

use crate::audit;
use crate::exec::{Exec, args};
use crate::sql::{GATE, NewAuditEvent, RESET, u32_of};
use crate::{Backend, Store, StoreError};
use rusqlite::{OptionalExtension, named_params};
use sqlx::{AnyConnection, AssertSqlSafe};
use tessera_core::clock::{from_millis, to_millis};
use tessera_core::throttle::{AttemptState, Gate, ThrottlePolicy};
use time::OffsetDateTime;

/// What the gate answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateResult {
    /// This attempt holds failure slot `n` (counting itself) until it succeeds.
    Reserved(u32),
    /// The subject is locked until then.
    Locked(OffsetDateTime),
}

/// Lock the subject's counters row of `kind` for the transaction, creating it (zeroed) if the
/// subject has none yet: a row every subject can be serialised on, user or not.
pub(crate) async fn lock_row(conn: &mut dyn Exec, subject_id: &str, kind: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO attempts (subject_id, kind) VALUES ($1, $2) \
         ON CONFLICT (subject_id, kind) DO UPDATE SET kind = excluded.kind",
        args![subject_id, kind],
    )
    .await?;
    Ok(())
}

/// Clear a subject's counters of one kind after a success ([`RESET`]).
pub(crate) async fn reset(conn: &mut AnyConnection, subject_id: &str, kind: &str) -> Result<(), StoreError> {
    sqlx::query(AssertSqlSafe(RESET.as_str())).bind(subject_id).bind(kind).execute(conn).await?;
    Ok(())
}

/// The gate: unless the subject is locked at `now_ms`, add one to its consecutive failures and
/// return the new count (`None` while locked). One statement.
pub(crate) async fn gate(
    conn: &mut AnyConnection,
    subject_id: &str,
    kind: &str,
    now_ms: i64,
    budget: u32,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(AssertSqlSafe(GATE.as_str()))
        .bind(subject_id)
        .bind(kind)
        .bind(now_ms)
        .bind(i64::from(budget))
        .fetch_optional(conn)
        .await?)
}

/// The gate on the SQLite writer thread ([`GATE`], bound by name).
pub(crate) fn gate_sqlite(
    conn: &rusqlite::Connection,
    subject_id: &str,
    kind: &str,
    now_ms: i64,
    budget: u32,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(&GATE)?
        .query_row(named_params! { "$1": subject_id, "$2": kind, "$3": now_ms, "$4": budget }, |r| r.get(0))
        .optional()
}

/// The reset on the SQLite writer thread ([`RESET`], bound by name).
pub(crate) fn reset_sqlite(conn: &rusqlite::Connection, subject_id: &str, kind: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(&RESET)?.execute(named_params! { "$1": subject_id, "$2": kind })?;
    Ok(())
}

/// Whether the gate admits the attempt holding slot `reserved` (the policy's rule).
pub(crate) fn admits(policy: &ThrottlePolicy, reserved: i64) -> bool {
    policy.gate(u32_of(reserved)) == Gate::Proceed
}

#[derive(sqlx::FromRow)]
struct StateRow {
    consecutive_failures: i64,
    lock_count: i64,
    locked_until: Option<i64>,
    total_failures: i64,
}

impl From<StateRow> for AttemptState {
    fn from(r: StateRow) -> Self {
        AttemptState {
            consecutive_failures: u32_of(r.consecutive_failures),
            lock_count: u32_of(r.lock_count),
            locked_until: r.locked_until.map(from_millis),
            total_failures: u32_of(r.total_failures),
        }
    }
}

impl Store {
    /// Atomically reserve an attempt: unless the subject is locked at `now`, add one to its
    /// consecutive failures (a success gives it back by resetting) and return the new count;
    /// the total grows only for a slot within `policy`'s budget. One statement, so concurrent
    /// attempts each get a distinct count.
    pub async fn gate_attempt(
        &self,
        subject_id: &str,
        kind: &'static str,
        now: OffsetDateTime,
        policy: &ThrottlePolicy,
    ) -> Result<GateResult, StoreError> {
        let now_ms = to_millis(now);
        let budget = policy.budget();
        let reserved = match &self.batcher {
            // SQLite: one write of a group-committed batch.
            Some(b) => {
                let subject = subject_id.to_owned();
                b.run(move |c| gate_sqlite(c, &subject, kind, now_ms, budget).map(Ok)).await?
            }
            None => gate(&mut *self.write().await?, subject_id, kind, now_ms, budget).await?,
        };
        match reserved {
            Some(n) => Ok(GateResult::Reserved(u32_of(n))),
            None => Ok(GateResult::Locked(self.locked_until(subject_id, kind, now).await?)),
        }
    }

    /// The end of the lock that refused an attempt (`now` if it has just lapsed).
    pub(crate) async fn locked_until(
        &self,
        subject_id: &str,
        kind: &str,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, StoreError> {
        let until: Option<i64> =
            sqlx::query_scalar("SELECT locked_until FROM attempts WHERE subject_id = $1 AND kind = $2")
                .bind(subject_id)
                .bind(kind)
                .fetch_optional(&self.pool)
                .await?
                .flatten();
        Ok(until.map_or(now, from_millis))
    }

    /// Apply a lock if the failures have reached the policy's limit and no lock is in force;
    /// returns the end of the lock in force afterwards (None if the subject is not locked,
    /// e.g. because a concurrent success reset the counters). `audit` is written only when
    /// this call applied the lock.
    pub async fn lock_if_due(
        &self,
        subject_id: &str,
        kind: &str,
        policy: &ThrottlePolicy,
        now: OffsetDateTime,
        audit: &NewAuditEvent,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let mut tx = self.begin().await?;
        let select = match self.backend {
            Backend::Sqlite => {
                "SELECT consecutive_failures, lock_count, locked_until, total_failures FROM attempts \
                 WHERE subject_id = $1 AND kind = $2"
            }
            Backend::Postgres => {
                "SELECT consecutive_failures, lock_count, locked_until, total_failures FROM attempts \
                 WHERE subject_id = $1 AND kind = $2 FOR UPDATE"
            }
        };
        let Some(row) =
            sqlx::query_as::<_, StateRow>(select).bind(subject_id).bind(kind).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        let state = AttemptState::from(row);
        if state.is_locked(now) {
            return Ok(state.locked_until);
        }
        if !policy.locks_after(state.consecutive_failures) {
            return Ok(None);
        }
        let next = policy.apply_lock(state, now);
        sqlx::query(
            "UPDATE attempts SET consecutive_failures = $3, lock_count = $4, locked_until = $5 \
             WHERE subject_id = $1 AND kind = $2",
        )
        .bind(subject_id)
        .bind(kind)
        .bind(i64::from(next.consecutive_failures))
        .bind(i64::from(next.lock_count))
        .bind(next.locked_until.map(to_millis))
        .execute(&mut *tx)
        .await?;
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(next.locked_until)
    }

    /// Count one more failure in a subject's total only (no slot, no lock: a counter that only
    /// a success resets, e.g. password failures per email across every address); returns the
    /// new total.
    pub async fn count_failure(&self, subject_id: &str, kind: &str) -> Result<u32, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO attempts (subject_id, kind, consecutive_failures, lock_count, locked_until, total_failures) \
             VALUES ($1, $2, 0, 0, NULL, 1) \
             ON CONFLICT (subject_id, kind) DO UPDATE SET total_failures = attempts.total_failures + 1 \
             RETURNING total_failures",
        )
        .bind(subject_id)
        .bind(kind)
        .fetch_one(&mut *self.write().await?)
        .await?;
        Ok(u32_of(n))
    }

    /// The counters as stored (zeroes if none).
    pub async fn attempt_state(&self, subject_id: &str, kind: &str) -> Result<AttemptState, StoreError> {
        Ok(sqlx::query_as::<_, StateRow>(
            "SELECT consecutive_failures, lock_count, locked_until, total_failures FROM attempts \
                 WHERE subject_id = $1 AND kind = $2",
        )
        .bind(subject_id)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?
        .map(AttemptState::from)
        .unwrap_or_default())
    }
}

impl Store {
    /// Reset a subject's counters of one kind (after a success outside a larger transaction).
    pub async fn reset_attempts(&self, subject_id: &str, kind: &str) -> Result<(), StoreError> {
        let mut c = self.write().await?;
        reset(&mut c, subject_id, kind).await
    }
}
