//! Whether a group hears a received datagram, free of I/O: the packet rules beyond the wire
//! format (our own advert, unicast peers, VRID, version, address list, v2 interval), after
//! [`packet::decode`]'s (TTL, length, type, checksum, zero interval).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use crate::fsm::{Heard, OWNER};
use crate::packet::{self, Datagram, DropReason, Version};

/// What a group expects of the adverts it hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Our VRID.
    pub vrid: u8,
    /// Our protocol version.
    pub version: Version,
    /// Our advert interval (a v2 peer's must equal it).
    pub interval: Duration,
    /// Unicast peers (empty: multicast, anyone may speak).
    pub unicast_peers: Vec<IpAddr>,
    /// The virtual addresses, as a peer's advert must list them.
    pub addresses: BTreeSet<IpAddr>,
    /// The addresses follow the Services (Kubernetes mode): any address list is accepted.
    pub dynamic: bool,
}

/// Decides whether the group that expects `expected`, with the primary address `primary`,
/// hears `d`: the advert it carries, or why it is dropped.
pub fn accept(expected: &Expected, primary: IpAddr, d: &Datagram) -> Result<Heard, DropReason> {
    if d.src == primary {
        return Err(DropReason::Own);
    }
    if !expected.unicast_peers.is_empty() && !expected.unicast_peers.contains(&d.src) {
        return Err(DropReason::NotPeer(d.src));
    }
    let (advert, _form) = packet::decode(&d.payload, d.src, d.dst, d.ttl)?;
    if advert.vrid != expected.vrid {
        return Err(DropReason::Vrid(advert.vrid));
    }
    if advert.version != expected.version {
        return Err(DropReason::Version(advert.version.number()));
    }
    let theirs: BTreeSet<IpAddr> = advert.addrs.iter().copied().collect();
    // An owner's adverts count whatever they list (RFC 5798 7.1); so do a dynamic group's,
    // whose peers may be a moment behind or ahead with the Services.
    if expected.addresses != theirs && advert.priority != OWNER && !expected.dynamic {
        return Err(DropReason::Addresses);
    }
    if advert.version == Version::V2 && advert.interval != expected.interval {
        return Err(DropReason::Interval(advert.interval));
    }
    Ok(Heard {
        src: d.src,
        priority: advert.priority,
        interval: advert.interval,
    })
}

#[cfg(test)]
mod tests;
