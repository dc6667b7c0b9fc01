//! What fedplane-vipd reports on its HTTP endpoints (served by `fedplane_ops::Http`): the
//! readiness probe (every group started; in Kubernetes mode, the Services listed) and the help
//! text of every metric it exports.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Readiness from the groups started so far.
#[derive(Debug, Clone)]
pub struct VipdProbes {
    /// Groups started so far.
    pub started: Arc<AtomicUsize>,
    /// Groups configured.
    pub groups: usize,
    /// Kubernetes mode: ready once the Services are listed.
    pub kube: Option<Arc<crate::kubernetes::KubeStatus>>,
}

impl fedplane_ops::Probes for VipdProbes {
    fn ready(&self) -> Result<(), String> {
        let started = self.started.load(Ordering::Relaxed);
        if started < self.groups {
            Err(format!("{started} of {} groups started", self.groups))
        } else if self
            .kube
            .as_ref()
            .is_some_and(|k| !k.synced.load(Ordering::Relaxed))
        {
            Err("Services not listed yet".into())
        } else {
            Ok(())
        }
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
    describe_gauge!(
        "fedplane_vipd_leader",
        "1 while this replica holds the Lease and assigns addresses (Kubernetes mode)"
    );
    describe_gauge!(
        "fedplane_vipd_service_addresses",
        "Addresses in the status of the LoadBalancer Services served"
    );
    describe_gauge!(
        "fedplane_vipd_quarantined_addresses",
        "Released addresses waiting out the quarantine"
    );
    describe_counter!(
        "fedplane_vipd_status_writes_total",
        "Service status writes by the Lease holder, by result"
    );
    describe_counter!(
        "fedplane_vipd_notices_total",
        "Addresses refused or not assignable (each published as a Warning Event), by reason"
    );
    describe_counter!(
        "fedplane_vipd_quorum_lists_total",
        "Quorum lists of the Services on taking the Lease, by result"
    );
    describe_gauge!(
        "fedplane_vipd_cache_corrections",
        "Services the watch cache shows otherwise than the last quorum list or our own writes"
    );
    describe_gauge!(
        "fedplane_vipd_allowed_speakers",
        "Sources in the Kubernetes-mode VRRP allowlist; -1: no allowlist (every source heard)"
    );
    describe_counter!(
        "fedplane_vipd_foreign_speakers_reported_total",
        "Refused VRRP speakers handed to Kubernetes mode, by result: event (a Warning Event), suppressed (reported within 10 min), error"
    );
}
