#!/usr/bin/env python3
"""Attack bench: ordinary-query qps of fedplane-dns, NSD and Knot while each is attacked, as a
ratio to its idle qps (issue 16's "Done when": each ≥ 90 %).

Every server holds the federated data set of dns-throughput plus a big subtree under
bulk.example.com: 20,000 etcd keys for fedplane-dns (its `bulk A` and `bulk SRV` answers collect
4,096 of them), and for NSD and Knot a 4,096-record A RRset at bulk (`bulk SRV` is NODATA there).
NSD's response rate limiting is off, as Knot's is by default. dnsperf saturates each server with
A queries for the ordinary names (as dns-throughput does) while one attack runs:

- bulk:   `bulk.example.com A` and `bulk.example.com SRV` (EDNS 1232), alternating, at --bulk-qps;
- port0:  UDP queries for an ordinary name from source port 0 (crafted with a raw socket: needs
          root) at --port0-pps;
- random: UDP queries for random names under the zone (NXDOMAIN, a "water torture" attack) at
          --random-qps; meanwhile another client sends 20 SRV queries a second for an ordinary
          name (fedplane-dns's general path) and the table says how many were answered within 1 s;
- tcp:    --tcp-conns TCP connections each sending a query every --tcp-interval seconds (every
          connection the server closes is opened again), plus --tcp-new new connections a second
          that send one query each and close once answered (or after 10 s). Meanwhile a new TCP
          client connects twice a second and sends one query: the table says how many of them
          were answered (within 2 s).

    benches/dns-attack [--services 2000] [--seconds 5] [--rounds 2] [--workers 1]
                       [--attacks bulk,port0,random,tcp] [--fedplane-dns PATH] [--no-build]

Each round measures every server idle, then under each attack in turn (one attack at a time,
started 1 s before dnsperf and stopped after it); the table gives the medians.

The attackers are separate processes of this script (`--attacker KIND`), paced in 5 ms ticks
and never waiting for answers, so a server that drops their queries still gets them all.
"""

import json
import os
import random
import resource
import selectors
import signal
import statistics
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedbench as fb  # noqa: E402

BULK = f"bulk.{fb.ZONE}"
BULK_KEYS = 20_000
BULK_RRSET = 4_096
# How long a server may take to answer again once an attack stops.
RECOVERY = 300.0
ATTACKS = {
    "bulk": "big-subtree queries",
    "port0": "port-0 packets",
    "random": "random-name flood",
    "tcp": "TCP connection flood",
}


# ---- data set ----------------------------------------------------------------------------

def bulk_ip(i):
    return f"10.200.{i // 250}.{i % 250 + 1}"


def load_bulk(etcd):
    etcd.put_many([(fb.etcd_key(BULK, f"r{i}"), json.dumps({"host": bulk_ip(i), "port": 80, "ttl": 30}))
                   for i in range(BULK_KEYS)])


def bulk_zone(path):
    """The 4,096-record A RRset at bulk (no SRV there: NSD 4.6 answers a 4,096-record SRV RRset
    with in-zone targets at ~120 qps, so `bulk SRV` is NODATA for NSD and Knot)."""
    with open(path, "a") as f:
        for i in range(BULK_RRSET):
            f.write(f"{BULK}. 30 A {bulk_ip(i)}\n")


# ---- wire helpers -----------------------------------------------------------------------

def query(name, qtype=1, qid=0, edns=None):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", qtype, 1)
    if edns:
        q += b"\x00" + struct.pack(">HHIH", 41, edns, 0, 0)
    return q


def answers(port, name, timeout=1.0):
    """Whether a UDP query for `name` is answered within `timeout`."""
    qid = random.randrange(1 << 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        s.send(query(name, qid=qid))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                if s.recv(65535)[:2] == struct.pack(">H", qid):
                    return True
            except OSError:  # a timeout, or refused
                return False
    return False


def pace(rate, send):
    """Calls send() `rate` times a second, in 5 ms ticks, until SIGTERM."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    start, sent = time.monotonic(), 0
    while not stop:
        due = int((time.monotonic() - start) * rate)
        while sent < due and not stop:
            send(sent)
            sent += 1
        time.sleep(0.005)
    return sent


def udp_attack(port, rate, make_query):
    """Sends make_query(n) `rate` times a second from one socket, never waiting for answers
    (read as they come); returns what was sent and answered."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.connect(("127.0.0.1", port))
    answered = [0]

    def send(n):
        try:
            s.send(make_query(n))
        except BlockingIOError:
            pass
        try:
            while True:
                s.recv(65535)
                answered[0] += 1
        except (BlockingIOError, ConnectionRefusedError):
            pass

    sent = pace(rate, send)
    return {"sent": sent, "answered": answered[0]}


def attack_bulk(port, rate):
    queries = [query(BULK, 1, edns=1232), query(BULK, 33, edns=1232)]
    return udp_attack(port, rate, lambda n: queries[n % 2])


def attack_random(port, rate):
    return udp_attack(port, rate, lambda n: query(f"{os.urandom(6).hex()}.svc.{fb.ZONE}", 1, qid=n & 0xFFFF))


def attack_port0(port, rate, name):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    payload = query(name, 1, qid=0x4242)
    # UDP header: source port 0, checksum 0 (none, allowed over IPv4); the kernel adds IP.
    packet = struct.pack(">HHHH", 0, port, 8 + len(payload), 0) + payload
    sent = pace(rate, lambda _: s.sendto(packet, ("127.0.0.1", 0)))
    return {"sent": sent}


class TcpFlood:
    """`conns` connections, each sending a query every `interval` s (at a random phase) and
    opened again when the server closes it; besides them, `new` connections a second that send
    one query each and close once answered (or after 10 s)."""

    NEW_WAIT = 10.0

    def __init__(self, port, conns, interval, new, name):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.port, self.conns, self.interval, self.new = port, conns, interval, new
        self.msg = struct.pack(">H", len(query(name))) + query(name)
        self.sel = selectors.DefaultSelector()
        # socket -> [held (else new), connected, next send time (held) or give-up time (new)]
        self.socks = {}
        self.held = 0
        self.stats = {"held_opened": 0, "held_closed_by_server": 0, "held_queries": 0,
                      "held_answers": 0, "new_opened": 0, "new_answered": 0, "new_unanswered": 0,
                      "refused": 0}

    def open(self, held, now):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", self.port))
        self.socks[s] = [held, False, now + self.NEW_WAIT]
        self.sel.register(s, selectors.EVENT_WRITE)
        self.held += held
        self.stats["held_opened" if held else "new_opened"] += 1

    def close(self, s, why):
        self.stats[why] += 1
        self.held -= self.socks.pop(s)[0]
        self.sel.unregister(s)
        s.close()

    def send(self, s, c, now):
        try:
            s.send(self.msg)
        except OSError:
            self.close(s, "held_closed_by_server" if c[0] else "new_unanswered")
            return
        if c[0]:
            self.stats["held_queries"] += 1
            c[2] = now + self.interval

    def run(self):
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        started = time.monotonic()
        reported = False
        while not stop:
            now = time.monotonic()
            while self.held < self.conns:
                self.open(True, now)
            while self.stats["new_opened"] < int((now - started) * self.new):
                self.open(False, now)
            for key, ev in self.sel.select(timeout=0.005):
                s = key.fileobj
                c = self.socks.get(s)
                if c is None:
                    continue
                if not c[1] and ev & selectors.EVENT_WRITE:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self.close(s, "refused")
                        continue
                    c[1] = True
                    self.sel.modify(s, selectors.EVENT_READ)
                    if c[0]:
                        c[2] = now + random.uniform(0, self.interval)
                    else:
                        self.send(s, c, now)
                elif ev & selectors.EVENT_READ:
                    try:
                        data = s.recv(65535)
                    except OSError:
                        data = b""
                    if c[0] and data:
                        self.stats["held_answers"] += 1
                    elif c[0]:
                        self.close(s, "held_closed_by_server")
                    else:
                        self.close(s, "new_answered" if data else "new_unanswered")
            for s, c in list(self.socks.items()):
                if c[0] and c[1] and c[2] <= now:
                    self.send(s, c, now)
                elif not c[0] and c[2] <= now:
                    self.close(s, "new_unanswered")
            # Ready once every held connection is up, or after 3 s (a server may leave some
            # waiting in its backlog for good).
            if not reported and (self.established() >= self.conns or now - started >= 3.0):
                reported = True
                print("ready", flush=True)
        self.stats["held_established"] = self.established()
        return self.stats

    def established(self):
        return sum(1 for c in self.socks.values() if c[0] and c[1])


def attacker_main(argv):
    kind, port, rate, extra = argv[0], int(argv[1]), float(argv[2]), argv[3:]
    if kind == "bulk":
        print("ready", flush=True)
        out = attack_bulk(port, rate)
    elif kind == "port0":
        print("ready", flush=True)
        out = attack_port0(port, rate, extra[0])
    elif kind == "random":
        print("ready", flush=True)
        out = attack_random(port, rate)
    else:
        conns, interval, new, name = int(extra[0]), float(extra[1]), float(extra[2]), extra[3]
        out = TcpFlood(port, conns, interval, new, name).run()
    print(json.dumps(out), flush=True)


# ---- orchestration ----------------------------------------------------------------------

class Attacker:
    def __init__(self, kind, port, args, name):
        extra, rate = [], 0
        if kind == "bulk":
            rate = args.bulk_qps
        elif kind == "port0":
            rate, extra = args.port0_pps, [name]
        elif kind == "random":
            rate = args.random_qps
        else:
            extra = [args.tcp_conns, args.tcp_interval, args.tcp_new, name]
        argv = [sys.executable, os.path.abspath(__file__), "--attacker", kind, str(port), str(rate)]
        self.p = subprocess.Popen(argv + [str(x) for x in extra], stdout=subprocess.PIPE, text=True)
        ready = []
        t = threading.Thread(target=lambda: ready.append(self.p.stdout.readline()), daemon=True)
        t.start()
        t.join(30)
        if not ready or ready[0].strip() != "ready":
            self.p.kill()
            raise SystemExit(f"bench: the {kind} attacker did not get ready in 30 s")
        time.sleep(1.0)  # let the attack reach its rate before measuring

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        out, _ = self.p.communicate(timeout=30)
        lines = out.strip().splitlines()
        return json.loads(lines[-1]) if lines else {}


class NewTcpClients:
    """Twice a second, a new TCP connection from 127.0.0.2 (another client than the flood)
    sends one query and waits up to 2 s for its answer; counts how many were answered."""

    def __init__(self, port, name):
        self.port, self.msg = port, struct.pack(">H", len(query(name, qid=7))) + query(name, qid=7)
        self.tried = self.answered = 0
        self.done = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def one(self):
        # From another address than the flood (127.0.0.1): the "other clients".
        with socket.create_connection(("127.0.0.1", self.port), timeout=2,
                                      source_address=("127.0.0.2", 0)) as s:
            s.settimeout(2)
            s.sendall(self.msg)
            head = s.recv(2)
            return len(head) == 2

    def run(self):
        while not self.done.is_set():
            start = time.monotonic()
            self.tried += 1
            try:
                self.answered += bool(self.one())
            except OSError:
                pass
            self.done.wait(max(0.0, 0.5 - (time.monotonic() - start)))

    def stop(self):
        self.done.set()
        self.t.join(5)
        return self.answered, self.tried


class UdpSrvProbe:
    """20 times a second, an SRV query for an ordinary name (a general-path query for
    fedplane-dns) from its own socket, answered within 1 s or not; counts both."""

    def __init__(self, port, name):
        self.port, self.name = port, name
        self.tried = self.answered = 0
        self.done = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("127.0.0.1", self.port))
            while not self.done.is_set():
                start = time.monotonic()
                qid = random.randrange(1 << 16)
                self.tried += 1
                try:
                    s.send(query(self.name, 33, qid=qid))
                    while (left := start + 1.0 - time.monotonic()) > 0:
                        s.settimeout(left)
                        if s.recv(65535)[:2] == struct.pack(">H", qid):
                            self.answered += 1
                            break
                except OSError:
                    pass
                self.done.wait(max(0.0, 0.05 - (time.monotonic() - start)))

    def stop(self):
        self.done.set()
        self.t.join(5)
        return self.answered, self.tried


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--attacker":
        return attacker_main(sys.argv[2:])
    ap = fb.arg_parser(__doc__, services=2000)
    ap.set_defaults(seconds=5)
    ap.add_argument("--attacks", default="bulk,port0,random,tcp", help="which attacks, comma-separated")
    ap.add_argument("--rounds", type=int, default=2,
                    help="runs of every phase per server, interleaved; the median is reported")
    ap.add_argument("--bulk-qps", type=float, default=2000, help="big-subtree queries a second")
    ap.add_argument("--port0-pps", type=float, default=2000, help="port-0 packets a second")
    ap.add_argument("--random-qps", type=float, default=20000, help="random-name queries a second")
    ap.add_argument("--tcp-conns", type=int, default=1024, help="TCP connections of the flood")
    ap.add_argument("--tcp-interval", type=float, default=4.0, help="seconds between a connection's queries")
    ap.add_argument("--tcp-new", type=float, default=50, help="new flood connections a second, one query each")
    ap.add_argument("--fedplane-dns", metavar="PATH", help="fedplane-dns binary to measure (default: this tree's release build)")
    args = ap.parse_args()
    attacks = [a for a in args.attacks.split(",") if a]
    for a in attacks:
        if a not in ATTACKS:
            raise SystemExit(f"bench: unknown attack {a!r} (known: {', '.join(ATTACKS)})")
    if "port0" in attacks and os.geteuid() != 0:
        raise SystemExit("bench: the port0 attack crafts packets with a raw socket: run as root, "
                         "or leave it out with --attacks bulk,random,tcp")

    binary = args.fedplane_dns
    if not binary:
        fb.build_release(args.no_build)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(fb.ROOT, "target"))
        binary = os.path.join(target, "release/fedplane-dns")
    work = tempfile.mkdtemp(prefix="fedbench-attack-")
    records = fb.federated_records(args.services)
    zonefile, queries = f"{work}/zone", f"{work}/queries"
    fb.zone_file(records, zonefile)
    bulk_zone(zonefile)
    fb.query_file(records, queries)
    probe = records[0][0]
    print(f"data set: {args.services} services ({len(records)} records) + {BULK_KEYS} keys under {BULK} "
          f"(NSD/Knot: a {BULK_RRSET}-record A RRset); workers={args.workers}; "
          f"fd soft limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}; machine: {fb.machine()}", flush=True)

    etcd = fb.Etcd(work)
    fb.load_records(etcd, records)
    load_bulk(etcd)
    servers = [
        # NSD's response rate limiting (on by default, 200 identical answers a second per /24)
        # would drop the attacks' repeated queries unanswered: off, as Knot's is by default, so
        # every server answers every query.
        ("NSD", fb.start_nsd(work, zonefile, args.workers, server_options="  rrl-ratelimit: 0\n")),
        ("Knot", fb.start_knot(work, zonefile, args.workers)),
        ("fedplane-dns", fb.start_fedplane(work, etcd, args.workers, binary=binary)),
    ]
    qps = {name: {p: [] for p in ["idle"] + attacks} for name, _ in servers}
    new_tcp = {name: [0, 0] for name, _ in servers}
    srv_probe = {name: [0, 0] for name, _ in servers}
    recovery = {name: 0.0 for name, _ in servers}
    try:
        for name, proc in servers:
            fb.wait_for(f"{name} to answer", lambda: fb.dig_ok(proc.port, probe))
        fb.wait_for("fedplane-dns ready", lambda: fb.fedplane_ready(servers[2][1]))
        for _ in range(args.rounds):
            for phase in ["idle"] + attacks:
                for name, proc in servers:
                    measure(name, proc, phase, args, queries, probe, qps, new_tcp, srv_probe, recovery)
    finally:
        for _, proc in servers:
            proc.stop()
        etcd.stop()

    print()
    head = "| server | idle qps |" + "".join(f" {ATTACKS[a]}: qps (of idle) |" for a in attacks)
    if "random" in attacks:
        head += " SRV queries answered under the random-name flood |"
    if "tcp" in attacks:
        head += " new TCP clients answered under the flood |"
    head += " answering again after an attack, s (max) |"
    print(head)
    print("|---|---|" + "---|" * (len(attacks) + ("random" in attacks) + ("tcp" in attacks) + 1))
    for name, _ in servers:
        idle = statistics.median(qps[name]["idle"])
        row = f"| {name} | {idle:,.0f} |"
        for a in attacks:
            q = statistics.median(qps[name][a])
            row += f" {q:,.0f} ({q / idle:.0%}) |"
        if "random" in attacks:
            answered, tried = srv_probe[name]
            row += f" {answered}/{tried} |"
        if "tcp" in attacks:
            answered, tried = new_tcp[name]
            row += f" {answered}/{tried} |"
        row += f" {recovery[name]:.1f} |"
        print(row)


def measure(name, proc, phase, args, queries, probe, qps, new_tcp, srv_probe, recovery):
    """One dnsperf run against `proc` while the attack `phase` runs."""
    attacker = Attacker(phase, proc.port, args, probe) if phase != "idle" else None
    clients = NewTcpClients(proc.port, probe) if phase == "tcp" else None
    srv = UdpSrvProbe(proc.port, probe) if phase == "random" else None
    try:
        perf = fb.dnsperf(proc.port, queries, args.seconds)
    finally:
        answered = clients.stop() if clients else None
        srv_answered = srv.stop() if srv else None
        stats = attacker.stop() if attacker else {}
    # The next run starts only once a query is answered within 1 s again: queries an attack left
    # queued (fedplane-dns asks for a 4 MiB UDP receive buffer) would count against it.
    t = time.monotonic()
    fb.wait_for(f"{name} to answer again after the {phase} attack", lambda: answers(proc.port, probe),
                timeout=RECOVERY)
    recovery[name] = max(recovery[name], time.monotonic() - t)
    qps[name][phase].append(perf["qps"])
    extra = ""
    if answered:
        new_tcp[name][0] += answered[0]
        new_tcp[name][1] += answered[1]
        extra = f" new TCP clients answered {answered[0]}/{answered[1]}"
    if srv_answered:
        srv_probe[name][0] += srv_answered[0]
        srv_probe[name][1] += srv_answered[1]
        extra = f" SRV queries answered {srv_answered[0]}/{srv_answered[1]}"
    print(f"  {phase:6} {name:13} qps={perf['qps']:,.0f} lost={perf['lost']}{extra} "
          f"answering again after {time.monotonic() - t:.1f} s "
          f"attacker={json.dumps(stats)}", flush=True)
    if proc.p.poll() is not None:
        raise SystemExit(f"bench: {name} exited during {phase} (log: {proc.log})")

if __name__ == "__main__":
    main()
