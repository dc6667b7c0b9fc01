//! A test fake of the Kubernetes API server, for running the real kube-rs client, watchers,
//! reflectors and event recorder against (no real API server can be installed where the tests
//! run).
//!
//! [`FakeKubeApi::start`] serves plain HTTP/1.1 on a free loopback port from its own OS thread
//! and tokio runtime, so it works from plain `#[test]` functions and inside tokio tests alike.
//! The test drives the cluster's state directly ([`FakeKubeApi::apply`], [`FakeKubeApi::delete`],
//! [`FakeKubeApi::compact`], [`FakeKubeApi::set_reachable`], …) and inspects what clients did
//! ([`FakeKubeApi::requests`], [`FakeKubeApi::events`]). [`write_kubeconfig`] points clients at
//! one or several fakes.
//!
//! # Faithful to the real server
//!
//! - URLs (`/api/v1/...`, `/apis/{group}/{version}/...`, namespaced, all-namespaces and
//!   cluster-scoped collections, objects, `/status`), `GET /version`, `/api`, `/apis` and the
//!   per-group-version discovery documents. The kinds served are the table in `kinds.rs`
//!   (Service, Node, ConfigMap, Namespace, Event, Endpoints, EndpointSlice,
//!   events.k8s.io Event, Lease, Pod, networking.k8s.io Ingress, gateway.networking.k8s.io
//!   Gateway, HTTPRoute and GRPCRoute (v1) and TLSRoute (v1alpha2), externaldns.k8s.io
//!   DNSEndpoint (v1alpha1)); anything else is a 404 `Status`. The custom kinds are served as
//!   if their CRDs were installed, with a `/status` subresource (as their CRDs declare; the
//!   DNSEndpoint CRD declares one too).
//! - One global resourceVersion (etcd's revision) bumped by every write; `uid`,
//!   `creationTimestamp` and `generation` kept by the server; an update that changes nothing
//!   writes nothing (no new resourceVersion, no watch event), as in the real server.
//! - LIST: items without `apiVersion`/`kind`; `limit` + `continue` paging over a consistent
//!   snapshot (later pages show the state at the first page's resourceVersion);
//!   `resourceVersion` + `resourceVersionMatch=Exact`; an expired continue token or exact
//!   revision is 410 `Expired`; `labelSelector` (`=`, `==`, `!=`, exists, `!`, `in`, `notin`)
//!   and `fieldSelector` (`metadata.name`, `metadata.namespace`, a few per-kind fields; `=`,
//!   `==`, `!=`).
//! - WATCH: chunked newline-delimited JSON events; from a resourceVersion, the history after it
//!   then live events; from none or `"0"`, synthetic `ADDED` events for the current state;
//!   from a compacted revision, HTTP 200 with one `ERROR` event (a 410 `Expired` `Status`) and
//!   the end of the stream; `allowWatchBookmarks`, `timeoutSeconds`, selectors (an object that
//!   starts or stops matching is `ADDED` or `DELETED` for that watch), and streaming lists
//!   (`sendInitialEvents=true`: the current state, then a bookmark annotated
//!   `k8s.io/initial-events-end`).
//! - Writes: POST (409 `AlreadyExists`; `generateName`), PUT (404 when absent, 409 `Conflict`
//!   on a stale `metadata.resourceVersion`), PATCH, DELETE (with `DeleteOptions` preconditions;
//!   returns the object) and DELETE on a collection. `/status` writes change only `.status`;
//!   writes to the main resource keep the stored `.status`; a client's Service create drops
//!   the status it sent.
//! - Errors are `Status` objects (`kind`, `status: Failure`, `message`, `reason`, `code`,
//!   `details`) with the real reasons and messages, so kube's error type parses them.
//! - Unreachability: [`FakeKubeApi::set_reachable`]`(false)` resets every open connection,
//!   idle keep-alive ones and watch streams included, and resets new ones as soon as they are
//!   accepted.
//!
//! # Simplified
//!
//! - Strategic merge patch is applied as a JSON merge patch: lists are replaced whole rather
//!   than merged by key. `$setElementOrder` hints are ignored; other directives (`$patch`,
//!   `$retainKeys`, …) are refused with 400 rather than misapplied.
//! - Server-side apply (`application/apply-patch+yaml`) is a merge patch of the applied
//!   configuration onto the stored object (creating it when absent): no `managedFields`, no
//!   field ownership or conflicts, `force` ignored, fields left out of the configuration are
//!   kept rather than removed.
//! - Deletion is immediate: no finalizers, `deletionTimestamp` or garbage collection.
//! - PUT on an absent object is 404 for every kind (the real server creates Leases, Events and
//!   Endpoints that way).
//! - A list or watch from a resourceVersion newer than the current one is served from the
//!   current one (the real server waits for it; an `Exact` list answers 504 at once here).
//! - No validation or defaulting of object contents, no admission, no authentication or
//!   authorization (any token or none is accepted), no `dryRun` (refused with 400), no
//!   namespace existence check, no `managedFields`.
//! - `generation` starts at 1 and goes up when anything outside `metadata` and `status` changes,
//!   for every kind.
//! - The core/v1 and events.k8s.io/v1 Events are stored separately (the real server stores one
//!   resource and converts between the two).
//! - [`FakeKubeApi::lose_watch_events`] makes watches miss an object's changes, which a real
//!   server does not do on purpose (it models a client whose cache missed events).
//! - A watch without `timeoutSeconds` lasts 30 minutes; without [`Options::bookmark_every`],
//!   bookmarks are sent only when the test calls [`FakeKubeApi::bookmark`].

mod http;
mod kinds;
mod ops;
mod patch;
mod select;
mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};

use ops::{Caller, Part};
use store::{Key, Store};

/// Options for [`FakeKubeApi::start_with`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Send a `BOOKMARK` on every watch that asked for bookmarks this often (real API servers
    /// send one about every minute). `None` (the default): only on [`FakeKubeApi::bookmark`].
    pub bookmark_every: Option<Duration>,
    /// Listen in this network namespace (an `ip netns` name) on this address, instead of on
    /// 127.0.0.1 where the test runs, so that processes in namespaces reach the fake.
    pub netns: Option<(String, std::net::IpAddr)>,
}

/// Whether the fake is reachable; `epoch` counts the cuts, so a connection knows it must go.
#[derive(Debug, Clone, Copy)]
struct Reach {
    reachable: bool,
    epoch: u64,
}

/// What the server thread and the test share.
#[derive(Debug)]
struct Shared {
    store: Mutex<Store>,
    requests: Mutex<Vec<(String, String)>>,
    /// Resources (indices in the kinds table) every request to is refused with 403.
    forbidden: Mutex<std::collections::BTreeSet<usize>>,
    reach: watch::Sender<Reach>,
    addr: SocketAddr,
}

/// Locks, carrying on after a panic elsewhere (the state stays usable for the report).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A test fake of the Kubernetes API server on `127.0.0.1`; stopped on drop. See the
/// [module documentation](self) for what it does like the real server and what it simplifies.
#[derive(Debug)]
pub struct FakeKubeApi {
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeKubeApi {
    /// Starts on 127.0.0.1 with an OS-chosen port.
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// Starts with options, on 127.0.0.1 (or [`Options::netns`]) with an OS-chosen port.
    pub fn start_with(options: Options) -> Self {
        let listener = match &options.netns {
            None => std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"),
            Some((ns, ip)) => bind_in_netns(ns, *ip),
        };
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let addr = listener.local_addr().expect("listener address");
        let (reach, _) = watch::channel(Reach {
            reachable: true,
            epoch: 0,
        });
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            requests: Mutex::new(Vec::new()),
            forbidden: Mutex::default(),
            reach,
            addr,
        });
        let (shutdown, stop) = oneshot::channel();
        let server = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kube-fake-{}", addr.port()))
            .spawn(move || run(listener, server, options, stop))
            .expect("spawn the Kubernetes API fake's thread");
        Self {
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Creates or replaces the object with this apiVersion, kind, namespace (default:
    /// `default`, for namespaced kinds) and name, status included; fills in
    /// `metadata.resourceVersion`, `uid`, `creationTimestamp` and `generation`; emits `ADDED`
    /// or `MODIFIED` (nothing when the object is unchanged). Returns the stored object.
    ///
    /// Panics on a kind the fake does not serve or an object without a name.
    pub fn apply(&self, mut obj: Value) -> Value {
        let (res, r) = ops::resource_of(&obj);
        let ns = r.namespaced.then(|| {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        });
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("apply needs metadata.name: {obj}"))
            .to_owned();
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let key = Key {
            res,
            ns: ns.clone().unwrap_or_default(),
            name: name.clone(),
        };
        let mut store = lock(&self.shared.store);
        let written = if store.get(&key).is_some() {
            ops::replace(
                &mut store,
                res,
                ns.as_deref(),
                &name,
                obj,
                Part::Main,
                Caller::Test,
            )
        } else {
            ops::create(&mut store, res, ns.as_deref(), obj, Caller::Test)
        };
        let written = written.unwrap_or_else(|e| panic!("apply {} {name}: {}", r.kind, e.message));
        (*written).clone()
    }

    /// [`apply`](Self::apply) for each object of a YAML text: `---`-separated documents, and
    /// the items of `kind: List` documents.
    pub fn apply_yaml(&self, yaml: &str) {
        let objects = patch::yaml_objects(yaml).unwrap_or_else(|e| panic!("bad YAML: {e}"));
        for obj in objects {
            self.apply(obj);
        }
    }

    fn key(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Key {
        let res = kinds::by_kind(api_version, kind).unwrap_or_else(|| {
            panic!("the Kubernetes API fake does not serve {api_version} {kind}")
        });
        let ns = if kinds::RESOURCES[res].namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        Key {
            res,
            ns: ns.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Deletes the object and emits `DELETED`; false when it does not exist.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let key = self.key(api_version, kind, namespace, name);
        ops::delete(&mut lock(&self.shared.store), key, None).is_ok()
    }

    /// The stored object, with `apiVersion` and `kind`.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let key = self.key(api_version, kind, namespace, name);
        lock(&self.shared.store).get(&key).map(|o| (**o).clone())
    }

    /// Every stored object of a kind, all namespaces, in namespace and name order.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let key = self.key(api_version, kind, None, "");
        let store = lock(&self.shared.store);
        store
            .items(key.res, None)
            .into_iter()
            .map(|(_, o)| (*o).clone())
            .collect()
    }

    /// Every Event stored (written by clients through core/v1 or events.k8s.io/v1, or applied
    /// by the test), oldest first, in its current state (a series shows its latest count).
    pub fn events(&self) -> Vec<Value> {
        lock(&self.shared.store).events()
    }

    /// `true`: every request to the resource `plural` (`ingresses`, `httproutes`, …) is refused
    /// with 403 `Forbidden`, as when RBAC denies it; watches already open go on, as on the
    /// real server (until their timeout, or a [`FakeKubeApi::set_reachable`] cut). `false`:
    /// allowed again.
    pub fn forbid(&self, plural: &str, forbidden: bool) {
        let res = kinds::RESOURCES
            .iter()
            .position(|r| r.plural == plural)
            .unwrap_or_else(|| panic!("the fake serves no resource {plural:?}"));
        let mut f = lock(&self.shared.forbidden);
        if forbidden {
            f.insert(res);
        } else {
            f.remove(&res);
        }
    }

    /// `false`: every open connection (watches included) is reset at once, and new connections
    /// are accepted and reset immediately, as when the cluster is unreachable. `true`: back to
    /// normal.
    pub fn set_reachable(&self, reachable: bool) {
        self.shared.reach.send_modify(|r| {
            if !reachable {
                r.epoch += 1;
            }
            r.reachable = reachable;
        });
        if !reachable {
            lock(&self.shared.store).cut_watches();
        }
    }

    /// From now on until [`hear_watch_events`](Self::hear_watch_events), no watch hears of
    /// changes to this object: live events are dropped and a watch resuming from an older
    /// revision skips them, as if lost on their way (a client's watch cache that missed them).
    /// Lists, and watches started without a resourceVersion, show the object as it is. The
    /// object need not exist yet.
    pub fn lose_watch_events(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) {
        let key = self.key(api_version, kind, namespace, name);
        lock(&self.shared.store).mute(key, false);
    }

    /// As [`lose_watch_events`](Self::lose_watch_events), only for clients' writes to the
    /// object's `/status` (the writer does not hear of its own status write).
    pub fn lose_status_write_events(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) {
        let key = self.key(api_version, kind, namespace, name);
        lock(&self.shared.store).mute(key, true);
    }

    /// Watches hear of this object's changes again (those lost stay lost).
    pub fn hear_watch_events(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) {
        let key = self.key(api_version, kind, namespace, name);
        lock(&self.shared.store).unmute(&key);
    }

    /// Forgets the history, as etcd compaction does: a watch, a continued list or an exact
    /// list from an older resourceVersion gets 410 Gone / `Expired`.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Sends a `BOOKMARK` with the current resourceVersion on every open watch that asked for
    /// bookmarks.
    pub fn bookmark(&self) {
        lock(&self.shared.store).bookmark();
    }

    /// `(METHOD, path?query)` of every request served, oldest first.
    pub fn requests(&self) -> Vec<(String, String)> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests served were writes (any method but GET).
    pub fn write_count(&self) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|(m, _)| m != "GET")
            .count()
    }

    /// The current resourceVersion: a global counter, like etcd's revision.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).rv()
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The thread may have stopped already (it only does on a panic).
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the Kubernetes API fake's thread panicked");
        }
    }
}

/// The server thread: accept loop, one task per connection, the bookmark ticker.
/// Binds a listener inside namespace `ns`: from a thread that enters it (a socket stays in the
/// namespace it was made in).
fn bind_in_netns(ns: &str, ip: std::net::IpAddr) -> std::net::TcpListener {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("enter {path}: {e}"));
            std::net::TcpListener::bind((ip, 0))
                .unwrap_or_else(|e| panic!("bind {ip} in {ns}: {e}"))
        })
        .join()
        .expect("the binding thread")
    })
}

fn run(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    options: Options,
    stop: oneshot::Receiver<()>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kube-fake-worker")
        .enable_all()
        .build()
        .expect("build the Kubernetes API fake's runtime");
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("register the listener");
        if let Some(every) = options.bookmark_every {
            let shared = shared.clone();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now() + every;
                let mut tick = tokio::time::interval_at(start, every);
                loop {
                    tick.tick().await;
                    lock(&shared.store).bookmark();
                }
            });
        }
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(connection(stream, shared.clone()));
                    }
                }
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// Serves one connection until the client closes it or the fake becomes unreachable, in
/// which case it is reset (`SO_LINGER` 0), whatever it was doing.
async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let mut reach = shared.reach.subscribe();
    let Reach { reachable, epoch } = *reach.borrow_and_update();
    if !reachable {
        // Reset rather than close; if that fails it still closes.
        let _ = stream.set_zero_linger();
        return;
    }
    // A second handle on the socket, to reset it once hyper owns the stream.
    let Ok((stream, twin)) = stream
        .into_std()
        .and_then(|s| Ok((s.try_clone()?, s)))
        .and_then(|(twin, s)| Ok((TcpStream::from_std(s)?, TcpSocket::from_std_stream(twin))))
    else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let server = shared.clone();
    let service = service_fn(move |req| http::serve(server.clone(), epoch, req));
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => return,
        _ = reach.wait_for(|r| r.epoch != epoch) => {}
    }
    // The socket closes when `twin`, its last handle, drops: with a reset, not a FIN.
    let _ = twin.set_zero_linger();
}

/// Writes a kubeconfig with one context per `(context name, fake)` — a cluster with
/// `server: <url>` and a user with a dummy token of the same name, namespace `default` —
/// `current-context` the first, and returns its path (`dir/kubeconfig`).
pub fn write_kubeconfig(dir: &Path, contexts: &[(&str, &FakeKubeApi)]) -> PathBuf {
    assert!(
        !contexts.is_empty(),
        "a kubeconfig needs at least one context"
    );
    // JSON strings are YAML strings: quoting any context name safely.
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let mut clusters = String::new();
    let mut users = String::new();
    let mut ctxs = String::new();
    for (name, fake) in contexts {
        let n = q(name);
        clusters += &format!("- name: {n}\n  cluster:\n    server: {}\n", q(&fake.url()));
        users += &format!(
            "- name: {n}\n  user:\n    token: {}\n",
            q(&format!("fake-token-{name}"))
        );
        ctxs += &format!(
            "- name: {n}\n  context:\n    cluster: {n}\n    user: {n}\n    namespace: default\n"
        );
    }
    let text = format!(
        "apiVersion: v1\nkind: Config\npreferences: {{}}\nclusters:\n{clusters}users:\n{users}contexts:\n{ctxs}current-context: {}\n",
        q(contexts[0].0)
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).expect("write the kubeconfig");
    path
}
