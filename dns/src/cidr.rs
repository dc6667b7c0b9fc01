//! Address blocks (`10.0.0.0/8`, `2001:db8::/32`), for the RRL exempt list and the client
//! topology map. Free of I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a string is not an address block.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an IP address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)")]
pub struct CidrError(pub String);

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a /32 or /128). Its
/// address is kept as written: host bits are masked when matching ([`Cidr::network`] is the
/// masked one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask4(u32::from(ip), self.len) == mask4(u32::from(net), self.len)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask6(u128::from(ip), self.len) == mask6(u128::from(net), self.len)
            }
            _ => false,
        }
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The network address: the address with its host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask4(u32::from(a), self.len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask6(u128::from(a), self.len))),
        }
    }

    /// Whether the address as written has host bits set (`10.1.2.3/16`).
    pub fn has_host_bits(&self) -> bool {
        self.network() != self.addr
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let bad = || CidrError(s.to_owned());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (
                a.parse::<IpAddr>().map_err(|_| bad())?,
                Some(l.parse::<u8>().map_err(|_| bad())?),
            ),
            None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(bad());
        }
        Ok(Self { addr, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `ip`, with an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as the IPv4 address it maps.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The first `len` bits of `ip` (`len` ≤ 32).
pub fn mask4(ip: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        ip & (u32::MAX << (32 - u32::from(len.min(32))))
    }
}

/// The first `len` bits of `ip` (`len` ≤ 128).
pub fn mask6(ip: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        ip & (u128::MAX << (128 - u32::from(len.min(128))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(c.contains("10.200.1.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.200.1.1".parse().expect("mapped ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!(!c.contains("::1".parse().expect("ip")));
        let one: Cidr = "192.0.2.7".parse().expect("bare address");
        assert!(one.contains("192.0.2.7".parse().expect("ip")));
        assert!(!one.contains("192.0.2.8".parse().expect("ip")));
        let v6: Cidr = "2001:db8::/32".parse().expect("cidr");
        assert!(v6.contains("2001:db8:ffff::1".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("203.0.113.1".parse().expect("ip")));
        assert_eq!(v6.to_string(), "2001:db8::/32");
        for bad in ["10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_network_clears_host_bits() {
        let c: Cidr = "10.1.2.3/16".parse().expect("cidr");
        assert!(c.has_host_bits());
        assert_eq!(c.network(), "10.1.0.0".parse::<IpAddr>().expect("ip"));
        let v6: Cidr = "2001:db8::1/64".parse().expect("cidr");
        assert_eq!(v6.network(), "2001:db8::".parse::<IpAddr>().expect("ip"));
        let exact: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(!exact.has_host_bits());
        assert_eq!(mask4(u32::MAX, 0), 0);
        assert_eq!(mask6(u128::MAX, 128), u128::MAX);
    }
}
