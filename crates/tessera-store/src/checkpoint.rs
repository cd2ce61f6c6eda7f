//! WAL checkpoints for SQLite, off the writers' path.
//!
//! SQLite's default is that the connection whose commit takes the WAL past 1,000 pages copies
//! the WAL back into the database file there and then, inside that commit. Under load that is
//! the write batch (see `batch`), so every request queued behind it waited for the copy: at
//! 5,000 verifications/s it made p99 five times p50. Here the writers never checkpoint
//! (`wal_autocheckpoint = 0` on every connection of the store); this thread does, on its own
//! connection:
//! - every [`EVERY`] (250 ms), a PASSIVE checkpoint: it copies what it can without waiting for, or
//!   blocking, any reader or writer (writers go on appending to the WAL meanwhile);
//! - when the WAL holds [`RESTART_FRAMES`] or more, it takes the store's write turn (so no
//!   writer of this store is mid-transaction) and runs a RESTART checkpoint, which copies the
//!   few frames written since the PASSIVE pass and makes the next writer start the WAL from
//!   its beginning. Without it the WAL would grow for as long as writes never pause (they
//!   are seldom all copied at the instant a transaction begins). At 10,000 verifications/s
//!   the WAL grows by about 150 MB/s, so that is a restart every half second or so, each
//!   holding the turn for a few milliseconds.
//! - when a tick finds the WAL fully copied and not grown since the tick before (the writers
//!   are quiet), it takes the turn and runs a TRUNCATE checkpoint, which empties the WAL file:
//!   the file on disk is at most about [`RESTART_FRAMES`] pages while writes go on, and zero
//!   bytes a tick or two after they pause. (A restart keeps the file's size, and
//!   `journal_size_limit` would trim it inside some writer's commit, under load: both measured
//!   before, see [`WAL_SIZE_LIMIT`]; the truncation here runs when nobody is writing.)
//!
//! Reads stay fast however long the WAL: a reader looks up only frames after the last
//! checkpointed one. A failed pass is logged and retried on the next tick. The thread ends
//! with the writer thread (`Store::close`, or the store dropped); the last connection to close
//! checkpoints everything and deletes the WAL.

use crate::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How often the PASSIVE pass runs. Each pass fsyncs the WAL written since the last one,
/// and the writer's appends slow down meanwhile: against 1 s, 250 ms halved p99.9 and the
/// worst stall at 64 clients (29–33 ms against 50–52) and halved p99 at 5,000/s offered.
pub(crate) const EVERY: Duration = Duration::from_millis(250);
/// WAL size (pages) past which a RESTART pass follows: 64 MiB of 4 KiB pages. (256 MiB before:
/// in alternating runs 64 MiB changed neither verify throughput nor p99 measurably, and the WAL
/// file under enrolment load peaked at 139 MB instead of 344 MB.)
pub(crate) const RESTART_FRAMES: i64 = 16_384;
/// `journal_size_limit`: none. Trimming the WAL file after a restart made the writer's next
/// commit truncate hundreds of megabytes in place (a 70–100 ms stall under load); the file
/// keeps the size it reached (about `RESTART_FRAMES` pages) and is reused from its start.
pub(crate) const WAL_SIZE_LIMIT: i64 = -1;

/// The checkpoint thread (owned by the writer thread, which stops it when it stops).
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Open the checkpointer's connection to the file at `path` and start its thread.
    pub(crate) fn spawn(path: &Path, turn: Arc<Mutex<()>>) -> Result<Self, StoreError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .and_then(|c| {
                    // A RESTART waits for readers of older snapshots (microseconds) while holding
                    // the write turn: never long. If it would be, the pass gives up and retries.
                    c.busy_timeout(Duration::from_millis(100))?;
                    Ok(c)
                })
                .map_err(|e| StoreError::Config(format!("opening the SQLite checkpointer: {e}")))?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tessera-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &stopped, &turn))
            .map_err(|e| StoreError::Config(format!("starting the SQLite checkpoint thread: {e}")))?;
        Ok(Self { stop, thread })
    }

    /// Stop the thread and wait until it has closed its connection.
    pub(crate) fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("the SQLite checkpoint thread panicked");
        }
    }
}

fn run(conn: &Connection, stopped: &Receiver<()>, turn: &Mutex<()>) {
    let mut last = Pages::default();
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        if let Err(e) = pass(conn, turn, RESTART_FRAMES, &mut last) {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
        }
    }
}

/// The WAL as the previous tick left it: frames in it, and how many were copied back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pages {
    wal: i64,
    copied: i64,
}

/// What a tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// A PASSIVE checkpoint only.
    Passive,
    /// The WAL was long: restarted (the next writer starts it from its beginning).
    Restarted,
    /// The writers were quiet: the WAL file was emptied.
    Truncated,
    /// A RESTART or TRUNCATE met a reader it could not wait for; the next tick tries again.
    Busy,
}

/// `PRAGMA wal_checkpoint(mode)`: (busy, pages in the WAL, pages copied).
pub(crate) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

/// One tick: a PASSIVE pass; then, if the WAL holds `restart_frames` or more, a RESTART
/// under the write turn, or, if it is all copied and has not grown since the tick before
/// (`last`), a TRUNCATE under the turn. The time under the turn is what every queued write
/// waits, and before a restart it is mostly the fsync of the WAL pages written since the last
/// pass: so, first, more PASSIVE passes (at most four) while each is still slow, each covering
/// what was written during the one before.
pub(crate) fn pass(
    conn: &Connection,
    turn: &Mutex<()>,
    restart_frames: i64,
    last: &mut Pages,
) -> rusqlite::Result<Pass> {
    let (_, wal, copied) = checkpoint(conn, "PASSIVE")?;
    let now = Pages { wal, copied };
    let quiet = wal > 0 && copied == wal && now == *last;
    *last = now;
    if quiet {
        let _turn = turn.blocking_lock();
        let (busy, ..) = checkpoint(conn, "TRUNCATE")?;
        *last = Pages::default();
        return Ok(if busy == 0 { Pass::Truncated } else { Pass::Busy });
    }
    if wal < restart_frames {
        return Ok(Pass::Passive);
    }
    for _ in 0..4 {
        let t = Instant::now();
        checkpoint(conn, "PASSIVE")?;
        if t.elapsed() < Duration::from_millis(2) {
            break;
        }
    }
    let t = Instant::now();
    let _turn = turn.blocking_lock();
    let (busy, pages, copied) = checkpoint(conn, "RESTART")?;
    tracing::debug!(busy, pages, copied, micros = t.elapsed().as_micros(), "WAL checkpoint (restart)");
    Ok(if busy == 0 { Pass::Restarted } else { Pass::Busy })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_never_checkpoint_and_a_long_wal_restarts() {
        let (_dir, path, store) = crate::temp_sqlite().await;
        // Every connection of the store leaves checkpoints to the thread.
        let auto: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(&store.pool).await.unwrap();
        assert_eq!(auto, 0);

        // Writes through the batch and the writer pool grow the WAL, and nothing copies it back.
        for i in 0..50 {
            store
                .gate_attempt(
                    &format!("s{i}"),
                    crate::SECOND_FACTOR,
                    time::OffsetDateTime::UNIX_EPOCH,
                    &Default::default(),
                )
                .await
                .unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        let wal_pages = || checkpoint(&conn, "PASSIVE").unwrap().1;
        assert!(wal_pages() >= 50, "each batch appended to the WAL");

        // Under the threshold: a PASSIVE pass only; over it, a restart: the next write starts
        // the WAL again from its beginning.
        let turn = &Mutex::new(());
        let before = wal_pages();
        // (`pass` blocks on the turn: off the runtime's threads, as in production.)
        let off_runtime = |limit, last: &mut Pages| {
            let c = Connection::open(&path).unwrap();
            std::thread::scope(|s| s.spawn(move || pass(&c, turn, limit, last).unwrap()).join().unwrap())
        };
        let mut last = Pages::default();
        assert_eq!(off_runtime(before + 1, &mut last), Pass::Passive);
        assert_eq!(off_runtime(1, &mut Pages::default()), Pass::Restarted);
        store
            .gate_attempt("after", crate::SECOND_FACTOR, time::OffsetDateTime::UNIX_EPOCH, &Default::default())
            .await
            .unwrap();
        let after = wal_pages();
        assert!(after < before / 4, "the WAL restarted: {after} pages after, {before} before");

        // A pass cannot restart while a writer holds the turn: it waits for it.
        let held = std::sync::Arc::new(Mutex::new(()));
        let guard = held.clone().lock_owned().await;
        let (c, h) = (Connection::open(&path).unwrap(), held.clone());
        let t = std::thread::spawn(move || pass(&c, &h, 1, &mut Pages::default()).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "the restart waits for the write turn");
        drop(guard);
        assert_eq!(t.join().unwrap(), Pass::Restarted);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_wal_is_emptied_on_disk() {
        let (dir, path, store) = crate::temp_sqlite().await;
        let wal = dir.path().join("t.db-wal");
        let write = |i: usize| {
            let s = store.clone();
            async move {
                s.gate_attempt(
                    &format!("s{i}"),
                    crate::SECOND_FACTOR,
                    time::OffsetDateTime::UNIX_EPOCH,
                    &Default::default(),
                )
                .await
                .unwrap();
            }
        };
        for i in 0..50 {
            write(i).await;
        }
        // (The store's own checkpoint thread runs too, every 250 ms: the assertions below hold
        // whichever of the two empties the file.)
        let len = || std::fs::metadata(&wal).unwrap().len();
        let turn = &Mutex::new(());
        let mut last = Pages::default();
        let tick = |last: &mut Pages| {
            let c = Connection::open(&path).unwrap();
            std::thread::scope(|s| s.spawn(move || pass(&c, turn, i64::MAX, last).unwrap()).join().unwrap())
        };
        // Writes between two ticks: not quiet, the file stays.
        assert_eq!(tick(&mut last), Pass::Passive);
        write(100).await;
        assert_eq!(tick(&mut last), Pass::Passive);
        assert!(len() > 0);
        // No write since the tick before, and all copied: the WAL file is emptied...
        let t = tick(&mut last);
        assert!(t == Pass::Truncated || len() == 0, "{t:?}");
        assert_eq!(len(), 0, "the WAL file is empty on disk");
        // ...and the store goes on writing (and reading what it wrote) as before.
        write(200).await;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts").fetch_one(&store.pool).await.unwrap();
        assert_eq!(n, 52);
        assert!(len() > 0);
        assert_eq!(tick(&mut last), Pass::Passive, "a fresh write is not quiet yet");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_the_store_checkpoints_and_removes_the_wal() {
        let (dir, path, store) = crate::temp_sqlite().await;
        store
            .gate_attempt("s", crate::SECOND_FACTOR, time::OffsetDateTime::UNIX_EPOCH, &Default::default())
            .await
            .unwrap();
        let wal = dir.path().join("t.db-wal");
        assert!(wal.exists());
        store.close().await;
        assert!(!wal.exists(), "the last connection checkpointed and removed the WAL");
        let later =
            store.gate_attempt("s", crate::SECOND_FACTOR, time::OffsetDateTime::UNIX_EPOCH, &Default::default()).await;
        assert!(later.is_err(), "a write after close fails");
        // Nothing was lost: the write before close is in the database file.
        let conn = Connection::open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT consecutive_failures FROM attempts WHERE subject_id = 's'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
