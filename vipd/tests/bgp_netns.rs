//! BGP mode end to end, as root, in network namespaces: a router running FRR (zebra, bgpd,
//! bfdd) and three nodes, each running fedplane-vipd with its BIRD and a web server holding
//! the service address on `lo`. The router learns the address from every node and installs an
//! ECMP route; clients (the router itself here) reach the nodes through it. A SIGTERM
//! withdraws the node's route before fedplane-vipd exits; a node that dies (link down,
//! processes killed) is gone from the router within the BFD detection time.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use fedplane_testkit::frr::{Frr, RouterConfig};
use fedplane_testkit::netns::{Host, Lan};
use fedplane_testkit::{Daemon, require_program};
use tempfile::TempDir;

mod common;
use common::{readyz, web};

const VIP: &str = "10.9.0.10";
const WAIT: Duration = Duration::from_secs(30);

struct Lab {
    _dir: TempDir,
    router: Frr,
    router_host: Host,
    nodes: Vec<Host>,
    vipds: Vec<Daemon>,
    _webs: Vec<Daemon>,
    _lan: Lan,
}

fn vip() -> IpAddr {
    VIP.parse().expect("address")
}

/// fedplane-vipd on `node` in BGP mode announcing [`VIP`] to the router.
fn vipd(node: &Host, name: &str, dir: &Path, bfd: bool) -> Daemon {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "bgp:\n  asn: 65001\n  withdraw_wait: 2s\n  peers:\n    - {{name: tor, address: 10.0.0.1, asn: 65000, bfd: {bfd}, hold_time: 3s}}\n  announce: [{VIP}]\n"
        ),
    )
    .expect("config");
    let run_dir = dir.join(format!("run-{name}"));
    let args: Vec<String> = [
        "--config",
        &config.to_string_lossy(),
        "--node-name",
        name,
        "--http",
        "127.0.0.1:9102",
        "--bgp-run-dir",
        &run_dir.to_string_lossy(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    node.spawn(Path::new(env!("CARGO_BIN_EXE_fedplane-vipd")), &args, &[])
}

fn lab(bfd: bool) -> Lab {
    require_program("bird", "bird2");
    require_program("vtysh", "frr");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lan = Lan::new();
    let router_host = lan.add_host("10.0.0.1/24", None);
    let router = Frr::start(
        &router_host,
        &RouterConfig {
            asn: 65000,
            listen_range: "10.0.0.0/24".into(),
            peer_asn: 65001,
            bfd,
            timers: (1, 3),
        },
    );
    let mut nodes = Vec::new();
    let mut vipds = Vec::new();
    let mut webs = Vec::new();
    for i in 1..=3 {
        let node = lan.add_host(&format!("10.0.0.1{i}/24"), None);
        node.run(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        node.run(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
        let name = format!("n{i}");
        webs.push(web(&node, &name, dir.path()));
        vipds.push(vipd(&node, &name, dir.path(), bfd));
        nodes.push(node);
    }
    Lab {
        _dir: dir,
        router,
        router_host,
        nodes,
        vipds,
        _webs: webs,
        _lan: lan,
    }
}

impl Lab {
    fn hops(&self, which: &[usize]) -> BTreeSet<IpAddr> {
        which
            .iter()
            .map(|i| IpAddr::V4(self.nodes[*i].ipv4))
            .collect()
    }

    /// The node names the router reaches over `n` fresh connections to the address, and
    /// the errors of those that failed.
    fn reached(&self, n: usize) -> (BTreeSet<String>, Vec<String>) {
        let (mut names, mut errors) = (BTreeSet::new(), Vec::new());
        for _ in 0..n {
            match self.router_host.try_run(&[
                "curl",
                "-sS",
                "-f",
                "--max-time",
                "2",
                &format!("http://{VIP}:8080/name"),
            ]) {
                Ok(name) => {
                    names.insert(name);
                }
                Err(e) => errors.push(e),
            }
        }
        (names, errors)
    }
}

#[test]
fn every_node_announces_the_address_and_the_router_spreads_over_them() {
    let lab = lab(true);
    lab.router
        .await_nexthops(vip(), &lab.hops(&[0, 1, 2]), WAIT);
    let (reached, errors) = lab.reached(24);
    assert!(
        reached.len() >= 2,
        "ECMP reaches several nodes: {reached:?}; failures: {errors:#?}\nroute: {}",
        lab.router_host.run(&["ip", "route", "show", VIP])
    );
    // The BGP session state is in the metrics (read from BIRD once a second: awaited).
    let established = "fedplane_vipd_bgp_session_state{peer=\"tor\"} 3";
    let metrics = fedplane_testkit::wait_until_or(WAIT, || {
        Some(common::metrics(&lab.nodes[0])).filter(|m| m.contains(established))
    })
    .unwrap_or_else(|| common::metrics(&lab.nodes[0]));
    assert!(metrics.contains(established), "{metrics}");
    assert!(
        metrics.contains("fedplane_vipd_bgp_announced_prefixes 1"),
        "{metrics}"
    );
}

#[test]
fn sigterm_withdraws_the_route_before_fedplane_vipd_exits() {
    let mut lab = lab(true);
    lab.router
        .await_nexthops(vip(), &lab.hops(&[0, 1, 2]), WAIT);
    let started = Instant::now();
    lab.vipds[1].signal("TERM");
    let want = lab.hops(&[0, 2]);
    let mut withdrawn = None;
    while started.elapsed() < Duration::from_secs(10) {
        if lab.router.nexthops(vip()) == want {
            withdrawn = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let withdrawn = withdrawn.expect("the route via n2 withdrawn after SIGTERM");
    // Withdrawn, not dropped with the session: fedplane-vipd and its BIRD still run then.
    assert!(
        lab.vipds[1].is_running(),
        "fedplane-vipd exited before the withdrawal"
    );
    let n2_bird = lab.nodes[1]
        .try_run(&["pgrep", "-x", "bird"])
        .unwrap_or_default()
        .lines()
        .any(|pid| {
            lab.nodes[1]
                .try_run(&["ip", "netns", "identify", pid])
                .is_ok_and(|ns| ns.trim() == lab.nodes[1].ns)
        });
    assert!(
        n2_bird,
        "n2's BIRD had stopped (Cease) before the withdrawal was seen"
    );
    let status = lab.vipds[1].wait_exit(Duration::from_secs(15));
    let exited = started.elapsed();
    assert!(status.success(), "fedplane-vipd exits cleanly: {status}");
    assert!(
        withdrawn < exited,
        "withdrawn at {withdrawn:?}, before the exit at {exited:?}"
    );
    // Its BIRD is gone with it.
    let left = lab.nodes[1]
        .try_run(&["pgrep", "-x", "bird"])
        .unwrap_or_default();
    let ours: Vec<&str> = left.lines().collect();
    assert!(
        ours.iter().all(|pid| !lab.nodes[1]
            .try_run(&["ip", "netns", "identify", pid])
            .unwrap_or_default()
            .contains(&lab.nodes[1].ns)),
        "BIRD of n2 still runs"
    );
    // The others still answer (the router's route may be rewritten for a moment).
    fedplane_testkit::wait_until(WAIT, "the router to reach n1 or n3", || {
        lab.reached(1).0.into_iter().find(|n| n != "n2")
    });
}

/// Kills node `i` (link down, fedplane-vipd and its BIRD killed) `rounds` times, each time
/// timing until the router's route leaves it, then brings it back; the times.
fn dead_node_rounds(lab: &mut Lab, i: usize, bfd: bool, rounds: usize) -> Vec<Duration> {
    let others: Vec<usize> = (0..3).filter(|j| *j != i).collect();
    let mut times = Vec::new();
    for round in 0..rounds {
        lab.router
            .await_nexthops(vip(), &lab.hops(&[0, 1, 2]), WAIT);
        if bfd {
            // BFD up on the router for every peer before the cut.
            fedplane_testkit::wait_until(WAIT, "BFD sessions up on the router", || {
                let peers = lab.router.vtysh("show bfd peers brief");
                (peers.matches(" up ").count() >= 3).then_some(())
            });
        }
        let started = Instant::now();
        lab.nodes[i].set_link(false);
        lab.vipds[i].signal("KILL");
        lab.router
            .await_nexthops(vip(), &lab.hops(&others), Duration::from_secs(8));
        times.push(started.elapsed());
        if round + 1 < rounds {
            // Back: the link (and its default route), fedplane-vipd and BIRD.
            let _ = lab.vipds[i].wait_exit(Duration::from_secs(5));
            lab.nodes[i].set_link(true);
            let _ = lab.nodes[i].try_run(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
            let name = format!("n{}", i + 1);
            lab.vipds[i] = vipd(&lab.nodes[i], &name, lab._dir.path(), bfd);
        }
    }
    times
}

/// FEDPLANE_BGP_ROUNDS: how many times the dead-node tests kill a node (benches/vipd-failover
/// reads their figures).
fn rounds() -> usize {
    std::env::var("FEDPLANE_BGP_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)].as_secs_f64() * 1e3;
    eprintln!(
        "BGP {what} rounds={} p50_ms={:.1} p99_ms={:.1}",
        times.len(),
        pct(50),
        pct(99)
    );
}

#[test]
fn a_dead_node_is_gone_from_the_router_within_the_bfd_detection_time() {
    let mut lab = lab(true);
    let mut times = dead_node_rounds(&mut lab, 2, true, rounds());
    // BFD 100 ms × 3, plus the router's route update.
    for gone in &times {
        assert!(*gone < Duration::from_secs(1), "gone after {gone:?}");
    }
    report("dead_node_bfd", &mut times);
}

#[test]
fn without_bfd_a_dead_node_is_gone_within_the_hold_time() {
    let mut lab = lab(false);
    let mut times = dead_node_rounds(&mut lab, 0, false, rounds());
    // The router holds a session 3 s without a keepalive (timers 1 3).
    for gone in &times {
        assert!(*gone < Duration::from_millis(4500), "gone after {gone:?}");
    }
    report("dead_node_hold", &mut times);
}

#[test]
fn a_broken_peer_config_is_refused_by_name_and_the_session_stays() {
    let lab = lab(true);
    lab.router
        .await_nexthops(vip(), &lab.hops(&[0, 1, 2]), WAIT);
    let config = lab._dir.path().join("n1.yaml");
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, good.replace("asn: 65000", "asn: 0")).expect("write");
    lab.vipds[0].signal("HUP");
    fedplane_testkit::wait_until(WAIT, "the refusal in the log", || {
        let out = lab.vipds[0].output();
        (out.contains("BGP reload refused") && out.contains("bgp.peers[tor].asn")).then_some(())
    });
    // The session stayed up: no flap, the route still there, BIRD still answering.
    let metrics = common::metrics(&lab.nodes[0]);
    assert!(
        !metrics.contains("fedplane_vipd_bgp_session_flaps_total"),
        "{metrics}"
    );
    assert_eq!(lab.router.nexthops(vip()), lab.hops(&[0, 1, 2]));
    let ready = readyz(&lab.nodes[0]);
    assert!(ready.ends_with(" 200"), "{ready}");
    // A good change is taken in place.
    std::fs::write(&config, good.replace("hold_time: 3s", "hold_time: 6s")).expect("write");
    lab.vipds[0].signal("HUP");
    fedplane_testkit::wait_until(WAIT, "the reload in the log", || {
        lab.vipds[0]
            .output()
            .contains("BGP settings reloaded")
            .then_some(())
    });
    fedplane_testkit::wait_until(WAIT, "the reload counted", || {
        let m = common::metrics(&lab.nodes[0]);
        m.contains("fedplane_vipd_bgp_engine_reloads_total{result=\"ok\"} 2")
            .then_some(())
    });
    lab.router
        .await_nexthops(vip(), &lab.hops(&[0, 1, 2]), WAIT);
}
#[test]
fn a_hung_bird_does_not_hold_the_shutdown() {
    let mut lab = lab(true);
    lab.router
        .await_nexthops(vip(), &lab.hops(&[0, 1, 2]), WAIT);
    // n2's BIRD stops answering (SIGSTOP), then fedplane-vipd is told to stop.
    let birds = lab.nodes[1]
        .try_run(&["pgrep", "-x", "bird"])
        .unwrap_or_default();
    for pid in birds.lines() {
        if lab.nodes[1]
            .try_run(&["ip", "netns", "identify", pid])
            .is_ok_and(|ns| ns.trim() == lab.nodes[1].ns)
        {
            lab.nodes[1].run(&["kill", "-STOP", pid]);
        }
    }
    let started = Instant::now();
    lab.vipds[1].signal("TERM");
    let status = lab.vipds[1].wait_exit(Duration::from_secs(20));
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    // Within withdraw_wait (2 s) and BIRD's stop grace (5 s), not the 10 s bound.
    assert!(took < Duration::from_secs(9), "stopped after {took:?}");
    // The routes left the kernel table, and the router dropped n2 (its BFD went silent).
    let table = lab.nodes[1].run(&["ip", "route", "show", "table", "102"]);
    assert!(!table.contains(VIP), "{table}");
    lab.router.await_nexthops(vip(), &lab.hops(&[0, 2]), WAIT);
}
