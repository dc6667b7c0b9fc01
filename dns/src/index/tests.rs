use super::*;
use crate::record::Record;

fn zones() -> Arc<Zones> {
    Arc::new(Zones::new(
        "/skydns",
        &[
            Name::from_ascii("example.com.").expect("name"),
            Name::from_ascii("sub.example.com.").expect("name"),
        ],
    ))
}

fn rec(json: &str) -> Record {
    Record::parse(json.as_bytes()).expect("valid record")
}

#[test]
fn node_returns_own_value_and_subtree_but_not_siblings_sharing_a_prefix() {
    let mut s = Records::new(zones(), 1);
    s.put("/skydns/com/example/a", rec(r#"{"host":"10.0.0.1"}"#), 0, 2);
    s.put(
        "/skydns/com/example/a/x",
        rec(r#"{"host":"10.0.0.2"}"#),
        0,
        3,
    );
    s.put(
        "/skydns/com/example/a-b",
        rec(r#"{"host":"10.0.0.3"}"#),
        0,
        4,
    );
    s.put(
        "/skydns/com/example/ab",
        rec(r#"{"host":"10.0.0.4"}"#),
        0,
        5,
    );
    let keys: Vec<&str> = s
        .node("/skydns/com/example/a")
        .iter()
        .map(|e| &*e.key)
        .collect();
    assert_eq!(keys, ["/skydns/com/example/a", "/skydns/com/example/a/x"]);
    assert!(s.exists("/skydns/com/example"));
    assert!(!s.exists("/skydns/com/example/zz"));
}

#[test]
fn zone_serial_follows_the_revision_of_the_last_change_in_that_zone() {
    let mut s = Records::new(zones(), 10);
    assert_eq!(s.serial(0), 10);
    s.put(
        "/skydns/com/example/a",
        rec(r#"{"host":"10.0.0.1"}"#),
        0,
        11,
    );
    s.put(
        "/skydns/com/example/sub/b",
        rec(r#"{"host":"10.0.0.1"}"#),
        0,
        12,
    );
    // zones are sorted most specific first: sub.example.com. is 0
    assert_eq!(s.serial(0), 12);
    assert_eq!(s.serial(1), 11);
    assert!(s.delete("/skydns/com/example/a", 13));
    assert_eq!(s.serial(1), 13);
    assert!(!s.delete("/skydns/com/example/a", 14));
    assert_eq!(s.serial(1), 13);
    assert_eq!(s.revision(), 13, "a delete of nothing changes nothing");
}

#[test]
fn lease_bounds_ttl_with_a_floor() {
    let mut s = Records::new(zones(), 1);
    let now = Instant::now();
    s.put(
        "/skydns/com/example/a",
        rec(r#"{"host":"10.0.0.1","ttl":300}"#),
        7,
        2,
    );
    s.put(
        "/skydns/com/example/b",
        rec(r#"{"host":"10.0.0.1","ttl":10}"#),
        7,
        2,
    );
    s.set_lease_deadline(7, now + Duration::from_secs(120));
    let a = s.node("/skydns/com/example/a")[0].clone();
    let b = s.node("/skydns/com/example/b")[0].clone();
    assert_eq!(s.ttl(&a, now), 120);
    assert_eq!(s.ttl(&b, now), 10);
    assert_eq!(s.ttl(&a, now + Duration::from_secs(115)), LEASE_TTL_FLOOR);
    let plain = Entry {
        key: "/k".into(),
        record: rec(r#"{"host":"10.0.0.1"}"#),
        lease: 0,
    };
    assert_eq!(s.ttl(&plain, now), DEFAULT_TTL);
}

#[test]
fn groups_narrow_the_subtree_like_skydns() {
    let mut s = Records::new(zones(), 1);
    s.put(
        "/skydns/com/example/dom/a",
        rec(r#"{"host":"127.0.0.1","group":"g1"}"#),
        0,
        2,
    );
    s.put(
        "/skydns/com/example/dom/b",
        rec(r#"{"host":"127.0.0.2","group":"g1"}"#),
        0,
        2,
    );
    s.put(
        "/skydns/com/example/dom/sub/c",
        rec(r#"{"host":"127.0.0.3","group":"g2"}"#),
        0,
        2,
    );
    s.put(
        "/skydns/com/example/dom/sub/d",
        rec(r#"{"host":"127.0.0.4","group":"g2"}"#),
        0,
        2,
    );
    s.put(
        "/skydns/com/example/dom/sub/e",
        rec(r#"{"host":"127.0.0.5"}"#),
        0,
        2,
    );
    let keys = |k: &str| -> Vec<String> { s.node(k).iter().map(|e| e.key.to_string()).collect() };
    assert_eq!(
        keys("/skydns/com/example/dom").len(),
        3,
        "g1 plus the ungrouped record"
    );
    assert_eq!(keys("/skydns/com/example/dom/sub").len(), 3);
}

#[test]
fn zones_match_most_specific_first_and_keys_map_to_zones() {
    let z = zones();
    let (_, zone) = z
        .find(&Name::from_ascii("x.SUB.example.com.").expect("name"))
        .expect("in zone");
    assert_eq!(
        zone.name,
        Name::from_ascii("sub.example.com.").expect("name")
    );
    assert!(
        z.find(&Name::from_ascii("example.org.").expect("name"))
            .is_none()
    );
    assert_eq!(z.find_key("/skydns/com/example/subx"), Some(1));
    assert_eq!(z.find_key("/skydns/com/examplex"), None);
}

/// The group is picked from the whole name before the cut to a limit: the fast path reads 65
/// records (to tell "more than 64"), the general path up to 4096, and both must see the same
/// first 65.
#[test]
fn a_short_read_is_a_prefix_of_the_long_one_when_groups_lie_past_the_cut() {
    let mut s = Records::new(zones(), 1);
    // In key order: `big/a` (group a), 64 records below it (group c), then `big/b` (group b)
    // at `big/a`'s depth. a and b disagree at the shortest depth: no grouping, all 66 answer.
    s.put(
        "/skydns/com/example/big/a",
        rec(r#"{"host":"10.0.0.1","group":"a"}"#),
        0,
        2,
    );
    for i in 0..64 {
        s.put(
            &format!("/skydns/com/example/big/a/{i:08x}"),
            rec(&format!(r#"{{"host":"10.0.1.{i}","group":"c"}}"#)),
            0,
            2,
        );
    }
    s.put(
        "/skydns/com/example/big/b",
        rec(r#"{"host":"10.0.0.2","group":"b"}"#),
        0,
        2,
    );
    let key = "/skydns/com/example/big";
    let all: Vec<&str> = s.node(key).iter().map(|e| &*e.key).collect();
    assert_eq!(all.len(), 66, "disagreeing groups: no grouping");
    let first: Vec<&str> = s.node_up_to(key, 65).iter().map(|e| &*e.key).collect();
    assert_eq!(first, all[..65]);

    // The other way round: the first 65 records in one group, a shorter key of another past
    // them picks its group.
    let mut s = Records::new(zones(), 1);
    for i in 0..65 {
        s.put(
            &format!("/skydns/com/example/big/a/{i:08x}"),
            rec(&format!(r#"{{"host":"10.0.1.{i}","group":"a"}}"#)),
            0,
            2,
        );
    }
    s.put(
        "/skydns/com/example/big/b",
        rec(r#"{"host":"10.0.0.2","group":"b"}"#),
        0,
        2,
    );
    let all: Vec<&str> = s.node(key).iter().map(|e| &*e.key).collect();
    assert_eq!(all, ["/skydns/com/example/big/b"]);
    let first = |s: &Records| -> Vec<String> {
        s.node_up_to(key, 65)
            .iter()
            .map(|e| e.key.to_string())
            .collect()
    };
    assert_eq!(first(&s), all);

    // The first 65 without a group: they stay whatever group the rest picks.
    let mut s = Records::new(zones(), 1);
    for i in 0..65 {
        s.put(
            &format!("/skydns/com/example/big/a/{i:08x}"),
            rec(&format!(r#"{{"host":"10.0.1.{i}"}}"#)),
            0,
            2,
        );
    }
    s.put(
        "/skydns/com/example/big/b",
        rec(r#"{"host":"10.0.0.2","group":"b"}"#),
        0,
        2,
    );
    let all: Vec<String> = s.node(key).iter().map(|e| e.key.to_string()).collect();
    assert_eq!(all.len(), 66);
    assert_eq!(first(&s), all[..65]);
}

#[test]
fn keys_that_name_nothing_are_not_stored() {
    let mut s = Records::new(zones(), 1);
    for key in [
        "/skydns/com/example//x",
        "/skydns/com/example/X",
        "/skydns/com/example/x/",
    ] {
        s.put(key, rec(r#"{"host":"10.0.0.1"}"#), 0, 2);
    }
    assert!(s.is_empty());
    assert_eq!(s.revision(), 1);
}

/// imbl before 7.0.2 dropped a difference sitting right after a run of shared nodes (imbl
/// issue #161): an IXFR would have missed the change. Every single-key change of a large map
/// that shares all else with its previous version is found.
#[test]
fn changed_keys_finds_every_single_change_of_a_map_sharing_the_rest() {
    let mut before = Records::new(zones(), 1);
    let keys: Vec<String> = (0..2000)
        .map(|i| format!("/skydns/com/example/svc/s{i:05}"))
        .collect();
    for k in &keys {
        before.put(k, rec(r#"{"host":"10.0.0.1"}"#), 0, 2);
    }
    for (n, k) in keys.iter().enumerate() {
        let mut after = before.clone();
        after.put(k, rec(r#"{"host":"10.0.0.2"}"#), 0, 3);
        let changed = after.changed_keys(&before);
        let changed: Vec<&str> = changed.iter().map(|c| &**c).collect();
        assert_eq!(changed, [k.as_str()], "change {n} of {}", keys.len());
    }
}
