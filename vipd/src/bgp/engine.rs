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
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |what: &str, p: &Path| format!("{what} {}", p.display());
        let dir = &self.settings.run_dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| EngineError::Io(io("cannot create", dir), e))?;
        let new = dir.join("bird.conf.new");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&new)
            .map_err(|e| EngineError::Io(io("cannot write", &new), e))?;
        std::io::Write::write_all(&mut f, text.as_bytes())
            .map_err(|e| EngineError::Io(io("cannot write", &new), e))?;
        let out = Command::new(&self.settings.bird)
            .arg("-p")
            .arg("-c")
            .arg(&new)
            .output()
            .await
            .map_err(|e| EngineError::Io(io("cannot run", &self.settings.bird), e))?;
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

    /// Restarts BIRD if it has exited (with the configuration in use). `Ok(true)`: restarted.
    pub async fn ensure_running(&mut self) -> Result<bool, EngineError> {
        if self.running() || self.config.is_none() {
            return Ok(false);
        }
        warn!("BIRD is not running; starting it again");
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
