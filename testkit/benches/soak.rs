//! Soak: every fedplane daemon under churn at once for a long run (30 min by default), sampled
//! for growth. Run with `benches/soak [--duration 30m]` as root (network namespaces).
//!
//! What runs, all at once:
//! - a 3-member etcd cluster; fedplane-dns (release build) pointed at all three members,
//!   serving `--services` federated services (9 records each: `svcN.nsM.federation.svc` at the
//!   global, region and zone level, the data set of `benches/fedbench.py`);
//! - DNS load at half of fedplane-dns's capacity (`--dns-load 50`, percent): dnsperf measures
//!   the capacity first (10 s unlimited, with the etcd writes and the Kubernetes churn already
//!   running), then runs at `-Q` that share in 10 s chunks for the whole run; a failed query is any query sent that did not come back NOERROR
//!   (lost, timed out, SERVFAIL, NXDOMAIN: every name asked exists);
//! - 1,000 etcd updates/s (`--writes`), paced: nine in ten change the value of an existing
//!   record, one in ten puts or deletes an extra name; history compacted every minute (to the
//!   revision of a minute before, as a Kubernetes API server does);
//! - every `--etcd-restart-every` (3 min; a quarter of a run shorter than 12 min) one etcd
//!   member killed, left down 5 s and started
//!   again, round robin, never two at once;
//! - VRRP: two fedplane-vipd peers in a network namespace lan with four groups (VRIDs 51-54,
//!   one address each, 100 ms adverts), each peer master of two; every `--vrrp-every` (30 s)
//!   both peers' priorities are swapped in their config files and both are sent SIGHUP, so
//!   every group fails over (the processes live on, so their growth is measured);
//! - fedplane-controller (release build) against three fake member clusters
//!   (`kube_fake::FakeKubeApi`) with `--kube-services` LoadBalancer Services each, under
//!   `--churn` changes/s (EndpointSlices flipped ready/unready, extra Services created and
//!   deleted), writing to the same etcd cluster and zone; every 30 s a probe Service's slice
//!   is flipped and the change awaited in fedplane-dns's answer;
//! - every `--sample-every` (10 s): RSS (VmRSS), open file descriptors (/proc/PID/fd) and OS
//!   threads of fedplane-dns, both fedplane-vipd and fedplane-controller. None of them exposes
//!   tokio task counts in /metrics (the bench checks and says so), so threads stand for them;
//!   and how many revisions fedplane-dns's served snapshot (`fedplane_dns_snapshot_revision`)
//!   is behind the writer's latest.
//!
//! At the end a markdown table: per process and measure, the average of the first and of the
//! last window (5 min, or a sixth of a shorter run), the maximum and the growth; then the
//! load figures. The run fails (exit 1) when a bound is broken:
//! - RSS: last-window average at most max(10 %, 8 MiB) above the first-window average (the
//!   first window is after start-up and the capacity run, so allocator warm-up is in it; 8 MiB
//!   absorbs allocator noise at small sizes, 10 % at large ones);
//! - open fds: growth at most 4 (etcd and Kubernetes connections are re-made after a restart
//!   or a watch timeout and may briefly overlap);
//! - threads: growth at most 4 (tokio's blocking pool starts and retires threads on demand);
//! - DNS: zero failed queries outside the etcd-restart windows (kill → member healthy again
//!   + 10 s); fedplane-dns answers from memory, so failures inside them are reported too;
//! - VRRP: every group's failover complete (exactly one holder, the new master) within the
//!   master-down interval of the new master plus 1 s (SIGHUP handling, address changes and the
//!   bench's polling through `ip netns exec` on a loaded machine), and exactly one holder of
//!   every address at every check between failovers;
//! - fedplane-dns follows etcd: its snapshot never more than 10 s of updates (10 × `--writes`
//!   revisions) behind;
//! - the controller: every probe change answered by fedplane-dns within 15 s;
//! - the load was what it claims: etcd updates at least 90 % of `--writes`, DNS achieved at
//!   least 90 % of the target rate; every daemon still running at the end.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fedplane_testkit::kube_fake::{FakeKubeApi, write_kubeconfig};
use fedplane_testkit::netns::{Host, Lan, require_root};
use fedplane_testkit::{
    Daemon, EtcdCluster, dig, free_port, http_get, require_program, wait_until, workspace_bin,
};
use serde_json::{Value, json};

const ZONE: &str = "example.com";
const CLUSTERS: [(&str, &str, &str); 3] = [
    ("fcp", "europe", "fr"),
    ("usa", "america", "us"),
    ("chn", "asia", "cn"),
];
/// The DNS load runs in chunks of this length, so failures are placed in time.
const CHUNK: Duration = Duration::from_secs(10);
/// How long a killed etcd member stays down.
const ETCD_DOWN: Duration = Duration::from_secs(5);
/// After a restarted member is healthy, failures this long after still count as in its window.
const ETCD_GRACE: Duration = Duration::from_secs(10);
const ADVERT: Duration = Duration::from_millis(100);
const VRRP_SLACK: Duration = Duration::from_secs(1);
const VRIDS: [u8; 4] = [51, 52, 53, 54];
const VIPD_HTTP: &str = "127.0.0.1:9102";
const PROBE_EVERY: Duration = Duration::from_secs(30);
const PROBE_LIMIT: Duration = Duration::from_secs(15);
/// Extra Services per cluster that the churn creates and deletes.
const EXTRA_SERVICES: usize = 50;
/// Extra etcd names the writer puts and deletes.
const EXTRA_KEYS: usize = 100;

#[derive(Debug, Clone)]
struct Args {
    duration: Duration,
    etcd_restart_every: Duration,
    vrrp_every: Duration,
    sample_every: Duration,
    writes: u32,
    churn: u32,
    services: usize,
    kube_services: usize,
    /// DNS load, percent of the measured capacity.
    dns_load: u32,
}

/// `500ms`, `90s`, `3m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

fn args() -> Args {
    const USAGE: &str = "benches/soak [--duration 30m] [--etcd-restart-every 3m] [--vrrp-every 30s] \
        [--sample-every 10s] [--writes 1000] [--churn 10] [--services 500] [--kube-services 200] [--dns-load 50]";
    let mut a = Args {
        duration: Duration::from_secs(30 * 60),
        etcd_restart_every: Duration::ZERO,
        vrrp_every: Duration::from_secs(30),
        sample_every: Duration::from_secs(10),
        writes: 1000,
        churn: 10,
        services: 500,
        kube_services: 200,
        dns_load: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue; // cargo bench passes it
        }
        let value = it
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value; usage: {USAGE}"));
        let dur = || {
            parse_duration(&value)
                .unwrap_or_else(|| panic!("{flag} {value}: not a duration (e.g. 180s, 3m)"))
        };
        let num = || -> usize {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{flag} {value}: not a number"))
        };
        match flag.as_str() {
            "--duration" => a.duration = dur(),
            "--etcd-restart-every" => a.etcd_restart_every = dur(),
            "--vrrp-every" => a.vrrp_every = dur(),
            "--sample-every" => a.sample_every = dur(),
            "--writes" => a.writes = u32::try_from(num()).expect("--writes fits u32"),
            "--churn" => a.churn = u32::try_from(num()).expect("--churn fits u32"),
            "--services" => a.services = num(),
            "--kube-services" => a.kube_services = num(),
            "--dns-load" => a.dns_load = u32::try_from(num()).expect("--dns-load fits u32"),
            other => panic!("unknown argument {other}; usage: {USAGE}"),
        }
    }
    assert!(
        a.duration >= Duration::from_secs(60),
        "--duration must be at least 1m"
    );
    if a.etcd_restart_every.is_zero() {
        // 3 min; a short run still restarts each member once.
        a.etcd_restart_every = (a.duration / 4).min(Duration::from_secs(180));
    }
    a
}

/// Sets the shared stop flag when a load thread panics, so the others end too (instead of
/// running out the whole duration before the panic is seen).
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// Sleeps until `t` in short steps; false when the run was stopped meanwhile.
fn sleep_until(t: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= t {
            return true;
        }
        std::thread::sleep((t - now).min(Duration::from_millis(100)));
    }
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).expect("index")
    }
}

// ---------------------------------------------------------------------------------------------
// The DNS data set and load

/// One federated record: its etcd key and the octet that keeps its cluster's addresses apart.
struct Record {
    name: String,
    key: String,
    octet: u8,
}

/// The records of fedbench.py's `federated_records`: every service in 3 clusters at global,
/// region and zone level.
fn federated_records(services: usize) -> Vec<Record> {
    let mut out = Vec::with_capacity(services * 9);
    for i in 0..services {
        let base = format!("svc{i}.ns{}.federation.svc", i % 20);
        for (c, (cluster, region, zone)) in CLUSTERS.iter().enumerate() {
            for name in [
                format!("{base}.{ZONE}"),
                format!("{base}.{region}.{ZONE}"),
                format!("{base}.{zone}.{region}.{ZONE}"),
            ] {
                let mut key = String::from("/skydns");
                for label in name.rsplit('.') {
                    key.push('/');
                    key.push_str(label);
                }
                key.push('/');
                key.push_str(cluster);
                let octet = 1 + u8::try_from(c).expect("cluster");
                out.push(Record { name, key, octet });
            }
        }
    }
    out
}

fn record_value(octet: u8, n: u64) -> String {
    let [_, _, hi, lo] = u32::try_from(n % 60_000).expect("fits").to_be_bytes();
    format!("{{\"host\":\"10.{octet}.{hi}.{}\",\"ttl\":30}}", lo.max(1))
}

/// Puts every record, in transactions of 100.
fn load_records(endpoints: &[String], records: &[Record]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut client = etcd_client::Client::connect(endpoints, None)
            .await
            .expect("connect etcd");
        for chunk in records.chunks(100) {
            let ops: Vec<_> = chunk
                .iter()
                .map(|r| etcd_client::TxnOp::put(r.key.as_str(), record_value(r.octet, 1), None))
                .collect();
            client
                .txn(etcd_client::Txn::new().and_then(ops))
                .await
                .expect("load records");
        }
    });
}

/// dnsperf's counts for one run.
#[derive(Debug, Default, Clone, Copy)]
struct Perf {
    sent: u64,
    completed: u64,
    lost: u64,
    noerror: u64,
    qps: f64,
}

impl Perf {
    /// Queries that did not come back NOERROR.
    fn failed(&self) -> u64 {
        self.sent.saturating_sub(self.noerror)
    }
}

fn dnsperf(port: u16, queries: &Path, length: Duration, max_qps: Option<u64>) -> Perf {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(queries)
        .args(["-l", &format!("{:.1}", length.as_secs_f64())])
        .args(["-c", "8", "-T", "1", "-q", "200", "-t", "2"]);
    if let Some(q) = max_qps {
        cmd.args(["-Q", &q.to_string()]);
    }
    let out = cmd.output().expect("run dnsperf");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dnsperf failed: {text}");
    let field = |label: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .map(str::trim)
    };
    let count = |label: &str| -> u64 {
        field(label)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // "Response codes:       NOERROR 1000 (100.00%), SERVFAIL 2 (0.00%)"
    let noerror = field("Response codes:")
        .unwrap_or("")
        .split(", ")
        .find_map(|c| c.strip_prefix("NOERROR "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Perf {
        sent: count("Queries sent:"),
        completed: count("Queries completed:"),
        lost: count("Queries lost:"),
        noerror,
        qps: field("Queries per second:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
    }
}

/// One chunk of the half-capacity load.
struct Chunk {
    start: Instant,
    end: Instant,
    perf: Perf,
}

fn dns_load(
    port: u16,
    queries: &Path,
    qps: u64,
    deadline: Instant,
    stop: &AtomicBool,
) -> Vec<Chunk> {
    let _guard = StopOnPanic(stop);
    let mut chunks = Vec::new();
    while qps > 0 && !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_secs(2) {
            break;
        }
        let start = Instant::now();
        let perf = dnsperf(port, queries, left.min(CHUNK), Some(qps));
        chunks.push(Chunk {
            start,
            end: Instant::now(),
            perf,
        });
    }
    chunks
}

// ---------------------------------------------------------------------------------------------
// etcd: the writer and the restarts

#[derive(Debug, Default)]
struct WriterStats {
    ok: AtomicU64,
    err: AtomicU64,
    revision: AtomicI64,
    compactions: AtomicU64,
}

/// Writes `rate` updates/s, paced, until `stop`: nine in ten change an existing record's value,
/// one in ten puts or deletes an extra name. Compacts every minute to the revision of the
/// minute before.
fn etcd_writer(
    endpoints: &[String],
    records: &[Record],
    rate: u32,
    stop: &AtomicBool,
    stats: &Arc<WriterStats>,
) {
    let _guard = StopOnPanic(stop);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let mut client = etcd_client::Client::connect(endpoints, Some(opts))
            .await
            .expect("connect etcd");
        let permits = Arc::new(tokio::sync::Semaphore::new(256));
        let mut extra_present = [false; EXTRA_KEYS];
        let rate = f64::from(rate);
        let start = tokio::time::Instant::now();
        let mut issued: u64 = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut next_compact = start + Duration::from_secs(60);
        let mut compact_to = 0;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            // Never more than a second behind: after a stall, go on at the rate, no burst.
            issued = issued.max(due.saturating_sub(rate as u64));
            while issued < due {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    break;
                };
                issued += 1;
                let mut kv = client.kv_client();
                let stats = stats.clone();
                let op = if issued.is_multiple_of(10) {
                    let j = usize::try_from(issued / 10).expect("fits") % EXTRA_KEYS;
                    let key = format!("/skydns/com/example/soak/extra-{j}/x");
                    extra_present[j] = !extra_present[j];
                    if extra_present[j] {
                        (key, Some(record_value(9, issued)))
                    } else {
                        (key, None)
                    }
                } else {
                    let r = &records[usize::try_from(issued).expect("fits") % records.len()];
                    (r.key.clone(), Some(record_value(r.octet, issued)))
                };
                tokio::spawn(async move {
                    let revision = match op {
                        (key, Some(value)) => kv
                            .put(key, value, None)
                            .await
                            .map(|r| r.header().map(|h| h.revision())),
                        (key, None) => kv
                            .delete(key, None)
                            .await
                            .map(|r| r.header().map(|h| h.revision())),
                    };
                    match revision {
                        Ok(rev) => {
                            stats.ok.fetch_add(1, Ordering::Relaxed);
                            stats
                                .revision
                                .fetch_max(rev.unwrap_or(0), Ordering::Relaxed);
                        }
                        Err(_) => {
                            stats.err.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    drop(permit);
                });
            }
            if tokio::time::Instant::now() >= next_compact {
                next_compact += Duration::from_secs(60);
                if compact_to > 0 && client.compact(compact_to, None).await.is_ok() {
                    stats.compactions.fetch_add(1, Ordering::Relaxed);
                }
                compact_to = stats.revision.load(Ordering::Relaxed);
            }
        }
        // Let the writes in flight finish (each is bounded by the client's 5 s timeout).
        let _ = tokio::time::timeout(Duration::from_secs(10), permits.acquire_many(256)).await;
    });
}

/// Kills one member every `every` (round robin), leaves it down [`ETCD_DOWN`], starts it again
/// and waits until it answers; returns the windows (kill → healthy again).
fn etcd_restarts(
    cluster: &mut EtcdCluster,
    every: Duration,
    t0: Instant,
    deadline: Instant,
    stop: &AtomicBool,
) -> Vec<(Instant, Instant)> {
    let _guard = StopOnPanic(stop);
    let mut windows = Vec::new();
    for n in 1.. {
        let at = t0 + every * n;
        // Not when the member could not be back before the end.
        if at + ETCD_DOWN + Duration::from_secs(20) > deadline || !sleep_until(at, stop) {
            break;
        }
        let i = usize::try_from(n - 1).expect("fits") % 3;
        let start = Instant::now();
        cluster.kill(i);
        std::thread::sleep(ETCD_DOWN);
        cluster.restart(i);
        windows.push((start, Instant::now()));
        eprintln!(
            "soak: +{:>4.0}s etcd member m{i} killed, back after {:.1} s",
            (start - t0).as_secs_f64(),
            start.elapsed().as_secs_f64()
        );
    }
    windows
}

// ---------------------------------------------------------------------------------------------
// VRRP

/// Which host should hold group `g` in `phase`: host 0 the first two groups in phase 0.
fn vrrp_master(g: usize, phase: usize) -> usize {
    usize::from((g < 2) == (phase % 2 == 1))
}

fn vip(g: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        192,
        0,
        2,
        100 + u8::try_from(g).expect("group"),
    ))
}

fn write_vipd_config(path: &Path, host: usize, phase: usize) {
    let mut yaml = String::from("groups:\n");
    for (g, vrid) in VRIDS.iter().enumerate() {
        let priority = if vrrp_master(g, phase) == host {
            150
        } else {
            100
        };
        yaml += &format!(
            "  - vrid: {vrid}\n    priority: {priority}\n    vips: [{}/24]\n",
            vip(g)
        );
    }
    std::fs::write(path, yaml).expect("write the vipd config");
}

/// The groups whose address is not held by exactly its expected master in `phase`.
fn vrrp_wrong(hosts: &[Host], phase: usize) -> Vec<usize> {
    let held: Vec<Vec<IpAddr>> = hosts.iter().map(Host::addresses).collect();
    (0..VRIDS.len())
        .filter(|&g| {
            (0..hosts.len()).any(|h| held[h].contains(&vip(g)) != (vrrp_master(g, phase) == h))
        })
        .collect()
}

#[derive(Debug, Default)]
struct VrrpStats {
    /// Group failovers done (every group, every flip).
    failovers: u64,
    /// Group failovers not complete within the window.
    late: u64,
    /// Checks between failovers that found an address not held by exactly one host.
    steady_violations: u64,
    steady_checks: u64,
    /// Failover times (flip → exactly the new master holds it), per group.
    times: Vec<Duration>,
}

/// Master_Down_Interval of a backup with `priority` (RFC 5798).
fn master_down(priority: u32) -> Duration {
    ADVERT * 3 + ADVERT * (256 - priority) / 256
}

fn vrrp_failovers(
    hosts: &[Host],
    vipds: &[Daemon],
    configs: &[std::path::PathBuf],
    every: Duration,
    t0: Instant,
    deadline: Instant,
    stop: &AtomicBool,
) -> VrrpStats {
    let _guard = StopOnPanic(stop);
    let window = master_down(150) + VRRP_SLACK;
    let mut s = VrrpStats::default();
    let mut phase = 0;
    let mut next = t0 + every;
    while next + Duration::from_secs(10) < deadline && !stop.load(Ordering::Relaxed) {
        // Steady state until the next flip: exactly the phase's master holds each address.
        while Instant::now() < next && !stop.load(Ordering::Relaxed) {
            s.steady_checks += 1;
            let wrong = vrrp_wrong(hosts, phase);
            if !wrong.is_empty() {
                s.steady_violations += 1;
                eprintln!(
                    "soak: +{:>4.0}s VRRP steady state broken for VRIDs {:?}",
                    t0.elapsed().as_secs_f64(),
                    wrong.iter().map(|&g| VRIDS[g]).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        phase += 1;
        for (h, path) in configs.iter().enumerate() {
            write_vipd_config(path, h, phase);
        }
        let flip = Instant::now();
        for v in vipds {
            v.signal("HUP");
        }
        let mut done = vec![None; VRIDS.len()];
        while done.iter().any(Option::is_none) && flip.elapsed() < Duration::from_secs(10) {
            let wrong = vrrp_wrong(hosts, phase);
            for (g, d) in done.iter_mut().enumerate() {
                if d.is_none() && !wrong.contains(&g) {
                    *d = Some(flip.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for (g, d) in done.iter().enumerate() {
            s.failovers += 1;
            match d {
                Some(t) if *t <= window => s.times.push(*t),
                other => {
                    s.late += 1;
                    if let Some(t) = other {
                        s.times.push(*t);
                    }
                    eprintln!(
                        "soak: +{:>4.0}s VRRP VRID {} failover {} (window {window:?})",
                        (flip - t0).as_secs_f64(),
                        VRIDS[g],
                        other.map_or("never completed".into(), |t| format!("took {t:?}"))
                    );
                }
            }
        }
        next += every;
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The controller's member clusters and churn

fn ingress(cluster: usize, i: usize) -> Ipv4Addr {
    let [_, _, hi, lo] = u32::try_from(i).expect("index").to_be_bytes();
    Ipv4Addr::new(10, 100 + u8::try_from(cluster).expect("cluster"), hi, lo)
}

fn service(cluster: usize, name: &str, i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "soak", "name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": ingress(cluster, i).to_string()}]}}})
}

fn slice(cluster: usize, svc: &str, ready: bool) -> Value {
    let node = |n| format!("{}-node-{n}", CLUSTERS[cluster].0);
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "soak", "name": format!("{svc}-x"),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.244.1.1"], "nodeName": node(1), "conditions": {"ready": ready}},
            {"addresses": ["10.244.2.1"], "nodeName": node(2), "conditions": {"ready": ready}}]})
}

/// The probe Service's index (its ingress addresses), apart from the churned ones.
const PROBE: usize = 60_000;

fn member_cluster(c: usize, services: usize) -> FakeKubeApi {
    let (name, region, zone) = CLUSTERS[c];
    let f = FakeKubeApi::start();
    for n in 1..=2 {
        f.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("{name}-node-{n}"),
            "labels": {"topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone}}}));
    }
    for i in 0..services {
        let svc = format!("churn-{i:04}");
        f.apply(service(c, &svc, i));
        f.apply(slice(c, &svc, true));
    }
    f.apply(service(c, "probe", PROBE));
    f.apply(slice(c, "probe", true));
    f
}

/// `rate` changes/s over the clusters until `stop`: four in five flip a Service's
/// EndpointSlice ready/unready, one in five creates or deletes an extra Service.
fn kube_churn(fakes: &[FakeKubeApi], services: usize, rate: u32, stop: &AtomicBool) -> u64 {
    let _guard = StopOnPanic(stop);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut ready = vec![vec![true; services]; fakes.len()];
    let mut extra = vec![vec![false; EXTRA_SERVICES]; fakes.len()];
    let start = Instant::now();
    let mut n: u32 = 0;
    while sleep_until(start + Duration::from_secs(1) * n / rate, stop) {
        n += 1;
        let c = rng.below(fakes.len());
        if rng.below(5) > 0 {
            let i = rng.below(services);
            ready[c][i] = !ready[c][i];
            fakes[c].apply(slice(c, &format!("churn-{i:04}"), ready[c][i]));
        } else {
            let j = rng.below(EXTRA_SERVICES);
            let svc = format!("extra-{j:02}");
            if extra[c][j] {
                fakes[c].delete("v1", "Service", Some("soak"), &svc);
                fakes[c].delete(
                    "discovery.k8s.io/v1",
                    "EndpointSlice",
                    Some("soak"),
                    &format!("{svc}-x"),
                );
            } else {
                fakes[c].apply(service(c, &svc, 50_000 + j));
                fakes[c].apply(slice(c, &svc, true));
            }
            extra[c][j] = !extra[c][j];
        }
    }
    u64::from(n)
}

/// The probe Service's global name's A answer from fedplane-dns, sorted.
fn probe_answer(dns_port: u16) -> Vec<String> {
    dig(
        "127.0.0.1",
        dns_port,
        &[&format!("probe.soak.federation.svc.{ZONE}"), "A"],
    )
    .answers("A")
}

fn probe_want(clusters: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = clusters
        .iter()
        .map(|&c| ingress(c, PROBE).to_string())
        .collect();
    v.sort();
    v
}

/// Every [`PROBE_EVERY`]: the probe's slice in cluster 0 turns unready (then ready again), and
/// the change is awaited in fedplane-dns's answer; returns each change's time, `None` when it
/// did not show within [`PROBE_LIMIT`].
fn controller_probes(
    fakes: &[FakeKubeApi],
    dns_port: u16,
    t0: Instant,
    deadline: Instant,
    stop: &AtomicBool,
) -> Vec<Option<Duration>> {
    let _guard = StopOnPanic(stop);
    let mut out = Vec::new();
    let mut next = t0 + PROBE_EVERY / 2;
    while next + 2 * PROBE_LIMIT < deadline && sleep_until(next, stop) {
        let mut first_seen = true;
        for (ready, want) in [(false, probe_want(&[1, 2])), (true, probe_want(&[0, 1, 2]))] {
            let t = Instant::now();
            fakes[0].apply(slice(0, "probe", ready));
            let mut seen = None;
            // When the first change never showed, the answer already is the second's: not a
            // measurement, counted as late too.
            while first_seen && t.elapsed() < PROBE_LIMIT {
                if probe_answer(dns_port) == want {
                    seen = Some(t.elapsed());
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if seen.is_none() && first_seen {
                eprintln!(
                    "soak: +{:>4.0}s controller probe: {want:?} not answered within {PROBE_LIMIT:?} (answer {:?})",
                    (t - t0).as_secs_f64(),
                    probe_answer(dns_port)
                );
            }
            first_seen = seen.is_some();
            out.push(seen);
        }
        next += PROBE_EVERY;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Sampling

/// RSS (MiB), open fds and threads of `pid`; `None` when it is gone.
fn sample(pid: u32) -> Option<[f64; 3]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some([field("VmRSS:")? / 1024.0, fds as f64, field("Threads:")?])
}

/// The value of the sample `name` (no labels) in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Whether a process's Prometheus text has tokio task counts.
fn has_task_metrics(metrics: &str) -> bool {
    metrics
        .lines()
        .any(|l| !l.starts_with('#') && (l.contains("tokio") || l.contains("alive_tasks")))
}

// ---------------------------------------------------------------------------------------------

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn main() {
    // Everything is dropped (processes killed, namespaces deleted) before the exit status.
    if !run() {
        std::process::exit(1);
    }
}

/// The whole run; whether every bound held.
fn run() -> bool {
    let a = args();
    require_root();
    require_program("dnsperf", "dnsperf");
    require_program("dig", "bind9-dnsutils");
    eprintln!(
        "soak: {:?}; DNS: {} services ({} records) at half capacity; etcd: {} updates/s, a member \
         restarted every {:?}; VRRP: {} groups failing over every {:?}; controller: 3 clusters x {} \
         Services, {} changes/s; sampled every {:?}",
        a.duration,
        a.services,
        a.services * 9,
        a.writes,
        a.etcd_restart_every,
        VRIDS.len(),
        a.vrrp_every,
        a.kube_services,
        a.churn,
        a.sample_every
    );
    let dir = tempfile::tempdir().expect("temp dir");

    // etcd and fedplane-dns.
    let mut cluster = EtcdCluster::start(3);
    let endpoints: Vec<String> = cluster.endpoints().split(',').map(String::from).collect();
    let records = federated_records(a.services);
    load_records(&endpoints, &records);
    let queries = dir.path().join("queries");
    {
        let names: Vec<&str> = records
            .iter()
            .map(|r| r.name.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut rng = Rng(7);
        let text: String = (0..50_000)
            .map(|_| format!("{} A\n", names[rng.below(names.len())]))
            .collect();
        std::fs::write(&queries, text).expect("write the query file");
    }
    let dns_port = free_port();
    let dns_http = format!("127.0.0.1:{}", free_port());
    let mut dns = Daemon::start(
        &workspace_bin("fedplane-dns"),
        &[
            "--zone".into(),
            format!("{ZONE}."),
            "--listen".into(),
            format!("127.0.0.1:{dns_port}"),
            "--http".into(),
            dns_http.clone(),
            "--etcd-endpoints".into(),
            cluster.endpoints(),
        ],
        &[],
    );
    wait_until(Duration::from_secs(60), "fedplane-dns ready", || {
        http_get(&dns_http, "/readyz").filter(|(c, _)| *c == 200)
    });
    let last = &records[records.len() - 1].name;
    wait_until(Duration::from_secs(30), "fedplane-dns to answer", || {
        (dig("127.0.0.1", dns_port, &[last, "A"]).status == "NOERROR").then_some(())
    });

    // fedplane-controller and its member clusters.
    let fakes: Vec<FakeKubeApi> = (0..CLUSTERS.len())
        .map(|c| member_cluster(c, a.kube_services))
        .collect();
    let contexts: Vec<(&str, &FakeKubeApi)> = CLUSTERS.iter().map(|c| c.0).zip(&fakes).collect();
    let kubeconfig = write_kubeconfig(dir.path(), &contexts);
    let controller_http = format!("127.0.0.1:{}", free_port());
    let mut controller_args: Vec<String> = vec![
        "--domain".into(),
        format!("{ZONE}."),
        "--federation".into(),
        "federation".into(),
        "--etcd-endpoints".into(),
        cluster.endpoints(),
        "--http".into(),
        controller_http.clone(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
    ];
    for (name, ..) in CLUSTERS {
        controller_args.extend(["--context".into(), name.into()]);
    }
    let mut controller =
        Daemon::start(&workspace_bin("fedplane-controller"), &controller_args, &[]);
    wait_until(
        Duration::from_secs(120),
        "the controller's records answered",
        || (probe_answer(dns_port) == probe_want(&[0, 1, 2])).then_some(()),
    );

    // Two fedplane-vipd peers.
    let mut lan = Lan::new();
    let hosts: Vec<Host> = (1..=2)
        .map(|i| lan.add_host(&format!("192.0.2.{}/24", 10 + i), None))
        .collect();
    let configs: Vec<_> = (0..hosts.len())
        .map(|h| dir.path().join(format!("vipd-{h}.yaml")))
        .collect();
    let mut vipds: Vec<Daemon> = hosts
        .iter()
        .zip(&configs)
        .enumerate()
        .map(|(h, (host, config))| {
            write_vipd_config(config, h, 0);
            host.spawn(
                &workspace_bin("fedplane-vipd"),
                &[
                    "--interface".into(),
                    "eth0".into(),
                    "--advert-interval".into(),
                    "100ms".into(),
                    "--config".into(),
                    config.display().to_string(),
                    "--http".into(),
                    VIPD_HTTP.into(),
                ],
                &[],
            )
        })
        .collect();
    wait_until(Duration::from_secs(10), "each group's first master", || {
        vrrp_wrong(&hosts, 0).is_empty().then_some(())
    });

    // Which daemons expose task counts.
    let mut metrics = vec![
        (
            "fedplane-dns",
            http_get(&dns_http, "/metrics")
                .map(|r| r.1)
                .unwrap_or_default(),
        ),
        (
            "fedplane-controller",
            http_get(&controller_http, "/metrics")
                .map(|r| r.1)
                .unwrap_or_default(),
        ),
    ];
    metrics.push((
        "fedplane-vipd",
        hosts[0]
            .try_run(&["curl", "-sf", &format!("http://{VIPD_HTTP}/metrics")])
            .unwrap_or_default(),
    ));
    let task_note: Vec<String> = metrics
        .iter()
        .map(|(name, m)| {
            format!(
                "{name}: {}",
                if m.is_empty() {
                    "no /metrics answer"
                } else if has_task_metrics(m) {
                    "task counts exposed (not sampled)"
                } else {
                    "no task counts in /metrics"
                }
            )
        })
        .collect();

    let stop = AtomicBool::new(false);
    let writer = Arc::new(WriterStats::default());
    let procs: Vec<(String, u32)> = [
        ("fedplane-dns".to_owned(), dns.pid()),
        ("fedplane-vipd (peer 1)".to_owned(), vipds[0].pid()),
        ("fedplane-vipd (peer 2)".to_owned(), vipds[1].pid()),
        ("fedplane-controller".to_owned(), controller.pid()),
    ]
    .into();

    let report = std::thread::scope(|s| {
        // The background load first: the capacity is measured with it running.
        let writer_thread = s.spawn(|| etcd_writer(&endpoints, &records, a.writes, &stop, &writer));
        let churn_thread = s.spawn(|| kube_churn(&fakes, a.kube_services, a.churn, &stop));
        eprintln!(
            "soak: load running; measuring fedplane-dns's capacity (dnsperf, 10 s unlimited)"
        );
        let capacity = dnsperf(dns_port, &queries, Duration::from_secs(10), None);
        let target = (capacity.qps * f64::from(a.dns_load) / 100.0).round() as u64;
        eprintln!(
            "soak: capacity {:.0} qps ({} lost); half-capacity load at {target} qps for {:?}",
            capacity.qps, capacity.lost, a.duration
        );

        let t0 = Instant::now();
        let deadline = t0 + a.duration;
        let (stop, queries, hosts, vipds, configs, fakes, cluster, a) = (
            &stop,
            &queries,
            &hosts,
            &vipds,
            &configs,
            &fakes,
            &mut cluster,
            &a,
        );
        let writer_at_t0 = writer.ok.load(Ordering::Relaxed);
        let writer_err_at_t0 = writer.err.load(Ordering::Relaxed);
        let dns_thread = s.spawn(move || dns_load(dns_port, queries, target, deadline, stop));
        let restart_thread =
            s.spawn(move || etcd_restarts(cluster, a.etcd_restart_every, t0, deadline, stop));
        let vrrp_thread = s
            .spawn(move || vrrp_failovers(hosts, vipds, configs, a.vrrp_every, t0, deadline, stop));
        let probe_thread = s.spawn(move || controller_probes(fakes, dns_port, t0, deadline, stop));

        // Sampling, and a progress line a minute.
        let mut samples: Vec<(f64, Vec<[f64; 3]>)> = Vec::new();
        let mut lags: Vec<(f64, f64)> = Vec::new();
        let mut died = Vec::new();
        let mut n = 0;
        while sleep_until(t0 + a.sample_every * n, stop) && Instant::now() < deadline {
            n += 1;
            let t = t0.elapsed().as_secs_f64();
            let row: Vec<[f64; 3]> = procs
                .iter()
                .map(|(name, pid)| {
                    sample(*pid).unwrap_or_else(|| {
                        died.push(name.clone());
                        stop.store(true, Ordering::Relaxed);
                        [0.0; 3]
                    })
                })
                .collect();
            if (t as u64) % 60 < a.sample_every.as_secs().max(1) {
                eprintln!(
                    "soak: +{t:>4.0}s RSS MiB {:?}; etcd writes ok {} err {}",
                    row.iter().map(|r| r[0].round()).collect::<Vec<_>>(),
                    writer.ok.load(Ordering::Relaxed) - writer_at_t0,
                    writer.err.load(Ordering::Relaxed) - writer_err_at_t0
                );
            }
            samples.push((t, row));
            // How far fedplane-dns's snapshot is behind the writer's latest revision.
            let served = http_get(&dns_http, "/metrics")
                .and_then(|(_, m)| metric(&m, "fedplane_dns_snapshot_revision"));
            let latest = writer.revision.load(Ordering::Relaxed) as f64;
            lags.push((t, served.map_or(f64::NAN, |r| (latest - r).max(0.0))));
        }
        let end = t0.elapsed();
        let writes_ok = writer.ok.load(Ordering::Relaxed) - writer_at_t0;
        let writes_err = writer.err.load(Ordering::Relaxed) - writer_err_at_t0;
        stop.store(true, Ordering::Relaxed);
        let chunks = dns_thread.join().expect("DNS load thread");
        let windows = restart_thread.join().expect("etcd restart thread");
        let vrrp = vrrp_thread.join().expect("VRRP thread");
        let probes = probe_thread.join().expect("controller probe thread");
        let changes = churn_thread.join().expect("controller churn thread");
        writer_thread.join().expect("etcd writer thread");
        Report {
            capacity,
            target,
            end,
            writes_ok,
            writes_err,
            chunks,
            windows,
            vrrp,
            probes,
            changes,
            samples,
            lags,
            died,
            t0,
        }
    });
    let ok = report.print(&a, &procs, &task_note, &writer);
    let mut dead: Vec<String> = Vec::new();
    for (name, d) in [
        ("fedplane-dns", &mut dns),
        ("fedplane-controller", &mut controller),
    ]
    .into_iter()
    .chain(vipds.iter_mut().map(|v| ("fedplane-vipd", v)))
    {
        if !d.is_running() {
            dead.push(name.into());
            eprintln!("--- {name} output ---\n{}", d.output());
        }
    }
    if !dead.is_empty() {
        println!("- FAIL: exited during the run: {}", dead.join(", "));
    }
    if !ok {
        // What the daemons warned about, to tell which one a failure comes from.
        for (name, d) in [("fedplane-dns", &dns), ("fedplane-controller", &controller)] {
            let out = d.output();
            let warned: Vec<&str> = out
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            let tail = &warned[warned.len().saturating_sub(30)..];
            eprintln!(
                "--- {name}: last warnings and errors ---\n{}",
                tail.join("\n")
            );
        }
    }
    ok && dead.is_empty()
}

struct Report {
    capacity: Perf,
    target: u64,
    end: Duration,
    writes_ok: u64,
    writes_err: u64,
    chunks: Vec<Chunk>,
    windows: Vec<(Instant, Instant)>,
    vrrp: VrrpStats,
    probes: Vec<Option<Duration>>,
    changes: u64,
    samples: Vec<(f64, Vec<[f64; 3]>)>,
    /// Revisions fedplane-dns's snapshot is behind the writer's latest, at each sample.
    lags: Vec<(f64, f64)>,
    died: Vec<String>,
    t0: Instant,
}

impl Report {
    /// Prints the tables and the verdicts; whether every bound held.
    fn print(
        &self,
        a: &Args,
        procs: &[(String, u32)],
        task_note: &[String],
        writer: &WriterStats,
    ) -> bool {
        let mut verdicts: Vec<(bool, String)> = Vec::new();
        let secs = self.end.as_secs_f64();
        let window = (self.end / 6).min(Duration::from_secs(300)).as_secs_f64();
        let first: Vec<_> = self.samples.iter().filter(|(t, _)| *t < window).collect();
        let last: Vec<_> = self
            .samples
            .iter()
            .filter(|(t, _)| *t >= secs - window)
            .collect();
        println!();
        println!(
            "Soak: `benches/soak --duration {}s`, {} samples every {:?}; first and last window \
             {:.0} s each.",
            a.duration.as_secs(),
            self.samples.len(),
            a.sample_every,
            window
        );
        println!();
        println!(
            "| process | measure | first {w:.0} s avg | last {w:.0} s avg | max | growth | bound |",
            w = window
        );
        println!("|---|---|---|---|---|---|---|");
        for (p, (name, _)) in procs.iter().enumerate() {
            for (m, (measure, unit)) in [("RSS", " MiB"), ("open fds", ""), ("threads", "")]
                .iter()
                .enumerate()
            {
                let col = |rows: &[&(f64, Vec<[f64; 3]>)]| {
                    mean(&rows.iter().map(|(_, r)| r[p][m]).collect::<Vec<_>>())
                };
                let (f, l) = (col(&first), col(&last));
                let max = self
                    .samples
                    .iter()
                    .map(|(_, r)| r[p][m])
                    .fold(0.0, f64::max);
                let growth = l - f;
                let (limit, bound) = if m == 0 {
                    let limit = (f * 0.10).max(8.0);
                    (limit, format!("≤ {limit:.1} MiB (max of 10 %, 8 MiB)"))
                } else {
                    (4.0, "≤ 4".to_owned())
                };
                let held = growth <= limit;
                let fmt = |v: f64| {
                    if m == 0 {
                        format!("{v:.1}{unit}")
                    } else {
                        format!("{v:.1}")
                    }
                };
                println!(
                    "| {name} | {measure} | {} | {} | {} | {:+.1}{unit} | {bound} {} |",
                    fmt(f),
                    fmt(l),
                    fmt(max),
                    growth,
                    if held { "✓" } else { "✗" }
                );
                verdicts.push((
                    held,
                    format!("{name} {measure} growth {growth:+.1}{unit} {bound}"),
                ));
            }
        }

        // DNS.
        let in_restart = |c: &Chunk| {
            self.windows
                .iter()
                .any(|(s, e)| c.start < *e + ETCD_GRACE && *s < c.end)
        };
        let (mut inside, mut outside, mut sent, mut completed) = (0, 0, 0, 0);
        for c in &self.chunks {
            sent += c.perf.sent;
            completed += c.perf.completed;
            let f = c.perf.failed();
            if in_restart(c) {
                inside += f;
            } else {
                outside += f;
            }
            if f > 0 {
                eprintln!(
                    "soak: +{:>4.0}s-{:.0}s {f} failed queries (lost {}, not NOERROR {}){}",
                    (c.start - self.t0).as_secs_f64(),
                    (c.end - self.t0).as_secs_f64(),
                    c.perf.lost,
                    c.perf.completed.saturating_sub(c.perf.noerror),
                    if in_restart(c) {
                        " in an etcd-restart window"
                    } else {
                        ""
                    }
                );
            }
        }
        let load_secs: f64 = self
            .chunks
            .iter()
            .map(|c| (c.end - c.start).as_secs_f64())
            .sum();
        let achieved = completed as f64 / load_secs.max(1e-9);
        let writes_rate = self.writes_ok as f64 / secs;
        let mut times = self.vrrp.times.clone();
        times.sort();
        let pct = |v: &[Duration], p: f64| {
            v.get(((v.len() as f64 - 1.0) * p).round() as usize)
                .map_or("–".to_owned(), |d| {
                    format!("{:.0}", d.as_secs_f64() * 1e3)
                })
        };
        let mut probe_times: Vec<Duration> = self.probes.iter().flatten().copied().collect();
        probe_times.sort();
        let probe_failed = self.probes.iter().filter(|p| p.is_none()).count();
        let restart_secs: Vec<String> = self
            .windows
            .iter()
            .map(|(s, e)| format!("{:.1}", (*e - *s).as_secs_f64()))
            .collect();
        println!();
        println!("| load | figure |");
        println!("|---|---|");
        println!(
            "| DNS: measured capacity (dnsperf, 10 s, under the other load) | {:.0} qps |",
            self.capacity.qps
        );
        println!(
            "| DNS: target (half) / achieved | {} qps / {achieved:.0} qps ({sent} queries in {} chunks of {:?}) |",
            self.target,
            self.chunks.len(),
            CHUNK
        );
        println!("| DNS: failed queries outside etcd-restart windows | {outside} |");
        println!("| DNS: failed queries inside etcd-restart windows | {inside} |");
        println!(
            "| etcd: updates/s achieved (target {}) | {writes_rate:.0} ({} ok, {} failed, {} compactions) |",
            a.writes,
            self.writes_ok,
            self.writes_err,
            writer.compactions.load(Ordering::Relaxed)
        );
        println!(
            "| etcd: member restarts (kill, {:?} down, start, healthy) | {} (took {} s) |",
            ETCD_DOWN,
            self.windows.len(),
            restart_secs.join(", ")
        );
        println!(
            "| VRRP: group failovers done / outside the window ({:.0} ms) | {} / {} (p50 {} ms, max {} ms) |",
            (master_down(150) + VRRP_SLACK).as_secs_f64() * 1e3,
            self.vrrp.failovers,
            self.vrrp.late,
            pct(&times, 0.5),
            pct(&times, 1.0)
        );
        println!(
            "| VRRP: steady-state checks with not exactly one holder | {} of {} |",
            self.vrrp.steady_violations, self.vrrp.steady_checks
        );
        println!(
            "| controller: changes done | {} ({:.1}/s) |",
            self.changes,
            self.changes as f64 / secs
        );
        println!(
            "| controller: probe changes answered by fedplane-dns / late (> {:?}) | {} / {probe_failed} (p50 {} ms, max {} ms) |",
            PROBE_LIMIT,
            probe_times.len(),
            pct(&probe_times, 0.5),
            pct(&probe_times, 1.0)
        );
        let lag = |rows: Vec<f64>| mean(&rows);
        let lag_first = lag(self
            .lags
            .iter()
            .filter(|(t, _)| *t < window)
            .map(|l| l.1)
            .collect());
        let lag_last = lag(self
            .lags
            .iter()
            .filter(|(t, _)| *t >= secs - window)
            .map(|l| l.1)
            .collect());
        let lag_max = self.lags.iter().map(|l| l.1).fold(0.0, f64::max);
        let per_s = writes_rate.max(1.0);
        println!(
            "| fedplane-dns snapshot behind etcd: first / last window avg, max | {lag_first:.0} / {lag_last:.0} / {lag_max:.0} revisions (≈ {:.1} / {:.1} / {:.1} s of updates) |",
            lag_first / per_s,
            lag_last / per_s,
            lag_max / per_s
        );
        println!("| task counts | {} |", task_note.join("; "));
        println!();

        let lag_bound = 10.0 * f64::from(a.writes);
        verdicts.push((
            lag_max <= lag_bound,
            format!(
                "fedplane-dns: snapshot at most {lag_max:.0} revisions behind etcd (bound {lag_bound:.0}: 10 s of updates)"
            ),
        ));
        verdicts.push((
            outside == 0,
            format!("DNS: {outside} failed queries outside etcd-restart windows (bound 0)"),
        ));
        verdicts.push((
            achieved >= 0.9 * self.target as f64,
            format!(
                "DNS: achieved {achieved:.0} qps of {} (bound ≥ 90 %)",
                self.target
            ),
        ));
        verdicts.push((
            writes_rate >= 0.9 * f64::from(a.writes),
            format!(
                "etcd: {writes_rate:.0} updates/s of {} (bound ≥ 90 %)",
                a.writes
            ),
        ));
        verdicts.push((
            self.vrrp.late == 0 && self.vrrp.failovers > 0,
            format!(
                "VRRP: {} of {} group failovers outside the window (bound 0)",
                self.vrrp.late, self.vrrp.failovers
            ),
        ));
        verdicts.push((
            self.vrrp.steady_violations == 0,
            format!(
                "VRRP: {} steady-state checks without exactly one holder (bound 0)",
                self.vrrp.steady_violations
            ),
        ));
        verdicts.push((
            probe_failed == 0 && !self.probes.is_empty(),
            format!(
                "controller: {probe_failed} of {} probe changes not answered within {PROBE_LIMIT:?} (bound 0)",
                self.probes.len()
            ),
        ));
        if !self.died.is_empty() {
            verdicts.push((false, format!("died: {}", self.died.join(", "))));
        }
        for (held, text) in &verdicts {
            println!("- {}: {text}", if *held { "PASS" } else { "FAIL" });
        }
        verdicts.iter().all(|(held, _)| *held)
    }
}
