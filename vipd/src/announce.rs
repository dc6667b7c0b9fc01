//! Gratuitous ARP and unsolicited Neighbor Advertisement frames, so that hosts and switches on
//! the link move a virtual address to the new master's MAC at once. Pure: frames as bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::packet::internet_checksum;

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

const BROADCAST: Mac = [0xff; 6];
/// Ethertype of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// Ethertype of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// A gratuitous ARP request for `vip` from `mac` (sender and target address both `vip`, sent to
/// broadcast), the form keepalived and the Linux kernel send.
pub fn garp(mac: Mac, vip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&vip.octets());
    f
}

/// An unsolicited Neighbor Advertisement for `vip` (RFC 4861 7.2.6; RFC 5798: S=0, O=1, R=0 as
/// we are not a router) from `vip` to all-nodes, with the target link-layer address option.
pub fn unsolicited_na(mac: Mac, vip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]); // type NA, code 0, checksum
    icmp.extend_from_slice(&[0x20, 0, 0, 0]); // O flag
    icmp.extend_from_slice(&vip.octets());
    icmp.extend_from_slice(&[2, 1]); // target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let len = u32::try_from(icmp.len()).unwrap_or(0);
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&vip.octets());
    pseudo.extend_from_slice(&all_nodes.octets());
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    let sum = internet_checksum(&[&pseudo, &icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(icmp.len()).unwrap_or(0).to_be_bytes());
    f.extend_from_slice(&[58, 255]); // ICMPv6, hop limit 255
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0, 0, 0, 0, 0x11];

    #[test]
    fn garp_is_a_broadcast_request_for_the_vip() {
        let f = garp(MAC, Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &MAC);
        assert_eq!(&f[28..32], &[192, 0, 2, 100]);
        assert_eq!(&f[38..42], &[192, 0, 2, 100]);
    }

    #[test]
    fn unsolicited_na_checksum_verifies() {
        let vip: Ipv6Addr = "2001:db8::100".parse().expect("addr");
        let f = unsolicited_na(MAC, vip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f[21], 255, "hop limit");
        let icmp = &f[54..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[22..54]);
        pseudo.extend_from_slice(&32u32.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(internet_checksum(&[&pseudo, icmp]), 0);
        assert_eq!(icmp[4], 0x20, "override, not solicited, not router");
    }
}
