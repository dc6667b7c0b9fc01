//! A zone's SOA and default NS, shared by both answer paths: the SOA timers, MNAME and RNAME.
//!
//! The general path (`answer`) writes the SOA as a record, the fast path (`fast`) precompiles
//! it into wire format; both take its fields from here.

use hickory_proto::rr::Name;

use crate::index::{Records, Zone};
use crate::record::Host;

/// SOA timers. The minimum doubles as the negative-caching TTL (RFC 2308) and as the SOA
/// record's own TTL: 30 s, the federation record TTL, so a name that appears is seen quickly.
pub const SOA_REFRESH: i32 = 7200;
/// See [`SOA_REFRESH`].
pub const SOA_RETRY: i32 = 1800;
/// See [`SOA_REFRESH`].
pub const SOA_EXPIRE: i32 = 86400;
/// See [`SOA_REFRESH`].
pub const SOA_MINIMUM: u32 = 30;

/// The SOA's MNAME (the first NS, else `ns.dns.<zone>`) and RNAME (`hostmaster.<zone>`).
pub fn soa_names(records: &Records, zone: &Zone) -> (Name, Name) {
    let mname = records
        .node(&format!("{}/dns/ns", zone.key))
        .iter()
        .find_map(|e| match &e.record.host {
            Host::Name(n) => Some(n.clone()),
            Host::V4(_) | Host::V6(_) => Some(e.target_name(records.zones().prefix())),
            Host::None => None,
        })
        .unwrap_or_else(|| default_ns(zone));
    let rname = Name::from_ascii("hostmaster")
        .and_then(|h| h.append_name(&zone.name))
        .unwrap_or_else(|_| zone.name.clone());
    (mname, rname)
}

/// The zone's name server when etcd names none: `ns.dns.<zone>`.
pub fn default_ns(zone: &Zone) -> Name {
    Name::from_ascii("ns.dns")
        .and_then(|n| n.append_name(&zone.name))
        .unwrap_or_else(|_| zone.name.clone())
}
