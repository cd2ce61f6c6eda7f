//! Attempt counters: the atomic gate that bounds guessing, locks, and resets.

use crate::audit::{self, NewAuditEvent};
use crate::batch::{Done, Op};
use crate::{Backend, Store, StoreError, TotpDevice};
use sqlx::AnyConnection;
use tessera_core::clock::{from_millis, to_millis};
use tessera_core::throttle::{AttemptState, Gate, ThrottlePolicy};
use time::OffsetDateTime;

/// The counter kind for second-factor attempts (TOTP codes and recovery codes share it, so
/// switching between them gains an attacker nothing).
pub const SECOND_FACTOR: &str = "second_factor";
/// The counter kind for password attempts: never shared with the second factor, so a wrong
/// password never locks a user's authenticator.
pub const PASSWORD: &str = "password";

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

/// A caller's error, carried through the store (see [`StoreError::Check`]).
pub type CheckError = Box<dyn std::error::Error + Send + Sync>;

/// A verification's check of a code against the subject's active TOTP devices (see
/// [`Store::check_gate_accept`]): the acceptance for the device that matched, or `None`.
/// It computes only. On SQLite it runs on the writer thread, inside the write transaction,
/// so it must be quick (microseconds: unseal and a few HMACs) and must never wait.
pub type DeviceCheck = Box<dyn FnOnce(&[TotpDevice]) -> Result<Option<Acceptance>, CheckError> + Send>;

/// What [`Store::check_gate_accept`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAccept {
    /// The gate refused the attempt — locked (`GateResult::Locked`), or its slot is beyond
    /// the budget (`GateResult::Reserved`): the code was not considered.
    Refused(GateResult),
    /// The code was accepted (and is now used).
    Accepted,
    /// The code matched but its step was already used (slot `n` stays a failure).
    Replayed(u32),
    /// No match, or nothing to accept (slot `n` stays a failure).
    Mismatch(u32),
}

/// What the gate answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateResult {
    /// This attempt holds failure slot `n` (counting itself) until it succeeds.
    Reserved(u32),
    /// The subject is locked until then.
    Locked(OffsetDateTime),
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// Lock the subject's counters row of `kind` for the transaction, creating it (zeroed) if the
/// subject has none yet: a row every subject can be serialised on, user or not.
pub(crate) async fn lock_row(conn: &mut AnyConnection, subject_id: &str, kind: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO attempts (subject_id, kind) VALUES ($1, $2) \
         ON CONFLICT (subject_id, kind) DO UPDATE SET kind = excluded.kind",
    )
    .bind(subject_id)
    .bind(kind)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn reset(conn: &mut AnyConnection, subject_id: &str, kind: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE attempts SET consecutive_failures = 0, lock_count = 0, locked_until = NULL, total_failures = 0 \
         WHERE subject_id = $1 AND kind = $2 \
         AND (consecutive_failures <> 0 OR lock_count <> 0 OR locked_until IS NOT NULL OR total_failures <> 0)",
    )
    .bind(subject_id)
    .bind(kind)
    .execute(conn)
    .await?;
    Ok(())
}

/// The gate's statement (`$1` subject, `$2` kind, `$3` now in ms, `$4` the policy's budget); also
/// run by the SQLite writer thread (`batch`). The total counts only attempts within the budget
/// (those whose code is checked): a burst refused unchecked must not spend the subject's 100.
pub(crate) const GATE: &str = "INSERT INTO attempts (subject_id, kind, consecutive_failures, lock_count, locked_until, total_failures) \
     VALUES ($1, $2, 1, 0, NULL, 1) \
     ON CONFLICT (subject_id, kind) DO UPDATE SET consecutive_failures = attempts.consecutive_failures + 1, \
       total_failures = attempts.total_failures + CASE WHEN attempts.consecutive_failures < $4 THEN 1 ELSE 0 END \
     WHERE attempts.locked_until IS NULL OR attempts.locked_until <= $3 \
     RETURNING consecutive_failures";

/// The gate: unless the subject is locked at `now_ms`, add one to its consecutive failures and
/// return the new count (`None` while locked). One statement.
pub(crate) async fn gate(
    conn: &mut AnyConnection,
    subject_id: &str,
    kind: &str,
    now_ms: i64,
    budget: u32,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(GATE)
        .bind(subject_id)
        .bind(kind)
        .bind(now_ms)
        .bind(i64::from(budget))
        .fetch_optional(conn)
        .await?)
}

/// Whether the gate admits the attempt holding slot `reserved` (the policy's rule).
pub(crate) fn admits(policy: &ThrottlePolicy, reserved: i64) -> bool {
    policy.gate(u32_of(reserved)) == Gate::Proceed
}

/// [`gate_accept_pg`]'s statement.
const GATE_ACCEPT_PG: &str = "WITH cur AS ( \
       SELECT consecutive_failures + 1 AS n, (locked_until IS NULL OR locked_until <= $3) AS open \
       FROM attempts WHERE subject_id = $1 AND kind = $2 FOR UPDATE \
     ), g AS ( \
       UPDATE totp_secrets SET last_used_step = $6, last_used_at = $3 \
       WHERE factor_id = $5 AND (last_used_step IS NULL OR last_used_step < $6) \
         AND EXISTS (SELECT 1 FROM cur WHERE open AND n <= $4) \
       RETURNING factor_id \
     ), u AS ( \
       UPDATE attempts SET \
         consecutive_failures = CASE WHEN EXISTS (SELECT 1 FROM g) THEN 0 ELSE attempts.consecutive_failures + 1 END, \
         lock_count = CASE WHEN EXISTS (SELECT 1 FROM g) THEN 0 ELSE attempts.lock_count END, \
         locked_until = CASE WHEN EXISTS (SELECT 1 FROM g) THEN NULL ELSE attempts.locked_until END, \
         total_failures = CASE WHEN EXISTS (SELECT 1 FROM g) THEN 0 \
           WHEN (SELECT n FROM cur) <= $4 THEN attempts.total_failures + 1 ELSE attempts.total_failures END \
       WHERE subject_id = $1 AND kind = $2 AND EXISTS (SELECT 1 FROM cur WHERE open) \
     ), a AS ( \
       INSERT INTO audit_events (id, at, subject_id, factor_id, actor, kind, ip, user_agent, detail) \
       SELECT $7, $8, $1, $5, $9, $10, $11, $12, $13 FROM g \
     ) SELECT EXISTS (SELECT 1 FROM cur), COALESCE((SELECT open FROM cur), FALSE), \
              COALESCE((SELECT n FROM cur), 0), EXISTS (SELECT 1 FROM g)";

/// PostgreSQL: the gate and the accept of a verification as one statement, so one round trip
/// and one commit. A subject's first attempt of a kind finds no counters row: the statement
/// then changes nothing, the row is created and the statement runs again (no row is ever
/// deleted).
///
/// The statement locks the subject's counters row first (`cur`, `FOR UPDATE`: concurrent
/// attempts on one subject queue here, each seeing the count the one before left); then,
/// only if the subject is not locked and the attempt's slot (count + 1) is within the policy's
/// budget, the replay guard (`g`, which stamps the device's last use); then one update of the
/// counters: reset if the guard won, else one more failure (nothing while locked); and the
/// acceptance's audit row if the guard won. Returns the slot the attempt held (`None` while
/// locked) and whether the guard won.
///
/// Lock order: a transaction that changes a subject's counters and one of its devices' rows
/// takes the counters row first (as the support reset and the confirmation do), so none can
/// deadlock with this one.
pub(crate) async fn gate_accept_pg(
    conn: &mut AnyConnection,
    subject_id: &str,
    kind: &str,
    now_ms: i64,
    policy: &ThrottlePolicy,
    accept: Option<&Acceptance>,
) -> Result<(Option<i64>, bool), StoreError> {
    let ev = accept.map(|a| &a.audit);
    for first_run in [true, false] {
        let row: (bool, bool, i64, bool) = sqlx::query_as(GATE_ACCEPT_PG)
            .bind(subject_id)
            .bind(kind)
            .bind(now_ms)
            .bind(i64::from(policy.budget()))
            .bind(accept.map(|a| a.factor_id.as_str()))
            .bind(accept.map(|a| crate::factors::step_i64(a.step)))
            .bind(accept.map(|_| uuid::Uuid::now_v7().to_string()))
            .bind(ev.map(|e| to_millis(e.at)))
            .bind(ev.and_then(|e| e.actor.as_deref()))
            .bind(ev.map(|e| e.kind.as_str()))
            .bind(ev.and_then(|e| e.ip.as_deref()))
            .bind(ev.and_then(|e| e.user_agent.as_deref()))
            .bind(ev.map(|e| e.detail.as_str()))
            .fetch_one(&mut *conn)
            .await?;
        let (had_row, open, n, won) = row;
        if had_row {
            return Ok((open.then_some(n), won));
        }
        if first_run {
            sqlx::query(
                "INSERT INTO attempts (subject_id, kind, consecutive_failures, lock_count, locked_until) \
                 VALUES ($1, $2, 0, 0, NULL) ON CONFLICT (subject_id, kind) DO NOTHING",
            )
            .bind(subject_id)
            .bind(kind)
            .execute(&mut *conn)
            .await?;
        }
    }
    Err(StoreError::Corrupt("the attempts row vanished".into()))
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
        let reserved = match self.backend {
            // SQLite: one write of a group-committed batch.
            Backend::Sqlite => {
                match self.batch(Op::Gate { subject: subject_id.to_owned(), kind, now_ms, budget }).await? {
                    Done::Gate(r) => r,
                    other => return Err(StoreError::Batch(format!("unexpected answer {other:?}"))),
                }
            }
            Backend::Postgres => gate(&mut *self.write().await?, subject_id, kind, now_ms, budget).await?,
        };
        match reserved {
            Some(n) => Ok(GateResult::Reserved(u32_of(n))),
            None => Ok(GateResult::Locked(self.locked_until(subject_id, kind, now).await?)),
        }
    }

    /// The end of the lock that refused an attempt (`now` if it has just lapsed).
    async fn locked_until(
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

    /// The hot path of a code check: read the subject's active devices, run `check` on
    /// them (it has no effect), reserve an attempt at the gate and — only if the gate admits
    /// it (not locked, slot within `policy`'s budget) and the check found a match — accept
    /// the code (replay guard, last use, counter reset, the acceptance's audit event). The
    /// check's result counts only when the gate admits the attempt, so the bound on guesses
    /// is the gate's, exactly as when gating first. Returns the result and the id of the
    /// device that matched, if one did.
    ///
    /// On SQLite this is one job of the writer thread's batch: the read, the check and the
    /// writes run in one transaction without a hop between them. On PostgreSQL, the read on
    /// the pool, then the gate and the accept as one statement (`gate_accept_pg`): two round
    /// trips, one commit.
    pub async fn check_gate_accept(
        &self,
        subject_id: &str,
        kind: &'static str,
        now: OffsetDateTime,
        policy: &ThrottlePolicy,
        check: DeviceCheck,
    ) -> Result<(GateAccept, Option<String>), StoreError> {
        let now_ms = to_millis(now);
        let (reserved, accepted, matched) = match self.backend {
            Backend::Sqlite => {
                let op =
                    Op::Verify { subject: subject_id.to_owned(), kind, now_ms, policy: *policy, check: Some(check) };
                match self.batch(op).await? {
                    Done::Verify { reserved, accepted, matched } => (reserved, accepted, matched),
                    other => return Err(StoreError::Batch(format!("unexpected answer {other:?}"))),
                }
            }
            Backend::Postgres => {
                let devices = self.active_totp_devices(subject_id).await?;
                let accept = check(&devices).map_err(StoreError::Check)?;
                let matched = accept.as_ref().map(|a| a.factor_id.clone());
                let (reserved, won) =
                    gate_accept_pg(&mut *self.write().await?, subject_id, kind, now_ms, policy, accept.as_ref())
                        .await?;
                let accepted = match (reserved, &accept) {
                    (Some(n), Some(_)) if admits(policy, n) => Some(won),
                    _ => None,
                };
                (reserved, accepted, matched)
            }
        };
        let result = match (reserved, accepted) {
            (None, _) => GateAccept::Refused(GateResult::Locked(self.locked_until(subject_id, kind, now).await?)),
            (Some(n), _) if !admits(policy, n) => GateAccept::Refused(GateResult::Reserved(u32_of(n))),
            (Some(_), Some(true)) => GateAccept::Accepted,
            (Some(n), Some(false)) => GateAccept::Replayed(u32_of(n)),
            (Some(n), None) => GateAccept::Mismatch(u32_of(n)),
        };
        Ok((result, matched))
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
