use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;

use super::*;
use crate::ipam::Pools;

const DOC: &str = r#"
pools:
  - name: rack
    addresses: [10.4.0.0/24, 10.4.1.16-10.4.1.31]
    mode: bgp
    bgp:
      communities: ["65001:100", "no-export", "65001:1:2"]
      aggregation_length: 28
  - name: v6
    addresses: ["fd00:4::/120"]
    mode: bgp
  - name: l2
    addresses: [10.6.0.0/24]
bgp:
  asn: 65001
  table: 102
  peers:
    - {name: tor-a, address: 10.0.0.1, asn: 65000, bfd: true, hold_time: 9s}
    - name: tor-b
      address: 10.0.0.2
      asn: 65000
      source: 10.0.0.11
      password_file: /etc/fedplane/bgp/tor-b
      graceful_restart: {restart_time: 30s}
      ebgp_multihop: 2
    - {name: tor-v6, address: "fd00::1", asn: 65000}
    - {name: rack-b, address: 10.0.1.1, asn: 65002, node_selector: {rack: b}}
"#;

fn rendered() -> String {
    let pools = Pools::from_yaml(DOC).expect("valid");
    let labels = BTreeMap::from([("rack".to_owned(), "a".to_owned())]);
    let passwords = BTreeMap::from([("tor-b".to_owned(), "s3cret pass".to_owned())]);
    render(
        pools.bgp().expect("bgp"),
        &pools,
        &Node {
            labels: &labels,
            router_id: Ipv4Addr::new(10, 0, 0, 11),
            passwords: &passwords,
        },
    )
}

#[test]
fn the_configuration_carries_what_the_settings_say() {
    let c = rendered();
    assert!(c.contains("router id 10.0.0.11;"), "{c}");
    assert!(
        c.contains("kernel table 102;") && c.contains("learn;"),
        "{c}"
    );
    assert!(c.contains("if krt_source != 102 then reject;"), "{c}");
    // The pool's communities on its routes, its aggregates included.
    assert!(c.contains("10.4.0.0/24{24,32}"), "{c}");
    assert!(c.contains("10.4.1.16/28{28,32}"), "{c}");
    assert!(
        c.contains("bgp_community.add((65001,100)); bgp_community.add((65535,65281)); bgp_large_community.add((65001,1,2));"),
        "{c}"
    );
    // Peers: BFD, hold time, password escaped, source, multihop, graceful restart.
    assert!(c.contains("protocol bgp peer_tor_a {"), "{c}");
    assert!(
        c.contains("bfd { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };"),
        "{c}"
    );
    assert!(c.contains("hold time 9;\n  keepalive time 3;"), "{c}");
    assert!(c.contains(r#"password "s3cret pass";"#), "{c}");
    assert!(quotable("s3cret pass") && !quotable("a\"b") && !quotable("a\\b"));
    assert!(
        c.contains("source address 10.0.0.11;") && c.contains("multihop 2;"),
        "{c}"
    );
    assert!(c.contains("graceful restart time 30;"), "{c}");
    assert!(c.contains("ipv6 { table fedplane_v6;"), "{c}");
    // A peer whose node selector leaves this node out is not configured.
    assert!(!c.contains("peer_rack_b"), "{c}");
}

#[test]
fn bird_itself_accepts_the_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bird.conf");
    std::fs::write(&path, rendered()).expect("write");
    let out = Command::new("bird")
        .args(["-p", "-c"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bird ({e}): install bird2 (scripts/install-deps)"));
    assert!(
        out.status.success(),
        "bird -p refused the configuration: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn control_socket_replies_are_read() {
    let text = "2002-Name       Proto      Table      State  Since         Info\n\
                1002-device1    Device     ---        up     00:14:45.383  \n \
                peer_tor_a BGP        ---        up     00:14:45.383  Established   \n \
                peer_tor_b BGP        ---        start  00:14:45.383  Active        Socket: Connection refused\n \
                peer_tor_v6 BGP       ---        start  00:14:45.383  OpenSent\n \
                fedplane_kernel_ipv4 Kernel fedplane_v4 up 00:14:45.383\n\
                0000 \n";
    let reply = Reply::parse(text).expect("complete");
    assert!(!reply.is_error());
    let p = protocols(&reply);
    assert_eq!(p.get("peer_tor_a"), Some(&Session::Established));
    assert_eq!(p.get("peer_tor_b"), Some(&Session::Connecting));
    assert_eq!(p.get("peer_tor_v6"), Some(&Session::Opening));
    assert!(!p.contains_key("device1") && !p.contains_key("fedplane_kernel_ipv4"));
    // Incomplete: no last line yet.
    assert!(Reply::parse("1002-device1 Device --- up\n").is_none());
    let all = "1002-peer_tor_a BGP --- up 00:14:45.383 Established\n\
               1006-  BGP state:          Established\n    \
               Routes:         0 imported, 4 exported, 0 preferred\n\
               0000 \n";
    assert_eq!(exported(&Reply::parse(all).expect("complete")), Some(4));
    let err = Reply::parse("9001 syntax error\n").expect("complete");
    assert!(err.is_error() && err.text().contains("syntax error"));
}
