use super::*;
use crate::packet::{Checksum, Version};

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("fedplane-vipd").chain(args.iter().copied()))
        .expect("flags parse")
}

fn resolve(args: &[&str]) -> Result<Settings, ConfigError> {
    Settings::resolve(cli(args))
}

#[test]
fn one_group_from_flags() {
    let s = resolve(&[
        "--interface",
        "eth0",
        "--vrid",
        "51",
        "--priority",
        "150",
        "--advert-interval",
        "100ms",
        "--vip",
        "192.0.2.100/24",
        "--vip",
        "192.0.2.101/24",
        "--no-preempt",
    ])
    .expect("valid");
    let g = &s.groups[0];
    assert_eq!(g.interface, "eth0");
    assert_eq!(g.fsm.vrid, 51);
    assert_eq!(g.fsm.priority, 150);
    assert_eq!(g.fsm.advert_interval, Duration::from_millis(100));
    assert!(!g.fsm.preempt);
    assert!(!g.v6);
    assert_eq!(g.version, Version::V3);
    assert_eq!(g.checksum, Checksum::PseudoHeader);
}

#[test]
fn bad_flags_say_what_is_wrong() {
    let err = |args: &[&str]| resolve(args).expect_err("invalid").to_string();
    assert!(err(&["--interface", "eth0", "--vip", "192.0.2.1/24"]).contains("--vrid"));
    assert!(err(&["--interface", "eth0", "--vrid", "1"]).contains("no virtual addresses"));
    assert!(
        err(&[
            "--interface",
            "eth0",
            "--vrid",
            "0",
            "--vip",
            "192.0.2.1/24"
        ])
        .contains("VRID")
    );
    assert!(
        err(&[
            "--interface",
            "eth0",
            "--vrid",
            "1",
            "--vip",
            "192.0.2.1/24",
            "--vip",
            "2001:db8::1/64"
        ])
        .contains("mixes")
    );
    assert!(
        err(&[
            "--interface",
            "eth0",
            "--vrid",
            "1",
            "--vip",
            "2001:db8::1/64",
            "--vrrp-version",
            "2",
            "--advert-interval",
            "1s"
        ])
        .contains("IPv4 only")
    );
    assert!(
        err(&[
            "--interface",
            "eth0",
            "--vrid",
            "1",
            "--vip",
            "192.0.2.1/24",
            "--vrrp-version",
            "2"
        ])
        .contains("whole seconds")
    );
    assert!(
        err(&[
            "--interface",
            "eth0",
            "--vrid",
            "1",
            "--vip",
            "192.0.2.1/24",
            "--advert-interval",
            "5ms"
        ])
        .contains("10ms")
    );
    assert!(Cli::try_parse_from(["fedplane-vipd", "--vrrp-version", "4"]).is_err());
    let peer6 = err(&[
        "--interface",
        "eth0",
        "--vrid",
        "1",
        "--vip",
        "2001:db8::1/64",
        "--unicast-peer",
        "2001:db8::2",
    ]);
    assert!(peer6.contains("link-local"), "{peer6}");
}

/// Resolves `flags` with a config file holding `yaml`.
fn resolve_yaml(yaml: &str, flags: &[&str]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vipd.yaml");
    std::fs::write(&path, yaml).expect("write");
    let mut args = vec!["--config", path.to_str().expect("utf-8")];
    args.extend_from_slice(flags);
    resolve(&args)
}

#[test]
fn several_groups_from_yaml() {
    let s = resolve_yaml(
        "http: 127.0.0.1:9999\ngroups:\n  - vrid: 51\n    priority: 150\n    vips: [192.0.2.100/24]\n  - vrid: 52\n    interface: eth1\n    advert_interval: 1s\n    vrrp_version: 2\n    preempt: false\n    vips: [192.0.2.101/24]\n  - vrid: 51\n    vips: ['2001:db8::100/64']\n",
        &["--interface", "eth0"],
    )
    .expect("valid");
    assert_eq!(s.http.to_string(), "127.0.0.1:9999");
    assert_eq!(s.groups.len(), 3);
    assert_eq!(s.groups[0].interface, "eth0");
    assert_eq!(s.groups[1].interface, "eth1");
    assert_eq!(s.groups[1].version, Version::V2);
    assert!(!s.groups[1].fsm.preempt);
    assert!(s.groups[2].v6, "same VRID, other family: a separate group");

    let e = resolve_yaml(
        "groups:\n  - vrid: 51\n    vips: [192.0.2.100/24]\n    colour: red\n",
        &["--interface", "eth0"],
    )
    .expect_err("unknown field");
    assert!(e.to_string().contains("colour"), "{e}");

    let e = resolve_yaml(
        "groups:\n  - vrid: 51\n    vips: [192.0.2.100/24]\n  - vrid: 51\n    vips: [192.0.2.101/24]\n",
        &["--interface", "eth0"],
    )
    .expect_err("duplicate");
    assert!(e.to_string().contains("two groups"), "{e}");

    let two = "groups:\n  - vrid: 51\n    vips: [192.0.2.100/24]\n  - vrid: 52\n    priority: 120\n    vips: [192.0.2.101/24]\n";
    let s = resolve_yaml(
        two,
        &["--interface", "eth0", "--priority", "180", "--no-preempt"],
    )
    .expect("valid");
    assert_eq!(s.groups[0].fsm.priority, 180, "the flag is the default");
    assert!(!s.groups[0].fsm.preempt);
    assert_eq!(s.groups[1].fsm.priority, 120, "the file wins");

    let e = resolve_yaml(two, &["--vrid", "3"]).expect_err("mixed");
    assert!(e.to_string().contains("with --config"), "{e}");
}

#[test]
fn the_example_file_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fedplane-vipd.example.yaml");
    let s = resolve(&["--config", path]).expect("the example parses");
    assert_eq!(s.groups.len(), 4);
    assert_eq!(s.groups[3].unicast_peers.len(), 2);
}

#[test]
fn the_kubernetes_example_file_is_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fedplane-vipd.kubernetes.example.yaml"
    );
    let s = resolve(&["--kubernetes", "--node-name", "node-a", "--config", path])
        .expect("the example parses");
    assert_eq!(s.groups.len(), 3);
    assert!(s.groups.iter().all(|g| g.dynamic && g.vips.is_empty()));
    assert!(s.groups[2].v6);
    let auto = crate::config::auto_priority("node-a", 61);
    assert_eq!(s.groups[0].fsm.priority, auto);
    assert!((50..=249).contains(&auto));
    let kube = s.kube.expect("Kubernetes mode");
    assert_eq!(kube.lease.to_string(), "fedplane-system/fedplane-vipd");
    assert_eq!(kube.quarantine, Duration::from_secs(60));
    assert!(kube.pools.get("dmz").is_some_and(|p| !p.auto_assign));
}

/// The DaemonSet's config file and every pool document under deploy/ (what the pool
/// ConfigMaps carry as config.yaml) are valid, with the DaemonSet's flags.
#[test]
fn the_deploy_manifests_config_and_pools_are_valid() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let config = format!("{deploy}/components/member/vipd-config.yaml");
    let s = resolve(&[
        "--kubernetes",
        "--node-name",
        "node-a",
        "--config",
        &config,
        "--pools-configmap=fedplane-system/fedplane-vipd-pools",
        "--lease=fedplane-system/fedplane-vipd",
    ])
    .expect("the DaemonSet's config parses");
    assert_eq!(s.groups.len(), 2);
    assert!(s.groups.iter().all(|g| g.dynamic && !g.v6));
    let mut pools = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(deploy)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read deploy/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == "vipd-pools.yaml") {
                let text = std::fs::read_to_string(&path).expect("read pools");
                crate::ipam::Pools::from_yaml(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                pools.push(path);
            }
        }
    }
    assert_eq!(
        pools.len(),
        5,
        "the member component's, the seeds' and the BGP example's: {pools:?}"
    );
}

#[test]
fn kubernetes_settings_are_checked() {
    for (args, want) in [
        (
            &["--kubernetes", "--node-name", "a", "--lease", "nolease"][..],
            "use NAMESPACE/NAME",
        ),
        (
            &[
                "--kubernetes",
                "--node-name",
                "a",
                "--lease-duration",
                "500ms",
            ][..],
            "at least 1s",
        ),
    ] {
        let e = resolve(args).expect_err("invalid");
        assert!(e.to_string().contains(want), "{e}");
    }
    let e = resolve_yaml(
        "groups: []\npools: [{name: a, addresses: [10.0.0.0/24]}]\n",
        &[],
    )
    .expect_err("pools need --kubernetes");
    assert!(
        e.to_string().contains("no groups")
            || e.to_string().contains("only used with --kubernetes"),
        "{e}"
    );
    let e = resolve_yaml(
        "groups: [{vrid: 5, interface: eth0, family: ipv5}]\n",
        &["--kubernetes", "--node-name", "a"],
    )
    .expect_err("bad family");
    assert!(e.to_string().contains("use ipv4 or ipv6"), "{e}");
}

#[test]
fn peers_limit_a_multicast_groups_speakers() {
    let base = [
        "--interface",
        "eth0",
        "--vrid",
        "51",
        "--vip",
        "192.0.2.100/24",
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        resolve(&a)
    };
    let s = with(&["--peer", "192.0.2.11", "--peer", "192.0.2.12"]).expect("valid");
    assert_eq!(s.groups[0].peers.len(), 2);
    assert!(with(&[]).expect("valid").groups[0].peers.is_empty());
    let err = |extra: &[&str]| with(extra).expect_err("invalid").to_string();
    assert!(err(&["--peer", "192.0.2.11", "--unicast-peer", "192.0.2.12"]).contains("unicast"));
    assert!(err(&["--peer", "fe80::1"]).contains("family"));
    assert!(err(&["--peer", "192.0.2.100"]).contains("both a virtual address and a peer"));
    let s = resolve_yaml(
        "groups:\n  - vrid: 51\n    vips: ['2001:db8::100/64']\n    peers: ['fe80::11', 'fe80::12']\n",
        &["--interface", "eth0"],
    )
    .expect("valid");
    assert_eq!(s.groups[0].peers.len(), 2);
    let e = resolve_yaml(
        "groups:\n  - vrid: 51\n    vips: ['2001:db8::100/64']\n    peers: ['2001:db8::11']\n",
        &["--interface", "eth0"],
    )
    .expect_err("global IPv6 peer");
    assert!(e.to_string().contains("link-local"), "{e}");
    let e = resolve_yaml(
        "groups:\n  - vrid: 51\n    vips: [192.0.2.100/24]\n",
        &["--interface", "eth0", "--peer", "192.0.2.11"],
    )
    .expect_err("one-group flag with --config");
    assert!(e.to_string().contains("--peer"), "{e}");
}

#[test]
fn a_v2_password_comes_from_the_setting_or_a_file_and_is_checked() {
    use crate::packet::Password;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, content: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).expect("write");
        p.to_str().expect("utf-8").to_owned()
    };
    let v2 = [
        "--interface",
        "eth0",
        "--vrid",
        "51",
        "--vip",
        "192.0.2.100/24",
        "--vrrp-version",
        "2",
        "--advert-interval",
        "1s",
    ];
    let with = |extra: &[&str]| {
        let mut a = v2.to_vec();
        a.extend_from_slice(extra);
        resolve(&a)
    };
    let good = file("good", b"s3cret\n");
    let s = with(&["--auth-pass-file", &good]).expect("valid");
    assert_eq!(s.groups[0].auth, Password::new(b"s3cret"));
    assert!(
        !format!("{:?}", s.groups[0]).contains("s3cret"),
        "never printed"
    );
    let eight = file("eight", b"12345678\r\n");
    assert_eq!(
        with(&["--auth-pass-file", &eight]).expect("valid").groups[0].auth,
        Password::new(b"12345678")
    );
    assert_eq!(with(&[]).expect("valid").groups[0].auth, None);
    let err = |extra: &[&str]| with(extra).expect_err("invalid").to_string();
    let long = file("long", b"123456789\n");
    let e = err(&["--auth-pass-file", &long]);
    assert!(e.contains("1–8 bytes") && !e.contains("123456789"), "{e}");
    let empty = file("empty", b"\n");
    assert!(err(&["--auth-pass-file", &empty]).contains("1–8 bytes"));
    let missing = dir.path().join("missing");
    assert!(err(&["--auth-pass-file", missing.to_str().expect("utf-8")]).contains("cannot read"));
    // v3 has no authentication.
    let e = resolve(&[
        "--interface",
        "eth0",
        "--vrid",
        "51",
        "--vip",
        "192.0.2.100/24",
        "--auth-pass-file",
        &good,
    ])
    .expect_err("v3")
    .to_string();
    assert!(e.contains("v2 only"), "{e}");
    // In the file: auth_pass or auth_pass_file, not both.
    let yaml = |auth: &str| {
        format!(
            "groups:\n  - vrid: 51\n    vrrp_version: 2\n    advert_interval: 1s\n    vips: [192.0.2.100/24]\n{auth}"
        )
    };
    let s = resolve_yaml(&yaml("    auth_pass: pw\n"), &["--interface", "eth0"]).expect("valid");
    assert_eq!(s.groups[0].auth, Password::new(b"pw"));
    let s = resolve_yaml(
        &yaml(&format!("    auth_pass_file: {good}\n")),
        &["--interface", "eth0"],
    )
    .expect("valid");
    assert_eq!(s.groups[0].auth, Password::new(b"s3cret"));
    let e = resolve_yaml(
        &yaml(&format!("    auth_pass: pw\n    auth_pass_file: {good}\n")),
        &["--interface", "eth0"],
    )
    .expect_err("both");
    assert!(e.to_string().contains("set one"), "{e}");
    let e = resolve_yaml(
        &yaml("    auth_pass: waytoolong\n"),
        &["--interface", "eth0"],
    )
    .expect_err("long");
    assert!(e.to_string().contains("1–8 bytes"), "{e}");
}

#[test]
fn addresses_that_cannot_be_virtual_are_refused() {
    for v in [
        "0.0.0.0/0",
        "192.0.2.1/0",
        "224.0.0.18/24",
        "127.0.0.2/8",
        "255.255.255.255/32",
        "ff02::12/64",
        "::1/128",
        "::/0",
    ] {
        let e = resolve(&["--interface", "eth0", "--vrid", "51", "--vip", v]).expect_err(v);
        assert!(
            e.to_string().contains("cannot be a virtual address"),
            "{v}: {e}"
        );
    }
    resolve(&[
        "--interface",
        "eth0",
        "--vrid",
        "51",
        "--vip",
        "fe80::100/64",
    ])
    .expect("a link-local IPv6 address can");
}
