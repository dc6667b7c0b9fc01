use std::sync::Arc;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;
use crate::index::Zones;
use crate::record::Record as SkyRecord;

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("valid name")
}

fn records(n: usize) -> Records {
    let zones = Arc::new(Zones::new("/skydns", &[name("example.com.")]));
    let mut s = Records::new(zones, 100);
    for i in 0..n {
        s.put(
            &format!("/skydns/com/example/svc/s{i}/c1/x"),
            SkyRecord::parse(format!(r#"{{"host":"10.0.{}.{}"}}"#, i / 256, i % 256).as_bytes())
                .expect("valid"),
            0,
            101 + i64::try_from(i).expect("small"),
        );
    }
    s.put(
        "/skydns/com/example/www",
        SkyRecord::parse(br#"{"host":"svc.example.com"}"#).expect("valid"),
        0,
        5000,
    );
    s.mark_loaded();
    s
}

fn request(qname: &str, qtype: RecordType, serial: Option<u32>, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 777;
    m.add_query(Query::query(name(qname), qtype));
    if let Some(serial) = serial {
        m.authorities.push(Record::from_rdata(
            name(qname),
            0,
            RData::SOA(SOA::new(name("a."), name("b."), serial, 1, 1, 1, 1)),
        ));
    }
    if edns {
        m.set_edns(Edns::new());
    }
    m.to_vec().expect("encode")
}

fn transfer(s: &Records, msg: &[u8]) -> Vec<Message> {
    let req = parse(s, msg).expect("a transfer");
    Stream::new(s, req, Answer::Zone, None, || 0)
        .expect("zone")
        .map(|m| Message::from_vec(&m).expect("parses"))
        .collect()
}

#[test]
fn requests_are_recognised_from_their_bytes() {
    let t = |m: &[u8]| transfer_type(m);
    assert_eq!(
        t(&request("example.com.", RecordType::AXFR, None, false)),
        Some(RecordType::AXFR)
    );
    assert_eq!(
        t(&request("Example.com.", RecordType::IXFR, Some(1), true)),
        Some(RecordType::IXFR)
    );
    assert_eq!(
        t(&request("example.com.", RecordType::SOA, None, false)),
        None
    );
    assert_eq!(t(&[0; 11]), None);
    let mut notify = request("example.com.", RecordType::AXFR, None, false);
    notify[2] |= 4 << 3;
    assert_eq!(t(&notify), None);
}

#[test]
fn axfr_is_soa_first_and_last_the_question_once_and_every_name() {
    let s = records(3000);
    let msgs = transfer(&s, &request("Example.COM.", RecordType::AXFR, None, true));
    assert!(
        msgs.len() > 3,
        "a large zone takes several messages: {}",
        msgs.len()
    );
    let all: Vec<&Record> = msgs.iter().flat_map(|m| m.answers.iter()).collect();
    let soa = all.first().expect("records");
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(all.last().expect("records").data, soa.data);
    assert_eq!(
        all.iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count(),
        2
    );
    assert_eq!(
        all[1].record_type(),
        RecordType::NS,
        "the apex NS follows the SOA"
    );
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.metadata.id, 777);
        assert!(m.metadata.authoritative);
        assert_eq!(m.queries.len(), usize::from(i == 0), "message {i}");
        assert!(
            m.edns.is_some(),
            "OPT in every message when the request had one"
        );
    }
    // Every service name, its leaf, its cluster label and the aggregates above them.
    let a = |n: &str| {
        all.iter()
            .filter(|r| r.name == name(n) && r.record_type() == RecordType::A)
            .count()
    };
    assert_eq!(a("x.c1.s2999.svc.example.com."), 1);
    assert_eq!(a("s2999.svc.example.com."), 1);
    assert_eq!(a("svc.example.com."), 3000);
    assert!(
        all.iter()
            .any(|r| r.name == name("www.example.com.") && r.record_type() == RecordType::CNAME)
    );
}

#[test]
fn ixfr_of_a_current_client_is_the_single_soa_and_of_an_old_one_the_zone() {
    let s = records(10);
    let current = s.serial(0);
    for serial in [current, current.wrapping_add(5)] {
        let msgs = transfer(
            &s,
            &request("example.com.", RecordType::IXFR, Some(serial), false),
        );
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].answers.len(), 1, "one SOA");
        assert!(matches!(&msgs[0].answers[0].data, RData::SOA(soa) if soa.serial == current));
    }
    let msgs = transfer(
        &s,
        &request("example.com.", RecordType::IXFR, Some(current - 1), false),
    );
    let all: Vec<&Record> = msgs.iter().flat_map(|m| m.answers.iter()).collect();
    assert!(all.len() > 10, "the whole zone, IXFR form");
    assert_eq!(msgs[0].queries[0].query_type(), RecordType::IXFR);
    assert_eq!(
        all[1].record_type(),
        RecordType::NS,
        "not a SOA: not incremental"
    );
}

#[test]
fn serial_arithmetic_wraps() {
    assert!(up_to_date(5, 5));
    assert!(up_to_date(3, 0xFFFF_FFF0), "3 is after 0xFFFFFFF0");
    assert!(!up_to_date(0xFFFF_FFF0, 3));
    assert!(!up_to_date(1, 2));
    assert!(!up_to_date(0, 0x8000_0000), "undefined: send the zone");
}

#[test]
fn requests_for_other_names_or_malformed_ones_get_their_error() {
    let s = records(1);
    let p = |m: &[u8]| parse(&s, m).map(|_| ()).expect_err("refused");
    assert_eq!(
        p(&request("www.example.com.", RecordType::AXFR, None, false)),
        ResponseCode::NotAuth
    );
    assert_eq!(
        p(&request("example.net.", RecordType::AXFR, None, false)),
        ResponseCode::NotAuth
    );
    assert_eq!(
        p(&request("example.com.", RecordType::IXFR, None, false)),
        ResponseCode::FormErr
    );
    assert_eq!(p(&[1, 2, 3]), ResponseCode::FormErr);
    let unloaded = Records::new(Arc::new(Zones::new("/skydns", &[name("example.com.")])), 1);
    assert_eq!(
        parse(
            &unloaded,
            &request("example.com.", RecordType::AXFR, None, false)
        )
        .map(|_| ())
        .expect_err("not loaded"),
        ResponseCode::ServFail
    );
    let r = refusal(
        &request("example.com.", RecordType::AXFR, None, true),
        ResponseCode::Refused,
        None,
        0,
    );
    let m = Message::from_vec(&r).expect("parses");
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(m.queries.len(), 1);
    assert!(m.edns.is_some());
}

#[test]
fn an_incremental_ixfr_is_our_soa_the_deltas_each_framed_by_its_soas_and_our_soa() {
    let mut s = records(3);
    let before = s.clone();
    let old_serial = s.serial(0);
    s.put(
        "/skydns/com/example/new",
        SkyRecord::parse(br#"{"host":"10.9.9.9"}"#).expect("valid"),
        0,
        9000,
    );
    s.delete("/skydns/com/example/svc/s0/c1/x", 9001);
    let deltas: Vec<Arc<crate::ixfr::Delta>> = crate::ixfr::diff(&before, &s, 1 << 20, &|| false)
        .expect("fits")
        .into_iter()
        .map(Arc::new)
        .collect();
    let req = parse(
        &s,
        &request("example.com.", RecordType::IXFR, Some(old_serial), false),
    )
    .expect("request");
    let msgs: Vec<Message> = Stream::new(&s, req, Answer::Incremental(deltas), None, || 0)
        .expect("zone")
        .map(|m| Message::from_vec(&m).expect("parses"))
        .collect();
    let all: Vec<&Record> = msgs.iter().flat_map(|m| m.answers.iter()).collect();
    let serial = |r: &Record| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    };
    let soas: Vec<(usize, u32)> = all
        .iter()
        .enumerate()
        .filter_map(|(i, r)| serial(r).map(|s| (i, s)))
        .collect();
    let new_serial = s.serial(0);
    assert_eq!(soas.first(), Some(&(0, new_serial)));
    assert_eq!(
        soas[1],
        (1, old_serial),
        "the second record is the old SOA: incremental"
    );
    assert_eq!(soas.last(), Some(&(all.len() - 1, new_serial)));
    assert_eq!(soas.len(), 4);
    let (removed, added) = (&all[2..soas[2].0], &all[soas[2].0 + 1..all.len() - 1]);
    assert!(
        removed
            .iter()
            .any(|r| r.name == name("x.c1.s0.svc.example.com."))
    );
    assert!(added.iter().any(|r| r.name == name("new.example.com.")));
    assert!(
        removed.iter().any(|r| r.name == name("svc.example.com.")),
        "the aggregate above the deleted key lost its address"
    );
}
