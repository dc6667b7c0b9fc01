//! fedplane-vipd's address assignment against the Kubernetes API fake (`testkit/src/kube_fake`),
//! with replicas that run no VRRP group (assignment only), so no root is needed: Services
//! created, changed and deleted; the Lease lost and regained; two replicas racing; the pool
//! ConfigMap changed; the legacy keepalived-vip ConfigMap; an outage with compaction (410 Gone).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fedplane_testkit::kube_fake::{FakeKubeApi, write_kubeconfig};
use fedplane_testkit::{Daemon, free_port, http_get, wait_until};
use serde_json::{Value, json};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(20);
const POOLS: &str = "pools:
  - name: default
    addresses: [10.4.0.0/29, 'fd00:4::/125']
    reserved: [10.4.0.1]
  - name: blue
    addresses: [10.5.0.10-10.5.0.12]
    auto_assign: false
";

/// One fedplane-vipd replica in Kubernetes mode without VRRP groups.
struct Replica {
    daemon: Daemon,
    http: String,
}

fn replica(fake: &FakeKubeApi, dir: &Path, node: &str, config: &str, extra: &[&str]) -> Replica {
    let kubeconfig = write_kubeconfig(dir, &[("member", fake)]);
    let file = dir.join(format!("vipd-{node}.yaml"));
    std::fs::write(&file, config).expect("write the config");
    let http = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = [
        "--kubernetes",
        "--config",
        &file.to_string_lossy(),
        "--kubeconfig",
        &kubeconfig.to_string_lossy(),
        "--node-name",
        node,
        "--lease",
        "fedplane-system/fedplane-vipd",
        "--lease-duration",
        "2s",
        "--http",
        &http,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.extend(extra.iter().map(ToString::to_string));
    let daemon = Daemon::start(Path::new(env!("CARGO_BIN_EXE_fedplane-vipd")), &args, &[]);
    Replica { daemon, http }
}

impl Replica {
    fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = http_get(&self.http, "/metrics")?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    fn wait_ready(&self) {
        wait_until(WAIT, "fedplane-vipd ready", || {
            http_get(&self.http, "/readyz").filter(|(c, _)| *c == 200)
        });
    }
}

fn service(name: &str, extra: &Value) -> Value {
    let mut s = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    });
    merge(&mut s, extra);
    s
}

fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// The ingress addresses in a Service's status.
fn ingress(fake: &FakeKubeApi, name: &str) -> Vec<String> {
    fake.get("v1", "Service", Some("default"), name)
        .map(|s| {
            s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_ingress(fake: &FakeKubeApi, name: &str, want: &[&str]) {
    wait_until(WAIT, &format!("{name} to have ingress {want:?}"), || {
        (ingress(fake, name) == want).then_some(())
    });
}

/// `reason: note` of the Events about Service `name`.
fn events(fake: &FakeKubeApi, name: &str) -> Vec<String> {
    fake.events()
        .iter()
        .filter(|e| e["regarding"]["name"] == name)
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap_or_default(),
                e["note"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn wait_event(fake: &FakeKubeApi, name: &str, want: &str) {
    wait_until(WAIT, &format!("an Event on {name}: {want}"), || {
        events(fake, name).iter().any(|e| e == want).then_some(())
    });
}

fn lease_holder(fake: &FakeKubeApi) -> Option<String> {
    let l = fake.get(
        "coordination.k8s.io/v1",
        "Lease",
        Some("fedplane-system"),
        "fedplane-vipd",
    )?;
    // `<node>_<random>`: the node's part.
    let id = l["spec"]["holderIdentity"].as_str()?;
    Some(id.rsplit_once('_').map_or(id, |(node, _)| node).to_owned())
}

fn wait_holder(fake: &FakeKubeApi, want: &str) {
    wait_until(WAIT, &format!("the Lease held by {want}"), || {
        (lease_holder(fake).as_deref() == Some(want)).then_some(())
    });
}

#[test]
fn services_created_changed_and_deleted_get_status_and_events() {
    let fake = FakeKubeApi::start();
    let dir = TempDir::new().expect("temp dir");
    // Assigned before this vipd started: kept.
    fake.apply(service(
        "old",
        &json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.4.0.5"}]}}}),
    ));
    let vipd = replica(&fake, dir.path(), "a", POOLS, &[]);
    vipd.wait_ready();
    wait_holder(&fake, "a");

    fake.apply(service("web", &json!({})));
    wait_ingress(&fake, "web", &["10.4.0.2"]);
    wait_event(&fake, "web", "AddressAssigned: assigned 10.4.0.2");
    fake.apply(service(
        "dual",
        &json!({"spec": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"]}}),
    ));
    wait_ingress(&fake, "dual", &["fd00:4::1", "10.4.0.3"]);
    fake.apply(service(
        "asks",
        &json!({"metadata": {"annotations": {"fedplane.io/load-balancer-ips": "10.5.0.11"}}}),
    ));
    wait_ingress(&fake, "asks", &["10.5.0.11"]);
    fake.apply(service(
        "taken",
        &json!({"metadata": {"annotations": {"fedplane.io/load-balancer-ips": "10.4.0.5"}}}),
    ));
    wait_event(
        &fake,
        "taken",
        "AddressRefused: 10.4.0.5 is in use by default/old",
    );
    fake.apply(service(
        "outside",
        &json!({"spec": {"loadBalancerIP": "192.0.2.1"}}),
    ));
    wait_event(
        &fake,
        "outside",
        "AddressRefused: 192.0.2.1 is in no address pool",
    );
    fake.apply(service(
        "metallb",
        &json!({"spec": {"loadBalancerClass": "metallb.io/metallb"}}),
    ));
    fake.apply(service("plain", &json!({"spec": {"type": "ClusterIP"}})));

    // No longer a LoadBalancer: cleared, and its address waits out the quarantine. (The
    // fake's apply replaces the status too: keep it, as a client's update would.)
    let mut web = fake
        .get("v1", "Service", Some("default"), "web")
        .expect("web");
    web["spec"]["type"] = json!("ClusterIP");
    fake.apply(web);
    wait_ingress(&fake, "web", &[]);
    wait_event(
        &fake,
        "web",
        "AddressReleased: no LoadBalancer addresses any more",
    );
    fake.apply(service("next", &json!({})));
    wait_ingress(&fake, "next", &["10.4.0.4"]);
    // Deleted: its addresses wait too.
    fake.delete("v1", "Service", Some("default"), "dual");
    fake.apply(service("last", &json!({})));
    wait_ingress(&fake, "last", &["10.4.0.6"]);
    // The pool is exhausted now (10.4.0.2 and .3 are in quarantine): an Event, no crash.
    fake.apply(service("more", &json!({})));
    wait_event(
        &fake,
        "more",
        "PoolExhausted: no free IPv4 address in pool default",
    );

    for (name, want) in [
        ("old", vec!["10.4.0.5"]),
        ("asks", vec!["10.5.0.11"]),
        ("taken", vec![]),
        ("outside", vec![]),
        ("metallb", vec![]),
        ("plain", vec![]),
        ("more", vec![]),
    ] {
        assert_eq!(ingress(&fake, name), want, "{name}");
    }
    assert!(events(&fake, "metallb").is_empty());
    assert!(events(&fake, "plain").is_empty());
    assert_eq!(vipd.metric("fedplane_vipd_leader"), Some(1.0));
    assert_eq!(
        vipd.metric("fedplane_vipd_quarantined_addresses"),
        Some(3.0)
    );
    // Each refusal is told once, not at every pass.
    let taken = events(&fake, "taken");
    assert_eq!(taken.len(), 1, "{taken:?}");
}

/// Every Service's addresses, for checking that nothing moved.
fn all_ingress(fake: &FakeKubeApi) -> BTreeMap<String, Vec<String>> {
    fake.list("v1", "Service")
        .iter()
        .filter_map(|s| {
            let name = s["metadata"]["name"].as_str()?.to_owned();
            let ips = ingress(fake, &name);
            (!ips.is_empty()).then_some((name, ips))
        })
        .collect()
}

#[test]
fn the_lease_lost_and_regained_moves_no_address() {
    let fake = FakeKubeApi::start();
    let dir = TempDir::new().expect("temp dir");
    let a = replica(&fake, dir.path(), "a", POOLS, &[]);
    a.wait_ready();
    wait_holder(&fake, "a");
    let b = replica(&fake, dir.path(), "b", POOLS, &[]);
    b.wait_ready();
    for name in ["s1", "s2", "s3"] {
        fake.apply(service(name, &json!({})));
    }
    // Written one by one, in no set order: wait for each.
    for (name, ip) in [("s1", "10.4.0.2"), ("s2", "10.4.0.3"), ("s3", "10.4.0.4")] {
        wait_ingress(&fake, name, &[ip]);
    }
    let before = all_ingress(&fake);
    assert_eq!(before.len(), 3, "{before:?}");
    assert_eq!(b.metric("fedplane_vipd_leader"), Some(0.0));

    // a freezes past its Lease: b takes over and serves a new Service.
    a.daemon.signal("STOP");
    wait_holder(&fake, "b");
    fake.apply(service("s4", &json!({})));
    wait_ingress(&fake, "s4", &["10.4.0.5"]);
    // a wakes up past its renew deadline: it sees b's Lease and writes nothing.
    a.daemon.signal("CONT");
    wait_until(WAIT, "a to stand by", || {
        (a.metric("fedplane_vipd_leader") == Some(0.0)).then_some(())
    });
    // b stops (SIGTERM releases the Lease): a regains it at once and serves a new Service.
    let mut b = b;
    b.daemon.signal("TERM");
    b.daemon.wait_exit(WAIT);
    wait_holder(&fake, "a");
    fake.apply(service("s5", &json!({})));
    wait_ingress(&fake, "s5", &["10.4.0.6"]);

    let after = all_ingress(&fake);
    for (name, ips) in &before {
        assert_eq!(&after[name], ips, "{name} moved");
    }
    assert_eq!(after.len(), 5, "{after:?}");
    // Every status write was an assignment: no address was ever written twice. Each Event is
    // posted after its status write, so wait for the fifth.
    let assigned = || -> Vec<String> {
        fake.events()
            .iter()
            .filter(|e| e["reason"] == "AddressAssigned")
            .map(|e| {
                e["regarding"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    wait_until(WAIT, "five AddressAssigned Events", || {
        (assigned().len() >= 5).then_some(())
    });
    assert_eq!(assigned().len(), 5, "{:?}", assigned());
}

#[test]
fn two_replicas_racing_assign_each_address_once() {
    let fake = FakeKubeApi::start();
    let dir = TempDir::new().expect("temp dir");
    let pools = "pools:\n  - name: default\n    addresses: [10.8.0.0/24]\n";
    for i in 0..40 {
        fake.apply(service(&format!("s{i:02}"), &json!({})));
    }
    let a = replica(&fake, dir.path(), "a", pools, &[]);
    let b = replica(&fake, dir.path(), "b", pools, &[]);
    wait_until(WAIT, "all 40 Services assigned", || {
        (all_ingress(&fake).len() == 40).then_some(())
    });
    let all = all_ingress(&fake);
    let mut ips: Vec<&String> = all.values().flatten().collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 40, "an address assigned twice: {all:?}");
    // Older Services first, in name order for equal timestamps: s00 gets the lowest.
    assert_eq!(all["s00"], ["10.8.0.1"]);
    // One writer: every assignment Event comes from the Lease holder. An Event is posted
    // after its status write, so the last one may still be on its way.
    let holder = lease_holder(&fake).expect("a Lease holder");
    let writers: Vec<String> = wait_until(WAIT, "40 AddressAssigned Events", || {
        let writers: Vec<String> = fake
            .events()
            .iter()
            .filter(|e| e["reason"] == "AddressAssigned")
            .map(|e| {
                e["reportingInstance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        (writers.len() >= 40).then_some(writers)
    });
    assert_eq!(writers.len(), 40);
    assert!(writers.iter().all(|w| *w == holder), "{writers:?}");
    drop((a, b));
}

#[test]
fn a_changed_pool_configmap_serves_new_services_and_old_addresses_stay() {
    let fake = FakeKubeApi::start();
    let dir = TempDir::new().expect("temp dir");
    let configmap = |text: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"namespace": "fedplane-system", "name": "vipd-pools"},
               "data": {"config.yaml": text}})
    };
    fake.apply(configmap(
        "pools:\n  - name: first\n    addresses: [10.6.0.0/29]\n",
    ));
    fake.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"namespace": "kube-system", "name": "vip-configmap"},
        "data": {"10.4.0.50": "default/echoheaders", "not-an-ip": "default/x"}}));
    let vipd = replica(
        &fake,
        dir.path(),
        "a",
        "pools: []\n",
        &[
            "--pools-configmap",
            "fedplane-system/vipd-pools",
            "--legacy-configmap",
            "kube-system/vip-configmap",
        ],
    );
    vipd.wait_ready();
    fake.apply(service("s1", &json!({})));
    wait_ingress(&fake, "s1", &["10.6.0.1"]);
    // Migration: the legacy address is kept for its Service, though in no pool.
    fake.apply(service("echoheaders", &json!({})));
    wait_ingress(&fake, "echoheaders", &["10.4.0.50"]);

    fake.apply(configmap(
        "pools:\n  - name: second\n    addresses: [10.7.0.0/29]\n",
    ));
    // The ConfigMap and the Services are separate watches: wait until the change is seen.
    wait_until(WAIT, "the new pools in use", || {
        vipd.daemon
            .output()
            .contains("pools from the ConfigMap in use pools=[\"second\"]")
            .then_some(())
    });
    fake.apply(service("s2", &json!({})));
    wait_ingress(&fake, "s2", &["10.7.0.1"]);
    // A broken ConfigMap is ignored: the last valid pools stay.
    fake.apply(configmap(
        "pools: [{name: bad, addresses: [10.9.0.1/24]}]\n",
    ));
    wait_until(WAIT, "the broken ConfigMap seen", || {
        vipd.daemon
            .output()
            .contains("pool ConfigMap ignored")
            .then_some(())
    });
    fake.apply(service("s3", &json!({})));
    wait_ingress(&fake, "s3", &["10.7.0.2"]);
    assert_eq!(ingress(&fake, "s1"), ["10.6.0.1"], "an old address moved");
    assert_eq!(ingress(&fake, "echoheaders"), ["10.4.0.50"]);
    let mut vipd = vipd;
    assert!(vipd.daemon.is_running());
    let log = vipd.daemon.output();
    assert!(
        log.contains("pool ConfigMap ignored") && log.contains("host bits are set"),
        "{log}"
    );
    assert!(log.contains("not-an-ip"), "{log}");
}

#[test]
fn an_unreachable_api_is_waited_for_and_bad_settings_are_refused() {
    let fake = FakeKubeApi::start();
    fake.set_reachable(false);
    let dir = TempDir::new().expect("temp dir");
    let mut vipd = replica(&fake, dir.path(), "a", POOLS, &[]);
    wait_until(WAIT, "an unready answer", || {
        http_get(&vipd.http, "/readyz").filter(|(c, _)| *c == 503)
    });
    fake.apply(service("web", &json!({})));
    fake.set_reachable(true);
    wait_ingress(&fake, "web", &["10.4.0.2"]);
    assert!(vipd.daemon.is_running());

    let bad = replica(
        &fake,
        dir.path(),
        "b",
        "pools: [{name: a, addresses: [10.0.0.0/24]}, {name: b, addresses: [10.0.0.9]}]\n",
        &[],
    );
    let mut bad = bad;
    let status = bad.daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(2));
    assert!(
        bad.daemon.output().contains("10.0.0.9 is in pools a and b"),
        "{}",
        bad.daemon.output()
    );
}

/// The shared watch of `fedplane_ops::kube`: an outage is logged once per watch, and a watch whose
/// history was compacted meanwhile (410 Gone) lists again, which is no failure; what changed
/// during the outage is then served.
#[test]
fn an_outage_then_compaction_is_relisted() {
    let fake = FakeKubeApi::start();
    let dir = TempDir::new().expect("temp dir");
    let vipd = replica(&fake, dir.path(), "a", POOLS, &[]);
    vipd.wait_ready();
    fake.apply(service("before", &json!({})));
    wait_ingress(&fake, "before", &["10.4.0.2"]);
    fake.set_reachable(false);
    wait_until(WAIT, "the outage to be noticed", || {
        vipd.daemon.output().contains("watch failed").then_some(())
    });
    fake.apply(service("during", &json!({})));
    fake.compact();
    fake.set_reachable(true);
    wait_ingress(&fake, "during", &["10.4.0.3"]);
    let log = vipd.daemon.output();
    assert!(
        log.contains("watch expired (410 Gone); listing again"),
        "{log}"
    );
    assert!(log.contains("Kubernetes API answers again"), "{log}");
    // Once per watch (the Services', and the speaker Pods'), not at every retry.
    let failed = |kind: &str| {
        log.lines()
            .filter(|l| l.contains("watch failed") && l.contains(&format!("kind={kind}")))
            .count()
    };
    assert_eq!((failed("Service"), failed("Pod")), (1, 1), "{log}");
}
