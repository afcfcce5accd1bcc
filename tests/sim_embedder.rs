//! The simulator on a service that is not the bundled kv: the example's `Counters` passes
//! every fault, a service that is not deterministic is caught, and a service's own model
//! of results (`SimService::check_result`) is enforced.

#[allow(dead_code)] // Its `main` is the example's.
#[path = "../examples/simulate_counter.rs"]
mod counter;

use counter::Counters;
use std::sync::atomic::{AtomicU64, Ordering};
use vsr::bytes::Bytes;
use vsr::service::{Snapshot, SnapshotError, StateMachine};
use vsr::sim::{run_seed_of, Prng, RunOptions, SimService, WorkloadShape};

#[test]
fn an_embedders_deterministic_service_passes_every_fault() {
    for seed in 0..60 {
        let summary = run_seed_of::<Counters>(seed, RunOptions::default())
            .unwrap_or_else(|violation| panic!("{violation}"));
        assert!(
            summary.replies_checked > 0 || summary.committed == 0,
            "seed {seed}"
        );
    }
}

/// Counters whose replicas disagree: each instance adds its own instance number's parity
/// to every tenth operation (as a service reading a clock or a random number would).
#[derive(Debug, PartialEq, Eq)]
struct Drifting {
    inner: Counters,
    instance: u64,
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

impl StateMachine for Drifting {
    fn apply(&mut self, op: u64, timestamp: u64, operation: &Bytes) -> Bytes {
        let result = self.inner.apply(op, timestamp, operation);
        if op.is_multiple_of(10) && self.instance % 2 == 1 {
            return self.inner.apply(op, timestamp, operation);
        }
        result
    }
    fn query(&self, query: &Bytes) -> Bytes {
        self.inner.query(query)
    }
    fn snapshot(&mut self) -> Snapshot {
        self.inner.snapshot()
    }
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        self.inner.restore(snapshot)
    }
}

impl SimService for Drifting {
    fn fresh() -> Drifting {
        Drifting {
            inner: Counters::fresh(),
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
        }
    }
    fn random_operation(shape: &WorkloadShape, prng: &mut Prng) -> Bytes {
        Counters::random_operation(shape, prng)
    }
}

#[test]
fn a_service_that_is_not_deterministic_is_caught() {
    let caught =
        (0..20).find_map(|seed| run_seed_of::<Drifting>(seed, RunOptions::default()).err());
    let violation = caught.expect("some seed catches replicas that disagree");
    let check = violation.failure.check;
    assert!(
        ["linearizability", "exactly_once", "checkpoint", "agreement"].contains(&check),
        "{violation}"
    );
}

/// Counters whose own model says no counter may pass 50.
#[derive(Debug, PartialEq, Eq, Default)]
struct Capped(Counters);

impl StateMachine for Capped {
    fn apply(&mut self, op: u64, timestamp: u64, operation: &Bytes) -> Bytes {
        self.0.apply(op, timestamp, operation)
    }
    fn query(&self, query: &Bytes) -> Bytes {
        self.0.query(query)
    }
    fn snapshot(&mut self) -> Snapshot {
        self.0.snapshot()
    }
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        self.0.restore(snapshot)
    }
}

impl SimService for Capped {
    fn fresh() -> Capped {
        Capped::default()
    }
    fn random_operation(shape: &WorkloadShape, prng: &mut Prng) -> Bytes {
        Counters::random_operation(shape, prng)
    }
    fn check_result(&self, _operation: &Bytes, result: &Bytes) -> Result<(), String> {
        let value = u64::from_le_bytes(result[..].try_into().map_err(|_| "not a u64")?);
        match value <= 50 {
            true => Ok(()),
            false => Err(format!("a counter reached {value}")),
        }
    }
}

#[test]
fn the_embedders_own_model_of_results_is_enforced() {
    let violation = run_seed_of::<Capped>(3, RunOptions::default()).expect_err("counters pass 50");
    assert_eq!(violation.failure.check, "model", "{violation}");
    assert!(
        violation.failure.details.contains("a counter reached"),
        "{violation}"
    );
}
