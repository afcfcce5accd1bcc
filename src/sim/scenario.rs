//! Scripted scenarios: a small API over [`Cluster`] so that a test reads as a script of
//! plain verbs (`partition`, `crash`, `submit`, `run_until`, `heal`, `expect_...`) while the
//! checkers run after every step. No random faults are injected; the network is calm
//! (short random delays from the seed) unless the script says otherwise.
//!
//! Every method panics with the seed, the step and the cluster's state when a checker
//! fails or an expectation is not met within its bound, so a failing scenario explains
//! itself.

use super::checker::Failure;
use super::cluster::{Cluster, ClusterOptions, Filter};
use super::faults::FaultRates;
use super::model::ModelOutcome;
use super::network::{Envelope, NetworkFaults};
use super::reads::ReadRates;
use crate::client::Outcome;
use crate::config::Config;
use crate::protocol::{
    Configuration, Op, Replica, ReplicaId, ReplicaIndex, RequestNumber, Session, Status,
};
use crate::service::kv::{KvOp, KvResult};
use crate::service::Kv;
use bytes::Bytes;

/// A scripted simulation.
pub struct Scenario {
    cluster: Cluster,
    seed: u64,
}

/// `put key value`.
pub fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put(bytes(key), bytes(value))
}

/// `get key`.
pub fn get(key: &str) -> KvOp {
    KvOp::Get(bytes(key))
}

/// `cas key old new` (`old` None: only if absent).
pub fn cas(key: &str, old: Option<&str>, new: &str) -> KvOp {
    KvOp::Cas(bytes(key), old.map(bytes), bytes(new))
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The configuration scenarios run with: a pipeline of 4, batches of 8, a checkpoint
/// every 32 ops with a tail of 16, short timeouts.
pub fn scenario_config(replica_count: u8) -> Config {
    let mut config = Config::new(0x5ce7a210, replica_count);
    config.pipeline_prepares_max = 4;
    config.batch_entries_max = 8;
    config.request_body_bytes_max = 256;
    config.batch_bytes_max = 4096;
    config.pipeline_bytes_max = 4 * 4096;
    config.message_bytes_max = 1 << 20;
    config.clients_max = 16;
    config.checkpoint_interval_ops = 32;
    config.log_tail_ops = 16;
    config.commit_interval_ticks = 2;
    config.prepare_timeout_ticks = 4;
    config.normal_timeout_ticks = 12;
    // Scenarios that exercise leases set them (and feed clocks) themselves.
    config.lease_ticks = 0;
    config.view_change_timeout_ticks = 12;
    config.recovery_timeout_ticks = 8;
    config.state_transfer_timeout_ticks = 8;
    config
}

/// [`scenario_config`] with the smallest messages `Config::validate` allows for one-entry
/// batches: a NewState or StartView holds about 2.6 KB of entries (a few dozen small
/// puts), so catching up takes several messages and a StartView for a backup that lags
/// far behind must be cut.
pub fn small_message_config(replica_count: u8) -> Config {
    let mut config = scenario_config(replica_count);
    config.batch_bytes_max = 289;
    config.pipeline_bytes_max = 289;
    config.message_bytes_max = (289 + 289) * 2 + 4096;
    config.checkpoint_interval_ops = 256;
    config.log_tail_ops = 128;
    config.validate().expect("the smallest valid messages");
    config
}

impl Scenario {
    /// `replica_count` replicas, 3 clients, [`scenario_config`]; every client registers
    /// before this returns.
    pub fn new(replica_count: u8, seed: u64) -> Scenario {
        Scenario::with(seed, scenario_config(replica_count), 3)
    }

    /// A scenario with a given configuration and client count; every client registers
    /// before this returns.
    pub fn with(seed: u64, config: Config, client_count: usize) -> Scenario {
        let mut scenario = Scenario::manual(seed, config, client_count);
        scenario.cluster.register = true;
        scenario.run_until("every client registers", 2_000, |c| {
            (0..c.client_count()).all(|i| c.client(i).session.is_registered())
        });
        scenario
    }

    /// Like [`Scenario::with`], with disks (`ClusterOptions::disks`) whose writes
    /// complete 0-3 steps late, so that a crash finds some in flight.
    pub fn with_disks(seed: u64, config: Config, client_count: usize) -> Scenario {
        let mut options = Scenario::manual_options(config, client_count);
        options.disks = true;
        options.write_delay_steps_max = 3;
        let mut scenario = Scenario::from_options(seed, options);
        scenario.cluster.register = true;
        scenario.run_until("every client registers", 2_000, |c| {
            (0..c.client_count()).all(|i| c.client(i).session.is_registered())
        });
        scenario
    }

    /// A new cluster with disks whose replicas all start by recovering, as `vsr replica`
    /// does (they find out together that the cluster is new); clients register only when
    /// told to.
    pub fn new_cluster_with_disks(seed: u64, config: Config, client_count: usize) -> Scenario {
        let mut options = Scenario::manual_options(config, client_count);
        options.disks = true;
        options.write_delay_steps_max = 3;
        options.start_recovering = true;
        Scenario::from_options(seed, options)
    }

    /// A scenario whose clients register only when told to ([`Scenario::register`]), and
    /// not again by themselves after an eviction.
    pub fn manual(seed: u64, config: Config, client_count: usize) -> Scenario {
        Scenario::from_options(seed, Scenario::manual_options(config, client_count))
    }

    fn from_options(seed: u64, options: ClusterOptions) -> Scenario {
        let mut cluster = Cluster::new(seed, options);
        cluster.register = false;
        Scenario { cluster, seed }
    }

    /// The options [`Scenario::manual`] runs with: a calm network, no random faults, no
    /// load; for a test that builds its [`Cluster`] itself (with leases, say).
    pub fn manual_options(config: Config, client_count: usize) -> ClusterOptions {
        ClusterOptions {
            leases: Default::default(),
            config,
            client_count,
            client_tick_steps: 4,
            request_timeout_ticks: 8,
            tick_steps_min: 3,
            tick_steps_max: 5,
            faults: FaultRates::none(),
            keys: 2,
            value_bytes_max: 1,
            submit_ppm: 300_000,
            reads: ReadRates::none(),
            oversized_ppm: 0,
            start_recovering: false,
            write_delay_steps_max: 0,
            checkpoint_build_steps_max: 0,
            disks: false,
            power_loss_at: None,
            reconfigurations: Vec::new(),
            trace: std::env::var_os("VSR_SIM_TRACE").is_some(),
        }
    }

    /// The cluster, to look at.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The cluster, to change.
    pub fn cluster_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }

    /// Replica `index`; panics if it is crashed.
    pub fn replica(&self, index: ReplicaIndex) -> &Replica<Kv> {
        self.cluster
            .replica(index)
            .unwrap_or_else(|| panic!("replica {index} is crashed"))
    }

    /// `partition`: cuts `group` off from the other replicas, both ways.
    pub fn partition(&mut self, group: &[ReplicaIndex]) {
        self.cluster.partition(group);
    }

    /// `partition` (one way): `group` hears the others but cannot reach them.
    pub fn partition_outbound(&mut self, group: &[ReplicaIndex]) {
        self.cluster.partition_outbound(group);
    }

    /// `partition` (one link): messages from `from` to `to` are lost.
    pub fn block(&mut self, from: ReplicaIndex, to: ReplicaIndex) {
        self.cluster.block(from, to);
    }

    /// `heal`: removes every partition and delivery filter.
    pub fn heal(&mut self) {
        self.cluster.heal();
        self.cluster.clear_filter();
    }

    /// `crash`: replica `index` loses its memory.
    pub fn crash(&mut self, index: ReplicaIndex) {
        self.cluster.crash(index);
    }

    /// `restart`: replica `index` comes back and recovers (with disks: resumes from
    /// its disk).
    pub fn restart(&mut self, index: ReplicaIndex) {
        self.cluster.restart(index);
    }

    /// `power_loss`: every live replica crashes at once (disks only).
    pub fn power_loss(&mut self) {
        self.cluster.power_loss();
    }

    /// `inject`: delivers a message captured earlier (by a [`Scenario::drop_where`]
    /// filter) as if it were sent now.
    pub fn inject(&mut self, envelope: Envelope) {
        self.cluster.inject(envelope);
    }

    /// `replay`: the network keeps old replica-to-replica messages from now on (for up to
    /// `age_max_steps`), and delivers `count` of them again, picked at random.
    pub fn replay(&mut self, count: usize, age_max_steps: u64) {
        let faults = self.cluster.network().faults;
        self.cluster.set_network_faults(NetworkFaults {
            replay_ppm: faults.replay_ppm.max(1),
            replay_age_max_steps: age_max_steps,
            ..faults
        });
        for _ in 0..count {
            self.cluster.replay();
        }
    }

    /// `replay` of one kept old message for which `wanted` holds (see
    /// [`Scenario::replay`], which must have been called before it was sent).
    pub fn replay_where(&mut self, wanted: impl Fn(&Envelope) -> bool) {
        self.cluster.replay_where(wanted);
    }

    /// `drop`: every delivery matching `filter` is lost until [`Scenario::heal`]. The
    /// filter may also just watch (and return false).
    pub fn drop_where(&mut self, filter: impl FnMut(&Envelope) -> bool + 'static) {
        let filter: Filter = Box::new(filter);
        self.cluster.set_filter(filter);
    }

    /// Whether idle clients submit random operations.
    pub fn load(&mut self, on: bool) {
        self.cluster.load = on;
    }

    /// Submits `op` on client `client`, which must be idle.
    pub fn submit(&mut self, client: usize, op: KvOp) -> RequestNumber {
        match self.cluster.submit(client, &op) {
            Ok(request) => request,
            Err(error) => self.fail(&format!("client {client} cannot submit {op:?}: {error}")),
        }
    }

    /// Runs `steps` steps.
    pub fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step();
        }
    }

    /// Runs until `done` holds, at most `steps_max` steps; returns the steps taken.
    pub fn run_until(
        &mut self,
        what: &str,
        steps_max: u64,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> u64 {
        let start = self.cluster.now();
        while !done(&self.cluster) {
            if self.cluster.now() - start >= steps_max {
                self.fail(&format!("not within {steps_max} steps: {what}"));
            }
            self.step();
        }
        self.cluster.now() - start
    }

    /// Starts client `client`'s registration (a fresh session, paper 4.5).
    pub fn register(&mut self, client: usize) {
        if self.cluster.client(client).session.is_busy() {
            self.fail(&format!("client {client} cannot register while busy"));
        }
        self.cluster.register_client(client);
    }

    /// Waits for client `client`'s registration; returns its session.
    pub fn wait_registered(&mut self, client: usize, steps_max: u64) -> Session {
        self.run_until(&format!("client {client} registers"), steps_max, |c| {
            !c.client(client).session.is_busy()
        });
        match &self.cluster.client(client).last_outcome {
            Some(Outcome::Registered { session }) => *session,
            other => self.fail(&format!("client {client} ended with {other:?}")),
        }
    }

    /// Waits for client `client`'s request to complete; returns its op and result.
    pub fn wait_completed(&mut self, client: usize, steps_max: u64) -> (Op, KvResult) {
        self.run_until(&format!("client {client} gets its reply"), steps_max, |c| {
            !c.client(client).session.is_busy()
        });
        match &self.cluster.client(client).last_outcome {
            Some(Outcome::Completed { op, result, .. }) => (
                *op,
                KvResult::decode(result).expect("the kv service answers kv results"),
            ),
            other => self.fail(&format!("client {client} ended with {other:?}")),
        }
    }

    /// Waits until every replica is live, normal, in the same view, and at the same commit
    /// as the highest commit ever seen, and every client is idle.
    pub fn converge(&mut self, steps_max: u64) {
        self.run_until("the cluster converges", steps_max, |c| {
            c.clients_idle() && c.converged()
        });
        match self.cluster.check_final() {
            Ok(compared) if compared > 0 => {}
            Ok(_) => self.fail("no replica could be compared with the reference model"),
            Err(failure) => self.fail_with(failure),
        }
    }

    /// The op at which client `client`'s request `request` (in its current session)
    /// executed; panics unless the reference model executed it exactly once.
    pub fn expect_committed(&self, client: usize, request: RequestNumber) -> Op {
        let session = &self.cluster.client(client).session;
        let key = (session.client(), session.session(), request);
        let model = self.cluster.checker().model();
        let ops: Vec<Op> = (1..=model.applied())
            .filter(|&op| {
                matches!(model.outcome(op), Some(ModelOutcome::Executed { client, session, request, .. })
                    if (*client, *session, *request) == key)
            })
            .collect();
        if ops.len() != 1 {
            self.fail(&format!(
                "client {client} request {request} executed at ops {ops:?}, expected exactly one"
            ));
        }
        ops[0]
    }

    /// `reconfigure` (paper 7): `added` new members start as learners and, after
    /// `warm_up_steps`, the administrator asks for a configuration of `kept` and them;
    /// returns that configuration. Use [`Scenario::wait_epoch`] to see it run.
    pub fn reconfigure(
        &mut self,
        kept: &[ReplicaId],
        added: usize,
        warm_up_steps: u64,
    ) -> Configuration {
        self.cluster.start_change(kept, added, warm_up_steps)
    }

    /// Waits until the administrator was answered and every member of `configuration`
    /// that is up is normal in its epoch.
    pub fn wait_epoch(&mut self, configuration: &Configuration, steps_max: u64) {
        let what = format!("epoch {} runs", configuration.epoch());
        self.run_until(&what, steps_max, |c| {
            c.reconfigurations_done()
                && configuration.ids().all(|id| {
                    c.replica(id as ReplicaIndex).is_none_or(|r| {
                        r.epoch() == configuration.epoch() && r.status() == Status::Normal
                    })
                })
        });
    }

    /// The highest view among live replicas.
    pub fn view_max(&self) -> u32 {
        (0..self.cluster.replica_slots())
            .filter_map(|i| self.cluster.replica(i))
            .map(|r| r.view())
            .max()
            .unwrap_or(0)
    }

    fn step(&mut self) {
        if let Err(failure) = self.cluster.step() {
            self.fail_with(failure);
        }
    }

    fn fail_with(&self, failure: Failure) -> ! {
        self.fail(&failure.to_string())
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "scenario seed {} step {}: {what}\n  state: {}\n  (set VSR_SIM_TRACE=1 for a step-by-step log)",
            self.seed,
            self.cluster.now(),
            self.cluster.describe()
        )
    }
}
