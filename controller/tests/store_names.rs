//! The store against real etcd: the keys of one name change together, in the normal path,
//! after a write conflict, and (in steps that keep it answering) for a name too big for one
//! transaction. An etcd watch on the prefix replays every revision, and each name is checked
//! after each one: all old or all new, never empty, never a CNAME beside addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions, WatchStream};
use fedplane_controller::plan::{self, CNAME_LEAF, Desired, OwnedValue};
use fedplane_controller::store::{Applied, Fence, Store};
use fedplane_testkit::Etcd;

/// The root a [`Store`] writes under (the key of `example.com`).
const ROOT: &str = "/skydns/com/example";
const OWNER: &str = "fedplane-controller/federation";
const WAIT: Duration = Duration::from_secs(20);

fn value(host: &str) -> String {
    serde_json::to_string(&OwnedValue {
        host: host.into(),
        ttl: 30,
        managed_by: OWNER.into(),
        ..OwnedValue::default()
    })
    .expect("JSON")
}

fn name_key(name: &str) -> String {
    format!("{ROOT}/svc/{name}")
}

/// `name` as a CNAME.
fn cname(d: &mut Desired, name: &str) {
    d.insert(
        format!("{}/{CNAME_LEAF}", name_key(name)),
        value("target.example.com"),
    );
}

/// `name` with `n` addresses.
fn addresses(d: &mut Desired, name: &str, n: usize) {
    for j in 0..n {
        let (a, b) = (j / 250, j % 250);
        d.insert(
            format!("{}/fcp/10-0-{a}-{b}", name_key(name)),
            value(&format!("10.0.{a}.{b}")),
        );
    }
}

/// etcd, a client, and the fence of a leader key.
struct Setup {
    etcd: Etcd,
    client: Client,
    fence: Fence,
}

impl Setup {
    async fn start() -> Self {
        let etcd = Etcd::start();
        let mut client = Client::connect([etcd.endpoint()], None)
            .await
            .expect("etcd client");
        let leader = "/election/federation/leader";
        client.put(leader, "test", None).await.expect("put leader");
        let resp = client.get(leader, None).await.expect("get leader");
        let revision = resp.kvs()[0].create_revision();
        Self {
            etcd,
            client,
            fence: Fence {
                key: leader.into(),
                revision,
            },
        }
    }

    /// Writes `desired` from nothing, and returns a store that has read it back.
    async fn write(&self, desired: &Desired) -> Store {
        let mut store = self.store();
        let applied = store
            .apply(plan::diff(desired, &BTreeMap::new()), Some(&self.fence))
            .await
            .expect("initial write");
        assert_eq!(applied.puts, desired.len());
        let mut store = self.store();
        store.load().await.expect("load");
        assert_eq!(store.owned().len(), desired.len());
        store
    }

    fn store(&self) -> Store {
        Store::new(self.client.clone(), ROOT, OWNER.into())
    }

    /// A watch on the root from the next revision.
    async fn watch(&self) -> Watch {
        let from = self.revision().await + 1;
        let stream = self
            .client
            .clone()
            .watch(
                format!("{ROOT}/"),
                Some(WatchOptions::new().with_prefix().with_start_revision(from)),
            )
            .await
            .expect("watch");
        Watch { stream }
    }

    async fn revision(&self) -> i64 {
        let resp = self.client.clone().get("/", None).await.expect("get");
        resp.header().expect("header").revision()
    }

    /// Writes `new` over what `store` holds.
    async fn apply(&self, store: &mut Store, new: &Desired) -> Applied {
        let changes = plan::diff(new, store.owned());
        store
            .apply(changes, Some(&self.fence))
            .await
            .expect("apply")
    }

    /// What etcd holds under the root.
    fn dump(&self) -> BTreeMap<String, String> {
        self.etcd
            .dump(ROOT)
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect()
    }
}

/// One revision: its changes (key, new value or `None` for a delete).
type Revision = (i64, Vec<(String, Option<String>)>);

struct Watch {
    stream: WatchStream,
}

impl Watch {
    /// Every revision seen up to `until`, each with its changes.
    async fn until(&mut self, until: i64) -> Vec<Revision> {
        let mut out: Vec<Revision> = Vec::new();
        let mut seen = 0;
        while seen < until {
            let resp = tokio::time::timeout(WAIT, self.stream.message())
                .await
                .unwrap_or_else(|_| panic!("no watch event up to revision {until} in {WAIT:?}"))
                .expect("watch")
                .expect("watch ended");
            for e in resp.events() {
                let kv = e.kv().expect("event kv");
                let rev = kv.mod_revision();
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let v = match e.event_type() {
                    EventType::Put => Some(String::from_utf8_lossy(kv.value()).into_owned()),
                    EventType::Delete => None,
                };
                match out.last_mut() {
                    Some((r, changes)) if *r == rev => changes.push((key, v)),
                    _ => out.push((rev, vec![(key, v)])),
                }
                seen = seen.max(rev);
            }
        }
        out
    }
}

/// How much a name may be between its old and new records after a revision.
#[derive(Clone, Copy, PartialEq)]
enum Between {
    /// Exactly its old or its new records.
    Nothing,
    /// Also a mix of old and new addresses (a name too big for one transaction).
    Addresses,
}

/// The records of `name` in `state`.
fn of<'a>(state: &'a BTreeMap<String, String>, name: &str) -> BTreeMap<&'a str, &'a str> {
    let prefix = format!("{name}/");
    state
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Replays `revisions` on `old` and checks every name after each revision; returns how many
/// revisions were checked.
fn check(old: &Desired, new: &Desired, revisions: &[Revision], between: Between) -> usize {
    let names: BTreeSet<String> = old
        .keys()
        .chain(new.keys())
        .map(|k| {
            let rest = k.strip_prefix(&format!("{ROOT}/svc/")).expect("under root");
            name_key(rest.split('/').next().expect("name"))
        })
        .collect();
    let mut state = old.clone();
    for (rev, changes) in revisions {
        for (k, v) in changes {
            match v {
                Some(v) => state.insert(k.clone(), v.clone()),
                None => state.remove(k),
            };
        }
        for name in &names {
            let (now, was, will) = (of(&state, name), of(old, name), of(new, name));
            if now == was || now == will {
                continue;
            }
            let cnames = now.keys().filter(|k| k.ends_with(CNAME_LEAF)).count();
            let addrs = now.len() - cnames;
            let known = now
                .iter()
                .all(|(k, v)| was.get(k) == Some(v) || will.get(k) == Some(v));
            let partial = between == Between::Addresses && cnames == 0 && addrs > 0 && known;
            assert!(
                partial,
                "after revision {rev}, {name} is neither its old nor its new records: \
                 {cnames} CNAME and {addrs} addresses (old: {}, new: {} keys)",
                was.len(),
                will.len()
            );
        }
    }
    revisions.len()
}

#[tokio::test]
async fn a_write_conflict_leaves_every_name_all_old_or_all_new() {
    let s = Setup::start().await;
    // One batch: 20 CNAMEs turn into 2 addresses each, 20 names of 2 addresses into CNAMEs.
    let (mut old, mut new) = (Desired::new(), Desired::new());
    for i in 0..20 {
        let (to_a, to_cname) = (format!("n{i:02}"), format!("n{:02}", i + 20));
        cname(&mut old, &to_a);
        addresses(&mut new, &to_a, 2);
        addresses(&mut old, &to_cname, 2);
        cname(&mut new, &to_cname);
    }
    let mut store = s.write(&old).await;
    let mut watch = s.watch().await;
    // Between our read and our write, another writer touches a key of two names (same value,
    // new mod revision): the CNAME of one, an address of the other.
    let touched = [
        format!("{}/{CNAME_LEAF}", name_key("n05")),
        format!("{}/fcp/10-0-0-1", name_key("n25")),
    ];
    for k in &touched {
        s.client
            .clone()
            .put(k.as_str(), old[k].as_str(), None)
            .await
            .expect("foreign put");
    }
    let applied = s.apply(&mut store, &new).await;
    assert_eq!(applied.conflicts, 2, "{applied:?}");
    assert_eq!(applied.foreign, 0);
    let mut revisions = watch.until(s.revision().await).await;
    check(&old, &new, &revisions, Between::Nothing);
    // The two touched names are left as they were, the 38 others are written whole.
    let now = s.dump();
    for (name, was) in [("n05", &old), ("n25", &old), ("n00", &new), ("n39", &new)] {
        assert_eq!(
            of(&now, &name_key(name)),
            of(was, &name_key(name)),
            "{name}"
        );
    }
    // The next sync (the controller plans again after a conflict) writes them.
    let applied = s.apply(&mut store, &new).await;
    assert_eq!(applied.conflicts, 0, "{applied:?}");
    assert_eq!(s.dump(), new);
    revisions.extend(watch.until(s.revision().await).await);
    assert!(check(&old, &new, &revisions, Between::Nothing) >= 4);
}

#[tokio::test]
async fn names_are_never_split_across_transactions_at_etcds_limit() {
    let s = Setup::start().await;
    // 33 changes a name (its CNAME goes, 32 addresses come): three fill 99 keys, a fourth in
    // the same transaction would pass etcd's 128 operations.
    let (mut old, mut new) = (Desired::new(), Desired::new());
    for i in 0..8 {
        let name = format!("m{i}");
        cname(&mut old, &name);
        addresses(&mut new, &name, 32);
    }
    let mut store = s.write(&old).await;
    let mut watch = s.watch().await;
    let applied = s.apply(&mut store, &new).await;
    assert_eq!(applied.conflicts, 0);
    assert_eq!((applied.puts, applied.deletes), (8 * 32, 8));
    assert_eq!(s.dump(), new);
    let revisions = watch.until(s.revision().await).await;
    check(&old, &new, &revisions, Between::Nothing);
}

#[tokio::test]
async fn a_name_too_big_for_one_transaction_keeps_answering_while_it_changes() {
    let s = Setup::start().await;
    let (mut old, mut new) = (Desired::new(), Desired::new());
    cname(&mut old, "big-to-a");
    addresses(&mut new, "big-to-a", 300);
    addresses(&mut old, "big-to-cname", 300);
    cname(&mut new, "big-to-cname");
    addresses(&mut old, "big-swap", 200);
    for j in 0..200 {
        // The same count of other addresses.
        new.insert(
            format!("{}/usa/10-1-0-{j}", name_key("big-swap")),
            value(&format!("10.1.0.{j}")),
        );
    }
    cname(&mut old, "small");
    addresses(&mut new, "small", 2);
    let mut store = s.write(&old).await;
    let mut watch = s.watch().await;
    let applied = s.apply(&mut store, &new).await;
    assert_eq!(applied.conflicts, 0);
    assert_eq!(s.dump(), new);
    let revisions = watch.until(s.revision().await).await;
    assert!(check(&old, &new, &revisions, Between::Addresses) >= 7);
}
