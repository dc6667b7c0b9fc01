//! Where each member cluster's objects come from: a live API server (watches of
//! [`fedplane_ops::kube`]: Nodes, Services, EndpointSlices, and Ingresses with `--source
//! ingress`) or a snapshot file. Each cluster tracks its
//! [`Link`] and, per kind, a generation that moves on every change of that kind, and wakes
//! the reconcile loop.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use fedplane_ops::kube::{Observer, Signal};
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

use crate::reach::Link;
use crate::view::{ClusterObjects, Regarding, ViewSettings};

const KINDS: [&str; 4] = ["Node", "Service", "EndpointSlice", "Ingress"];
/// The Ingress watch's index in [`KINDS`]. It does not decide whether the cluster is
/// reachable: a failing Ingress watch (no permission on a member, say) must not withdraw the
/// cluster's Services; its hosts stay as last seen.
const INGRESS: usize = 3;
/// How long a cluster waits for its Ingresses to be listed before it counts as listed
/// without them (so a member that does not let us list Ingresses costs this once, not its
/// Services' records).
const INGRESS_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Default)]
struct LinkState {
    /// Per watcher: listed at least once (a kind not watched counts as listed).
    listed: [bool; 4],
    /// Per watcher: its last event was an error.
    failing: [bool; 4],
    /// When the first of the current failures began.
    failing_since: Option<Instant>,
    /// When the watches started (live clusters).
    started: Option<Instant>,
    /// Per watcher: moves on every change of its objects.
    generations: [u64; 4],
}

impl LinkState {
    fn link(&self) -> Link {
        let ingress_awaited = !self.listed[INGRESS]
            && self
                .started
                .is_some_and(|t| t.elapsed() < INGRESS_LIST_WAIT);
        if !self.listed[..INGRESS].iter().all(|l| *l) || ingress_awaited {
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
            listed: [true; 4],
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
        let state = Arc::new(Mutex::new(LinkState {
            listed: [false, false, false, !view.sources.ingress],
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
        let ingresses = view.sources.ingress.then(|| {
            // The end of the wait for the Ingresses' list must wake the loop.
            let (w2, cancel) = (w.clone(), cancel.clone());
            tasks.spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(INGRESS_LIST_WAIT) => {
                        if !w2.lock().listed[INGRESS] {
                            tracing::error!(cluster = %w2.cluster, "Ingresses not listed after {INGRESS_LIST_WAIT:?} (may fedplane-controller-reader list and watch networking.k8s.io ingresses there?): the cluster's Services are published without its Ingress hosts");
                            w2.changed.notify_one();
                        }
                    }
                    () = cancel.cancelled() => {}
                }
            });
            w.spawn::<Ingress>(Api::all(client.clone()), INGRESS, tasks)
        });
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
                recorder,
            },
        }
    }

    /// Records a Warning Event on a Service or Ingress of a live cluster (in the background: a
    /// cluster that cannot take it costs a debug line, nothing else).
    pub fn warn(&self, regarding: &Regarding, reason: &str, note: &str) {
        let Objects::Live {
            services,
            ingresses,
            recorder,
            ..
        } = &self.objects
        else {
            return;
        };
        let reference = match regarding {
            Regarding::Service(id) => services
                .get(&ObjectRef::new(&id.name).within(&id.namespace))
                .map(|o| o.object_ref(&())),
            Regarding::Ingress(id) => ingresses.as_ref().and_then(|s| {
                s.get(&ObjectRef::new(&id.name).within(&id.namespace))
                    .map(|o| o.object_ref(&()))
            }),
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

    /// Per kind (Nodes, Services, EndpointSlices, Ingresses): moves whenever its objects
    /// change.
    pub fn generations(&self) -> [u64; 4] {
        self.lock().generations
    }

    /// The objects now (cheap: shared references).
    pub fn objects(&self) -> ClusterObjects {
        match &self.objects {
            Objects::Static(o) => o.clone(),
            Objects::Live {
                nodes,
                services,
                slices,
                ingresses,
                ..
            } => ClusterObjects {
                nodes: nodes.state(),
                services: services.state(),
                slices: slices.state(),
                ingresses: ingresses.as_ref().map(Store::state).unwrap_or_default(),
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

/// One of a cluster's three watchers, as [`fedplane_ops::kube`] reports to it.
struct Watcher {
    watch: Watch,
    index: usize,
}

impl Observer for Watcher {
    fn signal(&self, _kind: &str, signal: Signal<'_>) {
        let (w, index) = (&self.watch, self.index);
        match signal {
            Signal::Listed | Signal::Changed => w.on_event(index, &signal),
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
        if index == INGRESS {
            info!(cluster = %self.cluster, "Ingress watch recovered");
            return;
        }
        if s.failing_since.is_some() && !s.failing[..INGRESS].iter().any(|f| *f) {
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
        if index == INGRESS {
            if !s.failing[INGRESS] {
                warn!(cluster = %self.cluster, error = %e,
                    "Ingress watch failing (may fedplane-controller-reader list and watch networking.k8s.io ingresses?); the cluster's Ingress hosts stay as last seen, its Services are not affected");
            }
            s.failing[INGRESS] = true;
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
