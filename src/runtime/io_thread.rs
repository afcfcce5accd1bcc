//! Optional I/O threads (`--io-threads N`): extra mio loops, each on its own (optionally
//! pinned) thread, that own client connections, decode and admit their frames, and hand
//! requests to the core thread; replies come back the same way.
//!
//! The core thread accepts every connection and reads its hello (replicas and clients
//! share one port); a connection that said `Client` is then handed over, with whatever
//! bytes were already read after the hello. Hand-offs are bounded `crossbeam-channel`s
//! plus a `mio::Waker` per receiving loop, woken once per batch, not per message.
//!
//! Back-pressure carries through: when the core stops draining its channel (the primary's
//! batch is full) the channel fills, an I/O thread keeps the request it could not send and
//! stops reading that connection, and TCP pushes back on the client. Replies that find an
//! I/O thread's channel full are dropped and counted (the client's retry recovers them):
//! the core thread never blocks.

use super::connection::{Connection, Parts, ReadOutcome};
use super::handshake::{Admitted, Gate, PeerState};
use crate::protocol::{Message, ReplicaIndex};
use crate::wire;
use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
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
/// A stats request is refused when its connection already has this much unread output.
const STATS_QUEUED_BYTES_MAX: usize = 256 << 10;

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
            connections: Vec::new(),
            free: Vec::new(),
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

/// A client connection and the message it could not hand to the core yet.
struct Slot {
    connection: Connection,
    pending: Option<ToCore>,
}

struct IoLoop {
    context: IoContext,
    poll: Poll,
    inbox: Receiver<ToIo>,
    to_core: Sender<ToCore>,
    core_waker: Arc<Waker>,
    shutdown: Arc<AtomicBool>,
    /// A slab: the index is the mio token.
    connections: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Connection id → token.
    by_id: HashMap<u64, usize>,
    /// Connections holding a message the core's channel had no room for.
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
                if event.token() == WAKER {
                    continue;
                }
                if let Some(slot) = self
                    .connections
                    .get_mut(event.token().0)
                    .and_then(Option::as_mut)
                {
                    slot.connection.readable |=
                        event.is_readable() || event.is_read_closed() || event.is_error();
                    slot.connection.writable |= event.is_writable() || event.is_error();
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
                }) => {
                    let cluster = self.context.cluster;
                    self.push(connection, |out| wire::encode(&message, cluster, out));
                }
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

    fn adopt(&mut self, mut stream: TcpStream, id: u64, peer: PeerState, parts: Parts) {
        let token = self.free.pop().unwrap_or_else(|| {
            self.connections.push(None);
            self.connections.len() - 1
        });
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut stream, Token(token), interest)
        {
            warn!(%error, "cannot register a handed-over client connection");
            self.free.push(token);
            self.clients.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let limits = (QUEUED_BYTES_MAX, self.context.frame_bytes_max);
        let mut connection = Connection::adopted(stream, id, peer, parts, limits);
        // Data may have arrived before registration: look once without waiting for an edge.
        connection.readable = true;
        connection.writable = true;
        self.connections[token] = Some(Slot {
            connection,
            pending: None,
        });
        self.by_id.insert(id, token);
    }

    /// Encodes a frame for connection `id`, if it is still open here.
    fn push(&mut self, id: u64, encode: impl FnOnce(&mut BytesMut)) {
        let Some(&token) = self.by_id.get(&id) else {
            return;
        };
        let slot = self.connections[token]
            .as_mut()
            .expect("indexed connections are live");
        if let Err(overflow) = slot.connection.push_with(encode) {
            self.close(token, overflow.to_string(), true);
        }
    }

    /// Reads and hands over what every connection has; returns whether anything was sent.
    fn read_phase(&mut self) -> bool {
        let mut sent = false;
        for token in 0..self.connections.len() {
            sent |= self.process(token);
        }
        sent
    }

    fn process(&mut self, token: usize) -> bool {
        let context = &self.context;
        let Some(slot) = self.connections[token].as_mut() else {
            return false;
        };
        let mut sent = false;
        if let Some(pending) = slot.pending.take() {
            match self.to_core.try_send(pending) {
                Ok(()) => {
                    self.waiting -= 1;
                    sent = true;
                }
                Err(TrySendError::Full(pending) | TrySendError::Disconnected(pending)) => {
                    slot.pending = Some(pending);
                    return false;
                }
            }
        }
        let mut read_bytes = 0;
        let failure = loop {
            match slot.connection.decode(context.cluster) {
                Ok(Some(frame)) => {
                    let connection = slot.connection.id;
                    let message = match context.gate.admit(&mut slot.connection.peer, frame) {
                        Ok(Admitted::Request(message)) => ToCore::Request {
                            io: context.io,
                            connection,
                            message,
                        },
                        Ok(Admitted::StatsRequest) => {
                            // The same limits as on the core's connections: a requester
                            // that asks in a loop or never reads is closed.
                            let stats = &mut slot.connection;
                            if !stats.stats_allowance.take(Instant::now()) {
                                break Some((
                                    "stats requests too frequent (more than 20 a second)"
                                        .to_string(),
                                    true,
                                ));
                            }
                            if stats.queued_bytes() > STATS_QUEUED_BYTES_MAX {
                                break Some(("stats requester is not reading".to_string(), true));
                            }
                            ToCore::Stats {
                                io: context.io,
                                connection,
                            }
                        }
                        Ok(other) => unreachable!("a client connection admitted {other:?}"),
                        Err(rejection) => break Some((rejection.to_string(), true)),
                    };
                    match self.to_core.try_send(message) {
                        Ok(()) => sent = true,
                        Err(TrySendError::Full(message) | TrySendError::Disconnected(message)) => {
                            // Keep it and stop reading: TCP pushes back on the client.
                            slot.pending = Some(message);
                            self.waiting += 1;
                            break None;
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(error) => break Some((format!("decode error: {error}"), true)),
            }
            if !slot.connection.readable || read_bytes >= READ_BUDGET_BYTES {
                break None;
            }
            match slot.connection.read_once() {
                Ok(ReadOutcome::Data(read)) => read_bytes += read,
                Ok(ReadOutcome::WouldBlock) => break None,
                Ok(ReadOutcome::Closed) => {
                    break Some(("peer closed the connection".to_string(), false))
                }
                Err(error) => break Some((format!("read error: {error}"), false)),
            }
        };
        if let Some((reason, rejected)) = failure {
            self.close(token, reason, rejected);
        }
        sent
    }

    fn write_phase(&mut self) {
        for token in 0..self.connections.len() {
            let Some(slot) = self.connections[token].as_mut() else {
                continue;
            };
            let connection = &mut slot.connection;
            if !connection.has_output() || !connection.writable {
                continue;
            }
            if let Err(error) = connection.write() {
                self.close(token, format!("write error: {error}"), false);
            }
        }
    }

    fn close(&mut self, token: usize, reason: String, rejected: bool) {
        let Some(mut slot) = self.connections[token].take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut slot.connection.stream);
        self.free.push(token);
        self.by_id.remove(&slot.connection.id);
        self.clients.fetch_sub(1, Ordering::Relaxed);
        if slot.pending.is_some() {
            self.waiting -= 1;
        }
        let address = slot
            .connection
            .stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let peer = slot.connection.peer;
        if rejected {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            warn!(replica = self.context.replica, io = self.context.io, %address, ?peer, %reason, "closing connection: {reason}");
        } else {
            debug!(replica = self.context.replica, io = self.context.io, %address, ?peer, %reason, "connection closed");
        }
    }
}
