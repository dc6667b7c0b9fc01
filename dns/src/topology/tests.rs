use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

const MAP: &str = "
- cidr: 10.1.0.0/16
  region: europe
  zone: fr
- cidr: 10.1.7.0/24
  region: europe
  zone: de
- cidr: 10.0.0.0/8
  region: europe
- cidr: 10.3.0.0/16
  region: america
  zone: us
- cidr: 2001:db8:1::/48
  region: europe
  zone: fr
";

fn name(t: &Topology, m: Option<Match>) -> Option<(String, u8)> {
    m.map(|m| {
        let l = t.locality(m.class);
        let zone = l.zone.as_deref().unwrap_or("-");
        (format!("{zone}.{}", l.region), m.prefix)
    })
}

#[test]
fn the_longest_block_wins() {
    let t = Topology::from_yaml(MAP).expect("valid map");
    assert_eq!(t.len(), 5);
    let at = |a: &str, revealed: u8| name(&t, t.lookup(ip(a), revealed));
    assert_eq!(at("10.1.2.3", 32), Some(("fr.europe".into(), 16)));
    assert_eq!(at("10.1.7.9", 32), Some(("de.europe".into(), 24)));
    assert_eq!(at("10.9.9.9", 32), Some(("-.europe".into(), 8)));
    assert_eq!(at("10.3.0.1", 32), Some(("us.america".into(), 16)));
    assert_eq!(at("192.0.2.1", 32), None);
    assert_eq!(at("::ffff:10.1.7.9", 128), Some(("de.europe".into(), 24)));
    assert_eq!(at("2001:db8:1:2::5", 128), Some(("fr.europe".into(), 48)));
    assert_eq!(at("2001:db8:2::5", 128), None);
}

#[test]
fn blocks_longer_than_what_the_client_revealed_do_not_match() {
    let t = Topology::from_yaml(MAP).expect("valid map");
    // A client that reveals only its /20 may be anywhere in 10.1.0.0/20: not known to be in
    // 10.1.7.0/24, but known to be in 10.1.0.0/16.
    assert_eq!(
        name(&t, t.lookup(ip("10.1.0.0"), 20)),
        Some(("fr.europe".into(), 16))
    );
    assert_eq!(
        name(&t, t.lookup(ip("10.1.7.0"), 20)),
        Some(("fr.europe".into(), 16))
    );
    assert_eq!(name(&t, t.lookup(ip("10.0.0.0"), 7)), None);
    assert_eq!(name(&t, t.lookup(ip("0.0.0.0"), 0)), None);
}

#[test]
fn localities_are_kept_in_lower_case() {
    let t = Topology::from_yaml("- cidr: 10.0.0.0/8\n  region: Europe\n  zone: FR\n")
        .expect("valid map");
    assert_eq!(
        name(&t, t.lookup(ip("10.0.0.1"), 32)),
        Some(("fr.europe".into(), 8))
    );
}

#[test]
fn an_empty_file_is_an_empty_map() {
    for text in ["", "  \n", "[]"] {
        let t = Topology::from_yaml(text).expect("empty map");
        assert!(t.is_empty());
        assert_eq!(t.lookup(ip("10.0.0.1"), 32), None);
    }
}

#[test]
fn bad_maps_are_refused_with_the_entry_and_the_reason() {
    let cases = [
        (
            "- cidr: 10.1.2.3/16\n  region: europe\n",
            "host bits are set: the block is 10.1.0.0/16",
        ),
        (
            "- cidr: 10.0.0.0/33\n  region: europe\n",
            "not an IP address or CIDR",
        ),
        (
            "- cidr: eu\n  region: europe\n",
            "not an IP address or CIDR",
        ),
        (
            "- cidr: 10.0.0.0/8\n  region: euro pe\n",
            "region \"euro pe\" is not a DNS label",
        ),
        (
            "- cidr: 10.0.0.0/8\n  region: europe\n  zone: fr.paris\n",
            "zone \"fr.paris\"",
        ),
        ("- cidr: 10.0.0.0/8\n  region: ''\n", "region \"\""),
        (
            "- cidr: 10.0.0.0/8\n  region: europe\n- cidr: 10.0.0.0/8\n  region: asia\n",
            "entry 2 (10.0.0.0/8): the block is listed twice",
        ),
        ("- cidr: 10.0.0.0/8\n", "region"),
        (
            "- cidr: 10.0.0.0/8\n  region: europe\n  weight: 3\n",
            "weight",
        ),
        ("cidr: 10.0.0.0/8\n", "not a YAML list"),
    ];
    for (text, want) in cases {
        let err = Topology::from_yaml(text).expect_err(text).to_string();
        assert!(
            err.contains(want),
            "{text:?}: {err:?} does not say {want:?}"
        );
    }
}

fn entry() -> impl Strategy<Value = (u32, u8, u8)> {
    // Blocks in a small space so that they nest and overlap often: 10.x.y.0 with lengths 8..=32.
    (0u32..1 << 12, 8u8..=32, 0u8..3).prop_map(|(bits, len, class)| {
        let addr = mask4((10 << 24) | (bits << 12), len);
        (addr, len, class)
    })
}

/// The map of the generated `entries` (each block once), and its blocks.
fn map_of(entries: Vec<(u32, u8, u8)>) -> (Topology, Vec<(Cidr, u8, u8)>) {
    let mut seen = std::collections::BTreeSet::new();
    let mut text = String::new();
    let mut blocks = Vec::new();
    for (addr, len, class) in entries {
        if !seen.insert((addr, len)) {
            continue;
        }
        let net = std::net::Ipv4Addr::from(addr);
        text.push_str(&format!("- cidr: {net}/{len}\n  region: r{class}\n"));
        blocks.push((
            format!("{net}/{len}").parse::<Cidr>().expect("cidr"),
            len,
            class,
        ));
    }
    (Topology::from_yaml(&text).expect("valid map"), blocks)
}

proptest! {
    /// The lookup finds what a linear scan of the blocks finds: the longest block that holds
    /// the address among those no longer than the revealed prefix.
    #[test]
    fn lookup_is_the_longest_containing_block(
        entries in proptest::collection::vec(entry(), 0..24),
        probe in 0u32..1 << 24,
        revealed in 0u8..=32,
    ) {
        let (t, blocks) = map_of(entries);
        let client = IpAddr::V4(std::net::Ipv4Addr::from((10 << 24) | probe));
        let want = blocks
            .iter()
            .filter(|(c, len, _)| *len <= revealed && c.contains(client))
            .max_by_key(|(_, len, _)| *len)
            .map(|(_, len, class)| (format!("-.r{class}"), *len));
        prop_assert_eq!(name(&t, t.lookup(client, revealed)), want);
    }
}

/// The scope by its definition, over every block: what [`Topology::scope`] computes with one
/// binary search per prefix length.
fn scope_by_definition(blocks: &[(Cidr, u8, u8)], client: u32, matched: Option<u8>) -> u8 {
    let mut scope = matched.unwrap_or(0);
    for (c, len, _) in blocks {
        let std::net::IpAddr::V4(net) = c.network() else {
            continue;
        };
        let shared = u8::try_from((u32::from(net) ^ client).leading_zeros()).expect("≤ 32");
        if shared < *len {
            scope = scope.max(shared + 1);
        } else if Some(*len) > matched {
            scope = scope.max(*len);
        }
    }
    scope
}

proptest! {
    #[test]
    fn the_scope_is_the_shortest_prefix_no_other_block_reaches_into(
        entries in proptest::collection::vec(entry(), 0..40),
        probe in 0u32..1 << 24,
        revealed in 0u8..=32,
    ) {
        let (t, blocks) = map_of(entries);
        let client = mask4((10 << 24) | probe, revealed);
        let matched = t.lookup(IpAddr::V4(client.into()), revealed).map(|m| m.prefix);
        prop_assert_eq!(
            t.scope(IpAddr::V4(client.into()), matched),
            scope_by_definition(&blocks, client, matched)
        );
    }
}

#[test]
fn an_ipv4_mapped_block_is_the_ipv4_block_it_maps() {
    let t = Topology::from_yaml("- {cidr: '::ffff:198.51.100.0/120', region: europe, zone: de}\n")
        .expect("valid map");
    assert_eq!(
        name(&t, t.lookup(ip("198.51.100.7"), 32)),
        Some(("de.europe".into(), 24))
    );
    assert_eq!(
        name(&t, t.lookup(ip("::ffff:198.51.100.7"), 128)),
        Some(("de.europe".into(), 24))
    );
}

#[test]
fn a_map_bigger_than_the_default_parser_budget_loads() {
    let mut text = String::new();
    for i in 0..40_000u32 {
        let net = std::net::Ipv4Addr::from((10 << 24) | (i << 8));
        text.push_str(&format!("- {{cidr: {net}/24, region: r{}}}\n", i % 7));
    }
    let t = Topology::from_yaml(&text).expect("a big map");
    assert_eq!(t.len(), 40_000);
}
