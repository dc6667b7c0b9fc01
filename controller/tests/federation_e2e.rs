//! fedplane-controller end to end: three member clusters (test fakes of the Kubernetes API
//! server, speaking the real list/watch protocol to the real kube client) as in the seed
//! guide — fcp (europe/fr), usa (america/us), chn (asia/cn) — real etcd, the real
//! fedplane-dns binary, and real dig.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fedplane_testkit::{Etcd, dig, http_get, wait_until};
use serde_json::json;

#[test]
fn seed_federation_answers_with_every_ingress_globally_and_one_per_region_and_zone() {
    let fed = Federation::start();
    // A Service the controller must ignore with a reason, without losing the others.
    fed.fake("fcp").apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "broken"},
        "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": "not-an-ip"}]}},
    }));
    // The kubeconfig alone lists the members.
    let c = fed.controller(&["--all-contexts"]);
    fed.await_a(GLOBAL, &all_ips());
    for (_, region, zone, ip) in SEEDS {
        let region_name = format!("hello-world.default.federation.svc.{region}.example.com");
        let zone_name = format!("hello-world.default.federation.svc.{zone}.{region}.example.com");
        let d = fed.await_a(&region_name, &[ip]);
        assert_eq!(d.answer[0].ttl, 30, "{}", d.raw);
        fed.await_a(&zone_name, &[ip]);
    }
    for (name, ..) in SEEDS {
        c.await_metric(
            &format!("fedplane_controller_cluster_connected{{cluster=\"{name}\"}}"),
            "every cluster connected",
            |v| v == 1.0,
        );
    }
    assert!(
        c.daemon.output().contains("not-an-ip"),
        "the bad ingress is logged:\n{}",
        c.daemon.output()
    );
    assert_eq!(c.metric("fedplane_controller_leader"), 1.0);
}

#[test]
fn zone_name_falls_back_to_region_then_global_when_a_cluster_has_no_ready_endpoints() {
    let fed = Federation::start();
    let _c = fed.controller(&[]);
    fed.await_a(FR, &["10.210.1.68"]);

    set_ready(fed.fake("fcp"), "fcp", false);
    fed.await_cname(FR, EUROPE);
    let d = fed.await_cname(EUROPE, GLOBAL);
    assert_eq!(d.answers("A"), ["10.210.2.65", "10.210.3.65"], "{}", d.raw);
    let d = fed.q(FR);
    assert_eq!(
        d.answers("CNAME"),
        [format!("{EUROPE}."), format!("{GLOBAL}.")],
        "zone → region → global chain: {}",
        d.raw
    );
    fed.await_a(GLOBAL, &["10.210.2.65", "10.210.3.65"]);

    set_ready(fed.fake("fcp"), "fcp", true);
    fed.await_a(FR, &["10.210.1.68"]);
    fed.await_a(GLOBAL, &all_ips());
}

#[test]
fn deleted_service_loses_its_names_and_foreign_keys_are_never_touched() {
    let fed = Federation::start();
    // ExternalDNS shares the prefix: one record of its own beside ours, and one at exactly a
    // key we would write.
    let beside = format!(
        "/skydns/com/example/svc/federation/default/hello-world/{}",
        "1a2b3c4d"
    );
    let clash = "/skydns/com/example/asia/cn/svc/federation/default/hello-world/chn/10-210-2-65";
    fed.etcd
        .put(&beside, r#"{"host":"10.9.9.9","owner":"external-dns"}"#);
    fed.etcd
        .put(clash, r#"{"host":"10.210.2.65","owner":"external-dns"}"#);
    let before: Vec<_> = fed
        .records()
        .into_iter()
        .filter(|(k, ..)| *k == beside || k == clash)
        .collect();

    let c = fed.controller(&[]);
    let mut with_foreign = all_ips();
    with_foreign.push("10.9.9.9");
    fed.await_a(GLOBAL, &with_foreign);
    c.await_metric(
        "fedplane_controller_foreign_keys_total",
        "the clash to be noticed",
        |v| v >= 1.0,
    );

    for (name, ..) in SEEDS {
        let f = fed.fake(name);
        assert!(f.delete("v1", "Service", Some("default"), "hello-world"));
    }
    fed.await_a(GLOBAL, &["10.9.9.9"]);
    for name in [EUROPE, FR, AMERICA, US] {
        fed.await_nxdomain(name);
    }
    let after: Vec<_> = fed
        .records()
        .into_iter()
        .filter(|(k, ..)| *k == beside || k == clash)
        .collect();
    assert_eq!(before, after, "foreign keys unchanged");
    assert_eq!(
        fed.records().len(),
        2,
        "only the foreign keys are left: {:?}",
        fed.records()
    );
}

#[test]
fn unreachable_cluster_keeps_its_records_through_the_grace_period_then_they_are_withdrawn() {
    let fed = Federation::start();
    let grace = Duration::from_secs(3);
    let c = fed.controller(&["--unreachable-grace", "3s"]);
    fed.await_a(GLOBAL, &all_ips());

    let usa_connected = "fedplane_controller_cluster_connected{cluster=\"usa\"}";

    // A short outage: usa is seen unreachable, then reachable again, and keeps its records
    // for good.
    let cut = Instant::now();
    fed.fake("usa").set_reachable(false);
    c.await_metric(usa_connected, "usa to be seen unreachable", |v| v == 0.0);
    fed.fake("usa").set_reachable(true);
    c.await_metric(usa_connected, "usa to be seen reachable again", |v| {
        v == 1.0
    });
    while cut.elapsed() < grace + Duration::from_secs(1) {
        assert_eq!(
            fed.q(GLOBAL).answers("A"),
            all_ips(),
            "usa's records stay after a short outage"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A long one: held through the grace period, then withdrawn.
    let cut = Instant::now();
    fed.fake("usa").set_reachable(false);
    c.await_metric(usa_connected, "usa to be seen unreachable", |v| v == 0.0);
    assert_eq!(
        fed.q(GLOBAL).answers("A"),
        all_ips(),
        "records kept while within the grace period"
    );
    fed.await_a(GLOBAL, &["10.210.1.68", "10.210.2.65"]);
    assert!(
        cut.elapsed() >= grace,
        "withdrawn after {:?}, before the grace period",
        cut.elapsed()
    );
    fed.await_cname(US, AMERICA);
    fed.await_cname(AMERICA, GLOBAL);
    assert_eq!(
        c.metric("fedplane_controller_cluster_withdrawn{cluster=\"usa\"}"),
        1.0
    );
    let out = c.daemon.output();
    assert!(out.contains("records are withdrawn"), "{out}");

    // Back: its records return.
    fed.fake("usa").set_reachable(true);
    fed.await_a(GLOBAL, &all_ips());
    fed.await_a(US, &["10.210.3.65"]);
}

#[test]
fn restarted_controller_writes_nothing_and_waits_for_etcd() {
    let mut fed = Federation::start();
    let mut first = fed.controller(&[]);
    fed.await_a(GLOBAL, &all_ips());
    first.await_metric("fedplane_controller_records", "nine records", |v| v == 9.0);
    first.daemon.signal("TERM");
    assert!(first.daemon.wait_exit(WAIT).success());
    let before = fed.records();

    let second = fed.controller(&[]);
    second.await_synced();
    assert_eq!(second.writes(), 0.0, "{}", second.daemon.output());
    assert_eq!(fed.records(), before, "no key rewritten");
    drop(second);

    // etcd down at start: the controller stays up, not ready, and writes once etcd is back.
    for (name, ..) in SEEDS {
        set_ready(fed.fake(name), name, false);
    }
    fed.etcd.stop();
    let mut third = fed.controller(&[]);
    wait_until(WAIT, "readyz to report etcd", || {
        http_get(&third.http, "/readyz")
            .filter(|(code, body)| *code == 503 && body.contains("etcd"))
    });
    assert!(third.daemon.is_running());
    fed.etcd.restart();
    fed.await_cname(FR, EUROPE);
    assert!(third.daemon.is_running());
}

#[test]
fn two_replicas_elect_one_writer_and_the_standby_takes_over() {
    let fed = Federation::start();
    let flags = ["--election-ttl", "2s"];
    let a = fed.controller(&[&flags[..], &["--id", "a"]].concat());
    let b = fed.controller(&[&flags[..], &["--id", "b"]].concat());
    fed.await_a(GLOBAL, &all_ips());
    wait_until(WAIT, "one leader", || {
        let leaders =
            a.metric("fedplane_controller_leader") + b.metric("fedplane_controller_leader");
        (leaders == 1.0).then_some(())
    });
    let (mut leader, standby) = if a.metric("fedplane_controller_leader") == 1.0 {
        (a, b)
    } else {
        (b, a)
    };
    set_ready(fed.fake("chn"), "chn", false);
    fed.await_a(GLOBAL, &["10.210.1.68", "10.210.3.65"]);
    assert_eq!(standby.metric("fedplane_controller_txns_total"), 0.0);
    assert_eq!(standby.writes(), 0.0);

    // The leader freezes past its lease: the standby takes over; when the old leader thaws,
    // its writes are fenced off and it stands by.
    leader.daemon.signal("STOP");
    standby.await_metric("fedplane_controller_leader", "the standby to lead", |v| {
        v == 1.0
    });
    set_ready(fed.fake("chn"), "chn", true);
    fed.await_a(GLOBAL, &all_ips());
    set_ready(fed.fake("fcp"), "fcp", false);
    leader.daemon.signal("CONT");
    leader.await_metric(
        "fedplane_controller_leader",
        "the old leader to stand by",
        |v| v == 0.0,
    );
    fed.await_a(GLOBAL, &["10.210.2.65", "10.210.3.65"]);
    let out = leader.daemon.output();
    assert!(out.contains("leadership lost"), "{out}");

    // And a crash: the one left leads again.
    drop(standby);
    leader.await_metric(
        "fedplane_controller_leader",
        "the old leader to lead again",
        |v| v == 1.0,
    );
    set_ready(fed.fake("fcp"), "fcp", true);
    fed.await_a(GLOBAL, &all_ips());
    assert!(leader.daemon.is_running());
}

#[test]
fn snapshot_once_writes_the_same_records_as_the_live_run() {
    let fed = Federation::start();
    let c = fed.controller(&[]);
    fed.await_a(GLOBAL, &all_ips());
    c.await_metric("fedplane_controller_records", "nine records", |v| v == 9.0);
    let live: Vec<(String, String)> = fed.records().into_iter().map(|(k, v, _)| (k, v)).collect();

    let other = Etcd::start();
    let mut args = vec!["--once".to_owned()];
    for (name, ..) in SEEDS {
        args.extend([
            "--snapshot".into(),
            format!("{name}={}", seed_file(name).display()),
        ]);
    }
    // --dry-run prints the nine creates and writes nothing.
    let mut dry = Controller::start(&other, [&args[..], &["--dry-run".to_owned()]].concat());
    assert!(
        dry.daemon.wait_exit(WAIT).success(),
        "{}",
        dry.daemon.output()
    );
    let printed = dry.daemon.output();
    let creates = printed
        .lines()
        .filter(|l| l.starts_with("+ /skydns/"))
        .count();
    assert_eq!(creates, 9, "{printed}");
    assert!(other.dump("/skydns").is_empty(), "--dry-run wrote nothing");

    assert_eq!(live, once_records(&other, args));
}

#[test]
fn an_etcd_outage_shorter_than_the_lease_keeps_the_leadership_and_the_writes_resume_at_once() {
    let mut fed = Federation::start();
    // A lease longer than the test's waits: campaigning again would wait for the old one.
    let c = fed.controller(&["--election-ttl", "60s"]);
    fed.await_a(GLOBAL, &all_ips());
    c.await_metric("fedplane_controller_leader", "leadership", |v| v == 1.0);
    fed.etcd.stop();
    set_ready(fed.fake("fcp"), "fcp", false);
    wait_until(WAIT, "the controller to fail a write", || {
        c.daemon
            .output()
            .contains("etcd failed; writing again once it answers")
            .then_some(())
    });
    fed.etcd.restart();
    fed.await_a(GLOBAL, &["10.210.2.65", "10.210.3.65"]);
    assert_eq!(c.metric("fedplane_controller_leader"), 1.0);
    assert!(!c.daemon.output().contains("campaigning again"));
}

/// `hello-world` in every cluster with the named ports `http` (8080/TCP) and `dns` (53/UDP)
/// and an unnamed one.
fn name_the_ports(fed: &Federation) {
    for (cluster, ..) in SEEDS {
        let fake = fed.fake(cluster);
        let mut svc = fake
            .get("v1", "Service", Some("default"), "hello-world")
            .expect("seed Service");
        svc["spec"]["ports"] = json!([
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"port": 9000, "protocol": "TCP"},
        ]);
        fake.apply(svc);
    }
}

fn await_srv(fed: &Federation, name: &str, want: &[String]) {
    wait_until(WAIT, &format!("{name} SRV to answer {want:?}"), || {
        let d = dig("127.0.0.1", fed.dns_port, &[name, "SRV"]);
        (d.status == "NOERROR" && d.answers("SRV") == want).then_some(())
    });
}

#[test]
fn named_ports_answer_srv_at_every_level_and_follow_the_fallback() {
    // fedplane-dns as a pod in fcp's zone asks it, through the federation short names.
    let fed = Federation::start_with(&[
        "--federation".into(),
        "federation=example.com".into(),
        "--locality".into(),
        "zone=fr,region=europe".into(),
    ]);
    name_the_ports(&fed);
    let _c = fed.controller(&[]);
    let srv = |port: u16, target: &str| vec![format!("10 100 {port} {target}.")];
    for name in [GLOBAL, EUROPE, FR, AMERICA, US] {
        await_srv(&fed, &format!("_http._tcp.{name}"), &srv(8080, name));
        await_srv(&fed, &format!("_dns._udp.{name}"), &srv(53, name));
    }
    // A pod's kube-dns SRV name: an alias of its cluster's zone-level SRV name.
    let short = "_http._tcp.hello-world.default.federation.svc.cluster.local";
    let d = dig("127.0.0.1", fed.dns_port, &[short, "SRV"]);
    assert_eq!(d.answers("SRV"), srv(8080, FR), "{}", d.raw);
    assert_eq!(
        d.answers("CNAME"),
        [format!("_http._tcp.{FR}.")],
        "{}",
        d.raw
    );
    let ent = dig(
        "127.0.0.1",
        fed.dns_port,
        &[
            "_tcp.hello-world.default.federation.svc.cluster.local",
            "SRV",
        ],
    );
    assert_eq!(ent.status, "NOERROR", "an empty non-terminal: {}", ent.raw);
    // No SRV for the unnamed port, nor for a protocol the port does not have.
    for name in [
        format!("_http._udp.{GLOBAL}"),
        format!("_9000._tcp.{GLOBAL}"),
    ] {
        let d = dig("127.0.0.1", fed.dns_port, &[&name, "SRV"]);
        assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    }
    // fcp loses its endpoints: europe and fr fall back, and their SRV records name the global
    // name, which holds the addresses (not the CNAMEs on the way).
    set_ready(fed.fake("fcp"), "fcp", false);
    await_srv(&fed, &format!("_http._tcp.{FR}"), &srv(8080, GLOBAL));
    await_srv(&fed, &format!("_http._tcp.{EUROPE}"), &srv(8080, GLOBAL));
    await_srv(&fed, &format!("_http._tcp.{US}"), &srv(8080, US));
    // The fallback names are still CNAMEs, and the level names still answer their addresses.
    fed.await_cname(FR, EUROPE);
    fed.await_a(GLOBAL, &["10.210.2.65", "10.210.3.65"]);
    fed.await_a(US, &["10.210.3.65"]);
    set_ready(fed.fake("fcp"), "fcp", true);
    await_srv(&fed, &format!("_http._tcp.{FR}"), &srv(8080, FR));
    fed.await_a(FR, &["10.210.1.68"]);
}

#[test]
fn a_load_balancer_known_by_hostname_is_a_cname_where_it_alone_answers() {
    let fed = Federation::start();
    let usa = fed.fake("usa");
    let mut svc = usa
        .get("v1", "Service", Some("default"), "hello-world")
        .expect("seed Service");
    svc["status"]["loadBalancer"]["ingress"] = json!([{"hostname": "lb-1.usa.example.net"}]);
    usa.apply(svc);
    let _c = fed.controller(&[]);
    // Its zone and region names: a CNAME to the hostname (out of the zone, so no address).
    fed.await_cname(US, "lb-1.usa.example.net");
    fed.await_cname(AMERICA, "lb-1.usa.example.net");
    // The global name answers the others' addresses (a name beside addresses is left out).
    fed.await_a(GLOBAL, &["10.210.1.68", "10.210.2.65"]);
    // The hostname goes: its names fall back like any cluster without an ingress.
    let mut svc = usa
        .get("v1", "Service", Some("default"), "hello-world")
        .expect("seed Service");
    svc["status"]["loadBalancer"]["ingress"] = json!([]);
    usa.apply(svc);
    fed.await_cname(US, AMERICA);
}
