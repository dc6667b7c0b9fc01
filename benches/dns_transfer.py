#!/usr/bin/env python3
"""Zone transfer bench: one AXFR of a federation of 100,000 services (900,000 etcd keys) from
fedplane-dns, its time and the server's memory during it, with dnsperf asking queries all the
while; then the same zone (written from that transfer) served by NSD and transferred by the
same client, in the same run.

    benches/dns-transfer [--services 100000] [--seconds 10] [--workers 1]

The client is kdig for both (+noanswer: every message read and checked, none printed). The zone as fedplane-dns
answers it holds every key's name and every name above one (a SkyDNS name carries what is
below it), so it has far more records than etcd has keys; both servers send the same records.
"""

import os
import re
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedbench as fb  # noqa: E402


def axfr(port, zone=fb.ZONE, sample=None):
    """One AXFR by kdig (+noanswer: it reads and checks every message, prints none): (seconds,
    messages, records, bytes); `sample()` is called every 50 ms while it runs."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        p = subprocess.Popen(["kdig", "@127.0.0.1", "-p", str(port), f"{zone}.", "AXFR", "+noall",
                              "+noanswer", "+stats"], stdout=log, stderr=subprocess.STDOUT, text=True)
        while p.poll() is None:
            if sample:
                sample()
            time.sleep(0.05)
        seconds = time.monotonic() - t0
        log.seek(0)
        out = log.read()
    m = re.search(r"Received (\d+) B \((\d+) messages, (\d+) records\)", out)
    if p.returncode or not m:
        raise SystemExit(f"bench: the transfer from port {port} failed: {out}")
    return seconds, int(m.group(2)), int(m.group(3)), int(m.group(1))


def main():
    ap = fb.arg_parser(__doc__, services=100_000)
    args = ap.parse_args()
    fb.build_release(args.no_build)

    work = tempfile.mkdtemp(prefix="fedbench-")
    records = fb.federated_records(args.services)
    fb.query_file(records, f"{work}/queries")
    etcd = fb.Etcd(work)
    t0 = time.monotonic()
    fb.load_records(etcd, records)
    print(f"loaded {len(records)} keys into etcd in {time.monotonic() - t0:.0f} s; "
          f"machine: {fb.machine()}", flush=True)
    rows = {}
    try:
        dns = fb.start_fedplane(work, etcd, args.workers,
                                extra=("--allow-transfer", "127.0.0.1/32"))
        try:
            fb.wait_for("ready", lambda: fb.fedplane_ready(dns), timeout=300)
            fb.wait_for("answers compiled",
                        lambda: fb.fedplane_metric(dns, "fedplane_dns_compiled_names") > 0, timeout=300)
            quiet = fb.dnsperf(dns.port, f"{work}/queries", args.seconds)
            alone = axfr(dns.port)
            before = dns.rss_kib() / 1024
            peak_rss = [before]

            def sample():
                peak_rss.append(dns.rss_kib() / 1024)

            # dnsperf for as long as the transfer takes (started first, stopped after).
            during = {}

            def load():
                during.update(fb.dnsperf(dns.port, f"{work}/queries", args.seconds * 6))

            t = threading.Thread(target=load)
            t.start()
            time.sleep(1)
            took, messages, count, size = axfr(dns.port, sample=sample)
            t.join()
            after = dns.rss_kib() / 1024
            rows["fedplane"] = (alone[0], messages, count, size, before, max(peak_rss), after, took)
            rows["queries"] = (quiet, during)
            # The zone as a file, from the transfer, for NSD.
            out = subprocess.run(["kdig", "@127.0.0.1", "-p", str(dns.port), f"{fb.ZONE}.", "AXFR",
                                  "+nocomments", "+nostats"], capture_output=True, text=True).stdout
        finally:
            dns.stop()
        lines = [l for l in out.splitlines() if l and not l.startswith(";")]
        zonefile = f"{work}/axfr.zone"
        with open(zonefile, "w") as f:
            f.write("\n".join(lines[:-1]) + "\n")  # the closing SOA once
        del out, lines
        t0 = time.monotonic()
        nsd = fb.start_nsd(work, zonefile, 1, zone_options="  provide-xfr: 127.0.0.1 NOKEY\n")
        try:
            fb.wait_for("NSD serving", lambda: fb.dig_ok(nsd.port, f"svc0.ns0.federation.svc.{fb.ZONE}"), timeout=600)
            loaded = time.monotonic() - t0
            nsd_before = nsd.rss_kib() / 1024
            took, messages, count, size = axfr(nsd.port)
            rows["nsd"] = (took, messages, count, size, nsd_before, nsd.rss_kib("VmHWM") / 1024, loaded)
        finally:
            nsd.stop()
    finally:
        etcd.stop()

    f, n = rows["fedplane"], rows["nsd"]
    quiet, during = rows["queries"]
    print()
    print(f"| server | records sent | messages | bytes | AXFR time | records/s | RSS before → peak during → after |")
    print("|---|---|---|---|---|---|---|")
    print(f"| fedplane-dns | {f[2]:,} | {f[1]:,} | {f[3] / 2**20:,.0f} MiB | {f[0]:.1f} s | {f[2] / f[0]:,.0f} | "
          f"{f[4]:.0f} → {f[5]:.0f} → {f[6]:.0f} MiB (under dnsperf) |")
    print(f"| fedplane-dns under dnsperf | {f[2]:,} | {f[1]:,} | {f[3] / 2**20:,.0f} MiB | {f[7]:.1f} s | "
          f"{f[2] / f[7]:,.0f} | |")
    print(f"| NSD 4.6 (zone file from that transfer; loaded in {n[6]:.0f} s) | {n[2]:,} | {n[1]:,} | "
          f"{n[3] / 2**20:,.0f} MiB | {n[0]:.1f} s | {n[2] / n[0]:,.0f} | {n[4]:.0f} MiB (peak {n[5]:.0f}) |")
    print(f"\nfedplane-dns AXFR time / NSD's (both without queries): {f[0] / n[0]:.2f}")
    print(f"queries (dnsperf, workers={args.workers}): {quiet['qps']:,.0f} qps quiet; "
          f"{during['qps']:,.0f} qps while the transfer ran ({during['lost']} lost, {during['rcodes']})")


if __name__ == "__main__":
    main()
