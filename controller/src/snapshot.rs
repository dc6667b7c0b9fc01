//! `--snapshot NAME=FILE`: one cluster's objects read from a file instead of a live cluster.
//!
//! The file is what `kubectl get nodes,services,endpointslices -A -o yaml` (or `-o json`)
//! prints: a `kind: List` whose items carry their own `kind`. Several YAML documents, and
//! single objects, are read too. Ingresses (`networking.k8s.io/v1`), Gateways, HTTPRoutes and
//! GRPCRoutes (`gateway.networking.k8s.io/v1`), TLSRoutes (`…/v1alpha2`) and DNSEndpoints
//! (`externaldns.k8s.io/v1alpha1`) are read for the host sources. Objects of other kinds or
//! versions are skipped and reported; an object of a read kind that does not parse is an
//! error naming it.

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::view::ClusterObjects;

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file cannot be read.
    #[error("cannot read snapshot {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is neither YAML nor JSON.
    #[error("snapshot {path} is not YAML or JSON: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message.
        reason: String,
    },
    /// An object of a kind we read does not have the shape of that kind.
    #[error("snapshot {path}: {object} is not a valid {kind}: {reason}")]
    Object {
        /// The file.
        path: String,
        /// Its kind.
        kind: String,
        /// `item 3 (default/hello-world)`.
        object: String,
        /// The deserializer's message.
        reason: String,
    },
}

/// The objects of one snapshot, and the kinds it skipped with their counts.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Nodes, Services, EndpointSlices and Ingresses.
    pub objects: ClusterObjects,
    /// `(kind, count)` of the objects that were skipped.
    pub skipped: Vec<(String, usize)>,
}

/// Reads a snapshot file.
pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown)
}

/// Parses snapshot text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Snapshot, SnapshotError> {
    let docs: Vec<Value> = if text.trim_start().starts_with('{') {
        // JSON (`-o json`) parses much faster as JSON than as YAML.
        vec![
            serde_json::from_str(text).map_err(|e| SnapshotError::Syntax {
                path: path.to_owned(),
                reason: e.to_string(),
            })?,
        ]
    } else {
        // A snapshot of a large cluster is far bigger than the parser's default budget,
        // which is sized for config files.
        let mut budget = serde_saphyr::Budget::default();
        budget.max_events = usize::MAX;
        budget.max_nodes = usize::MAX;
        budget.max_total_scalar_bytes = usize::MAX;
        budget.max_reader_input_bytes = None;
        let mut options = serde_saphyr::Options::default();
        options.budget = Some(budget);
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
            SnapshotError::Syntax {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        })?
    };
    let mut items = Vec::new();
    for doc in docs {
        match doc {
            Value::Object(mut o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(Value::Array(list)) = o.remove("items") {
                    items.extend(list);
                }
            }
            Value::Null => {}
            other => items.push(other),
        }
    }
    let mut snap = Snapshot::default();
    for (i, item) in items.into_iter().enumerate() {
        let kind = item
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("(no kind)")
            .to_owned();
        match kind.as_str() {
            "Node" => snap.objects.nodes.push(object(path, i, &kind, item)?),
            "Service" => snap.objects.services.push(object(path, i, &kind, item)?),
            "EndpointSlice" => snap.objects.slices.push(object(path, i, &kind, item)?),
            // Only networking.k8s.io/v1 (older versions are skipped like other kinds).
            "Ingress" if api_version(&item) == Some("networking.k8s.io/v1") => {
                snap.objects.ingresses.push(object(path, i, &kind, item)?);
            }
            "Gateway" if api_version(&item) == Some("gateway.networking.k8s.io/v1") => {
                snap.objects.gateways.push(object(path, i, &kind, item)?);
            }
            "HTTPRoute" if api_version(&item) == Some("gateway.networking.k8s.io/v1") => {
                snap.objects.http_routes.push(object(path, i, &kind, item)?);
            }
            "GRPCRoute" if api_version(&item) == Some("gateway.networking.k8s.io/v1") => {
                snap.objects.grpc_routes.push(object(path, i, &kind, item)?);
            }
            "TLSRoute" if api_version(&item) == Some("gateway.networking.k8s.io/v1alpha2") => {
                snap.objects.tls_routes.push(object(path, i, &kind, item)?);
            }
            "DNSEndpoint" if api_version(&item) == Some("externaldns.k8s.io/v1alpha1") => {
                snap.objects
                    .dns_endpoints
                    .push(object(path, i, &kind, item)?);
            }
            _ => match snap.skipped.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => snap.skipped.push((kind, 1)),
            },
        }
    }
    Ok(snap)
}

fn api_version(item: &Value) -> Option<&str> {
    item.get("apiVersion").and_then(Value::as_str)
}

fn object<T: DeserializeOwned>(
    path: &str,
    index: usize,
    kind: &str,
    item: Value,
) -> Result<Arc<T>, SnapshotError> {
    let meta = |f: &str| {
        item.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let object = match (meta("namespace"), meta("name")) {
        (Some(ns), Some(n)) => format!("item {index} ({ns}/{n})"),
        (None, Some(n)) => format!("item {index} ({n})"),
        _ => format!("item {index}"),
    };
    serde_json::from_value(item)
        .map(Arc::new)
        .map_err(|e| SnapshotError::Object {
            path: path.to_owned(),
            kind: kind.to_owned(),
            object,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata:
    name: n1
    labels:
      failure-domain.beta.kubernetes.io/region: europe
      failure-domain.beta.kubernetes.io/zone: fr
- apiVersion: v1
  kind: Service
  metadata: {name: hello-world, namespace: default}
  spec: {type: LoadBalancer, ports: [{port: 8080}]}
  status: {loadBalancer: {ingress: [{ip: 10.210.1.68}]}}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: hello-world-x1
    namespace: default
    labels: {kubernetes.io/service-name: hello-world}
  addressType: IPv4
  endpoints:
  - addresses: [10.244.1.5]
    nodeName: n1
    conditions: {ready: true}
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata: {name: shop, namespace: default}
  spec: {rules: [{host: shop.example.com}]}
  status: {loadBalancer: {ingress: [{ip: 10.210.1.80}]}}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: x, namespace: default}
"#;

    #[test]
    fn kubectl_list_output_is_read_and_other_kinds_are_reported() {
        let s = parse(LIST, "fcp.yaml").expect("parses");
        assert_eq!(s.objects.nodes.len(), 1);
        assert_eq!(s.objects.services.len(), 1);
        assert_eq!(s.objects.slices.len(), 1);
        assert_eq!(s.objects.ingresses.len(), 1);
        assert_eq!(s.skipped, vec![("ConfigMap".to_owned(), 1)]);
    }

    #[test]
    fn json_and_multi_document_yaml_give_the_same_objects() {
        let yaml = parse(LIST, "a").expect("yaml");
        let value: Value = serde_saphyr::from_str(LIST).expect("yaml value");
        let json = parse(&value.to_string(), "b").expect("json");
        assert_eq!(yaml.objects.services, json.objects.services);
        let docs = "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: b}\n";
        assert_eq!(parse(docs, "c").expect("docs").objects.nodes.len(), 2);
    }

    #[test]
    fn a_malformed_object_is_an_error_naming_it() {
        let bad = "kind: Service\nmetadata: {name: web, namespace: prod}\nspec: {ports: 7}\n";
        let e = parse(bad, "usa.yaml").expect_err("bad service");
        let msg = e.to_string();
        assert!(
            msg.contains("usa.yaml")
                && msg.contains("item 0 (prod/web)")
                && msg.contains("Service"),
            "{msg}"
        );
        assert!(matches!(
            parse("{not json", "x.json"),
            Err(SnapshotError::Syntax { .. })
        ));
    }
}
