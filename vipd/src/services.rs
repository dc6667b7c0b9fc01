//! Kubernetes objects as assignment and announcing see them, free of I/O: a Service → [`Svc`],
//! the legacy kube-keepalived-vip ConfigMap → a map of kept addresses, addresses → VRRP
//! groups, and the status patch that publishes the addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use crate::ipam::{Family, Kind, Svc, pick_group};

/// Annotation with the addresses a Service asks for, comma-separated (one per family).
pub const REQUEST_ANNOTATION: &str = "fedplane.io/load-balancer-ips";
/// Annotation naming the pool a Service's addresses come from.
pub const POOL_ANNOTATION: &str = "fedplane.io/address-pool";
/// The default `spec.loadBalancerClass` fedplane-vipd serves (besides Services with none).
pub const DEFAULT_CLASS: &str = "fedplane.io/vipd";

/// `namespace/name` of a Service.
pub fn key_of(s: &Service) -> String {
    format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or("default"),
        s.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The Service as assignment sees it; `class` is the `loadBalancerClass` we serve.
pub fn svc_of(s: &Service, class: &str) -> Svc {
    let spec = s.spec.clone().unwrap_or_default();
    let kind = match spec.type_.as_deref() {
        Some("LoadBalancer") => match spec.load_balancer_class.as_deref() {
            None => Kind::Ours,
            Some(c) if c == class => Kind::Ours,
            Some(_) => Kind::Foreign,
        },
        _ => Kind::NotLoadBalancer,
    };
    let annotations = s.metadata.annotations.clone().unwrap_or_default();
    // spec.ipFamilies, else the families of the cluster IPs, else IPv4; each once, in order.
    let mut listed: Vec<Family> = spec
        .ip_families
        .iter()
        .flatten()
        .map(|f| if f == "IPv6" { Family::V6 } else { Family::V4 })
        .collect();
    if listed.is_empty() {
        listed = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|ip| Some(Family::of(ip.parse().ok()?)))
            .collect();
    }
    let mut families: Vec<Family> = Vec::new();
    for f in listed {
        if !families.contains(&f) {
            families.push(f);
        }
    }
    if families.is_empty() {
        families.push(Family::V4);
    }
    let (requested, bad_request) = match (
        annotations.get(REQUEST_ANNOTATION),
        spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()),
    ) {
        (Some(list), _) => parse_request(list, &format!("annotation {REQUEST_ANNOTATION}")),
        (None, Some(ip)) => parse_request(ip, "spec.loadBalancerIP"),
        (None, None) => (Vec::new(), None),
    };
    let current = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    Svc {
        key: key_of(s),
        created: s
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        kind,
        families: if kind == Kind::Ours {
            families
        } else {
            Vec::new()
        },
        requested,
        bad_request,
        pool: annotations.get(POOL_ANNOTATION).cloned(),
        current,
    }
}

fn parse_request(list: &str, what: &str) -> (Vec<IpAddr>, Option<String>) {
    let mut ips = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse() {
            Ok(ip) => ips.push(ip),
            Err(_) => {
                return (
                    Vec::new(),
                    Some(format!("{what}: {part:?} is not an IP address")),
                );
            }
        }
    }
    (ips, None)
}

/// The legacy kube-keepalived-vip ConfigMap (`"10.4.0.50": "default/echoheaders"`, the value
/// optionally followed by `:PROXY` or `:` and a port mode) → address → `namespace/name`, and
/// the entries that make no sense, with why.
pub fn legacy_map(data: &BTreeMap<String, String>) -> (BTreeMap<IpAddr, String>, Vec<String>) {
    let mut map = BTreeMap::new();
    let mut ignored = Vec::new();
    for (k, v) in data {
        let Ok(ip) = k.trim().parse::<IpAddr>() else {
            ignored.push(format!("{k:?}: not an IP address"));
            continue;
        };
        let target = v.split(':').next().unwrap_or_default().trim();
        match target.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                map.insert(ip, target.to_owned());
            }
            _ => ignored.push(format!("{k}: {v:?} is not namespace/name")),
        }
    }
    (map, ignored)
}

/// Which VRRP group: its family and VRID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupId {
    /// The family of its addresses.
    pub family: Family,
    /// Its VRID.
    pub vrid: u8,
}

/// Spreads the addresses over the groups: the result holds each group's addresses, in the
/// order of `groups`. Each address goes to one group of its family by [`pick_group`];
/// addresses of a family without a group are returned apart.
pub fn spread(
    addresses: &BTreeSet<IpAddr>,
    groups: &[GroupId],
) -> (Vec<BTreeSet<IpAddr>>, BTreeSet<IpAddr>) {
    let mut out = vec![BTreeSet::new(); groups.len()];
    let mut homeless = BTreeSet::new();
    for ip in addresses {
        let family = Family::of(*ip);
        let vrids: Vec<u8> = groups
            .iter()
            .filter(|g| g.family == family)
            .map(|g| g.vrid)
            .collect();
        let picked = pick_group(*ip, &vrids).map(|vrid| GroupId { family, vrid });
        match picked.and_then(|id| groups.iter().position(|g| *g == id)) {
            Some(i) => {
                out[i].insert(*ip);
            }
            None => {
                homeless.insert(*ip);
            }
        }
    }
    (out, homeless)
}

/// The merge patch that sets a Service's `status.loadBalancer.ingress` to `ips` (none: `{}`).
pub fn status_patch(ips: &[IpAddr]) -> Value {
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    json!({"status": {"loadBalancer": if ingress.is_empty() {
        json!({"ingress": null})
    } else {
        json!({"ingress": ingress})
    }}})
}

#[cfg(test)]
mod tests {
    use super::*;

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

        let old =
            service("metadata: {name: a}\nspec: {type: LoadBalancer, loadBalancerIP: 10.0.0.x}");
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
        let plain =
            service("metadata: {name: a}\nspec: {type: ClusterIP, clusterIPs: ['fd00::1']}");
        assert_eq!(svc_of(&plain, DEFAULT_CLASS).kind, Kind::NotLoadBalancer);
        let v6 =
            service("metadata: {name: a}\nspec: {type: LoadBalancer, clusterIPs: ['fd00::1']}");
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
        let (groups, homeless) = spread(&ips, &[group(61), group(62)]);
        assert_eq!(groups[0].len() + groups[1].len(), 40);
        assert!(!groups[0].is_empty() && !groups[1].is_empty());
        assert_eq!(homeless.len(), 1);
        // Another node listing its groups the other way round agrees.
        let (other, _) = spread(&ips, &[group(62), group(61)]);
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
}
