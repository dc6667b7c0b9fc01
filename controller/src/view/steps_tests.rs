//! Several steps of watch events (each the difference of two worlds, as source.rs records
//! them) through the incremental path, against whole builds and a whole plan.
use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::tests::all_sources;
use super::*;

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("object"))
}

/// The world one step's bytes describe (every object optional, most fields variable).
fn world(v: &[u8]) -> ClusterObjects {
    let mut o = ClusterObjects {
        nodes: vec![crate::fixtures::node("n1", "europe", "fr")],
        ..ClusterObjects::default()
    };
    let at = |i: usize| v[i % v.len()];
    // Services s0..s2 in shop.
    for k in 0..3 {
        let b = at(k);
        if b % 3 == 0 {
            continue;
        }
        o.services.push(obj(json!({
            "metadata": {"namespace": "shop", "name": format!("s{k}")},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": format!("10.0.{k}.{}", b % 2)}]}},
        })));
    }
    // Slices sl0..sl4: exists, label (s0..s2, or none), ready.
    for k in 0..5 {
        let b = at(3 + k);
        if b % 5 == 0 {
            continue;
        }
        let mut meta = json!({"namespace": "shop", "name": format!("sl{k}")});
        if b % 4 != 3 {
            meta["labels"] = json!({"kubernetes.io/service-name": format!("s{}", b % 3)});
        }
        o.slices.push(obj(json!({
            "metadata": meta, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.1.1"], "nodeName": "n1",
                           "conditions": {"ready": b % 2 == 0}}],
        })));
    }
    // Gateways infra/gw0, infra/gw1.
    for k in 0..2 {
        let b = at(8 + k);
        if b % 4 == 0 {
            continue;
        }
        let hostname = if b % 3 == 0 {
            "h0.example.com"
        } else {
            "*.example.com"
        };
        o.gateways.push(obj(json!({
            "metadata": {"namespace": "infra", "name": format!("gw{k}")},
            "spec": {"listeners": [{"name": "web", "port": 80, "protocol": "HTTP",
                "hostname": hostname, "allowedRoutes": {"namespaces": {"from": "All"}}}]},
            "status": {"addresses": [{"type": "IPAddress", "value": format!("10.9.{k}.{}", b % 2)}]},
        })));
    }
    // Ingresses i0..i2.
    for k in 0..3 {
        let (b, c) = (at(10 + 2 * k), at(11 + 2 * k));
        if b % 4 == 0 {
            continue;
        }
        let mut ann = serde_json::Map::new();
        if c % 2 == 1 {
            ann.insert("fedplane.io/health-check".into(), json!("tcp:80"));
        }
        if c % 3 == 2 {
            ann.insert("fedplane.io/backend-health".into(), json!("all"));
        }
        o.ingresses.push(obj(json!({
            "metadata": {"namespace": "shop", "name": format!("i{k}"), "annotations": ann,
                         "creationTimestamp": format!("2026-01-0{}T00:00:00Z", 1 + c % 3)},
                        "spec": {"rules": [{"host": HOSTS[b as usize % HOSTS.len()],
                "http": {"paths": [{"path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": format!("s{}", c % 3), "port": {"number": 80}}}}]}}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.80"}]}},
        })));
    }
    // HTTPRoutes r0..r2: parent gw0/gw1 (re-parented), accepted or not, backend.
    for k in 0..3 {
        let (b, c) = (at(16 + 2 * k), at(17 + 2 * k));
        if b % 4 == 0 {
            continue;
        }
        let parent = json!({"namespace": "infra", "name": format!("gw{}", c % 2)});
        let status = if c % 5 == 4 {
            json!([])
        } else {
            json!([{"parentRef": parent, "controllerName": "x",
                    "conditions": [{"type": "Accepted", "status": "True"}]}])
        };
        o.http_routes.push(obj(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"namespace": "shop", "name": format!("r{k}"),
                         "annotations": if b % 2 == 1 { json!({"fedplane.io/health-check": "tcp:80"}) } else { json!({}) },
                         "creationTimestamp": format!("2026-01-0{}T00:00:00Z", 1 + b % 3)},
            "spec": {"parentRefs": [parent], "hostnames": [HOSTS[(b as usize + k) % HOSTS.len()]],
                     "rules": [{"backendRefs": [{"name": format!("s{}", (c / 2) % 3), "port": 80}]}]},
            "status": {"parents": status},
        })));
    }
    // DNSEndpoint d0.
    let b = at(22);
    if b % 3 != 0 {
        o.dns_endpoints.push(obj(json!({
            "apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint",
            "metadata": {"namespace": "shop", "name": "d0",
                         "creationTimestamp": format!("2026-01-0{}T00:00:00Z", 1 + b % 3)},
            "spec": {"endpoints": [{"dnsName": DHOSTS[b as usize % DHOSTS.len()],
                                    "recordType": "A", "targets": ["10.7.7.7"]}]},
        })));
    }
    o
}

const HOSTS: [&str; 5] = [
    "h0.example.com",
    "h1.example.com",
    "x.h0.example.com",
    "europe.example.com",
    "h2.example.com",
];
const DHOSTS: [&str; 5] = [
    "h0.example.com",
    "_acme.h0.example.com",
    "x.h0.example.com",
    "h1.example.com",
    "fr.europe.example.com",
];

fn id_of(m: &ObjectMeta) -> (String, String) {
    (
        namespace_of(m).to_owned(),
        m.name.clone().unwrap_or_default(),
    )
}

fn by_id<T: kube::Resource + serde::Serialize>(
    v: &[Arc<T>],
) -> BTreeMap<(String, String), (Arc<T>, String)> {
    v.iter()
        .map(|o| {
            (
                id_of(o.meta()),
                (o.clone(), serde_json::to_string(&**o).expect("json")),
            )
        })
        .collect()
}

/// The watch events from `a` to `b`, as source.rs would record them.
fn events(a: &ClusterObjects, b: &ClusterObjects) -> Changes {
    let mut c = Changes::default();
    fn each<T: kube::Resource + serde::Serialize>(
        a: &[Arc<T>],
        b: &[Arc<T>],
        mut f: impl FnMut((String, String), &T),
    ) {
        let (x, y) = (by_id(a), by_id(b));
        let keys: BTreeSet<_> = x.keys().chain(y.keys()).cloned().collect();
        for k in keys {
            match (x.get(&k), y.get(&k)) {
                (Some(p), Some(q)) if p.1 == q.1 => {}
                (_, Some(q)) => f(k, &q.0),
                (Some(p), None) => f(k, &p.0),
                (None, None) => {}
            }
        }
    }
    each(&a.services, &b.services, |(ns, name), _| {
        c.services.insert(ServiceId {
            namespace: ns,
            name,
        });
    });
    each(&a.slices, &b.slices, |_, s| {
        let seen = SliceSeen::of(&s.metadata);
        if let Some(id) = &seen.service {
            c.services.insert(id.clone());
        }
        c.slices.push(seen);
    });
    each(&a.gateways, &b.gateways, |k, _| {
        c.gateways.insert(k);
    });
    let host = |kind: Kind| {
        move |(ns, name): (String, String)| Regarding {
            kind,
            id: ServiceId {
                namespace: ns,
                name,
            },
        }
    };
    let mut hosts = BTreeSet::new();
    each(&a.ingresses, &b.ingresses, |k, _| {
        hosts.insert(host(Kind::Ingress)(k));
    });
    each(&a.http_routes, &b.http_routes, |k, _| {
        hosts.insert(host(Kind::HttpRoute)(k));
    });
    each(&a.dns_endpoints, &b.dns_endpoints, |k, _| {
        hosts.insert(host(Kind::DnsEndpoint)(k));
    });
    c.hosts = hosts;
    c
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]
    #[test]
    fn many_steps_updated_equal_built(
        steps in proptest::collection::vec(proptest::collection::vec(0u8..20, 23), 2..6),
    ) {
        let settings = all_sources();
        let mut prev = world(&steps[0]);
        let mut live = LiveView::build(&settings, &prev);
        for (i, s) in steps.iter().enumerate().skip(1) {
            let next = world(s);
            let changes = events(&prev, &next);
            live.update(&settings, &changes, &next);
            let (whole, ignored) = build(&settings, &next);
            proptest::prop_assert_eq!(&live.view, &whole, "step {}", i);
            proptest::prop_assert_eq!(live.ignored(), ignored, "step {}", i);
            prev = next;
        }
    }
}

fn naming() -> crate::plan::Naming {
    crate::plan::Naming {
        prefix: "/skydns".into(),
        domain: "example.com".into(),
        federation: "federation".into(),
        ttl: 30,
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// Two clusters, several steps: the live views, the health targets, the replanned records
    /// and the keys written to a simulated etcd all equal what a from-scratch build gives.
    #[test]
    fn many_steps_in_two_clusters_replan_to_the_whole_plan(
        steps in proptest::collection::vec(
            (proptest::collection::vec(0u8..20, 23), proptest::collection::vec(0u8..20, 23), 0u8..8),
            2..6),
    ) {
        use crate::plan::{self, Change, Owned};
        let n = naming();
        let settings = |name: &str| ViewSettings { cluster: name.into(), members: vec!["a".into(), "b".into()], ..all_sources() };
        let (sa, sb) = (settings("a"), settings("b"));
        let mut prev = (world(&steps[0].0), world(&steps[0].1));
        let mut live = (LiveView::build(&sa, &prev.0), LiveView::build(&sb, &prev.1));
        let mut health = crate::health::Health::new(crate::health::Thresholds { failures: 1, successes: 1 });
        let mut views = vec![live.0.view.clone(), live.1.view.clone()];
        health.set_targets(&views);
        health.apply(&mut views);
        let mut refused = plan::refused_hosts(&n, &views);
        let mut desired = plan::plan_refusing(&n, &views, &refused);
        let mut owned: BTreeMap<String, Owned> = desired.iter().map(|(k, v)| (k.clone(), Owned { value: v.clone(), mod_revision: 1 })).collect();
        for (i, (va, vb, down)) in steps.iter().enumerate().skip(1) {
            let next = (world(va), world(vb));
            live.0.update(&sa, &events(&prev.0, &next.0), &next.0);
            live.1.update(&sb, &events(&prev.1, &next.1), &next.1);
            let mut new = vec![live.0.view.clone(), live.1.view.clone()];
            health.set_targets(&new);
            // Some targets fail.
            for (k, (t, check)) in health.targets().into_iter().enumerate() {
                if (k as u8 + *down).is_multiple_of(3) {
                    health.record(&t, &check, false);
                }
            }
            // The fresh targets are the incremental ones.
            let mut fresh = crate::health::Health::new(crate::health::Thresholds { failures: 1, successes: 1 });
            fresh.set_targets(&new);
            let keys = |h: &crate::health::Health| h.targets().into_iter().map(|(t, c)| format!("{t:?}{c:?}")).collect::<Vec<_>>();
            proptest::prop_assert_eq!(keys(&health), keys(&fresh), "targets at step {}", i);
            health.apply(&mut new);
            let changes = match plan::replan_refusing(&n, &views, &new, &mut desired, &mut refused) {
                Some(k) => plan::diff_keys(&desired, &owned, &k),
                None => plan::diff(&desired, &owned),
            };
            proptest::prop_assert_eq!(&refused, &plan::refused_hosts(&n, &new), "refused at step {}", i);
            proptest::prop_assert_eq!(&desired, &plan::plan(&n, &new), "plan at step {}", i);
            for c in changes {
                match c {
                    Change::Create { key, value } | Change::Update { key, value, .. } => { owned.insert(key, Owned { value, mod_revision: 2 }); }
                    Change::Delete { key, .. } => { owned.remove(&key); }
                }
            }
            let reached: BTreeMap<String, String> = owned.iter().map(|(k, o)| (k.clone(), o.value.clone())).collect();
            proptest::prop_assert_eq!(&reached, &desired, "etcd at step {}", i);
            views = new;
            prev = next;
        }
    }
}
