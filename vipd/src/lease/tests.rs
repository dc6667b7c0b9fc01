use super::*;

const D: Duration = Duration::from_secs(15);

fn lease(holder: &str, version: &str) -> Option<Seen> {
    Some(Seen {
        holder: holder.into(),
        version: version.into(),
        duration: D,
    })
}

#[test]
fn a_missing_or_released_lease_is_taken_and_a_held_one_renewed() {
    let t = Instant::now();
    let mut e = Elector::new("a", D);
    assert_eq!(e.decide(None, t), Step::Create);
    e.written(t);
    assert_eq!(e.leading(t), Some(t + Duration::from_secs(10)));
    assert_eq!(e.decide(lease("a", "2"), t), Step::Write);
    assert_eq!(e.decide(lease("", "3"), t), Step::Write);
    assert_eq!(e.retry_period(), Duration::from_secs(3));
}

#[test]
fn another_holder_is_waited_out_on_our_own_clock_and_each_renewal_restarts_the_wait() {
    let t = Instant::now();
    let s = Duration::from_secs;
    let mut e = Elector::new("b", D);
    assert_eq!(e.decide(lease("a", "1"), t), Step::WaitUntil(t + D));
    assert_eq!(e.decide(lease("a", "1"), t + s(14)), Step::WaitUntil(t + D));
    // Renewed: the wait starts again.
    assert_eq!(
        e.decide(lease("a", "2"), t + s(14)),
        Step::WaitUntil(t + s(14) + D)
    );
    assert_eq!(e.decide(lease("a", "2"), t + s(29)), Step::Write);
    assert_eq!(e.leading(t + s(29)), None);
}

#[test]
fn leadership_ends_at_the_renew_deadline_or_when_another_holder_is_seen() {
    let t = Instant::now();
    let s = Duration::from_secs;
    let mut e = Elector::new("a", D);
    e.written(t);
    e.failed();
    assert!(e.leading(t + s(9)).is_some());
    assert!(e.leading(t + s(10)).is_none(), "past the renew deadline");
    e.written(t + s(10));
    assert!(e.leading(t + s(11)).is_some());
    e.decide(lease("b", "9"), t + s(11));
    assert!(e.leading(t + s(11)).is_none(), "someone else holds it");
    e.written(t + s(12));
    e.released();
    assert!(e.leading(t + s(12)).is_none());
    // The renew deadline is shorter than the time a standby waits.
    assert!(e.renew_deadline() < D);
}

#[test]
fn a_standby_waits_out_the_holders_duration_not_its_own() {
    let t = Instant::now();
    let s = Duration::from_secs;
    let mut e = Elector::new("b", D);
    let long = Seen {
        holder: "a".into(),
        version: "1".into(),
        duration: s(60),
    };
    assert_eq!(e.decide(Some(long.clone()), t), Step::WaitUntil(t + s(60)));
    assert_eq!(e.decide(Some(long), t + s(30)), Step::WaitUntil(t + s(60)));
    let short = Seen {
        holder: "a".into(),
        version: "2".into(),
        duration: s(2),
    };
    assert_eq!(
        e.decide(Some(short.clone()), t + s(31)),
        Step::WaitUntil(t + s(33))
    );
    assert_eq!(e.decide(Some(short), t + s(33)), Step::Write);
}

#[test]
fn a_bogus_lease_duration_is_clamped_and_said() {
    let s = Duration::from_secs;
    assert_eq!(lease_duration(Some(40), D), (s(40), None));
    assert_eq!(lease_duration(Some(1), D), (s(1), None));
    assert_eq!(
        lease_duration(Some(0), D),
        (D, Some(Clamped::Unusable(Some(0))))
    );
    assert_eq!(
        lease_duration(Some(-5), D),
        (D, Some(Clamped::Unusable(Some(-5))))
    );
    assert_eq!(lease_duration(None, D), (D, Some(Clamped::Unusable(None))));
    assert_eq!(
        lease_duration(Some(i32::MAX), D),
        (MAX_LEASE_DURATION, Some(Clamped::TooLong(i32::MAX)))
    );
    assert_eq!(lease_duration(Some(3600), D), (s(3600), None));
}

#[test]
fn identities_carry_the_node_and_differ_per_process() {
    let a = identity("node-1", [0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(a, "node-1_0000000000000001");
    assert_ne!(a, identity("node-1", [0, 0, 0, 0, 0, 0, 0, 2]));
    // A restarted process on the same node does not take the old one's Lease for its own.
    let mut e = Elector::new(identity("node-1", [9; 8]), D);
    let t = Instant::now();
    assert_eq!(e.decide(lease(&a, "7"), t), Step::WaitUntil(t + D));
}
