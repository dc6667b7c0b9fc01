//! The UDP fast path: A and AAAA answers compiled ahead of time, per name, into wire format.
//!
//! A compiled answer is the message body after the question, with owner names written as
//! pointers to the question at offset 12. Per query only the ID, the flags, the question (copied
//! from the query, so its case is echoed), the OPT record, the SOA serial and the rotation of the
//! address records are filled in: no allocation, no lock, one hash lookup.
//!
//! Compiled: every name that is a key's own name or its parent (leaf-style records as
//! ExternalDNS and fedplane-controller write them), when it answers with addresses or NODATA.
//! Everything else takes the general path ([`crate::answer::respond`]), which stays the
//! reference: NXDOMAIN, CNAMEs, lease-bound TTLs, the apex, other types, truncation, unusual
//! queries. Updates recompile only the names a changed key can affect.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::rr::Name;

use crate::answer::{self, AnswerOptions};
use crate::index::{Entry, Snapshot, Zone};
use crate::key::{key_to_name, name_to_key};
use crate::record::Host;

/// Names with more records than this are not compiled: their answers change with every update
/// below them, and big answers are rare and often truncated anyway.
pub const MAX_COMPILED_RECORDS: usize = 64;
/// Size of the buffer [`respond_fast`] writes into: the largest UDP answer we ever send.
pub const MAX_FAST_RESPONSE: usize = 4096;

/// The compiled answers of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    a: Template,
    aaaa: Template,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    answers: u16,
    authorities: u16,
    /// Sections after the question.
    body: Box<[u8]>,
    /// Answer records of equal length at the start of `body`, rotated per query.
    rotate_len: u16,
    /// Offset in `body` of a SOA serial, patched per query with the zone's current serial.
    serial_at: Option<u16>,
    zone: u16,
}

/// Lowercase wire form of a name (labels and the root), the compiled map's key.
pub fn wire_name(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(u8::try_from(label.len()).unwrap_or(63));
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

fn push_name_uncompressed(out: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        out.push(u8::try_from(label.len()).unwrap_or(63));
        out.extend_from_slice(label);
    }
    out.push(0);
}

/// Compiles the answers of `lname` (lowercase), or `None` when it must take the general path.
pub fn compile(snap: &Snapshot, lname: &Name) -> Option<Compiled> {
    let (zi, zone) = snap.zones().find(lname)?;
    if *lname == zone.name {
        return None;
    }
    let entries = snap.node_up_to(
        &name_to_key(snap.zones().prefix(), lname),
        MAX_COMPILED_RECORDS + 1,
    );
    if entries.is_empty()
        || entries.len() > MAX_COMPILED_RECORDS
        || entries.iter().any(|e| e.lease != 0)
    {
        return None;
    }
    let has_address = entries
        .iter()
        .any(|e| matches!(e.record.host, Host::V4(_) | Host::V6(_)));
    let has_alias = entries
        .iter()
        .any(|e| matches!(e.record.host, Host::Name(_)) && !e.record.mail);
    if has_alias && !has_address {
        return None; // a CNAME: its answer depends on other names
    }
    let qlen = wire_name(lname).len();
    let zi = u16::try_from(zi).ok()?;
    let now = Instant::now();
    Some(Compiled {
        a: template(snap, zi, zone, qlen, &entries, true, now)?,
        aaaa: template(snap, zi, zone, qlen, &entries, false, now)?,
    })
}

fn template(
    snap: &Snapshot,
    zi: u16,
    zone: &Zone,
    qlen: usize,
    entries: &[&Entry],
    v4: bool,
    now: Instant,
) -> Option<Template> {
    let mut addrs: Vec<(Vec<u8>, u32)> = Vec::new();
    for e in entries {
        let ip = match (&e.record.host, v4) {
            (Host::V4(ip), true) => ip.octets().to_vec(),
            (Host::V6(ip), false) => ip.octets().to_vec(),
            _ => continue,
        };
        let ttl = snap.ttl(e, now);
        match addrs.iter_mut().find(|(a, _)| *a == ip) {
            Some(_) => {}
            None => addrs.push((ip, ttl)),
        }
    }
    let mut body = Vec::new();
    if let Some(ttl) = addrs.iter().map(|(_, t)| *t).min() {
        let rtype: u16 = if v4 { 1 } else { 28 };
        for (ip, _) in &addrs {
            body.extend_from_slice(&[0xC0, 0x0C]);
            body.extend_from_slice(&rtype.to_be_bytes());
            body.extend_from_slice(&1u16.to_be_bytes());
            body.extend_from_slice(&ttl.to_be_bytes());
            body.extend_from_slice(&u16::try_from(ip.len()).ok()?.to_be_bytes());
            body.extend_from_slice(ip);
        }
        return Some(Template {
            answers: u16::try_from(addrs.len()).ok()?,
            authorities: 0,
            rotate_len: u16::try_from(body.len() / addrs.len()).ok()?,
            body: body.into(),
            serial_at: None,
            zone: zi,
        });
    }
    // NODATA: the zone's SOA in the authority section; its owner points into the question.
    let zone_len = wire_name(&zone.name).len();
    let owner = 12 + qlen.checked_sub(zone_len)?;
    body.extend_from_slice(&(0xC000u16 | u16::try_from(owner).ok()?).to_be_bytes());
    body.extend_from_slice(&6u16.to_be_bytes());
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&answer::SOA_MINIMUM.to_be_bytes());
    let (mname, rname) = answer::soa_names(snap, zone);
    let mut rdata = Vec::new();
    push_name_uncompressed(&mut rdata, &mname);
    push_name_uncompressed(&mut rdata, &rname);
    let serial_in_rdata = rdata.len();
    rdata.extend_from_slice(&[0; 4]); // patched per query with the zone's current serial
    for v in [answer::SOA_REFRESH, answer::SOA_RETRY, answer::SOA_EXPIRE] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    rdata.extend_from_slice(&answer::SOA_MINIMUM.to_be_bytes());
    body.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
    let serial_at = u16::try_from(body.len() + serial_in_rdata).ok()?;
    body.extend_from_slice(&rdata);
    Some(Template {
        answers: 0,
        authorities: 1,
        body: body.into(),
        rotate_len: 0,
        serial_at: Some(serial_at),
        zone: zi,
    })
}

/// Whether a name is one we compile: a key sits at it, or one level below it (its leaves).
fn is_candidate(snap: &Snapshot, n: &Name) -> bool {
    snap.has_key_or_child(&name_to_key(snap.zones().prefix(), n))
}

/// Compiles every eligible name of the snapshot (after a load).
pub fn compile_all(snap: &mut Snapshot) {
    let mut names: HashSet<Name> = HashSet::new();
    let prefix = snap.zones().prefix().to_owned();
    for e in snap.entries() {
        if let Some(n) = key_to_name(&prefix, &e.key) {
            let n = n.to_lowercase();
            names.insert(n.base_name());
            names.insert(n);
        }
    }
    snap.clear_compiled();
    for n in names {
        if snap.zones().find(&n).is_some_and(|(_, z)| z.name != n) {
            let c = compile(snap, &n);
            snap.set_compiled(wire_name(&n).into(), c);
        }
    }
}

/// Recompiles what changes of `keys` can affect, by the same rule as [`compile_all`]: a key's
/// name and its parent may start or stop being candidates (checked); higher ancestors keep their
/// status (a key two or more levels down is neither theirs nor their child's) and are recompiled
/// if they are candidates, since a name answers its whole subtree. A change of a zone's NS
/// records changes every NODATA answer's SOA: then everything is recompiled.
pub fn recompile_keys(snap: &mut Snapshot, keys: &[String]) {
    let prefix = snap.zones().prefix().to_owned();
    if keys.iter().any(|k| {
        snap.zones()
            .iter()
            .any(|z| k.starts_with(&format!("{}/dns/ns", z.key)))
    }) {
        compile_all(snap);
        return;
    }
    // Pass 1: each key's name and parent, whose candidacy may change: checked exactly.
    // Pass 2: higher ancestors, recompiled if they are candidates (their status cannot change).
    let mut done: HashSet<Name> = HashSet::new();
    for exact in [true, false] {
        for key in keys {
            let Some(name) = key_to_name(&prefix, key) else {
                continue;
            };
            let mut n = name.to_lowercase();
            let mut depth = 0;
            while let Some((_, zone)) = snap.zones().find(&n) {
                if n == zone.name {
                    break;
                }
                if (depth < 2) == exact && done.insert(n.clone()) {
                    let wire: Arc<[u8]> = wire_name(&n).into();
                    let candidate = if exact {
                        is_candidate(snap, &n)
                    } else {
                        snap.is_compile_candidate(&wire)
                    };
                    if candidate {
                        let c = compile(snap, &n);
                        snap.set_compiled(wire, c);
                    } else {
                        snap.remove_compiled(&wire);
                    }
                }
                if exact && depth == 1 {
                    break;
                }
                n = n.base_name();
                depth += 1;
            }
        }
    }
}

/// Answers a UDP query from the compiled answers into `out`, or returns `None` for the general
/// path. Same answers as [`crate::answer::respond`] (a property test holds them together).
pub fn respond_fast(
    snap: &Snapshot,
    req: &[u8],
    opts: AnswerOptions,
    rotation: usize,
    out: &mut [u8],
) -> Option<usize> {
    if !snap.is_loaded() || req.len() < 17 || req[2] & 0xF8 != 0 {
        return None; // not loaded, short, a response, or an opcode other than QUERY
    }
    let count = |i: usize| u16::from_be_bytes([req[i], req[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut key = [0u8; 255];
    let mut pos = 12;
    loop {
        let len = usize::from(*req.get(pos)?);
        if len & 0xC0 != 0 || pos - 12 + len + 1 > 255 {
            return None;
        }
        let label = req.get(pos + 1..pos + 1 + len)?;
        key[pos - 12] = req[pos];
        for (k, b) in key[pos - 12 + 1..pos - 12 + 1 + len].iter_mut().zip(label) {
            *k = b.to_ascii_lowercase();
        }
        pos += 1 + len;
        if len == 0 {
            break;
        }
    }
    let qlen = pos - 12;
    let qtype = u16::from_be_bytes([*req.get(pos)?, *req.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*req.get(pos + 2)?, *req.get(pos + 3)?]);
    let qend = pos + 4;
    if qclass != 1 || !(qtype == 1 || qtype == 28) {
        return None;
    }
    let edns = if count(10) == 1 {
        let opt = req.get(qend..qend + 11)?;
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[6] != 0 || qend + 11 + rdlen != req.len() {
            return None; // not an OPT, EDNS version > 0, or trailing bytes
        }
        Some((u16::from_be_bytes([opt[3], opt[4]]), opt[7] & 0x80))
    } else if qend != req.len() {
        return None;
    } else {
        None
    };
    let compiled = snap.compiled(&key[..qlen])?;
    let t = if qtype == 1 {
        &compiled.a
    } else {
        &compiled.aaaa
    };
    let ours = opts.max_udp_payload.max(512);
    let limit = edns.map_or(512, |(size, _)| size.clamp(512, ours));
    let total = qend + t.body.len() + if edns.is_some() { 11 } else { 0 };
    if total > usize::from(limit) || total > out.len() {
        return None;
    }
    out[..2].copy_from_slice(&req[..2]);
    out[2] = 0x80 | 0x04 | (req[2] & 0x01); // QR, AA, RD
    out[3] = req[3] & 0x10; // CD; RCODE NOERROR
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&t.answers.to_be_bytes());
    out[8..10].copy_from_slice(&t.authorities.to_be_bytes());
    out[10..12].copy_from_slice(&u16::from(edns.is_some()).to_be_bytes());
    out[12..qend].copy_from_slice(&req[12..qend]);
    let body = &mut out[qend..qend + t.body.len()];
    let n = usize::from(t.answers);
    let rl = usize::from(t.rotate_len);
    if n > 1 && rl > 0 {
        let k = rotation % n;
        let split = k * rl;
        let rotated = n * rl;
        body[..rotated - split].copy_from_slice(&t.body[split..rotated]);
        body[rotated - split..rotated].copy_from_slice(&t.body[..split]);
        body[rotated..].copy_from_slice(&t.body[rotated..]);
    } else {
        body.copy_from_slice(&t.body);
    }
    if let Some(at) = t.serial_at {
        let at = usize::from(at);
        body[at..at + 4].copy_from_slice(&snap.serial(usize::from(t.zone)).to_be_bytes());
    }
    if let Some((_, dnssec_ok)) = edns {
        let opt = &mut out[qend + t.body.len()..total];
        opt[..3].copy_from_slice(&[0, 0, 41]);
        opt[3..5].copy_from_slice(&ours.to_be_bytes());
        opt[5..11].copy_from_slice(&[0, 0, dnssec_ok, 0, 0, 0]);
    }
    Some(total)
}

#[cfg(test)]
mod tests;
