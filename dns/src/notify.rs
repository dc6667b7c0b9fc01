//! When to send NOTIFY (RFC 1996) to the secondaries: a pure state machine, the sending is
//! `server::notify`'s.
//!
//! A zone's serial change starts a round (one NOTIFY to each target) at once, unless a round
//! started less than `interval` ago: then one round follows when the interval is over,
//! carrying the newest serial (changes are coalesced, at most one round per zone per
//! interval). Each NOTIFY is sent again, with the same ID, after 1 s, 2 s, 4 s … at most
//! [`RETRY_MAX`] apart, until its target answers it (any answer with its ID from that target)
//! or a newer round replaces it.

use std::time::{Duration, Instant};

/// First wait for an answer before sending again.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two sends of one NOTIFY.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// One NOTIFY to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    /// The zone's index.
    pub zi: usize,
    /// The target's index.
    pub target: usize,
    /// The serial to announce.
    pub serial: u32,
    /// The message ID.
    pub id: u16,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    id: u16,
    serial: u32,
    attempts: u32,
    next: Instant,
}

#[derive(Debug, Clone, Default)]
struct ZoneState {
    /// The newest serial seen.
    serial: Option<u32>,
    /// A round is wanted for `serial`.
    pending: bool,
    last_round: Option<Instant>,
    /// Per target, the NOTIFY not answered yet.
    outstanding: Vec<Option<Outstanding>>,
}

/// The NOTIFY state of every zone.
#[derive(Debug, Clone)]
pub struct Notifier {
    interval: Duration,
    zones: Vec<ZoneState>,
}

impl Notifier {
    /// For `zones` zones and `targets` targets, at most one round per zone per `interval`.
    pub fn new(zones: usize, targets: usize, interval: Duration) -> Self {
        Self {
            interval,
            zones: vec![
                ZoneState {
                    outstanding: vec![None; targets],
                    ..ZoneState::default()
                };
                zones
            ],
        }
    }

    /// Zone `zi` is at `serial` now (called on every publish; only a change counts).
    pub fn on_serial(&mut self, zi: usize, serial: u32) {
        if let Some(z) = self.zones.get_mut(zi)
            && z.serial != Some(serial)
        {
            z.serial = Some(serial);
            z.pending = true;
        }
    }

    /// What to send at `now`: new rounds whose interval allows them, and retries that are due.
    /// `id` gives each new NOTIFY its message ID.
    pub fn due(&mut self, now: Instant, mut id: impl FnMut() -> u16) -> Vec<Send> {
        let mut out = Vec::new();
        for (zi, z) in self.zones.iter_mut().enumerate() {
            let round_allowed = z.last_round.is_none_or(|t| now >= t + self.interval);
            if let (true, true, Some(serial)) = (z.pending, round_allowed, z.serial) {
                z.pending = false;
                z.last_round = Some(now);
                for (target, slot) in z.outstanding.iter_mut().enumerate() {
                    let n = Outstanding {
                        id: id(),
                        serial,
                        attempts: 1,
                        next: now + RETRY_FIRST,
                    };
                    *slot = Some(n);
                    out.push(Send {
                        zi,
                        target,
                        serial,
                        id: n.id,
                    });
                }
                continue;
            }
            for (target, slot) in z.outstanding.iter_mut().enumerate() {
                if let Some(o) = slot
                    && now >= o.next
                {
                    let wait = RETRY_FIRST
                        .saturating_mul(1 << o.attempts.min(16))
                        .min(RETRY_MAX);
                    o.attempts += 1;
                    o.next = now + wait;
                    out.push(Send {
                        zi,
                        target,
                        serial: o.serial,
                        id: o.id,
                    });
                }
            }
        }
        out
    }

    /// `target` answered message `id`: that NOTIFY is done. Returns whether it was one of ours
    /// (and its zone and serial).
    pub fn on_reply(&mut self, target: usize, id: u16) -> Option<(usize, u32)> {
        for (zi, z) in self.zones.iter_mut().enumerate() {
            if let Some(slot) = z.outstanding.get_mut(target)
                && let Some(o) = slot
                && o.id == id
            {
                let serial = o.serial;
                *slot = None;
                return Some((zi, serial));
            }
        }
        None
    }

    /// When [`Notifier::due`] has something next, if ever.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.zones
            .iter()
            .flat_map(|z| {
                let round = z
                    .pending
                    .then(|| z.last_round.map(|t| t + self.interval))
                    .map(|t| t.unwrap_or_else(Instant::now));
                round
                    .into_iter()
                    .chain(z.outstanding.iter().flatten().map(|o| o.next))
            })
            .min()
    }

    /// NOTIFYs sent and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.zones
            .iter()
            .map(|z| z.outstanding.iter().flatten().count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> impl FnMut() -> u16 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn a_change_notifies_every_target_at_once_and_changes_within_the_interval_coalesce() {
        let t0 = Instant::now();
        let mut n = Notifier::new(1, 2, Duration::from_secs(1));
        let mut id = ids();
        assert_eq!(n.due(t0, &mut id), []);
        n.on_serial(0, 10);
        let sent = n.due(t0, &mut id);
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|s| s.serial == 10));
        n.on_serial(0, 11);
        n.on_serial(0, 12);
        n.on_serial(0, 12);
        assert_eq!(n.next_wakeup(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(n.due(t0 + Duration::from_millis(500), &mut id), []);
        let sent = n.due(t0 + Duration::from_secs(1), &mut id);
        assert_eq!(sent.len(), 2, "one round for both changes");
        assert!(sent.iter().all(|s| s.serial == 12), "{sent:?}");
        assert_eq!(n.outstanding(), 2);
    }

    #[test]
    fn unanswered_notifies_are_sent_again_with_backoff_until_answered() {
        let t0 = Instant::now();
        let mut n = Notifier::new(2, 1, Duration::from_secs(1));
        let mut id = ids();
        n.on_serial(1, 5);
        let first = n.due(t0, &mut id)[0];
        let mut at = t0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let next = n.next_wakeup().expect("a retry");
            waits.push((next - at).as_secs());
            at = next;
            let again = n.due(at, &mut id);
            assert_eq!(again, [first], "the same message again");
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            n.on_reply(0, first.id + 1),
            None,
            "another ID is not its answer"
        );
        assert_eq!(n.on_reply(0, first.id), Some((1, 5)));
        assert_eq!(n.next_wakeup(), None);
        assert_eq!(n.outstanding(), 0);
    }

    #[test]
    fn a_newer_round_replaces_an_unanswered_notify() {
        let t0 = Instant::now();
        let mut n = Notifier::new(1, 1, Duration::from_secs(1));
        let mut id = ids();
        n.on_serial(0, 1);
        let old = n.due(t0, &mut id)[0];
        n.on_serial(0, 2);
        let new = n.due(t0 + Duration::from_secs(1), &mut id);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].serial, 2);
        assert_ne!(new[0].id, old.id);
        assert_eq!(n.on_reply(0, old.id), None, "the old one is forgotten");
        assert_eq!(n.on_reply(0, new[0].id), Some((0, 2)));
    }
}
