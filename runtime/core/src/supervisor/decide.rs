//! The supervision decisions, as a pure state machine.
//!
//! The actor shell feeds it child exits with the current time and carries out
//! what it returns; nothing here touches actors, clocks or sockets, so every
//! strategy, intensity and backoff rule is tested deterministically.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Backoff, Intensity, Restart, Strategy};

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It stopped by itself without error.
    Normal,
    /// It panicked, returned an error, was killed, or failed to start.
    Abnormal(String),
}

/// What the supervisor must do after a child exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave the child down (temporary child, or transient child that exited normally).
    LeaveDown,
    /// Stop `stop` (reverse start order, the exited child excluded), wait `delay`,
    /// then start `start` in order.
    Restart {
        /// Running siblings to stop, last-started first.
        stop: Vec<usize>,
        /// Children to start again, in start order.
        start: Vec<usize>,
        /// Backoff before starting.
        delay: Duration,
    },
    /// Restart intensity exceeded: stop everything and fail upwards.
    Escalate {
        /// Restarts counted inside the window, this one included.
        restarts: usize,
        /// The window.
        within: Duration,
    },
}

/// Restart intensity bookkeeping and strategy rules for one supervisor.
#[derive(Debug)]
pub struct Decider {
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    history: VecDeque<Instant>,
    rng: StdRng,
}

impl Decider {
    /// A decider; `seed` drives the backoff jitter (fixed in tests, random in production).
    pub fn new(strategy: Strategy, intensity: Intensity, backoff: Backoff, seed: u64) -> Self {
        Self {
            strategy,
            intensity,
            backoff,
            history: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The strategy in force.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Length of a child's current streak of quick failures, this exit included:
    /// a child that ran at least `reset_after` starts a fresh streak.
    pub fn streak(&self, previous: u32, uptime: Duration) -> u32 {
        if uptime >= self.backoff.reset_after {
            1
        } else {
            previous.saturating_add(1)
        }
    }

    /// The children the strategy restarts together with `index` (start order).
    /// Temporary siblings are stopped but never restarted.
    pub fn group(&self, index: usize, kinds: &[Restart]) -> (Vec<usize>, Vec<usize>) {
        let members: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..kinds.len()).collect(),
            Strategy::RestForOne => (index..kinds.len()).collect(),
        };
        let stop = members
            .iter()
            .rev()
            .copied()
            .filter(|&j| j != index)
            .collect();
        let start = members
            .into_iter()
            .filter(|&j| j == index || kinds[j] != Restart::Temporary)
            .collect();
        (stop, start)
    }

    /// Decides what follows the exit of child `index`.
    ///
    /// `kinds` are the restart types of all children in start order, `streak`
    /// comes from [`Decider::streak`].
    pub fn on_exit(
        &mut self,
        index: usize,
        kinds: &[Restart],
        exit: &Exit,
        streak: u32,
        now: Instant,
    ) -> Decision {
        let restart = match (kinds[index], exit) {
            (Restart::Permanent, _) => true,
            (Restart::Transient, Exit::Abnormal(_)) => true,
            (Restart::Transient, Exit::Normal) | (Restart::Temporary, _) => false,
        };
        if !restart {
            return Decision::LeaveDown;
        }
        self.history.push_back(now);
        while let Some(&t) = self.history.front() {
            if now.saturating_duration_since(t) > self.intensity.within {
                self.history.pop_front();
            } else {
                break;
            }
        }
        if self.history.len() > self.intensity.max_restarts as usize {
            return Decision::Escalate {
                restarts: self.history.len(),
                within: self.intensity.within,
            };
        }
        let (stop, start) = self.group(index, kinds);
        Decision::Restart {
            stop,
            start,
            delay: self.delay(streak),
        }
    }

    /// Backoff for the n-th quick failure in a row: the first restart is
    /// immediate (as in OTP), then `initial * 2^(n-2)` capped at `max`, with
    /// ±`jitter` spread so that siblings do not restart in lock step.
    pub fn delay(&mut self, streak: u32) -> Duration {
        if streak <= 1 || self.backoff.initial.is_zero() {
            return Duration::ZERO;
        }
        let exp = (streak - 2).min(30);
        let base = self
            .backoff
            .initial
            .saturating_mul(1u32 << exp)
            .min(self.backoff.max);
        let j = self.backoff.jitter.clamp(0.0, 1.0);
        let factor = if j > 0.0 {
            self.rng.random_range((1.0 - j)..=(1.0 + j))
        } else {
            1.0
        };
        base.mul_f64(factor).min(self.backoff.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Restart = Restart::Permanent;
    const TR: Restart = Restart::Transient;
    const TE: Restart = Restart::Temporary;

    fn decider(strategy: Strategy, max: u32) -> Decider {
        Decider::new(
            strategy,
            Intensity {
                max_restarts: max,
                within: Duration::from_secs(5),
            },
            Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
                jitter: 0.0,
                reset_after: Duration::from_secs(10),
            },
            7,
        )
    }

    fn crash() -> Exit {
        Exit::Abnormal("boom".into())
    }

    #[test]
    fn one_for_one_restarts_only_the_child() {
        let mut d = decider(Strategy::OneForOne, 3);
        let got = d.on_exit(1, &[P, P, P], &crash(), 1, Instant::now());
        assert_eq!(
            got,
            Decision::Restart {
                stop: vec![],
                start: vec![1],
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn one_for_all_restarts_everyone_stopping_in_reverse() {
        let mut d = decider(Strategy::OneForAll, 3);
        let got = d.on_exit(1, &[P, P, P], &crash(), 1, Instant::now());
        assert_eq!(
            got,
            Decision::Restart {
                stop: vec![2, 0],
                start: vec![0, 1, 2],
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn rest_for_one_restarts_later_siblings() {
        let mut d = decider(Strategy::RestForOne, 3);
        let got = d.on_exit(1, &[P, P, P, P], &crash(), 1, Instant::now());
        assert_eq!(
            got,
            Decision::Restart {
                stop: vec![3, 2],
                start: vec![1, 2, 3],
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn temporary_siblings_are_stopped_not_restarted() {
        let mut d = decider(Strategy::OneForAll, 3);
        let got = d.on_exit(0, &[P, TE, P], &crash(), 1, Instant::now());
        assert_eq!(
            got,
            Decision::Restart {
                stop: vec![2, 1],
                start: vec![0, 2],
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn restart_types() {
        let mut d = decider(Strategy::OneForOne, 10);
        let now = Instant::now();
        assert_eq!(
            d.on_exit(0, &[TR], &Exit::Normal, 1, now),
            Decision::LeaveDown
        );
        assert!(matches!(
            d.on_exit(0, &[TR], &crash(), 1, now),
            Decision::Restart { .. }
        ));
        assert_eq!(d.on_exit(0, &[TE], &crash(), 1, now), Decision::LeaveDown);
        assert_eq!(
            d.on_exit(0, &[TE], &Exit::Normal, 1, now),
            Decision::LeaveDown
        );
        assert!(matches!(
            d.on_exit(0, &[P], &Exit::Normal, 1, now),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn intensity_escalates_after_max_restarts_within_window() {
        let mut d = decider(Strategy::OneForOne, 3);
        let t0 = Instant::now();
        for i in 0..3 {
            let got = d.on_exit(0, &[P], &crash(), 1, t0 + Duration::from_millis(i));
            assert!(matches!(got, Decision::Restart { .. }), "restart {i}");
        }
        assert_eq!(
            d.on_exit(0, &[P], &crash(), 1, t0 + Duration::from_millis(10)),
            Decision::Escalate {
                restarts: 4,
                within: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn old_restarts_fall_out_of_the_window() {
        let mut d = decider(Strategy::OneForOne, 2);
        let t0 = Instant::now();
        assert!(matches!(
            d.on_exit(0, &[P], &crash(), 1, t0),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            d.on_exit(0, &[P], &crash(), 1, t0 + Duration::from_secs(1)),
            Decision::Restart { .. }
        ));
        // Six seconds later the first two are older than the 5 s window.
        assert!(matches!(
            d.on_exit(0, &[P], &crash(), 1, t0 + Duration::from_secs(7)),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            d.on_exit(0, &[P], &crash(), 1, t0 + Duration::from_secs(7)),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            d.on_exit(0, &[P], &crash(), 1, t0 + Duration::from_secs(7)),
            Decision::Escalate { .. }
        ));
    }

    #[test]
    fn backoff_is_exponential_capped_and_resets_after_stable_period() {
        let mut d = decider(Strategy::OneForOne, 100);
        let delays: Vec<u64> = (1..=7).map(|s| d.delay(s).as_millis() as u64).collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 800, 1600, 2000]);
        assert_eq!(d.streak(4, Duration::from_secs(1)), 5);
        assert_eq!(d.streak(4, Duration::from_secs(11)), 1);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut d = Decider::new(
            Strategy::OneForOne,
            Intensity::default(),
            Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10),
                jitter: 0.25,
                reset_after: Duration::from_secs(10),
            },
            42,
        );
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..50 {
            let ms = d.delay(3).as_millis() as u64; // base 200 ms
            assert!((150..=250).contains(&ms), "{ms}");
            distinct.insert(ms);
        }
        assert!(distinct.len() > 5, "jitter should spread delays");
    }
}
