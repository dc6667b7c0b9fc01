//! fedplane-vipd: VRRP v3/v2 virtual IPs on one node at a time, interoperable with keepalived.
//!
//! The protocol and decision logic is free of I/O: [`packet`] (wire format), [`fsm`] (the RFC
//! 5798 state machine, driven by events and the time) and [`announce`] (gratuitous ARP and
//! unsolicited NA frames). Sockets and netlink stay in [`net`] and [`daemon`].

pub mod announce;
pub mod assigner;
pub mod config;
pub mod daemon;
pub mod fsm;
pub mod ipam;
pub mod kubernetes;
pub mod leader;
pub mod lease;
pub mod net;
pub mod netlink;
pub mod packet;
pub mod probes;
pub mod receive;
pub mod services;
