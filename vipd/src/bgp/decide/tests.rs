use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::ipam::Pools;

const DOC: &str = r#"
pools:
  - name: rack
    addresses: [10.4.0.0/24]
    mode: bgp
    bgp:
      aggregation_length: 28
  - name: selected
    addresses: [10.5.0.0/24]
    mode: bgp
    bgp:
      node_selector: {rack: a}
  - name: l2
    addresses: [10.6.0.0/24]
bgp:
  asn: 65001
  peers:
    - {name: tor, address: 10.0.0.1, asn: 65000}
"#;

fn pools() -> Pools {
    Pools::from_yaml(DOC).expect("valid")
}

fn node(name: &str) -> NodeView {
    NodeView {
        name: name.into(),
        labels: BTreeMap::from([("rack".into(), "a".into())]),
        ready: true,
        ..NodeView::default()
    }
}

fn svc(ip: &str, local: bool, ready: &[&str]) -> SvcView {
    SvcView {
        key: format!("ns/{ip}"),
        addresses: vec![ip.parse().expect("ip")],
        local,
        ready_nodes: ready.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn cluster_services_are_announced_aggregated_and_local_ones_where_their_endpoints_are() {
    let d = decide(
        &node("n1"),
        &pools(),
        &[
            svc("10.4.0.10", false, &["n2"]),
            svc("10.4.0.20", true, &["n1"]),
            svc("10.4.0.30", true, &["n2"]),
            svc("10.6.0.1", false, &["n1"]),
        ],
    );
    let routes: Vec<String> = d.routes.iter().map(ToString::to_string).collect();
    assert_eq!(routes, ["10.4.0.0/28", "10.4.0.20/32"]);
    assert_eq!(
        d.withdrawn.get(&ip("10.4.0.30")),
        Some(&Withdrawn::NoLocalEndpoint)
    );
    assert!(
        !d.withdrawn.contains_key(&ip("10.6.0.1")),
        "L2 addresses are not BGP's"
    );
}

#[test]
fn no_endpoint_anywhere_withdraws_unless_configured() {
    let d = decide(&node("n1"), &pools(), &[svc("10.4.0.10", false, &[])]);
    assert_eq!(
        d.withdrawn.get(&ip("10.4.0.10")),
        Some(&Withdrawn::NoEndpoints)
    );
    let keep = Pools::from_yaml(&DOC.replace(
        "asn: 65001",
        "asn: 65001\n  withdraw_without_endpoints: false",
    ))
    .expect("valid");
    let d = decide(&node("n1"), &keep, &[svc("10.4.0.10", false, &[])]);
    assert!(d.announced.contains(&ip("10.4.0.10")));
}

#[test]
fn the_node_state_comes_first() {
    let s = [svc("10.4.0.20", true, &["n1"])];
    let mut n = node("n1");
    n.unschedulable = true;
    assert_eq!(
        decide(&n, &pools(), &s).withdrawn[&ip("10.4.0.20")],
        Withdrawn::Cordoned
    );
    n.labels.insert(EXCLUDE_LABEL.into(), String::new());
    assert_eq!(
        decide(&n, &pools(), &s).withdrawn[&ip("10.4.0.20")],
        Withdrawn::Excluded
    );
    n.shutting_down = true;
    assert_eq!(
        decide(&n, &pools(), &s).withdrawn[&ip("10.4.0.20")],
        Withdrawn::Shutdown
    );
    let mut n = node("n1");
    n.ready = false;
    assert_eq!(
        decide(&n, &pools(), &s).withdrawn[&ip("10.4.0.20")],
        Withdrawn::NodeNotReady
    );
    // Cordoned but told to keep announcing.
    let keep =
        Pools::from_yaml(&DOC.replace("asn: 65001", "asn: 65001\n  withdraw_when_cordoned: false"))
            .expect("valid");
    let mut n = node("n1");
    n.unschedulable = true;
    assert!(decide(&n, &keep, &s).announced.contains(&ip("10.4.0.20")));
}

#[test]
fn the_pool_node_selector_limits_who_announces() {
    let s = [svc("10.5.0.1", false, &["n1"])];
    assert!(
        decide(&node("n1"), &pools(), &s)
            .announced
            .contains(&ip("10.5.0.1"))
    );
    let mut other = node("n2");
    other.labels.insert("rack".into(), "b".into());
    assert_eq!(
        decide(&other, &pools(), &s).withdrawn[&ip("10.5.0.1")],
        Withdrawn::NotSelected
    );
}

#[test]
fn a_shared_address_is_announced_when_either_service_says_so() {
    let d = decide(
        &node("n1"),
        &pools(),
        &[
            svc("10.4.0.20", true, &["n2"]),
            svc("10.4.0.20", true, &["n1"]),
        ],
    );
    assert!(d.announced.contains(&ip("10.4.0.20")));
    assert!(!d.withdrawn.contains_key(&ip("10.4.0.20")));
}

fn arb_svcs() -> impl Strategy<Value = Vec<SvcView>> {
    let names = ["n1", "n2", "n3"];
    proptest::collection::vec(
        (
            0u8..3,
            0u8..64,
            any::<bool>(),
            proptest::collection::btree_set(0usize..3, 0..3),
        ),
        0..12,
    )
    .prop_map(move |v| {
        v.into_iter()
            .map(|(pool, host, local, ready)| SvcView {
                key: format!("ns/s{pool}-{host}"),
                addresses: vec![IpAddr::from([10, 4 + pool, 0, host])],
                local,
                ready_nodes: ready.into_iter().map(|i| names[i].to_owned()).collect(),
            })
            .collect()
    })
}

fn arb_node() -> impl Strategy<Value = NodeView> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(ready, unschedulable, shutting_down, excluded, rack_a)| {
            let mut n = node("n1");
            n.ready = ready;
            n.unschedulable = unschedulable;
            n.shutting_down = shutting_down;
            if excluded {
                n.labels.insert(EXCLUDE_LABEL.into(), "true".into());
            }
            if !rack_a {
                n.labels.insert("rack".into(), "b".into());
            }
            n
        })
}

proptest! {
    #[test]
    fn decisions_hold_their_rules(n in arb_node(), svcs in arb_svcs()) {
        let pools = pools();
        let d = decide(&n, &pools, &svcs);
        // A node going away, excluded or cordoned announces nothing.
        if n.shutting_down || n.excluded() || n.unschedulable || !n.ready {
            prop_assert!(d.routes.is_empty() && d.announced.is_empty());
        }
        // Every address of a BGP pool is announced or has one reason, never both.
        for s in &svcs {
            for ip in &s.addresses {
                let bgp = pools.pool_of(*ip).is_some_and(|p| p.mode == crate::ipam::Mode::Bgp);
                prop_assert_eq!(bgp, d.announced.contains(ip) || d.withdrawn.contains_key(ip));
                prop_assert!(!(d.announced.contains(ip) && d.withdrawn.contains_key(ip)));
            }
        }
        // A Local-only address is announced only with a ready endpoint here.
        for ip in &d.announced {
            let holders: Vec<&SvcView> = svcs.iter().filter(|s| s.addresses.contains(ip)).collect();
            prop_assert!(holders.iter().any(|s| !s.local || s.ready_nodes.contains(&n.name)));
        }
        // Every route covers an announced address, and every announced address is covered.
        for r in &d.routes {
            prop_assert!(d.announced.iter().any(|ip| r.contains(ip)));
        }
        for ip in &d.announced {
            prop_assert!(d.routes.iter().any(|r| r.contains(ip)));
        }
        // The order of the Services does not matter.
        let mut rev = svcs.clone();
        rev.reverse();
        let r = decide(&n, &pools, &rev);
        prop_assert_eq!(&r.routes, &d.routes);
        prop_assert_eq!(&r.announced, &d.announced);
        // A ready endpoint on this node never takes a route away.
        let more: Vec<SvcView> = svcs.iter().cloned().map(|mut s| { s.ready_nodes.insert(n.name.clone()); s }).collect();
        let m = decide(&n, &pools, &more);
        prop_assert!(d.routes.is_subset(&m.routes) || d.routes.iter().all(|r| m.routes.iter().any(|q| q.contains(&r.network()))));
        let _: BTreeSet<IpAddr> = m.announced;
    }
}
