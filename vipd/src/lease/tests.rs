use super::*;

const D: Duration = Duration::from_secs(15);

fn lease(holder: &str, version: &str) -> Option<Seen> {
    Some(Seen {
        holder: holder.into(),
        version: version.into(),
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
