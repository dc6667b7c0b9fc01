//! The active health checks: every `--probe-interval`, each address and check of [`Health`]'s
//! targets is probed (a TCP connection, or an HTTP `GET` whose status must be 200–399, as the
//! kubelet's probes), each bounded by `--probe-timeout`; results are recorded, counted in
//! metrics (`fedplane_controller_probes_total{cluster,result}`,
//! `fedplane_controller_probe_targets{cluster,state}`), and a target that changes state is
//! logged with its address and wakes the reconcile loop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::health::{Health, Target};
use crate::policy::Check;

/// Probes in flight at once.
const PARALLEL: usize = 512;
/// The longest status line read from an HTTP check.
const MAX_STATUS_LINE: usize = 1024;

/// How often and how long to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// `--probe-interval`.
    pub interval: Duration,
    /// `--probe-timeout`.
    pub timeout: Duration,
}

/// Probes until `cancel`. Each distinct address and check is probed once a round, for every
/// Service that shares it; a round waits for its probes (each bounded by the timeout), so
/// rounds never overlap, and one longer than the interval is logged (every such round at most
/// once a minute) and measured (`fedplane_controller_probe_round_seconds`): with
/// [`PARALLEL`] probes in flight, a round of addresses that never answer takes
/// `addresses / 512 × timeout`.
pub async fn run(
    health: Arc<Mutex<Health>>,
    timing: ProbeTiming,
    changed: Arc<Notify>,
    cancel: CancellationToken,
) {
    let lock = || health.lock().unwrap_or_else(PoisonError::into_inner);
    let mut tick = tokio::time::interval(timing.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = Arc::new(Semaphore::new(PARALLEL));
    let mut clusters: BTreeSet<String> = BTreeSet::new();
    let mut warned: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => return,
        }
        let started = Instant::now();
        let mut shared: BTreeMap<(IpAddr, Check), Vec<Target>> = BTreeMap::new();
        for (target, check) in lock().targets() {
            shared
                .entry((target.address, check))
                .or_default()
                .push(target);
        }
        let mut round = JoinSet::new();
        for ((address, check), targets) in shared {
            let limit = limit.clone();
            round.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let result = tokio::time::timeout(timing.timeout, probe(address, &check))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {:?}", timing.timeout)));
                (targets, check, result)
            });
        }
        let mut flipped = false;
        while let Some(done) = tokio::select! {
            r = round.join_next() => r,
            () = cancel.cancelled() => return,
        } {
            let Ok((targets, check, result)) = done else {
                continue;
            };
            let ok = result.is_ok();
            for target in targets {
                metrics::counter!("fedplane_controller_probes_total",
                    "cluster" => target.cluster.clone(),
                    "result" => if ok { "success" } else { "failure" })
                .increment(1);
                if lock().record(&target, &check, ok).is_none() {
                    continue;
                }
                flipped = true;
                match &result {
                    Ok(()) => info!(cluster = %target.cluster, object = %target.object,
                        address = %target.address, check = %check, "health check passes again: address back"),
                    Err(e) => warn!(cluster = %target.cluster, object = %target.object,
                        address = %target.address, check = %check, error = %e,
                        "health check failing: address withdrawn"),
                }
            }
        }
        // Targets up and down per cluster (clusters whose targets went away: zero).
        let counts = lock().counts();
        clusters.extend(counts.keys().cloned());
        for c in &clusters {
            let (up, down) = counts.get(c).copied().unwrap_or_default();
            for (state, n) in [("up", up), ("down", down)] {
                metrics::gauge!("fedplane_controller_probe_targets",
                    "cluster" => c.clone(), "state" => state)
                .set(n as f64);
            }
        }
        let took = started.elapsed();
        metrics::histogram!("fedplane_controller_probe_round_seconds").record(took.as_secs_f64());
        if took > timing.interval && warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
            warned = Some(Instant::now());
            warn!(took = ?took, interval = ?timing.interval, timeout = ?timing.timeout,
                  "a probe round took longer than --probe-interval: the health checks react that much later (too many addresses that do not answer for the timeout?)");
        }
        if flipped {
            changed.notify_one();
        }
    }
}

/// One probe: `Err` says why it failed.
async fn probe(address: IpAddr, check: &Check) -> Result<(), String> {
    let (port, path) = match check {
        Check::Tcp { port } => (*port, None),
        Check::Http { port, path } => (*port, Some(path)),
    };
    let addr = SocketAddr::new(address, port);
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let Some(path) = path else {
        return Ok(());
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: fedplane-controller\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut line = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !line.contains(&b'\n') && line.len() < MAX_STATUS_LINE {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
    }
    let status = status_code(&line).ok_or_else(|| {
        let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        format!("{addr}: not an HTTP answer: {shown:?}")
    })?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET http://{addr}{path}: status {status}"))
    }
}

/// The status code of an HTTP/1 status line at the start of `bytes`.
fn status_code(bytes: &[u8]) -> Option<u16> {
    let line = bytes.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use tokio::net::TcpListener;

    use super::*;
    use crate::view::{Regarding, ServiceId};

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 302 Found\r\nLocation: /"), Some(302));
        assert_eq!(status_code(b"HTTP/1.1 503\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    fn target(addr: SocketAddr) -> (Target, u16) {
        (
            Target {
                cluster: "fcp".into(),
                object: Regarding::service(ServiceId {
                    namespace: "default".into(),
                    name: "web".into(),
                }),
                address: addr.ip(),
            },
            addr.port(),
        )
    }

    /// A listener that answers every connection with `answer` (empty: accept and close).
    async fn server(answer: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind((IpAddr::from([127, 0, 0, 1]), 0))
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_real_listeners() {
        let ok = server(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let (t, port) = target(ok);
        assert_eq!(probe(t.address, &Check::Tcp { port }).await, Ok(()));
        let http = |port| Check::Http {
            port,
            path: "/healthz".into(),
        };
        assert_eq!(probe(t.address, &http(port)).await, Ok(()));
        let bad = server(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let (t, port) = target(bad);
        let e = probe(t.address, &http(port)).await.expect_err("503");
        assert!(e.contains("status 503"), "{e}");
        let garbage = server(b"hello").await;
        let (t, port) = target(garbage);
        let e = probe(t.address, &http(port)).await.expect_err("garbage");
        assert!(e.contains("not an HTTP answer"), "{e}");
        // A port nobody listens on.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr")
        };
        let (t, port) = target(closed);
        let e = probe(t.address, &Check::Tcp { port })
            .await
            .expect_err("closed");
        assert!(e.contains("connect"), "{e}");
    }
}
