//! Witnesses (paper 6.1): members that store the log and vote, but never execute.
//!
//! Of 2f+1 members, up to f may be witnesses; the f+1 others (the actives) hold the
//! service's state. A witness acknowledges Prepares, takes part in view changes and
//! recovery like any replica, and knows which ops committed, but executes none of them:
//! it has no service state, no client table and no checkpoints, so it serves no reads and
//! no checkpoint pages, and it is never primary (`Configuration::primary_of` skips it).
//!
//! What it may forget. A witness's log is, for the ops it acknowledged, one of the f+1
//! copies that make them committed: it may discard an entry only once no view change
//! could need it from there. That holds for every op that f+1 actives executed: at most
//! f members are not among them, so the f+1 DoViewChanges of any view change include
//! one of them, from which the new primary (an active) fetches what it lacks (as a
//! checkpoint if that one trimmed it); from a witness it fetches only the entries past
//! its own commit number (`view_change`: the best log's suffix starts at its sender's
//! commit, the rest comes from any replica). The primary learns each active's commit
//! number from its acknowledgements (`PrepareOk::commit`) and its DoViewChange, and
//! tells the others the highest op f+1 actives executed (`actives_commit`, in every
//! Prepare and Commit); a witness trims its log below it, keeping `log_tail_ops` more,
//! as an active keeps below its checkpoint. With f witnesses the actives are f+1, and
//! one that is down holds the witnesses' logs back: they grow to
//! `Config::log_entries_max`, and then refuse Prepares ("log full") until it returns,
//! the safe answer (trimming what only one active holds would lose it if that active
//! failed while the other lagged). A view's log installed meanwhile may take a log past
//! that bound, up to twice it (`log_entries_cap`).
//!
//! The actives keep those entries too. A witness that loses its memory loses its copies
//! with it, and recovers them from the primary's log; so with witnesses no replica trims
//! its log above the actives' commit (`trim_log`), and the primary orders nothing that
//! would take its log past `Config::log_entries_max`: it waits for the actives when the
//! witnesses would refuse it anyway ("log full"), and never when more than f+1 actives
//! are up, since the actives' commit then moves without the one that is down. A new
//! primary thus holds, for a lagging active, everything above the actives' commit, and
//! so does the log a recovering witness gets. The one log that may start above the
//! actives' commit is one restored from a checkpoint (a replica that lost its memory):
//! it answers no witness asking below it until the actives' commit reaches its base
//! (`new_state_for`), and the witness waits rather than skip. So the number must reach
//! it: a view counts the actives afresh (0 for those that have not answered yet), so a
//! primary reports the highest number known in its epoch when its own count is lower
//! (`actives_commit_to_report`), and a DoViewChange carries the sender's, so that a new
//! primary restored from a checkpoint learns it from the witnesses that heard it (seeds
//! 114005309, 131013887: the actives it waited for were recovering through it, and the
//! witnesses could never join its views). With a data directory the
//! actives' commit heard is written (`Write::ActivesCommit`) and an active's journal keeps
//! the entries above it, so a restart from disk keeps both (`restart`); a witness's own
//! trims and skips are `Write::LogStart`s.
//!
//! In the normal case (paper 6.1) the primary sends its Prepares to the actives only:
//! with f witnesses the f+1 actives are a quorum by themselves, and a witness that is
//! not needed neither stores nor acknowledges. When the actives do not acknowledge in
//! time (the prepare timeout fires), and when a view starts (a view change means someone
//! failed), the primary involves the witnesses: its Prepares go to every member, and the
//! resends bring each witness up from its acknowledgement (a witness far behind asks for
//! state, as any backup does on a gap). Once every active has acknowledged the log as it
//! stood when they were last involved, the witnesses step back. Nothing of the protocol's
//! safety moves: an op commits on f+1 acknowledgements whoever sent them, and a witness
//! that was not sent an op never counts for it. An uninvolved witness still hears from
//! the primary at least every commit interval (a Commit), so it does not call for a view
//! change, and it does not fetch the log that a Commit tells it it lacks: it catches up
//! when it is involved again.
//!
//! A witness that asks for entries the responder trimmed (it lagged, or recovers) is
//! answered with the responder's log from its base, never with a checkpoint: it needs
//! entries, never state. It skips the committed ops below them, which it holds none of
//! and which f+1 actives executed (the trimming rule above), and takes the entries
//! (`state_transfer`); a NewState that names a checkpoint all the same makes it take
//! the checkpoint's op as its log's base, fetching no page. Asked for entries it trimmed, a
//! witness does not answer: it has no checkpoint to offer, and the asker turns to
//! another replica (`view_change::view_change_fetch_source`).

use super::*;
use smallvec::SmallVec;

impl<S: StateMachine> Replica<S> {
    /// Whether this replica is a witness of its current configuration.
    pub fn is_witness(&self) -> bool {
        self.configuration.is_witness(self.index)
    }

    /// Whether the service's state here is the state at this replica's commit number:
    /// not at a witness, nor at a replica retiring from being one (paper 6.1: a witness
    /// executes nothing).
    pub fn holds_service_state(&self) -> bool {
        !self.is_witness() && !self.retired_as_witness
    }

    /// A witness's commit: the ops up to `commit` are known committed, and nothing
    /// executes (see the module docs).
    pub(super) fn witness_commit_to(&mut self, commit: Op) {
        debug_assert!(!self.holds_service_state());
        assert!(commit <= self.log.op(), "commit beyond the log");
        if commit > self.commit {
            self.stats.entries_committed += commit - self.commit;
            self.commit = commit;
        }
    }

    /// Notes the actives' commit (the highest op f+1 actives executed) as the primary
    /// reports it in its Prepares and Commits, and trims the log to match (see [`Replica::trim_log`]).
    pub(super) fn note_actives_commit(&mut self, actives_commit: Op) {
        if self.configuration.witnesses().is_empty() {
            return;
        }
        self.actives_commit_heard = self.actives_commit_heard.max(actives_commit);
        self.actives_commit_of_epoch = self.actives_commit_of_epoch.max(actives_commit);
        if self.hands_over_state() && actives_commit >= self.epoch_start {
            // Told by this epoch's primary: f'+1 of its actives executed the start.
            self.end_hand_over();
        }
        self.trim_log();
    }

    /// Whether this witness still holds the state at its epoch's start for the epoch's
    /// actives (see `epoch::take_up_role`): it executes nothing, and serves it.
    pub fn hands_over_state(&self) -> bool {
        self.epoch_transfer.hands_over_state
    }

    /// Executes the log up to `op` on the state a witness hands over: as the active it
    /// was, and no further (paper 6.1: a witness executes nothing else). The ops' replies
    /// go to `replies` (a restart or an epoch move drops them: a client that missed one
    /// retries and gets it from the client table).
    pub(super) fn execute_handed_over_state_to(&mut self, op: Op, replies: &mut Vec<Effect>) {
        while self.commit < op {
            let next = self.commit + 1;
            self.execute_entry(next, replies);
            self.commit = next;
        }
    }

    /// The epoch's actives hold the start: the witness drops the state it kept for them.
    pub(super) fn end_hand_over(&mut self) {
        self.epoch_transfer.hands_over_state = false;
        self.drop_service_state();
    }

    /// Drops the entries that no replica can need from this one. An active keeps
    /// `log_tail_ops` below its latest checkpoint; a witness as many below the actives'
    /// commit (the highest op f+1 actives executed). With witnesses an active also keeps
    /// everything above the actives' commit: a witness that loses its memory gets its
    /// copies of those entries back from the primary's log (`new_state_for`), and a new
    /// primary has them for a lagging active (see the module docs).
    pub(super) fn trim_log(&mut self) {
        let tail = self.config.log_tail_ops;
        let below_checkpoint = self.checkpoint_op().saturating_sub(tail);
        // A witness handing over the start keeps its log as the active it was did.
        let witness_log = self.is_witness() && !self.hands_over_state();
        let trim = match (witness_log, self.configuration.witnesses().is_empty()) {
            (_, true) => {
                // No witnesses in this epoch: nothing trims by the actives' commit, which
                // follows the checkpoint instead, so that a store that kept the entries
                // above it for an earlier epoch's witnesses trims again (and a restart
                // does not put them back). Safe should a later epoch have witnesses: it
                // starts after this checkpoint, and no replica of it needs an op at or
                // below its start from a log (ARCHITECTURE.md, "Changing members").
                self.actives_commit_heard = self.actives_commit_heard.max(self.checkpoint_op());
                below_checkpoint
            }
            // Never past what this replica knows committed.
            (true, false) => self
                .actives_commit_heard
                .min(self.commit)
                .saturating_sub(tail),
            (false, false) => below_checkpoint.min(self.actives_commit_heard),
        };
        if trim > self.log.base() {
            self.log.trim(trim);
        }
    }

    /// A witness takes a checkpoint it was told of as its log's base: its log restarts
    /// empty after the checkpoint's op, which becomes its commit number. It fetches no
    /// page (see the module docs).
    pub(super) fn witness_skip_to(&mut self, op: Op, timestamp: u64) {
        debug_assert!(self.is_witness());
        assert!(op > self.commit, "a checkpoint must move commit forward");
        if self.hands_over_state() {
            // A witness skips only below an op f+1 actives executed (the sender's
            // actives' commit reached its log's base, `new_state_for`), past the start:
            // the actives hold it, and the state kept no longer meets the log.
            self.end_hand_over();
        }
        self.log.reset(op, timestamp);
        self.commit = op;
        tracing::info!(
            replica = self.index,
            op,
            "witness: log restarts after a checkpoint it was told of"
        );
    }

    /// A witness given entries that start past its log, below the sender's commit
    /// number, skips the committed ops in between (it holds none of them, and needs
    /// none: see the module docs). Returns whether it did.
    pub(super) fn witness_skips_gap(&mut self, new_state: &ReceivedState) -> bool {
        let skipped = new_state.op_first - 1;
        if !self.is_witness() || skipped <= self.log.op() || skipped > new_state.commit {
            return false;
        }
        let timestamp = witness_base_timestamp(&new_state.entries);
        self.witness_skip_to(skipped, timestamp);
        true
    }

    /// The most entries this replica's log may hold. With witnesses a log may hold
    /// twice `Config::log_entries_max`: a replica refuses Prepares past the bound (the
    /// primary orders nothing past it), but the logs shrink only as the actives execute,
    /// so a view's log installed meanwhile (a StartView, a view change's) may take one
    /// past; beyond the cap a replica does not join. A replica retiring from an epoch,
    /// or transitioning out of one into the next, still holds the log of the epoch it
    /// leaves, which that epoch's witnesses may have let reach the larger cap; without a
    /// checkpoint (a witness it was) nothing trims it, and it grows no more (seed
    /// 16007033).
    pub(super) fn log_entries_cap(&self) -> u64 {
        let leaving_an_epoch = matches!(self.status, Status::Retiring | Status::Transitioning);
        match self.configuration.witnesses().is_empty() && !leaving_an_epoch {
            true => self.config.log_entries_max(),
            false => 2 * self.config.log_entries_max(),
        }
    }

    /// The primary's record of an active's commit number, from its acknowledgement
    /// or its DoViewChange.
    pub(super) fn note_commit_of(&mut self, from: ReplicaIndex, commit: Op) {
        debug_assert!(self.is_primary());
        let noted = &mut self.primary.commits[from as usize];
        *noted = (*noted).max(commit);
    }

    /// The highest op that f+1 actives executed, by the commit numbers they reported
    /// in this view (the primary's own included; 0 for one that has not answered yet):
    /// what every replica may trim its log below (see the module docs). With f
    /// witnesses the actives are f+1 and this is the lowest of their commit numbers.
    pub(super) fn actives_commit(&self) -> Op {
        if !self.is_primary() || self.configuration.witnesses().is_empty() {
            return 0;
        }
        let mut commits: SmallVec<[Op; 8]> = self
            .configuration
            .actives()
            .map(|index| match index == self.index {
                true => self.commit,
                false => self.primary.commits[index as usize],
            })
            .collect();
        // At most f witnesses: f+1 actives at least.
        let f = self.configuration.faults_max();
        assert!(commits.len() > f);
        commits.sort_unstable_by(|a, b| b.cmp(a));
        commits[f].min(self.commit)
    }

    /// The actives' commit this primary reports (in its Prepares and Commits): its own
    /// view's count, or the highest one known in this epoch when that is higher. That
    /// f+1 actives executed an op stays true (an active that loses its state counts as
    /// failed, see the module docs), but a view counts afresh, from 0 for the actives
    /// that have not answered yet: a replica that lost its memory, recovering from a
    /// primary whose view counted it at 0, never heard the number again, and, restored
    /// from a checkpoint above it, refused the witnesses the log after it for good
    /// (simulator seeds 114005309, 131013887: the actives it waited for were recovering
    /// through it).
    pub(super) fn actives_commit_to_report(&self) -> Op {
        self.actives_commit()
            .max(self.actives_commit_of_epoch.min(self.commit))
    }

    /// The primary tells the witnesses how far the actives executed when that moved
    /// since it last did (a loaded primary sends no heartbeat, and the witnesses' logs
    /// would grow until full), and at least every commit interval while it sends them no
    /// Prepares (or they would call for a view change). Its own log is trimmed to the
    /// same number first (`note_actives_commit`). Called every tick.
    pub(super) fn tell_witnesses_on_tick(&mut self, effects: &mut Vec<Effect>) {
        if !self.is_primary() || self.configuration.witnesses().is_empty() {
            return;
        }
        let actives_commit = self.actives_commit_to_report();
        self.note_actives_commit(actives_commit);
        let silent = self.ticks.saturating_sub(self.primary.witnesses_told_tick)
            >= self.config.commit_interval_ticks;
        if actives_commit <= self.primary.actives_commit_told && !silent {
            return;
        }
        self.primary.actives_commit_told = actives_commit;
        self.primary.witnesses_told_tick = self.ticks;
        let witnesses = self.configuration.witnesses();
        for witness in witnesses.iter() {
            let commit = Commit {
                commit: self.commit,
                actives_commit,
                stamp: self.lease_stamp(),
            };
            self.send(witness, Body::Commit(commit), effects);
        }
    }

    /// Whom a new Prepare goes to: the actives while they answer in time, every member
    /// while the witnesses are involved (see the module docs).
    pub(super) fn prepare_audience(&mut self) -> Audience {
        if self.primary.witnesses_involved.is_none() && !self.configuration.witnesses().is_empty() {
            return Audience::Actives;
        }
        self.primary.witnesses_told_tick = self.ticks;
        Audience::Members
    }

    /// Whether this replica, as the primary, sends its Prepares to the witnesses now.
    pub fn involves_witnesses(&self) -> bool {
        self.is_primary() && self.primary.witnesses_involved.is_some()
    }

    /// Whether the primary sends its Prepares to `member` now. A slow active that still
    /// acknowledges something every prepare timeout paces the commits; one that goes
    /// silent for a whole timeout brings the witnesses in (`on_prepare_timeout`).
    pub(super) fn takes_prepares(&self, member: ReplicaIndex) -> bool {
        self.primary.witnesses_involved.is_some() || !self.configuration.is_witness(member)
    }

    /// The primary involves the witnesses until every active acknowledged its log as it
    /// stands now: the actives did not answer in time, or a view starts (see the module
    /// docs). Involved again, they stay until the actives reach the later op.
    pub(super) fn involve_witnesses(&mut self) {
        if !self.is_primary() || self.configuration.witnesses().is_empty() {
            return;
        }
        let until = self.log.op();
        match &mut self.primary.witnesses_involved {
            Some(involved_until) => *involved_until = (*involved_until).max(until),
            None => {
                self.primary.witnesses_involved = Some(until);
                self.stats.witness_involvements += 1;
                tracing::debug!(
                    replica = self.index,
                    view = self.view,
                    until,
                    "witnesses involved: the actives were late, or a view started"
                );
            }
        }
    }

    /// The witnesses step back once every active (the primary's own completed writes
    /// included) acknowledged the op they were involved until.
    pub(super) fn release_witnesses_once_actives_caught_up(&mut self) {
        let Some(until) = self.primary.witnesses_involved else {
            return;
        };
        let caught_up = self
            .configuration
            .actives()
            .all(|active| self.primary.acked[active as usize] >= until);
        if caught_up {
            self.primary.witnesses_involved = None;
            tracing::debug!(
                replica = self.index,
                view = self.view,
                until,
                "witnesses step back: every active acknowledged"
            );
        }
    }
}

/// The timestamp a witness gives the base of a log it restarts before `entries`: one
/// below the first entry's (timestamps increase along a log). A witness never orders, so
/// nothing but that check reads it.
pub(super) fn witness_base_timestamp(entries: &[Entry]) -> u64 {
    entries
        .first()
        .map_or(0, |entry| entry.timestamp.saturating_sub(1))
}
