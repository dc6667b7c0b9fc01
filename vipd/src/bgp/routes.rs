//! The kernel table BIRD announces from (`bgp.table`): vipd's routes written through
//! rtnetlink as `blackhole` routes of protocol [`ROUTE_PROTO`] (`ip route show table 102 proto
//! 102`). No `ip rule` points at the table, so the routes never change what the node
//! forwards; they only tell BIRD what to announce. Only routes with that protocol in that
//! table are ever changed, so anything an operator puts there is left alone.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::bird::ROUTE_PROTO;
use crate::netlink::NetlinkError;

/// What [`Table::apply`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Routes added.
    pub added: Vec<IpNet>,
    /// Routes removed.
    pub removed: Vec<IpNet>,
    /// Routes not added: another route to the destination is in the table (not ours).
    pub blocked: Vec<IpNet>,
}

/// The routes to add and to remove to go from `have` to `want`.
pub fn diff(have: &BTreeSet<IpNet>, want: &BTreeSet<IpNet>) -> Changes {
    Changes {
        added: want.difference(have).copied().collect(),
        removed: have.difference(want).copied().collect(),
        blocked: Vec::new(),
    }
}

/// vipd's routes in one kernel table.
#[derive(Debug, Clone)]
pub struct Table {
    handle: Handle,
    table: u32,
}

impl Table {
    /// Opens a netlink socket (serviced by a task on the current runtime) for `table`.
    pub fn connect(table: u32) -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { handle, table })
    }

    /// The table's number.
    pub fn id(&self) -> u32 {
        self.table
    }

    fn message(&self, net: IpNet) -> RouteMessage {
        let builder = RouteMessageBuilder::<IpAddr>::new();
        let builder = match builder.destination_prefix(net.addr(), net.prefix_len()) {
            Ok(b) => b,
            // (Only an address family mismatch fails, which an IpNet cannot have.)
            Err(_) => RouteMessageBuilder::<IpAddr>::new(),
        };
        builder
            .table_id(self.table)
            .protocol(RouteProtocol::Other(ROUTE_PROTO))
            .kind(RouteType::BlackHole)
            .build()
    }

    /// Adds the route to `net`. `Ok(false)`: a route to `net` is in the table already and is
    /// not ours (another protocol or type): it is left alone, and ours is not added.
    pub async fn add(&self, net: IpNet) -> Result<bool, NetlinkError> {
        match self.handle.route().add(self.message(net)).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the route to `net`; `Ok(false)`: it was not there.
    pub async fn remove(&self, net: IpNet) -> Result<bool, NetlinkError> {
        match self.handle.route().del(self.message(net)).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::ESRCH || e.raw_code() == -libc::ENOENT =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// vipd's routes in the table now (both families).
    pub async fn ours(&self) -> Result<BTreeSet<IpNet>, NetlinkError> {
        let mut out = BTreeSet::new();
        for probe in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let msgs: Vec<RouteMessage> = self
                .handle
                .route()
                .get(probe)
                .execute()
                .try_collect()
                .await?;
            out.extend(msgs.iter().filter_map(|m| self.ours_of(m)));
        }
        Ok(out)
    }

    fn ours_of(&self, m: &RouteMessage) -> Option<IpNet> {
        let table = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(m.header.table));
        if table != self.table
            || m.header.protocol != RouteProtocol::Other(ROUTE_PROTO)
            || m.header.kind != RouteType::BlackHole
        {
            return None;
        }
        let addr = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(d) => match d {
                rtnetlink::packet_route::route::RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
                rtnetlink::packet_route::route::RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
                _ => None,
            },
            _ => None,
        })?;
        IpNet::new(addr, m.header.destination_prefix_length).ok()
    }

    /// Makes the table hold exactly `want` of vipd's routes (as far as routes of others to
    /// the same destinations, never touched, allow: those are in [`Changes::blocked`]).
    pub async fn apply(&self, want: &BTreeSet<IpNet>) -> Result<Changes, NetlinkError> {
        let mut changes = diff(&self.ours().await?, want);
        let mut added = Vec::new();
        for net in std::mem::take(&mut changes.added) {
            if self.add(net).await? {
                added.push(net);
            } else {
                changes.blocked.push(net);
            }
        }
        changes.added = added;
        for net in &changes.removed {
            self.remove(*net).await?;
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<IpNet> {
        v.iter().map(|s| s.parse().expect("net")).collect()
    }

    #[test]
    fn diff_adds_and_removes_what_differs() {
        let c = diff(
            &set(&["10.4.0.1/32", "10.4.0.0/28"]),
            &set(&["10.4.0.0/28", "fd00::1/128"]),
        );
        assert_eq!(c.added, vec!["fd00::1/128".parse::<IpNet>().expect("net")]);
        assert_eq!(
            c.removed,
            vec!["10.4.0.1/32".parse::<IpNet>().expect("net")]
        );
    }

    /// In a network namespace of its own (root): routes added, listed, replaced and removed,
    /// and a route of another protocol in the same table left alone.
    #[test]
    fn routes_are_written_to_the_table_and_only_ours_are_changed() {
        fedplane_testkit::netns::require_root();
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let status = std::process::Command::new("ip")
                .args([
                    "route",
                    "add",
                    "blackhole",
                    "10.9.0.0/24",
                    "table",
                    "102",
                    "proto",
                    "static",
                ])
                .status()
                .expect("ip");
            // (`ip` runs in the thread's namespace: a child inherits it.)
            assert!(status.success());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let t = Table::connect(102).expect("netlink");
                let want = set(&["10.4.0.1/32", "10.4.0.0/28", "fd00::1/128"]);
                let c = t.apply(&want).await.expect("apply");
                assert_eq!(c.added.len(), 3);
                assert_eq!(t.ours().await.expect("ours"), want);
                let want = set(&["10.4.0.0/28"]);
                let c = t.apply(&want).await.expect("apply");
                assert_eq!(c.removed.len(), 2);
                assert_eq!(t.ours().await.expect("ours"), want);
                assert!(
                    !t.remove("10.4.0.1/32".parse().expect("net"))
                        .await
                        .expect("remove")
                );
                // Another protocol's route to a destination we want: left alone, reported.
                let c = t
                    .apply(&set(&["10.9.0.0/24", "10.4.0.0/28"]))
                    .await
                    .expect("apply");
                assert_eq!(
                    c.blocked,
                    vec!["10.9.0.0/24".parse::<IpNet>().expect("net")]
                );
                t.apply(&BTreeSet::new()).await.expect("apply");
            });
            let out = std::process::Command::new("ip")
                .args(["route", "show", "table", "102"])
                .output()
                .expect("ip");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("10.9.0.0/24"),
                "another protocol's route stays: {text}"
            );
            assert!(!text.contains("10.4.0"), "{text}");
        })
        .join()
        .expect("the namespace thread");
    }
}
