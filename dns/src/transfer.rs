//! Zone transfers out (AXFR, RFC 5936; IXFR, RFC 1995), as a pure function of the records
//! and the request: [`parse`] reads a transfer request, [`Stream`] writes the zone as a
//! sequence of messages, each signed when the request was ([`crate::tsig::Signer`]).
//!
//! A transfer reads one snapshot of the records (the caller holds it), so it is consistent
//! however etcd changes meanwhile. The zone is what the server answers ([`zone`]): the SOA,
//! the apex's NS and data, every name with its RRsets, the SOA again. Messages are filled to
//! about [`MESSAGE_TARGET`] bytes, every name compressed within its message; the question is
//! in the first message only, and each message carries an OPT record when the request had
//! one.
//!
//! IXFR answers the deltas from the client's serial to ours when the history holds them
//! ([`crate::ixfr`]; RFC 1995 §4), else the whole zone in IXFR form (the SOA, every record,
//! the SOA), and a client already at our serial (or, by serial arithmetic, past it) gets the
//! single SOA; over UDP the deltas are sent when they fit in one datagram, else the single
//! SOA (the client then asks over TCP).

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use crate::answer::wire::{Section, Writer};
use crate::answer::zone;
use std::sync::Arc;

use crate::index::{Records, Zone};
use crate::ixfr::Delta;
use crate::tsig::Signer;

/// A transfer message is closed once it holds this many bytes (names stay compressible:
/// pointers reach 16 KiB), and it never holds more than one record past it.
pub const MESSAGE_TARGET: usize = 16_000;
/// Our UDP payload size in the OPT of transfer messages.
const OPT_PAYLOAD: u16 = 1232;

/// A transfer request, read.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its ID, echoed in every message.
    pub id: u16,
    /// The question as asked (its case is echoed).
    pub query: Query,
    /// AXFR or IXFR.
    pub kind: Kind,
    /// The zone's index among the served zones.
    pub zi: usize,
    /// The request had an OPT record.
    pub edns: bool,
    /// The largest UDP answer the client takes (512 without EDNS).
    pub udp_limit: usize,
}

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The whole zone.
    Axfr,
    /// What changed since the client's serial.
    Ixfr {
        /// The serial of the client's SOA.
        serial: u32,
    },
}

/// The type of a transfer request (opcode QUERY, one question of type AXFR or IXFR), read
/// from its bytes without parsing it; `None` for any other message.
pub fn transfer_type(msg: &[u8]) -> Option<RecordType> {
    if msg.len() < 12 || msg[2] & 0xF8 != 0 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    while let Some(&len) = msg.get(at) {
        match len {
            0 => {
                return match msg.get(at + 1..at + 3) {
                    Some([0, 251]) => Some(RecordType::IXFR),
                    Some([0, 252]) => Some(RecordType::AXFR),
                    _ => None,
                };
            }
            1..=63 => at += 1 + usize::from(len),
            _ => return None,
        }
    }
    None
}

/// Reads a transfer request (without its TSIG record): the error to answer when it is
/// malformed (FORMERR), not for a served zone apex (NOTAUTH), or the records are not loaded
/// yet (SERVFAIL).
pub fn parse(records: &Records, msg: &[u8]) -> Result<Request, ResponseCode> {
    let m = Message::from_vec(msg).map_err(|_| ResponseCode::FormErr)?;
    let [query] = m.queries.as_slice() else {
        return Err(ResponseCode::FormErr);
    };
    if m.metadata.op_code != OpCode::Query || !m.answers.is_empty() {
        return Err(ResponseCode::FormErr);
    }
    if query.query_class() != DNSClass::IN {
        return Err(ResponseCode::Refused);
    }
    let lname = query.name().to_lowercase();
    let zi = match records.zones().find(&lname) {
        Some((zi, zone)) if zone.name == lname => zi,
        _ => return Err(ResponseCode::NotAuth),
    };
    let kind = match query.query_type() {
        RecordType::AXFR if m.authorities.is_empty() => Kind::Axfr,
        RecordType::IXFR => {
            // The client's SOA, in the authority section; its serial is all we read.
            let serial = m.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) if r.name.to_lowercase() == lname => Some(soa.serial),
                _ => None,
            });
            Kind::Ixfr {
                serial: serial.ok_or(ResponseCode::FormErr)?,
            }
        }
        _ => return Err(ResponseCode::FormErr),
    };
    if !records.is_loaded() {
        return Err(ResponseCode::ServFail);
    }
    Ok(Request {
        id: m.metadata.id,
        query: query.clone(),
        kind,
        zi,
        edns: m.edns.is_some(),
        udp_limit: usize::from(m.edns.as_ref().map_or(512, |e| {
            e.max_payload()
                .clamp(512, crate::answer::DEFAULT_MAX_UDP_PAYLOAD)
        })),
    })
}

/// Whether a client at `client` is up to date with our `current` serial: equal, or ahead of
/// it by serial arithmetic (RFC 1982; at exactly 2^31 apart the order is undefined, and the
/// client is sent the zone).
pub fn up_to_date(client: u32, current: u32) -> bool {
    client.wrapping_sub(current) < 0x8000_0000
}

/// What a transfer answer holds.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The whole zone (AXFR, or IXFR in AXFR form), or for an up-to-date IXFR client the
    /// single SOA.
    Zone,
    /// The single SOA (IXFR over UDP that does not fit).
    Soa,
    /// The deltas from the client's serial to ours (IXFR, RFC 1995 §4): our SOA, then per
    /// delta the old SOA, what it removed, the new SOA, what it added; our SOA again.
    Incremental(Vec<Arc<Delta>>),
}

/// What a transfer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Soa,
    Deltas,
    Apex,
    Names,
    LastSoa,
    Done,
}

/// The messages of one transfer, in order.
pub struct Stream<'a> {
    records: &'a Records,
    zone: &'a Zone,
    req: Request,
    soa: Record,
    names: zone::Names<'a>,
    /// Records ready to write, in order.
    queue: std::collections::VecDeque<Record>,
    part: Part,
    first: bool,
    signer: Option<Signer>,
    /// Seconds since the epoch, read for each message: every message of a long transfer is
    /// signed with its own time (secondaries check each against the fudge).
    clock: fn() -> u64,
    /// The deltas of an incremental answer, sent one record at a time (never copied whole).
    deltas: Vec<Arc<Delta>>,
    /// Where in `deltas`: the delta, then the record (0: its old SOA, then what it removed,
    /// its new SOA, what it added).
    at: (usize, usize),
}

impl std::fmt::Debug for Stream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("zone", &self.zone.name)
            .field("part", &self.part)
            .finish_non_exhaustive()
    }
}

impl<'a> Stream<'a> {
    /// The `answer` to `req` from `records`; an up-to-date IXFR client gets the single SOA
    /// whatever is asked. Each message is signed by `signer` at the time `clock` says.
    pub fn new(
        records: &'a Records,
        req: Request,
        answer: Answer,
        signer: Option<Signer>,
        clock: fn() -> u64,
    ) -> Option<Self> {
        let zone = records.zones().iter().nth(req.zi)?;
        let soa = zone::soa(records, req.zi, zone);
        let current = records.serial(req.zi);
        let single = matches!(answer, Answer::Soa)
            || matches!(req.kind, Kind::Ixfr { serial } if up_to_date(serial, current));
        let mut queue = std::collections::VecDeque::new();
        let mut chain = Vec::new();
        let part = match answer {
            _ if single => Part::LastSoa,
            Answer::Incremental(deltas) => {
                queue.push_back(soa.clone());
                chain = deltas;
                Part::Deltas
            }
            Answer::Zone | Answer::Soa => Part::Soa,
        };
        Some(Self {
            records,
            zone,
            soa,
            names: zone::names(records, req.zi, zone),
            req,
            queue,
            part,
            first: true,
            signer,
            clock,
            deltas: chain,
            at: (0, 0),
        })
    }

    /// The next record to send, with the SOA's owner spelled as asked.
    fn next_record(&mut self) -> Option<Record> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(r);
            }
            match self.part {
                Part::Soa => {
                    self.part = Part::Apex;
                    return Some(self.soa.clone());
                }
                Part::Apex => {
                    self.queue.extend(zone::apex(self.records, self.zone));
                    self.part = Part::Names;
                }
                Part::Names => match self.names.next() {
                    Some((key, name)) => {
                        self.queue
                            .extend(zone::rrsets(self.records, self.zone, &key, &name));
                    }
                    None => self.part = Part::LastSoa,
                },
                Part::Deltas => {
                    let (i, j) = self.at;
                    let Some(d) = self.deltas.get(i) else {
                        self.part = Part::LastSoa;
                        continue;
                    };
                    let (removed, added) = (d.removed.len(), d.added.len());
                    let r = match j {
                        0 => &d.old_soa,
                        j if j <= removed => &d.removed[j - 1],
                        j if j == removed + 1 => &d.new_soa,
                        j if j <= removed + 1 + added => &d.added[j - removed - 2],
                        _ => {
                            self.at = (i + 1, 0);
                            continue;
                        }
                    };
                    self.at = (i, j + 1);
                    return Some(r.clone());
                }
                Part::LastSoa => {
                    self.part = Part::Done;
                    return Some(self.soa.clone());
                }
                Part::Done => return None,
            }
        }
    }
}

impl Iterator for Stream<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.part == Part::Done && self.queue.is_empty() {
            return None;
        }
        let mut header = [0u8; 12];
        header[..2].copy_from_slice(&self.req.id.to_be_bytes());
        header[2] = 0x84; // QR, AA; opcode QUERY
        let mut w = Writer::new(header, MESSAGE_TARGET + 1024);
        if std::mem::take(&mut self.first) {
            w.question(&self.req.query);
        }
        while w.position() < MESSAGE_TARGET {
            let Some(r) = self.next_record() else { break };
            w.record(Section::Answer, &r);
        }
        if self.req.edns {
            w.opt(OPT_PAYLOAD, 0, false, &[]);
        }
        let mut msg = w.finish();
        if let Some(s) = &mut self.signer {
            s.sign(&mut msg, (self.clock)());
        }
        Some(msg)
    }
}

/// A transfer refused or failed: the request's header and question with `rcode`, signed
/// when the request was.
pub fn refusal(msg: &[u8], rcode: ResponseCode, signer: Option<&mut Signer>, now: u64) -> Vec<u8> {
    let mut out = match Message::from_vec(msg) {
        Ok(m) => {
            let mut header = [0u8; 12];
            header[..2].copy_from_slice(&m.metadata.id.to_be_bytes());
            header[2] = 0x80 | (msg[2] & 0x79);
            let mut w = Writer::new(header, 512);
            for q in &m.queries {
                w.question(q);
            }
            if m.edns.is_some() {
                w.opt(OPT_PAYLOAD, 0, false, &[]);
            }
            w.finish()
        }
        Err(_) => {
            let mut out = msg[..12.min(msg.len())].to_vec();
            out.resize(12, 0);
            out[2] = 0x80 | (out[2] & 0x79);
            out[4..12].fill(0);
            out
        }
    };
    out[3] = (out[3] & 0xF0) | u8::try_from(u16::from(rcode) & 0x0F).unwrap_or(0);
    if let Some(s) = signer {
        s.sign(&mut out, now);
    }
    out
}

#[cfg(test)]
mod tests;
