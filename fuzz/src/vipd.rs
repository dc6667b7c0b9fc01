//! The targets of fedplane-vipd: VRRP messages through decoding and the receive checks, the
//! YAML config file and the pool ConfigMap.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use clap::Parser;
use fedplane_vipd::config::{Cli, Settings};
use fedplane_vipd::ipam::{Family, Kind, Pools, Quarantine, Svc, assign};
use fedplane_vipd::packet::{Datagram, Password, Version, decode, encode, split_ipv4};
use fedplane_vipd::receive::{Expected, accept, max_learnt_interval};

use crate::InputFile;

/// A VRRP message as received (IPv4 and IPv6): decoded, an advert encodes back to a message
/// that decodes to the same advert.
pub fn vrrp_advert(data: &[u8]) {
    let pairs: [(IpAddr, IpAddr); 2] = [
        (
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(224, 0, 0, 18).into(),
        ),
        (
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1).into(),
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12).into(),
        ),
    ];
    for (src, dst) in pairs {
        let Ok((advert, form)) = decode(data, src, dst, 255) else {
            continue;
        };
        let again = encode(&advert, src, dst, form);
        let (back, _) = decode(&again, src, dst, 255)
            .unwrap_or_else(|e| panic!("our encoding of {advert:?} does not decode: {e:?}"));
        assert_eq!(back, advert, "decode → encode → decode changed the advert");
    }
}

/// A raw IPv4 datagram as the VRRP socket delivers it (header included), through
/// [`split_ipv4`] and the receive checks of three groups (v3 multicast; v2 with a password and
/// a unicast peer; a dynamic group with a speaker list): whatever a group hears is a decodable
/// advert of its VRID, from a sender it allows, with the advert's priority and an interval
/// within the learnt bound.
pub fn vrrp_receive(data: &[u8]) {
    let Ok((header, payload)) = split_ipv4(data) else {
        return;
    };
    let ip = |d: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, d));
    let primary = ip(1);
    let groups = [
        Expected {
            vrid: 1,
            version: Version::V3,
            interval: Duration::from_secs(1),
            unicast_peers: Vec::new(),
            addresses: BTreeSet::from([ip(100)]),
            dynamic: false,
            speakers: None,
            auth: None,
        },
        Expected {
            vrid: 51,
            version: Version::V2,
            interval: Duration::from_secs(1),
            unicast_peers: vec![ip(2)],
            addresses: BTreeSet::from([ip(100), ip(101)]),
            dynamic: false,
            speakers: None,
            auth: Password::new(b"secret"),
        },
        Expected {
            vrid: 7,
            version: Version::V3,
            interval: Duration::from_millis(100),
            unicast_peers: Vec::new(),
            addresses: BTreeSet::new(),
            dynamic: true,
            speakers: Some(BTreeSet::from([ip(2), ip(3)])),
            auth: None,
        },
    ];
    let d = Datagram {
        src: header.src.into(),
        dst: header.dst.into(),
        ttl: header.ttl,
        payload: payload.to_vec(),
    };
    for expected in &groups {
        let Ok(heard) = accept(expected, primary, &d) else {
            continue;
        };
        let (advert, _) = decode(&d.payload, d.src, d.dst, d.ttl).expect("a heard advert decodes");
        assert_eq!(advert.vrid, expected.vrid, "heard another VRID");
        assert_eq!(advert.version, expected.version, "heard another version");
        assert_ne!(d.src, primary, "heard our own advert");
        assert_eq!(heard.src, d.src);
        assert_eq!(heard.priority, advert.priority);
        assert!(heard.interval <= max_learnt_interval(expected.interval));
        assert!(expected.unicast_peers.is_empty() || expected.unicast_peers.contains(&d.src));
        assert!(
            expected
                .speakers
                .as_ref()
                .is_none_or(|s| s.contains(&d.src))
        );
        let listed: BTreeSet<IpAddr> = advert.addrs.iter().copied().collect();
        assert!(expected.dynamic || listed == expected.addresses);
    }
}

/// The YAML config file of fedplane-vipd (`--config`), read and resolved as the daemon does,
/// without and with `--kubernetes` (pools are valid only there): never a panic, and an error
/// is a message.
pub fn vipd_config(data: &[u8]) {
    let file = InputFile::new("vipd-config.yaml", data);
    for kubernetes in [false, true] {
        let mut args = vec![
            "fedplane-vipd",
            "--config",
            file.path(),
            "--node-name",
            "node-a",
        ];
        if kubernetes {
            args.push("--kubernetes");
        }
        let cli = Cli::try_parse_from(args).expect("the command line parses");
        if let Err(e) = Settings::resolve(cli) {
            assert!(!e.to_string().trim().is_empty(), "an empty error: {e:?}");
        }
    }
}

/// The `config.yaml` of the pool ConfigMap, as fedplane-vipd's assigner reads it: when it is
/// valid, Services naming each pool and Services naming none (dual-stack) get addresses that
/// lie in the right pool, are unique, and are of the families asked; and assignment run on its
/// own result changes nothing (a restart or a new leader moves no address).
pub fn vipd_pools(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pools) = Pools::from_yaml(text) else {
        return;
    };
    let both = [Family::V4, Family::V6];
    let mut svcs = Vec::new();
    let mut add = |key: String, pool: Option<String>, families: Vec<Family>| {
        let n = svcs.len();
        svcs.push(Svc {
            key,
            created: format!("2026-01-01T00:00:{:02}Z", n % 60),
            kind: Kind::Ours,
            families,
            requested: Vec::new(),
            bad_request: None,
            pool,
            current: Vec::new(),
        });
    };
    for (p, pool) in pools.iter().enumerate().take(8) {
        let families: Vec<Family> = both.into_iter().filter(|&f| pool.has(f)).collect();
        for i in 0..2 {
            add(
                format!("p{p}/s{i}"),
                Some(pool.name.clone()),
                families.clone(),
            );
        }
    }
    for i in 0..3 {
        add(format!("auto/s{i}"), None, both.to_vec());
    }
    let legacy = BTreeMap::new();
    let quarantine = Quarantine::new(Duration::ZERO);
    let now = Instant::now();
    let plan = assign(&pools, &svcs, &legacy, &quarantine, now);
    let mut seen = BTreeSet::new();
    for svc in &svcs {
        let got = plan.addresses.get(&svc.key).map_or(&[][..], Vec::as_slice);
        for &ip in got {
            assert!(seen.insert(ip), "{ip} given twice");
            assert!(
                svc.families.contains(&Family::of(ip)),
                "{ip}: a family not asked"
            );
            let holder = pools
                .pool_of(ip)
                .unwrap_or_else(|| panic!("{ip} is in no pool"));
            match &svc.pool {
                Some(name) => assert_eq!(&holder.name, name, "{ip} from another pool"),
                None => assert!(holder.auto_assign, "{ip} from a pool without auto-assign"),
            }
        }
    }
    for svc in &mut svcs {
        svc.current = plan.addresses.get(&svc.key).cloned().unwrap_or_default();
    }
    let again = assign(&pools, &svcs, &legacy, &quarantine, now);
    assert_eq!(
        again.addresses, plan.addresses,
        "assignment of its own result moved addresses"
    );
}
