//! The IXFR history (RFC 1995): what changed in each zone between two published versions of
//! the records, as the records a transfer carries ([`crate::answer::zone`]) removed and added,
//! kept in memory within a count and a byte budget. Free of I/O.
//!
//! [`diff`] compares two snapshots: the keys that differ (the persistent map skips the parts
//! both share, so a small change costs little however large the zone), each one's name and
//! the names above it (SkyDNS names aggregate what is below them), and the apex when a name
//! server or the apex's own data changed; a zone whose serial moved without a record change
//! (a reload) gets a delta with no records. [`History::chain`] finds the deltas that lead from
//! a client's serial to ours; when there is none (the client is older than the history, or
//! the history was cleared) the client gets the whole zone.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use hickory_proto::rr::Record;

use crate::answer::{wire, zone};
use crate::index::Records;
use crate::key::key_to_name;

/// Versions kept by default (`--ixfr-history-versions`), over all zones.
pub const DEFAULT_VERSIONS: usize = 1000;
/// Bytes kept by default (`--ixfr-history-bytes`): 64 MiB.
pub const DEFAULT_BYTES: usize = 64 << 20;

/// What changed in one zone from one serial to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The zone's index.
    pub zi: usize,
    /// The SOA before (its serial is where the delta starts).
    pub old_soa: Record,
    /// The SOA after.
    pub new_soa: Record,
    /// Records no longer in the zone.
    pub removed: Vec<Record>,
    /// Records new in the zone.
    pub added: Vec<Record>,
    /// About what it takes in memory (its records and their names and data).
    pub bytes: usize,
    /// What its records take on the wire at least (names compressed).
    pub wire: usize,
}

impl Delta {
    fn serial(soa: &Record) -> u32 {
        match &soa.data {
            hickory_proto::rr::RData::SOA(s) => s.serial,
            _ => 0,
        }
    }

    /// The serial the delta starts from.
    pub fn from(&self) -> u32 {
        Self::serial(&self.old_soa)
    }

    /// The serial it leads to.
    pub fn to(&self) -> u32 {
        Self::serial(&self.new_soa)
    }
}

/// The changes are larger than the history may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// The changes from `before` to `after`, one delta per zone whose serial moved; `TooLarge`
/// once they pass `max_bytes` of memory (the history is then cleared: clients transfer the
/// zone), or when `stop()` says so (a shutdown: a large diff must not hold the exit).
pub fn diff(
    before: &Records,
    after: &Records,
    max_bytes: usize,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<Delta>, TooLarge> {
    let zones: Vec<_> = after.zones().iter().cloned().collect();
    // Per zone, the keys of the names to compare, and whether the apex changed.
    let mut touched: Vec<(BTreeSet<String>, bool)> = vec![(BTreeSet::new(), false); zones.len()];
    for key in after.changed_keys(before) {
        let Some(zi) = after.zones().find_key(&*key) else {
            continue;
        };
        let zkey = &zones[zi].key;
        let (names, apex) = &mut touched[zi];
        let rest = key.get(zkey.len() + 1..).unwrap_or("");
        if rest == "dns/apex" || rest.starts_with("dns/apex/") || rest.starts_with("dns/ns") {
            *apex = true;
        }
        if rest.is_empty() {
            continue;
        }
        names.insert(key.to_string());
        for (i, _) in rest.match_indices('/') {
            names.insert(key[..zkey.len() + 1 + i].to_owned());
        }
    }
    let mut out = Vec::new();
    let mut total = 0;
    for (zi, zone) in zones.iter().enumerate() {
        let (names, apex) = &touched[zi];
        if before.serial(zi) == after.serial(zi) && names.is_empty() && !apex {
            continue;
        }
        let mut old: Vec<Record> = Vec::new();
        let mut new: Vec<Record> = Vec::new();
        let mut collected = 0;
        if *apex {
            old.extend(zone::apex(before, zone));
            new.extend(zone::apex(after, zone));
        }
        for key in names {
            let Some(name) = key_to_name(after.zones().prefix(), key) else {
                continue;
            };
            // A name the zone served below this one holds is that zone's.
            if after.zones().find_key(key.as_str()) != Some(zi) {
                continue;
            }
            let (o, n) = (
                zone::rrsets(before, zone, key, &name),
                zone::rrsets(after, zone, key, &name),
            );
            collected += mem_bytes(&o) + mem_bytes(&n);
            if collected + total > max_bytes {
                return Err(TooLarge);
            }
            if stop() {
                return Err(TooLarge);
            }
            old.extend(o);
            new.extend(n);
        }
        let (removed, added) = difference(old, new);
        let old_soa = zone::soa(before, zi, zone);
        let new_soa = zone::soa(after, zi, zone);
        let bytes =
            mem_bytes(&removed) + mem_bytes(&added) + 2 * mem_bytes(std::slice::from_ref(&new_soa));
        let wire: usize = removed
            .iter()
            .chain(&added)
            .chain([&old_soa, &new_soa])
            .map(|r| wire::min_len(&r.name, &r.data))
            .sum();
        total += bytes;
        if total > max_bytes {
            return Err(TooLarge);
        }
        out.push(Delta {
            zi,
            old_soa,
            new_soa,
            removed,
            added,
            bytes,
            wire,
        });
    }
    Ok(out)
}

/// What records take in memory: the record itself and about its names' and data's heap.
fn mem_bytes(records: &[Record]) -> usize {
    records
        .iter()
        .map(|r| std::mem::size_of::<Record>() + wire::min_len(&r.name, &r.data) + r.name.len())
        .sum()
}

/// What is in `old` and not in `new`, and the other way round (a TTL change is both).
fn difference(old: Vec<Record>, new: Vec<Record>) -> (Vec<Record>, Vec<Record>) {
    let key = |r: &Record| (r.name.to_lowercase(), r.ttl, r.data.clone());
    let in_old: HashSet<_> = old.iter().map(key).collect();
    let in_new: HashSet<_> = new.iter().map(key).collect();
    let mut seen = HashSet::new();
    let removed = old
        .into_iter()
        .filter(|r| !in_new.contains(&key(r)) && seen.insert(key(r)))
        .collect();
    let mut seen = HashSet::new();
    let added = new
        .into_iter()
        .filter(|r| !in_old.contains(&key(r)) && seen.insert(key(r)))
        .collect();
    (removed, added)
}

/// The deltas kept, oldest first, within a count and a byte budget.
#[derive(Debug, Clone)]
pub struct History {
    deltas: VecDeque<Arc<Delta>>,
    bytes: usize,
    max_versions: usize,
    max_bytes: usize,
}

impl History {
    /// An empty history keeping at most `max_versions` deltas and `max_bytes` bytes.
    pub fn new(max_versions: usize, max_bytes: usize) -> Self {
        Self {
            deltas: VecDeque::new(),
            bytes: 0,
            max_versions,
            max_bytes,
        }
    }

    /// Adds a delta, dropping the oldest ones to stay within the budget.
    pub fn push(&mut self, delta: Delta) {
        self.bytes += delta.bytes;
        self.deltas.push_back(Arc::new(delta));
        while self.deltas.len() > self.max_versions || self.bytes > self.max_bytes {
            match self.deltas.pop_front() {
                Some(d) => self.bytes -= d.bytes,
                None => break,
            }
        }
    }

    /// Forgets everything (clients transfer the whole zone).
    pub fn clear(&mut self) {
        self.deltas.clear();
        self.bytes = 0;
    }

    /// Deltas kept.
    pub fn len(&self) -> usize {
        self.deltas.len()
    }

    /// Nothing kept.
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The deltas of zone `zi` that lead from serial `from` to serial `to`, in order; `None`
    /// when the history does not reach back to `from` or does not end at `to`.
    pub fn chain(&self, zi: usize, from: u32, to: u32) -> Option<Vec<Arc<Delta>>> {
        let zone: Vec<&Arc<Delta>> = self.deltas.iter().filter(|d| d.zi == zi).collect();
        let start = zone.iter().position(|d| d.from() == from)?;
        let chain: Vec<Arc<Delta>> = zone[start..].iter().map(|d| Arc::clone(d)).collect();
        let linked = chain.windows(2).all(|w| w[0].to() == w[1].from());
        (linked && chain.last()?.to() == to).then_some(chain)
    }
}

#[cfg(test)]
mod tests;
