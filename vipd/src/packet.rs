//! VRRP advertisements on the wire: v3 (RFC 5798, RFC 9568) for IPv4 and IPv6, v2 (RFC 3768)
//! for IPv4. Pure: bytes in, bytes out.
//!
//! Checksums: v2 covers the VRRP message. v3 covers a pseudo-header plus the message; RFC 9568
//! says IPv4 v3 covers the message only, while keepalived (2.2.x) includes the pseudo-header for
//! IPv4 unless `v3_checksum_as_v2`. Both IPv4 v3 forms are accepted; [`Checksum`] picks the one
//! sent.
//!
//! # Addresses beyond one advert
//!
//! An advert lists at most [`MAX_LISTED_V4`] IPv4 addresses (the 8-bit count) or
//! [`MAX_LISTED_V6`] IPv6 addresses (so that the IPv6 packet stays within the 1280-byte minimum
//! MTU: (1280 − 40 − 8) / 16 = 77). As keepalived does with its "eVIPs", a group with more
//! addresses still holds and announces all of them as master, but its adverts list only the
//! first ones in sorted order ([`listed`]); receivers compare a peer's list with that same
//! subset of their own addresses, so both ends agree however many addresses a group has.
//!
//! # Authentication (v2)
//!
//! v2 adverts carry keepalived's `auth_type PASS` ([`Auth::Pass`], type 1): up to 8 bytes of
//! password in the authentication data, NUL-padded. It only keeps apart groups that were
//! configured apart (the password travels in clear). IP Authentication Header (type 2) is not
//! implemented: keepalived deprecates it, RFC 3768 removed it, it is rarely deployed, and it
//! needs kernel-independent HMAC handling of mutable IP fields for little protection against a
//! host on the segment that can read every advert anyway; an AH advert is refused as an
//! authentication mismatch.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

mod drop_reason;

pub use drop_reason::DropReason;

/// IP protocol / IPv6 next header of VRRP.
pub const PROTO: u8 = 112;
/// The TTL / hop limit VRRP sends and requires.
pub const TTL: u8 = 255;
/// IPv4 multicast group of VRRP.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group of VRRP.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Largest v3 advert interval: 12 bits of centiseconds.
pub const MAX_INTERVAL_CS: u16 = 0x0fff;

/// Most addresses an IPv4 advert lists: the count field is 8 bits.
pub const MAX_LISTED_V4: usize = 255;
/// Most addresses an IPv6 advert lists: 40 (IPv6) + 8 (VRRP) + 77 × 16 = 1280 bytes, the IPv6
/// minimum MTU.
pub const MAX_LISTED_V6: usize = 77;

/// The addresses an advert lists, of a `sorted` (ascending, one family) address list: the
/// first [`MAX_LISTED_V4`] / [`MAX_LISTED_V6`], and how many are left out. Sender and receiver
/// both use it, so they compare the same subset.
pub fn listed(sorted: &[IpAddr]) -> (&[IpAddr], usize) {
    let max = match sorted.first() {
        Some(IpAddr::V6(_)) => MAX_LISTED_V6,
        _ => MAX_LISTED_V4,
    };
    let n = sorted.len().min(max);
    (&sorted[..n], sorted.len() - n)
}

/// [`listed`] for addresses in any order, possibly repeated: sorts and deduplicates first.
/// Returns the listed addresses and how many are left out.
pub fn listed_of(addrs: impl IntoIterator<Item = IpAddr>) -> (Vec<IpAddr>, usize) {
    let sorted: Vec<IpAddr> = addrs
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (l, excess) = listed(&sorted);
    (l.to_vec(), excess)
}

/// A v2 password (`auth_type PASS`): 1–8 bytes, NUL-padded to 8 on the wire. Its `Debug`
/// does not print it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Password([u8; 8]);

impl Password {
    /// The password `p`, if it is 1–8 bytes without NUL (a NUL would be read as padding).
    pub fn new(p: &[u8]) -> Option<Self> {
        if p.is_empty() || p.len() > 8 || p.contains(&0) {
            return None;
        }
        let mut b = [0u8; 8];
        b[..p.len()].copy_from_slice(p);
        Some(Self(b))
    }

    /// The 8 bytes of authentication data.
    pub fn bytes(&self) -> [u8; 8] {
        self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The authentication of a v2 advert (v3 has none: always [`Auth::None`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// Type 0: none.
    #[default]
    None,
    /// Type 1: a password in clear (keepalived's `auth_type PASS`).
    Pass(Password),
    /// Any other type (2 is IP Authentication Header), with its type number: never accepted.
    Other(u8),
}

impl Auth {
    /// The auth type field.
    pub fn number(&self) -> u8 {
        match self {
            Self::None => 0,
            Self::Pass(_) => 1,
            Self::Other(t) => *t,
        }
    }
}

/// Protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, interval in whole seconds.
    V2,
    /// RFC 5798: IPv4 and IPv6, interval in centiseconds.
    V3,
}

impl Version {
    /// The version number on the wire.
    pub fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

/// Which checksum an IPv4 v3 advert carries (IPv6 always has the pseudo-header; v2 never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksum {
    /// With the IPv4 pseudo-header, as keepalived sends by default and RFC 5798 reads.
    #[default]
    PseudoHeader,
    /// Over the VRRP message only, as RFC 9568 clarifies (keepalived's `v3_checksum_as_v2`).
    MessageOnly,
}

/// One decoded advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Protocol version.
    pub version: Version,
    /// Virtual router id, 1–255.
    pub vrid: u8,
    /// Sender's priority: 255 owner, 0 resigning.
    pub priority: u8,
    /// Sender's advert interval (v2's whole seconds converted).
    pub interval: Duration,
    /// The virtual addresses, all of the packet's family.
    pub addrs: Vec<IpAddr>,
    /// v2 authentication (ignored when sending v3; v3 decodes as [`Auth::None`]).
    pub auth: Auth,
}

/// A VRRP datagram as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Sender.
    pub src: IpAddr,
    /// Destination (the group, or our address for unicast).
    pub dst: IpAddr,
    /// TTL / hop limit it arrived with.
    pub ttl: u8,
    /// The VRRP message.
    pub payload: Vec<u8>,
}

/// The addressing of a received IPv4 datagram, as a raw socket hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
}

/// Splits a raw IPv4 datagram (header included, as IPv4 raw sockets deliver it) into its header
/// fields and payload.
pub fn split_ipv4(datagram: &[u8]) -> Result<(Ipv4Header, &[u8]), DropReason> {
    if datagram.len() < 20 {
        return Err(DropReason::TooShort(datagram.len()));
    }
    if datagram[0] >> 4 != 4 || datagram[9] != PROTO {
        return Err(DropReason::NotVrrp);
    }
    let ihl = usize::from(datagram[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if ihl < 20 || datagram.len() < ihl || total < ihl {
        return Err(DropReason::TooShort(datagram.len()));
    }
    let end = total.min(datagram.len());
    let h = Ipv4Header {
        src: Ipv4Addr::new(datagram[12], datagram[13], datagram[14], datagram[15]),
        dst: Ipv4Addr::new(datagram[16], datagram[17], datagram[18], datagram[19]),
        ttl: datagram[8],
    };
    Ok((h, &datagram[ihl..end]))
}

/// Encodes `advert` as sent from `src` to `dst` (the checksum depends on both for v3).
///
/// v2 carries the interval in whole seconds (rounded up, at least 1) and the authentication
/// type and 8 bytes of data of `advert.auth` (zero for none).
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr, form: Checksum) -> Vec<u8> {
    let alen = if src.is_ipv4() { 4 } else { 16 };
    let count = u8::try_from(advert.addrs.len()).unwrap_or(u8::MAX);
    let mut out = Vec::with_capacity(8 + alen * advert.addrs.len() + 8);
    out.push((advert.version.number() << 4) | 1);
    out.push(advert.vrid);
    out.push(advert.priority);
    out.push(count);
    match advert.version {
        Version::V3 => {
            let cs = interval_cs(advert.interval);
            out.extend_from_slice(&cs.to_be_bytes());
        }
        Version::V2 => {
            let secs = advert.interval.as_millis().div_ceil(1000).clamp(1, 255);
            out.push(advert.auth.number());
            out.push(u8::try_from(secs).unwrap_or(u8::MAX));
        }
    }
    out.extend_from_slice(&[0, 0]);
    for a in advert.addrs.iter().take(usize::from(count)) {
        match a {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
    }
    if advert.version == Version::V2 {
        match advert.auth {
            Auth::Pass(p) => out.extend_from_slice(&p.bytes()),
            Auth::None | Auth::Other(_) => out.extend_from_slice(&[0; 8]),
        }
    }
    let sum = checksum_for(advert.version, &out, src, dst, form);
    out[6..8].copy_from_slice(&sum.to_be_bytes());
    out
}

/// The v3 interval field: centiseconds, rounded up, 1..=4095.
pub fn interval_cs(interval: Duration) -> u16 {
    let cs = interval
        .as_millis()
        .div_ceil(10)
        .clamp(1, u128::from(MAX_INTERVAL_CS));
    u16::try_from(cs).unwrap_or(MAX_INTERVAL_CS)
}

/// Decodes a VRRP message received from `src` to `dst` with `ttl`. Returns the advert and the
/// checksum form it carried.
pub fn decode(
    msg: &[u8],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
) -> Result<(Advert, Checksum), DropReason> {
    if ttl != TTL {
        return Err(DropReason::Ttl(ttl));
    }
    if msg.len() < 8 {
        return Err(DropReason::TooShort(msg.len()));
    }
    let version = match msg[0] >> 4 {
        3 => Version::V3,
        2 if src.is_ipv4() => Version::V2,
        v => return Err(DropReason::Version(v)),
    };
    if msg[0] & 0x0f != 1 {
        return Err(DropReason::Type(msg[0] & 0x0f));
    }
    let count = usize::from(msg[3]);
    let alen = if src.is_ipv4() { 4 } else { 16 };
    let need = 8 + count * alen + if version == Version::V2 { 8 } else { 0 };
    if msg.len() < need {
        return Err(DropReason::TooShort(msg.len()));
    }
    let form = match version {
        Version::V2 => {
            if internet_checksum(&[msg]) != 0 {
                return Err(DropReason::Checksum);
            }
            Checksum::MessageOnly
        }
        Version::V3 => {
            let pseudo = pseudo_header(src, dst, msg.len());
            if internet_checksum(&[&pseudo, msg]) == 0 {
                Checksum::PseudoHeader
            } else if src.is_ipv4() && internet_checksum(&[msg]) == 0 {
                Checksum::MessageOnly
            } else {
                return Err(DropReason::Checksum);
            }
        }
    };
    let interval = match version {
        Version::V3 => {
            let cs = u16::from_be_bytes([msg[4], msg[5]]) & MAX_INTERVAL_CS;
            Duration::from_millis(u64::from(cs) * 10)
        }
        Version::V2 => Duration::from_secs(u64::from(msg[5])),
    };
    if interval.is_zero() {
        // Learnt, it would make Skew and Master_Down zero: a backup would flap at once.
        return Err(DropReason::Interval(interval));
    }
    let addrs = msg[8..8 + count * alen]
        .chunks_exact(alen)
        .map(|c| match <[u8; 4]>::try_from(c) {
            Ok(b) => IpAddr::from(b),
            Err(_) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(c);
                IpAddr::from(b)
            }
        })
        .collect();
    let auth = match (version, msg[4]) {
        (Version::V3, _) | (Version::V2, 0) => Auth::None,
        (Version::V2, 1) => {
            let data = &msg[8 + count * alen..need];
            let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
            // An all-NUL password is no password: Other(1) is never accepted.
            Password::new(&data[..end]).map_or(Auth::Other(1), Auth::Pass)
        }
        (Version::V2, t) => Auth::Other(t),
    };
    Ok((
        Advert {
            version,
            vrid: msg[1],
            priority: msg[2],
            interval,
            addrs,
            auth,
        },
        form,
    ))
}

fn checksum_for(version: Version, msg: &[u8], src: IpAddr, dst: IpAddr, form: Checksum) -> u16 {
    let with_pseudo = match (version, src) {
        (Version::V2, _) => false,
        (Version::V3, IpAddr::V6(_)) => true,
        (Version::V3, IpAddr::V4(_)) => form == Checksum::PseudoHeader,
    };
    if with_pseudo {
        internet_checksum(&[&pseudo_header(src, dst, msg.len()), msg])
    } else {
        internet_checksum(&[msg])
    }
}

/// The IPv4 or IPv6 pseudo-header for protocol 112 and `len` bytes of payload.
fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, PROTO]);
            p.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        }
        (s, d) => {
            p.extend_from_slice(&v6(s).octets());
            p.extend_from_slice(&v6(d).octets());
            p.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, PROTO]);
        }
    }
    p
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`; 0 when a message with its
/// checksum in place verifies.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xffff)
}

#[cfg(test)]
mod tests;
