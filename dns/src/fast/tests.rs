use std::sync::Arc;
use std::time::Instant;

use fedplane_testkit::dns_view as seen;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;

use super::*;
use crate::answer::{Outcome, Transport, respond};
use crate::index::{Records, Zones};
use crate::record::Record;

fn zones() -> Arc<Zones> {
    Arc::new(Zones::new(
        "/skydns",
        &[Name::from_ascii("example.com.").expect("name")],
    ))
}

/// Random record values of every shape the compiler must handle or refuse.
fn value() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        (any::<u32>()).prop_map(|ip| (
            format!(
                r#"{{"host":"{}","ttl":{}}}"#,
                std::net::Ipv4Addr::from(ip),
                ip % 600
            ),
            false
        )),
        (any::<u128>()).prop_map(|ip| (
            format!(r#"{{"host":"{}"}}"#, std::net::Ipv6Addr::from(ip)),
            false
        )),
        Just((r#"{"host":"10.0.0.1"}"#.to_owned(), false)),
        Just((r#"{"host":"a.example.com"}"#.to_owned(), false)),
        // CNAMEs to names of the same key space (chains, loops, targets that do not exist),
        // to the apex, and out of the zone
        key().prop_map(|k| {
            let labels: Vec<&str> = k
                .trim_start_matches("/skydns/com/example/")
                .split('/')
                .rev()
                .collect();
            (
                format!(
                    r#"{{"host":"{}.example.com","ttl":{}}}"#,
                    labels.join("."),
                    k.len()
                ),
                false,
            )
        }),
        Just((r#"{"host":"example.com"}"#.to_owned(), false)),
        Just((r#"{"host":"a.example.org"}"#.to_owned(), false)),
        Just((
            r#"{"host":"mail.example.com","mail":true}"#.to_owned(),
            false
        )),
        Just((r#"{"text":"t"}"#.to_owned(), false)),
        Just((r#"{"host":"10.9.9.9"}"#.to_owned(), true)), // on a lease
        Just((r#"{"host":"10.9.9.8","ttl":4294967295}"#.to_owned(), false)),
        // SkyDNS groups: the shortest keys with a group pick it
        (any::<u8>(), prop::sample::select(vec!["g1", "g2"]))
            .prop_map(|(i, g)| (format!(r#"{{"host":"10.0.2.{i}","group":"{g}"}}"#), false)),
        // addresses with a locality, answered by the client's
        (
            any::<u8>(),
            prop::sample::select(vec!["fr", "us", "de"]),
            prop::sample::select(vec!["europe", "america"])
        )
            .prop_map(|(i, z, r)| (
                format!(r#"{{"host":"10.0.5.{i}","zone":"{z}","region":"{r}"}}"#),
                false
            )),
        // weighted addresses (one answered), and an SRV weight (not one)
        (any::<u8>(), 0u16..5)
            .prop_map(|(i, w)| (format!(r#"{{"host":"10.0.6.{i}","weight":{w}}}"#), false)),
        (any::<u8>(), 1u16..5).prop_map(|(i, w)| (
            format!(r#"{{"host":"10.0.7.{i}","port":80,"weight":{w}}}"#),
            false
        )),
    ]
}

/// The map the locality property test places clients with.
fn topology() -> crate::topology::Topology {
    crate::topology::Topology::from_yaml(
        "- {cidr: 10.0.0.0/8, region: europe, zone: fr}\n- {cidr: 10.1.0.0/16, region: america, zone: us}\n- {cidr: 'fd00::/8', region: europe}\n",
    )
    .expect("valid map")
}

/// `q` (with an OPT record and no option) with an EDNS Client Subnet option for `addr`/`source`.
fn with_ecs(mut q: Vec<u8>, addr: [u8; 4], source: u8) -> Vec<u8> {
    let octets = usize::from(source.div_ceil(8));
    let mut masked = addr;
    for (i, b) in masked.iter_mut().enumerate() {
        let keep = u32::from(source)
            .saturating_sub(8 * u32::try_from(i).expect("small"))
            .min(8);
        *b &= if keep == 0 { 0 } else { 0xFFu8 << (8 - keep) };
    }
    let len = q.len();
    let rdlen = u16::try_from(8 + octets).expect("small");
    q[len - 2..].copy_from_slice(&rdlen.to_be_bytes());
    q.extend_from_slice(&[0, 8]);
    q.extend_from_slice(&u16::try_from(4 + octets).expect("small").to_be_bytes());
    q.extend_from_slice(&[0, 1, source, 0]);
    q.extend_from_slice(&masked[..octets]);
    q
}

/// Many leaves under one name (more than MAX_COMPILED_RECORDS, sometimes more than fit a
/// datagram), with no group, one group, two groups taking turns, or two groups taking turns
/// below a record of the name itself that picks one of them.
fn bulk() -> impl Strategy<Value = Vec<(String, (String, bool))>> {
    (key(), 1usize..160, 0u8..4, any::<bool>()).prop_map(|(key, n, groups, leased)| {
        let own = (groups == 3).then(|| {
            (
                key.clone(),
                (r#"{"host":"10.0.3.1","group":"g1"}"#.to_owned(), false),
            )
        });
        (0..n)
            .map(|i| {
                let group = match groups {
                    0 => String::new(),
                    1 => r#","group":"g1""#.to_owned(),
                    _ => format!(r#","group":"g{}""#, i % 2 + 1),
                };
                let host = if i % 5 == 4 {
                    format!("fd00::{i:x}")
                } else {
                    format!("10.1.{}.{}", i / 256, i % 256)
                };
                // some mail hosts, some texts, a few ports: SRV, MX and TXT answers too
                let extra = match i % 6 {
                    0 => r#","mail":true"#.to_owned(),
                    1 => format!(r#","text":"t{}""#, i % 40),
                    2 => format!(r#","port":{}"#, i % 3),
                    _ => String::new(),
                };
                (
                    format!("{key}/{i:08x}"),
                    (
                        format!(r#"{{"host":"{host}"{group}{extra}}}"#),
                        leased && i % 3 == 0,
                    ),
                )
            })
            .chain(own)
            .collect()
    })
}

fn key() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "svc", "fr", "x", "*"]),
        1..4,
    )
    .prop_map(|labels| format!("/skydns/com/example/{}", labels.join("/")))
}

/// Records and the table compiled from them, as the sync task publishes them.
#[derive(Clone)]
struct Served {
    records: Records,
    table: Table,
}

fn snapshot(recs: &[(String, (String, bool))]) -> Served {
    snapshot_in(zones(), recs)
}

fn snapshot_in(zones: Arc<Zones>, recs: &[(String, (String, bool))]) -> Served {
    let mut s = Records::new(zones, 10);
    for (i, (k, (v, leased))) in recs.iter().enumerate() {
        let lease = if *leased { 7 } else { 0 };
        s.put(
            k,
            Record::parse(v.as_bytes()).expect("valid"),
            lease,
            11 + i64::try_from(i).expect("small"),
        );
    }
    s.mark_loaded();
    Served {
        table: Table::compile(&s),
        records: s,
    }
}

/// The fast path's answer to `q`, written into `out`.
fn fast(s: &Served, q: &[u8], rotation: usize, out: &mut [u8]) -> Option<usize> {
    respond_fast(
        &s.records,
        &s.table,
        q,
        AnswerOptions::default(),
        rotation,
        out,
    )
}

fn query(name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 777;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some((size, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fast_answers_equal_the_general_path(
        recs in prop::collection::vec((key(), value()), 1..25),
        big in prop::option::of(bulk()),
        ask_big in any::<bool>(),
        qkey in key(),
        upper in any::<u32>(),
        qtype in prop_oneof![
            4 => prop::sample::select(vec![RecordType::A, RecordType::AAAA, RecordType::SRV, RecordType::MX, RecordType::TXT]),
            1 => any::<u16>().prop_map(RecordType::from),
        ],
        edns in prop::option::of((prop_oneof![500u16..1600, 0u16..=u16::MAX], any::<bool>())),
        ours in prop::sample::select(vec![512u16, 1232, 4096, 8192, 65535]),
        rotation in 0usize..7,
        outside in prop::sample::select(vec![None, Some("example.org."), Some("com."), Some("federation.svc.cluster.local.")]),
        tcp in any::<bool>(),
        short in any::<bool>(),
        client in prop::option::of((any::<[u8; 4]>(), prop::option::of(0u8..=32))),
    ) {
        // the many leaves' name, asked half the time
        let big_key = big.as_ref().and_then(|b| Some(b.first()?.0.rsplit_once('/')?.0.to_owned()));
        let qkey = match big_key {
            Some(k) if ask_big => k,
            _ => qkey,
        };
        let recs: Vec<_> = recs.into_iter().chain(big.into_iter().flatten()).collect();
        let s = snapshot(&recs);
        let labels: Vec<&str> = qkey.trim_start_matches("/skydns/com/example/").split('/').rev().collect();
        // random letter case, echoed back
        let name: String = format!("{}.{}", labels.join("."), outside.unwrap_or("example.com."))
            .chars()
            .enumerate()
            .map(|(i, c)| if upper >> (i % 32) & 1 == 1 { c.to_ascii_uppercase() } else { c })
            .collect();
        let mut q = query(&name, qtype, edns);
        let mut out = [0u8; MAX_FAST_RESPONSE];
        // our payload: the default, or larger (--max-udp-payload), so that big answers come
        // near the limit
        let opts = AnswerOptions {
            max_udp_payload: ours,
            by_locality: client.is_some(),
            short_names: short,
            catalog: false,
        };
        let feds = crate::federation::Federations::new(
            &["federation=example.com".into()],
            "cluster.local",
            "zone=fr,region=europe",
        )
        .expect("valid");
        // With a topology map: a client placed by its address (10.x mostly) and sometimes by
        // a client subnet option.
        let map = topology();
        let asker = client.map(|(addr, ecs)| {
            let addr = [10, addr[1] % 3, addr[2], addr[3]];
            if let (Some(source), Some(_)) = (ecs, edns) {
                q = with_ecs(std::mem::take(&mut q), addr, source);
            }
            crate::answer::Asker { addr: std::net::IpAddr::from(addr), topology: &map }
        });
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let fast = respond_fast_to(&s.records, &s.table, &q, opts, rotation, &mut out, transport, asker);
        if let Some(n) = fast {
            let Outcome::Reply { bytes, .. } =
                crate::answer::respond_to(&s.records, &q, transport, opts, Instant::now(), rotation, crate::answer::Context { asker, federations: short.then_some(&feds), reserve: 0 })
            else { panic!("general path dropped a query the fast path answered") };
            prop_assert_eq!(seen(&out[..n]), seen(&bytes));
        }
    }

    /// Names whose addresses carry localities or weights, asked by placed clients (by
    /// address or client subnet) and unplaced ones: whenever the fast path answers, the
    /// general path answers the same.
    #[test]
    fn located_and_weighted_names_answer_alike_on_both_paths(
        hosts in prop::collection::vec((0u8..4, prop::sample::select(vec!["fr", "us", "de"]), prop::sample::select(vec!["europe", "america"]), 0u16..4), 1..6),
        client in prop::option::of((any::<[u8; 4]>(), prop::option::of(0u8..=32))),
        aaaa in any::<bool>(),
        rotation in 0usize..50,
    ) {
        let recs: Vec<(String, (String, bool))> = hosts
            .iter()
            .enumerate()
            .map(|(i, (kind, z, r, w))| {
                let host = if aaaa && i % 2 == 0 { format!("fd00::{i}") } else { format!("10.0.9.{i}") };
                let extra = match kind {
                    0 => String::new(),
                    1 => format!(r#","zone":"{z}","region":"{r}""#),
                    2 => format!(r#","weight":{w}"#),
                    _ => format!(r#","region":"{r}","weight":{w}"#),
                };
                (format!("/skydns/com/example/gslb/x{i}"), (format!(r#"{{"host":"{host}"{extra}}}"#), false))
            })
            .collect();
        let s = snapshot(&recs);
        let map = topology();
        let mut q = query("gslb.example.com.", if aaaa { RecordType::AAAA } else { RecordType::A }, Some((1232, false)));
        let asker = client.map(|(addr, ecs)| {
            let addr = [10, addr[1] % 3, addr[2], addr[3]];
            if let Some(source) = ecs {
                q = with_ecs(std::mem::take(&mut q), addr, source);
            }
            crate::answer::Asker { addr: std::net::IpAddr::from(addr), topology: &map }
        });
        let opts = AnswerOptions { by_locality: client.is_some(), ..AnswerOptions::default() };
        let mut out = [0u8; MAX_FAST_RESPONSE];
        let fast = respond_fast_to(&s.records, &s.table, &q, opts, rotation, &mut out, Transport::Udp, asker);
        prop_assert!(fast.is_some(), "compiled, so answered on the fast path");
        if let Some(n) = fast {
            let Outcome::Reply { bytes, .. } =
                crate::answer::respond_to(&s.records, &q, Transport::Udp, opts, Instant::now(), rotation, crate::answer::Context { asker, ..Default::default() })
            else { panic!("general path dropped a query the fast path answered") };
            prop_assert_eq!(seen(&out[..n]), seen(&bytes));
        }
    }

    #[test]
    fn recompiling_changed_keys_equals_compiling_everything(
        recs in prop::collection::vec((key(), value()), 1..20),
        big in prop::option::of(bulk()),
        changes in prop::collection::vec((key(), prop::option::of(value())), 1..10),
    ) {
        let recs: Vec<_> = recs.into_iter().chain(big.into_iter().flatten()).collect();
        let mut s = snapshot(&recs);
        let mut changed = Vec::new();
        for (i, (k, v)) in changes.iter().enumerate() {
            let rev = 100 + i64::try_from(i).expect("small");
            match v {
                Some((v, leased)) => s.records.put(k, Record::parse(v.as_bytes()).expect("valid"), if *leased { 7 } else { 0 }, rev),
                None => { s.records.delete(k, rev); }
            }
            changed.push(k.clone());
        }
        s.table.recompile(&s.records, &changed);
        let full = Table::compile(&s.records);
        prop_assert_eq!(s.table.len(), full.len());
        let keys: Vec<&String> = recs.iter().map(|(k, _)| k).chain(changes.iter().map(|(k, _)| k)).collect();
        for k in keys {
            let n = crate::key::key_to_name("/skydns", k).expect("name").to_lowercase();
            // the name and every ancestor below the apex
            let mut name = n;
            while name.num_labels() > 2 {
                let w = wire_name(&name);
                prop_assert_eq!(s.table.get(&w), full.get(&w), "{}", name);
                name = name.base_name();
            }
        }
    }
}

#[test]
fn compiled_answers_echo_case_rotate_and_carry_edns() {
    let s = snapshot(&[
        (
            "/skydns/com/example/hw/a".into(),
            (r#"{"host":"10.0.0.1","ttl":30}"#.into(), false),
        ),
        (
            "/skydns/com/example/hw/b".into(),
            (r#"{"host":"10.0.0.2","ttl":30}"#.into(), false),
        ),
    ]);
    let q = query("Hw.Example.COM.", RecordType::A, Some((4096, true)));
    let mut out = [0u8; MAX_FAST_RESPONSE];
    let n = fast(&s, &q, 1, &mut out).expect("compiled");
    let m = Message::from_vec(&out[..n]).expect("parses");
    assert_eq!(m.queries[0].name().to_ascii(), "Hw.Example.COM.");
    assert_eq!(m.answers[0].data.to_string(), "10.0.0.2", "rotated by one");
    assert_eq!(m.answers[0].name.to_ascii(), "Hw.Example.COM.");
    let e = m.edns.expect("OPT echoed");
    assert!(e.flags().dnssec_ok);
    assert_eq!(e.max_payload(), 1232);
}

#[test]
fn nodata_serial_follows_later_changes_without_recompiling() {
    let mut s = snapshot(&[(
        "/skydns/com/example/hw/a".into(),
        (r#"{"host":"10.0.0.1"}"#.into(), false),
    )]);
    s.records.put(
        "/skydns/com/example/other",
        Record::parse(br#"{"host":"10.0.0.9"}"#).expect("valid"),
        0,
        500,
    );
    let q = query("hw.example.com.", RecordType::AAAA, None);
    let mut out = [0u8; MAX_FAST_RESPONSE];
    let n = fast(&s, &q, 0, &mut out).expect("compiled");
    let m = Message::from_vec(&out[..n]).expect("parses");
    let hickory_proto::rr::RData::SOA(soa) = &m.authorities[0].data else {
        panic!("no SOA")
    };
    assert_eq!(soa.serial, 500);
}

#[test]
fn what_is_not_compiled_falls_back() {
    let s = snapshot(&[
        (
            "/skydns/com/example/alias".into(),
            (r#"{"host":"a.example.com"}"#.into(), false),
        ),
        (
            "/skydns/com/example/leased".into(),
            (r#"{"host":"10.0.0.1"}"#.into(), true),
        ),
    ]);
    let mut out = [0u8; MAX_FAST_RESPONSE];
    for (name, t) in [
        ("leased.example.com.", RecordType::A),
        ("example.com.", RecordType::A),
        // An alias answers A and AAAA here (following its target), the rest there.
        ("alias.example.com.", RecordType::TXT),
        ("alias.example.com.", RecordType::CNAME),
        ("alias.example.com.", RecordType::SRV),
    ] {
        assert!(
            fast(&s, &query(name, t, None), 0, &mut out).is_none(),
            "{name} {t}"
        );
    }
    // Loaded records published before their table is compiled (the first load): the empty
    // table knows no zone, so it says nothing, not even NXDOMAIN or REFUSED.
    let uncompiled = Served {
        records: s.records.clone(),
        table: Table::default(),
    };
    for name in ["missing.example.com.", "other.org.", "leased.example.com."] {
        assert!(
            fast(&uncompiled, &query(name, RecordType::A, None), 0, &mut out).is_none(),
            "{name}"
        );
    }
}

#[test]
fn an_ns_change_reaches_the_soa_of_compiled_nodata_answers() {
    let mut s = snapshot(&[(
        "/skydns/com/example/hw/a".into(),
        (r#"{"host":"10.0.0.1"}"#.into(), false),
    )]);
    let key = "/skydns/com/example/dns/ns/ns1".to_owned();
    s.records.put(
        &key,
        Record::parse(br#"{"host":"10.0.0.53"}"#).expect("valid"),
        0,
        600,
    );
    s.table.recompile(&s.records, &[key]);
    let q = query("hw.example.com.", RecordType::AAAA, None);
    let mut out = [0u8; MAX_FAST_RESPONSE];
    let n = fast(&s, &q, 0, &mut out).expect("compiled");
    let Outcome::Reply { bytes, .. } = respond(
        &s.records,
        &q,
        Transport::Udp,
        AnswerOptions::default(),
        Instant::now(),
        0,
    ) else {
        panic!("dropped")
    };
    assert_eq!(seen(&out[..n]), seen(&bytes));
    assert!(seen(&bytes).contains("ns1.ns.dns.example.com."));
}

fn general(s: &Served, q: &[u8], rotation: usize) -> Vec<u8> {
    match respond(
        &s.records,
        q,
        Transport::Udp,
        AnswerOptions::default(),
        Instant::now(),
        rotation,
    ) {
        Outcome::Reply { bytes, .. } => bytes,
        Outcome::Drop(r) => panic!("general path dropped: {r:?}"),
    }
}

#[test]
fn a_name_too_big_for_udp_is_answered_tc_only_by_the_fast_path() {
    // 20,000 keys under bulk (the name collects MAX_NODE_RECORDS of them), some on leases:
    // the answer can never fit a datagram, so the fast path sends TC at once, as NSD and Knot
    // do, without reading or encoding the records.
    let recs: Vec<(String, (String, bool))> = (0..20_000u32)
        .map(|i| {
            (
                format!("/skydns/com/example/bulk/{i:08x}"),
                (
                    format!(
                        r#"{{"host":"{}"}}"#,
                        std::net::Ipv4Addr::from(0x0a00_0000 + i)
                    ),
                    i % 7 == 0,
                ),
            )
        })
        .collect();
    let s = snapshot(&recs);
    let mut out = [0u8; MAX_FAST_RESPONSE];
    for edns in [None, Some((1232, false)), Some((4096, true))] {
        let q = query("BULK.example.com.", RecordType::A, edns);
        let n = fast(&s, &q, 3, &mut out).expect("the fast path answers a big name");
        assert_eq!(&out[..n], &general(&s, &q, 3)[..], "{edns:?}");
        let m = Message::from_vec(&out[..n]).expect("parses");
        assert!(m.metadata.truncation && m.metadata.authoritative && m.answers.is_empty());
        assert_eq!(
            n,
            q.len(),
            "header, question and OPT: the size of the query"
        );
        // SRV (every record has a port): TC-only from the fast path as well; no MX or TXT
        // records: the general path
        let q = query("bulk.example.com.", RecordType::SRV, edns);
        let n = fast(&s, &q, 1, &mut out).expect("SRV of a big name");
        assert_eq!(&out[..n], &general(&s, &q, 1)[..]);
        assert!(
            Message::from_vec(&out[..n])
                .expect("parses")
                .metadata
                .truncation
        );
        for t in [RecordType::MX, RecordType::TXT] {
            assert!(fast(&s, &query("bulk.example.com.", t, edns), 0, &mut out).is_none());
        }
        // no addresses of the other family: NODATA, from the fast path as well
        let q = query("bulk.example.com.", RecordType::AAAA, edns);
        let n = fast(&s, &q, 0, &mut out).expect("NODATA of a big name");
        assert_eq!(seen(&out[..n]), seen(&general(&s, &q, 0)));
    }
}

#[test]
fn an_answer_that_does_not_fit_the_client_is_tc_only_from_the_fast_path() {
    // 40 addresses: 640 bytes of answer, more than 512 without EDNS, less than 1232 with it
    let recs: Vec<(String, (String, bool))> = (0..40u32)
        .map(|i| {
            (
                format!("/skydns/com/example/forty/{i:08x}"),
                (format!(r#"{{"host":"10.0.1.{i}"}}"#), false),
            )
        })
        .collect();
    let s = snapshot(&recs);
    let mut out = [0u8; MAX_FAST_RESPONSE];
    let q = query("forty.example.com.", RecordType::A, None);
    let n = fast(&s, &q, 0, &mut out).expect("answered");
    assert_eq!(&out[..n], &general(&s, &q, 0)[..]);
    assert!(
        Message::from_vec(&out[..n])
            .expect("parses")
            .metadata
            .truncation
    );
    let q = query("forty.example.com.", RecordType::A, Some((1232, false)));
    let n = fast(&s, &q, 5, &mut out).expect("answered");
    assert_eq!(seen(&out[..n]), seen(&general(&s, &q, 5)));
    assert_eq!(
        Message::from_vec(&out[..n]).expect("parses").answers.len(),
        40
    );
}

#[test]
fn ttls_above_2_31_are_capped_in_compiled_answers() {
    let s = snapshot(&[(
        "/skydns/com/example/big-ttl".into(),
        (r#"{"host":"10.0.0.1","ttl":4294967295}"#.into(), false),
    )]);
    let q = query("big-ttl.example.com.", RecordType::A, None);
    let mut out = [0u8; MAX_FAST_RESPONSE];
    let n = fast(&s, &q, 0, &mut out).expect("compiled");
    let m = Message::from_vec(&out[..n]).expect("parses");
    assert_eq!(m.answers[0].ttl, 0x7FFF_FFFF);
    assert_eq!(seen(&out[..n]), seen(&general(&s, &q, 0)));
}

#[test]
fn a_parent_of_many_names_is_answered_tc_only_and_follows_changes() {
    // svc.example.com holds no key and no leaf of its own: 80 services two levels down
    let mut recs: Vec<(String, (String, bool))> = (0..80u32)
        .map(|i| {
            (
                format!("/skydns/com/example/svc/ns{}/s{i}/a", i % 4),
                (format!(r#"{{"host":"10.4.0.{i}"}}"#), false),
            )
        })
        .collect();
    recs.push((
        "/skydns/com/example/svc/ns0/s0/b".into(),
        (r#"{"host":"10.4.1.1"}"#.into(), true),
    ));
    let mut s = snapshot(&recs);
    let q = query("svc.example.com.", RecordType::A, Some((1232, false)));
    let mut out = [0u8; MAX_FAST_RESPONSE];
    let n = fast(&s, &q, 0, &mut out).expect("a big parent is in the table");
    assert_eq!(&out[..n], &general(&s, &q, 0)[..]);
    assert!(
        Message::from_vec(&out[..n])
            .expect("parses")
            .metadata
            .truncation
    );
    // deleting most of them: small enough for the general path, then gone from the table
    let mut changed = Vec::new();
    for (i, (k, _)) in recs.iter().enumerate().take(40) {
        s.records.delete(k, 100 + i64::try_from(i).expect("small"));
        changed.push(k.clone());
    }
    s.table.recompile(&s.records, &changed);
    assert!(
        fast(&s, &q, 0, &mut out).is_none(),
        "41 records fit: general path"
    );
    let full = Table::compile(&s.records);
    assert_eq!(s.table.len(), full.len());
    assert_eq!(
        s.table.get(&wire_name(
            &Name::from_ascii("svc.example.com.").expect("name")
        )),
        None
    );
}

#[test]
fn srv_and_txt_of_a_big_name_are_tc_only_exactly_when_the_general_path_truncates() {
    // 70 records with ports and texts of varied lengths: SRV and TXT answers take exactly the
    // bytes the general path counts (owner pointers, SRV targets whole), so the fast path's TC
    // must start at the very payload size where the general path's does.
    let recs: Vec<(String, (String, bool))> = (0..70u32)
        .map(|i| {
            (
                format!("/skydns/com/example/m/{i:08x}"),
                (
                    format!(
                        r#"{{"host":"10.5.0.{i}","port":{},"text":"{i}{}"}}"#,
                        i % 4,
                        "x".repeat(usize::try_from(i % 13).expect("small"))
                    ),
                    false,
                ),
            )
        })
        .collect();
    let s = snapshot(&recs);
    let opts = AnswerOptions {
        max_udp_payload: 65535,
        ..AnswerOptions::default()
    };
    let mut out = [0u8; MAX_FAST_RESPONSE];
    for qtype in [RecordType::SRV, RecordType::TXT] {
        let mut flips = 0;
        let mut was_tc = true;
        for size in 512..4096u16 {
            let q = query("m.example.com.", qtype, Some((size, false)));
            let Outcome::Reply {
                bytes, truncated, ..
            } = respond(&s.records, &q, Transport::Udp, opts, Instant::now(), 0)
            else {
                panic!("dropped")
            };
            let fast = respond_fast(&s.records, &s.table, &q, opts, 0, &mut out);
            assert_eq!(fast.is_some(), truncated, "{qtype} at {size}");
            if let Some(n) = fast {
                assert_eq!(&out[..n], &bytes[..]);
            }
            if truncated != was_tc {
                flips += 1;
                was_tc = truncated;
            }
        }
        assert_eq!(
            flips, 1,
            "{qtype}: TC up to one size, whole answers after it"
        );
    }
}

/// The fast path walks the OPT's options as the general path does: options that do not tile
/// the RDATA go to the general path (FORMERR there, as NSD and Knot), well-framed ones of any
/// content are answered.
#[test]
fn malformed_edns_options_are_left_to_the_general_path() {
    let s = snapshot(&[(
        "/skydns/com/example/hw/a".into(),
        (r#"{"host":"10.0.0.1"}"#.into(), false),
    )]);
    let with_options = |rdata: &[u8]| {
        let mut q = query("hw.example.com.", RecordType::A, Some((1232, false)));
        assert_eq!(q[q.len() - 2..], [0, 0], "an OPT without options last");
        let at = q.len() - 2;
        q[at..].copy_from_slice(&u16::try_from(rdata.len()).expect("short").to_be_bytes());
        q.extend_from_slice(rdata);
        q
    };
    let mut out = [0u8; MAX_FAST_RESPONSE];
    for bad in [
        &[0, 10, 0][..],
        &[0, 10, 0, 10, b'a', b'b'],
        &[0, 10, 0, 0, 0],
    ] {
        assert_eq!(fast(&s, &with_options(bad), 0, &mut out), None, "{bad:?}");
        let general = respond(
            &s.records,
            &with_options(bad),
            Transport::Udp,
            AnswerOptions::default(),
            Instant::now(),
            0,
        );
        assert!(
            matches!(
                general,
                Outcome::Reply {
                    rcode: ResponseCode::FormErr,
                    ..
                }
            ),
            "{bad:?}: {general:?}"
        );
    }
    let cookie = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    assert!(fast(&s, &with_options(&cookie), 0, &mut out).is_some());
}

#[test]
fn a_name_that_does_not_exist_is_nxdomain_from_the_fast_path_as_from_the_general_one() {
    let s = snapshot(&[
        (
            "/skydns/com/example/svc/ns/app/x1".into(),
            (r#"{"host":"10.0.0.1"}"#.into(), false),
        ),
        (
            "/skydns/com/example/deep/a/b/c/leaf".into(),
            (r#"{"host":"10.0.0.2"}"#.into(), false),
        ),
    ]);
    let mut out = [0u8; MAX_FAST_RESPONSE];
    for (name, qtype) in [
        ("random-label.example.com.", RecordType::A),
        ("Q9X.svc.example.com.", RecordType::AAAA),
        ("nope.app.ns.svc.EXAMPLE.com.", RecordType::A),
        ("x2.app.ns.svc.example.com.", RecordType::SRV),
        ("a.b.c.d.e.f.example.com.", RecordType::TXT),
    ] {
        for edns in [None, Some((1232, true))] {
            let q = query(name, qtype, edns);
            let n = fast(&s, &q, 0, &mut out)
                .unwrap_or_else(|| panic!("{name}: the fast path answers NXDOMAIN"));
            // The SOA's names are written whole here, compressed there: compare what a
            // resolver sees.
            assert_eq!(
                seen(&out[..n]),
                seen(&general(&s, &q, 0)),
                "{name} {edns:?}"
            );
            let m = Message::from_vec(&out[..n]).expect("parses");
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        }
    }
    // A label with a byte no key holds ('/' or '.' inside a label): NXDOMAIN as well.
    let mut q = query("slash.example.com.", RecordType::A, None);
    q[13 + 2] = b'/';
    let n = fast(&s, &q, 0, &mut out).expect("answered");
    assert_eq!(seen(&out[..n]), seen(&general(&s, &q, 0)));
    // Any query type (HTTPS, NS, CAA, an unknown one) but those the general path answers
    // otherwise (OPT, AXFR, IXFR).
    for qtype in [65u16, 2, 257, 4321, 255, 12, 5] {
        let q = query(
            "random-label.example.com.",
            RecordType::from(qtype),
            Some((1232, false)),
        );
        let n = fast(&s, &q, 0, &mut out).unwrap_or_else(|| panic!("NXDOMAIN for type {qtype}"));
        assert_eq!(seen(&out[..n]), seen(&general(&s, &q, 0)), "type {qtype}");
    }
    // Names that exist take the general path unless compiled: an empty non-terminal (b under
    // deep holds no key and has no child with one) and the apex.
    for name in ["b.a.deep.example.com.", "example.com."] {
        let q = query(name, RecordType::A, None);
        assert!(fast(&s, &q, 0, &mut out).is_none(), "{name}");
    }
    // Names outside every zone: REFUSED, byte for byte as the general path.
    for name in ["other.org.", "x.example.org.", "com.", "."] {
        for edns in [None, Some((4096, true))] {
            let q = query(name, RecordType::AAAA, edns);
            let n = fast(&s, &q, 0, &mut out).unwrap_or_else(|| panic!("{name}: REFUSED"));
            assert_eq!(&out[..n], &general(&s, &q, 0)[..], "{name} {edns:?}");
            let m = Message::from_vec(&out[..n]).expect("parses");
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        }
    }
}

#[test]
fn a_compiled_name_answers_nodata_for_types_it_cannot_hold() {
    let s = snapshot(&[(
        "/skydns/com/example/hw/x1".into(),
        (r#"{"host":"10.0.0.1","port":80}"#.into(), false),
    )]);
    let mut out = [0u8; MAX_FAST_RESPONSE];
    for qtype in [65u16, 64, 2, 6, 257, 99, 4321] {
        let q = query("hw.example.com.", RecordType::from(qtype), None);
        let n = fast(&s, &q, 0, &mut out).unwrap_or_else(|| panic!("NODATA for type {qtype}"));
        assert_eq!(seen(&out[..n]), seen(&general(&s, &q, 0)), "type {qtype}");
    }
    // PTR, CNAME and ANY read the name's data: the general path.
    for qtype in [12u16, 5, 255] {
        let q = query("hw.example.com.", RecordType::from(qtype), None);
        assert!(fast(&s, &q, 0, &mut out).is_none(), "type {qtype}");
    }
}

#[test]
fn a_negative_answer_too_big_for_the_client_takes_the_general_path() {
    // A zone with a long name: its SOA (names written whole) beside a long question does not
    // fit 512 bytes, though it does with the names compressed as the general path writes them.
    let z60 = "z".repeat(60);
    let zone = format!("{z60}.{z60}.example.com.");
    let zone_key = zone
        .trim_end_matches('.')
        .split('.')
        .rev()
        .fold(String::from("/skydns"), |k, l| format!("{k}/{l}"));
    let zones = Arc::new(Zones::new(
        "/skydns",
        &[Name::from_ascii(&zone).expect("name")],
    ));
    let host = "q".repeat(60);
    let s = snapshot_in(
        zones,
        &[(
            format!("{zone_key}/{host}"),
            (r#"{"host":"10.0.0.1"}"#.into(), false),
        )],
    );
    let mut out = [0u8; MAX_FAST_RESPONSE];
    let q = query(&format!("{host}.{zone}"), RecordType::A, None);
    let n = fast(&s, &q, 0, &mut out).expect("the address fits");
    assert_eq!(&out[..n], &general(&s, &q, 0)[..]);
    for (name, qtype) in [
        (format!("{host}.{zone}"), RecordType::AAAA), // NODATA
        (format!("{}.{zone}", "r".repeat(60)), RecordType::A), // NXDOMAIN
    ] {
        let q = query(&name, qtype, None);
        assert!(fast(&s, &q, 0, &mut out).is_none(), "{qtype}");
        let m = Message::from_vec(&general(&s, &q, 0)).expect("parses");
        assert!(!m.metadata.truncation, "{qtype}: the general path fits it");
    }
}

/// A parent of more records than a name answers with (the federation's `<ns>.<fed>.svc` of
/// thousands of Services): a change after its first MAX_NODE_RECORDS records skips its
/// recompile, one inside them does not, and either way the table is the one compiled whole.
#[test]
fn a_big_parent_is_recompiled_only_for_changes_inside_the_records_it_answers() {
    let n = MAX_NODE_RECORDS + 500;
    let recs: Vec<(String, (String, bool))> = (0..n)
        .map(|i| {
            (
                format!("/skydns/com/example/big/s{i:05}/a"),
                (
                    format!(r#"{{"host":"10.1.{}.{}"}}"#, i / 256, i % 256),
                    false,
                ),
            )
        })
        .collect();
    let mut s = snapshot(&recs);
    let mut rev = 100_000;
    for (i, host) in [
        (n - 1, "10.9.0.1"), // after the window
        (3, "10.9.0.2"),     // inside it
        (n - 2, "10.9.0.3"), // after, again
    ] {
        let key = format!("/skydns/com/example/big/s{i:05}/a");
        rev += 1;
        s.records.put(
            &key,
            Record::parse(format!(r#"{{"host":"{host}"}}"#).as_bytes()).expect("valid"),
            0,
            rev,
        );
        s.table.recompile(&s.records, &[key]);
        let full = Table::compile(&s.records);
        for name in [
            format!("s{i:05}.big.example.com."),
            "big.example.com.".to_owned(),
        ] {
            let w = wire_name(&Name::from_ascii(&name).expect("name"));
            assert_eq!(
                s.table.get(&w),
                full.get(&w),
                "{name} after changing s{i:05}"
            );
        }
    }
}

#[test]
fn a_changed_name_is_recompiled_at_once_and_its_big_parent_apart() {
    let n = NEAR_RECORDS + 10;
    let recs: Vec<(String, (String, bool))> = (0..n)
        .map(|i| {
            (
                format!("/skydns/com/example/big/s{i:03}/a"),
                (format!(r#"{{"host":"10.1.0.{i}"}}"#), false),
            )
        })
        .collect();
    let mut s = snapshot(&recs);
    let before = Table::compile(&s.records);
    let key = "/skydns/com/example/big/s999/a".to_owned();
    s.records.put(
        &key,
        Record::parse(br#"{"host":"10.9.0.1"}"#).expect("valid"),
        0,
        100_000,
    );
    let done = s
        .table
        .recompile_near(&s.records, std::slice::from_ref(&key));
    let big = Name::from_ascii("big.example.com.").expect("name");
    assert_eq!(
        done.far,
        vec![big.clone()],
        "the parent of {n} names is left for later"
    );
    let far = done.far;
    let full = Table::compile(&s.records);
    let (name, parent) = (
        wire_name(&Name::from_ascii("s999.big.example.com.").expect("name")),
        wire_name(&big),
    );
    assert_eq!(
        s.table.get(&name),
        full.get(&name),
        "the changed name: current"
    );
    assert_ne!(
        before.get(&parent),
        full.get(&parent),
        "one more name below"
    );
    assert_eq!(
        s.table.get(&parent),
        before.get(&parent),
        "its parent: as before"
    );
    // A job that finds the name changed again since it started puts nothing back.
    assert!(
        !s.table
            .put_back(Table::compile_apart(&s.records, &far), |_| false)
    );
    assert_eq!(s.table.get(&parent), before.get(&parent));
    assert!(
        s.table
            .put_back(Table::compile_apart(&s.records, &far), |_| true)
    );
    assert_eq!(s.table.get(&parent), full.get(&parent), "then current");
}

#[test]
fn a_big_parent_whose_own_key_changes_is_compiled_at_once_whatever_the_order() {
    let n = NEAR_RECORDS + 10;
    let mut recs: Vec<(String, (String, bool))> = (0..n)
        .map(|i| {
            (
                format!("/skydns/com/example/big/s{i:03}/a"),
                (format!(r#"{{"host":"10.1.0.{i}"}}"#), false),
            )
        })
        .collect();
    recs.push((
        "/skydns/com/example/big".into(),
        (r#"{"host":"10.2.0.1"}"#.into(), false),
    ));
    let mut s = snapshot(&recs);
    let (child, own) = (
        "/skydns/com/example/big/s001/a".to_owned(),
        "/skydns/com/example/big".to_owned(),
    );
    for (i, k) in [&child, &own].into_iter().enumerate() {
        s.records.put(
            k,
            Record::parse(br#"{"host":"10.9.0.9"}"#).expect("valid"),
            0,
            100_000 + i64::try_from(i).expect("small"),
        );
    }
    let done = s.table.recompile_near(&s.records, &[child, own]);
    let big = Name::from_ascii("big.example.com.").expect("name");
    assert!(done.far.is_empty(), "{done:?}");
    assert!(done.near.contains(&big));
    let w = wire_name(&big);
    assert_eq!(s.table.get(&w), Table::compile(&s.records).get(&w));
}

#[test]
fn a_name_above_a_nested_zone_follows_changes_inside_it() {
    // `b.example.com.` is example.com.'s, and answers the records of a.b.example.com. below it.
    let zones = Arc::new(Zones::new(
        "/skydns",
        &[
            Name::from_ascii("example.com.").expect("name"),
            Name::from_ascii("a.b.example.com.").expect("name"),
        ],
    ));
    let key = "/skydns/com/example/b/a/www".to_owned();
    let mut s = snapshot_in(
        zones,
        &[
            (
                "/skydns/com/example/b/a".into(),
                (r#"{"host":"10.0.0.9"}"#.into(), false),
            ),
            (key.clone(), (r#"{"host":"10.0.0.1"}"#.into(), false)),
        ],
    );
    s.records.put(
        &key,
        Record::parse(br#"{"host":"10.0.0.2"}"#).expect("valid"),
        0,
        1000,
    );
    s.table.recompile(&s.records, std::slice::from_ref(&key));
    let q = query("b.example.com.", RecordType::A, None);
    let mut out = [0u8; MAX_FAST_RESPONSE];
    let n = fast(&s, &q, 0, &mut out).expect("the fast path answers");
    assert_eq!(seen(&out[..n]), seen(&general(&s, &q, 0)));
}
