//! Address assignment (IPAM) for LoadBalancer Services, free of I/O.
//!
//! The state is the Services themselves: the addresses in their `status.loadBalancer.ingress`.
//! [`assign`] takes every Service, the pools, the legacy kube-keepalived-vip map and the
//! [`Quarantine`] of recently released addresses, and returns the addresses each of our Services
//! should have plus the [`Notice`]s that explain what was refused. Run on its own output it
//! returns that output again, so a restart or a new leader moves nothing.
//!
//! Rules, in order (Services by creation time, then namespace/name):
//! 1. Keep: a Service keeps the addresses it has, one per family it still wants, unless it now
//!    asks for another address of that family or names another pool, or an older Service has
//!    the same address (a conflict: the younger one loses it, with a notice).
//! 2. Legacy: for a Service that requests nothing, a family still without an address takes the
//!    address the legacy ConfigMap gives this Service, when free (legacy addresses need not lie
//!    in a pool).
//! 3. Requested: a Service that asks for addresses gets only those, each only if it lies in a
//!    pool (the Service's pool, if it names one), is not reserved, not in use, not another
//!    Service's legacy address, and not in quarantine for another Service; otherwise a notice
//!    and no address for that family.
//! 4. Otherwise the lowest free address of each family: in the pool the Service names, or in
//!    the first auto-assign pool that has one.
//!
//! A released address is in quarantine for the period: only the Service that released it may
//! take it again before that.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

mod assign;
mod pool;
mod quarantine;

pub use assign::assign;
pub use pool::{Mode, Pool, PoolError, PoolSpec, Pools, PoolsDoc};
pub use quarantine::Quarantine;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// What kind of Service, for assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `type: LoadBalancer` with our `loadBalancerClass` or none: we assign its addresses.
    Ours,
    /// A LoadBalancer of another implementation: its addresses are in use, never touched.
    Foreign,
    /// Not a LoadBalancer (any more): it should have no ingress addresses.
    NotLoadBalancer,
}

/// One Service, as assignment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    /// `namespace/name`.
    pub key: String,
    /// Sorts older Services first: the creation timestamp (RFC 3339, UTC).
    pub created: String,
    /// Ours, foreign or not a LoadBalancer.
    pub kind: Kind,
    /// The families it wants an address of, in order (one for single-stack, two for dual).
    pub families: Vec<Family>,
    /// The addresses it asks for (annotation, or the deprecated `spec.loadBalancerIP`).
    pub requested: Vec<IpAddr>,
    /// Why its request could not be read; such a Service gets no new address.
    pub bad_request: Option<String>,
    /// The pool it names.
    pub pool: Option<String>,
    /// The addresses in its `status.loadBalancer.ingress`.
    pub current: Vec<IpAddr>,
}

/// Why a Service did not get what it wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// An older Service has the same address; this one lost it.
    AddressConflict,
    /// A requested address cannot be given.
    AddressRefused,
    /// The request annotation does not parse.
    InvalidRequest,
    /// The named pool does not exist.
    NoSuchPool,
    /// No free address of a family.
    PoolExhausted,
}

impl Reason {
    /// The Event reason.
    pub fn name(self) -> &'static str {
        match self {
            Self::AddressConflict => "AddressConflict",
            Self::AddressRefused => "AddressRefused",
            Self::InvalidRequest => "InvalidAddressRequest",
            Self::NoSuchPool => "NoSuchPool",
            Self::PoolExhausted => "PoolExhausted",
        }
    }
}

/// Something to tell a Service's owner (a Warning Event).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Notice {
    /// `namespace/name`.
    pub key: String,
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
}

/// The outcome of [`assign`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The ingress addresses of each of our Services (in the order of its families), and an
    /// empty list for each Service that is no LoadBalancer but still has addresses.
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
    /// What was refused and why.
    pub notices: Vec<Notice>,
}

/// The addresses in use: every address in any Service's status, with its first owner.
pub fn in_use(svcs: &[Svc]) -> BTreeMap<IpAddr, String> {
    let mut m = BTreeMap::new();
    for s in oldest_first(svcs) {
        for ip in &s.current {
            m.entry(*ip).or_insert_with(|| s.key.clone());
        }
    }
    m
}

fn oldest_first(svcs: &[Svc]) -> Vec<&Svc> {
    let mut v: Vec<&Svc> = svcs.iter().collect();
    v.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
    v
}

#[cfg(test)]
mod tests;
