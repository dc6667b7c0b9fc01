//! fedplane-vipd in Kubernetes mode at scale, for sizing its DaemonSet: N LoadBalancer Services
//! in the API server fake (`testkit/src/kube_fake`), one replica (the Lease holder, no VRRP
//! group, so no root), the time until every Service has its address in its status, and the
//! replica's peak resident memory (VmHWM) then. No peer runs here: MetalLB and kube-vip need a
//! real API server.
//!
//!     cargo bench -p fedplane-vipd --bench assign -- [--services 10000]

use std::path::Path;
use std::time::{Duration, Instant};

use fedplane_testkit::kube_fake::{FakeKubeApi, write_kubeconfig};
use fedplane_testkit::{Daemon, free_port, http_get, peak_rss_mib, wait_until};
use serde_json::json;

fn main() {
    let mut services = 10_000_usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--services" => {
                services = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--services N");
            }
            "--bench" => {}
            other => panic!("unknown argument {other:?} (--services N)"),
        }
    }

    let fake = FakeKubeApi::start();
    for i in 0..services {
        fake.apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": format!("ns{}", i % 100), "name": format!("svc{i}")},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
        }));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = write_kubeconfig(dir.path(), &[("member", &fake)]);
    let config = dir.path().join("vipd.yaml");
    std::fs::write(
        &config,
        "pools:\n  - name: default\n    addresses: [10.64.0.0/16]\n",
    )
    .expect("write the config");
    let http = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "--kubernetes",
        "--config",
        &config.to_string_lossy(),
        "--kubeconfig",
        &kubeconfig.to_string_lossy(),
        "--node-name",
        "bench",
        "--http",
        &http,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let start = Instant::now();
    let vipd = Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_fedplane-vipd")),
        &args,
        &[("RUST_LOG", "warn")],
    );
    wait_until(Duration::from_secs(60), "fedplane-vipd ready", || {
        http_get(&http, "/readyz").filter(|(c, _)| *c == 200)
    });
    let assigned = || {
        fake.list("v1", "Service")
            .iter()
            .filter(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string())
            .count()
    };
    wait_until(Duration::from_secs(600), "every Service assigned", || {
        (assigned() == services).then_some(())
    });
    let elapsed = start.elapsed();
    let peak = peak_rss_mib(vipd.pid());
    println!();
    println!(
        "| LoadBalancer Services | start → every address in status | fedplane-vipd peak RSS |"
    );
    println!("|---|---|---|");
    println!(
        "| {services} | {:.1} s | {peak:.0} MiB |",
        elapsed.as_secs_f64()
    );
}
