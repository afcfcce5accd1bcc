//! Executing committed ops (the paper's upcall) and checkpoints (paper 5.1).
//!
//! Every K ops a replica snapshots the service and the client table into a checkpoint and
//! trims its log below `checkpoint - log_tail_ops`, so memory stays bounded however many
//! ops commit. A checkpoint is pages (`service::snapshot`): the service's own, and the
//! client table's encoding cut into pages; a service may share the pages of state that did
//! not change since the previous checkpoint, so taking one need not copy the whole state.
//!
//! Checkpoints are built off the event loop (the paper's copy-on-write): at the op the
//! replica captures the state (`StateMachine::snapshot_deferred`, the client table's
//! encoding, the previous Merkle tree) and hands the build to the driver
//! ([`Effect::BuildCheckpoint`]), which runs it on a worker while the replica goes on
//! executing. Until it is built the previous checkpoint stays the latest one, and the log
//! keeps every entry after it, so nothing the replica may be asked for is lost; its pages
//! are released meanwhile unless a transfer is reading it (`serve_checkpoint`: it is then
//! answered `Unavailable`, and the asker fetches elsewhere or the newer one).
//!
//! One build at a time, and a build gets three intervals: the two checkpoint ops after
//! the one being built are skipped (no checkpoint there), and at the op after those the
//! replica waits for the build (runs it itself if the worker has not started it) before
//! it takes the next. So the latest checkpoint is always less than six intervals behind
//! the commit number, which bounds the log (`Config::log_entries_max`), and a replica
//! whose builds take longer than three intervals stalls rather than grows without bound.
//! Skipping changes which checkpoints a replica holds, never their contents: every
//! checkpoint is at a multiple of K, and two replicas' checkpoints at one op are equal.
//!
//! A primary does not let its builds get that far while a worker has the build
//! ([`Replica::build_hold_op`]): it orders no op at or past the checkpoint op two
//! intervals after the build's until the build finishes (`normal.rs`), so its loop goes
//! on answering, sending heartbeats and committing what it ordered, and a slow build
//! slows the clients down instead of silencing the primary until its backups start a
//! view change. The paper lets a primary order requests whenever it likes (4.1): holding
//! them back changes no rule. A build no worker took (a missing worker) holds nothing:
//! the primary orders on and, at the wait's op, runs the build itself, so its progress
//! never depends on a worker that may not come. Backups execute what is committed: the
//! primary's hold leaves each of them an interval more than the primary's own build took
//! (the primary orders nothing past its hold until its build of the same op finished),
//! so only a backup whose build is slower than the primary's by more than an interval of
//! ops waits (ARCHITECTURE.md, "Checkpoints built in the background").

use super::*;
use crate::protocol::effects::{BuiltCheckpoint, CheckpointBuild};
use crate::service::merkle::MerkleTree;
use crate::service::{Deferred, Page, Snapshot};

/// A checkpoint taken and not built yet (see the module docs).
#[derive(Debug)]
pub(super) struct Building {
    op: Op,
    build: Deferred<BuiltCheckpoint>,
}

impl<S: StateMachine> Replica<S> {
    /// Executes every op up to `commit` (all held in the log) and sets the commit number.
    pub(super) fn commit_to(&mut self, commit: Op, effects: &mut Vec<Effect>) {
        assert!(commit <= self.log.op(), "commit beyond the log");
        if !self.holds_service_state() {
            // Paper 6.1: nothing executes at a witness (`witness`), nor at one retiring
            // from being one.
            return self.witness_commit_to(commit);
        }
        while self.commit < commit {
            let op = self.commit + 1;
            self.execute_entry(op, effects);
            self.commit = op;
            if op.is_multiple_of(self.config.checkpoint_interval_ops) {
                self.take_checkpoint(op, effects);
            }
            if self.epoch_change.is_some() {
                // A RECONFIGURATION: the replica moves to the next epoch before it
                // executes anything after it (the ops of that epoch, or of later ones
                // whose RECONFIGURATIONs must follow from the configuration it ends in).
                break;
            }
        }
    }

    /// Captures the state at `op` (just executed) and asks the driver to build its
    /// checkpoint; skipped, or first waits for the previous build, while that one is still
    /// being built (see the module docs).
    fn take_checkpoint(&mut self, op: Op, effects: &mut Vec<Effect>) {
        self.finish_checkpoint_if_built();
        if let Some(building) = &self.building {
            if op < self.wait_op_of_build_at(building.op) {
                self.stats.checkpoints_skipped += 1;
                tracing::debug!(
                    replica = self.index,
                    op,
                    building = building.op,
                    "checkpoint skipped: the previous one is still being built"
                );
                return;
            }
            // Three intervals and still building: wait, so the log stays bounded.
            self.stats.checkpoint_build_waits += 1;
            tracing::warn!(
                replica = self.index,
                op,
                building = building.op,
                "checkpoint build slower than three checkpoint intervals: waiting for it"
            );
            self.build_checkpoint_now();
        }
        let timestamp = self
            .log
            .get(op)
            .expect("checkpoint op is in the log")
            .timestamp;
        // Everything the build reads is captured now, shared and immutable: the
        // service's state at `op` (copy-on-write), the client table's encoding, and the
        // previous checkpoint's tree (updated along the changed pages' paths only).
        let service = self.service.snapshot_deferred();
        let clients = self.clients.snapshot();
        let tree = self.checkpoint.as_ref().map(|held| held.tree.clone());
        let build = Deferred::new(move || {
            let checkpoint = Checkpoint {
                op,
                timestamp,
                // Pages of unchanged state are shared with the previous checkpoint.
                service: service.run().clone(),
                clients: Snapshot::from_blob(&clients),
            };
            let tree = merkle_tree(&checkpoint, tree);
            BuiltCheckpoint { checkpoint, tree }
        });
        effects.push(Effect::BuildCheckpoint {
            op,
            build: CheckpointBuild::of(&build),
        });
        self.building = Some(Building { op, build });
        // The build rewrites what changed into new pages: the previous checkpoint's stop
        // being held here meanwhile, unless a transfer reads them (`serve_checkpoint`).
        self.release_checkpoint_pages_while_building();
    }

    /// The driver ran a checkpoint's build ([`Effect::BuildCheckpoint`]): the checkpoint
    /// becomes the latest one, and the log is trimmed below it. Harmless at any other
    /// time (a build not finished yet is left to finish; every tick looks again).
    pub fn on_checkpoint_built(&mut self, effects: &mut Vec<Effect>) {
        let start = effects.len();
        self.finish_checkpoint_if_built();
        self.finish_checkpoint_fetch_once_prepared(false, effects);
        self.end_input(start, effects);
    }

    /// Makes the checkpoint being built the latest one, if its build finished.
    pub(super) fn finish_checkpoint_if_built(&mut self) {
        if !self.building.as_ref().is_some_and(|b| b.build.is_done()) {
            return;
        }
        let Building { op, build } = self.building.take().expect("checked");
        // Moved out, unless the worker still holds the handle for a moment: then copied
        // (the tree is a few MB for a large state).
        let BuiltCheckpoint { checkpoint, tree } = build.try_take().unwrap_or_else(|build| {
            let built = build.run();
            BuiltCheckpoint {
                checkpoint: built.checkpoint.clone(),
                tree: built.tree.clone(),
            }
        });
        debug_assert!(op > self.checkpoint_op() && op <= self.commit);
        // The previous checkpoint goes (or is retained, if a transfer is reading it: then
        // its pages were not released while this one was built).
        self.release_checkpoint();
        self.set_checkpoint(checkpoint, tree);
        self.service.snapshot_built();
        self.stats.checkpoints += 1;
        self.trim_log();
    }

    /// Builds the checkpoint being built here and now (or waits for the worker building
    /// it), and makes it the latest: when the build took three intervals
    /// (`take_checkpoint`), and for ops executed outside any input (a restart replaying its
    /// store), whose effects, the build's request among them, go nowhere.
    pub(super) fn build_checkpoint_now(&mut self) {
        if let Some(building) = &self.building {
            building.build.run();
        }
        self.finish_checkpoint_if_built();
    }

    /// The op at which a primary stops ordering while a worker is running the build in
    /// progress (see the module docs): two intervals past the build's op, one before
    /// executing would wait for it, so that the backups' builds of the same op get an
    /// interval more than the primary's. `None` when nothing is being built, the build is
    /// done, or no worker took it.
    pub(super) fn build_hold_op(&self) -> Option<Op> {
        let building = self.building.as_ref()?;
        if building.build.is_done() || !building.build.is_started() {
            return None;
        }
        let interval = self.config.checkpoint_interval_ops;
        Some(building.op.saturating_add(interval.saturating_mul(2)))
    }

    /// The op at which executing waits for a build taken at `op`: `take_checkpoint` skips
    /// the two checkpoint ops after it and waits at the one after those.
    fn wait_op_of_build_at(&self, op: Op) -> Op {
        let interval = self.config.checkpoint_interval_ops;
        op.saturating_add(interval.saturating_mul(3))
    }

    /// Counts and logs, once per build, that this primary holds ordering back before
    /// `hold`, the op of a build's hold.
    pub(super) fn note_build_hold(&mut self, hold: Op) {
        if self.build_hold_noted == hold {
            return;
        }
        self.build_hold_noted = hold;
        self.stats.checkpoint_build_holds += 1;
        tracing::info!(
            replica = self.index,
            hold,
            building = self.checkpoint_building(),
            "checkpoint build still running: ordering no more ops until it finishes"
        );
    }

    /// Whether a checkpoint is being built (the driver has a build to run).
    pub fn checkpoint_building(&self) -> Option<Op> {
        self.building.as_ref().map(|building| building.op)
    }

    /// Replaces the state with a checkpoint from another replica: the service, the client
    /// table, an empty log starting after it, and commit = its op. Returns false (and
    /// changes nothing) when the checkpoint is corrupt.
    pub(super) fn restore_checkpoint(&mut self, checkpoint: Checkpoint) -> bool {
        assert!(
            checkpoint.op > self.commit,
            "a checkpoint must move commit forward"
        );
        if self.is_witness() {
            // Its op, never its state (`witness`).
            self.witness_skip_to(checkpoint.op, checkpoint.timestamp);
            return true;
        }
        self.restore_checkpoint_state(checkpoint)
    }

    /// `restore_checkpoint` of an active, or of a witness restarted while it handed its
    /// epoch's start over (`restart`): the state itself.
    pub(super) fn restore_checkpoint_state(&mut self, checkpoint: Checkpoint) -> bool {
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
        // Prepared off the loop when it was fetched (`fetch_checkpoint`), if the service
        // can: then this is a swap.
        let restored = match self.prepared_install_of(&checkpoint) {
            Some(prepared) => self
                .service
                .restore_prepared(&checkpoint.service, prepared.run()),
            None => self.service.restore(&checkpoint.service),
        };
        if let Err(error) = restored {
            tracing::warn!(replica = self.index, op = checkpoint.op, %error, "corrupt service checkpoint");
            return false;
        }
        self.clients = clients;
        // A checkpoint being built is older than this one (it is at most at commit).
        self.building = None;
        self.log.reset(checkpoint.op, checkpoint.timestamp);
        self.commit = checkpoint.op;
        // The received pages are slices of the message that carried them: keep the
        // service's own (the same pages, deterministically), so that message can go.
        let mut checkpoint = checkpoint;
        let tree = self.release_checkpoint();
        checkpoint.service = self.service.snapshot();
        let tree = merkle_tree(&checkpoint, tree);
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

/// The Merkle tree over `checkpoint`'s pages: `previous` (the tree of the replica's
/// previous checkpoint) with only the paths above changed pages rehashed, or a new tree.
fn merkle_tree(checkpoint: &Checkpoint, previous: Option<MerkleTree>) -> MerkleTree {
    let digests: Vec<_> = checkpoint.pages().map(Page::digest).collect();
    match previous {
        Some(mut tree) => {
            tree.update(&digests);
            tree
        }
        None => MerkleTree::new(&digests),
    }
}
