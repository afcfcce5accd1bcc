//! View changes (paper 4.2) with log suffixes (5.3).
//!
//! DoViewChange carries only the entries after the sender's commit number. The new
//! primary picks the log with the largest last-normal view (ties: largest op); it holds
//! every committed entry up to its own commit, and the best log's suffix starts after the
//! best sender's commit. When its own commit is lower, it first fetches the committed
//! entries in between (state transfer of committed entries only, safe from any replica in
//! any status because committed entries are the same everywhere), keeping them aside so
//! that its own log, which its DoViewChange described, is untouched until the view starts.
//!
//! A replica that was partitioned away must not depose a healthy primary when it comes
//! back: a StartViewChange for a higher view is ignored while this replica's view is
//! healthy (see `view_is_healthy`), and a replica that is alone in a view change resends
//! its StartViewChange instead of raising the view further. Once it hears a leading
//! primary again it goes back to that view if it promised nothing above it
//! (`abandon_lone_view_change`); if it did promise (a DoViewChange sent for a view that
//! never started), its StartViewChange says so and the others follow it, once. A
//! DoViewChange or StartView for a higher view is always followed: it proves that f+1
//! replicas moved on.
//!
//! A replica that learns of a started view it is not part of (`join_started_view`)
//! fetches that view's log from its primary and installs it in one step; until then it
//! keeps its own log and last-normal view, so it never takes part in a later view change
//! with a log shorter than what it acknowledged.

use super::*;

impl<S: StateMachine> Replica<S> {
    pub(super) fn start_view_change(&mut self, view: View, effects: &mut Vec<Effect>) {
        assert!(view > self.view, "a view change must raise the view");
        self.set_view(view);
        self.status = Status::ViewChange;
        self.clear_primary_state();
        self.start_view_change_from = 1 << self.index;
        self.do_view_change.iter_mut().for_each(|dvc| *dvc = None);
        self.do_view_change_sent = false;
        self.view_change_fetch = None;
        self.joining = false;
        self.stop_all_timeouts();
        self.view_change_timeout.start();
        self.stats.view_changes += 1;
        tracing::debug!(replica = self.index, view, "view change");
        self.broadcast_start_view_change(effects);
    }

    fn broadcast_start_view_change(&self, effects: &mut Vec<Effect>) {
        let promised = self.view_promised;
        self.broadcast(Body::StartViewChange(StartViewChange { promised }), effects);
    }

    pub(super) fn on_start_view_change(
        &mut self,
        from: ReplicaIndex,
        view: View,
        svc: StartViewChange,
        effects: &mut Vec<Effect>,
    ) {
        if view < self.view {
            return self.drop_reason("start_view_change", "stale view");
        }
        if view > self.view {
            // A healthy view is not given up for a replica that was cut off, unless that
            // replica promised itself to a view above ours: it cannot come back to this
            // one, and only a view change restores it (once: it is normal afterwards).
            if self.view_is_healthy() && svc.promised <= self.view {
                return self.drop_reason("start_view_change", "the current view is healthy");
            }
            self.start_view_change(view, effects);
        }
        if self.status != Status::ViewChange {
            return self.drop_reason("start_view_change", "view already started");
        }
        self.start_view_change_from |= 1 << from;
        let others = self.start_view_change_from.count_ones() as usize - 1;
        if others >= self.faults_max() && !self.do_view_change_sent {
            self.send_do_view_change(effects);
        }
    }

    fn send_do_view_change(&mut self, effects: &mut Vec<Effect>) {
        let entries = self.log.slice(self.commit + 1, self.log.op(), usize::MAX);
        let dvc = DoViewChange {
            last_normal_view: self.last_normal_view,
            op: self.log.op(),
            commit: self.commit,
            entries,
        };
        self.do_view_change_sent = true;
        let primary = self.primary_of(self.view);
        if primary == self.index {
            // Kept here, not sent: it binds only if this replica starts the view itself,
            // and then it is normal in that view. So it is no promise to anyone else.
            self.do_view_change[self.index as usize] = Some(dvc);
            self.try_complete_view_change(effects);
        } else {
            // Another replica may start the view with this log: from now on this replica
            // must never acknowledge a Prepare of an older view.
            self.view_promised = self.view;
            self.send(primary, Body::DoViewChange(dvc), effects);
        }
    }

    pub(super) fn on_do_view_change(
        &mut self,
        from: ReplicaIndex,
        view: View,
        dvc: DoViewChange,
        effects: &mut Vec<Effect>,
    ) {
        let well_formed = dvc.commit <= dvc.op
            && dvc.entries.len() as u64 == dvc.op - dvc.commit
            && dvc.last_normal_view < view;
        if !well_formed {
            return self.drop_reason("do_view_change", "malformed");
        }
        if view < self.view {
            return self.drop_reason("do_view_change", "stale view");
        }
        if view == self.view && self.is_primary() {
            // The sender missed our StartView.
            return self.send_start_view(from, effects);
        }
        if view > self.view {
            self.start_view_change(view, effects);
        }
        if self.status != Status::ViewChange || self.primary_of(view) != self.index {
            return self.drop_reason("do_view_change", "not the new primary");
        }
        self.do_view_change[from as usize] = Some(dvc);
        if !self.do_view_change_sent {
            // The sender saw f StartViewChanges: with it, f+1 replicas want this view.
            self.send_do_view_change(effects);
        } else {
            self.try_complete_view_change(effects);
        }
    }

    /// The index of the DoViewChange whose log the new view takes (paper 4.2 step 3).
    fn best_do_view_change(&self) -> usize {
        let mut best: Option<usize> = None;
        for (index, dvc) in self.do_view_change.iter().enumerate() {
            let Some(dvc) = dvc else { continue };
            let better = match best {
                None => true,
                Some(b) => {
                    let current = self.do_view_change[b].as_ref().expect("best is present");
                    (dvc.last_normal_view, dvc.op) > (current.last_normal_view, current.op)
                }
            };
            if better {
                best = Some(index);
            }
        }
        best.expect("at least one DoViewChange")
    }

    /// The op up to which this replica holds entries it may build the next log from: its
    /// commit number, or the end of what it fetched (committed entries for a new primary,
    /// the joined view's entries for a joining replica).
    pub(super) fn fetch_end(&self) -> Op {
        match &self.view_change_fetch {
            Some(fetch) => fetch.op_first + fetch.entries.len() as Op - 1,
            None => self.commit,
        }
    }

    pub(super) fn try_complete_view_change(&mut self, effects: &mut Vec<Effect>) {
        let received = self.do_view_change.iter().flatten().count();
        if received < self.config.quorum() || self.status != Status::ViewChange {
            return;
        }
        let best = self.best_do_view_change();
        let best_commit = self.do_view_change[best].as_ref().expect("best").commit;
        if self.fetch_end() < best_commit {
            // Paper 5.3: fetch what the suffix does not cover before starting the view.
            return self.request_state(best as ReplicaIndex, effects);
        }
        self.start_view_as_primary(best, effects);
    }

    fn start_view_as_primary(&mut self, best: usize, effects: &mut Vec<Effect>) {
        // The new commit number is the largest any DoViewChange reported (the best one's
        // included); StartView carries entries from the smallest, so most backups need
        // no state transfer.
        let commits = self.do_view_change.iter().flatten().map(|dvc| dvc.commit);
        let commit_max = commits.clone().max().expect("a quorum of DoViewChange");
        let commit_min = commits.min().expect("a quorum of DoViewChange");
        let best = self.do_view_change[best].take().expect("best");
        assert!(
            best.op >= self.commit,
            "the new view's log lacks committed ops"
        );
        if !self.install_fetch() {
            return; // A corrupt checkpoint: the view-change timeout moves on.
        }
        assert!(self.log.op() >= best.commit);
        for (index, entry) in best.entries.into_iter().enumerate() {
            if best.commit + 1 + index as Op > self.log.op() {
                self.log.push(entry);
            }
        }
        assert_eq!(self.log.op(), best.op);
        self.status = Status::Normal;
        self.last_normal_view = self.view;
        self.do_view_change.iter_mut().for_each(|dvc| *dvc = None);
        self.stats.views_started += 1;
        tracing::debug!(
            replica = self.index,
            view = self.view,
            op = best.op,
            "started view as primary"
        );
        // Rebuild the primary's state: the inherited uncommitted suffix is one pipeline slot.
        self.clear_primary_state();
        let op = self.log.op();
        self.acked[self.index as usize] = op;
        for ticks in self.heard_tick.iter_mut() {
            *ticks = self.ticks;
        }
        self.commit_to(commit_max.max(self.commit).min(op), effects);
        if op > self.commit {
            self.pipeline.push_back(InFlightPrepare {
                op_last: op,
                bytes: 0,
            });
            for uncommitted in self.commit + 1..=op {
                let entry = self.log.get(uncommitted).expect("uncommitted entry");
                self.in_flight.insert(entry.client, entry.request);
            }
        }
        self.start_normal_timeouts();
        let op_first = (commit_min + 1).max(self.log.base() + 1).min(op + 1);
        let start_view = self.start_view_message(op_first);
        self.broadcast(Body::StartView(start_view), effects);
    }

    fn start_view_message(&self, op_first: Op) -> StartView {
        let op = self.log.op();
        let bytes_max = self.config.message_bytes_max as usize / 2;
        let mut first = op_first;
        let mut entries = self.log.slice(first, op, usize::MAX);
        // Keep the message bounded: drop the oldest committed entries first (a backup that
        // then lacks them fetches them by state transfer).
        let mut bytes: usize = entries.iter().map(Entry::size_bytes).sum();
        let mut skip = 0;
        while bytes > bytes_max && first <= self.commit {
            bytes -= entries[skip].size_bytes();
            skip += 1;
            first += 1;
        }
        entries.drain(..skip);
        StartView {
            op,
            commit: self.commit,
            op_first: first,
            entries,
        }
    }

    fn send_start_view(&mut self, to: ReplicaIndex, effects: &mut Vec<Effect>) {
        let op_first = (self.commit + 1)
            .min(self.log.op() + 1)
            .max(self.log.base() + 1);
        let start_view = self.start_view_message(op_first);
        self.send(to, Body::StartView(start_view), effects);
    }

    pub(super) fn on_start_view(
        &mut self,
        from: ReplicaIndex,
        view: View,
        sv: StartView,
        effects: &mut Vec<Effect>,
    ) {
        let well_formed = from == self.primary_of(view)
            && sv.commit <= sv.op
            && sv.op_first + sv.entries.len() as Op == sv.op + 1;
        if !well_formed {
            return self.drop_reason("start_view", "malformed");
        }
        if view < self.view || (view == self.view && self.status == Status::Normal) {
            return self.drop_reason("start_view", "stale or duplicate");
        }
        assert!(sv.op >= self.commit, "a new view lost committed ops");
        if sv.op_first > self.commit + 1 {
            // The suffix does not reach down to our commit: fetch the rest first.
            return self.join_started_view(view, effects);
        }
        // Replace the uncommitted part of the log with the new view's, in one step.
        self.log.truncate(self.commit);
        self.enter_view_as_backup(view);
        for (index, entry) in sv.entries.into_iter().enumerate() {
            if sv.op_first + index as Op > self.log.op() {
                self.log.push(entry);
            }
        }
        self.commit_to(sv.commit.min(self.log.op()), effects);
        self.send(
            from,
            Body::PrepareOk(PrepareOk { op: self.log.op() }),
            effects,
        );
    }

    /// Becomes a normal backup in `view`. Callers have just replaced the log's uncommitted
    /// part with the new view's entries: a replica is never normal in a view without
    /// holding that view's log.
    fn enter_view_as_backup(&mut self, view: View) {
        self.set_view(view);
        self.status = Status::Normal;
        self.last_normal_view = view;
        self.joining = false;
        self.clear_primary_state();
        self.do_view_change.iter_mut().for_each(|dvc| *dvc = None);
        self.view_change_fetch = None;
        self.start_normal_timeouts();
    }

    /// `view` started without this replica (a Prepare, Commit or StartView says so, but
    /// does not carry the log it needs). It fetches the view's log from the primary and
    /// installs it only once it reaches the primary's op, keeping its own log and
    /// last-normal view until then. Truncating first (paper 5.2, read literally) would be
    /// unsafe: a replica that dropped entries it acknowledged, and then took part in
    /// another view change before the fetch completed, could make a committed op vanish.
    pub(super) fn join_started_view(&mut self, view: View, effects: &mut Vec<Effect>) {
        assert!(view >= self.view);
        assert!(view > self.view || self.status != Status::Normal);
        if !(self.joining && view == self.view) {
            if view > self.view {
                self.set_view(view);
            }
            self.status = Status::ViewChange;
            self.clear_primary_state();
            self.start_view_change_from = 1 << self.index;
            self.do_view_change.iter_mut().for_each(|dvc| *dvc = None);
            // The view has started: this replica has no say in choosing its log.
            self.do_view_change_sent = true;
            self.view_change_fetch = None;
            self.joining = true;
            self.stop_all_timeouts();
            self.view_change_timeout.start();
            self.state_transfer_pending = false;
        }
        self.request_state(self.primary_of(view), effects);
    }

    /// Installs the log a joining replica fetched, and becomes a normal backup.
    pub(super) fn install_joined_log(&mut self, commit: Op, effects: &mut Vec<Effect>) {
        assert!(self.joining);
        if !self.install_fetch() {
            return; // A corrupt checkpoint: ask again on the next timeout.
        }
        let view = self.view;
        self.enter_view_as_backup(view);
        self.commit_to(commit.min(self.log.op()), effects);
        let primary = self.primary_of(view);
        self.send(
            primary,
            Body::PrepareOk(PrepareOk { op: self.log.op() }),
            effects,
        );
    }

    /// A replica alone in a view change (cut off, then reconnected) that hears the normal
    /// primary of an older view `view` goes back to it instead of staying out until the
    /// cluster's next view change. Returns whether it did. When `view` is the view it was
    /// last normal in, its log is still a prefix of that primary's and it simply resumes;
    /// when `view` is newer (a view it promised itself to did start, without it), it then
    /// joins that view by fetching its log (`join_started_view`).
    ///
    /// Safe although the view number goes back: the replica promised nothing to any view
    /// above `view`. It sent no DoViewChange to another replica for any view above `view`
    /// (`view_promised`); the DoViewChanges it received as primary-to-be are dropped with
    /// the view; and a StartViewChange binds only its receivers, each of which must still
    /// send its own DoViewChange before a view can start. The quorum intersection argument
    /// of the paper (4.2) is about DoViewChange senders only.
    pub(super) fn abandon_lone_view_change(&mut self, view: View) -> bool {
        // `view_promised <= view < self.view`: no DoViewChange went to another replica for
        // the current view either. (One the primary-to-be keeps for itself is no promise.)
        let lone = self.status == Status::ViewChange
            && !self.joining
            && self.view_promised <= view
            && self.last_normal_view <= view
            && view < self.view;
        if !lone {
            return false;
        }
        tracing::debug!(
            replica = self.index,
            from_view = self.view,
            view,
            "the primary of an older view still leads: leaving a lone view change"
        );
        self.view = view; // The one place a view goes back; see above.
        self.start_view_change_from = 0;
        self.do_view_change.iter_mut().for_each(|dvc| *dvc = None);
        self.view_change_fetch = None;
        if view == self.last_normal_view {
            self.status = Status::Normal;
            self.start_normal_timeouts();
        }
        // Otherwise the caller sees a view it is not normal in and joins it.
        true
    }

    pub(super) fn on_view_change_timeout(&mut self, effects: &mut Vec<Effect>) {
        self.view_change_timeout.reset();
        if self.status != Status::ViewChange {
            return self.view_change_timeout.stop();
        }
        if self.joining {
            // The primary of the view being joined stopped answering (every answer that
            // makes progress restarts this timeout): give up on that view. Safe: nothing
            // of the joined view was installed, and no DoViewChange was sent for it.
            return self.start_view_change(self.view + 1, effects);
        }
        let others = self.start_view_change_from.count_ones() as usize - 1;
        if others >= self.faults_max() {
            // A quorum wanted this view but it did not start: try the next primary.
            self.start_view_change(self.view + 1, effects);
        } else {
            // Alone: repeat the call rather than raising the view, so that a replica cut
            // off from the others does not come back with a view far ahead of theirs.
            self.broadcast_start_view_change(effects);
        }
    }
}
