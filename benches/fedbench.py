"""Shared pieces of fedplane's DNS benchmarks: the federated data set, real etcd, NSD, Knot and
fedplane-dns processes on free loopback ports, and dnsperf runs. Standard library only."""

import argparse
import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZONE = "example.com"
CLUSTERS = [("fcp", "europe", "fr", 1), ("usa", "america", "us", 3), ("chn", "asia", "cn", 2)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench: timed out after {timeout}s waiting for {what}")


def federated_records(services):
    """(name, ip) pairs: every service in 3 clusters at global, region and zone level, as
    fedplane-controller writes them (9 records per service)."""
    out = []
    for i in range(services):
        svc, ns = f"svc{i}", f"ns{i % 20}"
        for cluster, region, zone, octet in CLUSTERS:
            ip = f"10.{octet}.{(i // 250) % 256}.{i % 250 + 1}"
            base = f"{svc}.{ns}.federation.svc"
            out.append((f"{base}.{ZONE}", cluster, ip))
            out.append((f"{base}.{region}.{ZONE}", cluster, ip))
            out.append((f"{base}.{zone}.{region}.{ZONE}", cluster, ip))
    return out


def etcd_key(name, leaf, prefix="/skydns"):
    return prefix + "/" + "/".join(reversed(name.split("."))) + "/" + leaf


def zone_file(records, path, serial=1):
    with open(path, "w") as f:
        f.write(f"$ORIGIN {ZONE}.\n$TTL 30\n")
        f.write(f"@ SOA ns.dns.{ZONE}. hostmaster.{ZONE}. {serial} 7200 1800 86400 30\n")
        f.write(f"@ NS ns.dns.{ZONE}.\nns.dns A 127.0.0.1\n")
        for name, _cluster, ip in records:
            f.write(f"{name}. 30 A {ip}\n")


def query_file(records, path, count=200_000, seed=7):
    names = sorted({name for name, _, _ in records})
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(count):
            f.write(f"{rng.choice(names)} A\n")


class Proc:
    def __init__(self, name, argv, log):
        self.name = name
        self.log = log
        self.p = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)

    def rss_kib(self, field="VmRSS"):
        """Resident memory now (VmRSS), or its peak so far (field="VmHWM")."""
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        """User + system CPU time used so far by the process and its live children (NSD forks
        its servers)."""
        stats = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(pid)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        tree, ticks = {self.p.pid}, 0
        for pid in sorted(stats):
            if pid in tree or stats[pid][0] in tree:
                tree.add(pid)
                ticks += stats[pid][1]
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


class Etcd:
    def __init__(self, work):
        self.port, peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc("etcd", [
            "etcd", "--name", "bench", "--data-dir", f"{work}/etcd",
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
            "--quota-backend-bytes", str(8 << 30), "--snapshot-count", "1000000",
        ], f"{work}/etcd.log")
        wait_for("etcd", lambda: self.post("/v3/maintenance/status", {}) is not None)

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def put_many(self, kvs, batch=128):
        """Puts (key, value) pairs in transactions of `batch` (etcd's default max-txn-ops)."""
        b64 = lambda s: base64.b64encode(s.encode()).decode()
        for i in range(0, len(kvs), batch):
            ops = [{"requestPut": {"key": b64(k), "value": b64(v)}} for k, v in kvs[i:i + batch]]
            self.post("/v3/kv/txn", {"success": ops})

    def put(self, key, value):
        b64 = lambda s: base64.b64encode(s.encode()).decode()
        return int(self.post("/v3/kv/put", {"key": b64(key), "value": b64(value)})["header"]["revision"])

    def stop(self):
        self.proc.stop()


def load_records(etcd, records, prefix="/skydns"):
    etcd.put_many([(etcd_key(name, cluster, prefix), json.dumps({"host": ip, "ttl": 30}))
                   for name, cluster, ip in records])


def dig_ok(port, name):
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), name, "A", "+short", "+time=1",
                          "+tries=1"], capture_output=True, text=True).stdout
    # A timeout is printed on stdout too (";; connection timed out; ..."), not an answer.
    return bool(out.strip()) and not out.startswith(";;")


def start_fedplane(work, etcd, workers, tag="fedplane", prefix="/skydns", binary=None, extra=()):
    port, http = free_port(), free_port()
    binary = binary or os.path.join(ROOT, "target/release/fedplane-dns")
    proc = Proc(tag, [binary, "--zone", f"{ZONE}.", "--listen", f"127.0.0.1:{port}",
                      "--http", f"127.0.0.1:{http}", "--etcd-endpoints", etcd.url,
                      "--etcd-prefix", prefix, "--workers", str(workers), *extra], f"{work}/{tag}.log")
    proc.port, proc.http = port, http
    return proc


def fedplane_ready(proc):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.http}/readyz", timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def start_nsd(work, zonefile, workers, server_options="", zone_options=""):
    """NSD serving `zonefile`; `server_options` are more lines (indented) for its server:
    clause, e.g. "  rrl-ratelimit: 0\n", `zone_options` for its zone: clause."""
    d = tempfile.mkdtemp(dir=work, prefix="nsd")
    shutil.copy(zonefile, f"{d}/{ZONE}.zone")
    port = free_port()
    with open(f"{d}/nsd.conf", "w") as f:
        f.write(f"""server:
  ip-address: 127.0.0.1@{port}
  server-count: {workers}
  zonesdir: "{d}"
  pidfile: "{d}/nsd.pid"
  database: ""
  username: ""
  chroot: ""
  xfrdfile: "{d}/xfrd.state"
  zonelistfile: "{d}/zone.list"
  verbosity: 0
  hide-version: yes
  reuseport: yes
{server_options}remote-control:
  control-enable: no
zone:
  name: {ZONE}
  zonefile: {ZONE}.zone
{zone_options}""")
    proc = Proc("nsd", ["nsd", "-d", "-c", f"{d}/nsd.conf"], f"{d}/nsd.log")
    proc.port = port
    return proc


def start_knot(work, zonefile, workers):
    d = tempfile.mkdtemp(dir=work, prefix="knot")
    shutil.copy(zonefile, f"{d}/{ZONE}.zone")
    port = free_port()
    with open(f"{d}/knot.conf", "w") as f:
        f.write(f"""server:
    listen: 127.0.0.1@{port}
    rundir: "{d}"
    udp-workers: {workers}
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{d}/db"
log:
  - target: stderr
    any: warning
zone:
  - domain: {ZONE}
    storage: "{d}"
    file: "{ZONE}.zone"
    journal-content: none
    zonefile-sync: -1
""")
    proc = Proc("knot", ["knotd", "-c", f"{d}/knot.conf"], f"{d}/knot.log")
    proc.port = port
    return proc


def dnsperf(port, queries, seconds, clients=8, outstanding=200, max_qps=None, verbose=False,
            transport="udp", edns_option=None):
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(seconds),
            "-c", str(clients), "-T", "1", "-q", str(outstanding), "-t", "2", "-m", transport]
    if edns_option:
        argv += ["-E", edns_option]
    if max_qps:
        argv += ["-Q", str(max_qps)]
    if verbose:
        argv += ["-v"]
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    codes = re.search(r"Response codes:\s+(.*)", out)
    result = {"qps": qps, "lost": int(lost.group(1)) if lost else 0,
              "rcodes": codes.group(1).strip() if codes else ""}
    if verbose:
        lat = sorted(float(m) for m in re.findall(r"^> \S+ .* ([\d.]+)$", out, re.M))
        if lat:
            result["p50_us"] = lat[len(lat) // 2] * 1e6
            result["p99_us"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6
    return result


def arg_parser(doc, services, workers=True):
    """The options every bench takes: data set size, run length, workers, --no-build."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=services, help="federated services (9 records each)")
    ap.add_argument("--seconds", type=int, default=10, help="dnsperf run length")
    if workers:
        ap.add_argument("--workers", type=int, default=1, help="fedplane-dns UDP workers")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    return ap


def build_release(skip=False, package="fedplane-dns"):
    """Builds the release binary of `package` the bench runs (unless `skip`)."""
    if not skip:
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", package],
                       cwd=ROOT, check=True)


def build_baseline(rev, package="fedplane-dns"):
    """Builds `package` at git revision `rev` in a throwaway worktree (its own target dir under
    target/baseline, kept between runs) and returns the binary's path."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.strip()
    tree = tempfile.mkdtemp(prefix="fedbench-baseline-")
    subprocess.run(["git", "worktree", "add", "-q", "--detach", tree, commit], cwd=ROOT, check=True)
    try:
        target = os.path.join(ROOT, "target/baseline")
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", package], cwd=tree,
                       check=True, env={**os.environ, "CARGO_TARGET_DIR": target})
        binary = os.path.join(target, f"{package}-{commit[:10]}")
        shutil.copy(os.path.join(target, "release", package), binary)
        return binary
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT, check=True)


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {os.uname().release}"


def raw_query(name, qid=1):
    q = qid.to_bytes(2, "big") + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00\x00\x01\x00\x01"


def percentile(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def fedplane_metric(proc, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.http}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0
