//! What Kubernetes mode hands the BGP task on every pass, free of I/O: BIRD's configuration
//! for this node (empty while no pool is `mode: bgp`) and the routes [`decide`] picks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};

use super::bird;
use super::config::RouterId;
use super::decide::{Decision, NodeView, decide};
use super::views::{node_view, svc_views};
use crate::ipam::Pools;

/// The BGP task's inputs for this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// BIRD's configuration; empty: BGP is off (no `bgp:` section).
    pub config: String,
    /// The routes to announce.
    pub routes: BTreeSet<IpNet>,
    /// The decision behind them (for metrics and logs).
    pub decision: Decision,
    /// Why the configuration could not be made, if it could not.
    pub problem: Option<String>,
}

/// The router ID `auto` stands for: the Node's first IPv4 `InternalIP`, else its first IPv4
/// address of any type.
pub fn node_ipv4(node: &Node) -> Option<Ipv4Addr> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    let v4 = |t: Option<&str>| {
        addrs
            .iter()
            .filter(|a| t.is_none_or(|t| a.type_ == t))
            .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
    };
    v4(Some("InternalIP")).or_else(|| v4(None))
}

/// This node's configuration and routes. `node` is our Node (`None`: not seen yet, so
/// nothing is announced); `ready` the nodes with a ready endpoint per Service
/// ([`ready_nodes`]); `passwords` the peers' TCP-MD5 passwords read from their files.
pub fn desired<'a>(
    pools: &Pools,
    node: Option<&Node>,
    ready: &BTreeMap<String, BTreeSet<String>>,
    services: impl IntoIterator<Item = &'a Service>,
    passwords: &BTreeMap<String, String>,
    shutting_down: bool,
) -> Desired {
    let Some(bgp) = pools.bgp() else {
        return Desired::default();
    };
    let view = node.map_or_else(NodeView::default, |n| node_view(n, shutting_down));
    let svcs: Vec<Service> = services.into_iter().cloned().collect();
    let decision = decide(&view, pools, &svc_views(&svcs, ready));
    let router_id = match bgp.router_id {
        RouterId::Fixed(a) => Some(a),
        RouterId::Auto => node.and_then(node_ipv4),
    };
    let Some(router_id) = router_id else {
        return Desired {
            decision,
            problem: Some(
                "bgp.router_id: auto, and our Node has no IPv4 address yet; set it".into(),
            ),
            ..Desired::default()
        };
    };
    let config = bird::render(
        bgp,
        pools,
        &bird::Node {
            labels: &view.labels,
            router_id,
            passwords,
        },
    );
    Desired {
        config,
        routes: decision.routes.clone(),
        decision,
        problem: None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    use crate::bgp::views::ready_nodes;

    use super::*;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("object")
    }

    const DOC: &str = "pools:\n  - {name: rack, addresses: [10.4.0.0/24], mode: bgp}\n\
                       bgp:\n  asn: 65001\n  peers:\n    - {name: tor, address: 10.0.0.1, asn: 65000}\n";

    #[test]
    fn a_node_announces_its_local_endpoints_with_its_own_router_id() {
        let pools = Pools::from_yaml(DOC).expect("valid");
        let node: Node = from(json!({"metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "Hostname", "address": "n1"},
                                     {"type": "InternalIP", "address": "10.0.0.11"}]}}));
        let svc: Service = from(json!({"metadata": {"name": "web", "namespace": "d"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.4.0.7"}]}}}));
        let slice: EndpointSlice = from(json!({"metadata": {"name": "web-1", "namespace": "d",
            "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.1"], "nodeName": "n1"}]}));
        let d = desired(
            &pools,
            Some(&node),
            &ready_nodes([&slice]),
            [&svc],
            &BTreeMap::new(),
            false,
        );
        assert!(d.config.contains("router id 10.0.0.11;"), "{}", d.config);
        assert_eq!(d.routes.len(), 1);
        // Not seen our Node yet: nothing announced, and no router ID to configure with.
        let d = desired(
            &pools,
            None,
            &BTreeMap::new(),
            [&svc],
            &BTreeMap::new(),
            false,
        );
        assert!(d.routes.is_empty() && d.problem.is_some());
        // No bgp: section: BGP is off.
        let plain =
            Pools::from_yaml("pools:\n  - {name: p, addresses: [10.5.0.0/24]}\n").expect("valid");
        assert_eq!(
            desired(
                &plain,
                Some(&node),
                &BTreeMap::new(),
                [&svc],
                &BTreeMap::new(),
                false
            ),
            Desired::default()
        );
    }
}
