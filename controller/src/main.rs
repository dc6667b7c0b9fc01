//! The `fedplane-controller` binary: settings, logging, metrics, the member clusters, then the
//! reconcile loop until SIGTERM (or one sync with `--once`).

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use fedplane_controller::config::{Cli, Settings, Source};
use fedplane_controller::probes::{self, ControllerProbes};
use fedplane_controller::reconcile::{Reconciler, Status};
use fedplane_controller::snapshot;
use fedplane_controller::source::Cluster;
use fedplane_ops::Runtime;
use fedplane_ops::etcd::PASSWORD_ENV;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

fn main() {
    one_malloc_arena();
    let exit = |e: &dyn std::fmt::Display| -> ! {
        fedplane_ops::exit_usage("fedplane-controller", &format_args!("{e:#}"))
    };
    let mut cli = Cli::parse();
    let kubeconfig = if cli.all_contexts || !cli.contexts.is_empty() {
        let kc = read_kubeconfig(&cli).unwrap_or_else(|e| exit(&e));
        if cli.all_contexts {
            add_every_context(&mut cli, &kc);
        }
        Some(kc)
    } else {
        None
    };
    let settings = Settings::resolve(
        cli,
        std::env::var(PASSWORD_ENV).ok(),
        std::env::var("HOSTNAME").ok(),
    )
    .unwrap_or_else(|e| exit(&e));
    fedplane_ops::init_tracing(&settings.log_format);
    let result = Runtime::MultiThread
        .build()
        .context("cannot start the tokio runtime")
        .and_then(|rt| rt.block_on(run(settings, kubeconfig)));
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("fedplane-controller: {e:#}");
        std::process::exit(1);
    }
}

/// One glibc malloc arena for the whole process, unless `MALLOC_ARENA_MAX` or
/// `GLIBC_TUNABLES=glibc.malloc.arena_max=…` says otherwise.
///
/// glibc gives each thread that allocates under contention an arena of its own (up to 8 per
/// core), and memory freed in one arena is not reused by the others: the cluster views, the
/// plan and the write batches are built on one tokio worker and dropped on another, so at
/// 10,000 Services × 3 clusters the peak RSS was ~65 MiB (~20 %) higher with the default
/// (`benches/controller-sync`: 327–379 MiB against 281–282 MiB with one arena, the times
/// unchanged). The controller's work is one reconcile loop at a time, so the arenas buy
/// nothing here.
#[allow(unsafe_code)]
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.arena_max"))
    {
        // SAFETY: mallopt only sets an allocator parameter; it is called before any other
        // thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

fn read_kubeconfig(cli: &Cli) -> anyhow::Result<Kubeconfig> {
    match &cli.kubeconfig {
        Some(p) => Kubeconfig::read_from(p)
            .with_context(|| format!("cannot read kubeconfig {}", p.display())),
        None => Kubeconfig::read().context(
            "cannot read the kubeconfig from $KUBECONFIG or ~/.kube/config; give --kubeconfig",
        ),
    }
}

/// `--all-contexts`: every context not already named by a `--context` becomes one.
fn add_every_context(cli: &mut Cli, kc: &Kubeconfig) {
    for ctx in &kc.contexts {
        let given = cli
            .contexts
            .iter()
            .any(|c| c.split_once('=').map_or(c.as_str(), |(_, context)| context) == ctx.name);
        if !given {
            cli.contexts.push(ctx.name.clone());
        }
    }
}

async fn run(settings: Settings, kubeconfig: Option<Kubeconfig>) -> anyhow::Result<()> {
    let metrics = fedplane_ops::install_metrics(probes::describe_metrics)
        .context("cannot install the metrics recorder")?;

    let cancel = CancellationToken::new();
    let changed = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let mut clusters = Vec::new();
    for c in &settings.clusters {
        let name = &c.view.cluster;
        clusters.push(match &c.source {
            Source::Snapshot(path) => {
                let snap = snapshot::read(path)?;
                info!(cluster = %name, file = %path.display(), nodes = snap.objects.nodes.len(),
                      services = snap.objects.services.len(), endpointslices = snap.objects.slices.len(),
                      skipped = ?snap.skipped, "read snapshot");
                Cluster::from_snapshot(c.view.clone(), snap.objects)
            }
            Source::Context(context) => {
                let options = KubeConfigOptions {
                    context: Some(context.clone()),
                    ..KubeConfigOptions::default()
                };
                let kc = kubeconfig.clone().context("a context needs a kubeconfig")?;
                let config = kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .with_context(|| format!("cluster {name}: kubeconfig context {context:?}"))?;
                info!(cluster = %name, context = %context, server = %config.cluster_url, "watching cluster");
                let client = kube::Client::try_from(config)
                    .with_context(|| format!("cluster {name}: cannot build a client"))?;
                Cluster::live(c.view.clone(), client, changed.clone(), &cancel, &mut tasks)
            }
        });
    }

    let status = Arc::new(Status::default());
    // Before anything can report ready or act, so a SIGTERM is never the default (fatal) one.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let http = fedplane_ops::Http::start(settings.http, metrics, ControllerProbes(status.clone()))
        .await
        .with_context(|| format!("cannot bind the HTTP address {}", settings.http))?;
    let r = &settings.reconcile;
    info!(domain = %r.naming.domain, federation = %r.naming.federation,
          clusters = settings.clusters.len(), etcd = ?settings.etcd, http = %settings.http,
          once = r.once, dry_run = r.dry_run, "fedplane-controller started");

    let reconciler = Reconciler::new(settings.reconcile.clone(), clusters, changed, status);
    let loop_cancel = cancel.clone();
    let mut reconcile = tokio::spawn(reconciler.run(settings.etcd.clone(), loop_cancel));

    let finished = tokio::select! {
        r = &mut reconcile => Some(r),
        _ = term.recv() => None,
        _ = int.recv() => None,
    };
    let result = match finished {
        Some(r) => r,
        None => {
            info!("SIGTERM or SIGINT: finishing the current sync and resigning");
            http.drain();
            cancel.cancel();
            reconcile.await
        }
    };
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    http.stop().await;
    result.context("the reconcile loop panicked")??;
    info!("fedplane-controller stopped");
    Ok(())
}
