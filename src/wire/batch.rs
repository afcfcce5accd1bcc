//! Batch frames: several client requests (client → primary) or replies (primary → client)
//! in one frame, with one header and one body checksum.
//!
//! Why: with thousands of sessions over a few connections, a connection carries hundreds
//! of requests per event-loop pass in each direction. As separate frames each one costs a
//! 96-byte header, two crc32c passes, a header validation, a split of the read buffer and
//! a route through the gate, on both ends; profiles put that framing at a fifth or more of
//! the primary's and the client's CPU (`perf/profile.md`). A batch pays those once and
//! spends a fixed 25 (request) or 33 (reply) bytes per message.
//!
//! Body: a `u32` count (at least 1), then `count` records, each its fixed fields then its
//! payload:
//! - request record: client `u64`, session `u64`, request `u32`, operation `u8`, body
//!   length `u32`, body ([`REQUEST_RECORD_BYTES`] fixed);
//! - reply record: client `u64`, session `u64`, request `u32`, op `u64`, status `u8`,
//!   result length `u32`, result ([`REPLY_RECORD_BYTES`] fixed).
//!
//! The header carries the envelope every message of the batch shares (epoch, view,
//! replica) and nothing else. A batch means exactly what its messages sent one frame each
//! would mean, in order: the receiver hands them on one by one, so exactly-once semantics
//! (client table, request numbers) are untouched.
//!
//! The gate checks a batch whole before anything of it is believed: both checksums, then
//! every record's bounds, codes and ranges ([`Batch::check`], called by `decode`), so a
//! malformed record anywhere rejects the frame and its earlier records never reach the
//! core. Past the gate, [`BatchMessages`] re-reads the records without re-checking.
//!
//! Who sends them: the client library sends its requests in batches; a replica answers a
//! connection in batches only once that connection sent one (so a tool that speaks single
//! frames hears single frames).

use super::encode::{begin, finish};
use super::error::DecodeError;
use super::header::{Command, Header, HEADER_BYTES};
use super::range;
use crate::protocol::{
    Body, Message, Op, Operation, ReplicaIndex, Reply, ReplyStatus, Request, View, READ_SEEN_BYTES,
};
use bytes::{BufMut, Bytes, BytesMut};

use DecodeError::Malformed;

/// Bytes of the count that opens a batch body.
pub const BATCH_COUNT_BYTES: usize = 4;
/// Fixed bytes of a request record (before its body).
pub const REQUEST_RECORD_BYTES: usize = 8 + 8 + 4 + 1 + 4;
/// Fixed bytes of a reply record (before its result).
pub const REPLY_RECORD_BYTES: usize = 8 + 8 + 4 + 8 + 1 + 4;

/// What a batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchKind {
    /// Client requests ([`Command::Requests`]).
    Requests,
    /// Replies to clients ([`Command::Replies`]).
    Replies,
}

impl BatchKind {
    /// The kind of batch that can carry `message`, if any.
    pub fn of(message: &Message) -> Option<BatchKind> {
        match message.body {
            Body::Request(_) => Some(BatchKind::Requests),
            Body::Reply(_) => Some(BatchKind::Replies),
            _ => None,
        }
    }

    fn command(self) -> Command {
        match self {
            BatchKind::Requests => Command::Requests,
            BatchKind::Replies => Command::Replies,
        }
    }

    fn record_bytes(self) -> usize {
        match self {
            BatchKind::Requests => REQUEST_RECORD_BYTES,
            BatchKind::Replies => REPLY_RECORD_BYTES,
        }
    }

    /// A body of this kind with every field zero (or its first code) and no payload, for
    /// [`read_record`] to fill.
    fn blank(self) -> Body {
        match self {
            BatchKind::Requests => Body::Request(Request {
                client: 0,
                session: 0,
                request: 0,
                operation: Operation::Apply,
                body: Bytes::new(),
            }),
            BatchKind::Replies => Body::Reply(Reply {
                client: 0,
                session: 0,
                request: 0,
                op: 0,
                status: ReplyStatus::Ok,
                result: Bytes::new(),
            }),
        }
    }
}

/// The messages every record of a batch shares the envelope of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Envelope {
    epoch: u32,
    view: View,
    replica: ReplicaIndex,
}

impl Envelope {
    fn of(message: &Message) -> Envelope {
        Envelope {
            epoch: message.epoch,
            view: message.view,
            replica: message.replica,
        }
    }
}

/// A decoded batch frame: checked whole by the gate; its messages are read out by
/// [`Batch::into_iter`] as slices of the frame (nothing is copied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    kind: BatchKind,
    envelope: Envelope,
    count: u32,
    /// The records (the body after its count), every one checked.
    records: Bytes,
}

impl Batch {
    /// What it holds.
    pub fn kind(&self) -> BatchKind {
        self.kind
    }

    /// How many messages it holds (at least 1).
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Never: a batch holds at least one message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The view every message of the batch was sent in.
    pub fn view(&self) -> View {
        self.envelope.view
    }

    /// The replies of a batch of replies, in order, as bare [`Reply`]s (each result a
    /// slice of the frame); nothing for a batch of requests. A client reads hundreds of
    /// replies per frame and needs only the reply and the batch's [`view`](Self::view):
    /// building a [`Message`] per reply, and dropping it, showed as a tenth of the load
    /// generator's samples (`perf/profile.md`).
    pub fn replies(&self) -> impl ExactSizeIterator<Item = Reply> + '_ {
        let count = match self.kind {
            BatchKind::Replies => self.count as usize,
            BatchKind::Requests => 0,
        };
        let mut at = 0;
        (0..count).map(move |_| {
            let (reply, payload) = read_reply(&self.records, at);
            at = payload.end;
            Reply {
                result: self.records.slice(payload),
                ..reply
            }
        })
    }

    /// The body's bytes after the count, for re-encoding.
    pub(super) fn records(&self) -> &Bytes {
        &self.records
    }

    /// Checks a body whose checksum passed: the count against the bytes present, every
    /// record's fields, codes and payload bounds, the ranges of each message as
    /// `range::check` sees them, and that the records fill the body exactly.
    pub(super) fn check(
        header: &Header,
        kind: BatchKind,
        body: Bytes,
    ) -> Result<Batch, DecodeError> {
        let envelope = Envelope {
            epoch: header.epoch,
            view: header.view,
            replica: header.replica,
        };
        let count_bytes = body
            .first_chunk::<BATCH_COUNT_BYTES>()
            .ok_or(Malformed("body ends inside a field"))?;
        let count = u32::from_le_bytes(*count_bytes);
        let records = body.slice(BATCH_COUNT_BYTES..);
        if count == 0 {
            return Err(Malformed("empty batch"));
        }
        // The count is checked against the bytes present before anything is read.
        if count as usize > records.len() / kind.record_bytes() {
            return Err(Malformed("batch count exceeds body"));
        }
        // One message, its fields overwritten by each record in turn: the range check needs
        // the numbers only (the payload is not sliced here), and building and dropping a
        // message per record was a fifth of this check in the client's profile.
        let mut message = Message {
            epoch: envelope.epoch,
            view: envelope.view,
            replica: envelope.replica,
            body: kind.blank(),
        };
        let mut at = 0;
        for _ in 0..count {
            let payload = read_record(&records, at, &mut message.body)?;
            range::check(&message)?;
            at = payload.end;
        }
        if at != records.len() {
            return Err(Malformed("trailing bytes after body"));
        }
        Ok(Batch {
            kind,
            envelope,
            count,
            records,
        })
    }
}

impl IntoIterator for Batch {
    type Item = Message;
    type IntoIter = BatchMessages;

    fn into_iter(self) -> BatchMessages {
        BatchMessages {
            batch: self,
            read: 0,
            at: 0,
        }
    }
}

/// The messages of a [`Batch`], in order; each payload is a slice of the frame. Owned, so
/// a reader may stop part-way and keep the rest for later (back-pressure).
#[derive(Clone, Debug)]
pub struct BatchMessages {
    batch: Batch,
    read: u32,
    at: usize,
}

impl BatchMessages {
    /// How many messages are left.
    pub fn remaining(&self) -> usize {
        (self.batch.count - self.read) as usize
    }
}

impl Iterator for BatchMessages {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        if self.read == self.batch.count {
            return None;
        }
        let records = &self.batch.records;
        // The gate's checks passed on these bytes: read without them (the primary reads
        // every request of every batch here).
        let (body, end) = match self.batch.kind {
            BatchKind::Requests => {
                let (request, payload) = read_request(records, self.at);
                let end = payload.end;
                let body = records.slice(payload);
                (Body::Request(Request { body, ..request }), end)
            }
            BatchKind::Replies => {
                let (reply, payload) = read_reply(records, self.at);
                let end = payload.end;
                let result = records.slice(payload);
                (Body::Reply(Reply { result, ..reply }), end)
            }
        };
        self.read += 1;
        self.at = end;
        let envelope = self.batch.envelope;
        Some(Message {
            epoch: envelope.epoch,
            view: envelope.view,
            replica: envelope.replica,
            body,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining(), Some(self.remaining()))
    }
}

/// Reads the record at `at` into `body` (a [`BatchKind::blank`] of the batch's kind; its
/// payload stays empty), checking its bounds and codes; returns where its payload is.
fn read_record(
    records: &[u8],
    at: usize,
    body: &mut Body,
) -> Result<std::ops::Range<usize>, DecodeError> {
    let record_bytes = match body {
        Body::Request(_) => REQUEST_RECORD_BYTES,
        _ => REPLY_RECORD_BYTES,
    };
    let fixed = records
        .get(at..at + record_bytes)
        .ok_or(Malformed("body ends inside a field"))?;
    let u64_at = |i: usize| u64::from_le_bytes(fixed[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().expect("4 bytes"));
    let payload_bytes = match body {
        Body::Request(request) => {
            request.operation =
                Operation::from_u8(fixed[20]).ok_or(Malformed("unknown operation code"))?;
            request.client = u64_at(0);
            request.session = u64_at(8);
            request.request = u32_at(16);
            let body_bytes = u32_at(21) as usize;
            if request.operation.carries_seen() && body_bytes < READ_SEEN_BYTES {
                // As `decode::checked_request` for a single request.
                return Err(Malformed("read request without the op it has seen"));
            }
            body_bytes
        }
        Body::Reply(reply) => {
            reply.status =
                ReplyStatus::from_u8(fixed[28]).ok_or(Malformed("unknown reply status"))?;
            reply.client = u64_at(0);
            reply.session = u64_at(8);
            reply.request = u32_at(16);
            reply.op = u64_at(20) as Op;
            u32_at(29) as usize
        }
        _ => unreachable!("a batch holds requests or replies"),
    };
    let start = at + record_bytes;
    if payload_bytes > records.len() - start {
        return Err(Malformed("payload length exceeds body"));
    }
    Ok(start..start + payload_bytes)
}

/// Reads the request record at `at` of a batch the gate checked: the request with an
/// empty body, and where its body is. As [`read_reply`].
fn read_request(records: &[u8], at: usize) -> (Request, std::ops::Range<usize>) {
    let fixed: &[u8; REQUEST_RECORD_BYTES] = records[at..at + REQUEST_RECORD_BYTES]
        .try_into()
        .expect("checked at the gate");
    let u64_at = |i: usize| u64::from_le_bytes(fixed[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().expect("4 bytes"));
    let request = Request {
        client: u64_at(0),
        session: u64_at(8),
        request: u32_at(16),
        operation: Operation::from_u8(fixed[20]).expect("checked at the gate"),
        body: Bytes::new(),
    };
    let start = at + REQUEST_RECORD_BYTES;
    (request, start..start + u32_at(21) as usize)
}

/// Reads the reply record at `at` of a batch the gate checked: the reply with an empty
/// result, and where its result is. The checks of [`read_record`] passed on these bytes
/// already, so a failure here is a bug, not bad input.
fn read_reply(records: &[u8], at: usize) -> (Reply, std::ops::Range<usize>) {
    let fixed: &[u8; REPLY_RECORD_BYTES] = records[at..at + REPLY_RECORD_BYTES]
        .try_into()
        .expect("checked at the gate");
    let u64_at = |i: usize| u64::from_le_bytes(fixed[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().expect("4 bytes"));
    let reply = Reply {
        client: u64_at(0),
        session: u64_at(8),
        request: u32_at(16),
        op: u64_at(20) as Op,
        status: ReplyStatus::from_u8(fixed[28]).expect("checked at the gate"),
        result: Bytes::new(),
    };
    let start = at + REPLY_RECORD_BYTES;
    (reply, start..start + u32_at(29) as usize)
}

/// A batch frame being appended to a buffer: [`BatchWriter::begin`] reserves its header
/// and count, [`BatchWriter::push`] appends one record, [`BatchWriter::seal`] writes the
/// count, size and both checksums. Until it is sealed the buffer holds an unfinished frame:
/// the owner seals before anything else is appended and before the buffer is written or
/// split (the offsets are into the buffer as it is).
#[derive(Debug)]
pub struct BatchWriter {
    kind: BatchKind,
    envelope: Envelope,
    start: usize,
    count: u32,
}

impl BatchWriter {
    /// Opens a batch in `out` for messages like `first` (pushed too). `None` if `first` is
    /// neither a request nor a reply.
    pub fn begin(first: &Message, out: &mut BytesMut) -> Option<BatchWriter> {
        let kind = BatchKind::of(first)?;
        let start = begin(out, BATCH_COUNT_BYTES);
        out.put_u32_le(0); // The count, written at `seal`.
        let mut writer = BatchWriter {
            kind,
            envelope: Envelope::of(first),
            start,
            count: 0,
        };
        writer.push(first, out);
        Some(writer)
    }

    /// Whether `message` may join this batch: the same kind and envelope, and the frame
    /// would stay within `frame_bytes_max`.
    pub fn accepts(&self, message: &Message, out: &BytesMut, frame_bytes_max: usize) -> bool {
        BatchKind::of(message) == Some(self.kind)
            && Envelope::of(message) == self.envelope
            && self.frame_bytes(out) + record_bytes(message) <= frame_bytes_max
    }

    /// Bytes of the frame so far.
    pub fn frame_bytes(&self, out: &BytesMut) -> usize {
        out.len() - self.start
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Never: a writer is opened with its first message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends `message`'s record.
    ///
    /// # Panics
    /// If `message` is not of this batch's kind and envelope, or its payload exceeds
    /// `u32::MAX` bytes.
    pub fn push(&mut self, message: &Message, out: &mut BytesMut) {
        assert_eq!(BatchKind::of(message), Some(self.kind), "batch kind");
        assert_eq!(Envelope::of(message), self.envelope, "batch envelope");
        // The fixed fields are assembled on the stack and appended with the payload in two
        // copies: a `put_*` per field checked the buffer's capacity each time, and this
        // runs once per request on the client and once per reply on the primary.
        match &message.body {
            Body::Request(request) => {
                let mut fixed = [0u8; REQUEST_RECORD_BYTES];
                fixed[0..8].copy_from_slice(&request.client.to_le_bytes());
                fixed[8..16].copy_from_slice(&request.session.to_le_bytes());
                fixed[16..20].copy_from_slice(&request.request.to_le_bytes());
                fixed[20] = request.operation as u8;
                fixed[21..25].copy_from_slice(&payload_len(&request.body).to_le_bytes());
                append(out, &fixed, &request.body);
            }
            Body::Reply(reply) => {
                let mut fixed = [0u8; REPLY_RECORD_BYTES];
                fixed[0..8].copy_from_slice(&reply.client.to_le_bytes());
                fixed[8..16].copy_from_slice(&reply.session.to_le_bytes());
                fixed[16..20].copy_from_slice(&reply.request.to_le_bytes());
                fixed[20..28].copy_from_slice(&reply.op.to_le_bytes());
                fixed[28] = reply.status as u8;
                fixed[29..33].copy_from_slice(&payload_len(&reply.result).to_le_bytes());
                append(out, &fixed, &reply.result);
            }
            _ => unreachable!("checked above"),
        }
        self.count += 1;
    }

    /// Finishes the frame: count, size and checksums.
    pub fn seal(self, cluster: u128, out: &mut BytesMut) {
        let count_at = self.start + HEADER_BYTES;
        out[count_at..count_at + BATCH_COUNT_BYTES].copy_from_slice(&self.count.to_le_bytes());
        let header = Header {
            cluster,
            epoch: self.envelope.epoch,
            view: self.envelope.view,
            replica: self.envelope.replica,
            command: self.kind.command() as u8,
            ..Header::default()
        };
        finish(out, self.start, header);
    }
}

/// Re-encodes a decoded batch exactly as it arrived (one encoding per frame).
pub fn encode_batch(batch: &Batch, cluster: u128, out: &mut BytesMut) {
    let start = begin(out, BATCH_COUNT_BYTES + batch.records().len());
    out.put_u32_le(batch.count);
    out.put_slice(batch.records());
    let header = Header {
        cluster,
        epoch: batch.envelope.epoch,
        view: batch.envelope.view,
        replica: batch.envelope.replica,
        command: batch.kind.command() as u8,
        ..Header::default()
    };
    finish(out, start, header);
}

/// The bytes `message` adds to a batch (0 for a message no batch carries).
pub fn record_bytes(message: &Message) -> usize {
    match &message.body {
        Body::Request(request) => REQUEST_RECORD_BYTES + request.body.len(),
        Body::Reply(reply) => REPLY_RECORD_BYTES + reply.result.len(),
        _ => 0,
    }
}

/// The bytes of a batch frame holding exactly `messages`' records.
pub fn batch_frame_bytes<'a>(messages: impl IntoIterator<Item = &'a Message>) -> usize {
    HEADER_BYTES + BATCH_COUNT_BYTES + messages.into_iter().map(record_bytes).sum::<usize>()
}

/// Appends a record's fixed fields and its payload, reserving once for both.
fn append(out: &mut BytesMut, fixed: &[u8], payload: &[u8]) {
    out.reserve(fixed.len() + payload.len());
    out.extend_from_slice(fixed);
    out.extend_from_slice(payload);
}

fn payload_len(payload: &[u8]) -> u32 {
    u32::try_from(payload.len()).expect("a payload fits the u32 length field")
}
