//! Applying what etcd reports to the records: a load's pages ([`Load`]) and a watch batch
//! ([`apply`]) become puts and deletes, with invalid values left out and reported. Pure: no
//! etcd, no logging, no metrics; the sync task does those with what [`Applied`] says.

use std::collections::HashMap;
use std::sync::Arc;

use crate::index::{Records, Zones};
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

/// Keys whose current value is invalid, with the revision of that value, so each bad value is
/// reported once however often it is read again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InvalidKeys(HashMap<String, i64>);

impl InvalidKeys {
    /// How many keys hold an invalid value.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when every value is valid.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The revision of `key`'s invalid value, if its value is invalid.
    pub fn get(&self, key: &str) -> Option<i64> {
        self.0.get(key).copied()
    }
}

/// An invalid value not reported before: the sync task logs and counts it.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The key.
    pub key: String,
    /// The revision of the value.
    pub revision: i64,
    /// What is wrong with it.
    pub error: RecordError,
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
    /// Invalid values to report.
    pub rejected: Vec<Rejected>,
    /// Puts of keys that are not UTF-8: never stored, counted as invalid records.
    pub unreadable_keys: usize,
}

/// What became of one put.
enum Ingested {
    /// Stored, or skipped as outside the served zones.
    Stored,
    /// Invalid: left out (an older value of the key deleted); `Some` when not reported before.
    Invalid(Option<Rejected>),
}

/// Puts one key into `records` (keys outside the served zones are skipped). An invalid value is
/// left out and any older value of the key deleted; it is to be reported unless `reported`
/// holds this very value (key and revision).
fn ingest(records: &mut Records, reported: &InvalidKeys, key: &str, kv: &Kv<'_>) -> Ingested {
    if records.zones().find_key(key).is_none() {
        return Ingested::Stored;
    }
    match Record::parse(kv.value) {
        Ok(record) => {
            records.put(key, record, kv.lease, kv.revision);
            Ingested::Stored
        }
        Err(error) => {
            records.delete(key, kv.revision);
            let new = reported.get(key) != Some(kv.revision);
            Ingested::Invalid(new.then(|| Rejected {
                key: key.to_owned(),
                revision: kv.revision,
                error,
            }))
        }
    }
}

/// Applies one watch batch to `records` and `invalid`, in order: a put stores the value (or
/// leaves an invalid one out), a delete removes the key; both move the revision, and the serial
/// of the zone they touch.
pub fn apply<'a>(
    records: &mut Records,
    invalid: &mut InvalidKeys,
    changes: impl IntoIterator<Item = Change<'a>>,
) -> Applied {
    let mut applied = Applied::default();
    for change in changes {
        match change {
            Change::Put(kv) => {
                let key = std::str::from_utf8(kv.key).ok();
                if let Some(key) = key {
                    applied.changed.push(key.to_owned());
                }
                if kv.lease != 0 && !records.lease_known(kv.lease) {
                    applied.new_leases.push(kv.lease);
                }
                records.set_revision(kv.revision);
                let Some(key) = key else {
                    applied.unreadable_keys += 1;
                    continue;
                };
                match ingest(records, invalid, key, &kv) {
                    Ingested::Invalid(rejected) => {
                        invalid.0.insert(key.to_owned(), kv.revision);
                        applied.rejected.extend(rejected);
                    }
                    Ingested::Stored => {
                        invalid.0.remove(key);
                    }
                }
            }
            Change::Delete { key, revision } => {
                if let Ok(key) = std::str::from_utf8(key) {
                    applied.changed.push(key.to_owned());
                    invalid.0.remove(key);
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

    /// Puts one page of keys (keys that are not UTF-8 are skipped). Returns the invalid values
    /// to report: those not in `reported`, the invalid keys as known before the load.
    pub fn page<'a>(
        &mut self,
        reported: &InvalidKeys,
        kvs: impl IntoIterator<Item = Kv<'a>>,
    ) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        for kv in kvs {
            let Ok(key) = std::str::from_utf8(kv.key) else {
                continue;
            };
            if let Ingested::Invalid(r) = ingest(&mut self.records, reported, key, &kv) {
                self.invalid.0.insert(key.to_owned(), kv.revision);
                rejected.extend(r);
            }
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

    /// The complete load: records current up to `revision`, and the keys whose value is invalid.
    pub fn finish(mut self, revision: i64) -> (Records, InvalidKeys) {
        self.records.set_revision(revision);
        self.records.mark_loaded();
        (self.records, self.invalid)
    }
}

#[cfg(test)]
mod tests;
