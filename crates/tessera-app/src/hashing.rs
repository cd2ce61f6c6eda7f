//! The password hashing threads: one per core, each with its own argon2 workspace (19 MiB,
//! allocated by its first hash and reused), fed in arrival order from one queue.
//!
//! Argon2id is CPU-bound and memory-hard: run on tokio's blocking pool, each of its many
//! threads would allocate and free 19 MiB per hash and the allocator would keep every thread's
//! freed memory (measured: 12 MB idle, 541 MB after a burst of logins, 522 MB once idle again).
//! Here the memory is at most one workspace per thread, and the threads, never more than the
//! cores, also bound how many hashes run at once (the rest wait in the queue, not on a core).

use crate::AppError;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use tessera_core::password::Workspace;

/// A hash to run, unless its caller has gone (`None` from the check: skip it).
struct Job {
    abandoned: Box<dyn Fn() -> bool + Send>,
    run: Box<dyn FnOnce(&mut Workspace) + Send>,
}

/// Hashes that may wait for a thread: beyond, a caller is told the service is busy (a flood of
/// logins must not queue minutes of argon2 ahead of the next real one).
const QUEUE: usize = 256;

/// The handle to the hashing threads; they stop when every handle is dropped.
#[derive(Clone)]
pub(crate) struct Hashers {
    tx: SyncSender<Job>,
    /// Whether any thread started (if none could, hashes run on tokio's blocking pool).
    started: bool,
}

impl Hashers {
    /// Start `threads` hashing threads.
    pub(crate) fn new(threads: usize) -> Self {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = false;
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            match std::thread::Builder::new().name(format!("tessera-argon2-{i}")).spawn(move || work(&rx)) {
                Ok(_) => started = true,
                Err(e) => tracing::error!(error = %e, "could not start a password hashing thread"),
            }
        }
        Self { tx, started }
    }

    /// Run `f` on a hashing thread with its workspace; returns its result.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Workspace) -> T + Send + 'static,
    {
        let stopped = || AppError::FailedPrecondition("password hashing has stopped".into());
        if !self.started {
            return tokio::task::spawn_blocking(move || f(&mut Workspace::new())).await.map_err(|_| stopped());
        }
        let (reply, rx) = tokio::sync::oneshot::channel::<T>();
        // The sender, shared: the thread asks it whether the caller still waits, then sends.
        let watch = Arc::new(Mutex::new(Some(reply)));
        let watched = watch.clone();
        let job = Job {
            // A caller that has gone (a closed connection) is not worth 19 MiB and 50 ms.
            abandoned: Box::new(move || watched.lock().map_or(true, |r| r.as_ref().is_none_or(|s| s.is_closed()))),
            run: Box::new(move |ws: &mut Workspace| {
                let out = f(ws);
                if let Some(s) = watch.lock().ok().and_then(|mut r| r.take()) {
                    let _ = s.send(out);
                }
            }),
        };
        match self.tx.try_send(job) {
            Ok(()) => rx.await.map_err(|_| stopped()),
            Err(TrySendError::Full(_)) => {
                Err(AppError::Store(tessera_store::StoreError::Busy("too many password checks waiting".into())))
            }
            Err(TrySendError::Disconnected(_)) => Err(stopped()),
        }
    }
}

/// A hashing thread: take the next job, run it in this thread's workspace; stop when the queue
/// is closed.
fn work(rx: &Mutex<Receiver<Job>>) {
    let mut ws = Workspace::new();
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if (job.abandoned)() {
            continue;
        }
        // A panic (a bug) answers its caller with an error (the reply is dropped) and this
        // thread goes on, with a fresh workspace.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.run)(&mut ws))).is_err() {
            tracing::error!("a password hash panicked");
            ws = Workspace::new();
        }
    }
}

impl std::fmt::Debug for Hashers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashers").field("started", &self.started).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The queue is bounded (beyond it: busy, at once), a hash whose caller has gone is skipped,
    /// and a panicking hash fails its caller only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_is_bounded_and_skips_callers_that_left() {
        use std::time::Duration;
        // Polls a caller once: enough to queue its hash (the queueing is synchronous).
        async fn queue<F: std::future::Future + Unpin>(f: &mut F) {
            assert!(tokio::time::timeout(Duration::ZERO, f).await.is_err(), "answered at once");
        }
        let h = Hashers::new(1);
        // Hold the one thread, and wait until it holds.
        let (started, running) = std::sync::mpsc::channel::<()>();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let mut blocker = Box::pin(h.run(move |_| {
            let _ = started.send(());
            held.recv().is_ok()
        }));
        queue(&mut blocker).await;
        tokio::task::spawn_blocking(move || running.recv().unwrap()).await.unwrap();
        // A caller that gives up after queueing: its hash never runs.
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        queue(&mut Box::pin(h.run(move |_| r.fetch_add(1, Ordering::SeqCst)))).await;
        // Fill the queue (one place is taken by the caller that left).
        let mut waiting = Vec::new();
        for _ in 0..QUEUE - 1 {
            let mut f = Box::pin(h.run(|_| 1));
            queue(&mut f).await;
            waiting.push(f);
        }
        let busy = h.run(|_| 1).await;
        assert!(matches!(busy, Err(AppError::Store(tessera_store::StoreError::Busy(_)))), "{busy:?}");
        // Let the thread go: every queued caller is answered; the one that left was skipped.
        release.send(()).unwrap();
        assert!(blocker.await.unwrap());
        for f in waiting {
            assert_eq!(f.await.unwrap(), 1);
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the abandoned hash did not run");
        // A panic answers its caller with an error; the thread goes on.
        assert!(h.run(|_| -> u8 { panic!("a bug") }).await.is_err());
        assert_eq!(h.run(|_| 7).await.unwrap(), 7);
    }
}
