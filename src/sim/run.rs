//! One random simulator run per seed (TigerBeetle's VOPR, in miniature): everything about
//! the run (cluster size, clients, limits, fault regime) is drawn from the seed, so the
//! seed alone replays it bit for bit.
//!
//! A run has two phases. The fault phase injects random faults at the seed's rates while
//! clients drive a key-value workload. The liveness phase heals everything (restarts
//! crashed replicas, removes partitions, stops drops and duplicates, keeps delays short)
//! and stops new requests; every request still outstanding must then complete within
//! `liveness_steps_max` steps. The safety checkers run after every step of both phases.

use super::checker::{CheckCounts, Failure};
use super::cluster::ReconfigurationCounts;
use super::cluster::{Cluster, ClusterOptions};
use super::faults::{FaultCounts, FaultRates, Regime};
use super::lease::LeaseOptions;
use super::network::NetworkCounts;
use super::prng::Prng;
use super::reads::ReadRates;
use super::reconfigure::{Change, PlannedChange};
use super::service::SimService;
use super::watch::TransferCounts;
use crate::config::Config;
use crate::protocol::{ReplicaIndex, ReplicaSet, Stats, ENTRY_HEADER_BYTES};
use crate::service::Kv;
use std::cell::RefCell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Where the last panic on this thread happened, for the violation report.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that records the panic's location on the
/// panicking thread and then runs the previous hook, so default reporting is unchanged.
fn record_panic_locations() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(location) = info.location() {
                PANIC_LOCATION.with(|slot| *slot.borrow_mut() = Some(location.to_string()));
            }
            previous(info);
        }));
    });
}

/// How long a run lasts.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Steps with random faults and load.
    pub fault_steps: u64,
    /// Steps the healed cluster gets to finish every outstanding request.
    pub liveness_steps_max: u64,
    /// Also require, after the liveness phase, that every replica ends up normal in one
    /// view at one commit within `liveness_steps_max` more steps ("convergence": stronger
    /// than liveness, which asks only that clients are answered).
    pub converge: bool,
    /// Log every step to stderr.
    pub trace: bool,
    /// Let clients sometimes submit operations larger than the replicas accept (they must
    /// be refused with `Rejected` and never ordered). Off by default, so that seeds keep
    /// replaying as they did when they were recorded; `tests/sim_seeds.rs` runs seeds with
    /// it on. (It found a client bug: a refused request number was reused, so a late
    /// refusal of a retried copy answered the next request; `--seed 2657 --oversized`.)
    pub oversized: bool,
    /// Let half the seeds complete writes late (see `ClusterOptions::write_delay_steps_max`).
    /// On by default; off replays seeds as they ran before writes were effects (every
    /// write completing at once).
    pub write_delays: bool,
    /// Let half the seeds run with disks (see `ClusterOptions::disks`): restarts resume
    /// from storage, power losses and corrupted sectors. On by default; off replays seeds
    /// as they ran before (every crash loses everything).
    pub disks: bool,
    /// Let half the seeds reconfigure (paper 7): grow, shrink or replace a member once
    /// or twice during the fault phase (see `sim::reconfigure`). On by default; off
    /// replays seeds as they ran before reconfigurations (the plan is drawn from a
    /// stream of its own, so a seed without one runs exactly as it did).
    pub reconfigurations: bool,
    /// Leases (paper 6.3.1, `sim::lease`): most seeds feed the replicas drifting
    /// monotonic clocks, send some reads as lease reads, and pause replicas now and
    /// then. On by default; off replays seeds as they ran before leases (everything is
    /// drawn from a stream of its own).
    pub leases: bool,
    /// The negative test's lever: the replicas' clocks drift by up to this many ppm,
    /// whatever bound the configuration names, and pauses pick the primary. `None`:
    /// clocks drift within the configured bound.
    pub lease_drift_ppm_override: Option<u32>,
    /// Witnesses (paper 6.1): a quarter of the seeds make one to f of their members
    /// witnesses, and the reconfigurations of every seed draw the next configuration's
    /// (`PlannedChange::witnesses`). On by default; off replays seeds as they ran before
    /// witnesses (drawn from streams of their own).
    pub witnesses: bool,
    /// With `witnesses`: every seed starts with witnesses, not a quarter of them (a
    /// witness-heavy sweep). Off by default.
    pub witnesses_everywhere: bool,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            fault_steps: 4_000,
            liveness_steps_max: 6_000,
            converge: false,
            trace: false,
            oversized: false,
            write_delays: true,
            disks: true,
            reconfigurations: true,
            leases: true,
            lease_drift_ppm_override: None,
            witnesses: true,
            witnesses_everywhere: false,
        }
    }
}

/// A broken check, with everything needed to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The seed that reproduces it.
    pub seed: u64,
    /// The step at which it was seen.
    pub step: u64,
    /// What broke.
    pub failure: Failure,
    /// The cluster's state when it broke.
    pub state: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "VIOLATION seed {} step {}: {}",
            self.seed, self.step, self.failure
        )?;
        writeln!(f, "  state: {}", self.state)?;
        write!(f, "  replay: vsr sim --seed {} --trace", self.seed)
    }
}

impl std::error::Error for Violation {}

/// What one clean run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The seed.
    pub seed: u64,
    /// Replicas in the cluster.
    pub replica_count: u8,
    /// Clients driving it.
    pub client_count: usize,
    /// Sessions the client table holds (below `client_count` means evictions).
    pub clients_max: u32,
    /// The fault regime.
    pub regime: Regime,
    /// Steps run, both phases.
    pub steps: u64,
    /// Steps the liveness phase took.
    pub liveness_steps: u64,
    /// Ops committed (the canonical log's length).
    pub committed: u64,
    /// Replies checked against the model.
    pub replies_checked: u64,
    /// Committed ops the model could not apply because no replica was seen holding an
    /// earlier op (every replica jumped over it through a checkpoint); replies naming
    /// them went unchecked. Should be 0 or close to it.
    pub unchecked_ops: u64,
    /// Sessions the model evicted.
    pub evictions: u64,
    /// The replicas' counters, summed over every incarnation.
    pub stats: Stats,
    /// Faults injected by the simulator.
    pub faults: FaultCounts,
    /// What the network did.
    pub network: NetworkCounts,
    /// How state transfers were split over NewStates.
    pub transfers: TransferCounts,
    /// What the checkers compared.
    pub checks: CheckCounts,
    /// The longest view change after the faults stopped, in steps.
    pub view_change_steps_longest: u64,
    /// The most steps a write took to complete (0: every write completed at once).
    pub write_delay_steps_max: u64,
    /// Messages checked against what their sender's completed writes made durable.
    pub persistence_checked: u64,
    /// Whether replicas kept disks across crashes.
    pub disks: bool,
    /// How many members were witnesses (paper 6.1).
    pub witnesses: usize,
    /// Checkpoints whose marker reached a disk after their batch (their file written in
    /// the background), and of those the ones a crash lost first.
    pub checkpoints_deferred: (u64, u64),
    /// What reconfigurations did.
    pub reconfigurations: ReconfigurationCounts,
}

/// The cluster options a seed stands for, and how many times `RunOptions::fault_steps`
/// its fault phase lasts (1, or 2 on one seed in eight, so that logs grow long).
pub fn options_for_seed(seed: u64, run: &RunOptions) -> (u64, ClusterOptions, u64) {
    options_for_seed_of::<Kv>(seed, run)
}

/// [`options_for_seed`] for replicas of `S` (whose snapshots bound the message size).
pub fn options_for_seed_of<S: SimService>(
    seed: u64,
    run: &RunOptions,
) -> (u64, ClusterOptions, u64) {
    let mut prng = Prng::new(seed);
    // Seven replicas are the slowest to simulate; five are where overlapping recoveries
    // (two down at once) first become possible, so they get the largest share.
    let replica_count = *prng.pick(&[3u8, 3, 5, 5, 7]);
    let client_count = prng.between(2, 6) as usize;
    let clients_max = if prng.chance(250_000) {
        prng.between(1, client_count as u64 - 1) as u32
    } else {
        16
    };
    // At most 100, so that every ordinary operation (a cas carries two values) stays under
    // `request_body_bytes_max` = 256 (`workload::tests`).
    let value_bytes_max = *prng.pick(&[1, 1, 48, 100]);
    let config = sim_config(&mut prng, seed, replica_count, clients_max);
    // From a stream of its own, so that no other draw of the seed changes.
    let (config, leases) = draw_leases(seed, run, config);
    let fault_steps_scale = if prng.chance(125_000) { 2 } else { 1 };
    let disks = disks(seed, run);
    let mut faults = FaultRates::draw(&mut prng);
    faults.network.corrupt_page_ppm =
        corrupt_page_ppm(faults.regime, &mut Prng::new(seed ^ CORRUPT_PAGE_STREAM));
    if disks {
        faults = faults.with_disk_faults(&mut Prng::new(seed ^ DISK_FAULTS_STREAM));
    }
    let options = ClusterOptions {
        config,
        client_count,
        client_tick_steps: 4,
        request_timeout_ticks: 16,
        tick_steps_min: 3,
        tick_steps_max: 6,
        faults,
        keys: prng.between(1, 4) as usize,
        value_bytes_max: value_bytes_max as usize,
        submit_ppm: prng.between(50_000, 500_000) as u32,
        // From a stream of its own, so that no other draw of the seed changes.
        reads: ReadRates::draw(&mut Prng::new(seed ^ READS_STREAM)),
        // Drawn whether used or not, so that the flag changes nothing else in the run.
        oversized_ppm: match prng.chance(250_000) {
            true => prng.between(1_000, 30_000) as u32 * run.oversized as u32,
            false => 0,
        },
        // From a stream of its own, so that no other draw of the seed changes.
        start_recovering: Prng::new(seed ^ START_RECOVERING_STREAM).chance(200_000),
        write_delay_steps_max: write_delay_steps_max(seed, run),
        checkpoint_build_steps_max: checkpoint_build_steps_max(seed),
        disks,
        power_loss_at: power_loss_at(seed, disks),
        reconfigurations: Vec::new(),
        leases,
        trace: run.trace,
    };
    (prng.next_u64(), options, fault_steps_scale)
}

/// Mixed into the seed for the draw of the witnesses.
const WITNESS_STREAM: u64 = 0x3e77_e550_0000_0001;

/// The witnesses of one seed (paper 6.1): none in three seeds of four; else one to f
/// members, anywhere, with disks or without, in seeds that reconfigure too (whose changes
/// draw the next witnesses: `PlannedChange::witnesses`). From a stream of its own: no
/// other draw of the seed changes.
fn draw_witnesses(seed: u64, run: &RunOptions, options: &ClusterOptions) -> ReplicaSet {
    let mut prng = Prng::new(seed ^ WITNESS_STREAM);
    let on = prng.chance(250_000) || run.witnesses_everywhere;
    let count = options.config.replica_count;
    if !(on && run.witnesses) {
        return ReplicaSet::default();
    }
    let f = (count as u64 - 1) / 2;
    let mut witnesses = ReplicaSet::default();
    for _ in 0..prng.between(1, f) {
        let mut index = prng.below(count as u64) as ReplicaIndex;
        while witnesses.contains(index) {
            index = (index + 1) % count;
        }
        witnesses.insert(index);
    }
    witnesses
}

/// Mixed into the seed for the draw of the leases: the configuration's lease, tick and
/// drift bound, and `ClusterOptions::leases` (whose stream also draws the clocks, pauses
/// and lease reads during the run).
const LEASE_STREAM: u64 = 0x1ea5_e000_0000_0001;

/// The replicas' tick, as the lease arithmetic counts it: the fastest a replica of the
/// runner ticks (`tick_steps_min` steps of 1 ms), so that a lease of fewer ticks than the
/// normal timeout runs out before any replica's normal timeout fires.
const SIM_TICK_NS: u64 = 3_000_000;

/// Leases for one seed. Seven seeds in eight feed clocks; of those, one in eight runs
/// with leases off in the configuration (lease reads then always go through the log).
/// The lease lasts from just over a heartbeat to just under the normal timeout; the drift
/// bound is 0, 0.1%, 1% or 5%, and each replica's clock drifts within it (or by the
/// override: the negative test). Pauses: none in a third of the seeds, else up to a few
/// hundred steps at rates from rare to frequent.
fn draw_leases(seed: u64, run: &RunOptions, mut config: Config) -> (Config, LeaseOptions) {
    let mut prng = Prng::new(seed ^ LEASE_STREAM);
    let clocks = prng.chance(875_000) && run.leases;
    let leases_on = prng.chance(875_000);
    let lease_ticks = prng.between(
        config.commit_interval_ticks + 1,
        config.normal_timeout_ticks - 1,
    );
    let drift_bound = *prng.pick(&[0, 1_000, 10_000, 50_000]);
    let lease_read_ppm = *prng.pick(&[300_000, 700_000, 1_000_000]);
    let pause_ppm = *prng.pick(&[0, 0, 300, 2_000, 10_000]);
    let pause_steps_max = *prng.pick(&[20, 100, 300]);
    let stream = prng.next_u64();
    if !clocks {
        return (config, LeaseOptions::default());
    }
    config.tick_ns = SIM_TICK_NS;
    config.clock_drift_ppm = drift_bound;
    config.lease_ticks = if leases_on { lease_ticks } else { 0 };
    config
        .validate()
        .expect("the simulator's lease config is valid");
    let beyond = run.lease_drift_ppm_override;
    let leases = LeaseOptions {
        clocks: true,
        seed: stream,
        drift_ppm_max: beyond.unwrap_or(drift_bound),
        lease_read_ppm,
        pause_ppm,
        pause_steps_max,
        pause_primary: beyond.is_some(),
    };
    (config, leases)
}

/// Mixed into the seed for the draw of `ClusterOptions::reads`.
const READS_STREAM: u64 = 0x7ead_5000_0000_0007;

/// Mixed into the seed for the draw of `ClusterOptions::reconfigurations`.
const RECONFIGURATIONS_STREAM: u64 = 0x5ee0_57a7_0000_0006;

/// Half the seeds reconfigure once or twice (paper 7), from a stream of their own so that
/// a seed without a plan runs exactly as it did before reconfigurations: each change
/// starts at a random step of the fault phase's first nine tenths (once the previous one
/// is done), with a warm-up of its new members of up to 400 steps, or none at all on one
/// change in four (the new members then get the whole state after the epoch starts).
pub fn reconfigurations_for_seed(
    seed: u64,
    run: &RunOptions,
    fault_steps: u64,
) -> Vec<PlannedChange> {
    let mut prng = Prng::new(seed ^ RECONFIGURATIONS_STREAM);
    if !prng.chance(500_000) || !run.reconfigurations {
        return Vec::new();
    }
    let count = if prng.chance(300_000) { 2 } else { 1 };
    let mut at = 0;
    (0..count)
        .map(|_| {
            at = prng.between(at + 1, (fault_steps * 9 / 10).max(at + 1));
            PlannedChange {
                at,
                warm_up_steps: match prng.chance(250_000) {
                    true => 0,
                    false => prng.between(1, 400),
                },
                change: *prng.pick(&[Change::Grow, Change::Shrink, Change::Replace]),
                pick: prng.next_u64(),
                witness_pick: None,
            }
        })
        .map(|planned| PlannedChange {
            // Derived, not drawn: the stream's other draws stay as they were.
            witness_pick: run
                .witnesses
                .then(|| planned.pick.rotate_left(29) ^ WITNESS_STREAM),
            ..planned
        })
        .collect()
}

/// Mixed into the seed for the draw of `ClusterOptions::start_recovering`.
const START_RECOVERING_STREAM: u64 = 0x5ee0_57a7_0000_0001;

/// Mixed into the seed for the draw of `ClusterOptions::write_delay_steps_max`.
const WRITE_DELAY_STREAM: u64 = 0x5ee0_57a7_0000_0002;

/// Mixed into the seed for the draw of `ClusterOptions::disks`.
const DISKS_STREAM: u64 = 0x5ee0_57a7_0000_0003;

/// Mixed into the seed for the draw of the disk faults' rates.
const DISK_FAULTS_STREAM: u64 = 0x5ee0_57a7_0000_0004;
/// Mixed into the seed for the draw of the checkpoint transfer's window, request size and
/// serving budget (a stream of its own, so that the draws made before it existed stay as
/// they were).
const CHECKPOINT_TRANSFER_STREAM: u64 = 0x5ee0_57a7_0000_0006;
/// Mixed into the seed for the draw of `ClusterOptions::checkpoint_build_steps_max`.
const CHECKPOINT_BUILD_STREAM: u64 = 0x5ee0_57a7_0000_0009;
/// Mixed into the seed for the draw of `NetworkFaults::corrupt_page_ppm`.
const CORRUPT_PAGE_STREAM: u64 = 0x5ee0_57a7_0000_0007;

/// How often a served checkpoint page arrives corrupted: never in a calm run, up to one
/// in ten in the others.
fn corrupt_page_ppm(regime: Regime, prng: &mut Prng) -> u32 {
    match regime {
        Regime::Calm => 0,
        _ => prng.between(0, 100_000) as u32,
    }
}

/// Mixed into the seed for the draw of `ClusterOptions::power_loss_at`.
const POWER_LOSS_AT_STREAM: u64 = 0x5ee0_57a7_0000_0005;

/// Half the seeds with disks whose replicas start recovering lose power once within
/// their first 80 steps, while the new cluster may still be starting (from a stream of
/// its own: no other draw of the seed changes).
fn power_loss_at(seed: u64, disks: bool) -> Option<u64> {
    let start_recovering = Prng::new(seed ^ START_RECOVERING_STREAM).chance(200_000);
    let mut prng = Prng::new(seed ^ POWER_LOSS_AT_STREAM);
    (disks && start_recovering && prng.chance(500_000)).then(|| prng.between(1, 80))
}

/// Half the seeds run with disks, from a stream of their own so that turning them off
/// (`RunOptions::disks`) changes nothing else.
fn disks(seed: u64, run: &RunOptions) -> bool {
    Prng::new(seed ^ DISKS_STREAM).chance(500_000) && run.disks
}

/// Half the seeds complete writes late (up to 1-12 steps, a few replica ticks), so that
/// messages waiting for a write leave after others sent later; the other half complete
/// them at once, as a replica keeping its state in memory does. From a stream of its own,
/// so that turning the delays off (`RunOptions::write_delays`) changes nothing else.
fn write_delay_steps_max(seed: u64, run: &RunOptions) -> u64 {
    let mut prng = Prng::new(seed ^ WRITE_DELAY_STREAM);
    match prng.chance(500_000) && run.write_delays {
        true => prng.between(1, 12),
        false => 0,
    }
}

/// A third of the seeds build checkpoints at the next step; the others up to 30-3000
/// steps later (a few ticks to a few hundred), so that replicas serve, send and fetch
/// state while a checkpoint is built, and skip checkpoints while ops commit faster than
/// they are built. From a stream of its own: no other draw of the seed changes.
fn checkpoint_build_steps_max(seed: u64) -> u64 {
    let mut prng = Prng::new(seed ^ CHECKPOINT_BUILD_STREAM);
    match prng.below(3) {
        0 => 0,
        _ => *prng.pick(&[30, 300, 3000]),
    }
}

/// A small configuration so that pipelines fill, checkpoints happen and timeouts fire
/// within a few thousand steps.
///
/// Half the seeds draw small messages, down to the smallest `Config::validate` accepts
/// for the drawn batch and pipeline (or that holds the largest checkpoint, which travels
/// whole), so that a NewState (capped at half a message) holds a few entries to a few
/// dozen and recoveries, joins and a new primary's fetches take several. Half draw long
/// logs (checkpoints up to 512 ops apart, tails up to 256), so that there is a lot to
/// transfer.
pub fn sim_config(prng: &mut Prng, seed: u64, replica_count: u8, clients_max: u32) -> Config {
    let mut config = Config::new(seed as u128 | 1 << 64, replica_count);
    config.pipeline_prepares_max = prng.between(1, 4) as u32;
    config.batch_entries_max = prng.between(1, 8) as u32;
    config.request_body_bytes_max = 256;
    draw_message_limits(prng, &mut config);
    config.clients_max = clients_max;
    if prng.chance(500_000) {
        config.checkpoint_interval_ops = prng.between(64, 512);
        config.log_tail_ops = prng.between(32, 256);
    } else {
        config.checkpoint_interval_ops = prng.between(32, 128);
        config.log_tail_ops = prng.between(16, 48);
    }
    config.commit_interval_ticks = prng.between(1, 3);
    config.prepare_timeout_ticks = prng.between(3, 8);
    config.normal_timeout_ticks = prng.between(10, 20);
    // Leases are drawn apart (`draw_leases`): none until then.
    config.lease_ticks = 0;
    config.view_change_timeout_ticks = prng.between(8, 20);
    config.recovery_timeout_ticks = prng.between(5, 15);
    // Not drawn, so that every seed replays as before the two timeouts had names of their
    // own (state transfer used the recovery timeout).
    config.state_transfer_timeout_ticks = config.recovery_timeout_ticks;
    draw_checkpoint_transfer(
        &mut Prng::new(seed ^ CHECKPOINT_TRANSFER_STREAM),
        &mut config,
    );
    config.validate().expect("the simulator's config is valid");
    config
}

/// The checkpoint transfer's window, request size and serving budget: from one page per
/// request, one request at a time and a budget of one page per tick (so that transfers
/// take many parts, and answers wait for the budget), to the defaults.
fn draw_checkpoint_transfer(prng: &mut Prng, config: &mut Config) {
    if prng.chance(250_000) {
        return;
    }
    config.checkpoint_fetch_requests_max = prng.between(1, 4) as u32;
    config.checkpoint_request_pages_max = prng.between(1, 4) as u32;
    config.checkpoint_serve_bytes_per_tick = if prng.chance(500_000) {
        prng.between(1, 8192)
    } else {
        64 << 20
    };
}

/// Batch, pipeline and message limits: the old roomy ones (1 MiB messages, so every
/// transfer fits one NewState) or small ones near `Config::validate`'s minimum.
fn draw_message_limits(prng: &mut Prng, config: &mut Config) {
    if prng.chance(500_000) {
        config.batch_bytes_max = 4096;
        config.pipeline_bytes_max = 4 * 4096;
        config.message_bytes_max = 1 << 20;
        return;
    }
    let entry_max = ENTRY_HEADER_BYTES as u64 + config.request_body_bytes_max as u64;
    config.batch_bytes_max = prng.between(entry_max, 1024) as u32;
    let batch = config.batch_bytes_max as u64;
    config.pipeline_bytes_max = prng.between(batch, 4 * batch);
    // `Config::validate`'s floor (a view change's suffix of a whole pipeline fits), or
    // the replicas' own floor for sending a checkpoint (see `on_get_state`), with room
    // for a few entries beside it.
    let validate_floor = (config.pipeline_bytes_max + batch) * 2 + 4096;
    // A checkpoint travels in parts (`fetch_checkpoint`), and a page fits any valid
    // message: checkpoints larger than a message take many.
    let floor = validate_floor;
    let slack = if prng.chance(250_000) {
        0
    } else {
        prng.between(0, 4096)
    };
    config.message_bytes_max = (floor + slack) as u32;
}

/// Runs one seed; a replica panic is caught and reported as a violation.
pub fn run_seed(seed: u64, options: RunOptions) -> Result<RunSummary, Violation> {
    run_seed_of::<Kv>(seed, options)
}

/// Runs one seed with replicas of `S` (an embedder's own service: see
/// [`SimService`]); a replica panic is caught and reported as a violation.
pub fn run_seed_of<S: SimService>(seed: u64, options: RunOptions) -> Result<RunSummary, Violation> {
    let (cluster_seed, mut cluster_options, fault_steps_scale) =
        options_for_seed_of::<S>(seed, &options);
    let options = RunOptions {
        fault_steps: options.fault_steps * fault_steps_scale,
        ..options
    };
    cluster_options.reconfigurations =
        reconfigurations_for_seed(seed, &options, options.fault_steps);
    cluster_options.config.witnesses = draw_witnesses(seed, &options, &cluster_options);
    let regime = cluster_options.faults.regime;
    let client_count = cluster_options.client_count;
    if options.trace {
        eprintln!("seed {seed}: {regime} {cluster_options:?}");
    }
    let mut cluster = Cluster::<S>::with_service(cluster_seed, cluster_options);
    record_panic_locations();
    let result = catch_unwind(AssertUnwindSafe(|| run_phases(&mut cluster, options)));
    let failure = match result {
        Ok(Ok(liveness_steps)) => {
            let stats = cluster.stats();
            let checker = cluster.checker();
            return Ok(RunSummary {
                seed,
                replica_count: cluster.replica_count(),
                client_count,
                clients_max: cluster.config().clients_max,
                regime,
                steps: cluster.now(),
                liveness_steps,
                committed: checker.committed_max(),
                replies_checked: checker.counts.replies_checked,
                unchecked_ops: checker.committed_max() - checker.model().applied(),
                evictions: checker.model().evictions,
                stats,
                faults: cluster.faults,
                network: cluster.network().counts,
                transfers: cluster.transfers(),
                checks: checker.counts,
                view_change_steps_longest: cluster.view_change_steps_longest,
                write_delay_steps_max: cluster.options().write_delay_steps_max,
                persistence_checked: cluster.storage().messages_checked,
                disks: cluster.options().disks,
                witnesses: cluster.options().config.witnesses.len(),
                checkpoints_deferred: (
                    cluster.disks().checkpoints_deferred,
                    cluster.disks().checkpoints_deferred_lost,
                ),
                reconfigurations: cluster.reconfigurations,
            });
        }
        Ok(Err(failure)) => failure,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            let location = PANIC_LOCATION.with(|slot| slot.borrow_mut().take());
            let location = location.unwrap_or_else(|| "an unknown location".to_string());
            Failure::new("replica_panic", format!("{message} (at {location})"))
        }
    };
    Err(Violation {
        seed,
        step: cluster.now(),
        failure,
        state: cluster.describe(),
    })
}

/// The fault phase, then the liveness phase; returns the steps the latter took.
fn run_phases<S: SimService>(
    cluster: &mut Cluster<S>,
    options: RunOptions,
) -> Result<u64, Failure> {
    cluster.inject = true;
    cluster.load = true;
    cluster.register = true;
    for _ in 0..options.fault_steps {
        cluster.step()?;
    }
    cluster.heal_all();
    // A change under way finishes; none starts after the faults.
    cluster.reconfigure = false;
    cluster.load = false;
    cluster.register = false;
    cluster.register_once = true;
    let view_change_steps_max = view_change_steps_max(cluster.config());
    let start = cluster.now();
    while !cluster.clients_idle() || !cluster.reconfigurations_done() {
        if cluster.now() - start >= options.liveness_steps_max {
            return Err(Failure::new(
                "liveness",
                format!(
                    "requests still outstanding {} steps after every fault stopped",
                    options.liveness_steps_max
                ),
            ));
        }
        cluster.step()?;
        cluster.check_view_change_progress(view_change_steps_max)?;
    }
    let liveness_steps = cluster.now() - start;
    if options.converge {
        let start = cluster.now();
        while !cluster.converged() {
            if cluster.now() - start >= options.liveness_steps_max {
                return Err(Failure::new(
                    "convergence",
                    format!(
                        "replicas still apart {} steps after every request completed",
                        options.liveness_steps_max
                    ),
                ));
            }
            cluster.step()?;
            cluster.check_view_change_progress(view_change_steps_max)?;
        }
    }
    cluster.check_final()?;
    Ok(liveness_steps)
}

/// How long a view change may take once every replica is up and the network is calm:
/// four times the timeouts that pace it (a replica notices the failure, the view change
/// times out once per replica while primaries-to-be are still recovering, recoveries
/// retry), at the slowest tick rate (6 steps). At least 1,296 steps; the longest seen
/// over seeds 0..5000 was 615.
fn view_change_steps_max(config: &Config) -> u64 {
    // A reconfiguration may grow the cluster to 7 members.
    let replica_count = config.replica_count.max(7) as u64;
    let ticks = config.normal_timeout_ticks
        + config.view_change_timeout_ticks * replica_count
        + config.recovery_timeout_ticks * 4;
    ticks * 6 * 4
}

/// Sums of many runs, for `vsr sim` and the seeds test.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Seeds run.
    pub seeds: u64,
    /// Steps run.
    pub steps: u64,
    /// Ops committed.
    pub committed: u64,
    /// Replies checked.
    pub replies_checked: u64,
    /// Committed ops the model could not apply (see `RunSummary::unchecked_ops`).
    pub unchecked_ops: u64,
    /// Evictions in the model.
    pub evictions: u64,
    /// The longest liveness phase.
    pub liveness_steps_max: u64,
    /// Replica counters.
    pub stats: Stats,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Network events.
    pub network: NetworkCounts,
    /// State-transfer splits.
    pub transfers: TransferCounts,
    /// What the checkers compared.
    pub checks: CheckCounts,
    /// The longest view change after the faults stopped, in steps.
    pub view_change_steps_longest: u64,
    /// Seeds per cluster size: 3, 5, 7 replicas.
    pub sizes: [u64; 3],
    /// Seeds per regime: calm, lossy, partition-heavy, crash-heavy, chaos.
    pub regimes: [u64; 5],
    /// Seeds whose writes completed late.
    pub write_delay_seeds: u64,
    /// Messages checked against their sender's durable state.
    pub persistence_checked: u64,
    /// Seeds whose replicas kept disks across crashes.
    pub disk_seeds: u64,
    /// Seeds with witnesses, and of those the ones with two or more.
    pub witness_seeds: u64,
    /// See `witness_seeds`.
    pub witness_seeds_several: u64,
    /// Seeds with witnesses whose replicas kept disks across crashes.
    pub witness_seeds_disks: u64,
    /// Seeds in which a checkpoint fetch resumed from pages kept on disk before a crash.
    pub resuming_seeds: u64,
    /// Checkpoints whose marker reached a disk after their batch, and those a crash lost
    /// first (see `RunSummary::checkpoints_deferred`).
    pub checkpoints_deferred: (u64, u64),
    /// Seeds that planned reconfigurations.
    pub reconfiguring_seeds: u64,
    /// What reconfigurations did (`epoch_max`: the sum of each seed's last epoch).
    pub reconfigurations: ReconfigurationCounts,
}

impl Totals {
    /// Adds one run.
    pub fn add(&mut self, run: &RunSummary) {
        self.seeds += 1;
        self.steps += run.steps;
        self.committed += run.committed;
        self.replies_checked += run.replies_checked;
        self.unchecked_ops += run.unchecked_ops;
        self.evictions += run.evictions;
        self.liveness_steps_max = self.liveness_steps_max.max(run.liveness_steps);
        super::cluster::add_stats(&mut self.stats, &run.stats);
        self.faults.partition += run.faults.partition;
        self.faults.heal += run.faults.heal;
        self.faults.flap += run.faults.flap;
        self.faults.crash += run.faults.crash;
        self.faults.restart += run.faults.restart;
        self.faults.crash_primary += run.faults.crash_primary;
        self.faults.crash_pair += run.faults.crash_pair;
        self.faults.crash_in_view_change += run.faults.crash_in_view_change;
        self.faults.crash_after_promise += run.faults.crash_after_promise;
        self.faults.crash_after_epoch_change += run.faults.crash_after_epoch_change;
        self.faults.isolate_primary += run.faults.isolate_primary;
        self.faults.recoveries_overlapping += run.faults.recoveries_overlapping;
        self.faults.pause += run.faults.pause;
        self.faults.power_loss += run.faults.power_loss;
        self.faults.power_loss_first_start += run.faults.power_loss_first_start;
        self.faults.disk_damage += run.faults.disk_damage;
        self.disk_seeds += run.disks as u64;
        self.witness_seeds += (run.witnesses > 0) as u64;
        self.witness_seeds_several += (run.witnesses > 1) as u64;
        self.witness_seeds_disks += (run.witnesses > 0 && run.disks) as u64;
        self.resuming_seeds += (run.stats.checkpoint_pages_resumed > 0) as u64;
        self.checkpoints_deferred.0 += run.checkpoints_deferred.0;
        self.checkpoints_deferred.1 += run.checkpoints_deferred.1;
        let (t, x) = (&mut self.reconfigurations, &run.reconfigurations);
        self.reconfiguring_seeds += (x.planned > 0) as u64;
        t.planned += x.planned;
        t.started += x.started;
        t.committed += x.committed;
        t.grow += x.grow;
        t.shrink += x.shrink;
        t.replace += x.replace;
        t.retired += x.retired;
        t.epoch_max += x.epoch_max;
        t.clients_moved += x.clients_moved;
        self.transfers.add(&run.transfers);
        self.checks.add(&run.checks);
        self.view_change_steps_longest = self
            .view_change_steps_longest
            .max(run.view_change_steps_longest);
        self.sizes[(run.replica_count as usize / 2).clamp(1, 3) - 1] += 1;
        let n = &mut self.network;
        n.sent += run.network.sent;
        n.delivered += run.network.delivered;
        n.dropped += run.network.dropped;
        n.blocked += run.network.blocked;
        n.duplicated += run.network.duplicated;
        n.delayed += run.network.delayed;
        n.overflowed += run.network.overflowed;
        n.replayed += run.network.replayed;
        n.pages_corrupted += run.network.pages_corrupted;
        n.held += run.network.held;
        let regime = match run.regime {
            Regime::Calm => 0,
            Regime::Lossy => 1,
            Regime::PartitionHeavy => 2,
            Regime::CrashHeavy => 3,
            Regime::Chaos => 4,
        };
        self.regimes[regime] += 1;
        self.write_delay_seeds += (run.write_delay_steps_max > 0) as u64;
        self.persistence_checked += run.persistence_checked;
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        let n = &self.network;
        let r = &self.regimes;
        writeln!(
            f,
            "seeds {}  steps {}  committed ops {}  replies checked {}  ops the model could not check {}",
            self.seeds, self.steps, self.committed, self.replies_checked, self.unchecked_ops
        )?;
        writeln!(
            f,
            "regimes: calm {} lossy {} partition-heavy {} crash-heavy {} chaos {}  replicas: 3x{} 5x{} 7x{}",
            r[0], r[1], r[2], r[3], r[4], self.sizes[0], self.sizes[1], self.sizes[2]
        )?;
        writeln!(
            f,
            "view changes {} (views started {})  recoveries {}  state transfers {}  checkpoint transfers {}  checkpoints {} (skipped {}, waited for {}, held back for {})  evictions {}  empty cluster starts {}",
            s.view_changes, s.views_started, s.recoveries, s.state_transfers, s.checkpoint_transfers, s.checkpoints, s.checkpoints_skipped, s.checkpoint_build_waits, s.checkpoint_build_holds, self.evictions, s.empty_cluster_starts
        )?;
        writeln!(
            f,
            "checkpoint fetches {} (completed {}, their install prepared apart {}, moved to a newer checkpoint {})  pages fetched {} ({} bytes) reused {} asked again {} corrupt {} (corrupted on the way {})",
            s.checkpoint_fetches,
            s.checkpoint_fetches_completed,
            s.checkpoint_installs_prepared,
            s.checkpoint_fetches_retargeted,
            s.checkpoint_pages_fetched,
            s.checkpoint_bytes_fetched,
            s.checkpoint_pages_reused,
            s.checkpoint_pages_refetched,
            s.checkpoint_parts_corrupt,
            n.pages_corrupted
        )?;
        writeln!(
            f,
            "fetched pages kept on disk {}  read back at restarts {} (dropped as corrupt {})  resumed {} (in {} seeds)  checkpoint files written in the background {} (lost to a crash before their marker {})",
            s.checkpoint_pages_kept,
            s.checkpoint_pages_read_back,
            s.checkpoint_pages_kept_corrupt,
            s.checkpoint_pages_resumed,
            self.resuming_seeds,
            self.checkpoints_deferred.0,
            self.checkpoints_deferred.1
        )?;
        let t = &self.transfers;
        writeln!(
            f,
            "new states {} (cut by size {})  transfers in several new states {}  views gone back {}",
            t.new_states, t.new_states_cut, t.multi_part, t.views_back
        )?;
        let c = &self.checks;
        writeln!(
            f,
            "checked: commits {} snapshots {} checkpoints {} evicted replies {} rejected replies {} backup reads {}  longest view change after the faults {} steps",
            c.commits_checked, c.snapshots_checked, c.checkpoints_checked, c.evicted_checked, c.rejected_checked, c.reads_checked, self.view_change_steps_longest
        )?;
        writeln!(
            f,
            "leases: reads answered under a lease {} (checked {}) sent through the log {}  view changes held back by a lease {}  pauses {}",
            self.stats.lease_reads_answered,
            c.lease_reads_checked,
            self.stats.lease_reads_fallen_back,
            self.stats.view_changes_held_by_lease,
            self.faults.pause
        )?;
        let x = &self.faults;
        writeln!(
            f,
            "faults: partition {} (primary alone {}, again after a heal {}) heal {} crash {} (primary {}, pairs {}, in a view change or recovery {}, after a DoViewChange {}, after a move to a new epoch {}) restart {} (overlapping recoveries {})",
            x.partition,
            x.isolate_primary,
            x.flap,
            x.heal,
            x.crash,
            x.crash_primary,
            x.crash_pair,
            x.crash_in_view_change,
            x.crash_after_promise,
            x.crash_after_epoch_change,
            x.restart,
            x.recoveries_overlapping
        )?;
        writeln!(
            f,
            "writes: seeds completing them late {}  messages checked against durable state {}",
            self.write_delay_seeds, self.persistence_checked
        )?;
        writeln!(
            f,
            "disks: seeds {}  power losses {} (during a first start {})  restarts on a damaged disk {}",
            self.disk_seeds, x.power_loss, x.power_loss_first_start, x.disk_damage
        )?;
        writeln!(
            f,
            "witnesses: seeds {} (with two or more {}, with disks {})  involved by a primary {} times",
            self.witness_seeds,
            self.witness_seeds_several,
            self.witness_seeds_disks,
            self.stats.witness_involvements
        )?;
        let x = &self.reconfigurations;
        writeln!(
            f,
            "reconfigurations: seeds {}  planned {} started {} (grow {} shrink {} replace {}) committed {}  epochs started {}  replicas retired {}  clients moved by NewEpoch {}",
            self.reconfiguring_seeds, x.planned, x.started, x.grow, x.shrink, x.replace, x.committed, x.epoch_max, x.retired, x.clients_moved
        )?;
        writeln!(
            f,
            "network: drop {} duplicate {} delay {} hold {} replay {} (blocked by partition {}, overflow {})",
            n.dropped, n.duplicated, n.delayed, n.held, n.replayed, n.blocked, n.overflowed
        )?;
        write!(
            f,
            "messages sent {} delivered {}  longest liveness phase {} steps",
            n.sent, n.delivered, self.liveness_steps_max
        )
    }
}
