//! The results of the active health checks (`fedplane.io/health-check`), per cluster, object
//! (a Service, or the Ingress, route or DNSEndpoint of host names) and address: down after `failures` failed probes in a row, up again after
//! `successes` in a row. Pure: [`crate::prober`] probes and records, the reconcile loop sets the
//! targets from the views and leaves the addresses that are down out of them.
//!
//! A target starts up, so a controller that starts (or a Service that gains a check) withdraws
//! nothing before its probes have failed `failures` times. A target whose check changes starts
//! over.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::policy::Check;
use crate::view::{ClusterView, Regarding, ServiceId};

/// One probed address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// Cluster name.
    pub cluster: String,
    /// The Service, or the object of host names.
    pub object: Regarding,
    /// One of its addresses in that cluster.
    pub address: IpAddr,
}

/// How many probes in a row change a target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Failures in a row that make an up target down (`--probe-failures`).
    pub failures: u32,
    /// Successes in a row that make a down target up (`--probe-successes`).
    pub successes: u32,
}

#[derive(Debug, Clone)]
struct State {
    check: Check,
    up: bool,
    /// Probes in a row that disagree with `up`.
    streak: u32,
}

/// Every target's state.
#[derive(Debug, Clone)]
pub struct Health {
    thresholds: Thresholds,
    states: BTreeMap<Target, State>,
    /// The views the targets were last set from (O(1) clones: the next ones are diffed
    /// against them), and per view its Services and hosts with a check.
    last: Vec<ClusterView>,
    checked: Vec<Checked>,
}

/// One view's Services and hosts with a check.
#[derive(Debug, Clone, Default)]
struct Checked {
    services: BTreeSet<ServiceId>,
    hosts: BTreeSet<String>,
}

impl Checked {
    fn of(v: &ClusterView) -> Self {
        Self {
            services: v
                .services
                .iter()
                .filter(|(_, h)| h.policy.check.is_some())
                .map(|(id, _)| id.clone())
                .collect(),
            hosts: v
                .hosts
                .iter()
                .filter(|(_, e)| e.health.policy.check.is_some())
                .map(|(host, _)| host.clone())
                .collect(),
        }
    }

    /// Brings it from view `old` to `new`, in the time of their differences.
    fn update(&mut self, old: &ClusterView, new: &ClusterView) {
        for d in old.services.diff(&new.services) {
            let id = crate::plan::diff_key(&d);
            if new
                .services
                .get(id)
                .is_some_and(|h| h.policy.check.is_some())
            {
                self.services.insert(id.clone());
            } else {
                self.services.remove(id);
            }
        }
        for d in old.hosts.diff(&new.hosts) {
            let host = crate::plan::diff_key(&d);
            if new
                .hosts
                .get(host)
                .is_some_and(|e| e.health.policy.check.is_some())
            {
                self.hosts.insert(host.clone());
            } else {
                self.hosts.remove(host);
            }
        }
    }
}

impl Health {
    /// No targets yet.
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            states: BTreeMap::new(),
            last: Vec::new(),
            checked: Vec::new(),
        }
    }

    /// The targets of these views: every address of every Service and host with a check
    /// (the hosts of one object are one target per address). Targets kept with the same
    /// check keep their state. Costs the differences from the last views, and the entries
    /// with a check.
    pub fn set_targets(&mut self, views: &[ClusterView]) {
        let same = self.last.len() == views.len()
            && self.last.iter().zip(views).all(|(a, b)| a.name == b.name);
        if same {
            for ((c, old), new) in self.checked.iter_mut().zip(&self.last).zip(views) {
                c.update(old, new);
            }
        } else {
            self.checked = views.iter().map(Checked::of).collect();
        }
        self.last = views.to_vec();
        let mut next = BTreeMap::new();
        for (v, checked) in views.iter().zip(&self.checked) {
            let services = checked
                .services
                .iter()
                .filter_map(|id| Some((Regarding::service(id.clone()), v.services.get(id)?)));
            let hosts = checked
                .hosts
                .iter()
                .filter_map(|host| v.hosts.get(host))
                .map(|e| (e.owner.clone(), &e.health));
            for (object, h) in services.chain(hosts) {
                let Some(check) = &h.policy.check else {
                    continue;
                };
                for &address in &h.ingress {
                    let target = Target {
                        cluster: v.name.clone(),
                        object: object.clone(),
                        address,
                    };
                    if next.contains_key(&target) {
                        continue;
                    }
                    let state = match self.states.remove(&target) {
                        Some(s) if s.check == *check => s,
                        _ => State {
                            check: check.clone(),
                            up: true,
                            streak: 0,
                        },
                    };
                    next.insert(target, state);
                }
            }
        }
        self.states = next;
    }

    /// What to probe now.
    pub fn targets(&self) -> Vec<(Target, Check)> {
        self.states
            .iter()
            .map(|(t, s)| (t.clone(), s.check.clone()))
            .collect()
    }

    /// Records a probe of `target` with `check`; `Some(up)` when the target's state changed.
    /// A result for a target that is gone, or whose check changed meanwhile, is dropped.
    pub fn record(&mut self, target: &Target, check: &Check, ok: bool) -> Option<bool> {
        let s = self.states.get_mut(target).filter(|s| s.check == *check)?;
        if ok == s.up {
            s.streak = 0;
            return None;
        }
        s.streak += 1;
        let needed = if s.up {
            self.thresholds.failures
        } else {
            self.thresholds.successes
        };
        if s.streak < needed {
            return None;
        }
        s.up = ok;
        s.streak = 0;
        Some(ok)
    }

    /// Per cluster: how many targets are up and how many down.
    pub fn counts(&self) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (t, s) in &self.states {
            let e = out.entry(t.cluster.clone()).or_default();
            if s.up {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        out
    }

    /// Whether `address` of `object` in `cluster` is up (true when it is not probed).
    pub fn is_up(&self, cluster: &str, object: &Regarding, address: IpAddr) -> bool {
        self.states
            .get(&Target {
                cluster: cluster.to_owned(),
                object: object.clone(),
                address,
            })
            .is_none_or(|s| s.up)
    }

    /// `views` without the addresses that are down (a cluster left with none is unhealthy
    /// for that Service, so its zone names fall back; a host is not answered there).
    pub fn apply(&self, views: &mut [ClusterView]) {
        if self.states.values().all(|s| s.up) {
            return;
        }
        for (i, v) in views.iter_mut().enumerate() {
            // The entries with a check, as of the last targets (these views, in the loop).
            let checked = match self.checked.get(i) {
                Some(c) if self.last.get(i).is_some_and(|l| l.name == v.name) => c.clone(),
                _ => Checked::of(v),
            };
            for id in checked.services {
                let object = Regarding::service(id.clone());
                let up = |ip: &IpAddr| self.is_up(&v.name, &object, *ip);
                if v.services
                    .get(&id)
                    .is_some_and(|h| !h.ingress.iter().all(up))
                    && let Some(h) = v.services.get_mut(&id)
                {
                    h.ingress.retain(up);
                }
            }
            for host in checked.hosts {
                let Some(e) = v.hosts.get(&host) else {
                    continue;
                };
                let object = e.owner.clone();
                let up = |ip: &IpAddr| self.is_up(&v.name, &object, *ip);
                if !e.health.ingress.iter().all(up)
                    && let Some(e) = v.hosts.get_mut(&host)
                {
                    e.health.ingress.retain(up);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::view::{ServiceHealth, ServiceId};

    fn views(check: Option<Check>) -> Vec<ClusterView> {
        let id = ServiceId {
            namespace: "default".into(),
            name: "web".into(),
        };
        let mut health = ServiceHealth {
            ingress: vec![
                "10.0.0.1".parse().expect("address"),
                "fd00::1".parse().expect("address"),
            ],
            ready_endpoints: 1,
            ..ServiceHealth::default()
        };
        health.policy.check = check;
        vec![ClusterView {
            name: "fcp".into(),
            services: [(id, health)].into_iter().collect(),
            ..ClusterView::default()
        }]
    }

    fn target(address: &str) -> Target {
        Target {
            cluster: "fcp".into(),
            object: Regarding::service(ServiceId {
                namespace: "default".into(),
                name: "web".into(),
            }),
            address: address.parse().expect("address"),
        }
    }

    const TCP: Check = Check::Tcp { port: 80 };
    const N3M2: Thresholds = Thresholds {
        failures: 3,
        successes: 2,
    };

    #[test]
    fn the_hosts_of_one_object_share_its_targets_and_lose_an_address_that_is_down() {
        let owner = Regarding {
            kind: crate::view::Kind::HttpRoute,
            id: ServiceId {
                namespace: "shop".into(),
                name: "shop".into(),
            },
        };
        let mut health = ServiceHealth {
            ingress: vec!["10.0.0.9".parse().expect("address")],
            ready_endpoints: 1,
            ..ServiceHealth::default()
        };
        health.policy.check = Some(TCP);
        let entry = crate::view::HostEntry {
            owner: owner.clone(),
            created: String::new(),
            health,
            ttl: None,
            extras: Vec::new(),
        };
        let mut v = views(None);
        v[0].hosts = [
            ("a.example.com".to_owned(), entry.clone()),
            ("b.example.com".to_owned(), entry),
        ]
        .into_iter()
        .collect();
        let mut h = Health::new(N3M2);
        h.set_targets(&v);
        assert_eq!(h.targets().len(), 1, "one target for both hosts");
        let t = &h.targets()[0].0;
        assert_eq!(t.object, owner);
        for _ in 0..3 {
            h.record(&t.clone(), &TCP, false);
        }
        h.apply(&mut v);
        assert!(v[0].hosts.values().all(|e| !e.health.healthy()));
    }

    #[test]
    fn targets_follow_checks_coming_and_going_between_views() {
        let mut h = Health::new(N3M2);
        for (check, n) in [(None, 0), (Some(TCP), 2), (Some(TCP), 2), (None, 0)] {
            h.set_targets(&views(check));
            assert_eq!(h.targets().len(), n);
        }
        // One Service gains its check in a later version of the same view.
        let mut v = views(None);
        h.set_targets(&v);
        let (id, mut health) = v[0]
            .services
            .iter()
            .next()
            .map(|(i, s)| (i.clone(), s.clone()))
            .expect("one");
        health.policy.check = Some(TCP);
        v[0].services.insert(id, health);
        h.set_targets(&v);
        assert_eq!(h.targets().len(), 2);
    }

    #[test]
    fn an_address_goes_down_after_n_failures_and_up_after_m_successes() {
        let mut h = Health::new(N3M2);
        h.set_targets(&views(Some(TCP)));
        assert_eq!(h.targets().len(), 2);
        let t = target("10.0.0.1");
        assert_eq!(h.record(&t, &TCP, false), None);
        assert_eq!(h.record(&t, &TCP, false), None);
        assert_eq!(h.record(&t, &TCP, false), Some(false));
        assert!(!h.is_up("fcp", &t.object, t.address));
        let mut v = views(Some(TCP));
        h.apply(&mut v);
        let left: Vec<String> = v[0]
            .services
            .values()
            .next()
            .expect("a service")
            .ingress
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(left, ["fd00::1"]);
        assert_eq!(h.record(&t, &TCP, true), None);
        assert_eq!(h.record(&t, &TCP, true), Some(true));
        assert!(h.is_up("fcp", &t.object, t.address));
    }

    #[test]
    fn flapping_shorter_than_the_thresholds_changes_nothing() {
        let mut h = Health::new(N3M2);
        h.set_targets(&views(Some(TCP)));
        let t = target("10.0.0.1");
        for ok in [false, false, true, false, false, true, false, false, true] {
            assert_eq!(h.record(&t, &TCP, ok), None);
        }
        for _ in 0..3 {
            h.record(&t, &TCP, false);
        }
        assert!(!h.is_up("fcp", &t.object, t.address));
        for ok in [true, false, true, false, true, false] {
            assert_eq!(h.record(&t, &TCP, ok), None);
        }
        assert!(!h.is_up("fcp", &t.object, t.address));
    }

    #[test]
    fn a_changed_check_starts_over_and_a_stale_result_is_dropped() {
        let mut h = Health::new(Thresholds {
            failures: 1,
            successes: 1,
        });
        h.set_targets(&views(Some(TCP)));
        let t = target("10.0.0.1");
        assert_eq!(h.record(&t, &TCP, false), Some(false));
        h.set_targets(&views(Some(TCP)));
        assert!(!h.is_up("fcp", &t.object, t.address), "kept");
        let http = Check::Http {
            port: 80,
            path: "/".into(),
        };
        h.set_targets(&views(Some(http.clone())));
        assert!(h.is_up("fcp", &t.object, t.address), "started over");
        assert_eq!(h.record(&t, &TCP, false), None, "a result of the old check");
        h.set_targets(&views(None));
        assert!(h.targets().is_empty());
        assert_eq!(h.record(&t, &http, false), None, "a target gone");
    }

    proptest! {
        /// The state after any run of results is what N-in-a-row / M-in-a-row says.
        #[test]
        fn the_state_follows_the_last_run_of_results(
            results in prop::collection::vec(any::<bool>(), 0..60),
            failures in 1u32..5,
            successes in 1u32..5,
        ) {
            let mut h = Health::new(Thresholds { failures, successes });
            h.set_targets(&views(Some(TCP)));
            let t = target("10.0.0.1");
            let mut up = true;
            let mut run = 0u32;
            for ok in results {
                run = if ok == up { 0 } else { run + 1 };
                let flipped = h.record(&t, &TCP, ok);
                if run == if up { failures } else { successes } {
                    up = ok;
                    run = 0;
                    prop_assert_eq!(flipped, Some(ok));
                } else {
                    prop_assert_eq!(flipped, None);
                }
                prop_assert_eq!(h.is_up("fcp", &t.object, t.address), up);
            }
        }
    }
}
