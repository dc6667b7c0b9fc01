//! fedplane-vipd's Lease and assignment across leader changes, against the Kubernetes API fake
//! (`testkit/src/kube_fake`), with replicas that run no VRRP group (no root needed): the holder
//! identity is unique per process, a standby waits out the holder's `leaseDurationSeconds`, and
//! a new holder plans from a quorum list and from its own writes, not from a stale watch cache.

use std::path::Path;
use std::time::Duration;

use fedplane_testkit::kube_fake::{FakeKubeApi, write_kubeconfig};
use fedplane_testkit::{Daemon, free_port, http_get, wait_until};
use serde_json::{Value, json};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(20);
const POOLS: &str =
    "pools:\n  - name: default\n    addresses: [10.4.0.0/29]\n    reserved: [10.4.0.1]\n";

/// One fedplane-vipd replica in Kubernetes mode without VRRP groups, Lease of 2 s.
struct Replica {
    /// Held: the process is stopped on drop.
    _daemon: Daemon,
    http: String,
}

fn replica(fake: &FakeKubeApi, dir: &Path, node: &str) -> Replica {
    let kubeconfig = write_kubeconfig(dir, &[("member", fake)]);
    let file = dir.join(format!("vipd-{node}.yaml"));
    std::fs::write(&file, POOLS).expect("write the config");
    let http = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
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
    let daemon = Daemon::start(Path::new(env!("CARGO_BIN_EXE_fedplane-vipd")), &args, &[]);
    Replica {
        _daemon: daemon,
        http,
    }
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

    fn wait_leader(&self) {
        wait_until(WAIT, "the replica to lead", || {
            (self.metric("fedplane_vipd_leader") == Some(1.0)).then_some(())
        });
    }
}

fn service(name: &str, extra: &Value) -> Value {
    let mut s = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    });
    if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            match (s.get_mut(k), v) {
                (Some(Value::Object(a)), Value::Object(b)) => {
                    a.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                _ => {
                    s.insert(k.clone(), v.clone());
                }
            }
        }
    }
    s
}

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

fn lease(fake: &FakeKubeApi) -> Option<Value> {
    fake.get(
        "coordination.k8s.io/v1",
        "Lease",
        Some("fedplane-system"),
        "fedplane-vipd",
    )
}

/// A Lease held by `holder` for `secs`, renewed now (as if by a live replica).
fn held_lease(holder: &str, secs: i64) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"namespace": "fedplane-system", "name": "fedplane-vipd"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": secs,
                 "renewTime": "2026-01-01T00:00:00.000000Z"}})
}

/// A pod restarted on node `a` while the Lease is still held by the earlier process on `a`
/// (written as the bare node name, or as `a_<random>`): the new process is someone else, so it
/// waits; and it waits out the holder's 30 s, not its own `--lease-duration 2s`.
#[test]
fn a_restarted_process_does_not_take_its_nodes_lease_for_its_own() {
    let fake = FakeKubeApi::start();
    let dir = TempDir::new().expect("temp dir");
    fake.apply(held_lease("a", 30));
    let vipd = replica(&fake, dir.path(), "a");
    vipd.wait_ready();
    // Past its own Lease duration twice over.
    std::thread::sleep(Duration::from_secs(5));
    let l = lease(&fake).expect("the Lease");
    assert_eq!(l["spec"]["holderIdentity"], "a", "taken over: {l}");
    assert_eq!(vipd.metric("fedplane_vipd_leader"), Some(0.0));
    // Once the holder lets it go, the new process takes it under its own identity.
    fake.apply(held_lease("", 1));
    vipd.wait_leader();
    let id = lease(&fake).expect("the Lease")["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (node, random) = id.split_once('_').expect("<node>_<random>");
    assert_eq!(node, "a");
    assert_eq!(random.len(), 16, "{id}");
}

/// The old leader wrote an address to `s1` just before it died, and this replica's watch
/// missed that event: on takeover it lists the Services (a quorum read) and does not give
/// `s1`'s address to `s2`.
#[test]
fn a_new_leader_plans_from_a_quorum_list_not_from_its_stale_cache() {
    let fake = FakeKubeApi::start();
    let dir = TempDir::new().expect("temp dir");
    fake.apply(held_lease("ghost_0000000000000001", 2));
    let vipd = replica(&fake, dir.path(), "b");
    vipd.wait_ready();
    assert_eq!(vipd.metric("fedplane_vipd_leader"), Some(0.0));
    fake.lose_watch_events("v1", "Service", Some("default"), "s1");
    fake.apply(service(
        "s1",
        &json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.4.0.2"}]}}}),
    ));
    fake.apply(service("s2", &json!({})));
    // The ghost never renews: b takes over after 2 s and assigns s2.
    vipd.wait_leader();
    wait_until(WAIT, "s2 assigned", || {
        (!ingress(&fake, "s2").is_empty()).then_some(())
    });
    assert_eq!(ingress(&fake, "s1"), ["10.4.0.2"]);
    assert_eq!(
        ingress(&fake, "s2"),
        ["10.4.0.3"],
        "s1's address given twice"
    );
    // Later passes too plan from the list, though the cache still lacks s1.
    fake.apply(service("s3", &json!({})));
    wait_until(WAIT, "s3 assigned", || {
        (!ingress(&fake, "s3").is_empty()).then_some(())
    });
    assert_eq!(ingress(&fake, "s3"), ["10.4.0.4"]);
}

/// The leader's own status write whose watch event is lost: the next pass plans from what it
/// wrote, so a Service asking for that address is refused rather than given it too.
#[test]
fn a_leader_plans_from_its_own_writes_until_the_watch_shows_them() {
    let fake = FakeKubeApi::start();
    let dir = TempDir::new().expect("temp dir");
    let vipd = replica(&fake, dir.path(), "a");
    vipd.wait_ready();
    vipd.wait_leader();
    fake.lose_status_write_events("v1", "Service", Some("default"), "s1");
    fake.apply(service("s1", &json!({})));
    wait_until(WAIT, "s1 assigned", || {
        (ingress(&fake, "s1") == ["10.4.0.2"]).then_some(())
    });
    fake.apply(service(
        "s3",
        &json!({"metadata": {"annotations": {"fedplane.io/load-balancer-ips": "10.4.0.2"}}}),
    ));
    let refused = "AddressRefused: 10.4.0.2 is in use by default/s1";
    wait_until(WAIT, &format!("an Event on s3: {refused}"), || {
        fake.events()
            .iter()
            .filter(|e| e["regarding"]["name"] == "s3")
            .any(|e| {
                format!(
                    "{}: {}",
                    e["reason"].as_str().unwrap_or_default(),
                    e["note"].as_str().unwrap_or_default()
                ) == refused
            })
            .then_some(())
    });
    assert_eq!(
        ingress(&fake, "s3"),
        Vec::<String>::new(),
        "s1's address given twice"
    );
    assert_eq!(ingress(&fake, "s1"), ["10.4.0.2"]);
    // Once the watch shows s1 again, the cache is right and planning goes on from it.
    fake.hear_watch_events("v1", "Service", Some("default"), "s1");
    fake.apply(service("s4", &json!({})));
    wait_until(WAIT, "s4 assigned", || {
        (ingress(&fake, "s4") == ["10.4.0.3"]).then_some(())
    });
}
