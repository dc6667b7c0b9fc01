//! Layer-2 segments of Linux network namespaces, for tests of VRRP and gratuitous ARP.
//!
//! A [`Lan`] is a namespace holding a bridge `br0`; every [`Host`] added to it is a namespace of
//! its own whose `eth0` is one end of a veth pair, the other end a port of `br0`. Everything is
//! done by shelling out to iproute2 (`ip`), `sysctl` and `ping` inside the namespaces
//! (`ip netns exec`), so the tests need root.
//!
//! Namespace names are `fp<pid>-<n>-lan` and `fp<pid>-<n>-h<i>`: unique per process and per
//! [`Lan`], so tests run in parallel. Dropping the [`Lan`] (also while a test panics) kills every
//! process inside its namespaces and deletes them; the veths and the bridge go with them. The
//! first [`Lan::new`] of a process also deletes namespaces left behind by test processes that
//! no longer exist (killed before their drops could run).

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Daemon, require_program, wait_until};

/// How long setting up or tearing down a namespace may take before we give up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Panics unless the effective user is root (namespaces, veths and VRRP need it), and checks
/// that iproute2 is installed.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    // "Uid:\treal\teffective\tsaved\tfs"
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("a Uid line in /proc/self/status");
    assert!(
        euid == "0",
        "this test needs root: it creates network namespaces; run as root (euid is {euid})"
    );
    require_program("ip", "iproute2");
}

/// Runs `ip args…`; `Err` carries the command and its stderr.
fn try_ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip args…` and panics on failure.
fn ip(args: &[&str]) -> String {
    try_ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Serializes `ip netns add` within the process: the very first one on a machine bind-mounts
/// `/run/netns` onto itself, and two racing first ones stack two mounts.
static NETNS_ADD: Mutex<()> = Mutex::new(());

fn netns_add(name: &str) {
    let _guard = NETNS_ADD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ip(&["netns", "add", name]);
}

/// Runs `sysctl -q -w key=value…` inside namespace `ns`.
fn sysctl_in(ns: &str, settings: &[(&str, &str)]) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "sysctl", "-q", "-w"]);
    for (k, v) in settings {
        cmd.arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("run ip netns exec sysctl");
    assert!(
        out.status.success(),
        "sysctl {settings:?} in {ns} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Names of the namespaces `ip netns list` shows.
pub fn list_namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// SIGKILLs every process in namespace `ns` until none is left (bounded); best effort, never
/// panics (it runs in drops).
fn kill_all_in(ns: &str) {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let pids: Vec<String> = match try_ip(&["netns", "pids", ns]) {
            Ok(out) => out.split_whitespace().map(str::to_owned).collect(),
            Err(_) => return, // the namespace is gone
        };
        if pids.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("netns harness: processes {pids:?} in {ns} survive SIGKILL");
            return;
        }
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills the processes in namespace `ns` and deletes it; best effort, never panics.
fn destroy_namespace(ns: &str) {
    kill_all_in(ns);
    if let Err(e) = try_ip(&["netns", "del", ns]) {
        // "No such file or directory" when setup failed before creating it.
        if !e.contains("No such file") {
            eprintln!("netns harness: {e}");
        }
    }
}

/// The pid in a harness namespace name `fp<pid>-<n>-…`, `None` for any other name.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("fp")?;
    let (pid, rest) = rest.split_once('-')?;
    let (n, _) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// Deletes harness namespaces whose test process no longer exists.
fn sweep_stale_namespaces() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        for name in list_namespaces() {
            if let Some(pid) = owner_pid(&name)
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                eprintln!("netns harness: deleting stale namespace {name}");
                destroy_namespace(&name);
            }
        }
    });
}

/// Splits `"addr/len"` (or a bare address) and parses the address.
fn parse_cidr<T: std::str::FromStr>(cidr: &str) -> T {
    let addr = cidr.split_once('/').map_or(cidr, |(a, _)| a);
    addr.parse()
        .unwrap_or_else(|_| panic!("not an address (with optional /prefix): {cidr:?}"))
}

/// A layer-2 segment: a namespace with the bridge `br0` that its hosts' veths are plugged into.
///
/// Dropping it kills every process in its namespaces and the hosts' namespaces, and deletes them
/// all.
#[derive(Debug)]
pub struct Lan {
    prefix: String,
    ns: String,
    hosts: Vec<String>,
}

impl Default for Lan {
    fn default() -> Self {
        Self::new()
    }
}

impl Lan {
    /// Creates the lan namespace with `br0` up (multicast snooping off, STP off so ports forward
    /// at once, IPv6 off on the bridge itself so it sends nothing of its own).
    pub fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(1);
        require_root();
        sweep_stale_namespaces();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("fp{}-{n}-", std::process::id());
        // Built before the namespace exists, so a failure below still cleans up in drop.
        let lan = Self {
            ns: format!("{prefix}lan"),
            prefix,
            hosts: Vec::new(),
        };
        netns_add(&lan.ns);
        sysctl_in(
            &lan.ns,
            &[
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"),
            ],
        );
        ip(&[
            "-n",
            &lan.ns,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &lan.ns, "link", "set", "br0", "up"]);
        lan
    }

    /// The prefix every namespace of this lan starts with (`fp<pid>-<n>-`); no other lan's
    /// names start with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lan's own namespace (holding `br0` and the lan-side veth ends).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Every namespace this lan created: the hosts' and its own.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = self.hosts.clone();
        v.push(self.ns.clone());
        v
    }

    /// Adds a host: a new namespace with `lo` up and `eth0` plugged into `br0`, with
    /// `ipv4_cidr` (e.g. `"192.0.2.1/24"`) and, if given, `ipv6_cidr` (e.g. `"fd00::1/64"`,
    /// added `nodad`) on `eth0`. Duplicate address detection is off in the host, so its
    /// link-local IPv6 address is usable at once too. Returns when `eth0` has carrier and its
    /// bridge port forwards.
    pub fn add_host(&mut self, ipv4_cidr: &str, ipv6_cidr: Option<&str>) -> Host {
        let i = self.hosts.len() + 1;
        let ns = format!("{}h{i}", self.prefix);
        let port = format!("p{i}");
        let ipv4: Ipv4Addr = parse_cidr(ipv4_cidr);
        let ipv6: Option<Ipv6Addr> = ipv6_cidr.map(parse_cidr);
        netns_add(&ns);
        self.hosts.push(ns.clone());
        // Before eth0 exists, so it inherits the defaults.
        sysctl_in(
            &ns,
            &[
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.default.router_solicitations", "0"),
            ],
        );
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let host = Host {
            mac: String::new(),
            ns,
            ifname: "eth0".to_owned(),
            port,
            ipv4,
            ipv6,
        };
        self.plug(&host, ipv4_cidr, ipv6_cidr);
        let mac = host.link_mac();
        Host { mac, ..host }
    }

    /// Creates the host's `eth0` (a veth pair with its lan port in `br0`) with its addresses,
    /// and waits until it has carrier and its port forwards.
    fn plug(&self, host: &Host, ipv4_cidr: &str, ipv6_cidr: Option<&str>) {
        let (ns, port) = (&host.ns, &host.port);
        ip(&[
            "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns",
            &self.ns,
        ]);
        ip(&["-n", &self.ns, "link", "set", port, "master", "br0", "up"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "addr", "add", ipv4_cidr, "dev", "eth0"]);
        if let Some(v6) = ipv6_cidr {
            ip(&["-n", ns, "addr", "add", v6, "dev", "eth0", "nodad"]);
        }
        wait_until(SETUP_TIMEOUT, "eth0 of a host to come up", || {
            let link = ip(&["-n", ns, "-o", "link", "show", "eth0"]);
            let forwarding = ip(&["-n", &self.ns, "-d", "-o", "link", "show", port])
                .contains("bridge_slave state forwarding");
            (link.contains("LOWER_UP") && forwarding).then_some(())
        });
    }

    /// Deletes the host's `eth0` (its addresses go with it) and creates it again, plugged in,
    /// with `ipv4_cidr` and `ipv6_cidr`: an interface recreated under the same name, with a new
    /// index and a new MAC address (returned).
    pub fn replug(&self, host: &Host, ipv4_cidr: &str, ipv6_cidr: Option<&str>) -> String {
        // Deleted already, or deleted now.
        let _ = host.try_run(&["ip", "link", "del", "eth0"]);
        self.plug(host, ipv4_cidr, ipv6_cidr);
        host.link_mac()
    }

    /// Plugs (`up`) or unplugs the host's cable: sets the lan-side end of its veth up or down.
    /// The host's `eth0` loses carrier too (veth) but keeps its addresses.
    pub fn set_port(&self, host: &Host, up: bool) {
        ip(&[
            "-n",
            &self.ns,
            "link",
            "set",
            &host.port,
            if up { "up" } else { "down" },
        ]);
    }

    /// Isolates (`on`) the host's bridge port or lifts that: isolated ports reach only the
    /// ports that are not isolated (`bridge link set dev pN isolated on`), so isolating two
    /// hosts splits them from each other while a third, non-isolated host still reaches both.
    pub fn set_isolated(&self, host: &Host, on: bool) {
        ip(&[
            "-n",
            &self.ns,
            "link",
            "set",
            "dev",
            &host.port,
            "type",
            "bridge_slave",
            "isolated",
            if on { "on" } else { "off" },
        ]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.ns)) {
            kill_all_in(ns);
        }
        for ns in self.hosts.iter().chain(std::iter::once(&self.ns)) {
            destroy_namespace(ns);
        }
    }
}

/// A host on a [`Lan`]: a namespace with one interface, `eth0`.
///
/// Only data: cloning it is fine, and it does not keep the lan alive.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host's namespace (for `ip netns exec` / `ip -n`).
    pub ns: String,
    /// Its interface: `eth0`.
    pub ifname: String,
    /// The MAC address of `eth0`, lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The IPv4 address given to [`Lan::add_host`].
    pub ipv4: Ipv4Addr,
    /// The IPv6 address given to [`Lan::add_host`], if any.
    pub ipv6: Option<Ipv6Addr>,
    /// The lan-side end of the veth, a port of `br0` in the lan's namespace.
    pub port: String,
}

impl Host {
    /// `ip netns exec <ns> <program>`: add arguments and run it. iproute2 execs the program, so
    /// a spawned child's pid is the program's.
    pub fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }

    /// Runs `args` in the namespace; `Err` carries the exit status and stderr.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let (program, rest) = args.split_first().expect("a program to run");
        let out = self
            .cmd(program)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .expect("run ip netns exec");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{args:?} in {} failed ({}): {}",
                self.ns,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs `args` in the namespace and returns its stdout; panics with its stderr on failure.
    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sets sysctl `key` (e.g. `net.ipv4.conf.eth0.arp_accept`) to `value` in the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        sysctl_in(&self.ns, &[(key, value)]);
    }

    /// Sets `net.ipv4.neigh.eth0.locktime`: for this long after an ARP entry changed, ARP
    /// replies that would change it again are ignored (the kernel's default is 1 s; gratuitous
    /// ARP overrides it on Linux ≥ 4.11 anyway). Resolution: 10 ms.
    pub fn set_neigh_locktime(&self, t: Duration) {
        let centis = (t.as_millis() / 10).to_string();
        self.sysctl(&format!("net.ipv4.neigh.{}.locktime", self.ifname), &centis);
    }

    fn link_mac(&self) -> String {
        let link = ip(&["-n", &self.ns, "-o", "link", "show", &self.ifname]);
        let mut words = link.split_whitespace();
        words
            .find(|w| *w == "link/ether")
            .and_then(|_| words.next())
            .unwrap_or_else(|| panic!("no MAC address in: {link}"))
            .to_owned()
    }

    /// Every address on `eth0` (IPv4, IPv6 including link-local and tentative ones).
    pub fn addresses(&self) -> Vec<IpAddr> {
        let out = ip(&["-n", &self.ns, "-o", "addr", "show", "dev", &self.ifname]);
        // "2: eth0    inet 192.0.2.1/24 brd 192.0.2.255 scope global eth0\       valid_lft …"
        out.lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|w| *w == "inet" || *w == "inet6")?;
                let cidr = words.next()?;
                cidr.split_once('/').map_or(cidr, |(a, _)| a).parse().ok()
            })
            .collect()
    }

    /// Whether `ip` is on `eth0`.
    pub fn has_address(&self, ip: IpAddr) -> bool {
        self.addresses().contains(&ip)
    }

    /// The link-local IPv6 address of `eth0`, if it has one.
    pub fn link_local_ipv6(&self) -> Option<Ipv6Addr> {
        self.addresses().into_iter().find_map(|a| match a {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(v6),
            _ => None,
        })
    }

    /// Sets `eth0` up or down (down removes its routes; the addresses stay).
    pub fn set_link(&self, up: bool) {
        ip(&[
            "-n",
            &self.ns,
            "link",
            "set",
            &self.ifname,
            if up { "up" } else { "down" },
        ]);
    }

    /// The MAC address the neighbour table of this host maps `ip` to on `eth0` (any state but
    /// FAILED/INCOMPLETE), if any.
    pub fn neigh_lladdr(&self, ip: IpAddr) -> Option<String> {
        let out = ip_neigh_show(&self.ns, &self.ifname, ip);
        let mut words = out.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_owned)
    }

    /// One ping (`ping -c 1`) of `ip`: whether a reply came within `timeout`. A link-local
    /// IPv6 address is pinged through `eth0`.
    pub fn ping(&self, ip: IpAddr, timeout: Duration) -> bool {
        require_program("ping", "iputils-ping");
        let wait = format!("{:.3}", timeout.as_secs_f64().max(0.001));
        let mut cmd = self.cmd("ping");
        cmd.args(["-n", "-q", "-c", "1", "-W", &wait]);
        if matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
            cmd.args(["-I", &self.ifname]);
        }
        cmd.arg(ip.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // ping bounds itself with -W; the extra second is only against a stuck ping.
        run_bounded(cmd, timeout + Duration::from_secs(1)).is_some_and(|s| s.success())
    }

    /// Starts `binary` with `args` (and `RUST_LOG=info` plus `env`) inside the namespace, as a
    /// [`Daemon`]: its output is captured and printed if the test fails, it is killed when the
    /// `Daemon` drops, and in any case when the [`Lan`] drops.
    pub fn spawn(&self, binary: &Path, args: &[String], env: &[(&str, &str)]) -> Daemon {
        if binary.components().count() > 1 {
            assert!(
                binary.is_file(),
                "{} does not exist (run cargo build --bins first)",
                binary.display()
            );
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(binary)
            .args(args)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let name = binary
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Daemon::spawn(format!("{name} in {}", self.ns), cmd)
    }

    /// Starts watching this host's neighbour (ARP/NDP) table; see [`NeighMonitor`].
    pub fn monitor_neigh(&self) -> NeighMonitor {
        NeighMonitor::start(self)
    }
}

fn ip_neigh_show(ns: &str, ifname: &str, ip: IpAddr) -> String {
    let ip = ip.to_string();
    self::ip(&["-n", ns, "neigh", "show", "to", &ip, "dev", ifname])
}

/// Runs `cmd`, killing it if it has not exited after `timeout`; `None` if it was killed.
fn run_bounded(mut cmd: Command, timeout: Duration) -> Option<ExitStatus> {
    let mut child = cmd.spawn().expect("spawn a command");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a command") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A neighbour entry that [`NeighMonitor::start`] adds and deletes to learn that the monitor
/// is subscribed. Its lines are never reported.
const MARKER: &str = "fe80::f00d:f00d:f00d:f00d";

/// `ip monitor neigh` in a host's namespace: every change of its neighbour table, as a line
/// like `192.0.2.100 dev eth0 lladdr aa:bb:cc:dd:ee:ff STALE`, with the [`Instant`] a reader
/// thread received it. Killed on drop.
#[derive(Debug)]
pub struct NeighMonitor {
    child: Child,
    rx: Receiver<(Instant, String)>,
    reader: Option<JoinHandle<()>>,
    /// Every line received so far.
    seen: RefCell<Vec<(Instant, String)>>,
    /// Index in `seen` after the last line `wait_for` returned.
    cursor: Cell<usize>,
}

impl NeighMonitor {
    /// Starts the monitor and returns once it is subscribed: changes from now on are seen.
    pub fn start(host: &Host) -> Self {
        let mut child = Command::new("ip")
            .args(["-n", &host.ns, "monitor", "neigh"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ip monitor neigh");
        let stdout = child.stdout.take().expect("ip monitor stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let monitor = Self {
            child,
            rx,
            reader: Some(reader),
            seen: RefCell::new(Vec::new()),
            cursor: Cell::new(0),
        };
        // ip may not have subscribed yet: change a dummy entry until a change shows up.
        let dev = host.ifname.as_str();
        let deadline = Instant::now() + SETUP_TIMEOUT;
        'subscribed: loop {
            assert!(
                Instant::now() < deadline,
                "ip monitor neigh in {} reported nothing within {SETUP_TIMEOUT:?}",
                host.ns
            );
            ip(&[
                "-n",
                &host.ns,
                "neigh",
                "replace",
                MARKER,
                "lladdr",
                "02:00:00:00:00:01",
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
            ip(&["-n", &host.ns, "neigh", "del", MARKER, "dev", dev]);
            let round = Instant::now() + Duration::from_millis(200);
            while let Some(wait) = round.checked_duration_since(Instant::now()) {
                match monitor.rx.recv_timeout(wait) {
                    Ok((_, line)) if line.contains(MARKER) => break 'subscribed,
                    Ok(_) => {}
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        panic!("ip monitor neigh in {} exited", host.ns)
                    }
                }
            }
        }
        monitor
    }

    /// Receives lines until `deadline` or until `stop` returns true for one; marker lines are
    /// dropped.
    fn receive_until(&self, deadline: Instant, mut stop: impl FnMut(&str) -> bool) {
        while let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(wait) {
                Ok((_, line)) if line.contains(MARKER) => {}
                Ok((at, line)) => {
                    let done = stop(&line);
                    self.seen.borrow_mut().push((at, line));
                    if done {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// The first line not returned before (from the start of the monitor on, including lines
    /// that did not match earlier calls) for which `predicate` holds, with the instant it was
    /// read; `None` if none came within `timeout`. Returning a line moves past it.
    pub fn wait_for(
        &self,
        timeout: Duration,
        predicate: impl Fn(&str) -> bool,
    ) -> Option<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        let start = self.cursor.get();
        let found = |seen: &[(Instant, String)]| {
            seen.iter()
                .enumerate()
                .skip(start)
                .find(|(_, (_, l))| predicate(l))
                .map(|(i, hit)| (i, hit.clone()))
        };
        let mut hit = found(&self.seen.borrow());
        if hit.is_none() {
            self.receive_until(deadline, |l| predicate(l));
            hit = found(&self.seen.borrow());
        }
        let (i, hit) = hit?;
        self.cursor.set(i + 1);
        Some(hit)
    }

    /// Every line received so far (after draining what is pending), for assertion messages.
    pub fn lines(&self) -> Vec<String> {
        while let Ok((at, line)) = self.rx.try_recv() {
            if !line.contains(MARKER) {
                self.seen.borrow_mut().push((at, line));
            }
        }
        self.seen.borrow().iter().map(|(_, l)| l.clone()).collect()
    }
}

impl Drop for NeighMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
