//! Self-test of the Kubernetes API server fake, driven by the real kube-rs client, watcher,
//! reflector and event recorder. Every test starts its own fake, so they run in parallel.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use fedplane_testkit::kube_fake::{FakeKubeApi, Options, write_kubeconfig};
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};

/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(10);

async fn client_for(fake: &FakeKubeApi) -> Client {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_kubeconfig(dir.path(), &[("fake", fake)]);
    context_client(&path, Some("fake")).await
}

async fn context_client(path: &std::path::Path, context: Option<&str>) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read the kubeconfig");
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("kube accepts the kubeconfig");
    Client::try_from(config).expect("build a client")
}

fn svc(ns: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    })
}

/// The next item of a stream, within [`WAIT`].
async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("timed out waiting for the next stream item")
}

fn store_names(store: &Store<Service>) -> BTreeSet<String> {
    store.state().iter().map(|s| s.name_any()).collect()
}

fn fake_names(fake: &FakeKubeApi) -> BTreeSet<String> {
    fake.list("v1", "Service")
        .iter()
        .map(|s| s["metadata"]["name"].as_str().expect("a name").to_owned())
        .collect()
}

fn api_error(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("expected an API error, got {other}"),
    }
}

/// Retries quickly, so tests of reconnection take milliseconds.
#[derive(Debug)]
struct Quick;

impl Iterator for Quick {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(20))
    }
}

impl Backoff for Quick {
    fn reset(&mut self) {}
}

#[tokio::test]
async fn reflector_follows_objects_applied_before_and_after_it_started() {
    let fake = FakeKubeApi::start();
    fake.apply(svc("default", "before", json!({"app": "web"})));
    let api: Api<Service> = Api::all(client_for(&fake).await);
    let (store, writer) = reflector::store();
    let mut touched = reflector(writer, watcher(api, watcher::Config::default()))
        .touched_objects()
        .boxed();

    let first = next(&mut touched)
        .await
        .expect("stream open")
        .expect("no error");
    assert_eq!(first.name_any(), "before");

    fake.apply(svc("other", "after", json!({})));
    let added = next(&mut touched)
        .await
        .expect("stream open")
        .expect("no error");
    assert_eq!(added.name_any(), "after");

    fake.apply(svc("default", "before", json!({"app": "db"})));
    let modified = next(&mut touched)
        .await
        .expect("stream open")
        .expect("no error");
    assert_eq!(modified.labels()["app"], "db");

    assert!(fake.delete("v1", "Service", Some("other"), "after"));
    assert!(!fake.delete("v1", "Service", Some("other"), "after"));
    let deleted = next(&mut touched)
        .await
        .expect("stream open")
        .expect("no error");
    assert_eq!(deleted.name_any(), "after");

    assert_eq!(store_names(&store), fake_names(&fake));
    assert_eq!(store.state()[0].labels()["app"], "db");
    assert_eq!(fake.write_count(), 0, "a watcher only reads");
}

#[tokio::test]
async fn watcher_reports_errors_while_unreachable_then_relists_after_compaction() {
    let fake = FakeKubeApi::start();
    fake.apply(svc("default", "a", json!({})));
    fake.apply(svc("default", "b", json!({})));
    let api: Api<Service> = Api::all(client_for(&fake).await);
    let (store, writer) = reflector::store();
    let mut events = reflector(writer, watcher(api, watcher::Config::default()))
        .backoff(Quick)
        .boxed();
    loop {
        let event = next(&mut events)
            .await
            .expect("stream open")
            .expect("no error");
        if matches!(event, watcher::Event::InitDone) {
            break;
        }
    }

    // An event received: the watch is open.
    fake.apply(svc("default", "z", json!({})));
    let event = next(&mut events)
        .await
        .expect("stream open")
        .expect("no error");
    assert!(matches!(&event, watcher::Event::Apply(s) if s.name_any() == "z"));

    // Changes the watcher cannot see, then forgotten: its resourceVersion is now too old.
    fake.set_reachable(false);
    fake.apply(svc("default", "c", json!({})));
    assert!(fake.delete("v1", "Service", Some("default"), "a"));
    fake.compact();

    let cut = next(&mut events).await.expect("stream open");
    assert!(
        matches!(cut, Err(watcher::Error::WatchFailed(_))),
        "{cut:?}"
    );
    let restart = next(&mut events).await.expect("stream open");
    assert!(
        matches!(restart, Err(watcher::Error::WatchStartFailed(_))),
        "{restart:?}"
    );

    let relists_before = list_requests(&fake);
    fake.set_reachable(true);
    let mut saw_gone = false;
    loop {
        match next(&mut events).await.expect("stream open") {
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                assert_eq!(status.reason, "Expired");
                saw_gone = true;
            }
            Ok(watcher::Event::InitDone) if saw_gone => break,
            _ => {}
        }
    }
    assert!(
        list_requests(&fake) > relists_before,
        "the watcher listed again"
    );
    assert_eq!(store_names(&store), fake_names(&fake));
    let expected = ["b", "c", "z"].map(str::to_owned);
    assert_eq!(fake_names(&fake), BTreeSet::from(expected));
}

/// Asserts the next event of a watch: its type and the object's name.
async fn expect_event(
    w: &mut (impl Stream<Item = kube::Result<WatchEvent<Service>>> + Unpin),
    kind: &str,
    name: &str,
) {
    let event = next(w).await.expect("stream open").expect("no error");
    let got = match &event {
        WatchEvent::Added(s) => ("ADDED", s.name_any()),
        WatchEvent::Modified(s) => ("MODIFIED", s.name_any()),
        WatchEvent::Deleted(s) => ("DELETED", s.name_any()),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(got, (kind, name.to_owned()));
}

fn list_requests(fake: &FakeKubeApi) -> usize {
    fake.requests()
        .iter()
        .filter(|(m, p)| m == "GET" && p.contains("/services") && !p.contains("watch="))
        .count()
}

#[tokio::test]
async fn an_unreachable_fake_fails_requests_until_it_is_reachable_again() {
    let fake = FakeKubeApi::start();
    fake.apply(svc("default", "a", json!({})));
    let api: Api<Service> = Api::namespaced(client_for(&fake).await, "default");
    api.get("a").await.expect("reachable");
    let served = fake.requests().len();

    fake.set_reachable(false);
    api.get("a").await.expect_err("unreachable");
    let mut raw = std::net::TcpStream::connect(fake.url().trim_start_matches("http://"))
        .expect("connections are still accepted");
    raw.set_read_timeout(Some(WAIT)).expect("read timeout");
    let _ = raw.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    match raw.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("an unreachable fake answered {n} bytes"),
    }
    assert_eq!(fake.requests().len(), served, "nothing was served");

    fake.set_reachable(true);
    api.get("a").await.expect("reachable again");
}

#[tokio::test]
async fn bookmarks_arrive_only_on_watches_that_ask_for_them() {
    let fake = FakeKubeApi::start();
    fake.apply(svc("default", "a", json!({})));
    let api: Api<Service> = Api::namespaced(client_for(&fake).await, "default");
    let mut with = api
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch")
        .boxed();
    let mut without = api
        .watch(&WatchParams::default().disable_bookmarks(), "0")
        .await
        .expect("watch")
        .boxed();
    for w in [&mut with, &mut without] {
        let event = next(w).await.expect("stream open").expect("no error");
        assert!(matches!(&event, WatchEvent::Added(s) if s.name_any() == "a"));
    }

    fake.bookmark();
    match next(&mut with)
        .await
        .expect("stream open")
        .expect("no error")
    {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                b.metadata.resource_version,
                fake.resource_version().to_string()
            );
            assert_eq!(b.types.kind, "Service");
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    fake.apply(svc("default", "b", json!({})));
    for w in [&mut with, &mut without] {
        let event = next(w).await.expect("stream open").expect("no error");
        assert!(
            matches!(&event, WatchEvent::Added(s) if s.name_any() == "b"),
            "{event:?}"
        );
    }
}

#[tokio::test]
async fn periodic_bookmarks_when_configured() {
    let fake = FakeKubeApi::start_with(Options {
        bookmark_every: Some(Duration::from_millis(50)),
        ..Options::default()
    });
    let api: Api<Service> = Api::all(client_for(&fake).await);
    let mut w = api
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch")
        .boxed();
    for _ in 0..2 {
        let event = next(&mut w).await.expect("stream open").expect("no error");
        assert!(matches!(&event, WatchEvent::Bookmark(_)), "{event:?}");
    }
}

#[tokio::test]
async fn a_watch_ends_after_its_timeout_seconds() {
    let fake = FakeKubeApi::start();
    let api: Api<Service> = Api::all(client_for(&fake).await);
    let started = Instant::now();
    let mut w = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .expect("watch")
        .boxed();
    assert!(next(&mut w).await.is_none(), "the stream ends");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn streaming_list_watcher_gets_the_initial_state() {
    let fake = FakeKubeApi::start();
    fake.apply(svc("default", "a", json!({})));
    let api: Api<Service> = Api::all(client_for(&fake).await);
    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher(api, config).boxed();
    let mut names = Vec::new();
    loop {
        match next(&mut events)
            .await
            .expect("stream open")
            .expect("no error")
        {
            watcher::Event::InitApply(s) => names.push(s.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(names, ["a"]);
    assert!(
        fake.requests()
            .iter()
            .any(|(_, p)| p.contains("sendInitialEvents=true"))
    );
}

#[tokio::test]
async fn paged_lists_are_complete_and_consistent() {
    let fake = FakeKubeApi::start();
    for i in 0..1200 {
        fake.apply(svc("default", &format!("svc-{i:04}"), json!({})));
    }
    let api: Api<Service> = Api::all(client_for(&fake).await);

    let mut names = BTreeSet::new();
    let mut params = ListParams::default().limit(500);
    let mut pages = 0;
    let first_rv = loop {
        let page = api.list(&params).await.expect("list");
        pages += 1;
        if pages == 1 {
            assert_eq!(page.items.len(), 500);
            // Changes between pages do not show: later pages are the first page's snapshot.
            assert!(fake.delete("v1", "Service", Some("default"), "svc-1100"));
            fake.apply(svc("default", "svc-9999", json!({})));
        }
        names.extend(page.items.iter().map(ResourceExt::name_any));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => break page.metadata.resource_version.expect("a resourceVersion"),
        }
    };
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 1200);
    assert!(names.contains("svc-1100") && !names.contains("svc-9999"));
    assert!(first_rv.parse::<u64>().expect("numeric") < fake.resource_version());

    let (store, writer) = reflector::store();
    let mut events = reflector(writer, watcher(api, watcher::Config::default())).boxed();
    while !matches!(next(&mut events).await, Some(Ok(watcher::Event::InitDone))) {}
    assert_eq!(store_names(&store), fake_names(&fake));
    assert_eq!(store.state().len(), 1200);
}

#[tokio::test]
async fn status_writes_change_only_status_and_stale_replaces_conflict() {
    let fake = FakeKubeApi::start();
    let api: Api<Service> = Api::namespaced(client_for(&fake).await, "default");
    let mut with_status = svc("default", "web", json!({}));
    with_status["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}});
    let sent: Service = serde_json::from_value(with_status).expect("a Service");
    let created = api
        .create(&PostParams::default(), &sent)
        .await
        .expect("create");
    assert!(
        created.status.is_none(),
        "a client's create drops the status"
    );
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let patch = json!({
        "spec": {"type": "ClusterIP"},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
    });
    let patched = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch status");
    let ip = |s: &Service| {
        let lb = s.status.as_ref().and_then(|s| s.load_balancer.as_ref());
        lb.and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| i[0].ip.clone())
    };
    let spec_type = |s: &Service| s.spec.as_ref().and_then(|s| s.type_.clone());
    assert_eq!(ip(&patched).as_deref(), Some("192.0.2.10"));
    assert_eq!(spec_type(&patched).as_deref(), Some("LoadBalancer"));
    assert_eq!(patched.metadata.generation, Some(1));

    let mut main = patched.clone();
    main.status = None;
    main.spec.as_mut().expect("spec").type_ = Some("NodePort".into());
    let replaced = api
        .replace("web", &PostParams::default(), &main)
        .await
        .expect("replace");
    assert_eq!(ip(&replaced).as_deref(), Some("192.0.2.10"), "status kept");
    assert_eq!(spec_type(&replaced).as_deref(), Some("NodePort"));
    assert_eq!(replaced.metadata.generation, Some(2));

    let mut status_only = replaced.clone();
    status_only.spec.as_mut().expect("spec").type_ = Some("ClusterIP".into());
    let lb = status_only
        .status
        .as_mut()
        .and_then(|s| s.load_balancer.as_mut());
    lb.expect("load balancer status").ingress = None;
    let replaced = api
        .replace_status("web", &PostParams::default(), &status_only)
        .await
        .expect("replace status");
    assert_eq!(ip(&replaced), None);
    assert_eq!(
        spec_type(&replaced).as_deref(),
        Some("NodePort"),
        "spec kept"
    );

    let stale = api.replace("web", &PostParams::default(), &created).await;
    assert_eq!(
        api_error(stale.expect_err("stale")),
        (409, "Conflict".into())
    );
    let stored = fake
        .get("v1", "Service", Some("default"), "web")
        .expect("stored");
    assert_eq!(stored["spec"]["type"], "NodePort");
}

#[tokio::test]
async fn lease_create_get_and_replace_with_conflicts() {
    let fake = FakeKubeApi::start();
    let leases: Api<Lease> = Api::namespaced(client_for(&fake).await, "default");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }))
    .expect("a Lease");
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let again = leases.create(&PostParams::default(), &lease).await;
    assert_eq!(
        api_error(again.expect_err("exists")),
        (409, "AlreadyExists".into())
    );

    let got = leases.get("leader").await.expect("get");
    let mut taken = got.clone();
    taken.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    let taken = leases
        .replace("leader", &PostParams::default(), &taken)
        .await
        .expect("take");
    assert_ne!(taken.resource_version(), got.resource_version());

    let stale = leases.replace("leader", &PostParams::default(), &got).await;
    assert_eq!(
        api_error(stale.expect_err("stale")),
        (409, "Conflict".into())
    );
    let mut absent = got.clone();
    absent.metadata.name = Some("absent".into());
    absent.metadata.resource_version = None;
    let missing = leases
        .replace("absent", &PostParams::default(), &absent)
        .await;
    assert_eq!(
        api_error(missing.expect_err("absent")),
        (404, "NotFound".into())
    );

    let stored = fake
        .get("coordination.k8s.io/v1", "Lease", Some("default"), "leader")
        .expect("stored");
    assert_eq!(stored["spec"]["holderIdentity"], "b");
}

#[tokio::test]
async fn recorder_events_are_stored_and_repeats_become_a_series() {
    let fake = FakeKubeApi::start();
    let recorder = Recorder::new(
        client_for(&fake).await,
        Reporter {
            controller: "fedplane-test".into(),
            instance: Some("test-0".into()),
        },
    );
    let regarding = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: Some("default".into()),
        name: Some("web".into()),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "Published".into(),
        note: Some("published to the federation".into()),
        action: "Publish".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &regarding)
        .await
        .expect("first publish");
    recorder
        .publish(&event, &regarding)
        .await
        .expect("second publish");

    let events = fake.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["apiVersion"], "events.k8s.io/v1");
    assert_eq!(e["reason"], "Published");
    assert_eq!(e["note"], "published to the federation");
    assert_eq!(e["regarding"]["name"], "web");
    assert_eq!(e["series"]["count"], 2);
    let methods: Vec<String> = fake.requests().into_iter().map(|(m, _)| m).collect();
    assert_eq!(methods, ["POST", "PATCH"]);
    assert_eq!(fake.write_count(), 2);
}

#[tokio::test]
async fn label_and_field_selectors_on_list_and_watch() {
    let fake = FakeKubeApi::start();
    fake.apply(svc("default", "a", json!({"app": "web", "tier": "front"})));
    fake.apply(svc("default", "b", json!({"app": "db"})));
    fake.apply(svc("other", "c", json!({"app": "web"})));
    fake.apply(svc("other", "d", json!({})));
    let api: Api<Service> = Api::all(client_for(&fake).await);

    let names = |params: ListParams| {
        let api = api.clone();
        async move {
            let list = api.list(&params).await.expect("list");
            list.items
                .iter()
                .map(ResourceExt::name_any)
                .collect::<Vec<_>>()
        }
    };
    let labels = |s: &str| ListParams::default().labels(s);
    let fields = |s: &str| ListParams::default().fields(s);
    assert_eq!(names(labels("app=web")).await, ["a", "c"]);
    assert_eq!(names(labels("app==web,tier")).await, ["a"]);
    assert_eq!(names(labels("app!=web")).await, ["b", "d"]);
    assert_eq!(names(labels("app in (web, db)")).await, ["a", "b", "c"]);
    assert_eq!(names(labels("app notin (web)")).await, ["b", "d"]);
    assert_eq!(names(labels("!tier,app")).await, ["b", "c"]);
    assert_eq!(names(fields("metadata.name=b")).await, ["b"]);
    assert_eq!(
        names(fields("metadata.namespace!=default")).await,
        ["c", "d"]
    );
    let both = labels("app=web").fields("metadata.namespace==other");
    assert_eq!(names(both).await, ["c"]);
    let bad = api.list(&labels("app in web")).await;
    assert_eq!(
        api_error(bad.expect_err("malformed")),
        (400, "BadRequest".into())
    );
    let bad = api.list(&fields("spec.type=LoadBalancer")).await;
    assert_eq!(
        api_error(bad.expect_err("unsupported")),
        (400, "BadRequest".into())
    );

    let mut web = api
        .watch(&WatchParams::default().labels("app=web"), "0")
        .await
        .expect("watch")
        .boxed();
    let mut named_b = api
        .watch(&WatchParams::default().fields("metadata.name=b"), "0")
        .await
        .expect("watch")
        .boxed();
    expect_event(&mut web, "ADDED", "a").await;
    expect_event(&mut web, "ADDED", "c").await;
    expect_event(&mut named_b, "ADDED", "b").await;

    fake.apply(svc("default", "b", json!({"app": "web"})));
    expect_event(&mut web, "ADDED", "b").await;
    expect_event(&mut named_b, "MODIFIED", "b").await;
    fake.apply(svc("default", "a", json!({"app": "db"})));
    expect_event(&mut web, "DELETED", "a").await;
    fake.apply(svc("other", "d", json!({"unrelated": "x"})));
    fake.apply(svc("other", "c", json!({"app": "web", "v": "2"})));
    expect_event(&mut web, "MODIFIED", "c").await;
}

#[tokio::test]
async fn merge_json_strategic_and_apply_patches() {
    let fake = FakeKubeApi::start();
    let api: Api<ConfigMap> = Api::namespaced(client_for(&fake).await, "default");
    let data = |c: &ConfigMap| serde_json::to_value(&c.data).expect("serializable");

    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}});
    let cm = api
        .patch(
            "cfg",
            &PatchParams::apply("selftest"),
            &Patch::Apply(&applied),
        )
        .await
        .expect("server-side apply creates");
    assert_eq!(data(&cm), json!({"a": "1"}));

    let merge = json!({"data": {"a": null, "b": "2"}});
    let cm = api
        .patch("cfg", &PatchParams::default(), &Patch::Merge(&merge))
        .await
        .expect("merge patch");
    assert_eq!(data(&cm), json!({"b": "2"}));

    let ops = json!([
        {"op": "add", "path": "/data/c", "value": "3"},
        {"op": "test", "path": "/data/b", "value": "2"}
    ]);
    let json_patch = Patch::Json::<()>(serde_json::from_value(ops).expect("a JSON patch"));
    let cm = api
        .patch("cfg", &PatchParams::default(), &json_patch)
        .await
        .expect("JSON patch");
    assert_eq!(data(&cm), json!({"b": "2", "c": "3"}));

    let failing = json!([{"op": "test", "path": "/data/b", "value": "9"}]);
    let failing = Patch::Json::<()>(serde_json::from_value(failing).expect("a JSON patch"));
    let err = api.patch("cfg", &PatchParams::default(), &failing).await;
    assert_eq!(
        api_error(err.expect_err("test fails")),
        (422, "Invalid".into())
    );

    let strategic = json!({"data": {"d": "4"}});
    let cm = api
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Strategic(&strategic),
        )
        .await
        .expect("strategic merge patch");
    assert_eq!(data(&cm), json!({"b": "2", "c": "3", "d": "4"}));

    let rv = fake.resource_version();
    let cm = api
        .patch("cfg", &PatchParams::default(), &Patch::Merge(&strategic))
        .await
        .expect("no-op patch");
    assert_eq!(
        fake.resource_version(),
        rv,
        "an unchanged object is not written"
    );
    assert_eq!(cm.resource_version(), Some(rv.to_string()));

    let stale = json!({"metadata": {"resourceVersion": "1"}, "data": {"e": "5"}});
    let err = api
        .patch("cfg", &PatchParams::default(), &Patch::Merge(&stale))
        .await;
    assert_eq!(api_error(err.expect_err("stale")), (409, "Conflict".into()));

    let gone = api
        .delete("cfg", &Default::default())
        .await
        .expect("delete");
    assert!(gone.is_left(), "the deleted object comes back");
    let err = api.get("cfg").await;
    assert_eq!(
        api_error(err.expect_err("deleted")),
        (404, "NotFound".into())
    );
}

#[tokio::test]
async fn a_kubeconfig_with_one_context_per_fake() {
    let (east, west) = (FakeKubeApi::start(), FakeKubeApi::start());
    east.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: only-east}\n---\n\
         kind: List\napiVersion: v1\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: fed}}\n",
    );
    west.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "only-west"}}));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_kubeconfig(dir.path(), &[("east", &east), ("west", &west)]);

    let current = context_client(&path, None).await;
    let west_client = context_client(&path, Some("west")).await;
    let names = |c: Client| async move {
        let api: Api<ConfigMap> = Api::default_namespaced(c);
        let list = api.list(&ListParams::default()).await.expect("list");
        list.items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(current.clone()).await, ["only-east"]);
    assert_eq!(names(west_client).await, ["only-west"]);
    assert!(east.get("v1", "Namespace", None, "fed").is_some());

    let discovery = kube::Discovery::new(current.clone())
        .run()
        .await
        .expect("discovery");
    let gvk = kube::api::GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease");
    let (lease, _) = discovery.resolve_gvk(&gvk).expect("Lease discovered");
    assert_eq!(lease.plural, "leases");
    let version = current.apiserver_version().await.expect("version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
}

/// The fake from a plain test, with raw HTTP: list items carry no apiVersion or kind, and
/// errors are Status objects.
#[test]
fn plain_test_and_raw_http() {
    let fake = FakeKubeApi::start();
    fake.apply(svc("default", "a", json!({})));
    let get = |path: &str| {
        let addr = fake.url().trim_start_matches("http://").to_owned();
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("read timeout");
        let req = format!("GET {path} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read the response");
        let (head, body) = out.split_once("\r\n\r\n").expect("a response");
        let status: u16 = head[9..12].parse().expect("a status code");
        (
            status,
            serde_json::from_str::<Value>(body).expect("a JSON body"),
        )
    };

    let (code, list) = get("/api/v1/namespaces/default/services");
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(list["items"][0]["metadata"]["name"], "a");
    assert!(list["items"][0].get("kind").is_none());

    let (code, status) = get("/api/v1/namespaces/default/services/nope");
    assert_eq!(code, 404);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["message"], "services \"nope\" not found");

    let (code, _) = get("/apis/example.com/v1/widgets");
    assert_eq!(code, 404);

    fake.compact();
    let (code, status) = get("/api/v1/services?resourceVersion=1&resourceVersionMatch=Exact");
    assert_eq!((code, status["reason"].as_str()), (410, Some("Expired")));
}
