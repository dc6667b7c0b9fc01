//! Kubernetes mode, at the edges: watches Services and the pool and legacy ConfigMaps, keeps
//! the Lease, and on every change (1) spreads the addresses in the Services' status over the
//! VRRP groups and (2) as the Lease holder, writes the addresses [`assign`] plans to the
//! Services' status and tells each Service's owner, with Events, what was assigned or refused.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::KubeSettings;
use crate::daemon::sleep_until;
use crate::ipam::{self, Family, Kind, Notice, Pools, Quarantine, Svc};
use crate::lease::{Elector, Seen, Step};
use crate::services::{self, key_of, svc_of};

/// Why Kubernetes mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No usable kubeconfig or in-cluster settings.
    #[error("Kubernetes client settings: {0}")]
    Config(String),
    /// The client could not be built.
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Watches are re-made this often, so a silent connection is noticed within a minute.
const WATCH_TIMEOUT: u32 = 60;
/// A failed status write is tried again after this long, doubling up to [`RETRY_MAX`].
const RETRY: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What /readyz and /metrics need from Kubernetes mode.
#[derive(Debug, Default)]
pub struct KubeStatus {
    /// Services listed at least once.
    pub synced: AtomicBool,
}

/// Builds a client from `--kubeconfig`, or in-cluster settings, $KUBECONFIG, ~/.kube/config.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeError::Config(e.to_string()))?,
    };
    Ok(Client::try_from(config)?)
}

/// Runs Kubernetes mode until `cancel`. `groups` holds each VRRP group's family, VRID and the
/// sender of its addresses (`None` until the Services are listed).
pub async fn run(
    settings: KubeSettings,
    client: Client,
    groups: Vec<Group>,
    status: Arc<KubeStatus>,
    cancel: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let services = spawn_watch(
        Api::<Service>::all(client.clone()),
        None,
        &changed,
        &cancel,
        &mut tasks,
    );
    let configmap = |nn: &Option<(String, String)>, tasks: &mut JoinSet<()>| {
        nn.as_ref().map(|(ns, name)| {
            spawn_watch(
                Api::<ConfigMap>::namespaced(client.clone(), ns),
                Some(name.as_str()),
                &changed,
                &cancel,
                tasks,
            )
        })
    };
    let pools_cm = configmap(&settings.pools_configmap, &mut tasks);
    let legacy_cm = configmap(&settings.legacy_configmap, &mut tasks);

    let (lead_tx, mut lead_rx) = watch::channel(None);
    let (lease_ns, lease_name) = settings.lease.clone();
    tasks.spawn(keep_lease(
        Api::<Lease>::namespaced(client.clone(), &lease_ns),
        lease_name,
        i32::try_from(settings.lease_duration.as_secs()).unwrap_or(i32::MAX),
        Elector::new(settings.node_name.clone(), settings.lease_duration),
        lead_tx,
        cancel.clone(),
    ));

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "fedplane-vipd".into(),
            instance: Some(settings.node_name.clone()),
        },
    );
    let mut a = Assigner {
        client,
        recorder,
        quarantine: Quarantine::new(settings.quarantine),
        settings,
        groups,
        told: HashMap::new(),
        pools_error: None,
        last_good: None,
        legacy_ignored: Vec::new(),
        homeless: BTreeSet::new(),
    };
    let mut retry_at: Option<Instant> = None;
    let mut backoff = RETRY;
    loop {
        let wake = [a.quarantine.next_expiry(), retry_at]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            () = cancel.cancelled() => break,
            () = changed.notified() => {}
            res = lead_rx.changed() => if res.is_err() { break },
            () = sleep_until(wake) => {}
        }
        let ready = services.1.load(Ordering::Relaxed)
            && pools_cm
                .as_ref()
                .is_none_or(|c| c.1.load(Ordering::Relaxed))
            && legacy_cm
                .as_ref()
                .is_none_or(|c| c.1.load(Ordering::Relaxed));
        if !ready {
            continue;
        }
        status.synced.store(true, Ordering::Relaxed);
        let leading = lead_rx.borrow_and_update().filter(|t| *t > Instant::now());
        let failed = a
            .pass(&services.0, pools_cm.as_ref(), legacy_cm.as_ref(), leading)
            .await;
        retry_at = failed.then(|| Instant::now() + backoff);
        backoff = if failed {
            (backoff * 2).min(RETRY_MAX)
        } else {
            RETRY
        };
    }
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}

type Watched<K> = (Store<K>, Arc<AtomicBool>);

/// A VRRP group's family, VRID, and the sender of its addresses.
pub type Group = (Family, u8, watch::Sender<Option<Vec<IpNet>>>);

/// A watcher with a reflector store; `changed` is notified on every change, and the flag is
/// set once the first list is in.
fn spawn_watch<K>(
    api: Api<K>,
    name: Option<&str>,
    changed: &Arc<Notify>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let mut config = watcher::Config::default().timeout(WATCH_TIMEOUT);
    if let Some(name) = name {
        config = config.fields(&format!("metadata.name={name}"));
    }
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let listed = Arc::new(AtomicBool::new(false));
    let (flag, changed, cancel) = (listed.clone(), changed.clone(), cancel.clone());
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                next = stream.next() => match next {
                    Some(Ok(watcher::Event::InitDone)) => {
                        flag.store(true, Ordering::Relaxed);
                        changed.notify_one();
                    }
                    Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => {
                        if std::mem::take(&mut failing) {
                            info!(%kind, "Kubernetes API answers again");
                        }
                        changed.notify_one();
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        if !std::mem::replace(&mut failing, true) {
                            warn!(%kind, error = %e, "watch failed; keeping the last state and retrying");
                        }
                    }
                    None => return,
                },
            }
        }
    });
    (reader, listed)
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Keeps trying to hold the Lease; publishes until when we lead (`None`: we do not).
async fn keep_lease(
    api: Api<Lease>,
    name: String,
    secs: i32,
    mut elector: Elector,
    lead: watch::Sender<Option<Instant>>,
    cancel: CancellationToken,
) {
    let mut failing = false;
    loop {
        let started = Instant::now();
        let mut next = started + elector.retry_period();
        match api.get_opt(&name).await {
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    warn!(lease = %name, error = %e, "cannot read the Lease");
                }
            }
            Ok(lease) => {
                failing = false;
                let seen = lease.as_ref().map(|l| Seen {
                    holder: l
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.clone())
                        .unwrap_or_default(),
                    version: l.resource_version().unwrap_or_default(),
                });
                // A standby looks again every retry period (not only at the expiry it
                // expects), so a released Lease is taken within one period.
                let written = match elector.decide(seen, started) {
                    Step::WaitUntil(_) => None,
                    Step::Create => {
                        let l = Lease {
                            metadata: ObjectMeta {
                                name: Some(name.clone()),
                                ..ObjectMeta::default()
                            },
                            spec: Some(LeaseSpec {
                                holder_identity: Some(elector.me().to_owned()),
                                lease_duration_seconds: Some(secs),
                                acquire_time: Some(micro_now()),
                                renew_time: Some(micro_now()),
                                lease_transitions: Some(0),
                                ..LeaseSpec::default()
                            }),
                        };
                        Some(api.create(&PostParams::default(), &l).await.map(drop))
                    }
                    Step::Write => {
                        let mut l = lease.unwrap_or_default();
                        let spec = l.spec.get_or_insert_with(LeaseSpec::default);
                        if spec.holder_identity.as_deref() != Some(elector.me()) {
                            spec.holder_identity = Some(elector.me().to_owned());
                            spec.acquire_time = Some(micro_now());
                            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                        }
                        spec.renew_time = Some(micro_now());
                        spec.lease_duration_seconds = Some(secs);
                        Some(
                            api.replace(&name, &PostParams::default(), &l)
                                .await
                                .map(drop),
                        )
                    }
                };
                match written {
                    Some(Ok(())) => elector.written(started),
                    Some(Err(e)) => {
                        debug!(lease = %name, error = %e, "Lease not written");
                        elector.failed();
                    }
                    None => {}
                }
            }
        }
        let until = elector.leading(Instant::now());
        // Renewals move the deadline silently; only gaining or losing the Lease wakes the
        // assigner.
        lead.send_if_modified(|old| {
            let flipped = old.is_some() != until.is_some();
            *old = until;
            if flipped {
                if until.is_some() {
                    info!(lease = %name, "holding the Lease: assigning addresses");
                } else {
                    info!(lease = %name, "not holding the Lease: standing by");
                }
            }
            flipped
        });
        if let Some(until) = until {
            next = next.min(until);
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(next.into()) => {}
        }
    }
    if elector.leading(Instant::now()).is_some() {
        if tokio::time::timeout(Duration::from_secs(3), release(&api, &name, elector.me()))
            .await
            .is_err()
        {
            warn!(lease = %name, "releasing the Lease timed out");
        }
        elector.released();
        lead.send_replace(None);
    }
}

/// Gives the Lease up on shutdown, so a standby takes over at once.
async fn release(api: &Api<Lease>, name: &str, me: &str) {
    let Ok(Some(mut l)) = api.get_opt(name).await else {
        return;
    };
    let Some(spec) = l.spec.as_mut() else { return };
    if spec.holder_identity.as_deref() != Some(me) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(micro_now());
    match api.replace(name, &PostParams::default(), &l).await {
        Ok(_) => info!(lease = %name, "Lease released"),
        Err(e) => warn!(lease = %name, error = %e, "cannot release the Lease"),
    }
}

/// The reconcile state.
struct Assigner {
    client: Client,
    recorder: Recorder,
    settings: KubeSettings,
    groups: Vec<Group>,
    quarantine: Quarantine,
    /// Per Service, the notices already published (each is published once).
    told: HashMap<String, BTreeSet<Notice>>,
    pools_error: Option<String>,
    /// The pool ConfigMap's last valid pools.
    last_good: Option<Pools>,
    legacy_ignored: Vec<String>,
    homeless: BTreeSet<IpAddr>,
}

impl Assigner {
    /// One pass. Returns whether something failed and should be tried again.
    async fn pass(
        &mut self,
        services: &Store<Service>,
        pools_cm: Option<&Watched<ConfigMap>>,
        legacy_cm: Option<&Watched<ConfigMap>>,
        leading: Option<Instant>,
    ) -> bool {
        let now = Instant::now();
        let objects = services.state();
        let svcs: Vec<Svc> = objects
            .iter()
            .map(|s| svc_of(s, &self.settings.class))
            .collect();
        // The first pass releases nothing: it only learns what is in use.
        self.quarantine.observe(&ipam::in_use(&svcs), now);
        metrics::gauge!("fedplane_vipd_quarantined_addresses").set(self.quarantine.len() as f64);
        self.announce(&svcs);

        let pools = self.pools(pools_cm);
        let legacy = self.legacy(legacy_cm);
        let Some(until) = leading else {
            metrics::gauge!("fedplane_vipd_leader").set(0.0);
            return false;
        };
        metrics::gauge!("fedplane_vipd_leader").set(1.0);
        let plan = ipam::assign(&pools, &svcs, &legacy, &self.quarantine, now);
        let by_key: HashMap<String, &Arc<Service>> =
            objects.iter().map(|s| (key_of(s), s)).collect();
        let mut failed = false;
        for s in &svcs {
            let Some(want) = plan.addresses.get(&s.key) else {
                continue;
            };
            if *want == s.current {
                continue;
            }
            if Instant::now() >= until {
                // Our Lease may have passed to someone else: write nothing more.
                return true;
            }
            let obj = by_key[&s.key];
            failed |= !self.write(obj, s, want).await;
        }
        self.tell(&plan.notices, &by_key).await;
        failed
    }

    /// Spreads the addresses in our Services' status over the groups.
    fn announce(&mut self, svcs: &[Svc]) {
        let addresses: BTreeSet<IpAddr> = svcs
            .iter()
            .filter(|s| s.kind == Kind::Ours)
            .flat_map(|s| s.current.iter().copied())
            .collect();
        metrics::gauge!("fedplane_vipd_service_addresses").set(addresses.len() as f64);
        let ids: Vec<(Family, u8)> = self.groups.iter().map(|g| (g.0, g.1)).collect();
        let (per_group, homeless) = services::spread(&addresses, &ids);
        for ((_, _, tx), ips) in self.groups.iter().zip(per_group) {
            let nets = Some(ips.into_iter().map(IpNet::from).collect::<Vec<_>>());
            tx.send_if_modified(|old| {
                let changed = *old != nets;
                if changed {
                    old.clone_from(&nets);
                }
                changed
            });
        }
        if homeless != self.homeless && !self.groups.is_empty() {
            for ip in homeless.difference(&self.homeless) {
                warn!(%ip, "no VRRP group of this family on this node: not announced here");
            }
            self.homeless = homeless;
        }
    }

    /// The ConfigMap's pools; its last valid ones while it is invalid; the config file's while
    /// it does not exist.
    fn pools(&mut self, cm: Option<&Watched<ConfigMap>>) -> Pools {
        let Some((store, _)) = cm else {
            return self.settings.pools.clone();
        };
        let Some(object) = store.state().first().cloned() else {
            if self.last_good.take().is_some() {
                info!("pool ConfigMap gone: using the config file's pools");
            }
            return self.settings.pools.clone();
        };
        let text = object
            .data
            .as_ref()
            .and_then(|d| d.get("config.yaml").cloned());
        let parsed = match text {
            None => Err("no config.yaml in the pool ConfigMap".to_owned()),
            Some(t) => Pools::from_yaml(&t).map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(p) => {
                if self.pools_error.take().is_some() {
                    info!("pool ConfigMap valid again");
                }
                if self.last_good.as_ref() != Some(&p) {
                    let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
                    info!(pools = ?names, "pools from the ConfigMap in use");
                }
                self.last_good = Some(p.clone());
                p
            }
            Err(e) => {
                if self.pools_error.as_ref() != Some(&e) {
                    warn!(error = %e, "pool ConfigMap ignored; using the last valid pools");
                    self.pools_error = Some(e);
                }
                self.last_good
                    .clone()
                    .unwrap_or_else(|| self.settings.pools.clone())
            }
        }
    }

    fn legacy(&mut self, cm: Option<&Watched<ConfigMap>>) -> BTreeMap<IpAddr, String> {
        let Some((store, _)) = cm else {
            return BTreeMap::new();
        };
        let data = store
            .state()
            .first()
            .and_then(|c| c.data.clone())
            .unwrap_or_default();
        let (map, ignored) = services::legacy_map(&data);
        if ignored != self.legacy_ignored {
            for why in &ignored {
                warn!(entry = %why, "legacy keepalived-vip ConfigMap entry ignored");
            }
            self.legacy_ignored = ignored;
        }
        map
    }

    /// Writes `want` to the Service's status; false if that failed.
    async fn write(&mut self, obj: &Service, s: &Svc, want: &[IpAddr]) -> bool {
        let mut patch = services::status_patch(want);
        // Only over the version we planned from: a Service changed meanwhile is planned again.
        patch["metadata"] = serde_json::json!({"resourceVersion": obj.resource_version()});
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let res = Api::<Service>::namespaced(self.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        let list = want
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match res {
            Ok(_) => {
                metrics::counter!("fedplane_vipd_status_writes_total", "result" => "ok")
                    .increment(1);
                let (reason, note) = if want.is_empty() {
                    (
                        "AddressReleased",
                        "no LoadBalancer addresses any more".to_owned(),
                    )
                } else {
                    ("AddressAssigned", format!("assigned {list}"))
                };
                info!(service = %s.key, addresses = %list, "status written");
                self.event(obj, EventType::Normal, reason, note).await;
                true
            }
            Err(e) => {
                metrics::counter!("fedplane_vipd_status_writes_total", "result" => "error")
                    .increment(1);
                warn!(service = %s.key, addresses = %list, error = %e, "status not written; trying again");
                false
            }
        }
    }

    /// Publishes each notice once, as a Warning Event on its Service.
    async fn tell(&mut self, notices: &[Notice], by_key: &HashMap<String, &Arc<Service>>) {
        let mut now: HashMap<String, BTreeSet<Notice>> = HashMap::new();
        for n in notices {
            now.entry(n.key.clone()).or_default().insert(n.clone());
        }
        for (key, set) in &now {
            let told = self.told.get(key);
            for n in set.iter().filter(|n| told.is_none_or(|t| !t.contains(*n))) {
                metrics::counter!("fedplane_vipd_notices_total", "reason" => n.reason.name())
                    .increment(1);
                warn!(service = %key, reason = n.reason.name(), message = %n.message, "address not assigned");
                if let Some(obj) = by_key.get(key) {
                    self.event(obj, EventType::Warning, n.reason.name(), n.message.clone())
                        .await;
                }
            }
        }
        self.told = now;
    }

    async fn event(&self, obj: &Service, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "AssignAddress".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            debug!(error = %e, "Event not recorded");
        }
    }
}
