//! The fast path: A and AAAA answers compiled ahead of time, per name, into wire format
//! ([`Table`]), and answering from them ([`respond_fast`] for UDP, [`respond_fast_to`] for TCP
//! and for a client placed by the topology map).
//!
//! A compiled answer is the answer section after the question, with owner names written as
//! pointers to the question at offset 12; a name without addresses of the asked family answers
//! NODATA with its zone's SOA, which is kept once per zone ([`ZoneSoa`]). Per query only the ID,
//! the flags, the question (copied from the query, so its case is echoed), the OPT record, the
//! SOA serial and the rotation of the address records are filled in: no allocation, no lock,
//! one hash lookup per name.
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
//! Aliases (a name whose records are only a CNAME target, as fedplane-controller's fallback
//! names) are compiled into their CNAME record alone; an A or AAAA query follows the chain
//! through the table, one lookup per name, to the answer of the last name (records, NODATA or
//! NXDOMAIN with its zone's SOA), within the general path's chain limit, and stops where it
//! leaves our zones or loops. Each name stays compiled on its own, so a change of a target
//! recompiles none of its aliases.
//!
//! Names whose address records carry a locality (`zone`, `region`) or a weight keep one answer
//! per class of client locality (its zone, its region, everyone else), each a rotated RRset or
//! a list to pick one record from by weight, as `answer::select` chooses; the client is placed
//! once per query by the topology map (`answer::Placed`: its client subnet option, else its
//! address), and the option is echoed with the scope of the answer, without allocation.
//!
//! A name the compiler never considered that does not exist (no key at or below it, checked
//! with one ordered-map lookup) is answered NXDOMAIN here too, so that a flood of random
//! names (a "water torture" attack) costs no more than ordinary queries and never fills the
//! general path's queue. A negative answer, or a chain, that does not fit the client takes
//! the general path, which compresses what is written whole here.
//!
//! Everything else takes the general path ([`crate::answer::respond`]), which stays the
//! reference: lease-bound TTLs, the apex, other types, unusual queries. The table is built from
//! the records once after a load ([`Table::compile`]) and changed only by
//! [`Table::recompile`], which redoes just the names changed keys can affect.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::rr::Name;

use crate::answer::wire::MAX_TTL;
use crate::answer::{AnswerOptions, Transport};
use crate::index::{Entry, MAX_NODE_RECORDS, Records};

/// Ancestors of a changed name with more records below them than this are recompiled after
/// the changed names are published ([`Table::recompile_near`]).
pub const NEAR_RECORDS: usize = 64;
use crate::key::{key_target, key_to_name, key_wire, name_to_key, strip_labels};
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

/// The compiled answers, published with the records they were compiled from (the big
/// ancestors of the latest changes may lag: [`Table::recompile_near`]).
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Compiled answers by lowercase wire name: an entry for every name the compiler
    /// considers, `None` where it takes the general path.
    compiled: CompiledMap,
    /// Per zone, the SOA record of compiled NODATA answers.
    zone_soas: Arc<[ZoneSoa]>,
}

/// What [`Table::recompile_near`] did: the names it compiled, and the big ancestors it left
/// for [`Table::compile_apart`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NearFar {
    /// Compiled now.
    pub near: Vec<Name>,
    /// Left for later.
    pub far: Vec<Name>,
}

/// Names compiled apart ([`Table::compile_apart`]): each with its answers (`Some(None)`: the
/// general path), or `None` when it is no candidate any more.
#[derive(Debug)]
pub struct Recompiled(Vec<(Name, Option<Option<Arc<Compiled>>>)>);

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
    /// For an alias (a name that holds only a CNAME target): the CNAME, followed per query
    /// through the table (so a change of the target needs no recompile of its aliases).
    alias: Option<Box<Alias>>,
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

/// The CNAME of an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Alias {
    /// TTL of the CNAME record.
    ttl: u32,
    /// The target's lowercase wire name (the table's key for it).
    target: Box<[u8]>,
    /// Where each label of `target` starts (for the negative lookup of a target never
    /// compiled).
    starts: Box<[u8]>,
    /// The target is inside one of our zones (else the resolver follows it).
    in_zone: bool,
}

/// The compiled answer for one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// No address of the family: NODATA with the zone's SOA.
    NoData,
    /// The address records, rotated per query.
    Records(Addresses),
    /// Records that carry localities or weights: the answer of each locality class, one
    /// chosen per query (`answer::select`'s rules, precomputed).
    Chosen(Box<Choice>),
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

/// The answers of a name whose address records of a family carry localities or weights: one
/// per class of client locality, as `answer::select::by_locality` would choose them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Choice {
    /// Some record carries a zone or region: the answer depends on the client's locality.
    located: bool,
    /// Clients in a zone: the records in that zone.
    zones: Box<[ZoneClass]>,
    /// A client in region `.0` whose zone has none: the records of that region.
    regions: Box<[(Box<str>, Pick)]>,
    /// Every other client: all the records.
    all: Pick,
}

/// The answer for clients in zone `zone` of region `region` (`None`: a region no record
/// names): the records in that zone and that region, or in that zone with no region.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ZoneClass {
    zone: Box<str>,
    region: Option<Box<str>>,
    pick: Pick,
}

/// One class's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pick {
    /// Every address, rotated per query.
    Records(Addresses),
    /// One address chosen by weight per query (`answer::select::pick`).
    Weighted(Weighted),
}

/// Address records (one per entry, in entry order, each of `record_len` bytes) and their
/// weights.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Weighted {
    weights: Box<[u64]>,
    total: u64,
    records: Box<[u8]>,
}

impl Weighted {
    /// The record chosen for the per-query number `n`, as `answer::select::pick` chooses.
    fn pick(&self, n: u64) -> Option<&[u8]> {
        if self.total == 0 {
            return None;
        }
        let len = self.records.len() / self.weights.len();
        let mut at = crate::answer::select::mix(n) % self.total;
        for (i, &w) in self.weights.iter().enumerate() {
            if at < w {
                return self.records.get(i * len..(i + 1) * len);
            }
            at -= w;
        }
        None
    }
}

impl Choice {
    /// The answer for a client at `client` (unknown: `None`).
    fn pick(&self, client: Option<&crate::topology::Locality>) -> &Pick {
        let Some(l) = client.filter(|_| self.located) else {
            return &self.all;
        };
        if let Some(z) = &l.zone {
            let exact = self
                .zones
                .iter()
                .find(|c| c.zone == *z && c.region.as_deref() == Some(&*l.region));
            let other = || {
                self.zones
                    .iter()
                    .find(|c| c.zone == *z && c.region.is_none())
            };
            if let Some(c) = exact.or_else(other) {
                return &c.pick;
            }
        }
        self.regions
            .iter()
            .find(|(r, _)| *r == l.region)
            .map_or(&self.all, |(_, p)| p)
    }
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
    let many = entries.len() > MAX_COMPILED_RECORDS;
    if entries.is_empty() || (!many && entries.iter().any(|e| e.lease != 0)) {
        return None; // nothing here, or TTLs that follow a lease: computed per query
    }
    let now = Instant::now();
    let zone = u16::try_from(zi).ok()?;
    if !has_address {
        // An alias: the CNAME to the first name host that is no mail exchanger, as the
        // general path takes it.
        let target = entries.iter().find_map(|e| match &e.record.host {
            Host::Name(n) if !e.record.mail => Some(n),
            _ => None,
        });
        if let Some(target) = target {
            if many {
                return None;
            }
            let ltarget = target.to_lowercase();
            let wire = wire_name(&ltarget);
            let mut starts = Vec::new();
            let mut at = 0;
            while wire[at] != 0 {
                starts.push(u8::try_from(at).ok()?);
                at += 1 + usize::from(wire[at]);
            }
            let ttl = entries.iter().map(|e| records.ttl(e, now)).min()?;
            return Some(Compiled {
                a: Answer::NoData,
                aaaa: Answer::NoData,
                zone,
                alias: Some(Box::new(Alias {
                    ttl: ttl.min(MAX_TTL),
                    target: wire.into(),
                    starts: starts.into(),
                    in_zone: records.zones().find(&ltarget).is_some(),
                })),
                others: None,
            });
        }
    }
    let choose = |v4: bool| {
        let fam: Vec<&Entry> = entries
            .iter()
            .copied()
            .filter(|e| {
                matches!(
                    (&e.record.host, v4),
                    (Host::V4(_), true) | (Host::V6(_), false)
                )
            })
            .collect();
        let located = fam
            .iter()
            .any(|e| !e.record.zone.is_empty() || !e.record.region.is_empty());
        (located || crate::answer::select::weighted(&fam)).then_some(fam)
    };
    let (a, aaaa) = match (choose(true), choose(false)) {
        (None, None) => (
            answer(records, &entries, true, many, now),
            answer(records, &entries, false, many, now),
        ),
        _ if many => return None, // one address of many: the general path
        (a, aaaa) => {
            let side = |fam: Option<Vec<&Entry>>, v4: bool| match fam {
                Some(fam) => choice(records, &fam, v4, now),
                None => answer(records, &entries, v4, false, now),
            };
            (side(a, true), side(aaaa, false))
        }
    };
    Some(Compiled {
        a,
        aaaa,
        zone,
        alias: None,
        others: many.then(|| Box::new(others(records, &entries))),
    })
}

/// The answers of a family's address entries `fam` (some located or weighted) for every class
/// of client locality.
fn choice(records: &Records, fam: &[&Entry], v4: bool, now: Instant) -> Answer {
    let located = fam
        .iter()
        .any(|e| !e.record.zone.is_empty() || !e.record.region.is_empty());
    let pick = |subset: &[&Entry]| -> Option<Pick> {
        if crate::answer::select::weighted(subset) {
            let mut weights = Vec::with_capacity(subset.len());
            let mut bytes = Vec::new();
            for e in subset {
                weights.push(u64::from(e.record.weight_or_default()));
                let ttl = records.ttl(e, now).min(MAX_TTL);
                push_address(&mut bytes, e, ttl);
            }
            let total = weights.iter().sum();
            return Some(Pick::Weighted(Weighted {
                weights: weights.into(),
                total,
                records: bytes.into(),
            }));
        }
        match answer(records, subset, v4, false, now) {
            Answer::Records(a) => Some(Pick::Records(a)),
            _ => None,
        }
    };
    let Some(all) = pick(fam) else {
        return Answer::NoData;
    };
    let mut zones = Vec::new();
    let mut regions = Vec::new();
    if located {
        // The distinct non-empty values of a field of the records.
        let distinct = |field: fn(&Entry) -> &str| -> Vec<&str> {
            let set: std::collections::BTreeSet<&str> = fam
                .iter()
                .map(|e| field(e))
                .filter(|v| !v.is_empty())
                .collect();
            set.into_iter().collect()
        };
        let zone_names = distinct(|e| &e.record.zone);
        let region_names = distinct(|e| &e.record.region);
        for &z in &zone_names {
            for r in region_names.iter().map(|r| Some(*r)).chain([None]) {
                let subset: Vec<&Entry> = fam
                    .iter()
                    .copied()
                    .filter(|e| {
                        *e.record.zone == *z
                            && (e.record.region.is_empty() || Some(&*e.record.region) == r)
                    })
                    .collect();
                if let Some(pick) = pick(&subset) {
                    zones.push(ZoneClass {
                        zone: z.into(),
                        region: r.map(Into::into),
                        pick,
                    });
                }
            }
        }
        for &r in &region_names {
            let subset: Vec<&Entry> = fam
                .iter()
                .copied()
                .filter(|e| *e.record.region == *r)
                .collect();
            if let Some(p) = pick(&subset) {
                regions.push((r.into(), p));
            }
        }
    }
    Answer::Chosen(Box::new(Choice {
        located,
        zones: zones.into(),
        regions: regions.into(),
        all,
    }))
}

/// Appends an address record whose owner points to the question.
fn push_address(out: &mut Vec<u8>, e: &Entry, ttl: u32) {
    let mut octets = [0u8; 16];
    let (rtype, ip): (u16, &[u8]) = match &e.record.host {
        Host::V4(ip) => {
            octets[..4].copy_from_slice(&ip.octets());
            (1, &octets[..4])
        }
        Host::V6(ip) => {
            octets = ip.octets();
            (28, &octets[..])
        }
        _ => return,
    };
    out.extend_from_slice(&[0xC0, 0x0C]);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&u16::try_from(ip.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(ip);
}

/// The least bytes the SRV, MX and TXT answers of a name (no alias) take: its records told
/// apart by no more than what sets their data apart in the general path (SRV: priority, port
/// and target, not the weight, which the general path recomputes), each at its smallest
/// size: a pointer to the question for the owner, RDATA names as pointers except SRV targets
/// (written whole).
fn others(records: &Records, entries: &[&Entry]) -> Others {
    let prefix = records.zones().prefix();
    let whole = |n: &Name| n.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    let (mut srv, mut mx, mut txt) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut sizes = Others {
        srv: 0,
        mx: 0,
        txt: 0,
    };
    for e in entries {
        let r = &e.record;
        // A target's wire length and its key (the names' identity), from the key itself when
        // the target is the entry's own name: no name is built for each of a big name's
        // records.
        let target = || -> (usize, Cow<'_, str>) {
            match &r.host {
                Host::Name(n) => {
                    let t = strip_labels(n, r.target_strip).to_lowercase();
                    let key = name_to_key(prefix, &t).unwrap_or_else(|| format!("\0{t}"));
                    (whole(&t), Cow::Owned(key))
                }
                _ => key_target(prefix, &e.key, r.target_strip)
                    .map_or((1, Cow::Borrowed(prefix)), |(len, k)| {
                        (len, Cow::Borrowed(k))
                    }),
            }
        };
        if r.host != Host::None && r.port.is_some() {
            let (wire, t) = target();
            let len = 12 + 6 + wire;
            if srv.insert((r.priority_or_default(), r.port, t)) {
                sizes.srv += len;
            }
        }
        if r.host != Host::None && r.mail {
            let (wire, t) = target();
            let len = 12 + 2 + if wire == 1 { 1 } else { 2 };
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
        let done = self.recompile_near(records, keys);
        self.recompile_names(records, &done.far);
    }

    /// [`Table::recompile`] in two steps: this one recompiles the keys' own names and the
    /// ancestors with at most [`NEAR_RECORDS`] records below them, and returns the bigger
    /// ancestors, for [`Table::compile_apart`] (after the names themselves are published:
    /// a parent of thousands of Services costs milliseconds to compile, and answers its
    /// subtree a moment later than the changed name does).
    pub fn recompile_near(&mut self, records: &Records, keys: &[String]) -> NearFar {
        let prefix = records.zones().prefix();
        let ns_keys: Vec<String> = records
            .zones()
            .iter()
            .map(|z| format!("{}/dns/ns", z.key))
            .collect();
        if keys
            .iter()
            .any(|k| ns_keys.iter().any(|ns| k.starts_with(ns.as_str())))
        {
            self.zone_soas = zone_soas(records);
        }
        // Every name up to the apex: its candidacy may change (a key's name and parent by the
        // key itself, any ancestor by how many records it holds), and a name answers its
        // whole subtree; except that a big ancestor answers only its first
        // MAX_NODE_RECORDS records, which a key after them does not change (a parent of
        // 10,000 Services is not recompiled for each of their changes).
        // Each name considered: compiled now (true) or left for later.
        let mut done: HashMap<Name, bool> = HashMap::new();
        // Per big ancestor already compiled: the last key its answers read (None: it has
        // fewer records than that), looked up once per batch, not once per key below it.
        let mut answers_up_to: HashMap<Name, Option<String>> = HashMap::new();
        let mut out = NearFar::default();
        for key in keys {
            let Some(name) = key_to_name(prefix, key) else {
                continue;
            };
            let own = name.to_lowercase();
            let mut n = own.clone();
            while let Some((_, zone)) = records.zones().find(&n) {
                if n == zone.name {
                    // An apex is the general path's; the names above a zone nested in
                    // another one read its keys too.
                    if n.is_root() {
                        break;
                    }
                    n = n.base_name();
                    continue;
                }
                if let Some(now) = done.get_mut(&n) {
                    // A big ancestor of an earlier key whose own key changed too: now.
                    if !*now && n == own {
                        *now = true;
                        out.far.retain(|f| *f != n);
                        self.compile_name(records, &n, wire_name(&n).into());
                        out.near.push(n.clone());
                    }
                    n = n.base_name();
                    continue;
                }
                let wire: Arc<[u8]> = wire_name(&n).into();
                if n != own
                    && self.compiled.contains_key(&wire)
                    && answers_up_to
                        .entry(n.clone())
                        .or_insert_with(|| {
                            name_to_key(prefix, &n).and_then(|k| {
                                records
                                    .nth_key_below(&k, MAX_NODE_RECORDS - 1)
                                    .map(str::to_owned)
                            })
                        })
                        .as_deref()
                        .is_some_and(|last| key.as_str() > last)
                {
                    n = n.base_name();
                    continue;
                }
                let big = n != own
                    && name_to_key(prefix, &n)
                        .is_some_and(|k| records.nth_key_below(&k, NEAR_RECORDS).is_some());
                done.insert(n.clone(), !big);
                if big {
                    out.far.push(n.clone());
                } else {
                    self.compile_name(records, &n, wire);
                    out.near.push(n.clone());
                }
                n = n.base_name();
            }
        }
        out
    }

    /// Recompiles the names `names` (lowercase), as [`Table::recompile`] does.
    pub fn recompile_names(&mut self, records: &Records, names: &[Name]) {
        let _changed = self.put_back(Self::compile_apart(records, names), |_| true);
    }

    /// Compiles the names `names` (lowercase) from `records` apart from any table (on
    /// another thread), for [`Table::put_back`].
    pub fn compile_apart(records: &Records, names: &[Name]) -> Recompiled {
        Recompiled(
            names
                .iter()
                .map(|n| {
                    let c = is_candidate(records, n).then(|| compile(records, n).map(Arc::new));
                    (n.clone(), c)
                })
                .collect(),
        )
    }

    /// Puts the names of `done` that `keep` wants into the table; returns whether an answer
    /// changed.
    pub fn put_back(&mut self, done: Recompiled, mut keep: impl FnMut(&Name) -> bool) -> bool {
        let mut changed = false;
        for (n, c) in done.0 {
            if !keep(&n) {
                continue;
            }
            let wire: Arc<[u8]> = wire_name(&n).into();
            match c {
                Some(c) => {
                    if self.compiled.get(&wire) != Some(&c) {
                        self.compiled.insert(wire, c);
                        changed = true;
                    }
                }
                None => changed |= self.compiled.remove(&wire).is_some(),
            }
        }
        changed
    }

    fn compile_name(&mut self, records: &Records, n: &Name, wire: Arc<[u8]>) {
        if is_candidate(records, n) {
            let c = compile(records, n).map(Arc::new);
            self.compiled.insert(wire, c);
        } else {
            self.compiled.remove(&wire);
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
            // No key names it; a wildcard above may answer it (the general path's).
            let above = std::str::from_utf8(&buf[..at]).ok()?;
            return match records.wildcard_source(above) {
                Some(_) => None,
                None => Some(Negative::NxDomain(zone)),
            };
        }
        buf[at] = b'/';
        buf[at + 1..at + 1 + label.len()].copy_from_slice(label);
        at += 1 + label.len();
    }
    let key = std::str::from_utf8(&buf[..at]).ok()?;
    if records.exists(key) {
        return None;
    }
    // A wildcard's name (RFC 4592): the general path answers it.
    let parent = &key[..key.rfind('/')?];
    match records.wildcard_source(parent) {
        Some(_) => None,
        None => Some(Negative::NxDomain(zone)),
    }
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
    respond_fast_to(records, table, req, opts, rotation, out, transport, None)
}

/// The longest CNAME chain the fast path follows (the general path's limit).
const MAX_CHAIN: usize = crate::answer::MAX_CNAME_CHAIN;

/// [`respond_fast_over`] for a query from `asker` (with the topology map, `--topology`):
/// answers by the client's locality, its client subnet option read and echoed with the scope
/// of the answer, as the general path answers them.
#[allow(clippy::too_many_arguments)]
pub fn respond_fast_to(
    records: &Records,
    table: &Table,
    req: &[u8],
    opts: AnswerOptions,
    rotation: usize,
    out: &mut [u8],
    transport: Transport,
    asker: Option<crate::answer::Asker<'_>>,
) -> Option<usize> {
    if !records.is_loaded() || req.len() < 17 || req[2] & 0xF8 != 0 {
        return None; // not loaded, short, a response, or an opcode other than QUERY
    }
    if opts.by_locality && asker.is_none() {
        return None; // answers depend on a client we do not know
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
    let mut ecs = None;
    let edns = if count(10) == 1 {
        let opt = req.get(qend..qend + 11)?;
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[6] != 0 || qend + 11 + rdlen != req.len() {
            return None; // not an OPT, EDNS version > 0, or trailing bytes
        }
        let options = &req[qend + 11..];
        if rdlen > 0 && !crate::answer::edns::options_tile(options) {
            return None; // malformed options: the general path answers FORMERR
        }
        if asker.is_some() {
            // A malformed client subnet is FORMERR: the general path says so.
            ecs = crate::answer::ecs::ClientSubnet::find(options).ok()?;
        }
        Some((u16::from_be_bytes([opt[3], opt[4]]), opt[7] & 0x80))
    } else if qend != req.len() {
        return None;
    } else {
        None
    };
    let placed = asker.map(|a| crate::answer::Placed::new(a, ecs));
    let client = placed.and_then(|p| p.locality);
    let ours = opts.max_udp_payload.max(512);
    let limit = usize::from(match transport {
        Transport::Tcp => u16::MAX,
        Transport::Udp => edns.map_or(512, |(size, _)| size.clamp(512, ours)),
    });
    let opt = |depends: bool| Opt {
        dnssec_ok: edns.map(|(_, d)| d),
        ecs: placed.and_then(|p| Some((p.ecs?, p.scope(depends)))),
        payload: ours,
    };

    // Follow the name's CNAMEs through the table, to the name that answers.
    let mut chain: [Option<&Alias>; MAX_CHAIN] = [None; MAX_CHAIN];
    let mut links = 0;
    // The chain leaves our zones, loops, or is too long: the resolver follows the last CNAME.
    let mut handed = false;
    let mut wire: &[u8] = &key[..qlen];
    let mut name_starts: &[u8] = &starts[..labels];
    let (zone, answer, rcode) = loop {
        let compiled = match table.lookup(wire) {
            Some(Some(c)) => c,
            Some(None) => return None,
            // Never considered: a name outside every zone is REFUSED, and one that does not
            // exist NXDOMAIN, here at fast-path cost (a flood of random names must not fill
            // the general path's queue).
            None => match negative(records, table, wire, name_starts)? {
                Negative::NxDomain(zone) => break (zone, None, 3),
                Negative::Refused if links > 0 => return None,
                Negative::Refused if opts.short_names => return None, // maybe a short name
                Negative::Refused if opts.catalog => return None,     // maybe the catalog's
                Negative::Refused => {
                    let o = opt(false);
                    let total = qend + o.len(edns.is_some());
                    let out = out.get_mut(..total)?;
                    out[..2].copy_from_slice(&req[..2]);
                    out[2] = 0x80 | (req[2] & 0x01); // QR, RD
                    out[3] = req[3] & 0x10 | 5; // CD; REFUSED
                    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
                    out[12..qend].copy_from_slice(&req[12..qend]);
                    if edns.is_some() {
                        o.write(&mut out[qend..])?;
                    }
                    return Some(total);
                }
            },
        };
        if let Some(alias) = &compiled.alias {
            if !matches!(qtype, 1 | 28) {
                return None; // CNAME, SRV, PTR, ANY read the alias; others follow it there
            }
            chain[links] = Some(alias);
            links += 1;
            if links >= MAX_CHAIN || !alias.in_zone || is_loop(&chain[..links], &key[..qlen]) {
                handed = true;
                break (usize::from(compiled.zone), None, 0);
            }
            wire = &alias.target;
            name_starts = &alias.starts;
            continue;
        }
        let answer = match qtype {
            1 => &compiled.a,
            28 => &compiled.aaaa,
            33 | 15 | 16 => {
                // SRV, MX, TXT: TC-only for a name with many records when they cannot fit
                let o = compiled.others.as_deref()?;
                let bytes = match qtype {
                    33 => o.srv,
                    15 => o.mx,
                    _ => o.txt,
                };
                // Only when they cannot fit: TC-only, as the general path answers.
                let o = opt(false);
                let total = qend + bytes + o.len(edns.is_some());
                if total <= limit {
                    return None;
                }
                return truncated(req, qend, out, o, edns.is_some());
            }
            // PTR (from name hosts), CNAME and ANY: the general path.
            12 | 5 | 255 => return None,
            // Any other type: a compiled name (no alias, not an apex) holds none.
            _ => break (usize::from(compiled.zone), None, 0),
        };
        break (usize::from(compiled.zone), Some(answer), 0);
    };
    let chain = &chain[..links];

    // What the answer holds after the CNAMEs: records (rotated, or one chosen), or the SOA.
    let mut depends = false;
    let mut body: Option<(&[u8], u16, usize)> = None; // records, count, rotate by
    let mut soa = None;
    match answer {
        Some(Answer::Records(a)) => body = Some((&a.records, a.count, rotation)),
        Some(Answer::Chosen(c)) => {
            depends = c.located;
            match c.pick(client) {
                Pick::Records(a) => body = Some((&a.records, a.count, rotation)),
                Pick::Weighted(w) => body = Some((w.pick(rotation as u64)?, 1, 0)),
            }
        }
        Some(Answer::TooMany { bytes }) => {
            let o = opt(false);
            let total = qend + bytes + o.len(edns.is_some());
            if total <= limit || links > 0 {
                return None; // fits: the general path builds it
            }
            return truncated(req, qend, out, o, edns.is_some());
        }
        Some(Answer::NoData) | None => {
            // Negative (NODATA or NXDOMAIN) with the SOA of the zone the chain ended in,
            // except a chain handed to the resolver (no SOA).
            if !handed {
                soa = Some(table.zone_soas.get(zone)?);
            }
        }
    }
    let o = opt(depends);
    let opt_len = o.len(edns.is_some());

    // Sizes: the CNAMEs (owner pointer, fixed part, target whole), the records or the SOA.
    let cname_bytes: usize = chain.iter().flatten().map(|a| 12 + a.target.len()).sum();
    let body_len = body.map_or(0, |(r, _, _)| r.len()) + soa.map_or(0, |s| 2 + s.tail.len());
    let total = qend + cname_bytes + body_len + opt_len;
    if total > limit {
        if links > 0 || soa.is_some() {
            // The general path compresses what we write whole: it decides.
            return None;
        }
        return truncated(req, qend, out, o, edns.is_some());
    }
    if total > out.len() {
        return None;
    }
    let answers = links + body.map_or(0, |(_, n, _)| usize::from(n));
    out[..2].copy_from_slice(&req[..2]);
    out[2] = 0x80 | 0x04 | (req[2] & 0x01); // QR, AA, RD
    out[3] = req[3] & 0x10 | rcode; // CD; RCODE NOERROR or NXDOMAIN
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&u16::try_from(answers).ok()?.to_be_bytes());
    out[8..10].copy_from_slice(&u16::from(soa.is_some()).to_be_bytes());
    out[10..12].copy_from_slice(&u16::from(edns.is_some()).to_be_bytes());
    out[12..qend].copy_from_slice(&req[12..qend]);
    let mut at = qend;
    // The owner of the next record: the question, then each CNAME's target.
    let mut owner: u16 = 12;
    let mut owner_len = qlen;
    for a in chain.iter().flatten() {
        out[at..at + 2].copy_from_slice(&(0xC000 | owner).to_be_bytes());
        out[at + 2..at + 10].copy_from_slice(&[0, 5, 0, 1, 0, 0, 0, 0]);
        out[at + 6..at + 10].copy_from_slice(&a.ttl.to_be_bytes());
        out[at + 10..at + 12].copy_from_slice(&u16::try_from(a.target.len()).ok()?.to_be_bytes());
        out[at + 12..at + 12 + a.target.len()].copy_from_slice(&a.target);
        owner = u16::try_from(at + 12).ok().filter(|o| *o < 0x4000)?;
        owner_len = a.target.len();
        at += 12 + a.target.len();
    }
    if let Some((records, n, rotate)) = body {
        let n = usize::from(n);
        let len = records.len();
        let body = &mut out[at..at + len];
        let split = (rotate % n) * (len / n);
        body[..len - split].copy_from_slice(&records[split..]);
        body[len - split..].copy_from_slice(&records[..split]);
        if owner != 12 {
            for r in body.chunks_mut(len / n) {
                r[..2].copy_from_slice(&(0xC000 | owner).to_be_bytes());
            }
        }
        at += len;
    }
    if let Some(s) = soa {
        // Owner: the zone, a suffix of the last name.
        let offset = owner_len.checked_sub(usize::from(s.zone_wire_len))?;
        let pointer = usize::from(owner) + offset;
        out[at..at + 2].copy_from_slice(&(0xC000 | u16::try_from(pointer).ok()?).to_be_bytes());
        at += 2;
        out[at..at + s.tail.len()].copy_from_slice(&s.tail);
        at += s.tail.len();
        let serial = at - SERIAL_FROM_END;
        out[serial..serial + 4].copy_from_slice(&records.serial(zone).to_be_bytes());
    }
    if edns.is_some() {
        o.write(&mut out[at..total])?;
    }
    Some(total)
}

/// Whether the chain came back to a name it passed (the question's, or a target before the
/// last).
fn is_loop(chain: &[Option<&Alias>], question: &[u8]) -> bool {
    let Some(Some(last)) = chain.last() else {
        return false;
    };
    *last.target == *question
        || chain[..chain.len() - 1]
            .iter()
            .flatten()
            .any(|a| a.target == last.target)
}

/// A TC-only answer (header, question, OPT), as the general path, NSD and Knot answer a query
/// whose answer cannot fit the client.
fn truncated(req: &[u8], qend: usize, out: &mut [u8], o: Opt, edns: bool) -> Option<usize> {
    let total = qend + o.len(edns);
    let out = out.get_mut(..total)?;
    out[..2].copy_from_slice(&req[..2]);
    out[2] = 0x80 | 0x04 | 0x02 | (req[2] & 0x01); // QR, AA, TC, RD
    out[3] = req[3] & 0x10; // CD; NOERROR
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    out[12..qend].copy_from_slice(&req[12..qend]);
    if edns {
        o.write(&mut out[qend..])?;
    }
    Some(total)
}

/// Our OPT record, when the query had one: our payload size, the DO bit echoed, and the client
/// subnet echoed with its scope.
#[derive(Clone, Copy)]
struct Opt {
    dnssec_ok: Option<u8>,
    ecs: Option<(crate::answer::ecs::ClientSubnet, u8)>,
    payload: u16,
}

impl Opt {
    /// Its length in the answer (0 without EDNS).
    fn len(&self, edns: bool) -> usize {
        if edns {
            11 + self.ecs.map_or(0, |(e, _)| e.wire_len())
        } else {
            0
        }
    }

    /// Writes it at the start of `out`.
    fn write(&self, out: &mut [u8]) -> Option<()> {
        let dnssec_ok = self.dnssec_ok?;
        let n = match self.ecs {
            Some((e, scope)) => e.write(scope, out.get_mut(11..)?)?,
            None => 0,
        };
        out[..3].copy_from_slice(&[0, 0, 41]);
        out[3..5].copy_from_slice(&self.payload.to_be_bytes());
        out[5..9].copy_from_slice(&[0, 0, dnssec_ok, 0]);
        out[9..11].copy_from_slice(&u16::try_from(n).ok()?.to_be_bytes());
        Some(())
    }
}

#[cfg(test)]
mod tests;
