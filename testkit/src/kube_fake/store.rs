//! The fake's etcd: objects by key, one global revision (the resourceVersion), the history of
//! changes since the last compaction, and the open watches fed from it.
//!
//! All of it sits behind one mutex; every change is committed and sent to the matching watches
//! while the lock is held, so a watch sees changes in revision order with no gap between the
//! history it replays and the live events that follow.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use hyper::body::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::kinds::RESOURCES;
use super::select::Selector;

/// A stored object: always with `apiVersion`, `kind` and `metadata.resourceVersion`.
pub(crate) type Obj = Arc<Value>;

/// Where an object is stored: its resource (index into [`RESOURCES`]), namespace (`""` when
/// cluster-scoped) and name. The order is etcd's key order within a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub res: usize,
    pub ns: String,
    pub name: String,
}

#[derive(Debug)]
struct Entry {
    obj: Obj,
    /// The revision that created it (orders [`Store::events`]).
    created: u64,
}

/// One committed change.
#[derive(Debug)]
struct Change {
    rv: u64,
    key: Key,
    old: Option<Obj>,
    /// The new state, or for a deletion the last state stamped with the deletion's revision
    /// (what a `DELETED` watch event carries).
    obj: Obj,
    deleted: bool,
}

/// What a watch selects.
#[derive(Debug, Clone)]
pub(crate) struct WatchSpec {
    pub res: usize,
    /// `None` for the all-namespaces (or cluster-scoped) collection.
    pub ns: Option<String>,
    pub selector: Selector,
    pub bookmarks: bool,
}

impl WatchSpec {
    fn covers(&self, key: &Key) -> bool {
        key.res == self.res && self.ns.as_ref().is_none_or(|ns| *ns == key.ns)
    }
}

/// What the HTTP side of a watch receives.
#[derive(Debug)]
pub(crate) enum WatchMsg {
    /// One newline-terminated JSON watch event.
    Line(Bytes),
    /// The cluster became unreachable: send nothing more, not even the end of the stream (the
    /// connection is being reset).
    Cut,
}

#[derive(Debug)]
struct Watcher {
    spec: WatchSpec,
    tx: UnboundedSender<WatchMsg>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WatchFrom {
    /// Synthetic `ADDED` events for the current state, then live events.
    Now,
    /// Every change after this revision, then live events.
    After(u64),
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn line(kind: &str, object: &Value) -> WatchMsg {
    let mut bytes = serde_json::to_vec(&Line { kind, object }).expect("JSON values serialize");
    bytes.push(b'\n');
    WatchMsg::Line(Bytes::from(bytes))
}

/// The whole state of one fake API server.
#[derive(Debug)]
pub(crate) struct Store {
    rv: u64,
    /// Every change after this revision is in `history`.
    compacted: u64,
    objects: BTreeMap<Key, Entry>,
    history: Vec<Change>,
    watchers: Vec<Watcher>,
    uid_salt: u64,
    uids: u64,
    /// Objects whose changes no watch hears (a test's lost events), and which changes: with
    /// `true`, only clients' writes to `/status`. Lists still show them.
    muted: BTreeMap<Key, bool>,
    /// The revisions of the changes lost that way (a resumed watch skips them too).
    lost: BTreeSet<u64>,
}

impl Store {
    pub fn new() -> Self {
        Self {
            rv: 1,
            compacted: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            watchers: Vec::new(),
            uid_salt: RandomState::new().build_hasher().finish(),
            uids: 0,
            muted: BTreeMap::new(),
            lost: BTreeSet::new(),
        }
    }

    /// The current revision.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &Key) -> Option<&Obj> {
        self.objects.get(key).map(|e| &e.obj)
    }

    /// The current objects of a resource, in key order.
    pub fn items(&self, res: usize, ns: Option<&str>) -> Vec<(Key, Obj)> {
        self.objects
            .iter()
            .filter(|(k, _)| k.res == res && ns.is_none_or(|ns| k.ns == ns))
            .map(|(k, e)| (k.clone(), e.obj.clone()))
            .collect()
    }

    /// The objects of a resource as they were at revision `rv` (current state with the later
    /// changes undone), or `Err(compacted)` when that revision is forgotten.
    pub fn items_at(&self, res: usize, ns: Option<&str>, rv: u64) -> Result<Vec<(Key, Obj)>, u64> {
        if rv < self.compacted {
            return Err(self.compacted);
        }
        let mut items: BTreeMap<Key, Obj> = self.items(res, ns).into_iter().collect();
        for c in self.history.iter().rev().take_while(|c| c.rv > rv) {
            if c.key.res == res && ns.is_none_or(|ns| c.key.ns == ns) {
                match &c.old {
                    Some(old) => items.insert(c.key.clone(), old.clone()),
                    None => items.remove(&c.key),
                };
            }
        }
        Ok(items.into_iter().collect())
    }

    /// Stores `new` under `key` (or deletes it when `None`) at the next revision, records the
    /// change and sends it to every matching watch. Returns the stored object (the tombstone
    /// for a deletion).
    pub fn commit(&mut self, key: Key, new: Option<Value>) -> Obj {
        self.commit_as(key, new, false)
    }

    /// [`commit`](Self::commit), saying whether the change is a client's write to `/status`.
    pub fn commit_as(&mut self, key: Key, new: Option<Value>, status_write: bool) -> Obj {
        self.rv += 1;
        let rv = self.rv;
        let stamp = |mut v: Value| {
            v["metadata"]["resourceVersion"] = Value::String(rv.to_string());
            Arc::new(v)
        };
        let old = self.objects.get(&key).map(|e| (e.obj.clone(), e.created));
        let (obj, deleted) = match new {
            Some(v) => {
                let obj = stamp(v);
                let created = old.as_ref().map_or(rv, |(_, c)| *c);
                let entry = Entry {
                    obj: obj.clone(),
                    created,
                };
                self.objects.insert(key.clone(), entry);
                (obj, false)
            }
            None => {
                self.objects.remove(&key);
                let last = old.as_ref().map(|(o, _)| (**o).clone());
                (stamp(last.expect("only stored objects are deleted")), true)
            }
        };
        let change = Change {
            rv,
            key,
            old: old.map(|(o, _)| o),
            obj: obj.clone(),
            deleted,
        };
        let muted = self
            .muted
            .get(&change.key)
            .is_some_and(|only_status| !only_status || status_write);
        if muted {
            self.lost.insert(rv);
        }
        self.watchers
            .retain(|w| match event_for(&w.spec, &change).filter(|_| !muted) {
                Some((kind, o)) => w.tx.send(line(kind, o)).is_ok(),
                None => !w.tx.is_closed(),
            });
        self.history.push(change);
        obj
    }

    /// A fresh UID, unique across fakes (random per fake) and within one (a counter).
    pub fn new_uid(&mut self) -> String {
        self.uids += 1;
        let s = self.uid_salt;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            s >> 32,
            (s >> 16) & 0xffff,
            s & 0xfff,
            (s >> 48) & 0xfff,
            self.uids
        )
    }

    /// From now on no watch hears of changes to the object at `key` (only of clients' writes
    /// to its `/status` with `only_status`), neither live nor when a watch resumes from an
    /// older revision: events lost on their way. Lists show them.
    pub fn mute(&mut self, key: Key, only_status: bool) {
        self.muted.insert(key, only_status);
    }

    /// Changes to the object at `key` are heard again (those lost stay lost).
    pub fn unmute(&mut self, key: &Key) {
        self.muted.remove(key);
    }

    /// Forgets the history: reading or watching from an older revision now fails with 410.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    /// Sends a `BOOKMARK` at the current revision on every watch that asked for bookmarks.
    pub fn bookmark(&mut self) {
        let rv = self.rv;
        self.watchers.retain(|w| {
            !w.spec.bookmarks || w.tx.send(bookmark_line(w.spec.res, rv, false)).is_ok()
        });
    }

    /// Cuts every open watch (the cluster became unreachable).
    pub fn cut_watches(&mut self) {
        for w in self.watchers.drain(..) {
            // A closed receiver means the watch already ended.
            let _ = w.tx.send(WatchMsg::Cut);
        }
    }

    /// Opens a watch. With `initial_events_end`, the synthetic `ADDED` events of
    /// [`WatchFrom::Now`] are followed by the bookmark that ends a streaming list.
    /// `Err(compacted)` when `from` is older than the compaction.
    pub fn watch(
        &mut self,
        spec: WatchSpec,
        from: WatchFrom,
        initial_events_end: bool,
    ) -> Result<UnboundedReceiver<WatchMsg>, u64> {
        let (tx, rx) = unbounded_channel();
        let send = |msg| {
            // The receiver is still in hand: sending cannot fail.
            let _ = tx.send(msg);
        };
        match from {
            WatchFrom::Now => {
                let ns = spec.ns.as_deref();
                for (_, obj) in self.items(spec.res, ns) {
                    if spec.selector.matches(&obj) {
                        send(line("ADDED", &obj));
                    }
                }
                if initial_events_end {
                    send(bookmark_line(spec.res, self.rv, true));
                }
            }
            WatchFrom::After(rv) if rv < self.compacted => return Err(self.compacted),
            WatchFrom::After(rv) => {
                let heard = |c: &&Change| c.rv > rv && !self.lost.contains(&c.rv);
                for c in self.history.iter().filter(heard) {
                    if let Some((kind, obj)) = event_for(&spec, c) {
                        send(line(kind, obj));
                    }
                }
            }
        }
        self.watchers.push(Watcher { spec, tx });
        Ok(rx)
    }

    /// Every Event object (core/v1 and events.k8s.io/v1), oldest first.
    pub fn events(&self) -> Vec<Value> {
        let mut events: Vec<&Entry> = self
            .objects
            .iter()
            .filter(|(k, _)| RESOURCES[k.res].kind == "Event")
            .map(|(_, e)| e)
            .collect();
        events.sort_by_key(|e| e.created);
        events.iter().map(|e| (*e.obj).clone()).collect()
    }
}

/// The event a watch sees for a change, as the real server's watch cache decides it: an object
/// that starts or stops matching the selector is `ADDED` or `DELETED` for that watch.
fn event_for<'c>(spec: &WatchSpec, c: &'c Change) -> Option<(&'static str, &'c Value)> {
    if !spec.covers(&c.key) {
        return None;
    }
    let was = c.old.as_ref().is_some_and(|o| spec.selector.matches(o));
    let is = !c.deleted && spec.selector.matches(&c.obj);
    match (was, is) {
        (true, true) => Some(("MODIFIED", &c.obj)),
        (false, true) => Some(("ADDED", &c.obj)),
        (true, false) => Some(("DELETED", &c.obj)),
        (false, false) => None,
    }
}

fn bookmark_line(res: usize, rv: u64, initial_events_end: bool) -> WatchMsg {
    let r = &RESOURCES[res];
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": metadata});
    line("BOOKMARK", &object)
}
