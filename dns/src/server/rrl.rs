//! Response rate limiting (RRL) for UDP, as NSD (`rrl-ratelimit`, `rrl-slip`,
//! `rrl-ipv4-prefix-length`, `rrl-ipv6-prefix-length`, `rrl-whitelist`) and Knot
//! (`rate-limit`, `rate-limit-slip`) do it, so fedplane-dns cannot be used as a reflector.
//!
//! Each client prefix (IPv4 /24 and IPv6 /56 by default) has a token bucket: it fills at the
//! configured rate up to one second's worth, and every UDP response takes one token. A response
//! with no token left is limited: every `slip`th limited response of that prefix goes out as a
//! truncated reply (TC=1, no records) so that a real client retries over TCP, which is never
//! limited; the others are dropped. `slip` 0 drops them all, 1 truncates them all.
//!
//! The buckets live in a fixed-size table ([`TABLE_SIZE`] buckets, indexed by a keyed hash of
//! the prefix, a colliding prefix takes the bucket over), so spoofed sources cannot make it
//! grow. Unlike NSD, which keeps a bucket per prefix *and* kind of answer, a bucket here is per
//! prefix only: every response to a prefix counts against the same rate. NSD also averages a
//! prefix's rate over seconds, so it lets about twice the rate through in a client's first
//! second and keeps limiting for a while after a flood ends; the token bucket here passes one
//! second's worth at once and the rate after (a test runs both side by side).
//!
//! [`Table`] is the pure logic (the clock is passed in); [`Limiter`] shares it between the UDP
//! workers in shards behind mutexes and checks the exempt list first.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::cidr::{Cidr, canonical, mask4, mask6};

/// Buckets in the table (over all shards): 2 MiB, enough that real clients rarely collide.
pub const TABLE_SIZE: usize = 1 << 16;
/// Shards of the table, each behind its own mutex, so the UDP workers rarely wait on each other.
const SHARDS: usize = 16;
/// Bucket fill is counted in thousandths of a response, so rates below one per millisecond
/// still refill smoothly.
const MILLI: u64 = 1000;

/// Why an RRL setting is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RrlError {
    /// A prefix length beyond the address size.
    #[error("prefix length {len} is longer than an {family} address")]
    PrefixLength {
        /// The length given.
        len: u8,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
}

/// What to do with one UDP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Under the rate (or exempt): send it.
    Pass,
    /// Limited, and this one goes out truncated (TC=1, no records).
    Slip,
    /// Limited: send nothing.
    Drop,
}

impl Action {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Slip => "slip",
            Self::Drop => "drop",
        }
    }
}

/// The settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses per second per prefix (at least 1; RRL is off without a config).
    pub responses_per_second: u32,
    /// Every `slip`th limited response is sent truncated; 0 never, 1 always.
    pub slip: u32,
    /// IPv4 prefix length that makes one client.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length that makes one client.
    pub ipv6_prefix: u8,
    /// Sources never limited.
    pub exempt: Vec<Cidr>,
}

impl RrlConfig {
    /// Checks the prefix lengths.
    pub fn check(&self) -> Result<(), RrlError> {
        if self.ipv4_prefix > 32 {
            return Err(RrlError::PrefixLength {
                len: self.ipv4_prefix,
                family: "IPv4",
            });
        }
        if self.ipv6_prefix > 128 {
            return Err(RrlError::PrefixLength {
                len: self.ipv6_prefix,
                family: "IPv6",
            });
        }
        Ok(())
    }

    /// The bucket key of `ip`: its prefix, with the family in the top bits.
    fn prefix(&self, ip: IpAddr) -> u128 {
        match canonical(ip) {
            IpAddr::V4(v4) => (1u128 << 127) | u128::from(mask4(u32::from(v4), self.ipv4_prefix)),
            // The family bit cannot tell a /128 apart from an IPv4 key with the top bit set;
            // harmless, two keys sharing a bucket.
            IpAddr::V6(v6) => mask6(u128::from(v6), self.ipv6_prefix),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// The prefix it belongs to; `None` while unused.
    key: Option<u128>,
    /// Tokens in thousandths of a response.
    tokens: u64,
    /// Milliseconds (on the caller's clock) of the last refill.
    at_ms: u64,
    /// Limited responses so far (for slip).
    limited: u32,
}

/// A fixed-size table of token buckets: the pure rate-limit logic.
#[derive(Debug)]
pub struct Table {
    buckets: Box<[Bucket]>,
    rate: u64,
    slip: u32,
}

impl Table {
    /// A table of `size` buckets (at least one), `rate` responses per second, `slip` as in
    /// [`RrlConfig::slip`].
    pub fn new(size: usize, rate: u32, slip: u32) -> Self {
        Self {
            buckets: vec![Bucket::default(); size.max(1)].into_boxed_slice(),
            rate: u64::from(rate.max(1)),
            slip,
        }
    }

    /// One response to `key` (whose `hash` picks the bucket) at `now_ms` on a monotonic
    /// millisecond clock.
    pub fn check(&mut self, key: u128, hash: u64, now_ms: u64) -> Action {
        let len = self.buckets.len() as u64;
        // The remainder is below the table's length, which is a usize.
        let b = &mut self.buckets[usize::try_from(hash % len).unwrap_or(0)];
        let full = self.rate * MILLI;
        if b.key != Some(key) {
            *b = Bucket {
                key: Some(key),
                tokens: full,
                at_ms: now_ms,
                limited: 0,
            };
        }
        // `rate` responses per second are `rate` thousandths per millisecond.
        let elapsed = now_ms.saturating_sub(b.at_ms);
        b.tokens = b
            .tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(full);
        b.at_ms = b.at_ms.max(now_ms);
        if b.tokens >= MILLI {
            b.tokens -= MILLI;
            return Action::Pass;
        }
        b.limited = b.limited.wrapping_add(1);
        if self.slip != 0 && b.limited.is_multiple_of(self.slip) {
            Action::Slip
        } else {
            Action::Drop
        }
    }
}

/// RRL shared by every UDP worker: the exempt list, then one of [`SHARDS`] tables.
#[derive(Debug)]
pub struct Limiter {
    config: RrlConfig,
    shards: Box<[Mutex<Table>]>,
    hasher: std::collections::hash_map::RandomState,
    epoch: Instant,
}

impl Limiter {
    /// A limiter with [`TABLE_SIZE`] buckets.
    pub fn new(config: RrlConfig) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Table::new(
                    TABLE_SIZE / SHARDS,
                    config.responses_per_second,
                    config.slip,
                ))
            })
            .collect();
        Self {
            config,
            shards,
            // Keyed per process, so nobody can aim sources at a victim's bucket.
            hasher: std::collections::hash_map::RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// One UDP response to `ip` at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Action {
        if self.config.exempt.iter().any(|c| c.contains(ip)) {
            return Action::Pass;
        }
        let key = self.config.prefix(ip);
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        let hash = std::hash::Hasher::finish(&h);
        let shard = &self.shards[usize::try_from(hash >> 60).unwrap_or(0) % SHARDS];
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        // A poisoned shard (a panic mid-check) still holds consistent plain data.
        let mut table = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.check(key, hash, now_ms)
    }
}

/// The slipped reply to `query`: its header and question with QR and TC set, no records and no
/// OPT (as NSD and Knot send it), written into `out`. `None` when the question cannot be found
/// (then the query is dropped).
pub fn truncated_reply(query: &[u8], out: &mut [u8]) -> Option<usize> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut pos = 12;
    loop {
        let len = usize::from(*query.get(pos)?);
        if len & 0xC0 != 0 {
            return None;
        }
        pos += 1 + len;
        if len == 0 {
            break;
        }
    }
    let end = pos + 4;
    if end > query.len() || end > out.len() {
        return None;
    }
    out[..end].copy_from_slice(&query[..end]);
    out[2] = 0x80 | (query[2] & 0x79) | 0x02; // QR, opcode and RD kept, TC
    out[3] = query[3] & 0x10; // CD kept, RCODE NOERROR
    out[6..12].fill(0);
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: u32, slip: u32) -> RrlConfig {
        RrlConfig {
            responses_per_second: rate,
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: vec!["10.9.0.0/16".parse().expect("cidr")],
        }
    }

    #[test]
    fn a_bucket_allows_one_second_of_burst_then_the_rate() {
        let mut t = Table::new(8, 10, 0);
        let got: Vec<Action> = (0..12).map(|_| t.check(1, 1, 5_000)).collect();
        assert_eq!(got.iter().filter(|a| **a == Action::Pass).count(), 10);
        assert_eq!(got[10..], [Action::Drop, Action::Drop]);
        // 100 ms at 10/s refill one response
        assert_eq!(t.check(1, 1, 5_099), Action::Drop);
        assert_eq!(t.check(1, 1, 5_100), Action::Pass);
        assert_eq!(t.check(1, 1, 5_100), Action::Drop);
        // a long pause refills only up to the burst
        let after: Vec<Action> = (0..12).map(|_| t.check(1, 1, 60_000)).collect();
        assert_eq!(after.iter().filter(|a| **a == Action::Pass).count(), 10);
    }

    #[test]
    fn slip_truncates_every_nth_limited_response() {
        let mut t = Table::new(8, 1, 3);
        assert_eq!(t.check(7, 7, 0), Action::Pass);
        let limited: Vec<Action> = (0..6).map(|_| t.check(7, 7, 0)).collect();
        use Action::{Drop as D, Slip as S};
        assert_eq!(limited, [D, D, S, D, D, S]);
        let mut all = Table::new(8, 1, 1);
        all.check(7, 7, 0);
        assert!((0..4).all(|_| all.check(7, 7, 0) == Action::Slip));
        let mut none = Table::new(8, 1, 0);
        none.check(7, 7, 0);
        assert!((0..4).all(|_| none.check(7, 7, 0) == Action::Drop));
    }

    #[test]
    fn a_colliding_prefix_takes_the_bucket_over_and_the_table_never_grows() {
        let mut t = Table::new(4, 1, 0);
        assert_eq!(t.check(1, 0, 0), Action::Pass);
        assert_eq!(t.check(1, 0, 0), Action::Drop);
        assert_eq!(t.check(2, 4, 0), Action::Pass, "another key, same bucket");
        assert_eq!(t.check(1, 0, 0), Action::Pass, "reset by the collision");
        for k in 0..10_000u128 {
            t.check(k, u64::try_from(k).expect("small"), 0);
        }
        assert_eq!(t.buckets.len(), 4);
    }

    #[test]
    fn clients_are_counted_per_prefix_and_exempt_sources_pass() {
        let l = Limiter::new(config(2, 0));
        let now = Instant::now();
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(l.check(ip("192.0.2.1"), now), Action::Pass);
        assert_eq!(l.check(ip("192.0.2.200"), now), Action::Pass);
        assert_eq!(
            l.check(ip("::ffff:192.0.2.9"), now),
            Action::Drop,
            "same /24, mapped"
        );
        assert_eq!(l.check(ip("192.0.3.1"), now), Action::Pass, "another /24");
        assert_eq!(l.check(ip("2001:db8:0:ff::1"), now), Action::Pass);
        assert_eq!(l.check(ip("2001:db8:0:ee::2"), now), Action::Pass);
        assert_eq!(
            l.check(ip("2001:db8:0:1::3"), now),
            Action::Drop,
            "same /56"
        );
        assert_eq!(l.check(ip("2001:db8:0:100::3"), now), Action::Pass);
        for _ in 0..10 {
            assert_eq!(l.check(ip("10.9.200.1"), now), Action::Pass, "exempt");
        }
        // a second later the bucket is full again
        let later = now + std::time::Duration::from_secs(1);
        assert_eq!(l.check(ip("192.0.2.1"), later), Action::Pass);
    }

    #[test]
    fn prefix_lengths_are_checked() {
        let mut cfg = config(1, 0);
        cfg.ipv6_prefix = 129;
        assert!(cfg.check().is_err());
    }

    #[test]
    fn the_truncated_reply_is_the_question_with_tc_and_no_records() {
        use hickory_proto::op::{Edns, Message, MessageType, Query};
        use hickory_proto::rr::{Name, RecordType};
        let mut q = Message::query();
        q.metadata.id = 0xBEEF;
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(
            Name::from_ascii("a.example.com.").expect("name"),
            RecordType::A,
        ));
        q.set_edns(Edns::new());
        let bytes = q.to_vec().expect("encode");
        let mut out = [0u8; 512];
        let n = truncated_reply(&bytes, &mut out).expect("reply");
        let r = Message::from_vec(&out[..n]).expect("valid message");
        assert_eq!(r.metadata.id, 0xBEEF);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert!(r.metadata.truncation && r.metadata.recursion_desired);
        assert_eq!(r.queries, q.queries);
        assert!(r.answers.is_empty() && r.additionals.is_empty() && r.edns.is_none());
        assert_eq!(truncated_reply(&bytes[..14], &mut out), None);
    }
}
