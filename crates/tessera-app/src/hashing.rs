//! The password hashing threads: one per core, each with its own argon2 workspace (19 MiB,
//! allocated by its first hash and reused), fed in arrival order from one queue.
//!
//! Argon2id is CPU-bound and memory-hard: run on tokio's blocking pool, each of its many
//! threads would allocate and free 19 MiB per hash and the allocator would keep every thread's
//! freed memory (measured: 12 MB idle, 541 MB after a burst of logins, 522 MB once idle again).
//! Here the memory is at most one workspace per thread, and the threads, never more than the
//! cores, also bound how many hashes run at once (the rest wait in the queue, not on a core).

use crate::AppError;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use tessera_core::password::Workspace;

type Job = Box<dyn FnOnce(&mut Workspace) + Send>;

/// The handle to the hashing threads; they stop when every handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Hashers {
    tx: Sender<Job>,
    /// Whether any thread started (if none could, hashes run on tokio's blocking pool).
    started: bool,
}

impl Hashers {
    /// Start `threads` hashing threads.
    pub(crate) fn new(threads: usize) -> Self {
        let (tx, rx) = channel::<Job>();
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
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Box::new(move |ws: &mut Workspace| {
                let _ = reply.send(f(ws));
            }))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
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
        match job {
            Ok(job) => job(&mut ws),
            Err(_) => return,
        }
    }
}
