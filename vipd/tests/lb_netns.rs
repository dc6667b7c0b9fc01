//! LoadBalancer Services end to end, as root, in network namespaces: the Kubernetes API fake on
//! the lan, two nodes each running fedplane-vipd in Kubernetes mode and a web server (standing
//! in for kube-proxy and the pods behind the Service), and a client. A Service appears → an
//! address is assigned → the master node holds it → the client reaches it; the holder is killed
//! → the other node holds it within the failover target and the client reaches that one.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use fedplane_testkit::kube_fake::{FakeKubeApi, Options, write_kubeconfig};
use fedplane_testkit::netns::{Host, Lan};
use fedplane_testkit::{Daemon, wait_until};
use serde_json::json;
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(20);
/// Adverts every 100 ms: a backup of priority 100 takes over 3 × 100 ms + skew (60.9 ms) after
/// the master's last advert; "well under a second" is the target.
const FAILOVER_TARGET: Duration = Duration::from_millis(1000);

fn vipd(node: &Host, name: &str, priority: u8, kubeconfig: &Path, dir: &Path) -> Daemon {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "groups:\n  - vrid: 61\n    interface: eth0\n    family: ipv4\n    priority: {priority}\n    advert_interval: 100ms\n\
             pools:\n  - name: default\n    addresses: [10.0.0.64/28]\n"
        ),
    )
    .expect("write the config");
    let args: Vec<String> = [
        "--kubernetes",
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
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    node.spawn(Path::new(env!("CARGO_BIN_EXE_fedplane-vipd")), &args, &[])
}

/// A web server on port 8080 of `node` answering `/name` with the node's name.
fn web(node: &Host, name: &str, dir: &Path) -> Daemon {
    let root = dir.join(format!("www-{name}"));
    std::fs::create_dir_all(&root).expect("web root");
    std::fs::write(root.join("name"), name).expect("web page");
    let args: Vec<String> = [
        "-m",
        "http.server",
        "8080",
        "--bind",
        "0.0.0.0",
        "--directory",
    ]
    .iter()
    .map(ToString::to_string)
    .chain([root.to_string_lossy().into_owned()])
    .collect();
    node.spawn(Path::new("python3"), &args, &[])
}

/// What the client gets from `http://ip:8080/name`.
fn fetch(client: &Host, ip: IpAddr) -> Option<String> {
    client
        .try_run(&[
            "curl",
            "-sf",
            "--max-time",
            "1",
            &format!("http://{ip}:8080/name"),
        ])
        .ok()
}

#[test]
fn a_service_gets_an_address_a_node_holds_it_and_it_fails_over() {
    let dir = TempDir::new().expect("temp dir");
    let mut lan = Lan::new();
    let api = lan.add_host("10.0.0.250/24", None);
    let node1 = lan.add_host("10.0.0.1/24", None);
    let node2 = lan.add_host("10.0.0.2/24", None);
    let client = lan.add_host("10.0.0.100/24", None);
    let fake = FakeKubeApi::start_with(Options {
        netns: Some((api.ns.clone(), "10.0.0.250".parse().expect("ip"))),
        ..Options::default()
    });
    let kubeconfig = write_kubeconfig(dir.path(), &[("member", &fake)]);
    let _web1 = web(&node1, "node1", dir.path());
    let _web2 = web(&node2, "node2", dir.path());
    let mut vipd1 = vipd(&node1, "node1", 150, &kubeconfig, dir.path());
    let _vipd2 = vipd(&node2, "node2", 100, &kubeconfig, dir.path());

    fake.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "echoheaders"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 8080}]},
    }));
    let ip: IpAddr = wait_until(WAIT, "an address in the Service's status", || {
        let s = fake.get("v1", "Service", Some("default"), "echoheaders")?;
        s["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()?
            .parse()
            .ok()
    });
    assert_eq!(
        ip,
        "10.0.0.65".parse::<IpAddr>().expect("ip"),
        "lowest free"
    );
    wait_until(WAIT, "node1 (priority 150) to hold the address", || {
        (node1.has_address(ip) && !node2.has_address(ip)).then_some(())
    });
    let got = wait_until(WAIT, "the client to reach the Service", || {
        fetch(&client, ip)
    });
    assert_eq!(got, "node1");

    vipd1.signal("KILL");
    let killed = Instant::now();
    let taken = wait_until(WAIT, "node2 to hold the address", || {
        node2.has_address(ip).then(Instant::now)
    });
    let failover = taken - killed;
    eprintln!("failover after SIGKILL: {failover:?}");
    assert!(
        failover <= FAILOVER_TARGET,
        "failover took {failover:?}, target {FAILOVER_TARGET:?}"
    );
    let got = wait_until(WAIT, "the client to reach node2", || {
        fetch(&client, ip).filter(|n| n == "node2")
    });
    assert_eq!(got, "node2");
    vipd1.wait_exit(WAIT);
    drop(lan);
}
