//! State transfer (paper 5.2) and checkpoint transfer (5.1).
//!
//! GetState(op) asks for the entries after `op`. The answer never carries more than the
//! responder can vouch for: a normal replica in the asker's view sends up to its op (in
//! one view every normal log is a prefix of the primary's); any other sends only up to its
//! commit number, because committed entries are the same on every replica. When the
//! entries asked for were trimmed, the answer starts with the latest checkpoint; for a
//! witness, which holds no state (paper 6.1), it starts at the responder's log instead,
//! and the witness skips the gap below it (`witness`: no replica trims an entry that
//! fewer than f+1 actives executed, so the witness's copies of those are all in that log).
//! A recovering replica vouches for no log and answers with its checkpoint alone
//! (`answer_get_state_while_recovering`).

use super::witness::witness_base_timestamp;
use super::*;

/// Committed entries fetched by a new primary during a view change.
#[derive(Clone, Debug, Default)]
pub(super) struct Fetched {
    pub checkpoint: Option<Checkpoint>,
    pub op_first: Op,
    pub entries: Vec<Entry>,
}

/// A NewState with its checkpoint in hand: one this replica holds, or one it fetched
/// page by page (`fetch_checkpoint`). What every handler of a NewState takes.
#[derive(Clone, Debug)]
pub(super) struct ReceivedState {
    pub commit: Op,
    pub op: Op,
    /// See [`NewState::vouches`].
    pub vouches: bool,
    pub checkpoint: Option<Checkpoint>,
    pub op_first: Op,
    pub entries: Vec<Entry>,
}

impl ReceivedState {
    /// `new_state` with `checkpoint` for the one it names (`None`: it names none, or
    /// this replica does not need it).
    pub fn new(new_state: NewState, checkpoint: Option<Checkpoint>) -> ReceivedState {
        debug_assert!(checkpoint
            .as_ref()
            .is_none_or(|c| new_state.checkpoint.is_some_and(|id| id.op == c.op)));
        ReceivedState {
            commit: new_state.commit,
            op: new_state.op,
            vouches: new_state.vouches,
            checkpoint,
            op_first: new_state.op_first,
            entries: new_state.entries,
        }
    }

    /// See [`new_state_is_well_formed`].
    pub fn is_well_formed(&self) -> bool {
        well_formed(
            self.commit,
            self.op,
            self.checkpoint.as_ref().map(|c| c.op),
            self.op_first,
            self.entries.len(),
        )
    }
}

/// Whether a NewState could come from a correct replica: entries within the op it vouches
/// for, a checkpoint just below the entries and within the commit number, and no op
/// number that overflows.
pub(super) fn new_state_is_well_formed(new_state: &NewState) -> bool {
    well_formed(
        new_state.commit,
        new_state.op,
        new_state.checkpoint.map(|c| c.op),
        new_state.op_first,
        new_state.entries.len(),
    )
}

fn well_formed(
    commit: Op,
    op: Op,
    checkpoint_op: Option<Op>,
    op_first: Op,
    entries: usize,
) -> bool {
    let entries_end = op_first.checked_add(entries as Op);
    op_first > 0
        && commit <= op
        && entries_end.is_some_and(|end| entries == 0 || end - 1 <= op)
        && checkpoint_op.is_none_or(|c| c + 1 == op_first && c <= commit)
}

/// The op of the last entry `fetch` holds (`commit` when it is empty).
pub(super) fn fetched_end(fetch: &Option<Fetched>, commit: Op) -> Op {
    match fetch {
        Some(fetch) => fetch.op_first + fetch.entries.len() as Op - 1,
        None => commit,
    }
}

/// Adds the entries of `new_state` up to `usable_last` that extend `fetch`, which
/// collects committed state after `commit` aside from the log (a checkpoint beyond what
/// it holds restarts it from the checkpoint; for a witness, `skips_gaps`, so do entries
/// that start past it below the sender's commit number). Returns whether it grew.
pub(super) fn merge_fetched(
    fetch: &mut Option<Fetched>,
    commit: Op,
    new_state: ReceivedState,
    usable_last: Op,
    skips_gaps: bool,
) -> bool {
    let held = fetched_end(fetch, commit);
    let entries_last = new_state.op_first + new_state.entries.len() as Op - 1;
    if usable_last.min(entries_last) <= held {
        return false;
    }
    let mut merged = fetch.take().unwrap_or(Fetched {
        checkpoint: None,
        op_first: commit + 1,
        entries: Vec::new(),
    });
    if let Some(checkpoint) = new_state
        .checkpoint
        .filter(|checkpoint| checkpoint.op > held && checkpoint.op <= usable_last)
    {
        merged = Fetched {
            op_first: checkpoint.op + 1,
            checkpoint: Some(checkpoint),
            entries: Vec::new(),
        };
    }
    let next = merged.op_first + merged.entries.len() as Op;
    // `next` is at least 1, so a gap starts at op 2 or later.
    if skips_gaps
        && new_state.op_first > next
        && new_state.op_first - 1 <= new_state.commit.min(usable_last)
    {
        // A witness skips committed ops it holds none of (see the module docs).
        merged = Fetched {
            op_first: new_state.op_first,
            checkpoint: None,
            entries: Vec::new(),
        };
    }
    let mut next = merged.op_first + merged.entries.len() as Op;
    if new_state.op_first <= next {
        for (index, entry) in new_state.entries.into_iter().enumerate() {
            let op = new_state.op_first + index as Op;
            if op == next && op <= usable_last {
                merged.entries.push(entry);
                next += 1;
            }
        }
    }
    *fetch = Some(merged);
    fetched_end(fetch, commit) > held
}

impl<S: StateMachine> Replica<S> {
    /// Asks `to` for what this replica lacks, at most one request at a time.
    pub(super) fn request_state(&mut self, to: ReplicaIndex, effects: &mut Vec<Effect>) {
        if self.state_transfer_pending || to == self.index {
            return;
        }
        self.state_transfer_pending = true;
        self.state_transfer_timeout.start();
        let op = match self.status {
            Status::ViewChange => self.fetch_end(),
            _ => self.log.op(),
        };
        self.send(to, Body::GetState(GetState { op, learner: None }), effects);
    }

    pub(super) fn on_get_state(
        &mut self,
        from: ReplicaIndex,
        get_state: GetState,
        effects: &mut Vec<Effect>,
    ) {
        if self.status == Status::Transitioning {
            // Only a former witness is asked here (`epoch_status_refuses`), and answers
            // only with the entries it kept: its own log is still being fetched.
            match self.former_witness_answer(get_state.op) {
                Some(new_state) => self.send(from, Body::NewState(new_state), effects),
                None => self.drop_reason("get_state", "transitioning: nothing kept past the op"),
            }
            return;
        }
        if self.status == Status::Recovering {
            return self.answer_get_state_while_recovering(from, get_state, effects);
        }
        // Normal, a replica vouches for its view's log, all of it; otherwise it answers
        // with committed entries only (paper 5.2: only a replica normal in a view speaks
        // for that view's log). The answer goes out in this replica's view, whatever view
        // the question was asked in, and says which of the two it is (`vouches`): a
        // replica joining a view installs only an answer that vouches for it
        // (`on_join_state`). A log cut at a commit number may lack ops committed before
        // the view started (seed 30004109: a replayed GetState of view 4, answered in
        // view 6 by a replica changing views, was installed as view 6's log by a replica
        // that had joined view 6 since). Every other asker takes only committed entries.
        let limit = if self.status == Status::Normal {
            self.log.op()
        } else {
            self.commit
        };
        let for_witness = self.configuration.is_witness(from);
        if let Some(new_state) = self.new_state_for(get_state, limit, for_witness) {
            self.send(from, Body::NewState(new_state), effects);
        }
    }

    /// A recovering replica speaks for no log (paper 4.3: it may have lost any of it), but
    /// a checkpoint it holds is committed state: it executed those ops. It names that
    /// checkpoint, with no entries, to an active that lacks it, as any replica serves its
    /// checkpoint's pages whatever its status (`serve_checkpoint`). Without this, a member
    /// fetching its epoch's start waited for good when the one active that held the start
    /// was recovering and waited in turn for that member to be normal (seed 124000968).
    fn answer_get_state_while_recovering(
        &mut self,
        from: ReplicaIndex,
        get_state: GetState,
        effects: &mut Vec<Effect>,
    ) {
        if self.configuration.is_witness(from) {
            // A witness takes entries, never state.
            return self.drop_reason("get_state", "recovering: a witness needs entries");
        }
        let Some(checkpoint) = self.checkpoint_id().filter(|id| get_state.op < id.op) else {
            return self.drop_reason("get_state", "recovering: no checkpoint after the op");
        };
        debug_assert!(
            checkpoint.op <= self.commit,
            "a checkpoint holds executed ops"
        );
        let new_state = NewState {
            sender: self.id,
            commit: checkpoint.op,
            op: checkpoint.op,
            vouches: false,
            checkpoint: Some(checkpoint),
            op_first: checkpoint.op + 1,
            entries: Vec::new(),
        };
        self.send(from, Body::NewState(new_state), effects);
    }

    /// The answer to `get_state` with entries up to `limit` (this replica's op when it
    /// vouches for its view's log, else its commit number); `None` when it cannot be
    /// answered (the reason is counted).
    pub(super) fn new_state_for(
        &mut self,
        get_state: GetState,
        limit: Op,
        for_witness: bool,
    ) -> Option<NewState> {
        let Some(op_after) = get_state.op.checked_add(1) else {
            self.drop_reason("get_state", "op beyond any log");
            return None;
        };
        if let Some(answer) = self.former_witness_answer(get_state.op) {
            return Some(answer);
        }
        if for_witness && get_state.op < self.log.base() {
            if self.log.base() > self.actives_commit_heard {
                // This log starts at a checkpoint it restored, above ops that fewer
                // than f+1 actives executed: a witness skipping to it would lose its
                // copies of them. Answered once the actives' commit reaches the base.
                self.drop_reason("get_state", "a witness needs entries below this log");
                return None;
            }
            // A witness needs entries, never state: the log from its base, which holds
            // everything fewer than f+1 actives executed (see the module docs).
            let op_first = self.log.base() + 1;
            return Some(self.new_state_from(None, op_first, limit));
        }
        // Answered even when there is nothing newer: the asker learns the op this replica
        // vouches for (a replica joining a view may already hold all of it). A checkpoint
        // is named, not sent: the asker fetches the pages it lacks (`fetch_checkpoint`).
        let checkpoint = if get_state.op < self.log.base() {
            let Some(id) = self.checkpoint_id() else {
                // A witness keeps no checkpoint (paper 6.1), nor does one retiring from
                // being a witness: the asker tries another.
                debug_assert!(
                    !self.holds_service_state(),
                    "a trimmed log has a checkpoint"
                );
                self.drop_reason(
                    "get_state",
                    "entries trimmed, and a witness has no checkpoint",
                );
                return None;
            };
            Some(id)
        } else {
            None
        };
        let op_first = checkpoint
            .as_ref()
            .map_or(op_after, |checkpoint| checkpoint.op + 1);
        Some(self.new_state_from(checkpoint, op_first, limit))
    }

    /// The most entry bytes a NewState carries: half a message, with room for the
    /// checkpoint it may name.
    pub(super) fn new_state_bytes_max(&self) -> usize {
        (self.config.message_bytes_max as usize / 2)
            .saturating_sub(CHECKPOINT_ID_BYTES)
            .max(1)
    }

    /// A NewState naming `checkpoint` with the entries from `op_first` up to `limit`,
    /// as many as fit in half a message.
    fn new_state_from(
        &self,
        checkpoint: Option<CheckpointId>,
        op_first: Op,
        limit: Op,
    ) -> NewState {
        let bytes_max = self.new_state_bytes_max();
        assert!(limit <= self.log.op() && self.commit <= limit);
        let entries = self.log.slice(op_first, limit, bytes_max);
        NewState {
            sender: self.id,
            commit: self.commit,
            op: limit,
            vouches: self.status == Status::Normal && limit == self.log.op(),
            checkpoint,
            op_first,
            entries,
        }
    }

    pub(super) fn on_new_state(
        &mut self,
        from: ReplicaIndex,
        view: View,
        new_state: ReceivedState,
        effects: &mut Vec<Effect>,
    ) {
        if !new_state.is_well_formed() {
            return self.drop_reason("new_state", "malformed");
        }
        self.state_transfer_pending = false;
        self.state_transfer_timeout.stop();
        match self.status {
            Status::Recovering => self.on_recovery_state(from, view, new_state, effects),
            Status::ViewChange if self.view_changing.joining => {
                self.on_join_state(from, view, new_state, effects)
            }
            Status::ViewChange => self.on_view_change_state(new_state, effects),
            Status::Transitioning => self.on_transition_state(new_state, effects),
            Status::Retiring | Status::Joining => {
                self.drop_reason("new_state", "not a member of the epoch")
            }
            Status::Normal => {
                if view != self.view {
                    return self.drop_reason("new_state", "from another view");
                }
                if self.is_primary() {
                    // A late answer to the fetch of its view change: the primary's log is
                    // the view's log, and only acknowledgements move its commit number.
                    return self.drop_reason("new_state", "the primary needs no state");
                }
                let progressed = self.apply_new_state(new_state.clone());
                self.commit_to(new_state.commit.min(self.log.op()), effects);
                self.stats.state_transfers += 1;
                tracing::info!(
                    replica = self.index,
                    from,
                    view,
                    op = self.log.op(),
                    commit = self.commit,
                    progressed,
                    "state transfer"
                );
                let primary = self.primary_of(self.view);
                if primary != self.index {
                    self.send(primary, self.acknowledgement(0), effects);
                    if progressed {
                        // The answer may have been cut by size: ask for the rest.
                        self.request_state(primary, effects);
                    }
                }
            }
        }
    }

    /// Appends the entries of a NewState that extend the log, after restoring its
    /// checkpoint when the log does not reach it. Returns whether anything was added.
    pub(super) fn apply_new_state(&mut self, mut new_state: ReceivedState) -> bool {
        debug_assert!(new_state.is_well_formed());
        assert_ne!(
            self.status,
            Status::ViewChange,
            "a view change fetches aside"
        );
        let mut progressed = false;
        if let Some(checkpoint) = new_state.checkpoint.take() {
            if checkpoint.op > self.log.op() {
                if !self.restore_checkpoint(checkpoint) {
                    return false;
                }
                progressed = true;
            }
        }
        if new_state.op_first > self.log.op() + 1 {
            if !self.witness_skips_gap(&new_state) {
                return progressed;
            }
            progressed = true;
        }
        // The cap, not `log_entries_max`: with witnesses the primary's log, which this
        // one follows, may be past the bound after a view change (`log_entries_cap`).
        let room = self.log_entries_cap().saturating_sub(self.log.len() as u64);
        let mut added = 0;
        for (index, entry) in new_state.entries.into_iter().enumerate() {
            let op = new_state.op_first + index as Op;
            if op > self.log.op() {
                if added >= room {
                    break;
                }
                self.log.push(entry);
                added += 1;
                progressed = true;
            }
        }
        progressed
    }

    /// A new primary lacking committed entries merges what arrived into its fetch (never
    /// into its log: see the module docs of `view_change`). Only committed entries count.
    fn on_view_change_state(&mut self, new_state: ReceivedState, effects: &mut Vec<Effect>) {
        assert_eq!(self.status, Status::ViewChange);
        assert!(!self.view_changing.joining);
        let Some((_, target)) = self.view_change_fetch_target() else {
            return self.drop_reason("new_state", "no fetch under way");
        };
        // Only committed entries, and none past the best DoViewChange's commit: beyond it
        // the new log is that sender's suffix, and a responder that moved on to a later
        // view may hold other entries there (they may be committed in that view, not in
        // the log this view starts from).
        let usable_last = new_state.commit.min(target);
        if !self.merge_fetch(new_state, usable_last) {
            return self.drop_reason("new_state", "nothing new for the view change");
        }
        self.try_complete_view_change(effects);
    }

    /// A replica joining a view that started without it collects that view's log, and
    /// installs it only once complete (see `join_started_view`). Only an answer that
    /// vouches for the view's log counts (`NewState::vouches`: a member normal in the
    /// view joined, answering with all of its log; `on_get_state`): its log is that
    /// view's log, from the StartView, with the primary's Prepares after it in
    /// order (see the module docs of `view_change`). From another view it may not be: a
    /// later view's log may differ from this one's past the ops committed by this view.
    fn on_join_state(
        &mut self,
        from: ReplicaIndex,
        view: View,
        new_state: ReceivedState,
        effects: &mut Vec<Effect>,
    ) {
        assert!(self.view_changing.joining && self.status == Status::ViewChange);
        if view != self.view {
            return self.drop_reason("new_state", "not from the view joined");
        }
        if !new_state.vouches {
            // Committed entries only, from a replica not normal in this view (or an
            // answer to an older question): not this view's log (`on_get_state`).
            return self.drop_reason("new_state", "does not vouch for the view's log");
        }
        let (commit, op) = (new_state.commit, new_state.op);
        if self.merge_fetch(new_state, op) {
            self.view_change_timeout.reset();
        }
        if self.fetch_end() >= op {
            self.install_joined_log(commit, effects);
        } else {
            // The answer was cut by size: ask the same replica for the rest.
            self.request_state(from, effects);
        }
    }

    /// Adds the entries of `new_state` up to `usable_last` that extend the view change's
    /// fetch (see [`merge_fetched`]). Returns whether the fetch grew.
    fn merge_fetch(&mut self, new_state: ReceivedState, usable_last: Op) -> bool {
        let skips_gaps = self.is_witness();
        merge_fetched(
            &mut self.view_changing.fetch,
            self.commit,
            new_state,
            usable_last,
            skips_gaps,
        )
    }

    /// Replaces the uncommitted part of the log with what was fetched: the checkpoint (if
    /// it lies beyond commit), then the fetched entries. Returns false when the checkpoint
    /// is corrupt (nothing changed).
    pub(super) fn install_fetch(&mut self) -> bool {
        assert_eq!(self.status, Status::ViewChange);
        let Some(fetch) = self.view_changing.fetch.take() else {
            self.log.truncate(self.commit);
            return true;
        };
        if let Some(checkpoint) = fetch
            .checkpoint
            .filter(|checkpoint| checkpoint.op > self.commit)
        {
            if !self.restore_checkpoint(checkpoint) {
                return false;
            }
        }
        self.log.truncate(self.commit);
        if fetch.op_first > self.log.op() + 1 {
            // Only a witness fetches past a gap (`merge_fetched`).
            assert!(self.is_witness(), "a gap in an active's fetch");
            let timestamp = witness_base_timestamp(&fetch.entries);
            self.witness_skip_to(fetch.op_first - 1, timestamp);
        }
        for (index, entry) in fetch.entries.into_iter().enumerate() {
            if fetch.op_first + index as Op > self.log.op() {
                self.log.push(entry);
            }
        }
        true
    }
}
