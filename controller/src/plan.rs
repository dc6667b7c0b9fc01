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
//! Zone and region names exist for every locality of every cluster that has the Service (its
//! nodes' localities) and every locality where it has ready endpoints. A healthy cluster whose
//! ready endpoints have no known locality counts in all of its own localities.
//!
//! Keys (SkyDNS layout, labels reversed under the prefix):
//! - an address: `<name key>/<cluster>/<address label>`, e.g.
//!   `/skydns/com/example/svc/federation/default/hello-world/fcp/10-210-1-68`: one subtree per
//!   cluster, so clusters never write the same key;
//! - a CNAME: `<name key>/_cname` (`_` cannot start a cluster name).
//!
//! Values: `{"host":…,"ttl":…,"managed-by":"fedplane-controller/<fed>"}`. The `managed-by`
//! field is our ownership marker: only keys that carry ours are ever changed or deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::view::{ClusterView, Locality, ServiceId};

/// JSON field that marks a value as written by us.
pub const OWNER_FIELD: &str = "managed-by";
/// Leaf label of a CNAME record.
pub const CNAME_LEAF: &str = "_cname";

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

/// The JSON value of one of our records.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnedValue {
    /// Address or CNAME target.
    pub host: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// Ownership marker.
    #[serde(rename = "managed-by")]
    pub managed_by: String,
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
    let mut out = Desired::new();
    let services: BTreeSet<&ServiceId> = clusters.iter().flat_map(|c| c.services.keys()).collect();
    for svc in services {
        plan_service(naming, clusters, svc, &mut out);
    }
    out
}

/// Brings `desired` (the plan of `old`) to the plan of `new`, recomputing only the Services
/// whose health changed in some cluster. Returns the keys that may have changed, or `None`
/// when the clusters or their localities changed and `desired` was recomputed whole.
pub fn replan(
    naming: &Naming,
    old: &[ClusterView],
    new: &[ClusterView],
    desired: &mut Desired,
) -> Option<BTreeSet<String>> {
    let same_clusters = old.len() == new.len()
        && old
            .iter()
            .zip(new)
            .all(|(o, n)| o.name == n.name && o.localities == n.localities);
    if !same_clusters {
        *desired = plan(naming, new);
        return None;
    }
    let mut changed: BTreeSet<&ServiceId> = BTreeSet::new();
    for (o, n) in old.iter().zip(new) {
        if o.services == n.services {
            continue;
        }
        for (id, h) in &o.services {
            if n.services.get(id) != Some(h) {
                changed.insert(id);
            }
        }
        for (id, h) in &n.services {
            if o.services.get(id) != Some(h) {
                changed.insert(id);
            }
        }
    }
    let mut keys = BTreeSet::new();
    for svc in changed {
        let mut before = Desired::new();
        plan_service(naming, old, svc, &mut before);
        let mut after = Desired::new();
        plan_service(naming, new, svc, &mut after);
        for k in before.keys() {
            desired.remove(k);
        }
        keys.extend(before.into_keys());
        keys.extend(after.keys().cloned());
        desired.extend(after);
    }
    Some(keys)
}

/// Adds the records of one Service to `out`.
fn plan_service(naming: &Naming, clusters: &[ClusterView], svc: &ServiceId, out: &mut Desired) {
    let owner = naming.owner();
    let value = |host: String| {
        serde_json::to_string(&OwnedValue {
            host,
            ttl: naming.ttl,
            managed_by: owner.clone(),
        })
        .unwrap_or_default()
    };
    let mut zones: BTreeSet<&Locality> = BTreeSet::new();
    // (cluster, its addresses, the localities it is healthy in)
    let mut healthy: Vec<(&str, &[IpAddr], BTreeSet<&Locality>)> = Vec::new();
    for c in clusters {
        let Some(h) = c.services.get(svc) else {
            continue;
        };
        zones.extend(&c.localities);
        zones.extend(&h.ready_localities);
        if h.healthy() {
            let at = if h.ready_localities.is_empty() {
                c.localities.iter().collect()
            } else {
                h.ready_localities.iter().collect()
            };
            healthy.push((&c.name, &h.ingress, at));
        }
    }
    // Puts the addresses of the healthy clusters that `filter` picks under `name`; false when
    // it picks none.
    let put_addresses =
        |out: &mut Desired, name: &str, filter: &dyn Fn(&BTreeSet<&Locality>) -> bool| {
            let key = naming.key(name);
            let mut any = false;
            for (cluster, ips, at) in &healthy {
                if filter(at) {
                    for ip in *ips {
                        out.insert(
                            format!("{key}/{cluster}/{}", address_label(ip)),
                            value(ip.to_string()),
                        );
                    }
                    any = true;
                }
            }
            any
        };
    let global = naming.global_name(svc);
    put_addresses(out, &global, &|_| true);
    let regions: BTreeSet<&str> = zones.iter().map(|l| l.region.as_str()).collect();
    for region in regions {
        let name = naming.region_name(svc, region);
        if !put_addresses(out, &name, &|at| at.iter().any(|l| l.region == region)) {
            out.insert(
                format!("{}/{CNAME_LEAF}", naming.key(&name)),
                value(global.clone()),
            );
        }
    }
    for l in zones {
        let name = naming.zone_name(svc, l);
        if !put_addresses(out, &name, &|at| at.contains(l)) {
            out.insert(
                format!("{}/{CNAME_LEAF}", naming.key(&name)),
                value(naming.region_name(svc, &l.region)),
            );
        }
    }
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
    let mut changes = Vec::new();
    for (key, value) in desired {
        match owned.get(key) {
            None => changes.push(Change::Create {
                key: key.clone(),
                value: value.clone(),
            }),
            Some(o) if o.value != *value => changes.push(Change::Update {
                key: key.clone(),
                value: value.clone(),
                mod_revision: o.mod_revision,
            }),
            Some(_) => {}
        }
    }
    for (key, o) in owned {
        if !desired.contains_key(key) {
            changes.push(Change::Delete {
                key: key.clone(),
                mod_revision: o.mod_revision,
            });
        }
    }
    changes.sort_by(|a, b| a.key().cmp(b.key()));
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
