//! Reads at any replica (paper 6.3.2): a client that accepts stale answers sends a read
//! naming the highest op it has seen (from its replies: its writes' ops and its reads'
//! commit numbers); any replica in normal status answers it with the service's `query`
//! once it has *executed* that op, and names its commit number in the answer.
//!
//! The rule this keeps: a replica's service state is always the state after executing
//! every op ≤ its commit number, and committed ops are the same at every replica (the
//! paper's agreement), so an answer at commit `c ≥ seen` reflects every op the session
//! has seen, its own writes included, and the session's next read asks for at least `c`:
//! a session reads its own writes and never goes back in time (causal consistency). It
//! may be stale with respect to other sessions; strict reads (`Operation::Query`, ordered
//! through the log) are the linearizable ones.
//!
//! A read the replica cannot answer yet waits, bounded in number, bytes and time (nothing
//! from the wire makes us hold more): it is answered as soon as the commit number reaches
//! its seen op (checked at the end of every input), or told `Behind` (try another
//! replica) when its wait runs out, when the replica leaves normal status, or when there
//! is no room to hold it.

use super::*;
use bytes::Bytes;

/// Reads a replica holds at most while they wait for their seen op to execute (fewer
/// when its client table is smaller: a correct client has one read in flight per
/// session).
const WAITING_READS_MAX: usize = 1024;

/// Query bytes a replica holds at most in waiting reads (each is copied out of its
/// connection's buffer, so a held read pins nothing else).
const WAITING_READ_BYTES_MAX: usize = 1 << 20;

/// A read waiting for the replica to execute the op its client has seen.
#[derive(Clone, Debug)]
struct WaitingRead {
    client: ClientId,
    session: Session,
    request: RequestNumber,
    seen: Op,
    query: Bytes,
    /// The tick after which it is told `Behind`.
    deadline_tick: u64,
}

/// The reads a replica holds, and the least seen op among them (so that the check at the
/// end of every input costs one comparison while none can be answered).
#[derive(Debug, Default)]
pub(super) struct WaitingReads {
    reads: Vec<WaitingRead>,
    /// The reads being answered (kept between inputs, empty, so that answering
    /// allocates nothing in steady state).
    taken: Vec<WaitingRead>,
    bytes: usize,
    /// The least `seen` of `reads` (`Op::MAX` when empty).
    seen_min: Op,
}

impl WaitingReads {
    pub(super) fn new() -> WaitingReads {
        WaitingReads {
            reads: Vec::new(),
            taken: Vec::new(),
            bytes: 0,
            seen_min: Op::MAX,
        }
    }

    /// What must hold between inputs: the bounds, and the cached sums.
    pub(super) fn invariants(&self) {
        assert!(
            self.reads.len() <= WAITING_READS_MAX,
            "waiting reads unbounded"
        );
        assert!(self.taken.is_empty(), "answered reads left behind");
        assert!(
            self.bytes <= WAITING_READ_BYTES_MAX,
            "waiting read bytes unbounded"
        );
        assert_eq!(
            self.bytes,
            self.reads
                .iter()
                .map(|read| read.query.len())
                .sum::<usize>()
        );
        assert_eq!(
            self.seen_min,
            self.reads
                .iter()
                .map(|read| read.seen)
                .min()
                .unwrap_or(Op::MAX)
        );
    }

    fn recompute(&mut self) {
        self.seen_min = self
            .reads
            .iter()
            .map(|read| read.seen)
            .min()
            .unwrap_or(Op::MAX);
        self.bytes = self.reads.iter().map(|read| read.query.len()).sum();
    }

    /// Moves the reads `done` picks into the returned buffer (in no particular order;
    /// hand it back with `give_back` once drained).
    fn take_where(&mut self, done: impl Fn(&WaitingRead) -> bool) -> Vec<WaitingRead> {
        let mut taken = std::mem::take(&mut self.taken);
        debug_assert!(taken.is_empty());
        let mut at = 0;
        while at < self.reads.len() {
            if done(&self.reads[at]) {
                taken.push(self.reads.swap_remove(at));
            } else {
                at += 1;
            }
        }
        self.recompute();
        taken
    }

    fn give_back(&mut self, mut taken: Vec<WaitingRead>) {
        taken.clear();
        self.taken = taken;
    }
}

impl<S: StateMachine> Replica<S> {
    /// A read at this replica. The wire's gate refuses a read whose body cannot hold the
    /// seen op; an embedder feeding the core directly gets the same refusal here, as a
    /// drop with a reason rather than a panic.
    pub(super) fn on_read(&mut self, request: Request, effects: &mut Vec<Effect>) {
        let Some(seen) = request.read_seen() else {
            return self.drop_reason("read", "no seen op in its body");
        };
        if self.is_witness() {
            // Paper 6.1: a witness holds no service state; the client tries another.
            return self.answer_read_behind(&request, effects);
        }
        if self.status != Status::Normal {
            // Paper 6.3.2 reads at replicas in normal status: during a view change or a
            // state transfer into an epoch the client is better served elsewhere.
            return self.answer_read_behind(&request, effects);
        }
        if seen <= self.commit {
            let query = request.read_query();
            let (client, session, number) = (request.client, request.session, request.request);
            return self.answer_read(client, session, number, seen, &query, effects);
        }
        let query = request.read_query();
        let limit = WAITING_READS_MAX.min(self.config.clients_max as usize);
        let waiting = &mut self.waiting_reads;
        if waiting.reads.len() >= limit || waiting.bytes + query.len() > WAITING_READ_BYTES_MAX {
            self.drop_reason("read", "too many reads waiting");
            return self.answer_read_behind(&request, effects);
        }
        // Waits at most as long as a healthy primary takes to tell a backup its commit
        // number (a heartbeat comes more often than `normal_timeout_ticks`).
        let deadline_tick = self.ticks + self.config.normal_timeout_ticks;
        self.stats.reads_waited += 1;
        let waiting = &mut self.waiting_reads;
        waiting.bytes += query.len();
        waiting.seen_min = waiting.seen_min.min(seen);
        waiting.reads.push(WaitingRead {
            client: request.client,
            session: request.session,
            request: request.request,
            seen,
            query: Bytes::copy_from_slice(&query),
            deadline_tick,
        });
    }

    /// Answers the waiting reads that can be answered: at the end of every input, since
    /// any input may have moved the commit number or the status.
    pub(super) fn answer_waiting_reads(&mut self, effects: &mut Vec<Effect>) {
        if self.waiting_reads.reads.is_empty() {
            return;
        }
        if self.status != Status::Normal {
            let mut taken = self.waiting_reads.take_where(|_| true);
            for read in taken.drain(..) {
                self.answer_waiting_behind(&read, effects);
            }
            return self.waiting_reads.give_back(taken);
        }
        if self.waiting_reads.seen_min > self.commit {
            return;
        }
        let commit = self.commit;
        let mut taken = self.waiting_reads.take_where(|read| read.seen <= commit);
        for read in taken.drain(..) {
            self.answer_read(
                read.client,
                read.session,
                read.request,
                read.seen,
                &read.query,
                effects,
            );
        }
        self.waiting_reads.give_back(taken);
    }

    /// Tells the reads whose wait ran out to try another replica.
    pub(super) fn expire_waiting_reads(&mut self, effects: &mut Vec<Effect>) {
        let now = self.ticks;
        if self
            .waiting_reads
            .reads
            .iter()
            .all(|read| read.deadline_tick > now)
        {
            return;
        }
        let mut taken = self
            .waiting_reads
            .take_where(|read| read.deadline_tick <= now);
        for read in taken.drain(..) {
            self.answer_waiting_behind(&read, effects);
        }
        self.waiting_reads.give_back(taken);
    }

    fn answer_read(
        &mut self,
        client: ClientId,
        session: Session,
        request: RequestNumber,
        seen: Op,
        query: &Bytes,
        effects: &mut Vec<Effect>,
    ) {
        assert_eq!(
            self.status,
            Status::Normal,
            "reads are answered in normal status"
        );
        // Causality: never an answer older than what the session has seen.
        assert!(
            seen <= self.commit,
            "a read answered before its seen op executed"
        );
        let reply = Reply {
            client,
            session,
            request,
            // The state the answer comes from: every op ≤ commit executed, none after.
            op: self.commit,
            status: ReplyStatus::Read,
            result: self.service.query(query),
        };
        self.stats.reads_answered += 1;
        self.send_reply(reply, effects);
    }

    fn answer_read_behind(&mut self, request: &Request, effects: &mut Vec<Effect>) {
        self.send_behind(request.client, request.session, request.request, effects);
    }

    fn answer_waiting_behind(&mut self, read: &WaitingRead, effects: &mut Vec<Effect>) {
        self.send_behind(read.client, read.session, read.request, effects);
    }

    fn send_behind(
        &mut self,
        client: ClientId,
        session: Session,
        request: RequestNumber,
        effects: &mut Vec<Effect>,
    ) {
        let reply = Reply {
            client,
            session,
            request,
            op: self.commit,
            status: ReplyStatus::Behind,
            result: Bytes::new(),
        };
        self.stats.reads_behind += 1;
        self.send_reply(reply, effects);
    }
}
