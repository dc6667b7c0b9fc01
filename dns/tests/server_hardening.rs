//! fedplane-dns under hostile load (issue 16): real etcd, the real binary, real sockets and dig.
//! Expensive general-path queries, datagrams from port 0, TCP connection floods (also under a
//! low open-file limit) and response rate limiting.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fedplane_testkit::{Daemon, Etcd, dig, free_port, http_get, wait_until};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

mod common;
use common::{
    A, Dns, HW_NAME, RD, SRV, WAIT, answers_of, hello_world, id_of, message, query, tcp_exchange,
    tcp_frame, truncated,
};

/// A TCP connection to `to` from loopback address `from` (any of 127/8).
fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SockAddr::from(SocketAddr::from((from, 0))))?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s = TcpStream::from(s);
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn require_root(what: &str) {
    assert!(
        rustix::process::geteuid().is_root(),
        "{what} needs root (a raw socket or extra loopback addresses): run the tests as root"
    );
}

/// Writes `n` keys under `prefix` (values from `value(i)`) in transactions of 100.
fn put_many(etcd: &Etcd, prefix: &str, n: usize, value: impl Fn(usize) -> String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
            .await
            .expect("connect etcd");
        for start in (0..n).step_by(100) {
            let ops: Vec<_> = (start..(start + 100).min(n))
                .map(|i| etcd_client::TxnOp::put(format!("{prefix}/k{i}"), value(i), None))
                .collect();
            client
                .txn(etcd_client::Txn::new().and_then(ops))
                .await
                .expect("txn");
        }
    });
}

/// 20,000 keys under `bulk`, so `bulk.example.com SRV` is a costly general-path answer; a
/// server on them with one UDP worker, its fast path compiled.
fn bulk_server(etcd: &Etcd) -> Dns {
    hello_world(etcd);
    put_many(etcd, "/skydns/com/example/bulk", 20_000, |i| {
        format!(
            r#"{{"host":"10.20.{}.{}","port":80}}"#,
            i / 250,
            i % 250 + 1
        )
    });
    let dns = Dns::on(etcd).workers(1).start();
    // Ready means loaded; the fast path's table is compiled next (until then every query
    // takes the general path).
    wait_until(WAIT, "the fast path compiled", || {
        (dns.metric("fedplane_dns_compiled_names", "") > 20_000.0).then_some(())
    });
    dns
}

/// A flood of `bulk.example.com SRV` in QCLASS ANY to `server` from one socket, as fast as one
/// thread can send (more than the general path answers): the fast path declines QCLASS ANY (a
/// big name's IN SRV is TC-only there at fast-path cost), so every one reads the 4,096-record
/// subtree on the general path. Returns once it is under way; stops when dropped.
struct BulkFlood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl BulkFlood {
    fn start(server: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, sent) = (stop.clone(), sent.clone());
            thread::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
                let q = message(7, RD, "bulk.example.com", SRV, 255, None);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        let _ = s.send_to(&q, server);
                    }
                    sent.fetch_add(1000, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(1));
                }
            })
        };
        wait_until(WAIT, "the flood to get going", || {
            (sent.load(Ordering::Relaxed) >= 3000).then_some(())
        });
        Self {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Stops it; returns how many it sent.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("flood thread");
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for BulkFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Issue 16 item 1: a flood of big-subtree queries from one socket must not starve another
/// client's ordinary queries: the single worker answers those from the fast path while the
/// flood waits in the general path's bounded queue (and what does not fit is dropped as busy).
#[test]
fn a_flood_of_big_subtree_queries_does_not_starve_ordinary_ones() {
    let etcd = Etcd::start();
    let dns = bulk_server(&etcd);
    let server = dns.addr();
    let flood = BulkFlood::start(server);

    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut slowest = Duration::ZERO;
    let mut buf = [0u8; 1500];
    for id in 0..200u16 {
        let q = query(id, HW_NAME, A);
        let start = Instant::now();
        // Up to three tries (1.5 s), as a stub resolver would.
        let answered = (0..3).any(|_| {
            client.send_to(&q, server).expect("send");
            while let Ok((n, _)) = client.recv_from(&mut buf) {
                if n >= 12 && id_of(&buf) == id {
                    return answers_of(&buf[..n]) == 3;
                }
            }
            false
        });
        assert!(answered, "ordinary query {id} unanswered during the flood");
        slowest = slowest.max(start.elapsed());
        thread::sleep(Duration::from_millis(5)); // 200 queries over more than a second
    }
    let sent = flood.stop();
    eprintln!("flood sent {sent} bulk SRV queries; slowest ordinary answer {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "slowest {slowest:?}");
    assert!(
        dns.metric("fedplane_dns_dropped_total", "reason=\"busy\"") > 0.0,
        "the flood saturated the general path"
    );
}

/// TCP queries the fast path cannot answer (SRV) take the general threads too, but go before
/// the UDP queries waiting there: under the same UDP flood, each is answered within a second,
/// on a new connection each; and an ordinary A query over TCP is answered from the compiled
/// table without waiting at all.
#[test]
fn tcp_queries_are_not_queued_behind_a_udp_flood_of_expensive_queries() {
    let etcd = Etcd::start();
    let dns = bulk_server(&etcd);
    let server = dns.addr();
    let flood = BulkFlood::start(server);
    let mut slowest = Duration::ZERO;
    for id in 0..20u16 {
        for qtype in [SRV, A] {
            let start = Instant::now();
            let mut s = dns.tcp();
            let resp = tcp_exchange(&mut s, &query(id, HW_NAME, qtype))
                .unwrap_or_else(|| panic!("TCP query {id} (type {qtype}) unanswered"));
            assert_eq!(id_of(&resp), id);
            slowest = slowest.max(start.elapsed());
        }
    }
    let sent = flood.stop();
    eprintln!("flood sent {sent} bulk SRV queries; slowest TCP answer {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "slowest {slowest:?}");
    assert!(
        dns.metric("fedplane_dns_dropped_total", "reason=\"busy\"") > 0.0,
        "the flood saturated the general path"
    );
}

/// CPU time (user + system, clock ticks) of the threads of `pid` whose name starts with
/// `prefix` (tokio's threads, the async workers and the blocking pool alike, are `tokio-…`).
fn thread_cpu(pid: u32, prefix: &str) -> u64 {
    let dir = format!("/proc/{pid}/task");
    std::fs::read_dir(&dir)
        .expect("task dir")
        .filter_map(|t| {
            let t = t.ok()?.path();
            let comm = std::fs::read_to_string(t.join("comm")).ok()?;
            if !comm.starts_with(prefix) {
                return None;
            }
            let stat = std::fs::read_to_string(t.join("stat")).ok()?;
            // After the ")" that ends the name: state is field 3, utime 14, stime 15.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?)
        })
        .sum()
}

/// Expensive TCP queries are answered on the general threads (low priority), not on the async
/// runtime that serves etcd, HTTP and every TCP connection's I/O: under a flood of `bulk SRV`
/// over TCP the general threads do the work, and /healthz and a new etcd record keep coming.
#[test]
fn expensive_tcp_queries_run_on_the_general_threads_not_the_runtime() {
    let etcd = Etcd::start();
    let dns = bulk_server(&etcd);
    let server = dns.addr();
    let pid = dns.daemon.pid();
    let (runtime0, general0) = (thread_cpu(pid, "tokio-"), thread_cpu(pid, "dns-general"));
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut s = TcpStream::connect(server).expect("connect");
                s.set_read_timeout(Some(WAIT)).expect("timeout");
                let mut answered = 0u32;
                // QCLASS ANY: the compiled table declines it, as over UDP.
                let q = message(7, RD, "bulk.example.com", SRV, 255, None);
                while !stop.load(Ordering::Relaxed) {
                    tcp_exchange(&mut s, &q).expect("answered");
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    // Meanwhile the runtime's other work goes on: health checks and the etcd watch.
    for i in 0..5 {
        let (code, _) = http_get(&dns.http, "/healthz").expect("/healthz answers");
        assert_eq!(code, 200);
        etcd.put(
            &format!("/skydns/com/example/during/n{i}"),
            r#"{"host":"10.99.1.1"}"#,
        );
        wait_until(WAIT, "a record put during the flood", || {
            let d = dig(
                "127.0.0.1",
                dns.port,
                &[&format!("n{i}.during.example.com"), "A"],
            );
            (d.answers("A") == ["10.99.1.1"]).then_some(())
        });
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let answered: u32 = floods.into_iter().map(|f| f.join().expect("flood")).sum();
    let runtime = thread_cpu(pid, "tokio-") - runtime0;
    let general = thread_cpu(pid, "dns-general") - general0;
    eprintln!(
        "{answered} bulk SRV answers over TCP; CPU ticks: general threads {general}, runtime {runtime}"
    );
    assert!(answered > 0);
    assert!(
        general > runtime,
        "the general threads did the work: general {general} ticks, runtime {runtime}"
    );
}

/// Issue 16 item 2: one batch of 20 datagrams in which one comes from source port 0. Linux
/// cannot send to port 0 and `sendmmsg` stops at the first message it cannot send; every
/// other client must still get its answer, and port 0 none.
#[test]
fn a_datagram_from_port_0_costs_no_other_client_its_answer() {
    require_root("crafting a datagram from port 0");
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = Dns::on(&etcd).workers(1).start();
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).expect("raw socket");
    let from_port_0 = {
        let payload = query(999, HW_NAME, A);
        let mut d = vec![0, 0]; // source port 0
        d.extend_from_slice(&dns.port.to_be_bytes());
        d.extend_from_slice(&u16::try_from(8 + payload.len()).expect("len").to_be_bytes());
        d.extend_from_slice(&[0, 0]); // no checksum (allowed over IPv4)
        d.extend_from_slice(&payload);
        d
    };

    // Stopped, the server receives all 20 in one recvmmsg when it goes on.
    dns.daemon.signal("STOP");
    for id in 0..20u16 {
        if id == 4 {
            raw.send_to(&from_port_0, &dns.addr().into())
                .expect("send from port 0");
        } else {
            client
                .send_to(&query(id, HW_NAME, A), dns.addr())
                .expect("send");
        }
    }
    dns.daemon.signal("CONT");
    let mut ids = Vec::new();
    let mut buf = [0u8; 1500];
    while let Ok((n, _)) = client.recv_from(&mut buf) {
        assert_eq!(answers_of(&buf[..n]), 3);
        ids.push(id_of(&buf));
    }
    ids.sort_unstable();
    let want: Vec<u16> = (0..20).filter(|&i| i != 4).collect();
    assert_eq!(ids, want, "every client but port 0 answered");
    assert_eq!(
        dns.metric("fedplane_dns_dropped_total", "reason=\"port_zero\""),
        1.0
    );
}

/// Issue 16 item 5 (RFC 7766 §6.2.3): 1,024 connections, each live (a query every round), fill
/// the connection cap; a new client must still be answered, because the connection idle
/// longest makes room for it.
#[test]
fn a_new_tcp_client_is_answered_when_live_connections_fill_the_cap() {
    require_root("binding 127.0.0.2 and above");
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = Dns::on(&etcd).args(&["--tcp-idle-timeout", "30s"]).start();
    let server = dns.addr();
    // 1,024 connections from 8 addresses (128 each, below the default per-client cap).
    let mut conns: Vec<TcpStream> = (0..1024u16)
        .map(|i| {
            let from = [127, 0, 0, u8::try_from(1 + i % 8).expect("small")];
            let mut s = connect_from(from, server).expect("connect");
            assert!(tcp_exchange(&mut s, &query(i, HW_NAME, A)).is_some());
            s
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let keeper = {
        let stop = stop.clone();
        thread::spawn(move || {
            // Each connection sends a query every round, as the flood in the issue did.
            while !stop.load(Ordering::Relaxed) {
                conns.retain_mut(|s| tcp_exchange(s, &query(1, HW_NAME, A)).is_some());
            }
            conns.len()
        })
    };
    let start = Instant::now();
    let mut newcomer = connect_from([127, 0, 0, 200], server).expect("connect");
    let resp = tcp_exchange(&mut newcomer, &query(4242, HW_NAME, A));
    let waited = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let left = keeper.join().expect("keeper");
    let resp = resp.expect("the new client answered");
    assert_eq!((id_of(&resp), answers_of(&resp)), (4242, 3));
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");
    eprintln!(
        "{left} flood connections left, {} evicted",
        dns.metric("fedplane_dns_tcp_evicted_total", "")
    );
}

/// Connections that send a length prefix and then nothing (slowloris) fill the cap: they stay
/// evictable while their body is awaited, so a new client is still answered.
#[test]
fn connections_that_send_only_a_length_do_not_lock_out_new_clients() {
    require_root("binding 127.0.0.2 and above");
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = Dns::on(&etcd)
        .args(&["--tcp-max-connections", "64"])
        .start();
    let server = dns.addr();
    let stalled: Vec<TcpStream> = (0..64u8)
        .map(|i| {
            let mut s = connect_from([127, 0, 0, 1 + i % 8], server).expect("connect");
            s.write_all(&[0xff, 0xff]).expect("length");
            s
        })
        .collect();
    wait_until(WAIT, "every stalled connection admitted", || {
        (dns.metric("fedplane_dns_tcp_connections", "") >= 64.0).then_some(())
    });
    let start = Instant::now();
    let mut newcomer = connect_from([127, 0, 0, 200], server).expect("connect");
    let resp = tcp_exchange(&mut newcomer, &query(4242, HW_NAME, A)).expect("answered");
    assert_eq!((id_of(&resp), answers_of(&resp)), (4242, 3));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        start.elapsed()
    );
    assert_eq!(
        dns.metric("fedplane_dns_tcp_rejected_total", "reason=\"full\""),
        0.0
    );
    drop(stalled);
}

/// One client address gets at most `--tcp-max-connections-per-client`; the next connection
/// is refused: held open, unanswered, for a while (closed at once, it would be opened again at
/// once), then closed. Other clients are not affected.
#[test]
fn one_tcp_client_address_gets_at_most_its_share_of_connections() {
    require_root("binding 127.0.0.2");
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = Dns::on(&etcd)
        .args(&["--tcp-max-connections-per-client", "3"])
        .start();
    let server = dns.addr();
    let mut mine: Vec<TcpStream> = (0..3)
        .map(|_| connect_from([127, 0, 0, 1], server).expect("connect"))
        .collect();
    let mut fourth = connect_from([127, 0, 0, 1], server).expect("connect");
    fourth
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let refused = Instant::now();
    fourth
        .write_all(&tcp_frame(&query(4, HW_NAME, A)))
        .expect("the refused connection takes the query");
    let mut byte = [0u8; 1];
    let first = fourth.read(&mut byte);
    assert!(
        matches!(&first, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "held open and unanswered for the first 500 ms, got {first:?}"
    );
    fourth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let end = fourth.read(&mut byte);
    assert!(
        matches!(end, Ok(0) | Err(_)),
        "closed without an answer, got {end:?}"
    );
    eprintln!("refused connection closed after {:?}", refused.elapsed());
    for (i, s) in mine.iter_mut().enumerate() {
        let id = u16::try_from(i).expect("small");
        assert_eq!(
            tcp_exchange(s, &query(id, HW_NAME, A)).map(|r| id_of(&r)),
            Some(id)
        );
    }
    let mut other = connect_from([127, 0, 0, 2], server).expect("connect");
    assert!(tcp_exchange(&mut other, &query(9, HW_NAME, A)).is_some());
    assert_eq!(
        dns.metric("fedplane_dns_tcp_rejected_total", "reason=\"per_client\""),
        1.0
    );
}

/// Issue 16 item 6: with the open-file limit at 1,024 (soft and hard), a TCP connection flood
/// leaves /readyz and /metrics answering and etcd reconnecting: the TCP cap is derived from
/// the limit.
#[test]
fn a_tcp_flood_under_a_1024_file_limit_leaves_http_and_etcd_working() {
    fedplane_testkit::require_program("prlimit", "util-linux");
    require_root("binding 127.0.0.2 and above");
    let mut etcd = Etcd::start();
    hello_world(&etcd);
    let dns = Dns::on(&etcd)
        .wrapper(&["prlimit", "--nofile=1024:1024", "--"])
        .start();
    let server = dns.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            let mut opened = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // From 8 addresses, so the per-client cap does not stop it short of the cap.
                let from = [127, 0, 0, 1 + u8::try_from(opened % 8).expect("small")];
                if let Ok(s) = connect_from(from, server) {
                    held.push_back(s);
                    opened += 1;
                }
                if held.len() > 1500 {
                    held.pop_front();
                }
            }
            opened
        })
    };
    wait_until(WAIT, "the flood to reach the cap", || {
        (dns.metric("fedplane_dns_tcp_evicted_total", "") > 0.0).then_some(())
    });
    // etcd goes away and comes back: reconnecting needs a new descriptor.
    etcd.restart();
    etcd.put("/skydns/com/example/after/flood", r#"{"host":"10.99.0.1"}"#);
    dns.await_answer_within(
        "after.example.com",
        "A",
        &["10.99.0.1"],
        Duration::from_secs(30),
    );
    for path in ["/readyz", "/metrics"] {
        let (code, _) = http_get(&dns.http, path).unwrap_or_else(|| panic!("{path} unanswered"));
        assert_eq!(code, 200, "{path}");
    }
    stop.store(true, Ordering::Relaxed);
    let opened = flood.join().expect("flood");
    assert!(opened > 1024, "only {opened} connections opened");
    assert!(
        !dns.daemon.output().contains("Too many open files"),
        "{}",
        dns.daemon.output()
    );
}

/// At start the soft open-file limit is raised to the hard one (as Go programs do).
#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    fedplane_testkit::require_program("prlimit", "util-linux");
    let etcd = Etcd::start();
    let dns = Dns::on(&etcd)
        .wrapper(&["prlimit", "--nofile=256:4096", "--"])
        .start();
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", dns.daemon.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[3..5], ["4096", "4096"], "{line}");
}

/// Sends `n` hello-world queries at once from one socket; returns (full answers, truncated
/// empty replies) received within a second of the last.
fn burst(server: SocketAddr, n: u16) -> (usize, usize) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    for id in 0..n {
        s.send_to(&query(id, HW_NAME, A), server).expect("send");
    }
    let (mut full, mut tc) = (0, 0);
    let mut buf = [0u8; 1500];
    while let Ok((len, _)) = s.recv_from(&mut buf) {
        match (truncated(&buf[..len]), answers_of(&buf[..len])) {
            (false, 3) => full += 1,
            (true, 0) => tc += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    (full, tc)
}

/// Response rate limiting: over the rate, every second limited response goes out truncated
/// and the others are dropped; dig, told to retry over TCP, gets the answer there (TCP is
/// never limited); an exempt client is never limited.
#[test]
fn rrl_passes_the_rate_slips_every_second_limited_response_and_drops_the_rest() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = Dns::on(&etcd)
        .args(&["--rrl-responses-per-second", "10", "--rrl-slip", "2"])
        .start();
    let (full, tc) = burst(dns.addr(), 60);
    // A burst of one second's worth (10), a few more refilled while the burst is sent, and
    // half of the rest truncated.
    assert!((10..=13).contains(&full), "{full} full answers");
    let limited = 60 - full;
    assert!(
        tc.abs_diff(limited / 2) <= 1,
        "{tc} truncated of {limited} limited"
    );
    assert_eq!(
        dns.metric("fedplane_dns_rrl_total", "action=\"slip\""),
        tc as f64
    );
    assert_eq!(
        dns.metric("fedplane_dns_rrl_total", "action=\"drop\""),
        (limited - tc) as f64
    );

    let exempt = Dns::on(&etcd)
        .args(&[
            "--rrl-responses-per-second",
            "1",
            "--rrl-exempt",
            "127.0.0.0/8",
        ])
        .start();
    assert_eq!(burst(exempt.addr(), 30), (30, 0));
}

/// With slip 1 every limited response is truncated, so dig (which retries a truncated answer
/// over TCP) always gets the whole answer, over TCP.
#[test]
fn rrl_with_slip_1_sends_dig_to_tcp() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = Dns::on(&etcd)
        .args(&["--rrl-responses-per-second", "1", "--rrl-slip", "1"])
        .start();
    let (full, tc) = burst(dns.addr(), 20);
    assert_eq!(full + tc, 20, "nothing dropped with slip 1");
    assert!(full <= 3, "{full} full answers");
    // Use up the one token, then dig at once: truncated over UDP, answered over TCP.
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for id in 0..3 {
        s.send_to(&query(id, HW_NAME, A), dns.addr()).expect("send");
    }
    let d = dns.q(&[HW_NAME, "A"]);
    assert!(
        d.raw.contains("Truncated, retrying in TCP mode"),
        "{}",
        d.raw
    );
    assert_eq!(d.answers("A").len(), 3, "{}", d.raw);
}

/// NSD serving hello-world under the same RRL settings, for comparison.
fn nsd_with_rrl(dir: &Path, port: u16, rate: u32, slip: u32) -> Daemon {
    fedplane_testkit::require_program("nsd", "nsd");
    let zone = "$ORIGIN example.com.\n$TTL 30\n\
        @ IN SOA ns.dns.example.com. hostmaster.example.com. 1 7200 1800 86400 30\n\
        @ IN NS ns.dns.example.com.\nns.dns IN A 10.0.0.53\n";
    let hw: String = ["10.210.1.68", "10.210.2.65", "10.210.3.65"]
        .iter()
        .map(|ip| format!("hello-world.default.federation.svc IN A {ip}\n"))
        .collect();
    std::fs::write(dir.join("example.com.zone"), format!("{zone}{hw}")).expect("zone");
    let d = dir.display();
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  \
         database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  \
         username: \"\"\n  server-count: 1\n  rrl-ratelimit: {rate}\n  rrl-slip: {slip}\n  \
         rrl-ipv4-prefix-length: 24\nremote-control:\n  control-enable: no\n\
         zone:\n  name: example.com\n  zonefile: example.com.zone\n"
    );
    std::fs::write(dir.join("nsd.conf"), conf).expect("conf");
    let mut cmd = Command::new("nsd");
    cmd.arg("-d").arg("-c").arg(dir.join("nsd.conf"));
    let nsd = Daemon::spawn("nsd", cmd);
    wait_until(WAIT, "NSD to answer", || {
        (dig("127.0.0.1", port, &["example.com", "SOA"]).status == "NOERROR").then_some(())
    });
    nsd
}

/// RRL next to NSD's (`rrl-ratelimit 10`, `rrl-slip 2`): the same burst from one client gets
/// about one second's rate answered in full (NSD lets up to twice the rate through in a
/// client's first second) and about half of the limited responses truncated, the rest
/// dropped.
#[test]
fn rrl_passes_slips_and_drops_like_nsd() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = Dns::on(&etcd)
        .args(&["--rrl-responses-per-second", "10", "--rrl-slip", "2"])
        .start();
    let dir = tempfile::tempdir().expect("tempdir");
    let nsd_port = free_port();
    let _nsd = nsd_with_rrl(dir.path(), nsd_port, 10, 2);
    // NSD counted the readiness digs from this /24: one rate period later they are forgotten.
    thread::sleep(Duration::from_millis(1100));
    for (server, addr) in [
        ("fedplane-dns", dns.addr()),
        ("NSD", SocketAddr::from(([127, 0, 0, 1], nsd_port))),
    ] {
        let (full, tc) = burst(addr, 60);
        let limited = 60 - full;
        eprintln!(
            "{server}: {full} answered, {tc} truncated, {} dropped",
            limited - tc
        );
        assert!(
            (10..=21).contains(&full),
            "{server}: {full} answered in full"
        );
        assert!(
            (limited / 4..=limited * 3 / 4).contains(&tc),
            "{server}: {tc} truncated of {limited} limited"
        );
    }
}
