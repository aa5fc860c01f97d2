//! The admin endpoints: `/metrics` (Prometheus text 0.0.4 or OpenMetrics, negotiated), `/healthz` (the process is serving),
//! `/readyz` (caches synced — or, on a standby replica, taking part in leader election —
//! and not shutting down).

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Readiness of every class this process serves, and whether it is shutting down.
#[derive(Default)]
pub struct Health {
    ready: Mutex<BTreeMap<String, bool>>,
    pub shutting_down: AtomicBool,
}

impl Health {
    /// Marks one class ready (caches synced, or a standby taking part in leader election).
    pub fn set_ready(&self, class: &str, ready: bool) {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(class.into(), ready);
    }

    /// Ready once every class is.
    pub fn is_ready(&self) -> bool {
        let r = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        !r.is_empty() && r.values().all(|v| *v)
    }
}

struct AdminState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Refreshes the queue-depth gauges before each scrape.
    queue_depth: Box<dyn Fn() + Send + Sync>,
}

/// The Prometheus text format 0.0.4 or OpenMetrics, as the scraper's `Accept` asks.
async fn metrics(
    State(s): State<Arc<AdminState>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    (s.queue_depth)();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = berth_api::exposition::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        berth_api::exposition::render(&s.metrics.encode(), format),
    )
}

async fn healthz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    if s.health.shutting_down.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    if s.health.shutting_down.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if s.health.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n")
    }
}

/// Serves the admin endpoints until `shutdown` resolves. Returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    metrics_: Arc<Metrics>,
    health: Arc<Health>,
    queue_depth: Box<dyn Fn() + Send + Sync>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    let state = Arc::new(AdminState {
        metrics: metrics_,
        health,
        queue_depth,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("Cannot listen on {listen} for metrics: {e}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        // /metrics answers are small: no Nagle delay behind a scrape's delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    });
    Ok(addr)
}
