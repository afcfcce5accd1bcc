//! The simulator's safety checkers, run after every step:
//! - **agreement**: every op a replica commits equals the canonical entry recorded the
//!   first time any replica committed that op (paper 4.2's safety property: a committed
//!   op survives every view change at its op number);
//! - **durability of replies**: the canonical log never changes once recorded, and an op
//!   named in an Ok reply holds exactly the replied-to client, session and request;
//! - **linearizable, exactly-once results**: every Ok reply's result equals the
//!   [`Model`]'s result for that op (the log order is a legal sequential order); a request
//!   submitted after another's reply reached a client commits at a later op (real-time
//!   order, the other half of linearizability); and a replica's service state equals the
//!   model's whenever both have applied the same ops (a double execution shows up here).
//!
//! Liveness is the cluster's business: it needs the notion of time.

use super::model::{Model, ModelOutcome};
use crate::protocol::Replica;
use crate::protocol::{ClientId, Entry, Op, Operation, ReplicaIndex, RequestNumber, Session};
use crate::service::{Kv, StateMachine};
use bytes::Bytes;
use std::fmt;

/// A broken check: which one, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The check's name: `agreement`, `durability`, `linearizability`, `exactly_once`,
    /// `liveness`, `replica_panic`.
    pub check: &'static str,
    /// What was seen.
    pub details: String,
}

impl Failure {
    /// A failure of `check`.
    pub fn new(check: &'static str, details: String) -> Failure {
        Failure { check, details }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.details)
    }
}

/// An answer a client accepted, to be checked against the canonical log and the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    /// `Outcome::Registered`: the session is the op the registration committed at.
    Registered {
        /// The client.
        client: ClientId,
        /// The session (an op number).
        session: Session,
    },
    /// `Outcome::Completed`.
    Completed {
        /// The client.
        client: ClientId,
        /// The session the request was sent in.
        session: Session,
        /// The request.
        request: RequestNumber,
        /// The op the reply names.
        op: Op,
        /// The result the reply carries.
        result: Bytes,
    },
}

impl ClientReply {
    fn op(&self) -> Op {
        match self {
            ClientReply::Registered { session, .. } => *session,
            ClientReply::Completed { op, .. } => *op,
        }
    }
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckCounts {
    /// Commits compared with the canonical log (one per replica per op it still held).
    pub commits_checked: u64,
    /// Replies checked against the model.
    pub replies_checked: u64,
    /// Service snapshots compared with the model's.
    pub snapshots_checked: u64,
}

/// The canonical log, the model, and what each replica has been checked up to.
pub struct Checker {
    /// `canonical[op - 1]`: the entry first committed at `op`, once seen.
    canonical: Vec<Option<Entry>>,
    model: Model,
    /// Per replica: its commit number at the last check.
    checked: Vec<Op>,
    /// Replies naming ops the model has not applied yet.
    pending: Vec<ClientReply>,
    /// The highest op named by a reply any client has accepted so far.
    answered_op_max: Op,
    /// What was checked.
    pub counts: CheckCounts,
}

impl Checker {
    /// A checker for `replica_count` replicas whose client tables hold `clients_max`.
    pub fn new(replica_count: usize, clients_max: usize) -> Checker {
        Checker {
            canonical: Vec::new(),
            model: Model::new(clients_max),
            checked: vec![0; replica_count],
            pending: Vec::new(),
            answered_op_max: 0,
            counts: CheckCounts::default(),
        }
    }

    /// The reference model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The canonical entry at `op`, if any replica was seen committing it.
    pub fn canonical(&self, op: Op) -> Option<&Entry> {
        self.canonical.get((op as usize).checked_sub(1)?)?.as_ref()
    }

    /// The highest op known committed.
    pub fn committed_max(&self) -> Op {
        self.canonical.len() as Op
    }

    /// Forgets a replica's progress: it restarted with an empty memory.
    pub fn on_restart(&mut self, replica: ReplicaIndex) {
        self.checked[replica as usize] = 0;
    }

    /// Agreement: compares the ops `replica` committed since the last check with the
    /// canonical log, recording those seen for the first time. Returns whether its commit
    /// number moved.
    pub fn check_replica(
        &mut self,
        index: ReplicaIndex,
        replica: &Replica<Kv>,
    ) -> Result<bool, Failure> {
        let commit = replica.commit();
        let checked = self.checked[index as usize];
        if commit < checked {
            return Err(Failure::new(
                "agreement",
                format!("replica {index} commit went backwards from {checked} to {commit} without a restart"),
            ));
        }
        for op in checked + 1..=commit {
            // A replica that jumped forward through a checkpoint no longer holds the ops
            // below it: nothing to compare.
            if let Some(entry) = replica.entry(op) {
                self.record(index, op, entry)?;
            }
        }
        self.checked[index as usize] = commit;
        Ok(commit != checked)
    }

    /// Compares one committed entry with the canonical log, recording it if new.
    pub fn record(&mut self, index: ReplicaIndex, op: Op, entry: &Entry) -> Result<(), Failure> {
        self.counts.commits_checked += 1;
        let slot = op as usize - 1;
        if self.canonical.len() <= slot {
            self.canonical.resize(slot + 1, None);
        }
        match &self.canonical[slot] {
            None => self.canonical[slot] = Some(entry.clone()),
            Some(canonical) if canonical == entry => {}
            Some(canonical) => {
                return Err(Failure::new(
                    "agreement",
                    format!(
                        "replica {index} committed {} at op {op}, but {} was committed there first",
                        describe(entry),
                        describe(canonical)
                    ),
                ))
            }
        }
        Ok(())
    }

    /// Applies every newly contiguous canonical op to the model, then checks the replies
    /// that were waiting for them.
    pub fn advance_model(&mut self) -> Result<(), Failure> {
        let before = self.model.applied();
        while let Some(Some(entry)) = self.canonical.get(self.model.applied() as usize) {
            let op = self.model.applied() + 1;
            self.model.apply(op, entry);
        }
        if self.model.applied() == before || self.pending.is_empty() {
            return Ok(());
        }
        let applied = self.model.applied();
        let ready: Vec<ClientReply> = {
            let (ready, waiting) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|r| r.op() <= applied);
            self.pending = waiting;
            ready
        };
        ready
            .into_iter()
            .try_for_each(|reply| self.check_reply(reply))
    }

    /// The highest op any accepted reply named: a client records it when it submits, and
    /// its request must then commit above it.
    pub fn answered_op_max(&self) -> Op {
        self.answered_op_max
    }

    /// Durability and linearizability of one accepted reply to a request submitted when
    /// [`Checker::answered_op_max`] was `answered_before_submit`.
    pub fn on_reply(
        &mut self,
        reply: ClientReply,
        answered_before_submit: Op,
    ) -> Result<(), Failure> {
        if reply.op() <= answered_before_submit {
            return Err(Failure::new(
                "linearizability",
                format!(
                    "{reply:?} names op {}, but the request was submitted after a reply naming op {answered_before_submit} had reached a client (real-time order)",
                    reply.op()
                ),
            ));
        }
        self.answered_op_max = self.answered_op_max.max(reply.op());
        if let Some(entry) = self.canonical(reply.op()) {
            let expected = match &reply {
                ClientReply::Registered { client, .. } => {
                    entry.operation == Operation::Register && entry.client == *client
                }
                ClientReply::Completed {
                    client,
                    session,
                    request,
                    ..
                } => {
                    entry.operation == Operation::Apply
                        && (entry.client, entry.session, entry.request)
                            == (*client, *session, *request)
                }
            };
            if !expected {
                return Err(Failure::new(
                    "durability",
                    format!(
                        "{reply:?} names op {}, which holds {}",
                        reply.op(),
                        describe(entry)
                    ),
                ));
            }
        }
        if reply.op() > self.model.applied() {
            self.pending.push(reply);
            return Ok(());
        }
        self.check_reply(reply)
    }

    fn check_reply(&mut self, reply: ClientReply) -> Result<(), Failure> {
        self.counts.replies_checked += 1;
        let outcome = self.model.outcome(reply.op());
        let fine = match (&reply, outcome) {
            (
                ClientReply::Registered { client, .. },
                Some(ModelOutcome::Registered { client: c }),
            ) => client == c,
            (
                ClientReply::Completed {
                    client,
                    session,
                    request,
                    result,
                    ..
                },
                Some(ModelOutcome::Executed {
                    client: c,
                    session: s,
                    request: r,
                    result: expected,
                }),
            ) => (client, session, request, result) == (c, s, r, expected),
            _ => false,
        };
        if fine {
            return Ok(());
        }
        Err(Failure::new(
            "linearizability",
            format!("client accepted {reply:?}, but the reference model says {outcome:?}"),
        ))
    }

    /// Exactly-once: a replica that has applied exactly the ops the model has must hold the
    /// same service state. Skipped (returns `Ok(false)`) when their op numbers differ.
    pub fn check_snapshot(
        &mut self,
        index: ReplicaIndex,
        replica: &Replica<Kv>,
    ) -> Result<bool, Failure> {
        if replica.commit() != self.model.applied() || self.model.applied() == 0 {
            return Ok(false);
        }
        self.counts.snapshots_checked += 1;
        let state = replica.service().snapshot();
        let expected = self.model.snapshot();
        if state != expected {
            return Err(Failure::new(
                "exactly_once",
                format!(
                    "replica {index} at commit {} has service state {state:?}, the reference model has {expected:?}",
                    replica.commit()
                ),
            ));
        }
        Ok(true)
    }

    /// Replies still waiting for ops the model has not applied.
    pub fn replies_pending(&self) -> usize {
        self.pending.len()
    }

    /// Durability at the end of a run: a reply still waiting names an op that no replica
    /// was ever seen committing (every op a replica replies for is seen committed in the
    /// same input that produced the reply). Only decidable when the model has applied every
    /// op seen committed.
    pub fn check_no_reply_beyond_the_log(&self) -> Result<(), Failure> {
        if self.model.applied() < self.committed_max() {
            return Ok(());
        }
        match self.pending.first() {
            None => Ok(()),
            Some(reply) => Err(Failure::new(
                "durability",
                format!(
                    "a client accepted {reply:?}, but no replica ever committed op {} (highest committed op {})",
                    reply.op(),
                    self.committed_max()
                ),
            )),
        }
    }
}

/// A one-line description of an entry for violation reports.
pub fn describe(entry: &Entry) -> String {
    format!(
        "{:?}(client {:x}, session {}, request {}, timestamp {}, body {:?})",
        entry.operation, entry.client, entry.session, entry.request, entry.timestamp, entry.body
    )
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::{apply, b, register};
    use super::*;
    use crate::service::kv::{KvOp, KvResult};

    fn checker_with(log: &[Entry]) -> Checker {
        let mut checker = Checker::new(3, 8);
        for (i, entry) in log.iter().enumerate() {
            checker.record(0, i as Op + 1, entry).unwrap();
        }
        checker.advance_model().unwrap();
        checker
    }

    #[test]
    fn agreement_rejects_a_different_entry_at_a_committed_op() {
        let mut checker = checker_with(&[register(5)]);
        checker.record(1, 1, &register(5)).unwrap();
        let failure = checker.record(2, 1, &register(6)).unwrap_err();
        assert_eq!(failure.check, "agreement");
        assert_eq!(
            checker.canonical(1),
            Some(&register(5)),
            "the canonical log never changes"
        );
    }

    #[test]
    fn replies_must_match_the_log_and_the_model() {
        let put = KvOp::Put(b("a"), b("1"));
        let mut checker = checker_with(&[register(5), apply(5, 1, 1, put)]);
        checker
            .on_reply(
                ClientReply::Registered {
                    client: 5,
                    session: 1,
                },
                0,
            )
            .unwrap();
        let ok = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 1,
            op: 2,
            result: KvResult::Ok.encode(),
        };
        checker.on_reply(ok, 0).unwrap();
        let wrong_result = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 1,
            op: 2,
            result: KvResult::Nil.encode(),
        };
        assert_eq!(
            checker.on_reply(wrong_result, 0).unwrap_err().check,
            "linearizability"
        );
        let wrong_op = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 1,
            op: 1,
            result: KvResult::Ok.encode(),
        };
        assert_eq!(
            checker.on_reply(wrong_op, 0).unwrap_err().check,
            "durability"
        );
        let wrong_register = ClientReply::Registered {
            client: 6,
            session: 1,
        };
        assert_eq!(
            checker.on_reply(wrong_register, 0).unwrap_err().check,
            "durability"
        );
    }

    #[test]
    fn a_reply_ahead_of_the_model_waits_for_its_op() {
        let mut checker = checker_with(&[register(5)]);
        let get = KvOp::Get(b("a"));
        // Op 2 is known late (say, only after op 3): the reply waits, then is checked.
        let early = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 1,
            op: 2,
            result: KvResult::Ok.encode(),
        };
        checker.on_reply(early, 0).unwrap();
        assert_eq!(checker.replies_pending(), 1);
        checker.record(1, 3, &apply(5, 1, 2, get.clone())).unwrap();
        checker.advance_model().unwrap();
        assert_eq!(checker.replies_pending(), 1, "op 2 is still unknown");
        checker.record(1, 2, &apply(5, 1, 1, get)).unwrap();
        let failure = checker.advance_model().unwrap_err();
        assert_eq!(
            failure.check, "linearizability",
            "a get of a missing key is nil, not ok"
        );
        assert_eq!(checker.replies_pending(), 0);
        checker.check_no_reply_beyond_the_log().unwrap();
        // A reply for an op no replica ever committed is a durability failure at the end.
        let lost = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 3,
            op: 9,
            result: KvResult::Ok.encode(),
        };
        checker.on_reply(lost, 0).unwrap();
        let failure = checker.check_no_reply_beyond_the_log().unwrap_err();
        assert_eq!(failure.check, "durability");
    }

    #[test]
    fn a_request_submitted_after_a_reply_commits_after_it() {
        let get = KvOp::Get(b("a"));
        let mut checker = checker_with(&[register(5), register(6), apply(5, 1, 1, get)]);
        let registered = ClientReply::Registered {
            client: 6,
            session: 2,
        };
        checker.on_reply(registered, 0).unwrap();
        assert_eq!(checker.answered_op_max(), 2);
        // Client 5's request was submitted after client 6 heard of op 2, yet names op 2.
        let stale = ClientReply::Registered {
            client: 5,
            session: 1,
        };
        let failure = checker.on_reply(stale, 2).unwrap_err();
        assert_eq!(failure.check, "linearizability");
    }

    #[test]
    fn a_duplicate_in_the_log_never_answers_a_client() {
        let put = KvOp::Put(b("a"), b("1"));
        let mut checker = checker_with(&[
            register(5),
            apply(5, 1, 1, put.clone()),
            apply(5, 1, 1, put),
        ]);
        let dup = ClientReply::Completed {
            client: 5,
            session: 1,
            request: 1,
            op: 3,
            result: KvResult::Ok.encode(),
        };
        assert_eq!(
            checker.on_reply(dup, 0).unwrap_err().check,
            "linearizability"
        );
    }
}
