//! Run each gRPC call to its end on its own task. tonic drops a handler's future when the
//! client cancels or its deadline passes; a use case dropped between two of its writes (a
//! failure counted, its audit row and notice not yet written) would leave half a change. On
//! its own task the use case finishes whatever the client does; only the answer is lost.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The layer: wraps a service so that each call's future is spawned.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RunToEndLayer;

impl<S> tower::Layer<S> for RunToEndLayer {
    type Service = RunToEnd<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RunToEnd(inner)
    }
}

/// See [`RunToEndLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RunToEnd<S>(S);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, R> tower::Service<R> for RunToEnd<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let task = tokio::spawn(self.0.call(req));
        Box::pin(async move {
            match task.await {
                Ok(r) => r.map_err(Into::into),
                Err(e) => {
                    tracing::error!(error = %e, "gRPC handler failed");
                    Err(Box::new(e) as BoxError)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::{Arc, Mutex};
    use tower::{Layer, Service, ServiceExt};

    /// A call whose caller drops it (a cancel, a deadline) still runs to its end.
    #[tokio::test]
    async fn a_dropped_call_still_finishes() {
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let slots = Arc::new(Mutex::new(Some((go_rx, done_tx))));
        let inner = tower::service_fn(move |_: ()| {
            let (go, done) = slots.lock().unwrap().take().expect("called once");
            async move {
                // The use case's first write is behind us; the second waits for `go`.
                let _ = go.await;
                let _ = done.send(());
                Ok::<_, std::convert::Infallible>(())
            }
        });
        let mut svc = RunToEndLayer.layer(inner);
        let call = svc.ready().await.unwrap().call(());
        drop(call);
        go_tx.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), done_rx)
            .await
            .expect("the dropped call was cancelled half way")
            .unwrap();
    }

    /// The request id reaches the handler through the edge layers and the spawn, for the
    /// message of an internal error: the caller's when well formed, else a fresh UUID.
    #[tokio::test]
    async fn the_request_id_reaches_the_handler() {
        let handler = tower::service_fn(|_: http::Request<tonic::body::Body>| async {
            let seen = tessera_grpc::edge::current_request_id();
            Ok::<_, std::convert::Infallible>(
                http::Response::builder().header("seen", seen).body(String::new()).unwrap(),
            )
        });
        let mut svc =
            tower::ServiceBuilder::new().layer(RunToEndLayer).layer(tessera_grpc::edge::layer()).service(handler);
        let mut call = async |id: Option<&str>| {
            let mut b = http::Request::builder().uri("/tessera.v1.FactorService/ListFactors");
            if let Some(id) = id {
                b = b.header("x-request-id", id);
            }
            let req = b.body(tonic::body::Body::empty()).unwrap();
            let resp = svc.ready().await.unwrap().call(req).await.unwrap();
            let header = |name: &str| resp.headers()[name].to_str().unwrap().to_owned();
            (header("seen"), header("x-request-id"))
        };
        assert_eq!(call(Some("abc-1")).await, ("abc-1".to_owned(), "abc-1".to_owned()));
        let (seen, echoed) = call(Some("no spaces please")).await;
        assert_eq!(seen, echoed);
        assert_eq!(seen.len(), 36, "a UUID: {seen}");
        assert_eq!(tessera_grpc::edge::current_request_id(), "", "outside a call");
    }
}
