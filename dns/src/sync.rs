//! Keeping the served records current with etcd: the etcd session, backoff and publishing.
//!
//! Start: a paged range read of the prefix pinned to one revision, then one watch from that
//! revision + 1. Each watch response is applied ([`crate::apply`]) to a private copy of the
//! records, the fast path's table is recompiled for the changed keys
//! ([`crate::fast::Table::recompile`]), and both are published atomically as one [`Served`];
//! queries never wait for etcd. When the watch breaks, stalls, or etcd is down, the last
//! [`Served`] keeps answering while we reconnect with backoff (to any configured endpoint) and
//! resume from the last revision seen. A compacted start revision, or an etcd whose history
//! does not continue ours, means events were lost: reload everything.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use etcd_client::{Client, EventType, KeyValue, WatchOptions, WatchResponse};
use fedplane_ops::etcd::{MAX_MESSAGE, Paging, RequestError, bounded, prefix_range, read_prefix};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::apply::{self, Change, InvalidKeys, Kv, Load, Rejected};
use crate::config::EtcdSettings;
use crate::fast;
use crate::index::{Records, Zones};

/// Keys per range request during the initial load. etcd 3.4 walks the whole rest of the range
/// on every page (the limit is applied after), so a load costs about pages × keys: few, big
/// pages load 900k keys in seconds. 50,000 SkyDNS values are under 10 MiB, well within
/// [`MAX_MESSAGE`].
pub const LOAD_PAGE_SIZE: i64 = 50_000;
/// How often lease deadlines are re-read, so TTLs follow keep-alives.
const LEASE_REFRESH: Duration = Duration::from_secs(10);
/// How often we ask etcd to confirm the watch is current (a progress request). No answer by the
/// next tick means the watch is stalled (a partitioned member can keep a stream open and send
/// nothing): reconnect.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
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
/// path's answers compiled from them.
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

/// What the sync task publishes and everyone else reads.
#[derive(Debug)]
pub struct Shared {
    /// The records and compiled answers being served. Readers `load()` it (one atomic load, no
    /// lock); only the sync task stores.
    pub served: ArcSwap<Served>,
    /// Set once the first complete load is published.
    pub ready: AtomicBool,
    state: AtomicU64,
    started: Instant,
    last_sync_ms: AtomicU64,
    /// The value replaced by the last publish, kept until the next one so that it is freed
    /// here, on the sync task, and not on a UDP worker whose guard happened to hold it last.
    retired: Mutex<Option<Arc<Served>>>,
}

impl Shared {
    /// Unloaded, empty records for `zones`.
    pub fn new(zones: Arc<Zones>) -> Self {
        Self {
            served: ArcSwap::from_pointee(Served::empty(zones, 0)),
            ready: AtomicBool::new(false),
            state: AtomicU64::new(SyncState::Loading as u64),
            started: Instant::now(),
            last_sync_ms: AtomicU64::new(0),
            retired: Mutex::new(None),
        }
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

    /// Time since the served records were last confirmed to match etcd (`None` before the
    /// first load).
    pub fn snapshot_age(&self) -> Option<Duration> {
        if !self.ready.load(Ordering::Relaxed) {
            return None;
        }
        let last = Duration::from_millis(self.last_sync_ms.load(Ordering::Relaxed));
        Some(self.started.elapsed().saturating_sub(last))
    }

    /// Publishes `served`; `synced` says it is known to match etcd now (a load, or a watch
    /// message), which resets the snapshot age.
    fn publish(&self, served: &Served, synced: bool) {
        let old = self.served.swap(Arc::new(served.clone()));
        let older = self
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(old);
        drop(older);
        if synced {
            let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_sync_ms.store(ms, Ordering::Relaxed);
        }
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
        }
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
    /// retried while the last snapshot keeps answering.
    pub async fn run(mut self, cancel: CancellationToken) {
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

    /// One connection: load if needed, then watch until something breaks.
    async fn session(
        &mut self,
        need_load: &mut bool,
        backoff: &mut Duration,
    ) -> Result<(), SyncError> {
        let mut client = self.connect().await?;
        let mut working: Served = if *need_load {
            let mut records = self.load(&mut client).await?;
            let leases = records.leases_in_use();
            self.refresh_leases(&mut client, &mut records, &leases)
                .await;
            info!(
                revision = records.revision(),
                records = records.len(),
                invalid = self.invalid.len(),
                "loaded records from etcd"
            );
            // Ready as soon as everything is read: the general path answers every name
            // correctly while the fast path's answers are compiled.
            let mut served = Served {
                records,
                fast: fast::Table::default(),
            };
            self.shared.publish(&served, true);
            self.shared.ready.store(true, Ordering::Relaxed);
            // Only now: a load that failed half way is redone, never resumed.
            *need_load = false;
            let started = Instant::now();
            let records = served.records.clone();
            served.fast = tokio::task::spawn_blocking(move || fast::Table::compile(&records))
                .await
                .map_err(|e| SyncError::WatchEnded(format!("compile task failed: {e}")))?;
            info!(names = served.fast.len(), took = ?started.elapsed(), "compiled the fast path's answers");
            self.shared.publish(&served, true);
            served
        } else {
            (**self.shared.served.load()).clone()
        };
        let from = working.records.revision() + 1;
        let (start, end) = prefix_range(&self.settings.prefix);
        let mut stream = client
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
            )
            .await
            .map_err(|e| self.etcd_err(e))?;
        debug!(from, "watching etcd");
        let mut lease_tick = tokio::time::interval(LEASE_REFRESH);
        lease_tick.tick().await;
        let mut progress_tick = tokio::time::interval(PROGRESS_EVERY);
        progress_tick.tick().await;
        let mut awaiting_progress = false;
        loop {
            tokio::select! {
                msg = stream.message() => {
                    awaiting_progress = false;
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
                    self.on_watch_response(&mut client, &mut working, &resp, from).await?;
                }
                _ = progress_tick.tick() => {
                    if awaiting_progress {
                        return Err(SyncError::Stalled(PROGRESS_EVERY));
                    }
                    stream.request_progress().await.map_err(|e| self.etcd_err(e))?;
                    awaiting_progress = true;
                }
                _ = lease_tick.tick() => {
                    let leases = working.records.leases_in_use();
                    self.refresh_leases(&mut client, &mut working.records, &leases).await;
                    self.shared.publish(&working, false);
                }
            }
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

    async fn on_watch_response(
        &mut self,
        client: &mut Client,
        working: &mut Served,
        resp: &WatchResponse,
        from: i64,
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
            if !resp.created()
                && let Some(h) = resp.header()
            {
                working.records.set_revision(h.revision());
            }
            self.shared.publish(working, true);
            return Ok(());
        }
        let changes = resp.events().iter().filter_map(|ev| {
            let kv = ev.kv()?;
            Some(match ev.event_type() {
                EventType::Put => Change::Put(kv_of(kv)),
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
            self.refresh_leases(client, &mut working.records, &applied.new_leases)
                .await;
        }
        // Only the names these keys can affect are recompiled, not the zone.
        working.fast.recompile(&working.records, &applied.changed);
        self.shared.publish(working, true);
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

    /// Reads the remaining time of `leases`. Failures are logged, not fatal: a record whose
    /// lease time is unknown answers with a TTL of at most the 30 s floor.
    async fn refresh_leases(&self, client: &mut Client, records: &mut Records, leases: &[i64]) {
        let mut failed = 0usize;
        let mut last_error = None;
        for &id in leases {
            match bounded(client.lease_time_to_live(id, None)).await {
                Ok(resp) => {
                    records.set_lease_deadline(
                        id,
                        Records::lease_deadline(Instant::now(), resp.ttl()),
                    );
                }
                Err(e) => {
                    failed += 1;
                    last_error = Some(self.request_err(e).to_string());
                }
            }
        }
        if let Some(error) = last_error {
            warn!(
                failed,
                error, "cannot read etcd lease times; their records answer with TTL at most 30 s"
            );
        }
        let in_use = records.leases_in_use();
        records.retain_leases(&in_use);
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
