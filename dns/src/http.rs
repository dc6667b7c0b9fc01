//! `/metrics` (Prometheus), `/healthz` (the process runs) and `/readyz` (records loaded, not
//! draining).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::sync::Shared;

/// What the HTTP handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The sync state and snapshot.
    pub shared: Arc<Shared>,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Set on SIGTERM: /readyz fails so load balancers stop sending before we stop answering.
    pub draining: Arc<AtomicBool>,
}

/// Serves until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

/// Binds the HTTP address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn metrics(State(s): State<HttpState>) -> String {
    if let Some(age) = s.shared.snapshot_age() {
        metrics::gauge!("fedplane_dns_snapshot_age_seconds").set(age.as_secs_f64());
    }
    s.metrics.render()
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if s.shared.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "records not loaded from etcd yet\n",
        )
    }
}

/// Registers the help text of every metric this program exports.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "fedplane_dns_responses_total",
        "DNS responses sent, by transport and rcode"
    );
    describe_counter!(
        "fedplane_dns_truncated_total",
        "UDP responses sent truncated (TC=1)"
    );
    describe_counter!(
        "fedplane_dns_dropped_total",
        "Received messages not answered, by reason"
    );
    describe_gauge!(
        "fedplane_dns_snapshot_revision",
        "etcd revision of the served snapshot"
    );
    describe_gauge!(
        "fedplane_dns_snapshot_age_seconds",
        "Seconds since the snapshot was last confirmed current with etcd"
    );
    describe_gauge!(
        "fedplane_dns_sync_state",
        "etcd sync state: 0 loading, 1 watching, 2 disconnected (serving the last snapshot)"
    );
    describe_gauge!("fedplane_dns_records", "Records in the served snapshot");
    describe_gauge!(
        "fedplane_dns_compiled_names",
        "Names whose A/AAAA answers are precompiled for the UDP fast path"
    );
    describe_counter!(
        "fedplane_dns_invalid_records_total",
        "Invalid record values seen (each value counted once)"
    );
    describe_gauge!(
        "fedplane_dns_invalid_records",
        "Keys whose current value is invalid and ignored"
    );
    describe_counter!(
        "fedplane_dns_etcd_reloads_total",
        "Full reloads from etcd after the watch fell behind compaction"
    );
    describe_counter!(
        "fedplane_dns_etcd_reconnects_total",
        "Times the etcd connection or watch failed and was retried"
    );
    describe_gauge!("fedplane_dns_tcp_connections", "Open DNS TCP connections");
}
