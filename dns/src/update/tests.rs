use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, MX, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::*;
use crate::index::Zones;

const OWNER: &str = "rfc2136/ddns";

fn name(s: &str) -> Name {
    Name::from_str(s).expect("ok")
}

fn zones() -> Arc<Zones> {
    Arc::new(Zones::new(
        "/skydns",
        &[name("example.com."), name("sub.example.com.")],
    ))
}

fn msg(zone: &str, prereqs: Vec<Record>, updates: Vec<Record>) -> Message {
    let mut m = Message::new(7, MessageType::Query, OpCode::Update);
    m.queries.push(Query::query(name(zone), RecordType::SOA));
    m.answers = prereqs;
    m.authorities = updates;
    m
}

fn add(n: &str, data: RData) -> Record {
    Record::from_rdata(name(n), 60, data)
}

fn a(ip: &str) -> RData {
    RData::A(A(ip.parse().expect("ok")))
}

fn with_class(mut r: Record, class: DNSClass, ttl: u32) -> Record {
    r.dns_class = class;
    r.ttl = ttl;
    r
}

fn del_rr(n: &str, data: RData) -> Record {
    with_class(Record::from_rdata(name(n), 0, data), DNSClass::NONE, 0)
}

fn del_rrset(n: &str, t: RecordType) -> Record {
    with_class(Record::update0(name(n), 0, t), DNSClass::ANY, 0)
}

fn prereq(n: &str, class: DNSClass, t: RecordType) -> Record {
    with_class(Record::update0(name(n), 0, t), class, 0)
}

fn kvs(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn run(m: &Message, read: &BTreeMap<String, Vec<u8>>) -> Result<Plan, UpdateError> {
    let z = zones();
    let req = check(m, &z)?;
    plan(&req, z, read, OWNER)
}

fn rcode<T: std::fmt::Debug>(r: Result<T, UpdateError>) -> ResponseCode {
    r.expect_err("fails").rcode
}

#[test]
fn an_add_becomes_one_owned_key_below_the_name() {
    let p = run(
        &msg(
            "example.com.",
            vec![],
            vec![add("web.example.com.", a("10.0.0.1"))],
        ),
        &kvs(&[]),
    )
    .expect("ok");
    assert!(p.deletes.is_empty());
    let [(k, v)] = p.puts.as_slice() else {
        panic!("{p:?}")
    };
    assert!(k.starts_with("/skydns/com/example/web/_u-"), "{k}");
    let json: serde_json::Value = serde_json::from_str(v).expect("ok");
    assert_eq!(json["host"], "10.0.0.1");
    assert_eq!(json["ttl"], 60);
    assert_eq!(json["managed-by"], OWNER);
}

#[test]
fn every_addable_type_round_trips_through_the_layout() {
    for data in [
        a("10.0.0.1"),
        RData::AAAA(
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .expect("ok")
                .into(),
        ),
        RData::CNAME(CNAME(name("target.example.org."))),
        RData::MX(MX::new(5, name("mx.example.org."))),
        RData::TXT(TXT::new(vec!["hello world".into()])),
    ] {
        let p = run(
            &msg(
                "example.com.",
                vec![],
                vec![add("x.example.com.", data.clone())],
            ),
            &kvs(&[]),
        );
        assert_eq!(p.map(|p| p.puts.len()), Ok(1), "{data}");
    }
    // Several strings are kept joined (SkyDNS holds one text), and read back as one.
    let two = RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()]));
    let p = run(
        &msg(
            "example.com.",
            vec![],
            vec![add("x.example.com.", two.clone())],
        ),
        &kvs(&[]),
    )
    .expect("ok");
    assert!(p.puts[0].1.contains(r#""text":"v=spf1 -all""#), "{p:?}");
    // Deleting it with the strings as sent finds it.
    let after: BTreeMap<String, Vec<u8>> = p
        .puts
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    let del = run(
        &msg("example.com.", vec![], vec![del_rr("x.example.com.", two)]),
        &after,
    )
    .expect("ok");
    assert_eq!(del.deletes.len(), 1);
}

#[test]
fn the_zone_section_must_name_a_served_apex() {
    let u = vec![add("web.example.com.", a("10.0.0.1"))];
    assert_eq!(
        rcode(run(&msg("example.org.", vec![], u.clone()), &kvs(&[]))),
        ResponseCode::NotAuth
    );
    assert_eq!(
        rcode(run(&msg("web.example.com.", vec![], u), &kvs(&[]))),
        ResponseCode::NotAuth
    );
    // A name of a more specific served zone is not in this one.
    let sub = vec![add("a.sub.example.com.", a("10.0.0.1"))];
    assert_eq!(
        rcode(run(&msg("example.com.", vec![], sub), &kvs(&[]))),
        ResponseCode::NotZone
    );
    let out = vec![add("a.example.org.", a("10.0.0.1"))];
    assert_eq!(
        rcode(run(&msg("example.com.", vec![], out), &kvs(&[]))),
        ResponseCode::NotZone
    );
}

#[test]
fn soa_ns_other_types_and_the_dns_label_are_refused() {
    let ns = add(
        "example.com.",
        RData::NS(hickory_proto::rr::rdata::NS(name("ns.example.com."))),
    );
    assert_eq!(
        rcode(run(&msg("example.com.", vec![], vec![ns]), &kvs(&[]))),
        ResponseCode::Refused
    );
    let ptr = add(
        "x.example.com.",
        RData::PTR(hickory_proto::rr::rdata::PTR(name("y.example.com."))),
    );
    assert_eq!(
        rcode(run(&msg("example.com.", vec![], vec![ptr]), &kvs(&[]))),
        ResponseCode::Refused
    );
    let dns = add("ns1.dns.example.com.", a("10.0.0.1"));
    assert_eq!(
        rcode(run(&msg("example.com.", vec![], vec![dns]), &kvs(&[]))),
        ResponseCode::Refused
    );
    // Deleting the apex NS or SOA is ignored.
    let p = run(
        &msg(
            "example.com.",
            vec![],
            vec![del_rrset("example.com.", RecordType::NS)],
        ),
        &kvs(&[]),
    )
    .expect("ok");
    assert!(p.is_empty());
}

#[test]
fn prerequisites_as_rfc_2136_says() {
    let read = kvs(&[("/skydns/com/example/web/c1/a", r#"{"host":"10.0.0.1"}"#)]);
    let ok = |pre: Vec<Record>| run(&msg("example.com.", pre, vec![]), &read).map(|p| p.is_empty());
    assert_eq!(
        ok(vec![prereq(
            "web.example.com.",
            DNSClass::ANY,
            RecordType::ANY
        )]),
        Ok(true)
    );
    assert_eq!(
        ok(vec![prereq(
            "web.example.com.",
            DNSClass::ANY,
            RecordType::A
        )]),
        Ok(true)
    );
    assert_eq!(
        ok(vec![prereq(
            "nope.example.com.",
            DNSClass::NONE,
            RecordType::ANY
        )]),
        Ok(true)
    );
    assert_eq!(
        ok(vec![prereq(
            "web.example.com.",
            DNSClass::NONE,
            RecordType::TXT
        )]),
        Ok(true)
    );
    assert_eq!(
        rcode(ok(vec![prereq(
            "nope.example.com.",
            DNSClass::ANY,
            RecordType::ANY
        )])),
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(ok(vec![prereq(
            "web.example.com.",
            DNSClass::ANY,
            RecordType::TXT
        )])),
        ResponseCode::NXRRSet
    );
    assert_eq!(
        rcode(ok(vec![prereq(
            "web.example.com.",
            DNSClass::NONE,
            RecordType::ANY
        )])),
        ResponseCode::YXDomain
    );
    assert_eq!(
        rcode(ok(vec![prereq(
            "web.example.com.",
            DNSClass::NONE,
            RecordType::A
        )])),
        ResponseCode::YXRRSet
    );
    // Value-dependent: the whole RRset, as a set.
    let v = |ips: &[&str]| {
        ips.iter()
            .map(|ip| with_class(add("web.example.com.", a(ip)), DNSClass::IN, 0))
            .collect::<Vec<_>>()
    };
    assert_eq!(ok(v(&["10.0.0.1"])), Ok(true));
    assert_eq!(rcode(ok(v(&["10.0.0.2"]))), ResponseCode::NXRRSet);
    assert_eq!(
        rcode(ok(v(&["10.0.0.1", "10.0.0.2"]))),
        ResponseCode::NXRRSet
    );
    // A TTL on a prerequisite is malformed.
    let ttl = with_class(
        Record::update0(name("web.example.com."), 5, RecordType::ANY),
        DNSClass::ANY,
        5,
    );
    assert_eq!(rcode(ok(vec![ttl])), ResponseCode::FormErr);
}

#[test]
fn deletes_remove_only_our_keys_and_refuse_others() {
    let ours = format!(r#"{{"host":"10.0.0.2","managed-by":"{OWNER}"}}"#);
    let read = kvs(&[
        (
            "/skydns/com/example/web/c1/a",
            r#"{"host":"10.0.0.1","managed-by":"fedplane-controller/f"}"#,
        ),
        ("/skydns/com/example/web/_u-1", &ours),
        ("/skydns/com/example/mine/_u-2", &ours),
    ]);
    // One RR of ours.
    let p = run(
        &msg(
            "example.com.",
            vec![],
            vec![del_rr("web.example.com.", a("10.0.0.2"))],
        ),
        &read,
    )
    .expect("ok");
    assert_eq!(p.deletes, vec!["/skydns/com/example/web/_u-1".to_owned()]);
    // The controller's RR, or an RRset or name holding it: refused.
    for u in [
        del_rr("web.example.com.", a("10.0.0.1")),
        del_rrset("web.example.com.", RecordType::A),
        del_rrset("web.example.com.", RecordType::ANY),
    ] {
        assert_eq!(
            rcode(run(&msg("example.com.", vec![], vec![u]), &read)),
            ResponseCode::Refused
        );
    }
    // Another key's records are another writer's.
    let z = zones();
    let req = check(
        &msg(
            "example.com.",
            vec![],
            vec![del_rrset("mine.example.com.", RecordType::ANY)],
        ),
        &z,
    )
    .expect("ok");
    assert_eq!(
        plan(&req, z.clone(), &read, "rfc2136/other")
            .expect_err("fails")
            .rcode,
        ResponseCode::Refused
    );
    assert_eq!(
        plan(&req, z, &read, OWNER).expect("ok").deletes,
        vec!["/skydns/com/example/mine/_u-2".to_owned()]
    );
    // Deleting what is not there changes nothing.
    assert!(
        run(
            &msg(
                "example.com.",
                vec![],
                vec![del_rr("web.example.com.", a("10.9.9.9"))]
            ),
            &read
        )
        .expect("ok")
        .is_empty()
    );
}

#[test]
fn cname_and_other_data_do_not_share_a_name() {
    let read = kvs(&[("/skydns/com/example/web/c1/a", r#"{"host":"10.0.0.1"}"#)]);
    let cname = add(
        "web.example.com.",
        RData::CNAME(CNAME(name("t.example.org."))),
    );
    assert!(
        run(&msg("example.com.", vec![], vec![cname]), &read)
            .expect("ok")
            .is_empty()
    );
    // A CNAME over our CNAME replaces it.
    let old = format!(r#"{{"host":"old.example.org.","managed-by":"{OWNER}"}}"#);
    let read = kvs(&[("/skydns/com/example/alias/_u-1", &old)]);
    let p = run(
        &msg(
            "example.com.",
            vec![],
            vec![add(
                "alias.example.com.",
                RData::CNAME(CNAME(name("new.example.org."))),
            )],
        ),
        &read,
    )
    .expect("ok");
    assert_eq!(p.deletes, vec!["/skydns/com/example/alias/_u-1".to_owned()]);
    assert_eq!(p.puts.len(), 1);
    // Data where a CNAME is: ignored.
    assert!(
        run(
            &msg(
                "example.com.",
                vec![],
                vec![add("alias.example.com.", a("10.0.0.3"))]
            ),
            &read
        )
        .expect("ok")
        .is_empty()
    );
}

#[test]
fn replace_is_delete_then_add_in_one_plan_and_adds_are_idempotent() {
    let ours = format!(r#"{{"host":"10.0.0.2","managed-by":"{OWNER}"}}"#);
    let read = kvs(&[("/skydns/com/example/web/_u-1", &ours)]);
    let p = run(
        &msg(
            "example.com.",
            vec![],
            vec![
                del_rrset("web.example.com.", RecordType::A),
                add("web.example.com.", a("10.0.0.3")),
            ],
        ),
        &read,
    )
    .expect("ok");
    assert_eq!(p.deletes.len(), 1);
    assert_eq!(p.puts.len(), 1);
    // The same add twice is one key; again over the result, nothing changes.
    let first = run(
        &msg(
            "example.com.",
            vec![],
            vec![add("web.example.com.", a("10.0.0.3"))],
        ),
        &kvs(&[]),
    )
    .expect("ok");
    let after: BTreeMap<String, Vec<u8>> = first
        .puts
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    assert!(
        run(
            &msg(
                "example.com.",
                vec![],
                vec![add("web.example.com.", a("10.0.0.3"))]
            ),
            &after
        )
        .expect("ok")
        .is_empty()
    );
}

#[test]
fn apex_records_live_under_the_dns_apex_key() {
    let p = run(
        &msg(
            "example.com.",
            vec![],
            vec![add(
                "example.com.",
                RData::MX(MX::new(10, name("mx.example.org."))),
            )],
        ),
        &kvs(&[]),
    )
    .expect("ok");
    assert!(
        p.puts[0].0.starts_with("/skydns/com/example/dns/apex/_u-"),
        "{p:?}"
    );
    // Deleting every RRset at the apex leaves the NS and the rest of the zone alone.
    let ours = format!(r#"{{"host":"mx.example.org.","mail":true,"managed-by":"{OWNER}"}}"#);
    let read = kvs(&[
        ("/skydns/com/example/dns/apex/_u-1", &ours),
        ("/skydns/com/example/dns/ns/ns1", r#"{"host":"10.0.0.53"}"#),
    ]);
    let p = run(
        &msg(
            "example.com.",
            vec![],
            vec![del_rrset("example.com.", RecordType::ANY)],
        ),
        &read,
    )
    .expect("ok");
    assert_eq!(
        p.deletes,
        vec!["/skydns/com/example/dns/apex/_u-1".to_owned()]
    );
}

#[test]
fn is_update_reads_the_header() {
    let m = msg("example.com.", vec![], vec![]);
    let bytes = m.to_vec().expect("ok");
    assert!(is_update(&bytes));
    let mut q = bytes.clone();
    q[2] = 0;
    assert!(!is_update(&q));
    q[2] = 0x80 | (5 << 3);
    assert!(!is_update(&q), "a response is not a request");
    assert!(!is_update(&bytes[..11]));
    let r = reply(&m, ResponseCode::Refused);
    assert_eq!(r[3] & 0x0F, 5);
    assert_eq!(r[2], 0x80 | (5 << 3));
    assert_eq!(u16::from_be_bytes([r[4], r[5]]), 1);
}

#[test]
fn adding_below_a_name_of_another_writer_is_refused() {
    // SkyDNS names hold their key and every key below: an add at evil.www would change the
    // answers of www, another writer's name.
    let read = kvs(&[
        ("/skydns/com/example/www", r#"{"host":"10.0.0.1"}"#),
        (
            "/skydns/com/example/svc/web/c1/a",
            r#"{"host":"10.0.0.2","managed-by":"fedplane-controller/f"}"#,
        ),
    ]);
    for n in [
        "evil.www.example.com.",
        "evil.web.svc.example.com.",
        "x.svc.example.com.",
    ] {
        let r = run(
            &msg("example.com.", vec![], vec![add(n, a("6.6.6.6"))]),
            &read,
        );
        assert_eq!(rcode(r), ResponseCode::Refused, "{n}");
    }
    // A name of its own, or below our own names, is fine.
    let ours = format!(r#"{{"host":"10.0.0.3","managed-by":"{OWNER}"}}"#);
    let read = kvs(&[("/skydns/com/example/team/_u-1", &ours)]);
    for n in [
        "new.example.com.",
        "app.team.example.com.",
        "a.b.team.example.com.",
    ] {
        let r = run(
            &msg("example.com.", vec![], vec![add(n, a("10.1.1.1"))]),
            &read,
        );
        assert_eq!(r.map(|p| p.puts.len()), Ok(1), "{n}");
    }
    // The names an add reads include the top one below the apex.
    let z = zones();
    let req = check(
        &msg(
            "example.com.",
            vec![],
            vec![add("a.b.team.example.com.", a("10.1.1.1"))],
        ),
        &z,
    )
    .expect("ok");
    let r = ranges(&req, "/skydns").expect("ok");
    assert!(r.contains(&"/skydns/com/example/team".to_owned()), "{r:?}");
}

#[test]
fn keys_of_a_zone_served_below_are_never_changed() {
    let ours = format!(r#"{{"host":"10.0.0.3","managed-by":"{OWNER}"}}"#);
    let zones = Arc::new(Zones::new(
        "/skydns",
        &[name("example.com."), name("z.y.example.com.")],
    ));
    let read = kvs(&[("/skydns/com/example/y/z/host/_u-1", &ours)]);
    let req = check(
        &msg(
            "example.com.",
            vec![],
            vec![del_rrset("y.example.com.", RecordType::ANY)],
        ),
        &zones,
    )
    .expect("ok");
    assert_eq!(
        plan(&req, zones, &read, OWNER).expect_err("refused").rcode,
        ResponseCode::Refused
    );
}

#[test]
fn odd_forms_get_the_rfc_answers() {
    let r = |u: Record| rcode(run(&msg("example.com.", vec![], vec![u]), &kvs(&[])));
    // TTL 0 cannot be stored (SkyDNS reads 0 as the default).
    assert_eq!(
        r(with_class(
            add("t.example.com.", a("10.0.0.1")),
            DNSClass::IN,
            0
        )),
        ResponseCode::Refused
    );
    // ANY with a meta type other than ANY is malformed (RFC 2136 §3.4.1.3).
    assert_eq!(
        r(del_rrset("t.example.com.", RecordType::AXFR)),
        ResponseCode::FormErr
    );
    // A CNAME to itself.
    let own = add(
        "c.example.com.",
        RData::CNAME(CNAME(name("c.example.com."))),
    );
    assert_eq!(r(own), ResponseCode::Refused);
    // Too many updates for one transaction: refused before any work.
    let many: Vec<Record> = (0..=MAX_TXN_OPS)
        .map(|i| {
            add(
                "m.example.com.",
                a(&format!("10.0.{}.{}", i / 256, i % 256)),
            )
        })
        .collect();
    assert_eq!(
        rcode(run(&msg("example.com.", vec![], many), &kvs(&[]))),
        ResponseCode::Refused
    );
    // The apex has an SOA RRset.
    let soa = prereq("example.com.", DNSClass::ANY, RecordType::SOA);
    assert!(run(&msg("example.com.", vec![soa], vec![]), &kvs(&[])).is_ok());
}

#[test]
fn an_add_another_key_already_holds_is_a_duplicate() {
    let z = zones();
    let u = add("d.example.com.", a("10.0.0.9"));
    let req = check(&msg("example.com.", vec![], vec![u]), &z).expect("ok");
    let first = plan(&req, z.clone(), &kvs(&[]), "rfc2136/other").expect("ok");
    let read: BTreeMap<String, Vec<u8>> = first
        .puts
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    assert!(plan(&req, z, &read, OWNER).expect("ok").is_empty());
}
