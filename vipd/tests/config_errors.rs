//! The config file's error messages. serde's derived messages name the Rust
//! type ("untagged enum PriorityFile"); the refactor renamed the
//! types, and these two keep their names, so what
//! `fedplane-vipd --config` prints on these mistakes stays as it was (the texts of 548ad03).

use clap::Parser;
use fedplane_vipd::config::{Cli, Settings};

fn error_of(yaml: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vipd.yaml");
    std::fs::write(&path, yaml).expect("write");
    let cli = Cli::try_parse_from([
        "fedplane-vipd",
        "--config",
        path.to_str().expect("utf-8 path"),
        "--node-name",
        "n1",
    ])
    .expect("flags parse");
    Settings::resolve(cli).expect_err("invalid").to_string()
}

#[test]
fn a_priority_that_is_neither_a_number_nor_auto_is_reported_as_before() {
    let e = error_of(
        "groups:\n  - {interface: eth0, vrid: 1, vips: [192.0.2.1/24], priority: banana}\n",
    );
    assert!(e.contains("untagged enum PriorityFile"), "{e}");
}

#[test]
fn a_group_that_is_not_a_mapping_is_reported_as_before() {
    let e = error_of("groups:\n  - eth0\n");
    assert!(e.contains("line 2 column 5: expected mapping start"), "{e}");
}
