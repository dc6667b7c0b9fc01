//! What fedplane-controller reports on its HTTP endpoints (served by `fedplane_ops::Http`):
//! readiness, and the help text of every metric.

use std::sync::Arc;

use crate::reconcile::Status;

/// Ready once the first sync is done, or while standing by for the election; not ready while
/// waiting for a cluster's first list or for etcd.
#[derive(Debug, Clone)]
pub struct ControllerProbes(pub Arc<Status>);

impl fedplane_ops::Probes for ControllerProbes {
    fn ready(&self) -> Result<(), String> {
        self.0.ready()
    }
}

/// Registers the help text of every metric this program exports.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "fedplane_controller_cluster_connected",
        "1 while the cluster is listed and watched, 0 before its first list or while unreachable"
    );
    describe_gauge!(
        "fedplane_controller_cluster_withdrawn",
        "1 once the cluster has been unreachable longer than --unreachable-grace and its records are withdrawn"
    );
    describe_gauge!(
        "fedplane_controller_ignored_objects",
        "Objects (or parts) of the cluster left out, e.g. bad labels or ingress without an IP"
    );
    describe_gauge!(
        "fedplane_controller_leader",
        "1 while this replica is the elected writer"
    );
    describe_gauge!(
        "fedplane_controller_records",
        "Records the clusters call for"
    );
    describe_counter!("fedplane_controller_syncs_total", "Plans computed");
    describe_counter!(
        "fedplane_controller_writes_total",
        "Keys written, by op (put, delete)"
    );
    describe_counter!("fedplane_controller_txns_total", "etcd transactions sent");
    describe_counter!(
        "fedplane_controller_conflicts_total",
        "Keys that changed under us and were re-read"
    );
    describe_counter!(
        "fedplane_controller_foreign_keys_total",
        "Writes skipped because the key belongs to another writer"
    );
    describe_counter!("fedplane_controller_errors_total", "Failures, by kind");
    describe_histogram!(
        "fedplane_controller_sync_seconds",
        "Time to plan, diff and write one sync"
    );
    describe_counter!(
        "fedplane_controller_probes_total",
        "Health-check results (fedplane.io/health-check) per Service address, by cluster and result (success, failure)"
    );
    describe_gauge!(
        "fedplane_controller_probe_targets",
        "Health-checked Service addresses of the cluster, by state: up, or down (withdrawn from the records)"
    );
    describe_histogram!(
        "fedplane_controller_probe_round_seconds",
        "Time to probe every health-checked address once (longer than --probe-interval: checks react later)"
    );
}
