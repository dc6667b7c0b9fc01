//! Address assignment (IPAM) for LoadBalancer Services, free of I/O.
//!
//! The state is the Services themselves: the addresses in their `status.loadBalancer.ingress`.
//! [`assign`] takes every Service, the pools, the legacy kube-keepalived-vip map and the
//! [`Quarantine`] of recently released addresses, and returns the addresses each of our Services
//! should have plus the [`Notice`]s that explain what was refused. Run on its own output it
//! returns that output again, so a restart or a new leader moves nothing.
//!
//! Rules, in order (Services by creation time, then namespace/name):
//! 1. Keep: a Service keeps the addresses it has, one per family it still wants, unless it now
//!    asks for another address of that family or names another pool, or an older Service has
//!    the same address (a conflict: the younger one loses it, with a notice).
//! 2. Legacy: for a Service that requests nothing, a family still without an address takes the
//!    address the legacy ConfigMap gives this Service, when free (legacy addresses need not lie
//!    in a pool).
//! 3. Requested: a Service that asks for addresses gets only those, each only if it lies in a
//!    pool (the Service's pool, if it names one), is not reserved, not in use, not another
//!    Service's legacy address, and not in quarantine for another Service; otherwise a notice
//!    and no address for that family.
//! 4. Otherwise the lowest free address of each family: in the pool the Service names, or in
//!    the first auto-assign pool that has one.
//!
//! A released address is in quarantine for the period: only the Service that released it may
//! take it again before that.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use serde::Deserialize;

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

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
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
}

/// The document of the config file's `pools:` key and of the pool ConfigMap's `config.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PoolsDoc {
    /// The pools, in the order auto-assignment tries them.
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
}

/// A validated pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Name.
    pub name: String,
    ranges: Vec<Range>,
    reserved: Vec<Range>,
    /// Used for Services that name no pool.
    pub auto_assign: bool,
}

impl Pool {
    /// Whether `ip` lies in one of the pool's ranges (reserved addresses included).
    fn covers(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    fn reserves(&self, ip: IpAddr) -> bool {
        self.reserved.iter().any(|r| r.contains(ip))
    }

    /// Whether the pool has addresses of `family`.
    pub fn has(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| r.family == family)
    }

    /// The lowest address of `family` that is neither reserved nor `taken`.
    fn lowest_free(&self, family: Family, taken: &dyn Fn(IpAddr) -> bool) -> Option<IpAddr> {
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

/// Every pool, validated: names unique, no address in two pools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pools(Vec<Pool>);

impl Pools {
    /// Validates `specs`.
    pub fn new(specs: &[PoolSpec]) -> Result<Self, PoolError> {
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
            pools.push(Pool {
                name: s.name.clone(),
                ranges,
                reserved: parse(&s.reserved, false)?,
                auto_assign: s.auto_assign,
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
        Ok(Self(pools))
    }

    /// Parses and validates a [`PoolsDoc`] in YAML.
    pub fn from_yaml(text: &str) -> Result<Self, PoolError> {
        let doc: PoolsDoc =
            serde_saphyr::from_str(text).map_err(|e| PoolError::Invalid(e.to_string()))?;
        Self::new(&doc.pools)
    }

    /// The pools in order.
    pub fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.0.iter()
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

/// What kind of Service, for assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `type: LoadBalancer` with our `loadBalancerClass` or none: we assign its addresses.
    Ours,
    /// A LoadBalancer of another implementation: its addresses are in use, never touched.
    Foreign,
    /// Not a LoadBalancer (any more): it should have no ingress addresses.
    NotLoadBalancer,
}

/// One Service, as assignment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    /// `namespace/name`.
    pub key: String,
    /// Sorts older Services first: the creation timestamp (RFC 3339, UTC).
    pub created: String,
    /// Ours, foreign or not a LoadBalancer.
    pub kind: Kind,
    /// The families it wants an address of, in order (one for single-stack, two for dual).
    pub families: Vec<Family>,
    /// The addresses it asks for (annotation, or the deprecated `spec.loadBalancerIP`).
    pub requested: Vec<IpAddr>,
    /// Why its request could not be read; such a Service gets no new address.
    pub bad_request: Option<String>,
    /// The pool it names.
    pub pool: Option<String>,
    /// The addresses in its `status.loadBalancer.ingress`.
    pub current: Vec<IpAddr>,
}

/// Why a Service did not get what it wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// An older Service has the same address; this one lost it.
    AddressConflict,
    /// A requested address cannot be given.
    AddressRefused,
    /// The request annotation does not parse.
    InvalidRequest,
    /// The named pool does not exist.
    NoSuchPool,
    /// No free address of a family.
    PoolExhausted,
}

impl Reason {
    /// The Event reason.
    pub fn name(self) -> &'static str {
        match self {
            Self::AddressConflict => "AddressConflict",
            Self::AddressRefused => "AddressRefused",
            Self::InvalidRequest => "InvalidAddressRequest",
            Self::NoSuchPool => "NoSuchPool",
            Self::PoolExhausted => "PoolExhausted",
        }
    }
}

/// Something to tell a Service's owner (a Warning Event).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Notice {
    /// `namespace/name`.
    pub key: String,
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
}

/// The outcome of [`assign`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The ingress addresses of each of our Services (in the order of its families), and an
    /// empty list for each Service that is no LoadBalancer but still has addresses.
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
    /// What was refused and why.
    pub notices: Vec<Notice>,
}

/// Recently released addresses, which only their last owner may take again until the period
/// is over. Fed with the addresses in use each time the Services change.
#[derive(Debug, Clone)]
pub struct Quarantine {
    period: Duration,
    /// Address → (released at, by whom).
    released: BTreeMap<IpAddr, (Instant, String)>,
    /// Address → owner, at the last [`Quarantine::observe`]; `None` before the first.
    last: Option<BTreeMap<IpAddr, String>>,
}

impl Quarantine {
    /// An empty quarantine with this period.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            released: BTreeMap::new(),
            last: None,
        }
    }

    /// Records the addresses in use now (address → `namespace/name`): each address in use at
    /// the previous call and not now was released now. The first call releases nothing.
    pub fn observe(&mut self, in_use: &BTreeMap<IpAddr, String>, now: Instant) {
        self.expire(now);
        if let Some(last) = &self.last {
            for (ip, owner) in last {
                if !in_use.contains_key(ip) {
                    self.released.insert(*ip, (now, owner.clone()));
                }
            }
        }
        self.released.retain(|ip, _| !in_use.contains_key(ip));
        self.last = Some(in_use.clone());
    }

    fn expire(&mut self, now: Instant) {
        let period = self.period;
        self.released
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < period);
    }

    /// Who released `ip` and how long until it is free, if `key` may not take it at `now`.
    pub fn blocks(&self, ip: IpAddr, key: &str, now: Instant) -> Option<(&str, Duration)> {
        let (at, owner) = self.released.get(&ip)?;
        let left = self
            .period
            .checked_sub(now.saturating_duration_since(*at))?;
        (owner != key && !left.is_zero()).then_some((owner.as_str(), left))
    }

    /// When the next address leaves quarantine.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.released
            .values()
            .map(|(at, _)| *at + self.period)
            .min()
    }

    /// Addresses in quarantine (for metrics).
    pub fn len(&self) -> usize {
        self.released.len()
    }

    /// Whether no address is in quarantine.
    pub fn is_empty(&self) -> bool {
        self.released.is_empty()
    }
}

/// The addresses in use: every address in any Service's status, with its first owner.
pub fn in_use(svcs: &[Svc]) -> BTreeMap<IpAddr, String> {
    let mut m = BTreeMap::new();
    for s in oldest_first(svcs) {
        for ip in &s.current {
            m.entry(*ip).or_insert_with(|| s.key.clone());
        }
    }
    m
}

fn oldest_first(svcs: &[Svc]) -> Vec<&Svc> {
    let mut v: Vec<&Svc> = svcs.iter().collect();
    v.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
    v
}

/// Assigns addresses; see the [module documentation](self) for the rules.
pub fn assign(
    pools: &Pools,
    svcs: &[Svc],
    legacy: &BTreeMap<IpAddr, String>,
    quarantine: &Quarantine,
    now: Instant,
) -> Plan {
    let all = oldest_first(svcs);
    let ours: Vec<&Svc> = all
        .iter()
        .copied()
        .filter(|s| s.kind == Kind::Ours)
        .collect();
    let mut plan = Plan::default();
    let mut notice = |key: &str, reason, message: String| {
        plan.notices.push(Notice {
            key: key.to_owned(),
            reason,
            message,
        });
    };
    // Address → owner.
    let mut taken: BTreeMap<IpAddr, String> = BTreeMap::new();
    let reserve = |kind: Kind, taken: &mut BTreeMap<IpAddr, String>| {
        for s in all.iter().filter(|s| s.kind == kind) {
            for ip in &s.current {
                taken.entry(*ip).or_insert_with(|| s.key.clone());
            }
        }
    };
    // Foreign addresses are never ours to give.
    reserve(Kind::Foreign, &mut taken);
    let mut got: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();

    // 1. Keep.
    for s in &ours {
        let keep = got.entry(s.key.as_str()).or_default();
        for &ip in &s.current {
            let fam = Family::of(ip);
            let asked_other = s
                .requested
                .iter()
                .any(|r| Family::of(*r) == fam && *r != ip);
            let other_pool = s
                .pool
                .as_deref()
                .and_then(|p| pools.get(p))
                .is_some_and(|p| !p.covers(ip));
            if !s.families.contains(&fam)
                || keep.iter().any(|k| Family::of(*k) == fam)
                || asked_other
                || other_pool
            {
                continue;
            }
            if let Some(owner) = taken.get(&ip) {
                notice(
                    &s.key,
                    Reason::AddressConflict,
                    format!("{ip} is also assigned to {owner}, which is older; taking it away"),
                );
                continue;
            }
            taken.insert(ip, s.key.clone());
            keep.push(ip);
        }
    }
    // Those of Services that stopped being LoadBalancers are cleared by this plan (and
    // quarantined once that is seen), but not given to anyone else before.
    reserve(Kind::NotLoadBalancer, &mut taken);
    // 2. Legacy.
    for s in &ours {
        let mine = got.entry(s.key.as_str()).or_default();
        for (ip, _) in legacy.iter().filter(|(_, owner)| **owner == s.key) {
            let fam = Family::of(*ip);
            let wanted = s.families.contains(&fam)
                && !mine.iter().any(|k| Family::of(*k) == fam)
                && s.requested.is_empty()
                && s.bad_request.is_none();
            if wanted && !taken.contains_key(ip) {
                taken.insert(*ip, s.key.clone());
                mine.push(*ip);
            }
        }
    }
    let legacy_of = |ip: IpAddr, key: &str| legacy.get(&ip).filter(|owner| *owner != key);
    // 3. Requested.
    for s in &ours {
        if let Some(why) = &s.bad_request {
            notice(&s.key, Reason::InvalidRequest, why.clone());
            continue;
        }
        for &ip in &s.requested {
            let fam = Family::of(ip);
            let mine = got.entry(s.key.as_str()).or_default();
            if mine.contains(&ip) {
                continue;
            }
            let refuse = if !s.families.contains(&fam) {
                Some(format!("{ip} is {fam}, which the Service does not use"))
            } else if s
                .requested
                .iter()
                .filter(|r| Family::of(**r) == fam)
                .count()
                > 1
            {
                Some(format!("more than one {fam} address requested"))
            } else if let Some(owner) = taken.get(&ip) {
                Some(format!("{ip} is in use by {owner}"))
            } else if let Some(owner) = legacy_of(ip, &s.key) {
                Some(format!(
                    "{ip} is kept for {owner} by the legacy keepalived-vip ConfigMap"
                ))
            } else if let Some((owner, _)) = quarantine.blocks(ip, &s.key, now) {
                // No countdown in the message: each notice is published once.
                Some(format!(
                    "{ip} was released by {owner} and is still in quarantine"
                ))
            } else {
                let legacy_mine = legacy.get(&ip).is_some_and(|o| *o == s.key);
                match (pools.pool_of(ip), s.pool.as_deref()) {
                    _ if legacy_mine => None,
                    (None, _) => Some(format!("{ip} is in no address pool")),
                    (Some(p), Some(want)) if p.name != want => {
                        Some(format!("{ip} is in pool {}, not in pool {want}", p.name))
                    }
                    (Some(p), _) if p.reserves(ip) => {
                        Some(format!("{ip} is reserved in pool {}", p.name))
                    }
                    (Some(_), _) => None,
                }
            };
            match refuse {
                Some(why) => notice(&s.key, Reason::AddressRefused, why),
                None => {
                    taken.insert(ip, s.key.clone());
                    mine.push(ip);
                }
            }
        }
        // A Service that asks for addresses gets only those it asks for.
        if !s.requested.is_empty() {
            let mine = got.entry(s.key.as_str()).or_default();
            for fam in &s.families {
                let covered = mine
                    .iter()
                    .chain(&s.requested)
                    .any(|ip| Family::of(*ip) == *fam);
                if !covered {
                    let why = format!("addresses are requested, but no {fam} address");
                    notice(&s.key, Reason::AddressRefused, why);
                }
            }
        }
    }
    // 4. Lowest free.
    for s in &ours {
        if s.bad_request.is_some() || !s.requested.is_empty() {
            continue;
        }
        for &fam in &s.families {
            let mine = got.entry(s.key.as_str()).or_default();
            if mine.iter().any(|k| Family::of(*k) == fam) {
                continue;
            }
            let candidates: Vec<&Pool> = match s.pool.as_deref() {
                Some(name) => match pools.get(name) {
                    Some(p) => vec![p],
                    None => {
                        notice(&s.key, Reason::NoSuchPool, format!("no pool named {name}"));
                        break;
                    }
                },
                None => pools.iter().filter(|p| p.auto_assign).collect(),
            };
            let blocked = |ip: IpAddr| {
                taken.contains_key(&ip)
                    || legacy_of(ip, &s.key).is_some()
                    || quarantine.blocks(ip, &s.key, now).is_some()
            };
            let found = candidates.iter().find_map(|p| p.lowest_free(fam, &blocked));
            match found {
                Some(ip) => {
                    taken.insert(ip, s.key.clone());
                    mine.push(ip);
                }
                None => {
                    let with: Vec<&str> = candidates
                        .iter()
                        .filter(|p| p.has(fam))
                        .map(|p| p.name.as_str())
                        .collect();
                    let why = if with.is_empty() {
                        format!("no pool to use has {fam} addresses")
                    } else {
                        format!("no free {fam} address in pool {}", with.join(", "))
                    };
                    notice(&s.key, Reason::PoolExhausted, why);
                }
            }
        }
    }
    for s in &ours {
        let mut ips = got.remove(s.key.as_str()).unwrap_or_default();
        ips.sort_by_key(|ip| s.families.iter().position(|f| *f == Family::of(*ip)));
        plan.addresses.insert(s.key.clone(), ips);
    }
    for s in svcs.iter().filter(|s| s.kind == Kind::NotLoadBalancer) {
        if !s.current.is_empty() {
            plan.addresses.insert(s.key.clone(), Vec::new());
        }
    }
    plan.notices.sort();
    plan.notices.dedup();
    plan
}

/// Which of the groups `vrids` (those of the address's family) announces `ip`: the one with
/// the highest hash (FNV-1a, then MurmurHash3's finalizer) of (VRID, address). This is rendezvous hashing: every node picks the
/// same group whatever the order of its list, and adding a group moves only the addresses the
/// new group wins.
pub fn pick_group(ip: IpAddr, vrids: &[u8]) -> Option<u8> {
    let octets = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let hash = |vrid: u8| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in std::iter::once(vrid).chain(octets.iter().copied()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // FNV-1a leaves the high bits poorly mixed: finish with MurmurHash3's fmix64.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    };
    vrids.iter().copied().max_by_key(|v| (hash(*v), *v))
}

#[cfg(test)]
mod tests;
