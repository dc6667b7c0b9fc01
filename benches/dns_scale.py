#!/usr/bin/env python3
"""Scale bench: a federation of 100,000 services (900,000 etcd keys). Time from start to
/readyz, resident memory, and qps at that size, next to the qps of the small data set
(2,000 services) served the same way in the same run.

    benches/dns-scale [--services 100000] [--small 2000] [--seconds 10]
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedbench as fb  # noqa: E402


def main():
    ap = fb.arg_parser(__doc__, services=100_000)
    ap.add_argument("--small", type=int, default=2000, help="services in the small data set")
    args = ap.parse_args()
    fb.build_release(args.no_build)

    work = tempfile.mkdtemp(prefix="fedbench-")
    big, small = fb.federated_records(args.services), fb.federated_records(args.small)
    fb.query_file(big, f"{work}/big.queries")
    fb.query_file(small, f"{work}/small.queries")
    etcd = fb.Etcd(work)
    t0 = time.monotonic()
    fb.load_records(etcd, big, "/big")
    fb.load_records(etcd, small, "/small")
    print(f"loaded {len(big) + len(small)} keys into etcd in {time.monotonic() - t0:.0f} s; "
          f"machine: {fb.machine()}", flush=True)
    rows = {}
    try:
        for tag, prefix, queries in [("small", "/small", f"{work}/small.queries"), ("big", "/big", f"{work}/big.queries")]:
            dns = fb.start_fedplane(work, etcd, args.workers, tag=tag, prefix=prefix)
            try:
                t0 = time.monotonic()
                fb.wait_for(f"{tag} data set ready", lambda: fb.fedplane_ready(dns), timeout=300)
                ready = time.monotonic() - t0
                # Ready means every name answers (general path); the fast path's answers are
                # compiled right after. Measure memory and qps once they are.
                fb.wait_for(f"{tag} answers compiled",
                            lambda: fb.fedplane_metric(dns, "fedplane_dns_compiled_names") > 0, timeout=300)
                compiled = time.monotonic() - t0
                rss = dns.rss_kib() / 1024
                qps = fb.dnsperf(dns.port, queries, args.seconds)["qps"]
                # The peak covers the load, the compile and the queries: what a memory limit
                # has to leave room for.
                peak = dns.rss_kib("VmHWM") / 1024
                rows[tag] = (ready, compiled, rss, qps, peak)
            finally:
                dns.stop()
    finally:
        etcd.stop()

    s, b = rows["small"], rows["big"]
    print()
    print(f"| data set | etcd keys | start → ready | start → fast path compiled | RSS | peak RSS | qps (workers={args.workers}) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.small:,} services | {len(small):,} | {s[0]:.1f} s | {s[1]:.1f} s | {s[2]:.0f} MiB | {s[4]:.0f} MiB | {s[3]:,.0f} |")
    print(f"| {args.services:,} services | {len(big):,} | {b[0]:.1f} s | {b[1]:.1f} s | {b[2]:.0f} MiB | {b[4]:.0f} MiB | {b[3]:,.0f} ({b[3] / s[3]:.0%} of small) |")


if __name__ == "__main__":
    main()
