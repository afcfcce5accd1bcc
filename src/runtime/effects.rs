//! Carrying out the core's effects: the one place where an [`Effect`] becomes I/O. A new
//! effect variant is handled in [`EventLoop::execute_effects`] and nowhere else.
//!
//! Messages are encoded straight into their connection's outbound queue: a message for
//! one replica or client once, a broadcast once for all replica links (the encoded
//! segment is shared, not copied), a checkpoint part with its pages by reference
//! (`wire::encode_segments`: the checkpoint's own buffers are queued, not copied). Nothing is written here: the write phase writes every
//! connection once per iteration, so the effects of one iteration leave in one vectored
//! write per connection. A message whose link or route is missing is dropped: the
//! protocol's timeouts resend what matters, and a client's retry is answered from the
//! client table.

use super::checkpoint_builder::Finished;
use super::event_loop::EventLoop;
use super::handshake::PeerState;
use super::metrics::Recorder;
use super::page_hasher::is_pages;
use super::routes::{ReplyToken, Route};
use crate::protocol::client_table::RouteToken;
use crate::protocol::{Audience, Body, ClientId, Effect, Message, ReplicaId};
use crate::service::StateMachine;
use crate::wire;
use std::time::Instant;

impl<S: StateMachine> EventLoop<S> {
    /// Captures the payloads of the writes the core issued since the last call, from the
    /// replica as it stands now: called as each input returns, since a later input of the
    /// same loop iteration may change the log first (`StoredWrite::capture`). A witness
    /// that appended entries in one message and trimmed below them in the next, both read
    /// from one connection, otherwise wrote an append with none of its entries and then a
    /// log start below them: its journal lost those entries and no longer folded.
    pub(super) fn capture_writes(&mut self) {
        if let Some(disk) = self.disk.as_mut() {
            for effect in &self.effects[self.effects_captured..] {
                if let Effect::Write { id, write } = effect {
                    disk.capture(&self.replica, *id, *write);
                }
            }
        }
        self.effects_captured = self.effects.len();
    }

    /// Carries out every effect the core produced since the last call, in order.
    pub(super) fn execute_effects(&mut self) {
        debug_assert_eq!(
            self.effects_captured,
            self.effects.len(),
            "an input's writes were not captured as it returned"
        );
        self.now = Instant::now();
        // A reconfiguration executed in the last input changes who the peers are.
        self.follow_configuration();
        let mut effects = std::mem::take(&mut self.effects);
        let mut waits = Waits::default();
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, message } => self.send(to, &message),
                Effect::Broadcast { message, audience } => self.broadcast(&message, audience),
                Effect::Reply {
                    client,
                    route,
                    message,
                } => {
                    if let Some(waited_us) = self.reply(client, route, message) {
                        waits.add(waited_us, &mut self.metrics.request_commit_us);
                    }
                }
                // In memory the storage phase completes every write; on disk the payload
                // was captured as its input returned (`capture_writes`).
                Effect::Write { .. } => {}
                // On disk, handed to the page keeper (best effort, off the ordering rule).
                Effect::KeepPages(keep) => {
                    if let Some(disk) = self.disk.as_mut() {
                        disk.keep_pages(keep);
                    }
                }
                Effect::BuildCheckpoint { op, build } => match &self.builder {
                    Some(builder) => builder.submit(op, build),
                    // No worker (a loop built without one): built here, at once.
                    None => {
                        let started = Instant::now();
                        build.run();
                        let ms = started.elapsed().as_millis() as u64;
                        let done = Finished {
                            build_ms: (!build.is_install()).then_some(ms),
                        };
                        let earlier = self.checkpoint_built.unwrap_or_default();
                        self.checkpoint_built = Some(earlier.and(done));
                    }
                },
            }
        }
        waits.flush(&mut self.metrics.request_commit_us);
        self.effects_captured = 0;
        self.effects = effects; // Keep the capacity.
    }

    /// Queues `message` on our link to replica `to` (dialling it if there is none), or,
    /// for a replica we do not dial (a learner, whose address no configuration lists
    /// yet), on the link it dialled to us.
    fn send(&mut self, to: ReplicaId, message: &Message) {
        let cluster = self.options.config.cluster;
        let ours = self.peers.contains(to);
        let token = if ours {
            self.link(to)
        } else {
            self.accepted_link(to)
        };
        let Some(token) = token else {
            return; // No link: the protocol's timeouts resend what matters.
        };
        let connection = self
            .connections
            .get_mut(token)
            .expect("linked connections are live");
        if !ours {
            // Anyone may claim an identity we do not know: such a connection holds one
            // message at a time (a learner's state, up to `message_bytes_max`), and a
            // message finding the last one unwritten is dropped (the learner asks again).
            if connection.has_output() {
                return;
            }
            connection.raise_queued_bytes_max(self.options.config.message_bytes_max as usize);
        }
        let queued = if is_pages(message) {
            connection.push_segments(|out, segments| {
                wire::encode_segments(message, cluster, out, segments);
            })
        } else {
            connection.push_with(|out| wire::encode(message, cluster, out))
        };
        if let Err(overflow) = queued {
            self.close_overflow(token, overflow);
        }
    }

    /// The newest established connection replica `id` dialled to us.
    fn accepted_link(&self, id: ReplicaId) -> Option<usize> {
        self.connections
            .tokens()
            .filter(|&token| {
                self.connections.get(token).is_some_and(|connection| {
                    connection.peer == PeerState::Replica(id) && connection.closing.is_none()
                })
            })
            .max_by_key(|&token| self.connections.get(token).map(|c| c.id))
    }

    /// Encodes `message` once and queues the segment on the link of every other member
    /// of the message's epoch.
    fn broadcast(&mut self, message: &Message, audience: Audience) {
        if let Body::Prepare(prepare) = &message.body {
            self.metrics
                .batch_entries
                .record(prepare.entries.len() as u64);
            self.metrics
                .pipeline_ops
                .record(prepare.op_last().saturating_sub(prepare.commit));
        }
        wire::encode(message, self.options.config.cluster, &mut self.broadcast);
        let segment = self.broadcast.split().freeze();
        let members: smallvec::SmallVec<[ReplicaId; 8]> = self
            .replica
            .configuration_of(message.epoch)
            .unwrap_or_else(|| self.replica.configuration())
            .audience(audience)
            .filter(|&id| id != self.gate.own)
            .collect();
        for id in members {
            let Some(token) = self.link(id) else {
                continue;
            };
            let connection = self
                .connections
                .get_mut(token)
                .expect("linked connections are live");
            if let Err(overflow) = connection.push_shared(segment.clone()) {
                self.close_overflow(token, overflow);
            }
        }
    }

    /// Queues a reply on the connection its token names if that connection is still the
    /// one the token was made for (no lookup: `routes`), and otherwise on the connection
    /// the route table holds for the client, here or on an I/O thread; returns the
    /// request-to-commit wait in microseconds when it answers the request in flight.
    fn reply(
        &mut self,
        client: ClientId,
        token: Option<RouteToken>,
        message: Message,
    ) -> Option<u64> {
        if let Some(token) = token.map(ReplyToken::unpack) {
            let cluster = self.options.config.cluster;
            if let Some(connection) = self.connections.get_mut_of(token.slot, token.generation) {
                self.metrics.counters.replies_sent += 1;
                if let Err(overflow) = connection.push_reply(&message, cluster) {
                    self.close_overflow(token.slot, overflow);
                }
                return Some(token.waited_us(self.routes.micros(self.now)));
            }
            // Closed (its slot may hold another connection now): the client's route, if
            // it sent a request from elsewhere since.
        }
        let request = match &message.body {
            Body::Reply(reply) => Some(reply.request),
            _ => None,
        };
        let Some((route, waited)) = self.routes.on_reply(client, request, self.now) else {
            self.metrics.counters.replies_unroutable += 1;
            return None;
        };
        let waited_us = waited.map(|waited| waited.as_micros() as u64);
        match route {
            Route::Local {
                token,
                connection_id,
            } => {
                let cluster = self.options.config.cluster;
                let Some(connection) = self
                    .connections
                    .get_mut(token)
                    .filter(|connection| connection.id == connection_id)
                else {
                    self.metrics.counters.replies_unroutable += 1;
                    return waited_us;
                };
                self.metrics.counters.replies_sent += 1;
                if let Err(overflow) = connection.push_reply(&message, cluster) {
                    self.close_overflow(token, overflow);
                }
            }
            Route::Io { io, connection_id } => {
                if self.io.send_reply(io, connection_id, message) {
                    self.metrics.counters.replies_sent += 1;
                } else {
                    // Never block the core: the client's retry gets it from the table.
                    self.metrics.counters.replies_unroutable += 1;
                }
            }
        }
        waited_us
    }
}

/// A run of equal request-to-commit waits, recorded as one count: the requests of one
/// read phase arrived at the same clock reading and their replies leave at the same one,
/// so hundreds of replies in a row carry the same wait, and a histogram record per reply
/// was 2% of the primary.
#[derive(Default)]
struct Waits {
    value: u64,
    count: u64,
}

impl Waits {
    fn add(&mut self, value: u64, recorder: &mut Recorder) {
        if value != self.value {
            self.flush(recorder);
            self.value = value;
        }
        self.count += 1;
    }

    fn flush(&mut self, recorder: &mut Recorder) {
        if self.count > 0 {
            recorder.record_n(self.value, self.count);
            self.count = 0;
        }
    }
}
