//! A real keepalived (Debian `keepalived`, 2.2.x) running VRRP inside a [`Host`]'s namespace:
//! the reference implementation to test our VRRP speaker against.
//!
//! keepalived runs as two processes: the parent (whose pid [`Daemon`] knows) and its VRRP child.
//! The child dies with `SIGTERM` when the parent dies (`PR_SET_PDEATHSIG`) and then shuts down
//! cleanly (priority-0 advert, VIPs removed), so killing the parent is *not* a crash; use
//! [`Keepalived::crash`] for that. keepalived is started with `--dont-respawn` so that a killed
//! child is not restarted.

use std::net::IpAddr;
use std::process::ExitStatus;
use std::time::Duration;

use tempfile::TempDir;

use crate::netns::Host;
use crate::{Daemon, require_program, wait_until};

/// How one keepalived VRRP instance is configured.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepalivedOptions {
    /// VRRP version, 2 or 3 (`vrrp_version`).
    pub version: u8,
    /// Virtual router ID (`virtual_router_id`), 1–255.
    pub vrid: u8,
    /// Priority, 1–255 (255: address owner).
    pub priority: u8,
    /// Advertisement interval in seconds: whole seconds for v2; for v3 a multiple of 0.01 up to
    /// 40.95 (e.g. 0.1).
    pub advert_int: f64,
    /// The virtual addresses with prefix (`"192.0.2.100/24"`); one address family per
    /// instance (IPv6 needs version 3).
    pub vips: Vec<String>,
    /// `nopreempt` (needs `state_backup`).
    pub nopreempt: bool,
    /// Initial state BACKUP (`true`) or MASTER.
    pub state_backup: bool,
    /// The interface VRRP runs on.
    pub interface: String,
    /// Unicast peers (`unicast_peer`); empty for multicast (224.0.0.18 / ff02::12).
    pub unicast_peers: Vec<String>,
    /// `vrrp_garp_master_delay`: seconds after becoming master before a second burst of
    /// gratuitous ARPs (keepalived's default is 5; 0 disables it).
    pub garp_master_delay: u32,
    /// `vrrp_garp_master_repeat`: gratuitous ARPs per burst (keepalived's default is 5).
    pub garp_master_repeat: u32,
    /// VRRP v2 password (`authentication { auth_type PASS auth_pass ... }`); keepalived
    /// uses at most 8 bytes of it.
    pub auth_pass: Option<String>,
    /// Extra lines copied into the `vrrp_instance` block as they are (e.g. `"accept"`).
    pub extra: Vec<String>,
}

impl Default for KeepalivedOptions {
    fn default() -> Self {
        Self {
            version: 3,
            vrid: 51,
            priority: 100,
            advert_int: 1.0,
            vips: Vec::new(),
            nopreempt: false,
            state_backup: true,
            interface: "eth0".to_owned(),
            unicast_peers: Vec::new(),
            garp_master_delay: 1,
            garp_master_repeat: 3,
            auth_pass: None,
            extra: Vec::new(),
        }
    }
}

impl KeepalivedOptions {
    /// The configuration file for host `router_id`. Panics on options keepalived would reject
    /// or silently change.
    pub fn config(&self, router_id: &str) -> String {
        assert!(
            self.version == 2 || self.version == 3,
            "VRRP version must be 2 or 3, not {}",
            self.version
        );
        assert!(self.vrid >= 1, "virtual_router_id must be 1-255");
        assert!(self.priority >= 1, "priority must be 1-255");
        let centis = self.advert_int * 100.0;
        if self.version == 2 {
            assert!(
                self.advert_int >= 1.0 && self.advert_int.fract() == 0.0,
                "VRRPv2 advert_int must be whole seconds, not {}",
                self.advert_int
            );
        } else {
            assert!(
                (1.0..=4095.0).contains(&centis) && (centis - centis.round()).abs() < 1e-6,
                "VRRPv3 advert_int must be a multiple of 0.01 s up to 40.95 s, not {}",
                self.advert_int
            );
        }
        assert!(
            !self.nopreempt || self.state_backup,
            "keepalived ignores nopreempt unless the initial state is BACKUP"
        );
        assert!(
            !self.vips.is_empty(),
            "a VRRP instance needs at least one VIP"
        );

        let mut c = String::new();
        let mut line = |s: &str| {
            c.push_str(s);
            c.push('\n');
        };
        line("global_defs {");
        line(&format!("    router_id {router_id}"));
        line(&format!("    vrrp_version {}", self.version));
        line(&format!(
            "    vrrp_garp_master_delay {}",
            self.garp_master_delay
        ));
        line(&format!(
            "    vrrp_garp_master_repeat {}",
            self.garp_master_repeat
        ));
        line("}");
        line(&format!("vrrp_instance VI_{} {{", self.vrid));
        line(&format!(
            "    state {}",
            if self.state_backup {
                "BACKUP"
            } else {
                "MASTER"
            }
        ));
        line(&format!("    interface {}", self.interface));
        line(&format!("    virtual_router_id {}", self.vrid));
        line(&format!("    priority {}", self.priority));
        line(&format!("    advert_int {}", self.advert_int));
        if self.nopreempt {
            line("    nopreempt");
        }
        if let Some(pass) = &self.auth_pass {
            assert!(
                self.version == 2,
                "keepalived authenticates VRRP v2 only (v3 ignores authentication)"
            );
            assert!(
                !pass.is_empty() && !pass.contains(char::is_whitespace),
                "auth_pass must be one non-empty word"
            );
            line("    authentication {");
            line("        auth_type PASS");
            line(&format!("        auth_pass {pass}"));
            line("    }");
        }
        if !self.unicast_peers.is_empty() {
            line("    unicast_peer {");
            for p in &self.unicast_peers {
                line(&format!("        {p}"));
            }
            line("    }");
        }
        line("    virtual_ipaddress {");
        for v in &self.vips {
            line(&format!("        {v}"));
        }
        line("    }");
        for e in &self.extra {
            line(&format!("    {e}"));
        }
        line("}");
        c
    }
}

/// keepalived running one VRRP instance in a host's namespace, with its own config and pid
/// files in a temporary directory. Killed on drop (and by the [`crate::netns::Lan`]'s drop).
#[derive(Debug)]
pub struct Keepalived {
    daemon: Daemon,
    dir: TempDir,
    host: Host,
    opts: KeepalivedOptions,
}

impl Keepalived {
    /// Starts `keepalived --dont-fork --log-console --log-detail --no-syslog --vrrp
    /// --dont-respawn` in `host`'s namespace with `opts`. Returns at once; wait with
    /// [`Keepalived::wait_state`] or on the VIPs.
    pub fn start(host: &Host, opts: &KeepalivedOptions) -> Self {
        require_program("keepalived", "keepalived");
        let dir = tempfile::tempdir().expect("temp dir for keepalived");
        let conf = dir.path().join("keepalived.conf");
        std::fs::write(&conf, opts.config(&host.ns)).expect("write keepalived.conf");
        let path = |f: &str| dir.path().join(f).display().to_string();
        let mut cmd = host.cmd("keepalived");
        cmd.args([
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
            "--dont-respawn",
        ])
        .arg(format!("--use-file={}", conf.display()))
        .arg(format!("--pid={}", path("keepalived.pid")))
        .arg(format!("--vrrp_pid={}", path("vrrp.pid")))
        .arg(format!("--checkers_pid={}", path("checkers.pid")))
        .current_dir(dir.path());
        let daemon = Daemon::spawn(format!("keepalived in {}", host.ns), cmd);
        Self {
            daemon,
            dir,
            host: host.clone(),
            opts: opts.clone(),
        }
    }

    /// The options it was started with.
    pub fn options(&self) -> &KeepalivedOptions {
        &self.opts
    }

    /// The configuration file it runs.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keepalived.conf")).unwrap_or_default()
    }

    /// The parent process's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The VRRP child's pid, once keepalived has written it (bounded wait).
    pub fn vrrp_pid(&self) -> u32 {
        let file = self.dir.path().join("vrrp.pid");
        wait_until(
            Duration::from_secs(10),
            "keepalived to write its VRRP pid file",
            || {
                std::fs::read_to_string(&file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
            },
        )
    }

    /// Whether `ip` is on the host's interface (which is how keepalived shows it is master).
    pub fn holds(&self, ip: IpAddr) -> bool {
        self.host.has_address(ip)
    }

    /// Whether every configured VIP is on the host's interface.
    pub fn holds_vips(&self) -> bool {
        let have = self.host.addresses();
        self.opts.vips.iter().all(|v| {
            let addr = v.split_once('/').map_or(v.as_str(), |(a, _)| a);
            addr.parse().is_ok_and(|a: IpAddr| have.contains(&a))
        })
    }

    /// The state keepalived last logged entering (`"MASTER"`, `"BACKUP"`, `"FAULT"`), if any.
    pub fn last_state(&self) -> Option<String> {
        let out = self.output();
        let (_, rest) = out.rsplit_once("Entering ")?;
        let state = rest.split_whitespace().next()?;
        Some(state.to_owned())
    }

    /// Waits (bounded) until keepalived has logged entering `state` last.
    pub fn wait_state(&self, state: &str, timeout: Duration) {
        wait_until(
            timeout,
            &format!("keepalived in {} to enter {state}", self.host.ns),
            || (self.last_state().as_deref() == Some(state)).then_some(()),
        );
    }

    /// Everything keepalived logged so far.
    pub fn output(&self) -> String {
        self.daemon.output()
    }

    /// Sends a signal to the parent process (`HUP` reloads, `TERM` stops cleanly; `KILL` makes
    /// the VRRP child stop cleanly too, see the module doc).
    pub fn signal(&self, sig: &str) {
        self.daemon.signal(sig);
    }

    /// Stops keepalived cleanly (`SIGTERM`): it sends a priority-0 advertisement and removes
    /// its VIPs. Waits (bounded) for it to exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.daemon.signal("TERM");
        self.daemon.wait_exit(Duration::from_secs(10))
    }

    /// Kills keepalived as a crash would: `SIGKILL` to the VRRP child, then the parent. No
    /// priority-0 advertisement is sent and the VIPs stay on the interface (as on a host that
    /// hangs); the backup takes over after the master-down interval.
    pub fn crash(&mut self) {
        let vrrp = self.vrrp_pid();
        let status = std::process::Command::new("kill")
            .args(["-KILL", &vrrp.to_string()])
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -KILL {vrrp} (keepalived VRRP child) failed"
        );
        // --dont-respawn: the parent exits by itself when it sees the child die.
        if self.daemon.is_running() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.pid().to_string()])
                .status();
        }
        self.daemon.wait_exit(Duration::from_secs(10));
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        // While the parent runs, the pid file names a live child: kill it before the parent
        // (whose death would make it shut down cleanly, slowly).
        if self.daemon.is_running()
            && let Ok(pid) = std::fs::read_to_string(self.dir.path().join("vrrp.pid"))
        {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .stderr(std::process::Stdio::null())
                .status();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- keepalived.conf in {} ---\n{}",
                self.host.ns,
                self.config()
            );
        }
    }
}
