//! A served zone as RRsets, for zone transfers: every name the server answers and the records
//! it answers for it, read by the general path's own rules ([`super::Resolver`]), so that a
//! secondary answers what this server answers.
//!
//! SkyDNS names hold their key's record **and every record below it**, so the zone is every
//! key below the apex and every ancestor of one ([`names`]), each with the A, AAAA, TXT, MX,
//! SRV and PTR records (or the lone CNAME) a query of that type gets ([`rrsets`]); the apex
//! holds the SOA, the NS records and the data at `<zone>/dns/apex` ([`apex`]). What a zone
//! file cannot hold is left to the answers: one address drawn by weight (a transfer carries
//! every address), answers by the client's locality (every address), SRV and PTR read from an
//! alias's own records (the alias alone), TTLs shortened by an etcd lease (the record's own
//! TTL), and names of a zone served below this one (transferred with their own zone).

use std::time::Instant;

use hickory_proto::rr::{Name, Record, RecordType};

use super::{Node, Resolver, Sections, Step, alias_of, settle};
use crate::index::{Records, Zone};
use crate::key::key_to_name;

/// The types a transfer reads for each name besides the apex's SOA and NS: what the server
/// answers from SkyDNS records.
const TYPES: [RecordType; 6] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::TXT,
    RecordType::MX,
    RecordType::SRV,
    RecordType::PTR,
];

fn resolver(records: &Records) -> Resolver<'_> {
    Resolver {
        records,
        now: Instant::now(),
        rotation: 0,
        out: Sections::default(),
        room: usize::MAX,
        client: None,
        depends: false,
        transfer: true,
    }
}

/// The zone's SOA record, as queries get it.
pub fn soa(records: &Records, zi: usize, zone: &Zone) -> Record {
    resolver(records).soa(zi, zone)
}

/// The apex's records after the SOA: its NS records, then the records of `<zone>/dns/apex`.
pub fn apex(records: &Records, zone: &Zone) -> Vec<Record> {
    let mut r = resolver(records);
    let (mut out, _glue) = r.ns(&zone.name, zone);
    let entries = r.records.node(&format!("{}/dns/apex", zone.key));
    let node = Node {
        owner: &zone.name,
        entries: &entries,
        apex: true,
        zone,
    };
    for qtype in TYPES {
        // Unbounded room: collecting cannot run out of it.
        if let Ok(records) = r.records_of_type(&node, qtype)
            && let Step::Records(records) = settle(records, None, qtype)
        {
            out.extend(records);
        }
    }
    out
}

/// The records of the name at `key` (a key or an ancestor of one below the apex): its CNAME
/// alone when it is an alias, else one RRset per type it holds. Empty for a name that holds
/// nothing it can answer (a record with neither host nor text).
pub fn rrsets(records: &Records, zone: &Zone, key: &str, owner: &Name) -> Vec<Record> {
    let mut r = resolver(records);
    let entries = records.node(key);
    let node = Node {
        owner,
        entries: &entries,
        apex: false,
        zone,
    };
    if let Some(target) = alias_of(&entries, false) {
        return match r.cname(&node, Some(target)) {
            Step::Records(records) => records,
            _ => Vec::new(),
        };
    }
    let mut out = Vec::new();
    for qtype in TYPES {
        if let Ok(records) = r.records_of_type(&node, qtype)
            && let Step::Records(records) = settle(records, None, qtype)
        {
            out.extend(records);
        }
    }
    out
}

/// Every name of zone `zi` below its apex, as `(key, name)` in key order: each key's
/// ancestors (empty non-terminals and aggregates, when no key sits there) before the key, each
/// name once. Keys of a zone served below this one are not its names.
pub fn names<'a>(records: &'a Records, zi: usize, zone: &'a Zone) -> Names<'a> {
    Names {
        records,
        zi,
        zone,
        keys: Box::new(records.subtree(&zone.key).map(|(k, _)| k)),
        prev: None,
        pending: Vec::new(),
    }
}

/// The iterator of [`names`].
pub struct Names<'a> {
    records: &'a Records,
    zi: usize,
    zone: &'a Zone,
    keys: Box<dyn Iterator<Item = &'a str> + 'a>,
    /// The last key of this zone visited.
    prev: Option<&'a str>,
    /// Names to give before the next key, last first.
    pending: Vec<String>,
}

impl std::fmt::Debug for Names<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names")
            .field("zone", &self.zone.name)
            .field("prev", &self.prev)
            .finish_non_exhaustive()
    }
}

impl Iterator for Names<'_> {
    type Item = (String, Name);

    fn next(&mut self) -> Option<(String, Name)> {
        loop {
            if let Some(key) = self.pending.pop() {
                match key_to_name(self.records.zones().prefix(), &key) {
                    Some(name) => return Some((key, name)),
                    None => continue,
                }
            }
            let key = self.keys.next()?;
            if self.records.zones().find_key(key) != Some(self.zi) {
                continue;
            }
            // An ancestor with no key of its own is a name from its first key on: the keys
            // below it are contiguous in key order (`[A/, A0)`), so it is new exactly when the
            // previous key of the zone is not below it.
            let rest = &key[self.zone.key.len() + 1..];
            let mut names = vec![key.to_owned()];
            for (i, _) in rest
                .match_indices('/')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                let ancestor = &key[..self.zone.key.len() + 1 + i];
                let seen = self.prev.is_some_and(|p| {
                    p.strip_prefix(ancestor)
                        .is_some_and(|tail| tail.starts_with('/'))
                });
                if !seen && !self.records.contains(ancestor) {
                    names.push(ancestor.to_owned());
                }
            }
            self.prev = Some(key);
            self.pending = names;
        }
    }
}

#[cfg(test)]
mod tests;
