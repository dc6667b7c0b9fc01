//! fedplane-vipd: VRRP v3/v2 virtual IPs on one node at a time, interoperable with keepalived,
//! and in Kubernetes mode the addresses of LoadBalancer Services.
//!
//! The protocol and decision logic is free of I/O: [`packet`] (wire format), [`receive`] (which
//! datagrams a group hears), [`fsm`] (the RFC 5798 state machine, driven by events and the
//! time), [`announce`] (gratuitous ARP and unsolicited NA frames), [`ipam`] (address
//! assignment), [`services`] (Kubernetes objects as assignment sees them, addresses → groups),
//! [`lease`] (the election rules) and [`peers`] (who may speak in Kubernetes mode). Sockets
//! and netlink stay in [`net`], [`netlink`], [`daemon`] and [`supervisor`]; the Kubernetes API
//! in [`kubernetes`], [`leader`] and [`assigner`].
//!
//! From low to high level:
//! - [`packet`]: VRRP adverts ↔ bytes; [`packet::DropReason`] names every refusal.
//! - [`receive`]: the checks beyond the wire format → the advert heard, or why not.
//! - [`fsm`]: one group's state machine ([`fsm::Router`]): `(event, now) → [Action]`.
//! - [`announce`]: gratuitous ARP and unsolicited NA frames.
//! - [`config`]: flags and YAML → checked settings (a group's in `config/group.rs`).
//! - [`net`]: the raw VRRP socket, the announcement socket, the ARP/NA conflict watch.
//! - [`netlink`]: links (followed by name), source addresses, adding and removing virtual
//!   addresses, `promote_secondaries`.
//! - [`daemon`]: runs one group: the state machine's actions with sockets and netlink, its
//!   interface followed through faults.
//! - [`ipam`]: pools, quarantine and `assign` → the addresses each Service should have.
//! - [`services`]: a Service → what `ipam` sees; the legacy ConfigMap; addresses → groups.
//! - [`lease`]: the Lease election rules (client-go's), free of I/O.
//! - [`leader`]: the Lease loop: reads and writes the Lease as [`lease`] decides.
//! - [`assigner`]: one pass: addresses to the groups; as leader, status writes and Events.
//! - [`kubernetes`]: the client, and the task wiring the watches, the Lease loop and passes,
//!   on its own thread and runtime (a long pass never delays the groups' adverts); the
//!   speaker Pods → the VRRP allowlist, refused speakers → Events.
//! - [`probes`]: readiness and metric help texts for `fedplane-ops`.
//! - [`supervisor`]: the groups as a whole: start, reload (SIGHUP), state dump (SIGUSR1).
//! - [`speakers`]: the channels between the groups and Kubernetes mode about who may speak.
//! - [`peers`]: who may speak in Kubernetes mode (the fedplane-vipd Pods), the Pod annotation
//!   with our own sources, and the rate limit of refused-speaker Events; free of I/O.

pub mod announce;
pub mod assigner;
pub mod bgp;
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
pub mod peers;
pub mod probes;
pub mod receive;
pub mod services;
pub mod speakers;
pub mod supervisor;
