//! The README's run command, `scripts/demo`, run as its users run it (with the binaries this
//! test run built, through `FEDPLANE_BIN`): its answers, its failover, and that it leaves no
//! namespace or process behind, whether it ends or is stopped with SIGTERM half-way.

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fedplane_testkit::netns::{list_namespaces, require_root};
use fedplane_testkit::{Daemon, require_program, wait_until, workspace_bin};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// One demo at a time: the failover time it prints is not measured under a second demo's load.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A running demo. Dropped while it runs (a failed assertion), it gets SIGTERM and a bounded
/// wait, so its own cleanup still removes what it made (a plain kill would leave it all).
struct Demo {
    daemon: Daemon,
    _turn: MutexGuard<'static, ()>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.daemon.is_running() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.daemon.pid().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.daemon.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn start_demo() -> Demo {
    start_demo_with(&[])
}

fn start_demo_with(args: &[&str]) -> Demo {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    require_root();
    for (program, package) in [
        ("etcd", "etcd-server"),
        ("etcdctl", "etcd-client"),
        ("dig", "bind9-dnsutils"),
        ("curl", "curl"),
        ("python3", "python3"),
    ] {
        require_program(program, package);
    }
    let bin = workspace_bin("fedplane-vipd");
    let bin_dir = bin.parent().expect("target directory");
    for name in ["fedplane-dns", "fedplane-controller"] {
        workspace_bin(name);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/demo"))
        .args(args)
        .env("FEDPLANE_BIN", bin_dir);
    Demo {
        daemon: Daemon::spawn("scripts/demo", cmd),
        _turn: turn,
    }
}

/// The namespaces the demo run `pid` left (it checks its own processes, and says so in its
/// last line).
fn leftovers(pid: u32) -> Vec<String> {
    let prefix = format!("fpdemo{pid}-");
    list_namespaces()
        .into_iter()
        .filter(|ns| ns.starts_with(&prefix))
        .collect()
}

#[test]
fn demo_answers_fails_over_and_leaves_nothing_behind() {
    let mut demo = start_demo();
    let pid = demo.daemon.pid();
    let status = demo.daemon.wait_exit(RUN_TIMEOUT);
    let out = demo.daemon.output();
    assert!(status.success(), "the demo failed ({status}):\n{out}");

    for line in [
        // VIPs held by node 1 of each cluster and reached from its lan.
        "fcp  10.210.1.68  held by fcp-node-1",
        "curl from the lan: hello-world from usa-node-1",
        // Global name: every cluster's address.
        "hello-world.default.federation.svc.example.com.\t30 IN A\t10.210.2.65",
        // Region and zone names.
        "hello-world.default.federation.svc.europe.example.com. 30 IN A 10.210.1.68",
        "hello-world.default.federation.svc.us.america.example.com. 30 IN A 10.210.3.65",
        // The fallback: zone → region → global.
        "hello-world.default.federation.svc.cn.asia.example.com.\t30 IN CNAME hello-world.default.federation.svc.asia.example.com.",
        "hello-world.default.federation.svc.asia.example.com. 30\tIN CNAME hello-world.default.federation.svc.example.com.",
        // The failover, reached from the lan.
        "curl: hello-world from usa-node-2",
        // Answers with etcd stopped.
        "status: NXDOMAIN",
        "nothing left behind",
    ] {
        assert!(
            out.contains(line),
            "the demo's output lacks {line:?}:\n{out}"
        );
    }
    // The traffic policies: each section's A answers, in order.
    let answers = |heading: &str| -> Vec<String> {
        let section = out
            .split("\n== ")
            .find(|s| s.starts_with(heading))
            .unwrap_or_else(|| panic!("no section {heading:?}:\n{out}"));
        section
            .lines()
            .filter(|l| l.starts_with("hello-world.") && l.contains(" IN A"))
            .filter_map(|l| l.rsplit(['\t', ' ']).next().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        answers("traffic policy closest"),
        ["10.210.3.65", "10.210.1.68"],
        "each lan gets its own cluster:\n{out}"
    );
    assert_eq!(answers("traffic policy failover"), ["10.210.3.65"], "{out}");
    assert_eq!(
        answers("hello-world has no ready endpoint left in usa"),
        ["10.210.1.68"],
        "{out}"
    );
    let ms: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("usa-node-2 holds 10.210.3.65 "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no failover time in the output:\n{out}"));
    assert!(
        ms <= 1000,
        "failover took {ms} ms, over the 1 s target:\n{out}"
    );
    assert_eq!(leftovers(pid), Vec::<String>::new(), "{out}");
}

#[test]
fn demo_stopped_half_way_cleans_up() {
    let mut demo = start_demo();
    let pid = demo.daemon.pid();
    wait_until(RUN_TIMEOUT, "the demo's clusters to be up", || {
        demo.daemon
            .output()
            .contains("held by chn-node-1")
            .then_some(())
    });
    assert!(!leftovers(pid).is_empty(), "the clusters' namespaces exist");
    demo.daemon.signal("TERM");
    let status = demo.daemon.wait_exit(RUN_TIMEOUT);
    let out = demo.daemon.output();
    assert_eq!(status.code(), Some(143), "exit status of SIGTERM:\n{out}");
    assert!(out.contains("nothing left behind"), "{out}");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "{out}");
}

#[test]
fn the_bgp_variant_spreads_over_every_node_withdraws_a_dead_one_and_cleans_up() {
    require_program("bird", "bird2");
    require_program("vtysh", "frr");
    let mut demo = start_demo_with(&["--bgp"]);
    let pid = demo.daemon.pid();
    let status = demo.daemon.wait_exit(RUN_TIMEOUT);
    let out = demo.daemon.output();
    assert!(status.success(), "the BGP demo failed ({status}):\n{out}");
    for line in [
        "nexthop via 10.0.0.11",
        "nexthop via 10.0.0.12",
        "nexthop via 10.0.0.13",
        "nothing left behind",
    ] {
        assert!(
            out.contains(line),
            "the BGP demo's output lacks {line:?}:\n{out}"
        );
    }
    // After node-3 died, the client reaches the others only (ECMP picks which).
    let after = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("the client: "))
        .unwrap_or_else(|| panic!("no client line after the failure:\n{out}"));
    assert!(
        after.contains("hello from node-") && !after.contains("node-3"),
        "{out}"
    );
    let ms: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("the router's route leaves node-3 "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no withdrawal time in the output:\n{out}"));
    assert!(ms <= 1000, "withdrawn after {ms} ms, over 1 s:\n{out}");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "{out}");
    let frr_left: Vec<_> = std::fs::read_dir("/var/run/frr")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("fpdemo{pid}-"))
        })
        .collect();
    assert!(frr_left.is_empty(), "FRR directories left: {frr_left:?}");
}
