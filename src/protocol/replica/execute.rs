//! Executing committed ops (the paper's upcall) and checkpoints (paper 5.1).
//!
//! Every K ops a replica snapshots the service and the client table into a checkpoint and
//! trims its log below `checkpoint - log_tail_ops`, so memory stays bounded however many
//! ops commit. Every replica checkpoints at the same ops, so checkpoints are comparable.
//! A checkpoint is pages (`service::snapshot`): the service's own, and the client table's
//! encoding cut into pages; a service may share the pages of state that did not change
//! since the previous checkpoint, so taking one need not copy the whole state.

use super::*;
use crate::service::Snapshot;

impl<S: StateMachine> Replica<S> {
    /// Executes every op up to `commit` (all held in the log) and sets the commit number.
    pub(super) fn commit_to(&mut self, commit: Op, effects: &mut Vec<Effect>) {
        assert!(commit <= self.log.op(), "commit beyond the log");
        while self.commit < commit {
            let op = self.commit + 1;
            self.execute_entry(op, effects);
            self.commit = op;
            if op.is_multiple_of(self.config.checkpoint_interval_ops) {
                self.take_checkpoint(op);
            }
            if self.epoch_change.is_some() {
                // A RECONFIGURATION: the replica moves to the next epoch before it
                // executes anything after it (the ops of that epoch, or of later ones
                // whose RECONFIGURATIONs must follow from the configuration it ends in).
                break;
            }
        }
    }

    fn take_checkpoint(&mut self, op: Op) {
        let timestamp = self
            .log
            .get(op)
            .expect("checkpoint op is in the log")
            .timestamp;
        // The previous checkpoint goes first (unless a transfer is reading it): held while
        // the service snapshots, every page it rebuilds would exist twice at the peak.
        let tree = self.release_checkpoint();
        let checkpoint = Checkpoint {
            op,
            timestamp,
            // Pages of unchanged state are shared with the previous checkpoint.
            service: self.service.snapshot(),
            clients: Snapshot::from_blob(&self.clients.snapshot()),
        };
        self.set_checkpoint(checkpoint, tree);
        self.stats.checkpoints += 1;
        self.log.trim(op.saturating_sub(self.config.log_tail_ops));
    }

    /// Replaces the state with a checkpoint from another replica: the service, the client
    /// table, an empty log starting after it, and commit = its op. Returns false (and
    /// changes nothing) when the checkpoint is corrupt.
    pub(super) fn restore_checkpoint(&mut self, checkpoint: Checkpoint) -> bool {
        assert!(
            checkpoint.op > self.commit,
            "a checkpoint must move commit forward"
        );
        let mut clients = ClientTable::new(self.config.clients_max as usize);
        if clients.restore(&checkpoint.clients.to_blob()).is_none() {
            tracing::warn!(
                replica = self.index,
                op = checkpoint.op,
                "corrupt client table in checkpoint"
            );
            return false;
        }
        if let Err(error) = self.service.restore(&checkpoint.service) {
            tracing::warn!(replica = self.index, op = checkpoint.op, %error, "corrupt service checkpoint");
            return false;
        }
        self.clients = clients;
        self.log.reset(checkpoint.op, checkpoint.timestamp);
        self.commit = checkpoint.op;
        // The received pages are slices of the message that carried them: keep the
        // service's own (the same pages, deterministically), so that message can go.
        let mut checkpoint = checkpoint;
        let tree = self.release_checkpoint();
        checkpoint.service = self.service.snapshot();
        self.set_checkpoint(checkpoint, tree);
        self.stats.checkpoint_transfers += 1;
        tracing::info!(
            replica = self.index,
            op = self.commit,
            "installed a checkpoint received by state transfer"
        );
        true
    }
}
