//! Sockets: raw IP protocol 112 for VRRP adverts (multicast or unicast), and a packet socket
//! for gratuitous ARP and unsolicited NA frames.

use std::io;
use std::io::IoSlice;
use std::net::{IpAddr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage,
    recvmsg, sendmsg, setsockopt, sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::announce::{self, ETH_P_ARP, ETH_P_IPV6, Mac};
use crate::packet::{self, Datagram, DropReason, GROUP_V4, GROUP_V6, PROTO, TTL};

/// A raw VRRP socket bound to one interface and family. (It is held in a tokio `UdpSocket`
/// only for readiness: every read and write goes through `recvmsg`/`sendmsg` on its fd.)
#[derive(Debug)]
pub struct VrrpSocket {
    fd: UdpSocket,
    v6: bool,
    ifindex: u32,
    /// Room for the largest datagram (an IPv4 advert of 255 addresses is 1,048 bytes with
    /// headers; anyone may send 64 KiB).
    buf: Vec<u8>,
    /// Datagrams the kernel dropped for want of buffer space since the socket opened
    /// (`SO_RXQ_OVFL`, as of the last datagram read).
    drops: u32,
}

/// The receive buffer asked for: room for thousands of adverts while the group is busy.
const RECEIVE_BUFFER: usize = 1 << 20;

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl VrrpSocket {
    /// Opens a socket on interface `ifname`/`ifindex` for IPv6 when `v6`; joins the VRRP group
    /// when `multicast`.
    pub fn open(ifname: &str, ifindex: u32, v6: bool, multicast: bool) -> io::Result<Self> {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let s = Socket::new(domain, Type::RAW, Some(Protocol::from(i32::from(PROTO))))?;
        s.bind_device(Some(ifname.as_bytes()))?;
        s.set_nonblocking(true)?;
        // Beyond net.core.rmem_max when we may (CAP_NET_ADMIN), else as much as it allows.
        if setsockopt(&s, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            s.set_recv_buffer_size(RECEIVE_BUFFER)?;
        }
        setsockopt(&s, sockopt::RxqOvfl, &1).map_err(nix_err)?;
        if v6 {
            s.set_multicast_hops_v6(u32::from(TTL))?;
            s.set_unicast_hops_v6(u32::from(TTL))?;
            s.set_multicast_loop_v6(false)?;
            s.set_multicast_if_v6(ifindex)?;
            setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).map_err(nix_err)?;
            setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true).map_err(nix_err)?;
            if multicast {
                s.join_multicast_v6(&GROUP_V6, ifindex)?;
            }
        } else {
            s.set_multicast_ttl_v4(u32::from(TTL))?;
            s.set_ttl_v4(u32::from(TTL))?;
            s.set_multicast_loop_v4(false)?;
            if multicast {
                s.join_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
            }
        }
        Ok(Self {
            fd: UdpSocket::from_std(std::net::UdpSocket::from(s))?,
            v6,
            ifindex,
            buf: vec![0; usize::from(u16::MAX)],
            drops: 0,
        })
    }

    /// A datagram already queued, without waiting; `None` when there is none.
    pub fn try_recv(&mut self) -> Option<io::Result<Result<Datagram, DropReason>>> {
        let Self {
            fd, v6, buf, drops, ..
        } = self;
        match fd.try_io(Interest::READABLE, || recv_now(fd, *v6, buf, drops)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            other => Some(other),
        }
    }

    /// Leaves the VRRP group (before a new socket joins it: closing a socket leaves its groups
    /// by interface index, which would undo the new socket's membership when the interface's
    /// IPv6 state was recreated meanwhile). Errors are ignored: the membership may be gone.
    pub fn leave(&self) {
        let s = socket2::SockRef::from(&self.fd);
        let _ = if self.v6 {
            s.leave_multicast_v6(&GROUP_V6, self.ifindex)
        } else {
            s.leave_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(self.ifindex))
        };
    }

    /// Datagrams the kernel dropped because the receive buffer was full, since it opened.
    pub fn drops(&self) -> u32 {
        self.drops
    }

    /// Sends `msg` from `src` (set per packet, so the VIPs never become the source) to `dst`.
    pub fn send(&self, msg: &[u8], src: IpAddr, dst: IpAddr) -> io::Result<()> {
        let iov = [IoSlice::new(msg)];
        let fd = self.fd.as_raw_fd();
        let ifindex = i32::try_from(self.ifindex).unwrap_or(0);
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: ifindex,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(src).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv4PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&to),
                )
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: src.octets(),
                    },
                    ipi6_ifindex: self.ifindex,
                };
                let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, self.ifindex));
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&to),
                )
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "mixed address families",
                ));
            }
        }
        .map(|_| ())
        .map_err(nix_err)
    }

    /// The next datagram. IPv4 datagrams that do not even parse as IPv4 VRRP come back as
    /// `Err(DropReason)` inside `Ok`, so the caller can count them.
    pub async fn recv(&mut self) -> io::Result<Result<Datagram, DropReason>> {
        let Self {
            fd, v6, buf, drops, ..
        } = self;
        fd.async_io(Interest::READABLE, || recv_now(fd, *v6, buf, drops))
            .await
    }
}

fn recv_now(
    fd: &UdpSocket,
    v6: bool,
    buf: &mut [u8],
    drops: &mut u32,
) -> io::Result<Result<Datagram, DropReason>> {
    let fd = fd.as_raw_fd();
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int, u32);
    let (len, src, hop, dst) = {
        let m = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .map_err(nix_err)?;
        let mut hop = None;
        let mut dst = None;
        for c in m.cmsgs().map_err(nix_err)? {
            match c {
                ControlMessageOwned::Ipv6HopLimit(h) => hop = u8::try_from(h).ok(),
                ControlMessageOwned::Ipv6PacketInfo(i) => {
                    dst = Some(IpAddr::V6(Ipv6Addr::from(i.ipi6_addr.s6_addr)));
                }
                ControlMessageOwned::RxqOvfl(n) => *drops = n,
                _ => {}
            }
        }
        let src = m
            .address
            .and_then(|a| a.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())));
        (m.bytes, src, hop, dst)
    };
    let data = &buf[..len];
    if !v6 {
        return Ok(packet::split_ipv4(data).map(|(h, payload)| Datagram {
            src: IpAddr::V4(h.src),
            dst: IpAddr::V4(h.dst),
            ttl: h.ttl,
            payload: payload.to_vec(),
        }));
    }
    Ok(Ok(Datagram {
        src: src.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        dst: dst.unwrap_or(IpAddr::V6(GROUP_V6)),
        ttl: hop.unwrap_or(0),
        payload: data.to_vec(),
    }))
}

/// Sends gratuitous ARP / unsolicited NA frames on one interface. The packet socket is opened
/// with protocol 0, so it receives nothing.
#[derive(Debug)]
pub struct Announcer {
    socket: Socket,
    ifindex: u32,
    mac: Mac,
}

impl Announcer {
    /// A sender on interface `ifindex` whose MAC is `mac`.
    pub fn open(ifindex: u32, mac: Mac) -> io::Result<Self> {
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            ifindex,
            mac,
        })
    }

    /// The interface's MAC address changed: announce the new one from now on.
    pub fn set_mac(&mut self, mac: Mac) {
        self.mac = mac;
    }

    /// Announces `vip` once: gratuitous ARP for IPv4, unsolicited NA for IPv6.
    pub fn announce(&self, vip: IpAddr) -> io::Result<()> {
        let (frame, ethertype) = match vip {
            IpAddr::V4(a) => (announce::garp(self.mac, a), ETH_P_ARP),
            IpAddr::V6(a) => (announce::unsolicited_na(self.mac, a), ETH_P_IPV6),
        };
        self.send(&frame, ethertype)
    }

    /// Asks whether anyone else has `vip`: an ARP probe (RFC 5227) or a duplicate address
    /// detection probe (RFC 4862). An answer shows up in [`ConflictWatch`].
    pub fn probe(&self, vip: IpAddr) -> io::Result<()> {
        match vip {
            IpAddr::V4(a) => self.send(&announce::arp_probe(self.mac, a), ETH_P_ARP),
            IpAddr::V6(a) => self.send(&announce::dad_probe(self.mac, a), ETH_P_IPV6),
        }
    }

    fn send(&self, frame: &[u8], ethertype: u16) -> io::Result<()> {
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[..6]);
        let addr = link_addr(self.ifindex, ethertype, dst)?;
        self.socket.send_to(frame, &addr).map(|_| ())
    }
}

/// Hears who claims addresses on one interface: every ARP packet (IPv4; a packet socket) or
/// every ICMPv6 message (IPv6; a raw socket, of which only Neighbor Advertisements count), so
/// the daemon sees another MAC claiming a virtual address it holds.
#[derive(Debug)]
pub struct ConflictWatch {
    fd: UdpSocket,
    v6: bool,
    buf: Vec<u8>,
}

impl ConflictWatch {
    /// Opens the watch on interface `ifname`/`ifindex`.
    pub fn open(ifname: &str, ifindex: u32, v6: bool) -> io::Result<Self> {
        let s = if v6 {
            let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
            s.bind_device(Some(ifname.as_bytes()))?;
            s
        } else {
            let s = Socket::new(
                Domain::PACKET,
                Type::DGRAM,
                Some(Protocol::from(i32::from(ETH_P_ARP.to_be()))),
            )?;
            s.bind(&link_addr(ifindex, ETH_P_ARP, [0; 6])?)?;
            s
        };
        s.set_nonblocking(true)?;
        Ok(Self {
            fd: UdpSocket::from_std(std::net::UdpSocket::from(s))?,
            v6,
            buf: vec![0; 2048],
        })
    }

    /// The next claim heard: an address and the MAC claiming it. Other packets are skipped.
    pub async fn recv(&mut self) -> io::Result<(IpAddr, Mac)> {
        loop {
            let Self { fd, v6, buf } = self;
            let n = fd
                .async_io(Interest::READABLE, || {
                    nix::sys::socket::recv(fd.as_raw_fd(), buf, MsgFlags::empty()).map_err(nix_err)
                })
                .await?;
            let claim = if *v6 {
                announce::na_claim(&buf[..n]).map(|(a, m)| (IpAddr::V6(a), m))
            } else {
                announce::arp_claim(&buf[..n]).map(|(a, m)| (IpAddr::V4(a), m))
            };
            if let Some(c) = claim {
                return Ok(c);
            }
        }
    }
}

/// A `sockaddr_ll` for sending on a packet socket. socket2 and nix have no safe constructor for
/// link-layer addresses, hence the one unsafe block of the crate.
#[allow(unsafe_code)]
fn link_addr(ifindex: u32, ethertype: u16, dst: Mac) -> io::Result<SockAddr> {
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    // SAFETY: `try_init` hands us zeroed storage of `sockaddr_storage` size, which is larger
    // than and suitably aligned for `sockaddr_ll`; we write one `sockaddr_ll` into it and report
    // its exact length.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let ll = storage.cast::<libc::sockaddr_ll>();
            let mut addr = [0u8; 8];
            addr[..6].copy_from_slice(&dst);
            ll.write(libc::sockaddr_ll {
                sll_family: u16::try_from(libc::AF_PACKET).unwrap_or(17),
                sll_protocol: ethertype.to_be(),
                sll_ifindex: ifindex,
                sll_hatype: 0,
                sll_pkttype: 0,
                sll_halen: 6,
                sll_addr: addr,
            });
            len.write(u32::try_from(size_of::<libc::sockaddr_ll>()).unwrap_or(20));
            Ok(())
        })
    }?;
    Ok(addr)
}

/// The destination adverts go to: the VRRP group, or each unicast peer.
pub fn group_of(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(GROUP_V6)
    } else {
        IpAddr::V4(GROUP_V4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn group_addresses() {
        assert_eq!(group_of(false), IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)));
        assert!(group_of(true).is_multicast());
    }
}
