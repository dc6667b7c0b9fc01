//! Kubernetes mode, wired: the client, then one task that watches Services and the pool and
//! legacy ConfigMaps (with [`fedplane_ops::kube`]), keeps the Lease ([`crate::leader`]) and runs
//! a pass of the [`crate::assigner`] on every change, retrying failed writes with backoff; and
//! beside it [`speak`]: the fedplane-vipd Pods → the VRRP allowlist, our sources on our Pod,
//! refused speakers → Events (the rules in [`crate::peers`]).
//!
//! # Its own thread
//!
//! The daemon's VRRP groups run on one current-thread tokio runtime. A pass over 10,000
//! Services (decoding, planning over an exhausted pool, one status write each) would hold that
//! thread for as long as it takes and delay adverts past the backups' down timers. So Kubernetes
//! mode runs on its own OS thread with its own current-thread runtime ([`KubeThread`]): the
//! client, the watches, the Lease loop and the passes all live there, and the only links to
//! the groups are channels (the groups' addresses, [`crate::speakers`]). The pass is not split
//! or yielded: on its own thread its length delays only Kubernetes work (the Lease is renewed
//! by a task of the same runtime, so a pass longer than the renew deadline costs the Lease,
//! which is why a pass stops writing once the deadline is past). The kernel shares the 2 cores
//! between the two threads; `cargo bench -p fedplane-vipd --bench jitter` measures the adverts'
//! gaps during such passes (benches/README.md).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fedplane_ops::kube::{self as watch_kube, Observer, Signal};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::assigner::{Assigner, GroupSink, LocalRule};
use crate::config::{KubeSettings, ObjectName};
use crate::daemon::sleep_until;
use crate::ipam::Family;
use crate::leader::{keep_lease, process_identity};
use crate::lease::Elector;
use crate::services::GroupId;
use crate::speakers::GroupKey;
use crate::speakers::KubeEnds;

mod allowlist;
pub use allowlist::{SpeakerSettings, speak};

/// Why Kubernetes mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No usable kubeconfig or in-cluster settings.
    #[error("Kubernetes client settings: {0}")]
    Config(String),
    /// The client could not be built.
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// Kubernetes mode's thread or runtime could not start.
    #[error("Kubernetes mode's thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The longest a response may stay silent: a watch's `timeoutSeconds` and some slack.
const READ_TIMEOUT: Duration = Duration::from_secs(fedplane_ops::kube::WATCH_TIMEOUT as u64 + 15);

/// A failed status write is tried again after this long, doubling up to [`RETRY_MAX`].
const RETRY: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// In L2 mode, passes wait this long for the EndpointSlices to be listed, then go on without.
const SLICES_GRACE: Duration = Duration::from_secs(10);

pub use crate::probes::KubeStatus;

/// Where Kubernetes mode hands BGP mode (`--bgp`) its configuration and routes.
#[derive(Debug)]
pub struct BgpSink {
    /// BIRD's configuration (empty: no BGP).
    pub config: watch::Sender<String>,
    /// The routes to announce.
    pub routes: watch::Sender<std::collections::BTreeSet<ipnet::IpNet>>,
}

/// Builds a client from `--kubeconfig`, or in-cluster settings, $KUBECONFIG, ~/.kube/config.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let mut config = match kubeconfig {
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
    // No request waits forever on a server that accepts and never answers: a watch gets an
    // event or ends within its timeoutSeconds, so a read silent for longer is a dead server.
    config.read_timeout = Some(READ_TIMEOUT);
    Ok(Client::try_from(config)?)
}

/// Kubernetes mode on its own OS thread and current-thread runtime (see the module docs):
/// [`start`](Self::start) builds the client there, [`run`](Self::run) hands it the groups,
/// [`KubeJoin::join`] waits until it has stopped (after `cancel`, the Lease released).
#[derive(Debug)]
pub struct KubeThread {
    groups: oneshot::Sender<(Vec<GroupSink>, Option<BgpSink>)>,
    done: oneshot::Receiver<()>,
}

impl KubeThread {
    /// Starts the thread and builds the client on it; fails as [`client`] does. Nothing is
    /// watched until [`run`](Self::run).
    pub async fn start(
        settings: KubeSettings,
        ends: KubeEnds,
        status: Arc<KubeStatus>,
        cancel: CancellationToken,
    ) -> Result<Self, KubeError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (groups_tx, groups_rx) = oneshot::channel::<(Vec<GroupSink>, Option<BgpSink>)>();
        let (done_tx, done_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("vipd-kube".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let client = match client(settings.kubeconfig.as_deref()).await {
                        Ok(c) => {
                            let _ = ready_tx.send(Ok(()));
                            c
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    // The daemon gave up before starting us: nothing to do.
                    let Ok((groups, bgp)) = groups_rx.await else {
                        return;
                    };
                    run(settings, client, groups, bgp, ends, status, cancel).await;
                });
                let _ = done_tx.send(());
            })?;
        ready_rx
            .await
            .map_err(|_| KubeError::Config("Kubernetes mode's thread stopped".into()))??;
        Ok(Self {
            groups: groups_tx,
            done: done_rx,
        })
    }

    /// Starts Kubernetes mode, feeding this node's VRRP `groups` their addresses, and BGP
    /// mode its configuration and routes when `bgp` is given.
    pub fn run(self, groups: Vec<GroupSink>, bgp: Option<BgpSink>) -> KubeJoin {
        let _ = self.groups.send((groups, bgp));
        KubeJoin(self.done)
    }
}

/// Waits for Kubernetes mode's thread to stop.
#[derive(Debug)]
pub struct KubeJoin(oneshot::Receiver<()>);

impl KubeJoin {
    /// Returns once the thread's work is over (after the cancel: the Lease released).
    pub async fn join(self) {
        let _ = self.0.await;
    }

    /// Returns when the thread ends (or panics) before being asked to: the daemon cannot go
    /// on without it. Not to be awaited again once it returned.
    pub async fn ended(&mut self) {
        let _ = (&mut self.0).await;
    }
}

/// Runs Kubernetes mode until `cancel`, feeding this node's VRRP `groups` their addresses and
/// `speakers` who may advertise.
pub async fn run(
    settings: KubeSettings,
    client: Client,
    groups: Vec<GroupSink>,
    bgp: Option<BgpSink>,
    speakers: KubeEnds,
    status: Arc<KubeStatus>,
    cancel: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let wake = Wake(changed.clone());
    let services = watch_kube::spawn(
        Api::<Service>::all(client.clone()),
        None,
        wake.clone(),
        &cancel,
        &mut tasks,
    );
    let configmap = |cm: &Option<ObjectName>, tasks: &mut JoinSet<()>| {
        cm.as_ref().map(|cm| {
            watch_kube::spawn(
                Api::<ConfigMap>::namespaced(client.clone(), &cm.namespace),
                Some(cm.name.as_str()),
                wake.clone(),
                &cancel,
                tasks,
            )
        })
    };
    let pools_cm = configmap(&settings.pools_configmap, &mut tasks);
    let legacy_cm = configmap(&settings.legacy_configmap, &mut tasks);
    // Which nodes run ready endpoints: `Local` Services' addresses follow them (L2 and BGP).
    // Their own wake-up: a change of some slice (pods come and go everywhere) costs a pass only
    // when it changes which nodes run ready endpoints.
    let slices_changed = Arc::new(Notify::new());
    let slices = watch_kube::spawn(
        Api::<EndpointSlice>::all(client.clone()),
        None,
        Wake(slices_changed.clone()),
        &cancel,
        &mut tasks,
    );
    let mut ready_nodes = std::collections::BTreeMap::new();
    let mut slices_were_listed = false;
    // BGP mode: our own Node (labels, cordon, Ready).
    let own_node = bgp.as_ref().map(|_| {
        watch_kube::spawn(
            Api::<Node>::all(client.clone()),
            Some(settings.node_name.as_str()),
            wake.clone(),
            &cancel,
            &mut tasks,
        )
    });
    let node_name = settings.node_name.clone();
    // Who each group takes for its master, and which node each VRRP source is.
    let mut masters = speakers.masters.clone();
    let own_sources = speakers.own.clone();
    let (nodes_tx, mut speaker_nodes) = watch::channel(std::collections::BTreeMap::new());
    let started = Instant::now();
    let mut slices_warned = false;

    let (lead_tx, mut lead_rx) = watch::channel(None);
    let lease = settings.lease.clone();
    let me = process_identity(&settings.node_name);
    info!(lease = %lease, identity = %me, "Lease holder identity");
    tasks.spawn(keep_lease(
        Api::<Lease>::namespaced(client.clone(), &lease.namespace),
        lease.name,
        i32::try_from(settings.lease_duration.as_secs()).unwrap_or(i32::MAX),
        Elector::new(me, settings.lease_duration),
        lead_tx,
        cancel.clone(),
    ));

    tasks.spawn(speak(
        client.clone(),
        SpeakerSettings::from_env(&settings.lease.namespace, &settings.node_name),
        speakers,
        nodes_tx,
        groups.len(),
        cancel.clone(),
    ));

    let mut a = Assigner::new(settings, client, groups);
    let mut retry_at: Option<Instant> = None;
    let mut backoff = RETRY;
    loop {
        // The lead deadline too: a pass after it sees we no longer lead (so the next takeover
        // lists again) even when the Lease loop, stuck, published nothing.
        let lead_until = lead_rx.borrow().filter(|t| *t > Instant::now());
        // L2 mode still waiting for the EndpointSlices: a pass is due when the grace ends.
        let grace_end = (bgp.is_none() && !slices.listed())
            .then_some(started + SLICES_GRACE)
            .filter(|t| *t > Instant::now());
        let wake = [a.next_expiry(), retry_at, lead_until, grace_end]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(res) = tasks.join_next() => {
                // A watch, the Lease loop or the speakers' task ended on its own (a panic):
                // Kubernetes mode cannot go on half-working.
                error!(error = ?res.err(), "a task of Kubernetes mode ended; stopping it");
                break;
            }
            () = changed.notified() => {}
            () = slices_changed.notified() => {
                let now = crate::bgp::views::ready_nodes(slices.store.state().iter().map(|s| &**s));
                if now == ready_nodes && slices.listed() == slices_were_listed {
                    continue;
                }
                ready_nodes = now;
            }
            Ok(()) = masters.changed() => {}
            Ok(()) = speaker_nodes.changed() => {}
            // Every change is a gain or a loss: a takeover lists again, even if a loss and
            // a gain came between two passes.
            res = lead_rx.changed() => if res.is_err() { break } else { a.lease_changed() },
            () = sleep_until(wake) => {}
        }
        // Without the EndpointSlices (not allowed to list them?), L2 mode goes on after a
        // grace, spreading `Local` Services' addresses like the others; BGP mode waits.
        let slices_late = bgp.is_none() && started.elapsed() >= SLICES_GRACE;
        let ready = services.listed()
            && pools_cm.as_ref().is_none_or(|c| c.listed())
            && legacy_cm.as_ref().is_none_or(|c| c.listed())
            && (slices.listed() || slices_late)
            && own_node.as_ref().is_none_or(|n| n.listed());
        if !ready {
            continue;
        }
        if !slices.listed() && !slices_warned {
            warn!(
                "EndpointSlices not listed (can vipd list and watch discovery.k8s.io endpointslices?): addresses of externalTrafficPolicy: Local Services are held without regard to their endpoints until they are"
            );
            slices_warned = true;
        }
        if slices.listed() && !slices_were_listed {
            if slices_warned {
                info!(
                    "EndpointSlices listed: addresses of externalTrafficPolicy: Local Services follow their endpoints now"
                );
            }
            ready_nodes = crate::bgp::views::ready_nodes(slices.store.state().iter().map(|s| &**s));
        }
        slices_were_listed = slices.listed();
        status.synced.store(true, Ordering::Relaxed);
        let leading = lead_rx.borrow_and_update().filter(|t| *t > Instant::now());
        let local = slices.listed().then(|| LocalRule {
            node: &node_name,
            ready: &ready_nodes,
            masters: master_nodes(
                &masters.borrow_and_update(),
                &own_sources.borrow(),
                &speaker_nodes.borrow_and_update(),
                &node_name,
            ),
        });
        let failed = a
            .pass(
                &services.store,
                pools_cm.as_ref(),
                legacy_cm.as_ref(),
                local,
                leading,
            )
            .await;
        if let (Some(sink), Some(nodes)) = (&bgp, &own_node) {
            let node = nodes
                .store
                .state()
                .into_iter()
                .find(|n| n.metadata.name.as_deref() == Some(node_name.as_str()));
            let services = services.store.state();
            publish_bgp(
                sink,
                a.pools_in_use(),
                node.as_deref(),
                &ready_nodes,
                services.iter().map(|s| &**s),
            );
        }
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

/// The node of each group's master: our own sources are this node, the others' are looked up
/// in the speakers' Pods (unknown sources are left out).
fn master_nodes(
    masters: &std::collections::BTreeMap<GroupKey, std::net::IpAddr>,
    own: &std::collections::BTreeMap<GroupKey, std::net::IpAddr>,
    speakers: &std::collections::BTreeMap<std::net::IpAddr, String>,
    node_name: &str,
) -> std::collections::BTreeMap<GroupId, String> {
    masters
        .iter()
        .filter_map(|((_, vrid, v6), ip)| {
            let node = if own.values().any(|o| o == ip) {
                node_name.to_owned()
            } else {
                speakers.get(ip)?.clone()
            };
            let family = if *v6 { Family::V6 } else { Family::V4 };
            Some((
                GroupId {
                    family,
                    vrid: *vrid,
                },
                node,
            ))
        })
        .collect()
}

/// Hands BGP mode this node's configuration and routes (only when they change).
fn publish_bgp<'a>(
    sink: &BgpSink,
    pools: &crate::ipam::Pools,
    node: Option<&Node>,
    ready: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    services: impl IntoIterator<Item = &'a Service>,
) {
    let mut passwords = std::collections::BTreeMap::new();
    for p in pools.bgp().into_iter().flat_map(|b| &b.peers) {
        let Some(path) = &p.password_file else {
            continue;
        };
        match std::fs::read_to_string(path) {
            Ok(pw) => {
                let pw = pw.trim_end_matches(['\n', '\r']).to_owned();
                if crate::bgp::bird::quotable(&pw) && !pw.is_empty() && pw.len() <= 80 {
                    passwords.insert(p.name.clone(), pw);
                } else {
                    warn!(peer = %p.name, "bgp.peers[].password_file: 1-80 characters without quotes, backslashes or line breaks; the session has no password");
                }
            }
            Err(e) => {
                warn!(peer = %p.name, path = %path.display(), error = %e, "cannot read the peer's password file")
            }
        }
    }
    let d = crate::bgp::publish::desired(pools, node, ready, services, &passwords, false);
    if let Some(problem) = &d.problem {
        warn!(problem, "BGP: not configured");
    }
    let mut reasons: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in d.decision.withdrawn.values() {
        *reasons.entry(r.as_str()).or_default() += 1;
    }
    for r in crate::bgp::decide::Withdrawn::ALL {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("fedplane_vipd_bgp_withdrawn", "reason" => r.as_str())
            .set(reasons.get(r.as_str()).copied().unwrap_or(0) as f64);
    }
    sink.config.send_if_modified(|c| {
        let changed = *c != d.config;
        if changed {
            c.clone_from(&d.config);
        }
        changed
    });
    sink.routes.send_if_modified(|r| {
        let changed = *r != d.routes;
        if changed {
            r.clone_from(&d.routes);
        }
        changed
    });
}

/// Wakes the assigner on every change of a watched kind, and logs a watch's failures once.
#[derive(Debug, Clone)]
struct Wake(Arc<Notify>);

impl Observer for Wake {
    fn signal(&self, kind: &str, signal: Signal<'_>) {
        match signal {
            Signal::Listed | Signal::Changed(_) => self.0.notify_one(),
            Signal::Expired => info!(%kind, "watch expired (410 Gone); listing again"),
            Signal::Failed(e) => {
                warn!(%kind, error = %e, "watch failed; keeping the last state and retrying")
            }
            Signal::Recovered => info!(%kind, "Kubernetes API answers again"),
        }
    }
}
