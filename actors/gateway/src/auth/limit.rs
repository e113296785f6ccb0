//! Per-key token buckets: `rate` requests per second with a `burst`.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by caller (key id).
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `rate` per second, at most `burst` at once.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `who`; `Err(seconds)` says when one will be available.
    pub fn check(&self, who: &str, now: Instant) -> Result<(), u64> {
        let mut map = self.buckets.lock();
        // Looked up before inserting: a known caller costs no key copy.
        if let Some(b) = map.get_mut(who) {
            return self.take(b, now);
        }
        let b = map.entry(who.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.take(b, now)
    }

    /// Refills `b` for the time since its last use, then takes a token from it.
    fn take(&self, b: &mut Bucket, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::new(2.0, 3.0);
        let t = Instant::now();
        assert!(l.check("k", t).is_ok());
        assert!(l.check("k", t).is_ok());
        assert!(l.check("k", t).is_ok());
        assert_eq!(l.check("k", t), Err(1));
        assert!(l.check("other", t).is_ok(), "buckets are per key");
        assert!(l.check("k", t + Duration::from_millis(600)).is_ok());
    }
}
