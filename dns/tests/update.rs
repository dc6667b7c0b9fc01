//! RFC 2136 dynamic update with the real clients: BIND's `nsupdate` (`-y` and `-k`, over UDP
//! and TCP) and Knot's `knsupdate` add, replace and delete records with prerequisites against
//! the real fedplane-dns over real etcd; the result is checked in etcd and with `dig`. Keys of
//! another writer (fedplane-controller's, another TSIG key's) are never changed: such an
//! update is REFUSED and etcd is left as it was; unsigned and badly signed updates likewise.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use fedplane_testkit::{Etcd, require_program};

mod common;
use common::Dns;

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const OTHER_SECRET: &str = "c2Vjb25kIGtleSBzZWNyZXQgZm9yIHRoZSB0ZXN0cyE=";
const CONTROLLER: &str = r#"{"host":"10.0.0.1","managed-by":"fedplane-controller/fed"}"#;

/// A fedplane-dns for example.com. taking updates from loopback signed with `ddns` or
/// `other`; `ddns` is read from a BIND key file (as `tsig-keygen` writes it).
fn server(etcd: &Etcd, dir: &Path) -> Dns {
    let keyfile = dir.join("ddns.key");
    std::fs::write(
        &keyfile,
        format!("key \"ddns\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n"),
    )
    .expect("key file");
    let other = dir.join("other.secret");
    std::fs::write(&other, OTHER_SECRET).expect("secret");
    let ddns = format!("ddns:hmac-sha256:{}", keyfile.display());
    let other = format!("other:hmac-sha512:{}", other.display());
    Dns::on(etcd)
        .args(&[
            "--tsig-key",
            &ddns,
            "--tsig-key",
            &other,
            "--allow-update",
            "127.0.0.0/8,key=ddns",
            "--allow-update",
            "127.0.0.1/32,key=other",
        ])
        .start()
}

/// Runs `program` (`nsupdate` or `knsupdate`) with `args` on `script`: its exit status
/// and its output.
fn run(program: &str, args: &[&str], script: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `nsupdate -y` with `key` (`ALG:NAME:SECRET`) of `lines` against `dns`.
fn nsupdate(dns: &Dns, key: Option<&str>, extra: &[&str], lines: &[&str]) -> (bool, String) {
    let script = format!(
        "server 127.0.0.1 {}\nzone example.com.\n{}\nsend\n",
        dns.port,
        lines.join("\n")
    );
    let mut args: Vec<&str> = extra.to_vec();
    if let Some(k) = key {
        args.extend(["-y", k]);
    }
    run("nsupdate", &args, &script)
}

fn ddns() -> String {
    format!("hmac-sha256:ddns:{SECRET}")
}

/// The keys under `/skydns/com/example` with their values.
fn keys(etcd: &Etcd) -> Vec<(String, String)> {
    let mut v: Vec<_> = etcd
        .dump("/skydns/com/example")
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    v.sort();
    v
}

fn tools() {
    require_program("nsupdate", "bind9-dnsutils");
    require_program("knsupdate", "knot-dnsutils");
}

#[test]
fn nsupdate_adds_replaces_and_deletes_with_prerequisites() {
    tools();
    let etcd = Etcd::start();
    etcd.put("/skydns/com/example/web/c1/a", CONTROLLER);
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = server(&etcd, dir.path());
    dns.await_answer("web.example.com.", "A", &["10.0.0.1"]);
    let serial = |dns: &Dns| -> u64 {
        let d = dns.q(&["example.com.", "SOA"]);
        d.answers("SOA")[0]
            .split_whitespace()
            .nth(2)
            .expect("serial")
            .parse()
            .expect("number")
    };
    let before = serial(&dns);

    // Adds, with a prerequisite that the name is free; over UDP.
    let (ok, out) = nsupdate(
        &dns,
        Some(&ddns()),
        &[],
        &[
            "prereq nxdomain app.example.com.",
            "update add app.example.com. 120 A 192.0.2.10",
            "update add app.example.com. 120 A 192.0.2.11",
            "update add app.example.com. 120 TXT \"owner=team-a\"",
            "update add mail.example.com. 300 MX 10 mx1.example.org.",
            "update add alias.example.com. 60 CNAME web.example.com.",
        ],
    );
    assert!(ok, "{out}");
    dns.await_answer("app.example.com.", "A", &["192.0.2.10", "192.0.2.11"]);
    dns.await_answer("app.example.com.", "TXT", &["\"owner=team-a\""]);
    dns.await_answer("mail.example.com.", "MX", &["10 mx1.example.org."]);
    assert_eq!(
        dns.q(&["alias.example.com.", "CNAME"]).answers("CNAME"),
        ["web.example.com."]
    );
    assert!(serial(&dns) > before, "the serial follows etcd's revision");
    let written: Vec<_> = keys(&etcd)
        .into_iter()
        .filter(|(k, _)| k.contains("/_u-"))
        .collect();
    assert_eq!(written.len(), 5, "{written:?}");
    for (k, v) in &written {
        assert!(v.contains(r#""managed-by":"rfc2136/ddns""#), "{k} {v}");
    }
    // The same prerequisite again: the name is in use now.
    let (ok, out) = nsupdate(
        &dns,
        Some(&ddns()),
        &[],
        &[
            "prereq nxdomain app.example.com.",
            "update add app.example.com. 120 A 192.0.2.99",
        ],
    );
    assert!(!ok && out.contains("YXDOMAIN"), "{out}");

    // Replace the A RRset if it is exactly what we added; over TCP (-v).
    let (ok, out) = nsupdate(
        &dns,
        Some(&ddns()),
        &["-v"],
        &[
            "prereq yxrrset app.example.com. A 192.0.2.10",
            "prereq yxrrset app.example.com. A 192.0.2.11",
            "update delete app.example.com. A",
            "update add app.example.com. 120 A 192.0.2.20",
        ],
    );
    assert!(ok, "{out}");
    dns.await_answer("app.example.com.", "A", &["192.0.2.20"]);
    // A value prerequisite that does not hold changes nothing.
    let snapshot = keys(&etcd);
    let (ok, out) = nsupdate(
        &dns,
        Some(&ddns()),
        &[],
        &[
            "prereq yxrrset app.example.com. A 192.0.2.10",
            "update delete app.example.com. A",
        ],
    );
    assert!(!ok && out.contains("NXRRSET"), "{out}");
    assert_eq!(keys(&etcd), snapshot);

    // Delete one record, then a whole name.
    let (ok, out) = nsupdate(
        &dns,
        Some(&ddns()),
        &[],
        &["update delete app.example.com. TXT \"owner=team-a\""],
    );
    assert!(ok, "{out}");
    dns.await_answer("app.example.com.", "TXT", &[]);
    let (ok, out) = nsupdate(
        &dns,
        Some(&ddns()),
        &[],
        &["update delete app.example.com."],
    );
    assert!(ok, "{out}");
    wait_status(&dns, "app.example.com.", "NXDOMAIN");
    assert!(keys(&etcd).iter().all(|(k, _)| !k.contains("/app/")));
}

fn wait_status(dns: &Dns, name: &str, status: &str) {
    fedplane_testkit::wait_until(common::WAIT, &format!("{name} to answer {status}"), || {
        (dns.q(&[name, "A"]).status == status).then_some(())
    });
}

#[test]
fn updates_never_change_another_writers_keys() {
    tools();
    let etcd = Etcd::start();
    etcd.put("/skydns/com/example/web/c1/a", CONTROLLER);
    etcd.put(
        "/skydns/com/example/ext/x1",
        r#"{"host":"10.0.0.7","owner":"external-dns"}"#,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = server(&etcd, dir.path());
    dns.await_answer("web.example.com.", "A", &["10.0.0.1"]);
    let (ok, out) = nsupdate(
        &dns,
        Some(&ddns()),
        &[],
        &["update add mine.example.com. 60 A 192.0.2.1"],
    );
    assert!(ok, "{out}");
    dns.await_answer("mine.example.com.", "A", &["192.0.2.1"]);
    let before = keys(&etcd);

    let other = format!("hmac-sha512:other:{OTHER_SECRET}");
    for (key, lines) in [
        // The controller's record, its RRset, its name.
        (ddns(), vec!["update delete web.example.com. A 10.0.0.1"]),
        (ddns(), vec!["update delete web.example.com. A"]),
        (ddns(), vec!["update delete web.example.com."]),
        // A name below the controller's: web would answer it too (SkyDNS aggregates).
        (
            ddns(),
            vec!["update add evil.web.example.com. 60 A 6.6.6.6"],
        ),
        // An ExternalDNS record (no fedplane marker).
        (ddns(), vec!["update delete ext.example.com. A"]),
        // A harmless add first: the whole update is refused, the add too.
        (
            ddns(),
            vec![
                "update add fresh.example.com. 60 A 192.0.2.5",
                "update delete web.example.com. A",
            ],
        ),
        // Another TSIG key's records.
        (other.clone(), vec!["update delete mine.example.com. A"]),
        // fedplane's own NS data and record types it cannot hold.
        (
            ddns(),
            vec!["update add example.com. 60 NS ns9.example.org."],
        ),
        (
            ddns(),
            vec!["update add srv.example.com. 60 SRV 0 0 80 web.example.com."],
        ),
    ] {
        let (ok, out) = nsupdate(&dns, Some(&key), &[], &lines);
        assert!(!ok && out.contains("REFUSED"), "{lines:?}: {out}");
        assert_eq!(keys(&etcd), before, "{lines:?} changed etcd");
    }
    // A CNAME beside other data is ignored (RFC 2136 §3.4.2.2), not an error.
    let (ok, out) = nsupdate(
        &dns,
        Some(&ddns()),
        &[],
        &["update add web.example.com. 60 CNAME x.example.org."],
    );
    assert!(ok, "{out}");
    assert_eq!(keys(&etcd), before);

    // Unsigned, badly signed, and a key this client may not use: nothing changes.
    let (ok, out) = nsupdate(
        &dns,
        None,
        &[],
        &["update add u.example.com. 60 A 192.0.2.2"],
    );
    assert!(!ok && out.contains("REFUSED"), "unsigned: {out}");
    let wrong = "hmac-sha256:ddns:d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCB3cm9uZyE=";
    let (ok, out) = nsupdate(
        &dns,
        Some(wrong),
        &[],
        &["update add u.example.com. 60 A 192.0.2.2"],
    );
    assert!(!ok, "bad signature accepted: {out}");
    let unknown = format!("hmac-sha256:nokey:{SECRET}");
    let (ok, out) = nsupdate(
        &dns,
        Some(&unknown),
        &[],
        &["update add u.example.com. 60 A 192.0.2.2"],
    );
    assert!(!ok, "unknown key accepted: {out}");
    // A zone not served here.
    let (ok, out) = run(
        "nsupdate",
        &["-y", &ddns()],
        &format!(
            "server 127.0.0.1 {}\nzone example.org.\nupdate add a.example.org. 60 A 192.0.2.3\nsend\n",
            dns.port
        ),
    );
    assert!(!ok && out.contains("NOTAUTH"), "{out}");
    assert_eq!(keys(&etcd), before);
    assert!(dns.metric("fedplane_dns_updates_total", "REFUSED") >= 10.0);

    // Many sibling names (`web-1`, `web-2`, … sort between `web` and `web/`) are not the
    // name's keys: they neither count against its limit nor guard its transaction.
    for i in 0..100 {
        etcd.put(
            &format!("/skydns/com/example/mine-{i}"),
            r#"{"host":"10.9.0.1"}"#,
        );
    }
    let (ok, out) = nsupdate(
        &dns,
        Some(&ddns()),
        &[],
        &["update add mine.example.com. 60 A 192.0.2.9"],
    );
    assert!(ok, "{out}");
    dns.await_answer("mine.example.com.", "A", &["192.0.2.1", "192.0.2.9"]);
    let (ok, out) = nsupdate(
        &dns,
        Some(&ddns()),
        &[],
        &["update delete mine.example.com. A 192.0.2.9"],
    );
    assert!(ok, "{out}");
    dns.await_answer("mine.example.com.", "A", &["192.0.2.1"]);
}

#[test]
fn nsupdate_with_a_key_file_and_knsupdate_interoperate() {
    tools();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = server(&etcd, dir.path());
    dns.await_ready(common::WAIT);
    // nsupdate -k with the same BIND key file the server reads.
    let keyfile = dir.path().join("ddns.key");
    let script = format!(
        "server 127.0.0.1 {}\nzone example.com.\nupdate add k.example.com. 60 AAAA 2001:db8::1\nsend\n",
        dns.port
    );
    let (ok, out) = run("nsupdate", &["-k", &keyfile.display().to_string()], &script);
    assert!(ok, "{out}");
    dns.await_answer("k.example.com.", "AAAA", &["2001:db8::1"]);
    // knsupdate: prerequisite, add and delete.
    let script = format!(
        "server 127.0.0.1 {}\nzone example.com.\nprereq yxrrset k.example.com. AAAA\nadd kn.example.com. 60 A 192.0.2.44\ndel k.example.com. AAAA 2001:db8::1\nsend\nanswer\n",
        dns.port
    );
    let (ok, out) = run("knsupdate", &["-y", &ddns()], &script);
    assert!(ok && !out.contains("REFUSED"), "{out}");
    dns.await_answer("kn.example.com.", "A", &["192.0.2.44"]);
    dns.await_answer("k.example.com.", "AAAA", &[]);
    // Through the knsupdate path too: another key's record refused.
    etcd.put("/skydns/com/example/web/c1/a", CONTROLLER);
    dns.await_answer("web.example.com.", "A", &["10.0.0.1"]);
    let script = format!(
        "server 127.0.0.1 {}\nzone example.com.\ndel web.example.com. A\nsend\nanswer\n",
        dns.port
    );
    let (_, out) = run("knsupdate", &["-y", &ddns()], &script);
    assert!(out.contains("REFUSED"), "{out}");
    dns.await_answer("web.example.com.", "A", &["10.0.0.1"]);
}

#[test]
fn updates_are_refused_unless_allowed() {
    tools();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("s");
    std::fs::write(&secret, SECRET).expect("secret");
    let key = format!("ddns:hmac-sha256:{}", secret.display());
    // A key but no --allow-update: nobody may update.
    let dns = Dns::on(&etcd).args(&["--tsig-key", &key]).start();
    let (ok, out) = nsupdate(
        &dns,
        Some(&ddns()),
        &[],
        &["update add a.example.com. 60 A 192.0.2.1"],
    );
    assert!(!ok && out.contains("REFUSED"), "{out}");
    assert!(keys(&etcd).is_empty());
    // --allow-update without a key is a configuration error.
    let out = Command::new(fedplane_testkit::workspace_bin("fedplane-dns"))
        .args(["--zone", "example.com.", "--allow-update", "127.0.0.0/8"])
        .output()
        .expect("run fedplane-dns");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("must be signed"),
        "{err}"
    );
}

/// A signed UPDATE adding `name` A `ip`, as raw bytes (the key file is the server's).
fn signed_add(dir: &Path, id: u16, name: &str, ip: &str) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};
    let mut m = Message::new(id, MessageType::Query, OpCode::Update);
    m.queries.push(Query::query(
        Name::from_ascii("example.com.").expect("name"),
        RecordType::SOA,
    ));
    m.authorities.push(Record::from_rdata(
        Name::from_ascii(name).expect("name"),
        60,
        RData::A(A(ip.parse().expect("ip"))),
    ));
    let mut bytes = m.to_vec().expect("encode");
    let spec = format!("ddns:hmac-sha256:{}", dir.join("ddns.key").display());
    let key = std::sync::Arc::new(fedplane_dns::tsig::Key::from_spec(&spec).expect("key"));
    fedplane_dns::tsig::Signer::for_request(key).sign(&mut bytes, fedplane_dns::tsig::unix_now());
    bytes
}

/// Sends `msg` over UDP to `dns` and returns the answer's RCODE.
fn exchange_udp(dns: &Dns, msg: &[u8], wait: std::time::Duration) -> Option<u8> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(wait)).expect("timeout");
    s.send_to(msg, dns.addr()).expect("send");
    let mut buf = [0u8; 4096];
    s.recv(&mut buf).ok()?;
    Some(buf[3] & 0x0F)
}

#[test]
fn a_replayed_update_gets_its_answer_again_and_is_not_applied_twice() {
    tools();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = server(&etcd, dir.path());
    dns.await_ready(common::WAIT);
    let msg = signed_add(dir.path(), 77, "r.example.com.", "192.0.2.77");
    assert_eq!(exchange_udp(&dns, &msg, common::WAIT), Some(0));
    dns.await_answer("r.example.com.", "A", &["192.0.2.77"]);
    // Someone removes it; the same signed message again (a retransmission, or a replay
    // within the TSIG fudge) is answered as before and does not bring it back.
    let (key, _) = keys(&etcd)
        .into_iter()
        .find(|(k, _)| k.contains("/r/_u-"))
        .expect("written");
    etcd.del(&key);
    dns.await_answer("r.example.com.", "A", &[]);
    assert_eq!(exchange_udp(&dns, &msg, common::WAIT), Some(0));
    assert!(keys(&etcd).is_empty(), "the replay was applied");
}

#[test]
fn with_etcd_away_updates_fail_within_bounds_and_the_queue_drains() {
    tools();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = server(&etcd, dir.path());
    dns.await_ready(common::WAIT);
    // etcd hangs (SIGSTOP): every request to it times out.
    etcd.signal("STOP");
    let started = std::time::Instant::now();
    let sockets: Vec<std::net::UdpSocket> = (0..3u16)
        .map(|i| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_read_timeout(Some(std::time::Duration::from_secs(12)))
                .expect("timeout");
            let msg = signed_add(
                dir.path(),
                100 + i,
                &format!("h{i}.example.com."),
                "192.0.2.1",
            );
            s.send_to(&msg, dns.addr()).expect("send");
            s
        })
        .collect();
    let answers: Vec<Option<u8>> = sockets
        .iter()
        .map(|s| {
            let mut buf = [0u8; 4096];
            s.recv(&mut buf).ok().map(|_| buf[3] & 0x0F)
        })
        .collect();
    // The first waits out the deadline (5 s); the others, queued behind it for longer than
    // the 3 s a client waits, are answered at once without touching etcd.
    assert_eq!(answers, vec![Some(2), Some(2), Some(2)], "SERVFAIL each");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Queries are answered meanwhile (from memory).
    assert_eq!(dns.q(&["example.com.", "SOA"]).status, "NOERROR");
    etcd.signal("CONT");
    let msg = signed_add(dir.path(), 200, "back.example.com.", "192.0.2.2");
    assert_eq!(exchange_udp(&dns, &msg, common::WAIT), Some(0));
    dns.await_answer("back.example.com.", "A", &["192.0.2.2"]);
}
