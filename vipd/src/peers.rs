//! Who may speak VRRP in Kubernetes mode, decided free of I/O: the allowed sources from the
//! fedplane-vipd Pods, the annotation with which each vipd publishes its own sources, and the
//! rate limit of the Events reporting refused speakers. The watch, the annotation write and
//! the Events are in [`crate::kubernetes`]; the channels to the groups in [`crate::speakers`].
//!
//! # Where the allowlist comes from
//!
//! The legitimate speakers are the nodes running fedplane-vipd, so the source is the
//! fedplane-vipd DaemonSet's own Pods, not the Nodes (a node without vipd is no speaker):
//! - the Pods of the namespace `$POD_NAMESPACE` (else the Lease's namespace) whose labels match
//!   the selector `$FEDPLANE_VIPD_SPEAKER_SELECTOR` (default [`DEFAULT_SELECTOR`], deploy's
//!   labels; `key=value` terms joined by commas), not finished (phase `Succeeded`/`Failed`);
//! - each such Pod's `status.podIPs`/`podIP` and `status.hostIPs`/`hostIP` (host network:
//!   the node's addresses, the IPv4 sources of its adverts);
//! - and the addresses in its annotation [`SOURCES_ANNOTATION`]: IPv6 adverts come from
//!   link-local addresses, which no object carries, so each vipd writes there the source of
//!   each of its groups ([`crate::speakers::KubeEnds::own`]) on its own Pod, `$POD_NAME`.
//!   (These are environment variables set from the downward API, not flags: the flags belong
//!   to `config.rs`.)
//!
//! # Failing open, on purpose
//!
//! Refusing a legitimate peer's adverts is worse than hearing a forged one: both nodes become
//! master. So no allowlist is published (`None`: every source heard, as without Kubernetes)
//! while any speaker Pod has not published its sources yet (a vipd still starting, one whose
//! groups have no source yet, or an older vipd during a rolling upgrade); the log says which
//! Pods are missing. A vipd annotates its Pod only once every one of its groups has a source
//! (at once when it runs none). Without `$POD_NAME` this vipd cannot publish its own sources,
//! so it publishes no allowlist either (its groups hear everyone) and says so at start; the
//! other nodes then see its Pod without the annotation and fail open too. Its own sources are
//! always allowed (its Pod's annotation may lag its groups).
//!
//! # Reporting refused speakers
//!
//! Each refusal a group reports becomes a Warning Event, reason [`FOREIGN_REASON`], naming the
//! source, VRID, interface and node, on this vipd's Pod (on its Node without `$POD_NAME`), at
//! most once per source per [`REPORT_EVERY`], and for at most [`MAX_REPORTED`] sources per
//! period ([`Reports`]): a flood of forged adverts must not become a flood of Events. Counted in `fedplane_vipd_foreign_speakers_reported_total`
//! (`result`: `event`, `suppressed`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// The annotation on a fedplane-vipd Pod listing the sources its groups send from,
/// comma-separated.
pub const SOURCES_ANNOTATION: &str = "vipd.fedplane.io/vrrp-sources";
/// The speaker Pods' labels when `$FEDPLANE_VIPD_SPEAKER_SELECTOR` is not set: deploy's.
pub const DEFAULT_SELECTOR: &str = "app.kubernetes.io/name=fedplane-vipd";
/// The Event reason for a refused speaker.
pub const FOREIGN_REASON: &str = "ForeignVRRPSpeaker";
/// A refused source is reported at most once this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(600);
/// At most this many sources are reported per [`REPORT_EVERY`]: forged adverts from ever new
/// sources are suppressed beyond it (still counted and logged by the groups).
pub const MAX_REPORTED: usize = 256;

/// Why a setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeersError {
    /// The label selector is not `key=value[,key=value...]`.
    #[error("speaker selector {0:?}: use key=value terms joined by commas")]
    Selector(String),
}

/// An equality label selector: every `key=value` must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(BTreeMap<String, String>);

impl Selector {
    /// Parses `key=value[,key=value...]` (`==` is accepted for `=`).
    pub fn parse(text: &str) -> Result<Self, PeersError> {
        let mut terms = BTreeMap::new();
        for term in text.split(',').map(str::trim) {
            let (k, v) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| PeersError::Selector(text.to_owned()))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || k.contains(['!', '=']) || v.contains(['!', '=']) {
                return Err(PeersError::Selector(text.to_owned()));
            }
            terms.insert(k.to_owned(), v.to_owned());
        }
        Ok(Self(terms))
    }

    /// Whether `labels` match.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.0
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    }
}

/// Parses an annotation's addresses; `None` if any part is not an address.
pub fn parse_sources(text: &str) -> Option<BTreeSet<IpAddr>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect()
}

/// The annotation's value for these sources: sorted, comma-separated.
pub fn sources_value(sources: &BTreeSet<IpAddr>) -> String {
    sources
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The allowlist decided from the Pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The allowed sources, or `None`: no allowlist (every source heard).
    pub allowed: Option<BTreeSet<IpAddr>>,
    /// The speaker Pods (`namespace/name`) that have not published their sources.
    pub missing: Vec<String>,
    /// The speaker Pods whose annotation is not a list of addresses.
    pub malformed: Vec<String>,
    /// Our own Pod is not among the speakers the selector picks (a wrong selector): an
    /// allowlist would refuse every peer.
    pub unselected: bool,
}

/// The allowlist from the speaker Pods, given our own sources (always allowed). Without
/// `own_pod` (the name of our Pod: we cannot annotate it), there is none; nor while the
/// selector does not pick our own Pod (a wrong selector would refuse every peer).
pub fn decide(
    pods: &[&Pod],
    selector: &Selector,
    own: &BTreeSet<IpAddr>,
    own_pod: Option<&str>,
) -> Decision {
    let mut own_selected = false;
    let mut allowed = own.clone();
    let mut missing = Vec::new();
    let mut malformed = Vec::new();
    for (pod, status) in speakers(pods, Some(selector), own_pod) {
        own_selected |= own_pod.is_some() && pod.metadata.name.as_deref() == own_pod;
        let name = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        allowed.extend(pod_addresses(&status));
        match annotation(pod).map(parse_sources) {
            None => missing.push(name),
            Some(None) => malformed.push(name),
            Some(Some(sources)) => allowed.extend(sources),
        }
    }
    let unselected = own_pod.is_some() && !own_selected;
    let complete = own_selected && missing.is_empty() && malformed.is_empty();
    Decision {
        allowed: complete.then_some(allowed),
        missing,
        malformed,
        unselected,
    }
}

/// The running speaker Pods (with their status): those `selector` picks (without one, every
/// Pod) that are our own Pod's siblings — Pods with the same controller (the DaemonSet) as
/// ours, when ours has one; a Pod that merely copies the label is not one.
fn speakers<'a>(
    pods: &'a [&'a Pod],
    selector: Option<&'a Selector>,
    own_pod: Option<&str>,
) -> impl Iterator<Item = (&'a Pod, k8s_openapi::api::core::v1::PodStatus)> {
    let controller = |p: &Pod| {
        p.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone())
    };
    let own_controller = own_pod.and_then(|name| {
        pods.iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .and_then(|p| controller(p))
    });
    pods.iter().copied().filter_map(move |pod| {
        if selector.is_some_and(|s| !s.matches(pod.metadata.labels.as_ref()))
            || own_controller
                .as_ref()
                .is_some_and(|c| controller(pod).as_ref() != Some(c))
        {
            return None;
        }
        let status = pod.status.clone().unwrap_or_default();
        (!matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))).then_some((pod, status))
    })
}

/// A Pod's addresses: `status.podIPs`/`podIP` and `status.hostIPs`/`hostIP`.
fn pod_addresses(status: &k8s_openapi::api::core::v1::PodStatus) -> impl Iterator<Item = IpAddr> {
    status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.host_ips.iter().flatten().map(|h| h.ip.as_str()))
        .chain(status.pod_ip.as_deref())
        .chain(status.host_ip.as_deref())
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
}

/// A Pod's [`SOURCES_ANNOTATION`].
fn annotation(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SOURCES_ANNOTATION))
        .map(String::as_str)
}

/// Which node each VRRP source belongs to: the addresses and published sources of the
/// running speaker Pods (as for the allowlist: those `selector` picks, every Pod without one,
/// siblings of `own_pod`) → their `spec.nodeName`. Used to tell which node a group's master
/// is. A source two Pods on different nodes claim is left out (unknown, which the endpoint
/// rule treats as such).
pub fn speaker_nodes(
    pods: &[&Pod],
    selector: Option<&Selector>,
    own_pod: Option<&str>,
) -> BTreeMap<IpAddr, String> {
    let mut out: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
    for (pod, status) in speakers(pods, selector, own_pod) {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let published = annotation(pod).and_then(parse_sources).unwrap_or_default();
        for ip in pod_addresses(&status).chain(published) {
            out.entry(ip)
                .and_modify(|n| {
                    if n.as_ref() != Some(&node) {
                        *n = None;
                    }
                })
                .or_insert_with(|| Some(node.clone()));
        }
    }
    out.into_iter()
        .filter_map(|(ip, node)| Some((ip, node?)))
        .collect()
}

/// What this vipd should write in its own Pod's annotation, if anything: our groups' sources
/// once each of the `groups` has one (`None`: not yet, or the Pod already says so).
pub fn annotation_due(
    current: Option<&str>,
    own: &BTreeSet<IpAddr>,
    sources_published: usize,
    groups: usize,
) -> Option<String> {
    if sources_published < groups {
        return None;
    }
    let value = sources_value(own);
    (current != Some(value.as_str())).then_some(value)
}

/// The rate limit of refused-speaker Events: one per source per [`REPORT_EVERY`].
#[derive(Debug, Default)]
pub struct Reports {
    last: HashMap<IpAddr, Instant>,
}

impl Reports {
    /// Whether a refusal of `source` at `now` is reported (then remembered) or suppressed.
    pub fn report(&mut self, source: IpAddr, now: Instant) -> bool {
        // Forget sources quiet for a whole period, so forged sources cannot grow the map
        // beyond what one period brings.
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) < REPORT_EVERY);
        if self.last.contains_key(&source) || self.last.len() >= MAX_REPORTED {
            return false;
        }
        self.last.insert(source, now);
        true
    }

    /// The report of `source` could not be made (the Event was not created): the next
    /// refusal reports it again.
    pub fn failed(&mut self, source: IpAddr) {
        self.last.remove(&source);
    }

    /// How many sources are remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// The Event note for a refused speaker.
pub fn foreign_note(source: IpAddr, vrid: u8, interface: &str, node: &str) -> String {
    format!(
        "VRRP advert from {source} refused on node {node}, interface {interface}, VRID {vrid}: \
         not a fedplane-vipd speaker"
    )
}

#[cfg(test)]
mod tests;
