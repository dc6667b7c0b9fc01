//! Who may speak, at the edge (the rules are in [`crate::peers`]): watches the fedplane-vipd
//! Pods, publishes the allowlist to the groups, writes this vipd's sources on its own Pod, and
//! turns refused speakers into rate-limited Warning Events.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedplane_ops::kube as watch_kube;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::Wake;
use crate::daemon::sleep_until;
use crate::peers::{self, DEFAULT_SELECTOR, Decision, FOREIGN_REASON, Reports, Selector};
use crate::speakers::{Foreign, KubeEnds};

/// A failed annotation write is tried again after this long.
const RETRY: Duration = Duration::from_secs(5);

/// Where the speakers are and who we are among them (see [`crate::peers`]).
#[derive(Debug, Clone)]
pub struct SpeakerSettings {
    /// The speaker Pods' namespace.
    pub namespace: String,
    /// Our own Pod's name, if known.
    pub pod_name: Option<String>,
    /// The speaker Pods' labels (`None`: the selector set was unusable; no allowlist).
    pub selector: Option<Selector>,
    /// This node's name (in Event notes; the Event goes on the Node without `pod_name`).
    pub node_name: String,
}

impl SpeakerSettings {
    /// From `$POD_NAME`, `$POD_NAMESPACE` (else `lease_namespace`) and
    /// `$FEDPLANE_VIPD_SPEAKER_SELECTOR` (else [`DEFAULT_SELECTOR`]).
    pub fn from_env(lease_namespace: &str, node_name: &str) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let text = var("FEDPLANE_VIPD_SPEAKER_SELECTOR").unwrap_or_else(|| DEFAULT_SELECTOR.into());
        let selector = match Selector::parse(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                error!(error = %e, "FEDPLANE_VIPD_SPEAKER_SELECTOR unusable: no VRRP allowlist");
                None
            }
        };
        Self {
            namespace: var("POD_NAMESPACE").unwrap_or_else(|| lease_namespace.to_owned()),
            pod_name: var("POD_NAME"),
            selector,
            node_name: node_name.to_owned(),
        }
    }
}

/// Runs until `cancel`: the allowlist into `ends.allowed` (none until the Pods are listed),
/// this vipd's sources (`ends.own`, once each of its `groups` has one) onto its Pod, an
/// Event for each refused speaker of `ends.foreign` (rate-limited), and which node each
/// speaker's source belongs to into `nodes` ([`peers::speaker_nodes`]).
pub async fn speak(
    client: Client,
    settings: SpeakerSettings,
    mut ends: KubeEnds,
    nodes: tokio::sync::watch::Sender<std::collections::BTreeMap<IpAddr, String>>,
    groups: usize,
    cancel: CancellationToken,
) {
    // Ours to cancel when we stop (the groups gone) without stopping the rest.
    let cancel = cancel.child_token();
    let ns = settings.namespace.clone();
    match &settings.pod_name {
        Some(pod) => {
            info!(pod = %format!("{ns}/{pod}"), "VRRP speakers: the fedplane-vipd Pods of namespace {ns}; this vipd publishes its sources on its Pod")
        }
        None => warn!(
            "no $POD_NAME: this vipd cannot publish its VRRP sources, so no allowlist: every \
             VRRP source is heard, as without Kubernetes; refused speakers are reported on the Node"
        ),
    }
    let changed = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let pods_api = Api::<Pod>::namespaced(client.clone(), &ns);
    let pods = watch_kube::spawn(
        pods_api.clone(),
        None,
        Wake(changed.clone()),
        &cancel,
        &mut tasks,
    );
    // Not kube's Recorder: it folds every Event with the same reason on the same object into
    // one series keeping the first note, which would hide every source but the first. The
    // rate limit is ours ([`Reports`]), so each Event is created whole.
    let mut reports = Reports::default();
    let mut last: Option<Decision> = None;
    let mut retry_at: Option<Instant> = None;
    let mut foreign_open = true;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = changed.notified() => {}
            res = ends.own.changed() => if res.is_err() {
                // The groups are gone: nothing more to publish.
                break;
            },
            f = ends.foreign.recv(), if foreign_open => match f {
                Some(f) => {
                    report(&client, &settings, &pods, &mut reports, f).await;
                    continue;
                }
                None => foreign_open = false,
            },
            () = sleep_until(retry_at) => retry_at = None,
        }
        if !pods.listed() {
            continue;
        }
        let own_map = ends.own.borrow_and_update().clone();
        let own: BTreeSet<IpAddr> = own_map.values().copied().collect();
        let state = pods.store.state();
        let refs: Vec<&Pod> = state.iter().map(AsRef::as_ref).collect();
        let speaker_nodes = peers::speaker_nodes(
            &refs,
            settings.selector.as_ref(),
            settings.pod_name.as_deref(),
        );
        nodes.send_if_modified(|old| {
            let changed = *old != speaker_nodes;
            if changed {
                *old = speaker_nodes;
            }
            changed
        });
        let decision = match &settings.selector {
            Some(sel) => peers::decide(&refs, sel, &own, settings.pod_name.as_deref()),
            None => Decision {
                allowed: None,
                missing: Vec::new(),
                malformed: Vec::new(),
                unselected: false,
            },
        };
        if last.as_ref() != Some(&decision) {
            log_decision(&decision, last.as_ref());
            let allowed = decision.allowed.clone().map(Arc::new);
            ends.allowed.send_if_modified(|old| {
                let changed = *old != allowed;
                if changed {
                    old.clone_from(&allowed);
                }
                changed
            });
            metrics::gauge!("fedplane_vipd_allowed_speakers")
                .set(decision.allowed.as_ref().map_or(-1.0, |a| a.len() as f64));
            last = Some(decision);
        }
        // Our sources on our Pod.
        let Some(name) = &settings.pod_name else {
            continue;
        };
        if retry_at.is_some() {
            continue;
        }
        let mine = state.iter().find(|p| p.name_any() == *name);
        let current = mine.and_then(|p| p.annotations().get(peers::SOURCES_ANNOTATION).cloned());
        let Some(value) = peers::annotation_due(current.as_deref(), &own, own_map.len(), groups)
        else {
            continue;
        };
        if mine.is_none() {
            // Not listed (yet): the watch wakes us when it is.
            continue;
        }
        let patch =
            serde_json::json!({"metadata": {"annotations": {peers::SOURCES_ANNOTATION: value}}});
        match pods_api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => info!(pod = %name, sources = %value, "VRRP sources published on our Pod"),
            Err(e) => {
                warn!(pod = %name, error = %e, "cannot publish our VRRP sources on our Pod; trying again");
                retry_at = Some(Instant::now() + RETRY);
            }
        }
    }
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}

fn log_decision(d: &Decision, last: Option<&Decision>) {
    match &d.allowed {
        Some(a) => {
            if last.is_none_or(|l| l.allowed.is_none()) {
                info!(
                    sources = a.len(),
                    "VRRP allowlist in force: adverts from other sources are refused"
                );
            }
            debug!(allowed = ?a, "VRRP allowlist");
        }
        None => {
            if d.unselected && last.is_none_or(|l| !l.unselected) {
                error!(
                    "no VRRP allowlist: the speaker selector does not pick this vipd's own Pod (check $FEDPLANE_VIPD_SPEAKER_SELECTOR and the DaemonSet's labels); every source is heard"
                );
            }
            if !d.missing.is_empty() || !d.malformed.is_empty() {
                warn!(missing = ?d.missing, malformed = ?d.malformed,
                    "no VRRP allowlist: these fedplane-vipd Pods have not published their sources (annotation {}); every source is heard",
                    peers::SOURCES_ANNOTATION);
            }
        }
    }
}

/// Reports one refused speaker, unless its source was reported within the period.
async fn report(
    client: &Client,
    settings: &SpeakerSettings,
    pods: &watch_kube::Watched<Pod>,
    reports: &mut Reports,
    f: Foreign,
) {
    if !reports.report(f.source, Instant::now()) {
        metrics::counter!("fedplane_vipd_foreign_speakers_reported_total", "result" => "suppressed")
            .increment(1);
        return;
    }
    let note = peers::foreign_note(f.source, f.vrid, &f.interface, &settings.node_name);
    warn!(source = %f.source, vrid = f.vrid, interface = %f.interface, "foreign VRRP speaker refused; reporting it");
    let reference = match &settings.pod_name {
        Some(name) => {
            let uid = pods
                .store
                .state()
                .iter()
                .find(|p| p.name_any() == *name)
                .and_then(|p| p.uid());
            ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(settings.namespace.clone()),
                name: Some(name.clone()),
                uid,
                ..ObjectReference::default()
            }
        }
        None => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(settings.node_name.clone()),
            ..ObjectReference::default()
        },
    };
    let namespace = reference
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}.",
                reference.name.as_deref().unwrap_or("fedplane-vipd")
            )),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(Timestamp::now())),
        type_: Some("Warning".into()),
        reason: Some(FOREIGN_REASON.into()),
        note: Some(note),
        action: Some("RefuseAdvert".into()),
        regarding: Some(reference),
        reporting_controller: Some("fedplane-vipd".into()),
        reporting_instance: Some(settings.node_name.clone()),
        ..Event::default()
    };
    match Api::<Event>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &event)
        .await
    {
        Ok(_) => {
            metrics::counter!("fedplane_vipd_foreign_speakers_reported_total", "result" => "event")
                .increment(1);
        }
        Err(e) => {
            metrics::counter!("fedplane_vipd_foreign_speakers_reported_total", "result" => "error")
                .increment(1);
            warn!(error = %e, "cannot record the foreign speaker Event");
            reports.failed(f.source);
        }
    }
}
