//! Leases in the simulator (paper 6.3.1): each replica's monotonic clock, drifting from
//! simulated real time at a rate drawn per replica, and pauses (a process stopped for a
//! while, as by SIGSTOP: it handles nothing, its clock runs on, what is sent to it waits).
//!
//! Everything here is drawn from a stream of its own (`LEASE_STREAM` in `run`), so that no
//! other draw of a seed moves. Within the configured bound (`Config::clock_drift_ppm`)
//! lease reads must stay linearizable, which the checker verifies
//! (`Checker::on_lease_read`); `LeaseOptions::drift_ppm_max` beyond the bound is the
//! negative test's lever (`tests/sim_leases.rs`): there the checker must find a stale
//! read.

use super::network::Envelope;
use super::prng::Prng;
use crate::protocol::ReplicaIndex;

/// How a seed exercises leases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseOptions {
    /// Feed the replicas monotonic clocks (without them a replica neither grants nor
    /// holds a lease, and lease reads go through the log).
    pub clocks: bool,
    /// The seed of the stream pauses, clocks and lease-read choices are drawn from.
    pub seed: u64,
    /// Each replica's clock runs at a rate within ±this many ppm of real time (drawn per
    /// replica and per restart).
    pub drift_ppm_max: u32,
    /// Chance that a read the workload would make strict is a lease read instead.
    pub lease_read_ppm: u32,
    /// Chance per step (fault phase only) that one live replica pauses.
    pub pause_ppm: u32,
    /// The longest pause, in steps.
    pub pause_steps_max: u64,
    /// Pauses pick the primary of the highest view when there is one (the negative
    /// test: a primary stopped while it holds a lease).
    pub pause_primary: bool,
}

/// Simulated nanoseconds per step (as `cluster::STEP_NS`).
const STEP_NS: i128 = 1_000_000;
const PPM: i128 = 1_000_000;

/// One replica's monotonic clock: `offset + elapsed × (1 + drift)`, where elapsed counts
/// from the step the process started.
#[derive(Clone, Copy, Debug)]
struct MonotonicClock {
    started_at: u64,
    drift_ppm: i64,
    offset_ns: u64,
}

/// The leases' state of a simulated cluster: clocks, pauses, and what waits for a
/// paused replica.
#[derive(Debug)]
pub struct SimLeases {
    options: LeaseOptions,
    prng: Prng,
    clocks: Vec<MonotonicClock>,
    paused_until: Vec<u64>,
    /// Messages that reached a paused replica, in arrival order.
    held: Vec<Envelope>,
    /// Pauses started.
    pub pauses: u64,
}

impl SimLeases {
    /// The leases of a cluster of `replica_count` replicas.
    pub fn new(options: LeaseOptions, replica_count: usize) -> SimLeases {
        let mut leases = SimLeases {
            options,
            prng: Prng::new(options.seed),
            clocks: Vec::new(),
            paused_until: Vec::new(),
            held: Vec::new(),
            pauses: 0,
        };
        for _ in 0..replica_count {
            leases.add_replica(0);
        }
        leases
    }

    /// The options.
    pub fn options(&self) -> &LeaseOptions {
        &self.options
    }

    /// A new replica slot (a cluster that grows), its process started at `now`.
    pub fn add_replica(&mut self, now: u64) {
        let clock = self.draw_clock(now);
        self.clocks.push(clock);
        self.paused_until.push(0);
    }

    fn draw_clock(&mut self, now: u64) -> MonotonicClock {
        let max = self.options.drift_ppm_max as u64;
        MonotonicClock {
            started_at: now,
            drift_ppm: self.prng.between(0, 2 * max) as i64 - max as i64,
            // Any base: a process's clock means nothing to another.
            offset_ns: self.prng.between(1, 1 << 40),
        }
    }

    /// Replica `index` restarted at `now`: a new process, a new clock.
    pub fn on_restart(&mut self, index: ReplicaIndex, now: u64) {
        self.clocks[index as usize] = self.draw_clock(now);
        self.paused_until[index as usize] = 0;
    }

    /// Replica `index`'s clock runs at `drift_ppm` from step `now` on, continuing from
    /// its reading there.
    pub fn set_drift(&mut self, index: ReplicaIndex, drift_ppm: i64, now: u64) {
        assert!(drift_ppm > -1_000_000, "a clock runs forward");
        let reading = self.monotonic_ns(index, now).unwrap_or(1);
        self.clocks[index as usize] = MonotonicClock {
            started_at: now,
            drift_ppm,
            offset_ns: reading,
        };
    }

    /// Replica `index` crashed: a stopped process that died is simply dead.
    pub fn on_crash(&mut self, index: ReplicaIndex) {
        self.paused_until[index as usize] = 0;
    }

    /// Replica `index`'s monotonic clock at step `now`, if the seed feeds clocks.
    pub fn monotonic_ns(&self, index: ReplicaIndex, now: u64) -> Option<u64> {
        if !self.options.clocks {
            return None;
        }
        let clock = self.clocks[index as usize];
        let elapsed = (now.saturating_sub(clock.started_at)) as i128 * STEP_NS;
        let drifted = elapsed + elapsed * clock.drift_ppm as i128 / PPM;
        Some(clock.offset_ns + drifted.max(0) as u64)
    }

    /// Whether replica `index` is paused at `now`.
    pub fn paused(&self, index: ReplicaIndex, now: u64) -> bool {
        self.paused_until
            .get(index as usize)
            .is_some_and(|&until| now < until)
    }

    /// Keeps `envelope` for a paused replica.
    pub fn hold(&mut self, envelope: Envelope) {
        self.held.push(envelope);
    }

    /// The held messages whose replica is no longer paused, in arrival order.
    pub fn release(
        &mut self,
        now: u64,
        is_for: impl Fn(&Envelope) -> ReplicaIndex,
    ) -> Vec<Envelope> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let (released, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|envelope| !self.paused(is_for(envelope), now));
        self.held = held;
        released
    }

    /// At the seed's rate, pauses one of `live` (or `primary`, when pauses pick it) at
    /// `now`; returns the replica paused and until when.
    pub fn maybe_pause(
        &mut self,
        now: u64,
        live: &[ReplicaIndex],
        primary: Option<ReplicaIndex>,
    ) -> Option<(ReplicaIndex, u64)> {
        if self.options.pause_ppm == 0
            || live.is_empty()
            || !self.prng.chance(self.options.pause_ppm)
        {
            return None;
        }
        let index = match primary.filter(|_| self.options.pause_primary) {
            Some(primary) => primary,
            None => *self.prng.pick(live),
        };
        if self.paused(index, now) {
            return None;
        }
        let until = now + self.prng.between(1, self.options.pause_steps_max.max(1));
        self.paused_until[index as usize] = until;
        self.pauses += 1;
        Some((index, until))
    }

    /// Pauses replica `index` until step `until`.
    pub fn pause(&mut self, index: ReplicaIndex, until: u64) {
        self.paused_until[index as usize] = until;
        self.pauses += 1;
    }

    /// Whether a read the workload would make strict goes as a lease read.
    pub fn lease_read(&mut self) -> bool {
        self.options.lease_read_ppm > 0 && self.prng.chance(self.options.lease_read_ppm)
    }
}
