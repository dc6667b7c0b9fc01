//! The VRRP state machine of one group (RFC 5798 section 6.4, with RFC 9568's clarifications),
//! free of I/O: each input is an event and the current time, each output a list of [`Action`]s
//! for the daemon to carry out, and [`Router::next_deadline`] says when to call
//! [`Router::on_timer`] next.
//!
//! Split brain heals with both arrival orders, as keepalived does with
//! `vrrp_higher_prio_send_advert` and `garp_lower_prio_repeat`:
//! - a master that hears a lower-priority advert (the other side of a split still thinks it is
//!   master) advertises at once (RFC 9568) and announces its addresses again, since hosts may
//!   have followed the other's announcements;
//! - a master that hears a higher-priority advert sends one advert of its own (lower) priority
//!   before it becomes backup, so that the winner hears a lower-priority advert and announces
//!   again even when the winner's advert arrived first. Without it the loser steps down
//!   silently and clients that followed it stay on a MAC that no longer answers.
//!
//! That reaction (advert and announcement) happens at most once per advert interval: a flood
//! of forged lower-priority adverts yields one extra advert and one announcement of each
//! address per interval, not one per packet. The regular adverts and the announcement bursts
//! on becoming master are not limited by it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Priority of the address owner: master at once, never preempted.
pub const OWNER: u8 = 255;
/// Priority a resigning master sends.
pub const RESIGN: u8 = 0;

/// The state machine's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Virtual router id.
    pub vrid: u8,
    /// Our priority, 1–255 (255: we own the addresses).
    pub priority: u8,
    /// Interval between our adverts as master.
    pub advert_interval: Duration,
    /// Take over from a lower-priority master (RFC default: on).
    pub preempt: bool,
    /// After start, how long a lower-priority master is left alone even with `preempt`.
    pub preempt_delay: Duration,
    /// Gratuitous ARP / unsolicited NA bursts on becoming master (at least 1).
    pub garp_count: u32,
    /// Time between those bursts.
    pub garp_interval: Duration,
}

/// Where a group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or stopped.
    Initialize,
    /// Listening for the master.
    Backup,
    /// Holding the addresses and advertising.
    Master,
    /// The interface is down: nothing held, nothing sent.
    Fault,
}

impl State {
    /// The value of the `fedplane_vipd_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Initialize => 0.0,
            Self::Backup => 1.0,
            Self::Master => 2.0,
            Self::Fault => 3.0,
        }
    }

    /// Lower-case name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Initialize => "initialize",
            Self::Backup => "backup",
            Self::Master => "master",
            Self::Fault => "fault",
        }
    }
}

/// What the daemon must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority.
    Advertise(u8),
    /// Add the virtual addresses to the interface.
    AddAddresses,
    /// Remove the virtual addresses we added.
    RemoveAddresses,
    /// Send gratuitous ARP / unsolicited NA for every virtual address.
    Announce,
    /// The state changed.
    Transition(State, State),
}

/// An advert that passed the packet checks and belongs to this group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// The sender's primary address.
    pub src: IpAddr,
    /// The sender's priority.
    pub priority: u8,
    /// The sender's advert interval, bounded by [`crate::receive::max_learnt_interval`].
    pub interval: Duration,
    /// The interval the advert carried when it was above that bound (and `interval` is the
    /// bound): to count and log.
    pub clamped: Option<Duration>,
}

/// The state machine of one VRRP group: one virtual router, as this node runs it.
#[derive(Debug, Clone)]
pub struct Router {
    cfg: RouterConfig,
    /// Our primary address on the interface (the tie-breaker between equal priorities).
    primary: IpAddr,
    state: State,
    started: Instant,
    master_interval: Duration,
    down_at: Option<Instant>,
    advert_at: Option<Instant>,
    garp_left: u32,
    garp_at: Option<Instant>,
    /// When we last reacted to a lower-priority master (advert + announcement).
    reacted_at: Option<Instant>,
    /// As a backup: the router taken for master — the highest-priority advertiser that has
    /// not missed an advert (source, priority, when last heard); `None` until one is heard,
    /// and after it resigns.
    heard_master: Option<(IpAddr, u8, Instant)>,
}

impl Router {
    /// A group in Initialize.
    pub fn new(cfg: RouterConfig, primary: IpAddr, now: Instant) -> Self {
        let master_interval = cfg.advert_interval;
        Self {
            cfg,
            primary,
            state: State::Initialize,
            started: now,
            master_interval,
            down_at: None,
            advert_at: None,
            garp_left: 0,
            garp_at: None,
            reacted_at: None,
            heard_master: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Who is master, as far as this router knows: its own primary address as master, the
    /// source of the adverts it follows as backup (`None` before the first, after a
    /// resignation, in Initialize and Fault).
    pub fn master(&self) -> Option<IpAddr> {
        match self.state {
            State::Master => Some(self.primary),
            State::Backup => self.heard_master.map(|(src, ..)| src),
            State::Initialize | State::Fault => None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// Our primary address: the source of our adverts and the tie-breaker.
    pub fn primary(&self) -> IpAddr {
        self.primary
    }

    /// New settings of the same group (a reload), taken in place: no state change. A master
    /// sends its next advert at the new interval at the latest, and a lowered priority is
    /// advertised at once so a higher backup may preempt; a backup's timers follow the next
    /// advert it hears.
    pub fn reconfigure(&mut self, cfg: RouterConfig, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let lowered = cfg.priority < self.cfg.priority;
        self.cfg = cfg;
        if self.state == State::Master {
            let next = now + self.cfg.advert_interval;
            if lowered {
                out.push(Action::Advertise(self.cfg.priority));
                self.advert_at = Some(next);
            } else {
                self.advert_at = Some(self.advert_at.map_or(next, |t| t.min(next)));
            }
        }
        out
    }

    /// Our primary address (changes only with the interface's addresses).
    pub fn set_primary(&mut self, primary: IpAddr) {
        self.primary = primary;
    }

    /// Skew_Time for the master interval we follow.
    pub fn skew(&self) -> Duration {
        self.master_interval * (256 - u32::from(self.cfg.priority)) / 256
    }

    /// Master_Down_Interval: three missed adverts plus our skew.
    pub fn master_down(&self) -> Duration {
        self.master_interval * 3 + self.skew()
    }

    /// When `on_timer` must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.down_at, self.advert_at, self.garp_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Startup (or the interface came back): the owner becomes master, everyone else backup.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.started = now;
        if self.cfg.priority == OWNER {
            self.become_master(now, &mut out);
        } else {
            self.become_backup(now, self.cfg.advert_interval, &mut out);
        }
        out
    }

    /// Orderly stop: a master resigns with priority 0 and drops the addresses.
    pub fn shutdown(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Master {
            out.push(Action::Advertise(RESIGN));
            out.push(Action::RemoveAddresses);
        }
        self.enter(State::Initialize, &mut out);
        out
    }

    /// The interface went down (give up everything) or came back up (start again). Down
    /// before the start: fault at once, never through master (an owner would be master for an
    /// instant otherwise).
    pub fn on_link(&mut self, up: bool, now: Instant) -> Vec<Action> {
        match (up, self.state) {
            (false, State::Fault) => Vec::new(),
            (false, state) => {
                let mut out = Vec::new();
                if state == State::Master {
                    out.push(Action::RemoveAddresses);
                }
                self.enter(State::Fault, &mut out);
                out
            }
            (true, State::Fault) => self.start(now),
            (true, _) => Vec::new(),
        }
    }

    /// An advert of this group from another router.
    pub fn on_advert(&mut self, heard: Heard, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Initialize | State::Fault => {}
            State::Backup => {
                if heard.priority == RESIGN {
                    self.down_at = Some(now + self.skew());
                    if self.heard_master.is_some_and(|(src, ..)| src == heard.src) {
                        self.heard_master = None;
                    }
                } else {
                    self.follow(heard, now);
                    if !self.may_preempt(now) || heard.priority >= self.cfg.priority {
                        self.master_interval = heard.interval;
                        self.down_at = Some(now + self.master_down());
                    }
                    // Else a lower priority master with preemption on: let the down timer run
                    // out.
                }
            }
            State::Master => {
                if heard.priority == RESIGN {
                    // Answered at once, but at most once per interval: a flood of forged
                    // resignations must not become a flood of adverts.
                    if self.may_react(now) {
                        self.reacted_at = Some(now);
                        out.push(Action::Advertise(self.cfg.priority));
                        self.advert_at = Some(now + self.cfg.advert_interval);
                    }
                } else if heard.priority > self.cfg.priority
                    || (heard.priority == self.cfg.priority && ip_gt(heard.src, self.primary))
                {
                    // Tell the winner we were master too (keepalived's
                    // vrrp_higher_prio_send_advert): it hears a lower priority and announces
                    // again, moving the clients that followed us.
                    out.push(Action::Advertise(self.cfg.priority));
                    out.push(Action::RemoveAddresses);
                    self.become_backup(now, heard.interval, &mut out);
                    self.follow(heard, now);
                } else if self.may_react(now) {
                    // A lower-priority router thinks it is master: tell it at once (RFC 9568),
                    // and announce again, since hosts may have followed its announcements.
                    self.reacted_at = Some(now);
                    out.push(Action::Advertise(self.cfg.priority));
                    out.push(Action::Announce);
                    self.advert_at = Some(now + self.cfg.advert_interval);
                }
                // Else we reacted less than an interval ago: the next advert is due soon.
            }
        }
        out
    }

    /// Timers that are due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Backup if self.down_at.is_some_and(|t| t <= now) => {
                self.become_master(now, &mut out);
            }
            State::Master => {
                if self.advert_at.is_some_and(|t| t <= now) {
                    out.push(Action::Advertise(self.cfg.priority));
                    self.advert_at = Some(now + self.cfg.advert_interval);
                }
                if self.garp_at.is_some_and(|t| t <= now) {
                    out.push(Action::Announce);
                    self.garp_left = self.garp_left.saturating_sub(1);
                    self.garp_at = (self.garp_left > 0).then(|| now + self.cfg.garp_interval);
                }
            }
            _ => {}
        }
        out
    }

    /// Takes the advertiser for master if it outranks the one taken (priority, then address,
    /// as the RFC's election), is that one, or that one missed an advert (silent for 1.5
    /// advert intervals: a dead master's successor is taken at its first advert):
    /// a lower-priority router that also advertises (a split, or a preempted master's last
    /// advert) does not make the master seem to change back and forth. A lower-priority
    /// master we are about to preempt is master until then.
    fn follow(&mut self, heard: Heard, now: Instant) {
        let takes = match self.heard_master {
            None => true,
            Some((src, priority, at)) => {
                src == heard.src
                    || heard.priority > priority
                    || (heard.priority == priority && ip_gt(heard.src, src))
                    || now >= at + self.master_interval * 3 / 2
            }
        };
        if takes {
            self.heard_master = Some((heard.src, heard.priority, now));
        }
    }

    /// Whether an advert heard may make us answer out of turn: at most once per interval.
    fn may_react(&self, now: Instant) -> bool {
        self.reacted_at
            .is_none_or(|t| now >= t + self.cfg.advert_interval)
    }

    fn may_preempt(&self, now: Instant) -> bool {
        self.cfg.preempt && now >= self.started + self.cfg.preempt_delay
    }

    fn become_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::Advertise(self.cfg.priority));
        out.push(Action::AddAddresses);
        out.push(Action::Announce);
        self.enter(State::Master, out);
        self.advert_at = Some(now + self.cfg.advert_interval);
        self.garp_left = self.cfg.garp_count.saturating_sub(1);
        self.garp_at = (self.garp_left > 0).then(|| now + self.cfg.garp_interval);
    }

    fn become_backup(&mut self, now: Instant, master_interval: Duration, out: &mut Vec<Action>) {
        self.enter(State::Backup, out);
        self.master_interval = master_interval;
        self.down_at = Some(now + self.master_down());
    }

    /// Switches state, clearing every timer.
    fn enter(&mut self, to: State, out: &mut Vec<Action>) {
        self.down_at = None;
        self.advert_at = None;
        self.garp_at = None;
        self.garp_left = 0;
        self.reacted_at = None;
        self.heard_master = None;
        if to != self.state {
            out.push(Action::Transition(self.state, to));
            self.state = to;
        }
    }
}

/// Unsigned comparison of primary addresses, as the RFC's tie-break asks.
fn ip_gt(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => u32::from(a) > u32::from(b),
        (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(a) > u128::from(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
