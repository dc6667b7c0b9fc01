//! The host names of one cluster's Ingresses, Gateway API routes and DNSEndpoints, each
//! claimed by one object: every source turns its objects into claims (one per object and
//! host, its records merged), and the oldest claim of a host keeps it (creation time, then
//! kind, namespace and name); the others are left out with a `HostConflict` Warning Event. The
//! choice moves only when the older object goes, so nothing flaps.
//!
//! - Ingress: each `spec.rules[].host`, with `status.loadBalancer.ingress`; healthy while a
//!   backend Service (the rule's paths, else `defaultBackend`) has a ready endpoint.
//! - HTTPRoute, GRPCRoute, TLSRoute: each hostname (the route's, intersected with its
//!   listeners'; none: the listeners'), with the `status.addresses` of every parent Gateway
//!   that accepted the route (`status.parents[].conditions` `Accepted` = `True`); healthy
//!   while a `backendRefs` Service has a ready endpoint.
//! - DNSEndpoint: each endpoint's `dnsName` with its targets as they are (A, AAAA, CNAME, TXT,
//!   SRV, MX; `recordTTL`); always healthy.
//!
//! [`BACKEND_HEALTH`]` = "all"` asks every backend to have a ready endpoint; an object without
//! Service backends counts as healthy. The traffic-management annotations ([`policy`]) apply
//! as on Services: the strategy, and a health check probing the host's addresses (those that
//! fail are left out, as a Service's).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    BACKEND_HEALTH, ClusterObjects, Extra, HostEntry, Ignored, Kind, Lookup, OrdMap, Regarding,
    SERVICE_NAME_LABEL, ServiceHealth, ServiceId, ViewSettings, dns_label, hostname, lb_addresses,
    read_policy, selected,
};
use crate::kinds::{
    DnsEndpoint, GATEWAY_GROUP, Gateway, GrpcRoute, HttpRoute, ParentRef, Route, RouteSpec,
    RouteStatus, TlsRoute,
};
use crate::policy;

/// The most names one object may give; the rest are left out (said so).
pub const MAX_NAMES: usize = 5_000;
/// The most targets one DNSEndpoint endpoint may have.
pub const MAX_TARGETS: usize = 256;

/// One object's claim on one host.
#[derive(Debug, Clone)]
struct Claim {
    host: String,
    /// Creation time; unknown sorts last.
    created: Option<String>,
    entry: HostEntry,
    /// How the object is named in reasons (`Ingress default/web`).
    object: String,
}

/// An object of a host source, as a cluster has it.
#[derive(Debug, Clone)]
pub enum HostObject {
    /// An Ingress.
    Ingress(Arc<Ingress>),
    /// An HTTPRoute.
    HttpRoute(Arc<HttpRoute>),
    /// A GRPCRoute.
    GrpcRoute(Arc<GrpcRoute>),
    /// A TLSRoute.
    TlsRoute(Arc<TlsRoute>),
    /// A DNSEndpoint.
    DnsEndpoint(Arc<DnsEndpoint>),
}

impl HostObject {
    fn meta_kind(&self) -> (&ObjectMeta, Kind) {
        match self {
            Self::Ingress(o) => (&o.metadata, Kind::Ingress),
            Self::HttpRoute(o) => (&o.metadata, Kind::HttpRoute),
            Self::GrpcRoute(o) => (&o.metadata, Kind::GrpcRoute),
            Self::TlsRoute(o) => (&o.metadata, Kind::TlsRoute),
            Self::DnsEndpoint(o) => (&o.metadata, Kind::DnsEndpoint),
        }
    }
}

/// Every object of the host sources' kinds (those whose source is off give nothing:
/// [`object_hosts`]).
fn host_objects(objects: &ClusterObjects) -> impl Iterator<Item = HostObject> + '_ {
    let o = objects;
    (o.ingresses.iter().cloned().map(HostObject::Ingress))
        .chain(o.http_routes.iter().cloned().map(HostObject::HttpRoute))
        .chain(o.grpc_routes.iter().cloned().map(HostObject::GrpcRoute))
        .chain(o.tls_routes.iter().cloned().map(HostObject::TlsRoute))
        .chain(o.dns_endpoints.iter().cloned().map(HostObject::DnsEndpoint))
}

/// The Gateways by namespace and name.
fn gateway_map(gateways: &[Arc<Gateway>]) -> HashMap<(&str, &str), &Gateway> {
    gateways
        .iter()
        .filter_map(|g| {
            let m = &g.metadata;
            Some(((super::namespace_of(m), m.name.as_deref()?), &**g))
        })
        .collect()
}

/// What one object gives: its claims (sorted by host), what was left out of it, and the
/// Services (namespace, name) whose endpoints its health reads. (Vectors: most objects have
/// one host and one backend, and a B-tree's node would cost kilobytes each.)
#[derive(Debug, Clone)]
struct ObjectHosts {
    claims: Vec<Claim>,
    ignored: Vec<Ignored>,
    backends: Vec<(String, String)>,
    /// A route's parent Gateways (namespace, name).
    parents: Vec<(String, String)>,
}

impl ObjectHosts {
    fn claim(&self, host: &str) -> Option<&Claim> {
        let i = self
            .claims
            .binary_search_by(|c| c.host.as_str().cmp(host))
            .ok()?;
        Some(&self.claims[i])
    }
}

/// Adds `r` to a small set kept as a vector.
fn add(set: &mut Vec<Regarding>, r: &Regarding) {
    if !set.contains(r) {
        set.push(r.clone());
    }
}

/// What `object` gives, if its source is on and it is selected: `ready` says how many ready
/// endpoints a Service (namespace, name) has.
fn object_hosts(
    settings: &ViewSettings,
    object: &HostObject,
    gateways: &HashMap<(&str, &str), &Gateway>,
    ready: &dyn Fn(&str, &str) -> usize,
) -> Option<(Regarding, ObjectHosts)> {
    let (meta, kind) = object.meta_kind();
    let s = &settings.sources;
    let on = match kind {
        Kind::Ingress => s.ingress,
        Kind::HttpRoute => s.http_route,
        Kind::GrpcRoute => s.grpc_route,
        Kind::TlsRoute => s.tls_route,
        Kind::DnsEndpoint => s.dns_endpoint,
        Kind::Service => false,
    };
    if !on {
        return None;
    }
    let id = selected(meta, settings.selector.as_ref())?;
    let owner = Regarding { kind, id };
    let mut source = Source::new(settings, meta, owner.clone(), ready);
    match object {
        HostObject::Ingress(ing) => ingress(&mut source, ing),
        HostObject::HttpRoute(r) => route_of(&mut source, gateways, &**r),
        HostObject::GrpcRoute(r) => route_of(&mut source, gateways, &**r),
        HostObject::TlsRoute(r) => route_of(&mut source, gateways, &**r),
        HostObject::DnsEndpoint(e) => {
            for endpoint in &e.spec.endpoints {
                dns_endpoint(&mut source, endpoint);
            }
        }
    }
    let backends = std::mem::take(&mut source.backends).into_iter().collect();
    let parents = match object {
        HostObject::HttpRoute(r) => parent_gateways(&**r),
        HostObject::GrpcRoute(r) => parent_gateways(&**r),
        HostObject::TlsRoute(r) => parent_gateways(&**r),
        HostObject::Ingress(_) | HostObject::DnsEndpoint(_) => Vec::new(),
    };
    let mut ignored = Vec::new();
    // (In host order: `finish` reads its hosts from an ordered map.)
    let claims = source.finish(&mut ignored);
    Some((
        owner,
        ObjectHosts {
            claims,
            ignored,
            backends,
            parents,
        },
    ))
}

/// The Gateways (namespace, name) a route names as parents, sorted, without duplicates.
fn parent_gateways<R: Route>(r: &R) -> Vec<(String, String)> {
    let (meta, spec, _) = r.parts();
    let namespace = super::namespace_of(meta);
    let parents: BTreeSet<(String, String)> = spec
        .parent_refs
        .iter()
        .filter(|p| {
            p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
        })
        .map(|p| {
            let ns = p.namespace.as_deref().unwrap_or(namespace);
            (ns.to_owned(), p.name.clone())
        })
        .collect();
    parents.into_iter().collect()
}

fn route_of<R: Route>(s: &mut Source<'_>, gateways: &HashMap<(&str, &str), &Gateway>, r: &R) {
    let (_, spec, status) = r.parts();
    route(s, gateways, spec, status);
}

/// The hosts of one cluster kept up to date object by object: a change of an object costs
/// its names (and the names it shares with others), a change of a Service's endpoints the
/// objects whose health reads it.
#[derive(Debug, Clone, Default)]
pub(super) struct LiveHosts {
    objects: HashMap<Regarding, ObjectHosts>,
    /// Per host: the objects claiming it.
    claimants: HashMap<String, Vec<Regarding>>,
    /// Per Service (namespace, name): the objects whose health reads its endpoints.
    readers: HashMap<(String, String), Vec<Regarding>>,
    /// Per Gateway (namespace, name): the routes naming it as a parent.
    routes_of: HashMap<(String, String), Vec<Regarding>>,
    /// The Gateways as last read.
    gateways: HashMap<(String, String), Arc<Gateway>>,
    /// Per host: the claims that lost it to an older one.
    conflicts: HashMap<String, Vec<Ignored>>,
    /// Per object: what was left out of it (only those with something).
    ignored: HashMap<Regarding, Vec<Ignored>>,
}

impl LiveHosts {
    /// The hosts of the cluster's objects (see the module docs).
    pub(super) fn build(
        settings: &ViewSettings,
        objects: &ClusterObjects,
    ) -> (Self, BTreeMap<String, HostEntry>) {
        let mut live = Self::default();
        if !settings.sources.hosts() {
            return (live, BTreeMap::new());
        }
        let counts = ready_endpoints(objects);
        let ready = |ns: &str, name: &str| counts.get(&(ns, name)).copied().unwrap_or(0);
        let gateways = gateway_map(&objects.gateways);
        live.gateways = objects
            .gateways
            .iter()
            .filter_map(|g| {
                let m = &g.metadata;
                Some((
                    (super::namespace_of(m).to_owned(), m.name.clone()?),
                    g.clone(),
                ))
            })
            .collect();
        let mut touched = BTreeSet::new();
        for object in host_objects(objects) {
            if let Some((owner, mine)) = object_hosts(settings, &object, &gateways, &ready) {
                live.insert(owner, mine, &mut touched);
            }
        }
        let mut hosts = BTreeMap::new();
        for host in touched {
            if let Some(entry) = live.resolve(&host) {
                hosts.insert(host, entry);
            }
        }
        (live, hosts)
    }

    /// Brings `hosts` up to date after the objects `changed` changed (or went), the
    /// endpoints of the Services `services` did, and the Gateways `gateways` (namespace,
    /// name) did. `lookup` reads the cluster's objects, `ready` a Service's ready endpoints.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn update(
        &mut self,
        settings: &ViewSettings,
        changed: &BTreeSet<Regarding>,
        services: &BTreeSet<ServiceId>,
        gateways: &BTreeSet<(String, String)>,
        lookup: &dyn Lookup,
        ready: &dyn Fn(&str, &str) -> usize,
        hosts: &mut OrdMap<String, HostEntry>,
    ) {
        let mut affected = changed.clone();
        for id in services {
            if let Some(readers) = self.readers.get(&(id.namespace.clone(), id.name.clone())) {
                affected.extend(readers.iter().cloned());
            }
        }
        let routes = affected
            .iter()
            .any(|r| matches!(r.kind, Kind::HttpRoute | Kind::GrpcRoute | Kind::TlsRoute));
        let all_gateways = if routes || !gateways.is_empty() {
            lookup.gateways()
        } else {
            Vec::new()
        };
        let current = gateway_map(&all_gateways);
        // A Gateway's routes are read again when what they read of it changed (its listeners
        // or addresses), not for its other status (attached routes, conditions). Every
        // Gateway is compared once they are read, not only those with an event: the store
        // may be ahead of the events taken, and a route read now reads the Gateway as it is
        // now (were it kept as of its last event, a change and its undoing before the next
        // sync would leave the route with the change).
        let mut compared = gateways.clone();
        if routes || !gateways.is_empty() {
            compared.extend(
                current
                    .keys()
                    .map(|(ns, n)| ((*ns).to_owned(), (*n).to_owned())),
            );
            compared.extend(self.gateways.keys().cloned());
        }
        for g in &compared {
            let now = current.get(&(g.0.as_str(), g.1.as_str())).copied();
            let before = self.gateways.get(g).map(|a| &**a);
            if now.map(|n| (&n.spec, &n.status)) == before.map(|b| (&b.spec, &b.status)) {
                continue;
            }
            match now {
                Some(n) => {
                    self.gateways.insert(g.clone(), Arc::new(n.clone()));
                }
                None => {
                    self.gateways.remove(g);
                }
            }
            if let Some(routes) = self.routes_of.get(g) {
                affected.extend(routes.iter().cloned());
            }
        }
        if affected.is_empty() {
            return;
        }
        let gateways = current;
        let mut touched = BTreeSet::new();
        for r in &affected {
            self.remove(r, &mut touched);
            let now = lookup
                .host_object(r)
                .and_then(|o| object_hosts(settings, &o, &gateways, ready));
            if let Some((owner, mine)) = now {
                self.insert(owner, mine, &mut touched);
            }
        }
        for host in touched {
            match self.resolve(&host) {
                Some(entry) => {
                    if hosts.get(&host) != Some(&entry) {
                        hosts.insert(host, entry);
                    }
                }
                None => {
                    hosts.remove(&host);
                }
            }
        }
    }

    /// Everything left out of the objects and of their claims.
    pub(super) fn ignored(&self) -> impl Iterator<Item = &Ignored> {
        self.ignored
            .values()
            .flatten()
            .chain(self.conflicts.values().flatten())
    }

    fn insert(&mut self, owner: Regarding, mut mine: ObjectHosts, touched: &mut BTreeSet<String>) {
        if !mine.ignored.is_empty() {
            self.ignored
                .insert(owner.clone(), std::mem::take(&mut mine.ignored));
        }
        for c in &mine.claims {
            add(self.claimants.entry(c.host.clone()).or_default(), &owner);
            touched.insert(c.host.clone());
        }
        for b in &mine.backends {
            add(self.readers.entry(b.clone()).or_default(), &owner);
        }
        for g in &mine.parents {
            add(self.routes_of.entry(g.clone()).or_default(), &owner);
        }
        self.objects.insert(owner, mine);
    }

    fn remove(&mut self, owner: &Regarding, touched: &mut BTreeSet<String>) {
        let Some(old) = self.objects.remove(owner) else {
            return;
        };
        self.ignored.remove(owner);
        for claim in old.claims {
            if let Some(c) = self.claimants.get_mut(&claim.host) {
                c.retain(|r| r != owner);
                if c.is_empty() {
                    self.claimants.remove(&claim.host);
                }
            }
            touched.insert(claim.host);
        }
        for (index, keys) in [
            (&mut self.readers, &old.backends),
            (&mut self.routes_of, &old.parents),
        ] {
            for k in keys {
                if let Some(r) = index.get_mut(k) {
                    r.retain(|x| x != owner);
                    if r.is_empty() {
                        index.remove(k);
                    }
                }
            }
        }
    }

    /// Who keeps `host`: the oldest claim (creation time, then kind, namespace and name);
    /// the others lose it (kept in the conflicts), except routes through the same Gateways,
    /// which share it.
    fn resolve(&mut self, host: &str) -> Option<HostEntry> {
        self.conflicts.remove(host);
        let mut claims: Vec<&Claim> = self
            .claimants
            .get(host)?
            .iter()
            .filter_map(|r| self.objects.get(r)?.claim(host))
            .collect();
        // Older first: the first to claim a host keeps it.
        claims.sort_by(|a, b| {
            (a.created.is_none(), &a.created, &a.entry.owner).cmp(&(
                b.created.is_none(),
                &b.created,
                &b.entry.owner,
            ))
        });
        let mut claims = claims.into_iter();
        let mut kept = claims.next()?.entry.clone();
        let mut lost = Vec::new();
        for claim in claims {
            // Routes splitting one hostname (by path, say) through the same Gateways: one
            // name, healthy while any of them is.
            let route = |k: Kind| matches!(k, Kind::HttpRoute | Kind::GrpcRoute | Kind::TlsRoute);
            let (a, b) = (&kept.health, &claim.entry.health);
            if route(kept.owner.kind)
                && route(claim.entry.owner.kind)
                && a.ingress == b.ingress
                && a.hostnames == b.hostnames
            {
                kept.health.ready_endpoints += b.ready_endpoints;
                continue;
            }
            lost.push(Ignored {
                object: claim.object.clone(),
                reason: format!(
                    "host {} is claimed by the older {}: no record from this one",
                    claim.host, kept.owner
                ),
                event: Some((claim.entry.owner.clone(), "HostConflict")),
            });
        }
        if !lost.is_empty() {
            self.conflicts.insert(host.to_owned(), lost);
        }
        Some(kept)
    }
}

/// Ready endpoints per Service (any Service: backends need not be LoadBalancers).
fn ready_endpoints(objects: &ClusterObjects) -> HashMap<(&str, &str), usize> {
    let mut ready: HashMap<(&str, &str), usize> = HashMap::new();
    for slice in &objects.slices {
        let Some(name) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let namespace = super::namespace_of(&slice.metadata);
        *ready.entry((namespace, name.as_str())).or_default() += ready_count(slice);
    }
    ready
}

/// An EndpointSlice's ready endpoints.
pub(super) fn ready_count(slice: &EndpointSlice) -> usize {
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .count()
}

/// What one object gives: its hosts, each with its addresses and records, gathered before they
/// become claims.
struct Source<'a> {
    settings: &'a ViewSettings,
    owner: Regarding,
    object: String,
    created: Option<String>,
    policy: policy::Policy,
    /// `fedplane.io/backend-health: all`.
    all_backends: bool,
    ready: &'a dyn Fn(&str, &str) -> usize,
    /// The Services whose endpoints were read.
    backends: BTreeSet<(String, String)>,
    hosts: BTreeMap<String, Gathered>,
    ignored: Vec<Ignored>,
}

/// One host of one object.
#[derive(Default)]
struct Gathered {
    ips: BTreeSet<IpAddr>,
    hostnames: BTreeSet<String>,
    extras: BTreeSet<Extra>,
    ttl: Option<u32>,
    /// Ready endpoints of its backends; `None`: no Service backend (healthy).
    ready: Option<usize>,
}

impl<'a> Source<'a> {
    fn new(
        settings: &'a ViewSettings,
        meta: &ObjectMeta,
        owner: Regarding,
        ready: &'a dyn Fn(&str, &str) -> usize,
    ) -> Self {
        let object = owner.to_string();
        let mut ignored = Vec::new();
        let policy = read_policy(
            meta.annotations.as_ref(),
            settings,
            &object,
            &owner,
            &mut ignored,
        );
        Self {
            settings,
            object,
            created: meta.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            policy,
            all_backends: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(BACKEND_HEALTH))
                .is_some_and(|v| v.eq_ignore_ascii_case("all")),
            ready,
            backends: BTreeSet::new(),
            hosts: BTreeMap::new(),
            ignored,
            owner,
        }
    }

    fn ignore(&mut self, reason: String) {
        self.ignored.push(Ignored {
            object: self.object.clone(),
            reason,
            event: None,
        });
    }

    /// The host `raw` normalised, or why it gets no records (reported).
    fn host(&mut self, raw: &str, underscores: bool) -> Option<String> {
        let host = raw.trim_end_matches('.').to_ascii_lowercase();
        match host_problem(&host, self.settings, underscores) {
            Some(reason) => {
                self.ignore(format!("host {raw:?} {reason}: no record"));
                None
            }
            None => Some(host),
        }
    }

    /// The ready endpoints of the backend Services `backends` (in this object's namespace
    /// unless given): `None` without backends.
    fn backend_health(&mut self, backends: &BTreeSet<(String, String)>) -> Option<usize> {
        if backends.is_empty() {
            return None;
        }
        let counts: Vec<usize> = backends
            .iter()
            .map(|(ns, name)| (self.ready)(ns, name))
            .collect();
        self.backends.extend(backends.iter().cloned());
        Some(if self.all_backends && counts.contains(&0) {
            0
        } else {
            counts.iter().sum()
        })
    }

    /// The records of `host` (`None` past [`MAX_NAMES`] names, said once).
    fn gathered(&mut self, host: String) -> Option<&mut Gathered> {
        if self.hosts.len() >= MAX_NAMES && !self.hosts.contains_key(&host) {
            if self.hosts.len() == MAX_NAMES {
                self.ignore(format!(
                    "gives more than {MAX_NAMES} names: {host} and those after it are left out"
                ));
                // Said once: one more (never read) entry marks it.
                self.hosts.insert(String::new(), Gathered::default());
            }
            return None;
        }
        Some(self.hosts.entry(host).or_default())
    }

    /// Its claims; what was left out goes to `ignored`.
    fn finish(self, ignored: &mut Vec<Ignored>) -> Vec<Claim> {
        let Self {
            owner,
            object,
            created,
            policy,
            hosts,
            ignored: mine,
            ..
        } = self;
        ignored.extend(mine);
        let mut claims = Vec::new();
        for (host, g) in hosts {
            // A DNSEndpoint name without records claims nothing (nor keeps another from it);
            // an Ingress or route waiting for its addresses keeps its name.
            let empty = g.ips.is_empty() && g.hostnames.is_empty() && g.extras.is_empty();
            if host.is_empty() || (empty && owner.kind == Kind::DnsEndpoint) {
                continue;
            }
            // A load balancer named as the host itself (or below it) would make it an alias
            // of itself; an alias holds no other records.
            let below = format!(".{host}");
            let all = g.hostnames.len();
            let mut hostnames: Vec<String> = g
                .hostnames
                .into_iter()
                .filter(|h| *h != host && !h.ends_with(&below))
                .collect();
            if hostnames.len() < all {
                ignored.push(Ignored {
                    object: object.clone(),
                    reason: format!("a load balancer hostname at or below {host} is left out of its records (it would be its own alias)"),
                    event: None,
                });
            }
            // (A load balancer's status may give an address and a hostname: the address
            // answers, as from Services.)
            let beside =
                !g.extras.is_empty() || (owner.kind == Kind::DnsEndpoint && !g.ips.is_empty());
            if !hostnames.is_empty() && beside {
                ignored.push(Ignored {
                    object: object.clone(),
                    reason: format!(
                        "host {host}: a CNAME cannot stand beside other records of its name: left out"
                    ),
                    event: None,
                });
                hostnames.clear();
            }
            claims.push(Claim {
                entry: HostEntry {
                    owner: owner.clone(),
                    created: created.clone().unwrap_or_default(),
                    health: ServiceHealth {
                        ingress: g.ips.into_iter().collect(),
                        hostnames,
                        ready_endpoints: g.ready.unwrap_or(1),
                        policy: policy.clone(),
                        ..ServiceHealth::default()
                    },
                    ttl: g.ttl,
                    extras: g.extras.into_iter().collect(),
                },
                host,
                created: created.clone(),
                object: object.clone(),
            });
        }
        claims
    }
}

/// An Ingress's hosts.
fn ingress(s: &mut Source<'_>, ing: &Ingress) {
    let object = s.object.clone();
    let entries = ing
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .map(|i| (i.ip.as_deref(), i.hostname.as_deref()));
    let (ips, hostnames) = lb_addresses(entries, &object, &mut s.ignored);
    let spec = ing.spec.as_ref();
    let namespace = s.owner.id.namespace.clone();
    let service_of = |b: &IngressBackend| {
        b.service
            .as_ref()
            .map(|svc| (namespace.clone(), svc.name.clone()))
    };
    let default_backend = spec
        .and_then(|sp| sp.default_backend.as_ref())
        .and_then(service_of);
    for rule in spec.and_then(|sp| sp.rules.as_ref()).into_iter().flatten() {
        let Some(host) = rule.host.as_deref().and_then(|raw| s.host(raw, false)) else {
            continue;
        };
        if s.hosts.contains_key(&host) {
            continue; // its first rule decides
        }
        // This host's backends: its rule's paths, else the default backend.
        let mut backends: BTreeSet<(String, String)> = rule
            .http
            .iter()
            .flat_map(|h| h.paths.iter().filter_map(|p| service_of(&p.backend)))
            .collect();
        if backends.is_empty() {
            backends.extend(default_backend.clone());
        }
        let ready = s.backend_health(&backends);
        let Some(g) = s.gathered(host) else { break };
        g.ips.extend(ips.iter().copied());
        g.hostnames.extend(hostnames.iter().cloned());
        g.ready = ready;
    }
}

/// A Gateway API route's hosts.
fn route(
    s: &mut Source<'_>,
    gateways: &HashMap<(&str, &str), &Gateway>,
    spec: &RouteSpec,
    status: Option<&RouteStatus>,
) {
    let namespace = s.owner.id.namespace.clone();
    let backends: BTreeSet<(String, String)> = spec
        .rules
        .iter()
        .flat_map(|r| &r.backend_refs)
        .filter(|b| {
            b.group.as_deref().unwrap_or("").is_empty()
                && b.kind.as_deref().unwrap_or("Service") == "Service"
        })
        .map(|b| {
            let ns = b.namespace.clone().unwrap_or_else(|| namespace.clone());
            // A backend of weight 0 takes no traffic: (ns, "") marks a backend that does not
            // count, so a route with only such backends is unhealthy, not unjudged.
            (
                ns,
                if b.weight == Some(0) {
                    String::new()
                } else {
                    b.name.clone()
                },
            )
        })
        .collect();
    let weighted: BTreeSet<(String, String)> = backends
        .iter()
        .filter(|b| !b.1.is_empty())
        .cloned()
        .collect();
    let ready = match (backends.is_empty(), weighted.is_empty()) {
        (false, true) => Some(0),
        _ => s.backend_health(&weighted),
    };
    for parent in &spec.parent_refs {
        let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
        if group != GATEWAY_GROUP || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway" {
            continue; // not a Gateway: a mesh Service, another implementation's parent
        }
        let gw_ns = parent
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.clone());
        let shown = format!("{gw_ns}/{}", parent.name);
        let Some(gateway) = gateways.get(&(gw_ns.as_str(), parent.name.as_str())) else {
            s.ignore(format!(
                "parent Gateway {shown} does not exist: no records through it"
            ));
            continue;
        };
        if !accepted(status, parent, &namespace) {
            s.ignore(format!(
                "parent Gateway {shown} has not accepted it (status.parents: no Accepted=True): no records through it"
            ));
            continue;
        }
        let kind = s.owner.kind;
        let listeners: Vec<_> = gateway
            .spec
            .listeners
            .iter()
            .filter(|l| parent.section_name.as_ref().is_none_or(|n| *n == l.name))
            .filter(|l| parent.port.is_none_or(|p| l.port == Some(p)))
            .filter(|l| admits(l, kind, &namespace, &gw_ns))
            .collect();
        if listeners.is_empty() {
            s.ignore(format!(
                "no listener of Gateway {shown} it names admits it (sectionName, port, protocol, allowedRoutes): no records through it"
            ));
            continue;
        }
        let listener_names: Vec<Option<String>> = listeners
            .iter()
            .map(|l| {
                l.hostname
                    .as_deref()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            })
            .collect();
        let mut names: BTreeSet<String> = BTreeSet::new();
        if spec.hostnames.is_empty() {
            // A listener without hostname takes any name: no name of ours.
            names.extend(listener_names.iter().flatten().cloned());
        }
        for raw in &spec.hostnames {
            let h = raw.trim_end_matches('.').to_ascii_lowercase();
            let before = names.len();
            for l in &listener_names {
                match l {
                    None => {
                        names.insert(h.clone());
                    }
                    Some(l) => names.extend(intersect(&h, l)),
                }
            }
            if names.len() == before && !names.contains(&h) {
                s.ignore(format!(
                    "hostname {raw:?} matches no listener of Gateway {shown} it attaches to: no records through it"
                ));
            }
        }
        if names.is_empty() {
            if spec.hostnames.is_empty() {
                s.ignore(format!(
                    "neither it nor the listeners of Gateway {shown} it attaches to have a hostname: no records through it"
                ));
            }
            continue;
        }
        let mut entries: Vec<(Option<&str>, Option<&str>)> = Vec::new();
        for a in gateway.status.iter().flat_map(|st| &st.addresses) {
            match a.type_.as_deref().unwrap_or("IPAddress") {
                "IPAddress" => entries.push((Some(a.value.as_str()), None)),
                "Hostname" => entries.push((None, Some(a.value.as_str()))),
                other => s.ignore(format!(
                    "Gateway {shown}'s address {:?} of type {other:?} is not an IPAddress or Hostname: left out",
                    a.value
                )),
            }
        }
        let (ips, hostnames) = lb_addresses(entries.into_iter(), &s.object.clone(), &mut s.ignored);
        for raw in names {
            let Some(host) = s.host(&raw, false) else {
                continue;
            };
            let Some(g) = s.gathered(host) else { break };
            g.ips.extend(ips.iter().copied());
            g.hostnames.extend(hostnames.iter().cloned());
            g.ready = ready;
        }
    }
}

/// Whether listener `l` of a Gateway in namespace `gw_ns` lets a route of `kind` in namespace
/// `route_ns` attach: its protocol carries the kind, its `allowedRoutes` lists the kind (when
/// it lists any) and the namespace (`Same` by default, `All`; a `Selector` is taken as
/// allowing it: the Namespaces' labels are not read, the route's Accepted status decides).
fn admits(l: &crate::kinds::Listener, kind: Kind, route_ns: &str, gw_ns: &str) -> bool {
    let (name, protocols): (&str, &[&str]) = match kind {
        Kind::HttpRoute => ("HTTPRoute", &["HTTP", "HTTPS"]),
        Kind::GrpcRoute => ("GRPCRoute", &["HTTP", "HTTPS"]),
        _ => ("TLSRoute", &["TLS"]),
    };
    if l.protocol
        .as_deref()
        .is_some_and(|p| !protocols.contains(&p))
    {
        return false;
    }
    let allowed = l.allowed_routes.as_ref();
    let kinds = allowed.map(|a| a.kinds.as_slice()).unwrap_or_default();
    if !kinds.is_empty()
        && !kinds
            .iter()
            .any(|k| k.kind == name && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP)
    {
        return false;
    }
    match allowed
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.as_deref())
        .unwrap_or("Same")
    {
        "Same" => route_ns == gw_ns,
        _ => true,
    }
}

/// Whether the route's status says the Gateway of `parent` accepted it.
fn accepted(status: Option<&RouteStatus>, parent: &ParentRef, route_ns: &str) -> bool {
    let ns = |p: &ParentRef| p.namespace.clone().unwrap_or_else(|| route_ns.to_owned());
    status.into_iter().flat_map(|s| &s.parents).any(|p| {
        let r = &p.parent_ref;
        r.name == parent.name
            && ns(r) == ns(parent)
            && r.section_name == parent.section_name
            && r.port == parent.port
            && p.conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status == "True")
    })
}

/// The names both a route hostname and a listener hostname match (Gateway API: a `*.` first
/// label matches one or more labels): the more specific of the two, if one is inside the
/// other.
pub(super) fn intersect(route: &str, listener: &str) -> Option<String> {
    let inside = |name: &str, wildcard: &str| {
        wildcard
            .strip_prefix('*')
            .is_some_and(|suffix| name.ends_with(suffix) && name.len() > suffix.len())
    };
    if route == listener || inside(route, listener) {
        Some(route.to_owned())
    } else if inside(listener, route) {
        Some(listener.to_owned())
    } else {
        None
    }
}

/// One endpoint of a DNSEndpoint.
fn dns_endpoint(s: &mut Source<'_>, e: &crate::kinds::Endpoint) {
    let record_type = e.record_type.to_ascii_uppercase();
    let Some(host) = s.host(&e.dns_name, true) else {
        return;
    };
    let refuse = |s: &mut Source<'_>, why: &str| {
        s.ignore(format!("endpoint {host} {record_type}: {why}: left out"));
    };
    if !matches!(
        record_type.as_str(),
        "A" | "AAAA" | "CNAME" | "TXT" | "SRV" | "MX"
    ) {
        return refuse(
            s,
            "only A, AAAA, CNAME, TXT, SRV and MX records are published",
        );
    }
    if e.set_identifier.as_deref().is_some_and(|i| !i.is_empty()) {
        return refuse(
            s,
            "setIdentifier (a cloud provider's routing policy) is not supported; use fedplane.io/dns-strategy",
        );
    }
    if e.targets.len() > MAX_TARGETS {
        return refuse(s, &format!("more than {MAX_TARGETS} targets"));
    }
    if record_type == "CNAME" && e.targets.len() > 1 {
        return refuse(s, "a CNAME has one target");
    }
    let mut ips = Vec::new();
    let mut hostnames = Vec::new();
    let mut extras = Vec::new();
    for target in &e.targets {
        let parsed: Result<(), String> = match record_type.as_str() {
            "A" | "AAAA" => match target.trim().parse::<IpAddr>() {
                // fedplane-dns answers an IPv4-mapped address as IPv4 (as Go's ParseIP).
                Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => {
                    Err("is an IPv4-mapped IPv6 address".to_owned())
                }
                Ok(ip) if ip.is_ipv4() == (record_type == "A") => {
                    ips.push(ip);
                    Ok(())
                }
                _ => Err(format!(
                    "is not an IPv{} address",
                    if record_type == "A" { 4 } else { 6 }
                )),
            },
            "CNAME" => hostname(target).map(|h| hostnames.push(h)),
            "TXT" => txt(target).map(|t| extras.push(Extra::Text(t))),
            "SRV" => srv(target).map(|x| extras.push(x)),
            _ => mx(target).map(|x| extras.push(x)),
        };
        if let Err(reason) = parsed {
            s.ignore(format!(
                "endpoint {host} {record_type}: target {target:?} {reason}: left out"
            ));
        }
    }
    let ttl = e
        .record_ttl
        .filter(|t| *t > 0)
        .map(|t| u32::try_from(t).unwrap_or(u32::MAX));
    let Some(g) = s.gathered(host) else {
        return;
    };
    g.ips.extend(ips);
    g.hostnames.extend(hostnames);
    g.extras.extend(extras);
    // Several endpoints of one name: the shortest TTL.
    g.ttl = match (g.ttl, ttl) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
}

/// An SRV target: `priority weight port target`.
fn srv(target: &str) -> Result<Extra, String> {
    let f: Vec<&str> = target.split_whitespace().collect();
    let num = |s: &str| s.parse::<u16>().ok();
    match f[..] {
        [p, w, port, t] => match (num(p), num(w), num(port), hostname(t)) {
            (_, _, Some(0), _) => Err("has port 0 (no service there)".into()),
            (Some(priority), Some(weight), Some(port), Ok(target)) => Ok(Extra::Srv {
                priority,
                weight,
                port,
                target,
            }),
            _ => Err("is not `priority weight port target` (numbers 0-65535 and a name)".into()),
        },
        _ => Err("is not `priority weight port target`".into()),
    }
}

/// A TXT target: as it is, or in presentation format (`"a b" "c"`: the quoted strings,
/// unescaped and joined, as ExternalDNS's registry and RFC 1035 write them).
fn txt(target: &str) -> Result<String, String> {
    let t = target.trim();
    let text = if t.starts_with('"') && t.ends_with('"') && t.len() >= 2 {
        let mut out = String::new();
        let mut chars = t.chars();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', _) => quoted = !quoted,
                ('\\', true) => out.extend(chars.next()),
                (c, true) => out.push(c),
                (c, false) if c.is_whitespace() => {}
                (_, false) => return Err("is neither plain text nor quoted strings".into()),
            }
        }
        if quoted {
            return Err("has an unclosed quote".into());
        }
        out
    } else {
        target.to_owned()
    };
    if text.len() > 4096 {
        return Err("is longer than 4096 bytes".into());
    }
    if text.is_empty() {
        return Err("is empty".into());
    }
    Ok(text)
}

/// An MX target: `preference host`.
fn mx(target: &str) -> Result<Extra, String> {
    let f: Vec<&str> = target.split_whitespace().collect();
    match f[..] {
        [p, h] => match (p.parse::<u16>(), hostname(h)) {
            (Ok(preference), Ok(host)) => Ok(Extra::Mx { preference, host }),
            _ => Err("is not `preference host` (a number 0-65535 and a name)".into()),
        },
        _ => Err("is not `preference host`".into()),
    }
}

/// Why a host cannot be a name of ours, if it cannot. `underscores`: labels may hold `_`
/// (DNSEndpoint names such as `_sip._tcp.…`).
fn host_problem(host: &str, settings: &ViewSettings, underscores: bool) -> Option<String> {
    let domain = &settings.domain;
    let Some(relative) = host
        .strip_suffix(domain.as_str())
        .and_then(|h| h.strip_suffix('.'))
    else {
        return Some(format!("is not inside {domain}"));
    };
    let labels: Vec<&str> = relative.split('.').collect();
    let valid = labels.iter().enumerate().all(|(i, l)| {
        (i == 0 && *l == "*")
            || dns_label(l).is_ok()
            || (underscores
                && l.len() <= 63
                && l.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                })
                && !l.is_empty())
    });
    if !valid {
        return Some("is not a DNS name (a-z, 0-9, '-'; a wildcard only as `*.` first)".into());
    }
    let fed = settings.federation.as_str();
    if labels.windows(2).any(|w| w[0] == fed && w[1] == "svc") {
        return Some(format!(
            "is inside the names of the federation's Services (…{fed}.svc…)"
        ));
    }
    if labels.last() == Some(&"dns") {
        return Some(format!(
            "is at or below dns.{domain}, where the zone's apex addresses and name servers are"
        ));
    }
    if labels == ["*"] {
        return Some(format!("is a wildcard for all of {domain}"));
    }
    // Its longest record name: an IPv6 address label (39) below the longest cluster name.
    let longest_cluster = settings.members.iter().map(String::len).max().unwrap_or(63);
    if host.len() + longest_cluster + 39 + 2 > 253 {
        return Some(
            "is too long: its records' names (address.cluster.host) would pass 253 characters"
                .to_owned(),
        );
    }
    None
}
