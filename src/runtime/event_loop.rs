//! The replica's event loop: one mio `Poll` on one (optionally pinned) thread owning the
//! listener, every connection, the tick clock and the protocol core.
//!
//! One iteration, in plain phases:
//! 1. poll, with a timeout of the time left to the next tick (one tick = 10 ms);
//! 2. accept, and note which sockets became readable or writable;
//! 3. read every readable socket until `WouldBlock` (or its fairness budget), decode each
//!    frame, pass it through the handshake gate and feed the core: replica connections
//!    first, so acknowledgements free the pipeline before clients are read;
//! 4. feed the core the ticks that elapsed on the monotonic clock;
//! 5. `flush()` the core (the requests of this iteration become one Prepare);
//! 6. carry out the effects: encode each message once into its connection's queue (a
//!    broadcast is encoded once and the segment shared by every replica connection);
//! 7. write each connection with pending output (vectored writes);
//! 8. reconnect lost replica links whose backoff expired.
//!
//! Back-pressure: while the core is not accepting
//! requests the loop does not read client sockets, so their data stays in the kernel and
//! TCP flow control pushes back on the clients. Every queue here is bounded: a connection
//! whose outbound queue passes its limit is closed with a logged reason.
//!
//! Replica links: each replica connects to every other replica and sends on that
//! connection only; what it receives from a peer arrives on the peer's own connection.
//! So each direction has one owner and no connection race needs resolving.

use super::connection::{Connection, Overflow, ReadOutcome};
use super::handshake::{Admitted, Gate, PeerState, Rejection};
use super::io_thread::{IoHandle, ToCore, ToIo};
use super::metrics::Metrics;
use super::options::{ServerError, ServerOptions};
use super::stats::StatsCache;
use super::throttle::{LogThrottle, LOG_INTERVAL};
use crate::protocol::client_table::ClientMap;
use crate::protocol::{Body, ClientId, Effect, Message, Replica, ReplicaIndex, RequestNumber};
use crate::service::StateMachine;
use crate::wire::{self, Hello, Peer, Refusal, RefusalCode};
use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, error, info, warn};

/// One protocol tick.
pub const TICK: Duration = Duration::from_millis(10);
/// After a stall (the process was stopped, the machine swapped), at most this many
/// missed ticks are replayed at once: the peers' messages, not a burst of timeouts,
/// should decide what happens next.
const TICKS_CATCH_UP_MAX: u32 = 10;
pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKER: Token = Token(usize::MAX - 2);
/// Slots kept for replica links beyond `connections_max`, per replica of the cluster
/// (its link to us and ours to it).
const RESERVED_SLOTS_PER_REPLICA: usize = 2;
/// How long a refused connection may take to read its refusal before it is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// After a peer refused our link for its configuration, wait at least this long before
/// dialling again (the backoff never resets on a refused handshake).
const REFUSED_BACKOFF: Duration = Duration::from_secs(5);
/// How often handshake deadlines are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// A stats request is refused when its connection already has this much unread output:
/// a requester that never reads cannot make the replica buffer for it.
const STATS_QUEUED_BYTES_MAX: usize = 256 << 10;
/// Bytes read from one connection per iteration before the others get their turn.
const READ_BUDGET_BYTES: usize = 4 << 20;
/// Outbound limit of a client connection.
const CLIENT_QUEUED_BYTES_MAX: usize = 8 << 20;
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// The core's clock starts once every replica link is up, or after this long. A replica
/// starts by broadcasting Recovery on its first tick (paper 4.3); when the processes of a
/// new cluster start together, a Recovery sent before the links exist would be lost and
/// the replicas would learn of each other only at the retry, a recovery timeout later.
const STARTUP_GRACE: Duration = Duration::from_secs(2);

/// Where a client's replies go: the connection its latest request came in on.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// A connection of this loop.
    Local { token: usize, connection_id: u64 },
    /// A connection of an I/O thread.
    Io { io: u8, connection_id: u64 },
}

/// What the loop keeps per client: where its replies go and when its in-flight request
/// arrived. One map lookup per request and one per reply: with thousands of clients each
/// lookup is likely a cache miss, and they showed up as the primary's top cost.
#[derive(Clone, Copy, Debug)]
struct ClientRoute {
    route: Route,
    /// The request in flight and when it reached this primary (request-to-commit).
    arrival: Option<(RequestNumber, Instant)>,
}

/// Our outbound link to one other replica.
#[derive(Debug)]
struct PeerLink {
    token: Option<usize>,
    next_attempt: Instant,
    backoff: Duration,
    /// Having something to send dials at once, ignoring the backoff, but at most once
    /// per tick: a message that finds no link is otherwise lost, and at start-up, when
    /// the processes come up one after another, that would be the first Recovery's
    /// answers.
    on_demand_after: Instant,
}

/// What processing one connection decided next.
enum Step {
    Admitted(Admitted),
    Reject(Rejection),
    Close { reason: String, rejected: bool },
    Done,
}

/// The event loop of one replica.
pub struct EventLoop<S: StateMachine> {
    poll: Poll,
    listener: TcpListener,
    options: ServerOptions,
    replica: Replica<S>,
    /// A slab: the index is the mio token.
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
    connection_id_next: u64,
    peers: Vec<PeerLink>,
    /// Bounded by `routes_max`.
    routes: ClientMap<ClientRoute>,
    routes_max: usize,
    /// When each client's in-flight request reached this primary; bounded by `routes_max`.
    /// The clock read once per phase (request arrivals, then replies) rather than per
    /// operation: a clock read per op cost ~5% of the primary's time under load.
    now: Instant,
    effects: Vec<Effect>,
    /// Encoding space for broadcasts; split and shared, then reclaimed.
    broadcast: BytesMut,
    replica_queued_bytes_max: usize,
    metrics: Metrics,
    shutdown: Arc<AtomicBool>,
    next_tick: Instant,
    /// Until the links are up (or `STARTUP_GRACE` passes) the core gets no ticks.
    ticking: bool,
    started_at: Instant,
    summary_at: Instant,
    summary_commit: u64,
    /// Client connections left unread because the core was full.
    paused_clients: usize,
    /// A connection stopped at its read budget with data left: poll without waiting.
    more_to_read: bool,
    /// The handshake rules.
    gate: Gate,
    /// The largest frame from a connection that is not an identified replica.
    request_frame_bytes_max: u32,
    /// Accepted connections that are not identified replicas (pending handshakes and
    /// clients), in all and per IP address: the bounded pool beside the reserved slots.
    unreplicated: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Repeated rejections of one peer for one reason log once a minute.
    throttle: LogThrottle<(String, String)>,
    /// The expensive half of a stats reply, rebuilt at most every few milliseconds.
    stats: StatsCache,
    sweep_at: Instant,
    /// The I/O threads that own client connections (none: this loop serves clients).
    io: Vec<IoHandle>,
    /// Requests from the I/O threads (`None` without I/O threads).
    from_io: Option<crossbeam_channel::Receiver<ToCore>>,
    /// Round-robin position for the next handed-over client.
    io_next: usize,
}

impl<S: StateMachine> EventLoop<S> {
    /// A loop for `replica`, listening on `listener`, which is registered on `poll`.
    pub fn new(
        poll: Poll,
        listener: TcpListener,
        options: ServerOptions,
        replica: Replica<S>,
        shutdown: Arc<AtomicBool>,
        io: Vec<IoHandle>,
        from_io: Option<crossbeam_channel::Receiver<ToCore>>,
    ) -> EventLoop<S> {
        let now = Instant::now();
        let config = &options.config;
        let routes_max = config.clients_max as usize * 2;
        let replica_queued_bytes_max = (config.message_bytes_max as usize * 4).max(64 << 20);
        let peers = (0..options.addresses.len())
            .map(|_| PeerLink {
                token: None,
                next_attempt: now,
                backoff: RECONNECT_BACKOFF_MIN,
                on_demand_after: now,
            })
            .collect();
        EventLoop {
            poll,
            listener,
            replica,
            connections: Vec::with_capacity(64),
            free: Vec::new(),
            connection_id_next: 1,
            peers,
            routes: ClientMap::with_capacity_and_hasher(
                routes_max.min(1 << 16),
                Default::default(),
            ),
            routes_max,
            now,
            effects: Vec::with_capacity(1024),
            broadcast: BytesMut::with_capacity(1 << 20),
            replica_queued_bytes_max,
            metrics: Metrics::default(),
            shutdown,
            next_tick: now + TICK,
            ticking: false,
            started_at: now,
            summary_at: now + SUMMARY_INTERVAL,
            summary_commit: 0,
            paused_clients: 0,
            more_to_read: false,
            io,
            from_io,
            io_next: 0,
            gate: options.gate(),
            request_frame_bytes_max: options.request_frame_bytes_max(),
            unreplicated: 0,
            per_ip: HashMap::new(),
            throttle: LogThrottle::new(LOG_INTERVAL),
            stats: StatsCache::default(),
            sweep_at: now + SWEEP_INTERVAL,
            options,
        }
    }

    /// Runs until `shutdown` is set (and the waker woken).
    pub fn run(mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        info!(
            replica = self.options.replica,
            address = %self.options.address(),
            replicas = self.options.addresses.len(),
            "replica listening"
        );
        if self.gate.key.is_some() {
            info!(
                replica = self.options.replica,
                "cluster key set: every connection must prove it before any frame is accepted"
            );
        } else {
            warn!(
                replica = self.options.replica,
                "no cluster key: the cluster is unauthenticated, and any process that can reach this port can speak as a client or a replica (see --cluster-key)"
            );
        }
        while !self.shutdown.load(Ordering::Acquire) {
            let timeout = self.poll_timeout(Instant::now());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            }
            let started = Instant::now();
            self.now = started;
            self.replica.set_clock(realtime_ns());
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(token) => self.on_event(
                        token,
                        event.is_readable() || event.is_read_closed() || event.is_error(),
                        event.is_writable() || event.is_error(),
                    ),
                }
            }
            self.read_phase();
            self.drain_io();
            self.tick_phase(started);
            self.replica.flush(&mut self.effects);
            self.execute_effects();
            self.write_phase();
            self.io.iter_mut().for_each(IoHandle::wake_if_pending);
            self.connect_peers(started);
            self.sweep_if_due(started);
            self.summary_if_due(started);
            self.metrics.counters.loop_iterations += 1;
            self.metrics
                .loop_iteration_us
                .record(started.elapsed().as_micros() as u64);
        }
        info!(replica = self.options.replica, "replica shutting down");
        self.stop_io();
        Ok(())
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        let accepting = !self.replica.is_primary() || self.replica.accepting_requests();
        if self.more_to_read || (self.paused_clients > 0 && accepting) {
            return Duration::ZERO;
        }
        let mut wake_at = self.next_tick.min(self.summary_at).min(self.sweep_at);
        for (index, link) in self.peers.iter().enumerate() {
            if index != self.options.replica as usize && link.token.is_none() {
                wake_at = wake_at.min(link.next_attempt);
            }
        }
        wake_at.saturating_duration_since(now)
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, address)) => {
                    self.metrics.counters.connections_accepted += 1;
                    if let Err(reason) = self.make_room(address.ip()) {
                        self.metrics.counters.connections_refused += 1;
                        self.log_rejection(
                            address.ip().to_string(),
                            "refusing connection",
                            reason,
                            false,
                        );
                        continue;
                    }
                    if let Err(error) = stream.set_nodelay(true) {
                        debug!(%address, %error, "cannot set TCP_NODELAY");
                    }
                    debug!(%address, "accepted connection");
                    // We only ever write handshake frames, replies and stats replies on
                    // accepted connections (replica traffic goes out on our own links).
                    let frame_max = self.request_frame_bytes_max;
                    match self.insert(stream, false, CLIENT_QUEUED_BYTES_MAX, frame_max) {
                        Ok(token) => self.count_unreplicated(token, address.ip()),
                        Err(error) => {
                            warn!(%address, %error, "cannot register accepted connection")
                        }
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Typically out of file descriptors: keep serving what we have.
                    warn!(%error, "accept failed");
                    return;
                }
            }
        }
    }

    /// Finds a slot for a new connection from `ip`, or says why there is none.
    ///
    /// Clients and connections that have not said who they are share `connections_max`
    /// slots; `2 × replicas` more are reserved for replica links. When the shared slots
    /// are full, the oldest connection still in its handshake is closed to make room (an
    /// idle attacker's socket, not a working client); failing that, the newcomer may take
    /// a reserved slot, but only to say it is a replica (a client hello there is refused).
    fn make_room(&mut self, ip: IpAddr) -> Result<(), String> {
        let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.options.connections_per_ip_max {
            return Err(format!(
                "{from_ip} connections from this address already (--connections-per-ip {})",
                self.options.connections_per_ip_max
            ));
        }
        if self.unreplicated + self.io_clients() < self.options.connections_max {
            return Ok(());
        }
        if let Some(oldest) = self.oldest_pending() {
            self.close(oldest, "closed to make room: all connection slots are taken and this one has not finished its handshake".to_string(), true);
            return Ok(());
        }
        let reserved = RESERVED_SLOTS_PER_REPLICA * self.options.addresses.len();
        if self.live_connections() < self.options.connections_max + reserved {
            return Ok(());
        }
        Err(format!(
            "all {} connection slots are taken (--connections-max {})",
            self.options.connections_max + reserved,
            self.options.connections_max
        ))
    }

    fn oldest_pending(&self) -> Option<usize> {
        self.connections
            .iter()
            .enumerate()
            .filter_map(|(token, c)| c.as_ref().map(|c| (token, c)))
            .filter(|(_, c)| c.peer.is_pending() && c.closing.is_none())
            .min_by_key(|(_, c)| c.opened_at)
            .map(|(token, _)| token)
    }

    fn count_unreplicated(&mut self, token: usize, ip: IpAddr) {
        if let Some(connection) = self.connections[token].as_mut() {
            connection.ip = Some(ip);
            self.unreplicated += 1;
            *self.per_ip.entry(ip).or_insert(0) += 1;
        }
    }

    /// Takes a connection out of the shared pool (it is a replica, or it is closing).
    fn uncount(&mut self, connection: &mut Connection) {
        let Some(ip) = connection.ip.take() else {
            return;
        };
        self.unreplicated -= 1;
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn insert(
        &mut self,
        mut stream: TcpStream,
        connecting: bool,
        queued_bytes_max: usize,
        frame_bytes_max: u32,
    ) -> io::Result<usize> {
        let token = self.free.pop().unwrap_or_else(|| {
            self.connections.push(None);
            self.connections.len() - 1
        });
        if let Err(error) = self.poll.registry().register(
            &mut stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(token);
            return Err(error);
        }
        let id = self.connection_id_next;
        self.connection_id_next += 1;
        self.connections[token] = Some(Connection::new(
            stream,
            id,
            connecting,
            queued_bytes_max,
            frame_bytes_max,
        ));
        Ok(token)
    }

    fn live_connections(&self) -> usize {
        self.connections.len() - self.free.len()
    }

    fn on_event(&mut self, token: usize, readable: bool, writable: bool) {
        let Some(connection) = self.connections.get_mut(token).and_then(Option::as_mut) else {
            return;
        };
        connection.readable |= readable;
        connection.writable |= writable;
        if connection.connecting {
            self.check_connected(token);
        }
    }

    /// An outbound connect completes when the socket has a peer address; it failed when
    /// the socket holds an error.
    fn check_connected(&mut self, token: usize) {
        let Some(connection) = self.connections[token].as_mut() else {
            return;
        };
        let failure = match connection.stream.take_error() {
            Ok(Some(error)) | Err(error) => Some(error),
            Ok(None) => match connection.stream.peer_addr() {
                Ok(_) => None,
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
                Err(error) => Some(error),
            },
        };
        match failure {
            Some(error) => self.close(token, format!("connect failed: {error}"), false),
            // The backoff resets only when the peer welcomes us (a connection that is
            // then refused must not be redialled at once).
            None => connection.connecting = false,
        }
    }

    fn read_phase(&mut self) {
        self.more_to_read = false;
        self.paused_clients = 0;
        // Replicas (and connections yet to say who they are) first: their acknowledgements
        // free the pipeline that client requests need.
        for clients in [false, true] {
            for token in 0..self.connections.len() {
                let Some(connection) = self.connections[token].as_ref() else {
                    continue;
                };
                if matches!(connection.peer, PeerState::Client(_)) != clients {
                    continue;
                }
                if connection.closing.is_some() {
                    continue; // Refused: only its refusal is still written.
                }
                if connection.readable || connection.buffered_bytes() > 0 {
                    self.process_connection(token);
                    self.execute_effects();
                }
            }
        }
    }

    /// Decodes and handles what `token` has buffered, reading more until `WouldBlock`,
    /// the read budget, or back-pressure stops it.
    fn process_connection(&mut self, token: usize) {
        let mut read_bytes = 0;
        loop {
            let step = self.next_step(token, &mut read_bytes);
            match step {
                Step::Admitted(admitted) => self.handle(token, admitted),
                Step::Reject(rejection) => return self.reject(token, rejection),
                Step::Close { reason, rejected } => return self.close(token, reason, rejected),
                Step::Done => return,
            }
        }
    }

    fn next_step(&mut self, token: usize, read_bytes: &mut usize) -> Step {
        // Only a primary's full batch pauses clients: elsewhere requests are read and
        // dropped by the core (the client retries), and stats requests must be answered.
        let accepting = !self.replica.is_primary() || self.replica.accepting_requests();
        let cluster = self.options.config.cluster;
        let Some(connection) = self.connections[token].as_mut() else {
            return Step::Done;
        };
        loop {
            if matches!(connection.peer, PeerState::Client(_)) && !accepting {
                // Leave the rest in our buffer and the kernel's: TCP pushes back.
                self.paused_clients += 1;
                self.metrics.counters.backpressure_pauses += 1;
                return Step::Done;
            }
            match connection.decode(cluster) {
                Ok(Some(frame)) => {
                    self.metrics.counters.frames_received += 1;
                    return match self.gate.admit(&mut connection.peer, frame) {
                        Ok(admitted) => Step::Admitted(admitted),
                        Err(rejection) => Step::Reject(rejection),
                    };
                }
                Ok(None) => {}
                Err(error) => {
                    if matches!(error, wire::DecodeError::OutOfRange(_)) {
                        self.metrics.counters.frames_out_of_range += 1;
                    }
                    return Step::Close {
                        reason: format!("decode error: {error}"),
                        rejected: true,
                    };
                }
            }
            if !connection.readable || connection.connecting {
                return Step::Done;
            }
            if *read_bytes >= READ_BUDGET_BYTES {
                self.more_to_read = true;
                return Step::Done;
            }
            match connection.read_once() {
                Ok(ReadOutcome::Data(read)) => {
                    *read_bytes += read;
                    self.metrics.counters.bytes_received += read as u64;
                }
                Ok(ReadOutcome::WouldBlock) => return Step::Done,
                Ok(ReadOutcome::Closed) => {
                    let partial = connection.buffered_bytes();
                    let reason = format!(
                        "peer closed the connection ({partial} bytes of a partial frame left)"
                    );
                    return Step::Close {
                        reason,
                        rejected: false,
                    };
                }
                Err(error) => {
                    return Step::Close {
                        reason: format!("read error: {error}"),
                        rejected: false,
                    }
                }
            }
        }
    }

    fn handle(&mut self, token: usize, admitted: Admitted) {
        match admitted {
            Admitted::Hello {
                peer,
                welcome,
                established,
            } => {
                let cluster = self.options.config.cluster;
                let connection = self.connections[token]
                    .as_mut()
                    .expect("the connection is live");
                connection
                    .push_with(|out| wire::encode_welcome(&welcome, cluster, out))
                    .expect("a welcome fits any queue");
                if established {
                    self.on_established(token, peer);
                }
            }
            Admitted::Authenticated(peer) => self.on_established(token, peer),
            Admitted::Welcomed { replica, proof } => {
                let cluster = self.options.config.cluster;
                let connection = self.connections[token]
                    .as_mut()
                    .expect("the connection is live");
                if let Some(proof) = proof {
                    // The proof, then what waited for it.
                    if let Err(overflow) =
                        connection.release(|out| wire::encode_proof(&proof, cluster, out))
                    {
                        return self.close_overflow(token, overflow);
                    }
                }
                self.peers[replica as usize].backoff = RECONNECT_BACKOFF_MIN;
                info!(
                    replica = self.options.replica,
                    peer = replica,
                    "connected to replica"
                );
            }
            Admitted::Request(message) => {
                let connection_id = self.connections[token]
                    .as_ref()
                    .expect("the connection is live")
                    .id;
                self.on_request(
                    Route::Local {
                        token,
                        connection_id,
                    },
                    message,
                );
            }
            Admitted::Replica(message) => self.replica.on_message(message, &mut self.effects),
            Admitted::StatsRequest => self.on_stats_request(token),
        }
    }

    /// A peer finished its handshake: a replica leaves the shared pool and may send
    /// messages up to `message_bytes_max`; a client needs a shared slot.
    fn on_established(&mut self, token: usize, peer: Peer) {
        let mut connection = self.connections[token]
            .take()
            .expect("the connection is live");
        match peer {
            Peer::Replica(index) => {
                self.uncount(&mut connection);
                connection.frame_bytes_max = self.options.config.message_bytes_max;
                self.connections[token] = Some(connection);
                info!(
                    replica = self.options.replica,
                    peer = index,
                    "replica said hello"
                );
            }
            Peer::Client(client) => {
                self.connections[token] = Some(connection);
                if self.unreplicated + self.io_clients() > self.options.connections_max {
                    // It took a reserved slot: those are for replicas.
                    let refusal = Refusal {
                        code: RefusalCode::Busy,
                        reason: format!(
                            "all {} client connection slots are taken",
                            self.options.connections_max
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

    fn on_stats_request(&mut self, token: usize) {
        let now = self.now;
        let connection = self.connections[token]
            .as_mut()
            .expect("the connection is live");
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
        let connection = self.connections[token]
            .as_mut()
            .expect("the connection is live");
        if let Err(overflow) =
            connection.push_with(|out| wire::encode_stats_reply(json.as_bytes(), cluster, out))
        {
            self.close_overflow(token, overflow);
        }
    }

    fn on_request(&mut self, route: Route, message: Message) {
        let Body::Request(request) = &message.body else {
            unreachable!("the gate admits only requests here")
        };
        let (client, number) = (request.client, request.request);
        self.metrics.counters.requests_received += 1;
        if self.routes.len() >= self.routes_max && !self.routes.contains_key(&client) {
            // Forget routes to closed connections (an I/O thread's may be stale: the
            // client's next request routes it again).
            let connections = &self.connections;
            self.routes.retain(|_, client| match client.route {
                Route::Local {
                    token,
                    connection_id,
                } => connections[token]
                    .as_ref()
                    .is_some_and(|c| c.id == connection_id),
                Route::Io { .. } => false,
            });
        }
        // A retry keeps the first arrival time of its request number.
        let arrival = |previous: Option<(RequestNumber, Instant)>, now| match previous {
            Some((known, arrived)) if known == number => Some((known, arrived)),
            _ => Some((number, now)),
        };
        if let Some(known) = self.routes.get_mut(&client) {
            known.route = route;
            known.arrival = arrival(known.arrival, self.now);
        } else if self.routes.len() < self.routes_max {
            let arrival = arrival(None, self.now);
            self.routes.insert(client, ClientRoute { route, arrival });
        } else {
            warn!(
                client,
                limit = self.routes_max,
                "client routes full: this client's reply will not be routed"
            );
        }
        self.replica.on_message(message, &mut self.effects);
    }

    fn tick_phase(&mut self, now: Instant) {
        if !self.ticking {
            let own = self.options.replica as usize;
            let links_up = self.peers.iter().enumerate().all(|(index, link)| {
                index == own
                    || link.token.is_some_and(|token| {
                        self.connections[token]
                            .as_ref()
                            .is_some_and(|c| matches!(c.peer, PeerState::Linked(_)))
                    })
            });
            if !links_up && now < self.started_at + STARTUP_GRACE {
                return;
            }
            info!(
                replica = self.options.replica,
                links_up, "starting the protocol clock"
            );
            self.ticking = true;
            self.next_tick = now;
        }
        let mut ticks = 0;
        while now >= self.next_tick {
            self.replica.on_tick(&mut self.effects);
            self.next_tick += TICK;
            ticks += 1;
            if ticks == TICKS_CATCH_UP_MAX {
                self.next_tick = now + TICK;
                break;
            }
        }
    }

    fn execute_effects(&mut self) {
        self.now = Instant::now();
        let mut effects = std::mem::take(&mut self.effects);
        // Durability in memory: every write completes at once, which releases the
        // messages that waited for them (the storage phase of a durable replica goes here).
        self.replica.complete_writes_in_memory(&mut effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, message } => self.send(to, &message),
                Effect::Broadcast { message } => self.broadcast(&message),
                Effect::Reply { client, message } => self.reply(client, message),
                Effect::Write { .. } => {} // Completed above.
            }
        }
        self.effects = effects; // Keep the capacity.
    }

    fn send(&mut self, to: ReplicaIndex, message: &Message) {
        let cluster = self.options.config.cluster;
        let Some(token) = self.link(to as usize) else {
            return; // No link: the protocol's timeouts resend what matters.
        };
        let connection = self.connections[token]
            .as_mut()
            .expect("linked connections are live");
        if let Err(overflow) = connection.push_with(|out| wire::encode(message, cluster, out)) {
            self.close_overflow(token, overflow);
        }
    }

    fn broadcast(&mut self, message: &Message) {
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
        for index in 0..self.peers.len() {
            if index == self.options.replica as usize {
                continue;
            }
            let Some(token) = self.link(index) else {
                continue;
            };
            let connection = self.connections[token]
                .as_mut()
                .expect("linked connections are live");
            if let Err(overflow) = connection.push_shared(segment.clone()) {
                self.close_overflow(token, overflow);
            }
        }
    }

    fn reply(&mut self, client: ClientId, message: Message) {
        let route = self.routes.get_mut(&client).map(|known| {
            if let (Body::Reply(reply), Some((number, arrived))) = (&message.body, known.arrival) {
                if reply.request == number {
                    known.arrival = None;
                    let waited = self.now.saturating_duration_since(arrived);
                    self.metrics
                        .request_commit_us
                        .record(waited.as_micros() as u64);
                }
            }
            known.route
        });
        match route {
            Some(Route::Local {
                token,
                connection_id,
            }) => {
                let cluster = self.options.config.cluster;
                let Some(connection) = self.connections[token]
                    .as_mut()
                    .filter(|connection| connection.id == connection_id)
                else {
                    self.metrics.counters.replies_unroutable += 1;
                    return;
                };
                self.metrics.counters.replies_sent += 1;
                if let Err(overflow) =
                    connection.push_with(|out| wire::encode(&message, cluster, out))
                {
                    self.close_overflow(token, overflow);
                }
            }
            Some(Route::Io { io, connection_id }) => {
                let handle = &mut self.io[io as usize];
                let reply = ToIo::Reply {
                    connection: connection_id,
                    message,
                };
                if handle.sender.try_send(reply).is_ok() {
                    handle.wake_pending = true;
                    self.metrics.counters.replies_sent += 1;
                } else {
                    // Never block the core: the client's retry gets it from the table.
                    self.metrics.counters.replies_unroutable += 1;
                }
            }
            None => self.metrics.counters.replies_unroutable += 1,
        }
    }

    /// Moves a client connection that has said hello to an I/O thread (round robin).
    fn hand_over(&mut self, token: usize) {
        let index = self.io_next % self.io.len();
        self.io_next += 1;
        let Some(mut connection) = self.connections[token].take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut connection.stream);
        self.free.push(token);
        // The I/O thread counts it from now on (`IoHandle::clients`).
        self.uncount(&mut connection);
        let (id, peer) = (connection.id, connection.peer);
        let (stream, parts) = connection.into_parts();
        let adopt = ToIo::Adopt {
            stream,
            connection: id,
            peer,
            parts,
        };
        let handle = &mut self.io[index];
        match handle.sender.try_send(adopt) {
            Ok(()) => {
                handle.wake_pending = true;
                handle.clients.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                // The thread is saturated: dropping the socket closes it; the client
                // reconnects.
                warn!(
                    io = index,
                    "I/O thread's queue is full: closing a new client connection"
                );
                drop(error);
            }
        }
    }

    /// Feeds the core the requests the I/O threads decoded, while it accepts them.
    fn drain_io(&mut self) {
        let Some(from_io) = self.from_io.take() else {
            return;
        };
        loop {
            if self.replica.is_primary() && !self.replica.accepting_requests() {
                // Leave the rest in the channel: when it fills, the I/O threads stop
                // reading their clients.
                self.paused_clients += 1;
                break;
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
                Ok(ToCore::Stats { io, connection }) => {
                    let json = self.stats_json();
                    let handle = &mut self.io[io as usize];
                    if handle
                        .sender
                        .try_send(ToIo::Stats { connection, json })
                        .is_ok()
                    {
                        handle.wake_pending = true;
                    }
                }
                Err(_) => break,
            }
        }
        self.from_io = Some(from_io);
        self.execute_effects();
    }

    /// The stats reply: counters read now, histograms from a cache rebuilt at most every
    /// `stats::HISTOGRAMS_REFRESH`, so a burst of requests costs formatting, not
    /// quantile scans.
    fn stats_json(&mut self) -> String {
        self.metrics.counters.connections_rejected_io = self
            .io
            .iter()
            .map(|io| io.rejected.load(Ordering::Relaxed))
            .sum();
        let connections = self.live_connections() + self.io_clients();
        let histograms = self.stats.histograms(&self.metrics, self.now);
        self.metrics.json(&self.replica, connections, histograms)
    }

    /// Clients on the I/O threads.
    fn io_clients(&self) -> usize {
        self.io
            .iter()
            .map(|io| io.clients.load(Ordering::Relaxed))
            .sum()
    }

    fn stop_io(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        self.io.iter_mut().for_each(IoHandle::join);
    }

    fn write_phase(&mut self) {
        for token in 0..self.connections.len() {
            let Some(connection) = self.connections[token].as_mut() else {
                continue;
            };
            if !connection.has_output() || !connection.writable || connection.connecting {
                continue;
            }
            match connection.write() {
                Ok(written) => self.metrics.counters.bytes_sent += written as u64,
                Err(error) => self.close(token, format!("write error: {error}"), false),
            }
            if self.connections[token]
                .as_ref()
                .is_some_and(|c| c.closing.is_some() && !c.has_output())
            {
                self.close(token, "refusal sent".to_string(), false);
            }
        }
    }

    /// The link to replica `index`, dialled now if there is none (see `on_demand_after`).
    fn link(&mut self, index: usize) -> Option<usize> {
        let link = &mut self.peers[index];
        if link.token.is_some() {
            // With a key, what is sent before the handshake is done waits on the
            // connection (`Connection::hold`): the peer reads nothing but our proof first.
            return link.token;
        }
        let now = Instant::now();
        if now < link.on_demand_after {
            return None;
        }
        link.on_demand_after = now + TICK;
        match self.connect(index as ReplicaIndex, self.options.addresses[index]) {
            Ok(token) => self.peers[index].token = Some(token),
            Err(error) => {
                debug!(replica = self.options.replica, peer = index, %error, "connect failed")
            }
        }
        self.peers[index].token
    }

    fn connect_peers(&mut self, now: Instant) {
        let own = self.options.replica;
        for index in 0..self.peers.len() {
            let link = &self.peers[index];
            if index == own as usize || link.token.is_some() || now < link.next_attempt {
                continue;
            }
            let address = self.options.addresses[index];
            match self.connect(index as ReplicaIndex, address) {
                Ok(token) => self.peers[index].token = Some(token),
                Err(error) => {
                    debug!(replica = own, peer = index, %error, "connect failed");
                    self.schedule_reconnect(index, now);
                }
            }
        }
    }

    fn connect(&mut self, index: ReplicaIndex, address: SocketAddr) -> io::Result<usize> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let nonce = match &self.gate.key {
            Some(_) => Some(crate::auth::fresh_nonce().map_err(io::Error::other)?),
            None => None,
        };
        let frame_max = self.request_frame_bytes_max;
        let token = self.insert(stream, true, self.replica_queued_bytes_max, frame_max)?;
        let connection = self.connections[token].as_mut().expect("just inserted");
        // Only a welcome or a refusal comes back on our link, from the replica dialled.
        connection.peer = PeerState::Dialed {
            replica: index,
            nonce,
        };
        let hello = Hello {
            peer: Peer::Replica(self.options.replica),
            terms: self.gate.terms.clone(),
            nonce,
        };
        connection
            .push_with(|out| wire::encode_hello(&hello, out))
            .expect("a hello fits any queue");
        if nonce.is_some() {
            connection.hold();
        }
        Ok(token)
    }

    fn schedule_reconnect(&mut self, index: usize, now: Instant) {
        let link = &mut self.peers[index];
        link.token = None;
        link.next_attempt = now + link.backoff;
        link.backoff = (link.backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }

    fn close_overflow(&mut self, token: usize, overflow: Overflow) {
        self.close(token, overflow.to_string(), true);
    }

    /// Closes one connection, logging why; a lost replica link is redialled after a backoff.
    fn close(&mut self, token: usize, reason: String, rejected: bool) {
        let Some(mut connection) = self.connections[token].take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut connection.stream);
        self.free.push(token);
        self.uncount(&mut connection);
        let address = connection
            .stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let peer = connection.peer;
        if rejected {
            self.metrics.counters.connections_rejected += 1;
            let who = match peer.dialed_replica() {
                Some(index) => format!("replica {index}"),
                None => address
                    .rsplit_once(':')
                    .map_or(address.clone(), |(ip, _)| ip.to_string()),
            };
            self.log_rejection(who, "closing connection", reason.clone(), false);
        } else {
            debug!(replica = self.options.replica, %address, ?peer, %reason, "connection closed");
        }
        if let Some(index) = self.peers.iter().position(|link| link.token == Some(token)) {
            self.schedule_reconnect(index, Instant::now());
        }
        // A failed dial is routine while a peer is down (one per backoff): not info.
        if matches!(peer, PeerState::Linked(_)) && !rejected && !connection.connecting {
            info!(replica = self.options.replica, ?peer, %reason, "replica connection closed");
        }
    }

    /// Closes a connection that broke a rule; a peer owed an explanation gets a refusal
    /// first (written before the close, within `REFUSAL_LINGER`).
    fn reject(&mut self, token: usize, rejection: Rejection) {
        if let Rejection::RefusedByPeer(refusal) = &rejection {
            if refusal.code.is_configuration() {
                if let Some(index) = self.peers.iter().position(|l| l.token == Some(token)) {
                    // Not again for a while: only a person can fix a configuration.
                    let link = &mut self.peers[index];
                    link.backoff = link.backoff.max(REFUSED_BACKOFF);
                }
            }
        }
        let configuration = rejection.is_configuration();
        let Some(refusal) = rejection.refusal() else {
            if !configuration {
                return self.close(token, rejection.to_string(), true);
            }
            // Refused by a peer: one clear line, then the ordinary close.
            let who = self.connections[token]
                .as_ref()
                .and_then(|c| c.peer.dialed_replica())
                .map_or_else(|| "?".to_string(), |index| format!("replica {index}"));
            self.metrics.counters.connections_rejected += 1;
            self.metrics.counters.handshakes_refused += 1;
            self.log_rejection(
                who,
                "our connection was refused",
                rejection.to_string(),
                true,
            );
            return self.close(token, rejection.to_string(), false);
        };
        let cluster = rejection
            .refusal_cluster()
            .unwrap_or(self.options.config.cluster);
        let now = Instant::now();
        let Some(mut connection) = self.connections[token].take() else {
            return;
        };
        let pushed = connection.push_with(|out| wire::encode_refusal(&refusal, cluster, out));
        connection.closing = Some(now + REFUSAL_LINGER);
        // A refused connection holds no shared slot while it lingers.
        self.uncount(&mut connection);
        let who = match connection.peer.dialed_replica() {
            Some(index) => format!("replica {index}"),
            None => connection
                .stream
                .peer_addr()
                .map_or_else(|_| "?".to_string(), |a| a.ip().to_string()),
        };
        self.connections[token] = Some(connection);
        self.metrics.counters.connections_rejected += 1;
        if configuration {
            self.metrics.counters.handshakes_refused += 1;
        }
        self.log_rejection(who, "refusing connection", refusal.reason, configuration);
        if pushed.is_err() {
            self.close(token, "no room for the refusal".to_string(), false);
        }
    }

    /// Logs a rejection: a configuration mismatch at ERROR, anything else at WARN; the
    /// same reason from the same peer at most once per minute.
    fn log_rejection(&mut self, who: String, what: &str, reason: String, configuration: bool) {
        if !self
            .throttle
            .allow((who.clone(), reason.clone()), Instant::now())
        {
            self.metrics.counters.log_lines_suppressed += 1;
            return;
        }
        let replica = self.options.replica;
        if configuration {
            error!(replica, peer = %who, "{what}: {reason} (logged once a minute per peer)");
        } else {
            warn!(replica, peer = %who, "{what}: {reason}");
        }
    }

    /// Closes connections whose handshake or refusal took too long.
    fn sweep_if_due(&mut self, now: Instant) {
        if now < self.sweep_at {
            return;
        }
        self.sweep_at = now + SWEEP_INTERVAL;
        let timeout = self.options.handshake_timeout;
        let keyed = self.gate.key.is_some();
        for token in 0..self.connections.len() {
            let Some(connection) = self.connections[token].as_ref() else {
                continue;
            };
            if connection.closing.is_some_and(|deadline| now >= deadline) {
                self.close(token, "refusal not read in time".to_string(), false);
                continue;
            }
            // Our own unkeyed links carry messages before the welcome: they do not expire.
            let waiting = connection.peer.is_pending()
                || (keyed && matches!(connection.peer, PeerState::Dialed { .. }));
            if waiting && now.saturating_duration_since(connection.opened_at) >= timeout {
                let reason = format!("no handshake within {timeout:?}");
                self.close(token, reason, true);
            }
        }
    }

    fn summary_if_due(&mut self, now: Instant) {
        if now < self.summary_at {
            return;
        }
        let seconds = (now - self.summary_at + SUMMARY_INTERVAL).as_secs_f64();
        let commit = self.replica.commit();
        let ops_per_sec = commit.saturating_sub(self.summary_commit) as f64 / seconds;
        info!("{}", self.metrics.summary(&self.replica, ops_per_sec));
        self.summary_commit = commit;
        self.summary_at = now + SUMMARY_INTERVAL;
    }
}

/// Wall-clock nanoseconds, for the primary's timestamps (paper 4.4).
fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
