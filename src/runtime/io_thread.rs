//! Optional I/O threads (`--io-threads N`): extra mio loops, each on its own (optionally
//! pinned) thread, that own client connections, decode and admit their frames, and hand
//! requests to the core thread; replies come back the same way.
//!
//! The core thread accepts every connection and reads its hello (replicas and clients
//! share one port); a connection that said `Client` is then handed over, with whatever
//! bytes were already read after the hello. Hand-offs are bounded `crossbeam-channel`s
//! plus a `mio::Waker` per receiving loop, woken once per batch, not per message.
//!
//! Connections here are read, decoded, admitted and written by the same steps as the
//! event loop's (`connections`); what differs is where an admitted request goes.
//!
//! Back-pressure carries through: when the core stops draining its channel (the primary's
//! batch is full) the channel fills, an I/O thread keeps the request it could not send and
//! stops reading that connection, and TCP pushes back on the client. Replies that find an
//! I/O thread's channel full are dropped and counted (the client's retry recovers them):
//! the core thread never blocks.

use super::connection::{Connection, Parts};
use super::connections::{next_inbound, peer_address, ConnectionSet, Inbound, ReadPass, Written};
use super::handshake::{Admitted, Gate, PeerState};
use super::inbound::STATS_QUEUED_BYTES_MAX;
use crate::protocol::{Message, ReplicaIndex};
use crate::wire::{self, BatchMessages};
use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::net::TcpStream;
use mio::{Events, Poll, Token, Waker};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

const WAKER: Token = Token(usize::MAX);
/// Messages waiting in each direction of one I/O thread's channels.
pub const CHANNEL_CAPACITY: usize = 16 << 10;
/// While a request waits for room in the core's channel, poll this often.
const RETRY_INTERVAL: Duration = Duration::from_millis(1);
/// Bytes read from one connection per iteration before the others get their turn.
const READ_BUDGET_BYTES: usize = 1 << 20;
/// Outbound limit of a client connection.
const QUEUED_BYTES_MAX: usize = 8 << 20;

/// From an I/O thread to the core thread.
#[derive(Debug)]
pub enum ToCore {
    /// An admitted client request, from connection `connection` of I/O thread `io`.
    Request {
        /// The I/O thread.
        io: u8,
        /// The connection's id.
        connection: u64,
        /// The request.
        message: Message,
    },
    /// An admitted batch of client requests, from connection `connection` of I/O thread
    /// `io`: the core takes them one by one.
    Requests {
        /// The I/O thread.
        io: u8,
        /// The connection's id.
        connection: u64,
        /// The requests.
        requests: BatchMessages,
    },
    /// A stats request from connection `connection` of I/O thread `io`.
    Stats {
        /// The I/O thread.
        io: u8,
        /// The connection's id.
        connection: u64,
    },
}

/// From the core thread to an I/O thread.
#[derive(Debug)]
pub enum ToIo {
    /// Take over a client connection that has finished its handshake.
    Adopt {
        /// The socket (deregistered from the core's poll).
        stream: TcpStream,
        /// Its id (unique in the process).
        connection: u64,
        /// What the hello said.
        peer: PeerState,
        /// Bytes already read after the handshake, and output not yet written.
        parts: Parts,
    },
    /// A reply for a client on `connection`.
    Reply {
        /// The connection's id.
        connection: u64,
        /// The reply.
        message: Message,
    },
    /// The answer to a stats request.
    Stats {
        /// The connection's id.
        connection: u64,
        /// The stats JSON.
        json: String,
    },
}

/// The core thread's handle on one I/O thread.
#[derive(Debug)]
pub struct IoHandle {
    /// Work for the thread.
    pub sender: Sender<ToIo>,
    /// Wakes the thread's poll.
    pub waker: Arc<Waker>,
    /// Set when something was sent since the last wake.
    pub wake_pending: bool,
    /// Connections this thread closed for breaking a rule.
    pub rejected: Arc<AtomicU64>,
    /// Client connections this thread holds (the core counts them against
    /// `connections_max`).
    pub clients: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl IoHandle {
    /// Wakes the thread if something was sent to it since the last wake.
    pub fn wake_if_pending(&mut self) {
        if self.wake_pending {
            self.wake_pending = false;
            if let Err(error) = self.waker.wake() {
                warn!(%error, "cannot wake an I/O thread");
            }
        }
    }

    /// Waits for the thread to end (after the shutdown flag is set).
    pub fn join(&mut self) {
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What an I/O thread needs from its replica.
#[derive(Clone, Debug)]
pub struct IoContext {
    /// This thread's number.
    pub io: u8,
    /// The replica's index.
    pub replica: ReplicaIndex,
    /// The handshake rules (clients arrive here after their handshake: only the rules
    /// for established clients apply).
    pub gate: Gate,
    /// The cluster id every frame must carry.
    pub cluster: u128,
    /// The largest frame accepted from a client (the largest request).
    pub frame_bytes_max: u32,
    /// Pin to this core.
    pub core: Option<usize>,
}

/// Starts I/O thread `context.io`, sending to the core through `to_core` and waking it
/// with `core_waker`; it ends when `shutdown` is set and it is woken.
pub fn spawn(
    context: IoContext,
    to_core: Sender<ToCore>,
    core_waker: Arc<Waker>,
    shutdown: Arc<AtomicBool>,
) -> io::Result<IoHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (sender, inbox) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
    let rejected = Arc::new(AtomicU64::new(0));
    let rejected_count = rejected.clone();
    let clients = Arc::new(AtomicUsize::new(0));
    let clients_count = clients.clone();
    let name = format!("vsr-io-{}-{}", context.replica, context.io);
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        if let Some(core) = context.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                warn!(
                    core,
                    io = context.io,
                    "could not pin an I/O thread; running unpinned"
                );
            }
        }
        let mut io_loop = IoLoop {
            context,
            poll,
            inbox,
            to_core,
            core_waker,
            shutdown,
            connections: ConnectionSet::with_capacity(64),
            pending: Vec::new(),
            by_id: HashMap::new(),
            waiting: 0,
            rejected: rejected_count,
            clients: clients_count,
        };
        if let Err(error) = io_loop.run() {
            warn!(%error, "I/O thread failed");
        }
    })?;
    Ok(IoHandle {
        sender,
        waker,
        wake_pending: false,
        rejected,
        clients,
        thread: Some(thread),
    })
}

struct IoLoop {
    context: IoContext,
    poll: Poll,
    inbox: Receiver<ToIo>,
    to_core: Sender<ToCore>,
    core_waker: Arc<Waker>,
    shutdown: Arc<AtomicBool>,
    /// The client connections this thread owns.
    connections: ConnectionSet,
    /// By token: the message a connection could not hand to the core yet (its channel
    /// was full); while it waits, that connection is not read.
    pending: Vec<Option<ToCore>>,
    /// Connection id → token.
    by_id: HashMap<u64, usize>,
    /// Connections holding a pending message.
    waiting: usize,
    rejected: Arc<AtomicU64>,
    clients: Arc<AtomicUsize>,
}

impl IoLoop {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        while !self.shutdown.load(Ordering::Acquire) {
            let timeout = (self.waiting > 0).then_some(RETRY_INTERVAL);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.connections.on_event(event);
                }
            }
            self.drain_inbox();
            if self.read_phase() {
                self.core_waker.wake()?;
            }
            self.write_phase();
        }
        Ok(())
    }

    fn drain_inbox(&mut self) {
        loop {
            match self.inbox.try_recv() {
                Ok(ToIo::Adopt {
                    stream,
                    connection,
                    peer,
                    parts,
                }) => self.adopt(stream, connection, peer, parts),
                Ok(ToIo::Reply {
                    connection,
                    message,
                }) => self.push_reply(connection, &message),
                Ok(ToIo::Stats { connection, json }) => {
                    let cluster = self.context.cluster;
                    self.push(connection, |out| {
                        wire::encode_stats_reply(json.as_bytes(), cluster, out)
                    });
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    fn adopt(&mut self, stream: TcpStream, id: u64, peer: PeerState, parts: Parts) {
        let limits = (QUEUED_BYTES_MAX, self.context.frame_bytes_max);
        let mut connection = Connection::adopted(stream, id, peer, parts, limits);
        // Data may have arrived before registration: look once without waiting for an edge.
        connection.readable = true;
        connection.writable = true;
        let token = match self.connections.insert(self.poll.registry(), connection) {
            Ok(token) => token,
            Err(error) => {
                warn!(%error, "cannot register a handed-over client connection");
                self.clients.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        };
        if self.pending.len() <= token {
            self.pending.resize_with(token + 1, || None);
        }
        assert!(
            self.pending[token].is_none(),
            "a new connection waits for nothing"
        );
        self.by_id.insert(id, token);
    }

    /// Encodes a frame for connection `id`, if it is still open here.
    fn push(&mut self, id: u64, encode: impl FnOnce(&mut BytesMut)) {
        let Some(&token) = self.by_id.get(&id) else {
            return;
        };
        let connection = self.connections.live_mut(token);
        if let Err(overflow) = connection.push_with(encode) {
            self.close(token, overflow.to_string(), true);
        }
    }

    fn push_reply(&mut self, id: u64, message: &Message) {
        let Some(&token) = self.by_id.get(&id) else {
            return;
        };
        let connection = self.connections.live_mut(token);
        if let Err(overflow) = connection.push_reply(message, self.context.cluster) {
            self.close(token, overflow.to_string(), true);
        }
    }

    /// Reads and hands over what every connection has; returns whether anything was sent.
    fn read_phase(&mut self) -> bool {
        let mut sent = false;
        for token in self.connections.tokens() {
            sent |= self.read_connection(token);
        }
        sent
    }

    /// Hands the core what connection `token` holds: first the message that waited for
    /// room, then each admitted frame, until the socket is drained, the budget is spent,
    /// or the core's channel is full (then it stops: TCP pushes back on the client).
    fn read_connection(&mut self, token: usize) -> bool {
        if self.connections.get(token).is_none() {
            return false;
        }
        let mut sent = false;
        if let Some(pending) = self.pending[token].take() {
            match self.to_core.try_send(pending) {
                Ok(()) => {
                    self.waiting -= 1;
                    sent = true;
                }
                Err(TrySendError::Full(pending) | TrySendError::Disconnected(pending)) => {
                    self.pending[token] = Some(pending);
                    return false;
                }
            }
        }
        let mut pass = ReadPass::new(READ_BUDGET_BYTES);
        let failure = loop {
            let context = &self.context;
            let connection = self.connections.live_mut(token);
            let admitted = match next_inbound(connection, &context.gate, context.cluster, &mut pass)
            {
                Inbound::Admitted(admitted) => admitted,
                Inbound::Rejected(rejection) => break Some((rejection.to_string(), true)),
                Inbound::Close { reason, rejected } => break Some((reason, rejected)),
                Inbound::Idle | Inbound::BudgetSpent => break None,
            };
            let message = match to_core(context.io, connection, admitted) {
                Ok(message) => message,
                Err(reason) => break Some((reason, true)),
            };
            match self.to_core.try_send(message) {
                Ok(()) => sent = true,
                Err(TrySendError::Full(message) | TrySendError::Disconnected(message)) => {
                    // Keep it and stop reading: TCP pushes back on the client.
                    self.pending[token] = Some(message);
                    self.waiting += 1;
                    break None;
                }
            }
        };
        if let Some((reason, rejected)) = failure {
            self.close(token, reason, rejected);
        }
        sent
    }

    fn write_phase(&mut self) {
        for token in self.connections.tokens() {
            if let Written::Failed(error) = self.connections.write(token) {
                self.close(token, format!("write error: {error}"), false);
            }
        }
    }

    fn close(&mut self, token: usize, reason: String, rejected: bool) {
        let Some(connection) = self.connections.remove(self.poll.registry(), token) else {
            return;
        };
        self.by_id.remove(&connection.id);
        self.clients.fetch_sub(1, Ordering::Relaxed);
        if self.pending[token].take().is_some() {
            self.waiting -= 1;
        }
        let address = peer_address(&connection);
        let peer = connection.peer;
        if rejected {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            warn!(replica = self.context.replica, io = self.context.io, %address, ?peer, %reason, "closing connection: {reason}");
        } else {
            debug!(replica = self.context.replica, io = self.context.io, %address, ?peer, %reason, "connection closed");
        }
    }
}

/// What a client frame admitted on an I/O thread's `connection` asks of the core, or why
/// the connection must be closed. Stats requests keep the same limits as on the core's
/// connections: a requester that asks in a loop or never reads is closed.
fn to_core(io: u8, connection: &mut Connection, admitted: Admitted) -> Result<ToCore, String> {
    let id = connection.id;
    match admitted {
        Admitted::Request(message) => Ok(ToCore::Request {
            io,
            connection: id,
            message,
        }),
        Admitted::Requests(batch) => {
            // It speaks batches, so it is answered in batches.
            connection.batches = true;
            Ok(ToCore::Requests {
                io,
                connection: id,
                requests: batch.into_iter(),
            })
        }
        Admitted::StatsRequest => {
            if !connection.stats_allowance.take(Instant::now()) {
                return Err("stats requests too frequent (more than 20 a second)".to_string());
            }
            if connection.queued_bytes() > STATS_QUEUED_BYTES_MAX {
                return Err("stats requester is not reading".to_string());
            }
            Ok(ToCore::Stats { io, connection: id })
        }
        other => unreachable!("a client connection admitted {other:?}"),
    }
}
