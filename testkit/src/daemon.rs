//! One of our binaries as a child process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::NamedTempFile;

use crate::wait_until;

/// A running binary; killed on drop, its output printed when the test failed.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: NamedTempFile,
}

impl Daemon {
    /// Starts `binary` with `args` and extra environment `env`.
    pub fn start(binary: &Path, args: &[String], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(binary);
        cmd.args(args).env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let name = binary
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Self::spawn_with_hint(name, cmd, " (run cargo build --bins first)")
    }

    /// Starts the workspace's `fedplane-dns` serving `zone` from `etcd` on a free loopback
    /// port, for tests of other packages, and waits (bounded by `timeout`) until it is ready.
    /// Returns it and its DNS port.
    pub fn fedplane_dns(etcd: &crate::Etcd, zone: &str, timeout: Duration) -> (Self, u16) {
        Self::fedplane_dns_with(etcd, zone, &[], timeout)
    }

    /// As [`fedplane_dns`](Self::fedplane_dns), with `extra` flags (e.g. `--topology FILE`).
    pub fn fedplane_dns_with(
        etcd: &crate::Etcd,
        zone: &str,
        extra: &[String],
        timeout: Duration,
    ) -> (Self, u16) {
        let port = crate::free_port();
        let http = format!("127.0.0.1:{}", crate::free_port());
        let mut args = vec![
            "--zone".into(),
            zone.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--http".into(),
            http.clone(),
            "--etcd-endpoints".into(),
            etcd.endpoint(),
        ];
        args.extend_from_slice(extra);
        let dns = Self::start(&crate::workspace_bin("fedplane-dns"), &args, &[]);
        wait_until(timeout, "fedplane-dns ready", || {
            http_get(&http, "/readyz").filter(|(c, _)| *c == 200)
        });
        (dns, port)
    }

    /// Starts a prepared command (program, arguments, environment and working directory as
    /// set by the caller); its standard input is null and its stdout and stderr go to the log.
    /// `name` heads the output printed when the test fails.
    pub fn spawn(name: impl Into<String>, cmd: Command) -> Self {
        Self::spawn_with_hint(name.into(), cmd, "")
    }

    fn spawn_with_hint(name: String, mut cmd: Command, hint: &str) -> Self {
        let log = NamedTempFile::new().expect("daemon log file");
        // One open file for both streams, so stdout and stderr share an offset and do not
        // overwrite each other.
        let out = log.reopen().expect("reopen daemon log");
        let err = out.try_clone().expect("clone daemon log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}{hint}",
                cmd.get_program().to_string_lossy()
            )
        });
        Self {
            name,
            child: Some(child),
            log,
        }
    }

    /// Whether the process is still running (it is reaped if it has exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal (`TERM`, `STOP`, `CONT`, …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("process running");
        let status = wait_until(timeout, "the process to exit", || {
            child.try_wait().ok().flatten()
        });
        self.child = None;
        status
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} output ---\n{}", self.name, self.output());
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: (status code, body). `None` if nothing listens.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((code, body))
}
