//! The etcd edge: the keys under the prefix that carry our ownership marker, and the writes
//! that change them.
//!
//! - [`Store::load`] reads every key under the prefix (paged) and keeps those that are ours.
//! - [`Store::apply`] writes a diff in transactions of at most [`MAX_OPS`] operations, several
//!   in flight. Each is conditional on the leader key (the fence) and on every key it touches:
//!   a create needs the key absent, an update or delete needs the mod revision we last saw. So a
//!   key someone else wrote in between is never overwritten: the batch is retried key by key,
//!   and a key that turned out to be someone else's is left alone from then on.

use std::collections::{BTreeMap, HashSet};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use fedplane_ops::etcd::{Paging, REQUEST_TIMEOUT, RequestError, read_prefix};
use futures::StreamExt;
use tracing::{debug, warn};

use crate::plan::{Change, Owned, owner_of};

/// Operations per transaction; etcd refuses more than `--max-txn-ops` (128 by default).
pub const MAX_OPS: usize = 100;
/// Transactions in flight at once: etcd batches their fsyncs.
const PIPELINE: usize = 8;
/// Keys per page when reading the prefix.
const PAGE: i64 = 2_000;

/// Why etcd could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd answered with an error or not at all.
    #[error("etcd {what} failed: {source}")]
    Etcd {
        /// The operation.
        what: &'static str,
        /// The client's error.
        source: etcd_client::Error,
    },
    /// A request took longer than its bound.
    #[error("etcd {0} timed out after {REQUEST_TIMEOUT:?}")]
    Timeout(&'static str),
    /// The fence failed: another replica leads now; nothing more is written.
    #[error("leadership lost: the election key {0} is gone or changed")]
    LostLeadership(String),
}

/// The condition every write is fenced on: the leader key still exists with the create
/// revision it had when we won the election.
#[derive(Debug, Clone)]
pub struct Fence {
    /// Leader key.
    pub key: Vec<u8>,
    /// Its create revision.
    pub revision: i64,
}

/// What one [`Store::apply`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Keys created or updated.
    pub puts: usize,
    /// Keys deleted.
    pub deletes: usize,
    /// Transactions sent.
    pub txns: usize,
    /// Keys that changed under us (re-read; the next sync corrects them).
    pub conflicts: usize,
    /// Keys left alone because someone else owns them.
    pub foreign: usize,
}

/// Our keys under the prefix.
pub struct Store {
    client: Client,
    prefix: String,
    owner: String,
    owned: BTreeMap<String, Owned>,
    foreign: HashSet<String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .field("owned", &self.owned.len())
            .field("foreign", &self.foreign.len())
            .finish_non_exhaustive()
    }
}

impl StoreError {
    fn request(what: &'static str, e: RequestError) -> Self {
        match e {
            RequestError::Timeout => Self::Timeout(what),
            RequestError::Etcd(source) => Self::Etcd { what, source },
        }
    }
}

/// One etcd request, bounded by [`REQUEST_TIMEOUT`]; `what` names it in the error.
async fn bounded<T>(
    what: &'static str,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    fedplane_ops::etcd::bounded(f)
        .await
        .map_err(|e| StoreError::request(what, e))
}

impl Store {
    /// A store for keys under `prefix` (the key of our domain, e.g. `/skydns/com/example`)
    /// marked with `owner`; nothing is read yet.
    pub fn new(client: Client, prefix: &str, owner: String) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            owner,
            owned: BTreeMap::new(),
            foreign: HashSet::new(),
        }
    }

    /// The keys we own, as last read or written.
    pub fn owned(&self) -> &BTreeMap<String, Owned> {
        &self.owned
    }

    /// Reads every key under the prefix and keeps ours. Returns how many keys were read in
    /// all (ours and others').
    pub async fn load(&mut self) -> Result<usize, StoreError> {
        let paging = Paging {
            page: PAGE,
            sort_by_key: true,
        };
        let mut owned = BTreeMap::new();
        let mut read = 0;
        read_prefix(&self.client, &self.prefix, paging, |_, kvs| {
            read += kvs.len();
            for kv in kvs {
                if owner_of(kv.value()).as_deref() == Some(self.owner.as_str()) {
                    owned.insert(
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        Owned {
                            value: String::from_utf8_lossy(kv.value()).into_owned(),
                            mod_revision: kv.mod_revision(),
                        },
                    );
                }
            }
        })
        .await
        .map_err(|e| StoreError::request("range", e))?;
        self.owned = owned;
        self.foreign.clear();
        Ok(read)
    }

    /// `changes` without the creates of keys known to be someone else's (found at a
    /// conflict; forgotten at the next [`Store::load`], so a key its owner deleted is ours to
    /// write again).
    pub fn without_foreign(&self, changes: Vec<Change>) -> Vec<Change> {
        changes
            .into_iter()
            .filter(|c| !matches!(c, Change::Create { key, .. } if self.foreign.contains(key)))
            .collect()
    }

    /// Writes `changes` (from [`crate::plan::diff`] against [`Store::owned`]), fenced on
    /// `fence` when given.
    pub async fn apply(
        &mut self,
        changes: Vec<Change>,
        fence: Option<&Fence>,
    ) -> Result<Applied, StoreError> {
        let mut applied = Applied::default();
        let batches = batches(changes);
        let results: Vec<_> = futures::stream::iter(batches)
            .map(|batch| {
                let mut client = self.client.clone();
                let txn = transaction(&batch, fence);
                async move {
                    let r = bounded("txn", client.txn(txn)).await;
                    (batch, r)
                }
            })
            .buffered(PIPELINE)
            .collect()
            .await;
        let mut first_error = None;
        let mut retry = Vec::new();
        for (batch, result) in results {
            applied.txns += 1;
            match result {
                Ok(resp) if resp.succeeded() => {
                    let rev = resp.header().map_or(0, |h| h.revision());
                    self.record(&batch, rev, &mut applied);
                }
                Ok(_) => retry.extend(batch),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if !retry.is_empty() {
            if let Some(f) = fence {
                self.check_fence(f).await?;
            }
            // Someone changed keys of these batches: one transaction per key finds which.
            for change in retry {
                applied.txns += 1;
                let batch = [change];
                let resp = bounded("txn", self.client.txn(transaction(&batch, fence))).await?;
                let [change] = batch;
                if resp.succeeded() {
                    let rev = resp.header().map_or(0, |h| h.revision());
                    self.record(std::slice::from_ref(&change), rev, &mut applied);
                } else {
                    if let Some(f) = fence {
                        self.check_fence(f).await?;
                    }
                    self.reread(change.key(), &mut applied).await?;
                }
            }
        }
        Ok(applied)
    }

    /// Takes `changes` as written without writing them (`--dry-run`), so each is printed once.
    pub fn pretend(&mut self, changes: Vec<Change>) {
        self.record(&changes, 0, &mut Applied::default());
    }

    fn record(&mut self, batch: &[Change], revision: i64, applied: &mut Applied) {
        for c in batch {
            match c {
                Change::Create { key, value } | Change::Update { key, value, .. } => {
                    applied.puts += 1;
                    self.owned.insert(
                        key.clone(),
                        Owned {
                            value: value.clone(),
                            mod_revision: revision,
                        },
                    );
                }
                Change::Delete { key, .. } => {
                    applied.deletes += 1;
                    self.owned.remove(key);
                }
            }
        }
    }

    /// After a conflict on `key`: learn what it holds now.
    async fn reread(&mut self, key: &str, applied: &mut Applied) -> Result<(), StoreError> {
        applied.conflicts += 1;
        let resp = bounded("get", self.client.get(key, None)).await?;
        match resp.kvs().first() {
            None => {
                debug!(
                    key,
                    "key we wrote was deleted by someone else; it will be rewritten"
                );
                self.owned.remove(key);
            }
            Some(kv) if owner_of(kv.value()).as_deref() == Some(self.owner.as_str()) => {
                self.owned.insert(
                    key.to_owned(),
                    Owned {
                        value: String::from_utf8_lossy(kv.value()).into_owned(),
                        mod_revision: kv.mod_revision(),
                    },
                );
            }
            Some(_) => {
                warn!(
                    key,
                    "key belongs to another writer (no {} marker of ours); left alone",
                    crate::plan::OWNER_FIELD
                );
                applied.foreign += 1;
                self.owned.remove(key);
                self.foreign.insert(key.to_owned());
            }
        }
        Ok(())
    }

    async fn check_fence(&self, f: &Fence) -> Result<(), StoreError> {
        let resp = bounded("get", self.client.clone().get(f.key.clone(), None)).await?;
        match resp.kvs().first() {
            Some(kv) if kv.create_revision() == f.revision => Ok(()),
            _ => Err(StoreError::LostLeadership(
                String::from_utf8_lossy(&f.key).into_owned(),
            )),
        }
    }
}

/// Splits changes (in key order) into transactions of about [`MAX_OPS`], never splitting the
/// keys of one name: a name turns from CNAME to addresses (or back) in one transaction, so no
/// reader sees both or neither.
fn batches(changes: Vec<Change>) -> Vec<Vec<Change>> {
    let mut out: Vec<Vec<Change>> = Vec::new();
    let mut current: Vec<Change> = Vec::new();
    for c in changes {
        let boundary = current
            .last()
            .is_none_or(|last| name_key(last.key()) != name_key(c.key()));
        if current.len() >= MAX_OPS && boundary {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The key of the name a record key belongs to: `<name>/_cname` or `<name>/<cluster>/<address>`.
fn name_key(key: &str) -> &str {
    match key.strip_suffix(crate::plan::CNAME_LEAF) {
        Some(name) => name.trim_end_matches('/'),
        None => key.rsplitn(3, '/').nth(2).unwrap_or(key),
    }
}

fn transaction(batch: &[Change], fence: Option<&Fence>) -> Txn {
    let mut compares = Vec::with_capacity(batch.len() + 1);
    if let Some(f) = fence {
        compares.push(Compare::create_revision(
            f.key.clone(),
            CompareOp::Equal,
            f.revision,
        ));
    }
    let mut ops = Vec::with_capacity(batch.len());
    for c in batch {
        match c {
            Change::Create { key, value } => {
                compares.push(Compare::version(key.as_str(), CompareOp::Equal, 0));
                ops.push(TxnOp::put(key.as_str(), value.as_str(), None));
            }
            Change::Update {
                key,
                value,
                mod_revision,
            } => {
                compares.push(Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    *mod_revision,
                ));
                ops.push(TxnOp::put(key.as_str(), value.as_str(), None));
            }
            Change::Delete { key, mod_revision } => {
                compares.push(Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    *mod_revision,
                ));
                ops.push(TxnOp::delete(key.as_str(), None));
            }
        }
    }
    Txn::new().when(compares).and_then(ops)
}
