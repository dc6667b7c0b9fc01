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
use tracing::{info, warn};

use crate::acl::{self, Acl};
use crate::answer::Transport;
use crate::sync::Shared;
use crate::transfer::{self, Kind, Stream};
use crate::tsig::{self, Keys, Signer, Verified};

/// Transfers streamed at once by default (`--max-transfers`); more get SERVFAIL and retry.
pub const DEFAULT_MAX_TRANSFERS: usize = 8;
/// Client addresses whose refusals are remembered, so each is logged once.
pub const LOGGED_CLIENTS: usize = 1024;
/// Messages of one transfer buffered ahead of the connection (the rest waits in the
/// producer): bounds a transfer's memory to a few messages however large the zone.
const STREAM_BUFFER: usize = 4;

/// The transfer and TSIG settings.
#[derive(Debug, Clone, Default)]
pub struct XfrSettings {
    /// `--tsig-key`.
    pub keys: Keys,
    /// `--allow-transfer`; empty: nobody.
    pub allow_transfer: Vec<Acl>,
    /// `--max-transfers`.
    pub max_transfers: usize,
}

/// The transfer state shared by the listeners.
#[derive(Debug)]
pub struct Transfers {
    settings: XfrSettings,
    permits: Arc<Semaphore>,
    logged: Mutex<HashSet<(IpAddr, &'static str)>>,
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
        Self {
            settings,
            permits,
            logged: Mutex::new(HashSet::new()),
        }
    }

    /// The configured keys.
    pub fn keys(&self) -> &Keys {
        &self.settings.keys
    }

    /// Counts a refusal and logs it, once per client and reason.
    fn refused(&self, peer: IpAddr, reason: &'static str, what: &str) {
        metrics::counter!("fedplane_dns_xfr_refused_total", "reason" => reason).increment(1);
        let first = {
            let mut logged = self
                .logged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            logged.len() < LOGGED_CLIENTS && logged.insert((peer, reason))
        };
        if first {
            warn!(%peer, reason, "{what} refused (logged once per client and reason)");
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

    /// Answers a transfer request (AXFR or IXFR) from `peer` over `transport`, from the
    /// records being served now. Over UDP only IXFR is answered here, with one SOA.
    pub fn transfer(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        request: &[u8],
        peer: IpAddr,
        transport: Transport,
    ) -> XfrReply {
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
        metrics::counter!("fedplane_dns_xfr_total", "type" => kind, "transport" => transport.as_str())
            .increment(1);
        if transport == Transport::Udp {
            let one =
                Stream::new(&served.records, req, true, signer, now).and_then(|mut s| s.next());
            return XfrReply::One(one.unwrap_or_default());
        }
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
        info!(%peer, zone, kind, key = ?key.map(ToString::to_string), serial = served.records.serial(req.zi), "zone transfer");
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let Some(stream) = Stream::new(&served.records, req, false, signer, now) else {
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
