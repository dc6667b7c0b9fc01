//! Which routes this node announces, free of I/O.
//!
//! For every address of a `mode: bgp` pool that a Service holds, in this order:
//! the node shutting down, labelled `node.kubernetes.io/exclude-from-external-load-balancers`,
//! cordoned (unless `withdraw_when_cordoned: false`) or not Ready announces nothing; a node the
//! pool's `node_selector` leaves out announces nothing of it; a Service with
//! `externalTrafficPolicy: Local` is announced only by nodes with a ready endpoint of it; one
//! with `Cluster` by every node, unless it has no ready endpoint anywhere (and
//! `withdraw_without_endpoints`, the default). `Cluster` routes are the pool's aggregate
//! (`aggregation_length`), `Local` ones always host routes (an aggregate cannot follow each
//! node's endpoints). An address two Services share is announced when either says so.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::config::selects;
use crate::ipam::{Mode, Pools};

/// The label that takes a node out of external load balancing.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// This node as the decision sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Its name (EndpointSlices' `nodeName`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its `Ready` condition is true.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// fedplane-vipd is shutting down (SIGTERM).
    pub shutting_down: bool,
}

impl NodeView {
    /// Whether the node carries [`EXCLUDE_LABEL`] (any value, as Kubernetes reads it).
    pub fn excluded(&self) -> bool {
        self.labels.contains_key(EXCLUDE_LABEL)
    }
}

/// One Service as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcView {
    /// `namespace/name`.
    pub key: String,
    /// Its LoadBalancer addresses.
    pub addresses: Vec<IpAddr>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// The nodes with a ready endpoint of it.
    pub ready_nodes: BTreeSet<String>,
}

/// Why this node does not announce an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Withdrawn {
    /// fedplane-vipd is stopping.
    Shutdown,
    /// The node has [`EXCLUDE_LABEL`].
    Excluded,
    /// The node is cordoned.
    Cordoned,
    /// The node is not Ready.
    NodeNotReady,
    /// The pool's node selector leaves the node out.
    NotSelected,
    /// `Local`, and no ready endpoint on this node.
    NoLocalEndpoint,
    /// No ready endpoint anywhere.
    NoEndpoints,
}

impl Withdrawn {
    /// Every reason.
    pub const ALL: [Self; 7] = [
        Self::Shutdown,
        Self::Excluded,
        Self::Cordoned,
        Self::NodeNotReady,
        Self::NotSelected,
        Self::NoLocalEndpoint,
        Self::NoEndpoints,
    ];

    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::Excluded => "excluded",
            Self::Cordoned => "cordoned",
            Self::NodeNotReady => "node_not_ready",
            Self::NotSelected => "not_selected",
            Self::NoLocalEndpoint => "no_local_endpoint",
            Self::NoEndpoints => "no_endpoints",
        }
    }
}

/// What this node announces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// The routes (host routes or a pool's aggregates).
    pub routes: BTreeSet<IpNet>,
    /// The addresses announced.
    pub announced: BTreeSet<IpAddr>,
    /// Every other address of a `mode: bgp` pool, and why.
    pub withdrawn: BTreeMap<IpAddr, Withdrawn>,
}

/// The decision for `node` over `svcs` (see the module doc). Addresses outside `mode: bgp`
/// pools are not this module's (VRRP holds them).
pub fn decide(node: &NodeView, pools: &Pools, svcs: &[SvcView]) -> Decision {
    let Some(bgp) = pools.bgp() else {
        return Decision::default();
    };
    let node_reason = if node.shutting_down {
        Some(Withdrawn::Shutdown)
    } else if node.excluded() {
        Some(Withdrawn::Excluded)
    } else if node.unschedulable && bgp.withdraw_when_cordoned {
        Some(Withdrawn::Cordoned)
    } else if !node.ready {
        Some(Withdrawn::NodeNotReady)
    } else {
        None
    };
    let mut out = Decision::default();
    for svc in svcs {
        for &ip in &svc.addresses {
            let Some(pool) = pools.pool_of(ip).filter(|p| p.mode == Mode::Bgp) else {
                continue;
            };
            let pool_bgp = pool.bgp.clone().unwrap_or_default();
            let verdict = if let Some(r) = node_reason {
                Err(r)
            } else if !selects(&pool_bgp.node_selector, &node.labels) {
                Err(Withdrawn::NotSelected)
            } else if svc.local && !svc.ready_nodes.contains(&node.name) {
                Err(Withdrawn::NoLocalEndpoint)
            } else if !svc.local && svc.ready_nodes.is_empty() && bgp.withdraw_without_endpoints {
                Err(Withdrawn::NoEndpoints)
            } else {
                Ok(())
            };
            match verdict {
                Ok(()) => {
                    let len = match (svc.local, ip) {
                        (true, IpAddr::V4(_)) => 32,
                        (true, IpAddr::V6(_)) => 128,
                        (false, IpAddr::V4(_)) => pool_bgp.aggregation_v4,
                        (false, IpAddr::V6(_)) => pool_bgp.aggregation_v6,
                    };
                    if let Ok(net) = IpNet::new(ip, len) {
                        out.routes.insert(net.trunc());
                    }
                    out.announced.insert(ip);
                    out.withdrawn.remove(&ip);
                }
                Err(reason) if !out.announced.contains(&ip) => {
                    // Of two Services' reasons, the first kept (either is true).
                    out.withdrawn.entry(ip).or_insert(reason);
                }
                Err(_) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
