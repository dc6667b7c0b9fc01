//! Whether a group hears a received datagram, free of I/O: the packet rules beyond the wire
//! format, after [`packet::decode`]'s (TTL, length, type, checksum, zero interval). In order:
//!
//! 1. our own advert looped back ([`DropReason::Own`]);
//! 2. another VRID ([`DropReason::Vrid`]), checked before the sender so that the speakers of
//!    other groups sharing the link are not reported as foreign;
//! 3. the sender: a unicast group hears only its `unicast_peers`, and a group with
//!    [`Expected::speakers`] (the `peers:` setting, or in Kubernetes mode the nodes running
//!    fedplane-vipd) only those; anyone else is [`DropReason::Foreign`], whatever its priority
//!    (so a foreign advert, priority 0 or 255 included, never moves a master). Our own primary
//!    address is rule 1, never foreign. The source address is not authenticated: this stops
//!    misconfigured and careless speakers, not one that spoofs an allowed address;
//! 4. another version ([`DropReason::Version`]);
//! 5. v2 authentication: type and password must equal ours ([`DropReason::Auth`]);
//! 6. the address list: a static group hears only adverts listing exactly the addresses it
//!    lists itself ([`packet::listed`] of its own), whatever the sender's priority. RFC 5798
//!    lets an owner (priority 255) list anything; keepalived does not, and neither do we: a
//!    forged owner advert with an empty list would otherwise silence any master. A dynamic
//!    group (Kubernetes mode) accepts any list, its peers being a moment behind or ahead with
//!    the Services; its protection is rule 3;
//! 7. v2: the interval must be ours (RFC 3768) ([`DropReason::Interval`]);
//! 8. v3: the interval a backup learns is bounded by [`max_learnt_interval`], so that one
//!    forged advert with the largest interval (40.95 s) cannot silence a group for two minutes;
//!    [`Heard::clamped`] reports it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use crate::fsm::Heard;
use crate::packet::{self, Auth, Datagram, DropReason, Password, Version};

/// What a group expects of the adverts it hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Our VRID.
    pub vrid: u8,
    /// Our protocol version.
    pub version: Version,
    /// Our advert interval (a v2 peer's must equal it; bounds the one a v3 backup learns).
    pub interval: Duration,
    /// Unicast peers (empty: multicast); in unicast mode only they are heard.
    pub unicast_peers: Vec<IpAddr>,
    /// The addresses a peer's advert must list: [`packet::listed`] of the group's addresses.
    pub addresses: BTreeSet<IpAddr>,
    /// The addresses follow the Services (Kubernetes mode): any address list is accepted.
    pub dynamic: bool,
    /// Who may speak: `None` anyone, `Some` only these sources (besides `unicast_peers`'
    /// own rule: a source must pass both).
    pub speakers: Option<BTreeSet<IpAddr>>,
    /// The v2 password (`auth_type PASS`) adverts must carry; `None`: no authentication.
    pub auth: Option<Password>,
}

/// The largest advert interval a backup learns from a master, when ours is `own`: ten times
/// ours, and at least 1 s (keepalived's default, so a keepalived peer at 1 s beside us at
/// 100 ms works). A larger advertised interval is learnt as this bound: the backup then takes
/// over when a master really advertising that slowly misses its bound — configure the routers
/// of a group with intervals within that factor.
pub fn max_learnt_interval(own: Duration) -> Duration {
    (own * 10).max(Duration::from_secs(1))
}

/// Decides whether the group that expects `expected`, with the primary address `primary`,
/// hears `d`: the advert it carries, or why it is dropped.
pub fn accept(expected: &Expected, primary: IpAddr, d: &Datagram) -> Result<Heard, DropReason> {
    if d.src == primary {
        return Err(DropReason::Own);
    }
    let (advert, _form) = packet::decode(&d.payload, d.src, d.dst, d.ttl)?;
    if advert.vrid != expected.vrid {
        return Err(DropReason::Vrid(advert.vrid));
    }
    let peer_ok = expected.unicast_peers.is_empty() || expected.unicast_peers.contains(&d.src);
    let speaker_ok = expected
        .speakers
        .as_ref()
        .is_none_or(|s| s.contains(&d.src));
    if !peer_ok || !speaker_ok {
        return Err(DropReason::Foreign(d.src));
    }
    if advert.version != expected.version {
        return Err(DropReason::Version(advert.version.number()));
    }
    let auth_ok = match (expected.auth, advert.auth) {
        (None, Auth::None) => true,
        (Some(ours), Auth::Pass(theirs)) => ours == theirs,
        _ => false,
    };
    if advert.version == Version::V2 && !auth_ok {
        return Err(DropReason::Auth);
    }
    let theirs: BTreeSet<IpAddr> = advert.addrs.iter().copied().collect();
    if expected.addresses != theirs && !expected.dynamic {
        return Err(DropReason::Addresses);
    }
    if advert.version == Version::V2 && advert.interval != expected.interval {
        return Err(DropReason::Interval(advert.interval));
    }
    let max = max_learnt_interval(expected.interval);
    let (interval, clamped) = if advert.interval > max {
        (max, Some(advert.interval))
    } else {
        (advert.interval, None)
    };
    Ok(Heard {
        src: d.src,
        priority: advert.priority,
        interval,
        clamped,
    })
}

#[cfg(test)]
mod tests;
