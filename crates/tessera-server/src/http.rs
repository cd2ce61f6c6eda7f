//! The HTTP endpoints that are not pages: `/healthz` (process up) and `/readyz` (database
//! reachable) on both HTTP listeners, and `/metrics` (Prometheus text) only on the admin
//! listener, which should stay off the public network (it names internals and costs a render).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tessera_app::App;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide Prometheus recorder (once; later calls reuse it).
pub(crate) fn metrics_handle() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let b = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
                )
                .ok()?;
            match b.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// `/healthz` and `/readyz`, merged with the pages on the public listener.
pub(crate) fn health(app: App) -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(readyz)).with_state(app)
}

/// The admin listener: `/metrics`, `/healthz`, `/readyz`.
pub(crate) fn admin(app: App) -> Router {
    let _ = metrics_handle();
    Router::new().route("/metrics", get(metrics)).with_state(app.clone()).merge(health(app))
}

async fn readyz(State(app): State<App>) -> impl IntoResponse {
    match app.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n".to_owned())
        }
    }
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let (size, idle) = app.store().pool_stats();
    metrics::gauge!("tessera_db_pool_connections", "state" => "open").set(f64::from(size));
    metrics::gauge!("tessera_db_pool_connections", "state" => "idle").set(idle as f64);
    match metrics_handle() {
        Some(h) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()),
        None => {
            (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/plain")], "no metrics recorder\n".into())
        }
    }
}
