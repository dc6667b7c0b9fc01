//! A DNS message as a resolver sees it, to compare two answers that may differ in encoding
//! only (name compression, the case of names in RDATA).

use hickory_proto::op::Message;
use hickory_proto::rr::Record;

/// The message's ID, flags, RCODE, question, sections and EDNS as one string, names
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
        m.edns
            .as_ref()
            .map(|e| (e.max_payload(), e.flags().dnssec_ok, e.version())),
    )
}
