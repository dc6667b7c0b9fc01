//! FRR as the router of BGP tests: zebra, bfdd and bgpd in a host's network namespace
//! (FRR's `-N` pathspace, so several can run at once and none touches the machine's own),
//! peering with every address of a listen range, with ECMP over up to 8 paths into the
//! namespace's kernel table. Stopped, and its directories removed, when dropped.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::netns::Host;
use crate::{require_program, wait_until};

/// How the router peers.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Its AS number.
    pub asn: u32,
    /// Peers are accepted from this range (e.g. `10.0.0.0/24`), in AS `peer_asn`.
    pub listen_range: String,
    /// The peers' AS number.
    pub peer_asn: u32,
    /// BFD with 100 ms × 3.
    pub bfd: bool,
    /// Keepalive and hold time, seconds.
    pub timers: (u16, u16),
}

/// A running FRR.
#[derive(Debug)]
pub struct Frr {
    ns: String,
    pathspace: PathBuf,
    etc: PathBuf,
    log: PathBuf,
}

fn chown_frr(path: &std::path::Path) {
    let status = Command::new("chown")
        .args(["-R", "frr:frr"])
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown frr {}", path.display());
}

impl Frr {
    /// Starts FRR in `host`'s namespace with `cfg`; returns once bgpd answers vtysh.
    pub fn start(host: &Host, cfg: &RouterConfig) -> Self {
        require_program("/usr/lib/frr/bgpd", "frr");
        let ns = host.ns.clone();
        let pathspace = PathBuf::from(format!("/var/run/frr/{ns}"));
        let etc = PathBuf::from(format!("/etc/frr/{ns}"));
        for d in [&pathspace, &etc] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).expect("FRR directory");
        }
        let log = pathspace.join("frr.log");
        let bfd = if cfg.bfd {
            " neighbor NODES bfd\n neighbor NODES bfd profile fast\n"
        } else {
            ""
        };
        let conf = format!(
            "frr defaults datacenter\nhostname {ns}\nlog file {}\n!\n\
             bfd\n profile fast\n  detect-multiplier 3\n  receive-interval 100\n  transmit-interval 100\n !\n!\n\
             router bgp {asn}\n bgp router-id {rid}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n\
             neighbor NODES peer-group\n neighbor NODES remote-as {peer}\n neighbor NODES timers {k} {h}\n{bfd}\
             bgp listen range {range} peer-group NODES\n\
             address-family ipv4 unicast\n  neighbor NODES activate\n  maximum-paths 8\n exit-address-family\n!\n",
            log.display(),
            asn = cfg.asn,
            rid = host.ipv4,
            peer = cfg.peer_asn,
            k = cfg.timers.0,
            h = cfg.timers.1,
            range = cfg.listen_range,
        );
        let conf_path = etc.join("frr.conf");
        std::fs::write(&conf_path, conf).expect("frr.conf");
        std::fs::write(etc.join("vtysh.conf"), "").expect("vtysh.conf");
        chown_frr(&pathspace);
        chown_frr(&etc);
        host.sysctl("net.ipv4.ip_forward", "1");
        host.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
        for daemon in ["zebra", "bfdd", "bgpd"] {
            let status = host
                .cmd(&format!("/usr/lib/frr/{daemon}"))
                .args(["-N", &ns, "-d", "-f"])
                .arg(&conf_path)
                .arg("-i")
                .arg(pathspace.join(format!("{daemon}.pid")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("start an FRR daemon");
            assert!(status.success(), "FRR {daemon} did not start in {ns}");
        }
        let frr = Self {
            ns,
            pathspace,
            etc,
            log,
        };
        wait_until(Duration::from_secs(15), "FRR's bgpd to answer", || {
            frr.try_vtysh("show bgp summary json").ok()
        });
        frr
    }

    fn try_vtysh(&self, cmd: &str) -> Result<String, String> {
        let out = Command::new("vtysh")
            .args(["-N", &self.ns, "-c", cmd])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs a vtysh command in this FRR.
    pub fn vtysh(&self, cmd: &str) -> String {
        self.try_vtysh(cmd)
            .unwrap_or_else(|e| panic!("vtysh {cmd:?}: {e}\n{}", self.log()))
    }

    /// FRR's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next hops of the kernel route to `dest` in the router's namespace (empty: no
    /// route), as the client's packets use them.
    pub fn nexthops(&self, dest: IpAddr) -> BTreeSet<IpAddr> {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "-j", "route", "show", &dest.to_string()])
            .output()
            .expect("ip route");
        let routes: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let mut hops = BTreeSet::new();
        for r in routes.as_array().into_iter().flatten() {
            if let Some(g) = r["gateway"].as_str().and_then(|g| g.parse().ok()) {
                hops.insert(g);
            }
            for n in r["nexthops"].as_array().into_iter().flatten() {
                if let Some(g) = n["gateway"].as_str().and_then(|g| g.parse().ok()) {
                    hops.insert(g);
                }
            }
        }
        hops
    }

    /// Waits until the route to `dest` has exactly `want` as next hops, within `timeout`.
    pub fn await_nexthops(&self, dest: IpAddr, want: &BTreeSet<IpAddr>, timeout: Duration) {
        let found = crate::wait_until_or(timeout, || (self.nexthops(dest) == *want).then_some(()));
        assert!(
            found.is_some(),
            "the router's route to {dest} did not become {want:?} within {timeout:?} (now {:?})\n{}\n{}",
            self.nexthops(dest),
            self.vtysh("show bgp summary"),
            self.log()
        );
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for daemon in ["bgpd", "bfdd", "zebra"] {
            let pidfile = self.pathspace.join(format!("{daemon}.pid"));
            if let Ok(pid) = std::fs::read_to_string(&pidfile) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.pathspace);
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}
