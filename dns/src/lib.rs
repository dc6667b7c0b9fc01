//! fedplane-dns: authoritative DNS for the federation zone, answering from SkyDNS records in
//! etcd out of an in-memory snapshot that an etcd watch keeps current.
//!
//! Layers, low to high (see ARCHITECTURE.md):
//! - [`record`], [`key`]: the SkyDNS value and key formats;
//! - [`index`]: the immutable record snapshot;
//! - [`answer`]: query bytes + snapshot → response bytes (no I/O);
//! - [`sync`]: etcd load + watch → snapshots;
//! - [`server`]: UDP and TCP listeners; [`probes`]: readiness and metric help texts;
//! - [`config`]: command line and YAML.

pub mod answer;
pub mod apply;
pub mod config;
pub mod fast;
pub mod index;
pub mod key;
pub mod probes;
pub mod record;
pub mod server;
pub mod soa;
pub mod sync;
