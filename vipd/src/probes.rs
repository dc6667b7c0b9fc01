//! What fedplane-vipd reports on its HTTP endpoints (served by `fedplane_ops::Http`): the
//! readiness probe (every group running and able to take part, not in fault; in Kubernetes
//! mode, the Services listed) and the help text of every metric it exports.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

/// Each group's standing, by its name (`"51 on eth0 (ipv4)"`): `Ok` while it takes part in
/// VRRP, else why not (not started yet, interface missing or down, no usable source address).
#[derive(Debug, Default)]
pub struct Health {
    groups: Mutex<BTreeMap<String, Result<(), String>>>,
}

impl Health {
    /// Records group `name`'s standing.
    pub fn set(&self, name: &str, standing: Result<(), String>) {
        self.lock().insert(name.to_owned(), standing);
    }

    /// Forgets group `name` (stopped, or removed by a reload).
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Every group's problem, if any.
    pub fn problems(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter_map(|(name, s)| s.as_ref().err().map(|e| format!("group {name}: {e}")))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Result<(), String>>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What /readyz and /metrics need from Kubernetes mode.
#[derive(Debug, Default)]
pub struct KubeStatus {
    /// Services listed at least once.
    pub synced: std::sync::atomic::AtomicBool,
}

/// Readiness from the groups' standing.
#[derive(Debug, Clone)]
pub struct VipdProbes {
    /// The groups' standing.
    pub health: Arc<Health>,
    /// Kubernetes mode: ready once the Services are listed.
    pub kube: Option<Arc<KubeStatus>>,
    /// BGP mode: BIRD answers on its control socket with our configuration.
    pub bgp: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl fedplane_ops::Probes for VipdProbes {
    fn ready(&self) -> Result<(), String> {
        let problems = self.health.problems();
        if !problems.is_empty() {
            Err(problems.join("; "))
        } else if self
            .kube
            .as_ref()
            .is_some_and(|k| !k.synced.load(Ordering::Relaxed))
        {
            Err("Services not listed yet".into())
        } else if self
            .bgp
            .as_ref()
            .is_some_and(|up| !up.load(Ordering::Relaxed))
        {
            Err("BGP: BIRD is not running our configuration (see the log)".into())
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
        "fedplane_vipd_local_addresses_left_out",
        "Addresses of externalTrafficPolicy: Local Services this node leaves out of its groups: no ready endpoint here"
    );
    describe_gauge!(
        "fedplane_vipd_local_addresses_unheld",
        "Addresses of externalTrafficPolicy: Local Services held nowhere: no VRRP group's master runs a ready endpoint"
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
        "fedplane_vipd_foreign_adverts_total",
        "Adverts refused because their source may not speak in the group, by source (the first 64 sources; later ones as source=\"other\")"
    );
    describe_counter!(
        "fedplane_vipd_interval_clamped_total",
        "Adverts whose interval was longer than a backup learns (10 x ours, at least 1 s): learnt as that bound"
    );
    describe_counter!(
        "fedplane_vipd_socket_drops_total",
        "VRRP packets the kernel dropped because the group's socket buffer was full"
    );
    describe_counter!(
        "fedplane_vipd_address_conflicts_total",
        "ARP/NA from another MAC address for a virtual address this node holds (split brain)"
    );
    describe_counter!(
        "fedplane_vipd_interface_changes_total",
        "A group's interface appeared, was recreated, was deleted or changed its MAC, by kind"
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
    describe_gauge!(
        "fedplane_vipd_bgp_session_state",
        "BGP session per peer as BIRD reports it: 0 down, 1 connecting (Connect/Active), 2 opening (OpenSent/OpenConfirm), 3 established"
    );
    describe_counter!(
        "fedplane_vipd_bgp_session_flaps_total",
        "BGP sessions that left Established, per peer"
    );
    describe_gauge!(
        "fedplane_vipd_bgp_announced_prefixes",
        "Routes fedplane-vipd keeps in its kernel table for BIRD to announce"
    );
    describe_counter!(
        "fedplane_vipd_bgp_route_writes_total",
        "Route changes written to the kernel table, by op (add, del, apply) and result"
    );
    describe_counter!(
        "fedplane_vipd_bgp_engine_reloads_total",
        "BIRD configurations put in use, by result: ok, refused (bird -p; the old one stays), error"
    );
    describe_counter!(
        "fedplane_vipd_bgp_engine_restarts_total",
        "BIRD restarted after it exited"
    );
}
