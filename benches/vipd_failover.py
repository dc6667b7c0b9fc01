#!/usr/bin/env python3
"""Failover bench: how long a client on the link waits for a virtual address to move to the
backup, for fedplane-vipd and for keepalived 2.2.7 with the same timers, in the same run.

Two routers (priority 150 master, 100 backup) and a client in network namespaces on one bridge.
Each run: the client pings the VIP (so its ARP cache holds the master's MAC), `ip monitor neigh`
watches that cache, then the master is stopped at a random point of its advert cycle and the
clock runs until the client's entry for the VIP carries the backup's MAC, i.e. the backup holds
the address and its gratuitous ARP has arrived. fedplane-vipd and keepalived runs alternate.

  crash:    SIGKILL (keepalived: its VRRP child, then the parent; a SIGKILL of the parent alone
            makes the child resign cleanly). Bound: Master_Down = 3 x interval + skew.
  graceful: SIGTERM; the master resigns with priority 0. Bound: Skew = (256 - 100)/256 x interval.

BGP rows, in the same run (`--no-bgp` leaves them out): an FRR router and three nodes running
fedplane-vipd in BGP mode with BIRD, in network namespaces (vipd/tests/bgp_netns.rs and
bgp_kube_netns.rs, run with FEDPLANE_BGP_ROUNDS=--runs). The clock runs until the router's
kernel route to the address no longer (or again) names the node:

  dead node, BFD 100 ms x 3:   link down, fedplane-vipd and BIRD killed. Bound: 3 x 100 ms.
  dead node, hold time 3 s:    the same without BFD (FRR timers 1 3). Bound: the hold time.
  last local endpoint gone:    a Local Service's EndpointSlice loses the node (Kubernetes
                               API fake) -> that node's route withdrawn; and back.

    benches/vipd-failover [--runs 20] [--interval-ms 100] [--no-bgp]     (as root)
"""

import argparse
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedbench as fb  # noqa: E402

VIP = "192.0.2.100"
PREFIX = f"fpb{os.getpid()}-"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def netns(name, *args):
    return sh("ip", "netns", "exec", name, *args)


class Lab:
    """A bridge namespace and hosts a (master), b (backup), c (client)."""

    def __init__(self):
        self.lan = PREFIX + "lan"
        self.hosts = {}
        sh("ip", "netns", "add", self.lan)
        sh("ip", "-n", self.lan, "link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        sh("ip", "-n", self.lan, "link", "set", "br0", "up")
        for i, name in enumerate(["a", "b", "c"], 1):
            ns = PREFIX + name
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", self.lan)
            sh("ip", "-n", self.lan, "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"192.0.2.{10 + i}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            mac = netns(ns, "cat", "/sys/class/net/eth0/address").strip()
            self.hosts[name] = (ns, mac)
        for name in ["a", "b"]:
            fb.wait_for("the bridge to forward", lambda: ping(self.ns("c"), f"192.0.2.{10 + 'ab'.index(name) + 1}"), 10)

    def ns(self, name):
        return self.hosts[name][0]

    def mac(self, name):
        return self.hosts[name][1]

    def holds(self, name):
        return f" {VIP}/" in netns(self.ns(name), "ip", "-o", "addr", "show", "dev", "eth0")

    def clear(self):
        for name in ["a", "b"]:
            ns = self.ns(name)
            for pid in sh("ip", "netns", "pids", ns).split():
                sh("kill", "-9", pid, check=False)
            sh("ip", "-n", ns, "addr", "del", f"{VIP}/24", "dev", "eth0", check=False)
        sh("ip", "-n", self.ns("c"), "neigh", "flush", "dev", "eth0", check=False)

    def close(self):
        self.clear()
        for ns in [self.ns(n) for n in "abc"] + [self.lan]:
            for pid in sh("ip", "netns", "pids", ns, check=False).split():
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", ns, check=False)


def ping(ns, ip):
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", "0.5", ip],
                          capture_output=True).returncode == 0


class Fedplane:
    name = "fedplane-vipd"

    def __init__(self, lab, work, interval_ms):
        self.lab, self.work, self.interval_ms = lab, work, interval_ms
        self.procs = {}

    def start(self, host, priority):
        binary = os.path.join(fb.ROOT, "target/release/fedplane-vipd")
        log = open(f"{self.work}/vipd-{host}.log", "a")
        self.procs[host] = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns(host), binary, "--interface", "eth0", "--vrid", "51",
             "--priority", str(priority), "--advert-interval", f"{self.interval_ms}ms", "--vip", f"{VIP}/24",
             "--http", "127.0.0.1:9102"], stdout=log, stderr=subprocess.STDOUT)

    def is_backup(self, host):
        out = netns(self.lab.ns(host), "curl", "-sf", "http://127.0.0.1:9102/metrics")
        return any(l.startswith("fedplane_vipd_state{") and l.endswith(" 1") for l in out.splitlines())

    def stop(self, host, crash):
        self.procs[host].send_signal(9 if crash else 15)

    def reap(self):
        for p in self.procs.values():
            p.kill()
            p.wait()
        self.procs = {}


class Keepalived:
    name = "keepalived"

    def __init__(self, lab, work, interval_ms):
        self.lab, self.work, self.interval_ms = lab, work, interval_ms
        self.procs = {}

    def start(self, host, priority):
        d = tempfile.mkdtemp(dir=self.work, prefix=f"ka-{host}-")
        with open(f"{d}/keepalived.conf", "w") as f:
            f.write(f"""global_defs {{
    router_id {host}
    vrrp_version 3
    vrrp_garp_master_delay 1
    vrrp_garp_master_repeat 3
}}
vrrp_instance VI_51 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int {self.interval_ms / 1000}
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
""")
        log = open(f"{d}/log", "w")
        self.procs[host] = (subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns(host), "keepalived", "--dont-fork", "--log-console",
             "--no-syslog", "--vrrp", "--dont-respawn", f"--use-file={d}/keepalived.conf",
             f"--pid={d}/keepalived.pid", f"--vrrp_pid={d}/vrrp.pid", f"--checkers_pid={d}/checkers.pid"],
            stdout=log, stderr=subprocess.STDOUT, cwd=d), d)

    def is_backup(self, host):
        with open(f"{self.procs[host][1]}/log") as f:
            return "Entering BACKUP STATE" in f.read()

    def stop(self, host, crash):
        proc, d = self.procs[host]
        if crash:
            with open(f"{d}/vrrp.pid") as f:
                sh("kill", "-9", f.read().strip(), check=False)
            proc.kill()
        else:
            proc.terminate()

    def reap(self):
        for p, _ in self.procs.values():
            p.kill()
            p.wait()
        self.procs = {}


def one_run(lab, impl, crash, rnd):
    """Seconds from stopping the master to the client's ARP entry naming the backup."""
    lab.clear()
    impl.start("a", 150)
    fb.wait_for(f"{impl.name} on a to hold the VIP", lambda: lab.holds("a"), 10)
    impl.start("b", 100)
    fb.wait_for(f"{impl.name} on b to be backup", lambda: impl.is_backup("b"), 10)
    fb.wait_for("the client to reach the VIP", lambda: ping(lab.ns("c"), VIP), 10)
    mon = subprocess.Popen(["ip", "netns", "exec", lab.ns("c"), "ip", "monitor", "neigh"],
                           stdout=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put((time.perf_counter(), l)) for l in mon.stdout], daemon=True).start()
    # Let `ip monitor` subscribe, then stop the master at a random point of its advert cycle.
    # Without the random part, every run would stop it at about the same phase (each run's steps
    # take about as long as the last), and the bench would measure that phase, not the failover.
    time.sleep(0.05 + rnd.uniform(0, impl.interval_ms / 1000))
    t0 = time.perf_counter()
    impl.stop("a", crash)
    want = lab.mac("b")
    try:
        while True:
            t, line = lines.get(timeout=10)
            if line.startswith(VIP + " ") and want in line:
                return t - t0
    except queue.Empty:
        raise SystemExit(f"{impl.name}: no ARP update for {VIP} within 10 s")
    finally:
        mon.kill()
        mon.wait()
        impl.reap()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="failovers per implementation and kind")
    ap.add_argument("--interval-ms", type=int, default=100, help="advert interval of both")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--no-bgp", action="store_true", help="leave out the BGP rows")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("vipd-failover needs root: it creates network namespaces")
    fb.build_release(args.no_build, "fedplane-vipd")
    work = tempfile.mkdtemp(prefix="fedbench-vipd-")
    lab = Lab()
    results = {}
    try:
        print(f"{args.runs} runs each, advert interval {args.interval_ms} ms; machine: {fb.machine()}", flush=True)
        rnd = random.Random(1)
        for crash in [True, False]:
            impls = [Fedplane(lab, work, args.interval_ms), Keepalived(lab, work, args.interval_ms)]
            for _ in range(args.runs):  # interleaved, so both see the same machine
                for impl in impls:
                    results.setdefault((impl.name, crash), []).append(one_run(lab, impl, crash, rnd))
    finally:
        lab.close()

    bgp = {} if args.no_bgp else bgp_rows(args.runs)

    interval = args.interval_ms / 1000
    bounds = {True: 3 * interval + (256 - 100) / 256 * interval, False: (256 - 100) / 256 * interval}
    print()
    print("| failover | fedplane-vipd p50 / p99 | keepalived p50 / p99 | fedplane / keepalived (p99) | protocol bound |")
    print("|---|---|---|---|---|")
    for crash in [True, False]:
        f = results[("fedplane-vipd", crash)]
        k = results[("keepalived", crash)]
        ms = lambda v, p: fb.percentile(v, p) * 1e3
        print(f"| {'crash (SIGKILL)' if crash else 'graceful (SIGTERM)'} | {ms(f, .5):.0f} ms / {ms(f, .99):.0f} ms"
              f" | {ms(k, .5):.0f} ms / {ms(k, .99):.0f} ms | {ms(f, .99) / ms(k, .99):.2f}"
              f" | {bounds[crash] * 1e3:.0f} ms |")


    if bgp:
        vrrp = fb.percentile(results[("fedplane-vipd", True)], .99) * 1e3
        print()
        print(f"BGP mode, {args.runs} runs each (FRR router, three nodes with BIRD):")
        print()
        print("| event | p50 / p99 | goal | p99 / VRRP crash failover p99 (same run) |")
        print("|---|---|---|---|")
        for key, what, goal in [("dead_node_bfd", "dead node -> route gone, BFD 100 ms x 3", "p99 <= 1 s (MetalLB FRR mode: 5-6 s, its authors)"),
                                ("dead_node_hold", "dead node -> route gone, hold time 3 s", "the hold time (3 s) + the route update"),
                                ("gone", "last local endpoint gone -> route withdrawn", "p99 <= 200 ms"),
                                ("back", "local endpoint back -> route announced", "(MetalLB: 3-4 s)")]:
            p50, p99 = bgp[key]
            print(f"| {what} | {p50:.0f} ms / {p99:.0f} ms | {goal} | {p99 / vrrp:.2f} |")


def bgp_rows(runs):
    """The BGP rows, from the netns tests run FEDPLANE_BGP_ROUNDS times each: key -> (p50, p99) ms."""
    env = dict(os.environ, FEDPLANE_BGP_ROUNDS=str(runs))
    out = subprocess.run(
        ["cargo", "test", "--locked", "-q", "-p", "fedplane-vipd", "--test", "bgp_netns", "--test", "bgp_kube_netns",
         "--", "--nocapture", "--test-threads", "1", "dead", "announcements"],
        cwd=fb.ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the BGP tests failed:\n{out.stdout}\n{out.stderr}")
    rows = {}
    for line in out.stderr.splitlines() + out.stdout.splitlines():
        if not line.startswith("BGP "):
            continue
        f = dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
        name = line.split()[1]
        if name == "endpoint":
            rows["gone"] = (float(f["gone_p50_ms"]), float(f["gone_p99_ms"]))
            rows["back"] = (float(f["back_p50_ms"]), float(f["back_p99_ms"]))
        else:
            rows[name] = (float(f["p50_ms"]), float(f["p99_ms"]))
    missing = {"dead_node_bfd", "dead_node_hold", "gone", "back"} - rows.keys()
    if missing:
        raise SystemExit(f"the BGP tests printed no figures for {missing}:\n{out.stderr}")
    return rows


if __name__ == "__main__":
    main()
