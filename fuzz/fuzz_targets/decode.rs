//! Fuzz `vsr::wire::decode`, the validation gate.
//!
//! The first input byte picks a mode; the rest is the byte stream a peer sent.
//! - Even: the stream as is. Exercises the header checks; random bytes rarely pass the
//!   header checksum, so this mode mostly proves the gate holds.
//! - Odd: the first frame's cluster is set to ours and both its checksums are recomputed
//!   before decoding, so the fuzzer reaches the header-field checks and the body parser
//!   behind them. With bit 1 set too, its size is set to the whole stream's length.
//!
//! Checked: no panic, `Ok(None)` consumes nothing, and every frame that decodes re-encodes
//! to exactly the bytes it was decoded from (one encoding per frame); a batch frame
//! (`Requests`, `Replies`) that decodes yields exactly its count of messages of its kind.
//! Reads (paper 6.3.2, and lease reads, 6.3.1): every decoded read request carries the op
//! its client has seen, and no decoded log entry is a read.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use vsr::protocol::{Body, Message, Operation};
use vsr::wire::{self, Frame, Header, HEADER_BYTES};

const CLUSTER: u128 = 0x0123_4567_89ab_cdef;
const MESSAGE_BYTES_MAX: u32 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let mut bytes = stream.to_vec();
    if mode & 1 == 1 {
        reseal(&mut bytes, mode & 2 == 2);
    }
    let mut buf = BytesMut::from(&bytes[..]);
    loop {
        let before = buf.len();
        let offset = bytes.len() - before;
        match wire::decode(&mut buf, CLUSTER, MESSAGE_BYTES_MAX) {
            Ok(Some(frame)) => {
                let consumed = before - buf.len();
                let mut out = BytesMut::new();
                encode(&frame, &mut out);
                assert_eq!(&out[..], &bytes[offset..offset + consumed], "{frame:?}");
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) must not consume");
                assert_eq!(wire::is_partial(&buf), before > 0);
                break;
            }
            Err(_) => break,
        }
    }
});

/// Makes the first frame's cluster ours and its checksums valid for whatever its header and
/// body say, so the decoder's later checks are reachable.
fn reseal(bytes: &mut [u8], whole_stream: bool) {
    let Some(header_bytes) = bytes.first_chunk::<HEADER_BYTES>() else {
        return;
    };
    let mut header = Header::read(header_bytes);
    header.cluster = CLUSTER;
    if whole_stream {
        header.size = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    }
    let body_end = (header.size as usize).clamp(HEADER_BYTES, bytes.len());
    header.checksum_body = crc32c::crc32c(&bytes[HEADER_BYTES..body_end]);
    let header_bytes = bytes
        .first_chunk_mut::<HEADER_BYTES>()
        .expect("checked above");
    header.write_sealed(header_bytes);
}

fn encode(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Hello(hello) => wire::encode_hello(hello, out),
        Frame::Welcome(welcome) => wire::encode_welcome(welcome, CLUSTER, out),
        Frame::Proof(mac) => wire::encode_proof(mac, CLUSTER, out),
        Frame::Refusal(refusal) => wire::encode_refusal(refusal, CLUSTER, out),
        Frame::Message(message) => {
            check_reads(message);
            wire::encode(message, CLUSTER, out)
        }
        Frame::StatsRequest => wire::encode_stats_request(CLUSTER, out),
        Frame::StatsReply(text) => wire::encode_stats_reply(text, CLUSTER, out),
        Frame::Batch(batch) => {
            wire::encode_batch(batch, CLUSTER, out);
            // Past the gate a batch is read without re-checking: it must yield exactly its
            // count of messages, each a request or a reply as its kind says.
            let kind = batch.kind();
            let count = batch.len();
            let messages: Vec<_> = batch.clone().into_iter().collect();
            assert_eq!(messages.len(), count);
            assert!(messages
                .iter()
                .all(|message| wire::BatchKind::of(message) == Some(kind)));
            messages.iter().for_each(check_reads);
        }
    }
}

/// What the gate promises about reads: a read request holds its seen op; entries (in
/// Prepare, DoViewChange, StartView, NewState) are never reads.
fn check_reads(message: &Message) {
    let entries = match &message.body {
        Body::Request(request) => {
            if matches!(request.operation, Operation::Read | Operation::LeaseRead) {
                assert!(request.read_seen().is_some(), "{request:?}");
            }
            return;
        }
        Body::Prepare(prepare) => &prepare.entries,
        Body::DoViewChange(dvc) => &dvc.entries,
        Body::StartView(start_view) => &start_view.entries,
        Body::NewState(new_state) => &new_state.entries,
        _ => return,
    };
    assert!(entries.iter().all(|entry| entry.operation.is_ordered()));
}
