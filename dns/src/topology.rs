//! Client locality (`--topology FILE`), free of I/O: which zone and region a client address is
//! in, from a map of subnets that the operator knows (on premises there is no GeoIP database).
//!
//! The file is a YAML list:
//!
//! ```yaml
//! - cidr: 10.1.0.0/16          # required: an IPv4 or IPv6 block
//!   region: europe             # required
//!   zone: fr                   # optional: a subnet may be known only by its region
//! - cidr: 2001:db8:1::/48
//!   region: europe
//!   zone: fr
//! ```
//!
//! Checked when read ([`TopologyError`]): a block that does not parse, has host bits set
//! (`10.1.2.3/16` is refused, naming `10.1.0.0/16`: a typo there would silently map another
//! subnet), is listed twice, or a zone or region that is not a DNS label (they are compared,
//! in lower case, with the `zone` and `region` of records). IPv4-mapped IPv6
//! client addresses (`::ffff:10.1.2.3`) are looked up as IPv4.
//!
//! [`Topology::lookup`] takes the longest matching prefix among the blocks no longer than the
//! prefix the client revealed (its EDNS Client Subnet source prefix, or the whole address): a
//! block more specific than that cannot be known to hold the client. It costs one hash lookup
//! per distinct prefix length in the map, longest first, and allocates nothing;
//! [`Topology::scope`] one binary search per distinct prefix length. An IPv4-mapped block
//! (`::ffff:10.1.0.0/112`) is the IPv4 block it maps.

use std::collections::HashMap;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::cidr::{Cidr, canonical, mask4, mask6};

/// Why a topology map is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Not a YAML list of entries.
    #[error("the topology is not a YAML list of {{cidr, region, zone}} entries: {0}")]
    Yaml(String),
    /// An entry is wrong.
    #[error("topology entry {index} ({cidr}): {why}")]
    Entry {
        /// Its position in the list, from 1.
        index: usize,
        /// Its `cidr` as written.
        cidr: String,
        /// What is wrong.
        why: String,
    },
}

/// A locality: a region, and a zone in it when known.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    /// The region, e.g. `europe`.
    pub region: Box<str>,
    /// The zone, e.g. `fr`; `None` when the map knows only the region.
    pub zone: Option<Box<str>>,
}

/// What [`Topology::lookup`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Index of the locality ([`Topology::locality`]).
    pub class: u16,
    /// Prefix length of the block that matched (the ECS scope to answer with).
    pub prefix: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    cidr: String,
    region: String,
    #[serde(default)]
    zone: Option<String>,
}

/// The blocks of one prefix length: by network (for the lookup), and the networks sorted,
/// left-aligned in 128 bits (for the scope).
#[derive(Debug, Clone)]
struct Length {
    len: u8,
    by_net: FxHashMap<u128, u16>,
    sorted: Vec<u128>,
}

/// Blocks of one family, by prefix length, longest first.
#[derive(Debug, Clone, Default)]
struct Family {
    by_len: Vec<Length>,
}

impl Family {
    fn insert(&mut self, len: u8, key: u128, class: u16) -> bool {
        let at = match self.by_len.binary_search_by(|l| len.cmp(&l.len)) {
            Ok(i) => i,
            Err(i) => {
                self.by_len.insert(
                    i,
                    Length {
                        len,
                        by_net: FxHashMap::default(),
                        sorted: Vec::new(),
                    },
                );
                i
            }
        };
        self.by_len[at].by_net.insert(key, class).is_none()
    }

    /// Sorts the networks of every length (after the last insert), shifted left by `shift`.
    fn seal(&mut self, shift: u32) {
        for l in &mut self.by_len {
            l.sorted = l.by_net.keys().map(|k| k << shift).collect();
            l.sorted.sort_unstable();
        }
    }

    fn lookup(&self, addr: u128, revealed: u8, mask: impl Fn(u128, u8) -> u128) -> Option<Match> {
        self.by_len
            .iter()
            .filter(|l| l.len <= revealed)
            .find_map(|l| {
                l.by_net.get(&mask(addr, l.len)).map(|&class| Match {
                    class,
                    prefix: l.len,
                })
            })
    }

    /// See [`Topology::scope`]; `addr` left-aligned in 128 bits, `bits` its family's size.
    /// Per prefix length, only the two networks around `addr` in sorted order matter: the
    /// longest prefix `addr` shares with any of them is shared with a neighbour.
    fn scope(&self, addr: u128, bits: u8, matched: Option<u8>) -> u8 {
        let mut scope = matched.unwrap_or(0);
        for l in &self.by_len {
            let at = l.sorted.partition_point(|&n| n <= addr);
            let neighbours = [at.checked_sub(1), Some(at)];
            for net in neighbours
                .into_iter()
                .flatten()
                .filter_map(|i| l.sorted.get(i))
            {
                let shared = u8::try_from((net ^ addr).leading_zeros()).unwrap_or(128);
                if shared < l.len {
                    // A block that does not hold addr: the answer holds only where it does not
                    // reach, past the bits addr shares with it.
                    scope = scope.max(shared.saturating_add(1).min(bits));
                } else if Some(l.len) > matched {
                    // A block that holds addr but is more specific than what the client
                    // revealed (so it was not used): the answer is not for that block.
                    scope = scope.max(l.len);
                }
            }
        }
        scope
    }
}

/// The client topology map.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    localities: Vec<Locality>,
    v4: Family,
    v6: Family,
    entries: usize,
}

/// A zone or region: a DNS label, kept in lower case (as records keep theirs).
fn label(what: &str, s: &str) -> Result<Box<str>, String> {
    if crate::record::is_dns_label(s) {
        Ok(s.to_ascii_lowercase().into())
    } else {
        Err(format!(
            "{what} {s:?} is not a DNS label (letters, digits, '-', at most 63)"
        ))
    }
}

impl Topology {
    /// Reads and checks a map (the text of a `--topology` file).
    pub fn from_yaml(text: &str) -> Result<Self, TopologyError> {
        let entries: Vec<Entry> = if text.trim().is_empty() {
            Vec::new()
        } else {
            // A map of many subnets is bigger than the parser's default budget, which is
            // sized for config files: the budget follows the file's size instead.
            let mut budget = serde_saphyr::Budget::default();
            budget.max_events = budget.max_events.max(text.len());
            budget.max_nodes = budget.max_nodes.max(text.len());
            budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(text.len());
            budget.max_reader_input_bytes = None;
            let mut options = serde_saphyr::Options::default();
            options.budget = Some(budget);
            serde_saphyr::from_str_with_options(text, options)
                .map_err(|e| TopologyError::Yaml(e.to_string()))?
        };
        let mut classes: HashMap<Locality, u16> = HashMap::new();
        let mut t = Self::default();
        for (i, e) in entries.iter().enumerate() {
            let bad = |why: String| TopologyError::Entry {
                index: i + 1,
                cidr: e.cidr.clone(),
                why,
            };
            let cidr: Cidr = e.cidr.trim().parse().map_err(|err| bad(format!("{err}")))?;
            if cidr.has_host_bits() {
                return Err(bad(format!(
                    "host bits are set: the block is {}/{}",
                    cidr.network(),
                    cidr.prefix_len()
                )));
            }
            let locality = Locality {
                region: label("region", &e.region).map_err(bad)?,
                zone: e
                    .zone
                    .as_deref()
                    .map(|z| label("zone", z))
                    .transpose()
                    .map_err(bad)?,
            };
            let next = u16::try_from(classes.len())
                .map_err(|_| bad("more than 65,535 localities".into()))?;
            let class = *classes.entry(locality.clone()).or_insert_with(|| {
                t.localities.push(locality);
                next
            });
            let fresh = match (cidr.network(), cidr.prefix_len()) {
                (IpAddr::V4(a), len) => t.v4.insert(len, u128::from(u32::from(a)), class),
                // An IPv4-mapped block is the IPv4 block it maps: clients are looked up so.
                (IpAddr::V6(a), len) if len >= 96 && a.to_ipv4_mapped().is_some() => {
                    let v4 = a.to_ipv4_mapped().map_or(0, u32::from);
                    t.v4.insert(len - 96, u128::from(v4), class)
                }
                (IpAddr::V6(a), len) => t.v6.insert(len, u128::from(a), class),
            };
            if !fresh {
                return Err(bad("the block is listed twice".into()));
            }
            t.entries += 1;
        }
        t.v4.seal(96);
        t.v6.seal(0);
        Ok(t)
    }

    /// The locality of the longest block that holds `ip`, among the blocks no longer than
    /// `revealed` bits (the ECS source prefix; 32 or 128 for a whole address).
    pub fn lookup(&self, ip: IpAddr, revealed: u8) -> Option<Match> {
        match canonical(ip) {
            IpAddr::V4(a) => self
                .v4
                .lookup(u128::from(u32::from(a)), revealed, |x, len| {
                    // The key was stored from a u32: masking within 32 bits keeps it so.
                    u128::from(mask4(u32::try_from(x).unwrap_or(0), len))
                }),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a), revealed, mask6),
        }
    }

    /// The ECS scope of an answer that depended on the locality of the client at `ip`, whose
    /// lookup matched a block of `matched` bits (`None`: no block): the shortest prefix of
    /// `ip` over which that answer holds, so that a resolver caching it by subnet never gives
    /// it to a client the map places elsewhere. That is the matched block's length, longer
    /// when a more specific block inside it does not hold `ip` (`10.1.0.0/16` around
    /// `10.1.7.0/24`) or holds it but was longer than what the client revealed; without a
    /// match, one bit more than `ip` shares with the nearest block (0 for a map without blocks
    /// of that family).
    pub fn scope(&self, ip: IpAddr, matched: Option<u8>) -> u8 {
        match canonical(ip) {
            IpAddr::V4(a) => self.v4.scope(u128::from(u32::from(a)) << 96, 32, matched),
            IpAddr::V6(a) => self.v6.scope(u128::from(a), 128, matched),
        }
    }

    /// The locality of a class that [`Topology::lookup`] returned.
    pub fn locality(&self, class: u16) -> &Locality {
        &self.localities[usize::from(class)]
    }

    /// How many blocks the map has.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

#[cfg(test)]
mod tests;
