//! The read phase: every readable connection is read until `WouldBlock` (or its budget),
//! each frame decoded and passed through the handshake gate (the shared loop of
//! `connections`), and what the gate admits is handled here: handshake answers, client
//! requests and replica messages for the core, stats requests.
//!
//! Replica connections (and connections yet to say who they are) are read first: their
//! acknowledgements free the pipeline that client requests need. While a primary's batch
//! is full, client connections are left unread: their data stays in the kernel and TCP
//! pushes back.

use super::connections::{next_inbound, Inbound, ReadPass};
use super::event_loop::EventLoop;
use super::handshake::{check_sender, Admitted, PeerState, Rejection};
use super::page_hasher::is_pages;
use super::routes::{ReplyToken, Route};
use crate::protocol::client_table::RouteToken;
use crate::protocol::{Body, Message, Operation};
use crate::service::StateMachine;
use crate::wire::{self, BatchMessages, Peer, Refusal, RefusalCode};
use tracing::{debug, info, warn};

/// Bytes read from one connection per iteration before the others get their turn.
const READ_BUDGET_BYTES: usize = 4 << 20;
/// A stats request is refused when its connection already has this much unread output:
/// a requester that never reads cannot make the replica buffer for it.
pub(super) const STATS_QUEUED_BYTES_MAX: usize = 256 << 10;

impl<S: StateMachine> EventLoop<S> {
    /// Reads every connection with input, replicas first; effects are carried out after
    /// each connection so that its replies and acknowledgements are queued in order.
    pub(super) fn read_phase(&mut self) {
        self.more_to_read = false;
        self.paused_clients = 0;
        for clients in [false, true] {
            for token in self.connections.tokens() {
                let Some(connection) = self.connections.get(token) else {
                    continue;
                };
                if matches!(connection.peer, PeerState::Client(_)) != clients {
                    continue;
                }
                if connection.closing.is_some() {
                    continue; // Refused: only its refusal is still written.
                }
                let has_input = connection.readable
                    || connection.buffered_bytes() > 0
                    || connection.held_requests.is_some();
                if has_input {
                    if clients {
                        self.refresh_lease_clock();
                    }
                    self.read_connection(token);
                    self.execute_effects();
                }
            }
        }
    }

    /// Decodes and handles what `token` has buffered, reading more until `WouldBlock`,
    /// the read budget, or back-pressure stops it.
    fn read_connection(&mut self, token: usize) {
        let mut pass = ReadPass::new(READ_BUDGET_BYTES);
        loop {
            let accepting = self.core_accepts_requests();
            let Some(connection) = self.connections.get_mut(token) else {
                break;
            };
            if matches!(connection.peer, PeerState::Client(_)) && !accepting {
                // Leave the rest in our buffer and the kernel's: TCP pushes back.
                self.paused_clients += 1;
                self.metrics.counters.backpressure_pauses += 1;
                break;
            }
            if let Some(held) = connection.held_requests.take() {
                // What the core could not take of the last batch goes first, in order.
                self.on_requests(token, held);
                continue;
            }
            let cluster = self.options.config.cluster;
            let inbound = next_inbound(connection, &self.gate, cluster, &mut pass);
            self.metrics.counters.add_read(pass.take_counts());
            match inbound {
                Inbound::Admitted(admitted) => self.on_admitted(token, admitted),
                Inbound::Rejected(rejection) => {
                    self.reject(token, rejection);
                    break;
                }
                Inbound::Close { reason, rejected } => {
                    self.close(token, reason, rejected);
                    break;
                }
                Inbound::Idle => break,
                Inbound::BudgetSpent => {
                    self.more_to_read = true;
                    break;
                }
            }
        }
    }

    /// Handles a frame the gate admitted on connection `token`.
    fn on_admitted(&mut self, token: usize, admitted: Admitted) {
        let cluster = self.options.config.cluster;
        match admitted {
            Admitted::Hello {
                peer,
                welcome,
                established,
            } => {
                self.connections
                    .live_mut(token)
                    .push_with(|out| wire::encode_welcome(&welcome, cluster, out))
                    .expect("a welcome fits any queue");
                if established {
                    self.on_established(token, peer);
                }
            }
            Admitted::Authenticated(peer) => self.on_established(token, peer),
            Admitted::Welcomed { replica, proof } => {
                if let Some(proof) = proof {
                    // The proof, then what waited for it.
                    let connection = self.connections.live_mut(token);
                    if let Err(overflow) =
                        connection.release(|out| wire::encode_proof(&proof, cluster, out))
                    {
                        return self.close_overflow(token, overflow);
                    }
                }
                // The replica we dialled may answer on this link (we may be a learner it
                // does not dial): as much as any replica message.
                self.connections.live_mut(token).frame_bytes_max =
                    self.options.config.message_bytes_max;
                self.peers.on_welcomed(replica);
                info!(
                    replica = self.gate.own,
                    peer = replica,
                    "connected to replica"
                );
            }
            Admitted::Request(message) => {
                let connection_id = self.connections.live_mut(token).id;
                let route = Route::Local {
                    token,
                    connection_id,
                };
                self.on_request(route, message);
            }
            Admitted::Requests(batch) => {
                // It speaks batches, so it is answered in batches.
                self.connections.live_mut(token).batches = true;
                self.on_requests(token, batch.into_iter());
            }
            Admitted::Replica { from, message } => {
                let configuration = self.replica.configuration_of(message.epoch);
                if let Err(rejection) = check_sender(from, &message, configuration) {
                    return self.reject(token, rejection);
                }
                // A checkpoint part of pages is hashed off the loop when the page hasher
                // has room (`page_hasher`); any other message goes to the core now.
                let message = match self.hasher.as_mut() {
                    Some(hasher) if is_pages(&message) => match hasher.submit(message) {
                        None => return,
                        Some(message) => {
                            self.metrics.counters.checkpoint_parts_hashed_on_loop += 1;
                            message
                        }
                    },
                    _ => message,
                };
                self.replica.on_message(message, &mut self.effects);
                self.capture_writes();
            }
            Admitted::StatsRequest => self.on_stats_request(token),
        }
    }

    /// A peer finished its handshake: a member of a configuration we know leaves the
    /// shared pool and may send messages up to `message_bytes_max`; any other replica
    /// identity (a learner, or a member of an epoch we have not learned of) stays in the
    /// shared pool with a request's frame limit, since anyone may claim an unknown
    /// identity; a client needs a shared slot.
    fn on_established(&mut self, token: usize, peer: Peer) {
        match peer {
            Peer::Replica(id) => {
                let known = self
                    .replica
                    .configurations()
                    .any(|configuration| configuration.contains_id(id));
                if known {
                    let connection = self.connections.live_mut(token);
                    self.slots.uncount(&mut connection.ip);
                    connection.frame_bytes_max = self.options.config.message_bytes_max;
                }
                info!(
                    replica = self.gate.own,
                    peer = id,
                    known,
                    "replica said hello"
                );
            }
            Peer::Client(client) => {
                if self.slots.over(self.io.clients()) {
                    // It took a reserved slot: those are for replicas.
                    let refusal = Refusal {
                        code: RefusalCode::Busy,
                        version: wire::VERSION,
                        reason: format!(
                            "all {} client connection slots are taken",
                            self.slots.connections_max()
                        ),
                    };
                    return self.reject(token, Rejection::Refused(refusal));
                }
                debug!(client, "client said hello");
                if !self.io.is_empty() {
                    self.hand_over(token);
                }
            }
        }
    }

    /// Answers a stats request, unless its connection asks too often or does not read.
    fn on_stats_request(&mut self, token: usize) {
        let now = self.now;
        let connection = self.connections.live_mut(token);
        if !connection.stats_allowance.take(now) {
            let reason = "stats requests too frequent (more than 20 a second)".to_string();
            return self.close(token, reason, true);
        }
        if connection.queued_bytes() > STATS_QUEUED_BYTES_MAX {
            let reason = format!(
                "stats requester is not reading ({} bytes unread)",
                connection.queued_bytes()
            );
            return self.close(token, reason, true);
        }
        let json = self.stats_json();
        let cluster = self.options.config.cluster;
        let connection = self.connections.live_mut(token);
        if let Err(overflow) =
            connection.push_with(|out| wire::encode_stats_reply(json.as_bytes(), cluster, out))
        {
            self.close_overflow(token, overflow);
        }
    }

    /// Feeds the core the requests of a batch from connection `token` while it accepts
    /// them; the rest waits on the connection (read no further meanwhile), so a batch
    /// that fills the primary's queue part-way loses nothing.
    fn on_requests(&mut self, token: usize, mut requests: BatchMessages) {
        let connection_id = self.connections.live_mut(token).id;
        let route = Route::Local {
            token,
            connection_id,
        };
        let reply_token = self.reply_token(token);
        let mut lease_reads = std::mem::take(&mut self.lease_reads);
        while self.core_accepts_requests() {
            let Some(message) = requests.next() else {
                break;
            };
            if reply_token.is_some() && is_lease_read(&message) {
                // A run of lease reads is handed over at once (`Replica::on_lease_reads`),
                // before the next request of another kind, so the order is kept.
                lease_reads.push(message);
                continue;
            }
            self.feed_lease_reads(&mut lease_reads, reply_token);
            self.on_request(route, message);
        }
        self.feed_lease_reads(&mut lease_reads, reply_token);
        self.lease_reads = lease_reads; // Keep the capacity.
        if requests.remaining() > 0 {
            self.connections.live_mut(token).held_requests = Some(requests);
        }
    }

    /// Hands the core a run of lease reads from one connection as one input, with the
    /// connection's reply token: the core answers each in that input (`Read` under the
    /// lease, else `Behind`: `Replica::replies_at_once`), so no route is noted for them.
    fn feed_lease_reads(&mut self, reads: &mut Vec<Message>, token: Option<RouteToken>) {
        if reads.is_empty() {
            return;
        }
        self.metrics.counters.requests_received += reads.len() as u64;
        self.replica
            .on_lease_reads(reads.drain(..), token, &mut self.effects);
        self.capture_writes();
    }

    /// The reply token of a request read now on connection `token` of this loop.
    fn reply_token(&mut self, token: usize) -> Option<RouteToken> {
        ReplyToken {
            slot: token,
            generation: self.connections.generation(token),
            arrived_us: self.routes.micros(self.now),
        }
        .pack()
    }

    /// Feeds the request to the core with a reply token naming its connection (a
    /// connection of this loop), and notes where its client is in the route table when
    /// its reply may come back without the token (`routes`).
    pub(super) fn on_request(&mut self, route: Route, message: Message) {
        let Body::Request(request) = &message.body else {
            unreachable!("the gate admits only requests here")
        };
        let (client, number) = (request.client, request.request);
        self.metrics.counters.requests_received += 1;
        let token = match route {
            Route::Local { token, .. } => self.reply_token(token),
            // The I/O thread's connections are not in this loop's slots.
            Route::Io { .. } => None,
        };
        let by_token = self.replica.replies_by_token(request.operation)
            || self.replica.replies_at_once(request.operation);
        if token.is_none() || !by_token {
            let connections = &self.connections;
            let is_live = |token, id| connections.get(token).is_some_and(|c| c.id == id);
            if !self
                .routes
                .on_request(client, number, route, self.now, is_live)
            {
                warn!(
                    client,
                    limit = self.routes.routes_max(),
                    "client routes full: this client's reply will not be routed"
                );
            }
        }
        self.replica
            .on_client_request(message, token, &mut self.effects);
        self.capture_writes();
    }
}

/// Whether `message` is a lease read (paper 6.3.1).
fn is_lease_read(message: &Message) -> bool {
    matches!(&message.body, Body::Request(request) if request.operation == Operation::LeaseRead)
}
