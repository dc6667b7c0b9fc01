//! Where each member cluster's objects come from: a live API server (watches of
//! [`fedplane_ops::kube`]: Nodes, Services, EndpointSlices, and the kinds of the host sources
//! `--source` turns on: Ingresses, Gateways and their routes, DNSEndpoints) or a snapshot
//! file. Each cluster tracks its [`Link`] and, per kind, a generation that moves on every
//! change of that kind, and wakes the reconcile loop.
//!
//! The watches of the host sources do not decide whether a cluster is reachable: a failing one
//! (no permission on a member, a CRD not installed there) must not withdraw the cluster's
//! Services; its hosts stay as last seen. A cluster waits [`OPTIONAL_LIST_WAIT`] for their
//! first lists, then counts as listed without them.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use fedplane_ops::kube::{Observer, Signal};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::kinds::{DnsEndpoint, Gateway, GrpcRoute, HttpRoute, TlsRoute};
use crate::reach::Link;
use crate::view::hosts::HostObject;
use crate::view::{self, Changes, ClusterObjects, Kind, Regarding, ServiceId, ViewSettings};

/// The watched kinds, in the order of [`Cluster::generations`].
pub const KINDS: [&str; KIND_COUNT] = [
    "Node",
    "Service",
    "EndpointSlice",
    "Ingress",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "TLSRoute",
    "DNSEndpoint",
];
/// How many kinds are watched (at most).
pub const KIND_COUNT: usize = 9;
/// The index in [`KINDS`] of the first kind of a host source: it and those after it do not
/// decide whether the cluster is reachable.
const OPTIONAL: usize = 3;
/// How long a cluster waits for the kinds of its host sources to be listed before it counts
/// as listed without them (so a member that does not let us list Ingresses, or lacks the
/// Gateway API CRDs, costs this once, not its Services' records).
pub const OPTIONAL_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The index in [`KINDS`] of the Gateways.
const GATEWAYS: usize = 4;
/// The kind of host each optional kind's objects own (none: the Gateways).
const HOST_KINDS: [Option<Kind>; KIND_COUNT - OPTIONAL] = [
    Some(Kind::Ingress),
    None,
    Some(Kind::HttpRoute),
    Some(Kind::GrpcRoute),
    Some(Kind::TlsRoute),
    Some(Kind::DnsEndpoint),
];

/// Where and how to read one optional kind: its API group and resource, for the hints of
/// the logs.
const OPTIONAL_RESOURCES: [&str; KIND_COUNT - OPTIONAL] = [
    "networking.k8s.io ingresses",
    "gateway.networking.k8s.io gateways",
    "gateway.networking.k8s.io httproutes",
    "gateway.networking.k8s.io grpcroutes",
    "gateway.networking.k8s.io tlsroutes",
    "externaldns.k8s.io dnsendpoints",
];

#[derive(Debug, Default)]
struct LinkState {
    /// Per watcher: listed at least once (a kind not watched counts as listed).
    listed: [bool; KIND_COUNT],
    /// Per watcher: its last event was an error.
    failing: [bool; KIND_COUNT],
    /// When the first of the current failures began.
    failing_since: Option<Instant>,
    /// When the watches started (live clusters).
    started: Option<Instant>,
    /// Per watcher: moves on every change of its objects.
    generations: [u64; KIND_COUNT],
    /// Per optional watcher: since when it has been failing.
    optional_failing_since: [Option<Instant>; KIND_COUNT],
    /// What changed since [`Cluster::take_changes`].
    changes: Changes,
}

impl LinkState {
    fn link(&self) -> Link {
        let optional_awaited = !self.listed[OPTIONAL..].iter().all(|l| *l)
            && self
                .started
                .is_some_and(|t| t.elapsed() < OPTIONAL_LIST_WAIT);
        if !self.listed[..OPTIONAL].iter().all(|l| *l) || optional_awaited {
            Link::Pending
        } else if let Some(since) = self.failing_since {
            Link::Unreachable { since }
        } else {
            Link::Connected
        }
    }
}

enum Objects {
    Static(ClusterObjects),
    Live {
        nodes: Store<Node>,
        services: Store<Service>,
        slices: Store<EndpointSlice>,
        ingresses: Option<Store<Ingress>>,
        gateways: Option<Store<Gateway>>,
        http_routes: Option<Store<HttpRoute>>,
        grpc_routes: Option<Store<GrpcRoute>>,
        tls_routes: Option<Store<TlsRoute>>,
        dns_endpoints: Option<Store<DnsEndpoint>>,
        recorder: Recorder,
    },
}

/// One member cluster.
pub struct Cluster {
    /// How its objects are read.
    pub view: ViewSettings,
    state: Arc<Mutex<LinkState>>,
    objects: Objects,
}

impl Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.view.cluster)
            .field("link", &self.link())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster read once from a snapshot: always connected, never changes.
    pub fn from_snapshot(view: ViewSettings, objects: ClusterObjects) -> Self {
        let state = LinkState {
            listed: [true; KIND_COUNT],
            ..LinkState::default()
        };
        metrics::gauge!("fedplane_controller_cluster_connected", "cluster" => view.cluster.clone())
            .set(1.0);
        Self {
            view,
            state: Arc::new(Mutex::new(state)),
            objects: Objects::Static(objects),
        }
    }

    /// A live cluster: starts its watchers on `tasks`; each change wakes `changed`.
    pub fn live(
        view: ViewSettings,
        client: Client,
        changed: Arc<Notify>,
        cancel: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let sources = view.sources;
        let watched = [
            true,
            true,
            true,
            sources.ingress,
            sources.gateway(),
            sources.http_route,
            sources.grpc_route,
            sources.tls_route,
            sources.dns_endpoint,
        ];
        let state = Arc::new(Mutex::new(LinkState {
            listed: watched.map(|w| !w),
            started: Some(Instant::now()),
            ..LinkState::default()
        }));
        metrics::gauge!("fedplane_controller_cluster_connected", "cluster" => view.cluster.clone())
            .set(0.0);
        let w = Watch {
            cluster: view.cluster.clone(),
            state: state.clone(),
            changed,
            cancel: cancel.clone(),
        };
        let nodes = w.spawn::<Node>(Api::all(client.clone()), 0, tasks);
        let services = w.spawn::<Service>(Api::all(client.clone()), 1, tasks);
        let slices = w.spawn::<EndpointSlice>(Api::all(client.clone()), 2, tasks);
        if watched[OPTIONAL..].iter().any(|w| *w) {
            // The end of the wait for the optional kinds' lists must wake the loop.
            let (w2, cancel) = (w.clone(), cancel.clone());
            tasks.spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(OPTIONAL_LIST_WAIT) => {
                        let listed = w2.lock().listed;
                        for i in (OPTIONAL..KIND_COUNT).filter(|i| !listed[*i]) {
                            tracing::error!(cluster = %w2.cluster, kind = KINDS[i], "not listed after {OPTIONAL_LIST_WAIT:?} (may fedplane-controller-reader list and watch {} there, and is the CRD installed?): the cluster's Services are published without these hosts", OPTIONAL_RESOURCES[i - OPTIONAL]);
                        }
                        if listed.iter().any(|l| !l) {
                            w2.gauge();
                            w2.changed.notify_one();
                        }
                    }
                    () = cancel.cancelled() => {}
                }
            });
        }
        let ingresses = watched[3].then(|| w.spawn::<Ingress>(Api::all(client.clone()), 3, tasks));
        let gateways = watched[4].then(|| w.spawn::<Gateway>(Api::all(client.clone()), 4, tasks));
        let http_routes =
            watched[5].then(|| w.spawn::<HttpRoute>(Api::all(client.clone()), 5, tasks));
        let grpc_routes =
            watched[6].then(|| w.spawn::<GrpcRoute>(Api::all(client.clone()), 6, tasks));
        let tls_routes =
            watched[7].then(|| w.spawn::<TlsRoute>(Api::all(client.clone()), 7, tasks));
        let dns_endpoints =
            watched[8].then(|| w.spawn::<DnsEndpoint>(Api::all(client.clone()), 8, tasks));
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "fedplane-controller".into(),
                instance: None,
            },
        );
        Self {
            view,
            state,
            objects: Objects::Live {
                nodes,
                services,
                slices,
                ingresses,
                gateways,
                http_routes,
                grpc_routes,
                tls_routes,
                dns_endpoints,
                recorder,
            },
        }
    }

    /// Records a Warning Event on an object of a live cluster (in the background: a cluster
    /// that cannot take it costs a debug line, nothing else).
    pub fn warn(&self, regarding: &Regarding, reason: &str, note: &str) {
        let Objects::Live {
            services,
            ingresses,
            http_routes,
            grpc_routes,
            tls_routes,
            dns_endpoints,
            recorder,
            ..
        } = &self.objects
        else {
            return;
        };
        fn find<K>(store: Option<&Store<K>>, id: &crate::view::ServiceId) -> Option<ObjectReference>
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            store?
                .get(&ObjectRef::new(&id.name).within(&id.namespace))
                .map(|o| o.object_ref(&()))
        }
        let id = &regarding.id;
        let reference = match regarding.kind {
            Kind::Service => find(Some(services), id),
            Kind::Ingress => find(ingresses.as_ref(), id),
            Kind::HttpRoute => find(http_routes.as_ref(), id),
            Kind::GrpcRoute => find(grpc_routes.as_ref(), id),
            Kind::TlsRoute => find(tls_routes.as_ref(), id),
            Kind::DnsEndpoint => find(dns_endpoints.as_ref(), id),
        };
        let Some(reference) = reference else {
            return;
        };
        let recorder = recorder.clone();
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            // The API limits a note to 1 kB.
            note: Some(note.chars().take(1000).collect()),
            action: "Federate".into(),
            secondary: None,
        };
        let cluster = self.view.cluster.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                debug!(cluster, error = %e, "Event not recorded");
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection state.
    pub fn link(&self) -> Link {
        self.lock().link()
    }

    /// The generations (as [`Cluster::generations`]) and what changed of the Services since
    /// the last call, read together: the changes are exactly those up to these generations
    /// (a snapshot never changes).
    pub fn take_changes(&self) -> ([u64; KIND_COUNT], Changes) {
        let mut s = self.lock();
        (s.generations, std::mem::take(&mut s.changes))
    }

    /// The Nodes as the cluster has them now.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        match &self.objects {
            Objects::Static(o) => o.nodes.clone(),
            Objects::Live { nodes, .. } => nodes.state(),
        }
    }

    /// The host kinds whose watch (or the Gateways' watch, for routes) has been failing for
    /// longer than `grace` at `now`: their hosts are withdrawn, as a cluster's past its grace
    /// period; and when the next kind will be, if one is failing.
    pub fn stale_kinds(
        &self,
        grace: std::time::Duration,
        now: Instant,
    ) -> (Vec<Kind>, Option<Instant>) {
        let s = self.lock();
        let mut stale = Vec::new();
        let mut next: Option<Instant> = None;
        for (i, since) in s.optional_failing_since.iter().enumerate() {
            let Some(since) = since else { continue };
            let due = *since + grace;
            if due > now {
                next = Some(next.map_or(due, |n| n.min(due)));
                continue;
            }
            stale.extend_from_slice(match i {
                3 => &[Kind::Ingress][..],
                4 => &[Kind::HttpRoute, Kind::GrpcRoute, Kind::TlsRoute][..],
                5 => &[Kind::HttpRoute][..],
                6 => &[Kind::GrpcRoute][..],
                7 => &[Kind::TlsRoute][..],
                _ => &[Kind::DnsEndpoint][..],
            });
        }
        (stale, next)
    }

    /// Per kind (in [`KINDS`] order): moves whenever its objects change.
    pub fn generations(&self) -> [u64; KIND_COUNT] {
        self.lock().generations
    }
}

/// The objects as the cluster has them now (from the watches' stores, or the snapshot).
impl view::Lookup for Cluster {
    fn service(&self, id: &ServiceId) -> Option<Arc<Service>> {
        match &self.objects {
            Objects::Static(o) => o.service(id),
            Objects::Live { services, .. } => {
                services.get(&ObjectRef::new(&id.name).within(&id.namespace))
            }
        }
    }

    fn slice(&self, namespace: &str, name: &str) -> Option<Arc<EndpointSlice>> {
        match &self.objects {
            Objects::Static(o) => o.slice(namespace, name),
            Objects::Live { slices, .. } => slices.get(&ObjectRef::new(name).within(namespace)),
        }
    }

    fn host_object(&self, r: &Regarding) -> Option<HostObject> {
        fn get<K>(store: Option<&Store<K>>, id: &ServiceId) -> Option<Arc<K>>
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            store?.get(&ObjectRef::new(&id.name).within(&id.namespace))
        }
        let Objects::Live {
            ingresses,
            http_routes,
            grpc_routes,
            tls_routes,
            dns_endpoints,
            ..
        } = &self.objects
        else {
            let Objects::Static(o) = &self.objects else {
                return None;
            };
            return o.host_object(r);
        };
        let id = &r.id;
        match r.kind {
            Kind::Service => None,
            Kind::Ingress => get(ingresses.as_ref(), id).map(HostObject::Ingress),
            Kind::HttpRoute => get(http_routes.as_ref(), id).map(HostObject::HttpRoute),
            Kind::GrpcRoute => get(grpc_routes.as_ref(), id).map(HostObject::GrpcRoute),
            Kind::TlsRoute => get(tls_routes.as_ref(), id).map(HostObject::TlsRoute),
            Kind::DnsEndpoint => get(dns_endpoints.as_ref(), id).map(HostObject::DnsEndpoint),
        }
    }

    fn gateways(&self) -> Vec<Arc<Gateway>> {
        match &self.objects {
            Objects::Static(o) => o.gateways.clone(),
            Objects::Live { gateways, .. } => {
                gateways.as_ref().map(Store::state).unwrap_or_default()
            }
        }
    }

    fn objects(&self) -> ClusterObjects {
        match &self.objects {
            Objects::Static(o) => o.clone(),
            Objects::Live {
                nodes,
                services,
                slices,
                ingresses,
                gateways,
                http_routes,
                grpc_routes,
                tls_routes,
                dns_endpoints,
                ..
            } => ClusterObjects {
                nodes: nodes.state(),
                services: services.state(),
                slices: slices.state(),
                ingresses: ingresses.as_ref().map(Store::state).unwrap_or_default(),
                gateways: gateways.as_ref().map(Store::state).unwrap_or_default(),
                http_routes: http_routes.as_ref().map(Store::state).unwrap_or_default(),
                grpc_routes: grpc_routes.as_ref().map(Store::state).unwrap_or_default(),
                tls_routes: tls_routes.as_ref().map(Store::state).unwrap_or_default(),
                dns_endpoints: dns_endpoints.as_ref().map(Store::state).unwrap_or_default(),
            },
        }
    }
}

/// What every watcher of one cluster shares.
#[derive(Clone)]
struct Watch {
    cluster: String,
    state: Arc<Mutex<LinkState>>,
    changed: Arc<Notify>,
    cancel: CancellationToken,
}

/// One of a cluster's watchers, as [`fedplane_ops::kube`] reports to it.
struct Watcher {
    watch: Watch,
    index: usize,
}

impl Observer for Watcher {
    fn signal(&self, _kind: &str, signal: Signal<'_>) {
        let (w, index) = (&self.watch, self.index);
        match signal {
            Signal::Listed | Signal::Changed(_) => w.on_event(index, &signal),
            Signal::Expired => {
                info!(cluster = %w.cluster, kind = KINDS[index], "watch expired (410 Gone); listing again");
            }
            Signal::Failed(e) => w.on_error(index, e),
            Signal::Recovered => w.recovered(index),
        }
    }
}

impl Watch {
    fn spawn<K>(&self, api: Api<K>, index: usize, tasks: &mut JoinSet<()>) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone,
    {
        let watcher = Watcher {
            watch: self.clone(),
            index,
        };
        fedplane_ops::kube::spawn(api, None, watcher, &self.cancel, tasks).store
    }

    fn recovered(&self, index: usize) {
        let mut s = self.lock();
        s.failing[index] = false;
        if index >= OPTIONAL {
            if s.optional_failing_since[index].take().is_some() {
                drop(s);
                self.changed.notify_one();
            }
            info!(cluster = %self.cluster, kind = KINDS[index], "watch recovered");
            return;
        }
        if s.failing_since.is_some() && !s.failing[..OPTIONAL].iter().any(|f| *f) {
            info!(cluster = %self.cluster, "cluster reachable again");
            s.failing_since = None;
            drop(s);
            self.gauge();
            self.changed.notify_one();
        }
    }

    /// Sets the gauge while holding the lock: the three watchers of a cluster run on
    /// different threads, and a reading taken before another watcher's change must not be
    /// written after it.
    fn gauge(&self) {
        let s = self.lock();
        let connected = s.link() == Link::Connected;
        metrics::gauge!("fedplane_controller_cluster_connected", "cluster" => self.cluster.clone())
            .set(f64::from(u8::from(connected)));
        drop(s);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_event(&self, index: usize, signal: &Signal<'_>) {
        {
            let mut s = self.lock();
            let c = &mut s.changes;
            match (signal, index) {
                (Signal::Listed, 1 | 2) => c.relisted = true,
                // A relist may concern any object.
                (Signal::Listed, OPTIONAL..) => c.hosts_relisted = true,
                (Signal::Changed(meta), GATEWAYS) => {
                    c.gateways.insert((
                        view::namespace_of(meta).to_owned(),
                        meta.name.clone().unwrap_or_default(),
                    ));
                }
                (Signal::Changed(meta), OPTIONAL..) => {
                    if let Some(kind) = HOST_KINDS[index - OPTIONAL] {
                        c.hosts.insert(Regarding {
                            kind,
                            id: ServiceId {
                                namespace: view::namespace_of(meta).to_owned(),
                                name: meta.name.clone().unwrap_or_default(),
                            },
                        });
                    }
                }
                (Signal::Changed(meta), 1) => {
                    c.services.insert(ServiceId {
                        namespace: view::namespace_of(meta).to_owned(),
                        name: meta.name.clone().unwrap_or_default(),
                    });
                }
                (Signal::Changed(meta), 2) => {
                    let seen = view::SliceSeen::of(meta);
                    if let Some(id) = &seen.service {
                        c.services.insert(id.clone());
                    }
                    c.slices.push(seen);
                }
                _ => {}
            }
            // A relist makes every Service read again: the events no longer matter.
            if c.relisted {
                c.services.clear();
                c.slices.clear();
            }
            if c.hosts_relisted {
                c.hosts.clear();
                c.gateways.clear();
            }
            if matches!(signal, Signal::Listed) {
                s.listed[index] = true;
            }
            s.generations[index] += 1;
        }
        self.gauge();
        self.changed.notify_one();
    }

    fn on_error(&self, index: usize, e: &watcher::Error) {
        let mut s = self.lock();
        if index >= OPTIONAL {
            s.optional_failing_since[index].get_or_insert_with(Instant::now);
            if !s.failing[index] {
                warn!(cluster = %self.cluster, kind = KINDS[index], error = %e,
                    "watch failing (may fedplane-controller-reader list and watch {}, and is the CRD installed?); the cluster's hosts of this kind stay as last seen, its Services are not affected", OPTIONAL_RESOURCES[index - OPTIONAL]);
            }
            s.failing[index] = true;
            return;
        }
        s.failing[index] = true;
        if s.failing_since.is_none() {
            warn!(cluster = %self.cluster, kind = KINDS[index], error = %e,
                  "cluster unreachable; keeping its last records for the grace period");
            s.failing_since = Some(Instant::now());
            drop(s);
            self.gauge();
            self.changed.notify_one();
        }
    }
}
