//! When an ask's deadline falls, read cheaply.
//!
//! Every ask computes a deadline, and `Instant::now` (a full `clock_gettime`) costs
//! about 30 ns in a VM, a twentieth of a local ask. Long timeouts do not need that
//! precision: they are computed from the kernel's coarse monotonic clock (7 ns, one
//! scheduler tick of resolution), rounded up by two ticks so they never fire early.
//! Short timeouts, where a tick would be a large error, keep the precise clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Timeouts from this long on use the coarse clock: one tick (4 ms at the usual
/// 250 Hz) late is then at most a few percent of the timeout.
const COARSE_FROM: Duration = Duration::from_millis(200);

/// The precise and the coarse clock read together, just after the coarse one ticked.
struct Anchor {
    precise: Instant,
    coarse: coarsetime::Instant,
    /// The coarse clock's resolution plus how far the anchor may be off.
    slack: Duration,
}

/// `None` when the coarse clock did not tick within 50 ms (a tickless CPU): then every
/// deadline uses the precise clock.
fn anchor() -> Option<&'static Anchor> {
    static ANCHOR: OnceLock<Option<Anchor>> = OnceLock::new();
    ANCHOR
        .get_or_init(|| {
            // Wait for a tick: the coarse reading is then fresh, so the offset between
            // the two clocks is known to within `EDGE_WINDOW`.
            let (precise, coarse) = next_tick(coarsetime::Instant::now())?;
            // The tick length, between two edges. A tick is what the coarse reading lags
            // at most; doubling it also covers the anchor's own error.
            let (_, last) = next_tick(coarse)?;
            let (_, next) = next_tick(last)?;
            let tick = Duration::from(next.duration_since(last));
            Some(Anchor {
                precise,
                coarse,
                slack: tick * 2,
            })
        })
        .as_ref()
}

/// How closely an edge of the coarse clock must be bracketed by precise readings to
/// anchor on it.
const EDGE_WINDOW: Duration = Duration::from_micros(50);

/// Spins until the coarse clock moves past `from` (at most 50 ms); returns the precise
/// time read right after and the coarse clock's new reading. An edge seen only after a
/// gap (the thread was preempted across it) is skipped, since its precise time is
/// unknown; the next edge is used instead.
fn next_tick(mut from: coarsetime::Instant) -> Option<(Instant, coarsetime::Instant)> {
    let give_up = Instant::now() + Duration::from_millis(50);
    let mut seen_old = Instant::now();
    loop {
        let coarse = coarsetime::Instant::now();
        let precise = Instant::now();
        if coarse != from {
            if precise.duration_since(seen_old) <= EDGE_WINDOW {
                return Some((precise, coarse));
            }
            from = coarse;
        }
        if precise > give_up {
            return None;
        }
        seen_old = precise;
        std::hint::spin_loop();
    }
}

/// Readies the coarse clock (it waits for a tick, a few ms, once per process).
pub(crate) fn init() {
    anchor();
}

/// The instant `timeout` from now, never earlier; at most a tick or two later for
/// timeouts of [`COARSE_FROM`] and more.
pub(crate) fn deadline(timeout: Duration) -> Instant {
    let coarse = if timeout >= COARSE_FROM {
        anchor()
    } else {
        None
    };
    let Some(a) = coarse else {
        return Instant::now() + timeout;
    };
    let since = coarsetime::Instant::now().duration_since(a.coarse);
    a.precise + Duration::from(since) + a.slack + timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_deadlines_are_never_early_and_at_most_slack_late() {
        init();
        let Some(a) = anchor() else {
            return; // no coarse clock here: every deadline is precise
        };
        let slack = a.slack;
        assert!(slack <= Duration::from_millis(100), "{slack:?}");
        for _ in 0..2_000 {
            let before = Instant::now();
            let d = deadline(Duration::from_secs(1));
            let after = Instant::now();
            // Bounds from both sides of the call, so a preemption in between cannot fail it.
            assert!(
                d >= before + Duration::from_secs(1),
                "early: {d:?} < {before:?} + 1 s"
            );
            assert!(
                d <= after + Duration::from_secs(1) + slack + Duration::from_millis(1),
                "late by {:?}",
                d - after
            );
            std::thread::sleep(Duration::from_micros(300));
        }
    }

    #[test]
    fn short_deadlines_are_precise() {
        let before = Instant::now();
        let d = deadline(Duration::from_millis(5));
        assert!(d >= before + Duration::from_millis(5));
        assert!(d <= Instant::now() + Duration::from_millis(5));
    }
}
