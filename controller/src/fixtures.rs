//! Kubernetes objects for unit tests, built from the JSON the API server would return.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use crate::view::ClusterObjects;

/// A node with legacy (`failure-domain.beta…`) region and zone labels, as the seeds set them.
pub fn node(name: &str, region: &str, zone: &str) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "failure-domain.beta.kubernetes.io/region": region,
                "failure-domain.beta.kubernetes.io/zone": zone,
            }}
        }))
        .expect("node JSON"),
    )
}

/// A LoadBalancer Service with these ingress IPs.
pub fn lb_service(ns: &str, name: &str, ips: &[&str]) -> Arc<Service> {
    let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": ingress}},
        }))
        .expect("service JSON"),
    )
}

/// An EndpointSlice of Service `ns/svc` with endpoints on these nodes, each ready or not.
pub fn slice(ns: &str, svc: &str, endpoints: &[(&str, bool)]) -> Arc<EndpointSlice> {
    let eps: Vec<_> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (node, ready))| {
            json!({"addresses": [format!("10.244.0.{}", i + 1)], "nodeName": node,
                   "conditions": {"ready": ready}})
        })
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": format!("{svc}-abcde"),
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": eps,
        }))
        .expect("slice JSON"),
    )
}

/// One seed cluster: two nodes in `region/zone`, Service `default/hello-world` at `ip` with
/// `ready` ready endpoints out of 2.
pub fn seed_cluster(region: &str, zone: &str, ip: &str, ready: usize) -> ClusterObjects {
    ClusterObjects {
        nodes: vec![node("n1", region, zone), node("n2", region, zone)],
        services: vec![lb_service("default", "hello-world", &[ip])],
        slices: vec![slice(
            "default",
            "hello-world",
            &[("n1", ready > 0), ("n2", ready > 1)],
        )],
        ..ClusterObjects::default()
    }
}
