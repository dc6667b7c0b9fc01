use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::fixtures::seed_cluster;
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
        .filter(|(k, _)| k.starts_with(&key))
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
                services: services
                    .into_iter()
                    .map(|(s, h)| {
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
                .filter(|(k, _)| !k.ends_with(CNAME_LEAF) && !k.contains("/c0/"))
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
}
