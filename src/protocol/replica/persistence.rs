//! Persistence as an effect: the writes an input issues, and the messages that wait for
//! them (the ordering rule is in `effects`' module docs).
//!
//! Handlers change the log, the checkpoint and the view as the paper says and never think
//! about writes: at the end of every input, [`Replica::end_input`] compares what the
//! replica holds with what it last wrote, issues the writes that describe the difference
//! (checkpoint, then log, then state), and holds back the messages of that input that vouch
//! for state not yet durable. [`Replica::on_persisted`] releases them, in order, and lets
//! the primary count its own acknowledgement.

use super::*;
use crate::protocol::effects::{DurableState, Reliance, Write, WriteId};
use crate::protocol::log::LogChanges;
use crate::protocol::stored::FormerWitnessLog;

/// Messages waiting for writes, at most. A driver whose storage stalls must not make the
/// replica hold without bound what its peers send it to answer; beyond this the oldest
/// waiting message is dropped (the protocol resends what matters).
const HELD_MAX: usize = 4096;

/// A message waiting for a write.
#[derive(Clone, Debug)]
struct Held {
    /// Leaves once every write up to this one completed. Never decreases along the queue,
    /// so messages leave in the order they were produced.
    needs: WriteId,
    effect: Effect,
}

/// The replica's writes: issued, completed, and what waits for them.
#[derive(Clone, Debug, Default)]
pub(super) struct Writes {
    /// The latest write issued (0: none yet).
    issued: WriteId,
    /// The latest state write issued.
    state_issued: WriteId,
    /// Every write up to this one completed. ≤ `issued`.
    durable: WriteId,
    /// The durable state as last written.
    state_written: DurableState,
    /// The checkpoint op as last written.
    checkpoint_written: Op,
    /// The id of that write (0: restored, or none yet).
    checkpoint_issued: WriteId,
    /// The store may hold a checkpoint the replica dropped (it became a witness): the
    /// next input writes `CheckpointDropped`.
    checkpoint_to_drop: bool,
    /// The epoch whose configuration was last written (or restored).
    configuration_written: u32,
    /// The former witness's kept entries as last written: their base and end (`None`:
    /// none kept).
    former_witness_log_written: Option<(Op, Op)>,
    /// With witnesses: the actives' commit as last written (or restored); `None` before
    /// the first write of it (issued at the first input, so that the store keeps
    /// entries above it from the start: `Stored::actives_commit`).
    pub(super) actives_commit_written: Option<Op>,
    held: VecDeque<Held>,
    /// Reused buffer for sorting an input's effects into those that leave and those held.
    scratch: Vec<Effect>,
}

impl Writes {
    fn issue(&mut self, write: Write, effects: &mut Vec<Effect>) -> WriteId {
        self.issued += 1;
        effects.push(Effect::Write {
            id: self.issued,
            write,
        });
        self.issued
    }

    /// A restart read `checkpoint_op`, the configuration of `state.epoch` and `state`
    /// back from storage (or a new cluster starts in them): they need no write.
    pub(super) fn note_restored(&mut self, checkpoint_op: Op, state: DurableState) {
        assert_eq!(self.issued, 0, "restored before any write");
        self.checkpoint_written = checkpoint_op;
        self.configuration_written = state.epoch;
        self.state_written = state;
    }

    /// The store holds entries a former witness kept (`Write::FormerWitnessLog`): if the
    /// replica does not keep them any more, its first input tells the store so.
    pub(super) fn note_restored_former_witness_log(&mut self, kept: &FormerWitnessLog) {
        self.former_witness_log_written = Some((kept.base, kept.end()));
    }

    /// The replica dropped its checkpoint to become a witness (`epoch::take_up_role`, or
    /// a restart as one): none is written from now on, and the store drops the one it
    /// holds (`Write::CheckpointDropped`, at the end of the input).
    pub(super) fn forget_checkpoint(&mut self) {
        self.checkpoint_to_drop |= self.checkpoint_written > 0;
        self.checkpoint_written = 0;
        self.checkpoint_issued = 0;
    }

    /// Whether a checkpoint at `op` or later is durable.
    pub(super) fn checkpoint_durable_from(&self, op: Op) -> bool {
        self.checkpoint_written >= op && self.durable >= self.checkpoint_issued
    }

    pub(super) fn check(&self) {
        assert!(self.durable <= self.issued);
        assert!(self.state_issued <= self.issued);
        assert!(self.held.len() <= HELD_MAX);
        if let Some(front) = self.held.front() {
            assert!(
                front.needs > self.durable,
                "a held message whose writes completed"
            );
        }
        let needs = self.held.iter().map(|held| held.needs);
        assert!(
            needs.clone().zip(needs.skip(1)).all(|(a, b)| a <= b),
            "held messages leave in order"
        );
    }
}

impl<S: StateMachine> Replica<S> {
    /// Reports that every write up to `id` is durable (the driver's completion input).
    /// Releases the messages that waited for them and, on the primary, counts its own
    /// acknowledgement of the entries they appended (which may commit ops).
    ///
    /// A driver without durable storage calls [`Replica::complete_writes_in_memory`]
    /// instead.
    pub fn on_persisted(&mut self, id: WriteId, effects: &mut Vec<Effect>) {
        assert!(
            id <= self.writes.issued,
            "write {id} completed but only {} were issued",
            self.writes.issued
        );
        if id <= self.writes.durable {
            return; // Already known: completions may be reported more than once.
        }
        self.writes.durable = id;
        while let Some(held) = self.writes.held.front() {
            if held.needs > id {
                break;
            }
            let held = self.writes.held.pop_front().expect("front exists");
            effects.push(held.effect);
        }
        self.clear_kept_pages_once_durable(effects);
        let start = effects.len();
        if self.is_primary() {
            self.count_own_acknowledgement(id);
            self.advance_commit_from_acks(effects);
        }
        self.end_input(start, effects);
    }

    /// For a driver that keeps state only in memory: completes every write issued (and
    /// those the completions issue in turn), so every message leaves as if writes did not
    /// exist. Call it after each input, or once before carrying out a batch of effects.
    pub fn complete_writes_in_memory(&mut self, effects: &mut Vec<Effect>) {
        while self.writes_pending() {
            self.on_persisted(self.writes.issued, effects);
        }
    }

    /// The latest write issued.
    pub fn writes_issued(&self) -> WriteId {
        self.writes.issued
    }

    /// Whether some write has not completed yet.
    pub fn writes_pending(&self) -> bool {
        self.writes.durable < self.writes.issued
    }

    /// What a crash must not lose of this replica's place among views.
    pub fn durable_state(&self) -> DurableState {
        DurableState {
            epoch: self.configuration.epoch(),
            view: self.view,
            last_normal_view: self.last_normal_view,
            recovering: self.status == Status::Recovering,
            joined: self.joined,
        }
    }

    /// Closes an input whose effects start at `effects[start]`: issues the writes that
    /// describe what it changed, notes which of them the primary's own acknowledgement
    /// waits for, and holds back its messages that vouch for state not yet durable.
    pub(super) fn end_input(&mut self, start: usize, effects: &mut Vec<Effect>) {
        // Before the epoch moves on: an answer names this epoch's state.
        self.answer_waiting_reads(effects);
        self.finish_epoch_change(effects);
        self.issue_writes(effects);
        self.note_own_appends();
        self.hold_until_written(start, effects);
        #[cfg(debug_assertions)]
        self.invariants_per_input();
    }

    /// Checkpoint, log, configuration, state: see `Write` for why in this order.
    fn issue_writes(&mut self, effects: &mut Vec<Effect>) {
        if std::mem::take(&mut self.writes.checkpoint_to_drop) {
            // First: a checkpoint this input took or installed again comes after it.
            self.writes.issue(Write::CheckpointDropped, effects);
        }
        let checkpoint_op = self.checkpoint_op();
        if checkpoint_op != self.writes.checkpoint_written {
            assert!(checkpoint_op > self.writes.checkpoint_written);
            self.writes.checkpoint_written = checkpoint_op;
            self.writes.checkpoint_issued = self
                .writes
                .issue(Write::Checkpoint { op: checkpoint_op }, effects);
        }
        // Kept entries before the log's reset that makes the store forget its copies of
        // them; their end after the appends that hold them.
        let kept = self
            .former_witness_log()
            .map(|kept| (kept.base, kept.end()));
        let kept_changed = kept != self.writes.former_witness_log_written;
        if kept_changed && kept.is_some() {
            self.writes.former_witness_log_written = kept;
            self.writes.issue(Write::FormerWitnessLog, effects);
        }
        let changes = self.log.take_changes();
        // A replica retiring from being a witness still keeps a witness's log: no
        // checkpoint below it. A witness handing its epoch's start over keeps the
        // checkpoint, and its store trims by it, as the active it was.
        if !self.holds_service_state() && !self.hands_over_state() {
            self.issue_witness_log_writes(changes, effects);
        } else {
            if let Some(base) = changes.reset_base {
                self.writes.issue(Write::LogReset { base }, effects);
            }
            if let Some(after) = changes.truncated_after {
                self.writes.issue(Write::LogTruncate { after }, effects);
            }
        }
        if let Some((from, to)) = changes.appended {
            self.writes.issue(Write::LogAppend { from, to }, effects);
        }
        if kept_changed && kept.is_none() {
            self.writes.former_witness_log_written = None;
            self.writes.issue(Write::FormerWitnessLog, effects);
        }
        if (self.writes.actives_commit_written)
            .is_some_and(|written| self.actives_commit_heard < written)
        {
            // Started again by a move to an epoch with witnesses: before the new epoch's
            // `Configuration`, so that no store pairs it with the old epoch's number.
            self.writes.actives_commit_written = Some(self.actives_commit_heard);
            let write = Write::ActivesCommit(self.actives_commit_heard);
            self.writes.issue(write, effects);
        }
        let epoch = self.configuration.epoch();
        if epoch != self.writes.configuration_written {
            self.writes.configuration_written = epoch;
            self.writes.issue(Write::Configuration { epoch }, effects);
        }
        let state = self.durable_state();
        if state != self.writes.state_written {
            assert!(
                state.view >= self.writes.state_written.view
                    || state.epoch > self.writes.state_written.epoch,
                "views go back only in a new epoch"
            );
            self.writes.state_written = state;
            self.writes.state_issued = self.writes.issue(Write::State(state), effects);
        }
        // With witnesses, or after an epoch with them (the store keeps the entries above
        // what it last heard: `witness::trim_log` moves it on with the checkpoint).
        let witnesses = !self.configuration.witnesses().is_empty()
            || self.writes.actives_commit_written.is_some();
        if witnesses
            && (self.writes.actives_commit_written)
                .is_none_or(|written| self.actives_commit_heard > written)
        {
            // Knowledge a restart needs (`Write::ActivesCommit`), only with witnesses.
            self.writes.actives_commit_written = Some(self.actives_commit_heard);
            let write = Write::ActivesCommit(self.actives_commit_heard);
            self.writes.issue(write, effects);
        }
    }

    /// A witness's log changes before its appends (paper 6.1: it keeps no checkpoint, so
    /// no `LogReset` and no checkpoint trims its store). A reset (it skipped committed ops
    /// it never held) is a truncation after the new base, and the base, trimmed or reset,
    /// is a `LogStart`: truncate first, since a truncation never goes below the stored
    /// base and the new base may lie above the point truncated.
    fn issue_witness_log_writes(&mut self, changes: LogChanges, effects: &mut Vec<Effect>) {
        let truncated_after = match (changes.truncated_after, changes.reset_base) {
            (Some(after), Some(base)) => Some(after.min(base)),
            (after, base) => after.or(base),
        };
        if let Some(after) = truncated_after {
            self.writes.issue(Write::LogTruncate { after }, effects);
        }
        if let Some((base, timestamp)) = changes.started_after {
            self.writes
                .issue(Write::LogStart { base, timestamp }, effects);
        }
    }

    /// The primary counts its own acknowledgement of an entry only once the write that
    /// appended it completed: until then, one crash could lose the only copy it counted.
    fn note_own_appends(&mut self) {
        if !self.is_primary() {
            return;
        }
        let op = self.log.op();
        let own = self.index as usize;
        if self.primary.acked[own] >= op {
            return;
        }
        if !self.writes_pending() {
            self.primary.acked[own] = op; // Written by an earlier input.
        } else if self
            .primary
            .own_appends
            .back()
            .is_none_or(|&(_, last)| last < op)
        {
            self.primary.own_appends.push_back((self.writes.issued, op));
        }
    }

    fn count_own_acknowledgement(&mut self, durable: WriteId) {
        let own = self.index as usize;
        while let Some(&(write, op)) = self.primary.own_appends.front() {
            if write > durable {
                break;
            }
            assert!(op <= self.log.op());
            self.primary.acked[own] = self.primary.acked[own].max(op);
            self.primary.own_appends.pop_front();
        }
    }

    /// Moves the messages of this input that must wait into the held queue. Once one of
    /// them waits, every later message of the input waits too (with at least the same
    /// write), so that an input's messages leave in the order it produced them.
    fn hold_until_written(&mut self, start: usize, effects: &mut Vec<Effect>) {
        if !self.writes_pending() {
            debug_assert!(self.writes.held.is_empty());
            return;
        }
        let durable = self.writes.durable;
        let mut needs_floor = self.writes.held.back().map_or(0, |held| held.needs);
        let mut holding = false;
        let mut scratch = std::mem::take(&mut self.writes.scratch);
        scratch.extend(effects.drain(start..));
        for effect in scratch.drain(..) {
            // Writes, a checkpoint's build and kept pages (they send nothing), never wait.
            if matches!(
                effect,
                Effect::Write { .. } | Effect::BuildCheckpoint { .. } | Effect::KeepPages(_)
            ) {
                effects.push(effect);
                continue;
            }
            let needs = match effect.reliance() {
                Reliance::AllWrites => self.writes.issued,
                Reliance::State => self.writes.state_issued,
                Reliance::Nothing => 0,
            };
            if !holding && needs <= durable {
                effects.push(effect);
                continue;
            }
            holding = true;
            needs_floor = needs_floor.max(needs).max(durable + 1);
            if self.writes.held.len() == HELD_MAX {
                self.writes.held.pop_front();
                self.drop_reason("held message", "too many messages waiting for writes");
            }
            self.writes.held.push_back(Held {
                needs: needs_floor,
                effect,
            });
        }
        self.writes.scratch = scratch;
    }
}
