//! The general path's threads, for UDP and TCP alike.
//!
//! The general path ([`crate::answer::respond`]) can cost a thousand times a fast answer (a
//! name with a large subtree), so it never runs where it could hold up the fast path or the
//! async runtime (etcd, TCP I/O, HTTP): queries wait in a queue for the general threads
//! ([`serve_general`], `--udp-general-threads`), which run at a lower priority (nice
//! [`GENERAL_NICE`]) so that under a flood of expensive queries the fast path keeps the CPU.
//!
//! The queue has a part per transport, and TCP goes first, alternating with UDP while both
//! wait (so neither starves the other):
//! - TCP: at most [`TCP_SLOTS`] queries queued or being answered. A connection gets a slot
//!   before it queues its query (it waits for one, up to its idle timeout), and its answer
//!   goes back to the connection's task; a query whose connection stopped waiting is skipped.
//!   A TCP client has done a handshake and waits for its answer, so it is never behind the
//!   whole UDP part, whose sources may be spoofed.
//! - UDP: at most [`GENERAL_QUEUE`] waiting; more are dropped and counted as `busy`. One that
//!   waited longer than [`UDP_STALE`] is dropped unanswered (`stale`): its client has retried
//!   or given up. Answers go out with `sendto` on the receiving socket.
//!
//! When the general threads have stopped (shutdown, or every one of them gone), the queue is
//! dropped with them: queued TCP queries learn it ([`Gone`]) and are answered where they are.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Responder;
use super::udp::UDP_POLL;
use crate::answer::Transport;

/// UDP queries waiting for the general threads, at most; more are dropped (`busy`). About a
/// second's work for one thread on ordinary general-path queries, and a bound on the wait.
pub const GENERAL_QUEUE: usize = 1024;
/// TCP queries queued for or being answered by the general threads, at most.
pub const TCP_SLOTS: usize = 64;
/// A UDP query that waited longer than this is dropped unanswered: stub resolvers retry after
/// about a second, so an answer now would arrive for a question nobody waits for.
pub const UDP_STALE: Duration = Duration::from_secs(1);
/// Nice value of the general threads (the workers keep the process's, usually 0): under
/// contention the scheduler gives them about a tenth of a worker's share.
pub const GENERAL_NICE: i32 = 10;

/// A UDP query waiting for the general threads.
#[derive(Debug)]
struct UdpJob {
    query: Vec<u8>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    queued: Instant,
}

/// A TCP query: its answer (`None`: not answered) goes back; the permit is its slot.
#[derive(Debug)]
struct TcpJob {
    query: Vec<u8>,
    peer: IpAddr,
    reply: oneshot::Sender<Option<Vec<u8>>>,
    _slot: OwnedSemaphorePermit,
}

#[derive(Debug, Default)]
struct Parts {
    tcp: VecDeque<TcpJob>,
    udp: VecDeque<UdpJob>,
    /// The last job taken was TCP: a waiting UDP job goes next.
    udp_turn: bool,
}

/// The queue, owned by the general threads (the senders hold it weakly).
#[derive(Debug, Default)]
pub struct Queue {
    parts: Mutex<Parts>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job, TCP first but alternating with UDP while both wait, waiting up to
    /// `wait`.
    fn next(&self, wait: Duration) -> Option<Job> {
        let mut parts = self.lock();
        if parts.tcp.is_empty() && parts.udp.is_empty() {
            parts = self
                .ready
                .wait_timeout(parts, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        // TCP first, but never twice in a row while UDP waits: a client pipelining general-path
        // queries over TCP must not starve UDP either.
        if (!parts.udp_turn || parts.udp.is_empty())
            && let Some(t) = parts.tcp.pop_front()
        {
            parts.udp_turn = true;
            return Some(Job::Tcp(t));
        }
        parts.udp_turn = false;
        parts.udp.pop_front().map(Job::Udp)
    }
}

#[derive(Debug)]
enum Job {
    Udp(UdpJob),
    Tcp(TcpJob),
}

/// The general threads are gone (the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// The sending side, shared by the UDP workers and the TCP connections.
#[derive(Debug, Clone)]
pub struct General {
    queue: Weak<Queue>,
    tcp_slots: Arc<Semaphore>,
}

/// A new queue: the threads own the `Arc`; once the last of them drops it, the senders see
/// [`Gone`].
pub fn queue() -> (General, Arc<Queue>) {
    let queue = Arc::new(Queue::default());
    (
        General {
            queue: Arc::downgrade(&queue),
            tcp_slots: Arc::new(Semaphore::new(TCP_SLOTS)),
        },
        queue,
    )
}

impl General {
    /// Queues a UDP query, answered on `socket` to `peer`. `false`: the UDP part is full (or
    /// the threads are gone), the query is dropped.
    pub fn udp(&self, socket: &Arc<UdpSocket>, peer: SocketAddr, query: &[u8]) -> bool {
        let Some(queue) = self.queue.upgrade() else {
            return false;
        };
        {
            let mut parts = queue.lock();
            if parts.udp.len() >= GENERAL_QUEUE {
                return false;
            }
            parts.udp.push_back(UdpJob {
                query: query.to_vec(),
                socket: socket.clone(),
                peer,
                queued: Instant::now(),
            });
        }
        queue.ready.notify_one();
        true
    }

    /// Waits for a TCP slot (cancel-safe: dropping the wait gives nothing up).
    pub async fn tcp_slot(&self) -> Result<OwnedSemaphorePermit, Gone> {
        self.tcp_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Gone)
    }

    /// Answers a TCP query on a general thread, in the slot `slot`: `Ok(None)` when it is not
    /// answered (not a query), `Err(Gone)` when the threads have stopped.
    pub async fn tcp(
        &self,
        slot: OwnedSemaphorePermit,
        query: Vec<u8>,
        peer: IpAddr,
    ) -> Result<Option<Vec<u8>>, Gone> {
        let queue = self.queue.upgrade().ok_or(Gone)?;
        let (reply, answer) = oneshot::channel();
        queue.lock().tcp.push_back(TcpJob {
            query,
            peer,
            reply,
            _slot: slot,
        });
        queue.ready.notify_one();
        drop(queue); // held by the threads only: their end drops the job, and we learn it
        answer.await.map_err(|_| Gone)
    }
}

/// Lowers the calling thread's priority to nice [`GENERAL_NICE`] (on Linux the nice value is
/// per thread). Raising a nice value needs no privilege.
fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, GENERAL_NICE) {
        warn!(error = %e, "cannot lower the priority of a general-path thread; it competes with the fast path");
    }
}

/// One general-path thread: answers queued queries at a lower priority until `cancel`. A
/// query whose answer panics is dropped, counted and logged; the thread goes on.
pub fn serve_general(queue: &Queue, responder: &Responder, cancel: &CancellationToken) {
    lower_priority();
    let dropped = |reason: &'static str| metrics::counter!("fedplane_dns_dropped_total", "transport" => "udp", "reason" => reason);
    let (send_error, stale) = (dropped("send_error"), dropped("stale"));
    let panicked = metrics::counter!("fedplane_dns_answer_panics_total");
    let answer = |query: &[u8], transport, peer| {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            responder.answer(query, transport, peer)
        }))
        .unwrap_or_else(|_| {
            panicked.increment(1);
            error!(
                query = %hex(query),
                "answering a query panicked: dropped (please report this query)"
            );
            None
        })
    };
    while !cancel.is_cancelled() {
        match queue.next(UDP_POLL) {
            None => {}
            Some(Job::Udp(job)) => {
                if job.queued.elapsed() > UDP_STALE {
                    stale.increment(1);
                    continue;
                }
                if crate::update::is_update(&job.query) {
                    let to = super::update::ReplyTo::Udp(job.socket.clone(), job.peer);
                    responder.update(&job.query, job.peer.ip(), to);
                    continue;
                }
                if let Some(resp) = answer(&job.query, Transport::Udp, job.peer.ip())
                    && job.socket.send_to(&resp, job.peer).is_err()
                {
                    send_error.increment(1);
                }
            }
            // Its connection gave up waiting (or is gone): nobody to answer.
            Some(Job::Tcp(job)) if job.reply.is_closed() => {}
            Some(Job::Tcp(job)) => {
                let _ = job.reply.send(answer(&job.query, Transport::Tcp, job.peer));
            }
        }
    }
}

/// A query as hex, for the log line of a query that panicked.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// Waits (at most 5 s) until `n` TCP queries are queued.
    async fn queued_tcp(queue: &Queue, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while queue.lock().tcp.len() < n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("queued");
    }

    fn socket() -> (Arc<UdpSocket>, SocketAddr) {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
        let peer = socket.local_addr().expect("addr");
        (socket, peer)
    }

    #[test]
    fn the_udp_part_of_the_queue_is_bounded_and_freed_as_the_threads_take_jobs() {
        let (general, queue) = queue();
        let (socket, peer) = socket();
        for _ in 0..GENERAL_QUEUE {
            assert!(general.udp(&socket, peer, b"q"));
        }
        assert!(!general.udp(&socket, peer, b"q"), "full");
        assert!(matches!(queue.next(Duration::ZERO), Some(Job::Udp(_))));
        assert!(general.udp(&socket, peer, b"q"), "room for one again");
    }

    #[tokio::test]
    async fn tcp_queries_go_before_every_waiting_udp_one() {
        let (general, queue) = queue();
        let (socket, peer) = socket();
        while general.udp(&socket, peer, b"q") {}
        let slot = general.tcp_slot().await.expect("a slot");
        let tcp = tokio::spawn({
            let general = general.clone();
            async move { general.tcp(slot, b"tcp".to_vec(), LOCAL).await }
        });
        // Once it is queued (behind every UDP query), it is the next job.
        queued_tcp(&queue, 1).await;
        let Some(Job::Tcp(job)) = queue.next(Duration::ZERO) else {
            panic!("the TCP query comes first")
        };
        assert_eq!(job.query, b"tcp");
        job.reply.send(Some(b"answer".to_vec())).expect("waiting");
        assert_eq!(tcp.await.expect("join"), Ok(Some(b"answer".to_vec())));
    }

    #[tokio::test]
    async fn while_both_wait_tcp_and_udp_take_turns() {
        let (general, queue) = queue();
        let (socket, peer) = socket();
        for _ in 0..3 {
            assert!(general.udp(&socket, peer, b"u"));
        }
        let mut asked = Vec::new();
        for _ in 0..3 {
            let slot = general.tcp_slot().await.expect("a slot");
            let general = general.clone();
            asked.push(tokio::spawn(async move {
                general.tcp(slot, b"t".to_vec(), LOCAL).await
            }));
        }
        queued_tcp(&queue, 3).await;
        let order: String = std::iter::from_fn(|| queue.next(Duration::ZERO))
            .map(|j| match j {
                Job::Tcp(_) => 'T',
                Job::Udp(_) => 'U',
            })
            .collect();
        assert_eq!(order, "TUTUTU");
    }

    #[tokio::test]
    async fn tcp_slots_are_bounded_and_come_back_with_the_answer() {
        let (general, queue) = queue();
        let mut slots = Vec::new();
        for _ in 0..TCP_SLOTS {
            slots.push(general.tcp_slot().await.expect("a slot"));
        }
        let waiting = tokio::time::timeout(Duration::from_millis(50), general.tcp_slot()).await;
        assert!(waiting.is_err(), "every slot taken");
        let asked = tokio::spawn({
            let general = general.clone();
            let slot = slots.pop().expect("one");
            async move { general.tcp(slot, b"q".to_vec(), LOCAL).await }
        });
        queued_tcp(&queue, 1).await;
        let Some(Job::Tcp(job)) = queue.next(Duration::ZERO) else {
            panic!("the TCP job")
        };
        let TcpJob { reply, _slot, .. } = job;
        drop(_slot);
        reply.send(None).expect("waiting");
        assert_eq!(asked.await.expect("join"), Ok(None));
        let again = tokio::time::timeout(Duration::from_secs(5), general.tcp_slot()).await;
        assert!(matches!(again, Ok(Ok(_))), "the slot came back");
    }

    #[tokio::test]
    async fn queued_tcp_queries_learn_when_the_threads_are_gone() {
        let (general, queue) = queue();
        let slot = general.tcp_slot().await.expect("a slot");
        let asked = tokio::spawn({
            let general = general.clone();
            async move { general.tcp(slot, b"q".to_vec(), LOCAL).await }
        });
        // Let it queue, then the threads end (their Arc goes, with the queued job).
        queued_tcp(&queue, 1).await;
        drop(queue);
        assert_eq!(asked.await.expect("join"), Err(Gone));
        let slot = general.tcp_slot().await.expect("a slot");
        assert_eq!(general.tcp(slot, b"q".to_vec(), LOCAL).await, Err(Gone));
        let (socket, peer) = socket();
        assert!(!general.udp(&socket, peer, b"q"));
    }
}
