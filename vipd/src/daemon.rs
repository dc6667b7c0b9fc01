//! Runs one VRRP group: feeds adverts, timers and link changes to its [`Router`] state machine
//! and carries out the actions it returns with sockets and netlink; [`receive::accept`] decides
//! which datagrams it hears, the runner counts the others. Its virtual addresses on the
//! interface are kept in `daemon/addresses.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ipnet::IpNet;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::GroupSettings;
use crate::fsm::{Action, Router, State};
use crate::net::{self, Announcer, VrrpSocket};
use crate::netlink::{Link, LinkEvent, Netlink, NetlinkError};
use crate::packet::{self, Advert, Datagram, DropReason};
use crate::receive::{self, Expected};

mod addresses;

/// Why a group could not start.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// Netlink lookup failed (no such interface, no primary address).
    #[error("group {vrid} on {interface}: {source}")]
    Netlink {
        /// VRID.
        vrid: u8,
        /// Interface.
        interface: String,
        /// Cause.
        source: NetlinkError,
    },
    /// A socket could not be opened (not root / no NET_RAW?).
    #[error("group {vrid} on {interface}: cannot open {what} socket (needs CAP_NET_RAW): {source}")]
    Socket {
        /// VRID.
        vrid: u8,
        /// Interface.
        interface: String,
        /// Which socket.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running group and its edges.
#[derive(Debug)]
struct Runner {
    cfg: GroupSettings,
    link: Link,
    fsm: Router,
    socket: VrrpSocket,
    announcer: Announcer,
    netlink: Netlink,
    /// Virtual addresses present on the interface with our mark.
    held: BTreeSet<IpNet>,
    labels: [(&'static str, String); 3],
    /// What a peer's advert must match.
    expected: Expected,
    /// When each foreign speaker was last warned about (at most once per minute each; `None`:
    /// the sources beyond the first 64, together).
    foreign_warned: std::sync::Mutex<std::collections::HashMap<Option<std::net::IpAddr>, Instant>>,
}

/// Runs group `cfg` until `cancel`, then resigns and removes its addresses. `started` is bumped
/// once the group is up (for /readyz). With `vips`, the group's addresses follow that channel
/// (Kubernetes mode) instead of staying those of `cfg`, and the group starts only once the
/// channel holds a first set: a node that cannot see the Services yet must not take over a
/// group (preempting with no addresses).
pub async fn run_group(
    mut cfg: GroupSettings,
    netlink: Netlink,
    links: broadcast::Sender<LinkEvent>,
    cancel: CancellationToken,
    started: Arc<AtomicUsize>,
    mut vips: Option<watch::Receiver<Option<Vec<IpNet>>>>,
) -> Result<(), GroupError> {
    if let Some(rx) = &mut vips {
        let first = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            v = rx.wait_for(Option::is_some) => v.ok().and_then(|v| v.clone()),
        };
        cfg.vips = first.unwrap_or_default();
    }
    let mut link_events = links.subscribe();
    let mut r = Runner::open(cfg, netlink).await?;
    r.clean_stale().await;
    let now = Instant::now();
    let actions = r.fsm.start(now);
    r.apply(actions).await;
    if !r.link.up {
        let actions = r.fsm.on_link(false, now);
        r.apply(actions).await;
    }
    started.fetch_add(1, Ordering::Relaxed);
    info!(vrid = r.cfg.fsm.vrid, interface = %r.cfg.interface, primary = %r.fsm.primary(),
        priority = r.cfg.fsm.priority, version = r.cfg.version.number(),
        vips = ?r.cfg.vips, "group started");
    loop {
        let deadline = r.fsm.next_deadline();
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(new) = next_vips(&mut vips) => r.set_vips(new).await,
            () = sleep_until(deadline.map(|d| d.checked_sub(TIMER_SLACK).unwrap_or(d))) => {
                let now = deadline.map_or_else(Instant::now, |d| Instant::now().max(d));
                let actions = r.fsm.on_timer(now);
                r.apply(actions).await;
            }
            got = r.socket.recv() => match got {
                Ok(Ok(d)) => r.on_datagram(&d).await,
                Ok(Err(drop)) => r.dropped(&drop),
                Err(e) => warn!(vrid = r.cfg.fsm.vrid, error = %e, "VRRP receive failed"),
            },
            ev = link_events.recv() => match ev {
                Ok(LinkEvent::Link { index, up }) if index == r.link.index => r.set_link(up).await,
                Ok(LinkEvent::Addresses { index }) if index == r.link.index => {
                    r.resync_addresses().await;
                }
                Ok(LinkEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Ok(l) = r.netlink.link(&r.cfg.interface).await {
                        r.set_link(l.up).await;
                    }
                    r.resync_addresses().await;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    warn!("link monitor ended; link changes are no longer followed");
                    link_events = broadcast::channel(1).1;
                }
            },
        }
    }
    let actions = r.fsm.shutdown();
    r.apply(actions).await;
    // Whatever the state machine did, nothing of ours stays on the interface.
    r.remove_all().await;
    info!(vrid = r.cfg.fsm.vrid, interface = %r.cfg.interface, "group stopped");
    Ok(())
}

/// tokio's timer wheel rounds a deadline up to its next millisecond tick, so a timer fires up
/// to 1 ms late. Waking 1 ms early and treating the wake-up as the deadline makes VRRP timers fire
/// on time on average (within ±1 ms, which no peer can tell apart).
const TIMER_SLACK: std::time::Duration = std::time::Duration::from_millis(1);

/// The next address set of a dynamic group; pending for a static one.
async fn next_vips(rx: &mut Option<watch::Receiver<Option<Vec<IpNet>>>>) -> Option<Vec<IpNet>> {
    let Some(r) = rx else {
        return std::future::pending().await;
    };
    if r.changed().await.is_err() {
        *rx = None;
        return None;
    }
    Some(r.borrow_and_update().clone().unwrap_or_default())
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

impl Runner {
    async fn open(cfg: GroupSettings, netlink: Netlink) -> Result<Self, GroupError> {
        let (vrid, interface) = (cfg.fsm.vrid, cfg.interface.clone());
        let nl_err = |source| GroupError::Netlink {
            vrid,
            interface: interface.clone(),
            source,
        };
        let sock_err = |what, source| GroupError::Socket {
            vrid,
            interface: interface.clone(),
            what,
            source,
        };
        let link = netlink.link(&cfg.interface).await.map_err(nl_err)?;
        let primary = netlink
            .primary(&link, cfg.v6, &cfg.vips)
            .await
            .map_err(nl_err)?;
        let socket = VrrpSocket::open(&link.name, link.index, cfg.v6, cfg.unicast_peers.is_empty())
            .map_err(|e| sock_err("VRRP", e))?;
        let announcer = Announcer::open(link.index, link.mac).map_err(|e| sock_err("packet", e))?;
        let family = if cfg.v6 { "ipv6" } else { "ipv4" };
        let labels = [
            ("vrid", cfg.fsm.vrid.to_string()),
            ("interface", cfg.interface.clone()),
            ("family", family.to_owned()),
        ];
        for reason in DropReason::LABELS {
            let mut l = labels.to_vec();
            l.push(("reason", reason.to_owned()));
            metrics::counter!("fedplane_vipd_adverts_dropped_total", &l).absolute(0);
        }
        let fsm = Router::new(cfg.fsm.clone(), primary, Instant::now());
        let (listed, excess) = packet::listed_of(cfg.vips.iter().map(IpNet::addr));
        if excess > 0 {
            warn!(vrid, interface = %cfg.interface, listed = listed.len(), excess,
                "more virtual addresses than an advert lists: all are held, the adverts list the first ones");
        }
        let expected = Expected {
            vrid: cfg.fsm.vrid,
            version: cfg.version,
            interval: cfg.fsm.advert_interval,
            unicast_peers: cfg.unicast_peers.clone(),
            addresses: listed.into_iter().collect(),
            dynamic: cfg.dynamic,
            speakers: (!cfg.peers.is_empty()).then(|| cfg.peers.iter().copied().collect()),
            auth: cfg.auth,
        };
        Ok(Self {
            cfg,
            expected,
            link,
            fsm,
            socket,
            announcer,
            netlink,
            held: BTreeSet::new(),
            labels,
            foreign_warned: std::sync::Mutex::default(),
        })
    }

    async fn set_link(&mut self, up: bool) {
        if up == self.link.up {
            return;
        }
        self.link.up = up;
        info!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, up, "link changed");
        let actions = self.fsm.on_link(up, Instant::now());
        self.apply(actions).await;
    }

    fn dropped(&self, drop: &DropReason) {
        let mut l = self.labels.to_vec();
        l.push(("reason", drop.label().to_owned()));
        metrics::counter!("fedplane_vipd_adverts_dropped_total", &l).increment(1);
        debug!(vrid = self.cfg.fsm.vrid, reason = %drop, "advert dropped");
        if let DropReason::Foreign(source) = drop {
            /// A foreign speaker is warned about at most this often.
            const FOREIGN_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
            /// Sources named in the metric; later ones are `source="other"`, so spoofed
            /// sources cannot grow the metric (and this map) without bound.
            const FOREIGN_SOURCES: usize = 64;
            let now = Instant::now();
            let mut warned = self
                .foreign_warned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let named = warned.len() < FOREIGN_SOURCES || warned.contains_key(&Some(*source));
            let key = named.then_some(*source);
            let mut l = self.labels.to_vec();
            l.push((
                "source",
                key.map_or_else(|| "other".to_owned(), |s| s.to_string()),
            ));
            metrics::counter!("fedplane_vipd_foreign_adverts_total", &l).increment(1);
            if warned
                .get(&key)
                .is_none_or(|t| now.duration_since(*t) >= FOREIGN_WARN_EVERY)
            {
                warned.insert(key, now);
                warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, %source,
                    "advert from a speaker that is not allowed in this group refused (warned once a minute per source)");
            }
        }
    }

    async fn on_datagram(&mut self, d: &Datagram) {
        match receive::accept(&self.expected, self.fsm.primary(), d) {
            Ok(heard) => {
                tracing::trace!(vrid = self.cfg.fsm.vrid, src = %heard.src, priority = heard.priority, "advert");
                metrics::counter!("fedplane_vipd_adverts_received_total", &self.labels)
                    .increment(1);
                let actions = self.fsm.on_advert(heard, Instant::now());
                self.apply(actions).await;
            }
            Err(drop) => self.dropped(&drop),
        }
    }

    async fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Advertise(priority) => self.advertise(priority),
                Action::AddAddresses => self.add_all().await,
                Action::RemoveAddresses => self.remove_all().await,
                Action::Announce => self.announce(),
                Action::Transition(from, to) => self.transition(from, to),
            }
        }
    }

    fn advertise(&self, priority: u8) {
        let advert = Advert {
            version: self.cfg.version,
            vrid: self.cfg.fsm.vrid,
            priority,
            interval: self.cfg.fsm.advert_interval,
            addrs: packet::listed_of(self.cfg.vips.iter().map(IpNet::addr)).0,
            auth: self.cfg.auth.map_or(packet::Auth::None, packet::Auth::Pass),
        };
        let group = [net::group_of(self.cfg.v6)];
        let targets = if self.cfg.unicast_peers.is_empty() {
            &group[..]
        } else {
            &self.cfg.unicast_peers[..]
        };
        for &dst in targets {
            let src = self.fsm.primary();
            let wire = packet::encode(&advert, src, dst, self.cfg.checksum);
            match self.socket.send(&wire, src, dst) {
                Ok(()) => {
                    metrics::counter!("fedplane_vipd_adverts_sent_total", &self.labels)
                        .increment(1);
                }
                Err(e) => warn!(vrid = self.cfg.fsm.vrid, %dst, error = %e, "advert not sent"),
            }
        }
    }

    fn announce(&self) {
        for vip in &self.cfg.vips {
            match self.announcer.announce(vip.addr()) {
                Ok(()) => {
                    metrics::counter!("fedplane_vipd_announcements_sent_total", &self.labels)
                        .increment(1);
                }
                Err(e) => warn!(vip = %vip.addr(), error = %e, "gratuitous ARP/NA not sent"),
            }
        }
    }

    fn transition(&self, from: State, to: State) {
        info!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface,
            from = from.name(), to = to.name(), "state changed");
        metrics::gauge!("fedplane_vipd_state", &self.labels).set(to.gauge());
        let mut l = self.labels.to_vec();
        l.push(("to", to.name().to_owned()));
        metrics::counter!("fedplane_vipd_transitions_total", &l).increment(1);
    }
}
