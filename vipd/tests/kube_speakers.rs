//! Who may speak VRRP in Kubernetes mode, against the Kubernetes API fake
//! (`testkit/src/kube_fake`), driving `kubernetes::speak` as the groups would through
//! `speakers::channels()`: the allowlist from the fedplane-vipd Pods' addresses and source
//! annotations, our own sources written on our Pod, no allowlist while a speaker has not
//! published or without `$POD_NAME`, and refused speakers reported as rate-limited Warning
//! Events on our Pod (on the Node without one).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use fedplane_testkit::kube_fake::{FakeKubeApi, write_kubeconfig};
use fedplane_vipd::kubernetes::{SpeakerSettings, client, speak};
use fedplane_vipd::peers::{DEFAULT_SELECTOR, SOURCES_ANNOTATION, Selector};
use fedplane_vipd::speakers::{Allowed, Foreign, GroupEnds, channels};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn pod(name: &str, ip: &str, sources: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "fedplane-system", "name": name,
                     "labels": {"app.kubernetes.io/name": "fedplane-vipd"}},
        "spec": {"hostNetwork": true, "nodeName": name},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "hostIP": ip, "hostIPs": [{"ip": ip}]}});
    if let Some(s) = sources {
        p["metadata"]["annotations"] = json!({SOURCES_ANNOTATION: s});
    }
    p
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().expect("ip")).collect()
}

async fn wait_allowed(rx: &mut watch::Receiver<Allowed>, want: Option<BTreeSet<IpAddr>>) {
    let got = tokio::time::timeout(WAIT, rx.wait_for(|a| a.as_deref().cloned() == want))
        .await
        .is_ok();
    assert!(got, "allowlist {want:?}, have {:?}", *rx.borrow());
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn foreign_events(fake: &FakeKubeApi) -> Vec<Value> {
    fake.events()
        .into_iter()
        .filter(|e| e["reason"] == "ForeignVRRPSpeaker")
        .collect()
}

fn settings(pod_name: Option<&str>) -> SpeakerSettings {
    SpeakerSettings {
        namespace: "fedplane-system".into(),
        pod_name: pod_name.map(str::to_owned),
        selector: Some(Selector::parse(DEFAULT_SELECTOR).expect("selector")),
        node_name: "node-a".into(),
    }
}

fn refuse(g: &GroupEnds, source: &str) {
    g.foreign
        .try_send(Foreign {
            vrid: 51,
            interface: "eth0".into(),
            source: source.parse().expect("ip"),
        })
        .expect("queued");
}

#[tokio::test]
async fn the_allowlist_is_the_speaker_pods_and_refusals_are_reported_once_per_source() {
    let fake = FakeKubeApi::start();
    let dir = TempDir::new().expect("temp dir");
    let kubeconfig = write_kubeconfig(dir.path(), &[("member", &fake)]);
    fake.apply(pod("vipd-a", "192.0.2.11", None));
    fake.apply(pod("vipd-b", "192.0.2.12", Some("192.0.2.12,fe80::b")));
    // Not a speaker.
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "fedplane-system", "name": "dns", "labels": {"app": "dns"}},
        "status": {"podIP": "192.0.2.99"}}));
    let (kube, groups) = channels();
    let mut allowed = groups.allowed.clone();
    let cancel = CancellationToken::new();
    let c = client(Some(&kubeconfig)).await.expect("client");
    let (nodes_tx, mut nodes) = watch::channel(BTreeMap::new());
    let task = tokio::spawn(speak(
        c,
        settings(Some("vipd-a")),
        kube,
        nodes_tx,
        2,
        cancel.clone(),
    ));

    // One of our two groups has a source: not published yet, so no allowlist anywhere.
    groups.own.send_modify(|o| {
        o.insert(
            ("eth0".into(), 51, false),
            "192.0.2.11".parse().expect("ip"),
        );
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*allowed.borrow(), None);
    let annotation = || {
        fake.get("v1", "Pod", Some("fedplane-system"), "vipd-a")
            .and_then(|p| {
                p["metadata"]["annotations"][SOURCES_ANNOTATION]
                    .as_str()
                    .map(str::to_owned)
            })
    };
    assert_eq!(annotation(), None);
    // Both have: our Pod says so, and the allowlist is in force.
    groups.own.send_modify(|o| {
        o.insert(("eth0".into(), 52, true), "fe80::a".parse().expect("ip"));
    });
    let want = ips(&["192.0.2.11", "192.0.2.12", "fe80::a", "fe80::b"]);
    wait_allowed(&mut allowed, Some(want.clone())).await;
    assert_eq!(annotation().as_deref(), Some("192.0.2.11,fe80::a"));

    // A new speaker without sources yet: no allowlist until it publishes them.
    fake.apply(pod("vipd-c", "192.0.2.13", None));
    wait_allowed(&mut allowed, None).await;
    fake.apply(pod("vipd-c", "192.0.2.13", Some("fe80::c")));
    let mut with_c = want.clone();
    with_c.extend(ips(&["192.0.2.13", "fe80::c"]));
    wait_allowed(&mut allowed, Some(with_c)).await;
    // Which node each speaker's address and published source is (a group's master → node).
    let c_source: IpAddr = "fe80::c".parse().expect("ip");
    let mapped = tokio::time::timeout(WAIT, async {
        nodes.wait_for(|n| n.contains_key(&c_source)).await.is_ok()
    })
    .await;
    assert_eq!(mapped, Ok(true), "fe80::c mapped to its node");
    let node_of = |ip: &str| {
        nodes
            .borrow()
            .get(&ip.parse::<IpAddr>().expect("ip"))
            .cloned()
    };
    assert_eq!(node_of("fe80::c").as_deref(), Some("vipd-c"));
    assert_eq!(node_of("192.0.2.12").as_deref(), Some("vipd-b"));
    assert_eq!(node_of("fe80::b").as_deref(), Some("vipd-b"));
    assert_eq!(node_of("192.0.2.99"), None, "not a speaker");
    // Gone: no longer allowed.
    fake.delete("v1", "Pod", Some("fedplane-system"), "vipd-c");
    wait_allowed(&mut allowed, Some(want)).await;

    // Refusals: one Event per source, however many adverts.
    for _ in 0..5 {
        refuse(&groups, "192.0.2.66");
    }
    refuse(&groups, "fe80::666");
    let events = wait_for("two ForeignVRRPSpeaker Events", || {
        let e = foreign_events(&fake);
        (e.len() >= 2).then_some(e)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(foreign_events(&fake).len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["regarding"]["kind"], "Pod");
        assert_eq!(e["regarding"]["name"], "vipd-a");
        assert_eq!(e["regarding"]["namespace"], "fedplane-system");
    }
    let notes: Vec<&str> = events.iter().filter_map(|e| e["note"].as_str()).collect();
    assert!(
        notes.iter().any(|n| n.contains(
            "VRRP advert from 192.0.2.66 refused on node node-a, interface eth0, VRID 51"
        )),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("from fe80::666 ")),
        "{notes:?}"
    );
    cancel.cancel();
    task.await.expect("speak ends");
}

#[tokio::test]
async fn without_our_pod_name_there_is_no_allowlist_and_refusals_go_on_the_node() {
    let fake = FakeKubeApi::start();
    let dir = TempDir::new().expect("temp dir");
    let kubeconfig = write_kubeconfig(dir.path(), &[("member", &fake)]);
    fake.apply(pod("vipd-b", "192.0.2.12", Some("192.0.2.12")));
    let (kube, groups) = channels();
    let cancel = CancellationToken::new();
    let c = client(Some(&kubeconfig)).await.expect("client");
    let task = tokio::spawn(speak(
        c,
        settings(None),
        kube,
        tokio::sync::watch::channel(Default::default()).0,
        0,
        cancel.clone(),
    ));
    refuse(&groups, "192.0.2.66");
    let events = wait_for("a ForeignVRRPSpeaker Event", || {
        let e = foreign_events(&fake);
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(events[0]["regarding"]["kind"], "Node");
    assert_eq!(events[0]["regarding"]["name"], "node-a");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*groups.allowed.borrow(), None);
    cancel.cancel();
    task.await.expect("speak ends");
}
