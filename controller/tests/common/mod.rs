//! What the controller's end-to-end tests share: three member clusters (test fakes of the
//! Kubernetes API server, speaking the real list/watch protocol to the real kube client) as in
//! the seed guide — fcp (europe/fr), usa (america/us), chn (asia/cn) — real etcd, the real
//! fedplane-dns binary, real dig, and the real fedplane-controller binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedplane_testkit::kube_fake::{FakeKubeApi, write_kubeconfig};
use fedplane_testkit::{Daemon, Dig, Etcd, dig, free_port, http_get, wait_until};
use serde_json::json;

pub const WAIT: Duration = Duration::from_secs(20);
pub const SEEDS: [(&str, &str, &str, &str); 3] = [
    ("fcp", "europe", "fr", "10.210.1.68"),
    ("usa", "america", "us", "10.210.3.65"),
    ("chn", "asia", "cn", "10.210.2.65"),
];
pub const GLOBAL: &str = "hello-world.default.federation.svc.example.com";
pub const EUROPE: &str = "hello-world.default.federation.svc.europe.example.com";
pub const FR: &str = "hello-world.default.federation.svc.fr.europe.example.com";
pub const AMERICA: &str = "hello-world.default.federation.svc.america.example.com";
pub const US: &str = "hello-world.default.federation.svc.us.america.example.com";

pub fn seed_file(cluster: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/federation")
        .join(format!("{cluster}.yaml"))
}

/// etcd, fedplane-dns, and the three seed clusters holding the seed's hello-world.
pub struct Federation {
    pub etcd: Etcd,
    pub _dir: tempfile::TempDir,
    pub fakes: Vec<FakeKubeApi>,
    pub kubeconfig: PathBuf,
    pub _dns: Daemon,
    pub dns_port: u16,
}

impl Federation {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), fedplane-dns with `dns_flags`.
    pub fn start_with(dns_flags: &[String]) -> Self {
        let etcd = Etcd::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let fakes: Vec<FakeKubeApi> = SEEDS
            .iter()
            .map(|(name, ..)| {
                let f = FakeKubeApi::start();
                f.apply_yaml(&std::fs::read_to_string(seed_file(name)).expect("seed file"));
                f
            })
            .collect();
        let contexts: Vec<(&str, &FakeKubeApi)> =
            SEEDS.iter().map(|s| s.0).zip(fakes.iter()).collect();
        let kubeconfig = write_kubeconfig(dir.path(), &contexts);
        let (dns, dns_port) = Daemon::fedplane_dns_with(&etcd, "example.com.", dns_flags, WAIT);
        Self {
            etcd,
            _dir: dir,
            fakes,
            kubeconfig,
            _dns: dns,
            dns_port,
        }
    }

    pub fn fake(&self, cluster: &str) -> &FakeKubeApi {
        let i = SEEDS
            .iter()
            .position(|s| s.0 == cluster)
            .expect("seed cluster");
        &self.fakes[i]
    }

    /// A controller watching the three clusters, with `extra` flags; each is named by a
    /// `--context` unless `extra` has `--all-contexts` (as the deploy manifests do).
    pub fn controller(&self, extra: &[&str]) -> Controller {
        let mut args = vec![
            "--kubeconfig".to_owned(),
            self.kubeconfig.display().to_string(),
        ];
        if !extra.contains(&"--all-contexts") {
            for (name, ..) in SEEDS {
                args.extend(["--context".into(), name.into()]);
            }
        }
        args.extend(extra.iter().map(ToString::to_string));
        Controller::start(&self.etcd, args)
    }

    pub fn q(&self, name: &str) -> Dig {
        dig("127.0.0.1", self.dns_port, &[name, "A"])
    }

    /// Waits until `name` answers these addresses (sorted), after any CNAMEs.
    pub fn await_a(&self, name: &str, want: &[&str]) -> Dig {
        wait_until(WAIT, &format!("{name} A to answer {want:?}"), || {
            let d = self.q(name);
            (d.status == "NOERROR" && d.answers("A") == want).then_some(d)
        })
    }

    /// Waits until `name` is a CNAME to `target`.
    pub fn await_cname(&self, name: &str, target: &str) -> Dig {
        let want = vec![format!("{target}.")];
        wait_until(WAIT, &format!("{name} to be a CNAME to {target}"), || {
            let d = self.q(name);
            let first: Vec<String> = d
                .answer
                .iter()
                .filter(|r| r.rtype == "CNAME" && r.name.trim_end_matches('.') == name)
                .map(|r| r.data.clone())
                .collect();
            (first == want).then_some(d)
        })
    }

    pub fn await_nxdomain(&self, name: &str) {
        wait_until(WAIT, &format!("{name} to be NXDOMAIN"), || {
            (self.q(name).status == "NXDOMAIN").then_some(())
        });
    }

    /// Every key and value under /skydns with its mod revision.
    pub fn records(&self) -> Vec<(String, String, i64)> {
        self.etcd.dump("/skydns")
    }
}

/// A fedplane-controller process.
pub struct Controller {
    pub daemon: Daemon,
    pub http: String,
}

impl Controller {
    pub fn start(etcd: &Etcd, mut args: Vec<String>) -> Self {
        let http = format!("127.0.0.1:{}", free_port());
        args.extend(
            [
                "--domain",
                "example.com.",
                "--federation",
                "federation",
                "--etcd-endpoints",
                &etcd.endpoint(),
                "--http",
                &http,
                "--debounce",
                "20ms",
            ]
            .map(String::from),
        );
        let daemon = Daemon::start(
            Path::new(env!("CARGO_BIN_EXE_fedplane-controller")),
            &args,
            &[],
        );
        Self { daemon, http }
    }

    /// Sum of the samples of `metric` (name with optional labels, e.g.
    /// `fedplane_controller_cluster_connected{cluster="usa"}`); 0 when absent.
    pub fn metric(&self, metric: &str) -> f64 {
        let Some((_, body)) = http_get(&self.http, "/metrics") else {
            return 0.0;
        };
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with([' ', '{']) || metric.ends_with('}'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn await_metric(&self, metric: &str, what: &str, ok: impl Fn(f64) -> bool) {
        wait_until(WAIT, what, || ok(self.metric(metric)).then_some(()));
    }

    pub fn await_synced(&self) {
        self.await_metric("fedplane_controller_syncs_total", "a first sync", |v| {
            v >= 1.0
        });
    }

    pub fn writes(&self) -> f64 {
        self.metric("fedplane_controller_writes_total")
    }
}

pub fn set_ready(fake: &FakeKubeApi, cluster: &str, ready: bool) {
    let name = format!("hello-world-{cluster}1");
    let mut slice = fake
        .get(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("default"),
            &name,
        )
        .expect("seed EndpointSlice");
    if let Some(eps) = slice["endpoints"].as_array_mut() {
        for ep in eps {
            ep["conditions"]["ready"] = json!(ready);
        }
    }
    fake.apply(slice);
}

/// The backend Service `default/shop` with one endpoint, ready or not.
pub fn backend(fake: &FakeKubeApi, ready: bool) {
    fake.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "shop"},
        "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}));
    fake.apply(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": "shop-1",
                     "labels": {"kubernetes.io/service-name": "shop"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.9.9"], "conditions": {"ready": ready}}]}),
    );
}

/// Writes `cluster`'s snapshot file into `dir`: the seed's objects, then the backend
/// Service `shop` and its EndpointSlice as `fake` has them, then `objects`, as more YAML
/// documents; the `--snapshot` arguments that read it.
pub fn snapshot_file(
    dir: &Path,
    cluster: &str,
    fake: &FakeKubeApi,
    objects: impl IntoIterator<Item = serde_json::Value>,
) -> [String; 2] {
    let mut text = std::fs::read_to_string(seed_file(cluster)).expect("seed file");
    let service = fake
        .get("v1", "Service", Some("default"), "shop")
        .expect("Service");
    let slice = fake
        .get(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("default"),
            "shop-1",
        )
        .expect("EndpointSlice");
    for object in [service, slice].into_iter().chain(objects) {
        text.push_str(&format!("\n---\n{object}\n"));
    }
    let file = dir.join(format!("{cluster}.yaml"));
    std::fs::write(&file, text).expect("write the snapshot");
    ["--snapshot".into(), format!("{cluster}={}", file.display())]
}

/// Every key and value `fedplane-controller --once args` writes into `etcd` (it must succeed).
pub fn once_records(etcd: &Etcd, args: Vec<String>) -> Vec<(String, String)> {
    let mut once = Controller::start(etcd, args);
    assert!(
        once.daemon.wait_exit(WAIT).success(),
        "{}",
        once.daemon.output()
    );
    etcd.dump("/skydns")
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect()
}

pub fn all_ips() -> Vec<&'static str> {
    let mut v: Vec<&str> = SEEDS.iter().map(|s| s.3).collect();
    v.sort_unstable();
    v
}
