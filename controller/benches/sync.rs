//! fedplane-controller at scale: N LoadBalancer Services in each of three member clusters
//! (test fakes of the Kubernetes API server), real etcd, the real fedplane-controller and
//! fedplane-dns binaries (release builds). Run with `benches/controller-sync`.
//!
//! Measures, each beside a peer measured in the same run:
//! - full sync: controller start → every record in etcd; peer: the same keys written straight
//!   into a fresh etcd by one client in transactions of 100, 8 in flight (the cost of the
//!   writes alone);
//! - change → answer: one EndpointSlice of one Service turns unready (or ready again) in one
//!   cluster → the global name's dig answer changes; peer: one etcd put of a record → the
//!   answer changes (fedplane-dns alone, no controller);
//! - with `--ingresses N` (N Ingresses per cluster, `--source service,ingress`): one Ingress's
//!   `status.loadBalancer` address changes in one cluster → its host's answer changes;
//! - a Node label change: a Node's `topology.kubernetes.io/zone` moves to a new zone → the
//!   zone name of a Service answers there, and every Service's record is under the new zone.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedplane_controller::plan::{self, Naming};
use fedplane_controller::view::{self, ClusterObjects, ViewSettings};
use fedplane_testkit::kube_fake::{FakeKubeApi, write_kubeconfig};
use fedplane_testkit::{Daemon, Etcd, free_port, peak_rss_mib, wait_until};
use serde_json::{Value, json};

const CLUSTERS: [(&str, &str, &str); 3] = [
    ("fcp", "europe", "fr"),
    ("usa", "america", "us"),
    ("chn", "asia", "cn"),
];
const LONG: Duration = Duration::from_secs(600);

struct Args {
    services: usize,
    ingresses: usize,
    changes: usize,
    node_changes: usize,
}

fn args() -> Args {
    let mut a = Args {
        services: 10_000,
        ingresses: 0,
        changes: 100,
        node_changes: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--services" => a.services = value(),
            "--ingresses" => a.ingresses = value(),
            "--changes" => a.changes = value(),
            "--node-changes" => a.node_changes = value(),
            "--bench" => {}
            other => panic!(
                "unknown argument {other} (use --services N --ingresses N --changes N --node-changes N)"
            ),
        }
    }
    a
}

/// Service `i`'s load balancer address in `cluster` (`base` 100); Ingress `i`'s (`base` 110,
/// and 120 in fcp after a change).
fn address(base: u8, cluster: usize, i: usize) -> Ipv4Addr {
    let [_, _, hi, lo] = u32::try_from(i).expect("index").to_be_bytes();
    Ipv4Addr::new(10, base + u8::try_from(cluster).expect("cluster"), hi, lo)
}

fn ingress(cluster: usize, i: usize) -> Ipv4Addr {
    address(100, cluster, i)
}

fn node(cluster: usize, n: usize, zone: &str) -> Value {
    let (name, region, _) = CLUSTERS[cluster];
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("{name}-node-{n}"),
        "labels": {"topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone}}})
}

/// Ingress `i` of a cluster: host `ing-<i>.example.com`, backend Service `svc-<i>`.
fn ingress_object(i: usize, address: Ipv4Addr) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": "bench", "name": format!("ing-{i:05}"),
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": format!("ing-{i:05}.example.com"), "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": format!("svc-{i:05}"), "port": {"number": 80}}}}]}}]},
        "status": {"loadBalancer": {"ingress": [{"ip": address.to_string()}]}}})
}

fn objects(cluster: usize, services: usize, ingresses: usize) -> Vec<Value> {
    let (name, _, zone) = CLUSTERS[cluster];
    let mut v = Vec::with_capacity(2 * services + ingresses + 2);
    for n in 1..=2 {
        v.push(node(cluster, n, zone));
    }
    for i in 0..ingresses {
        v.push(ingress_object(i, address(110, cluster, i)));
    }
    for i in 0..services {
        let svc = format!("svc-{i:05}");
        v.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "bench", "name": svc},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ingress(cluster, i).to_string()}]}}}));
        v.push(slice(name, &svc, true));
    }
    v
}

fn slice(cluster: &str, svc: &str, ready: bool) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "bench", "name": format!("{svc}-x"),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.244.1.1"], "nodeName": format!("{cluster}-node-1"), "conditions": {"ready": ready}},
            {"addresses": ["10.244.2.1"], "nodeName": format!("{cluster}-node-2"), "conditions": {"ready": ready}}]})
}

fn naming() -> Naming {
    Naming {
        prefix: "/skydns".into(),
        domain: "example.com".into(),
        federation: "federation".into(),
        ttl: 30,
    }
}

/// The records the controller should end with, computed by the library (for the peer).
fn desired(cluster_objects: &[Vec<Value>]) -> plan::Desired {
    let views: Vec<_> = cluster_objects
        .iter()
        .enumerate()
        .map(|(c, objs)| {
            let mut o = ClusterObjects::default();
            for obj in objs {
                let obj = obj.clone();
                let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
                let (nodes, services, slices) = (&mut o.nodes, &mut o.services, &mut o.slices);
                match kind.as_str() {
                    "Node" => nodes.push(Arc::new(serde_json::from_value(obj).expect("node"))),
                    "Service" => services.push(Arc::new(serde_json::from_value(obj).expect("svc"))),
                    "Ingress" => o
                        .ingresses
                        .push(Arc::new(serde_json::from_value(obj).expect("ingress"))),
                    _ => slices.push(Arc::new(serde_json::from_value(obj).expect("slice"))),
                }
            }
            let mut s = ViewSettings {
                cluster: CLUSTERS[c].0.into(),
                domain: "example.com".into(),
                federation: "federation".into(),
                ..ViewSettings::default()
            };
            s.sources.ingress = !o.ingresses.is_empty();
            view::build(&s, &o).0
        })
        .collect();
    plan::plan(&naming(), &views)
}

/// Writes `keys` into etcd as fast as one client can: transactions of 100 puts, 8 in flight.
fn bulk_write(etcd: &Etcd, keys: &plan::Desired) -> Duration {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use futures::StreamExt;
        let client = etcd_client::Client::connect([etcd.endpoint()], None)
            .await
            .expect("connect etcd");
        let pairs: Vec<(&String, &String)> = keys.iter().collect();
        let t = Instant::now();
        futures::stream::iter(pairs.chunks(100))
            .map(|chunk| {
                let mut c = client.clone();
                let ops: Vec<_> = chunk
                    .iter()
                    .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None))
                    .collect();
                async move { c.txn(etcd_client::Txn::new().and_then(ops)).await }
            })
            .buffered(8)
            .for_each(|r| async move {
                r.expect("txn");
            })
            .await;
        t.elapsed()
    })
}

/// Counts keys under a prefix (etcdctl 3.4 has no --count-only), over one connection.
struct Counter {
    rt: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

impl Counter {
    fn new(etcd: &Etcd) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt
            .block_on(etcd_client::Client::connect([etcd.endpoint()], None))
            .expect("connect etcd");
        Self { rt, client }
    }

    fn count(&mut self, prefix: &str) -> usize {
        let opts = etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only();
        let resp = self
            .rt
            .block_on(self.client.get(prefix, Some(opts)))
            .expect("count");
        usize::try_from(resp.count()).unwrap_or(0)
    }
}

/// A DNS A query for `name` with ID `id`.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The A addresses in a response (answer section), sorted.
fn a_records(resp: &[u8]) -> Vec<Ipv4Addr> {
    let skip_name = |mut p: usize| -> usize {
        while p < resp.len() {
            let len = resp[p];
            if len & 0xc0 == 0xc0 {
                return p + 2;
            }
            p += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        p
    };
    let ancount = usize::from(u16::from_be_bytes([resp[6], resp[7]]));
    let mut p = skip_name(12) + 4;
    let mut out = Vec::new();
    for _ in 0..ancount {
        p = skip_name(p);
        if p + 10 > resp.len() {
            break;
        }
        let rtype = u16::from_be_bytes([resp[p], resp[p + 1]]);
        let len = usize::from(u16::from_be_bytes([resp[p + 8], resp[p + 9]]));
        p += 10;
        if rtype == 1 && len == 4 && p + 4 <= resp.len() {
            out.push(Ipv4Addr::new(
                resp[p],
                resp[p + 1],
                resp[p + 2],
                resp[p + 3],
            ));
        }
        p += len;
    }
    out.sort();
    out
}

/// Polls `name` on the DNS server until its A answer equals `want`; returns when it did.
fn await_answer(sock: &UdpSocket, name: &str, want: &[Ipv4Addr]) -> Instant {
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = 0u16;
    loop {
        id = id.wrapping_add(1);
        sock.send(&query(name, id)).expect("send query");
        if let Ok(n) = sock.recv(&mut buf)
            && n > 12
            && buf[..2] == id.to_be_bytes()
            && a_records(&buf[..n]) == want
        {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{name} never answered {want:?}");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let a = args();
    eprintln!(
        "fedplane-controller bench: {} Services and {} Ingresses x 3 clusters, {} changes, {} Node label changes",
        a.services, a.ingresses, a.changes, a.node_changes
    );
    let cluster_objects: Vec<Vec<Value>> = (0..3)
        .map(|c| objects(c, a.services, a.ingresses))
        .collect();
    let want = desired(&cluster_objects);

    // Peer: the same keys written straight into a fresh etcd.
    let peer_etcd = Etcd::start();
    let peer_full = bulk_write(&peer_etcd, &want);
    assert_eq!(Counter::new(&peer_etcd).count("/skydns/"), want.len());
    drop(peer_etcd);

    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let fakes: Vec<FakeKubeApi> = cluster_objects
        .iter()
        .map(|objs| {
            let f = FakeKubeApi::start();
            for o in objs {
                f.apply(o.clone());
            }
            f
        })
        .collect();
    let contexts: Vec<(&str, &FakeKubeApi)> = CLUSTERS.iter().map(|c| c.0).zip(&fakes).collect();
    let kubeconfig = write_kubeconfig(dir.path(), &contexts);
    let http = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = [
        "--domain",
        "example.com.",
        "--federation",
        "federation",
        "--etcd-endpoints",
        &etcd.endpoint(),
        "--http",
        &http,
        "--kubeconfig",
        &kubeconfig.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    for (name, ..) in CLUSTERS {
        args.extend(["--context".into(), name.into()]);
    }
    if a.ingresses > 0 {
        args.extend(["--source".into(), "service,ingress".into()]);
    }
    let mut counter = Counter::new(&etcd);
    let t = Instant::now();
    let controller = Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_fedplane-controller")),
        &args,
        &[("RUST_LOG", "warn")],
    );
    wait_until(LONG, "every record in etcd", || {
        (counter.count("/skydns/") >= want.len()).then_some(())
    });
    let full = t.elapsed();
    assert_eq!(
        etcd.dump("/skydns")
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect::<plan::Desired>(),
        want
    );

    let (dns, dns_port) = Daemon::fedplane_dns(&etcd, "example.com.", LONG);
    // Steady state: fedplane-dns answers as soon as it has loaded, and starts watching once
    // its fast path is compiled.
    wait_until(LONG, "fedplane-dns's fast path compiled", || {
        dns.output()
            .contains("compiled the fast path's answers")
            .then_some(())
    });
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(("127.0.0.1", dns_port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");

    // fedplane: an EndpointSlice turns unready (then ready) → the global answer changes.
    let mut fed = Vec::with_capacity(a.changes);
    let mut state = 0x2545_f491_u64;
    let mut random = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % n as u64).expect("index")
    };
    let started = Instant::now();
    let mut slowest = Vec::new();
    for k in 0..a.changes {
        let i = random(a.services);
        let svc = format!("svc-{i:05}");
        let name = format!("{svc}.bench.federation.svc.example.com");
        let all: Vec<Ipv4Addr> = (0..3).map(|c| ingress(c, i)).collect();
        let without: Vec<Ipv4Addr> = all[1..].to_vec();
        await_answer(&sock, &name, &all);
        let t = Instant::now();
        fakes[0].apply(slice("fcp", &svc, false));
        fed.push(await_answer(&sock, &name, &without) - t);
        slowest.push((fed[k], k, t - started));
        fakes[0].apply(slice("fcp", &svc, true));
        await_answer(&sock, &name, &all);
    }
    // The outliers, to tell them apart: which change, and when.
    slowest.sort();
    for (took, k, at) in slowest.iter().rev().take(5) {
        eprintln!(
            "slowest Service change #{k} at +{:.2} s: {:.1} ms",
            at.as_secs_f64(),
            ms(*took)
        );
    }

    // Peer (before the Node changes, whose big recompiles fedplane-dns does in the
    // background for a while): fedplane-dns alone, a record put straight into etcd by a connected client.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = rt
        .block_on(etcd_client::Client::connect([etcd.endpoint()], None))
        .expect("connect etcd");
    let mut direct = Vec::with_capacity(a.changes);
    for n in 0..a.changes {
        let name = format!("direct-{n}.bench.example.com");
        let key = format!("/skydns/com/example/bench/direct-{n}/x");
        let ip = Ipv4Addr::new(10, 99, 0, 1);
        let t = Instant::now();
        rt.block_on(client.put(key, format!("{{\"host\":\"{ip}\"}}"), None))
            .expect("put");
        direct.push(await_answer(&sock, &name, &[ip]) - t);
    }
    // An Ingress's load balancer address changes in fcp → its host's answer changes.
    let mut ing = Vec::with_capacity(a.changes);
    for _ in 0..a.changes.min(a.ingresses) {
        let i = random(a.ingresses);
        let host = format!("ing-{i:05}.example.com");
        let mut all: Vec<Ipv4Addr> = (0..3).map(|c| address(110, c, i)).collect();
        all.sort();
        let mut moved = all.clone();
        moved[0] = address(120, 0, i);
        moved.sort();
        await_answer(&sock, &host, &all);
        let t = Instant::now();
        fakes[0].apply(ingress_object(i, address(120, 0, i)));
        ing.push(await_answer(&sock, &host, &moved) - t);
        fakes[0].apply(ingress_object(i, address(110, 0, i)));
        await_answer(&sock, &host, &all);
    }
    ing.sort();

    // The peak so far, comparable with the runs before the bench had Node changes.
    let rss_before_nodes = peak_rss_mib(controller.pid());
    // A Node of fcp moves to a new zone: every Service (an endpoint on it) gets a record there.
    let (mut node_first, mut node_all) = (Vec::new(), Vec::new());
    for k in 0..a.node_changes {
        let zone = format!("z{k}");
        let i = random(a.services);
        let name = format!("svc-{i:05}.bench.federation.svc.{zone}.europe.example.com");
        let prefix = format!("/skydns/com/example/europe/{zone}/");
        let t = Instant::now();
        fakes[0].apply(node(0, 2, &zone));
        node_first.push(await_answer(&sock, &name, &[ingress(0, i)]) - t);
        wait_until(LONG, "every Service under the new zone", || {
            (counter.count(&prefix) >= a.services).then_some(())
        });
        node_all.push(t.elapsed());
    }
    node_first.sort();
    node_all.sort();
    fed.sort();
    direct.sort();
    let rss = peak_rss_mib(controller.pid());

    println!();
    println!(
        "| {} Services x 3 clusters ({} records) | fedplane-controller | peer | fedplane / peer |",
        a.services,
        want.len()
    );
    println!("|---|---|---|---|");
    println!(
        "| full sync: start → every record in etcd | {:.2} s | {:.2} s (same keys, bulk txns straight into etcd) | {:.2} |",
        full.as_secs_f64(),
        peer_full.as_secs_f64(),
        full.as_secs_f64() / peer_full.as_secs_f64()
    );
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let f = percentile(&fed, p);
        let d = percentile(&direct, p);
        println!(
            "| change → dig answer {label} ({} changes) | {:.1} ms | {:.1} ms (etcd put → answer, fedplane-dns alone) | {:.1} |",
            a.changes,
            ms(f),
            ms(d),
            ms(f) / ms(d)
        );
    }
    if !ing.is_empty() {
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            let f = percentile(&ing, p);
            let d = percentile(&direct, p);
            println!(
                "| Ingress change → dig answer {label} ({} changes) | {:.1} ms | {:.1} ms (etcd put → answer, fedplane-dns alone) | {:.1} |",
                ing.len(),
                ms(f),
                ms(d),
                ms(f) / ms(d)
            );
        }
    }
    if !node_first.is_empty() {
        let peer = percentile(&direct, 0.5);
        for (label, v) in [
            ("one Service's zone name answers", &node_first),
            ("every Service's zone record in etcd", &node_all),
        ] {
            let worst = v[v.len() - 1];
            println!(
                "| Node zone label change → {label}, worst of {} | {:.1} ms | {:.1} ms (etcd put → answer p50) | {:.1} |",
                v.len(),
                ms(worst),
                ms(peer),
                ms(worst) / ms(peer)
            );
        }
    }
    println!(
        "| controller peak RSS, full sync and the Service and Ingress changes | {rss_before_nodes:.0} MiB | – | – |"
    );
    println!("| controller peak RSS, with the Node changes | {rss:.0} MiB | – | – |");
    println!();
    println!(
        "The change path is the kube watch, the debounce, the view update, the plan and diff, \
         the etcd write and fedplane-dns's etcd watch; the peer path is only the last. The three \
         fake API servers run in the bench process on the same 2 cores."
    );
    drop(controller);
}
