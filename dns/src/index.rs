//! The record index: every record under the prefix at one etcd revision ([`Records`]), with
//! the served zones, their serials and the lease deadlines.
//!
//! The map is persistent (`imbl::OrdMap`): cloning the records is O(1) and an update touches
//! O(log n) nodes, so the sync task applies a watch batch to a copy and publishes it without
//! blocking readers, and without copying the zone.

use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::rr::Name;
use imbl::{HashMap, OrdMap};

use crate::key::{check_key, key_to_name, name_to_key, strip_labels};
use crate::record::Record;

/// Lowest TTL answered for a record bound to an etcd lease (CoreDNS uses the same floor), so a
/// lease about to be renewed does not make caches ask again every second.
pub const LEASE_TTL_FLOOR: u32 = 30;
/// TTL of a record that sets none (CoreDNS's etcd plugin default).
pub const DEFAULT_TTL: u32 = 300;
/// Most records read for one name. The smallest answer record (a compressed A) takes 16 bytes,
/// so no DNS message can carry more than 65535 / 16 ≈ 4096 of them; reading more of a huge
/// subtree (say `svc.<zone>` over a whole federation) would only burn CPU on the query path.
pub const MAX_NODE_RECORDS: usize = 4096;

/// One record and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The etcd key.
    pub key: Arc<str>,
    /// The parsed value.
    pub record: Record,
    /// The etcd lease the key is attached to, 0 for none.
    pub lease: i64,
}

impl Entry {
    /// A target name made from the record's key (SkyDNS `msg.Domain`), minus `targetstrip`
    /// labels: what SRV, MX and NS answers name when the record holds an address. Never the
    /// root ("no service", RFC 2782): [`Records::put`] stores only keys that name something,
    /// and stripping never takes every label.
    pub fn target_name(&self, prefix: &str) -> Name {
        key_to_name(prefix, &self.key)
            .map(|n| strip_labels(&n, self.record.target_strip))
            .unwrap_or_else(Name::root)
    }
}

/// A zone this server is authoritative for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The apex, lowercase and fully qualified.
    pub name: Name,
    /// The apex's etcd key.
    pub key: String,
}

/// The served zones, most specific first so that the first match is the longest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zones {
    prefix: String,
    zones: Vec<Zone>,
}

impl Zones {
    /// Builds the zone list; `prefix` must be normalised ([`crate::key::normalize_prefix`]).
    pub fn new(prefix: &str, names: &[Name]) -> Self {
        let mut zones: Vec<Zone> = names
            .iter()
            .map(|n| {
                let mut name = n.to_lowercase();
                name.set_fqdn(true);
                // The configuration only takes zones that have a key; any other would get one
                // with an empty label, which no stored key is under.
                let key = name_to_key(prefix, &name).unwrap_or_else(|| format!("{prefix}//"));
                Zone { key, name }
            })
            .collect();
        zones.sort_by_key(|z| std::cmp::Reverse(z.name.num_labels()));
        zones.dedup();
        Self {
            prefix: prefix.to_owned(),
            zones,
        }
    }

    /// The etcd prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// All zones.
    pub fn iter(&self) -> impl Iterator<Item = &Zone> {
        self.zones.iter()
    }

    /// The most specific zone containing `name`, with its index.
    pub fn find(&self, name: &Name) -> Option<(usize, &Zone)> {
        self.zones
            .iter()
            .enumerate()
            .find(|(_, z)| z.name.zone_of(name))
    }

    /// The zone a key belongs to, if any.
    pub fn find_key<K: AsRef<[u8]> + ?Sized>(&self, key: &K) -> Option<usize> {
        let key = key.as_ref();
        self.zones.iter().position(|z| {
            key.strip_prefix(z.key.as_bytes())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
        })
    }
}

/// The records at one etcd revision.
#[derive(Debug, Clone)]
pub struct Records {
    zones: Arc<Zones>,
    records: OrdMap<Arc<str>, Arc<Entry>>,
    leases: HashMap<i64, Instant>,
    zone_revisions: Vec<i64>,
    revision: i64,
    loaded: bool,
    /// Keys with a `*` label: while there are none, no name is looked up as a wildcard's.
    wildcards: usize,
}

impl Records {
    /// No records, at revision `revision`; every zone's serial starts there.
    pub fn new(zones: Arc<Zones>, revision: i64) -> Self {
        let n = zones.zones.len();
        Self {
            zones,
            records: OrdMap::new(),
            leases: HashMap::new(),
            zone_revisions: vec![revision; n],
            revision,
            loaded: false,
            wildcards: 0,
        }
    }

    /// Whether these records are a complete load of etcd (before that, the server answers
    /// SERVFAIL rather than deny names it has not read yet).
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Marks the records as a complete load.
    pub fn mark_loaded(&mut self) {
        self.loaded = true;
    }

    /// The served zones.
    pub fn zones(&self) -> &Zones {
        &self.zones
    }

    /// The etcd revision these records reflect.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Marks the records as current up to `revision` (a watch batch or progress notification).
    pub fn set_revision(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every record, in key order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.records.values().map(|e| &**e)
    }

    /// Adds or replaces the record at `key`, changed at etcd revision `revision`. A key that
    /// names nothing ([`check_key`]; the caller reports it) is not stored.
    pub fn put(&mut self, key: &str, record: Record, lease: i64, revision: i64) {
        if check_key(self.zones.prefix(), key.as_bytes()).is_err() {
            return;
        }
        let key: Arc<str> = key.into();
        self.touch(&key, revision);
        let wildcard = is_wildcard_key(&key);
        let old = self
            .records
            .insert(key.clone(), Arc::new(Entry { key, record, lease }));
        if old.is_none() && wildcard {
            self.wildcards += 1;
        }
    }

    /// Removes the record at `key`, deleted (or made invalid) at etcd revision `revision`.
    /// Returns whether there was one.
    pub fn delete(&mut self, key: &str, revision: i64) -> bool {
        let removed = self.records.remove(key).is_some();
        if removed {
            self.touch(key, revision);
            if is_wildcard_key(key) {
                self.wildcards -= 1;
            }
        }
        removed
    }

    /// The wildcard (RFC 4592) that answers a name that does not exist, whose nearest
    /// ancestor that might exist has the key `from`: the closest encloser is the first of
    /// `from` and its ancestors that exists (or the zone's apex), and the answer comes from
    /// the key `<closest encloser>/*` when that name exists. `None` when nothing answers it
    /// (then it is NXDOMAIN), and at once while no key holds a `*` label.
    pub fn wildcard_source(&self, from: &str) -> Option<String> {
        if self.wildcards == 0 {
            return None;
        }
        let zone = &self.zones.zones[self.zones.find_key(from)?];
        let mut encloser = from;
        while encloser.len() > zone.key.len() && !self.exists(encloser) {
            encloser = &encloser[..encloser.rfind('/')?];
        }
        let source = format!("{encloser}/*");
        self.exists(&source).then_some(source)
    }

    fn touch(&mut self, key: &str, revision: i64) {
        if let Some(z) = self.zones.find_key(key) {
            self.zone_revisions[z] = self.zone_revisions[z].max(revision);
        }
        self.set_revision(revision);
    }

    /// Records when a lease expires, as last read from etcd.
    pub fn set_lease_deadline(&mut self, lease: i64, deadline: Instant) {
        self.leases.insert(lease, deadline);
    }

    /// Whether we know when `lease` expires.
    pub fn lease_known(&self, lease: i64) -> bool {
        self.leases.contains_key(&lease)
    }

    /// The leases that records use, so the sync task can refresh their deadlines.
    pub fn leases_in_use(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .records
            .values()
            .map(|e| e.lease)
            .filter(|&l| l != 0)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Forgets leases no record uses.
    pub fn retain_leases(&mut self, in_use: &[i64]) {
        self.leases.retain(|id, _| in_use.binary_search(id).is_ok());
    }

    /// The SOA serial of zone `zone`: the etcd revision of its last change (mod 2^32, which
    /// serial-number arithmetic allows).
    pub fn serial(&self, zone: usize) -> u32 {
        // Truncation is intended: RFC 1982 serials wrap.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let serial = self
            .zone_revisions
            .get(zone)
            .copied()
            .unwrap_or(self.revision) as u32;
        serial
    }

    /// The records of the name whose key is `key`: the key's own value and every value below
    /// it, in key order, narrowed by `group` as SkyDNS does.
    pub fn node(&self, key: &str) -> Vec<&Entry> {
        self.node_up_to(key, MAX_NODE_RECORDS)
    }

    /// The first `limit` records of [`Records::node`]. The group is picked from the same
    /// [`MAX_NODE_RECORDS`] keys whatever the limit (the cut comes after the filter), so a
    /// shorter read is always a prefix of the longer one.
    pub fn node_up_to(&self, key: &str, limit: usize) -> Vec<&Entry> {
        let own = self.records.get(key).map(|e| &**e);
        let mut all = own
            .into_iter()
            .chain(self.below(key).map(|(_, e)| e))
            .take(MAX_NODE_RECORDS);
        let mut out: Vec<&Entry> = all.by_ref().take(limit).collect();
        if out.iter().all(|e| e.record.group.is_empty()) {
            // Records without a group stay whatever group is picked: these are the first
            // `limit` of the filtered records too, and the rest need not be read.
            return out;
        }
        out.extend(all);
        let mut out = group_filter(out);
        out.truncate(limit);
        out
    }

    /// The `n`th key (from 0) strictly below `key`, in key order.
    pub fn nth_key_below(&self, key: &str, n: usize) -> Option<&str> {
        self.below(key).nth(n).map(|(k, _)| k)
    }

    /// Whether a key sits at `key` or directly below it (one more label). Reads at most
    /// [`MAX_NODE_RECORDS`] keys.
    pub fn has_key_or_child(&self, key: &str) -> bool {
        if self.records.contains_key(key) {
            return true;
        }
        self.below(key)
            .take(MAX_NODE_RECORDS)
            .any(|(k, _)| !k[key.len() + 1..].contains('/'))
    }

    /// Whether the name whose key is `key` exists: it has a record, or a name below it has one
    /// (an empty non-terminal). No allocation for keys up to 1 KiB (the fast path asks).
    pub fn exists(&self, key: &str) -> bool {
        if self.records.contains_key(key) {
            return true;
        }
        let n = key.len();
        let mut lo = [0u8; 1024];
        if n >= lo.len() {
            return self.below(key).next().is_some();
        }
        lo[..n].copy_from_slice(key.as_bytes());
        lo[n] = b'/';
        let mut hi = lo;
        hi[n] = b'0';
        // `key` is UTF-8 and '/' and '0' are ASCII.
        let (Ok(lo), Ok(hi)) = (
            std::str::from_utf8(&lo[..=n]),
            std::str::from_utf8(&hi[..=n]),
        ) else {
            return self.below(key).next().is_some();
        };
        self.records
            .range::<_, str>((Bound::Included(lo), Bound::Excluded(hi)))
            .next()
            .is_some()
    }

    /// The TTL to answer for `entry` at `now`: its own (or the default), bounded by what is left
    /// of its lease, but never below [`LEASE_TTL_FLOOR`] because of the lease.
    pub fn ttl(&self, entry: &Entry, now: Instant) -> u32 {
        let ttl = Self::static_ttl(entry);
        if entry.lease == 0 {
            return ttl;
        }
        let remaining = self.leases.get(&entry.lease).map_or(0, |deadline| {
            u32::try_from(deadline.saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX)
        });
        ttl.min(remaining.max(LEASE_TTL_FLOOR))
    }

    /// The TTL a record carries in a zone transfer: its own (or the default), never bounded by
    /// its lease (a secondary counts its TTL down itself, and a TTL that moved with the lease
    /// would make every refresh a change).
    pub fn static_ttl(entry: &Entry) -> u32 {
        if entry.record.ttl == 0 {
            DEFAULT_TTL
        } else {
            entry.record.ttl
        }
    }

    /// Whether a record sits at exactly `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.records.contains_key(key)
    }

    /// The keys whose record differs between `before` and these records (added, changed or
    /// removed), in key order. The parts both share are skipped, so a few changes on a large
    /// map cost little.
    pub fn changed_keys(&self, before: &Records) -> Vec<Arc<str>> {
        before
            .records
            .diff(&self.records)
            .map(|d| match d {
                imbl::ordmap::DiffItem::Add(k, _) | imbl::ordmap::DiffItem::Remove(k, _) => {
                    k.clone()
                }
                imbl::ordmap::DiffItem::Update { new: (k, _), .. } => k.clone(),
            })
            .collect()
    }

    /// Every record strictly below `key`, in key order, with its key.
    pub fn subtree(&self, key: &str) -> impl Iterator<Item = (&str, &Entry)> {
        self.below(key)
    }

    /// A lease deadline `ttl` seconds from `now`.
    pub fn lease_deadline(now: Instant, ttl_secs: i64) -> Instant {
        now + Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(0))
    }
}

impl Records {
    /// Every record strictly below `key`, in key order: the range `[key/, key0)` (`'0'` follows
    /// `'/'` in ASCII, so `key-b` and `keyb` stay out).
    fn below(&self, key: &str) -> impl Iterator<Item = (&str, &Entry)> {
        let (lo, hi) = (format!("{key}/"), format!("{key}0"));
        self.records
            .range::<_, str>((Bound::Included(lo.as_str()), Bound::Excluded(hi.as_str())))
            .map(|(k, e)| (&**k, &**e))
    }
}

/// Whether a key has a `*` label (a wildcard's, or one below a wildcard's).
fn is_wildcard_key(key: &str) -> bool {
    key.ends_with("/*") || key.contains("/*/")
}

/// SkyDNS groups: the shortest keys that carry a group pick it; records of another group are
/// left out, records with no group stay. Disagreeing groups at the shortest level mean no
/// grouping at all (CoreDNS's `msg.Group`).
pub fn group_filter(entries: Vec<&Entry>) -> Vec<&Entry> {
    let Some(first) = entries.first() else {
        return entries;
    };
    let depth = |e: &Entry| e.key.bytes().filter(|&b| b == b'/').count();
    let mut group: &str = &first.record.group;
    let mut shortest = depth(first);
    for e in &entries {
        let d = depth(e);
        if d < shortest {
            if e.record.group.is_empty() {
                break;
            }
            shortest = d;
            group = &e.record.group;
        }
    }
    if group.is_empty() {
        return entries;
    }
    let group = group.to_owned();
    let mut out = Vec::with_capacity(entries.len());
    for e in &entries {
        if e.record.group.is_empty() {
            out.push(*e);
            continue;
        }
        if depth(e) == shortest && *e.record.group != *group {
            return entries;
        }
        if *e.record.group == *group {
            out.push(*e);
        }
    }
    out
}

#[cfg(test)]
mod tests;
