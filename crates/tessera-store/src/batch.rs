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
//! This module knows no statement: a job is a closure over the connection that returns its
//! caller's own type ([`Batcher::run`]), so each reply is typed and the statements stay with
//! the modules they belong to (`attempts`, `audit`, `verify`), built from `sql`.
//!
//! The store's other writes (sqlx's one-connection writer pool) and this thread take turns
//! through one fair async mutex, the store's write turn, so no writer ever waits in SQLite's
//! busy handler; the WAL is checkpointed by another thread (see `checkpoint`).
//!
//! Invariants: a batch commits or rolls back as a whole; an SQL error in one job fails every
//! job of its batch (each caller gets the error, nothing of the batch is kept), so no caller
//! is ever told "done" for a write that was rolled back. A job's own failure before it wrote
//! anything (its check, a corrupt row: `Ok(Err(_))`) answers that job only. Each job is
//! written so that, on its own, it is all-or-nothing without a savepoint (a verification runs
//! the replay guard before its other writes and does nothing more when the guard refuses).

use crate::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most writes in one transaction.
const MAX_BATCH: usize = 128;

/// What a job's work returns: `Err` is an SQL error (the whole batch rolls back), `Ok(Err(_))`
/// the job's own failure before it wrote anything (that job's caller only).
pub(crate) type Outcome<T> = rusqlite::Result<Result<T, StoreError>>;

/// A job of a batch, whatever its reply's type.
trait Job: Send {
    /// Run the work inside the batch's transaction, keeping its result for the reply.
    fn run(&mut self, conn: &mut Connection) -> rusqlite::Result<()>;
    /// Answer the caller: the work's result if the batch committed (`Ok`), else the batch's
    /// error.
    fn answer(self: Box<Self>, batch: Result<(), &str>);
}

/// A job whose caller waits for a `T`.
struct Typed<T, W> {
    work: Option<W>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, W> Job for Typed<T, W>
where
    T: Send,
    W: FnOnce(&mut Connection) -> Outcome<T> + Send,
{
    fn run(&mut self, conn: &mut Connection) -> rusqlite::Result<()> {
        if let Some(work) = self.work.take() {
            self.result = Some(work(conn)?);
        }
        Ok(())
    }

    fn answer(self: Box<Self>, batch: Result<(), &str>) {
        let reply = match batch {
            Ok(()) => self.result.unwrap_or_else(|| Err(StoreError::Batch("the write did not run".into()))),
            Err(e) => Err(StoreError::Batch(e.to_owned())),
        };
        let _ = self.reply.send(reply);
    }
}

/// What the writer thread receives.
enum Msg {
    Job(Box<dyn Job>),
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
pub(crate) fn open(path: &Path) -> rusqlite::Result<Connection> {
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

    /// Run `work` in the next batch (on the writer thread, inside its transaction); returns its
    /// result once that batch has committed. It must be quick (microseconds) and never wait.
    pub(crate) async fn run<T, W>(&self, work: W) -> Result<T, StoreError>
    where
        T: Send + 'static,
        W: FnOnce(&mut Connection) -> Outcome<T> + Send + 'static,
    {
        if ON_WRITER.with(std::cell::Cell::get) {
            // A job (a factor change's closure) must not queue another: it would commit
            // whatever became of the job, and wait for a batch that cannot start.
            return Err(StoreError::Batch("a write queued from inside the writer thread".into()));
        }
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Typed { work: Some(work), result: None, reply });
        self.tx.send(Msg::Job(job)).await.map_err(|_| StoreError::Batch("the writer has stopped".into()))?;
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

thread_local! {
    /// Set on the writer thread (see [`Batcher::run`]).
    static ON_WRITER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The writer loop. On a stop, the connection is closed before the stop is answered.
fn run(mut conn: Connection, mut rx: mpsc::Receiver<Msg>, turn: &Mutex<()>) {
    ON_WRITER.with(|w| w.set(true));
    let mut jobs: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
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
fn write_batch(conn: &mut Connection, jobs: &mut Vec<Box<dyn Job>>, turn: &Mutex<()>) {
    tracing::trace!(writes = jobs.len(), "write batch");
    let result = {
        let _turn = turn.blocking_lock();
        execute(conn, jobs)
    };
    let msg = result.as_ref().err().map(ToString::to_string);
    if let Some(e) = &msg {
        tracing::warn!(error = %e, writes = jobs.len(), "a batch of writes failed and was rolled back");
    }
    for job in jobs.drain(..) {
        job.answer(msg.as_deref().map_or(Ok(()), Err));
    }
}

/// Run the jobs in one transaction. An SQL error rolls back the batch (`Err`); a job's own
/// failure is kept for its reply. (The transaction is begun and ended by hand, so each job gets
/// the connection itself: `&mut Connection` is `Send`, which a job's steps may need.)
fn execute(conn: &mut Connection, jobs: &mut [Box<dyn Job>]) -> Result<(), String> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
    let mut run = || {
        for j in jobs.iter_mut() {
            // A job that panics (a bug) fails its batch, not the writer thread.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| j.run(conn))) {
                Ok(r) => r.map_err(|e| e.to_string())?,
                Err(_) => return Err("a write panicked".to_owned()),
            }
            // An error SQLite answers by rolling back the whole transaction (a full disk, an
            // I/O error) must fail the batch: the jobs before it were lost.
            if conn.is_autocommit() {
                return Err("SQLite rolled the batch's transaction back".to_owned());
            }
        }
        conn.execute_batch("COMMIT").map_err(|e| e.to_string())
    };
    let r = run();
    if r.is_err() && !conn.is_autocommit() {
        // (Also undoes a savepoint a panicking job left open.)
        let _ = conn.execute_batch("ROLLBACK");
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::sql::NewAuditEvent;
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

    type Rx<T> = oneshot::Receiver<Result<T, StoreError>>;

    fn job<T, W>(work: W) -> (Box<dyn Job>, Rx<T>)
    where
        T: Send + 'static,
        W: FnOnce(&mut Connection) -> Outcome<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        (Box::new(Typed { work: Some(work), result: None, reply }), rx)
    }

    fn gate(conn: &mut Connection) -> Outcome<Option<i64>> {
        crate::attempts::gate_sqlite(conn, "s", crate::SECOND_FACTOR, 0, 5).map(Ok)
    }

    /// Run `jobs` as one batch and answer them as the writer thread does.
    fn batch(conn: &mut Connection, mut jobs: Vec<Box<dyn Job>>) -> bool {
        let r = execute(conn, &mut jobs);
        let msg = r.as_ref().err().map(ToString::to_string);
        for j in jobs {
            j.answer(msg.as_deref().map_or(Ok(()), Err));
        }
        r.is_ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_commits_in_order_or_not_at_all() {
        let (_dir, path, store) = crate::temp_sqlite().await;
        let mut conn = open(&path).unwrap();

        // In order: three gates in one batch see each other's increments.
        let (jobs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| job(gate)).unzip();
        assert!(batch(&mut conn, jobs));
        let got: Vec<_> = rxs.into_iter().map(|mut r| r.try_recv().unwrap().unwrap()).collect();
        assert_eq!(got, [Some(1), Some(2), Some(3)]);

        // Not at all: a failing write rolls back the gate before it in the same batch, and
        // both callers are told.
        conn.execute_batch("ALTER TABLE audit_events RENAME TO audit_moved").unwrap();
        let (g, mut g_rx) = job(gate);
        let (a, mut a_rx) = job(|c: &mut Connection| crate::audit::insert_sqlite(c, &event("s")).map(Ok));
        assert!(!batch(&mut conn, vec![g, a]));
        assert!(matches!(g_rx.try_recv().unwrap(), Err(StoreError::Batch(_))));
        assert!(matches!(a_rx.try_recv().unwrap(), Err(StoreError::Batch(_))));
        conn.execute_batch("ALTER TABLE audit_moved RENAME TO audit_events").unwrap();

        // A job's own failure answers that job only; the batch commits.
        let (f, mut f_rx) = job(|_: &mut Connection| Ok(Err::<(), _>(StoreError::Corrupt("no key".into()))));
        let (g, mut g_rx) = job(gate);
        assert!(batch(&mut conn, vec![f, g]));
        assert!(matches!(f_rx.try_recv().unwrap(), Err(StoreError::Corrupt(m)) if m == "no key"));
        assert_eq!(g_rx.try_recv().unwrap().unwrap(), Some(4), "the failed batch left nothing");

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
