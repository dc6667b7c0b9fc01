//! A group's virtual addresses on its interface: added and removed by netlink as the state
//! machine says, a changed address set (Kubernetes mode, or a reload) followed at once,
//! addresses removed behind our back put back, and the source address of our adverts followed.

use std::collections::BTreeSet;

use ipnet::IpNet;
use tracing::{info, warn};

use super::Runner;
use crate::fsm::{OWNER, State};
use crate::netlink::primary_of;

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
        if found.is_some() != self.has_primary {
            self.has_primary = found.is_some();
            self.update_usable().await;
        }
        if self.fsm.state() != State::Master {
            return;
        }
        let missing = self
            .cfg
            .vips
            .iter()
            .any(|v| !present.iter().any(|a| a.net == *v));
        if missing {
            warn!(vrid = self.cfg.fsm.vrid, interface = %self.cfg.interface, "a virtual address was removed behind our back; adding it again");
            self.held.retain(|v| present.iter().any(|a| a.net == *v));
            self.add_all().await;
            self.announce();
        }
    }

    pub(super) async fn add_all(&mut self) {
        let Some(index) = self.index() else { return };
        for &vip in &self.cfg.vips {
            if self.held.contains(&vip) {
                continue;
            }
            match self.netlink.add(index, vip).await {
                Ok(true) => {
                    self.held.insert(vip);
                }
                Ok(false) => {
                    // Already there: ours from before, or an operator's address we leave alone.
                    let ours = self
                        .netlink
                        .addresses(index)
                        .await
                        .is_ok_and(|v| v.iter().any(|a| a.net == vip && a.ours));
                    if ours {
                        self.held.insert(vip);
                    } else {
                        warn!(%vip, interface = %self.cfg.interface, "address already configured by someone else; leaving it alone");
                    }
                }
                Err(e) => {
                    warn!(%vip, interface = %self.cfg.interface, error = %e, "cannot add virtual address")
                }
            }
        }
        metrics::gauge!("fedplane_vipd_addresses_held", &self.labels).set(self.held.len() as f64);
    }

    pub(super) async fn remove_all(&mut self) {
        let Some(index) = self.index() else {
            self.held.clear();
            return;
        };
        for vip in std::mem::take(&mut self.held) {
            if let Err(e) = self.netlink.remove(index, vip).await {
                warn!(%vip, interface = %self.cfg.interface, error = %e, "cannot remove virtual address");
            }
        }
        metrics::gauge!("fedplane_vipd_addresses_held", &self.labels).set(0.0);
    }
}
