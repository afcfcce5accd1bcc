//! `vsr sim`: runs the deterministic simulator over many seeds, or replays one.
//!
//! `vsr sim --seeds N [--start S]` runs seeds S..S+N (a random S, printed, when not given)
//! and stops at the first violation, printing it with the command that replays it.
//! `vsr sim --seed S [--trace]` replays one seed, with a step-by-step log on stderr.

use std::process::ExitCode;
use std::time::Instant;
use vsr::sim::{run_seed, RunOptions, Totals};

/// Arguments of `vsr sim`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["seeds", "seed"])))]
pub struct Args {
    /// Run this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of `--seeds` (random when not given).
    #[arg(long, requires = "seeds")]
    start: Option<u64>,
    /// Replay one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// With `--seed`: log every delivery, fault and status change to stderr, and the
    /// replicas' own log lines too (`RUST_LOG` filters them; `warn` when unset).
    #[arg(long, requires = "seed")]
    trace: bool,
    /// With `--seeds`: report every violating seed and go on (exits non-zero at the end).
    #[arg(long, requires = "seeds")]
    keep_going: bool,
    /// Also require every replica to end normal, in one view, at one commit.
    #[arg(long)]
    converge: bool,
    /// Let clients sometimes submit operations larger than the replicas accept (see
    /// `RunOptions::oversized`).
    #[arg(long)]
    oversized: bool,
    /// Complete every write at once, as before writes were effects (by default half the
    /// seeds complete them late: see `RunOptions::write_delays`).
    #[arg(long)]
    no_write_delays: bool,
    /// Every crash loses everything, as before replicas had disks (by default half the
    /// seeds keep their disks: see `RunOptions::disks`).
    #[arg(long)]
    no_disks: bool,
    /// The members never change, as before reconfigurations (by default half the seeds
    /// grow, shrink or replace a member once or twice under every fault, paper 7: see
    /// `RunOptions::reconfigurations`).
    #[arg(long)]
    no_reconfigurations: bool,
    /// No leases, as before them: no monotonic clocks, lease reads or pauses (by default
    /// most seeds run them, paper 6.3.1: see `RunOptions::leases`).
    #[arg(long)]
    no_leases: bool,
    /// No witnesses, as before them (by default a quarter of the seeds start with some,
    /// with or without disks, and reconfigurations name new ones, paper 6.1: see
    /// `RunOptions::witnesses`).
    #[arg(long)]
    no_witnesses: bool,
    /// Witnesses in every seed's first configuration, not a quarter of them (a
    /// witness-heavy sweep: see `RunOptions::witnesses_everywhere`).
    #[arg(long, conflicts_with = "no_witnesses")]
    witnesses_everywhere: bool,
    /// Let the replicas' clocks drift by up to this many ppm whatever bound their
    /// configuration names, and pause primaries: the checkers should then find stale
    /// lease reads (see `RunOptions::lease_drift_ppm_override`).
    #[arg(long)]
    lease_drift_ppm: Option<u32>,
    /// Steps of the fault phase of each seed (twice as many on one seed in eight).
    #[arg(long, default_value_t = RunOptions::default().fault_steps)]
    fault_steps: u64,
    /// Steps the healed cluster gets to finish every outstanding request.
    #[arg(long, default_value_t = RunOptions::default().liveness_steps_max)]
    liveness_steps: u64,
}

/// Runs the simulator.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.trace {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .without_time()
            .init();
    }
    let options = RunOptions {
        fault_steps: args.fault_steps,
        liveness_steps_max: args.liveness_steps,
        converge: args.converge,
        trace: args.trace,
        oversized: args.oversized,
        write_delays: !args.no_write_delays,
        disks: !args.no_disks,
        reconfigurations: !args.no_reconfigurations,
        leases: !args.no_leases,
        lease_drift_ppm_override: args.lease_drift_ppm,
        witnesses: !args.no_witnesses,
        witnesses_everywhere: args.witnesses_everywhere,
    };
    let (start, count) = match (args.seed, args.seeds) {
        (Some(seed), _) => (seed, 1),
        (None, Some(count)) => {
            let start = args.start.unwrap_or_else(random_seed);
            eprintln!("seeds {start}..{}", start.wrapping_add(count));
            (start, count)
        }
        (None, None) => unreachable!("clap requires --seed or --seeds"),
    };
    let began = Instant::now();
    let mut totals = Totals::default();
    let mut violations = 0u64;
    for i in 0..count {
        let seed = start.wrapping_add(i);
        match run_seed(seed, options) {
            Ok(summary) => {
                if args.seed.is_some() {
                    eprintln!(
                        "seed {seed}: {} replicas, {} clients (table {}), {} regime, {} steps, {} ops committed, {} reconfigurations planned, {} committed (epoch {})",
                        summary.replica_count,
                        summary.client_count,
                        summary.clients_max,
                        summary.regime,
                        summary.steps,
                        summary.committed,
                        summary.reconfigurations.planned,
                        summary.reconfigurations.committed,
                        summary.reconfigurations.epoch_max
                    );
                }
                totals.add(&summary);
            }
            Err(violation) => {
                println!("{violation}");
                violations += 1;
                if !args.keep_going {
                    println!(
                        "after {} clean seeds ({:.1?})",
                        totals.seeds,
                        began.elapsed()
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    println!("{totals}");
    println!("wall time {:.2?}", began.elapsed());
    if violations > 0 {
        println!("{violations} of {count} seeds violated a check");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// A start seed from the process's hash randomness: the only ambient randomness in the
/// simulator, and it is printed so the run can be repeated.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0x5eed_u64)
}
