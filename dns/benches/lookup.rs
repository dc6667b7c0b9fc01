//! Micro-benchmark of the query path on the 2,000-service federated data set (18,000
//! records): the compiled fast path, the general path for the same query, and the general path
//! for a name that does not exist.
//!
//!     cargo bench -p fedplane-dns --bench lookup

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use fedplane_dns::answer::{AnswerOptions, Transport, respond};
use fedplane_dns::fast::{MAX_FAST_RESPONSE, Table, respond_fast};
use fedplane_dns::index::{Records, Zones};
use fedplane_dns::record::Record;
use hickory_proto::rr::Name;

const CLUSTERS: [(&str, &str, &str, u8); 3] = [
    ("fcp", "europe", "fr", 1),
    ("usa", "america", "us", 3),
    ("chn", "asia", "cn", 2),
];

fn snapshot() -> (Records, Table) {
    let zones = Arc::new(Zones::new(
        "/skydns",
        &[Name::from_ascii("example.com.").expect("zone")],
    ));
    let mut s = Records::new(zones, 1);
    for i in 0..2000u32 {
        for (cluster, region, zone, octet) in CLUSTERS {
            let value = format!(
                r#"{{"host":"10.{octet}.{}.{}","ttl":30}}"#,
                i / 250,
                i % 250 + 1
            );
            let record = Record::parse(value.as_bytes()).expect("valid");
            let ns = i % 20;
            for level in [
                String::new(),
                format!("/{region}"),
                format!("/{region}/{zone}"),
            ] {
                let key =
                    format!("/skydns/com/example{level}/svc/federation/ns{ns}/svc{i}/{cluster}");
                s.put(&key, record.clone(), 0, 2);
            }
        }
    }
    s.mark_loaded();
    let table = Table::compile(&s);
    (s, table)
}

fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    // EDNS OPT, 1232 bytes, as resolvers send it
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    q
}

fn lookup(c: &mut Criterion) {
    let (records, table) = snapshot();
    let opts = AnswerOptions::default();
    let hit = query("svc1234.ns14.federation.svc.example.com");
    let miss = query("nope.ns14.federation.svc.example.com");
    let mut out = [0u8; MAX_FAST_RESPONSE];
    let mut rotation = 0usize;
    c.bench_function("fast path: global name, 3 A records", |b| {
        b.iter(|| {
            rotation += 1;
            black_box(respond_fast(
                &records,
                &table,
                black_box(&hit),
                opts,
                rotation,
                &mut out,
            ))
        });
    });
    c.bench_function("general path: same query", |b| {
        b.iter(|| {
            black_box(respond(
                &records,
                black_box(&hit),
                Transport::Udp,
                opts,
                Instant::now(),
                0,
            ))
        });
    });
    c.bench_function("general path: NXDOMAIN", |b| {
        b.iter(|| {
            black_box(respond(
                &records,
                black_box(&miss),
                Transport::Udp,
                opts,
                Instant::now(),
                0,
            ))
        });
    });
}

criterion_group!(benches, lookup);
criterion_main!(benches);
