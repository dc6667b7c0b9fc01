use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::fsm::{OWNER, RESIGN};
use crate::packet::{Advert, Auth, Checksum, Password, encode, split_ipv4};

const PRIMARY: &str = "10.0.0.1";
const PEER: &str = "10.0.0.2";
const GROUP: &str = "224.0.0.18";
const VIP: &str = "10.0.0.100";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn expected(version: Version) -> Expected {
    Expected {
        vrid: 51,
        version,
        interval: Duration::from_secs(1),
        unicast_peers: Vec::new(),
        addresses: BTreeSet::from([ip(VIP)]),
        dynamic: false,
        speakers: None,
        auth: None,
    }
}

fn advert(version: Version) -> Advert {
    Advert {
        version,
        vrid: 51,
        priority: 100,
        interval: Duration::from_secs(1),
        addrs: vec![ip(VIP)],
        auth: Auth::None,
    }
}

fn datagram(a: &Advert, src: &str) -> Datagram {
    Datagram {
        src: ip(src),
        dst: ip(GROUP),
        ttl: 255,
        payload: encode(a, ip(src), ip(GROUP), Checksum::PseudoHeader),
    }
}

fn check(e: &Expected, d: &Datagram) -> Result<Heard, DropReason> {
    accept(e, ip(PRIMARY), d)
}

#[test]
fn a_peers_advert_of_our_group_is_heard() {
    for version in [Version::V3, Version::V2] {
        let heard = check(&expected(version), &datagram(&advert(version), PEER));
        assert_eq!(
            heard,
            Ok(Heard {
                src: ip(PEER),
                priority: 100,
                interval: Duration::from_secs(1),
                clamped: None,
            })
        );
    }
}

#[test]
fn our_own_advert_looped_back_is_dropped() {
    let d = datagram(&advert(Version::V3), PRIMARY);
    assert_eq!(check(&expected(Version::V3), &d), Err(DropReason::Own));
}

#[test]
fn in_unicast_mode_only_configured_peers_are_heard() {
    let e = Expected {
        unicast_peers: vec![ip("10.0.0.3")],
        ..expected(Version::V3)
    };
    let d = datagram(&advert(Version::V3), PEER);
    assert_eq!(check(&e, &d), Err(DropReason::Foreign(ip(PEER))));
    let d = datagram(&advert(Version::V3), "10.0.0.3");
    assert!(check(&e, &d).is_ok());
}

#[test]
fn only_allowed_speakers_are_heard_whatever_their_priority() {
    let e = Expected {
        speakers: Some(BTreeSet::from([ip("10.0.0.3")])),
        ..expected(Version::V3)
    };
    for priority in [RESIGN, 100, 254, OWNER] {
        let a = Advert {
            priority,
            ..advert(Version::V3)
        };
        assert_eq!(
            check(&e, &datagram(&a, PEER)),
            Err(DropReason::Foreign(ip(PEER)))
        );
        assert!(check(&e, &datagram(&a, "10.0.0.3")).is_ok());
    }
    // Our own address is never foreign, and another group's speakers are another group's.
    let own = datagram(&advert(Version::V3), PRIMARY);
    assert_eq!(check(&e, &own), Err(DropReason::Own));
    let other = Advert {
        vrid: 52,
        ..advert(Version::V3)
    };
    assert_eq!(
        check(&e, &datagram(&other, PEER)),
        Err(DropReason::Vrid(52))
    );
    // A unicast group with speakers hears only sources on both lists.
    let both = Expected {
        unicast_peers: vec![ip(PEER), ip("10.0.0.3")],
        speakers: Some(BTreeSet::from([ip("10.0.0.3")])),
        ..expected(Version::V3)
    };
    assert_eq!(
        check(&both, &datagram(&advert(Version::V3), PEER)),
        Err(DropReason::Foreign(ip(PEER)))
    );
    // No list: anyone.
    assert!(
        check(
            &expected(Version::V3),
            &datagram(&advert(Version::V3), PEER)
        )
        .is_ok()
    );
}

#[test]
fn v2_authentication_must_match_ours() {
    let pass = Password::new(b"secret").expect("password");
    let other = Password::new(b"guess").expect("password");
    let with = Expected {
        auth: Some(pass),
        ..expected(Version::V2)
    };
    let signed = |auth| Advert {
        auth,
        ..advert(Version::V2)
    };
    assert!(check(&with, &datagram(&signed(Auth::Pass(pass)), PEER)).is_ok());
    for auth in [Auth::Pass(other), Auth::None, Auth::Other(2)] {
        assert_eq!(
            check(&with, &datagram(&signed(auth), PEER)),
            Err(DropReason::Auth),
            "{auth:?}"
        );
    }
    let without = expected(Version::V2);
    assert!(check(&without, &datagram(&signed(Auth::None), PEER)).is_ok());
    assert_eq!(
        check(&without, &datagram(&signed(Auth::Pass(pass)), PEER)),
        Err(DropReason::Auth)
    );
}

#[test]
fn more_addresses_than_an_advert_lists_are_compared_by_the_listed_subset() {
    let addrs: Vec<IpAddr> = (0..300u32)
        .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_1000 + i)))
        .collect();
    // The sender lists what `listed` keeps; the receiver expects the same, in any order.
    let (sent, excess) = crate::packet::listed_of(addrs.iter().copied());
    assert_eq!(excess, 45);
    let e = Expected {
        addresses: crate::packet::listed_of(addrs.iter().rev().copied())
            .0
            .into_iter()
            .collect(),
        ..expected(Version::V3)
    };
    let a = Advert {
        addrs: sent,
        ..advert(Version::V3)
    };
    assert!(check(&e, &datagram(&a, PEER)).is_ok());
}

#[test]
fn the_learnt_interval_is_bounded() {
    assert_eq!(
        max_learnt_interval(Duration::from_millis(100)),
        Duration::from_secs(1)
    );
    assert_eq!(
        max_learnt_interval(Duration::from_secs(2)),
        Duration::from_secs(20)
    );
    let e = Expected {
        interval: Duration::from_millis(100),
        ..expected(Version::V3)
    };
    // A forged 40.95 s advert is learnt as 1 s, and reported.
    let slow = Advert {
        interval: Duration::from_millis(40_950),
        ..advert(Version::V3)
    };
    let heard = check(&e, &datagram(&slow, PEER)).expect("heard");
    assert_eq!(heard.interval, Duration::from_secs(1));
    assert_eq!(heard.clamped, Some(Duration::from_millis(40_950)));
    // keepalived's default 1 s beside our 100 ms is learnt as it is.
    let keepalived = Advert {
        interval: Duration::from_secs(1),
        ..advert(Version::V3)
    };
    let heard = check(&e, &datagram(&keepalived, PEER)).expect("heard");
    assert_eq!(
        (heard.interval, heard.clamped),
        (Duration::from_secs(1), None)
    );
}

#[test]
fn another_vrid_is_dropped() {
    let a = Advert {
        vrid: 52,
        ..advert(Version::V3)
    };
    let d = datagram(&a, PEER);
    assert_eq!(check(&expected(Version::V3), &d), Err(DropReason::Vrid(52)));
}

#[test]
fn another_version_is_dropped() {
    let d = datagram(&advert(Version::V2), PEER);
    assert_eq!(
        check(&expected(Version::V3), &d),
        Err(DropReason::Version(2))
    );
    let d = datagram(&advert(Version::V3), PEER);
    assert_eq!(
        check(&expected(Version::V2), &d),
        Err(DropReason::Version(3))
    );
}

#[test]
fn another_address_list_is_dropped_even_from_an_owner_unless_in_a_dynamic_group() {
    let a = Advert {
        addrs: vec![ip("10.0.0.101")],
        ..advert(Version::V3)
    };
    let d = datagram(&a, PEER);
    assert_eq!(
        check(&expected(Version::V3), &d),
        Err(DropReason::Addresses)
    );
    // keepalived's rule, not RFC 5798's: an owner's advert counts only when it lists our
    // addresses, so a forged owner advert (even with an empty list) moves no master.
    for addrs in [vec![ip("10.0.0.101")], Vec::new()] {
        let owner = Advert {
            priority: OWNER,
            addrs,
            ..a.clone()
        };
        assert_eq!(
            check(&expected(Version::V3), &datagram(&owner, PEER)),
            Err(DropReason::Addresses)
        );
    }
    let owner = Advert {
        priority: OWNER,
        ..advert(Version::V3)
    };
    assert!(check(&expected(Version::V3), &datagram(&owner, PEER)).is_ok());
    let dynamic = Expected {
        dynamic: true,
        ..expected(Version::V3)
    };
    assert!(check(&dynamic, &d).is_ok());
}

#[test]
fn a_v2_interval_other_than_ours_is_dropped_but_a_v3_one_is_learnt() {
    let a = Advert {
        interval: Duration::from_secs(2),
        ..advert(Version::V2)
    };
    let d = datagram(&a, PEER);
    assert_eq!(
        check(&expected(Version::V2), &d),
        Err(DropReason::Interval(Duration::from_secs(2)))
    );
    let a = Advert {
        interval: Duration::from_secs(2),
        ..advert(Version::V3)
    };
    let heard = check(&expected(Version::V3), &datagram(&a, PEER)).expect("heard");
    assert_eq!(heard.interval, Duration::from_secs(2));
}

#[test]
fn the_wire_format_refusals_come_through() {
    let e = expected(Version::V3);
    let good = datagram(&advert(Version::V3), PEER);
    let ttl = Datagram {
        ttl: 254,
        ..good.clone()
    };
    assert_eq!(check(&e, &ttl), Err(DropReason::Ttl(254)));
    let short = Datagram {
        payload: good.payload[..7].to_vec(),
        ..good.clone()
    };
    assert_eq!(check(&e, &short), Err(DropReason::TooShort(7)));
    let mut bad = good.clone();
    bad.payload[0] = 0x32;
    assert_eq!(check(&e, &bad), Err(DropReason::Type(2)));
    let mut bad = good.clone();
    bad.payload[2] ^= 1;
    assert_eq!(check(&e, &bad), Err(DropReason::Checksum));
    let zero = Advert {
        interval: Duration::ZERO,
        ..advert(Version::V3)
    };
    let mut d = datagram(&zero, PEER);
    // encode rounds a zero interval up to 1 cs: write a zero and fix the checksum.
    d.payload[4..6].copy_from_slice(&[0, 0]);
    d.payload[6..8].copy_from_slice(&[0, 0]);
    let pseudo = [
        &[10, 0, 0, 2, 224, 0, 0, 18, 0, crate::packet::PROTO][..],
        &u16::try_from(d.payload.len()).expect("short").to_be_bytes(),
    ]
    .concat();
    let sum = crate::packet::internet_checksum(&[&pseudo, &d.payload]);
    d.payload[6..8].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(check(&e, &d), Err(DropReason::Interval(Duration::ZERO)));
    // Not IPv4 VRRP at all: refused before a datagram exists.
    let mut ip_packet = [0u8; 20];
    ip_packet[0] = 0x45;
    ip_packet[9] = 17;
    assert_eq!(split_ipv4(&ip_packet), Err(DropReason::NotVrrp));
}

/// The test of each reason: a new reason does not compile until it has one.
fn tested_by(reason: &DropReason) -> &'static str {
    match reason {
        DropReason::TooShort(_)
        | DropReason::NotVrrp
        | DropReason::Ttl(_)
        | DropReason::Type(_)
        | DropReason::Checksum => "the_wire_format_refusals_come_through",
        DropReason::Version(_) => "another_version_is_dropped",
        DropReason::Vrid(_) => "another_vrid_is_dropped",
        DropReason::Addresses => {
            "another_address_list_is_dropped_even_from_an_owner_unless_in_a_dynamic_group"
        }
        DropReason::Interval(_) => {
            "a_v2_interval_other_than_ours_is_dropped_but_a_v3_one_is_learnt"
        }
        DropReason::Foreign(_) => "only_allowed_speakers_are_heard_whatever_their_priority",
        DropReason::Auth => "v2_authentication_must_match_ours",
        DropReason::Own => "our_own_advert_looped_back_is_dropped",
    }
}

#[test]
fn every_drop_reason_has_a_test() {
    assert!(!tested_by(&DropReason::Own).is_empty());
}
