//! Normal operation (paper 4.1) with batching and pipelining (6.2).
//!
//! The primary queues requests and, at `flush`, orders up to one batch into a Prepare
//! covering consecutive ops; up to `pipeline_prepares_max` Prepares are in flight.
//! Backups acknowledge cumulatively: PrepareOk(op) means "I hold every entry ≤ op of this
//! view's log", which is sound because a normal backup's log is always a prefix of its
//! primary's (entries are appended in op order, gaps are filled by state transfer).

use super::*;
use crate::protocol::client_table::{Admission, RouteToken};
use crate::protocol::configuration::Configuration;
use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::hash_map::Entry as MapEntry;

/// How many ops ahead of the one executing `execute_entry` prefetches a client-table
/// slot (and twice as many, its index line): far enough for a miss (~100 ns) to
/// complete during the ops in between, near enough that the lines are still cached
/// when their op comes.
const PREFETCH_AHEAD_OPS: Op = 8;

impl<S: StateMachine> Replica<S> {
    /// Whether the primary can take another request now. When false, the driver stops
    /// reading client connections, so TCP flow control pushes back on clients.
    pub fn accepting_requests(&self) -> bool {
        self.is_primary()
            && self.primary.queue.len() < self.config.batch_entries_max as usize
            && self.primary.queue_bytes < self.config.batch_bytes_max as u64
    }

    /// Handles `message` (a client's request) as [`Replica::on_message`] does, with the
    /// driver's route token for its reply: a reply made in this input for the request's
    /// client carries `route`, and so does the reply of the request once it executes, if
    /// this replica admits it as primary (the token is kept in the client's entry of the
    /// client table). `None` is a request with no token: its replies carry none either.
    /// The token changes nothing the core decides.
    pub fn on_client_request(
        &mut self,
        message: Message,
        route: Option<RouteToken>,
        effects: &mut Vec<Effect>,
    ) {
        let client = match &message.body {
            Body::Request(request) => Some(request.client),
            _ => None,
        };
        self.clients.set_input_route(client.zip(route));
        self.on_message(message, effects);
        self.clients.set_input_route(None);
    }

    /// Whether the reply to a request of `operation` handled now comes back with its route
    /// token whatever becomes of it in this view: a write or a strict read reaching the
    /// primary while it orders requests. Otherwise its reply may come without one (a
    /// registration, a read answered later, a NewEpoch answer at the epoch's end, an op a
    /// new primary inherits), and a driver routing by token also keeps its own route to
    /// the client.
    pub fn replies_by_token(&self, operation: Operation) -> bool {
        matches!(operation, Operation::Apply | Operation::Query)
            && self.is_primary()
            && !self.primary.reconfiguration_queued
    }

    pub(super) fn on_request(&mut self, request: Request, effects: &mut Vec<Effect>) {
        if self.status == Status::Retiring {
            return self.answer_new_epoch(&request, effects);
        }
        if request.operation == Operation::Read {
            // Paper 6.3.2: any replica answers a read, never ordering it (`reads`).
            return self.on_read(request, effects);
        }
        if request.operation == Operation::LeaseRead {
            // Paper 6.3.1: the primary answers it under a lease, never ordering it
            // (`lease`).
            return self.on_lease_read(request, effects);
        }
        if !self.is_primary() {
            return self.drop_reason("request", "not the primary");
        }
        if self.reconfiguration_pending() {
            if request.operation == Operation::Reconfigure
                && !self.is_pending_reconfiguration(&request)
            {
                // One reconfiguration at a time: a clear answer for the other administrator.
                let reason = "another reconfiguration is in progress";
                return self.refuse(&request, ReplyStatus::Rejected, reason, effects);
            }
            // Paper 7.1: after a RECONFIGURATION the primary accepts nothing more in this
            // epoch; the client is told the new epoch once it exists (or on its retry).
            let turned_away = &mut self.primary.turned_away;
            if turned_away.len() < self.config.clients_max as usize
                || turned_away.contains_key(&request.client)
            {
                turned_away.insert(request.client, (request.session, request.request));
            }
            return self.drop_reason("request", "reconfiguration under way");
        }
        if request.body.len() > self.config.request_body_bytes_max as usize {
            // A clear answer rather than silence: the client would otherwise retry a
            // request that can never be ordered until its deadline.
            return self.refuse(&request, ReplyStatus::Rejected, "", effects);
        }
        if !self.accepting_requests() {
            return self.drop_reason("request", "queue full");
        }
        if let Some(&number) = self.primary.in_flight.get(&request.client) {
            // A retry of the request in flight (perhaps on a new connection): its reply
            // goes where the retry came from.
            let route = self.clients.input_route(request.client);
            if let Some(entry) = self.clients.get_mut(request.client) {
                if number == request.request && entry.session == request.session {
                    entry.set_route(number, self.view, route);
                }
            }
            return self.drop_reason("request", "already in progress");
        }
        let route = self.clients.input_route(request.client);
        let client = self.clients.get_mut(request.client);
        match request.operation {
            Operation::Register => {
                if request.session != 0 {
                    return self.drop_reason("request", "malformed registration");
                }
                if let Some(entry) = client.filter(|entry| entry.registration == request.request) {
                    // A retried registration that already committed: answer it again.
                    // (A registration's request number is the client's attempt counter,
                    // echoed so that it can tell this answer from a stale one.)
                    let reply = Reply {
                        client: request.client,
                        session: entry.session,
                        request: request.request,
                        op: entry.session,
                        status: ReplyStatus::Ok,
                        result: Bytes::new(),
                    };
                    return self.send_reply(reply, effects);
                }
            }
            // A session number is the op its registration committed at. Until this
            // replica has executed that op, its table cannot speak for the session (it may
            // be a primary deposed without knowing it): stay silent rather than answer
            // "evicted". Past it, a missing or different session is a committed fact.
            // The same for a RECONFIGURATION: it too names a session.
            Operation::Read | Operation::LeaseRead => {
                unreachable!("answered above, never ordered")
            }
            Operation::Apply | Operation::Query | Operation::Reconfigure
                if request.session > self.commit =>
            {
                return self.drop_reason("request", "session not yet committed here")
            }
            // A strict read takes a request number and the reply slot like a write: a
            // retry is then answered from the table, and the session's request numbers
            // stay one sequence. Simple, and exactly as correct as a write.
            Operation::Apply | Operation::Query | Operation::Reconfigure => match client {
                Some(entry) if request.session != entry.session => {
                    return self.refuse(&request, ReplyStatus::Evicted, "", effects)
                }
                None => return self.refuse(&request, ReplyStatus::Evicted, "", effects),
                Some(entry) if request.request == entry.request && request.request > 0 => {
                    // Paper 4.1: the latest request is answered again from the table.
                    let reply = Reply {
                        client: request.client,
                        session: entry.session,
                        request: entry.request,
                        op: entry.op,
                        status: ReplyStatus::Ok,
                        result: entry.reply.clone(),
                    };
                    return self.send_reply(reply, effects);
                }
                Some(entry) if request.request != entry.request + 1 => {
                    return self.drop_reason("request", "request number out of order")
                }
                // Admitted below (a RECONFIGURATION may still be refused, then this route
                // is never used): its reply, when it executes, goes where it came from.
                Some(entry) => entry.set_route(request.request, self.view, route),
            },
        }
        if request.operation == Operation::Reconfigure {
            let proposed = Configuration::from_bytes(&request.body)
                .ok_or("not a configuration")
                .and_then(|proposed| self.configuration.check_successor(&proposed));
            if let Err(reason) = proposed {
                tracing::warn!(replica = self.index, reason, "reconfiguration refused");
                return self.refuse(&request, ReplyStatus::Rejected, reason, effects);
            }
            self.primary.reconfiguration_queued = true;
        }
        self.primary
            .in_flight
            .insert(request.client, request.request);
        let entry = Entry {
            client: request.client,
            session: request.session,
            request: request.request,
            timestamp: 0, // Chosen when the entry is ordered, in `flush`.
            operation: request.operation,
            body: request.body,
        };
        self.primary.queue_bytes += entry.size_bytes() as u64;
        self.primary.queue.push_back(entry);
    }

    /// Whether a RECONFIGURATION is ordered (or queued) but not executed: the epoch's
    /// last op is taken. One flag on the hot path: set when one is queued, and by
    /// `enter_normal` for a new primary whose log ends in one (7.2).
    pub(super) fn reconfiguration_pending(&self) -> bool {
        debug_assert!(
            !self.is_primary()
                || !self.log_ends_in_reconfiguration()
                || self.primary.reconfiguration_queued
        );
        self.primary.reconfiguration_queued
    }

    /// Whether `request` is the RECONFIGURATION under way (a retry of it).
    fn is_pending_reconfiguration(&self, request: &Request) -> bool {
        let queued = self.primary.in_flight.get(&request.client) == Some(&request.request);
        let ordered = self.log_ends_in_reconfiguration()
            && self.log.get(self.log.op()).is_some_and(|entry| {
                entry.client == request.client && entry.request == request.request
            });
        queued || ordered
    }

    /// Whether the log's last entry is a RECONFIGURATION not yet executed.
    pub(super) fn log_ends_in_reconfiguration(&self) -> bool {
        self.log.op() > self.commit
            && self
                .log
                .get(self.log.op())
                .is_some_and(|entry| entry.operation == Operation::Reconfigure)
    }

    /// Answers a request that was not ordered (`Evicted`, `Rejected`): no op, no result.
    /// `reason` is the result, for the client to show (empty: the status says it all).
    fn refuse(
        &self,
        request: &Request,
        status: ReplyStatus,
        reason: &'static str,
        effects: &mut Vec<Effect>,
    ) {
        let reply = Reply {
            client: request.client,
            session: request.session,
            request: request.request,
            op: 0,
            status,
            result: Bytes::from_static(reason.as_bytes()),
        };
        self.send_reply(reply, effects);
    }

    /// Answers `reply.client`, with the route token of the request being handled if it
    /// is that client's.
    pub(super) fn send_reply(&self, reply: Reply, effects: &mut Vec<Effect>) {
        let route = self.clients.input_route(reply.client);
        self.send_reply_routed(reply, route, effects);
    }

    fn send_reply_routed(
        &self,
        reply: Reply,
        route: Option<RouteToken>,
        effects: &mut Vec<Effect>,
    ) {
        let client = reply.client;
        effects.push(Effect::Reply {
            client,
            route,
            message: self.envelope(Body::Reply(reply)),
        });
    }

    /// Orders queued requests into Prepares while the pipeline has room. The driver calls
    /// this once per event-loop iteration, so every request read in one iteration shares
    /// a Prepare (paper 6.2).
    pub fn flush(&mut self, effects: &mut Vec<Effect>) {
        let start = effects.len();
        self.prepare_batches(effects);
        self.end_input(start, effects);
    }

    fn prepare_batches(&mut self, effects: &mut Vec<Effect>) {
        if self.new_cluster && !self.everyone_joined() {
            return;
        }
        while self.is_primary()
            && !self.primary.queue.is_empty()
            && self.primary.pipeline.len() < self.config.pipeline_prepares_max as usize
            && self.primary.pipeline_bytes < self.config.pipeline_bytes_max
            && self.log_has_room_for_a_batch()
            && self.may_order_before_build_hold()
        {
            self.prepare_batch(effects);
        }
    }

    /// How many more ops the primary may order before the checkpoint op at which it holds
    /// for the build a worker is running (`execute.rs`): it orders nothing there until
    /// the build finished, so its loop never stalls on it.
    fn ops_before_build_hold(&self) -> Op {
        self.build_hold_op()
            .map_or(Op::MAX, |hold| hold.saturating_sub(self.log.op() + 1))
    }

    /// Whether the primary may order an op now as far as checkpoint builds go (see
    /// `ops_before_build_hold`).
    fn may_order_before_build_hold(&mut self) -> bool {
        if self.ops_before_build_hold() > 0 {
            return true;
        }
        if let Some(hold) = self.build_hold_op() {
            self.note_build_hold(hold);
        }
        false
    }

    /// Whether one more batch keeps the log within `Config::log_entries_max`. Without
    /// witnesses checkpoints keep it there; with them the log also keeps what fewer than
    /// f+1 actives executed (`witness`), and the primary waits for the actives rather than
    /// pass the bound (the witnesses, whose logs wait for the same, would refuse it).
    fn log_has_room_for_a_batch(&self) -> bool {
        self.log.len() as u64 + self.config.batch_entries_max as u64
            <= self.config.log_entries_max()
    }

    /// The primary of a new cluster orders nothing until every other replica has told it
    /// that it joined (its heartbeat echo, which waits for its `joined` to be durable).
    /// Then, whenever a log holds an entry, every store says `joined`, and a power loss
    /// of the whole cluster restarts every replica from its disk (ARCHITECTURE.md,
    /// "Restarting from disk"). Ordering earlier would let a power loss leave the primary
    /// alone holding entries while the others, which never joined, recover: the primary
    /// restarts into a view change that needs them, and they wait for answers only
    /// normal replicas give. (A new cluster already needs every replica up once: it
    /// starts only when all of them answered that they hold nothing.)
    fn everyone_joined(&mut self) -> bool {
        let others = self.configuration.replica_count() as usize - 1;
        if self.primary.heard.count_others(self.index) < others {
            return false;
        }
        self.new_cluster = false;
        true
    }

    fn prepare_batch(&mut self, effects: &mut Vec<Effect>) {
        assert!(self.is_primary());
        assert!(!self.primary.queue.is_empty());
        assert!(self.primary.pipeline.len() < self.config.pipeline_prepares_max as usize);
        let op_first = self.log.op() + 1;
        // Checked by `prepare_batches`: at least one op may be ordered.
        let room = self.ops_before_build_hold();
        assert!(room > 0);
        let mut entries = Vec::with_capacity(
            self.primary
                .queue
                .len()
                .min(self.config.batch_entries_max as usize),
        );
        let mut bytes = 0u64;
        while let Some(entry) = self.primary.queue.front() {
            let size = entry.size_bytes() as u64;
            if !entries.is_empty()
                && (bytes + size > self.config.batch_bytes_max as u64
                    || entries.len() >= self.config.batch_entries_max as usize
                    || entries.len() as Op >= room)
            {
                break;
            }
            let mut entry = self.primary.queue.pop_front().expect("front exists");
            // Paper 4.4: the primary picks the non-deterministic input; strictly increasing
            // so that every op has a distinct, ordered time.
            entry.timestamp = self.clock_ns.max(self.log.timestamp_last() + 1);
            bytes += size;
            self.primary.queue_bytes -= size;
            self.log.push(entry.clone());
            entries.push(entry);
        }
        let op_last = self.log.op();
        assert!(op_last >= op_first, "a Prepare holds at least one entry");
        assert_eq!(op_last - op_first + 1, entries.len() as Op);
        self.primary
            .pipeline
            .push_back(InFlightPrepare { op_last, bytes });
        self.primary.pipeline_bytes += bytes;
        // The primary's own acknowledgement counts once its append is durable
        // (`on_persisted`); a single-replica cluster commits there.
        let prepare = Prepare {
            op_first,
            commit: self.commit,
            actives_commit: self.actives_commit_to_report(),
            stamp: self.lease_stamp(),
            entries,
        };
        let audience = self.prepare_audience();
        self.broadcast_to(audience, Body::Prepare(prepare), effects);
        self.stats.prepares_sent += 1;
        self.commit_timeout.reset();
        if !self.prepare_timeout.running() {
            self.prepare_timeout.start();
        }
    }

    pub(super) fn on_prepare(
        &mut self,
        from: ReplicaIndex,
        view: View,
        prepare: Prepare,
        effects: &mut Vec<Effect>,
    ) {
        let well_formed = !prepare.entries.is_empty()
            && prepare.op_first > 0
            && prepare
                .op_first
                .checked_add(prepare.entries.len() as Op)
                .is_some()
            && from == self.primary_of(view);
        if !well_formed {
            return self.drop_reason("prepare", "malformed");
        }
        if view < self.view {
            return self.drop_reason("prepare", "stale view");
        }
        if view > self.view || self.status != Status::Normal {
            // The view started without us (paper 5.2): catch up from its primary.
            return self.join_started_view(view, effects);
        }
        // One primary per view: the sender is this view's primary, and the gate refused
        // messages that claim to come from this replica.
        assert!(!self.is_primary(), "two primaries in view {view}");
        assert_eq!(self.status, Status::Normal);
        self.heard_tick[from as usize] = self.ticks;
        self.normal_timeout.reset();
        self.forget_asks_unless_following();
        // Commit first: executing may take a checkpoint that makes room in the log (as
        // far as the actives' commit lets it: `witness`).
        self.note_actives_commit(prepare.actives_commit);
        self.commit_to(prepare.commit.min(self.log.op()), effects);
        let op = self.log.op();
        let op_last = prepare.op_last();
        let stamp = prepare.stamp;
        if prepare.op_first > op + 1 {
            // A gap: earlier Prepares were lost or reordered.
            self.request_state(from, effects);
            self.drop_reason("prepare", "gap");
        } else if op_last > op {
            if self.log.len() as u64 + op_last - op > self.config.log_entries_max() {
                return self.drop_reason("prepare", "log full");
            }
            assert!(prepare.op_first <= op + 1 && op < op_last);
            let skip = (op + 1 - prepare.op_first) as usize;
            // No correct primary orders an op after a RECONFIGURATION (7.1): keep the
            // entries up to the first one, and none after one the log ends in.
            let new = &prepare.entries[skip..];
            let keep = if self.log_ends_in_reconfiguration() {
                0
            } else {
                new.iter()
                    .position(|entry| entry.operation == Operation::Reconfigure)
                    .map_or(new.len(), |position| position + 1)
            };
            if keep < new.len() {
                self.drop_reason("prepare", "entries after a reconfiguration");
            }
            for entry in prepare.entries.into_iter().skip(skip).take(keep) {
                self.log.push(entry);
            }
        }
        // The acknowledgement grants a lease from the Prepare's stamp (`lease`).
        let stamp = self.grant_lease(stamp);
        self.send(from, self.acknowledgement(stamp), effects);
        self.commit_to(prepare.commit.min(self.log.op()), effects);
    }

    pub(super) fn on_prepare_ok(
        &mut self,
        from: ReplicaIndex,
        view: View,
        ok: PrepareOk,
        effects: &mut Vec<Effect>,
    ) {
        if view != self.view || !self.is_primary() {
            return self.drop_reason("prepare_ok", "not the primary of this view");
        }
        if ok.op > self.log.op() {
            return self.drop_reason("prepare_ok", "acknowledges ops the primary does not have");
        }
        assert_ne!(
            from, self.index,
            "the gate refuses messages from this replica's index"
        );
        self.heard_tick[from as usize] = self.ticks;
        self.primary.heard.insert(from);
        self.lease_on_prepare_ok(from, ok.stamp);
        self.note_commit_of(from, ok.commit.min(ok.op));
        let acked = &mut self.primary.acked[from as usize];
        *acked = (*acked).max(ok.op);
        self.advance_commit_from_acks(effects);
    }

    /// Commits the highest op that f+1 replicas (the primary included, once its own
    /// writes completed) hold.
    pub(super) fn advance_commit_from_acks(&mut self, effects: &mut Vec<Effect>) {
        assert!(self.is_primary());
        assert!(self.primary.acked[self.index as usize] <= self.log.op());
        self.release_witnesses_once_actives_caught_up();
        let mut acked: SmallVec<[Op; 16]> = SmallVec::from_slice(&self.primary.acked);
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_op = acked[self.faults_max()];
        if quorum_op > self.commit {
            self.commit_to(quorum_op, effects);
            while let Some(prepare) = self
                .primary
                .pipeline
                .front()
                .filter(|prepare| prepare.op_last <= self.commit)
            {
                self.primary.pipeline_bytes -= prepare.bytes;
                self.primary.pipeline.pop_front();
            }
            if self.primary.pipeline.is_empty() {
                self.prepare_timeout.stop();
            } else {
                self.prepare_timeout.start();
            }
        }
    }

    pub(super) fn on_commit(
        &mut self,
        from: ReplicaIndex,
        view: View,
        commit: Commit,
        effects: &mut Vec<Effect>,
    ) {
        if from != self.primary_of(view) {
            return self.drop_reason("commit", "not from the primary");
        }
        if view < self.view {
            return self.drop_reason("commit", "stale view");
        }
        if view > self.view || self.status != Status::Normal {
            return self.join_started_view(view, effects);
        }
        assert!(!self.is_primary(), "two primaries in view {view}"); // As in `on_prepare`.
        self.heard_tick[from as usize] = self.ticks;
        self.normal_timeout.reset();
        self.forget_asks_unless_following();
        // A witness the primary does not involve lags by design: it catches up when
        // involved again (`witness`).
        if commit.commit > self.log.op() && !self.is_witness() {
            self.request_state(from, effects);
        }
        self.commit_to(commit.commit.min(self.log.op()), effects);
        self.note_actives_commit(commit.actives_commit);
        // The answer doubles as the heartbeat's echo, so the primary knows it leads,
        // and grants a lease from the Commit's stamp (`lease`).
        let stamp = self.grant_lease(commit.stamp);
        self.send(from, self.acknowledgement(stamp), effects);
    }

    pub(super) fn on_commit_timeout(&mut self, effects: &mut Vec<Effect>) {
        self.commit_timeout.reset();
        if self.is_primary() {
            self.broadcast(
                Body::Commit(Commit {
                    commit: self.commit,
                    actives_commit: self.actives_commit_to_report(),
                    stamp: self.lease_stamp(),
                }),
                effects,
            );
        }
    }

    /// Resends what each backup has not acknowledged, from its cumulative ack (or from the
    /// log's base when it is further behind: the gap then makes it ask for state). The
    /// actives did not answer in time: the witnesses take part from now (`witness`).
    pub(super) fn on_prepare_timeout(&mut self, effects: &mut Vec<Effect>) {
        self.prepare_timeout.reset();
        if !self.is_primary() {
            return self.prepare_timeout.stop();
        }
        self.involve_witnesses();
        let op = self.log.op();
        for backup in self.configuration.indexes() {
            if backup == self.index
                || self.primary.acked[backup as usize] >= op
                || !self.takes_prepares(backup)
            {
                continue;
            }
            let mut from = self.primary.acked[backup as usize].max(self.log.base()) + 1;
            let mut prepares = 0;
            while from <= op && prepares < self.config.pipeline_prepares_max {
                let entries = self
                    .log
                    .slice(from, op, self.config.batch_bytes_max as usize);
                let count = entries.len().min(self.config.batch_entries_max as usize);
                let entries: Vec<Entry> = entries.into_iter().take(count).collect();
                let prepare = Prepare {
                    op_first: from,
                    commit: self.commit,
                    actives_commit: self.actives_commit_to_report(),
                    stamp: self.lease_stamp(),
                    entries,
                };
                from += count as Op;
                self.send(backup, Body::Prepare(prepare), effects);
                self.stats.prepares_sent += 1;
                prepares += 1;
            }
        }
    }

    /// The primary went silent: ask for a view change (see `view_change`), and again on
    /// every timeout until the view changes or the primary is heard again.
    pub(super) fn on_normal_timeout(&mut self, effects: &mut Vec<Effect>) {
        self.normal_timeout.reset();
        if self.is_past_start() {
            return self.on_past_start_timeout(effects);
        }
        if self.status != Status::Normal || self.is_primary() {
            return self.normal_timeout.stop();
        }
        tracing::debug!(
            replica = self.index,
            view = self.view,
            "primary silent: asking for a view change"
        );
        self.ask_for_view_change(effects);
    }

    /// Executes a committed request's effect on the client table and the service, and
    /// answers the client if this replica is the primary. Returns nothing: replies are
    /// effects.
    pub(super) fn execute_entry(&mut self, op: Op, effects: &mut Vec<Effect>) {
        assert_eq!(op, self.commit + 1, "ops execute in order, once");
        // A committed batch executes op after op, each probing the client table at a
        // random session's slot (at thousands of sessions, a cache miss each, and one
        // for its index line): start loading the index line of the op twice the
        // distance ahead and, its index line loaded by now, the slot of the op at the
        // distance, so their misses overlap this op's work. Hints only (an op in the
        // log but not yet committed changes nothing by them).
        if let Some(ahead) = self.log.get(op + 2 * PREFETCH_AHEAD_OPS) {
            self.clients.prefetch_index(ahead.client);
        }
        if let Some(ahead) = self.log.get(op + PREFETCH_AHEAD_OPS) {
            self.clients.prefetch(ahead.client);
        }
        let entry = self.log.get(op).expect("executing an entry not in the log");
        let (client, session, request) = (entry.client, entry.session, entry.request);
        // One lookup on the hot path: executed ops leave the primary's in-flight set.
        if let MapEntry::Occupied(in_flight) = self.primary.in_flight.entry(client) {
            if *in_flight.get() == request {
                in_flight.remove();
            }
        }
        // A RECONFIGURATION that executed: the configuration its body names, if any.
        let mut next_configuration: Option<Option<Configuration>> = None;
        let reconfiguration = entry.operation == Operation::Reconfigure;
        // The route token the request was admitted with here, if any.
        let mut route = None;
        let reply = match entry.operation {
            Operation::Register => {
                if let Some(evicted) = self.clients.register(client, op, request) {
                    tracing::debug!(
                        replica = self.index,
                        op,
                        evicted,
                        "client table full: evicted a session"
                    );
                }
                Some(Reply {
                    client,
                    session: op,
                    request,
                    op,
                    status: ReplyStatus::Ok,
                    result: Bytes::new(),
                })
            }
            Operation::Read | Operation::LeaseRead => {
                // The wire's gate keeps reads out of the log, and no correct primary
                // orders one: a faulty peer's entry changes nothing, at every replica
                // alike.
                self.drop_reason("entry", "a read in the log");
                None
            }
            Operation::Apply | Operation::Query | Operation::Reconfigure => {
                match self.clients.admit_mut(client, session, request) {
                    Ok(client_entry) => {
                        let result = match entry.operation {
                            Operation::Reconfigure => {
                                // It changes the members, not the service: see below.
                                next_configuration = Some(Configuration::from_bytes(&entry.body));
                                Bytes::new()
                            }
                            // A strict read: answered at its place in the order, and
                            // changing nothing (every replica computes it, only the
                            // primary's answer is sent).
                            Operation::Query => self.service.query(&entry.body),
                            _ => self.service.apply(op, entry.timestamp, &entry.body),
                        };
                        client_entry.record(request, op, result.clone());
                        route = client_entry.route_of(request, self.view);
                        Some(Reply {
                            client,
                            session,
                            request,
                            op,
                            status: ReplyStatus::Ok,
                            result,
                        })
                    }
                    Err(Admission::Duplicate) => None,
                    Err(Admission::Execute) => unreachable!("admit_mut returns Ok to execute"),
                    Err(Admission::Evicted) => Some(Reply {
                        client,
                        session,
                        request,
                        op: 0,
                        status: ReplyStatus::Evicted,
                        result: Bytes::new(),
                    }),
                }
            }
        };
        let moves = match next_configuration {
            Some(next) => self.note_reconfiguration(op, next),
            None => false,
        };
        if reconfiguration && !moves {
            // A RECONFIGURATION that executed without moving the cluster (its session was
            // evicted by a registration ordered before it, so every replica refuses it
            // alike): the epoch goes on, and its primary must order requests again, or it
            // would drop them until a view change (7.1 stops ordering only after the
            // epoch's last op; this op did not end the epoch). Unless another one is
            // ordered after it: the primary that ordered this one ordered nothing after
            // it before executing it, but a later primary of the epoch did, and a primary
            // of a view after that inherits both (the second at its log's end) and
            // executes this one first. Ordering after the second would give ops past the
            // epoch's last one (seed 105004587: acknowledged, then truncated by the move).
            // (Only ever kept, never set, here: a restart's replay executes before the
            // replica knows its view, seed 106003481.)
            self.primary.reconfiguration_queued &= self.log.op() > op
                && self
                    .log
                    .get(self.log.op())
                    .is_some_and(|last| last.operation == Operation::Reconfigure);
        }
        self.stats.entries_committed += 1;
        if let Some(reply) = reply.filter(|_| self.is_primary()) {
            let route = route.or_else(|| self.clients.input_route(client));
            self.send_reply_routed(reply, route, effects);
        }
    }

    /// An executed RECONFIGURATION moves the replica at the end of the input
    /// (`epoch::finish_epoch_change`). Every replica checks again what the primary
    /// checked, so that all of them move (or none does) whatever the primary was.
    /// Returns whether the replica moves (or has moved) to the epoch `next` names.
    fn note_reconfiguration(&mut self, op: Op, next: Option<Configuration>) -> bool {
        match next {
            Some(next) if self.configuration.check_successor(&next).is_ok() => {
                self.epoch_change = Some(Box::new(next));
                true
            }
            // The epoch this replica is in already (it fetched the op while
            // transitioning into it, or recovered into it).
            Some(next) if next.epoch() <= self.configuration.epoch() => true,
            _ => {
                tracing::warn!(
                    replica = self.index,
                    op,
                    "an invalid reconfiguration committed: ignored"
                );
                false
            }
        }
    }
}
