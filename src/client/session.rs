//! A client session, sans-IO (paper 4.1 client side, 4.5): registration, request numbers,
//! primary discovery, retries and eviction. A driver (the blocking client, the pipelined
//! client, the simulator) feeds it replies and ticks and sends what it asks to send.
//!
//! One request is in flight per session: that is what lets the replicas' client table keep
//! a single reply per client and answer a retry from it (exactly-once).
//!
//! Reads come in two kinds ([`ReadMode`]). A strict read is an `Operation::Query`,
//! ordered through the log like a write (linearizable). A backup read (paper 6.3.2) is an
//! `Operation::Read` sent to one replica at a time, round robin over the configuration, and
//! names the highest op the session has seen ([`ClientSession::seen`]: its replies' ops and
//! its reads' commit numbers); the replica answers once it has executed that op, so the
//! session reads its own writes and never goes back in time. A lease read (paper 6.3.1)
//! is an `Operation::LeaseRead` sent to the primary, which answers it from its state
//! while it holds a lease (linearizable); when it holds none it answers `Behind`, and the
//! session sends the query again as a strict read, through the log, at its next tick:
//! never a stale answer. Reads are numbered apart from requests (they take no place in
//! the client table) and answered with their own statuses (`Read`, `Behind`), so no
//! answer to a read can pass for a request's or the reverse.

use crate::protocol::configuration::{check_witnesses, primary_among};
use crate::protocol::{
    Body, ClientId, Configuration, Message, Op, Operation, ReplicaIndex, ReplicaSet, Reply,
    ReplyStatus, Request, RequestNumber, Session, View,
};
use bytes::Bytes;

/// Where a session wants a message sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// To one replica: the one the session believes is primary.
    Replica(ReplicaIndex),
    /// To every replica: the primary is unknown after a timeout.
    All,
}

/// What a reply meant to the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Registration committed: requests may now be submitted.
    Registered {
        /// The session number (the op the registration committed at).
        session: Session,
    },
    /// The in-flight request committed and executed exactly once.
    Completed {
        /// Its request number.
        request: RequestNumber,
        /// The op it committed at.
        op: Op,
        /// The service's result.
        result: Bytes,
    },
    /// The replicas refused the in-flight request without executing it (its operation is
    /// larger than they accept). The session is given up (a late copy of the refusal must
    /// never answer a later request): register again to continue.
    Rejected {
        /// The request refused.
        request: RequestNumber,
        /// Why, in the primary's words (empty: the operation exceeds the replicas'
        /// request size limit).
        reason: Bytes,
    },
    /// The session was evicted from the client table. The in-flight request may or may
    /// not have executed (once at most); register again to continue.
    Evicted {
        /// The request that was in flight, if any.
        request: Option<RequestNumber>,
    },
    /// The cluster moved to a later configuration (paper 7): the session follows it
    /// from now on (its epoch, member count and view 0). The request in flight stays in
    /// flight, now for the new epoch; the driver reaches `configuration`'s members and
    /// resends it there ([`ClientSession::in_flight`]). The session stays valid: the new
    /// epoch starts with the old one's client table.
    NewEpoch {
        /// The configuration now followed.
        configuration: Configuration,
    },
}

/// Why a request cannot be submitted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The session is not registered (call `register` and wait for `Registered`).
    #[error("the session is not registered")]
    NotRegistered,
    /// A request is already in flight on this session.
    #[error("a request is already in flight on this session")]
    Busy,
}

/// How a session reads (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// Through the log, at the primary: linearizable.
    #[default]
    Strict,
    /// At any replica that has executed what the session has seen: causal per session
    /// (reads its own writes, never goes back in time), may be stale.
    Backup,
    /// At the primary, from its state, while it holds a lease from f backups (paper
    /// 6.3.1); through the log when it holds none: linearizable.
    Lease,
}

impl ReadMode {
    /// The operation a read in this mode is sent as.
    pub fn operation(self) -> Operation {
        match self {
            ReadMode::Strict => Operation::Query,
            ReadMode::Backup => Operation::Read,
            ReadMode::Lease => Operation::LeaseRead,
        }
    }
}

impl std::str::FromStr for ReadMode {
    type Err = String;

    fn from_str(text: &str) -> Result<ReadMode, String> {
        match text {
            "strict" => Ok(ReadMode::Strict),
            "backup" => Ok(ReadMode::Backup),
            "lease" => Ok(ReadMode::Lease),
            other => Err(format!(
                "unknown read mode {other:?}: expected strict, lease or backup"
            )),
        }
    }
}

impl ReadMode {
    /// The mode's name, as `--reads` takes it.
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Strict => "strict",
            ReadMode::Backup => "backup",
            ReadMode::Lease => "lease",
        }
    }
}

impl std::fmt::Display for ReadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug)]
struct InFlight {
    message: Message,
    ticks_waiting: u64,
    timeout_ticks: u64,
    /// A backup read a replica could not answer: resend it elsewhere at the next tick
    /// (or a lease read fallen back to a strict read: send that).
    retry_now: bool,
}

/// One client session.
#[derive(Clone, Debug)]
pub struct ClientSession {
    client: ClientId,
    replica_count: u8,
    /// The witnesses of the configuration followed, a bit per index (paper 6.1): never
    /// primary, and they answer no reads.
    witnesses: u64,
    epoch: u32,
    view: View,
    session: Session,
    request: RequestNumber,
    /// Registrations started: a registration's request number, so that a late answer to
    /// an earlier registration is not taken for the current one.
    registrations: RequestNumber,
    in_flight: Option<InFlight>,
    request_timeout_ticks: u64,
    request_timeout_ticks_max: u64,
    /// The highest op any reply told the session of: a request's op, a registration's,
    /// a backup read's commit number. Never decreases.
    seen: Op,
    /// Backup reads started (their own numbering; see the module docs).
    reads: RequestNumber,
    /// The replica the next backup read goes to (round robin).
    read_next: ReplicaIndex,
}

impl ClientSession {
    /// A new, unregistered session. `client` must be random and never reused across
    /// restarts of the client process (the replicas key their table by it).
    pub fn new(client: ClientId, replica_count: u8, request_timeout_ticks: u64) -> ClientSession {
        assert!(client != 0, "client id 0 is reserved");
        assert!(replica_count > 0);
        assert!(request_timeout_ticks > 0);
        ClientSession {
            client,
            replica_count,
            witnesses: 0,
            epoch: 0,
            view: 0,
            session: 0,
            request: 0,
            registrations: 0,
            in_flight: None,
            request_timeout_ticks,
            request_timeout_ticks_max: request_timeout_ticks * 8,
            seen: 0,
            reads: 0,
            // Sessions start spread over the replicas.
            read_next: (client % u64::from(replica_count)) as ReplicaIndex,
        }
    }

    /// The session for a cluster whose first configuration has the witnesses whose bits
    /// `witnesses` sets (`Config::witnesses`): it sends neither requests nor reads there.
    pub fn with_witnesses(mut self, witnesses: u64) -> ClientSession {
        let set = ReplicaSet::from_low_bits(witnesses);
        if let Err(invalid) = check_witnesses(self.replica_count as usize, &set) {
            panic!(
                "witnesses {witnesses:#b} of {} replicas: {invalid}",
                self.replica_count
            );
        }
        self.witnesses = witnesses;
        self
    }

    /// The highest op the session has seen (paper 6.3.2): a backup read is answered only
    /// by a replica that has executed it.
    pub fn seen(&self) -> Op {
        self.seen
    }

    /// The client id.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The session number (0 while unregistered).
    pub fn session(&self) -> Session {
        self.session
    }

    /// The epoch of the configuration the session follows.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The request in flight, as it is resent, if any.
    pub fn in_flight(&self) -> Option<&Message> {
        self.in_flight.as_ref().map(|in_flight| &in_flight.message)
    }

    /// Follows `configuration` from now on if it is of a later epoch than the session's
    /// (a driver that learned of it another way, or from another session); returns
    /// whether it did. The request in flight is now for the new epoch.
    pub fn follow(&mut self, configuration: &Configuration) -> bool {
        if configuration.epoch() <= self.epoch {
            return false;
        }
        self.epoch = configuration.epoch();
        self.replica_count = configuration.replica_count();
        self.witnesses = configuration.witnesses().low_bits();
        self.read_next %= self.replica_count;
        self.view = 0;
        if let Some(in_flight) = self.in_flight.as_mut() {
            in_flight.message.epoch = self.epoch;
            in_flight.message.view = 0;
            in_flight.ticks_waiting = 0;
            // The new members may still be fetching the epoch's start for a moment (they
            // drop requests meanwhile): the first retry comes sooner than usual, and
            // backs off from there.
            in_flight.timeout_ticks = (self.request_timeout_ticks / 8).max(1);
        }
        true
    }

    /// Whether the session may submit.
    pub fn is_registered(&self) -> bool {
        self.session != 0
    }

    /// Whether a request (or registration) awaits its reply.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The replica believed to be primary.
    pub fn primary(&self) -> ReplicaIndex {
        primary_among(self.view, self.replica_count, self.witnesses)
    }

    /// The latest view the session has heard of.
    pub fn view(&self) -> View {
        self.view
    }

    /// Starts (or restarts, after eviction) registration: a fresh session (paper 4.5).
    pub fn register(&mut self) -> (Target, Message) {
        assert!(
            self.in_flight.is_none(),
            "register while a request is in flight"
        );
        self.session = 0;
        self.registrations = self.registrations.wrapping_add(1);
        self.request = self.registrations;
        let sent = self.send(Operation::Register, Bytes::new());
        self.request = 0;
        sent
    }

    /// Submits an operation; returns where to send it.
    pub fn submit(&mut self, body: Bytes) -> Result<(RequestNumber, Target, Message), SubmitError> {
        let (request, target, message) = self.submit_in_place(body)?;
        Ok((request, target, message.clone()))
    }

    /// Like [`submit`](Self::submit), but lends the message the session keeps for its
    /// retries instead of returning a copy: a driver that encodes it at once saves a clone
    /// and a drop of the message (two reference-count updates of its body) per operation.
    pub fn submit_in_place(
        &mut self,
        body: Bytes,
    ) -> Result<(RequestNumber, Target, &Message), SubmitError> {
        self.submit_operation(Operation::Apply, body)
    }

    /// Like [`submit_in_place`](Self::submit_in_place) for any operation a registered
    /// session sends: `Apply`, `Query` (a strict read), `Read` (a backup read of the
    /// query `body`; the session adds the op it has seen), or `Reconfigure` with the next
    /// configuration as `body` (paper 7.1; what `vsr admin reconfigure` sends). A read's
    /// number is its own (reads are numbered apart from requests).
    ///
    /// # Panics
    /// On `Operation::Register`: a session registers with [`register`](Self::register).
    pub fn submit_operation(
        &mut self,
        operation: Operation,
        body: Bytes,
    ) -> Result<(RequestNumber, Target, &Message), SubmitError> {
        assert_ne!(operation, Operation::Register, "register with `register`");
        if self.session == 0 {
            return Err(SubmitError::NotRegistered);
        }
        if self.in_flight.is_some() {
            return Err(SubmitError::Busy);
        }
        if operation.carries_seen() {
            let target = self.start_read(operation, &body);
            let in_flight = self.in_flight.as_ref().expect("just started");
            return Ok((self.reads, target, &in_flight.message));
        }
        self.request += 1;
        let target = self.start(operation, body);
        let in_flight = self.in_flight.as_ref().expect("just started");
        Ok((self.request, target, &in_flight.message))
    }

    fn send(&mut self, operation: Operation, body: Bytes) -> (Target, Message) {
        let target = self.start(operation, body);
        let in_flight = self.in_flight.as_ref().expect("just started");
        (target, in_flight.message.clone())
    }

    /// Puts a request in flight; returns where it goes.
    fn start(&mut self, operation: Operation, body: Bytes) -> Target {
        let message = Message {
            epoch: self.epoch,
            view: self.view,
            replica: 0,
            body: Body::Request(Request {
                client: self.client,
                session: self.session,
                request: self.request,
                operation,
                body,
            }),
        };
        self.in_flight = Some(InFlight {
            message,
            ticks_waiting: 0,
            timeout_ticks: self.request_timeout_ticks,
            retry_now: false,
        });
        Target::Replica(self.primary())
    }

    /// Puts a backup read (`Read`) or a lease read (`LeaseRead`) of `query` in flight;
    /// returns the replica it goes to: the next one round robin, or the primary.
    fn start_read(&mut self, operation: Operation, query: &[u8]) -> Target {
        self.reads = self.reads.wrapping_add(1);
        let message = Message {
            epoch: self.epoch,
            view: self.view,
            replica: 0,
            body: Body::Request(Request {
                client: self.client,
                session: self.session,
                request: self.reads,
                operation,
                body: Request::read_body(self.seen, query),
            }),
        };
        self.in_flight = Some(InFlight {
            message,
            ticks_waiting: 0,
            timeout_ticks: self.request_timeout_ticks,
            retry_now: false,
        });
        match operation {
            Operation::LeaseRead => Target::Replica(self.primary()),
            _ => Target::Replica(self.next_read_replica()),
        }
    }

    /// The replica for the next attempt at a backup read: every attempt goes to the
    /// next one, so reads spread over the configuration and a retry tries elsewhere.
    fn next_read_replica(&mut self) -> ReplicaIndex {
        let is_witness = |replica: ReplicaIndex| replica < 64 && self.witnesses >> replica & 1 == 1;
        // At most f witnesses: an active comes within f+1 steps.
        let mut replica = self.read_next % self.replica_count;
        for _ in 0..self.replica_count {
            if !is_witness(replica) {
                break;
            }
            replica = (replica + 1) % self.replica_count;
        }
        self.read_next = (replica + 1) % self.replica_count;
        replica
    }

    /// Handles a message from a replica; returns what it meant, if anything.
    pub fn on_message(&mut self, message: &Message) -> Option<Outcome> {
        let Body::Reply(reply) = &message.body else {
            return None;
        };
        self.on_reply(message.view, reply.clone())
    }

    /// [`on_message`](Self::on_message) for a reply sent in `view`, taken apart from its
    /// message: a driver reading a batch of replies gets them this way
    /// (`wire::Batch::replies`), and the result moves into the outcome uncopied.
    pub fn on_reply(&mut self, view: View, reply: Reply) -> Option<Outcome> {
        if reply.client != self.client {
            return None;
        }
        let in_flight = self.in_flight.as_ref()?;
        let Body::Request(request) = &in_flight.message.body else {
            unreachable!()
        };
        if reply.request != request.request {
            return None; // A late reply to an older request.
        }
        let is_read_answer = matches!(reply.status, ReplyStatus::Read | ReplyStatus::Behind);
        if request.operation.carries_seen() {
            return self.on_read_reply(view, reply);
        }
        if is_read_answer {
            return None; // An answer to a read, never to a request.
        }
        if reply.status == ReplyStatus::NewEpoch {
            // Where the cluster went (paper 7): answered to any request of an earlier
            // epoch, a registration included, in the request's own session.
            if reply.session != request.session {
                return None;
            }
            let configuration = Configuration::from_bytes(&reply.result)
                .filter(|configuration| configuration.is_well_formed())?;
            return self
                .follow(&configuration)
                .then_some(Outcome::NewEpoch { configuration });
        }
        let registering = request.operation == Operation::Register;
        // A registration's answer, and only it, names its own op as the session (a
        // request commits after its session's registration, so at a higher op); any other
        // answer must be for the session the request was sent in. Anything else is a late
        // reply to something earlier.
        let is_registration_reply = reply.status == ReplyStatus::Ok && reply.op == reply.session;
        let matches = if registering {
            is_registration_reply
        } else {
            reply.session == request.session && !is_registration_reply
        };
        if !matches {
            return None;
        }
        if view > self.view {
            self.view = view;
        }
        let request_number = request.request;
        self.in_flight = None;
        if reply.status == ReplyStatus::Ok {
            // A registration's op is its session; a request's, its place in the log.
            self.seen = self.seen.max(reply.op);
        }
        match reply.status {
            ReplyStatus::NewEpoch => unreachable!("handled above"),
            ReplyStatus::Read | ReplyStatus::Behind => unreachable!("handled above"),
            ReplyStatus::Evicted => {
                self.session = 0;
                self.request = 0;
                Some(Outcome::Evicted {
                    request: (!registering).then_some(request_number),
                })
            }
            ReplyStatus::Rejected if registering => None,
            ReplyStatus::Rejected => {
                // Never ordered. The next request would take this number again (the client
                // table expects it), and a late copy of this rejection (answering a retry)
                // would then pass for that request's answer. A fresh session instead:
                // replies to this one no longer match anything in flight.
                self.session = 0;
                self.request = 0;
                Some(Outcome::Rejected {
                    request: request_number,
                    reason: reply.result,
                })
            }
            ReplyStatus::Ok if registering => {
                assert!(reply.session > 0);
                self.session = reply.session;
                Some(Outcome::Registered {
                    session: reply.session,
                })
            }
            ReplyStatus::Ok => Some(Outcome::Completed {
                request: request_number,
                op: reply.op,
                result: reply.result,
            }),
        }
    }

    /// The answer to the backup or lease read in flight (its number matched).
    fn on_read_reply(&mut self, view: View, reply: Reply) -> Option<Outcome> {
        let in_flight = self.in_flight.as_mut().expect("a read is in flight");
        let Body::Request(request) = &in_flight.message.body else {
            unreachable!()
        };
        if reply.session != request.session {
            return None;
        }
        match reply.status {
            ReplyStatus::NewEpoch => {
                let configuration = Configuration::from_bytes(&reply.result)
                    .filter(|configuration| configuration.is_well_formed())?;
                self.follow(&configuration)
                    .then_some(Outcome::NewEpoch { configuration })
            }
            ReplyStatus::Behind if request.operation == Operation::LeaseRead => {
                // The primary holds no lease: the query goes through the log instead, as
                // a strict read (paper 6.3.1's fallback), sent at the next tick.
                if view > self.view {
                    self.view = view;
                }
                let query = request.read_query();
                self.request += 1;
                self.start(Operation::Query, query);
                self.in_flight.as_mut().expect("just started").retry_now = true;
                None
            }
            ReplyStatus::Behind => {
                // Try the next replica without waiting out the timeout.
                in_flight.retry_now = true;
                None
            }
            // An answer older than what the session has seen would take it back in time:
            // the replicas never send one (`reads`), and the session never takes one.
            ReplyStatus::Read if reply.op < self.seen => None,
            ReplyStatus::Read => {
                if view > self.view {
                    self.view = view; // A normal replica's view: one that exists.
                }
                let request_number = request.request;
                self.in_flight = None;
                self.seen = reply.op;
                Some(Outcome::Completed {
                    request: request_number,
                    op: reply.op,
                    result: reply.result,
                })
            }
            // Statuses of requests: not for a read.
            ReplyStatus::Ok | ReplyStatus::Evicted | ReplyStatus::Rejected => None,
        }
    }

    /// Advances one tick; returns a retry to send if the in-flight request timed out.
    ///
    /// A retry carries the same request number, so the client table answers it if it was
    /// already executed. It goes to every replica: only the primary acts on it, and its
    /// reply tells the session the current view. A backup read's retry goes to the next
    /// replica instead (at once when one answered `Behind`).
    pub fn on_tick(&mut self) -> Option<(Target, Message)> {
        let max = self.request_timeout_ticks_max;
        let in_flight = self.in_flight.as_mut()?;
        let is_read = matches!(
            &in_flight.message.body,
            Body::Request(request) if request.operation == Operation::Read
        );
        in_flight.ticks_waiting += 1;
        let retry_now = std::mem::take(&mut in_flight.retry_now);
        if !retry_now && in_flight.ticks_waiting < in_flight.timeout_ticks {
            return None;
        }
        in_flight.ticks_waiting = 0;
        if !retry_now {
            in_flight.timeout_ticks = (in_flight.timeout_ticks * 2).min(max);
        }
        let message = in_flight.message.clone();
        if is_read && retry_now {
            // A backup read a replica turned away goes to the next one.
            return Some((Target::Replica(self.next_read_replica()), message));
        }
        // Nothing heard in time: to every replica, a backup read too. The actives it
        // tried may all be gone (retired into a later epoch), and any member tells a
        // client of an earlier epoch where the cluster went; only a witness would be
        // left to ask, and it answers no read. A lease read, like a request, is answered
        // by the primary only.
        Some((Target::All, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Reply;

    fn reply(request: &Message, status: ReplyStatus, op: Op, result: Bytes) -> Message {
        let Body::Request(request) = &request.body else {
            panic!("a request")
        };
        Message {
            epoch: 0,
            view: 0,
            replica: 0,
            body: Body::Reply(Reply {
                client: request.client,
                session: if request.session == 0 {
                    op
                } else {
                    request.session
                },
                request: request.request,
                op,
                status,
                result,
            }),
        }
    }

    fn registered() -> ClientSession {
        let mut session = ClientSession::new(7, 3, 16);
        let (_, register) = session.register();
        let outcome = session.on_message(&reply(&register, ReplyStatus::Ok, 5, Bytes::new()));
        assert_eq!(outcome, Some(Outcome::Registered { session: 5 }));
        session
    }

    /// Submits a backup read of `query`; returns its number, target and message.
    fn backup_read(session: &mut ClientSession) -> (RequestNumber, Target, Message) {
        let (number, target, message) = session
            .submit_operation(Operation::Read, Bytes::from_static(b"get"))
            .unwrap();
        (number, target, message.clone())
    }

    #[test]
    fn backup_reads_carry_the_seen_op_and_go_round_robin() {
        let mut session = registered();
        assert_eq!(session.seen(), 5, "the registration's op was seen");
        let (_, _, write) = session.submit(Bytes::from_static(b"put")).unwrap();
        session.on_message(&reply(&write, ReplyStatus::Ok, 9, Bytes::new()));
        assert_eq!(session.seen(), 9);
        let mut targets = Vec::new();
        for answered_at in [9, 12, 11] {
            let (number, target, message) = backup_read(&mut session);
            let Body::Request(request) = &message.body else {
                panic!("a request")
            };
            assert_eq!(request.operation, Operation::Read);
            assert_eq!(request.read_seen(), Some(session.seen()));
            assert_eq!(&request.read_query()[..], b"get");
            targets.push(target);
            let answer = reply(
                &message,
                ReplyStatus::Read,
                answered_at,
                Bytes::from_static(b"v"),
            );
            let outcome = session.on_message(&answer);
            if answered_at < session.seen() {
                // Older than what the session saw: never taken.
                assert_eq!(outcome, None);
                assert!(session.is_busy());
                break;
            }
            assert_eq!(
                outcome,
                Some(Outcome::Completed {
                    request: number,
                    op: answered_at,
                    result: Bytes::from_static(b"v")
                })
            );
            assert_eq!(session.seen(), answered_at);
        }
        assert_eq!(targets.len(), 3);
        let replicas: Vec<_> = targets
            .iter()
            .map(|target| match target {
                Target::Replica(replica) => *replica,
                Target::All => panic!("a backup read goes to one replica"),
            })
            .collect();
        assert_ne!(replicas[0], replicas[1]);
        assert_ne!(replicas[1], replicas[2]);
        assert_ne!(replicas[0], replicas[2]);
    }

    #[test]
    fn a_behind_answer_sends_the_read_to_the_next_replica_at_the_next_tick() {
        let mut session = registered();
        let (_, first, message) = backup_read(&mut session);
        let behind = reply(&message, ReplyStatus::Behind, 2, Bytes::new());
        assert_eq!(session.on_message(&behind), None);
        let (retry_target, retry) = session.on_tick().expect("retried at once");
        assert_eq!(retry, message, "the same read, with the same seen op");
        assert_ne!(retry_target, first);
        assert!(matches!(retry_target, Target::Replica(_)));
    }

    #[test]
    fn a_backup_read_unanswered_in_time_goes_to_every_replica() {
        // The actives it knows may all have retired into a later epoch; any member
        // left (a witness too) tells it where the cluster went.
        let mut session = registered();
        let (_, first, message) = backup_read(&mut session);
        assert!(matches!(first, Target::Replica(_)));
        let (target, retry) = (0..1000)
            .find_map(|_| session.on_tick())
            .expect("retried after its timeout");
        assert_eq!(retry, message, "the same read, with the same seen op");
        assert_eq!(target, Target::All);
    }

    #[test]
    fn answers_to_reads_and_to_requests_never_stand_in_for_each_other() {
        let mut session = registered();
        let (_, _, write) = session.submit(Bytes::from_static(b"put")).unwrap();
        let write = write.clone();
        // A read's answer naming the write's number completes nothing.
        let read_answer = reply(&write, ReplyStatus::Read, 9, Bytes::new());
        assert_eq!(session.on_message(&read_answer), None);
        assert!(session.is_busy());
        session.on_message(&reply(&write, ReplyStatus::Ok, 9, Bytes::new()));
        let (_, _, read) = backup_read(&mut session);
        // An Ok for the read's number (a late answer to a request) completes nothing.
        let request_answer = reply(&read, ReplyStatus::Ok, 9, Bytes::new());
        assert_eq!(session.on_message(&request_answer), None);
        assert!(session.is_busy());
        // A strict read is an ordered query with the next request number.
        session.on_message(&reply(&read, ReplyStatus::Read, 9, Bytes::new()));
        let primary = session.primary();
        let (number, target, query) = session
            .submit_operation(Operation::Query, Bytes::from_static(b"get"))
            .unwrap();
        assert_eq!(number, 2);
        assert_eq!(target, Target::Replica(primary));
        let Body::Request(query) = &query.body else {
            panic!("a request")
        };
        assert_eq!(query.operation, Operation::Query);
    }

    #[test]
    fn a_new_epoch_answer_moves_the_session_and_keeps_the_request_in_flight() {
        let mut session = registered();
        let (request, _, message) = session.submit(Bytes::from_static(b"op")).unwrap();
        let next = Configuration::initial(3).propose(&[0, 1], &[Bytes::from_static(b"d")]);
        let answer = reply(&message, ReplyStatus::NewEpoch, 0, next.to_bytes());
        assert_eq!(
            session.on_message(&answer),
            Some(Outcome::NewEpoch {
                configuration: next.clone()
            })
        );
        assert_eq!(session.epoch(), 1);
        let in_flight = session.in_flight().expect("still in flight");
        assert_eq!(in_flight.epoch, 1, "resent in the new epoch");
        assert!(
            matches!(&in_flight.body, Body::Request(r) if r.request == request),
            "the same request number: the new epoch's client table keeps it exactly-once"
        );
        // The same answer again (another replica's) changes nothing.
        assert_eq!(session.on_message(&answer), None);
        // Its first retry comes after an eighth of the usual 16 ticks (the new members
        // may still be fetching the start).
        assert!(session.on_tick().is_none());
        assert!(session.on_tick().is_some());
        // The answer completes the request as usual.
        let done = reply(&message, ReplyStatus::Ok, 9, Bytes::from_static(b"r"));
        assert!(matches!(
            session.on_message(&done),
            Some(Outcome::Completed { op: 9, .. })
        ));
    }

    #[test]
    fn a_new_epoch_answer_that_is_not_a_later_configuration_is_ignored() {
        let mut session = registered();
        let (_, _, message) = session.submit(Bytes::from_static(b"op")).unwrap();
        for result in [
            Bytes::from_static(b"garbage"),
            Configuration::initial(3).to_bytes(),
        ] {
            let answer = reply(&message, ReplyStatus::NewEpoch, 0, result);
            assert_eq!(session.on_message(&answer), None);
            assert_eq!(session.epoch(), 0);
        }
    }
}
