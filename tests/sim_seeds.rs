//! The simulator over a fixed list of random seeds: each seed draws its own cluster size,
//! clients, limits and fault regime, runs a fault phase and a liveness phase, and checks
//! agreement, durability, linearizability, exactly-once and liveness after every step.
//! A failing seed replays with `vsr sim --seed S --trace`.
//!
//! Known protocol violations when this test was written (main at e76ac22); the test fails
//! until they are fixed, and no seed is skipped:
//! - seeds 15, 51, 94, 131, 154, 174, 188: `replica_panic: assertion failed:
//!   self.log.len() as u64 <= self.config.log_entries_max()`. A replica whose commit lags
//!   far behind its op (e.g. seed 154: r1 Normal view 4, op 111, commit 58, checkpoint 0)
//!   becomes primary and holds more entries than the bound allows: the DoViewChange suffix
//!   (ops after the sender's commit) is not bounded by the log's limit.
//! - seed 316: `replica_panic: a new view lost committed ops`. r4 joins view 3 from a
//!   StartView whose suffix starts at op 326 while its log ends at 323; it becomes Normal
//!   with last normal view 3 before fetching ops 324..=325, so in view 4 its short log wins
//!   the DoViewChange choice (largest last normal view) over logs holding committed op 325.
//! - seeds 0, 2, 33, 40, 47, 52, 60, 83, 139, 147, 151, 186, 204, 256, 301, 312, 324, 335,
//!   344, 359, 410, 435: `linearizability: Registered { .. session: 34 } names op 34, but
//!   the request was submitted after a reply naming op 38 had reached a client`. A new
//!   primary whose commit still lags its log (seed 47: r1 primary of view 1 with op 40,
//!   commit 29) answers a client's *new* registration from its stale client table ("a
//!   retried registration that already committed") with the client's previous session 34,
//!   which the committed log had already used (op 36) and evicted. `on_request` must not
//!   answer from the client table until commit has caught up with op after a view change.
//!   Scripted in sim_scenarios: `new_primary_does_not_answer_a_registration_from_a_stale_client_table`.

use vsr::sim::{run_seed, RunOptions, Totals};

/// Seeds `0..SEEDS` run in `cargo test`.
const SEEDS: u64 = 500;

/// About 5 seconds for all seeds at the test profile's opt-level 2 (measured on the
/// development machine: 500 seeds x ~4,300 steps in 5 s), far below the 3-minute budget.
const OPTIONS: RunOptions = RunOptions {
    fault_steps: 4_000,
    liveness_steps_max: 6_000,
    converge: false,
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
    assert_eq!(
        totals.unchecked_ops, 0,
        "every committed op went through the model"
    );
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

/// Architecture invariant: the simulator reads no clock and no ambient randomness, so a
/// seed alone determines a run.
#[test]
fn the_simulator_reads_no_clock_or_ambient_randomness() {
    let forbidden = [
        "Instant",
        "SystemTime",
        "RandomState",
        "rand::",
        "thread_rng",
        "getrandom",
        "std::thread",
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sim");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let code: String = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect();
        for word in forbidden {
            assert!(
                !code.contains(word),
                "{} mentions `{word}`",
                entry.path().display()
            );
        }
        files += 1;
    }
    assert!(files > 0);
}

/// `vsr sim --seed S` replays one seed and prints what it ran; `--seeds N --start S`
/// prints the summary.
#[test]
fn the_command_line_runs_and_summarises_seeds() {
    let vsr = env!("CARGO_BIN_EXE_vsr");
    let one = std::process::Command::new(vsr)
        .args(["sim", "--seed", "3", "--fault-steps", "500"])
        .output()
        .unwrap();
    assert!(one.status.success(), "{one:?}");
    let stderr = String::from_utf8_lossy(&one.stderr);
    assert!(stderr.contains("seed 3: "), "{stderr}");
    let many = std::process::Command::new(vsr)
        .args([
            "sim",
            "--seeds",
            "2",
            "--start",
            "3",
            "--fault-steps",
            "500",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&many.stdout);
    assert!(stdout.contains("seeds 2  steps"), "{stdout}");
    assert!(stdout.contains("wall time"), "{stdout}");
}
