//! DNS over UDP ([`udp`]) and TCP ([`tcp`]): sockets in, answers from the served records in
//! the middle, sockets out; [`conns`] decides which TCP connections stay open under pressure
//! and [`rrl`] limits UDP response rates (both pure logic).
//!
//! UDP: per listen address, `workers` receive loops, each on its own SO_REUSEPORT socket, that
//! answer the fast path inline. Everything else, and every TCP query, goes through one queue
//! with a bounded share per transport to the general-path threads ([`general`]), which run at
//! a lower priority. TCP (tokio): length-prefixed messages, pipelining, idle timeouts, a
//! connection cap derived from the file descriptor limit ([`raise_fd_limit`], [`tcp_cap`]), a
//! per-client cap, and refused connections held for a while rather than closed at once. On
//! shutdown (`cancel`, after the lameduck) UDP loops and general threads stop within
//! [`udp::UDP_POLL`], TCP listeners close at once, and TCP connections finish the query they
//! are reading or answering, then close with a FIN rather than a reset.

pub mod conns;
pub mod general;
pub mod notify;
pub mod rrl;
pub mod tcp;
pub mod udp;
pub mod update;
pub mod xfr;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use hickory_proto::op::ResponseCode;

use crate::answer::{AnswerOptions, Asker, Context, Outcome, Transport, respond_to};
use crate::fast;
use crate::federation::Federations;
use crate::sync::Shared;
use crate::topology::Topology;
use crate::transfer;
use crate::tsig::{self, Signer};
use conns::ConnTable;
use rrl::{Limiter, RrlConfig};
use xfr::{DEFAULT_MAX_TRANSFERS, Transfers, XfrReply, XfrSettings};

/// Open TCP connections at most by default (fewer if the file descriptor limit is lower). DNS
/// over TCP is the fallback path, so this is generous for one pod and still bounds memory.
pub const DEFAULT_TCP_CONNECTIONS: usize = 1024;
/// File descriptors kept out of the TCP cap: the HTTP endpoints, etcd, the UDP sockets and
/// listeners, logs, epoll and the like.
pub const RESERVED_FDS: u64 = 128;
/// UDP socket receive buffer we ask for, to ride out bursts (the kernel caps it at rmem_max).
const UDP_RECV_BUFFER: usize = 4 << 20;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding failed (port in use, or port 53 without CAP_NET_BIND_SERVICE).
    #[error(
        "cannot bind {proto} {addr}: {source} (port below 1024 needs root or CAP_NET_BIND_SERVICE; try --listen 127.0.0.1:5300)"
    )]
    Bind {
        /// `udp` or `tcp`.
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Everything a listener needs to answer.
#[derive(Debug)]
pub struct Responder {
    shared: Arc<Shared>,
    opts: AnswerOptions,
    /// `--topology`: where clients are, for answers by locality.
    topology: Option<Arc<Topology>>,
    /// `--federation`: the short names.
    federations: Option<Arc<Federations>>,
    tcp_idle_timeout: Duration,
    rotation: AtomicUsize,
    /// TSIG keys and zone transfers.
    transfers: Arc<Transfers>,
    /// The updater's queue, when updates are allowed (`--allow-update`).
    updates: Option<tokio::sync::mpsc::Sender<update::Job>>,
}

impl Responder {
    /// A responder over the served records; with a `topology`, answers depend on where the
    /// client is; with `federations`, the federation short names are answered.
    pub fn new(
        shared: Arc<Shared>,
        mut opts: AnswerOptions,
        tcp_idle_timeout: Duration,
        topology: Option<Arc<Topology>>,
        federations: Option<Arc<Federations>>,
    ) -> Self {
        opts.by_locality = topology.is_some();
        opts.short_names = federations.is_some();
        Self {
            shared,
            opts,
            topology,
            federations,
            tcp_idle_timeout,
            rotation: AtomicUsize::new(0),
            transfers: Arc::new(Transfers::new(XfrSettings {
                max_transfers: DEFAULT_MAX_TRANSFERS,
                ..XfrSettings::default()
            })),
            updates: None,
        }
    }

    /// With RFC 2136 updates handed to the updater ([`update::run`]) through `queue`.
    #[must_use]
    pub fn with_updates(mut self, queue: tokio::sync::mpsc::Sender<update::Job>) -> Self {
        self.updates = Some(queue);
        self
    }

    /// Takes an UPDATE request from `peer`: refused at once unless it is signed with a key
    /// `--allow-update` lists for the client, else queued for the updater, which answers to
    /// `reply` (SERVFAIL at once when the queue is full).
    pub fn update(&self, request: &[u8], peer: IpAddr, reply: update::ReplyTo) {
        let (verified, request) = match self.transfers.authorize_update(request, peer) {
            Ok(ok) => ok,
            Err(bytes) => return reply.send(bytes),
        };
        let job = update::Job {
            request,
            verified,
            peer,
            reply,
            received: Instant::now(),
        };
        let Some(queue) = &self.updates else {
            return refuse_job(job, ResponseCode::Refused);
        };
        if let Err(e) = queue.try_send(job) {
            let job = match e {
                tokio::sync::mpsc::error::TrySendError::Full(j)
                | tokio::sync::mpsc::error::TrySendError::Closed(j) => j,
            };
            refuse_job(job, ResponseCode::ServFail);
        }
    }

    /// With TSIG keys and zone transfers (`--tsig-key`, `--allow-transfer`).
    #[must_use]
    pub fn with_transfers(mut self, settings: XfrSettings) -> Self {
        self.opts.catalog = settings.catalog.is_some();
        self.transfers = Arc::new(Transfers::new(settings));
        self
    }

    /// The TSIG and transfer state (its IXFR history is kept by [`Transfers::keep_history`]).
    pub fn transfers(&self) -> Arc<Transfers> {
        self.transfers.clone()
    }

    /// Answers a transfer request (see [`Transfers::transfer`]).
    fn transfer(&self, request: &[u8], transport: Transport, peer: IpAddr) -> XfrReply {
        self.transfers.transfer(
            &self.shared,
            request,
            peer,
            transport,
            self.opts.max_udp_payload,
        )
    }

    /// The asker `peer`, placed by the topology map when there is one.
    fn asker(&self, peer: IpAddr) -> Option<Asker<'_>> {
        self.topology.as_deref().map(|topology| Asker {
            addr: peer,
            topology,
        })
    }

    /// The fast path's answer to a TCP query from the records being served now, written into
    /// `out` and counted in the metrics; `None` for the general path.
    fn fast_tcp(&self, request: &[u8], out: &mut [u8], peer: IpAddr) -> Option<usize> {
        let served = self.shared.served.load();
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let n = fast::respond_fast_to(
            &served.records,
            &served.fast,
            request,
            self.opts,
            rotation,
            out,
            Transport::Tcp,
            self.asker(peer),
        )?;
        metrics::counter!("fedplane_dns_responses_total",
            "transport" => "tcp", "rcode" => fast_rcode_label(out[3]))
        .increment(1);
        Some(n)
    }

    /// The general path's answer to `peer` from the records being served now, counted in the
    /// metrics. A signed request (TSIG) is answered signed, or with NOTAUTH when its signature
    /// does not hold; IXFR over UDP is a transfer request.
    fn answer(&self, request: &[u8], transport: Transport, peer: IpAddr) -> Option<Vec<u8>> {
        if transport == Transport::Udp
            && transfer::transfer_type(request) == Some(hickory_proto::rr::RecordType::IXFR)
        {
            return match self.transfer(request, transport, peer) {
                XfrReply::One(bytes) if !bytes.is_empty() => Some(bytes),
                _ => None,
            };
        }
        let (verified, stripped) = match self.transfers.verify(request, peer, "signed query") {
            Ok(Some((v, stripped))) => (Some(v), Some(stripped)),
            Ok(None) => (None, None),
            Err(reply) => return Some(reply),
        };
        let request = stripped.as_deref().unwrap_or(request);
        if let Some(catalog) = self.transfers.catalog()
            && let Ok(m) = hickory_proto::op::Message::from_vec(request)
            && let Some(reply) = catalog.answer(&m)
        {
            let mut bytes = reply.to_vec().ok()?;
            if let Some(v) = &verified {
                Signer::new(v).sign(&mut bytes, tsig::unix_now());
            }
            metrics::counter!("fedplane_dns_responses_total",
                "transport" => transport.as_str(), "rcode" => rcode_label(reply.metadata.response_code))
            .increment(1);
            return Some(bytes);
        }
        let served = self.shared.served.load();
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let ctx = Context {
            asker: self.asker(peer),
            federations: self.federations.as_deref(),
            reserve: verified.as_ref().map_or(0, |v| tsig::reserve(&v.key)),
        };
        match respond_to(
            &served.records,
            request,
            transport,
            self.opts,
            Instant::now(),
            rotation,
            ctx,
        ) {
            Outcome::Reply {
                mut bytes,
                rcode,
                truncated,
            } => {
                if let Some(v) = &verified {
                    Signer::new(v).sign(&mut bytes, tsig::unix_now());
                }
                metrics::counter!("fedplane_dns_responses_total",
                    "transport" => transport.as_str(), "rcode" => rcode_label(rcode))
                .increment(1);
                if truncated {
                    metrics::counter!("fedplane_dns_truncated_total").increment(1);
                }
                Some(bytes)
            }
            Outcome::Drop(reason) => {
                metrics::counter!("fedplane_dns_dropped_total",
                    "transport" => transport.as_str(), "reason" => reason.as_str())
                .increment(1);
                None
            }
        }
    }
}

/// Answers a queued update with `rcode`, signed, without applying it.
fn refuse_job(job: update::Job, rcode: ResponseCode) {
    update::count(rcode);
    let mut bytes = update::answer(&job.request, rcode);
    Signer::new(&job.verified).sign(&mut bytes, tsig::unix_now());
    job.reply.send(bytes);
}

/// The RCODE label of a fast-path answer (the fast path answers NOERROR, NXDOMAIN or
/// REFUSED), from its fourth byte.
fn fast_rcode_label(flags: u8) -> &'static str {
    match flags & 0x0F {
        0 => "NOERROR",
        3 => "NXDOMAIN",
        5 => "REFUSED",
        _ => "OTHER",
    }
}

/// The RCODE label of an answer in the metrics.
fn rcode_label(rcode: hickory_proto::op::ResponseCode) -> &'static str {
    use hickory_proto::op::ResponseCode as R;
    match rcode {
        R::NoError => "NOERROR",
        R::FormErr => "FORMERR",
        R::ServFail => "SERVFAIL",
        R::NXDomain => "NXDOMAIN",
        R::NotImp => "NOTIMP",
        R::Refused => "REFUSED",
        R::BADVERS => "BADVERS",
        R::YXDomain => "YXDOMAIN",
        R::YXRRSet => "YXRRSET",
        R::NXRRSet => "NXRRSET",
        R::NotAuth => "NOTAUTH",
        R::NotZone => "NOTZONE",
        _ => "OTHER",
    }
}

fn socket_for(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // So that 0.0.0.0:53 and [::]:53 can both be bound.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// How the listeners share out the machine.
#[derive(Debug, Clone)]
pub struct Limits {
    /// UDP receive loops per listen address.
    pub workers: usize,
    /// General-path threads for UDP (over all addresses).
    pub general_threads: usize,
    /// Open TCP connections at most (over all addresses).
    pub tcp_max_connections: usize,
    /// Open TCP connections from one client address at most.
    pub tcp_max_connections_per_client: usize,
    /// Refused TCP connections held open at most (over all addresses).
    pub tcp_held: usize,
    /// UDP response rate limiting; `None` is off.
    pub rrl: Option<RrlConfig>,
}

/// Raises the soft limit on open files to the hard limit, as Go programs do at start (the
/// soft limit is often 1,024 while the hard one is far higher). Returns the soft limit in
/// force afterwards.
pub fn raise_fd_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                warn!(error = %e, soft, hard, "cannot raise the open-file limit to the hard limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            warn!(error = %e, "cannot read the open-file limit; assuming 1024");
            1024
        }
    }
}

/// What the open-file limit `nofile` leaves for TCP connections after [`RESERVED_FDS`] and
/// the `udp_sockets`.
fn tcp_room(nofile: u64, udp_sockets: usize) -> usize {
    let room = nofile
        .saturating_sub(RESERVED_FDS)
        .saturating_sub(udp_sockets as u64);
    usize::try_from(room).unwrap_or(usize::MAX)
}

/// The TCP connection cap: `requested`, but never more than the room the open-file limit
/// `nofile` leaves ([`tcp_room`]), so that a connection flood cannot take the descriptors that
/// /metrics, /readyz and etcd need; by default [`DEFAULT_TCP_CONNECTIONS`] within three
/// quarters of the room, so that refused connections can be held beside them
/// ([`tcp_held_cap`]). At least 1.
pub fn tcp_cap(requested: Option<usize>, nofile: u64, udp_sockets: usize) -> usize {
    let room = tcp_room(nofile, udp_sockets);
    match requested {
        Some(n) => n.min(room),
        None => DEFAULT_TCP_CONNECTIONS.min(room / 4 * 3),
    }
    .max(1)
}

/// How many refused TCP connections may be held open ([`conns::Held`]): as many as the
/// connections themselves, within what the open-file limit leaves beside them (0: refused
/// connections are closed at once).
pub fn tcp_held_cap(tcp_cap: usize, nofile: u64, udp_sockets: usize) -> usize {
    tcp_room(nofile, udp_sockets)
        .saturating_sub(tcp_cap)
        .min(tcp_cap)
}

/// Binds every listen address (UDP ×`limits.workers` and TCP) before anything is served, so a
/// bad address fails the start with a clear error. Returns the bound local addresses (useful
/// with port 0) and spawns the serving tasks into `tasks`: the UDP workers and general-path
/// threads (blocking threads that stop within [`udp::UDP_POLL`] of `cancel`) and the TCP
/// listeners.
pub fn spawn(
    listen: &[SocketAddr],
    limits: &Limits,
    responder: Arc<Responder>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Vec<SocketAddr>, ServerError> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    let mut bound = Vec::new();
    for &addr in listen {
        let bind_err = |proto, source| ServerError::Bind {
            proto,
            addr,
            source,
        };
        // TCP first: with port 0 it picks the port and the UDP sockets reuse it.
        let t = socket_for(addr, Type::STREAM, Protocol::TCP)
            .and_then(|s| {
                s.bind(&addr.into())?;
                s.listen(1024)?;
                Ok(s)
            })
            .map_err(|e| bind_err("tcp", e))?;
        let local = t
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(addr);
        for _ in 0..limits.workers {
            let u = socket_for(local, Type::DGRAM, Protocol::UDP)
                .and_then(|s| {
                    let _ = s.set_recv_buffer_size(UDP_RECV_BUFFER);
                    s.bind(&local.into())?;
                    Ok(s)
                })
                .map_err(|e| bind_err("udp", e))?;
            u.set_nonblocking(false).map_err(|e| bind_err("udp", e))?;
            udp.push(Arc::new(std::net::UdpSocket::from(u)));
        }
        tcp.push(TcpListener::from_std(t.into()).map_err(|e| bind_err("tcp", e))?);
        bound.push(local);
    }

    let (general, queue) = general::queue();
    for i in 0..limits.general_threads.max(1) {
        let (queue, responder, cancel) = (queue.clone(), responder.clone(), cancel.clone());
        // A thread of its own, not tokio's blocking pool: its lowered priority must not pass
        // to other blocking work once it ends. The task ends when the thread does.
        let (done, ended) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("dns-general-{i}"))
            .spawn(move || {
                general::serve_general(&queue, &responder, &cancel);
                drop(done);
            });
        match thread {
            Ok(_) => {
                tasks.spawn(async move {
                    let _ = ended.await;
                });
            }
            Err(e) => warn!(error = %e, "cannot start a general-path thread"),
        }
    }
    let shared = Arc::new(udp::UdpShared {
        responder: responder.clone(),
        general: general.clone(),
        rrl: limits.rrl.clone().map(|c| Arc::new(Limiter::new(c))),
    });
    for socket in udp {
        let (shared, cancel) = (shared.clone(), cancel.clone());
        tasks.spawn_blocking(move || udp::serve_udp(socket, &shared, &cancel));
    }
    let conns = Arc::new(Mutex::new(ConnTable::new(
        limits.tcp_max_connections,
        limits.tcp_max_connections_per_client,
    )));
    let held = limits.tcp_held / tcp.len().max(1);
    for listener in tcp {
        tasks.spawn(tcp::serve_tcp(
            listener,
            responder.clone(),
            conns.clone(),
            general.clone(),
            held,
            cancel.clone(),
        ));
    }
    info!(
        workers = limits.workers,
        general_threads = limits.general_threads.max(1),
        tcp_max_connections = limits.tcp_max_connections,
        tcp_max_connections_per_client = limits.tcp_max_connections_per_client,
        tcp_held = limits.tcp_held,
        rrl = ?limits.rrl.as_ref().map(|r| r.responses_per_second),
        "DNS listeners started"
    );
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tcp_cap_leaves_room_under_the_open_file_limit() {
        assert_eq!(tcp_cap(None, 1_048_576, 4), DEFAULT_TCP_CONNECTIONS);
        assert_eq!(
            tcp_cap(None, 1024, 4),
            669,
            "three quarters of 1024 - 128 - 4: room to hold refused ones"
        );
        assert_eq!(tcp_cap(Some(50), 1024, 4), 50);
        assert_eq!(tcp_cap(Some(5000), 1024, 4), 892, "clamped to the room");
        assert_eq!(tcp_cap(None, 64, 4), 1, "at least one");
        assert_eq!(tcp_held_cap(1024, 1_048_576, 4), 1024);
        assert_eq!(
            tcp_held_cap(669, 1024, 4),
            223,
            "what the connections leave"
        );
        assert_eq!(
            tcp_held_cap(892, 1024, 4),
            0,
            "nothing left: closed at once"
        );
    }
}
