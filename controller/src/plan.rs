//! The record planner: cluster views → the desired etcd keys and values (a pure function), and
//! the difference between that and the keys we own.
//!
//! For each federated Service `<svc>.<ns>` (present in at least one cluster), with `<fed>` the
//! federation and `<domain>` the zone:
//!
//! | level | name | records |
//! |---|---|---|
//! | global | `<svc>.<ns>.<fed>.svc.<domain>` | A/AAAA of every healthy cluster; none when no cluster is healthy |
//! | region | `<svc>.<ns>.<fed>.svc.<region>.<domain>` | A/AAAA of the healthy clusters with ready endpoints in the region, else a CNAME to the global name |
//! | zone | `<svc>.<ns>.<fed>.svc.<zone>.<region>.<domain>` | A/AAAA of the healthy clusters with ready endpoints in the zone, else a CNAME to the region name |
//!
//! A host name (`--source ingress`, `gateway-*`, `dnsendpoint`) is one name, the host itself:
//! the addresses of every cluster where its object is healthy, chosen by its strategy (none
//! when none is healthy), and a DNSEndpoint's TXT, SRV and MX records (every cluster's, once
//! each) with its `recordTTL`. Nested names of different objects, and `_` names not below
//! their own object's name, are refused ([`refused_hosts`]).
//!
//! Each named port of the Service (of the first cluster that has it) gets an SRV record at
//! each level, `_<port>._<protocol>.<level name>`, as kube-dns published them: the port, and
//! as target the name that holds the addresses for that level — the level's own name, or,
//! where it falls back, the region or global name its CNAME chain ends at (an SRV target must
//! not be an alias, RFC 2782). No level holds addresses (no healthy cluster): no SRV records.
//!
//! Zone and region names exist for every locality of every member cluster (its nodes'
//! localities), whether it has the Service or not (a pod asks its own cluster's zone name first,
//! through the federation short names, and must be sent on to the region and global names), and
//! every locality where the Service has ready endpoints. A healthy cluster whose
//! ready endpoints have no known locality counts in all of its own localities.
//!
//! Keys (SkyDNS layout, labels reversed under the prefix):
//! - a hostname-only ingress entry: `<name key>/<cluster>/h-<hash>`, the hostname as `host`: a
//!   name whose records are all such is a CNAME to the first (fedplane-dns, CoreDNS); beside
//!   addresses it is left out of the answer;
//! - an address: `<name key>/<cluster>/<address label>`, e.g.
//!   `/skydns/com/example/svc/federation/default/hello-world/fcp/10-210-1-68`: one subtree per
//!   cluster, so clusters never write the same key;
//! - a CNAME: `<name key>/_cname` (`_` cannot start a cluster name);
//! - an SRV record: `<SRV name key>/_srv`, e.g. `…/hello-world/_tcp/_http/_srv`;
//! - a DNSEndpoint's TXT, SRV, MX record: `<name key>/_t-<hash>`, `_s-<hash>`, `_m-<hash>`
//!   (`text`; `host`, `port`, `priority`, `weight`; `host`, `priority`, `mail`).
//!
//! Values: `{"host":…,"ttl":…,"managed-by":"fedplane-controller/<fed>"}`. The `managed-by`
//! field is our ownership marker: only keys that carry ours are ever changed or deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use imbl::ordmap::DiffItem;
use serde::{Deserialize, Serialize};

use crate::policy::Strategy;
use crate::view::{
    ClusterView, Extra, HostEntry, Kind, Locality, Regarding, ServiceHealth, ServiceId,
};

/// JSON field that marks a value as written by us.
pub const OWNER_FIELD: &str = "managed-by";
/// Leaf label of a CNAME record.
pub const CNAME_LEAF: &str = "_cname";
/// Leaf label of an SRV record.
pub const SRV_LEAF: &str = "_srv";

/// Where and how records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// Key prefix without a trailing `/`, e.g. `/skydns`.
    pub prefix: String,
    /// DNS zone without the trailing dot, lower case, e.g. `example.com`.
    pub domain: String,
    /// Federation name, e.g. `federation`.
    pub federation: String,
    /// TTL of every record, in seconds.
    pub ttl: u32,
}

impl Naming {
    /// Our ownership marker: `fedplane-controller/<federation>`.
    pub fn owner(&self) -> String {
        format!("fedplane-controller/{}", self.federation)
    }

    fn base(&self, svc: &ServiceId) -> String {
        format!("{}.{}.{}.svc", svc.name, svc.namespace, self.federation)
    }

    /// The global name of a Service.
    pub fn global_name(&self, svc: &ServiceId) -> String {
        format!("{}.{}", self.base(svc), self.domain)
    }

    /// The region name of a Service.
    pub fn region_name(&self, svc: &ServiceId, region: &str) -> String {
        format!("{}.{region}.{}", self.base(svc), self.domain)
    }

    /// The zone name of a Service.
    pub fn zone_name(&self, svc: &ServiceId, l: &Locality) -> String {
        format!("{}.{}.{}.{}", self.base(svc), l.zone, l.region, self.domain)
    }

    /// The etcd key of a DNS name: the prefix, then the labels in reverse order.
    pub fn key(&self, name: &str) -> String {
        let mut key = self.prefix.clone();
        for label in name.trim_end_matches('.').rsplit('.') {
            key.push('/');
            key.push_str(label);
        }
        key
    }
}

/// The label under which an address is stored: `10.210.1.68` → `10-210-1-68`,
/// `fd00::1` → `fd00--1`.
pub fn address_label(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The label under which an ingress hostname is stored: `h-` and 16 hex digits of its FNV-1a
/// hash (a hostname may be longer than a label).
pub fn hostname_label(host: &str) -> String {
    format!("h-{:016x}", fnv1a(host))
}

/// FNV-1a, 64 bits.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The JSON value of one of our records.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnedValue {
    /// Address or CNAME target (or SRV target, mail exchanger); empty for a TXT record.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// Ownership marker.
    #[serde(rename = "managed-by")]
    pub managed_by: String,
    /// Zone of the address (`closest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Region of the address (`closest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Relative weight of the address (`weighted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The port of an SRV record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// SRV priority, MX preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// TXT data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// An MX record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mail: bool,
}

/// The owner marker of a stored value, if it is JSON with one.
pub fn owner_of(value: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Marker {
        #[serde(rename = "managed-by")]
        managed_by: Option<String>,
    }
    serde_json::from_slice::<Marker>(value).ok()?.managed_by
}

/// Desired state: key → value.
pub type Desired = BTreeMap<String, String>;

/// Computes every record the clusters call for.
pub fn plan(naming: &Naming, clusters: &[ClusterView]) -> Desired {
    plan_refusing(naming, clusters, &refused_hosts(naming, clusters))
}

/// [`plan`], given the views' [`refused_hosts`].
pub fn plan_refusing(naming: &Naming, clusters: &[ClusterView], refused: &Refused) -> Desired {
    let mut out = Desired::new();
    let services: BTreeSet<&ServiceId> = clusters.iter().flat_map(|c| c.services.keys()).collect();
    for svc in services {
        plan_service(naming, clusters, svc, &mut out);
    }
    let hosts: BTreeSet<&String> = clusters.iter().flat_map(|c| c.hosts.keys()).collect();
    for host in hosts.into_iter().filter(|h| !refused.contains_key(*h)) {
        plan_host(naming, clusters, host, &mut out);
    }
    out
}

/// Brings `desired` (the plan of `old`) to the plan of `new`, recomputing only the Services
/// and Ingress hosts whose health changed in some cluster. Returns the keys that may have changed, or `None`
/// when the clusters or their localities changed and `desired` was recomputed whole.
pub fn replan(
    naming: &Naming,
    old: &[ClusterView],
    new: &[ClusterView],
    desired: &mut Desired,
) -> Option<BTreeSet<String>> {
    replan_refusing(naming, old, new, desired, &mut refused_hosts(naming, old))
}

/// The key of one difference of two persistent maps.
pub fn diff_key<'a, K, V>(item: &DiffItem<'a, 'a, K, V>) -> &'a K {
    match item {
        DiffItem::Add(k, _) | DiffItem::Remove(k, _) | DiffItem::Update { new: (k, _), .. } => k,
    }
}

/// The hosts [`refused_hosts`] leaves without records, with why.
pub type Refused = BTreeMap<String, String>;

/// [`replan`], given `refused`, the [`refused_hosts`] of `old`, which becomes those of `new`.
/// They are computed again only when what they depend on changed: a host came, went or
/// changed keeper, Services appeared or all went, or a locality.
pub fn replan_refusing(
    naming: &Naming,
    old: &[ClusterView],
    new: &[ClusterView],
    desired: &mut Desired,
    refused: &mut Refused,
) -> Option<BTreeSet<String>> {
    let same_clusters = old.len() == new.len()
        && old
            .iter()
            .zip(new)
            .all(|(o, n)| o.name == n.name && o.localities == n.localities);
    if !same_clusters {
        *refused = refused_hosts(naming, new);
        // (The old plan goes first: two whole plans at once are the peak of memory.)
        desired.clear();
        *desired = plan_refusing(naming, new, refused);
        return None;
    }
    // The views are persistent maps: the diff of two versions of one skips what they share.
    let mut changed: BTreeSet<&ServiceId> = BTreeSet::new();
    let mut hosts: BTreeSet<&String> = BTreeSet::new();
    let any_services = |v: &[ClusterView]| v.iter().any(|c| !c.services.is_empty());
    let mut reshaped = any_services(old) != any_services(new);
    for (o, n) in old.iter().zip(new) {
        for d in o.services.diff(&n.services) {
            if let DiffItem::Add(_, h) | DiffItem::Update { new: (_, h), .. } = &d {
                reshaped |= !h.ready_localities.is_subset(&n.localities);
            }
            changed.insert(diff_key(&d));
        }
        for d in o.hosts.diff(&n.hosts) {
            reshaped |= !matches!(&d, DiffItem::Update { old: (_, a), new: (_, b) }
                if a.owner == b.owner && a.created == b.created);
            hosts.insert(diff_key(&d));
        }
    }
    // Which hosts are refused depends on every view: when that changes, plan whole.
    if reshaped {
        let now = refused_hosts(naming, new);
        if now != *refused {
            *refused = now;
            desired.clear();
            *desired = plan_refusing(naming, new, refused);
            return None;
        }
    }
    let refused = &*refused;
    let mut keys = BTreeSet::new();
    let mut patch = |plan_one: &dyn Fn(&[ClusterView], &mut Desired)| {
        let mut before = Desired::new();
        plan_one(old, &mut before);
        let mut after = Desired::new();
        plan_one(new, &mut after);
        for k in before.keys() {
            desired.remove(k);
        }
        keys.extend(before.into_keys());
        keys.extend(after.keys().cloned());
        desired.extend(after);
    };
    for svc in changed {
        patch(&|c, out| plan_service(naming, c, svc, out));
    }
    for host in hosts.into_iter().filter(|h| !refused.contains_key(*h)) {
        patch(&|c, out| plan_host(naming, c, host, out));
    }
    Some(keys)
}

/// The value of one of our records.
fn record_value(
    naming: &Naming,
    host: String,
    at: Option<&Locality>,
    weight: Option<u32>,
) -> String {
    serde_json::to_string(&OwnedValue {
        host,
        ttl: naming.ttl,
        managed_by: naming.owner(),
        zone: at.map(|l| l.zone.clone()),
        region: at.map(|l| l.region.clone()),
        weight,
        ..OwnedValue::default()
    })
    .unwrap_or_default()
}

/// The clusters where the entry `get` reads is healthy, with their localities and rank under
/// `strategy`; and every locality where it has ready endpoints.
fn healthy_clusters<'a>(
    clusters: &'a [ClusterView],
    strategy: &Strategy,
    get: impl Fn(&'a ClusterView) -> Option<&'a ServiceHealth>,
) -> (Vec<Healthy<'a>>, BTreeSet<&'a Locality>) {
    let mut zones = BTreeSet::new();
    let mut healthy = Vec::new();
    for (rank, c) in clusters.iter().enumerate() {
        let Some(h) = get(c) else {
            continue;
        };
        zones.extend(&h.ready_localities);
        if h.healthy() {
            let at = if h.ready_localities.is_empty() {
                c.localities.iter().collect()
            } else {
                h.ready_localities.iter().collect()
            };
            let rank = match strategy {
                Strategy::Failover(order) => order
                    .iter()
                    .position(|o| *o == c.name)
                    .unwrap_or(order.len() + rank),
                _ => rank,
            };
            healthy.push(Healthy {
                cluster: &c.name,
                ips: &h.ingress,
                hostnames: &h.hostnames,
                at,
                rank,
            });
        }
    }
    (healthy, zones)
}

/// Puts the addresses of the `picked` healthy clusters under `name`, chosen by `strategy`;
/// `None` when none is picked, else whether an address (not only hostnames) was written.
fn put_records(
    naming: &Naming,
    out: &mut Desired,
    name: &str,
    strategy: &Strategy,
    picked: Vec<&Healthy<'_>>,
) -> Option<bool> {
    let value = |host: String, at: Option<&Locality>, weight: Option<u32>| {
        record_value(naming, host, at, weight)
    };
    {
        let key = naming.key(name);
        let mut wrote_ip = false;
        for (h, how) in choose(strategy, picked.clone()) {
            wrote_ip |= !h.ips.is_empty();
            // A load balancer known by name: a name record (plain, whatever the strategy).
            // fedplane-dns (as CoreDNS) answers the addresses of a name when it has any, and
            // a CNAME to its first name record otherwise.
            for host in h.hostnames {
                let leaf = format!("{key}/{}/{}", h.cluster, hostname_label(host));
                out.insert(leaf, value(host.clone(), None, None));
            }
            for ip in h.ips {
                let leaf = format!("{key}/{}/{}", h.cluster, address_label(ip));
                match &how {
                    Written::Plain => {
                        out.insert(leaf, value(ip.to_string(), None, None));
                    }
                    Written::Weighted(w) => {
                        out.insert(leaf, value(ip.to_string(), None, Some(w.get(ip))));
                    }
                    Written::Located if h.at.len() <= 1 => {
                        out.insert(leaf, value(ip.to_string(), h.at.first().copied(), None));
                    }
                    Written::Located => {
                        // Healthy in several localities: a record in each, so a client of any
                        // of them finds the cluster at its own zone's step.
                        for l in &h.at {
                            let leaf = format!(
                                "{key}/{}/{}/{}/{}",
                                h.cluster,
                                l.region,
                                l.zone,
                                address_label(ip)
                            );
                            out.insert(leaf, value(ip.to_string(), Some(l), None));
                        }
                    }
                }
            }
        }
        (!picked.is_empty()).then_some(wrote_ip)
    }
}

/// The object that keeps `host` across the clusters: the oldest claim (creation time, then
/// kind and namespace/name; an unknown time last), so a tenant of another cluster cannot join
/// or take over a host by creating another object for it.
pub fn host_owner<'a>(clusters: &'a [ClusterView], host: &str) -> Option<&'a Regarding> {
    clusters
        .iter()
        .filter_map(|c| c.hosts.get(host))
        .min_by_key(|e| (e.created.is_empty(), &e.created, &e.owner))
        .map(|e| &e.owner)
}

/// The host names that get no record, with why. Every key below a name's key is one of its
/// records (SkyDNS), so nested names of different objects would mix their records:
///
/// - a name that is an ancestor of the federation's Service names: `svc.<domain>` and the
///   region and zone labels where Services have names (`<region>`, `<zone>.<region>`,
///   `svc.<region>`, `svc.<zone>.<region>`);
/// - of two nested names (one below the other, wildcards and `_` names included) claimed by
///   different objects, the younger ([`host_owner`]'s order), so nobody adds records to an
///   older name or takes it over by claiming one below it;
/// - a name whose first label starts with `_` (`_sip._tcp.app`, `_acme-challenge`) unless the
///   name it is about (without its `_` labels) is a name of the same object: nobody publishes
///   a TXT or SRV record for another's name, or for the zone.
///
/// Pure, and O(names × labels); the planner leaves them out, the loop logs them.
pub fn refused_hosts(naming: &Naming, clusters: &[ClusterView]) -> Refused {
    let mut out = BTreeMap::new();
    // Each name's keeper: (no creation time, creation time, owner).
    let mut keepers: BTreeMap<&str, (bool, &str, &Regarding)> = BTreeMap::new();
    for c in clusters {
        for (host, e) in &c.hosts {
            let k = (e.created.is_empty(), e.created.as_str(), &e.owner);
            keepers
                .entry(host.as_str())
                .and_modify(|old| *old = (*old).min(k))
                .or_insert(k);
        }
    }
    if keepers.is_empty() {
        return out;
    }
    let has_services = clusters.iter().any(|c| !c.services.is_empty());
    let mut reserved: BTreeSet<String> = BTreeSet::new();
    if has_services {
        reserved.insert(format!("svc.{}", naming.domain));
        let localities: BTreeSet<&Locality> = clusters
            .iter()
            .flat_map(|c| {
                c.localities
                    .iter()
                    .chain(c.services.values().flat_map(|h| &h.ready_localities))
            })
            .collect();
        for l in localities {
            for n in [
                l.region.clone(),
                format!("svc.{}", l.region),
                format!("{}.{}", l.zone, l.region),
                format!("svc.{}.{}", l.zone, l.region),
            ] {
                reserved.insert(format!("{n}.{}", naming.domain));
            }
        }
    }
    let apex = naming.domain.as_str();
    for (&host, keeper) in &keepers {
        if reserved.contains(host) {
            out.insert(
                host.to_owned(),
                "is an ancestor of the federation's Service names: it would answer their records"
                    .to_owned(),
            );
            continue;
        }
        // Its ancestors (up to the zone, not included) that are names too.
        let mut rest = host;
        while let Some((_, up)) = rest.split_once('.') {
            rest = up;
            if rest == apex {
                break;
            }
            let Some(other) = keepers.get(rest) else {
                continue;
            };
            if other.2 == keeper.2 {
                continue;
            }
            let (younger, why) = if other < keeper {
                (
                    host,
                    format!(
                        "is below {rest}, a name of the older {}: it would add records to that name",
                        other.2
                    ),
                )
            } else {
                (
                    rest,
                    format!(
                        "has {host} below it, a name of the older {}: it would answer that name's records",
                        keeper.2
                    ),
                )
            };
            out.entry(younger.to_owned()).or_insert(why);
        }
        if host.starts_with('_') {
            let about = host
                .split('.')
                .skip_while(|l| l.starts_with('_'))
                .collect::<Vec<_>>()
                .join(".");
            if keepers.get(about.as_str()).is_none_or(|k| k.2 != keeper.2) {
                out.entry(host.to_owned()).or_insert_with(|| {
                    format!("is an `_` name whose name {about} is not one of the same object's")
                });
            }
        }
    }
    out
}

/// Adds the records of one host to `out`: the addresses of every cluster where its owning
/// object ([`host_owner`]) is healthy, chosen by the strategy of the first cluster that has
/// it, and its other records (TXT, SRV, MX: every cluster's, once each); no levels, no
/// fallback.
fn plan_host(naming: &Naming, clusters: &[ClusterView], host: &str, out: &mut Desired) {
    let Some(owner) = host_owner(clusters, host) else {
        return;
    };
    fn owned<'a>(c: &'a ClusterView, host: &str, owner: &Regarding) -> Option<&'a HostEntry> {
        c.hosts.get(host).filter(|e| e.owner == *owner)
    }
    let Some(first) = clusters.iter().find_map(|c| owned(c, host, owner)) else {
        return;
    };
    let ttl_naming;
    let naming = match first.ttl {
        Some(ttl) if ttl != naming.ttl => {
            ttl_naming = Naming {
                ttl,
                ..naming.clone()
            };
            &ttl_naming
        }
        _ => naming,
    };
    let strategy = &first.health.policy.strategy;
    let (mut healthy, _) = healthy_clusters(clusters, strategy, |c| {
        owned(c, host, owner).map(|e| &e.health)
    });
    let extras: BTreeSet<&Extra> = clusters
        .iter()
        .filter_map(|c| owned(c, host, owner))
        .flat_map(|e| &e.extras)
        .collect();
    // A DNSEndpoint's CNAME beside other records of its name (from another cluster): the
    // alias would hide them; left out (a load balancer's hostname beside an address is
    // answered as the address, by fedplane-dns).
    if !extras.is_empty()
        || (owner.kind == Kind::DnsEndpoint && healthy.iter().any(|h| !h.ips.is_empty()))
    {
        for h in &mut healthy {
            h.hostnames = &[];
        }
    }
    put_records(naming, out, host, strategy, healthy.iter().collect());
    // fedplane-dns (as CoreDNS) reads a priority or preference of 0 as its default (10): a
    // name with a 0 has each one written 1 higher, so their order stands; a weight of 0 is 1.
    let shift = u16::from(extras.iter().any(|e| {
        matches!(
            e,
            Extra::Srv { priority: 0, .. } | Extra::Mx { preference: 0, .. }
        )
    }));
    let key = naming.key(host);
    for extra in extras {
        let mut value = OwnedValue {
            ttl: naming.ttl,
            managed_by: naming.owner(),
            ..OwnedValue::default()
        };
        let leaf = match extra {
            Extra::Text(text) => {
                value.text = Some(text.clone());
                "_t"
            }
            Extra::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                value.host.clone_from(target);
                value.port = Some(*port);
                value.priority = Some(priority.saturating_add(shift));
                value.weight = Some(u32::from(*weight).max(1));
                "_s"
            }
            Extra::Mx { preference, host } => {
                value.host.clone_from(host);
                value.priority = Some(preference.saturating_add(shift));
                value.mail = true;
                "_m"
            }
        };
        out.insert(
            format!("{key}/{leaf}-{:016x}", fnv1a(&format!("{extra:?}"))),
            serde_json::to_string(&value).unwrap_or_default(),
        );
    }
}

/// Adds the records of one Service to `out`.
fn plan_service(naming: &Naming, clusters: &[ClusterView], svc: &ServiceId, out: &mut Desired) {
    let owner = naming.owner();
    let value = |host: String, at: Option<&Locality>, weight: Option<u32>| {
        record_value(naming, host, at, weight)
    };
    // The first cluster that has the Service decides its strategy; a Service no cluster has
    // has no names.
    let Some(first) = clusters.iter().find_map(|c| c.services.get(svc)) else {
        return;
    };
    let strategy = &first.policy.strategy;
    let (healthy, ready_zones) = healthy_clusters(clusters, strategy, |c| c.services.get(svc));
    // Every member's localities, whether it has the Service or not: a pod there asks its own
    // zone name first (the federation short names), which must fall back, not be NXDOMAIN.
    let mut zones: BTreeSet<&Locality> = clusters.iter().flat_map(|c| &c.localities).collect();
    zones.extend(ready_zones);
    let put_addresses = |out: &mut Desired,
                         name: &str,
                         strategy: &Strategy,
                         filter: &dyn Fn(&BTreeSet<&Locality>) -> bool| {
        put_records(
            naming,
            out,
            name,
            strategy,
            healthy.iter().filter(|h| filter(&h.at)).collect(),
        )
    };
    // Each level's name and its SRV target: the name holding the addresses, itself or where
    // its CNAMEs end. A level of hostnames only is a CNAME to one: its SRV name would need a
    // target that is no alias, and an SRV record below it would sort before its hostname
    // records (`_` before letters) and become its CNAME: none there, nor below levels ending
    // their chain there.
    let mut levels: Vec<(String, Option<String>)> = Vec::new();
    let held_target = |held: Option<bool>, name: &str, fallback: Option<String>| match held {
        Some(true) => Some(name.to_owned()),
        Some(false) => None,
        None => fallback,
    };
    let global = naming.global_name(svc);
    let global_target = held_target(
        put_addresses(out, &global, strategy, &|_| true),
        &global,
        None,
    );
    levels.push((global.clone(), global_target.clone()));
    let regions: BTreeSet<&str> = zones.iter().map(|l| l.region.as_str()).collect();
    let mut region_targets: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for region in regions {
        let name = naming.region_name(svc, region);
        let held = put_addresses(out, &name, strategy, &|at| {
            at.iter().any(|l| l.region == region)
        });
        if held.is_none() {
            out.insert(
                format!("{}/{CNAME_LEAF}", naming.key(&name)),
                value(global.clone(), None, None),
            );
        }
        let target = held_target(held, &name, global_target.clone());
        region_targets.insert(region, target.clone());
        levels.push((name, target));
    }
    for l in zones {
        let name = naming.zone_name(svc, l);
        let held = put_addresses(out, &name, &Strategy::All, &|at| at.contains(l));
        if held.is_none() {
            out.insert(
                format!("{}/{CNAME_LEAF}", naming.key(&name)),
                value(naming.region_name(svc, &l.region), None, None),
            );
        }
        let fallback = region_targets.get(l.region.as_str()).cloned().flatten();
        let target = held_target(held, &name, fallback);
        levels.push((name, target));
    }
    for port in &first.ports {
        for (name, target) in &levels {
            let Some(target) = target else { continue };
            let srv = format!("_{}._{}.{name}", port.name, port.protocol);
            out.insert(
                format!("{}/{SRV_LEAF}", naming.key(&srv)),
                serde_json::to_string(&OwnedValue {
                    host: target.clone(),
                    ttl: naming.ttl,
                    managed_by: owner.clone(),
                    port: Some(port.port),
                    ..OwnedValue::default()
                })
                .unwrap_or_default(),
            );
        }
    }
}

/// A cluster where a Service is healthy.
struct Healthy<'a> {
    cluster: &'a str,
    /// Its ingress addresses.
    ips: &'a [IpAddr],
    /// Its ingress hostnames.
    hostnames: &'a [String],
    /// The localities it is healthy in.
    at: BTreeSet<&'a Locality>,
    /// Its place in the failover order (else its place in `--cluster` order).
    rank: usize,
}

/// How one cluster's address records are written under a global or region name.
#[derive(Debug, Clone, Copy)]
enum Written {
    /// The address alone.
    Plain,
    /// With the zone and region the cluster is healthy in (`closest`).
    Located,
    /// With each address's weight (`weighted`).
    Weighted(Weights),
}

/// Per-address weights of one cluster: each family's share of the cluster weight.
#[derive(Debug, Clone, Copy)]
struct Weights {
    v4: u32,
    v6: u32,
}

impl Weights {
    fn get(self, ip: &IpAddr) -> u32 {
        if ip.is_ipv4() { self.v4 } else { self.v6 }
    }
}

/// The clusters that answer a global or region name under `strategy`, out of those `picked`,
/// and how their records are written.
fn choose<'a, 'b>(
    strategy: &Strategy,
    picked: Vec<&'b Healthy<'a>>,
) -> Vec<(&'b Healthy<'a>, Written)> {
    let plain =
        |picked: Vec<&'b Healthy<'a>>| picked.into_iter().map(|h| (h, Written::Plain)).collect();
    match strategy {
        Strategy::All => plain(picked),
        Strategy::Closest => picked.into_iter().map(|h| (h, Written::Located)).collect(),
        Strategy::Failover(_) => plain(
            picked
                .into_iter()
                .min_by_key(|h| h.rank)
                .into_iter()
                .collect(),
        ),
        Strategy::Weighted(weights) => {
            let weighed: Vec<(&Healthy<'_>, u32)> = picked
                .iter()
                .filter_map(|h| weights.get(h.cluster).map(|w| (*h, *w)))
                .collect();
            if weighed.is_empty() {
                // No cluster with a weight is healthy: the others answer, as with `all`.
                return plain(picked);
            }
            let family = |v4: bool| {
                let counts = weighed
                    .iter()
                    .map(|(h, _)| h.ips.iter().filter(|ip| ip.is_ipv4() == v4).count() as u64);
                split_weights(&weighed, counts.collect())
            };
            let (v4, v6) = (family(true), family(false));
            weighed
                .iter()
                .enumerate()
                .map(|(i, (h, _))| {
                    (
                        *h,
                        Written::Weighted(Weights {
                            v4: v4[i],
                            v6: v6[i],
                        }),
                    )
                })
                .collect()
        }
    }
}

/// The weight of each address of each cluster, for clusters with `counts[i]` addresses of a
/// family, so that each cluster's addresses together weigh in proportion to its weight
/// (fedplane-dns picks one address by weight). Exact when the least common multiple of the
/// counts, times the heaviest weight, fits an SRV weight (65535): each address weighs
/// `w × lcm / n`; else each weighs `w × K / n` rounded (at least 1), with `K` as large as fits,
/// which keeps the shares within a percent or so of the weights.
fn split_weights(weighed: &[(&Healthy<'_>, u32)], counts: Vec<u64>) -> Vec<u32> {
    const LIMIT: u64 = 65_535;
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let heaviest = weighed
        .iter()
        .map(|(_, w)| u64::from(*w))
        .max()
        .unwrap_or(1);
    let lcm = counts.iter().filter(|n| **n > 0).try_fold(1u64, |l, &n| {
        Some(l / gcd(l, n) * n).filter(|l| l * heaviest <= LIMIT)
    });
    let scale = lcm.unwrap_or(LIMIT / heaviest);
    weighed
        .iter()
        .zip(&counts)
        .map(|((_, w), &n)| {
            let n = n.max(1);
            let w = u64::from(*w) * scale;
            // Exact when `scale` is the lcm; else rounded to the nearest.
            u32::try_from(((w + n / 2) / n).clamp(1, LIMIT)).unwrap_or(1)
        })
        .collect()
}

/// A key we own, as last read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    /// Its value.
    pub value: String,
    /// Its etcd mod revision (writes are conditional on it).
    pub mod_revision: i64,
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key we do not own yet.
    Create {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// A key we own, with a new value.
    Update {
        /// Key.
        key: String,
        /// New value.
        value: String,
        /// Its mod revision as we last saw it.
        mod_revision: i64,
    },
    /// A key we own that is no longer wanted.
    Delete {
        /// Key.
        key: String,
        /// Its mod revision as we last saw it.
        mod_revision: i64,
    },
}

impl Change {
    /// The key it writes.
    pub fn key(&self) -> &str {
        match self {
            Self::Create { key, .. } | Self::Update { key, .. } | Self::Delete { key, .. } => key,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Create { key, value } => write!(f, "+ {key} {value}"),
            Self::Update { key, value, .. } => write!(f, "~ {key} {value}"),
            Self::Delete { key, .. } => write!(f, "- {key}"),
        }
    }
}

/// The writes that turn `owned` into `desired`, in key order; empty when nothing changed.
pub fn diff(desired: &Desired, owned: &BTreeMap<String, Owned>) -> Vec<Change> {
    use std::cmp::Ordering;
    // Both maps are in key order: one merge pass, no lookups, no sort.
    let mut changes = Vec::new();
    let (mut want, mut have) = (desired.iter().peekable(), owned.iter().peekable());
    loop {
        let order = match (want.peek(), have.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((w, _)), Some((h, _))) => w.cmp(h),
        };
        match order {
            Ordering::Less => {
                let (key, value) = want.next().expect("peeked");
                changes.push(Change::Create {
                    key: key.clone(),
                    value: value.clone(),
                });
            }
            Ordering::Greater => {
                let (key, o) = have.next().expect("peeked");
                changes.push(Change::Delete {
                    key: key.clone(),
                    mod_revision: o.mod_revision,
                });
            }
            Ordering::Equal => {
                let ((key, value), (_, o)) =
                    (want.next().expect("peeked"), have.next().expect("peeked"));
                if o.value != *value {
                    changes.push(Change::Update {
                        key: key.clone(),
                        value: value.clone(),
                        mod_revision: o.mod_revision,
                    });
                }
            }
        }
    }
    changes
}

/// The writes for `keys` only (those [`replan`] reported), in key order.
pub fn diff_keys(
    desired: &Desired,
    owned: &BTreeMap<String, Owned>,
    keys: &BTreeSet<String>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for key in keys {
        match (desired.get(key), owned.get(key)) {
            (Some(value), None) => changes.push(Change::Create {
                key: key.clone(),
                value: value.clone(),
            }),
            (Some(value), Some(o)) if o.value != *value => changes.push(Change::Update {
                key: key.clone(),
                value: value.clone(),
                mod_revision: o.mod_revision,
            }),
            (None, Some(o)) => changes.push(Change::Delete {
                key: key.clone(),
                mod_revision: o.mod_revision,
            }),
            _ => {}
        }
    }
    changes
}

#[cfg(test)]
mod tests;
