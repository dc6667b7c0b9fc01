//! A DNS message as a resolver sees it, to compare two answers that may differ in encoding
//! only (name compression, the case of names in RDATA), and where its sections end.

use hickory_proto::op::Message;
use hickory_proto::rr::Record;

/// The message's ID, flags, RCODE, question, sections and EDNS (with its options) as one
/// string, names
/// lowercased (in RDATA too: one path may compress a name in RDATA into the question, whose
/// case the client chose, where another writes it whole). Panics if the message does not
/// parse: every answer we send must.
pub fn dns_view(bytes: &[u8]) -> String {
    let m = Message::from_vec(bytes)
        .unwrap_or_else(|e| panic!("an answer that does not parse ({e}): {bytes:02x?}"));
    let section = |rs: &[Record]| -> Vec<String> {
        rs.iter()
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r.name.to_lowercase(),
                    r.ttl,
                    r.record_type(),
                    r.data.to_string().to_lowercase()
                )
            })
            .collect()
    };
    format!(
        "id={} rcode={:?} aa={} tc={} rd={} cd={} q={:?} an={:?} ns={:?} ar={:?} edns={:?}",
        m.metadata.id,
        m.metadata.response_code,
        m.metadata.authoritative,
        m.metadata.truncation,
        m.metadata.recursion_desired,
        m.metadata.checking_disabled,
        m.queries
            .iter()
            .map(|q| (q.name().to_ascii(), q.query_type(), q.query_class()))
            .collect::<Vec<_>>(),
        section(&m.answers),
        section(&m.authorities),
        section(&m.additionals),
        m.edns.as_ref().map(|e| (
            e.max_payload(),
            e.flags().dnssec_ok,
            e.version(),
            e.options()
        )),
    )
}

/// Where the first `sections` record sections of a DNS message end (1: the answer section, 2:
/// with the authority section, ...), walking the wire without parsing it: the question, then
/// each record's owner (labels or a pointer), fixed fields and RDATA.
pub fn sections_end(m: &[u8], sections: usize) -> usize {
    let count = |i: usize| usize::from(u16::from_be_bytes([m[i], m[i + 1]]));
    let skip_name = |mut at: usize| loop {
        match m[at] {
            0 => break at + 1,
            l if l & 0xC0 == 0xC0 => break at + 2,
            l => at += 1 + usize::from(l),
        }
    };
    let mut at = 12;
    for _ in 0..count(4) {
        at = skip_name(at) + 4;
    }
    let records: usize = (0..sections.min(3)).map(|s| count(6 + 2 * s)).sum();
    for _ in 0..records {
        at = skip_name(at) + 8;
        at += 2 + usize::from(u16::from_be_bytes([m[at], m[at + 1]]));
    }
    at
}
