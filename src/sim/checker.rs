//! The simulator's safety checkers, run after every step:
//! - **agreement**: every op a replica commits equals the canonical entry recorded the
//!   first time any replica committed that op (paper 4.2's safety property: a committed
//!   op survives every view change at its op number);
//! - **durability of replies**: the canonical log never changes once recorded, and an op
//!   named in an Ok reply holds exactly the replied-to client, session and request;
//! - **linearizable, exactly-once results**: every Ok reply's result equals the
//!   [`Model`]'s result for that op (the log order is a legal sequential order); a request
//!   submitted after another's reply reached a client commits at a later op (real-time
//!   order, the other half of linearizability); and a replica's service state equals the
//!   model's whenever both have applied the same ops (a double execution shows up here);
//! - **refusals**: every Evicted reply a replica sends, for client c's session s, is sent
//!   by a replica whose commit number C is at least s and at which the model's table no
//!   longer held session s for c (evicted or replaced at some op in s..=C); every Rejected
//!   reply is for a request the client sent with an oversized body, and no committed
//!   entry has one;
//! - **views keep committed ops**: a replica that becomes the normal primary of view v
//!   holds every op some replica committed while in a view below v, and no op commits
//!   in a view below v beyond the log v started with;
//! - **checkpoints**: replicas' checkpoints at the same op hold the same bytes (client
//!   table and service), and equal the model's table (sessions, request numbers, latest
//!   ops, registration attempts, replies) and service at that op.
//!
//! Liveness is the cluster's business: it needs the notion of time.

use super::model::{Model, ModelOutcome, ModelSession};
use super::reads::BackupRead;
use super::service::SimService;
use super::watch::EpochView;
use crate::config::Config;
use crate::protocol::client_table::ClientTable;
use crate::protocol::replica::NOT_A_MEMBER;
use crate::protocol::Replica;
use crate::protocol::{
    ClientId, Configuration, Entry, Op, Operation, ReplicaIndex, RequestNumber, Session, Status,
};
use crate::service::{Kv, Snapshot};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Bound;

/// A broken check: which one, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The check's name: `agreement`, `durability`, `linearizability`, `exactly_once`,
    /// `liveness`, `replica_panic`, `model` (the service's own check of a result,
    /// `SimService::check_result`), among others.
    pub check: &'static str,
    /// What was seen.
    pub details: String,
}

impl Failure {
    /// A failure of `check`.
    pub fn new(check: &'static str, details: String) -> Failure {
        Failure { check, details }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.details)
    }
}

/// An answer a client accepted, to be checked against the canonical log and the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    /// `Outcome::Registered`: the session is the op the registration committed at.
    Registered {
        /// The client.
        client: ClientId,
        /// The session (an op number).
        session: Session,
    },
    /// `Outcome::Completed`.
    Completed {
        /// The client.
        client: ClientId,
        /// The session the request was sent in.
        session: Session,
        /// The request.
        request: RequestNumber,
        /// The op the reply names.
        op: Op,
        /// The result the reply carries.
        result: Bytes,
    },
}

impl ClientReply {
    fn op(&self) -> Op {
        match self {
            ClientReply::Registered { session, .. } => *session,
            ClientReply::Completed { op, .. } => *op,
        }
    }
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckCounts {
    /// Commits compared with the canonical log (one per replica per op it still held).
    pub commits_checked: u64,
    /// Replies checked against the model.
    pub replies_checked: u64,
    /// Service snapshots compared with the model's.
    pub snapshots_checked: u64,
    /// Evicted replies checked against the model.
    pub evicted_checked: u64,
    /// Backup reads' answers checked against the model (paper 6.3.2).
    pub reads_checked: u64,
    /// Of them, lease reads answered at the primary (paper 6.3.1), also checked for
    /// real-time order.
    pub lease_reads_checked: u64,
    /// Rejected replies checked.
    pub rejected_checked: u64,
    /// Replica checkpoints compared with another replica's or the model's.
    pub checkpoints_checked: u64,
}

impl CheckCounts {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &CheckCounts) {
        self.commits_checked += other.commits_checked;
        self.replies_checked += other.replies_checked;
        self.snapshots_checked += other.snapshots_checked;
        self.evicted_checked += other.evicted_checked;
        self.rejected_checked += other.rejected_checked;
        self.checkpoints_checked += other.checkpoints_checked;
        self.reads_checked += other.reads_checked;
        self.lease_reads_checked += other.lease_reads_checked;
    }
}

/// An Evicted reply a replica sent, waiting until the model has applied its commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EvictedReply {
    replica: ReplicaIndex,
    client: ClientId,
    session: Session,
    /// The sender's commit number when it sent the reply.
    commit: Op,
}

/// A replica checkpoint's pages, as first seen at its op.
#[derive(Clone, Debug)]
struct SeenCheckpoint {
    replica: ReplicaIndex,
    clients: Snapshot,
    service: Snapshot,
    /// Whether it was compared with the model yet.
    modeled: bool,
}

/// The canonical log, the model, and what each replica has been checked up to.
pub struct Checker<S: SimService = Kv> {
    /// `canonical[op - 1]`: the entry first committed at `op`, once seen.
    canonical: Vec<Option<Entry>>,
    model: Model<S>,
    /// Per replica: its commit number at the last check.
    checked: Vec<Op>,
    /// Replies naming ops the model has not applied yet.
    pending: Vec<ClientReply>,
    /// Backup reads answered at commit numbers the model has not applied yet: (the read,
    /// the commit number, the result).
    reads_pending: Vec<(BackupRead, Op, Bytes)>,
    /// The highest op named by a reply any client has accepted so far.
    answered_op_max: Op,
    /// Evicted replies the model cannot judge yet.
    evicted_pending: Vec<EvictedReply>,
    /// Requests clients sent with a body over the limit: (client, session, request).
    oversized: HashSet<(ClientId, Session, RequestNumber)>,
    /// `request_body_bytes_max`, when known: no committed entry may exceed it.
    body_bytes_max: Option<usize>,
    /// Clients a client table holds at most (to decode checkpoints).
    clients_max: usize,
    /// Per checkpoint op: the first replica checkpoint seen there.
    checkpoints: HashMap<Op, SeenCheckpoint>,
    /// Per replica: the op of the checkpoint it held at the last check.
    checkpoint_seen: Vec<Op>,
    /// Per replica: the commit number it restarted with from its disk. It learned those
    /// commits in an earlier life, in a view it may no longer show (a lost state
    /// record), so they are compared for agreement but not against the views started.
    restored_commit: Vec<Op>,
    /// Per view w: the highest op some replica had committed while in view w (so it was
    /// committed in w or earlier). Every view after w must start with a log that long.
    /// Views are keyed with their epoch: each epoch numbers its views from 0, and every
    /// view of a later epoch comes after every view of an earlier one (paper 7).
    committed_by_view: BTreeMap<EpochView, Op>,
    /// Per started view: the op its primary started it with (the first seen).
    view_start_ops: BTreeMap<EpochView, Op>,
    /// Per replica: the view it was last checked starting as primary.
    started_checked: Vec<Option<EpochView>>,
    /// Per replica: whether it held no service state when last checked (a witness, paper
    /// 6.1). One that becomes active in a later epoch starts again from op 0
    /// (`epoch::take_up_role`), as a replica restarted empty does.
    stateless: Vec<bool>,
    /// Per epoch after the first: the op it started after (its RECONFIGURATION's op), as
    /// the first replica seen in the epoch knew it.
    epoch_starts: BTreeMap<u32, Op>,
    /// What was checked.
    pub counts: CheckCounts,
}

impl Checker<Kv> {
    /// A checker for `replica_count` replicas of the key-value service whose client
    /// tables hold `clients_max`.
    pub fn new(replica_count: usize, clients_max: usize) -> Checker<Kv> {
        Checker::for_service(replica_count, clients_max)
    }

    /// A checker for replicas of the key-value service running `config`.
    pub fn for_config(config: &Config) -> Checker<Kv> {
        Checker::for_service_config(config)
    }
}

impl<S: SimService> Checker<S> {
    /// A checker for `replica_count` replicas of `S` whose client tables hold
    /// `clients_max`.
    pub fn for_service(replica_count: usize, clients_max: usize) -> Checker<S> {
        Checker {
            canonical: Vec::new(),
            model: Model::for_service(clients_max),
            checked: vec![0; replica_count],
            pending: Vec::new(),
            reads_pending: Vec::new(),
            answered_op_max: 0,
            evicted_pending: Vec::new(),
            oversized: HashSet::new(),
            body_bytes_max: None,
            clients_max,
            checkpoints: HashMap::new(),
            checkpoint_seen: vec![0; replica_count],
            restored_commit: vec![0; replica_count],
            committed_by_view: BTreeMap::new(),
            view_start_ops: BTreeMap::new(),
            started_checked: vec![None; replica_count],
            stateless: vec![false; replica_count],
            epoch_starts: BTreeMap::new(),
            counts: CheckCounts::default(),
        }
    }

    /// A checker for replicas of `S` running `config`: it also knows the body limit and
    /// the checkpoint interval, so it checks refusals and checkpoints.
    pub fn for_service_config(config: &Config) -> Checker<S> {
        let mut checker =
            Checker::for_service(config.replica_count as usize, config.clients_max as usize);
        checker.body_bytes_max = Some(config.request_body_bytes_max as usize);
        checker
            .model
            .keep_checkpoints(config.checkpoint_interval_ops);
        checker
    }

    /// The reference model.
    pub fn model(&self) -> &Model<S> {
        &self.model
    }

    /// The canonical entry at `op`, if any replica was seen committing it.
    pub fn canonical(&self, op: Op) -> Option<&Entry> {
        self.canonical.get((op as usize).checked_sub(1)?)?.as_ref()
    }

    /// The highest op known committed.
    pub fn committed_max(&self) -> Op {
        self.canonical.len() as Op
    }

    /// Makes room for replicas up to `replica_count` (members added by a
    /// reconfiguration).
    pub fn grow(&mut self, replica_count: usize) {
        if self.checked.len() < replica_count {
            self.checked.resize(replica_count, 0);
            self.checkpoint_seen.resize(replica_count, 0);
            self.restored_commit.resize(replica_count, 0);
            self.started_checked.resize(replica_count, None);
            self.stateless.resize(replica_count, false);
        }
    }

    /// The epochs started so far, each with the op it started after.
    pub fn epoch_starts(&self) -> &BTreeMap<u32, Op> {
        &self.epoch_starts
    }

    /// Forgets a replica's progress: it restarted with an empty memory.
    pub fn on_restart(&mut self, replica: ReplicaIndex) {
        self.checked[replica as usize] = 0;
        self.checkpoint_seen[replica as usize] = 0;
        self.started_checked[replica as usize] = None;
        self.restored_commit[replica as usize] = 0;
    }

    /// A replica restarted from its disk with commit number `commit` (see
    /// `restored_commit`).
    pub fn on_restart_from_disk(&mut self, replica: ReplicaIndex, commit: Op) {
        self.on_restart(replica);
        self.restored_commit[replica as usize] = commit;
    }

    /// Agreement: compares the ops `replica` committed since the last check with the
    /// canonical log, recording those seen for the first time. Returns whether its commit
    /// number moved.
    pub fn check_replica(
        &mut self,
        index: ReplicaIndex,
        replica: &Replica<S>,
    ) -> Result<bool, Failure> {
        let commit = replica.commit();
        let holds_state = replica.holds_service_state();
        let was_stateless = std::mem::replace(&mut self.stateless[index as usize], !holds_state);
        if commit < self.checked[index as usize] && was_stateless && holds_state {
            // A witness that became active: it forgot the ops it only knew committed.
            self.on_restart(index);
        }
        let checked = self.checked[index as usize];
        if commit < checked {
            return Err(Failure::new(
                "agreement",
                format!("replica {index} commit went backwards from {checked} to {commit} without a restart"),
            ));
        }
        for op in checked + 1..=commit {
            // A replica that jumped forward through a checkpoint no longer holds the ops
            // below it: nothing to compare.
            if let Some(entry) = replica.entry(op) {
                self.record(index, op, entry)?;
            }
        }
        self.checked[index as usize] = commit;
        // Only a member voting in its epoch's views says in which view an op was
        // committed: a learner, a transitioning replica and a replaced one execute what
        // others committed, in views they never joined.
        let voting = replica.replica() != NOT_A_MEMBER
            && !matches!(replica.status(), Status::Joining | Status::Transitioning);
        if voting && commit != checked && commit > self.restored_commit[index as usize] {
            let view = (replica.epoch(), replica.view());
            let highest = self.committed_by_view.entry(view).or_insert(0);
            *highest = (*highest).max(commit);
            self.check_commit_below_started_views(index, view, commit)?;
        }
        Ok(commit != checked)
    }

    /// The other half of "a view keeps every committed op": an op committed in view w,
    /// even after a later view v started, must be in v's log (the replicas that
    /// acknowledged it include one whose DoViewChange for v carried it), so no view above
    /// w may have started with a shorter log.
    fn check_commit_below_started_views(
        &self,
        index: ReplicaIndex,
        view: EpochView,
        commit: Op,
    ) -> Result<(), Failure> {
        let shorter = self
            .view_start_ops
            .range((Bound::Excluded(view), Bound::Unbounded))
            .find(|(_, &start_op)| start_op < commit);
        match shorter {
            None => Ok(()),
            Some((started, start_op)) => Err(Failure::new(
                "agreement",
                format!("replica {index} committed op {commit} in (epoch, view) {view:?}, but {started:?} had started with op {start_op}, without it"),
            )),
        }
    }

    /// Epochs (paper 7): every replica that knows where its epoch started agrees on it,
    /// the op there is the RECONFIGURATION that names the epoch, a normal member has
    /// executed it, and no replica still in an earlier epoch commits past it (the old
    /// group orders nothing after its RECONFIGURATION, 7.1).
    pub fn check_epoch(
        &mut self,
        index: ReplicaIndex,
        replica: &Replica<S>,
    ) -> Result<(), Failure> {
        let epoch = replica.epoch();
        let start = replica.epoch_start();
        if epoch > 0 && start > 0 {
            let first = *self.epoch_starts.entry(epoch).or_insert(start);
            if first != start {
                return Err(Failure::new(
                    "epochs",
                    format!("replica {index} says epoch {epoch} started after op {start}, another said op {first}"),
                ));
            }
            if replica.status() == Status::Normal
                && replica.replica() != NOT_A_MEMBER
                && replica.commit() < start
            {
                return Err(Failure::new(
                    "epochs",
                    format!("replica {index} is a normal member of epoch {epoch} with commit {}, below the epoch's start {start}", replica.commit()),
                ));
            }
        }
        // A learner belongs to no group yet: it executes whatever is committed, from any
        // epoch (a checkpoint can carry it past a RECONFIGURATION), and votes in nothing.
        let learner = replica.status() == Status::Joining;
        if let Some((&later, &later_start)) = self
            .epoch_starts
            .range(epoch + 1..)
            .next()
            .filter(|_| !learner)
        {
            if replica.commit() > later_start {
                return Err(Failure::new(
                    "epochs",
                    format!("replica {index}, still in epoch {epoch}, committed op {} past op {later_start}, the RECONFIGURATION that started epoch {later}", replica.commit()),
                ));
            }
        }
        Ok(())
    }

    /// The op each epoch started after is the RECONFIGURATION that names that epoch.
    fn check_epoch_starts(&self) -> Result<(), Failure> {
        for (&epoch, &start) in &self.epoch_starts {
            let Some(entry) = self.canonical(start) else {
                continue;
            };
            let names = entry.operation == Operation::Reconfigure
                && Configuration::from_bytes(&entry.body)
                    .is_some_and(|configuration| configuration.epoch() == epoch);
            if !names {
                return Err(Failure::new(
                    "epochs",
                    format!("epoch {epoch} started after op {start}, which is not its RECONFIGURATION: {}", describe(entry)),
                ));
            }
        }
        Ok(())
    }

    /// A view keeps every committed op (paper 4.2): when `replica` has just become the
    /// normal primary of view v, its log must reach every op some replica committed while
    /// in a view below v (such an op was committed in that view or earlier).
    pub fn check_view_start(
        &mut self,
        index: ReplicaIndex,
        replica: &Replica<S>,
    ) -> Result<(), Failure> {
        let view = (replica.epoch(), replica.view());
        if !replica.is_primary() || self.started_checked[index as usize] == Some(view) {
            return Ok(());
        }
        self.started_checked[index as usize] = Some(view);
        self.view_start_ops.entry(view).or_insert(replica.op());
        let Some((&seen_in, &committed)) = self
            .committed_by_view
            .range(..view)
            .max_by_key(|(_, &op)| op)
        else {
            return Ok(());
        };
        if replica.op() < committed {
            return Err(Failure::new(
                "agreement",
                format!(
                    "replica {index} started (epoch, view) {view:?} with op {}, without op {committed}, which a replica in {seen_in:?} had committed",
                    replica.op()
                ),
            ));
        }
        Ok(())
    }

    /// Compares one committed entry with the canonical log, recording it if new.
    pub fn record(&mut self, index: ReplicaIndex, op: Op, entry: &Entry) -> Result<(), Failure> {
        self.counts.commits_checked += 1;
        if self
            .body_bytes_max
            .is_some_and(|max| entry.body.len() > max)
        {
            return Err(Failure::new(
                "refusal",
                format!(
                    "replica {index} committed an oversized request at op {op}: {}",
                    describe(entry)
                ),
            ));
        }
        let slot = op as usize - 1;
        if self.canonical.len() <= slot {
            self.canonical.resize(slot + 1, None);
        }
        match &self.canonical[slot] {
            None => self.canonical[slot] = Some(entry.clone()),
            Some(canonical) if canonical == entry => {}
            Some(canonical) => {
                return Err(Failure::new(
                    "agreement",
                    format!(
                        "replica {index} committed {} at op {op}, but {} was committed there first",
                        describe(entry),
                        describe(canonical)
                    ),
                ))
            }
        }
        Ok(())
    }

    /// Applies every newly contiguous canonical op to the model, then checks the replies
    /// that were waiting for them.
    pub fn advance_model(&mut self) -> Result<(), Failure> {
        let before = self.model.applied();
        while let Some(Some(entry)) = self.canonical.get(self.model.applied() as usize) {
            let op = self.model.applied() + 1;
            self.model
                .apply(op, entry)
                .map_err(|reason| Failure::new("model", reason))?;
        }
        if self.model.applied() == before {
            return Ok(());
        }
        self.check_epoch_starts()?;
        self.check_evicted_pending()?;
        self.check_checkpoints_pending()?;
        self.check_reads_pending()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let applied = self.model.applied();
        let ready: Vec<ClientReply> = {
            let (ready, waiting) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|r| r.op() <= applied);
            self.pending = waiting;
            ready
        };
        ready
            .into_iter()
            .try_for_each(|reply| self.check_reply(reply))
    }

    /// The highest op any accepted reply named: a client records it when it submits, and
    /// its request must then commit above it.
    pub fn answered_op_max(&self) -> Op {
        self.answered_op_max
    }

    /// Durability and linearizability of one accepted reply to a request submitted when
    /// [`Checker::answered_op_max`] was `answered_before_submit`.
    pub fn on_reply(
        &mut self,
        reply: ClientReply,
        answered_before_submit: Op,
    ) -> Result<(), Failure> {
        if reply.op() <= answered_before_submit {
            return Err(Failure::new(
                "linearizability",
                format!(
                    "{reply:?} names op {}, but the request was submitted after a reply naming op {answered_before_submit} had reached a client (real-time order)",
                    reply.op()
                ),
            ));
        }
        self.answered_op_max = self.answered_op_max.max(reply.op());
        if let Some(entry) = self.canonical(reply.op()) {
            let expected = match &reply {
                ClientReply::Registered { client, .. } => {
                    entry.operation == Operation::Register && entry.client == *client
                }
                ClientReply::Completed {
                    client,
                    session,
                    request,
                    ..
                } => {
                    // The administrator's RECONFIGURATION is answered like any request.
                    matches!(
                        entry.operation,
                        Operation::Apply | Operation::Query | Operation::Reconfigure
                    ) && (entry.client, entry.session, entry.request)
                        == (*client, *session, *request)
                }
            };
            if !expected {
                return Err(Failure::new(
                    "durability",
                    format!(
                        "{reply:?} names op {}, which holds {}",
                        reply.op(),
                        describe(entry)
                    ),
                ));
            }
        }
        if reply.op() > self.model.applied() {
            self.pending.push(reply);
            return Ok(());
        }
        self.check_reply(reply)
    }

    fn check_reply(&mut self, reply: ClientReply) -> Result<(), Failure> {
        self.counts.replies_checked += 1;
        let outcome = self.model.outcome(reply.op());
        let fine = match (&reply, outcome) {
            (
                ClientReply::Registered { client, .. },
                Some(ModelOutcome::Registered { client: c }),
            ) => client == c,
            (
                ClientReply::Completed {
                    client,
                    session,
                    request,
                    result,
                    ..
                },
                Some(ModelOutcome::Executed {
                    client: c,
                    session: s,
                    request: r,
                    result: expected,
                }),
            ) => (client, session, request, result) == (c, s, r, expected),
            _ => false,
        };
        if fine {
            return Ok(());
        }
        Err(Failure::new(
            "linearizability",
            format!("client accepted {reply:?}, but the reference model says {outcome:?}"),
        ))
    }

    /// The causal rule for an answer to a backup read (paper 6.3.2), taken from the
    /// answering replica at commit number `op`: `op` is at least the op the read's session
    /// had seen (it reads its own writes and never goes back in time), and `result` is
    /// what the model's state right after `op` answers. Judged now, or once the model has
    /// applied `op`.
    pub fn on_backup_read(
        &mut self,
        read: &BackupRead,
        op: Op,
        result: &Bytes,
    ) -> Result<(), Failure> {
        if op < read.seen {
            return Err(Failure::new(
                "causality",
                format!(
                    "client {} read {} was answered at commit {op}, older than op {} its session had seen",
                    read.client, read.number, read.seen
                ),
            ));
        }
        if op > self.model.applied() {
            self.reads_pending.push((read.clone(), op, result.clone()));
            return Ok(());
        }
        self.check_backup_read_value(read, op, result)
    }

    /// Linearizability of a lease read (paper 6.3.1) answered at the primary at commit
    /// number `op`, submitted when [`Checker::answered_op_max`] was
    /// `answered_before_submit`: the state it read from must hold every op a reply had
    /// named to any client before the read began (a stale read otherwise), and `result`
    /// must be the model's answer there. Its op then bounds later reads as a reply's does.
    pub fn on_lease_read(
        &mut self,
        read: &BackupRead,
        op: Op,
        result: &Bytes,
        answered_before_submit: Op,
    ) -> Result<(), Failure> {
        if op < answered_before_submit {
            return Err(Failure::new(
                "linearizability",
                format!(
                    "client {} lease read {} was answered at commit {op}, but a reply naming op {answered_before_submit} had reached a client before it was sent (a stale read)",
                    read.client, read.number
                ),
            ));
        }
        self.counts.lease_reads_checked += 1;
        self.answered_op_max = self.answered_op_max.max(op);
        self.on_backup_read(read, op, result)
    }

    fn check_backup_read_value(
        &mut self,
        read: &BackupRead,
        op: Op,
        result: &Bytes,
    ) -> Result<(), Failure> {
        self.counts.reads_checked += 1;
        let expected = if op == self.model.applied() {
            self.model.service().query(&read.query)
        } else {
            let canonical = &self.canonical;
            let entry = |at: Op| canonical.get(at as usize - 1)?.as_ref();
            let Some(service) = self.model.service_at(op, entry) else {
                return Err(Failure::new(
                    "model",
                    format!("cannot rebuild the model's state at op {op}"),
                ));
            };
            service.query(&read.query)
        };
        if *result == expected {
            return Ok(());
        }
        Err(Failure::new(
            "causality",
            format!(
                "client {} read {} answered {result:?} at commit {op}, but the model's state there answers {expected:?}",
                read.client, read.number
            ),
        ))
    }

    fn check_reads_pending(&mut self) -> Result<(), Failure> {
        let applied = self.model.applied();
        if self.reads_pending.iter().all(|(_, op, _)| *op > applied) {
            return Ok(());
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_pending)
            .into_iter()
            .partition(|(_, op, _)| *op <= applied);
        self.reads_pending = waiting;
        ready
            .into_iter()
            .try_for_each(|(read, op, result)| self.check_backup_read_value(&read, op, &result))
    }

    /// Backup reads still waiting for the model to apply their commit number.
    pub fn reads_pending(&self) -> usize {
        self.reads_pending.len()
    }

    /// Notes a request sent with a body over the limit: the replicas may refuse it.
    pub fn on_oversized_request(
        &mut self,
        client: ClientId,
        session: Session,
        request: RequestNumber,
    ) {
        self.oversized.insert((client, session, request));
    }

    /// A Rejected reply from `replica` is legitimate only for a request sent oversized
    /// (a late copy of an old one included).
    pub fn on_rejected_reply(
        &mut self,
        replica: ReplicaIndex,
        client: ClientId,
        session: Session,
        request: RequestNumber,
    ) -> Result<(), Failure> {
        self.counts.rejected_checked += 1;
        if self.oversized.contains(&(client, session, request)) {
            return Ok(());
        }
        Err(Failure::new(
            "refusal",
            format!("replica {replica} answered Rejected to client {client:x} session {session} request {request}, which was never sent oversized"),
        ))
    }

    /// An Evicted reply from `replica`, sent at commit number `commit`: checked now if
    /// the model can judge it, else once it has applied `commit`.
    pub fn on_evicted_reply(
        &mut self,
        replica: ReplicaIndex,
        client: ClientId,
        session: Session,
        commit: Op,
    ) -> Result<(), Failure> {
        let reply = EvictedReply {
            replica,
            client,
            session,
            commit,
        };
        if !self.check_evicted(reply)? {
            self.evicted_pending.push(reply);
        }
        Ok(())
    }

    /// Whether `reply` was judged (it passed); an error if it is wrong.
    fn check_evicted(&mut self, reply: EvictedReply) -> Result<bool, Failure> {
        let EvictedReply {
            replica,
            client,
            session,
            commit,
        } = reply;
        let wrong = |why: String| {
            Err(Failure::new(
                "refusal",
                format!("replica {replica} answered Evicted to client {client:x} session {session} at commit {commit}, but {why}"),
            ))
        };
        if commit < session {
            return wrong("it had not executed the session's registration".to_string());
        }
        if let Some(end) = self.model.session_end(client, session) {
            self.counts.evicted_checked += 1;
            if end > commit {
                return wrong(format!("the model's table held the session until op {end}"));
            }
            return Ok(true);
        }
        if self.model.applied() < commit {
            return Ok(false);
        }
        self.counts.evicted_checked += 1;
        let held = matches!(self.model.outcome(session), Some(ModelOutcome::Registered { client: c }) if *c == client);
        if held {
            return wrong("the model's table still holds the session".to_string());
        }
        Ok(true) // The client never held that session: nothing to evict.
    }

    fn check_evicted_pending(&mut self) -> Result<(), Failure> {
        let pending = std::mem::take(&mut self.evicted_pending);
        for reply in pending {
            if !self.check_evicted(reply)? {
                self.evicted_pending.push(reply);
            }
        }
        Ok(())
    }

    /// Checkpoints: when `replica` holds a checkpoint it was not seen holding before, its
    /// bytes must equal any other replica's checkpoint at the same op, and the model's
    /// table and service at that op (now, or once the model gets there).
    pub fn check_checkpoint(
        &mut self,
        index: ReplicaIndex,
        replica: &Replica<S>,
    ) -> Result<(), Failure> {
        let Some(checkpoint) = replica.checkpoint() else {
            return Ok(());
        };
        let op = checkpoint.op;
        if self.checkpoint_seen[index as usize] == op {
            return Ok(());
        }
        self.checkpoint_seen[index as usize] = op;
        let Some(first) = self.checkpoints.get(&op) else {
            self.checkpoints.insert(
                op,
                SeenCheckpoint {
                    replica: index,
                    clients: checkpoint.clients.clone(),
                    service: checkpoint.service.clone(),
                    modeled: false,
                },
            );
            return self.check_checkpoint_with_model(op);
        };
        self.counts.checkpoints_checked += 1;
        if first.clients != checkpoint.clients || first.service != checkpoint.service {
            return Err(Failure::new(
                "checkpoint",
                format!(
                    "replica {index}'s checkpoint at op {op} differs from replica {}'s (clients {:?} vs {:?}, service {:?} vs {:?})",
                    first.replica, checkpoint.clients, first.clients, checkpoint.service, first.service
                ),
            ));
        }
        Ok(())
    }

    /// Compares the first checkpoint seen at `op` with the model's state there, if the
    /// model has applied `op` and the two were not compared yet.
    fn check_checkpoint_with_model(&mut self, op: Op) -> Result<(), Failure> {
        let Some(expected) = self.model.checkpoint(op) else {
            return Ok(());
        };
        let Some(seen) = self.checkpoints.get_mut(&op).filter(|seen| !seen.modeled) else {
            return Ok(());
        };
        seen.modeled = true;
        self.counts.checkpoints_checked += 1;
        let mut table = ClientTable::new(self.clients_max);
        let clients = seen.clients.to_blob();
        let sessions: Option<Vec<ModelSession>> = table.restore(&clients).map(|()| {
            let mut sessions: Vec<ModelSession> = table
                .iter()
                .map(|(&client, entry)| ModelSession {
                    client,
                    session: entry.session,
                    request: entry.request,
                    op: entry.op,
                    registration: entry.registration,
                    reply: entry.reply.clone(),
                })
                .collect();
            sessions.sort();
            sessions
        });
        if sessions.as_ref() != Some(&expected.sessions) {
            return Err(Failure::new(
                "checkpoint",
                format!(
                    "replica {}'s client table at checkpoint op {op} is {sessions:?}, the model's is {:?}",
                    seen.replica, expected.sessions
                ),
            ));
        }
        if seen.service != expected.service {
            return Err(Failure::new(
                "checkpoint",
                format!(
                    "replica {}'s service at checkpoint op {op} is {:?}, the model's is {:?}",
                    seen.replica, seen.service, expected.service
                ),
            ));
        }
        Ok(())
    }

    fn check_checkpoints_pending(&mut self) -> Result<(), Failure> {
        let ops: Vec<Op> = self
            .checkpoints
            .iter()
            .filter(|(&op, seen)| !seen.modeled && op <= self.model.applied())
            .map(|(&op, _)| op)
            .collect();
        ops.into_iter()
            .try_for_each(|op| self.check_checkpoint_with_model(op))
    }

    /// Evicted replies the model could not judge (it never applied their commit).
    pub fn evicted_unjudged(&self) -> usize {
        self.evicted_pending.len()
    }

    /// Exactly-once: a replica that has applied exactly the ops the model has must hold the
    /// same service state. Skipped (returns `Ok(false)`) when their op numbers differ.
    /// A witness (paper 6.1) must hold the state it started with at any commit number: it
    /// never executes.
    pub fn check_snapshot(
        &mut self,
        index: ReplicaIndex,
        replica: &Replica<S>,
    ) -> Result<bool, Failure> {
        if replica.hands_over_state() {
            // A witness that was active keeps the state at its epoch's start for the
            // epoch's actives (executing nothing since): checked when it executed.
            return Ok(false);
        }
        if !replica.holds_service_state() {
            if *replica.service() != S::fresh() || replica.checkpoint().is_some() {
                return Err(Failure::new(
                    "witness",
                    format!(
                        "witness {index} at commit {} executed: service {:?}, checkpoint at {}",
                        replica.commit(),
                        replica.service(),
                        replica.checkpoint_op()
                    ),
                ));
            }
            return Ok(false);
        }
        if replica.commit() != self.model.applied() || self.model.applied() == 0 {
            return Ok(false);
        }
        self.counts.snapshots_checked += 1;
        let state = replica.service();
        let expected = self.model.service();
        if state != expected {
            return Err(Failure::new(
                "exactly_once",
                format!(
                    "replica {index} at commit {} has service state {state:?}, the reference model has {expected:?}",
                    replica.commit()
                ),
            ));
        }
        Ok(true)
    }

    /// Replies still waiting for ops the model has not applied.
    pub fn replies_pending(&self) -> usize {
        self.pending.len()
    }

    /// Durability at the end of a run: a reply still waiting names an op that no replica
    /// was ever seen committing (every op a replica replies for is seen committed in the
    /// same input that produced the reply). Only decidable when the model has applied every
    /// op seen committed.
    pub fn check_no_reply_beyond_the_log(&self) -> Result<(), Failure> {
        if self.model.applied() < self.committed_max() {
            return Ok(());
        }
        match self.pending.first() {
            None => Ok(()),
            Some(reply) => Err(Failure::new(
                "durability",
                format!(
                    "a client accepted {reply:?}, but no replica ever committed op {} (highest committed op {})",
                    reply.op(),
                    self.committed_max()
                ),
            )),
        }
    }
}

/// A one-line description of an entry for violation reports.
pub fn describe(entry: &Entry) -> String {
    format!(
        "{:?}(client {:x}, session {}, request {}, timestamp {}, body {:?})",
        entry.operation, entry.client, entry.session, entry.request, entry.timestamp, entry.body
    )
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::{apply, b, register};
    use super::*;
    use crate::service::kv::{KvOp, KvResult};

    fn checker_with(log: &[Entry]) -> Checker {
        let mut checker = Checker::new(3, 8);
        for (i, entry) in log.iter().enumerate() {
            checker.record(0, i as Op + 1, entry).unwrap();
        }
        checker.advance_model().unwrap();
        checker
    }

    fn backup_read(seen: Op) -> BackupRead {
        BackupRead {
            client: 5,
            number: 1,
            seen,
            query: KvOp::Get(b("a")).encode(),
            lease: false,
        }
    }

    fn value(v: &str) -> Bytes {
        KvResult::Value(b(v)).encode()
    }

    #[test]
    fn backup_reads_must_not_go_back_before_what_their_session_saw() {
        let put = |request, v| apply(5, 1, request, KvOp::Put(b("a"), b(v)));
        let strict_get = apply(5, 1, 3, KvOp::Get(b("a")));
        let mut log = vec![register(5), put(1, "1"), put(2, "2"), strict_get];
        log[3].operation = Operation::Query;
        let mut checker = checker_with(&log);
        // Fresh answers: at the session's seen op or later, with the value there.
        checker
            .on_backup_read(&backup_read(2), 2, &value("1"))
            .unwrap();
        checker
            .on_backup_read(&backup_read(2), 3, &value("2"))
            .unwrap();
        checker
            .on_backup_read(&backup_read(3), 4, &value("2"))
            .unwrap();
        // A stale answer: from a replica behind the op its session had seen.
        let stale = checker.on_backup_read(&backup_read(3), 2, &value("1"));
        assert_eq!(stale.unwrap_err().check, "causality");
        // A value that is not the model's at the commit number it names.
        let wrong = checker.on_backup_read(&backup_read(2), 3, &value("1"));
        assert_eq!(wrong.unwrap_err().check, "causality");
        assert_eq!(checker.counts.reads_checked, 4);
        // An answer beyond the model waits for the op, and is judged then.
        checker
            .on_backup_read(&backup_read(2), 5, &value("3"))
            .unwrap();
        assert_eq!(checker.reads_pending(), 1);
        checker.record(0, 5, &put(4, "3")).unwrap();
        checker.advance_model().unwrap();
        assert_eq!(checker.reads_pending(), 0);
        checker
            .on_backup_read(&backup_read(2), 6, &value("4"))
            .unwrap();
        checker.record(0, 6, &put(5, "5")).unwrap();
        assert_eq!(checker.advance_model().unwrap_err().check, "causality");
    }

    #[test]
    fn a_strict_read_is_answered_by_the_model_at_its_op() {
        let put = apply(5, 1, 1, KvOp::Put(b("a"), b("1")));
        let mut get = apply(5, 1, 2, KvOp::Get(b("a")));
        get.operation = Operation::Query;
        let mut checker = checker_with(&[register(5), put, get]);
        let read = |result| ClientReply::Completed {
            client: 5,
            session: 1,
            request: 2,
            op: 3,
            result,
        };
        checker.on_reply(read(value("1")), 0).unwrap();
        let stale = checker.on_reply(read(KvResult::Nil.encode()), 0);
        assert_eq!(stale.unwrap_err().check, "linearizability");
    }

    #[test]
    fn agreement_rejects_a_different_entry_at_a_committed_op() {
        let mut checker = checker_with(&[register(5)]);
        checker.record(1, 1, &register(5)).unwrap();
        let failure = checker.record(2, 1, &register(6)).unwrap_err();
        assert_eq!(failure.check, "agreement");
        assert_eq!(
            checker.canonical(1),
            Some(&register(5)),
            "the canonical log never changes"
        );
    }

    #[test]
    fn replies_must_match_the_log_and_the_model() {
        let put = KvOp::Put(b("a"), b("1"));
        let mut checker = checker_with(&[register(5), apply(5, 1, 1, put)]);
        checker
            .on_reply(
                ClientReply::Registered {
                    client: 5,
                    session: 1,
                },
                0,
            )
            .unwrap();
        let ok = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 1,
            op: 2,
            result: KvResult::Ok.encode(),
        };
        checker.on_reply(ok, 0).unwrap();
        let wrong_result = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 1,
            op: 2,
            result: KvResult::Nil.encode(),
        };
        assert_eq!(
            checker.on_reply(wrong_result, 0).unwrap_err().check,
            "linearizability"
        );
        let wrong_op = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 1,
            op: 1,
            result: KvResult::Ok.encode(),
        };
        assert_eq!(
            checker.on_reply(wrong_op, 0).unwrap_err().check,
            "durability"
        );
        let wrong_register = ClientReply::Registered {
            client: 6,
            session: 1,
        };
        assert_eq!(
            checker.on_reply(wrong_register, 0).unwrap_err().check,
            "durability"
        );
    }

    #[test]
    fn a_reply_ahead_of_the_model_waits_for_its_op() {
        let mut checker = checker_with(&[register(5)]);
        let get = KvOp::Get(b("a"));
        // Op 2 is known late (say, only after op 3): the reply waits, then is checked.
        let early = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 1,
            op: 2,
            result: KvResult::Ok.encode(),
        };
        checker.on_reply(early, 0).unwrap();
        assert_eq!(checker.replies_pending(), 1);
        checker.record(1, 3, &apply(5, 1, 2, get.clone())).unwrap();
        checker.advance_model().unwrap();
        assert_eq!(checker.replies_pending(), 1, "op 2 is still unknown");
        checker.record(1, 2, &apply(5, 1, 1, get)).unwrap();
        let failure = checker.advance_model().unwrap_err();
        assert_eq!(
            failure.check, "linearizability",
            "a get of a missing key is nil, not ok"
        );
        assert_eq!(checker.replies_pending(), 0);
        checker.check_no_reply_beyond_the_log().unwrap();
        // A reply for an op no replica ever committed is a durability failure at the end.
        let lost = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 3,
            op: 9,
            result: KvResult::Ok.encode(),
        };
        checker.on_reply(lost, 0).unwrap();
        let failure = checker.check_no_reply_beyond_the_log().unwrap_err();
        assert_eq!(failure.check, "durability");
    }

    #[test]
    fn a_request_submitted_after_a_reply_commits_after_it() {
        let get = KvOp::Get(b("a"));
        let mut checker = checker_with(&[register(5), register(6), apply(5, 1, 1, get)]);
        let registered = ClientReply::Registered {
            client: 6,
            session: 2,
        };
        checker.on_reply(registered, 0).unwrap();
        assert_eq!(checker.answered_op_max(), 2);
        // Client 5's request was submitted after client 6 heard of op 2, yet names op 2.
        let stale = ClientReply::Registered {
            client: 5,
            session: 1,
        };
        let failure = checker.on_reply(stale, 2).unwrap_err();
        assert_eq!(failure.check, "linearizability");
    }

    #[test]
    fn an_evicted_reply_needs_the_session_gone_by_the_senders_commit() {
        // A table of one: client 6's registration at op 2 evicts client 5's session 1.
        let mut checker = Checker::new(3, 1);
        for (op, entry) in [(1, register(5)), (2, register(6))] {
            checker.record(0, op, &entry).unwrap();
        }
        checker.advance_model().unwrap();
        checker.on_evicted_reply(0, 5, 1, 2).unwrap();
        let early = checker.on_evicted_reply(1, 5, 1, 1).unwrap_err();
        assert_eq!(early.check, "refusal", "session 1 was live at op 1");
        let live = checker.on_evicted_reply(1, 6, 2, 2).unwrap_err();
        assert_eq!(live.check, "refusal", "client 6's session is live");
        // Beyond what the model applied: judged once it gets there.
        checker.on_evicted_reply(2, 6, 2, 3).unwrap();
        assert_eq!(checker.evicted_unjudged(), 1);
        let get = apply(6, 2, 1, KvOp::Get(b("a")));
        checker.record(0, 3, &get).unwrap();
        assert_eq!(checker.advance_model().unwrap_err().check, "refusal");
        assert_eq!(checker.counts.evicted_checked, 4);
    }

    #[test]
    fn a_duplicate_in_the_log_never_answers_a_client() {
        let put = KvOp::Put(b("a"), b("1"));
        let mut checker = checker_with(&[
            register(5),
            apply(5, 1, 1, put.clone()),
            apply(5, 1, 1, put),
        ]);
        let dup = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 1,
            op: 3,
            result: KvResult::Ok.encode(),
        };
        assert_eq!(
            checker.on_reply(dup, 0).unwrap_err().check,
            "linearizability"
        );
    }
}
