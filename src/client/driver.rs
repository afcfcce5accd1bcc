//! The client's event loop: many [`ClientSession`]s over a few connection slots, each
//! slot holding one TCP connection per replica. Both [`Client`](super::Client) (one
//! session) and [`PipelinedClient`](super::PipelinedClient) are this driver.
//!
//! The session logic (request numbers, retries, primary discovery, eviction) lives in the
//! sans-IO [`ClientSession`]; the driver only carries its messages, feeds it replies and
//! ticks, and enforces each operation's overall deadline.
//!
//! Why mio on the caller's thread rather than reader threads and channels: the user's
//! thread does everything (encode, one write per connection per pass, `epoll_wait`, read,
//! decode, complete), so an operation costs no thread hand-off and no context switch.
//! On a small machine shared with the replicas, context switches are what a thread per
//! connection would spend its time on.
//!
//! One event-loop pass: flush every connection with buffered frames; wait for readiness
//! (at most until the next tick or the caller's timeout); read and decode every ready
//! socket; feed each reply to its session; run due ticks (retries, deadlines, connect
//! timeouts). Sends only append to a connection's buffer, so all requests produced in one
//! pass leave in one `write` per connection.

use super::connection::{Connection, Received};
use super::id::random_client_id;
use super::index::SessionIndex;
use super::{ClientError, ClientOptions, ClientSession, Outcome, Target};
use crate::protocol::configuration::{check_witnesses, primary_among};
use crate::protocol::{Body, Configuration, Message, Operation, ReplicaId, Reply, View};
use crate::wire::Terms;
use bytes::Bytes;
use mio::{Events, Poll, Token};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One tick of client time: the granularity of retries and deadlines.
pub const TICK: Duration = Duration::from_millis(10);
/// Ticks before a session first resends an unanswered request to every replica (it then
/// backs off, doubling up to 8×). Shorter than a view change, so a client that was talking
/// to a dead primary finds the new one soon after the view change completes.
pub const RETRY_TIMEOUT_TICKS: u64 = 25;
/// Ticks caught up at most after the caller did not poll for a while.
const TICKS_CATCH_UP_MAX: u64 = 8;
/// Sessions visited per tick, at most, on average: with more sessions than this, their
/// ticks are delivered every few ticks, several at once (at most `TICKS_CATCH_UP_MAX`).
/// Visiting every session every tick touches each one's state 100 times a second whether
/// it is busy or not: with 4096 sessions that was 6% of the load generator's samples, as
/// many cache misses as a sixth of its operations. The price is precision: retries and
/// deadlines of a client with thousands of sessions are due on an 80 ms grid instead of a
/// 10 ms one (its retries wait 250 ms or more anyway).
const SESSIONS_PER_TICK: usize = 512;
/// A generous bound on a request frame's bytes beyond its operation (header and fields).
const REQUEST_OVERHEAD_BYTES: usize = 4096;
/// Bytes read from a socket per `read` call.
const READ_CHUNK_BYTES: usize = 256 << 10;
const EVENTS_CAPACITY: usize = 1024;
/// Why the replicas refuse an operation when their reply gives no reason.
const SIZE_REJECTION: &str = "it exceeds their request size limit";

/// A finished operation of a [`PipelinedClient`](super::PipelinedClient).
#[derive(Debug)]
pub struct Completion {
    /// The session the operation was submitted on.
    pub session: usize,
    /// The service's result, or why there is none.
    pub result: Result<Bytes, ClientError>,
}

/// Where `Driver::poll_each` hands completions.
struct Hook<'a> {
    next: &'a mut dyn FnMut(Completion, Instant) -> Option<(Operation, Bytes)>,
    /// The clock read after this pass's reads.
    at: Instant,
    /// Completions handed to `next` so far.
    delivered: usize,
    /// The first failure to submit what `next` returned.
    error: Option<ClientError>,
}

/// The driver's view of one session.
struct SessionSlot {
    session: ClientSession,
    /// The connection slot this session's messages use.
    slot: usize,
    /// An operation waiting for the session's registration to commit.
    pending: Option<(Operation, Bytes)>,
    /// Set while the caller awaits a completion on this session: when it passes, the
    /// caller gets `Timeout` and the session is replaced.
    deadline: Option<Deadline>,
}

/// When an awaited operation times out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// Submitted since the last pass began: that pass's clock reading plus
    /// `request_timeout` (`Driver::date_submissions`).
    FromNextPass,
    /// At this instant.
    At(Instant),
}

impl Deadline {
    fn passed(self, now: Instant) -> bool {
        matches!(self, Deadline::At(deadline) if now >= deadline)
    }
}

/// The event loop shared by both clients.
pub(crate) struct Driver {
    options: ClientOptions,
    replica_count: u8,
    /// The witnesses of the configuration the connections reach, a bit per index.
    witnesses: u64,
    /// The epoch of the configuration the connections reach (paper 7): 0 for addresses
    /// given by the caller, later once a reply said the cluster moved.
    epoch: u32,
    /// The configuration followed since a reply said the cluster moved (`None`: the
    /// addresses the caller gave).
    followed: Option<Configuration>,
    /// Connection slots: each has one connection per replica.
    slots: usize,
    poll: Poll,
    events: Events,
    /// `connections[slot * replica_count + replica]`; the index is the mio token.
    connections: Vec<Connection>,
    sessions: Vec<SessionSlot>,
    /// Session index by client id: one array read per reply (`index.rs`).
    by_client: SessionIndex,
    /// The latest view any reply reported: every session sends to its primary, which
    /// spares the other sessions a retry each after a view change.
    view: View,
    /// Messages and batches of replies decoded in one pass (reused: no allocation in
    /// steady state).
    inbox: Vec<Received>,
    scratch: Vec<u8>,
    /// Sessions submitted to since the last pass began, whose deadline that pass sets.
    undated: Vec<usize>,
    /// `poll_each`'s completions other than successes (reused).
    completions: Vec<Completion>,
    next_tick: Instant,
    /// Ticks between two visits of every session (`SESSIONS_PER_TICK`).
    sweep_ticks: u64,
    /// Ticks elapsed since the sessions were last visited.
    owed_ticks: u64,
}

impl Driver {
    pub(crate) fn new(
        addresses: &[SocketAddr],
        options: ClientOptions,
        sessions: usize,
        slots: usize,
    ) -> Result<Driver, ClientError> {
        if addresses.is_empty() {
            return Err(ClientError::InvalidArgument("no replica addresses"));
        }
        let replica_count = u8::try_from(addresses.len())
            .map_err(|_| ClientError::InvalidArgument("more than 255 replicas"))?;
        if sessions == 0 || slots == 0 {
            return Err(ClientError::InvalidArgument(
                "sessions and connections must be at least 1",
            ));
        }
        if options.request_timeout.is_zero() || options.connect_timeout.is_zero() {
            return Err(ClientError::InvalidArgument("timeouts must be positive"));
        }
        if (options.message_bytes_max as usize) <= REQUEST_OVERHEAD_BYTES {
            return Err(ClientError::InvalidArgument(
                "message_bytes_max is too small",
            ));
        }
        if let Err(invalid) = check_witnesses(addresses.len(), &options.witnesses) {
            return Err(ClientError::InvalidArgument(invalid));
        }
        let witnesses = options.witnesses.low_bits();
        let slots = slots.min(sessions);
        let mut driver_sessions = Vec::with_capacity(sessions);
        let mut by_client = SessionIndex::new(sessions);
        for index in 0..sessions {
            let session = new_session(replica_count, witnesses, &by_client);
            by_client.insert(session.client(), index);
            driver_sessions.push(SessionSlot {
                session,
                slot: index % slots,
                pending: None,
                deadline: None,
            });
        }
        // The caller gives addresses only; identities come with a configuration.
        let members: Vec<(Option<ReplicaId>, SocketAddr)> =
            addresses.iter().map(|&address| (None, address)).collect();
        let connections = connect_slots(&members, 0, &driver_sessions[..slots], &options);
        Ok(Driver {
            epoch: 0,
            followed: None,
            slots,
            undated: Vec::new(),
            completions: Vec::new(),
            options,
            replica_count,
            witnesses,
            poll: Poll::new()?,
            events: Events::with_capacity(EVENTS_CAPACITY),
            connections,
            sessions: driver_sessions,
            by_client,
            view: 0,
            inbox: Vec::new(),
            scratch: vec![0; READ_CHUNK_BYTES],
            next_tick: Instant::now() + TICK,
            sweep_ticks: sweep_ticks(sessions),
            owed_ticks: 0,
        })
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Registers every session; returns once all are registered. Fails with
    /// `Disconnected` if no replica accepted a connection within `connect_timeout`, and
    /// with `Timeout` if registration did not finish within `request_timeout` (or
    /// `Protocol` if, meanwhile, a replica sent a frame that does not decode).
    pub(crate) fn register_all(&mut self) -> Result<(), ClientError> {
        let start = Instant::now();
        for index in 0..self.sessions.len() {
            let (target, message) = self.sessions[index].session.register();
            let slot = self.sessions[index].slot;
            self.send(slot, target, &message);
        }
        let mut completions = Vec::new();
        loop {
            if self.sessions.iter().all(|s| s.session.is_registered()) {
                return Ok(());
            }
            let now = Instant::now();
            let elapsed = now.duration_since(start);
            if elapsed >= self.options.connect_timeout
                && !self.connections.iter().any(|c| c.established_ever)
            {
                return Err(ClientError::Disconnected);
            }
            if let Some(refusal) = self.refused() {
                return Err(ClientError::Refused(refusal));
            }
            if elapsed >= self.options.request_timeout {
                // A replica that spoke gibberish explains the timeout better.
                let protocol_error = self
                    .connections
                    .iter()
                    .find_map(|c| c.protocol_error.clone());
                return Err(protocol_error.map_or(ClientError::Timeout, ClientError::Protocol));
            }
            for index in 0..self.sessions.len() {
                let slot = &mut self.sessions[index];
                if !slot.session.is_registered() && !slot.session.is_busy() {
                    // The registration was refused (nothing executed): ask again.
                    let (target, message) = slot.session.register();
                    let slot = slot.slot;
                    self.send(slot, target, &message);
                }
            }
            self.run_pass(
                &mut completions,
                self.options.request_timeout - elapsed,
                None,
            )?;
            debug_assert!(
                completions.is_empty(),
                "registration completes no operation"
            );
        }
    }

    /// Starts `operation` on session `index`, registering the session first if it is not
    /// (after an eviction or a timeout). Encodes it into its connection's buffer; the next
    /// pass writes it.
    pub(crate) fn submit(&mut self, index: usize, operation: Bytes) -> Result<(), ClientError> {
        self.submit_operation(index, Operation::Apply, operation)
    }

    /// [`submit`](Self::submit) for any operation kind but `Register`.
    pub(crate) fn submit_operation(
        &mut self,
        index: usize,
        kind: Operation,
        operation: Bytes,
    ) -> Result<(), ClientError> {
        assert!(index < self.sessions.len(), "no session {index}");
        let max = self.options.message_bytes_max as usize - REQUEST_OVERHEAD_BYTES;
        if operation.len() > max {
            return Err(ClientError::OperationTooLarge {
                bytes: operation.len(),
                max,
            });
        }
        if operation.len() > self.options.request_body_bytes_max as usize {
            // The replicas would refuse it unread; say so now rather than at the deadline.
            return Err(ClientError::Rejected(SIZE_REJECTION.to_string()));
        }
        let slot = &mut self.sessions[index];
        if slot.deadline.is_some() {
            return Err(ClientError::Busy(index));
        }
        slot.deadline = Some(Deadline::FromNextPass);
        self.undated.push(index);
        if slot.session.is_busy() {
            // A registration is under way; the operation follows it.
            slot.pending = Some((kind, operation));
        } else if !slot.session.is_registered() {
            slot.pending = Some((kind, operation));
            let (target, message) = slot.session.register();
            let slot = slot.slot;
            self.send(slot, target, &message);
        } else {
            self.submit_registered(index, (kind, operation));
        }
        Ok(())
    }

    fn submit_registered(&mut self, index: usize, (kind, operation): (Operation, Bytes)) {
        let session = &mut self.sessions[index];
        let slot = session.slot;
        let (_request, target, message) = session
            .session
            .submit_operation(kind, operation)
            .expect("the driver submits only on a registered, idle session");
        let replicas = Replicas {
            connections: &mut self.connections,
            registry: self.poll.registry(),
            count: self.replica_count,
            witnesses: self.witnesses,
            view: self.view,
        };
        replicas.send(slot, target, message);
    }

    /// Runs event-loop passes until at least one completion is appended or `timeout`
    /// passes.
    pub(crate) fn poll(
        &mut self,
        completions: &mut Vec<Completion>,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let start = Instant::now();
        let completions_before = completions.len();
        loop {
            let elapsed = start.elapsed();
            self.run_pass(completions, timeout.saturating_sub(elapsed), None)?;
            if completions.len() > completions_before || start.elapsed() >= timeout {
                self.flush(Instant::now());
                return Ok(());
            }
        }
    }

    /// Runs event-loop passes until at least one operation completed or `timeout` passes,
    /// handing each completion to `next` as it is found, with the instant the pass read
    /// its reply; the operation `next` returns, if any, is submitted on the same session
    /// at once (see `PipelinedClient::poll_each`). The first failure to submit one is
    /// returned after the last pass.
    pub(crate) fn poll_each(
        &mut self,
        timeout: Duration,
        next: &mut dyn FnMut(Completion, Instant) -> Option<(Operation, Bytes)>,
    ) -> Result<(), ClientError> {
        let start = Instant::now();
        let mut hook = Hook {
            next,
            at: start,
            delivered: 0,
            error: None,
        };
        let mut completions = std::mem::take(&mut self.completions);
        loop {
            let elapsed = start.elapsed();
            let pass = self.run_pass(
                &mut completions,
                timeout.saturating_sub(elapsed),
                Some(&mut hook),
            );
            // Timeouts, evictions and rejections of this pass.
            for completion in completions.drain(..) {
                self.hand_back(&mut hook, completion);
            }
            if let Err(error) = pass {
                self.completions = completions;
                return Err(error);
            }
            if hook.delivered > 0 || start.elapsed() >= timeout {
                break;
            }
        }
        self.completions = completions;
        // What `next` submitted leaves now, not at the caller's next poll.
        self.flush(Instant::now());
        hook.error.map_or(Ok(()), Err)
    }

    /// Gives `completion` to the hook and submits what it returns on the same session.
    fn hand_back(&mut self, hook: &mut Hook<'_>, completion: Completion) {
        let session = completion.session;
        hook.delivered += 1;
        if let Some((kind, operation)) = (hook.next)(completion, hook.at) {
            if let Err(error) = self.submit_operation(session, kind, operation) {
                hook.error.get_or_insert(error);
            }
        }
    }

    /// One pass: flush, wait (at most `wait`, and never past the next tick), handle
    /// readiness, run due ticks. Completions go to `hook` when there is one (successes at
    /// once, the rest to `completions`), else to `completions`.
    fn run_pass(
        &mut self,
        completions: &mut Vec<Completion>,
        wait: Duration,
        mut hook: Option<&mut Hook<'_>>,
    ) -> Result<(), ClientError> {
        let now = Instant::now();
        self.date_submissions(now);
        self.flush(now);
        let wait = wait.min(self.next_tick.saturating_duration_since(now));
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(ClientError::Io(error)),
        }
        let now = Instant::now();
        for event in self.events.iter() {
            let connection = &mut self.connections[event.token().0];
            connection.on_ready(
                self.poll.registry(),
                now,
                &mut self.inbox,
                &mut self.scratch,
            );
        }
        if let Some(hook) = hook.as_deref_mut() {
            // After the reads, as a caller reading the clock once `poll` returned would.
            hook.at = Instant::now();
        }
        let mut inbox = std::mem::take(&mut self.inbox);
        for received in inbox.drain(..) {
            match received {
                Received::Message(Message {
                    view,
                    body: Body::Reply(reply),
                    ..
                }) => self.on_reply(view, reply, completions, hook.as_deref_mut()),
                Received::Message(_) => {}
                Received::Replies(batch) => {
                    let view = batch.view();
                    for reply in batch.replies() {
                        self.on_reply(view, reply, completions, hook.as_deref_mut());
                    }
                }
            }
        }
        self.inbox = inbox;
        if now >= self.next_tick {
            let ticks =
                (now.duration_since(self.next_tick).as_nanos() / TICK.as_nanos()) as u64 + 1;
            self.next_tick += TICK * ticks as u32;
            self.on_ticks(ticks.min(TICKS_CATCH_UP_MAX), completions, now);
        }
        Ok(())
    }

    fn flush(&mut self, now: Instant) {
        for connection in &mut self.connections {
            if connection.wants_flush() {
                connection.flush(self.poll.registry(), now);
            }
        }
    }

    /// Handles a reply sent in `view`; a successful completion goes to `hook` if there is
    /// one (the session's state is still in the cache for the next submit).
    fn on_reply(
        &mut self,
        view: View,
        reply: Reply,
        completions: &mut Vec<Completion>,
        hook: Option<&mut Hook<'_>>,
    ) {
        let Some(index) = self.by_client.candidate(reply.client) else {
            return;
        };
        let slot = &mut self.sessions[index];
        if slot.session.client() != reply.client {
            return; // Not one of ours.
        }
        // Only a primary replies (paper 4.1), so a reply's view is a view that exists.
        self.view = self.view.max(view);
        match slot.session.on_reply(view, reply) {
            None => {}
            Some(Outcome::Registered { .. }) => {
                if let Some(operation) = slot.pending.take() {
                    self.submit_registered(index, operation);
                }
            }
            Some(Outcome::Completed { result, .. }) if slot.deadline.take().is_some() => {
                let completion = Completion {
                    session: index,
                    result: Ok(result),
                };
                match hook {
                    Some(hook) => self.hand_back(hook, completion),
                    None => completions.push(completion),
                }
            }
            Some(Outcome::Evicted { request: Some(_) }) if slot.deadline.take().is_some() => {
                // The operation's fate is unknown: the caller must hear it. The session
                // registers again when next used.
                completions.push(Completion {
                    session: index,
                    result: Err(ClientError::Evicted),
                });
            }
            Some(Outcome::Evicted { request: None }) if slot.pending.is_some() => {
                // The registration itself was refused; nothing executed, so retry it as
                // an operation waits for it.
                let (target, message) = slot.session.register();
                let slot = slot.slot;
                self.send(slot, target, &message);
            }
            Some(Outcome::NewEpoch { configuration }) => self.follow(&configuration),
            Some(Outcome::Rejected { reason, .. }) if slot.deadline.take().is_some() => {
                let reason = match reason.is_empty() {
                    true => SIZE_REJECTION.to_string(),
                    false => String::from_utf8_lossy(&reason).into_owned(),
                };
                completions.push(Completion {
                    session: index,
                    result: Err(ClientError::Rejected(reason)),
                });
            }
            // A completion nobody awaits (its deadline passed just now), or an eviction
            // of an idle session: nothing to report.
            Some(
                Outcome::Completed { .. } | Outcome::Evicted { .. } | Outcome::Rejected { .. },
            ) => {}
        }
    }

    /// Gives the operations submitted since the last pass their deadline: `now` was read
    /// after they were submitted, so the deadline never passes before `request_timeout`
    /// did (it is late by the time between the submit and this pass: the caller polls
    /// right after submitting). One clock read per pass, none per operation: a clock read
    /// per operation showed as 7% of the load generator's samples at 4096 sessions
    /// (`perf/profile.md`).
    fn date_submissions(&mut self, now: Instant) {
        let deadline = now + self.options.request_timeout;
        for index in self.undated.drain(..) {
            let slot = &mut self.sessions[index];
            if slot.deadline == Some(Deadline::FromNextPass) {
                slot.deadline = Some(Deadline::At(deadline));
            }
        }
    }

    /// Runs `ticks` elapsed ticks: connect timeouts at once; the sessions' retries and
    /// deadlines once `sweep_ticks` have accumulated, all of them together.
    fn on_ticks(&mut self, ticks: u64, completions: &mut Vec<Completion>, now: Instant) {
        let connect_timeout = self.options.connect_timeout;
        for connection in &mut self.connections {
            connection.check_connect_timeout(self.poll.registry(), now, connect_timeout);
        }
        self.owed_ticks = (self.owed_ticks + ticks).min(TICKS_CATCH_UP_MAX);
        if self.owed_ticks < self.sweep_ticks {
            return;
        }
        let ticks = std::mem::take(&mut self.owed_ticks);
        for index in 0..self.sessions.len() {
            let slot = &mut self.sessions[index];
            if slot.deadline.is_some_and(|deadline| deadline.passed(now)) {
                completions.push(Completion {
                    session: index,
                    result: Err(ClientError::Timeout),
                });
                self.replace_session(index);
                continue;
            }
            let mut retry = None;
            for _ in 0..ticks {
                retry = slot.session.on_tick().or(retry);
            }
            if let Some((target, message)) = retry {
                let slot = slot.slot;
                self.send(slot, target, &message);
            }
        }
    }

    /// Abandons a session whose operation timed out (its outcome is unknown and its
    /// request number is still in flight) for a fresh, unregistered one.
    fn replace_session(&mut self, index: usize) {
        let mut session = new_session(self.replica_count, self.witnesses, &self.by_client);
        if let Some(configuration) = &self.followed {
            session.follow(configuration);
        }
        let slot = &mut self.sessions[index];
        self.by_client.remove(slot.session.client());
        self.by_client.insert(session.client(), index);
        slot.session = session;
        slot.pending = None;
        slot.deadline = None;
    }

    /// Moves every session to `configuration` (a reply said the cluster went there, paper
    /// 7): new connections to its members, and every request in flight sent to all of
    /// them (the new primary is not known yet). A configuration whose addresses this
    /// client cannot dial is not followed: the requests stay where they are, and their
    /// deadline ends them.
    fn follow(&mut self, configuration: &Configuration) {
        if configuration.epoch() <= self.epoch {
            // Another session brought us here already; it may have been answered by a
            // replica behind us, too. Resend whatever waits, to the current members.
            return self.resend_in_flight();
        }
        let members: Option<Vec<(Option<ReplicaId>, SocketAddr)>> = configuration
            .members()
            .iter()
            .map(|member| Some((Some(member.id), parse_address(&member.address)?)))
            .collect();
        let Some(members) = members else {
            tracing::warn!(
                epoch = configuration.epoch(),
                "the cluster moved to members whose addresses are not host:port; not following"
            );
            return;
        };
        tracing::info!(
            epoch = configuration.epoch(),
            members = ?members.iter().map(|(_, address)| address).collect::<Vec<_>>(),
            "the cluster moved to another configuration; following it"
        );
        let now = Instant::now();
        for connection in &mut self.connections {
            connection.close(self.poll.registry(), now);
        }
        let firsts = &self.sessions[..self.slots];
        self.connections = connect_slots(&members, configuration.epoch(), firsts, &self.options);
        self.replica_count = configuration.replica_count();
        self.witnesses = configuration.witnesses().low_bits();
        self.epoch = configuration.epoch();
        self.view = 0;
        for slot in &mut self.sessions {
            slot.session.follow(configuration);
        }
        self.followed = Some(configuration.clone());
        self.resend_in_flight();
    }

    /// Sends every session's request in flight to every replica of its slot.
    fn resend_in_flight(&mut self) {
        for index in 0..self.sessions.len() {
            let slot = self.sessions[index].slot;
            let Some(message) = self.sessions[index].session.in_flight() else {
                continue;
            };
            let replicas = Replicas {
                connections: &mut self.connections,
                registry: self.poll.registry(),
                count: self.replica_count,
                witnesses: self.witnesses,
                view: self.view,
            };
            replicas.send(slot, Target::All, message);
        }
    }

    /// Queues `message` on the connections of `slot` that `target` names.
    fn send(&mut self, slot: usize, target: Target, message: &Message) {
        let replicas = Replicas {
            connections: &mut self.connections,
            registry: self.poll.registry(),
            count: self.replica_count,
            witnesses: self.witnesses,
            view: self.view,
        };
        replicas.send(slot, target, message);
    }

    /// The reason to give up, when a quorum of replicas refused our hello for its
    /// configuration. One refusal alone may be the replica's misconfiguration, not ours:
    /// so each refusal makes the driver greet the slot's other replicas at once, and the
    /// client gives up only when f+1 of them agree that it is wrong.
    fn refused(&mut self) -> Option<String> {
        let n = self.replica_count as usize;
        let now = Instant::now();
        let mut refused = vec![None; n];
        for (index, connection) in self.connections.iter().enumerate() {
            if let Some(refusal) = &connection.refusal {
                if refusal.code.is_configuration() {
                    refused[index % n] = Some(refusal.reason.clone());
                }
            }
        }
        let count = refused.iter().filter(|r| r.is_some()).count();
        if count == 0 {
            return None;
        }
        if count > (n - 1) / 2 {
            return refused.into_iter().flatten().next();
        }
        for slot in 0..self.connections.len() / n {
            for connection in &mut self.connections[slot * n..(slot + 1) * n] {
                connection.ensure_open(self.poll.registry(), now);
            }
        }
        None
    }

    /// Messages dropped so far because a connection was closed or full.
    pub(crate) fn dropped_messages(&self) -> u64 {
        self.connections.iter().map(|c| c.dropped_messages).sum()
    }
}

/// The driver's connections, borrowed apart from its sessions so that a session's own
/// message can be sent without copying it.
struct Replicas<'a> {
    connections: &'a mut [Connection],
    registry: &'a mio::Registry,
    count: u8,
    /// The witnesses, a bit per index (never primary).
    witnesses: u64,
    /// The latest view any reply reported.
    view: View,
}

impl Replicas<'_> {
    /// Queues `message` on the connections of `slot` that `target` names. A request for
    /// one replica goes to the primary of the latest view the driver knows, which may be
    /// newer than the session's.
    fn send(self, slot: usize, target: Target, message: &Message) {
        let n = self.count as usize;
        match target {
            Target::Replica(replica) => {
                let replica = if self.view > message.view {
                    primary_among(self.view, self.count, self.witnesses)
                } else {
                    replica
                };
                self.connections[slot * n + replica as usize].send(self.registry, message);
            }
            Target::All => {
                for connection in &mut self.connections[slot * n..(slot + 1) * n] {
                    connection.send(self.registry, message);
                }
            }
        }
    }
}

/// Ticks between two visits of every one of `sessions` sessions: 1 up to
/// `SESSIONS_PER_TICK` sessions, then more, up to `TICKS_CATCH_UP_MAX`.
fn sweep_ticks(sessions: usize) -> u64 {
    (sessions.div_ceil(SESSIONS_PER_TICK) as u64).clamp(1, TICKS_CATCH_UP_MAX)
}

/// One connection per member (lazily connected) for each slot, announcing the slot's first
/// session; the replicas learn the others from their requests. The hello states the
/// members and their epoch as the client knows them, for the replicas to compare.
fn connect_slots(
    members: &[(Option<ReplicaId>, SocketAddr)],
    epoch: u32,
    firsts: &[SessionSlot],
    options: &ClientOptions,
) -> Vec<Connection> {
    let terms = Terms {
        cluster: options.cluster_id,
        epoch,
        members: members.iter().map(|&(_, address)| address).collect(),
        limits: None,
    };
    let mut connections = Vec::with_capacity(firsts.len() * members.len());
    for first in firsts {
        let hello = first.session.client();
        for &(id, address) in members {
            let token = Token(connections.len());
            let connection = Connection::new(address, id, token, hello, terms.clone(), options);
            connections.push(connection);
        }
    }
    connections
}

/// A member address as the TCP runtime writes it: `ip:port` text.
fn parse_address(address: &[u8]) -> Option<SocketAddr> {
    crate::runtime::membership::parse_address(address)
}

/// A session whose id has a free slot in `taken` (so it differs from every id there).
fn new_session(replica_count: u8, witnesses: u64, taken: &SessionIndex) -> ClientSession {
    loop {
        let client = random_client_id();
        if taken.is_free(client) {
            return ClientSession::new(client, replica_count, RETRY_TIMEOUT_TICKS)
                .with_witnesses(witnesses);
        }
    }
}
