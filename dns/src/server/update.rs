//! The I/O side of RFC 2136 UPDATE (`--allow-update`): requests checked where they arrive
//! (TSIG, then the access list, by [`Transfers::authorize_update`]) and handed to one updater
//! task, which reads the names' keys from etcd at one revision, plans the change
//! ([`crate::update`]) and writes it in one transaction guarded by what it read: if another
//! writer changed those keys meanwhile, the update is evaluated again (a few times, then
//! SERVFAIL). The updater has its own etcd connection; the answers it changes arrive through
//! the watch like any other write, and the serial is the zone's etcd revision.
//!
//! Updates are applied one at a time, in the order they arrive; at most [`QUEUE`] wait, more
//! get SERVFAIL (clients retry).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use fedplane_ops::etcd::{EtcdSettings, bounded};
use hickory_proto::op::{Message, ResponseCode};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::index::Zones;
use crate::tsig::{self, Signer, Verified};
use crate::update::{self, UpdateError};

/// Updates waiting for the updater at most.
pub const QUEUE: usize = 64;
/// Evaluations of one update when other writers keep changing its keys.
const ATTEMPTS: usize = 5;
/// How long one update may take in all (etcd unreachable or hanging: SERVFAIL then, so a
/// queue of updates drains in bounded time).
pub const DEADLINE: Duration = Duration::from_secs(5);
/// An update that waited longer than this in the queue is answered SERVFAIL without being
/// applied: its client has given up (or retried, and the retry is queued too).
pub const MAX_AGE: Duration = Duration::from_secs(3);
/// How long the answer to an update is remembered by its MAC: the same signed message again
/// (a retransmission, or a replay within the TSIG fudge) gets that answer and is not applied
/// a second time.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(600);
/// Answers remembered at most (the oldest go first past it).
const REPLAY_ENTRIES: usize = 10_000;

/// Where an update's answer goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// A UDP client, from this socket.
    Udp(Arc<UdpSocket>, SocketAddr),
    /// A TCP connection, waiting for it.
    Tcp(oneshot::Sender<Vec<u8>>),
}

impl ReplyTo {
    /// Sends `bytes` (a closed connection or a failed send is the client's loss).
    pub fn send(self, bytes: Vec<u8>) {
        match self {
            Self::Udp(socket, peer) => {
                let _ = socket.send_to(&bytes, peer);
            }
            Self::Tcp(tx) => {
                let _ = tx.send(bytes);
            }
        }
    }
}

/// A signed, permitted update on its way to the updater.
#[derive(Debug)]
pub struct Job {
    /// The request without its TSIG record.
    pub request: Vec<u8>,
    /// Its signature, which the answer's covers.
    pub verified: Verified,
    /// The client.
    pub peer: IpAddr,
    /// Where the answer goes.
    pub reply: ReplyTo,
    /// When it arrived.
    pub received: Instant,
}

/// The answer to update `request` (its TSIG record removed) with `rcode`: ID, opcode and zone
/// echoed, or the header alone when the rest cannot be read.
pub fn answer(request: &[u8], rcode: ResponseCode) -> Vec<u8> {
    if let Ok(m) = Message::from_vec(request) {
        return update::reply(&m, rcode);
    }
    let mut bytes = vec![0u8; 12];
    bytes[..2].copy_from_slice(&request[..2]);
    bytes[2] = 0x80 | (request[2] & 0x79); // QR, opcode, RD
    bytes[3] = ResponseCode::FormErr.low();
    bytes
}

/// Counts an answered update.
pub fn count(rcode: ResponseCode) {
    metrics::counter!("fedplane_dns_updates_total", "rcode" => super::rcode_label(rcode))
        .increment(1);
}

/// The updater: applies the updates of `jobs` until `cancel`.
pub async fn run(
    mut jobs: mpsc::Receiver<Job>,
    zones: Arc<Zones>,
    etcd: EtcdSettings,
    cancel: CancellationToken,
) {
    let mut client: Option<Client> = None;
    let mut answered: HashMap<Vec<u8>, (Instant, ResponseCode)> = HashMap::new();
    loop {
        let job = tokio::select! {
            () = cancel.cancelled() => return,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        let owner = update::owner(job.verified.key.name());
        let mac = job.verified.request_mac.clone();
        let rcode = if let Some((_, rcode)) = answered
            .get(&mac)
            .filter(|(at, _)| at.elapsed() < REPLAY_WINDOW)
        {
            info!(peer = %job.peer, %owner, %rcode, "update seen before: answered again, not applied again");
            *rcode
        } else if job.received.elapsed() > MAX_AGE {
            warn!(peer = %job.peer, %owner, "update waited too long for the updater: SERVFAIL, not applied");
            ResponseCode::ServFail
        } else {
            let applied = tokio::time::timeout(
                DEADLINE,
                apply(&mut client, &job.request, &zones, &etcd, &owner),
            )
            .await
            .unwrap_or_else(|_| {
                client = None;
                Err(servfail(format!("etcd did not answer within {DEADLINE:?}")))
            });
            let rcode = match applied {
                Ok((puts, deletes)) => {
                    info!(peer = %job.peer, %owner, puts, deletes, "update applied");
                    ResponseCode::NoError
                }
                Err(e) => {
                    warn!(peer = %job.peer, %owner, reason = %e.reason, rcode = %e.rcode, "update not applied");
                    e.rcode
                }
            };
            if rcode != ResponseCode::ServFail {
                if answered.len() >= REPLAY_ENTRIES {
                    answered.retain(|_, (at, _)| at.elapsed() < REPLAY_WINDOW);
                    if answered.len() >= REPLAY_ENTRIES
                        && let Some(oldest) = answered
                            .iter()
                            .min_by_key(|(_, (at, _))| *at)
                            .map(|(k, _)| k.clone())
                    {
                        answered.remove(&oldest);
                    }
                }
                answered.insert(mac, (Instant::now(), rcode));
            }
            rcode
        };
        count(rcode);
        let mut bytes = answer(&job.request, rcode);
        Signer::new(&job.verified).sign(&mut bytes, tsig::unix_now());
        job.reply.send(bytes);
    }
}

fn servfail(reason: impl std::fmt::Display) -> UpdateError {
    UpdateError {
        rcode: ResponseCode::ServFail,
        reason: reason.to_string(),
    }
}

/// Evaluates and applies one update; the keys put and deleted.
async fn apply(
    client: &mut Option<Client>,
    request: &[u8],
    zones: &Arc<Zones>,
    etcd: &EtcdSettings,
    owner: &str,
) -> Result<(usize, usize), UpdateError> {
    let msg = Message::from_vec(request).map_err(|e| UpdateError {
        rcode: ResponseCode::FormErr,
        reason: format!("unreadable: {e}"),
    })?;
    let req = update::check(&msg, zones)?;
    let ranges = update::ranges(&req, zones.prefix())?;
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        let c = match client {
            Some(c) => c,
            None => match connect(etcd, attempt).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    last = format!("cannot reach etcd: {e}");
                    continue;
                }
            },
        };
        match attempt_once(c, &req, &ranges, zones, owner).await {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => last = "its keys kept changing under it".into(),
            Err(Attempt::Refused(e)) => return Err(e),
            Err(Attempt::Etcd(e)) => {
                *client = None;
                last = format!("etcd: {e}");
            }
        }
    }
    Err(servfail(format!("{last} ({ATTEMPTS} attempts)")))
}

async fn connect(etcd: &EtcdSettings, attempt: usize) -> Result<Client, String> {
    let n = etcd.endpoints.len().max(1);
    let endpoint = etcd.endpoints.get(attempt % n).ok_or("no etcd endpoint")?;
    bounded(Client::connect([endpoint], Some(etcd.connect_options())))
        .await
        .map_err(|e| e.to_string())
}

enum Attempt {
    Refused(UpdateError),
    Etcd(String),
}

/// One read, plan and guarded write: `Ok(None)` when the guard failed (read again).
async fn attempt_once(
    client: &mut Client,
    req: &update::Request,
    ranges: &[String],
    zones: &Arc<Zones>,
    owner: &str,
) -> Result<Option<(usize, usize)>, Attempt> {
    let etcd = |e: fedplane_ops::etcd::RequestError| Attempt::Etcd(e.to_string());
    // Every range at one revision: one read-only transaction.
    let limit = i64::try_from(update::MAX_KEYS + 1).unwrap_or(i64::MAX);
    // Each name's key, and the keys below it: `[k/, k0)` (not `[k, k0)`, which would hold
    // siblings such as `k-2` too).
    let gets: Vec<TxnOp> = ranges
        .iter()
        .flat_map(|b| {
            [
                TxnOp::get(b.as_str(), None),
                TxnOp::get(
                    format!("{b}/"),
                    Some(
                        GetOptions::new()
                            .with_range(format!("{b}0"))
                            .with_limit(limit),
                    ),
                ),
            ]
        })
        .collect();
    let resp = bounded(client.txn(Txn::new().and_then(gets)))
        .await
        .map_err(etcd)?;
    let revision = resp
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision);
    let mut read = BTreeMap::new();
    let bases = ranges.iter().flat_map(|b| [b, b]);
    for (op, base) in resp.op_responses().into_iter().zip(bases) {
        let TxnOpResponse::Get(get) = op else {
            continue;
        };
        if get.more() {
            return Err(Attempt::Refused(UpdateError {
                rcode: ResponseCode::Refused,
                reason: format!("more than {} keys at or below {base}", update::MAX_KEYS),
            }));
        }
        for kv in get.kvs() {
            if let Ok(k) = kv.key_str()
                && update::in_range(base, k)
            {
                read.insert(k.to_owned(), kv.value().to_vec());
            }
        }
    }
    // Off the runtime: a plan reads each name's keys a few times over.
    let (plan, read) = {
        let (req, zones, owner) = (req.clone(), zones.clone(), owner.to_owned());
        tokio::task::spawn_blocking(move || (update::plan(&req, zones, &read, &owner), read))
            .await
            .map_err(|e| Attempt::Etcd(format!("planning failed: {e}")))?
    };
    let plan = plan.map_err(Attempt::Refused)?;
    if plan.is_empty() {
        return Ok(Some((0, 0)));
    }
    // Nothing in the ranges changed since the read (a change or a creation moves a
    // mod_revision past it; a deletion takes a key we read, whose version is then 0).
    let mut when: Vec<Compare> = ranges
        .iter()
        .flat_map(|b| {
            [
                Compare::mod_revision(b.as_str(), CompareOp::Less, revision + 1),
                Compare::mod_revision(format!("{b}/"), CompareOp::Less, revision + 1)
                    .with_range(format!("{b}0")),
            ]
        })
        .collect();
    when.extend(
        read.keys()
            .map(|k| Compare::version(k.as_str(), CompareOp::Greater, 0)),
    );
    if when.len() > update::MAX_TXN_OPS {
        return Err(Attempt::Refused(UpdateError {
            rcode: ResponseCode::Refused,
            reason: format!(
                "{} keys to guard, more than the {} of one etcd transaction",
                when.len(),
                update::MAX_TXN_OPS
            ),
        }));
    }
    let mut then: Vec<TxnOp> = plan
        .puts
        .iter()
        .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
        .collect();
    then.extend(plan.deletes.iter().map(|k| TxnOp::delete(k.as_str(), None)));
    let resp = bounded(client.txn(Txn::new().when(when).and_then(then)))
        .await
        .map_err(etcd)?;
    Ok(resp
        .succeeded()
        .then_some((plan.puts.len(), plan.deletes.len())))
}
