//! Group commit for SQLite's hot path, on a writer thread of its own.
//!
//! SQLite admits one writer at a time, and through sqlx every statement is a round trip to
//! the connection's worker thread (two context switches). So the hot path's writes — the
//! attempt gate, a whole verification, audit rows — go to one OS thread that owns its own
//! connection (rusqlite, on the same libsqlite3 as sqlx) and runs them without a hop:
//! it takes every job waiting (up to a batch), runs them one after another inside a single
//! `BEGIN IMMEDIATE … COMMIT` with cached prepared statements, and answers each caller only
//! after the COMMIT — so a reply still means "committed", each job still sees the ones before
//! it (they run in order, as if serialised), and BEGIN and COMMIT are paid once per batch.
//!
//! A verification is one job (`Op::Verify`): read the subject's active devices, run the
//! caller's check on them (it unseals and computes; microseconds), then the gate, the replay
//! guard (which stamps the last use; its trigger, migration 0005, resets the counters) and the
//! audit row. The read, the check and the writes are one transaction.
//!
//! The store's other writes (sqlx's one-connection writer pool) and this thread take turns
//! through one fair async mutex, the store's write turn, so no writer ever waits in SQLite's
//! busy handler; the WAL is checkpointed by another thread (see `checkpoint`).
//!
//! Invariants: a batch commits or rolls back as a whole; an SQL error in one job fails every
//! job of its batch (each caller gets the error, nothing of the batch is kept), so no caller
//! is ever told "done" for a write that was rolled back. A job's own failure before it wrote
//! anything (its check, a corrupt row) answers that job only. Each job is written so that, on
//! its own, it is all-or-nothing without a savepoint (the accept runs the replay guard first
//! and does nothing more when the guard refuses).

use crate::attempts::{self, Acceptance, DeviceCheck};
use crate::audit::NewAuditEvent;
use crate::factors::{ACTIVE_DEVICES, DeviceRow};
use crate::{StoreError, TotpDevice};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, named_params, params};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tessera_core::clock::to_millis;
use tessera_core::throttle::ThrottlePolicy;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most writes in one transaction.
const MAX_BATCH: usize = 128;

/// A write the batcher knows how to run.
pub(crate) enum Op {
    /// The attempt gate's upsert (see `attempts::gate`): the reserved count, or `None` if
    /// locked.
    Gate { subject: String, kind: &'static str, now_ms: i64, budget: u32 },
    /// Append an audit event.
    Audit(NewAuditEvent),
    /// Read the subject's active devices, run the check, then the gate and, when it admits
    /// the attempt (see `attempts::admits`) and the check matched, the accept (see
    /// `Store::check_gate_accept`).
    /// (`check` is taken when the job runs.)
    Verify { subject: String, kind: &'static str, now_ms: i64, policy: ThrottlePolicy, check: Option<DeviceCheck> },
}

/// What a write answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Done {
    Gate(Option<i64>),
    Audit,
    /// The gate's reserved slot (`None`: locked), whether the accept won if it ran, and the
    /// device the check matched.
    Verify {
        reserved: Option<i64>,
        accepted: Option<bool>,
        matched: Option<String>,
    },
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// What the writer thread receives.
enum Msg {
    Job(Job),
    /// Finish the jobs received before, stop the checkpoint thread, close the connection,
    /// then answer.
    Stop(oneshot::Sender<()>),
}

/// The handle that submits writes to the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Msg>,
}

/// Open the writer's own connection to the database file (already created and in WAL mode by
/// the pool), with the pool's per-connection settings.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Checkpoints are the checkpoint thread's (see `checkpoint`), never a commit's.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", crate::checkpoint::WAL_SIZE_LIMIT)?;
    Ok(conn)
}

impl Batcher {
    /// Open the writer connection to the file at `path` and start its thread (and the
    /// checkpoint thread, which it owns); the thread takes `turn` around each batch, as every
    /// other writer of this store does, and ends on [`Batcher::stop`] or when every handle is
    /// dropped.
    pub(crate) fn spawn(path: &Path, turn: Arc<Mutex<()>>) -> Result<Self, StoreError> {
        let conn = open(path).map_err(|e| StoreError::Config(format!("opening the SQLite writer: {e}")))?;
        let checkpoints = crate::checkpoint::Checkpointer::spawn(path, turn.clone())?;
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("tessera-sqlite-writer".into())
            .spawn(move || {
                run(conn, rx, &turn);
                checkpoints.stop();
            })
            .map_err(|e| StoreError::Config(format!("starting the SQLite writer thread: {e}")))?;
        Ok(Self { tx })
    }

    /// Run `op` in the next batch; returns once that batch has committed.
    pub(crate) async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Job(Job { op, reply }))
            .await
            .map_err(|_| StoreError::Batch("the writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Batch("the writer has stopped".into()))?
    }

    /// Finish the writes submitted so far, stop the writer and checkpoint threads and close
    /// their connections. Later writes fail ("the writer has stopped").
    pub(crate) async fn stop(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The writer loop. On a stop, the connection is closed before the stop is answered.
fn run(mut conn: Connection, mut rx: mpsc::Receiver<Msg>, turn: &Mutex<()>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        let mut stop = None;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Job(j) => jobs.push(j),
                Msg::Stop(s) => stop = Some(s),
            }
            if stop.is_none() && jobs.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !jobs.is_empty() {
            write_batch(&mut conn, &mut jobs, turn);
        }
        if let Some(s) = stop {
            drop(conn);
            let _ = s.send(());
            return;
        }
    }
}

/// Run the jobs waiting as one batch under the write turn and answer each.
fn write_batch(conn: &mut Connection, jobs: &mut Vec<Job>, turn: &Mutex<()>) {
    tracing::trace!(writes = jobs.len(), "write batch");
    let result = {
        let _turn = turn.blocking_lock();
        execute(conn, jobs)
    };
    match result {
        Ok(done) => {
            for (job, d) in jobs.drain(..).zip(done) {
                let _ = job.reply.send(d);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, writes = jobs.len(), "a batch of writes failed and was rolled back");
            let msg = e.to_string();
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(StoreError::Batch(msg.clone())));
            }
        }
    }
}

/// Run the jobs in one transaction. An SQL error rolls back the batch (`Err`); a job's own
/// failure before it wrote anything (its check, a corrupt row) answers that job only.
fn execute(conn: &mut Connection, jobs: &mut [Job]) -> rusqlite::Result<Vec<Result<Done, StoreError>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        out.push(apply(&tx, &mut j.op)?);
    }
    tx.commit()?;
    Ok(out)
}

// The gate, the audit insert and the device read are the sqlx path's own statements
// (`$N` parameters, bound by name here); the accept is SQLite's alone (see migration 0005).

fn gate(conn: &Connection, subject: &str, kind: &str, now_ms: i64, budget: u32) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(attempts::GATE)?
        .query_row(named_params! { "$1": subject, "$2": kind, "$3": now_ms, "$4": budget }, |r| r.get(0))
        .optional()
}

fn insert_audit(conn: &Connection, ev: &NewAuditEvent) -> rusqlite::Result<()> {
    conn.prepare_cached(crate::audit::INSERT)?.execute(named_params! {
        "$1": uuid::Uuid::now_v7().to_string(),
        "$2": to_millis(ev.at),
        "$3": ev.subject_id,
        "$4": ev.factor_id,
        "$5": ev.actor,
        "$6": ev.kind.as_str(),
        "$7": ev.ip,
        "$8": ev.user_agent,
        "$9": ev.detail,
    })?;
    Ok(())
}

/// Accept a matched code: the replay guard, which also stamps the time of use (the device's
/// last use); when it changes its row, the trigger of migration 0005 resets the subject's
/// second-factor counters in the same statement. Then the audit event. Nothing is
/// written when the guard refuses.
fn accept(conn: &Connection, a: &Acceptance, now_ms: i64) -> rusqlite::Result<bool> {
    let won = conn
        .prepare_cached(
            "UPDATE totp_secrets SET last_used_step = ?2, last_used_at = ?3 \
             WHERE factor_id = ?1 AND (last_used_step IS NULL OR last_used_step < ?2)",
        )?
        .execute(params![a.factor_id, crate::factors::step_i64(a.step), now_ms])?
        == 1;
    if won {
        insert_audit(conn, &a.audit)?;
    }
    Ok(won)
}

/// The subject's active devices (a corrupt row fails the job, not the batch).
fn active_devices(conn: &Connection, subject: &str) -> rusqlite::Result<Result<Vec<TotpDevice>, StoreError>> {
    let rows = conn
        .prepare_cached(&ACTIVE_DEVICES)?
        .query_map(named_params! { "$1": subject }, DeviceRow::from_sqlite)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.into_iter().map(TotpDevice::try_from).collect())
}

fn apply(conn: &Connection, op: &mut Op) -> rusqlite::Result<Result<Done, StoreError>> {
    Ok(Ok(match op {
        Op::Gate { subject, kind, now_ms, budget } => Done::Gate(gate(conn, subject, kind, *now_ms, *budget)?),
        Op::Verify { subject, kind, now_ms, policy, check } => {
            let devices = match active_devices(conn, subject)? {
                Ok(d) => d,
                Err(e) => return Ok(Err(e)),
            };
            let Some(check) = check.take() else {
                return Ok(Err(StoreError::Batch("a check ran twice".into())));
            };
            let acceptance = match check(&devices) {
                Ok(a) => a,
                Err(e) => return Ok(Err(StoreError::Check(e))),
            };
            let matched = acceptance.as_ref().map(|a| a.factor_id.clone());
            let reserved = gate(conn, subject, kind, *now_ms, policy.budget())?;
            let admitted = reserved.is_some_and(|n| attempts::admits(policy, n));
            let accepted = match &acceptance {
                Some(a) if admitted => Some(accept(conn, a, *now_ms)?),
                _ => None,
            };
            Done::Verify { reserved, accepted, matched }
        }
        Op::Audit(ev) => {
            insert_audit(conn, ev)?;
            Done::Audit
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use tessera_core::factor::AuditKind;

    fn event(subject: &str) -> NewAuditEvent {
        NewAuditEvent {
            at: time::OffsetDateTime::UNIX_EPOCH,
            subject_id: subject.into(),
            factor_id: None,
            actor: None,
            kind: AuditKind::TotpRejected,
            ip: None,
            user_agent: None,
            detail: "{}".into(),
        }
    }

    fn job(op: Op) -> (Job, oneshot::Receiver<Result<Done, StoreError>>) {
        let (reply, rx) = oneshot::channel();
        (Job { op, reply }, rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_commits_in_order_or_not_at_all() {
        let (_dir, path, store) = crate::temp_sqlite().await;
        let mut conn = open(&path).unwrap();
        let gate = || Op::Gate { subject: "s".into(), kind: attempts::SECOND_FACTOR, now_ms: 0, budget: 5 };

        // In order: three gates in one batch see each other's increments.
        let mut jobs: Vec<_> = (0..3).map(|_| job(gate()).0).collect();
        let done: Vec<_> = execute(&mut conn, &mut jobs).unwrap().into_iter().map(Result::unwrap).collect();
        assert_eq!(done, [Done::Gate(Some(1)), Done::Gate(Some(2)), Done::Gate(Some(3))]);

        // Not at all: a failing write rolls back the gate before it in the same batch.
        conn.execute_batch("ALTER TABLE audit_events RENAME TO audit_moved").unwrap();
        let mut jobs = vec![job(gate()).0, job(Op::Audit(event("s"))).0];
        assert!(execute(&mut conn, &mut jobs).is_err());
        conn.execute_batch("ALTER TABLE audit_moved RENAME TO audit_events").unwrap();

        // A job's own failure (its check) answers that job only; the batch commits.
        let failing: DeviceCheck = Box::new(|_| Err("no key".into()));
        let verify = Op::Verify {
            subject: "s".into(),
            kind: attempts::SECOND_FACTOR,
            now_ms: 0,
            policy: ThrottlePolicy::default(),
            check: Some(failing),
        };
        let mut jobs = vec![job(verify).0, job(gate()).0];
        let done = execute(&mut conn, &mut jobs).unwrap();
        assert!(matches!(&done[0], Err(StoreError::Check(e)) if e.to_string() == "no key"));
        assert_eq!(done[1].as_ref().unwrap(), &Done::Gate(Some(4)), "the failed batch left nothing; the check no gate");

        // Through the thread: many concurrent writers, each answered once its batch committed,
        // sharing the write turn with the store's other writes (none waits in SQLite's busy
        // handler: a 10 s wait there would fail the test's own timeout).
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move {
                    if i % 10 == 0 {
                        // An ordinary transaction of the store, between batches.
                        let mut tx = s.begin().await?;
                        crate::audit::insert(&mut tx, &event(&format!("c{}", i % 7))).await?;
                        tx.commit().await
                    } else {
                        s.append_audit(&event(&format!("c{}", i % 7))).await
                    }
                })
            })
            .collect();
        let all = async {
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), all).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events").fetch_one(&store.pool).await.unwrap();
        assert_eq!(n, 200);
    }
}
