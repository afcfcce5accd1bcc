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
//! could need it from there. That holds for every op that all f+1 actives executed: any
//! new primary is an active, so it holds the op as state, and fetches from a witness only
//! the entries past its own commit number (`view_change`: the best log's suffix starts at
//! its sender's commit, the rest comes from any replica). The primary learns each
//! active's commit number from its acknowledgements (`PrepareOk::commit`) and tells the
//! witnesses the lowest (`Commit::actives_commit`); a witness trims its log below it,
//! keeping `log_tail_ops` more, as an active keeps below its checkpoint. An active that
//! is down holds the witnesses' logs back: they grow to `Config::log_entries_max`, and
//! then refuse Prepares ("log full") until it returns, the safe answer (trimming what
//! only one active holds would lose it if that active failed while the other lagged).
//! A view's log installed meanwhile may take a witness past that bound, up to twice it
//! (`log_entries_cap`); a new primary learns the actives' commit numbers from their
//! DoViewChanges, so a view change does not hold the witnesses back.
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
//! A witness given state it lacks (a NewState naming a checkpoint past its log: it
//! lagged, or recovers) takes the checkpoint's op as its log's base without fetching a
//! page: it needs the entries after it, never the state (`fetch_checkpoint`). Asked for
//! entries it trimmed, it does not answer: it has no checkpoint to offer, and the asker
//! turns to another replica (`view_change::view_change_fetch_source`).

use super::*;

impl<S: StateMachine> Replica<S> {
    /// Whether this replica is a witness of its current configuration.
    pub fn is_witness(&self) -> bool {
        self.configuration.is_witness(self.index)
    }

    /// A witness's commit: the ops up to `commit` are known committed, and nothing
    /// executes (see the module docs).
    pub(super) fn witness_commit_to(&mut self, commit: Op) {
        debug_assert!(self.is_witness());
        assert!(commit <= self.log.op(), "commit beyond the log");
        if commit > self.commit {
            self.stats.entries_committed += commit - self.commit;
            self.commit = commit;
        }
    }

    /// A witness discards its log below `actives_commit` (from its primary's Commit),
    /// keeping `log_tail_ops` more (see the module docs).
    pub(super) fn trim_witness_log(&mut self, actives_commit: Op) {
        if !self.is_witness() {
            return;
        }
        // Known executed at every active; never past what this replica knows committed.
        let trim = actives_commit
            .min(self.commit)
            .saturating_sub(self.config.log_tail_ops);
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
        self.log.reset(op, timestamp);
        self.commit = op;
        tracing::info!(
            replica = self.index,
            op,
            "witness: log restarts after a checkpoint it was told of"
        );
    }

    /// The most entries this replica's log may hold. A witness may hold twice
    /// `Config::log_entries_max`: it refuses Prepares past the bound as any replica
    /// does, but its log shrinks only as the actives execute, so a view's log installed
    /// meanwhile (a StartView) may take it past; beyond the cap it does not join.
    pub(super) fn log_entries_cap(&self) -> u64 {
        match self.is_witness() {
            true => 2 * self.config.log_entries_max(),
            false => self.config.log_entries_max(),
        }
    }

    /// The primary's record of an active's commit number, from its acknowledgement
    /// or its DoViewChange.
    pub(super) fn note_commit_of(&mut self, from: ReplicaIndex, commit: Op) {
        debug_assert!(self.is_primary());
        let noted = &mut self.primary.commits[from as usize];
        *noted = (*noted).max(commit);
    }

    /// The lowest commit number among the actives (the primary's own included) in this
    /// view, or 0 while one has not acknowledged anything: what a witness may trim below.
    pub(super) fn actives_commit(&self) -> Op {
        if !self.is_primary() || self.configuration.witnesses().is_empty() {
            return 0;
        }
        self.configuration
            .actives()
            .map(|index| match index == self.index {
                true => self.commit,
                false => self.primary.commits[index as usize],
            })
            .min()
            .unwrap_or(0)
            .min(self.commit)
    }

    /// The primary tells the witnesses how far the actives executed when that moved
    /// since it last did (a loaded primary sends no heartbeat, and the witnesses' logs
    /// would grow until full), and at least every commit interval while it sends them no
    /// Prepares (or they would call for a view change). Called every tick.
    pub(super) fn tell_witnesses_on_tick(&mut self, effects: &mut Vec<Effect>) {
        if !self.is_primary() || self.configuration.witnesses().is_empty() {
            return;
        }
        let actives_commit = self.actives_commit();
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
