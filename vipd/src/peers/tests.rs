use super::*;

fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).expect("a Pod")
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().expect("ip")).collect()
}

const SPEAKER: &str = "metadata: {namespace: fedplane-system, name: vipd-a, \
    labels: {app.kubernetes.io/name: fedplane-vipd}, \
    annotations: {vipd.fedplane.io/vrrp-sources: '192.0.2.11,fe80::a'}}\n\
    status: {phase: Running, podIP: 192.0.2.11, podIPs: [{ip: 192.0.2.11}, {ip: '2001:db8::11'}], \
    hostIPs: [{ip: 192.0.2.11}]}";

#[test]
fn the_allowlist_is_the_speaker_pods_addresses_and_annotations_and_our_own() {
    let sel = Selector::parse(DEFAULT_SELECTOR).expect("selector");
    let a = pod(SPEAKER);
    let b = pod("metadata: {namespace: fedplane-system, name: vipd-b, \
        labels: {app.kubernetes.io/name: fedplane-vipd}, \
        annotations: {vipd.fedplane.io/vrrp-sources: ''}}\n\
        status: {hostIP: 192.0.2.12}");
    let other = pod(
        "metadata: {namespace: fedplane-system, name: dns, labels: {app: dns}}\n\
        status: {podIP: 192.0.2.99}",
    );
    let done = pod("metadata: {namespace: fedplane-system, name: vipd-old, \
        labels: {app.kubernetes.io/name: fedplane-vipd}}\n\
        status: {phase: Failed, podIP: 192.0.2.98}");
    let d = decide(
        &[&a, &b, &other, &done],
        &sel,
        &ips(&["fe80::1"]),
        Some("vipd-a"),
    );
    assert_eq!(
        d.allowed,
        Some(ips(&[
            "192.0.2.11",
            "192.0.2.12",
            "2001:db8::11",
            "fe80::a",
            "fe80::1"
        ]))
    );
    assert!(d.missing.is_empty() && d.malformed.is_empty());
}

#[test]
fn no_allowlist_while_a_speaker_has_not_published_or_we_cannot() {
    let sel = Selector::parse(DEFAULT_SELECTOR).expect("selector");
    let a = pod(SPEAKER);
    let new = pod("metadata: {namespace: fedplane-system, name: vipd-new, \
        labels: {app.kubernetes.io/name: fedplane-vipd}}\nstatus: {podIP: 192.0.2.13}");
    let d = decide(&[&a, &new], &sel, &BTreeSet::new(), Some("vipd-a"));
    assert_eq!(d.allowed, None);
    assert_eq!(d.missing, ["fedplane-system/vipd-new"]);
    let bad = pod("metadata: {namespace: ns, name: bad, \
        labels: {app.kubernetes.io/name: fedplane-vipd}, \
        annotations: {vipd.fedplane.io/vrrp-sources: 'fe80::1,nonsense'}}");
    let d = decide(&[&a, &bad], &sel, &BTreeSet::new(), Some("vipd-a"));
    assert_eq!((d.allowed, d.malformed), (None, vec!["ns/bad".to_owned()]));
    // Without our own Pod's name we cannot publish: none either.
    assert_eq!(decide(&[&a], &sel, &BTreeSet::new(), None).allowed, None);
    assert!(
        decide(&[&a], &sel, &BTreeSet::new(), Some("vipd-a"))
            .allowed
            .is_some()
    );
}

#[test]
fn selectors_parse_and_match() {
    let sel = Selector::parse("app=vipd, tier == net").expect("selector");
    let labels: BTreeMap<String, String> = [("app", "vipd"), ("tier", "net"), ("x", "y")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(sel.matches(Some(&labels)));
    assert!(
        !Selector::parse("app=dns")
            .expect("selector")
            .matches(Some(&labels))
    );
    assert!(!sel.matches(None));
    for bad in ["", "app", "app!=vipd", "=x", "a=b,"] {
        assert!(Selector::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn our_annotation_is_written_once_every_group_has_a_source() {
    let own = ips(&["192.0.2.11", "fe80::a"]);
    assert_eq!(
        annotation_due(None, &own, 1, 2),
        None,
        "a group has no source yet"
    );
    assert_eq!(
        annotation_due(None, &own, 2, 2).as_deref(),
        Some("192.0.2.11,fe80::a")
    );
    assert_eq!(annotation_due(Some("192.0.2.11,fe80::a"), &own, 2, 2), None);
    assert_eq!(
        annotation_due(Some("192.0.2.11"), &own, 2, 2).as_deref(),
        Some("192.0.2.11,fe80::a")
    );
    // No groups: an empty list at once, so the other nodes can enforce theirs.
    assert_eq!(
        annotation_due(None, &BTreeSet::new(), 0, 0).as_deref(),
        Some("")
    );
    assert_eq!(parse_sources(""), Some(BTreeSet::new()));
}

#[test]
fn each_source_is_reported_at_most_once_per_period_and_few_sources_at_all() {
    let t = Instant::now();
    let s = Duration::from_secs;
    let x: IpAddr = "192.0.2.66".parse().expect("ip");
    let y: IpAddr = "192.0.2.67".parse().expect("ip");
    let mut r = Reports::default();
    assert!(r.report(x, t));
    assert!(!r.report(x, t + s(1)));
    assert!(r.report(y, t + s(1)));
    assert!(!r.report(x, t + s(599)));
    assert!(r.report(x, t + s(600)));
    assert!(!r.report(y, t + s(600)));
    assert!(r.report(y, t + s(601)));
    let mut flood = Reports::default();
    let reported = (0..1000u32)
        .filter(|i| flood.report(IpAddr::from(i.to_be_bytes()), t))
        .count();
    assert_eq!(reported, MAX_REPORTED);
    assert!(
        flood.report(x, t + s(600)),
        "the flood is forgotten after a period"
    );
    assert_eq!(flood.len(), 1);
    assert!(
        foreign_note(x, 51, "eth0", "n1")
            .contains("192.0.2.66 refused on node n1, interface eth0, VRID 51")
    );
}

#[test]
fn a_selector_that_does_not_pick_our_own_pod_gives_no_allowlist() {
    let sel = Selector::parse(DEFAULT_SELECTOR).expect("selector");
    let a = pod(SPEAKER);
    let d = decide(&[&a], &sel, &BTreeSet::new(), Some("vipd-z"));
    assert_eq!(d.allowed, None, "a wrong selector would refuse every peer");
    assert!(d.unselected);
    let wrong = Selector::parse("app=fedplane-vipd").expect("selector");
    let d = decide(&[&a], &wrong, &BTreeSet::new(), Some("vipd-a"));
    assert_eq!(d.allowed, None);
    assert!(d.unselected);
}

#[test]
fn each_speakers_sources_map_to_its_node_and_disputed_ones_to_none() {
    let sel = Selector::parse(DEFAULT_SELECTOR).expect("selector");
    let a = pod(&format!("{SPEAKER}\nspec: {{nodeName: n1}}"));
    // Claims one of a's sources from another node: that source is nobody's.
    let b = pod("metadata: {namespace: fedplane-system, name: vipd-b, \
        labels: {app.kubernetes.io/name: fedplane-vipd}, \
        annotations: {vipd.fedplane.io/vrrp-sources: 'fe80::a,fe80::b'}}\n\
        spec: {nodeName: n2}\n\
        status: {phase: Running, podIP: 192.0.2.12}");
    let not_speaker = pod(
        "metadata: {namespace: fedplane-system, name: dns, labels: {app: dns}}\n\
        spec: {nodeName: n3}\nstatus: {podIP: 192.0.2.99}",
    );
    let map = speaker_nodes(&[&a, &b, &not_speaker], Some(&sel), Some("vipd-a"));
    let node = |ip: &str| {
        map.get(&ip.parse::<IpAddr>().expect("ip"))
            .map(String::as_str)
    };
    assert_eq!(node("192.0.2.11"), Some("n1"));
    assert_eq!(node("2001:db8::11"), Some("n1"));
    assert_eq!(node("192.0.2.12"), Some("n2"));
    assert_eq!(node("fe80::b"), Some("n2"));
    assert_eq!(node("fe80::a"), None, "disputed");
    assert_eq!(node("192.0.2.99"), None, "not a speaker");
}
