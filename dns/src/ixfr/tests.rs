use std::collections::HashSet;
use std::sync::Arc;

use hickory_proto::rr::{Name, RData};
use proptest::prelude::*;

use super::*;
use crate::index::Zones;
use crate::record::Record as SkyRecord;

fn zones() -> Arc<Zones> {
    Arc::new(Zones::new(
        "/skydns",
        &[Name::from_ascii("example.com.").expect("name")],
    ))
}

/// Every record of the zone but the SOA, as (name, ttl, data).
fn content(r: &Records) -> HashSet<(Name, u32, RData)> {
    let zone = r.zones().iter().next().expect("zone").clone();
    let mut all = zone::apex(r, &zone);
    for (key, name) in zone::names(r, 0, &zone) {
        all.extend(zone::rrsets(r, &zone, &key, &name));
    }
    all.into_iter()
        .map(|x| (x.name.to_lowercase(), x.ttl, x.data))
        .collect()
}

fn apply(mut set: HashSet<(Name, u32, RData)>, d: &Delta) -> HashSet<(Name, u32, RData)> {
    for r in &d.removed {
        assert!(
            set.remove(&(r.name.to_lowercase(), r.ttl, r.data.clone())),
            "removed {r} was not there"
        );
    }
    for r in &d.added {
        assert!(
            set.insert((r.name.to_lowercase(), r.ttl, r.data.clone())),
            "added {r} was there"
        );
    }
    set
}

fn put(r: &mut Records, key: &str, value: &str, rev: i64) {
    r.put(
        key,
        SkyRecord::parse(value.as_bytes()).expect("valid"),
        0,
        rev,
    );
}

#[derive(Debug, Clone)]
enum Change {
    Put(Vec<&'static str>, String),
    Delete(usize),
}

fn labels() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "a-b", "svc", "dns", "ns", "apex", "x"]),
        1..=3,
    )
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u8>()
            .prop_map(|o| format!(r#"{{"host":"10.0.0.{o}","ttl":{}}}"#, 30 + u32::from(o % 3))),
        any::<u8>().prop_map(|o| format!(r#"{{"text":"t{}"}}"#, o % 4)),
        Just(r#"{"host":"a.example.com"}"#.to_owned()),
        any::<u8>().prop_map(|o| format!(r#"{{"host":"10.1.1.{o}","mail":true}}"#)),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (labels(), value()).prop_map(|(l, v)| Change::Put(l, v)),
        1 => any::<usize>().prop_map(Change::Delete),
    ]
}

fn key_of(labels: &[&str]) -> String {
    let mut key = String::from("/skydns/com/example");
    for l in labels.iter().rev() {
        key.push('/');
        key.push_str(l);
    }
    key
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Applying the deltas of each step to the zone before it gives the zone after it, and
    /// the history chains them from any kept serial to the last.
    #[test]
    fn deltas_turn_each_version_into_the_next(
        start in prop::collection::vec((labels(), value()), 0..12),
        steps in prop::collection::vec(prop::collection::vec(change(), 1..5), 1..6),
    ) {
        let mut r = Records::new(zones(), 10);
        let mut rev = 10;
        for (l, v) in &start {
            rev += 1;
            put(&mut r, &key_of(l), v, rev);
        }
        r.mark_loaded();
        let mut history = History::new(100, 1 << 30);
        let mut versions = vec![(r.serial(0), content(&r))];
        for step in &steps {
            let before = r.clone();
            for c in step {
                rev += 1;
                match c {
                    Change::Put(l, v) => put(&mut r, &key_of(l), v, rev),
                    Change::Delete(i) => {
                        let keys: Vec<String> = r.entries().map(|e| e.key.to_string()).collect();
                        if !keys.is_empty() {
                            r.delete(&keys[i % keys.len()], rev);
                        }
                    }
                }
            }
            let deltas = diff(&before, &r, 1 << 30, &|| false).expect("fits");
            let after = content(&r);
            let mut set = content(&before);
            for d in &deltas {
                prop_assert_eq!(d.from(), before.serial(0));
                prop_assert_eq!(d.to(), r.serial(0));
                set = apply(set, d);
            }
            prop_assert_eq!(&set, &after);
            for d in deltas {
                history.push(d);
            }
            versions.push((r.serial(0), after));
        }
        let last = r.serial(0);
        for (serial, content_then) in &versions[..versions.len() - 1] {
            if *serial == last {
                continue;
            }
            let chain = history.chain(0, *serial, last).expect("a chain");
            let mut set = content_then.clone();
            for d in &chain {
                set = apply(set, d);
            }
            prop_assert_eq!(&set, &versions.last().expect("versions").1);
        }
    }
}

#[test]
fn the_history_keeps_its_budget_and_chains_only_what_it_holds() {
    let mut r = Records::new(zones(), 10);
    r.mark_loaded();
    let mut h = History::new(3, 1 << 20);
    let mut serials = vec![r.serial(0)];
    for i in 0..5 {
        let before = r.clone();
        put(
            &mut r,
            &format!("/skydns/com/example/n{i}"),
            r#"{"host":"10.0.0.1"}"#,
            20 + i,
        );
        for d in diff(&before, &r, 1 << 20, &|| false).expect("fits") {
            h.push(d);
        }
        serials.push(r.serial(0));
    }
    assert_eq!(h.len(), 3, "the oldest dropped");
    let last = r.serial(0);
    assert!(
        h.chain(0, serials[1], last).is_none(),
        "older than the history"
    );
    assert_eq!(h.chain(0, serials[2], last).expect("kept").len(), 3);
    assert!(
        h.chain(0, serials[2], last + 1).is_none(),
        "must end at our serial"
    );
    let mut small = History::new(100, 10);
    let before = r.clone();
    put(
        &mut r,
        "/skydns/com/example/big",
        r#"{"host":"10.0.0.2"}"#,
        99,
    );
    assert_eq!(diff(&before, &r, 10, &|| false), Err(TooLarge));
    for d in diff(&before, &r, 1 << 20, &|| false).expect("fits") {
        small.push(d);
    }
    assert!(small.is_empty(), "a delta over the byte budget is not kept");
}

#[test]
fn a_reload_without_changes_is_a_delta_with_the_serials_only() {
    let mut a = Records::new(zones(), 10);
    put(
        &mut a,
        "/skydns/com/example/x",
        r#"{"host":"10.0.0.1"}"#,
        11,
    );
    a.mark_loaded();
    let mut b = Records::new(zones(), 50);
    put(
        &mut b,
        "/skydns/com/example/x",
        r#"{"host":"10.0.0.1"}"#,
        11,
    );
    b.mark_loaded();
    let d = diff(&a, &b, 1 << 20, &|| false).expect("fits");
    assert_eq!(d.len(), 1);
    assert!(d[0].removed.is_empty() && d[0].added.is_empty());
    assert_ne!(d[0].from(), d[0].to());
}

#[test]
fn serials_that_wrap_past_2_to_the_32_chain_and_compare_by_serial_arithmetic() {
    let start: i64 = 0xFFFF_FFFE;
    let mut r = Records::new(zones(), start);
    r.mark_loaded();
    let first = r.serial(0);
    assert_eq!(first, 0xFFFF_FFFE);
    let mut h = History::new(10, 1 << 20);
    for i in 0..4 {
        let before = r.clone();
        put(
            &mut r,
            &format!("/skydns/com/example/w{i}"),
            r#"{"host":"10.0.0.9"}"#,
            start + 1 + i,
        );
        for d in diff(&before, &r, 1 << 20, &|| false).expect("fits") {
            h.push(d);
        }
    }
    let last = r.serial(0);
    assert_eq!(last, 2, "revision 2^32 + 2 is serial 2");
    assert!(
        !crate::transfer::up_to_date(first, last),
        "2 is after 0xFFFFFFFE"
    );
    assert!(crate::transfer::up_to_date(last, first));
    let chain = h.chain(0, first, last).expect("the chain crosses the wrap");
    assert_eq!(chain.len(), 4);
    assert_eq!(chain[1].from(), 0xFFFF_FFFF);
    assert_eq!(chain[2].from(), 0);
}
