//! The protocol clock: how many ticks the core is owed, from the monotonic clock.
//!
//! The core counts time in ticks (its timeouts are tick counts); the event loop feeds it
//! the ticks that elapsed since the last iteration. Two rules shape that:
//! - the clock starts once every replica link is up, or after [`STARTUP_GRACE`]: a replica
//!   starts by broadcasting Recovery on its first tick (paper 4.3), and when the processes
//!   of a new cluster start together, a Recovery sent before the links exist would be lost
//!   and the replicas would learn of each other only at the retry, a recovery timeout later;
//! - after a stall (the process was stopped, the machine swapped) at most
//!   [`TICKS_CATCH_UP_MAX`] missed ticks are replayed at once: the peers' messages, not a
//!   burst of timeouts, should decide what happens next.

use std::time::{Duration, Instant};

/// One protocol tick.
pub const TICK: Duration = Duration::from_millis(10);
/// The most missed ticks fed to the core at once.
pub const TICKS_CATCH_UP_MAX: u32 = 10;
/// How long the clock waits for the replica links before it starts anyway.
pub const STARTUP_GRACE: Duration = Duration::from_secs(2);

/// Ticks owed to the core.
#[derive(Debug)]
pub struct Clock {
    started_at: Instant,
    /// Until the links are up (or `STARTUP_GRACE` passes) the core gets no ticks.
    ticking: bool,
    /// When the next tick is due.
    next_tick: Instant,
}

impl Clock {
    /// The monotonic reading leases are measured with (`Replica::set_monotonic_ns`):
    /// nanoseconds since this clock was created, plus one (0 means "no reading"). From
    /// `Instant`, which never goes back; a stopped process's clock keeps running, so a
    /// primary resumed after a pause sees its leases as expired as they are.
    pub fn monotonic_ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started_at).as_nanos() as u64 + 1
    }

    /// A clock created at `now`, not ticking yet.
    pub fn new(now: Instant) -> Clock {
        Clock {
            started_at: now,
            ticking: false,
            next_tick: now + TICK,
        }
    }

    /// When the next tick is due (for the poll timeout).
    pub fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// Whether the clock has started.
    pub fn is_ticking(&self) -> bool {
        self.ticking
    }

    /// Starts the clock at `now` if `links_up` or the grace period is over; returns
    /// whether it started now.
    pub fn start_if_ready(&mut self, now: Instant, links_up: bool) -> bool {
        if self.ticking || (!links_up && now < self.started_at + STARTUP_GRACE) {
            return false;
        }
        self.ticking = true;
        self.next_tick = now;
        true
    }

    /// The ticks due at `now` (none before the clock starts), at most
    /// `TICKS_CATCH_UP_MAX`; a longer stall moves the schedule to `now`.
    pub fn take_due(&mut self, now: Instant) -> u32 {
        if !self.ticking {
            return 0;
        }
        let mut ticks = 0;
        while now >= self.next_tick {
            self.next_tick += TICK;
            ticks += 1;
            if ticks == TICKS_CATCH_UP_MAX {
                self.next_tick = now + TICK;
                break;
            }
        }
        assert!(self.next_tick > now, "every due tick is taken");
        ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_waits_for_the_links_or_the_grace_period() {
        let start = Instant::now();
        let mut clock = Clock::new(start);
        assert_eq!(clock.take_due(start + TICK), 0);
        assert!(!clock.start_if_ready(start + TICK, false));
        assert!(clock.start_if_ready(start + TICK, true));
        assert!(!clock.start_if_ready(start + TICK, true), "starts once");
        assert_eq!(clock.take_due(start + TICK), 1, "the first tick is at once");

        let mut late = Clock::new(start);
        assert!(late.start_if_ready(start + STARTUP_GRACE, false));
        assert!(late.is_ticking());
    }

    #[test]
    fn elapsed_ticks_are_owed_and_a_stall_replays_at_most_the_catch_up() {
        let start = Instant::now();
        let mut clock = Clock::new(start);
        clock.start_if_ready(start, true);
        assert_eq!(clock.take_due(start), 1);
        assert_eq!(clock.take_due(start + TICK / 2), 0);
        assert_eq!(clock.take_due(start + TICK * 3), 3);
        assert_eq!(clock.next_tick(), start + TICK * 4);
        let stalled = start + TICK * 100;
        assert_eq!(clock.take_due(stalled), TICKS_CATCH_UP_MAX);
        assert_eq!(clock.next_tick(), stalled + TICK);
    }
}
