//! What the simulator learns from the deliveries themselves: how state transfers were
//! split over NewStates (a counter, to show that multi-message transfers happen), the
//! DoViewChanges each replica received, for the new-primary progress check (paper 4.2
//! step 3: the new primary's commit number is the largest in the DoViewChanges it used),
//! and whether the protocol messages replicas send each other are well-formed.
//!
//! A replica that recovers (paper 4.3) must come back holding every op committed before
//! it restarted: it may have acknowledged any of them, and the primary of the latest view
//! among f+1 answers holds them all. Recovering to less (from a stale answer, or from an
//! answer that is not the latest primary's) goes unnoticed by every other check until a
//! later view change picks the short log, so it is checked when the recovery ends.
//!
//! A receiver drops a malformed message with a logged reason, which is right for a forged
//! one, but a correct replica that sends one is a bug the drop hides: the receiver then
//! gets what it needed some slower way (a backup that drops a StartView joins the view by
//! state transfer), and every liveness check still passes. So every StartView,
//! DoViewChange, Prepare and NewState delivered must be well-formed by the receivers' own
//! tests.
//!
//! Everything here is read off messages the network delivered and off the replicas'
//! accessors; nothing reaches into a replica.

use super::checker::Failure;
use crate::protocol::{Body, Message, Op, Replica, ReplicaIndex, Status, View};
use crate::service::StateMachine;

/// State-transfer counters, from the NewStates the network delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferCounts {
    /// NewStates delivered.
    pub new_states: u64,
    /// NewStates delivered whose entries stop short of the op their sender vouched for
    /// (cut at half a message): the receiver needs at least one more.
    pub new_states_cut: u64,
    /// Transfers that took more than one NewState: a cut NewState followed, at the same
    /// receiver, by one from the same sender carrying the entries after the cut.
    pub multi_part: u64,
    /// Times a replica's view was seen lower than at its previous input (without a
    /// restart): the old core's lone view change going back to a leading older view.
    /// A core where views never go back shows 0.
    pub views_back: u64,
}

impl TransferCounts {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &TransferCounts) {
        self.new_states += other.new_states;
        self.new_states_cut += other.new_states_cut;
        self.multi_part += other.multi_part;
        self.views_back += other.views_back;
    }
}

/// A cut NewState's receiver is waiting for the rest.
#[derive(Clone, Copy, Debug)]
struct Continuation {
    from: ReplicaIndex,
    /// The first op the cut NewState did not carry.
    next: Op,
    /// Whether this chain of NewStates was already counted as multi-part.
    counted: bool,
}

/// An epoch and a view in it: views are ordered within an epoch, and every view of a
/// later epoch comes after every view of an earlier one (paper 7).
pub type EpochView = (u32, View);

/// The watcher: per replica, the transfer in progress and the DoViewChange commits seen.
pub struct Watch {
    continuation: Vec<Option<Continuation>>,
    /// Per replica: the view of the DoViewChanges it received for a view it is to lead,
    /// and the highest commit among them. Cleared when the replica's view moves.
    do_view_change_commit: Vec<Option<(EpochView, Op)>>,
    /// Per replica: the latest view it was checked as a new primary of.
    primary_checked: Vec<Option<EpochView>>,
    /// Per replica: its epoch and view at the last check (views start again from 0 in
    /// each epoch, paper 7, so a view is only ordered within its epoch).
    view_seen: Vec<EpochView>,
    /// A malformed message delivered to a replica since its last check (see the module
    /// docs): reported by the check that follows the delivery.
    malformed: Option<Failure>,
    /// The highest commit number seen at any replica's check.
    commit_max: Op,
    /// Per replica, while it recovers: the highest commit number seen before it restarted,
    /// which its log must reach when it goes normal.
    recovery_floor: Vec<Option<Op>>,
    /// What was counted.
    pub counts: TransferCounts,
}

impl Watch {
    /// A watcher for `replica_count` replicas.
    pub fn new(replica_count: usize) -> Watch {
        Watch {
            continuation: vec![None; replica_count],
            do_view_change_commit: vec![None; replica_count],
            primary_checked: vec![None; replica_count],
            view_seen: vec![(0, 0); replica_count],
            malformed: None,
            commit_max: 0,
            recovery_floor: vec![None; replica_count],
            counts: TransferCounts::default(),
        }
    }

    /// Makes room for replicas up to `replica_count` (members added by a
    /// reconfiguration).
    pub fn grow(&mut self, replica_count: usize) {
        if self.continuation.len() < replica_count {
            self.continuation.resize(replica_count, None);
            self.do_view_change_commit.resize(replica_count, None);
            self.primary_checked.resize(replica_count, None);
            self.view_seen.resize(replica_count, (0, 0));
            self.recovery_floor.resize(replica_count, None);
        }
    }

    /// Forgets what replica `index` received: it restarted, `recovering` (then its log
    /// must come to hold what committed before) or resumed from its disk. Its view may be
    /// below the one it showed before the crash even with a disk: a view raised but not
    /// yet written was promised to nobody (`storage.rs` checks that the written view
    /// never goes back).
    pub fn on_restart(&mut self, index: ReplicaIndex, recovering: bool) {
        self.continuation[index as usize] = None;
        self.do_view_change_commit[index as usize] = None;
        self.primary_checked[index as usize] = None;
        self.view_seen[index as usize] = (0, 0);
        // A replica that resumed from its disk holds what it vouched for (the storage
        // check sees to that); one that recovers must reach what committed before.
        self.recovery_floor[index as usize] = recovering.then_some(self.commit_max);
    }

    /// Notes a message about to be handed to live replica `to` (in epoch and view
    /// `view_now`). `primary_of` is the index of the primary of the message's view in the
    /// message's epoch, and `to_index` the receiver's index there (None when the
    /// simulator does not know that epoch's members, or the receiver is not one).
    pub fn on_deliver(
        &mut self,
        to: ReplicaIndex,
        view_now: EpochView,
        primary_of: Option<ReplicaIndex>,
        to_index: Option<ReplicaIndex>,
        message: &Message,
    ) {
        if self.malformed.is_none() {
            if let Some(what) = primary_of.and_then(|primary| malformed(message, primary)) {
                self.malformed = Some(Failure::new(
                    "malformed",
                    format!(
                        "replica {} sent replica {to} a {} for view {} that {what}",
                        message.replica,
                        message.body.name(),
                        message.view
                    ),
                ));
            }
        }
        match &message.body {
            Body::NewState(new_state) => {
                let entries_last = new_state.op_first + new_state.entries.len() as Op - 1;
                let cut = entries_last < new_state.op;
                self.on_new_state(to, message.replica, entries_last, cut);
            }
            Body::DoViewChange(dvc)
                if (message.epoch, message.view) >= view_now
                    && primary_of.is_some()
                    && primary_of == to_index =>
            {
                let sent = (message.epoch, message.view);
                let slot = &mut self.do_view_change_commit[to as usize];
                *slot = match *slot {
                    Some((view, commit)) if view == sent => Some((view, commit.max(dvc.commit))),
                    Some((view, _)) if view > sent => *slot,
                    _ => Some((sent, dvc.commit)),
                };
            }
            _ => {}
        }
    }

    fn on_new_state(&mut self, to: ReplicaIndex, from: ReplicaIndex, last: Op, cut: bool) {
        self.counts.new_states += 1;
        if cut {
            self.counts.new_states_cut += 1;
        }
        let slot = &mut self.continuation[to as usize];
        let counted = match slot.filter(|c| c.from == from) {
            // A duplicate or an older part: the transfer is where it was.
            Some(waiting) if last < waiting.next => return,
            Some(waiting) => {
                if !waiting.counted {
                    self.counts.multi_part += 1;
                }
                true
            }
            None => false,
        };
        if cut {
            *slot = Some(Continuation {
                from,
                next: last + 1,
                counted,
            });
        } else if slot.is_some_and(|c| c.from == from) {
            *slot = None;
        }
    }

    /// Progress of a new primary: right after replica `index` handled an input, if it has
    /// just become the normal primary of its view, its commit number must be at least the
    /// highest commit of the DoViewChanges for that view delivered to it before. Also
    /// reports a malformed message delivered just before, a recovery that ended short of
    /// what committed before the restart (see the module docs) and a view that went back.
    pub fn check_new_primary<S: StateMachine>(
        &mut self,
        index: ReplicaIndex,
        replica: &Replica<S>,
    ) -> Result<(), Failure> {
        if let Some(failure) = self.malformed.take() {
            return Err(failure);
        }
        self.check_recovery(index, replica)?;
        let view = (replica.epoch(), replica.view());
        let before = std::mem::replace(&mut self.view_seen[index as usize], view);
        if view < before {
            // Views never go back (ARCHITECTURE.md): the paper's safety argument needs it.
            self.counts.views_back += 1;
            return Err(Failure::new(
                "views",
                format!("replica {index} went back from (epoch, view) {before:?} to {view:?}"),
            ));
        }
        let slot = &mut self.do_view_change_commit[index as usize];
        if slot.is_some_and(|(v, _)| v != view) {
            // The view moved on (or, in an older core, back): those DoViewChanges no
            // longer bear on any view this replica can start.
            *slot = None;
        }
        if !replica.is_primary() || self.primary_checked[index as usize] == Some(view) {
            return Ok(());
        }
        self.primary_checked[index as usize] = Some(view);
        let Some((_, commit_max)) = slot.take() else {
            return Ok(());
        };
        if replica.commit() < commit_max {
            return Err(Failure::new(
                "progress",
                format!(
                    "replica {index} started (epoch, view) {view:?} with commit {}, below commit {commit_max} of a DoViewChange it received for that view",
                    replica.commit()
                ),
            ));
        }
        Ok(())
    }
}

impl Watch {
    /// Once replica `index` leaves recovering status, its log must reach every op
    /// committed before it restarted.
    fn check_recovery<S: StateMachine>(
        &mut self,
        index: ReplicaIndex,
        replica: &Replica<S>,
    ) -> Result<(), Failure> {
        self.commit_max = self.commit_max.max(replica.commit());
        let slot = &mut self.recovery_floor[index as usize];
        let Some(floor) = *slot else {
            return Ok(());
        };
        match replica.status() {
            Status::Recovering => return Ok(()),
            Status::Normal | Status::ViewChange => {}
            // Not a member voting in its epoch (paper 7): a learner, a replaced replica,
            // or one moving to a later epoch, which takes that epoch's start by state
            // transfer instead (checked by `Checker::check_epoch`).
            Status::Joining | Status::Transitioning | Status::Retiring => {
                *slot = None;
                return Ok(());
            }
        }
        *slot = None;
        if replica.op() < floor {
            return Err(Failure::new(
                "recovery",
                format!(
                    "replica {index} recovered into view {} with op {}, below op {floor} that committed before it restarted",
                    replica.view(),
                    replica.op()
                ),
            ));
        }
        Ok(())
    }
}

/// What is wrong with a protocol message a correct replica would never send: the same
/// tests its receiver applies before dropping it as malformed (`on_prepare`,
/// `on_do_view_change`, `on_start_view`, `new_state_is_well_formed`). `primary_of` is the
/// primary of the message's view.
fn malformed(message: &Message, primary_of: ReplicaIndex) -> Option<&'static str> {
    let reaches =
        |op_first: Op, count: usize, op: Op| op_first.checked_add(count as Op) == op.checked_add(1);
    match &message.body {
        Body::Prepare(prepare) => {
            if prepare.entries.is_empty() || prepare.op_first == 0 {
                Some("carries no entries or starts at op 0")
            } else if message.replica != primary_of {
                Some("does not come from the view's primary")
            } else {
                None
            }
        }
        Body::DoViewChange(dvc) => {
            if dvc.commit > dvc.op || dvc.entries.len() as Op != dvc.op - dvc.commit {
                Some("does not carry exactly the entries after its commit number")
            } else if dvc.last_normal_view >= message.view {
                Some("has a last normal view not below its view")
            } else {
                None
            }
        }
        Body::StartView(sv) => {
            if message.replica != primary_of {
                Some("does not come from the view's primary")
            } else if sv.commit > sv.op {
                Some("has a commit number above its op")
            } else if !reaches(sv.op_first, sv.entries.len(), sv.op) {
                Some("has entries that do not end at its op")
            } else {
                None
            }
        }
        Body::NewState(new_state) => {
            let entries_end = new_state
                .op_first
                .checked_add(new_state.entries.len() as Op);
            let checkpoint_fits = new_state
                .checkpoint
                .as_ref()
                .is_none_or(|c| c.op + 1 == new_state.op_first && c.op <= new_state.commit);
            if new_state.op_first == 0 || new_state.commit > new_state.op {
                Some("starts at op 0 or has a commit number above its op")
            } else if !entries_end
                .is_some_and(|end| new_state.entries.is_empty() || end - 1 <= new_state.op)
            {
                Some("has entries past its op")
            } else if !checkpoint_fits {
                Some("has a checkpoint not just below its entries or above its commit")
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Entry, NewState, Operation};
    use bytes::Bytes;

    fn new_state(from: ReplicaIndex, op_first: Op, count: u64, op: Op) -> Message {
        let entry = Entry {
            client: 1,
            session: 1,
            request: 1,
            timestamp: 0,
            operation: Operation::Apply,
            body: Bytes::new(),
        };
        Message {
            epoch: 0,
            view: 0,
            replica: from,
            body: Body::NewState(NewState {
                sender: from as u64,
                commit: op,
                op,
                vouches: true,
                checkpoint: None,
                op_first,
                entries: vec![entry; count as usize],
            }),
        }
    }

    #[test]
    fn counts_a_transfer_split_over_several_new_states_once() {
        let mut watch = Watch::new(3);
        watch.on_deliver(2, (0, 0), Some(0), Some(2), &new_state(0, 1, 10, 10));
        assert_eq!(watch.counts.multi_part, 0, "whole in one message");
        watch.on_deliver(2, (0, 0), Some(0), Some(2), &new_state(0, 11, 10, 40));
        watch.on_deliver(2, (0, 0), Some(0), Some(2), &new_state(0, 21, 10, 40));
        watch.on_deliver(2, (0, 0), Some(0), Some(2), &new_state(0, 31, 10, 40));
        assert_eq!(watch.counts.new_states, 4);
        assert_eq!(watch.counts.new_states_cut, 2);
        assert_eq!(watch.counts.multi_part, 1, "one transfer in three parts");
        // A duplicate of an earlier part brings nothing after the cut: not a new chain.
        watch.on_deliver(1, (0, 0), Some(0), Some(1), &new_state(0, 1, 5, 40));
        watch.on_deliver(1, (0, 0), Some(0), Some(1), &new_state(0, 1, 5, 40));
        assert_eq!(watch.counts.multi_part, 1);
        watch.on_deliver(1, (0, 0), Some(0), Some(1), &new_state(0, 6, 35, 40));
        assert_eq!(watch.counts.multi_part, 2);
    }

    #[test]
    fn a_start_view_whose_entries_do_not_end_at_its_op_is_malformed() {
        use crate::protocol::StartView;
        let start_view = |op_first: Op, count: usize| Message {
            epoch: 0,
            view: 4,
            replica: 1,
            body: Body::StartView(StartView {
                op: 10,
                commit: 8,
                op_first,
                entries: match new_state(1, 1, count as u64, 10).body {
                    Body::NewState(new_state) => new_state.entries,
                    _ => unreachable!(),
                },
            }),
        };
        assert_eq!(malformed(&start_view(5, 6), 1), None);
        assert_eq!(
            malformed(&start_view(11, 0), 1),
            None,
            "no entries past commit 10"
        );
        assert!(
            malformed(&start_view(5, 5), 1).is_some(),
            "cut, op_first not moved"
        );
        assert!(
            malformed(&start_view(5, 6), 2).is_some(),
            "not from the primary"
        );
    }
}
