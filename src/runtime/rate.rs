//! A token bucket: how often a connection may ask for something that costs the loop
//! (stats). A burst is allowed; beyond it, a steady rate.

use std::time::{Duration, Instant};

/// Stats requests allowed back to back.
pub const STATS_BURST: u32 = 8;
/// One more stats request allowed per this interval.
pub const STATS_REFILL: Duration = Duration::from_millis(50);

/// Tokens that refill at a fixed interval up to a cap.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: u32,
    burst: u32,
    refill: Duration,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens, one more every `refill`.
    pub fn new(burst: u32, refill: Duration, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            burst,
            refill,
            refilled_at: now,
        }
    }

    /// The stats requests' bucket: a burst of [`STATS_BURST`], then 20 a second.
    pub fn stats(now: Instant) -> TokenBucket {
        TokenBucket::new(STATS_BURST, STATS_REFILL, now)
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let earned = (elapsed.as_nanos() / self.refill.as_nanos().max(1)) as u64;
        if earned > 0 {
            self.tokens = (u64::from(self.tokens) + earned).min(u64::from(self.burst)) as u32;
            self.refilled_at += self.refill * earned.min(u64::from(u32::MAX)) as u32;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, Duration::from_millis(10), start);
        assert!((0..3).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(10)));
        assert!(!bucket.take(start + Duration::from_millis(15)));
        // A long pause refills to the cap, not beyond.
        let later = start + Duration::from_secs(10);
        assert!((0..3).all(|_| bucket.take(later)));
        assert!(!bucket.take(later));
    }
}
