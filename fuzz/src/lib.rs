//! fedplane's fuzz targets. Each takes arbitrary bytes, runs them through one parser and the
//! code behind it, and checks invariants, not only "no panic": a violation panics, which is
//! what a fuzzer reports.
//!
//! The same functions run in two ways: under coverage-guided fuzzing (cargo-fuzz and
//! libFuzzer, nightly: `fuzz/libfuzzer`, one target per function, see `fuzz/README.md`), and
//! on stable in the test command, which replays every committed input under
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` (`tests/corpora.rs`), so a fresh
//! machine with only stable Rust still checks every input a fuzzer ever found.

mod controller;
mod dns;
mod vipd;

pub use controller::controller_snapshot;
pub use dns::{dns_config, dns_query, dns_state, dns_transfer, dns_update, etcd_key, skydns_value};
pub use vipd::{vipd_config, vipd_pools, vrrp_advert, vrrp_receive};

use std::path::PathBuf;

/// A fuzz target: panics when an input breaks an invariant.
pub type Target = fn(&[u8]);

/// Every target, by name (the name of its corpus directory and of its cargo-fuzz target).
pub const TARGETS: &[(&str, Target)] = &[
    ("dns_query", dns_query),
    ("skydns_value", skydns_value),
    ("etcd_key", etcd_key),
    ("dns_config", dns_config),
    ("dns_state", dns_state),
    ("dns_transfer", dns_transfer),
    ("dns_update", dns_update),
    ("vrrp_advert", vrrp_advert),
    ("vrrp_receive", vrrp_receive),
    ("vipd_config", vipd_config),
    ("vipd_pools", vipd_pools),
    ("controller_snapshot", controller_snapshot),
];

/// An input written to a file of its own (for the targets whose code reads a path): unique to
/// the process and thread, removed when dropped.
struct InputFile(PathBuf);

impl InputFile {
    fn new(name: &str, data: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "fedplane-fuzz-{}-{:?}-{name}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, data).expect("write the input file");
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for InputFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
