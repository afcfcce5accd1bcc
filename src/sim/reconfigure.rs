//! Reconfigurations in the simulator (paper 7): the changes a seed plans (grow by two,
//! shrink by two, replace one member) and the administrator who asks for them.
//!
//! A change runs as an operator runs it (ARCHITECTURE.md, "Changing members"): the new
//! members start first, with `Start::Join`, and warm up as learners (7.5); after the
//! planned warm-up the administrator submits a RECONFIGURATION
//! (`Operation::Reconfigure`, the body `Configuration::propose` builds) to the members
//! of the newest configuration it knows, retrying until answered, and follows NewEpoch
//! answers like any client. One change at a time: the next one starts only once every
//! live member of the newest configuration runs it.

use super::prng::Prng;
use crate::protocol::{
    Body, ClientId, Configuration, Message, Operation, ReplicaId, ReplicaIndex, ReplicaSet, Reply,
    ReplyStatus, Request, RequestNumber, Session, View,
};
use bytes::Bytes;

/// What a planned change does to the newest configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Two new members (3 → 5, 5 → 7).
    Grow,
    /// Two members leave (5 → 3, 7 → 5).
    Shrink,
    /// One member leaves and a new one takes its place.
    Replace,
}

/// One reconfiguration a seed plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedChange {
    /// The step from which it may start (once the previous change is done).
    pub at: u64,
    /// Steps the new members warm up before the administrator asks (0: no warm-up, the
    /// new members get the whole state once the epoch starts).
    pub warm_up_steps: u64,
    /// What it does; a grow of a 7-member configuration or a shrink of a 3-member one
    /// replaces a member instead.
    pub change: Change,
    /// Picks the members that leave.
    pub pick: u64,
    /// Draws the next configuration's witnesses (paper 6.1, [`PlannedChange::witnesses`]);
    /// `None`: none, as before reconfigurations could name witnesses.
    pub witness_pick: Option<u64>,
}

impl PlannedChange {
    /// The members kept and how many are added, for a configuration of `ids`.
    pub fn shape(&self, ids: &[ReplicaId]) -> (Vec<ReplicaId>, usize) {
        let size = ids.len();
        let change = match self.change {
            Change::Grow if size >= 7 => Change::Replace,
            Change::Shrink if size <= 3 => Change::Replace,
            change => change,
        };
        let leaving = |count: usize| -> Vec<ReplicaId> {
            let mut kept = ids.to_vec();
            let mut pick = self.pick;
            for _ in 0..count {
                kept.remove((pick % kept.len() as u64) as usize);
                pick /= kept.len() as u64 + 1;
            }
            kept
        };
        match change {
            Change::Grow => (ids.to_vec(), 2),
            Change::Shrink => (leaving(2), 0),
            Change::Replace => (leaving(1), 1),
        }
    }

    /// The witnesses of the configuration that keeps `kept` of `current` (in that order)
    /// and adds `added` members after them: none in one change of three, else up to f'
    /// of them, so that clusters gain, keep, lose and trade witnesses (with disks too: a
    /// replica that becomes one drops its stored checkpoint, `Write::CheckpointDropped`).
    pub fn witnesses(&self, kept: &[ReplicaId], added: usize) -> ReplicaSet {
        let mut witnesses = ReplicaSet::default();
        let Some(pick) = self.witness_pick else {
            return witnesses;
        };
        let mut prng = Prng::new(pick);
        if prng.chance(333_333) {
            return witnesses;
        }
        let count = kept.len() + added;
        let f = (count - 1) / 2;
        let mut candidates: Vec<ReplicaIndex> =
            (0..count).map(|index| index as ReplicaIndex).collect();
        for _ in 0..prng.between(1, f as u64).min(candidates.len() as u64) {
            let index = prng.below(candidates.len() as u64) as usize;
            witnesses.insert(candidates.swap_remove(index));
        }
        witnesses
    }
}

/// What the administrator has in flight.
#[derive(Clone, Debug)]
struct InFlight {
    operation: Operation,
    request: RequestNumber,
    message: Message,
    ticks_waiting: u64,
    timeout_ticks: u64,
}

/// What an answer meant to the administrator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminOutcome {
    /// Its session is registered (at this op).
    Registered {
        /// The session (the registration's op).
        session: Session,
    },
    /// The RECONFIGURATION committed at `op`.
    Reconfigured {
        /// Its request number.
        request: RequestNumber,
        /// The op it committed at.
        op: u64,
        /// The reply's result.
        result: Bytes,
    },
    /// The replicas refused it, with their reason.
    Rejected {
        /// Its request number.
        request: RequestNumber,
        /// Why.
        reason: String,
    },
    /// The session was evicted; the administrator registers again.
    Evicted,
}

/// The administrator: a client with one request at a time, sent to every member of the
/// newest configuration it knows (it does not track primaries), retried on timeouts,
/// moved on by NewEpoch answers.
#[derive(Clone, Debug)]
pub struct Admin {
    id: ClientId,
    session: Session,
    /// Registrations started (a registration's request number).
    registrations: RequestNumber,
    /// The latest request number used on the session.
    request: RequestNumber,
    configuration: Configuration,
    view: View,
    in_flight: Option<InFlight>,
    request_timeout_ticks: u64,
}

impl Admin {
    /// An unregistered administrator of a cluster in `configuration`.
    pub fn new(id: ClientId, configuration: Configuration, request_timeout_ticks: u64) -> Admin {
        assert!(id != 0);
        Admin {
            id,
            session: 0,
            registrations: 0,
            request: 0,
            configuration,
            view: 0,
            in_flight: None,
            request_timeout_ticks: request_timeout_ticks.max(1),
        }
    }

    /// Its client id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Its session (0: unregistered).
    pub fn session(&self) -> Session {
        self.session
    }

    /// Whether a request awaits its answer.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The newest configuration it knows.
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }

    /// The configuration its in-flight RECONFIGURATION proposes, if any.
    pub fn proposed(&self) -> Option<Configuration> {
        let in_flight = self.in_flight.as_ref()?;
        let Body::Request(request) = &in_flight.message.body else {
            return None;
        };
        (in_flight.operation == Operation::Reconfigure)
            .then(|| Configuration::from_bytes(&request.body))
            .flatten()
    }

    /// Starts a registration; returns the message to send to every member.
    pub fn register(&mut self) -> Message {
        assert!(self.in_flight.is_none());
        self.session = 0;
        self.registrations += 1;
        self.start(Operation::Register, self.registrations, Bytes::new())
    }

    /// Submits a RECONFIGURATION from `current` to `next`; returns its request number
    /// and the message to send to every member of `current`. The request names
    /// `current`'s epoch (paper 7.1: the primary checks it), as an operator asks the
    /// cluster it runs (`vsr admin reconfigure --cluster OLD --to NEW`): a replica left in
    /// an earlier epoch could only refuse a successor of a configuration it never saw.
    pub fn reconfigure(
        &mut self,
        current: &Configuration,
        next: &Configuration,
    ) -> (RequestNumber, Message) {
        assert!(self.session != 0, "the administrator registers first");
        assert!(self.in_flight.is_none());
        if current.epoch() > self.configuration.epoch() {
            self.configuration = current.clone();
            self.view = 0;
        }
        let request = self.request + 1;
        let message = self.start(Operation::Reconfigure, request, next.to_bytes());
        (request, message)
    }

    fn start(&mut self, operation: Operation, request: RequestNumber, body: Bytes) -> Message {
        let message = Message {
            epoch: self.configuration.epoch(),
            view: self.view,
            replica: 0,
            body: Body::Request(Request {
                client: self.id,
                session: if operation == Operation::Register {
                    0
                } else {
                    self.session
                },
                request,
                operation,
                body,
            }),
        };
        self.in_flight = Some(InFlight {
            operation,
            request,
            message: message.clone(),
            ticks_waiting: 0,
            timeout_ticks: self.request_timeout_ticks,
        });
        message
    }

    /// The in-flight message, to send again (to every member of the configuration known).
    pub fn in_flight_message(&self) -> Option<Message> {
        self.in_flight
            .as_ref()
            .map(|in_flight| in_flight.message.clone())
    }

    /// Advances one tick; returns the in-flight message when it is time to resend it.
    pub fn on_tick(&mut self) -> Option<Message> {
        let in_flight = self.in_flight.as_mut()?;
        in_flight.ticks_waiting += 1;
        if in_flight.ticks_waiting < in_flight.timeout_ticks {
            return None;
        }
        in_flight.ticks_waiting = 0;
        in_flight.timeout_ticks = (in_flight.timeout_ticks * 2).min(self.request_timeout_ticks * 8);
        Some(in_flight.message.clone())
    }

    /// Takes an answer. A NewEpoch answer naming a later configuration moves the
    /// administrator there (the in-flight request, restamped with the new epoch, is
    /// returned to be sent to its members); any other answer to the in-flight request
    /// ends it.
    pub fn on_message(&mut self, message: &Message) -> (Option<AdminOutcome>, Option<Message>) {
        let Body::Reply(reply) = &message.body else {
            return (None, None);
        };
        if reply.client != self.id {
            return (None, None);
        }
        if reply.status == ReplyStatus::NewEpoch {
            return (None, self.follow(reply));
        }
        let Some(in_flight) = &self.in_flight else {
            return (None, None);
        };
        if message.epoch == self.configuration.epoch() && message.view > self.view {
            self.view = message.view;
        }
        // As `ClientSession::on_message`: a registration's answer, and only it, names its
        // own op as the session.
        let registration_reply = reply.status == ReplyStatus::Ok && reply.op == reply.session;
        let read_answer = matches!(reply.status, ReplyStatus::Read | ReplyStatus::Behind);
        let matches = !read_answer
            && reply.request == in_flight.request
            && match in_flight.operation {
                Operation::Register => registration_reply || reply.status == ReplyStatus::Evicted,
                _ => reply.session == self.session && !registration_reply,
            };
        if !matches {
            return (None, None);
        }
        let operation = in_flight.operation;
        let request = in_flight.request;
        self.in_flight = None;
        let outcome = match (reply.status, operation) {
            (ReplyStatus::Ok, Operation::Register) => {
                self.session = reply.session;
                self.request = 0;
                AdminOutcome::Registered {
                    session: reply.session,
                }
            }
            (ReplyStatus::Ok, _) => {
                self.request = request;
                AdminOutcome::Reconfigured {
                    request,
                    op: reply.op,
                    result: reply.result.clone(),
                }
            }
            (ReplyStatus::Evicted, _) => {
                self.session = 0;
                AdminOutcome::Evicted
            }
            (ReplyStatus::Rejected, _) => {
                // Never ordered; a fresh session, so that a late copy of this refusal
                // never answers a later request (as `ClientSession` does).
                self.session = 0;
                AdminOutcome::Rejected {
                    request,
                    reason: String::from_utf8_lossy(&reply.result).into_owned(),
                }
            }
            (ReplyStatus::NewEpoch, _) => unreachable!("handled above"),
            (ReplyStatus::Read | ReplyStatus::Behind, _) => unreachable!("never matches"),
        };
        (Some(outcome), None)
    }

    /// Moves to the configuration a NewEpoch answer names, if later than the one known;
    /// returns the in-flight request restamped for it.
    fn follow(&mut self, reply: &Reply) -> Option<Message> {
        let next = Configuration::from_bytes(&reply.result)?;
        if next.epoch() <= self.configuration.epoch() {
            return None;
        }
        self.configuration = next;
        self.view = 0;
        let in_flight = self.in_flight.as_mut()?;
        in_flight.message.epoch = self.configuration.epoch();
        in_flight.message.view = 0;
        Some(in_flight.message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(change: Change, pick: u64) -> PlannedChange {
        PlannedChange {
            at: 0,
            warm_up_steps: 0,
            change,
            pick,
            witness_pick: Some(pick),
        }
    }

    #[test]
    fn shapes_keep_an_odd_number_of_at_least_three() {
        for ids in [
            vec![0, 1, 2],
            vec![0, 1, 2, 3, 4],
            vec![0, 1, 2, 3, 4, 5, 6],
        ] {
            for change in [Change::Grow, Change::Shrink, Change::Replace] {
                for pick in 0..50 {
                    let (kept, added) = planned(change, pick).shape(&ids);
                    let size = kept.len() + added;
                    assert!(
                        size >= 3 && size % 2 == 1 && size <= 7,
                        "{change:?} {ids:?}"
                    );
                    assert!(kept.iter().all(|id| ids.contains(id)));
                }
            }
        }
        assert_eq!(
            planned(Change::Grow, 0).shape(&[0, 1, 2]),
            (vec![0, 1, 2], 2)
        );
        assert_eq!(planned(Change::Shrink, 0).shape(&[0, 1, 2, 3, 4]).1, 0);
        assert_eq!(
            planned(Change::Replace, 1).shape(&[0, 1, 2]),
            (vec![0, 2], 1)
        );
    }

    #[test]
    fn planned_witnesses_are_at_most_f_and_sometimes_new() {
        let current = Configuration::initial_with_witnesses(5, ReplicaSet::from_low_bits(0b00110))
            .expect("two witnesses of five");
        let ids: Vec<ReplicaId> = current.ids().collect();
        let (mut gained, mut none) = (0, 0);
        for change in [Change::Grow, Change::Shrink, Change::Replace] {
            for pick in 0..200 {
                let planned = planned(change, pick);
                let (kept, added) = planned.shape(&ids);
                let count = kept.len() + added;
                let next = current.propose(&kept, &vec![Bytes::new(); added]);
                let witnesses = planned.witnesses(&kept, added);
                let proposal = next.clone().with_proposed_witnesses(witnesses);
                assert!(witnesses.len() <= (count - 1) / 2);
                if proposal.members() != current.members() || witnesses != current.witnesses() {
                    assert_eq!(current.check_successor(&proposal), Ok(()));
                }
                for index in witnesses.iter() {
                    let id = next.id_of(index);
                    let stays = current.index_of(id).is_some_and(|i| current.is_witness(i));
                    gained += (!stays) as usize;
                }
                none += witnesses.is_empty() as usize;
            }
        }
        assert!(
            gained > 0 && none > 0,
            "{gained} gained, {none} without witnesses"
        );
        let before = PlannedChange {
            witness_pick: None,
            ..planned(Change::Grow, 0)
        };
        assert!(before.witnesses(&ids, 2).is_empty());
    }

    #[test]
    fn a_new_epoch_answer_moves_the_administrator_and_restamps_its_request() {
        let mut admin = Admin::new(9, Configuration::initial(3), 4);
        let _ = admin.register();
        let next = Configuration::initial(3).propose(&[0, 1, 2], &[Bytes::new(), Bytes::new()]);
        let answer = |status, result: Bytes, epoch| Message {
            epoch,
            view: 0,
            replica: 0,
            body: Body::Reply(Reply {
                client: 9,
                session: 0,
                request: 1,
                op: 0,
                status,
                result,
            }),
        };
        let (outcome, resend) =
            admin.on_message(&answer(ReplyStatus::NewEpoch, next.to_bytes(), 1));
        assert_eq!(outcome, None);
        assert_eq!(resend.expect("resent").epoch, 1);
        assert_eq!(admin.configuration(), &next);
        // A stale NewEpoch (the epoch it knows) changes nothing.
        let (_, resend) = admin.on_message(&answer(ReplyStatus::NewEpoch, next.to_bytes(), 1));
        assert!(resend.is_none());
    }
}
