use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn key(name: &str, alg: Algorithm) -> Key {
    Key::new(name, alg, SECRET).expect("key")
}

fn query() -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x1234;
    m.add_query(Query::query(
        Name::from_ascii("example.com.").expect("name"),
        RecordType::SOA,
    ));
    m.to_vec().expect("encode")
}

/// A client's signature on a request (RFC 8945 §4.3: the message, then every variable).
fn sign_request(k: &Key, msg: &[u8], time: u64) -> Vec<u8> {
    let alg = k.alg.wire_name();
    let mut ctx = hmac::Context::with_key(&k.key);
    ctx.update(msg);
    ctx.update(&variables(&k.name_wire, &alg, time, FUDGE, 0, &[]));
    let mac = ctx.sign().as_ref().to_vec();
    let mut out = msg.to_vec();
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    append(&mut out, &k.name_wire, &alg, time, &mac, id, 0, &[]);
    out
}

fn keys(k: Key) -> Keys {
    Keys::new(vec![k]).expect("keys")
}

#[test]
fn a_signed_request_verifies_and_its_tsig_is_found_and_stripped() {
    let now = 1_700_000_000;
    for alg in Algorithm::ALL {
        let k = key("Xfr.Example.", alg);
        let signed = sign_request(&k, &query(), now);
        let found = locate(&signed).expect("reads").expect("has a TSIG");
        assert_eq!(found.start, query().len());
        assert_eq!(strip(&signed, &found), query());
        assert_eq!(found.mac.len(), alg.mac_len());
        let ks = keys(key("xfr.example", alg));
        let v = ks.verify(&signed, &found, now + 10).expect("verifies");
        assert_eq!(v.key.name().to_string(), "xfr.example.");
        assert_eq!(v.request_mac, found.mac);
    }
}

#[test]
fn our_own_requests_are_signed_as_a_client_signs_them() {
    let now = 1_700_000_000;
    let k = Arc::new(key("xfr.", Algorithm::HmacSha512));
    let mut msg = query();
    Signer::for_request(k.clone()).sign(&mut msg, now);
    assert_eq!(msg, sign_request(&k, &query(), now));
    let found = locate(&msg).expect("reads").expect("found");
    assert!(
        keys(key("xfr.", Algorithm::HmacSha512))
            .verify(&msg, &found, now)
            .is_ok()
    );
}

#[test]
fn tampering_wrong_keys_and_clocks_are_told_apart() {
    let now = 1_700_000_000;
    let k = key("xfr.", Algorithm::HmacSha256);
    let signed = sign_request(&k, &query(), now);
    let found = locate(&signed).expect("reads").expect("found");
    let ks = keys(key("xfr.", Algorithm::HmacSha256));

    let mut tampered = signed.clone();
    tampered[3] ^= 0x01;
    let f = locate(&tampered).expect("reads").expect("found");
    assert_eq!(
        ks.verify(&tampered, &f, now).expect_err("bad").error,
        TsigRcode::BadSig
    );

    let other = keys(Key::new("xfr.", Algorithm::HmacSha256, b"another secret").expect("key"));
    assert_eq!(
        other.verify(&signed, &found, now).expect_err("bad").error,
        TsigRcode::BadSig
    );
    let unknown = keys(key("other.", Algorithm::HmacSha256));
    assert_eq!(
        unknown.verify(&signed, &found, now).expect_err("bad").error,
        TsigRcode::BadKey
    );
    let alg = keys(key("xfr.", Algorithm::HmacSha512));
    assert_eq!(
        alg.verify(&signed, &found, now).expect_err("bad").error,
        TsigRcode::BadKey
    );
    let late = ks.verify(&signed, &found, now + 301).expect_err("late");
    assert_eq!(late.error, TsigRcode::BadTime);
    assert!(
        ks.verify(&signed, &found, now - 300).is_ok(),
        "within the fudge"
    );

    // A forwarder changed the ID: the MAC covers the original one.
    let mut reid = signed.clone();
    reid[..2].copy_from_slice(&[9, 9]);
    let f = locate(&reid).expect("reads").expect("found");
    assert!(ks.verify(&reid, &f, now).is_ok());
}

#[test]
fn error_replies_carry_the_error_and_badtime_is_signed() {
    let now = 1_700_000_000;
    let k = key("xfr.", Algorithm::HmacSha256);
    let signed = sign_request(&k, &query(), now);
    let found = locate(&signed).expect("reads").expect("found");
    let ks = keys(key("xfr.", Algorithm::HmacSha256));
    let late = ks.verify(&signed, &found, now + 1000).expect_err("late");
    let reply = error_reply(&signed, &found, &late, now + 1000);
    assert_eq!(reply[3] & 0x0F, NOTAUTH);
    assert_eq!(reply[2] & 0x80, 0x80);
    let back = locate(&reply).expect("reads").expect("signed");
    assert_eq!(back.error, 18);
    assert_eq!(back.time, now, "time signed is the request's");
    assert_eq!(back.other, (now + 1000).to_be_bytes()[2..].to_vec());
    assert_eq!(back.mac.len(), 32);
    let m = Message::from_vec(&reply).expect("hickory reads it");
    assert_eq!(m.queries.len(), 1);

    let unknown = keys(key("other.", Algorithm::HmacSha256));
    let bad = unknown.verify(&signed, &found, now).expect_err("bad");
    let reply = error_reply(&signed, &found, &bad, now);
    let back = locate(&reply).expect("reads").expect("has TSIG");
    assert_eq!((back.error, back.mac.len()), (17, 0));
}

#[test]
fn a_response_stream_chains_its_macs() {
    let now = 1_700_000_000;
    let k = key("xfr.", Algorithm::HmacSha256);
    let signed = sign_request(&k, &query(), now);
    let found = locate(&signed).expect("reads").expect("found");
    let ks = keys(key("xfr.", Algorithm::HmacSha256));
    let v = ks.verify(&signed, &found, now).expect("ok");
    let mut signer = Signer::new(&v);
    let mut prior = v.request_mac.clone();
    for i in 0..3u8 {
        let mut msg = query();
        msg[2] |= 0x80;
        msg.push(i); // not a valid message: the MAC covers bytes
        let unsigned = msg.clone();
        signer.sign(&mut msg, now);
        // What a client checks: the MAC over the prior MAC, the message and the variables
        // (all of them first, the timers after).
        let mut ctx = hmac::Context::with_key(&k.key);
        ctx.update(&u16::try_from(prior.len()).expect("len").to_be_bytes());
        ctx.update(&prior);
        ctx.update(&unsigned);
        if i == 0 {
            ctx.update(&variables(
                &k.name_wire,
                &k.alg.wire_name(),
                now,
                FUDGE,
                0,
                &[],
            ));
        } else {
            ctx.update(&now.to_be_bytes()[2..]);
            ctx.update(&FUDGE.to_be_bytes());
        }
        let want = ctx.sign().as_ref().to_vec();
        let tail = &msg[unsigned.len()..];
        assert!(
            tail.windows(want.len()).any(|w| w == want.as_slice()),
            "message {i}"
        );
        assert_eq!(u16::from_be_bytes([msg[10], msg[11]]), 1);
        prior = want;
    }
}

#[test]
fn a_tsig_that_is_not_last_is_malformed() {
    let k = key("xfr.", Algorithm::HmacSha256);
    let mut twice = sign_request(&k, &query(), 1);
    let tail = twice[query().len()..].to_vec();
    twice.extend_from_slice(&tail);
    twice[10..12].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(locate(&twice), Err(Malformed));
    assert_eq!(locate(&query()), Ok(None));
    assert_eq!(locate(&[0; 5]), Err(Malformed));
    let mut truncated = sign_request(&k, &query(), 1);
    truncated.pop();
    assert_eq!(locate(&truncated), Err(Malformed));
}

#[test]
fn key_specs_read_bare_and_bind_secrets_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bare = dir.path().join("bare");
    std::fs::write(&bare, "MDEyMzQ1Njc4OWFiY2RlZg==\n").expect("write");
    let bind = dir.path().join("bind.key");
    std::fs::write(
        &bind,
        "key \"xfr\" {\n\talgorithm hmac-sha256;\n\tsecret \"MDEyMzQ1Njc4OWFiY2RlZg==\";\n};\n",
    )
    .expect("write");
    let k = Key::from_spec(&format!("xfr:hmac-sha256:{}", bare.display())).expect("bare");
    assert_eq!(k.name().to_string(), "xfr.");
    Key::from_spec(&format!("xfr:HMAC-SHA256.:{}", bind.display())).expect("bind file");
    for (spec, want) in [
        ("xfr:hmac-sha256".to_owned(), "NAME:ALGORITHM:SECRET-FILE"),
        (format!("xfr:hmac-md5:{}", bare.display()), "not supported"),
        (
            "xfr:hmac-sha256:/nonexistent/secret".to_owned(),
            "cannot read",
        ),
    ] {
        let err = Key::from_spec(&spec).expect_err("bad").to_string();
        assert!(err.contains(want), "{spec}: {err}");
    }
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "not base64 !!").expect("write");
    let err = Key::from_spec(&format!("xfr:hmac-sha256:{}", junk.display())).expect_err("bad");
    assert!(err.to_string().contains("not base64"), "{err}");
    // A BIND file with several keys: the one named, with its algorithm checked.
    let two = dir.path().join("two.key");
    std::fs::write(
        &two,
        "key \"a\" {\n\talgorithm hmac-sha256;\n\tsecret \"QUFBQQ==\";\n};\nkey \"xfr-secret\" {\n\talgorithm hmac-sha512;\n\tsecret \"MDEyMzQ1Njc4OWFiY2RlZg==\";\n};\n",
    )
    .expect("write");
    let k =
        Key::from_spec(&format!("xfr-secret:hmac-sha512:{}", two.display())).expect("second key");
    assert_eq!(k.algorithm(), Algorithm::HmacSha512);
    let err =
        Key::from_spec(&format!("xfr-secret:hmac-sha256:{}", two.display())).expect_err("alg");
    assert!(err.to_string().contains("algorithm hmac-sha512"), "{err}");
    let err = Key::from_spec(&format!("other:hmac-sha256:{}", two.display())).expect_err("name");
    assert!(err.to_string().contains("no key \"other\""), "{err}");
    let dup = Keys::new(vec![
        key("a.", Algorithm::HmacSha1),
        key("A", Algorithm::HmacSha256),
    ]);
    assert!(dup.is_err());
}

#[test]
fn a_name_pointing_into_the_header_is_malformed_and_error_replies_write_names_whole() {
    let k = key("xfr.", Algorithm::HmacSha256);
    // The question's name: "ple" then a pointer to offset 2 (the header).
    let mut msg = vec![
        0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'p', b'l', b'e', 0xC0, 2, 0, 6, 0, 1,
    ];
    let signed = sign_request(&k, &msg, 1);
    assert_eq!(locate(&signed), Err(Malformed));
    // A pointer to the question's name, from the TSIG owner: fine, and the reply's question
    // is written whole.
    msg.truncate(12);
    msg.extend_from_slice(&[3, b'a', b'b', b'c', 0, 0, 6, 0, 1]);
    let mut signed = sign_request(&k, &msg, 1);
    let tsig_at = msg.len();
    signed.splice(tsig_at..tsig_at + 5, [0xC0, 12]); // owner "xfr." → pointer to "abc."
    let found = locate(&signed).expect("reads").expect("found");
    let bad = keys(key("abc.", Algorithm::HmacSha512))
        .verify(&signed, &found, 1)
        .expect_err("wrong algorithm");
    let reply = error_reply(&signed, &found, &bad, 1);
    assert_eq!(&reply[12..21], &[3, b'a', b'b', b'c', 0, 0, 6, 0, 1]);
    assert!(locate(&reply).expect("reads").is_some());
}
