//! `/metrics` (Prometheus), `/healthz` (the process runs) and `/readyz` (every group started,
//! not draining).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

/// What the HTTP handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Groups started so far.
    pub started: Arc<AtomicUsize>,
    /// Groups configured.
    pub groups: usize,
    /// Set on SIGTERM.
    pub draining: Arc<AtomicBool>,
}

/// Serves until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| async move { s.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    let started = s.started.load(Ordering::Relaxed);
    if s.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
    } else if started < s.groups {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{started} of {} groups started\n", s.groups),
        )
    } else {
        (StatusCode::OK, "ready\n".into())
    }
}

/// Registers the help text of every metric this program exports.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "fedplane_vipd_state",
        "VRRP state per group: 0 initialize, 1 backup, 2 master, 3 fault"
    );
    describe_counter!(
        "fedplane_vipd_transitions_total",
        "State changes per group, by new state"
    );
    describe_counter!("fedplane_vipd_adverts_sent_total", "VRRP adverts sent");
    describe_counter!(
        "fedplane_vipd_adverts_received_total",
        "VRRP adverts received and accepted"
    );
    describe_counter!(
        "fedplane_vipd_adverts_dropped_total",
        "VRRP packets dropped, by reason"
    );
    describe_counter!(
        "fedplane_vipd_announcements_sent_total",
        "Gratuitous ARP / unsolicited NA frames sent"
    );
    describe_gauge!(
        "fedplane_vipd_addresses_held",
        "Virtual addresses this node holds per group"
    );
}
