//! fedplane-dns end to end: real etcd, the real binary, real dig.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use fedplane_testkit::{Daemon, Etcd, dig, free_port, http_get, wait_until};

mod common;
use common::{
    A, Dns, DnsOptions, HW, HW_NAME, IN, WAIT, answers_of, hello_world, id_of, is_answer,
    is_hello_world_answer, message, read_tcp_message, tcp_frame,
};

/// fedplane-dns serving example.com. and a reverse zone from `etcd`, with two workers.
fn serve(etcd: &Etcd) -> DnsOptions {
    Dns::on(etcd).zone("0.0.10.in-addr.arpa.").workers(2)
}

/// A query for `name` A without RD.
fn raw_query(id: u16, name: &str) -> Vec<u8> {
    message(id, 0, name, A, IN, None)
}

#[test]
fn answers_every_record_type_from_etcd() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    etcd.put("/skydns/com/example/v6", r#"{"host":"2001:db8::10"}"#);
    etcd.put(
        "/skydns/com/example/alias",
        r#"{"host":"hello-world.default.federation.svc.example.com"}"#,
    );
    etcd.put("/skydns/com/example/txt", r#"{"text":"v=spf1 -all"}"#);
    etcd.put(
        "/skydns/com/example/mx/a",
        r#"{"host":"mail.example.com","mail":true,"priority":10}"#,
    );
    etcd.put("/skydns/com/example/mail", r#"{"host":"10.0.0.25"}"#);
    etcd.put(
        "/skydns/com/example/tcp/http/a",
        r#"{"host":"10.0.0.80","port":8080,"priority":10,"weight":1}"#,
    );
    etcd.put(
        "/skydns/com/example/tcp/http/b",
        r#"{"host":"10.0.0.81","port":8080,"priority":10,"weight":3}"#,
    );
    etcd.put(
        "/skydns/arpa/in-addr/10/0/0/80",
        r#"{"host":"web.example.com"}"#,
    );
    etcd.put("/skydns/com/example/dns/ns/ns1", r#"{"host":"10.0.0.53"}"#);
    etcd.put("/skydns/com/example/dns/apex/a", r#"{"host":"10.0.0.1"}"#);
    let dns = serve(&etcd).start();

    let d = dns.q(&[HW_NAME, "A"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.flag("aa"), "{}", d.raw);
    assert_eq!(
        d.answers("A"),
        ["10.210.1.68", "10.210.2.65", "10.210.3.65"]
    );
    assert!(d.answer.iter().all(|r| r.ttl == 30));

    assert_eq!(
        dns.q(&["v6.example.com", "AAAA"]).answers("AAAA"),
        ["2001:db8::10"]
    );
    let d = dns.q(&["alias.example.com", "A"]);
    assert_eq!(
        d.answers("CNAME"),
        ["hello-world.default.federation.svc.example.com."]
    );
    assert_eq!(d.answers("A").len(), 3, "CNAME chased in zone: {}", d.raw);
    assert_eq!(
        dns.q(&["txt.example.com", "TXT"]).answers("TXT"),
        ["\"v=spf1 -all\""]
    );
    let d = dns.q(&["mx.example.com", "MX"]);
    assert_eq!(d.answers("MX"), ["10 mail.example.com."]);
    assert_eq!(
        d.additional
            .iter()
            .map(|r| r.data.as_str())
            .collect::<Vec<_>>(),
        ["10.0.0.25"]
    );
    let d = dns.q(&["http.tcp.example.com", "SRV"]);
    assert_eq!(
        d.answers("SRV"),
        [
            "10 25 8080 a.http.tcp.example.com.",
            "10 75 8080 b.http.tcp.example.com."
        ]
    );
    assert_eq!(d.additional.len(), 2, "{}", d.raw);
    assert_eq!(
        dns.q(&["-x", "10.0.0.80"]).answers("PTR"),
        ["web.example.com."]
    );
    let d = dns.q(&["example.com", "NS"]);
    assert_eq!(d.answers("NS"), ["ns1.ns.dns.example.com."]);
    assert_eq!(d.additional[0].data, "10.0.0.53");
    assert_eq!(dns.q(&["example.com", "A"]).answers("A"), ["10.0.0.1"]);
}

fn soa_serial(dns: &Dns, zone: &str) -> i64 {
    let d = dns.q(&[zone, "SOA"]);
    d.answers("SOA")
        .first()
        .and_then(|soa| soa.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or_else(|| panic!("no SOA serial: {}", d.raw))
}

#[test]
fn soa_serial_is_the_etcd_revision_of_the_last_change_in_that_zone() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = serve(&etcd).start();
    let loaded = soa_serial(&dns, "example.com");
    etcd.put("/skydns/com/example/changed", r#"{"host":"10.0.0.1"}"#);
    let changed = etcd.revision();
    assert!(changed > loaded);
    wait_until(WAIT, "the serial to follow the change", || {
        (soa_serial(&dns, "example.com") == changed).then_some(())
    });
    // a change in another zone leaves this zone's serial alone
    etcd.put(
        "/skydns/arpa/in-addr/10/0/0/1",
        r#"{"host":"changed.example.com"}"#,
    );
    let other = etcd.revision();
    wait_until(WAIT, "the reverse zone's serial", || {
        (soa_serial(&dns, "0.0.10.in-addr.arpa") == other).then_some(())
    });
    assert_eq!(soa_serial(&dns, "example.com"), changed);
}

#[test]
fn reads_records_exactly_as_externaldns_writes_them() {
    let etcd = Etcd::start();
    // ExternalDNS coredns provider: random 8-hex leaves, targetstrip 1, ownership text.
    let owner = r#""heritage=external-dns,external-dns/owner=default,external-dns/resource=service/default/nginx""#;
    let v = serde_like(&[
        ("host", "\"10.1.2.3\""),
        ("text", &json_str(owner)),
        ("ttl", "60"),
        ("targetstrip", "1"),
    ]);
    etcd.put("/skydns/com/example/nginx/1f2e3d4c", &v);
    etcd.put(
        "/skydns/com/example/nginx/5a6b7c8d",
        r#"{"host":"10.1.2.4","ttl":60,"targetstrip":1,"owner":"default"}"#,
    );
    let dns = serve(&etcd).start();
    let d = dns.q(&["nginx.example.com", "A"]);
    assert_eq!(d.answers("A"), ["10.1.2.3", "10.1.2.4"]);
    assert!(d.answer.iter().all(|r| r.ttl == 60));
    assert_eq!(
        dns.q(&["nginx.example.com", "TXT"]).answers("TXT"),
        [json_str(owner)]
    );
    // made-up SRV targets lose the random label (targetstrip)
    let d = dns.q(&["nginx.example.com", "SRV"]);
    assert!(
        d.answers("SRV")
            .iter()
            .all(|s| s.ends_with(" nginx.example.com.")),
        "{}",
        d.raw
    );
}

fn json_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn serde_like(fields: &[(&str, &str)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

#[test]
fn nxdomain_nodata_and_refused() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = serve(&etcd).start();
    let d = dns.q(&["missing.example.com", "A"]);
    assert_eq!(d.status, "NXDOMAIN");
    assert!(d.flag("aa"));
    assert_eq!(d.authority[0].rtype, "SOA");
    assert_eq!(d.authority[0].ttl, 30, "negative TTL = SOA minimum");
    let d = dns.q(&[HW_NAME, "MX"]);
    assert_eq!(
        (d.status.as_str(), d.answer.len()),
        ("NOERROR", 0),
        "{}",
        d.raw
    );
    assert_eq!(d.authority[0].rtype, "SOA");
    let d = dns.q(&["www.example.org", "A"]);
    assert_eq!(d.status, "REFUSED");
    assert!(!d.flag("aa"));
    // question case echoed back
    let d = dns.q(&["HeLLo-World.default.federation.svc.EXAMPLE.com", "A"]);
    assert_eq!(
        d.question,
        "HeLLo-World.default.federation.svc.EXAMPLE.com."
    );
    assert_eq!(d.answers("A").len(), 3);
}

#[test]
fn truncates_over_udp_then_answers_whole_over_tcp() {
    let etcd = Etcd::start();
    for i in 0..120 {
        etcd.put(
            &format!("{HW}/{i:08x}"),
            &format!(r#"{{"host":"10.9.{}.{}"}}"#, i / 200, i % 200 + 1),
        );
    }
    let dns = serve(&etcd).start();
    let name = HW_NAME;
    let d = dns.q(&[name, "A", "+ignore", "+bufsize=1232"]);
    assert!(d.flag("tc"), "{}", d.raw);
    assert_eq!(d.edns_udp, Some(1232));
    let d = dns.q(&[name, "A", "+ignore", "+noedns"]);
    assert!(d.flag("tc"), "{}", d.raw);
    let d = dns.q(&[name, "A", "+tcp"]);
    assert!(!d.flag("tc"));
    assert_eq!(d.answers("A").len(), 120);
    // dig's default: retries over TCP by itself
    assert_eq!(dns.q(&[name, "A"]).answers("A").len(), 120);
}

#[test]
fn a_put_in_etcd_is_answered_and_a_delete_withdrawn() {
    let etcd = Etcd::start();
    let dns = serve(&etcd).start();
    assert_eq!(dns.q(&["new.example.com", "A"]).status, "NXDOMAIN");
    etcd.put("/skydns/com/example/new", r#"{"host":"10.0.0.7"}"#);
    dns.await_answer("new.example.com", "A", &["10.0.0.7"]);
    etcd.put("/skydns/com/example/new", r#"{"host":"10.0.0.8"}"#);
    dns.await_answer("new.example.com", "A", &["10.0.0.8"]);
    etcd.del("/skydns/com/example/new");
    wait_until(WAIT, "delete to be seen", || {
        (dns.q(&["new.example.com", "A"]).status == "NXDOMAIN").then_some(())
    });
}

#[test]
fn keeps_answering_while_etcd_is_down_and_catches_up_when_it_returns() {
    let mut etcd = Etcd::start();
    hello_world(&etcd);
    let dns = serve(&etcd).start();
    etcd.stop();
    wait_until(WAIT, "sync state disconnected", || {
        (dns.metric("fedplane_dns_sync_state", "") == 2.0).then_some(())
    });
    let d = dns.q(&[HW_NAME, "A"]);
    assert_eq!(
        d.answers("A").len(),
        3,
        "answers from the last snapshot: {}",
        d.raw
    );
    assert_eq!(http_get(&dns.http, "/readyz").map(|r| r.0), Some(200));
    etcd.restart();
    etcd.put("/skydns/com/example/after", r#"{"host":"10.0.0.9"}"#);
    dns.await_answer("after.example.com", "A", &["10.0.0.9"]);
    assert_eq!(dns.metric("fedplane_dns_sync_state", ""), 1.0);
}

#[test]
fn reloads_when_the_watch_revision_was_compacted() {
    let mut etcd = Etcd::start();
    hello_world(&etcd);
    etcd.put("/skydns/com/example/gone", r#"{"host":"10.0.0.1"}"#);
    let dns = serve(&etcd).start();
    // Freeze the server, break its watch, change data and compact history past its revision.
    dns.daemon.signal("STOP");
    etcd.restart();
    etcd.del("/skydns/com/example/gone");
    etcd.put("/skydns/com/example/fresh", r#"{"host":"10.0.0.2"}"#);
    etcd.put(&format!("{HW}/fcp"), r#"{"host":"10.210.1.99","ttl":30}"#);
    etcd.compact();
    dns.daemon.signal("CONT");
    wait_until(WAIT, "a reload after compaction", || {
        (dns.metric("fedplane_dns_etcd_reloads_total", "") >= 1.0).then_some(())
    });
    dns.await_answer("fresh.example.com", "A", &["10.0.0.2"]);
    assert_eq!(dns.q(&["gone.example.com", "A"]).status, "NXDOMAIN");
    dns.await_answer(
        "hello-world.default.federation.svc.example.com",
        "A",
        &["10.210.1.99", "10.210.2.65", "10.210.3.65"],
    );
}

#[test]
fn invalid_values_are_skipped_counted_and_hide_nothing_else() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    etcd.put(&format!("{HW}/broken"), "{not json");
    etcd.put(
        "/skydns/com/example/badport",
        r#"{"host":"10.0.0.1","port":99999}"#,
    );
    let dns = serve(&etcd).start();
    let d = dns.q(&[HW_NAME, "A"]);
    assert_eq!(d.answers("A").len(), 3, "{}", d.raw);
    assert_eq!(dns.metric("fedplane_dns_invalid_records_total", ""), 2.0);
    etcd.put("/skydns/com/example/later", "[]");
    wait_until(WAIT, "the third invalid value to be counted", || {
        (dns.metric("fedplane_dns_invalid_records_total", "") == 3.0).then_some(())
    });
    let out = dns.daemon.output();
    assert_eq!(
        out.matches("ignoring invalid record value").count(),
        3,
        "{out}"
    );
    assert!(out.contains("/skydns/com/example/badport"), "{out}");
}

#[test]
fn garbage_datagrams_are_dropped_and_counted_and_the_server_keeps_answering() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = serve(&etcd).start();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    for junk in [
        &b"\x01\x02"[..],
        &[0xffu8; 40][..],
        b"\x12\x34\x81\x00\x00\x01\x00\x00\x00\x00\x00\x00",
    ] {
        sock.send_to(junk, dns.addr()).expect("send");
    }
    // a header with a broken body gets FORMERR with its ID
    sock.send_to(
        b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example",
        dns.addr(),
    )
    .expect("send");
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).expect("FORMERR reply");
    assert_eq!((&buf[..2], buf[3] & 0x0f, n), (&b"\xab\xcd"[..], 1, 12));
    wait_until(WAIT, "drops to be counted", || {
        (dns.metric("fedplane_dns_dropped_total", "") >= 2.0).then_some(())
    });
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A").len(), 3);
}

#[test]
fn tcp_pipelines_queries_and_closes_idle_connections() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = serve(&etcd).args(&["--tcp-idle-timeout", "300ms"]).start();
    let mut s = TcpStream::connect(dns.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let batch: Vec<u8> = (1u16..=3)
        .flat_map(|id| tcp_frame(&raw_query(id, HW_NAME)))
        .collect();
    s.write_all(&batch).expect("write three queries at once");
    for id in 1u16..=3 {
        let msg = read_tcp_message(&mut s)
            .expect("message")
            .expect("not closed");
        assert_eq!(id_of(&msg), id, "answered in order");
        assert_eq!(answers_of(&msg), 3, "three A records");
    }
    // idle: the server closes the connection (read returns 0) within a bounded time
    assert!(
        read_tcp_message(&mut s)
            .expect("closed, not timed out")
            .is_none()
    );
}

/// Reads the answer to hello-world query `id` from `s`, then a clean close (a FIN, not a reset).
fn answered_then_closed(s: &mut TcpStream, id: u16) {
    let msg = read_tcp_message(s)
        .expect("answer, not a reset")
        .expect("answer, not closed");
    assert!(is_hello_world_answer(&msg, id), "{msg:?}");
    assert!(
        read_tcp_message(s)
            .expect("closed cleanly, not reset")
            .is_none()
    );
}

#[test]
fn lease_bound_records_answer_the_remaining_lease_with_a_floor() {
    let etcd = Etcd::start();
    let lease = etcd.lease_grant(90);
    etcd.ctl(&[
        "put",
        "--lease",
        &lease,
        "/skydns/com/example/leased",
        r#"{"host":"10.0.0.5","ttl":300}"#,
    ]);
    let dns = serve(&etcd).start();
    let d = dns.await_answer("leased.example.com", "A", &["10.0.0.5"]);
    let ttl = d.answer[0].ttl;
    assert!(
        (31..=90).contains(&ttl),
        "TTL {ttl} bounded by the 90 s lease: {}",
        d.raw
    );
}

#[test]
fn not_ready_and_servfail_until_etcd_is_loaded() {
    let mut etcd = Etcd::start();
    hello_world(&etcd);
    etcd.stop();
    let dns = serve(&etcd).start_unready();
    wait_until(WAIT, "/healthz", || {
        http_get(&dns.http, "/healthz").filter(|r| r.0 == 200)
    });
    assert_eq!(http_get(&dns.http, "/readyz").map(|r| r.0), Some(503));
    assert_eq!(dns.q(&[HW_NAME, "A"]).status, "SERVFAIL");
    etcd.restart();
    dns.await_ready(WAIT);
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A").len(), 3);
}

/// How a query loop reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// hello-world's A records, compiled: the UDP fast path.
    UdpFastPath,
    /// A missing name (NXDOMAIN): the general path, in the same UDP workers.
    UdpGeneralPath,
    /// A new TCP connection per query.
    TcpConnections,
    /// One TCP connection for every query, until the server closes it.
    TcpOneConnection,
}

const VIAS: [Via; 4] = [
    Via::UdpFastPath,
    Via::UdpGeneralPath,
    Via::TcpConnections,
    Via::TcpOneConnection,
];

/// One query of a loop: when it was sent and whether its answer came back.
#[derive(Debug)]
struct Sent {
    via: Via,
    at: Instant,
    answered: bool,
}

/// How a query loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Told to stop.
    Stopped,
    /// The server closed the connection cleanly (FIN) between answers.
    Closed,
    /// A query went unanswered: the error, or the wrong answer.
    Unanswered(String),
}

/// Asks hello-world's A records (a missing name for the general path) over `via`, one query at
/// a time (each waits up to 2 s for its answer), logging every query in `log`, until `stop` is
/// set (the single connection ignores it and runs until the server closes it) or a query goes
/// unanswered.
fn query_loop(server: SocketAddr, via: Via, stop: &AtomicBool, log: &Mutex<Vec<Sent>>) -> End {
    // Pacing, not synchronisation: a few hundred queries a second per loop keep the machine
    // free for the tests running beside this one.
    const PACE: Duration = Duration::from_millis(5);
    let timeout = Some(Duration::from_secs(2));
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    udp.connect(server).expect("connect udp");
    udp.set_read_timeout(timeout).expect("timeout");
    let mut one = None;
    let mut id = 0u16;
    loop {
        if via != Via::TcpOneConnection && stop.load(Ordering::Relaxed) {
            return End::Stopped;
        }
        id = id.wrapping_add(1);
        let (name, rcode, answers) = match via {
            Via::UdpGeneralPath => ("missing.example.com", 3, 0),
            _ => (HW_NAME, 0, 3),
        };
        let query = raw_query(id, name);
        let at = Instant::now();
        let reply = match via {
            Via::UdpFastPath | Via::UdpGeneralPath => udp.send(&query).and_then(|_| {
                loop {
                    let mut buf = [0u8; 1500];
                    let n = udp.recv(&mut buf)?;
                    // A late answer to an earlier query is skipped.
                    if id_of(&buf) == id {
                        break Ok(Some(buf[..n].to_vec()));
                    }
                }
            }),
            Via::TcpConnections => TcpStream::connect_timeout(&server, Duration::from_secs(2))
                .and_then(|mut s| {
                    s.set_read_timeout(timeout)?;
                    s.write_all(&tcp_frame(&query))?;
                    read_tcp_message(&mut s)
                }),
            Via::TcpOneConnection => {
                let s = one.get_or_insert_with(|| {
                    let s = TcpStream::connect(server).expect("connect tcp");
                    s.set_read_timeout(timeout).expect("timeout");
                    s
                });
                s.write_all(&tcp_frame(&query))
                    .and_then(|()| read_tcp_message(s))
            }
        };
        let answered = matches!(&reply, Ok(Some(m)) if is_answer(m, id, rcode, answers));
        log.lock().expect("log").push(Sent { via, at, answered });
        match reply {
            Ok(Some(_)) if answered => {}
            Ok(Some(m)) => return End::Unanswered(format!("wrong answer {m:?}")),
            Ok(None) if via == Via::TcpOneConnection => return End::Closed,
            Ok(None) => return End::Unanswered("closed before the answer".into()),
            Err(e) => return End::Unanswered(e.to_string()),
        }
        std::thread::sleep(PACE);
    }
}

#[test]
fn sigterm_fails_readyz_and_answers_every_query_until_the_lameduck_ends() {
    const LAMEDUCK: Duration = Duration::from_secs(3);
    // A query sent this close to the end of the lameduck may meet closed sockets.
    const MARGIN: Duration = Duration::from_millis(500);
    let etcd = Etcd::start();
    hello_world(&etcd);
    let mut dns = serve(&etcd).args(&["--lameduck", "3s"]).start();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let begun = Instant::now();
    let loops: Vec<_> = VIAS
        .into_iter()
        .map(|via| {
            let (server, stop, log) = (dns.addr(), stop.clone(), log.clone());
            (
                via,
                thread::spawn(move || query_loop(server, via, &stop, &log)),
            )
        })
        .collect();
    let answered_since = |t: Instant| {
        let log = log.lock().expect("log");
        VIAS.iter()
            .all(|&v| log.iter().any(|s| s.via == v && s.answered && s.at > t))
            .then_some(())
    };
    wait_until(WAIT, "answers over UDP and TCP", || answered_since(begun));
    assert_eq!(dns.metric("fedplane_dns_draining", ""), 0.0);

    let term = Instant::now();
    dns.daemon.signal("TERM");
    let (_, body) = wait_until(WAIT, "/readyz to fail", || {
        http_get(&dns.http, "/readyz").filter(|(c, _)| *c == 503)
    });
    let unready = Instant::now();
    assert_eq!(body, "draining\n");
    assert_eq!(dns.metric("fedplane_dns_draining", ""), 1.0);
    wait_until(WAIT, "answers while /readyz fails", || {
        answered_since(unready)
    });

    let status = dns.daemon.wait_exit(LAMEDUCK + WAIT);
    let exited = term.elapsed();
    stop.store(true, Ordering::Relaxed);
    let ends: Vec<(Via, End)> = loops
        .into_iter()
        .map(|(via, h)| (via, h.join().expect("query loop")))
        .collect();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        (LAMEDUCK..LAMEDUCK + Duration::from_secs(4)).contains(&exited),
        "exited {exited:?} after SIGTERM, with a lameduck of {LAMEDUCK:?}"
    );
    let log = log.lock().expect("log");
    for s in log.iter().filter(|s| s.at < term + LAMEDUCK - MARGIN) {
        assert!(
            s.answered,
            "{:?} query sent {:?} after SIGTERM lost ({} queries; ends {ends:?})",
            s.via,
            s.at.saturating_duration_since(term),
            log.len()
        );
    }
    assert!(
        ends.contains(&(Via::TcpOneConnection, End::Closed)),
        "the open TCP connection is closed cleanly: {ends:?}"
    );
    let out = dns.daemon.output();
    assert!(out.contains("lameduck started"), "{out}");
    assert!(out.contains("lameduck ended;"), "{out}");
    assert!(out.contains("fedplane-dns stopped"), "{out}");
}

#[test]
fn a_tcp_query_in_flight_when_the_lameduck_ends_is_answered_then_the_connection_closes() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let mut dns = serve(&etcd).args(&["--lameduck", "500ms"]).start();
    let mut s = dns.tcp();
    let framed = tcp_frame(&raw_query(7, HW_NAME));
    let (head, tail) = framed.split_at(framed.len() / 2);
    s.write_all(head).expect("first half of the query");
    dns.daemon.signal("TERM");
    dns.await_log("lameduck ended");
    s.write_all(tail).expect("rest of the query");
    answered_then_closed(&mut s, 7);
    drop(s);
    let status = dns.daemon.wait_exit(WAIT);
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sigterm_with_lameduck_0_closes_at_once_and_exits_cleanly() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let mut dns = serve(&etcd).args(&["--lameduck", "0"]).start();
    // An open TCP connection (accepted: it has had an answer) is closed, not reset.
    let mut s = dns.tcp();
    s.write_all(&tcp_frame(&raw_query(1, HW_NAME)))
        .expect("query");
    assert!(read_tcp_message(&mut s).expect("answer").is_some());
    dns.daemon.signal("TERM");
    assert!(
        read_tcp_message(&mut s)
            .expect("closed cleanly, not reset")
            .is_none()
    );
    drop(s);
    // Well under the default lameduck of 5 s.
    let status = dns.daemon.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "exit status {status:?}");
    let out = dns.daemon.output();
    assert!(out.contains("SIGTERM: no lameduck"), "{out}");
    assert!(out.contains("fedplane-dns stopped"), "{out}");
}

#[test]
fn a_second_sigterm_or_sigint_ends_the_lameduck_at_once() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    for second in ["TERM", "INT"] {
        let mut dns = serve(&etcd).args(&["--lameduck", "60s"]).start();
        dns.daemon.signal("TERM");
        dns.await_log("lameduck started");
        assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A").len(), 3);
        dns.daemon.signal(second);
        let status = dns.daemon.wait_exit(Duration::from_secs(5));
        assert!(status.success(), "SIG{second}: exit status {status:?}");
        let out = dns.daemon.output();
        assert!(
            out.contains(&format!("SIG{second}: lameduck ended early")),
            "{out}"
        );
    }
}

#[test]
fn a_tcp_client_pipelining_without_pause_is_closed_cleanly_when_the_lameduck_ends() {
    /// Queries written per `write_all`: far more than one read of the server takes, so its
    /// input is never empty while the client writes.
    const CHUNK: u64 = 2000;
    // The id of the n-th query of the connection.
    fn id(n: u64) -> u16 {
        u16::try_from(n % 65536).expect("id")
    }
    let etcd = Etcd::start();
    hello_world(&etcd);
    // A grace far beyond every wait below: the connection must close when the lameduck ends,
    // not when the grace runs out.
    let mut dns = serve(&etcd)
        .args(&["--lameduck", "1s", "--shutdown-grace", "60s"])
        .start();
    let s = dns.tcp();
    s.set_write_timeout(Some(WAIT)).expect("timeout");
    let closed = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    // Writes queries back to back until the reader has seen the server close.
    let writer = {
        let (mut s, closed) = (s.try_clone().expect("clone"), closed.clone());
        thread::spawn(move || -> std::io::Result<u64> {
            let mut sent = 0u64;
            while !closed.load(Ordering::Relaxed) {
                let chunk: Vec<u8> = (sent..sent + CHUNK)
                    .flat_map(|n| tcp_frame(&raw_query(id(n), HW_NAME)))
                    .collect();
                s.write_all(&chunk)?;
                sent += CHUNK;
            }
            Ok(sent)
        })
    };
    // Reads the answers, in order, until the server closes the connection.
    let reader = {
        let mut s = s.try_clone().expect("clone");
        let (closed, answered) = (closed.clone(), answered.clone());
        thread::spawn(move || -> Result<u64, String> {
            let end = loop {
                let n = answered.load(Ordering::Relaxed);
                match read_tcp_message(&mut s) {
                    Ok(Some(m)) if is_hello_world_answer(&m, id(n)) => {
                        answered.store(n + 1, Ordering::Relaxed);
                    }
                    Ok(Some(m)) => break Err(format!("answer {n} is wrong: {m:?}")),
                    Ok(None) => break Ok(n),
                    Err(e) => break Err(format!("after {n} answers: {e}")),
                }
            };
            closed.store(true, Ordering::Relaxed);
            end
        })
    };
    // The threads hold the connection; it closes when both are done.
    drop(s);
    wait_until(WAIT, "pipelined answers", || {
        (answered.load(Ordering::Relaxed) > CHUNK).then_some(())
    });
    dns.daemon.signal("TERM");
    dns.await_log("lameduck started");
    let at_sigterm = answered.load(Ordering::Relaxed);
    dns.await_log("lameduck ended");
    let status = dns.daemon.wait_exit(WAIT);
    let read = reader.join().expect("reader");
    let written = writer.join().expect("writer");
    assert!(status.success(), "exit status {status:?}");
    let total = read.expect("every answer in order, then a clean close (FIN), not a reset");
    written.expect("the queries written after the close are read and discarded, not reset");
    assert!(
        total > at_sigterm,
        "answers went on during the lameduck: {at_sigterm} at SIGTERM, {total} in all"
    );
    let out = dns.daemon.output();
    assert!(!out.contains("shutdown grace ran out"), "{out}");
    assert!(out.contains("fedplane-dns stopped"), "{out}");
}

#[test]
fn once_the_lameduck_ends_new_tcp_connections_are_refused() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let mut dns = serve(&etcd)
        .args(&[
            "--lameduck",
            "300ms",
            "--shutdown-grace",
            "60s",
            "--tcp-idle-timeout",
            "60s",
        ])
        .start();
    // An accepted connection (it has had an answer) with a query half sent holds the
    // shutdown: the server waits for the rest of the query.
    let mut held = dns.tcp();
    held.write_all(&tcp_frame(&raw_query(1, HW_NAME)))
        .expect("query");
    let msg = read_tcp_message(&mut held)
        .expect("answer")
        .expect("not closed");
    assert!(is_hello_world_answer(&msg, 1), "{msg:?}");
    let framed = tcp_frame(&raw_query(2, HW_NAME));
    let (head, tail) = framed.split_at(framed.len() / 2);
    held.write_all(head).expect("first half of the query");
    dns.daemon.signal("TERM");
    dns.await_log("lameduck ended");
    // Not left in the kernel's accept queue, unanswered, until the process exits.
    let server = dns.addr();
    wait_until(
        WAIT,
        "new TCP connections to be refused",
        || match TcpStream::connect_timeout(&server, WAIT) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        },
    );
    assert!(dns.daemon.is_running(), "still finishing the held query");
    held.write_all(tail).expect("rest of the query");
    answered_then_closed(&mut held, 2);
    drop(held);
    let status = dns.daemon.wait_exit(WAIT);
    assert!(status.success(), "exit status {status:?}");
}

/// A child process killed (and reaped) when the test ends, for what `Daemon` cannot set up.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exits_after_sigterm_when_nobody_reads_its_log_any_more() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let (port, http) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_fedplane-dns"))
            .args(["--zone", "example.com.", "--lameduck", "200ms", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--http", &http, "--etcd-endpoints", &etcd.endpoint()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fedplane-dns"),
    );
    // Like a log collector that goes away: read the log until the server has started, then
    // close the pipe, so every later log line meets a broken pipe.
    let stderr = child.0.stderr.take().expect("stderr pipe");
    let (started_tx, started) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let seen = lines.any(|l| l.is_ok_and(|l| l.contains("fedplane-dns started")));
        drop(lines);
        let _ = started_tx.send(seen);
    });
    assert_eq!(started.recv_timeout(WAIT), Ok(true), "the started line");
    wait_until(WAIT, "fedplane-dns /readyz", || {
        http_get(&http, "/readyz").filter(|(c, _)| *c == 200)
    });
    // The etcd sync logs the invalid value into the closed pipe, and follows etcd on.
    etcd.put("/skydns/com/example/invalid", "{not json");
    etcd.put("/skydns/com/example/after", r#"{"host":"10.0.0.14"}"#);
    wait_until(WAIT, "after.example.com A to answer", || {
        let d = dig("127.0.0.1", port, &["after.example.com", "A"]);
        (d.answers("A") == ["10.0.0.14"]).then_some(())
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let status = wait_until(WAIT, "fedplane-dns to exit", || {
        child.0.try_wait().expect("wait")
    });
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn an_error_after_the_dns_listeners_started_still_ends_the_process() {
    // The HTTP address is bound after the DNS listeners (and their UDP threads) start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let http = taken.local_addr().expect("addr").to_string();
    let args: Vec<String> = [
        "--zone",
        "example.com.",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--http",
        &http,
        "--etcd-endpoints",
        &format!("http://127.0.0.1:{}", free_port()),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let mut daemon = Daemon::start(Path::new(env!("CARGO_BIN_EXE_fedplane-dns")), &args, &[]);
    let status = daemon.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "exit status {status:?}");
    let out = daemon.output();
    assert!(out.contains("cannot bind the HTTP address"), "{out}");
}

#[test]
fn authenticates_to_etcd_with_a_password_from_the_environment() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    etcd.ctl(&["user", "add", "root:rootpw"]);
    etcd.ctl(&["role", "add", "dnsreader"]);
    etcd.ctl(&[
        "role",
        "grant-permission",
        "dnsreader",
        "--prefix=true",
        "read",
        "/skydns/",
    ]);
    etcd.ctl(&["user", "add", "fedplane:s3cret"]);
    etcd.ctl(&["user", "grant-role", "fedplane", "dnsreader"]);
    etcd.ctl(&["auth", "enable"]);
    let dns = serve(&etcd)
        .args(&["--etcd-username", "fedplane"])
        .env("FEDPLANE_ETCD_PASSWORD", "s3cret")
        .start();
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A").len(), 3);
    etcd.ctl(&[
        "--user",
        "root:rootpw",
        "put",
        "/skydns/com/example/authed",
        r#"{"host":"10.0.0.3"}"#,
    ]);
    dns.await_answer("authed.example.com", "A", &["10.0.0.3"]);
}

#[test]
fn connects_to_etcd_over_mutual_tls() {
    let etcd = Etcd::start_tls();
    hello_world(&etcd);
    let (ca, cert, key) = (
        etcd.tls_file("ca.pem"),
        etcd.tls_file("client.pem"),
        etcd.tls_file("client.key"),
    );
    let dns = serve(&etcd)
        .args(&["--etcd-ca", &ca, "--etcd-cert", &cert, "--etcd-key", &key])
        .start();
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A").len(), 3);
    etcd.put("/skydns/com/example/tls", r#"{"host":"10.0.0.4"}"#);
    dns.await_answer("tls.example.com", "A", &["10.0.0.4"]);
}

#[test]
fn uses_any_reachable_endpoint_of_several() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let endpoints = format!("{dead},{}", etcd.endpoint());
    // The dead endpoint comes first; the client must use the other one.
    let dns = serve(&etcd).endpoints(&endpoints).start();
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A").len(), 3);
    etcd.put("/skydns/com/example/multi", r#"{"host":"10.0.0.6"}"#);
    dns.await_answer("multi.example.com", "A", &["10.0.0.6"]);
}

#[test]
fn resumes_the_watch_from_its_revision_without_reloading() {
    let mut etcd = Etcd::start();
    hello_world(&etcd);
    let dns = serve(&etcd).start();
    // Ready means loaded; the watch starts after the load (and the compile): wait for it, or
    // the freeze lands before there is a watch to break.
    wait_until(
        Duration::from_secs(30),
        "the watch to be established",
        || (dns.metric("fedplane_dns_sync_state", "") == 1.0).then_some(()),
    );
    // Freeze the server and break its watch; write while it cannot see the change.
    dns.daemon.signal("STOP");
    etcd.restart();
    etcd.put("/skydns/com/example/while-away", r#"{"host":"10.0.0.11"}"#);
    dns.daemon.signal("CONT");
    dns.await_answer("while-away.example.com", "A", &["10.0.0.11"]);
    assert!(
        dns.metric("fedplane_dns_etcd_reconnects_total", "") >= 1.0,
        "the watch was re-established"
    );
    assert_eq!(
        dns.metric("fedplane_dns_etcd_reloads_total", ""),
        0.0,
        "resumed, not reloaded"
    );
}

#[test]
fn reloads_when_etcd_comes_back_with_another_history() {
    let mut etcd = Etcd::start();
    hello_world(&etcd);
    let dns = serve(&etcd).start();
    etcd.wipe_and_restart();
    etcd.put("/skydns/com/example/new-cluster", r#"{"host":"10.0.0.12"}"#);
    dns.await_answer("new-cluster.example.com", "A", &["10.0.0.12"]);
    assert_eq!(dns.q(&[HW_NAME, "A"]).status, "NXDOMAIN");
    assert!(dns.metric("fedplane_dns_etcd_reloads_total", "") >= 1.0);
}

#[test]
fn a_silent_etcd_is_detected_and_answers_continue() {
    let etcd = Etcd::start();
    hello_world(&etcd);
    let dns = serve(&etcd).start();
    // etcd keeps the watch stream open but says nothing (a partitioned member).
    etcd.signal("STOP");
    wait_until(
        Duration::from_secs(30),
        "the stalled watch to be noticed",
        || (dns.metric("fedplane_dns_sync_state", "") == 2.0).then_some(()),
    );
    let d = dns.q(&[HW_NAME, "A"]);
    assert_eq!(d.answers("A").len(), 3, "{}", d.raw);
    etcd.signal("CONT");
    etcd.put("/skydns/com/example/thawed", r#"{"host":"10.0.0.13"}"#);
    dns.await_answer("thawed.example.com", "A", &["10.0.0.13"]);
}
