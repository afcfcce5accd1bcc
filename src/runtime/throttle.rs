//! Log throttling: a configuration mismatch with a peer is one clear line per peer per
//! minute, not one per reconnect attempt.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How often one key may log.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Keys remembered at most (a flood of distinct peers cannot grow the map without bound:
/// once it is full, new keys are not logged until old ones expire).
const KEYS_MAX: usize = 1024;

/// Remembers when each key last logged.
#[derive(Debug)]
pub struct LogThrottle<K> {
    last: HashMap<K, Instant>,
    interval: Duration,
}

impl<K: Hash + Eq> LogThrottle<K> {
    /// A throttle letting each key log once per `interval`.
    pub fn new(interval: Duration) -> LogThrottle<K> {
        LogThrottle {
            last: HashMap::new(),
            interval,
        }
    }

    /// Whether `key` may log now (and if so, notes that it did).
    pub fn allow(&mut self, key: K, now: Instant) -> bool {
        if let Some(last) = self.last.get(&key) {
            if now.saturating_duration_since(*last) < self.interval {
                return false;
            }
        } else if self.last.len() >= KEYS_MAX {
            let interval = self.interval;
            self.last
                .retain(|_, last| now.saturating_duration_since(*last) < interval);
            if self.last.len() >= KEYS_MAX {
                return false;
            }
        }
        self.last.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_interval_per_key() {
        let start = Instant::now();
        let mut throttle = LogThrottle::new(Duration::from_secs(60));
        assert!(throttle.allow(1, start));
        assert!(!throttle.allow(1, start + Duration::from_secs(59)));
        assert!(throttle.allow(2, start));
        assert!(throttle.allow(1, start + Duration::from_secs(60)));
    }
}
