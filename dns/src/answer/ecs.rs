//! The EDNS Client Subnet option (RFC 7871), free of I/O and of allocation: read from a query's
//! OPT RDATA, and written back into an answer with the scope the answer covers.
//!
//! Read only when a topology map is configured (without one, ECS is ignored and not echoed, as
//! NSD and Knot do). Then, as RFC 7871 §6 asks of a server, an option that is malformed gets
//! FORMERR: shorter than its fixed part, a family other than 1 (IPv4) and 2 (IPv6), a source
//! prefix longer than the family's addresses, more or fewer address octets than the source
//! prefix needs, or address bits set beyond it. So does a query with two ECS options. A query's
//! scope prefix should be 0 and is ignored otherwise (as BIND does).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The option code of ECS.
pub const CODE: u16 = 8;

/// An ECS option as a query carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// 1 (IPv4) or 2 (IPv6).
    pub family: u16,
    /// How many leading bits of the address the client revealed.
    pub source: u8,
    /// The address, zero beyond `source`.
    pub addr: IpAddr,
}

/// Why an ECS option is FORMERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EcsError {
    /// Shorter than family, source and scope.
    #[error("shorter than 4 bytes")]
    Short,
    /// Not IPv4 or IPv6.
    #[error("unknown address family {0}")]
    Family(u16),
    /// Longer than the family's addresses.
    #[error("source prefix {0} is longer than the address")]
    Prefix(u8),
    /// Not exactly the octets the source prefix needs.
    #[error("{0} address octets where the source prefix needs {1}")]
    Octets(usize, usize),
    /// Bits set past the source prefix.
    #[error("address bits set beyond the source prefix")]
    HostBits,
    /// A second ECS option in the query.
    #[error("two client subnet options")]
    Twice,
}

impl ClientSubnet {
    /// Reads the data of one ECS option.
    pub fn parse(data: &[u8]) -> Result<Self, EcsError> {
        let [f0, f1, source, _scope, addr @ ..] = data else {
            return Err(EcsError::Short);
        };
        let family = u16::from_be_bytes([*f0, *f1]);
        let bits: u8 = match family {
            1 => 32,
            2 => 128,
            other => return Err(EcsError::Family(other)),
        };
        if *source > bits {
            return Err(EcsError::Prefix(*source));
        }
        let need = usize::from(source.div_ceil(8));
        if addr.len() != need {
            return Err(EcsError::Octets(addr.len(), need));
        }
        let mut full = [0u8; 16];
        full[..need].copy_from_slice(addr);
        if let Some(&last) = addr.last() {
            let used = source % 8;
            if used != 0 && last & (0xFF >> used) != 0 {
                return Err(EcsError::HostBits);
            }
        }
        let addr = if family == 1 {
            IpAddr::V4(Ipv4Addr::new(full[0], full[1], full[2], full[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(full))
        };
        Ok(Self {
            family,
            source: *source,
            addr,
        })
    }

    /// Finds the ECS option among a query's options (`rdata`: the OPT RDATA, whose options are
    /// known to tile it, see `edns::options_tile`). `Ok(None)` when there is none.
    pub fn find(rdata: &[u8]) -> Result<Option<Self>, EcsError> {
        let mut found = None;
        let mut at = 0;
        while at + 4 <= rdata.len() {
            let code = u16::from_be_bytes([rdata[at], rdata[at + 1]]);
            let len = usize::from(u16::from_be_bytes([rdata[at + 2], rdata[at + 3]]));
            let data = rdata.get(at + 4..at + 4 + len).ok_or(EcsError::Short)?;
            if code == CODE {
                if found.is_some() {
                    return Err(EcsError::Twice);
                }
                found = Some(Self::parse(data)?);
            }
            at += 4 + len;
        }
        Ok(found)
    }

    /// How many bytes [`ClientSubnet::write`] writes: the option header and data.
    pub fn wire_len(&self) -> usize {
        8 + usize::from(self.source.div_ceil(8))
    }

    /// Writes the option as an answer echoes it (RFC 7871 §7.2.1: family, source prefix and
    /// address as the query gave them, and the scope the answer covers) at the start of `out`;
    /// returns the bytes written, or `None` when `out` is too short.
    pub fn write(&self, scope: u8, out: &mut [u8]) -> Option<usize> {
        let n = self.wire_len();
        let out = out.get_mut(..n)?;
        let octets = n - 8;
        out[..2].copy_from_slice(&CODE.to_be_bytes());
        out[2..4].copy_from_slice(&u16::try_from(n - 4).unwrap_or(0).to_be_bytes());
        out[4..6].copy_from_slice(&self.family.to_be_bytes());
        out[6] = self.source;
        out[7] = scope;
        match self.addr {
            IpAddr::V4(a) => out[8..].copy_from_slice(&a.octets()[..octets]),
            IpAddr::V6(a) => out[8..].copy_from_slice(&a.octets()[..octets]),
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(code: u16, data: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(&u16::try_from(data.len()).expect("len").to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn well_formed_options_are_read_and_echoed_byte_for_byte_but_the_scope() {
        for data in [
            &[0, 1, 24, 0, 10, 1, 7][..],
            &[0, 1, 0, 0][..],
            &[0, 1, 32, 0, 192, 0, 2, 1][..],
            &[0, 1, 20, 0, 10, 1, 0x70][..],
            &[0, 2, 48, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 1][..],
            &[
                0, 2, 128, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            ][..],
        ] {
            let ecs = ClientSubnet::parse(data).expect("valid");
            let mut out = [0u8; 40];
            let n = ecs.write(16, &mut out).expect("room");
            assert_eq!(n, ecs.wire_len());
            let mut want = opt(CODE, data);
            want[7] = 16;
            assert_eq!(&out[..n], &want[..]);
            assert_eq!(ecs.write(16, &mut out[..n - 1]), None);
        }
        let ecs = ClientSubnet::parse(&[0, 1, 24, 0, 10, 1, 7]).expect("valid");
        assert_eq!(ecs.addr, "10.1.7.0".parse::<IpAddr>().expect("ip"));
        assert_eq!((ecs.family, ecs.source), (1, 24));
    }

    #[test]
    fn malformed_options_are_formerr() {
        for (data, want) in [
            (&[0, 1, 24][..], EcsError::Short),
            (&[0, 3, 0, 0][..], EcsError::Family(3)),
            (&[0, 0, 0, 0][..], EcsError::Family(0)),
            (&[0, 1, 33, 0, 1, 2, 3, 4, 5][..], EcsError::Prefix(33)),
            (&[0, 2, 129, 0][..], EcsError::Prefix(129)),
            (&[0, 1, 24, 0, 10, 1, 7, 0][..], EcsError::Octets(4, 3)),
            (&[0, 1, 24, 0, 10, 1][..], EcsError::Octets(2, 3)),
            (&[0, 1, 20, 0, 10, 1, 0x71][..], EcsError::HostBits),
            (&[0, 1, 0, 0, 10][..], EcsError::Octets(1, 0)),
        ] {
            assert_eq!(ClientSubnet::parse(data), Err(want), "{data:?}");
        }
    }

    #[test]
    fn the_option_is_found_among_others_once() {
        let cookie = opt(10, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let ecs = opt(CODE, &[0, 1, 8, 0, 10]);
        let rdata = [cookie.clone(), ecs.clone()].concat();
        let found = ClientSubnet::find(&rdata)
            .expect("valid")
            .expect("an ECS option");
        assert_eq!(found.addr, "10.0.0.0".parse::<IpAddr>().expect("ip"));
        assert_eq!(ClientSubnet::find(&cookie), Ok(None));
        assert_eq!(ClientSubnet::find(&[]), Ok(None));
        assert_eq!(
            ClientSubnet::find(&[ecs.clone(), ecs].concat()),
            Err(EcsError::Twice)
        );
    }
}
