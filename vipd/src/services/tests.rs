use super::*;
use std::net::Ipv4Addr;

fn service(yaml: &str) -> Service {
    serde_saphyr::from_str(yaml).expect("a Service")
}

#[test]
fn services_are_read_as_assignment_needs_them() {
    let s = service(
        "metadata: {namespace: shop, name: web, creationTimestamp: '2026-01-02T03:04:05Z', \
           annotations: {fedplane.io/load-balancer-ips: '10.4.0.9, fd00::9', fedplane.io/address-pool: blue}}\n\
         spec: {type: LoadBalancer, ipFamilies: [IPv6, IPv4]}\n\
         status: {loadBalancer: {ingress: [{ip: 'fd00::9'}, {hostname: lb.example}]}}",
    );
    let svc = svc_of(&s, DEFAULT_CLASS);
    assert_eq!(svc.key, "shop/web");
    assert_eq!(svc.created, "2026-01-02T03:04:05Z");
    assert_eq!(svc.kind, Kind::Ours);
    assert_eq!(svc.families, [Family::V6, Family::V4]);
    assert_eq!(svc.requested.len(), 2);
    assert_eq!(svc.pool.as_deref(), Some("blue"));
    assert_eq!(svc.current, ["fd00::9".parse::<IpAddr>().expect("ip")]);

    let old = service("metadata: {name: a}\nspec: {type: LoadBalancer, loadBalancerIP: 10.0.0.x}");
    let svc = svc_of(&old, DEFAULT_CLASS);
    assert_eq!(svc.key, "default/a");
    assert_eq!(svc.families, [Family::V4]);
    assert_eq!(
        svc.bad_request.as_deref(),
        Some("spec.loadBalancerIP: \"10.0.0.x\" is not an IP address")
    );
    let other =
        service("metadata: {name: a}\nspec: {type: LoadBalancer, loadBalancerClass: metallb}");
    assert_eq!(svc_of(&other, DEFAULT_CLASS).kind, Kind::Foreign);
    assert_eq!(svc_of(&other, "metallb").kind, Kind::Ours);
    let plain = service("metadata: {name: a}\nspec: {type: ClusterIP, clusterIPs: ['fd00::1']}");
    assert_eq!(svc_of(&plain, DEFAULT_CLASS).kind, Kind::NotLoadBalancer);
    let v6 = service("metadata: {name: a}\nspec: {type: LoadBalancer, clusterIPs: ['fd00::1']}");
    assert_eq!(svc_of(&v6, DEFAULT_CLASS).families, [Family::V6]);
}

#[test]
fn the_legacy_configmap_is_read_and_bad_entries_reported() {
    let data: BTreeMap<String, String> = [
        ("10.4.0.50", "default/echoheaders"),
        ("10.4.0.51", "shop/web:PROXY"),
        ("10.4.0.52", "nonamespace"),
        ("banana", "default/x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let (map, ignored) = legacy_map(&data);
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert_eq!(map[&ip("10.4.0.50")], "default/echoheaders");
    assert_eq!(map[&ip("10.4.0.51")], "shop/web");
    assert_eq!(map.len(), 2);
    assert_eq!(
        ignored,
        [
            "10.4.0.52: \"nonamespace\" is not namespace/name",
            "\"banana\": not an IP address"
        ]
    );
}

#[test]
fn addresses_spread_over_their_familys_groups() {
    let ips: BTreeSet<IpAddr> = (1..=40u8)
        .map(|i| IpAddr::from([10, 0, 0, i]))
        .chain(["fd00::1".parse().expect("ip")])
        .collect();
    let group = |vrid| GroupId {
        family: Family::V4,
        vrid,
    };
    let Spread {
        per_group: groups,
        homeless,
        ..
    } = spread(&ips, &[group(61), group(62)], None);
    assert_eq!(groups[0].len() + groups[1].len(), 40);
    assert!(!groups[0].is_empty() && !groups[1].is_empty());
    assert_eq!(homeless.len(), 1);
    // Another node listing its groups the other way round agrees.
    let other = spread(&ips, &[group(62), group(61)], None).per_group;
    assert_eq!((&groups[0], &groups[1]), (&other[1], &other[0]));
}

#[test]
fn the_status_patch_sets_or_clears_the_ingress() {
    let ip: IpAddr = "10.0.0.1".parse().expect("ip");
    assert_eq!(
        status_patch(&[ip]),
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}})
    );
    assert_eq!(
        status_patch(&[]),
        json!({"status": {"loadBalancer": {"ingress": null}}})
    );
}

#[test]
fn the_group_is_picked_alike_on_every_node_and_spreads() {
    let a = "10.4.0.50".parse::<IpAddr>().expect("ip");
    let picked = pick_group(a, &[61, 62, 63, 64]).expect("a group");
    // Whatever the order of the list.
    assert_eq!(pick_group(a, &[64, 63, 62, 61]), Some(picked));
    let mut counts = BTreeMap::new();
    for i in 0..=255u8 {
        let g = pick_group(IpAddr::V4(Ipv4Addr::new(10, 4, 0, i)), &[61, 62, 63, 64]);
        *counts.entry(g.expect("a group")).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 4);
    assert!(counts.values().all(|c| *c > 32), "{counts:?}");
    // A group added moves only the addresses it wins.
    for i in 0..=255u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 4, 0, i));
        let before = pick_group(ip, &[61, 62, 63, 64]);
        let after = pick_group(ip, &[61, 62, 63, 64, 65]);
        assert!(after == before || after == Some(65));
    }
    assert_eq!(pick_group(a, &[7]), Some(7));
    assert_eq!(pick_group(a, &[]), None);
}

fn versioned(name: &str, version: &str, ip: Option<&str>) -> Service {
    let status = ip.map_or(String::new(), |ip| {
        format!("\nstatus: {{loadBalancer: {{ingress: [{{ip: '{ip}'}}]}}}}")
    });
    service(&format!(
        "metadata: {{namespace: default, name: {name}, resourceVersion: '{version}'}}\n\
         spec: {{type: LoadBalancer}}{status}"
    ))
}

fn names_and_ips(view: &[Arc<Service>]) -> Vec<(String, Vec<IpAddr>)> {
    let mut v: Vec<_> = view
        .iter()
        .map(|s| {
            let svc = svc_of(s, DEFAULT_CLASS);
            (svc.key, svc.current)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_quorum_list_corrects_the_cache_until_the_watch_catches_up() {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let cache = vec![
        Arc::new(versioned("same", "1", None)),
        Arc::new(versioned("stale", "2", None)),
        Arc::new(versioned("gone", "3", None)),
    ];
    let listed = vec![
        versioned("same", "1", None),
        versioned("stale", "7", Some("10.0.0.2")),
        versioned("missed", "8", Some("10.0.0.3")),
    ];
    let mut fresh = Fresh::default();
    assert_eq!(fresh.listed(&cache, listed), 3, "stale, gone and missed");
    let want = vec![
        ("default/missed".to_owned(), vec![ip("10.0.0.3")]),
        ("default/same".to_owned(), vec![]),
        ("default/stale".to_owned(), vec![ip("10.0.0.2")]),
    ];
    assert_eq!(names_and_ips(&fresh.view(&cache)), want);
    // The watch delivers "stale" at its new version and the deletion of "gone": those
    // corrections go; "missed" is still missing from the cache, so its correction holds.
    let caught_up = vec![
        Arc::new(versioned("same", "1", None)),
        Arc::new(versioned("stale", "7", Some("10.0.0.2"))),
    ];
    assert_eq!(names_and_ips(&fresh.view(&caught_up)), want);
    assert_eq!(fresh.len(), 1);
    fresh.forget();
    assert!(fresh.is_empty());
    assert_eq!(fresh.view(&caught_up).len(), 2);
}

#[test]
fn our_own_writes_are_planned_from_until_the_cache_shows_them() {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let cache = vec![Arc::new(versioned("web", "4", None))];
    let mut fresh = Fresh::default();
    fresh.wrote(Some("4".into()), versioned("web", "5", Some("10.0.0.2")));
    let view = fresh.view(&cache);
    assert_eq!(
        names_and_ips(&view),
        [("default/web".to_owned(), vec![ip("10.0.0.2")])]
    );
    // The next write's precondition is the version we wrote, not the cache's.
    assert_eq!(view[0].metadata.resource_version.as_deref(), Some("5"));
    // Someone else changed it meanwhile (the cache moves past 4): the cache is believed.
    let moved = vec![Arc::new(versioned("web", "6", None))];
    assert_eq!(
        names_and_ips(&fresh.view(&moved)),
        [("default/web".to_owned(), vec![])]
    );
    assert!(fresh.is_empty());
}

/// `Local` addresses under the endpoint rule, each node computing it from its own view of the
/// groups' masters (a node may not know some other node's mastership yet; it always knows its
/// own): an address is held by at most one node, only by a node with a ready endpoint, and,
/// once every view is complete, by exactly one node whenever some group's master has one.
mod endpoint_rule {
    use super::*;
    use proptest::prelude::*;

    fn node(i: usize) -> String {
        format!("n{i}")
    }

    proptest! {
        #[test]
        fn local_addresses_are_held_at_most_once_and_only_where_an_endpoint_runs(
            nodes in 1usize..6,
            // Each group's master: a node index (beyond the nodes: none).
            masters in prop::collection::vec(0usize..8, 1..6),
            // Each address's ready nodes, as bits.
            ready in prop::collection::vec(0u8..64, 1..12),
            cluster in prop::collection::vec(any::<bool>(), 12),
            // Per node, the groups whose master it does not know (bits); ignored when complete.
            unknown in prop::collection::vec(0u8..64, 6),
            complete in any::<bool>(),
        ) {
            let groups: Vec<GroupId> = (0..masters.len())
                .map(|v| GroupId { family: Family::V4, vrid: u8::try_from(v + 1).expect("vrid") })
                .collect();
            let addresses: BTreeSet<IpAddr> = (0..ready.len())
                .map(|i| IpAddr::from([10, 0, 0, u8::try_from(i + 1).expect("ip")]))
                .collect();
            let local: BTreeMap<IpAddr, BTreeSet<String>> = addresses
                .iter()
                .zip(&ready)
                .zip(&cluster)
                .filter(|(_, c)| !**c)
                .map(|((ip, bits), _)| {
                    (*ip, (0..nodes).filter(|n| bits & (1 << n) != 0).map(node).collect())
                })
                .collect();
            let master_of: BTreeMap<GroupId, String> = groups
                .iter()
                .zip(&masters)
                .filter(|(_, m)| **m < nodes)
                .map(|(g, m)| (*g, node(*m)))
                .collect();
            // What each node holds: the addresses of the groups it masters, by its own spread.
            let mut holders: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
            let mut unheld = None;
            for (n, unknown) in unknown.iter().enumerate().take(nodes) {
                let view: BTreeMap<GroupId, String> = master_of
                    .iter()
                    .enumerate()
                    .filter(|(g, (_, m))| complete || **m == node(n) || unknown & (1 << g) == 0)
                    .map(|(_, (g, m))| (*g, m.clone()))
                    .collect();
                let e = Endpoints { node: node(n), local: local.clone(), masters: view };
                let s = spread(&addresses, &groups, Some(&e));
                if complete {
                    prop_assert!(unheld.as_ref().is_none_or(|u| *u == s.unheld), "nodes agree on the unheld");
                    unheld = Some(s.unheld.clone());
                }
                for (g, ips) in groups.iter().zip(&s.per_group) {
                    if master_of.get(g) == Some(&node(n)) {
                        for ip in ips {
                            holders.entry(*ip).or_default().push(node(n));
                        }
                    }
                }
            }
            for ip in &addresses {
                let held_by = holders.get(ip).cloned().unwrap_or_default();
                prop_assert!(held_by.len() <= 1, "{} held by {:?}", ip, held_by);
                match local.get(ip) {
                    Some(ready) => {
                        prop_assert!(held_by.iter().all(|n| ready.contains(n)), "{ip} on {held_by:?}, endpoints on {ready:?}");
                        // Groups without a master: nobody knows, so the pick may wait for one.
                        let all_known = master_of.len() == groups.len();
                        if complete && all_known {
                            let can = master_of.values().any(|m| ready.contains(m));
                            prop_assert_eq!(held_by.len(), usize::from(can), "{} held by {:?}", ip, held_by);
                            prop_assert_eq!(unheld.as_ref().is_some_and(|u| u.contains(ip)), !can);
                        }
                    }
                    // Cluster: in its group, whatever the endpoints.
                    None => prop_assert!(unheld.as_ref().is_none_or(|u| !u.contains(ip))),
                }
            }
        }
    }
}
