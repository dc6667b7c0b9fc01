//! One VRRP group as the YAML file (or the flags) describe it → a checked [`GroupSettings`]:
//! what the group leaves unset comes from the flags, then each rule is checked in turn.
//!
//! Speakers: `peers:` (`--peer`) makes a multicast group hear only those sources; a unicast
//! group hears only its `unicast_peers` already, so `peers` is refused beside them. Peers are
//! of the group's family (IPv6: link-local, the source of IPv6 adverts), and none is one of
//! its virtual addresses.
//!
//! Authentication: `auth_pass:` or `auth_pass_file:` (`--auth-pass-file`) set a v2 group's
//! keepalived `auth_type PASS` password: 1–8 bytes without NUL; a file's single trailing
//! newline is not part of it. A longer password is refused rather than cut: keepalived cuts
//! its own at 8 bytes, so the operator writes the 8 that count on both sides and sees what is
//! compared. v3 has no authentication field: a password on a v3 group is refused.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use fedplane_ops::parse_duration;

use super::{Cli, ConfigError, invalid};
use crate::fsm::RouterConfig;
use crate::ipam::Family;
use crate::packet::{Checksum, MAX_INTERVAL_CS, Password, Version};

/// A group's priority: a number, or `auto` (from the node name and VRID).
// serde's messages name these types ("untagged enum PriorityFile"): the names stay so
// what `--config` prints on a mistake stays (GroupFile keeps its name with it).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub(super) enum PriorityFile {
    Number(u8),
    Word(AutoWord),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum AutoWord {
    Auto,
}

/// One group as the YAML file spells it (an entry of its `groups:`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupFile {
    pub(super) interface: Option<String>,
    pub(super) vrid: u8,
    #[serde(default)]
    pub(super) priority: Option<PriorityFile>,
    #[serde(default)]
    pub(super) advert_interval: Option<String>,
    #[serde(default)]
    pub(super) vips: Vec<String>,
    /// ipv4 or ipv6; needed when `vips` is empty (Kubernetes mode).
    #[serde(default)]
    pub(super) family: Option<String>,
    #[serde(default)]
    pub(super) preempt: Option<bool>,
    #[serde(default)]
    pub(super) preempt_delay: Option<String>,
    #[serde(default)]
    pub(super) vrrp_version: Option<u8>,
    #[serde(default)]
    pub(super) unicast_peers: Vec<IpAddr>,
    /// Sources a multicast group hears (empty: anyone).
    #[serde(default)]
    pub(super) peers: Vec<IpAddr>,
    /// v2 `auth_type PASS` password.
    #[serde(default)]
    pub(super) auth_pass: Option<String>,
    /// A file holding that password.
    #[serde(default)]
    pub(super) auth_pass_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) rfc9568_checksum: Option<bool>,
    #[serde(default)]
    pub(super) garp_count: Option<u32>,
    #[serde(default)]
    pub(super) garp_interval: Option<String>,
}

/// One VRRP group, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// Interface name.
    pub interface: String,
    /// Protocol version.
    pub version: Version,
    /// State machine settings.
    pub fsm: RouterConfig,
    /// The virtual addresses.
    pub vips: Vec<IpNet>,
    /// IPv6 group (else IPv4).
    pub v6: bool,
    /// Unicast peers (empty: multicast).
    pub unicast_peers: Vec<IpAddr>,
    /// Sources whose adverts are heard (empty: anyone; see also `unicast_peers`).
    pub peers: Vec<IpAddr>,
    /// v2 password (`auth_type PASS`) sent and required; `None`: no authentication.
    pub auth: Option<Password>,
    /// Checksum form of IPv4 v3 adverts we send.
    pub checksum: Checksum,
    /// The addresses follow the Services (Kubernetes mode): adverts listing other addresses
    /// are accepted, since replicas see Service changes at slightly different times.
    pub dynamic: bool,
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
pub(super) fn from_entry(
    g: GroupFile,
    cli: &Cli,
    node: &str,
) -> Result<GroupSettings, ConfigError> {
    let d = Draft::merge(g, cli, node)?;
    d.check_ids()?;
    let v6 = d.family()?;
    d.check_addresses(v6)?;
    let version = d.version(v6)?;
    let auth = d.auth(version)?;
    if d.garp_count == 0 {
        return Err(d.ctx("garp count must be at least 1".into()));
    }
    Ok(GroupSettings {
        fsm: RouterConfig {
            vrid: d.vrid,
            priority: d.priority,
            advert_interval: d.advert_interval,
            preempt: d.preempt,
            preempt_delay: d.preempt_delay,
            garp_count: d.garp_count,
            garp_interval: d.garp_interval,
        },
        interface: d.interface,
        version,
        vips: d.vips,
        v6,
        unicast_peers: d.unicast_peers,
        peers: d.peers,
        auth,
        checksum: if d.rfc9568_checksum {
            Checksum::MessageOnly
        } else {
            Checksum::PseudoHeader
        },
        dynamic: d.kubernetes,
    })
}

/// Whether `net` can be held on an interface and answered for: a unicast address with a
/// prefix. (Link-local IPv6 addresses can: RFC 5798 lists one first in IPv6 groups.)
fn assignable(net: &IpNet) -> bool {
    let a = net.addr();
    let broadcast = matches!(a, IpAddr::V4(v4) if v4.is_broadcast());
    net.prefix_len() > 0
        && !a.is_unspecified()
        && !a.is_multicast()
        && !a.is_loopback()
        && !broadcast
}

/// A group with the flags' defaults filled in, not yet checked.
struct Draft {
    interface: String,
    vrid: u8,
    priority: u8,
    advert_interval: Duration,
    vips: Vec<IpNet>,
    family: Option<String>,
    preempt: bool,
    preempt_delay: Duration,
    version: u8,
    unicast_peers: Vec<IpAddr>,
    peers: Vec<IpAddr>,
    auth_pass: Option<String>,
    auth_pass_file: Option<PathBuf>,
    rfc9568_checksum: bool,
    garp_count: u32,
    garp_interval: Duration,
    kubernetes: bool,
}

impl Draft {
    /// The group's settings, else the flags'; the interface and addresses parsed.
    fn merge(g: GroupFile, cli: &Cli, node: &str) -> Result<Self, ConfigError> {
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
        let priority = match g.priority {
            None => cli.priority,
            Some(PriorityFile::Number(p)) => p,
            Some(PriorityFile::Word(AutoWord::Auto)) => auto_priority(node, g.vrid),
        };
        Ok(Self {
            interface,
            vrid: g.vrid,
            priority,
            advert_interval: dur(g.advert_interval, cli.advert_interval)?,
            vips,
            family: g.family,
            preempt: g.preempt.unwrap_or(!cli.no_preempt),
            preempt_delay: dur(g.preempt_delay, cli.preempt_delay)?,
            version: g.vrrp_version.unwrap_or(cli.vrrp_version),
            unicast_peers: g.unicast_peers,
            peers: g.peers,
            auth_pass: g.auth_pass,
            auth_pass_file: g.auth_pass_file,
            rfc9568_checksum: g.rfc9568_checksum.unwrap_or(cli.rfc9568_checksum),
            garp_count: g.garp_count.unwrap_or(cli.garp_count),
            garp_interval: dur(g.garp_interval, cli.garp_interval)?,
            kubernetes: cli.kubernetes,
        })
    }

    /// An error about this group.
    fn ctx(&self, m: String) -> ConfigError {
        invalid(format!("group {} on {}: {m}", self.vrid, self.interface))
    }

    fn check_ids(&self) -> Result<(), ConfigError> {
        if self.vrid == 0 {
            return Err(self.ctx("VRID must be 1–255".into()));
        }
        if self.priority == 0 {
            return Err(self.ctx("priority must be 1–255 (0 is reserved for resigning)".into()));
        }
        Ok(())
    }

    /// Whether the group is IPv6: from its addresses, else its `family`.
    fn family(&self) -> Result<bool, ConfigError> {
        let family = match self.family.as_deref() {
            None => None,
            Some("ipv4") => Some(Family::V4),
            Some("ipv6") => Some(Family::V6),
            Some(other) => return Err(self.ctx(format!("family {other:?}: use ipv4 or ipv6"))),
        };
        Ok(match (self.vips.first(), family) {
            (Some(first), Some(f)) if first.addr().is_ipv6() != (f == Family::V6) => {
                return Err(self.ctx(format!("family {f} but {} is not", first.addr())));
            }
            (Some(first), _) => first.addr().is_ipv6(),
            (None, _) if !self.kubernetes => {
                return Err(self.ctx("no virtual addresses (--vip)".into()));
            }
            (None, f) => f == Some(Family::V6),
        })
    }

    /// The addresses and peers: one family, link-local IPv6 peers, no address a peer.
    fn check_addresses(&self, v6: bool) -> Result<(), ConfigError> {
        if self.kubernetes && !self.vips.is_empty() {
            return Err(self.ctx(
                "with --kubernetes a group's addresses come from the Services; remove its vips"
                    .into(),
            ));
        }
        if self.vips.iter().any(|v| v.addr().is_ipv6() != v6) {
            return Err(self.ctx("mixes IPv4 and IPv6 addresses; use one group per family".into()));
        }
        if let Some(v) = self.vips.iter().find(|v| !assignable(v)) {
            return Err(self.ctx(format!(
                "{v} cannot be a virtual address (unspecified, multicast, loopback, broadcast or a /0 prefix)"
            )));
        }
        if !self.peers.is_empty() && !self.unicast_peers.is_empty() {
            return Err(self.ctx(
                "peers and unicast peers together: a unicast group hears only its unicast peers already".into(),
            ));
        }
        for (what, peers) in [
            ("unicast peers", &self.unicast_peers),
            ("peers", &self.peers),
        ] {
            if peers.iter().any(|p| p.is_ipv6() != v6) {
                return Err(self.ctx(format!("{what} must be of the virtual addresses' family")));
            }
            if peers
                .iter()
                .any(|p| matches!(p, IpAddr::V6(a) if !a.is_unicast_link_local()))
            {
                return Err(self.ctx(format!(
                    "IPv6 {what} must be link-local addresses (fe80::/10): IPv6 adverts come from those"
                )));
            }
            if let Some(v) = self.vips.iter().find(|v| peers.contains(&v.addr())) {
                return Err(self.ctx(format!("{} is both a virtual address and a peer", v.addr())));
            }
        }
        Ok(())
    }

    /// The v2 password, from `auth_pass` or `auth_pass_file`.
    fn auth(&self, version: Version) -> Result<Option<Password>, ConfigError> {
        let secret = match (&self.auth_pass, &self.auth_pass_file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(self.ctx("auth_pass and auth_pass_file: set one".into()));
            }
            (Some(p), None) => p.clone().into_bytes(),
            (None, Some(path)) => {
                let mut b = std::fs::read(path).map_err(|e| ConfigError::Read(path.clone(), e))?;
                if b.ends_with(b"\n") {
                    b.pop();
                    if b.ends_with(b"\r") {
                        b.pop();
                    }
                }
                b
            }
        };
        if version != Version::V2 {
            return Err(self.ctx(
                "authentication is VRRP v2 only (v3 has no authentication field); set vrrp_version 2"
                    .into(),
            ));
        }
        Password::new(&secret).map(Some).ok_or_else(|| {
            self.ctx(format!(
                "the password must be 1–8 bytes without NUL (it has {}; keepalived would cut it to 8, so write the 8 that count)",
                secret.len()
            ))
        })
    }

    /// The protocol version, with the advert interval it allows.
    fn version(&self, v6: bool) -> Result<Version, ConfigError> {
        let interval = self.advert_interval;
        match self.version {
            3 => {
                let max = Duration::from_millis(u64::from(MAX_INTERVAL_CS) * 10);
                if interval < Duration::from_millis(10) || interval > max {
                    return Err(self.ctx(format!("v3 advert interval must be 10ms–{max:?}")));
                }
                Ok(Version::V3)
            }
            2 => {
                if v6 {
                    return Err(self.ctx("VRRP v2 is IPv4 only".into()));
                }
                if interval.subsec_nanos() != 0
                    || interval.as_secs() == 0
                    || interval.as_secs() > 255
                {
                    return Err(self.ctx("v2 advert interval must be whole seconds, 1–255".into()));
                }
                Ok(Version::V2)
            }
            v => Err(self.ctx(format!("VRRP version {v}: use 3 or 2"))),
        }
    }
}
