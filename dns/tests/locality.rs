//! Answers that depend on who asks (`--topology`), end to end: real etcd, the real binary,
//! dig from several loopback source addresses and with `+subnet` (EDNS Client Subnet).

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::Duration;

use common::{A, Dns, IN, RD, WAIT, message};
use fedplane_testkit::{Etcd, wait_until};

const GSLB: &str = "/skydns/com/example/gslb";
const NAME: &str = "gslb.example.com";

/// Three clusters' addresses with their localities, an IPv6 one, and a map: 127.0.0.2 in fr,
/// 127.0.0.3 in us, 127.0.0.4/32 known only as europe, 10.3.0.0/16 in us.
fn setup(etcd: &Etcd) -> (Dns, tempfile::TempDir) {
    etcd.put(
        &format!("{GSLB}/fcp"),
        r#"{"host":"10.210.1.68","zone":"fr","region":"europe"}"#,
    );
    etcd.put(
        &format!("{GSLB}/ber"),
        r#"{"host":"10.210.4.68","zone":"de","region":"europe"}"#,
    );
    etcd.put(
        &format!("{GSLB}/usa"),
        r#"{"host":"10.210.3.65","zone":"us","region":"america"}"#,
    );
    etcd.put(
        &format!("{GSLB}/usa6"),
        r#"{"host":"2001:db8::65","zone":"us","region":"america"}"#,
    );
    etcd.put(
        &format!("{GSLB}/fcp6"),
        r#"{"host":"2001:db8::68","zone":"fr","region":"europe"}"#,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let map = dir.path().join("topology.yaml");
    std::fs::write(
        &map,
        "- {cidr: 127.0.0.2/32, region: europe, zone: fr}
- {cidr: 127.0.0.3/32, region: america, zone: us}
- {cidr: 127.0.0.4/32, region: europe}
- {cidr: 10.3.0.0/16, region: america, zone: us}
",
    )
    .expect("write the map");
    let dns = Dns::on(etcd)
        .args(&["--topology", map.to_str().expect("path")])
        .start();
    dns.await_answer(
        &format!("{NAME}."),
        "A",
        &["10.210.1.68", "10.210.3.65", "10.210.4.68"],
    );
    (dns, dir)
}

#[test]
fn the_closest_addresses_by_source_address_and_by_client_subnet() {
    let etcd = Etcd::start();
    let (dns, _dir) = setup(&etcd);
    let from = |src: &str, rtype: &str| dns.q(&["-b", src, NAME, rtype]).answers(rtype);
    assert_eq!(from("127.0.0.2", "A"), vec!["10.210.1.68"]);
    assert_eq!(from("127.0.0.3", "A"), vec!["10.210.3.65"]);
    assert_eq!(from("127.0.0.4", "A"), vec!["10.210.1.68", "10.210.4.68"]);
    assert_eq!(
        from("127.0.0.5", "A"),
        vec!["10.210.1.68", "10.210.3.65", "10.210.4.68"]
    );
    // AAAA by the same rules.
    assert_eq!(from("127.0.0.2", "AAAA"), vec!["2001:db8::68"]);
    assert_eq!(from("127.0.0.3", "AAAA"), vec!["2001:db8::65"]);

    // The client subnet wins over the source address, and is echoed with the scope of the
    // answer: the /16 of the map entry.
    let d = dns.q(&["-b", "127.0.0.2", "+subnet=10.3.7.0/24", NAME, "A"]);
    assert_eq!(d.answers("A"), vec!["10.210.3.65"]);
    assert!(d.raw.contains("CLIENT-SUBNET: 10.3.7.0/24/16"), "{}", d.raw);
    // No entry: every address. 192.0.2.0 shares no bit with 10/8 or 127/8 past the first,
    // so the answer holds for 128.0.0.0/1: scope 1.
    let d = dns.q(&["+subnet=192.0.2.0/24", NAME, "A"]);
    assert_eq!(d.answers("A").len(), 3);
    assert!(d.raw.contains("CLIENT-SUBNET: 192.0.2.0/24/1"), "{}", d.raw);
    // A name whose records carry no locality: scope 0.
    etcd.put("/skydns/com/example/plain", r#"{"host":"10.0.0.1"}"#);
    dns.await_answer("plain.example.com.", "A", &["10.0.0.1"]);
    let d = dns.q(&["+subnet=10.3.7.0/24", "plain.example.com", "A"]);
    assert!(d.raw.contains("CLIENT-SUBNET: 10.3.7.0/24/0"), "{}", d.raw);
    // A malformed option (address bits past the source prefix): FORMERR, the server goes on.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let ecs = [0u8, 8, 0, 7, 0, 1, 20, 0, 10, 3, 0x0f];
    sock.send_to(&message(7, RD, NAME, A, IN, Some((1232, &ecs))), dns.addr())
        .expect("send");
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).expect("an answer");
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR: {:?}", &buf[..n]);
    assert_eq!(
        dns.q(&["-b", "127.0.0.2", NAME, "A"]).answers("A"),
        vec!["10.210.1.68"]
    );
}

#[test]
fn weighted_addresses_share_ten_thousand_queries_by_weight() {
    let etcd = Etcd::start();
    let w = "/skydns/com/example/weighted";
    etcd.put(&format!("{w}/a"), r#"{"host":"10.0.0.1","weight":3}"#);
    etcd.put(&format!("{w}/b"), r#"{"host":"10.0.0.2","weight":1}"#);
    etcd.put(&format!("{w}/c"), r#"{"host":"10.0.0.3","weight":1}"#);
    let dns = Dns::on(&etcd).start();
    wait_until(WAIT, "a weighted answer", || {
        (dns.q(&["weighted.example.com", "A"]).answers("A").len() == 1).then_some(())
    });
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut counts: BTreeMap<[u8; 4], u32> = BTreeMap::new();
    let mut buf = [0u8; 1500];
    // In windows of 100 queries in flight, each answered (the ID says which).
    for window in 0..100u16 {
        for i in 0..100u16 {
            let q = message(window * 100 + i, RD, "weighted.example.com", A, IN, None);
            sock.send_to(&q, dns.addr()).expect("send");
        }
        for _ in 0..100 {
            let n = sock.recv(&mut buf).expect("every query answered");
            assert_eq!(u16::from_be_bytes([buf[6], buf[7]]), 1, "one address");
            let ip: [u8; 4] = buf[n - 4..n].try_into().expect("an A record last");
            *counts.entry(ip).or_default() += 1;
        }
    }
    assert_eq!(counts.values().sum::<u32>(), 10_000);
    for (ip, want) in [
        ([10, 0, 0, 1], 0.6),
        ([10, 0, 0, 2], 0.2),
        ([10, 0, 0, 3], 0.2),
    ] {
        let share = f64::from(counts[&ip]) / 10_000.0;
        assert!((share - want).abs() <= 0.03, "{counts:?}");
    }
}

#[test]
fn a_bad_topology_file_stops_the_server_with_the_entry_and_the_reason() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let map = dir.path().join("topology.yaml");
    std::fs::write(&map, "- {cidr: 10.1.2.3/16, region: europe}\n").expect("write");
    let mut dns = Dns::on(&etcd)
        .args(&["--topology", map.to_str().expect("path")])
        .start_unready();
    let status = dns.daemon.wait_exit(WAIT);
    assert!(!status.success());
    let out = dns.daemon.output();
    assert!(
        out.contains("topology entry 1 (10.1.2.3/16): host bits are set: the block is 10.1.0.0/16"),
        "{out}"
    );
}

#[test]
fn a_federation_short_name_is_a_cname_to_this_clusters_zone_name_and_falls_back() {
    let etcd = Etcd::start();
    let hw = "svc/federation/default/hello-world";
    // Two healthy clusters at zone level; the global name holds both.
    etcd.put(
        &format!("/skydns/com/example/europe/fr/{hw}/fcp"),
        r#"{"host":"10.210.1.68"}"#,
    );
    etcd.put(
        &format!("/skydns/com/example/america/us/{hw}/usa"),
        r#"{"host":"10.210.3.65"}"#,
    );
    etcd.put(
        &format!("/skydns/com/example/{hw}/fcp"),
        r#"{"host":"10.210.1.68"}"#,
    );
    etcd.put(
        &format!("/skydns/com/example/{hw}/usa"),
        r#"{"host":"10.210.3.65"}"#,
    );
    let dns = Dns::on(&etcd)
        .args(&[
            "--federation",
            "federation=example.com",
            "--locality",
            "zone=fr,region=europe",
        ])
        .start();
    let short = "hello-world.default.federation.svc.cluster.local";
    let d = dns.await_answer(short, "A", &["10.210.1.68"]);
    assert_eq!(
        d.answers("CNAME"),
        vec!["hello-world.default.federation.svc.fr.europe.example.com."]
    );
    assert!(d.flag("aa"), "{}", d.raw);
    // fcp loses its endpoints: the controller replaces its zone record with a CNAME to the
    // region name, and the region name with one to the global name.
    etcd.del(&format!("/skydns/com/example/europe/fr/{hw}/fcp"));
    etcd.put(
        &format!("/skydns/com/example/europe/fr/{hw}"),
        r#"{"host":"hello-world.default.federation.svc.europe.example.com"}"#,
    );
    etcd.put(
        &format!("/skydns/com/example/europe/{hw}"),
        r#"{"host":"hello-world.default.federation.svc.example.com"}"#,
    );
    let d = dns.await_answer(short, "A", &["10.210.1.68", "10.210.3.65"]);
    assert_eq!(d.answers("CNAME").len(), 3, "{}", d.raw);
    // A namespace's name: NODATA; anything else below the suffix: NXDOMAIN; other
    // cluster.local names: REFUSED.
    assert_eq!(
        dns.q(&["default.federation.svc.cluster.local", "A"]).status,
        "NOERROR"
    );
    assert_eq!(
        dns.q(&["x.default.federation.svc.cluster.local", "A"])
            .status,
        "NXDOMAIN"
    );
    assert_eq!(
        dns.q(&["kubernetes.default.svc.cluster.local", "A"]).status,
        "REFUSED"
    );
}
