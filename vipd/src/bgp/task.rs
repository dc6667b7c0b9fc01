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
    let mut configured;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut config = inputs.config.borrow_and_update().clone();
    configured = reconfigure(&mut engine, &config).await;
    let want = inputs.routes.borrow_and_update().clone();
    apply_routes(&table, &want).await;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Ok(()) = inputs.config.changed() => {
                config = inputs.config.borrow_and_update().clone();
                // (A refused configuration leaves the one in use running.)
                configured = reconfigure(&mut engine, &config).await
                    || (configured && !config.is_empty());
            }
            Ok(()) = inputs.routes.changed() => {
                let want = inputs.routes.borrow_and_update().clone();
                apply_routes(&table, &want).await;
            }
            _ = tick.tick() => {
                if configured {
                    match engine.ensure_running().await {
                        Ok(true) => metrics::counter!("fedplane_vipd_bgp_engine_restarts_total").increment(1),
                        Ok(false) => {}
                        Err(e) => warn!(error = %e, "BGP: BIRD cannot be started again"),
                    }
                }
                // Routes removed behind our back come back.
                let want = inputs.routes.borrow().clone();
                apply_routes(&table, &want).await;
                if config.is_empty() {
                    // BGP is off (no bgp: section): nothing to be ready for.
                    inputs.up.store(true, Ordering::Relaxed);
                    sessions.clear();
                } else {
                    poll_sessions(&engine, &mut sessions, &inputs.up).await;
                }
            }
        }
    }
    // Withdraw first, then give the peers time to see it, then stop BIRD.
    info!("BGP: withdrawing every route before stopping");
    apply_routes(&table, &BTreeSet::new()).await;
    let deadline = tokio::time::Instant::now() + inputs.withdraw_wait;
    while tokio::time::Instant::now() < deadline && exporting(&engine, &sessions).await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    inputs.up.store(false, Ordering::Relaxed);
    engine.stop(Duration::from_secs(5)).await;
    info!("BGP: withdrawn and stopped");
}

/// Puts `config` in use; an empty one stops BIRD (no `bgp:` section any more). Whether
/// BIRD runs our configuration now.
async fn reconfigure(engine: &mut Engine, config: &str) -> bool {
    if config.is_empty() {
        engine.stop(Duration::from_secs(5)).await;
        return false;
    }
    match engine.configure(config).await {
        Ok(changed) => {
            if changed {
                metrics::counter!("fedplane_vipd_bgp_engine_reloads_total", "result" => "ok")
                    .increment(1);
            }
            true
        }
        Err(e @ EngineError::Refused(_)) => {
            metrics::counter!("fedplane_vipd_bgp_engine_reloads_total", "result" => "refused")
                .increment(1);
            warn!(error = %e, "BGP: configuration refused; the one in use stays");
            false
        }
        Err(e) => {
            metrics::counter!("fedplane_vipd_bgp_engine_reloads_total", "result" => "error")
                .increment(1);
            warn!(error = %e, "BGP: BIRD could not take the configuration");
            false
        }
    }
}

async fn apply_routes(table: &Table, want: &BTreeSet<IpNet>) {
    match table.apply(want).await {
        Ok(c) => {
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

async fn poll_sessions(engine: &Engine, sessions: &mut BTreeMap<String, Session>, up: &AtomicBool) {
    match engine.command("show protocols").await {
        Ok(reply) => {
            up.store(true, Ordering::Relaxed);
            let now = bird::protocols(&reply);
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
        }
        Err(e) => {
            if up.swap(false, Ordering::Relaxed) {
                warn!(error = %e, "BGP: BIRD does not answer");
            }
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
                "bgp.peers[{}].password_file: the password must be 1-80 characters without quotes, backslashes or line breaks",
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
