//! Writing a response on the wire, every name compressed: a name (or its longest suffix)
//! already in the message is written as a pointer to it, whatever its section and however many
//! names came before. hickory's encoder stops remembering names after 64, so a 200-record
//! answer came out 40 % larger than NSD's and Knot's, and 4,000 records did not fit in a TCP
//! message at all.
//!
//! Names are matched without regard to case (DNS names are case-insensitive); the owner of an
//! answer to the question is a pointer to the question, so the client sees its own spelling,
//! as the fast path writes it, and as NSD and Knot do. SRV targets are written whole
//! (RFC 2782), but later names may point into them.

use std::collections::HashMap;

use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RData, Record};

/// Highest TTL sent (RFC 2181 §8: receivers read a TTL with the top bit set as 0).
pub const MAX_TTL: u32 = 0x7FFF_FFFF;
/// Bytes of an OPT record without options.
pub const OPT_LEN: usize = 11;
/// Labels in the longest name (255 bytes of one-byte labels).
const MAX_LABELS: usize = 128;
/// Pointers reach the first 16 KiB of a message.
const MAX_POINTER: usize = 0x3FFF;

/// Index of a section's count in the header.
#[derive(Debug, Clone, Copy)]
pub enum Section {
    /// Answer (ANCOUNT).
    Answer = 6,
    /// Authority (NSCOUNT).
    Authority = 8,
    /// Additional (ARCOUNT).
    Additional = 10,
}

/// A response being written.
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
    /// Offsets of the names written so far, by their lowercase wire form (each suffix of a
    /// written name is a name too).
    names: HashMap<Box<[u8]>, u16>,
    scratch: Vec<u8>,
}

impl Writer {
    /// A message starting with `header` (its counts are kept up to date by the writer).
    pub fn new(header: [u8; 12], capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.extend_from_slice(&header);
        buf[4..12].fill(0);
        Self {
            buf,
            names: HashMap::new(),
            scratch: Vec::with_capacity(256),
        }
    }

    /// Bytes written so far: where the next byte goes.
    pub fn position(&self) -> usize {
        self.buf.len()
    }

    /// Goes back to `len` bytes with the given section counts, forgetting the names written
    /// after it.
    pub fn truncate(&mut self, len: usize, counts: [u16; 3]) {
        self.buf.truncate(len);
        self.names.retain(|_, at| usize::from(*at) < len);
        for (i, c) in counts.into_iter().enumerate() {
            self.buf[6 + 2 * i..8 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
    }

    /// The section counts written so far.
    pub fn counts(&self) -> [u16; 3] {
        let c = |i: usize| u16::from_be_bytes([self.buf[i], self.buf[i + 1]]);
        [c(6), c(8), c(10)]
    }

    /// Sets or clears header flag bits (`mask` over bytes 2 and 3).
    pub fn set_flags(&mut self, mask: u16, on: bool) {
        let flags = u16::from_be_bytes([self.buf[2], self.buf[3]]);
        let flags = if on { flags | mask } else { flags & !mask };
        self.buf[2..4].copy_from_slice(&flags.to_be_bytes());
    }

    /// The finished message.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// One question.
    pub fn question(&mut self, q: &Query) {
        self.name(q.name(), true);
        self.u16(q.query_type().into());
        self.u16(q.query_class().into());
        self.bump(4);
    }

    /// An OPT record: our payload size, the upper bits of the response code, the DO bit, and
    /// its options (encoded: code, length, data).
    pub fn opt(&mut self, payload: u16, rcode_high: u8, dnssec_ok: bool, options: &[u8]) {
        self.buf.extend_from_slice(&[0, 0, 41]);
        self.u16(payload);
        self.buf
            .extend_from_slice(&[rcode_high, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
        self.u16(u16::try_from(options.len()).unwrap_or(0));
        self.buf.extend_from_slice(options);
        self.bump(Section::Additional as usize);
    }

    /// One resource record in `section`.
    pub fn record(&mut self, section: Section, r: &Record) {
        self.name(&r.name, true);
        self.u16(r.record_type().into());
        self.u16(r.dns_class.into());
        self.buf
            .extend_from_slice(&r.ttl.min(MAX_TTL).to_be_bytes());
        let len_at = self.buf.len();
        self.u16(0);
        match &r.data {
            RData::A(a) => self.buf.extend_from_slice(&a.0.octets()),
            RData::AAAA(a) => self.buf.extend_from_slice(&a.0.octets()),
            RData::CNAME(n) => self.name(&n.0, true),
            RData::NS(n) => self.name(&n.0, true),
            RData::PTR(n) => self.name(&n.0, true),
            RData::MX(mx) => {
                self.u16(mx.preference);
                self.name(&mx.exchange, true);
            }
            RData::SRV(srv) => {
                self.u16(srv.priority);
                self.u16(srv.weight);
                self.u16(srv.port);
                self.name(&srv.target, false);
            }
            RData::TXT(txt) => {
                for s in &txt.txt_data {
                    self.string(s);
                }
            }
            RData::HINFO(h) => {
                self.string(&h.cpu);
                self.string(&h.os);
            }
            RData::SOA(soa) => {
                self.name(&soa.mname, true);
                self.name(&soa.rname, true);
                self.buf.extend_from_slice(&soa.serial.to_be_bytes());
                for v in [soa.refresh, soa.retry, soa.expire] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
                self.buf.extend_from_slice(&soa.minimum.to_be_bytes());
            }
            other => unreachable!("the answer rules make no {} records", other.record_type()),
        }
        let rdlen = u16::try_from(self.buf.len() - len_at - 2).unwrap_or(u16::MAX);
        self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        self.bump(section as usize);
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// A character-string (at most 255 bytes, as the answer rules make them).
    fn string(&mut self, s: &[u8]) {
        let s = &s[..s.len().min(255)];
        self.buf.push(u8::try_from(s.len()).unwrap_or(u8::MAX));
        self.buf.extend_from_slice(s);
    }

    fn bump(&mut self, at: usize) {
        let n = u16::from_be_bytes([self.buf[at], self.buf[at + 1]]).saturating_add(1);
        self.buf[at..at + 2].copy_from_slice(&n.to_be_bytes());
    }

    /// A name, as a pointer to its longest suffix already written (when `compress`), its
    /// other labels written out and remembered.
    fn name(&mut self, name: &Name, compress: bool) {
        let mut starts = [0usize; MAX_LABELS];
        let mut labels = 0;
        self.scratch.clear();
        for label in name.iter().take(MAX_LABELS) {
            starts[labels] = self.scratch.len();
            labels += 1;
            self.scratch
                .push(u8::try_from(label.len()).unwrap_or(u8::MAX));
            self.scratch
                .extend(label.iter().map(u8::to_ascii_lowercase));
        }
        self.scratch.push(0);
        let found = if compress {
            (0..labels).find_map(|i| Some((i, *self.names.get(&self.scratch[starts[i]..])?)))
        } else {
            None
        };
        let written = found.map_or(labels, |(i, _)| i);
        for (i, label) in name.iter().take(written).enumerate() {
            let at = self.buf.len();
            if at <= MAX_POINTER {
                let suffix: Box<[u8]> = self.scratch[starts[i]..].into();
                self.names
                    .entry(suffix)
                    .or_insert(u16::try_from(at).unwrap_or(0));
            }
            self.buf.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
            self.buf.extend_from_slice(label);
        }
        match found {
            Some((_, at)) => self.u16(0xC000 | at),
            None => self.buf.push(0),
        }
    }
}

/// Bytes a record takes at least once written: its owner as a pointer (or the root), the fixed
/// fields, its RDATA with every compressible name as a pointer. What the answer rules use to
/// stop collecting an answer that cannot fit before building all of it.
pub fn min_len(owner: &Name, data: &RData) -> usize {
    let name = |n: &Name| if n.is_root() { 1 } else { 2 };
    let whole = |n: &Name| n.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    let rdata = match data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::CNAME(n) => name(&n.0),
        RData::NS(n) => name(&n.0),
        RData::PTR(n) => name(&n.0),
        RData::MX(mx) => 2 + name(&mx.exchange),
        RData::SRV(srv) => 6 + whole(&srv.target),
        RData::TXT(txt) => txt.txt_data.iter().map(|s| 1 + s.len()).sum(),
        RData::HINFO(h) => 2 + h.cpu.len() + h.os.len(),
        RData::SOA(soa) => name(&soa.mname) + name(&soa.rname) + 20,
        _ => 0,
    };
    name(owner) + 10 + rdata
}
