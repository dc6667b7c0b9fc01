//! What fedplane-dns reports on its HTTP endpoints (served by `fedplane_ops::Http`): readiness
//! (ready once complete records are served: loaded from etcd, or the snapshot saved on disk
//! while etcd cannot be reached at start, since it answers; the metrics say how stale it is),
//! the snapshot ages computed when `/metrics` is read, and the help text of every metric.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::sync::{Shared, Source};

/// Readiness and on-demand gauges from the sync state.
#[derive(Debug, Clone)]
pub struct DnsProbes(pub Arc<Shared>);

impl fedplane_ops::Probes for DnsProbes {
    fn ready(&self) -> Result<(), String> {
        if self.0.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("records not loaded from etcd (nor from the state on disk) yet".into())
        }
    }

    fn before_metrics(&self) {
        if let Some(age) = self.0.snapshot_age() {
            metrics::gauge!("fedplane_dns_snapshot_age_seconds").set(age.as_secs_f64());
        }
        let disk_age = match self.0.source() {
            Source::Disk => self.0.disk_age().as_secs_f64(),
            Source::Nothing | Source::Etcd => 0.0,
        };
        metrics::gauge!("fedplane_dns_state_age_seconds").set(disk_age);
    }
}

/// Registers the help text of every metric this program exports.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
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
        "Received messages not answered, by reason (busy: the general path's UDP queue full; stale: waited there over 1 s; port_zero, send_error, oversized, ...)"
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
        "Full reloads from etcd, by reason: compacted (the watch fell behind compaction) or diverged (etcd came back with another history, or a disk snapshot was from one)"
    );
    describe_counter!(
        "fedplane_dns_etcd_reconnects_total",
        "Times the etcd connection or watch failed and was retried"
    );
    describe_gauge!("fedplane_dns_tcp_connections", "Open DNS TCP connections");
    describe_gauge!(
        "fedplane_dns_draining",
        "1 from SIGTERM on: /readyz fails, DNS answers until the lameduck ends"
    );
    describe_counter!(
        "fedplane_dns_lease_lookup_failures_total",
        "etcd lease TTL lookups that failed or timed out (their records answer with TTL at most 30 s)"
    );
    describe_gauge!(
        "fedplane_dns_serving_from_disk",
        "1 while the records served are the snapshot saved in --state-dir (etcd not loaded yet)"
    );
    describe_gauge!(
        "fedplane_dns_state_age_seconds",
        "Seconds since the snapshot served from --state-dir was saved; 0 when serving from etcd"
    );
    describe_gauge!(
        "fedplane_dns_state_saved_revision",
        "etcd revision of the last snapshot saved in --state-dir"
    );
    describe_counter!(
        "fedplane_dns_state_saves_total",
        "Writes of the snapshot to --state-dir, by result (ok, error)"
    );
    describe_counter!(
        "fedplane_dns_state_load_errors_total",
        "Snapshots in --state-dir that could not be used (damaged, over 1 GiB, older than --state-max-age, other version, zones or prefix)"
    );
    describe_counter!(
        "fedplane_dns_rrl_total",
        "UDP responses seen by response rate limiting, by action: pass, slip (sent truncated) or drop"
    );
    describe_counter!(
        "fedplane_dns_xfr_total",
        "Zone transfers answered, by type (axfr, ixfr_incremental, ixfr_full: the whole zone to an IXFR client the history does not reach, catalog: the catalog zone) and transport"
    );
    describe_gauge!(
        "fedplane_dns_ixfr_history_versions",
        "Zone versions whose differences the IXFR history holds"
    );
    describe_gauge!(
        "fedplane_dns_ixfr_history_bytes",
        "Bytes of differences the IXFR history holds"
    );
    describe_histogram!(
        "fedplane_dns_ixfr_diff_seconds",
        "Time to compare a published version with the previous one for the IXFR history"
    );
    describe_counter!(
        "fedplane_dns_xfr_refused_total",
        "Transfers and signed queries refused, by reason: acl (client not in --allow-transfer), unsigned, wrong_key, busy (over --max-transfers), tsig_badsig, tsig_badkey, tsig_badtime, tsig_badtrunc"
    );
    describe_counter!(
        "fedplane_dns_notify_sent_total",
        "NOTIFY messages sent to --notify targets (retries included)"
    );
    describe_counter!(
        "fedplane_dns_notify_answered_total",
        "NOTIFY messages answered by their target"
    );
    describe_gauge!(
        "fedplane_dns_notify_outstanding",
        "NOTIFY messages sent and not answered yet (being retried)"
    );
    describe_counter!(
        "fedplane_dns_updates_total",
        "RFC 2136 UPDATE requests answered, by rcode (NOERROR applied; REFUSED not allowed or touching another writer's keys; NOTAUTH bad signature or zone; SERVFAIL etcd unreachable or busy)"
    );
    describe_counter!(
        "fedplane_dns_tcp_evicted_total",
        "Idle TCP connections closed to admit a new one at --tcp-max-connections"
    );
    describe_counter!(
        "fedplane_dns_tcp_rejected_total",
        "TCP connections refused, by reason: per_client (--tcp-max-connections-per-client: held open unread for 2 s, then closed) or full (every connection busy: closed at once)"
    );
    describe_gauge!(
        "fedplane_dns_tcp_held_connections",
        "Refused TCP connections held open, unread, until they are closed"
    );
    describe_counter!(
        "fedplane_dns_answer_panics_total",
        "Queries whose answer panicked (dropped, logged with their bytes): a bug, please report it"
    );
}
