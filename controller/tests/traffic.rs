//! fedplane-controller's traffic policies end to end: the strategy annotations (closest through
//! fedplane-dns's topology map and ECS, failover, weighted), health checks against real
//! listeners that a test stops and starts, and a bad annotation's Warning Event.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use common::*;
use fedplane_testkit::{dig, wait_until};
use serde_json::{Value, json};

/// Sets annotations on the seed's hello-world Service in `cluster`.
fn annotate(fed: &Federation, cluster: &str, pairs: &[(&str, &str)]) {
    let f = fed.fake(cluster);
    let mut svc = f
        .get("v1", "Service", Some("default"), "hello-world")
        .expect("seed Service");
    for (k, v) in pairs {
        svc["metadata"]["annotations"][*k] = json!(v);
    }
    f.apply(svc);
}

/// The values of the address records of the global name, by cluster leaf.
fn global_values(fed: &Federation) -> Vec<(String, Value)> {
    let key = "/skydns/com/example/svc/federation/default/hello-world/";
    fed.records()
        .into_iter()
        .filter_map(|(k, v, _)| {
            let leaf = k.strip_prefix(key)?;
            let (cluster, _) = leaf.split_once('/')?;
            Some((cluster.to_owned(), serde_json::from_str(&v).expect("JSON")))
        })
        .collect()
}

#[test]
fn closest_answers_each_client_its_own_region_through_the_topology_map() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topology = dir.path().join("topology.yaml");
    std::fs::write(
        &topology,
        "- {cidr: 10.1.0.0/16, region: europe, zone: fr}\n\
         - {cidr: 10.2.0.0/16, region: america, zone: us}\n\
         - {cidr: 10.3.0.0/16, region: asia}\n",
    )
    .expect("topology file");
    let fed = Federation::start_with(&["--topology".into(), topology.display().to_string()]);
    annotate(&fed, "fcp", &[("fedplane.io/dns-strategy", "closest")]);
    let _c = fed.controller(&[]);
    wait_until(WAIT, "records with their zone and region", || {
        let v = global_values(&fed);
        (v.len() == 3 && v.iter().all(|(_, v)| v["zone"].is_string())).then_some(())
    });
    let ask = |subnet: &str| {
        dig(
            "127.0.0.1",
            fed.dns_port,
            &[GLOBAL, "A", &format!("+subnet={subnet}")],
        )
    };
    for (subnet, want) in [
        ("10.1.7.0/24", "10.210.1.68"),
        ("10.2.0.0/24", "10.210.3.65"),
        ("10.3.0.0/24", "10.210.2.65"),
    ] {
        let d = ask(subnet);
        assert_eq!(d.answers("A"), [want], "{subnet}: {}", d.raw);
        assert!(d.raw.contains("CLIENT-SUBNET"), "ECS echoed: {}", d.raw);
    }
    // A client outside the map gets every cluster.
    assert_eq!(ask("192.0.2.0/24").answers("A"), all_ips());
    // Back to all: the locality fields go.
    annotate(&fed, "fcp", &[("fedplane.io/dns-strategy", "all")]);
    wait_until(WAIT, "records without a zone", || {
        let v = global_values(&fed);
        (v.len() == 3 && v.iter().all(|(_, v)| v.get("zone").is_none())).then_some(())
    });
}

#[test]
fn failover_answers_the_first_healthy_cluster_and_weighted_writes_the_weights() {
    let fed = Federation::start();
    // The first cluster (fcp) decides; usa's own annotation is not read.
    annotate(
        &fed,
        "fcp",
        &[
            ("fedplane.io/dns-strategy", "failover"),
            ("fedplane.io/failover-order", "usa,fcp,chn"),
        ],
    );
    annotate(&fed, "usa", &[("fedplane.io/dns-strategy", "closest")]);
    let _c = fed.controller(&[]);
    fed.await_a(GLOBAL, &["10.210.3.65"]);
    // usa down: fcp; back: usa again. The zone names are not touched by the strategy.
    set_ready(fed.fake("usa"), "usa", false);
    fed.await_a(GLOBAL, &["10.210.1.68"]);
    fed.await_cname(US, AMERICA);
    set_ready(fed.fake("usa"), "usa", true);
    fed.await_a(GLOBAL, &["10.210.3.65"]);
    fed.await_a(US, &["10.210.3.65"]);

    annotate(
        &fed,
        "fcp",
        &[
            ("fedplane.io/dns-strategy", "weighted"),
            ("fedplane.io/weights", "fcp=3,usa=1,chn=1"),
        ],
    );
    let want = [("chn", 1), ("fcp", 3), ("usa", 1)];
    wait_until(WAIT, "weighted records", || {
        let got: Vec<(String, u64)> = global_values(&fed)
            .into_iter()
            .filter_map(|(c, v)| Some((c, v["weight"].as_u64()?)))
            .collect();
        (got.iter()
            .map(|(c, w)| (c.as_str(), *w))
            .collect::<Vec<_>>()
            == want)
            .then_some(())
    });
    // fedplane-dns answers one address per query, in about those shares.
    let mut fcp = 0;
    for _ in 0..200 {
        let d = fed.q(GLOBAL);
        assert_eq!(d.answers("A").len(), 1, "{}", d.raw);
        fcp += usize::from(d.answers("A")[0] == "10.210.1.68");
    }
    assert!(
        (80..=160).contains(&fcp),
        "fcp answered {fcp} of 200 (3/5 expected)"
    );
}

#[test]
fn a_bad_annotation_keeps_the_default_and_records_a_warning_event() {
    let fed = Federation::start();
    annotate(
        &fed,
        "fcp",
        &[
            ("fedplane.io/dns-strategy", "nearest"),
            ("fedplane.io/health-check", "udp:53"),
        ],
    );
    let c = fed.controller(&[]);
    fed.await_a(GLOBAL, &all_ips());
    let events = wait_until(WAIT, "two Warning Events on hello-world", || {
        let events: Vec<Value> = fed
            .fake("fcp")
            .events()
            .into_iter()
            .filter(|e| e["type"] == "Warning" && e["regarding"]["name"] == "hello-world")
            .collect();
        (events.len() >= 2).then_some(events)
    });
    let notes: Vec<&str> = events.iter().filter_map(|e| e["note"].as_str()).collect();
    assert!(
        notes.iter().any(|n| n.contains("\"nearest\""))
            && notes.iter().any(|n| n.contains("udp:53")),
        "{events:#?}"
    );
    let reasons: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(
        reasons,
        ["InvalidHealthCheck", "InvalidStrategy"].into(),
        "{events:#?}"
    );
    assert!(
        c.daemon.output().contains("nearest"),
        "{}",
        c.daemon.output()
    );
}

/// A TCP listener on `addr` answering HTTP: 200, or 200 and 503 by turns when `flapping`.
struct Listener {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start(addr: SocketAddr, flapping: bool) -> Self {
        let l = TcpListener::bind(addr).expect("bind the test listener");
        let addr = l.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let turn = AtomicU64::new(0);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf);
                let n = turn.fetch_add(1, Ordering::SeqCst);
                let status = if flapping && n % 2 == 1 {
                    "503 Unavailable"
                } else {
                    "200 OK"
                };
                let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        Self {
            stop,
            addr,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().expect("listener thread");
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Gives each seed cluster's hello-world the ingress address `127.0.<net>.<i+1>` with a
/// listener of ours (flapping in chn when asked) and an HTTP health check on it.
fn probed_ingress(fed: &Federation, net: u8, flapping_chn: bool) -> Vec<Listener> {
    let mut listeners = Vec::new();
    for (i, (cluster, ..)) in SEEDS.iter().enumerate() {
        let ip = format!("127.0.{net}.{}", i + 1);
        let flapping = flapping_chn && *cluster == "chn";
        let l = Listener::start(format!("{ip}:0").parse().expect("addr"), flapping);
        let f = fed.fake(cluster);
        let mut svc = f
            .get("v1", "Service", Some("default"), "hello-world")
            .expect("seed Service");
        svc["status"]["loadBalancer"]["ingress"] = json!([{"ip": ip}]);
        svc["metadata"]["annotations"]["fedplane.io/health-check"] =
            json!(format!("http:{}/healthz", l.addr.port()));
        f.apply(svc);
        listeners.push(l);
    }
    listeners
}

const PROBE_FLAGS: [&str; 8] = [
    "--probe-interval",
    "100ms",
    "--probe-timeout",
    "100ms",
    "--probe-failures",
    "3",
    "--probe-successes",
    "3",
];

#[test]
fn a_standby_probes_too_and_takes_over_without_bringing_a_down_address_back() {
    let fed = Federation::start();
    let mut listeners = probed_ingress(&fed, 2, false);
    let flags = [&PROBE_FLAGS[..], &["--election-ttl", "2s"]].concat();
    let a = fed.controller(&[&flags[..], &["--id", "a"]].concat());
    let b = fed.controller(&[&flags[..], &["--id", "b"]].concat());
    fed.await_a(GLOBAL, &["127.0.2.1", "127.0.2.2", "127.0.2.3"]);
    wait_until(WAIT, "one leader", || {
        let leaders =
            a.metric("fedplane_controller_leader") + b.metric("fedplane_controller_leader");
        (leaders == 1.0).then_some(())
    });
    let (leader, standby) = if a.metric("fedplane_controller_leader") == 1.0 {
        (a, b)
    } else {
        (b, a)
    };
    listeners[0].stop();
    fed.await_a(GLOBAL, &["127.0.2.2", "127.0.2.3"]);
    let fcp_down = "fedplane_controller_probe_targets{cluster=\"fcp\",state=\"down\"}";
    standby.await_metric(fcp_down, "the standby to see fcp down", |v| v == 1.0);
    // The leader stops (and resigns): the standby leads, and fcp's address stays out.
    drop(leader);
    standby.await_metric("fedplane_controller_leader", "the standby to lead", |v| {
        v == 1.0
    });
    // A standby never syncs: its first sync is the one it makes as the leader.
    standby.await_metric("fedplane_controller_syncs_total", "a sync as leader", |v| {
        v >= 1.0
    });
    let d = fed.q(GLOBAL);
    assert_eq!(d.answers("A"), ["127.0.2.2", "127.0.2.3"], "{}", d.raw);
}

#[test]
fn health_checks_withdraw_a_cluster_that_stops_answering_and_flapping_obeys_the_thresholds() {
    let fed = Federation::start();
    let mut listeners = probed_ingress(&fed, 1, true);
    let c = fed.controller(&PROBE_FLAGS);
    let everyone = ["127.0.1.1", "127.0.1.2", "127.0.1.3"];
    fed.await_a(GLOBAL, &everyone);
    let fcp_up = "fedplane_controller_probe_targets{cluster=\"fcp\",state=\"up\"}";
    let fcp_down = "fedplane_controller_probe_targets{cluster=\"fcp\",state=\"down\"}";
    c.await_metric(fcp_up, "fcp's address to be up", |v| v == 1.0);

    // fcp stops answering: withdrawn everywhere, its zone falls back.
    listeners[0].stop();
    fed.await_a(GLOBAL, &["127.0.1.2", "127.0.1.3"]);
    fed.await_cname(FR, EUROPE);
    c.await_metric(fcp_down, "fcp's address to be down", |v| v == 1.0);
    assert_eq!(c.metric(fcp_up), 0.0);
    // And back.
    let port = listeners[0].addr;
    listeners[0] = Listener::start(port, false);
    fed.await_a(GLOBAL, &everyone);
    fed.await_a(FR, &["127.0.1.1"]);

    // chn answers 200 and 503 by turns: never 3 in a row either way, so it stays.
    let probes = |v: f64| v >= 30.0;
    c.await_metric(
        "fedplane_controller_probes_total{cluster=\"chn\",result=\"failure\"}",
        "chn's flapping check to fail 30 times",
        probes,
    );
    assert_eq!(fed.q(GLOBAL).answers("A"), everyone);
    assert!(
        !c.daemon.output().contains("address=127.0.1.3"),
        "chn was never withdrawn: {}",
        c.daemon.output()
    );
}
