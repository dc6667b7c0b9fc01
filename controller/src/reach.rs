//! Which clusters count, given when each was last reachable (pure; time is passed in).
//!
//! - A cluster that answers counts with its current objects.
//! - A cluster that stops answering keeps its last records for the grace period
//!   (`--unreachable-grace`), then they are withdrawn: its Services count as unhealthy, so its
//!   addresses leave every name and its zone names fall back to CNAMEs.
//! - Nothing is written until every cluster has been listed once, or the grace period since
//!   start has passed; a cluster still never listed then counts as absent. This keeps a
//!   restarted controller from withdrawing the records of a cluster it has not reached yet.

use std::time::{Duration, Instant};

/// What the controller knows of its connection to one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Not listed yet.
    Pending,
    /// Listed and watching.
    Connected,
    /// Was listed, then lost, at `since`.
    Unreachable {
        /// When the first failure was seen.
        since: Instant,
    },
}

/// How one cluster enters the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contribution {
    /// Not listed yet, still within the grace period: do not write yet.
    Wait,
    /// Its current view.
    Live,
    /// Its last view, kept through the grace period.
    Held,
    /// Its last view with every Service unhealthy (or nothing, if never listed).
    Withdrawn,
}

/// The contribution of a cluster in state `link` at `now`, the controller having started at
/// `started`.
pub fn contribution(link: Link, started: Instant, now: Instant, grace: Duration) -> Contribution {
    match link {
        Link::Connected => Contribution::Live,
        Link::Pending if now.duration_since(started) < grace => Contribution::Wait,
        Link::Unreachable { since } if now.duration_since(since) < grace => Contribution::Held,
        Link::Pending | Link::Unreachable { .. } => Contribution::Withdrawn,
    }
}

/// When the contribution of a cluster in state `link` changes next without news from it.
pub fn next_change(link: Link, started: Instant, now: Instant, grace: Duration) -> Option<Instant> {
    let at = match link {
        Link::Connected => return None,
        Link::Pending => started + grace,
        Link::Unreachable { since } => since + grace,
    };
    (at > now).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(300);

    #[test]
    fn unreachable_cluster_is_held_through_the_grace_period_then_withdrawn() {
        let t0 = Instant::now();
        let lost = t0 + Duration::from_secs(10);
        let link = Link::Unreachable { since: lost };
        let at = |s: u64| contribution(link, t0, lost + Duration::from_secs(s), GRACE);
        assert_eq!(at(0), Contribution::Held);
        assert_eq!(at(299), Contribution::Held);
        assert_eq!(at(300), Contribution::Withdrawn);
        assert_eq!(
            next_change(link, t0, lost + Duration::from_secs(1), GRACE),
            Some(lost + GRACE)
        );
        assert_eq!(next_change(link, t0, lost + GRACE, GRACE), None);
    }

    #[test]
    fn writes_wait_for_a_never_listed_cluster_until_the_grace_period_since_start() {
        let t0 = Instant::now();
        assert_eq!(
            contribution(Link::Pending, t0, t0 + Duration::from_secs(299), GRACE),
            Contribution::Wait
        );
        assert_eq!(
            contribution(Link::Pending, t0, t0 + GRACE, GRACE),
            Contribution::Withdrawn
        );
        assert_eq!(next_change(Link::Pending, t0, t0, GRACE), Some(t0 + GRACE));
    }

    #[test]
    fn connected_cluster_is_live_and_never_times_out() {
        let t0 = Instant::now();
        assert_eq!(
            contribution(Link::Connected, t0, t0 + GRACE * 10, GRACE),
            Contribution::Live
        );
        assert_eq!(next_change(Link::Connected, t0, t0, GRACE), None);
    }
}
