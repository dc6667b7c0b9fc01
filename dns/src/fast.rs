//! The fast path: A and AAAA answers compiled ahead of time, per name, into wire format
//! ([`Table`]), and answering from them ([`respond_fast`] for UDP, [`respond_fast_over`] for
//! TCP too).
//!
//! A compiled answer is the answer section after the question, with owner names written as
//! pointers to the question at offset 12; a name without addresses of the asked family answers
//! NODATA with its zone's SOA, which is kept once per zone ([`ZoneSoa`]). Per query only the ID,
//! the flags, the question (copied from the query, so its case is echoed), the OPT record, the
//! SOA serial and the rotation of the address records are filled in: no allocation, no lock,
//! one hash lookup.
//!
//! Compiled: every name that holds a key or whose child holds one (leaf-style records as
//! ExternalDNS and fedplane-controller write them), or that holds more than
//! [`MAX_COMPILED_RECORDS`] records (a parent such as `svc.<zone>`), when it answers with
//! addresses or NODATA, from the records the general path reads for it (`Records::node`,
//! groups applied; its first 65 unless there are more). An answer the client's payload cannot
//! take is answered TC-only here (header, question, OPT: what the general path, NSD and Knot
//! send). A name with more than [`MAX_COMPILED_RECORDS`] records keeps only the size of its A
//! and AAAA answers and the least size of its SRV, MX and TXT answers: queries they cannot fit
//! get TC-only at once, the others take the general path.
//!
//! A name the compiler never considered that does not exist (no key at or below it, checked
//! with one ordered-map lookup) is answered NXDOMAIN here too, so that a flood of random
//! names (a "water torture" attack) costs no more than ordinary queries and never fills the
//! general path's queue. A negative answer that does not fit the client (only a zone with a
//! very long name can make it so: the SOA's names are written whole here) takes the general
//! path, which compresses them.
//!
//! Everything else takes the general path ([`crate::answer::respond`]), which stays the
//! reference: CNAMEs, lease-bound TTLs, the apex, other types, unusual queries. The
//! table is built from the records once after a load ([`Table::compile`]) and changed only by
//! [`Table::recompile`], which redoes just the names changed keys can affect.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::rr::Name;

use crate::answer::wire::MAX_TTL;
use crate::answer::{AnswerOptions, Transport};
use crate::index::{Entry, Records};
use crate::key::{key_to_name, key_wire, name_to_key, strip_labels};
use crate::record::Host;
use crate::soa::{SOA_EXPIRE, SOA_MINIMUM, SOA_REFRESH, SOA_RETRY, soa_names};

/// Names with more records than this are not compiled into records (their answers change with
/// every update below them, and rarely fit a datagram): only their answer's size is kept, so
/// that the fast path sends TC-only when it cannot fit.
pub const MAX_COMPILED_RECORDS: usize = 64;
/// Size of the buffer [`respond_fast`] writes into: the largest UDP answer we ever send.
pub const MAX_FAST_RESPONSE: usize = 4096;
/// TXT character-strings hold at most 255 bytes (as the general path splits them).
const TXT_CHUNK: usize = 255;
/// A SOA tail ends with serial, refresh, retry, expire and minimum: the serial is 20 bytes from
/// the end.
const SERIAL_FROM_END: usize = 20;

/// The compiled answers, published with the records they were compiled from.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Compiled answers by lowercase wire name: an entry for every name the compiler
    /// considers, `None` where it takes the general path.
    compiled: CompiledMap,
    /// Per zone, the SOA record of compiled NODATA answers.
    zone_soas: Arc<[ZoneSoa]>,
}

type CompiledMap = imbl::GenericHashMap<
    Arc<[u8]>,
    Option<Arc<Compiled>>,
    rustc_hash::FxBuildHasher,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// The compiled answers of one name, for A and for AAAA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    a: Answer,
    aaaa: Answer,
    zone: u16,
    /// Its address records carry a zone or region: with a topology map its answers depend on
    /// the client, and take the general path.
    located: bool,
    /// For a name with more than [`MAX_COMPILED_RECORDS`] records: the least bytes its SRV,
    /// MX and TXT answer sections take, so that queries they cannot fit get TC-only here.
    others: Option<Box<Others>>,
}

/// Lower bounds of the SRV, MX and TXT answer sections of a name, counted as the general path
/// counts them while it collects (each distinct record at its smallest encoded size): an
/// answer whose bound exceeds the room is TC-only there too.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Others {
    srv: usize,
    mx: usize,
    txt: usize,
}

/// The compiled answer for one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// No address of the family: NODATA with the zone's SOA.
    NoData,
    /// The address records, rotated per query.
    Records(Addresses),
    /// A name with more than [`MAX_COMPILED_RECORDS`] records: only how many bytes its answer
    /// section takes, so that a query it cannot fit gets TC-only here at once (what the
    /// general path answers it); one it fits takes the general path.
    TooMany {
        /// Bytes of the answer section.
        bytes: usize,
    },
}

/// Address records of equal length (rotated per query).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Addresses {
    count: u16,
    records: Box<[u8]>,
}

/// A zone's SOA record for NODATA answers, after its owner name (which points into the
/// question), with the serial zeroed: it is patched per query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSoa {
    tail: Box<[u8]>,
    zone_wire_len: u16,
    /// The zone's lowercase wire name.
    wire: Box<[u8]>,
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

/// Lowercase wire form of the name a key stands for ([`key_wire`], the mapping every path
/// uses), without building a `Name`; `None` for a key that names nothing.
fn wire_from_key(prefix: &str, key: &str) -> Option<Vec<u8>> {
    key_wire(prefix, key.as_bytes()).ok()
}

fn push_name(out: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        out.push(u8::try_from(label.len()).unwrap_or(63));
        out.extend_from_slice(label);
    }
    out.push(0);
}

/// The SOA tails of every zone, in zone order.
fn zone_soas(records: &Records) -> Arc<[ZoneSoa]> {
    records
        .zones()
        .iter()
        .map(|zone| {
            let (mname, rname) = soa_names(records, zone);
            let mut rdata = Vec::new();
            push_name(&mut rdata, &mname);
            push_name(&mut rdata, &rname);
            rdata.extend_from_slice(&[0; 4]); // serial, patched per query
            for v in [SOA_REFRESH, SOA_RETRY, SOA_EXPIRE] {
                rdata.extend_from_slice(&v.to_be_bytes());
            }
            rdata.extend_from_slice(&SOA_MINIMUM.to_be_bytes());
            let mut tail = Vec::with_capacity(rdata.len() + 10);
            tail.extend_from_slice(&6u16.to_be_bytes());
            tail.extend_from_slice(&1u16.to_be_bytes());
            tail.extend_from_slice(&SOA_MINIMUM.to_be_bytes());
            tail.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
            tail.extend_from_slice(&rdata);
            let wire = wire_name(&zone.name);
            ZoneSoa {
                tail: tail.into(),
                zone_wire_len: u16::try_from(wire.len()).unwrap_or(0),
                wire: wire.into(),
            }
        })
        .collect()
}

/// Compiles the answers of `lname` (lowercase), or `None` when it must take the general path.
pub fn compile(records: &Records, lname: &Name) -> Option<Compiled> {
    let (zi, zone) = records.zones().find(lname)?;
    if *lname == zone.name {
        return None;
    }
    compile_key(records, &name_to_key(records.zones().prefix(), lname)?, zi)
}

/// Compiles the name whose (lowercase) key is `key`, in zone `zi`, from the records the
/// general path answers it with.
fn compile_key(records: &Records, key: &str, zi: usize) -> Option<Compiled> {
    // The first records, a prefix of the general path's; all of them only for a big name.
    let mut entries = records.node_up_to(key, MAX_COMPILED_RECORDS + 1);
    if entries.len() > MAX_COMPILED_RECORDS {
        entries = records.node(key);
    }
    let has_address = entries
        .iter()
        .any(|e| matches!(e.record.host, Host::V4(_) | Host::V6(_)));
    let has_alias = entries
        .iter()
        .any(|e| matches!(e.record.host, Host::Name(_)) && !e.record.mail);
    if entries.is_empty() || (has_alias && !has_address) {
        return None; // nothing here, or a CNAME: its answer depends on other names
    }
    if crate::answer::select::weighted(&entries) {
        return None; // one address chosen by weight per query
    }
    let located = entries.iter().any(|e| {
        matches!(e.record.host, Host::V4(_) | Host::V6(_))
            && (!e.record.zone.is_empty() || !e.record.region.is_empty())
    });
    let many = entries.len() > MAX_COMPILED_RECORDS;
    if !many && entries.iter().any(|e| e.lease != 0) {
        return None; // TTLs follow the lease: computed per query
    }
    let now = Instant::now();
    Some(Compiled {
        a: answer(records, &entries, true, many, now),
        aaaa: answer(records, &entries, false, many, now),
        zone: u16::try_from(zi).ok()?,
        located,
        others: many.then(|| Box::new(others(records, &entries))),
    })
}

/// The least bytes the SRV, MX and TXT answers of a name (no alias) take: its records told
/// apart by no more than what sets their data apart in the general path (SRV: priority, port
/// and target, not the weight, which the general path recomputes), each at its smallest
/// size: a pointer to the question for the owner, RDATA names as pointers except SRV targets
/// (written whole).
fn others(records: &Records, entries: &[&Entry]) -> Others {
    let prefix = records.zones().prefix();
    let whole = |n: &Name| n.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    let pointer = |n: &Name| if n.is_root() { 1 } else { 2 };
    let (mut srv, mut mx, mut txt) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut sizes = Others {
        srv: 0,
        mx: 0,
        txt: 0,
    };
    for e in entries {
        let r = &e.record;
        let target = || match &r.host {
            Host::Name(n) => strip_labels(n, r.target_strip),
            _ => e.target_name(prefix),
        };
        if r.host != Host::None && r.port.is_some() {
            let t = target().to_lowercase();
            let len = 12 + 6 + whole(&t);
            if srv.insert((r.priority_or_default(), r.port, t)) {
                sizes.srv += len;
            }
        }
        if r.host != Host::None && r.mail {
            let t = target().to_lowercase();
            let len = 12 + 2 + pointer(&t);
            if mx.insert((r.priority_or_default(), t)) {
                sizes.mx += len;
            }
        }
        if !r.text.is_empty() && txt.insert(&r.text) {
            sizes.txt += 12 + r.text.len() + r.text.len().div_ceil(TXT_CHUNK);
        }
    }
    sizes
}

/// The A (or AAAA) answer of a name: its records deduplicated, all with the lowest TTL (one
/// RRset), or only their size when there are `many`.
fn answer(records: &Records, entries: &[&Entry], v4: bool, many: bool, now: Instant) -> Answer {
    let mut octets: Vec<[u8; 16]> = Vec::new();
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    let mut ttl = u32::MAX;
    for e in entries {
        let ip: [u8; 16] = match (&e.record.host, v4) {
            (Host::V4(ip), true) => ip.to_ipv6_mapped().octets(),
            (Host::V6(ip), false) => ip.octets(),
            _ => continue,
        };
        let new = if many {
            seen.insert(ip)
        } else {
            !octets.contains(&ip)
        };
        if new {
            octets.push(ip);
            ttl = ttl.min(records.ttl(e, now));
        }
    }
    let (rtype, len): (u16, u16) = if v4 { (1, 4) } else { (28, 16) };
    let record_len = 12 + usize::from(len);
    if octets.is_empty() {
        return Answer::NoData;
    }
    let Ok(count) = u16::try_from(octets.len()) else {
        return Answer::TooMany {
            bytes: octets.len() * record_len,
        };
    };
    if many {
        return Answer::TooMany {
            bytes: octets.len() * record_len,
        };
    }
    let ttl = ttl.min(MAX_TTL);
    let mut records = Vec::with_capacity(octets.len() * record_len);
    for o in &octets {
        let ip = if v4 { &o[12..] } else { &o[..] };
        records.extend_from_slice(&[0xC0, 0x0C]);
        records.extend_from_slice(&rtype.to_be_bytes());
        records.extend_from_slice(&1u16.to_be_bytes());
        records.extend_from_slice(&ttl.to_be_bytes());
        records.extend_from_slice(&len.to_be_bytes());
        records.extend_from_slice(ip);
    }
    Answer::Records(Addresses {
        count,
        records: records.into(),
    })
}

/// Whether a name is one we compile: a key sits at it, or one level below it (its leaves), or
/// it holds more than [`MAX_COMPILED_RECORDS`] records (a parent such as `svc.<zone>`, whose
/// answer no datagram can carry).
fn is_candidate(records: &Records, n: &Name) -> bool {
    name_to_key(records.zones().prefix(), n)
        .is_some_and(|k| records.has_key_or_child(&k) || is_big(records, &k))
}

/// Whether the name of `key` holds more than [`MAX_COMPILED_RECORDS`] records.
fn is_big(records: &Records, key: &str) -> bool {
    records.node_up_to(key, MAX_COMPILED_RECORDS + 1).len() > MAX_COMPILED_RECORDS
}

impl Table {
    /// Compiles every eligible name of `records` (after a load), straight from the keys.
    pub fn compile(records: &Records) -> Self {
        let prefix = records.zones().prefix();
        let mut candidates: HashSet<&str> = HashSet::new();
        for e in records.entries() {
            // Upper-case keys are never answered (names are looked up lowercase): not
            // candidates.
            if e.key.bytes().any(|b| b.is_ascii_uppercase()) {
                continue;
            }
            candidates.insert(&e.key);
            if let Some((parent, _)) = e.key.rsplit_once('/') {
                candidates.insert(parent);
            }
        }
        // Higher ancestors holding many records: their answers are too big for a datagram,
        // and the fast path says so at once. Counting keys below each first (more keys than
        // records a name answers with, groups aside) leaves few to read.
        let mut below: rustc_hash::FxHashMap<&str, usize> = rustc_hash::FxHashMap::default();
        for e in records.entries() {
            let mut k: &str = &e.key;
            while let Some((parent, _)) = k.rsplit_once('/') {
                if parent.len() <= prefix.len() {
                    break;
                }
                *below.entry(parent).or_default() += 1;
                k = parent;
            }
        }
        for (key, n) in below {
            if n + 1 > MAX_COMPILED_RECORDS && !candidates.contains(key) && is_big(records, key) {
                candidates.insert(key);
            }
        }
        let mut compiled = CompiledMap::default();
        for key in candidates {
            let Some(zi) = records.zones().find_key(key) else {
                continue;
            };
            if records.zones().iter().nth(zi).is_some_and(|z| z.key == key) {
                continue; // the apex
            }
            if let Some(wire) = wire_from_key(prefix, key) {
                compiled.insert(wire.into(), compile_key(records, key, zi).map(Arc::new));
            }
        }
        Self {
            compiled,
            zone_soas: zone_soas(records),
        }
    }

    /// Recompiles what changes of `keys` (already applied to `records`) can affect, by the same
    /// rule as [`Table::compile`]: every name from a key's up to its zone's apex is checked
    /// and recompiled (a name answers its whole subtree, and may start or stop being a
    /// candidate). A change of a zone's NS records changes its SOA's MNAME: the SOA tails are
    /// rebuilt.
    pub fn recompile(&mut self, records: &Records, keys: &[String]) {
        let prefix = records.zones().prefix();
        if keys.iter().any(|k| {
            records
                .zones()
                .iter()
                .any(|z| k.starts_with(&format!("{}/dns/ns", z.key)))
        }) {
            self.zone_soas = zone_soas(records);
        }
        // Every name up to the apex: its candidacy may change (a key's name and parent by the
        // key itself, any ancestor by how many records it holds), and a name answers its
        // whole subtree.
        let mut done: HashSet<Name> = HashSet::new();
        for key in keys {
            let Some(name) = key_to_name(prefix, key) else {
                continue;
            };
            let mut n = name.to_lowercase();
            while let Some((_, zone)) = records.zones().find(&n) {
                if n == zone.name || !done.insert(n.clone()) {
                    break; // the apex, or this name and its ancestors are done
                }
                let wire: Arc<[u8]> = wire_name(&n).into();
                if is_candidate(records, &n) {
                    let c = compile(records, &n).map(Arc::new);
                    self.compiled.insert(wire, c);
                } else {
                    self.compiled.remove(&wire);
                }
                n = n.base_name();
            }
        }
    }

    /// How many names the compiler considers (compiled, or taking the general path).
    pub fn len(&self) -> usize {
        self.compiled.len()
    }

    /// True when no name is considered.
    pub fn is_empty(&self) -> bool {
        self.compiled.is_empty()
    }

    /// The compiled answers of a lowercase wire name.
    pub fn get(&self, wire: &[u8]) -> Option<&Compiled> {
        self.lookup(wire).flatten()
    }

    /// What the table holds for a lowercase wire name: `None` for a name the compiler never
    /// considered, `Some(None)` for one that takes the general path.
    fn lookup(&self, wire: &[u8]) -> Option<Option<&Compiled>> {
        self.compiled.get(wire).map(|c| c.as_deref())
    }
}

/// What the fast path can say about a name the compiler never considered.
enum Negative {
    /// Outside every zone: REFUSED.
    Refused,
    /// A name of zone `.0` that does not exist: NXDOMAIN.
    NxDomain(usize),
}

/// Whether the lowercase wire name `wire` (its labels starting at `starts`) is outside every
/// zone, or a name that does not exist; `None` when the general path must answer (a zone's
/// apex, or a name that exists). The same tests as the general path's: the most specific
/// zone that contains the name, then no record at the name's key or below it, or no key at
/// all for a name with a byte keys never hold.
fn negative(records: &Records, table: &Table, wire: &[u8], starts: &[u8]) -> Option<Negative> {
    if table.zone_soas.is_empty() {
        return None; // not compiled yet (every compiled table has every zone)
    }
    // Zones are kept most specific first: the first one that is a suffix is the name's zone.
    let Some((zone, at)) = table.zone_soas.iter().enumerate().find_map(|(i, z)| {
        let at = starts
            .iter()
            .map(|&s| usize::from(s))
            .chain([wire.len() - 1]) // the root, as the name of a zone "."
            .find(|&s| wire[s..] == *z.wire)?;
        Some((i, at))
    }) else {
        return Some(Negative::Refused);
    };
    if at == 0 {
        return None; // the apex
    }
    // The key: the prefix, then the labels from the root down, each after a '/'.
    let prefix = records.zones().prefix().as_bytes();
    let mut buf = [0u8; 1024];
    if prefix.len() + wire.len() > buf.len() {
        return None;
    }
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut at = prefix.len();
    for &s in starts.iter().rev() {
        let s = usize::from(s);
        let label = &wire[s + 1..s + 1 + usize::from(wire[s])];
        if !label.iter().all(|&b| crate::key::label_byte_ok(b)) {
            return Some(Negative::NxDomain(zone)); // no key names it
        }
        buf[at] = b'/';
        buf[at + 1..at + 1 + label.len()].copy_from_slice(label);
        at += 1 + label.len();
    }
    let key = std::str::from_utf8(&buf[..at]).ok()?;
    (!records.exists(key)).then_some(Negative::NxDomain(zone))
}

/// Answers a UDP query from the compiled answers into `out`, or returns `None` for the general
/// path. Same answers as [`crate::answer::respond`] over `records` (a property test holds
/// them together); `table` must be compiled from `records`.
pub fn respond_fast(
    records: &Records,
    table: &Table,
    req: &[u8],
    opts: AnswerOptions,
    rotation: usize,
    out: &mut [u8],
) -> Option<usize> {
    respond_fast_over(records, table, req, opts, rotation, out, Transport::Udp)
}

/// [`respond_fast`] for a query that came over `transport` (over TCP no payload limit but the
/// message's and `out`'s): the same answers as the general path over it.
pub fn respond_fast_over(
    records: &Records,
    table: &Table,
    req: &[u8],
    opts: AnswerOptions,
    rotation: usize,
    out: &mut [u8],
    transport: Transport,
) -> Option<usize> {
    if !records.is_loaded() || req.len() < 17 || req[2] & 0xF8 != 0 {
        return None; // not loaded, short, a response, or an opcode other than QUERY
    }
    let count = |i: usize| u16::from_be_bytes([req[i], req[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut key = [0u8; 255];
    // Where each label starts in `key` (at most 127 labels fit 255 bytes).
    let mut starts = [0u8; 128];
    let mut labels = 0;
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
        if len == 0 {
            pos += 1;
            break;
        }
        starts[labels] = u8::try_from(pos - 12).ok()?;
        labels += 1;
        pos += 1 + len;
    }
    let qlen = pos - 12;
    let qtype = u16::from_be_bytes([*req.get(pos)?, *req.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*req.get(pos + 2)?, *req.get(pos + 3)?]);
    let qend = pos + 4;
    if qclass != 1 || matches!(qtype, 41 | 251 | 252) {
        return None; // not IN; OPT (FORMERR), AXFR and IXFR (NOTIMP)
    }
    let edns = if count(10) == 1 {
        let opt = req.get(qend..qend + 11)?;
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[6] != 0 || qend + 11 + rdlen != req.len() {
            return None; // not an OPT, EDNS version > 0, or trailing bytes
        }
        if rdlen > 0 && !crate::answer::edns::options_tile(&req[qend + 11..]) {
            return None; // malformed options: the general path answers FORMERR
        }
        if opts.by_locality
            && crate::answer::edns::has_option(&req[qend + 11..], crate::answer::ecs::CODE)
        {
            return None; // a client subnet to read and echo: the general path
        }
        Some((u16::from_be_bytes([opt[3], opt[4]]), opt[7] & 0x80))
    } else if qend != req.len() {
        return None;
    } else {
        None
    };
    let wire = &key[..qlen];
    let nodata = Answer::NoData;
    let least;
    let (zone, answer, rcode) = match table.lookup(wire) {
        Some(Some(compiled)) => {
            if opts.by_locality && compiled.located {
                return None; // answered by the client's locality: the general path
            }
            let answer = match qtype {
                1 => &compiled.a,
                28 => &compiled.aaaa,
                33 | 15 | 16 => {
                    // SRV, MX, TXT: TC-only for a name with many records when they cannot fit
                    let o = compiled.others.as_deref()?;
                    least = Answer::TooMany {
                        bytes: match qtype {
                            33 => o.srv,
                            15 => o.mx,
                            _ => o.txt,
                        },
                    };
                    &least
                }
                // PTR (from name hosts), CNAME and ANY: the general path.
                12 | 5 | 255 => return None,
                // Any other type: a compiled name (no alias, not an apex) holds none.
                _ => &nodata,
            };
            (usize::from(compiled.zone), answer, 0)
        }
        Some(None) => return None,
        // Never considered: a name outside every zone is REFUSED, and one that does not exist
        // NXDOMAIN, here at fast-path cost (a flood of random names must not fill the general
        // path's queue).
        None => match negative(records, table, wire, &starts[..labels])? {
            Negative::NxDomain(zone) => (zone, &nodata, 3),
            Negative::Refused if opts.short_names => return None, // maybe a short name
            Negative::Refused => {
                let total = qend + if edns.is_some() { 11 } else { 0 };
                let out = out.get_mut(..total)?;
                out[..2].copy_from_slice(&req[..2]);
                out[2] = 0x80 | (req[2] & 0x01); // QR, RD
                out[3] = req[3] & 0x10 | 5; // CD; REFUSED
                out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
                out[12..qend].copy_from_slice(&req[12..qend]);
                write_opt(&mut out[qend..], edns, opts);
                return Some(total);
            }
        },
    };
    let soa = match answer {
        Answer::NoData => Some(table.zone_soas.get(zone)?),
        _ => None,
    };
    let body_len = match answer {
        Answer::NoData => soa.map_or(0, |s| 2 + s.tail.len()),
        Answer::Records(a) => a.records.len(),
        Answer::TooMany { bytes } => *bytes,
    };
    let ours = opts.max_udp_payload.max(512);
    let limit = match transport {
        Transport::Tcp => u16::MAX,
        Transport::Udp => edns.map_or(512, |(size, _)| size.clamp(512, ours)),
    };
    let opt_len = if edns.is_some() { 11 } else { 0 };
    let total = qend + body_len + opt_len;
    // An answer the client cannot take: TC with the question and OPT alone, as the general
    // path (and NSD, and Knot) answer it.
    let truncated = total > usize::from(limit);
    let (addrs, soa, total) = match answer {
        // Only the SOA can make a negative answer too big (a long zone name and mailbox, no
        // EDNS): the general path decides, as it counts names compressed.
        Answer::NoData if truncated => return None,
        _ if truncated => (None, None, qend + opt_len),
        Answer::TooMany { .. } => return None, // fits: the general path builds it
        Answer::Records(a) => (Some(a), None, total),
        Answer::NoData => (None, soa, total),
    };
    if total > out.len() {
        return None;
    }
    out[..2].copy_from_slice(&req[..2]);
    out[2] = 0x80 | 0x04 | if truncated { 0x02 } else { 0 } | (req[2] & 0x01); // QR, AA, TC, RD
    out[3] = req[3] & 0x10 | rcode; // CD; RCODE NOERROR or NXDOMAIN
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&addrs.map_or(0, |a| a.count).to_be_bytes());
    out[8..10].copy_from_slice(&u16::from(soa.is_some()).to_be_bytes());
    out[10..12].copy_from_slice(&u16::from(edns.is_some()).to_be_bytes());
    out[12..qend].copy_from_slice(&req[12..qend]);
    let mut at = qend;
    if let Some(a) = addrs {
        let n = usize::from(a.count);
        let body = &mut out[at..at + a.records.len()];
        let split = (rotation % n) * (a.records.len() / n);
        body[..a.records.len() - split].copy_from_slice(&a.records[split..]);
        body[a.records.len() - split..].copy_from_slice(&a.records[..split]);
        at += a.records.len();
    }
    if let Some(s) = soa {
        // Owner: the zone, a suffix of the question name.
        let owner = 12 + qlen.checked_sub(usize::from(s.zone_wire_len))?;
        out[at..at + 2].copy_from_slice(&(0xC000 | u16::try_from(owner).ok()?).to_be_bytes());
        at += 2;
        out[at..at + s.tail.len()].copy_from_slice(&s.tail);
        at += s.tail.len();
        let serial = at - SERIAL_FROM_END;
        out[serial..serial + 4].copy_from_slice(&records.serial(zone).to_be_bytes());
    }
    write_opt(&mut out[at..total], edns, opts);
    Some(total)
}

/// Our OPT record (11 bytes) at the start of `out` when the query had one: our payload size,
/// the DO bit echoed.
fn write_opt(out: &mut [u8], edns: Option<(u16, u8)>, opts: AnswerOptions) {
    if let Some((_, dnssec_ok)) = edns {
        let ours = opts.max_udp_payload.max(512);
        out[..3].copy_from_slice(&[0, 0, 41]);
        out[3..5].copy_from_slice(&ours.to_be_bytes());
        out[5..11].copy_from_slice(&[0, 0, dnssec_ok, 0, 0, 0]);
    }
}

#[cfg(test)]
mod tests;
