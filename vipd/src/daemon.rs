//! Runs one VRRP group: feeds adverts, timers and link changes to its [`Router`] state machine
//! and carries out the actions it returns with sockets and netlink; [`receive::accept`] decides
//! which datagrams it hears, the runner counts the others. Its virtual addresses on the
//! interface are kept in `daemon/addresses.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::announce::Mac;
use crate::config::GroupSettings;
use crate::fsm::{Action, Router, RouterConfig, State};
use crate::net::{self, Announcer, ConflictWatch, VrrpSocket};
use crate::netlink::{Link, LinkEvent, Netlink, NetlinkError};
use crate::packet::{self, Advert, Datagram, DropReason};
use crate::probes::Health;
use crate::receive::{self, Expected};
use crate::speakers::{Allowed, Foreign, GroupEnds};

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
    fsm: Router,
    netlink: Netlink,
    /// The interface and its sockets; `None` while no interface of that name exists.
    bound: Option<Bound>,
    /// A usable source address was found on the interface.
    has_primary: bool,
    /// The group takes part in VRRP: interface present and up, source address usable (the
    /// state machine is in fault otherwise).
    usable: bool,
    /// Virtual addresses present on the interface with our mark.
    held: BTreeSet<IpNet>,
    labels: [(&'static str, String); 3],
    /// What a peer's advert must match.
    expected: Expected,
    /// Readiness.
    health: Arc<Health>,
    /// The group's name in logs and readiness (`51 on eth0 (ipv4)`).
    name: String,
    /// When each virtual address last had a conflict reported (reports are rate-limited).
    conflicts: BTreeMap<IpAddr, Instant>,
    /// When to probe our addresses: the end of the [`TAKEOVER_GRACE`] after becoming master,
    /// during which claims of our addresses are not conflicts.
    probe_at: Option<Instant>,
    /// An address of the group's family whose duplicate address detection failed (another
    /// host has it), for the fault reason.
    dad_failed: Option<IpAddr>,
    /// When to re-read the interface's addresses (address events, coalesced).
    resync_at: Option<Instant>,
    /// Why the interface's sockets could not be opened, while that lasts (fault).
    bind_error: Option<String>,
    /// When each foreign speaker was last warned about (at most once per minute each; `None`:
    /// the sources beyond the first 64, together).
    foreign_warned: BTreeMap<Option<IpAddr>, Instant>,
    /// When a clamped interval was last warned about.
    clamp_warned: Option<Instant>,
    /// Kubernetes mode: who may speak, our source for the others, refusals to report.
    speakers: Option<GroupEnds>,
    /// The master last published to Kubernetes mode.
    master_published: Option<IpAddr>,
}

/// The interface a group runs on, as last seen, and the sockets bound to it.
#[derive(Debug)]
struct Bound {
    link: Link,
    socket: VrrpSocket,
    announcer: Announcer,
    conflicts: ConflictWatch,
    /// The VRRP socket lived through a fault (to be opened again when the fault ends).
    stale: bool,
}

/// What a group runs with besides its settings.
#[derive(Debug, Clone)]
pub struct GroupContext {
    /// Netlink requests.
    pub netlink: Netlink,
    /// Link and address changes.
    pub links: broadcast::Sender<LinkEvent>,
    /// Stops the group (it resigns and removes its addresses).
    pub cancel: CancellationToken,
    /// Where the group reports its standing, for /readyz.
    pub health: Arc<Health>,
    /// Changes when the group should log its state (SIGUSR1).
    pub dump: watch::Receiver<u64>,
    /// Kubernetes mode: who may speak, and where to publish our source and report refusals.
    pub speakers: Option<GroupEnds>,
}

/// The group's name in logs and readiness: `51 on eth0 (ipv4)`.
pub fn group_name(cfg: &GroupSettings) -> String {
    format!(
        "{} on {} ({})",
        cfg.fsm.vrid,
        cfg.interface,
        if cfg.v6 { "ipv6" } else { "ipv4" }
    )
}

/// Runs group `cfg` until `ctx.cancel`, then resigns and removes its addresses. The group's
/// addresses follow `vips` (Kubernetes mode, or a reload of the config file), its state machine's
/// settings `router` (a reload), both without a state change; the group starts
/// only once the channel holds a first set: a node that cannot see the Services yet must not
/// take over a group (preempting with no addresses).
///
/// The interface is followed by name: a group whose interface does not exist (yet), is down,
/// or has no usable source address (IPv6: no link-local address, or one still tentative) is in
/// fault, and /readyz says why, until that changes; an interface deleted and created again is
/// bound again.
pub async fn run_group(
    mut cfg: GroupSettings,
    ctx: GroupContext,
    mut vips: Option<watch::Receiver<Option<Vec<IpNet>>>>,
    mut router: Option<watch::Receiver<RouterConfig>>,
) -> Result<(), GroupError> {
    let name = group_name(&cfg);
    ctx.health
        .set(&name, Err("waiting for its addresses".into()));
    if let Some(rx) = &mut vips {
        let first = tokio::select! {
            () = ctx.cancel.cancelled() => {
                ctx.health.remove(&name);
                return Ok(());
            }
            v = rx.wait_for(Option::is_some) => v.ok().and_then(|v| v.clone()),
        };
        cfg.vips = first.unwrap_or_default();
    }
    let mut link_events = ctx.links.subscribe();
    let mut dump = ctx.dump.clone();
    let mut allowed = ctx.speakers.as_ref().map(|s| s.allowed.clone());
    let mut r = Runner::new(
        cfg,
        ctx.netlink.clone(),
        ctx.health.clone(),
        name,
        ctx.speakers.clone(),
    );
    if let Some(rx) = &mut allowed {
        let now = rx.borrow_and_update().clone();
        r.set_speakers(&now);
    }
    r.bind().await?;
    let now = Instant::now();
    let actions = if r.usable {
        r.fsm.start(now)
    } else {
        r.fsm.on_link(false, now)
    };
    r.apply(actions).await;
    r.report();
    info!(vrid = r.cfg.fsm.vrid, interface = %r.cfg.interface, primary = %r.fsm.primary(),
        priority = r.cfg.fsm.priority, version = r.cfg.version.number(),
        vips = ?r.cfg.vips, "group started");
    loop {
        let deadline = [r.fsm.next_deadline(), r.probe_at, r.resync_at]
            .into_iter()
            .flatten()
            .min();
        let (socket, conflicts) = match r.bound.as_mut() {
            Some(b) => (Some(&mut b.socket), Some(&mut b.conflicts)),
            None => (None, None),
        };
        tokio::select! {
            () = ctx.cancel.cancelled() => break,
            Some(new) = next_value(&mut vips) => r.set_vips(new.unwrap_or_default()).await,
            Some(new) = next_value(&mut router) => r.reconfigure(new).await,
            () = sleep_until(deadline.map(|d| d.checked_sub(TIMER_SLACK).unwrap_or(d))) => {
                let now = deadline.map_or_else(Instant::now, |d| Instant::now().max(d));
                if r.probe_at.is_some_and(|t| t <= now) {
                    r.probe_at = None;
                    r.probe();
                }
                if r.resync_at.is_some_and(|t| t <= now) {
                    r.resync_at = None;
                    r.resync_addresses().await;
                }
                if r.fsm.next_deadline().is_some_and(|t| t <= now) {
                    // What arrived while the group was busy (adding 1,000 addresses) is heard
                    // before a timer decides: a queued advert from the master resets the down
                    // timer.
                    r.drain().await;
                    let actions = r.fsm.on_timer(now);
                    r.apply(actions).await;
                }
            }
            got = recv_advert(socket) => match got {
                Ok(Ok(d)) => r.on_datagram(&d).await,
                Ok(Err(drop)) => r.dropped(&drop),
                Err(e) => warn!(vrid = r.cfg.fsm.vrid, error = %e, "VRRP receive failed"),
            },
            Ok(()) = dump.changed() => r.dump(),
            Some(now) = next_value(&mut allowed) => r.set_speakers(&now),
            claim = recv_claim(conflicts) => match claim {
                Ok((ip, mac)) => r.on_claim(ip, mac),
                Err(e) => warn!(vrid = r.cfg.fsm.vrid, error = %e, "ARP/NA receive failed"),
            },
            ev = link_events.recv() => match ev {
                Ok(LinkEvent::Link(link)) => r.on_link_event(link).await?,
                Ok(LinkEvent::Gone { index }) if r.bound_to(index) => r.unbind("was deleted").await,
                Ok(LinkEvent::Addresses { index }) if r.bound_to(index) => {
                    // Coalesced: adding 1,000 addresses makes 1,000 events, each of which would
                    // list every address again.
                    r.resync_at.get_or_insert_with(|| Instant::now() + RESYNC_DELAY);
                }
                Ok(LinkEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    r.refresh().await?;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    warn!("link monitor ended; link changes are no longer followed");
                    link_events = broadcast::channel(1).1;
                }
            },
        }
        if let Some(b) = &r.bound {
            metrics::counter!("fedplane_vipd_socket_drops_total", &r.labels)
                .absolute(u64::from(b.socket.drops()));
        }
        r.publish_master();
    }
    let actions = r.fsm.shutdown();
    r.apply(actions).await;
    // Whatever the state machine did, nothing of ours stays on the interface.
    r.remove_all().await;
    r.publish_source(None);
    r.publish_master();
    ctx.health.remove(&r.name);
    info!(vrid = r.cfg.fsm.vrid, interface = %r.cfg.interface, "group stopped");
    Ok(())
}

/// tokio's timer wheel rounds a deadline up to its next millisecond tick, so a timer fires up
/// to 1 ms late. Waking 1 ms early and treating the wake-up as the deadline makes VRRP timers fire
/// on time on average (within ±1 ms, which no peer can tell apart).
const TIMER_SLACK: std::time::Duration = std::time::Duration::from_millis(1);

/// After becoming master, claims of our addresses are not conflicts for this long: a master we
/// took over from (preemption) still has them for a moment and answers ARP and neighbour
/// solicitations until it hears us. Then each address is probed.
const TAKEOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Address events are followed this long after the first of a burst, all at once.
const RESYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Datagrams read at most before a due timer is handled.
const DRAIN_MAX: usize = 256;

/// A conflict on one virtual address is logged at most this often (each is counted).
const CONFLICT_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The next value of an input of the group (its addresses, settings, allowed speakers);
/// `None` at once without one, or once its sender is gone.
async fn next_value<T: Clone>(rx: &mut Option<watch::Receiver<T>>) -> Option<T> {
    let r = rx.as_mut()?;
    if r.changed().await.is_err() {
        *rx = None;
        return None;
    }
    Some(r.borrow_and_update().clone())
}

/// The next datagram on the group's socket; pending while it has none.
async fn recv_advert(
    socket: Option<&mut VrrpSocket>,
) -> std::io::Result<Result<Datagram, DropReason>> {
    match socket {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The next address claim heard on the interface; pending while unbound.
async fn recv_claim(watch: Option<&mut ConflictWatch>) -> std::io::Result<(IpAddr, Mac)> {
    match watch {
        Some(w) => w.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

impl Runner {
    fn new(
        cfg: GroupSettings,
        netlink: Netlink,
        health: Arc<Health>,
        name: String,
        speakers: Option<GroupEnds>,
    ) -> Self {
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
        metrics::counter!("fedplane_vipd_socket_drops_total", &labels).absolute(0);
        metrics::counter!("fedplane_vipd_address_conflicts_total", &labels).absolute(0);
        let unspecified = if cfg.v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let fsm = Router::new(cfg.fsm.clone(), unspecified, Instant::now());
        let (listed, excess) = packet::listed_of(cfg.vips.iter().map(IpNet::addr));
        if excess > 0 {
            warn!(vrid = cfg.fsm.vrid, interface = %cfg.interface, listed = listed.len(), excess,
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
        Self {
            cfg,
            expected,
            fsm,
            netlink,
            bound: None,
            has_primary: false,
            usable: false,
            held: BTreeSet::new(),
            labels,
            health,
            name,
            conflicts: BTreeMap::new(),
            probe_at: None,
            resync_at: None,
            dad_failed: None,
            bind_error: None,
            foreign_warned: BTreeMap::new(),
            clamp_warned: None,
            speakers,
            master_published: None,
        }
    }

    fn bound_to(&self, index: u32) -> bool {
        self.bound.as_ref().is_some_and(|b| b.link.index == index)
    }

    /// Finds the interface by name and binds to it; without one the group waits in fault.
    /// Only a socket that cannot be opened (no CAP_NET_RAW) is an error.
    async fn bind(&mut self) -> Result<(), GroupError> {
        match self.netlink.link(&self.cfg.interface).await {
            Ok(link) => self.bind_to(link).await?,
            Err(NetlinkError::NoInterface(_)) => {
                warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface,
                    "no such interface (yet): the group is in fault until it appears");
            }
            Err(e) => warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface,
                error = %e, "cannot look up the interface; the group is in fault"),
        }
        self.update_usable().await;
        Ok(())
    }

    /// Binds to `link`. Sockets that cannot be opened for want of permission stop the group;
    /// any other failure (the interface vanished meanwhile, has no IPv6, ...) leaves it in
    /// fault, to try again on the interface's next change.
    async fn bind_to(&mut self, link: Link) -> Result<(), GroupError> {
        match self.open_sockets(link).await {
            Ok(()) => {
                self.bind_error = None;
                Ok(())
            }
            Err(GroupError::Socket { what, source, .. })
                if source.kind() != std::io::ErrorKind::PermissionDenied =>
            {
                warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, error = %source,
                    "cannot open the {what} socket on the interface; fault until it changes");
                self.bind_error = Some(format!("cannot open the {what} socket: {source}"));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn open_sockets(&mut self, link: Link) -> Result<(), GroupError> {
        let (vrid, interface) = (self.cfg.fsm.vrid, self.cfg.interface.clone());
        let sock_err = |what, source| GroupError::Socket {
            vrid,
            interface: interface.clone(),
            what,
            source,
        };
        let socket = VrrpSocket::open(
            &link.name,
            link.index,
            self.cfg.v6,
            self.cfg.unicast_peers.is_empty(),
        )
        .map_err(|e| sock_err("VRRP", e))?;
        let announcer = Announcer::open(link.index, link.mac).map_err(|e| sock_err("packet", e))?;
        let conflicts = ConflictWatch::open(&link.name, link.index, self.cfg.v6)
            .map_err(|e| sock_err("ARP/ICMPv6", e))?;
        if !self.cfg.v6 {
            crate::netlink::promote_secondaries(&link.name);
        }
        self.bound = Some(Bound {
            link,
            socket,
            announcer,
            conflicts,
            stale: false,
        });
        self.resync_addresses().await;
        Ok(())
    }

    /// The interface is gone (deleted, or renamed away): fault until one of that name appears.
    async fn unbind(&mut self, why: &str) {
        if self.bound.is_none() {
            return;
        }
        // A deleted interface took our addresses with it; a renamed one still has them, and
        // they must not stay where no group follows them.
        self.remove_all().await;
        self.bound = None;
        warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface,
            "interface {why}: the group is in fault until it is back");
        self.interface_changed("gone");
        self.has_primary = false;
        self.update_usable().await;
    }

    fn interface_changed(&self, kind: &str) {
        let mut l = self.labels.to_vec();
        l.push(("kind", kind.to_owned()));
        metrics::counter!("fedplane_vipd_interface_changes_total", &l).increment(1);
    }

    /// An interface appeared or changed: ours by name (bind again if it is a new one with the
    /// same name; follow its MAC and carrier), or the one we were bound to renamed away.
    async fn on_link_event(&mut self, link: Link) -> Result<(), GroupError> {
        if link.name != self.cfg.interface {
            if self.bound_to(link.index) {
                self.unbind("was renamed").await;
            }
            return Ok(());
        }
        let Some(b) = self.bound.as_mut().filter(|b| b.link.index == link.index) else {
            info!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, index = link.index,
                "interface appeared; binding to it");
            self.interface_changed("appeared");
            self.held.clear();
            self.bind_to(link).await?;
            self.update_usable().await;
            return Ok(());
        };
        let mac_changed = b.link.mac != link.mac;
        let came_up = link.up && !b.link.up;
        if mac_changed {
            b.announcer.set_mac(link.mac);
        }
        b.link = link;
        if mac_changed {
            info!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, "MAC address changed");
            self.interface_changed("mac");
            if self.fsm.state() == State::Master {
                // Hosts still map our addresses to the old MAC: point them at the new one.
                self.announce();
            }
        }
        if came_up {
            // Addresses may have changed while it was down (IPv6: tentative again).
            self.resync_addresses().await;
        }
        self.update_usable().await;
        Ok(())
    }

    /// Events were lost: look the interface up again and re-read its addresses.
    async fn refresh(&mut self) -> Result<(), GroupError> {
        match self.netlink.link(&self.cfg.interface).await {
            Ok(link) => self.on_link_event(link).await?,
            Err(NetlinkError::NoInterface(_)) => self.unbind("is gone").await,
            Err(e) => warn!(vrid = self.cfg.fsm.vrid, error = %e, "cannot look up the interface"),
        }
        self.resync_addresses().await;
        Ok(())
    }

    /// Enters or leaves fault as the interface, its carrier and the source address allow.
    async fn update_usable(&mut self) {
        let mut usable = self.bound.as_ref().is_some_and(|b| b.link.up) && self.has_primary;
        let stale = self.bound.as_ref().is_some_and(|b| b.stale);
        if usable && !self.usable && stale && !self.reopen_socket() {
            usable = false;
        }
        if let Some(b) = self.bound.as_mut().filter(|_| !usable) {
            b.stale = true;
        }
        if usable != self.usable {
            self.usable = usable;
            info!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, usable, "link changed");
            let actions = self.fsm.on_link(usable, Instant::now());
            self.apply(actions).await;
        }
        self.report();
    }

    /// A master advertised an interval longer than a backup learns: counted, and warned about
    /// at most once a minute.
    fn clamped(
        &mut self,
        src: IpAddr,
        advertised: std::time::Duration,
        learnt: std::time::Duration,
    ) {
        metrics::counter!("fedplane_vipd_interval_clamped_total", &self.labels).increment(1);
        let now = Instant::now();
        if self
            .clamp_warned
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(60))
        {
            return;
        }
        self.clamp_warned = Some(now);
        warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, %src, ?advertised, ?learnt,
            "a master advertises a longer interval than a backup learns; following the bound (a forged advert, or intervals more than 10 times apart)");
    }

    /// New state machine settings (a reload): priority, timers, preemption, in place.
    async fn reconfigure(&mut self, new: RouterConfig) {
        if new == self.cfg.fsm {
            return;
        }
        info!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, priority = new.priority,
            advert_interval = ?new.advert_interval, "settings changed in place");
        self.cfg.fsm = new.clone();
        self.expected.interval = new.advert_interval;
        let actions = self.fsm.reconfigure(new, Instant::now());
        self.apply(actions).await;
    }

    /// Logs the group's state (SIGUSR1).
    fn dump(&self) {
        let link = self.bound.as_ref().map(|b| &b.link);
        info!(group = %self.name, state = self.fsm.state().name(), priority = self.cfg.fsm.priority,
            primary = %self.fsm.primary(), usable = self.usable,
            interface_index = ?link.map(|l| l.index),
            mac = ?link.map(|l| l.mac.map(|b| format!("{b:02x}")).join(":")),
            addresses = self.cfg.vips.len(), held = ?self.held,
            next_timer_in = ?self.fsm.next_deadline().map(|t| t.saturating_duration_since(Instant::now())),
            socket_drops = self.bound.as_ref().map_or(0, |b| b.socket.drops()),
            "group state");
    }

    /// Opens the VRRP socket again on leaving fault, when it lived through the fault: what
    /// happened meanwhile (an MTU below 1280 destroys the interface's IPv6 state, multicast
    /// memberships included) may have left it deaf. False if it cannot be opened (the group
    /// stays in fault).
    fn reopen_socket(&mut self) -> bool {
        let Some(b) = &mut self.bound else {
            return false;
        };
        let multicast = self.cfg.unicast_peers.is_empty();
        if multicast {
            b.socket.leave();
        }
        match VrrpSocket::open(&b.link.name, b.link.index, self.cfg.v6, multicast) {
            Ok(s) => {
                b.socket = s;
                b.stale = false;
                self.bind_error = None;
                true
            }
            Err(e) => {
                warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, error = %e,
                    "cannot open the VRRP socket again; fault until the interface changes");
                self.bind_error = Some(format!("cannot open the VRRP socket: {e}"));
                false
            }
        }
    }

    /// Tells /readyz whether the group takes part, or why not.
    fn report(&self) {
        let i = &self.cfg.interface;
        let standing = match (&self.bound, &self.bind_error) {
            _ if self.usable => Ok(()),
            (_, Some(e)) => Err(format!("interface {i}: {e}")),
            (None, None) => Err(format!("interface {i} does not exist")),
            (Some(b), None) if !b.link.up => Err(format!("interface {i} is down (no carrier)")),
            (Some(_), None) if self.dad_failed.is_some() => Err(format!(
                "interface {i}: duplicate address detection failed for {} (another host has it): no address to send adverts from",
                self.dad_failed.map(|a| a.to_string()).unwrap_or_default()
            )),
            (Some(_), None) if self.cfg.v6 => Err(format!(
                "interface {i} has no usable IPv6 link-local address (none, or duplicate address detection still running)"
            )),
            (Some(_), None) => Err(format!(
                "interface {i} has no IPv4 address to send adverts from"
            )),
        };
        self.health.set(&self.name, standing);
    }

    /// Someone claims address `ip` with `mac`: a split brain if we hold it as master and the
    /// MAC is not ours. Counted, and logged at most every 10 s per address.
    fn on_claim(&mut self, ip: IpAddr, mac: Mac) {
        let Some(b) = &self.bound else { return };
        // Within the grace after a takeover (until the probes go), claims are not conflicts.
        let settled = self.probe_at.is_none();
        if mac == b.link.mac
            || self.fsm.state() != State::Master
            || !settled
            || !self.held.iter().any(|v| v.addr() == ip)
        {
            return;
        }
        metrics::counter!("fedplane_vipd_address_conflicts_total", &self.labels).increment(1);
        let now = Instant::now();
        if self
            .conflicts
            .get(&ip)
            .is_some_and(|t| now.duration_since(*t) < CONFLICT_REPORT_EVERY)
        {
            return;
        }
        self.conflicts.insert(ip, now);
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, vip = %ip, %mac,
            "another host claims a virtual address we hold as master (split brain?)");
    }

    fn dropped(&mut self, drop: &DropReason) {
        let mut l = self.labels.to_vec();
        l.push(("reason", drop.label().to_owned()));
        metrics::counter!("fedplane_vipd_adverts_dropped_total", &l).increment(1);
        debug!(vrid = self.cfg.fsm.vrid, reason = %drop, "advert dropped");
        if let DropReason::Foreign(source) = drop {
            self.foreign(*source);
        }
    }

    /// An advert from a speaker the group does not allow: counted by source (the first 64
    /// sources named, later ones as `source="other"`, so spoofed sources cannot grow the metric
    /// or this map without bound), warned about at most once a minute per source, and in
    /// Kubernetes mode reported for a Warning Event at the same pace.
    fn foreign(&mut self, source: IpAddr) {
        /// A foreign speaker is warned about at most this often.
        const FOREIGN_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
        /// Sources named in the metric.
        const FOREIGN_SOURCES: usize = 64;
        let now = Instant::now();
        let named = self.foreign_warned.len() < FOREIGN_SOURCES
            || self.foreign_warned.contains_key(&Some(source));
        let key = named.then_some(source);
        let mut l = self.labels.to_vec();
        l.push((
            "source",
            key.map_or_else(|| "other".to_owned(), |s| s.to_string()),
        ));
        metrics::counter!("fedplane_vipd_foreign_adverts_total", &l).increment(1);
        if self
            .foreign_warned
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < FOREIGN_WARN_EVERY)
        {
            return;
        }
        self.foreign_warned.insert(key, now);
        warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, %source,
            "advert from a speaker that is not allowed in this group refused (warned once a minute per source)");
        if let Some(s) = &self.speakers {
            // Never blocks the group: a full queue loses the report, not the count.
            let _ = s.foreign.try_send(Foreign {
                vrid: self.cfg.fsm.vrid,
                interface: self.cfg.interface.clone(),
                source,
            });
        }
    }

    /// Kubernetes mode learnt who may speak: the nodes running fedplane-vipd, plus the group's
    /// own `peers` (speakers outside the cluster, such as a keepalived). Until the cluster is
    /// listed, the group's `peers` alone (none: anyone).
    fn set_speakers(&mut self, allowed: &Allowed) {
        let peers = self.cfg.peers.iter().copied();
        self.expected.speakers = match allowed {
            Some(nodes) => Some(nodes.iter().copied().chain(peers).collect()),
            None => (!self.cfg.peers.is_empty()).then(|| peers.collect()),
        };
    }

    /// Tells the other nodes (Kubernetes mode) which address this group sends from.
    fn publish_source(&self, source: Option<IpAddr>) {
        let Some(s) = &self.speakers else { return };
        let key = (self.cfg.interface.clone(), self.cfg.fsm.vrid, self.cfg.v6);
        s.own.send_if_modified(|m| match source {
            Some(a) => m.insert(key, a) != Some(a),
            None => m.remove(&key).is_some(),
        });
    }

    /// Tells Kubernetes mode who this group takes for its master (the endpoint rule of
    /// `Local` Services picks groups by their masters' nodes).
    fn publish_master(&mut self) {
        let Some(s) = &self.speakers else { return };
        let master = self.fsm.master();
        // Called at every turn of the group's loop (every advert): cheap when nothing changed.
        if master == self.master_published {
            return;
        }
        self.master_published = master;
        let key = (self.cfg.interface.clone(), self.cfg.fsm.vrid, self.cfg.v6);
        s.masters.send_if_modified(|m| match master {
            Some(a) => m.insert(key, a) != Some(a),
            None => m.remove(&key).is_some(),
        });
    }

    /// Reads and handles the datagrams already queued (at most [`DRAIN_MAX`]).
    async fn drain(&mut self) {
        for _ in 0..DRAIN_MAX {
            let Some(got) = self.bound.as_mut().and_then(|b| b.socket.try_recv()) else {
                return;
            };
            match got {
                Ok(Ok(d)) => self.on_datagram(&d).await,
                Ok(Err(drop)) => self.dropped(&drop),
                Err(e) => {
                    warn!(vrid = self.cfg.fsm.vrid, error = %e, "VRRP receive failed");
                    return;
                }
            }
        }
    }

    async fn on_datagram(&mut self, d: &Datagram) {
        match receive::accept(&self.expected, self.fsm.primary(), d) {
            Ok(heard) => {
                tracing::trace!(vrid = self.cfg.fsm.vrid, src = %heard.src, priority = heard.priority, "advert");
                if let Some(advertised) = heard.clamped {
                    self.clamped(heard.src, advertised, heard.interval);
                }
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
            match self.send(&wire, src, dst) {
                Ok(()) => {
                    metrics::counter!("fedplane_vipd_adverts_sent_total", &self.labels)
                        .increment(1);
                }
                Err(e) => warn!(vrid = self.cfg.fsm.vrid, %dst, error = %e, "advert not sent"),
            }
        }
    }

    /// Sends one advert on the group's socket (none while the interface is gone).
    fn send(&self, wire: &[u8], src: IpAddr, dst: IpAddr) -> std::io::Result<()> {
        match &self.bound {
            Some(b) => b.socket.send(wire, src, dst),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the interface is gone",
            )),
        }
    }

    /// Asks whether anyone else has our addresses (an answer is a conflict, see `on_claim`).
    fn probe(&self) {
        let Some(b) = &self.bound else { return };
        for vip in &self.held {
            if let Err(e) = b.announcer.probe(vip.addr()) {
                debug!(vip = %vip.addr(), error = %e, "ARP probe not sent");
            }
        }
    }

    fn announce(&self) {
        let Some(b) = &self.bound else { return };
        for vip in &self.cfg.vips {
            match b.announcer.announce(vip.addr()) {
                Ok(()) => {
                    metrics::counter!("fedplane_vipd_announcements_sent_total", &self.labels)
                        .increment(1);
                }
                Err(e) => warn!(vip = %vip.addr(), error = %e, "gratuitous ARP/NA not sent"),
            }
        }
    }

    fn transition(&mut self, from: State, to: State) {
        self.probe_at = (to == State::Master).then(|| Instant::now() + TAKEOVER_GRACE);
        info!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface,
            from = from.name(), to = to.name(), "state changed");
        metrics::gauge!("fedplane_vipd_state", &self.labels).set(to.gauge());
        let mut l = self.labels.to_vec();
        l.push(("to", to.name().to_owned()));
        metrics::counter!("fedplane_vipd_transitions_total", &l).increment(1);
    }
}
