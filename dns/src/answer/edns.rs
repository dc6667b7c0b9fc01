//! The OPT record of a query, read from the bytes before hickory parses them: its options must
//! tile its RDATA exactly (RFC 6891 §6.1.2), else the query is FORMERR, as NSD and Knot answer
//! it. hickory would drop such options with a WARN line per query and answer NOERROR.
//!
//! What an option holds is not checked (NSD and Knot ignore a cookie of the wrong length or a
//! client subnet of an unknown family, and answer); we use no option, so they are cut before
//! hickory reads the message.

/// What the query's additional section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// No OPT with options, or bytes we cannot walk (hickory then decides).
    Plain,
    /// One OPT record with well-framed options: its RDLENGTH is at `rdlen_at`, its RDATA ends at
    /// `end`.
    Options {
        /// Offset of the OPT record's RDLENGTH.
        rdlen_at: usize,
        /// Offset just past its RDATA.
        end: usize,
    },
    /// An option runs past the RDATA, or a second OPT record: FORMERR.
    Malformed,
}

/// Finds the OPT record of a query (header already checked to be 12 bytes or more).
pub fn scan(msg: &[u8]) -> Scan {
    scan_records(msg).unwrap_or(Scan::Plain)
}

fn count(msg: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([msg[at], msg[at + 1]]))
}

fn u16_at(msg: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *msg.get(at)?,
        *msg.get(at + 1)?,
    ])))
}

/// Skips a name (labels up to the root or a pointer, which is not followed).
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len & 0xC0 {
            0xC0 => return Some(at + 2),
            0 if len == 0 => return Some(at + 1),
            0 => at += 1 + usize::from(len),
            _ => return None,
        }
    }
}

/// `None` when the message cannot be walked.
fn scan_records(msg: &[u8]) -> Option<Scan> {
    let mut at = 12;
    for _ in 0..count(msg, 4) {
        at = skip_name(msg, at)? + 4;
    }
    let mut found = None;
    let (records, additional) = (count(msg, 6) + count(msg, 8), count(msg, 10));
    for i in 0..records + additional {
        at = skip_name(msg, at)?;
        let rtype = u16_at(msg, at)?;
        let rdlen_at = at + 8;
        let end = rdlen_at + 2 + u16_at(msg, rdlen_at)?;
        if end > msg.len() {
            return None;
        }
        if i >= records && rtype == 41 {
            if found.is_some() {
                return Some(Scan::Malformed);
            }
            if !options_tile(&msg[rdlen_at + 2..end]) {
                return Some(Scan::Malformed);
            }
            found = Some((rdlen_at, end));
        }
        at = end;
    }
    Some(match found {
        Some((rdlen_at, end)) if end > rdlen_at + 2 => Scan::Options { rdlen_at, end },
        _ => Scan::Plain,
    })
}

/// Whether `rdata` is a run of whole options (code, length, that many bytes). The UDP fast path
/// asks it too, so it never answers a query the general path calls FORMERR.
pub fn options_tile(rdata: &[u8]) -> bool {
    let mut at = 0;
    while at < rdata.len() {
        let Some(len) = u16_at(rdata, at + 2) else {
            return false;
        };
        at += 4 + len;
    }
    at == rdata.len()
}
