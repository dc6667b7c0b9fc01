//! The `--state-dir` snapshot end to end, with real etcd, the real binary and real dig: a
//! snapshot older than `--state-max-age` is not served, and one from an etcd that was rebuilt
//! meanwhile (its revisions restarted) is served until the new etcd's records replace it whole, which
//! is reported as a diverged history.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{Dns, HW, HW_NAME, WAIT};
use fedplane_ops::etcd::REQUEST_TIMEOUT;
use fedplane_testkit::{Etcd, http_get, wait_until};

/// A server on `etcd` saving in `state`, with `extra` arguments.
fn dns(etcd: &Etcd, state: &Path, extra: &[&str]) -> Dns {
    Dns::on(etcd)
        .workers(1)
        .args(&["--lameduck", "0", "--state-dir"])
        .args(&[state.to_str().expect("UTF-8 path")])
        .args(extra)
        .start_unready()
}

/// etcd with one hello-world record at revision 5 or more; fedplane-dns saves it in `state`;
/// both stop. Returns etcd, stopped.
fn saved_then_stopped(state: &Path) -> Etcd {
    let mut etcd = Etcd::start();
    for _ in 0..4 {
        etcd.put(&format!("{HW}/fcp"), r#"{"host":"10.210.1.68"}"#);
    }
    let revision = etcd.revision();
    let dns = dns(&etcd, state, &[]);
    dns.await_ready(WAIT);
    wait_until(WAIT, "the state to be saved", || {
        #[allow(clippy::cast_precision_loss)]
        (dns.metric("fedplane_dns_state_saved_revision", "") >= revision as f64).then_some(())
    });
    drop(dns);
    etcd.stop();
    etcd
}

#[test]
fn a_snapshot_older_than_the_max_age_is_not_served() {
    let state = tempfile::tempdir().expect("state dir");
    let mut etcd = saved_then_stopped(state.path());
    let file = state.path().join("fedplane-dns.state");
    wait_until(WAIT, "the saved state to be over 1 s old", || {
        let modified = std::fs::metadata(&file).ok()?.modified().ok()?;
        (SystemTime::now().duration_since(modified).ok()? > Duration::from_millis(1100))
            .then_some(())
    });
    let dns = dns(&etcd, state.path(), &["--state-max-age", "1s"]);
    dns.await_log("too old to serve");
    assert_eq!(http_get(&dns.http, "/readyz").map(|r| r.0), Some(503));
    assert_eq!(dns.q(&[HW_NAME, "A"]).status, "SERVFAIL");
    assert!(dns.metric("fedplane_dns_state_load_errors_total", "") >= 1.0);
    etcd.restart();
    dns.await_ready(WAIT);
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A"), ["10.210.1.68"]);
}

#[test]
fn a_snapshot_from_an_etcd_rebuilt_since_is_replaced_whole_and_reported() {
    let state = tempfile::tempdir().expect("state dir");
    let mut etcd = saved_then_stopped(state.path());
    let dns = dns(&etcd, state.path(), &[]);
    dns.await_ready(WAIT);
    assert_eq!(dns.metric("fedplane_dns_serving_from_disk", ""), 1.0);
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A"), ["10.210.1.68"]);
    // etcd comes back rebuilt from scratch: revisions from 1, behind the snapshot's (the
    // cluster ID is the same: etcd derives it from the members' configuration)
    etcd.wipe_and_restart();
    etcd.put("/skydns/com/example/new-cluster", r#"{"host":"10.0.0.12"}"#);
    dns.await_answer("new-cluster.example.com", "A", &["10.0.0.12"]);
    assert_eq!(
        dns.q(&[HW_NAME, "A"]).status,
        "NXDOMAIN",
        "the saved records are replaced whole"
    );
    assert_eq!(dns.metric("fedplane_dns_serving_from_disk", ""), 0.0);
    dns.await_log("does not continue the saved state");
    assert_eq!(
        dns.metric("fedplane_dns_etcd_reloads_total", "reason=\"diverged\""),
        1.0
    );
}

/// etcd merely slow at start (frozen, not down): the snapshot is served after 3 s all the same
/// (last-known answers beat SERVFAIL), and etcd's load replaces it as soon as etcd answers,
/// with no further change needed: the records changed while fedplane-dns was away are served.
#[test]
fn a_slow_etcd_at_start_gets_the_snapshot_served_until_its_load_replaces_it() {
    let state = tempfile::tempdir().expect("state dir");
    let mut etcd = saved_then_stopped(state.path());
    etcd.restart();
    etcd.put(&format!("{HW}/fcp"), r#"{"host":"10.210.1.99"}"#);
    etcd.signal("STOP");
    let dns = dns(&etcd, state.path(), &[]);
    dns.await_ready(WAIT);
    assert_eq!(dns.metric("fedplane_dns_serving_from_disk", ""), 1.0);
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A"), ["10.210.1.68"]);
    etcd.signal("CONT");
    // A request already in flight answers at once; at worst one timed out (10 s) meanwhile.
    dns.await_answer_within(HW_NAME, "A", &["10.210.1.99"], 2 * REQUEST_TIMEOUT);
    assert_eq!(dns.metric("fedplane_dns_serving_from_disk", ""), 0.0);
    dns.await_log("loaded records from etcd");
}

/// A snapshot served while etcd stays away is withdrawn once it grows older than
/// `--state-max-age` (not only checked at start): SERVFAIL and not ready until etcd answers.
#[test]
fn a_served_snapshot_is_withdrawn_when_it_grows_older_than_the_max_age() {
    let state = tempfile::tempdir().expect("state dir");
    let mut etcd = saved_then_stopped(state.path());
    // Served 3 s after the start (younger than 8 s then), withdrawn 8 s after it was saved.
    let dns = dns(&etcd, state.path(), &["--state-max-age", "8s"]);
    dns.await_ready(WAIT);
    assert_eq!(dns.metric("fedplane_dns_serving_from_disk", ""), 1.0);
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A"), ["10.210.1.68"]);
    dns.await_log("older than --state-max-age and etcd is still not loaded");
    assert_eq!(http_get(&dns.http, "/readyz").map(|r| r.0), Some(503));
    assert_eq!(dns.q(&[HW_NAME, "A"]).status, "SERVFAIL");
    assert_eq!(dns.metric("fedplane_dns_serving_from_disk", ""), 0.0);
    etcd.restart();
    dns.await_ready(WAIT);
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A"), ["10.210.1.68"]);
}
