//! The assignment pass, at the edge: from the watched Services and ConfigMaps, spreads the
//! addresses in the Services' status over this node's VRRP groups and, as the Lease holder,
//! writes the addresses [`ipam::assign`] plans to the Services' status and tells each Service's
//! owner, with Events, what was assigned or refused.
//!
//! As the Lease holder it plans from [`Fresh`] (see [`crate::services`]): on each takeover it
//! first lists the Services with a quorum read (no resourceVersion); if that list fails, the
//! pass writes nothing and is tried again. Each status it writes is planned from until the
//! watch shows it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use fedplane_ops::kube::Watched;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::KubeSettings;
use crate::ipam::{self, Kind, Notice, Pools, Quarantine, Svc};
use crate::services::{self, Fresh, GroupId, key_of, svc_of};

/// One of this node's VRRP groups, as the assigner feeds it: which group, and the sender of
/// its addresses (`None` until the Services are listed).
#[derive(Debug)]
pub struct GroupSink {
    /// The group's family and VRID.
    pub id: GroupId,
    /// Where its addresses go.
    pub addresses: watch::Sender<Option<Vec<IpNet>>>,
}

/// The reconcile state.
pub(crate) struct Assigner {
    client: Client,
    recorder: Recorder,
    settings: KubeSettings,
    groups: Vec<GroupSink>,
    quarantine: Quarantine,
    /// Per Service, the notices already published (each is published once).
    told: HashMap<String, BTreeSet<Notice>>,
    pools_error: Option<String>,
    /// The pool ConfigMap's last valid pools.
    last_good: Option<Pools>,
    legacy_ignored: Vec<String>,
    homeless: BTreeSet<IpAddr>,
    /// The cache's corrections while we lead.
    fresh: Fresh,
    /// Whether the quorum list of this term as leader is in.
    relisted: bool,
    /// The pools of the last pass.
    last_pools: Pools,
    /// `Local` addresses held nowhere in the last pass (see [`services::Spread::unheld`]).
    unheld: BTreeSet<IpAddr>,
}

/// What the endpoint rule of `Local` Services reads in a pass (see [`crate::services`]).
#[derive(Debug)]
pub(crate) struct LocalRule<'a> {
    /// This node's name.
    pub node: &'a str,
    /// Per Service (`namespace/name`), the nodes with a ready endpoint.
    pub ready: &'a BTreeMap<String, BTreeSet<String>>,
    /// The node of each group's current master, where known.
    pub masters: BTreeMap<GroupId, String>,
}

impl Assigner {
    /// An assigner for this node's `groups`; `client` writes the status and records Events.
    pub(crate) fn new(settings: KubeSettings, client: Client, groups: Vec<GroupSink>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "fedplane-vipd".into(),
                instance: Some(settings.node_name.clone()),
            },
        );
        Self {
            client,
            recorder,
            quarantine: Quarantine::new(settings.quarantine),
            settings,
            groups,
            told: HashMap::new(),
            pools_error: None,
            last_good: None,
            legacy_ignored: Vec::new(),
            homeless: BTreeSet::new(),
            fresh: Fresh::default(),
            relisted: false,
            last_pools: Pools::default(),
            unheld: BTreeSet::new(),
        }
    }

    /// The Lease was gained or lost: the next pass as leader lists the Services again.
    pub(crate) fn lease_changed(&mut self) {
        self.relisted = false;
    }

    /// When the next quarantined address is free again (a pass is due then).
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.quarantine.next_expiry()
    }

    /// One pass. Returns whether something failed and should be tried again. Without `local`
    /// (the EndpointSlices not listed), `Local` Services' addresses are spread like the others.
    pub(crate) async fn pass(
        &mut self,
        services: &Store<Service>,
        pools_cm: Option<&Watched<ConfigMap>>,
        legacy_cm: Option<&Watched<ConfigMap>>,
        local: Option<LocalRule<'_>>,
        leading: Option<Instant>,
    ) -> bool {
        let cache = services.state();
        let mut relist_failed = false;
        if leading.is_none() {
            self.fresh.forget();
            self.relisted = false;
        } else if !self.relisted {
            relist_failed = !self.relist(&cache).await;
        }
        let now = Instant::now();
        let objects = self.fresh.view(&cache);
        metrics::gauge!("fedplane_vipd_cache_corrections").set(self.fresh.len() as f64);
        let cache_versions: HashMap<String, Option<String>> = cache
            .iter()
            .map(|s| (key_of(s), s.metadata.resource_version.clone()))
            .collect();
        let svcs: Vec<Svc> = objects
            .iter()
            .map(|s| svc_of(s, &self.settings.class))
            .collect();
        // The first pass releases nothing: it only learns what is in use.
        self.quarantine.observe(&ipam::in_use(&svcs), now);
        metrics::gauge!("fedplane_vipd_quarantined_addresses").set(self.quarantine.len() as f64);
        let pools = self.pools(pools_cm);
        let endpoints = local.map(|l| services::Endpoints {
            node: l.node.to_owned(),
            local: services::Endpoints::local_addresses(
                objects
                    .iter()
                    .zip(&svcs)
                    .filter(|(_, s)| s.kind == Kind::Ours)
                    .map(|(o, _)| &**o),
                l.ready,
            ),
            masters: l.masters,
        });
        self.announce(&svcs, &pools, endpoints.as_ref());
        self.last_pools.clone_from(&pools);
        let legacy = self.legacy(legacy_cm);
        let Some(until) = leading else {
            metrics::gauge!("fedplane_vipd_leader").set(0.0);
            return false;
        };
        if relist_failed {
            // Not planned from a stale cache: nothing written until the list succeeds.
            return true;
        }
        metrics::gauge!("fedplane_vipd_leader").set(1.0);
        let plan = ipam::assign(&pools, &svcs, &legacy, &self.quarantine, now);
        let by_key: HashMap<String, &Arc<Service>> =
            objects.iter().map(|s| (key_of(s), s)).collect();
        let mut failed = false;
        for s in &svcs {
            let Some(want) = plan.addresses.get(&s.key) else {
                continue;
            };
            if *want == s.current {
                continue;
            }
            if Instant::now() >= until {
                // Our Lease may have passed to someone else: write nothing more.
                return true;
            }
            let obj = by_key[&s.key];
            let cache_version = cache_versions.get(&s.key).cloned().flatten();
            failed |= !self.write(obj, s, want, cache_version).await;
        }
        self.tell(&plan.notices, &by_key).await;
        failed
    }

    /// The pools of the last pass (the BGP side reads them).
    pub(crate) fn pools_in_use(&self) -> &Pools {
        &self.last_pools
    }

    /// Spreads the addresses in our Services' status over the groups (those of `mode: bgp`
    /// pools are announced over BGP instead), `Local` ones by the endpoint rule.
    fn announce(&mut self, svcs: &[Svc], pools: &Pools, endpoints: Option<&services::Endpoints>) {
        let addresses: BTreeSet<IpAddr> = svcs
            .iter()
            .filter(|s| s.kind == Kind::Ours)
            .flat_map(|s| s.current.iter().copied())
            .filter(|ip| {
                pools
                    .pool_of(*ip)
                    .is_none_or(|p| p.mode != crate::ipam::Mode::Bgp)
            })
            .collect();
        metrics::gauge!("fedplane_vipd_service_addresses").set(addresses.len() as f64);
        let ids: Vec<GroupId> = self.groups.iter().map(|g| g.id).collect();
        let services::Spread {
            per_group,
            homeless,
            gated,
            unheld,
        } = services::spread(&addresses, &ids, endpoints);
        metrics::gauge!("fedplane_vipd_local_addresses_left_out").set(gated as f64);
        metrics::gauge!("fedplane_vipd_local_addresses_unheld").set(unheld.len() as f64);
        if unheld != self.unheld {
            // One line per change, however many addresses (a failover moves them all).
            let sample = |s: &mut dyn Iterator<Item = &IpAddr>| -> Vec<IpAddr> {
                s.take(5).copied().collect()
            };
            let new = unheld.difference(&self.unheld).count();
            if new > 0 {
                warn!(count = new, first = ?sample(&mut unheld.difference(&self.unheld)),
                    "addresses of externalTrafficPolicy: Local Services held nowhere: no VRRP group's master runs a ready endpoint of their Service (fedplane_vipd_local_addresses_unheld)");
            }
            let back = self.unheld.difference(&unheld).count();
            if back > 0 {
                info!(count = back, first = ?sample(&mut self.unheld.difference(&unheld)),
                    "addresses of Local Services can be held again: a group's master runs a ready endpoint");
            }
            self.unheld = unheld;
        }
        for (group, ips) in self.groups.iter().zip(per_group) {
            let nets = Some(ips.into_iter().map(IpNet::from).collect::<Vec<_>>());
            group.addresses.send_if_modified(|old| {
                let changed = *old != nets;
                if changed {
                    old.clone_from(&nets);
                }
                changed
            });
        }
        if homeless != self.homeless && !self.groups.is_empty() {
            for ip in homeless.difference(&self.homeless) {
                warn!(%ip, "no VRRP group of this family on this node: not announced here");
            }
            self.homeless = homeless;
        }
    }

    /// The ConfigMap's pools; its last valid ones while it is invalid; the config file's while
    /// it does not exist.
    fn pools(&mut self, cm: Option<&Watched<ConfigMap>>) -> Pools {
        let Some(cm) = cm else {
            return self.settings.pools.clone();
        };
        let Some(object) = cm.store.state().first().cloned() else {
            if self.last_good.take().is_some() {
                info!("pool ConfigMap gone: using the config file's pools");
            }
            return self.settings.pools.clone();
        };
        let text = object
            .data
            .as_ref()
            .and_then(|d| d.get("config.yaml").cloned());
        let parsed = match text {
            None => Err("no config.yaml in the pool ConfigMap".to_owned()),
            Some(t) => Pools::from_yaml(&t)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    if self.settings.bgp.is_some() {
                        Ok(p)
                    } else {
                        refuse_bgp_pools(p)
                    }
                }),
        };
        match parsed {
            Ok(p) => {
                if self.pools_error.take().is_some() {
                    info!("pool ConfigMap valid again");
                }
                if self.last_good.as_ref() != Some(&p) {
                    let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
                    info!(pools = ?names, "pools from the ConfigMap in use");
                }
                self.last_good = Some(p.clone());
                p
            }
            Err(e) => {
                if self.pools_error.as_ref() != Some(&e) {
                    warn!(error = %e, "pool ConfigMap ignored; using the last valid pools");
                    self.pools_error = Some(e);
                }
                self.last_good
                    .clone()
                    .unwrap_or_else(|| self.settings.pools.clone())
            }
        }
    }

    fn legacy(&mut self, cm: Option<&Watched<ConfigMap>>) -> BTreeMap<IpAddr, String> {
        let Some(cm) = cm else {
            return BTreeMap::new();
        };
        let data = cm
            .store
            .state()
            .first()
            .and_then(|c| c.data.clone())
            .unwrap_or_default();
        let (map, ignored) = services::legacy_map(&data);
        if ignored != self.legacy_ignored {
            for why in &ignored {
                warn!(entry = %why, "legacy keepalived-vip ConfigMap entry ignored");
            }
            self.legacy_ignored = ignored;
        }
        map
    }

    /// The quorum list of a takeover: corrects the cache in [`Fresh`]. False if it failed.
    async fn relist(&mut self, cache: &[Arc<Service>]) -> bool {
        // No resourceVersion: a quorum read (from etcd, not the API server's watch cache).
        match Api::<Service>::all(self.client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(list) => {
                let n = list.items.len();
                let wrong = self.fresh.listed(cache, list.items);
                metrics::counter!("fedplane_vipd_quorum_lists_total", "result" => "ok")
                    .increment(1);
                info!(
                    services = n,
                    cache_wrong = wrong,
                    "took the Lease: planning from a quorum list of the Services"
                );
                self.relisted = true;
                true
            }
            Err(e) => {
                metrics::counter!("fedplane_vipd_quorum_lists_total", "result" => "error")
                    .increment(1);
                warn!(error = %e, "took the Lease, but cannot list the Services; writing nothing until it can");
                false
            }
        }
    }

    /// Writes `want` to the Service's status; false if that failed. What was written is
    /// planned from until the cache, which had the Service at `cache_version`, moves.
    async fn write(
        &mut self,
        obj: &Service,
        s: &Svc,
        want: &[IpAddr],
        cache_version: Option<String>,
    ) -> bool {
        let mut patch = services::status_patch(want);
        // Only over the version we planned from: a Service changed meanwhile is planned again.
        patch["metadata"] = serde_json::json!({"resourceVersion": obj.resource_version()});
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let res = Api::<Service>::namespaced(self.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        let list = want
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match res {
            Ok(written) => {
                self.fresh.wrote(cache_version, written);
                metrics::counter!("fedplane_vipd_status_writes_total", "result" => "ok")
                    .increment(1);
                let (reason, note) = if want.is_empty() {
                    (
                        "AddressReleased",
                        "no LoadBalancer addresses any more".to_owned(),
                    )
                } else {
                    ("AddressAssigned", format!("assigned {list}"))
                };
                info!(service = %s.key, addresses = %list, "status written");
                self.event(obj, EventType::Normal, reason, note).await;
                true
            }
            Err(e) => {
                metrics::counter!("fedplane_vipd_status_writes_total", "result" => "error")
                    .increment(1);
                warn!(service = %s.key, addresses = %list, error = %e, "status not written; trying again");
                false
            }
        }
    }

    /// Publishes each notice once, as a Warning Event on its Service.
    async fn tell(&mut self, notices: &[Notice], by_key: &HashMap<String, &Arc<Service>>) {
        let mut now: HashMap<String, BTreeSet<Notice>> = HashMap::new();
        for n in notices {
            now.entry(n.key.clone()).or_default().insert(n.clone());
        }
        for (key, set) in &now {
            let told = self.told.get(key);
            for n in set.iter().filter(|n| told.is_none_or(|t| !t.contains(*n))) {
                metrics::counter!("fedplane_vipd_notices_total", "reason" => n.reason.name())
                    .increment(1);
                warn!(service = %key, reason = n.reason.name(), message = %n.message, "address not assigned");
                if let Some(obj) = by_key.get(key) {
                    self.event(obj, EventType::Warning, n.reason.name(), n.message.clone())
                        .await;
                }
            }
        }
        self.told = now;
    }

    async fn event(&self, obj: &Service, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "AssignAddress".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            debug!(error = %e, "Event not recorded");
        }
    }
}

/// Without `--bgp`, BGP pools are refused (the last valid pools stay) rather than silently
/// held with VRRP.
fn refuse_bgp_pools(pools: Pools) -> Result<Pools, String> {
    if let Some(p) = pools.iter().find(|p| p.mode == crate::ipam::Mode::Bgp) {
        return Err(format!(
            "pools[{}].mode: bgp needs fedplane-vipd --bgp",
            p.name
        ));
    }
    Ok(pools)
}
