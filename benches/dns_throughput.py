#!/usr/bin/env python3
"""Throughput bench: the same federated data set served by fedplane-dns (from etcd), NSD and
Knot (from an equivalent zone file), in one run, each with one worker and then with one worker
per CPU. dnsperf saturates each server for qps, in several rounds interleaved across the servers
(the median is reported, so drift hits every server alike); a dnsperf run at one fixed rate, the
same for every server, gives p50/p99 latency.

    benches/dns-throughput [--services 2000] [--seconds 10] [--rounds 3] [--latency-qps 20000]
                           [--baseline REV] [--transport udp|tcp]

With one worker, fedplane-dns also answers a mixed load (a copy of the data set under another
prefix, served with a topology map): a third plain zone-level names, a third fallback names (a
zone and a region without a healthy cluster: CNAME, CNAME, then the global addresses) and a third
global names whose records carry their cluster's zone and region, each query with an EDNS Client
Subnet option of one cluster's subnet (another subnet each round); reported as a ratio to its
plain-name qps of the same run (NSD and Knot cannot answer by client subnet).

With --baseline REV, fedplane-dns built at git revision REV runs in the same rounds, so a change
is judged by its ratio to the code before it. With --transport tcp, dnsperf asks over TCP
(8 connections, 200 queries outstanding on each, pipelined).
"""

import json
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedbench as fb  # noqa: E402


def main():
    ap = fb.arg_parser(__doc__, services=2000, workers=False)
    ap.add_argument("--latency-qps", type=int, default=20000, help="fixed rate of the latency run")
    ap.add_argument("--rounds", type=int, default=3,
                    help="saturation runs per server, interleaved; the median is reported")
    ap.add_argument("--baseline", metavar="REV",
                    help="also measure fedplane-dns built at this git revision (e.g. main, HEAD~3)")
    ap.add_argument("--transport", choices=["udp", "tcp"], default="udp", help="how dnsperf asks")
    args = ap.parse_args()

    fb.build_release(args.no_build)
    baseline = fb.build_baseline(args.baseline) if args.baseline else None
    before = f"fedplane-dns@{args.baseline}"
    work = tempfile.mkdtemp(prefix="fedbench-")
    records = fb.federated_records(args.services)
    zonefile, queries = f"{work}/zone", f"{work}/queries"
    fb.zone_file(records, zonefile)
    fb.query_file(records, queries)
    probe = records[0][0]
    print(f"data set: {args.services} services x 3 clusters -> {len(records)} records, "
          f"{len({r[0] for r in records})} names; over {args.transport}; machine: {fb.machine()}", flush=True)

    etcd = fb.Etcd(work)
    rows = []
    mixed = None
    try:
        fb.load_records(etcd, records)
        mixed_queries, topology = mixed_data_set(etcd, records, work)
        for workers in sorted({1, os.cpu_count() or 1}):
            procs = []
            servers = [
                ("NSD", lambda w: fb.start_nsd(work, zonefile, w)),
                ("Knot", lambda w: fb.start_knot(work, zonefile, w)),
                ("fedplane-dns", lambda w: fb.start_fedplane(work, etcd, w)),
            ]
            if baseline:
                servers.append((before, lambda w: fb.start_fedplane(
                    work, etcd, w, tag="fedplane-baseline", binary=baseline)))
            for name, start in servers:
                procs.append((name, workers, start(workers)))
            try:
                if workers == 1:
                    procs.append(("fedplane-dns mixed", workers, fb.start_fedplane(
                        work, etcd, workers, tag="fedplane-mixed", prefix=MIXED_PREFIX,
                        extra=["--topology", topology])))
                for name, workers, proc in procs:
                    fb.wait_for(f"{name} to answer", lambda: fb.dig_ok(proc.port, probe))
                samples = {name: [] for name, _, _ in procs}
                for r in range(args.rounds):
                    for name, workers, proc in procs:
                        if name == "fedplane-dns mixed":
                            # Another cluster's subnet each round.
                            ecs = ECS_SUBNETS[r % len(ECS_SUBNETS)]
                            run = fb.dnsperf(proc.port, mixed_queries, args.seconds,
                                             transport=args.transport, edns_option=ecs)
                            qps = run["qps"]
                            print(f"  mixed load, ECS {ecs}: {run['rcodes']}", flush=True)
                        else:
                            qps = fb.dnsperf(proc.port, queries, args.seconds,
                                             transport=args.transport)["qps"]
                        samples[name].append(qps)
                for name, workers, proc in procs:
                    qps = sorted(samples[name])[len(samples[name]) // 2]
                    if name == "fedplane-dns mixed":
                        mixed = qps
                        print(f"  {name:13} workers={workers} qps={[round(q) for q in samples[name]]}", flush=True)
                        continue
                    lat = fb.dnsperf(proc.port, queries, 5, max_qps=args.latency_qps, verbose=True,
                                     transport=args.transport)
                    rows.append((name, workers, {"qps": qps}, lat, proc.rss_kib()))
                    print(f"  {name:13} workers={workers} qps={[round(q) for q in samples[name]]}", flush=True)
            finally:
                for _, _, proc in procs:
                    proc.stop()
    finally:
        etcd.stop()

    print()
    print(f"| server | workers | qps | vs NSD | vs Knot | p50 µs @{args.latency_qps} qps | p99 µs | RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, workers, sat, lat, rss in rows:
        nsd = next(r[2]["qps"] for r in rows if r[0] == "NSD" and r[1] == workers)
        knot = next(r[2]["qps"] for r in rows if r[0] == "Knot" and r[1] == workers)
        print(f"| {name} | {workers} | {sat['qps']:,.0f} | {sat['qps'] / nsd:.2f} | {sat['qps'] / knot:.2f} "
              f"| {lat.get('p50_us', 0):.0f} | {lat.get('p99_us', 0):.0f} | {rss / 1024:.0f} |")
    if mixed:
        plain = next(r[2]["qps"] for r in rows if r[0] == "fedplane-dns" and r[1] == 1)
        print()
        print("| fedplane-dns, 1 worker | qps | vs plain names |")
        print("|---|---|---|")
        print(f"| plain names | {plain:,.0f} | 1.00 |")
        print(f"| mixed: plain, CNAME fallback, by client subnet | {mixed:,.0f} | {mixed / plain:.2f} |")
    if baseline:
        print()
        print(f"| workers | fedplane-dns qps | {before} qps | ratio |")
        print("|---|---|---|---|")
        for name, workers, sat, _, _ in rows:
            if name == "fedplane-dns":
                old = next(r[2]["qps"] for r in rows if r[0] == before and r[1] == workers)
                print(f"| {workers} | {sat['qps']:,.0f} | {old:,.0f} | {sat['qps'] / old:.2f} |")


MIXED_PREFIX = "/mixed"
# The clusters' client subnets (their octet, as the data set's addresses), as ECS options:
# family 1, source 24, scope 0, three address octets.
ECS_SUBNETS = [f"8:000118000a{octet:02x}00" for _, _, _, octet in fb.CLUSTERS]


def mixed_data_set(etcd, records, work):
    """Loads the mixed data set under MIXED_PREFIX and writes its queries and topology map;
    returns (queries file, topology file)."""
    kvs = []
    plain, fallback, located = [], [], []
    for name, cluster, ip in records:
        c = next(c for c in fb.CLUSTERS if c[0] == cluster)
        labels = name.split(".")
        value = {"host": ip, "ttl": 30}
        if len(labels) == 6:  # global: <svc>.<ns>.federation.svc.example.com
            value.update(zone=c[2], region=c[1])
            located.append(name)
            base = ".".join(labels[:4])
            # A region and a zone where no cluster is healthy: zone -> region -> global.
            region, zone = f"{base}.africa.{fb.ZONE}", f"{base}.za.africa.{fb.ZONE}"
            kvs.append((fb.etcd_key(region, "_cname", MIXED_PREFIX), json.dumps({"host": name, "ttl": 30})))
            kvs.append((fb.etcd_key(zone, "_cname", MIXED_PREFIX), json.dumps({"host": region, "ttl": 30})))
            fallback.append(zone)
        elif len(labels) == 8:  # zone level
            plain.append(name)
        kvs.append((fb.etcd_key(name, cluster, MIXED_PREFIX), json.dumps(value)))
    etcd.put_many(sorted(set(kvs)))
    rng = random.Random(11)
    names = sorted(set(plain)), sorted(set(fallback)), sorted(set(located))
    queries = f"{work}/mixed-queries"
    with open(queries, "w") as f:
        for i in range(200_000):
            f.write(f"{rng.choice(names[i % 3])} A\n")
    topology = f"{work}/topology.yaml"
    with open(topology, "w") as f:
        for _, region, zone, octet in fb.CLUSTERS:
            f.write(f"- {{cidr: 10.{octet}.0.0/16, zone: {zone}, region: {region}}}\n")
    return queries, topology


if __name__ == "__main__":
    main()
