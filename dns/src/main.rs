//! The `fedplane-dns` binary: settings, logging, metrics, then the sync task, the DNS listeners
//! and the HTTP endpoints until SIGTERM; then the lameduck (`/readyz` fails, DNS answers on),
//! then the listeners close and open TCP connections get `--shutdown-grace`.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use fedplane_dns::answer::AnswerOptions;
use fedplane_dns::config::{Cli, PASSWORD_ENV, Settings};
use fedplane_dns::index::Zones;
use fedplane_dns::probes::{self, DnsProbes};
use fedplane_dns::server::{self, Responder};
use fedplane_dns::sync::{EtcdSync, Shared};
use fedplane_ops::Runtime;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::resolve(cli, std::env::var(PASSWORD_ENV).ok())
        .unwrap_or_else(|e| fedplane_ops::exit_usage("fedplane-dns", &e));
    fedplane_ops::init_tracing(&settings.log_format);
    Runtime::MultiThread
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(run(settings))
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = fedplane_ops::install_metrics(probes::describe_metrics)
        .context("cannot install the metrics recorder")?;

    let zones = Arc::new(Zones::new(&settings.etcd.prefix, &settings.zones));
    let shared = Arc::new(Shared::new(zones.clone()));
    let cancel = CancellationToken::new();
    // However run() ends (an error, a panic), the UDP receive loops stop: they are blocking
    // threads that watch only `cancel`, and dropping the runtime waits for them.
    let _stop_serving = cancel.clone().drop_guard();
    let mut tasks = JoinSet::new();

    let (updates, update_jobs) = tokio::sync::mpsc::channel(server::update::QUEUE);
    if !settings.xfr.allow_update.is_empty() {
        tasks.spawn(server::update::run(
            update_jobs,
            zones.clone(),
            settings.etcd.clone(),
            cancel.clone(),
        ));
    }
    let responder = Arc::new(
        Responder::new(
            shared.clone(),
            AnswerOptions {
                max_udp_payload: settings.max_udp_payload,
                ..AnswerOptions::default()
            },
            settings.tcp_idle_timeout,
            settings.topology.clone(),
            settings.federations.clone(),
        )
        .with_transfers(settings.xfr.clone())
        .with_updates(updates),
    );
    tasks.spawn(
        responder
            .transfers()
            .keep_history(shared.clone(), cancel.clone()),
    );
    // Before any socket: the TCP cap is derived from the open-file limit.
    let nofile = server::raise_fd_limit();
    let udp_sockets = settings.listen.len() * settings.workers;
    let tcp_max_connections = server::tcp_cap(settings.tcp_max_connections, nofile, udp_sockets);
    if settings
        .tcp_max_connections
        .is_some_and(|asked| asked > tcp_max_connections)
    {
        warn!(
            asked = settings.tcp_max_connections,
            chosen = tcp_max_connections,
            nofile,
            "--tcp-max-connections lowered to fit the open-file limit"
        );
    }
    info!(
        nofile,
        tcp_max_connections, "open-file limit and TCP connection cap"
    );
    let tcp_held = server::tcp_held_cap(tcp_max_connections, nofile, udp_sockets);
    if tcp_held == 0 {
        warn!(
            nofile,
            tcp_max_connections,
            "no open files left beside the TCP connections to hold refused ones: a client over --tcp-max-connections-per-client is closed at once and may reconnect at once (raise the open-file limit or lower --tcp-max-connections)"
        );
    }
    let limits = server::Limits {
        workers: settings.workers,
        general_threads: settings.udp_general_threads,
        tcp_max_connections,
        tcp_max_connections_per_client: settings
            .tcp_max_connections_per_client
            .unwrap_or((tcp_max_connections / 4).max(1)),
        tcp_held,
        rrl: settings.rrl.clone(),
    };
    let bound = server::spawn(&settings.listen, &limits, responder, &cancel, &mut tasks)?;
    // Before anything can report ready, so a SIGTERM is never the default (fatal) one.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    metrics::gauge!("fedplane_dns_draining").set(0.0);
    let http = fedplane_ops::Http::start(settings.http, metrics, DnsProbes(shared.clone()))
        .await
        .with_context(|| format!("cannot bind the HTTP address {}", settings.http))?;
    if let Some(dir) = &settings.state_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    tasks.spawn(server::notify::run(
        shared.clone(),
        settings.notify.clone(),
        settings.xfr.keys.clone(),
        settings.notify_interval,
        settings.notify_source.clone(),
        cancel.clone(),
    ));
    tasks.spawn(
        EtcdSync::new(settings.etcd.clone(), zones, shared)
            .with_state_dir(settings.state_dir.clone(), settings.state_max_age)
            .run(cancel.clone()),
    );

    info!(
        zones = ?settings.zones.iter().map(ToString::to_string).collect::<Vec<_>>(),
        listen = ?bound, http = %settings.http, workers = settings.workers,
        etcd = ?settings.etcd,
        topology_blocks = settings.topology.as_ref().map_or(0, |t| t.len()),
        short_names = ?settings.federations.as_ref().map(|f| f.suffixes().map(ToString::to_string).collect::<Vec<_>>()),
        "fedplane-dns started"
    );

    let first = stop_signal(&mut term, &mut int).await;
    http.drain();
    metrics::gauge!("fedplane_dns_draining").set(1.0);
    if settings.lameduck.is_zero() {
        info!("{first}: no lameduck; closing the DNS listeners");
    } else {
        // Like CoreDNS's lameduck: load balancers and kube-proxy stop sending while we still
        // answer what they send meanwhile; etcd stays watched so answers stay current.
        info!(delay = ?settings.lameduck, "{first}: lameduck started; /readyz fails, DNS keeps answering");
        tokio::select! {
            () = tokio::time::sleep(settings.lameduck) => info!("lameduck ended; closing the DNS listeners"),
            again = stop_signal(&mut term, &mut int) => info!("{again}: lameduck ended early; closing the DNS listeners"),
        }
    }
    cancel.cancel();
    let drained = tokio::time::timeout(settings.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(grace = ?settings.shutdown_grace, "shutdown grace ran out with connections still open; closing them");
    }
    http.stop().await;
    info!("fedplane-dns stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT and names it.
async fn stop_signal(term: &mut Signal, int: &mut Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
