//! The daemon's groups as a whole: started, stopped when one fails, reloaded from the config
//! file (SIGHUP) and asked for their state (SIGUSR1).
//!
//! A reload re-reads the flags' config file and compares group by group (a group is its VRID,
//! interface and family): a new group starts, a removed one resigns and removes its addresses,
//! one whose addresses alone changed takes the new set in place (as master it adds and
//! announces the new ones, no state change), so does one whose priority, timers or preemption
//! changed (a lowered priority is advertised at once), and one with any other change is stopped
//! and started again (the new one starts once the old one has resigned). A config that does not
//! check leaves everything running as it was. Kubernetes mode, the HTTP address and the log
//! format are not reloaded.

use std::collections::BTreeMap;

use ipnet::IpNet;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Cli, GroupSettings, Settings};
use crate::daemon::{GroupContext, GroupError, group_name, run_group};
use crate::fsm::RouterConfig;

/// Claims this network namespace for this process: an abstract Unix socket
/// `@fedplane-vipd`, which lives as long as the process and is per network namespace (so
/// hostNetwork pods of one node share it). A second fedplane-vipd would remove the first one's
/// addresses at its start; it is refused instead. Keep the returned socket open.
pub fn claim_namespace() -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(b"fedplane-vipd")?;
    std::os::unix::net::UnixListener::bind_addr(&addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(
                e.kind(),
                "another fedplane-vipd runs in this network namespace (it holds @fedplane-vipd)",
            )
        } else {
            e
        }
    })
}

/// Why a group stopped the daemon.
#[derive(Debug, thiserror::Error)]
pub enum GroupFailure {
    /// The group could not run.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// Its task panicked.
    #[error("a group task died: {0}")]
    Died(#[from] JoinError),
}

/// The running groups.
#[derive(Debug)]
pub struct Groups {
    ctx: GroupContext,
    dump: watch::Sender<u64>,
    tasks: JoinSet<Result<(), GroupError>>,
    running: BTreeMap<String, Running>,
    /// Groups removed by a reload, until they have stopped: one added back under the same name
    /// starts once the old one has resigned.
    stopping: BTreeMap<String, CancellationToken>,
}

#[derive(Debug)]
struct Running {
    cfg: GroupSettings,
    cancel: CancellationToken,
    /// Cancelled once the group's task has ended (resigned, addresses removed).
    done: CancellationToken,
    /// A static group's addresses (a reload changes them in place); `None` when they follow
    /// the Services.
    vips: Option<watch::Sender<Option<Vec<IpNet>>>>,
    /// Its state machine's settings (a reload changes them in place).
    router: watch::Sender<RouterConfig>,
}

impl Groups {
    /// No groups yet; each will run with `ctx` (its `cancel` stops them all).
    pub fn new(mut ctx: GroupContext) -> Self {
        let (dump, rx) = watch::channel(0);
        ctx.dump = rx;
        Self {
            ctx,
            dump,
            tasks: JoinSet::new(),
            running: BTreeMap::new(),
            stopping: BTreeMap::new(),
        }
    }

    /// Removes every address marked as ours on the interfaces of `groups`: what a killed run
    /// left behind, whatever addresses it had.
    pub async fn remove_left_over(&self, groups: &[GroupSettings]) {
        let mut interfaces: Vec<&str> = groups.iter().map(|g| g.interface.as_str()).collect();
        interfaces.sort_unstable();
        interfaces.dedup();
        for i in interfaces {
            match self.ctx.netlink.remove_ours(i).await {
                Ok(gone) if !gone.is_empty() => info!(
                    interface = i,
                    ?gone,
                    "removed virtual addresses left by an earlier run"
                ),
                Ok(_) => {}
                Err(e) => {
                    warn!(interface = i, error = %e, "cannot clean up addresses of an earlier run");
                }
            }
        }
    }

    /// Starts a group with the addresses of its settings.
    pub fn start(&mut self, cfg: GroupSettings) {
        let (tx, rx) = watch::channel(Some(cfg.vips.clone()));
        self.stopping.retain(|_, done| !done.is_cancelled());
        let after = self.stopping.remove(&group_name(&cfg));
        self.spawn(cfg, rx, Some(tx), after);
    }

    /// Starts a group whose addresses follow `vips` (Kubernetes mode).
    pub fn start_following(
        &mut self,
        cfg: GroupSettings,
        vips: watch::Receiver<Option<Vec<IpNet>>>,
    ) {
        self.spawn(cfg, vips, None, None);
    }

    fn spawn(
        &mut self,
        cfg: GroupSettings,
        rx: watch::Receiver<Option<Vec<IpNet>>>,
        tx: Option<watch::Sender<Option<Vec<IpNet>>>>,
        after: Option<CancellationToken>,
    ) {
        let cancel = self.ctx.cancel.child_token();
        let done = CancellationToken::new();
        let mut ctx = self.ctx.clone();
        ctx.cancel = cancel.clone();
        let (g, finished) = (cfg.clone(), done.clone());
        let (router, router_rx) = watch::channel(cfg.fsm.clone());
        self.tasks.spawn(async move {
            if let Some(previous) = after {
                previous.cancelled().await;
            }
            let res = run_group(g, ctx, Some(rx), Some(router_rx)).await;
            finished.cancel();
            res
        });
        self.running.insert(
            group_name(&cfg),
            Running {
                cfg,
                cancel,
                done,
                vips: tx,
                router,
            },
        );
    }

    /// Re-reads the settings (SIGHUP) and applies the groups' changes; `current` is what the
    /// daemon runs with.
    pub async fn reload(&mut self, current: &Settings) {
        let new = match <Cli as clap::Parser>::try_parse()
            .map_err(|e| e.to_string())
            .and_then(|cli| Settings::resolve(cli).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "reload refused: the running configuration stays");
                return;
            }
        };
        if new.http != current.http || new.log_format != current.log_format {
            warn!("the HTTP address and log format are not reloaded: restart to change them");
        }
        let mut wanted: BTreeMap<String, GroupSettings> = new
            .groups
            .into_iter()
            .map(|g| (group_name(&g), g))
            .collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(r) = self.running.remove(&name) {
                info!(group = %name, "reload: group removed; resigning");
                r.cancel.cancel();
                self.stopping.insert(name, r.done);
            }
        }
        let mut restarts = 0;
        for (name, cfg) in std::mem::take(&mut wanted) {
            match self.running.get_mut(&name) {
                None => {
                    info!(group = %name, "reload: group added");
                    self.start(cfg);
                }
                Some(r) if r.cfg == cfg => {}
                Some(r) if r.vips.is_some() && same_in_place(&r.cfg, &cfg) => {
                    info!(group = %name, vips = ?cfg.vips, priority = cfg.fsm.priority,
                        "reload: addresses or state machine settings changed, in place");
                    if let Some(tx) = &r.vips {
                        tx.send_if_modified(|v| {
                            let new = Some(cfg.vips.clone());
                            let changed = *v != new;
                            *v = new;
                            changed
                        });
                    }
                    r.router.send_if_modified(|f| {
                        let changed = *f != cfg.fsm;
                        f.clone_from(&cfg.fsm);
                        changed
                    });
                    r.cfg = cfg;
                }
                Some(_) => {
                    info!(group = %name, "reload: settings changed; restarting the group");
                    if let Some(old) = self.running.remove(&name) {
                        old.cancel.cancel();
                        let (tx, rx) = watch::channel(Some(cfg.vips.clone()));
                        self.spawn(cfg, rx, Some(tx), Some(old.done));
                        restarts += 1;
                    }
                }
            }
        }
        info!(groups = self.running.len(), restarts, "reload done");
    }

    /// Every group logs its state.
    pub fn dump(&self) {
        info!(
            groups = self.running.len(),
            "SIGUSR1: each group logs its state"
        );
        self.dump.send_modify(|n| *n += 1);
    }

    /// The first group that fails; pending while none does.
    pub async fn failed(&mut self) -> Option<GroupFailure> {
        loop {
            match self.tasks.join_next().await {
                None => std::future::pending::<()>().await,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Some(e.into()),
                Some(Err(e)) => return Some(e.into()),
            }
        }
    }

    /// Waits for every group to stop (after the context's cancel).
    pub async fn stopped(&mut self) {
        while let Some(res) = self.tasks.join_next().await {
            match res {
                Ok(Err(e)) => error!(error = %e, "group failed"),
                Err(e) => error!(error = %e, "group task died"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// Whether `a` and `b` differ in what a running group takes in place at most: its addresses
/// and its state machine's settings (priority, timers, preemption). The rest (version,
/// checksum, peers, password) restarts it.
fn same_in_place(a: &GroupSettings, b: &GroupSettings) -> bool {
    let mut b = b.clone();
    b.vips.clone_from(&a.vips);
    b.fsm.clone_from(&a.fsm);
    *a == b
}
