//! A watch batch applied (`apply::apply`) and the fast table recompiled
//! for `Applied::changed` (as the sync task does) equals compiling everything from the records,
//! through the cases the old sync handled inline: an invalid value replacing a valid one, a key
//! bound to a lease, a delete, a key outside the zones, an unreadable key, and the NS change that
//! rebuilds the SOA tails.

use std::sync::Arc;

use fedplane_dns::apply::{self, Change, InvalidKeys, Kv};
use fedplane_dns::fast::Table;
use fedplane_dns::index::{Records, Zones};
use hickory_proto::rr::Name;

const WWW: &str = "/skydns/com/example/www";
const WIRE: &[u8] = b"\x03www\x07example\x03com\x00";

fn put(key: &'static str, value: &'static [u8], lease: i64, revision: i64) -> Change<'static> {
    Change::Put(Kv {
        key: key.as_bytes(),
        value,
        lease,
        revision,
    })
}

fn step(
    records: &mut Records,
    invalid: &mut InvalidKeys,
    table: &mut Table,
    batch: Vec<Change<'_>>,
) {
    let applied = apply::apply(records, invalid, batch);
    table.recompile(records, &applied.changed);
    let full = Table::compile(records);
    assert_eq!(table.len(), full.len());
    assert_eq!(table.get(WIRE), full.get(WIRE));
}

#[test]
fn recompiling_what_a_batch_names_equals_compiling_everything() {
    let zones = Arc::new(Zones::new(
        "/skydns",
        &[Name::from_ascii("example.com.").expect("name")],
    ));
    let mut records = Records::new(zones, 1);
    records.mark_loaded();
    let mut invalid = InvalidKeys::default();
    let mut table = Table::compile(&records);
    let (r, i, t) = (&mut records, &mut invalid, &mut table);
    step(r, i, t, vec![put(WWW, br#"{"host":"10.0.0.1"}"#, 0, 2)]);
    assert!(t.get(WIRE).is_some());
    // An invalid value replaces the valid one: the compiled answer goes.
    step(r, i, t, vec![put(WWW, b"{not json", 0, 3)]);
    assert!(t.get(WIRE).is_none());
    assert_eq!(i.get(WWW), Some(3));
    // Valid again, then bound to a lease: the general path answers (TTL from the lease).
    step(r, i, t, vec![put(WWW, br#"{"host":"10.0.0.2"}"#, 0, 4)]);
    assert!(t.get(WIRE).is_some());
    step(r, i, t, vec![put(WWW, br#"{"host":"10.0.0.2"}"#, 7, 5)]);
    assert!(t.get(WIRE).is_none());
    // A leaf below, a key outside the zones, an unreadable key, the zone's NS, then deletes.
    step(
        r,
        i,
        t,
        vec![
            put(
                "/skydns/com/example/www/x1",
                br#"{"host":"10.0.0.3"}"#,
                0,
                6,
            ),
            put("/skydns/org/other/www", br#"{"host":"10.0.0.4"}"#, 0, 6),
            Change::Put(Kv {
                key: b"/skydns/com/example/\xff",
                value: br#"{"host":"10.0.0.5"}"#,
                lease: 0,
                revision: 6,
            }),
            put(
                "/skydns/com/example/dns/ns/a",
                br#"{"host":"ns1.example.net"}"#,
                0,
                6,
            ),
        ],
    );
    step(
        r,
        i,
        t,
        vec![
            Change::Delete {
                key: WWW.as_bytes(),
                revision: 7,
            },
            Change::Delete {
                key: b"/skydns/com/example/www/x1",
                revision: 7,
            },
        ],
    );
    assert!(t.get(WIRE).is_none());
}
