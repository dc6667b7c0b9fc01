//! The static table of resources the fake serves, and the discovery documents built from it.

use serde_json::{Value, json};

/// One resource type: how it is named in URLs and objects, and how writes treat it.
#[derive(Debug)]
pub(crate) struct Resource {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The URL segment, e.g. `services`.
    pub plural: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource: writes there change only `.status`, writes to the main
    /// resource keep the stored `.status`.
    pub status: bool,
    /// A client's create drops the `.status` it sent (the real Service strategy does).
    pub reset_status_on_create: bool,
    /// Field selector labels beyond `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
}

impl Resource {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The `kind` of a list of this resource, e.g. `ServiceList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether `label` may be used in a field selector on this resource.
    pub fn supports_field(&self, label: &str) -> bool {
        label == "metadata.name"
            || (label == "metadata.namespace" && self.namespaced)
            || self.fields.contains(&label)
    }
}

const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    status: bool,
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        namespaced,
        status,
        reset_status_on_create: false,
        fields: &[],
    }
}

/// Every resource the fake knows; an index into this table identifies a resource.
pub(crate) static RESOURCES: [Resource; 16] = [
    Resource {
        reset_status_on_create: true,
        ..res("", "v1", "Service", "services", true, true)
    },
    Resource {
        fields: &["spec.unschedulable"],
        ..res("", "v1", "Node", "nodes", false, true)
    },
    res("", "v1", "ConfigMap", "configmaps", true, false),
    res("", "v1", "Namespace", "namespaces", false, true),
    Resource {
        fields: CORE_EVENT_FIELDS,
        ..res("", "v1", "Event", "events", true, false)
    },
    res("", "v1", "Endpoints", "endpoints", true, false),
    res(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
        false,
    ),
    res("events.k8s.io", "v1", "Event", "events", true, false),
    res("coordination.k8s.io", "v1", "Lease", "leases", true, false),
    Resource {
        fields: &["spec.nodeName", "status.phase"],
        ..res("", "v1", "Pod", "pods", true, true)
    },
    res(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        true,
        true,
    ),
    res(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
        "gateways",
        true,
        true,
    ),
    res(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
        true,
        true,
    ),
    res(
        "gateway.networking.k8s.io",
        "v1",
        "GRPCRoute",
        "grpcroutes",
        true,
        true,
    ),
    res(
        "gateway.networking.k8s.io",
        "v1alpha2",
        "TLSRoute",
        "tlsroutes",
        true,
        true,
    ),
    res(
        "externaldns.k8s.io",
        "v1alpha1",
        "DNSEndpoint",
        "dnsendpoints",
        true,
        true,
    ),
];

/// The resource for an object's `apiVersion` and `kind`.
pub(crate) fn by_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.api_version() == api_version && r.kind == kind)
}

/// The resource served at `/{prefix}/{plural}` for group and version.
pub(crate) fn by_plural(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs: Vec<_> = RESOURCES
        .iter()
        .filter(|r| !r.group.is_empty())
        .map(|r| (r.group, r.version))
        .collect();
    gvs.dedup();
    gvs
}

/// `GET /api`.
pub(crate) fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

/// `GET /apis`: each group once, with its versions (the first listed is the preferred one).
pub(crate) fn group_list() -> Value {
    let mut groups: Vec<(&str, Vec<Value>)> = Vec::new();
    for (g, v) in group_versions() {
        let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
        match groups.iter_mut().find(|(name, _)| *name == g) {
            Some((_, versions)) => versions.push(gv),
            None => groups.push((g, vec![gv])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, versions)| {
            json!({"name": g, "preferredVersion": versions[0].clone(), "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`; `None` for an unknown group version.
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.kind.to_lowercase(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        }));
        if r.status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    (!resources.is_empty()).then(|| {
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        })
    })
}

/// `GET /version`: what a v1.33 server reports.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fedplane-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
