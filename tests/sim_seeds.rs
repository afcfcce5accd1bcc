//! The simulator over a fixed list of random seeds: each seed draws its own cluster size,
//! clients, limits and fault regime, runs a fault phase and a liveness phase, and checks
//! agreement, durability, linearizability, exactly-once and liveness after every step.
//! A failing seed replays with `vsr sim --seed S --trace`.

use vsr::sim::{run_seed, RunOptions, Totals};

/// Seeds `0..SEEDS` run in `cargo test`.
const SEEDS: u64 = 500;

/// Sized so that 500 seeds run well under three minutes on one core.
const OPTIONS: RunOptions = RunOptions {
    fault_steps: 2_500,
    liveness_steps_max: 6_000,
    trace: false,
};

#[test]
fn random_seeds_are_clean() {
    let began = std::time::Instant::now();
    let mut totals = Totals::default();
    let mut violations = Vec::new();
    for seed in 0..SEEDS {
        match run_seed(seed, OPTIONS) {
            Ok(summary) => totals.add(&summary),
            Err(violation) => violations.push(violation),
        }
    }
    println!("{totals}");
    println!("wall time {:.2?}", began.elapsed());
    for violation in &violations {
        println!("{violation}");
    }
    assert!(
        violations.is_empty(),
        "{} of {SEEDS} seeds violated a check (listed above)",
        violations.len()
    );
    assert!(totals.committed > 0);
}

#[test]
fn a_seed_replays_bit_for_bit() {
    let options = RunOptions {
        fault_steps: 1_500,
        ..OPTIONS
    };
    for seed in [3, 1_000_003] {
        let first = format!("{:?}", run_seed(seed, options));
        let second = format!("{:?}", run_seed(seed, options));
        assert_eq!(first, second);
    }
}
