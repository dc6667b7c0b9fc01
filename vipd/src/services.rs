//! Kubernetes objects as assignment and announcing see them, free of I/O: a Service → [`Svc`],
//! the legacy kube-keepalived-vip ConfigMap → a map of kept addresses, addresses → VRRP
//! groups ([`spread`] by the rendezvous hash [`pick_group`], with the endpoint rule of
//! `Local` Services), the status patch that publishes the addresses, and [`Fresh`]: what the
//! Lease holder plans from.
//!
//! # The endpoint rule: `Local` Services' addresses follow their endpoints
//!
//! kube-proxy drops traffic for a Service with `externalTrafficPolicy: Local` on a node that
//! runs none of its ready endpoints. So an address of such a Service must be held only by a
//! node that runs one. A group's master holds every address of the group, and a group holds
//! many Services' addresses, so no priority can follow one Service's endpoints; instead the
//! address goes to a group whose master can hold it ([`spread`] with [`Endpoints`]):
//! - **gate**: a node lists a `Local` address in its groups only while it runs a ready endpoint
//!   of the Service (a node without one never holds it, whichever group it masters);
//! - **pick**: the groups of the address's family in rendezvous order ([`ranked_groups`]); the
//!   first whose current master runs a ready endpoint, or whose master this node does not know
//!   (each group knows its master from the adverts; the source → node map comes from the vipd
//!   Pods). Deferring to an unknown master is what keeps two nodes from holding one address
//!   when their views differ (one knows a group's master, another does not yet, or has it in
//!   fault): a node holds the address only in the group it masters, and every group ranked
//!   before it is known to it to have a master without an endpoint — a fact no other node can
//!   see differently, so no other node picks a later group it masters. An incomplete view can
//!   leave the address unheld for a while; never held twice. When every group's master is
//!   known and none runs an endpoint, the address is held nowhere ([`Spread::unheld`]):
//!   reachable nowhere, but never on a node that drops its traffic. With at least as many
//!   groups as nodes, spread by `priority: auto`, most nodes master a group.
//!
//! When the master of the address's group changes to a node without an endpoint, the new
//! master does not hold it (gate) and every node picks another group within one pass: the
//! address moves with a gap of about the time the nodes take to see the new master.
//!
//! # Planning from fresh data
//!
//! The watch cache can lag: an event lost or late, or the status the leader wrote a moment ago
//! not yet seen. Planning from it can give an address twice (a Service whose address the cache
//! does not show looks like a free address). So the Lease holder plans from [`Fresh`]:
//! - on each takeover it lists the Services without a resourceVersion (a quorum read, served
//!   from etcd, never from the API server's cache) and that list corrects the cache for every
//!   Service it shows differently ([`Fresh::listed`]);
//! - each status it writes corrects the cache for that Service with the server's answer
//!   ([`Fresh::wrote`]): write-through;
//! - a correction holds until the cache's version of that Service moves (the watch has caught
//!   up with it, or with something newer) ([`Fresh::view`]). resourceVersions are compared
//!   only for equality: they are opaque.
//!
//! On losing the Lease the corrections are forgotten ([`Fresh::forget`]): a standby only
//! announces, and the next takeover lists again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use crate::ipam::{Family, Kind, Svc};

/// Annotation with the addresses a Service asks for, comma-separated (one per family).
pub const REQUEST_ANNOTATION: &str = "fedplane.io/load-balancer-ips";
/// Annotation naming the pool a Service's addresses come from.
pub const POOL_ANNOTATION: &str = "fedplane.io/address-pool";
/// The default `spec.loadBalancerClass` fedplane-vipd serves (besides Services with none).
pub const DEFAULT_CLASS: &str = "fedplane.io/vipd";

/// `namespace/name` of a Service.
pub fn key_of(s: &Service) -> String {
    format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or("default"),
        s.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The Service as assignment sees it; `class` is the `loadBalancerClass` we serve.
pub fn svc_of(s: &Service, class: &str) -> Svc {
    let spec = s.spec.clone().unwrap_or_default();
    let kind = match spec.type_.as_deref() {
        Some("LoadBalancer") => match spec.load_balancer_class.as_deref() {
            None => Kind::Ours,
            Some(c) if c == class => Kind::Ours,
            Some(_) => Kind::Foreign,
        },
        _ => Kind::NotLoadBalancer,
    };
    let annotations = s.metadata.annotations.clone().unwrap_or_default();
    // spec.ipFamilies, else the families of the cluster IPs, else IPv4; each once, in order.
    let mut listed: Vec<Family> = spec
        .ip_families
        .iter()
        .flatten()
        .map(|f| if f == "IPv6" { Family::V6 } else { Family::V4 })
        .collect();
    if listed.is_empty() {
        listed = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|ip| Some(Family::of(ip.parse().ok()?)))
            .collect();
    }
    let mut families: Vec<Family> = Vec::new();
    for f in listed {
        if !families.contains(&f) {
            families.push(f);
        }
    }
    if families.is_empty() {
        families.push(Family::V4);
    }
    let (requested, bad_request) = match (
        annotations.get(REQUEST_ANNOTATION),
        spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()),
    ) {
        (Some(list), _) => parse_request(list, &format!("annotation {REQUEST_ANNOTATION}")),
        (None, Some(ip)) => parse_request(ip, "spec.loadBalancerIP"),
        (None, None) => (Vec::new(), None),
    };
    let current = status_addresses(s).collect();
    Svc {
        key: key_of(s),
        created: s
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        kind,
        families: if kind == Kind::Ours {
            families
        } else {
            Vec::new()
        },
        requested,
        bad_request,
        pool: annotations.get(POOL_ANNOTATION).cloned(),
        current,
    }
}

/// The addresses in a Service's `status.loadBalancer.ingress` (entries without a parsable
/// `ip` skipped).
pub fn status_addresses(s: &Service) -> impl Iterator<Item = IpAddr> + '_ {
    s.status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
}

fn parse_request(list: &str, what: &str) -> (Vec<IpAddr>, Option<String>) {
    let mut ips = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse() {
            Ok(ip) => ips.push(ip),
            Err(_) => {
                return (
                    Vec::new(),
                    Some(format!("{what}: {part:?} is not an IP address")),
                );
            }
        }
    }
    (ips, None)
}

/// The legacy kube-keepalived-vip ConfigMap (`"10.4.0.50": "default/echoheaders"`, the value
/// optionally followed by `:PROXY` or `:` and a port mode) → address → `namespace/name`, and
/// the entries that make no sense, with why.
pub fn legacy_map(data: &BTreeMap<String, String>) -> (BTreeMap<IpAddr, String>, Vec<String>) {
    let mut map = BTreeMap::new();
    let mut ignored = Vec::new();
    for (k, v) in data {
        let Ok(ip) = k.trim().parse::<IpAddr>() else {
            ignored.push(format!("{k:?}: not an IP address"));
            continue;
        };
        let target = v.split(':').next().unwrap_or_default().trim();
        match target.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                map.insert(ip, target.to_owned());
            }
            _ => ignored.push(format!("{k}: {v:?} is not namespace/name")),
        }
    }
    (map, ignored)
}

/// Which VRRP group: its family and VRID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupId {
    /// The family of its addresses.
    pub family: Family,
    /// Its VRID.
    pub vrid: u8,
}

/// What the endpoint rule needs to know (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// This node's name.
    pub node: String,
    /// Each address of a `Local` Service → the nodes that run a ready endpoint of it.
    pub local: BTreeMap<IpAddr, BTreeSet<String>>,
    /// The node of each group's current master, where known (absent: unknown).
    pub masters: BTreeMap<GroupId, String>,
}

impl Endpoints {
    /// The addresses of the `Local` Services among `services` → the nodes with a ready
    /// endpoint of their Service (`ready`: per `namespace/name`).
    pub fn local_addresses<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        ready: &BTreeMap<String, BTreeSet<String>>,
    ) -> BTreeMap<IpAddr, BTreeSet<String>> {
        let mut out = BTreeMap::new();
        for s in services {
            let local = s
                .spec
                .as_ref()
                .and_then(|sp| sp.external_traffic_policy.as_deref())
                == Some("Local");
            if !local {
                continue;
            }
            let nodes = ready.get(&key_of(s)).cloned().unwrap_or_default();
            for ip in status_addresses(s) {
                out.insert(ip, nodes.clone());
            }
        }
        out
    }
}

/// Where this node puts the addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spread {
    /// Each group's addresses, in the order of the groups.
    pub per_group: Vec<BTreeSet<IpAddr>>,
    /// Addresses of a family without a group here.
    pub homeless: BTreeSet<IpAddr>,
    /// `Local` addresses this node leaves out: it runs no ready endpoint of their Service.
    pub gated: usize,
    /// `Local` addresses held nowhere: every group's master is known and none runs a ready
    /// endpoint.
    pub unheld: BTreeSet<IpAddr>,
}

/// Spreads the addresses over the groups, in the order of `groups`. Each address goes to one
/// group of its family by [`pick_group`]; with `endpoints`, a `Local` address only where this
/// node runs a ready endpoint, to a group whose master runs one (see the module docs).
pub fn spread(
    addresses: &BTreeSet<IpAddr>,
    groups: &[GroupId],
    endpoints: Option<&Endpoints>,
) -> Spread {
    let mut out = Spread {
        per_group: vec![BTreeSet::new(); groups.len()],
        ..Spread::default()
    };
    for ip in addresses {
        let family = Family::of(*ip);
        let vrids: Vec<u8> = groups
            .iter()
            .filter(|g| g.family == family)
            .map(|g| g.vrid)
            .collect();
        let mut picked = pick_group(*ip, &vrids);
        if let Some((e, ready)) = endpoints.and_then(|e| Some((e, e.local.get(ip)?))) {
            let can_hold = ranked_groups(*ip, &vrids).into_iter().find(|vrid| {
                e.masters
                    .get(&GroupId {
                        family,
                        vrid: *vrid,
                    })
                    .is_none_or(|node| ready.contains(node))
            });
            match can_hold {
                Some(vrid) => picked = Some(vrid),
                None if !vrids.is_empty() => {
                    out.unheld.insert(*ip);
                }
                None => {}
            }
            if !ready.contains(&e.node) {
                out.gated += 1;
                continue;
            }
        }
        let picked = picked.map(|vrid| GroupId { family, vrid });
        match picked.and_then(|id| groups.iter().position(|g| *g == id)) {
            Some(i) => {
                out.per_group[i].insert(*ip);
            }
            None => {
                out.homeless.insert(*ip);
            }
        }
    }
    out
}

/// The merge patch that sets a Service's `status.loadBalancer.ingress` to `ips` (none: `{}`).
pub fn status_patch(ips: &[IpAddr]) -> Value {
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    json!({"status": {"loadBalancer": if ingress.is_empty() {
        json!({"ingress": null})
    } else {
        json!({"ingress": ingress})
    }}})
}

/// Which of the groups `vrids` (those of the address's family) announces `ip`: the one with
/// the highest hash (FNV-1a, then MurmurHash3's finalizer) of (VRID, address). This is rendezvous hashing: every node picks the
/// same group whatever the order of its list, and adding a group moves only the addresses the
/// new group wins.
pub fn pick_group(ip: IpAddr, vrids: &[u8]) -> Option<u8> {
    vrids
        .iter()
        .copied()
        .max_by_key(|v| (rendezvous(ip, *v), *v))
}

/// The groups `vrids` in rendezvous order for `ip`: [`pick_group`]'s choice first, then the
/// one it would choose without it, and so on.
pub fn ranked_groups(ip: IpAddr, vrids: &[u8]) -> Vec<u8> {
    let mut out = vrids.to_vec();
    out.sort_unstable_by_key(|v| std::cmp::Reverse((rendezvous(ip, *v), *v)));
    out.dedup();
    out
}

/// The rendezvous hash of (VRID, address): FNV-1a, then MurmurHash3's finalizer.
fn rendezvous(ip: IpAddr, vrid: u8) -> u64 {
    let octets = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
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
}

/// One correction of the watch cache.
#[derive(Debug, Clone)]
struct Fix {
    /// The Service's resourceVersion in the cache when the correction was made (`None`: the
    /// cache did not have it).
    cache_version: Option<String>,
    /// The Service as it is (`None`: deleted).
    object: Option<Arc<Service>>,
}

/// The watch cache as the Lease holder plans from it, corrected by a quorum list taken at
/// takeover and by its own writes (see the module docs).
#[derive(Debug, Default)]
pub struct Fresh {
    fixes: HashMap<String, Fix>,
}

fn cache_versions(cache: &[Arc<Service>]) -> HashMap<String, Option<String>> {
    cache
        .iter()
        .map(|s| (key_of(s), s.metadata.resource_version.clone()))
        .collect()
}

impl Fresh {
    /// A quorum list, `listed`, taken while the cache held `cache`: it replaces every
    /// correction and corrects each Service the cache has differently, missing or extra.
    /// Returns how many Services the cache had wrong.
    pub fn listed(&mut self, cache: &[Arc<Service>], listed: Vec<Service>) -> usize {
        self.fixes.clear();
        let mut cached = cache_versions(cache);
        let mut seen = HashSet::new();
        for s in listed {
            let key = key_of(&s);
            let cache_version = cached.remove(&key).flatten();
            seen.insert(key.clone());
            if cache_version != s.metadata.resource_version {
                let object = Some(Arc::new(s));
                self.fixes.insert(
                    key,
                    Fix {
                        cache_version,
                        object,
                    },
                );
            }
        }
        // In the cache, not in the list: deleted.
        for (key, cache_version) in cached {
            if !seen.contains(&key) {
                self.fixes.insert(
                    key,
                    Fix {
                        cache_version,
                        object: None,
                    },
                );
            }
        }
        self.fixes.len()
    }

    /// We wrote `written` (the server's answer) while the cache had the Service at
    /// `cache_version`: plan from it until the cache moves.
    pub fn wrote(&mut self, cache_version: Option<String>, written: Service) {
        self.fixes.insert(
            key_of(&written),
            Fix {
                cache_version,
                object: Some(Arc::new(written)),
            },
        );
    }

    /// The Services to plan from: `cache` with the corrections still due. A correction whose
    /// Service the cache now has at another version is dropped (the watch caught up).
    pub fn view(&mut self, cache: &[Arc<Service>]) -> Vec<Arc<Service>> {
        if self.fixes.is_empty() {
            return cache.to_vec();
        }
        let cached = cache_versions(cache);
        self.fixes
            .retain(|key, fix| cached.get(key).cloned().flatten() == fix.cache_version);
        let mut out: Vec<Arc<Service>> = cache
            .iter()
            .filter(|s| !self.fixes.contains_key(&key_of(s)))
            .cloned()
            .collect();
        out.extend(self.fixes.values().filter_map(|f| f.object.clone()));
        out
    }

    /// The Lease is lost: no more corrections.
    pub fn forget(&mut self) {
        self.fixes.clear();
    }

    /// How many Services the cache has wrong, as last known.
    pub fn len(&self) -> usize {
        self.fixes.len()
    }

    /// Whether the cache is right, as last known.
    pub fn is_empty(&self) -> bool {
        self.fixes.is_empty()
    }
}

#[cfg(test)]
mod tests;
