//! View changes (paper 4.2) with log suffixes (5.3), and asking before changing views.
//!
//! DoViewChange carries only the entries after the sender's commit number. The new
//! primary picks the log with the largest last-normal view (ties: largest op); it holds
//! every committed entry up to its own commit, and the best log's suffix starts after the
//! best sender's commit. When its own commit is lower, it first fetches the committed
//! entries in between (state transfer of committed entries only, safe from any replica in
//! any status because committed entries are the same everywhere), keeping them aside so
//! that its own log, which its DoViewChange described, is untouched until the view starts.
//! What it fetches stops at the best sender's commit: beyond it the new log is the best
//! sender's suffix, and a responder that has moved on to later views may hold other
//! entries there.
//!
//! Views never go back. So that a replica cut off from a healthy cluster does not come
//! back with a view nobody else can follow, a replica asks before it changes views (the
//! idea of Raft's pre-vote): when its primary goes silent it sends StartViewChange for the
//! next view from its current one, and raises its view only once f other replicas have
//! asked for that same view. A replica whose view is healthy ignores such asks, unless
//! the asker already holds a higher view (`sender_view`): that one can never come back,
//! and only a view change restores it. A DoViewChange or StartView for a higher view is
//! always followed: it proves that f+1 replicas moved on. ARCHITECTURE.md has the
//! argument.
//!
//! A replica that learns of a started view it is not part of (`join_started_view`)
//! fetches that view's log and installs it in one step; until then it keeps its own log
//! and last-normal view, so it never takes part in a later view change with a log
//! shorter than what it acknowledged. It asks the view's primary first, and when that
//! one does not answer, the other members in turn. Paper 5.2: only a replica normal in
//! the view speaks for its log. An answer goes out in the responder's view whatever view
//! the question was asked in, and says whether it vouches for that view's log
//! (`NewState::vouches`: a normal replica's whole log does; one still in its view change
//! or recovering answers with committed entries only, which do not), and the joiner
//! installs only an answer that vouches (`on_join_state`). So what it installs holds a
//! prefix of that view's log at least as long as the view's start (installed whole from the StartView, then extended by the primary's
//! Prepares in order): every op committed before the view started is in it. A log cut
//! at a commit number would not do: a replica with this view as its last normal one and
//! a log without an op committed earlier could win a later view change's choice of log
//! and lose that op.

use super::*;

/// How far above its own view a replica takes asks for a view change. A correct replica
/// asks for one view past its own (or past the highest asked for), and gets above the
/// others only through view changes that failed after f others asked too, so a legitimate
/// ask is a few views ahead at most. Without a cluster key anyone can send asks; the
/// bound keeps one forged ask from moving the cluster to the last view there is.
const VIEWS_AHEAD_MAX: View = 1024;

impl<S: StateMachine> Replica<S> {
    /// Raises the view and starts the view change for it (paper 4.2 step 1).
    ///
    /// The asks collected for `view` do not count as its StartViewChanges: an asker has
    /// not raised its view and is bound to nothing. Only a StartViewChange sent from
    /// `view` itself counts, so that a DoViewChange for `view` always means that f+1
    /// replicas raised their view to it. The paper's recovery argument rests on that: a
    /// replica that sent a DoViewChange and then lost its memory recovers into that view
    /// or a later one (one of the f+1 answers it waits for comes from a replica that
    /// raised), so its DoViewChange, arriving late, never speaks for a replica that went
    /// on acknowledging Prepares of an older view. (Seed 2441136: counting asks, a
    /// replica alone in view 1 sent its DoViewChange, crashed, recovered into view 0 and
    /// acknowledged ops there; the late DoViewChange then started view 1 without them.)
    pub(super) fn start_view_change(&mut self, view: View, effects: &mut Vec<Effect>) {
        assert!(view > self.view, "a view change must raise the view");
        assert!(
            !self.lease_promised(),
            "a view change started while a granted lease runs (paper 6.3.1)"
        );
        let raised = match self.asks.view == view {
            true => self.asks.raised,
            false => ReplicaSet::default(),
        };
        self.enter_view_change(view, raised.union(&ReplicaSet::of(self.index)), false);
        self.stats.view_changes += 1;
        tracing::info!(
            replica = self.index,
            view,
            last_normal_view = self.last_normal_view,
            op = self.log.op(),
            commit = self.commit,
            "view change started"
        );
        self.broadcast(
            Body::StartViewChange(StartViewChange { sender_view: view }),
            effects,
        );
        self.send_do_view_change_once_called(effects);
    }

    /// Paper 4.2 step 2: once f others called for this view, send the DoViewChange.
    fn send_do_view_change_once_called(&mut self, effects: &mut Vec<Effect>) {
        let others = self.view_changing.calls.count_others(self.index);
        if others >= self.faults_max() && !self.view_changing.do_view_change_sent {
            self.send_do_view_change(effects);
        }
    }

    /// Asks the others for a view change without changing anything of this replica's own
    /// (see the module docs): for the next view, or a higher one another replica asked for.
    pub(super) fn ask_for_view_change(&mut self, effects: &mut Vec<Effect>) {
        // Paper 6.3.1: a backup that granted its primary a lease asks for no view change
        // until the lease ran out on its clock.
        if !self.may_change_view("ask_for_view_change") {
            return;
        }
        let Some(next) = self.view.checked_add(1).filter(|&next| next <= VIEW_MAX) else {
            return tracing::error!(replica = self.index, "no view left to change to");
        };
        let view = next.max(self.asks.view);
        self.record_ask(self.index, view, false, false);
        tracing::debug!(replica = self.index, view, "asking for a view change");
        effects.push(Effect::Broadcast {
            message: self.ask_message(view),
            audience: Audience::Members,
        });
        self.start_view_change_when_asked(effects);
    }

    /// A StartViewChange for `view` sent from this replica's current, lower view.
    fn ask_message(&self, view: View) -> Message {
        debug_assert!(view > self.view);
        Message {
            epoch: self.configuration.epoch(),
            view,
            replica: self.index,
            body: Body::StartViewChange(StartViewChange {
                sender_view: self.view,
            }),
        }
    }

    /// Records that `from` asked for `view` (`raised`: from `view` itself); an ask for a
    /// higher view replaces the others.
    fn record_ask(&mut self, from: ReplicaIndex, view: View, follow: bool, raised: bool) {
        debug_assert!(view > self.view);
        if view > self.asks.view {
            self.asks = ViewChangeAsks {
                view,
                ..ViewChangeAsks::default()
            };
        }
        if view == self.asks.view {
            self.asks.from.insert(from);
            self.asks.follow |= follow;
            if raised {
                self.asks.raised.insert(from);
            }
        }
    }

    /// Starts the view change asked for once this replica and f others asked for it.
    fn start_view_change_when_asked(&mut self, effects: &mut Vec<Effect>) {
        let others = self.asks.from.count_others(self.index);
        if self.asks.from.contains(self.index)
            && others >= self.faults_max()
            && self.may_change_view("start_view_change")
        {
            self.start_view_change(self.asks.view, effects);
        }
    }

    /// This replica heard the primary of its view: asks it made or took in on the ground
    /// that the view had failed are void. (Asks to bring back a replica that holds a higher
    /// view stand: hearing the primary changes nothing for that replica.)
    pub(super) fn forget_asks_unless_following(&mut self) {
        if self.asks.view != 0 && !self.asks.follow {
            self.asks = ViewChangeAsks::default();
        }
    }

    pub(super) fn on_start_view_change(
        &mut self,
        from: ReplicaIndex,
        view: View,
        svc: StartViewChange,
        effects: &mut Vec<Effect>,
    ) {
        if svc.sender_view > view {
            return self.drop_reason("start_view_change", "asks for a view below its own");
        }
        if view < self.view {
            return self.drop_reason("start_view_change", "stale view");
        }
        if view == self.view {
            if self.status != Status::ViewChange {
                return self.drop_reason("start_view_change", "view already started");
            }
            if svc.sender_view < view {
                // An ask for the view this replica already raised to: the asker is not
                // bound by it, so it is no call (see `start_view_change`). Tell the asker
                // that this replica has raised: that is an ask it follows.
                let sender_view = self.view;
                self.send(
                    from,
                    Body::StartViewChange(StartViewChange { sender_view }),
                    effects,
                );
                return self.drop_reason("start_view_change", "an ask is not a call");
            }
            self.view_changing.calls.insert(from);
            return self.send_do_view_change_once_called(effects);
        }
        if view - self.view > VIEWS_AHEAD_MAX {
            return self.drop_reason("start_view_change", "asks for a view too far ahead");
        }
        // An ask for a view above ours. A sender that holds a view above ours can never
        // come back to it, so it is followed even when our view is healthy (once: it is
        // normal again when the new view starts). Anyone else is ignored while our view
        // is healthy: it was cut off, and the others are fine.
        let sender_above = svc.sender_view > self.view;
        let following = sender_above || (view == self.asks.view && self.asks.follow);
        if !following && self.view_is_healthy() {
            return self.drop_reason("start_view_change", "the current view is healthy");
        }
        self.record_ask(from, view, sender_above, svc.sender_view == view);
        if self.asks.view != view {
            return; // An ask for a lower view than others asked for: ours answers it.
        }
        if !self.asks.from.contains(self.index) {
            // Our view failed too (or a replica above it needs a view change): join the ask.
            return self.ask_for_view_change(effects);
        }
        self.start_view_change_when_asked(effects);
    }

    /// Repeats this replica's ask every `view_change_timeout_ticks` while it stands, for
    /// those that missed it. (Answering each ask received with ours would never stop: two
    /// replicas would answer each other forever.)
    pub(super) fn repeat_ask(&mut self, effects: &mut Vec<Effect>) {
        let asked = self.asks.from.contains(self.index);
        if asked
            && self
                .ticks
                .is_multiple_of(self.config.view_change_timeout_ticks)
        {
            effects.push(Effect::Broadcast {
                message: self.ask_message(self.asks.view),
                audience: Audience::Members,
            });
        }
    }

    fn send_do_view_change(&mut self, effects: &mut Vec<Effect>) {
        assert_eq!(self.status, Status::ViewChange);
        assert!(
            !self.view_changing.do_view_change_sent,
            "one DoViewChange per view"
        );
        assert!(!self.view_changing.joining);
        let entries = self.log.slice(self.commit + 1, self.log.op(), usize::MAX);
        let dvc = DoViewChange {
            last_normal_view: self.last_normal_view,
            op: self.log.op(),
            commit: self.commit,
            actives_commit: self.actives_commit_of_epoch,
            entries,
        };
        self.view_changing.do_view_change_sent = true;
        let primary = self.primary_of(self.view);
        if primary == self.index {
            self.view_changing.do_view_changes[self.index as usize] = Some(dvc);
            self.try_complete_view_change(effects);
        } else {
            // From now on another replica may start the view with this log. This replica
            // never again acknowledges a Prepare of an older view, because its view never
            // goes back (paper 4.2: the quorum-intersection argument rests on it).
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
        if self.primary_of(view) != self.index {
            return self.drop_reason("do_view_change", "not the new primary");
        }
        if dvc.last_normal_view > self.last_normal_view && dvc.op < self.commit {
            // Every log of a view started after ours holds every op we know committed: a
            // log from a later view without them cannot come from a correct replica.
            return self.drop_reason("do_view_change", "a later log lacks committed ops");
        }
        if view > self.view {
            // Paper 6.3.1: no vote in a later view while a granted lease runs (the
            // sender's next attempt, or the next view's, comes after it).
            if !self.may_change_view("do_view_change") {
                return;
            }
            self.start_view_change(view, effects);
        }
        if self.status != Status::ViewChange {
            return self.drop_reason("do_view_change", "view already started");
        }
        // What f+1 actives executed in this epoch stays true: the new primary learns the
        // highest number its voters know (`DoViewChange::actives_commit`).
        self.note_actives_commit(dvc.actives_commit);
        self.view_changing.do_view_changes[from as usize] = Some(dvc);
        if !self.view_changing.do_view_change_sent {
            // The sender saw f StartViewChanges: with it, f+1 replicas want this view.
            self.send_do_view_change(effects);
        } else {
            self.try_complete_view_change(effects);
        }
    }

    /// The index of the DoViewChange whose log the new view takes (paper 4.2 step 3).
    fn best_do_view_change(&self) -> usize {
        let mut best: Option<usize> = None;
        for (index, dvc) in self.view_changing.do_view_changes.iter().enumerate() {
            let Some(dvc) = dvc else { continue };
            let better = match best {
                None => true,
                Some(b) => {
                    let current = self.view_changing.do_view_changes[b]
                        .as_ref()
                        .expect("best is present");
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
        state_transfer::fetched_end(&self.view_changing.fetch, self.commit)
    }

    /// Once f+1 DoViewChanges are in (this replica's own included): the sender of the
    /// log the new view takes, and the op up to which this replica must hold committed
    /// entries before it can start the view (that sender's commit: its suffix covers the
    /// rest).
    pub(super) fn view_change_fetch_target(&self) -> Option<(ReplicaIndex, Op)> {
        let received = self.view_changing.do_view_changes.iter().flatten().count();
        if received < self.quorum()
            || self.status != Status::ViewChange
            || self.view_changing.joining
        {
            return None;
        }
        let best = self.best_do_view_change();
        let commit = self.view_changing.do_view_changes[best]
            .as_ref()
            .expect("best")
            .commit;
        Some((best as ReplicaIndex, commit))
    }

    /// Whom a new primary asks for the committed entries it lacks: the best log's
    /// sender first, then in turn every other sender of a DoViewChange whose commit
    /// number is past what this replica holds (committed entries are the same
    /// everywhere). The best sender may not answer: a witness that trimmed the entries
    /// has no checkpoint to offer instead (`witness`), and a replica may be gone.
    fn view_change_fetch_source(&mut self, best: ReplicaIndex) -> ReplicaIndex {
        let fetch_end = self.fetch_end();
        let others = self
            .view_changing
            .do_view_changes
            .iter()
            .enumerate()
            .filter(|&(index, dvc)| {
                index != best as usize
                    && index != self.index as usize
                    && dvc.as_ref().is_some_and(|dvc| dvc.commit > fetch_end)
            })
            .map(|(index, _)| index as ReplicaIndex);
        let sources: smallvec::SmallVec<[ReplicaIndex; 8]> =
            std::iter::once(best).chain(others).collect();
        let attempt = self.view_changing.fetch_attempts;
        self.view_changing.fetch_attempts = attempt.wrapping_add(1);
        sources[attempt as usize % sources.len()]
    }

    pub(super) fn try_complete_view_change(&mut self, effects: &mut Vec<Effect>) {
        let Some((best, best_commit)) = self.view_change_fetch_target() else {
            return;
        };
        let best_op = self.view_changing.do_view_changes[best as usize]
            .as_ref()
            .expect("best")
            .op;
        if best_op < self.fetch_end() {
            // The chosen log must hold every op known committed (paper 4.2): this one
            // cannot come from a correct replica. Wait for another.
            self.view_changing.do_view_changes[best as usize] = None;
            return self.drop_reason("do_view_change", "the best log lacks committed ops");
        }
        if self.fetch_end() < best_commit {
            // Paper 5.3: fetch what the suffix does not cover before starting the view.
            // One request at a time: the next source is drawn only for a new one.
            if !self.state_transfer_pending {
                let source = self.view_change_fetch_source(best);
                self.request_state(source, effects);
            }
            return;
        }
        self.start_view_as_primary(best as usize, effects);
    }

    fn start_view_as_primary(&mut self, best: usize, effects: &mut Vec<Effect>) {
        assert_eq!(self.status, Status::ViewChange);
        assert!(
            !self.view_changing.joining,
            "a joining replica has no say in the view's log"
        );
        assert_eq!(self.primary_of(self.view), self.index);
        assert!(self.view_changing.do_view_changes.iter().flatten().count() >= self.quorum());
        // The new commit number is the largest any DoViewChange reported (the best one's
        // included); StartView carries entries from the smallest, so most backups need
        // no state transfer.
        let commits = self
            .view_changing
            .do_view_changes
            .iter()
            .flatten()
            .map(|dvc| dvc.commit);
        let commit_max = commits.clone().max().expect("a quorum of DoViewChange");
        let commit_min = commits.min().expect("a quorum of DoViewChange");
        if !self.install_fetch() {
            return; // A corrupt checkpoint: the view-change timeout moves on.
        }
        // Each sender's commit number, for the witnesses' trim (`witness`).
        let reported: smallvec::SmallVec<[(ReplicaIndex, Op); 8]> = (self.view_changing)
            .do_view_changes
            .iter()
            .enumerate()
            .filter_map(|(index, dvc)| dvc.as_ref().map(|dvc| (index as ReplicaIndex, dvc.commit)))
            .collect();
        let best = self.view_changing.do_view_changes[best]
            .take()
            .expect("best");
        assert!(
            best.op >= self.commit,
            "the new view's log lacks committed ops"
        );
        assert!(self.log.op() >= best.commit);
        assert!(
            self.log.op() <= best.op,
            "the fetch reached past the new log"
        );
        for (index, entry) in best.entries.into_iter().enumerate() {
            if best.commit + 1 + index as Op > self.log.op() {
                self.log.push(entry);
            }
        }
        assert_eq!(self.log.op(), best.op);
        self.enter_normal();
        for (sender, commit) in reported {
            if sender != self.index {
                self.note_commit_of(sender, commit);
            }
        }
        self.stats.views_started += 1;
        // A view change means someone failed: the witnesses take part until every
        // active has acknowledged the view's log (`witness`).
        self.involve_witnesses();
        tracing::info!(
            replica = self.index,
            view = self.view,
            op = best.op,
            commit = self.commit,
            "started view as primary"
        );
        // The primary's state is new: the inherited uncommitted suffix is one pipeline slot.
        // Its own acknowledgement of the new log counts once the view's writes complete.
        let op = self.log.op();
        self.commit_to(commit_max.max(self.commit).min(op), effects);
        if op > self.commit {
            self.primary.pipeline.push_back(InFlightPrepare {
                op_last: op,
                bytes: 0,
            });
            for uncommitted in self.commit + 1..=op {
                let entry = self.log.get(uncommitted).expect("uncommitted entry");
                self.primary.in_flight.insert(entry.client, entry.request);
            }
            self.prepare_timeout.start();
        }
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
            && sv.op_first.checked_add(sv.entries.len() as Op) == sv.op.checked_add(1);
        if !well_formed {
            return self.drop_reason("start_view", "malformed");
        }
        if view < self.view || (view == self.view && self.status == Status::Normal) {
            return self.drop_reason("start_view", "stale or duplicate");
        }
        if sv.op < self.commit {
            // A new view's log holds every committed op (paper 4.2): not from a correct
            // primary.
            return self.drop_reason("start_view", "the new log lacks committed ops");
        }
        if sv.op_first > self.commit + 1 {
            // The suffix does not reach down to our commit: fetch the rest first.
            return self.join_started_view(view, effects);
        }
        let length = (self.commit - self.log.base()) + (sv.op - self.commit);
        if length > self.log_entries_cap() {
            // Only a witness whose trimming waits for the actives gets here (`witness`).
            return self.drop_reason("start_view", "the new log would pass the log's bound");
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
        self.send(from, self.acknowledgement(0), effects);
    }

    /// Becomes a normal backup in `view`. Callers have just replaced the log's uncommitted
    /// part with the new view's entries: a replica is never normal in a view without
    /// holding that view's log.
    fn enter_view_as_backup(&mut self, view: View) {
        assert_ne!(
            self.primary_of(view),
            self.index,
            "a primary never enters as a backup"
        );
        assert!(view >= self.view);
        self.set_view(view);
        self.enter_normal();
        tracing::info!(
            replica = self.index,
            view,
            primary = self.primary_of(view),
            op = self.log.op(),
            commit = self.commit,
            "joined view as backup"
        );
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
        if !(self.view_changing.joining && view == self.view) {
            self.enter_view_change(view, ReplicaSet::of(self.index), true);
            self.state_transfer_pending = false;
        }
        // One request at a time: the next source is drawn only for a new one.
        if !self.state_transfer_pending {
            let source = self.join_source();
            self.request_state(source, effects);
        }
    }

    /// Whom a replica joining a started view asks for its log: the view's primary first,
    /// then every other member in turn. The primary may be unable to answer: a witness
    /// asking below a log restored from a checkpoint waits until the actives' commit
    /// reaches it (`new_state_for`), and the actives' commit may move only once replicas
    /// that lost their memory recovered, which may need this witness normal (seed
    /// 5001761). A backup that never lost its memory still holds those entries (with
    /// witnesses no replica trims above the actives' commit).
    fn join_source(&mut self) -> ReplicaIndex {
        let primary = self.primary_of(self.view);
        let others = (0..self.configuration.replica_count())
            .filter(|&index| index != primary && index != self.index);
        let sources: smallvec::SmallVec<[ReplicaIndex; 8]> =
            std::iter::once(primary).chain(others).collect();
        let attempt = self.view_changing.fetch_attempts;
        self.view_changing.fetch_attempts = attempt.wrapping_add(1);
        sources[attempt as usize % sources.len()]
    }

    /// Installs the log a joining replica fetched, and becomes a normal backup.
    pub(super) fn install_joined_log(&mut self, commit: Op, effects: &mut Vec<Effect>) {
        assert!(self.view_changing.joining);
        assert_eq!(self.status, Status::ViewChange);
        if !self.install_fetch() {
            return; // A corrupt checkpoint: ask again on the next timeout.
        }
        let view = self.view;
        self.enter_view_as_backup(view);
        self.commit_to(commit.min(self.log.op()), effects);
        let primary = self.primary_of(view);
        self.send(primary, self.acknowledgement(0), effects);
    }

    pub(super) fn on_view_change_timeout(&mut self, effects: &mut Vec<Effect>) {
        self.view_change_timeout.reset();
        if self.status != Status::ViewChange {
            return self.view_change_timeout.stop();
        }
        if self.view_changing.joining {
            // Nobody answered in time: ask the next source (`join_source`). If the
            // primary is gone, the others notice too and ask for the next view with us.
            self.state_transfer_pending = false;
            let source = self.join_source();
            self.request_state(source, effects);
        } else {
            // Repeat this view's call for those that missed it (paper 4.2 step 1).
            let sender_view = self.view;
            self.broadcast(
                Body::StartViewChange(StartViewChange { sender_view }),
                effects,
            );
        }
        // The view did not start in time: ask for the next one. The view itself changes
        // only once f others ask too, so a replica cut off from everyone stays where it is
        // and rejoins whatever view the others are in when it hears them again.
        self.ask_for_view_change(effects);
    }
}
