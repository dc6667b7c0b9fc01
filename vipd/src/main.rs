//! The `fedplane-vipd` binary: settings, logging, metrics, one task per VRRP group and the HTTP
//! endpoints until SIGTERM, then every master resigns and removes its addresses.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use anyhow::Context;
use clap::Parser;
use fedplane_ops::Runtime;
use fedplane_vipd::assigner::GroupSink;
use fedplane_vipd::config::{Cli, Settings};
use fedplane_vipd::daemon::run_group;
use fedplane_vipd::ipam::Family;
use fedplane_vipd::kubernetes::{KubeStatus, KubeThread};
use fedplane_vipd::netlink::{self, Netlink};
use fedplane_vipd::probes::{VipdProbes, describe_metrics};
use fedplane_vipd::services::GroupId;
use fedplane_vipd::speakers;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

fn main() -> anyhow::Result<()> {
    let settings = Settings::resolve(Cli::parse())
        .unwrap_or_else(|e| fedplane_ops::exit_usage("fedplane-vipd", &e));
    fedplane_ops::init_tracing(&settings.log_format);
    Runtime::CurrentThread
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(run(settings))
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = fedplane_ops::install_metrics(describe_metrics)
        .context("cannot install the metrics recorder")?;
    let nl = Netlink::connect().context("cannot open netlink")?;
    let links = netlink::watch_links().context("cannot follow link changes")?;
    let cancel = CancellationToken::new();
    let started = Arc::new(AtomicUsize::new(0));
    let kube_status = settings
        .kube
        .as_ref()
        .map(|_| Arc::new(KubeStatus::default()));
    let probes = VipdProbes {
        started: started.clone(),
        groups: settings.groups.len(),
        kube: kube_status.clone(),
    };
    // Before anything can report ready or act, so a SIGTERM is never the default (fatal) one.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let http = fedplane_ops::Http::start(settings.http, metrics, probes)
        .await
        .with_context(|| format!("cannot bind the HTTP address {}", settings.http))?;

    // Who may advertise: Kubernetes mode's ends, and the groups' ends (cloned per group).
    let (kube_ends, group_speakers) = speakers::channels();
    // Kubernetes mode runs on its own thread and runtime, so a long assignment pass never
    // delays this runtime's adverts; its client is built there, before the groups start.
    let kube_thread = match (&settings.kube, &kube_status) {
        (Some(k), Some(status)) => Some(
            KubeThread::start(k.clone(), kube_ends, status.clone(), cancel.clone())
                .await
                .context("cannot set up the Kubernetes client")?,
        ),
        _ => None,
    };
    let mut groups = JoinSet::new();
    let mut senders = Vec::new();
    if let Some(kube) = &settings.kube {
        // Groups' addresses come from the Services: what a killed run left is not known by
        // address, so every address marked as ours goes before the groups start.
        let mut interfaces: Vec<&str> = settings
            .groups
            .iter()
            .map(|g| g.interface.as_str())
            .collect();
        interfaces.sort_unstable();
        interfaces.dedup();
        for i in interfaces {
            match nl.remove_ours(i).await {
                Ok(gone) if !gone.is_empty() => info!(
                    interface = i,
                    ?gone,
                    "removed virtual addresses left by an earlier run"
                ),
                Ok(_) => {}
                Err(e) => {
                    warn!(interface = i, error = %e, "cannot clean up addresses of an earlier run")
                }
            }
        }
        info!(node = %kube.node_name, lease = %kube.lease,
            class = %kube.class, "Kubernetes mode");
    }
    for g in settings.groups.clone() {
        let vips = settings.kube.as_ref().map(|_| {
            let (tx, rx) = watch::channel(None);
            let family = if g.v6 { Family::V6 } else { Family::V4 };
            senders.push(GroupSink {
                id: GroupId {
                    family,
                    vrid: g.fsm.vrid,
                },
                addresses: tx,
            });
            rx
        });
        groups.spawn(run_group(
            g,
            nl.clone(),
            links.clone(),
            cancel.clone(),
            started.clone(),
            vips,
        ));
    }
    // To be handed to the groups (run_group) when they check speakers.
    let _group_speakers = group_speakers;
    let kube_task = kube_thread.map(|t| t.run(senders));
    info!(groups = settings.groups.len(), http = %settings.http, "fedplane-vipd started");

    let mut failed = None;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: resigning"),
        _ = int.recv() => info!("SIGINT: resigning"),
        Some(res) = groups.join_next() => {
            // A group that cannot start (no interface, no permission) stops the daemon: the
            // others must not run half-configured.
            match res {
                Ok(Err(e)) => {
                    error!(error = %e, "group failed; stopping");
                    failed = Some(anyhow::Error::from(e));
                }
                Err(e) => {
                    error!(error = %e, "group task died; stopping");
                    failed = Some(anyhow::anyhow!("a group task died: {e}"));
                }
                Ok(Ok(())) => {}
            }
        }
    }
    http.drain();
    cancel.cancel();
    if let Some(t) = kube_task {
        // Releases the Lease, so a standby takes over within its retry period.
        t.join().await;
    }
    while let Some(res) = groups.join_next().await {
        if let Ok(Err(e)) = res {
            error!(error = %e, "group failed");
        }
    }
    http.stop().await;
    info!("fedplane-vipd stopped");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
