//! Settings: command-line flags for one group, or a YAML file (`--config`) for several, checked
//! into [`Settings`]; one group's rules are in `config/group.rs`, Kubernetes mode's in
//! `config/kubernetes.rs`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;
use serde::Deserialize;

use fedplane_ops::parse_duration;

use crate::bgp::config::{BgpSettings, BgpSpec};
use crate::bgp::engine::EngineSettings;
use crate::ipam::PoolSpec;
use crate::services::DEFAULT_CLASS;

mod group;
mod kubernetes;

use group::{GroupFile, from_entry};
pub use group::{GroupSettings, auto_priority};
use kubernetes::kube_settings;
pub use kubernetes::{KubeSettings, ObjectName};

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
    /// Hear adverts only from this source (plus our own); repeat for each peer, listing each
    /// peer's primary address (the first IPv4 address of its interface; for IPv6, its
    /// link-local address). For a multicast group: everyone else is refused as a foreign
    /// speaker, counted in fedplane_vipd_foreign_adverts_total and never obeyed. (A unicast
    /// group's --unicast-peer list is its allowlist already.)
    #[arg(long = "peer")]
    pub peers: Vec<IpAddr>,
    /// VRRP v2 only: authenticate adverts with the password in this file (keepalived's
    /// `authentication { auth_type PASS auth_pass ... }`): 1–8 bytes, one trailing newline
    /// ignored. Adverts with another password or none are refused. The password travels in
    /// clear: it keeps misconfigured groups apart, it does not stop an attacker on the link.
    #[arg(long)]
    pub auth_pass_file: Option<PathBuf>,
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
    /// Kubernetes mode: announce the addresses of `mode: bgp` pools over BGP (BIRD 2 as the
    /// speaker), by the Services' externalTrafficPolicy and ready endpoints; watches
    /// EndpointSlices and this node's Node (read access to both)
    #[arg(long)]
    pub bgp: bool,
    /// BGP mode: the BIRD 2 program fedplane-vipd runs as its BGP speaker
    #[arg(long, default_value = "bird", value_name = "PATH")]
    pub bird: PathBuf,
    /// BGP mode: the directory of BIRD's configuration and control socket (created, mode 0700)
    #[arg(long, default_value = "/run/fedplane-vipd", value_name = "DIR")]
    pub bgp_run_dir: PathBuf,
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
    #[serde(default)]
    bgp: Option<BgpSpec>,
}

/// BGP mode without Kubernetes: the speaker, its peers and the addresses to announce.
#[derive(Debug, Clone)]
pub struct StaticBgp {
    /// The checked `bgp:` section.
    pub settings: BgpSettings,
    /// `bgp.announce`: the addresses this node announces (host routes).
    pub announce: Vec<IpAddr>,
    /// Where BIRD is.
    pub engine: EngineSettings,
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
    /// BGP mode from the config file (`bgp:` with `announce:`), without Kubernetes.
    pub bgp: Option<StaticBgp>,
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
        let described = match &cli.config {
            Some(path) => from_config_file(path, &cli, &node)?,
            None => Described {
                groups: if cli.kubernetes && cli.vrid.is_none() {
                    Vec::new()
                } else {
                    vec![group_from_flags(&cli, &node)?]
                },
                http: cli.http,
                pools: Vec::new(),
                bgp: None,
            },
        };
        let kube = if cli.kubernetes {
            if cli.bgp {
                check_run_dir(&cli.bgp_run_dir)?;
            }
            Some(kube_settings(
                &cli,
                node,
                &described.pools,
                described.bgp.as_ref(),
            )?)
        } else if !described.pools.is_empty() {
            return Err(invalid("pools are only used with --kubernetes"));
        } else {
            None
        };
        let bgp = match described.bgp {
            // Kubernetes mode: the section went with the pools.
            Some(_) if cli.kubernetes => None,
            Some(spec) => {
                let settings = crate::bgp::config::settings(&spec).map_err(invalid)?;
                if spec.announce.is_empty() {
                    return Err(invalid("bgp.announce: no addresses to announce"));
                }
                for a in &spec.announce {
                    let mapped = matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
                    if a.is_unspecified() || a.is_loopback() || a.is_multicast() || mapped {
                        return Err(invalid(format!(
                            "bgp.announce: {a} is not a service address"
                        )));
                    }
                    if !settings
                        .peers
                        .iter()
                        .any(|p| p.address.is_ipv4() == a.is_ipv4())
                    {
                        return Err(invalid(format!(
                            "bgp.announce: {a} has no peer of its family to be announced to"
                        )));
                    }
                }
                check_run_dir(&cli.bgp_run_dir)?;
                Some(StaticBgp {
                    settings,
                    announce: spec.announce.clone(),
                    engine: EngineSettings {
                        bird: cli.bird.clone(),
                        run_dir: cli.bgp_run_dir.clone(),
                    },
                })
            }
            None => None,
        };
        let mut settings = finish(described.groups, described.http, cli.log_format, kube)?;
        settings.bgp = bgp;
        Ok(settings)
    }
}

/// `--bgp-run-dir`: BIRD's control socket path there must fit a Unix socket address.
fn check_run_dir(dir: &std::path::Path) -> Result<(), ConfigError> {
    let sock = dir.join("bird.ctl");
    if sock.as_os_str().len() >= 108 {
        return Err(invalid(format!(
            "--bgp-run-dir {}: the control socket's path would be over the 107 bytes a Unix socket takes",
            dir.display()
        )));
    }
    Ok(())
}

/// What the flags or the config file describe, before Kubernetes mode is checked.
struct Described {
    groups: Vec<GroupSettings>,
    http: SocketAddr,
    pools: Vec<PoolSpec>,
    bgp: Option<BgpSpec>,
}

/// The groups, HTTP address and pools of the `--config` file at `path`.
fn from_config_file(path: &PathBuf, cli: &Cli, node: &str) -> Result<Described, ConfigError> {
    if cli.vrid.is_some()
        || !cli.vips.is_empty()
        || !cli.unicast_peers.is_empty()
        || !cli.peers.is_empty()
        || cli.auth_pass_file.is_some()
    {
        return Err(invalid(
            "--vrid, --vip, --unicast-peer, --peer and --auth-pass-file describe one group; with --config, describe groups in the file",
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.clone(), e))?;
    let file: File = serde_saphyr::from_str(&text)
        .map_err(|e| ConfigError::Yaml(path.clone(), e.to_string()))?;
    if file.groups.is_empty() && !cli.kubernetes && file.bgp.is_none() {
        return Err(ConfigError::Yaml(path.clone(), "no groups".into()));
    }
    let groups = file
        .groups
        .into_iter()
        .map(|g| from_entry(g, cli, node))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Described {
        groups,
        http: file.http.unwrap_or(cli.http),
        pools: file.pools,
        bgp: file.bgp,
    })
}

/// The one group the flags describe.
fn group_from_flags(cli: &Cli, node: &str) -> Result<GroupSettings, ConfigError> {
    let vrid = cli
        .vrid
        .ok_or_else(|| invalid("--vrid is required (or --config)"))?;
    if cli.interface.is_none() {
        return Err(invalid("--interface is required (or --config)"));
    }
    // A file group that sets nothing but its VRID and addresses, so every other setting falls
    // back to the flags.
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
        peers: cli.peers.clone(),
        auth_pass: None,
        auth_pass_file: cli.auth_pass_file.clone(),
        rfc9568_checksum: None,
        garp_count: None,
        garp_interval: None,
    };
    from_entry(g, cli, node)
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
        bgp: None,
    })
}

#[cfg(test)]
mod tests;
