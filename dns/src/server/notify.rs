//! Sending NOTIFY (RFC 1996) to the secondaries (`--notify ADDR[:PORT][,key=NAME]`): after
//! each publish of new records, zones whose serial moved are announced ([`crate::notify`]
//! decides when), from one UDP socket per address family, signed with the target's TSIG key
//! when it names one. An answer from the target with the NOTIFY's ID ends its retries
//! (replies are matched by address and ID; their signatures are not checked).

use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::answer::wire::{Section, Writer};
use crate::answer::zone;
use crate::notify::Notifier;
use crate::sync::Shared;
use crate::tsig::{self, Keys, Signer};

/// `--notify-interval` default: at most one NOTIFY round per zone per second.
pub const DEFAULT_NOTIFY_INTERVAL: Duration = Duration::from_secs(1);

/// One secondary to notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// Its address (port 53 unless given).
    pub addr: SocketAddr,
    /// The TSIG key to sign with, if any.
    pub key: Option<Name>,
}

impl FromStr for NotifyTarget {
    type Err = String;

    /// `192.0.2.53`, `192.0.2.53:5353`, `[2001:db8::53]:53` or `2001:db8::53`, optionally
    /// `,key=NAME`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, key) = crate::acl::with_key(s, "ADDR[:PORT]")?;
        let addr = addr
            .parse::<SocketAddr>()
            .or_else(|_| addr.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| format!("{s:?}: {addr:?} is not an address (ADDR or ADDR:PORT)"))?;
        Ok(Self { addr, key })
    }
}

/// A random message ID (NOTIFY answers are matched by it).
fn random_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u16::from_be_bytes(b)
}

/// The NOTIFY for zone `zi` of `records`: opcode NOTIFY, AA, the zone's SOA question and its
/// current SOA as the answer (a hint, RFC 1996 §3.7).
fn message(records: &crate::index::Records, zi: usize, id: u16) -> Option<Vec<u8>> {
    let zone = records.zones().iter().nth(zi)?;
    let mut header = [0u8; 12];
    header[..2].copy_from_slice(&id.to_be_bytes());
    header[2] = (4 << 3) | 0x04; // opcode NOTIFY, AA
    let mut w = Writer::new(header, 512);
    w.question(&Query::query(zone.name.clone(), RecordType::SOA));
    w.record(Section::Answer, &zone::soa(records, zi, zone));
    Some(w.finish())
}

/// Sends NOTIFY to `targets` until `cancel`.
pub async fn run(
    shared: Arc<Shared>,
    targets: Vec<NotifyTarget>,
    keys: Keys,
    interval: Duration,
    source: Vec<IpAddr>,
    cancel: CancellationToken,
) {
    if targets.is_empty() {
        return;
    }
    let bind = |any: SocketAddr| {
        StdUdpSocket::bind(any)
            .and_then(|s| {
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s)
            })
            .map_err(|e| warn!(%any, error = %e, "cannot open a socket for NOTIFY"))
            .ok()
    };
    // From --notify-source when given (secondaries take NOTIFY only from their primaries'
    // addresses), else from the address the route to the target picks.
    let from4 = source
        .iter()
        .find(|a| a.is_ipv4())
        .copied()
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let from6 = source
        .iter()
        .find(|a| a.is_ipv6())
        .copied()
        .unwrap_or(IpAddr::from([0u16; 8]));
    let v4 = targets
        .iter()
        .any(|t| t.addr.is_ipv4())
        .then(|| bind(SocketAddr::new(from4, 0)))
        .flatten();
    let v6 = targets
        .iter()
        .any(|t| t.addr.is_ipv6())
        .then(|| bind(SocketAddr::new(from6, 0)))
        .flatten();
    let mut published = shared.subscribe();
    let zones = shared.served.load().records.zones().iter().count();
    let mut notifier = Notifier::new(zones, targets.len(), interval);
    let (mut buf4, mut buf6) = (vec![0u8; 4096], vec![0u8; 4096]);
    let mut refusing: std::collections::HashSet<(usize, u8)> = std::collections::HashSet::new();
    info!(targets = ?targets.iter().map(|t| t.addr).collect::<Vec<_>>(), ?interval, "NOTIFY on serial changes");
    loop {
        {
            let served = shared.served.load();
            if served.records.is_loaded() {
                for zi in 0..zones {
                    notifier.on_serial(zi, served.records.serial(zi));
                }
            }
            for send in notifier.due(Instant::now(), random_id) {
                let target = &targets[send.target];
                let socket = if target.addr.is_ipv4() { &v4 } else { &v6 };
                let (Some(socket), Some(mut msg)) =
                    (socket, message(&served.records, send.zi, send.id))
                else {
                    continue;
                };
                if let Some(key) = target.key.as_ref().and_then(|k| keys.get(k)) {
                    Signer::for_request(key.clone()).sign(&mut msg, tsig::unix_now());
                }
                match socket.send_to(&msg, target.addr).await {
                    Ok(_) => {
                        metrics::counter!("fedplane_dns_notify_sent_total").increment(1);
                        debug!(target = %target.addr, serial = send.serial, id = send.id, "NOTIFY sent");
                    }
                    Err(e) => debug!(target = %target.addr, error = %e, "NOTIFY not sent"),
                }
            }
            metrics::gauge!("fedplane_dns_notify_outstanding").set(notifier.outstanding() as f64);
        }
        let wake = notifier.next_wakeup();
        let reply = tokio::select! {
            () = cancel.cancelled() => return,
            r = published.changed() => {
                if r.is_err() {
                    return;
                }
                None
            }
            () = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => None,
            r = recv(v4.as_ref(), &mut buf4) => r,
            r = recv(v6.as_ref(), &mut buf6) => r,
        };
        if let Some((n, from, v6reply)) = reply {
            let buf = if v6reply { &buf6 } else { &buf4 };
            let m = &buf[..n];
            // An answer: QR set, opcode NOTIFY, from a target's address and port.
            if m.len() >= 12 && m[2] & 0x80 != 0 && (m[2] >> 3) & 0x0F == 4 {
                let id = u16::from_be_bytes([m[0], m[1]]);
                let rcode = m[3] & 0x0F;
                for (i, t) in targets.iter().enumerate() {
                    if t.addr == from
                        && let Some((zi, serial)) = notifier.on_reply(i, id)
                    {
                        metrics::counter!("fedplane_dns_notify_answered_total").increment(1);
                        if rcode == 0 {
                            debug!(target = %from, zone = zi, serial, "NOTIFY answered");
                            refusing.retain(|&(t, _)| t != i);
                        } else if refusing.insert((i, rcode)) {
                            // Once per target and error until it takes one again.
                            warn!(target = %from, serial, rcode, "NOTIFY answered with an error (the secondary does not take it: check its allow-notify, its primaries' address and the key)");
                        }
                    }
                }
            }
        }
    }
}

/// Receives one datagram on `socket` (never, without one).
async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr, bool)> {
    match socket {
        Some(s) => match s.recv_from(buf).await {
            Ok((n, from)) => Some((n, from, from.is_ipv6())),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}
