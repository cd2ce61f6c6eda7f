//! Group commit for SQLite's hot path. SQLite admits one writer at a time, and through sqlx
//! every statement is a round trip to the connection's worker thread. A verification used to
//! hold the writer for seven of them (the attempt gate, then BEGIN, the replay guard, the
//! factor's last use, the counter reset, the audit row, COMMIT) plus two pool checkouts; now it
//! is three, inside a shared batch: the gate, the guard (whose trigger, migration 0004, does
//! the last use and the reset) and the audit row.
//!
//! One task owns the queue: it takes every write waiting (up to a batch), runs them one after
//! another inside a single `BEGIN IMMEDIATE … COMMIT` on the writer connection, and answers
//! each caller only after the COMMIT — so a reply still means "durable", each write still sees
//! the ones before it (they run in order, as if serialised), and BEGIN, COMMIT and the
//! checkout are paid once per batch instead of once per write.
//!
//! Invariants: a batch commits or rolls back as a whole; an error in one write fails every
//! write of its batch (each caller gets the error, nothing of the batch is kept), so no caller
//! is ever told "done" for a write that was rolled back. Each write is written so that, on its
//! own, it is all-or-nothing without a savepoint (the accept runs the replay guard first and
//! does nothing more when the guard refuses).

use crate::attempts::Acceptance;
use crate::audit::{self, NewAuditEvent};
use crate::{StoreError, attempts};
use sqlx::{AnyConnection, AnyPool};
use tessera_core::throttle::ThrottlePolicy;
use tokio::sync::{mpsc, oneshot};

/// Most writes in one transaction.
const MAX_BATCH: usize = 128;

/// A write the batcher knows how to run.
#[derive(Debug)]
pub(crate) enum Op {
    /// The attempt gate's upsert (see `attempts`): the reserved count, or `None` if locked.
    Gate { subject: String, kind: &'static str, now_ms: i64 },
    /// Append an audit event.
    Audit(NewAuditEvent),
    /// The gate and, when it admits the attempt (see `attempts::admits`), the accept of an
    /// already matched code (see `Store::gate_and_accept`).
    GateAccept { subject: String, kind: &'static str, now_ms: i64, policy: ThrottlePolicy, accept: Option<Acceptance> },
}

/// What a write answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    Gate(Option<i64>),
    Audit,
    /// The gate's reserved slot (`None`: locked) and, if the accept ran, whether it won.
    GateAccept(Option<i64>, Option<bool>),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done, String>>,
}

/// The handle that submits writes to the batching task.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Start the task on the current runtime; it ends when every handle is dropped.
    pub(crate) fn spawn(writer: AnyPool) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(writer, rx));
        Self { tx }
    }

    /// Run `op` in the next batch; returns once that batch has committed.
    pub(crate) async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { op, reply }).await.map_err(|_| StoreError::Batch("the writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Batch("the writer has stopped".into()))?.map_err(StoreError::Batch)
    }
}

async fn run(writer: AnyPool, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        tracing::trace!(writes = jobs.len(), "write batch");
        match execute(&writer, &jobs).await {
            Ok(done) => {
                for (job, d) in jobs.drain(..).zip(done) {
                    let _ = job.reply.send(Ok(d));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, writes = jobs.len(), "a batch of writes failed and was rolled back");
                let msg = e.to_string();
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

async fn execute(writer: &AnyPool, jobs: &[Job]) -> Result<Vec<Done>, StoreError> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        out.push(apply(&mut tx, &j.op).await?);
    }
    tx.commit().await?;
    Ok(out)
}

/// Accept a matched code: the replay guard, which also stamps the time of use; when it
/// changes its row, the trigger of migration 0004 marks the factor used and resets the
/// subject's second-factor counters in the same statement. Then the audit event. Nothing is
/// written when the guard refuses.
async fn accept(conn: &mut AnyConnection, a: &Acceptance, now_ms: i64) -> Result<bool, StoreError> {
    let won = sqlx::query(
        "UPDATE totp_secrets SET last_used_step = $2, last_used_at = $3 \
         WHERE factor_id = $1 AND (last_used_step IS NULL OR last_used_step < $2)",
    )
    .bind(&a.factor_id)
    .bind(i64::try_from(a.step).unwrap_or(i64::MAX))
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if won {
        audit::insert(conn, &a.audit).await?;
    }
    Ok(won)
}

async fn apply(conn: &mut AnyConnection, op: &Op) -> Result<Done, StoreError> {
    Ok(match op {
        Op::Gate { subject, kind, now_ms } => Done::Gate(attempts::gate(conn, subject, kind, *now_ms).await?),
        Op::GateAccept { subject, kind, now_ms, policy, accept: acceptance } => {
            let reserved = attempts::gate(conn, subject, kind, *now_ms).await?;
            let admitted = reserved.is_some_and(|n| attempts::admits(policy, n));
            match acceptance {
                Some(a) if admitted => Done::GateAccept(reserved, Some(accept(conn, a, *now_ms).await?)),
                _ => Done::GateAccept(reserved, None),
            }
        }
        Op::Audit(ev) => {
            audit::insert(conn, ev).await?;
            Done::Audit
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::{Store, StoreOptions};
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

    fn job(op: Op) -> (Job, oneshot::Receiver<Result<Done, String>>) {
        let (reply, rx) = oneshot::channel();
        (Job { op, reply }, rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_commits_in_order_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        let gate = || Op::Gate { subject: "s".into(), kind: attempts::SECOND_FACTOR, now_ms: 0 };

        // In order: three gates in one batch see each other's increments.
        let jobs: Vec<_> = (0..3).map(|_| job(gate()).0).collect();
        let done = execute(&store.writer, &jobs).await.unwrap();
        assert_eq!(done, [Done::Gate(Some(1)), Done::Gate(Some(2)), Done::Gate(Some(3))]);

        // Not at all: a failing write rolls back the gate before it in the same batch.
        sqlx::query("ALTER TABLE audit_events RENAME TO audit_moved").execute(&store.writer).await.unwrap();
        let jobs = vec![job(gate()).0, job(Op::Audit(event("s"))).0];
        assert!(execute(&store.writer, &jobs).await.is_err());
        sqlx::query("ALTER TABLE audit_moved RENAME TO audit_events").execute(&store.writer).await.unwrap();
        let jobs = vec![job(gate()).0];
        assert_eq!(
            execute(&store.writer, &jobs).await.unwrap(),
            [Done::Gate(Some(4))],
            "the failed batch left nothing"
        );

        // Through the task: many concurrent writers, each answered once its batch committed.
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.append_audit(&event(&format!("c{}", i % 7))).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events").fetch_one(&store.pool).await.unwrap();
        assert_eq!(n, 200);
    }
}
