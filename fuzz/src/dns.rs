//! The targets of fedplane-dns: queries through both answer paths, SkyDNS values and keys, the
//! YAML config file, the `--state-dir` snapshot file, and TSIG and transfer requests.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use clap::Parser;
use fedplane_dns::answer::{AnswerOptions, Asker, Context, Outcome, Transport, respond_to};
use fedplane_dns::config::{Cli, Settings};
use fedplane_dns::fast::{MAX_FAST_RESPONSE, Table, respond_fast_to};
use fedplane_dns::federation::Federations;
use fedplane_dns::index::{Records, Zones};
use fedplane_dns::key::{check_key, key_to_name, key_wire, name_to_key};
use fedplane_dns::record::Record;
use fedplane_dns::state;
use fedplane_dns::topology::Topology;
use fedplane_dns::transfer;
use fedplane_dns::tsig::{self, Algorithm, Key, Keys, Signer};
use fedplane_testkit::dns_view;
use hickory_proto::rr::Name;

use crate::InputFile;

/// The zones every DNS target serves: a zone with a nested zone, and a reverse zone.
fn zones() -> Arc<Zones> {
    let names: Vec<Name> = ["example.com.", "sub.example.com.", "0.0.10.in-addr.arpa."]
        .iter()
        .map(|n| Name::from_ascii(n).expect("zone"))
        .collect();
    Arc::new(Zones::new("/skydns", &names))
}

/// The records every `dns_query` input is asked against: a zone with a nested zone and a
/// reverse zone; addresses, a CNAME, TXT, MX, SRV, SkyDNS groups, a leased record, IPv6, a
/// name with more records than the fast path compiles, addresses with localities and with
/// weights.
fn served() -> &'static (Records, Table) {
    static SERVED: OnceLock<(Records, Table)> = OnceLock::new();
    SERVED.get_or_init(|| {
        let mut records = Records::new(zones(), 1);
        let mut put = |key: &str, value: &str, lease: i64| {
            let revision = 2 + i64::try_from(records.len()).unwrap_or(0);
            let record = Record::parse(value.as_bytes()).expect("valid value");
            records.put(key, record, lease, revision);
        };
        let hw = "/skydns/com/example/svc/federation/default/hello-world";
        put(
            &format!("{hw}/fcp"),
            r#"{"host":"10.210.1.68","ttl":30}"#,
            0,
        );
        put(
            &format!("{hw}/usa"),
            r#"{"host":"10.210.3.65","ttl":30}"#,
            0,
        );
        put(&format!("{hw}/v6"), r#"{"host":"2001:db8::1","ttl":30}"#, 0);
        put(
            "/skydns/com/example/alias",
            r#"{"host":"hello-world.default.federation.svc.example.com"}"#,
            0,
        );
        put(
            "/skydns/com/example/web/x1",
            r#"{"host":"10.0.0.1","port":8080,"priority":10,"weight":5}"#,
            0,
        );
        put(
            "/skydns/com/example/web/x2",
            r#"{"host":"backend.example.org","port":443}"#,
            0,
        );
        put(
            "/skydns/com/example/mail/m1",
            r#"{"host":"mx.example.com","mail":true,"priority":10}"#,
            0,
        );
        put("/skydns/com/example/txt", r#"{"text":"v=spf1 -all"}"#, 0);
        put(
            "/skydns/com/example/grp/a",
            r#"{"host":"10.1.0.1","group":"g1"}"#,
            0,
        );
        put(
            "/skydns/com/example/grp/b/c",
            r#"{"host":"10.1.0.2","group":"g2"}"#,
            0,
        );
        put(
            "/skydns/com/example/leased",
            r#"{"host":"10.2.0.1","ttl":300}"#,
            42,
        );
        put("/skydns/com/example/sub/inner", r#"{"host":"10.3.0.1"}"#, 0);
        put(
            "/skydns/arpa/in-addr/10/0/0/1",
            r#"{"host":"hello-world.example.com"}"#,
            0,
        );
        for i in 0..80 {
            put(
                &format!("/skydns/com/example/big/r{i}"),
                &format!(r#"{{"host":"10.9.0.{i}","port":80}}"#),
                0,
            );
        }
        for (leaf, value) in [
            (
                "fcp",
                r#"{"host":"10.210.1.68","zone":"fr","region":"europe"}"#,
            ),
            (
                "ber",
                r#"{"host":"10.210.4.68","zone":"de","region":"europe"}"#,
            ),
            (
                "usa",
                r#"{"host":"10.210.3.65","zone":"us","region":"america"}"#,
            ),
            (
                "v6",
                r#"{"host":"2001:db8::68","region":"europe","weight":2}"#,
            ),
            ("w1", r#"{"host":"10.210.5.1","weight":3}"#),
        ] {
            put(&format!("/skydns/com/example/gslb/{leaf}"), value, 0);
        }
        records.mark_loaded();
        let table = Table::compile(&records);
        (records, table)
    })
}

/// The topology map and federation short names of the `dns_query` runs with a context.
fn context() -> &'static (Topology, Federations) {
    static CONTEXT: OnceLock<(Topology, Federations)> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        let map = Topology::from_yaml(
            "- {cidr: 10.1.0.0/16, region: europe, zone: fr}\n- {cidr: 10.2.0.0/16, region: america}\n- {cidr: 10.0.0.0/8, region: asia}\n",
        )
        .expect("a valid map");
        let feds = Federations::new(
            &["federation=example.com".into()],
            "cluster.local",
            "zone=fr,region=europe",
        )
        .expect("valid federations");
        (map, feds)
    })
}

/// A DNS message as a query, through the general path and the fast path, over UDP and TCP,
/// with three payload limits of ours, and once more with a topology map and federation short
/// names: the general path answers within the size allowed and with a message that parses;
/// whenever the fast path answers, the general path answers the same (as a resolver sees it:
/// sections, flags, RCODE, EDNS and its options).
pub fn dns_query(data: &[u8]) {
    let (records, table) = served();
    let (map, feds) = context();
    let now = Instant::now();
    let plain = AnswerOptions::default();
    // Our three payload limits, then with a topology map (the client's address from the
    // input's ID, in or out of the map's blocks) and the federation short names.
    let runs = [
        (512u16, plain, Context::default()),
        (1232, plain, Context::default()),
        (4096, plain, Context::default()),
        (
            1232,
            AnswerOptions {
                by_locality: true,
                short_names: true,
                ..plain
            },
            Context {
                asker: Some(Asker {
                    addr: IpAddr::from([10, data.first().copied().unwrap_or(0) % 4, 0, 1]),
                    topology: map,
                }),
                federations: Some(feds),
                reserve: 0,
            },
        ),
    ];
    for (ours, opts, ctx) in runs {
        let opts = AnswerOptions {
            max_udp_payload: ours,
            ..opts
        };
        for transport in [Transport::Udp, Transport::Tcp] {
            let rotation = usize::from(data.get(1).copied().unwrap_or(0));
            let general = respond_to(records, data, transport, opts, now, rotation, ctx);
            if let Outcome::Reply { bytes, .. } = &general {
                let limit = match transport {
                    Transport::Udp => usize::from(ours.max(512)),
                    Transport::Tcp => usize::from(u16::MAX),
                };
                assert!(
                    bytes.len() <= limit,
                    "a {}-byte answer over {transport:?} (limit {limit})",
                    bytes.len()
                );
                let _ = dns_view(bytes); // parses, or panics saying so
            }
            let mut out = [0u8; MAX_FAST_RESPONSE];
            let rotation = usize::from(data.get(1).copied().unwrap_or(0));
            if let Some(n) = respond_fast_to(
                records, table, data, opts, rotation, &mut out, transport, ctx.asker,
            ) {
                let Outcome::Reply { bytes, .. } = general else {
                    panic!("the fast path answered a query the general path drops: {general:?}")
                };
                assert_eq!(
                    dns_view(&out[..n]),
                    dns_view(&bytes),
                    "fast and general path disagree over {transport:?}, payload {ours}"
                );
            }
        }
    }
}

/// An etcd value as a SkyDNS record: never a panic, and the same verdict every time.
pub fn skydns_value(data: &[u8]) {
    let first = Record::parse(data);
    let again = Record::parse(data);
    assert_eq!(first.is_ok(), again.is_ok());
    if let (Ok(a), Ok(b)) = (first, again) {
        assert_eq!(a, b);
    }
}

/// An etcd key: the one mapping from key to name agrees with itself (`check_key`,
/// `key_wire`, `key_to_name`), and a key that names something maps back to itself.
pub fn etcd_key(data: &[u8]) {
    for prefix in ["/skydns", ""] {
        let checked = check_key(prefix, data);
        let wire = key_wire(prefix, data);
        assert_eq!(
            checked.is_ok(),
            wire.is_ok(),
            "check_key and key_wire disagree"
        );
        let Ok(key) = std::str::from_utf8(data) else {
            assert!(checked.is_err(), "a key that is not UTF-8 names nothing");
            continue;
        };
        let name = key_to_name(prefix, key);
        assert_eq!(
            checked.is_ok(),
            name.is_some(),
            "check_key and key_to_name disagree"
        );
        if let (Some(name), Ok(wire)) = (name, wire) {
            assert_eq!(
                name_to_key(prefix, &name).as_deref(),
                Some(key),
                "the name maps back to another key"
            );
            let mut ours = Vec::new();
            for label in name.iter() {
                ours.push(u8::try_from(label.len()).expect("a label"));
                ours.extend(label.iter().map(u8::to_ascii_lowercase));
            }
            ours.push(0);
            assert_eq!(ours, wire, "key_wire and key_to_name name different names");
        }
    }
}

/// The YAML config file of fedplane-dns (`--config`), read and resolved as the daemon does:
/// never a panic, and an error is a message.
pub fn dns_config(data: &[u8]) {
    let file = InputFile::new("dns-config.yaml", data);
    let cli =
        Cli::try_parse_from(["fedplane-dns", "--config", file.path()]).expect("the command line");
    if let Err(e) = Settings::resolve(cli, None) {
        assert!(!e.to_string().trim().is_empty(), "an empty error: {e:?}");
    }
}

/// A `--state-dir` snapshot file, as it is and with its checksum line made to hold (so the
/// input gets past the checksum): a file that loads encodes back to one that loads to the same
/// records, and re-encodes byte for byte.
pub fn dns_state(data: &[u8]) {
    let zones = zones();
    let path = Path::new(state::STATE_FILE);
    for bytes in [data.to_vec(), state::seal(data)] {
        let Ok(loaded) = state::decode(path, &bytes, &zones) else {
            continue;
        };
        let encode = |l: &state::Loaded| {
            let mut out = Vec::new();
            state::encode(&mut out, &l.records, l.cluster_id, l.saved_at).expect("encode");
            out
        };
        let once = encode(&loaded);
        let back = state::decode(path, &once, &zones)
            .unwrap_or_else(|e| panic!("our own state file does not load: {e}"));
        assert_eq!(
            back.skipped, 0,
            "our own state file has values that do not parse"
        );
        assert_eq!(back.records.len(), loaded.records.len());
        assert_eq!(back.records.revision(), loaded.records.revision());
        assert_eq!(back.cluster_id, loaded.cluster_id);
        // Saved times are kept to the millisecond, which a second encoding keeps exactly.
        let ms = |t: std::time::SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_millis()
        };
        assert_eq!(ms(back.saved_at), ms(loaded.saved_at));
        assert_eq!(
            encode(&back),
            once,
            "decode → encode → decode → encode changed the file"
        );
    }
}

/// The TSIG key every `dns_transfer` input is checked and signed with.
fn tsig_keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = Key::new(
            "xfr.",
            Algorithm::HmacSha256,
            b"0123456789abcdef0123456789abcdef",
        )
        .expect("a key");
        Keys::new(vec![key]).expect("keys")
    })
}

/// A message as a signed request and as a transfer request: its TSIG record is found (or the
/// message is refused as malformed) without a panic, the message without it is what precedes
/// it, and a failed check gets a NOTAUTH reply that carries the error; the same message signed
/// by us verifies; a transfer request is answered with messages that each parse and fit a TCP
/// frame, the zone framed by its SOA.
pub fn dns_transfer(data: &[u8]) {
    let keys = tsig_keys();
    let now = 1_800_000_000;
    if let Ok(Some(found)) = tsig::locate(data) {
        assert!(found.question_end <= found.start && found.start < data.len());
        assert_eq!(tsig::strip(data, &found).len(), found.start);
        if let Err(failure) = keys.verify(data, &found, now) {
            let reply = tsig::error_reply(data, &found, &failure, now);
            assert!(reply.len() >= 12 && reply[2] & 0x80 != 0, "a response");
            if reply[3] & 0x0F == tsig::NOTAUTH {
                let back = tsig::locate(&reply)
                    .expect("our reply reads")
                    .expect("with a TSIG");
                assert_ne!(back.error, 0, "the error is named");
            }
        }
    }
    // Signed by us, the message (its own TSIG left out) verifies.
    if data.len() >= 12 {
        let mut msg = data.to_vec();
        msg[10..12].fill(0);
        let len = msg.len();
        let key = keys
            .get(&Name::from_ascii("xfr.").expect("name"))
            .expect("key")
            .clone();
        Signer::for_request(key).sign(&mut msg, now);
        // (A message whose last record runs past its end reads our TSIG as part of it: then
        // another record is found, or none.)
        if let Ok(Some(found)) = tsig::locate(&msg)
            && found.start == len
        {
            assert!(
                keys.verify(&msg, &found, now).is_ok(),
                "our own signature verifies"
            );
        }
    }
    let (records, _) = served();
    if transfer::transfer_type(data).is_none() {
        return;
    }
    let Ok(req) = transfer::parse(records, data) else {
        return;
    };
    for answer in [transfer::Answer::Zone, transfer::Answer::Soa] {
        let Some(stream) =
            transfer::Stream::new(records, req.clone(), answer, None, || 1_800_000_000)
        else {
            continue;
        };
        let mut soas = 0;
        let mut messages = 0;
        for msg in stream {
            assert!(msg.len() <= usize::from(u16::MAX), "fits a TCP frame");
            let m = hickory_proto::op::Message::from_vec(&msg).expect("our message parses");
            assert_eq!(m.metadata.id, req.id);
            soas += m
                .answers
                .iter()
                .filter(|r| r.record_type() == hickory_proto::rr::RecordType::SOA)
                .count();
            messages += 1;
        }
        assert!(messages >= 1);
        assert!(
            soas == 1 || soas == 2,
            "a single SOA, or the zone between two: {soas}"
        );
    }
}

/// The keys every `dns_update` input is planned against: ours, the controller's, an
/// unmarked one, another key's, and one of the nested zone.
fn update_keys() -> std::collections::BTreeMap<String, Vec<u8>> {
    [
        (
            "/skydns/com/example/web/_u-1",
            r#"{"host":"10.0.0.1","managed-by":"rfc2136/ddns"}"#,
        ),
        (
            "/skydns/com/example/web/c1/a",
            r#"{"host":"10.0.0.2","managed-by":"fedplane-controller/f"}"#,
        ),
        ("/skydns/com/example/www", r#"{"host":"web.example.com"}"#),
        (
            "/skydns/com/example/mx/_u-2",
            r#"{"host":"mx.example.org.","mail":true,"managed-by":"rfc2136/ddns"}"#,
        ),
        (
            "/skydns/com/example/other/_u-3",
            r#"{"text":"t","managed-by":"rfc2136/other"}"#,
        ),
        (
            "/skydns/com/example/dns/apex/_u-4",
            r#"{"text":"apex","managed-by":"rfc2136/ddns"}"#,
        ),
        (
            "/skydns/com/example/sub/x/_u-5",
            r#"{"host":"10.0.0.5","managed-by":"rfc2136/ddns"}"#,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
    .collect()
}

/// A message as an RFC 2136 UPDATE, planned against fixed keys: the plan never panics, never
/// changes or removes a key that is not the update key's own (its owner marker, its zone),
/// writes only keys of the zone marked with that owner, and stays within one etcd
/// transaction; the answer to it parses.
pub fn dns_update(data: &[u8]) {
    use fedplane_dns::update;
    let Ok(msg) = hickory_proto::op::Message::from_vec(data) else {
        return;
    };
    let reply = update::reply(&msg, hickory_proto::op::ResponseCode::Refused);
    hickory_proto::op::Message::from_vec(&reply).expect("our answer parses");
    let zones = zones();
    let Ok(req) = update::check(&msg, &zones) else {
        return;
    };
    let Ok(ranges) = update::ranges(&req, zones.prefix()) else {
        return;
    };
    let read: std::collections::BTreeMap<String, Vec<u8>> = update_keys()
        .into_iter()
        .filter(|(k, _)| ranges.iter().any(|b| update::in_range(b, k)))
        .collect();
    let owner = "rfc2136/ddns";
    let Ok(plan) = update::plan(&req, zones.clone(), &read, owner) else {
        return;
    };
    assert!(plan.puts.len() + plan.deletes.len() <= update::MAX_TXN_OPS);
    for k in &plan.deletes {
        let v = read.get(k).expect("only keys that were read are deleted");
        assert_eq!(update::owner_of(v).as_deref(), Some(owner), "deleted {k}");
        assert_eq!(
            zones.find_key(k),
            Some(req.zi),
            "deleted {k} of another zone"
        );
    }
    for (k, v) in &plan.puts {
        assert_eq!(
            update::owner_of(v.as_bytes()).as_deref(),
            Some(owner),
            "wrote {k}"
        );
        assert_eq!(
            zones.find_key(k),
            Some(req.zi),
            "wrote {k} outside the zone"
        );
        if let Some(old) = read.get(k) {
            assert_eq!(
                update::owner_of(old).as_deref(),
                Some(owner),
                "overwrote {k}"
            );
        }
        Record::parse(v.as_bytes()).expect("what we write reads back as a record");
        check_key(zones.prefix(), k.as_bytes()).expect("what we write is a valid key");
    }
}
