//! What every fedplane binary serves and sets up the same way: `/metrics` (Prometheus),
//! `/healthz` (the process runs), `/readyz` (the binary's own readiness, failing while
//! draining), the start (usage errors, logging to stderr, the runtime, the metrics recorder),
//! durations on the command line, and etcd ([`etcd`]: flags, connect options, requests); with
//! the `kube` feature, the Kubernetes watch both watching binaries share (`kube`).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

pub mod etcd;
#[cfg(feature = "kube")]
pub mod kube;

/// A binary's readiness, as `/readyz` reports it.
pub trait Probes: Clone + Send + Sync + 'static {
    /// `Err(reason)` while not ready.
    fn ready(&self) -> Result<(), String>;

    /// Called before `/metrics` renders, for gauges computed on demand.
    fn before_metrics(&self) {}
}

#[derive(Debug, Clone)]
struct Endpoints<P> {
    metrics: PrometheusHandle,
    probes: P,
    draining: Arc<AtomicBool>,
}

/// The three endpoints, served in the background.
#[derive(Debug)]
pub struct Http {
    draining: Arc<AtomicBool>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Http {
    /// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until [`Http::stop`].
    pub async fn start<P: Probes>(
        addr: std::net::SocketAddr,
        metrics: PrometheusHandle,
        probes: P,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let draining = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            metrics,
            probes,
            draining.clone(),
            cancel.clone(),
        ));
        Ok(Self {
            draining,
            cancel,
            task,
        })
    }

    /// From now on `/readyz` fails (SIGTERM), so load balancers stop sending before the
    /// binary stops.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Serves the three endpoints on `listener` until `cancel` fires. `/readyz` fails once
/// `draining` is set.
async fn serve<P: Probes>(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    probes: P,
    draining: Arc<AtomicBool>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render::<P>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<P>))
        .with_state(Endpoints {
            metrics,
            probes,
            draining,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

async fn render<P: Probes>(State(s): State<Endpoints<P>>) -> String {
    s.probes.before_metrics();
    s.metrics.render()
}

async fn readyz<P: Probes>(State(s): State<Endpoints<P>>) -> (StatusCode, String) {
    if s.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into());
    }
    match s.probes.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text (coloured on a terminal) or
/// as JSON when `format` is `"json"`. A line that cannot be written (stderr closed: the log
/// collector went away) is lost, and nothing else happens.
pub fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // Otherwise a failed write is reported with eprintln!, which panics when stderr is
        // closed, wherever the log line was (a task, a thread, the shutdown).
        .log_internal_errors(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Ends the program on settings that cannot work, as every fedplane binary does: `<program>:
/// <error>` on stderr and exit status 2 (a usage error, as clap's own).
pub fn exit_usage(program: &str, error: &dyn std::fmt::Display) -> ! {
    eprintln!("{program}: {error}");
    std::process::exit(2);
}

/// The tokio runtime a binary runs on; either way I/O and timers are enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Worker threads, one per core.
    MultiThread,
    /// The calling thread only.
    CurrentThread,
}

impl Runtime {
    /// Builds the runtime.
    pub fn build(self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            Self::MultiThread => tokio::runtime::Builder::new_multi_thread(),
            Self::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        }
        .enable_all()
        .build()
    }
}

/// Installs the Prometheus recorder that `/metrics` renders, then registers the binary's
/// metric help texts (`describe`).
pub fn install_metrics(describe: fn()) -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    describe();
    Ok(handle)
}

/// Parses `100ms`, `1.5s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 100ms, 1s)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
