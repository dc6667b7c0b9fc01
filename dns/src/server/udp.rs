//! DNS over UDP: receive workers that answer the fast path inline, and general-path threads
//! behind a bounded queue.
//!
//! A worker ([`serve_udp`], `--workers` per listen address, each on its own SO_REUSEPORT
//! socket) receives up to [`UDP_BATCH`] datagrams with one `recvmmsg`, loads the published
//! [`crate::sync::Served`] once for the batch, and for each datagram: drops it if it comes
//! from port 0 (no reply can reach it); asks response rate limiting, when on, whether to
//! answer, slip or drop; answers from the compiled table ([`fast::respond_fast`]); or else
//! queues it for the general threads ([`super::general`]; its UDP share full → dropped and
//! counted as `busy`). The batch's answers go out with one `sendmmsg`; a message the kernel
//! refuses (it stops at the first) is counted and skipped and the rest are sent
//! ([`send_all`]).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use std::io::{IoSlice, IoSliceMut};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Responder;
use super::general::General;
use super::rrl::{self, Action, Limiter};
use crate::fast;

/// Datagrams received (and answered) per system call.
pub const UDP_BATCH: usize = 32;
/// Receive buffer per datagram. A larger datagram is no DNS query we answer: dropped, counted.
const UDP_MAX_QUERY: usize = 4096;
/// How long a receive loop or general thread blocks before it checks for shutdown.
pub const UDP_POLL: Duration = Duration::from_millis(200);
fn to_std(peer: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = peer.as_sockaddr_in() {
        Some(SocketAddr::V4((*v4).into()))
    } else {
        peer.as_sockaddr_in6()
            .map(|v6| SocketAddr::V6((*v6).into()))
    }
}

/// Sends messages `0..n` through `send(from)`, which sends from message `from` on and returns
/// how many went out (`sendmmsg` stops at the first message it cannot send, and fails only
/// when that is the first). A message that cannot be sent is skipped; returns how many were.
pub fn send_all(n: usize, mut send: impl FnMut(usize) -> Result<usize, Errno>) -> usize {
    let (mut from, mut failed) = (0, 0);
    while from < n {
        match send(from) {
            Ok(sent) if sent > 0 => from += sent,
            Err(Errno::EINTR) => {}
            Ok(_) | Err(_) => {
                failed += 1;
                from += 1;
            }
        }
    }
    failed
}

/// Sends `replies[i]` to `peers[i]` with as few `sendmmsg` calls as the kernel allows; returns
/// how many could not be sent.
pub fn send_batch(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    replies: &[[IoSlice<'_>; 1]],
    peers: &[Option<SockaddrStorage>],
) -> usize {
    send_all(replies.len(), |from| {
        sendmmsg(
            fd,
            headers,
            &replies[from..],
            &peers[from..replies.len()],
            [],
            MsgFlags::empty(),
        )
        .map(Iterator::count)
    })
}

/// What a worker shares with the rest of the server.
#[derive(Debug)]
pub struct UdpShared {
    /// Answers.
    pub responder: Arc<Responder>,
    /// The general threads' queue.
    pub general: General,
    /// Response rate limiting, when on.
    pub rrl: Option<Arc<Limiter>>,
}

/// One UDP receive loop on its own thread and socket (see the module doc).
pub fn serve_udp(socket: Arc<UdpSocket>, shared: &UdpShared, cancel: &CancellationToken) {
    if let Err(e) = socket.set_read_timeout(Some(UDP_POLL)) {
        warn!(error = %e, "cannot set the UDP receive timeout; shutdown may wait for a query");
    }
    let responder = &shared.responder;
    let fd = socket.as_raw_fd();
    let out_size = usize::from(responder.opts.max_udp_payload).max(fast::MAX_FAST_RESPONSE);
    let mut bufs = vec![[0u8; UDP_MAX_QUERY]; UDP_BATCH];
    let mut outs = vec![vec![0u8; out_size]; UDP_BATCH];
    let mut out_lens = [0usize; UDP_BATCH];
    let mut peers: Vec<Option<SockaddrStorage>> = vec![None; UDP_BATCH];
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    // Per worker: no shared counter lookups on the hot path.
    let fast_answers = [0, 3, 5].map(|rcode| metrics::counter!("fedplane_dns_responses_total", "transport" => "udp", "rcode" => super::fast_rcode_label(rcode)));
    let dropped = |reason: &'static str| metrics::counter!("fedplane_dns_dropped_total", "transport" => "udp", "reason" => reason);
    let (oversized, port_zero, busy, send_error) = (
        dropped("oversized"),
        dropped("port_zero"),
        dropped("busy"),
        dropped("send_error"),
    );
    let rrl_counter =
        |a: Action| metrics::counter!("fedplane_dns_rrl_total", "action" => a.as_str());
    let rrl_counters = [Action::Pass, Action::Slip, Action::Drop].map(rrl_counter);
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
            let now = shared.rrl.as_ref().map(|_| Instant::now());
            for msg in received {
                let (Some(peer), Some(data)) = (msg.address, msg.iovs().next()) else {
                    continue;
                };
                if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                    oversized.increment(1);
                    continue;
                }
                let Some(peer_addr) = to_std(&peer) else {
                    continue;
                };
                if peer_addr.port() == 0 {
                    // Linux cannot send to port 0 (EINVAL), and nobody listens there.
                    port_zero.increment(1);
                    continue;
                }
                let query = &data[..msg.bytes.min(data.len())];
                let out = &mut outs[replies];
                if let (Some(rrl), Some(now)) = (&shared.rrl, now)
                    && query.len() >= 12
                    && query[2] & 0x80 == 0
                {
                    let action = rrl.check(peer_addr.ip(), now);
                    rrl_counters[action as usize].increment(1);
                    match action {
                        Action::Pass => {}
                        Action::Drop => continue,
                        Action::Slip => {
                            if let Some(n) = rrl::truncated_reply(query, out) {
                                out_lens[replies] = n;
                                peers[replies] = Some(peer);
                                replies += 1;
                            }
                            continue;
                        }
                    }
                }
                rotation = rotation.wrapping_add(1);
                match fast::respond_fast_to(
                    &served.records,
                    &served.fast,
                    query,
                    responder.opts,
                    rotation,
                    out,
                    crate::answer::Transport::Udp,
                    responder.asker(peer_addr.ip()),
                ) {
                    Some(n) => {
                        // The fast path answers NOERROR, NXDOMAIN or REFUSED.
                        let i = match out[3] & 0x0F {
                            3 => 1,
                            5 => 2,
                            _ => 0,
                        };
                        fast_answers[i].increment(1);
                        out_lens[replies] = n;
                        peers[replies] = Some(peer);
                        replies += 1;
                    }
                    None => {
                        if !shared.general.udp(&socket, peer_addr, query) {
                            busy.increment(1);
                        }
                    }
                }
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
        let failed = send_batch(fd, &mut send_headers, &slices, &peers[..replies]);
        if failed > 0 {
            send_error.increment(failed as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_all_skips_what_cannot_be_sent_and_sends_the_rest() {
        // 6 messages; the kernel refuses #0 and #3 (like sendmmsg: stops before a refused one,
        // fails when it is the first).
        let bad = [0, 3];
        let mut calls = Vec::new();
        let failed = send_all(6, |from| {
            calls.push(from);
            if bad.contains(&from) {
                return Err(Errno::EINVAL);
            }
            Ok((from..6).take_while(|i| !bad.contains(i)).count())
        });
        assert_eq!(failed, 2);
        assert_eq!(calls, [0, 1, 3, 4]);
        let mut interrupted = false;
        assert_eq!(
            send_all(2, |_| if interrupted {
                Ok(2)
            } else {
                interrupted = true;
                Err(Errno::EINTR)
            }),
            0,
            "EINTR is retried"
        );
    }

    #[test]
    fn a_reply_the_kernel_refuses_does_not_cost_the_rest_of_the_batch() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let to = |port: u16| {
            Some(SockaddrStorage::from(SocketAddr::from((
                [127, 0, 0, 1],
                port,
            ))))
        };
        let good = client.local_addr().expect("addr").port();
        // Port 0 is refused with EINVAL: first, in the middle and last.
        let ports = [0, good, good, 0, good, good, 0];
        let peers: Vec<_> = ports.iter().map(|&p| to(p)).collect();
        let payloads: Vec<[u8; 1]> = (0..ports.len())
            .map(|i| [u8::try_from(i).expect("small")])
            .collect();
        let slices: Vec<[IoSlice<'_>; 1]> = payloads.iter().map(|p| [IoSlice::new(p)]).collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
        let failed = send_batch(server.as_raw_fd(), &mut headers, &slices, &peers);
        assert_eq!(failed, 3);
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        for _ in 0..4 {
            let (n, _) = client.recv_from(&mut buf).expect("a reply");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, [1, 2, 4, 5]);
    }
}
