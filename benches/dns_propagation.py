#!/usr/bin/env python3
"""Propagation bench: how long from an etcd put (committed) until fedplane-dns answers the new
record, over many changes; and fedplane-dns qps while etcd takes a steady stream of updates to
the names being queried, next to its idle qps measured in the same run.

    benches/dns-propagation [--services 2000] [--changes 1000] [--updates-per-second 1000]
"""

import json
import os
import resource
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedbench as fb  # noqa: E402


def main():
    ap = fb.arg_parser(__doc__, services=2000)
    ap.add_argument("--changes", type=int, default=1000, help="changes timed for propagation")
    ap.add_argument("--updates-per-second", type=int, default=1000, help="etcd update rate under load")
    args = ap.parse_args()
    fb.build_release(args.no_build)

    work = tempfile.mkdtemp(prefix="fedbench-")
    records = fb.federated_records(args.services)
    queries = f"{work}/queries"
    fb.query_file(records, queries)
    etcd = fb.Etcd(work)
    fb.load_records(etcd, records)
    dns = fb.start_fedplane(work, etcd, args.workers)
    try:
        fb.wait_for("fedplane-dns ready", lambda: fb.fedplane_ready(dns))
        print(f"data set: {len(records)} records; machine: {fb.machine()}", flush=True)

        # 1. Propagation: change one record, poll until the new address is answered.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(1.0)
        delays = []
        for i in range(args.changes):
            name, cluster, _ = records[(i * 9) % len(records)]
            ip = f"10.200.{(i // 250) % 256}.{i % 250 + 1}"
            want = socket.inet_aton(ip)
            etcd.put(fb.etcd_key(name, cluster), json.dumps({"host": ip, "ttl": 30}))
            t0 = time.perf_counter()
            q = fb.raw_query(name, i % 65536)
            while True:
                sock.sendto(q, ("127.0.0.1", dns.port))
                if want in sock.recv(4096):
                    break
                if time.perf_counter() - t0 > 5:
                    raise SystemExit(f"change {i} not answered after 5 s")
            delays.append(time.perf_counter() - t0)
        p50, p99 = fb.percentile(delays, 0.5) * 1e3, fb.percentile(delays, 0.99) * 1e3

        # 2. qps idle, then qps while etcd takes updates to the queried names. NSD, which never
        # reads etcd, is measured the same way: its drop is the cost of sharing the CPUs with
        # etcd and the updater, not of following the updates.
        def updater(stop, done):
            batch = 10
            interval = batch / args.updates_per_second
            n, next_t = 0, time.perf_counter()
            while not stop.is_set():
                kvs = []
                for _ in range(batch):
                    name, cluster, _ = records[(n * 7) % len(records)]
                    kvs.append((fb.etcd_key(name, cluster), json.dumps({"host": f"10.201.{(n // 250) % 256}.{n % 250 + 1}", "ttl": 30})))
                    n += 1
                etcd.put_many(kvs, batch)
                done[0] += batch
                next_t += interval
                time.sleep(max(0.0, next_t - time.perf_counter()))

        def cores(procs, run):
            """run()'s result, and the CPU cores each of `procs` used meanwhile."""
            def now():
                kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # dnsperf, once waited for
                return [p.cpu_seconds() for p in procs] + [time.process_time(), kids.ru_utime + kids.ru_stime]

            before = now()
            t0 = time.perf_counter()
            result = run()
            wall = time.perf_counter() - t0
            return result, [(a - b) / wall for a, b in zip(now(), before)]

        def under_updates(port):
            stop, done = threading.Event(), [0]
            t = threading.Thread(target=updater, args=(stop, done))
            t.start()
            t0 = time.perf_counter()
            qps = fb.dnsperf(port, queries, args.seconds)["qps"]
            rate = done[0] / (time.perf_counter() - t0)
            stop.set()
            t.join()
            return qps, rate

        idle, idle_cpu = cores([dns, etcd.proc], lambda: fb.dnsperf(dns.port, queries, args.seconds)["qps"])
        (busy, rate), busy_cpu = cores([dns, etcd.proc], lambda: under_updates(dns.port))
        dns.stop()
        zonefile = f"{work}/zone"
        fb.zone_file(records, zonefile)
        nsd = fb.start_nsd(work, zonefile, args.workers)
        try:
            fb.wait_for("NSD", lambda: fb.dig_ok(nsd.port, records[0][0]))
            nsd_idle, nsd_idle_cpu = cores([nsd, etcd.proc], lambda: fb.dnsperf(nsd.port, queries, args.seconds)["qps"])
            (nsd_busy, _), nsd_busy_cpu = cores([nsd, etcd.proc], lambda: under_updates(nsd.port))
        finally:
            nsd.stop()
    finally:
        dns.stop()
        etcd.stop()

    print()
    print("| measure | fedplane-dns | NSD (control: does not read etcd) |")
    print("|---|---|---|")
    print(f"| propagation p50 / p99 over {len(delays)} changes (etcd put committed → answered) | {p50:.2f} ms / {p99:.2f} ms | – |")
    print(f"| qps idle (workers={args.workers}) | {idle:,.0f} | {nsd_idle:,.0f} |")
    print(f"| qps while etcd takes {rate:,.0f} updates/s to the queried names | {busy:,.0f} ({busy / idle:.0%} of idle) | {nsd_busy:,.0f} ({nsd_busy / nsd_idle:.0%} of idle) |")
    rows = ["the server", "etcd", "the updater (this script)", "dnsperf"]
    for i, who in enumerate(rows):
        print(f"| CPU cores used by {who}, idle / under updates | {idle_cpu[i]:.2f} / {busy_cpu[i]:.2f} | {nsd_idle_cpu[i]:.2f} / {nsd_busy_cpu[i]:.2f} |")
    print(f"| all of the above, of {os.cpu_count()} cores | {sum(idle_cpu):.2f} / {sum(busy_cpu):.2f} | {sum(nsd_idle_cpu):.2f} / {sum(nsd_busy_cpu):.2f} |")


if __name__ == "__main__":
    main()
