//! The catalog zone (RFC 9432, `--catalog-zone NAME`): one zone that lists the served zones,
//! so that secondaries that read catalogs (Knot ≥ 3.1, BIND ≥ 9.11, NSD ≥ 4.9) serve every
//! zone of this server without being configured zone by zone. Free of I/O.
//!
//! ```text
//! catalog.invalid.                        0 SOA invalid. invalid. <serial> 3600 600 2147483646 0
//! catalog.invalid.                        0 NS  invalid.
//! version.catalog.invalid.                0 TXT "2"
//! <16 hex digits>.zones.catalog.invalid.  0 PTR example.com.
//! ```
//!
//! The member labels are the first 8 bytes of SHA-256 over the zone's name in wire form, so
//! they are the same on every replica and across restarts. The list changes only with the
//! configuration, so the serial is the time the server started (seconds, RFC 1982 arithmetic
//! keeps it increasing for 68 years): a restart with other zones gives a newer serial.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{NS, PTR, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::index::Zones;

/// Our UDP payload size in the OPT of catalog answers.
const OPT_PAYLOAD: u16 = 1232;

/// Why a catalog name is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The catalog is a served zone, inside one, or holds one.
    #[error(
        "catalog zone {catalog} overlaps the served zone {zone}: pick a name outside every zone, such as catalog.invalid."
    )]
    Overlaps {
        /// The catalog's name.
        catalog: String,
        /// The zone.
        zone: String,
    },
}

/// The catalog zone.
#[derive(Debug, Clone)]
pub struct Catalog {
    name: Name,
    soa: Record,
    /// Every record but the SOA, in zone order.
    records: Vec<Record>,
}

impl Catalog {
    /// The catalog `name` (lowercased, fully qualified) listing `zones`, with `serial`.
    pub fn new(name: &Name, zones: &Zones, serial: u32) -> Result<Self, CatalogError> {
        let mut name = name.to_lowercase();
        name.set_fqdn(true);
        if let Some(z) = zones
            .iter()
            .find(|z| z.name.zone_of(&name) || name.zone_of(&z.name))
        {
            return Err(CatalogError::Overlaps {
                catalog: name.to_string(),
                zone: z.name.to_string(),
            });
        }
        let invalid = Name::from_ascii("invalid.").unwrap_or_else(|_| Name::root());
        let child = |label: &str| {
            Name::from_ascii(label)
                .and_then(|l| l.append_domain(&name))
                .unwrap_or_else(|_| name.clone())
        };
        let soa = Record::from_rdata(
            name.clone(),
            0,
            RData::SOA(SOA::new(
                invalid.clone(),
                invalid.clone(),
                serial,
                3600,
                600,
                2_147_483_646,
                0,
            )),
        );
        let mut records = vec![
            Record::from_rdata(name.clone(), 0, RData::NS(NS(invalid))),
            Record::from_rdata(
                child("version"),
                0,
                RData::TXT(TXT::new(vec!["2".to_owned()])),
            ),
        ];
        let mut members: Vec<Record> = zones
            .iter()
            .map(|z| {
                let owner = child(&format!("{}.zones", member_label(&z.name)));
                Record::from_rdata(owner, 0, RData::PTR(PTR(z.name.clone())))
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        records.extend(members);
        Ok(Self { name, soa, records })
    }

    /// The catalog's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Its serial.
    pub fn serial(&self) -> u32 {
        match &self.soa.data {
            RData::SOA(soa) => soa.serial,
            _ => 0,
        }
    }

    /// Whether `name` is in the catalog zone.
    pub fn contains(&self, name: &Name) -> bool {
        self.name.zone_of(name)
    }

    /// The answer to query `req` when it asks about the catalog zone (`None` otherwise, or
    /// for a transfer, which [`Self::transfer`] answers).
    pub fn answer(&self, req: &Message) -> Option<Message> {
        let [q] = req.queries.as_slice() else {
            return None;
        };
        if req.metadata.op_code != OpCode::Query
            || req.metadata.message_type != MessageType::Query
            || q.query_class() != DNSClass::IN
            || matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR)
            || !self.contains(q.name())
        {
            return None;
        }
        let mut m = self.reply(req);
        let (name, qtype) = (q.name().to_lowercase(), q.query_type());
        let at_name: Vec<&Record> = std::iter::once(&self.soa)
            .chain(&self.records)
            .filter(|r| r.name == name)
            .collect();
        m.answers = at_name
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .map(|r| {
                let mut r = (*r).clone();
                r.name = q.name().clone();
                r
            })
            .collect();
        if m.answers.is_empty() {
            let exists = self
                .records
                .iter()
                .any(|r| r.name == name || name.zone_of(&r.name))
                || name == self.name;
            if !exists {
                m.metadata.response_code = ResponseCode::NXDomain;
            }
            m.authorities.push(self.soa.clone());
        }
        Some(m)
    }

    /// The transfer answer to `req` (AXFR, or IXFR from the client's `serial`): the single
    /// SOA when the client is up to date, else the whole zone between two SOAs.
    pub fn transfer(&self, req: &Message, serial: Option<u32>) -> Message {
        let mut m = self.reply(req);
        m.answers.push(self.soa.clone());
        if serial != Some(self.serial()) {
            m.answers.extend(self.records.iter().cloned());
            m.answers.push(self.soa.clone());
        }
        m
    }

    fn reply(&self, req: &Message) -> Message {
        let mut m = Message::response(req.metadata.id, OpCode::Query);
        m.metadata.authoritative = true;
        m.metadata.recursion_desired = req.metadata.recursion_desired;
        m.queries = req.queries.clone();
        if req.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(OPT_PAYLOAD);
            m.edns = Some(edns);
        }
        m
    }
}

/// The member label of `zone`: 16 hex digits of SHA-256 over its wire form.
pub fn member_label(zone: &Name) -> String {
    let mut wire = Vec::new();
    for label in zone.to_lowercase().iter() {
        wire.push(u8::try_from(label.len()).unwrap_or(63));
        wire.extend_from_slice(label);
    }
    wire.push(0);
    ring::digest::digest(&ring::digest::SHA256, &wire).as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::Query;

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).expect("name")
    }

    fn catalog() -> Catalog {
        let zones = Zones::new("/skydns", &[name("example.com."), name("example.org.")]);
        Catalog::new(&name("Catalog.Invalid."), &zones, 1_700_000_000).expect("catalog")
    }

    fn query(n: &str, t: RecordType) -> Message {
        let mut m = Message::new(9, MessageType::Query, OpCode::Query);
        m.queries.push(Query::query(name(n), t));
        m
    }

    #[test]
    fn lists_every_zone_with_a_stable_member_label() {
        let c = catalog();
        let axfr = c.transfer(&query("catalog.invalid.", RecordType::AXFR), None);
        let lines: Vec<String> = axfr.answers.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert!(lines[0].contains("SOA") && lines[5].contains("SOA"));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("version.catalog.invalid.") && l.contains("TXT"))
        );
        let label = member_label(&name("example.com."));
        assert_eq!(label.len(), 16);
        assert_eq!(label, member_label(&name("EXAMPLE.com.")));
        assert!(lines.iter().any(
            |l| l.starts_with(&format!("{label}.zones.catalog.invalid."))
                && l.ends_with("example.com.")
        ));
        // Up to date: the SOA alone.
        assert_eq!(
            c.transfer(
                &query("catalog.invalid.", RecordType::IXFR),
                Some(c.serial())
            )
            .answers
            .len(),
            1
        );
    }

    #[test]
    fn answers_queries_inside_it_and_nothing_else() {
        let c = catalog();
        let soa = c
            .answer(&query("catalog.invalid.", RecordType::SOA))
            .expect("ours");
        assert_eq!(soa.answers.len(), 1);
        assert!(soa.metadata.authoritative);
        let none = c
            .answer(&query("nope.catalog.invalid.", RecordType::A))
            .expect("ours");
        assert_eq!(none.metadata.response_code, ResponseCode::NXDomain);
        let nodata = c
            .answer(&query("zones.catalog.invalid.", RecordType::A))
            .expect("ours");
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty() && nodata.authorities.len() == 1);
        assert!(c.answer(&query("example.com.", RecordType::SOA)).is_none());
        assert!(
            c.answer(&query("catalog.invalid.", RecordType::AXFR))
                .is_none()
        );
    }

    #[test]
    fn a_catalog_overlapping_a_zone_is_refused() {
        let zones = Zones::new("/skydns", &[name("example.com.")]);
        for bad in ["example.com.", "cat.example.com.", "com."] {
            assert!(Catalog::new(&name(bad), &zones, 1).is_err(), "{bad}");
        }
    }
}
