//! The `fedplane-vipd` binary: settings, logging, metrics, one task per VRRP group and the HTTP
//! endpoints until SIGTERM, then every master resigns and removes its addresses.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use anyhow::Context;
use clap::Parser;
use fedplane_vipd::config::{Cli, Settings};
use fedplane_vipd::daemon::run_group;
use fedplane_vipd::http::{self, VipdProbes};
use fedplane_vipd::netlink::{self, Netlink};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

fn main() -> anyhow::Result<()> {
    let settings = match Settings::resolve(Cli::parse()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fedplane-vipd: {e}");
            std::process::exit(2);
        }
    };
    fedplane_ops::init_tracing(&settings.log_format);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(run(settings))
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    http::describe_metrics();
    let nl = Netlink::connect().context("cannot open netlink")?;
    let links = netlink::watch_links().context("cannot follow link changes")?;
    let cancel = CancellationToken::new();
    let started = Arc::new(AtomicUsize::new(0));
    let probes = VipdProbes {
        started: started.clone(),
        groups: settings.groups.len(),
    };
    let http = fedplane_ops::Http::start(settings.http, metrics, probes)
        .await
        .with_context(|| format!("cannot bind the HTTP address {}", settings.http))?;

    let mut groups = JoinSet::new();
    for g in settings.groups.clone() {
        groups.spawn(run_group(
            g,
            nl.clone(),
            links.clone(),
            cancel.clone(),
            started.clone(),
        ));
    }
    info!(groups = settings.groups.len(), http = %settings.http, "fedplane-vipd started");

    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
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
