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

/// An ARP probe for `vip` from `mac` (RFC 5227 2.1.1: sender address 0.0.0.0, so no one
/// learns from it; a host that has `vip` answers).
pub fn arp_probe(mac: Mac, vip: Ipv4Addr) -> Vec<u8> {
    let mut f = garp(mac, vip);
    f[28..32].copy_from_slice(&[0; 4]);
    f[32..38].copy_from_slice(&[0; 6]);
    f
}

/// A duplicate address detection probe for `vip` from `mac` (RFC 4862 5.4.2: a Neighbor
/// Solicitation from the unspecified address to `vip`'s solicited-node group, no source
/// link-layer option); a host that has `vip` answers with a Neighbor Advertisement to all
/// nodes.
pub fn dad_probe(mac: Mac, vip: Ipv6Addr) -> Vec<u8> {
    let o = vip.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    let mut icmp = Vec::with_capacity(24);
    icmp.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]); // type NS, code 0, checksum, reserved
    icmp.extend_from_slice(&o);
    let len = u32::try_from(icmp.len()).unwrap_or(0);
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
    pseudo.extend_from_slice(&group.octets());
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    let sum = internet_checksum(&[&pseudo, &icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let g = group.octets();
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, g[12], g[13], g[14], g[15]]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(icmp.len()).unwrap_or(0).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
    f.extend_from_slice(&g);
    f.extend_from_slice(&icmp);
    f
}

/// The address and MAC an ARP packet (without its Ethernet header) claims: its sender's, when
/// it is an Ethernet/IPv4 request or reply with a sender address.
pub fn arp_claim(arp: &[u8]) -> Option<(Ipv4Addr, Mac)> {
    if arp.len() < 28 || arp[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return None;
    }
    let mac: Mac = arp[8..14].try_into().ok()?;
    let ip = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
    (!ip.is_unspecified()).then_some((ip, mac))
}

/// The address and MAC an ICMPv6 message claims: a Neighbor Advertisement's target and its
/// target link-layer address option (one without the option claims nothing we can compare).
pub fn na_claim(icmp: &[u8]) -> Option<(Ipv6Addr, Mac)> {
    if icmp.len() < 24 || icmp[0] != 136 || icmp[1] != 0 {
        return None;
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?);
    let mut opts = &icmp[24..];
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == 2 && len == 8 {
            return Some((target, opts[2..8].try_into().ok()?));
        }
        opts = &opts[len..];
    }
    None
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
    fn a_probe_claims_nothing_and_a_garp_claims_its_address() {
        let vip = Ipv4Addr::new(192, 0, 2, 100);
        let probe = arp_probe(MAC, vip);
        assert_eq!(&probe[38..42], &vip.octets(), "target");
        assert_eq!(arp_claim(&probe[14..]), None, "sender 0.0.0.0");
        assert_eq!(arp_claim(&garp(MAC, vip)[14..]), Some((vip, MAC)));
        assert_eq!(arp_claim(&garp(MAC, vip)[14..30]), None, "truncated");
    }

    #[test]
    fn a_dad_probe_goes_to_the_solicited_node_group_and_verifies() {
        let vip: Ipv6Addr = "2001:db8::12:3456".parse().expect("addr");
        let f = dad_probe(MAC, vip);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        assert_eq!(&f[22..38], &[0; 16], "from the unspecified address");
        let group: Ipv6Addr = "ff02::1:ff12:3456".parse().expect("group");
        assert_eq!(&f[38..54], &group.octets());
        let icmp = &f[54..];
        assert_eq!(icmp[0], 135);
        assert_eq!(&icmp[8..24], &vip.octets());
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[22..54]);
        pseudo.extend_from_slice(&24u32.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(internet_checksum(&[&pseudo, icmp]), 0);
        assert_eq!(na_claim(icmp), None, "a probe claims nothing");
    }

    #[test]
    fn an_na_claims_its_target_with_the_link_layer_option() {
        let vip: Ipv6Addr = "2001:db8::100".parse().expect("addr");
        let f = unsolicited_na(MAC, vip);
        assert_eq!(na_claim(&f[54..]), Some((vip, MAC)));
        assert_eq!(na_claim(&f[54..78]), None, "no option");
        let mut zero_len = f[54..].to_vec();
        zero_len[25] = 0;
        assert_eq!(
            na_claim(&zero_len),
            None,
            "an option of length 0 ends the walk"
        );
        let mut ns = f[54..].to_vec();
        ns[0] = 135;
        assert_eq!(na_claim(&ns), None, "a solicitation claims nothing");
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
