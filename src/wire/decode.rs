//! Decoding: the validation gate. Untrusted bytes become a [`Frame`] only here.
//!
//! The order of checks is the point of this file: (1) the header checksum, before any
//! header field is believed, the size above all; (2) the cluster, size bounds, command and
//! header fields, all before waiting for (and buffering) the body; (3) the body checksum,
//! before a single body byte is parsed; (4) the body's structure. Payloads are never copied:
//! the frame is split off the read buffer and every body, result and snapshot is a `Bytes`
//! slice of it.

use super::batch::{Batch, BatchKind};
use super::encode::{entry_at, ENTRIES_COUNT_BYTES};
use super::error::DecodeError;
use super::frame::{Frame, Peer, PEER_CLIENT, PEER_REPLICA};
use super::greeting::{
    read_member, Hello, Limits, Mac, Nonce, Refusal, RefusalCode, Terms, Welcome, FLAG_KEYED,
    FLAG_LIMITS, HELLO_BODY_BYTES_MAX, MAC_BYTES, MEMBERS_MAX, MEMBER_BYTES,
    REFUSAL_TEXT_BYTES_MAX, WELCOME_BYTES,
};
use super::header::{Command, Header, HEADER_BYTES, VERSION};
use super::range;
use crate::protocol::{
    Body, CheckpointContent, CheckpointId, CheckpointPart, CheckpointRequest, Commit,
    Configuration, DoViewChange, Entry, GetCheckpoint, GetState, Message, NewState, Op, Operation,
    Prepare, PrepareOk, Recovery, RecoveryResponse, Reply, ReplyStatus, Request, StartEpoch,
    StartView, StartViewChange, CHECKPOINT_ID_BYTES, ENTRY_HEADER_BYTES, READ_SEEN_BYTES,
};
use crate::service::{Digest, DIGEST_BYTES};
use bytes::{Bytes, BytesMut};

use DecodeError::Malformed;

/// Decodes the first frame in `buf`, if it is complete.
///
/// - `Ok(None)`: `buf` holds no complete frame yet (read more and call again). Nothing is
///   consumed. When the header is complete it has already been validated, so a frame that
///   would exceed `message_bytes_max` is an error before its body is buffered.
/// - `Ok(Some(frame))`: exactly one frame was split off the front of `buf`.
/// - `Err(_)`: the connection must be closed; what is left in `buf` is unspecified.
///
/// At end of stream, call [`is_partial`] on what is left: a partial frame means the peer
/// vanished mid-frame.
pub fn decode(
    buf: &mut BytesMut,
    cluster: u128,
    message_bytes_max: u32,
) -> Result<Option<Frame>, DecodeError> {
    let Some(header_bytes) = buf.first_chunk::<HEADER_BYTES>() else {
        return Ok(None);
    };
    let (header, command) = check_header(header_bytes, cluster, message_bytes_max)?;
    let size = header.size as usize;
    if buf.len() < size {
        return Ok(None);
    }
    if crc32c::crc32c(&buf[HEADER_BYTES..size]) != header.checksum_body {
        return Err(DecodeError::BodyChecksum);
    }
    let frame = buf.split_to(size).freeze();
    parse(&header, command, frame.slice(HEADER_BYTES..)).map(Some)
}

/// Whether `buf` still holds part of a frame. Meant for end of stream, after [`decode`] has
/// returned `Ok(None)`: any byte left over then is a frame the peer never finished.
pub fn is_partial(buf: &BytesMut) -> bool {
    !buf.is_empty()
}

/// Validates everything the header alone can tell, checksum first.
fn check_header(
    bytes: &[u8; HEADER_BYTES],
    cluster: u128,
    message_bytes_max: u32,
) -> Result<(Header, Command), DecodeError> {
    if !Header::checksum_valid(bytes) {
        return Err(DecodeError::HeaderChecksum);
    }
    let header = Header::read(bytes);
    // A refusal's layout is the same in every version, so that a node of another version
    // can read why it is refused (`header::VERSION`).
    if header.version != VERSION && header.command != Command::Refusal as u8 {
        return Err(DecodeError::OtherVersion {
            version: header.version,
            cluster: header.cluster,
        });
    }
    let command =
        Command::from_u8(header.command).ok_or(DecodeError::UnknownCommand(header.command))?;
    if header.cluster != cluster && !command.is_greeting() {
        return Err(DecodeError::WrongCluster {
            expected: cluster,
            got: header.cluster,
        });
    }
    if (header.size as usize) < HEADER_BYTES {
        return Err(DecodeError::TooSmall);
    }
    if header.size > message_bytes_max {
        return Err(DecodeError::TooLarge {
            size: header.size,
            max: message_bytes_max,
        });
    }
    let body_bytes = header.size as usize - HEADER_BYTES;
    let greeting_fits = match command {
        Command::Hello => body_bytes <= HELLO_BODY_BYTES_MAX,
        Command::Welcome => body_bytes == WELCOME_BYTES,
        Command::Proof => body_bytes == MAC_BYTES,
        Command::Refusal => body_bytes <= REFUSAL_TEXT_BYTES_MAX,
        _ => true,
    };
    if !greeting_fits {
        return Err(Malformed("handshake frame of the wrong size"));
    }
    if !command.has_body() && header.size as usize != HEADER_BYTES {
        return Err(Malformed("body on a command that has none"));
    }
    if !unused_fields_zero(&header, used_fields(command)) {
        return Err(Malformed("header field unused by this command is not zero"));
    }
    Ok((header, command))
}

// Header fields that vary by command, as bits: which ones each command uses.
const EPOCH: u16 = 1 << 0;
const VIEW: u16 = 1 << 1;
const REPLICA: u16 = 1 << 2;
const CODE: u16 = 1 << 3;
const OP: u16 = 1 << 4;
const COMMIT: u16 = 1 << 5;
const OP_FIRST: u16 = 1 << 6;
const CLIENT: u16 = 1 << 7;
const SESSION: u16 = 1 << 8;
const NONCE: u16 = 1 << 9;
const REQUEST: u16 = 1 << 10;
const LAST_NORMAL_VIEW: u16 = 1 << 11;
/// Every protocol message carries the sender's epoch, view and index.
const ENVELOPE: u16 = EPOCH | VIEW | REPLICA;

/// The header fields `command` may set (the table in the module docs).
fn used_fields(command: Command) -> u16 {
    use Command::*;
    match command {
        Request => ENVELOPE | CODE | CLIENT | SESSION | REQUEST,
        // A batch's header is the envelope its messages share; the rest is in the records.
        Requests | Replies => ENVELOPE,
        Reply => ENVELOPE | CODE | CLIENT | SESSION | REQUEST | OP,
        // `nonce` carries the lease stamp (paper 6.3.1), `op` the actives' commit (6.1).
        Prepare => ENVELOPE | OP_FIRST | COMMIT | OP | NONCE,
        PrepareOk => ENVELOPE | OP | COMMIT | NONCE,
        GetState => ENVELOPE | OP | NONCE,
        // `op` carries the actives' commit number (paper 6.1, for witnesses).
        Commit => ENVELOPE | COMMIT | OP | NONCE,
        StartViewChange => ENVELOPE | LAST_NORMAL_VIEW,
        // `nonce` carries the actives' commit the sender knows (paper 6.1).
        DoViewChange => ENVELOPE | LAST_NORMAL_VIEW | OP | COMMIT | NONCE,
        StartView => ENVELOPE | OP | COMMIT | OP_FIRST,
        Recovery => ENVELOPE | NONCE,
        RecoveryResponse => ENVELOPE | CODE | NONCE | OP | COMMIT | OP_FIRST,
        NewState => ENVELOPE | CODE | OP | COMMIT | OP_FIRST | NONCE,
        StartEpoch => ENVELOPE | OP | NONCE,
        EpochStarted => ENVELOPE,
        GetCheckpoint => ENVELOPE | CODE | OP | NONCE,
        CheckpointPart => ENVELOPE | CODE | OP | NONCE,
        // `client` is the speaker's identity (a client id or a replica identity), `epoch`
        // the epoch of the members it lists.
        Hello => CODE | CLIENT | EPOCH,
        Welcome => CLIENT,
        Refusal => CODE,
        Proof | StatsRequest | StatsReply => 0,
    }
}

fn unused_fields_zero(header: &Header, used: u16) -> bool {
    let fields = [
        (EPOCH, u64::from(header.epoch)),
        (VIEW, u64::from(header.view)),
        (REPLICA, u64::from(header.replica)),
        (CODE, u64::from(header.code)),
        (OP, header.op),
        (COMMIT, header.commit),
        (OP_FIRST, header.op_first),
        (CLIENT, header.client),
        (SESSION, header.session),
        (NONCE, header.nonce),
        (REQUEST, u64::from(header.request)),
        (LAST_NORMAL_VIEW, u64::from(header.last_normal_view)),
    ];
    fields
        .iter()
        .all(|&(bit, value)| used & bit != 0 || value == 0)
}

/// Parses a frame whose header and body checksums have both passed.
fn parse(header: &Header, command: Command, body: Bytes) -> Result<Frame, DecodeError> {
    match command {
        Command::Requests => {
            return Batch::check(header, BatchKind::Requests, body).map(Frame::Batch)
        }
        Command::Replies => {
            return Batch::check(header, BatchKind::Replies, body).map(Frame::Batch)
        }
        _ => {}
    }
    let mut reader = Reader { body, position: 0 };
    let frame = match command {
        Command::Hello => Frame::Hello(parse_hello(header, &mut reader)?),
        Command::Welcome => Frame::Welcome(parse_welcome(header, &mut reader)?),
        Command::Proof => Frame::Proof(reader.take()?),
        Command::Refusal => Frame::Refusal(parse_refusal(header, &mut reader)?),
        Command::StatsRequest => Frame::StatsRequest,
        Command::StatsReply => Frame::StatsReply(reader.rest()),
        _ => {
            let message = Message {
                epoch: header.epoch,
                view: header.view,
                replica: header.replica,
                body: parse_body(header, command, &mut reader)?,
            };
            range::check(&message)?;
            Frame::Message(message)
        }
    };
    reader.finish()?;
    Ok(frame)
}

fn parse_hello(header: &Header, reader: &mut Reader) -> Result<Hello, DecodeError> {
    let peer = match header.code {
        PEER_REPLICA => Peer::Replica(header.client),
        PEER_CLIENT => Peer::Client(header.client),
        _ => return Err(Malformed("unknown hello peer kind")),
    };
    let [flags] = reader.take::<1>()?;
    if flags & !(FLAG_KEYED | FLAG_LIMITS) != 0 {
        return Err(Malformed("unknown hello flag"));
    }
    let nonce: Nonce = reader.take()?;
    let limits = Limits {
        message_bytes_max: reader.u32()?,
        request_body_bytes_max: reader.u32()?,
        clients_max: reader.u32()?,
        checkpoint_interval_ops: reader.u64()?,
        witnesses: reader.u64()?,
        lease_ticks: reader.u64()?,
        clock_drift_ppm: reader.u32()?,
    };
    let count = u16::from_le_bytes(reader.take()?) as usize;
    if count > MEMBERS_MAX || count * MEMBER_BYTES != reader.remaining() {
        return Err(Malformed("hello member count does not match its body"));
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member = read_member(&reader.take()?).ok_or(Malformed("hello member address"))?;
        members.push(member);
    }
    let keyed = flags & FLAG_KEYED != 0;
    let limited = flags & FLAG_LIMITS != 0;
    // One encoding per frame: what a flag says is absent is all zero.
    if !keyed && nonce != Nonce::default() {
        return Err(Malformed("hello nonce without the keyed flag"));
    }
    if !limited && limits != Limits::default() {
        return Err(Malformed("hello limits without the limits flag"));
    }
    Ok(Hello {
        peer,
        terms: Terms {
            cluster: header.cluster,
            epoch: header.epoch,
            members,
            limits: limited.then_some(limits),
        },
        nonce: keyed.then_some(nonce),
    })
}

fn parse_welcome(header: &Header, reader: &mut Reader) -> Result<Welcome, DecodeError> {
    let [flags] = reader.take::<1>()?;
    let nonce: Nonce = reader.take()?;
    let mac: Mac = reader.take()?;
    let keyed = match flags {
        FLAG_KEYED => Some((nonce, mac)),
        0 if nonce == Nonce::default() && mac == Mac::default() => None,
        _ => return Err(Malformed("welcome flags")),
    };
    Ok(Welcome {
        replica: header.client,
        keyed,
    })
}

fn parse_refusal(header: &Header, reader: &mut Reader) -> Result<Refusal, DecodeError> {
    let code = RefusalCode::from_u8(header.code).ok_or(Malformed("unknown refusal code"))?;
    let text = reader.rest();
    let reason = std::str::from_utf8(&text)
        .map_err(|_| Malformed("refusal reason is not UTF-8"))?
        .to_string();
    Ok(Refusal {
        code,
        version: header.version,
        reason,
    })
}

fn parse_body(header: &Header, command: Command, reader: &mut Reader) -> Result<Body, DecodeError> {
    Ok(match command {
        Command::Request => Body::Request(checked_request(Request {
            client: header.client,
            session: header.session,
            request: header.request,
            operation: operation(header.code)?,
            body: reader.rest(),
        })?),
        Command::Reply => Body::Reply(Reply {
            client: header.client,
            session: header.session,
            request: header.request,
            op: header.op,
            status: ReplyStatus::from_u8(header.code).ok_or(Malformed("unknown reply status"))?,
            result: reader.rest(),
        }),
        Command::Prepare => Body::Prepare(parse_prepare(header, reader)?),
        Command::PrepareOk if header.commit > header.op => {
            return Err(Malformed("prepare_ok commit beyond its op"))
        }
        Command::PrepareOk => Body::PrepareOk(PrepareOk {
            op: header.op,
            commit: header.commit,
            stamp: header.nonce,
        }),
        Command::Commit if header.op > header.commit => {
            return Err(Malformed("commit's actives' commit beyond its commit"))
        }
        Command::Commit => Body::Commit(Commit {
            commit: header.commit,
            actives_commit: header.op,
            stamp: header.nonce,
        }),
        Command::StartViewChange => Body::StartViewChange(StartViewChange {
            sender_view: header.last_normal_view,
        }),
        Command::DoViewChange => Body::DoViewChange(DoViewChange {
            last_normal_view: header.last_normal_view,
            op: header.op,
            commit: header.commit,
            actives_commit: header.nonce,
            entries: reader.entries()?,
        }),
        Command::StartView => Body::StartView(StartView {
            op: header.op,
            commit: header.commit,
            op_first: header.op_first,
            entries: entries_from(header.op_first, reader)?,
        }),
        Command::Recovery => Body::Recovery(Recovery {
            nonce: header.nonce,
        }),
        Command::RecoveryResponse => Body::RecoveryResponse(RecoveryResponse {
            nonce: header.nonce,
            empty: flag(header.code & 1, "never")?,
            normal: match header.code >> 1 {
                0 => false,
                1 => true,
                _ => {
                    return Err(Malformed(
                        "recovery_response flags other than empty and normal",
                    ))
                }
            },
            op: header.op,
            commit: header.commit,
            epoch_start: header.op_first,
        }),
        Command::GetState => Body::GetState(GetState {
            op: header.op,
            // The learner's identity + 1, so that 0 means "a member asks".
            learner: header.nonce.checked_sub(1),
        }),
        Command::NewState => Body::NewState(parse_new_state(header, reader)?),
        Command::StartEpoch => Body::StartEpoch(StartEpoch {
            sender: header.nonce,
            op: header.op,
            configuration: Configuration::from_bytes(&reader.rest())
                .ok_or(Malformed("start_epoch configuration"))?,
        }),
        Command::EpochStarted => Body::EpochStarted,
        Command::GetCheckpoint => Body::GetCheckpoint(parse_get_checkpoint(header, reader)?),
        Command::CheckpointPart => Body::CheckpointPart(parse_checkpoint_part(header, reader)?),
        Command::Hello
        | Command::Welcome
        | Command::Proof
        | Command::Refusal
        | Command::StatsRequest
        | Command::StatsReply
        | Command::Requests
        | Command::Replies => unreachable!("connection frames and batches are parsed by `parse`"),
    })
}

/// A Prepare covers ops `op_first ..= op_first + len - 1`: never empty, never op 0 (which
/// means "none"), and the range fits in an `Op`, so the core may compute `op_last()`.
fn parse_prepare(header: &Header, reader: &mut Reader) -> Result<Prepare, DecodeError> {
    if header.op_first == 0 {
        return Err(Malformed("prepare starts at op 0"));
    }
    if header.op > header.commit {
        return Err(Malformed("prepare's actives' commit beyond its commit"));
    }
    let entries = entries_from(header.op_first, reader)?;
    if entries.is_empty() {
        return Err(Malformed("prepare without entries"));
    }
    Ok(Prepare {
        op_first: header.op_first,
        commit: header.commit,
        actives_commit: header.op,
        stamp: header.nonce,
        entries,
    })
}

/// A NewState: `code` bit 0 says a checkpoint id comes first, bit 1 that the sender
/// vouches for its view's log (`NewState::vouches`).
fn parse_new_state(header: &Header, reader: &mut Reader) -> Result<NewState, DecodeError> {
    if header.code > 0b11 {
        return Err(Malformed("NewState code has bits other than 0 and 1"));
    }
    let checkpoint = if header.code & 1 == 1 {
        Some(reader.checkpoint_id()?)
    } else {
        None
    };
    Ok(NewState {
        sender: header.nonce,
        commit: header.commit,
        op: header.op,
        vouches: header.code & 0b10 != 0,
        checkpoint,
        op_first: header.op_first,
        entries: entries_from(header.op_first, reader)?,
    })
}

/// A GetCheckpoint: the root, then (code 0) a manifest run's level and start, or (code 1)
/// a `u32` count of strictly increasing page indexes.
fn parse_get_checkpoint(
    header: &Header,
    reader: &mut Reader,
) -> Result<GetCheckpoint, DecodeError> {
    let root = Digest(reader.take()?);
    let part = match header.code {
        0 => {
            let [level] = reader.take()?;
            let start = reader.u32()?;
            check_run(level, start)?;
            CheckpointRequest::Manifest { level, start }
        }
        1 => CheckpointRequest::Pages(reader.page_indexes()?),
        _ => {
            return Err(Malformed(
                "get_checkpoint part is neither manifest nor pages",
            ))
        }
    };
    Ok(GetCheckpoint {
        op: header.op,
        root,
        asker: header.nonce,
        part,
    })
}

/// A CheckpointPart: the root, then (code 0) a manifest run: level, start, a `u32` count
/// of digests and a `u32` count of proof digests; (code 1) a `u32` count of pages, each
/// an index (strictly increasing) and a length-prefixed payload; (code 2) nothing.
fn parse_checkpoint_part(
    header: &Header,
    reader: &mut Reader,
) -> Result<CheckpointPart, DecodeError> {
    let root = Digest(reader.take()?);
    let content = match header.code {
        0 => {
            let [level] = reader.take()?;
            let start = reader.u32()?;
            check_run(level, start)?;
            let digests = reader.digests()?;
            if digests.len() as u64 > 1u64 << level {
                return Err(Malformed("checkpoint manifest run longer than its level"));
            }
            let proof = reader.digests()?;
            if proof.len() > 32 {
                return Err(Malformed("checkpoint manifest proof longer than a tree"));
            }
            CheckpointContent::Manifest {
                level,
                start,
                digests,
                proof,
            }
        }
        1 => {
            let count = reader.u32()? as usize;
            // The count is checked against the bytes present before it sizes an allocation.
            if count > reader.remaining() / 8 {
                return Err(Malformed("checkpoint page count exceeds body"));
            }
            let mut pages: Vec<(u32, Bytes)> = Vec::with_capacity(count);
            for _ in 0..count {
                let index = reader.u32()?;
                if pages.last().is_some_and(|&(last, _)| last >= index) {
                    return Err(Malformed("checkpoint page indexes not increasing"));
                }
                pages.push((index, reader.payload()?));
            }
            CheckpointContent::Pages(pages)
        }
        2 => CheckpointContent::Unavailable,
        _ => return Err(Malformed("checkpoint_part content unknown")),
    };
    Ok(CheckpointPart {
        op: header.op,
        root,
        responder: header.nonce,
        content,
    })
}

/// A manifest run of `2^level` pages from `start`: within the `u32` page indexes, and
/// aligned.
fn check_run(level: u8, start: u32) -> Result<(), DecodeError> {
    if level >= 32 {
        return Err(Malformed("checkpoint manifest level beyond u32 pages"));
    }
    if !start.is_multiple_of(1u32 << level) {
        return Err(Malformed("checkpoint manifest run not aligned"));
    }
    Ok(())
}

/// An entry list whose first op is `op_first`: its op range must fit in an `Op`.
fn entries_from(op_first: Op, reader: &mut Reader) -> Result<Vec<Entry>, DecodeError> {
    let entries = reader.entries()?;
    let fits = match entries.len().checked_sub(1) {
        None => true,
        Some(last) => op_first.checked_add(last as Op).is_some(),
    };
    if !fits {
        return Err(Malformed("entry op range overflows u64"));
    }
    Ok(entries)
}

fn operation(code: u8) -> Result<Operation, DecodeError> {
    Operation::from_u8(code).ok_or(Malformed("unknown operation code"))
}

/// What a request's operation asks of its body: a read (paper 6.3.2) starts with the op
/// its client has seen. Shared by single requests and batch records.
fn checked_request(request: Request) -> Result<Request, DecodeError> {
    if request.operation.carries_seen() && request.body.len() < READ_SEEN_BYTES {
        return Err(Malformed("read request without the op it has seen"));
    }
    Ok(request)
}

/// An entry's operation: a read is answered where it arrives, never a log entry.
fn entry_operation(code: u8) -> Result<Operation, DecodeError> {
    match Operation::from_u8(code) {
        None => Err(Malformed("unknown entry operation code")),
        Some(operation) if !operation.is_ordered() => Err(Malformed("a read is never a log entry")),
        Some(operation) => Ok(operation),
    }
}

fn flag(code: u8, reason: &'static str) -> Result<bool, DecodeError> {
    match code {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Malformed(reason)),
    }
}

/// A cursor over a checksummed body. Every read is bounds-checked; slices share the frame.
struct Reader {
    body: Bytes,
    position: usize,
}

impl Reader {
    fn remaining(&self) -> usize {
        self.body.len() - self.position
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.body[self.position..]
            .first_chunk::<N>()
            .ok_or(Malformed("body ends inside a field"))?;
        self.position += N;
        Ok(*bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    /// A payload whose `u32` length precedes it, as a slice of the frame.
    fn payload(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        if len > self.remaining() {
            return Err(Malformed("payload length exceeds body"));
        }
        let payload = self.body.slice(self.position..self.position + len);
        self.position += len;
        Ok(payload)
    }

    /// Everything not yet read, as a slice of the frame.
    fn rest(&mut self) -> Bytes {
        let rest = self.body.slice(self.position..);
        self.position = self.body.len();
        rest
    }

    /// An entry list as written by `encode::write_entries`.
    fn entries(&mut self) -> Result<Vec<Entry>, DecodeError> {
        let count = self.u32()? as usize;
        // The count is checked against the bytes present before it sizes an allocation.
        if count > self.remaining() / ENTRY_HEADER_BYTES {
            return Err(Malformed("entry count exceeds body"));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            // One bounds check covers the fixed fields.
            let fixed: [u8; ENTRY_HEADER_BYTES] = self.take()?;
            let u64_at = |at: usize| u64::from_le_bytes(fixed[at..at + 8].try_into().unwrap());
            let u32_at = |at: usize| u32::from_le_bytes(fixed[at..at + 4].try_into().unwrap());
            let operation = entry_operation(fixed[entry_at::OPERATION])?;
            let body_bytes = u32_at(entry_at::BODY_BYTES) as usize;
            if body_bytes > self.remaining() {
                return Err(Malformed("payload length exceeds body"));
            }
            entries.push(Entry {
                client: u64_at(entry_at::CLIENT),
                session: u64_at(entry_at::SESSION),
                request: u32_at(entry_at::REQUEST),
                timestamp: u64_at(entry_at::TIMESTAMP),
                operation,
                body: self.body.slice(self.position..self.position + body_bytes),
            });
            self.position += body_bytes;
        }
        Ok(entries)
    }

    fn checkpoint_id(&mut self) -> Result<CheckpointId, DecodeError> {
        if self.remaining() < CHECKPOINT_ID_BYTES + ENTRIES_COUNT_BYTES {
            return Err(Malformed("body too short for a checkpoint id"));
        }
        Ok(CheckpointId {
            op: self.u64()?,
            timestamp: self.u64()?,
            service_pages: self.u32()?,
            clients_pages: self.u32()?,
            root: Digest(self.take()?),
        })
    }

    /// A `u32` count, then that many digests.
    fn digests(&mut self) -> Result<Vec<Digest>, DecodeError> {
        let count = self.u32()? as usize;
        // The count is checked against the bytes present before it sizes an allocation.
        if count > self.remaining() / DIGEST_BYTES {
            return Err(Malformed("digest count exceeds body"));
        }
        (0..count).map(|_| Ok(Digest(self.take()?))).collect()
    }

    /// A `u32` count, then that many page indexes, strictly increasing (one encoding).
    fn page_indexes(&mut self) -> Result<Vec<u32>, DecodeError> {
        let count = self.u32()? as usize;
        if count > self.remaining() / 4 {
            return Err(Malformed("page index count exceeds body"));
        }
        let mut indexes: Vec<u32> = Vec::with_capacity(count);
        for _ in 0..count {
            let index = self.u32()?;
            if indexes.last().is_some_and(|&last| last >= index) {
                return Err(Malformed("checkpoint page indexes not increasing"));
            }
            indexes.push(index);
        }
        Ok(indexes)
    }

    /// The whole body must be accounted for.
    fn finish(self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(Malformed("trailing bytes after body"));
        }
        Ok(())
    }
}
