//! What the VRRP namespace tests share: the daemon started with one group's flags, its metrics,
//! a LAN of hosts and a client, and waits on who holds an address and on announcements.
#![allow(dead_code)] // each test binary uses a part

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use fedplane_testkit::Daemon;
use fedplane_testkit::netns::{Host, Lan};
use fedplane_testkit::wait_until;

pub const VIP: &str = "192.0.2.100";
pub const VIP_CIDR: &str = "192.0.2.100/24";
pub const HTTP_PORT: u16 = 9102;
pub const SETTLE: Duration = Duration::from_secs(5);

pub fn vip() -> IpAddr {
    VIP.parse().expect("VIP")
}

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fedplane-vipd"))
}

/// Master_Down and Skew of a backup with `priority` at `interval`.
pub fn master_down(priority: u8, interval: Duration) -> Duration {
    interval * 3 + skew(priority, interval)
}

pub fn skew(priority: u8, interval: Duration) -> Duration {
    interval * (256 - u32::from(priority)) / 256
}

/// fedplane-vipd on `host` for one group (eth0, VRID 51, 100 ms adverts) plus `extra` flags,
/// which replace those defaults.
pub fn vipd(host: &Host, priority: u8, vips: &[&str], extra: &[&str]) -> Daemon {
    let priority = priority.to_string();
    let http = format!("127.0.0.1:{HTTP_PORT}");
    let defaults = [
        ("--interface", "eth0"),
        ("--vrid", "51"),
        ("--priority", priority.as_str()),
        ("--advert-interval", "100ms"),
        ("--http", http.as_str()),
    ];
    let mut args: Vec<String> = defaults
        .iter()
        .filter(|(flag, _)| !extra.contains(flag))
        .flat_map(|(flag, value)| [(*flag).to_owned(), (*value).to_owned()])
        .collect();
    for v in vips {
        args.push("--vip".into());
        args.push((*v).to_owned());
    }
    args.extend(extra.iter().map(ToString::to_string));
    host.spawn(binary(), &args, &[])
}

/// The Prometheus text of the vipd in `host`.
pub fn metrics(host: &Host) -> String {
    host.try_run(&[
        "curl",
        "-sf",
        &format!("http://127.0.0.1:{HTTP_PORT}/metrics"),
    ])
    .unwrap_or_default()
}

/// The value of the first sample of `name` whose labels contain `label`.
pub fn metric(host: &Host, name: &str, label: &str) -> f64 {
    metrics(host)
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the vipd in `host` reports state backup.
pub fn wait_backup(host: &Host, timeout: Duration) {
    wait_until(timeout, &format!("{} to be backup", host.ns), || {
        (metric(host, "fedplane_vipd_state", "vrid") == 1.0).then_some(())
    });
}

/// Waits until exactly `holder` of `hosts` has `ip`.
pub fn wait_holder(hosts: &[&Host], holder: &Host, ip: IpAddr, timeout: Duration) -> Instant {
    wait_until(timeout, &format!("{ip} on {} only", holder.ns), || {
        hosts
            .iter()
            .all(|h| h.has_address(ip) == (h.ns == holder.ns))
            .then(Instant::now)
    })
}

/// Checks for `period` that exactly one of `hosts` holds `ip` (steady state: never two masters).
pub fn assert_one_holder(hosts: &[&Host], ip: IpAddr, period: Duration) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        let n = hosts.iter().filter(|h| h.has_address(ip)).count();
        assert_eq!(n, 1, "{n} hosts hold {ip} in steady state");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A lan with `n` vipd hosts (192.0.2.11…) and a client (192.0.2.50).
pub fn lan(n: usize) -> (Lan, Vec<Host>, Host) {
    let mut lan = Lan::new();
    let hosts = (1..=n)
        .map(|i| {
            lan.add_host(
                &format!("192.0.2.{}/24", 10 + i),
                Some(&format!("fd00::{}/64", 10 + i)),
            )
        })
        .collect();
    let client = lan.add_host("192.0.2.50/24", Some("fd00::50/64"));
    (lan, hosts, client)
}

/// The client learns the VIP's MAC (by pinging it) and watches its neighbour table.
pub fn client_watching(
    client: &Host,
    ip: IpAddr,
    expect_mac: &str,
) -> fedplane_testkit::netns::NeighMonitor {
    let mon = client.monitor_neigh();
    wait_until(SETTLE, "the client to reach the VIP", || {
        client.ping(ip, Duration::from_millis(500)).then_some(())
    });
    assert_eq!(client.neigh_lladdr(ip).as_deref(), Some(expect_mac));
    mon
}

/// Waits for the client's neighbour entry of `ip` to move to `mac`: the GARP/NA arrived.
pub fn wait_announced(
    mon: &fedplane_testkit::netns::NeighMonitor,
    ip: IpAddr,
    mac: &str,
    timeout: Duration,
) -> Instant {
    let needle = format!("{ip} ");
    mon.wait_for(timeout, |l| {
        l.starts_with(&needle) && l.contains(mac) && !l.starts_with("Deleted")
    })
    .unwrap_or_else(|| {
        panic!(
            "no announcement of {ip} at {mac} within {timeout:?}; saw {:?}",
            mon.lines()
        )
    })
    .0
}

/// An address.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The body and status code of the vipd's `/readyz` in `host` ("… 503").
pub fn readyz(host: &Host) -> String {
    host.try_run(&[
        "curl",
        "-s",
        "-w",
        " %{http_code}",
        &format!("http://127.0.0.1:{HTTP_PORT}/readyz"),
    ])
    .unwrap_or_default()
}

/// Waits until the vipd in `host` reports `state` for the group matching `label`.
pub fn wait_state(host: &Host, label: &str, state: f64) {
    wait_until(
        SETTLE,
        &format!("{} {label} in state {state}", host.ns),
        || (metric(host, "fedplane_vipd_state", label) == state).then_some(()),
    );
}

/// fedplane-vipd on `host` with the groups of the config file `config` (eth0, 100 ms adverts).
pub fn vipd_config(host: &Host, config: &str) -> Daemon {
    host.spawn(
        binary(),
        &[
            "--interface".into(),
            "eth0".into(),
            "--advert-interval".into(),
            "100ms".into(),
            "--config".into(),
            config.to_owned(),
            "--http".into(),
            format!("127.0.0.1:{HTTP_PORT}"),
        ],
        &[],
    )
}

/// A web server on port 8080 of `node` (standing in for kube-proxy and the pods) answering
/// `/name` with `name`; its files under `dir`.
pub fn web(node: &Host, name: &str, dir: &Path) -> Daemon {
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
    let server = node.spawn(Path::new("python3"), &args, &[]);
    // Serving before the test goes on: a loaded machine takes seconds to start Python.
    let page = "http://127.0.0.1:8080/name";
    let served = fedplane_testkit::wait_until_or(Duration::from_secs(30), || {
        node.try_run(&["curl", "-sf", "--max-time", "2", page]).ok()
    });
    assert_eq!(
        served.as_deref(),
        Some(name),
        "the web server of {name} did not serve {page} within 30 s"
    );
    server
}

/// An EndpointSlice of Service `default/<service>` with one ready endpoint on each of `nodes`.
pub fn slice(service: &str, nodes: &[&str]) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            serde_json::json!({"addresses": [format!("10.1.0.{}", i + 1)], "nodeName": n,
                               "conditions": {"ready": true}})
        })
        .collect();
    serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": format!("{service}-abc"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "endpoints": endpoints})
}
