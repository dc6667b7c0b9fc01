use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::Strategy;

use super::*;
use crate::fixtures::seed_cluster;
use crate::policy::{self, Policy};
use crate::view::{self, ServiceHealth, ViewSettings};

fn naming() -> Naming {
    Naming {
        prefix: "/skydns".into(),
        domain: "example.com".into(),
        federation: "federation".into(),
        ttl: 30,
    }
}

/// The seed's three clusters, with `hello-world` ready endpoints per cluster.
fn seeds(ready: [usize; 3]) -> Vec<ClusterView> {
    [
        ("fcp", "europe", "fr", "10.210.1.68"),
        ("usa", "america", "us", "10.210.3.65"),
        ("chn", "asia", "cn", "10.210.2.65"),
    ]
    .iter()
    .zip(ready)
    .map(|((name, region, zone, ip), ready)| {
        let s = ViewSettings {
            cluster: (*name).into(),
            ..ViewSettings::default()
        };
        view::build(&s, &seed_cluster(region, zone, ip, ready)).0
    })
    .collect()
}

/// name → sorted hosts, read back from the desired keys the way a SkyDNS reader aggregates
/// them (every key below a name's key is a record of that name).
fn answers(d: &Desired, n: &Naming, name: &str) -> Vec<String> {
    let key = format!("{}/", n.key(name));
    let mut hosts: Vec<String> = d
        .iter()
        .filter(|(k, _)| k.starts_with(&key) && !is_srv(k))
        .map(|(_, v)| {
            serde_json::from_str::<OwnedValue>(v)
                .expect("our value parses")
                .host
        })
        .collect();
    hosts.sort();
    hosts
}

#[test]
fn seed_federation_answers_every_ingress_globally_and_one_per_region_and_zone() {
    let n = naming();
    let d = plan(&n, &seeds([2, 2, 2]));
    assert_eq!(
        answers(&d, &n, "hello-world.default.federation.svc.example.com"),
        ["10.210.1.68", "10.210.2.65", "10.210.3.65"]
    );
    assert_eq!(
        answers(
            &d,
            &n,
            "hello-world.default.federation.svc.europe.example.com"
        ),
        ["10.210.1.68"]
    );
    assert_eq!(
        answers(
            &d,
            &n,
            "hello-world.default.federation.svc.us.america.example.com"
        ),
        ["10.210.3.65"]
    );
    assert!(
        d.contains_key("/skydns/com/example/svc/federation/default/hello-world/fcp/10-210-1-68")
    );
    assert_eq!(
        d["/skydns/com/example/asia/cn/svc/federation/default/hello-world/chn/10-210-2-65"],
        r#"{"host":"10.210.2.65","ttl":30,"managed-by":"fedplane-controller/federation"}"#
    );
    assert_eq!(d.len(), 9);
}

#[test]
fn zone_name_falls_back_to_region_then_global_when_a_cluster_has_no_ready_endpoints() {
    let n = naming();
    let d = plan(&n, &seeds([0, 2, 2]));
    assert_eq!(
        answers(
            &d,
            &n,
            "hello-world.default.federation.svc.fr.europe.example.com"
        ),
        ["hello-world.default.federation.svc.europe.example.com"]
    );
    assert_eq!(
        answers(
            &d,
            &n,
            "hello-world.default.federation.svc.europe.example.com"
        ),
        ["hello-world.default.federation.svc.example.com"]
    );
    assert_eq!(
        answers(&d, &n, "hello-world.default.federation.svc.example.com"),
        ["10.210.2.65", "10.210.3.65"]
    );
}

#[test]
fn a_service_healthy_nowhere_has_no_global_record_but_keeps_its_fallbacks() {
    let n = naming();
    let d = plan(&n, &seeds([0, 0, 0]));
    assert!(answers(&d, &n, "hello-world.default.federation.svc.example.com").is_empty());
    assert_eq!(d.len(), 6, "three zone and three region CNAMEs: {d:#?}");
}

#[test]
fn a_service_gone_from_every_cluster_has_no_records() {
    let mut clusters = seeds([2, 2, 2]);
    for c in &mut clusters {
        c.services.clear();
    }
    assert!(plan(&naming(), &clusters).is_empty());
}

#[test]
fn a_second_cluster_in_a_zone_adds_its_own_leaf() {
    let n = naming();
    let mut clusters = seeds([2, 2, 2]);
    let mut twin = clusters[0].clone();
    twin.name = "fcp2".into();
    clusters.push(twin);
    let d = plan(&n, &clusters);
    let zone = n.key("hello-world.default.federation.svc.fr.europe.example.com");
    assert!(d.contains_key(&format!("{zone}/fcp/10-210-1-68")));
    assert!(d.contains_key(&format!("{zone}/fcp2/10-210-1-68")));
}

#[test]
fn diff_is_empty_when_nothing_changed_and_lists_creates_updates_deletes() {
    let n = naming();
    let desired = plan(&n, &seeds([2, 2, 2]));
    let owned: BTreeMap<String, Owned> = desired
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Owned {
                    value: v.clone(),
                    mod_revision: 7,
                },
            )
        })
        .collect();
    assert!(diff(&desired, &owned).is_empty());

    let changed = plan(&n, &seeds([0, 2, 2]));
    let changes = diff(&changed, &owned);
    let summary: Vec<String> = changes
        .iter()
        .map(|c| {
            c.to_string()
                .split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        summary,
        [
            "+ /skydns/com/example/europe/fr/svc/federation/default/hello-world/_cname",
            "- /skydns/com/example/europe/fr/svc/federation/default/hello-world/fcp/10-210-1-68",
            "+ /skydns/com/example/europe/svc/federation/default/hello-world/_cname",
            "- /skydns/com/example/europe/svc/federation/default/hello-world/fcp/10-210-1-68",
            "- /skydns/com/example/svc/federation/default/hello-world/fcp/10-210-1-68",
        ]
    );
}

#[test]
fn owner_marker_is_read_back_and_foreign_values_have_none() {
    let d = plan(&naming(), &seeds([1, 1, 1]));
    for v in d.values() {
        assert_eq!(
            owner_of(v.as_bytes()).as_deref(),
            Some("fedplane-controller/federation")
        );
    }
    assert_eq!(
        owner_of(br#"{"host":"1.2.3.4","owner":"external-dns"}"#),
        None
    );
    assert_eq!(owner_of(b"not json"), None);
}

/// `clusters` with every Service on `strategy`.
/// The first Service of a view, to change (the views' persistent maps have no `values_mut`).
fn first_mut(c: &mut ClusterView) -> &mut ServiceHealth {
    let id = c.services.keys().next().expect("a Service").clone();
    c.services.get_mut(&id).expect("the Service")
}

/// Changes every Service of a view.
fn each_mut(c: &mut ClusterView, mut f: impl FnMut(&mut ServiceHealth)) {
    let ids: Vec<ServiceId> = c.services.keys().cloned().collect();
    for id in ids {
        f(c.services.get_mut(&id).expect("the Service"));
    }
}

fn with_strategy(mut clusters: Vec<ClusterView>, strategy: &policy::Strategy) -> Vec<ClusterView> {
    for c in &mut clusters {
        each_mut(c, |h| {
            h.policy.strategy = strategy.clone();
        });
    }
    clusters
}

/// name → (cluster leaf, value) of each address record.
/// Whether `key` is an SRV record's (below its level name's key, so a SkyDNS reader counts it
/// in that name's subtree; fedplane-dns leaves its name host out of the address answers
/// there, and out of the CNAME of a fallback name, whose `_cname` sorts first).
fn is_srv(key: &str) -> bool {
    key.ends_with(&format!("/{SRV_LEAF}"))
}

/// The address and CNAME records of `name`, by their first leaf label (the cluster).
fn records(d: &Desired, n: &Naming, name: &str) -> Vec<(String, OwnedValue)> {
    let key = format!("{}/", n.key(name));
    d.iter()
        .filter(|(k, _)| !is_srv(k))
        .filter_map(|(k, v)| {
            let leaf = k.strip_prefix(&key)?;
            let cluster = leaf.split('/').next()?.to_owned();
            Some((cluster, serde_json::from_str(v).expect("our value parses")))
        })
        .collect()
}

const GLOBAL: &str = "hello-world.default.federation.svc.example.com";
const EUROPE: &str = "hello-world.default.federation.svc.europe.example.com";
const FR_NAME: &str = "hello-world.default.federation.svc.fr.europe.example.com";

#[test]
fn closest_writes_each_address_with_its_cluster_zone_and_region() {
    let n = naming();
    let d = plan(
        &n,
        &with_strategy(seeds([2, 2, 2]), &policy::Strategy::Closest),
    );
    let got: Vec<(String, Option<String>, Option<String>)> = records(&d, &n, GLOBAL)
        .into_iter()
        .map(|(c, v)| (c, v.zone, v.region))
        .collect();
    let l = |c: &str, z: &str, r: &str| (c.to_owned(), Some(z.to_owned()), Some(r.to_owned()));
    assert_eq!(
        got,
        [
            l("chn", "cn", "asia"),
            l("fcp", "fr", "europe"),
            l("usa", "us", "america")
        ]
    );
    // The zone names stay plain.
    let zone = records(
        &d,
        &n,
        "hello-world.default.federation.svc.fr.europe.example.com",
    );
    assert!(
        zone.iter()
            .all(|(_, v)| v.zone.is_none() && v.weight.is_none())
    );
}

#[test]
fn failover_answers_the_first_healthy_cluster_in_order_at_the_global_and_region_names() {
    let n = naming();
    let order = policy::Strategy::Failover(vec!["usa".into(), "fcp".into()]);
    let d = plan(&n, &with_strategy(seeds([2, 2, 2]), &order));
    assert_eq!(answers(&d, &n, GLOBAL), ["10.210.3.65"]);
    assert_eq!(answers(&d, &n, EUROPE), ["10.210.1.68"]);
    // usa down: fcp (named next); fcp down too: chn (not named, after the named ones).
    let d = plan(&n, &with_strategy(seeds([2, 0, 2]), &order));
    assert_eq!(answers(&d, &n, GLOBAL), ["10.210.1.68"]);
    let d = plan(&n, &with_strategy(seeds([0, 0, 2]), &order));
    assert_eq!(answers(&d, &n, GLOBAL), ["10.210.2.65"]);
    // Europe without a healthy cluster: its region name falls back to the global name.
    assert_eq!(answers(&d, &n, EUROPE), [GLOBAL]);
    // Unnamed clusters in --cluster order: fcp, then usa.
    let d = plan(
        &n,
        &with_strategy(seeds([2, 2, 2]), &policy::Strategy::Failover(vec![])),
    );
    assert_eq!(answers(&d, &n, GLOBAL), ["10.210.1.68"]);
}

#[test]
fn weighted_writes_the_cluster_weights_and_leaves_out_unweighted_clusters() {
    let n = naming();
    let weights =
        policy::Strategy::Weighted(BTreeMap::from([("fcp".into(), 3), ("usa".into(), 1)]));
    let d = plan(&n, &with_strategy(seeds([2, 2, 2]), &weights));
    let got: Vec<(String, Option<u32>)> = records(&d, &n, GLOBAL)
        .into_iter()
        .map(|(c, v)| (c, v.weight))
        .collect();
    assert_eq!(
        got,
        [("fcp".to_owned(), Some(3)), ("usa".to_owned(), Some(1))]
    );
    // No weighted cluster healthy: the others answer, without weights.
    let d = plan(&n, &with_strategy(seeds([0, 0, 2]), &weights));
    let got: Vec<(String, Option<u32>)> = records(&d, &n, GLOBAL)
        .into_iter()
        .map(|(c, v)| (c, v.weight))
        .collect();
    assert_eq!(got, [("chn".to_owned(), None)]);
}

#[test]
fn a_cluster_with_two_addresses_of_a_family_splits_its_weight_between_them() {
    let n = naming();
    let mut clusters = seeds([2, 2, 2]);
    let h = first_mut(&mut clusters[0]);
    h.ingress = vec![
        "10.210.1.68".parse().expect("address"),
        "10.210.1.69".parse().expect("address"),
        "fd00::1".parse().expect("address"),
    ];
    let weights =
        policy::Strategy::Weighted(BTreeMap::from([("fcp".into(), 3), ("usa".into(), 1)]));
    let d = plan(&n, &with_strategy(clusters, &weights));
    let got: Vec<(String, u32)> = records(&d, &n, GLOBAL)
        .into_iter()
        .map(|(_, v)| (v.host, v.weight.expect("weighted")))
        .collect();
    // IPv4: fcp's two addresses 3 each, usa's one 2 (3:1 per cluster); IPv6: fcp alone.
    assert_eq!(
        got,
        [
            ("10.210.1.68".into(), 3),
            ("10.210.1.69".into(), 3),
            ("fd00::1".into(), 3),
            ("10.210.3.65".into(), 2)
        ]
    );
}

#[test]
fn uneven_address_counts_keep_the_shares_of_the_weights() {
    // 4, 5 and 7 addresses: their lcm (140) times the heaviest weight passes 65535, so the
    // weights are rounded, not multiplied by the count.
    let n = naming();
    let mut clusters = seeds([2, 2, 2]);
    for (c, count) in clusters.iter_mut().zip([4u8, 5, 7]) {
        first_mut(c).ingress = (1..=count)
            .map(|i| IpAddr::from([10, 9, count, i]))
            .collect();
    }
    let weights = policy::Strategy::Weighted(BTreeMap::from([
        ("fcp".into(), 500),
        ("usa".into(), 500),
        ("chn".into(), 1),
    ]));
    let d = plan(&n, &with_strategy(clusters, &weights));
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for (c, v) in records(&d, &n, GLOBAL) {
        *sums.entry(c).or_default() += u64::from(v.weight.expect("weighted"));
    }
    let total: u64 = sums.values().sum();
    let share = |c: &str| sums[c] as f64 / total as f64;
    assert!((share("fcp") - 0.4995).abs() < 0.005, "{sums:?}");
    assert!((share("usa") - 0.4995).abs() < 0.005, "{sums:?}");
    assert!(share("chn") < 0.003, "{sums:?}");
}

#[test]
fn closest_writes_a_record_in_each_locality_of_a_cluster_across_zones() {
    let n = naming();
    let mut clusters = seeds([2, 2, 2]);
    let us = Locality {
        region: "america".into(),
        zone: "us".into(),
    };
    let h = first_mut(&mut clusters[0]);
    h.ready_localities.insert(us);
    let d = plan(&n, &with_strategy(clusters, &policy::Strategy::Closest));
    let fcp: Vec<(Option<String>, Option<String>)> = records(&d, &n, GLOBAL)
        .into_iter()
        .filter(|(c, _)| c == "fcp")
        .map(|(_, v)| (v.zone, v.region))
        .collect();
    assert_eq!(
        fcp,
        [
            (Some("us".into()), Some("america".into())),
            (Some("fr".into()), Some("europe".into()))
        ]
    );
}

#[test]
fn every_member_has_zone_names_for_a_service_it_does_not_run() {
    let n = naming();
    let mut clusters = seeds([2, 2, 2]);
    clusters[0].services.clear(); // fcp does not run hello-world
    let d = plan(&n, &clusters);
    assert_eq!(answers(&d, &n, FR_NAME), [EUROPE]);
    assert_eq!(answers(&d, &n, EUROPE), [GLOBAL]);
}

#[test]
fn a_withdrawn_first_cluster_keeps_the_strategy_it_decides() {
    let n = naming();
    let order = policy::Strategy::Failover(vec!["fcp".into(), "usa".into(), "chn".into()]);
    let mut clusters = with_strategy(seeds([2, 2, 2]), &order);
    clusters[0] = clusters[0].withdrawn();
    let d = plan(&n, &clusters);
    assert_eq!(answers(&d, &n, GLOBAL), ["10.210.3.65"]);
}

#[test]
fn ipv6_and_dual_stack_ingress_give_aaaa_records_at_every_level() {
    let n = naming();
    let mut clusters = seeds([2, 2, 0]);
    first_mut(&mut clusters[0]).ingress = vec![
        "10.210.1.68".parse().expect("address"),
        "fd00:1::68".parse().expect("address"),
    ];
    first_mut(&mut clusters[1]).ingress = vec!["fd00:3::65".parse().expect("address")];
    let d = plan(&n, &clusters);
    assert_eq!(
        answers(&d, &n, GLOBAL),
        ["10.210.1.68", "fd00:1::68", "fd00:3::65"]
    );
    assert_eq!(answers(&d, &n, EUROPE), ["10.210.1.68", "fd00:1::68"]);
    assert_eq!(
        answers(
            &d,
            &n,
            "hello-world.default.federation.svc.us.america.example.com"
        ),
        ["fd00:3::65"]
    );
    assert_eq!(
        answers(
            &d,
            &n,
            "hello-world.default.federation.svc.cn.asia.example.com"
        ),
        ["hello-world.default.federation.svc.asia.example.com"]
    );
    let key = n.key(GLOBAL);
    assert!(d.contains_key(&format!("{key}/fcp/fd00-1--68")), "{d:#?}");
}

#[test]
fn the_first_cluster_that_has_the_service_decides_its_strategy() {
    let n = naming();
    let mut clusters = seeds([2, 2, 2]);
    first_mut(&mut clusters[1]).policy.strategy = policy::Strategy::Failover(vec![]);
    // fcp (first) says all.
    let d = plan(&n, &clusters);
    assert_eq!(answers(&d, &n, GLOBAL).len(), 3);
    clusters[0].services.clear();
    let d = plan(&n, &clusters);
    assert_eq!(answers(&d, &n, GLOBAL), ["10.210.3.65"]);
}

fn arb_strategy() -> impl Strategy<Value = policy::Strategy> {
    let names = || prop::sample::subsequence(vec!["c0", "c1", "c2", "c9"], 0..4);
    prop_oneof![
        Just(policy::Strategy::All),
        Just(policy::Strategy::Closest),
        names()
            .prop_shuffle()
            .prop_map(|v| policy::Strategy::Failover(v.into_iter().map(String::from).collect())),
        prop::collection::btree_map(
            prop::sample::select(vec!["c0", "c1", "c2", "c9"]),
            1..=1000u32,
            1..4
        )
        .prop_map(|m| policy::Strategy::Weighted(
            m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        )),
    ]
}

// === property tests ===

const REGIONS: [&str; 2] = ["europe", "asia"];
const ZONES: [&str; 2] = ["a", "b"];

fn arb_locality() -> impl Strategy<Value = Locality> {
    (0..2usize, 0..2usize).prop_map(|(r, z)| Locality {
        region: REGIONS[r].into(),
        zone: ZONES[z].into(),
    })
}

fn arb_health() -> impl Strategy<Value = ServiceHealth> {
    (
        prop::collection::btree_set(0u8..4, 0..3),
        0usize..3,
        prop::collection::btree_set(arb_locality(), 0..3),
    )
        .prop_map(|(ips, ready_endpoints, ready_localities)| ServiceHealth {
            ingress: ips
                .into_iter()
                .map(|i| IpAddr::from([10, 0, 0, i]))
                .collect(),
            ready_endpoints,
            ready_localities: if ready_endpoints == 0 {
                BTreeSet::new()
            } else {
                ready_localities
            },
            policy: Policy::default(),
            ports: Vec::new(),
            hostnames: Vec::new(),
        })
}

fn arb_clusters() -> impl Strategy<Value = Vec<ClusterView>> {
    prop::collection::vec(
        (
            prop::collection::btree_set(arb_locality(), 0..3),
            prop::collection::btree_map(0u8..3, arb_health(), 0..3),
        ),
        1..4,
    )
    .prop_map(|cs| {
        cs.into_iter()
            .enumerate()
            .map(|(i, (localities, services))| ClusterView {
                name: format!("c{i}"),
                localities,
                hosts: view::OrdMap::new(),
                services: services
                    .into_iter()
                    .map(|(s, mut h)| {
                        // Service `s<n>` has the named ports p0…p<n-1>, in every cluster.
                        h.ports = (0..u16::from(s))
                            .map(|p| view::NamedPort {
                                name: format!("p{p}"),
                                protocol: if p == 0 { "tcp" } else { "udp" }.into(),
                                port: 8000 + p,
                            })
                            .collect();
                        (
                            ServiceId {
                                namespace: "ns".into(),
                                name: format!("s{s}"),
                            },
                            h,
                        )
                    })
                    .collect(),
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn every_name_has_addresses_or_one_cname_and_addresses_come_from_healthy_clusters(
        clusters in arb_clusters()
    ) {
        let n = naming();
        let d = plan(&n, &clusters);
        // Group leaves by the name key they belong to.
        let mut by_name: BTreeMap<String, Vec<(&str, OwnedValue)>> = BTreeMap::new();
        for (k, v) in &d {
            let value: OwnedValue = serde_json::from_str(v).expect("our value parses");
            prop_assert_eq!(&value.managed_by, "fedplane-controller/federation");
            if is_srv(k) {
                // An SRV record: a port of its Service, targeting a name that holds addresses.
                let port = value.port.expect("an SRV record has a port");
                prop_assert!((8000..8003).contains(&port), "{k}: port {port}");
                let target = format!("{}/", n.key(&value.host));
                prop_assert!(d.iter().any(|(t, tv)| t.starts_with(&target)
                    && !is_srv(t)
                    && serde_json::from_str::<OwnedValue>(tv).is_ok_and(|tv| tv.host.parse::<IpAddr>().is_ok())),
                    "{k}: target {} holds no address", value.host);
                continue;
            }
            let (name_key, leaf) = match k.strip_suffix(&format!("/{CNAME_LEAF}")) {
                Some(name_key) => (name_key.to_owned(), CNAME_LEAF),
                None => {
                    let mut parts = k.rsplitn(3, '/');
                    let _ip = parts.next();
                    let cluster = parts.next().expect("cluster leaf");
                    (parts.next().expect("name key").to_owned(), cluster)
                }
            };
            by_name.entry(name_key).or_default().push((leaf, value));
        }
        for (name, leaves) in &by_name {
            let cnames = leaves.iter().filter(|(l, _)| *l == CNAME_LEAF).count();
            prop_assert!(cnames == 0 || leaves.len() == 1, "{name}: CNAME beside other records");
            for (leaf, v) in leaves {
                if *leaf == CNAME_LEAF {
                    continue;
                }
                let c = clusters.iter().find(|c| c.name == *leaf).expect("leaf is a cluster");
                let ip: IpAddr = v.host.parse().expect("address");
                let svc = ServiceId {
                    namespace: "ns".into(),
                    name: name.rsplit('/').next().expect("service label").to_owned(),
                };
                let h = c.services.get(&svc).expect("the cluster has the key's service");
                prop_assert!(h.healthy() && h.ingress.contains(&ip), "{name}/{leaf}: {ip}");
            }
        }
        for c in &clusters {
            for (svc, h) in &c.services {
                let mut global: Vec<String> = clusters
                    .iter()
                    .filter_map(|o| o.services.get(svc).filter(|oh| oh.healthy()))
                    .flat_map(|oh| oh.ingress.iter().map(ToString::to_string))
                    .collect();
                global.sort();
                prop_assert_eq!(answers(&d, &n, &n.global_name(svc)), global);
                for l in c.localities.iter().chain(&h.ready_localities) {
                    let zone = answers(&d, &n, &n.zone_name(svc, l));
                    prop_assert!(!zone.is_empty(), "zone name of a cluster that has the service exists");
                    let healthy_here = clusters.iter().any(|o| o.services.get(svc).is_some_and(|oh| {
                        oh.healthy() && (oh.ready_localities.contains(l) || (oh.ready_localities.is_empty() && o.localities.contains(l)))
                    }));
                    if !healthy_here {
                        prop_assert_eq!(zone, vec![n.region_name(svc, &l.region)]);
                    }
                }
            }
        }
    }

    #[test]
    fn plan_ignores_cluster_order_and_one_cluster_only_touches_its_leaves_and_cnames(
        clusters in arb_clusters(), changed in arb_clusters()
    ) {
        let n = naming();
        let d = plan(&n, &clusters);
        let mut reversed = clusters.clone();
        reversed.reverse();
        prop_assert_eq!(&d, &plan(&n, &reversed));

        // Replace cluster c0's view: no other cluster's address key changes.
        let mut next = clusters.clone();
        next[0] = ClusterView { name: "c0".into(), ..changed[0].clone() };
        let d2 = plan(&n, &next);
        let others = |d: &Desired| -> Desired {
            d.iter()
                .filter(|(k, _)| !k.ends_with(CNAME_LEAF) && !is_srv(k) && !k.contains("/c0/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        prop_assert_eq!(others(&d), others(&d2));
    }

    #[test]
    fn applying_the_diff_reaches_the_plan_and_then_nothing_is_written(
        before in arb_clusters(), after in arb_clusters()
    ) {
        let n = naming();
        let mut owned: BTreeMap<String, Owned> = plan(&n, &before)
            .into_iter()
            .map(|(k, value)| (k, Owned { value, mod_revision: 1 }))
            .collect();
        let desired = plan(&n, &after);
        for c in diff(&desired, &owned) {
            match c {
                Change::Create { key, value } | Change::Update { key, value, .. } => {
                    owned.insert(key, Owned { value, mod_revision: 2 });
                }
                Change::Delete { key, .. } => {
                    owned.remove(&key);
                }
            }
        }
        prop_assert!(diff(&desired, &owned).is_empty());
        let reached: Desired = owned.into_iter().map(|(k, o)| (k, o.value)).collect();
        prop_assert_eq!(reached, desired);
    }

    #[test]
    fn incremental_replan_equals_a_full_plan(
        before in arb_clusters(), changed in arb_clusters(), owned_from in arb_clusters()
    ) {
        let n = naming();
        // Same clusters and localities, other services: the incremental path.
        let after: Vec<ClusterView> = before
            .iter()
            .zip(changed.iter().cycle())
            .map(|(b, c)| ClusterView { services: c.services.clone(), ..b.clone() })
            .collect();
        let mut desired = plan(&n, &before);
        let keys = replan(&n, &before, &after, &mut desired).expect("incremental");
        prop_assert_eq!(&desired, &plan(&n, &after));
        // Owned keys that match `before` everywhere but the changed keys: the narrow diff
        // equals the full one.
        let owned: BTreeMap<String, Owned> = plan(&n, &before)
            .into_iter()
            .map(|(k, value)| (k, Owned { value, mod_revision: 1 }))
            .collect();
        prop_assert_eq!(diff_keys(&desired, &owned, &keys), diff(&desired, &owned));
        // Other clusters or localities: a full plan.
        let mut full = plan(&n, &before);
        prop_assert!(replan(&n, &before, &owned_from, &mut full).is_none() || before.iter().zip(&owned_from).all(|(b, o)| b.name == o.name && b.localities == o.localities));
        prop_assert_eq!(full, plan(&n, &owned_from));
    }
    #[test]
    fn every_strategy_answers_from_healthy_clusters_and_only_as_it_says(
        clusters in arb_clusters(), strategy in arb_strategy()
    ) {
        let n = naming();
        let clusters = with_strategy(clusters, &strategy);
        let d = plan(&n, &clusters);
        let mut services: BTreeSet<&ServiceId> = BTreeSet::new();
        for c in &clusters {
            services.extend(c.services.keys());
        }
        for svc in services {
            let healthy: Vec<&ClusterView> = clusters
                .iter()
                .filter(|c| c.services.get(svc).is_some_and(ServiceHealth::healthy))
                .collect();
            let got = records(&d, &n, &n.global_name(svc));
            let leaves: BTreeSet<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
            prop_assert_eq!(got.is_empty(), healthy.is_empty());
            for (c, v) in &got {
                let h = clusters.iter().find(|o| o.name == *c).and_then(|o| o.services.get(svc));
                prop_assert!(h.is_some_and(|h| h.healthy() && h.ingress.iter().any(|ip| ip.to_string() == v.host)));
                prop_assert_eq!(v.zone.is_some() || v.region.is_some(), matches!(strategy, policy::Strategy::Closest) && (v.zone.is_some() || v.region.is_some()));
            }
            let all: BTreeSet<&str> = healthy.iter().map(|c| c.name.as_str()).collect();
            match &strategy {
                policy::Strategy::All | policy::Strategy::Closest => prop_assert_eq!(leaves, all),
                policy::Strategy::Failover(order) => {
                    let first = healthy
                        .iter()
                        .enumerate()
                        .min_by_key(|(i, c)| order.iter().position(|o| *o == c.name).unwrap_or(order.len() + i))
                        .map(|(_, c)| c.name.as_str());
                    prop_assert_eq!(leaves, first.into_iter().collect::<BTreeSet<_>>());
                }
                policy::Strategy::Weighted(w) => {
                    let weighted: BTreeSet<&str> = all.iter().copied().filter(|c| w.contains_key(*c)).collect();
                    if weighted.is_empty() {
                        prop_assert_eq!(leaves, all);
                        prop_assert!(got.iter().all(|(_, v)| v.weight.is_none()));
                    } else {
                        prop_assert_eq!(&leaves, &weighted);
                        // Per family, each cluster's records weigh in proportion to its weight.
                        for v4 in [true, false] {
                            let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
                            for (c, v) in &got {
                                let ip: IpAddr = v.host.parse().expect("address");
                                if ip.is_ipv4() == v4 {
                                    let weight = v.weight.expect("a weight");
                                    prop_assert!((1..=65_535).contains(&weight));
                                    *sums.entry(c.as_str()).or_default() += u64::from(weight);
                                }
                            }
                            // Each cluster's share of the family's weight is its share of the
                            // weights, within 2 % (exact when the counts allow it).
                            let total: u64 = sums.values().sum();
                            let wtotal: u64 = sums.keys().map(|c| u64::from(w[*c])).sum();
                            for (c, s) in &sums {
                                let got = *s as f64 / total as f64;
                                let want = f64::from(w[*c]) / wtotal as f64;
                                prop_assert!((got - want).abs() <= 0.02, "{c}: {got} vs {want}: {sums:?}");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The SRV records of `name`: (target, port).
fn srv(d: &Desired, n: &Naming, name: &str) -> Vec<(String, u16)> {
    d.get(&format!("{}/{SRV_LEAF}", n.key(name)))
        .map(|v| {
            let v: OwnedValue = serde_json::from_str(v).expect("our value parses");
            (v.host, v.port.expect("an SRV record has a port"))
        })
        .into_iter()
        .collect()
}

#[test]
fn named_ports_get_srv_records_at_every_level_targeting_the_name_that_holds_the_addresses() {
    let n = naming();
    let with_ports = |ready: [usize; 3]| {
        let mut v = seeds(ready);
        for c in &mut v {
            each_mut(c, |h| {
                h.ports = vec![
                    view::NamedPort {
                        name: "dns".into(),
                        protocol: "udp".into(),
                        port: 53,
                    },
                    view::NamedPort {
                        name: "http".into(),
                        protocol: "tcp".into(),
                        port: 8080,
                    },
                ];
            });
        }
        v
    };
    let g = "hello-world.default.federation.svc.example.com";
    let europe = "hello-world.default.federation.svc.europe.example.com";
    let fr = "hello-world.default.federation.svc.fr.europe.example.com";
    let us = "hello-world.default.federation.svc.us.america.example.com";
    // fcp has no ready endpoint: europe and fr fall back to the global name.
    let d = plan(&n, &with_ports([0, 2, 2]));
    assert_eq!(srv(&d, &n, &format!("_http._tcp.{g}")), [(g.into(), 8080)]);
    assert_eq!(srv(&d, &n, &format!("_dns._udp.{g}")), [(g.into(), 53)]);
    assert_eq!(
        srv(&d, &n, &format!("_http._tcp.{us}")),
        [(us.into(), 8080)]
    );
    assert_eq!(
        srv(&d, &n, &format!("_http._tcp.{europe}")),
        [(g.into(), 8080)]
    );
    assert_eq!(srv(&d, &n, &format!("_http._tcp.{fr}")), [(g.into(), 8080)]);
    // The fallback names stay CNAMEs: `_cname` sorts before the `_tcp`/`_udp` subtrees.
    assert!(d.contains_key(&format!("{}/{CNAME_LEAF}", n.key(fr))));
    // All ready: each level targets itself.
    let d = plan(&n, &with_ports([2, 2, 2]));
    assert_eq!(
        srv(&d, &n, &format!("_http._tcp.{fr}")),
        [(fr.into(), 8080)]
    );
    assert_eq!(
        srv(&d, &n, &format!("_http._tcp.{europe}")),
        [(europe.into(), 8080)]
    );
    // Nothing healthy: no SRV record anywhere (a target would resolve to nothing).
    let d = plan(&n, &with_ports([0, 0, 0]));
    assert!(
        d.keys().all(|k| !k.ends_with(&format!("/{SRV_LEAF}"))),
        "{d:#?}"
    );
    // Unnamed ports: none either (the seeds' hello-world).
    let d = plan(&n, &seeds([2, 2, 2]));
    assert!(d.keys().all(|k| !k.ends_with(&format!("/{SRV_LEAF}"))));
}

#[test]
fn a_hostname_only_load_balancer_is_a_name_record_and_gets_no_srv_record() {
    let n = naming();
    let mut clusters = seeds([2, 2, 2]);
    for c in &mut clusters {
        let usa = c.name == "usa";
        each_mut(c, |h| {
            h.ports = vec![view::NamedPort {
                name: "http".into(),
                protocol: "tcp".into(),
                port: 8080,
            }];
            if usa {
                h.ingress.clear();
                h.hostnames = vec!["lb-1.usa.example.net".into()];
            }
        });
    }
    let d = plan(&n, &clusters);
    let us = "hello-world.default.federation.svc.us.america.example.com";
    let america = "hello-world.default.federation.svc.america.example.com";
    // The zone and region names of usa: the hostname alone (fedplane-dns answers a CNAME).
    assert_eq!(answers(&d, &n, us), ["lb-1.usa.example.net"]);
    assert_eq!(answers(&d, &n, america), ["lb-1.usa.example.net"]);
    let leaf = format!(
        "{}/usa/{}",
        n.key(us),
        hostname_label("lb-1.usa.example.net")
    );
    assert!(d.contains_key(&leaf), "{d:#?}");
    // Beside the others' addresses at the global name (where it is left out of A answers).
    assert_eq!(
        answers(&d, &n, GLOBAL),
        ["10.210.1.68", "10.210.2.65", "lb-1.usa.example.net"]
    );
    // No SRV record at a name that is a CNAME to a hostname (nor below it); the others have.
    assert!(srv(&d, &n, &format!("_http._tcp.{us}")).is_empty());
    assert!(srv(&d, &n, &format!("_http._tcp.{america}")).is_empty());
    assert_eq!(
        srv(&d, &n, &format!("_http._tcp.{GLOBAL}")),
        [(GLOBAL.to_owned(), 8080)]
    );
    assert_eq!(
        srv(&d, &n, &format!("_http._tcp.{FR_NAME}")),
        [(FR_NAME.to_owned(), 8080)]
    );
}

#[test]
fn an_ingress_host_answers_every_cluster_where_it_is_healthy_and_replans_alone() {
    let n = naming();
    let host = |ip: &str, ready: usize| view::HostEntry {
        owner: view::Regarding {
            kind: view::Kind::Ingress,
            id: ServiceId {
                namespace: "shop".into(),
                name: "shop".into(),
            },
        },
        created: "2026-01-01T00:00:00Z".into(),
        health: ServiceHealth {
            ingress: vec![ip.parse().expect("ip")],
            ready_endpoints: ready,
            ..ServiceHealth::default()
        },
        ttl: None,
        extras: Vec::new(),
    };
    let mut before = seeds([2, 2, 2]);
    before[0]
        .hosts
        .insert("shop.example.com".into(), host("10.210.1.80", 1));
    before[1]
        .hosts
        .insert("shop.example.com".into(), host("10.210.3.80", 1));
    before[2]
        .hosts
        .insert("shop.example.com".into(), host("10.210.2.80", 0));
    let d = plan(&n, &before);
    assert_eq!(
        answers(&d, &n, "shop.example.com"),
        ["10.210.1.80", "10.210.3.80"]
    );
    assert!(d.contains_key("/skydns/com/example/shop/fcp/10-210-1-80"));
    // A change of one host's health is replanned alone, to the full plan's result.
    let mut after = before.clone();
    after[1]
        .hosts
        .insert("shop.example.com".into(), host("10.210.3.80", 0));
    let mut desired = d.clone();
    let keys = replan(&n, &before, &after, &mut desired).expect("incremental");
    assert_eq!(desired, plan(&n, &after));
    assert!(
        keys.iter()
            .all(|k| k.starts_with("/skydns/com/example/shop/")),
        "{keys:?}"
    );
    assert_eq!(answers(&desired, &n, "shop.example.com"), ["10.210.1.80"]);
    // Healthy nowhere: no record.
    for c in &mut after {
        c.hosts.clear();
    }
    assert!(answers(&plan(&n, &after), &n, "shop.example.com").is_empty());
}

#[test]
fn a_host_keeps_to_its_oldest_ingress_across_clusters_and_ancestors_of_other_names_are_refused() {
    let n = naming();
    let entry = |ns: &str, created: &str, ip: &str| view::HostEntry {
        owner: view::Regarding {
            kind: view::Kind::Ingress,
            id: ServiceId {
                namespace: ns.into(),
                name: "shop".into(),
            },
        },
        created: created.into(),
        health: ServiceHealth {
            ingress: vec![ip.parse().expect("ip")],
            ready_endpoints: 1,
            ..ServiceHealth::default()
        },
        ttl: None,
        extras: Vec::new(),
    };
    let mut v = seeds([2, 2, 2]);
    // usa's team-a Ingress is the oldest; chn's sandbox one (first in cluster order, younger)
    // joins nothing, whatever its strategy.
    v.rotate_right(1); // chn first
    v[0].hosts.insert(
        "shop.example.com".into(),
        entry("sandbox", "2026-06-01T00:00:00Z", "10.9.9.9"),
    );
    v[2].hosts.insert(
        "shop.example.com".into(),
        entry("team-a", "2026-01-01T00:00:00Z", "10.210.3.80"),
    );
    v[1].hosts.insert(
        "shop.example.com".into(),
        entry("team-a", "2026-02-01T00:00:00Z", "10.210.1.80"),
    );
    let owner = host_owner(&v, "shop.example.com").expect("an owner");
    assert_eq!(owner.id.namespace, "team-a");
    let d = plan(&n, &v);
    assert_eq!(
        answers(&d, &n, "shop.example.com"),
        ["10.210.1.80", "10.210.3.80"]
    );
    // Ancestors of the Services' names are refused; of nested names of different objects,
    // the younger; nested names of one object are fine; an `_` name only below its own.
    let (old, young) = ("2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z");
    for (h, ns, created) in [
        ("svc.example.com", "x", old),
        ("europe.example.com", "x", old),
        ("fr.europe.example.com", "x", old),
        ("svc.us.america.example.com", "x", old),
        // One object: a name, one below it, a wildcard below it, its SRV name.
        ("a.example.com", "x", old),
        ("x.a.example.com", "x", old),
        ("*.a.example.com", "x", old),
        ("_sip._tcp.a.example.com", "x", old),
        // Another, younger object below a's names: refused, whatever the label.
        ("y.x.a.example.com", "y", young),
        ("*.x.a.example.com", "y", young),
        ("_acme-challenge.a.example.com", "y", young),
        // An `_` name of the zone itself: refused.
        ("_dmarc.example.com", "x", old),
        // An older object's name below a younger one's: the younger (above) is refused.
        ("old.b.example.com", "x", old),
        ("b.example.com", "y", young),
    ] {
        v[0].hosts.insert(h.into(), entry(ns, created, "10.8.8.8"));
    }
    let refused = refused_hosts(&n, &v);
    let names: Vec<&str> = refused.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "*.x.a.example.com",
            "_acme-challenge.a.example.com",
            "_dmarc.example.com",
            "b.example.com",
            "europe.example.com",
            "fr.europe.example.com",
            "svc.example.com",
            "svc.us.america.example.com",
            "y.x.a.example.com",
        ],
        "{refused:#?}"
    );
    let d = plan(&n, &v);
    assert_eq!(answers(&d, &n, "x.a.example.com"), ["10.8.8.8"]);
    assert_eq!(answers(&d, &n, "old.b.example.com"), ["10.8.8.8"]);
    assert!(
        !d.keys().any(|k| k.starts_with("/skydns/com/example/b/c")
            || k.starts_with("/skydns/com/example/a/x/y/")),
        "refused names have no records"
    );
    assert_eq!(
        answers(&d, &n, GLOBAL),
        ["10.210.1.68", "10.210.2.65", "10.210.3.65"],
        "the Services' names are untouched"
    );
}

#[test]
fn a_dns_endpoint_host_writes_its_ttl_and_its_other_records_once_across_clusters() {
    let n = naming();
    let entry = |ip: &str| view::HostEntry {
        owner: view::Regarding {
            kind: view::Kind::DnsEndpoint,
            id: ServiceId {
                namespace: "shop".into(),
                name: "records".into(),
            },
        },
        created: "2026-01-01T00:00:00Z".into(),
        health: ServiceHealth {
            ingress: vec![ip.parse().expect("ip")],
            ready_endpoints: 1,
            ..ServiceHealth::default()
        },
        ttl: Some(60),
        extras: vec![
            view::Extra::Text("v=spf1 -all".into()),
            view::Extra::Mx {
                preference: 10,
                host: "mx.example.net".into(),
            },
        ],
    };
    let mut views = seeds([2, 2, 2]);
    views[0]
        .hosts
        .insert("app.example.com".into(), entry("10.0.0.1"));
    views[1]
        .hosts
        .insert("app.example.com".into(), entry("10.0.0.2"));
    // A name below a host that starts with `_` does not make it an ancestor to refuse.
    let mut srv = entry("10.0.0.3");
    srv.health.ingress.clear();
    srv.extras = vec![view::Extra::Srv {
        priority: 10,
        weight: 5,
        port: 5060,
        target: "sip.example.com".into(),
    }];
    views[0]
        .hosts
        .insert("_sip._tcp.app.example.com".into(), srv);
    assert!(refused_hosts(&n, &views).is_empty());
    let d = plan(&n, &views);
    // (`answers` lists every host below the name: the subtree, as SkyDNS reads it.)
    assert_eq!(
        answers(&d, &n, "app.example.com"),
        [
            "",
            "10.0.0.1",
            "10.0.0.2",
            "mx.example.net",
            "sip.example.com"
        ]
    );
    let under = |prefix: &str| -> Vec<OwnedValue> {
        d.iter()
            .filter(|(k, _)| {
                k.strip_prefix(prefix)
                    .is_some_and(|leaf| leaf.starts_with("/_") && !leaf[1..].contains('/'))
            })
            .map(|(_, v)| serde_json::from_str(v).expect("json"))
            .collect()
    };
    let extras = under("/skydns/com/example/app");
    assert_eq!(extras.len(), 2, "once each, not per cluster: {extras:?}");
    assert!(extras.iter().all(|v| v.ttl == 60));
    assert!(
        extras
            .iter()
            .any(|v| v.text.as_deref() == Some("v=spf1 -all") && v.host.is_empty())
    );
    assert!(
        extras
            .iter()
            .any(|v| v.mail && v.host == "mx.example.net" && v.priority == Some(10))
    );
    let srv = under("/skydns/com/example/app/_tcp/_sip");
    assert_eq!(srv.len(), 1, "{srv:?}");
    assert_eq!(
        (srv[0].port, srv[0].priority, srv[0].weight),
        (Some(5060), Some(10), Some(5))
    );
    // The TXT value carries no host field at all (fedplane-dns reads it as text only).
    assert!(
        d.values()
            .any(|v| v.contains("\"text\"") && !v.contains("\"host\""))
    );
    assert!(
        d.iter()
            .filter(|(k, _)| k.contains("/app/fcp/"))
            .all(|(_, v)| v.contains("\"ttl\":60")),
        "the address records carry the endpoint's TTL"
    );
}

#[test]
fn a_zero_priority_keeps_its_order_and_a_cname_never_hides_other_records() {
    let n = naming();
    let entry = |health: ServiceHealth, extras: Vec<view::Extra>| view::HostEntry {
        owner: view::Regarding {
            kind: view::Kind::DnsEndpoint,
            id: ServiceId {
                namespace: "shop".into(),
                name: "records".into(),
            },
        },
        created: "2026-01-01T00:00:00Z".into(),
        health,
        ttl: None,
        extras,
    };
    let mx = |preference, host: &str| view::Extra::Mx {
        preference,
        host: host.into(),
    };
    let mut v = seeds([2, 2, 2]);
    v[0].hosts.insert(
        "mail.example.com".into(),
        entry(
            ServiceHealth::default(),
            vec![mx(0, "mx1.example.net"), mx(10, "mx2.example.net")],
        ),
    );
    // One cluster's copy has a CNAME, another's a TXT at the same name: the CNAME goes.
    let alias = ServiceHealth {
        hostnames: vec!["elsewhere.example.net".into()],
        ready_endpoints: 1,
        ..ServiceHealth::default()
    };
    v[0].hosts
        .insert("both.example.com".into(), entry(alias, Vec::new()));
    v[1].hosts.insert(
        "both.example.com".into(),
        entry(
            ServiceHealth::default(),
            vec![view::Extra::Text("hello".into())],
        ),
    );
    let d = plan(&n, &v);
    let mut prefs: Vec<(u16, String)> = d
        .iter()
        .filter(|(k, _)| k.starts_with("/skydns/com/example/mail/"))
        .map(|(_, v)| {
            let v: OwnedValue = serde_json::from_str(v).expect("json");
            (v.priority.expect("a preference"), v.host)
        })
        .collect();
    prefs.sort();
    assert_eq!(
        prefs,
        [
            (1, "mx1.example.net".to_owned()),
            (11, "mx2.example.net".to_owned())
        ]
    );
    assert_eq!(
        answers(&d, &n, "both.example.com"),
        [""],
        "only the TXT record"
    );
}

/// The views share all but what changed (persistent maps): every single Service change is
/// replanned (imbl before 7.0.2 lost a difference right after shared nodes, issue #161).
#[test]
fn every_single_change_of_a_view_sharing_the_rest_is_replanned() {
    let n = naming();
    let mut base = seeds([2, 2, 2]);
    let template = base[0].services.values().next().expect("a Service").clone();
    let ids: Vec<ServiceId> = (0..600)
        .map(|i| ServiceId {
            namespace: "default".into(),
            name: format!("s{i:04}"),
        })
        .collect();
    for id in &ids {
        base[0].services.insert(id.clone(), template.clone());
    }
    let desired = plan(&n, &base);
    for (i, id) in ids.iter().enumerate() {
        let mut after = base.clone();
        after[0]
            .services
            .get_mut(id)
            .expect("the Service")
            .ready_endpoints = 0;
        let mut d = desired.clone();
        let keys = replan(&n, &base, &after, &mut d).expect("incremental");
        assert!(
            keys.iter().any(|k| k.contains(&format!("/{}/", id.name))),
            "{id} not replanned"
        );
        if i % 97 == 0 {
            assert_eq!(d, plan(&n, &after), "{id}");
        }
    }
}
