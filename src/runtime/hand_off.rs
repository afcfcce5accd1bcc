//! The event loop's side of the I/O threads (`--io-threads N`): handing a client connection
//! over once it said hello, taking the requests the threads decoded, and sending replies
//! and stats answers back. The threads themselves are in `io_thread`.
//!
//! Nothing here blocks the core thread: every send is a `try_send` on a bounded channel,
//! and a thread is woken once per iteration that sent it something, not per message.

use super::event_loop::EventLoop;
use super::io_thread::{IoHandle, ToCore, ToIo};
use super::routes::Route;
use crate::protocol::Message;
use crate::service::StateMachine;
use crate::wire::BatchMessages;
use crossbeam_channel::Receiver;
use std::sync::atomic::Ordering;
use tracing::warn;

/// The I/O threads, as the event loop sees them.
#[derive(Debug)]
pub struct IoThreads {
    handles: Vec<IoHandle>,
    /// Requests from the threads (`None` without threads, or while being drained).
    from_io: Option<Receiver<ToCore>>,
    /// Round-robin position for the next handed-over client.
    next: usize,
    /// The rest of a batch of requests the core could not take yet, fed before anything
    /// more is taken from the channel.
    held: Option<(Route, BatchMessages)>,
}

impl IoThreads {
    /// The threads behind `handles`, which send to the core on `from_io`.
    pub fn new(handles: Vec<IoHandle>, from_io: Option<Receiver<ToCore>>) -> IoThreads {
        assert_eq!(
            handles.is_empty(),
            from_io.is_none(),
            "threads come with a channel"
        );
        IoThreads {
            handles,
            from_io,
            next: 0,
            held: None,
        }
    }

    /// Whether there are none (the event loop serves clients itself).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Client connections the threads hold (they count against `connections_max`).
    pub fn clients(&self) -> usize {
        self.handles
            .iter()
            .map(|io| io.clients.load(Ordering::Relaxed))
            .sum()
    }

    /// Connections the threads closed for breaking a rule.
    pub fn rejected(&self) -> u64 {
        self.handles
            .iter()
            .map(|io| io.rejected.load(Ordering::Relaxed))
            .sum()
    }

    /// Sends a reply to connection `connection_id` of thread `io`; false if its channel is
    /// full (the reply is dropped: the client's retry gets it from the client table).
    pub fn send_reply(&mut self, io: u8, connection_id: u64, message: Message) -> bool {
        let reply = ToIo::Reply {
            connection: connection_id,
            message,
        };
        self.send(io as usize, reply)
    }

    /// Wakes every thread that was sent something since its last wake.
    pub fn wake_pending(&mut self) {
        self.handles.iter_mut().for_each(IoHandle::wake_if_pending);
    }

    /// Waits for every thread to end (the shutdown flag is set).
    pub fn stop(&mut self) {
        self.handles.iter_mut().for_each(IoHandle::join);
    }

    fn send(&mut self, io: usize, message: ToIo) -> bool {
        let handle = &mut self.handles[io];
        let sent = handle.sender.try_send(message).is_ok();
        handle.wake_pending |= sent;
        sent
    }
}

impl<S: StateMachine> EventLoop<S> {
    /// Moves a client connection that has said hello to an I/O thread (round robin).
    pub(super) fn hand_over(&mut self, token: usize) {
        let Some(mut connection) = self.connections.remove(self.poll.registry(), token) else {
            return;
        };
        let io = self.io.next % self.io.handles.len();
        self.io.next += 1;
        // The I/O thread counts it from now on (`IoHandle::clients`).
        self.slots.uncount(&mut connection.ip);
        let (id, peer) = (connection.id, connection.peer);
        let (stream, parts) = connection.into_parts();
        let adopt = ToIo::Adopt {
            stream,
            connection: id,
            peer,
            parts,
        };
        if self.io.send(io, adopt) {
            self.io.handles[io].clients.fetch_add(1, Ordering::Relaxed);
        } else {
            // The thread is saturated: dropping the socket (with the message) closes it;
            // the client reconnects.
            warn!(
                io,
                "I/O thread's queue is full: closing a new client connection"
            );
        }
    }

    /// Feeds the core the requests the I/O threads decoded, while it accepts them.
    pub(super) fn drain_io(&mut self) {
        let Some(from_io) = self.io.from_io.take() else {
            return;
        };
        loop {
            if !self.core_accepts_requests() {
                // Leave the rest in the channel: when it fills, the I/O threads stop
                // reading their clients.
                self.paused_clients += 1;
                break;
            }
            self.refresh_lease_clock();
            if let Some((route, requests)) = self.io.held.take() {
                self.on_io_requests(route, requests);
                continue;
            }
            match from_io.try_recv() {
                Ok(ToCore::Request {
                    io,
                    connection,
                    message,
                }) => {
                    let route = Route::Io {
                        io,
                        connection_id: connection,
                    };
                    self.on_request(route, message);
                }
                Ok(ToCore::Requests {
                    io,
                    connection,
                    requests,
                }) => {
                    let route = Route::Io {
                        io,
                        connection_id: connection,
                    };
                    self.on_io_requests(route, requests);
                }
                Ok(ToCore::Stats { io, connection }) => {
                    let json = self.stats_json();
                    self.io.send(io as usize, ToIo::Stats { connection, json });
                }
                Err(_) => break,
            }
        }
        self.io.from_io = Some(from_io);
        self.execute_effects();
    }

    /// Feeds the core a batch's requests while it accepts them; keeps the rest.
    fn on_io_requests(&mut self, route: Route, mut requests: BatchMessages) {
        while self.core_accepts_requests() {
            let Some(message) = requests.next() else {
                return;
            };
            self.on_request(route, message);
        }
        if requests.remaining() > 0 {
            self.io.held = Some((route, requests));
        }
    }
}
