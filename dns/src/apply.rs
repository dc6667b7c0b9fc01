//! Applying what etcd reports to the records: a load's pages ([`Load`]) and a watch batch
//! ([`apply`]) become puts and deletes, with invalid values and keys that name nothing
//! ([`crate::key::check_key`]) left out and reported. Pure: no etcd, no logging, no metrics;
//! the sync task does those with what [`Applied`] and [`Load::page`] say.

use std::collections::HashMap;
use std::sync::Arc;

use crate::index::{Records, Zones};
use crate::key::{KeyError, check_key};
use crate::record::{Record, RecordError};

/// One key's value as etcd reports it.
#[derive(Debug, Clone, Copy)]
pub struct Kv<'a> {
    /// The key, as bytes (etcd keys need not be UTF-8).
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// The etcd lease the key is attached to, 0 for none.
    pub lease: i64,
    /// The revision of its last change.
    pub revision: i64,
}

/// One event of a watch batch.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A key was created or changed.
    Put(Kv<'a>),
    /// A key was deleted at `revision`.
    Delete {
        /// The key.
        key: &'a [u8],
        /// The revision of the delete.
        revision: i64,
    },
}

/// Why a put was left out.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The key names nothing: no query can ever reach it.
    #[error("key no query can reach: {0}")]
    Key(#[from] KeyError),
    /// The value is not a SkyDNS record.
    #[error(transparent)]
    Value(#[from] RecordError),
}

/// Keys left out (a value that is invalid, or a key that names nothing), with the revision of
/// their value, so each is reported once however often it is read again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InvalidKeys(HashMap<Box<[u8]>, i64>);

impl InvalidKeys {
    /// How many keys are left out.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no key is left out.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The revision of `key`'s value, if the key is left out.
    pub fn get<K: AsRef<[u8]> + ?Sized>(&self, key: &K) -> Option<i64> {
        self.0.get(key.as_ref()).copied()
    }
}

/// A put left out and not reported before: the sync task logs and counts it.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The key, as text (bytes that are not UTF-8 escaped as `\xNN`).
    pub key: String,
    /// The revision of the value.
    pub revision: i64,
    /// What is wrong with it.
    pub error: ApplyError,
}

impl Rejected {
    /// Label for metrics: `value` for an invalid value, else why the key names nothing
    /// ([`KeyError::reason`]).
    pub fn reason(&self) -> &'static str {
        match &self.error {
            ApplyError::Key(e) => e.reason(),
            ApplyError::Value(_) => "value",
        }
    }
}

/// What applying a watch batch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Every (UTF-8) key the batch names, in order, whatever became of it: what the fast path
    /// recompiles.
    pub changed: Vec<String>,
    /// Leases of put keys whose deadline the records do not know yet, sorted, no duplicates:
    /// the sync task reads them from etcd.
    pub new_leases: Vec<i64>,
    /// Puts left out to report: invalid values and keys that name nothing.
    pub rejected: Vec<Rejected>,
}

/// What became of one put.
enum Ingested {
    /// Stored, or skipped as outside the served zones.
    Stored,
    /// Left out (an older value of the key deleted); `Some` when not reported before.
    LeftOut(Option<Rejected>),
}

/// Puts one key into `records` (keys outside the served zones are skipped). A key that names
/// nothing or an invalid value is left out and any older value of the key deleted; it is to be
/// reported unless `reported` holds this very value (key and revision).
fn ingest(records: &mut Records, reported: &InvalidKeys, kv: &Kv<'_>) -> Ingested {
    if !in_zone(records.zones(), kv.key) {
        return Ingested::Stored;
    }
    let key = check_key(records.zones().prefix(), kv.key)
        .and_then(|()| std::str::from_utf8(kv.key).map_err(|_| KeyError::NotUtf8));
    let error = match key {
        Err(e) => ApplyError::Key(e),
        Ok(key) => match Record::parse(kv.value) {
            Ok(record) => {
                records.put(key, record, kv.lease, kv.revision);
                return Ingested::Stored;
            }
            Err(e) => {
                records.delete(key, kv.revision);
                ApplyError::Value(e)
            }
        },
    };
    let new = reported.get(kv.key) != Some(kv.revision);
    Ingested::LeftOut(new.then(|| {
        Rejected {
            key: std::str::from_utf8(kv.key)
                .map_or_else(|_| kv.key.escape_ascii().to_string(), str::to_owned),
            revision: kv.revision,
            error,
        }
    }))
}

impl InvalidKeys {
    /// Notes what became of a put of `kv`; returns what to report.
    fn note(&mut self, kv: &Kv<'_>, ingested: Ingested) -> Option<Rejected> {
        match ingested {
            Ingested::Stored => {
                self.0.remove(kv.key);
                None
            }
            Ingested::LeftOut(rejected) => {
                self.0.insert(kv.key.into(), kv.revision);
                rejected
            }
        }
    }
}

/// Whether `key` is in a served zone, ignoring the case of what follows the prefix (so that
/// `/skydns/com/Example/x` is reported, not skipped as another zone's).
fn in_zone(zones: &Zones, key: &[u8]) -> bool {
    if zones.find_key(key).is_some() {
        return true;
    }
    let Some(rest) = key.strip_prefix(zones.prefix().as_bytes()) else {
        return false;
    };
    if !rest.iter().any(u8::is_ascii_uppercase) {
        return false;
    }
    let mut lower = zones.prefix().as_bytes().to_vec();
    lower.extend(rest.iter().map(u8::to_ascii_lowercase));
    zones.find_key(&lower).is_some()
}

/// Applies one watch batch to `records` and `invalid`, in order: a put stores the value (or
/// leaves out an invalid one, or a key that names nothing), a delete removes the key; both move
/// the revision, and the serial of the zone they touch.
pub fn apply<'a>(
    records: &mut Records,
    invalid: &mut InvalidKeys,
    changes: impl IntoIterator<Item = Change<'a>>,
) -> Applied {
    let mut applied = Applied::default();
    for change in changes {
        match change {
            Change::Put(kv) => {
                if let Ok(key) = std::str::from_utf8(kv.key) {
                    applied.changed.push(key.to_owned());
                }
                if kv.lease != 0 && !records.lease_known(kv.lease) {
                    applied.new_leases.push(kv.lease);
                }
                records.set_revision(kv.revision);
                let ingested = ingest(records, invalid, &kv);
                applied.rejected.extend(invalid.note(&kv, ingested));
            }
            Change::Delete { key, revision } => {
                invalid.0.remove(key);
                if let Ok(key) = std::str::from_utf8(key) {
                    applied.changed.push(key.to_owned());
                    records.delete(key, revision);
                }
                records.set_revision(revision);
            }
        }
    }
    applied.new_leases.sort_unstable();
    applied.new_leases.dedup();
    applied
}

/// A full load under way: the pages of one range read at one revision, put into new records.
#[derive(Debug)]
pub struct Load {
    records: Records,
    invalid: InvalidKeys,
}

impl Load {
    /// No records yet, at `revision`, the revision of the read.
    pub fn new(zones: Arc<Zones>, revision: i64) -> Self {
        Self {
            records: Records::new(zones, revision),
            invalid: InvalidKeys::default(),
        }
    }

    /// Puts one page of keys, as [`apply`] puts them. Returns the puts left out to report: those
    /// not in `reported`, the keys left out as known before the load.
    pub fn page<'a>(
        &mut self,
        reported: &InvalidKeys,
        kvs: impl IntoIterator<Item = Kv<'a>>,
    ) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        for kv in kvs {
            let ingested = ingest(&mut self.records, reported, &kv);
            rejected.extend(self.invalid.note(&kv, ingested));
        }
        rejected
    }

    /// How many records are loaded so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True while no record is loaded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The complete load: records current up to `revision`, and the keys left out.
    pub fn finish(mut self, revision: i64) -> (Records, InvalidKeys) {
        self.records.set_revision(revision);
        self.records.mark_loaded();
        (self.records, self.invalid)
    }
}

#[cfg(test)]
mod tests;
