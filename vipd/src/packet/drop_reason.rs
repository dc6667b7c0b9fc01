//! Why a received packet is dropped: [`DropReason`], whose `label()` is the `reason` label of
//! `fedplane_vipd_adverts_dropped_total`.

use std::net::IpAddr;
use std::time::Duration;

/// Why a received packet was dropped; `label()` names the metric's `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Shorter than its headers and address list.
    #[error("packet too short ({0} bytes)")]
    TooShort(usize),
    /// Not an IPv4 packet carrying VRRP.
    #[error("not an IPv4 VRRP packet")]
    NotVrrp,
    /// TTL / hop limit other than 255: it crossed a router.
    #[error("TTL/hop limit {0}, not 255")]
    Ttl(u8),
    /// A version we do not run on this group.
    #[error("VRRP version {0}")]
    Version(u8),
    /// Type other than 1 (advertisement).
    #[error("VRRP type {0}, not advertisement")]
    Type(u8),
    /// Neither checksum form matches.
    #[error("bad checksum")]
    Checksum,
    /// Another group's advert (normal when several VRIDs share a link).
    #[error("VRID {0} is not ours")]
    Vrid(u8),
    /// Same VRID but another address list: a misconfigured peer.
    #[error("address list differs from ours")]
    Addresses,
    /// An interval of zero, or (v2) one different from ours, which RFC 3768 requires.
    #[error("advert interval {0:?} is zero or (v2) not ours")]
    Interval(Duration),
    /// The sender may not speak in this group: not one of the unicast peers, the configured
    /// `peers`, or (Kubernetes mode) the nodes running fedplane-vipd.
    #[error("sender {0} is not an allowed speaker")]
    Foreign(IpAddr),
    /// v2 authentication type or password other than ours.
    #[error("authentication type or password differs from ours")]
    Auth,
    /// Our own advert looped back.
    #[error("our own advert")]
    Own,
}

impl DropReason {
    /// The metric label of this reason.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooShort(_) => "too_short",
            Self::NotVrrp => "not_vrrp",
            Self::Ttl(_) => "ttl",
            Self::Version(_) => "version",
            Self::Type(_) => "type",
            Self::Checksum => "checksum",
            Self::Vrid(_) => "other_vrid",
            Self::Addresses => "address_list",
            Self::Interval(_) => "interval",
            Self::Foreign(_) => "foreign_speaker",
            Self::Auth => "authentication",
            Self::Own => "own",
        }
    }

    /// Every label, so metrics can be described and zero-initialised.
    pub const LABELS: [&'static str; 12] = [
        "too_short",
        "not_vrrp",
        "ttl",
        "version",
        "type",
        "checksum",
        "other_vrid",
        "address_list",
        "interval",
        "foreign_speaker",
        "authentication",
        "own",
    ];
}
