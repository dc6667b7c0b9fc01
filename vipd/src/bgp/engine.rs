//! BIRD run by fedplane-vipd (`bgp.engine: child`): its configuration written and checked
//! (`bird -p`) before use, the daemon started with the parent-death signal (a killed vipd
//! takes its BIRD down, whose sessions then close and withdraw everything), reconfigured in
//! place when the configuration changes (only the sessions whose settings changed restart),
//! restarted if it exits, and asked over its control socket how its sessions are.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tracing::{info, warn};

use super::bird::Reply;

/// How long a control-socket command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long BIRD may take to open its control socket after starting.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the engine cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Writing the configuration or running a program failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// `bird -p` refused the configuration (the old one stays in use).
    #[error("BIRD refused the configuration: {0}")]
    Refused(String),
    /// The control socket did not answer, or answered an error.
    #[error("BIRD's control socket: {0}")]
    Socket(String),
}

/// Where BIRD and its files are.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The `bird` program.
    pub bird: PathBuf,
    /// Directory of `bird.conf` and the control socket `bird.ctl` (created, mode 0700).
    pub run_dir: PathBuf,
}

/// One BIRD.
#[derive(Debug)]
pub struct Engine {
    settings: EngineSettings,
    child: Option<Child>,
    /// The configuration in use.
    config: Option<String>,
}

impl Engine {
    /// An engine not started yet.
    pub fn new(settings: EngineSettings) -> Self {
        Self {
            settings,
            child: None,
            config: None,
        }
    }

    /// The control socket's path.
    pub fn socket(&self) -> PathBuf {
        self.settings.run_dir.join("bird.ctl")
    }

    fn conf(&self) -> PathBuf {
        self.settings.run_dir.join("bird.conf")
    }

    /// Writes `text` beside the configuration and has `bird -p` check it.
    async fn check(&self, text: &str) -> Result<PathBuf, EngineError> {
        let new = write_candidate(&self.settings.run_dir, text)?;
        let out = Command::new(&self.settings.bird)
            .arg("-p")
            .arg("-c")
            .arg(&new)
            .output()
            .await
            .map_err(|e| {
                EngineError::Io(format!("cannot run {}", self.settings.bird.display()), e)
            })?;
        if !out.status.success() {
            return Err(EngineError::Refused(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(new)
    }

    /// Puts `text` in use: checked, then BIRD started with it or reconfigured to it.
    /// `Ok(false)`: it was in use already. A refused configuration leaves the old one running.
    pub async fn configure(&mut self, text: &str) -> Result<bool, EngineError> {
        if self.config.as_deref() == Some(text) && self.running() {
            return Ok(false);
        }
        let new = self.check(text).await?;
        std::fs::rename(&new, self.conf())
            .map_err(|e| EngineError::Io(format!("cannot rename {}", new.display()), e))?;
        if self.running() {
            let conf = self.conf();
            let reply = self
                .command(&format!("configure \"{}\"", conf.display()))
                .await?;
            info!(reply = %reply.text(), "BIRD reconfigured");
        } else {
            self.start().await?;
        }
        self.config = Some(text.to_owned());
        Ok(true)
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts BIRD with the configuration written, and waits for its control socket.
    async fn start(&mut self) -> Result<(), EngineError> {
        let sock = self.socket();
        // Another BIRD answering there (a second vipd on this run directory, or an orphan of
        // ours) would be left unreachable and announcing: refuse.
        if self.command("show status").await.is_ok() {
            return Err(EngineError::Socket(format!(
                "another BIRD answers on {}: stop it (or give this fedplane-vipd another --bgp-run-dir)",
                sock.display()
            )));
        }
        let _ = std::fs::remove_file(&sock);
        // setpriv sets the parent-death signal in the child before BIRD runs: if vipd dies,
        // BIRD gets SIGTERM and closes its sessions (the peers withdraw at once).
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "TERM", "--"])
            .arg(&self.settings.bird)
            .arg("-f")
            .arg("-c")
            .arg(self.conf())
            .arg("-s")
            .arg(&sock)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| EngineError::Io("cannot start setpriv … bird".into(), e))?;
        info!(pid = child.id(), socket = %sock.display(), "BIRD started");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if self.command("show status").await.is_ok() {
                return Ok(());
            }
            if !self.running() {
                return Err(EngineError::Socket("BIRD exited at start".into()));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EngineError::Socket(format!(
                    "no answer on {} within {START_TIMEOUT:?}",
                    sock.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Restarts BIRD if it has exited, or if it is `hung` (with the configuration in use).
    /// `Ok(true)`: restarted.
    pub async fn ensure_running(&mut self, hung: bool) -> Result<bool, EngineError> {
        if self.config.is_none() || (self.running() && !hung) {
            return Ok(false);
        }
        if hung {
            self.stop(Duration::from_secs(2)).await;
        } else {
            warn!("BIRD is not running; starting it again");
        }
        self.start().await?;
        Ok(true)
    }

    /// Sends `cmd` on the control socket; its reply (an error reply is an error).
    pub async fn command(&self, cmd: &str) -> Result<Reply, EngineError> {
        let sock = self.socket();
        let exchange = async {
            let stream = UnixStream::connect(&sock)
                .await
                .map_err(|e| e.to_string())?;
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            // The greeting: `0001 BIRD 2.0.12 ready.`
            lines
                .next_line()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("closed before its greeting")?;
            write
                .write_all(format!("{cmd}\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut text = String::new();
            loop {
                let line = lines
                    .next_line()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("closed in the middle of a reply")?;
                text.push_str(&line);
                text.push('\n');
                if let Some(reply) = Reply::parse(&text) {
                    return Ok::<Reply, String>(reply);
                }
            }
        };
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                EngineError::Socket(format!("{cmd:?}: no reply within {COMMAND_TIMEOUT:?}"))
            })?
            .map_err(|e| EngineError::Socket(format!("{cmd:?}: {e}")))?;
        if reply.is_error() {
            return Err(EngineError::Socket(format!("{cmd:?}: {}", reply.text())));
        }
        Ok(reply)
    }

    /// Stops BIRD (SIGTERM: it closes its sessions with a Cease), within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            // The pid is setpriv's, which BIRD replaced by exec.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}

/// Checks the run directory (created mode 0700 if missing; an existing one must be ours and
/// closed to others, since the configuration holds the peers' passwords) and writes `text`
/// to a fresh `bird.conf.new` in it (mode 0600, never through a symbolic link).
fn write_candidate(dir: &Path, text: &str) -> Result<PathBuf, EngineError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    let io = |what: &str, p: &Path| format!("{what} {}", p.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| EngineError::Io(io("cannot create", dir), e))?;
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| EngineError::Io(io("cannot read", dir), e))?;
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o022 != 0 {
        return Err(EngineError::Io(
            io("refusing the run directory", dir),
            std::io::Error::other(
                "it must be a directory of this user that others cannot write (mode 0700)",
            ),
        ));
    }
    let new = dir.join("bird.conf.new");
    match std::fs::remove_file(&new) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(EngineError::Io(io("cannot remove", &new), e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&new)
        .map_err(|e| EngineError::Io(io("cannot write", &new), e))?;
    std::io::Write::write_all(&mut f, text.as_bytes())
        .map_err(|e| EngineError::Io(io("cannot write", &new), e))?;
    Ok(new)
}

/// Has `bird -p` check `text` now (blocking): a configuration refused at start or on SIGHUP
/// is refused before anything is applied.
pub fn check_now(settings: &EngineSettings, text: &str) -> Result<(), String> {
    let new = write_candidate(&settings.run_dir, text).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(&settings.bird)
        .arg("-p")
        .arg("-c")
        .arg(&new)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", settings.bird.display()))?;
    let _ = std::fs::remove_file(&new);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "BIRD refused the configuration: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_run_directory_must_be_closed_and_links_are_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("dir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        let err = write_candidate(&open, "x")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("refusing the run directory"), "{err}");
        // A link planted where the candidate goes is replaced, never written through.
        let run = dir.path().join("run");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        write_candidate(&run, "first").expect("written");
        std::fs::remove_file(run.join("bird.conf.new")).expect("rm");
        std::os::unix::fs::symlink(&victim, run.join("bird.conf.new")).expect("symlink");
        write_candidate(&run, "second").expect("written");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep");
        let mode = std::fs::metadata(run.join("bird.conf.new"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
