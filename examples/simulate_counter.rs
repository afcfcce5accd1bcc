//! Running the simulator on a service of your own.
//!
//! `Counters` is a tiny replicated service: named counters that operations add to. To run
//! vsr's simulator on it (every fault on: crashes, partitions, lost and reordered
//! messages, power losses, corrupted disks), implement `SimService` next to its
//! `StateMachine`: how to make a fresh instance, what clients send, and how large its
//! snapshots can get. The simulator then checks, for every seed, that every reply a client
//! accepts equals what a fresh `Counters` computes from the committed log, that every
//! replica's state equals it after the same ops, and that every replica's checkpoints are
//! identical: a service that is not deterministic fails. `check_result` adds this
//! service's own rule (a counter's result is its new value, never below the amount
//! added).
//!
//! ```sh
//! cargo run --release --example simulate_counter -- 200     # seeds 0..200
//! ```
//!
//! In a test, call `vsr::sim::run_seed_of::<YourService>(seed, RunOptions::default())`
//! for a range of seeds and fail on the first `Err` (it carries the seed, the step and
//! the check that broke: replay it with `RunOptions { trace: true, .. }`).

use std::collections::BTreeMap;
use vsr::bytes::Bytes;
use vsr::service::{Page, Snapshot, SnapshotError, StateMachine};
use vsr::sim::{run_seed_of, Prng, RunOptions, SimService, Totals, WorkloadShape};

/// Named counters. Operation: `[counter index u8][amount u8]`; result: the new value
/// (u64, little-endian). A `BTreeMap` so that snapshots come out in one order everywhere.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counters {
    values: BTreeMap<u8, u64>,
}

impl StateMachine for Counters {
    fn apply(&mut self, _op: u64, _timestamp: u64, operation: &Bytes) -> Bytes {
        let [counter, amount] = operation[..] else {
            return Bytes::new(); // Not an operation of ours: no effect, empty result.
        };
        let value = self.values.entry(counter).or_default();
        *value += u64::from(amount);
        Bytes::copy_from_slice(&value.to_le_bytes())
    }

    fn query(&self, query: &Bytes) -> Bytes {
        let value = query.first().and_then(|counter| self.values.get(counter));
        Bytes::copy_from_slice(&value.copied().unwrap_or(0).to_le_bytes())
    }

    fn snapshot(&mut self) -> Snapshot {
        let mut bytes = Vec::with_capacity(self.values.len() * 9);
        for (counter, value) in &self.values {
            bytes.push(*counter);
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        Snapshot::new(vec![Page::new(bytes.into())])
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        let [page] = snapshot.pages() else {
            return Err(SnapshotError("counters take one page"));
        };
        if page.bytes().len() % 9 != 0 {
            return Err(SnapshotError("a counter takes 9 bytes"));
        }
        self.values = page
            .bytes()
            .chunks(9)
            .map(|c| {
                (
                    c[0],
                    u64::from_le_bytes(c[1..].try_into().expect("8 bytes")),
                )
            })
            .collect();
        Ok(())
    }
}

impl SimService for Counters {
    fn fresh() -> Counters {
        Counters::default()
    }

    fn random_operation(shape: &WorkloadShape, prng: &mut Prng) -> Bytes {
        // Few counters, so that concurrent requests collide.
        let counter = prng.below(shape.keys as u64) as u8;
        let amount = prng.between(1, 9) as u8;
        Bytes::copy_from_slice(&[counter, amount])
    }

    fn check_result(&self, operation: &Bytes, result: &Bytes) -> Result<(), String> {
        let [counter, amount] = operation[..] else {
            return Ok(()); // Not ours: `apply` ignored it.
        };
        let value = u64::from_le_bytes(result[..].try_into().map_err(|_| "not a u64")?);
        if Some(&value) != self.values.get(&counter) || value < u64::from(amount) {
            return Err(format!("counter {counter} answered {value}"));
        }
        Ok(())
    }
}

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("a number of seeds"))
        .unwrap_or(100);
    let mut totals = Totals::default();
    for seed in 0..seeds {
        match run_seed_of::<Counters>(seed, RunOptions::default()) {
            Ok(summary) => totals.add(&summary),
            Err(violation) => {
                eprintln!("{violation}");
                std::process::exit(1);
            }
        }
    }
    println!("{totals}");
}
