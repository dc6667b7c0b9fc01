use std::collections::BTreeSet;
use std::sync::Arc;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;

use super::*;
use crate::answer::{AnswerOptions, Outcome, Transport, respond};
use crate::index::Zones;
use crate::record::Record as SkyRecord;

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("valid name")
}

fn records(pairs: &[(String, String)]) -> Records {
    let zones = Arc::new(Zones::new(
        "/skydns",
        &[name("example.com."), name("sub.example.com.")],
    ));
    let mut s = Records::new(zones, 100);
    for (i, (k, v)) in pairs.iter().enumerate() {
        let rev = 101 + i64::try_from(i).expect("small");
        s.put(k, SkyRecord::parse(v.as_bytes()).expect("valid"), 0, rev);
    }
    s.mark_loaded();
    s
}

fn all_names(s: &Records, zi: usize) -> Vec<String> {
    let zone = s.zones().iter().nth(zi).expect("zone").clone();
    names(s, zi, &zone).map(|(_, n)| n.to_string()).collect()
}

/// The answer records of a TCP query for `qname`/`qtype`, as sorted strings (TTL included).
fn asked(s: &Records, qname: &Name, qtype: RecordType) -> BTreeSet<String> {
    let mut m = Message::query();
    m.add_query(Query::query(qname.clone(), qtype));
    let bytes = m.to_vec().expect("encode");
    let Outcome::Reply { bytes, .. } = respond(
        s,
        &bytes,
        Transport::Tcp,
        AnswerOptions::default(),
        Instant::now(),
        0,
    ) else {
        panic!("dropped");
    };
    let m = Message::from_vec(&bytes).expect("parses");
    m.answers
        .iter()
        .filter(|r| r.name.to_lowercase() == qname.to_lowercase())
        .map(ToString::to_string)
        .collect()
}

fn shown(records: &[Record], qtype: RecordType) -> BTreeSet<String> {
    records
        .iter()
        .filter(|r| r.record_type() == qtype)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn every_key_and_every_ancestor_is_a_name_once_in_key_order() {
    let s = records(&[
        (
            "/skydns/com/example/a".into(),
            r#"{"host":"10.0.0.1"}"#.into(),
        ),
        (
            "/skydns/com/example/a-b".into(),
            r#"{"host":"10.0.0.2"}"#.into(),
        ),
        (
            "/skydns/com/example/a/x/y".into(),
            r#"{"host":"10.0.0.3"}"#.into(),
        ),
        (
            "/skydns/com/example/a/x/z".into(),
            r#"{"host":"10.0.0.4"}"#.into(),
        ),
        (
            "/skydns/com/example/b/c/d".into(),
            r#"{"host":"10.0.0.5"}"#.into(),
        ),
        (
            "/skydns/com/example/sub/w".into(),
            r#"{"host":"10.0.0.6"}"#.into(),
        ),
    ]);
    assert_eq!(
        all_names(&s, 1),
        [
            "a.example.com.",
            "a-b.example.com.",
            "x.a.example.com.",
            "y.x.a.example.com.",
            "z.x.a.example.com.",
            "b.example.com.",
            "c.b.example.com.",
            "d.c.b.example.com.",
        ],
        "the zone served below (sub) is not in the parent's names"
    );
    assert_eq!(all_names(&s, 0), ["w.sub.example.com."]);
}

#[test]
fn the_apex_has_ns_and_its_own_data_and_the_soa_is_the_answered_one() {
    let s = records(&[
        (
            "/skydns/com/example/dns/apex".into(),
            r#"{"host":"10.9.9.9"}"#.into(),
        ),
        (
            "/skydns/com/example/dns/apex/t".into(),
            r#"{"text":"hello"}"#.into(),
        ),
        (
            "/skydns/com/example/dns/ns/ns1".into(),
            r#"{"host":"10.0.0.53"}"#.into(),
        ),
    ]);
    let zone = s.zones().iter().nth(1).expect("zone").clone();
    let apex = apex(&s, &zone);
    let zname = name("example.com.");
    for t in [RecordType::NS, RecordType::A, RecordType::TXT] {
        assert_eq!(shown(&apex, t), asked(&s, &zname, t), "{t}");
    }
    assert!(!shown(&apex, RecordType::NS).is_empty());
    assert_eq!(
        BTreeSet::from([soa(&s, 1, &zone).to_string()]),
        asked(&s, &zname, RecordType::SOA)
    );
}

#[test]
fn a_transfer_carries_every_weighted_address_and_the_records_own_ttl() {
    let s = records(&[
        (
            "/skydns/com/example/w/1".into(),
            r#"{"host":"10.0.0.1","weight":3,"ttl":60}"#.into(),
        ),
        (
            "/skydns/com/example/w/2".into(),
            r#"{"host":"10.0.0.2","weight":1,"ttl":60}"#.into(),
        ),
    ]);
    let zone = s.zones().iter().nth(1).expect("zone").clone();
    let got = rrsets(&s, &zone, "/skydns/com/example/w", &name("w.example.com."));
    assert_eq!(shown(&got, RecordType::A).len(), 2, "{got:?}");
    assert!(got.iter().all(|r| r.ttl == 60));
}

fn label() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "ab", "a-b", "x1", "_tcp", "mail"]).prop_map(str::to_owned)
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| format!(
            r#"{{"host":"10.{}.{}.{}","ttl":{}}}"#,
            o[0],
            o[1],
            o[2],
            30 + u32::from(o[3])
        )),
        any::<u8>().prop_map(|o| format!(r#"{{"host":"fd00::{o:x}"}}"#)),
        prop::sample::select(vec![
            "target.example.com",
            "out.example.net",
            "a.example.com"
        ])
        .prop_map(|t| format!(r#"{{"host":"{t}"}}"#)),
        any::<u8>().prop_map(|o| format!(r#"{{"text":"t{o}"}}"#)),
        any::<u8>().prop_map(|o| format!(r#"{{"host":"10.1.1.{o}","mail":true,"priority":{o}}}"#)),
        any::<u8>().prop_map(|o| format!(r#"{{"host":"mx{o}.example.net","mail":true}}"#)),
        any::<u16>()
            .prop_map(|p| format!(r#"{{"host":"10.2.2.2","port":{p},"weight":{}}}"#, p % 7)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every name of the transfer holds, per type, exactly what a TCP query for it answers
    /// (aliases hold their CNAME, as a CNAME query answers), and every name that answers
    /// something is in the transfer.
    #[test]
    fn a_transfer_holds_what_queries_answer(
        recs in prop::collection::vec((prop::collection::vec(label(), 1..=3), value()), 1..24)
    ) {
        let pairs: Vec<(String, String)> = recs
            .iter()
            .map(|(labels, v)| {
                let mut key = String::from("/skydns/com/example");
                for l in labels.iter().rev() {
                    key.push('/');
                    key.push_str(l);
                }
                (key, v.clone())
            })
            .collect();
        let s = records(&pairs);
        let zone = s.zones().iter().nth(1).expect("zone").clone();
        let listed: Vec<(String, Name)> = names(&s, 1, &zone).collect();
        let distinct: BTreeSet<&Name> = listed.iter().map(|(_, n)| n).collect();
        prop_assert_eq!(distinct.len(), listed.len(), "each name once: {:?}", listed);
        for (key, owner) in &listed {
            let got = rrsets(&s, &zone, key, owner);
            if got.iter().any(|r| r.record_type() == RecordType::CNAME) {
                prop_assert_eq!(got.len(), 1, "an alias holds its CNAME alone");
                prop_assert_eq!(shown(&got, RecordType::CNAME), asked(&s, owner, RecordType::CNAME));
                continue;
            }
            for t in TYPES {
                prop_assert_eq!(shown(&got, t), asked(&s, owner, t), "{} {}", owner, t);
            }
        }
        // Every stored key's name is listed.
        for (key, _) in &pairs {
            let n = key_to_name("/skydns", key).expect("name");
            prop_assert!(distinct.contains(&n), "{} missing", n);
        }
    }
}
