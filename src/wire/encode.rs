//! Encoding: a message or connection frame is appended to a caller-owned `BytesMut`.
//!
//! One frame costs one `reserve` (the exact size is computed first), one copy of each
//! payload, and two crc32c passes over the bytes as written. Nothing is allocated per entry,
//! so encoding a Prepare of N entries into a reused buffer allocates nothing at all once
//! the buffer has grown to its working size.
//!
//! A checkpoint part's pages are the exception ([`encode_segments`]): they travel by
//! reference, as the checkpoint's own `Bytes`, between the segments the encoder writes,
//! so serving a transfer copies no page in user space (copying each answer's pages into
//! its frame was a third of a source's time, `perf/state_transfer.md`). The bytes on the
//! wire are the same.

use super::frame::{Peer, PEER_CLIENT, PEER_REPLICA};
use super::greeting::{
    write_member, Hello, Mac, Refusal, Welcome, FLAG_KEYED, FLAG_LIMITS, HELLO_FIXED_BYTES,
    MAC_BYTES, MEMBERS_MAX, MEMBER_BYTES, REFUSAL_TEXT_BYTES_MAX, WELCOME_BYTES,
};
use super::header::{Command, Header, HEADER_BYTES};
use crate::protocol::{
    Body, CheckpointContent, CheckpointId, CheckpointRequest, Entry, Message, CHECKPOINT_ID_BYTES,
    ENTRY_HEADER_BYTES,
};
use crate::service::{Digest, DIGEST_BYTES};
use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the entry count that opens every entry list.
pub(crate) const ENTRIES_COUNT_BYTES: usize = 4;

/// Appends one frame carrying `message` for `cluster` to `out`.
///
/// The caller bounds message sizes (`Config::message_bytes_max`); a receiver rejects a
/// frame larger than its own bound.
///
/// # Panics
/// If the frame would exceed `u32::MAX` bytes, or an entry body `u32::MAX` bytes.
pub fn encode(message: &Message, cluster: u128, out: &mut BytesMut) {
    let header = header_of(message, cluster);
    let body_bytes = body_bytes(&message.body);
    let start = begin(out, body_bytes);
    write_body(&message.body, out);
    debug_assert_eq!(out.len() - start, HEADER_BYTES + body_bytes);
    finish(out, start, header);
}

/// The header of `message`'s frame for `cluster`, all but its size and checksums: the
/// envelope and the fields its command keeps there.
fn header_of(message: &Message, cluster: u128) -> Header {
    let mut header = Header {
        cluster,
        epoch: message.epoch,
        view: message.view,
        replica: message.replica,
        ..Header::default()
    };
    fill_header(&message.body, &mut header);
    header
}

/// Pages of at least this many bytes travel by reference in [`encode_segments`]; smaller
/// ones are copied, since a segment costs an `iovec` and a reference count.
const BY_REFERENCE_BYTES_MIN: usize = 512;

/// Appends the frame carrying `message` to `segments`, the same bytes as [`encode`] would
/// write, in order: the pages of a checkpoint part (of at least
/// `BY_REFERENCE_BYTES_MIN` bytes) are pushed by reference, clones of the `Bytes` the
/// message holds; everything else is written into `out` and split off in segments
/// between them (whatever `out` held before leaves first, in the first segment). Any
/// other message is written whole into one segment. Returns the frame's bytes.
///
/// # Panics
/// As [`encode`].
pub fn encode_segments(
    message: &Message,
    cluster: u128,
    out: &mut BytesMut,
    segments: &mut Vec<Bytes>,
) -> usize {
    let Body::CheckpointPart(part) = &message.body else {
        return encode_one_segment(message, cluster, out, segments);
    };
    let CheckpointContent::Pages(pages) = &part.content else {
        return encode_one_segment(message, cluster, out, segments);
    };
    let mut header = header_of(message, cluster);
    let body_bytes = body_bytes(&message.body);
    let size = HEADER_BYTES + body_bytes;
    header.size = u32::try_from(size).expect("frame of more than u32::MAX bytes");
    // The body checksum over the body as it travels: the written fields and the pages in
    // place (read, not copied).
    let count = len_u32(pages.len()).to_le_bytes();
    let mut crc = crc32c::crc32c_append(crc32c::crc32c(&part.root.0), &count);
    for (index, page) in pages {
        crc = crc32c::crc32c_append(crc, &page_fields(*index, page));
        crc = crc32c::crc32c_append(crc, page);
    }
    header.checksum_body = crc;
    let copied: usize = pages
        .iter()
        .filter(|(_, page)| page.len() < BY_REFERENCE_BYTES_MIN)
        .map(|(_, page)| page.len())
        .sum();
    out.reserve(HEADER_BYTES + DIGEST_BYTES + 4 + 8 * pages.len() + copied);
    let start = out.len();
    out.put_bytes(0, HEADER_BYTES);
    let bytes: &mut [u8; HEADER_BYTES] = (&mut out[start..start + HEADER_BYTES])
        .try_into()
        .expect("header width");
    header.write_sealed(bytes);
    out.put_slice(&part.root.0);
    out.put_slice(&count);
    for (index, page) in pages {
        out.put_slice(&page_fields(*index, page));
        if page.len() < BY_REFERENCE_BYTES_MIN {
            out.put_slice(page);
        } else {
            segments.push(out.split().freeze());
            segments.push(page.clone());
        }
    }
    if !out.is_empty() {
        segments.push(out.split().freeze());
    }
    size
}

fn encode_one_segment(
    message: &Message,
    cluster: u128,
    out: &mut BytesMut,
    segments: &mut Vec<Bytes>,
) -> usize {
    let before = out.len();
    encode(message, cluster, out);
    let size = out.len() - before;
    segments.push(out.split().freeze());
    size
}

/// A page's fields before its bytes in a CheckpointPart: index, length.
fn page_fields(index: u32, page: &Bytes) -> [u8; 8] {
    let mut fields = [0u8; 8];
    fields[..4].copy_from_slice(&index.to_le_bytes());
    fields[4..].copy_from_slice(&len_u32(page.len()).to_le_bytes());
    fields
}

/// Appends a `Hello` frame: the first frame on every connection. Its cluster id is
/// `hello.terms.cluster`.
///
/// # Panics
/// If `hello.terms.members` lists more than [`MEMBERS_MAX`] addresses.
pub fn encode_hello(hello: &Hello, out: &mut BytesMut) {
    let terms = &hello.terms;
    assert!(terms.members.len() <= MEMBERS_MAX, "too many members");
    let mut header = Header {
        cluster: terms.cluster,
        command: Command::Hello as u8,
        epoch: terms.epoch,
        ..Header::default()
    };
    match hello.peer {
        Peer::Replica(id) => {
            header.code = PEER_REPLICA;
            header.client = id;
        }
        Peer::Client(client) => {
            header.code = PEER_CLIENT;
            header.client = client;
        }
    }
    let mut body = Vec::with_capacity(HELLO_FIXED_BYTES + terms.members.len() * MEMBER_BYTES);
    let flags = if hello.nonce.is_some() { FLAG_KEYED } else { 0 }
        | if terms.limits.is_some() {
            FLAG_LIMITS
        } else {
            0
        };
    body.push(flags);
    body.extend_from_slice(&hello.nonce.unwrap_or_default());
    let limits = terms.limits.unwrap_or_default();
    body.extend_from_slice(&limits.message_bytes_max.to_le_bytes());
    body.extend_from_slice(&limits.request_body_bytes_max.to_le_bytes());
    body.extend_from_slice(&limits.clients_max.to_le_bytes());
    body.extend_from_slice(&limits.checkpoint_interval_ops.to_le_bytes());
    body.extend_from_slice(&limits.witnesses.to_le_bytes());
    body.extend_from_slice(&limits.lease_ticks.to_le_bytes());
    body.extend_from_slice(&limits.clock_drift_ppm.to_le_bytes());
    body.extend_from_slice(&(terms.members.len() as u16).to_le_bytes());
    for member in &terms.members {
        write_member(member, &mut body);
    }
    let start = begin(out, body.len());
    out.put_slice(&body);
    finish(out, start, header);
}

/// Appends a `Welcome` from the replica with identity `welcome.replica` (in the header's
/// `client` field, the speaker's identity).
pub fn encode_welcome(welcome: &Welcome, cluster: u128, out: &mut BytesMut) {
    let header = Header {
        cluster,
        client: welcome.replica,
        command: Command::Welcome as u8,
        ..Header::default()
    };
    let start = begin(out, WELCOME_BYTES);
    let (nonce, mac) = welcome.keyed.unwrap_or_default();
    out.put_u8(if welcome.keyed.is_some() {
        FLAG_KEYED
    } else {
        0
    });
    out.put_slice(&nonce);
    out.put_slice(&mac);
    finish(out, start, header);
}

/// Appends a `Proof` carrying `mac`.
pub fn encode_proof(mac: &Mac, cluster: u128, out: &mut BytesMut) {
    let header = Header {
        cluster,
        command: Command::Proof as u8,
        ..Header::default()
    };
    let start = begin(out, MAC_BYTES);
    out.put_slice(mac);
    finish(out, start, header);
}

/// Appends a `Refusal`; a reason longer than [`REFUSAL_TEXT_BYTES_MAX`] is cut (at a
/// character boundary).
pub fn encode_refusal(refusal: &Refusal, cluster: u128, out: &mut BytesMut) {
    let header = Header {
        cluster,
        command: Command::Refusal as u8,
        code: refusal.code as u8,
        version: refusal.version,
        ..Header::default()
    };
    let mut end = refusal.reason.len().min(REFUSAL_TEXT_BYTES_MAX);
    while !refusal.reason.is_char_boundary(end) {
        end -= 1;
    }
    let text = &refusal.reason.as_bytes()[..end];
    let start = begin(out, text.len());
    out.put_slice(text);
    finish(out, start, header);
}

/// Appends a request for a replica's counters.
pub fn encode_stats_request(cluster: u128, out: &mut BytesMut) {
    let header = Header {
        cluster,
        command: Command::StatsRequest as u8,
        ..Header::default()
    };
    let start = begin(out, 0);
    finish(out, start, header);
}

/// Appends a replica's counters, as text.
pub fn encode_stats_reply(text: &[u8], cluster: u128, out: &mut BytesMut) {
    let header = Header {
        cluster,
        command: Command::StatsReply as u8,
        ..Header::default()
    };
    let start = begin(out, text.len());
    out.put_slice(text);
    finish(out, start, header);
}

/// The bytes [`encode`] appends for `message`: for budgets and buffer sizing.
pub fn frame_bytes(message: &Message) -> usize {
    HEADER_BYTES + body_bytes(&message.body)
}

/// Reserves the whole frame once and writes a zeroed header to fill in at the end.
/// Returns where the frame starts in `out`.
pub(super) fn begin(out: &mut BytesMut, body_bytes: usize) -> usize {
    let size = HEADER_BYTES + body_bytes;
    assert!(
        u32::try_from(size).is_ok(),
        "frame of {size} bytes does not fit the u32 size field"
    );
    out.reserve(size);
    let start = out.len();
    out.put_bytes(0, HEADER_BYTES);
    start
}

/// Seals the frame that starts at `start`: size, body checksum over the body as written,
/// then the header checksum over the header as written.
pub(super) fn finish(out: &mut BytesMut, start: usize, mut header: Header) {
    let size = out.len() - start;
    header.size = u32::try_from(size).expect("checked in begin");
    header.checksum_body = crc32c::crc32c(&out[start + HEADER_BYTES..]);
    let bytes: &mut [u8; HEADER_BYTES] = (&mut out[start..start + HEADER_BYTES])
        .try_into()
        .expect("header width");
    header.write_sealed(bytes);
}

/// Sets the command and the header fields each message keeps there (the table in the
/// module docs). Everything not set stays zero.
fn fill_header(body: &Body, header: &mut Header) {
    let command = match body {
        Body::Request(request) => {
            header.code = request.operation as u8;
            header.client = request.client;
            header.session = request.session;
            header.request = request.request;
            Command::Request
        }
        Body::Reply(reply) => {
            header.code = reply.status as u8;
            header.client = reply.client;
            header.session = reply.session;
            header.request = reply.request;
            header.op = reply.op;
            Command::Reply
        }
        Body::Prepare(prepare) => {
            header.op_first = prepare.op_first;
            header.commit = prepare.commit;
            header.op = prepare.actives_commit;
            header.nonce = prepare.stamp;
            Command::Prepare
        }
        Body::PrepareOk(prepare_ok) => {
            header.op = prepare_ok.op;
            header.commit = prepare_ok.commit;
            header.nonce = prepare_ok.stamp;
            Command::PrepareOk
        }
        Body::Commit(commit) => {
            header.commit = commit.commit;
            header.op = commit.actives_commit;
            header.nonce = commit.stamp;
            Command::Commit
        }
        Body::StartViewChange(svc) => {
            header.last_normal_view = svc.sender_view;
            Command::StartViewChange
        }
        Body::DoViewChange(dvc) => {
            header.last_normal_view = dvc.last_normal_view;
            header.op = dvc.op;
            header.commit = dvc.commit;
            header.nonce = dvc.actives_commit;
            Command::DoViewChange
        }
        Body::StartView(start_view) => {
            header.op = start_view.op;
            header.commit = start_view.commit;
            header.op_first = start_view.op_first;
            Command::StartView
        }
        Body::Recovery(recovery) => {
            header.nonce = recovery.nonce;
            Command::Recovery
        }
        Body::RecoveryResponse(response) => {
            header.code = u8::from(response.empty) | u8::from(response.normal) << 1;
            header.nonce = response.nonce;
            header.op = response.op;
            header.commit = response.commit;
            header.op_first = response.epoch_start;
            Command::RecoveryResponse
        }
        Body::GetState(get_state) => {
            header.op = get_state.op;
            header.nonce = get_state.learner.map_or(0, |learner| learner + 1);
            Command::GetState
        }
        Body::NewState(new_state) => {
            header.code =
                u8::from(new_state.checkpoint.is_some()) | (u8::from(new_state.vouches) << 1);
            header.nonce = new_state.sender;
            header.commit = new_state.commit;
            header.op = new_state.op;
            header.op_first = new_state.op_first;
            Command::NewState
        }
        Body::StartEpoch(start_epoch) => {
            header.op = start_epoch.op;
            header.nonce = start_epoch.sender;
            Command::StartEpoch
        }
        Body::EpochStarted => Command::EpochStarted,
        Body::GetCheckpoint(get) => {
            header.op = get.op;
            header.nonce = get.asker;
            header.code = match get.part {
                CheckpointRequest::Manifest { .. } => 0,
                CheckpointRequest::Pages(_) => 1,
            };
            Command::GetCheckpoint
        }
        Body::CheckpointPart(part) => {
            header.op = part.op;
            header.nonce = part.responder;
            header.code = match part.content {
                CheckpointContent::Manifest { .. } => 0,
                CheckpointContent::Pages(_) => 1,
                CheckpointContent::Unavailable => 2,
            };
            Command::CheckpointPart
        }
    };
    header.command = command as u8;
}

/// The bytes [`write_body`] writes for `body`.
fn body_bytes(body: &Body) -> usize {
    match body {
        Body::Request(request) => request.body.len(),
        Body::Reply(reply) => reply.result.len(),
        Body::Prepare(prepare) => entries_bytes(&prepare.entries),
        Body::DoViewChange(dvc) => entries_bytes(&dvc.entries),
        Body::StartView(start_view) => entries_bytes(&start_view.entries),
        Body::NewState(new_state) => {
            new_state.checkpoint.map_or(0, |_| CHECKPOINT_ID_BYTES)
                + entries_bytes(&new_state.entries)
        }
        Body::GetCheckpoint(get) => {
            DIGEST_BYTES
                + match &get.part {
                    CheckpointRequest::Manifest { .. } => 1 + 4,
                    CheckpointRequest::Pages(indexes) => 4 + 4 * indexes.len(),
                }
        }
        Body::CheckpointPart(part) => {
            DIGEST_BYTES
                + match &part.content {
                    CheckpointContent::Manifest { digests, proof, .. } => {
                        1 + 4 + 4 + DIGEST_BYTES * digests.len() + 4 + DIGEST_BYTES * proof.len()
                    }
                    CheckpointContent::Pages(pages) => {
                        4 + pages.iter().map(|(_, page)| 8 + page.len()).sum::<usize>()
                    }
                    CheckpointContent::Unavailable => 0,
                }
        }
        Body::StartEpoch(start_epoch) => start_epoch.configuration.encoded_len(),
        Body::EpochStarted => 0,
        Body::PrepareOk(_)
        | Body::Commit(_)
        | Body::StartViewChange(_)
        | Body::Recovery(_)
        | Body::RecoveryResponse(_)
        | Body::GetState(_) => 0,
    }
}

fn entries_bytes(entries: &[Entry]) -> usize {
    ENTRIES_COUNT_BYTES + entries.iter().map(Entry::size_bytes).sum::<usize>()
}

/// Writes the body: the payload bytes, or a (checkpoint and) entry list.
fn write_body(body: &Body, out: &mut BytesMut) {
    match body {
        Body::Request(request) => out.put_slice(&request.body),
        Body::Reply(reply) => out.put_slice(&reply.result),
        Body::Prepare(prepare) => write_entries(&prepare.entries, out),
        Body::DoViewChange(dvc) => write_entries(&dvc.entries, out),
        Body::StartView(start_view) => write_entries(&start_view.entries, out),
        Body::NewState(new_state) => {
            if let Some(checkpoint) = &new_state.checkpoint {
                write_checkpoint_id(checkpoint, out);
            }
            write_entries(&new_state.entries, out);
        }
        Body::GetCheckpoint(get) => {
            out.put_slice(&get.root.0);
            match &get.part {
                CheckpointRequest::Manifest { level, start } => {
                    out.put_u8(*level);
                    out.put_u32_le(*start);
                }
                CheckpointRequest::Pages(indexes) => {
                    out.put_u32_le(len_u32(indexes.len()));
                    indexes.iter().for_each(|&index| out.put_u32_le(index));
                }
            }
        }
        Body::CheckpointPart(part) => {
            out.put_slice(&part.root.0);
            match &part.content {
                CheckpointContent::Manifest {
                    level,
                    start,
                    digests,
                    proof,
                } => {
                    out.put_u8(*level);
                    out.put_u32_le(*start);
                    write_digests(digests, out);
                    write_digests(proof, out);
                }
                CheckpointContent::Pages(pages) => {
                    out.put_u32_le(len_u32(pages.len()));
                    for (index, page) in pages {
                        out.put_slice(&page_fields(*index, page));
                        out.put_slice(page);
                    }
                }
                CheckpointContent::Unavailable => {}
            }
        }
        Body::StartEpoch(start_epoch) => start_epoch.configuration.encode(out),
        Body::EpochStarted => {}
        Body::PrepareOk(_)
        | Body::Commit(_)
        | Body::StartViewChange(_)
        | Body::Recovery(_)
        | Body::RecoveryResponse(_)
        | Body::GetState(_) => {}
    }
}

/// An entry list: a `u32` count, then per entry its `ENTRY_HEADER_BYTES` fixed fields in
/// `Entry`'s field order and its body.
fn write_entries(entries: &[Entry], out: &mut BytesMut) {
    out.put_u32_le(len_u32(entries.len()));
    for entry in entries {
        out.put_slice(&entry_header(entry));
        out.put_slice(&entry.body);
    }
}

/// Offsets of an entry's fixed fields, shared by the encoder and the decoder.
pub(crate) mod entry_at {
    pub const CLIENT: usize = 0;
    pub const SESSION: usize = 8;
    pub const REQUEST: usize = 16;
    pub const TIMESTAMP: usize = 20;
    pub const OPERATION: usize = 28;
    pub const BODY_BYTES: usize = 29;
}
// The fixed fields are exactly what `Entry::size_bytes` budgets for.
const _: () = assert!(entry_at::BODY_BYTES + 4 == ENTRY_HEADER_BYTES);

/// An entry's fixed fields, assembled on the stack so each entry costs two appends.
fn entry_header(entry: &Entry) -> [u8; ENTRY_HEADER_BYTES] {
    let mut fixed = [0u8; ENTRY_HEADER_BYTES];
    let mut put = |at: usize, bytes: &[u8]| fixed[at..at + bytes.len()].copy_from_slice(bytes);
    put(entry_at::CLIENT, &entry.client.to_le_bytes());
    put(entry_at::SESSION, &entry.session.to_le_bytes());
    put(entry_at::REQUEST, &entry.request.to_le_bytes());
    put(entry_at::TIMESTAMP, &entry.timestamp.to_le_bytes());
    put(entry_at::OPERATION, &[entry.operation as u8]);
    put(
        entry_at::BODY_BYTES,
        &len_u32(entry.body.len()).to_le_bytes(),
    );
    fixed
}

/// A checkpoint's name: op, timestamp, the two page counts, the root.
fn write_checkpoint_id(checkpoint: &CheckpointId, out: &mut BytesMut) {
    out.put_u64_le(checkpoint.op);
    out.put_u64_le(checkpoint.timestamp);
    out.put_u32_le(checkpoint.service_pages);
    out.put_u32_le(checkpoint.clients_pages);
    out.put_slice(&checkpoint.root.0);
}

/// A digest list: a `u32` count, then the digests.
fn write_digests(digests: &[Digest], out: &mut BytesMut) {
    out.put_u32_le(len_u32(digests.len()));
    digests.iter().for_each(|digest| out.put_slice(&digest.0));
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("length checked against the u32 frame size in begin")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CheckpointPart, CheckpointRequest, GetCheckpoint};

    fn part(content: CheckpointContent) -> Message {
        Message {
            epoch: 3,
            view: 7,
            replica: 1,
            body: Body::CheckpointPart(CheckpointPart {
                op: 4096,
                root: Digest([9; DIGEST_BYTES]),
                responder: 11,
                content,
            }),
        }
    }

    /// The segments are the frame `encode` writes, byte for byte, and the large pages
    /// among them are the message's own buffers.
    fn check(message: &Message) {
        let mut whole = BytesMut::new();
        encode(message, 5, &mut whole);
        let mut out = BytesMut::from(&b"before"[..]);
        let mut segments = Vec::new();
        let size = encode_segments(message, 5, &mut out, &mut segments);
        assert_eq!(size, whole.len());
        assert!(out.is_empty());
        let joined: Vec<u8> = segments.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(&joined[..6], b"before");
        assert_eq!(&joined[6..], &whole[..]);
        if let Body::CheckpointPart(CheckpointPart {
            content: CheckpointContent::Pages(pages),
            ..
        }) = &message.body
        {
            for (_, page) in pages
                .iter()
                .filter(|(_, p)| p.len() >= BY_REFERENCE_BYTES_MIN)
            {
                assert!(
                    segments.iter().any(|s| s.as_ptr() == page.as_ptr()),
                    "a large page travels by reference"
                );
            }
        }
        let decoded = crate::wire::decode(&mut BytesMut::from(&whole[..]), 5, u32::MAX);
        assert_eq!(
            decoded.unwrap(),
            Some(crate::wire::Frame::Message(message.clone()))
        );
    }

    #[test]
    fn segments_are_the_frame() {
        let page = |len: usize, fill: u8| Bytes::from(vec![fill; len]);
        check(&part(CheckpointContent::Pages(vec![
            (0, page(4096, 1)),
            (2, page(17, 2)),
            (3, page(0, 3)),
            (9, page(511, 4)),
            (10, page(512, 5)),
        ])));
        check(&part(CheckpointContent::Pages(vec![(5, page(4096, 6))])));
        check(&part(CheckpointContent::Pages(Vec::new())));
        check(&part(CheckpointContent::Unavailable));
        check(&Message {
            epoch: 0,
            view: 1,
            replica: 0,
            body: Body::GetCheckpoint(GetCheckpoint {
                op: 1,
                root: Digest([1; DIGEST_BYTES]),
                asker: 2,
                part: CheckpointRequest::Pages(vec![1, 2, 3]),
            }),
        });
    }
}
