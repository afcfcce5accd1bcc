//! The reference model: what a correct cluster must compute, from the committed log alone.
//!
//! It applies the canonical committed log in op order to its own [`Kv`] with the client
//! table's semantics (paper 4.1 "client table", 4.5 sessions registered through the log):
//! - `Register`: the session is the op; if the client already has a session it is
//!   replaced; if the table is full, the session with the smallest latest-committed op is
//!   evicted first.
//! - `Apply`: executes only if the entry's session is the client's session in the table and
//!   its request is exactly one past the last; a request at or below the last is a
//!   duplicate and does not execute; an unknown or mismatched session is evicted, not
//!   executed.
//!
//! The checker compares every reply a client receives with [`Model::outcome`] at the
//! reply's op, a replica's service snapshot with the model's when both have applied the
//! same ops, every Evicted reply with the op at which the model's table lost the session
//! ([`Model::session_end`]), and every replica checkpoint with the model's table and
//! service at the checkpoint's op ([`Model::checkpoint`]).

use super::service::SimService;
use crate::protocol::{ClientId, Entry, Op, Operation, RequestNumber, Session};
use crate::service::{Kv, Snapshot};
use bytes::Bytes;
use std::collections::HashMap;

/// What the committed entry at one op did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelOutcome {
    /// A session was opened; its number is the op.
    Registered {
        /// The client.
        client: ClientId,
    },
    /// The request executed (exactly once, here).
    Executed {
        /// The client.
        client: ClientId,
        /// Its session.
        session: Session,
        /// The request.
        request: RequestNumber,
        /// The service's result.
        result: Bytes,
    },
    /// A duplicate of a request that already executed: nothing happened.
    Duplicate,
    /// The session was not in the table (or no longer): nothing happened.
    Evicted,
    /// A request number beyond the next one: nothing happened.
    OutOfOrder,
}

#[derive(Clone, Debug)]
struct ClientState {
    session: Session,
    request: RequestNumber,
    /// The op of the session's latest committed entry: eviction picks the smallest.
    latest_op: Op,
    /// The registration attempt (the Register entry's request number) that opened it.
    registration: RequestNumber,
    /// The result of the latest executed request (empty after the registration).
    reply: Bytes,
}

/// One session of the model's client table, as a replica's table must hold it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModelSession {
    /// The client.
    pub client: ClientId,
    /// Its session number.
    pub session: Session,
    /// The latest executed request number.
    pub request: RequestNumber,
    /// The op of the latest executed request (or of the registration).
    pub op: Op,
    /// The registration attempt that opened the session.
    pub registration: RequestNumber,
    /// The latest request's result.
    pub reply: Bytes,
}

/// The model's state at a checkpoint op: its client table (sorted by client) and its
/// service snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelCheckpoint {
    /// The client table.
    pub sessions: Vec<ModelSession>,
    /// The service snapshot (pages).
    pub service: Snapshot,
}

/// The reference model: a fresh instance of the service the replicas run.
pub struct Model<S: SimService = Kv> {
    clients_max: usize,
    service: S,
    table: HashMap<ClientId, ClientState>,
    /// `outcomes[op - 1]`: what op did. The model has applied ops `1..=outcomes.len()`.
    outcomes: Vec<ModelOutcome>,
    /// Sessions evicted so far (a check that eviction happens at all).
    pub evictions: u64,
    /// Per (client, session): the op at which the session left the table (evicted, or
    /// replaced by the client's next registration). Sessions never come back: a session
    /// number is the op of its registration.
    sessions_ended: HashMap<(ClientId, Session), Op>,
    /// Replicas checkpoint every this many ops; the model keeps its state at those ops.
    checkpoint_interval_ops: Option<u64>,
    checkpoints: HashMap<Op, ModelCheckpoint>,
}

impl Model<Kv> {
    /// An empty model of the key-value service with a client table of `clients_max`
    /// sessions.
    pub fn new(clients_max: usize) -> Model<Kv> {
        Model::for_service(clients_max)
    }

    /// The key-value state after the last applied op.
    pub fn kv(&self) -> &Kv {
        &self.service
    }
}

impl<S: SimService> Model<S> {
    /// An empty model of `S` with a client table of `clients_max` sessions.
    pub fn for_service(clients_max: usize) -> Model<S> {
        assert!(clients_max > 0);
        Model {
            clients_max,
            service: S::fresh(),
            table: HashMap::new(),
            outcomes: Vec::new(),
            evictions: 0,
            sessions_ended: HashMap::new(),
            checkpoint_interval_ops: None,
            checkpoints: HashMap::new(),
        }
    }

    /// Keeps the model's client table and service at every multiple of `interval_ops`,
    /// for comparison with the replicas' checkpoints.
    pub fn keep_checkpoints(&mut self, interval_ops: u64) {
        assert!(interval_ops > 0);
        self.checkpoint_interval_ops = Some(interval_ops);
    }

    /// The model's state right after applying `op`, if `op` is a checkpoint op the model
    /// has applied.
    pub fn checkpoint(&self, op: Op) -> Option<&ModelCheckpoint> {
        self.checkpoints.get(&op)
    }

    /// The op at which `client`'s session `session` left the table, if it has by the
    /// last applied op.
    pub fn session_end(&self, client: ClientId, session: Session) -> Option<Op> {
        self.sessions_ended.get(&(client, session)).copied()
    }

    fn take_checkpoint(&mut self, op: Op) {
        let mut sessions: Vec<ModelSession> = self
            .table
            .iter()
            .map(|(&client, state)| ModelSession {
                client,
                session: state.session,
                request: state.request,
                op: state.latest_op,
                registration: state.registration,
                reply: state.reply.clone(),
            })
            .collect();
        sessions.sort();
        let service = self.service.snapshot();
        self.checkpoints
            .insert(op, ModelCheckpoint { sessions, service });
    }

    /// The service's state right after `op` (at most [`applied`](Self::applied)), rebuilt
    /// from the latest model checkpoint at or before it (or from a fresh instance) by
    /// applying the ops after it that executed, whose entries `entry` gives: what a
    /// replica whose commit number was `op` held (a backup read's state, paper 6.3.2).
    /// `None` if an entry is missing or a checkpoint does not restore.
    pub fn service_at<'a>(&self, op: Op, entry: impl Fn(Op) -> Option<&'a Entry>) -> Option<S> {
        assert!(op <= self.applied(), "the model has not reached op {op}");
        let base = self
            .checkpoint_interval_ops
            .map(|interval| op - op % interval)
            .filter(|base| self.checkpoints.contains_key(base))
            .unwrap_or(0);
        let mut service = S::fresh();
        if let Some(checkpoint) = self.checkpoints.get(&base) {
            service.restore(&checkpoint.service).ok()?;
        }
        for at in base + 1..=op {
            // Only an executed `Apply` changed the state (a query, a reconfiguration, a
            // registration, a duplicate or an evicted request did not).
            if let Some(ModelOutcome::Executed { .. }) = self.outcome(at) {
                let entry = entry(at)?;
                if entry.operation == Operation::Apply {
                    service.apply(at, entry.timestamp, &entry.body);
                }
            }
        }
        Some(service)
    }

    /// The last op applied.
    pub fn applied(&self) -> Op {
        self.outcomes.len() as Op
    }

    /// What `op` did, if the model has applied it.
    pub fn outcome(&self, op: Op) -> Option<&ModelOutcome> {
        if op == 0 {
            return None;
        }
        self.outcomes.get(op as usize - 1)
    }

    /// The service state after the last applied op.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// Applies the next committed entry; `op` must be `applied() + 1`. An `Err` is the
    /// embedder's model refusing a result ([`SimService::check_result`]).
    pub fn apply(&mut self, op: Op, entry: &Entry) -> Result<(), String> {
        assert_eq!(
            op,
            self.applied() + 1,
            "the model applies the log in op order"
        );
        let outcome = match entry.operation {
            Operation::Register => self.register(op, entry.client, entry.request),
            Operation::Apply | Operation::Query | Operation::Reconfigure => self.execute(op, entry),
            Operation::Read | Operation::LeaseRead => {
                return Err(format!("op {op}: a read was ordered"))
            }
        };
        let checked = match &outcome {
            ModelOutcome::Executed { result, .. } => self
                .service
                .check_result(&entry.body, result)
                .map_err(|reason| format!("op {op}: {reason}")),
            _ => Ok(()),
        };
        self.outcomes.push(outcome);
        if self
            .checkpoint_interval_ops
            .is_some_and(|interval| op.is_multiple_of(interval))
        {
            self.take_checkpoint(op);
        }
        checked
    }

    fn register(&mut self, op: Op, client: ClientId, registration: RequestNumber) -> ModelOutcome {
        if !self.table.contains_key(&client) && self.table.len() >= self.clients_max {
            // Oldest by latest committed op; ops are unique, so there are no ties.
            let (&oldest, _) = self
                .table
                .iter()
                .min_by_key(|(_, state)| state.latest_op)
                .expect("table is full");
            let evicted = self.table.remove(&oldest).expect("present");
            self.sessions_ended.insert((oldest, evicted.session), op);
            self.evictions += 1;
        }
        let replaced = self.table.insert(
            client,
            ClientState {
                session: op,
                request: 0,
                latest_op: op,
                registration,
                reply: Bytes::new(),
            },
        );
        if let Some(replaced) = replaced {
            self.sessions_ended.insert((client, replaced.session), op);
        }
        ModelOutcome::Registered { client }
    }

    fn execute(&mut self, op: Op, entry: &Entry) -> ModelOutcome {
        let Some(state) = self.table.get_mut(&entry.client) else {
            return ModelOutcome::Evicted;
        };
        if state.session != entry.session {
            return ModelOutcome::Evicted;
        }
        if entry.request <= state.request {
            return ModelOutcome::Duplicate;
        }
        if entry.request != state.request + 1 {
            return ModelOutcome::OutOfOrder;
        }
        state.request = entry.request;
        state.latest_op = op;
        // A reconfiguration changes the members, not the service; its reply is empty.
        let result = match entry.operation {
            Operation::Reconfigure => Bytes::new(),
            // A strict read answers at its op and changes nothing.
            Operation::Query => self.service.query(&entry.body),
            _ => self.service.apply(op, entry.timestamp, &entry.body),
        };
        state.reply = result.clone();
        ModelOutcome::Executed {
            client: entry.client,
            session: entry.session,
            request: entry.request,
            result,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::service::kv::{KvOp, KvResult};

    pub(crate) fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    pub(crate) fn register(client: ClientId) -> Entry {
        Entry {
            client,
            session: 0,
            request: 0,
            timestamp: 0,
            operation: Operation::Register,
            body: Bytes::new(),
        }
    }

    pub(crate) fn apply(
        client: ClientId,
        session: Session,
        request: RequestNumber,
        op: KvOp,
    ) -> Entry {
        Entry {
            client,
            session,
            request,
            timestamp: 0,
            operation: Operation::Apply,
            body: op.encode(),
        }
    }

    fn result(model: &Model, op: Op) -> KvResult {
        match model.outcome(op) {
            Some(ModelOutcome::Executed { result, .. }) => KvResult::decode(result).unwrap(),
            other => panic!("op {op} did not execute: {other:?}"),
        }
    }

    #[test]
    fn executes_each_request_once() {
        let mut model = Model::new(4);
        let log = [
            register(7),                                     // op 1: session 1
            apply(7, 1, 1, KvOp::Cas(b("k"), None, b("x"))), // op 2
            apply(7, 1, 1, KvOp::Cas(b("k"), None, b("x"))), // op 3: duplicate
            apply(7, 1, 2, KvOp::Get(b("k"))),               // op 4
            apply(7, 1, 4, KvOp::Put(b("k"), b("z"))),       // op 5: skips a number
            apply(9, 1, 1, KvOp::Put(b("k"), b("y"))),       // op 6: client 9 never registered
        ];
        for (i, entry) in log.iter().enumerate() {
            model.apply(i as Op + 1, entry).unwrap();
        }
        assert_eq!(
            model.outcome(1),
            Some(&ModelOutcome::Registered { client: 7 })
        );
        assert_eq!(result(&model, 2), KvResult::Ok);
        assert_eq!(model.outcome(3), Some(&ModelOutcome::Duplicate));
        assert_eq!(result(&model, 4), KvResult::Value(b("x")));
        assert_eq!(model.outcome(5), Some(&ModelOutcome::OutOfOrder));
        assert_eq!(model.outcome(6), Some(&ModelOutcome::Evicted));
        assert_eq!(model.outcome(7), None);
        let mut kv = Kv::new();
        kv.execute(KvOp::Put(b("k"), b("x")));
        assert_eq!(model.kv(), &kv);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_committed_session() {
        let mut model = Model::new(2);
        model.apply(1, &register(1)).unwrap(); // session 1
        model.apply(2, &register(2)).unwrap(); // session 2
        model.apply(3, &apply(1, 1, 1, KvOp::Get(b("a")))).unwrap(); // client 1 is now more recent than 2
        model.apply(4, &register(3)).unwrap(); // evicts client 2
        assert_eq!(model.evictions, 1);
        model.apply(5, &apply(2, 2, 1, KvOp::Get(b("a")))).unwrap();
        assert_eq!(model.outcome(5), Some(&ModelOutcome::Evicted));
        model.apply(6, &apply(1, 1, 2, KvOp::Get(b("a")))).unwrap();
        assert_eq!(result(&model, 6), KvResult::Nil);
        // Re-registering replaces the client's own session without evicting anyone.
        model.apply(7, &register(1)).unwrap();
        assert_eq!(model.evictions, 1);
        model.apply(8, &apply(1, 1, 3, KvOp::Get(b("a")))).unwrap();
        assert_eq!(
            model.outcome(8),
            Some(&ModelOutcome::Evicted),
            "the old session is gone"
        );
        assert_eq!(model.session_end(2, 2), Some(4), "evicted by op 4");
        assert_eq!(model.session_end(1, 1), Some(7), "replaced at op 7");
        assert_eq!(model.session_end(1, 7), None);
        model.apply(9, &apply(1, 7, 1, KvOp::Get(b("a")))).unwrap();
        assert_eq!(result(&model, 9), KvResult::Nil);
    }
}
