use super::*;
use crate::ipam::Pools;

const BASE: &str = r#"
pools:
  - name: rack
    addresses: [10.4.0.0/24]
    mode: bgp
    bgp:
      communities: ["65001:100", "no-export", "65001:1:2"]
      aggregation_length: 24
      node_selector: {rack: a}
bgp:
  asn: 65001
  router_id: 10.0.0.11
  bfd: {interval: 300ms, multiplier: 5}
  peers:
    - name: tor-a
      address: 10.0.0.1
      asn: 65000
      bfd: true
      hold_time: 3s
      graceful_restart: {restart_time: 30s}
      node_selector: {rack: a}
    - name: tor-b
      address: fd00::1
      asn: 4200000000
"#;

#[test]
fn a_full_document_is_read() {
    let pools = Pools::from_yaml(BASE).expect("valid");
    let bgp = pools.bgp().expect("bgp");
    assert_eq!(bgp.asn, 65001);
    assert_eq!(
        bgp.router_id,
        RouterId::Fixed("10.0.0.11".parse().expect("ip"))
    );
    assert_eq!(bgp.table, DEFAULT_TABLE);
    let a = &bgp.peers[0];
    assert_eq!(
        a.bfd,
        Some(Bfd {
            interval: Duration::from_millis(300),
            multiplier: 5
        })
    );
    assert_eq!(a.hold_time, Duration::from_secs(3));
    assert_eq!(a.graceful_restart, Some(Duration::from_secs(30)));
    assert_eq!(bgp.peers[1].asn, 4_200_000_000);
    assert_eq!(bgp.peers[1].bfd, None);
    let pool = pools.get("rack").expect("pool");
    let pb = pool.bgp.as_ref().expect("pool bgp");
    assert_eq!(
        pb.communities,
        vec![
            Community::Standard(65001, 100),
            Community::Standard(0xFFFF, 0xFF01),
            Community::Large(65001, 1, 2)
        ]
    );
    assert_eq!(pb.aggregation_v4, 24);
}

#[test]
fn every_error_names_its_field() {
    for (from, to, want) in [
        (
            "asn: 65000\n",
            "asn: 0\n",
            "bgp.peers[tor-a].asn: 0 is not an AS number",
        ),
        ("asn: 4200000000", "asn: 4294967296", "bgp.peers[tor-b].asn"),
        (
            "hold_time: 3s",
            "hold_time: 2s",
            "bgp.peers[tor-a].hold_time",
        ),
        ("name: tor-b", "name: tor-a", "two peers named tor-a"),
        ("name: tor-b", "name: Tor_B", "bgp.peers[Tor_B].name"),
        (
            "router_id: 10.0.0.11",
            "router_id: fd00::1",
            "bgp.router_id",
        ),
        (
            "asn: 65001\n",
            "asn: 65001\n  table: 254\n",
            "bgp.table: 254",
        ),
        ("multiplier: 5", "multiplier: 0", "bgp.bfd.multiplier"),
        (
            "restart_time: 30s",
            "restart_time: 2h",
            "graceful_restart.restart_time",
        ),
        (
            "\"65001:100\"",
            "\"65001:100000\"",
            "pools[rack].bgp.communities",
        ),
        (
            "aggregation_length: 24",
            "aggregation_length: 20",
            "pools[rack].bgp.aggregation_length: 20",
        ),
        ("aggregation_length: 24", "aggregation_length: 33", "(1-32)"),
        (
            "      asn: 65000\n",
            "      asn: 65000\n      colour: red\n",
            "colour",
        ),
        (
            "      asn: 65000\n",
            "      asn: 65000\n      port: 0\n",
            "bgp.peers[tor-a].port: 0",
        ),
        (
            "address: fd00::1",
            "address: fe80::1",
            "bgp.peers[tor-b].address: fe80::1 is link-local",
        ),
        (
            "address: 10.0.0.1",
            "address: 127.0.0.1",
            "is not a peer's address",
        ),
        ("multiplier: 5", "multipler: 5", "bfd"),
    ] {
        assert!(BASE.contains(from), "{from}");
        let err = Pools::from_yaml(&BASE.replacen(from, to, 1))
            .expect_err(want)
            .to_string();
        assert!(err.contains(want), "{to:?}: {err}");
    }
}

#[test]
fn bgp_pools_need_the_section_and_l2_pools_take_no_bgp() {
    let no_section = "pools:\n  - {name: p, addresses: [10.4.0.0/24], mode: bgp}\n";
    let err = Pools::from_yaml(no_section)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("pools[p].mode: bgp needs"), "{err}");
    let l2 = "pools:\n  - {name: p, addresses: [10.4.0.0/24], bgp: {aggregation_length: 24}}\n";
    let err = Pools::from_yaml(l2).expect_err("refused").to_string();
    assert!(
        err.contains("pools[p].bgp: only a pool with mode: bgp"),
        "{err}"
    );
    // Without BGP, a document reads as before.
    let plain =
        Pools::from_yaml("pools:\n  - {name: p, addresses: [10.4.0.0/24]}\n").expect("valid");
    assert!(plain.bgp().is_none());
    assert_eq!(plain.get("p").expect("p").mode, crate::ipam::Mode::L2);
}

#[test]
fn communities_parse_as_routers_write_them() {
    assert_eq!(
        parse_community("65535:65281"),
        Ok(Community::Standard(65535, 65281))
    );
    assert_eq!(
        parse_community("NO-ADVERTISE"),
        Ok(Community::Standard(0xFFFF, 0xFF02))
    );
    assert_eq!(
        parse_community("blackhole"),
        Ok(Community::Standard(0xFFFF, 666))
    );
    assert!(parse_community("1:2:3:4").is_err());
    assert!(parse_community("a:b").is_err());
    assert_eq!(Community::Large(1, 2, 3).to_string(), "1:2:3");
}
