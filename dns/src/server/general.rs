//! The general path's threads, for UDP and TCP alike.
//!
//! The general path ([`crate::answer::respond`]) can cost a thousand times a fast answer (a
//! name with a large subtree), so it never runs where it could hold up the fast path or the
//! async runtime (etcd, TCP I/O, HTTP): queries wait in one queue for the general threads
//! ([`serve_general`], `--udp-general-threads`), which run at a lower priority (nice
//! [`GENERAL_NICE`]) so that under a flood of expensive queries the fast path keeps the CPU.
//!
//! The queue is bounded per transport. UDP queries: at most [`GENERAL_QUEUE`] waiting; more
//! are dropped and counted as `busy` (the client retries). TCP queries: at most
//! [`TCP_SLOTS`] queued or being answered; a connection with a query waits for a slot (it
//! holds one query at a time, and its client waits for the answer anyway), so a UDP flood
//! cannot crowd TCP out of the queue, nor TCP UDP. UDP answers are sent with `sendto` on the
//! receiving socket, TCP answers go back to the connection's task.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Responder;
use super::udp::UDP_POLL;
use crate::answer::Transport;

/// UDP queries waiting for the general threads, at most; more are dropped (`busy`). About a
/// second's work for one thread on ordinary general-path queries, and a bound on the wait.
pub const GENERAL_QUEUE: usize = 1024;
/// TCP queries queued for or being answered by the general threads, at most.
pub const TCP_SLOTS: usize = 64;
/// Nice value of the general threads (the workers keep the process's, usually 0): under
/// contention the scheduler gives them about a tenth of a worker's share.
pub const GENERAL_NICE: i32 = 10;

/// Where an answer goes.
#[derive(Debug)]
enum ReplyTo {
    Udp {
        socket: Arc<UdpSocket>,
        peer: SocketAddr,
    },
    /// Back to the connection's task (`None`: not answered); the permit is its slot.
    Tcp {
        reply: oneshot::Sender<Option<Vec<u8>>>,
        _slot: OwnedSemaphorePermit,
    },
}

/// One query for the general path.
#[derive(Debug)]
pub struct Job {
    query: Vec<u8>,
    to: ReplyTo,
}

/// The general threads are gone (the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// The sending side of the queue, shared by the UDP workers and the TCP connections.
#[derive(Debug, Clone)]
pub struct General {
    tx: SyncSender<Job>,
    udp_waiting: Arc<AtomicUsize>,
    tcp_slots: Arc<Semaphore>,
}

/// The receiving side, shared by the general threads.
#[derive(Debug)]
pub struct Queue {
    rx: Mutex<Receiver<Job>>,
    udp_waiting: Arc<AtomicUsize>,
}

/// A new queue.
pub fn queue() -> (General, Queue) {
    // Room for both shares, so a send within its share never finds the channel full.
    let (tx, rx) = std::sync::mpsc::sync_channel(GENERAL_QUEUE + TCP_SLOTS);
    let udp_waiting = Arc::new(AtomicUsize::new(0));
    (
        General {
            tx,
            udp_waiting: udp_waiting.clone(),
            tcp_slots: Arc::new(Semaphore::new(TCP_SLOTS)),
        },
        Queue {
            rx: Mutex::new(rx),
            udp_waiting,
        },
    )
}

impl General {
    /// Queues a UDP query, answered on `socket` to `peer`. `false`: the UDP share of the queue
    /// is full (or the threads are gone), the query is dropped.
    pub fn udp(&self, socket: &Arc<UdpSocket>, peer: SocketAddr, query: &[u8]) -> bool {
        if self.udp_waiting.fetch_add(1, Ordering::AcqRel) >= GENERAL_QUEUE {
            self.udp_waiting.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        let job = Job {
            query: query.to_vec(),
            to: ReplyTo::Udp {
                socket: socket.clone(),
                peer,
            },
        };
        if self.tx.try_send(job).is_err() {
            self.udp_waiting.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Answers a TCP query on a general thread, once a slot is free: `Ok(None)` when it is not
    /// answered (not a query), `Err(Gone)` when the threads have stopped.
    pub async fn tcp(&self, query: Vec<u8>) -> Result<Option<Vec<u8>>, Gone> {
        let slot = self
            .tcp_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Gone)?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            query,
            to: ReplyTo::Tcp { reply, _slot: slot },
        };
        self.tx.try_send(job).map_err(|_| Gone)?;
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

/// One general-path thread: answers queued queries at a lower priority until `cancel`.
pub fn serve_general(queue: &Queue, responder: &Responder, cancel: &CancellationToken) {
    lower_priority();
    let send_error = metrics::counter!("fedplane_dns_dropped_total", "transport" => "udp", "reason" => "send_error");
    while !cancel.is_cancelled() {
        // Whoever holds the lock waits for the next job; the others wait for the lock.
        let job = {
            let rx = queue
                .rx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            rx.recv_timeout(UDP_POLL)
        };
        let job = match job {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match job.to {
            ReplyTo::Udp { socket, peer } => {
                queue.udp_waiting.fetch_sub(1, Ordering::AcqRel);
                if let Some(resp) = responder.answer(&job.query, Transport::Udp)
                    && socket.send_to(&resp, peer).is_err()
                {
                    send_error.increment(1);
                }
            }
            ReplyTo::Tcp { reply, _slot } => {
                // The connection may be gone (evicted, shut down): nobody to tell.
                let _ = reply.send(responder.answer(&job.query, Transport::Tcp));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_udp_share_of_the_queue_is_bounded_and_freed_as_the_threads_take_jobs() {
        let (general, queue) = queue();
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
        let peer = socket.local_addr().expect("addr");
        for _ in 0..GENERAL_QUEUE {
            assert!(general.udp(&socket, peer, b"q"));
        }
        assert!(!general.udp(&socket, peer, b"q"), "full");
        let rx = queue.rx.lock().expect("lock");
        rx.recv().expect("a job");
        queue.udp_waiting.fetch_sub(1, Ordering::AcqRel);
        assert!(general.udp(&socket, peer, b"q"), "room for one again");
    }

    #[tokio::test]
    async fn tcp_queries_get_their_own_share_even_when_udp_fills_its_own() {
        let (general, queue) = queue();
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
        let peer = socket.local_addr().expect("addr");
        while general.udp(&socket, peer, b"q") {}
        let tcp = tokio::spawn({
            let general = general.clone();
            async move { general.tcp(b"tcp".to_vec()).await }
        });
        // The TCP job is queued behind the UDP ones; take jobs until it shows up, answer it.
        let job = tokio::task::spawn_blocking(move || {
            let rx = queue.rx.lock().expect("lock");
            loop {
                let job = rx.recv().expect("a job");
                if matches!(job.to, ReplyTo::Tcp { .. }) {
                    return job;
                }
            }
        })
        .await
        .expect("join");
        assert_eq!(job.query, b"tcp");
        let ReplyTo::Tcp { reply, .. } = job.to else {
            unreachable!("matched above")
        };
        reply.send(Some(b"answer".to_vec())).expect("waiting");
        assert_eq!(tcp.await.expect("join"), Ok(Some(b"answer".to_vec())));
        drop(general);
    }

    #[tokio::test]
    async fn a_tcp_query_learns_when_the_threads_are_gone() {
        let (general, queue) = queue();
        drop(queue);
        assert_eq!(general.tcp(b"q".to_vec()).await, Err(Gone));
    }
}
