//! DNS over UDP and TCP: sockets in, [`crate::answer::respond`] in the middle, sockets out.
//!
//! UDP: per listen address, `workers` receive loops, each on its own SO_REUSEPORT socket so the
//! kernel spreads datagrams over them. TCP: length-prefixed messages, several queries per
//! connection answered in order (pipelining), an idle timeout, and a bound on connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::answer::{AnswerOptions, Outcome, Transport, respond};
use crate::sync::Shared;

/// Open TCP connections at most; further ones wait in the kernel's accept queue. DNS over TCP
/// is the fallback path, so this is generous for one pod and still bounds memory.
pub const MAX_TCP_CONNECTIONS: usize = 1024;
/// Pause after a failed accept (EMFILE and the like), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
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
    /// A responder over the shared snapshot.
    pub fn new(shared: Arc<Shared>, opts: AnswerOptions, tcp_idle_timeout: Duration) -> Self {
        Self {
            shared,
            opts,
            tcp_idle_timeout,
            rotation: AtomicUsize::new(0),
        }
    }

    fn answer(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let snap = self.shared.snapshot.load();
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        match respond(
            &snap,
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
            udp.push(UdpSocket::from_std(u.into()).map_err(|e| bind_err("udp", e))?);
        }
        tcp.push(TcpListener::from_std(t.into()).map_err(|e| bind_err("tcp", e))?);
        bound.push(local);
    }
    for socket in udp {
        tasks.spawn(serve_udp(socket, responder.clone(), cancel.clone()));
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

async fn serve_udp(socket: UdpSocket, responder: Arc<Responder>, cancel: CancellationToken) {
    // A full datagram: a cut-off query would parse wrongly.
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier sends surface here; they concern one peer only.
                    debug!(error = %e, "udp receive error");
                    continue;
                }
            },
        };
        if let Some(resp) = responder.answer(&buf[..len], Transport::Udp)
            && let Err(e) = socket.send_to(&resp, peer).await
        {
            debug!(%peer, error = %e, "udp send failed");
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
        let (stream, peer) = tokio::select! {
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
            if let Err(e) = serve_conn(stream, &responder, &cancel).await {
                debug!(%peer, error = %e, "tcp connection closed with error");
            }
            metrics::gauge!("fedplane_dns_tcp_connections").decrement(1.0);
            drop(permit);
        });
        while conns.try_join_next().is_some() {}
    }
    // Draining: connections finish the query they are on (bounded by the caller's grace).
    while conns.join_next().await.is_some() {}
}

async fn serve_conn(
    mut stream: TcpStream,
    responder: &Responder,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let idle = responder.tcp_idle_timeout;
    let mut buf = Vec::with_capacity(512);
    loop {
        let len = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                Err(_) => return Ok(()), // idle
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => r?,
            },
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
