//! The probe of the shared Kubernetes watch (`fedplane_ops::kube`, run by fedplane-vipd and
//! fedplane-controller): a list a second while a watch fails. A TCP front in front of the API fake can forward,
//! reset every connection (an outage), or accept and never answer (a hung API server), and
//! counts what clients attempt.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedplane_ops::kube::{Observer, Signal, Watched, spawn};
use fedplane_testkit::kube_fake::FakeKubeApi;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward to the fake.
    Forward,
    /// Reset every connection as soon as it is accepted (and cut forwarded ones).
    Reset,
    /// A probe (a `limit=1` list) gets a connection that never answers (a hung API server, or
    /// a connection that died silently); every other connection is reset.
    HangProbes,
}

struct Front {
    url: String,
    mode: watch::Sender<Mode>,
    /// Connections accepted in `Reset` mode.
    reset: Arc<AtomicUsize>,
    /// A probe is waiting on a connection that never answers.
    probe_hanging: Arc<AtomicBool>,
}

async fn front(backend: Option<String>, mode: Mode) -> Front {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = watch::channel(mode);
    let reset = Arc::new(AtomicUsize::new(0));
    let probe_hanging = Arc::new(AtomicBool::new(false));
    let (count, hanging) = (reset.clone(), probe_hanging.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mode = *rx.borrow();
            match mode {
                Mode::Reset => {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = sock.set_zero_linger();
                }
                Mode::HangProbes => {
                    let hanging = hanging.clone();
                    tokio::spawn(async move {
                        let mut seen = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match sock.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&seen).into_owned();
                        let line = head.lines().next().unwrap_or_default();
                        if !(line.contains("limit=1 ") || line.contains("limit=1&")) {
                            let _ = sock.set_zero_linger();
                            return;
                        }
                        hanging.store(true, Ordering::SeqCst);
                        while let Ok(n) = sock.read(&mut buf).await {
                            if n == 0 {
                                return;
                            }
                        }
                    });
                }
                Mode::Forward => {
                    let backend = backend.clone().expect("a backend to forward to");
                    let mut rx = rx.clone();
                    tokio::spawn(async move {
                        let Ok(mut back) = TcpStream::connect(backend).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut sock, &mut back) => {}
                            _ = rx.wait_for(|m| *m != Mode::Forward) => {}
                        }
                        let _ = sock.set_zero_linger();
                    });
                }
            }
        }
    });
    Front {
        url,
        mode: tx,
        reset,
        probe_hanging,
    }
}

#[derive(Debug, Clone, Default)]
struct Heard(Arc<Mutex<Vec<String>>>);

impl Observer for Heard {
    fn signal(&self, _kind: &str, signal: Signal<'_>) {
        let name = match signal {
            Signal::Listed => "listed",
            Signal::Changed(_) => "changed",
            Signal::Expired => "expired",
            Signal::Failed(_) => "failed",
            Signal::Recovered => "recovered",
        };
        self.0.lock().expect("lock").push(name.to_owned());
    }
}

impl Heard {
    fn count(&self, what: &str) -> usize {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| *s == what)
            .count()
    }
}

fn client(url: &str) -> Client {
    Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client")
}

/// A ConfigMap watch (the shared one, with `Heard` as its observer) through `front`.
fn watch_through(front: &Front) -> (CancellationToken, JoinSet<()>, Heard, Watched<ConfigMap>) {
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let heard = Heard::default();
    let watched = spawn(
        Api::<ConfigMap>::namespaced(client(&front.url), "default"),
        None,
        heard.clone(),
        &cancel,
        &mut tasks,
    );
    (cancel, tasks, heard, watched)
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// One list a second while a watch fails, however long it was healthy before: ticks missed
/// while healthy are not made up for in a burst (which, after days of uptime, would hit a
/// failing API server from every node of the vipd DaemonSet at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_after_a_healthy_hour_is_probed_once_a_second_not_in_a_burst() {
    const HEALTHY: Duration = Duration::from_secs(12);
    let fake = FakeKubeApi::start();
    let backend = fake.url().trim_start_matches("http://").to_owned();
    let front = front(Some(backend), Mode::Forward).await;
    let (cancel, _tasks, heard, watched) = watch_through(&front);
    wait_for("the first list", || watched.listed()).await;
    tokio::time::sleep(HEALTHY).await;
    front.mode.send_replace(Mode::Reset);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let attempts = front.reset.load(Ordering::SeqCst);
    cancel.cancel();
    assert_eq!(heard.count("failed"), 1);
    // In 1.5 s: two probes (at 0 s and 1 s) and the watcher's own retries (kube's backoff
    // starts at 0.8 s): at most 5 connections.
    assert!(
        attempts <= 5,
        "{attempts} connection attempts within 1.5 s of an outage that began after {HEALTHY:?} \
         of a healthy watch: the probe fires every tick it missed while healthy"
    );
}

/// Cancelling the watch ends its task promptly even while a probe waits on a hung API server
/// (kube's client has no read timeout): vipd's shutdown awaits the Kubernetes task, and the
/// kubelet's grace period is 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_while_a_probe_waits_ends_the_watch_task_promptly() {
    let front = front(None, Mode::Reset).await;
    let (cancel, mut tasks, heard, _watched) = watch_through(&front);
    wait_for("the watch to fail", || heard.count("failed") == 1).await;
    front.mode.send_replace(Mode::HangProbes);
    let hanging = front.probe_hanging.clone();
    wait_for("a probe waiting on the hung API server", || {
        hanging.load(Ordering::SeqCst)
    })
    .await;
    cancel.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(3), tasks.join_next()).await;
    assert!(
        ended.is_ok(),
        "the watch task still runs 3 s after cancel: it waits on its probe's list"
    );
}

/// A probe hung on a dead connection does not hold the watch back: once the API server
/// answers new connections again, the watcher's own retries list it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_probe_does_not_stop_the_watch_from_recovering() {
    let fake = FakeKubeApi::start();
    let backend = fake.url().trim_start_matches("http://").to_owned();
    let front = front(Some(backend), Mode::Reset).await;
    let (cancel, _tasks, heard, watched) = watch_through(&front);
    wait_for("the watch to fail", || heard.count("failed") == 1).await;
    front.mode.send_replace(Mode::HangProbes);
    let hanging = front.probe_hanging.clone();
    wait_for("a probe waiting on a dead connection", || {
        hanging.load(Ordering::SeqCst)
    })
    .await;
    // The API server answers again on every new connection.
    front.mode.send_replace(Mode::Forward);
    wait_for("the watch to list again and recover once", || {
        watched.listed() && heard.count("recovered") == 1
    })
    .await;
    cancel.cancel();
}
