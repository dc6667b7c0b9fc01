//! One Kubernetes watch, as fedplane-vipd and fedplane-controller both run it: a kube watcher
//! (re-made every minute, with kube's default backoff) feeding a reflector store, a flag set once
//! the first list is in, a 410 Gone told apart from a failure (the watcher lists again), and
//! while failing, a one-item list every second to tell when the API server answers again. What
//! the caller logs and counts, it does in its [`Observer`].

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::kube::api::ListParams;
use ::kube::runtime::reflector::{self, Store};
use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::{WatchStreamExt, watcher as watch};
use ::kube::{Api, Resource};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Watches are re-made this often (the API server's `timeoutSeconds`), so a connection that
/// went silent without closing is noticed within a minute, not the default five.
pub const WATCH_TIMEOUT: u32 = 60;
/// While a watch fails, how often a one-item list checks whether the API server answers.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// What happened to a watch, as its [`Observer`] hears it.
#[derive(Debug)]
pub enum Signal<'a> {
    /// The (re)list is complete: the store holds every object.
    Listed,
    /// An object was added, changed or deleted: its metadata (as last seen, for a deletion).
    Changed(&'a ObjectMeta),
    /// The watch fell behind the API server's history (410 Gone): the watcher lists again.
    /// Not a connection problem.
    Expired,
    /// The watch failed (the first error since it last worked); the store keeps the last
    /// state and the watcher retries.
    Failed(&'a watcher::Error),
    /// The first event, or a successful probe, after a failure.
    Recovered,
}

/// Hears what happens to one watch (logging, metrics, waking whoever reads the store).
pub trait Observer: Send + Sync + 'static {
    /// `kind` is the watched kind (`Service`, `ConfigMap`, ...).
    fn signal(&self, kind: &str, signal: Signal<'_>);
}

/// A watched kind: its reflector store and whether it has been listed once.
#[derive(Clone)]
pub struct Watched<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// The objects, as last seen.
    pub store: Store<K>,
    listed: Arc<AtomicBool>,
}

impl<K: Resource + 'static> Debug for Watched<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("listed", &self.listed())
            .finish_non_exhaustive()
    }
}

impl<K: Resource + 'static> Watched<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// Whether the first list is in.
    pub fn listed(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }
}

/// Starts watching `api` on `tasks` until `cancel` (only the object named `name`, if given);
/// `observer` hears every [`Signal`].
pub fn spawn<K, O>(
    api: Api<K>,
    name: Option<&str>,
    observer: O,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
    O: Observer,
{
    let (reader, writer) = reflector::store();
    let mut config = watcher::Config::default().timeout(WATCH_TIMEOUT);
    // The probe asks for what the watch asks for: a Role that grants a single object by
    // `resourceNames` allows a list only with its name as the field selector.
    let mut probe_list = ListParams::default().limit(1);
    if let Some(name) = name {
        let selector = format!("metadata.name={name}");
        config = config.fields(&selector);
        probe_list = probe_list.fields(&selector);
    }
    let stream = reflector::reflector(writer, watch(api.clone(), config).default_backoff());
    let listed = Arc::new(AtomicBool::new(false));
    let flag = listed.clone();
    let cancel = cancel.clone();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        // Ticks missed while healthy (or during a slow probe) are not made up for in a burst.
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The probe runs beside the stream and the cancel, never instead of them.
        let mut probing: Option<std::pin::Pin<Box<dyn Future<Output = bool> + Send>>> = None;
        let mut failing = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                next = stream.next() => match next {
                    Some(Ok(event)) => {
                        let signal = match &event {
                            Event::Init | Event::InitApply(_) => continue,
                            Event::InitDone => {
                                flag.store(true, Ordering::Relaxed);
                                Signal::Listed
                            }
                            Event::Apply(o) | Event::Delete(o) => Signal::Changed(o.meta()),
                        };
                        if std::mem::take(&mut failing) {
                            probing = None;
                            observer.signal(&kind, Signal::Recovered);
                        }
                        observer.signal(&kind, signal);
                    }
                    Some(Err(watcher::Error::WatchError(status))) if status.code == 410 => {
                        observer.signal(&kind, Signal::Expired);
                    }
                    Some(Err(e)) => {
                        if !std::mem::replace(&mut failing, true) {
                            probe.reset_immediately();
                            observer.signal(&kind, Signal::Failed(&e));
                        }
                    }
                    None => return,
                },
                // A watch that resumes after an error emits no event, so while failing a
                // cheap list tells when the API server answers again.
                _ = probe.tick(), if failing && probing.is_none() => {
                    let (api, params) = (api.clone(), probe_list.clone());
                    probing = Some(Box::pin(async move { api.list_metadata(&params).await.is_ok() }));
                }
                Some(ok) = async { Some(probing.as_mut()?.await) }, if probing.is_some() => {
                    probing = None;
                    if ok && std::mem::take(&mut failing) {
                        observer.signal(&kind, Signal::Recovered);
                    }
                }
            }
        }
    });
    Watched {
        store: reader,
        listed,
    }
}
