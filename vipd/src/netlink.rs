//! Interfaces and addresses through rtnetlink: look up a link, find our primary address, add and
//! remove virtual addresses, and follow link up/down.
//!
//! Addresses we add carry `IFA_PROTO` [`ADDR_PROTO`] (`ip -d addr` shows `proto 102`). Only
//! addresses with that mark are ever removed, so an address an operator configured by hand is
//! never touched, and one left behind by a killed vipd is recognised and cleaned up at start.

use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
    AddressScope,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::announce::Mac;

/// The `IFA_PROTO` value that marks addresses fedplane-vipd added.
pub const ADDR_PROTO: u8 = 102;

/// Netlink failures.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// No interface of that name.
    #[error("no interface named {0}")]
    NoInterface(String),
    /// A request failed.
    #[error("netlink: {0}")]
    Request(#[from] rtnetlink::Error),
}

/// What we need to know of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Name.
    pub name: String,
    /// Index.
    pub index: u32,
    /// Hardware address (zero when it has none, e.g. a tunnel).
    pub mac: Mac,
    /// Administratively up and carrier present.
    pub up: bool,
}

/// One address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Address and prefix.
    pub net: IpNet,
    /// Added by us (marked with [`ADDR_PROTO`]).
    pub ours: bool,
    /// A secondary address of its subnet (IPv4).
    pub secondary: bool,
    /// Link-local scope.
    pub link_local: bool,
    /// Not usable as a source: duplicate address detection is still running (tentative) or
    /// found the address in use (dadfailed).
    pub tentative: bool,
    /// Duplicate address detection found the address in use by another host (it stays
    /// unusable until the operator acts).
    pub dad_failed: bool,
}

/// A netlink request handle.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a netlink socket, serviced by a task on the current runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The interface called `name`.
    pub async fn link(&self, name: &str) -> Result<Link, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(link_of(&msg)),
            Ok(None) => Err(NetlinkError::NoInterface(name.to_owned())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                Err(NetlinkError::NoInterface(name.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every address on interface `index`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<Address>, NetlinkError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await?;
        Ok(msgs.iter().filter_map(address_of).collect())
    }

    /// Adds `net` to interface `index`, marked as ours (IPv6 without duplicate address
    /// detection). `Ok(false)`: it was there already.
    pub async fn add(&self, index: u32, net: IpNet) -> Result<bool, NetlinkError> {
        let mut req = self
            .handle
            .address()
            .add(index, net.addr(), net.prefix_len());
        let msg = req.message_mut();
        msg.attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(
                ADDR_PROTO,
            )));
        if net.addr().is_ipv6() {
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes every address marked as ours from interface `name` (left by an earlier run that
    /// was killed); returns them.
    pub async fn remove_ours(&self, name: &str) -> Result<Vec<IpNet>, NetlinkError> {
        let link = self.link(name).await?;
        promote_secondaries(name);
        let mut removed = Vec::new();
        for a in self
            .addresses(link.index)
            .await?
            .into_iter()
            .filter(|a| a.ours)
        {
            if self.remove(link.index, a.net).await? {
                removed.push(a.net);
            }
        }
        Ok(removed)
    }

    /// Removes `net` from interface `index`. `Ok(false)`: it was not there.
    pub async fn remove(&self, index: u32, net: IpNet) -> Result<bool, NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = net.prefix_len();
        msg.header.family = if net.addr().is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::EADDRNOTAVAIL || e.raw_code() == -libc::ENODEV =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The address adverts are sent from, among an interface's `addrs`: for IPv4 a primary address
/// (a secondary one will do when a VIP got promoted) that is neither ours nor one of `vips`; for
/// IPv6 the link-local address (RFC 5798 5.1.2.2). A tentative address (duplicate address
/// detection still running, or failed) is not usable: the kernel refuses to send from it.
///
/// The address `owner` (priority 255) may have nothing but its virtual addresses configured
/// (the VIP is the interface's own address, RFC 5798 1.4): it then sends from one of them, as
/// long as it is not one we added.
pub fn primary_of(addrs: &[Address], v6: bool, vips: &[IpNet], owner: bool) -> Option<IpAddr> {
    let usable = |a: &&Address| {
        a.net.addr().is_ipv6() == v6 && !a.ours && !a.tentative && (!v6 || a.link_local)
    };
    let vips: std::collections::HashSet<IpAddr> = vips.iter().map(IpNet::addr).collect();
    let is_vip = |a: &Address| vips.contains(&a.net.addr());
    addrs
        .iter()
        .filter(usable)
        .filter(|a| !is_vip(a))
        .min_by_key(|a| a.secondary)
        .or_else(|| {
            owner
                .then(|| addrs.iter().filter(usable).min_by_key(|a| a.secondary))
                .flatten()
        })
        .map(|a| a.net.addr())
}

/// Sets `promote_secondaries` on an interface we add IPv4 addresses to, as keepalived does:
/// with the kernel default (0), removing an address that is its subnet's primary deletes every
/// secondary address of the subnet with it, an operator's or the node's own included. Set when
/// a group binds and again before every removal (something may have reset it meanwhile); it
/// stays on when we stop (systemd-networkd turns it on for every interface anyway).
pub fn promote_secondaries(interface: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/promote_secondaries");
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => match std::fs::write(&path, "1") {
            Ok(()) => {
                info!(%interface, "promote_secondaries set, so removing a virtual address never removes other addresses of its subnet")
            }
            Err(e) => {
                warn!(%interface, error = %e, "cannot set promote_secondaries: removing a virtual address that is its subnet's primary would remove the subnet's other addresses")
            }
        },
        Err(e) => warn!(%interface, error = %e, "cannot read promote_secondaries"),
    }
}

/// A change the groups must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface appeared or changed (up/down, MAC, name).
    Link(Link),
    /// Interface `index` was deleted.
    Gone {
        /// Interface index.
        index: u32,
    },
    /// An address was added to or removed from interface `index`.
    Addresses {
        /// Interface index.
        index: u32,
    },
    /// Events were lost (netlink overrun): re-read everything.
    Resync,
}

/// Link and address changes from a multicast netlink socket serviced on the current runtime;
/// subscribe to the returned sender.
pub fn watch_links() -> Result<broadcast::Sender<LinkEvent>, NetlinkError> {
    let (conn, _handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])?;
    tokio::spawn(conn);
    let (tx, _) = broadcast::channel(256);
    let sender = tx.clone();
    tokio::spawn(async move {
        use rtnetlink::packet_core::NetlinkPayload;
        while let Some((msg, _)) = messages.next().await {
            let ev = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    LinkEvent::Link(link_of(&link))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    LinkEvent::Gone {
                        index: link.header.index,
                    }
                }
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a),
                ) => LinkEvent::Addresses {
                    index: a.header.index,
                },
                NetlinkPayload::Overrun(_) => LinkEvent::Resync,
                _ => continue,
            };
            // No subscriber yet is fine: groups read the link state when they start.
            let _ = tx.send(ev);
        }
    });
    Ok(sender)
}

fn link_of(msg: &LinkMessage) -> Link {
    let mut mac = [0u8; 6];
    let mut name = String::new();
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Address(a) if a.len() == 6 => mac.copy_from_slice(a),
            LinkAttribute::IfName(n) => name.clone_from(n),
            _ => {}
        }
    }
    let flags = msg.header.flags;
    Link {
        name,
        index: msg.header.index,
        mac,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp),
    }
}

fn address_of(msg: &AddressMessage) -> Option<Address> {
    let mut addr = None;
    let mut ours = false;
    let unusable = AddressFlags::Tentative | AddressFlags::Dadfailed;
    let mut tentative = msg
        .header
        .flags
        .intersects(AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed);
    let mut dad_failed = msg.header.flags.contains(AddressHeaderFlags::Dadfailed);
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Flags(f) => {
                tentative |= f.intersects(unusable);
                dad_failed |= f.contains(AddressFlags::Dadfailed);
            }
            // IPv4 reports its own address as Local (Address is the peer on point-to-point).
            AddressAttribute::Local(a) => addr = Some(*a),
            AddressAttribute::Address(a) if addr.is_none() => addr = Some(*a),
            AddressAttribute::Protocol(AddressProtocol::Other(p)) => ours = *p == ADDR_PROTO,
            _ => {}
        }
    }
    let net = IpNet::new(addr?, msg.header.prefix_len).ok()?;
    Some(Address {
        net,
        ours,
        secondary: msg.header.flags.contains(AddressHeaderFlags::Secondary),
        link_local: msg.header.scope == AddressScope::Link,
        tentative,
        dad_failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(net: &str, ours: bool, secondary: bool, tentative: bool) -> Address {
        let net: IpNet = net.parse().expect("net");
        Address {
            link_local: matches!(net.addr(), IpAddr::V6(a) if a.is_unicast_link_local()),
            net,
            ours,
            secondary,
            tentative,
            dad_failed: false,
        }
    }

    fn vips(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|v| v.parse().expect("vip")).collect()
    }

    #[test]
    fn the_source_is_a_primary_address_that_is_neither_ours_nor_a_vip() {
        let addrs = [
            addr("192.0.2.100/24", true, true, false),
            addr("192.0.2.7/24", false, true, false),
            addr("192.0.2.11/24", false, false, false),
        ];
        let v = vips(&["192.0.2.100/24"]);
        assert_eq!(
            primary_of(&addrs, false, &v, false),
            Some("192.0.2.11".parse().expect("ip"))
        );
        assert_eq!(
            primary_of(&addrs[..2], false, &v, false),
            Some("192.0.2.7".parse().expect("ip")),
            "a secondary will do"
        );
        assert_eq!(primary_of(&addrs[..1], false, &v, false), None);
    }

    #[test]
    fn a_tentative_link_local_address_is_no_source() {
        let addrs = [
            addr("fe80::1/64", false, false, true),
            addr("fd00::11/64", false, false, false),
        ];
        assert_eq!(primary_of(&addrs, true, &[], false), None);
        let ready = [addr("fe80::1/64", false, false, false)];
        assert_eq!(
            primary_of(&ready, true, &[], false),
            Some("fe80::1".parse().expect("ip"))
        );
    }

    #[test]
    fn the_owner_may_send_from_its_own_virtual_address() {
        let addrs = [addr("192.0.2.11/24", false, false, false)];
        let v = vips(&["192.0.2.11/24"]);
        assert_eq!(primary_of(&addrs, false, &v, false), None);
        assert_eq!(
            primary_of(&addrs, false, &v, true),
            Some("192.0.2.11".parse().expect("ip"))
        );
        let added = [addr("192.0.2.11/24", true, false, false)];
        assert_eq!(
            primary_of(&added, false, &v, true),
            None,
            "not one we added"
        );
    }
}
