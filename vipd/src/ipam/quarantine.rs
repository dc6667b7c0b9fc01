//! The quarantine of released addresses, free of I/O: fed with the addresses in use each
//! time the Services change, it tells who released an address and until when only they may
//! take it again.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Recently released addresses, which only their last owner may take again until the period
/// is over. Fed with the addresses in use each time the Services change.
#[derive(Debug, Clone)]
pub struct Quarantine {
    period: Duration,
    /// Address → (released at, by whom).
    released: BTreeMap<IpAddr, (Instant, String)>,
    /// Address → owner, at the last [`Quarantine::observe`]; `None` before the first.
    last: Option<BTreeMap<IpAddr, String>>,
}

impl Quarantine {
    /// An empty quarantine with this period.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            released: BTreeMap::new(),
            last: None,
        }
    }

    /// Records the addresses in use now (address → `namespace/name`): each address in use at
    /// the previous call and not now was released now. The first call releases nothing.
    pub fn observe(&mut self, in_use: &BTreeMap<IpAddr, String>, now: Instant) {
        self.expire(now);
        if let Some(last) = &self.last {
            for (ip, owner) in last {
                if !in_use.contains_key(ip) {
                    self.released.insert(*ip, (now, owner.clone()));
                }
            }
        }
        self.released.retain(|ip, _| !in_use.contains_key(ip));
        self.last = Some(in_use.clone());
    }

    fn expire(&mut self, now: Instant) {
        let period = self.period;
        self.released
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < period);
    }

    /// Who released `ip` and how long until it is free, if `key` may not take it at `now`.
    pub fn blocks(&self, ip: IpAddr, key: &str, now: Instant) -> Option<(&str, Duration)> {
        let (at, owner) = self.released.get(&ip)?;
        let left = self
            .period
            .checked_sub(now.saturating_duration_since(*at))?;
        (owner != key && !left.is_zero()).then_some((owner.as_str(), left))
    }

    /// When the next address leaves quarantine.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.released
            .values()
            .map(|(at, _)| *at + self.period)
            .min()
    }

    /// Addresses in quarantine (for metrics).
    pub fn len(&self) -> usize {
        self.released.len()
    }

    /// Whether no address is in quarantine.
    pub fn is_empty(&self) -> bool {
        self.released.is_empty()
    }
}
