//! fedplane-controller's Ingress source end to end (`--source service,ingress`): the seed's
//! three member clusters (test fakes of the Kubernetes API server, speaking the real
//! list/watch protocol to the real kube client), real etcd, the real fedplane-dns and dig.
//! An Ingress host inside the domain answers the Ingress's addresses of every cluster where a
//! backend Service has a ready endpoint; it follows health, disappears on delete, a younger
//! Ingress claiming the same host gets a Warning Event and changes nothing, and a cluster
//! unreachable past the grace period is withdrawn.

mod common;

use common::*;
use fedplane_testkit::wait_until;
use serde_json::{Value, json};

const SHOP: &str = "shop.example.com";

fn ingress(name: &str, hosts: &[&str], status: Value) -> Value {
    let rules: Vec<Value> = hosts
        .iter()
        .map(|h| {
            json!({"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "shop", "port": {"number": 80}}}}]}})
        })
        .collect();
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": "default", "name": name},
        "spec": {"rules": rules},
        "status": {"loadBalancer": {"ingress": status}}})
}

#[test]
fn ingress_hosts_answer_the_healthy_clusters_follow_health_and_go_with_their_ingress() {
    let fed = Federation::start();
    for (cluster, ip, ready) in [
        ("fcp", "10.210.1.80", true),
        ("usa", "10.210.3.80", true),
        ("chn", "10.210.2.80", false),
    ] {
        let fake = fed.fake(cluster);
        backend(fake, ready);
        fake.apply(ingress(
            "shop",
            &[
                SHOP,
                "shop.other.org",
                "x.default.federation.svc.example.com",
            ],
            json!([{"ip": ip}]),
        ));
    }
    let c = fed.controller(&["--source", "service,ingress", "--unreachable-grace", "2s"]);
    // chn's backend has no ready endpoint: not answered.
    fed.await_a(SHOP, &["10.210.1.80", "10.210.3.80"]);
    // The Services' names are there as before.
    fed.await_a(GLOBAL, &all_ips());
    // Hosts outside the domain, or inside the federation's Service names, are left out.
    wait_until(WAIT, "the refused hosts in the log", || {
        let out = c.daemon.output();
        (out.contains("shop.other.org") && out.contains("x.default.federation.svc.example.com"))
            .then_some(())
    });
    fed.await_nxdomain("x.default.federation.svc.example.com");

    // Health follows the backends.
    backend(fed.fake("fcp"), false);
    fed.await_a(SHOP, &["10.210.3.80"]);
    backend(fed.fake("chn"), true);
    backend(fed.fake("fcp"), true);
    fed.await_a(SHOP, &["10.210.1.80", "10.210.2.80", "10.210.3.80"]);

    // A younger Ingress claiming the host in fcp: a Warning Event on it, nothing changes.
    fed.fake("fcp").apply(ingress(
        "shop-copy",
        &[SHOP],
        json!([{"ip": "10.210.1.99"}]),
    ));
    wait_until(WAIT, "a HostConflict Warning Event on shop-copy", || {
        fed.fake("fcp").events().into_iter().find(|e| {
            e["reason"] == "HostConflict"
                && e["regarding"]["name"] == "shop-copy"
                && e["type"] == "Warning"
        })
    });
    let d = fed.q(SHOP);
    assert_eq!(
        d.answers("A"),
        ["10.210.1.80", "10.210.2.80", "10.210.3.80"],
        "{}",
        d.raw
    );

    // A cluster unreachable past the grace period is withdrawn; back, it answers again.
    fed.fake("chn").set_reachable(false);
    fed.await_a(SHOP, &["10.210.1.80", "10.210.3.80"]);
    fed.fake("chn").set_reachable(true);
    fed.await_a(SHOP, &["10.210.1.80", "10.210.2.80", "10.210.3.80"]);

    // Deleted where it was: gone from there; deleted everywhere: the name is gone.
    fed.fake("usa")
        .delete("networking.k8s.io/v1", "Ingress", Some("default"), "shop");
    fed.await_a(SHOP, &["10.210.1.80", "10.210.2.80"]);
    for cluster in ["fcp", "chn"] {
        let fake = fed.fake(cluster);
        fake.delete("networking.k8s.io/v1", "Ingress", Some("default"), "shop");
        fake.delete(
            "networking.k8s.io/v1",
            "Ingress",
            Some("default"),
            "shop-copy",
        );
    }
    fed.await_nxdomain(SHOP);
}

#[test]
fn without_the_ingress_source_ingresses_are_not_read() {
    let fed = Federation::start();
    backend(fed.fake("fcp"), true);
    fed.fake("fcp")
        .apply(ingress("shop", &[SHOP], json!([{"ip": "10.210.1.80"}])));
    let c = fed.controller(&[]);
    c.await_synced();
    fed.await_a(GLOBAL, &all_ips());
    assert_eq!(fed.q(SHOP).status, "NXDOMAIN");
    assert!(
        !fed.fake("fcp")
            .requests()
            .iter()
            .any(|(_, path)| path.contains("ingresses")),
        "ingresses were requested"
    );
}

#[test]
fn snapshot_files_with_ingresses_give_the_same_records_as_the_live_clusters() {
    let fed = Federation::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = vec![
        "--once".to_owned(),
        "--source".into(),
        "service,ingress".into(),
    ];
    for (cluster, ip) in [
        ("fcp", "10.210.1.80"),
        ("usa", "10.210.3.80"),
        ("chn", "10.210.2.80"),
    ] {
        let fake = fed.fake(cluster);
        backend(fake, cluster != "chn");
        let ing = ingress("shop", &[SHOP, "www.example.com"], json!([{"ip": ip}]));
        fake.apply(ing.clone());
        // The same objects as a file.
        args.extend(snapshot_file(dir.path(), cluster, fake, [ing]));
    }
    let _c = fed.controller(&["--source", "service,ingress"]);
    fed.await_a(SHOP, &["10.210.1.80", "10.210.3.80"]);
    fed.await_a("www.example.com", &["10.210.1.80", "10.210.3.80"]);
    fed.await_a(GLOBAL, &all_ips());
    let live: Vec<(String, String)> = fed.records().into_iter().map(|(k, v, _)| (k, v)).collect();

    assert_eq!(live, once_records(&fedplane_testkit::Etcd::start(), args));
}

#[test]
fn another_clusters_younger_ingress_cannot_join_a_host() {
    let fed = Federation::start();
    backend(fed.fake("fcp"), true);
    fed.fake("fcp")
        .apply(ingress("shop", &[SHOP], json!([{"ip": "10.210.1.80"}])));
    // In usa, another team's Ingress (another namespace and name) claims the same host.
    let usa = fed.fake("usa");
    usa.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sandbox"}}));
    let mut evil = ingress("evil", &[SHOP], json!([{"ip": "10.210.3.99"}]));
    evil["metadata"]["namespace"] = json!("sandbox");
    evil["spec"]["rules"][0]["http"] = json!(null);
    usa.apply(evil);
    let _c = fed.controller(&["--source", "service,ingress"]);
    fed.await_a(SHOP, &["10.210.1.80"]);
    wait_until(WAIT, "a HostConflict Warning Event on sandbox/evil", || {
        usa.events().into_iter().find(|e| {
            e["reason"] == "HostConflict"
                && e["regarding"]["name"] == "evil"
                && e["regarding"]["namespace"] == "sandbox"
        })
    });
    let d = fed.q(SHOP);
    assert_eq!(d.answers("A"), ["10.210.1.80"], "{}", d.raw);
}
