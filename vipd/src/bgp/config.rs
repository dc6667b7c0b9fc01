//! The BGP settings, free of I/O: the top-level `bgp:` section of the pool document (the
//! config file's `pools:`/`bgp:` keys, or the pool ConfigMap's `config.yaml`) and the `bgp:`
//! of a `mode: bgp` pool. Every error names the field at fault
//! (`bgp.peers[tor-a].hold_time: …`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use fedplane_ops::parse_duration;

/// Kernel routing table the routes go to by default (not `main`, `local` or `default`).
pub const DEFAULT_TABLE: u32 = 102;
/// BFD defaults (RFC 5880 timers as MetalLB and kube-vip users set them).
pub const DEFAULT_BFD_INTERVAL: Duration = Duration::from_millis(100);
/// BFD detection multiplier by default.
pub const DEFAULT_BFD_MULTIPLIER: u8 = 3;
/// Hold time by default (RFC 4271 suggests 90 s; routers in racks run 9 s or less).
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(9);
/// How long a SIGTERM waits at most for the peers to see the withdrawals.
pub const DEFAULT_WITHDRAW_WAIT: Duration = Duration::from_secs(2);
/// The longest `withdraw_wait` accepted.
pub const MAX_WITHDRAW_WAIT: Duration = Duration::from_secs(60);

/// A BFD setting: on with the defaults, off, or explicit timers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum BfdSpec {
    /// `true` (the section's timers) or `false`.
    Flag(bool),
    /// `{interval: 100ms, multiplier: 3}`.
    Timers(BfdTimers),
}

/// BFD timers as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdTimers {
    /// Transmit and receive interval.
    #[serde(default)]
    pub interval: Option<String>,
    /// Detection multiplier.
    #[serde(default)]
    pub multiplier: Option<u8>,
}

/// Graceful restart: off, on with the default restart time, or a restart time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum GracefulSpec {
    /// `true` or `false`.
    Flag(bool),
    /// `{restart_time: 30s}`.
    Time(GracefulTime),
}

/// A graceful restart time as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GracefulTime {
    /// How long the peers keep our routes while we restart.
    pub restart_time: String,
}

/// One BGP peer as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// `[a-z0-9-]`, unique.
    pub name: String,
    /// The router's address.
    pub address: IpAddr,
    /// Its AS number.
    pub asn: u64,
    /// Its port (179).
    #[serde(default)]
    pub port: Option<u16>,
    /// Our address towards it (default: the route's).
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// TCP MD5 password, in a file (never in the ConfigMap).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Hold time, 0 or 3–65535 s.
    #[serde(default)]
    pub hold_time: Option<String>,
    /// BFD.
    #[serde(default)]
    pub bfd: Option<BfdSpec>,
    /// Graceful restart (off by default).
    #[serde(default)]
    pub graceful_restart: Option<GracefulSpec>,
    /// eBGP multihop TTL (1: directly connected).
    #[serde(default)]
    pub ebgp_multihop: Option<u8>,
    /// The nodes that peer with it (all labels must match); empty: every node.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
}

/// The top-level `bgp:` section as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpSpec {
    /// Our AS number.
    pub asn: u64,
    /// `auto` (the node's first IPv4 address) or an IPv4 address.
    #[serde(default)]
    pub router_id: Option<String>,
    /// The kernel table vipd writes the routes to and the speaker reads.
    #[serde(default)]
    pub table: Option<u32>,
    /// Timers of the peers whose `bfd` is `true`.
    #[serde(default)]
    pub bfd: Option<BfdSpec>,
    /// A Service with no ready endpoint anywhere is withdrawn everywhere (default true).
    #[serde(default)]
    pub withdraw_without_endpoints: Option<bool>,
    /// A cordoned node withdraws (default true).
    #[serde(default)]
    pub withdraw_when_cordoned: Option<bool>,
    /// SIGTERM: the longest wait for the peers to see the withdrawals.
    #[serde(default)]
    pub withdraw_wait: Option<String>,
    /// The peers.
    #[serde(default)]
    pub peers: Vec<PeerSpec>,
    /// Without Kubernetes: the addresses this node announces.
    #[serde(default)]
    pub announce: Vec<IpAddr>,
}

/// A pool's `bgp:` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolBgpSpec {
    /// `65001:100`, `65001:1:2` (large) or `no-export`, `no-advertise`, `no-peer`, `blackhole`.
    #[serde(default)]
    pub communities: Vec<String>,
    /// IPv4 prefix length announced for `Cluster` Services (32).
    #[serde(default)]
    pub aggregation_length: Option<u8>,
    /// IPv6 prefix length announced for `Cluster` Services (128).
    #[serde(default)]
    pub aggregation_length_v6: Option<u8>,
    /// The nodes that announce the pool (all labels must match); empty: every node.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
}

/// A BGP community.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Community {
    /// RFC 1997 `a:b`.
    Standard(u16, u16),
    /// RFC 8092 `a:b:c`.
    Large(u32, u32, u32),
}

impl std::fmt::Display for Community {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standard(a, b) => write!(f, "{a}:{b}"),
            Self::Large(a, b, c) => write!(f, "{a}:{b}:{c}"),
        }
    }
}

/// Parses a community: `a:b`, `a:b:c` or a well-known name (RFC 1997, RFC 3765, RFC 7999).
pub fn parse_community(s: &str) -> Result<Community, String> {
    let well_known = match s.trim().to_ascii_lowercase().as_str() {
        "no-export" => Some(0xFF01),
        "no-advertise" => Some(0xFF02),
        "no-export-subconfed" => Some(0xFF03),
        "no-peer" => Some(0xFF04),
        "blackhole" => Some(0x029A),
        _ => None,
    };
    if let Some(low) = well_known {
        return Ok(Community::Standard(0xFFFF, low));
    }
    let parts: Vec<&str> = s.trim().split(':').collect();
    let bad = || {
        format!(
            "{s:?} is not a community (a:b, a:b:c or no-export, no-advertise, no-peer, blackhole)"
        )
    };
    match parts.as_slice() {
        [a, b] => Ok(Community::Standard(
            a.parse().map_err(|_| bad())?,
            b.parse().map_err(|_| bad())?,
        )),
        [a, b, c] => Ok(Community::Large(
            a.parse().map_err(|_| bad())?,
            b.parse().map_err(|_| bad())?,
            c.parse().map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

/// BFD timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bfd {
    /// Transmit and receive interval.
    pub interval: Duration,
    /// Detection multiplier.
    pub multiplier: u8,
}

/// The router ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterId {
    /// The node's first IPv4 address.
    Auto,
    /// This one.
    Fixed(Ipv4Addr),
}

/// One checked peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Name (a BIRD protocol name once prefixed).
    pub name: String,
    /// Address.
    pub address: IpAddr,
    /// AS number.
    pub asn: u32,
    /// Port.
    pub port: u16,
    /// Our address towards it.
    pub source: Option<IpAddr>,
    /// TCP MD5 password file.
    pub password_file: Option<PathBuf>,
    /// Hold time (0: no keepalives).
    pub hold_time: Duration,
    /// BFD, if on.
    pub bfd: Option<Bfd>,
    /// Graceful restart time, if on.
    pub graceful_restart: Option<Duration>,
    /// eBGP multihop TTL.
    pub ebgp_multihop: u8,
    /// Which nodes peer with it.
    pub node_selector: BTreeMap<String, String>,
}

/// The checked `bgp:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpSettings {
    /// Our AS number.
    pub asn: u32,
    /// Router ID.
    pub router_id: RouterId,
    /// Kernel table of the routes.
    pub table: u32,
    /// The peers, in the order written.
    pub peers: Vec<Peer>,
    /// A Service with no ready endpoint anywhere is withdrawn everywhere.
    pub withdraw_without_endpoints: bool,
    /// A cordoned node withdraws.
    pub withdraw_when_cordoned: bool,
    /// SIGTERM: the longest wait for the withdrawals to be seen.
    pub withdraw_wait: Duration,
}

/// A checked pool `bgp:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolBgp {
    /// Communities added to the pool's routes.
    pub communities: Vec<Community>,
    /// IPv4 prefix length of `Cluster` routes.
    pub aggregation_v4: u8,
    /// IPv6 prefix length of `Cluster` routes.
    pub aggregation_v6: u8,
    /// Which nodes announce the pool.
    pub node_selector: BTreeMap<String, String>,
}

impl Default for PoolBgp {
    fn default() -> Self {
        Self {
            communities: Vec::new(),
            aggregation_v4: 32,
            aggregation_v6: 128,
            node_selector: BTreeMap::new(),
        }
    }
}

/// Whether `labels` has every label of `selector` (an empty selector matches every node).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn duration(field: &str, s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| format!("{field}: {e}"))
}

fn asn(field: &str, n: u64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(a) if a != 0 => Ok(a),
        _ => Err(format!("{field}: {n} is not an AS number (1-4294967295)")),
    }
}

fn bfd(field: &str, spec: &BfdSpec, defaults: Bfd) -> Result<Option<Bfd>, String> {
    let (interval, multiplier) = match spec {
        BfdSpec::Flag(false) => return Ok(None),
        BfdSpec::Flag(true) => return Ok(Some(defaults)),
        BfdSpec::Timers(BfdTimers {
            interval,
            multiplier,
        }) => (interval, multiplier),
    };
    let interval = match interval {
        Some(s) => duration(&format!("{field}.interval"), s)?,
        None => defaults.interval,
    };
    if interval < Duration::from_millis(10) || interval > Duration::from_secs(60) {
        return Err(format!("{field}.interval: {interval:?} (10ms-60s)"));
    }
    let multiplier = multiplier.unwrap_or(defaults.multiplier);
    if multiplier == 0 {
        return Err(format!("{field}.multiplier: 0 (1-255)"));
    }
    Ok(Some(Bfd {
        interval,
        multiplier,
    }))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks the `bgp:` section.
pub fn settings(spec: &BgpSpec) -> Result<BgpSettings, String> {
    let asn_ = asn("bgp.asn", spec.asn)?;
    let router_id = match spec.router_id.as_deref().map(str::trim) {
        None | Some("auto") => RouterId::Auto,
        Some(s) => RouterId::Fixed(
            s.parse()
                .map_err(|_| format!("bgp.router_id: {s:?} is neither auto nor an IPv4 address"))?,
        ),
    };
    let table = spec.table.unwrap_or(DEFAULT_TABLE);
    if matches!(table, 0 | 253..=255) {
        return Err(format!(
            "bgp.table: {table} is a table the kernel uses (0, 253 default, 254 main, 255 local)"
        ));
    }
    let defaults = Bfd {
        interval: DEFAULT_BFD_INTERVAL,
        multiplier: DEFAULT_BFD_MULTIPLIER,
    };
    let section_bfd = match &spec.bfd {
        None | Some(BfdSpec::Flag(_)) => defaults,
        Some(b) => bfd("bgp.bfd", b, defaults)?.unwrap_or(defaults),
    };
    let mut names = std::collections::BTreeSet::new();
    let mut peers = Vec::with_capacity(spec.peers.len());
    for p in &spec.peers {
        let f = format!("bgp.peers[{}]", p.name);
        if !is_name(&p.name) {
            return Err(format!(
                "{f}.name: {:?} (lowercase letters, digits and '-', at most 32)",
                p.name
            ));
        }
        if !names.insert(p.name.as_str()) {
            return Err(format!("bgp.peers: two peers named {}", p.name));
        }
        if p.port == Some(0) {
            return Err(format!("{f}.port: 0 (1-65535)"));
        }
        for (field, a) in [("address", Some(p.address)), ("source", p.source)] {
            if let Some(IpAddr::V6(v6)) = a
                && v6.is_unicast_link_local()
            {
                return Err(format!(
                    "{f}.{field}: {v6} is link-local, which BIRD needs an interface for; use a global address"
                ));
            }
            if let Some(a) = a
                && (a.is_unspecified() || a.is_multicast() || a.is_loopback())
            {
                return Err(format!("{f}.{field}: {a} is not a peer's address"));
            }
        }
        if let Some(src) = p.source
            && src.is_ipv4() != p.address.is_ipv4()
        {
            return Err(format!(
                "{f}.source: {src} is not of the family of the peer's address {}",
                p.address
            ));
        }
        let hold_time = match &p.hold_time {
            Some(s) => duration(&format!("{f}.hold_time"), s)?,
            None => DEFAULT_HOLD_TIME,
        };
        if hold_time.subsec_nanos() != 0
            || (hold_time != Duration::ZERO
                && !(Duration::from_secs(3)..=Duration::from_secs(65535)).contains(&hold_time))
        {
            return Err(format!(
                "{f}.hold_time: {hold_time:?} (0, or whole seconds from 3s to 65535s)"
            ));
        }
        let graceful_restart = match &p.graceful_restart {
            None | Some(GracefulSpec::Flag(false)) => None,
            Some(GracefulSpec::Flag(true)) => Some(Duration::from_secs(120)),
            Some(GracefulSpec::Time(GracefulTime { restart_time })) => {
                let t = duration(&format!("{f}.graceful_restart.restart_time"), restart_time)?;
                if t < Duration::from_secs(1) || t > Duration::from_secs(4095) {
                    return Err(format!(
                        "{f}.graceful_restart.restart_time: {t:?} (1s-4095s)"
                    ));
                }
                Some(t)
            }
        };
        let ebgp_multihop = p.ebgp_multihop.unwrap_or(1);
        if ebgp_multihop == 0 {
            return Err(format!("{f}.ebgp_multihop: 0 (1-255)"));
        }
        if let Some(path) = &p.password_file
            && !path.is_absolute()
        {
            return Err(format!(
                "{f}.password_file: {} is not an absolute path",
                path.display()
            ));
        }
        peers.push(Peer {
            name: p.name.clone(),
            address: p.address,
            asn: asn(&format!("{f}.asn"), p.asn)?,
            port: p.port.unwrap_or(179),
            source: p.source,
            password_file: p.password_file.clone(),
            hold_time,
            bfd: match &p.bfd {
                Some(b) => bfd(&format!("{f}.bfd"), b, section_bfd)?,
                None => None,
            },
            graceful_restart,
            ebgp_multihop,
            node_selector: p.node_selector.clone(),
        });
    }
    let withdraw_wait = match &spec.withdraw_wait {
        Some(s) => duration("bgp.withdraw_wait", s)?,
        None => DEFAULT_WITHDRAW_WAIT,
    };
    if withdraw_wait > MAX_WITHDRAW_WAIT {
        return Err(format!(
            "bgp.withdraw_wait: {withdraw_wait:?} (at most 60s)"
        ));
    }
    Ok(BgpSettings {
        asn: asn_,
        router_id,
        table,
        peers,
        withdraw_without_endpoints: spec.withdraw_without_endpoints.unwrap_or(true),
        withdraw_when_cordoned: spec.withdraw_when_cordoned.unwrap_or(true),
        withdraw_wait,
    })
}

/// Checks a pool's `bgp:` (`pool` names it in errors); the aggregation lengths are checked
/// against the pool's addresses by the pools.
pub fn pool_bgp(pool: &str, spec: &PoolBgpSpec) -> Result<PoolBgp, String> {
    let f = format!("pools[{pool}].bgp");
    let communities = spec
        .communities
        .iter()
        .map(|c| parse_community(c).map_err(|e| format!("{f}.communities: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let aggregation_v4 = spec.aggregation_length.unwrap_or(32);
    if !(1..=32).contains(&aggregation_v4) {
        return Err(format!("{f}.aggregation_length: {aggregation_v4} (1-32)"));
    }
    let aggregation_v6 = spec.aggregation_length_v6.unwrap_or(128);
    if !(1..=128).contains(&aggregation_v6) {
        return Err(format!(
            "{f}.aggregation_length_v6: {aggregation_v6} (1-128)"
        ));
    }
    Ok(PoolBgp {
        communities,
        aggregation_v4,
        aggregation_v6,
        node_selector: spec.node_selector.clone(),
    })
}

#[cfg(test)]
mod tests;
