//! The I/O side of TSIG and zone transfers: signed queries answered signed, transfer
//! requests checked (TSIG, then `--allow-transfer`) and streamed from one snapshot of the
//! records by a blocking producer, at most `--max-transfers` at a time.
//!
//! Refusals are counted (`fedplane_dns_xfr_refused_total{reason}`) and logged once per client
//! address and reason (up to [`LOGGED_CLIENTS`] of them), so a misconfigured secondary that
//! retries every few seconds leaves one line, not thousands.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::ResponseCode;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};

use crate::acl::{self, Acl};
use crate::answer::Transport;
use crate::catalog::Catalog;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::ixfr::{self, Delta, History};
use crate::sync::{Served, Shared};
use crate::transfer::{self, Answer, Kind, Stream};
use crate::tsig::{self, Keys, Signer, Verified};

use super::update;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Transfers streamed at once by default (`--max-transfers`); more get SERVFAIL and retry.
pub const DEFAULT_MAX_TRANSFERS: usize = 8;
/// Client addresses whose refusals are remembered, so each is logged once.
pub const LOGGED_CLIENTS: usize = 1024;
/// How long a refusal stays logged (then the same client and reason are logged again).
pub const LOGGED_FOR: std::time::Duration = std::time::Duration::from_secs(600);
/// Transfers one client address may stream at once: a slow reader cannot take every slot.
pub const PER_CLIENT_TRANSFERS: usize = 2;
/// Messages of one transfer buffered ahead of the connection (the rest waits in the
/// producer): bounds a transfer's memory to a few messages however large the zone.
const STREAM_BUFFER: usize = 4;

/// One of a client's [`PER_CLIENT_TRANSFERS`], given back when dropped.
#[derive(Debug)]
struct ClientSlot {
    streaming: Arc<Mutex<std::collections::HashMap<IpAddr, usize>>>,
    peer: IpAddr,
}

impl ClientSlot {
    fn take(
        streaming: &Arc<Mutex<std::collections::HashMap<IpAddr, usize>>>,
        peer: IpAddr,
    ) -> Option<Self> {
        let mut m = lock(streaming);
        let n = m.entry(peer).or_default();
        if *n >= PER_CLIENT_TRANSFERS {
            return None;
        }
        *n += 1;
        Some(Self {
            streaming: streaming.clone(),
            peer,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = lock(&self.streaming);
        if let Some(n) = m.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.peer);
            }
        }
    }
}

/// The transfer and TSIG settings.
#[derive(Debug, Clone, Default)]
pub struct XfrSettings {
    /// `--tsig-key`.
    pub keys: Keys,
    /// `--allow-transfer`; empty: nobody.
    pub allow_transfer: Vec<Acl>,
    /// `--allow-update` (each entry names a key); empty: nobody.
    pub allow_update: Vec<Acl>,
    /// `--catalog-zone`.
    pub catalog: Option<Arc<Catalog>>,
    /// `--max-transfers`.
    pub max_transfers: usize,
    /// `--ixfr-history-versions`.
    pub history_versions: usize,
    /// `--ixfr-history-bytes`.
    pub history_bytes: usize,
}

/// The transfer state shared by the listeners.
#[derive(Debug)]
pub struct Transfers {
    settings: XfrSettings,
    permits: Arc<Semaphore>,
    /// Clients and reasons logged since the set was last cleared (every
    /// [`LOGGED_FOR`]): a flood of spoofed sources fills it for a while, never for good.
    logged: Mutex<(HashSet<(IpAddr, &'static str)>, Instant)>,
    /// Transfers streaming per client address: at most [`PER_CLIENT_TRANSFERS`].
    streaming: Arc<Mutex<std::collections::HashMap<IpAddr, usize>>>,
    /// The IXFR history and the records of its newest version (kept only when someone may
    /// transfer).
    history: Mutex<(History, Option<Arc<Served>>)>,
}

/// What a transfer request gets.
#[derive(Debug)]
pub enum XfrReply {
    /// One message (a refusal, an error, or a single SOA).
    One(Vec<u8>),
    /// The messages of a transfer, as the producer writes them.
    Stream(mpsc::Receiver<Vec<u8>>),
}

impl Transfers {
    /// The state for `settings`.
    pub fn new(settings: XfrSettings) -> Self {
        let permits = Arc::new(Semaphore::new(settings.max_transfers.max(1)));
        let history = History::new(settings.history_versions, settings.history_bytes);
        Self {
            settings,
            permits,
            logged: Mutex::new((HashSet::new(), Instant::now())),
            streaming: Arc::default(),
            history: Mutex::new((history, None)),
        }
    }

    /// Keeps the IXFR history current with the records published until `cancel`: each
    /// publish is compared with the last version seen, off the runtime, one at a time (a
    /// burst of publishes is compared as one step). Nothing is kept when nobody may transfer.
    pub async fn keep_history(self: Arc<Self>, shared: Arc<Shared>, cancel: CancellationToken) {
        if self.settings.allow_transfer.is_empty() {
            return;
        }
        let mut published = shared.subscribe();
        let mut last: Option<Arc<Served>> = None;
        loop {
            let now = shared.served.load_full();
            if now.records.is_loaded() {
                if let Some(before) = last.take().filter(|b| b.records.is_loaded()) {
                    let (after, max) = (now.clone(), self.settings.history_bytes);
                    let started = Instant::now();
                    let stop = cancel.clone();
                    let deltas = tokio::task::spawn_blocking(move || {
                        ixfr::diff(&before.records, &after.records, max, &|| {
                            stop.is_cancelled()
                        })
                    })
                    .await;
                    if cancel.is_cancelled() {
                        return;
                    }
                    let mut h = lock(&self.history);
                    match deltas {
                        Ok(Ok(deltas)) => {
                            for d in deltas {
                                h.0.push(d);
                            }
                        }
                        Ok(Err(ixfr::TooLarge)) => {
                            info!(
                                max_bytes = max,
                                "changes larger than --ixfr-history-bytes: IXFR clients get the whole zone"
                            );
                            h.0.clear();
                        }
                        Err(_) => h.0.clear(),
                    }
                    h.1 = Some(now.clone());
                    metrics::gauge!("fedplane_dns_ixfr_history_versions").set(h.0.len() as f64);
                    metrics::gauge!("fedplane_dns_ixfr_history_bytes").set(h.0.bytes() as f64);
                    metrics::histogram!("fedplane_dns_ixfr_diff_seconds")
                        .record(started.elapsed().as_secs_f64());
                } else {
                    lock(&self.history).1 = Some(now.clone());
                }
                last = Some(now);
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                r = published.changed() => if r.is_err() { return },
            }
        }
    }

    /// The deltas from `serial` to the newest version of the history, with that version's
    /// records, if the history holds them.
    fn incremental(&self, zi: usize, serial: u32) -> Option<(Arc<Served>, Vec<Arc<Delta>>)> {
        let h = lock(&self.history);
        let served = h.1.clone()?;
        let chain = h.0.chain(zi, serial, served.records.serial(zi))?;
        Some((served, chain))
    }

    /// Counts a refusal and logs it, once per client and reason.
    fn refused(&self, peer: IpAddr, reason: &'static str, what: &str) {
        metrics::counter!("fedplane_dns_xfr_refused_total", "reason" => reason).increment(1);
        self.log_refusal(peer, reason, what);
    }

    /// Logs a refusal once per client and reason.
    fn log_refusal(&self, peer: IpAddr, reason: &'static str, what: &str) {
        let first = {
            let mut logged = lock(&self.logged);
            if logged.1.elapsed() >= LOGGED_FOR {
                *logged = (HashSet::new(), Instant::now());
            }
            logged.0.len() < LOGGED_CLIENTS && logged.0.insert((peer, reason))
        };
        if first {
            warn!(%peer, reason, "{what} refused (logged once per client and reason every 10 min)");
        }
    }

    /// Checks a request's signature: `Ok(None)` unsigned, `Ok(Some)` verified with the
    /// request as if unsigned, `Err` the reply to a bad one (counted and logged).
    pub fn verify(
        &self,
        request: &[u8],
        peer: IpAddr,
        what: &str,
    ) -> Result<Option<(Verified, Vec<u8>)>, Vec<u8>> {
        // A response (QR set) is never answered: answering one could make two servers (or
        // one, with a spoofed source) answer each other forever.
        if request.get(2).is_none_or(|b| b & 0x80 != 0) {
            return Ok(None);
        }
        let found = match tsig::locate(request) {
            Ok(Some(found)) => found,
            // Unreadable messages are the answer path's to refuse (FORMERR).
            Ok(None) | Err(_) => return Ok(None),
        };
        let now = tsig::unix_now();
        match self.settings.keys.verify(request, &found, now) {
            Ok(v) => Ok(Some((v, tsig::strip(request, &found)))),
            Err(failure) => {
                self.refused(peer, failure.error.as_str(), what);
                Err(tsig::error_reply(request, &found, &failure, now))
            }
        }
    }

    /// The catalog zone (RFC 9432), if one is produced.
    pub fn catalog(&self) -> Option<&Catalog> {
        self.settings.catalog.as_deref()
    }

    /// A transfer of the catalog zone: one message (it is small); over UDP the single SOA
    /// when it does not fit.
    fn catalog_transfer(
        &self,
        catalog: &Catalog,
        m: &hickory_proto::op::Message,
        transport: Transport,
        mut signer: Option<Signer>,
        max_udp_payload: u16,
    ) -> Vec<u8> {
        let serial = m.authorities.iter().find_map(|r| match &r.data {
            hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
            _ => None,
        });
        let ixfr = m.queries[0].query_type() == hickory_proto::rr::RecordType::IXFR;
        metrics::counter!("fedplane_dns_xfr_total", "type" => "catalog", "transport" => transport.as_str())
            .increment(1);
        let encode = |reply: hickory_proto::op::Message, signer: &mut Option<Signer>| {
            let mut bytes = reply.to_vec().unwrap_or_default();
            if let Some(s) = signer.as_mut() {
                s.sign(&mut bytes, tsig::unix_now());
            }
            bytes
        };
        let whole = encode(
            catalog.transfer(m, if ixfr { serial } else { None }),
            &mut signer.clone(),
        );
        if transport == Transport::Udp && whole.len() > usize::from(max_udp_payload.max(512)) {
            return encode(catalog.transfer(m, Some(catalog.serial())), &mut signer);
        }
        whole
    }

    /// Checks an UPDATE request: its signature, then `--allow-update` (which always names a
    /// key, so unsigned updates are refused). `Ok` the verified key and the request without
    /// its TSIG record; `Err` the answer (NOTAUTH for a bad signature, else REFUSED), counted
    /// and logged once per client and reason.
    pub fn authorize_update(
        &self,
        request: &[u8],
        peer: IpAddr,
    ) -> Result<(Verified, Vec<u8>), Vec<u8>> {
        let signed = self.verify(request, peer, "update").inspect_err(|_| {
            update::count(ResponseCode::NotAuth);
        })?;
        let key = signed.as_ref().map(|(v, _)| v.key.name());
        let refusal = match acl::check(&self.settings.allow_update, peer, key) {
            Ok(()) if signed.is_some() => None,
            Ok(()) => Some(acl::Refusal::Unsigned),
            Err(r) => Some(r),
        };
        match (refusal, signed) {
            (None, Some(ok)) => Ok(ok),
            (refusal, signed) => {
                let reason = refusal.map_or("unsigned", acl::Refusal::as_str);
                self.log_refusal(peer, reason, "update");
                update::count(ResponseCode::Refused);
                Err(match signed {
                    Some((v, stripped)) => {
                        let mut bytes = update::answer(&stripped, ResponseCode::Refused);
                        Signer::new(&v).sign(&mut bytes, tsig::unix_now());
                        bytes
                    }
                    None => update::answer(request, ResponseCode::Refused),
                })
            }
        }
    }

    /// Answers a transfer request (AXFR or IXFR) from `peer` over `transport`, from the
    /// records being served now. Over UDP only IXFR is answered here: the deltas when they fit
    /// in `max_udp_payload` (and the client's size), else one SOA.
    pub fn transfer(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        request: &[u8],
        peer: IpAddr,
        transport: Transport,
        max_udp_payload: u16,
    ) -> XfrReply {
        if request.get(2).is_none_or(|b| b & 0x80 != 0) {
            return XfrReply::One(Vec::new()); // a response: never answered
        }
        let now = tsig::unix_now();
        let (verified, request) = match self.verify(request, peer, "transfer") {
            Ok(Some((v, stripped))) => (Some(v), stripped),
            Ok(None) => (None, request.to_vec()),
            Err(reply) => return XfrReply::One(reply),
        };
        let mut signer = verified.as_ref().map(Signer::new);
        let key = verified.as_ref().map(|v| v.key.name());
        if let Err(refusal) = acl::check(&self.settings.allow_transfer, peer, key) {
            self.refused(peer, refusal.as_str(), "transfer");
            return XfrReply::One(transfer::refusal(
                &request,
                ResponseCode::Refused,
                signer.as_mut(),
                now,
            ));
        }
        if let Some(catalog) = &self.settings.catalog
            && let Ok(m) = hickory_proto::op::Message::from_vec(&request)
            && m.queries
                .first()
                .is_some_and(|q| catalog.contains(q.name()))
        {
            return XfrReply::One(self.catalog_transfer(
                catalog,
                &m,
                transport,
                signer,
                max_udp_payload,
            ));
        }
        let served = shared.served.load_full();
        let req = match transfer::parse(&served.records, &request) {
            Ok(req) => req,
            Err(rcode) => {
                return XfrReply::One(transfer::refusal(&request, rcode, signer.as_mut(), now));
            }
        };
        let kind = match req.kind {
            Kind::Axfr => "axfr",
            Kind::Ixfr { .. } => "ixfr",
        };
        // IXFR of a client the history reaches: the deltas, from the history's newest
        // version (a publish it has not compared yet is sent next time).
        let (served, answer) = match req.kind {
            Kind::Ixfr { serial }
                if !transfer::up_to_date(serial, served.records.serial(req.zi)) =>
            {
                match self.incremental(req.zi, serial) {
                    Some((newest, deltas)) => (newest, Answer::Incremental(deltas)),
                    None => (served, Answer::Zone),
                }
            }
            _ => (served, Answer::Zone),
        };
        let incremental = matches!(answer, Answer::Incremental(_));
        let counted = match (req.kind, incremental) {
            (Kind::Axfr, _) => "axfr",
            (Kind::Ixfr { .. }, true) => "ixfr_incremental",
            (Kind::Ixfr { .. }, false) => "ixfr_full",
        };
        metrics::counter!("fedplane_dns_xfr_total", "type" => counted, "transport" => transport.as_str())
            .increment(1);
        if transport == Transport::Udp {
            // One message within the client's size, or the single SOA (it asks over TCP).
            let limit = req.udp_limit.min(usize::from(max_udp_payload));
            let small = match &answer {
                Answer::Incremental(deltas) => {
                    deltas.iter().map(|d| d.wire).sum::<usize>() <= limit
                }
                _ => false,
            };
            let fits = if small {
                Stream::new(
                    &served.records,
                    req.clone(),
                    answer,
                    signer.clone(),
                    tsig::unix_now,
                )
                .and_then(|mut s| {
                    let one = s.next()?;
                    (s.next().is_none() && one.len() <= limit).then_some(one)
                })
            } else {
                None
            };
            let one = fits.or_else(|| {
                Stream::new(&served.records, req, Answer::Soa, signer, tsig::unix_now)
                    .and_then(|mut s| s.next())
            });
            return XfrReply::One(one.unwrap_or_default());
        }
        let Some(slot) = ClientSlot::take(&self.streaming, peer) else {
            self.refused(peer, "busy", "transfer (over 2 at once from one client)");
            return XfrReply::One(transfer::refusal(
                &request,
                ResponseCode::ServFail,
                signer.as_mut(),
                now,
            ));
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.refused(peer, "busy", "transfer (over --max-transfers)");
            return XfrReply::One(transfer::refusal(
                &request,
                ResponseCode::ServFail,
                signer.as_mut(),
                now,
            ));
        };
        let zone = req.query.name().to_string();
        let single = matches!(req.kind, Kind::Ixfr { serial } if transfer::up_to_date(serial, served.records.serial(req.zi)));
        if single {
            debug!(%peer, zone, kind, "IXFR of a client that is up to date: one SOA");
        } else {
            info!(%peer, zone, kind, incremental, key = ?key.map(ToString::to_string), serial = served.records.serial(req.zi), "zone transfer");
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::task::spawn_blocking(move || {
            let _permit = (permit, slot);
            let Some(stream) = Stream::new(&served.records, req, answer, signer, tsig::unix_now)
            else {
                return;
            };
            for msg in stream {
                // The connection is gone: stop reading the zone.
                if tx.blocking_send(msg).is_err() {
                    return;
                }
            }
        });
        XfrReply::Stream(rx)
    }
}
