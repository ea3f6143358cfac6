//! Limits on what one client may do: a token bucket for its message rate.

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, holding at most one second's worth
/// (and at least one), so a burst up to the rate passes and a steady flood
/// is held to it.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilled at `rate` tokens a second; a rate of 0 never runs dry.
    pub fn new(rate: f64, now: Instant) -> Self {
        TokenBucket { rate, tokens: rate.max(1.0), last: now }
    }

    /// Takes a token if there is one at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate.max(1.0));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next token, for telling a client when to retry.
    pub fn wait(&self) -> Duration {
        if self.rate <= 0.0 || self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_rate_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, start);
        assert_eq!((0..15).filter(|_| bucket.take(start)).count(), 10);
        assert!(bucket.wait() > Duration::ZERO);
        // A tenth of a second later, one more token; a second later, ten (not more).
        assert!(bucket.take(start + Duration::from_millis(100)));
        assert!(!bucket.take(start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(5);
        assert_eq!((0..15).filter(|_| bucket.take(later)).count(), 10);
    }

    #[test]
    fn rate_zero_is_unlimited_and_fractions_work() {
        let start = Instant::now();
        let mut unlimited = TokenBucket::new(0.0, start);
        assert!((0..10_000).all(|_| unlimited.take(start)));
        let mut slow = TokenBucket::new(0.5, start);
        assert!(slow.take(start));
        assert!(!slow.take(start + Duration::from_secs(1)));
        assert!(slow.take(start + Duration::from_secs(2)));
    }
}
