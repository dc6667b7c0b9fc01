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

/// A loopback port free for both TCP and UDP right now, for a server a test starts.
///
/// Ports come from below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), so the
/// source port of some test's outgoing connection can never take one between this pick and the
/// server's bind (an OS-picked ephemeral port can be reused that way: etcd once failed with
/// "address already in use"). Within a process the ports are handed out in turn from a random
/// start, so parallel tests of one binary never get the same one; across processes the random
/// start and the bind check keep collisions unlikely.
pub fn free_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static RANGE: OnceLock<(u32, u32)> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let &(lo, hi) = RANGE.get_or_init(|| {
        let ephemeral_lo = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32768);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id().wrapping_mul(2_654_435_761);
        NEXT.store(seed, Ordering::Relaxed);
        (10_000, ephemeral_lo.max(10_000 + 2_000))
    });
    for _ in 0..(hi - lo) {
        let port = u16::try_from(lo + NEXT.fetch_add(1, Ordering::Relaxed) % (hi - lo))
            .expect("port below 65536");
        let tcp = TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {lo} and {hi}");
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
