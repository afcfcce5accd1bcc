//! Timeouts counted in ticks. The core has no clock: its driver calls `on_tick` at a
//! fixed rate, and each concern has its own named timeout.

/// A timeout that fires once `after` ticks have passed since it was (re)started.
#[derive(Clone, Debug)]
pub struct Timeout {
    /// A name for logs.
    pub name: &'static str,
    after: u64,
    ticks: u64,
    running: bool,
}

impl Timeout {
    /// A stopped timeout of `after` ticks.
    pub fn new(name: &'static str, after: u64) -> Timeout {
        assert!(after > 0, "timeout {name} must be positive");
        Timeout {
            name,
            after,
            ticks: 0,
            running: false,
        }
    }

    /// Starts from zero.
    pub fn start(&mut self) {
        self.ticks = 0;
        self.running = true;
    }

    /// Stops; a stopped timeout never fires.
    pub fn stop(&mut self) {
        self.running = false;
    }

    /// Restarts from zero if running.
    pub fn reset(&mut self) {
        self.ticks = 0;
    }

    /// Advances one tick.
    pub fn tick(&mut self) {
        if self.running {
            self.ticks += 1;
        }
    }

    /// Whether it is running and its time has come.
    pub fn fired(&self) -> bool {
        self.running && self.ticks >= self.after
    }

    /// Whether it is running.
    pub fn running(&self) -> bool {
        self.running
    }

    /// Changes the duration (for backoff); takes effect immediately.
    pub fn set_after(&mut self, after: u64) {
        assert!(after > 0);
        self.after = after;
    }
}
