//! Reconnect backoff: exponential with jitter, reset on success.

use std::time::Duration;

/// Exponential backoff state for redialling one peer.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff that starts at `min` and doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// Records a failure and returns how long to wait before the next attempt.
    ///
    /// `jitter` in `[0, 1)` spreads retries of many nodes (a random draw in
    /// production, fixed in tests): the delay is scaled into `[0.5, 1.0)` of
    /// the exponential value so that it never exceeds `max`.
    pub fn fail(&mut self, jitter: f64) -> Duration {
        let exp = self.min.saturating_mul(1u32 << self.failures.min(20));
        self.failures = self.failures.saturating_add(1);
        let base = exp.min(self.max);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 0.999_999))
    }

    /// Forgets past failures after a successful connection.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<u128> = (0..6).map(|_| b.fail(0.999_999).as_millis()).collect();
        // ~[100, 200, 400, 800, 1000, 1000] (jitter near 1.0)
        assert_eq!(d, vec![99, 199, 399, 799, 999, 999]);
        assert_eq!(b.failures(), 6);
        b.reset();
        assert_eq!(b.fail(0.0), Duration::from_millis(50));
    }
}
