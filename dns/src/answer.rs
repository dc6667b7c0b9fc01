//! Turning one query into one response (the general path, and the reference): a pure function
//! of the records, the query bytes, the transport and the clock. No sockets here, so every rule
//! is unit- and property-tested.
//!
//! The rules follow what resolvers expect of an authoritative server: AA on in-zone answers,
//! REFUSED outside the served zones, NXDOMAIN vs NODATA with the SOA in the authority section,
//! in-zone CNAME chains with a loop limit, minimal ANY (RFC 8482), EDNS0 with the payload size
//! honoured, TC when a UDP answer does not fit. Where NSD and Knot are compared on the wire
//! (`dns/tests/nsd_knot.rs`) we send what they send: TC-only (header, question, OPT) for an
//! answer that cannot fit, over TCP too; FORMERR with the header alone for an OPT whose options
//! do not tile its RDATA (`answer/edns.rs`); for QCLASS ANY the IN data without AA, answer
//! section only (NSD).
//!
//! Cost is bounded by the message, not by the data: an RRset is collected only while it can
//! still fit (each record counted at its smallest encoded size), so a name holding 4,096
//! records answers TC-only after reading the records that fill the room; the message is then
//! encoded once, by [`wire`], which compresses every name and caps TTLs at 2^31 − 1
//! (RFC 2181 §8). Nothing here logs: outcomes are returned and counted by the caller.

use rustc_hash::FxHashSet as HashSet;
use std::net::IpAddr;
use std::time::Instant;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, HINFO, MX, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::federation::{Federations, Short, Suffix};
use crate::index::{Entry, Records, Zone};
use crate::key::{name_to_key, strip_labels};
use crate::record::Host;
use crate::soa::{SOA_EXPIRE, SOA_MINIMUM, SOA_REFRESH, SOA_RETRY, default_ns, soa_names};
use crate::topology::{Locality, Topology};
use ecs::ClientSubnet;
use wire::{Section, Writer};

pub mod ecs;
pub(crate) mod edns;
pub mod select;
pub mod wire;
pub mod zone;

/// Largest UDP payload we advertise and send by default (DNS flag day 2020: avoids IP
/// fragmentation on every common path).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
/// Classic DNS UDP limit, for clients without EDNS.
const PLAIN_UDP_PAYLOAD: u16 = 512;
/// How many CNAMEs we follow inside our zones before we hand the rest to the resolver
/// (CoreDNS stops at 8 as well).
pub const MAX_CNAME_CHAIN: usize = 8;
/// TXT character-strings hold at most 255 bytes.
const TXT_CHUNK: usize = 255;

/// How the query arrived; it decides the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Datagram: answers are cut to the client's payload size (TC=1).
    Udp,
    /// Stream: answers up to 65535 bytes.
    Tcp,
}

impl Transport {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// Why a datagram got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than a DNS header.
    Short,
    /// The QR bit says it is a response, not a query (answering could make a loop).
    NotQuery,
    /// The response could not be encoded (should not happen; counted to be sure).
    Encode,
}

impl DropReason {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::NotQuery => "not_a_query",
            Self::Encode => "encode_error",
        }
    }
}

/// What to do with one received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back.
    Reply {
        /// The encoded response.
        bytes: Vec<u8>,
        /// Its response code.
        rcode: ResponseCode,
        /// Whether it was truncated to fit (TC=1).
        truncated: bool,
    },
    /// Send nothing.
    Drop(DropReason),
}

/// Server-wide answer settings.
#[derive(Debug, Clone, Copy)]
pub struct AnswerOptions {
    /// Largest UDP payload we send and advertise in our OPT record.
    pub max_udp_payload: u16,
    /// A topology map is configured: answers may depend on the client's locality (the fast
    /// path then leaves names whose records carry one to the general path).
    pub by_locality: bool,
    /// Federation short names are answered (the fast path then leaves names outside the
    /// zones to the general path, which knows them).
    pub short_names: bool,
    /// A catalog zone is produced (the fast path then leaves names outside the zones to the
    /// general path, which answers the catalog's).
    pub catalog: bool,
}

impl Default for AnswerOptions {
    fn default() -> Self {
        Self {
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
            by_locality: false,
            short_names: false,
            catalog: false,
        }
    }
}

/// Who asked, for answers that depend on it: the query's source address and the topology map
/// (`--topology`) that places it.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'t> {
    /// The source address of the query.
    pub addr: IpAddr,
    /// The map of client subnets to localities.
    pub topology: &'t Topology,
}

/// What an answer may depend on beyond the query and the records.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'t> {
    /// Who asked, with the topology map (`--topology`): answers by locality.
    pub asker: Option<Asker<'t>>,
    /// The federation short names (`--federation`).
    pub federations: Option<&'t Federations>,
    /// Bytes the caller appends to the response (a TSIG record), kept out of its size limit.
    pub reserve: usize,
}

/// Answers one received message, to a client whose locality is unknown, without federation
/// short names (see [`respond_to`]). `rotation` picks the order of multi-record answers and
/// the weighted choice (callers pass a counter so that consecutive answers rotate).
pub fn respond(
    records: &Records,
    request: &[u8],
    transport: Transport,
    opts: AnswerOptions,
    now: Instant,
    rotation: usize,
) -> Outcome {
    respond_to(
        records,
        request,
        transport,
        opts,
        now,
        rotation,
        Context::default(),
    )
}

/// The client and what placed it: its locality, the map entry that matched and how much of
/// its address it revealed. Both paths place a client this way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed<'t> {
    pub(crate) locality: Option<&'t Locality>,
    pub(crate) ecs: Option<ClientSubnet>,
    addr: IpAddr,
    topology: &'t Topology,
    prefix: Option<u8>,
    /// Bits to add to a scope counted in IPv4 bits: 96 for an IPv4-mapped IPv6 subnet.
    scope_offset: u8,
}

impl<'t> Placed<'t> {
    /// Places the asker by its client subnet option, if the query had one, else its address.
    pub(crate) fn new(asker: Asker<'t>, ecs: Option<ClientSubnet>) -> Self {
        let (addr, revealed) = match ecs {
            Some(e) => (e.addr, e.source),
            None => (asker.addr, if asker.addr.is_ipv4() { 32 } else { 128 }),
        };
        // An IPv4-mapped subnet (::ffff:a.b.c.d/n) is looked up as IPv4: its prefix and the
        // scope echoed are counted past the 96 bits of the mapping.
        let mapped = matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
        let (revealed, scope_offset) = if mapped && ecs.is_some() {
            (revealed.saturating_sub(96), 96)
        } else {
            (revealed, 0)
        };
        let found = asker.topology.lookup(addr, revealed);
        Self {
            locality: found.map(|m| asker.topology.locality(m.class)),
            ecs,
            addr,
            topology: asker.topology,
            prefix: found.map(|m| m.prefix),
            scope_offset,
        }
    }

    /// The ECS scope of an answer that did (`depends`) or did not depend on the client's
    /// locality. A client that revealed nothing (source 0) gets the answer for an unknown
    /// client, for every such client: scope 0 (RFC 7871 §7.1.2).
    pub(crate) fn scope(&self, depends: bool) -> u8 {
        match self.ecs {
            Some(ecs) if depends && ecs.source > 0 => self
                .topology
                .scope(self.addr, self.prefix)
                .saturating_add(self.scope_offset)
                .min(128),
            _ => 0,
        }
    }
}

/// Answers one received message in `ctx`: from its asker (with a topology map: answers by
/// locality (`answer::select`), and the EDNS Client Subnet option read, checked and echoed
/// with the scope the answer covers, RFC 7871), and with the federation short names
/// (`crate::federation`).
pub fn respond_to(
    records: &Records,
    request: &[u8],
    transport: Transport,
    opts: AnswerOptions,
    now: Instant,
    rotation: usize,
    ctx: Context<'_>,
) -> Outcome {
    let asker = ctx.asker;
    if request.len() < 12 {
        return Outcome::Drop(DropReason::Short);
    }
    if request[2] & 0x80 != 0 {
        return Outcome::Drop(DropReason::NotQuery);
    }
    let cleaned: Vec<u8>;
    let mut ecs = None;
    let request = match edns::scan(request) {
        edns::Scan::Malformed => return formerr_from_header(request),
        edns::Scan::Options { rdlen_at, end } => {
            if asker.is_some() {
                match ClientSubnet::find(&request[rdlen_at + 2..end]) {
                    Ok(found) => ecs = found,
                    Err(_) => return formerr_from_header(request),
                }
            }
            // hickory does not see the options, so an option it cannot read (a subnet of an
            // unknown family, say) neither fails the query nor logs a line.
            cleaned = [&request[..rdlen_at], &[0, 0], &request[end..]].concat();
            &cleaned
        }
        edns::Scan::Plain => request,
    };
    let placed = asker.map(|a| Placed::new(a, ecs));
    let req = match Message::from_vec(request) {
        Ok(m) => m,
        Err(_) => return formerr_from_header(request),
    };
    let ours = opts.max_udp_payload.max(PLAIN_UDP_PAYLOAD);
    let edns = req.edns.as_ref().map(|e| Opt {
        dnssec_ok: e.flags().dnssec_ok,
        ecs: placed.as_ref().and_then(|p| p.ecs).map(|e| (e, 0)),
    });
    let limit = usize::from(match transport {
        Transport::Tcp => u16::MAX,
        Transport::Udp => req.edns.as_ref().map_or(PLAIN_UDP_PAYLOAD, |e| {
            e.max_payload().clamp(PLAIN_UDP_PAYLOAD, ours)
        }),
    })
    .saturating_sub(ctx.reserve);
    let mut resp = Response {
        id: req.metadata.id,
        op_code: req.metadata.op_code,
        recursion_desired: req.metadata.recursion_desired,
        checking_disabled: req.metadata.checking_disabled,
        authoritative: false,
        rcode: ResponseCode::NoError,
        queries: &req.queries,
        edns,
        payload: ours,
        out: Sections::default(),
        truncated: false,
    };
    resp.rcode = 'rcode: {
        if req.metadata.op_code != OpCode::Query {
            break 'rcode ResponseCode::NotImp;
        }
        if req.edns.as_ref().is_some_and(|e| e.version() != 0) {
            break 'rcode ResponseCode::BADVERS;
        }
        let [query] = req.queries.as_slice() else {
            break 'rcode ResponseCode::FormErr;
        };
        if !req.answers.is_empty() || !req.authorities.is_empty() {
            break 'rcode ResponseCode::FormErr;
        }
        // QCLASS ANY: the IN data, not authoritative (no server holds every class), answer
        // section only, as NSD answers it.
        let any_class = query.query_class() == DNSClass::ANY;
        if query.query_class() != DNSClass::IN && !any_class {
            break 'rcode ResponseCode::Refused;
        }
        match query.query_type() {
            RecordType::AXFR | RecordType::IXFR => break 'rcode ResponseCode::NotImp,
            RecordType::OPT => break 'rcode ResponseCode::FormErr,
            _ => {}
        }
        let lname = query.name().to_lowercase();
        let short = ctx.federations.and_then(|f| f.classify(&lname));
        let zone = records.zones().find(&lname);
        if short.is_none() && zone.is_none() {
            break 'rcode ResponseCode::Refused;
        }
        if !records.is_loaded() {
            // Not loaded from etcd yet: we know nothing, so we must not deny anything.
            break 'rcode ResponseCode::ServFail;
        }
        resp.authoritative = !any_class;
        let fixed = 12 + wire_len(query.name()) + 4 + edns.map_or(0, |e| e.len());
        let mut r = Resolver {
            records,
            now,
            rotation,
            out: Sections::default(),
            room: limit.saturating_sub(fixed),
            client: placed.as_ref().and_then(|p| p.locality),
            depends: false,
            transfer: false,
        };
        let answered = match (short, zone) {
            (Some(short), _) => r.short(query, short),
            (None, Some((zi, zone))) => r.resolve(query, zi, zone),
            (None, None) => unreachable!("refused above"),
        };
        let rcode = match answered {
            Ok(rcode) => rcode,
            Err(TooBig) => {
                resp.truncated = true;
                ResponseCode::NoError
            }
        };
        resp.out = r.out;
        if let (
            Some(p),
            Some(Opt {
                ecs: Some((_, scope)),
                ..
            }),
        ) = (&placed, &mut resp.edns)
        {
            *scope = p.scope(r.depends);
        }
        if any_class {
            resp.out.authorities.clear();
            resp.out.additionals.clear();
        }
        rcode
    };
    resp.encode(limit)
}

/// The answer section (with the authority section) cannot fit: the reply is TC-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TooBig;

/// The query's EDNS, as echoed in our OPT.
#[derive(Debug, Clone, Copy)]
struct Opt {
    dnssec_ok: bool,
    /// The client subnet to echo, with its scope.
    ecs: Option<(ClientSubnet, u8)>,
}

impl Opt {
    /// Bytes of our OPT record.
    fn len(&self) -> usize {
        wire::OPT_LEN + self.ecs.map_or(0, |(e, _)| e.wire_len())
    }
}

/// A response before encoding.
struct Response<'q> {
    id: u16,
    op_code: OpCode,
    recursion_desired: bool,
    checking_disabled: bool,
    authoritative: bool,
    rcode: ResponseCode,
    queries: &'q [Query],
    edns: Option<Opt>,
    /// The payload size we advertise.
    payload: u16,
    out: Sections,
    /// The answer was found too big before it was built.
    truncated: bool,
}

impl Response<'_> {
    /// Encodes within `limit`. Additional records are optional (RFC 2181 §9): when they do not
    /// fit they are left out without TC. Only when the answer itself does not fit is TC set,
    /// with the question and OPT alone (what NSD and Knot send); the client then retries over
    /// TCP.
    fn encode(self, limit: usize) -> Outcome {
        let rcode = u16::from(self.rcode);
        let flags = 0x8000
            | (u16::from(u8::from(self.op_code)) << 11)
            | (u16::from(self.authoritative) << 10)
            | (u16::from(self.recursion_desired) << 8)
            | (u16::from(self.checking_disabled) << 4)
            | (rcode & 0xF);
        let mut header = [0u8; 12];
        header[..2].copy_from_slice(&self.id.to_be_bytes());
        header[2..4].copy_from_slice(&flags.to_be_bytes());
        let mut w = Writer::new(header, limit.min(4096));
        for q in self.queries {
            w.question(q);
        }
        let question_end = w.position();
        let opt_len = self.edns.map_or(0, |e| e.len());
        let mut truncated = self.truncated;
        if !truncated {
            for r in &self.out.answers {
                w.record(Section::Answer, r);
            }
            for r in &self.out.authorities {
                w.record(Section::Authority, r);
            }
            if w.position() + opt_len > limit {
                truncated = true;
                w.truncate(question_end, [0; 3]);
            } else if !self.out.additionals_dropped {
                let (before, counts) = (w.position(), w.counts());
                for r in &self.out.additionals {
                    w.record(Section::Additional, r);
                }
                if w.position() + opt_len > limit {
                    w.truncate(before, counts);
                }
            }
        }
        if truncated {
            w.set_flags(TC_FLAG, true);
        }
        if let Some(e) = self.edns {
            let mut options = [0u8; 24];
            let n = e
                .ecs
                .and_then(|(ecs, scope)| ecs.write(scope, &mut options))
                .unwrap_or(0);
            w.opt(
                self.payload,
                u8::try_from(rcode >> 4).unwrap_or(0),
                e.dnssec_ok,
                &options[..n],
            );
        }
        let bytes = w.finish();
        if bytes.len() > limit {
            return Outcome::Drop(DropReason::Encode);
        }
        Outcome::Reply {
            bytes,
            rcode: self.rcode,
            truncated,
        }
    }
}

/// The TC bit in the header's flags.
const TC_FLAG: u16 = 0x0200;

/// Bytes of a name written whole.
fn wire_len(name: &Name) -> usize {
    name.iter().map(|l| l.len() + 1).sum::<usize>() + 1
}

/// The header parsed but the rest did not: FORMERR with the ID, opcode and RD echoed and no
/// sections (we cannot trust any of them), as NSD answers.
fn formerr_from_header(request: &[u8]) -> Outcome {
    let mut bytes = vec![0u8; 12];
    bytes[..2].copy_from_slice(&request[..2]);
    bytes[2] = 0x80 | (request[2] & 0x79); // QR, opcode, RD
    bytes[3] = 0x01; // FORMERR
    Outcome::Reply {
        bytes,
        rcode: ResponseCode::FormErr,
        truncated: false,
    }
}

#[derive(Default)]
struct Sections {
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    /// What the additional records take at least ([`wire::min_len`]).
    additional_bytes: usize,
    /// The additional records so far, to add each once.
    additional_seen: HashSet<(Name, RData)>,
    /// The additional records found could not fit: none are sent (and no more looked up).
    additionals_dropped: bool,
}

struct Resolver<'a> {
    records: &'a Records,
    now: Instant,
    rotation: usize,
    out: Sections,
    /// What the answer and authority sections may still take, counted with
    /// [`wire::min_len`]: past it the answer cannot fit and collecting stops.
    room: usize,
    /// The client's locality, when known.
    client: Option<&'a Locality>,
    /// An answer depended on the client's locality.
    depends: bool,
    /// Reading the zone for a transfer: every address (no weighted pick) and static TTLs
    /// ([`Records::static_ttl`]).
    transfer: bool,
}

/// The name being answered: the owner name as asked (its case is echoed), its entries, and
/// its zone.
struct Node<'n> {
    owner: &'n Name,
    entries: &'n [&'n Entry],
    apex: bool,
    zone: &'n Zone,
}

/// What one name holds for one query type.
enum Step {
    Records(Vec<Record>),
    NoData,
    Alias(Name),
}

/// One RRset being collected: no duplicate data, and no more than `room` bytes (at least) on
/// the wire, so an answer that cannot fit is given up on after the records that fill the room,
/// not after all 4,096 a name may hold.
struct Collect<'o> {
    owner: &'o Name,
    records: Vec<Record>,
    seen: HashSet<RData>,
    bytes: usize,
    room: usize,
}

impl<'o> Collect<'o> {
    fn new(owner: &'o Name, room: usize) -> Self {
        Self {
            owner,
            records: Vec::new(),
            seen: HashSet::default(),
            bytes: 0,
            room,
        }
    }

    fn push(&mut self, ttl: u32, rdata: RData) -> Result<(), TooBig> {
        if self.seen.contains(&rdata) {
            return Ok(());
        }
        self.bytes += wire::min_len(self.owner, &rdata);
        if self.bytes > self.room {
            return Err(TooBig);
        }
        self.seen.insert(rdata.clone());
        self.records
            .push(Record::from_rdata(self.owner.clone(), ttl, rdata));
        Ok(())
    }
}

impl<'a> Resolver<'a> {
    /// A name at or below a federation suffix: the alias of a service's short name (and the
    /// chain it starts in our zones), the suffix's SOA, or NXDOMAIN.
    fn short(&mut self, query: &Query, short: Short) -> Result<ResponseCode, TooBig> {
        let qtype = query.query_type();
        let suffix = match short {
            Short::Alias(target) => {
                let cname = Record::from_rdata(
                    query.name().clone(),
                    SOA_MINIMUM,
                    RData::CNAME(CNAME(target.clone())),
                );
                self.charge(&cname)?;
                self.out.answers.push(cname);
                if qtype == RecordType::CNAME {
                    return Ok(ResponseCode::NoError);
                }
                let ltarget = target.to_lowercase();
                // Out of our zones: the resolver follows the CNAME itself.
                let Some((zi, zone)) = self.records.zones().find(&ltarget) else {
                    return Ok(ResponseCode::NoError);
                };
                return self.resolve(&Query::query(target, qtype), zi, zone);
            }
            Short::Apex(suffix) if qtype == RecordType::SOA => {
                let soa = self.suffix_soa(&suffix);
                self.charge(&soa)?;
                self.out.answers.push(soa);
                return Ok(ResponseCode::NoError);
            }
            Short::Apex(suffix) | Short::Empty(suffix) => {
                let soa = self.suffix_soa(&suffix);
                self.charge(&soa)?;
                self.out.authorities.push(soa);
                return Ok(ResponseCode::NoError);
            }
            Short::NxDomain(suffix) => suffix,
        };
        let soa = self.suffix_soa(&suffix);
        self.charge(&soa)?;
        self.out.authorities.push(soa);
        Ok(ResponseCode::NXDomain)
    }

    /// The SOA of a federation suffix: its federation zone's, owned by the suffix (serial 1
    /// when that zone is not served here).
    fn suffix_soa(&self, suffix: &Suffix) -> Record {
        match self.records.zones().find(&suffix.domain) {
            Some((zi, zone)) if zone.name == suffix.domain => {
                let mut soa = self.soa(zi, zone);
                soa.name = suffix.name.clone();
                soa
            }
            _ => Record::from_rdata(
                suffix.name.clone(),
                SOA_MINIMUM,
                RData::SOA(SOA::new(
                    Name::from_ascii("ns.dns")
                        .and_then(|n| n.append_name(&suffix.name))
                        .unwrap_or_else(|_| suffix.name.clone()),
                    Name::from_ascii("hostmaster")
                        .and_then(|h| h.append_name(&suffix.name))
                        .unwrap_or_else(|_| suffix.name.clone()),
                    1,
                    SOA_REFRESH,
                    SOA_RETRY,
                    SOA_EXPIRE,
                    SOA_MINIMUM,
                )),
            ),
        }
    }

    fn resolve(&mut self, query: &Query, zi: usize, zone: &Zone) -> Result<ResponseCode, TooBig> {
        let qtype = query.query_type();
        let mut owner = query.name().clone();
        let (mut zi, mut zone) = (zi, zone.clone());
        let mut visited: Vec<Name> = Vec::new();
        loop {
            let lname = owner.to_lowercase();
            let apex = lname == zone.name;
            let mut entries = self.entries_of(&lname, &zone);
            if entries.is_empty() && !apex {
                // A name that does not exist may be a wildcard's (RFC 4592): its records,
                // with the name asked as their owner.
                entries = self.wildcard_entries(&lname, &zone);
            }
            if entries.is_empty() && !apex {
                let soa = self.soa(zi, &zone);
                self.charge(&soa)?;
                self.out.authorities.push(soa);
                return Ok(ResponseCode::NXDomain);
            }
            let node = Node {
                owner: &owner,
                entries: &entries,
                apex,
                zone: &zone,
            };
            match self.step(&node, qtype)? {
                Step::Records(records) => {
                    self.answer_rotated(records)?;
                    return Ok(ResponseCode::NoError);
                }
                Step::NoData => {
                    let soa = self.soa(zi, &zone);
                    self.charge(&soa)?;
                    self.out.authorities.push(soa);
                    return Ok(ResponseCode::NoError);
                }
                Step::Alias(target) => {
                    let ttl = self.min_ttl(&entries);
                    let cname =
                        Record::from_rdata(owner.clone(), ttl, RData::CNAME(CNAME(target.clone())));
                    self.charge(&cname)?;
                    self.out.answers.push(cname);
                    visited.push(lname);
                    let ltarget = target.to_lowercase();
                    if visited.len() >= MAX_CNAME_CHAIN || visited.contains(&ltarget) {
                        return Ok(ResponseCode::NoError);
                    }
                    // Out of our zones: the resolver follows the CNAME itself.
                    let Some((nzi, nzone)) = self.records.zones().find(&ltarget) else {
                        return Ok(ResponseCode::NoError);
                    };
                    (zi, zone) = (nzi, nzone.clone());
                    owner = target;
                }
            }
        }
    }

    /// Takes room for a record of the answer or authority section.
    fn charge(&mut self, r: &Record) -> Result<(), TooBig> {
        let n = wire::min_len(&r.name, &r.data);
        self.room = self.room.checked_sub(n).ok_or(TooBig)?;
        Ok(())
    }

    /// Adds the answer RRset, rotated so that consecutive answers take turns.
    fn answer_rotated(&mut self, mut records: Vec<Record>) -> Result<(), TooBig> {
        for r in &records {
            self.charge(r)?;
        }
        if records.len() > 1 {
            let n = self.rotation % records.len();
            records.rotate_left(n);
        }
        self.out.answers.extend(records);
        Ok(())
    }

    /// Adds additional records, unless they (with what the answer takes) cannot fit: then
    /// none are sent and no more are looked up.
    fn add_extra(&mut self, records: Result<Vec<Record>, TooBig>) {
        match records {
            Ok(records) if !self.out.additionals_dropped => {
                for r in records {
                    if self
                        .out
                        .additional_seen
                        .insert((r.name.to_lowercase(), r.data.clone()))
                    {
                        self.out.additional_bytes += wire::min_len(&r.name, &r.data);
                        self.out.additionals.push(r);
                    }
                }
            }
            _ => {
                self.out.additionals_dropped = true;
                self.out.additionals = Vec::new();
            }
        }
    }

    /// Room left for additional records while `answer_bytes` of answer are being collected.
    fn extra_room(&self, answer_bytes: usize) -> usize {
        self.room
            .saturating_sub(answer_bytes + self.out.additional_bytes)
    }

    /// The records of a name: its key and subtree, or for a zone apex only `<zone>/dns/apex`
    /// (never the whole zone).
    fn entries_of(&self, lname: &Name, zone: &Zone) -> Vec<&'a Entry> {
        if *lname == zone.name {
            self.records.node(&format!("{}/dns/apex", zone.key))
        } else {
            name_to_key(self.records.zones().prefix(), lname)
                .map_or_else(Vec::new, |key| self.records.node(&key))
        }
    }

    /// The records of the wildcard that answers `lname`, a name that does not exist (see
    /// [`Records::wildcard_source`]); none when no wildcard does.
    fn wildcard_entries(&self, lname: &Name, zone: &Zone) -> Vec<&'a Entry> {
        let prefix = self.records.zones().prefix();
        // The closest encloser is above the name: from its parent, or from the nearest
        // ancestor a key can spell (a label with a byte no key holds names nothing).
        let mut above = lname.base_name();
        loop {
            if let Some(key) = name_to_key(prefix, &above) {
                return self
                    .records
                    .wildcard_source(&key)
                    .map_or_else(Vec::new, |w| self.records.node(&w));
            }
            if above.num_labels() <= zone.name.num_labels() {
                return Vec::new();
            }
            above = above.base_name();
        }
    }

    /// What the name holds for `qtype`: an alias to follow, the answer records, or NODATA.
    fn step(&mut self, node: &Node<'_>, qtype: RecordType) -> Result<Step, TooBig> {
        let alias = alias_of(node.entries, node.apex);
        if let Some(t) = &alias
            && !reads_alias_data(qtype)
        {
            return Ok(Step::Alias(t.clone()));
        }
        Ok(match qtype {
            RecordType::CNAME => self.cname(node, alias),
            RecordType::ANY => minimal_any(node.owner),
            _ => {
                let records = self.records_of_type(node, qtype)?;
                settle(records, alias, qtype)
            }
        })
    }

    /// A CNAME query: the alias, or NODATA for a name that is none.
    fn cname(&self, node: &Node<'_>, alias: Option<Name>) -> Step {
        alias.map_or(Step::NoData, |t| {
            let ttl = self.min_ttl(node.entries);
            Step::Records(vec![Record::from_rdata(
                node.owner.clone(),
                ttl,
                RData::CNAME(CNAME(t)),
            )])
        })
    }

    /// The records of type `qtype` the name's entries make (none for types we do not hold);
    /// NS adds its glue to the additional section.
    fn records_of_type(
        &mut self,
        node: &Node<'_>,
        qtype: RecordType,
    ) -> Result<Vec<Record>, TooBig> {
        let Node {
            owner,
            entries,
            apex,
            zone,
        } = *node;
        match qtype {
            RecordType::A => self.chosen_addresses(owner, entries, true),
            RecordType::AAAA => self.chosen_addresses(owner, entries, false),
            RecordType::TXT => self.txt(owner, entries),
            RecordType::MX => self.targets(owner, entries, Kind::Mx),
            RecordType::SRV => self.targets(owner, entries, Kind::Srv),
            RecordType::PTR => self.ptr(owner, entries),
            RecordType::NS if apex => {
                let (ns, glue) = self.ns(owner, zone);
                let bytes = ns.iter().map(|r| wire::min_len(&r.name, &r.data)).sum();
                let glue_bytes: usize = glue.iter().map(|r| wire::min_len(&r.name, &r.data)).sum();
                let fits = glue_bytes <= self.extra_room(bytes);
                self.add_extra(if fits { Ok(glue) } else { Err(TooBig) });
                Ok(ns)
            }
            RecordType::SOA if apex => {
                let zi = self.records.zones().find(&zone.name).map_or(0, |(i, _)| i);
                let mut soa = self.soa(zi, zone);
                soa.name = owner.clone();
                Ok(vec![soa])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// PTR: the name hosts (not mail) of the entries.
    fn ptr(&self, owner: &Name, entries: &[&Entry]) -> Result<Vec<Record>, TooBig> {
        let mut set = Collect::new(owner, self.room);
        for e in entries {
            if let Host::Name(n) = &e.record.host
                && !e.record.mail
            {
                set.push(self.ttl(e), RData::PTR(PTR(n.clone())))?;
            }
        }
        Ok(set.records)
    }

    /// The TTL answered for `e` (see [`Resolver::transfer`]).
    fn ttl(&self, e: &Entry) -> u32 {
        if self.transfer {
            Records::static_ttl(e)
        } else {
            self.records.ttl(e, self.now)
        }
    }

    fn min_ttl(&self, entries: &[&Entry]) -> u32 {
        entries
            .iter()
            .map(|e| self.ttl(e))
            .min()
            .unwrap_or(SOA_MINIMUM)
    }

    /// The A (or AAAA) answer: the addresses [`select`] leaves for this client.
    fn chosen_addresses(
        &mut self,
        owner: &Name,
        entries: &[&Entry],
        v4: bool,
    ) -> Result<Vec<Record>, TooBig> {
        let (mut chosen, depends) = select::by_locality(entries, v4, self.client);
        self.depends |= depends == select::Depends::OnLocality;
        if !self.transfer
            && select::weighted(&chosen)
            && let Some(i) = select::pick(&chosen, self.rotation as u64)
        {
            chosen = vec![chosen[i]];
        }
        self.addresses(owner, &chosen, v4, self.room)
    }

    /// The A (or AAAA) records of the entries, while they take at most `room` bytes.
    fn addresses(
        &self,
        owner: &Name,
        entries: &[&Entry],
        v4: bool,
        room: usize,
    ) -> Result<Vec<Record>, TooBig> {
        // Many entries: count the distinct addresses first (each record takes the same room),
        // and give up without building any record when they cannot fit.
        let per = wire::min_len(owner, &RData::A(A::new(0, 0, 0, 0))) + if v4 { 0 } else { 12 };
        if entries.len().saturating_mul(per) > room {
            let mut seen: HashSet<[u8; 16]> = HashSet::default();
            for e in entries {
                let ip = match (&e.record.host, v4) {
                    (Host::V4(ip), true) => ip.to_ipv6_mapped().octets(),
                    (Host::V6(ip), false) => ip.octets(),
                    _ => continue,
                };
                if seen.insert(ip) && seen.len() * per > room {
                    return Err(TooBig);
                }
            }
        }
        let mut set = Collect::new(owner, room);
        for e in entries {
            let rdata = match (&e.record.host, v4) {
                (Host::V4(ip), true) => RData::A(A(*ip)),
                (Host::V6(ip), false) => RData::AAAA(AAAA(*ip)),
                _ => continue,
            };
            set.push(self.ttl(e), rdata)?;
        }
        Ok(set.records)
    }

    fn txt(&self, owner: &Name, entries: &[&Entry]) -> Result<Vec<Record>, TooBig> {
        let mut set = Collect::new(owner, self.room);
        for e in entries.iter().filter(|e| !e.record.text.is_empty()) {
            let chunks: Vec<&[u8]> = e.record.text.as_bytes().chunks(TXT_CHUNK).collect();
            set.push(self.ttl(e), RData::TXT(TXT::from_bytes(chunks)))?;
        }
        Ok(set.records)
    }

    /// SRV and MX: the target is `host` when it is a name, else a name made from the key (with
    /// `targetstrip`) whose address goes in the additional section.
    fn targets(
        &mut self,
        owner: &Name,
        entries: &[&Entry],
        kind: Kind,
    ) -> Result<Vec<Record>, TooBig> {
        let chosen: Vec<&Entry> = entries
            .iter()
            .copied()
            .filter(|e| match kind {
                Kind::Srv => e.record.port.is_some() && e.record.host != Host::None,
                Kind::Mx => e.record.mail && e.record.host != Host::None,
            })
            .collect();
        // SRV weight per priority: floor(100 / sum × weight), at least 1.
        let mut sums: Vec<(u16, u32)> = Vec::new();
        for e in &chosen {
            let p = e.record.priority_or_default();
            let w = u32::from(e.record.weight_or_default());
            match sums.iter_mut().find(|(q, _)| *q == p) {
                Some((_, s)) => *s += w,
                None => sums.push((p, w)),
            }
        }
        let mut set = Collect::new(owner, self.room);
        let mut looked_up: HashSet<Name> = HashSet::default();
        for e in chosen {
            let r = &e.record;
            let ttl = self.ttl(e);
            let (target, address) = match &r.host {
                Host::Name(n) => (strip_labels(n, r.target_strip), None),
                Host::V4(ip) => (self.made_up_target(e), Some(RData::A(A(*ip)))),
                Host::V6(ip) => (self.made_up_target(e), Some(RData::AAAA(AAAA(*ip)))),
                Host::None => continue,
            };
            let prio = r.priority_or_default();
            let rdata = match kind {
                Kind::Mx => RData::MX(MX::new(prio, target.clone())),
                Kind::Srv => {
                    let sum = sums.iter().find(|(q, _)| *q == prio).map_or(1, |(_, s)| *s);
                    let w = (100 * u32::from(r.weight_or_default())) / sum.max(1);
                    let w = u16::try_from(w.max(1)).unwrap_or(u16::MAX);
                    RData::SRV(SRV::new(prio, w, r.port.unwrap_or(0), target.clone()))
                }
            };
            set.push(ttl, rdata)?;
            if self.out.additionals_dropped {
                continue;
            }
            let extra = match address {
                Some(rdata) => {
                    let glue = Record::from_rdata(target, ttl, rdata);
                    let fits = wire::min_len(&glue.name, &glue.data) <= self.extra_room(set.bytes);
                    if fits { Ok(vec![glue]) } else { Err(TooBig) }
                }
                None if looked_up.insert(target.to_lowercase()) => {
                    self.in_zone_addresses(&target, self.extra_room(set.bytes))
                }
                None => Ok(Vec::new()),
            };
            self.add_extra(extra);
        }
        Ok(set.records)
    }

    fn made_up_target(&self, e: &Entry) -> Name {
        e.target_name(self.records.zones().prefix())
    }

    /// A and AAAA of an in-zone target, for the additional section, while they take at most
    /// `room` bytes.
    fn in_zone_addresses(&self, target: &Name, room: usize) -> Result<Vec<Record>, TooBig> {
        let lt = target.to_lowercase();
        let Some((_, zone)) = self.records.zones().find(&lt) else {
            return Ok(Vec::new());
        };
        let entries = self.entries_of(&lt, zone);
        let mut v = self.addresses(target, &entries, true, room)?;
        let taken: usize = v.iter().map(|r| wire::min_len(&r.name, &r.data)).sum();
        v.extend(self.addresses(target, &entries, false, room - taken)?);
        Ok(v)
    }

    /// NS records at the apex from `ns.dns.<zone>`, with glue; `ns.dns.<zone>` itself when
    /// etcd holds none.
    fn ns(&self, owner: &Name, zone: &Zone) -> (Vec<Record>, Vec<Record>) {
        let entries = self.records.node(&format!("{}/dns/ns", zone.key));
        let (mut ns, mut glue) = (Vec::new(), Vec::new());
        for e in &entries {
            let ttl = self.ttl(e);
            let (name, addr) = match &e.record.host {
                Host::Name(n) => (n.clone(), None),
                Host::V4(ip) => (self.made_up_target(e), Some(RData::A(A(*ip)))),
                Host::V6(ip) => (self.made_up_target(e), Some(RData::AAAA(AAAA(*ip)))),
                Host::None => continue,
            };
            if let Some(a) = addr {
                glue.push(Record::from_rdata(name.clone(), ttl, a));
            }
            ns.push(Record::from_rdata(owner.clone(), ttl, RData::NS(NS(name))));
        }
        if ns.is_empty() {
            ns.push(Record::from_rdata(
                owner.clone(),
                SOA_MINIMUM,
                RData::NS(NS(default_ns(zone))),
            ));
        }
        dedup_records(&mut glue);
        (ns, glue)
    }

    fn soa(&self, zi: usize, zone: &Zone) -> Record {
        let (mname, rname) = soa_names(self.records, zone);
        Record::from_rdata(
            zone.name.clone(),
            SOA_MINIMUM,
            RData::SOA(SOA::new(
                mname,
                rname,
                self.records.serial(zi),
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                SOA_MINIMUM,
            )),
        )
    }
}

/// The alias (CNAME target) of a name: a name that lists only names (no addresses), never the
/// apex. An alias holds no other data (RFC 1034 3.6.2), except that SRV and PTR queries read
/// name hosts as SRV targets and PTR names, as SkyDNS does. A name host with a port (an SRV
/// record, such as fedplane-controller's `_<port>._<proto>.<name>`) is no alias: the name
/// answers SRV, and NODATA otherwise (in transfers too).
fn alias_of(entries: &[&Entry], apex: bool) -> Option<Name> {
    let has_address = entries
        .iter()
        .any(|e| matches!(e.record.host, Host::V4(_) | Host::V6(_)));
    if apex || has_address {
        return None;
    }
    entries.iter().find_map(|e| match &e.record.host {
        Host::Name(n) if !e.record.mail && e.record.port.unwrap_or(0) == 0 => Some(n.clone()),
        _ => None,
    })
}

/// Query types answered from an alias's own data rather than by following it: CNAME and ANY,
/// and SRV and PTR (name hosts are their targets and names).
fn reads_alias_data(qtype: RecordType) -> bool {
    matches!(
        qtype,
        RecordType::CNAME | RecordType::SRV | RecordType::PTR | RecordType::ANY
    )
}

/// RFC 8482: a minimal answer to ANY instead of everything we hold.
fn minimal_any(owner: &Name) -> Step {
    Step::Records(vec![Record::from_rdata(
        owner.clone(),
        SOA_MINIMUM,
        RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
    )])
}

/// Records found are one RRset; none is NODATA, or for an alias (except PTR, whose data it
/// is) the alias to follow.
fn settle(records: Vec<Record>, alias: Option<Name>, qtype: RecordType) -> Step {
    if !records.is_empty() {
        return Step::Records(uniform_rrset(records));
    }
    match alias {
        Some(t) if qtype != RecordType::PTR => Step::Alias(t),
        _ => Step::NoData,
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Srv,
    Mx,
}

/// One RRset (collected without duplicates): one TTL, the lowest (RFC 2181 §5.2).
fn uniform_rrset(mut records: Vec<Record>) -> Vec<Record> {
    if let Some(ttl) = records.iter().map(|r| r.ttl).min() {
        for r in &mut records {
            r.ttl = ttl;
        }
    }
    records
}

fn dedup_records(records: &mut Vec<Record>) {
    let mut seen: HashSet<(Name, RData)> =
        HashSet::with_capacity_and_hasher(records.len(), rustc_hash::FxBuildHasher);
    records.retain(|r| seen.insert((r.name.to_lowercase(), r.data.clone())));
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
