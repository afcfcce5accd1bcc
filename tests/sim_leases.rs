//! Lease reads in the simulator (paper 6.3.1): a primary cut off from its backups while it
//! holds a lease, clients that still believe in it, and the checker that must see any
//! stale answer.
//!
//! The script, per seed: three replicas, clocks fed to them; client 0 reads a key under
//! the lease until the primary answers it from its state; the primary is then cut off
//! from the backups (clients still reach it); client 1 writes the key through the new
//! primary the backups elect; client 2, which still believes in the old primary, reads
//! the key under a lease there. With clocks within the configured drift bound, the old
//! primary must know its lease ran out (it answers `Behind`, the read goes through the
//! log and sees the write). With the old primary's clock slowed far beyond the bound, it
//! believes its lease still holds and answers from its stale state: the linearizability
//! checker must catch that in some seed, or it could not catch a real bug either.

use bytes::Bytes;
use vsr::client::ReadMode;
use vsr::protocol::{ReplicaIndex, Stats};
use vsr::service::kv::{KvOp, KvResult};
use vsr::sim::checker::Failure;
use vsr::sim::cluster::Cluster;
use vsr::sim::lease::LeaseOptions;
use vsr::sim::scenario::{scenario_config, Scenario};
use vsr::Config;

/// Seeds each script runs; the negative one must find a stale read in at least one.
const SEEDS: std::ops::Range<u64> = 0..12;
/// Steps any one wait of the script may take.
const WAIT_STEPS_MAX: u64 = 3_000;

/// Leases that last most of the normal timeout (so that the cut-off primary's belief
/// can outlast the view change when its clock is slow), a 1% drift bound, a 3 ms tick
/// (the fastest replica ticks every 3 steps of 1 ms).
fn lease_config() -> Config {
    let mut config = scenario_config(3);
    config.normal_timeout_ticks = 20;
    config.view_change_timeout_ticks = 20;
    config.lease_ticks = 19;
    config.tick_ns = 3_000_000;
    config.clock_drift_ppm = 10_000;
    config.validate().expect("a valid lease configuration");
    config
}

fn cluster(seed: u64) -> Cluster {
    let mut options = Scenario::manual_options(lease_config(), 3);
    options.leases = LeaseOptions {
        clocks: true,
        seed,
        // Within the bound of `lease_config`.
        drift_ppm_max: 10_000,
        ..LeaseOptions::default()
    };
    Cluster::new(seed, options)
}

/// Steps until `done` holds; `Err` with the checker's failure if one comes first.
fn run_until(
    cluster: &mut Cluster,
    what: &str,
    mut done: impl FnMut(&Cluster) -> bool,
) -> Result<(), Failure> {
    let start = cluster.now();
    while !done(cluster) {
        assert!(
            cluster.now() - start < WAIT_STEPS_MAX,
            "not within {WAIT_STEPS_MAX} steps: {what}\n{}",
            cluster.describe()
        );
        cluster.step()?;
    }
    Ok(())
}

fn idle(client: usize) -> impl FnMut(&Cluster) -> bool {
    move |c| !c.client(client).session.is_busy()
}

fn get(key: &str) -> Bytes {
    KvOp::Get(Bytes::copy_from_slice(key.as_bytes())).encode()
}

fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put(
        Bytes::copy_from_slice(key.as_bytes()),
        Bytes::copy_from_slice(value.as_bytes()),
    )
}

fn stats_of(cluster: &Cluster, index: ReplicaIndex) -> Stats {
    cluster.replica(index).expect("live").stats().clone()
}

/// What the script saw: the old primary's counters, and what client 2's read returned.
struct Outcome {
    old_primary: Stats,
    read: Option<KvResult>,
}

/// The script (module docs); `old_primary_drift_ppm` is the old primary's clock rate
/// once it is cut off. `Err`: the checker's failure.
fn partition_the_leaseholder(seed: u64, old_primary_drift_ppm: i64) -> Result<Outcome, Failure> {
    let mut cluster = cluster(seed);
    for client in 0..3 {
        cluster.register_client(client);
    }
    run_until(&mut cluster, "every client registers", |c| {
        (0..3).all(|i| c.client(i).session.is_registered())
    })?;
    cluster.submit(0, &put("k", "old")).expect("idle");
    run_until(&mut cluster, "the first write", idle(0))?;
    // Lease reads until the primary answers one from its state.
    let primary = cluster.primary().expect("a primary");
    while stats_of(&cluster, primary).lease_reads_answered == 0 {
        cluster.submit_read(0, get("k"), ReadMode::Lease);
        run_until(&mut cluster, "a lease read", idle(0))?;
        assert!(
            cluster.now() < WAIT_STEPS_MAX,
            "the primary never held a lease"
        );
    }
    // Cut off while it holds the lease; its clock slows as the test asks.
    cluster.set_clock_drift(primary, old_primary_drift_ppm);
    cluster.partition(&[primary]);
    cluster.submit(1, &put("k", "new")).expect("idle");
    run_until(&mut cluster, "the write through the new primary", idle(1))?;
    assert_ne!(cluster.primary(), Some(primary), "a new view started");
    // Client 2 still believes in the old primary (it has not heard of the new view).
    assert_eq!(cluster.client(2).session.view(), 0);
    cluster.submit_read(2, get("k"), ReadMode::Lease);
    run_until(&mut cluster, "client 2's lease read", idle(2))?;
    let read = match &cluster.client(2).last_outcome {
        Some(vsr::client::Outcome::Completed { result, .. }) => KvResult::decode(result),
        _ => None,
    };
    cluster.heal();
    Ok(Outcome {
        old_primary: stats_of(&cluster, primary),
        read,
    })
}

/// Within the drift bound, the cut-off primary never answers from its stale state: its
/// lease runs out on its own clock before the backups can have let theirs run out and
/// started a view without it, so client 2's read goes through the log and sees the write.
#[test]
fn a_primary_partitioned_away_while_holding_a_lease_never_answers_a_stale_read() {
    for seed in SEEDS {
        let outcome = partition_the_leaseholder(seed, -10_000)
            .unwrap_or_else(|failure| panic!("seed {seed}: {failure}"));
        let new = KvResult::Value(Bytes::from_static(b"new"));
        assert_eq!(outcome.read, Some(new), "seed {seed}");
        assert!(
            outcome.old_primary.lease_reads_fallen_back >= 1,
            "seed {seed}: the old primary sent client 2's read through the log"
        );
    }
}

/// Beyond the bound (the old primary's clock at a fifth of real time while the bound says
/// 1%), it believes its lease long after the backups' promises ran out: some seed's read
/// must come back stale, and the checker must say so.
#[test]
fn drift_beyond_the_bound_lets_a_stale_read_through_and_the_checker_sees_it() {
    let stale = SEEDS
        .filter(|&seed| match partition_the_leaseholder(seed, -800_000) {
            Err(failure) => {
                assert_eq!(failure.check, "linearizability", "seed {seed}: {failure}");
                assert!(failure.details.contains("stale read"), "{failure}");
                true
            }
            Ok(_) => false,
        })
        .count();
    assert!(stale >= 1, "no seed of {SEEDS:?} found the stale read");
}
