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
use fedplane_vipd::services::pick_group;
use serde_json::json;
use tempfile::TempDir;

mod common;
use common::{slice, web};

const WAIT: Duration = Duration::from_secs(20);
/// Adverts every 100 ms: a backup of priority 100 takes over 3 × 100 ms + skew (60.9 ms) after
/// the master's last advert; "well under a second" is the target.
const FAILOVER_TARGET: Duration = Duration::from_millis(1000);

fn vipd(node: &Host, name: &str, priority: u8, kubeconfig: &Path, dir: &Path) -> Daemon {
    vipd_with(node, name, priority, kubeconfig, dir, &[])
}

/// [`vipd`] with environment variables (`POD_NAME`, for the allowlist of speakers).
fn vipd_with(
    node: &Host,
    name: &str,
    priority: u8,
    kubeconfig: &Path,
    dir: &Path,
    env: &[(&str, &str)],
) -> Daemon {
    vipd_groups(node, name, &[(61, priority)], kubeconfig, dir, env)
}

/// [`vipd_with`] running one group per `(vrid, priority)`.
fn vipd_groups(
    node: &Host,
    name: &str,
    groups: &[(u8, u8)],
    kubeconfig: &Path,
    dir: &Path,
    env: &[(&str, &str)],
) -> Daemon {
    let config = dir.join(format!("{name}.yaml"));
    let mut text = String::from("groups:\n");
    for (vrid, priority) in groups {
        text.push_str(&format!(
            "  - vrid: {vrid}\n    interface: eth0\n    family: ipv4\n    priority: {priority}\n    advert_interval: 100ms\n"
        ));
    }
    text.push_str("pools:\n  - name: default\n    addresses: [10.0.0.64/28]\n");
    std::fs::write(&config, text).expect("write the config");
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
    node.spawn(Path::new(env!("CARGO_BIN_EXE_fedplane-vipd")), &args, env)
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

/// The Pod of fedplane-vipd on `node` (hostNetwork: the node's address), as the DaemonSet
/// makes it; vipd annotates it with its VRRP sources.
fn vipd_pod(name: &str, ip: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "kube-system", "name": format!("vipd-{name}"),
                     "labels": {"app.kubernetes.io/name": "fedplane-vipd"}},
        "spec": {"hostNetwork": true, "nodeName": name},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "hostIP": ip, "hostIPs": [{"ip": ip}]}})
}

/// The value of the first sample of `name` whose line contains `label`, from the vipd in `node`.
fn metric(node: &Host, name: &str, label: &str) -> f64 {
    node.try_run(&["curl", "-sf", "http://127.0.0.1:9102/metrics"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_forged_advert_from_a_host_that_is_no_vipd_node_is_refused_and_reported() {
    let dir = TempDir::new().expect("temp dir");
    let mut lan = Lan::new();
    let api = lan.add_host("10.0.0.250/24", None);
    let node1 = lan.add_host("10.0.0.1/24", None);
    let node2 = lan.add_host("10.0.0.2/24", None);
    let attacker = lan.add_host("10.0.0.66/24", None);
    let fake = FakeKubeApi::start_with(Options {
        netns: Some((api.ns.clone(), "10.0.0.250".parse().expect("ip"))),
        ..Options::default()
    });
    fake.apply(vipd_pod("node1", "10.0.0.1"));
    fake.apply(vipd_pod("node2", "10.0.0.2"));
    let kubeconfig = write_kubeconfig(dir.path(), &[("member", &fake)]);
    let env1 = [("POD_NAME", "vipd-node1")];
    let env2 = [("POD_NAME", "vipd-node2")];
    let _vipd1 = vipd_with(&node1, "node1", 150, &kubeconfig, dir.path(), &env1);
    let _vipd2 = vipd_with(&node2, "node2", 100, &kubeconfig, dir.path(), &env2);
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "echoheaders"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 8080}]},
    }));
    let ip: IpAddr = "10.0.0.65".parse().expect("ip");
    wait_until(WAIT, "node1 to hold the address", || {
        (node1.has_address(ip) && !node2.has_address(ip)).then_some(())
    });
    // Both nodes published their sources: the allowlist is on.
    wait_until(WAIT, "both Pods annotated with their VRRP sources", || {
        let annotated = |n: &str| {
            fake.get("v1", "Pod", Some("kube-system"), n)
                .is_some_and(|p| {
                    p["metadata"]["annotations"]
                        .as_object()
                        .is_some_and(|a| !a.is_empty())
                })
        };
        (annotated("vipd-node1") && annotated("vipd-node2")).then_some(())
    });
    // The attacker sends priority-254 adverts listing the address, 20 over a second.
    let script = r#"
import socket, struct, time
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
body = bytes([0x31, 61, 254, 1, 0, 10, 0, 0, 10, 0, 0, 65])
pseudo = socket.inet_aton("10.0.0.66") + socket.inet_aton("224.0.0.18") + struct.pack("!BBH", 0, 112, len(body))
pkt = body[:6] + struct.pack("!H", csum(pseudo + body)) + body[8:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
for _ in range(20):
    s.sendto(pkt, ("224.0.0.18", 0))
    time.sleep(0.05)
"#;
    attacker.run(&["python3", "-c", script]);
    wait_until(
        WAIT,
        "the forged adverts refused as foreign on node1",
        || {
            (metric(
                &node1,
                "fedplane_vipd_foreign_adverts_total",
                "source=\"10.0.0.66\"",
            ) >= 20.0)
                .then_some(())
        },
    );
    assert!(
        node1.has_address(ip) && !node2.has_address(ip),
        "a master stepped down"
    );
    assert_eq!(metric(&node1, "fedplane_vipd_state", "vrid"), 2.0);
    wait_until(
        WAIT,
        "a ForeignVRRPSpeaker Warning Event naming the attacker",
        || {
            fake.events().into_iter().find(|e| {
                e["reason"] == "ForeignVRRPSpeaker"
                    && e["type"] == "Warning"
                    && e["note"].as_str().is_some_and(|m| m.contains("10.0.0.66"))
            })
        },
    );
    drop(lan);
}

/// Which of `nodes` hold `ip` (their names).
fn holders(nodes: &[(&str, &Host)], ip: IpAddr) -> Vec<String> {
    nodes
        .iter()
        .filter(|(_, h)| h.has_address(ip))
        .map(|(n, _)| (*n).to_owned())
        .collect()
}

#[test]
fn the_address_of_a_local_service_is_held_only_where_a_ready_endpoint_runs() {
    let dir = TempDir::new().expect("temp dir");
    let mut lan = Lan::new();
    let api = lan.add_host("10.0.0.250/24", None);
    let hosts: Vec<Host> = (1..=3)
        .map(|i| lan.add_host(&format!("10.0.0.{i}/24"), None))
        .collect();
    let client = lan.add_host("10.0.0.100/24", None);
    let fake = FakeKubeApi::start_with(Options {
        netns: Some((api.ns.clone(), "10.0.0.250".parse().expect("ip"))),
        ..Options::default()
    });
    let kubeconfig = write_kubeconfig(dir.path(), &[("member", &fake)]);
    // Three groups, each mastered by another node (priority 150 on one, 100 and 50 on the
    // others), so each node masters one group.
    let names = ["node1", "node2", "node3"];
    let mut vipds = Vec::new();
    let mut webs = Vec::new();
    for (i, (host, name)) in hosts.iter().zip(names).enumerate() {
        fake.apply(vipd_pod(name, &format!("10.0.0.{}", i + 1)));
        let groups: Vec<(u8, u8)> = (0..3usize)
            .map(|g| {
                let vrid = 61 + u8::try_from(g).expect("vrid");
                let priority = [150, 100, 50][(g + 3 - i) % 3];
                (vrid, priority)
            })
            .collect();
        let pod = format!("vipd-{name}");
        webs.push(web(host, name, dir.path()));
        vipds.push(vipd_groups(
            host,
            name,
            &groups,
            &kubeconfig,
            dir.path(),
            &[("POD_NAME", pod.as_str())],
        ));
    }
    let nodes: Vec<(&str, &Host)> = names.iter().copied().zip(hosts.iter()).collect();

    fake.apply(slice("web", &["node2"]));
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 8080}]},
    }));
    let ip: IpAddr = wait_until(WAIT, "an address in the Service's status", || {
        let s = fake.get("v1", "Service", Some("default"), "web")?;
        s["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()?
            .parse()
            .ok()
    });
    let held_by = |want: &[&str]| {
        let want: Vec<String> = want.iter().map(ToString::to_string).collect();
        wait_until(WAIT, &format!("{ip} held by {want:?} alone"), || {
            (holders(&nodes, ip) == want).then_some(())
        });
    };
    held_by(&["node2"]);
    let got = wait_until(WAIT, "the client to reach node2", || {
        fetch(&client, ip).filter(|n| n == "node2")
    });
    assert_eq!(got, "node2");

    // The endpoint moves to node3: so does the address.
    let moved = Instant::now();
    fake.apply(slice("web", &["node3"]));
    held_by(&["node3"]);
    eprintln!("address followed its endpoint in {:?}", moved.elapsed());
    wait_until(WAIT, "the client to reach node3", || {
        fetch(&client, ip).filter(|n| n == "node3")
    });

    // No ready endpoint anywhere: held nowhere, and said so.
    fake.apply(slice("web", &[]));
    held_by(&[]);
    wait_until(WAIT, "the unheld gauge on node1", || {
        (metric(&hosts[0], "fedplane_vipd_local_addresses_unheld", "") == 1.0).then_some(())
    });

    // Endpoints on two nodes; the one holding it is killed. Group 61+g is mastered by node g
    // (150) with node g-1 as its backup (100): the pair is chosen so that the killed holder's
    // group passes to the node without an endpoint, which must not hold the address; the
    // address moves to the group the other endpoint node masters.
    let pick = |a: usize, b: usize| {
        let vrid = pick_group(ip, &[61 + a as u8, 61 + b as u8]).expect("a group");
        usize::from(vrid - 61)
    };
    let (a, b) = [(0, 1), (1, 2), (0, 2)]
        .into_iter()
        .find(|&(a, b)| {
            let backup = (pick(a, b) + 2) % 3;
            backup != a && backup != b
        })
        .expect("rendezvous picks are ordered, so some pair has it");
    let dead = pick(a, b);
    let survivor = if dead == a { b } else { a };
    let other = names[survivor];
    fake.apply(slice("web", &[names[a], names[b]]));
    held_by(&[names[dead]]);
    let bystander = 3 - a - b;
    vipds[dead].signal("KILL");
    let killed = Instant::now();
    // Watched at every poll until the survivor holds it: the node without an endpoint that
    // takes the dead node's group never holds the address, not even for a moment.
    let mut bystander_held = false;
    wait_until(WAIT, &format!("{other} to hold the address"), || {
        bystander_held |= hosts[bystander].has_address(ip);
        hosts[survivor].has_address(ip).then_some(())
    });
    eprintln!(
        "{other} held the address {:?} after {}'s vipd was killed (its group's new master has no endpoint)",
        killed.elapsed(),
        names[dead]
    );
    assert!(
        !bystander_held && !hosts[bystander].has_address(ip),
        "{} held the address without an endpoint",
        names[bystander]
    );
    // The killed vipd left the address on its interface (SIGKILL): take it off, as the node's
    // restart would; then no live node but the other endpoint node holds it.
    hosts[dead].run(&["ip", "addr", "del", &format!("{ip}/32"), "dev", "eth0"]);
    let live: Vec<(&str, &Host)> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != dead)
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(holders(&live, ip), [other]);
    wait_until(WAIT, &format!("the client to reach {other}"), || {
        fetch(&client, ip).filter(|n| n == other)
    });
    vipds[dead].wait_exit(WAIT);
    drop(lan);
}
