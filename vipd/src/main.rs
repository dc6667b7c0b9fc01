//! The `fedplane-vipd` binary: settings, logging, metrics, one task per VRRP group and the HTTP
//! endpoints until SIGTERM, then every master resigns and removes its addresses. SIGHUP reloads
//! the groups from the config file; SIGUSR1 logs every group's state.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use fedplane_ops::Runtime;
use fedplane_vipd::assigner::GroupSink;
use fedplane_vipd::config::{Cli, Settings};
use fedplane_vipd::daemon::GroupContext;
use fedplane_vipd::ipam::Family;
use fedplane_vipd::kubernetes::{KubeStatus, KubeThread};
use fedplane_vipd::netlink::{self, Netlink};
use fedplane_vipd::probes::{Health, VipdProbes, describe_metrics};
use fedplane_vipd::services::GroupId;
use fedplane_vipd::speakers;
use fedplane_vipd::supervisor::Groups;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How long Kubernetes mode may take to stop (release the Lease) on SIGTERM.
const KUBE_STOP: std::time::Duration = std::time::Duration::from_secs(10);

/// When Kubernetes mode ends on its own; pending without it.
async fn kube_ended(task: &mut Option<fedplane_vipd::kubernetes::KubeJoin>) {
    match task {
        Some(t) => t.ended().await,
        None => std::future::pending().await,
    }
}

/// SIGHUP in BGP mode: the `bgp:` section read again and handed to the BGP task; a bad one
/// is refused (named in the log) and the running configuration and sessions stay.
fn reload_bgp(
    running: &fedplane_vipd::config::StaticBgp,
    config_tx: &watch::Sender<String>,
    routes_tx: &watch::Sender<std::collections::BTreeSet<ipnet::IpNet>>,
    up: Arc<std::sync::atomic::AtomicBool>,
) {
    let new = <Cli as clap::Parser>::try_parse()
        .map_err(|e| e.to_string())
        .and_then(|cli| Settings::resolve(cli).map_err(|e| e.to_string()))
        .and_then(|s| {
            s.bgp
                .ok_or_else(|| "bgp: removed (restart to leave BGP mode)".to_owned())
        })
        .and_then(|b| {
            if b.settings.table != running.settings.table
                || b.settings.withdraw_wait != running.settings.withdraw_wait
                || b.engine.run_dir != running.engine.run_dir
            {
                return Err(
                    "bgp.table, bgp.withdraw_wait and --bgp-run-dir change only with a restart"
                        .into(),
                );
            }
            // Checked by bird -p here, so a refused one changes nothing.
            fedplane_vipd::bgp::task::static_inputs(&b, up)
        });
    match new {
        Ok((inputs, _, _)) => {
            config_tx.send_replace(inputs.config.borrow().clone());
            routes_tx.send_replace(inputs.routes.borrow().clone());
            info!("SIGHUP: BGP settings reloaded");
        }
        Err(e) => error!(error = %e, "BGP reload refused: the running configuration stays"),
    }
}

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
    // Only a vipd with groups or BGP touches the interfaces or the route table (replicas that
    // only assign may share one).
    let bgp_mode =
        settings.bgp.is_some() || settings.kube.as_ref().is_some_and(|k| k.bgp.is_some());
    let _claim = if settings.groups.is_empty() && !bgp_mode {
        None
    } else {
        Some(
            fedplane_vipd::supervisor::claim_namespace()
                .context("one fedplane-vipd with VRRP groups per host (network namespace)")?,
        )
    };
    let nl = Netlink::connect().context("cannot open netlink")?;
    let links = netlink::watch_links().context("cannot follow link changes")?;
    let cancel = CancellationToken::new();
    let health = Arc::new(Health::default());
    let kube_status = settings
        .kube
        .as_ref()
        .map(|_| Arc::new(KubeStatus::default()));
    let kube_bgp = settings.kube.as_ref().and_then(|k| k.bgp.clone());
    let bgp_up = (settings.bgp.is_some() || kube_bgp.is_some())
        .then(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let probes = VipdProbes {
        health: health.clone(),
        kube: kube_status.clone(),
        bgp: bgp_up.clone(),
    };
    // Before anything can report ready or act, so a SIGTERM is never the default (fatal) one.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?;
    let http = fedplane_ops::Http::start(settings.http, metrics, probes)
        .await
        .with_context(|| format!("cannot bind the HTTP address {}", settings.http))?;

    // Who may advertise: Kubernetes mode's ends, and the groups' ends (cloned per group).
    let (kube_ends, group_speakers) = speakers::channels();
    // Kubernetes mode runs on its own thread and runtime, so a long assignment pass never
    // delays this runtime's adverts; its client is built there, before the groups start.
    let kube_thread = match (&settings.kube, &kube_status) {
        (Some(k), Some(status)) => Some(
            // Its own token: Kubernetes mode stopping on its own must not stop the groups
            // behind the daemon's back (the daemon stops, below).
            KubeThread::start(k.clone(), kube_ends, status.clone(), cancel.child_token())
                .await
                .context("cannot set up the Kubernetes client")?,
        ),
        _ => None,
    };
    let mut groups = Groups::new(GroupContext {
        netlink: nl.clone(),
        links: links.clone(),
        cancel: cancel.clone(),
        health,
        dump: watch::channel(0).1,
        speakers: settings.kube.as_ref().map(|_| group_speakers),
    });
    let mut senders = Vec::new();
    // What a killed run left: every address marked as ours on the managed interfaces goes
    // before the groups start (in Kubernetes mode the addresses are not even known yet).
    groups.remove_left_over(&settings.groups).await;
    if let Some(kube) = &settings.kube {
        info!(node = %kube.node_name, lease = %kube.lease,
            class = %kube.class, "Kubernetes mode");
    }
    for g in settings.groups.clone() {
        if settings.kube.is_some() {
            let (tx, rx) = watch::channel(None);
            let family = if g.v6 { Family::V6 } else { Family::V4 };
            senders.push(GroupSink {
                id: GroupId {
                    family,
                    vrid: g.fsm.vrid,
                },
                addresses: tx,
            });
            groups.start_following(g, rx);
        } else {
            groups.start(g);
        }
    }
    // BGP mode: its own token, cancelled first on SIGTERM so that the routes are withdrawn
    // before anything else stops.
    let bgp_cancel = CancellationToken::new();
    let mut bgp_task = None;
    let mut _bgp_senders = None;
    let mut kube_bgp_sink = None;
    if let (Some(engine), Some(up)) = (kube_bgp, bgp_up.clone()) {
        // Kubernetes mode hands the configuration (empty until a pool is mode: bgp) and the
        // routes; the kernel table and withdraw wait are the config file's (or the defaults).
        let file_bgp = settings.kube.as_ref().and_then(|k| k.pools.bgp().cloned());
        let (config_tx, config) = watch::channel(String::new());
        let (routes_tx, routes) = watch::channel(std::collections::BTreeSet::new());
        let inputs = fedplane_vipd::bgp::task::Inputs {
            config,
            routes,
            table: file_bgp
                .as_ref()
                .map_or(fedplane_vipd::bgp::config::DEFAULT_TABLE, |b| b.table),
            engine,
            withdraw_wait: file_bgp
                .as_ref()
                .map_or(fedplane_vipd::bgp::config::DEFAULT_WITHDRAW_WAIT, |b| {
                    b.withdraw_wait
                }),
            up,
        };
        info!("BGP mode (Kubernetes): announcing the addresses of mode: bgp pools");
        bgp_task = Some(tokio::spawn(fedplane_vipd::bgp::task::run(
            inputs,
            bgp_cancel.clone(),
        )));
        kube_bgp_sink = Some(fedplane_vipd::kubernetes::BgpSink {
            config: config_tx,
            routes: routes_tx,
        });
    }
    let mut kube_task = kube_thread.map(|t| t.run(senders, kube_bgp_sink));
    if let (Some(b), Some(up)) = (&settings.bgp, bgp_up.clone()) {
        let (inputs, config_tx, routes_tx) = fedplane_vipd::bgp::task::static_inputs(b, up)
            .map_err(|e| anyhow::anyhow!(e))
            .context("BGP mode")?;
        _bgp_senders = Some((config_tx, routes_tx));
        info!(announce = ?b.announce, peers = b.settings.peers.len(), "BGP mode");
        bgp_task = Some(tokio::spawn(fedplane_vipd::bgp::task::run(
            inputs,
            bgp_cancel.clone(),
        )));
    }
    info!(groups = settings.groups.len(), http = %settings.http, "fedplane-vipd started");

    let mut failed = None;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: resigning"); break }
            _ = int.recv() => { info!("SIGINT: resigning"); break }
            _ = hup.recv() => {
                if settings.kube.is_some() {
                    warn!("SIGHUP: in Kubernetes mode the groups follow the Services; restart to change the groups");
                } else {
                    info!("SIGHUP: reloading the configuration");
                    groups.reload(&settings).await;
                    if let (Some((config_tx, routes_tx)), Some(up), Some(b)) = (&_bgp_senders, &bgp_up, &settings.bgp) {
                        reload_bgp(b, config_tx, routes_tx, up.clone());
                    }
                }
            }
            _ = usr1.recv() => groups.dump(),
            () = kube_ended(&mut kube_task) => {
                error!("Kubernetes mode stopped on its own; stopping");
                failed = Some(anyhow::anyhow!("Kubernetes mode stopped on its own"));
                kube_task = None;
                break;
            }
            Some(e) = groups.failed() => {
                // A group that cannot run (no permission to open its sockets) stops the
                // daemon: the others must not run half-configured.
                error!(error = %e, "group failed; stopping");
                failed = Some(anyhow::Error::from(e));
                break;
            }
        }
    }
    if let Some(t) = bgp_task {
        bgp_cancel.cancel();
        let bound =
            fedplane_vipd::bgp::config::MAX_WITHDRAW_WAIT + std::time::Duration::from_secs(10);
        if tokio::time::timeout(bound, t).await.is_err() {
            warn!("BGP mode did not stop in time; exiting without it");
        }
    }
    http.drain();
    cancel.cancel();
    if let Some(t) = kube_task {
        // Releases the Lease, so a standby takes over within its retry period; bounded, so a
        // server that never answers cannot hold the exit.
        if tokio::time::timeout(KUBE_STOP, t.join()).await.is_err() {
            warn!("Kubernetes mode did not stop in time; exiting without it");
        }
    }
    groups.stopped().await;
    http.stop().await;
    info!("fedplane-vipd stopped");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
