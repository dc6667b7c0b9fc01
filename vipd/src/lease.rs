//! Leader election on a Kubernetes Lease, decided free of I/O (the rules of client-go's
//! `leaderelection`): the holder renews every `duration / 5`; another replica takes over only
//! when it has seen the Lease unchanged for a whole `duration` on its own clock (no clock
//! comparison between nodes); and a holder stops acting `duration * 2 / 3` after the start of
//! its last successful renewal, so it has stopped before anyone can take over.
//!
//! # Identity
//!
//! Each process holds the Lease under its own identity, `<node>_<16 hex digits>` made by
//! [`identity`] from 8 random bytes (read from `/dev/urandom` by [`crate::leader`]), as
//! client-go makes `<hostname>_<uuid>`. With the bare node name, a restarted pod on the same
//! node saw the old process's Lease as its own and "renewed" it at once, while the old process
//! (still terminating, or frozen) could believe it held it too.
//!
//! # Whose duration
//!
//! A standby waits out the duration the holder wrote (`spec.leaseDurationSeconds`), not its own
//! `--lease-duration`: replicas with different flags must agree on when a Lease expires.
//! [`lease_duration`] resolves it: absent, zero or negative → our own duration; above
//! [`MAX_LEASE_DURATION`] (one hour) → that cap, so one bogus write cannot stop every failover;
//! the caller logs each clamped value once.

use std::time::{Duration, Instant};

/// The parts of a Lease the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `spec.holderIdentity` (empty: released).
    pub holder: String,
    /// `metadata.resourceVersion`: moves on every write, renewals included.
    pub version: String,
    /// The holder's `spec.leaseDurationSeconds`, resolved by [`lease_duration`].
    pub duration: Duration,
}

/// The longest Lease duration honoured: a larger `spec.leaseDurationSeconds` is clamped to it.
pub const MAX_LEASE_DURATION: Duration = Duration::from_secs(3600);

/// Why a Lease's `spec.leaseDurationSeconds` was not used as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamped {
    /// Absent, zero or negative (the value, if any): our own duration is used.
    Unusable(Option<i32>),
    /// Longer than [`MAX_LEASE_DURATION`]: clamped to it.
    TooLong(i32),
}

/// The duration a standby waits out for a Lease whose holder wrote `secs`, given our own
/// `own` duration; and why the written value was not used, if it was not.
pub fn lease_duration(secs: Option<i32>, own: Duration) -> (Duration, Option<Clamped>) {
    match secs {
        Some(s) if s > 0 => {
            let d = Duration::from_secs(s.unsigned_abs().into());
            if d > MAX_LEASE_DURATION {
                (MAX_LEASE_DURATION, Some(Clamped::TooLong(s)))
            } else {
                (d, None)
            }
        }
        // One created by hand may have none: wait our own.
        None => (own, Some(Clamped::Unusable(None))),
        Some(s) => (own, Some(Clamped::Unusable(Some(s)))),
    }
}

/// This process's holder identity: `<node>_<random as 16 hex digits>`.
pub fn identity(node: &str, random: [u8; 8]) -> String {
    format!("{node}_{:016x}", u64::from_be_bytes(random))
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// Write the Lease (with its resourceVersion) as held by us: a renewal, or a takeover of
    /// a released or expired Lease.
    Write,
    /// Someone else holds it: look again at this time.
    WaitUntil(Instant),
}

/// One replica's view of the election.
#[derive(Debug, Clone)]
pub struct Elector {
    me: String,
    duration: Duration,
    /// The Lease as last seen, and when it last changed (by our clock).
    seen: Option<(Seen, Instant)>,
    /// We lead until then.
    leading_until: Option<Instant>,
}

impl Elector {
    /// A replica called `me` using leases of `duration`.
    pub fn new(me: impl Into<String>, duration: Duration) -> Self {
        Self {
            me: me.into(),
            duration,
            seen: None,
            leading_until: None,
        }
    }

    /// Our identity.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// How often the holder renews, and a standby looks.
    pub fn retry_period(&self) -> Duration {
        self.duration / 5
    }

    /// How long after the start of a successful write we may act as leader.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// Decides what to do, given the Lease as just read (`None`: there is none).
    pub fn decide(&mut self, lease: Option<Seen>, now: Instant) -> Step {
        let Some(lease) = lease else {
            self.seen = None;
            return Step::Create;
        };
        if lease.holder == self.me || lease.holder.is_empty() {
            self.seen = Some((lease, now));
            return Step::Write;
        }
        // Someone else's: it is not ours any more, whatever we thought.
        self.leading_until = None;
        let since = match &self.seen {
            Some((old, since)) if *old == lease => *since,
            _ => now,
        };
        self.seen = Some((lease, since));
        // The holder's duration, not ours.
        let expiry = since
            + self
                .seen
                .as_ref()
                .map_or(self.duration, |(l, _)| l.duration);
        if now >= expiry {
            Step::Write
        } else {
            Step::WaitUntil(expiry)
        }
    }

    /// A create or write that began at `started` succeeded: we lead for the renew deadline.
    pub fn written(&mut self, started: Instant) {
        self.leading_until = Some(started + self.renew_deadline());
    }

    /// A write failed (conflict: someone else wrote first). Leadership runs out at its
    /// deadline unless a later write succeeds.
    pub fn failed(&mut self) {
        self.seen = None;
    }

    /// Released on shutdown.
    pub fn released(&mut self) {
        self.leading_until = None;
    }

    /// Until when we lead, if we do at `now`.
    pub fn leading(&self, now: Instant) -> Option<Instant> {
        self.leading_until.filter(|t| *t > now)
    }
}

#[cfg(test)]
mod tests;
