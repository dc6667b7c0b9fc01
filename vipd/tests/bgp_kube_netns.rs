//! BGP mode in Kubernetes mode, as root, in network namespaces: the Kubernetes API fake on the
//! lan, an FRR router, and three nodes running fedplane-vipd --kubernetes --bgp with BIRD. The
//! leader assigns the Services' addresses from a `mode: bgp` pool; each node announces what
//! `externalTrafficPolicy` and the ready EndpointSlices say: `Local` only from nodes with a
//! ready endpoint (withdrawn as the last one goes), `Cluster` from every node while some
//! endpoint is ready anywhere, nothing from a cordoned node.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use fedplane_testkit::frr::{Frr, RouterConfig};
use fedplane_testkit::kube_fake::{FakeKubeApi, Options, write_kubeconfig};
use fedplane_testkit::netns::{Host, Lan};
use fedplane_testkit::{Daemon, require_program, wait_until};
use serde_json::{Value, json};
use tempfile::TempDir;

mod common;
use common::slice;

const WAIT: Duration = Duration::from_secs(30);

fn vipd(node: &Host, name: &str, kubeconfig: &Path, dir: &Path) -> Daemon {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        "pools:\n  - name: rack\n    addresses: [10.9.0.0/28]\n    mode: bgp\n\
         bgp:\n  asn: 65001\n  peers:\n    - {name: tor, address: 10.0.0.1, asn: 65000, bfd: true, hold_time: 3s}\n",
    )
    .expect("config");
    let run_dir = dir.join(format!("run-{name}"));
    let args: Vec<String> = [
        "--kubernetes",
        "--bgp",
        "--config",
        &config.to_string_lossy(),
        "--kubeconfig",
        &kubeconfig.to_string_lossy(),
        "--node-name",
        name,
        "--lease",
        "kube-system/fedplane-vipd",
        "--lease-duration",
        "2s",
        "--http",
        "127.0.0.1:9102",
        "--bgp-run-dir",
        &run_dir.to_string_lossy(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    node.spawn(Path::new(env!("CARGO_BIN_EXE_fedplane-vipd")), &args, &[])
}

fn node_object(name: &str, ip: &str, unschedulable: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"unschedulable": unschedulable},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": ip}]}})
}

fn service(name: &str, policy: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": name},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy,
                 "ports": [{"port": 8080}]}})
}

fn address(fake: &FakeKubeApi, name: &str) -> IpAddr {
    wait_until(WAIT, &format!("an address for {name}"), || {
        let s = fake.get("v1", "Service", Some("default"), name)?;
        s["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()?
            .parse()
            .ok()
    })
}

fn hops(nodes: &[&Host]) -> BTreeSet<IpAddr> {
    nodes.iter().map(|n| IpAddr::V4(n.ipv4)).collect()
}

#[test]
fn announcements_follow_the_traffic_policy_the_endpoints_and_the_nodes() {
    require_program("bird", "bird2");
    require_program("vtysh", "frr");
    let dir = TempDir::new().expect("temp dir");
    let mut lan = Lan::new();
    let api = lan.add_host("10.0.0.250/24", None);
    let router_host = lan.add_host("10.0.0.1/24", None);
    let router = Frr::start(
        &router_host,
        &RouterConfig {
            asn: 65000,
            listen_range: "10.0.0.0/24".into(),
            peer_asn: 65001,
            bfd: true,
            timers: (1, 3),
        },
    );
    let nodes: Vec<Host> = (1..=3)
        .map(|i| lan.add_host(&format!("10.0.0.1{i}/24"), None))
        .collect();
    let fake = FakeKubeApi::start_with(Options {
        netns: Some((api.ns.clone(), "10.0.0.250".parse().expect("ip"))),
        ..Options::default()
    });
    for (i, n) in nodes.iter().enumerate() {
        fake.apply(node_object(
            &format!("n{}", i + 1),
            &n.ipv4.to_string(),
            false,
        ));
    }
    let kubeconfig = write_kubeconfig(dir.path(), &[("member", &fake)]);
    let _vipds: Vec<Daemon> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| vipd(n, &format!("n{}", i + 1), &kubeconfig, dir.path()))
        .collect();
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];

    // Local: only the nodes with a ready endpoint.
    fake.apply(slice("web", &["n1", "n3"]));
    fake.apply(service("web", "Local"));
    let web = address(&fake, "web");
    router.await_nexthops(web, &hops(&[n1, n3]), WAIT);
    // The last endpoint on n3 goes: n3 withdraws; it comes back: n3 announces again.
    // FEDPLANE_BGP_ROUNDS: how many times (benches/vipd-failover reads the figures).
    let rounds: usize = std::env::var("FEDPLANE_BGP_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let (mut gone, mut back) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        fake.apply(slice("web", &["n1"]));
        router.await_nexthops(web, &hops(&[n1]), WAIT);
        gone.push(started.elapsed());
        let started = Instant::now();
        fake.apply(slice("web", &["n1", "n3"]));
        router.await_nexthops(web, &hops(&[n1, n3]), WAIT);
        back.push(started.elapsed());
    }
    eprintln!(
        "BGP endpoint rounds={rounds} gone_p50_ms={:.1} gone_p99_ms={:.1} back_p50_ms={:.1} back_p99_ms={:.1}",
        percentile(&mut gone, 50),
        percentile(&mut gone, 99),
        percentile(&mut back, 50),
        percentile(&mut back, 99)
    );

    // Cluster: every node while an endpoint is ready anywhere.
    fake.apply(slice("api", &["n2"]));
    fake.apply(service("api", "Cluster"));
    let api_ip = address(&fake, "api");
    router.await_nexthops(api_ip, &hops(&[n1, n2, n3]), WAIT);
    // A cordoned node withdraws; uncordoned, it announces again.
    fake.apply(node_object("n2", "10.0.0.12", true));
    router.await_nexthops(api_ip, &hops(&[n1, n3]), WAIT);
    fake.apply(node_object("n2", "10.0.0.12", false));
    router.await_nexthops(api_ip, &hops(&[n1, n2, n3]), WAIT);
    // No endpoint anywhere: withdrawn everywhere.
    fake.apply(slice("api", &[]));
    router.await_nexthops(api_ip, &BTreeSet::new(), WAIT);
    // The Local Service was not touched by any of it.
    assert_eq!(router.nexthops(web), hops(&[n1, n3]));
    drop(lan);
}

/// The `p`th percentile of `v`, in milliseconds.
fn percentile(v: &mut [Duration], p: usize) -> f64 {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)].as_secs_f64() * 1e3
}
