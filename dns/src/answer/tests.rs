use std::sync::Arc;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use super::*;
use crate::index::{Records, Zones};
use crate::record::Record as SkyRecord;

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("valid name")
}

fn snapshot(records: &[(&str, &str)]) -> Records {
    let zones = Arc::new(Zones::new(
        "/skydns",
        &[name("example.com."), name("0.0.10.in-addr.arpa.")],
    ));
    let mut s = Records::new(zones, 100);
    for (i, (k, v)) in records.iter().enumerate() {
        let rev = 101 + i64::try_from(i).expect("small");
        s.put(
            k,
            SkyRecord::parse(v.as_bytes()).expect("valid record"),
            0,
            rev,
        );
    }
    s.mark_loaded();
    s
}

fn query_bytes(qname: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

fn ask_with(
    s: &Records,
    qname: &str,
    qtype: RecordType,
    edns: Option<u16>,
    t: Transport,
) -> (Message, usize) {
    match respond(
        s,
        &query_bytes(qname, qtype, edns),
        t,
        AnswerOptions::default(),
        Instant::now(),
        0,
    ) {
        Outcome::Reply { bytes, .. } => (
            Message::from_vec(&bytes).expect("response parses"),
            bytes.len(),
        ),
        Outcome::Drop(r) => panic!("dropped: {r:?}"),
    }
}

fn ask(s: &Records, qname: &str, qtype: RecordType) -> Message {
    ask_with(s, qname, qtype, Some(1232), Transport::Udp).0
}

fn answers(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

const HW: &str = "/skydns/com/example/svc/federation/default/hello-world";

#[test]
fn a_query_answers_every_leaf_of_the_name_authoritatively() {
    let s = snapshot(&[
        (&format!("{HW}/fcp"), r#"{"host":"10.210.1.68","ttl":30}"#),
        (&format!("{HW}/usa"), r#"{"host":"10.210.3.65","ttl":30}"#),
        (&format!("{HW}/chn"), r#"{"host":"10.210.2.65","ttl":30}"#),
    ]);
    let m = ask(
        &s,
        "Hello-World.default.federation.svc.example.com.",
        RecordType::A,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(answers(&m), ["10.210.1.68", "10.210.2.65", "10.210.3.65"]);
    assert!(m.answers.iter().all(|r| r.ttl == 30));
    // the question's case is echoed, in the question and in the answer owner
    assert_eq!(
        m.queries[0].name().to_ascii(),
        "Hello-World.default.federation.svc.example.com."
    );
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "Hello-World.default.federation.svc.example.com."
    );
}

#[test]
fn multi_record_answers_rotate() {
    let s = snapshot(&[
        (&format!("{HW}/a"), r#"{"host":"10.0.0.1"}"#),
        (&format!("{HW}/b"), r#"{"host":"10.0.0.2"}"#),
    ]);
    let q = query_bytes(
        "hello-world.default.federation.svc.example.com.",
        RecordType::A,
        None,
    );
    let first = |rot| match respond(
        &s,
        &q,
        Transport::Udp,
        AnswerOptions::default(),
        Instant::now(),
        rot,
    ) {
        Outcome::Reply { bytes, .. } => Message::from_vec(&bytes).expect("parse").answers[0]
            .data
            .to_string(),
        Outcome::Drop(_) => panic!("dropped"),
    };
    assert_ne!(first(0), first(1));
}

#[test]
fn nxdomain_and_nodata_carry_the_soa_with_the_revision_serial() {
    let s = snapshot(&[(&format!("{HW}/a"), r#"{"host":"10.0.0.1"}"#)]);
    let m = ask(&s, "nope.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    let RData::SOA(soa) = &m.authorities[0].data else {
        panic!("no SOA")
    };
    assert_eq!(soa.serial, 101);
    assert_eq!(m.authorities[0].ttl, 30);

    let m = ask(
        &s,
        "hello-world.default.federation.svc.example.com.",
        RecordType::AAAA,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

    // SkyDNS layout: a parent name answers with the records of its whole subtree
    let m = ask(&s, "default.federation.svc.example.com.", RecordType::A);
    assert_eq!(answers(&m), ["10.0.0.1"]);
}

#[test]
fn outside_the_zones_is_refused_without_aa() {
    let s = snapshot(&[]);
    let m = ask(&s, "example.org.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.authoritative);
}

#[test]
fn apex_answers_soa_ns_and_dns_apex_records_only() {
    let s = snapshot(&[
        ("/skydns/com/example/dns/apex/a1", r#"{"host":"192.0.2.1"}"#),
        ("/skydns/com/example/dns/ns/ns1", r#"{"host":"192.0.2.53"}"#),
        ("/skydns/com/example/www", r#"{"host":"192.0.2.80"}"#),
    ]);
    assert_eq!(
        answers(&ask(&s, "example.com.", RecordType::A)),
        ["192.0.2.1"]
    );
    let m = ask(&s, "example.com.", RecordType::NS);
    assert_eq!(answers(&m), ["ns1.ns.dns.example.com."]);
    assert_eq!(m.additionals[0].name.to_ascii(), "ns1.ns.dns.example.com.");
    let m = ask(&s, "example.com.", RecordType::SOA);
    let RData::SOA(soa) = &m.answers[0].data else {
        panic!("no SOA")
    };
    assert_eq!(soa.mname.to_ascii(), "ns1.ns.dns.example.com.");
    assert_eq!(soa.rname.to_ascii(), "hostmaster.example.com.");
    assert_eq!(soa.serial, 103);
}

#[test]
fn apex_without_ns_records_names_ns_dns_zone() {
    let s = snapshot(&[]);
    assert_eq!(
        answers(&ask(&s, "example.com.", RecordType::NS)),
        ["ns.dns.example.com."]
    );
    let m = ask(&s, "example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn cname_chains_inside_the_zone_are_followed_and_loops_stop() {
    let s = snapshot(&[
        (
            "/skydns/com/example/fr/svc/x",
            r#"{"host":"x.svc.europe.example.com"}"#,
        ),
        (
            "/skydns/com/example/europe/svc/x",
            r#"{"host":"x.svc.example.com"}"#,
        ),
        ("/skydns/com/example/svc/x/a", r#"{"host":"10.0.0.9"}"#),
        (
            "/skydns/com/example/loop1",
            r#"{"host":"loop2.example.com"}"#,
        ),
        (
            "/skydns/com/example/loop2",
            r#"{"host":"loop1.example.com"}"#,
        ),
        ("/skydns/com/example/out", r#"{"host":"www.example.org"}"#),
    ]);
    let m = ask(&s, "x.svc.fr.example.com.", RecordType::A);
    let types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RecordType::CNAME, RecordType::CNAME, RecordType::A]);
    assert_eq!(m.answers[2].data.to_string(), "10.0.0.9");

    let m = ask(&s, "loop1.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 2);

    let m = ask(&s, "out.example.com.", RecordType::A);
    assert_eq!(answers(&m), ["www.example.org."]);

    let m = ask(&s, "x.svc.fr.example.com.", RecordType::CNAME);
    assert_eq!(answers(&m), ["x.svc.europe.example.com."]);
}

#[test]
fn txt_mx_srv_ptr_and_aaaa() {
    let long = "x".repeat(300);
    let s = snapshot(&[
        ("/skydns/com/example/t", &format!(r#"{{"text":"{long}"}}"#)),
        (
            "/skydns/com/example/m/1",
            r#"{"host":"mail.example.com","mail":true,"priority":5}"#,
        ),
        (
            "/skydns/com/example/m/2",
            r#"{"host":"10.0.0.25","mail":true}"#,
        ),
        (
            "/skydns/com/example/s/a",
            r#"{"host":"10.0.0.1","port":80,"weight":1}"#,
        ),
        (
            "/skydns/com/example/s/b",
            r#"{"host":"10.0.0.2","port":80,"weight":3}"#,
        ),
        (
            "/skydns/com/example/s/c",
            r#"{"host":"10.0.0.3","port":-1}"#,
        ),
        ("/skydns/com/example/v6", r#"{"host":"2001:db8::1"}"#),
        (
            "/skydns/arpa/in-addr/10/0/0/127",
            r#"{"host":"reverse.example.com"}"#,
        ),
    ]);
    let m = ask(&s, "t.example.com.", RecordType::TXT);
    let RData::TXT(txt) = &m.answers[0].data else {
        panic!("no TXT")
    };
    assert_eq!(
        txt.txt_data.iter().map(|c| c.len()).collect::<Vec<_>>(),
        [255, 45]
    );

    let mx = answers(&ask(&s, "m.example.com.", RecordType::MX));
    assert_eq!(mx, ["10 2.m.example.com.", "5 mail.example.com."]);

    let m = ask(&s, "s.example.com.", RecordType::SRV);
    let mut srv: Vec<String> = answers(&m);
    srv.sort();
    assert_eq!(
        srv,
        ["10 25 80 a.s.example.com.", "10 75 80 b.s.example.com."]
    );
    assert_eq!(m.additionals.len(), 2);

    assert_eq!(
        answers(&ask(&s, "v6.example.com.", RecordType::AAAA)),
        ["2001:db8::1"]
    );
    assert_eq!(
        answers(&ask(&s, "127.0.0.10.in-addr.arpa.", RecordType::PTR)),
        ["reverse.example.com."]
    );
}

#[test]
fn externaldns_records_with_random_leaves_and_targetstrip() {
    let s = snapshot(&[
        (
            "/skydns/com/example/app/1a2b3c4d",
            r#"{"host":"10.1.0.1","text":"\"heritage=external-dns,external-dns/owner=default\"","targetstrip":1,"ttl":60}"#,
        ),
        (
            "/skydns/com/example/app/5e6f7a8b",
            r#"{"host":"10.1.0.2","targetstrip":1,"ttl":60}"#,
        ),
    ]);
    assert_eq!(
        answers(&ask(&s, "app.example.com.", RecordType::A)),
        ["10.1.0.1", "10.1.0.2"]
    );
    let m = ask(&s, "app.example.com.", RecordType::SRV);
    assert!(
        m.answers
            .iter()
            .all(|r| r.data.to_string().ends_with(" app.example.com."))
    );
    let m = ask(&s, "app.example.com.", RecordType::TXT);
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn other_types_on_an_existing_name_are_nodata_and_any_is_minimal() {
    let s = snapshot(&[("/skydns/com/example/a", r#"{"host":"10.0.0.1"}"#)]);
    let m = ask(&s, "a.example.com.", RecordType::CAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    let m = ask(&s, "a.example.com.", RecordType::ANY);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::HINFO);
}

#[test]
fn big_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let recs: Vec<(String, String)> = (0..100)
        .map(|i| {
            (
                format!("{HW}/{i:08x}"),
                format!(r#"{{"host":"10.9.{}.{}"}}"#, i / 250, i % 250),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = recs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = snapshot(&refs);
    let q = "hello-world.default.federation.svc.example.com.";
    let (m, len) = ask_with(&s, q, RecordType::A, None, Transport::Udp);
    assert!(m.metadata.truncation && m.answers.is_empty() && len <= 512);
    let (m, len) = ask_with(&s, q, RecordType::A, Some(4096), Transport::Udp);
    assert!(m.metadata.truncation && len <= 1232);
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    let (m, _) = ask_with(&s, q, RecordType::A, Some(4096), Transport::Tcp);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
}

/// Answers raw bytes over UDP.
fn udp(s: &Records, bytes: &[u8]) -> Outcome {
    respond(
        s,
        bytes,
        Transport::Udp,
        AnswerOptions::default(),
        Instant::now(),
        0,
    )
}

fn rcode_of(s: &Records, m: &Message) -> ResponseCode {
    match udp(s, &m.to_vec().expect("encode")) {
        Outcome::Reply { rcode, .. } => rcode,
        Outcome::Drop(r) => panic!("dropped: {r:?}"),
    }
}

#[test]
fn protocol_errors() {
    let s = snapshot(&[]);
    let mut m = Message::query();
    m.metadata.op_code = OpCode::Status;
    m.add_query(Query::query(name("example.com."), RecordType::A));
    assert_eq!(rcode_of(&s, &m), ResponseCode::NotImp, "non-QUERY opcode");

    let mut m = Message::query();
    m.add_query(Query::query(name("a.example.com."), RecordType::A));
    m.add_query(Query::query(name("b.example.com."), RecordType::A));
    assert_eq!(rcode_of(&s, &m), ResponseCode::FormErr, "two questions");

    let mut m = Message::query();
    m.add_query(Query::query(name("a.example.com."), RecordType::A));
    let mut e = Edns::new();
    e.set_version(1);
    m.set_edns(e);
    assert_eq!(rcode_of(&s, &m), ResponseCode::BADVERS, "EDNS version 1");

    // header fine, body garbage: FORMERR echoing the ID, header only
    let mut bytes = query_bytes("a.example.com.", RecordType::A, None);
    bytes.truncate(20);
    let Outcome::Reply {
        bytes: r, rcode, ..
    } = udp(&s, &bytes)
    else {
        panic!("dropped")
    };
    assert_eq!(
        (rcode, &r[..2], r.len()),
        (ResponseCode::FormErr, &bytes[..2], 12)
    );

    // shorter than a header, or a response: dropped
    assert_eq!(udp(&s, &[1, 2, 3]), Outcome::Drop(DropReason::Short));
    let mut resp = query_bytes("a.example.com.", RecordType::A, None);
    resp[2] |= 0x80;
    assert_eq!(udp(&s, &resp), Outcome::Drop(DropReason::NotQuery));
}

#[test]
fn before_the_first_load_everything_in_zone_is_servfail_not_nxdomain() {
    let zones = Arc::new(Zones::new("/skydns", &[name("example.com.")]));
    let s = Records::new(zones, 0);
    let m = ask(&s, "anything.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn additional_records_are_dropped_before_answers_are_truncated() {
    // 8 SRV answers (uncompressed targets, RFC 2782) fit in 512 bytes; with their glue they do not.
    let recs: Vec<(String, String)> = (0..8)
        .map(|i| {
            (
                format!("/skydns/com/example/srv/{i:08x}"),
                format!(r#"{{"host":"10.1.0.{i}","port":80}}"#),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = recs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = snapshot(&refs);
    let (m, len) = ask_with(
        &s,
        "srv.example.com.",
        RecordType::SRV,
        None,
        Transport::Udp,
    );
    assert!(len <= 512);
    assert!(
        !m.metadata.truncation,
        "answers fit once the additional section is left out"
    );
    assert_eq!(m.answers.len(), 8);
    assert!(m.additionals.is_empty());
    let (m, _) = ask_with(
        &s,
        "srv.example.com.",
        RecordType::SRV,
        None,
        Transport::Tcp,
    );
    assert_eq!(m.additionals.len(), 8, "over TCP the glue is there");
}

#[test]
fn the_apex_is_never_an_alias_and_its_own_key_is_not_read() {
    let s = snapshot(&[
        ("/skydns/com/example", r#"{"host":"elsewhere.example.org"}"#),
        (
            "/skydns/com/example/mx",
            r#"{"host":"example.com","mail":true}"#,
        ),
        ("/skydns/com/example/dns/apex/a", r#"{"host":"192.0.2.1"}"#),
    ]);
    assert_eq!(
        answers(&ask(&s, "example.com.", RecordType::A)),
        ["192.0.2.1"]
    );
    assert!(
        ask(&s, "example.com.", RecordType::CNAME)
            .answers
            .is_empty()
    );
    let m = ask(&s, "mx.example.com.", RecordType::MX);
    let glue: Vec<String> = m.additionals.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(
        glue,
        ["192.0.2.1"],
        "MX target at the apex: only the apex address as glue"
    );
}

#[test]
fn an_alias_answers_every_type_with_its_cname_and_an_address_name_has_no_cname() {
    let s = snapshot(&[
        (
            "/skydns/com/example/alias",
            r#"{"host":"target.example.com","text":"owner"}"#,
        ),
        (
            "/skydns/com/example/target",
            r#"{"host":"10.0.0.1","text":"t"}"#,
        ),
        ("/skydns/com/example/both/a", r#"{"host":"10.0.0.2"}"#),
        (
            "/skydns/com/example/both/b",
            r#"{"host":"other.example.com"}"#,
        ),
    ]);
    let m = ask(&s, "alias.example.com.", RecordType::TXT);
    let types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RecordType::CNAME, RecordType::TXT]);
    let m = ask(&s, "both.example.com.", RecordType::CNAME);
    assert!(m.answers.is_empty(), "a name with addresses is not a CNAME");
    assert_eq!(
        answers(&ask(&s, "both.example.com.", RecordType::A)),
        ["10.0.0.2"]
    );
}

#[test]
fn cname_chains_stop_after_the_limit() {
    let recs: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("/skydns/com/example/c{i}"),
                format!(r#"{{"host":"c{}.example.com"}}"#, i + 1),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = recs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = snapshot(&refs);
    let m = ask(&s, "c0.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), MAX_CNAME_CHAIN);
}

#[test]
fn a_huge_subtree_answers_at_most_what_fits_in_a_message() {
    let recs: Vec<(String, String)> = (0..6000)
        .map(|i| {
            (
                format!("{HW}/{i:08x}"),
                format!(
                    r#"{{"host":"10.{}.{}.{}"}}"#,
                    i / 65536,
                    (i / 256) % 256,
                    i % 256
                ),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = recs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = snapshot(&refs);
    let (m, len) = ask_with(
        &s,
        "svc.example.com.",
        RecordType::A,
        Some(1232),
        Transport::Tcp,
    );
    assert!(len <= 65535);
    assert!(m.answers.len() <= crate::index::MAX_NODE_RECORDS);
}

/// `n` ExternalDNS-style leaves with distinct addresses under `key`.
fn leaves(key: &str, n: u32, value: impl Fn(u32) -> String) -> Records {
    let recs: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{key}/{i:08x}"), value(i)))
        .collect();
    let refs: Vec<(&str, &str)> = recs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    snapshot(&refs)
}

fn ip(i: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(0x0a00_0000 + i)
}

/// The TC-only reply NSD and Knot send when an RRset cannot fit (compared on the wire in
/// `dns/tests/nsd_knot.rs`): the header with AA and TC, the question, the OPT when the query had
/// one, nothing else.
fn assert_tc_only(bytes: &[u8], query: &[u8], edns: bool) {
    let m = Message::from_vec(bytes).expect("parses");
    assert!(m.metadata.truncation, "TC");
    assert!(m.metadata.authoritative, "AA");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.metadata.id, 4242);
    assert!(m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty());
    // the question as asked, byte for byte, right after the header
    let qend = query.len() - if edns { 11 } else { 0 };
    assert_eq!(&bytes[12..qend], &query[12..qend]);
    assert_eq!(bytes.len(), qend + if edns { 11 } else { 0 });
    assert_eq!(m.edns.map(|e| e.max_payload()), edns.then_some(1232));
}

#[test]
fn an_answer_that_cannot_fit_is_tc_only_for_every_type_and_transport() {
    // 20,000 keys under bulk: A, SRV, MX and TXT collect 4,096 records (MAX_NODE_RECORDS)
    let s = leaves("/skydns/com/example/bulk", 20_000, |i| {
        format!(
            r#"{{"host":"{}","port":80,"mail":{},"text":"text {i}"}}"#,
            ip(i),
            i % 2 == 0,
        )
    });
    for qtype in [
        RecordType::A,
        RecordType::SRV,
        RecordType::MX,
        RecordType::TXT,
    ] {
        for edns in [None, Some(1232), Some(4096)] {
            let q = query_bytes("Bulk.example.com.", qtype, edns);
            let Outcome::Reply {
                bytes, truncated, ..
            } = udp(&s, &q)
            else {
                panic!("dropped")
            };
            assert!(truncated, "{qtype} {edns:?}");
            assert_tc_only(&bytes, &q, edns.is_some());
        }
    }
    // over TCP too, as NSD does: 4,096 A records take 65,536 bytes, more than a message holds
    let q = query_bytes("bulk.example.com.", RecordType::A, Some(1232));
    let Outcome::Reply { bytes, .. } = respond(
        &s,
        &q,
        Transport::Tcp,
        AnswerOptions::default(),
        Instant::now(),
        0,
    ) else {
        panic!("dropped")
    };
    assert_tc_only(&bytes, &q, true);
}

#[test]
fn every_owner_name_is_compressed_so_4000_addresses_fit_over_tcp() {
    // NSD and Knot: 12 + question + 16 per A record (+ 11 for the OPT); the sizes are compared
    // with theirs in dns/tests/nsd_knot.rs
    for n in [200u32, 4000] {
        let s = leaves("/skydns/com/example/b", n, |i| {
            format!(r#"{{"host":"{}"}}"#, ip(i))
        });
        let (m, len) = ask_with(&s, "b.example.com.", RecordType::A, None, Transport::Tcp);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), usize::try_from(n).expect("small"));
        assert_eq!(
            len,
            12 + 19 + 16 * usize::try_from(n).expect("small"),
            "{n}"
        );
    }
}

#[test]
fn ttls_above_2_31_go_on_the_wire_as_2_31_minus_1() {
    // RFC 2181 §8: a TTL with the top bit set is read as 0 by receivers
    let s = snapshot(&[
        (
            "/skydns/com/example/a",
            r#"{"host":"10.0.0.1","ttl":4294967295}"#,
        ),
        (
            "/skydns/com/example/b",
            r#"{"host":"10.0.0.2","ttl":2147483648}"#,
        ),
        (
            "/skydns/com/example/c",
            r#"{"host":"10.0.0.3","ttl":2147483647}"#,
        ),
        ("/skydns/com/example/t", r#"{"text":"x","ttl":4294967295}"#),
    ]);
    for n in ["a", "b", "c", "t"] {
        let qtype = if n == "t" {
            RecordType::TXT
        } else {
            RecordType::A
        };
        let m = ask(&s, &format!("{n}.example.com."), qtype);
        assert_eq!(m.answers[0].ttl, 0x7FFF_FFFF, "{n}");
    }
}

/// A query for `a.example.com. A` with EDNS whose OPT RDATA is `options`.
fn query_with_options(options: &[u8], qclass: u16) -> Vec<u8> {
    let mut q = vec![0x10, 0x92, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(b"\x01a\x07example\x03com\x00\x00\x01");
    q.extend_from_slice(&qclass.to_be_bytes());
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    q.extend_from_slice(&u16::try_from(options.len()).expect("small").to_be_bytes());
    q.extend_from_slice(options);
    q
}

#[test]
fn a_malformed_edns_option_is_formerr_and_bad_option_contents_are_ignored() {
    let s = snapshot(&[("/skydns/com/example/a", r#"{"host":"10.0.0.1"}"#)]);
    // option framing broken: FORMERR, header only (NSD; Knot adds the question)
    for options in [
        &b"\x00\x0a\x00\x0aab"[..], // a cookie claiming 10 bytes, 2 there
        &b"\x00\x0a\x00"[..],       // an option header cut short
        &b"\x00\x0c\x00\x00\x00"[..],
    ] {
        let q = query_with_options(options, 1);
        let Outcome::Reply { bytes, rcode, .. } = udp(&s, &q) else {
            panic!("dropped")
        };
        assert_eq!(rcode, ResponseCode::FormErr, "{options:?}");
        assert_eq!(bytes, [0x10, 0x92, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
    // well framed, odd contents (a 3-byte cookie, a subnet of family 7, an unknown option):
    // NSD and Knot ignore them and answer
    for options in [
        &b"\x00\x0a\x00\x03abc"[..],
        &b"\x00\x08\x00\x04\x00\x07\x00\x00"[..],
        &b"\x00\x08\x00\x05\x00\x01\x21\x00\x0a"[..],
        &b"\xfd\xe9\x00\x02ab"[..],
    ] {
        let q = query_with_options(options, 1);
        let Outcome::Reply { bytes, rcode, .. } = udp(&s, &q) else {
            panic!("dropped")
        };
        assert_eq!(rcode, ResponseCode::NoError, "{options:?}");
        let m = Message::from_vec(&bytes).expect("parses");
        assert_eq!(answers(&m), ["10.0.0.1"]);
    }
}

#[test]
fn qclass_any_answers_the_in_data_without_aa_as_nsd_does() {
    let s = snapshot(&[
        ("/skydns/com/example/a", r#"{"host":"10.0.0.1"}"#),
        ("/skydns/com/example/alias", r#"{"host":"a.example.com"}"#),
    ]);
    let ask_any = |qname: &str, qtype| {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(
            Query::query(name(qname), qtype)
                .set_query_class(DNSClass::ANY)
                .clone(),
        );
        let Outcome::Reply { bytes, .. } = udp(&s, &m.to_vec().expect("encode")) else {
            panic!("dropped")
        };
        Message::from_vec(&bytes).expect("parses")
    };
    let m = ask_any("a.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(
        !m.metadata.authoritative,
        "no server is authoritative for every class"
    );
    assert_eq!(
        m.queries[0].query_class(),
        DNSClass::ANY,
        "the question is echoed"
    );
    assert_eq!(answers(&m), ["10.0.0.1"]);
    assert_eq!(m.answers[0].dns_class, DNSClass::IN);
    // a CNAME chain is followed as for IN
    let m = ask_any("alias.example.com.", RecordType::A);
    assert_eq!(m.answers.len(), 2);
    // negative answers: the rcode, without the SOA (NSD)
    let m = ask_any("missing.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(!m.metadata.authoritative && m.authorities.is_empty());
    let m = ask_any("a.example.com.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && m.authorities.is_empty());
    // other classes stay refused, out-of-zone names too
    let m = ask_any("a.example.org.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn names_in_rdata_are_compressed_except_srv_targets() {
    let s = snapshot(&[
        (
            "/skydns/com/example/svc/a",
            r#"{"host":"target.example.com","port":80}"#,
        ),
        (
            "/skydns/com/example/mx/a",
            r#"{"host":"mail.example.com","mail":true}"#,
        ),
    ]);
    let whole_target = b"\x06target\x07example\x03com\x00";
    let (m, _) = ask_with(
        &s,
        "svc.example.com.",
        RecordType::SRV,
        None,
        Transport::Tcp,
    );
    let bytes = match respond(
        &s,
        &query_bytes("svc.example.com.", RecordType::SRV, None),
        Transport::Tcp,
        AnswerOptions::default(),
        Instant::now(),
        0,
    ) {
        Outcome::Reply { bytes, .. } => bytes,
        Outcome::Drop(r) => panic!("dropped: {r:?}"),
    };
    assert_eq!(m.answers.len(), 1);
    assert!(
        bytes.windows(whole_target.len()).any(|w| w == whole_target),
        "SRV target written whole (RFC 2782)"
    );
    // MX exchange: its label, then a pointer to example.com in the question
    let bytes = match respond(
        &s,
        &query_bytes("mx.example.com.", RecordType::MX, None),
        Transport::Tcp,
        AnswerOptions::default(),
        Instant::now(),
        0,
    ) {
        Outcome::Reply { bytes, .. } => bytes,
        Outcome::Drop(r) => panic!("dropped: {r:?}"),
    };
    let compressed = b"\x04mail\xc0\x0f";
    assert!(bytes.windows(compressed.len()).any(|w| w == compressed));
    let m = Message::from_vec(&bytes).expect("parses");
    assert_eq!(m.answers[0].data.to_string(), "10 mail.example.com.");
}

/// The records of a name in three clusters (zone fr and de of region europe, zone us of
/// america), and a map placing 127.0.0.1 in fr, 127.0.1.0/24 in europe only, 10.3.0.0/16 in
/// us, and 10.1.0.0/16 in de with 10.1.7.0/24 inside it in fr.
fn located() -> (Records, crate::topology::Topology) {
    let s = snapshot(&[
        (
            "/skydns/com/example/a/fcp",
            r#"{"host":"10.0.1.1","zone":"fr","region":"europe"}"#,
        ),
        (
            "/skydns/com/example/a/ber",
            r#"{"host":"10.0.2.1","zone":"de","region":"europe"}"#,
        ),
        (
            "/skydns/com/example/a/usa",
            r#"{"host":"10.0.3.1","zone":"us","region":"america"}"#,
        ),
        ("/skydns/com/example/plain/x", r#"{"host":"10.0.9.1"}"#),
    ]);
    let t = crate::topology::Topology::from_yaml(
        "- {cidr: 127.0.0.1/32, region: europe, zone: fr}
- {cidr: 127.0.1.0/24, region: europe}
- {cidr: 10.3.0.0/16, region: america, zone: us}
- {cidr: 10.1.0.0/16, region: europe, zone: de}
- {cidr: 10.1.7.0/24, region: europe, zone: fr}
",
    )
    .expect("valid map");
    (s, t)
}

fn ask_from(s: &Records, t: &crate::topology::Topology, from: &str, q: &[u8]) -> Outcome {
    respond_to(
        s,
        q,
        Transport::Udp,
        AnswerOptions {
            by_locality: true,
            ..AnswerOptions::default()
        },
        Instant::now(),
        0,
        Context {
            asker: Some(Asker {
                addr: from.parse().expect("ip"),
                topology: t,
            }),
            ..Context::default()
        },
    )
}

fn ecs_option(family: u16, source: u8, scope: u8, addr: &[u8]) -> Vec<u8> {
    let mut o = 8u16.to_be_bytes().to_vec();
    o.extend_from_slice(&u16::try_from(4 + addr.len()).expect("small").to_be_bytes());
    o.extend_from_slice(&family.to_be_bytes());
    o.extend_from_slice(&[source, scope]);
    o.extend_from_slice(addr);
    o
}

fn reply(o: Outcome) -> (Vec<u8>, Message) {
    let Outcome::Reply { bytes, .. } = o else {
        panic!("dropped")
    };
    let m = Message::from_vec(&bytes).expect("response parses");
    (bytes, m)
}

#[test]
fn the_client_gets_the_addresses_of_its_zone_else_its_region_else_all() {
    let (s, t) = located();
    let q = query_bytes("a.example.com.", RecordType::A, Some(1232));
    let from = |addr: &str| answers(&reply(ask_from(&s, &t, addr, &q)).1);
    assert_eq!(from("127.0.0.1"), vec!["10.0.1.1"]);
    assert_eq!(from("127.0.1.9"), vec!["10.0.1.1", "10.0.2.1"]);
    assert_eq!(from("10.3.4.5"), vec!["10.0.3.1"]);
    assert_eq!(from("10.1.7.7"), vec!["10.0.1.1"]);
    assert_eq!(from("10.1.8.8"), vec!["10.0.2.1"]);
    assert_eq!(from("192.0.2.1"), vec!["10.0.1.1", "10.0.2.1", "10.0.3.1"]);
    assert_eq!(from("::ffff:10.3.0.1"), vec!["10.0.3.1"]);
    // Without a map (or to the plain respond), everyone gets everything.
    assert_eq!(answers(&ask(&s, "a.example.com.", RecordType::A)).len(), 3);
}

#[test]
fn a_client_subnet_places_the_client_and_is_echoed_with_the_scope_of_the_answer() {
    let (s, t) = located();
    let cases: [(Vec<u8>, &[&str], u8); 7] = [
        // 10.3.9.0/24 is in 10.3.0.0/16: us, and the answer holds for that /16.
        (ecs_option(1, 24, 0, &[10, 3, 9]), &["10.0.3.1"], 16),
        // 10.1.0.0/16 (de) holds a /24 in fr that does not hold 10.1.8.0: the answer holds
        // for 10.1.8.0/21 (one bit past what 10.1.8.0 shares with 10.1.7.0).
        (ecs_option(1, 24, 0, &[10, 1, 8]), &["10.0.2.1"], 21),
        (ecs_option(1, 24, 0, &[10, 1, 7]), &["10.0.1.1"], 24),
        // Revealing only 10.1.0.0/20: placed in the /16 (de); the fr /24 at 10.1.7.0 lies in
        // that /20, so the answer holds only for 10.1.0.0/22 (a scope past the source).
        (ecs_option(1, 20, 0, &[10, 1, 0]), &["10.0.2.1"], 22),
        // No block: everything, for the /1 that no block reaches.
        (
            ecs_option(1, 24, 0, &[192, 0, 2]),
            &["10.0.1.1", "10.0.2.1", "10.0.3.1"],
            1,
        ),
        // An IPv4-mapped IPv6 subnet is the IPv4 subnet it maps: placed in us, with the
        // scope counted past the 96 bits of the mapping.
        (
            ecs_option(
                2,
                120,
                0,
                &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 3, 9],
            ),
            &["10.0.3.1"],
            112,
        ),
        // Source 0 ("do not use my address"): the answer for an unknown client, scope 0.
        (
            ecs_option(1, 0, 0, &[]),
            &["10.0.1.1", "10.0.2.1", "10.0.3.1"],
            0,
        ),
    ];
    for (option, want, scope) in cases {
        let q = query_with_options(&option, 1);
        // The source address (127.0.0.1, in fr) is not used: the subnet is.
        let (bytes, m) = reply(ask_from(&s, &t, "127.0.0.1", &q));
        assert_eq!(answers(&m), want, "{option:?}");
        let mut echoed = option.clone();
        echoed[7] = scope;
        assert!(
            bytes.ends_with(&echoed),
            "{option:?}: scope {scope} not echoed in {bytes:?}"
        );
        assert_eq!(
            usize::from(bytes[bytes.len() - echoed.len() - 1]),
            echoed.len()
        );
    }
    // A name whose records carry no locality answers everyone alike: scope 0.
    let q = [
        &b"\x10\x92\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x05plain\x07example\x03com\x00\x00\x01\x00\x01"[..],
        &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 11],
        &ecs_option(1, 24, 0, &[10, 3, 9]),
    ]
    .concat();
    let (bytes, m) = reply(ask_from(&s, &t, "127.0.0.1", &q));
    assert_eq!(answers(&m), vec!["10.0.9.1"]);
    assert!(bytes.ends_with(&ecs_option(1, 24, 0, &[10, 3, 9])));
}

#[test]
fn a_malformed_client_subnet_is_formerr_with_a_map_and_ignored_without() {
    let (s, t) = located();
    for option in [
        ecs_option(1, 24, 0, &[10, 3, 9, 0]),
        ecs_option(1, 20, 0, &[10, 3, 0x0f]),
        ecs_option(3, 0, 0, &[]),
        [ecs_option(1, 8, 0, &[10]), ecs_option(1, 8, 0, &[10])].concat(),
    ] {
        let q = query_with_options(&option, 1);
        let Outcome::Reply { rcode, .. } = ask_from(&s, &t, "127.0.0.1", &q) else {
            panic!("dropped")
        };
        assert_eq!(rcode, ResponseCode::FormErr, "{option:?}");
        let Outcome::Reply { rcode, bytes, .. } = udp(&s, &q) else {
            panic!("dropped")
        };
        assert_eq!(rcode, ResponseCode::NoError, "{option:?}");
        assert!(
            bytes.ends_with(&[0, 0]),
            "an option echoed without a map: {bytes:?}"
        );
    }
}

#[test]
fn weighted_addresses_answer_one_address_in_proportion() {
    let s = snapshot(&[
        (
            "/skydns/com/example/w/a",
            r#"{"host":"10.0.0.1","weight":3}"#,
        ),
        (
            "/skydns/com/example/w/b",
            r#"{"host":"10.0.0.2","weight":1}"#,
        ),
        (
            "/skydns/com/example/w/c",
            r#"{"host":"10.0.0.3","weight":1}"#,
        ),
        // An SRV record's weight leaves its name's A answer whole.
        (
            "/skydns/com/example/srv/a",
            r#"{"host":"10.0.1.1","port":80,"weight":5}"#,
        ),
        (
            "/skydns/com/example/srv/b",
            r#"{"host":"10.0.1.2","port":80,"weight":1}"#,
        ),
    ]);
    let q = query_bytes("w.example.com.", RecordType::A, Some(1232));
    let mut counts = std::collections::BTreeMap::new();
    for rotation in 0..10_000 {
        let Outcome::Reply { bytes, .. } = respond(
            &s,
            &q,
            Transport::Udp,
            AnswerOptions::default(),
            Instant::now(),
            rotation,
        ) else {
            panic!("dropped")
        };
        let m = Message::from_vec(&bytes).expect("parses");
        let got = answers(&m);
        assert_eq!(got.len(), 1);
        *counts.entry(got[0].clone()).or_insert(0u32) += 1;
    }
    for (ip, want) in [("10.0.0.1", 0.6), ("10.0.0.2", 0.2), ("10.0.0.3", 0.2)] {
        let share = f64::from(counts[ip]) / 10_000.0;
        assert!((share - want).abs() < 0.03, "{counts:?}");
    }
    assert_eq!(
        answers(&ask(&s, "srv.example.com.", RecordType::A)).len(),
        2
    );
}

fn ask_short(
    s: &Records,
    f: &crate::federation::Federations,
    qname: &str,
    qtype: RecordType,
) -> Message {
    let q = query_bytes(qname, qtype, Some(1232));
    let ctx = Context {
        federations: Some(f),
        ..Context::default()
    };
    let opts = AnswerOptions {
        short_names: true,
        ..AnswerOptions::default()
    };
    match respond_to(s, &q, Transport::Udp, opts, Instant::now(), 0, ctx) {
        Outcome::Reply { bytes, .. } => Message::from_vec(&bytes).expect("parses"),
        Outcome::Drop(r) => panic!("dropped: {r:?}"),
    }
}

#[test]
fn federation_short_names_alias_the_clusters_zone_level_name_and_its_chain() {
    // fedplane-controller's records: fcp (fr, europe) has no healthy endpoint, so its zone
    // name is a CNAME to the region name, which has addresses.
    let s = snapshot(&[
        (
            "/skydns/com/example/europe/fr/svc/federation/default/hello-world",
            r#"{"host":"hello-world.default.federation.svc.europe.example.com"}"#,
        ),
        (
            "/skydns/com/example/europe/svc/federation/default/hello-world/ber",
            r#"{"host":"10.210.4.68"}"#,
        ),
    ]);
    let f = crate::federation::Federations::new(
        &["federation=example.com".into()],
        "cluster.local",
        "zone=fr,region=europe",
    )
    .expect("valid");
    let m = ask_short(
        &s,
        &f,
        "hello-world.default.federation.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    let got: Vec<String> = m
        .answers
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    assert_eq!(
        got,
        vec![
            "hello-world.default.federation.svc.cluster.local. hello-world.default.federation.svc.fr.europe.example.com.",
            "hello-world.default.federation.svc.fr.europe.example.com. hello-world.default.federation.svc.europe.example.com.",
            "hello-world.default.federation.svc.europe.example.com. 10.210.4.68",
        ]
    );
    // CNAME asked: the alias alone.
    let m = ask_short(
        &s,
        &f,
        "hello-world.default.federation.svc.cluster.local.",
        RecordType::CNAME,
    );
    assert_eq!(m.answers.len(), 1);
    // Other names below the suffix: NXDOMAIN with the suffix's SOA (the zone's serial).
    for n in [
        "x.a.b.federation.svc.cluster.local.",
        "a.b.c.federation.svc.cluster.local.",
    ] {
        let m = ask_short(&s, &f, n, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{n}");
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(
            m.authorities[0].name.to_ascii(),
            "federation.svc.cluster.local."
        );
    }
    // A namespace's name has services below it: NODATA (RFC 8020), not NXDOMAIN.
    let m = ask_short(
        &s,
        &f,
        "default.federation.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(
        (
            m.metadata.response_code,
            m.answers.len(),
            m.authorities.len()
        ),
        (ResponseCode::NoError, 0, 1)
    );
    // The suffix itself: its SOA, NODATA for anything else.
    let m = ask_short(&s, &f, "federation.svc.cluster.local.", RecordType::SOA);
    assert_eq!(m.answers.len(), 1);
    let m = ask_short(&s, &f, "federation.svc.cluster.local.", RecordType::A);
    assert_eq!(
        (
            m.metadata.response_code,
            m.answers.len(),
            m.authorities.len()
        ),
        (ResponseCode::NoError, 0, 1)
    );
    // Other names outside the zones stay REFUSED.
    let m = ask_short(&s, &f, "hello.default.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

/// RFC 4592's rules with a wildcard at `*.apps.example.com` (and one at the apex's level):
/// a name that does not exist below the closest encloser takes the wildcard's records with
/// its own name; an existing name, or one whose closest encloser has no wildcard, does not.
#[test]
fn wildcards_answer_names_that_do_not_exist_below_their_closest_encloser() {
    let s = snapshot(&[
        ("/skydns/com/example/apps/*", r#"{"host":"10.5.5.5"}"#),
        ("/skydns/com/example/apps/*/t", r#"{"text":"wild"}"#),
        ("/skydns/com/example/apps/real", r#"{"host":"10.6.6.6"}"#),
        (
            "/skydns/com/example/apps/sub/deep",
            r#"{"host":"10.7.7.7"}"#,
        ),
        (
            "/skydns/com/example/alias/*",
            r#"{"host":"real.apps.example.com"}"#,
        ),
    ]);
    let a = |n: &str| {
        let m = ask(&s, n, RecordType::A);
        (
            m.metadata.response_code,
            answers(&m),
            m.answers
                .iter()
                .map(|r| r.name.to_string())
                .collect::<Vec<_>>(),
        )
    };
    let (rcode, data, owners) = a("Foo.apps.example.com.");
    assert_eq!(
        (rcode, data),
        (ResponseCode::NoError, vec!["10.5.5.5".to_owned()])
    );
    assert_eq!(
        owners,
        ["Foo.apps.example.com."],
        "the owner is the name asked"
    );
    assert_eq!(
        a("x.y.apps.example.com.").1,
        ["10.5.5.5"],
        "a wildcard covers several labels"
    );
    assert_eq!(
        a("real.apps.example.com.").1,
        ["10.6.6.6"],
        "an existing name is not the wildcard's"
    );
    let (rcode, data, _) = a("sub.apps.example.com.");
    assert_eq!(
        (rcode, data),
        (ResponseCode::NoError, vec!["10.7.7.7".to_owned()]),
        "an empty non-terminal exists"
    );
    let (rcode, data, _) = a("x.sub.apps.example.com.");
    assert_eq!(
        (rcode, data),
        (ResponseCode::NXDomain, vec![]),
        "closest encloser sub has no wildcard"
    );
    let (rcode, data, _) = a("nothing.example.com.");
    assert_eq!(
        (rcode, data),
        (ResponseCode::NXDomain, vec![]),
        "no wildcard at the apex"
    );
    let m = ask(&s, "foo.apps.example.com.", RecordType::MX);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "NODATA from the wildcard"
    );
    assert!(m.answers.is_empty());
    let m = ask(&s, "foo.apps.example.com.", RecordType::TXT);
    assert_eq!(answers(&m), ["wild"]);
    // A wildcard alias: the CNAME owned by the name asked, then its target.
    let m = ask(&s, "web.alias.example.com.", RecordType::A);
    assert_eq!(m.answers[0].name.to_string(), "web.alias.example.com.");
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(m.answers[1].data.to_string(), "10.6.6.6");
    // A label no key can spell is still below the encloser.
    let m = ask(&s, "a_b\\.c.apps.example.com.", RecordType::A);
    assert_eq!(answers(&m), ["10.5.5.5"]);
}
