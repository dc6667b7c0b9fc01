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
