//! The HTTP listeners' accept loop (the pages and the admin endpoints), in place of
//! `axum::serve`, which neither times out a client that never finishes its request headers nor
//! caps the number of open connections.
//!
//! - A connection takes a permit of a semaphore *before* it is accepted and holds it for its
//!   life: at the cap, new connections wait in the kernel's backlog instead of taking memory
//!   and a task each.
//! - Each connection is HTTP/1 (hyper) with a header-read timeout: a request whose headers are
//!   not complete within it — including the next request on an idle keep-alive connection — has
//!   its connection closed, so a slow client cannot hold a permit for long.
//! - Every request carries `ConnectInfo<SocketAddr>` (the socket's peer), as axum's
//!   `into_make_service_with_connect_info` would give it.
//! - On shutdown the listener is closed at once; requests in flight finish, idle connections
//!   close, and `serve` returns when every connection has ended.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Limits of one HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Open connections at most; more wait to be accepted until one closes.
    pub max_connections: usize,
    /// A connection whose request headers are not complete within this is closed.
    pub header_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { max_connections: 1024, header_read_timeout: Duration::from_secs(10) }
    }
}

/// Serve `router` on `listener` within `limits` until `shutdown` resolves, then drain (see the
/// module doc).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    'accept: loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break 'accept, // never closed
            },
            () = &mut shutdown => break 'accept,
        };
        let (stream, peer) = loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok(accepted) => break accepted,
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = &mut shutdown => break 'accept,
                        }
                    }
                },
                () = &mut shutdown => break 'accept,
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req)
        });
        let conn = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;
    use axum::routing::get;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Start `serve` on 127.0.0.1:0; returns the address, the stop switch and the task.
    async fn start(router: Router) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router, HttpLimits::default(), async {
            let _ = rx.await;
        }));
        (addr, tx, task)
    }

    #[tokio::test]
    async fn requests_carry_the_peer_address() {
        let router = Router::new()
            .route("/peer", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }));
        let (addr, stop, task) = start(router).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let local = s.local_addr().unwrap();
        s.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with(&local.to_string()), "{out}");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    /// Shutdown stops accepting at once and lets the request in flight finish.
    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish() {
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let entered = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
        let release = Arc::new(tokio::sync::Notify::new());
        let r = release.clone();
        let router = Router::new().route(
            "/slow",
            get(move || async move {
                if let Some(tx) = entered.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                r.notified().await;
                "done"
            }),
        );
        let (addr, stop, task) = start(router).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        entered_rx.await.unwrap();
        stop.send(()).unwrap();
        // The listener closes: a new connection is refused (poll until the loop has seen it).
        let mut refused = false;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "still accepting after shutdown");
        assert!(!task.is_finished(), "serve waits for the request in flight");
        release.notify_one();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("done"), "{out}");
        task.await.unwrap();
    }
}
