//! A real etcd server for one test ([`Etcd`]), or a cluster of several members
//! ([`EtcdCluster`]) whose members can be killed or frozen one at a time.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, require_program, wait_until};

/// An etcd process with its own data dir and ports; killed on drop.
#[derive(Debug)]
pub struct Etcd {
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    tls: bool,
    /// This member's name and the `--initial-cluster` list (one member: itself).
    name: String,
    initial_cluster: String,
    /// Uniquely names the cluster, so members of parallel tests never join each other.
    token: String,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts etcd serving clients over TLS and requiring client certificates, with a CA,
    /// server and client certificate made by openssl in its data dir (see [`Etcd::tls_file`]).
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        require_program("etcd", "etcd-server");
        require_program("etcdctl", "etcd-client");
        let mut e = Self::unstarted("test", tls);
        if tls {
            e.make_certificates();
        }
        // A port picked free can still be taken before etcd binds it (another test's server):
        // then etcd exits at once saying so, and it is started again on other ports.
        for attempt in 1.. {
            e.initial_cluster = format!("test={}", e.peer_url());
            e.spawn_unchecked();
            let exited = wait_until(Duration::from_secs(20), "etcd to answer", || {
                if !e.is_running() {
                    return Some(true);
                }
                e.try_ctl(&["endpoint", "health"]).ok().map(|_| false)
            });
            if !exited {
                break;
            }
            let log = std::fs::read_to_string(e.dir.path().join("etcd.log")).unwrap_or_default();
            assert!(
                attempt < 3 && log.contains("address already in use"),
                "etcd exited at start (attempt {attempt})"
            );
            e.child = None;
            let _ = std::fs::remove_dir_all(e.dir.path().join("data"));
            e.client_port = free_port();
            e.peer_port = free_port();
        }
        e
    }

    fn unstarted(name: &str, tls: bool) -> Self {
        // On tmpfs when there is one: etcd fsyncs every write, and on a disk shared with
        // builds and other tests a sync can take seconds (past etcdctl's 5 s timeout).
        let shm = std::path::Path::new("/dev/shm");
        let dir = tempfile::Builder::new()
            .prefix("fedplane-etcd-")
            .tempdir_in(shm)
            .or_else(|_| tempfile::tempdir())
            .expect("temp dir for etcd");
        let token = format!(
            "fedplane-test-{}",
            dir.path()
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        );
        Self {
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
            tls,
            name: name.to_owned(),
            initial_cluster: String::new(),
            token,
        }
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// Path of a TLS file: `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`.
    pub fn tls_file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn make_certificates(&self) {
        require_program("openssl", "openssl");
        let d = self.dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(d)
                .args(args)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=fedplane-test-ca",
            ],
        ]
        .concat());
        for (who, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
            ),
            ("client", "extendedKeyUsage=clientAuth"),
        ] {
            let key = format!("{who}.key");
            let csr = format!("{who}.csr");
            let pem = format!("{who}.pem");
            let extfile = format!("{who}.ext");
            std::fs::write(d.join(&extfile), ext).expect("ext file");
            run(&[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ]);
        }
    }

    fn spawn(&mut self) {
        self.spawn_unchecked();
        wait_until(Duration::from_secs(20), "etcd to answer", || {
            self.try_ctl(&["endpoint", "health"]).ok()
        });
    }

    /// Starts the process without waiting for it to answer (a cluster member answers only once
    /// a quorum of members runs).
    fn spawn_unchecked(&mut self) {
        let client = self.endpoint();
        let peer = self.peer_url();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let mut cmd = Command::new("etcd");
        if self.tls {
            cmd.arg(format!("--cert-file={}", self.tls_file("server.pem")))
                .arg(format!("--key-file={}", self.tls_file("server.key")))
                .arg(format!("--trusted-ca-file={}", self.tls_file("ca.pem")))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg(format!("--name={}", self.name))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg(format!("--initial-cluster-token={}", self.token))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Every key under `prefix` with its value and mod revision, in key order.
    pub fn dump(&self, prefix: &str) -> Vec<(String, String, i64)> {
        let out = self.ctl(&["get", "--prefix", prefix, "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl JSON output");
        // etcdctl's JSON output base64-encodes keys and values.
        let text = |s: &serde_json::Value| {
            String::from_utf8(base64_decode(s.as_str().unwrap_or_default())).expect("UTF-8")
        };
        let mut kvs: Vec<(String, String, i64)> = v["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let rev = kv["mod_revision"].as_i64().unwrap_or_default();
                (text(&kv["key"]), text(&kv["value"]), rev)
            })
            .collect();
        kvs.sort();
        kvs
    }

    /// Kills etcd (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // a frozen etcd must be thawed to die cleanly
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the etcd process is still running (not stopped, not exited).
    fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process ID (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Freezes (`STOP`) or thaws (`CONT`) etcd: connections stay open, nothing is answered, as
    /// with a member cut off by a network partition.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("etcd running").id();
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} etcd failed");
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Replaces etcd with a new, empty cluster on the same ports (as a restore or a wrong
    /// endpoint would): new cluster ID, history from revision 1.
    pub fn wipe_and_restart(&mut self) {
        self.stop();
        std::fs::remove_dir_all(self.dir.path().join("data")).expect("remove etcd data");
        self.spawn();
    }

    /// Runs etcdctl against this server; `Err` carries its stderr.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=5s")
            .args(if self.tls {
                vec![
                    format!("--cacert={}", self.tls_file("ca.pem")),
                    format!("--cert={}", self.tls_file("client.pem")),
                    format!("--key={}", self.tls_file("client.key")),
                ]
            } else {
                Vec::new()
            })
            .args(args)
            .output()
            .expect("run etcdctl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs etcdctl and panics on failure.
    pub fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("etcdctl {args:?} failed: {e}"))
    }

    /// Puts one key.
    pub fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", key, "--", value]);
    }

    /// Deletes one key.
    pub fn del(&self, key: &str) {
        self.ctl(&["del", key]);
    }

    /// The current store revision.
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&["endpoint", "status", "-w", "fields"]);
        out.lines()
            .find_map(|l| l.strip_prefix("\"Revision\" : "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no revision in etcdctl output: {out}"))
    }

    /// Compacts history up to the current revision.
    pub fn compact(&self) {
        let rev = self.revision().to_string();
        self.ctl(&["compact", &rev, "--physical"]);
    }

    /// Grants a lease of `ttl` seconds and returns its hex ID as etcdctl prints it.
    pub fn lease_grant(&self, ttl: u32) -> String {
        let out = self.ctl(&["lease", "grant", &ttl.to_string()]);
        // "lease 694d7a5a1e8e3b04 granted with TTL(60s)"
        out.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected lease output: {out}"))
            .to_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.path().join("etcd.log"))
        {
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("--- etcd log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// An etcd cluster of several members on loopback, each with its own ports and data dir;
/// every member is killed on drop. Members can be killed or frozen one at a time, as a crashed
/// or partitioned member would be.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Etcd>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until every one answers. A port picked for a member can be
    /// taken by another process before the member binds it (tests run in parallel, and
    /// outgoing connections take ports of the same range): a member that exits while the
    /// cluster starts (etcd exits when it cannot bind) makes the whole cluster start again on
    /// new ports, up to three times.
    pub fn start(n: usize) -> Self {
        require_program("etcd", "etcd-server");
        require_program("etcdctl", "etcd-client");
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(n) {
                Ok(cluster) => return cluster,
                Err(why) => last = why,
            }
        }
        panic!("an etcd cluster of {n} did not start in three attempts: {last}");
    }

    fn try_start(n: usize) -> Result<Self, String> {
        let mut members: Vec<Etcd> = (0..n)
            .map(|i| Etcd::unstarted(&format!("m{i}"), false))
            .collect();
        let token = members[0].token.clone();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster.clone_from(&initial);
            m.token.clone_from(&token);
            m.spawn_unchecked();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for i in 0..members.len() {
            loop {
                if members[i].try_ctl(&["endpoint", "health"]).is_ok() {
                    break;
                }
                if let Some(gone) = members.iter_mut().position(|m| !m.is_running()) {
                    return Err(format!(
                        "member m{gone} exited while the cluster started (a port taken?)"
                    ));
                }
                if std::time::Instant::now() > deadline {
                    return Err("a member did not answer within 30 s".into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(Self { members })
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> &Etcd {
        &self.members[i]
    }

    /// Kills member `i` (as a crash would); the others keep the quorum.
    pub fn kill(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// Starts member `i` again on its ports and data (killing it first if it runs) and waits
    /// until it answers.
    pub fn restart(&mut self, i: usize) {
        self.members[i].restart();
    }

    /// Every member's client URL, comma separated, in member order.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Etcd::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Standard base64 (padding optional), as etcdctl prints it.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            _ => 63,
        }
    };
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(super::base64_decode("L3NreWRucy9h"), b"/skydns/a");
        assert_eq!(super::base64_decode("eyJ9"), b"{\"}");
        assert_eq!(super::base64_decode("YQ=="), b"a");
        assert_eq!(super::base64_decode("YWI="), b"ab");
    }
}
