use super::*;
use proptest::prelude::*;

fn v4(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn advert(version: Version, addrs: &[&str]) -> Advert {
    Advert {
        version,
        vrid: 51,
        priority: 150,
        interval: if version == Version::V3 {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        },
        addrs: addrs.iter().map(|a| v4(a)).collect(),
        auth: Auth::None,
    }
}

const SRC: &str = "192.0.2.11";
const DST: &str = "224.0.0.18";

#[test]
fn v3_ipv4_round_trips_in_both_checksum_forms() {
    let a = advert(Version::V3, &["192.0.2.100", "192.0.2.101"]);
    for form in [Checksum::PseudoHeader, Checksum::MessageOnly] {
        let wire = encode(&a, v4(SRC), v4(DST), form);
        assert_eq!(wire.len(), 8 + 8);
        assert_eq!(wire[0], 0x31);
        assert_eq!(&wire[4..6], &[0, 10], "100 ms = 10 cs");
        let (back, got) = decode(&wire, v4(SRC), v4(DST), 255).expect("decodes");
        assert_eq!(back, a);
        assert_eq!(got, form);
    }
}

#[test]
fn keepalived_v3_ipv4_packet_decodes() {
    // keepalived 2.2.7, vrrp_version 3, VRID 51, priority 150, advert_int 0.1, one VIP
    // 192.0.2.100, sent from 192.0.2.11: checksum with the pseudo-header.
    let mut wire = vec![0x31, 51, 150, 1, 0x00, 0x0a, 0, 0, 192, 0, 2, 100];
    let pseudo = pseudo_header(v4(SRC), v4(DST), wire.len());
    let sum = internet_checksum(&[&pseudo, &wire]);
    wire[6..8].copy_from_slice(&sum.to_be_bytes());
    let (a, form) = decode(&wire, v4(SRC), v4(DST), 255).expect("decodes");
    assert_eq!(form, Checksum::PseudoHeader);
    assert_eq!(a.interval, Duration::from_millis(100));
    assert_eq!(a.addrs, vec![v4("192.0.2.100")]);
}

#[test]
fn v2_round_trips_with_auth_data_and_whole_seconds() {
    let mut a = advert(Version::V2, &["192.0.2.100"]);
    a.interval = Duration::from_millis(1500);
    let wire = encode(&a, v4(SRC), v4(DST), Checksum::PseudoHeader);
    assert_eq!(wire.len(), 8 + 4 + 8);
    assert_eq!(wire[0], 0x21);
    assert_eq!(wire[4], 0, "auth type none");
    assert_eq!(wire[5], 2, "1.5 s rounds up to 2 s");
    let (back, form) = decode(&wire, v4(SRC), v4(DST), 255).expect("decodes");
    assert_eq!(form, Checksum::MessageOnly, "v2 never has a pseudo-header");
    assert_eq!(back.interval, Duration::from_secs(2));
}

#[test]
fn v3_ipv6_uses_the_pseudo_header() {
    let src: IpAddr = "fe80::1".parse().expect("addr");
    let dst = IpAddr::V6(GROUP_V6);
    let a = Advert {
        version: Version::V3,
        vrid: 7,
        priority: 100,
        interval: Duration::from_millis(50),
        addrs: vec!["2001:db8::100".parse().expect("addr")],
        auth: Auth::None,
    };
    let wire = encode(&a, src, dst, Checksum::MessageOnly);
    assert_eq!(wire.len(), 8 + 16);
    let (back, form) = decode(&wire, src, dst, 255).expect("decodes");
    assert_eq!(back, a);
    assert_eq!(form, Checksum::PseudoHeader);
    // Without the pseudo-header it does not verify.
    let other: IpAddr = "fe80::2".parse().expect("addr");
    assert_eq!(decode(&wire, other, dst, 255), Err(DropReason::Checksum));
}

#[test]
fn malformed_adverts_are_dropped_with_a_reason() {
    let a = advert(Version::V3, &["192.0.2.100"]);
    let wire = encode(&a, v4(SRC), v4(DST), Checksum::PseudoHeader);
    assert_eq!(
        decode(&wire, v4(SRC), v4(DST), 254),
        Err(DropReason::Ttl(254))
    );
    assert_eq!(
        decode(&wire[..7], v4(SRC), v4(DST), 255),
        Err(DropReason::TooShort(7))
    );
    assert_eq!(
        decode(&wire[..11], v4(SRC), v4(DST), 255),
        Err(DropReason::TooShort(11))
    );
    let mut bad = wire.clone();
    bad[2] ^= 1;
    assert_eq!(
        decode(&bad, v4(SRC), v4(DST), 255),
        Err(DropReason::Checksum)
    );
    let mut bad = wire.clone();
    bad[0] = 0x41;
    assert_eq!(
        decode(&bad, v4(SRC), v4(DST), 255),
        Err(DropReason::Version(4))
    );
    let mut zero = advert(Version::V3, &["192.0.2.100"]);
    zero.interval = Duration::ZERO;
    let wire0 = encode(&zero, v4(SRC), v4(DST), Checksum::PseudoHeader);
    assert_eq!(wire0[5], 1, "we never send 0");
    let mut bad0 = wire0;
    bad0[5] = 0;
    let sum = internet_checksum(&[&pseudo_header(v4(SRC), v4(DST), bad0.len()), &{
        let mut b = bad0.clone();
        b[6] = 0;
        b[7] = 0;
        b
    }]);
    bad0[6..8].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        decode(&bad0, v4(SRC), v4(DST), 255),
        Err(DropReason::Interval(Duration::ZERO))
    );
    let mut bad = wire;
    bad[0] = 0x32;
    assert_eq!(
        decode(&bad, v4(SRC), v4(DST), 255),
        Err(DropReason::Type(2))
    );
    // v2 over IPv6 does not exist.
    let six: IpAddr = "fe80::1".parse().expect("addr");
    let v2 = [0x21, 1, 100, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(decode(&v2, six, six, 255), Err(DropReason::Version(2)));
}

#[test]
fn ipv4_datagrams_split_into_header_and_payload() {
    let mut d = vec![
        0x45, 0, 0, 32, 0, 0, 0, 0, 255, PROTO, 0, 0, 192, 0, 2, 11, 224, 0, 0, 18,
    ];
    d.extend_from_slice(&[0x31, 51, 150, 1, 0, 10, 0, 0, 192, 0, 2, 100]);
    let (h, payload) = split_ipv4(&d).expect("splits");
    assert_eq!(h.ttl, 255);
    assert_eq!(h.src, Ipv4Addr::new(192, 0, 2, 11));
    assert_eq!(h.dst, GROUP_V4);
    assert_eq!(payload.len(), 12);
    d[9] = 17;
    assert_eq!(split_ipv4(&d), Err(DropReason::NotVrrp));
    assert_eq!(split_ipv4(&d[..10]), Err(DropReason::TooShort(10)));
}

#[test]
fn a_v2_password_travels_nul_padded_in_the_auth_data() {
    let pass = Password::new(b"secret").expect("6 bytes");
    let mut a = advert(Version::V2, &["192.0.2.100"]);
    a.auth = Auth::Pass(pass);
    let wire = encode(&a, v4(SRC), v4(DST), Checksum::PseudoHeader);
    assert_eq!(wire[4], 1, "auth type PASS");
    assert_eq!(&wire[12..20], b"secret\0\0");
    let (back, _) = decode(&wire, v4(SRC), v4(DST), 255).expect("decodes");
    assert_eq!(back.auth, Auth::Pass(pass));
    // keepalived's 8-byte password fills the field.
    let eight = Password::new(b"12345678").expect("8 bytes");
    a.auth = Auth::Pass(eight);
    let wire = encode(&a, v4(SRC), v4(DST), Checksum::PseudoHeader);
    let (back, _) = decode(&wire, v4(SRC), v4(DST), 255).expect("decodes");
    assert_eq!(back.auth, Auth::Pass(eight));
    // Type 2 (AH) and an empty password are other kinds, never a password.
    a.auth = Auth::Other(2);
    let wire = encode(&a, v4(SRC), v4(DST), Checksum::PseudoHeader);
    let (back, _) = decode(&wire, v4(SRC), v4(DST), 255).expect("decodes");
    assert_eq!(back.auth, Auth::Other(2));
    let mut empty = wire.clone();
    empty[4] = 1;
    empty[6..8].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(&[&empty]);
    empty[6..8].copy_from_slice(&sum.to_be_bytes());
    let (back, _) = decode(&empty, v4(SRC), v4(DST), 255).expect("decodes");
    assert_eq!(back.auth, Auth::Other(1));
    // v3 has no authentication: whatever the struct says, none is sent.
    a.version = Version::V3;
    a.auth = Auth::Pass(pass);
    let wire = encode(&a, v4(SRC), v4(DST), Checksum::PseudoHeader);
    assert_eq!(wire.len(), 8 + 4);
    let (back, _) = decode(&wire, v4(SRC), v4(DST), 255).expect("decodes");
    assert_eq!(back.auth, Auth::None);
}

#[test]
fn passwords_are_1_to_8_bytes_without_nul_and_not_printed() {
    assert!(Password::new(b"").is_none());
    assert!(Password::new(b"123456789").is_none());
    assert!(Password::new(b"a\0b").is_none());
    let p = Password::new(b"hunter2").expect("7 bytes");
    assert_eq!(p.bytes(), *b"hunter2\0");
    assert!(!format!("{p:?}").contains("hunter2"));
}

#[test]
fn an_advert_lists_the_first_255_ipv4_or_77_ipv6_addresses_in_order() {
    let four: Vec<IpAddr> = (0..300u32)
        .map(|i| IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    let (l, excess) = listed(&four);
    assert_eq!((l.len(), excess), (MAX_LISTED_V4, 45));
    assert_eq!(l, &four[..255]);
    let six: Vec<IpAddr> = (0..150u128)
        .map(|i| IpAddr::from(Ipv6Addr::from(0x2001_0db8_u128 << 96 | i)))
        .collect();
    let (l, excess) = listed(&six);
    assert_eq!((l.len(), excess), (MAX_LISTED_V6, 73));
    // The IPv6 packet fits the IPv6 minimum MTU.
    let a = Advert {
        version: Version::V3,
        vrid: 1,
        priority: 100,
        interval: Duration::from_secs(1),
        addrs: l.to_vec(),
        auth: Auth::None,
    };
    let src: IpAddr = "fe80::1".parse().expect("addr");
    assert_eq!(
        40 + encode(&a, src, IpAddr::V6(GROUP_V6), Checksum::PseudoHeader).len(),
        1280
    );
    // Within the limits everything is listed.
    assert_eq!(listed(&four[..10]), (&four[..10], 0));
    assert_eq!(listed(&[]), (&[][..], 0));
    // Any order and repeats: sorted and deduplicated first, so both ends agree.
    let mut shuffled: Vec<IpAddr> = four.iter().rev().copied().collect();
    shuffled.push(four[0]);
    assert_eq!(listed_of(shuffled), (four[..255].to_vec(), 45));
}

#[test]
fn interval_field_is_clamped_to_12_bits() {
    assert_eq!(interval_cs(Duration::from_millis(1)), 1);
    assert_eq!(interval_cs(Duration::from_secs(1)), 100);
    assert_eq!(interval_cs(Duration::from_secs(100)), MAX_INTERVAL_CS);
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), ttl in any::<u8>()) {
        let _ = decode(&bytes, v4(SRC), v4(DST), ttl);
        let six: IpAddr = "fe80::1".parse().expect("addr");
        let _ = decode(&bytes, six, IpAddr::V6(GROUP_V6), ttl);
        let _ = split_ipv4(&bytes);
    }

    #[test]
    fn encode_then_decode_is_identity(
        vrid in 1u8..=255, priority in any::<u8>(), cs in 1u16..=MAX_INTERVAL_CS,
        addrs in proptest::collection::vec(any::<[u8; 4]>(), 0..20),
        message_only in any::<bool>(),
    ) {
        let a = Advert {
            version: Version::V3, vrid, priority,
            interval: Duration::from_millis(u64::from(cs) * 10),
            addrs: addrs.into_iter().map(IpAddr::from).collect(),
            auth: Auth::None,
        };
        let form = if message_only { Checksum::MessageOnly } else { Checksum::PseudoHeader };
        let wire = encode(&a, v4(SRC), v4(DST), form);
        let (back, _) = decode(&wire, v4(SRC), v4(DST), 255).expect("own encoding decodes");
        prop_assert_eq!(back, a);
    }

    #[test]
    fn any_single_bit_flip_is_caught(bit in 0usize..128) {
        let a = advert(Version::V3, &["192.0.2.100", "192.0.2.101"]);
        let mut wire = encode(&a, v4(SRC), v4(DST), Checksum::PseudoHeader);
        wire[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode(&wire, v4(SRC), v4(DST), 255).is_err());
    }
}

#[test]
fn every_drop_reason_label_is_listed_once() {
    let any: IpAddr = v4(SRC);
    let reasons = [
        DropReason::TooShort(0),
        DropReason::NotVrrp,
        DropReason::Ttl(0),
        DropReason::Version(0),
        DropReason::Type(0),
        DropReason::Checksum,
        DropReason::Vrid(0),
        DropReason::Addresses,
        DropReason::Interval(Duration::ZERO),
        DropReason::Foreign(any),
        DropReason::Auth,
        DropReason::Own,
    ];
    assert_eq!(reasons.len(), DropReason::LABELS.len());
    for r in &reasons {
        assert!(DropReason::LABELS.contains(&r.label()), "{r:?}");
    }
    let distinct: std::collections::BTreeSet<_> = DropReason::LABELS.iter().collect();
    assert_eq!(distinct.len(), DropReason::LABELS.len());
    assert_eq!(DropReason::Foreign(any).label(), "foreign_speaker");
    assert_eq!(DropReason::Auth.label(), "authentication");
}
