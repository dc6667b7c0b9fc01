//! Keys and names end to end (real etcd, the real binary, real dig): keys no query can reach
//! (`//`, a trailing `/`, upper case, non-ASCII, not UTF-8, a label over 63 bytes) answer
//! nothing, over UDP (the fast path) and TCP (the general path) alike, whether the server
//! loaded them at start or saw them through the watch; they are logged and counted once; a
//! query label holding `/` matches no other name; a name with groups past the fast path's read
//! answers the same over both transports.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use fedplane_testkit::{Etcd, wait_until};

mod common;
use common::{Dns, WAIT};

const LONG_LABEL: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"; // 64

/// What a resolver sees of `name TYPE` from `dns` over UDP (no retry over TCP) or TCP.
fn seen(dns: &Dns, name: &str, rtype: &str, tcp: bool) -> String {
    let transport = if tcp { "+tcp" } else { "+ignore" };
    let d = dns.q(&[name, rtype, transport]);
    let mut additional: Vec<String> = d
        .additional
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.rtype, r.data))
        .collect();
    additional.sort();
    format!(
        "{} tc={} {:?} {:?}",
        d.status,
        d.flag("tc"),
        d.answers(rtype),
        additional
    )
}

/// Puts a key that need not be UTF-8 (the testkit's `put` takes text).
fn put_raw(etcd: &Etcd, key: &[u8], value: &str) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.endpoint()))
        .arg("--command-timeout=5s")
        .arg("put")
        .arg(OsStr::from_bytes(key))
        .arg("--")
        .arg(value)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl put {}: {}",
        key.escape_ascii(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Keys no query can reach: each is logged and counted once.
fn unreachable_keys() -> Vec<(Vec<u8>, String)> {
    vec![
        (b"/skydns/com/example//lone".to_vec(), host("10.0.1.1")),
        (b"/skydns/com/example/svc//y".to_vec(), host("10.0.1.2")),
        ("/skydns/com/example/café".into(), host("10.0.1.3")),
        (b"/skydns/com/example/\xff".to_vec(), host("10.0.1.4")),
        (b"/skydns/com/example/Upper".to_vec(), host("10.0.1.5")),
        (b"/skydns/com/example/trailing/".to_vec(), host("10.0.1.6")),
        (
            format!("/skydns/com/example/svc/{LONG_LABEL}").into_bytes(),
            r#"{"host":"10.0.1.7","port":80}"#.into(),
        ),
    ]
}

fn host(ip: &str) -> String {
    format!(r#"{{"host":"{ip}"}}"#)
}

/// Every key of the test, the unreachable ones among valid ones, then `last`.
fn put_all(etcd: &Etcd) {
    etcd.put(
        "/skydns/com/example/svc/ok",
        r#"{"host":"10.0.1.9","port":80}"#,
    );
    etcd.put("/skydns/com/example/b/x", &host("10.0.2.1"));
    etcd.put("/skydns/com/example/x/b", &host("10.0.2.2"));
    for (key, value) in unreachable_keys() {
        put_raw(etcd, &key, &value);
    }
    // Groups past the fast path's 65-record read: `big/a` (group a) and 64 records below it
    // (group c) come before `big/b` (group b); a and b disagree at the shortest depth, so no
    // group applies and all 66 answer.
    etcd.put(
        "/skydns/com/example/big/a",
        r#"{"host":"10.0.3.1","group":"a"}"#,
    );
    for i in 0..64 {
        etcd.put(
            &format!("/skydns/com/example/big/a/{i:08x}"),
            &format!(r#"{{"host":"10.0.4.{i}","group":"c"}}"#),
        );
    }
    etcd.put(
        "/skydns/com/example/big/b",
        r#"{"host":"10.0.3.2","group":"b"}"#,
    );
    etcd.put("/skydns/com/example/last", &host("10.0.9.9"));
}

const NXDOMAIN: &str = "NXDOMAIN tc=false [] []";

/// The queries and what both transports of both servers must answer.
fn expected() -> Vec<(&'static str, &'static str, String)> {
    let big: Vec<String> = {
        let mut v: Vec<String> = (0..64).map(|i| format!("10.0.4.{i}")).collect();
        v.extend(["10.0.3.1".into(), "10.0.3.2".into()]);
        v.sort();
        v
    };
    vec![
        ("lone.example.com", "A", NXDOMAIN.into()),
        ("y.svc.example.com", "A", NXDOMAIN.into()),
        (r"caf\195\169.example.com", "A", NXDOMAIN.into()),
        (r"\255.example.com", "A", NXDOMAIN.into()),
        ("upper.example.com", "A", NXDOMAIN.into()),
        ("Upper.example.com", "A", NXDOMAIN.into()),
        ("trailing.example.com", "A", NXDOMAIN.into()),
        (
            "svc.example.com",
            "A",
            r#"NOERROR tc=false ["10.0.1.9"] []"#.into(),
        ),
        (
            "svc.example.com",
            "SRV",
            r#"NOERROR tc=false ["10 100 80 ok.svc.example.com."] ["ok.svc.example.com. A 10.0.1.9"]"#
                .into(),
        ),
        // A label holding `/` is one label: never x.b's nor b.x's key.
        (r"x\/b.example.com", "A", NXDOMAIN.into()),
        (r"b\/x.example.com", "A", NXDOMAIN.into()),
        (
            "x.b.example.com",
            "A",
            r#"NOERROR tc=false ["10.0.2.1"] []"#.into(),
        ),
        (
            "big.example.com",
            "A",
            format!("NOERROR tc=false {big:?} []"),
        ),
    ]
}

#[test]
fn keys_no_query_can_reach_answer_nothing_on_every_path_and_are_reported_once() {
    let etcd = Etcd::start();
    // One server sees the keys through the watch, the other loads them at start.
    let watched = Dns::on(&etcd).start();
    put_all(&etcd);
    wait_until(WAIT, "the watch to deliver every key", || {
        (watched.q(&["last.example.com", "A"]).answers("A") == ["10.0.9.9"]).then_some(())
    });
    let loaded = Dns::on(&etcd).start();
    let mut wrong = Vec::new();
    for (name, rtype, want) in expected() {
        for (server, dns) in [("watched", &watched), ("loaded", &loaded)] {
            for (transport, tcp) in [("UDP", false), ("TCP", true)] {
                let seen = seen(dns, name, rtype, tcp);
                if seen != want {
                    wrong.push(format!(
                        "{name} {rtype} from the {server} server over {transport}: {seen}, not {want}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let n = unreachable_keys().len();
    for dns in [&watched, &loaded] {
        #[allow(clippy::cast_precision_loss)]
        let want = n as f64;
        assert_eq!(dns.metric("fedplane_dns_invalid_records_total", ""), want);
        assert_eq!(dns.metric("fedplane_dns_invalid_records ", ""), want);
        let out = dns.daemon.output();
        assert_eq!(out.matches("key no query can reach").count(), n, "{out}");
        assert!(out.contains(r"/skydns/com/example/\\xff"), "{out}");
    }
}
