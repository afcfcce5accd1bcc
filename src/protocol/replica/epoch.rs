//! Reconfiguration (paper 7): moving from one epoch's members to the next.
//!
//! A RECONFIGURATION (`Operation::Reconfigure`) is ordered like any request, as the last
//! op of its epoch (`normal::on_request` refuses everything after it). Executing it moves
//! a replica to the next epoch at the end of that input (`finish_epoch_change`):
//!
//! - a member of both epochs holds every op up to the RECONFIGURATION, so it is normal in
//!   view 0 of the new epoch at once, and tells the replaced replicas (EpochStarted);
//! - a replica that is not a member of the new epoch retires: it answers state transfer
//!   and reminds the new members (StartEpoch) until f'+1 of them said they started the
//!   epoch, then [`Replica::is_retired`] tells its driver to shut it down (7.3);
//! - the old primary sends StartEpoch to the members that were not in the old epoch.
//!
//! A replica that learns of a later epoch from a StartEpoch and has never acted in its
//! current one beyond what is committed (a new member, a replica that is transitioning or
//! retiring) moves to it *transitioning*: it keeps only its committed entries, fetches
//! committed state from the epoch's replicas (GetState) until it holds the epoch's first
//! state, then is normal in view 0 and sends EpochStarted (7.2). Until then it votes in
//! nothing: its log may lack committed ops, so it must not help choose a view's log. A
//! replica restarted from storage whose commit number is below its epoch's start
//! transitions again (`restart`).
//!
//! A replica still normal (or changing views) in the old epoch is different: its log may
//! hold the only copies of the old epoch's last ops that survive, and the old group may
//! still need them to finish the epoch with a view change (7.2). So it stays in the old
//! epoch and fetches the committed prefix up to the RECONFIGURATION aside (the epoch
//! is *pending*): from replicas of the new epoch, which answer a GetState of an earlier
//! epoch with committed state only. Once it holds the whole prefix it installs it and
//! executes the RECONFIGURATION, which moves it like every other replica of the old
//! epoch. Either way (the old group finishing, or the fetch) it leaves the old epoch only
//! by executing the op that ends it.
//!
//! Why no op is lost or given two meanings:
//! - the RECONFIGURATION commits in the old epoch (f+1 of its replicas hold it), and no
//!   op follows it there, so the old epoch's log ends at it for good: a view change in
//!   the old epoch picks a log holding it (its topmost entry), commits and executes it;
//! - a replica stops acting in the old epoch once it executed the RECONFIGURATION, and
//!   the old epoch needs f+1 replicas to act, so at most f can go on in it: not enough to
//!   commit anything (paper 7.2, "replicas of the old group drop messages of an older
//!   epoch");
//! - every member of the new epoch starts it from the committed prefix up to the
//!   RECONFIGURATION: those that execute it hold the prefix, those that transition fetch
//!   it (committed entries only) before they vote. A view change of the new epoch
//!   therefore never chooses a log that lacks an op of the old epoch;
//! - a replaced replica shuts down only after f'+1 members durably started the epoch
//!   (EpochStarted waits for the writes of its input), so the old epoch's state survives
//!   in the new one whatever f' members of it lose.
//!
//! Messages carry their sender's epoch. One from an earlier epoch is dropped; if it came
//! from a replica of an epoch this replica knows, the sender is told where the cluster
//! went (a StartEpoch, at most one per tick); a client is answered NewEpoch with the
//! current configuration.

use super::*;

/// The state of an epoch's start that the replicas of it keep: who said they started,
/// whom to remind, and (retiring) whether enough have started.
#[derive(Clone, Debug, Default)]
pub(super) struct EpochTransfer {
    /// Members of the current configuration, by index, that said they started it.
    started: ReplicaSet,
    /// Members to remind with StartEpoch until they say they started.
    remind: ReplicaSet,
    /// Retiring: f'+1 members started the epoch; the driver may shut this replica down.
    pub retired: bool,
    /// Transitioning: the replica that told this one of the epoch (asked first).
    told_by: Option<ReplicaId>,
    /// Transitioning after a restart from a store of this epoch: the replica may have
    /// started the epoch before the crash and led its view, its pipeline since lost (the
    /// store's commit number below the start says only that the batches that carried
    /// the start's commit were not durable). It does not resume that view as its
    /// primary (`finish_transition`).
    pub restarted_in_epoch: bool,
    /// Transitioning: rotates over the replicas asked for the epoch's state.
    next_source: usize,
    /// The tick of the last StartEpoch sent to a replica of an earlier epoch.
    hint_tick: Option<u64>,
    /// A later epoch this replica learned of while normal or changing views in its own:
    /// the committed prefix up to its start, fetched aside.
    pending: Option<PendingEpoch>,
    /// Transitioning with committed state past the epoch's start: it holds the start,
    /// and waits to hear of a view of the epoch that started (see `finish_transition`).
    past_start: bool,
    /// A witness of this epoch that was active in the one before keeps the state at the
    /// start until f'+1 of this epoch's actives executed it (`take_up_role`).
    pub hands_over_state: bool,
    /// The RECONFIGURATION about to execute was installed from a pending fetch (the
    /// log after the commit number replaced by the later epoch's committed entries),
    /// not reached in this replica's own view.
    start_fetched: bool,
    /// An active of this epoch that was a witness of the one before: the committed
    /// entries of its witness log, kept until its own log reaches them (`take_up_role`),
    /// in its store too (`Write::FormerWitnessLog`).
    pub(super) former_witness_log: Option<FormerWitnessLog>,
}

/// A later epoch whose start a replica of the old one is fetching (see the module docs).
impl EpochTransfer {
    /// The members of a later epoch whose start this replica fetches, if any.
    pub(super) fn pending_configuration(&self) -> Option<&Configuration> {
        self.pending.as_ref().map(|pending| &pending.configuration)
    }
}

#[derive(Clone, Debug)]
struct PendingEpoch {
    /// The epoch's members: whom to ask.
    configuration: Configuration,
    /// The op its RECONFIGURATION is at: the prefix to fetch.
    start: Op,
    /// Asked next (the StartEpoch's sender first, then each member in turn).
    source: ReplicaId,
    next_source: usize,
    /// Committed state after this replica's commit number, fetched so far.
    fetch: Option<state_transfer::Fetched>,
}

impl<S: StateMachine> Replica<S> {
    /// Whether the replica's epoch status refuses `body` (`None`: handle it). A
    /// transitioning replica takes only the state it fetches; a retiring one only serves
    /// state transfer, counts EpochStarted and answers clients.
    pub(super) fn epoch_status_refuses(&self, body: &Body) -> Option<&'static str> {
        match self.status {
            // A former witness also serves the entries it kept (`former_witness_answer`).
            Status::Transitioning => {
                let served = match body {
                    Body::NewState(_) => true,
                    Body::GetState(_) => self.epoch_transfer.former_witness_log.is_some(),
                    _ => false,
                };
                (!served).then_some("transitioning: fetching the epoch's starting state")
            }
            Status::Retiring => (!matches!(
                body,
                Body::GetState(_) | Body::EpochStarted | Body::Request(_)
            ))
            .then_some("retiring: not a member of the epoch"),
            _ => None,
        }
    }

    /// A message from an earlier epoch (see the module docs).
    pub(super) fn on_earlier_epoch(&mut self, message: Message, effects: &mut Vec<Effect>) {
        if let Body::Request(request) = &message.body {
            return self.answer_new_epoch(request, effects);
        }
        // The first configuration is known without history (identities `0..n` of the
        // cluster's replica count): a replica restarted from its store keeps only its
        // current configuration, and must still be able to tell a member left in the
        // first epoch (restarted from an older store, say) where the cluster went.
        let initial = Configuration::first(&self.config);
        let Some(earlier) = self
            .configuration_of(message.epoch)
            .or((message.epoch == 0).then_some(&initial))
        else {
            return self.tell_every_other_replica(&message, effects);
        };
        let sender = Some(earlier)
            .filter(|configuration| configuration.contains(message.replica))
            .map(|configuration| configuration.id_of(message.replica));
        let Some(sender) = sender.filter(|&sender| sender != self.id) else {
            return self.drop_message(&message, "earlier epoch, unknown sender");
        };
        let asker_is_witness = earlier.is_witness(message.replica);
        if let Body::GetState(get_state) = message.body {
            // A replica of the old epoch fetching the prefix up to this epoch's start:
            // committed state only (its log is another epoch's). A witness of that epoch
            // is answered as witnesses are, with entries from this log's base, never a
            // checkpoint (paper 6.1: it needs entries, never state).
            let for_witness = asker_is_witness;
            if let Some(new_state) = self.new_state_for(get_state, self.commit, for_witness) {
                self.send_to_id(sender, Body::NewState(new_state), effects);
            }
            // The asker may also be transitioning into the old epoch, which cannot take
            // state of this one (and may be no member of it): tell it where the cluster
            // went too, as for any message of an earlier epoch (paper 7.3). A replica
            // normal in the old epoch that already fetches this epoch's start ignores it.
        }
        if self.epoch_transfer.hint_tick == Some(self.ticks) {
            return self.drop_message(&message, "earlier epoch (already told this tick)");
        }
        self.epoch_transfer.hint_tick = Some(self.ticks);
        self.drop_message(&message, "earlier epoch: telling the sender");
        self.send_start_epoch(sender, effects);
    }

    /// A message of an earlier epoch whose members this replica no longer knows (a
    /// restart from its store keeps only the current configuration): its sender is one
    /// of the identities below `next_id`, a replaced replica or a member of this epoch
    /// that has not moved to it yet (it missed the RECONFIGURATION's commit, and the
    /// StartEpochs sent to it were lost). Each of them is told where the cluster went (at
    /// most once a tick), as paper 7 asks for the sender of any message of an older
    /// epoch: without it, a replaced replica left behind would never learn that it may
    /// retire, and a member left behind would never join (seed 1003951: the only other
    /// member of the epoch, restarted from its store, was the only one it could hear
    /// from). A member already in the epoch ignores the StartEpoch. A StartEpoch says
    /// only what is committed.
    fn tell_every_other_replica(&mut self, message: &Message, effects: &mut Vec<Effect>) {
        if self.epoch_transfer.hint_tick == Some(self.ticks) {
            return self.drop_message(message, "earlier epoch (already told this tick)");
        }
        self.epoch_transfer.hint_tick = Some(self.ticks);
        self.drop_message(
            message,
            "earlier epoch, members unknown: telling every other replica",
        );
        for id in 0..self.configuration.next_id() {
            if id != self.id {
                self.send_start_epoch(id, effects);
            }
        }
    }

    /// Answers a client that asked a replica of the wrong epoch (or one that retired):
    /// the current configuration.
    pub(super) fn answer_new_epoch(&self, request: &Request, effects: &mut Vec<Effect>) {
        self.tell_new_epoch(request.client, request.session, request.request, effects);
    }

    /// Tells a client's request `request` of session `session` where the cluster is.
    fn tell_new_epoch(
        &self,
        client: ClientId,
        session: Session,
        request: RequestNumber,
        effects: &mut Vec<Effect>,
    ) {
        let reply = Reply {
            client,
            session,
            request,
            op: 0,
            status: ReplyStatus::NewEpoch,
            result: self.configuration.to_bytes(),
        };
        self.send_reply(reply, effects);
    }

    fn send_start_epoch(&self, to: ReplicaId, effects: &mut Vec<Effect>) {
        // Where the epoch started, or an op past it: a receiver that fetches up to a later
        // op only waits longer (the RECONFIGURATION at the real start moves it, and
        // execution stops there). Unknown here when the replica recovered into the epoch
        // from a configuration an operator gave it; then its commit number, past the start
        // for a replica normal in the epoch, will do.
        let op = match self.status {
            _ if self.epoch_start > 0 => self.epoch_start,
            Status::Normal | Status::ViewChange if self.commit > 0 => self.commit,
            _ => return,
        };
        let start_epoch = StartEpoch {
            sender: self.id,
            op,
            configuration: self.configuration.clone(),
        };
        self.send_to_id(to, Body::StartEpoch(start_epoch), effects);
    }

    /// A RECONFIGURATION executed in this input moves the replica once the input's
    /// handler is done (called first thing by `end_input`), so that no handler sees the
    /// epoch change under its feet.
    pub(super) fn finish_epoch_change(&mut self, effects: &mut Vec<Effect>) {
        if self.epoch_change.is_none() {
            return; // The hot path: one test, no move of the option.
        }
        let next = *self.epoch_change.take().expect("tested above");
        if self.log.op() > self.commit {
            // Entries past the RECONFIGURATION are of the next epochs (committed ones a
            // fetch brought; no correct primary orders one in the old epoch): the move
            // comes first, and they are fetched again in the new epoch.
            self.log.truncate(self.commit);
        }
        let old = self.configuration.clone();
        // Paper 7.1 step 3 is the step of the primary that committed the RECONFIGURATION
        // in its view. A primary of an older view that fetched it (a pending epoch) holds
        // committed entries in place of its view's log: a Commit in its view would tell
        // that view's backups to execute their own entries at those ops, which another
        // view may have replaced.
        let was_primary = self.is_primary() && !self.epoch_transfer.start_fetched;
        self.epoch_transfer.start_fetched = false;
        let turned_away = std::mem::take(&mut self.primary.turned_away);
        let start = self.commit;
        if was_primary {
            // Paper 7.1 step 3: the old group learns of the commit from its primary (in
            // the old epoch: the backups execute the RECONFIGURATION and move too).
            let commit = Message {
                epoch: old.epoch(),
                view: self.view,
                replica: self.index,
                body: Body::Commit(Commit {
                    commit: start,
                    actives_commit: 0,
                    stamp: 0,
                }),
            };
            for id in old.ids().filter(|&id| id != self.id) {
                effects.push(Effect::Send {
                    to: id,
                    message: commit.clone(),
                });
            }
        }
        let member = next.contains_id(self.id);
        // Members of the new epoch that were not in the old one learn of it from the old
        // primary now, and from every replica of it later until they answer.
        let mut remind = ReplicaSet::default();
        for (index, id) in next.ids().enumerate() {
            if !member || !old.contains_id(id) || was_witness_in(&old, id) {
                remind.insert(index as ReplicaIndex);
            }
        }
        if self.status == Status::Joining && !member {
            // A learner of a change that does not add it yet: it learns from the new
            // members now.
            self.configuration = next;
            return;
        }
        self.move_to_epoch(next, start);
        self.epoch_transfer.remind = remind;
        tracing::info!(
            replica = self.id,
            epoch = self.configuration.epoch(),
            op = start,
            member,
            "reconfiguration committed: moved to the next epoch"
        );
        if member {
            // Only a replica that executed the RECONFIGURATION gets here, so never a
            // witness of the old epoch (whose commit number `take_up_role` resets when it
            // becomes active; witnesses move in `witness_enters_epoch`).
            assert_eq!(
                self.commit, start,
                "a member that executed the start holds it"
            );
            self.status = Status::Transitioning; // Left at once: the replica holds the start.
            self.enter_normal();
            self.epoch_transfer.started.insert(self.index);
            for id in old.ids().filter(|&id| !self.configuration.contains_id(id)) {
                self.send_to_id(id, Body::EpochStarted, effects);
            }
        } else {
            self.enter_retiring();
        }
        if was_primary {
            for index in self.configuration.indexes() {
                if remind.contains(index) {
                    self.send_start_epoch(self.configuration.id_of(index), effects);
                }
            }
            // The old epoch's witnesses that leave execute no RECONFIGURATION either:
            // they learn that they may retire from this StartEpoch (or, if it is lost,
            // from the answer to their next message of the old epoch).
            for id in old.ids().filter(|&id| !self.configuration.contains_id(id)) {
                if was_witness_in(&old, id) {
                    self.send_start_epoch(id, effects);
                }
            }
        }
        // The epoch exists now: the requests turned away meanwhile learn where it is.
        for (client, (session, request)) in turned_away {
            self.tell_new_epoch(client, session, request, effects);
        }
        if !remind.is_empty() {
            self.start_epoch_timeout.start();
        }
    }

    /// Installs `configuration` as the current one, starting after `start`: the old one
    /// joins the history, views start again at 0, and the role state is rebuilt for the
    /// new member count. The caller sets the status.
    fn move_to_epoch(&mut self, configuration: Configuration, start: Op) {
        assert!(
            configuration.epoch() > self.configuration.epoch() || self.status == Status::Joining
        );
        let was_witness = self.is_witness();
        // A witness still handing its epoch's start over holds the state at that start.
        let handed_over_from = self.hands_over_state().then_some(self.epoch_start);
        // An active member that holds the state at the start (it executed the
        // RECONFIGURATION there): what it hands over if it becomes a witness.
        let held_start = !was_witness
            && self.index != NOT_A_MEMBER
            && self.status != Status::Joining
            && self.commit == start;
        if self.status != Status::Joining {
            let old = std::mem::replace(&mut self.configuration, configuration);
            if self.history.len() == HISTORY_MAX {
                self.history.pop_front();
            }
            self.history.push_back(old);
        } else {
            self.configuration = configuration;
        }
        self.install_configuration(start);
        // The role it retires from, for as long as it serves (`holds_service_state`).
        self.retired_as_witness =
            self.index == NOT_A_MEMBER && (was_witness || self.retired_as_witness);
        if !self.configuration.witnesses().is_empty() {
            // The actives' commit counts this epoch's actives: f'+1 of them executed the
            // ops up to it. The old epoch's number counted replicas that may hold no
            // state here (a witness now, one replaced, one that failed since), while
            // this epoch's actives may not hold the start yet: trimming by it let a
            // witness give up copies of ops only f' actives held (seed 112006241). It
            // starts again at the log's base, so that the log trims no further until
            // this epoch's primary reports a higher number (and a restart puts back no
            // entry trimmed already: `restart` keeps the entries above it).
            self.actives_commit_heard = self.actives_commit_heard.min(self.log.base());
        }
        self.actives_commit_of_epoch = 0;
        self.view = 0;
        self.last_normal_view = 0;
        self.asks = ViewChangeAsks::default();
        self.new_cluster = false;
        *self.epoch_transfer = EpochTransfer {
            hint_tick: self.epoch_transfer.hint_tick,
            ..EpochTransfer::default()
        };
        self.stop_all_timeouts();
        self.start_epoch_timeout.stop();
        self.state_transfer_timeout.stop();
        self.state_transfer_pending = false;
        self.stats.epochs_started += 1;
        self.take_up_role(was_witness, held_start, handed_over_from);
        if self.configuration.witnesses().is_empty() {
            // The log may hold the entries an earlier epoch kept above its actives'
            // commit for its witnesses, up to that epoch's larger bound: trim them now,
            // by the checkpoint, as the next build would, for the next build may come
            // after the log passes this epoch's bound (seed 9000207). Not in an epoch
            // with witnesses: the actives' commit heard is the old epoch's, and the new
            // actives may still need the entries up to the start from these logs (seed
            // 8000651); there the new primary's reports move the trim.
            self.trim_log();
        }
    }

    /// Paper 6.1 across an epoch boundary (ARCHITECTURE.md, "Changing members"): what the
    /// replica holds must suit its role in the configuration it just installed.
    ///
    /// - A witness now: it keeps its log and its commit number, which is all a witness
    ///   holds, executes nothing more, and drops the service's state, its checkpoint and
    ///   its client table. An active of the old epoch that executed the RECONFIGURATION
    ///   (`held_start`) may be one of the few replicas that hold the start as state (all
    ///   the old actives may become witnesses): it keeps it, serving it to the epoch's
    ///   actives as a retiring replica does (7.3), until the actives' commit of the new
    ///   epoch reaches the start (f'+1 of its actives executed it: `end_hand_over`). A
    ///   learner's state is not needed (the old epoch's replicas serve the start): it
    ///   drops it at once.
    /// - A member now (active, or a witness again) that was a witness still handing its
    ///   start over: that state is its basis (`resume_from_handed_over_state`).
    /// - An active now that was a witness: its commit number counted ops it never
    ///   executed, over a service still in its first state. It starts again from op 0,
    ///   as a new member does, so that it executes (or installs a checkpoint of)
    ///   everything up to the start before it votes (paper 7.2); nothing ever executes
    ///   on its empty service as if it were the state at its old commit number. The
    ///   committed entries of its log are kept aside meanwhile ([`FormerWitnessLog`]).
    fn take_up_role(&mut self, was_witness: bool, held_start: bool, handed_over_from: Option<Op>) {
        let member = self.index != NOT_A_MEMBER;
        if let Some(old_start) = handed_over_from.filter(|_| was_witness && member) {
            if self.resume_from_handed_over_state(old_start) {
                if self.is_witness() {
                    // A witness again: it hands the new start over in turn, until this
                    // epoch's actives hold it.
                    self.epoch_transfer.hands_over_state = true;
                }
                return;
            }
        }
        if was_witness {
            // A witness that still handed the start of its epoch over: that epoch ran
            // its course (its actives executed this RECONFIGURATION, and hold this
            // epoch's start or serve it as they retire), so it is needed no more.
            self.drop_service_state();
        }
        // Without a checkpoint its state is its log from op 1, kept the same way (seed
        // 1003112: dropped at once, it left two disks of five holding the ops it held).
        let holds_state = self.checkpoint.is_some() || self.log.base() == 0;
        if self.is_witness() && held_start && holds_state {
            self.epoch_transfer.hands_over_state = true;
            tracing::info!(
                replica = self.id,
                epoch = self.configuration.epoch(),
                "a witness in this epoch: keeps the start's state until the actives hold it"
            );
        } else if self.is_witness() {
            self.drop_service_state();
        } else if was_witness && self.index != NOT_A_MEMBER {
            let base = self.log.base();
            let entries = self.log.slice(base + 1, self.commit, usize::MAX);
            debug_assert_eq!(base + entries.len() as Op, self.commit);
            self.epoch_transfer.former_witness_log = Some(FormerWitnessLog { base, entries });
            self.log.reset(0, 0);
            self.commit = 0;
            tracing::info!(
                replica = self.id,
                epoch = self.configuration.epoch(),
                "a witness of the epoch before is active in this one: fetching the state from op 0"
            );
        }
    }

    /// A witness that still handed its epoch's start over (its service holds the state at
    /// `old_start`, executed as the active it was) and is a member of this epoch: that
    /// state is its basis (a witness again hands the new start over in turn). Its log
    /// runs from there through this epoch's start, committed (a witness moves at its
    /// commit number), so it executes those entries and holds the start. Dropping the
    /// state to fetch everything from op 0 instead gave up, while a replica was down and
    /// another's writes were pending, copies only one other disk held (seeds 118000114,
    /// 120009306, 121007684, 127002416). Returns false, changing nothing, when its log
    /// does not run unbroken from `old_start` to the start.
    fn resume_from_handed_over_state(&mut self, old_start: Op) -> bool {
        let start = self.epoch_start;
        let unbroken = self.checkpoint_op() <= old_start
            && self.log.base() <= old_start
            && self.log.op() >= start
            && self.commit >= start
            && old_start <= start;
        if !unbroken {
            return false;
        }
        self.log.truncate(start);
        self.commit = old_start;
        // Replies go nowhere: the clients retry and get them from the client table.
        let mut replies = Vec::new();
        if self.is_witness() {
            // As a restarted witness resuming its hand-over does (`restart`).
            self.execute_handed_over_state_to(start, &mut replies);
        } else {
            self.commit_to(start, &mut replies);
        }
        self.build_checkpoint_now();
        debug_assert!(
            self.epoch_change.is_none(),
            "the start's RECONFIGURATION is this epoch's"
        );
        tracing::info!(
            replica = self.id,
            epoch = self.configuration.epoch(),
            from = old_start,
            to = start,
            "a witness that handed the start over is active in this epoch: executed its log to the new start"
        );
        true
    }

    /// A replica that becomes a witness returns its service to the first state and
    /// forgets its checkpoint and client table (paper 6.1: a witness holds no service
    /// state); its store drops the checkpoint too (`Write::CheckpointDropped`).
    pub(super) fn drop_service_state(&mut self) {
        self.writes.forget_checkpoint();
        if self.checkpoint.is_none() && self.building.is_none() && self.clients.is_empty() {
            return;
        }
        self.building = None;
        self.checkpoint = None;
        self.clients = ClientTable::new(self.config.clients_max as usize);
        if let Err(error) = self.service.restore(&self.fresh_service) {
            tracing::warn!(replica = self.id, %error, "the service's first state does not restore");
        }
        tracing::info!(
            replica = self.id,
            epoch = self.configuration.epoch(),
            "a witness in this epoch: dropped the service's state"
        );
    }

    /// Derives what follows from the current configuration: this replica's index in it,
    /// and the per-member state sized for it. Also used by a restart.
    pub(super) fn install_configuration(&mut self, start: Op) {
        self.epoch_start = start;
        self.index = self.configuration.index_of(self.id).unwrap_or(NOT_A_MEMBER);
        let n = self.configuration.replica_count() as usize;
        self.heard_tick = vec![self.ticks; n];
        self.primary = Primary::new(n);
        self.view_changing = ViewChanging::new(n);
    }

    /// Paper 7.3: not a member of the current epoch. Serves state transfer until f'+1
    /// members started the epoch.
    pub(super) fn enter_retiring(&mut self) {
        assert_eq!(self.index, NOT_A_MEMBER);
        self.status = Status::Retiring;
        self.recovery = None;
        self.stop_all_timeouts();
        let mut remind = ReplicaSet::default();
        for index in self.configuration.indexes() {
            remind.insert(index);
        }
        self.epoch_transfer.remind = remind;
        self.start_epoch_timeout.start();
        tracing::info!(
            replica = self.id,
            epoch = self.configuration.epoch(),
            "not a member of the new epoch: serving state until it started"
        );
    }

    /// A learner told of an epoch that does not hold it but gave out its identity
    /// (`next_id` is past it): a change it never saw added it and a later one removed it
    /// (it restarted from a store of before the first, say), or the identity went to
    /// another replica. Identities are never reused, so it can never be a member under
    /// this one: it retires at once (it holds nothing the epoch needs). Without this it
    /// stayed a learner forever, having installed a checkpoint past the RECONFIGURATION
    /// that added it instead of executing it (seed 1017359).
    fn retire_used_up_learner(&mut self, configuration: Configuration, op: Op) {
        tracing::warn!(
            replica = self.id,
            epoch = configuration.epoch(),
            "this learner's identity was given out by a reconfiguration it missed, and is not a member: retiring (join again to be added)"
        );
        self.move_to_epoch(configuration, op);
        self.enter_retiring();
        self.stop_all_timeouts();
        self.start_epoch_timeout.stop();
        self.epoch_transfer.retired = true;
    }

    /// Paper 7.2 step 1 (and a replica that missed the end of its epoch): a StartEpoch.
    pub(super) fn on_start_epoch(
        &mut self,
        epoch: u32,
        start_epoch: StartEpoch,
        effects: &mut Vec<Effect>,
    ) {
        let StartEpoch {
            sender,
            op,
            configuration,
        } = start_epoch;
        let well_formed = configuration.epoch() == epoch
            && epoch > 0
            && op > 0
            && sender != self.id
            && configuration.is_well_formed();
        if !well_formed {
            return self.drop_reason("start_epoch", "malformed");
        }
        let current = self.configuration.epoch();
        if self.status != Status::Joining && epoch < current {
            // A replica still in an earlier epoch (a replaced one reminding the members
            // of the epoch it left for, which have all moved on since): tell it where the
            // cluster is, as for any message of an earlier epoch, or it would wait for
            // EpochStarted answers that no member of its epoch is left to send.
            if self.epoch_transfer.hint_tick != Some(self.ticks) {
                self.epoch_transfer.hint_tick = Some(self.ticks);
                self.send_start_epoch(sender, effects);
            }
            return self.drop_reason("start_epoch", "earlier epoch");
        }
        if self.status != Status::Joining && epoch == current {
            // A reminder: answer it once this replica holds the epoch's start.
            return match self.status {
                Status::Normal | Status::ViewChange => {
                    self.send_to_id(sender, Body::EpochStarted, effects)
                }
                Status::Transitioning => {
                    self.epoch_transfer.told_by.get_or_insert(sender);
                    if !self.state_transfer_pending {
                        self.request_epoch_state(effects);
                    }
                }
                Status::Recovering | Status::Retiring | Status::Joining => {
                    self.drop_reason("start_epoch", "not started")
                }
            };
        }
        let member = configuration.contains_id(self.id);
        if self.status == Status::Joining && !member {
            if self.id < configuration.next_id() {
                return self.retire_used_up_learner(configuration, op);
            }
            return self.drop_reason("start_epoch", "an epoch without this replica");
        }
        // Only the next epoch: one further on started after the next one did, so this
        // replica's epoch ended long ago (its RECONFIGURATION committed, nothing follows
        // it, 7.1) and needs its log no more; and executing the committed prefix here
        // could not cross the RECONFIGURATIONs in between (a checkpoint fetched past one
        // skips it, leaving the replica in its epoch with ops of later ones). It moves
        // straight to that epoch below, transitioning, with committed entries only.
        if matches!(self.status, Status::Normal | Status::ViewChange) && epoch == current + 1 {
            return self.start_pending_epoch(sender, op, configuration, effects);
        }
        tracing::info!(
            replica = self.id,
            from_epoch = current,
            epoch,
            op,
            member,
            status = ?self.status,
            "learned of a later epoch"
        );
        let recovering = self.status == Status::Recovering;
        let nonce = self.recovery.as_ref().map(|recovery| recovery.nonce);
        self.move_to_epoch(configuration, op);
        self.recovery = None;
        if !member {
            return self.enter_retiring();
        }
        if let (true, Some(nonce)) = (recovering, nonce) {
            // A replica that lost its memory may have taken part in this epoch already:
            // only the recovery protocol, in this epoch, can tell it what it promised.
            self.status = Status::Transitioning; // `start_recovering` enters from here.
            return self.start_recovering(recovery::next_nonce(nonce));
        }
        // Only committed entries are certain to belong to the new epoch's start; the rest
        // are fetched again. (This replica acted in nothing beyond them: it was joining,
        // transitioning or retiring; or its epoch ended two epochs ago.)
        self.log.truncate(self.commit);
        self.status = Status::Transitioning;
        self.primary = Primary::new(self.configuration.replica_count() as usize);
        self.epoch_transfer.told_by = Some(sender);
        self.continue_transition(effects);
    }

    /// A replica normal (or changing views) in its epoch learned that a later one began:
    /// it fetches the committed prefix up to the later epoch's start aside, and stays in
    /// its epoch meanwhile (module docs).
    fn start_pending_epoch(
        &mut self,
        sender: ReplicaId,
        start: Op,
        configuration: Configuration,
        effects: &mut Vec<Effect>,
    ) {
        if self.is_witness() && start == self.commit {
            // A witness executes nothing, the RECONFIGURATION included: it moves once it
            // knows both that the op committed and that the epoch began.
            return self.witness_enters_epoch(sender, start, configuration, effects);
        }
        if start <= self.commit {
            // A correct replica executing up to the start would have moved already: the
            // sender does not know where its epoch started (it recovered into it).
            return self.drop_reason("start_epoch", "a start this replica has passed");
        }
        if let Some(pending) = &self.epoch_transfer.pending {
            if pending.configuration.epoch() >= configuration.epoch() {
                return self.drop_reason("start_epoch", "already fetching that epoch's start");
            }
        }
        tracing::info!(
            replica = self.id,
            epoch = configuration.epoch(),
            start,
            commit = self.commit,
            "a later epoch began: fetching its start"
        );
        self.epoch_transfer.pending = Some(PendingEpoch {
            configuration,
            start,
            source: sender,
            next_source: 0,
            fetch: None,
        });
        self.request_pending_state(effects);
        self.start_epoch_timeout.start();
    }

    /// Asks a replica of the pending epoch for committed state after what is fetched.
    fn request_pending_state(&mut self, effects: &mut Vec<Effect>) {
        let commit = self.commit;
        let is_witness = self.is_witness();
        let Some(pending) = self.epoch_transfer.pending.as_mut() else {
            return;
        };
        let op = state_transfer::fetched_end(&pending.fetch, commit);
        let to = pending.source;
        let ids: Vec<ReplicaId> = pending
            .configuration
            .ids()
            .filter(|&id| id != self.id)
            .collect();
        pending.source = ids[pending.next_source % ids.len()];
        pending.next_source += 1;
        // Asked as a member of the later epoch when its role there is the one it has
        // now: a witness there is answered as a witness (entries, never a checkpoint:
        // paper 6.1), which an active here cannot take (it skips no ops).
        let as_member = pending
            .configuration
            .index_of(self.id)
            .filter(|&index| pending.configuration.is_witness(index) == is_witness);
        let learner = match as_member {
            Some(_) => None,
            // Not a member of the later epoch (or one in another role): it names itself,
            // as a learner does, so that a replica that no longer knows this replica's
            // epoch (a restart from its store keeps only the current configuration) can
            // still answer it with committed state, which is all a pending fetch takes.
            None => Some(self.id),
        };
        let body = Body::GetState(GetState { op, learner });
        match as_member {
            // Asked as a member of the later epoch: its replicas know it there, whatever
            // they know of the epoch before (one that recovered into it knows nothing).
            Some(index) => effects.push(Effect::Send {
                to,
                message: Message {
                    epoch: pending.configuration.epoch(),
                    view: 0,
                    replica: index,
                    body,
                },
            }),
            None => self.send_to_id(to, body, effects),
        }
    }

    /// Committed state from a replica of the pending epoch (its envelope names that
    /// epoch).
    pub(super) fn on_pending_epoch_state(
        &mut self,
        epoch: u32,
        from: ReplicaIndex,
        new_state: ReceivedState,
        effects: &mut Vec<Effect>,
    ) {
        // Only a witness asked as a witness of the later epoch (`request_pending_state`)
        // is answered from the senders' log bases; one asked as a learner is answered
        // with a checkpoint below them. So a learner's answer that starts past its
        // commit number without one answers another question: a GetState it sent in its
        // own view after its log's end, answered once the sender moved on. Skipping to
        // it gave up the entries this replica held past its commit number, committed
        // ones among them (seed 94005116: a replaced witness's copy of the
        // RECONFIGURATION, one of two). It asks again from its commit number instead.
        // The same holds of a witness's answer from a replaced replica (`NOT_A_MEMBER`):
        // it is asked nothing as a witness (the members are), so its answer is to a
        // GetState of this replica's own view, after its log's end (seed 107001476: the
        // witness's copies of the last ops and of the RECONFIGURATION, given up, left one
        // disk holding them).
        let skips_gaps = from != NOT_A_MEMBER
            && self.is_witness()
            && self.epoch_transfer.pending.as_ref().is_some_and(|pending| {
                let configuration = &pending.configuration;
                (configuration.index_of(self.id))
                    .is_some_and(|index| configuration.is_witness(index))
            });
        let Some(pending) = self
            .epoch_transfer
            .pending
            .as_mut()
            .filter(|pending| pending.configuration.epoch() == epoch)
        else {
            return self.drop_reason("new_state", "later epoch");
        };
        if !new_state.is_well_formed() {
            return self.drop_reason("new_state", "malformed");
        }
        if new_state
            .checkpoint
            .as_ref()
            .is_some_and(|checkpoint| checkpoint.op >= pending.start)
        {
            // The prefix is trimmed everywhere: the new epoch checkpointed past its start.
            return self.adopt_from_checkpoint(new_state, effects);
        }
        let base = new_state.op_first - 1;
        // Only past this replica's own log: an answer that starts right after it (or
        // inside it) is as likely one to a GetState of its own view after its log's end,
        // from a member that moved on since, and skipping gave up the copies it holds of
        // the last ops (seed 117000184, a member's answer; 107001476, a replaced
        // replica's). The members asked again answer from their log bases.
        if skips_gaps
            && new_state.checkpoint.is_none()
            && base >= pending.start
            && base <= new_state.commit
            && base > self.log.op()
        {
            // A witness is answered as one, from the senders' log bases: past the start,
            // the new epoch's actives executed it (and trimmed it), as above.
            if self.commit == pending.start {
                // Its own commit number reached the start meanwhile: it moves now.
                let pending = self.epoch_transfer.pending.take().expect("matched above");
                let (sender, configuration) = (pending.source, pending.configuration);
                return self.witness_enters_epoch(sender, pending.start, configuration, effects);
            }
            return self.adopt_from_checkpoint(new_state, effects);
        }
        let usable_last = new_state.commit.min(pending.start);
        // A witness is answered as one (entries from the sender's log base, never a
        // checkpoint) and skips the committed ops below them, as it does in its epoch.
        let grew = state_transfer::merge_fetched(
            &mut pending.fetch,
            self.commit,
            new_state,
            usable_last,
            skips_gaps,
        );
        if state_transfer::fetched_end(&pending.fetch, self.commit) < pending.start {
            if grew {
                self.request_pending_state(effects);
            }
            return;
        }
        let pending = self.epoch_transfer.pending.take().expect("matched above");
        let start = pending.start;
        let Some(fetch) = pending.fetch else {
            if self.is_witness() && self.commit == start {
                // Its own commit number reached the start meanwhile: it moves now.
                let (sender, configuration) = (pending.source, pending.configuration);
                return self.witness_enters_epoch(sender, start, configuration, effects);
            }
            // Its own commit number reached the start meanwhile: nothing to install.
            return self.drop_reason("new_state", "the start is committed here already");
        };
        if self.is_witness() && !fetch_ends_in(&fetch, start, &pending.configuration) {
            // A witness moves at the op the StartEpoch named without executing anything
            // that would stop it at the RECONFIGURATION: that op must be it. It is not
            // when the sender recovered into the epoch and named its commit number
            // (`send_start_epoch`); the ops fetched past the start are another epoch's,
            // and none is installed. Another StartEpoch (a reminder) names the start.
            return self.drop_reason("new_state", "a witness told an op that is not the start");
        }
        // Committed entries replace whatever this replica holds after its commit number:
        // where they differ, its own are from a view that lost them.
        let op_first = fetch.op_first;
        let has_checkpoint = fetch.checkpoint.is_some();
        if let Some(checkpoint) = fetch.checkpoint.filter(|c| c.op > self.commit) {
            if !self.restore_checkpoint(checkpoint) {
                return self.drop_reason("new_state", "corrupt checkpoint");
            }
        }
        self.log.truncate(self.commit);
        if !has_checkpoint && op_first > self.log.op() + 1 {
            // Only a witness's fetch skips (`merge_fetched`): committed ops it holds none
            // of, below the sender's log base.
            assert!(self.is_witness(), "a gap in an active's fetch");
            let timestamp = witness::witness_base_timestamp(&fetch.entries);
            self.witness_skip_to(op_first - 1, timestamp);
        }
        for (index, entry) in fetch.entries.into_iter().enumerate() {
            let op = fetch.op_first + index as Op;
            if op > self.log.op() && op <= start {
                self.log.push(entry);
            }
        }
        assert!(self.log.op() >= start);
        self.log.truncate(start);
        self.start_epoch_timeout.stop();
        self.epoch_transfer.start_fetched = true;
        // Executing the RECONFIGURATION at `start` moves this replica (at the end of
        // this input).
        self.commit_to(start, effects);
        if self.is_witness() {
            // A witness executed nothing: the fetched op at `start` is the RECONFIGURATION
            // (checked above), so the epoch began there.
            self.epoch_transfer.start_fetched = false;
            let (sender, configuration) = (pending.source, pending.configuration);
            self.witness_enters_epoch(sender, start, configuration, effects);
        }
    }

    /// A witness of the epoch before `configuration`'s, normal (or changing views) in it,
    /// holds the log up to the RECONFIGURATION at `start`, committed, and knows that the
    /// epoch began (a StartEpoch from `sender`): it moves there as the replicas that
    /// execute the RECONFIGURATION do (`finish_epoch_change`). A witness then, it holds
    /// the start already (its log; nothing below it is asked of a witness of the new
    /// epoch) and is normal at once; an active now, it holds no state and fetches it from
    /// op 0 (`take_up_role`); not a member, it retires.
    ///
    /// Why `start` is the epoch's start: a StartEpoch names the start or, from a replica
    /// that recovered into the epoch, its commit number, past the start; and no op of the
    /// old epoch follows its RECONFIGURATION (7.1), so a witness's commit number in the
    /// old epoch is at most the start. The callers move it only when its commit number
    /// is the op named (or the entry fetched there is the RECONFIGURATION).
    fn witness_enters_epoch(
        &mut self,
        sender: ReplicaId,
        start: Op,
        configuration: Configuration,
        effects: &mut Vec<Effect>,
    ) {
        debug_assert!(
            self.is_witness() && matches!(self.status, Status::Normal | Status::ViewChange)
        );
        assert_eq!(self.commit, start, "a witness moves from the start only");
        if let Some(entry) = self.log.get(start) {
            let names_it = entry.operation == Operation::Reconfigure
                && Configuration::from_bytes(&entry.body).as_ref() == Some(&configuration);
            if !names_it {
                return self.drop_reason("start_epoch", "the op named is not the RECONFIGURATION");
            }
        }
        if self.configuration.check_successor(&configuration).is_err() {
            return self.drop_reason("start_epoch", "not a successor of this configuration");
        }
        // Entries past the commit number are from a view that lost them: the old epoch's
        // log ends at its RECONFIGURATION.
        self.log.truncate(start);
        let old = self.configuration.clone();
        let member = configuration.contains_id(self.id);
        self.epoch_transfer.pending = None;
        self.move_to_epoch(configuration, start);
        tracing::info!(
            replica = self.id,
            epoch = self.configuration.epoch(),
            op = start,
            member,
            witness = self.is_witness(),
            "a witness learned that the epoch ended at its commit number: moved"
        );
        if !member {
            return self.enter_retiring();
        }
        self.status = Status::Transitioning;
        if self.is_witness() {
            self.enter_normal();
            self.epoch_transfer.started.insert(self.index);
            let replaced = old.ids().filter(|&id| !self.configuration.contains_id(id));
            let told: Vec<ReplicaId> = replaced.chain([sender]).collect();
            for id in told {
                if id != self.id {
                    self.send_to_id(id, Body::EpochStarted, effects);
                }
            }
            return;
        }
        self.epoch_transfer.told_by = Some(sender);
        self.continue_transition(effects);
    }

    /// The pending epoch's replicas hold its start only in a checkpoint past it (for a
    /// witness, asked as one: in logs that start past it): its ops
    /// are committed (f'+1 members of the new epoch acknowledged them, so they hold the
    /// old epoch's state too), and the old epoch needs this replica no more. It installs
    /// the checkpoint and the committed entries after it, and moves to the epoch.
    fn adopt_from_checkpoint(&mut self, new_state: ReceivedState, effects: &mut Vec<Effect>) {
        let pending = self.epoch_transfer.pending.take().expect("a pending epoch");
        let (committed, op_first) = (new_state.commit, new_state.op_first);
        match new_state.checkpoint {
            Some(checkpoint) => {
                if checkpoint.op > self.commit && !self.restore_checkpoint(checkpoint) {
                    self.epoch_transfer.pending = Some(pending);
                    return self.drop_reason("new_state", "corrupt checkpoint");
                }
            }
            None => {
                // A witness's answer: entries from the sender's log base past the start,
                // committed ops below it (`on_pending_epoch_state`).
                assert!(
                    self.is_witness(),
                    "an active's answer without its checkpoint"
                );
                assert!(
                    op_first - 1 > self.commit,
                    "a start committed here moves at once"
                );
                self.log.truncate(self.commit);
                let timestamp = witness::witness_base_timestamp(&new_state.entries);
                self.witness_skip_to(op_first - 1, timestamp);
            }
        }
        self.log.truncate(self.commit);
        for (index, entry) in new_state.entries.into_iter().enumerate() {
            let op = op_first + index as Op;
            if op > self.log.op() && op <= committed {
                self.log.push(entry);
            }
        }
        self.start_epoch_timeout.stop();
        tracing::info!(
            replica = self.id,
            epoch = pending.configuration.epoch(),
            op = self.log.op(),
            "a later epoch began: installed its checkpoint"
        );
        let member = pending.configuration.contains_id(self.id);
        self.move_to_epoch(pending.configuration, pending.start);
        if !member {
            return self.enter_retiring();
        }
        self.status = Status::Transitioning;
        self.epoch_transfer.told_by = Some(pending.source);
        self.commit_to(committed.min(self.log.op()), effects);
        self.continue_transition(effects);
    }

    /// Transitioning: done once the committed state reaches the epoch's start, else asks
    /// for more.
    fn continue_transition(&mut self, effects: &mut Vec<Effect>) {
        assert_eq!(self.status, Status::Transitioning);
        self.take_former_witness_log(effects);
        if self.commit >= self.epoch_start {
            return self.finish_transition(effects);
        }
        self.request_epoch_state(effects);
    }

    /// Asks one replica of the epoch (the one that told us of it first, then each member
    /// in turn) for committed state after what this replica holds. An active asks only
    /// replicas active in the epoch or in the one before: a witness has no
    /// checkpoint to give (paper 6.1), and one whose log was trimmed would not answer.
    pub(super) fn request_epoch_state(&mut self, effects: &mut Vec<Effect>) {
        assert_eq!(self.status, Status::Transitioning);
        // The members, and the replaced replicas of the epoch before (they serve the
        // start until enough members have it).
        let old = self.history.back();
        let replaced = old.into_iter().flat_map(|old| old.ids());
        let mut members: Vec<ReplicaId> = self.configuration.ids().chain(replaced).collect();
        members.sort_unstable();
        members.dedup();
        members.retain(|&id| id != self.id);
        // A witness of either epoch holds no state, unless it was active in the one
        // before: then it keeps the start for the actives (`take_up_role`). Without the
        // epoch before (a restart keeps only the current configuration) any member may:
        // a witness that holds nothing refuses, and the next one is asked (seed
        // 17001528: the one witness that held the start was never asked).
        let configuration = &self.configuration;
        let serves_state = |id: ReplicaId| {
            let Some(old) = old else {
                return true;
            };
            let old_active = old.contains_id(id) && !was_witness_in(old, id);
            !was_witness_in(old, id) && (old_active || !was_witness_in(configuration, id))
        };
        let is_witness = self.is_witness();
        if !is_witness {
            // Those first; the others after them, not never: an old witness active in
            // this epoch holds the start once it started the epoch, and may be all that
            // is left when the old actives are gone (seed 94005239: both retired, and a
            // member that restarted into the next epoch asked only them). A replica
            // that holds nothing answers nothing new, and the next one is asked.
            members.sort_by_key(|&id| !serves_state(id));
        }
        let told_by = self.epoch_transfer.told_by.take();
        let to = match told_by.filter(|&told_by| is_witness || serves_state(told_by)) {
            Some(told_by) => told_by,
            None => {
                let next = self.epoch_transfer.next_source % members.len();
                self.epoch_transfer.next_source = next + 1;
                members[next]
            }
        };
        self.state_transfer_pending = true;
        self.state_transfer_timeout.start();
        self.send_to_id(
            to,
            Body::GetState(GetState {
                op: self.log.op(),
                learner: None,
            }),
            effects,
        );
    }

    /// Transitioning: committed state from a replica of the epoch. Only what the sender
    /// says is committed is taken (its log beyond may be another view's).
    pub(super) fn on_transition_state(
        &mut self,
        new_state: ReceivedState,
        effects: &mut Vec<Effect>,
    ) {
        assert_eq!(self.status, Status::Transitioning);
        if self.epoch_transfer.past_start {
            return self.drop_reason("new_state", "holds the start: waiting for a view");
        }
        let mut progressed = self.take_committed_state(new_state, effects);
        progressed |= self.take_former_witness_log(effects);
        self.stats.state_transfers += 1;
        if self.epoch_change.is_some() {
            // The fetched ops reached a later epoch's RECONFIGURATION: that move comes
            // first (at the end of this input).
            return;
        }
        if self.commit >= self.epoch_start {
            return self.finish_transition(effects);
        }
        if progressed {
            self.request_epoch_state(effects);
        } else {
            // An answer that held nothing new (a source that lost its state, say): the
            // timeout asks the next source. Without it only a StartEpoch reminder asked
            // again, and it names its sender first, the same source each time (seed
            // 93000723, --witnesses-everywhere).
            self.state_transfer_timeout
                .set_after(self.config.state_transfer_timeout_ticks);
            self.state_transfer_timeout.start();
        }
    }

    /// A former witness whose log reaches the base of the entries it kept
    /// ([`FormerWitnessLog`]) appends those past its log and executes them; they go
    /// once its log holds them all. Returns whether the log grew.
    pub(super) fn take_former_witness_log(&mut self, effects: &mut Vec<Effect>) -> bool {
        let Some(kept) = self.epoch_transfer.former_witness_log.take() else {
            return false;
        };
        if self.log.op() >= kept.end() {
            return false;
        }
        if self.log.op() < kept.base {
            // The fetched state does not reach them yet.
            self.epoch_transfer.former_witness_log = Some(kept);
            return false;
        }
        // The cap, as `apply_new_state`: what does not fit waits for the next answer.
        let room = self.log_entries_cap().saturating_sub(self.log.len() as u64);
        let first = self.log.op() + 1;
        let mut added = 0;
        let past_the_log = (first - kept.base - 1) as usize;
        for entry in kept.entries[past_the_log..].iter().take(room as usize) {
            self.log.push(entry.clone());
            added += 1;
        }
        let end = kept.end();
        if self.log.op() < end {
            self.epoch_transfer.former_witness_log = Some(kept);
        }
        tracing::info!(
            replica = self.id,
            epoch = self.configuration.epoch(),
            from = first,
            to = self.log.op(),
            "a former witness takes the committed entries it kept into its log"
        );
        self.commit_to(self.log.op().min(end), effects);
        added > 0
    }

    /// The answer of a former witness to a replica that holds every op up to `op` when
    /// the entries it kept ([`FormerWitnessLog`]) go further than its own log: those
    /// entries, all committed (`commit` and `op` both their end; no checkpoint). The one
    /// replica left with the rest of the state may need them before it can give this
    /// one a checkpoint (a cut-off active of the old epoch fetching its start).
    ///
    /// It does not vouch for any view's log, so a replica joining a view never installs
    /// it (`on_join_state`).
    pub(super) fn former_witness_answer(&mut self, op: Op) -> Option<NewState> {
        let kept = self.epoch_transfer.former_witness_log.as_ref()?;
        if op < kept.base || op >= kept.end() || op < self.log.op() {
            return None;
        }
        let bytes_max = self.new_state_bytes_max();
        let end = kept.end();
        let mut entries = Vec::new();
        let mut bytes = 0;
        for entry in &kept.entries[(op - kept.base) as usize..] {
            bytes += entry.size_bytes();
            if !entries.is_empty() && bytes > bytes_max {
                break;
            }
            entries.push(entry.clone());
        }
        Some(NewState {
            sender: self.id,
            commit: end,
            op: end,
            vouches: false,
            checkpoint: None,
            op_first: op + 1,
            entries,
        })
    }

    /// Takes what the sender says is committed of a well-formed NewState (its log
    /// beyond may be another view's; its checkpoint is within it) and executes it, for a
    /// replica that votes in nothing yet. Returns whether the log grew.
    fn take_committed_state(
        &mut self,
        mut new_state: ReceivedState,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let committed = new_state.commit;
        let keep = committed.saturating_sub(new_state.op_first - 1);
        new_state
            .entries
            .truncate(keep.min(new_state.entries.len() as Op) as usize);
        let progressed = self.apply_new_state(new_state);
        self.commit_to(committed.min(self.log.op()), effects);
        progressed
    }

    /// Paper 7.2 step 3: the replica holds the epoch's start. Normal in view 0 when its
    /// log ends there; the replica that told it of the epoch learns that it started.
    ///
    /// A log that goes past the start (committed state carried it there: a checkpoint of
    /// the new epoch, or a learner's) holds ops that may have committed in a later view
    /// of the epoch, which a view-0 primary cut off before view 1 started can hold other
    /// entries at: as its backup, the cumulative PrepareOk would vouch for entries this
    /// replica never received (4.1 needs a backup's log to be a prefix of its
    /// primary's). Such a replica acknowledges nothing until it hears of a view of the
    /// epoch that started (a Prepare, Commit or StartView), and joins it as any replica
    /// joins a started view (`join_started_view`, 4.2): that view's log from its primary
    /// first. (Joining a view only said to exist would not do: one whose view change
    /// never finished has no log to take, and a last normal view naming it would outrank
    /// the logs that hold what committed.) It does vote in the epoch's view changes
    /// (`past_start_votes`), or a view change that needs it would never finish.
    fn finish_transition(&mut self, effects: &mut Vec<Effect>) {
        assert_eq!(self.status, Status::Transitioning);
        self.state_transfer_timeout.stop();
        self.state_transfer_pending = false;
        // The log holds the start, and with it every entry a former witness kept (they
        // end at the start at most): its store forgets them at the end of this input.
        self.epoch_transfer.former_witness_log = None;
        if self.commit > self.epoch_start {
            self.epoch_transfer.past_start = true;
            // A primary it never hears from is one it asks to replace, as a backup does.
            self.normal_timeout.start();
        } else {
            self.enter_normal();
            self.epoch_transfer.started.insert(self.index);
            let view = self.view;
            if self.epoch_transfer.restarted_in_epoch && self.primary_of(view) == self.index {
                // As any primary that restarts (`restart`): ordering again at op numbers
                // its lost pipeline may have given other ops in this view would give one
                // op two meanings in one view (seed 114003462). The next view's change
                // instead: views only move forward.
                if !self.change_to_next_view() {
                    self.drop_reason("epoch", "no view left to change to");
                }
            }
        }
        self.epoch_transfer.restarted_in_epoch = false;
        tracing::info!(
            replica = self.id,
            epoch = self.configuration.epoch(),
            op = self.log.op(),
            commit = self.commit,
            "started the epoch"
        );
        if let Some(told_by) = self.epoch_transfer.told_by.take() {
            self.send_to_id(told_by, Body::EpochStarted, effects);
        }
    }

    /// A transitioning replica past the epoch's start (`finish_transition`) joins the
    /// first view it hears from the primary of: a Prepare, a Commit or a StartView comes
    /// only from a view that started. Returns whether it did.
    pub(super) fn join_if_past_start(
        &mut self,
        message: &Message,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let started_view = matches!(
            message.body,
            Body::Prepare(_) | Body::Commit(_) | Body::StartView(_)
        );
        if self.status != Status::Transitioning
            || !self.epoch_transfer.past_start
            || !started_view
            || message.replica != self.primary_of(message.view)
        {
            return false;
        }
        self.epoch_transfer.past_start = false;
        self.join_started_view(message.view, effects);
        true
    }

    /// Whether this replica is transitioning past its epoch's start
    /// (`finish_transition`) and `body` is its part in a view change of the epoch: asks,
    /// calls and DoViewChanges, handled as for a backup whose view is not healthy.
    ///
    /// Without its vote a view change can need it and never finish (seed 2007616: after
    /// a power loss, the one replica with the view-0 log changed views, the third
    /// recovered, and this one waited for a started view that only its vote could bring).
    /// It votes as a replica normal in no view of the epoch but the first: its
    /// DoViewChange names last normal view 0 and its log, the committed prefix up to its
    /// commit number. That is safe (ARCHITECTURE.md, "Reconfiguration"): it acknowledged
    /// nothing, so every op that committed in view w was acknowledged by another replica
    /// of any DoViewChange quorum, whose (last normal view, op) is at least (w, that op);
    /// this log outranks that one only when w is 0 and its op is as large, and then it
    /// holds the op, being committed entries throughout.
    pub(super) fn past_start_votes(&self, body: &Body) -> bool {
        self.is_past_start() && matches!(body, Body::StartViewChange(_) | Body::DoViewChange(_))
    }

    /// The normal timeout of a replica transitioning past its epoch's start: no started
    /// view has reached it, so it asks for a view change as a backup of a silent primary
    /// does (the others follow only if their view failed too).
    pub(super) fn on_past_start_timeout(&mut self, effects: &mut Vec<Effect>) {
        debug_assert!(self.is_past_start());
        self.ask_for_view_change(effects);
    }

    /// Whether the replica is transitioning past its epoch's start (`finish_transition`).
    pub(super) fn is_past_start(&self) -> bool {
        self.status == Status::Transitioning && self.epoch_transfer.past_start
    }

    /// A member of the epoch holds its start (paper 7.2 step 3, 7.3 step 2).
    pub(super) fn on_epoch_started(&mut self, from: ReplicaIndex, _effects: &mut Vec<Effect>) {
        if (from as usize) < self.heard_tick.len() {
            self.heard_tick[from as usize] = self.ticks;
        }
        let transfer = &mut self.epoch_transfer;
        transfer.started.insert(from);
        // A retiring replica counts only actives (below), so it goes on reminding a
        // witness that answered: once the witness moved on to a later epoch it answers
        // with that epoch's StartEpoch, which this replica follows and retires from, where
        // waiting only for actives that have all moved on and shut down would last for
        // ever (seeds 6001496, 9001285).
        if !(self.status == Status::Retiring && self.configuration.is_witness(from)) {
            transfer.remind.remove(from);
        }
        if self.status == Status::Retiring {
            // Only members that hold the start as state count (paper 6.1: a witness holds
            // the log, not the state): the start must survive any f' failures of the new
            // group, and a witness's log does not hold the ops below its base.
            let configuration = &self.configuration;
            let started_actives = transfer
                .started
                .iter()
                .filter(|&index| !configuration.is_witness(index))
                .count();
            if !transfer.retired && started_actives >= configuration.quorum() {
                transfer.retired = true;
                self.start_epoch_timeout.stop();
                tracing::info!(
                    replica = self.id,
                    epoch = self.configuration.epoch(),
                    "f'+1 members started the epoch: retired"
                );
            }
        } else if transfer.remind.is_empty() && transfer.pending.is_none() {
            // The same timeout asks again for a later epoch's start being fetched: a late
            // EpochStarted for this epoch must not end that (seed 1017378: the fetch's
            // one GetState was lost, and the replica stayed in its epoch for good).
            self.start_epoch_timeout.stop();
        }
    }

    /// The primary of a later epoch tells members it has not heard from in a normal
    /// timeout that the epoch began: one may still be in the epoch before (it missed the
    /// end of it, and the replicas that could tell it do not know its old place), and
    /// the epoch needs it. A member that started answers EpochStarted and is heard again.
    pub(super) fn remind_silent_members(&mut self, effects: &mut Vec<Effect>) {
        if self.configuration.epoch() == 0 {
            return;
        }
        let silent_after = self.config.normal_timeout_ticks;
        for index in self.configuration.indexes() {
            let silent = self.ticks.saturating_sub(self.heard_tick[index as usize]) >= silent_after;
            if index != self.index && silent {
                self.send_start_epoch(self.configuration.id_of(index), effects);
            }
        }
    }

    /// A learner (paper 7.5: a new member warming up before the change that adds it)
    /// asks a member of the configuration it learns from for committed state after what
    /// it holds, in turn.
    pub(super) fn request_learner_state(&mut self, effects: &mut Vec<Effect>) {
        assert_eq!(self.status, Status::Joining);
        let members: Vec<ReplicaId> = self
            .configuration
            .ids()
            .filter(|&id| id != self.id)
            .collect();
        if members.is_empty() {
            return;
        }
        let next = self.epoch_transfer.next_source % members.len();
        self.epoch_transfer.next_source = next + 1;
        self.state_transfer_timeout.start();
        self.send_to_id(
            members[next],
            Body::GetState(GetState {
                op: self.log.op(),
                learner: Some(self.id),
            }),
            effects,
        );
    }

    /// A learner's GetState: committed state only (it votes in nothing, and may be far
    /// behind), sent to the identity it names.
    pub(super) fn on_learner_get_state(
        &mut self,
        learner: ReplicaId,
        op: Op,
        effects: &mut Vec<Effect>,
    ) {
        if learner == self.id {
            return self.drop_reason("get_state", "a learner with this replica's identity");
        }
        let get_state = GetState {
            op,
            learner: Some(learner),
        };
        if let Some(new_state) = self.new_state_for(get_state, self.commit, false) {
            self.send_to_id(learner, Body::NewState(new_state), effects);
        }
        // A change gave the learner's identity out already (it is a member now, or was
        // and is no more): the committed state it fetches may carry it past that
        // RECONFIGURATION in a checkpoint, never executing it, so it is told of the
        // epoch too (at most once a tick), to join it or to retire.
        if learner < self.configuration.next_id()
            && self.epoch_transfer.hint_tick != Some(self.ticks)
        {
            self.epoch_transfer.hint_tick = Some(self.ticks);
            self.send_start_epoch(learner, effects);
        }
    }

    /// A learner takes committed state and executes it; executing the RECONFIGURATION
    /// that adds it makes it a member at once, like any replica that holds the start.
    pub(super) fn on_learner_state(&mut self, new_state: ReceivedState, effects: &mut Vec<Effect>) {
        assert_eq!(self.status, Status::Joining);
        if !new_state.is_well_formed() {
            return self.drop_reason("new_state", "malformed");
        }
        let progressed = self.take_committed_state(new_state, effects);
        if progressed && self.epoch_change.is_none() {
            // Still behind: ask again at once (the timeout paces it once caught up).
            self.request_learner_state(effects);
        }
    }

    /// Paper 7.3 step 3: StartEpoch again to the members that did not say they started.
    /// (In the old epoch, with a later one pending: ask for its start again.)
    pub(super) fn on_start_epoch_timeout(&mut self, effects: &mut Vec<Effect>) {
        self.start_epoch_timeout.reset();
        if self.epoch_transfer.pending.is_some() {
            return self.request_pending_state(effects);
        }
        let remind = self.epoch_transfer.remind;
        if remind.is_empty() || self.epoch_transfer.retired {
            return self.start_epoch_timeout.stop();
        }
        for index in self.configuration.indexes() {
            if remind.contains(index) && index != self.index {
                self.send_start_epoch(self.configuration.id_of(index), effects);
            }
        }
    }
}

/// Whether the member with identity `id` is a witness of `configuration`.
fn was_witness_in(configuration: &Configuration, id: ReplicaId) -> bool {
    configuration
        .index_of(id)
        .is_some_and(|index| configuration.is_witness(index))
}

/// Whether a pending epoch's fetch holds, at `start`, the RECONFIGURATION that installs
/// `configuration` (what a witness, which executes nothing, checks before it moves).
fn fetch_ends_in(
    fetch: &state_transfer::Fetched,
    start: Op,
    configuration: &Configuration,
) -> bool {
    let Some(index) = start.checked_sub(fetch.op_first) else {
        return false;
    };
    fetch.entries.get(index as usize).is_some_and(|entry| {
        entry.operation == Operation::Reconfigure
            && Configuration::from_bytes(&entry.body).as_ref() == Some(configuration)
    })
}
