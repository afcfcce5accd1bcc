//! The replica's event loop: one mio `Poll` on one (optionally pinned) thread owning the
//! listener, every connection, the protocol clock and the protocol core.
//!
//! One iteration, in plain phases ([`EventLoop::run`]; each phase lives in the module
//! named beside it):
//! 1. poll, with a timeout of the time left to the next tick or deadline;
//! 2. accept (`admission`), and note which sockets became readable or writable
//!    (`connections`);
//! 3. read every readable socket until `WouldBlock` (or its fairness budget), decode each
//!    frame, pass it through the handshake gate and feed the core (`inbound`): replica
//!    connections first, so acknowledgements free the pipeline before clients are read;
//!    then the requests the I/O threads decoded (`hand_off`); a checkpoint part of pages
//!    goes to the page hasher's thread instead (`page_hasher`), and the parts it hashed
//!    are fed to the core after the reads;
//! 4. tell the core if its checkpoint was built off the loop (`checkpoint_builder`), and
//!    feed it the ticks that elapsed on the monotonic clock (`clock`);
//! 5. `flush()` the core (the requests of this iteration become one Prepare);
//! 6. the storage phase (`storage`): the core's writes complete here (in memory at once,
//!    or on disk when the storage thread reported them), which releases the messages
//!    that waited for them, before the write phase sends anything;
//! 7. carry out the effects (`effects`): encode each message once into its connection's
//!    queue (a broadcast is encoded once and the segment shared by every replica link);
//!    on disk, capture each write's payload, then hand the storage thread what was
//!    captured if it is idle (group commit);
//! 8. write each connection with pending output, one vectored write each (`connections`);
//! 9. wake the I/O threads that were sent replies, redial lost replica links whose backoff
//!    expired (`dial`), close handshakes past their deadline (`closing`), log the summary.
//!
//! Back-pressure: while the core is not accepting requests the loop does not read client
//! sockets, so their data stays in the kernel and TCP flow control pushes back on the
//! clients. Every queue here is bounded: a connection whose outbound queue passes its
//! limit is closed with a logged reason.

use super::admission::SharedSlots;
use super::checkpoint_builder::{CheckpointBuilder, Finished};
use super::clock::Clock;
use super::connections::{ConnectionSet, Written};
use super::hand_off::IoThreads;
use super::handshake::Gate;
use super::io_thread::{IoHandle, ToCore};
use super::metrics::Metrics;
use super::options::{ServerError, ServerOptions};
use super::page_hasher::PageHasher;
use super::peers::Peers;
use super::prometheus::MetricsExporter;
use super::routes::ClientRoutes;
use super::stats::StatsCache;
use super::status::SharedStatus;
use super::storage::DiskWrites;
use super::throttle::{LogThrottle, LOG_INTERVAL};
use crate::protocol::{Effect, Replica};
use crate::service::StateMachine;
use bytes::BytesMut;
use mio::net::TcpListener;
use mio::{Events, Poll, Token};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKER: Token = Token(usize::MAX - 2);
/// Outbound limit of a client connection.
pub(super) const CLIENT_QUEUED_BYTES_MAX: usize = 8 << 20;
const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// The event loop of one replica. Each job's state is its own type; the loop holds them
/// and runs the phases in order.
pub struct EventLoop<S: StateMachine> {
    pub(super) poll: Poll,
    pub(super) listener: TcpListener,
    pub(super) options: ServerOptions,
    pub(super) replica: Replica<S>,
    /// Every connection of this loop: accepted ones and our links to the other replicas.
    pub(super) connections: ConnectionSet,
    /// The shared connection slots and the per-address counts.
    pub(super) slots: SharedSlots,
    /// Our links to the other replicas, by replica identity.
    pub(super) peers: Peers,
    /// The configuration the peers and the gate were last brought in line with
    /// (`membership::follow_configuration`).
    pub(super) followed: Option<crate::protocol::Configuration>,
    /// Where each client's replies go.
    pub(super) routes: ClientRoutes,
    /// The ticks owed to the core.
    pub(super) clock: Clock,
    /// The I/O threads that own client connections (none: this loop serves clients).
    pub(super) io: IoThreads,
    /// The clock read once per phase (request arrivals, then replies) rather than per
    /// operation: a clock read per op cost ~5% of the primary's time under load.
    pub(super) now: Instant,
    /// What the core asked for, carried out by `execute_effects`; kept for its capacity.
    pub(super) effects: Vec<Effect>,
    /// A run of lease reads from one batch, handed to the core together
    /// (`inbound::on_requests`); kept for its capacity.
    pub(super) lease_reads: Vec<crate::protocol::Message>,
    /// How many of `effects` had their writes' payloads captured (`capture_writes`).
    pub(super) effects_captured: usize,
    /// Encoding space for broadcasts; split and shared, then reclaimed.
    pub(super) broadcast: BytesMut,
    /// The outbound limit of a replica link.
    pub(super) replica_queued_bytes_max: usize,
    /// The handshake rules.
    pub(super) gate: Gate,
    /// The largest frame from a connection that is not an identified replica.
    pub(super) request_frame_bytes_max: u32,
    /// Client connections left unread because the core was full.
    pub(super) paused_clients: usize,
    /// A connection stopped at its read budget with data left: poll without waiting.
    pub(super) more_to_read: bool,
    /// When handshake deadlines are checked next.
    pub(super) sweep_at: Instant,
    pub(super) metrics: Metrics,
    /// Repeated rejections of one peer for one reason log once a minute.
    pub(super) throttle: LogThrottle<(String, String)>,
    /// The expensive half of a stats reply, rebuilt at most every few milliseconds.
    pub(super) stats: StatsCache,
    /// The storage thread's side (`--durability disk`); `None`: writes complete in memory.
    pub(super) disk: Option<DiskWrites>,
    /// The thread that builds checkpoints; `None`: they are built on this thread.
    pub(super) builder: Option<CheckpointBuilder>,
    /// The thread that hashes fetched checkpoint pages; `None`: they are hashed by the
    /// core, on this thread.
    pub(super) hasher: Option<PageHasher>,
    /// A checkpoint built (or an install prepared) on this thread, without a builder,
    /// that the core was not told of yet.
    pub(super) checkpoint_built: Option<Finished>,
    /// The Prometheus endpoint's side (`--metrics-address`), if served.
    exporter: Option<MetricsExporter>,
    /// What `ReplicaServer::status` reads, stored every iteration.
    status: Arc<SharedStatus>,
    summary_at: Instant,
    summary_commit: u64,
    shutdown: Arc<AtomicBool>,
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
        let replicas = options.addresses.len();
        let own = replica.id();
        let mut gate = options.gate();
        gate.own = own;
        let mut event_loop = EventLoop {
            poll,
            listener,
            replica,
            connections: ConnectionSet::with_capacity(64),
            slots: SharedSlots::new(
                options.connections_max,
                options.connections_per_ip_max,
                replicas,
            ),
            peers: Peers::new(own, [], now),
            followed: None,
            routes: ClientRoutes::new(config.clients_max as usize * 2),
            clock: Clock::new(now),
            io: IoThreads::new(io, from_io),
            now,
            effects: Vec::with_capacity(1024),
            lease_reads: Vec::with_capacity(1024),
            effects_captured: 0,
            broadcast: BytesMut::with_capacity(1 << 20),
            replica_queued_bytes_max: (config.message_bytes_max as usize * 4).max(64 << 20),
            gate,
            request_frame_bytes_max: options.request_frame_bytes_max(),
            paused_clients: 0,
            more_to_read: false,
            sweep_at: now + super::closing::SWEEP_INTERVAL,
            metrics: Metrics::default(),
            throttle: LogThrottle::new(LOG_INTERVAL),
            stats: StatsCache::default(),
            disk: None,
            builder: None,
            hasher: None,
            checkpoint_built: None,
            exporter: None,
            status: Arc::default(),
            summary_at: now + SUMMARY_INTERVAL,
            summary_commit: 0,
            shutdown,
            options,
        };
        event_loop.follow_configuration();
        event_loop
    }

    /// The same loop with its writes made durable by a storage thread
    /// (`--durability disk`) instead of completing in memory.
    pub(super) fn with_disk(mut self, disk: Option<DiskWrites>) -> EventLoop<S> {
        self.disk = disk;
        self
    }

    /// The same loop with its checkpoints built by `builder`'s thread.
    pub(super) fn with_checkpoint_builder(mut self, builder: CheckpointBuilder) -> EventLoop<S> {
        self.builder = Some(builder);
        self
    }

    /// The same loop with fetched checkpoint pages hashed by `hasher`'s thread.
    pub(super) fn with_page_hasher(mut self, hasher: PageHasher) -> EventLoop<S> {
        self.hasher = Some(hasher);
        self
    }

    /// The same loop publishing its metrics to `exporter` (`--metrics-address`).
    pub(super) fn with_exporter(mut self, exporter: Option<MetricsExporter>) -> EventLoop<S> {
        self.exporter = exporter;
        self
    }

    /// The same loop storing its status where `status` is read from.
    pub(super) fn with_status(mut self, status: Arc<SharedStatus>) -> EventLoop<S> {
        self.status = status;
        self
    }

    /// Runs until `shutdown` is set (and the waker woken).
    pub fn run(mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        self.log_start();
        let mut failure = None;
        while !self.shutdown.load(Ordering::Acquire) {
            let timeout = self.poll_timeout(Instant::now());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    failure = Some(error.into());
                    break;
                }
            }
            let started = Instant::now();
            self.now = started;
            self.replica.set_clock(realtime_ns());
            self.replica
                .set_monotonic_ns(self.clock.monotonic_ns(started));
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    _ => self.on_event(event),
                }
            }
            self.read_phase();
            self.drain_io();
            self.hashed_phase();
            self.checkpoint_phase();
            self.tick_phase(started);
            self.replica.flush(&mut self.effects);
            self.capture_writes();
            if let Err(error) = self.storage_phase() {
                failure = Some(error);
                break;
            }
            self.capture_writes();
            // Before the effects leave: a client that got a reply sees the commit that
            // produced it in `ReplicaServer::status`.
            self.status.publish(&self.replica);
            self.execute_effects();
            if let Err(error) = self.hand_over_writes() {
                failure = Some(error);
                break;
            }
            self.write_phase();
            if self.replica.is_retired() {
                // Paper 7.3: f'+1 members of the new epoch hold its starting state, so
                // nothing is lost when this replica goes; what it queued was just written.
                info!(
                    replica = self.gate.own,
                    epoch = self.replica.epoch(),
                    "retired: not a member of the current configuration, which started; stopping"
                );
                break;
            }
            self.io.wake_pending();
            self.dial_due(started);
            self.sweep_if_due(started);
            self.summary_if_due(started);
            self.publish_metrics_if_due(started);
            self.metrics.counters.loop_iterations += 1;
            self.metrics
                .loop_iteration_us
                .record(started.elapsed().as_micros() as u64);
        }
        self.shutdown.store(true, Ordering::Release);
        self.io.stop();
        if let Some(disk) = self.disk.as_mut() {
            disk.stop();
        }
        if let Some(builder) = self.builder.as_mut() {
            builder.stop();
        }
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.stop();
        }
        match failure {
            None => {
                info!(replica = self.options.replica, "replica shutting down");
                Ok(())
            }
            Some(error) => {
                tracing::error!(replica = self.options.replica, %error, "replica stopping");
                Err(error)
            }
        }
    }

    fn log_start(&self) {
        if let Some(exporter) = &self.exporter {
            info!(
                replica = self.options.replica,
                address = %exporter.address(),
                "serving metrics at http://{}/metrics",
                exporter.address()
            );
        }
        info!(
            replica = self.options.replica,
            address = %self.options.address(),
            replicas = self.options.addresses.len(),
            durability = self.options.durability.name(),
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
    }

    /// Until the next tick, deadline or redial; zero while input is left unread (a read
    /// budget ran out, or clients were paused and the core accepts again).
    fn poll_timeout(&self, now: Instant) -> Duration {
        if self.more_to_read || (self.paused_clients > 0 && self.core_accepts_requests()) {
            return Duration::ZERO;
        }
        let mut wake_at = self
            .clock
            .next_tick()
            .min(self.summary_at)
            .min(self.sweep_at);
        if let Some(redial) = self.peers.next_attempt() {
            wake_at = wake_at.min(redial);
        }
        wake_at.saturating_duration_since(now)
    }

    /// Whether client requests may be read now. Only a primary's full batch pauses
    /// clients: elsewhere requests are read and dropped by the core (the client retries),
    /// and stats requests must be answered.
    pub(super) fn core_accepts_requests(&self) -> bool {
        !self.replica.is_primary() || self.replica.accepting_requests()
    }

    /// Notes a socket's readiness; an outbound connect may have completed.
    fn on_event(&mut self, event: &mio::event::Event) {
        let Some(connection) = self.connections.on_event(event) else {
            return;
        };
        if connection.connecting {
            self.check_connected(event.token().0);
        }
    }

    /// Reads the monotonic clock for the core's leases again: before the requests of
    /// each client connection and each batch from the I/O threads, so that a lease read
    /// is judged at a reading taken after it arrived, not at the start of a long
    /// iteration (paper 6.3.1; one reading per batch, not per operation).
    pub(super) fn refresh_lease_clock(&mut self) {
        let now = Instant::now();
        self.replica.set_monotonic_ns(self.clock.monotonic_ns(now));
    }

    /// Tells the core that its checkpoint was built, if it was.
    fn checkpoint_phase(&mut self) {
        let finished = match &self.builder {
            Some(builder) => builder.take_finished(),
            None => self.checkpoint_built.take(),
        };
        if let Some(finished) = finished {
            if let Some(ms) = finished.build_ms {
                self.metrics.checkpoint_build_ms.record(ms);
            }
            self.replica.on_checkpoint_built(&mut self.effects);
            self.capture_writes();
        }
    }

    /// Feeds the core the checkpoint parts the page hasher hashed since the last
    /// iteration (`page_hasher`).
    fn hashed_phase(&mut self) {
        while let Some(hashed) = self.hasher.as_mut().and_then(|hasher| hasher.take_hashed()) {
            match hashed {
                Ok(part) => {
                    self.metrics.counters.checkpoint_parts_hashed_off_loop += 1;
                    self.replica
                        .on_hashed_checkpoint_part(part, &mut self.effects)
                }
                Err(message) => self.replica.on_message(message, &mut self.effects),
            }
            self.capture_writes();
        }
    }

    /// The tick phase: feeds the core the ticks that elapsed, once its clock has started.
    fn tick_phase(&mut self, now: Instant) {
        if !self.clock.is_ticking() {
            let links_up = self.links_up();
            if self.clock.start_if_ready(now, links_up) {
                info!(
                    replica = self.options.replica,
                    links_up, "starting the protocol clock"
                );
            }
        }
        for _ in 0..self.clock.take_due(now) {
            self.replica.on_tick(&mut self.effects);
            self.capture_writes();
        }
    }

    /// The write phase: one vectored write per connection with output.
    fn write_phase(&mut self) {
        for token in self.connections.tokens() {
            match self.connections.write(token) {
                Written::Nothing => continue,
                Written::Bytes(written) => self.metrics.counters.bytes_sent += written as u64,
                Written::Failed(error) => {
                    self.close(token, format!("write error: {error}"), false);
                    continue;
                }
            }
            if self
                .connections
                .get(token)
                .is_some_and(|c| c.closing.is_some() && !c.has_output())
            {
                self.close(token, "refusal sent".to_string(), false);
            }
        }
    }

    /// The stats reply: counters read now, histograms from a cache rebuilt at most every
    /// `stats::HISTOGRAMS_REFRESH`, so a burst of requests costs formatting, not
    /// quantile scans.
    pub(super) fn stats_json(&mut self) -> String {
        self.metrics.counters.connections_rejected_io = self.io.rejected();
        let connections = self.connections.live() + self.io.clients();
        let histograms = self.stats.histograms(&self.metrics, self.now);
        let durability = (
            self.options.durability.name(),
            self.disk.as_ref().map_or(0, |disk| disk.batches),
        );
        self.metrics
            .json(&self.replica, connections, durability, histograms)
    }

    fn publish_metrics_if_due(&mut self, now: Instant) {
        let Some(exporter) = self.exporter.as_mut() else {
            return;
        };
        let connections = self.connections.live() + self.io.clients();
        let durability = (
            self.options.durability.name(),
            self.disk.as_ref().map_or(0, |disk| disk.batches),
        );
        exporter.publish_if_due(now, &self.replica, &self.metrics, connections, durability);
    }

    fn summary_if_due(&mut self, now: Instant) {
        if now < self.summary_at {
            return;
        }
        let seconds = (now - self.summary_at + SUMMARY_INTERVAL).as_secs_f64();
        let commit = self.replica.commit();
        let ops_per_sec = commit.saturating_sub(self.summary_commit) as f64 / seconds;
        self.metrics.log_summary(&self.replica, ops_per_sec);
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
