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
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::assigner::{Assigner, GroupSink};
use crate::config::{KubeSettings, ObjectName};
use crate::daemon::sleep_until;
use crate::leader::{keep_lease, process_identity};
use crate::lease::Elector;
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

pub use crate::probes::KubeStatus;

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
    groups: oneshot::Sender<Vec<GroupSink>>,
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
        let (groups_tx, groups_rx) = oneshot::channel::<Vec<GroupSink>>();
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
                    let Ok(groups) = groups_rx.await else { return };
                    run(settings, client, groups, ends, status, cancel).await;
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

    /// Starts Kubernetes mode, feeding this node's VRRP `groups` their addresses.
    pub fn run(self, groups: Vec<GroupSink>) -> KubeJoin {
        let _ = self.groups.send(groups);
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
        let wake = [a.next_expiry(), retry_at, lead_until]
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
            // Every change is a gain or a loss: a takeover lists again, even if a loss and
            // a gain came between two passes.
            res = lead_rx.changed() => if res.is_err() { break } else { a.lease_changed() },
            () = sleep_until(wake) => {}
        }
        let ready = services.listed()
            && pools_cm.as_ref().is_none_or(|c| c.listed())
            && legacy_cm.as_ref().is_none_or(|c| c.listed());
        if !ready {
            continue;
        }
        status.synced.store(true, Ordering::Relaxed);
        let leading = lead_rx.borrow_and_update().filter(|t| *t > Instant::now());
        let failed = a
            .pass(
                &services.store,
                pools_cm.as_ref(),
                legacy_cm.as_ref(),
                leading,
            )
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

/// Wakes the assigner on every change of a watched kind, and logs a watch's failures once.
#[derive(Debug, Clone)]
struct Wake(Arc<Notify>);

impl Observer for Wake {
    fn signal(&self, kind: &str, signal: Signal<'_>) {
        match signal {
            Signal::Listed | Signal::Changed => self.0.notify_one(),
            Signal::Expired => info!(%kind, "watch expired (410 Gone); listing again"),
            Signal::Failed(e) => {
                warn!(%kind, error = %e, "watch failed; keeping the last state and retrying")
            }
            Signal::Recovered => info!(%kind, "Kubernetes API answers again"),
        }
    }
}
