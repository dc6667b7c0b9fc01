//! A group's virtual addresses on its interface: added and removed by netlink as the state
//! machine says, a changed address set (Kubernetes mode, or a reload) followed at once,
//! addresses removed behind our back put back, and the source address of our adverts followed.

use std::collections::BTreeSet;

use futures::StreamExt;
use ipnet::IpNet;
use tracing::{info, warn};

use super::Runner;
use crate::fsm::{OWNER, State};
use crate::netlink::{primary_of, promote_secondaries};

impl Runner {
    /// The interface's index, while bound.
    fn index(&self) -> Option<u32> {
        self.bound.as_ref().map(|b| b.link.index)
    }

    /// The group's addresses changed (Kubernetes mode): as master, drop the old ones and add
    /// and announce the new ones at once.
    pub(super) async fn set_vips(&mut self, vips: Vec<IpNet>) {
        let old: BTreeSet<IpNet> = self.cfg.vips.iter().copied().collect();
        let new: BTreeSet<IpNet> = vips.iter().copied().collect();
        if old == new {
            return;
        }
        let added: Vec<IpNet> = new.difference(&old).copied().collect();
        let removed: Vec<IpNet> = old.difference(&new).copied().collect();
        info!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, ?added, ?removed,
            "virtual addresses changed");
        self.cfg.vips = vips;
        self.expected.addresses = crate::packet::listed_of(self.cfg.vips.iter().map(IpNet::addr))
            .0
            .into_iter()
            .collect();
        let removed: Vec<IpNet> = removed
            .into_iter()
            .filter(|v| self.held.contains(v))
            .collect();
        if !self.cfg.v6 && !removed.is_empty() {
            promote_secondaries(&self.cfg.interface);
        }
        for vip in removed {
            let Some(index) = self.index() else { break };
            match self.netlink.remove(index, vip).await {
                Ok(_) => {
                    self.held.remove(&vip);
                }
                // Still held: removed with the others when the group gives up or stops.
                Err(e) => {
                    warn!(%vip, interface = %self.cfg.interface, error = %e, "cannot remove virtual address");
                }
            }
        }
        if self.fsm.state() == State::Master {
            self.add_all().await;
            if let Some(b) = &self.bound {
                for vip in &added {
                    if let Err(e) = b.announcer.announce(vip.addr()) {
                        warn!(vip = %vip.addr(), error = %e, "gratuitous ARP/NA not sent");
                    }
                }
            }
        }
        metrics::gauge!("fedplane_vipd_addresses_held", &self.labels).set(self.held.len() as f64);
    }

    /// The interface's addresses changed: follow a new primary address (adverts must come from
    /// an address we have; without a usable one the group is in fault), and as master put back
    /// a virtual address someone removed.
    pub(super) async fn resync_addresses(&mut self) {
        let Some(index) = self.index() else { return };
        let present = match self.netlink.addresses(index).await {
            Ok(p) => p,
            Err(e) => {
                warn!(vrid = self.cfg.fsm.vrid, error = %e, "cannot list addresses");
                return;
            }
        };
        let old = self.fsm.primary();
        let owner = self.cfg.fsm.priority == OWNER;
        let found = primary_of(&present, self.cfg.v6, &self.cfg.vips, owner);
        match found {
            Some(p) if p != old => {
                info!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, %old, new = %p, "primary address changed");
                self.fsm.set_primary(p);
            }
            Some(_) => {}
            None if self.has_primary => {
                warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, v6 = self.cfg.v6,
                    "no usable address to send adverts from (IPv6: none, or still tentative); fault until there is one");
            }
            None => {}
        }
        self.publish_source(found);
        let dad_failed = present
            .iter()
            .find(|a| a.dad_failed && a.net.addr().is_ipv6() == self.cfg.v6)
            .map(|a| a.net.addr());
        if dad_failed != self.dad_failed {
            self.dad_failed = dad_failed;
            self.report();
        }
        if found.is_some() != self.has_primary {
            self.has_primary = found.is_some();
            self.update_usable().await;
        }
        if self.fsm.state() != State::Master {
            return;
        }
        let present_nets: std::collections::HashSet<IpNet> =
            present.iter().map(|a| a.net).collect();
        let missing = self.cfg.vips.iter().any(|v| !present_nets.contains(v));
        if missing {
            warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, "a virtual address was removed behind our back; adding it again");
            self.held.retain(|v| present_nets.contains(v));
            self.add_all().await;
            self.announce();
        }
    }

    /// Adds every address not held yet, many netlink requests in flight at once (1,000
    /// addresses one after the other would keep the group from advertising for too long).
    pub(super) async fn add_all(&mut self) {
        let Some(index) = self.index() else { return };
        let todo: Vec<IpNet> = self
            .cfg
            .vips
            .iter()
            .filter(|v| !self.held.contains(v))
            .copied()
            .collect();
        let nl = &self.netlink;
        let results: Vec<(IpNet, Result<bool, crate::netlink::NetlinkError>)> =
            futures::stream::iter(todo)
                .map(|vip| async move { (vip, nl.add(index, vip).await) })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
        let mut present = None;
        for (vip, res) in results {
            match res {
                Ok(true) => {
                    self.held.insert(vip);
                }
                Ok(false) => {
                    // Already there: ours from before, or an operator's address we leave alone.
                    if present.is_none() {
                        present = Some(self.netlink.addresses(index).await.unwrap_or_default());
                    }
                    let ours = present
                        .as_ref()
                        .is_some_and(|p| p.iter().any(|a| a.net == vip && a.ours));
                    if ours {
                        self.held.insert(vip);
                    } else {
                        warn!(%vip, interface = %self.cfg.interface, "address already configured by someone else; leaving it alone");
                    }
                }
                Err(e) => {
                    warn!(%vip, interface = %self.cfg.interface, error = %e, "cannot add virtual address");
                }
            }
        }
        metrics::gauge!("fedplane_vipd_addresses_held", &self.labels).set(self.held.len() as f64);
    }

    /// Removes every address we hold, many requests in flight at once.
    pub(super) async fn remove_all(&mut self) {
        let Some(index) = self.index() else {
            self.held.clear();
            metrics::gauge!("fedplane_vipd_addresses_held", &self.labels).set(0.0);
            return;
        };
        if !self.cfg.v6 && !self.held.is_empty() {
            promote_secondaries(&self.cfg.interface);
        }
        let nl = &self.netlink;
        let failed: Vec<(IpNet, crate::netlink::NetlinkError)> =
            futures::stream::iter(std::mem::take(&mut self.held))
                .map(|vip| async move { (vip, nl.remove(index, vip).await) })
                .buffer_unordered(IN_FLIGHT)
                .filter_map(|(vip, r)| async move { r.err().map(|e| (vip, e)) })
                .collect()
                .await;
        for (vip, e) in failed {
            // Still ours on the interface: tried again with the next removal.
            warn!(%vip, interface = %self.cfg.interface, error = %e, "cannot remove virtual address");
            self.held.insert(vip);
        }
        metrics::gauge!("fedplane_vipd_addresses_held", &self.labels).set(self.held.len() as f64);
    }
}

/// Netlink requests in flight at once when adding or removing a group's addresses.
const IN_FLIGHT: usize = 64;
