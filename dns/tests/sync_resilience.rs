//! fedplane-dns's etcd side under failure, end to end with real etcd (one member and a
//! 3-member cluster), the real binary and real dig: lease bookkeeping never holds up the watch
//! or a failover, and a restart while etcd is away answers from the state saved on disk.

use std::time::{Duration, Instant};

use fedplane_dns::sync::PROGRESS_EVERY;
use fedplane_testkit::{Etcd, EtcdCluster, http_get, wait_until};

mod common;
use common::{Dns, DnsOptions, HW, HW_NAME};

const WAIT: Duration = Duration::from_secs(15);

/// fedplane-dns serving example.com. from the etcd `endpoints`, with two workers and no
/// lameduck.
fn serve(endpoints: &str) -> DnsOptions {
    Dns::on_endpoints(endpoints)
        .workers(2)
        .args(&["--lameduck", "0"])
}

/// Waits until `name A` on `dns` answers `want`, within `timeout`; returns how long it took.
fn time_to_answer(dns: &Dns, name: &str, want: &[&str], timeout: Duration) -> Duration {
    let started = Instant::now();
    dns.await_answer_within(name, "A", want, timeout);
    started.elapsed()
}

/// Puts `key` on a new lease of `ttl` seconds through `etcd`.
fn put_leased(etcd: &Etcd, key: &str, value: &str, ttl: u32) {
    let lease = etcd.lease_grant(ttl);
    etcd.ctl(&["put", "--lease", &lease, key, "--", value]);
}

/// The index of a member that is not the leader (etcdctl 3.4 prints `MemberID` and `Leader`).
fn a_follower(cluster: &EtcdCluster) -> usize {
    let field = |out: &str, name: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("\"{name}\" : ")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in etcdctl output: {out}"))
    };
    (0..3)
        .find(|&i| {
            let out = cluster
                .member(i)
                .ctl(&["endpoint", "status", "-w", "fields"]);
            field(&out, "MemberID") != field(&out, "Leader")
        })
        .expect("a 3-member cluster has followers")
}

/// How the followed member fails.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Killed,
    Hung,
}

/// A 3-member cluster with `leased` keys, each on its own lease; fedplane-dns follows a
/// follower member (the first endpoint it is given), which then fails. A change made after the
/// failure, a key on a new lease, is answered within the progress-check interval plus one
/// second: neither the lease lookups nor the failover wait on the dead member.
fn failover_with_leased_keys(failure: Failure, leased: usize) {
    let mut cluster = EtcdCluster::start(3);
    let followed = a_follower(&cluster);
    let other = (followed + 1) % 3;
    let writer = cluster.member(other);
    for i in 0..leased {
        put_leased(
            writer,
            &format!("/skydns/com/example/leased/k{i}"),
            &format!(r#"{{"host":"10.1.{}.{}"}}"#, i / 250, i % 250 + 1),
            300,
        );
    }
    let mut endpoints = vec![cluster.member(followed).endpoint()];
    endpoints.extend(
        (0..3)
            .filter(|&i| i != followed)
            .map(|i| cluster.member(i).endpoint()),
    );
    let dns = serve(&endpoints.join(",")).start_within(WAIT);
    let d = dns.q(&["k0.leased.example.com", "A"]);
    assert_eq!(d.answers("A"), ["10.1.0.1"], "{}", d.raw);

    match failure {
        Failure::Killed => cluster.kill(followed),
        Failure::Hung => cluster.member(followed).signal("STOP"),
    }
    let writer = cluster.member(other);
    put_leased(
        writer,
        "/skydns/com/example/after",
        r#"{"host":"10.0.0.42"}"#,
        300,
    );
    let bound = PROGRESS_EVERY + Duration::from_secs(1);
    let took = time_to_answer(
        &dns,
        "after.example.com",
        &["10.0.0.42"],
        Duration::from_secs(60),
    );
    eprintln!("{failure:?} member, {leased} leased keys: the change was answered after {took:?}");
    assert!(
        took <= bound,
        "{failure:?} member, {leased} leased keys: the change was answered after {took:?}, not within {bound:?}"
    );
    // The leased records are still answered, from the member we failed over to.
    let d = dns.q(&["k1.leased.example.com", "A"]);
    assert_eq!(d.answers("A"), ["10.1.0.2"], "{}", d.raw);
}

#[test]
fn a_killed_member_with_leased_keys_fails_over_within_the_progress_interval() {
    failover_with_leased_keys(Failure::Killed, 30);
}

#[test]
fn a_hung_member_with_leased_keys_fails_over_within_the_progress_interval() {
    failover_with_leased_keys(Failure::Hung, 30);
}

/// Grants `n` leases and puts one key on each, many requests at a time (etcdctl would take
/// minutes).
fn put_many_leased(endpoint: &str, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let client = etcd_client::Client::connect([endpoint], None)
            .await
            .expect("connect to etcd");
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in (0..n).collect::<Vec<_>>().chunks(n.div_ceil(32)) {
            let mut c = client.clone();
            let chunk = chunk.to_vec();
            tasks.spawn(async move {
                for i in chunk {
                    let lease = c.lease_grant(600, None).await.expect("lease grant").id();
                    c.put(
                        format!("/skydns/com/example/many/k{i}"),
                        format!(r#"{{"host":"10.2.{}.{}"}}"#, i / 250, i % 250 + 1),
                        Some(etcd_client::PutOptions::new().with_lease(lease)),
                    )
                    .await
                    .expect("put");
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("put task");
        }
    });
}

/// Thousands of leases, etcd healthy: the periodic lease refresh (every 10 s) must not freeze
/// the watch. Changes made one after another for longer than a refresh period are each
/// answered promptly.
#[test]
fn thousands_of_leases_do_not_freeze_updates_across_a_refresh() {
    const LEASES: usize = 6000;
    let etcd = Etcd::start();
    put_many_leased(&etcd.endpoint(), LEASES);
    let dns = serve(&etcd.endpoint()).start_within(Duration::from_secs(60));
    assert_eq!(
        dns.q(&["k7.many.example.com", "A"]).answers("A"),
        ["10.2.0.8"]
    );
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut n = 0u32;
    // Past the first refresh after the load (10 s), with room to spare.
    while started.elapsed() < Duration::from_secs(14) {
        n += 1;
        let host = format!("10.3.{}.{}", n / 250, n % 250 + 1);
        etcd.put(
            "/skydns/com/example/probe",
            &format!(r#"{{"host":"{host}"}}"#),
        );
        let took = time_to_answer(&dns, "probe.example.com", &[&host], Duration::from_secs(30));
        slowest = slowest.max(took);
    }
    eprintln!("{LEASES} leases: the slowest of {n} updates took {slowest:?}");
    assert!(
        slowest <= Duration::from_secs(1),
        "{LEASES} leases: the slowest of {n} updates took {slowest:?} to be answered"
    );
    assert_eq!(
        dns.metric("fedplane_dns_etcd_reconnects_total", ""),
        0.0,
        "no false 'watch stalled' reconnect"
    );
}

/// etcd up: the records are loaded and saved; fedplane-dns and etcd stop; fedplane-dns starts
/// again with etcd still down and answers from the state on disk (ready, the metrics say so);
/// etcd returns and a change is seen.
#[test]
fn a_restart_during_an_etcd_outage_answers_from_the_state_on_disk() {
    let mut etcd = Etcd::start();
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_str().expect("UTF-8 path");
    etcd.put(&format!("{HW}/fcp"), r#"{"host":"10.210.1.68","ttl":60}"#);
    etcd.put(&format!("{HW}/usa"), r#"{"host":"10.210.3.65","ttl":60}"#);
    put_leased(
        &etcd,
        "/skydns/com/example/leased",
        r#"{"host":"10.0.0.5","ttl":300}"#,
        600,
    );
    let revision = etcd.revision();
    let dns = serve(&etcd.endpoint())
        .args(&["--state-dir", state_dir])
        .start_within(WAIT);
    wait_until(WAIT, "the state to be saved", || {
        (dns.metric("fedplane_dns_state_saved_revision", "") >= revision as f64).then_some(())
    });
    drop(dns);
    etcd.stop();

    let dns = serve(&etcd.endpoint())
        .args(&["--state-dir", state_dir])
        .start_within(WAIT);
    let d = dns.q(&[HW_NAME, "A"]);
    assert_eq!(d.answers("A"), ["10.210.1.68", "10.210.3.65"], "{}", d.raw);
    assert_eq!(d.answer[0].ttl, 60, "{}", d.raw);
    let d = dns.q(&["leased.example.com", "A"]);
    assert_eq!(d.answers("A"), ["10.0.0.5"], "{}", d.raw);
    assert!(
        d.answer[0].ttl <= 30,
        "a leased record from disk has an unknown lease: the 30 s floor: {}",
        d.raw
    );
    assert_eq!(dns.metric("fedplane_dns_serving_from_disk", ""), 1.0);
    assert!(
        dns.try_metric("fedplane_dns_state_age_seconds", "")
            .is_some()
    );
    assert_eq!(
        dns.q(&["nothere.example.com", "A"]).status,
        "NXDOMAIN",
        "the disk snapshot is complete"
    );

    etcd.restart();
    etcd.put(&format!("{HW}/usa"), r#"{"host":"10.210.3.99","ttl":60}"#);
    dns.await_answer_within(HW_NAME, "A", &["10.210.1.68", "10.210.3.99"], WAIT);
    assert_eq!(dns.metric("fedplane_dns_serving_from_disk", ""), 0.0);
    assert_eq!(dns.metric("fedplane_dns_sync_state", ""), 1.0);
}

/// A state file that is not a snapshot (here: garbage) is reported and ignored: fedplane-dns
/// keeps running, answers SERVFAIL until etcd is reached, then loads from etcd and answers.
#[test]
fn a_corrupt_state_file_is_reported_and_ignored() {
    let mut etcd = Etcd::start();
    etcd.put(&format!("{HW}/fcp"), r#"{"host":"10.210.1.68"}"#);
    etcd.stop();
    let state = tempfile::tempdir().expect("state dir");
    std::fs::write(
        state.path().join("fedplane-dns.state"),
        b"{\"version\":1,\"rev",
    )
    .expect("write");
    let dns = serve(&etcd.endpoint())
        .args(&["--state-dir", state.path().to_str().expect("UTF-8 path")])
        .start_unready();
    wait_until(WAIT, "the bad state file to be reported", || {
        dns.daemon
            .output()
            .contains("cannot use the saved state")
            .then_some(())
    });
    assert_eq!(http_get(&dns.http, "/readyz").map(|r| r.0), Some(503));
    assert_eq!(dns.q(&[HW_NAME, "A"]).status, "SERVFAIL");
    etcd.restart();
    dns.await_ready(WAIT);
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A"), ["10.210.1.68"]);
}
