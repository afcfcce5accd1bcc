//! Fault rates, drawn from the seed so that different seeds explore different regimes:
//! calm, lossy, partition-heavy, crash-heavy, or everything at once.

use super::network::NetworkFaults;
use super::prng::Prng;
use std::fmt;

/// The broad character of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// Few faults of any kind.
    Calm,
    /// Many messages lost, doubled and reordered.
    Lossy,
    /// Partitions come and go often.
    PartitionHeavy,
    /// Replicas crash and restart often.
    CrashHeavy,
    /// A bit of everything.
    Chaos,
}

impl fmt::Display for Regime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Regime::Calm => "calm",
            Regime::Lossy => "lossy",
            Regime::PartitionHeavy => "partition-heavy",
            Regime::CrashHeavy => "crash-heavy",
            Regime::Chaos => "chaos",
        };
        f.write_str(name)
    }
}

/// Per-step fault probabilities (parts per million) and the network's rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRates {
    /// The regime the rates were drawn for.
    pub regime: Regime,
    /// Chance per step of cutting a new partition while none is in place.
    pub partition_ppm: u32,
    /// Chance per step of healing the partition in place.
    pub heal_ppm: u32,
    /// Chance per step of crashing a replica (when fewer than f are down).
    pub crash_ppm: u32,
    /// Chance per step, per crashed replica, of restarting it.
    pub restart_ppm: u32,
    /// Chance that a crash, or a partition, picks the current primary instead of a
    /// random replica: view changes, and a deposed primary left normal in its old view
    /// (cut off alone, still answering clients, then healed).
    pub primary_bias_ppm: u32,
    /// Chance that a crash takes a second replica down in the same step (when f allows):
    /// two recoveries at once, possible from five replicas up.
    pub crash_pair_ppm: u32,
    /// Chance per step of a crash while some live replica is changing views or
    /// recovering, on top of `crash_ppm` (with f down: the primary cut off instead).
    pub view_change_crash_ppm: u32,
    /// Chance that a restart brings back every crashed replica in the same step, so their
    /// recoveries overlap.
    pub restart_all_ppm: u32,
    /// Chance that a healed partition comes back, the same links cut, 5 to 100 steps
    /// later (a flapping network).
    pub flap_ppm: u32,
    /// With disks: chance per step that every replica crashes at once (a power loss).
    /// Drawn apart from the others (`disk_faults`), 0 without disks.
    pub power_loss_ppm: u32,
    /// With disks: chance that a restart finds a corrupted sector (when no other replica
    /// is recovering, so that at most f replicas lose memory at once). 0 without disks.
    pub disk_damage_ppm: u32,
    /// The network's rates during the fault phase.
    pub network: NetworkFaults,
}

impl FaultRates {
    /// No faults at all, a calm network.
    pub fn none() -> FaultRates {
        FaultRates {
            regime: Regime::Calm,
            partition_ppm: 0,
            heal_ppm: 0,
            crash_ppm: 0,
            restart_ppm: 0,
            primary_bias_ppm: 0,
            crash_pair_ppm: 0,
            view_change_crash_ppm: 0,
            restart_all_ppm: 0,
            flap_ppm: 0,
            power_loss_ppm: 0,
            disk_damage_ppm: 0,
            network: NetworkFaults::calm(),
        }
    }

    /// Rates for a random regime.
    pub fn draw(prng: &mut Prng) -> FaultRates {
        let regime = *prng.pick(&[
            Regime::Calm,
            Regime::Lossy,
            Regime::PartitionHeavy,
            Regime::CrashHeavy,
            Regime::Chaos,
        ]);
        let mut ppm = |low: u32, high: u32| prng.between(low as u64, high as u64) as u32;
        let (
            partition_ppm,
            heal_ppm,
            crash_ppm,
            restart_ppm,
            drop_ppm,
            duplicate_ppm,
            delay_long_ppm,
        ) = match regime {
            Regime::Calm => (
                ppm(0, 200),
                5_000,
                ppm(0, 100),
                5_000,
                ppm(0, 2_000),
                ppm(0, 2_000),
                ppm(0, 2_000),
            ),
            Regime::Lossy => (
                ppm(0, 300),
                5_000,
                ppm(0, 200),
                5_000,
                ppm(20_000, 200_000),
                ppm(10_000, 100_000),
                ppm(10_000, 50_000),
            ),
            Regime::PartitionHeavy => (
                ppm(2_000, 10_000),
                ppm(2_000, 10_000),
                ppm(0, 300),
                5_000,
                ppm(0, 10_000),
                ppm(0, 10_000),
                ppm(0, 10_000),
            ),
            Regime::CrashHeavy => (
                ppm(0, 500),
                5_000,
                ppm(1_000, 5_000),
                ppm(2_000, 20_000),
                ppm(0, 10_000),
                ppm(0, 10_000),
                ppm(0, 10_000),
            ),
            Regime::Chaos => (
                ppm(1_000, 5_000),
                ppm(2_000, 10_000),
                ppm(500, 3_000),
                ppm(2_000, 10_000),
                ppm(5_000, 50_000),
                ppm(5_000, 50_000),
                ppm(5_000, 30_000),
            ),
        };
        let (primary_bias_ppm, crash_pair_ppm, view_change_crash_ppm, restart_all_ppm) =
            match regime {
                Regime::Calm | Regime::Lossy => (ppm(0, 300_000), 0, 0, 0),
                Regime::PartitionHeavy => (
                    ppm(200_000, 600_000),
                    ppm(0, 200_000),
                    ppm(0, 2_000),
                    ppm(0, 500_000),
                ),
                Regime::CrashHeavy => (
                    ppm(200_000, 600_000),
                    ppm(100_000, 500_000),
                    ppm(1_000, 10_000),
                    ppm(200_000, 800_000),
                ),
                Regime::Chaos => (
                    ppm(100_000, 500_000),
                    ppm(0, 300_000),
                    ppm(500, 5_000),
                    ppm(0, 500_000),
                ),
            };
        let replay_ppm = match regime {
            Regime::Calm => ppm(0, 1_000),
            Regime::Lossy | Regime::Chaos => ppm(1_000, 20_000),
            Regime::PartitionHeavy => ppm(0, 5_000),
            Regime::CrashHeavy => ppm(1_000, 10_000),
        };
        let flap_ppm = match regime {
            Regime::Calm | Regime::Lossy => ppm(0, 200_000),
            _ => ppm(100_000, 600_000),
        };
        let delay_max_steps = prng.between(2, 8);
        let network = NetworkFaults {
            drop_ppm,
            duplicate_ppm,
            delay_min_steps: 1,
            delay_max_steps,
            delay_long_ppm,
            delay_long_max_steps: delay_max_steps * prng.between(3, 10),
            replay_ppm,
            replay_age_max_steps: prng.between(50, 2_000),
            // Drawn from a stream of its own (`run::corrupt_page_ppm`).
            corrupt_page_ppm: 0,
        };
        FaultRates {
            regime,
            partition_ppm,
            heal_ppm,
            crash_ppm,
            restart_ppm,
            primary_bias_ppm,
            crash_pair_ppm,
            view_change_crash_ppm,
            restart_all_ppm,
            flap_ppm,
            power_loss_ppm: 0,
            disk_damage_ppm: 0,
            network,
        }
    }

    /// The disk faults of a seed with disks, from a stream of their own so that no other
    /// rate changes: a power loss every few thousand steps at most, a corrupted sector
    /// at up to one restart in ten.
    pub fn with_disk_faults(self, prng: &mut Prng) -> FaultRates {
        let crashes = self.crash_ppm > 0 || self.view_change_crash_ppm > 0;
        FaultRates {
            power_loss_ppm: match crashes {
                true => prng.between(0, 400) as u32,
                false => 0,
            },
            disk_damage_ppm: prng.between(0, 100_000) as u32,
            ..self
        }
    }
}

/// Faults injected, by kind (network faults are in `NetworkCounts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Symmetric or asymmetric partitions cut.
    pub partition: u64,
    /// Partitions healed.
    pub heal: u64,
    /// Partitions cut again soon after healing.
    pub flap: u64,
    /// Replicas crashed.
    pub crash: u64,
    /// Replicas restarted (into recovery).
    pub restart: u64,
    /// Crashes of the replica that was primary.
    pub crash_primary: u64,
    /// Steps at which a second replica crashed right after a first.
    pub crash_pair: u64,
    /// Crashes (or primaries cut off) while some replica was changing views or
    /// recovering.
    pub crash_in_view_change: u64,
    /// Replicas crashed right after sending a DoViewChange.
    pub crash_after_promise: u64,
    /// Replicas crashed right after moving to a new epoch.
    pub crash_after_epoch_change: u64,
    /// Partitions that cut the primary off alone.
    pub isolate_primary: u64,
    /// Times two or more replicas came to be recovering at once.
    pub recoveries_overlapping: u64,
    /// Power losses: every replica crashed at once (disks only).
    pub power_loss: u64,
    /// Of those, the ones during a new cluster's first start (some disk never joined).
    pub power_loss_first_start: u64,
    /// Restarts that found a corrupted sector (disks only).
    pub disk_damage: u64,
    /// Replicas paused (a stopped process whose clock runs on: `sim::lease`).
    pub pause: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_cover_every_regime() {
        let regimes: Vec<Regime> = (0..100)
            .map(|seed| FaultRates::draw(&mut Prng::new(seed)).regime)
            .collect();
        for regime in [
            Regime::Calm,
            Regime::Lossy,
            Regime::PartitionHeavy,
            Regime::CrashHeavy,
            Regime::Chaos,
        ] {
            assert!(regimes.contains(&regime), "{regime} never drawn");
        }
        let rates = FaultRates::draw(&mut Prng::new(1));
        assert_eq!(rates, FaultRates::draw(&mut Prng::new(1)));
        assert!(rates.network.delay_min_steps >= 1);
        assert!(rates.network.delay_long_max_steps >= rates.network.delay_max_steps);
    }
}
