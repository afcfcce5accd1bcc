//! Every limit of a replica, and the start-up checks that make them consistent.
//!
//! Nothing in the protocol core is unbounded: pipeline depth, batch size, client table,
//! log length and message size all come from here, and [`Config::validate`] rejects a
//! combination that cannot work before anything starts.

use thiserror::Error;

/// The limits and timeouts of one cluster. Every replica of a cluster must use the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Identifies the cluster on the wire; frames with another id are rejected.
    pub cluster: u128,
    /// Number of replicas, 2f+1, of the cluster's first configuration
    /// (`protocol::Configuration::initial`). Membership itself is replicated state: the
    /// protocol asks its `Configuration`, not this.
    pub replica_count: u8,
    /// The members of the first configuration (by index) that are witnesses (paper 6.1):
    /// they store the log and vote, but never execute, serve reads or checkpoints, or
    /// lead. At most f.
    pub witnesses: crate::protocol::ReplicaSet,
    /// Prepares in flight before the primary waits for acknowledgements.
    pub pipeline_prepares_max: u32,
    /// Bytes of entries in flight in the pipeline (with `pipeline_prepares_max`, the
    /// pipeline's two bounds).
    pub pipeline_bytes_max: u64,
    /// Entries in one Prepare.
    pub batch_entries_max: u32,
    /// Bytes of entries (headers and bodies) in one Prepare.
    pub batch_bytes_max: u32,
    /// Bytes of one operation body.
    pub request_body_bytes_max: u32,
    /// Sessions in the client table; when full, registering evicts the oldest.
    pub clients_max: u32,
    /// A checkpoint of the service is taken every this many ops (paper 5.1).
    pub checkpoint_interval_ops: u64,
    /// Committed entries kept below the latest checkpoint, so that a slightly lagging
    /// replica catches up from the log instead of a checkpoint.
    pub log_tail_ops: u64,
    /// The largest message the wire accepts.
    pub message_bytes_max: u32,
    /// Ticks of primary idleness after which it sends a Commit heartbeat.
    pub commit_interval_ticks: u64,
    /// Ticks before the primary resends Prepares that are not acknowledged.
    pub prepare_timeout_ticks: u64,
    /// Ticks a backup waits without hearing from its primary before starting a view change.
    pub normal_timeout_ticks: u64,
    /// Ticks before a view change that is not finishing moves on to the next view.
    pub view_change_timeout_ticks: u64,
    /// Ticks before a recovery attempt starts over with a new nonce.
    pub recovery_timeout_ticks: u64,
    /// Ticks before a GetState that got no answer is asked again (and a request for part
    /// of a checkpoint, of another replica).
    pub state_transfer_timeout_ticks: u64,
    /// Requests for parts of a checkpoint a replica keeps in flight while it fetches one
    /// (paper 5.1): the transfer's window.
    pub checkpoint_fetch_requests_max: u32,
    /// Pages one request for checkpoint pages names (the answer holds as many of them as
    /// fit half a message).
    pub checkpoint_request_pages_max: u32,
    /// Bytes of checkpoint pages a replica sends to others per tick, so that serving a
    /// transfer does not starve its normal work.
    pub checkpoint_serve_bytes_per_tick: u64,
    /// The lease a backup grants with each acknowledgement (paper 6.3.1), in ticks of
    /// `tick_ns` on its monotonic clock: it takes part in no view change until the lease
    /// it granted last ran out. 0: no leases, and every lease read goes through the log.
    /// Shorter than `normal_timeout_ticks`, so that a backup whose primary went silent
    /// has let its lease run out by the time it would ask for a view change.
    pub lease_ticks: u64,
    /// The nominal length of a tick in nanoseconds (the runtime's `TICK`): what turns
    /// `lease_ticks` into time on the monotonic clock the driver passes in
    /// (`Replica::set_monotonic_ns`).
    pub tick_ns: u64,
    /// The bound on how far any replica's monotonic clock may run from real time, in
    /// parts per million of the time measured (10_000: 1%). Lease arithmetic assumes it;
    /// a clock that drifts further can make a primary answer a stale read.
    pub clock_drift_ppm: u32,
}

/// The largest clock-drift bound a configuration may name: 10%.
pub const CLOCK_DRIFT_PPM_MAX: u32 = 100_000;

/// The most ops `Config::checkpoint_interval_ops` and `Config::log_tail_ops` may be: a
/// trillion, far past any log held in memory.
pub const OPS_MAX: u64 = 1 << 40;

impl Config {
    /// A configuration with production defaults for `replica_count` replicas.
    pub fn new(cluster: u128, replica_count: u8) -> Config {
        Config {
            cluster,
            replica_count,
            witnesses: crate::protocol::ReplicaSet::default(),
            pipeline_prepares_max: 8,
            pipeline_bytes_max: 4 << 20,
            batch_entries_max: 4096,
            batch_bytes_max: 1 << 20,
            request_body_bytes_max: 64 << 10,
            clients_max: 8192,
            checkpoint_interval_ops: 1 << 16,
            log_tail_ops: 1 << 14,
            message_bytes_max: 16 << 20,
            commit_interval_ticks: 10,
            prepare_timeout_ticks: 20,
            normal_timeout_ticks: 100,
            view_change_timeout_ticks: 100,
            recovery_timeout_ticks: 50,
            state_transfer_timeout_ticks: 50,
            checkpoint_fetch_requests_max: 4,
            checkpoint_request_pages_max: 256,
            // 64 MiB per 10 ms tick: far above what this machine's loopback moves, so it
            // bounds a burst, not a transfer's rate.
            checkpoint_serve_bytes_per_tick: 64 << 20,
            // Half the normal timeout: 500 ms of 10 ms ticks.
            lease_ticks: 50,
            tick_ns: 10_000_000,
            clock_drift_ppm: 10_000,
        }
    }

    /// The lease a backup grants, on its own clock (0: leases off).
    pub fn lease_ns(&self) -> u64 {
        self.lease_ticks.saturating_mul(self.tick_ns)
    }

    /// f of the first configuration: the number of replicas that may fail.
    pub fn faults_max(&self) -> usize {
        (self.replica_count as usize - 1) / 2
    }

    /// f+1 of the first configuration: a quorum, counting the replica itself.
    pub fn quorum(&self) -> usize {
        self.faults_max() + 1
    }

    /// The most entries a replica's log holds: the retained tail below its latest
    /// checkpoint, up to six checkpoint intervals of committed ops beyond it
    /// (checkpoints are built off the event loop, one at a time, and a build may run
    /// for up to three intervals: see `protocol::replica::execute`), and the uncommitted
    /// pipeline.
    pub fn log_entries_max(&self) -> u64 {
        self.log_tail_ops
            + 6 * self.checkpoint_interval_ops
            + 2 * self.pipeline_prepares_max as u64 * self.batch_entries_max as u64
    }

    /// Rejects limits that cannot work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ConfigError::*;
        if self.replica_count == 0 || self.replica_count.is_multiple_of(2) {
            return Err(ReplicaCount(self.replica_count));
        }
        crate::protocol::configuration::check_witnesses(
            self.replica_count as usize,
            &self.witnesses,
        )
        .map_err(Witnesses)?;
        if self.pipeline_prepares_max == 0 {
            return Err(Zero("pipeline_prepares_max"));
        }
        if self.pipeline_bytes_max < self.batch_bytes_max as u64 {
            return Err(PipelineBytesTooSmall);
        }
        if self.batch_entries_max == 0 {
            return Err(Zero("batch_entries_max"));
        }
        if self.clients_max == 0 {
            return Err(Zero("clients_max"));
        }
        if self.checkpoint_interval_ops == 0 {
            return Err(Zero("checkpoint_interval_ops"));
        }
        // Far more ops than a log in memory could hold, and a bound that keeps
        // `log_entries_max`'s sum from overflowing.
        for (name, ops) in [
            ("checkpoint_interval_ops", self.checkpoint_interval_ops),
            ("log_tail_ops", self.log_tail_ops),
        ] {
            if ops > OPS_MAX {
                return Err(TooManyOps { name, ops });
            }
        }
        if self.checkpoint_fetch_requests_max == 0 {
            return Err(Zero("checkpoint_fetch_requests_max"));
        }
        if self.checkpoint_request_pages_max == 0 {
            return Err(Zero("checkpoint_request_pages_max"));
        }
        if self.checkpoint_serve_bytes_per_tick == 0 {
            return Err(Zero("checkpoint_serve_bytes_per_tick"));
        }
        let entry_max =
            crate::protocol::ENTRY_HEADER_BYTES as u64 + self.request_body_bytes_max as u64;
        if (self.batch_bytes_max as u64) < entry_max {
            return Err(BatchTooSmall {
                batch_bytes_max: self.batch_bytes_max,
                entry_max,
            });
        }
        // A Prepare, and a view change's suffix of a whole pipeline, must fit in a message.
        let suffix_bytes = (self.pipeline_bytes_max + self.batch_bytes_max as u64) * 2 + 4096;
        if (self.message_bytes_max as u64) < suffix_bytes {
            return Err(MessageTooSmall {
                message_bytes_max: self.message_bytes_max,
                needed: suffix_bytes,
            });
        }
        let ticks = [
            ("commit_interval_ticks", self.commit_interval_ticks),
            ("prepare_timeout_ticks", self.prepare_timeout_ticks),
            ("normal_timeout_ticks", self.normal_timeout_ticks),
            ("view_change_timeout_ticks", self.view_change_timeout_ticks),
            ("recovery_timeout_ticks", self.recovery_timeout_ticks),
            (
                "state_transfer_timeout_ticks",
                self.state_transfer_timeout_ticks,
            ),
        ];
        if let Some((name, _)) = ticks.iter().find(|(_, t)| *t == 0) {
            return Err(Zero(name));
        }
        if self.tick_ns == 0 {
            return Err(Zero("tick_ns"));
        }
        if self.clock_drift_ppm > CLOCK_DRIFT_PPM_MAX {
            return Err(ClockDriftTooLarge(self.clock_drift_ppm));
        }
        if self.lease_ticks >= self.normal_timeout_ticks {
            return Err(LeaseTooLong {
                lease_ticks: self.lease_ticks,
                normal_timeout_ticks: self.normal_timeout_ticks,
            });
        }
        if self.lease_ticks > 0 && self.lease_ticks <= self.commit_interval_ticks {
            return Err(LeaseTooShort {
                lease_ticks: self.lease_ticks,
                commit_interval_ticks: self.commit_interval_ticks,
            });
        }
        if self.normal_timeout_ticks <= self.commit_interval_ticks * 2 {
            return Err(HeartbeatTooSlow {
                commit_interval_ticks: self.commit_interval_ticks,
                normal_timeout_ticks: self.normal_timeout_ticks,
            });
        }
        Ok(())
    }
}

/// Why a configuration cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The protocol needs 2f+1 replicas.
    #[error("a cluster needs an odd number of replicas (2f+1), got {0}")]
    ReplicaCount(u8),
    /// Witnesses that are not members, or more than f of them.
    #[error("invalid witnesses: {0}")]
    Witnesses(&'static str),
    /// A limit that must be positive is 0.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    /// A count of ops beyond any log a replica could hold.
    #[error("{name} ({ops}) must be at most {OPS_MAX}")]
    TooManyOps {
        /// The setting.
        name: &'static str,
        /// Its value.
        ops: u64,
    },
    /// The pipeline could not hold one full batch.
    #[error("pipeline_bytes_max must be at least batch_bytes_max")]
    PipelineBytesTooSmall,
    /// One request could never fit a batch.
    #[error(
        "batch_bytes_max ({batch_bytes_max}) is smaller than the largest entry ({entry_max} bytes)"
    )]
    BatchTooSmall {
        /// The configured batch limit.
        batch_bytes_max: u32,
        /// The largest entry.
        entry_max: u64,
    },
    /// A full pipeline would not fit the messages of a view change.
    #[error("message_bytes_max ({message_bytes_max}) must be at least {needed} for this pipeline and batch size")]
    MessageTooSmall {
        /// The configured message limit.
        message_bytes_max: u32,
        /// What the pipeline needs.
        needed: u64,
    },
    /// A drift bound above [`CLOCK_DRIFT_PPM_MAX`]: no lease could be trusted.
    #[error("clock_drift_ppm ({0}) must be at most {CLOCK_DRIFT_PPM_MAX} (10%)")]
    ClockDriftTooLarge(u32),
    /// A lease that outlasts the normal timeout would hold back the view change a
    /// backup starts when its primary goes silent.
    #[error(
        "lease_ticks ({lease_ticks}) must be below normal_timeout_ticks ({normal_timeout_ticks})"
    )]
    LeaseTooLong {
        /// The lease.
        lease_ticks: u64,
        /// The backup's patience.
        normal_timeout_ticks: u64,
    },
    /// A lease no longer than the heartbeat interval runs out between two heartbeats of
    /// an idle primary: lease reads would mostly go through the log.
    #[error("lease_ticks ({lease_ticks}) must exceed commit_interval_ticks ({commit_interval_ticks}), or be 0 (no leases)")]
    LeaseTooShort {
        /// The lease.
        lease_ticks: u64,
        /// The heartbeat interval.
        commit_interval_ticks: u64,
    },
    /// Backups would depose a healthy primary between two heartbeats.
    #[error("normal_timeout_ticks ({normal_timeout_ticks}) must exceed twice commit_interval_ticks ({commit_interval_ticks})")]
    HeartbeatTooSlow {
        /// The heartbeat interval.
        commit_interval_ticks: u64,
        /// The backup's patience.
        normal_timeout_ticks: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_counts_past_the_bound_are_refused_by_name() {
        let mut config = Config::new(1, 3);
        config.checkpoint_interval_ops = OPS_MAX;
        config.log_tail_ops = OPS_MAX;
        assert_eq!(config.validate(), Ok(()));
        assert!(
            config.log_entries_max() > 6 * OPS_MAX,
            "no overflow at the bound"
        );
        config.checkpoint_interval_ops = u64::MAX;
        let error = config.validate().unwrap_err();
        assert!(
            error.to_string().contains("checkpoint_interval_ops"),
            "{error}"
        );
        config.checkpoint_interval_ops = 1;
        config.log_tail_ops = OPS_MAX + 1;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::TooManyOps {
                name: "log_tail_ops",
                ..
            })
        ));
    }
}
