//! The etcd edge: the keys under the prefix that carry our ownership marker, and the writes
//! that change them.
//!
//! - [`Store::load`] reads every key under the prefix (paged) and keeps those that are ours.
//! - [`Store::apply`] writes a diff in transactions, several in flight. Each is conditional on
//!   the leader key (the fence) and on every key it touches: a create needs the key absent, an
//!   update or delete needs the mod revision we last saw. So a key someone else wrote in
//!   between is never overwritten.
//! - The keys of one name (its address leaves and its CNAME) change in one transaction, so a
//!   reader (fedplane-dns's watch) never sees a name with no records or with a CNAME beside
//!   addresses: whole names are packed into transactions of at most [`TXN_KEYS`] keys (etcd's
//!   `--max-txn-ops` counts the fence's compare too). A transaction whose compares fail is
//!   retried one name per transaction; a name that fails alone is left as it was and its keys
//!   re-read (the next sync writes it whole), and a key that turned out to be someone else's
//!   is left alone from then on.
//! - A name with more than [`TXN_KEYS`] changes (that many addresses) cannot change in one
//!   transaction; it is written in steps that keep it answering (see [`steps`]).

use std::collections::{BTreeMap, HashSet};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use fedplane_ops::etcd::{Paging, REQUEST_TIMEOUT, RequestError, read_prefix};
use futures::StreamExt;
use tracing::{debug, warn};

use crate::plan::{Change, Owned, owner_of};

/// The most compares, and the most operations, etcd takes in one transaction: its
/// `--max-txn-ops`, 128 by default.
pub const MAX_TXN_OPS: usize = 128;
/// Keys per transaction: a key is one compare and one operation, and the fence one more
/// compare.
pub const TXN_KEYS: usize = MAX_TXN_OPS - 1;
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
    /// Keys that changed under us, at least one per name left unwritten because of them
    /// (re-read; the next sync writes those names).
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
    /// `fence` when given. The keys of one name change in one transaction (see the module
    /// docs); a name whose keys changed under us is left as it was, re-read, and counted in
    /// [`Applied::conflicts`], so the caller plans again and writes it whole.
    pub async fn apply(
        &mut self,
        changes: Vec<Change>,
        fence: Option<&Fence>,
    ) -> Result<Applied, StoreError> {
        let mut applied = Applied::default();
        let Split { batches, large } = split(changes);
        let failed = self.send(batches, fence, &mut applied).await?;
        if !failed.is_empty() {
            if let Some(f) = fence {
                self.check_fence(f).await?;
            }
            // Someone changed keys of these batches: one transaction per name finds which
            // names, and writes the others whole.
            let one_each = failed.into_iter().map(|name| vec![name]).collect();
            let failed = self.send(one_each, fence, &mut applied).await?;
            if !failed.is_empty() {
                if let Some(f) = fence {
                    self.check_fence(f).await?;
                }
                for name in failed {
                    self.reread(&name, &mut applied).await?;
                }
            }
        }
        for steps in large {
            self.apply_large(steps, fence, &mut applied).await?;
        }
        Ok(applied)
    }

    /// Sends `batches` (each a list of whole names), [`PIPELINE`] in flight, and records those
    /// that succeeded. Returns the names of the batches whose compares failed.
    async fn send(
        &mut self,
        batches: Vec<Vec<Vec<Change>>>,
        fence: Option<&Fence>,
        applied: &mut Applied,
    ) -> Result<Vec<Vec<Change>>, StoreError> {
        let results: Vec<_> = futures::stream::iter(batches)
            .map(|batch| {
                let mut client = self.client.clone();
                let txn = transaction(batch.iter().flatten(), fence);
                async move {
                    let r = bounded("txn", client.txn(txn)).await;
                    (batch, r)
                }
            })
            .buffered(PIPELINE)
            .collect()
            .await;
        let mut first_error = None;
        let mut failed = Vec::new();
        for (batch, result) in results {
            applied.txns += 1;
            match result {
                Ok(resp) if resp.succeeded() => {
                    let rev = resp.header().map_or(0, |h| h.revision());
                    self.record(batch.iter().flatten(), rev, applied);
                }
                Ok(_) => failed.extend(batch),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(failed),
        }
    }

    /// Writes a name too big for one transaction, step by step (see [`steps`]); a step that
    /// fails stops the name where it is, which is a state a reader may see (never empty, never
    /// a CNAME beside addresses).
    async fn apply_large(
        &mut self,
        steps: Vec<Vec<Change>>,
        fence: Option<&Fence>,
        applied: &mut Applied,
    ) -> Result<(), StoreError> {
        for step in steps {
            applied.txns += 1;
            let resp = bounded("txn", self.client.txn(transaction(&step, fence))).await?;
            if resp.succeeded() {
                let rev = resp.header().map_or(0, |h| h.revision());
                self.record(&step, rev, applied);
            } else {
                if let Some(f) = fence {
                    self.check_fence(f).await?;
                }
                self.reread(&step, applied).await?;
                break;
            }
        }
        Ok(())
    }

    /// Takes `changes` as written without writing them (`--dry-run`), so each is printed once.
    pub fn pretend(&mut self, changes: Vec<Change>) {
        self.record(&changes, 0, &mut Applied::default());
    }

    fn record<'a>(
        &mut self,
        changes: impl IntoIterator<Item = &'a Change>,
        revision: i64,
        applied: &mut Applied,
    ) {
        for c in changes {
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

    /// After the transaction of `name` (its changes) failed: learn what its keys hold now.
    /// Counts the keys found changed, and at least one per name.
    async fn reread(&mut self, name: &[Change], applied: &mut Applied) -> Result<(), StoreError> {
        let mut changed = 0;
        for c in name {
            let key = c.key();
            let resp = bounded("get", self.client.get(key, None)).await?;
            let kv = resp.kvs().first();
            let as_seen = match c {
                Change::Create { .. } => kv.is_none(),
                Change::Update { mod_revision, .. } | Change::Delete { mod_revision, .. } => {
                    kv.is_some_and(|kv| kv.mod_revision() == *mod_revision)
                }
            };
            if as_seen {
                continue;
            }
            changed += 1;
            match kv {
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
        }
        applied.conflicts += changed.max(1);
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

/// The transactions of one [`Store::apply`].
#[derive(Debug, Default)]
struct Split {
    /// Whole names (each the changes of one name), packed into transactions of at most
    /// [`TXN_KEYS`] keys, in name order.
    batches: Vec<Vec<Vec<Change>>>,
    /// Names with more than [`TXN_KEYS`] changes: each its [`steps`].
    large: Vec<Vec<Vec<Change>>>,
}

/// Groups `changes` by name and packs whole names into transactions.
fn split(changes: Vec<Change>) -> Split {
    let mut names: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for c in changes {
        names
            .entry(name_key(c.key()).to_owned())
            .or_default()
            .push(c);
    }
    let mut out = Split::default();
    let mut current: Vec<Vec<Change>> = Vec::new();
    let mut keys = 0;
    for name in names.into_values() {
        if name.len() > TXN_KEYS {
            out.large.push(steps(name));
            continue;
        }
        if keys + name.len() > TXN_KEYS {
            out.batches.push(std::mem::take(&mut current));
            keys = 0;
        }
        keys += name.len();
        current.push(name);
    }
    if !current.is_empty() {
        out.batches.push(current);
    }
    out
}

/// The transactions of a name with more changes than one transaction holds, in an order that
/// keeps it answering at every step: the old CNAME goes with the first addresses, new and
/// changed addresses come before the deletes, and a new CNAME comes with the last deletes.
/// Between steps the name may hold part of its old and new addresses.
fn steps(mut name: Vec<Change>) -> Vec<Vec<Change>> {
    // SRV records (below the name, name-valued) are deleted first and written after the
    // addresses: a name left with only them would be a CNAME to its own SRV target.
    let is_srv = |k: &str| {
        k.strip_suffix(crate::plan::SRV_LEAF)
            .is_some_and(|k| k.ends_with('/'))
    };
    name.sort_by_key(|c| match (is_cname(c.key()) || is_srv(c.key()), c) {
        (true, Change::Delete { .. }) => 0,
        (false, Change::Create { .. } | Change::Update { .. }) => 1,
        (false, Change::Delete { .. }) => 2,
        (true, Change::Create { .. } | Change::Update { .. }) => 3,
    });
    let mut steps: Vec<Vec<Change>> = name.chunks(TXN_KEYS).map(<[Change]>::to_vec).collect();
    // A new CNAME alone in the last step would leave the name empty after the step before it
    // (every address deleted): it takes that step's last delete along.
    if let [.., before, last] = steps.as_mut_slice()
        && last.len() == 1
        && is_cname(last[0].key())
        && before
            .last()
            .is_some_and(|c| matches!(c, Change::Delete { .. }))
        && let Some(moved) = before.pop()
    {
        last.insert(0, moved);
    }
    steps
}

fn is_cname(key: &str) -> bool {
    key.strip_suffix(crate::plan::CNAME_LEAF)
        .is_some_and(|k| k.ends_with('/'))
}

/// The key of the name a record key belongs to: `<name>/_cname`, `<name>/<cluster>/<address>`;
/// an SRV record `<name>/_<proto>/_<port>/_srv` goes with `<name>`, whose subtree holds it (so
/// the name is never left holding only its SRV records between two transactions).
fn name_key(key: &str) -> &str {
    if let Some(name) = key
        .strip_suffix(crate::plan::CNAME_LEAF)
        .and_then(|k| k.strip_suffix('/'))
    {
        return name;
    }
    if let Some(srv) = key
        .strip_suffix(crate::plan::SRV_LEAF)
        .and_then(|k| k.strip_suffix('/'))
    {
        return srv.rsplitn(3, '/').nth(2).unwrap_or(srv);
    }
    key.rsplitn(3, '/').nth(2).unwrap_or(key)
}

fn transaction<'a>(changes: impl IntoIterator<Item = &'a Change>, fence: Option<&Fence>) -> Txn {
    let mut compares = Vec::new();
    if let Some(f) = fence {
        compares.push(Compare::create_revision(
            f.key.clone(),
            CompareOp::Equal,
            f.revision,
        ));
    }
    let mut ops = Vec::new();
    for c in changes {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn create(key: &str) -> Change {
        Change::Create {
            key: key.into(),
            value: "v".into(),
        }
    }

    fn delete(key: &str) -> Change {
        Change::Delete {
            key: key.into(),
            mod_revision: 1,
        }
    }

    /// `n` names of `size` address keys each, in key order.
    fn names(n: usize, size: usize) -> Vec<Change> {
        let mut out = Vec::new();
        for i in 0..n {
            for j in 0..size {
                out.push(create(&format!("/skydns/com/example/n{i:03}/c/10-0-0-{j}")));
            }
        }
        out
    }

    #[test]
    fn name_key_of_an_address_and_of_a_cname() {
        assert_eq!(
            name_key("/skydns/com/example/svc/x/fcp/10-0-0-1"),
            "/skydns/com/example/svc/x"
        );
        assert_eq!(
            name_key("/skydns/com/example/svc/x/_cname"),
            "/skydns/com/example/svc/x"
        );
        assert!(!is_cname("/skydns/com/example/svc/x_cname"));
        // An SRV record goes with the name whose subtree holds it.
        assert_eq!(
            name_key("/skydns/com/example/svc/x/_tcp/_http/_srv"),
            "/skydns/com/example/svc/x"
        );
    }

    #[test]
    fn whole_names_are_packed_within_etcds_limit() {
        // 33 keys a name: three fill 99 keys, a fourth would pass etcd's 128 with the fence.
        for size in [1, 2, 3, 33, 64, TXN_KEYS] {
            let split = split(names(50, size));
            assert!(split.large.is_empty());
            let mut seen = BTreeSet::new();
            for batch in &split.batches {
                let keys: usize = batch.iter().map(Vec::len).sum();
                assert!(keys <= TXN_KEYS, "{keys} keys in one transaction");
                assert!(keys + size > TXN_KEYS || batch == split.batches.last().expect("a batch"));
                for name in batch {
                    assert_eq!(name.len(), size, "a name split across transactions");
                    assert!(seen.insert(name_key(name[0].key())));
                }
            }
            assert_eq!(seen.len(), 50);
        }
    }

    #[test]
    fn a_name_is_grouped_even_when_its_keys_are_not_adjacent() {
        let changes = vec![
            create("/p/a/_cname"),
            create("/p/a/b/_cname"),
            create("/p/a/c1/10-0-0-1"),
        ];
        let split = split(changes);
        assert_eq!(split.batches.len(), 1);
        assert_eq!(split.batches[0].len(), 2);
        assert!(split.batches[0].iter().any(|n| n.len() == 2));
    }

    #[test]
    fn a_name_too_big_for_one_transaction_keeps_answering_at_every_step() {
        let addr = |j: usize| format!("/p/big/c/10-0-{}-{}", j / 250, j % 250);
        // CNAME → 300 addresses: the CNAME goes with the first addresses.
        let mut to_a = vec![delete("/p/big/_cname")];
        to_a.extend((0..300).map(|j| create(&addr(j))));
        let s = split(to_a);
        assert!(s.batches.is_empty());
        let steps = &s.large[0];
        assert_eq!(steps.len(), 3);
        assert!(steps.iter().all(|s| s.len() <= TXN_KEYS));
        assert_eq!(steps[0][0], delete("/p/big/_cname"));
        assert!(
            steps[0][1..]
                .iter()
                .all(|c| matches!(c, Change::Create { .. }))
        );
        // 300 addresses → CNAME: the CNAME comes with the last deletes.
        let mut to_cname: Vec<Change> = (0..300).map(|j| delete(&addr(j))).collect();
        to_cname.insert(0, create("/p/big/_cname"));
        let steps = &split(to_cname).large[0];
        let last = steps.last().expect("steps");
        assert_eq!(last.last(), Some(&create("/p/big/_cname")));
        assert!(last.len() > 1);
        // 254 addresses → CNAME: the CNAME would be alone in the last step; it takes a delete.
        let mut to_cname: Vec<Change> = (0..254).map(|j| delete(&addr(j))).collect();
        to_cname.push(create("/p/big/_cname"));
        let steps = &split(to_cname).large[0];
        assert!(steps.iter().all(|s| s.len() <= TXN_KEYS));
        let last = steps.last().expect("steps");
        assert_eq!(last.len(), 2, "{last:?}");
        assert!(matches!(last[0], Change::Delete { .. }));
        assert_eq!(steps.concat().len(), 255);
        // Addresses replaced: puts before deletes, so the name is never empty.
        let mut swap: Vec<Change> = (0..200).map(|j| delete(&addr(j))).collect();
        swap.extend((200..400).map(|j| create(&addr(j))));
        let order: Vec<bool> = split(swap).large[0]
            .concat()
            .iter()
            .map(|c| matches!(c, Change::Delete { .. }))
            .collect();
        assert!(order.is_sorted());
    }
}
