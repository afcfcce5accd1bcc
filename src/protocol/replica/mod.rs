//! The replica: Viewstamped Replication Revisited as a sans-IO state machine.
//!
//! Inputs are [`Replica::on_message`], [`Replica::on_tick`], [`Replica::flush`] (the
//! end of a batch) and [`Replica::on_persisted`] (writes completed); every output is an
//! [`Effect`] appended to the caller's buffer. The handlers live in one file per concern:
//! `normal` (4.1, 6.2), `view_change` (4.2, 5.3), `recovery` (4.3), `state_transfer`
//! (5.2, 5.1), `epoch` (reconfiguration, 7), `execute` (upcalls, checkpoints) and
//! `persistence` (the writes each input issues, and the messages that wait for them: see
//! `effects`).
//!
//! Safety invariants (neither the view nor commit ever goes backwards; commit ≤ op; one
//! primary per view) are checked with `assert!` where state changes; [`Replica::invariants`]
//! runs the costlier checks and is called by the simulator after every step.

mod epoch;
mod execute;
mod fetch_checkpoint;
mod lease;
mod normal;
mod persistence;
mod reads;
mod recovery;
mod restart;
mod serve_checkpoint;
mod state_transfer;
mod view_change;
mod witness;

use super::client_table::{ClientMap, ClientTable};
use super::configuration::{Configuration, ReplicaId};
use super::effects::{Audience, Effect, WriteId};
use super::log::Log;
use super::message::*;
use super::replica_set::ReplicaSet;
use super::stored::{FormerWitnessLog, Stored};
use super::timeout::Timeout;
use crate::config::Config;
use crate::service::{Digest, Snapshot, StateMachine};
use state_transfer::ReceivedState;

pub use lease::{held_ns as lease_held_ns, wait_ns as lease_wait_ns};
use std::collections::{BTreeMap, VecDeque};

/// A replica's status (paper 4; `Recovering` is 4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Processing requests in the current view.
    Normal,
    /// Choosing the primary of a new view.
    ViewChange,
    /// Restarted without state; takes part in nothing until it has recovered.
    Recovering,
    /// A member of an epoch it has not started yet (paper 7.2): fetching the state up to
    /// the epoch's first op before it takes part.
    Transitioning,
    /// Not a member of the current epoch (paper 7.3): answers state transfer until f'+1
    /// members of the new epoch said they started it, then retires
    /// ([`Replica::is_retired`]).
    Retiring,
    /// Started to join a cluster as a new member: waits for the StartEpoch of an epoch
    /// that includes it.
    Joining,
}

/// How a replica starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// A member of a brand-new cluster: normal in view 0 with an empty log. Only correct
    /// when every replica of the cluster starts this way at the same time.
    Fresh,
    /// A process that may have lost state: run the recovery protocol (4.3). If every other
    /// replica answers that it is recovering too, the cluster is new and starts in view 0.
    Recover {
        /// Random, different for every process start (the driver supplies it: the core
        /// has no randomness).
        nonce: u64,
    },
    /// A new member for a later configuration (paper 7.2): it takes part in nothing
    /// until a StartEpoch names it, then fetches the rest of the state up to the epoch's
    /// start. Meanwhile it warms up (7.5): it fetches and executes the committed ops of
    /// the configuration it is given, as a learner, so that the change itself stalls the
    /// cluster only for the last few ops. Its identity is the one the reconfiguration
    /// gives it.
    Join {
        /// The identity the new configuration lists for it.
        id: ReplicaId,
    },
    /// A process restarted on the storage of an earlier one: resume from what it holds
    /// (see `restart`). A store that holds nothing is `Recover`.
    Restart {
        /// What the store read back.
        stored: Box<Stored>,
        /// As for `Recover`, in case the replica has to recover.
        nonce: u64,
    },
}

/// Counters for operators, the simulator and the stats command (the `counters` of a
/// stats reply, `client::ReplicaStats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Stats {
    /// View changes this replica took part in (entered view-change status).
    pub view_changes: u64,
    /// Views this replica started as the new primary.
    pub views_started: u64,
    /// Completed recoveries (4.3).
    pub recoveries: u64,
    /// NewState messages applied (5.2).
    pub state_transfers: u64,
    /// Checkpoints restored from another replica (5.1).
    pub checkpoint_transfers: u64,
    /// Checkpoints taken (built and made the latest).
    pub checkpoints: u64,
    /// Checkpoint ops passed while the previous checkpoint was still being built: no
    /// checkpoint was taken there (the next one is at the next interval).
    pub checkpoints_skipped: u64,
    /// Times this replica waited for a checkpoint's build (it took three intervals).
    pub checkpoint_build_waits: u64,
    /// Times this replica, as the primary, stopped ordering ops just before the checkpoint
    /// op two intervals past a build a worker had, an interval before it would have
    /// waited for it (it ordered again once the build finished).
    pub checkpoint_build_holds: u64,
    /// Reads at this replica (paper 6.3.2) answered, held until it executed their seen
    /// op, and told `Behind` (to try another replica).
    pub reads_answered: u64,
    /// See `reads_answered`.
    pub reads_waited: u64,
    /// See `reads_answered`.
    pub reads_behind: u64,
    /// Lease reads (paper 6.3.1) this primary answered from its state under a lease.
    pub lease_reads_answered: u64,
    /// Lease reads this replica, as the primary, sent back to go through the log (it
    /// held no lease it could answer under).
    pub lease_reads_fallen_back: u64,
    /// Inputs that would have started or joined a view change, dropped because a lease
    /// this replica granted still ran.
    pub view_changes_held_by_lease: u64,
    /// Prepare messages sent (including resends).
    pub prepares_sent: u64,
    /// Times this replica, as the primary, involved the witnesses in the normal case
    /// (paper 6.1): the actives did not answer in time, or a view started.
    pub witness_involvements: u64,
    /// Entries executed.
    pub entries_committed: u64,
    /// Messages dropped as stale, out of place or invalid.
    pub messages_dropped: u64,
    /// Times this replica started an empty cluster because no other replica held any
    /// state (a first start, or every replica lost its memory at once).
    pub empty_cluster_starts: u64,
    /// Epochs this replica moved to (paper 7).
    pub epochs_started: u64,
    /// Checkpoint transfers started (5.1), and of them those that replaced one under
    /// way (the sources moved on to a newer checkpoint) and those that completed.
    pub checkpoint_fetches: u64,
    /// See `checkpoint_fetches`.
    pub checkpoint_fetches_retargeted: u64,
    /// See `checkpoint_fetches`.
    pub checkpoint_fetches_completed: u64,
    /// Completed transfers whose install the service prepared off the loop
    /// (`StateMachine::prepare_restore`, run by a worker or, if none took it, here).
    pub checkpoint_installs_prepared: u64,
    /// Checkpoint pages fetched from other replicas, and their bytes.
    pub checkpoint_pages_fetched: u64,
    /// See `checkpoint_pages_fetched`.
    pub checkpoint_bytes_fetched: u64,
    /// Checkpoint pages taken from what this replica held (same digest): not fetched.
    pub checkpoint_pages_reused: u64,
    /// Of `checkpoint_pages_reused`, those taken from the pages the store kept from a
    /// transfer before a restart (a fetch that resumed).
    pub checkpoint_pages_resumed: u64,
    /// Verified checkpoint pages handed to the driver to keep (`Effect::KeepPages`).
    pub checkpoint_pages_kept: u64,
    /// At the restart: kept pages the store read back, and those it dropped because their
    /// bytes did not hash to their digest.
    pub checkpoint_pages_read_back: u64,
    /// See `checkpoint_pages_read_back`.
    pub checkpoint_pages_kept_corrupt: u64,
    /// Checkpoint pages asked for again: timed out, left out of an answer, corrupt, or
    /// asked of a replica that no longer held the checkpoint.
    pub checkpoint_pages_refetched: u64,
    /// Checkpoint pages or manifest runs that did not match their digest or root.
    pub checkpoint_parts_corrupt: u64,
    /// Checkpoint pages sent to other replicas, and their bytes.
    pub checkpoint_pages_served: u64,
    /// See `checkpoint_pages_served`.
    pub checkpoint_bytes_served: u64,
    /// The checkpoint transfer under way (gauges, 0 when none): the op of the checkpoint
    /// being fetched, its pages, and how many of them are held.
    pub checkpoint_fetch_op: u64,
    /// See `checkpoint_fetch_op`.
    pub checkpoint_fetch_pages: u64,
    /// See `checkpoint_fetch_op`.
    pub checkpoint_fetch_pages_held: u64,
}

/// Requests for a view change to `view` (above the replica's own), received or made, not
/// acted on yet: the replica raises its view only once f other replicas asked for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ViewChangeAsks {
    /// The view asked for; 0 when nobody asked.
    view: View,
    /// The replicas that asked for `view` (this replica among them: it asked too).
    from: ReplicaSet,
    /// One of them holds a view above this replica's: it can never come back to it.
    follow: bool,
    /// Those of them that asked from `view` itself: they raised their view to it, so
    /// their StartViewChange is a call for it (paper 4.2 step 1), not only an ask.
    raised: ReplicaSet,
}

/// An uncommitted batch in the primary's pipeline.
#[derive(Clone, Copy, Debug)]
struct InFlightPrepare {
    op_last: Op,
    bytes: u64,
}

/// What only the primary of a view in normal status holds (paper 4.1, 6.2). Built fresh
/// whenever a replica enters a status (`enter_normal`, `enter_view_change`,
/// `enter_recovering`), so nothing of an earlier view survives.
#[derive(Clone, Debug)]
struct Primary {
    /// Requests accepted but not yet in a Prepare (at most one batch).
    queue: VecDeque<Entry>,
    queue_bytes: u64,
    pipeline: VecDeque<InFlightPrepare>,
    /// Sum of `bytes` over the pipeline.
    pipeline_bytes: u64,
    /// Per replica: the highest op it acknowledged in this view (its own entry: the
    /// highest op its completed writes hold).
    acked: Vec<Op>,
    /// Per replica: the highest commit number it reported in this view (`witness`).
    commits: Vec<Op>,
    /// The actives' commit number last told to the witnesses (`witness`).
    actives_commit_told: Op,
    /// When the primary last sent the witnesses anything (a Prepare or a Commit): an
    /// uninvolved witness still hears from it (`witness`).
    witnesses_told_tick: u64,
    /// `Some(op)`: Prepares go to the witnesses too, until every active acknowledged `op`
    /// (`witness`); `None` while the actives alone answer in time.
    witnesses_involved: Option<Op>,
    /// The replicas that acknowledged anything in this view (heartbeat echoes included):
    /// each is normal in it, and its `joined` is durable (a PrepareOk waits for every
    /// write before it).
    heard: ReplicaSet,
    /// Requests queued or prepared but not committed: client → request number. Keeps a
    /// retry from being ordered twice without touching the committed client table.
    in_flight: ClientMap<RequestNumber>,
    /// Writes that append to the primary's log, with the op each reaches: its own
    /// acknowledgement (`acked[index]`) moves to that op when the write completes.
    own_appends: VecDeque<(WriteId, Op)>,
    /// A RECONFIGURATION is queued: nothing more is accepted in this epoch (7.1).
    reconfiguration_queued: bool,
    /// Requests turned away while a RECONFIGURATION was queued, by client: answered
    /// NewEpoch as soon as it executes, so that their clients move at once instead of
    /// after a retry timeout. At most `clients_max` (anyone may send a request).
    /// Ordered by client id: they are answered in that order, whatever the process's
    /// hash key (`client_table::ClientIdHashing`).
    turned_away: BTreeMap<ClientId, (Session, RequestNumber)>,
}

impl Primary {
    fn new(replica_count: usize) -> Primary {
        Primary {
            queue: VecDeque::new(),
            queue_bytes: 0,
            pipeline: VecDeque::new(),
            pipeline_bytes: 0,
            acked: vec![0; replica_count],
            commits: vec![0; replica_count],
            actives_commit_told: 0,
            witnesses_told_tick: 0,
            witnesses_involved: None,
            heard: ReplicaSet::default(),
            in_flight: ClientMap::default(),
            own_appends: VecDeque::new(),
            reconfiguration_queued: false,
            turned_away: BTreeMap::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.pipeline.is_empty()
            && self.in_flight.is_empty()
            && self.own_appends.is_empty()
            && !self.reconfiguration_queued
            && self.turned_away.is_empty()
            && self.acked.iter().all(|&acked| acked == 0)
            && self.commits.iter().all(|&commit| commit == 0)
            && self.actives_commit_told == 0
    }
}

/// A view change under way (paper 4.2, 5.3): who called for the view, the DoViewChanges
/// received, and what is being fetched. Built fresh by `enter_view_change`.
#[derive(Clone, Debug)]
struct ViewChanging {
    /// The replicas that called for this view (StartViewChange, or an ask for it before
    /// it started), this replica included.
    calls: ReplicaSet,
    /// Per replica: its DoViewChange for this view (the new primary's, its own included).
    do_view_changes: Vec<Option<DoViewChange>>,
    do_view_change_sent: bool,
    /// Joining a view that started without this replica: fetching its log.
    joining: bool,
    /// Committed entries (and checkpoint) fetched by a new primary that lacks them, or
    /// the log of the view being joined.
    fetch: Option<state_transfer::Fetched>,
    /// A new primary's requests for committed entries so far, or a joining replica's for
    /// the view's log: it asks the DoViewChanges' senders (`view_change_fetch_source`),
    /// or the view's primary and then the other members (`join_source`), in turn.
    fetch_attempts: u32,
}

impl ViewChanging {
    fn new(replica_count: usize) -> ViewChanging {
        ViewChanging {
            calls: ReplicaSet::default(),
            do_view_changes: vec![None; replica_count],
            do_view_change_sent: false,
            joining: false,
            fetch: None,
            fetch_attempts: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.calls.is_empty()
            && self.do_view_changes.iter().all(Option::is_none)
            && !self.do_view_change_sent
            && !self.joining
            && self.fetch.is_none()
    }
}

/// One replica of a cluster.
pub struct Replica<S> {
    /// Limits and timeouts: fixed for the life of the cluster.
    config: Config,
    /// Who the members are (epoch, primaries, quorums): what reconfiguration changes.
    configuration: Configuration,
    /// The configurations of earlier epochs this replica knows, oldest first (at most
    /// `HISTORY_MAX`): to tell a replica still in one of them where the cluster went.
    history: VecDeque<Configuration>,
    /// The op the current epoch started after: its RECONFIGURATION's op (0 in epoch 0,
    /// and 0 when unknown: a replica given a later configuration by an operator, which
    /// recovers into it, never learns where it started).
    epoch_start: Op,
    /// A RECONFIGURATION executed in this input: the epoch to move to once the input's
    /// handler is done (`epoch::finish_input`).
    epoch_change: Option<Box<Configuration>>,
    /// The epoch's state transfer (paper 7.2-7.3): who said it started the epoch, whom to
    /// remind.
    epoch_transfer: Box<epoch::EpochTransfer>,
    /// This replica's identity (never reused; its index is its place in `configuration`).
    id: ReplicaId,
    /// Its index in the current configuration; `NOT_A_MEMBER` when it is not in it.
    index: ReplicaIndex,
    /// Never decreases.
    view: View,
    status: Status,
    /// The latest view in which status was normal; ≤ `view`.
    last_normal_view: View,
    /// Has been normal or changing views at least once (`DurableState::joined`).
    joined: bool,
    /// Started a new, empty cluster in view 0 (recovery found every other replica
    /// empty) and has not left that view: as its primary it orders nothing until every
    /// other replica has joined (see `normal::prepare_batches`).
    new_cluster: bool,
    /// Entries; `log.op()` is the paper's op number.
    log: Log,
    /// Every op ≤ commit is committed and executed (at a witness: known committed); base
    /// ≤ commit ≤ op. Never decreases, but for a witness that becomes active in a new
    /// epoch: it starts again from op 0 (`epoch::take_up_role`).
    commit: Op,
    /// With witnesses: f+1 actives executed the ops up to this one (the actives'
    /// commit), as a primary of this replica's views reported (`Prepare::actives_commit`, `Commit::actives_commit`)
    /// or, as the primary, found itself. No replica trims its log above it (`witness`).
    /// Grows within an epoch, and starts again at the log's base at a move to an epoch
    /// with witnesses: it counts that epoch's actives (`epoch::move_to_epoch`). Written
    /// as knowledge (`Write::ActivesCommit`), so a restart from storage keeps it.
    actives_commit_heard: Op,
    /// The highest actives' commit known in this epoch (reported by its primaries, or
    /// found as one): what this replica reports as primary when its own view's count is
    /// lower (`witness::actives_commit_to_report`). 0 at a move to an epoch, and at a
    /// restart (it only says less then); unlike `actives_commit_heard`, never an earlier
    /// epoch's number.
    actives_commit_of_epoch: Op,
    /// Not a member of its configuration, and a witness in the last one it was a member
    /// of: it serves its log, never state (`holds_service_state`), however many epochs
    /// it retires through, and after a restart (`restart`).
    retired_as_witness: bool,
    service: S,
    /// The service's state before any op, as it was handed over: what a replica that
    /// becomes a witness in a new epoch returns its service to (paper 6.1: a witness
    /// holds no service state; `epoch::take_up_role`).
    fresh_service: Snapshot,
    clients: ClientTable,
    /// The latest checkpoint taken or restored (paper 5.1), with its Merkle tree.
    checkpoint: Option<serve_checkpoint::Held>,
    /// A checkpoint taken and being built off the event loop (`execute`); it becomes
    /// `checkpoint` once built.
    building: Option<execute::Building>,
    /// Earlier checkpoints kept for transfers, the serving budget (`serve_checkpoint`).
    checkpoint_server: serve_checkpoint::CheckpointServer,
    /// A checkpoint being fetched page by page, or fetched (`fetch_checkpoint`).
    checkpoint_fetch: fetch_checkpoint::Fetching,
    /// Reads at this replica waiting for it to execute the op their client has seen
    /// (paper 6.3.2; bounded, see `reads`).
    waiting_reads: reads::WaitingReads,
    /// The driver's wall clock, for the primary's timestamps (4.4).
    clock_ns: u64,
    /// The monotonic clock, the lease this replica promised, and as the primary the
    /// leases it holds (paper 6.3.1, `lease`).
    lease: lease::Lease,
    ticks: u64,
    /// Per replica: the tick at which it was last heard from in this view.
    heard_tick: Vec<u64>,

    /// The primary's state (empty unless this replica is the primary of its view, in
    /// normal status).
    primary: Primary,
    /// Who asked for a view change this replica has not started (yet). Kept in every
    /// status: a normal replica collects asks too.
    asks: ViewChangeAsks,
    /// The view change under way (empty unless status is view-change).
    view_changing: ViewChanging,

    // Recovery.
    recovery: Option<recovery::RecoveryState>,

    // State transfer.
    state_transfer_pending: bool,

    commit_timeout: Timeout,
    prepare_timeout: Timeout,
    normal_timeout: Timeout,
    view_change_timeout: Timeout,
    recovery_timeout: Timeout,
    state_transfer_timeout: Timeout,
    start_epoch_timeout: Timeout,

    /// Writes issued and completed, and the messages waiting for them.
    writes: persistence::Writes,

    /// The op of a checkpoint build's wait before which this replica, as the primary,
    /// last held ordering (`execute.rs`): each hold is counted and logged once.
    build_hold_noted: Op,

    stats: Stats,
}

/// The configurations of earlier epochs a replica keeps.
const HISTORY_MAX: usize = 16;
/// The index of a replica that is not a member of its current configuration (no
/// configuration has this many members: `MEMBERS_MAX`).
pub const NOT_A_MEMBER: ReplicaIndex = ReplicaIndex::MAX;

impl<S: StateMachine> Replica<S> {
    /// A replica `index` of a cluster with `config` in its initial configuration (epoch
    /// 0, where index and identity are the same), replicating `service`.
    pub fn new(config: Config, index: ReplicaIndex, service: S, start: Start) -> Replica<S> {
        let configuration = Configuration::first(&config);
        Replica::in_configuration(config, configuration, index as ReplicaId, service, start)
    }

    /// A replica with identity `id` that believes `configuration` is the current one (a
    /// process restarted by an operator who knows the cluster moved on; a `Start::Join`
    /// ignores it and waits for its StartEpoch). A `Start::Restart` takes the
    /// configuration its store holds instead, when it holds one.
    pub fn in_configuration(
        config: Config,
        configuration: Configuration,
        id: ReplicaId,
        service: S,
        start: Start,
    ) -> Replica<S> {
        config.validate().expect("invalid configuration");
        // A store that moved to a later epoch knows better than whoever started us.
        let configuration = match &start {
            Start::Restart { stored, .. } => stored
                .configuration
                .as_ref()
                .map_or(configuration, |(stored, _)| stored.clone()),
            _ => configuration,
        };
        let index = match start {
            Start::Join { .. } => NOT_A_MEMBER,
            // A replaced replica restarting from its store retires again (`restart`).
            Start::Restart { .. } => configuration.index_of(id).unwrap_or(NOT_A_MEMBER),
            _ => configuration
                .index_of(id)
                .expect("a replica starts as a member of its configuration"),
        };
        let n = configuration.replica_count() as usize;
        let mut service = service;
        let fresh_service = service.snapshot();
        let mut replica = Replica {
            commit_timeout: Timeout::new("commit", config.commit_interval_ticks),
            prepare_timeout: Timeout::new("prepare", config.prepare_timeout_ticks),
            normal_timeout: Timeout::new("normal", config.normal_timeout_ticks),
            view_change_timeout: Timeout::new("view_change", config.view_change_timeout_ticks),
            recovery_timeout: Timeout::new("recovery", config.recovery_timeout_ticks),
            state_transfer_timeout: Timeout::new(
                "state_transfer",
                config.state_transfer_timeout_ticks,
            ),
            start_epoch_timeout: Timeout::new("start_epoch", config.view_change_timeout_ticks),
            clients: ClientTable::new(config.clients_max as usize),
            id,
            index,
            configuration,
            history: VecDeque::new(),
            epoch_start: 0,
            epoch_change: None,
            epoch_transfer: Box::default(),
            view: 0,
            status: Status::Normal,
            last_normal_view: 0,
            joined: false,
            new_cluster: false,
            asks: ViewChangeAsks::default(),
            log: Log::default(),
            commit: 0,
            actives_commit_heard: 0,
            actives_commit_of_epoch: 0,
            retired_as_witness: false,
            service,
            fresh_service,
            checkpoint: None,
            building: None,
            checkpoint_server: Default::default(),
            checkpoint_fetch: Default::default(),
            waiting_reads: reads::WaitingReads::new(),
            clock_ns: 0,
            lease: lease::Lease::new(
                n,
                matches!(start, Start::Recover { .. } | Start::Restart { .. }),
            ),
            ticks: 0,
            heard_tick: vec![0; n],
            primary: Primary::new(n),
            view_changing: ViewChanging::new(n),
            recovery: None,
            state_transfer_pending: false,
            writes: persistence::Writes::default(),
            build_hold_noted: 0,
            stats: Stats::default(),
            config,
        };
        match start {
            Start::Fresh => {
                // Every replica of the cluster starts this way together: the state the
                // cluster begins in needs no write (a driver with storage formats each
                // store with it first, as the simulator's disks do).
                replica.joined = true;
                let state = replica.durable_state();
                replica.writes.note_restored(0, state);
                replica.start_normal_timeouts();
            }
            Start::Recover { nonce } => replica.start_recovering(nonce),
            Start::Restart { stored, nonce } => replica.restart(*stored, nonce),
            Start::Join { id } => {
                assert_eq!(id, replica.id);
                replica.status = Status::Joining;
                // The first tick asks for committed state (`epoch::request_learner_state`).
                replica.state_transfer_timeout.set_after(1);
                replica.state_transfer_timeout.start();
            }
        }
        replica
    }

    /// Handles one message from a replica or a client.
    pub fn on_message(&mut self, message: Message, effects: &mut Vec<Effect>) {
        let start = effects.len();
        self.handle_message(message, effects);
        self.end_input(start, effects);
    }

    fn handle_message(&mut self, message: Message, effects: &mut Vec<Effect>) {
        if message.view > VIEW_MAX {
            return self.drop_message(&message, "view beyond the last possible one");
        }
        // A checkpoint's parts are committed state, checked against the root that names
        // them: asked for and answered whatever the epoch and status (`serve_checkpoint`).
        if matches!(
            message.body,
            Body::GetCheckpoint(_) | Body::CheckpointPart(_)
        ) {
            return match message.body {
                Body::GetCheckpoint(get) => self.on_get_checkpoint(get, effects),
                Body::CheckpointPart(part) => self.on_checkpoint_part(part, effects),
                _ => unreachable!("matched above"),
            };
        }
        if let Body::StartEpoch(start_epoch) = message.body {
            return self.on_start_epoch(message.epoch, start_epoch, effects);
        }
        if self.status == Status::Joining {
            return match message.body {
                Body::NewState(new_state) => self.receive_new_state(
                    fetch_checkpoint::StateRoute::Learner,
                    new_state,
                    effects,
                ),
                _ => self.drop_message(&message, "joining: waiting for a StartEpoch"),
            };
        }
        if let Body::GetState(GetState {
            op,
            learner: Some(learner),
        }) = message.body
        {
            // A new member warming up: it names itself, whatever its epoch.
            return self.on_learner_get_state(learner, op, effects);
        }
        if message.epoch < self.configuration.epoch() {
            return self.on_earlier_epoch(message, effects);
        }
        if message.epoch > self.configuration.epoch() {
            // Only a StartEpoch tells of a later epoch (it names the members); what comes
            // from one is the answer to fetching its start.
            return match message.body {
                Body::NewState(new_state) => self.receive_new_state(
                    fetch_checkpoint::StateRoute::PendingEpoch {
                        epoch: message.epoch,
                        from: message.replica,
                    },
                    new_state,
                    effects,
                ),
                _ => self.drop_message(&message, "later epoch"),
            };
        }
        let from = message.replica;
        let is_replica_message = !matches!(message.body, Body::Request(_) | Body::Reply(_));
        // A replica fetching its epoch's start takes committed state from any replica of
        // the epoch, members or the replaced ones that still serve it (`NOT_A_MEMBER`).
        let from_retiring = from == NOT_A_MEMBER
            && self.status == Status::Transitioning
            && matches!(message.body, Body::NewState(_));
        if is_replica_message
            && !from_retiring
            && (!self.configuration.contains(from) || from == self.index)
        {
            return self.drop_message(&message, "bad sender");
        }
        if self.status == Status::Recovering
            && !matches!(
                message.body,
                Body::Recovery(_)
                    | Body::RecoveryResponse(_)
                    | Body::NewState(_)
                    | Body::GetState(_)
            )
        {
            return self.drop_message(&message, "recovering");
        }
        if self.join_if_past_start(&message, effects) {
            return;
        }
        if let Some(reason) = self
            .epoch_status_refuses(&message.body)
            .filter(|_| !self.past_start_votes(&message.body))
        {
            return self.drop_message(&message, reason);
        }
        let view = message.view;
        match message.body {
            Body::Request(request) => self.on_request(request, effects),
            Body::Reply(_) => self.drop_reason("reply", "replicas take no replies"),
            Body::Prepare(prepare) => self.on_prepare(from, view, prepare, effects),
            Body::PrepareOk(prepare_ok) => self.on_prepare_ok(from, view, prepare_ok, effects),
            Body::Commit(commit) => self.on_commit(from, view, commit, effects),
            Body::StartViewChange(svc) => self.on_start_view_change(from, view, svc, effects),
            Body::DoViewChange(dvc) => self.on_do_view_change(from, view, dvc, effects),
            Body::StartView(start_view) => self.on_start_view(from, view, start_view, effects),
            Body::Recovery(recovery) => self.on_recovery(from, recovery, effects),
            Body::RecoveryResponse(response) => {
                self.on_recovery_response(from, view, response, effects)
            }
            Body::GetState(get_state) => self.on_get_state(from, get_state, effects),
            Body::NewState(new_state) => self.receive_new_state(
                fetch_checkpoint::StateRoute::Member {
                    epoch: message.epoch,
                    from,
                    view,
                },
                new_state,
                effects,
            ),
            Body::GetCheckpoint(_) | Body::CheckpointPart(_) => {
                unreachable!("handled before the epoch check")
            }
            Body::StartEpoch(_) => unreachable!("handled before the epoch check"),
            Body::EpochStarted => self.on_epoch_started(from, effects),
        }
    }

    /// Advances time by one tick and handles whatever timed out.
    pub fn on_tick(&mut self, effects: &mut Vec<Effect>) {
        let start = effects.len();
        self.handle_tick(effects);
        self.end_input(start, effects);
    }

    fn handle_tick(&mut self, effects: &mut Vec<Effect>) {
        self.ticks += 1;
        self.finish_checkpoint_if_built();
        for timeout in [
            &mut self.commit_timeout,
            &mut self.prepare_timeout,
            &mut self.normal_timeout,
            &mut self.view_change_timeout,
            &mut self.recovery_timeout,
            &mut self.state_transfer_timeout,
            &mut self.start_epoch_timeout,
        ] {
            timeout.tick();
        }
        if self.commit_timeout.fired() {
            self.on_commit_timeout(effects);
        }
        if self.prepare_timeout.fired() {
            self.on_prepare_timeout(effects);
        }
        if self.normal_timeout.fired() {
            self.on_normal_timeout(effects);
        }
        if self.view_change_timeout.fired() {
            self.on_view_change_timeout(effects);
        }
        if self.recovery_timeout.fired() {
            self.on_recovery_timeout(effects);
        }
        self.repeat_ask(effects);
        if self.state_transfer_timeout.fired() {
            self.state_transfer_timeout.stop();
            self.state_transfer_pending = false;
            // Ask again where nothing else would: a new primary's fetch, a recovery, a
            // replica fetching the start of its epoch.
            match self.status {
                Status::ViewChange => self.try_complete_view_change(effects),
                Status::Recovering => self.on_recovery_state_timeout(effects),
                Status::Transitioning => {
                    // A restart asks on its first tick; later attempts wait the timeout.
                    self.state_transfer_timeout
                        .set_after(self.config.state_transfer_timeout_ticks);
                    self.request_epoch_state(effects)
                }
                Status::Joining => {
                    self.state_transfer_timeout
                        .set_after(self.config.state_transfer_timeout_ticks);
                    self.request_learner_state(effects)
                }
                Status::Normal | Status::Retiring => {}
            }
        }
        if self.start_epoch_timeout.fired() {
            self.on_start_epoch_timeout(effects);
        }
        self.serve_checkpoints_on_tick(effects);
        self.fetch_checkpoint_on_tick(effects);
        self.expire_waiting_reads(effects);
        // Not tied to the heartbeat, which a loaded primary never sends.
        if self.is_primary() && self.ticks.is_multiple_of(self.config.normal_timeout_ticks) {
            self.remind_silent_members(effects);
        }
        self.tell_witnesses_on_tick(effects);
    }

    /// Sets the wall clock the primary stamps entries with (paper 4.4). The driver calls it
    /// before handing over requests; the core never reads a clock itself.
    pub fn set_clock(&mut self, realtime_ns: u64) {
        self.clock_ns = realtime_ns;
    }

    /// The replica's index in the current configuration (`NOT_A_MEMBER` when it is not
    /// a member: retiring, or joining).
    pub fn replica(&self) -> ReplicaIndex {
        self.index
    }

    /// The replica's identity.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.view
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The op number of the latest entry.
    pub fn op(&self) -> Op {
        self.log.op()
    }

    /// The op below the log's first entry (entries up to it were trimmed).
    pub fn log_base(&self) -> Op {
        self.log.base()
    }

    /// The commit number.
    pub fn commit(&self) -> Op {
        self.commit
    }

    /// The configuration epoch.
    pub fn epoch(&self) -> u32 {
        self.configuration.epoch()
    }

    /// The members of the current epoch.
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }

    /// The configuration of `epoch`, if this replica knows it (the current one or a
    /// recent earlier one): whom a `Broadcast` of that epoch goes to.
    pub fn configuration_of(&self, epoch: u32) -> Option<&Configuration> {
        std::iter::once(&self.configuration)
            .chain(self.history.iter().rev())
            .find(|configuration| configuration.epoch() == epoch)
    }

    /// The configurations this replica knows, the current one first, then the earlier
    /// ones it keeps, newest first.
    pub fn configurations(&self) -> impl Iterator<Item = &Configuration> {
        std::iter::once(&self.configuration).chain(self.history.iter().rev())
    }

    /// The op the current epoch started after (its RECONFIGURATION's op; 0 in epoch 0).
    pub fn epoch_start(&self) -> Op {
        self.epoch_start
    }

    /// The committed entries this replica keeps aside as an active that was a witness
    /// of the epoch before, until its own log reaches them (`Write::FormerWitnessLog`).
    pub fn former_witness_log(&self) -> Option<&FormerWitnessLog> {
        self.epoch_transfer.former_witness_log.as_ref()
    }

    /// Whether this replica left the cluster for good (paper 7.3): it is not a member of
    /// the current epoch and f'+1 of its members hold the epoch's starting state. The
    /// driver shuts it down.
    pub fn is_retired(&self) -> bool {
        self.epoch_transfer.retired
    }

    /// Whether this replica is the primary of its view and in normal status.
    pub fn is_primary(&self) -> bool {
        self.status == Status::Normal && self.primary_of(self.view) == self.index
    }

    /// The op of the latest checkpoint (0: none).
    pub fn checkpoint_op(&self) -> Op {
        self.checkpoint
            .as_ref()
            .map_or(0, |held| held.checkpoint.op)
    }

    /// The latest checkpoint taken or restored, if any, and if its pages are held (they
    /// are released while the next one builds, unless a transfer reads them).
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref().and_then(|held| held.whole())
    }

    /// The client table (committed sessions and their latest replies).
    pub fn client_table(&self) -> &ClientTable {
        &self.clients
    }

    /// Entries held in the log.
    pub fn log_entries(&self) -> usize {
        self.log.len()
    }

    /// The entry at `op`, if it is still in the log.
    pub fn entry(&self, op: Op) -> Option<&Entry> {
        self.log.get(op)
    }

    /// On the primary: per replica index, the highest op it acknowledged in this view
    /// (its own entry: the highest op its completed writes hold). `None` elsewhere.
    pub fn peer_acknowledged(&self) -> Option<&[Op]> {
        self.is_primary().then_some(self.primary.acked.as_slice())
    }

    /// Prepares in flight (primary).
    pub fn pipeline_depth(&self) -> usize {
        self.primary.pipeline.len()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The replicated service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// Checks every invariant, including those that cost O(log length); panics on a
    /// violation. The simulator runs it after every step.
    pub fn invariants(&self) {
        self.log.check_timestamps();
        self.waiting_reads.invariants();
        self.lease_invariants();
        self.invariants_per_input();
    }

    /// The invariants cheap enough to check after every input, which debug builds (and
    /// so every test) do.
    fn invariants_per_input(&self) {
        let op = self.log.op();
        assert!(self.commit <= op, "commit {} > op {}", self.commit, op);
        assert!(
            self.log.base() <= self.commit,
            "log base {} > commit {}",
            self.log.base(),
            self.commit
        );
        assert!(self.checkpoint_op() <= self.commit);
        assert!(!self.retired_as_witness || self.index == NOT_A_MEMBER);
        assert!(self.last_normal_view <= self.view);
        assert!(
            self.asks.view == 0 || self.asks.view > self.view,
            "asks are for views above the current one"
        );
        assert!(self.log.len() as u64 <= self.log_entries_cap());
        assert!(self.clients.len() <= self.config.clients_max as usize);
        self.writes.check();
        // Role state exists only in its role.
        assert_eq!(self.recovery.is_some(), self.status == Status::Recovering);
        assert!(self.status == Status::ViewChange || self.view_changing.is_empty());
        assert!(self.is_primary() || self.primary.is_empty());
        // Paper 6.1: a witness never leads, executes or checkpoints.
        // (One that was active keeps the start's state until the actives hold it.)
        assert!(
            !self.is_witness()
                || (!self.is_primary()
                    && (self.hands_over_state()
                        || (self.checkpoint.is_none()
                            && self.building.is_none()
                            && self.clients.is_empty()))),
            "a witness that leads or holds state"
        );
        assert!(
            self.primary.own_appends.is_empty() || self.is_primary(),
            "only a primary waits for its own appends"
        );
        match self.status {
            Status::Normal => {
                assert_eq!(
                    self.last_normal_view, self.view,
                    "normal status in a view not started"
                );
                if self.is_primary() {
                    assert!(
                        self.primary.pipeline.len() <= self.config.pipeline_prepares_max as usize
                    );
                    assert!(self.primary.queue.len() <= self.config.batch_entries_max as usize);
                    assert!(self.primary.acked.iter().all(|&acked| acked <= op));
                    if let Some(last) = self.primary.pipeline.back() {
                        assert_eq!(last.op_last, op, "the pipeline ends at op");
                    }
                    assert!(self
                        .primary
                        .pipeline
                        .front()
                        .is_none_or(|first| first.op_last > self.commit));
                } else {
                    assert!(self.primary.queue.is_empty() && self.primary.pipeline.is_empty());
                }
            }
            Status::ViewChange => {
                assert!(self.primary.queue.is_empty() && self.primary.pipeline.is_empty())
            }
            Status::Recovering => {
                assert!(self.primary.queue.is_empty() && self.primary.pipeline.is_empty());
                assert!(self.recovery.is_some());
            }
            Status::Transitioning | Status::Retiring | Status::Joining => {
                assert!(self.primary.queue.is_empty() && self.primary.pipeline.is_empty());
            }
        }
        assert_eq!(
            self.index == NOT_A_MEMBER,
            matches!(self.status, Status::Retiring | Status::Joining),
            "only a replica outside its configuration is retiring or joining"
        );
        if self.index != NOT_A_MEMBER {
            assert_eq!(self.configuration.id_of(self.index), self.id);
        }
        assert!(
            self.epoch_change.is_none(),
            "an epoch change waits for no input"
        );
        assert!(self.history.len() <= HISTORY_MAX);
    }

    // Helpers shared by the handler files.

    fn primary_of(&self, view: View) -> ReplicaIndex {
        self.configuration.primary_of(view)
    }

    fn faults_max(&self) -> usize {
        self.configuration.faults_max()
    }

    fn quorum(&self) -> usize {
        self.configuration.quorum()
    }

    fn envelope(&self, body: Body) -> Message {
        Message {
            epoch: self.configuration.epoch(),
            view: self.view,
            replica: self.index,
            body,
        }
    }

    /// Sends to member `to` of the current configuration.
    fn send(&self, to: ReplicaIndex, body: Body, effects: &mut Vec<Effect>) {
        debug_assert_ne!(to, self.index);
        effects.push(Effect::Send {
            to: self.configuration.id_of(to),
            message: self.envelope(body),
        });
    }

    /// Sends to the replica with identity `to`, whatever its configuration.
    fn send_to_id(&self, to: ReplicaId, body: Body, effects: &mut Vec<Effect>) {
        debug_assert_ne!(to, self.id);
        effects.push(Effect::Send {
            to,
            message: self.envelope(body),
        });
    }

    /// A PrepareOk for the whole log, with this replica's commit number and `stamp`.
    fn acknowledgement(&self, stamp: LeaseStamp) -> Body {
        Body::PrepareOk(PrepareOk {
            op: self.log.op(),
            commit: self.commit,
            stamp,
        })
    }

    fn broadcast(&self, body: Body, effects: &mut Vec<Effect>) {
        self.broadcast_to(Audience::Members, body, effects);
    }

    fn broadcast_to(&self, audience: Audience, body: Body, effects: &mut Vec<Effect>) {
        effects.push(Effect::Broadcast {
            message: self.envelope(body),
            audience,
        });
    }

    fn drop_message(&mut self, message: &Message, reason: &'static str) {
        self.drop_reason(message.body.name(), reason);
    }

    fn drop_reason(&mut self, what: &'static str, reason: &'static str) {
        self.stats.messages_dropped += 1;
        tracing::trace!(
            replica = self.index,
            view = self.view,
            what,
            reason,
            "dropped"
        );
    }

    // Transitions: the only places the status changes. Each asserts what must hold on
    // entry and builds the role state of the status it enters, so nothing of the status
    // it leaves can survive. (Recovering is entered once, at start: `start_recovering`.)

    /// Normal status in the current view, as its primary or a backup (paper 4.1). The
    /// caller has just installed the view's log: a replica is never normal in a view
    /// without holding that view's log.
    fn enter_normal(&mut self) {
        assert!(
            self.status != Status::Normal || self.last_normal_view < self.view,
            "already normal in view {}",
            self.view
        );
        assert!(self.commit <= self.log.op());
        let n = self.configuration.replica_count() as usize;
        self.status = Status::Normal;
        self.last_normal_view = self.view;
        self.joined = true;
        self.primary = Primary::new(n);
        self.primary.reconfiguration_queued =
            self.primary_of(self.view) == self.index && self.log_ends_in_reconfiguration();
        self.view_changing = ViewChanging::new(n);
        self.recovery = None;
        self.lease_on_enter_normal();
        self.start_normal_timeouts();
    }

    /// View-change status for `view` (paper 4.2): as one of those choosing its log,
    /// having heard `calls` for it, or (`joining`) as a replica that fetches the log of a
    /// view that started without it, and has no say in choosing it.
    fn enter_view_change(&mut self, view: View, calls: ReplicaSet, joining: bool) {
        assert!(view >= self.view);
        assert!(
            view > self.view || self.status != Status::Normal,
            "a started view is left only for a later one"
        );
        assert_ne!(self.status, Status::Recovering);
        assert!(calls.contains(self.index));
        if view > self.view {
            self.set_view(view);
        }
        self.new_cluster = false;
        let n = self.configuration.replica_count() as usize;
        self.status = Status::ViewChange;
        self.joined = true;
        self.primary = Primary::new(n);
        self.view_changing = ViewChanging {
            calls,
            do_view_change_sent: joining,
            joining,
            ..ViewChanging::new(n)
        };
        self.stop_all_timeouts();
        self.view_change_timeout.start();
    }

    /// The only place the view changes. Asks for views up to the new one are answered.
    fn set_view(&mut self, view: View) {
        assert!(view >= self.view, "view must never go backwards");
        assert!(view <= VIEW_MAX);
        self.view = view;
        if self.asks.view <= view {
            self.asks = ViewChangeAsks::default();
        }
    }

    fn stop_all_timeouts(&mut self) {
        self.commit_timeout.stop();
        self.prepare_timeout.stop();
        self.normal_timeout.stop();
        self.view_change_timeout.stop();
        self.recovery_timeout.stop();
    }

    /// Arms the timeouts of normal status for this replica's role.
    fn start_normal_timeouts(&mut self) {
        self.stop_all_timeouts();
        for tick in self.heard_tick.iter_mut() {
            *tick = self.ticks;
        }
        if self.primary_of(self.view) == self.index {
            self.commit_timeout.start();
            if !self.primary.pipeline.is_empty() {
                self.prepare_timeout.start();
            }
        } else {
            self.normal_timeout.start();
        }
    }

    /// Whether this replica has reason to believe the current view is healthy, so that a
    /// StartViewChange from a replica that was partitioned away must not depose it: a
    /// backup heard from its primary within the normal timeout, a primary heard from f
    /// backups within it.
    fn view_is_healthy(&self) -> bool {
        if self.status != Status::Normal {
            return false;
        }
        let recent = |tick: u64| self.ticks.saturating_sub(tick) < self.config.normal_timeout_ticks;
        let primary = self.primary_of(self.view);
        if primary != self.index {
            return recent(self.heard_tick[primary as usize]);
        }
        let heard = self
            .configuration
            .indexes()
            .filter(|&replica| replica != self.index && recent(self.heard_tick[replica as usize]))
            .count();
        heard >= self.faults_max()
    }
}
