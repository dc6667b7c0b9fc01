//! The BGP task: keeps BIRD configured and vipd's routes in the kernel table, follows the
//! sessions for the metrics, and on shutdown withdraws first: the routes go, the peers are
//! given up to `withdraw_wait` to see every withdrawal (each session exporting nothing), and
//! only then does BIRD stop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::bird::{self, Session};
use super::engine::{Engine, EngineError, EngineSettings};
use super::routes::Table;

/// How often the sessions are read and BIRD's health checked.
const POLL: Duration = Duration::from_secs(1);
/// On shutdown, how long the sessions stay after the withdrawals went out (within
/// `withdraw_wait`).
const SETTLE: Duration = Duration::from_millis(300);

/// What the task is given.
#[derive(Debug)]
pub struct Inputs {
    /// BIRD's configuration (rendered from the settings, pools and node).
    pub config: watch::Receiver<String>,
    /// The routes to announce.
    pub routes: watch::Receiver<BTreeSet<IpNet>>,
    /// The kernel table.
    pub table: u32,
    /// Where BIRD is.
    pub engine: EngineSettings,
    /// Shutdown: the longest wait for the withdrawals to be seen.
    pub withdraw_wait: Duration,
    /// Set while BIRD answers on its control socket with the configuration in use
    /// (`/readyz`).
    pub up: Arc<AtomicBool>,
}

/// Polls of a running BIRD that may fail in a row before it is taken for hung and restarted.
const HUNG_AFTER: u32 = 3;

/// Runs until `cancel`, then withdraws and stops BIRD.
pub async fn run(mut inputs: Inputs, cancel: CancellationToken) {
    let mut engine = Engine::new(inputs.engine.clone());
    let table = match Table::connect(inputs.table) {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "BGP: no netlink socket; nothing will be announced");
            return;
        }
    };
    let mut sessions: BTreeMap<String, Session> = BTreeMap::new();
    // Destinations another route holds in the table (logged when that changes).
    let mut blocked: Vec<IpNet> = Vec::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The routes first: BIRD must not announce what a killed run left in the table.
    let want = inputs.routes.borrow_and_update().clone();
    apply_routes(&table, &want, &mut blocked).await;
    let mut config = inputs.config.borrow_and_update().clone();
    // `configured`: BIRD was given a configuration of ours; `pending`: the one it should run,
    // not in use yet (BIRD busy or down), tried again on every step.
    let mut configured = false;
    let mut pending = Some(config.clone());
    let mut failed_polls = 0u32;
    let mut backoff = POLL;
    let mut next_start = tokio::time::Instant::now();
    loop {
        // Cancel first, and raced with every step that talks to BIRD: a hung BIRD must not
        // delay the withdrawal.
        let step = async {
            tokio::select! {
                biased;
                Ok(()) = inputs.config.changed() => {
                    config = inputs.config.borrow_and_update().clone();
                    pending = Some(config.clone());
                }
                Ok(()) = inputs.routes.changed() => {
                    let want = inputs.routes.borrow_and_update().clone();
                    apply_routes(&table, &want, &mut blocked).await;
                    return;
                }
                _ = tick.tick() => {
                    // Routes removed behind our back come back.
                    let want = inputs.routes.borrow().clone();
                    apply_routes(&table, &want, &mut blocked).await;
                }
            }
            if let Some(c) = pending.clone() {
                match reconfigure(&mut engine, &c).await {
                    Reconfigured::Done => {
                        pending = None;
                        configured = !c.is_empty();
                    }
                    // Refused: the one in use stays; not tried again until it changes.
                    Reconfigured::Refused => pending = None,
                    Reconfigured::Retry => {}
                }
            }
            if config.is_empty() {
                // BGP is off (no bgp: section): nothing to be ready for.
                inputs.up.store(true, Ordering::Relaxed);
                sessions.clear();
                return;
            }
            if configured && tokio::time::Instant::now() >= next_start {
                let hung = failed_polls >= HUNG_AFTER;
                if hung {
                    warn!("BGP: BIRD does not answer on its control socket; restarting it");
                }
                match engine.ensure_running(hung).await {
                    Ok(false) => {}
                    restarted => {
                        if let Err(e) = restarted {
                            warn!(error = %e, "BGP: BIRD cannot be started again");
                        } else {
                            metrics::counter!("fedplane_vipd_bgp_engine_restarts_total")
                                .increment(1);
                        }
                        failed_polls = 0;
                        // Restarts back off, until BIRD answers again.
                        next_start = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            if poll_sessions(&engine, &mut sessions, &inputs.up).await {
                failed_polls = 0;
                backoff = POLL;
            } else {
                failed_polls += 1;
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = step => {}
        }
    }
    // Withdraw first, then give the peers time to see it, then stop BIRD.
    info!("BGP: withdrawing every route before stopping");
    apply_routes(&table, &BTreeSet::new(), &mut blocked).await;
    let deadline = tokio::time::Instant::now() + inputs.withdraw_wait;
    let _ = tokio::time::timeout_at(deadline, async {
        while exporting(&engine, &sessions).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The withdrawals are sent; the sessions stay a moment longer, so the routers act on
        // them (and move the traffic) before the Cease.
        tokio::time::sleep(SETTLE).await;
    })
    .await;
    inputs.up.store(false, Ordering::Relaxed);
    engine.stop(Duration::from_secs(5)).await;
    info!("BGP: withdrawn and stopped");
}

/// What became of a configuration handed to BIRD.
enum Reconfigured {
    /// In use (or BIRD stopped, for an empty one).
    Done,
    /// Refused by `bird -p`; the one in use stays.
    Refused,
    /// Not now (BIRD busy or not answering): tried again.
    Retry,
}

/// Puts `config` in use; an empty one stops BIRD (no `bgp:` section any more).
async fn reconfigure(engine: &mut Engine, config: &str) -> Reconfigured {
    if config.is_empty() {
        engine.stop(Duration::from_secs(5)).await;
        return Reconfigured::Done;
    }
    match engine.configure(config).await {
        Ok(changed) => {
            if changed {
                info!("BGP: configuration in use");
                metrics::counter!("fedplane_vipd_bgp_engine_reloads_total", "result" => "ok")
                    .increment(1);
            }
            Reconfigured::Done
        }
        Err(e @ EngineError::Refused(_)) => {
            metrics::counter!("fedplane_vipd_bgp_engine_reloads_total", "result" => "refused")
                .increment(1);
            warn!(error = %e, "BGP: configuration refused; the one in use stays");
            Reconfigured::Refused
        }
        Err(e) => {
            metrics::counter!("fedplane_vipd_bgp_engine_reloads_total", "result" => "error")
                .increment(1);
            warn!(error = %e, "BGP: BIRD could not take the configuration (tried again)");
            Reconfigured::Retry
        }
    }
}

async fn apply_routes(table: &Table, want: &BTreeSet<IpNet>, blocked: &mut Vec<IpNet>) {
    match table.apply(want).await {
        Ok(c) => {
            if c.blocked != *blocked {
                if !c.blocked.is_empty() {
                    warn!(routes = ?c.blocked, table = table.id(), "BGP: another route to these is in the table (not ours): left alone, not announced");
                }
                blocked.clone_from(&c.blocked);
            }
            for (op, list) in [("add", &c.added), ("del", &c.removed)] {
                if !list.is_empty() {
                    info!(op, routes = ?list, "BGP: routes changed");
                    #[allow(clippy::cast_precision_loss)]
                    metrics::counter!("fedplane_vipd_bgp_route_writes_total", "op" => op, "result" => "ok")
                        .increment(list.len() as u64);
                }
            }
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("fedplane_vipd_bgp_announced_prefixes").set(want.len() as f64);
        }
        Err(e) => {
            metrics::counter!("fedplane_vipd_bgp_route_writes_total", "op" => "apply", "result" => "error")
                .increment(1);
            warn!(error = %e, "BGP: cannot write the routes (retried every second)");
        }
    }
}

/// Reads the sessions into the metrics; whether BIRD answered.
async fn poll_sessions(
    engine: &Engine,
    sessions: &mut BTreeMap<String, Session>,
    up: &AtomicBool,
) -> bool {
    match engine.command("show protocols").await {
        Ok(reply) => {
            up.store(true, Ordering::Relaxed);
            let now = bird::protocols(&reply);
            for gone in sessions.keys().filter(|n| !now.contains_key(*n)) {
                // A peer removed from the configuration: shown down (a gauge stays).
                let peer = gone.strip_prefix("peer_").unwrap_or(gone).replace('_', "-");
                metrics::gauge!("fedplane_vipd_bgp_session_state", "peer" => peer).set(0.0);
            }
            for (name, state) in &now {
                let peer = name.strip_prefix("peer_").unwrap_or(name).replace('_', "-");
                if sessions.get(name) == Some(&Session::Established)
                    && *state != Session::Established
                {
                    warn!(peer, ?state, "BGP: session left Established");
                    metrics::counter!("fedplane_vipd_bgp_session_flaps_total", "peer" => peer.clone())
                        .increment(1);
                }
                if sessions.get(name) != Some(state) && *state == Session::Established {
                    info!(peer, "BGP: session established");
                }
                metrics::gauge!("fedplane_vipd_bgp_session_state", "peer" => peer)
                    .set(state.gauge());
            }
            *sessions = now;
            true
        }
        Err(e) => {
            if up.swap(false, Ordering::Relaxed) {
                warn!(error = %e, "BGP: BIRD does not answer");
            }
            false
        }
    }
}

/// Whether an established session still exports a route (or cannot be asked).
async fn exporting(engine: &Engine, sessions: &BTreeMap<String, Session>) -> bool {
    for (name, state) in sessions {
        if *state != Session::Established {
            continue;
        }
        match engine.command(&format!("show protocols all {name}")).await {
            Ok(reply) if bird::exported(&reply) == Some(0) => {}
            _ => return true,
        }
    }
    false
}

/// [`Inputs`] and the senders that feed them (kept alive by the caller).
pub type StaticInputs = (
    Inputs,
    watch::Sender<String>,
    watch::Sender<BTreeSet<IpNet>>,
);

/// The inputs of BGP mode without Kubernetes (`bgp.announce` in the config file): a fixed
/// configuration and fixed host routes. Returns the senders too, to be kept alive.
pub fn static_inputs(
    s: &crate::config::StaticBgp,
    up: Arc<AtomicBool>,
) -> Result<StaticInputs, String> {
    let router_id = match s.settings.router_id {
        super::config::RouterId::Fixed(a) => a,
        super::config::RouterId::Auto => router_id_towards(&s.settings)?,
    };
    let mut passwords = BTreeMap::new();
    for p in &s.settings.peers {
        let Some(path) = &p.password_file else {
            continue;
        };
        let pw = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "bgp.peers[{}].password_file: {}: {e}",
                p.name,
                path.display()
            )
        })?;
        let pw = pw.trim_end_matches(['\n', '\r']).to_owned();
        if !bird::quotable(&pw) || pw.is_empty() || pw.len() > 80 {
            return Err(format!(
                "bgp.peers[{}].password_file: the password must be 1-80 characters without quotes, backslashes or control characters",
                p.name
            ));
        }
        passwords.insert(p.name.clone(), pw);
    }
    let labels = BTreeMap::new();
    let config = bird::render(
        &s.settings,
        &crate::ipam::Pools::default(),
        &bird::Node {
            labels: &labels,
            router_id,
            passwords: &passwords,
        },
    );
    super::engine::check_now(&s.engine, &config)?;
    let routes: BTreeSet<IpNet> = s.announce.iter().map(|a| IpNet::from(*a)).collect();
    let (config_tx, config_rx) = watch::channel(config);
    let (routes_tx, routes_rx) = watch::channel(routes);
    Ok((
        Inputs {
            config: config_rx,
            routes: routes_rx,
            table: s.settings.table,
            engine: s.engine.clone(),
            withdraw_wait: s.settings.withdraw_wait,
            up,
        },
        config_tx,
        routes_tx,
    ))
}

/// `router_id: auto`: the address the kernel would send from towards the first IPv4 peer.
fn router_id_towards(s: &super::config::BgpSettings) -> Result<std::net::Ipv4Addr, String> {
    let peer = s
        .peers
        .iter()
        .find_map(|p| match p.address {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        })
        .ok_or("bgp.router_id: auto needs an IPv4 peer to pick the address from; set it")?;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.connect((peer, 179))
        .map_err(|e| format!("bgp.router_id: auto: no route to {peer}: {e}"))?;
    match sock.local_addr().map_err(|e| e.to_string())?.ip() {
        std::net::IpAddr::V4(a) => Ok(a),
        std::net::IpAddr::V6(_) => Err("bgp.router_id: auto found no IPv4 address".into()),
    }
}
