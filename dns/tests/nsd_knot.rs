//! fedplane-dns's answers beside NSD's and Knot's for the same data, compared on the wire: the
//! same zone is served by a real `nsd` and a real `knotd` (free ports, temporary directories),
//! and the same query bytes go to them and to `answer::respond`.
//!
//! Knot answers minimally (no NS or glue beside an answer), as we do, so whole messages are
//! compared with Knot's; NSD adds the apex NS and its glue, so its answer section is compared.

use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedplane_dns::answer::{AnswerOptions, Outcome, Transport, respond};
use fedplane_dns::index::{Records, Zones};
use fedplane_dns::record::Record;
use fedplane_testkit::{free_port, require_program, wait_until};
use hickory_proto::rr::Name;

mod common;
use common::{message, tcp_exchange};

/// The records both sides serve: `(name below example.com, count)` of A records with distinct
/// addresses in ascending order (Knot's canonical order, and ours at rotation 0).
const SETS: &[(&str, u32)] = &[("a", 1), ("b200", 200), ("b4000", 4000), ("bulk", 4096)];

fn address(set: usize, i: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(0x0a00_0000 + (u32::try_from(set).expect("few") << 16) + i)
}

fn zone_file() -> String {
    let mut z = String::from(
        "$ORIGIN example.com.\n\
         @ 30 IN SOA ns.dns.example.com. hostmaster.example.com. 1 7200 1800 86400 30\n\
         @ 30 IN NS ns.dns.example.com.\n\
         ns.dns 30 IN A 127.0.0.53\n",
    );
    for (s, (name, n)) in SETS.iter().enumerate() {
        for i in 0..*n {
            z.push_str(&format!("{name} 300 IN A {}\n", address(s, i)));
        }
    }
    z
}

fn records() -> Records {
    let zones = Arc::new(Zones::new(
        "/skydns",
        &[Name::from_ascii("example.com.").expect("name")],
    ));
    let mut r = Records::new(zones, 1);
    for (s, (name, n)) in SETS.iter().enumerate() {
        for i in 0..*n {
            let value = format!(r#"{{"host":"{}","ttl":300}}"#, address(s, i));
            let key = format!("/skydns/com/example/{name}/{i:08x}");
            r.put(&key, Record::parse(value.as_bytes()).expect("valid"), 0, 2);
        }
    }
    r.mark_loaded();
    r
}

/// A DNS server started for one test, killed when dropped.
struct Peer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    fn start(program: &str, args: &[&str], dir: tempfile::TempDir, port: u16) -> Self {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let mut peer = Self {
            child,
            port,
            _dir: dir,
        };
        let soa = query("example.com.", 6, 1, None, &[]);
        wait_until(
            Duration::from_secs(30),
            &format!("{program} to answer"),
            || {
                if let Ok(Some(status)) = peer.child.try_wait() {
                    panic!("{program} exited: {status}");
                }
                peer.try_udp(&soa)
            },
        );
        peer
    }

    fn nsd() -> Self {
        require_program("nsd", "nsd");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("example.com.zone"), zone_file()).expect("zone");
        let port = free_port();
        let conf = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  zonesdir: \"{d}\"\n  \
             pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  username: \"\"\n  chroot: \"\"\n  \
             xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  verbosity: 0\n\
             remote-control:\n  control-enable: no\n\
             zone:\n  name: example.com\n  zonefile: example.com.zone\n"
        );
        write(dir.path(), "nsd.conf", &conf);
        let conf = format!("{d}/nsd.conf");
        Self::start("nsd", &["-d", "-c", &conf], dir, port)
    }

    fn knot() -> Self {
        require_program("knotd", "knot");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("example.com.zone"), zone_file()).expect("zone");
        let port = free_port();
        let conf = format!(
            "server:\n  listen: 127.0.0.1@{port}\n  rundir: \"{d}\"\n  udp-workers: 1\n  \
             tcp-workers: 1\n  background-workers: 1\n\
             database:\n  storage: \"{d}/db\"\n\
             log:\n  - target: stderr\n    any: error\n\
             zone:\n  - domain: example.com\n    storage: \"{d}\"\n    file: example.com.zone\n    \
             journal-content: none\n    zonefile-sync: -1\n"
        );
        write(dir.path(), "knot.conf", &conf);
        let conf = format!("{d}/knot.conf");
        Self::start("knotd", &["-c", &conf], dir, port)
    }

    fn try_udp(&self, q: &[u8]) -> Option<Vec<u8>> {
        let s = UdpSocket::bind("127.0.0.1:0").ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        s.send_to(q, ("127.0.0.1", self.port)).ok()?;
        let mut buf = vec![0u8; 65535];
        let n = s.recv(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    fn ask(&self, q: &[u8], t: Transport) -> Vec<u8> {
        match t {
            Transport::Udp => self.try_udp(q).expect("UDP answer"),
            Transport::Tcp => {
                let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                tcp_exchange(&mut s, q).expect("TCP answer")
            }
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write config");
}

/// A query (ID 0x4a17, no RD): `qname`, type, class, EDNS payload (with `options` as the OPT
/// RDATA).
fn query(qname: &str, qtype: u16, qclass: u16, edns: Option<u16>, options: &[u8]) -> Vec<u8> {
    message(
        0x4a17,
        0,
        qname,
        qtype,
        qclass,
        edns.map(|size| (size, options)),
    )
}

fn ours(records: &Records, q: &[u8], t: Transport) -> Vec<u8> {
    match respond(records, q, t, AnswerOptions::default(), Instant::now(), 0) {
        Outcome::Reply { bytes, .. } => bytes,
        Outcome::Drop(r) => panic!("dropped: {r:?}"),
    }
}

/// The message up to the end of its answer section: what NSD sends before its NS and glue.
fn through_answers(m: &[u8]) -> &[u8] {
    &m[..fedplane_testkit::sections_end(m, 1)]
}

/// The header without its section counts (NSD's NSCOUNT and ARCOUNT differ from ours).
fn flags(m: &[u8]) -> [u8; 4] {
    [m[2], m[3], m[6], m[7]]
}

#[test]
fn answers_match_nsd_and_knot_on_the_wire() {
    let (nsd, knot, records) = (Peer::nsd(), Peer::knot(), records());

    // Every owner name compressed: 200 and 4,000 A records take the bytes NSD and Knot send,
    // whole messages equal to Knot's over TCP, with and without EDNS.
    for name in ["b200.example.com.", "b4000.example.com."] {
        for edns in [None, Some(1232)] {
            let q = query(name, 1, 1, edns, &[]);
            let mine = ours(&records, &q, Transport::Tcp);
            assert_eq!(
                mine,
                knot.ask(&q, Transport::Tcp),
                "{name} {edns:?} vs Knot"
            );
            let from_nsd = nsd.ask(&q, Transport::Tcp);
            assert_eq!(
                through_answers(&mine)[12..],
                through_answers(&from_nsd)[12..],
                "{name} vs NSD"
            );
            assert_eq!(flags(&mine), flags(&from_nsd));
        }
    }

    // 4,096 records over UDP: TC-only (header with AA and TC, question, OPT), byte for byte as
    // NSD and Knot send it, with and without EDNS, whatever payload the client offers.
    for edns in [None, Some(512), Some(1232), Some(4096)] {
        let q = query("Bulk.Example.com.", 1, 1, edns, &[]);
        let mine = ours(&records, &q, Transport::Udp);
        assert_eq!(
            mine,
            nsd.ask(&q, Transport::Udp),
            "bulk UDP {edns:?} vs NSD"
        );
        assert_eq!(
            mine,
            knot.ask(&q, Transport::Udp),
            "bulk UDP {edns:?} vs Knot"
        );
    }
    // Over TCP the 65,536 bytes of records do not fit either: TC-only as NSD (Knot answers
    // SERVFAIL, which tells the client less).
    for edns in [None, Some(1232)] {
        let q = query("bulk.example.com.", 1, 1, edns, &[]);
        let mine = ours(&records, &q, Transport::Tcp);
        assert_eq!(
            mine,
            nsd.ask(&q, Transport::Tcp),
            "bulk TCP {edns:?} vs NSD"
        );
        assert_eq!(mine[3] & 0x0F, 0, "NOERROR");
        assert_eq!(mine[2] & 0x06, 0x06, "AA and TC");
    }

    // An EDNS option running past the OPT RDATA: FORMERR from all three; header only as NSD
    // (Knot echoes the question). Odd option contents are ignored by all three.
    for options in [&b"\x00\x0a\x00\x0aab"[..], &b"\x00\x0a\x00"[..]] {
        let q = query("a.example.com.", 1, 1, Some(1232), options);
        let mine = ours(&records, &q, Transport::Udp);
        assert_eq!(mine, nsd.ask(&q, Transport::Udp), "{options:?} vs NSD");
        let from_knot = knot.ask(&q, Transport::Udp);
        assert_eq!(mine[3] & 0x0F, 1, "FORMERR");
        assert_eq!(from_knot[3] & 0x0F, 1, "Knot: FORMERR");
    }
    for options in [
        &b"\x00\x0a\x00\x03abc"[..],
        &b"\x00\x08\x00\x04\x00\x07\x00\x00"[..],
    ] {
        let q = query("a.example.com.", 1, 1, Some(1232), options);
        assert_eq!(
            ours(&records, &q, Transport::Udp),
            knot.ask(&q, Transport::Udp),
            "{options:?} vs Knot"
        );
    }

    // QCLASS ANY: the IN records (class IN in the answer), without AA, answer section only,
    // byte for byte as NSD (Knot sets AA).
    let q = query("a.example.com.", 1, 255, None, &[]);
    let mine = ours(&records, &q, Transport::Udp);
    assert_eq!(mine, nsd.ask(&q, Transport::Udp), "QCLASS ANY vs NSD");
    let from_knot = knot.ask(&q, Transport::Udp);
    assert_eq!(
        through_answers(&mine)[12..],
        through_answers(&from_knot)[12..],
        "QCLASS ANY: the same answer records as Knot"
    );
}
