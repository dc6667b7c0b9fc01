//! One SkyDNS record: the JSON value stored under a key, as CoreDNS's etcd plugin and
//! ExternalDNS's coredns provider read and write it.
//!
//! ```json
//! {"host": "10.0.0.1", "port": 80, "priority": 10, "weight": 100, "text": "…",
//!  "mail": false, "ttl": 30, "targetstrip": 1, "group": "g",
//!  "zone": "fr", "region": "europe"}
//! ```
//!
//! Every field is optional; unknown fields (ExternalDNS adds `owner`) are ignored, and `null`
//! is read like an absent field, as Go's `encoding/json` does. `zone` and `region` are
//! fedplane's: where the address is, for answers by client locality (CoreDNS and ExternalDNS
//! ignore them, so the data stays theirs to read); each must be a DNS label, and is kept in
//! lower case.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;
use serde::Deserialize;

/// Priority used when the record has none (CoreDNS's etcd plugin uses the same).
pub const DEFAULT_PRIORITY: u16 = 10;
/// Weight used in the SRV weight split when the record has none.
pub const DEFAULT_WEIGHT: u16 = 100;
/// Longest `text` accepted: a quarter of the largest DNS message, so a TXT answer always fits
/// over TCP with room for the rest of the message.
pub const MAX_TEXT: usize = 16 * 1024;

/// Why a value under the prefix is not a record. Each variant names the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The value is not a JSON object of the SkyDNS shape.
    #[error("value is not SkyDNS JSON: {0}")]
    Json(String),
    /// `host` is neither an IP address nor a valid domain name.
    #[error("host {0:?} is neither an IP address nor a domain name")]
    Host(String),
    /// A number is outside the range its DNS field can hold.
    #[error("{field} {value} is out of range ({range})")]
    Range {
        /// The JSON field.
        field: &'static str,
        /// The value found.
        value: i64,
        /// The range it must be in.
        range: &'static str,
    },
    /// `zone` or `region` is not a DNS label.
    #[error("{field} {value:?} is not a DNS label (letters, digits, '-', at most 63)")]
    Locality {
        /// `zone` or `region`.
        field: &'static str,
        /// The value found.
        value: String,
    },
    /// `text` is longer than [`MAX_TEXT`].
    #[error("text is {0} bytes, more than the {MAX_TEXT} a DNS answer can carry")]
    TextTooLong(usize),
    /// The record would answer nothing: no host, no text.
    #[error("record has neither host nor text")]
    Empty,
}

/// The target of a record: what `host` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// No host: a TXT-only record.
    None,
    /// IPv4 address: A (and SRV/MX target address).
    V4(Ipv4Addr),
    /// IPv6 address: AAAA (and SRV/MX target address).
    V6(Ipv6Addr),
    /// A domain name: CNAME, PTR, or SRV/MX target.
    Name(Name),
}

/// A parsed, validated record. Defaults are applied at answer time so that the stored value
/// stays what etcd holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where the record points.
    pub host: Host,
    /// SRV port; `None` when the record asked to be left out of SRV answers (`port: -1`).
    pub port: Option<u16>,
    /// SRV priority and MX preference; 0 means [`DEFAULT_PRIORITY`].
    pub priority: u16,
    /// SRV weight; 0 means [`DEFAULT_WEIGHT`].
    pub weight: u16,
    /// TXT data; empty when the record has no text.
    pub text: Box<str>,
    /// The record is an MX record.
    pub mail: bool,
    /// TTL in seconds; 0 means the server default.
    pub ttl: u32,
    /// Labels to strip from the left of a made-up SRV/MX target name.
    pub target_strip: u8,
    /// Records of one group are answered together (see `index::group_filter`).
    pub group: Box<str>,
    /// The zone the address is in, lower case; empty when not given.
    pub zone: Box<str>,
    /// The region the address is in, lower case; empty when not given.
    pub region: Box<str>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    weight: Option<i64>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    mail: Option<bool>,
    #[serde(default)]
    ttl: Option<i64>,
    #[serde(default)]
    targetstrip: Option<i64>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

/// A `zone` or `region`: empty when absent, else a DNS label, lower-cased.
fn locality(field: &'static str, value: Option<String>) -> Result<Box<str>, RecordError> {
    let Some(v) = value else {
        return Ok(Box::default());
    };
    if !v.is_empty() && !is_dns_label(&v) {
        return Err(RecordError::Locality { field, value: v });
    }
    Ok(v.to_ascii_lowercase().into())
}

/// Whether `s` is one DNS label as zones, regions and federation names are written: 1 to 63
/// letters, digits and inner hyphens.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn ranged<T: TryFrom<i64> + Default>(
    field: &'static str,
    value: Option<i64>,
    range: &'static str,
) -> Result<T, RecordError> {
    match value {
        None => Ok(T::default()),
        Some(v) => T::try_from(v).map_err(|_| RecordError::Range {
            field,
            value: v,
            range,
        }),
    }
}

/// Reads `host` the way Go's `net.ParseIP` does (IPv4-mapped IPv6 counts as IPv4), else as a
/// domain name.
pub fn parse_host(host: &str) -> Result<Host, RecordError> {
    if host.is_empty() {
        return Ok(Host::None);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(v4) => Host::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Host::V4(v4),
                None => Host::V6(v6),
            },
        });
    }
    let mut name = Name::from_ascii(host).map_err(|_| RecordError::Host(host.to_owned()))?;
    if name.is_root() || host.contains(['/', ' ']) {
        return Err(RecordError::Host(host.to_owned()));
    }
    name.set_fqdn(true);
    Ok(Host::Name(name))
}

impl Record {
    /// Parses and validates one etcd value.
    pub fn parse(value: &[u8]) -> Result<Self, RecordError> {
        let raw: Raw =
            serde_json::from_slice(value).map_err(|e| RecordError::Json(e.to_string()))?;
        let host = parse_host(raw.host.as_deref().unwrap_or(""))?;
        let port = match raw.port {
            Some(-1) => None,
            other => Some(ranged::<u16>("port", other, "-1..=65535")?),
        };
        let text: Box<str> = raw.text.unwrap_or_default().into();
        if text.len() > MAX_TEXT {
            return Err(RecordError::TextTooLong(text.len()));
        }
        if host == Host::None && text.is_empty() {
            return Err(RecordError::Empty);
        }
        Ok(Self {
            host,
            port,
            priority: ranged("priority", raw.priority, "0..=65535")?,
            weight: ranged("weight", raw.weight, "0..=65535")?,
            text,
            mail: raw.mail.unwrap_or(false),
            ttl: ranged("ttl", raw.ttl, "0..=4294967295")?,
            target_strip: ranged("targetstrip", raw.targetstrip, "0..=255")?,
            group: raw.group.unwrap_or_default().into(),
            zone: locality("zone", raw.zone)?,
            region: locality("region", raw.region)?,
        })
    }

    /// The SRV priority / MX preference with the default applied.
    pub fn priority_or_default(&self) -> u16 {
        if self.priority == 0 {
            DEFAULT_PRIORITY
        } else {
            self.priority
        }
    }

    /// The SRV weight with the default applied.
    pub fn weight_or_default(&self) -> u16 {
        if self.weight == 0 {
            DEFAULT_WEIGHT
        } else {
            self.weight
        }
    }
}

#[cfg(test)]
mod tests;
