//! Lease deadlines, read from etcd off the watch loop.
//!
//! A record on an etcd lease answers with a TTL bounded by what is left of its lease
//! ([`crate::index::Records::ttl`]), so the deadlines are read with LeaseTimeToLive: for each
//! new lease a watch batch brings, and for every lease in use every [`LEASE_REFRESH`], so TTLs
//! follow keep-alives. One call per lease can take long (thousands of leases, or a hung
//! member), so none of it runs on the watch loop: the sync task sends [`Request`]s to a lease
//! task ([`spawn`]) and goes on applying watch responses; the lease task makes the calls, at
//! most [`LOOKUP_CONCURRENCY`] at a time and each bounded by [`LOOKUP_TIMEOUT`], and sends the
//! deadlines back in batches ([`Report`]), which the sync task, the single writer of the
//! records, applies between watch responses.
//!
//! Until its deadline is known (a new lease, a lookup that failed, records from the disk
//! snapshot), a leased record is answered like any other, with a TTL of at most
//! [`crate::index::LEASE_TTL_FLOOR`] (30 s): it never waits for, nor vanishes because of, a
//! lease lookup. A failed lookup (an error, a timeout, or a lookup task that panicked or was
//! cancelled: its lease is known by the task's ID) is counted, logged at most once per
//! [`LEASE_REFRESH`], and retried by the next refresh.
//!
//! The bookkeeping ([`Lookups`], [`leases_to_keep`]) is pure; the task around it does the I/O.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use etcd_client::LeaseClient;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::warn;

use crate::index::Records;

/// How often the deadlines of every lease in use are read again, so TTLs follow keep-alives.
pub const LEASE_REFRESH: Duration = Duration::from_secs(10);
/// Bound on one LeaseTimeToLive call: a hung member costs this, not the 10 s request bound.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Most LeaseTimeToLive calls in flight at once.
pub const LOOKUP_CONCURRENCY: usize = 32;
/// Deadlines sent back in one batch at most, so a big refresh is applied as it goes.
const BATCH: usize = 1024;

/// What the sync task asks of the lease task.
#[derive(Debug)]
pub enum Request {
    /// Read these leases' deadlines (leases new to the records).
    Lookup(Vec<i64>),
    /// Read the deadline of every lease `records` use (a clone of the writer's records at
    /// `revision`: O(1), and the leases are collected here, off the watch loop).
    Refresh {
        /// The revision of `records`.
        revision: i64,
        /// The records whose leases to read.
        records: Records,
    },
}

/// What the lease task sends back.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// Deadlines read: apply them.
    Deadlines(Vec<(i64, Instant)>),
    /// A refresh ended (every lookup done or failed): `in_use` are the leases the records of
    /// `revision` used; leases in neither that list nor put since `revision` can be forgotten
    /// ([`leases_to_keep`]).
    Refreshed {
        /// The revision of the refreshed records.
        revision: i64,
        /// Their leases, sorted.
        in_use: Vec<i64>,
    },
}

/// The leases whose deadlines the writer keeps when a refresh of the records at `revision`
/// ends, sorted: those in use then (`in_use`, sorted), and those a put carried after that
/// (`last_put`: the revision of the last put with each lease).
pub fn leases_to_keep(
    revision: i64,
    mut in_use: Vec<i64>,
    last_put: &HashMap<i64, i64>,
) -> Vec<i64> {
    in_use.extend(
        last_put
            .iter()
            .filter(|&(_, &r)| r > revision)
            .map(|(&id, _)| id),
    );
    in_use.sort_unstable();
    in_use.dedup();
    in_use
}

/// The refresh under way.
#[derive(Debug)]
struct Cycle {
    revision: i64,
    in_use: Vec<i64>,
    left: HashSet<i64>,
}

/// Which lookups to make and what to report: pure bookkeeping, driven by the lease task.
#[derive(Debug, Default)]
pub struct Lookups {
    pending: BTreeSet<i64>,
    in_flight: HashSet<i64>,
    cycle: Option<Cycle>,
    found: Vec<(i64, Instant)>,
    failed: usize,
}

impl Lookups {
    /// Asks for `ids` (those already asked for are not asked twice).
    pub fn request(&mut self, ids: impl IntoIterator<Item = i64>) {
        for id in ids {
            if !self.in_flight.contains(&id) {
                self.pending.insert(id);
            }
        }
    }

    /// Starts a refresh of `in_use` (sorted), the leases of the records at `revision`,
    /// replacing one under way. With no lease, it has ended already.
    pub fn refresh(&mut self, revision: i64, in_use: Vec<i64>) -> Option<Report> {
        if in_use.is_empty() {
            self.cycle = None;
            return Some(Report::Refreshed { revision, in_use });
        }
        self.request(in_use.iter().copied());
        self.cycle = Some(Cycle {
            revision,
            left: in_use.iter().copied().collect(),
            in_use,
        });
        None
    }

    /// The next lease to look up, if one waits and fewer than [`LOOKUP_CONCURRENCY`] are in
    /// flight.
    pub fn start_next(&mut self) -> Option<i64> {
        if self.in_flight.len() >= LOOKUP_CONCURRENCY {
            return None;
        }
        let id = self.pending.pop_first()?;
        self.in_flight.insert(id);
        Some(id)
    }

    /// A lookup ended: `deadline` when it was read, `None` when it failed. Returns what to
    /// report now: a batch of deadlines when it is full or nothing else is under way, and the
    /// end of the refresh when this was its last lookup.
    pub fn done(&mut self, id: i64, deadline: Option<Instant>) -> Vec<Report> {
        self.in_flight.remove(&id);
        match deadline {
            Some(d) => self.found.push((id, d)),
            None => self.failed += 1,
        }
        let mut reports = Vec::new();
        let cycle_ended = self.cycle.as_mut().is_some_and(|c| {
            c.left.remove(&id);
            c.left.is_empty()
        });
        let idle = self.pending.is_empty() && self.in_flight.is_empty();
        if (cycle_ended || idle || self.found.len() >= BATCH) && !self.found.is_empty() {
            reports.push(Report::Deadlines(std::mem::take(&mut self.found)));
        }
        if cycle_ended && let Some(c) = self.cycle.take() {
            reports.push(Report::Refreshed {
                revision: c.revision,
                in_use: c.in_use,
            });
        }
        reports
    }

    /// Failed lookups since the last call.
    pub fn take_failed(&mut self) -> usize {
        std::mem::take(&mut self.failed)
    }
}

/// The lease task of one etcd session: aborted, with its lookups, when dropped.
#[derive(Debug)]
pub struct LeaseTask {
    /// Requests to the task; sending never waits.
    pub requests: mpsc::UnboundedSender<Request>,
    /// What the task reports.
    pub reports: mpsc::UnboundedReceiver<Report>,
    task: tokio::task::AbortHandle,
}

impl Drop for LeaseTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the lease task on `client` (the session's connection).
pub fn spawn(client: LeaseClient) -> LeaseTask {
    let (requests, rx) = mpsc::unbounded_channel();
    let (tx, reports) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(client, rx, tx)).abort_handle();
    LeaseTask {
        requests,
        reports,
        task,
    }
}

async fn run(
    client: LeaseClient,
    requests: mpsc::UnboundedReceiver<Request>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let lookup = move |id: i64| {
        let mut c = client.clone();
        async move {
            c.time_to_live(id, None)
                .await
                .map(|resp| Records::lease_deadline(Instant::now(), resp.ttl()))
                .map_err(|e| e.to_string())
        }
    };
    drive(lookup, requests, reports).await;
}

/// The lease task's loop, with `lookup` reading one lease's deadline: makes the lookups
/// [`Lookups`] asks for, each in its own task bounded by [`LOOKUP_TIMEOUT`], and reports.
///
/// A lookup task that panics or is cancelled still ends its lease's lookup: the lease is found
/// by its task's ID, done as failed (so a refresh waiting on it ends, and the next refresh or
/// a new request looks it up again), counted and logged like any failed lookup.
async fn drive<F, Fut>(
    lookup: F,
    mut requests: mpsc::UnboundedReceiver<Request>,
    reports: mpsc::UnboundedSender<Report>,
) where
    F: Fn(i64) -> Fut,
    Fut: Future<Output = Result<Instant, String>> + Send + 'static,
{
    let mut book = Lookups::default();
    // Dropped with the task: an abort ends the lookups in flight too.
    let mut calls: JoinSet<Result<Instant, String>> = JoinSet::new();
    // The lease each call in `calls` looks up, by task: a call that panics still names it.
    let mut leases: HashMap<tokio::task::Id, i64> = HashMap::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        while let Some(id) = book.start_next() {
            let call = lookup(id);
            let task = calls.spawn(async move {
                tokio::time::timeout(LOOKUP_TIMEOUT, call)
                    .await
                    .unwrap_or_else(|_| Err(format!("timed out after {LOOKUP_TIMEOUT:?}")))
            });
            leases.insert(task.id(), id);
        }
        let out = tokio::select! {
            req = requests.recv() => match req {
                None => return,
                Some(Request::Lookup(ids)) => {
                    book.request(ids);
                    Vec::new()
                }
                Some(Request::Refresh { revision, records }) => {
                    let in_use = records.leases_in_use();
                    drop(records);
                    book.refresh(revision, in_use).into_iter().collect()
                }
            },
            Some(joined) = calls.join_next_with_id(), if !calls.is_empty() => {
                let (task, result) = match joined {
                    Ok((task, result)) => (task, result),
                    Err(e) => {
                        let why = if e.is_panic() { "panicked" } else { "was cancelled" };
                        (e.id(), Err(format!("the lookup task {why}")))
                    }
                };
                let Some(id) = leases.remove(&task) else { continue };
                let out = book.done(id, result.as_ref().ok().copied());
                if let Err(error) = result {
                    metrics::counter!("fedplane_dns_lease_lookup_failures_total").increment(1);
                    if last_warning.is_none_or(|t| t.elapsed() >= LEASE_REFRESH) {
                        last_warning = Some(Instant::now());
                        let failed = book.take_failed();
                        warn!(failed, error, "cannot read etcd lease times; their records answer with TTL at most 30 s until a lookup succeeds");
                    }
                }
                out
            }
        };
        for r in out {
            if reports.send(r).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines(reports: &[Report]) -> Vec<i64> {
        reports
            .iter()
            .flat_map(|r| match r {
                Report::Deadlines(d) => d.iter().map(|(id, _)| *id).collect(),
                Report::Refreshed { .. } => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn at_most_the_concurrency_is_in_flight_and_each_lease_once() {
        let mut b = Lookups::default();
        b.request(0..100);
        b.request(0..100);
        let started: Vec<i64> = std::iter::from_fn(|| b.start_next()).collect();
        assert_eq!(started.len(), LOOKUP_CONCURRENCY);
        // asking again for leases in flight does not start them twice
        b.request(0..10);
        assert!(b.start_next().is_none());
        let now = Instant::now();
        assert!(
            b.done(0, Some(now)).is_empty(),
            "batched while more is under way"
        );
        assert_eq!(
            b.start_next(),
            Some(i64::try_from(LOOKUP_CONCURRENCY).expect("fits"))
        );
        let mut seen = BTreeSet::new();
        let mut reported = Vec::new();
        let mut in_flight: Vec<i64> = started[1..].to_vec();
        in_flight.push(i64::try_from(LOOKUP_CONCURRENCY).expect("fits"));
        while let Some(id) = in_flight.pop() {
            assert!(seen.insert(id), "lease {id} looked up twice");
            reported.extend(deadlines(&b.done(id, Some(now))));
            in_flight.extend(std::iter::from_fn(|| b.start_next()));
        }
        reported.sort_unstable();
        assert_eq!(
            reported,
            (0..100).collect::<Vec<_>>(),
            "every deadline reported once the task is idle"
        );
    }

    #[test]
    fn a_refresh_ends_when_each_of_its_leases_is_done_even_failed() {
        let mut b = Lookups::default();
        assert!(b.refresh(7, vec![1, 2, 3]).is_none());
        let ids: Vec<i64> = std::iter::from_fn(|| b.start_next()).collect();
        assert_eq!(ids, [1, 2, 3]);
        let now = Instant::now();
        assert!(b.done(2, None).is_empty());
        assert!(b.done(1, Some(now)).is_empty());
        assert_eq!(
            b.done(3, Some(now)),
            [
                Report::Deadlines(vec![(1, now), (3, now)]),
                Report::Refreshed {
                    revision: 7,
                    in_use: vec![1, 2, 3]
                }
            ]
        );
        assert_eq!(b.take_failed(), 1);
        assert_eq!(b.take_failed(), 0);
    }

    #[test]
    fn a_refresh_with_no_lease_ends_at_once_and_a_lookup_in_flight_counts_for_it() {
        let mut b = Lookups::default();
        assert_eq!(
            b.refresh(3, Vec::new()),
            Some(Report::Refreshed {
                revision: 3,
                in_use: Vec::new()
            })
        );
        b.request([5]);
        assert_eq!(b.start_next(), Some(5));
        assert!(b.refresh(4, vec![5]).is_none());
        assert_eq!(b.start_next(), None, "5 is in flight already");
        let now = Instant::now();
        assert_eq!(
            b.done(5, Some(now)),
            [
                Report::Deadlines(vec![(5, now)]),
                Report::Refreshed {
                    revision: 4,
                    in_use: vec![5]
                }
            ]
        );
    }

    /// Records of the zone example.com. using leases `ids`, at revision `revision`.
    fn leased(ids: &[i64], revision: i64) -> Records {
        let name = hickory_proto::rr::Name::from_ascii("example.com.").expect("zone");
        let zones = std::sync::Arc::new(crate::index::Zones::new("/skydns", &[name]));
        let mut r = Records::new(zones, revision);
        for &id in ids {
            let record = crate::record::Record::parse(br#"{"host":"10.0.0.1"}"#).expect("value");
            r.put(&format!("/skydns/com/example/l{id}"), record, id, revision);
        }
        r
    }

    #[tokio::test]
    async fn a_lookup_task_that_panics_ends_its_lookup_as_failed_and_is_looked_up_again() {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicBool, Ordering};
        let panicked = std::sync::Arc::new(AtomicBool::new(false));
        let looked_up = std::sync::Arc::new(Mutex::new(Vec::new()));
        let now = Instant::now();
        let lookup = {
            let (panicked, looked_up) = (panicked.clone(), looked_up.clone());
            move |id: i64| {
                looked_up.lock().expect("lock").push(id);
                let panic_now = id == 2 && !panicked.swap(true, Ordering::SeqCst);
                async move {
                    assert!(!panic_now, "lookup of lease 2 panics (once)");
                    Ok(now)
                }
            }
        };
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (rep_tx, mut rep_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(lookup, req_rx, rep_tx));
        let refreshed = async |rep_rx: &mut mpsc::UnboundedReceiver<Report>| {
            let mut found = Vec::new();
            loop {
                let report = tokio::time::timeout(Duration::from_secs(10), rep_rx.recv())
                    .await
                    .expect("the refresh ends in time")
                    .expect("the task runs");
                match report {
                    Report::Deadlines(d) => found.extend(d.into_iter().map(|(id, _)| id)),
                    Report::Refreshed { revision, in_use } => {
                        found.sort_unstable();
                        return (revision, in_use, found);
                    }
                }
            }
        };
        req_tx
            .send(Request::Refresh {
                revision: 5,
                records: leased(&[1, 2, 3], 5),
            })
            .expect("send");
        assert_eq!(
            refreshed(&mut rep_rx).await,
            (5, vec![1, 2, 3], vec![1, 3]),
            "the refresh ends although the lookup of 2 panicked"
        );
        // the next refresh looks 2 up again (it is not stuck "in flight")
        req_tx
            .send(Request::Refresh {
                revision: 6,
                records: leased(&[2], 6),
            })
            .expect("send");
        assert_eq!(refreshed(&mut rep_rx).await, (6, vec![2], vec![2]));
        assert_eq!(
            looked_up
                .lock()
                .expect("lock")
                .iter()
                .filter(|&&id| id == 2)
                .count(),
            2
        );
        drop(req_tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task ends with its requests")
            .expect("no panic escapes");
    }

    #[test]
    fn a_lease_is_kept_while_in_use_or_put_after_the_refreshed_revision() {
        let last_put = HashMap::from([(8, 12), (9, 10), (2, 11)]);
        // 8 was put after the refreshed records, 9 before (and no longer used)
        assert_eq!(leases_to_keep(10, vec![1, 2], &last_put), [1, 2, 8]);
    }
}
