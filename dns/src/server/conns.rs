//! The open DNS TCP connections and who gets one under pressure (RFC 7766 §6.2.3): a total
//! cap, a cap per client address, a shorter idle timeout once the connections near the total
//! cap, and at the cap the connection idle longest is closed to admit the new one. Pure logic:
//! the caller passes the clock and a handle per connection (how to close it), and closes what
//! [`ConnTable::admit`] evicts. A connection refused for the per-client cap is not closed at
//! once but held, unread, for [`REFUSED_HOLD`] ([`Held`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// From this share of the cap on (three quarters), the idle timeout is [`PRESSURE_IDLE`].
const PRESSURE_NUM: usize = 3;
const PRESSURE_DEN: usize = 4;
/// The idle timeout under pressure (or the configured one if shorter).
pub const PRESSURE_IDLE: Duration = Duration::from_secs(1);

/// Why a new connection is closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Its address already has the per-client number of connections.
    PerClient,
    /// Every connection is busy answering: none idle to close.
    Full,
}

impl Reject {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerClient => "per_client",
            Self::Full => "full",
        }
    }
}

/// The client an address counts for: an IPv4 address (also IPv4-mapped IPv6) itself, an IPv6
/// address its /64 (one host usually holds a whole /64).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[derive(Debug)]
struct Entry<H> {
    ip: IpAddr,
    /// Waiting for a query since then; `None` while reading or answering one.
    idle_since: Option<Instant>,
    handle: H,
}

/// The connection table.
#[derive(Debug)]
pub struct ConnTable<H> {
    cap: usize,
    per_client: usize,
    next_id: u64,
    entries: HashMap<u64, Entry<H>>,
    per_ip: HashMap<IpAddr, usize>,
}

impl<H> ConnTable<H> {
    /// At most `cap` connections, `per_client` of them from one address (both at least 1).
    pub fn new(cap: usize, per_client: usize) -> Self {
        Self {
            cap: cap.max(1),
            per_client: per_client.max(1),
            next_id: 0,
            entries: HashMap::new(),
            per_ip: HashMap::new(),
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A new connection from `ip`, idle from `now`: its id and, at the cap, the handle of the
    /// connection idle longest, which the caller closes (it is already out of the table).
    pub fn admit(
        &mut self,
        ip: IpAddr,
        now: Instant,
        handle: H,
    ) -> Result<(u64, Option<H>), Reject> {
        let ip = client_of(ip);
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_client {
            return Err(Reject::PerClient);
        }
        let evicted = if self.entries.len() >= self.cap {
            let oldest = self
                .entries
                .iter()
                .filter_map(|(id, e)| Some((e.idle_since?, *id)))
                .min()
                .map(|(_, id)| id)
                .ok_or(Reject::Full)?;
            self.remove(oldest)
        } else {
            None
        };
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                ip,
                idle_since: Some(now),
                handle,
            },
        );
        *self.per_ip.entry(ip).or_insert(0) += 1;
        Ok((id, evicted))
    }

    /// Connection `id` waits for its next query from `now`; returns how long it may wait.
    /// `configured` is the idle timeout, shortened to [`PRESSURE_IDLE`] near the cap.
    pub fn idle(&mut self, id: u64, now: Instant, configured: Duration) -> Duration {
        if let Some(e) = self.entries.get_mut(&id) {
            e.idle_since = Some(now);
        }
        if self.entries.len() * PRESSURE_DEN >= self.cap * PRESSURE_NUM {
            configured.min(PRESSURE_IDLE)
        } else {
            configured
        }
    }

    /// Connection `id` reads or answers a query: it is not evicted meanwhile.
    pub fn busy(&mut self, id: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.idle_since = None;
        }
    }

    /// Connection `id` is gone (no-op if it was evicted). Returns its handle.
    pub fn remove(&mut self, id: u64) -> Option<H> {
        let e = self.entries.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&e.ip);
            }
        }
        Some(e.handle)
    }
}

/// How long a refused connection is held open, unread, before it is closed.
pub const REFUSED_HOLD: Duration = Duration::from_secs(2);

/// Refused connections held open, unread, until [`REFUSED_HOLD`] has passed, then closed. A
/// client over its per-client cap whose connection is closed at once reconnects at once: a
/// flood from one address turns into tens of thousands of handshakes and closes a second,
/// which cost every other client far more than a held descriptor does (NSD gets the same
/// effect from its full accept backlog). At most `cap` are held; beyond that the one held
/// longest is closed to make room, so the descriptors stay bounded.
#[derive(Debug)]
pub struct Held<T> {
    cap: usize,
    queue: VecDeque<(Instant, T)>,
}

impl<T> Held<T> {
    /// Holds at most `cap` (0: every refused connection is closed at once).
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            queue: VecDeque::new(),
        }
    }

    /// Holds `item`, refused at `now`. Returns what must be closed now: the item held longest
    /// when full, or `item` itself when nothing may be held.
    pub fn hold(&mut self, now: Instant, item: T) -> Option<T> {
        if self.cap == 0 {
            return Some(item);
        }
        let out = if self.queue.len() >= self.cap {
            self.queue.pop_front().map(|(_, t)| t)
        } else {
            None
        };
        self.queue.push_back((now + REFUSED_HOLD, item));
        out
    }

    /// When the next held item is due for closing.
    pub fn next_release(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _)| *at)
    }

    /// Removes and returns every item due at `now` (deadlines come in order: the hold is the
    /// same for all).
    pub fn release(&mut self, now: Instant) -> impl Iterator<Item = T> + '_ {
        let due = self.queue.partition_point(|(at, _)| *at <= now);
        self.queue.drain(..due).map(|(_, t)| t)
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn at_the_cap_the_connection_idle_longest_makes_room() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut t = ConnTable::new(3, 3);
        let (a, _) = t.admit(ip(1), at(0), "a").expect("room");
        let (b, _) = t.admit(ip(2), at(1), "b").expect("room");
        let (c, _) = t.admit(ip(3), at(2), "c").expect("room");
        t.busy(a);
        t.idle(b, at(50), Duration::from_secs(10));
        // c has been idle longest (since 2 ms); a is busy
        let (d, evicted) = t.admit(ip(4), at(60), "d").expect("evicts");
        assert_eq!(evicted, Some("c"));
        assert_eq!(t.len(), 3);
        assert_eq!(t.remove(c), None, "already out");
        t.busy(b);
        t.busy(d);
        assert_eq!(t.admit(ip(5), at(70), "e"), Err(Reject::Full));
        t.remove(a);
        assert!(t.admit(ip(5), at(80), "e").is_ok());
    }

    #[test]
    fn one_address_gets_at_most_its_share() {
        let now = Instant::now();
        let mut t = ConnTable::new(10, 2);
        let (first, _) = t.admit(ip(1), now, ()).expect("room");
        t.admit(ip(1), now, ()).expect("room");
        assert_eq!(t.admit(ip(1), now, ()), Err(Reject::PerClient));
        assert!(t.admit(ip(2), now, ()).is_ok());
        t.remove(first);
        assert!(t.admit(ip(1), now, ()).is_ok());
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64_and_a_mapped_address_as_ipv4() {
        let now = Instant::now();
        let mut t = ConnTable::new(10, 2);
        let v6 = |s: &str| IpAddr::V6(s.parse().expect("address"));
        t.admit(v6("2001:db8::1"), now, ()).expect("room");
        t.admit(v6("2001:db8::ffff:2"), now, ()).expect("room");
        assert_eq!(
            t.admit(v6("2001:db8::abcd:3"), now, ()),
            Err(Reject::PerClient),
            "the same /64"
        );
        assert!(
            t.admit(v6("2001:db8:0:1::1"), now, ()).is_ok(),
            "another /64"
        );
        t.admit(ip(9), now, ()).expect("room");
        t.admit(v6("::ffff:192.0.2.9"), now, ()).expect("room");
        assert_eq!(
            t.admit(ip(9), now, ()),
            Err(Reject::PerClient),
            "the mapped address is the IPv4 client"
        );
    }

    #[test]
    fn the_idle_timeout_shortens_near_the_cap() {
        let now = Instant::now();
        let ten = Duration::from_secs(10);
        let mut t = ConnTable::new(8, 8);
        let ids: Vec<u64> = (0..5)
            .map(|i| t.admit(ip(i), now, ()).expect("room").0)
            .collect();
        assert_eq!(t.idle(ids[0], now, ten), ten, "5 of 8");
        t.admit(ip(9), now, ()).expect("room");
        assert_eq!(t.idle(ids[0], now, ten), PRESSURE_IDLE, "6 of 8");
        assert_eq!(
            t.idle(ids[0], now, Duration::from_millis(200)),
            Duration::from_millis(200),
            "never longer than configured"
        );
    }

    #[test]
    fn refused_connections_are_held_for_a_while_and_the_oldest_makes_room() {
        let t0 = Instant::now();
        let mut h = Held::new(2);
        assert_eq!(h.hold(t0, 'a'), None);
        assert_eq!(h.hold(t0 + Duration::from_millis(10), 'b'), None);
        assert_eq!(h.next_release(), Some(t0 + REFUSED_HOLD));
        assert_eq!(
            h.hold(t0 + Duration::from_millis(20), 'c'),
            Some('a'),
            "full: the one held longest goes"
        );
        assert_eq!(
            h.release(t0 + REFUSED_HOLD).count(),
            0,
            "b is due 10 ms later"
        );
        let due: Vec<char> = h
            .release(t0 + REFUSED_HOLD + Duration::from_millis(15))
            .collect();
        assert_eq!(due, ['b']);
        assert_eq!(h.len(), 1);
        let mut none = Held::new(0);
        assert_eq!(none.hold(t0, 'x'), Some('x'), "cap 0 holds nothing");
        assert!(none.is_empty());
    }
}
