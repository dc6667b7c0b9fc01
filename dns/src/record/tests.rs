use super::*;

#[test]
fn reads_every_field_and_ignores_unknown_ones() {
    let r = Record::parse(
        br#"{"host":"srv.example.com","port":8080,"priority":20,"weight":5,"text":"t",
            "mail":true,"ttl":60,"targetstrip":1,"group":"g","owner":"ext-dns"}"#,
    )
    .expect("valid");
    assert_eq!(
        r.host,
        Host::Name(Name::from_ascii("srv.example.com.").expect("name"))
    );
    assert_eq!(r.port, Some(8080));
    assert_eq!(
        (r.priority, r.weight, r.ttl, r.target_strip),
        (20, 5, 60, 1)
    );
    assert!(r.mail);
    assert_eq!((&*r.text, &*r.group), ("t", "g"));
}

#[test]
fn null_fields_read_as_absent_and_defaults_apply_at_answer_time() {
    let r = Record::parse(br#"{"host":"10.0.0.1","port":null,"ttl":null}"#).expect("valid");
    assert_eq!(r.host, Host::V4("10.0.0.1".parse().expect("ip")));
    assert_eq!(r.port, Some(0));
    assert_eq!(r.priority_or_default(), DEFAULT_PRIORITY);
    assert_eq!(r.weight_or_default(), DEFAULT_WEIGHT);
}

#[test]
fn ipv4_mapped_ipv6_is_an_a_record_like_go_parse_ip() {
    let r = Record::parse(br#"{"host":"::ffff:10.1.2.3"}"#).expect("valid");
    assert_eq!(r.host, Host::V4("10.1.2.3".parse().expect("ip")));
    let r = Record::parse(br#"{"host":"2001:db8::1"}"#).expect("valid");
    assert_eq!(r.host, Host::V6("2001:db8::1".parse().expect("ip")));
}

#[test]
fn port_minus_one_means_not_in_srv() {
    let r = Record::parse(br#"{"host":"10.0.0.1","port":-1}"#).expect("valid");
    assert_eq!(r.port, None);
}

#[test]
fn bad_values_are_rejected_with_the_field_named() {
    assert!(matches!(
        Record::parse(b"not json"),
        Err(RecordError::Json(_))
    ));
    assert!(matches!(Record::parse(b"[1,2]"), Err(RecordError::Json(_))));
    assert!(matches!(
        Record::parse(br#"{"host":"10.0.0.1","port":70000}"#),
        Err(RecordError::Range { field: "port", .. })
    ));
    assert!(matches!(
        Record::parse(br#"{"host":"10.0.0.1","ttl":-5}"#),
        Err(RecordError::Range { field: "ttl", .. })
    ));
    assert!(matches!(
        Record::parse(br#"{"host":"a b/c"}"#),
        Err(RecordError::Host(_))
    ));
    assert_eq!(Record::parse(br#"{"port":80}"#), Err(RecordError::Empty));
    assert!(matches!(
        Record::parse(br#"{"host":5}"#),
        Err(RecordError::Json(_))
    ));
}

#[test]
fn text_only_record_is_valid() {
    let r = Record::parse(br#"{"text":"hello"}"#).expect("valid");
    assert_eq!(r.host, Host::None);
    assert_eq!(&*r.text, "hello");
}

#[test]
fn zone_and_region_are_read_in_lower_case_and_checked() {
    let r = Record::parse(br#"{"host":"10.0.0.1","zone":"FR","region":"europe","weight":3}"#)
        .expect("valid");
    assert_eq!((&*r.zone, &*r.region, r.weight), ("fr", "europe", 3));
    let r = Record::parse(br#"{"host":"10.0.0.1","zone":null}"#).expect("valid");
    assert_eq!((&*r.zone, &*r.region), ("", ""));
    for bad in [
        r#"{"host":"10.0.0.1","zone":"fr.paris"}"#,
        r#"{"host":"10.0.0.1","region":"-eu"}"#,
        r#"{"host":"10.0.0.1","region":"é"}"#,
    ] {
        let err = Record::parse(bad.as_bytes()).expect_err(bad);
        assert!(matches!(err, RecordError::Locality { .. }), "{bad}: {err}");
    }
    let long = format!(r#"{{"host":"10.0.0.1","zone":"{}"}}"#, "a".repeat(64));
    assert!(Record::parse(long.as_bytes()).is_err());
    assert!(Record::parse(br#"{"host":"10.0.0.1","zone":5}"#).is_err());
}
