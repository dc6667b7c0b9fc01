//! BIRD 2, the BGP speaker beside fedplane-vipd, free of I/O: its configuration rendered from
//! the BGP settings and the pools ([`render`]), and its control socket's replies read
//! ([`Reply`], [`protocols`], [`exported`]).
//!
//! fedplane-vipd writes each announced route into a kernel table of its own (`bgp.table`,
//! protocol [`ROUTE_PROTO`]); BIRD learns that table (`learn`, asynchronously through netlink:
//! a route reaches the peers within tens of milliseconds) and exports only those routes to the
//! peers, with each pool's communities. Nothing BIRD learns is written back to the kernel, and
//! it imports nothing from the peers. A route change never touches the configuration; a change
//! of peers or pools renders a new one, which BIRD reconfigures to (only the sessions whose
//! settings changed restart).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use super::config::{BgpSettings, Community, Peer, selects};
use crate::ipam::{Mode, Pools};

/// The kernel route protocol of vipd's routes (`proto 102`): what BIRD exports.
pub const ROUTE_PROTO: u8 = 102;

/// The BIRD protocol name of a peer (`tor-a` → `peer_tor_a`).
pub fn protocol_name(peer: &str) -> String {
    format!("peer_{}", peer.replace('-', "_"))
}

fn community(c: Community) -> String {
    match c {
        Community::Standard(a, b) => format!("bgp_community.add(({a},{b}));"),
        Community::Large(a, b, c) => format!("bgp_large_community.add(({a},{b},{c}));"),
    }
}

/// Whether BIRD can carry `s` as a quoted string (its syntax has no escapes: no `"`, no
/// backslash), and it holds no control character (a NUL would cut a password short).
pub fn quotable(s: &str) -> bool {
    !s.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

/// What [`render`] needs besides the settings.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    /// The node's labels (peers' node selectors).
    pub labels: &'a BTreeMap<String, String>,
    /// The router ID.
    pub router_id: Ipv4Addr,
    /// The TCP-MD5 password of each peer that has one, read from its file by the caller (which
    /// refuses one BIRD cannot quote, [`quotable`]).
    pub passwords: &'a BTreeMap<String, String>,
}

/// BIRD's configuration for this node: the peers its labels select, each exporting vipd's
/// routes with their pools' communities.
pub fn render(bgp: &BgpSettings, pools: &Pools, node: &Node<'_>) -> String {
    let mut c = String::new();
    let table = bgp.table;
    let _ = writeln!(
        c,
        "# Written by fedplane-vipd from its bgp: settings and pools; rewritten on every change.\n\
         log stderr all;\nrouter id {};\n\
         protocol device {{ scan time 60; }}\n\
         ipv4 table fedplane_v4;\nipv6 table fedplane_v6;",
        node.router_id
    );
    for (family, name) in [("ipv4", "fedplane_v4"), ("ipv6", "fedplane_v6")] {
        let _ = writeln!(
            c,
            "protocol kernel fedplane_kernel_{family} {{\n  \
             {family} {{ table {name}; import all; export none; }};\n  \
             kernel table {table};\n  learn;\n  scan time 60;\n}}"
        );
    }
    let peers: Vec<&Peer> = bgp
        .peers
        .iter()
        .filter(|p| selects(&p.node_selector, node.labels))
        .collect();
    if peers.iter().any(|p| p.bfd.is_some()) {
        let _ = writeln!(c, "protocol bfd fedplane_bfd {{ }}");
    }
    // One filter for every peer: only vipd's routes, each with its pool's communities.
    let _ = writeln!(
        c,
        "filter fedplane_export {{\n  if krt_source != {ROUTE_PROTO} then reject;"
    );
    for pool in pools.iter().filter(|p| p.mode == Mode::Bgp) {
        let Some(b) = &pool.bgp else { continue };
        if b.communities.is_empty() {
            continue;
        }
        for family_v4 in [true, false] {
            let (agg, max) = if family_v4 {
                (b.aggregation_v4, 32)
            } else {
                (b.aggregation_v6, 128)
            };
            let set: std::collections::BTreeSet<String> = pool
                .cidrs()
                .into_iter()
                .filter(|n| n.addr().is_ipv4() == family_v4)
                .map(|n| {
                    let len = n.prefix_len().min(agg);
                    let wide = ipnet::IpNet::new(n.addr(), len).map_or(n, |w| w.trunc());
                    format!("{wide}{{{len},{max}}}")
                })
                .collect();
            if set.is_empty() {
                continue;
            }
            let adds: String = b
                .communities
                .iter()
                .map(|x| community(*x))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                c,
                "  # pool {}\n  if net ~ [ {} ] then {{ {adds} }}",
                pool.name,
                set.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let _ = writeln!(c, "  accept;\n}}");
    for p in peers {
        let family = match p.address {
            IpAddr::V4(_) => ("ipv4", "fedplane_v4"),
            IpAddr::V6(_) => ("ipv6", "fedplane_v6"),
        };
        let _ = writeln!(c, "protocol bgp {} {{", protocol_name(&p.name));
        let _ = writeln!(c, "  local as {};", bgp.asn);
        let _ = writeln!(c, "  neighbor {} port {} as {};", p.address, p.port, p.asn);
        if let Some(src) = p.source {
            let _ = writeln!(c, "  source address {src};");
        }
        let hold = p.hold_time.as_secs();
        let _ = writeln!(c, "  hold time {hold};");
        if hold > 0 {
            let _ = writeln!(c, "  keepalive time {};", (hold / 3).max(1));
        }
        if let Some(pw) = node.passwords.get(&p.name).filter(|pw| quotable(pw)) {
            let _ = writeln!(c, "  password \"{pw}\";");
        }
        if let Some(b) = p.bfd {
            let ms = b.interval.as_millis();
            let _ = writeln!(
                c,
                "  bfd {{ min rx interval {ms} ms; min tx interval {ms} ms; multiplier {}; }};",
                b.multiplier
            );
        }
        if let Some(t) = p.graceful_restart {
            let _ = writeln!(
                c,
                "  graceful restart on;\n  graceful restart time {};",
                t.as_secs()
            );
        } else {
            let _ = writeln!(c, "  graceful restart off;");
        }
        if p.ebgp_multihop > 1 {
            let _ = writeln!(c, "  multihop {};", p.ebgp_multihop);
        }
        let _ = writeln!(
            c,
            "  {} {{ table {}; import none; export filter fedplane_export; next hop self; }};\n}}",
            family.0, family.1
        );
    }
    c
}

/// A BGP session's state as BIRD reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// Down, idle or disabled.
    Down,
    /// Connect or Active: trying.
    Connecting,
    /// OpenSent or OpenConfirm.
    Opening,
    /// Established.
    Established,
}

impl Session {
    /// The value of `fedplane_vipd_bgp_session_state`.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Down => 0.0,
            Self::Connecting => 1.0,
            Self::Opening => 2.0,
            Self::Established => 3.0,
        }
    }
}

/// One reply of the control socket: every line's code and text, and whether it ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `(code, text)` per line; continuation lines (a leading space) carry the code before.
    pub lines: Vec<(u16, String)>,
    /// The last line's code: 0 ends a successful reply; 8000 and above are errors.
    pub code: u16,
}

impl Reply {
    /// Reads one reply from `text` (whole lines); `None` until the last line is there.
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = Vec::new();
        let mut code = 0u16;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(' ') {
                lines.push((code, rest.to_owned()));
                continue;
            }
            let (num, sep_rest) = line.split_at_checked(4)?;
            code = num.parse().ok()?;
            let mut chars = sep_rest.chars();
            let sep = chars.next().unwrap_or(' ');
            lines.push((code, chars.as_str().to_owned()));
            if sep == ' ' {
                return Some(Self { lines, code });
            }
        }
        None
    }

    /// Whether BIRD refused or failed the command.
    pub fn is_error(&self) -> bool {
        self.code >= 8000
    }

    /// Every line's text, joined.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The BGP sessions in a `show protocols` reply: BIRD protocol name → state.
pub fn protocols(reply: &Reply) -> BTreeMap<String, Session> {
    reply
        .lines
        .iter()
        .filter(|(code, _)| *code == 1002)
        .filter_map(|(_, line)| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // name proto table state since [info…]
            if f.len() < 4 || f[1] != "BGP" {
                return None;
            }
            let info = f.get(5..).map(|i| i.join(" ")).unwrap_or_default();
            let state = if f[3] == "up" && info.starts_with("Established") {
                Session::Established
            } else if info.starts_with("OpenSent") || info.starts_with("OpenConfirm") {
                Session::Opening
            } else if info.starts_with("Connect") || info.starts_with("Active") {
                Session::Connecting
            } else {
                Session::Down
            };
            Some((f[0].to_owned(), state))
        })
        .collect()
}

/// The routes a protocol exports, from a `show protocols all NAME` reply
/// (`Routes: 0 imported, 4 exported, 0 preferred`).
pub fn exported(reply: &Reply) -> Option<u64> {
    reply.lines.iter().find_map(|(_, line)| {
        let rest = line.trim().strip_prefix("Routes:")?;
        rest.split(',').find_map(|part| {
            part.trim()
                .strip_suffix(" exported")
                .and_then(|n| n.trim().parse().ok())
        })
    })
}

#[cfg(test)]
mod tests;
