use super::*;
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

fn cfg(priority: u8) -> RouterConfig {
    RouterConfig {
        vrid: 51,
        priority,
        advert_interval: 100 * MS,
        preempt: true,
        preempt_delay: Duration::ZERO,
        garp_count: 3,
        garp_interval: 50 * MS,
    }
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, last])
}

fn heard(last: u8, priority: u8) -> Heard {
    Heard {
        src: ip(last),
        priority,
        interval: 100 * MS,
        clamped: None,
    }
}

#[test]
fn timers_follow_the_rfc() {
    let g = Router::new(cfg(100), ip(1), Instant::now());
    // Skew = (256 - 100) * 100 ms / 256 = 60.9 ms; Master_Down = 300 ms + skew.
    assert_eq!(
        g.skew(),
        Duration::from_micros(60_937) + Duration::from_nanos(500)
    );
    assert_eq!(g.master_down(), 300 * MS + g.skew());
}

#[test]
fn backup_takes_over_after_master_down_and_announces() {
    let t0 = Instant::now();
    let mut g = Router::new(cfg(100), ip(1), t0);
    let out = g.start(t0);
    assert_eq!(
        out,
        vec![Action::Transition(State::Initialize, State::Backup)]
    );
    let down = g.next_deadline().expect("down timer");
    assert_eq!(down, t0 + g.master_down());
    assert!(g.on_timer(down - MS).is_empty());
    let out = g.on_timer(down);
    assert_eq!(
        out,
        vec![
            Action::Advertise(100),
            Action::AddAddresses,
            Action::Announce,
            Action::Transition(State::Backup, State::Master),
        ]
    );
    // Adverts every interval, GARP repeated garp_count - 1 more times.
    let mut garps = 0;
    let mut adverts = 0;
    let mut now = down;
    while now < down + 400 * MS {
        now = g.next_deadline().expect("master has timers");
        for a in g.on_timer(now) {
            match a {
                Action::Announce => garps += 1,
                Action::Advertise(100) => adverts += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(garps, 2);
    assert_eq!(adverts, 4);
}

#[test]
fn owner_is_master_at_once() {
    let t0 = Instant::now();
    let mut g = Router::new(cfg(OWNER), ip(1), t0);
    assert!(g.start(t0).contains(&Action::AddAddresses));
    assert_eq!(g.state(), State::Master);
}

#[test]
fn backup_resets_its_timer_on_a_higher_or_equal_master_and_learns_its_interval() {
    let t0 = Instant::now();
    let mut g = Router::new(cfg(100), ip(1), t0);
    g.start(t0);
    let slow = Heard {
        interval: 1000 * MS,
        ..heard(2, 200)
    };
    assert!(g.on_advert(slow, t0 + 50 * MS).is_empty());
    assert_eq!(g.next_deadline(), Some(t0 + 50 * MS + g.master_down()));
    assert_eq!(g.master_down(), 3000 * MS + g.skew());
    assert!(g.skew() > 600 * MS, "skew follows the learnt interval");
}

#[test]
fn preemption_lets_the_down_timer_expire_on_a_lower_master() {
    let t0 = Instant::now();
    let mut g = Router::new(cfg(200), ip(1), t0);
    g.start(t0);
    let deadline = g.next_deadline().expect("timer");
    assert!(g.on_advert(heard(2, 100), t0 + 10 * MS).is_empty());
    assert_eq!(g.next_deadline(), Some(deadline), "lower master ignored");
    assert_eq!(g.on_timer(deadline)[0], Action::Advertise(200));
}

#[test]
fn no_preempt_and_preempt_delay_follow_a_lower_master() {
    let t0 = Instant::now();
    let mut g = Router::new(
        RouterConfig {
            preempt: false,
            ..cfg(200)
        },
        ip(1),
        t0,
    );
    g.start(t0);
    g.on_advert(heard(2, 100), t0 + 10 * MS);
    assert_eq!(g.next_deadline(), Some(t0 + 10 * MS + g.master_down()));

    let mut g = Router::new(
        RouterConfig {
            preempt_delay: 1000 * MS,
            ..cfg(200)
        },
        ip(1),
        t0,
    );
    g.start(t0);
    g.on_advert(heard(2, 100), t0 + 10 * MS);
    assert_eq!(
        g.next_deadline(),
        Some(t0 + 10 * MS + g.master_down()),
        "within the delay"
    );
    // The lower master keeps advertising: until the delay is over each advert holds us back...
    let mut now = t0 + 10 * MS;
    while now < t0 + 1000 * MS {
        now += 100 * MS;
        assert!(g.on_timer(now).is_empty() || now >= t0 + 1000 * MS);
        g.on_advert(heard(2, 100), now);
    }
    assert_eq!(g.state(), State::Backup, "not preempted within the delay");
    // ...after it, they no longer reset the timer, and we take over at the old deadline.
    let deadline = g.next_deadline().expect("timer");
    g.on_advert(heard(2, 100), now + 100 * MS);
    assert_eq!(
        g.next_deadline(),
        Some(deadline),
        "lower adverts ignored after the delay"
    );
    assert!(g.on_timer(deadline).contains(&Action::AddAddresses));
    assert_eq!(g.state(), State::Master);
}

#[test]
fn backup_waits_only_skew_after_a_resignation() {
    let t0 = Instant::now();
    let mut g = Router::new(cfg(100), ip(1), t0);
    g.start(t0);
    g.on_advert(heard(2, RESIGN), t0 + 10 * MS);
    assert_eq!(g.next_deadline(), Some(t0 + 10 * MS + g.skew()));
}

#[test]
fn master_yields_to_higher_priority_and_to_a_greater_address_at_equal_priority() {
    let t0 = Instant::now();
    let mut g = Router::new(cfg(100), ip(5), t0);
    g.start(t0);
    g.on_timer(g.next_deadline().expect("timer"));
    assert_eq!(g.state(), State::Master);
    let mut lower_addr = g.clone();
    let out = lower_addr.on_advert(heard(4, 100), t0 + MS);
    assert_eq!(
        out,
        vec![Action::Advertise(100), Action::Announce],
        "equal priority, smaller address: we win and reclaim the address"
    );
    let out = g.on_advert(heard(6, 100), t0 + MS);
    assert_eq!(
        out,
        vec![
            Action::Advertise(100),
            Action::RemoveAddresses,
            Action::Transition(State::Master, State::Backup)
        ]
    );
    assert_eq!(g.state(), State::Backup);
}

#[test]
fn master_answers_a_resignation_or_a_lower_master_with_an_advert() {
    let t0 = Instant::now();
    let mut g = Router::new(cfg(OWNER), ip(1), t0);
    g.start(t0);
    assert_eq!(
        g.on_advert(heard(2, RESIGN), t0 + MS),
        vec![Action::Advertise(255)]
    );
    // One answer out of turn per interval, whichever advert asked for it.
    assert_eq!(g.on_advert(heard(2, RESIGN), t0 + 2 * MS), vec![]);
    let later = t0 + MS + g.config().advert_interval;
    assert_eq!(
        g.on_advert(heard(2, 100), later),
        vec![Action::Advertise(255), Action::Announce]
    );
}

/// Two masters after a split: `winner` (priority 150, 192.0.2.1) and `loser` (100, .2).
fn split_brain(t0: Instant) -> (Router, Router) {
    let mut winner = Router::new(cfg(150), ip(1), t0);
    let mut loser = Router::new(cfg(100), ip(2), t0);
    for g in [&mut winner, &mut loser] {
        g.start(t0);
        let down = g.next_deadline().expect("down timer");
        g.on_timer(down);
        assert_eq!(g.state(), State::Master);
    }
    (winner, loser)
}

#[test]
fn split_brain_heals_with_a_reannouncement_when_the_loser_hears_the_winner_first() {
    let t0 = Instant::now();
    let (mut winner, mut loser) = split_brain(t0);
    let now = t0 + 2000 * MS;
    // The loser steps down, but first tells the winner it was master too...
    assert_eq!(
        loser.on_advert(heard(1, 150), now),
        vec![
            Action::Advertise(100),
            Action::RemoveAddresses,
            Action::Transition(State::Master, State::Backup)
        ]
    );
    // ...so the winner hears a lower priority and announces again.
    assert_eq!(
        winner.on_advert(heard(2, 100), now + MS),
        vec![Action::Advertise(150), Action::Announce]
    );
    assert_eq!(winner.state(), State::Master);
}

#[test]
fn split_brain_heals_with_a_reannouncement_when_the_winner_hears_the_loser_first() {
    let t0 = Instant::now();
    let (mut winner, mut loser) = split_brain(t0);
    let now = t0 + 2000 * MS;
    assert_eq!(
        winner.on_advert(heard(2, 100), now),
        vec![Action::Advertise(150), Action::Announce]
    );
    let out = loser.on_advert(heard(1, 150), now + MS);
    assert_eq!(out[0], Action::Advertise(100));
    assert_eq!(loser.state(), State::Backup);
    // The loser's parting advert comes within the interval: no second announcement.
    assert!(winner.on_advert(heard(2, 100), now + 2 * MS).is_empty());
}

#[test]
fn a_flood_of_lower_priority_adverts_gets_one_reaction_per_interval() {
    let t0 = Instant::now();
    let mut g = Router::new(cfg(OWNER), ip(1), t0);
    g.start(t0);
    let mut reactions = Vec::new();
    // 400 forged adverts over 400 ms (one per ms), at interval 100 ms.
    for i in 0..400u32 {
        let now = t0 + 10 * MS + i * MS;
        let out = g.on_advert(heard(2, 100), now);
        if out.contains(&Action::Announce) {
            assert_eq!(out, vec![Action::Advertise(255), Action::Announce]);
            reactions.push(now);
        }
    }
    assert_eq!(reactions.len(), 4, "{reactions:?}");
    for w in reactions.windows(2) {
        assert_eq!(w[1] - w[0], 100 * MS);
    }
    // A resignation is still answered at once (it is no reaction to a rival master).
    assert_eq!(
        g.on_advert(heard(2, RESIGN), t0 + 420 * MS),
        vec![Action::Advertise(255)]
    );
}

#[test]
fn shutdown_resigns_and_link_down_gives_up() {
    let t0 = Instant::now();
    let mut g = Router::new(cfg(OWNER), ip(1), t0);
    g.start(t0);
    let out = g.shutdown();
    assert_eq!(
        out,
        vec![
            Action::Advertise(RESIGN),
            Action::RemoveAddresses,
            Action::Transition(State::Master, State::Initialize)
        ]
    );
    assert_eq!(g.next_deadline(), None);

    let mut g = Router::new(cfg(OWNER), ip(1), t0);
    g.start(t0);
    let out = g.on_link(false, t0 + MS);
    assert_eq!(
        out,
        vec![
            Action::RemoveAddresses,
            Action::Transition(State::Master, State::Fault)
        ]
    );
    assert!(
        g.on_advert(heard(2, 100), t0 + MS).is_empty(),
        "fault ignores adverts"
    );
    assert!(g.on_link(true, t0 + 2 * MS).contains(&Action::AddAddresses));
}

/// Routers on one simulated link: every advert reaches every other live router after `delay`.
struct Link {
    groups: Vec<Router>,
    alive: Vec<bool>,
    inbox: Vec<(Instant, usize, Heard)>,
    delay: Duration,
}

impl Link {
    fn new(priorities: &[u8], preempt: bool, t0: Instant) -> Self {
        let groups = priorities
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let c = RouterConfig { preempt, ..cfg(p) };
                Router::new(c, ip(u8::try_from(i + 1).expect("few routers")), t0)
            })
            .collect();
        Self {
            groups,
            alive: vec![false; priorities.len()],
            inbox: Vec::new(),
            delay: MS,
        }
    }

    fn act(&mut self, from: usize, actions: Vec<Action>, now: Instant) {
        for a in actions {
            if let Action::Advertise(priority) = a {
                let h = Heard {
                    src: ip(u8::try_from(from + 1).expect("few")),
                    priority,
                    interval: 100 * MS,
                    clamped: None,
                };
                for to in 0..self.groups.len() {
                    if to != from {
                        self.inbox.push((now + self.delay, to, h));
                    }
                }
            }
        }
    }

    fn start(&mut self, i: usize, now: Instant) {
        self.alive[i] = true;
        let out = self.groups[i].start(now);
        self.act(i, out, now);
    }

    fn kill(&mut self, i: usize) {
        self.alive[i] = false;
        self.groups[i] = Router::new(
            self.groups[i].config().clone(),
            ip(u8::try_from(i + 1).expect("few")),
            Instant::now(),
        );
    }

    fn stop(&mut self, i: usize, now: Instant) {
        let out = self.groups[i].shutdown();
        self.act(i, out, now);
        self.alive[i] = false;
    }

    /// Runs every event up to `until`.
    fn run(&mut self, mut now: Instant, until: Instant) -> Instant {
        loop {
            let timer = (0..self.groups.len())
                .filter(|&i| self.alive[i])
                .filter_map(|i| self.groups[i].next_deadline().map(|t| (t, i)))
                .min();
            let msg = self
                .inbox
                .iter()
                .enumerate()
                .min_by_key(|(_, m)| m.0)
                .map(|(k, m)| (m.0, k));
            let next = match (timer, msg) {
                (Some((t, _)), Some((m, _))) => t.min(m),
                (Some((t, _)), None) => t,
                (None, Some((m, _))) => m,
                (None, None) => return until,
            };
            if next > until {
                return until;
            }
            now = now.max(next);
            if let Some((m, k)) = msg
                && m <= next
            {
                let (_, to, h) = self.inbox.remove(k);
                if self.alive[to] {
                    let out = self.groups[to].on_advert(h, now);
                    self.act(to, out, now);
                }
                continue;
            }
            if let Some((_, i)) = timer {
                let out = self.groups[i].on_timer(now);
                self.act(i, out, now);
            }
        }
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.groups.len())
            .filter(|&i| self.alive[i] && self.groups[i].state() == State::Master)
            .collect()
    }
}

/// The priority the master should have: the highest live one. (Among equals, whoever got there
/// first stays: a backup does not preempt an equal master; the address only breaks ties between
/// two masters.)
fn best(link: &Link) -> Option<u8> {
    (0..link.groups.len())
        .filter(|&i| link.alive[i])
        .map(|i| link.groups[i].config().priority)
        .max()
}

fn master_priority(link: &Link) -> Option<u8> {
    link.masters()
        .first()
        .map(|&i| link.groups[i].config().priority)
}

#[test]
fn crash_failover_happens_within_master_down() {
    let t0 = Instant::now();
    let mut link = Link::new(&[200, 100], true, t0);
    link.start(0, t0);
    link.start(1, t0);
    let now = link.run(t0, t0 + 2000 * MS);
    assert_eq!(link.masters(), vec![0]);
    link.kill(0);
    let down = link.groups[1].master_down();
    let now = link.run(now, now + down + 110 * MS);
    assert_eq!(link.masters(), vec![1]);
    // Graceful: a resigning master hands over within skew.
    link.start(0, now);
    let now = link.run(now, now + 1000 * MS);
    assert_eq!(link.masters(), vec![0], "higher priority preempts");
    link.stop(0, now);
    let skew = link.groups[1].skew();
    link.run(now, now + skew + 2 * MS);
    assert_eq!(link.masters(), vec![1]);
}

proptest! {
    /// Whatever the priorities, start order and crashes, once adverts have settled exactly one
    /// live router is master, and with preemption it has the highest priority.
    #[test]
    fn one_master_in_steady_state(
        priorities in proptest::collection::vec(1u8..=255, 1..5),
        preempt in any::<bool>(),
        starts in proptest::collection::vec(0u64..500, 5),
        kills in proptest::collection::vec(any::<bool>(), 5),
    ) {
        let t0 = Instant::now();
        let mut link = Link::new(&priorities, preempt, t0);
        let n = priorities.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| starts[i]);
        let mut now = t0;
        for &i in &order {
            let at = t0 + Duration::from_millis(starts[i]);
            now = link.run(now, at);
            link.start(i, now);
        }
        now = link.run(now, now + 3000 * MS);
        prop_assert_eq!(link.masters().len(), 1);
        if preempt {
            prop_assert_eq!(master_priority(&link), best(&link));
        }
        for (i, &kill) in kills.iter().enumerate().take(n) {
            if kill && link.alive.iter().filter(|a| **a).count() > 1 {
                link.kill(i);
            }
        }
        now = link.run(now, now + 3000 * MS);
        prop_assert_eq!(link.masters().len(), 1);
        if preempt {
            prop_assert_eq!(master_priority(&link), best(&link));
        }
        let _ = now;
    }
}

#[test]
fn a_group_down_before_its_start_enters_fault_and_starts_when_up() {
    let t0 = Instant::now();
    let mut owner = Router::new(cfg(OWNER), ip(1), t0);
    assert_eq!(
        owner.on_link(false, t0),
        vec![Action::Transition(State::Initialize, State::Fault)],
        "never through master"
    );
    let up = owner.on_link(true, t0);
    assert!(
        up.contains(&Action::Transition(State::Fault, State::Master)),
        "{up:?}"
    );
}

#[test]
fn a_reconfigured_master_stays_master_and_advertises_a_lowered_priority_at_once() {
    let t0 = Instant::now();
    let mut r = Router::new(cfg(150), ip(1), t0);
    r.start(t0);
    let t1 = t0 + r.master_down() + Duration::from_millis(1);
    r.on_timer(t1);
    assert_eq!(r.state(), State::Master);
    let raised = r.reconfigure(cfg(200), t1);
    assert!(raised.is_empty(), "{raised:?}");
    let lowered = r.reconfigure(cfg(90), t1);
    assert_eq!(lowered, vec![Action::Advertise(90)]);
    assert_eq!(r.state(), State::Master);
    let slower = RouterConfig {
        advert_interval: Duration::from_secs(1),
        ..cfg(90)
    };
    r.reconfigure(slower, t1);
    assert!(
        r.next_deadline()
            .is_some_and(|d| d <= t1 + Duration::from_secs(1))
    );
}

#[test]
fn each_router_knows_who_is_master() {
    let t0 = Instant::now();
    let mut g = Router::new(cfg(100), ip(1), t0);
    assert_eq!(g.master(), None, "initialize");
    g.start(t0);
    assert_eq!(g.master(), None, "a backup that heard nobody yet");
    g.on_advert(heard(2, 150), t0 + MS);
    assert_eq!(g.master(), Some(ip(2)), "the master it follows");
    // A lower-priority advertiser (a split, a preempted master's last word) is not taken
    // for master while the master is heard.
    g.on_advert(heard(3, 50), t0 + 2 * MS);
    assert_eq!(g.master(), Some(ip(2)));
    // Another's resignation changes nothing; the master's own does.
    g.on_advert(heard(3, RESIGN), t0 + 3 * MS);
    assert_eq!(g.master(), Some(ip(2)));
    g.on_advert(heard(2, RESIGN), t0 + 4 * MS);
    assert_eq!(g.master(), None, "after the master's resignation");
    // A lower master it is about to preempt is master until then.
    g.on_advert(heard(3, 50), t0 + 5 * MS);
    assert_eq!(g.master(), Some(ip(3)));
    // One that missed an advert gives way to whoever is heard.
    let later = t0 + 5 * MS + 150 * MS;
    g.on_advert(heard(5, 40), later);
    assert_eq!(g.master(), Some(ip(5)));
    let down = g.next_deadline().expect("down timer");
    g.on_timer(down);
    assert_eq!(g.state(), State::Master);
    assert_eq!(g.master(), Some(ip(1)), "itself as master");
    // It yields to a higher priority: that one is master.
    g.on_advert(heard(4, 200), down + MS);
    assert_eq!(g.state(), State::Backup);
    assert_eq!(g.master(), Some(ip(4)));
    g.on_link(false, down + 2 * MS);
    assert_eq!(g.master(), None, "fault");
}
