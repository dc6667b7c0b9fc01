//! fedplane-dns: authoritative DNS for the federation zone, answering from SkyDNS records in
//! etcd, held in memory and kept current by an etcd watch.
//!
//! Layers, low to high (see ARCHITECTURE.md):
//! - [`record`], [`key`]: the SkyDNS value and key formats;
//! - [`index`]: the records at one etcd revision ([`index::Records`]), zones, serials, leases;
//! - [`soa`]: a zone's SOA and default NS, for both answer paths;
//! - [`answer`]: query bytes + records → response (the general path and the reference; no
//!   I/O); [`answer::zone`]: a zone as the RRsets a transfer carries;
//! - [`fast`]: A/AAAA answers compiled into wire format ([`fast::Table`]) and the UDP fast path;
//! - [`apply`]: a load page or a watch batch → puts and deletes on the records (no I/O);
//! - [`sync`]: the etcd session (load, watch, backoff) → published [`sync::Served`]; with
//!   [`leases`] (lease deadlines, read off the watch loop) and [`state`] (the snapshot on disk);
//! - [`server`]: UDP and TCP listeners; [`probes`]: readiness and metric help texts;
//! - [`tsig`]: TSIG signatures (RFC 8945) on the wire bytes; [`acl`]: who may transfer;
//!   [`transfer`]: AXFR/IXFR message streams; [`notify`]: when to send NOTIFY;
//! - [`config`]: command line and YAML.

pub mod acl;
pub mod answer;
pub mod apply;
pub mod catalog;
pub mod cidr;
pub mod config;
pub mod fast;
pub mod federation;
pub mod index;
pub mod ixfr;
pub mod key;
pub mod leases;
pub mod notify;
pub mod probes;
pub mod record;
pub mod server;
pub mod soa;
pub mod state;
pub mod sync;
pub mod topology;
pub mod transfer;
pub mod tsig;
pub mod update;
