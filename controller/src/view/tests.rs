use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::fixtures::{lb_service, node, seed_cluster, slice};

fn settings(cluster: &str) -> ViewSettings {
    ViewSettings {
        cluster: cluster.into(),
        ..ViewSettings::default()
    }
}

fn loc(region: &str, zone: &str) -> Locality {
    Locality {
        region: region.into(),
        zone: zone.into(),
    }
}

fn hello() -> ServiceId {
    ServiceId {
        namespace: "default".into(),
        name: "hello-world".into(),
    }
}

#[test]
fn seed_cluster_has_its_service_healthy_in_its_zone() {
    let (view, ignored) = build(
        &settings("fcp"),
        &seed_cluster("europe", "fr", "10.210.1.68", 2),
    );
    assert!(ignored.is_empty(), "{ignored:?}");
    assert_eq!(view.localities, [loc("europe", "fr")].into());
    let h = &view.services[&hello()];
    assert_eq!(
        h.ingress,
        vec!["10.210.1.68".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(h.ready_endpoints, 2);
    assert_eq!(h.ready_localities, [loc("europe", "fr")].into());
    assert!(h.healthy());
}

#[test]
fn unready_endpoints_leave_the_service_unhealthy_but_present() {
    let (view, _) = build(
        &settings("fcp"),
        &seed_cluster("europe", "fr", "10.210.1.68", 0),
    );
    let h = &view.services[&hello()];
    assert_eq!(h.ready_endpoints, 0);
    assert!(!h.healthy());
}

#[test]
fn only_load_balancer_services_that_did_not_opt_out_and_match_the_selector_count() {
    let svc = |name: &str, extra: serde_json::Value| -> Arc<Service> {
        let mut v = json!({
            "metadata": {"namespace": "default", "name": name, "labels": {"tier": "web"}},
            "spec": {"type": "LoadBalancer"},
        });
        if let (Some(dst), Some(src)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in src {
                dst.insert(k.clone(), val.clone());
            }
        }
        Arc::new(serde_json::from_value(v).expect("service JSON"))
    };
    let objects = ClusterObjects {
        services: vec![
            svc("lb", json!({})),
            svc("cluster-ip", json!({"spec": {"type": "ClusterIP"}})),
            svc(
                "opted-out",
                json!({"metadata": {"namespace": "default", "name": "opted-out",
                                    "annotations": {OPT_OUT: "false"}}}),
            ),
            svc(
                "other-tier",
                json!({"metadata": {"namespace": "default", "name": "other-tier",
                                    "labels": {"tier": "db"}}}),
            ),
        ],
        ..ClusterObjects::default()
    };
    let mut s = settings("c");
    let names = |s: &ViewSettings| -> Vec<String> {
        build(s, &objects)
            .0
            .services
            .keys()
            .map(|id| id.name.clone())
            .collect()
    };
    assert_eq!(names(&s), ["lb", "other-tier"]);
    s.selector = Some("tier=web".parse().expect("selector"));
    assert_eq!(names(&s), ["lb"]);
}

#[test]
fn endpoints_in_several_zones_count_in_each() {
    let objects = ClusterObjects {
        nodes: vec![node("a", "europe", "fr"), node("b", "europe", "de")],
        services: vec![lb_service("default", "hello-world", &["10.0.0.1"])],
        slices: vec![slice("default", "hello-world", &[("a", true), ("b", true)])],
        ..ClusterObjects::default()
    };
    let (view, _) = build(&settings("c"), &objects);
    assert_eq!(
        view.services[&hello()].ready_localities,
        [loc("europe", "de"), loc("europe", "fr")].into()
    );
}

#[test]
fn objects_without_a_namespace_are_in_default_together() {
    // A hand-written snapshot may leave namespaces out, as a manifest does.
    let mut svc = (*lb_service("default", "hello-world", &["10.0.0.1"])).clone();
    let mut sl = (*slice("default", "hello-world", &[("a", true)])).clone();
    svc.metadata.namespace = None;
    sl.metadata.namespace = None;
    let objects = ClusterObjects {
        nodes: vec![node("a", "europe", "fr")],
        services: vec![Arc::new(svc)],
        slices: vec![Arc::new(sl)],
        ..ClusterObjects::default()
    };
    let (view, _) = build(&settings("c"), &objects);
    assert!(view.services[&hello()].healthy());
    let live = LiveView::build(&settings("c"), &objects);
    assert_eq!(live.view.services[&hello()].ready_endpoints, 1);
    assert!(objects.slice("default", "hello-world-abcde").is_some());
}

#[test]
fn overrides_replace_node_labels_for_the_whole_cluster() {
    let mut s = settings("usa");
    s.region = Some("America".into());
    s.zone = Some("us".into());
    let (view, _) = build(&s, &seed_cluster("x", "y", "10.210.3.65", 1));
    assert_eq!(view.localities, [loc("america", "us")].into());
    assert_eq!(
        view.services[&hello()].ready_localities,
        [loc("america", "us")].into()
    );
}

#[test]
fn topology_labels_win_over_legacy_ones() {
    let n: Arc<Node> = Arc::new(
        serde_json::from_value(json!({"metadata": {"name": "n", "labels": {
            "topology.kubernetes.io/region": "asia",
            "topology.kubernetes.io/zone": "cn",
            "failure-domain.beta.kubernetes.io/region": "old",
            "failure-domain.beta.kubernetes.io/zone": "old",
        }}}))
        .expect("node JSON"),
    );
    let objects = ClusterObjects {
        nodes: vec![n],
        ..ClusterObjects::default()
    };
    assert_eq!(
        build(&settings("c"), &objects).0.localities,
        [loc("asia", "cn")].into()
    );
}

#[test]
fn an_endpoint_without_a_node_is_placed_by_its_zone_when_the_zone_is_unambiguous() {
    let s: Arc<EndpointSlice> = Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "hw-1",
                         "labels": {"kubernetes.io/service-name": "hello-world"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.1.1"], "zone": "fr"},
                          {"addresses": ["10.1.1.2"], "zone": "nowhere"}],
        }))
        .expect("slice JSON"),
    );
    let objects = ClusterObjects {
        nodes: vec![node("a", "europe", "fr")],
        services: vec![lb_service("default", "hello-world", &["10.0.0.1"])],
        slices: vec![s],
        ..ClusterObjects::default()
    };
    let h = &build(&settings("c"), &objects).0.services[&hello()];
    assert_eq!(h.ready_endpoints, 2, "unset ready counts as ready");
    assert_eq!(h.ready_localities, [loc("europe", "fr")].into());
}

#[test]
fn bad_labels_and_ingress_are_ignored_with_a_reason() {
    let bad_ingress: Arc<Service> = Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "hello-world"},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "not-an-ip"}, {"hostname": "LB.Example.NET."}, {"hostname": "bad name"},
                {"ip": "10.0.0.9"}]}},
        }))
        .expect("service JSON"),
    );
    let objects = ClusterObjects {
        nodes: vec![node("a", "eu.west", "fr"), node("b", "europe", "fr")],
        services: vec![bad_ingress, lb_service("Bad_NS", "x", &["10.0.0.2"])],
        slices: vec![],
        ..ClusterObjects::default()
    };
    let (view, ignored) = build(&settings("c"), &objects);
    let objects: Vec<&str> = ignored.iter().map(|i| i.object.as_str()).collect();
    assert_eq!(
        objects,
        [
            "Node a",
            "Service Bad_NS/x",
            "Service default/hello-world",
            "Service default/hello-world"
        ],
        "{ignored:#?}"
    );
    assert_eq!(view.localities, [loc("europe", "fr")].into());
    assert_eq!(
        view.services[&hello()].ingress,
        vec!["10.0.0.9".parse::<IpAddr>().expect("ip")]
    );
    // A hostname-only entry is kept (lower case, no final dot); one that is no name is not.
    assert_eq!(view.services[&hello()].hostnames, ["lb.example.net"]);
    assert!(
        ignored
            .iter()
            .any(|i| i.reason.contains("\"bad name\" is not a DNS name")),
        "{ignored:#?}"
    );
}

#[test]
fn named_ports_are_read_and_bad_ones_left_out_with_a_reason() {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [
            {"name": "https", "port": 443},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"port": 8080},
            {"name": "Bad_Name", "port": 1},
            {"name": "quic", "port": 443, "protocol": "HTTP3"},
            {"name": "big", "port": 70000},
        ]},
    }))
    .expect("Service");
    let objects = ClusterObjects {
        services: vec![Arc::new(svc)],
        ..ClusterObjects::default()
    };
    let (view, ignored) = build(&settings("fcp"), &objects);
    let id = ServiceId {
        namespace: "default".into(),
        name: "web".into(),
    };
    let port = |name: &str, protocol: &str, port| NamedPort {
        name: name.into(),
        protocol: protocol.into(),
        port,
    };
    assert_eq!(
        view.services[&id].ports,
        [port("dns", "udp", 53), port("https", "tcp", 443)]
    );
    let reasons: Vec<&str> = ignored.iter().map(|i| i.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("Bad_Name")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("HTTP3")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("70000")), "{reasons:?}");
    // A withdrawn cluster keeps the ports (the first cluster's decide the SRV records).
    assert_eq!(view.withdrawn().services[&id].ports.len(), 2);
}

fn ingress_settings() -> ViewSettings {
    ViewSettings {
        cluster: "fcp".into(),
        sources: Sources {
            ingress: true,
            ..Sources::default()
        },
        domain: "example.com".into(),
        federation: "federation".into(),
        ..ViewSettings::default()
    }
}

fn an_ingress(
    name: &str,
    created: &str,
    hosts: &[&str],
    backends: &[&str],
    extra: Value,
) -> Arc<Ingress> {
    let paths: Vec<Value> = backends
        .iter()
        .map(|b| {
            json!({"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": b, "port": {"number": 80}}}})
        })
        .collect();
    let rules: Vec<Value> = hosts
        .iter()
        .map(|h| json!({"host": h, "http": {"paths": paths}}))
        .collect();
    let mut v = json!({
        "metadata": {"namespace": "shop", "name": name, "creationTimestamp": created},
        "spec": {"rules": rules},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.80"}, {"hostname": "lb.example.net"}]}},
    });
    if let Value::Object(extra) = extra {
        for (k, x) in extra {
            v["metadata"][k] = x;
        }
    }
    Arc::new(serde_json::from_value(v).expect("Ingress"))
}

fn ready_slice(service: &str, ready: bool) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "shop", "name": format!("{service}-1"),
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.1.1"], "conditions": {"ready": ready}}],
        }))
        .expect("slice"),
    )
}

#[test]
fn ingress_hosts_inside_the_domain_with_health_from_their_backends() {
    let objects = ClusterObjects {
        slices: vec![ready_slice("web", true), ready_slice("api", false)],
        ingresses: vec![
            an_ingress(
                "any",
                "2026-01-01T00:00:00Z",
                &[
                    "Shop.Example.COM.",
                    "*.apps.example.com",
                    "elsewhere.org",
                    "a.b.federation.svc.example.com",
                    "x_y.example.com",
                    "apex.dns.example.com",
                    "*.example.com",
                ],
                &["web", "api"],
                json!({}),
            ),
            an_ingress(
                "all",
                "2026-01-01T00:00:00Z",
                &["all.example.com"],
                &["web", "api"],
                json!({"annotations": {"fedplane.io/backend-health": "all"}}),
            ),
            an_ingress(
                "none",
                "2026-01-01T00:00:00Z",
                &["static.example.com"],
                &[],
                json!({}),
            ),
            an_ingress(
                "out",
                "2026-01-01T00:00:00Z",
                &["out.example.com"],
                &["web"],
                json!({"annotations": {"fedplane.io/federate": "false"}}),
            ),
        ],
        ..ClusterObjects::default()
    };
    let (view, ignored) = build(&ingress_settings(), &objects);
    let hosts: Vec<&str> = view.hosts.keys().map(String::as_str).collect();
    assert_eq!(
        hosts,
        [
            "*.apps.example.com",
            "all.example.com",
            "shop.example.com",
            "static.example.com"
        ]
    );
    let h = &view.hosts["shop.example.com"];
    assert!(h.health.healthy(), "one ready backend is enough");
    assert_eq!(
        h.health.ingress,
        ["10.0.0.80".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(h.health.hostnames, ["lb.example.net"]);
    assert!(
        !view.hosts["all.example.com"].health.healthy(),
        "every backend must be ready"
    );
    assert!(
        view.hosts["static.example.com"].health.healthy(),
        "no Service backend to judge by"
    );
    let reasons: Vec<&str> = ignored.iter().map(|i| i.reason.as_str()).collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    for bad in [
        "apex.dns.example.com",
        "\"*.example.com\"",
        "elsewhere.org",
        "a.b.federation.svc.example.com",
        "x_y.example.com",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(bad)),
            "{bad}: {reasons:?}"
        );
    }
    // Without the source, no hosts.
    let (plain, _) = build(&settings("fcp"), &objects);
    assert!(plain.hosts.is_empty());
}

#[test]
fn the_older_ingress_keeps_a_host_and_the_younger_gets_a_warning() {
    let young = an_ingress(
        "a-young",
        "2026-06-01T00:00:00Z",
        &["shop.example.com"],
        &[],
        json!({}),
    );
    let old = an_ingress(
        "z-old",
        "2026-01-01T00:00:00Z",
        &["shop.example.com"],
        &[],
        json!({}),
    );
    let mut young_ip = (*young).clone();
    young_ip.status =
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.99"}]}}))
            .expect("status");
    for order in [
        vec![Arc::new(young_ip.clone()), old.clone()],
        vec![old.clone(), Arc::new(young_ip.clone())],
    ] {
        let objects = ClusterObjects {
            ingresses: order,
            ..ClusterObjects::default()
        };
        let (view, ignored) = build(&ingress_settings(), &objects);
        assert_eq!(
            view.hosts["shop.example.com"].health.ingress,
            ["10.0.0.80".parse::<IpAddr>().expect("ip")],
            "the older one's addresses"
        );
        let conflict: Vec<&Ignored> = ignored.iter().filter(|i| i.event.is_some()).collect();
        assert_eq!(conflict.len(), 1, "{ignored:?}");
        assert_eq!(
            conflict[0].event,
            Some((
                Regarding {
                    kind: Kind::Ingress,
                    id: ServiceId {
                        namespace: "shop".into(),
                        name: "a-young".into()
                    }
                },
                "HostConflict"
            ))
        );
    }
}

#[test]
fn the_node_fingerprint_moves_only_with_what_the_view_reads() {
    let s = settings("fcp");
    let base = node("a", "europe", "fr");
    let fp = node_fingerprint(&s, std::slice::from_ref(&base));
    // Status, other labels, annotations: the same fingerprint.
    let mut busy = (*base).clone();
    busy.status =
        serde_json::from_value(json!({"conditions": [{"type": "Ready", "status": "False"}]}))
            .expect("status");
    busy.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("kubernetes.io/arch".into(), "arm64".into());
    assert_eq!(node_fingerprint(&s, &[Arc::new(busy)]), fp);
    // A zone label, or another node: another one.
    assert_ne!(node_fingerprint(&s, &[node("a", "europe", "de")]), fp);
    assert_ne!(
        node_fingerprint(&s, &[base.clone(), node("b", "europe", "fr")]),
        fp
    );
    // With an override, the labels do not matter.
    let fixed = ViewSettings {
        region: Some("Europe".into()),
        zone: Some("fr".into()),
        ..settings("fcp")
    };
    assert_eq!(
        node_fingerprint(&fixed, &[node("a", "asia", "cn")]),
        node_fingerprint(&fixed, &[base])
    );
}

#[test]
fn each_host_is_judged_by_its_own_rules_backends() {
    let ing: Arc<Ingress> = Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "shop", "name": "two", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}},
                "rules": [
                    {"host": "shop.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}},
                    {"host": "blog.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "api", "port": {"number": 80}}}}]}},
                    {"host": "plain.example.com"},
                ]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.80"}]}},
        }))
        .expect("Ingress"),
    );
    let objects = ClusterObjects {
        slices: vec![ready_slice("web", true), ready_slice("api", false)],
        ingresses: vec![ing],
        ..ClusterObjects::default()
    };
    let (view, _) = build(&ingress_settings(), &objects);
    assert!(view.hosts["shop.example.com"].health.healthy());
    assert!(
        !view.hosts["blog.example.com"].health.healthy(),
        "its own backend has none ready"
    );
    assert!(
        view.hosts["plain.example.com"].health.healthy(),
        "the default backend"
    );
}

pub(super) fn all_sources() -> ViewSettings {
    let mut sources = Sources::none();
    for name in Sources::NAMES {
        assert!(sources.enable(name), "{name}");
    }
    ViewSettings {
        sources,
        ..ingress_settings()
    }
}

fn a_gateway(
    ns: &str,
    name: &str,
    listeners: Value,
    addresses: Value,
) -> Arc<crate::kinds::Gateway> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"namespace": ns, "name": name},
            "spec": {"gatewayClassName": "x", "listeners": listeners},
            "status": {"addresses": addresses},
        }))
        .expect("Gateway"),
    )
}

/// An HTTPRoute of namespace `shop` attached to `parents` (`ns/name` or `ns/name/section`),
/// accepted by those in `accepted`.
fn a_route(
    name: &str,
    created: &str,
    hostnames: &[&str],
    parents: &[&str],
    accepted: &[&str],
    backends: &[&str],
) -> Arc<crate::kinds::HttpRoute> {
    let parent = |p: &&str| {
        let f: Vec<&str> = p.split('/').collect();
        let mut v = json!({"namespace": f[0], "name": f[1]});
        if let Some(section) = f.get(2) {
            v["sectionName"] = json!(section);
        }
        v
    };
    let refs: Vec<Value> = parents.iter().map(parent).collect();
    let status: Vec<Value> = accepted
        .iter()
        .map(|p| {
            json!({"parentRef": parent(p), "controllerName": "example.com/gw",
                   "conditions": [{"type": "Accepted", "status": "True"}]})
        })
        .collect();
    let backends: Vec<Value> = backends
        .iter()
        .map(|b| json!({"name": b, "port": 80}))
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"namespace": "shop", "name": name, "creationTimestamp": created},
            "spec": {"parentRefs": refs, "hostnames": hostnames,
                     "rules": [{"backendRefs": backends}]},
            "status": {"parents": status},
        }))
        .expect("HTTPRoute"),
    )
}

#[test]
fn route_hostnames_get_their_accepting_gateways_addresses_and_backend_health() {
    let gw = a_gateway(
        "infra",
        "gw",
        json!([
            {"name": "web", "port": 80, "protocol": "HTTP", "hostname": "*.apps.example.com",
             "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "any", "port": 8080, "protocol": "HTTP",
             "allowedRoutes": {"namespaces": {"from": "All"}}},
            // Neither admits an HTTPRoute of namespace shop.
            {"name": "admin", "port": 80, "protocol": "HTTP", "hostname": "admin.example.com"},
            {"name": "tls", "port": 443, "protocol": "TLS", "hostname": "tls.example.com",
             "allowedRoutes": {"namespaces": {"from": "All"}}},
        ]),
        json!([{"type": "IPAddress", "value": "10.0.0.90"},
               {"value": "10.0.0.91"},
               {"type": "Hostname", "value": "gw.example.net"},
               {"type": "example.com/pool", "value": "blue"}]),
    );
    let objects = ClusterObjects {
        slices: vec![ready_slice("web", true), ready_slice("down", false)],
        gateways: vec![gw],
        http_routes: vec![
            // Through the wildcard listener only: its own hostname intersected.
            a_route(
                "shop",
                "2026-01-01T00:00:00Z",
                &["Shop.Apps.Example.com", "other.example.org"],
                &["infra/gw/web"],
                &["infra/gw/web"],
                &["web"],
            ),
            // No hostnames: the listener's (a wildcard name).
            a_route(
                "wild",
                "2026-01-01T00:00:00Z",
                &[],
                &["infra/gw/web"],
                &["infra/gw/web"],
                &["down"],
            ),
            // Not accepted: nothing.
            a_route(
                "refused",
                "2026-01-01T00:00:00Z",
                &["refused.example.com"],
                &["infra/gw"],
                &[],
                &[],
            ),
            // Through every listener (one without hostname), no Service backend.
            a_route(
                "plain",
                "2026-01-01T00:00:00Z",
                &["plain.example.com"],
                &["infra/gw"],
                &["infra/gw"],
                &[],
            ),
            // Through the admin and tls listeners: not admitted there (namespace, protocol).
            a_route(
                "sneaky",
                "2026-01-01T00:00:00Z",
                &["admin.example.com", "tls.example.com"],
                &["infra/gw/admin", "infra/gw/tls"],
                &["infra/gw/admin", "infra/gw/tls"],
                &[],
            ),
            // A Gateway that does not exist.
            a_route(
                "lost",
                "2026-01-01T00:00:00Z",
                &["lost.example.com"],
                &["infra/nope"],
                &["infra/nope"],
                &[],
            ),
        ],
        ..ClusterObjects::default()
    };
    let (view, ignored) = build(&all_sources(), &objects);
    assert_eq!(
        view.hosts.keys().collect::<Vec<_>>(),
        [
            "*.apps.example.com",
            "plain.example.com",
            "shop.apps.example.com"
        ]
    );
    let shop = &view.hosts["shop.apps.example.com"];
    assert_eq!(shop.owner.kind, Kind::HttpRoute);
    assert!(shop.health.healthy());
    assert_eq!(
        shop.health.ingress,
        ["10.0.0.90", "10.0.0.91"].map(|a| a.parse::<IpAddr>().expect("ip"))
    );
    assert_eq!(shop.health.hostnames, ["gw.example.net"]);
    assert!(
        !view.hosts["*.apps.example.com"].health.healthy(),
        "its backend is down"
    );
    assert!(
        view.hosts["plain.example.com"].health.healthy(),
        "no backend to judge by"
    );
    let reasons: Vec<&str> = ignored.iter().map(|i| i.reason.as_str()).collect();
    for expected in [
        "has not accepted it",
        "does not exist",
        "is not an IPAddress or Hostname",
        "\"other.example.org\" matches no listener",
        "no listener of Gateway infra/gw it names admits it",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected}: {reasons:?}"
        );
    }
}

#[test]
fn route_and_listener_hostnames_intersect_as_the_gateway_api_says() {
    use super::hosts::intersect;
    assert_eq!(
        intersect("a.example.com", "a.example.com").as_deref(),
        Some("a.example.com")
    );
    assert_eq!(
        intersect("a.b.example.com", "*.example.com").as_deref(),
        Some("a.b.example.com")
    );
    assert_eq!(
        intersect("*.example.com", "a.example.com").as_deref(),
        Some("a.example.com")
    );
    assert_eq!(
        intersect("*.a.example.com", "*.example.com").as_deref(),
        Some("*.a.example.com")
    );
    assert_eq!(intersect("example.com", "*.example.com"), None);
    assert_eq!(intersect("a.example.org", "*.example.com"), None);
    assert_eq!(intersect("xexample.com", "*.example.com"), None);
}

#[test]
fn dns_endpoints_give_their_records_and_the_older_claim_keeps_a_host() {
    let endpoints = json!([
        {"dnsName": "app.example.com", "recordType": "A", "targets": ["10.0.0.1", "10.0.0.2", "fd00::1"], "recordTTL": 60},
        {"dnsName": "app.example.com", "recordType": "AAAA", "targets": ["fd00::1"], "recordTTL": 30},
        {"dnsName": "app.example.com", "recordType": "TXT", "targets": ["v=spf1 -all"]},
        {"dnsName": "_sip._tcp.app.example.com", "recordType": "SRV", "targets": ["10 5 5060 sip.example.com.", "bad"]},
        {"dnsName": "example.com.mail.example.com", "recordType": "MX", "targets": ["10 mx.example.net"]},
        {"dnsName": "alias.example.com", "recordType": "CNAME", "targets": ["app.example.com"]},
        {"dnsName": "both.example.com", "recordType": "CNAME", "targets": ["x.example.net"]},
        {"dnsName": "both.example.com", "recordType": "A", "targets": ["10.0.0.3"]},
        {"dnsName": "ns.example.com", "recordType": "NS", "targets": ["ns1.example.net"]},
        {"dnsName": "outside.example.org", "recordType": "A", "targets": ["10.0.0.4"]},
        // Claimed by the older Ingress below: left out.
        {"dnsName": "shop.example.com", "recordType": "A", "targets": ["10.0.0.5"]},
    ]);
    let endpoint: Arc<crate::kinds::DnsEndpoint> = Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint",
            "metadata": {"namespace": "shop", "name": "records", "creationTimestamp": "2026-02-01T00:00:00Z"},
            "spec": {"endpoints": endpoints},
        }))
        .expect("DNSEndpoint"),
    );
    let objects = ClusterObjects {
        dns_endpoints: vec![endpoint],
        ingresses: vec![an_ingress(
            "older",
            "2026-01-01T00:00:00Z",
            &["shop.example.com"],
            &[],
            Value::Null,
        )],
        ..ClusterObjects::default()
    };
    let (view, ignored) = build(&all_sources(), &objects);
    assert_eq!(
        view.hosts.keys().collect::<Vec<_>>(),
        [
            "_sip._tcp.app.example.com",
            "alias.example.com",
            "app.example.com",
            "both.example.com",
            "example.com.mail.example.com",
            "shop.example.com"
        ]
    );
    let app = &view.hosts["app.example.com"];
    assert!(app.health.healthy());
    assert_eq!(
        app.health.ingress,
        ["10.0.0.1", "10.0.0.2", "fd00::1"].map(|a| a.parse::<IpAddr>().expect("ip"))
    );
    assert_eq!(app.ttl, Some(30), "the shortest TTL of the name");
    assert_eq!(app.extras, [Extra::Text("v=spf1 -all".into())]);
    assert_eq!(
        view.hosts["_sip._tcp.app.example.com"].extras,
        [Extra::Srv {
            priority: 10,
            weight: 5,
            port: 5060,
            target: "sip.example.com".into()
        }]
    );
    assert_eq!(
        view.hosts["example.com.mail.example.com"].extras,
        [Extra::Mx {
            preference: 10,
            host: "mx.example.net".into()
        }]
    );
    assert_eq!(
        view.hosts["alias.example.com"].health.hostnames,
        ["app.example.com"]
    );
    assert!(
        view.hosts["both.example.com"].health.hostnames.is_empty(),
        "a CNAME beside an A is left out"
    );
    assert_eq!(view.hosts["shop.example.com"].owner.kind, Kind::Ingress);
    let reasons: Vec<&str> = ignored.iter().map(|i| i.reason.as_str()).collect();
    for expected in [
        "\"fd00::1\" is not an IPv4 address",
        "\"bad\" is not `priority weight port target`",
        "CNAME cannot stand beside",
        "NS: only A, AAAA, CNAME, TXT, SRV and MX",
        "is not inside example.com",
        "claimed by the older Ingress shop/older",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected}: {reasons:?}"
        );
    }
}

#[test]
fn dns_endpoint_targets_that_cannot_be_answered_as_written_are_refused_by_name() {
    let endpoints = json!([
        {"dnsName": "quoted.example.com", "recordType": "TXT",
         "targets": ["\"heritage=external-dns,external-dns/owner=a\"", "\"v=spf1 \" \"-all\"", "\"a\" x \"b\""]},
        {"dnsName": "many.example.com", "recordType": "CNAME", "targets": ["a.example.net", "b.example.net"]},
        {"dnsName": "weighted.example.com", "recordType": "A", "targets": ["10.0.0.1"], "setIdentifier": "eu"},
        {"dnsName": "_x._tcp.quoted.example.com", "recordType": "SRV", "targets": ["1 1 0 t.example.net"]},
        {"dnsName": "mapped.example.com", "recordType": "AAAA", "targets": ["::ffff:10.0.0.1"]},
        {"dnsName": "big.example.com", "recordType": "A",
         "targets": (0..=MAX_TARGETS_TEST).map(|i| format!("10.1.{}.{}", i / 256, i % 256)).collect::<Vec<_>>()},
    ]);
    let endpoint: Arc<crate::kinds::DnsEndpoint> = Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "shop", "name": "records"},
            "spec": {"endpoints": endpoints},
        }))
        .expect("DNSEndpoint"),
    );
    let objects = ClusterObjects {
        dns_endpoints: vec![endpoint],
        ..ClusterObjects::default()
    };
    let (view, ignored) = build(&all_sources(), &objects);
    assert_eq!(
        view.hosts.keys().collect::<Vec<_>>(),
        ["quoted.example.com"]
    );
    assert_eq!(
        view.hosts["quoted.example.com"].extras,
        [
            Extra::Text("heritage=external-dns,external-dns/owner=a".into()),
            Extra::Text("v=spf1 -all".into()),
        ]
    );
    let reasons: Vec<&str> = ignored.iter().map(|i| i.reason.as_str()).collect();
    for expected in [
        "is neither plain text nor quoted strings",
        "a CNAME has one target",
        "setIdentifier",
        "has port 0",
        "is an IPv4-mapped IPv6 address",
        "more than 256 targets",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected}: {reasons:?}"
        );
    }
}

const MAX_TARGETS_TEST: usize = super::hosts::MAX_TARGETS;

#[test]
fn routes_splitting_a_hostname_through_one_gateway_are_one_name_and_weightless_backends_do_not_count()
 {
    let gw = a_gateway(
        "infra",
        "gw",
        json!([{"name": "web", "port": 80, "protocol": "HTTP",
                "allowedRoutes": {"namespaces": {"from": "All"}}}]),
        json!([{"value": "10.0.0.90"}]),
    );
    let mut canary = a_route(
        "canary",
        "2026-01-01T00:00:00Z",
        &["shop.example.com"],
        &["infra/gw"],
        &["infra/gw"],
        &["up"],
    );
    // Its only ready backend takes no traffic (weight 0).
    Arc::make_mut(&mut canary).spec.rules[0].backend_refs[0].weight = Some(0);
    let objects = ClusterObjects {
        slices: vec![ready_slice("up", true), ready_slice("down", false)],
        gateways: vec![gw],
        http_routes: vec![
            canary,
            a_route(
                "api",
                "2026-01-02T00:00:00Z",
                &["shop.example.com"],
                &["infra/gw"],
                &["infra/gw"],
                &["down"],
            ),
        ],
        ..ClusterObjects::default()
    };
    let (view, ignored) = build(&all_sources(), &objects);
    let shop = &view.hosts["shop.example.com"];
    assert_eq!(shop.owner.id.name, "canary", "the older keeps the name");
    assert!(
        !shop.health.healthy(),
        "no backend that takes traffic is ready"
    );
    assert!(
        ignored.iter().all(|i| i.event.is_none()),
        "no HostConflict: {ignored:?}"
    );
    // The younger route's backend comes up: the name is healthy.
    let objects = ClusterObjects {
        slices: vec![ready_slice("up", true), ready_slice("down", true)],
        ..objects
    };
    assert!(
        build(&all_sources(), &objects).0.hosts["shop.example.com"]
            .health
            .healthy()
    );
}

/// One cluster's objects for the incremental tests: `n` Services, each with one
/// EndpointSlice; `ready[i]` its endpoints' readiness, `gone[i]` the Service deleted,
/// `unsliced[i]` its EndpointSlice deleted, `moved[i]` its address changed.
fn incremental_objects(
    n: usize,
    ready: &[bool],
    gone: &[bool],
    unsliced: &[bool],
    moved: &[bool],
    relabeled: &[bool],
) -> ClusterObjects {
    let mut o = ClusterObjects {
        nodes: vec![node("n1", "europe", "fr"), node("n2", "europe", "de")],
        ..ClusterObjects::default()
    };
    for i in 0..n {
        let name = format!("s{i}");
        if !gone[i] {
            let ip = if moved[i] {
                format!("10.9.0.{i}")
            } else {
                format!("10.0.0.{i}")
            };
            let mut svc = (*lb_service("default", &name, &[&ip])).clone();
            if i % 3 == 0 {
                // An annotation problem: its ignored item must follow it too.
                svc.metadata.annotations =
                    Some([("fedplane.io/dns-strategy".to_owned(), "bogus".to_owned())].into());
            }
            o.services.push(Arc::new(svc));
        }
        if !unsliced[i] {
            let nodes = [("n1", ready[i]), ("n2", true)];
            let mut s = (*slice("default", &name, &nodes[..1 + i % 2])).clone();
            // Its `kubernetes.io/service-name` label moves to the next Service, or goes.
            if relabeled[i] {
                s.metadata.labels = (i % 4 != 1)
                    .then(|| [(SERVICE_NAME_LABEL.to_owned(), format!("s{}", (i + 1) % n))].into());
            }
            o.slices.push(Arc::new(s));
        }
    }
    o
}

proptest::proptest! {
    #[test]
    fn a_view_updated_service_by_service_is_the_view_built_whole(
        before in proptest::collection::vec(proptest::bool::ANY, 5 * 12),
        after in proptest::collection::vec(proptest::bool::ANY, 5 * 12),
    ) {
        let n = 12;
        let settings = ViewSettings { cluster: "fcp".into(), ..ViewSettings::default() };
        let parts = |v: &[bool]| -> ClusterObjects {
            incremental_objects(n, &v[..n], &v[n..2 * n], &v[2 * n..3 * n], &v[3 * n..4 * n], &v[4 * n..])
        };
        let (a, b) = (parts(&before), parts(&after));
        let mut live = LiveView::build(&settings, &a);
        // What the watch events would say: every Service and EndpointSlice that differs.
        let key = |m: &ObjectMeta| (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default());
        let svc_of = |o: &ClusterObjects| -> BTreeMap<(String, String), Value> {
            o.services.iter().map(|s| (key(&s.metadata), serde_json::to_value(&**s).expect("json"))).collect()
        };
        let slice_of = |o: &ClusterObjects| -> BTreeMap<(String, String), Value> {
            o.slices.iter().map(|s| (key(&s.metadata), serde_json::to_value(&**s).expect("json"))).collect()
        };
        let mut ids = BTreeSet::new();
        let (sa, sb) = (svc_of(&a), svc_of(&b));
        for k in sa.keys().chain(sb.keys()) {
            if sa.get(k) != sb.get(k) {
                ids.insert(ServiceId { namespace: k.0.clone(), name: k.1.clone() });
            }
        }
        let (la, lb) = (slice_of(&a), slice_of(&b));
        let mut seen = Vec::new();
        for k in la.keys().chain(lb.keys()) {
            if la.get(k) != lb.get(k) {
                // A deletion's event carries the last state.
                let meta = b.slices.iter().rev().chain(a.slices.iter().rev())
                    .find(|s| key(&s.metadata) == *k)
                    .map(|s| &s.metadata)
                    .expect("a slice");
                seen.push(SliceSeen::of(meta));
            }
        }
        let changes = Changes { services: ids, slices: seen, ..Changes::default() };
        live.update(&settings, &changes, &b);
        let (whole, ignored) = build(&settings, &b);
        proptest::prop_assert_eq!(&live.view, &whole);
        proptest::prop_assert_eq!(live.ignored(), ignored);
    }
}

/// Objects of every host source for the property below: `v` picks, for each of 9 objects
/// (Ingress, HTTPRoute, DNSEndpoint in turn), whether it exists, its host (3 shared ones:
/// conflicts), its age and backend; then the backends' readiness and the Gateway (none, or
/// one of two addresses).
fn host_objects_of(v: &[u8]) -> ClusterObjects {
    let mut o = ClusterObjects::default();
    for i in 0..9 {
        let (p, h, c) = (v[3 * i], v[3 * i + 1], v[3 * i + 2]);
        if p % 4 == 0 {
            continue;
        }
        let name = format!("o{i}");
        let host = format!("h{}.example.com", h % 3);
        let created = format!("2026-01-0{}T00:00:00Z", 1 + c % 2);
        let backend = format!("s{}", (c / 2) % 4);
        match i % 3 {
            0 => {
                let extra = if p % 4 == 3 {
                    json!({"annotations": {"fedplane.io/backend-health": "all"}})
                } else {
                    json!({})
                };
                o.ingresses
                    .push(an_ingress(&name, &created, &[&host], &[&backend], extra));
            }
            1 => o.http_routes.push(a_route(
                &name,
                &created,
                &[&host],
                &["infra/gw"],
                &["infra/gw"],
                &[&backend],
            )),
            _ => o.dns_endpoints.push(Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint",
                    "metadata": {"namespace": "shop", "name": name, "creationTimestamp": created},
                    "spec": {"endpoints": [{"dnsName": host, "recordType": "A",
                                            "targets": [format!("10.0.{i}.{p}")]}]},
                }))
                .expect("DNSEndpoint"),
            )),
        }
    }
    for k in 0..4 {
        o.slices
            .push(ready_slice(&format!("s{k}"), v[27 + k].is_multiple_of(2)));
    }
    let listeners = json!([{"name": "web", "port": 80, "protocol": "HTTP",
        "hostname": "*.example.com", "allowedRoutes": {"namespaces": {"from": "All"}}}]);
    let addresses = json!([{"type": "IPAddress", "value": format!("10.9.0.{}", v[31] % 2)}]);
    if !v[31].is_multiple_of(3) {
        o.gateways = vec![a_gateway("infra", "gw", listeners, addresses)];
    }
    o
}

proptest::proptest! {
    #[test]
    fn hosts_updated_object_by_object_are_the_hosts_built_whole(
        before in proptest::collection::vec(0u8..8, 32),
        after in proptest::collection::vec(0u8..8, 32),
    ) {
        let settings = all_sources();
        let (a, b) = (host_objects_of(&before), host_objects_of(&after));
        let mut live = LiveView::build(&settings, &a);
        // What the watch events would say.
        let json = |o: &ClusterObjects, r: &Regarding| {
            o.host_object(r).map(|x| format!("{x:?}"))
        };
        let mut changes = Changes::default();
        for i in 0..9 {
            let kind = [Kind::Ingress, Kind::HttpRoute, Kind::DnsEndpoint][i % 3];
            let r = Regarding { kind, id: ServiceId { namespace: "shop".into(), name: format!("o{i}") } };
            if json(&a, &r) != json(&b, &r) {
                changes.hosts.insert(r);
            }
        }
        for (x, y) in a.slices.iter().zip(&b.slices) {
            if x != y {
                changes.slices.push(SliceSeen::of(&y.metadata));
            }
        }
        if a.gateways != b.gateways {
            changes.gateways.insert(("infra".into(), "gw".into()));
        }
        live.update(&settings, &changes, &b);
        let (whole, ignored) = build(&settings, &b);
        proptest::prop_assert_eq!(&live.view, &whole);
        proptest::prop_assert_eq!(live.ignored(), ignored);
    }
}

#[test]
fn a_gateway_changed_and_back_while_its_route_was_read_again() {
    let settings = all_sources();
    let listeners = json!([{"name": "web", "port": 80, "protocol": "HTTP",
        "hostname": "*.example.com", "allowedRoutes": {"namespaces": {"from": "All"}}}]);
    let gw = |ip: &str| {
        a_gateway(
            "infra",
            "gw",
            listeners.clone(),
            json!([{"type": "IPAddress", "value": ip}]),
        )
    };
    let route = |created: &str| {
        a_route(
            "r",
            created,
            &["shop.example.com"],
            &["infra/gw"],
            &["infra/gw"],
            &[],
        )
    };
    let objects = |g, r| ClusterObjects {
        gateways: vec![g],
        http_routes: vec![r],
        ..ClusterObjects::default()
    };
    let r_id = Regarding {
        kind: Kind::HttpRoute,
        id: ServiceId {
            namespace: "shop".into(),
            name: "r".into(),
        },
    };
    let mut live = LiveView::build(
        &settings,
        &objects(gw("10.9.0.1"), route("2026-01-01T00:00:00Z")),
    );
    // A sync takes the route's event; the Gateway moved after the take (its event is the
    // next sync's), and the route is read with it.
    let store = objects(gw("10.9.0.2"), route("2026-01-02T00:00:00Z"));
    let changes = Changes {
        hosts: [r_id].into(),
        ..Changes::default()
    };
    live.update(&settings, &changes, &store);
    assert_eq!(live.view.hosts, build(&settings, &store).0.hosts);
    // The Gateway goes back before the next sync, which takes both its events.
    let store = objects(gw("10.9.0.1"), route("2026-01-02T00:00:00Z"));
    let changes = Changes {
        gateways: [("infra".into(), "gw".into())].into(),
        ..Changes::default()
    };
    live.update(&settings, &changes, &store);
    assert_eq!(live.view.hosts, build(&settings, &store).0.hosts);
}
