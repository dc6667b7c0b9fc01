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
    assert_eq!(applied.unreadable_keys, 0);
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
fn keys_outside_the_zones_and_unreadable_keys_are_not_stored() {
    let (mut r, mut invalid) = (records(), InvalidKeys::default());
    let outside = "/skydns/org/example/x";
    let applied = apply(
        &mut r,
        &mut invalid,
        [
            put(outside, BAD, 0, 11),
            Change::Put(Kv {
                key: b"/skydns/com/example/\xff",
                value: OK,
                lease: 0,
                revision: 12,
            }),
        ],
    );
    assert_eq!(applied.changed, [outside], "unreadable keys are not named");
    assert_eq!(applied.unreadable_keys, 1);
    assert!(
        applied.rejected.is_empty(),
        "values outside the zones are not read"
    );
    assert!(r.is_empty() && invalid.is_empty());
    assert_eq!(r.revision(), 12);
    assert_eq!(serial(&r, "example.com."), 10);
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
    let rejected = first.page(
        &reported,
        [Kv {
            key: b"/skydns/com/example/\xff",
            value: BAD,
            lease: 0,
            revision: 27,
        }],
    );
    assert!(rejected.is_empty(), "unreadable keys are skipped");
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
