//! Property tests: random record sets answer exactly their records; random bytes never panic
//! and never get an answer larger than the query allows.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use proptest::prelude::*;

use super::*;
use crate::index::{Records, Zones};
use crate::record::Record as SkyRecord;

fn zone() -> Arc<Zones> {
    Arc::new(Zones::new(
        "/skydns",
        &[Name::from_ascii("example.com.").expect("name")],
    ))
}

/// A name below example.com.: 1–3 labels from a small alphabet, so that names nest and share
/// prefixes (`a`, `a-b`, `ab`) often.
fn label() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "ab", "a-b", "x1", "svc", "fr"]).prop_map(str::to_owned)
}

fn owner() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(label(), 1..=3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Model: a name answers the A records stored at its key or anywhere below it (SkyDNS).
    #[test]
    fn every_stored_name_answers_exactly_its_records(
        recs in prop::collection::vec((owner(), any::<u32>(), any::<bool>()), 1..40)
    ) {
        let mut s = Records::new(zone(), 1);
        let mut stored: Vec<(Vec<String>, Ipv4Addr)> = Vec::new();
        for (i, (labels, ip, leaf)) in recs.iter().enumerate() {
            let ip = Ipv4Addr::from(*ip);
            let mut key = String::from("/skydns/com/example");
            for l in labels.iter().rev() {
                key.push('/');
                key.push_str(l);
            }
            if *leaf {
                key.push_str(&format!("/{i:08x}")); // ExternalDNS-style random leaf
            }
            let rec = SkyRecord::parse(format!(r#"{{"host":"{ip}"}}"#).as_bytes()).expect("valid");
            s.put(&key, rec, 0, 2 + i64::try_from(i).expect("small"));
            stored.push((labels.clone(), ip));
        }
        s.mark_loaded();
        // The snapshot keeps the last value per key; rebuild the model from the snapshot's
        // own keys so overwritten keys count once.
        let model: Vec<(Vec<String>, Ipv4Addr)> = s
            .entries()
            .map(|e| {
                let mut labels: Vec<String> = e.key.trim_start_matches("/skydns/com/example/")
                    .split('/').map(str::to_owned).collect();
                if labels.last().is_some_and(|l| l.len() == 8) { labels.pop(); }
                labels.reverse();
                let crate::record::Host::V4(ip) = e.record.host else { unreachable!() };
                (labels, ip)
            })
            .collect();
        for (labels, _) in &stored {
            let qname = format!("{}.example.com.", labels.join("."));
            let want: BTreeSet<Ipv4Addr> = model
                .iter()
                .filter(|(l, _)| l.len() >= labels.len() && l[l.len() - labels.len()..] == labels[..])
                .map(|(_, ip)| *ip)
                .collect();
            let mut q = Message::query();
            q.add_query(Query::query(Name::from_ascii(&qname).expect("name"), RecordType::A));
            let Outcome::Reply { bytes, .. } =
                respond(&s, &q.to_vec().expect("enc"), Transport::Tcp, AnswerOptions::default(), Instant::now(), 0)
            else { panic!("dropped") };
            let m = Message::from_vec(&bytes).expect("parse");
            let got: BTreeSet<Ipv4Addr> = m.answers.iter().filter_map(|r| match r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            }).collect();
            prop_assert_eq!(got, want, "{}", qname);
        }
    }

    #[test]
    fn random_bytes_never_panic_and_stay_within_512(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let s = big_snapshot();
        if let Outcome::Reply { bytes: out, .. } =
            respond(&s, &bytes, Transport::Udp, AnswerOptions::default(), Instant::now(), 0)
        {
            let limit = Message::from_vec(&bytes)
                .ok()
                .and_then(|m| m.edns.map(|e| e.max_payload().clamp(512, 1232)))
                .unwrap_or(512);
            prop_assert!(out.len() <= usize::from(limit));
        }
    }

    /// Well-formed queries with any EDNS size: the answer fits what the query allows.
    #[test]
    fn answers_fit_the_advertised_payload(
        edns in prop::option::of(0u16..=u16::MAX),
        qtype in prop::sample::select(vec![RecordType::A, RecordType::SRV, RecordType::TXT, RecordType::ANY, RecordType::NS]),
        mangle in prop::collection::vec((0usize..64, any::<u8>()), 0..4),
    ) {
        let s = big_snapshot();
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii("big.example.com.").expect("name"), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            q.set_edns(e);
        }
        let mut bytes = q.to_vec().expect("enc");
        for (i, b) in mangle {
            if let Some(x) = bytes.get_mut(i) { *x = b; }
        }
        let limit = Message::from_vec(&bytes).ok()
            .and_then(|m| m.edns.map(|e| e.max_payload().clamp(512, 1232)))
            .unwrap_or(512);
        if let Outcome::Reply { bytes: out, .. } =
            respond(&s, &bytes, Transport::Udp, AnswerOptions::default(), Instant::now(), 0)
        {
            prop_assert!(out.len() <= usize::from(limit), "{} > {}", out.len(), limit);
        }
    }
}

fn big_snapshot() -> Records {
    let mut s = Records::new(zone(), 1);
    for i in 0u32..200 {
        let v = format!(
            r#"{{"host":"{}","port":80,"text":"{}"}}"#,
            Ipv4Addr::from(0x0a00_0000 + i),
            "t".repeat(40)
        );
        s.put(
            &format!("/skydns/com/example/big/{i:08x}"),
            SkyRecord::parse(v.as_bytes()).expect("valid"),
            0,
            2,
        );
    }
    s.mark_loaded();
    s
}

/// Records under one name: `n` leaves (SRV-, MX- and TXT-capable, some IPv6, some repeated),
/// with no group, or two groups taking turns below a record of the name that picks one.
fn grouped_bulk(n: usize, groups: bool) -> Records {
    let mut s = Records::new(zone(), 1);
    let group = |i: usize| {
        if groups {
            format!(r#","group":"g{}""#, i % 2 + 1)
        } else {
            String::new()
        }
    };
    if groups {
        s.put(
            "/skydns/com/example/many",
            SkyRecord::parse(br#"{"host":"10.3.0.1","group":"g1","port":53}"#).expect("valid"),
            0,
            2,
        );
    }
    for i in 0..n {
        let host = match i % 7 {
            6 => format!("fd00::{:x}", i % 50),
            _ => Ipv4Addr::from(0x0a00_0000 + u32::try_from(i % 300).expect("small")).to_string(),
        };
        let v = format!(
            r#"{{"host":"{host}","port":{},"mail":{},"text":"t{}"{}}}"#,
            80 + i % 3,
            i % 2 == 0,
            i % 40,
            group(i)
        );
        s.put(
            &format!("/skydns/com/example/many/{i:08x}"),
            SkyRecord::parse(v.as_bytes()).expect("valid"),
            0,
            2,
        );
    }
    s.mark_loaded();
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Over UDP the answer is the TCP answer when that fits the client's payload, and TC-only
    /// (header with AA and TC, the question as asked, the OPT when the query had one) when it
    /// does not: collecting stops early, never too early. Names with groups and with more than
    /// 64 records.
    #[test]
    fn udp_answers_are_the_tcp_answer_or_tc_only(
        n in 1usize..700,
        groups in any::<bool>(),
        qtype in prop::sample::select(vec![RecordType::A, RecordType::AAAA, RecordType::SRV, RecordType::MX, RecordType::TXT, RecordType::ANY]),
        edns in prop::option::of(0u16..5000),
        rotation in 0usize..5,
    ) {
        let s = grouped_bulk(n, groups);
        let mut q = Message::query();
        q.metadata.id = 99;
        q.add_query(Query::query(Name::from_ascii("Many.example.com.").expect("name"), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            q.set_edns(e);
        }
        let q = q.to_vec().expect("enc");
        let ask = |t| match respond(&s, &q, t, AnswerOptions::default(), Instant::now(), rotation) {
            Outcome::Reply { bytes, truncated, .. } => (bytes, truncated),
            Outcome::Drop(r) => panic!("dropped: {r:?}"),
        };
        let ((tcp, tcp_tc), (udp, udp_tc)) = (ask(Transport::Tcp), ask(Transport::Udp));
        prop_assert!(!tcp_tc);
        let limit = usize::from(edns.map_or(512, |e| e.clamp(512, 1232)));
        let (tm, um) = (Message::from_vec(&tcp).expect("tcp"), Message::from_vec(&udp).expect("udp"));
        prop_assert_eq!(um.metadata.truncation, udp_tc);
        prop_assert!(udp.len() <= limit);
        let opt = if edns.is_some() { 11 } else { 0 };
        // TC exactly when the TCP answer, without its additional records, exceeds the limit
        prop_assert_eq!(udp_tc, fedplane_testkit::sections_end(&tcp, 2) + opt > limit, "{} answers", tm.answers.len());
        if udp_tc {
            // TC-only: nothing but the question (as asked) and the OPT
            prop_assert!(um.answers.is_empty() && um.authorities.is_empty() && um.additionals.is_empty());
            prop_assert!(um.metadata.authoritative);
            prop_assert_eq!(um.metadata.id, 99);
            prop_assert_eq!(&udp[12..q.len() - opt], &q[12..q.len() - opt]);
            prop_assert_eq!(udp.len(), q.len());
            prop_assert_eq!(um.edns.is_some(), edns.is_some());
        } else {
            prop_assert_eq!(&um.answers, &tm.answers);
            prop_assert_eq!(&um.authorities, &tm.authorities);
            prop_assert!(um.additionals.is_empty() || um.additionals == tm.additionals);
        }
    }
}
