//! RFC 2136 dynamic update, free of I/O: an UPDATE message checked ([`check`]), then its
//! prerequisites and updates evaluated against the keys read from etcd at one revision, into
//! the keys to put and delete in one etcd transaction ([`plan`]).
//!
//! The zone is the SkyDNS layout, where a name's records are those of its key **and of every
//! key below it**. Both sides go through the answer path's own rules (`answer::zone`, as AXFR
//! reads the zone), so "this RRset exists" means what a query would see:
//!
//! - An added RR at `N` is stored as its own key, `key(N)/_u-<hash of type and RDATA>` (at the
//!   apex, below `<zone>/dns/apex`), with `"managed-by": "rfc2136/<TSIG key>"`, the owner
//!   marker. Adding the same RR again replaces its TTL; A, AAAA, CNAME, TXT (its strings
//!   joined) and MX can be added (an RR the layout cannot carry exactly is refused, and so is
//!   TTL 0, which SkyDNS reads as the default).
//! - A delete removes the keys at or below `N` whose record gives the RRs it names (every key
//!   at or below `N` for "delete all RRsets": the name must answer nothing afterwards).
//! - **Owner rule**: every key an update would change or remove must carry this key's owner
//!   marker and belong to the update's zone. Otherwise the whole update is REFUSED and nothing
//!   is applied, so keys of fedplane-controller, ExternalDNS or another TSIG key are never
//!   changed by it. An add also changes what every name between the apex and its own name
//!   answers (they aggregate it): those names' keys must all be this key's too.
//! - SOA and NS are fedplane's (the serial is the zone's etcd revision): adding them is
//!   REFUSED, deleting them is ignored (RFC 2136 §3.4.2.3 ignores apex SOA/NS deletes). Names
//!   below `dns.<zone>` hold that data and are REFUSED.
//! - CNAME and other data do not share a name (§3.4.2.2): such adds are ignored, a CNAME
//!   added over our CNAME replaces it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::answer::zone;
use crate::index::{Records, Zone, Zones};
use crate::key;
use crate::record;

/// What the owner marker of an update's keys starts with (then the TSIG key's name).
pub const OWNER_PREFIX: &str = "rfc2136/";
/// The JSON field of the owner marker (fedplane-controller and ExternalDNS's `owner` are
/// other writers' markers).
pub const OWNER_FIELD: &str = "managed-by";
/// Distinct names one update may read or change.
pub const MAX_NAMES: usize = 32;
/// Keys that may sit at or below the names of one update (each is guarded in the etcd
/// transaction, within [`MAX_TXN_OPS`]).
pub const MAX_KEYS: usize = 96;
/// Operations in one etcd transaction (etcd's `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;

/// Why an update is not applied: the RCODE to answer and what to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rcode}: {reason}")]
pub struct UpdateError {
    /// The RCODE of the answer.
    pub rcode: ResponseCode,
    /// Why, for the log.
    pub reason: String,
}

fn fail<T>(rcode: ResponseCode, reason: impl Into<String>) -> Result<T, UpdateError> {
    Err(UpdateError {
        rcode,
        reason: reason.into(),
    })
}

/// Whether `request` is an UPDATE request (opcode 5, QR clear), from its header.
pub fn is_update(request: &[u8]) -> bool {
    request.len() >= 12 && request[2] & 0x80 == 0 && (request[2] >> 3) & 0x0F == 5
}

/// A checked UPDATE: its zone and sections, names lowercased.
#[derive(Debug, Clone)]
pub struct Request {
    /// The zone's index among the served zones.
    pub zi: usize,
    /// The zone.
    pub zone: Zone,
    /// The prerequisite section.
    pub prereqs: Vec<Record>,
    /// The update section.
    pub updates: Vec<Record>,
}

/// Record types an update may add.
const ADDABLE: [RecordType; 5] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::TXT,
    RecordType::MX,
];

/// Checks what needs no data (RFC 2136 §3.1, §3.2 forms, §3.4.1 prescan).
pub fn check(msg: &Message, zones: &Zones) -> Result<Request, UpdateError> {
    use ResponseCode::{FormErr, NotAuth, NotZone, Refused};
    if msg.metadata.op_code != OpCode::Update {
        return fail(FormErr, "not an UPDATE");
    }
    let [zq] = msg.queries.as_slice() else {
        return fail(FormErr, "the zone section must hold exactly one zone");
    };
    if zq.query_type() != RecordType::SOA || zq.query_class() != DNSClass::IN {
        return fail(FormErr, "the zone section must be of type SOA, class IN");
    }
    let apex = zq.name().to_lowercase();
    let Some((zi, zone)) = zones
        .iter()
        .enumerate()
        .find(|(_, z)| z.name == apex)
        .map(|(i, z)| (i, z.clone()))
    else {
        return fail(NotAuth, format!("{apex} is not a zone served here"));
    };
    let in_zone = |r: &Record| -> Result<Record, UpdateError> {
        let mut r = r.clone();
        r.name = r.name.to_lowercase();
        match zones.find(&r.name) {
            Some((i, _)) if i == zi => Ok(r),
            _ => fail(NotZone, format!("{} is not in zone {apex}", r.name)),
        }
    };
    let mut prereqs = Vec::with_capacity(msg.answers.len());
    for r in &msg.answers {
        let r = in_zone(r)?;
        if r.ttl != 0 {
            return fail(FormErr, format!("prerequisite for {} has a TTL", r.name));
        }
        let empty = matches!(r.data, RData::Update0(_));
        match r.dns_class {
            DNSClass::ANY | DNSClass::NONE if empty => {}
            DNSClass::IN if !empty && !r.record_type().is_any() => {}
            c => return fail(FormErr, format!("prerequisite {} {c} is malformed", r.name)),
        }
        prereqs.push(r);
    }
    let mut updates = Vec::with_capacity(msg.authorities.len());
    for r in &msg.authorities {
        let r = in_zone(r)?;
        let t = r.record_type();
        let empty = matches!(r.data, RData::Update0(_));
        if reserved(&zone, &r.name) {
            return fail(
                Refused,
                format!("{} holds fedplane's NS data; not updatable", r.name),
            );
        }
        match r.dns_class {
            DNSClass::IN if empty => {
                return fail(FormErr, format!("add to {} without data", r.name));
            }
            DNSClass::IN if t == RecordType::SOA || t == RecordType::NS => {
                return fail(
                    Refused,
                    format!("{t} records are fedplane's, not updatable"),
                );
            }
            DNSClass::IN if ADDABLE.contains(&t) && r.ttl == 0 => {
                return fail(
                    Refused,
                    format!(
                        "{} {t} with TTL 0: SkyDNS reads a TTL of 0 as the server's default",
                        r.name
                    ),
                );
            }
            DNSClass::IN if ADDABLE.contains(&t) => {}
            DNSClass::IN if is_meta(t) => {
                return fail(FormErr, format!("{t} cannot be added"));
            }
            DNSClass::IN => {
                return fail(
                    Refused,
                    format!("{t} cannot be added (A, AAAA, CNAME, TXT and MX can)"),
                );
            }
            DNSClass::ANY if r.ttl == 0 && empty && (t == RecordType::ANY || !is_meta(t)) => {}
            DNSClass::NONE if r.ttl == 0 && !empty && !is_meta(t) => {}
            c => return fail(FormErr, format!("update {} {c} {t} is malformed", r.name)),
        }
        updates.push(r);
    }
    if prereqs.len() > MAX_TXN_OPS || updates.len() > MAX_TXN_OPS {
        return fail(
            Refused,
            format!(
                "{} prerequisites and {} updates, more than {MAX_TXN_OPS} of either",
                prereqs.len(),
                updates.len()
            ),
        );
    }
    let names: BTreeSet<&Name> = prereqs.iter().chain(&updates).map(|r| &r.name).collect();
    if names.len() > MAX_NAMES {
        return fail(
            Refused,
            format!("{} names in one update, more than {MAX_NAMES}", names.len()),
        );
    }
    Ok(Request {
        zi,
        zone,
        prereqs,
        updates,
    })
}

fn is_meta(t: RecordType) -> bool {
    matches!(
        t,
        RecordType::ANY | RecordType::AXFR | RecordType::IXFR | RecordType::OPT | RecordType::TSIG
    ) || u16::from(t) >= 128 && u16::from(t) <= 255
}

/// Names at or below `dns.<zone>`, where fedplane keeps the zone's NS and apex data.
fn reserved(zone: &Zone, name: &Name) -> bool {
    Name::from_ascii("dns")
        .ok()
        .and_then(|l| l.append_domain(&zone.name).ok())
        .is_some_and(|dns| dns.zone_of(name))
}

/// The key ranges an update reads: for each name its key and every key below it (the apex:
/// the zone's `dns` keys, where its NS and apex records are). Each is read as `[k, k + "0")`
/// and filtered with [`in_range`].
pub fn ranges(req: &Request, prefix: &str) -> Result<Vec<String>, UpdateError> {
    let mut out = BTreeSet::new();
    for r in req.prereqs.iter().chain(&req.updates) {
        out.insert(read_key(req, prefix, &r.name)?);
    }
    for r in req.updates.iter().filter(|r| r.dns_class == DNSClass::IN) {
        out.insert(read_key(req, prefix, &top(req, &r.name))?);
    }
    Ok(out.into_iter().collect())
}

/// The name just below the apex on the way to `name` (`name` itself when it is there, or the
/// apex): every name from it down to `name`'s parent aggregates what is added at `name`.
fn top(req: &Request, name: &Name) -> Name {
    if *name == req.zone.name {
        return name.clone();
    }
    name.trim_to(usize::from(req.zone.name.num_labels()) + 1)
}

/// Whether `key` is `base` or below it.
pub fn in_range(base: &str, key: &str) -> bool {
    key.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn read_key(req: &Request, prefix: &str, name: &Name) -> Result<String, UpdateError> {
    if *name == req.zone.name {
        return Ok(format!("{}/dns", req.zone.key));
    }
    key::name_to_key(prefix, name).ok_or_else(|| UpdateError {
        rcode: ResponseCode::Refused,
        reason: format!("{name} cannot be an etcd key"),
    })
}

/// Where `name`'s own records are: its key, or `<zone>/dns/apex` for the apex.
fn own_key(req: &Request, prefix: &str, name: &Name) -> Result<String, UpdateError> {
    if *name == req.zone.name {
        return Ok(format!("{}/dns/apex", req.zone.key));
    }
    read_key(req, prefix, name)
}

/// The keys to write and remove, in one etcd transaction guarded by what was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Keys to put, with their JSON values.
    pub puts: Vec<(String, String)>,
    /// Keys to delete.
    pub deletes: Vec<String>,
}

impl Plan {
    /// Whether the update changes nothing (prerequisites held; every update was a no-op).
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// The view of one name's records as answers give them, from a set of keys.
struct View<'a> {
    zones: Arc<Zones>,
    req: &'a Request,
    prefix: &'a str,
}

impl View<'_> {
    /// The RRs (type and data) of `name` in `kvs`, NS and SOA left out unless `all`.
    fn rrs<'k>(
        &self,
        kvs: impl Iterator<Item = (&'k String, &'k Vec<u8>)>,
        name: &Name,
        all: bool,
    ) -> Vec<(RecordType, RData)> {
        let mut records = Records::new(self.zones.clone(), 1);
        for (k, v) in kvs {
            if let Ok(r) = record::Record::parse(v) {
                records.put(k, r, 0, 1);
            }
        }
        let out = if *name == self.req.zone.name {
            let mut out = zone::apex(&records, &self.req.zone);
            out.push(zone::soa(&records, self.req.zi, &self.req.zone));
            out
        } else {
            let Some(k) = key::name_to_key(self.prefix, name) else {
                return Vec::new();
            };
            zone::rrsets(&records, &self.req.zone, &k, name)
        };
        out.into_iter()
            .map(|r| (r.record_type(), r.data))
            .filter(|(t, _)| all || (*t != RecordType::NS && *t != RecordType::SOA))
            .collect()
    }

    /// Whether key `k` holding `v` is `owner`'s: its marker says so and it is a key of this
    /// update's zone (not of a zone served below it).
    fn owns(&self, k: &str, v: &[u8], owner: &str) -> bool {
        owner_of(v).as_deref() == Some(owner) && self.zones.find_key(k) == Some(self.req.zi)
    }

    /// The RRs of `name` from the keys of `kvs` in its range.
    fn of(&self, kvs: &BTreeMap<String, Vec<u8>>, name: &Name) -> Vec<(RecordType, RData)> {
        let Ok(base) = read_key(self.req, self.prefix, name) else {
            return Vec::new();
        };
        self.rrs(kvs.iter().filter(|(k, _)| in_range(&base, k)), name, true)
    }

    /// The keys of `name`'s own range whose record alone gives an RR `matches` accepts.
    fn keys_giving(
        &self,
        kvs: &BTreeMap<String, Vec<u8>>,
        name: &Name,
        matches: impl Fn(&(RecordType, RData)) -> bool,
    ) -> Result<Vec<String>, UpdateError> {
        let base = own_key(self.req, self.prefix, name)?;
        Ok(kvs
            .iter()
            .filter(|(k, _)| in_range(&base, k))
            .filter(|kv| {
                self.rrs(std::iter::once(*kv), name, false)
                    .iter()
                    .any(&matches)
            })
            .map(|(k, _)| k.clone())
            .collect())
    }
}

/// Evaluates `req`'s prerequisites (§3.2) against `read` (every key in [`ranges`], at one
/// revision), then applies its updates in order (§3.4.2) to a copy, and returns the
/// difference, refused when it would touch a key `owner` does not own.
pub fn plan(
    req: &Request,
    zones: Arc<Zones>,
    read: &BTreeMap<String, Vec<u8>>,
    owner: &str,
) -> Result<Plan, UpdateError> {
    use ResponseCode::{NXDomain, NXRRSet, Refused, YXDomain, YXRRSet};
    let prefix = zones.prefix().to_owned();
    if read.len() > MAX_KEYS {
        return fail(
            Refused,
            format!(
                "{} keys at or below the names of the update, more than {MAX_KEYS}",
                read.len()
            ),
        );
    }
    let view = View {
        zones,
        req,
        prefix: &prefix,
    };
    // Prerequisites, on the data as read.
    let mut values: BTreeMap<(&Name, RecordType), Vec<&RData>> = BTreeMap::new();
    for p in &req.prereqs {
        let t = p.record_type();
        let rrs = view.of(read, &p.name);
        match (p.dns_class, t) {
            (DNSClass::ANY, RecordType::ANY) if rrs.is_empty() => {
                return fail(NXDomain, format!("{} is not in use", p.name));
            }
            (DNSClass::ANY, _) if !t.is_any() && !rrs.iter().any(|(rt, _)| *rt == t) => {
                return fail(NXRRSet, format!("{} has no {t} RRset", p.name));
            }
            (DNSClass::NONE, RecordType::ANY) if !rrs.is_empty() => {
                return fail(YXDomain, format!("{} is in use", p.name));
            }
            (DNSClass::NONE, _) if !t.is_any() && rrs.iter().any(|(rt, _)| *rt == t) => {
                return fail(YXRRSet, format!("{} has a {t} RRset", p.name));
            }
            (DNSClass::IN, _) => values.entry((&p.name, t)).or_default().push(&p.data),
            _ => {}
        }
    }
    for ((name, t), want) in values {
        let want: BTreeSet<Vec<u8>> = want.into_iter().map(rr_id).collect();
        let have: BTreeSet<Vec<u8>> = view
            .of(read, name)
            .iter()
            .filter(|(rt, _)| *rt == t)
            .map(|(_, d)| rr_id(d))
            .collect();
        if want != have {
            return fail(NXRRSet, format!("{name} {t} RRset differs"));
        }
    }
    // Updates, in order, on a copy.
    let mut work = read.clone();
    for u in &req.updates {
        let name = &u.name;
        let t = u.record_type();
        match u.dns_class {
            DNSClass::IN => add(&view, &mut work, u, owner)?,
            DNSClass::ANY if t.is_any() => {
                let base = own_key(req, &prefix, name)?;
                work.retain(|k, _| !in_range(&base, k));
            }
            DNSClass::ANY if t == RecordType::SOA || t == RecordType::NS => {}
            DNSClass::ANY => {
                for k in view.keys_giving(&work, name, |(rt, _)| *rt == t)? {
                    work.remove(&k);
                }
            }
            _ => {
                if t == RecordType::SOA || t == RecordType::NS {
                    continue;
                }
                let want = rr_id(&u.data);
                for k in view.keys_giving(&work, name, |(rt, d)| *rt == t && rr_id(d) == want)? {
                    work.remove(&k);
                }
            }
        }
    }
    // The difference, under the owner rule.
    let mut plan = Plan::default();
    for (k, v) in read {
        match work.get(k) {
            Some(w) if w == v => continue,
            Some(_) | None if !view.owns(k, v, owner) => {
                let who = owner_of(v).unwrap_or_else(|| "no owner marker".into());
                return fail(
                    Refused,
                    format!("the update would change {k}, which is not {owner}'s ({who})"),
                );
            }
            Some(w) => plan
                .puts
                .push((k.clone(), String::from_utf8_lossy(w).into_owned())),
            None => plan.deletes.push(k.clone()),
        }
    }
    for (k, w) in &work {
        if !read.contains_key(k) {
            plan.puts
                .push((k.clone(), String::from_utf8_lossy(w).into_owned()));
        }
    }
    if plan.puts.len() + plan.deletes.len() > MAX_TXN_OPS {
        return fail(
            Refused,
            format!(
                "{} keys to change, more than the {MAX_TXN_OPS} of one etcd transaction",
                plan.puts.len() + plan.deletes.len()
            ),
        );
    }
    Ok(plan)
}

/// Applies an add (§3.4.2.2) to `work`.
fn add(
    view: &View<'_>,
    work: &mut BTreeMap<String, Vec<u8>>,
    u: &Record,
    owner: &str,
) -> Result<(), UpdateError> {
    let (name, t) = (&u.name, u.record_type());
    // Every name between the apex and this one answers what is added here (SkyDNS
    // aggregates): none of them may hold another writer's records.
    let top = top(view.req, name);
    if top != *name {
        let base = read_key(view.req, view.prefix, &top)?;
        if let Some((k, v)) = work
            .iter()
            .find(|(k, v)| in_range(&base, k) && !view.owns(k, v, owner))
        {
            return fail(
                ResponseCode::Refused,
                format!(
                    "adding at {name} would change the answers of {top} and the names below it, \
                     which hold {k} ({})",
                    owner_of(v).unwrap_or_else(|| "no owner marker".into())
                ),
            );
        }
    }
    if let RData::CNAME(target) = &u.data
        && target.0.to_lowercase() == *name
    {
        return fail(ResponseCode::Refused, format!("{name} CNAME to itself"));
    }
    let rrs = view.of(work, name);
    let has_cname = rrs.iter().any(|(rt, _)| *rt == RecordType::CNAME);
    let has_other = rrs
        .iter()
        .any(|(rt, _)| !matches!(*rt, RecordType::CNAME | RecordType::NS | RecordType::SOA));
    if (t == RecordType::CNAME && has_other) || (t != RecordType::CNAME && has_cname) {
        return Ok(()); // CNAME and other data: ignored (§3.4.2.2)
    }
    let id = rr_id(&u.data);
    let key = format!(
        "{}/_u-{}",
        own_key(view.req, view.prefix, name)?,
        hash_label(t, &id)
    );
    let value = to_json(&u.data, u.ttl, owner);
    // Exactly this RR from this key alone (besides the SRV record SkyDNS makes of every
    // host), or the layout cannot carry it.
    let alone = view.rrs(std::iter::once((&key, &value)), name, false);
    let mut own = alone.iter().filter(|(rt, _)| *rt != RecordType::SRV);
    let exact = own.next().is_some_and(|(rt, d)| *rt == t && rr_id(d) == id);
    if !exact || own.next().is_some() {
        return fail(
            ResponseCode::Refused,
            format!("{name} {t} {} cannot be stored as a SkyDNS record", u.data),
        );
    }
    let there = rrs.iter().any(|(rt, d)| *rt == t && rr_id(d) == id);
    let ours = work.get(&key).is_some_and(|v| view.owns(&key, v, owner));
    if there && !ours {
        return Ok(()); // already there from another key: a duplicate, ignored
    }
    if t == RecordType::CNAME && has_cname {
        for k in view.keys_giving(work, name, |(rt, _)| *rt == RecordType::CNAME)? {
            work.remove(&k);
        }
    }
    work.insert(key, value);
    Ok(())
}

/// What identifies an RR's data: its wire form (names in canonical form), and for TXT the
/// strings joined (SkyDNS keeps one text and splits it at 255 bytes, so "a" "b" is "ab").
fn rr_id(data: &RData) -> Vec<u8> {
    if let RData::TXT(txt) = data {
        return txt
            .txt_data
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
    }
    let mut out = Vec::new();
    let mut enc = BinEncoder::new(&mut out);
    enc.set_canonical_form(true);
    let _ = data.emit(&mut enc);
    out
}

/// The leaf label of an added RR: 16 hex digits of SHA-256 over its type and RDATA.
fn hash_label(t: RecordType, wire: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&u16::from(t).to_be_bytes());
    ctx.update(wire);
    ctx.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SkyDNS JSON of an added RR.
fn to_json(data: &RData, ttl: u32, owner: &str) -> Vec<u8> {
    let mut v = serde_json::Map::new();
    match data {
        RData::A(a) => {
            v.insert("host".into(), a.0.to_string().into());
        }
        RData::AAAA(a) => {
            v.insert("host".into(), a.0.to_string().into());
        }
        RData::CNAME(c) => {
            v.insert("host".into(), c.0.to_string().into());
        }
        RData::MX(mx) => {
            v.insert("host".into(), mx.exchange.to_string().into());
            v.insert("mail".into(), true.into());
            v.insert("priority".into(), mx.preference.into());
        }
        RData::TXT(txt) => {
            let text: Vec<u8> = txt
                .txt_data
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            v.insert(
                "text".into(),
                String::from_utf8_lossy(&text).into_owned().into(),
            );
        }
        _ => {}
    }
    v.insert("ttl".into(), ttl.into());
    v.insert(OWNER_FIELD.into(), owner.into());
    serde_json::Value::Object(v).to_string().into_bytes()
}

/// The owner marker of a SkyDNS value, if it has one.
pub fn owner_of(value: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Marker {
        #[serde(rename = "managed-by")]
        managed_by: Option<String>,
    }
    serde_json::from_slice::<Marker>(value).ok()?.managed_by
}

/// The owner marker of keys written with TSIG key `key`.
pub fn owner(key: &Name) -> String {
    let mut k = key.to_lowercase().to_ascii();
    if k.len() > 1 && k.ends_with('.') {
        k.pop();
    }
    format!("{OWNER_PREFIX}{k}")
}

/// The answer to UPDATE `request` (ID, opcode and zone section echoed) with `rcode`.
pub fn reply(request: &Message, rcode: ResponseCode) -> Vec<u8> {
    let mut m = Message::response(request.metadata.id, OpCode::Update);
    m.metadata.response_code = rcode;
    m.queries = request.queries.iter().take(1).cloned().collect();
    m.to_vec().unwrap_or_else(|_| {
        let mut b = vec![0u8; 12];
        b[..2].copy_from_slice(&request.metadata.id.to_be_bytes());
        b[2] = 0x80 | (5 << 3);
        b[3] = rcode.low();
        b
    })
}

#[cfg(test)]
mod tests;
