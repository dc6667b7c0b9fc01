use std::sync::Arc;
use std::time::Instant;

use hickory_proto::rr::Name;

use super::*;

const A: &str = "/skydns/com/example/a";
const SUB: &str = "/skydns/com/example/sub/b";
const OK: &[u8] = br#"{"host":"10.0.0.1"}"#;
const OK2: &[u8] = br#"{"host":"10.0.0.2"}"#;
const BAD: &[u8] = b"{not json";

fn zones() -> Arc<Zones> {
    Arc::new(Zones::new(
        "/skydns",
        &[
            Name::from_ascii("example.com.").expect("name"),
            Name::from_ascii("sub.example.com.").expect("name"),
        ],
    ))
}

fn records() -> Records {
    let mut r = Records::new(zones(), 10);
    r.mark_loaded();
    r
}

fn put(key: &str, value: &'static [u8], lease: i64, revision: i64) -> Change<'static> {
    let key: &'static str = Box::leak(key.to_owned().into_boxed_str());
    Change::Put(Kv {
        key: key.as_bytes(),
        value,
        lease,
        revision,
    })
}

fn delete(key: &'static str, revision: i64) -> Change<'static> {
    Change::Delete {
        key: key.as_bytes(),
        revision,
    }
}

fn serial(r: &Records, zone: &str) -> u32 {
    let (zi, _) = r
        .zones()
        .find(&Name::from_ascii(zone).expect("name"))
        .expect("served");
    r.serial(zi)
}

fn hosts(r: &Records, key: &str) -> Vec<String> {
    r.node(key)
        .iter()
        .map(|e| format!("{:?}", e.record.host))
        .collect()
}

#[test]
fn a_valid_put_is_stored_and_moves_the_revision_and_its_zone_serial() {
    let (mut r, mut invalid) = (records(), InvalidKeys::default());
    let applied = apply(&mut r, &mut invalid, [put(A, OK, 0, 11)]);
    assert_eq!(applied.changed, [A]);
    assert!(applied.rejected.is_empty() && applied.new_leases.is_empty());
    assert_eq!(hosts(&r, A), ["V4(10.0.0.1)"]);
    assert_eq!(r.revision(), 11);
    assert_eq!(serial(&r, "example.com."), 11);
    assert_eq!(
        serial(&r, "sub.example.com."),
        10,
        "another zone keeps its serial"
    );
}

#[test]
fn an_invalid_value_drops_the_old_record_and_is_reported_once_per_value() {
    let (mut r, mut invalid) = (records(), InvalidKeys::default());
    apply(&mut r, &mut invalid, [put(A, OK, 0, 11)]);
    let applied = apply(&mut r, &mut invalid, [put(A, BAD, 0, 12)]);
    assert_eq!(applied.changed, [A]);
    let [rejected] = applied.rejected.as_slice() else {
        panic!("one rejected value: {:?}", applied.rejected)
    };
    assert_eq!((rejected.key.as_str(), rejected.revision), (A, 12));
    assert!(r.node(A).is_empty(), "the old value is gone");
    assert_eq!(serial(&r, "example.com."), 12);
    assert_eq!(invalid.get(A), Some(12));
    assert_eq!(invalid.len(), 1);

    // The same value seen again (a replayed event) is not reported again.
    let again = apply(&mut r, &mut invalid, [put(A, BAD, 0, 12)]);
    assert!(again.rejected.is_empty());
    // Another invalid value is.
    let other = apply(&mut r, &mut invalid, [put(A, BAD, 0, 13)]);
    assert_eq!(other.rejected.len(), 1);
    // A valid value makes the key valid again.
    apply(&mut r, &mut invalid, [put(A, OK2, 0, 14)]);
    assert!(invalid.is_empty());
    assert_eq!(hosts(&r, A), ["V4(10.0.0.2)"]);
}

#[test]
fn a_delete_removes_the_key_and_forgets_it_was_invalid() {
    let (mut r, mut invalid) = (records(), InvalidKeys::default());
    apply(
        &mut r,
        &mut invalid,
        [put(A, OK, 0, 11), put(SUB, BAD, 0, 12)],
    );
    assert_eq!(invalid.len(), 1);
    let applied = apply(&mut r, &mut invalid, [delete(A, 13), delete(SUB, 14)]);
    assert_eq!(applied.changed, [A, SUB]);
    assert!(r.is_empty());
    assert!(invalid.is_empty());
    assert_eq!(r.revision(), 14);
    assert_eq!(serial(&r, "example.com."), 13);
    // SUB never held a record (its only value was invalid): its zone's serial never moved.
    assert_eq!(serial(&r, "sub.example.com."), 10);
    // Deleting a key never stored moves only the revision.
    apply(
        &mut r,
        &mut invalid,
        [delete("/skydns/com/example/never", 15)],
    );
    assert_eq!((r.revision(), serial(&r, "example.com.")), (15, 13));
}

#[test]
fn unknown_leases_of_puts_are_listed_once_and_in_order() {
    let (mut r, mut invalid) = (records(), InvalidKeys::default());
    r.set_lease_deadline(5, Instant::now());
    let applied = apply(
        &mut r,
        &mut invalid,
        [
            put(A, OK, 9, 11),
            put("/skydns/com/example/b", OK, 7, 12),
            put("/skydns/com/example/c", OK, 9, 13),
            put("/skydns/com/example/d", OK, 5, 14),  // known
            put("/skydns/com/example/e", OK, 0, 15),  // none
            put("/skydns/com/example/f", BAD, 3, 16), // invalid values' leases too
        ],
    );
    assert_eq!(applied.new_leases, [3, 7, 9]);
    assert_eq!(r.node(A)[0].lease, 9);
}

#[test]
fn keys_outside_the_zones_are_skipped_unreported() {
    let (mut r, mut invalid) = (records(), InvalidKeys::default());
    let outside = "/skydns/org/example/x";
    let applied = apply(
        &mut r,
        &mut invalid,
        [
            put(outside, BAD, 0, 11),
            Change::Put(Kv {
                key: b"/skydns/org/example/\xff",
                value: OK,
                lease: 0,
                revision: 12,
            }),
        ],
    );
    assert_eq!(
        applied.changed,
        [outside],
        "keys that are not UTF-8 are not named"
    );
    assert!(
        applied.rejected.is_empty(),
        "values outside the zones are not read"
    );
    assert!(r.is_empty() && invalid.is_empty());
    assert_eq!(r.revision(), 12);
    assert_eq!(serial(&r, "example.com."), 10);
}

/// Keys in a served zone that no query can reach, as a load and a watch batch see them.
fn unreachable_keys() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (b"/skydns/com/example//x".to_vec(), "empty_label"),
        (b"/skydns/com/example/x/".to_vec(), "empty_label"),
        (b"/skydns/com/example/Www".to_vec(), "upper_case"),
        (b"/skydns/com/Example/www".to_vec(), "upper_case"),
        ("/skydns/com/example/café".as_bytes().to_vec(), "not_ascii"),
        (b"/skydns/com/example/\xff".to_vec(), "not_utf8"),
        (b"/skydns/com/example/a.b".to_vec(), "unusable_byte"),
        (
            format!("/skydns/com/example/svc/{}", "a".repeat(64)).into_bytes(),
            "label_too_long",
        ),
    ]
}

#[test]
fn keys_no_query_can_reach_are_left_out_and_reported_once_by_a_watch() {
    let (mut r, mut invalid) = (records(), InvalidKeys::default());
    let keys = unreachable_keys();
    let batch = |rev: i64| {
        keys.iter().map(move |(k, _)| {
            Change::Put(Kv {
                key: k,
                value: OK,
                lease: 0,
                revision: rev,
            })
        })
    };
    let applied = apply(&mut r, &mut invalid, batch(11));
    let reasons: Vec<&str> = applied.rejected.iter().map(Rejected::reason).collect();
    let want: Vec<&str> = keys.iter().map(|(_, why)| *why).collect();
    assert_eq!(reasons, want);
    assert_eq!(applied.rejected[5].key, r"/skydns/com/example/\xff");
    assert!(
        applied.rejected[2]
            .error
            .to_string()
            .contains("upper-case letters"),
        "{}",
        applied.rejected[2].error
    );
    assert!(r.is_empty(), "none is stored");
    assert_eq!(serial(&r, "example.com."), 10, "nothing answered changed");
    assert_eq!(invalid.len(), keys.len());
    // Read again at the same revision: not reported again; at a new one: reported.
    assert!(apply(&mut r, &mut invalid, batch(11)).rejected.is_empty());
    assert_eq!(
        apply(&mut r, &mut invalid, batch(12)).rejected.len(),
        keys.len()
    );
    // Deleted, they are forgotten (not UTF-8 either).
    let deletes = keys.iter().map(|(k, _)| Change::Delete {
        key: k,
        revision: 13,
    });
    apply(&mut r, &mut invalid, deletes);
    assert!(invalid.is_empty());
}

#[test]
fn a_load_leaves_out_and_reports_the_same_keys_as_a_watch() {
    let keys = unreachable_keys();
    let mut load = Load::new(zones(), 20);
    let kvs = keys.iter().map(|(k, _)| Kv {
        key: k,
        value: OK,
        lease: 0,
        revision: 19,
    });
    let rejected = load.page(&InvalidKeys::default(), kvs.clone());
    let reasons: Vec<&str> = rejected.iter().map(Rejected::reason).collect();
    let want: Vec<&str> = keys.iter().map(|(_, why)| *why).collect();
    assert_eq!(reasons, want);
    let (r, invalid) = load.finish(20);
    assert!(r.is_empty());
    assert_eq!(invalid.len(), keys.len());
    // A reload reading them again does not report them again.
    let mut again = Load::new(zones(), 30);
    assert!(again.page(&invalid, kvs).is_empty());
}

#[test]
fn a_key_with_a_label_over_63_bytes_never_makes_a_root_target() {
    use crate::answer::{AnswerOptions, Outcome, Transport, respond};
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::RecordType;

    let (mut r, mut invalid) = (records(), InvalidKeys::default());
    let long = format!("/skydns/com/example/svc/{}", "a".repeat(64));
    let srv = br#"{"host":"10.0.0.1","port":80}"#;
    let applied = apply(
        &mut r,
        &mut invalid,
        [
            put(&long, srv, 0, 11),
            put("/skydns/com/example/svc/ok", srv, 0, 12),
        ],
    );
    assert_eq!(applied.rejected.len(), 1);
    assert_eq!(applied.rejected[0].reason(), "label_too_long");
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("svc.example.com.").expect("name"),
        RecordType::SRV,
    ));
    let q = q.to_vec().expect("encode");
    let Outcome::Reply { bytes, .. } = respond(
        &r,
        &q,
        Transport::Tcp,
        AnswerOptions::default(),
        Instant::now(),
        0,
    ) else {
        panic!("answered")
    };
    let m = Message::from_vec(&bytes).expect("parses");
    let targets: Vec<String> = m.answers.iter().map(|a| a.data.to_string()).collect();
    assert_eq!(targets, ["10 100 80 ok.svc.example.com."]);
    let extra: Vec<String> = m.additionals.iter().map(|a| a.name.to_string()).collect();
    assert_eq!(extra, ["ok.svc.example.com."]);
}

#[test]
fn a_batch_over_several_zones_moves_each_zone_serial_to_its_last_change() {
    let (mut r, mut invalid) = (records(), InvalidKeys::default());
    apply(
        &mut r,
        &mut invalid,
        [
            put(SUB, OK, 0, 20),
            put(A, OK, 0, 21),
            put("/skydns/com/example/sub/c", OK, 0, 22),
            delete(A, 23),
            put("/skydns/com/example/z", OK, 0, 24),
            put("/skydns/com/example/sub/d", OK, 0, 25),
        ],
    );
    assert_eq!(serial(&r, "example.com."), 24);
    assert_eq!(serial(&r, "sub.example.com."), 25);
    assert_eq!(r.revision(), 25);
    assert_eq!(r.len(), 4);
}

#[test]
fn a_load_reports_only_values_not_reported_before_and_ends_loaded() {
    let mut reported = InvalidKeys::default();
    let mut first = Load::new(zones(), 30);
    let kv = |key: &'static str, value: &'static [u8], revision| Kv {
        key: key.as_bytes(),
        value,
        lease: 0,
        revision,
    };
    let rejected = first.page(&reported, [kv(A, BAD, 29), kv(SUB, OK, 28)]);
    assert_eq!(rejected.len(), 1);
    assert_eq!(first.len(), 1);
    let (r, invalid) = first.finish(30);
    assert!(r.is_loaded());
    assert_eq!(r.revision(), 30);
    assert_eq!(serial(&r, "example.com."), 30);
    assert_eq!(invalid.get(A), Some(29));
    reported = invalid;

    // A reload reading the same bad value does not report it again, and forgets keys that
    // became valid.
    let mut second = Load::new(zones(), 40);
    assert!(second.page(&reported, [kv(A, BAD, 29)]).is_empty());
    assert_eq!(second.page(&reported, [kv(SUB, BAD, 35)]).len(), 1);
    let (_, invalid) = second.finish(40);
    assert_eq!(invalid.len(), 2);
    let mut third = Load::new(zones(), 50);
    third.page(&invalid, [kv(A, OK, 45)]);
    assert!(third.finish(50).1.is_empty());
}
