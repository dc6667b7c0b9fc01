//! Kubernetes objects as the BGP decision sees them, free of I/O: a Node → [`NodeView`],
//! EndpointSlices → the nodes with a ready endpoint of each Service, Services →
//! [`SvcView`]s.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::decide::{NodeView, SvcView};
use crate::services::{key_of, status_addresses};

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `node` as the decision sees it (`shutting_down` is ours to say).
pub fn node_view(node: &Node, shutting_down: bool) -> NodeView {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    NodeView {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        ready,
        unschedulable: node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        shutting_down,
    }
}

/// Per Service (`namespace/name`), the nodes that run a ready endpoint of it. An endpoint
/// whose `ready` condition is unset counts as ready (the API's meaning of nil); a terminating
/// one that still serves does not.
pub fn ready_nodes<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for slice in slices {
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let key = format!(
            "{}/{svc}",
            slice.metadata.namespace.as_deref().unwrap_or("default")
        );
        let nodes = out.entry(key).or_default();
        for e in &slice.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if let (true, Some(node)) = (ready, &e.node_name) {
                nodes.insert(node.clone());
            }
        }
    }
    out
}

/// The LoadBalancer Services with addresses, as the decision sees them.
pub fn svc_views(services: &[Service], ready: &BTreeMap<String, BTreeSet<String>>) -> Vec<SvcView> {
    services
        .iter()
        .filter_map(|s| {
            let addresses: Vec<std::net::IpAddr> = status_addresses(s).collect();
            if addresses.is_empty() {
                return None;
            }
            let key = key_of(s);
            Some(SvcView {
                local: s
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.external_traffic_policy.as_deref())
                    == Some("Local"),
                ready_nodes: ready.get(&key).cloned().unwrap_or_default(),
                key,
                addresses,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn nodes_read_as_the_decision_needs() {
        let n: Node = from(json!({
            "metadata": {"name": "n1", "labels": {"rack": "a",
                "node.kubernetes.io/exclude-from-external-load-balancers": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }));
        let v = node_view(&n, false);
        assert_eq!(v.name, "n1");
        assert!(v.ready && v.unschedulable && v.excluded());
        let bare: Node = from(json!({"metadata": {"name": "n2"}}));
        let v = node_view(&bare, false);
        assert!(!v.ready && !v.unschedulable && !v.excluded());
    }

    #[test]
    fn ready_endpoints_by_node_and_services_with_their_policy() {
        let slices: Vec<EndpointSlice> = vec![
            from(json!({
                "metadata": {"name": "web-a", "namespace": "shop",
                    "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.1.0.1"], "nodeName": "n1", "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.2"], "nodeName": "n2", "conditions": {"ready": false, "serving": true, "terminating": true}},
                    {"addresses": ["10.1.0.3"], "nodeName": "n3"}
                ]
            })),
            from(json!({
                "metadata": {"name": "web-b", "namespace": "shop",
                    "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv6",
                "endpoints": [{"addresses": ["fd00::1"], "nodeName": "n4", "conditions": {}}]
            })),
            from(
                json!({"metadata": {"name": "orphan", "namespace": "shop"}, "addressType": "IPv4", "endpoints": []}),
            ),
        ];
        let ready = ready_nodes(&slices);
        let want: BTreeSet<String> = ["n1", "n3", "n4"].iter().map(ToString::to_string).collect();
        assert_eq!(ready.get("shop/web"), Some(&want));
        let svcs: Vec<Service> = vec![
            from(json!({"metadata": {"name": "web", "namespace": "shop"},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
                "status": {"loadBalancer": {"ingress": [{"ip": "10.4.0.1"}]}}})),
            from(json!({"metadata": {"name": "pending", "namespace": "shop"},
                "spec": {"type": "LoadBalancer"}})),
        ];
        let views = svc_views(&svcs, &ready);
        assert_eq!(views.len(), 1);
        assert!(views[0].local);
        assert_eq!(views[0].ready_nodes, want);
        assert_eq!(
            views[0].addresses,
            vec!["10.4.0.1".parse::<std::net::IpAddr>().expect("ip")]
        );
    }
}
