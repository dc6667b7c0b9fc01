//! Advert jitter of fedplane-vipd while Kubernetes mode runs big assignment passes: one node in
//! a network namespace is the VRRP master of one group (adverts every `--interval-ms`), in
//! Kubernetes mode against the API server fake on the same lan; a third namespace captures the
//! adverts with a raw socket (kernel receive timestamps, `SO_TIMESTAMPNS`). Two phases:
//!
//! - idle: no Service, for `--seconds`;
//! - load: `--services` LoadBalancer Services appear at once against a pool of 14 addresses
//!   (exhausted: every other Service gets a `PoolExhausted` notice), then one Service changes
//!   every 100 ms (each change is a pass over all of them), for `--seconds`.
//!
//! It prints, per phase, the number of adverts and the gaps between consecutive ones (p50, p99,
//! max) against the configured interval. `--vipd PATH` measures another build of
//! fedplane-vipd (e.g. one built at an older commit) with the same harness.
//!
//!     cargo bench -p fedplane-vipd --bench jitter -- [--services 10000] [--seconds 20]
//!         [--interval-ms 100] [--vipd PATH]            (as root)

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fedplane_testkit::kube_fake::{FakeKubeApi, Options, write_kubeconfig};
use fedplane_testkit::netns::{Lan, require_root};
use fedplane_testkit::wait_until;
use serde_json::json;

/// Prints `<kernel receive time in ns> <source>` for each VRRP packet heard on the host.
const CAPTURE: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton("224.0.0.18") + socket.inet_aton(sys.argv[1]))
s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
print("capturing", flush=True)
while True:
    data, anc, flags, addr = s.recvmsg(4096, 64)
    for level, kind, d in anc:
        if level == socket.SOL_SOCKET and kind == 35:
            sec, nsec = struct.unpack("qq", d[:16])
            print(sec * 1000000000 + nsec, addr[0], flush=True)
"#;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

fn service(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": format!("ns{}", i % 100), "name": format!("svc{i}")},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
    })
}

/// `(count, p50, p99, max)` of the gaps, in ms.
fn gaps(times: &[u128]) -> (usize, f64, f64, f64) {
    let mut g: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .collect();
    g.sort_by(f64::total_cmp);
    let at = |q: f64| g[((g.len() - 1) as f64 * q).round() as usize];
    (times.len(), at(0.5), at(0.99), g[g.len() - 1])
}

fn main() {
    let mut services = 10_000_usize;
    let mut seconds = 20_u64;
    let mut interval_ms = 100_u64;
    let mut vipd = PathBuf::from(env!("CARGO_BIN_EXE_fedplane-vipd"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--services" => services = value().parse().expect("--services N"),
            "--seconds" => seconds = value().parse().expect("--seconds N"),
            "--interval-ms" => interval_ms = value().parse().expect("--interval-ms N"),
            "--vipd" => vipd = PathBuf::from(value()),
            "--bench" => {}
            other => panic!(
                "unknown argument {other:?} (--services N, --seconds N, --interval-ms N, --vipd PATH)"
            ),
        }
    }
    require_root();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut lan = Lan::new();
    let api = lan.add_host("10.0.0.250/24", None);
    let node = lan.add_host("10.0.0.1/24", None);
    let watcher = lan.add_host("10.0.0.100/24", None);
    let fake = FakeKubeApi::start_with(Options {
        netns: Some((api.ns.clone(), "10.0.0.250".parse().expect("ip"))),
        ..Options::default()
    });
    let kubeconfig = write_kubeconfig(dir.path(), &[("member", &fake)]);
    let config = dir.path().join("vipd.yaml");
    std::fs::write(
        &config,
        format!(
            "groups:\n  - vrid: 61\n    interface: eth0\n    family: ipv4\n    priority: 200\n    advert_interval: {interval_ms}ms\n\
             pools:\n  - name: default\n    addresses: [10.0.0.64/28]\n"
        ),
    )
    .expect("write the config");
    let script = dir.path().join("capture.py");
    std::fs::write(&script, CAPTURE).expect("write the capture script");
    let capture = watcher.spawn(
        std::path::Path::new("python3"),
        &[
            script.to_string_lossy().into_owned(),
            watcher.ipv4.to_string(),
        ],
        &[],
    );
    wait_until(Duration::from_secs(10), "the capture to start", || {
        capture.output().contains("capturing").then_some(())
    });
    let vipd_args: Vec<String> = [
        "--kubernetes",
        "--config",
        &config.to_string_lossy(),
        "--kubeconfig",
        &kubeconfig.to_string_lossy(),
        "--node-name",
        "node",
        "--lease",
        "kube-system/fedplane-vipd",
        "--http",
        "127.0.0.1:9102",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let log = std::env::var("JITTER_RUST_LOG").unwrap_or_else(|_| "warn".into());
    let daemon = node.spawn(&vipd, &vipd_args, &[("RUST_LOG", &log)]);
    // Master: its adverts are heard.
    wait_until(Duration::from_secs(20), "adverts from the node", || {
        capture.output().contains(" 10.0.0.1").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let idle_start = now_ns();
    std::thread::sleep(Duration::from_secs(seconds));
    let load_start = now_ns();
    for i in 0..services {
        fake.apply(service(i));
    }
    let applied = now_ns();
    let mut touched = 0_usize;
    while now_ns() < load_start + u128::from(seconds) * 1_000_000_000 {
        // The object as stored (the fake's apply replaces the status too: keep it).
        let i = touched % services;
        let mut s = fake
            .get(
                "v1",
                "Service",
                Some(&format!("ns{}", i % 100)),
                &format!("svc{i}"),
            )
            .unwrap_or_else(|| service(i));
        s["metadata"]["labels"] = json!({"touch": touched.to_string()});
        fake.apply(s);
        touched += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let load_end = now_ns();
    let assigned = fake
        .list("v1", "Service")
        .iter()
        .filter(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string())
        .count();
    let exhausted = fake
        .events()
        .iter()
        .filter(|e| e["reason"] == "PoolExhausted")
        .count();
    let out = capture.output();
    let times: Vec<u128> = out
        .lines()
        .filter_map(|l| {
            let (t, src) = l.split_once(' ')?;
            (src.trim() == "10.0.0.1").then(|| t.parse().ok())?
        })
        .collect();
    let phase = |from: u128, to: u128| -> Vec<u128> {
        times
            .iter()
            .copied()
            .filter(|t| *t >= from && *t < to)
            .collect()
    };
    println!("fedplane-vipd: {}", vipd.display());
    println!(
        "{services} Services applied in {:.1} s, {touched} changes after; at the end {assigned} assigned, {exhausted} PoolExhausted Events",
        (applied - load_start) as f64 / 1e9
    );
    println!("| phase | adverts | gap p50 ms | gap p99 ms | gap max ms | interval ms |");
    println!("|---|---|---|---|---|---|");
    let load = format!("{services}-Service passes");
    for (name, from, to) in [
        ("idle", idle_start, load_start),
        (load.as_str(), load_start, load_end),
    ] {
        let (n, p50, p99, max) = gaps(&phase(from, to));
        println!("| {name} | {n} | {p50:.1} | {p99:.1} | {max:.1} | {interval_ms} |");
    }
    if std::env::var_os("JITTER_LOG").is_some() {
        println!("fedplane-vipd's log:\n{}", daemon.output());
    }
    drop(daemon);
    drop(capture);
    drop(lan);
}
