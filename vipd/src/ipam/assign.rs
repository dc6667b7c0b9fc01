//! [`assign`], free of I/O: one [`Assignment`] goes through the rules of the
//! [module documentation](super) phase by phase (keep, legacy, requested, lowest free), each
//! phase over every Service of ours, oldest first.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use super::{Family, Kind, Notice, Plan, Pool, Pools, Quarantine, Reason, Svc, oldest_first};

/// Assigns addresses; see the [module documentation](super) for the rules.
pub fn assign(
    pools: &Pools,
    svcs: &[Svc],
    legacy: &BTreeMap<IpAddr, String>,
    quarantine: &Quarantine,
    now: Instant,
) -> Plan {
    let all = oldest_first(svcs);
    let ours: Vec<&Svc> = all
        .iter()
        .copied()
        .filter(|s| s.kind == Kind::Ours)
        .collect();
    let mut a = Assignment {
        pools,
        legacy,
        quarantine,
        now,
        taken: BTreeMap::new(),
        got: BTreeMap::new(),
        notices: Vec::new(),
    };
    // Foreign addresses are never ours to give.
    a.reserve(&all, Kind::Foreign);
    for s in &ours {
        a.keep(s);
    }
    // Those of Services that stopped being LoadBalancers are cleared by this plan (and
    // quarantined once that is seen), but not given to anyone else before.
    a.reserve(&all, Kind::NotLoadBalancer);
    for s in &ours {
        a.legacy(s);
    }
    for s in &ours {
        a.requested(s);
    }
    for s in &ours {
        a.lowest_free(s);
    }
    a.plan(&ours, svcs)
}

/// The assignment under way.
struct Assignment<'a> {
    pools: &'a Pools,
    legacy: &'a BTreeMap<IpAddr, String>,
    quarantine: &'a Quarantine,
    now: Instant,
    /// Address → owner.
    taken: BTreeMap<IpAddr, String>,
    /// What each of our Services gets so far.
    got: BTreeMap<&'a str, Vec<IpAddr>>,
    notices: Vec<Notice>,
}

impl<'a> Assignment<'a> {
    fn notice(&mut self, key: &str, reason: Reason, message: String) {
        self.notices.push(Notice {
            key: key.to_owned(),
            reason,
            message,
        });
    }

    /// The addresses of `s` so far.
    fn mine(&mut self, s: &'a Svc) -> &mut Vec<IpAddr> {
        self.got.entry(s.key.as_str()).or_default()
    }

    fn give(&mut self, s: &'a Svc, ip: IpAddr) {
        self.taken.insert(ip, s.key.clone());
        self.mine(s).push(ip);
    }

    /// Marks the addresses of every Service of `kind` as taken (by the oldest holder).
    fn reserve(&mut self, all: &[&Svc], kind: Kind) {
        for s in all.iter().filter(|s| s.kind == kind) {
            for ip in &s.current {
                self.taken.entry(*ip).or_insert_with(|| s.key.clone());
            }
        }
    }

    /// Whom the legacy ConfigMap keeps `ip` for, if not `key`.
    fn legacy_of(&self, ip: IpAddr, key: &str) -> Option<&'a String> {
        self.legacy.get(&ip).filter(|owner| *owner != key)
    }

    /// Rule 1, keep: the addresses `s` has, one per family it still wants, unless it asks for
    /// another or names another pool, or an older Service has it.
    fn keep(&mut self, s: &'a Svc) {
        self.mine(s);
        for &ip in &s.current {
            let fam = Family::of(ip);
            let asked_other = s
                .requested
                .iter()
                .any(|r| Family::of(*r) == fam && *r != ip);
            let other_pool = s
                .pool
                .as_deref()
                .and_then(|p| self.pools.get(p))
                .is_some_and(|p| !p.covers(ip));
            let has_family = self.mine(s).iter().any(|k| Family::of(*k) == fam);
            if !s.families.contains(&fam) || has_family || asked_other || other_pool {
                continue;
            }
            if let Some(owner) = self.taken.get(&ip) {
                let why =
                    format!("{ip} is also assigned to {owner}, which is older; taking it away");
                self.notice(&s.key, Reason::AddressConflict, why);
                continue;
            }
            self.give(s, ip);
        }
    }

    /// Rule 2, legacy: for a Service that requests nothing, the legacy ConfigMap's address of a
    /// family it still lacks, when free.
    fn legacy(&mut self, s: &'a Svc) {
        for (ip, _) in self.legacy.iter().filter(|(_, owner)| **owner == s.key) {
            let fam = Family::of(*ip);
            let wanted = s.families.contains(&fam)
                && !self.mine(s).iter().any(|k| Family::of(*k) == fam)
                && s.requested.is_empty()
                && s.bad_request.is_none();
            if wanted && !self.taken.contains_key(ip) {
                self.give(s, *ip);
            }
        }
    }

    /// Rule 3, requested: each address asked for, if it may be given; a notice otherwise, and for
    /// each family the request leaves out.
    fn requested(&mut self, s: &'a Svc) {
        if let Some(why) = &s.bad_request {
            self.notice(&s.key, Reason::InvalidRequest, why.clone());
            return;
        }
        for &ip in &s.requested {
            if self.mine(s).contains(&ip) {
                continue;
            }
            match self.refusal(s, ip) {
                Some(why) => self.notice(&s.key, Reason::AddressRefused, why),
                None => self.give(s, ip),
            }
        }
        // A Service that asks for addresses gets only those it asks for.
        if !s.requested.is_empty() {
            for fam in &s.families {
                let covered = self
                    .mine(s)
                    .iter()
                    .chain(&s.requested)
                    .any(|ip| Family::of(*ip) == *fam);
                if !covered {
                    let why = format!("addresses are requested, but no {fam} address");
                    self.notice(&s.key, Reason::AddressRefused, why);
                }
            }
        }
    }

    /// Why `s` may not have the address `ip` it asks for, if it may not.
    fn refusal(&self, s: &Svc, ip: IpAddr) -> Option<String> {
        let fam = Family::of(ip);
        if !s.families.contains(&fam) {
            return Some(format!("{ip} is {fam}, which the Service does not use"));
        }
        if s.requested
            .iter()
            .filter(|r| Family::of(**r) == fam)
            .count()
            > 1
        {
            return Some(format!("more than one {fam} address requested"));
        }
        if let Some(owner) = self.taken.get(&ip) {
            return Some(format!("{ip} is in use by {owner}"));
        }
        if let Some(owner) = self.legacy_of(ip, &s.key) {
            return Some(format!(
                "{ip} is kept for {owner} by the legacy keepalived-vip ConfigMap"
            ));
        }
        if let Some((owner, _)) = self.quarantine.blocks(ip, &s.key, self.now) {
            // No countdown in the message: each notice is published once.
            return Some(format!(
                "{ip} was released by {owner} and is still in quarantine"
            ));
        }
        let legacy_mine = self.legacy.get(&ip).is_some_and(|o| *o == s.key);
        match (self.pools.pool_of(ip), s.pool.as_deref()) {
            _ if legacy_mine => None,
            (None, _) => Some(format!("{ip} is in no address pool")),
            (Some(p), Some(want)) if p.name != want => {
                Some(format!("{ip} is in pool {}, not in pool {want}", p.name))
            }
            (Some(p), _) if p.reserves(ip) => Some(format!("{ip} is reserved in pool {}", p.name)),
            (Some(_), _) => None,
        }
    }

    /// Rule 4, lowest free: for a Service that requests nothing, the lowest free address of each
    /// family it lacks, in its pool or the first auto-assign pool that has one.
    fn lowest_free(&mut self, s: &'a Svc) {
        if s.bad_request.is_some() || !s.requested.is_empty() {
            return;
        }
        for &fam in &s.families {
            if self.mine(s).iter().any(|k| Family::of(*k) == fam) {
                continue;
            }
            let candidates: Vec<&Pool> = match s.pool.as_deref() {
                Some(name) => match self.pools.get(name) {
                    Some(p) => vec![p],
                    None => {
                        self.notice(&s.key, Reason::NoSuchPool, format!("no pool named {name}"));
                        break;
                    }
                },
                None => self.pools.iter().filter(|p| p.auto_assign).collect(),
            };
            let blocked = |ip: IpAddr| {
                self.taken.contains_key(&ip)
                    || self.legacy_of(ip, &s.key).is_some()
                    || self.quarantine.blocks(ip, &s.key, self.now).is_some()
            };
            let found = candidates.iter().find_map(|p| p.lowest_free(fam, &blocked));
            match found {
                Some(ip) => self.give(s, ip),
                None => {
                    let with: Vec<&str> = candidates
                        .iter()
                        .filter(|p| p.has(fam))
                        .map(|p| p.name.as_str())
                        .collect();
                    let why = if with.is_empty() {
                        format!("no pool to use has {fam} addresses")
                    } else {
                        format!("no free {fam} address in pool {}", with.join(", "))
                    };
                    self.notice(&s.key, Reason::PoolExhausted, why);
                }
            }
        }
    }

    /// The plan: each of our Services' addresses in the order of its families, an empty list
    /// for each non-LoadBalancer that still has addresses, the notices sorted and once.
    fn plan(mut self, ours: &[&'a Svc], svcs: &[Svc]) -> Plan {
        let mut plan = Plan::default();
        for s in ours {
            let mut ips = self.got.remove(s.key.as_str()).unwrap_or_default();
            ips.sort_by_key(|ip| s.families.iter().position(|f| *f == Family::of(*ip)));
            plan.addresses.insert(s.key.clone(), ips);
        }
        for s in svcs.iter().filter(|s| s.kind == Kind::NotLoadBalancer) {
            if !s.current.is_empty() {
                plan.addresses.insert(s.key.clone(), Vec::new());
            }
        }
        plan.notices = self.notices;
        plan.notices.sort();
        plan.notices.dedup();
        plan
    }
}
