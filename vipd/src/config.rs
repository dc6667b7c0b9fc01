//! Settings: command-line flags for one group, or a YAML file (`--config`) for several.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;
use serde::Deserialize;

use fedplane_ops::parse_duration;

use crate::fsm::GroupConfig;
use crate::ipam::{Family, PoolSpec, Pools};
use crate::packet::{Checksum, MAX_INTERVAL_CS, Version};
use crate::services::DEFAULT_CLASS;

/// Invalid settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The YAML file is not valid.
    #[error("{0}: {1}")]
    Yaml(PathBuf, String),
    /// A setting is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// fedplane-vipd holds virtual IP addresses on one node at a time with VRRP (v3, RFC 5798; v2,
/// RFC 3768), and interoperates with keepalived.
///
/// One group from flags: `fedplane-vipd --interface eth0 --vrid 51 --priority 150 --vip
/// 192.0.2.100/24`. Several groups: `--config FILE` (YAML, see
/// vipd/fedplane-vipd.example.yaml); --vrid, --vip and --unicast-peer are then refused, and the
/// other group flags are defaults for groups that do not set them (e.g. a per-node --priority).
///
/// With --kubernetes, the virtual addresses come from the LoadBalancer Services of the cluster:
/// the replica holding the Lease assigns them from the pools (config file `pools:` or
/// --pools-configmap) and writes them to the Services' status; every replica spreads them over
/// its groups (`vips` may then be empty) by a stable hash, and the masters hold them.
#[derive(Debug, Parser)]
#[command(name = "fedplane-vipd", version, verbatim_doc_comment)]
pub struct Cli {
    /// Interface to run VRRP on and to add the virtual addresses to (with --config: the default
    /// for groups that name none).
    #[arg(long, env = "FEDPLANE_VIPD_INTERFACE")]
    pub interface: Option<String>,
    /// Virtual router id, 1–255; every router of a group uses the same.
    #[arg(long)]
    pub vrid: Option<u8>,
    /// Priority 1–254, higher wins; 255 = owner of the addresses (master at once).
    #[arg(long, default_value_t = 100)]
    pub priority: u8,
    /// Advert interval (e.g. 100ms, 1s; a bare number is seconds). Failover after a crash takes
    /// about 3.6 intervals. v3: 10ms–40.95s; v2: whole seconds.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub advert_interval: Duration,
    /// A virtual address with its prefix (e.g. 192.0.2.100/24 or 2001:db8::100/64); repeat for
    /// several. All of one group's addresses are of one family.
    #[arg(long = "vip")]
    pub vips: Vec<IpNet>,
    /// Do not take over from a lower-priority master (preemption is on by default).
    #[arg(long)]
    pub no_preempt: bool,
    /// After start, leave a lower-priority master alone this long even with preemption.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub preempt_delay: Duration,
    /// VRRP version: 3, or 2 (IPv4 only) to sit beside a keepalived with its default
    /// `vrrp_version 2`.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub vrrp_version: u8,
    /// Send adverts to this peer by unicast instead of multicast; repeat for each peer. Adverts
    /// from other senders are then dropped, so list each peer's primary address (the first
    /// IPv4 address of its interface; for IPv6, its link-local address).
    #[arg(long = "unicast-peer")]
    pub unicast_peers: Vec<IpAddr>,
    /// Send IPv4 v3 checksums over the VRRP message only, as RFC 9568 says, instead of
    /// keepalived's default form with the pseudo-header. Both forms are always accepted.
    #[arg(long)]
    pub rfc9568_checksum: bool,
    /// Gratuitous ARP / unsolicited NA bursts sent on becoming master (the first at once).
    #[arg(long, default_value_t = 5)]
    pub garp_count: u32,
    /// Time between those bursts.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub garp_interval: Duration,
    /// Address of the HTTP endpoints /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9102")]
    pub http: SocketAddr,
    /// YAML file describing several groups (see vipd/fedplane-vipd.example.yaml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Assign LoadBalancer addresses from the pools and announce them (needs a Kubernetes API:
    /// in-cluster, $KUBECONFIG or --kubeconfig).
    #[arg(long)]
    pub kubernetes: bool,
    /// Kubeconfig file (default: in-cluster settings, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name: the Lease holder identity, and the seed of `priority: auto`.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The Lease (NAMESPACE/NAME) whose holder assigns addresses; the others stand by.
    #[arg(long, default_value = "fedplane-system/fedplane-vipd")]
    pub lease: String,
    /// Lease duration: a standby takes over this long after the holder's last renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// The spec.loadBalancerClass served (Services without a class are served too).
    #[arg(long, default_value = DEFAULT_CLASS)]
    pub load_balancer_class: String,
    /// ConfigMap (NAMESPACE/NAME) whose `config.yaml` holds the pools, watched; it replaces
    /// the config file's `pools:` while it exists and is valid.
    #[arg(long)]
    pub pools_configmap: Option<String>,
    /// kube-keepalived-vip ConfigMap (NAMESPACE/NAME, `"10.4.0.50": "default/echoheaders"`)
    /// whose addresses are kept for their Services.
    #[arg(long)]
    pub legacy_configmap: Option<String>,
    /// How long a released address waits before another Service may get it.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub quarantine: Duration,
}

/// A group's priority: a number, or `auto` (from the node name and VRID).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum PriorityFile {
    Number(u8),
    Word(AutoWord),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AutoWord {
    Auto,
}

/// One group as the YAML file spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    interface: Option<String>,
    vrid: u8,
    #[serde(default)]
    priority: Option<PriorityFile>,
    #[serde(default)]
    advert_interval: Option<String>,
    #[serde(default)]
    vips: Vec<String>,
    /// ipv4 or ipv6; needed when `vips` is empty (Kubernetes mode).
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    preempt: Option<bool>,
    #[serde(default)]
    preempt_delay: Option<String>,
    #[serde(default)]
    vrrp_version: Option<u8>,
    #[serde(default)]
    unicast_peers: Vec<IpAddr>,
    #[serde(default)]
    rfc9568_checksum: Option<bool>,
    #[serde(default)]
    garp_count: Option<u32>,
    #[serde(default)]
    garp_interval: Option<String>,
}

/// The YAML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    http: Option<SocketAddr>,
    #[serde(default)]
    groups: Vec<GroupFile>,
    #[serde(default)]
    pools: Vec<PoolSpec>,
}

/// One VRRP group, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// Interface name.
    pub interface: String,
    /// Protocol version.
    pub version: Version,
    /// State machine settings.
    pub fsm: GroupConfig,
    /// The virtual addresses.
    pub vips: Vec<IpNet>,
    /// IPv6 group (else IPv4).
    pub v6: bool,
    /// Unicast peers (empty: multicast).
    pub unicast_peers: Vec<IpAddr>,
    /// Checksum form of IPv4 v3 adverts we send.
    pub checksum: Checksum,
    /// The addresses follow the Services (Kubernetes mode): adverts listing other addresses
    /// are accepted, since replicas see Service changes at slightly different times.
    pub dynamic: bool,
}

/// Kubernetes mode.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// Kubeconfig file, if not inferred.
    pub kubeconfig: Option<PathBuf>,
    /// Lease holder identity.
    pub node_name: String,
    /// Lease namespace and name.
    pub lease: (String, String),
    /// Lease duration.
    pub lease_duration: Duration,
    /// The loadBalancerClass served.
    pub class: String,
    /// Pools from the config file.
    pub pools: Pools,
    /// Pool ConfigMap.
    pub pools_configmap: Option<(String, String)>,
    /// Legacy kube-keepalived-vip ConfigMap.
    pub legacy_configmap: Option<(String, String)>,
    /// Quarantine of released addresses.
    pub quarantine: Duration,
}

/// Everything the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The groups.
    pub groups: Vec<GroupSettings>,
    /// HTTP address.
    pub http: SocketAddr,
    /// Log format.
    pub log_format: String,
    /// Kubernetes mode, if on.
    pub kube: Option<KubeSettings>,
}

fn namespaced(flag: &str, value: &str) -> Result<(String, String), ConfigError> {
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(invalid(format!("{flag} {value:?}: use NAMESPACE/NAME"))),
    }
}

impl Settings {
    /// Validates the flags, reading `--config` if given.
    pub fn resolve(cli: Cli) -> Result<Self, ConfigError> {
        let node = cli
            .node_name
            .clone()
            .or_else(|| {
                let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
                Some(h.trim().to_owned())
            })
            .unwrap_or_default();
        let (groups, http, pools) = match &cli.config {
            Some(path) => {
                if cli.vrid.is_some() || !cli.vips.is_empty() || !cli.unicast_peers.is_empty() {
                    return Err(invalid(
                        "--vrid, --vip and --unicast-peer describe one group; with --config, describe groups in the file",
                    ));
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Read(path.clone(), e))?;
                let file: File = serde_saphyr::from_str(&text)
                    .map_err(|e| ConfigError::Yaml(path.clone(), e.to_string()))?;
                if file.groups.is_empty() && !cli.kubernetes {
                    return Err(ConfigError::Yaml(path.clone(), "no groups".into()));
                }
                let groups = file
                    .groups
                    .into_iter()
                    .map(|g| from_file(g, &cli, &node))
                    .collect::<Result<Vec<_>, _>>()?;
                (groups, file.http.unwrap_or(cli.http), file.pools)
            }
            None if cli.kubernetes && cli.vrid.is_none() => (Vec::new(), cli.http, Vec::new()),
            None => {
                let vrid = cli
                    .vrid
                    .ok_or_else(|| invalid("--vrid is required (or --config)"))?;
                if cli.interface.is_none() {
                    return Err(invalid("--interface is required (or --config)"));
                }
                // One group from the flags: a file group that sets nothing but its VRID and
                // addresses, so every other setting falls back to the flags.
                let g = GroupFile {
                    interface: None,
                    vrid,
                    priority: None,
                    advert_interval: None,
                    vips: cli.vips.iter().map(ToString::to_string).collect(),
                    family: None,
                    preempt: None,
                    preempt_delay: None,
                    vrrp_version: None,
                    unicast_peers: cli.unicast_peers.clone(),
                    rfc9568_checksum: None,
                    garp_count: None,
                    garp_interval: None,
                };
                (vec![from_file(g, &cli, &node)?], cli.http, Vec::new())
            }
        };
        let kube = if cli.kubernetes {
            let pools = Pools::new(&pools).map_err(|e| invalid(e.to_string()))?;
            if node.is_empty() {
                return Err(invalid("--kubernetes needs --node-name (or $NODE_NAME)"));
            }
            if cli.lease_duration < Duration::from_secs(1) {
                return Err(invalid("--lease-duration must be at least 1s"));
            }
            Some(KubeSettings {
                kubeconfig: cli.kubeconfig.clone(),
                node_name: node,
                lease: namespaced("--lease", &cli.lease)?,
                lease_duration: cli.lease_duration,
                class: cli.load_balancer_class.clone(),
                pools,
                pools_configmap: cli
                    .pools_configmap
                    .as_deref()
                    .map(|v| namespaced("--pools-configmap", v))
                    .transpose()?,
                legacy_configmap: cli
                    .legacy_configmap
                    .as_deref()
                    .map(|v| namespaced("--legacy-configmap", v))
                    .transpose()?,
                quarantine: cli.quarantine,
            })
        } else if !pools.is_empty() {
            return Err(invalid("pools are only used with --kubernetes"));
        } else {
            None
        };
        finish(groups, http, cli.log_format, kube)
    }
}

fn finish(
    groups: Vec<GroupSettings>,
    http: SocketAddr,
    log_format: String,
    kube: Option<KubeSettings>,
) -> Result<Settings, ConfigError> {
    let mut seen = HashSet::new();
    for g in &groups {
        if !seen.insert((g.interface.clone(), g.fsm.vrid, g.v6)) {
            return Err(invalid(format!(
                "two groups with VRID {} on {} ({})",
                g.fsm.vrid,
                g.interface,
                if g.v6 { "IPv6" } else { "IPv4" }
            )));
        }
    }
    let mut vips = HashSet::new();
    for v in groups.iter().flat_map(|g| &g.vips) {
        if !vips.insert(v.addr()) {
            return Err(invalid(format!("{} is in two groups", v.addr())));
        }
    }
    Ok(Settings {
        groups,
        http,
        log_format,
        kube,
    })
}

/// `priority: auto`: 50–249 from a hash of the node name and VRID, so that the nodes of a
/// DaemonSet, all with one config, are masters of different groups.
pub fn auto_priority(node: &str, vrid: u8) -> u8 {
    let key = format!("{node}/{vrid}");
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    u8::try_from(50 + h % 200).unwrap_or(u8::MAX)
}

/// Validates one group; what it leaves unset comes from the flags.
fn from_file(g: GroupFile, cli: &Cli, node: &str) -> Result<GroupSettings, ConfigError> {
    let dur = |s: Option<String>, default: Duration| -> Result<Duration, ConfigError> {
        s.map_or(Ok(default), |s| parse_duration(&s).map_err(invalid))
    };
    let interface = g
        .interface
        .or_else(|| cli.interface.clone())
        .ok_or_else(|| {
            invalid(format!(
                "group {}: no interface (and no --interface)",
                g.vrid
            ))
        })?;
    let vips = g
        .vips
        .iter()
        .map(|v| {
            v.parse::<IpNet>()
                .map_err(|e| invalid(format!("group {}: vip {v:?}: {e}", g.vrid)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vrid = g.vrid;
    let priority = match g.priority {
        None => cli.priority,
        Some(PriorityFile::Number(p)) => p,
        Some(PriorityFile::Word(AutoWord::Auto)) => auto_priority(node, g.vrid),
    };
    let advert_interval = dur(g.advert_interval, cli.advert_interval)?;
    let preempt = g.preempt.unwrap_or(!cli.no_preempt);
    let preempt_delay = dur(g.preempt_delay, cli.preempt_delay)?;
    let version = g.vrrp_version.unwrap_or(cli.vrrp_version);
    let unicast_peers = g.unicast_peers;
    let rfc9568_checksum = g.rfc9568_checksum.unwrap_or(cli.rfc9568_checksum);
    let garp_count = g.garp_count.unwrap_or(cli.garp_count);
    let garp_interval = dur(g.garp_interval, cli.garp_interval)?;
    let ctx = |m: String| invalid(format!("group {vrid} on {interface}: {m}"));
    if vrid == 0 {
        return Err(ctx("VRID must be 1–255".into()));
    }
    if priority == 0 {
        return Err(ctx(
            "priority must be 1–255 (0 is reserved for resigning)".into()
        ));
    }
    let family = match g.family.as_deref() {
        None => None,
        Some("ipv4") => Some(Family::V4),
        Some("ipv6") => Some(Family::V6),
        Some(other) => return Err(ctx(format!("family {other:?}: use ipv4 or ipv6"))),
    };
    let v6 = match (vips.first(), family) {
        (Some(first), Some(f)) if first.addr().is_ipv6() != (f == Family::V6) => {
            return Err(ctx(format!("family {f} but {} is not", first.addr())));
        }
        (Some(first), _) => first.addr().is_ipv6(),
        (None, _) if !cli.kubernetes => {
            return Err(ctx("no virtual addresses (--vip)".into()));
        }
        (None, f) => f == Some(Family::V6),
    };
    if cli.kubernetes && !vips.is_empty() {
        return Err(ctx(
            "with --kubernetes a group's addresses come from the Services; remove its vips".into(),
        ));
    }
    if vips.iter().any(|v| v.addr().is_ipv6() != v6) {
        return Err(ctx(
            "mixes IPv4 and IPv6 addresses; use one group per family".into(),
        ));
    }
    if unicast_peers.iter().any(|p| p.is_ipv6() != v6) {
        return Err(ctx(
            "unicast peers must be of the virtual addresses' family".into(),
        ));
    }
    if unicast_peers
        .iter()
        .any(|p| matches!(p, IpAddr::V6(a) if !a.is_unicast_link_local()))
    {
        return Err(ctx(
            "IPv6 unicast peers must be link-local addresses (fe80::/10): IPv6 adverts come from those".into(),
        ));
    }
    if let Some(v) = vips.iter().find(|v| unicast_peers.contains(&v.addr())) {
        return Err(ctx(format!(
            "{} is both a virtual address and a peer",
            v.addr()
        )));
    }
    let version = match version {
        3 => {
            let max = Duration::from_millis(u64::from(MAX_INTERVAL_CS) * 10);
            if advert_interval < Duration::from_millis(10) || advert_interval > max {
                return Err(ctx(format!("v3 advert interval must be 10ms–{max:?}")));
            }
            Version::V3
        }
        2 => {
            if v6 {
                return Err(ctx("VRRP v2 is IPv4 only".into()));
            }
            if advert_interval.subsec_nanos() != 0
                || advert_interval.as_secs() == 0
                || advert_interval.as_secs() > 255
            {
                return Err(ctx("v2 advert interval must be whole seconds, 1–255".into()));
            }
            Version::V2
        }
        v => return Err(ctx(format!("VRRP version {v}: use 3 or 2"))),
    };
    if garp_count == 0 {
        return Err(ctx("garp count must be at least 1".into()));
    }
    Ok(GroupSettings {
        interface,
        version,
        fsm: GroupConfig {
            vrid,
            priority,
            advert_interval,
            preempt,
            preempt_delay,
            garp_count,
            garp_interval,
        },
        vips,
        v6,
        unicast_peers,
        checksum: if rfc9568_checksum {
            Checksum::MessageOnly
        } else {
            Checksum::PseudoHeader
        },
        dynamic: cli.kubernetes,
    })
}

#[cfg(test)]
mod tests;
