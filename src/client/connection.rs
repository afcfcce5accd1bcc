//! One TCP connection from a client to one replica, on a non-blocking mio socket.
//!
//! Lazily connected: nothing happens until the first message for the replica. After a
//! failure (refused, reset, a corrupt frame, a connect that takes longer than
//! `connect_timeout`) the connection is closed and may reopen after a back-off delay;
//! messages sent to a closed connection inside its back-off are dropped, which is safe
//! because the session retries (paper 4.1: the client resends the same request number).
//!
//! Every socket opens with a `Hello` stating the cluster id and member list the client
//! was given, so a replica configured otherwise answers with a `Refusal` saying what
//! differs (kept in `refusal` for the driver to report at once). With a cluster key the
//! replica challenges the client (`Welcome`), and requests are held back until the
//! replica's proof is checked and ours is sent: a replica accepts nothing before it.
//!
//! Requests leave in batch frames (`wire::batch`): every request queued between two
//! flushes joins one open batch at the end of the write buffer, sealed just before the
//! flush, each at most about 5 KiB (`batch_bytes_max`: what every replica takes). A
//! replica answers a connection that sends batches with batches of replies, which are
//! handed on one message at a time.
//!
//! Readiness contract (mio is edge-triggered): on every readable event the socket is read
//! until `WouldBlock`; writes go to a bounded buffer that the driver flushes once per
//! event-loop pass, and a flush stopped by `WouldBlock` resumes on the next writable event.

use super::ClientOptions;
use crate::auth::{self, ClusterKey};
use crate::protocol::ENTRY_HEADER_BYTES;
use crate::protocol::{ClientId, Message, ReplicaId};
use crate::wire::{
    self, Batch, BatchKind, BatchWriter, Frame, Hello, Nonce, Peer, Refusal, Terms, HEADER_BYTES,
    HELLO_BODY_BYTES_MAX,
};
use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The first delay before reopening a failed connection; it doubles up to the maximum.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(20);
const RECONNECT_DELAY_MAX: Duration = Duration::from_millis(500);

enum State {
    /// No socket; may open at `reconnect_at`.
    Closed,
    /// A non-blocking connect is under way since `started`.
    Connecting { stream: TcpStream, started: Instant },
    /// Established. `welcome` is `Some` until the replica's `Welcome` arrives: then
    /// (with a key) our proof is sent and the requests held meanwhile follow it.
    Connected {
        stream: TcpStream,
        welcome: Option<Awaiting>,
    },
}

/// What the client's hello asked: the replica's answer is checked against it.
#[derive(Clone, Copy)]
struct Awaiting {
    nonce: Option<Nonce>,
}

/// What a connection decoded, for the driver.
pub(crate) enum Received {
    /// A message sent alone.
    Message(Message),
    /// A batch of replies, checked whole by the decoder: the driver reads its replies out
    /// one by one (`Batch::replies`) without making a message of each.
    Replies(Batch),
}

/// A connection to one replica.
pub(crate) struct Connection {
    address: SocketAddr,
    token: Token,
    /// The client id announced in the `Hello` frame that opens every connection.
    hello: ClientId,
    /// The identity of the replica at `address`, when the client knows it (from a
    /// configuration a reply carried). Addresses given by the caller come without
    /// identities: a replica's welcome says its own, and a list in the wrong order is
    /// caught by the replicas (they compare it with theirs within an epoch) or corrected
    /// when a reply says where the cluster is (paper 7).
    replica: Option<ReplicaId>,
    /// What the hello states: the cluster id and members the client was given.
    terms: Terms,
    key: Option<ClusterKey>,
    /// With a key, requests wait here until the handshake is done.
    held: BytesMut,
    /// The nonce of the hello of the socket being opened.
    nonce: Option<Nonce>,
    cluster: u128,
    message_bytes_max: u32,
    state: State,
    /// Bytes received and not yet decoded; bounded by one frame plus one read chunk,
    /// because the decoder rejects frames over `message_bytes_max`.
    read: BytesMut,
    /// Encoded frames not yet written. Invariant: starts with the `Hello` frame whenever a
    /// socket is opened, and holds at most `write_bytes_max` bytes (or a single frame).
    write: BytesMut,
    write_bytes_max: usize,
    /// The open batch of requests at the end of `write`, sealed before `write` is written
    /// or anything else is appended to it.
    batch: Option<BatchWriter>,
    /// The largest batch frame (`batch_bytes_max`): never more than any replica takes from
    /// a client.
    batch_bytes_max: usize,
    reconnect_at: Instant,
    reconnect_delay: Duration,
    /// Whether this connection was ever established.
    pub(crate) established_ever: bool,
    /// Messages dropped because the connection was closed or its buffer full.
    pub(crate) dropped_messages: u64,
    /// Why the replica's last frame could not be decoded, if it ever sent such a frame.
    pub(crate) protocol_error: Option<String>,
    /// The replica's latest refusal of our hello, if it refused one.
    pub(crate) refusal: Option<Refusal>,
    /// Whether a replica ever welcomed this connection.
    pub(crate) welcomed_ever: bool,
}

/// The largest batch frame a client sends. A replica takes frames up to the larger of its
/// largest request and its largest hello (`ServerOptions::request_frame_bytes_max`), and
/// its largest request is its own `request_body_bytes_max`, which the client only assumes
/// it knows: a batch as large as the client's idea of one request would be refused whole
/// (and its connection closed, every time) by a replica configured with smaller requests,
/// where single small requests went through. So batches stay within the hello bound, which
/// every replica takes, and within the client's request bound when that is smaller. At
/// 64 B that is about 50 requests per frame, enough to make framing a small cost.
fn batch_bytes_max(options: &ClientOptions) -> usize {
    let request = HEADER_BYTES + ENTRY_HEADER_BYTES + options.request_body_bytes_max as usize;
    let hello = HEADER_BYTES + HELLO_BODY_BYTES_MAX;
    request.min(hello).min(options.message_bytes_max as usize)
}

impl Connection {
    pub(crate) fn new(
        address: SocketAddr,
        replica: Option<ReplicaId>,
        token: Token,
        hello: ClientId,
        terms: Terms,
        options: &ClientOptions,
    ) -> Connection {
        Connection {
            address,
            token,
            hello,
            replica,
            terms,
            key: options.cluster_key.clone(),
            held: BytesMut::new(),
            nonce: None,
            cluster: options.cluster_id,
            message_bytes_max: options.message_bytes_max,
            state: State::Closed,
            read: BytesMut::new(),
            write: BytesMut::new(),
            write_bytes_max: (options.message_bytes_max as usize).saturating_mul(2),
            batch: None,
            batch_bytes_max: batch_bytes_max(options),
            reconnect_at: Instant::now(),
            reconnect_delay: RECONNECT_DELAY_MIN,
            established_ever: false,
            dropped_messages: 0,
            protocol_error: None,
            refusal: None,
            welcomed_ever: false,
        }
    }

    /// Queues `message`, opening the connection if it is closed and its back-off is over.
    pub(crate) fn send(&mut self, registry: &Registry, message: &Message) {
        if matches!(self.state, State::Closed) {
            // The clock is read only here: sending on an open connection needs no time.
            let now = Instant::now();
            if now < self.reconnect_at {
                self.dropped_messages += 1;
                return;
            }
            if let Err(error) = self.open(registry) {
                tracing::debug!(address = %self.address, %error, "connect failed");
                self.close(registry, now);
                self.dropped_messages += 1;
                return;
            }
        }
        // With a key, nothing but the handshake may precede the proof.
        let holding = self.key.is_some() && !self.handshake_done();
        let out = if holding { &self.held } else { &self.write };
        if !out.is_empty() && out.len() >= self.write_bytes_max {
            // Bounded buffer: the replica is not reading. The session's retry resends.
            self.dropped_messages += 1;
            return;
        }
        if holding {
            wire::encode(message, self.cluster, &mut self.held);
            return;
        }
        let fits = wire::batch_frame_bytes([message]) <= self.batch_bytes_max;
        if BatchKind::of(message) != Some(BatchKind::Requests) || !fits {
            self.seal_batch();
            wire::encode(message, self.cluster, &mut self.write);
            return;
        }
        match &mut self.batch {
            Some(batch) if batch.accepts(message, &self.write, self.batch_bytes_max) => {
                batch.push(message, &mut self.write);
            }
            _ => {
                self.seal_batch();
                // Room for a whole batch up front: growing the buffer record by record
                // copied the batch so far at each reallocation.
                self.write.reserve(self.batch_bytes_max);
                self.batch = BatchWriter::begin(message, &mut self.write);
            }
        }
    }

    /// Finishes the open batch of requests, if any.
    fn seal_batch(&mut self) {
        if let Some(batch) = self.batch.take() {
            batch.seal(self.cluster, &mut self.write);
        }
    }

    /// Opens the socket now (sending only the hello) if it is closed and may reopen: the
    /// driver asks every replica once one refused, to tell a misconfigured replica from a
    /// misconfigured client.
    pub(crate) fn ensure_open(&mut self, registry: &Registry, now: Instant) {
        if matches!(self.state, State::Closed) && now >= self.reconnect_at {
            if let Err(error) = self.open(registry) {
                tracing::debug!(address = %self.address, %error, "connect failed");
                self.close(registry, now);
            }
        }
    }

    fn handshake_done(&self) -> bool {
        matches!(self.state, State::Connected { welcome: None, .. })
    }

    fn open(&mut self, registry: &Registry) -> io::Result<()> {
        let nonce = match self.key {
            Some(_) => Some(auth::fresh_nonce().map_err(io::Error::other)?),
            None => None,
        };
        let mut stream = TcpStream::connect(self.address)?;
        registry.register(
            &mut stream,
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.read.clear();
        self.write.clear();
        self.batch = None;
        self.held.clear();
        self.nonce = nonce;
        let hello = Hello {
            peer: Peer::Client(self.hello),
            terms: self.terms.clone(),
            nonce,
        };
        wire::encode_hello(&hello, &mut self.write);
        self.state = State::Connecting {
            stream,
            started: Instant::now(),
        };
        Ok(())
    }

    /// Closes the socket (if any), discards both buffers and schedules the next attempt.
    pub(crate) fn close(&mut self, registry: &Registry, now: Instant) {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Closed => {}
            State::Connecting { mut stream, .. } | State::Connected { mut stream, .. } => {
                let _ = registry.deregister(&mut stream);
            }
        }
        self.read.clear();
        self.write.clear();
        self.batch = None;
        self.held.clear();
        self.reconnect_at = now + self.reconnect_delay;
        self.reconnect_delay = (self.reconnect_delay * 2).min(RECONNECT_DELAY_MAX);
    }

    /// Abandons a connect that has taken longer than `connect_timeout`.
    pub(crate) fn check_connect_timeout(
        &mut self,
        registry: &Registry,
        now: Instant,
        connect_timeout: Duration,
    ) {
        if let State::Connecting { started, .. } = &self.state {
            if now.duration_since(*started) >= connect_timeout {
                tracing::debug!(address = %self.address, "connect timed out");
                self.close(registry, now);
            }
        }
    }

    /// Handles readiness: completes a connect, reads and decodes every complete frame into
    /// `messages`, resumes a stopped flush. Closes the connection on any failure.
    pub(crate) fn on_ready(
        &mut self,
        registry: &Registry,
        now: Instant,
        inbox: &mut Vec<Received>,
        scratch: &mut [u8],
    ) {
        if let Err(reason) = self.try_ready(inbox, scratch) {
            tracing::debug!(address = %self.address, %reason, "connection closed");
            self.close(registry, now);
        }
    }

    fn try_ready(&mut self, inbox: &mut Vec<Received>, scratch: &mut [u8]) -> Result<(), String> {
        if let State::Connecting { stream, .. } = &self.state {
            if let Some(error) = stream.take_error().map_err(|e| e.to_string())? {
                return Err(error.to_string());
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(error) => return Err(error.to_string()),
            }
            let State::Connecting { stream, .. } =
                std::mem::replace(&mut self.state, State::Closed)
            else {
                unreachable!()
            };
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let welcome = Some(Awaiting { nonce: self.nonce });
            self.state = State::Connected { stream, welcome };
            self.established_ever = true;
            self.reconnect_delay = RECONNECT_DELAY_MIN;
        }
        self.read_all(inbox, scratch)?;
        self.flush_inner()
    }

    /// Reads until `WouldBlock`, decoding complete frames as they arrive.
    fn read_all(&mut self, inbox: &mut Vec<Received>, scratch: &mut [u8]) -> Result<(), String> {
        loop {
            let State::Connected { stream, .. } = &mut self.state else {
                return Ok(());
            };
            match stream.read(scratch) {
                Ok(0) => return Err("closed by the replica".to_string()),
                Ok(n) => {
                    self.read.extend_from_slice(&scratch[..n]);
                    self.decode_all(inbox)?;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.to_string()),
            }
        }
    }

    /// Decodes every complete frame read: messages and batches of replies go to `inbox`;
    /// a welcome completes the handshake; a refusal is kept and closes the connection.
    fn decode_all(&mut self, inbox: &mut Vec<Received>) -> Result<(), String> {
        loop {
            match wire::decode(&mut self.read, self.cluster, self.message_bytes_max) {
                Ok(None) => return Ok(()),
                Ok(Some(Frame::Message(message))) => inbox.push(Received::Message(message)),
                Ok(Some(Frame::Batch(batch))) if batch.kind() == BatchKind::Replies => {
                    inbox.push(Received::Replies(batch));
                }
                Ok(Some(Frame::Welcome(welcome))) => self.on_welcome(&welcome)?,
                Ok(Some(Frame::Refusal(refusal))) => {
                    let reason = format!(
                        "{} refused the connection: {}",
                        self.address, refusal.reason
                    );
                    self.refusal = Some(refusal);
                    return Err(reason);
                }
                Ok(Some(_)) => {}
                Err(error) => {
                    let reason = format!("{}: undecodable frame: {error}", self.address);
                    self.protocol_error = Some(reason.clone());
                    return Err(reason);
                }
            }
        }
    }

    fn on_welcome(&mut self, welcome: &wire::Welcome) -> Result<(), String> {
        let State::Connected {
            welcome: awaiting, ..
        } = &mut self.state
        else {
            return Ok(());
        };
        let Some(Awaiting { nonce }) = awaiting.take() else {
            return Err(format!("{}: a second welcome", self.address));
        };
        let me = Peer::Client(self.hello);
        let proof = auth::answer_welcome(
            self.key.as_ref(),
            self.cluster,
            me,
            self.replica.unwrap_or(welcome.replica),
            nonce,
            welcome,
        )
        .map_err(|refusal| {
            let reason = format!("{}: {}", self.address, refusal.reason);
            self.refusal = Some(refusal);
            reason
        })?;
        self.seal_batch();
        if let Some(proof) = proof {
            wire::encode_proof(&proof, self.cluster, &mut self.write);
        }
        self.write.extend_from_slice(&self.held);
        self.held.clear();
        self.welcomed_ever = true;
        self.refusal = None;
        Ok(())
    }

    /// Writes buffered frames until done or `WouldBlock`; closes the connection on error.
    pub(crate) fn flush(&mut self, registry: &Registry, now: Instant) {
        if let Err(reason) = self.flush_inner() {
            tracing::debug!(address = %self.address, %reason, "connection closed");
            self.close(registry, now);
        }
    }

    fn flush_inner(&mut self) -> Result<(), String> {
        if !matches!(self.state, State::Connected { .. }) {
            return Ok(());
        }
        self.seal_batch();
        let State::Connected { stream, .. } = &mut self.state else {
            unreachable!("checked above");
        };
        while !self.write.is_empty() {
            match stream.write(&self.write) {
                Ok(0) => return Err("write returned 0".to_string()),
                Ok(n) => self.write.advance(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok(())
    }

    /// Whether bytes wait to be written on an established socket.
    pub(crate) fn wants_flush(&self) -> bool {
        matches!(self.state, State::Connected { .. }) && !self.write.is_empty()
    }
}
