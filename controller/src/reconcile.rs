//! The loop: win the election, read our keys, then on every change (debounced) turn the
//! clusters' views into the desired keys, diff them against ours and write the difference.
//! Nothing is written when nothing changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::Client;
use fedplane_ops::etcd::EtcdSettings;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::election::{self, Leadership};
use crate::health::{Health, Thresholds};
use crate::plan::{self, Change, Naming};
use crate::prober::{self, ProbeTiming};
use crate::reach::{self, Contribution};
use crate::source::Cluster;
use crate::store::{Store, StoreError};
use crate::view::{self, ClusterView, Ignored, Lookup as _};

/// The first pause after an etcd error; doubled at each error in a row.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause after an etcd error.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How the loop runs (from the command line).
#[derive(Debug, Clone)]
pub struct Options {
    /// Names, prefix, TTL.
    pub naming: Naming,
    /// `--unreachable-grace`.
    pub grace: Duration,
    /// `--debounce`.
    pub debounce: Duration,
    /// `--resync`.
    pub resync: Duration,
    /// `--once`.
    pub once: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// Election name.
    pub election: String,
    /// Election lease TTL.
    pub election_ttl: Duration,
    /// Our name in the election.
    pub id: String,
    /// `--probe-interval`, `--probe-timeout`.
    pub probe: ProbeTiming,
    /// `--probe-failures`, `--probe-successes`.
    pub thresholds: Thresholds,
}

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// `--once` found another replica leading.
    #[error(
        "another fedplane-controller ({0}) leads election {1}; --once would wait for it to stop"
    )]
    OtherLeader(String, String),
    /// etcd failed where the loop cannot go on (`--once`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Status {
    ready: Mutex<Option<String>>,
}

impl Status {
    fn set(&self, not_ready: Option<String>) {
        *self.ready.lock().unwrap_or_else(PoisonError::into_inner) = not_ready;
    }

    /// `Err(reason)` while not ready.
    pub fn ready(&self) -> Result<(), String> {
        match &*self.ready.lock().unwrap_or_else(PoisonError::into_inner) {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }
}

/// The reconcile loop.
#[derive(Debug)]
pub struct Reconciler {
    opts: Options,
    clusters: Vec<Cluster>,
    changed: Arc<Notify>,
    status: Arc<Status>,
    started: Instant,
    /// Per cluster: the generations its cached view was built from, the view, what it
    /// ignored, and its Nodes' fingerprint.
    cache: Vec<Option<CachedView>>,
    /// Per cluster: what was reported as ignored, so each is logged once.
    reported: Vec<BTreeSet<Ignored>>,
    /// Per cluster: its contribution at the last plan, so changes are logged once.
    contributions: Vec<Option<Contribution>>,
    /// The views and the plan of the last sync.
    planned: Option<Planned>,
    /// Diff every key next time: our keys were just read, or a write conflicted.
    full_diff: bool,
    /// The health checks' results, shared with the prober.
    health: Arc<Mutex<Health>>,
    /// When the last sync ended and how long it took (the adaptive debounce, see
    /// [`Self::wait`]).
    last_sync: Option<(Instant, Duration)>,
    /// Per host: the objects that lost it to another cluster's (cluster index, `loser|keeper`),
    /// as last reported (each is logged, and each loser gets its Event, once).
    hosts_reported: BTreeMap<String, BTreeSet<(usize, String)>>,
    /// The hosts refused, as last reported.
    refused_reported: plan::Refused,
}

/// The views, plan and refused hosts of the last sync.
#[derive(Debug)]
struct Planned {
    views: Vec<ClusterView>,
    desired: plan::Desired,
    refused: plan::Refused,
}

/// A cluster's view as last built or updated (see [`Reconciler::views`]).
#[derive(Debug, Clone)]
struct CachedView {
    generations: [u64; crate::source::KIND_COUNT],
    live: view::LiveView,
    nodes: Vec<(String, Option<String>, Option<String>)>,
}

enum Wake {
    Changed,
    Resync,
    Lost,
    Stop,
}

impl Reconciler {
    /// A loop over `clusters`; `changed` is what their watchers notify.
    pub fn new(
        opts: Options,
        clusters: Vec<Cluster>,
        changed: Arc<Notify>,
        status: Arc<Status>,
    ) -> Self {
        let n = clusters.len();
        let opts_thresholds = opts.thresholds;
        status.set(Some("starting".into()));
        Self {
            opts,
            clusters,
            changed,
            status,
            started: Instant::now(),
            last_sync: None,
            hosts_reported: BTreeMap::new(),
            refused_reported: plan::Refused::new(),
            cache: vec![None; n],
            reported: vec![BTreeSet::new(); n],
            contributions: vec![None; n],
            planned: None,
            full_diff: true,
            health: Arc::new(Mutex::new(Health::new(opts_thresholds))),
        }
    }

    /// Runs until `cancel` (SIGTERM) or, with `--once`, after one sync. etcd is connected
    /// here, and again after it failed, so an etcd that is down only delays the writes.
    pub async fn run(
        mut self,
        etcd: EtcdSettings,
        cancel: CancellationToken,
    ) -> Result<(), ReconcileError> {
        let owner = self.opts.naming.owner();
        let mut backoff = MIN_BACKOFF;
        if !self.opts.once {
            // A standby probes too, so a new leader starts from current results.
            tokio::spawn(prober::run(
                self.health.clone(),
                self.opts.probe,
                self.changed.clone(),
                cancel.clone(),
            ));
        }
        let client = loop {
            match Client::connect(etcd.endpoints.clone(), Some(etcd.connect_options())).await {
                Ok(c) => break c,
                Err(e) if self.opts.once => {
                    return Err(StoreError::Etcd {
                        what: "connect",
                        source: e,
                    }
                    .into());
                }
                Err(e) => {
                    warn!(endpoints = ?etcd.endpoints, error = %e, "etcd unreachable; retrying");
                    self.pause(&mut backoff, &cancel).await;
                    if cancel.is_cancelled() {
                        return Ok(());
                    }
                }
            }
        };
        // Leadership is kept across etcd errors while its lease lives (the keepalive retries
        // until the lease's TTL has passed without a refresh, and every write is fenced on
        // it): an etcd member restarting fails a write or two, and resigning and campaigning
        // again would stop the writes until the old lease expired.
        let mut leadership: Option<Leadership> = None;
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            if leadership.as_ref().is_some_and(|l| l.lost().is_cancelled()) {
                leadership = None;
                metrics::gauge!("fedplane_controller_leader").set(0.0);
                warn!(election = %self.opts.election, "leadership lost; campaigning again");
            }
            if !self.opts.dry_run && leadership.is_none() {
                match self.lead(&client, &cancel).await {
                    Ok(Some(l)) => leadership = Some(l),
                    Ok(None) => return Ok(()),
                    Err(e @ ReconcileError::OtherLeader(..)) => return Err(e),
                    Err(e) if self.opts.once => return Err(e),
                    Err(e) => {
                        warn!(error = %e, "election failed; retrying");
                        self.pause(&mut backoff, &cancel).await;
                        continue;
                    }
                }
            }
            // Only the keys under our domain: another federation of the same name in another
            // domain may share the prefix.
            let root = self.opts.naming.key(&self.opts.naming.domain);
            let mut store = Store::new(client.clone(), &root, owner.clone());
            let serving = Instant::now();
            match self.serve(&mut store, leadership.as_ref(), &cancel).await {
                Ok(()) => {
                    if let Some(l) = leadership {
                        l.resign().await;
                    }
                    metrics::gauge!("fedplane_controller_leader").set(0.0);
                    return Ok(());
                }
                Err(e) if self.opts.once => return Err(e.into()),
                Err(StoreError::LostLeadership(key)) => {
                    leadership = None;
                    metrics::gauge!("fedplane_controller_leader").set(0.0);
                    warn!(election = %key, "leadership lost; standing by");
                }
                Err(e) => {
                    metrics::counter!("fedplane_controller_errors_total", "kind" => "etcd")
                        .increment(1);
                    error!(error = %e, "etcd failed; writing again once it answers");
                    // A failure after a while of writing starts the backoff over.
                    if serving.elapsed() > MAX_BACKOFF {
                        backoff = MIN_BACKOFF;
                    }
                    self.pause(&mut backoff, &cancel).await;
                }
            }
        }
    }

    async fn pause(&self, backoff: &mut Duration, cancel: &CancellationToken) {
        self.status
            .set(Some(format!("etcd unavailable; retrying in {backoff:?}")));
        tokio::select! {
            () = tokio::time::sleep(*backoff) => {}
            () = cancel.cancelled() => {}
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }

    /// Campaigns until elected; `None` when cancelled first. Meanwhile the views are kept
    /// current for the health checks (a standby probes, so a new leader starts from current
    /// results), without reporting or writing anything.
    async fn lead(
        &mut self,
        client: &Client,
        cancel: &CancellationToken,
    ) -> Result<Option<Leadership>, ReconcileError> {
        let o = self.opts.clone();
        if o.once {
            let leader = client.clone().leader(o.election.as_str()).await;
            if let Ok(resp) = leader
                && let Some(kv) = resp.kv()
            {
                return Err(ReconcileError::OtherLeader(
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    o.election.clone(),
                ));
            }
        }
        // A standby is ready: it serves its probes and takes over when elected.
        self.status.set(None);
        info!(election = %o.election, id = %o.id, "campaigning");
        let campaign = election::campaign(client, &o.election, &o.id, o.election_ttl);
        tokio::pin!(campaign);
        let changed = self.changed.clone();
        loop {
            tokio::select! {
                r = &mut campaign => {
                    let l = r?;
                    info!(election = %o.election, id = %o.id, "elected leader; writing records");
                    metrics::gauge!("fedplane_controller_leader").set(1.0);
                    // What changed while standing by is planned at once.
                    self.changed.notify_one();
                    return Ok(Some(l));
                }
                () = changed.notified() => {
                    // As the leader's loop does: a burst of changes is one refresh.
                    tokio::time::sleep(o.debounce).await;
                    let _ = self.views(true);
                }
                () = cancel.cancelled() => return Ok(None),
            }
        }
    }

    /// Syncs until cancelled (Ok), or until leadership or etcd is lost (Err).
    async fn serve(
        &mut self,
        store: &mut Store,
        leadership: Option<&Leadership>,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        // A replica elected late has its own start grace: clusters it has not listed yet are
        // waited for, not withdrawn at once.
        self.started = Instant::now();
        let read = store.load().await?;
        self.full_diff = true;
        info!(keys = read, ours = store.owned().len(), under = %self.opts.naming.key(&self.opts.naming.domain), "read our keys from etcd");
        let fence = leadership.map(Leadership::fence);
        let lost = leadership.map_or_else(CancellationToken::new, Leadership::lost);
        let mut next_resync = tokio::time::Instant::now() + self.opts.resync;
        loop {
            let began = Instant::now();
            let views = loop {
                match self.views(false) {
                    Some(v) => break v,
                    None => match self.wait(&lost, cancel, next_resync).await {
                        Wake::Stop => return Ok(()),
                        Wake::Lost => {
                            return Err(StoreError::LostLeadership(self.opts.election.clone()));
                        }
                        Wake::Changed => {}
                        Wake::Resync => {
                            next_resync = tokio::time::Instant::now() + self.opts.resync;
                        }
                    },
                }
            };
            let t = Instant::now();
            let (records, changes) = self.plan(views, store);
            metrics::gauge!("fedplane_controller_records").set(records as f64);
            if self.opts.dry_run {
                print_changes(&changes);
                store.pretend(changes);
            } else if !changes.is_empty() {
                let n = changes.len();
                let applied = store.apply(changes, fence.as_ref()).await?;
                metrics::counter!("fedplane_controller_writes_total", "op" => "put")
                    .increment(applied.puts as u64);
                metrics::counter!("fedplane_controller_writes_total", "op" => "delete")
                    .increment(applied.deletes as u64);
                metrics::counter!("fedplane_controller_txns_total").increment(applied.txns as u64);
                metrics::counter!("fedplane_controller_conflicts_total")
                    .increment(applied.conflicts as u64);
                metrics::counter!("fedplane_controller_foreign_keys_total")
                    .increment(applied.foreign as u64);
                info!(changes = n, puts = applied.puts, deletes = applied.deletes, txns = applied.txns,
                      conflicts = applied.conflicts, foreign = applied.foreign,
                      records, took = ?t.elapsed(), "synced");
                if applied.conflicts > 0 {
                    // What the conflicting keys hold now is known: diff everything again at once.
                    self.full_diff = true;
                    self.changed.notify_one();
                }
            }
            metrics::counter!("fedplane_controller_syncs_total").increment(1);
            metrics::histogram!("fedplane_controller_sync_seconds")
                .record(t.elapsed().as_secs_f64());
            self.last_sync = Some((Instant::now(), began.elapsed()));
            self.status.set(None);
            if self.opts.once {
                return Ok(());
            }
            match self.wait(&lost, cancel, next_resync).await {
                Wake::Stop => return Ok(()),
                Wake::Lost => return Err(StoreError::LostLeadership(self.opts.election.clone())),
                Wake::Changed => {}
                Wake::Resync => {
                    next_resync = tokio::time::Instant::now() + self.opts.resync;
                    store.load().await?;
                    self.full_diff = true;
                }
            }
        }
    }

    /// The number of records wanted and the writes to get there. Only the Services whose
    /// health changed are planned again, and only their keys diffed, unless the keys we own
    /// were just (re)read or the clusters' localities changed.
    fn plan(&mut self, views: Vec<ClusterView>, store: &Store) -> (usize, Vec<Change>) {
        let naming = &self.opts.naming;
        let owned = store.owned();
        let (old, desired, refused, changes) = match self.planned.take() {
            Some(Planned {
                views: old,
                mut desired,
                mut refused,
            }) if !self.full_diff => {
                let changes =
                    match plan::replan_refusing(naming, &old, &views, &mut desired, &mut refused) {
                        Some(keys) => plan::diff_keys(&desired, owned, &keys),
                        None => plan::diff(&desired, owned),
                    };
                (Some(old), desired, refused, changes)
            }
            previous => {
                let refused = plan::refused_hosts(naming, &views);
                let desired = plan::plan_refusing(naming, &views, &refused);
                let changes = plan::diff(&desired, owned);
                (previous.map(|p| p.views), desired, refused, changes)
            }
        };
        self.full_diff = false;
        self.report_hosts(old.as_deref(), &views, &refused);
        let records = desired.len();
        self.planned = Some(Planned {
            views,
            desired,
            refused,
        });
        (records, store.without_foreign(changes))
    }

    /// Logs the hosts the planner refuses, and records a Warning Event on each object
    /// whose host another cluster's older object keeps (once each). Only the hosts that
    /// changed since `old` (the views of the last sync) are looked at again.
    fn report_hosts(
        &mut self,
        old: Option<&[ClusterView]>,
        views: &[ClusterView],
        refused: &plan::Refused,
    ) {
        if *refused != self.refused_reported {
            for (host, reason) in refused {
                if self.refused_reported.get(host) != Some(reason) {
                    warn!(host = %host, reason = %reason, "host left without records");
                }
            }
            self.refused_reported = refused.clone();
        }
        let same_clusters = |o: &&[ClusterView]| {
            o.len() == views.len() && o.iter().zip(views).all(|(a, b)| a.name == b.name)
        };
        let hosts: BTreeSet<&String> = match old.filter(same_clusters) {
            Some(old) => old
                .iter()
                .zip(views)
                .flat_map(|(o, n)| o.hosts.diff(&n.hosts).map(|d| plan::diff_key(&d)))
                .collect(),
            None => {
                self.hosts_reported.clear();
                views.iter().flat_map(|v| v.hosts.keys()).collect()
            }
        };
        for host in hosts {
            let mut now = BTreeSet::new();
            if let Some(owner) = plan::host_owner(views, host) {
                for (i, v) in views.iter().enumerate() {
                    if let Some(e) = v.hosts.get(host)
                        && e.owner != *owner
                    {
                        now.insert((i, format!("{}|{owner}", e.owner)));
                    }
                }
            }
            let before = self.hosts_reported.remove(host).unwrap_or_default();
            for (i, what) in now.difference(&before) {
                let Some(c) = self
                    .clusters
                    .iter()
                    .find(|c| c.view.cluster == views[*i].name)
                else {
                    continue;
                };
                let (loser, owner) = what.split_once('|').unwrap_or((what, ""));
                let note = format!(
                    "host {host} is kept by the older {owner} (in another cluster): no record from this one"
                );
                warn!(cluster = %views[*i].name, object = %loser, host = %host, %owner, "host claimed by an older object of another cluster");
                if let Some(e) = views[*i].hosts.get(host) {
                    c.warn(&e.owner, "HostConflict", &note);
                }
            }
            if !now.is_empty() {
                self.hosts_reported.insert(host.clone(), now);
            }
        }
    }

    /// Waits for a change, a grace deadline, the resync time, lost leadership or SIGTERM.
    ///
    /// The debounce adapts to what a sync costs: a change is taken up once the last sync has
    /// been over for as long as it took (at most `--debounce`), so syncs take at most about
    /// half the time. A change after a quiet spell, or after a cheap sync (a few Services:
    /// milliseconds), is taken up at once; under a storm of changes whose syncs are long,
    /// what arrives meanwhile is batched into the next.
    async fn wait(
        &mut self,
        lost: &CancellationToken,
        cancel: &CancellationToken,
        resync: tokio::time::Instant,
    ) -> Wake {
        let now = Instant::now();
        let deadline = self
            .clusters
            .iter()
            .flat_map(|c| {
                [
                    reach::next_change(c.link(), self.started, now, self.opts.grace),
                    c.stale_kinds(self.opts.grace, now).1,
                ]
            })
            .flatten()
            .min()
            .map_or(resync, |d| tokio::time::Instant::from_std(d).min(resync));
        let wake = tokio::select! {
            () = self.changed.notified() => None,
            () = tokio::time::sleep_until(deadline) => {
                Some(if deadline >= resync { Wake::Resync } else { Wake::Changed })
            }
            () = lost.cancelled() => Some(Wake::Lost),
            () = cancel.cancelled() => Some(Wake::Stop),
        };
        if let Some(wake) = wake {
            return wake;
        }
        let now = Instant::now();
        let due = self.last_sync.map_or(now, |(ended, took)| {
            (ended + took.min(self.opts.debounce)).max(now)
        });
        if due > now {
            tokio::select! {
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => {}
                () = cancel.cancelled() => return Wake::Stop,
            }
        }
        Wake::Changed
    }

    /// The views to plan from, or `None` while a cluster not yet listed is still awaited. A
    /// `standby` only keeps the health checks' targets current: it reports nothing (no log
    /// lines, Events or readiness changes: the leader does).
    fn views(&mut self, standby: bool) -> Option<Vec<ClusterView>> {
        let now = Instant::now();
        let mut waiting = Vec::new();
        let mut views = Vec::with_capacity(self.clusters.len());
        for (i, c) in self.clusters.iter().enumerate() {
            let link = c.link();
            let name = &c.view.cluster;
            let contribution = reach::contribution(link, self.started, now, self.opts.grace);
            if !standby && self.contributions[i] != Some(contribution) {
                match contribution {
                    Contribution::Withdrawn => warn!(cluster = %name, grace = ?self.opts.grace,
                        "cluster unreachable (or never listed) past the grace period: its records are withdrawn"),
                    Contribution::Held => {
                        info!(cluster = %name, "cluster unreachable: holding its last records")
                    }
                    Contribution::Live if self.contributions[i].is_some() => {
                        info!(cluster = %name, "cluster live again: publishing its current records");
                    }
                    Contribution::Live | Contribution::Wait => {}
                }
                self.contributions[i] = Some(contribution);
            }
            metrics::gauge!("fedplane_controller_cluster_withdrawn", "cluster" => name.clone())
                .set(f64::from(u8::from(contribution == Contribution::Withdrawn)));
            match contribution {
                Contribution::Wait => {
                    waiting.push(name.clone());
                    continue;
                }
                Contribution::Live | Contribution::Held => {}
                Contribution::Withdrawn => {}
            }
            // The generations and the changes up to them, read together.
            let (generations, changes) = c.take_changes();
            match &mut self.cache[i] {
                Some(cached) if cached.generations == generations => {}
                // Objects changed one by one, and nothing the view reads of the Nodes (Node
                // heartbeats, status, other labels): those objects are read again (the
                // Services, their EndpointSlices, the host sources' objects, and those whose
                // health reads a changed EndpointSlice).
                Some(cached)
                    if !changes.relisted
                        && (cached.generations[0] == generations[0]
                            || cached.nodes == view::node_fingerprint(&c.view, &c.nodes())) =>
                {
                    cached.live.update(&c.view, &changes, c);
                    cached.generations = generations;
                }
                slot => {
                    // The old view goes first: two built views at once are the peak of memory.
                    *slot = None;
                    let objects = c.objects();
                    *slot = Some(CachedView {
                        generations,
                        live: view::LiveView::build(&c.view, &objects),
                        nodes: view::node_fingerprint(&c.view, &objects.nodes),
                    });
                }
            }
            let Some(CachedView { live, .. }) = &self.cache[i] else {
                continue;
            };
            // A standby reports nothing: once elected, it reports what is still there.
            if !standby {
                report(&mut self.reported[i], c, &live.ignored());
            }
            let mut fresh = live.view.clone();
            // The hosts of a kind whose watch has failed past the grace period go, as a
            // cluster's records do.
            let (stale, _) = c.stale_kinds(self.opts.grace, now);
            if !stale.is_empty() {
                fresh.hosts = fresh
                    .hosts
                    .iter()
                    .filter(|(_, e)| !stale.contains(&e.owner.kind))
                    .map(|(h, e)| (h.clone(), e.clone()))
                    .collect();
            }
            views.push(match contribution {
                Contribution::Withdrawn => fresh.withdrawn(),
                _ => fresh,
            });
        }
        if waiting.is_empty() {
            let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
            health.set_targets(&views);
            health.apply(&mut views);
            Some(views)
        } else {
            if !standby {
                self.status.set(Some(format!(
                    "waiting for the first list of {}",
                    waiting.join(", ")
                )));
            }
            None
        }
    }
}

/// Logs what is newly ignored in a cluster (each item once), records a Warning Event on the
/// Service it is about (a bad annotation), and counts it.
fn report(reported: &mut BTreeSet<Ignored>, c: &Cluster, ignored: &[Ignored]) {
    let cluster = c.view.cluster.as_str();
    metrics::gauge!("fedplane_controller_ignored_objects", "cluster" => cluster.to_owned())
        .set(ignored.len() as f64);
    if reported.len() == ignored.len() && ignored.iter().all(|i| reported.contains(i)) {
        return; // nothing new (the usual case: a cached view)
    }
    let now: BTreeSet<Ignored> = ignored.iter().cloned().collect();
    for item in now.difference(reported) {
        warn!(cluster, object = %item.object, reason = %item.reason, "ignored");
        if let Some((regarding, reason)) = &item.event {
            c.warn(regarding, reason, &item.reason);
        }
    }
    *reported = now;
}

fn print_changes(changes: &[Change]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for c in changes {
        let _ = writeln!(out, "{c}");
    }
    let _ = out.flush();
}
