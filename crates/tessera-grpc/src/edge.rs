//! The gRPC edge: the tower layers around every service, assembled once ([`layer`]) and
//! installed by `tessera-server`. Handlers see none of it.
//!
//! - **Request id** (tower-http `SetRequestId` and `PropagateRequestId`): the caller's
//!   `x-request-id` when it is well formed (1 to 64 of `[A-Za-z0-9-]`), else a new UUID; echoed
//!   in the response metadata, errors included (but `DEADLINE_EXCEEDED` from tonic's own
//!   `grpc-timeout` handling, which runs outside these layers; the metrics then record the
//!   handler's own code, since the call runs to its end). A malformed id is dropped first, so a
//!   caller cannot write arbitrary bytes into our logs.
//! - **Trace** (tower-http `TraceLayer` for gRPC): the span `rpc{method, request_id}` around
//!   the call, so every log line a handler writes carries the id; request, response and
//!   failure at DEBUG (an internal failure is logged at ERROR by [`status`](crate::status)).
//! - **Metrics**: `tessera_grpc_requests_total{method, code}` and
//!   `tessera_grpc_request_seconds{method}`. `method` is the RPC's name for the RPCs of our
//!   contract (read from its descriptor set) and `other` for any other path (health,
//!   reflection, a made-up one), so a caller cannot mint label values. Unauthenticated calls
//!   count under the method they named. The code is the response's `grpc-status`: a failing unary call answers
//!   with it in the headers; a call whose headers lack it succeeded (its trailers say `OK`).
//! - The request id is also the task-local [`current_request_id`] for the call's future, which
//!   [`status`](crate::status) names in an internal error's message.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower::util::MapRequestLayer;
use tower_http::classify::{GrpcErrorsAsFailures, SharedClassifier};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse, MakeSpan, TraceLayer,
};
use tracing::Level;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The request id of the gRPC call being served (empty outside one).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// The layers, outermost first. Install with `Server::builder().layer(edge::layer())`.
pub type EdgeLayer = Stack<
    CallLayer,
    Stack<
        TraceLayer<
            SharedClassifier<GrpcErrorsAsFailures>,
            RpcSpan,
            DefaultOnRequest,
            DefaultOnResponse,
            DefaultOnBodyChunk,
            DefaultOnEos,
            DefaultOnFailure,
        >,
        Stack<
            PropagateRequestIdLayer,
            Stack<SetRequestIdLayer<MakeRequestUuid>, Stack<MapRequestLayer<DropMalformedId>, Identity>>,
        >,
    >,
>;

/// See the module docs.
pub fn layer() -> EdgeLayer {
    ServiceBuilder::new()
        .layer(MapRequestLayer::new(drop_malformed_request_id as DropMalformedId))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_grpc()
                .make_span_with(RpcSpan)
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(CallLayer)
        .into_inner()
}

/// The type of the function that drops a malformed `x-request-id` (nameable for [`EdgeLayer`]).
pub type DropMalformedId = fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body>;

const X_REQUEST_ID: &str = "x-request-id";

/// Whether a caller's request id may be kept (and so logged and echoed).
pub fn well_formed_request_id(v: &[u8]) -> bool {
    (1..=64).contains(&v.len()) && v.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

fn drop_malformed_request_id<B>(mut req: http::Request<B>) -> http::Request<B> {
    let all = req.headers().get_all(X_REQUEST_ID);
    let mut ids = all.iter();
    let keep = matches!((ids.next(), ids.next()), (Some(v), None) if well_formed_request_id(v.as_bytes()));
    if !keep {
        req.headers_mut().remove(X_REQUEST_ID);
    }
    req
}

fn request_id_of<B>(req: &http::Request<B>) -> &str {
    req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("")
}

/// The span of one call: `rpc{method, request_id}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcSpan;

impl<B> MakeSpan<B> for RpcSpan {
    fn make_span(&mut self, req: &http::Request<B>) -> tracing::Span {
        tracing::info_span!("rpc", method = method_label(req.uri().path()), request_id = request_id_of(req))
    }
}

/// The paths of our own RPCs, read from the contract's descriptor set once.
static METHODS: std::sync::LazyLock<std::collections::HashSet<String>> = std::sync::LazyLock::new(|| {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(tessera_proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
    let mut paths = std::collections::HashSet::new();
    for file in set.file {
        for service in &file.service {
            for method in &service.method {
                paths.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
            }
        }
    }
    paths
});

/// The RPC name of a path of our own services (`/tessera.v1.FactorService/EnrollTotp` →
/// `EnrollTotp`), else `other`: the label set is closed, whatever path a caller sends
/// (a made-up method of a real service is answered by the service's interceptor first).
fn method_label(path: &str) -> &str {
    if METHODS.contains(path) { path.rsplit_once('/').map_or("other", |(_, m)| m) } else { "other" }
}

/// Metrics and the task-local request id; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallLayer;

impl<S> tower::Layer<S> for CallLayer {
    type Service = Call<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Call(inner)
    }
}

/// See [`CallLayer`].
#[derive(Debug, Clone)]
pub struct Call<S>(S);

impl<S, B, R> tower::Service<http::Request<B>> for Call<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let path = req.uri().path().to_owned();
        let id = request_id_of(&req).to_owned();
        let inner = REQUEST_ID.sync_scope(id.clone(), || self.0.call(req));
        Box::pin(REQUEST_ID.scope(id, async move {
            let result = inner.await;
            let code = match &result {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            let method = if code == tonic::Code::Unimplemented { "other" } else { method_label(&path) }.to_owned();
            metrics::histogram!("tessera_grpc_request_seconds", "method" => method.clone())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("tessera_grpc_requests_total", "method" => method, "code" => format!("{code:?}"))
                .increment(1);
            result
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn method_labels_are_a_closed_set() {
        assert_eq!(method_label("/tessera.v1.FactorService/EnrollTotp"), "EnrollTotp");
        assert_eq!(method_label("/tessera.v1.IdentityService/BeginLogin"), "BeginLogin");
        for other in ["/grpc.health.v1.Health/Check", "/", "", "/tessera.v1.X/", "/tessera.v1.X/a%20b", "/tessera.v1.X"]
        {
            assert_eq!(method_label(other), "other", "{other}");
        }
    }

    #[test]
    fn malformed_request_ids_are_dropped() {
        let with = |vals: &[&str]| {
            let mut b = http::Request::builder();
            for v in vals {
                b = b.header(X_REQUEST_ID, http::HeaderValue::from_bytes(v.as_bytes()).unwrap());
            }
            drop_malformed_request_id(b.body(()).unwrap())
        };
        assert_eq!(with(&["abc-123"]).headers()[X_REQUEST_ID], "abc-123");
        let long = "a".repeat(65);
        for bad in [&[""][..], &["a b"], &["a\tb"], &[long.as_str()], &["a", "b"], &["ünï"]] {
            assert!(with(bad).headers().get(X_REQUEST_ID).is_none(), "{bad:?}");
        }
    }
}
