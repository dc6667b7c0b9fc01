//! TSIG (RFC 8945): shared-secret signatures on requests and responses, on the wire bytes.
//!
//! hickory's TSIG code needs its DNSSEC feature and signs only the first message of a
//! response, so it cannot sign a zone transfer's stream; this module works on the bytes
//! instead, with `ring`'s HMAC (HMAC-SHA1, -SHA256, -SHA384, -SHA512; MD5 is not offered).
//!
//! - [`locate`] finds a message's TSIG record (the last additional record; a TSIG anywhere
//!   else is a format error).
//! - [`Keys::verify`] checks a request in RFC 8945 §5.2's order: a known key and algorithm
//!   (else BADKEY), a MAC of the full length (else BADTRUNC), the MAC itself (else BADSIG,
//!   compared in constant time), the time within the fudge (else BADTIME).
//! - [`Signer`] signs each message of a response: the first with the request's MAC and the
//!   full TSIG variables, every later one with the previous message's MAC and the timers only
//!   (§5.3.1), which is what a multi-message transfer needs.
//! - [`error_reply`] builds NOTAUTH answers: unsigned for BADKEY and BADSIG, signed with the
//!   request's MAC and our time in "other data" for BADTIME (§5.2.3).

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use hickory_proto::rr::Name;
use ring::hmac;

/// The DNS type of a TSIG record.
const TSIG_TYPE: u16 = 250;
/// Class ANY.
const CLASS_ANY: u16 = 255;
/// Seconds of clock difference allowed (the fudge we sign with; BIND and Knot use 300 too).
pub const FUDGE: u16 = 300;
/// RCODE NOTAUTH, which every TSIG failure answers with.
pub const NOTAUTH: u8 = 9;
/// Bytes a TSIG record of `key` adds to a message at most (for leaving room in a datagram).
pub fn reserve(key: &Key) -> usize {
    key.name_wire.len() + 10 + key.alg.wire_name().len() + 16 + key.alg.mac_len() + 6
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TsigError {
    /// `--tsig-key` is not NAME:ALGORITHM:SECRET-FILE.
    #[error(
        "--tsig-key {0:?}: expected NAME:ALGORITHM:SECRET-FILE (the secret is read from the file, never the command line)"
    )]
    Spec(String),
    /// The key name is not a domain name.
    #[error("TSIG key name {0:?} is not a domain name")]
    Name(String),
    /// The algorithm is not one we offer.
    #[error(
        "TSIG key {name}: algorithm {alg:?} is not supported (hmac-sha1, hmac-sha256, hmac-sha384, hmac-sha512)"
    )]
    Algorithm {
        /// The key.
        name: String,
        /// What was given.
        alg: String,
    },
    /// The secret file cannot be read.
    #[error("TSIG key {name}: cannot read the secret file {path}: {source}")]
    Read {
        /// The key.
        name: String,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The secret cannot be read from the file.
    #[error("TSIG key {name}: {path}: {reason}")]
    Secret {
        /// The key.
        name: String,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Two keys share a name.
    #[error("TSIG key {0} is given twice")]
    Duplicate(String),
}

/// A TSIG algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// hmac-sha1 (RFC 4635), for old peers.
    HmacSha1,
    /// hmac-sha256, what BIND and Knot generate by default.
    HmacSha256,
    /// hmac-sha384.
    HmacSha384,
    /// hmac-sha512.
    HmacSha512,
}

impl Algorithm {
    const ALL: [Self; 4] = [
        Self::HmacSha1,
        Self::HmacSha256,
        Self::HmacSha384,
        Self::HmacSha512,
    ];

    /// The algorithm's name, as in key files (`hmac-sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha1 => "hmac-sha1",
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha384 => "hmac-sha384",
            Self::HmacSha512 => "hmac-sha512",
        }
    }

    /// Parses a name as in key files, any case, with or without the final dot.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim_end_matches('.').to_ascii_lowercase();
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn wire_name(self) -> Vec<u8> {
        let mut w = Vec::with_capacity(13);
        for label in self.as_str().split('.') {
            w.push(u8::try_from(label.len()).unwrap_or(0));
            w.extend_from_slice(label.as_bytes());
        }
        w.push(0);
        w
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            Self::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::HmacSha256 => hmac::HMAC_SHA256,
            Self::HmacSha384 => hmac::HMAC_SHA384,
            Self::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// Bytes of a full MAC.
    pub fn mac_len(self) -> usize {
        match self {
            Self::HmacSha1 => 20,
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }
}

/// One shared secret.
pub struct Key {
    name: Name,
    /// The name in canonical wire form (lowercase, uncompressed).
    name_wire: Vec<u8>,
    alg: Algorithm,
    key: hmac::Key,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Key")
            .field("name", &self.name.to_string())
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A key from its name, algorithm and secret bytes.
    pub fn new(name: &str, alg: Algorithm, secret: &[u8]) -> Result<Self, TsigError> {
        let mut n = Name::from_ascii(name)
            .map_err(|_| TsigError::Name(name.to_owned()))?
            .to_lowercase();
        n.set_fqdn(true);
        if n.is_root() {
            return Err(TsigError::Name(name.to_owned()));
        }
        let mut name_wire = Vec::with_capacity(n.len() + 1);
        for label in n.iter() {
            name_wire.push(u8::try_from(label.len()).unwrap_or(0));
            name_wire.extend_from_slice(label);
        }
        name_wire.push(0);
        Ok(Self {
            name: n,
            name_wire,
            alg,
            key: hmac::Key::new(alg.ring(), secret),
        })
    }

    /// Reads `--tsig-key NAME:ALGORITHM:SECRET-FILE`; the file holds the base64 secret alone
    /// or a BIND key file (`secret "...";`, as `tsig-keygen` writes it).
    pub fn from_spec(spec: &str) -> Result<Self, TsigError> {
        let mut parts = spec.splitn(3, ':');
        let (Some(name), Some(alg), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TsigError::Spec(spec.to_owned()));
        };
        if name.is_empty() || path.is_empty() {
            return Err(TsigError::Spec(spec.to_owned()));
        }
        let alg = Algorithm::parse(alg).ok_or_else(|| TsigError::Algorithm {
            name: name.to_owned(),
            alg: alg.to_owned(),
        })?;
        let text = std::fs::read_to_string(Path::new(path)).map_err(|source| TsigError::Read {
            name: name.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        let secret = secret_of(&text, name, alg).map_err(|reason| TsigError::Secret {
            name: name.to_owned(),
            path: path.to_owned(),
            reason,
        })?;
        Self::new(name, alg, &secret)
    }

    /// The key's name, lowercase and fully qualified.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// The secret of key `name` in a key file: the `secret "BASE64";` of its `key "NAME" { … }`
/// block in a BIND key file (`tsig-keygen`'s output, one or several keys; its algorithm must be
/// `alg`), else the whole text as the base64 secret. The reason it cannot be read, otherwise.
fn secret_of(text: &str, name: &str, alg: Algorithm) -> Result<Vec<u8>, String> {
    let decode = |b64: &str| {
        let b64: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
        match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(secret) if !secret.is_empty() => Ok(secret),
            _ => Err(
                "the secret is not base64 (a bare secret, or a BIND key file with secret \"...\")"
                    .to_owned(),
            ),
        }
    };
    let quoted = |s: &str| -> Option<(String, usize)> {
        let open = s.find('"')?;
        let close = s[open + 1..].find('"')? + open + 1;
        Some((s[open + 1..close].to_owned(), close + 1))
    };
    let want = name.trim_end_matches('.').to_ascii_lowercase();
    let mut rest = text;
    let mut blocks = 0;
    while let Some(at) = rest.find("key ") {
        let after = &rest[at + 4..];
        let Some((key_name, used)) = quoted(after) else {
            break;
        };
        let body_start = after[used..]
            .find('{')
            .map_or(after.len(), |b| used + b + 1);
        let body_end = after[body_start..]
            .find("};")
            .map_or(after.len(), |e| body_start + e);
        let body = &after[body_start..body_end];
        rest = &after[body_end..];
        blocks += 1;
        if key_name.trim_end_matches('.').to_ascii_lowercase() != want {
            continue;
        }
        if let Some(a) = body.find("algorithm") {
            let given = body[a + "algorithm".len()..]
                .split(';')
                .next()
                .unwrap_or("")
                .trim();
            if Algorithm::parse(given) != Some(alg) {
                return Err(format!(
                    "the key file says algorithm {given}, the flag {}",
                    alg.as_str()
                ));
            }
        }
        let secret = body
            .find("secret")
            .and_then(|s| quoted(&body[s..]))
            .ok_or_else(|| "its key block has no secret \"...\"".to_owned())?;
        return decode(&secret.0);
    }
    if blocks > 0 {
        return Err(format!("the key file has no key \"{want}\""));
    }
    decode(text.trim())
}

/// The configured keys.
#[derive(Debug, Default, Clone)]
pub struct Keys(Vec<Arc<Key>>);

impl Keys {
    /// The keys, checked for duplicate names.
    pub fn new(keys: Vec<Key>) -> Result<Self, TsigError> {
        let mut out: Vec<Arc<Key>> = Vec::with_capacity(keys.len());
        for k in keys {
            if out.iter().any(|o| o.name == k.name) {
                return Err(TsigError::Duplicate(k.name.to_string()));
            }
            out.push(Arc::new(k));
        }
        Ok(Self(out))
    }

    /// No key configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key named `name`.
    pub fn get(&self, name: &Name) -> Option<&Arc<Key>> {
        let name = name.to_lowercase();
        self.0.iter().find(|k| k.name == name)
    }

    fn by_wire(&self, wire: &[u8]) -> Option<&Arc<Key>> {
        self.0.iter().find(|k| k.name_wire == wire)
    }

    /// Checks the TSIG of a request at `now` (seconds since the epoch): the key and the
    /// request MAC to sign the answer with, or the error to answer.
    pub fn verify(&self, msg: &[u8], found: &Found, now: u64) -> Result<Verified, Failure> {
        let fail = |error| Failure {
            error,
            key: None,
            request_mac: Vec::new(),
        };
        let Some(key) = self.by_wire(&found.key_name) else {
            return Err(fail(TsigRcode::BadKey));
        };
        if key.alg.wire_name() != found.alg_name {
            return Err(fail(TsigRcode::BadKey));
        }
        if found.mac.len() != key.alg.mac_len() {
            return Err(fail(if found.mac.len() > key.alg.mac_len() {
                TsigRcode::FormErr
            } else {
                TsigRcode::BadTrunc
            }));
        }
        let mut signed = msg[..found.start].to_vec();
        signed[..2].copy_from_slice(&found.original_id.to_be_bytes());
        let arcount = u16::from_be_bytes([signed[10], signed[11]]).saturating_sub(1);
        signed[10..12].copy_from_slice(&arcount.to_be_bytes());
        signed.extend_from_slice(&variables(
            &key.name_wire,
            &found.alg_name,
            found.time,
            found.fudge,
            found.error,
            &found.other,
        ));
        // In constant time: the comparison must not tell how much of a MAC is right.
        if hmac::verify(&key.key, &signed, &found.mac).is_err() {
            return Err(fail(TsigRcode::BadSig));
        }
        if now.abs_diff(found.time) > u64::from(found.fudge) {
            return Err(Failure {
                error: TsigRcode::BadTime,
                key: Some(key.clone()),
                request_mac: found.mac.clone(),
            });
        }
        Ok(Verified {
            key: key.clone(),
            request_mac: found.mac.clone(),
        })
    }
}

/// A request whose signature holds.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The key it was signed with.
    pub key: Arc<Key>,
    /// Its MAC, which the answer's MAC covers.
    pub request_mac: Vec<u8>,
}

/// A request whose signature does not hold.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Why.
    pub error: TsigRcode,
    /// The key, when the answer is signed (BADTIME).
    key: Option<Arc<Key>>,
    request_mac: Vec<u8>,
}

/// The TSIG error codes we answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigRcode {
    /// The MAC is longer than the algorithm's: a format error, not a TSIG error.
    FormErr,
    /// The MAC does not verify.
    BadSig,
    /// Unknown key or algorithm.
    BadKey,
    /// The time is outside the fudge.
    BadTime,
    /// A truncated MAC (we accept full MACs only).
    BadTrunc,
}

impl TsigRcode {
    fn code(self) -> u16 {
        match self {
            Self::FormErr => 0,
            Self::BadSig => 16,
            Self::BadKey => 17,
            Self::BadTime => 18,
            Self::BadTrunc => 22,
        }
    }

    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FormErr => "tsig_formerr",
            Self::BadSig => "tsig_badsig",
            Self::BadKey => "tsig_badkey",
            Self::BadTime => "tsig_badtime",
            Self::BadTrunc => "tsig_badtrunc",
        }
    }
}

/// A TSIG record found in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where the record starts: the message without it is `msg[..start]`.
    pub start: usize,
    /// Where the question section ends.
    pub question_end: usize,
    /// The key name, canonical wire form.
    pub key_name: Vec<u8>,
    /// The algorithm name, canonical wire form.
    pub alg_name: Vec<u8>,
    /// Time signed, seconds since the epoch (48 bits).
    pub time: u64,
    /// Seconds of clock difference the signer allows.
    pub fudge: u16,
    /// The MAC.
    pub mac: Vec<u8>,
    /// The message ID when it was signed.
    pub original_id: u16,
    /// The signer's TSIG error.
    pub error: u16,
    /// Other data.
    pub other: Vec<u8>,
}

/// The message cannot be read far enough to find its TSIG, or has one in the wrong place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed message for TSIG")]
pub struct Malformed;

struct Reader<'m> {
    msg: &'m [u8],
    at: usize,
}

impl Reader<'_> {
    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.msg.get(self.at..self.at + 2).ok_or(Malformed)?;
        self.at += 2;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], Malformed> {
        let b = self.msg.get(self.at..self.at + n).ok_or(Malformed)?;
        self.at += n;
        Ok(b)
    }

    /// A name, following pointers (backwards only, so no loop), in canonical wire form.
    fn name(&mut self) -> Result<Vec<u8>, Malformed> {
        let mut out = Vec::with_capacity(32);
        let mut pos = self.at;
        let mut jumped = false;
        loop {
            let len = *self.msg.get(pos).ok_or(Malformed)?;
            match len {
                0 => {
                    out.push(0);
                    if !jumped {
                        self.at = pos + 1;
                    }
                    return (out.len() <= 255).then_some(out).ok_or(Malformed);
                }
                1..=63 => {
                    let label = self
                        .msg
                        .get(pos + 1..pos + 1 + usize::from(len))
                        .ok_or(Malformed)?;
                    out.push(len);
                    out.extend(label.iter().map(u8::to_ascii_lowercase));
                    if out.len() > 255 {
                        return Err(Malformed);
                    }
                    pos += 1 + usize::from(len);
                }
                0xC0..=0xFF => {
                    let low = *self.msg.get(pos + 1).ok_or(Malformed)?;
                    let target = (usize::from(len & 0x3F) << 8) | usize::from(low);
                    // Backwards only (no loop), and never into the header (no name there).
                    if target >= pos || target < 12 {
                        return Err(Malformed);
                    }
                    if !jumped {
                        self.at = pos + 2;
                        jumped = true;
                    }
                    pos = target;
                }
                _ => return Err(Malformed),
            }
        }
    }
}

/// The message's TSIG record, if it has one: the last additional record. `Err` when the
/// message cannot be read that far or a TSIG record is not the last.
pub fn locate(msg: &[u8]) -> Result<Option<Found>, Malformed> {
    if msg.len() < 12 {
        return Err(Malformed);
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([msg[i], msg[i + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if ar == 0 {
        return Ok(None);
    }
    let mut r = Reader { msg, at: 12 };
    for _ in 0..qd {
        r.name()?;
        r.bytes(4)?;
    }
    let question_end = r.at;
    let total = an + ns + ar;
    for i in 0..total {
        let start = r.at;
        let owner = r.name()?;
        let rtype = r.u16()?;
        let class = r.u16()?;
        let ttl = r.bytes(4)?;
        let ttl_zero = ttl == [0, 0, 0, 0];
        let rdlen = usize::from(r.u16()?);
        let rdata_end = r.at + rdlen;
        if rtype != TSIG_TYPE {
            r.bytes(rdlen)?;
            continue;
        }
        if i + 1 != total || class != CLASS_ANY || !ttl_zero {
            return Err(Malformed);
        }
        let alg_name = r.name()?;
        let t = r.bytes(6)?;
        let time = t.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let fudge = r.u16()?;
        let mac_len = usize::from(r.u16()?);
        let mac = r.bytes(mac_len)?.to_vec();
        let original_id = r.u16()?;
        let error = r.u16()?;
        let other_len = usize::from(r.u16()?);
        let other = r.bytes(other_len)?.to_vec();
        if r.at != rdata_end || r.at != msg.len() {
            return Err(Malformed);
        }
        return Ok(Some(Found {
            start,
            question_end,
            key_name: owner,
            alg_name,
            time,
            fudge,
            mac,
            original_id,
            error,
            other,
        }));
    }
    Ok(None)
}

/// The request without its TSIG record (ARCOUNT one less), to be answered as if unsigned.
pub fn strip(msg: &[u8], found: &Found) -> Vec<u8> {
    let mut out = msg[..found.start].to_vec();
    let ar = u16::from_be_bytes([out[10], out[11]]).saturating_sub(1);
    out[10..12].copy_from_slice(&ar.to_be_bytes());
    out
}

/// The TSIG variables a MAC covers (RFC 8945 §4.3.3).
fn variables(
    key_name: &[u8],
    alg_name: &[u8],
    time: u64,
    fudge: u16,
    error: u16,
    other: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(key_name.len() + alg_name.len() + 20 + other.len());
    v.extend_from_slice(key_name);
    v.extend_from_slice(&CLASS_ANY.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(alg_name);
    v.extend_from_slice(&time.to_be_bytes()[2..]);
    v.extend_from_slice(&fudge.to_be_bytes());
    v.extend_from_slice(&error.to_be_bytes());
    v.extend_from_slice(&u16::try_from(other.len()).unwrap_or(0).to_be_bytes());
    v.extend_from_slice(other);
    v
}

/// Signs the messages of one response, in order.
#[derive(Debug, Clone)]
pub struct Signer {
    key: Arc<Key>,
    /// The MAC the next one covers: the request's, then each message's own.
    prior: Vec<u8>,
    first: bool,
    /// Signing a request: no prior MAC is covered.
    request: bool,
}

impl Signer {
    /// Signs a request of our own (a NOTIFY) with `key`.
    pub fn for_request(key: Arc<Key>) -> Self {
        Self {
            key,
            prior: Vec::new(),
            first: true,
            request: true,
        }
    }

    /// Signs the answer to a request verified by `verified`.
    pub fn new(verified: &Verified) -> Self {
        Self {
            key: verified.key.clone(),
            prior: verified.request_mac.clone(),
            first: true,
            request: false,
        }
    }

    /// Appends a TSIG record to `msg` (a whole message without one) signed at `now`, and
    /// counts it in ARCOUNT.
    pub fn sign(&mut self, msg: &mut Vec<u8>, now: u64) {
        let mut ctx = hmac::Context::with_key(&self.key.key);
        if !self.request {
            ctx.update(&u16::try_from(self.prior.len()).unwrap_or(0).to_be_bytes());
            ctx.update(&self.prior);
        }
        ctx.update(msg);
        let alg = self.key.alg.wire_name();
        if self.first {
            ctx.update(&variables(&self.key.name_wire, &alg, now, FUDGE, 0, &[]));
        } else {
            ctx.update(&now.to_be_bytes()[2..]);
            ctx.update(&FUDGE.to_be_bytes());
        }
        let mac = ctx.sign().as_ref().to_vec();
        let id = u16::from_be_bytes([msg[0], msg[1]]);
        append(msg, &self.key.name_wire, &alg, now, &mac, id, 0, &[]);
        self.prior = mac;
        self.first = false;
        self.request = false;
    }
}

/// Appends a TSIG record and counts it.
#[allow(clippy::too_many_arguments)]
fn append(
    msg: &mut Vec<u8>,
    key_name: &[u8],
    alg: &[u8],
    time: u64,
    mac: &[u8],
    original_id: u16,
    error: u16,
    other: &[u8],
) {
    msg.extend_from_slice(key_name);
    msg.extend_from_slice(&TSIG_TYPE.to_be_bytes());
    msg.extend_from_slice(&CLASS_ANY.to_be_bytes());
    msg.extend_from_slice(&[0, 0, 0, 0]);
    let rdlen = alg.len() + 16 + mac.len() + other.len();
    msg.extend_from_slice(&u16::try_from(rdlen).unwrap_or(0).to_be_bytes());
    msg.extend_from_slice(alg);
    msg.extend_from_slice(&time.to_be_bytes()[2..]);
    msg.extend_from_slice(&FUDGE.to_be_bytes());
    msg.extend_from_slice(&u16::try_from(mac.len()).unwrap_or(0).to_be_bytes());
    msg.extend_from_slice(mac);
    msg.extend_from_slice(&original_id.to_be_bytes());
    msg.extend_from_slice(&error.to_be_bytes());
    msg.extend_from_slice(&u16::try_from(other.len()).unwrap_or(0).to_be_bytes());
    msg.extend_from_slice(other);
    let ar = u16::from_be_bytes([msg[10], msg[11]]).saturating_add(1);
    msg[10..12].copy_from_slice(&ar.to_be_bytes());
}

/// The answer to a request whose TSIG failed, at `now`: its header and question, RCODE
/// NOTAUTH (FORMERR for an over-long MAC), and a TSIG record naming the error: without a MAC
/// for BADKEY, BADSIG and BADTRUNC; signed for BADTIME, with our time as other data.
pub fn error_reply(request: &[u8], found: &Found, failure: &Failure, now: u64) -> Vec<u8> {
    // The question rewritten with its names whole: a pointer into the request may not point
    // at the same bytes in the reply.
    let mut msg = request[..12].to_vec();
    let mut r = Reader {
        msg: &request[..found.question_end],
        at: 12,
    };
    let questions = u16::from_be_bytes([request[4], request[5]]);
    for _ in 0..questions {
        match (r.name(), r.bytes(4)) {
            (Ok(name), Ok(rest)) => {
                msg.extend_from_slice(&name);
                msg.extend_from_slice(rest);
            }
            _ => {
                msg.truncate(12);
                msg[4..6].fill(0);
                break;
            }
        }
    }
    msg[2] = 0x80 | (request[2] & 0x79); // QR, opcode, RD
    msg[3] = if failure.error == TsigRcode::FormErr {
        1
    } else {
        NOTAUTH
    };
    msg[6..12].fill(0);
    if failure.error == TsigRcode::FormErr {
        return msg;
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    match (&failure.key, failure.error) {
        (Some(key), TsigRcode::BadTime) => {
            let other = now.to_be_bytes()[2..].to_vec();
            let alg = key.alg.wire_name();
            let mut ctx = hmac::Context::with_key(&key.key);
            ctx.update(
                &u16::try_from(failure.request_mac.len())
                    .unwrap_or(0)
                    .to_be_bytes(),
            );
            ctx.update(&failure.request_mac);
            ctx.update(&msg);
            ctx.update(&variables(
                &key.name_wire,
                &alg,
                found.time,
                FUDGE,
                failure.error.code(),
                &other,
            ));
            let mac = ctx.sign().as_ref().to_vec();
            append(
                &mut msg,
                &key.name_wire,
                &alg,
                found.time,
                &mac,
                id,
                failure.error.code(),
                &other,
            );
        }
        _ => append(
            &mut msg,
            &found.key_name,
            &found.alg_name,
            now,
            &[],
            id,
            failure.error.code(),
            &[],
        ),
    }
    msg
}

/// Seconds since the epoch, for signing.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
