//! The simulated world: N replicas running a service (the bundled `Kv`, or any
//! [`SimService`]), M clients, one network, one PRNG, and the checkers, advanced one step
//! at a time.
//!
//! A step is the simulator's unit of time. In one step the cluster, in this order: injects
//! random faults (when enabled), delivers every message due, ticks the replicas whose
//! clocks are due (each replica ticks every few steps, at its own rate, with jitter),
//! ticks the clients, lets idle clients start requests, and runs the checkers. After each
//! delivery and tick it calls `Replica::flush`, as the runtime does at the end of each
//! event-loop iteration.
//!
//! Faults are plain verbs on [`Cluster`]: [`Cluster::partition`], [`Cluster::heal`],
//! [`Cluster::crash`], [`Cluster::restart`]; the network adds `drop`, `duplicate` and
//! `delay`. A crash drops the `Replica` value entirely, so a restart (paper 4.3) really has
//! nothing but its index and a fresh nonce. At most f replicas are ever crashed or
//! recovering at once when faults are random.

use super::checker::{Checker, ClientReply, Failure};
use super::disk::Disks;
use super::faults::{FaultCounts, FaultRates};
use super::lease::{LeaseOptions, SimLeases};
use super::network::{Envelope, Network, NetworkFaults, Node};
use super::prng::Prng;
use super::reads::{BackupRead, ReadRates};
use super::reconfigure::{Admin, AdminOutcome, PlannedChange};
use super::service::{SimService, WorkloadShape};
use super::storage::Storage;
use super::watch::{TransferCounts, Watch};
use crate::client::{ClientSession, Outcome, ReadMode, SubmitError, Target};
use crate::config::Config;
use crate::protocol::client_table::RouteToken;
use crate::protocol::{
    Body, CheckpointBuild, ClientId, Configuration, Effect, Message, ReplicaId, ReplicaIndex,
    ReplyStatus, RequestNumber, Start, Stats, Status, View, Write, WriteId,
};
use crate::protocol::{Op, Replica, ReplicaSet, StoredWrite};
use crate::service::kv::KvOp;
use crate::service::Kv;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

/// Simulated nanoseconds per step, for the replicas' realtime clocks (paper 4.4).
const STEP_NS: i64 = 1_000_000;
/// Where the simulated realtime clocks start (2023-11-14, an arbitrary fixed instant).
const EPOCH_NS: i64 = 1_700_000_000_000_000_000;
/// Messages in flight at most; beyond this the network drops.
const ENVELOPES_MAX: usize = 1 << 14;

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Every replica's configuration.
    pub config: Config,
    /// Clients driving the cluster.
    pub client_count: usize,
    /// Steps between two client ticks.
    pub client_tick_steps: u64,
    /// Client ticks before the first retry of a request (doubling up to 8x).
    pub request_timeout_ticks: u64,
    /// Each replica ticks every `tick_steps_min..=tick_steps_max` steps (drawn per replica).
    pub tick_steps_min: u64,
    /// See `tick_steps_min`.
    pub tick_steps_max: u64,
    /// Random faults (applied only while [`Cluster::inject`] is on).
    pub faults: FaultRates,
    /// Keys the workload uses.
    pub keys: usize,
    /// The longest value the workload writes.
    pub value_bytes_max: usize,
    /// Chance per step that an idle registered client submits (with load on).
    pub submit_ppm: u32,
    /// How often clients read instead of writing, and in which mode (`sim::reads`).
    pub reads: ReadRates,
    /// Chance that a submitted operation is larger than `request_body_bytes_max`, which
    /// the replicas must refuse (`Rejected`) and never order.
    pub oversized_ppm: u32,
    /// Every replica starts by recovering (paper 4.3), as `vsr replica` does, so that the
    /// cluster must find out that it is new; otherwise every replica starts `Fresh`.
    pub start_recovering: bool,
    /// A replica's writes complete, in order, 0 to this many steps after it issued them
    /// (drawn per write), so that the messages waiting for them leave late and out of step
    /// with the others. 0: every write completes within the input that issued it, as in a
    /// replica that keeps its state in memory.
    pub write_delay_steps_max: u64,
    /// A replica's checkpoint is built 0 to this many steps after it took it (drawn per
    /// checkpoint), as a driver's worker thread would, while the replica goes on; ops
    /// that reach the next checkpoint before then skip it (`replica::execute`).
    pub checkpoint_build_steps_max: u64,
    /// Replicas keep their storage across crashes (`--durability disk`): a restart reads
    /// back what its completed writes made durable (`sim::disk`), and the faults include
    /// a power loss of the whole cluster and corrupted sectors. Otherwise a crash loses
    /// everything, as in the paper's model.
    pub disks: bool,
    /// With disks: a power loss at this step too (drawn for seeds whose replicas start
    /// recovering, so that some cut a new cluster's first start).
    pub power_loss_at: Option<u64>,
    /// Reconfigurations to run (paper 7), in order, one at a time (see
    /// `sim::reconfigure`); empty: the members never change.
    pub reconfigurations: Vec<PlannedChange>,
    /// Monotonic clocks, their drift, pauses and lease reads (paper 6.3.1, `sim::lease`);
    /// the default feeds no clocks (no leases) and pauses nothing.
    pub leases: LeaseOptions,
    /// Log every delivery, fault and status change to stderr.
    pub trace: bool,
}

/// A checkpoint taken and not built yet: the simulated worker builds it at `at`.
#[derive(Clone, Debug)]
struct DueBuild {
    at: u64,
    build: CheckpointBuild,
}

/// A write issued but not complete yet.
#[derive(Clone, Debug)]
struct DueWrite {
    /// The step at which it completes.
    at: u64,
    id: WriteId,
    write: Write,
    /// Its payload, with disks (see `sim::disk`).
    stored: Vec<StoredWrite>,
    /// The last write of its batch.
    ends_batch: bool,
}

/// A replica's clock: how often it ticks, and how its realtime clock is skewed.
#[derive(Clone, Debug)]
struct Clock {
    tick_steps: u64,
    tick_next: u64,
    drift_ppm: i64,
    offset_ns: i64,
}

impl Clock {
    fn realtime_ns(&self, now: u64) -> u64 {
        let elapsed_ns = now as i64 * STEP_NS;
        (EPOCH_NS + self.offset_ns + elapsed_ns + elapsed_ns / 1_000_000 * self.drift_ppm) as u64
    }
}

/// One simulated client.
pub struct SimClient {
    /// The sans-IO session it drives.
    pub session: ClientSession,
    /// The latest outcome it saw.
    pub last_outcome: Option<Outcome>,
    /// Requests completed.
    pub completed: u64,
    /// Times it was evicted.
    pub evicted: u64,
    /// The highest op any client had been answered with when this client submitted its
    /// in-flight request (or registration): the request must commit above it.
    answered_before_submit: u64,
    /// Whether it used its one registration of the liveness phase.
    reregistered: bool,
    /// The configuration its session follows (paper 7: a client learns the next one
    /// from a NewEpoch answer, `Outcome::NewEpoch`): where its messages go, by identity.
    configuration: Configuration,
}

/// The reason a primary refuses a second RECONFIGURATION while one is under way.
const IN_PROGRESS: &str = "another reconfiguration is in progress";

/// The client index of the administrator on the network.
const ADMIN: usize = usize::MAX;
/// Mixed into the seed for the administrator's client id.
const ADMIN_STREAM: u64 = 0xad31_0000_0000_0001;
/// Mixed into the seed for the checkpoint build delays.
const BUILD_STREAM: u64 = 0xb111_0000_0000_0001;
/// The stream of install preparations' delays.
const INSTALL_STREAM: u64 = 0x1257_0000_0000_0001;
/// Mixed into the seed for the crashes right after a replica moved to a new epoch.
const EPOCH_CRASH_STREAM: u64 = 0xe0c4_0000_0000_0001;

/// Reconfigurations, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconfigurationCounts {
    /// Changes planned.
    pub planned: u64,
    /// Changes started (new members added as learners, or members chosen to leave).
    pub started: u64,
    /// RECONFIGURATIONs answered Ok to the administrator.
    pub committed: u64,
    /// Started changes, by kind.
    pub grow: u64,
    /// See `grow`.
    pub shrink: u64,
    /// See `grow`.
    pub replace: u64,
    /// Replicas that retired and were shut down.
    pub retired: u64,
    /// The highest epoch any replica reached.
    pub epoch_max: u64,
    /// NewEpoch answers that moved a client (or the administrator) on.
    pub clients_moved: u64,
}

/// A reconfiguration under way.
#[derive(Clone, Debug)]
struct ChangeUnderWay {
    /// The configuration asked for.
    proposal: Configuration,
    /// When the administrator asks (after the warm-up).
    ask_at: u64,
    /// Whether it asked (its request is in flight or was answered).
    asked: bool,
}

impl Cluster<Kv> {
    /// Client `client` submits the key-value operation `op` (see
    /// [`Cluster::submit_operation`]).
    pub fn submit(&mut self, client: usize, op: &KvOp) -> Result<RequestNumber, SubmitError> {
        self.submit_operation(client, op.encode())
    }
}

/// A filter on deliveries: returns true to drop the envelope (it may also just watch).
pub type Filter = Box<dyn FnMut(&Envelope) -> bool>;

/// The simulated cluster, its replicas running `S`.
pub struct Cluster<S: SimService = Kv> {
    config: Config,
    options: ClusterOptions,
    prng: Prng,
    now: u64,
    replicas: Vec<Option<Replica<S>>>,
    clocks: Vec<Clock>,
    /// Monotonic clocks and pauses (`sim::lease`).
    leases: SimLeases,
    /// The (status, view) each replica was last seen in, for the trace.
    seen: Vec<Option<(Status, View)>>,
    clients: Vec<SimClient>,
    client_index: HashMap<ClientId, usize>,
    network: Network,
    checker: Checker<S>,
    watch: Watch,
    workload: WorkloadShape,
    effects: Vec<Effect>,
    filter: Option<Filter>,
    /// Replicas whose commit moved during this step (bit per replica).
    moved: u32,
    /// Replicas that handled an input (or restarted) during this step (bit per replica):
    /// only their state can have changed, so only their invariants need checking.
    touched: u32,
    /// Stats of replicas that crashed (their counters died with them).
    stats_retired: Stats,
    /// Whether two or more replicas were recovering at the last count.
    recoveries_overlapped: bool,
    /// The links to cut again at a step (see `heal_and_maybe_flap`).
    flap: Option<(u64, Vec<bool>)>,
    /// A replica to crash at the start of the next step (see `crash_soon_after_promise`).
    crash_next: Option<ReplicaIndex>,
    /// Per replica: the view it was changing to at its last input (None: not changing).
    view_change_entered: Vec<Option<View>>,
    /// Faults injected so far.
    pub faults: FaultCounts,
    /// Whether random faults are injected.
    pub inject: bool,
    /// Whether idle clients submit random operations.
    pub load: bool,
    /// Whether clients (re)register by themselves at start and after eviction.
    pub register: bool,
    /// Whether a client that is not registered registers once more (the liveness phase:
    /// an evicted client is not done until it has registered again, and once is enough
    /// to end a run even when a full table keeps evicting).
    pub register_once: bool,
    /// Since when, and from which view, some replica has been changing views without f+1
    /// replicas normal in that view or a later one (see `check_view_change_progress`).
    view_change_since: Option<(u64, (u32, View))>,
    /// The longest such stretch seen, in steps.
    pub view_change_steps_longest: u64,
    /// Per replica: writes not yet completed, in order.
    writes_due: Vec<VecDeque<DueWrite>>,
    /// Per replica: the checkpoint its worker builds next (a replica asks for one build
    /// at a time).
    builds_due: Vec<Option<DueBuild>>,
    /// Draws the build delays, from a stream of its own (no other draw of a seed moves).
    build_prng: Prng,
    /// Per replica: the install of a fetched checkpoint its worker prepares next (one
    /// transfer at a time), beside a build (`CheckpointBuild::is_install`).
    installs_due: Vec<Option<DueBuild>>,
    /// Draws the install preparations' delays, from a stream of its own.
    install_prng: Prng,
    /// Draws the crashes right after a move to a new epoch, from a stream of its own.
    epoch_crash_prng: Prng,
    /// The replica to crash at the next step because it just moved to a new epoch
    /// (`crash_soon_after_epoch_change`).
    crash_after_epoch: Option<ReplicaIndex>,
    /// Each replica's disk (with `ClusterOptions::disks`).
    disks: Disks,
    /// What each replica's completed writes made durable.
    storage: Storage,
    /// Per replica (by identity): shut down for good (retired, or a replaced replica
    /// that lost its memory): never restarted.
    gone: Vec<bool>,
    /// Per replica: the configuration it knew at its last input, and whether it was a
    /// learner then: how its operator would restart it after a crash.
    last_configuration: Vec<Configuration>,
    was_joining: Vec<bool>,
    /// Per replica: the configuration it was first started with. With disks its operator
    /// restarts it with the same arguments, and the store says whether it moved on.
    first_configuration: Vec<Configuration>,
    /// Every configuration seen at some replica, by epoch.
    epochs: Vec<Configuration>,
    /// The administrator who asks for reconfigurations.
    admin: Admin,
    /// The highest op answered to any client when the administrator submitted.
    admin_answered_before: u64,
    /// Changes planned and not started, in order.
    plan: VecDeque<PlannedChange>,
    /// The change under way.
    change: Option<ChangeUnderWay>,
    /// Whether planned changes may start (off once the faults stop: a change under way
    /// finishes, no new one starts).
    pub reconfigure: bool,
    /// What reconfigurations did.
    pub reconfigurations: ReconfigurationCounts,
}

impl Cluster<Kv> {
    /// A cluster of key-value replicas (see [`Cluster::with_service`]).
    pub fn new(seed: u64, options: ClusterOptions) -> Cluster<Kv> {
        Cluster::with_service(seed, options)
    }
}

impl<S: SimService> Cluster<S> {
    /// A new cluster: every replica `Start::Fresh` (or recovering, see
    /// [`ClusterOptions::start_recovering`]), clients unregistered.
    pub fn with_service(seed: u64, options: ClusterOptions) -> Cluster<S> {
        options
            .config
            .validate()
            .expect("the simulator's config must be valid");
        assert!(options.client_count > 0);
        assert!(options.tick_steps_min > 0 && options.tick_steps_min <= options.tick_steps_max);
        let mut prng = Prng::new(seed);
        let config = options.config.clone();
        let first = Configuration::first(&config);
        let n = config.replica_count;
        assert!(n <= 32, "the checkers track replicas in a 32-bit mask");
        let replicas = (0..n)
            .map(|i| {
                let start = match options.start_recovering {
                    true => Start::Recover {
                        nonce: Prng::new(seed ^ i as u64).nonzero(),
                    },
                    false => Start::Fresh,
                };
                Some(Replica::new(config.clone(), i, S::fresh(), start))
            })
            .collect();
        let clocks = (0..n)
            .map(|_| {
                let tick_steps = prng.between(options.tick_steps_min, options.tick_steps_max);
                Clock {
                    tick_steps,
                    tick_next: prng.between(1, tick_steps),
                    drift_ppm: prng.between(0, 100_000) as i64 - 50_000,
                    offset_ns: prng.between(0, 200_000_000) as i64 - 100_000_000,
                }
            })
            .collect();
        let mut clients = Vec::with_capacity(options.client_count);
        let mut client_index = HashMap::new();
        for c in 0..options.client_count {
            let mut id = prng.nonzero();
            while client_index.contains_key(&id) {
                id = prng.nonzero();
            }
            client_index.insert(id, c);
            let session = ClientSession::new(id, n, options.request_timeout_ticks)
                .with_witnesses(config.witnesses.low_bits());
            clients.push(SimClient {
                session,
                last_outcome: None,
                completed: 0,
                evicted: 0,
                answered_before_submit: 0,
                reregistered: false,
                configuration: Configuration::first(&config),
            });
        }
        // From a stream of its own, so that the clients' draws stay as they were.
        let mut admin_id = Prng::new(seed ^ ADMIN_STREAM).nonzero();
        while client_index.contains_key(&admin_id) {
            admin_id = admin_id.wrapping_add(1).max(1);
        }
        client_index.insert(admin_id, ADMIN);
        let admin = Admin::new(
            admin_id,
            Configuration::first(&config),
            options.request_timeout_ticks,
        );
        let plan: VecDeque<PlannedChange> = options.reconfigurations.iter().copied().collect();
        let mut network = Network::new(n as usize, options.faults.network, ENVELOPES_MAX);
        network.trace = options.trace;
        let mut cluster = Cluster {
            network,
            checker: Checker::for_service_config(&config),
            watch: Watch::new(n as usize),
            workload: WorkloadShape {
                keys: options.keys.clamp(1, super::workload::KEYS_MAX),
                value_bytes_max: options.value_bytes_max.max(1),
                request_body_bytes_max: options.config.request_body_bytes_max,
            },
            seen: vec![None; n as usize],
            config,
            prng,
            now: 0,
            replicas,
            clocks,
            leases: SimLeases::new(options.leases, n as usize),
            clients,
            client_index,
            effects: Vec::with_capacity(64),
            filter: None,
            moved: 0,
            touched: 0,
            stats_retired: Stats::default(),
            recoveries_overlapped: false,
            view_change_entered: vec![None; n as usize],
            crash_next: None,
            flap: None,
            faults: FaultCounts::default(),
            inject: false,
            load: false,
            register: true,
            register_once: false,
            view_change_since: None,
            view_change_steps_longest: 0,
            writes_due: vec![VecDeque::new(); n as usize],
            builds_due: vec![None; n as usize],
            build_prng: Prng::new(seed ^ BUILD_STREAM),
            installs_due: vec![None; n as usize],
            install_prng: Prng::new(seed ^ INSTALL_STREAM),
            epoch_crash_prng: Prng::new(seed ^ EPOCH_CRASH_STREAM),
            crash_after_epoch: None,
            disks: Disks::new(n as usize, seed),
            storage: Storage::new(n as usize),
            gone: vec![false; n as usize],
            last_configuration: vec![first.clone(); n as usize],
            first_configuration: vec![first.clone(); n as usize],
            was_joining: vec![false; n as usize],
            epochs: vec![first],
            admin,
            admin_answered_before: 0,
            reconfigurations: ReconfigurationCounts {
                planned: plan.len() as u64,
                ..ReconfigurationCounts::default()
            },
            plan,
            change: None,
            reconfigure: true,
            options,
        };
        if cluster.options.disks && !cluster.options.start_recovering {
            for index in 0..n {
                let state = cluster.replicas[index as usize]
                    .as_ref()
                    .expect("every replica is live at the start")
                    .durable_state();
                cluster.disks.format(index, state);
                cluster
                    .storage
                    .on_crash_keeping(index, cluster.disks.image(index));
            }
        }
        cluster
    }

    /// The current step.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The configuration every replica runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The options the cluster was built with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The replicas' simulated disks.
    pub fn disks(&self) -> &Disks {
        &self.disks
    }

    /// What each replica's completed writes made durable.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Replica `index`, unless it is crashed.
    pub fn replica(&self, index: ReplicaIndex) -> Option<&Replica<S>> {
        self.replicas[index as usize].as_ref()
    }

    /// Number of replicas the cluster started with.
    pub fn replica_count(&self) -> u8 {
        self.config.replica_count
    }

    /// Replicas ever started, by identity: the first configuration's members and every
    /// member a reconfiguration added (crashed and retired ones included).
    pub fn replica_slots(&self) -> u8 {
        self.replicas.len() as u8
    }

    /// Whether replica `id` was shut down for good (retired, or replaced and lost).
    pub fn is_gone(&self, id: ReplicaIndex) -> bool {
        self.gone[id as usize]
    }

    /// The newest configuration any replica has reached.
    pub fn newest_configuration(&self) -> &Configuration {
        self.epochs.last().expect("the first configuration")
    }

    /// The configuration of `epoch`, once some replica reached it.
    pub fn configuration_of(&self, epoch: u32) -> Option<&Configuration> {
        self.epochs.get(epoch as usize)
    }

    /// The administrator.
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// Whether no reconfiguration is under way or planned to start.
    pub fn reconfigurations_done(&self) -> bool {
        self.change.is_none() && (self.plan.is_empty() || !self.reconfigure)
    }

    /// Client `index`.
    pub fn client(&self, index: usize) -> &SimClient {
        &self.clients[index]
    }

    /// Number of clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// The checkers' state.
    pub fn checker(&self) -> &Checker<S> {
        &self.checker
    }

    /// State-transfer counters, from the NewStates delivered.
    pub fn transfers(&self) -> TransferCounts {
        self.watch.counts
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Sets the network's fault rates (the current partitions stay).
    pub fn set_network_faults(&mut self, faults: NetworkFaults) {
        self.network.faults = faults;
    }

    /// `inject`: hands `envelope` to the network as if sent now (a scenario replaying a
    /// message captured earlier, e.g. one sent before its sender crashed).
    pub fn inject(&mut self, envelope: Envelope) {
        self.trace(format_args!(
            "inject {:?} -> {:?} {}",
            envelope.from,
            envelope.to,
            envelope.message.body.name()
        ));
        let Envelope { from, to, message } = envelope;
        self.network
            .send(&mut self.prng, self.now, from, to, message);
    }

    /// Drops every delivery for which `filter` returns true, until [`Cluster::clear_filter`].
    pub fn set_filter(&mut self, filter: Filter) {
        self.filter = Some(filter);
    }

    /// Removes the delivery filter.
    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    /// The primary of the highest view (of the highest epoch) among live replicas in
    /// normal status, if that replica is itself normal and primary: its identity.
    pub fn primary(&self) -> Option<ReplicaIndex> {
        self.replicas
            .iter()
            .flatten()
            .filter(|r| r.status() == Status::Normal && r.is_primary())
            .max_by_key(|r| (r.epoch(), r.view()))
            .map(|r| node_of(r.id()))
    }

    /// Replicas crashed (and not gone for good) or recovering.
    pub fn down_count(&self) -> usize {
        (0..self.replicas.len())
            .filter(|&id| !self.gone[id])
            .filter(|&id| {
                self.replicas[id]
                    .as_ref()
                    .is_none_or(|r| r.status() == Status::Recovering)
            })
            .count()
    }

    /// Whether every client (and the administrator) has no request in flight.
    pub fn clients_idle(&self) -> bool {
        self.clients.iter().all(|c| !c.session.is_busy()) && !self.admin.is_busy()
    }

    /// Whether every member of the newest configuration is live and normal in its epoch,
    /// in one view, at the highest commit seen, and every other replica was shut down
    /// (retired, paper 7.3) or never started.
    pub fn converged(&self) -> bool {
        let committed = self.checker.committed_max();
        let newest = self.newest_configuration();
        let mut view = None;
        (0..self.replicas.len()).all(|id| {
            if self.gone[id] {
                return true;
            }
            let Some(r) = self.replicas[id].as_ref() else {
                return false;
            };
            let same_view = *view.get_or_insert(r.view()) == r.view();
            // A witness the primary no longer involves lags by design (paper 6.1): the
            // primary must have let the witnesses step back instead.
            let caught_up = match r.is_witness() {
                true => r.commit() <= committed,
                false => r.commit() == committed && !r.involves_witnesses(),
            };
            newest.contains_id(id as ReplicaId)
                && r.epoch() == newest.epoch()
                && r.status() == Status::Normal
                && same_view
                && caught_up
        })
    }

    /// Liveness of view changes once faults stopped: from the first step at which some
    /// live replica is changing views to view v, within `steps_max` steps f+1 replicas
    /// must be normal in one view at least v.
    pub fn check_view_change_progress(&mut self, steps_max: u64) -> Result<(), Failure> {
        let changing = self
            .replicas
            .iter()
            .flatten()
            .filter(|r| r.status() == Status::ViewChange)
            .map(|r| (r.epoch(), r.view()))
            .max();
        let Some((since, view)) = self.view_change_since.or(changing.map(|v| (self.now, v))) else {
            return Ok(());
        };
        // A later epoch ends every view change of an earlier one.
        let finished = self.replicas.iter().flatten().any(|r| {
            let at = (r.epoch(), r.view());
            at >= view
                && r.status() == Status::Normal
                && self
                    .replicas
                    .iter()
                    .flatten()
                    .filter(|o| o.status() == Status::Normal && (o.epoch(), o.view()) == at)
                    .count()
                    >= r.configuration().quorum()
        });
        let steps = self.now - since;
        self.view_change_steps_longest = self.view_change_steps_longest.max(steps);
        if finished {
            self.view_change_since = None;
            return Ok(());
        }
        self.view_change_since = Some((since, view));
        if steps > steps_max {
            return Err(Failure::new(
                "liveness",
                format!("a view change to (epoch, view) {view:?} (or later), under way since step {since}, has not finished in {steps_max} steps with every replica up and the network calm"),
            ));
        }
        Ok(())
    }

    /// The replicas' counters, including those of replicas that crashed since.
    pub fn stats(&self) -> Stats {
        let mut total = self.stats_retired.clone();
        for replica in self.replicas.iter().flatten() {
            add_stats(&mut total, replica.stats());
        }
        total
    }

    /// `partition`: cuts every link between `group` and the other replicas.
    pub fn partition(&mut self, group: &[ReplicaIndex]) {
        self.faults.partition += 1;
        self.trace(format_args!("partition {group:?} | rest"));
        self.network.partition(group);
    }

    /// `partition` (asymmetric): `group` still hears the others but cannot reach them.
    pub fn partition_outbound(&mut self, group: &[ReplicaIndex]) {
        self.faults.partition += 1;
        self.trace(format_args!("partition {group:?} -/-> rest (one way)"));
        self.network.partition_outbound(group);
    }

    /// `partition` (one link): messages from `from` to `to` are lost.
    pub fn block(&mut self, from: ReplicaIndex, to: ReplicaIndex) {
        self.faults.partition += 1;
        self.trace(format_args!("block {from} -> {to}"));
        self.network.set_link(from, to, true);
    }

    /// `heal`: removes every partition.
    pub fn heal(&mut self) {
        if self.network.partitioned() {
            self.faults.heal += 1;
            self.trace(format_args!("heal"));
        }
        self.network.heal();
    }

    /// `replay`: the network delivers one old replica-to-replica message again, if it
    /// kept any (it keeps them only while its `replay_ppm` is above zero).
    pub fn replay(&mut self) {
        self.network.replay(&mut self.prng, self.now);
    }

    /// `replay` of an old message for which `wanted` holds, if the network kept one.
    pub fn replay_where(&mut self, wanted: impl Fn(&Envelope) -> bool) {
        self.network.replay_where(&mut self.prng, self.now, wanted);
    }

    /// `crash`: replica `index` loses all its memory.
    pub fn crash(&mut self, index: ReplicaIndex) {
        let replica = self.replicas[index as usize]
            .take()
            .expect("crash a live replica");
        add_stats(&mut self.stats_retired, replica.stats());
        self.writes_due[index as usize].clear(); // Lost with the process.
        self.leases.on_crash(index);
        self.builds_due[index as usize] = None;
        self.installs_due[index as usize] = None;
        match self.options.disks {
            true => {
                self.disks.on_crash(index);
                self.storage
                    .on_crash_keeping(index, self.disks.image(index));
            }
            false => self.storage.on_crash(index),
        }
        self.faults.crash += 1;
        self.seen[index as usize] = None;
        self.trace(format_args!(
            "crash r{index} (was {:?} view {} op {} commit {})",
            replica.status(),
            replica.view(),
            replica.op(),
            replica.commit()
        ));
    }

    /// `restart`: replica `index` comes back and, without a disk, runs the recovery
    /// protocol; with one (`ClusterOptions::disks`) it resumes from what its disk holds
    /// (at the seed's rate, first finding a corrupted sector there). As its operator
    /// would start it: in the configuration it last knew; a learner without a disk
    /// joins again, and a replaced replica without one is gone for good.
    pub fn restart(&mut self, index: ReplicaIndex) {
        assert!(
            self.replicas[index as usize].is_none() && !self.gone[index as usize],
            "restart a crashed replica"
        );
        let nonce = self.prng.nonzero();
        self.leases.on_restart(index, self.now);
        let configuration = match self.options.disks {
            true => self.first_configuration[index as usize].clone(),
            false => self.last_configuration[index as usize].clone(),
        };
        let id = index as ReplicaId;
        let start = match self.options.disks {
            false if self.was_joining[index as usize] => Start::Join { id },
            false if !configuration.contains_id(id) => {
                // Replaced (paper 7.3): without its memory it holds nothing to serve.
                self.gone[index as usize] = true;
                self.trace(format_args!(
                    "r{index} was replaced and lost its memory: gone"
                ));
                return;
            }
            true => {
                // Not a store that holds nothing (a replica that never joined): a new
                // cluster starts only when every store says it holds nothing, so one
                // corrupt empty directory keeps it from starting, loudly and by design
                // (ARCHITECTURE.md, "Restarting from disk", 7: an operator replaces the
                // directory). Checked before the draws of the damage itself, after the
                // chance, so that other seeds replay unchanged.
                if self.inject
                    && self.prng.chance(self.options.faults.disk_damage_ppm)
                    && self.may_lose_memory(index)
                    && self.disks.image(index).holds_data()
                {
                    self.damage_disk(index);
                }
                let stored = self.disks.read_back(index);
                self.trace(format_args!(
                    "r{index}'s disk: {:?}, checkpoint {}, log {}..={}, commit {}, damage {:?}",
                    stored.state,
                    stored.checkpoint_op(),
                    stored.log_base,
                    stored.op(),
                    stored.commit,
                    stored.damage
                ));
                Start::Restart {
                    stored: Box::new(stored),
                    nonce,
                }
            }
            false => Start::Recover { nonce },
        };
        let replica =
            Replica::in_configuration(self.config.clone(), configuration, id, S::fresh(), start);
        let recovering = replica.status() == Status::Recovering;
        let commit = replica.commit();
        self.trace(format_args!(
            "restart r{index} (nonce {nonce:x}) {:?} view {} op {} commit {}",
            replica.status(),
            replica.view(),
            replica.op(),
            replica.commit()
        ));
        self.replicas[index as usize] = Some(replica);
        self.touched |= 1 << index;
        match self.options.disks {
            true => self.checker.on_restart_from_disk(index, commit),
            false => self.checker.on_restart(index),
        }
        self.watch.on_restart(index, recovering);
        self.faults.restart += 1;
    }

    /// A corrupted sector on crashed replica `index`'s disk, found when it restarts (see
    /// `sim::disk`).
    pub fn damage_disk(&mut self, index: ReplicaIndex) {
        let image = self.disks.image(index);
        let op = image.log_base + self.prng.below(image.entries.len() as u64 + 1) + 1;
        self.damage_disk_at(index, op);
        if self.prng.chance(250_000) {
            self.disks.lose_state(index);
            self.storage
                .on_crash_keeping(index, self.disks.image(index));
            self.trace(format_args!("r{index}'s state record is lost"));
        }
    }

    /// A corrupted sector at `op` of crashed replica `index`'s journal (see
    /// `sim::disk`): it keeps the entries before `op` and its state record.
    pub fn damage_disk_at(&mut self, index: ReplicaIndex, op: Op) {
        assert!(self.options.disks, "damage needs disks");
        assert!(
            self.replicas[index as usize].is_none(),
            "damage a crashed replica's disk"
        );
        self.disks.damage_at(index, op);
        self.storage
            .on_crash_keeping(index, self.disks.image(index));
        self.faults.disk_damage += 1;
        self.trace(format_args!("r{index}'s disk is damaged at op {op}"));
    }

    /// Completes writes of `index` on its disk; a whole batch is checked against the
    /// copies the disks hold of committed ops (`Disks::check_copies`, with the bound of
    /// the smallest configuration any epoch had: f+1 of its replicas hold every op it
    /// committed).
    fn complete_on_disk(
        &mut self,
        index: ReplicaIndex,
        writes: Vec<StoredWrite>,
        ends_batch: bool,
    ) -> Result<(), Failure> {
        let before = self.disks.held(index);
        self.disks.complete(index, writes, ends_batch)?;
        if ends_batch {
            let f_min = (self.epochs.iter())
                .map(|configuration| (configuration.replica_count() as usize - 1) / 2)
                .min()
                .expect("the first configuration");
            let committed = self.checker.committed_max();
            self.disks
                .check_copies(index, before, committed, f_min + 1)?;
        }
        Ok(())
    }

    /// Crashed replica `index`'s disk is replaced by an empty one (a new machine).
    pub fn wipe_disk(&mut self, index: ReplicaIndex) {
        assert!(self.options.disks, "wipe needs disks");
        assert!(
            self.replicas[index as usize].is_none(),
            "wipe a crashed replica's disk"
        );
        self.disks.wipe(index);
        self.storage.on_crash(index);
        self.trace(format_args!("r{index}'s disk is replaced by an empty one"));
    }

    /// Writes replica `index` issued that have not completed.
    pub fn writes_pending(&self, index: ReplicaIndex) -> usize {
        self.writes_due[index as usize].len()
    }

    /// Whether replica `index` may come back without (all of) its memory and still leave
    /// at most f replicas that lost theirs: no other replica is recovering, live or (its
    /// disk says) crashed while recovering.
    fn may_lose_memory(&self, index: ReplicaIndex) -> bool {
        (0..self.replica_slots())
            .filter(|&other| other != index && !self.gone[other as usize])
            .all(|other| match &self.replicas[other as usize] {
                Some(replica) => replica.status() != Status::Recovering,
                None => !self.disks.recovering(other),
            })
    }

    /// A power loss: every live replica crashes at once (with disks only: without them
    /// the cluster's data would be gone). Also during a new cluster's first start: its
    /// primary orders nothing until every replica joined (`normal::prepare_batches`).
    pub fn power_loss(&mut self) {
        assert!(self.options.disks, "a power loss needs disks");
        self.faults.power_loss += 1;
        if !self.disks.all_joined() {
            self.faults.power_loss_first_start += 1;
        }
        self.trace(format_args!("power loss"));
        for index in 0..self.replica_slots() {
            if self.replicas[index as usize].is_some() {
                self.crash(index);
            }
        }
    }

    /// Starts (or restarts) client `client`'s registration; it must be idle.
    pub fn register_client(&mut self, client: usize) {
        let (target, message) = self.clients[client].session.register();
        self.clients[client].answered_before_submit = self.checker.answered_op_max();
        self.trace(format_args!("c{client} registers"));
        self.send_from_client(client, target, message);
    }

    /// Submits `op` on client `client`'s session.
    pub fn submit_operation(
        &mut self,
        client: usize,
        operation: Bytes,
    ) -> Result<RequestNumber, SubmitError> {
        let described = self
            .options
            .trace
            .then(|| S::describe_operation(&operation));
        let (request, target, message) = self.clients[client].session.submit(operation)?;
        if let Body::Request(sent) = &message.body {
            if sent.body.len() > self.config.request_body_bytes_max as usize {
                self.checker
                    .on_oversized_request(sent.client, sent.session, sent.request);
            }
        }
        self.clients[client].answered_before_submit = self.checker.answered_op_max();
        self.trace(format_args!(
            "c{client} submits request {request}: {}",
            described.unwrap_or_default()
        ));
        self.send_from_client(client, target, message);
        Ok(request)
    }

    /// Client `client` reads `query` in `mode` (strict reads are checked like any
    /// request; backup reads by the causal rule, `sim::reads`).
    pub fn submit_read(&mut self, client: usize, query: Bytes, mode: ReadMode) {
        let sim_client = &mut self.clients[client];
        let (number, target, message) = sim_client
            .session
            .submit_operation(mode.operation(), query)
            .expect("an idle registered client can read");
        let message = message.clone();
        sim_client.answered_before_submit = self.checker.answered_op_max();
        self.trace(format_args!("c{client} reads ({mode}) {number}"));
        self.send_from_client(client, target, message);
    }

    /// Advances one step and runs the checkers.
    pub fn step(&mut self) -> Result<(), Failure> {
        self.now += 1;
        if self.inject {
            self.inject_faults();
        }
        // What waited for a replica that resumed comes first, in the order it arrived.
        let now = self.now;
        let released = self.leases.release(now, |envelope| match envelope.to {
            Node::Replica(index) => index,
            Node::Client(_) => unreachable!("only replicas pause"),
        });
        for envelope in released {
            if let Node::Replica(index) = envelope.to {
                self.deliver_to_replica(index, envelope)?;
            }
        }
        while let Some(envelope) = self.network.pop_due(self.now) {
            if let Node::Replica(index) = envelope.to {
                if self.leases.paused(index, self.now) {
                    self.leases.hold(envelope);
                    continue;
                }
            }
            if let Some(filter) = self.filter.as_mut() {
                if filter(&envelope) {
                    self.trace(format_args!(
                        "filter drops {:?} -> {:?} {}",
                        envelope.from,
                        envelope.to,
                        envelope.message.body.name()
                    ));
                    continue;
                }
            }
            match envelope.to {
                Node::Replica(index) => self.deliver_to_replica(index, envelope)?,
                Node::Client(client) => self.deliver_to_client(client, envelope.message)?,
            }
        }
        self.complete_due_writes()?;
        self.complete_due_builds()?;
        self.tick_replicas()?;
        if self.now.is_multiple_of(self.options.client_tick_steps) {
            self.tick_clients();
        }
        self.drive_reconfiguration()?;
        self.drive_clients();
        self.check()
    }

    fn deliver_to_replica(
        &mut self,
        index: ReplicaIndex,
        envelope: Envelope,
    ) -> Result<(), Failure> {
        let now = self.now;
        let Some(replica) = self
            .replicas
            .get_mut(index as usize)
            .and_then(|replica| replica.as_mut())
        else {
            return Ok(());
        };
        if self.options.trace {
            eprintln!(
                "step {now}: {:?} -> r{index} {}",
                envelope.from,
                summarize(&envelope.message)
            );
        }
        // Indexes on the wire are positions in the message's epoch (paper 7).
        let (primary_of, to_index) = match self.epochs.get(envelope.message.epoch as usize) {
            Some(configuration) => (
                Some(configuration.primary_of(envelope.message.view)),
                configuration.index_of(index as ReplicaId),
            ),
            None => (None, None),
        };
        self.watch.on_deliver(
            index,
            (replica.epoch(), replica.view()),
            primary_of,
            to_index,
            &envelope.message,
        );
        replica.set_clock(self.clocks[index as usize].realtime_ns(now));
        if let Some(monotonic_ns) = self.leases.monotonic_ns(index, now) {
            replica.set_monotonic_ns(monotonic_ns);
        }
        let immediate = self.options.write_delay_steps_max == 0;
        // A client's request carries a route token, as the runtime's do (the client's
        // node), except for odd clients', as from a runtime's I/O thread: their replies
        // are routed by client id only.
        let route = match envelope.from {
            Node::Client(client) if client % 2 == 0 => Some(RouteToken(client as u64)),
            _ => None,
        };
        if now.is_multiple_of(2) {
            // As the runtime hands a connection's run of lease reads over (a run of one
            // here; anything else goes the per-message way inside).
            let reads = std::iter::once(envelope.message);
            replica.on_lease_reads(reads, route, &mut self.effects);
        } else {
            replica.on_client_request(envelope.message, route, &mut self.effects);
        }
        if immediate {
            replica.complete_writes_in_memory(&mut self.effects);
        }
        replica.flush(&mut self.effects);
        if immediate {
            replica.complete_writes_in_memory(&mut self.effects);
        }
        self.dispatch(index)?;
        self.check_commits(index)
    }

    /// Agreement for one replica right after it handled an input, so that ops it commits
    /// are seen before a checkpoint in a later input trims them from its log.
    fn check_commits(&mut self, index: ReplicaIndex) -> Result<(), Failure> {
        self.touched |= 1 << index;
        let Some(replica) = self.replicas[index as usize].as_ref() else {
            return Ok(());
        };
        if self.checker.check_replica(index, replica)? {
            self.moved |= 1 << index;
        }
        self.checker.check_checkpoint(index, replica)?;
        self.checker.check_view_start(index, replica)?;
        self.checker.check_epoch(index, replica)?;
        self.watch.check_new_primary(index, replica)?;
        self.replay_into_view_change(index);
        self.note_configuration(index);
        Ok(())
    }

    /// After replica `index` handled an input: records a configuration no replica had
    /// reached before, what its operator would restart it with, and shuts it down once
    /// it retired (paper 7.3: its driver's job).
    fn note_configuration(&mut self, index: ReplicaIndex) {
        let Some(replica) = self.replicas[index as usize].as_ref() else {
            return;
        };
        let epoch = replica.epoch();
        while self.epochs.len() <= epoch as usize {
            let next = self.epochs.len() as u32;
            let Some(configuration) = replica.configuration_of(next) else {
                break;
            };
            self.epochs.push(configuration.clone());
            self.reconfigurations.epoch_max = u64::from(next);
            self.trace(format_args!("epoch {next} begins: {configuration:?}"));
        }
        let moved = self.last_configuration[index as usize].epoch() != epoch;
        if moved {
            self.last_configuration[index as usize] = replica.configuration().clone();
        }
        self.was_joining[index as usize] = replica.status() == Status::Joining;
        if replica.is_retired() {
            let replica = self.replicas[index as usize].take().expect("live");
            add_stats(&mut self.stats_retired, replica.stats());
            self.writes_due[index as usize].clear();
            self.builds_due[index as usize] = None;
            self.installs_due[index as usize] = None;
            self.gone[index as usize] = true;
            self.seen[index as usize] = None;
            self.reconfigurations.retired += 1;
            self.trace(format_args!(
                "r{index} retired (epoch {epoch}, commit {}): shut down",
                replica.commit()
            ));
        }
        if moved && self.replicas[index as usize].is_some() {
            self.crash_soon_after_epoch_change(index);
        }
    }

    /// When replica `index` has just entered a view change, sometimes replays an old
    /// message to it for that view: a DoViewChange from another replica's previous life
    /// arriving just when it can complete a quorum is the case plain random replays
    /// almost never hit.
    fn replay_into_view_change(&mut self, index: ReplicaIndex) {
        let Some(replica) = self.replicas[index as usize].as_ref() else {
            return;
        };
        let now = (replica.status() == Status::ViewChange).then_some(replica.view());
        let before = std::mem::replace(&mut self.view_change_entered[index as usize], now);
        let Some(view) = now.filter(|&view| Some(view) != before) else {
            return;
        };
        let replay_ppm = self.options.faults.network.replay_ppm;
        let chance_ppm = (replay_ppm * 20).max(300_000);
        if !self.inject || replay_ppm == 0 || !self.prng.chance(chance_ppm) {
            return;
        }
        self.network
            .replay_where(&mut self.prng, self.now, |envelope| {
                envelope.to == Node::Replica(index) && envelope.message.view == view
            });
    }

    fn deliver_to_client(&mut self, client: usize, message: Message) -> Result<(), Failure> {
        if self.options.trace {
            let who = match client {
                ADMIN => "admin".to_string(),
                client => format!("c{client}"),
            };
            eprintln!("step {}: -> {who} {}", self.now, summarize(&message));
        }
        if client == ADMIN {
            return self.deliver_to_admin(message);
        }
        let session = self.clients[client].session.session();
        // A backup read's answer is held to the causal rule before the session filters
        // it; a lease read's answered at the primary, to linearizability (a lease read
        // fallen back to the log is a strict read, checked as a request).
        let backup_read = BackupRead::in_flight(&self.clients[client].session);
        if let Some(read) = &backup_read {
            if let Some((op, result)) = read.answer(&message) {
                match read.lease {
                    true => self.checker.on_lease_read(
                        read,
                        op,
                        result,
                        self.clients[client].answered_before_submit,
                    )?,
                    false => self.checker.on_backup_read(read, op, result)?,
                }
            }
        }
        let outcome = self.clients[client].session.on_message(&message);
        let Some(outcome) = outcome else {
            return Ok(());
        };
        self.trace(format_args!("c{client} outcome {outcome:?}"));
        if let Outcome::NewEpoch { configuration } = outcome {
            // Paper 7: the cluster moved on; the session follows the configuration
            // named, and its request in flight goes to the new members at once.
            self.clients[client].configuration = configuration;
            self.reconfigurations.clients_moved += 1;
            if let Some(message) = self.clients[client].session.in_flight().cloned() {
                self.send_from_client(client, Target::All, message);
            }
            return Ok(());
        }
        let id = self.clients[client].session.client();
        let reply = match &outcome {
            Outcome::Registered { session } => Some(ClientReply::Registered {
                client: id,
                session: *session,
            }),
            // Judged above: not ordered, so not linearizable.
            Outcome::Completed { .. } if backup_read.is_some() => None,
            Outcome::Completed {
                request,
                op,
                result,
            } => Some(ClientReply::Completed {
                client: id,
                session,
                request: *request,
                op: *op,
                result: result.clone(),
            }),
            // The workload's operations stay under the size limit; a refusal changes
            // nothing that could be checked. (NewEpoch is handled above.)
            Outcome::Evicted { .. } | Outcome::Rejected { .. } | Outcome::NewEpoch { .. } => None,
        };
        let sim_client = &mut self.clients[client];
        match &outcome {
            Outcome::Completed { .. } => sim_client.completed += 1,
            Outcome::Evicted { .. } => sim_client.evicted += 1,
            Outcome::Registered { .. } | Outcome::Rejected { .. } | Outcome::NewEpoch { .. } => {}
        }
        sim_client.last_outcome = Some(outcome);
        match reply {
            Some(reply) => self
                .checker
                .on_reply(reply, sim_client.answered_before_submit),
            None => Ok(()),
        }
    }

    /// An answer to the administrator: follows NewEpoch answers, and moves the change
    /// under way on (a registration, or the RECONFIGURATION's answer). Its answers are
    /// checked against the model like any client's.
    fn deliver_to_admin(&mut self, message: Message) -> Result<(), Failure> {
        let session = self.admin.session();
        let (outcome, resend) = self.admin.on_message(&message);
        if let Some(message) = resend {
            self.reconfigurations.clients_moved += 1;
            self.trace(format_args!(
                "admin moves to epoch {}",
                self.admin.configuration().epoch()
            ));
            self.send_from_admin(message);
        }
        let Some(outcome) = outcome else {
            return Ok(());
        };
        self.trace(format_args!("admin outcome {outcome:?}"));
        let client = self.admin.id();
        let reply = match outcome {
            AdminOutcome::Registered { session } => ClientReply::Registered { client, session },
            AdminOutcome::Reconfigured {
                request,
                op,
                result,
            } => {
                self.reconfigurations.committed += 1;
                self.change = None;
                ClientReply::Completed {
                    client,
                    session,
                    request,
                    op,
                    result,
                }
            }
            AdminOutcome::Evicted => {
                // The RECONFIGURATION may or may not have executed: ask again (a second
                // one for the same epoch is refused if the first committed, and then the
                // change is done: see `drive_reconfiguration`).
                if let Some(change) = self.change.as_mut() {
                    change.asked = false;
                }
                return Ok(());
            }
            AdminOutcome::Rejected { reason, .. } if reason == IN_PROGRESS => {
                // From a primary of a view that a view change replaced, still holding an
                // earlier attempt of this administrator queued (one it re-registered
                // after): a refusal it cannot know to be stale. Ask again.
                if let Some(change) = self.change.as_mut() {
                    change.asked = false;
                }
                return Ok(());
            }
            AdminOutcome::Rejected { request, reason } => {
                return Err(Failure::new(
                    "reconfiguration",
                    format!("the administrator's request {request} was refused: {reason}"),
                ))
            }
        };
        self.checker.on_reply(reply, self.admin_answered_before)
    }

    /// Moves the planned reconfigurations on (paper 7, and 7.5 for the warm-up): starts
    /// the next one once the previous one is done and every live member runs the newest
    /// epoch normally (new members join as learners, `Start::Join`), registers the
    /// administrator, and after the warm-up asks for the change.
    fn drive_reconfiguration(&mut self) -> Result<(), Failure> {
        let Some(change) = &self.change else {
            return self.start_planned_change();
        };
        if change.asked || self.now < change.ask_at || self.admin.is_busy() {
            return Ok(());
        }
        if !self.within_f(None, 0) {
            // An operator asks only for a configuration that can run: not while more of
            // its members than it tolerates are down (crashed before the change began).
            return Ok(());
        }
        if self.newest_configuration().epoch() >= change.proposal.epoch() {
            // It committed, though its answer was lost to an eviction.
            self.change = None;
            return Ok(());
        }
        if self.admin.session() == 0 {
            let message = self.admin.register();
            self.admin_answered_before = self.checker.answered_op_max();
            self.trace(format_args!("admin registers"));
            self.send_from_admin(message);
            return Ok(());
        }
        let proposal = change.proposal.clone();
        let current = self.newest_configuration().clone();
        let (request, message) = self.admin.reconfigure(&current, &proposal);
        self.admin_answered_before = self.checker.answered_op_max();
        self.trace(format_args!(
            "admin asks (request {request}) for epoch {}: {proposal:?}",
            proposal.epoch()
        ));
        if let Some(change) = self.change.as_mut() {
            change.asked = true;
        }
        self.send_from_admin(message);
        Ok(())
    }

    /// Starts the next planned change if it is due and the newest epoch runs: every
    /// member that is up is in it and normal.
    fn start_planned_change(&mut self) -> Result<(), Failure> {
        if !self.reconfigure || self.plan.front().is_none_or(|next| next.at > self.now) {
            return Ok(());
        }
        let newest = self.newest_configuration().clone();
        let running = newest.ids().all(|id| {
            self.replicas[id as usize].as_ref().is_none_or(|replica| {
                replica.epoch() == newest.epoch() && replica.status() == Status::Normal
            })
        });
        if !running {
            return Ok(());
        }
        let planned = self.plan.pop_front().expect("a change is due");
        let ids: Vec<ReplicaId> = newest.ids().collect();
        let (kept, added) = planned.shape(&ids);
        let witnesses = planned.witnesses(&kept, added);
        self.start_change_with_witnesses(&kept, added, planned.warm_up_steps, witnesses);
        Ok(())
    }

    /// Starts a reconfiguration of the newest configuration now: `added` new members
    /// start as learners (identities from its `next_id` up), and after `warm_up_steps`
    /// the administrator asks for `kept` and them (paper 7). Returns the configuration
    /// asked for. One change at a time.
    pub fn start_change(
        &mut self,
        kept: &[ReplicaId],
        added: usize,
        warm_up_steps: u64,
    ) -> Configuration {
        self.start_change_with_witnesses(kept, added, warm_up_steps, ReplicaSet::default())
    }

    /// [`Cluster::start_change`] to a configuration whose witnesses (paper 6.1) are
    /// `witnesses`, by index in it (kept members first, then the added ones).
    pub fn start_change_with_witnesses(
        &mut self,
        kept: &[ReplicaId],
        added: usize,
        warm_up_steps: u64,
        witnesses: ReplicaSet,
    ) -> Configuration {
        assert!(self.change.is_none(), "one reconfiguration at a time");
        let newest = self.newest_configuration().clone();
        let addresses: Vec<Bytes> = (0..added as u64)
            .map(|k| Bytes::from(format!("sim-r{}", newest.next_id() + k)))
            .collect();
        let proposal = newest
            .propose(kept, &addresses)
            .with_proposed_witnesses(witnesses);
        for id in proposal.ids().filter(|&id| !newest.contains_id(id)) {
            self.add_learner(id, &newest);
        }
        self.reconfigurations.started += 1;
        match (added, kept.len() < newest.replica_count() as usize) {
            (0, _) => self.reconfigurations.shrink += 1,
            (_, true) => self.reconfigurations.replace += 1,
            (_, false) => self.reconfigurations.grow += 1,
        }
        self.trace(format_args!(
            "reconfiguration planned: {kept:?} kept, {added} added, witnesses {:?}, asked in {warm_up_steps} steps",
            witnesses.iter().collect::<Vec<_>>()
        ));
        self.change = Some(ChangeUnderWay {
            proposal: proposal.clone(),
            ask_at: self.now + warm_up_steps,
            asked: false,
        });
        proposal
    }

    /// A new member `id` starts as a learner of `configuration` (`Start::Join`,
    /// paper 7.5), with an empty disk.
    pub fn add_learner(&mut self, id: ReplicaId, configuration: &Configuration) {
        let slot = id as usize;
        assert_eq!(slot, self.replicas.len(), "identities are added in order");
        assert!(slot < 32, "the checkers track replicas in a 32-bit mask");
        let replica = Replica::in_configuration(
            self.config.clone(),
            configuration.clone(),
            id,
            S::fresh(),
            Start::Join { id },
        );
        self.replicas.push(Some(replica));
        let tick_steps = self
            .prng
            .between(self.options.tick_steps_min, self.options.tick_steps_max);
        self.clocks.push(Clock {
            tick_steps,
            tick_next: self.now + self.prng.between(1, tick_steps),
            drift_ppm: self.prng.between(0, 100_000) as i64 - 50_000,
            offset_ns: self.prng.between(0, 200_000_000) as i64 - 100_000_000,
        });
        self.leases.add_replica(self.now);
        self.seen.push(None);
        self.view_change_entered.push(None);
        self.writes_due.push(VecDeque::new());
        self.builds_due.push(None);
        self.installs_due.push(None);
        self.gone.push(false);
        self.last_configuration.push(configuration.clone());
        self.first_configuration.push(configuration.clone());
        self.was_joining.push(true);
        let slots = self.replicas.len();
        self.network.grow(slots);
        self.watch.grow(slots);
        self.checker.grow(slots);
        self.storage.grow(slots);
        self.disks.grow(slots);
        self.touched |= 1 << slot;
        self.trace(format_args!(
            "r{id} starts as a learner of epoch {}",
            configuration.epoch()
        ));
    }

    /// Starts the administrator's registration now (it must be idle); a change asks as
    /// soon as it is due once the administrator is registered.
    pub fn register_admin(&mut self) {
        let message = self.admin.register();
        self.admin_answered_before = self.checker.answered_op_max();
        self.trace(format_args!("admin registers"));
        self.send_from_admin(message);
    }

    /// Sends the administrator's message to every member of the configuration it knows.
    fn send_from_admin(&mut self, message: Message) {
        let members: Vec<ReplicaIndex> = self.admin.configuration().ids().map(node_of).collect();
        for to in members {
            self.network.send(
                &mut self.prng,
                self.now,
                Node::Client(ADMIN),
                Node::Replica(to),
                message.clone(),
            );
        }
    }

    /// Carries out the effects replica `from` just wrote, checking its refusals.
    fn dispatch(&mut self, from: ReplicaIndex) -> Result<(), Failure> {
        let mut effects = std::mem::take(&mut self.effects);
        let refusals = effects
            .iter()
            .try_for_each(|effect| self.check_refusal(from, effect));
        if let Err(failure) = refusals {
            effects.clear();
            self.effects = effects;
            return Err(failure);
        }
        let promised = effects.iter().any(|effect| {
            matches!(effect, Effect::Send { message, .. } if matches!(message.body, Body::DoViewChange(_)))
        });
        if promised && self.inject {
            self.crash_soon_after_promise(from);
        }
        let delay_max = self.options.write_delay_steps_max;
        let mut captured = self.capture_writes(from, &effects).into_iter();
        if delay_max == 0 {
            // Every write completed within its input, before its messages were released.
            for effect in &effects {
                if let Effect::Write { write, .. } = effect {
                    self.storage.complete(from, *write)?;
                }
            }
            let batch: Vec<StoredWrite> = captured.by_ref().flatten().collect();
            if !batch.is_empty() {
                self.complete_on_disk(from, batch, true)?;
            }
        }
        let writes = effects
            .iter()
            .filter(|effect| matches!(effect, Effect::Write { .. }))
            .count();
        let mut write_index = 0;
        // With disks a batch completes as a whole (see `sim::disk`): one due step for all.
        let batch_at = (self.options.disks && delay_max > 0)
            .then(|| self.now + self.prng.between(0, delay_max));
        let checked = effects.iter().try_for_each(|effect| match effect {
            Effect::Send { message, .. } | Effect::Broadcast { message, .. } => {
                self.storage.check_message(from, message)
            }
            Effect::Reply { .. }
            | Effect::Write { .. }
            | Effect::BuildCheckpoint { .. }
            | Effect::KeepPages(_) => Ok(()),
        });
        if let Err(failure) = checked {
            effects.clear();
            self.effects = effects;
            return Err(failure);
        }
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, message }
                    if self.crash_next == Some(from)
                        && matches!(message.body, Body::DoViewChange(_)) =>
                {
                    // The promise of a replica about to crash travels slowly: it can
                    // only arrive as a replay, after the restart.
                    self.network.hold(
                        &mut self.prng,
                        self.now,
                        Node::Replica(from),
                        Node::Replica(node_of(to)),
                        message,
                    )
                }
                Effect::Send { to, message } => self.network.send(
                    &mut self.prng,
                    self.now,
                    Node::Replica(from),
                    Node::Replica(node_of(to)),
                    message,
                ),
                Effect::Broadcast { message, audience } => {
                    // To the members of the message's epoch (paper 7), in index order.
                    let members: Vec<ReplicaIndex> = match self.replicas[from as usize]
                        .as_ref()
                        .and_then(|replica| replica.configuration_of(message.epoch))
                        .or_else(|| self.epochs.get(message.epoch as usize))
                    {
                        Some(configuration) => {
                            configuration.audience(audience).map(node_of).collect()
                        }
                        None => Vec::new(),
                    };
                    for to in members {
                        if to != from {
                            let copy = message.clone();
                            self.network.send(
                                &mut self.prng,
                                self.now,
                                Node::Replica(from),
                                Node::Replica(to),
                                copy,
                            );
                        }
                    }
                }
                // Kept at once (a cache: no ordering, see `sim::disk`).
                Effect::KeepPages(keep) if self.options.disks => self.disks.keep_pages(from, &keep),
                Effect::KeepPages(_) => {}
                Effect::BuildCheckpoint { build, .. } if build.is_install() => {
                    // A tenth of a build's delays: a replica waits for its install
                    // (every message it needs comes after it), where it skips two
                    // checkpoints before it waits for a build, and an install held
                    // back as long as a build stalled recoveries past the liveness
                    // checker's bound (seed 16001172, delays up to 3000 steps). It
                    // was instantaneous before installs were prepared apart.
                    let delay = self
                        .install_prng
                        .between(0, self.options.checkpoint_build_steps_max / 10);
                    // Mostly a worker takes it at once; sometimes none does, and the
                    // replica runs it itself at its next tick.
                    if self.install_prng.below(4) > 0 {
                        build.start();
                    }
                    // One transfer at a time: one still due here was abandoned, or run
                    // by the replica itself.
                    self.installs_due[from as usize] = Some(DueBuild {
                        at: self.now + delay,
                        build,
                    });
                }
                Effect::BuildCheckpoint { build, .. } => {
                    let delay = self
                        .build_prng
                        .between(0, self.options.checkpoint_build_steps_max);
                    // Mostly a worker takes the build at once (a primary then holds
                    // ordering before the op at which it would wait for it); sometimes
                    // the worker is busy and the replica may have to run it itself.
                    if self.build_prng.below(4) > 0 {
                        build.start();
                    }
                    // One build at a time: one still due here was built by the replica
                    // itself (it waited for it) or abandoned.
                    self.builds_due[from as usize] = Some(DueBuild {
                        at: self.now + delay,
                        build,
                    });
                }
                Effect::Write { id, write } => {
                    write_index += 1;
                    if delay_max > 0 {
                        // In order: never before the replica's previous write.
                        let earliest = self.writes_due[from as usize]
                            .back()
                            .map_or(0, |due| due.at);
                        let at = match batch_at {
                            Some(at) => at,
                            None => self.now + self.prng.between(0, delay_max),
                        };
                        self.writes_due[from as usize].push_back(DueWrite {
                            at: at.max(earliest),
                            id,
                            write,
                            stored: captured.next().unwrap_or_default(),
                            ends_batch: write_index == writes,
                        });
                    }
                }
                Effect::Reply {
                    client,
                    route,
                    message,
                } => {
                    let to = self.client_index.get(&client).copied();
                    // A token, when there is one, is the one its client's request came with.
                    assert!(
                        route.is_none_or(|route| Some(route) == to.map(|c| RouteToken(c as u64))),
                        "a reply to client {client} carries the route token {route:?}"
                    );
                    if let Some(c) = to {
                        self.network.send(
                            &mut self.prng,
                            self.now,
                            Node::Replica(from),
                            Node::Client(c),
                            message,
                        );
                    }
                }
            }
        }
        self.effects = effects;
        if self.options.trace {
            self.trace_status(from);
        }
        Ok(())
    }

    /// With disks: the payload of each write among `effects` (see `sim::disk`), read from
    /// the replica before its next input; the last carries the replica's commit number.
    fn capture_writes(&self, from: ReplicaIndex, effects: &[Effect]) -> Vec<Vec<StoredWrite>> {
        let Some(replica) = self.replicas[from as usize]
            .as_ref()
            .filter(|_| self.options.disks)
        else {
            return Vec::new();
        };
        let mut captured: Vec<Vec<StoredWrite>> = effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Write { write, .. } => Some(vec![StoredWrite::capture(replica, *write)]),
                _ => None,
            })
            .collect();
        if let Some(last) = captured.last_mut() {
            last.push(StoredWrite::Commit(replica.commit()));
        }
        captured
    }

    /// Checks an Evicted or Rejected reply against the model, with the sender's commit.
    fn check_refusal(&mut self, from: ReplicaIndex, effect: &Effect) -> Result<(), Failure> {
        let Effect::Reply { message, .. } = effect else {
            return Ok(());
        };
        let Body::Reply(reply) = &message.body else {
            return Ok(());
        };
        let commit = self.replicas[from as usize]
            .as_ref()
            .map_or(0, |replica| replica.commit());
        match reply.status {
            // A read's answer is judged where the client takes it (`reads`).
            ReplyStatus::Ok | ReplyStatus::Read | ReplyStatus::Behind => Ok(()),
            ReplyStatus::Evicted => {
                self.checker
                    .on_evicted_reply(from, reply.client, reply.session, commit)
            }
            // Refused for a reason of its own (another change in progress, a configuration
            // that may not follow): judged when the administrator reads it.
            ReplyStatus::Rejected if reply.client == self.admin.id() => Ok(()),
            ReplyStatus::Rejected => {
                self.checker
                    .on_rejected_reply(from, reply.client, reply.session, reply.request)
            }
            ReplyStatus::NewEpoch => {
                // Paper 7: a replica of a later epoch tells a client of an earlier one
                // (or a replaced replica tells anyone) the configuration it is in.
                let current = self.replicas[from as usize]
                    .as_ref()
                    .map(|replica| replica.configuration());
                let named = Configuration::from_bytes(&reply.result);
                match (current, named) {
                    (Some(current), Some(named)) if named == *current && named.epoch() > 0 => {
                        Ok(())
                    }
                    (_, named) => Err(Failure::new(
                        "epochs",
                        format!("r{from} answered NewEpoch naming {named:?}, not its own configuration of a later epoch ({current:?})"),
                    )),
                }
            }
        }
    }

    /// Completes the writes that are due, oldest first and one at a time (so that the
    /// storage model holds exactly what each released message waited for).
    fn complete_due_writes(&mut self) -> Result<(), Failure> {
        for index in 0..self.replica_slots() {
            if self.leases.paused(index, self.now) {
                continue; // The disk is done; the stopped process hears of it later.
            }
            let monotonic_ns = self.leases.monotonic_ns(index, self.now);
            while let Some(due) = self.writes_due[index as usize].front() {
                if due.at > self.now {
                    break;
                }
                let due = self.writes_due[index as usize]
                    .pop_front()
                    .expect("front exists");
                let (id, write) = (due.id, due.write);
                if self.replicas[index as usize].is_none() {
                    break;
                }
                self.storage.complete(index, write)?;
                if self.options.disks {
                    self.complete_on_disk(index, due.stored, due.ends_batch)?;
                }
                let replica = self.replicas[index as usize].as_mut().expect("live");
                if let Some(monotonic_ns) = monotonic_ns {
                    replica.set_monotonic_ns(monotonic_ns);
                }
                replica.on_persisted(id, &mut self.effects);
                replica.flush(&mut self.effects);
                self.trace(format_args!("r{index} write {id} durable"));
                self.dispatch(index)?;
                self.check_commits(index)?;
            }
        }
        Ok(())
    }

    /// Builds the checkpoints that are due (the simulated worker) and tells their
    /// replicas.
    fn complete_due_builds(&mut self) -> Result<(), Failure> {
        for index in 0..self.replica_slots() {
            if self.leases.paused(index, self.now) {
                continue;
            }
            let monotonic_ns = self.leases.monotonic_ns(index, self.now);
            let is_due =
                |slot: &Option<DueBuild>| slot.as_ref().is_some_and(|due| due.at <= self.now);
            let slot = match is_due(&self.builds_due[index as usize]) {
                true => &mut self.builds_due[index as usize],
                false if is_due(&self.installs_due[index as usize]) => {
                    &mut self.installs_due[index as usize]
                }
                false => continue,
            };
            let due = slot.take().expect("due");
            let Some(replica) = self.replicas[index as usize].as_mut() else {
                continue;
            };
            if !due.build.run() {
                continue; // Abandoned: the replica installed another state.
            }
            if let Some(monotonic_ns) = monotonic_ns {
                replica.set_monotonic_ns(monotonic_ns);
            }
            replica.on_checkpoint_built(&mut self.effects);
            if self.options.write_delay_steps_max == 0 {
                replica.complete_writes_in_memory(&mut self.effects);
            }
            replica.flush(&mut self.effects);
            self.trace(format_args!("r{index} checkpoint built"));
            self.dispatch(index)?;
            self.check_commits(index)?;
        }
        Ok(())
    }

    fn tick_replicas(&mut self) -> Result<(), Failure> {
        for index in 0..self.replica_slots() {
            if self.leases.paused(index, self.now) {
                continue; // A stopped process: its ticks come when it resumes.
            }
            let monotonic_ns = self.leases.monotonic_ns(index, self.now);
            let clock = &mut self.clocks[index as usize];
            if self.now < clock.tick_next {
                continue;
            }
            // Jitter of one step either way keeps the replicas' ticks from locking step.
            let jitter = self.prng.below(3);
            clock.tick_next = self.now + (clock.tick_steps + jitter).saturating_sub(1).max(1);
            let realtime_ns = clock.realtime_ns(self.now);
            let Some(replica) = self.replicas[index as usize].as_mut() else {
                continue;
            };
            replica.set_clock(realtime_ns);
            if let Some(monotonic_ns) = monotonic_ns {
                replica.set_monotonic_ns(monotonic_ns);
            }
            let immediate = self.options.write_delay_steps_max == 0;
            replica.on_tick(&mut self.effects);
            if immediate {
                replica.complete_writes_in_memory(&mut self.effects);
            }
            replica.flush(&mut self.effects);
            if immediate {
                replica.complete_writes_in_memory(&mut self.effects);
            }
            self.dispatch(index)?;
            self.check_commits(index)?;
        }
        Ok(())
    }

    fn tick_clients(&mut self) {
        for client in 0..self.clients.len() {
            if let Some((target, message)) = self.clients[client].session.on_tick() {
                self.trace(format_args!("c{client} retries to all"));
                self.send_from_client(client, target, message);
            }
        }
        if let Some(message) = self.admin.on_tick() {
            self.trace(format_args!("admin retries"));
            self.send_from_admin(message);
        }
    }

    /// Idle clients register (when unregistered) or submit a random operation.
    fn drive_clients(&mut self) {
        if !self.register && !self.load && !self.register_once {
            return;
        }
        for client in 0..self.clients.len() {
            let session = &self.clients[client].session;
            if session.is_busy() {
                continue;
            }
            if !session.is_registered() {
                let once = self.register_once && !self.clients[client].reregistered;
                if self.register || once {
                    self.clients[client].reregistered |= once;
                    self.register_client(client);
                }
            } else if self.load && self.prng.chance(self.options.submit_ppm) {
                let reads = self.options.reads;
                if let Some((query, mode)) = reads.next_read::<S>(&self.workload, &mut self.prng) {
                    // Lease reads are chosen from the leases' stream, so that the
                    // workload's own draws stay as they were.
                    let mode = match mode == ReadMode::Strict && self.leases.lease_read() {
                        true => ReadMode::Lease,
                        false => mode,
                    };
                    self.submit_read(client, query, mode);
                    continue;
                }
                let operation = if self.prng.chance(self.options.oversized_ppm) {
                    let limit = self.config.request_body_bytes_max;
                    S::oversized_operation(&self.workload, &mut self.prng, limit)
                } else {
                    S::random_operation(&self.workload, &mut self.prng)
                };
                self.submit_operation(client, operation)
                    .expect("an idle registered client can submit");
            }
        }
    }

    /// Sends a session's message where it asks, among the members of the configuration
    /// it follows (a session names replicas by their index there).
    fn send_from_client(&mut self, client: usize, target: Target, message: Message) {
        let configuration = &self.clients[client].configuration;
        match target {
            Target::Replica(index) => {
                let to = node_of(configuration.id_of(index));
                self.network.send(
                    &mut self.prng,
                    self.now,
                    Node::Client(client),
                    Node::Replica(to),
                    message,
                )
            }
            Target::All => {
                let members: Vec<ReplicaIndex> = configuration.ids().map(node_of).collect();
                for to in members {
                    let copy = message.clone();
                    self.network.send(
                        &mut self.prng,
                        self.now,
                        Node::Client(client),
                        Node::Replica(to),
                        copy,
                    );
                }
            }
        }
    }

    /// Runs every checker: replica invariants (they panic), agreement, the model, and
    /// service state against the model.
    fn check(&mut self) -> Result<(), Failure> {
        let mut moved = std::mem::take(&mut self.moved);
        let touched = std::mem::take(&mut self.touched);
        for (index, replica) in self.replicas.iter().enumerate() {
            let Some(replica) = replica else { continue };
            if touched & (1 << index) == 0 {
                continue; // No input since the last check: nothing changed.
            }
            replica.invariants();
            if self.checker.check_replica(index as ReplicaIndex, replica)? {
                moved |= 1 << index;
            }
        }
        self.checker.advance_model()?;
        for (index, replica) in self.replicas.iter().enumerate() {
            // A replica that moved and then retired in the same step is shut down.
            if let Some(replica) = replica.as_ref().filter(|_| moved & (1 << index) != 0) {
                self.checker
                    .check_snapshot(index as ReplicaIndex, replica)?;
            }
        }
        Ok(())
    }

    /// The final exactly-once check: every live replica at the highest commit holds the
    /// model's state. Returns how many replicas were compared.
    pub fn check_final(&mut self) -> Result<usize, Failure> {
        self.touched = u32::MAX;
        self.check()?;
        self.checker.check_no_reply_beyond_the_log()?;
        let highest = self
            .replicas
            .iter()
            .flatten()
            .map(|r| r.commit())
            .max()
            .unwrap_or(0);
        let mut compared = 0;
        for (index, replica) in self.replicas.iter().enumerate() {
            let Some(replica) = replica else { continue };
            if replica.commit() == highest
                && self
                    .checker
                    .check_snapshot(index as ReplicaIndex, replica)?
            {
                compared += 1;
            }
        }
        Ok(compared)
    }

    /// Whether the replicas that count as failed, with `crashing` and `more` others
    /// added, stay within f in every configuration that matters (the paper's fault model
    /// holds per group, 7): the newest one, the one before it (its replicas may still be
    /// finishing it) and the one the administrator proposes (it may commit at any moment,
    /// so it counts from the step its new members start). A member counts as failed when
    /// it is crashed, holds no state it can vouch for yet (recovering, joining,
    /// transitioning) or, in the newest configuration, is still in an earlier epoch. With
    /// one configuration this is "crashed or recovering", as before reconfigurations.
    fn within_f(&self, crashing: Option<ReplicaIndex>, more: usize) -> bool {
        let newest = self.newest_configuration();
        let newest_epoch = newest.epoch();
        let previous = newest_epoch
            .checked_sub(1)
            .and_then(|epoch| self.epochs.get(epoch as usize));
        // From the moment a change starts (its new members warming up), as an operator
        // who is about to ask for it would keep it.
        let proposed = self
            .change
            .as_ref()
            .map(|change| &change.proposal)
            .filter(|proposal| proposal.epoch() > newest_epoch);
        let within = [Some(newest), previous, proposed]
            .into_iter()
            .flatten()
            .all(|configuration| {
                let failed = configuration
                    .ids()
                    .filter(|&id| {
                        let slot = id as usize;
                        if Some(slot) == crashing.map(usize::from) {
                            return true;
                        }
                        match self.replicas.get(slot) {
                            None => true,
                            Some(None) => !self.gone[slot],
                            Some(Some(replica)) => {
                                (configuration.epoch() == newest_epoch
                                    && replica.epoch() < newest_epoch)
                                    || !matches!(
                                        replica.status(),
                                        Status::Normal | Status::ViewChange | Status::Retiring
                                    )
                            }
                        }
                    })
                    .count();
                failed + more <= configuration.faults_max()
            });
        within
    }

    /// The random faults of one step, at the seed's rates; never more than f replicas
    /// crashed or recovering.
    fn inject_faults(&mut self) {
        let rates = self.options.faults;
        if self.options.disks && self.options.power_loss_at == Some(self.now) {
            self.power_loss();
        }
        if let Some(index) = self.crash_next.take() {
            if self.crash_within_f(index) {
                self.faults.crash_after_promise += 1;
            }
        }
        if let Some(index) = self.crash_after_epoch.take() {
            if self.replicas[index as usize].is_some() && self.crash_within_f(index) {
                self.faults.crash_after_epoch_change += 1;
            }
        }
        if let Some((at, links)) = self.flap.take_if(|(at, _)| *at <= self.now) {
            debug_assert!(at <= self.now);
            self.faults.flap += 1;
            self.trace(format_args!("the same partition again (flap)"));
            self.network.set_cut_links(&links);
        } else if !self.network.partitioned() {
            if self.prng.chance(rates.partition_ppm) {
                self.partition_random();
            }
        } else if self.prng.chance(rates.heal_ppm) {
            self.heal_and_maybe_flap();
        }
        if self.prng.chance(rates.crash_ppm) {
            self.crash_random();
        }
        if self.options.disks && self.prng.chance(rates.power_loss_ppm) {
            self.power_loss();
        }
        if self.prng.chance(rates.view_change_crash_ppm) {
            self.strike_during_view_change_or_recovery();
        }
        if self.options.disks {
            self.crash_mid_fetch();
        }
        self.restart_random();
        self.count_overlapping_recoveries();
        self.pause_random();
    }

    /// `pause` (at the seed's rate, from the leases' stream): one live replica stops
    /// handling anything for a while, as a process under SIGSTOP, while its clock runs.
    fn pause_random(&mut self) {
        let live: Vec<ReplicaIndex> = (0..self.replica_slots())
            .filter(|&index| self.replicas[index as usize].is_some())
            .collect();
        let primary = self
            .replicas
            .iter()
            .flatten()
            .filter(|replica| replica.is_primary())
            .max_by_key(|replica| (replica.epoch(), replica.view()))
            .map(|replica| replica.id() as ReplicaIndex);
        if let Some((index, until)) = self.leases.maybe_pause(self.now, &live, primary) {
            self.faults.pause += 1;
            self.trace(format_args!("pause r{index} until step {until}"));
        }
    }

    /// `pause`: replica `index` handles nothing until step `until` (its clock runs on;
    /// what reaches it waits).
    pub fn pause(&mut self, index: ReplicaIndex, until: u64) {
        self.leases.pause(index, until);
        self.faults.pause += 1;
        self.trace(format_args!("pause r{index} until step {until}"));
    }

    /// Replica `index`'s monotonic clock runs at `drift_ppm` from now on (from where it
    /// stands: it never goes back).
    pub fn set_clock_drift(&mut self, index: ReplicaIndex, drift_ppm: i64) {
        self.leases.set_drift(index, drift_ppm, self.now);
    }

    /// Pauses started, by faults or by `pause`.
    pub fn pauses(&self) -> u64 {
        self.leases.pauses
    }

    /// `heal`, and at the seed's flap rate cut the same links again a little later: a
    /// replica that just rejoined (or went back to) a view loses it again while it is
    /// still settling.
    fn heal_and_maybe_flap(&mut self) {
        if self.flap.is_none() && self.prng.chance(self.options.faults.flap_ppm) {
            let at = self.now + self.prng.between(5, 100);
            self.flap = Some((at, self.network.cut_links()));
        }
        self.heal();
    }

    /// With disks, a replica partway through a checkpoint fetch sometimes crashes (drawn
    /// from the disks' stream): it restarts with the pages its disk kept (`sim::disk`).
    fn crash_mid_fetch(&mut self) {
        let fetching = (0..self.replica_slots()).find(|&index| {
            self.replica(index)
                .and_then(|replica| replica.checkpoint_fetch_progress())
                .is_some_and(|(_, held, pages)| held > 0 && held < pages)
        });
        if let Some(index) = fetching.filter(|_| self.disks.crash_mid_fetch()) {
            self.crash_within_f(index);
        }
    }

    /// Crashes a replica (the primary, at the seed's bias), and at the seed's rate a
    /// second one with it.
    fn crash_random(&mut self) {
        let n = self.replica_slots() as u64;
        let primary = self.primary();
        let index = match primary {
            Some(primary) if self.prng.chance(self.options.faults.primary_bias_ppm) => primary,
            _ => self.prng.below(n) as ReplicaIndex,
        };
        if !self.crash_within_f(index) {
            return;
        }
        if Some(index) == primary {
            self.faults.crash_primary += 1;
        }
        if self.prng.chance(self.options.faults.crash_pair_ppm) {
            let other = self.prng.below(n) as ReplicaIndex;
            if self.crash_within_f(other) {
                self.faults.crash_pair += 1;
            }
        }
    }

    /// Crashes live replica `index` if that leaves at most f replicas crashed or
    /// recovering; returns whether it did.
    fn crash_within_f(&mut self, index: ReplicaIndex) -> bool {
        if self.replica(index).is_none() {
            return false;
        }
        // Crashing a replica that counts as failed already (recovering, say) leaves the
        // count as it is.
        if self.within_f(Some(index), 0) {
            self.crash(index);
            return true;
        }
        false
    }

    /// Restarts crashed replicas at the seed's rate; a restart sometimes brings back every
    /// crashed replica at once, so that their recoveries overlap.
    fn restart_random(&mut self) {
        for index in 0..self.replica_slots() {
            if self.replicas[index as usize].is_none()
                && !self.gone[index as usize]
                && self.prng.chance(self.options.faults.restart_ppm)
            {
                self.restart(index);
                if self.prng.chance(self.options.faults.restart_all_ppm) {
                    self.restart_all_crashed();
                }
            }
        }
    }

    fn restart_all_crashed(&mut self) {
        for index in 0..self.replica_slots() {
            if self.replicas[index as usize].is_none() && !self.gone[index as usize] {
                self.restart(index);
            }
        }
    }

    /// A replica that just sent a DoViewChange sometimes crashes at the next step, its
    /// promise lost with its memory, and its DoViewChange held back to arrive only as a
    /// replay: the premise of a view started from a previous life's promise.
    fn crash_soon_after_promise(&mut self, index: ReplicaIndex) {
        let ppm = self.options.faults.view_change_crash_ppm.saturating_mul(30);
        if self.crash_next.is_none() && self.prng.chance(ppm) {
            self.crash_next = Some(index);
        }
    }

    /// A replica that just moved to a new epoch sometimes crashes at the next step, at
    /// the rate of `crash_soon_after_promise`: the one window in which it may hold the
    /// only copy of the old epoch's last ops besides replicas that are taking up new
    /// roles (a witness becoming active found this). Drawn from a stream of its own, so
    /// that seeds without reconfigurations draw as before.
    fn crash_soon_after_epoch_change(&mut self, index: ReplicaIndex) {
        let ppm = self.options.faults.view_change_crash_ppm.saturating_mul(30);
        if self.crash_after_epoch.is_none() && self.epoch_crash_prng.chance(ppm) {
            self.crash_after_epoch = Some(index);
        }
    }

    /// While some replica changes views or recovers (a state transfer from the primary
    /// in flight, perhaps in several parts), crashes a replica or cuts the primary off
    /// (always the latter when f replicas are already down): the cases where a view
    /// change meets a recovery.
    fn strike_during_view_change_or_recovery(&mut self) {
        let busy = self
            .replicas
            .iter()
            .flatten()
            .any(|r| r.status() != Status::Normal);
        if !busy {
            return;
        }
        self.faults.crash_in_view_change += 1;
        // A crash leaves the crashed replica's messages in flight; a partition cuts them
        // too (it applies at delivery), which is how a recovering replica ends up holding
        // entries that no other replica ever received.
        let crash = self.prng.chance(500_000);
        if crash && self.within_f(None, 1) {
            return self.crash_random();
        }
        if let Some(primary) = self.primary().filter(|_| !self.network.partitioned()) {
            self.faults.isolate_primary += 1;
            self.partition(&[primary]);
        }
    }

    /// Counts the times two or more replicas come to be recovering at once.
    fn count_overlapping_recoveries(&mut self) {
        let recovering = self
            .replicas
            .iter()
            .flatten()
            .filter(|r| r.status() == Status::Recovering)
            .count();
        if recovering >= 2 && !self.recoveries_overlapped {
            self.faults.recoveries_overlapping += 1;
        }
        self.recoveries_overlapped = recovering >= 2;
    }

    /// Cuts a random group off (both ways or one way), or the link between two replicas
    /// (both ways: each still hears everyone else), or (at the seed's primary bias) the
    /// primary alone: it stays normal in its view, answering clients from its table,
    /// while the others move on, until the partition heals.
    fn partition_random(&mut self) {
        let n = self.replica_slots();
        if let Some(primary) = self
            .primary()
            .filter(|_| self.prng.chance(self.options.faults.primary_bias_ppm))
        {
            self.faults.isolate_primary += 1;
            return match self.prng.below(3) {
                0 | 1 => self.partition(&[primary]),
                _ => self.partition_outbound(&[primary]),
            };
        }
        // A random non-empty proper subset of the replicas.
        let mask = self.prng.between(1, (1 << n) - 2);
        let group: Vec<ReplicaIndex> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
        match self.prng.below(4) {
            0 | 1 => self.partition(&group),
            2 => self.partition_outbound(&group),
            _ => {
                let a = self.prng.below(n as u64) as ReplicaIndex;
                let b = (a + 1 + self.prng.below(n as u64 - 1) as ReplicaIndex) % n;
                self.block(a, b);
                self.block(b, a);
            }
        }
    }

    /// `heal` for liveness: restarts every crashed replica, removes partitions, stops
    /// random faults and makes the network calm.
    pub fn heal_all(&mut self) {
        self.inject = false;
        self.flap = None;
        // A crash planned after a promise happens only while faults are injected: left
        // set, it would hold that replica's DoViewChanges back for the rest of the run
        // (seed 16322: a quorum that needed them never formed).
        self.crash_next = None;
        self.crash_after_epoch = None;
        self.heal();
        self.restart_all_crashed();
        self.network.faults = NetworkFaults::calm();
    }

    /// A one-line state of every replica and client, for violation reports.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (index, replica) in self.replicas.iter().enumerate() {
            match replica {
                None if self.gone[index] => out.push_str(&format!("r{index}: gone; ")),
                None => out.push_str(&format!("r{index}: crashed; ")),
                Some(r) => out.push_str(&format!(
                    "r{index}: epoch {} (from op {}) {:?} view {} op {} commit {} checkpoint {}; ",
                    r.epoch(),
                    r.epoch_start(),
                    r.status(),
                    r.view(),
                    r.op(),
                    r.commit(),
                    r.checkpoint_op()
                )),
            }
        }
        for (index, client) in self.clients.iter().enumerate() {
            out.push_str(&format!(
                "c{index}: session {} busy {} view {}; ",
                client.session.session(),
                client.session.is_busy(),
                client.session.view()
            ));
        }
        out.push_str(&format!("in flight {}", self.network.in_flight()));
        out
    }

    fn trace(&self, args: std::fmt::Arguments<'_>) {
        if self.options.trace {
            eprintln!("step {}: {args}", self.now);
        }
    }

    fn trace_status(&mut self, index: ReplicaIndex) {
        let Some(replica) = self.replicas[index as usize].as_ref() else {
            return;
        };
        let now = (replica.status(), replica.view());
        let before = self.seen[index as usize].replace(now);
        if before != Some(now) {
            eprintln!(
                "step {}: r{index} {:?} view {} (op {} commit {}), was {before:?}",
                self.now,
                now.0,
                now.1,
                replica.op(),
                replica.commit()
            );
        }
    }
}

/// A short description of a message for the trace.
fn summarize(message: &Message) -> String {
    use crate::protocol::Body;
    let detail = match &message.body {
        Body::Request(r) => format!(
            "client {:x} session {} request {}",
            r.client, r.session, r.request
        ),
        Body::Reply(r) => format!(
            "session {} request {} op {} {:?}",
            r.session, r.request, r.op, r.status
        ),
        Body::Prepare(p) => format!("ops {}..={} commit {}", p.op_first, p.op_last(), p.commit),
        Body::PrepareOk(p) => format!("op {}", p.op),
        Body::Commit(c) => format!("commit {}", c.commit),
        Body::StartViewChange(svc) => format!("sender view {}", svc.sender_view),
        Body::DoViewChange(d) => {
            format!(
                "last normal view {} op {} commit {} entries {}",
                d.last_normal_view,
                d.op,
                d.commit,
                d.entries.len()
            )
        }
        Body::StartView(s) => format!("op {} commit {} from op {}", s.op, s.commit, s.op_first),
        Body::Recovery(r) => format!("nonce {:x}", r.nonce),
        Body::RecoveryResponse(r) => format!("nonce {:x} op {} commit {}", r.nonce, r.op, r.commit),
        Body::GetState(g) => format!("after op {}", g.op),
        Body::NewState(s) => format!(
            "commit {} checkpoint {:?} from op {} entries {}",
            s.commit,
            s.checkpoint.as_ref().map(|c| c.op),
            s.op_first,
            s.entries.len()
        ),
        Body::StartEpoch(s) => format!(
            "epoch {} from op {} sender {}",
            s.configuration.epoch(),
            s.op,
            s.sender
        ),
        Body::EpochStarted => String::new(),
        Body::GetCheckpoint(g) => format!("op {} asker {} {:?}", g.op, g.asker, g.part),
        Body::CheckpointPart(p) => match &p.content {
            crate::protocol::CheckpointContent::Manifest { start, digests, .. } => {
                format!(
                    "op {} manifest from {start}: {} digests",
                    p.op,
                    digests.len()
                )
            }
            crate::protocol::CheckpointContent::Pages(pages) => {
                format!(
                    "op {} pages {:?}",
                    p.op,
                    pages.iter().map(|(i, _)| i).collect::<Vec<_>>()
                )
            }
            crate::protocol::CheckpointContent::Unavailable => format!("op {} unavailable", p.op),
        },
    };
    format!("{} view {} {detail}", message.body.name(), message.view)
}

/// The simulator keeps replicas by identity (`ReplicaId`): the first configuration's
/// members are `0..n` and a reconfiguration adds the next ones, never reusing one, so a
/// replica's identity is its place among the simulator's replicas and its network node.
fn node_of(id: ReplicaId) -> ReplicaIndex {
    ReplicaIndex::try_from(id).expect("simulated replicas have small identities")
}

/// Adds one replica's counters to a total.
pub(crate) fn add_stats(total: &mut Stats, stats: &Stats) {
    total.view_changes += stats.view_changes;
    total.views_started += stats.views_started;
    total.recoveries += stats.recoveries;
    total.state_transfers += stats.state_transfers;
    total.checkpoint_transfers += stats.checkpoint_transfers;
    total.checkpoints += stats.checkpoints;
    total.checkpoints_skipped += stats.checkpoints_skipped;
    total.checkpoint_build_waits += stats.checkpoint_build_waits;
    total.checkpoint_build_holds += stats.checkpoint_build_holds;
    total.reads_answered += stats.reads_answered;
    total.reads_waited += stats.reads_waited;
    total.reads_behind += stats.reads_behind;
    total.lease_reads_answered += stats.lease_reads_answered;
    total.lease_reads_fallen_back += stats.lease_reads_fallen_back;
    total.view_changes_held_by_lease += stats.view_changes_held_by_lease;
    total.prepares_sent += stats.prepares_sent;
    total.witness_involvements += stats.witness_involvements;
    total.entries_committed += stats.entries_committed;
    total.messages_dropped += stats.messages_dropped;
    total.empty_cluster_starts += stats.empty_cluster_starts;
    total.checkpoint_fetches += stats.checkpoint_fetches;
    total.checkpoint_fetches_retargeted += stats.checkpoint_fetches_retargeted;
    total.checkpoint_fetches_completed += stats.checkpoint_fetches_completed;
    total.checkpoint_installs_prepared += stats.checkpoint_installs_prepared;
    total.checkpoint_pages_fetched += stats.checkpoint_pages_fetched;
    total.checkpoint_bytes_fetched += stats.checkpoint_bytes_fetched;
    total.checkpoint_pages_reused += stats.checkpoint_pages_reused;
    total.checkpoint_pages_refetched += stats.checkpoint_pages_refetched;
    total.checkpoint_pages_resumed += stats.checkpoint_pages_resumed;
    total.checkpoint_pages_kept += stats.checkpoint_pages_kept;
    total.checkpoint_pages_read_back += stats.checkpoint_pages_read_back;
    total.checkpoint_pages_kept_corrupt += stats.checkpoint_pages_kept_corrupt;
    total.checkpoint_parts_corrupt += stats.checkpoint_parts_corrupt;
    total.checkpoint_pages_served += stats.checkpoint_pages_served;
    total.checkpoint_bytes_served += stats.checkpoint_bytes_served;
}
