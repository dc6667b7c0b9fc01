//! Test harnesses for fedplane, one per real component, shared by every test:
//!
//! - [`Etcd`]: a real etcd server (Debian `etcd-server`) on free loopback ports with a temporary
//!   data dir, driven with the real `etcdctl`, and [`EtcdCluster`], several such members
//!   forming one cluster;
//! - [`Daemon`]: one of our binaries as a child process, whose output is printed if the test fails;
//! - [`dig`]: the real `dig` client, its output parsed;
//! - [`netns`]: layer-2 segments of network namespaces ([`netns::Lan`], [`netns::Host`]) and a
//!   watcher of a host's ARP/NDP table ([`netns::NeighMonitor`]), for VRRP tests (root only);
//! - [`keepalived`]: a real keepalived speaking VRRP inside such a host;
//! - [`kube_fake`]: a test fake of the Kubernetes API server ([`kube_fake::FakeKubeApi`]) for
//!   the real kube-rs client, watchers and reflectors, and [`kube_fake::write_kubeconfig`];
//! - [`manifests`]: the manifests of `deploy/` rendered with kustomize (as each supported
//!   kubectl embeds it) and checked with `kubernetes-validate --strict`, offline.
//!
//! Every wait is bounded ([`wait_until`]); nothing sleeps for a fixed time to "let things
//! settle".

mod daemon;
mod dig;
mod dnsview;
mod etcd;
pub mod frr;
pub mod keepalived;
pub mod kube_fake;
pub mod manifests;
pub mod netns;

pub use daemon::{Daemon, http_get};
pub use dig::{Dig, DigRecord, dig};
pub use dnsview::{dns_view, sections_end};
pub use etcd::{Etcd, EtcdCluster};

use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

/// The peak resident memory (VmHWM) of process `pid` so far, in MiB (0 if it is gone); the
/// benches report it next to their figures.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A loopback port free for both TCP and UDP right now (the OS picks it, so parallel tests do
/// not collide).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral TCP port");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Polls `check` until it returns `Some` (returned) or `timeout` passes (`None`).
pub fn wait_until_or<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Path of one of the workspace's binaries (`fedplane-dns`, …) built beside the running test,
/// for tests of another package; panics with a hint when it has not been built.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|dir| dir.join(name))
        .expect("target directory");
    assert!(
        path.is_file(),
        "{} is not built: run cargo build --workspace --bins first",
        path.display()
    );
    path
}

/// Panics with an install hint when a program the tests need is missing.
pub fn require_program(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()));
    assert!(
        found,
        "{name} is not installed: run scripts/install-deps (apt-get install {package})"
    );
}
