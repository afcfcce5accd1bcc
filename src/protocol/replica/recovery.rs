//! Replica recovery (paper 4.3).
//!
//! A replica that restarts without its state sends Recovery with a fresh nonce and takes
//! part in nothing else. It waits for f+1 answers from other normal replicas, one of them
//! from the primary of the latest view among them, then fetches that primary's log (a
//! checkpoint and entries, by state transfer) up to the op the primary reported, and only
//! then becomes normal: it must again hold everything it may have acknowledged before the
//! crash. If the view moves on during the transfer, it starts over with a new nonce.
//!
//! Each attempt starts from committed state only. Entries past the commit number that an
//! earlier attempt fetched belong to that attempt's view and may have been replaced since
//! (a long log takes several NewStates, and the source can fail between two of them):
//! kept, they could make a later attempt finish at once, holding an entry no view chose.
//!
//! A brand-new cluster is the case where every other replica answers "empty" (it is
//! recovering too, or has never held an entry): no op can have committed, so the replica
//! starts normal with an empty log.

use super::*;

/// The progress of one recovery attempt.
#[derive(Clone, Debug)]
pub(super) struct RecoveryState {
    pub(super) nonce: u64,
    /// Per replica: the view and answer it gave this attempt.
    responses: Vec<Option<(View, RecoveryResponse)>>,
    /// Once chosen: the primary to transfer from, its view and the op to reach.
    source: Option<RecoverySource>,
    /// Attempts made so far (each with its own nonce).
    attempts: u64,
}

impl RecoveryState {
    /// How many of this attempt's answers satisfy `which`.
    fn count(&self, which: impl Fn(&RecoveryResponse) -> bool) -> usize {
        self.responses
            .iter()
            .flatten()
            .filter(|(_, r)| which(r))
            .count()
    }
}

/// Attempts between two warnings that a recovery cannot find the answers it needs (with
/// the default timeouts, about every 5 seconds).
const RECOVERY_WARN_ATTEMPTS: u64 = 10;

/// Where a recovery attempt fetches its state from: the primary of the latest view among
/// f+1 answers (paper 4.3).
#[derive(Clone, Copy, Debug)]
struct RecoverySource {
    primary: ReplicaIndex,
    view: View,
    /// The primary's op when it answered: the recovery is complete once the log reaches it.
    op: Op,
}

/// A new nonce for the next attempt, derived deterministically (the core has no
/// randomness; the first nonce came from the driver).
pub(super) fn next_nonce(nonce: u64) -> u64 {
    let mut z = nonce.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// When every other replica answered, all of them from view 0, and the primary of view 0
/// is normal and has committed nothing: that primary's op (0 if it prepared nothing).
///
/// This is a brand-new cluster in which some replicas found everyone empty and went
/// normal first, and the view-0 primary then ordered requests it cannot commit without
/// the others, who now count fewer normal answers than the f+1 recovery needs; or one in
/// which this replica, whose storage says it joined (it may have acknowledged ops, so it
/// never starts an empty cluster), finds the cluster normal in view 0 with nothing
/// prepared. Nothing can have committed anywhere: in view 0 only its primary decides
/// commits, and its commit number is 0; no later view exists, since every replica answered
/// from view 0 (a view starts only once f+1 replicas moved to it, and views never go
/// back); and a normal primary's log holds everything its view prepared. So no
/// acknowledged op can be lost by taking that primary's log.
///
/// The primary of view 0 is `primary` (index 0 unless that member is a witness: paper
/// 6.1); only its answer speaks for what view 0 prepared.
fn new_cluster_primary_op(
    responses: &[Option<(View, RecoveryResponse)>],
    index: ReplicaIndex,
    primary: ReplicaIndex,
) -> Option<Op> {
    let mut primary_op = None;
    for (replica, response) in responses.iter().enumerate() {
        if replica == index as usize {
            continue;
        }
        let (view, response) = response.as_ref()?;
        if *view != 0 {
            return None;
        }
        if replica == primary as usize {
            if !response.normal || response.commit != 0 {
                return None;
            }
            primary_op = Some(response.op);
        }
    }
    primary_op
}

impl<S: StateMachine> Replica<S> {
    pub(super) fn start_recovering(&mut self, nonce: u64) {
        assert!(self.recovery.is_none());
        // Only committed state is kept (a restart from storage may hold some): see the
        // module docs on attempts.
        self.log.truncate(self.commit);
        let n = self.configuration.replica_count() as usize;
        self.status = Status::Recovering;
        self.primary = Primary::new(n);
        self.view_changing = ViewChanging::new(n);
        self.recovery = Some(RecoveryState {
            nonce,
            responses: vec![None; n],
            source: None,
            attempts: 0,
        });
        self.stop_all_timeouts();
        tracing::info!(
            replica = self.index,
            commit = self.commit,
            joined = self.joined,
            "recovering (paper 4.3): asking the other replicas"
        );
        // The first Recovery goes out on the first tick: construction emits no effects.
        self.recovery_timeout.set_after(1);
        self.recovery_timeout.start();
    }

    pub(super) fn on_recovery_timeout(&mut self, effects: &mut Vec<Effect>) {
        self.recovery_timeout
            .set_after(self.config.recovery_timeout_ticks);
        self.recovery_timeout.start();
        if self.status != Status::Recovering {
            return self.recovery_timeout.stop();
        }
        if self.configuration.replica_count() == 1 && !self.joined {
            // No one to ask, and nothing to learn: a single replica (f = 0) that lost its
            // state starts empty, as a new cluster of one would. One that held data (its
            // storage says it joined) stays here: what it lost is gone.
            self.stats.empty_cluster_starts += 1;
            return self.finish_recovery(effects);
        }
        self.warn_if_recovery_is_stuck();
        let state = self.recovery.as_mut().expect("recovering");
        state.attempts += 1;
        state.nonce = next_nonce(state.nonce);
        state
            .responses
            .iter_mut()
            .for_each(|response| *response = None);
        state.source = None;
        let nonce = state.nonce;
        self.state_transfer_pending = false;
        // A new attempt may pick another view's primary: keep only committed entries.
        self.log.truncate(self.commit);
        self.broadcast(Body::Recovery(Recovery { nonce }), effects);
    }

    /// Data loss is never silent: a recovery that keeps failing says, every few seconds,
    /// what it has and what it needs. Without f+1 other normal replicas it cannot finish,
    /// and if they are gone for good (more than f replicas lost their memory at once),
    /// the cluster's data is gone with them.
    fn warn_if_recovery_is_stuck(&self) {
        let state = self.recovery.as_ref().expect("recovering");
        if state.attempts == 0 || !state.attempts.is_multiple_of(RECOVERY_WARN_ATTEMPTS) {
            return;
        }
        let normal = state.count(|r| r.normal);
        let recovering = state.count(|_| true) - normal;
        tracing::warn!(
            replica = self.index,
            attempts = state.attempts,
            normal_answers = normal,
            recovering_answers = recovering,
            needed = self.quorum(),
            transferring = state.source.is_some(),
            "still recovering: needs answers from {} other normal replicas, the latest \
             view's primary among them; if more than f replicas lost their state at once, \
             their data is lost",
            self.quorum()
        );
    }

    pub(super) fn on_recovery(
        &mut self,
        from: ReplicaIndex,
        recovery: Recovery,
        effects: &mut Vec<Effect>,
    ) {
        // A replica without state answers "empty" whatever its status, so replicas of a
        // new cluster that start one after another (and may already have moved to normal
        // or to a view change) still find that nobody holds anything. A recovering
        // replica that joined the cluster once (its storage says so) may have
        // acknowledged ops it no longer holds: it is not empty, and not normal either, so
        // it does not answer.
        // A later epoch began with the state up to its RECONFIGURATION: none of its
        // members is ever empty.
        // Nor is a replica that was normal in a view after view 0, whatever its log: that
        // view started, with the recovering replica perhaps as its primary, which may
        // have prepared ops nobody else received yet; a cluster started in view 0 beside
        // it could commit other ops at those numbers, and a view change after it would
        // take the later view's log without them (seed 109007448). Normal, it answers as
        // any normal replica does; changing views, it does not answer (as a recovering
        // replica that joined once). A replica only changing views from view 0 still
        // answers "empty": with the others recovering, its view change could never
        // finish otherwise (seed 111000850).
        let first_epoch = self.configuration.epoch() == 0;
        let empty = match self.status {
            Status::Recovering => !self.joined && first_epoch,
            Status::Normal | Status::ViewChange => {
                self.log.op() == 0
                    && self.commit == 0
                    && self.checkpoint.is_none()
                    && self.last_normal_view == 0
            }
            Status::Transitioning | Status::Retiring | Status::Joining => false,
        };
        let response = match self.status {
            _ if empty => RecoveryResponse {
                nonce: recovery.nonce,
                empty: true,
                normal: self.status == Status::Normal,
                op: 0,
                commit: 0,
                epoch_start: 0,
            },
            Status::Normal => RecoveryResponse {
                nonce: recovery.nonce,
                empty: false,
                normal: true,
                op: self.log.op(),
                commit: self.commit,
                epoch_start: self.epoch_start,
            },
            _ => return self.drop_reason("recovery", "not normal"),
        };
        self.send(from, Body::RecoveryResponse(response), effects);
    }

    pub(super) fn on_recovery_response(
        &mut self,
        from: ReplicaIndex,
        view: View,
        response: RecoveryResponse,
        effects: &mut Vec<Effect>,
    ) {
        let quorum = self.quorum();
        let replica_count = self.configuration.replica_count();
        let Some(state) = self
            .recovery
            .as_mut()
            .filter(|state| state.nonce == response.nonce)
        else {
            return self.drop_reason("recovery_response", "stale nonce");
        };
        if state.source.is_some() {
            return self.drop_reason("recovery_response", "already transferring");
        }
        state.responses[from as usize] = Some((view, response));
        let empty = state.count(|r| r.empty);
        // Recovering, this replica holds nothing either, unless its storage says it
        // joined the cluster once: then it may have acknowledged ops, and the cluster is
        // not new.
        if empty == replica_count as usize - 1 && !self.joined && self.configuration.epoch() == 0 {
            tracing::warn!(
                replica = self.index,
                "no replica holds any state: starting an empty cluster in view 0 (if this \
                 cluster held data before, it is lost: more than f replicas lost their \
                 memory at once)"
            );
            self.stats.empty_cluster_starts += 1;
            self.new_cluster = true;
            return self.finish_recovery(effects);
        }
        // Normal answers count whether or not they hold anything (paper 4.3: f+1 answers
        // from normal replicas): an empty one still names its view truthfully, and a
        // witness the primary never needed holds nothing (`witness`).
        if state.count(|r| r.normal) < quorum {
            let primary = self.configuration.primary_of(0);
            if let Some(primary_op) = new_cluster_primary_op(&state.responses, self.index, primary)
            {
                // A new cluster whose view-0 primary went normal (and took requests) before
                // this replica heard that everyone was empty: take its log, as a recovery
                // from it would.
                return self.recover_from(primary, 0, primary_op, effects);
            }
            return;
        }
        let view_latest = state
            .responses
            .iter()
            .flatten()
            .filter(|(_, r)| r.normal)
            .map(|(v, _)| *v)
            .max();
        let view_latest = view_latest.expect("normal answers exist");
        let primary = self.configuration.primary_of(view_latest);
        // An empty primary's view prepared nothing: its op (0) is the log to take.
        let Some((_, primary_response)) = state.responses[primary as usize]
            .filter(|(view, response)| *view == view_latest && response.normal)
        else {
            return; // Wait for the primary of the latest view.
        };
        if self.epoch_start == 0 {
            // Recovering into an epoch whose start it was not told (paper 7).
            self.epoch_start = primary_response.epoch_start;
        }
        self.recover_from(primary, view_latest, primary_response.op, effects);
    }

    /// Fetches the log of `primary`, the primary of `view`, up to `op` (paper 4.3).
    fn recover_from(
        &mut self,
        primary: ReplicaIndex,
        view: View,
        op: Op,
        effects: &mut Vec<Effect>,
    ) {
        assert_eq!(self.status, Status::Recovering);
        assert_ne!(primary, self.index);
        assert!(self.recovery_source().is_none(), "one source per attempt");
        if view < self.view {
            // Views never go back. Only a replica that kept its view across a restart gets
            // here: its store holds a view change that never finished, and no view at
            // least its own may ever start without a call. Call for it: a sender above
            // their view is followed even when their view is healthy
            // (`on_start_view_change`), and this replica has left every view below its
            // own. The next attempt finds the view started.
            let sender_view = self.view;
            self.broadcast(
                Body::StartViewChange(StartViewChange { sender_view }),
                effects,
            );
            return;
        }
        let state = self.recovery.as_mut().expect("recovering");
        state.source = Some(RecoverySource { primary, view, op });
        // GetState carries the view, so that the primary answers with its whole log, not
        // only its committed part.
        self.set_view(view);
        self.recovery_timeout.start();
        debug_assert_eq!(
            self.log.op(),
            self.commit,
            "an attempt starts from committed state"
        );
        if self.log.op() >= op {
            // The primary's log ends within our committed state: nothing to fetch.
            self.finish_recovery(effects);
            self.stats.recoveries += 1;
            return;
        }
        self.request_state(primary, effects);
    }

    /// A lost GetState or NewState must not stall a recovery that found its source.
    pub(super) fn on_recovery_state_timeout(&mut self, effects: &mut Vec<Effect>) {
        if let Some(source) = self.recovery_source() {
            self.request_state(source.primary, effects);
        }
    }

    fn recovery_source(&self) -> Option<RecoverySource> {
        self.recovery.as_ref().and_then(|state| state.source)
    }

    pub(super) fn on_recovery_state(
        &mut self,
        from: ReplicaIndex,
        view: View,
        new_state: ReceivedState,
        effects: &mut Vec<Effect>,
    ) {
        assert_eq!(self.status, Status::Recovering);
        let Some(source) = self.recovery_source() else {
            return self.drop_reason("new_state", "recovery has no source yet");
        };
        if from != source.primary || view != source.view {
            return self.drop_reason("new_state", "not from the recovery source's view");
        }
        let commit = new_state.commit;
        if self.apply_new_state(new_state) {
            self.recovery_timeout.start();
            self.stats.state_transfers += 1;
        }
        self.commit_to(commit.min(self.log.op()), effects);
        if self.log.op() >= source.op {
            self.finish_recovery(effects);
            self.stats.recoveries += 1;
            self.send(source.primary, self.acknowledgement(0), effects);
        } else {
            self.request_state(source.primary, effects);
        }
    }

    fn finish_recovery(&mut self, _effects: &mut Vec<Effect>) {
        assert_eq!(self.status, Status::Recovering);
        self.enter_normal();
        self.state_transfer_pending = false;
        tracing::info!(
            replica = self.index,
            view = self.view,
            op = self.log.op(),
            "recovered"
        );
    }
}
