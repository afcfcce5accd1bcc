//! One TCP connection of the event loop: its read buffer, its bounded outbound queue and
//! what its peer said it is.
//!
//! Readiness contract (mio is edge-triggered): `readable` is set by an event and cleared
//! only when a read returns `WouldBlock`; `writable` likewise for writes. A connection the
//! loop stops reading (back-pressure, fairness budget) therefore stays `readable` and is
//! read again on a later iteration without a new event.
//!
//! Outbound data is a queue of frozen `Bytes` segments written with one vectored write:
//! a broadcast is encoded once and the same segment is queued on every replica
//! connection; messages for this connection alone are encoded into `scratch` and
//! frozen into a segment when needed to keep order. `BytesMut` reclaims its allocation
//! once every segment split from it is written and dropped, so the steady state
//! allocates nothing per message.
//!
//! A checkpoint part's pages are queued by reference (`push_segments`): the segments of
//! its frame alternate between what the encoder wrote and the checkpoint's own page
//! buffers, so a source never copies a page before the kernel does.
//!
//! Replies to a peer that sends batches of requests are coalesced: consecutive replies
//! join one open batch frame in `scratch` (`wire::BatchWriter`), sealed before anything
//! else is queued and at the latest by the write phase, so one iteration's replies to a
//! connection leave as one frame with one header and one checksum.

use super::handshake::PeerState;
use super::rate::TokenBucket;
use crate::protocol::Message;
use crate::wire::{self, BatchMessages, BatchWriter, DecodeError, Frame};
use bytes::{Bytes, BytesMut};
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::IpAddr;
use std::time::Instant;

/// Bytes asked of the kernel by one read (more when the rest of a large frame is due).
const READ_CHUNK_BYTES: usize = 64 << 10;
/// A frame from another replica at least this large (a checkpoint part, a Prepare of
/// large entries) is read into a bulk buffer: room for [`BULK_BUFFER_BYTES`] at once.
const BULK_FRAME_BYTES: usize = 256 << 10;
/// The room a bulk reservation makes, within the connection's frame limit: several
/// large frames, each split off as it completes, share one allocation.
const BULK_BUFFER_BYTES: usize = 8 << 20;
/// Segments handed to one vectored write (a checkpoint part of 4 KiB pages is two
/// segments a page: 128 segments carry 256 KiB of it).
const WRITE_SEGMENTS_MAX: usize = 128;
/// The largest batch frame of replies: far below any client's frame limit (the client
/// library refuses limits under 4 KiB plus a request; its default is 16 MiB), and large
/// enough that a loop iteration's replies to one connection fit a few frames.
pub const REPLY_BATCH_BYTES_MAX: usize = 64 << 10;

/// The outbound queue would exceed its limit: the peer is not reading.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
#[error("outbound buffer over its limit ({queued_bytes} bytes queued, limit {limit_bytes}): the peer is not reading")]
pub struct Overflow {
    /// Bytes that would be queued.
    pub queued_bytes: usize,
    /// The limit.
    pub limit_bytes: usize,
}

/// What a connection carries to another loop when it is handed over.
#[derive(Debug)]
pub struct Parts {
    /// Bytes read and not decoded yet.
    pub buffered: BytesMut,
    /// Encoded frames not written yet (a welcome, say), in order.
    pub output: Vec<Bytes>,
}

/// What one read did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Read this many bytes (more may follow).
    Data(usize),
    /// Nothing more for now; `readable` is cleared.
    WouldBlock,
    /// The peer closed its side.
    Closed,
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    pub stream: TcpStream,
    /// What the peer said it is.
    pub peer: PeerState,
    /// Unique for the life of the process (tokens are reused, ids never are): lets the
    /// client table tell a live connection from a newer one in the same slot.
    pub id: u64,
    /// Set by an event, cleared by `WouldBlock`.
    pub readable: bool,
    /// Set by an event, cleared by `WouldBlock`.
    pub writable: bool,
    /// An outbound connect that has not completed yet.
    pub connecting: bool,
    /// The largest frame accepted from this peer, checked against a frame's header before
    /// its body is buffered: the largest request until the peer is known to be a replica.
    pub frame_bytes_max: u32,
    /// When the connection was accepted or dialled (the handshake deadline counts from
    /// here; the oldest unidentified connection is closed first when slots run out).
    pub opened_at: Instant,
    /// The peer's IP address, for the per-address limit (`None` for our own links).
    pub ip: Option<IpAddr>,
    /// Set when the connection is to be closed once its output is written (a refusal on
    /// its way): nothing more is read, and it is closed at this deadline regardless.
    pub closing: Option<Instant>,
    /// Stats requests this connection may still make (a requester that asks in a loop is
    /// closed, not served).
    pub stats_allowance: TokenBucket,
    /// The peer sent a batch of requests, so it reads batches of replies.
    pub batches: bool,
    /// The rest of a batch of requests the core could not take yet (its queue filled
    /// part-way): fed before anything more is read from this connection.
    pub held_requests: Option<BatchMessages>,
    /// An open batch of replies at the end of `scratch`, and the cluster to seal it with.
    replies: Option<(BatchWriter, u128)>,
    read_buffer: BytesMut,
    scratch: BytesMut,
    queue: VecDeque<Bytes>,
    /// While set, new output waits in `held` instead of `queue` (a keyed link before its
    /// handshake is done: the peer reads nothing but the proof first).
    holding: bool,
    held: VecDeque<Bytes>,
    /// Reused by `push_segments`: the segments of one frame, before they are queued.
    segments: Vec<Bytes>,
    /// Bytes of `queue[0]` already written.
    head_written_bytes: usize,
    queued_bytes: usize,
    queued_bytes_max: usize,
}

impl Connection {
    /// A connection whose outbound queue holds at most `queued_bytes_max` bytes and that
    /// accepts frames of at most `frame_bytes_max` bytes.
    pub fn new(
        stream: TcpStream,
        id: u64,
        connecting: bool,
        queued_bytes_max: usize,
        frame_bytes_max: u32,
    ) -> Connection {
        let now = Instant::now();
        Connection {
            stream,
            peer: PeerState::AwaitingHello,
            id,
            readable: false,
            writable: false,
            connecting,
            frame_bytes_max,
            opened_at: now,
            ip: None,
            closing: None,
            stats_allowance: TokenBucket::stats(now),
            batches: false,
            held_requests: None,
            replies: None,
            read_buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
            scratch: BytesMut::with_capacity(4096),
            queue: VecDeque::with_capacity(WRITE_SEGMENTS_MAX),
            holding: false,
            held: VecDeque::new(),
            segments: Vec::new(),
            head_written_bytes: 0,
            queued_bytes: 0,
            queued_bytes_max,
        }
    }

    /// A connection taken over from another loop: `peer` finished its handshake,
    /// `buffered` holds what was read after it and `output` what was not written yet.
    pub fn adopted(
        stream: TcpStream,
        id: u64,
        peer: PeerState,
        parts: Parts,
        limits: (usize, u32),
    ) -> Connection {
        let (queued_bytes_max, frame_bytes_max) = limits;
        let mut connection = Connection::new(stream, id, false, queued_bytes_max, frame_bytes_max);
        connection.peer = peer;
        connection.read_buffer = parts.buffered;
        for segment in parts.output {
            connection.queued_bytes += segment.len();
            connection.queue.push_back(segment);
        }
        connection
    }

    /// The socket, the bytes read but not decoded and the output not yet written, for a
    /// hand-over to another loop.
    pub fn into_parts(mut self) -> (TcpStream, Parts) {
        self.seal_scratch();
        let mut output: Vec<Bytes> = self.queue.drain(..).collect();
        if let Some(head) = output.first_mut() {
            *head = head.slice(self.head_written_bytes..);
        }
        let parts = Parts {
            buffered: self.read_buffer,
            output,
        };
        (self.stream, parts)
    }

    /// Reads once into the read buffer.
    pub fn read_once(&mut self) -> io::Result<ReadOutcome> {
        let spare = self.read_buffer.capacity() - self.read_buffer.len();
        let frame_left = self.partial_frame_left();
        if spare < READ_CHUNK_BYTES / 4 || spare < frame_left {
            // Reclaims the buffer in place when every decoded body sliced from it is gone;
            // otherwise (a backup's log still holds entries sliced from it) this allocates
            // and copies the partial frame. Room for the whole frame at once keeps that to
            // one copy per frame: reserving a chunk at a time copied a multi-megabyte
            // Prepare once per 64 KiB read (memmove was 5-9% of every process at 1 KiB).
            //
            // A large frame from another replica gets a bulk buffer in memory the kernel
            // may back with huge pages: a full checkpoint transfer lands hundreds of MB in
            // fresh memory, and faulting it in 4 KiB at a time was a third of the
            // receiver's loop (`perf/state_transfer.md`). Only for replicas past the handshake
            // (authenticated when the cluster has a key): a client's frame gets no more
            // room than it needs.
            let bulk = frame_left >= BULK_FRAME_BYTES
                && matches!(self.peer, PeerState::Replica(_) | PeerState::Linked(_));
            if bulk {
                let room = BULK_BUFFER_BYTES.min(self.frame_bytes_max as usize);
                self.read_buffer.reserve(room.max(frame_left));
                advise_huge_pages(self.read_buffer.spare_capacity_mut());
            } else {
                self.read_buffer.reserve(READ_CHUNK_BYTES.max(frame_left));
            }
        }
        // The rest of a large frame in one read: fewer system calls, the same copy.
        let read_max = READ_CHUNK_BYTES.max(frame_left);
        let result = read_into_spare_capacity(&self.stream, &mut self.read_buffer, read_max);
        match result {
            Ok(0) => Ok(ReadOutcome::Closed),
            Ok(read) => Ok(ReadOutcome::Data(read)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Ok(ReadOutcome::WouldBlock)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => Ok(ReadOutcome::Data(0)),
            Err(error) => Err(error),
        }
    }

    /// Bytes of the partial frame at the front of the read buffer still to come (0 when
    /// its header is not complete). Called between a decode that found no whole frame and
    /// the next read, so the header was validated by the decoder; its size is bounded by
    /// `frame_bytes_max` here all the same, since it only sizes a reservation.
    fn partial_frame_left(&self) -> usize {
        let Some(header) = self.read_buffer.first_chunk::<{ wire::HEADER_BYTES }>() else {
            return 0;
        };
        let size = wire::Header::read(header).size.min(self.frame_bytes_max) as usize;
        size.saturating_sub(self.read_buffer.len())
    }

    /// Bytes read but not decoded yet.
    pub fn buffered_bytes(&self) -> usize {
        self.read_buffer.len()
    }

    /// The next complete frame in the read buffer, if any, refusing frames larger than
    /// `frame_bytes_max` from their header alone. Bodies are slices of the buffer.
    pub fn decode(&mut self, cluster: u128) -> Result<Option<Frame>, DecodeError> {
        wire::decode(&mut self.read_buffer, cluster, self.frame_bytes_max)
    }

    /// Encodes a frame for this connection alone with `encode`, which appends to the buffer
    /// it is given.
    pub fn push_with(&mut self, encode: impl FnOnce(&mut BytesMut)) -> Result<(), Overflow> {
        self.seal_replies();
        let before = self.scratch.len();
        encode(&mut self.scratch);
        self.queued_bytes += self.scratch.len() - before;
        if self.holding {
            self.held.push_back(self.scratch.split().freeze());
        }
        self.check_limit()
    }

    /// Encodes a frame for this connection alone as segments with `encode`, which writes
    /// into the buffer it is given and pushes, in order, the segments split off it and
    /// those it holds by reference (`wire::encode_segments`: a checkpoint part's pages).
    pub fn push_segments(
        &mut self,
        encode: impl FnOnce(&mut BytesMut, &mut Vec<Bytes>),
    ) -> Result<(), Overflow> {
        // What `scratch` holds is counted already: queued first, so that it is not
        // counted again as part of a segment.
        self.seal_scratch();
        debug_assert!(self.scratch.is_empty());
        let mut segments = std::mem::take(&mut self.segments);
        encode(&mut self.scratch, &mut segments);
        debug_assert!(
            self.scratch.is_empty(),
            "every byte written is in a segment"
        );
        for segment in segments.drain(..) {
            self.queued_bytes += segment.len();
            if self.holding {
                self.held.push_back(segment);
            } else {
                self.queue.push_back(segment);
            }
        }
        self.segments = segments; // Keep the capacity.
        self.check_limit()
    }

    /// Queues a reply: into the open batch of replies when the peer reads batches and the
    /// reply fits it, else into a new batch (or, for a peer that does not read batches or
    /// a reply too large for one, as a frame of its own).
    pub fn push_reply(&mut self, message: &Message, cluster: u128) -> Result<(), Overflow> {
        let fits_a_batch =
            wire::batch_frame_bytes([message]) <= REPLY_BATCH_BYTES_MAX && !self.holding;
        if !self.batches || !fits_a_batch {
            return self.push_with(|out| wire::encode(message, cluster, out));
        }
        let before = self.scratch.len();
        match &mut self.replies {
            Some((writer, _)) if writer.accepts(message, &self.scratch, REPLY_BATCH_BYTES_MAX) => {
                writer.push(message, &mut self.scratch);
            }
            _ => {
                self.seal_replies();
                let before = self.scratch.len();
                let writer = BatchWriter::begin(message, &mut self.scratch).expect("a reply");
                self.queued_bytes += self.scratch.len() - before;
                self.replies = Some((writer, cluster));
                return self.check_limit();
            }
        }
        self.queued_bytes += self.scratch.len() - before;
        self.check_limit()
    }

    /// Finishes the open batch of replies, if any (its bytes are already counted).
    fn seal_replies(&mut self) {
        if let Some((writer, cluster)) = self.replies.take() {
            writer.seal(cluster, &mut self.scratch);
        }
    }

    /// Queues a segment shared with other connections (an encoded broadcast).
    pub fn push_shared(&mut self, segment: Bytes) -> Result<(), Overflow> {
        self.queued_bytes += segment.len();
        if self.holding {
            self.held.push_back(segment);
        } else {
            self.seal_scratch();
            self.queue.push_back(segment);
        }
        self.check_limit()
    }

    /// From now on, output waits (within the same limit) until [`Connection::release`].
    pub fn hold(&mut self) {
        self.seal_scratch();
        self.holding = true;
    }

    /// Writes `first` (encoded by it, e.g. the proof of the key) and then everything held.
    pub fn release(&mut self, first: impl FnOnce(&mut BytesMut)) -> Result<(), Overflow> {
        self.holding = false;
        self.push_with(first)?;
        self.seal_scratch();
        self.queue.extend(self.held.drain(..));
        Ok(())
    }

    /// Whether anything waits to be written.
    pub fn has_output(&self) -> bool {
        self.queued_bytes > 0
    }

    /// Lets the outbound queue hold at least `at_least` bytes from now on.
    pub fn raise_queued_bytes_max(&mut self, at_least: usize) {
        self.queued_bytes_max = self.queued_bytes_max.max(at_least);
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    fn check_limit(&self) -> Result<(), Overflow> {
        if self.queued_bytes > self.queued_bytes_max {
            return Err(Overflow {
                queued_bytes: self.queued_bytes,
                limit_bytes: self.queued_bytes_max,
            });
        }
        Ok(())
    }

    /// Moves what `scratch` holds into the queue, keeping `scratch`'s spare capacity.
    fn seal_scratch(&mut self) {
        self.seal_replies();
        if !self.scratch.is_empty() {
            self.queue.push_back(self.scratch.split().freeze());
        }
    }

    /// Writes as much of the queue as the kernel takes, in vectored writes. Returns the
    /// bytes written; clears `writable` on `WouldBlock`.
    pub fn write(&mut self) -> io::Result<usize> {
        self.seal_scratch();
        let mut written_total = 0;
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); WRITE_SEGMENTS_MAX];
            let mut count = 0;
            for (index, segment) in self.queue.iter().take(WRITE_SEGMENTS_MAX).enumerate() {
                let skip = if index == 0 {
                    self.head_written_bytes
                } else {
                    0
                };
                slices[index] = IoSlice::new(&segment[skip..]);
                count += 1;
            }
            match self.stream.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
                Ok(written) => {
                    written_total += written;
                    self.advance(written);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(written_total)
    }

    fn advance(&mut self, mut written: usize) {
        self.queued_bytes -= written;
        while written > 0 {
            let head_left = self.queue[0].len() - self.head_written_bytes;
            if written < head_left {
                self.head_written_bytes += written;
                return;
            }
            written -= head_left;
            self.head_written_bytes = 0;
            self.queue.pop_front();
        }
    }
}

/// One `read(2)` straight into the buffer's spare capacity (at most `read_max` bytes),
/// without zero-filling it first: filling 64 KiB before every read showed up as 5% of a
/// replica's time (memset) in `perf` under load.
fn read_into_spare_capacity(
    stream: &TcpStream,
    buffer: &mut BytesMut,
    read_max: usize,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let start = buffer.len();
    let spare = buffer.spare_capacity_mut();
    let len = spare.len().min(read_max);
    // SAFETY: `spare` is memory this buffer owns beyond its length, valid for `len` bytes,
    // and no reference to it exists but this call's pointer. read(2) writes at most `len`
    // bytes there and reads none of it. `set_len` then covers exactly the bytes written.
    let read = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), len) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    let read = read as usize;
    debug_assert!(read <= len);
    // SAFETY: the kernel initialised `read` bytes after `start` (above).
    unsafe { buffer.set_len(start + read) };
    Ok(read)
}

/// Asks the kernel to back the whole 2 MiB pages inside `spare` with transparent huge
/// pages (`MADV_HUGEPAGE`; where they are "madvise" only, as on the machines measured in
/// `perf/state_transfer.md`), so that filling it faults once per 2 MiB instead of once
/// per 4 KiB. Advice only: the memory is the allocator's as before, and a kernel that
/// refuses (no THP, an older kernel) changes nothing but the speed.
fn advise_huge_pages(spare: &mut [std::mem::MaybeUninit<u8>]) {
    const HUGE_PAGE_BYTES: usize = 2 << 20;
    let start = spare.as_mut_ptr() as usize;
    let end = start + spare.len();
    let first = start.next_multiple_of(HUGE_PAGE_BYTES);
    let last = end - end % HUGE_PAGE_BYTES;
    if first >= last {
        return;
    }
    // SAFETY: [first, last) lies inside `spare`, memory this buffer owns; MADV_HUGEPAGE
    // changes how the kernel backs the pages, never their contents or the mapping's
    // validity, and its failure is harmless (ignored).
    unsafe {
        libc::madvise(
            first as *mut libc::c_void,
            last - first,
            libc::MADV_HUGEPAGE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A connected pair: (our mio stream, the peer's blocking std stream).
    fn pair() -> (TcpStream, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (TcpStream::from_std(server), client)
    }

    #[test]
    fn queue_keeps_order_across_scratch_and_shared_segments() {
        let (stream, mut peer) = pair();
        let mut connection = Connection::new(stream, 1, false, 1 << 20, 1 << 20);
        connection
            .push_with(|out| out.extend_from_slice(b"ab"))
            .unwrap();
        connection.push_shared(Bytes::from_static(b"cd")).unwrap();
        connection
            .push_with(|out| out.extend_from_slice(b"ef"))
            .unwrap();
        assert_eq!(connection.queued_bytes(), 6);
        assert_eq!(connection.write().unwrap(), 6);
        assert!(!connection.has_output());
        let mut received = [0u8; 6];
        peer.read_exact(&mut received).unwrap();
        assert_eq!(&received, b"abcdef");
    }

    #[test]
    fn held_output_follows_what_releases_it() {
        let (stream, mut peer) = pair();
        let mut connection = Connection::new(stream, 1, false, 1 << 20, 1 << 20);
        connection
            .push_with(|out| out.extend_from_slice(b"he"))
            .unwrap();
        connection.hold();
        connection.push_shared(Bytes::from_static(b"XY")).unwrap();
        connection
            .push_with(|out| out.extend_from_slice(b"Z"))
            .unwrap();
        assert_eq!(connection.write().unwrap(), 2, "only the hello goes out");
        connection
            .release(|out| out.extend_from_slice(b"pp"))
            .unwrap();
        assert_eq!(connection.write().unwrap(), 5);
        let mut received = [0u8; 7];
        peer.read_exact(&mut received).unwrap();
        assert_eq!(&received, b"heppXYZ");
    }

    #[test]
    fn segments_keep_their_order_and_are_counted_once() {
        let (stream, mut peer) = pair();
        let mut connection = Connection::new(stream, 1, false, 1 << 20, 1 << 20);
        connection
            .push_with(|out| out.extend_from_slice(b"ab"))
            .unwrap();
        connection
            .push_segments(|out, segments| {
                out.extend_from_slice(b"cd");
                segments.push(out.split().freeze());
                segments.push(Bytes::from_static(b"EF"));
                out.extend_from_slice(b"gh");
                segments.push(out.split().freeze());
            })
            .unwrap();
        connection
            .push_with(|out| out.extend_from_slice(b"ij"))
            .unwrap();
        assert_eq!(connection.queued_bytes(), 10);
        assert_eq!(connection.write().unwrap(), 10);
        let mut received = [0u8; 10];
        peer.read_exact(&mut received).unwrap();
        assert_eq!(&received, b"abcdEFghij");
    }

    #[test]
    fn overflow_is_reported() {
        let (stream, _peer) = pair();
        let mut connection = Connection::new(stream, 1, false, 4, 1 << 20);
        connection.push_shared(Bytes::from_static(b"abcd")).unwrap();
        let overflow = connection
            .push_with(|out| out.extend_from_slice(b"e"))
            .unwrap_err();
        assert_eq!(
            overflow,
            Overflow {
                queued_bytes: 5,
                limit_bytes: 4
            }
        );
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let (stream, mut peer) = pair();
        let mut connection = Connection::new(stream, 1, false, 64 << 20, 1 << 20);
        let segment = Bytes::from(vec![7u8; 1 << 20]);
        // More than the socket buffers hold: the write stops at WouldBlock.
        for _ in 0..16 {
            connection.push_shared(segment.clone()).unwrap();
        }
        let mut written = connection.write().unwrap();
        assert!(!connection.writable || written == 16 << 20);
        let reader = std::thread::spawn(move || {
            let mut total = 0;
            let mut buffer = vec![0u8; 1 << 16];
            while total < 16 << 20 {
                let read = peer.read(&mut buffer).unwrap();
                assert!(buffer[..read].iter().all(|&b| b == 7));
                total += read;
            }
            total
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while connection.has_output() {
            assert!(std::time::Instant::now() < deadline, "write did not finish");
            written += connection.write().unwrap();
            std::thread::yield_now();
        }
        assert_eq!(written, 16 << 20);
        assert_eq!(reader.join().unwrap(), 16 << 20);
    }

    /// Frames of several MiB from a replica go through the bulk buffers: one that
    /// straddles a buffer's end while the frames before it are still held (so the
    /// buffer cannot be reclaimed and its partial frame moves) arrives whole, and so
    /// does every other, byte for byte.
    #[test]
    fn large_frames_from_a_replica_arrive_whole_across_bulk_buffers() {
        let (stream, mut peer) = pair();
        let mut connection = Connection::new(stream, 1, false, 1 << 20, 16 << 20);
        connection.peer = PeerState::Replica(1);
        connection.readable = true;
        let bodies: Vec<Vec<u8>> = (0..6u32)
            .map(|i| {
                (0..(3 << 20) + i * 4099)
                    .map(|j| (i * 7 + j) as u8)
                    .collect()
            })
            .collect();
        let mut stream_bytes = BytesMut::new();
        for body in &bodies {
            wire::encode_stats_reply(body, 7, &mut stream_bytes);
        }
        let writer = std::thread::spawn(move || peer.write_all(&stream_bytes).map(|()| peer));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut held = Vec::new();
        while held.len() < bodies.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "frames did not arrive"
            );
            match connection.decode(7).unwrap() {
                Some(Frame::StatsReply(body)) => held.push(body),
                Some(other) => panic!("unexpected frame {}", other.name()),
                None => {
                    if connection.read_once().unwrap() == ReadOutcome::WouldBlock {
                        connection.readable = true;
                        std::thread::yield_now();
                    }
                }
            }
        }
        let _peer = writer.join().unwrap().unwrap();
        for (body, expected) in held.iter().zip(&bodies) {
            assert!(body[..] == expected[..], "a frame's body changed");
        }
    }

    #[test]
    fn read_reports_data_then_would_block_then_close() {
        let (stream, mut peer) = pair();
        let mut connection = Connection::new(stream, 1, false, 1024, 1 << 20);
        connection.readable = true;
        peer.write_all(b"hello").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut read = 0;
        while read < 5 {
            assert!(std::time::Instant::now() < deadline);
            if let ReadOutcome::Data(n) = connection.read_once().unwrap() {
                read += n;
            }
        }
        assert_eq!(connection.buffered_bytes(), 5);
        assert_eq!(connection.read_once().unwrap(), ReadOutcome::WouldBlock);
        assert!(!connection.readable);
        drop(peer);
        while connection.read_once().unwrap() != ReadOutcome::Closed {
            assert!(std::time::Instant::now() < deadline);
        }
    }
}
