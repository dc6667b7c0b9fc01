//! Address pools, free of I/O: CIDRs, ranges and single addresses, reserved entries, and
//! auto-assignment, validated ([`PoolError`]: names unique, no address in two pools); the
//! lowest free address of a family.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

use super::Family;
use crate::bgp::config::{self as bgp, BgpSettings, BgpSpec, PoolBgp, PoolBgpSpec};

/// An invalid pool definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// An address, range or CIDR that does not parse or makes no sense.
    #[error("pool {pool}: {entry:?}: {why}")]
    Entry {
        /// Pool name.
        pool: String,
        /// The entry as written.
        entry: String,
        /// What is wrong.
        why: String,
    },
    /// Anything else: names, overlaps, YAML.
    #[error("{0}")]
    Invalid(String),
}

fn to_num(ip: IpAddr) -> (Family, u128) {
    match ip {
        IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (Family::V6, u128::from(a)),
    }
}

fn from_num(family: Family, n: u128) -> IpAddr {
    match family {
        // Ranges of the V4 family hold only u32 values.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    family: Family,
    start: u128,
    end: u128,
}

impl Range {
    fn contains(&self, ip: IpAddr) -> bool {
        let (f, n) = to_num(ip);
        f == self.family && self.start <= n && n <= self.end
    }

    /// Parses `a.b.c.d`, `a.b.c.d-e.f.g.h` or a CIDR. With `hosts_only`, a CIDR leaves out its
    /// network address (IPv6: the subnet-router anycast address) and, for IPv4, its broadcast
    /// address, unless it is a /31, /32, /127 or /128.
    fn parse(s: &str, hosts_only: bool) -> Result<Self, String> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let a: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| "not an address range".to_owned())?;
            let b: IpAddr = b
                .trim()
                .parse()
                .map_err(|_| "not an address range".to_owned())?;
            let ((fa, start), (fb, end)) = (to_num(a), to_num(b));
            if fa != fb {
                return Err("the range mixes IPv4 and IPv6".into());
            }
            if start > end {
                return Err("the range ends before it starts".into());
            }
            return Ok(Self {
                family: fa,
                start,
                end,
            });
        }
        if s.contains('/') {
            let net: ipnet::IpNet = s.parse().map_err(|_| "not a CIDR".to_owned())?;
            if net.trunc() != net {
                return Err(format!("host bits are set; the network is {}", net.trunc()));
            }
            let (family, start) = to_num(net.network());
            let (_, end) = to_num(net.broadcast());
            let (start, end) = match (hosts_only, family, net.prefix_len()) {
                (true, Family::V4, p) if p < 31 => (start + 1, end - 1),
                (true, Family::V6, p) if p < 127 => (start + 1, end),
                _ => (start, end),
            };
            return Ok(Self { family, start, end });
        }
        let ip: IpAddr = s
            .parse()
            .map_err(|_| "not an address, range (a-b) or CIDR".to_owned())?;
        let (family, n) = to_num(ip);
        Ok(Self {
            family,
            start: n,
            end: n,
        })
    }
}

fn yes() -> bool {
    true
}

/// One pool as the config file or the pool ConfigMap writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Name, for the `fedplane.io/address-pool` annotation.
    pub name: String,
    /// CIDRs (`10.4.0.0/24`, `fd00:4::/120`), ranges (`10.4.1.10-10.4.1.20`) or addresses.
    pub addresses: Vec<String>,
    /// Addresses never handed out (e.g. the gateway): addresses, ranges or CIDRs.
    #[serde(default)]
    pub reserved: Vec<String>,
    /// Whether Services that name no pool may get addresses from it (default true).
    #[serde(default = "yes")]
    pub auto_assign: bool,
    /// How its addresses reach the network: `l2` (VRRP, the default) or `bgp`.
    #[serde(default)]
    pub mode: Mode,
    /// BGP settings of a `mode: bgp` pool.
    #[serde(default)]
    pub bgp: Option<PoolBgpSpec>,
}

/// How a pool's addresses reach the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Held by one node at a time with VRRP, announced with gratuitous ARP / NA.
    #[default]
    L2,
    /// Announced to routers over BGP by the nodes that may serve it.
    Bgp,
}

/// The document of the config file's `pools:` key and of the pool ConfigMap's `config.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PoolsDoc {
    /// The pools, in the order auto-assignment tries them.
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
    /// The BGP speaker and its peers (needed by `mode: bgp` pools).
    #[serde(default)]
    pub bgp: Option<BgpSpec>,
}

/// A validated pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Name.
    pub name: String,
    ranges: Vec<Range>,
    /// The ranges as written (CIDRs with their network and broadcast addresses).
    written: Vec<Range>,
    reserved: Vec<Range>,
    /// Used for Services that name no pool.
    pub auto_assign: bool,
    /// How its addresses reach the network.
    pub mode: Mode,
    /// Its BGP settings (`mode: bgp`).
    pub bgp: Option<PoolBgp>,
}

impl Pool {
    /// Whether `ip` lies in one of the pool's ranges (reserved addresses included).
    pub(super) fn covers(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    pub(super) fn reserves(&self, ip: IpAddr) -> bool {
        self.reserved.iter().any(|r| r.contains(ip))
    }

    /// The pool's addresses as written, as CIDRs (ranges split into the fewest prefixes).
    pub fn cidrs(&self) -> Vec<ipnet::IpNet> {
        let mut out = Vec::new();
        for r in &self.written {
            let bits: u32 = match r.family {
                Family::V4 => 32,
                Family::V6 => 128,
            };
            let mut n = r.start;
            loop {
                // The largest block that starts at n and stays within the range.
                let mut size = if n == 0 {
                    bits
                } else {
                    n.trailing_zeros().min(bits)
                };
                while size > 0
                    && (size >= 128 || n.checked_add((1u128 << size) - 1).is_none_or(|e| e > r.end))
                {
                    size -= 1;
                }
                let len = u8::try_from(bits - size).unwrap_or(0);
                if let Ok(net) = ipnet::IpNet::new(from_num(r.family, n), len) {
                    out.push(net);
                }
                let step = if size >= 128 { break } else { 1u128 << size };
                match n.checked_add(step) {
                    Some(next) if next <= r.end => n = next,
                    _ => break,
                }
            }
        }
        out
    }

    /// Whether the pool has addresses of `family`.
    pub fn has(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| r.family == family)
    }

    /// The lowest address of `family` that is neither reserved nor `taken`.
    pub(super) fn lowest_free(
        &self,
        family: Family,
        taken: &dyn Fn(IpAddr) -> bool,
    ) -> Option<IpAddr> {
        for r in self.ranges.iter().filter(|r| r.family == family) {
            let mut n = r.start;
            loop {
                // Skip a whole reserved range at once (a reserved /64 must not be walked).
                if let Some(res) = self
                    .reserved
                    .iter()
                    .find(|res| res.family == family && res.start <= n && n <= res.end)
                {
                    match res.end.checked_add(1) {
                        Some(next) if next <= r.end => n = next,
                        _ => break,
                    }
                    continue;
                }
                let ip = from_num(family, n);
                if !taken(ip) {
                    return Some(ip);
                }
                if n == r.end {
                    break;
                }
                n += 1;
            }
        }
        None
    }
}

/// Every pool, validated: names unique, no address in two pools; with the BGP settings of
/// the same document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pools(Vec<Pool>, Option<BgpSettings>);

impl Pools {
    /// Validates `specs` (no BGP section: a `mode: bgp` pool is refused).
    pub fn new(specs: &[PoolSpec]) -> Result<Self, PoolError> {
        Self::with_bgp(specs, None)
    }

    /// Validates `specs` and the document's `bgp:` section together.
    pub fn with_bgp(specs: &[PoolSpec], bgp_spec: Option<&BgpSpec>) -> Result<Self, PoolError> {
        if bgp_spec.is_some_and(|b| !b.announce.is_empty()) {
            return Err(PoolError::Invalid(
                "bgp.announce: only without --kubernetes (here the Services' addresses are announced)"
                    .into(),
            ));
        }
        let bgp_settings = bgp_spec
            .map(bgp::settings)
            .transpose()
            .map_err(PoolError::Invalid)?;
        let mut names = BTreeSet::new();
        let mut pools = Vec::new();
        for s in specs {
            if s.name.is_empty() {
                return Err(PoolError::Invalid("a pool has no name".into()));
            }
            if !names.insert(s.name.as_str()) {
                return Err(PoolError::Invalid(format!("two pools named {}", s.name)));
            }
            if s.addresses.is_empty() {
                return Err(PoolError::Invalid(format!("pool {}: no addresses", s.name)));
            }
            let parse = |list: &[String], hosts_only| {
                list.iter()
                    .map(|e| {
                        Range::parse(e, hosts_only).map_err(|why| PoolError::Entry {
                            pool: s.name.clone(),
                            entry: e.clone(),
                            why,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let mut ranges = parse(&s.addresses, true)?;
            ranges.sort();
            let mut written = parse(&s.addresses, false)?;
            written.sort();
            let pool_bgp = match (s.mode, &s.bgp) {
                (Mode::L2, Some(_)) => {
                    return Err(PoolError::Invalid(format!(
                        "pools[{}].bgp: only a pool with mode: bgp has BGP settings",
                        s.name
                    )));
                }
                (Mode::L2, None) => None,
                (Mode::Bgp, _) if bgp_settings.is_none() => {
                    return Err(PoolError::Invalid(format!(
                        "pools[{}].mode: bgp needs the document's bgp: section (asn, peers)",
                        s.name
                    )));
                }
                (Mode::Bgp, spec) => {
                    let b =
                        bgp::pool_bgp(&s.name, spec.as_ref().unwrap_or(&PoolBgpSpec::default()))
                            .map_err(PoolError::Invalid)?;
                    aggregates_stay_inside(&s.name, &written, &b)?;
                    Some(b)
                }
            };
            pools.push(Pool {
                name: s.name.clone(),
                ranges,
                written,
                reserved: parse(&s.reserved, false)?,
                auto_assign: s.auto_assign,
                mode: s.mode,
                bgp: pool_bgp,
            });
        }
        let mut all: Vec<(&Range, &str)> = pools
            .iter()
            .flat_map(|p| p.ranges.iter().map(|r| (r, p.name.as_str())))
            .collect();
        all.sort();
        for w in all.windows(2) {
            let ((a, pa), (b, pb)) = (w[0], w[1]);
            if a.family == b.family && b.start <= a.end {
                let first = from_num(b.family, b.start);
                return Err(PoolError::Invalid(if pa == pb {
                    format!("pool {pa}: {first} is listed twice")
                } else {
                    format!("{first} is in pools {pa} and {pb}")
                }));
            }
        }
        Ok(Self(pools, bgp_settings))
    }

    /// Parses and validates a [`PoolsDoc`] in YAML.
    pub fn from_yaml(text: &str) -> Result<Self, PoolError> {
        let doc: PoolsDoc =
            serde_saphyr::from_str(text).map_err(|e| PoolError::Invalid(e.to_string()))?;
        Self::with_bgp(&doc.pools, doc.bgp.as_ref())
    }

    /// The pools in order.
    pub fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.0.iter()
    }

    /// The document's BGP settings, if it has a `bgp:` section.
    pub fn bgp(&self) -> Option<&BgpSettings> {
        self.1.as_ref()
    }

    /// The pool named `name`.
    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.0.iter().find(|p| p.name == name)
    }

    /// The pool whose ranges hold `ip`.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.0.iter().find(|p| p.covers(ip))
    }
}

/// Refuses aggregation lengths whose prefix of a pool address would cover addresses outside
/// the pool (`ranges` as written, network and broadcast addresses included).
fn aggregates_stay_inside(pool: &str, ranges: &[Range], b: &PoolBgp) -> Result<(), PoolError> {
    for r in ranges {
        let (len, bits, field) = match r.family {
            Family::V4 => (b.aggregation_v4, 32u32, "aggregation_length"),
            Family::V6 => (b.aggregation_v6, 128u32, "aggregation_length_v6"),
        };
        let host_bits = bits - u32::from(len);
        let mask: u128 = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let (first, last) = (r.start & !mask, r.end | mask);
        if first < r.start || last > r.end {
            return Err(PoolError::Invalid(format!(
                "pools[{pool}].bgp.{field}: {len} makes routes that cover {}-{}, beyond the pool's {}-{}",
                from_num(r.family, first),
                from_num(r.family, last),
                from_num(r.family, r.start),
                from_num(r.family, r.end),
            )));
        }
    }
    Ok(())
}
