//! DNS over UDP and TCP: sockets in, answers from the served records in the middle, sockets
//! out.
//!
//! UDP: per listen address, `workers` receive loops, each on its own SO_REUSEPORT socket so the
//! kernel spreads datagrams over them. A loop receives up to 32 datagrams with one `recvmmsg`,
//! loads the published [`crate::sync::Served`] once for the whole batch (one atomic load, no
//! lock), answers each from the fast path's compiled table ([`crate::fast::respond_fast`], no
//! allocation) or else the general path ([`crate::answer::respond`]), and sends the batch with
//! one `sendmmsg`. TCP (the general path, one load per query): length-prefixed messages,
//! several queries per connection answered in order (pipelining), an idle timeout, and a bound
//! on connections. On shutdown (`cancel`, after the lameduck) UDP loops stop within
//! `UDP_POLL`, TCP listeners close at once, and TCP connections finish the query they are
//! reading or answering, then close with a FIN rather than a reset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::answer::{AnswerOptions, Outcome, Transport, respond};
use crate::fast;
use crate::index::Records;
use crate::sync::Shared;

/// Open TCP connections at most; further ones wait in the kernel's accept queue. DNS over TCP
/// is the fallback path, so this is generous for one pod and still bounds memory.
pub const MAX_TCP_CONNECTIONS: usize = 1024;
/// Pause after a failed accept (EMFILE and the like), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// After we close a TCP connection (FIN), how long we read and discard what the client still
/// sends. Closing with unread input resets the connection, and a reset can destroy answers the
/// client has not read yet; a client that got our FIN closes at once, so 1 s is plenty.
const TCP_LINGER: Duration = Duration::from_secs(1);
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
    tcp_idle_timeout: Duration,
    rotation: AtomicUsize,
}

impl Responder {
    /// A responder over the served records.
    pub fn new(shared: Arc<Shared>, opts: AnswerOptions, tcp_idle_timeout: Duration) -> Self {
        Self {
            shared,
            opts,
            tcp_idle_timeout,
            rotation: AtomicUsize::new(0),
        }
    }

    /// The general path's answer from the records being served now.
    fn answer(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        self.answer_from(&self.shared.served.load().records, request, transport)
    }

    /// The general path's answer from `records`, counted in the metrics.
    fn answer_from(
        &self,
        records: &Records,
        request: &[u8],
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        match respond(
            records,
            request,
            transport,
            self.opts,
            Instant::now(),
            rotation,
        ) {
            Outcome::Reply {
                bytes,
                rcode,
                truncated,
            } => {
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

/// Binds every listen address (UDP ×`workers` and TCP) before anything is served, so a bad
/// address fails the start with a clear error. Returns the bound local addresses (useful with
/// port 0) and spawns the serving tasks into `tasks`.
pub fn spawn(
    listen: &[SocketAddr],
    workers: usize,
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
        for _ in 0..workers {
            let u = socket_for(local, Type::DGRAM, Protocol::UDP)
                .and_then(|s| {
                    let _ = s.set_recv_buffer_size(UDP_RECV_BUFFER);
                    s.bind(&local.into())?;
                    Ok(s)
                })
                .map_err(|e| bind_err("udp", e))?;
            u.set_nonblocking(false).map_err(|e| bind_err("udp", e))?;
            udp.push(std::net::UdpSocket::from(u));
        }
        tcp.push(TcpListener::from_std(t.into()).map_err(|e| bind_err("tcp", e))?);
        bound.push(local);
    }
    for socket in udp {
        let (responder, cancel) = (responder.clone(), cancel.clone());
        tasks.spawn_blocking(move || serve_udp(socket, &responder, &cancel));
    }
    let limit = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    for listener in tcp {
        tasks.spawn(serve_tcp(
            listener,
            responder.clone(),
            limit.clone(),
            cancel.clone(),
        ));
    }
    Ok(bound)
}

/// Datagrams received (and answered) per system call.
const UDP_BATCH: usize = 32;
/// Receive buffer per datagram. A larger datagram is no DNS query we answer: dropped, counted.
const UDP_MAX_QUERY: usize = 4096;
/// How long a receive loop blocks before it checks for shutdown.
const UDP_POLL: Duration = Duration::from_millis(200);

/// One UDP receive loop on its own thread and socket: `recvmmsg` up to [`UDP_BATCH`] queries,
/// answer each (compiled fast path, else the general path), `sendmmsg` the answers.
fn serve_udp(socket: std::net::UdpSocket, responder: &Responder, cancel: &CancellationToken) {
    if let Err(e) = socket.set_read_timeout(Some(UDP_POLL)) {
        warn!(error = %e, "cannot set the UDP receive timeout; shutdown may wait for a query");
    }
    let fd = socket.as_raw_fd();
    let out_size = usize::from(responder.opts.max_udp_payload).max(fast::MAX_FAST_RESPONSE);
    let mut bufs = vec![[0u8; UDP_MAX_QUERY]; UDP_BATCH];
    let mut outs = vec![vec![0u8; out_size]; UDP_BATCH];
    let mut out_lens = [0usize; UDP_BATCH];
    let mut peers: Vec<Option<SockaddrStorage>> = vec![None; UDP_BATCH];
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    // Per worker: no shared counter on the hot path.
    let fast_answers = metrics::counter!("fedplane_dns_responses_total", "transport" => "udp", "rcode" => "NOERROR");
    let oversized = metrics::counter!("fedplane_dns_dropped_total", "transport" => "udp", "reason" => "oversized");
    let mut rotation = 0usize;
    while !cancel.is_cancelled() {
        let mut replies = 0usize;
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            let received = match recvmmsg(
                fd,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(r) => r,
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    debug!(error = %e, "udp receive error");
                    continue;
                }
            };
            let served = responder.shared.served.load();
            for msg in received {
                let (Some(peer), Some(data)) = (msg.address, msg.iovs().next()) else {
                    continue;
                };
                if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                    oversized.increment(1);
                    continue;
                }
                let query = &data[..msg.bytes.min(data.len())];
                rotation = rotation.wrapping_add(1);
                let out = &mut outs[replies];
                let n = match fast::respond_fast(
                    &served.records,
                    &served.fast,
                    query,
                    responder.opts,
                    rotation,
                    out,
                ) {
                    Some(n) => {
                        fast_answers.increment(1);
                        n
                    }
                    None => match responder.answer_from(&served.records, query, Transport::Udp) {
                        Some(resp) if resp.len() <= out.len() => {
                            out[..resp.len()].copy_from_slice(&resp);
                            resp.len()
                        }
                        _ => continue,
                    },
                };
                out_lens[replies] = n;
                peers[replies] = Some(peer);
                replies += 1;
            }
        }
        if replies == 0 {
            continue;
        }
        let slices: Vec<[IoSlice<'_>; 1]> = outs[..replies]
            .iter()
            .zip(&out_lens)
            .map(|(o, &n)| [IoSlice::new(&o[..n])])
            .collect();
        if let Err(e) = sendmmsg(
            fd,
            &mut send_headers,
            &slices,
            &peers[..replies],
            [],
            MsgFlags::empty(),
        ) {
            debug!(error = %e, "udp send failed");
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    limit: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (mut stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin on it.
                    warn!(error = %e, "tcp accept failed; pausing accepts for {ACCEPT_ERROR_PAUSE:?}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let responder = responder.clone();
        let cancel = cancel.clone();
        conns.spawn(async move {
            metrics::gauge!("fedplane_dns_tcp_connections").increment(1.0);
            match serve_conn(&mut stream, &responder, &cancel).await {
                Ok(()) => close_gracefully(stream).await,
                Err(e) => debug!(%peer, error = %e, "tcp connection closed with error"),
            }
            metrics::gauge!("fedplane_dns_tcp_connections").decrement(1.0);
            drop(permit);
        });
        while conns.try_join_next().is_some() {}
    }
    // Stop accepting at once: a connection left in the kernel's accept queue would wait
    // unanswered until the process exits, then be reset; with the socket closed it is refused.
    drop(listener);
    // Draining: connections answer the query they are reading or answering, then close
    // (bounded by the caller's grace).
    while conns.join_next().await.is_some() {}
}

/// Answers the queries of one connection until the client closes it, it idles, or `cancel`
/// fires. After `cancel` the query being read or answered is finished (its answer written
/// whole), and no further one is started: a client that pipelines without pause must not
/// hold the shutdown. `Ok` means the connection can be closed cleanly.
async fn serve_conn(
    stream: &mut TcpStream,
    responder: &Responder,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let idle = responder.tcp_idle_timeout;
    let mut buf = Vec::with_capacity(512);
    loop {
        // Checked here, not only in the select below: that one prefers the read, so while
        // input is buffered it would never see the cancellation.
        if cancel.is_cancelled() {
            return Ok(());
        }
        let len = tokio::select! {
            // A query whose length has arrived is read whole and answered before a shutdown
            // closes the connection.
            biased;
            r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                Err(_) => return Ok(()), // idle
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => r?,
            },
            () = cancel.cancelled() => return Ok(()),
        };
        buf.resize(usize::from(len), 0);
        match tokio::time::timeout(idle, stream.read_exact(&mut buf)).await {
            Err(_) => return Ok(()),
            Ok(r) => {
                r?;
            }
        }
        let Some(resp) = responder.answer(&buf, Transport::Tcp) else {
            // Not a query we answer: the stream cannot be trusted any more.
            return Ok(());
        };
        let Ok(rlen) = u16::try_from(resp.len()) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(resp.len() + 2);
        out.extend_from_slice(&rlen.to_be_bytes());
        out.extend_from_slice(&resp);
        // A client that sends but never reads must not hold its connection slot forever.
        match tokio::time::timeout(idle, stream.write_all(&out)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        }
    }
}

/// Closes a connection we end: FIN first, so the client reads every answer and then EOF, and
/// what it still sends is read and discarded for at most [`TCP_LINGER`] (no reset).
async fn close_gracefully(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(TCP_LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
