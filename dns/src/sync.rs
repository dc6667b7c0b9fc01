//! Keeping the served records current with etcd: the etcd session, backoff and publishing.
//!
//! Start: a paged range read of the prefix pinned to one revision, then one watch from that
//! revision + 1. Each watch response is applied ([`crate::apply`]) to a private copy of the
//! records, the fast path's table is recompiled for the changed keys' names
//! ([`crate::fast::Table::recompile_near`]), and both are published atomically as one
//! [`Served`]; queries never wait for etcd. The big ancestors of those names (more than 64
//! records below) are compiled by a background job and published when it is done (see
//! `Far`): until then they answer their subtree as before the change; what is left when the
//! session ends is compiled before the last [`Served`] keeps answering alone. Responses that are already waiting when one arrives (a
//! backlog: updates faster than one recompile each) are applied together and recompiled and
//! published once, so the sync keeps up with any update rate at the cost of a little latency. When the watch breaks, stalls, or etcd is down, the last
//! [`Served`] keeps answering while we reconnect with backoff (to any configured endpoint) and
//! resume from the last revision seen. A compacted start revision, or an etcd whose history
//! does not continue ours, means events were lost: reload everything.
//!
//! Nothing on the watch loop waits on anything but the watch: lease deadlines are read by a
//! lease task of the session ([`crate::leases`]) and applied here between watch responses, and
//! the state on disk ([`crate::state`]) is written by a saver task from O(1) clones of the
//! records. A watch that says nothing for [`PROGRESS_EVERY`] (we ask etcd to confirm progress
//! every [`PROGRESS_ASK`] while it is quiet) is stalled: reconnect, to the next endpoint.
//!
//! With a state directory, when etcd has not given us a first load within
//! [`DISK_FALLBACK_AFTER`], the snapshot saved on disk is served (ready, with
//! `fedplane_dns_serving_from_disk` 1 and its age in `fedplane_dns_state_age_seconds`) until the
//! first load from etcd replaces it; unless it is older than `--state-max-age`, or unusable
//! ([`crate::state`] says when, and what its etcd cluster ID is for).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use etcd_client::{Client, EventType, KeyValue, WatchOptions, WatchResponse};
use fedplane_ops::etcd::{MAX_MESSAGE, Paging, RequestError, bounded, prefix_range, read_prefix};
use hickory_proto::rr::Name;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::apply::{self, Change, InvalidKeys, Kv, Load, Rejected};
use crate::config::EtcdSettings;
use crate::fast;
use crate::index::{Records, Zones};
use crate::leases::{self, LEASE_REFRESH, LeaseTask, Report, Request};
use crate::state::{self, SaveHandle, Saver};

/// Keys per range request during the initial load. etcd 3.4 walks the whole rest of the range
/// on every page (the limit is applied after), so a load costs about pages × keys: few, big
/// pages load 900k keys in seconds. 50,000 SkyDNS values are under 10 MiB, well within
/// [`MAX_MESSAGE`].
pub const LOAD_PAGE_SIZE: i64 = 50_000;
/// A watch that says nothing for this long is stalled (a partitioned or hung member can keep a
/// stream open and send nothing): reconnect. A change made after the member we follow failed
/// is answered within about this long.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Changed keys applied from waiting watch responses before the table is recompiled and the
/// records published (a backlog is applied in batches of about this many).
const MAX_BATCH_KEYS: usize = 10_000;
/// While the watch is quiet, how often we ask etcd to confirm it is current (a progress
/// request), so a healthy idle watch is never quiet for [`PROGRESS_EVERY`].
pub const PROGRESS_ASK: Duration = Duration::from_secs(1);
/// At the first load, how long readiness waits for the lease deadlines (so first answers have
/// the right TTLs); past it, leased records answer with the 30 s floor until they come.
const FIRST_LEASES_WAIT: Duration = Duration::from_secs(2);
/// With a state directory: how long etcd has to give us a first load before the snapshot on
/// disk is served.
pub const DISK_FALLBACK_AFTER: Duration = Duration::from_secs(3);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What went wrong talking to etcd. None of these stop the server.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// etcd could not be reached or refused the request.
    #[error("etcd {endpoints}: {source}")]
    Etcd {
        /// The configured endpoints.
        endpoints: String,
        /// The client error.
        source: etcd_client::Error,
    },
    /// An etcd request took longer than its bound.
    #[error("etcd {0}: request timed out")]
    Timeout(String),
    /// The revision we wanted is compacted away; a full reload follows.
    #[error("etcd revision {wanted} is compacted (compact revision {compacted})")]
    Compacted {
        /// The revision we asked for.
        wanted: i64,
        /// etcd's compact revision.
        compacted: i64,
    },
    /// etcd's history does not continue ours (restored from a backup, or another cluster); a
    /// full reload follows.
    #[error("etcd history diverged: {0}")]
    Diverged(String),
    /// The watch ended or was cancelled by the server.
    #[error("etcd watch ended: {0}")]
    WatchEnded(String),
    /// etcd did not confirm progress in time.
    #[error("etcd watch stalled: no progress confirmation within {0:?}")]
    Stalled(Duration),
}

/// Sync progress, as exported in metrics (`fedplane_dns_sync_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SyncState {
    /// Connecting and reading the prefix.
    Loading = 0,
    /// Watching: the snapshot follows etcd.
    Watching = 1,
    /// etcd unreachable: answering from the last snapshot.
    Disconnected = 2,
}

/// What the query path reads, published as one value: the records at one revision and the fast
/// path's answers compiled from them (big parents of the last changes possibly from a moment
/// before: see `Far`).
#[derive(Debug, Clone)]
pub struct Served {
    /// The records.
    pub records: Records,
    /// The fast path's compiled answers of `records`.
    pub fast: fast::Table,
}

impl Served {
    /// No records and nothing compiled.
    fn empty(zones: Arc<Zones>, revision: i64) -> Self {
        Self {
            records: Records::new(zones, revision),
            fast: fast::Table::default(),
        }
    }
}

/// Where the served records come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Source {
    /// Nothing loaded yet (SERVFAIL).
    Nothing = 0,
    /// The snapshot saved on disk, until etcd is loaded.
    Disk = 1,
    /// etcd.
    Etcd = 2,
}

/// What the sync task publishes and everyone else reads.
#[derive(Debug)]
pub struct Shared {
    /// The records and compiled answers being served. Readers `load()` it (one atomic load, no
    /// lock); only the sync task stores.
    pub served: ArcSwap<Served>,
    /// Set once complete records are published: the first load from etcd, or the snapshot
    /// on disk (it answers; its age is in the metrics).
    pub ready: AtomicBool,
    state: AtomicU64,
    source: AtomicU8,
    started: Instant,
    last_sync_ms: AtomicU64,
    /// When the disk snapshot being served was saved (ms since the Unix epoch).
    disk_saved_ms: AtomicU64,
    /// The etcd cluster the disk snapshot being served was saved from.
    disk_cluster_id: AtomicU64,
    /// The value replaced by the last publish, kept until the next one so that it is freed
    /// here, on the sync task, and not on a UDP worker whose guard happened to hold it last.
    retired: Mutex<Option<Arc<Served>>>,
    /// Counts publishes, for tasks that act on changes (NOTIFY): [`Shared::subscribe`].
    published: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    /// Unloaded, empty records for `zones`.
    pub fn new(zones: Arc<Zones>) -> Self {
        Self {
            served: ArcSwap::from_pointee(Served::empty(zones, 0)),
            ready: AtomicBool::new(false),
            state: AtomicU64::new(SyncState::Loading as u64),
            source: AtomicU8::new(Source::Nothing as u8),
            started: Instant::now(),
            last_sync_ms: AtomicU64::new(0),
            disk_saved_ms: AtomicU64::new(0),
            disk_cluster_id: AtomicU64::new(0),
            retired: Mutex::new(None),
            published: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver that wakes after each publish of new records.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The current sync state.
    pub fn state(&self) -> SyncState {
        match self.state.load(Ordering::Relaxed) {
            1 => SyncState::Watching,
            2 => SyncState::Disconnected,
            _ => SyncState::Loading,
        }
    }

    fn set_state(&self, s: SyncState) {
        self.state.store(s as u64, Ordering::Relaxed);
        metrics::gauge!("fedplane_dns_sync_state").set(f64::from(s as u8));
    }

    /// Where the served records come from.
    pub fn source(&self) -> Source {
        match self.source.load(Ordering::Relaxed) {
            1 => Source::Disk,
            2 => Source::Etcd,
            _ => Source::Nothing,
        }
    }

    /// Time since the served records were last confirmed to match etcd (`None` before
    /// anything is served); for the disk snapshot, the time since it was saved.
    pub fn snapshot_age(&self) -> Option<Duration> {
        match self.source() {
            Source::Nothing => None,
            Source::Disk => Some(self.disk_age()),
            Source::Etcd => {
                let last = Duration::from_millis(self.last_sync_ms.load(Ordering::Relaxed));
                Some(self.started.elapsed().saturating_sub(last))
            }
        }
    }

    /// While the disk snapshot is served, the time since it was saved.
    pub fn disk_age(&self) -> Duration {
        let saved = UNIX_EPOCH + Duration::from_millis(self.disk_saved_ms.load(Ordering::Relaxed));
        SystemTime::now().duration_since(saved).unwrap_or_default()
    }

    /// Stores `served` as the one answering, under the `retired` lock so that publishers do not
    /// interleave; `from` says where it came from. The disk snapshot is published only while
    /// nothing is: it never replaces records from etcd.
    fn swap_in(&self, served: &Served, from: Source) -> bool {
        let mut retired = self
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if from == Source::Disk && self.source() != Source::Nothing {
            return false;
        }
        let old = self.served.swap(Arc::new(served.clone()));
        let older = retired.replace(old);
        if self.source() != from {
            self.source.store(from as u8, Ordering::Relaxed);
            metrics::gauge!("fedplane_dns_serving_from_disk").set(if from == Source::Disk {
                1.0
            } else {
                0.0
            });
        }
        drop(retired);
        drop(older);
        self.published.send_modify(|n| *n = n.wrapping_add(1));
        true
    }

    /// Publishes the snapshot read from disk, saved at `saved_at` from etcd cluster
    /// `cluster_id`, unless records from etcd are served already; it is complete, so it makes
    /// the server ready.
    fn publish_disk(&self, served: &Served, saved_at: SystemTime, cluster_id: u64) -> bool {
        let ms = saved_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.disk_saved_ms.store(ms, Ordering::Relaxed);
        self.disk_cluster_id.store(cluster_id, Ordering::Relaxed);
        if !self.swap_in(served, Source::Disk) {
            return false;
        }
        self.ready.store(true, Ordering::Relaxed);
        Self::publish_gauges(served);
        true
    }

    /// Stops serving the disk snapshot (it grew older than `--state-max-age`) unless etcd's
    /// records replaced it already: SERVFAIL and not ready until etcd answers, as after a
    /// start with nothing to serve. Returns whether it was withdrawn.
    fn withdraw_disk(&self, zones: Arc<Zones>) -> bool {
        let mut retired = self
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.source() != Source::Disk {
            return false;
        }
        let old = self.served.swap(Arc::new(Served::empty(zones, 0)));
        let older = retired.replace(old);
        self.source.store(Source::Nothing as u8, Ordering::Relaxed);
        self.ready.store(false, Ordering::Relaxed);
        metrics::gauge!("fedplane_dns_serving_from_disk").set(0.0);
        drop(retired);
        drop(older);
        self.published.send_modify(|n| *n = n.wrapping_add(1));
        true
    }

    /// Publishes `served` from etcd; `synced` says it is known to match etcd now (a load, or a
    /// watch message), which resets the snapshot age.
    fn publish(&self, served: &Served, synced: bool) {
        self.swap_in(served, Source::Etcd);
        if synced {
            let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_sync_ms.store(ms, Ordering::Relaxed);
        }
        Self::publish_gauges(served);
    }

    fn publish_gauges(served: &Served) {
        #[allow(clippy::cast_precision_loss)]
        {
            metrics::gauge!("fedplane_dns_snapshot_revision").set(served.records.revision() as f64);
            metrics::gauge!("fedplane_dns_records").set(served.records.len() as f64);
            metrics::gauge!("fedplane_dns_compiled_names").set(served.fast.len() as f64);
        }
    }
}

/// The etcd sync task.
#[derive(Debug)]
pub struct EtcdSync {
    settings: EtcdSettings,
    shared: Arc<Shared>,
    zones: Arc<Zones>,
    /// Keys whose current value is invalid, so each bad value is logged once however often we
    /// reload.
    invalid: InvalidKeys,
    /// The etcd cluster our snapshot came from.
    cluster_id: u64,
    /// Connection attempts so far; picks the endpoint of the next one.
    attempt: usize,
    /// Where the records are saved and read back from (`--state-dir`).
    state_dir: Option<PathBuf>,
    /// A saved snapshot older than this is not served (`--state-max-age`).
    state_max_age: Duration,
    /// Hands the records to the saver after each change.
    saver: SaveHandle,
    /// The big ancestors of changed names, recompiled in the background.
    far: Far,
}

/// The big ancestors of changed names whose answers are still to be recompiled
/// ([`fast::Table::recompile_near`]), by one background job at a time, so the watch goes on
/// while a parent of thousands of names compiles.
///
/// Every batch is one mark. A job compiles the dirty names from the records of the mark it
/// started at; its answer for a name goes into the table unless the batch path compiled that
/// name since (from newer records), and the name stays dirty if it was marked again since.
/// So an answer never goes back in time, and a parent whose children keep changing is still
/// brought forward once per job. After a job, the next waits as long as it took: under a storm
/// of changes below big parents, their compiles take at most about half a core.
#[derive(Debug, Default)]
struct Far {
    /// Each name to compile, with the mark it was last left for later at.
    dirty: HashMap<Name, u64>,
    /// While a job runs: the names the batch path compiled since it started, with the mark.
    fresh: HashMap<Name, u64>,
    marks: u64,
    /// The running job: the mark and the time it started at. No job starts before
    /// `rest_until`.
    running: Option<(u64, tokio::time::Instant)>,
    rest_until: Option<tokio::time::Instant>,
}

impl Far {
    /// Notes one batch's recompilation.
    fn note(&mut self, done: fast::NearFar) {
        self.marks += 1;
        for n in done.near {
            self.dirty.remove(&n);
            if self.running.is_some() {
                self.fresh.insert(n, self.marks);
            }
        }
        for n in done.far {
            self.dirty.insert(n, self.marks);
        }
    }

    /// A job compiling every dirty name from `records`, unless one runs or nothing is dirty:
    /// it returns the mark it started at with the answers.
    fn start(
        &mut self,
        records: &Records,
    ) -> Option<tokio::task::JoinHandle<(u64, fast::Recompiled)>> {
        if self.running.is_some() || self.dirty.is_empty() || self.resting().is_some() {
            return None;
        }
        self.fresh.clear();
        self.running = Some((self.marks, tokio::time::Instant::now()));
        let names: Vec<Name> = self.dirty.keys().cloned().collect();
        let (records, marks) = (records.clone(), self.marks);
        Some(tokio::task::spawn_blocking(move || {
            (marks, fast::Table::compile_apart(&records, &names))
        }))
    }

    /// Until when the next job waits, if it does.
    fn resting(&self) -> Option<tokio::time::Instant> {
        self.rest_until.filter(|t| *t > tokio::time::Instant::now())
    }

    /// The running job ended.
    fn ended(&mut self) {
        if let Some((_, t)) = self.running.take() {
            let now = tokio::time::Instant::now();
            self.rest_until = Some(now + (now - t));
        }
    }

    /// Whether the answer a job started at mark `started` compiled for `name` goes into the
    /// table; `name` is clean after it unless marked again since.
    fn settle(&mut self, name: &Name, started: u64) -> bool {
        if self.fresh.get(name).is_some_and(|m| *m > started) {
            return false;
        }
        if self.dirty.get(name).is_some_and(|m| *m <= started) {
            self.dirty.remove(name);
        }
        true
    }

    /// Forgets everything (a full compile, or a new session: a running job's result is lost).
    fn reset(&mut self, keep_dirty: bool) {
        self.running = None;
        self.rest_until = None;
        self.fresh.clear();
        if !keep_dirty {
            self.dirty.clear();
        }
    }
}

impl EtcdSync {
    /// A sync task for `zones`, publishing into `shared`.
    pub fn new(settings: EtcdSettings, zones: Arc<Zones>, shared: Arc<Shared>) -> Self {
        Self {
            settings,
            shared,
            zones,
            invalid: InvalidKeys::default(),
            cluster_id: 0,
            attempt: 0,
            state_dir: None,
            state_max_age: state::DEFAULT_MAX_AGE,
            saver: SaveHandle::disabled(),
            far: Far::default(),
        }
    }

    /// Saves the records in `dir` and serves them from there when etcd is not loaded in time
    /// at start, unless they were saved more than `max_age` ago ([`crate::state`]).
    #[must_use]
    pub fn with_state_dir(mut self, dir: Option<PathBuf>, max_age: Duration) -> Self {
        self.state_dir = dir;
        self.state_max_age = max_age;
        self
    }

    fn endpoints(&self) -> String {
        self.settings.endpoints.join(",")
    }

    fn etcd_err(&self, source: etcd_client::Error) -> SyncError {
        SyncError::Etcd {
            endpoints: self.endpoints(),
            source,
        }
    }

    fn request_err(&self, e: RequestError) -> SyncError {
        match e {
            RequestError::Timeout => SyncError::Timeout(self.endpoints()),
            RequestError::Etcd(source) => self.etcd_err(source),
        }
    }

    /// Runs until `cancel` fires. Never returns an error: failures are logged, counted, and
    /// retried while the last snapshot keeps answering. With a state directory, also saves the
    /// records there and serves the saved ones if etcd is not loaded in time.
    pub async fn run(mut self, cancel: CancellationToken) {
        let saver = self.state_dir.clone().map(|dir| {
            let (saver, handle) = Saver::new(dir);
            self.saver = handle;
            saver
        });
        let fallback = self.state_dir.clone().map(|dir| {
            disk_fallback(
                dir,
                self.zones.clone(),
                self.shared.clone(),
                self.state_max_age,
            )
        });
        let saving = async {
            if let Some(s) = saver {
                s.run(cancel.clone()).await;
            }
        };
        let falling_back = async {
            if let Some(f) = fallback {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = f => {}
                }
            }
        };
        tokio::join!(self.sync(&cancel), saving, falling_back);
    }

    async fn sync(&mut self, cancel: &CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut need_load = true;
        loop {
            if need_load {
                self.shared.set_state(SyncState::Loading);
            }
            let result = tokio::select! {
                () = cancel.cancelled() => return,
                r = self.session(&mut need_load, &mut backoff) => r,
            };
            let Err(e) = result else { return };
            // What the session left for its background compile is compiled now: the answers
            // served while etcd is away are its records', big parents included.
            self.compile_far_now().await;
            let revision = self.shared.served.load().records.revision();
            let reload = match e {
                SyncError::Compacted { .. } => Some("compacted"),
                SyncError::Diverged(_) => Some("diverged"),
                _ => None,
            };
            if let Some(reason) = reload {
                warn!(error = %e, revision, "cannot follow etcd's history from our revision; reloading");
                metrics::counter!("fedplane_dns_etcd_reloads_total", "reason" => reason)
                    .increment(1);
                need_load = true;
                continue;
            }
            if self.shared.ready.load(Ordering::Relaxed) {
                self.shared.set_state(SyncState::Disconnected);
                warn!(error = %e, "etcd unavailable; serving snapshot at revision {revision}, retrying in {backoff:?}");
            } else {
                warn!(error = %e, "etcd unavailable before the first load; answering SERVFAIL, retrying in {backoff:?}");
            }
            metrics::counter!("fedplane_dns_etcd_reconnects_total").increment(1);
            // Try the next endpoint at once; back off once every endpoint failed in turn.
            self.attempt += 1;
            if !self
                .attempt
                .is_multiple_of(self.settings.endpoints.len().max(1))
            {
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Compiles every big ancestor still dirty into the served table and publishes it.
    async fn compile_far_now(&mut self) {
        self.far.reset(true);
        if self.far.dirty.is_empty() {
            return;
        }
        let names: Vec<Name> = self.far.dirty.drain().map(|(n, _)| n).collect();
        let mut served = (**self.shared.served.load()).clone();
        let records = served.records.clone();
        match tokio::task::spawn_blocking(move || fast::Table::compile_apart(&records, &names))
            .await
        {
            Ok(done) => {
                if served.fast.put_back(done, |_| true) {
                    self.shared.publish(&served, false);
                }
            }
            Err(e) => {
                warn!(error = %e, "compiling the answers of big parent names failed: they answer as before the last changes until those change again");
            }
        }
    }

    /// One connection: load if needed, then watch until something breaks. Lease deadlines
    /// come from the session's lease task and are applied between watch responses.
    async fn session(
        &mut self,
        need_load: &mut bool,
        backoff: &mut Duration,
    ) -> Result<(), SyncError> {
        let mut client = self.connect().await?;
        let mut leases = LeaseBook::new(leases::spawn(client.lease_client()));
        let mut working: Served = if *need_load {
            let mut records = self.load(&mut client).await?;
            leases.refresh(&records);
            if self.shared.source() != Source::Etcd {
                // The first load: nothing from etcd is served yet, so wait a moment for the
                // deadlines (bounded), and the first answers have the right TTLs.
                let until = tokio::time::Instant::now() + FIRST_LEASES_WAIT;
                while leases.refreshing.is_some() {
                    match tokio::time::timeout_at(until, leases.task.reports.recv()).await {
                        Ok(Some(report)) => leases.apply(&mut records, report),
                        _ => break,
                    }
                }
            }
            info!(
                revision = records.revision(),
                records = records.len(),
                invalid = self.invalid.len(),
                from_disk = self.shared.source() == Source::Disk,
                "loaded records from etcd"
            );
            self.report_other_history(&records);
            // The first load is ready as soon as everything is read: the general path answers
            // every name correctly while the fast path's answers are compiled. A reload (or
            // the load that replaces the disk snapshot) keeps serving what it replaces, with
            // its compiled answers, until the new ones are compiled: an empty table would send
            // every UDP query to the general path meanwhile.
            let mut served = Served {
                records,
                fast: fast::Table::default(),
            };
            if !self.shared.ready.load(Ordering::Relaxed) {
                self.shared.publish(&served, true);
                self.shared.ready.store(true, Ordering::Relaxed);
            }
            self.saver.offer(&served.records, self.cluster_id);
            // Only now: a load that failed half way is redone, never resumed.
            *need_load = false;
            let started = Instant::now();
            let records = served.records.clone();
            served.fast = tokio::task::spawn_blocking(move || fast::Table::compile(&records))
                .await
                .map_err(|e| SyncError::WatchEnded(format!("compile task failed: {e}")))?;
            self.far.reset(false);
            info!(names = served.fast.len(), took = ?started.elapsed(), "compiled the fast path's answers");
            self.shared.publish(&served, true);
            self.shared.ready.store(true, Ordering::Relaxed);
            served
        } else {
            (**self.shared.served.load()).clone()
        };
        let from = working.records.revision() + 1;
        let (start, end) = prefix_range(&self.settings.prefix);
        // Bounded like a stall: a hung member can accept the connection and never answer.
        let mut stream = tokio::time::timeout(
            PROGRESS_EVERY,
            client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE)
                .watch(
                    start,
                    Some(
                        WatchOptions::new()
                            .with_range(end)
                            .with_start_revision(from)
                            .with_progress_notify(),
                    ),
                ),
        )
        .await
        .map_err(|_| SyncError::Stalled(PROGRESS_EVERY))?
        .map_err(|e| self.etcd_err(e))?;
        debug!(from, "watching etcd");
        let mut lease_tick = tokio::time::interval(LEASE_REFRESH);
        lease_tick.tick().await;
        // Anything etcd sends shows the watch is alive; `check` fires when it has been quiet
        // for PROGRESS_ASK (ask for progress) and at PROGRESS_EVERY (stalled).
        let mut last_heard = tokio::time::Instant::now();
        let check = tokio::time::sleep_until(last_heard + PROGRESS_ASK);
        tokio::pin!(check);
        // (A job of an earlier session is gone with it; its names are still dirty.)
        self.far.reset(true);
        let mut far_job = None;
        loop {
            // Read once: a rest that ends between the start and the guard below would
            // otherwise leave the job waiting for the next message.
            let resting = self.far.resting();
            if far_job.is_none() && resting.is_none() {
                far_job = self.far.start(&working.records);
            }
            tokio::select! {
                () = tokio::time::sleep_until(resting.unwrap_or_else(tokio::time::Instant::now)),
                    if far_job.is_none() && !self.far.dirty.is_empty() && resting.is_some() => {}
                done = async { far_job.as_mut().expect("a job").await }, if far_job.is_some() => {
                    far_job = None;
                    self.far.ended();
                    let (started, recompiled) = done.map_err(|e| {
                        // Tried once more when the session ends (compile_far_now).
                        self.far.reset(true);
                        SyncError::WatchEnded(format!("compile task failed: {e}"))
                    })?;
                    if working.fast.put_back(recompiled, |n| self.far.settle(n, started)) {
                        self.shared.publish(&working, false);
                    }
                }
                msg = stream.message() => {
                    last_heard = tokio::time::Instant::now();
                    // This response and every one already waiting behind it (up to
                    // MAX_BATCH_KEYS changed keys) are applied, then the table is recompiled
                    // and published once: under a backlog the batches grow until the sync
                    // keeps up, instead of recompiling big names once per update.
                    let mut pending: Vec<String> = Vec::new();
                    let mut msg = msg;
                    loop {
                        let resp = match msg {
                            Ok(Some(r)) => r,
                            Ok(None) => return Err(SyncError::WatchEnded("stream closed by etcd".into())),
                            Err(e) => return Err(self.etcd_err(e)),
                        };
                        if resp.created() {
                            self.check_continuity(&resp, from)?;
                            self.shared.set_state(SyncState::Watching);
                            *backoff = BACKOFF_MIN;
                        }
                        self.on_watch_response(&mut leases, &mut working, &resp, from, &mut pending)?;
                        if pending.len() >= MAX_BATCH_KEYS {
                            break;
                        }
                        // Polled once: a response already received, or none.
                        match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                            Ok(next) => msg = next,
                            Err(_) => break,
                        }
                    }
                    self.flush(&mut working, &mut pending);
                }
                () = &mut check => {
                    let now = tokio::time::Instant::now();
                    let quiet = now - last_heard;
                    if quiet >= PROGRESS_EVERY {
                        return Err(SyncError::Stalled(PROGRESS_EVERY));
                    }
                    if quiet >= PROGRESS_ASK {
                        stream.request_progress().await.map_err(|e| self.etcd_err(e))?;
                    }
                    let next = (now + PROGRESS_ASK).min(last_heard + PROGRESS_EVERY);
                    check.as_mut().reset(next);
                }
                report = leases.task.reports.recv() => {
                    let Some(report) = report else {
                        return Err(SyncError::WatchEnded("the lease task ended".into()));
                    };
                    leases.apply(&mut working.records, report);
                    // Apply whatever else is there, then publish once.
                    while let Ok(report) = leases.task.reports.try_recv() {
                        leases.apply(&mut working.records, report);
                    }
                    self.shared.publish(&working, false);
                }
                _ = lease_tick.tick() => {
                    // One refresh at a time: a slow one is not piled up on.
                    if leases.refreshing.is_none() {
                        leases.refresh(&working.records);
                    }
                }
            }
        }
    }

    /// When `records`, loaded from etcd, replace the disk snapshot and etcd's history does not
    /// continue the snapshot's (etcd rebuilt or restored), says so as a diverged history is
    /// reported: nothing else is needed, the load replaces the snapshot whole.
    fn report_other_history(&self, records: &Records) {
        if self.shared.source() != Source::Disk {
            return;
        }
        let disk = self.shared.served.load();
        let saved_cluster = self.shared.disk_cluster_id.load(Ordering::Relaxed);
        let saved_revision = disk.records.revision();
        if let Some(why) = state::other_history(
            saved_cluster,
            saved_revision,
            self.cluster_id,
            records.revision(),
        ) {
            warn!(reason = %why, revision = records.revision(),
                  "etcd's history does not continue the saved state's: its records replace the saved ones whole, and SOA serials restart at its revision");
            metrics::counter!("fedplane_dns_etcd_reloads_total", "reason" => "diverged")
                .increment(1);
        }
    }

    /// The watch's first response: etcd must be the cluster we loaded from, at or past the
    /// revision we hold (else it was restored from an older backup and our events are not its).
    fn check_continuity(&self, resp: &WatchResponse, from: i64) -> Result<(), SyncError> {
        let Some(h) = resp.header() else {
            return Ok(());
        };
        if h.cluster_id() != self.cluster_id {
            return Err(SyncError::Diverged(format!(
                "cluster id {:x} is not {:x}, the one we loaded from",
                h.cluster_id(),
                self.cluster_id
            )));
        }
        if h.revision() < from - 1 {
            return Err(SyncError::Diverged(format!(
                "etcd is at revision {}, behind our {}",
                h.revision(),
                from - 1
            )));
        }
        Ok(())
    }

    /// Recompiles the table for the `pending` changed keys (already applied to the records),
    /// publishes records and table together, and offers them to the saver.
    fn flush(&mut self, working: &mut Served, pending: &mut Vec<String>) {
        if pending.is_empty() {
            return;
        }
        // Only the names these keys can affect are recompiled, not the zone; the big ancestors
        // of the changed names are recompiled in the background (a parent of thousands of
        // names answers its subtree a moment later).
        let done = working.fast.recompile_near(&working.records, pending);
        pending.clear();
        self.shared.publish(working, true);
        self.far.note(done);
        self.saver.offer(&working.records, self.cluster_id);
    }

    /// Applies one watch response to the working records; the keys it changed are added to
    /// `pending` (recompiled and published by [`EtcdSync::flush`]).
    fn on_watch_response(
        &mut self,
        leases: &mut LeaseBook,
        working: &mut Served,
        resp: &WatchResponse,
        from: i64,
        pending: &mut Vec<String>,
    ) -> Result<(), SyncError> {
        if resp.compact_revision() > 0 {
            return Err(SyncError::Compacted {
                wanted: from,
                compacted: resp.compact_revision(),
            });
        }
        if resp.canceled() {
            return Err(SyncError::WatchEnded(format!(
                "cancelled by etcd: {}",
                resp.cancel_reason()
            )));
        }
        if resp.events().is_empty() {
            // A progress notification: every event up to the header revision has been applied.
            // (The created response's header is the store revision, not ours: skip it.)
            // What is pending is published first, with its recompiled table.
            self.flush(working, pending);
            if !resp.created()
                && let Some(h) = resp.header()
            {
                working.records.set_revision(h.revision());
            }
            self.shared.publish(working, true);
            if !resp.created() {
                // etcd says we are current: the saved state's age restarts (hourly rewrite).
                self.saver.confirm();
            }
            return Ok(());
        }
        let changes = resp.events().iter().filter_map(|ev| {
            let kv = ev.kv()?;
            Some(match ev.event_type() {
                EventType::Put => {
                    leases.put(kv.lease(), kv.mod_revision());
                    Change::Put(kv_of(kv))
                }
                EventType::Delete => Change::Delete {
                    key: kv.key(),
                    revision: kv.mod_revision(),
                },
            })
        });
        let applied = apply::apply(&mut working.records, &mut self.invalid, changes);
        report(&applied.rejected);
        self.invalid_gauge();
        if !applied.new_leases.is_empty() {
            // Read by the lease task; meanwhile these records answer with the 30 s floor.
            let _ = leases
                .task
                .requests
                .send(Request::Lookup(applied.new_leases));
        }
        pending.extend(applied.changed);
        Ok(())
    }

    async fn connect(&self) -> Result<Client, SyncError> {
        let opts = self.settings.connect_options();
        // One endpoint per attempt, taking turns: a dead endpoint costs one attempt, not a
        // balancer that keeps picking it.
        let n = self.settings.endpoints.len().max(1);
        let endpoint = &self.settings.endpoints[self.attempt % n];
        bounded(Client::connect([endpoint], Some(opts)))
            .await
            .map_err(|e| self.request_err(e))
    }

    /// Reads every key under the prefix at one revision, page by page.
    async fn load(&mut self, client: &mut Client) -> Result<Records, SyncError> {
        let started = Instant::now();
        let paging = Paging {
            page: LOAD_PAGE_SIZE,
            sort_by_key: false,
        };
        let mut load: Option<Load> = None;
        let read = read_prefix(client, &self.settings.prefix, paging, |revision, kvs| {
            let l = load.get_or_insert_with(|| Load::new(self.zones.clone(), revision));
            report(&l.page(&self.invalid, kvs.iter().map(kv_of)));
        })
        .await
        .map_err(|e| self.request_err(e))?;
        self.cluster_id = read.cluster_id;
        let load = load.unwrap_or_else(|| Load::new(self.zones.clone(), read.revision));
        let (records, invalid) = load.finish(read.revision);
        self.invalid = invalid;
        self.invalid_gauge();
        let pages = read.pages;
        info!(keys = records.len(), pages, took = ?started.elapsed(), "read the records");
        Ok(records)
    }

    fn invalid_gauge(&self) {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("fedplane_dns_invalid_records").set(self.invalid.len() as f64);
    }
}

/// The session's lease task and what the writer keeps to use its reports.
#[derive(Debug)]
struct LeaseBook {
    task: LeaseTask,
    /// The revision of the refresh under way, if one is.
    refreshing: Option<i64>,
    /// While a refresh is under way: the revision of the last put with each lease, so a lease
    /// put after the refreshed records is not forgotten when the refresh ends.
    last_put: HashMap<i64, i64>,
}

impl LeaseBook {
    fn new(task: LeaseTask) -> Self {
        Self {
            task,
            refreshing: None,
            last_put: HashMap::new(),
        }
    }

    /// Asks for the deadlines of every lease `records` use (an O(1) clone is sent).
    fn refresh(&mut self, records: &Records) {
        let revision = records.revision();
        let sent = self.task.requests.send(Request::Refresh {
            revision,
            records: records.clone(),
        });
        if sent.is_ok() {
            self.refreshing = Some(revision);
            self.last_put.clear();
        }
    }

    /// Notes a put carrying `lease` at `revision`.
    fn put(&mut self, lease: i64, revision: i64) {
        if lease != 0 && self.refreshing.is_some() {
            self.last_put.insert(lease, revision);
        }
    }

    /// Applies a report of the lease task to `records`.
    fn apply(&mut self, records: &mut Records, report: Report) {
        match report {
            Report::Deadlines(deadlines) => {
                for (id, deadline) in deadlines {
                    records.set_lease_deadline(id, deadline);
                }
            }
            Report::Refreshed { revision, in_use } => {
                let keep = leases::leases_to_keep(revision, in_use, &self.last_put);
                records.retain_leases(&keep);
                self.refreshing = None;
                self.last_put.clear();
            }
        }
    }
}

/// After [`DISK_FALLBACK_AFTER`], if nothing is served yet, serves the snapshot saved in `dir`.
async fn disk_fallback(dir: PathBuf, zones: Arc<Zones>, shared: Arc<Shared>, max_age: Duration) {
    tokio::time::sleep(DISK_FALLBACK_AFTER).await;
    if shared.source() != Source::Nothing {
        return;
    }
    let Some(loaded) = state::load_logged(dir, zones.clone(), max_age).await else {
        return;
    };
    if shared.source() != Source::Nothing {
        return;
    }
    let records = loaded.records.clone();
    let fast = tokio::task::spawn_blocking(move || fast::Table::compile(&records))
        .await
        .unwrap_or_default();
    let served = Served {
        records: loaded.records,
        fast,
    };
    if shared.publish_disk(&served, loaded.saved_at, loaded.cluster_id) {
        warn!(
            revision = served.records.revision(),
            records = served.records.len(),
            age = ?shared.disk_age(),
            "etcd not loaded within {DISK_FALLBACK_AFTER:?}: serving the state saved on disk until it is"
        );
    } else {
        return;
    }
    // Served until etcd's records replace it, but never past --state-max-age after it was
    // saved (checked at least once a minute, so a clock step counts too).
    loop {
        let left = max_age.saturating_sub(shared.disk_age());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(Duration::from_secs(60))).await;
        if shared.source() != Source::Disk {
            return;
        }
    }
    if shared.withdraw_disk(zones) {
        warn!(
            age = ?shared.disk_age(),
            ?max_age,
            "the state saved on disk is older than --state-max-age and etcd is still not loaded: no longer served (SERVFAIL, not ready) until etcd answers"
        );
    }
}

/// An etcd key value as [`apply`] reads it.
fn kv_of(kv: &KeyValue) -> Kv<'_> {
    Kv {
        key: kv.key(),
        value: kv.value(),
        lease: kv.lease(),
        revision: kv.mod_revision(),
    }
}

/// Logs and counts invalid values (each value once, however often it is read).
fn report(rejected: &[Rejected]) {
    for r in rejected {
        warn!(key = r.key.as_str(), revision = r.revision, error = %r.error, "ignoring invalid record value");
        metrics::counter!("fedplane_dns_invalid_records_total").increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    fn batch(near: &[&str], far: &[&str]) -> fast::NearFar {
        fast::NearFar {
            near: near.iter().map(|n| name(n)).collect(),
            far: far.iter().map(|n| name(n)).collect(),
        }
    }

    /// `Far::start` without the job: the mark it would start at.
    fn started(far: &mut Far) -> u64 {
        far.fresh.clear();
        far.running = Some((far.marks, tokio::time::Instant::now()));
        far.marks
    }

    #[test]
    fn a_background_answer_never_replaces_a_newer_one() {
        let p = name("big.example.com.");
        let mut far = Far::default();
        far.note(batch(&["a.big.example.com."], &["big.example.com."]));
        let job = started(&mut far);
        // The batch path compiles the parent itself (its own key changed, or it became small).
        far.note(batch(&["big.example.com."], &[]));
        assert!(!far.settle(&p, job), "older than the table's answer");
        assert!(far.dirty.is_empty());
    }

    #[test]
    fn a_parent_marked_again_during_its_job_moves_forward_and_stays_dirty() {
        let p = name("big.example.com.");
        let mut far = Far::default();
        far.note(batch(&[], &["big.example.com."]));
        let job = started(&mut far);
        far.note(batch(&[], &["big.example.com."]));
        assert!(far.settle(&p, job), "newer than the table's answer");
        assert!(far.dirty.contains_key(&p), "redone by the next job");
        far.running = None;
        let next = started(&mut far);
        assert!(far.settle(&p, next));
        assert!(far.dirty.is_empty());
    }

    /// A key of the property test below: a big parent `big` (its own key, 0), a sub-parent
    /// `m.big` (1) that crosses NEAR_RECORDS, and names below each.
    fn prop_key(i: usize) -> String {
        match i {
            0 => "/skydns/com/example/big".to_owned(),
            1 => "/skydns/com/example/big/m".to_owned(),
            i if i % 2 == 0 => format!("/skydns/com/example/big/s{i:03}/a"),
            i => format!("/skydns/com/example/big/m/s{i:03}/a"),
        }
    }

    fn host(i: usize, v: u8) -> crate::record::Record {
        crate::record::Record::parse(format!(r#"{{"host":"10.{v}.0.{}"}}"#, i % 250).as_bytes())
            .expect("valid")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// `Far` driven as the session loop drives it (batches, and a job started and ended
        /// at any point between them, from the records of its start): once settled, the
        /// table equals a full compile, for every name and its ancestors.
        #[test]
        fn far_settles_to_a_full_compile(
            base in 100usize..160,
            ops in proptest::collection::vec((0u8..8, 0usize..170, 0u8..4), 1..40),
        ) {
            use crate::index::{Records, Zones};
            let zones = Arc::new(Zones::new("/skydns", &[name("example.com.")]));
            let mut records = Records::new(zones, 10);
            let mut rev = 11;
            for i in 2..base {
                records.put(&prop_key(i), host(i, 1), 0, rev);
                rev += 1;
            }
            records.mark_loaded();
            let mut table = fast::Table::compile(&records);
            let mut far = Far::default();
            let mut job: Option<(u64, fast::Recompiled)> = None;
            let mut pending: Vec<String> = Vec::new();
            let start = |far: &mut Far, records: &Records| {
                let names: Vec<Name> = far.dirty.keys().cloned().collect();
                (started(far), fast::Table::compile_apart(records, &names))
            };
            let finish = |job: &mut Option<(u64, fast::Recompiled)>, far: &mut Far, table: &mut fast::Table| {
                if let Some((at, r)) = job.take() {
                    far.running = None;
                    table.put_back(r, |n| far.settle(n, at));
                }
            };
            for (op, i, v) in ops {
                match op {
                    // A change; a batch recompiles what is pending for ops 0 to 2.
                    0..=4 => {
                        rev += 1;
                        let k = prop_key(i);
                        if v == 0 {
                            records.delete(&k, rev);
                        } else {
                            records.put(&k, host(i, v), 0, rev);
                        }
                        pending.push(k);
                        if op < 3 {
                            far.note(table.recompile_near(&records, &pending));
                            pending.clear();
                        }
                    }
                    5 | 6 => {
                        if job.is_none() && !far.dirty.is_empty() {
                            job = Some(start(&mut far, &records));
                        }
                    }
                    _ => finish(&mut job, &mut far, &mut table),
                }
            }
            far.note(table.recompile_near(&records, &pending));
            finish(&mut job, &mut far, &mut table);
            let mut rounds = 0;
            while !far.dirty.is_empty() {
                rounds += 1;
                proptest::prop_assert!(rounds < 5);
                job = Some(start(&mut far, &records));
                finish(&mut job, &mut far, &mut table);
            }
            let full = fast::Table::compile(&records);
            proptest::prop_assert_eq!(table.len(), full.len());
            for i in 0..170 {
                let mut n = crate::key::key_to_name("/skydns", &prop_key(i)).expect("a name");
                while n.num_labels() > 2 {
                    let w = fast::wire_name(&n);
                    proptest::prop_assert_eq!(table.get(&w), full.get(&w), "{}", n);
                    n = n.base_name();
                }
            }
        }
    }
}
