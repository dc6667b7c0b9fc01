//! DNS over TCP (compiled answers at once, the rest on the general threads,
//! [`super::general`]):
//! length-prefixed messages, several queries per connection answered in order (pipelining),
//! idle and write timeouts, and the connection table ([`super::conns`]): every connection is
//! accepted at once and then admitted, evicting the connection idle longest at the cap, or
//! refused: closed at once when every connection is busy, held open, unread, for a while and
//! then closed when its client is over the per-client cap ([`super::conns::Held`]). On shutdown the listeners close at once
//! and connections finish the query they are reading or answering, then close with a FIN.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Responder;
use super::conns::{ConnTable, Held, Reject};
use super::general::{General, Gone};
use super::xfr::XfrReply;
use crate::answer::Transport;
use crate::{fast, transfer};

/// Pause after a failed accept (EMFILE and the like), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// After we close a TCP connection (FIN), how long we read and discard what the client still
/// sends. Closing with unread input resets the connection, and a reset can destroy answers the
/// client has not read yet; a client that got our FIN closes at once, so 1 s is plenty.
const TCP_LINGER: Duration = Duration::from_secs(1);

/// How long the accept loop waits for an evicted connection to close (it is idle, so it closes
/// at once; this only bounds a stuck task).
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// Closes a held connection: what its client sent is read and discarded first (it is small:
/// the kernel's buffer), so the close is a FIN, not a reset.
fn close_held(stream: TcpStream) {
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// Sleeps until `at`, forever if `None`.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// How to close a connection from outside: cancel `close`, then await `closed`.
#[derive(Debug, Clone, Default)]
pub struct Evict {
    close: CancellationToken,
    closed: CancellationToken,
}

/// The connection table shared by every TCP listener.
pub type Conns = Arc<Mutex<ConnTable<Evict>>>;

fn lock(conns: &Conns) -> std::sync::MutexGuard<'_, ConnTable<Evict>> {
    conns
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts connections on `listener` until `cancel`, then waits for its connections to end.
/// Connections refused for the per-client cap are held, unread, for
/// [`super::conns::REFUSED_HOLD`], at most `held_cap` of them ([`Held`]), then closed; those
/// refused because every connection is busy are closed at once (the client can try another
/// server).
pub async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    conns: Conns,
    general: General,
    held_cap: usize,
    cancel: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    let mut held = Held::new(held_cap);
    let evicted = metrics::counter!("fedplane_dns_tcp_evicted_total");
    let held_gauge = metrics::gauge!("fedplane_dns_tcp_held_connections");
    loop {
        let next_release = held.next_release();
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            () = until(next_release) => {
                held.release(Instant::now()).for_each(close_held);
                held_gauge.set(held.len() as f64);
                continue;
            }
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
        let evict = Evict::default();
        let now = Instant::now();
        let admitted = lock(&conns).admit(peer.ip(), now, evict.clone());
        let id = match admitted {
            Ok((id, victim)) => {
                if let Some(victim) = victim {
                    evicted.increment(1);
                    victim.close.cancel();
                    // Its descriptor is released before the next accept, so the connections
                    // never hold more descriptors than the cap.
                    let _ = tokio::time::timeout(EVICT_WAIT, victim.closed.cancelled()).await;
                }
                id
            }
            Err(reason) => {
                metrics::counter!("fedplane_dns_tcp_rejected_total", "reason" => reason.as_str())
                    .increment(1);
                if reason == Reject::PerClient {
                    // Held, not closed: a client told at once reconnects at once.
                    if let Some(oldest) = held.hold(now, stream) {
                        close_held(oldest);
                    }
                    held_gauge.set(held.len() as f64);
                }
                // Every connection busy: closed at once, so the client tries another server.
                continue;
            }
        };
        let conn = Conn::new(id, peer.ip(), conns.clone(), evict.close);
        let closed = evict.closed;
        let (responder, general, cancel) = (responder.clone(), general.clone(), cancel.clone());
        tasks.spawn(async move {
            // Dropped last, after the stream: tells an evicting accept loop it is closed.
            let _closed = closed.drop_guard();
            // Leaves the table when the task ends, however (a panic too).
            let conn = conn;
            let mut stream = stream;
            match serve_conn(&mut stream, &responder, &general, &conn, &cancel).await {
                Ok(End::Evicted) => {
                    // Idle, so nothing is unread: the FIN and the close cost no reset (a
                    // connection evicted partway through sending a query may get one: it has
                    // no answer to lose).
                    let _ = stream.shutdown().await;
                }
                Ok(End::Clean) => {
                    // Evicted while lingering: the slot is wanted now, stop reading.
                    tokio::select! {
                        () = close_gracefully(stream) => {}
                        () = conn.close.cancelled() => {}
                    }
                }
                Err(e) => debug!(%peer, error = %e, "tcp connection closed with error"),
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    // Stop accepting at once: a connection left in the kernel's accept queue would wait
    // unanswered until the process exits, then be reset; with the socket closed it is refused.
    // The held ones are closed with it.
    drop(listener);
    drop(held);
    held_gauge.set(0.0);
    // Draining: connections answer the query they are reading or answering, then close
    // (bounded by the caller's grace).
    while tasks.join_next().await.is_some() {}
}

/// One connection's place in the table, and in the connections gauge, until it is dropped.
struct Conn {
    id: u64,
    /// The client's address (answers may depend on its locality).
    peer: IpAddr,
    conns: Conns,
    /// Cancelled when the connection is evicted to make room.
    close: CancellationToken,
}

impl Conn {
    fn new(id: u64, peer: IpAddr, conns: Conns, close: CancellationToken) -> Self {
        metrics::gauge!("fedplane_dns_tcp_connections").increment(1.0);
        Self {
            id,
            peer,
            conns,
            close,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        lock(&self.conns).remove(self.id);
        metrics::gauge!("fedplane_dns_tcp_connections").decrement(1.0);
    }
}

/// How a connection ended without an I/O error.
enum End {
    /// The client closed, it idled, or the server is shutting down.
    Clean,
    /// Evicted while idle to make room for a new connection.
    Evicted,
}

/// Answers the queries of one connection until the client closes it, it idles, it is
/// evicted, or `cancel` fires. After `cancel` the query being read or answered is finished
/// (its answer written whole), and no further one is started: a client that pipelines
/// without pause must not hold the shutdown.
async fn serve_conn(
    stream: &mut TcpStream,
    responder: &Responder,
    general: &General,
    conn: &Conn,
    cancel: &CancellationToken,
) -> std::io::Result<End> {
    stream.set_nodelay(true)?;
    let configured = responder.tcp_idle_timeout;
    let mut buf = Vec::with_capacity(512);
    loop {
        // Checked here, not only in the select below: that one prefers the read, so while
        // input is buffered it would never see the cancellation.
        if cancel.is_cancelled() {
            return Ok(End::Clean);
        }
        if conn.close.is_cancelled() {
            return Ok(End::Evicted);
        }
        let idle = lock(&conn.conns).idle(conn.id, Instant::now(), configured);
        let len = tokio::select! {
            // A query whose length has arrived is read whole and answered before a shutdown
            // or an eviction closes the connection.
            biased;
            r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                Err(_) => return Ok(End::Clean), // idle
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(End::Clean),
                Ok(r) => r?,
            },
            () = cancel.cancelled() => return Ok(End::Clean),
            () = conn.close.cancelled() => return Ok(End::Evicted),
        };
        // The body is read under the same (pressure-shortened) timeout as the length, and the
        // connection stays evictable meanwhile: a client that sends a length and then nothing
        // must not hold its slot as busy. A shutdown waits for it (bounded by that timeout
        // and the shutdown grace).
        buf.resize(usize::from(len), 0);
        tokio::select! {
            biased;
            r = tokio::time::timeout(idle, stream.read_exact(&mut buf)) => match r {
                Err(_) => return Ok(End::Clean),
                Ok(r) => {
                    r?;
                }
            },
            () = conn.close.cancelled() => return Ok(End::Evicted),
        }
        // Busy from here until its answer is written: not evicted with a query in hand.
        lock(&conn.conns).busy(conn.id);
        if transfer::transfer_type(&buf).is_some() {
            // A zone transfer: every message written, in order, under the write timeout each.
            let sent = match responder.transfer(&buf, Transport::Tcp, conn.peer) {
                XfrReply::One(msg) => write_framed(stream, &msg, configured).await?,
                XfrReply::Stream(mut rx) => {
                    let mut ok = true;
                    while let Some(msg) = rx.recv().await {
                        if !write_framed(stream, &msg, configured).await? {
                            ok = false;
                            break;
                        }
                    }
                    ok
                }
            };
            if !sent {
                return Ok(End::Clean);
            }
            continue;
        }
        let mut out = vec![0u8; 2 + fast::MAX_FAST_RESPONSE];
        if crate::update::is_update(&buf) {
            // Applied by the updater, within the idle timeout (etcd answers in milliseconds).
            let (tx, rx) = tokio::sync::oneshot::channel();
            responder.update(&buf, conn.peer, super::update::ReplyTo::Tcp(tx));
            let Ok(Ok(resp)) = tokio::time::timeout(configured, rx).await else {
                return Ok(End::Clean);
            };
            out.truncate(2);
            out.extend_from_slice(&resp);
        } else if let Some(n) = responder.fast_tcp(&buf, &mut out[2..], conn.peer) {
            // A compiled answer: as cheap here as over UDP.
            out.truncate(2 + n);
        } else {
            // On a general thread, off the runtime: a slot, then the answer, within the idle
            // timeout; past it the server is overloaded, and the connection is closed (with a
            // FIN) so that the client retries, elsewhere if it can.
            let asked = async {
                match general.tcp_slot().await {
                    Ok(slot) => general.tcp(slot, buf.clone(), conn.peer).await,
                    Err(gone) => Err(gone),
                }
            };
            let resp = match tokio::time::timeout(configured, asked).await {
                Ok(Ok(resp)) => resp,
                // The general threads have stopped (shutdown): answered here.
                Ok(Err(Gone)) => responder.answer(&buf, Transport::Tcp, conn.peer),
                Err(_) => return Ok(End::Clean),
            };
            let Some(resp) = resp else {
                // Not a query we answer: the stream cannot be trusted any more.
                return Ok(End::Clean);
            };
            out.truncate(2);
            out.extend_from_slice(&resp);
        }
        let Ok(rlen) = u16::try_from(out.len() - 2) else {
            return Ok(End::Clean);
        };
        out[..2].copy_from_slice(&rlen.to_be_bytes());
        // A client that sends but never reads must not hold its connection slot forever.
        match tokio::time::timeout(configured, stream.write_all(&out)).await {
            Ok(r) => r?,
            Err(_) => return Ok(End::Clean),
        }
    }
}

/// Writes one message with its length, within `timeout`; `false` when the client does not
/// read it in time (or it is too long to frame).
async fn write_framed(
    stream: &mut TcpStream,
    msg: &[u8],
    timeout: Duration,
) -> std::io::Result<bool> {
    let Ok(len) = u16::try_from(msg.len()) else {
        return Ok(false);
    };
    let mut framed = Vec::with_capacity(2 + msg.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    match tokio::time::timeout(timeout, stream.write_all(&framed)).await {
        Ok(r) => r.map(|()| true),
        Err(_) => Ok(false),
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
