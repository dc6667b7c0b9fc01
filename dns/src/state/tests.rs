use std::time::Instant;

use hickory_proto::rr::Name;

use super::*;
use crate::index::LEASE_TTL_FLOOR;
use crate::record::Record;

fn zones(prefix: &str, names: &[&str]) -> Arc<Zones> {
    let names: Vec<Name> = names
        .iter()
        .map(|n| Name::from_ascii(n).expect("zone name"))
        .collect();
    Arc::new(Zones::new(prefix, &names))
}

const VALUES: &[(&str, &str, i64)] = &[
    (
        "/skydns/com/example/a",
        r#"{"host":"10.0.0.1","ttl":60}"#,
        0,
    ),
    (
        "/skydns/com/example/v6",
        r#"{"host":"2001:db8::1","zone":"fr","region":"Europe","weight":2}"#,
        0,
    ),
    (
        "/skydns/com/example/leased",
        r#"{"host":"10.0.0.5","ttl":300}"#,
        77,
    ),
    (
        "/skydns/com/example/srv/x",
        r#"{"host":"Target.Example.com","port":8080,"priority":5,"weight":3,"targetstrip":1,"group":"g"}"#,
        0,
    ),
    (
        "/skydns/com/example/noport",
        r#"{"host":"10.0.0.2","port":-1}"#,
        0,
    ),
    (
        "/skydns/com/example/txt",
        r#"{"text":"quote \" slash \\ é ✓\nnewline"}"#,
        0,
    ),
    (
        "/skydns/com/example/mx",
        r#"{"host":"mail.example.com","mail":true,"priority":10,"ttl":4294967295}"#,
        0,
    ),
    (
        "/skydns/com/example/under_score/x-y",
        r#"{"host":"10.0.0.3"}"#,
        0,
    ),
    (
        "/skydns/arpa/in-addr/10/0/0/1",
        r#"{"host":"a.example.com"}"#,
        0,
    ),
];

fn records(zones: &Arc<Zones>) -> Records {
    let mut load = Load::new(zones.clone(), 41);
    let rejected = load.page(
        &InvalidKeys::default(),
        VALUES.iter().map(|(k, v, lease)| Kv {
            key: k.as_bytes(),
            value: v.as_bytes(),
            lease: *lease,
            revision: 40,
        }),
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    load.finish(42).0
}

fn saved(records: &Records) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, records, 7, SystemTime::now()).expect("encode");
    out
}

#[test]
fn a_snapshot_reads_back_as_the_same_records_complete_at_its_revision() {
    let z = zones("/skydns", &["example.com.", "0.0.10.in-addr.arpa."]);
    let r = records(&z);
    let bytes = saved(&r);
    let l = decode(Path::new("s"), &bytes, &z).expect("decodes");
    assert_eq!(l.skipped, 0);
    assert_eq!(l.cluster_id, 7);
    assert!(l.records.is_loaded());
    assert_eq!(l.records.revision(), 42);
    let a: Vec<_> = r.entries().collect();
    let b: Vec<_> = l.records.entries().collect();
    assert_eq!(a, b, "keys, values and lease IDs");
    // every zone's serial is the snapshot's revision
    assert_eq!(l.records.serial(0), 42);
    assert_eq!(l.records.serial(1), 42);
    // leased records answer as ones whose lease is not known yet: the floor
    let leased = b.iter().find(|e| e.lease == 77).expect("leased record");
    assert_eq!(l.records.ttl(leased, Instant::now()), LEASE_TTL_FLOOR);
}

#[test]
fn zone_order_on_the_command_line_does_not_matter_but_other_zones_or_prefix_do() {
    let z = zones("/skydns", &["example.com.", "0.0.10.in-addr.arpa."]);
    let bytes = saved(&records(&z));
    let swapped = zones("/skydns", &["0.0.10.in-addr.arpa.", "Example.COM"]);
    assert!(decode(Path::new("s"), &bytes, &swapped).is_ok());
    for other in [
        zones("/skydns", &["example.com."]),
        zones(
            "/skydns",
            &["example.com.", "0.0.10.in-addr.arpa.", "example.org."],
        ),
        zones("/other", &["example.com.", "0.0.10.in-addr.arpa."]),
    ] {
        let err = decode(Path::new("s"), &bytes, &other).expect_err("other zones");
        assert!(matches!(err, StateError::OtherZones { .. }), "{err}");
        assert!(
            err.to_string().contains("was saved for prefix /skydns"),
            "{err}"
        );
    }
}

#[test]
fn truncated_damaged_and_foreign_files_are_clear_errors() {
    let z = zones("/skydns", &["example.com.", "0.0.10.in-addr.arpa."]);
    let bytes = saved(&records(&z));
    for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 30, bytes.len() - 1] {
        let err = decode(Path::new("s"), &bytes[..cut], &z).expect_err("truncated");
        assert!(
            matches!(err, StateError::Corrupt { .. }),
            "cut at {cut}: {err}"
        );
    }
    // one changed byte inside a value (10.0.0.1 → 10.0.0.7) still parses: the checksum catches it
    let text = String::from_utf8(bytes.clone()).expect("UTF-8");
    let damaged = text.replacen("10.0.0.1", "10.0.0.7", 1);
    let err = decode(Path::new("s"), damaged.as_bytes(), &z).expect_err("damaged");
    assert!(err.to_string().contains("checksum"), "{err}");
    let err = decode(Path::new("s"), b"hello\nworld\n", &z).expect_err("foreign");
    assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
}

#[test]
fn another_format_version_is_refused_by_name() {
    let z = zones("/skydns", &["example.com."]);
    let body = b"{\"format\":\"fedplane-dns-state\",\"version\":2,\"anything\":[]}\n";
    let mut h = Fnv::new();
    h.update(body);
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(format!("{CHECKSUM_PREFIX}{:016x}\n", h.0).as_bytes());
    let err = decode(Path::new("s"), &bytes, &z).expect_err("version 2");
    assert!(matches!(err, StateError::Version { found: 2, .. }), "{err}");
}

#[test]
fn save_replaces_the_file_whole_and_load_reads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let z = zones("/skydns", &["example.com.", "0.0.10.in-addr.arpa."]);
    assert!(
        load(dir.path(), &z, DEFAULT_MAX_AGE)
            .expect("no file is fine")
            .is_none()
    );
    let r = records(&z);
    save(dir.path(), &r, 7).expect("save");
    let mut r2 = r.clone();
    r2.delete("/skydns/com/example/a", 43);
    save(dir.path(), &r2, 7).expect("save again");
    let l = load(dir.path(), &z, DEFAULT_MAX_AGE)
        .expect("loads")
        .expect("a snapshot");
    assert_eq!(l.records.len(), r2.len());
    assert_eq!(l.records.revision(), 43);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [STATE_FILE], "no temporary file left behind");
    let age = SystemTime::now()
        .duration_since(l.saved_at)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "{age:?}");
}

#[tokio::test]
async fn the_saver_writes_the_first_snapshot_at_once_then_coalesces_and_flushes_at_shutdown() {
    const EVERY: Duration = Duration::from_millis(400);
    let dir = tempfile::tempdir().expect("tempdir");
    let z = zones("/skydns", &["example.com.", "0.0.10.in-addr.arpa."]);
    let (saver, handle) =
        Saver::with_intervals(dir.path().to_owned(), EVERY, Duration::from_secs(3600));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(saver.run(cancel.clone()));
    let saved_revision = || {
        load(dir.path(), &z, DEFAULT_MAX_AGE)
            .ok()
            .flatten()
            .map(|l| l.records.revision())
    };
    let wait_for = |want: i64| {
        let saved_revision = &saved_revision;
        async move {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if saved_revision() == Some(want) {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("revision {want} not saved");
        }
    };
    let mut r = records(&z);
    handle.offer(&r, 7);
    assert!(wait_for(42).await < EVERY, "the first snapshot at once");
    // two changes in quick succession: one write, of the latest, once EVERY has passed
    let changed = Instant::now();
    r.delete("/skydns/com/example/a", 43);
    handle.offer(&r, 7);
    r.delete("/skydns/com/example/v6", 44);
    handle.offer(&r, 7);
    wait_for(44).await;
    assert!(
        changed.elapsed() >= EVERY / 2,
        "coalesced, not written at once"
    );
    // a change pending at shutdown is written then
    r.delete("/skydns/com/example/txt", 45);
    handle.offer(&r, 7);
    cancel.cancel();
    task.await.expect("saver ends");
    assert_eq!(saved_revision(), Some(45));
}

#[test]
fn a_file_over_the_cap_is_refused_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let z = zones("/skydns", &["example.com.", "0.0.10.in-addr.arpa."]);
    save(dir.path(), &records(&z), 7).expect("save");
    let size = std::fs::metadata(dir.path().join(STATE_FILE))
        .expect("stat")
        .len();
    let now = SystemTime::now();
    assert!(load_capped(dir.path(), &z, DEFAULT_MAX_AGE, now, size).is_ok());
    let err = load_capped(dir.path(), &z, DEFAULT_MAX_AGE, now, size - 1).expect_err("too big");
    assert!(
        matches!(err, StateError::TooBig { size: s, .. } if s == size),
        "{err}"
    );
    // a (sparse) file just over the real cap: refused at once, without reading a GiB
    let f = File::create(dir.path().join(STATE_FILE)).expect("create");
    f.set_len(MAX_FILE_BYTES + 1).expect("set_len");
    let started = Instant::now();
    let err = load(dir.path(), &z, DEFAULT_MAX_AGE).expect_err("too big");
    assert!(matches!(err, StateError::TooBig { .. }), "{err}");
    assert!(
        err.to_string().contains("more than a state file may be"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "not read");
}

#[test]
fn a_snapshot_older_than_the_max_age_is_refused_with_its_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let z = zones("/skydns", &["example.com.", "0.0.10.in-addr.arpa."]);
    save(dir.path(), &records(&z), 7).expect("save");
    let day = Duration::from_secs(86_400);
    let week = 7 * day;
    let later = |d: Duration| SystemTime::now() + d;
    assert!(load_capped(dir.path(), &z, week, later(6 * day), MAX_FILE_BYTES).is_ok());
    let err =
        load_capped(dir.path(), &z, week, later(8 * day), MAX_FILE_BYTES).expect_err("too old");
    let StateError::TooOld { age, max_age, .. } = &err else {
        panic!("{err}")
    };
    assert!(*age >= 8 * day && *max_age == week, "{err}");
    assert!(err.to_string().contains("--state-max-age"), "{err}");
    // a save time a little in the future (clocks of two hosts) is age 0; more is an unknown
    // age (the clock was ahead then, or went back since): not served
    let earlier = |d: Duration| SystemTime::now() - d;
    assert!(
        load_capped(
            dir.path(),
            &z,
            week,
            earlier(Duration::from_secs(60)),
            MAX_FILE_BYTES
        )
        .is_ok()
    );
    let err = load_capped(dir.path(), &z, week, earlier(day), MAX_FILE_BYTES)
        .expect_err("from the future");
    assert!(
        matches!(err, StateError::FromTheFuture { ahead, .. } if ahead >= day - Duration::from_secs(60)),
        "{err}"
    );
}

#[test]
fn two_processes_saving_into_one_directory_never_break_each_others_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let z = zones("/skydns", &["example.com.", "0.0.10.in-addr.arpa."]);
    // Big enough that writes overlap: a few thousand records.
    let mut r = records(&z);
    for i in 0..3000 {
        let record = Record::parse(br#"{"host":"10.1.2.3","ttl":60}"#).expect("value");
        r.put(&format!("/skydns/com/example/bulk/n{i}"), record, 0, 43);
    }
    std::thread::scope(|s| {
        for cluster in [1, 2] {
            let (dir, r) = (dir.path(), &r);
            s.spawn(move || {
                for _ in 0..40 {
                    save(dir, r, cluster).expect("every save succeeds");
                }
            });
        }
    });
    let l = load(dir.path(), &z, DEFAULT_MAX_AGE)
        .expect("a whole snapshot")
        .expect("there");
    assert_eq!(l.records.len(), r.len());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [STATE_FILE], "no temporary file left behind");
}

#[test]
fn a_failed_save_removes_its_temporary_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let z = zones("/skydns", &["example.com."]);
    // The rename cannot replace a non-empty directory.
    std::fs::create_dir(dir.path().join(STATE_FILE)).expect("mkdir");
    std::fs::write(dir.path().join(STATE_FILE).join("x"), b"x").expect("write");
    let err = save(dir.path(), &records(&z), 7).expect_err("cannot rename");
    assert!(matches!(err, StateError::Write { .. }), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [STATE_FILE]);
}

#[test]
fn only_our_stale_temporary_files_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let make = |name: &str| {
        std::fs::write(dir.path().join(name), b"partial").expect("write");
        dir.path().join(name)
    };
    let stale = make(&temp_name());
    let fresh = make(&temp_name());
    let other = make(".something-else.tmp");
    let old = SystemTime::now() - STALE_TEMP_AFTER - Duration::from_secs(1);
    for p in [&stale, &other] {
        File::options()
            .write(true)
            .open(p)
            .expect("open")
            .set_modified(old)
            .expect("set mtime");
    }
    assert_eq!(remove_stale_temps(dir.path(), SystemTime::now()), 1);
    assert!(!stale.exists());
    assert!(fresh.exists(), "a write in progress is left alone");
    assert!(other.exists(), "not ours");
}

#[test]
fn another_cluster_or_an_older_revision_is_another_history() {
    assert_eq!(other_history(7, 42, 7, 42), None);
    assert_eq!(other_history(7, 42, 7, 50), None);
    let why = other_history(7, 42, 8, 50).expect("another cluster");
    assert!(
        why.contains("cluster 8") && why.contains("cluster 7"),
        "{why}"
    );
    let why = other_history(7, 42, 7, 3).expect("behind");
    assert!(why.contains("revision 3"), "{why}");
}

#[tokio::test]
async fn a_confirmed_snapshot_is_rewritten_once_the_refresh_interval_passed() {
    const EVERY: Duration = Duration::from_millis(50);
    const REFRESH: Duration = Duration::from_millis(300);
    let dir = tempfile::tempdir().expect("tempdir");
    let z = zones("/skydns", &["example.com.", "0.0.10.in-addr.arpa."]);
    let (saver, handle) = Saver::with_intervals(dir.path().to_owned(), EVERY, REFRESH);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(saver.run(cancel.clone()));
    let saved_at = || {
        load(dir.path(), &z, DEFAULT_MAX_AGE)
            .ok()
            .flatten()
            .map(|l| l.saved_at)
    };
    let r = records(&z);
    handle.offer(&r, 7);
    let started = Instant::now();
    let first = loop {
        if let Some(at) = saved_at() {
            break at;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "not saved");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Unconfirmed, nothing is rewritten however long it waits.
    tokio::time::sleep(2 * REFRESH).await;
    assert_eq!(saved_at(), Some(first), "not confirmed: not rewritten");
    // Confirmed (as progress notifications do, every second), rewritten with a later time.
    let started = Instant::now();
    loop {
        handle.confirm();
        if saved_at().is_some_and(|at| at > first) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "not rewritten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    task.await.expect("saver ends");
}

#[test]
fn a_save_stops_writing_at_the_cap() {
    let mut w = Capped {
        inner: Vec::new(),
        written: 0,
        cap: 10,
    };
    w.write_all(b"0123456789").expect("up to the cap");
    let err = w.write_all(b"x").expect_err("past the cap");
    assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
    assert_eq!(w.inner.len(), 10, "nothing past the cap written");
}
