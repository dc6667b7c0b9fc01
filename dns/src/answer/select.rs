//! Which of a name's addresses a client gets, free of I/O: by the client's locality, then by
//! weight. Both the general path and the fast path's compiled answers follow these rules.
//!
//! Locality: when the name's address records of the asked family carry a `zone` or `region`
//! and the client's locality is known (from the topology map), the answer is the addresses in
//! the client's zone; if there are none, those in its region; if none, all of them. Records
//! without a locality count only in the last step. A name whose records carry no locality
//! answers the same to everyone (and an ECS answer then says scope 0).
//!
//! Weight: when any of those records carries a `weight` and no `port`, one address is
//! answered, chosen with a probability proportional to its weight (a record without one weighs
//! the SkyDNS default, 100), among the addresses the locality step left. A record with a port
//! is an SRV record's: its weight is the SRV weight (RFC 2782) and leaves its A and AAAA
//! answers alone, as CoreDNS answers them. The choice is a function of a per-query
//! number the caller passes (a counter), mixed by SplitMix64, so the shares follow the weights
//! within a fraction of a percent over any few thousand queries, and both paths choose alike.

use crate::index::Entry;
use crate::record::Host;
use crate::topology::Locality;

/// How an answer depended on the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depends {
    /// Not at all: the records carry no locality (or the client's is unknown).
    No,
    /// On the client's locality: the records carry some.
    OnLocality,
}

fn of_family(e: &Entry, v4: bool) -> bool {
    matches!(
        (&e.record.host, v4),
        (Host::V4(_), true) | (Host::V6(_), false)
    )
}

/// The address entries of the family (`v4` or not) that the client with `client`'s locality
/// gets, and whether that depended on its locality. Entries of other kinds are dropped.
pub fn by_locality<'e>(
    entries: &[&'e Entry],
    v4: bool,
    client: Option<&Locality>,
) -> (Vec<&'e Entry>, Depends) {
    let addrs: Vec<&Entry> = entries
        .iter()
        .copied()
        .filter(|e| of_family(e, v4))
        .collect();
    let located = addrs
        .iter()
        .any(|e| !e.record.zone.is_empty() || !e.record.region.is_empty());
    if !located {
        return (addrs, Depends::No);
    }
    let Some(client) = client else {
        return (addrs, Depends::OnLocality);
    };
    let in_region = |e: &&Entry| *e.record.region == *client.region;
    if let Some(zone) = &client.zone {
        // A record with a zone and no region is in that zone of any region.
        let same: Vec<&Entry> = addrs
            .iter()
            .copied()
            .filter(|e| *e.record.zone == **zone && (e.record.region.is_empty() || in_region(e)))
            .collect();
        if !same.is_empty() {
            return (same, Depends::OnLocality);
        }
    }
    let same: Vec<&Entry> = addrs.iter().copied().filter(in_region).collect();
    if same.is_empty() {
        (addrs, Depends::OnLocality)
    } else {
        (same, Depends::OnLocality)
    }
}

/// Whether any address record of `entries` carries a weight and no port: then one address is
/// answered.
pub fn weighted(entries: &[&Entry]) -> bool {
    entries.iter().any(|e| {
        e.record.weight != 0
            && e.record.port == Some(0)
            && matches!(e.record.host, Host::V4(_) | Host::V6(_))
    })
}

/// SplitMix64: a counter in, a well-mixed number out.
pub fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The index of the entry chosen by weight for the per-query number `n`; `None` for none.
pub fn pick(entries: &[&Entry], n: u64) -> Option<usize> {
    let total: u64 = entries
        .iter()
        .map(|e| u64::from(e.record.weight_or_default()))
        .sum();
    if total == 0 {
        return None;
    }
    let mut at = mix(n) % total;
    for (i, e) in entries.iter().enumerate() {
        let w = u64::from(e.record.weight_or_default());
        if at < w {
            return Some(i);
        }
        at -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::Record;

    fn entry(json: &str) -> Entry {
        Entry {
            key: Arc::from("/skydns/x"),
            record: Record::parse(json.as_bytes()).expect("record"),
            lease: 0,
        }
    }

    fn hosts(v: &[&Entry]) -> Vec<String> {
        v.iter()
            .map(|e| match &e.record.host {
                Host::V4(a) => a.to_string(),
                Host::V6(a) => a.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn loc(zone: Option<&str>, region: &str) -> Locality {
        Locality {
            region: region.into(),
            zone: zone.map(Into::into),
        }
    }

    #[test]
    fn the_zone_then_the_region_then_everything() {
        let es = [
            entry(r#"{"host":"10.0.1.1","zone":"fr","region":"europe"}"#),
            entry(r#"{"host":"10.0.2.1","zone":"de","region":"europe"}"#),
            entry(r#"{"host":"10.0.3.1","zone":"us","region":"america"}"#),
            entry(r#"{"host":"10.0.4.1"}"#),
            entry(r#"{"host":"2001:db8::1","zone":"fr","region":"europe"}"#),
            entry(r#"{"host":"alias.example.com"}"#),
        ];
        let refs: Vec<&Entry> = es.iter().collect();
        let pick_for = |c: Option<Locality>| {
            let (v, d) = by_locality(&refs, true, c.as_ref());
            (hosts(&v), d)
        };
        assert_eq!(
            pick_for(Some(loc(Some("fr"), "europe"))),
            (vec!["10.0.1.1".to_owned()], Depends::OnLocality)
        );
        assert_eq!(
            pick_for(Some(loc(Some("it"), "europe"))).0,
            vec!["10.0.1.1", "10.0.2.1"]
        );
        assert_eq!(
            pick_for(Some(loc(None, "europe"))).0,
            vec!["10.0.1.1", "10.0.2.1"]
        );
        assert_eq!(
            pick_for(Some(loc(Some("cn"), "asia"))),
            (
                vec![
                    "10.0.1.1".into(),
                    "10.0.2.1".into(),
                    "10.0.3.1".into(),
                    "10.0.4.1".into()
                ],
                Depends::OnLocality
            )
        );
        assert_eq!(pick_for(None).0.len(), 4);
        // A zone of the same name in another region is another zone.
        assert_eq!(
            pick_for(Some(loc(Some("fr"), "america"))).0,
            vec!["10.0.3.1"]
        );
        let (v6, _) = by_locality(&refs, false, Some(&loc(Some("fr"), "europe")));
        assert_eq!(hosts(&v6), vec!["2001:db8::1"]);
    }

    #[test]
    fn a_record_with_a_zone_and_no_region_is_in_that_zone_of_any_region() {
        let es = [
            entry(r#"{"host":"10.0.1.1","zone":"fr"}"#),
            entry(r#"{"host":"10.0.3.1","zone":"us"}"#),
        ];
        let refs: Vec<&Entry> = es.iter().collect();
        let (v, _) = by_locality(&refs, true, Some(&loc(Some("fr"), "europe")));
        assert_eq!(hosts(&v), vec!["10.0.1.1"]);
    }

    #[test]
    fn records_without_locality_answer_everyone_alike() {
        let es = [
            entry(r#"{"host":"10.0.1.1"}"#),
            entry(r#"{"host":"10.0.2.1"}"#),
        ];
        let refs: Vec<&Entry> = es.iter().collect();
        let (v, d) = by_locality(&refs, true, Some(&loc(Some("fr"), "europe")));
        assert_eq!((v.len(), d), (2, Depends::No));
    }

    #[test]
    fn shares_follow_the_weights_within_a_percent_over_ten_thousand_queries() {
        let es = [
            entry(r#"{"host":"10.0.1.1","weight":3}"#),
            entry(r#"{"host":"10.0.2.1","weight":1}"#),
            entry(r#"{"host":"10.0.3.1","weight":1}"#),
        ];
        let refs: Vec<&Entry> = es.iter().collect();
        assert!(weighted(&refs));
        for start in [0u64, 12_345, u64::MAX - 20_000] {
            let mut counts = [0u32; 3];
            for n in start..start + 10_000 {
                counts[pick(&refs, n).expect("a choice")] += 1;
            }
            for (count, want) in counts.iter().zip([0.6, 0.2, 0.2]) {
                let share = f64::from(*count) / 10_000.0;
                assert!((share - want).abs() < 0.01, "{counts:?} from {start}");
            }
        }
        let plain = [entry(r#"{"host":"10.0.1.1"}"#)];
        let refs: Vec<&Entry> = plain.iter().collect();
        assert!(!weighted(&refs));
        let srv = [entry(r#"{"host":"10.0.1.1","port":80,"weight":5}"#)];
        let refs: Vec<&Entry> = srv.iter().collect();
        assert!(!weighted(&refs), "an SRV weight");
        assert_eq!(pick(&[], 7), None);
    }

    #[test]
    fn a_record_without_a_weight_weighs_the_default() {
        let es = [
            entry(r#"{"host":"10.0.1.1","weight":300}"#),
            entry(r#"{"host":"10.0.2.1"}"#),
        ];
        let refs: Vec<&Entry> = es.iter().collect();
        let first = (0..10_000u64)
            .filter(|&n| pick(&refs, n) == Some(0))
            .count();
        assert!((7_300..=7_700).contains(&first), "{first}");
    }
}
