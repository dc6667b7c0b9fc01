//! One member cluster's objects → its [`ClusterView`]: the federated Services it has, their
//! ingress IPs, and where their ready endpoints sit. Pure: the same objects give the same view,
//! whether they came from a live cluster or from a `--snapshot` file.
//!
//! - Federated Services: `type: LoadBalancer`, matching `--service-selector` if given, and not
//!   opted out with the annotation [`OPT_OUT`]` = "false"`.
//! - Locality of a node: `topology.kubernetes.io/region|zone`, else the legacy
//!   `failure-domain.beta.kubernetes.io/region|zone` the seeds set; `--cluster-region` and
//!   `--cluster-zone` replace them for the whole cluster.
//! - An endpoint sits where its node sits (`nodeName`); without a known node, the endpoint's
//!   own `zone` is used when that zone belongs to exactly one region of the cluster.
//! - Ready: EndpointSlice `conditions.ready` true, or unset (the API's "unknown, treat as ready").
//! - Named ports (`spec.ports[].name`, a DNS label; protocol TCP, UDP or SCTP) get SRV records;
//!   unnamed ports do not, as in kube-dns.
//! - Host names (`--source ingress`, `gateway-httproute`, `gateway-grpcroute`,
//!   `gateway-tlsroute`, `dnsendpoint`): see [`hosts`]. The same selector and opt-out
//!   annotation as Services. Hosts must be inside the domain and outside the federation's
//!   Service names (`….<fed>.svc.…`) and `dns.<domain>`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use imbl::OrdMap;

use crate::kinds::{DnsEndpoint, Gateway, GrpcRoute, HttpRoute, TlsRoute};
use crate::policy::{self, Policy};
use crate::selector::Selector;

/// Annotation on a Service (or another source's object): `"false"` keeps it out of the
/// federation.
pub const OPT_OUT: &str = "fedplane.io/federate";
/// Annotation on an Ingress or route: `all` makes it healthy only while every backend Service has a
/// ready endpoint (default `any`: one is enough), as k8gb's `serviceHealthPolicy`.
pub const BACKEND_HEALTH: &str = "fedplane.io/backend-health";
/// The label EndpointSlices carry with their Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const REGION_LABELS: [&str; 2] = [
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/region",
];
const ZONE_LABELS: [&str; 2] = [
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
];

/// A region and a zone in it, both valid DNS labels in lower case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    /// Region label, e.g. `europe`.
    pub region: String,
    /// Zone label, e.g. `fr`.
    pub zone: String,
}

/// A Service (or another namespaced object) by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ServiceId {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ServiceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One federated Service in one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceHealth {
    /// `status.loadBalancer.ingress[].ip`, sorted, without duplicates.
    pub ingress: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].hostname` of the entries without an ip (a load balancer
    /// known by name), lower case without the final dot, sorted, without duplicates.
    pub hostnames: Vec<String>,
    /// Ready endpoints over all its EndpointSlices.
    pub ready_endpoints: usize,
    /// Localities of those ready endpoints (those whose locality is known).
    pub ready_localities: BTreeSet<Locality>,
    /// Its traffic policy in this cluster (from its annotations).
    pub policy: Policy,
    /// Its named ports, sorted.
    pub ports: Vec<NamedPort>,
}

/// A named port of a Service: an SRV record `_<name>._<protocol>.<service name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    /// `spec.ports[].name`.
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// `spec.ports[].port`.
    pub port: u16,
}

impl ServiceHealth {
    /// Healthy: an ingress IP or hostname and at least one ready endpoint.
    pub fn healthy(&self) -> bool {
        (!self.ingress.is_empty() || !self.hostnames.is_empty()) && self.ready_endpoints > 0
    }
}

/// What the planner needs to know of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterView {
    /// Cluster name: the leaf label of its records.
    pub name: String,
    /// Localities of its nodes (or its override): where its zone names are.
    pub localities: BTreeSet<Locality>,
    /// Its federated Services (a persistent map: a view is cloned in O(1), and two versions
    /// of it compared in the time of their differences).
    pub services: OrdMap<ServiceId, ServiceHealth>,
    /// Its host names (Ingresses, routes, DNSEndpoints): host name → the claiming object and its
    /// addresses, health and policy.
    pub hosts: OrdMap<String, HostEntry>,
}

/// One host name (of an Ingress, a Gateway API route or a DNSEndpoint) in one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The object claiming it (the older one when several do).
    pub owner: Regarding,
    /// Its creation time (RFC 3339; empty when unknown): across clusters, the oldest claim
    /// keeps the host.
    pub created: String,
    /// Its addresses, and `ready_endpoints` the ready endpoints of the host's backends (0 when
    /// unhealthy), and its policy.
    pub health: ServiceHealth,
    /// The TTL of its records (a DNSEndpoint's `recordTTL`); none: `--ttl`.
    pub ttl: Option<u32>,
    /// Its records other than addresses and aliases (DNSEndpoints), sorted.
    pub extras: Vec<Extra>,
}

/// A record of a host other than an address or an alias (from a DNSEndpoint).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Extra {
    /// TXT.
    Text(String),
    /// SRV.
    Srv {
        /// Priority.
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
        /// Target, lower case without the final dot.
        target: String,
    },
    /// MX.
    Mx {
        /// Preference.
        preference: u16,
        /// Mail exchanger, lower case without the final dot.
        host: String,
    },
}

impl ClusterView {
    /// The same cluster with every Service unhealthy: what a cluster unreachable for longer
    /// than the grace period contributes (its zone names fall back to CNAMEs). Its Services
    /// keep their policies and ports, so a strategy it decides stays in force.
    pub fn withdrawn(&self) -> Self {
        Self {
            name: self.name.clone(),
            localities: self.localities.clone(),
            services: self
                .services
                .iter()
                .map(|(id, h)| {
                    (
                        id.clone(),
                        ServiceHealth {
                            policy: h.policy.clone(),
                            ports: h.ports.clone(),
                            ..ServiceHealth::default()
                        },
                    )
                })
                .collect(),
            hosts: self
                .hosts
                .iter()
                .map(|(host, h)| {
                    (
                        host.clone(),
                        HostEntry {
                            owner: h.owner.clone(),
                            created: h.created.clone(),
                            health: ServiceHealth {
                                policy: h.health.policy.clone(),
                                ..ServiceHealth::default()
                            },
                            ttl: h.ttl,
                            extras: Vec::new(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One cluster's objects, as the reflectors or a snapshot file hold them.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    /// Nodes.
    pub nodes: Vec<Arc<Node>>,
    /// Services (all namespaces).
    pub services: Vec<Arc<Service>>,
    /// EndpointSlices (all namespaces).
    pub slices: Vec<Arc<EndpointSlice>>,
    /// Ingresses (all namespaces; empty unless `--source ingress`).
    pub ingresses: Vec<Arc<Ingress>>,
    /// Gateways (empty unless a `gateway-*` source is on).
    pub gateways: Vec<Arc<Gateway>>,
    /// HTTPRoutes (`--source gateway-httproute`).
    pub http_routes: Vec<Arc<HttpRoute>>,
    /// GRPCRoutes (`--source gateway-grpcroute`).
    pub grpc_routes: Vec<Arc<GrpcRoute>>,
    /// TLSRoutes (`--source gateway-tlsroute`).
    pub tls_routes: Vec<Arc<TlsRoute>>,
    /// DNSEndpoints (`--source dnsendpoint`).
    pub dns_endpoints: Vec<Arc<DnsEndpoint>>,
}

/// Which kinds of objects give names (`--source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    /// LoadBalancer Services (`service`, the default).
    pub service: bool,
    /// Ingress hosts (`ingress`).
    pub ingress: bool,
    /// HTTPRoute hostnames (`gateway-httproute`).
    pub http_route: bool,
    /// GRPCRoute hostnames (`gateway-grpcroute`).
    pub grpc_route: bool,
    /// TLSRoute hostnames (`gateway-tlsroute`).
    pub tls_route: bool,
    /// DNSEndpoint records (`dnsendpoint`).
    pub dns_endpoint: bool,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            service: true,
            ..Self::none()
        }
    }
}

impl Sources {
    /// The `--source` values, as the flag spells them.
    pub const NAMES: [&str; 6] = [
        "service",
        "ingress",
        "gateway-httproute",
        "gateway-grpcroute",
        "gateway-tlsroute",
        "dnsendpoint",
    ];

    /// No source at all.
    pub const fn none() -> Self {
        Self {
            service: false,
            ingress: false,
            http_route: false,
            grpc_route: false,
            tls_route: false,
            dns_endpoint: false,
        }
    }

    /// Turns on the source `name` (one of [`Sources::NAMES`]); false when there is none of
    /// that name.
    pub fn enable(&mut self, name: &str) -> bool {
        let flag = match name {
            "service" => &mut self.service,
            "ingress" => &mut self.ingress,
            "gateway-httproute" => &mut self.http_route,
            "gateway-grpcroute" => &mut self.grpc_route,
            "gateway-tlsroute" => &mut self.tls_route,
            "dnsendpoint" => &mut self.dns_endpoint,
            _ => return false,
        };
        *flag = true;
        true
    }

    /// Whether a Gateway API route source is on (the Gateways are watched then).
    pub fn gateway(&self) -> bool {
        self.http_route || self.grpc_route || self.tls_route
    }

    /// Whether a source of host names (anything but Services) is on.
    pub fn hosts(&self) -> bool {
        self.ingress || self.gateway() || self.dns_endpoint
    }
}

/// How one cluster's objects are read.
#[derive(Debug, Clone, Default)]
pub struct ViewSettings {
    /// Cluster name.
    pub cluster: String,
    /// `--cluster-region` for this cluster.
    pub region: Option<String>,
    /// `--cluster-zone` for this cluster.
    pub zone: Option<String>,
    /// `--service-selector`.
    pub selector: Option<Selector>,
    /// Every member cluster's name (for the annotations that name clusters); empty: unknown.
    pub members: Vec<String>,
    /// `--source`.
    pub sources: Sources,
    /// The DNS zone (hosts must be inside it), lower case without the final dot.
    pub domain: String,
    /// The federation's name (hosts must not be its Services' names).
    pub federation: String,
}

/// An object (or part of one) that was left out, and why; logged and counted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ignored {
    /// `Service default/x`, `Node n1`, …
    pub object: String,
    /// What is wrong with it.
    pub reason: String,
    /// The object it is about and the reason of the Warning Event that says so on it.
    pub event: Option<(Regarding, &'static str)>,
}

/// A kind of object the controller reads names from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Service.
    Service,
    /// Ingress.
    Ingress,
    /// HTTPRoute.
    HttpRoute,
    /// GRPCRoute.
    GrpcRoute,
    /// TLSRoute.
    TlsRoute,
    /// DNSEndpoint.
    DnsEndpoint,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Service => "Service",
            Self::Ingress => "Ingress",
            Self::HttpRoute => "HTTPRoute",
            Self::GrpcRoute => "GRPCRoute",
            Self::TlsRoute => "TLSRoute",
            Self::DnsEndpoint => "DNSEndpoint",
        })
    }
}

/// An object by kind, namespace and name: what a Warning Event goes on, what owns a host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Regarding {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace and name.
    pub id: ServiceId,
}

impl Regarding {
    /// A Service.
    pub fn service(id: ServiceId) -> Self {
        Self {
            kind: Kind::Service,
            id,
        }
    }
}

impl std::fmt::Display for Regarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// What a cluster's view takes from its Nodes: each node's name and region and zone labels
/// (after the cluster's overrides). A Node change that leaves it alone (status, heartbeats,
/// other labels) leaves the view as it was.
pub fn node_fingerprint(
    settings: &ViewSettings,
    nodes: &[Arc<Node>],
) -> Vec<(String, Option<String>, Option<String>)> {
    let mut out: Vec<_> = nodes
        .iter()
        .map(|node| {
            let labels = node.metadata.labels.as_ref();
            let label = |keys: [&str; 2]| {
                keys.iter()
                    .find_map(|k| labels.and_then(|l| l.get(*k)))
                    .map(|v| v.to_ascii_lowercase())
            };
            (
                node.metadata.name.clone().unwrap_or_default(),
                settings
                    .region
                    .as_ref()
                    .map(|r| r.to_ascii_lowercase())
                    .or_else(|| label(REGION_LABELS)),
                settings
                    .zone
                    .as_ref()
                    .map(|z| z.to_ascii_lowercase())
                    .or_else(|| label(ZONE_LABELS)),
            )
        })
        .collect();
    out.sort();
    out
}

/// Builds the view of one cluster.
pub fn build(settings: &ViewSettings, objects: &ClusterObjects) -> (ClusterView, Vec<Ignored>) {
    let live = LiveView::build(settings, objects);
    let ignored = live.ignored();
    (live.view, ignored)
}

/// Where a cluster's endpoints are: each node's locality and each zone's region, from its
/// Nodes (and the cluster's overrides).
#[derive(Debug, Clone, Default)]
struct Places {
    node_locality: HashMap<String, Locality>,
    /// A zone named by an endpoint belongs to a region when exactly one region has it.
    zone_region: HashMap<String, Option<Locality>>,
    override_zone: Option<String>,
    localities: BTreeSet<Locality>,
}

impl Places {
    fn new(settings: &ViewSettings, nodes: &[Arc<Node>], ignored: &mut Vec<Ignored>) -> Self {
        let override_region = settings.region.as_deref().map(str::to_ascii_lowercase);
        let override_zone = settings.zone.as_deref().map(str::to_ascii_lowercase);
        let mut node_locality: HashMap<String, Locality> = HashMap::new();
        for node in nodes {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            let labels = node.metadata.labels.as_ref();
            let label = |keys: [&str; 2]| {
                keys.iter()
                    .find_map(|k| labels.and_then(|l| l.get(*k)))
                    .map(|v| v.to_ascii_lowercase())
            };
            let region = override_region.clone().or_else(|| label(REGION_LABELS));
            let zone = override_zone.clone().or_else(|| label(ZONE_LABELS));
            match (region, zone) {
                (Some(region), Some(zone)) => match locality(region, zone) {
                    Ok(l) => {
                        node_locality.insert(name.to_owned(), l);
                    }
                    Err(reason) => ignored.push(Ignored {
                        object: format!("Node {name}"),
                        reason,
                        event: None,
                    }),
                },
                (None, None) => {}
                (r, _) => ignored.push(Ignored {
                    object: format!("Node {name}"),
                    reason: format!(
                        "has a {} label but no {} label: its endpoints count for the global name only",
                        if r.is_some() { "region" } else { "zone" },
                        if r.is_some() { "zone" } else { "region" },
                    ),
                    event: None,
                }),
            }
        }
        let mut localities: BTreeSet<Locality> = node_locality.values().cloned().collect();
        if let (Some(region), Some(zone)) = (&override_region, &override_zone) {
            match locality(region.clone(), zone.clone()) {
                Ok(l) => {
                    localities.insert(l);
                }
                Err(reason) => ignored.push(Ignored {
                    object: format!("cluster {}", settings.cluster),
                    reason,
                    event: None,
                }),
            }
        }
        let mut zone_region: HashMap<String, Option<Locality>> = HashMap::new();
        for l in &localities {
            zone_region
                .entry(l.zone.clone())
                .and_modify(|e| *e = None)
                .or_insert_with(|| Some(l.clone()));
        }
        Self {
            node_locality,
            zone_region,
            override_zone,
            localities,
        }
    }

    /// The locality of an endpoint on `node` (else in `zone`), when known.
    fn of(&self, node: Option<&str>, zone: Option<&str>) -> Option<&Locality> {
        node.and_then(|n| self.node_locality.get(n)).or_else(|| {
            let zone = self.override_zone.as_deref().or(zone)?;
            self.zone_region
                .get(zone.to_ascii_lowercase().as_str())?
                .as_ref()
        })
    }
}

/// The federated Service `svc` with its EndpointSlices `slices`, if it is one; what is wrong
/// with it goes to `ignored`.
fn service_health<'a>(
    settings: &ViewSettings,
    places: &Places,
    svc: &Service,
    slices: impl Iterator<Item = &'a EndpointSlice>,
    ignored: &mut Vec<Ignored>,
) -> Option<(ServiceId, ServiceHealth)> {
    let id = federated(svc, settings.selector.as_ref())?;
    if let Err(reason) = dns_label(&id.namespace).and(dns_label(&id.name)) {
        ignored.push(Ignored {
            object: format!("Service {id}"),
            reason,
            event: None,
        });
        return None;
    }
    let entries = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .map(|i| (i.ip.as_deref(), i.hostname.as_deref()));
    let object = format!("Service {id}");
    let (ingress, hostnames) = lb_addresses(entries, &object, ignored);
    let policy = read_policy(
        svc.metadata.annotations.as_ref(),
        settings,
        &object,
        &Regarding::service(id.clone()),
        ignored,
    );
    let ports = named_ports(svc, &id, ignored);
    let mut health = ServiceHealth {
        ingress,
        hostnames,
        policy,
        ports,
        ..ServiceHealth::default()
    };
    for slice in slices {
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            health.ready_endpoints += 1;
            if let Some(l) = places.of(ep.node_name.as_deref(), ep.zone.as_deref()) {
                health.ready_localities.insert(l.clone());
            }
        }
    }
    Some((id, health))
}

/// An object's namespace: `default` when the object has none (an API server always sets it;
/// a hand-written `--snapshot` file may leave it out, as a manifest for `kubectl apply` does).
pub fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
pub fn slice_service(meta: &ObjectMeta) -> Option<ServiceId> {
    Some(ServiceId {
        namespace: namespace_of(meta).to_owned(),
        name: meta.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone(),
    })
}

/// A cluster's view kept up to date one Service at a time: a change of a Service or an
/// EndpointSlice costs that Service, not the cluster ([`LiveView::update_services`]); a
/// change of what the view reads of the Nodes, or a relist, builds it again.
#[derive(Debug, Clone)]
pub struct LiveView {
    /// The view.
    pub view: ClusterView,
    places: Places,
    /// What was left out: of the Nodes and the cluster, of each Service, of the hosts.
    ignored_places: Vec<Ignored>,
    ignored_services: HashMap<ServiceId, Vec<Ignored>>,
    /// The host names, object by object.
    hosts: hosts::LiveHosts,
    /// The names of each Service's EndpointSlices (a name may be gone: they are read back
    /// through the store).
    slices_of: HashMap<ServiceId, BTreeSet<String>>,
    /// The Service each EndpointSlice (namespace, name) belonged to when last seen: a slice
    /// whose `kubernetes.io/service-name` label changes leaves its old Service too.
    owner: HashMap<(String, String), ServiceId>,
}

/// What changed of a cluster's objects, one by one (the watch events), since it was last
/// taken.
#[derive(Debug, Default)]
pub struct Changes {
    /// The Services (by namespace and name) to read again.
    pub services: BTreeSet<ServiceId>,
    /// The EndpointSlices the events were about.
    pub slices: Vec<SliceSeen>,
    /// Services or EndpointSlices were listed (again): every Service is to be read again.
    pub relisted: bool,
    /// The objects of the host sources to read again.
    pub hosts: BTreeSet<Regarding>,
    /// The Gateways (namespace, name) that changed: their routes are read again if what
    /// routes read of them did.
    pub gateways: BTreeSet<(String, String)>,
    /// A kind of the host sources was listed (again): every host is to be read again.
    pub hosts_relisted: bool,
}

/// Reads one cluster's objects one by one (a live cluster's stores, or a snapshot's).
pub trait Lookup {
    /// The Service `id`.
    fn service(&self, id: &ServiceId) -> Option<Arc<Service>>;
    /// The EndpointSlice `namespace/name`.
    fn slice(&self, namespace: &str, name: &str) -> Option<Arc<EndpointSlice>>;
    /// The object of a host source `r`.
    fn host_object(&self, r: &Regarding) -> Option<hosts::HostObject>;
    /// The Gateways.
    fn gateways(&self) -> Vec<Arc<Gateway>>;
    /// Every object.
    fn objects(&self) -> ClusterObjects;
}

fn find<T: kube::Resource>(objects: &[Arc<T>], namespace: &str, name: &str) -> Option<Arc<T>> {
    objects
        .iter()
        .find(|o| {
            let m = o.meta();
            namespace_of(m) == namespace && m.name.as_deref() == Some(name)
        })
        .cloned()
}

/// A snapshot's objects, searched one by one.
impl Lookup for ClusterObjects {
    fn service(&self, id: &ServiceId) -> Option<Arc<Service>> {
        find(&self.services, &id.namespace, &id.name)
    }

    fn slice(&self, namespace: &str, name: &str) -> Option<Arc<EndpointSlice>> {
        self.slices
            .iter()
            .find(|s| {
                namespace_of(&s.metadata) == namespace && s.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }

    fn host_object(&self, r: &Regarding) -> Option<hosts::HostObject> {
        use hosts::HostObject as O;
        let (ns, name) = (r.id.namespace.as_str(), r.id.name.as_str());
        match r.kind {
            Kind::Service => None,
            Kind::Ingress => find(&self.ingresses, ns, name).map(O::Ingress),
            Kind::HttpRoute => find(&self.http_routes, ns, name).map(O::HttpRoute),
            Kind::GrpcRoute => find(&self.grpc_routes, ns, name).map(O::GrpcRoute),
            Kind::TlsRoute => find(&self.tls_routes, ns, name).map(O::TlsRoute),
            Kind::DnsEndpoint => find(&self.dns_endpoints, ns, name).map(O::DnsEndpoint),
        }
    }

    fn gateways(&self) -> Vec<Arc<Gateway>> {
        self.gateways.clone()
    }

    fn objects(&self) -> ClusterObjects {
        self.clone()
    }
}

/// An EndpointSlice a watch event was about: where it is, and the Service its
/// `kubernetes.io/service-name` label names now (none: the label is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceSeen {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The Service it belongs to now.
    pub service: Option<ServiceId>,
}

impl SliceSeen {
    /// What an event about the EndpointSlice with this metadata says.
    pub fn of(meta: &ObjectMeta) -> Self {
        Self {
            namespace: namespace_of(meta).to_owned(),
            name: meta.name.clone().unwrap_or_default(),
            service: slice_service(meta),
        }
    }
}

impl LiveView {
    /// The view of these objects.
    pub fn build(settings: &ViewSettings, objects: &ClusterObjects) -> Self {
        let mut ignored_places = Vec::new();
        let places = Places::new(settings, &objects.nodes, &mut ignored_places);
        let mut slices_by: HashMap<ServiceId, Vec<&EndpointSlice>> = HashMap::new();
        let mut slices_of: HashMap<ServiceId, BTreeSet<String>> = HashMap::new();
        let mut owner = HashMap::new();
        for slice in &objects.slices {
            let seen = SliceSeen::of(&slice.metadata);
            if let Some(id) = seen.service {
                slices_of
                    .entry(id.clone())
                    .or_default()
                    .insert(seen.name.clone());
                owner.insert((seen.namespace, seen.name), id.clone());
                slices_by.entry(id).or_default().push(slice);
            }
        }
        let mut services = BTreeMap::new();
        let mut ignored_services: HashMap<ServiceId, Vec<Ignored>> = HashMap::new();
        if settings.sources.service {
            for svc in &objects.services {
                let mut ignored = Vec::new();
                let mine = selected(&svc.metadata, None)
                    .and_then(|id| slices_by.get(&id))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let entry =
                    service_health(settings, &places, svc, mine.iter().copied(), &mut ignored);
                if !ignored.is_empty() {
                    let key = selected(&svc.metadata, None).unwrap_or_default();
                    ignored_services.entry(key).or_default().extend(ignored);
                }
                if let Some((id, health)) = entry {
                    services.insert(id, health);
                }
            }
        }
        let (live_hosts, hosts) = hosts::LiveHosts::build(settings, objects);
        Self {
            view: ClusterView {
                name: settings.cluster.clone(),
                localities: places.localities.clone(),
                services: services.into(),
                hosts: hosts.into(),
            },
            places,
            ignored_places,
            ignored_services,
            hosts: live_hosts,
            slices_of,
            owner,
        }
    }

    /// Brings the view up to date with `changes` (read from `lookup`): the Services they name
    /// (and those an EndpointSlice left), and the hosts of the objects they name and of those
    /// whose health reads these Services' endpoints.
    pub fn update(&mut self, settings: &ViewSettings, changes: &Changes, lookup: &dyn Lookup) {
        if changes.relisted {
            *self = Self::build(settings, &lookup.objects());
            return;
        }
        let touched = self.update_services(settings, &changes.services, &changes.slices, lookup);
        if !settings.sources.hosts() {
            return;
        }
        if changes.hosts_relisted {
            let (live, hosts) = hosts::LiveHosts::build(settings, &lookup.objects());
            self.hosts = live;
            self.view.hosts = hosts.into();
            return;
        }
        let slices_of = &self.slices_of;
        // Counted once per Service in this update (many hosts may read one).
        let counted: std::cell::RefCell<HashMap<ServiceId, usize>> = Default::default();
        let ready = |namespace: &str, name: &str| {
            let id = ServiceId {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            };
            if let Some(n) = counted.borrow().get(&id) {
                return *n;
            }
            let n = slices_of
                .get(&id)
                .into_iter()
                .flatten()
                .filter_map(|n| lookup.slice(namespace, n))
                .filter(|s| slice_service(&s.metadata).as_ref() == Some(&id))
                .map(|s| hosts::ready_count(&s))
                .sum();
            counted.borrow_mut().insert(id, n);
            n
        };
        self.hosts.update(
            settings,
            &changes.hosts,
            &touched,
            &changes.gateways,
            lookup,
            &ready,
            &mut self.view.hosts,
        );
    }

    /// Brings the Services `ids` up to date, reading them and their EndpointSlices from
    /// `lookup`; `seen` are the EndpointSlices events were about since (their Services, and
    /// the Services they left, are brought up to date too). Returns every Service looked at.
    fn update_services(
        &mut self,
        settings: &ViewSettings,
        ids: &BTreeSet<ServiceId>,
        seen: &[SliceSeen],
        lookup: &dyn Lookup,
    ) -> BTreeSet<ServiceId> {
        let mut ids = ids.clone();
        for s in seen {
            let key = (s.namespace.clone(), s.name.clone());
            let before = match &s.service {
                Some(id) => {
                    self.slices_of
                        .entry(id.clone())
                        .or_default()
                        .insert(s.name.clone());
                    ids.insert(id.clone());
                    self.owner.insert(key, id.clone())
                }
                None => self.owner.remove(&key),
            };
            if let Some(old) = before
                && Some(&old) != s.service.as_ref()
            {
                ids.insert(old);
            }
        }
        for id in &ids {
            let names = self.slices_of.get(id).cloned().unwrap_or_default();
            let slices: Vec<Arc<EndpointSlice>> = names
                .iter()
                .filter_map(|n| lookup.slice(&id.namespace, n))
                .filter(|s| slice_service(&s.metadata).as_ref() == Some(id))
                .collect();
            // Forget the names that are gone (or belong to another Service now).
            if slices.len() < names.len() {
                let kept: BTreeSet<String> = slices
                    .iter()
                    .map(|s| s.metadata.name.clone().unwrap_or_default())
                    .collect();
                for gone in names.difference(&kept) {
                    let key = (id.namespace.clone(), gone.clone());
                    if self.owner.get(&key) == Some(id) {
                        self.owner.remove(&key);
                    }
                }
                if kept.is_empty() {
                    self.slices_of.remove(id);
                } else {
                    self.slices_of.insert(id.clone(), kept);
                }
            }
            if !settings.sources.service {
                continue;
            }
            let mut ignored = Vec::new();
            let entry = lookup.service(id).and_then(|svc| {
                service_health(
                    settings,
                    &self.places,
                    &svc,
                    slices.iter().map(|s| &**s),
                    &mut ignored,
                )
            });
            if ignored.is_empty() {
                self.ignored_services.remove(id);
            } else {
                self.ignored_services.insert(id.clone(), ignored);
            }
            let now = entry.filter(|(found, _)| found == id).map(|(_, h)| h);
            if self.view.services.get(id) != now.as_ref() {
                match now {
                    Some(h) => {
                        self.view.services.insert(id.clone(), h);
                    }
                    None => {
                        self.view.services.remove(id);
                    }
                }
            }
        }
        ids
    }

    /// Everything left out, sorted, without duplicates.
    pub fn ignored(&self) -> Vec<Ignored> {
        let mut out: Vec<Ignored> = self
            .ignored_places
            .iter()
            .chain(self.ignored_services.values().flatten())
            .chain(self.hosts.ignored())
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// A load balancer's `status.loadBalancer.ingress` entries (ip, hostname) → its addresses and
/// the hostnames of the entries without an ip, each sorted without duplicates; what makes no
/// sense is left out with a reason.
fn lb_addresses<'a>(
    entries: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
    object: &str,
    ignored: &mut Vec<Ignored>,
) -> (Vec<IpAddr>, Vec<String>) {
    let (mut ips, mut hostnames) = (Vec::new(), Vec::new());
    for (ip, host) in entries {
        let problem = match (ip.map(str::parse::<IpAddr>), host.map(hostname)) {
            (Some(Ok(ip)), _) => {
                ips.push(ip);
                None
            }
            (Some(Err(_)), _) => Some(format!("ingress ip {ip:?} is not an IP address")),
            (None, Some(Ok(h))) => {
                hostnames.push(h);
                None
            }
            (None, Some(Err(reason))) => Some(reason),
            (None, None) => None,
        };
        if let Some(reason) = problem {
            ignored.push(Ignored {
                object: object.to_owned(),
                reason,
                event: None,
            });
        }
    }
    ips.sort_unstable();
    ips.dedup();
    hostnames.sort_unstable();
    hostnames.dedup();
    (ips, hostnames)
}

/// The traffic policy of an object's annotations; each problem is left out with a reason and
/// a Warning Event on `regarding`.
fn read_policy(
    annotations: Option<&BTreeMap<String, String>>,
    settings: &ViewSettings,
    object: &str,
    regarding: &Regarding,
    ignored: &mut Vec<Ignored>,
) -> Policy {
    let (policy, problems) = policy::parse(annotations, &settings.members);
    for reason in problems {
        // One Event reason per annotation kind: Events of one reason on one object are
        // folded into one series, which would hide all but the last problem.
        let kind = if reason.starts_with(policy::HEALTH_CHECK) {
            "InvalidHealthCheck"
        } else {
            "InvalidStrategy"
        };
        ignored.push(Ignored {
            object: object.to_owned(),
            reason,
            event: Some((regarding.clone(), kind)),
        });
    }
    policy
}

/// The Service's named ports, sorted; a name that is no DNS label or an unknown protocol is
/// left out with a reason.
fn named_ports(svc: &Service, id: &ServiceId, ignored: &mut Vec<Ignored>) -> Vec<NamedPort> {
    let mut out = Vec::new();
    for p in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
        let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let protocol = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
        let problem = match (dns_label(name), u16::try_from(p.port)) {
            (Err(e), _) => Some(format!("port name {e}: no SRV record")),
            (_, Err(_)) | (_, Ok(0)) => Some(format!(
                "port {name}: {} is not a port: no SRV record",
                p.port
            )),
            _ if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") => Some(format!(
                "port {name}: protocol {:?} is not TCP, UDP or SCTP: no SRV record",
                p.protocol
            )),
            (Ok(()), Ok(port)) => {
                out.push(NamedPort {
                    name: name.to_owned(),
                    protocol,
                    port,
                });
                None
            }
        };
        if let Some(reason) = problem {
            ignored.push(Ignored {
                object: format!("Service {id}"),
                reason,
                event: None,
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The Service's id when it is federated.
fn federated(svc: &Service, selector: Option<&Selector>) -> Option<ServiceId> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return None;
    }
    selected(&svc.metadata, selector)
}

/// The object's id unless it opts out or `selector` does not pick it.
fn selected(meta: &ObjectMeta, selector: Option<&Selector>) -> Option<ServiceId> {
    if meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(OPT_OUT))
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    {
        return None;
    }
    if selector.is_some_and(|s| !s.matches(meta.labels.as_ref())) {
        return None;
    }
    Some(ServiceId {
        namespace: namespace_of(meta).to_owned(),
        name: meta.name.clone()?,
    })
}

fn locality(region: String, zone: String) -> Result<Locality, String> {
    dns_label(&region)
        .and(dns_label(&zone))
        .map(|()| Locality { region, zone })
}

/// An ingress hostname as a CNAME target: lower case, without the final dot, each label
/// 1–63 of `a-z 0-9 - _`, at most 253 characters.
fn hostname(h: &str) -> Result<String, String> {
    let name = h.trim_end_matches('.').to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(name)
    } else {
        Err(format!("ingress hostname {h:?} is not a DNS name"))
    }
}

/// Whether `s` can be one label of a DNS name: 1–63 of `a-z 0-9 -`, not starting or ending
/// with `-`.
pub fn dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS label (a-z, 0-9, '-', at most 63)"
        ))
    }
}

pub mod hosts;
#[cfg(test)]
mod steps_tests;
#[cfg(test)]
mod tests;
