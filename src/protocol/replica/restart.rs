//! Restarting on what storage held (`Start::Restart`; ARCHITECTURE.md, "Restarting from
//! disk").
//!
//! The store holds the replica as it stood at the end of some input: every message it
//! ever sent waited for the writes of its input, so the store vouches for all of them
//! (its view promises, the entries it acknowledged). What the crash lost is only what no
//! message relied on, plus the volatile state the paper never asks a replica to keep. A
//! replica whose store is intact therefore resumes as if it had been cut off for a
//! while, with three adjustments:
//!
//! - a primary does not resume its view: its pipeline is lost, and its store may lack
//!   entries it sent in Prepares before its own append completed, so ordering new
//!   requests at those op numbers would give one op two meanings in one view. It starts
//!   the next view's change instead (views only move forward, so this is always safe;
//!   the others follow a replica holding a higher view, once);
//! - a replica that was changing views resumes that view change, its log as its
//!   DoViewChange (the store holds the log it vouched for);
//! - a replica that was recovering recovers again (paper 4.3) from its committed
//!   prefix; one whose store is damaged, from its checkpoint. Since either may have
//!   acknowledged more than it holds, it never counts as empty (`DurableState::joined`);
//! - a member of an epoch it had not started, whose store holds only the epoch's
//!   configuration and start, fetches the start again (transitioning, paper 7.2).

use super::*;

impl<S: StateMachine> Replica<S> {
    pub(super) fn restart(&mut self, mut stored: Stored, nonce: u64) {
        self.take_kept_pages(std::mem::take(&mut stored.fetched));
        if self.index == NOT_A_MEMBER {
            let learner = stored.configuration.is_none() && !stored.state.joined;
            let _damage = self.restore_stored(stored);
            if learner {
                // A new member warming up (paper 7.5) that never joined an epoch: its
                // store holds committed state only; it goes on learning.
                self.status = Status::Joining;
                self.state_transfer_timeout.set_after(1);
                self.state_transfer_timeout.start();
                return;
            }
            // Replaced (paper 7.3): it serves what its store holds until the members
            // started the epoch, whatever the store lost.
            self.joined = true;
            return self.enter_retiring();
        }
        if !stored.holds_data() {
            let transitioning = stored
                .configuration
                .as_ref()
                .is_some_and(|(configuration, start)| configuration.epoch() > 0 && *start > 0);
            if transitioning {
                // A member of an epoch it had not started: it was fetching the epoch's
                // start and held none of it, and never joined a view of the epoch (it
                // vouches for nothing). It fetches the start again, as before the crash
                // (paper 7.2), and then takes part as any transitioning replica does.
                // Recovering instead needs a normal primary's answer, which a cluster
                // that lost its other members' memory may not have (seed 710).
                if let Some(damage) = self.restore_stored(stored) {
                    tracing::warn!(replica = self.index, damage, "storage is damaged");
                    return self.start_recovering(nonce);
                }
                self.status = Status::Transitioning;
                self.state_transfer_timeout.set_after(1);
                self.state_transfer_timeout.start();
                return;
            }
            return self.start_recovering(nonce);
        }
        self.joined = true;
        let state = stored.state;
        let recovering = state.recovering;
        let damage = self.restore_stored(stored);
        tracing::info!(
            replica = self.index,
            view = self.view,
            last_normal_view = self.last_normal_view,
            op = self.log.op(),
            commit = self.commit,
            checkpoint = self.checkpoint_op(),
            recovering,
            damage = damage.as_deref().unwrap_or("none"),
            "restarting from storage"
        );
        if let Some(damage) = &damage {
            tracing::warn!(
                replica = self.index,
                damage,
                "storage is damaged: recovering the rest from the other replicas"
            );
            return self.start_recovering(nonce);
        }
        if recovering {
            return self.start_recovering(nonce);
        }
        if self.commit < self.epoch_start {
            // It had not finished fetching its epoch's start: it voted in nothing of the
            // epoch (every batch it wrote after would carry a commit number past the
            // start), so its log holds only the committed entries it fetched. It may have
            // told replaced replicas that it started, before a batch recorded the commit
            // number: those entries count, and it fetches only the rest.
            let held = self.log.op();
            let mut unsent = Vec::new();
            self.commit_to(held, &mut unsent);
            // A former witness takes the entries it kept, if its log reaches them.
            self.take_former_witness_log(&mut unsent);
            if self.commit >= self.epoch_start {
                // Its log holds the start, and so all it kept (as `finish_transition`).
                self.epoch_transfer.former_witness_log = None;
            }
            self.build_checkpoint_now();
            if self.epoch_change.is_some() {
                // It fetched past a later epoch's start: it moves there now (what the move
                // would send, the reminders of that epoch's replicas ask again).
                return self.finish_epoch_change(&mut unsent);
            }
        }
        if self.commit < self.epoch_start {
            self.status = Status::Transitioning;
            self.epoch_transfer.restarted_in_epoch = true;
            self.state_transfer_timeout.set_after(1);
            self.state_transfer_timeout.start();
            return;
        }
        if self.last_normal_view < self.view {
            // Resume the view change, entered from the last normal view.
            let view = self.view;
            self.view = self.last_normal_view;
            self.status = Status::ViewChange;
            return self.enter_view_change(view, ReplicaSet::of(self.index), false);
        }
        if self.primary_of(self.view) != self.index {
            return self.start_normal_timeouts();
        }
        if !self.change_to_next_view() {
            self.start_recovering(nonce);
        }
    }

    /// A primary that lost its pipeline (it restarted) leaves its view: it starts the
    /// next view's change, as views only move forward. False, changing nothing, when no
    /// view is left.
    pub(super) fn change_to_next_view(&mut self) -> bool {
        let Some(next) = self.view.checked_add(1).filter(|&next| next <= VIEW_MAX) else {
            return false;
        };
        self.enter_view_change(next, ReplicaSet::of(self.index), false);
        self.stats.view_changes += 1;
        true
    }

    /// The committed entries this replica kept aside as a former witness, as its store
    /// held them (`Write::FormerWitnessLog`): kept again while its log does not reach
    /// their end and it is still an active fetching its epoch's start. Otherwise they
    /// are dropped, and its store with its first input: a witness again keeps a witness
    /// log instead, a replaced replica serves its own log, and a damaged store recovers
    /// (paper 4.3) from a normal primary's log, where the damage may lie anyway.
    fn restore_former_witness_log(&mut self, kept: FormerWitnessLog, intact: bool) {
        self.writes.note_restored_former_witness_log(&kept);
        let needed = intact
            && !self.is_witness()
            && self.index != NOT_A_MEMBER
            && self.commit < self.epoch_start
            && self.log.op() < kept.end();
        if !needed {
            return;
        }
        tracing::info!(
            replica = self.id,
            from = kept.base + 1,
            to = kept.end(),
            "the committed entries kept as a former witness read back from storage"
        );
        self.epoch_transfer.former_witness_log = Some(kept);
    }

    /// The pages of a checkpoint fetch the store kept (`Stored::fetched`): the next fetch
    /// reuses them by digest (`fetch_checkpoint`'s docs), whatever the rest of the store
    /// holds (an empty store included: they vouch for nothing).
    fn take_kept_pages(&mut self, fetched: crate::protocol::FetchedPages) {
        self.stats.checkpoint_pages_read_back = fetched.pages.len() as u64;
        self.stats.checkpoint_pages_kept_corrupt = fetched.dropped;
        if fetched.pages.is_empty() && fetched.dropped == 0 {
            return;
        }
        tracing::info!(
            replica = self.id,
            pages = fetched.pages.len(),
            bytes = fetched
                .pages
                .iter()
                .map(|page| page.len() as u64)
                .sum::<u64>(),
            dropped_corrupt = fetched.dropped,
            "pages of an unfinished checkpoint fetch read back from storage"
        );
        self.checkpoint_fetch.take_kept(fetched);
    }

    /// Installs the checkpoint, the log and the view `stored` holds and executes up to
    /// its commit number; returns the damage found, if any (then the replica recovers, and
    /// keeps only its checkpoint: where the damage lies, what the store says about views
    /// and commits may be what was lost).
    fn restore_stored(&mut self, mut stored: Stored) -> Option<String> {
        let state = stored.state;
        let mut damage = stored.damage.take();
        // What it heard of the actives' commit before the restart stays true (an active
        // that loses its state counts as failed, whoever heard it: `witness`), damage or
        // not (it is about the others, and the store read back only verified records).
        self.actives_commit_heard = stored.actives_commit.unwrap_or(0);
        self.writes.actives_commit_written = stored.actives_commit;
        if let Some((configuration, epoch_start)) = stored.configuration.take() {
            // The epoch it moved to last (paper 7): its members, and this replica's place.
            self.configuration = configuration;
            self.install_configuration(epoch_start);
        }
        if state.epoch != self.configuration.epoch() {
            damage.get_or_insert(format!(
                "stored epoch {} is not the configuration's {}",
                state.epoch,
                self.configuration.epoch()
            ));
        }
        let view_possible = state.view <= VIEW_MAX && state.last_normal_view <= state.view;
        if !view_possible {
            damage.get_or_insert(format!(
                "stored view {} and last normal view {} are impossible",
                state.view, state.last_normal_view
            ));
        }
        let witness = self.is_witness();
        // A replaced replica whose store holds a witness's log: entries after a
        // `LogStart`, without a checkpoint (an active's store starts its log after op 0
        // only at a checkpoint). It retires from being a witness: it serves that log and
        // holds no state (seed 137014814: read as damage, the log was dropped, and with
        // it the only copies of the ops before the next epoch's start).
        self.retired_as_witness =
            self.index == NOT_A_MEMBER && stored.checkpoint.is_none() && stored.log_base > 0;
        // A witness that stopped while it handed its epoch's start over (`take_up_role`):
        // its store holds the start as its checkpoint and the log through the start,
        // and the actives had not all executed it. It hands it over again: it may be
        // one of the few replicas holding it (paper 7.3: an old replica keeps the state
        // until the new epoch's members hold it), and on disk it lost nothing.
        let stored_op = stored.log_base + stored.entries.len() as Op;
        // Without a checkpoint, its state is its log from op 1 (a plain witness's log
        // that was never trimmed looks the same: it then executes and hands over too,
        // which costs it the work and holds nothing back).
        let resumes_hand_over = witness
            && damage.is_none()
            && match &stored.checkpoint {
                Some(checkpoint) => {
                    stored.log_base <= checkpoint.op && checkpoint.op <= self.epoch_start
                }
                None => stored.log_base == 0,
            }
            && stored_op >= self.epoch_start
            && stored.commit >= self.epoch_start
            && stored.actives_commit.unwrap_or(0) < self.epoch_start;
        let witness_log = (witness && !resumes_hand_over) || self.retired_as_witness;
        let dropped = match stored.checkpoint.take() {
            Some(checkpoint) if witness_log => {
                let op = checkpoint.op;
                // An active that became a witness and stopped before its store dropped
                // the checkpoint (in the input that made it one, or as its hand-over
                // ended): a witness holds no service state (paper 6.1), so it drops it
                // now, and its store with its first input. The log the store kept is
                // committed up to its base, as a witness's is, and starts where the
                // store's will once it drops the checkpoint too.
                stored.checkpoint = Some(checkpoint);
                stored.drop_checkpoint();
                Some(op)
            }
            Some(checkpoint) => {
                let restored = match resumes_hand_over {
                    true => self.restore_checkpoint_state(checkpoint),
                    false => self.restore_checkpoint(checkpoint),
                };
                if !restored {
                    damage.get_or_insert("the stored checkpoint does not restore".into());
                }
                self.stats.checkpoint_transfers = 0; // Restored from disk, not transferred.
                None
            }
            None => None,
        };
        self.writes
            .note_restored(dropped.unwrap_or(self.checkpoint_op()), state);
        if dropped.is_some() {
            self.writes.forget_checkpoint();
        }
        if self.configuration.witnesses().is_empty() {
            // An epoch without witnesses moves the actives' commit with the checkpoint
            // (`witness::trim_log`), and its store records none: without this a move to
            // an epoch with witnesses wrote the 0 it restarted with, and the store kept
            // every entry above it (seed 14002697).
            self.actives_commit_heard = self.actives_commit_heard.max(self.checkpoint_op());
        }
        if witness_log && stored.log_base > 0 {
            // A witness's log starts where its `LogStart` left it, without a checkpoint:
            // the ops up to its base are committed (it trims and skips committed ops
            // only), and nothing executes at a witness. Its commit number is at least the
            // base even when the store is damaged, so that the recovery's start from its
            // committed state keeps the base the store holds.
            if stored.commit < stored.log_base {
                damage.get_or_insert(format!(
                    "a witness's stored log starts after {} but its commit number is {}",
                    stored.log_base, stored.commit
                ));
            }
            self.log.reset(stored.log_base, stored.log_base_timestamp);
            self.witness_commit_to(stored.log_base);
        }
        let checkpoint_op = self.checkpoint_op();
        if let Some(actives_commit) = stored.actives_commit.filter(|_| !witness_log) {
            // With witnesses an active keeps the entries above the actives' commit below
            // its checkpoint too, as its log did (`witness::trim_log`; the store keeps them:
            // `Stored::trim_to_checkpoint`): the committed ones, which its checkpoint's
            // state already holds, so they only go back into the log.
            // Only a log that runs unbroken through the checkpoint.
            let from = actives_commit.min(checkpoint_op).max(stored.log_base);
            if from < checkpoint_op && stored_op >= checkpoint_op && damage.is_none() {
                let timestamp = match (from - stored.log_base).checked_sub(1) {
                    Some(index) => stored.entries[index as usize].timestamp,
                    None => stored.log_base_timestamp,
                };
                self.log.reset(from, timestamp);
            }
        }
        // The entries after the log's base (a checkpoint holds those at or below it).
        match stored.log_base.checked_sub(self.log.op()) {
            Some(gap) if gap > 0 => {
                damage.get_or_insert(format!(
                    "the stored log starts after {} but the checkpoint is at {}",
                    stored.log_base,
                    self.log.op()
                ));
            }
            _ => {
                let skip = (self.log.op() - stored.log_base) as usize;
                for entry in stored.entries.into_iter().skip(skip) {
                    self.log.push(entry);
                }
            }
        }
        self.log.take_changes(); // Read from the store: nothing to write back.
        if damage.is_none() {
            // The stored entries up to the stored commit number are the committed ones:
            // a store holds whole inputs, and at the end of every input a replica's log
            // agrees with its commit number. Replies are not sent again: a client that
            // missed one retries and gets it from the client table.
            let mut replies = Vec::new();
            if resumes_hand_over {
                // The start's state, executed as the active it was and no further: a
                // witness executes nothing (paper 6.1), and what it hands over is the
                // state at the start.
                self.epoch_transfer.hands_over_state = true;
                self.execute_handed_over_state_to(self.epoch_start, &mut replies);
            }
            self.commit_to(stored.commit.min(self.log.op()), &mut replies);
            self.build_checkpoint_now();
            if witness_log {
                // A store that held an active's log (with its checkpoint, dropped now or
                // before the stop) kept it as the journal did, trimmed only by
                // compactions: as a witness's, the log is trimmed by the actives' commit
                // (`witness::trim_log`; seeds 14007684, 24004837), and its `LogStart`
                // goes to the store (after the drop) with the first input.
                self.trim_log();
            }
        }
        if let Some(kept) = stored.former_witness_log.take() {
            self.restore_former_witness_log(kept, damage.is_none());
        }
        if resumes_hand_over && damage.is_some() {
            // It recovers, as a witness: without the state.
            self.end_hand_over();
        }
        if view_possible {
            self.view = state.view;
            self.last_normal_view = state.last_normal_view;
        }
        damage
    }
}
