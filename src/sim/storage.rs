//! What each replica's completed writes made durable, and the check that no message
//! vouches for more: a message that claims a view, a log or a last normal view the
//! replica's storage does not hold yet is one a crash could turn into a lie (a PrepareOk
//! for an entry the disk lost counts toward a commit that is not there).
//!
//! The model applies each `Write` when the cluster reports it complete (one write at a
//! time, so that it holds exactly the writes a released message waited for). It tracks
//! sizes, not contents: the durable view, last normal view, and the highest op up to which
//! the current log is durable.

use super::checker::Failure;
use crate::protocol::{Body, DurableState, Message, Op, ReplicaIndex, Stored, View, Write};

/// One replica's durable state, as its completed writes describe it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Durable {
    state: DurableState,
    /// Every entry of the current log up to this op is durable.
    log_op: Op,
    checkpoint_op: Op,
}

/// The durable state of every replica.
#[derive(Clone, Debug)]
pub struct Storage {
    replicas: Vec<Durable>,
    /// Messages checked against it.
    pub messages_checked: u64,
}

impl Storage {
    /// Storage for `replica_count` replicas, all empty.
    pub fn new(replica_count: usize) -> Storage {
        Storage {
            replicas: vec![Durable::default(); replica_count],
            messages_checked: 0,
        }
    }

    /// Makes room for replicas up to `replica_count` (members added by a
    /// reconfiguration, starting empty).
    pub fn grow(&mut self, replica_count: usize) {
        if self.replicas.len() < replica_count {
            self.replicas.resize(replica_count, Durable::default());
        }
    }

    /// A crash: the simulated replicas keep their state in memory only, so the restarted
    /// process holds nothing.
    pub fn on_crash(&mut self, replica: ReplicaIndex) {
        self.replicas[replica as usize] = Durable::default();
    }

    /// A crash of a replica with a disk: what it holds is what its disk read back (also
    /// how a formatted disk starts).
    pub fn on_crash_keeping(&mut self, replica: ReplicaIndex, image: &Stored) {
        self.replicas[replica as usize] = Durable {
            state: image.state,
            // A checkpoint above the last entry holds the log up to its op.
            log_op: image.op().max(image.checkpoint_op()),
            checkpoint_op: image.checkpoint_op(),
        };
    }

    /// `write` of `replica` completed.
    pub fn complete(&mut self, replica: ReplicaIndex, write: Write) -> Result<(), Failure> {
        let durable = &mut self.replicas[replica as usize];
        match write {
            Write::Checkpoint { op } => {
                if op <= durable.checkpoint_op {
                    return Err(failure(replica, format!("checkpoint {op} written again")));
                }
                durable.checkpoint_op = op;
            }
            Write::LogReset { base } => durable.log_op = base,
            // It became a witness (paper 6.1): its log stays, and from now on only its
            // appends and log starts move it. A later checkpoint, should it become active
            // again, may be at an op no higher.
            Write::CheckpointDropped => {
                durable.log_op = durable.log_op.max(durable.checkpoint_op);
                durable.checkpoint_op = 0;
            }
            // Kept aside, not in the log: committed entries the replica's messages
            // vouch for nothing about (`former_witness_answer`).
            Write::Configuration { .. } | Write::ActivesCommit(_) | Write::FormerWitnessLog => {}
            Write::LogTruncate { after } => durable.log_op = durable.log_op.min(after),
            // A witness's log starts after `base`: the ops up to it are committed and
            // held nowhere in its log (a log emptied by it holds nothing above `base`).
            Write::LogStart { base, .. } => durable.log_op = durable.log_op.max(base),
            Write::LogAppend { from, to } => {
                // Entries trimmed before they were written are covered by the checkpoint
                // written before them.
                let held = durable.log_op.max(durable.checkpoint_op);
                if from > held + 1 || to < from {
                    return Err(failure(
                        replica,
                        format!(
                            "append {from}..={to} to a log durable up to {}",
                            durable.log_op
                        ),
                    ));
                }
                durable.log_op = to;
            }
            Write::State(state) => {
                // A replica that never joined promised no view to anyone (a recovering
                // replica's view only names its source): it restarts as a new one.
                // Each epoch numbers its views from 0 (paper 7): views are ordered
                // within an epoch, and a later epoch comes after all of them.
                let written = (state.epoch, state.view);
                let before = (durable.state.epoch, durable.state.view);
                if written < before && durable.state.joined {
                    return Err(failure(
                        replica,
                        format!("(epoch, view) {written:?} written after {before:?}"),
                    ));
                }
                durable.state = state;
            }
        }
        Ok(())
    }

    /// Checks a message `replica` is sending to another replica against what it holds.
    pub fn check_message(
        &mut self,
        replica: ReplicaIndex,
        message: &Message,
    ) -> Result<(), Failure> {
        let durable = self.replicas[replica as usize];
        let view = message.view;
        // A message of an earlier epoch than the durable one (the old primary's Commit to
        // the old group once it moved, paper 7.1) claims nothing about views the later
        // epoch's state could contradict; one of a later epoch claims a view the store
        // does not hold at all.
        let epoch = message.epoch.cmp(&durable.state.epoch);
        let claim_view = |what: &str, claimed: View, held: View| -> Result<(), Failure> {
            match epoch {
                std::cmp::Ordering::Less => Ok(()),
                std::cmp::Ordering::Greater => Err(failure(
                    replica,
                    format!(
                        "sent {} of epoch {} with epoch {} durable",
                        message.body.name(),
                        message.epoch,
                        durable.state.epoch
                    ),
                )),
                std::cmp::Ordering::Equal if claimed <= held => Ok(()),
                std::cmp::Ordering::Equal => Err(failure(
                    replica,
                    format!(
                        "sent {} claiming {what} {claimed} with {held} durable",
                        message.body.name()
                    ),
                )),
            }
        };
        let claim = |what: &str, claimed: u64, held: u64| -> Result<(), Failure> {
            match claimed <= held {
                true => Ok(()),
                false => Err(failure(
                    replica,
                    format!(
                        "sent {} claiming {what} {claimed} with {held} durable",
                        message.body.name()
                    ),
                )),
            }
        };
        // A PrepareOk or StartView says: normal in this view, holding its log up to `op`.
        let holds_the_views_log = |op: Op| -> Result<(), Failure> {
            claim_view("view", view, durable.state.view)?;
            claim_view("last normal view", view, durable.state.last_normal_view)?;
            claim("op", op, durable.log_op)
        };
        self.messages_checked += 1;
        match &message.body {
            Body::PrepareOk(ok) => holds_the_views_log(ok.op),
            Body::DoViewChange(dvc) => {
                claim_view("view", view, durable.state.view)?;
                if epoch.is_eq() && dvc.last_normal_view != durable.state.last_normal_view {
                    return Err(failure(
                        replica,
                        format!(
                            "sent do_view_change with last normal view {}, {} durable",
                            dvc.last_normal_view, durable.state.last_normal_view
                        ),
                    ));
                }
                claim("op", dvc.op, durable.log_op)
            }
            Body::StartView(sv) => holds_the_views_log(sv.op),
            // Sent from the sender's own view (an ask: for a higher one).
            Body::StartViewChange(svc) => claim_view("view", svc.sender_view, durable.state.view),
            Body::Prepare(_) | Body::Commit(_) => claim_view("view", view, durable.state.view),
            Body::RecoveryResponse(response) if !response.empty => {
                claim_view("view", view, durable.state.view)?;
                claim("op", response.op, durable.log_op)
            }
            // An answer of committed entries only (it vouches for no view's log, and
            // names no checkpoint) claims nothing the sender's store must keep: the ops
            // are committed whatever it holds. A former witness serves the entries it
            // kept aside so (`former_witness_answer`).
            Body::NewState(new_state) if !new_state.vouches && new_state.checkpoint.is_none() => {
                Ok(())
            }
            Body::NewState(new_state) => claim("op", new_state.op, durable.log_op),
            Body::RecoveryResponse(_)
            | Body::Request(_)
            | Body::Reply(_)
            | Body::Recovery(_)
            | Body::GetState(_)
            | Body::StartEpoch(_)
            | Body::GetCheckpoint(_)
            | Body::CheckpointPart(_)
            | Body::EpochStarted => Ok(()),
        }
    }
}

fn failure(replica: ReplicaIndex, details: String) -> Failure {
    Failure::new("persistence", format!("r{replica}: {details}"))
}
