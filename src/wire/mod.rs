//! The wire format: how every [`Message`](crate::protocol::Message) travels between replicas
//! and clients over TCP, and the single validation gate through which untrusted bytes
//! become messages.
//!
//! A connection carries a stream of frames. A frame is a fixed [`HEADER_BYTES`]-byte header,
//! then a body of `size - HEADER_BYTES` bytes. All integers are little-endian.
//!
//! # Header
//!
//! | offset | bytes | field              | meaning                                             |
//! |-------:|------:|--------------------|-----------------------------------------------------|
//! |      0 |     4 | `checksum`         | crc32c of header bytes 4..96                        |
//! |      4 |     4 | `checksum_body`    | crc32c of the body                                  |
//! |      8 |     4 | `size`             | frame bytes, header included                        |
//! |     12 |     4 | `epoch`            | sender's epoch (paper 7)                            |
//! |     16 |    16 | `cluster`          | cluster id; other clusters' frames are rejected     |
//! |     32 |     4 | `view`             | sender's view (paper 4)                             |
//! |     36 |     1 | `replica`          | sending replica (0 from clients)                    |
//! |     37 |     1 | `command`          | a [`Command`]                                       |
//! |     38 |     1 | `code`             | per command: operation, status, flag or peer kind   |
//! |     39 |     1 | `version`          | the sender's wire version ([`VERSION`])             |
//! |     40 |     8 | `op`               | an op number                                        |
//! |     48 |     8 | `commit`           | a commit number                                     |
//! |     56 |     8 | `op_first`         | op number of the body's first entry                 |
//! |     64 |     8 | `client`           | a client id                                         |
//! |     72 |     8 | `session`          | a client session                                    |
//! |     80 |     8 | `nonce`            | a recovery nonce (paper 4.3), or a lease stamp (6.3.1) |
//! |     88 |     4 | `request`          | a client request number                             |
//! |     92 |     4 | `last_normal_view` | `DoViewChange`'s last normal view; `StartViewChange`'s sender view |
//!
//! The layout is `Header`'s `#[repr(C)]` layout; `header.rs` pins every offset and the total
//! size with compile-time assertions.
//!
//! # Versions
//!
//! Every frame carries its sender's wire version in byte 39, and the decoder reads nothing
//! past the header checksum of a frame of another version ([`DecodeError::OtherVersion`]):
//! its layout may differ. The parts every version keeps are the header's checksum, its
//! `size`, `cluster`, `command` and `version` fields at their offsets, and the `Refusal`
//! frame (command 37: a [`RefusalCode`] in `code`, the reason as UTF-8 text in the body),
//! which is read whatever its version. So a node that opens a connection with another
//! version's `Hello` is answered with a refusal (`VersionDiffers`) that it can print, naming
//! both versions, instead of a closed socket. Binaries from before versions sent 0 in that
//! byte and refuse every versioned frame as malformed.
//!
//! # Which command uses which field
//!
//! Every field a command does not use must be zero (the decoder rejects the frame
//! otherwise), so a frame has exactly one encoding. Protocol messages all use `epoch`,
//! `view` and `replica`; connection frames (`Hello`, `Stats*`) do not.
//!
//! | command            | `code`               | numeric fields                              | body                      |
//! |--------------------|----------------------|---------------------------------------------|---------------------------|
//! | `Request`          | `Operation`          | client, session, request                    | the operation's bytes (a read: seen op, query) |
//! | `Reply`            | `ReplyStatus`        | client, session, request, op                | the result's bytes        |
//! | `Prepare`          |                      | op_first, commit, op (= actives' commit), nonce (= lease stamp) | entries (at least one)    |
//! | `PrepareOk`        |                      | op, commit, nonce (= lease stamp echoed)    |                           |
//! | `Commit`           |                      | commit, op (= actives' commit), nonce (= lease stamp) |                 |
//! | `StartViewChange`  |                      | last_normal_view (= sender view)          |                           |
//! | `DoViewChange`     |                      | last_normal_view, op, commit, nonce (= actives' commit) | entries       |
//! | `StartView`        |                      | op, commit, op_first                        | entries                   |
//! | `Recovery`         |                      | nonce                                       |                           |
//! | `RecoveryResponse` | empty 1, normal 2    | nonce, op, commit, op_first (= epoch start) |                           |
//! | `GetState`         |                      | op, nonce (a learner's identity + 1, or 0)  |                           |
//! | `NewState`         | checkpoint 1, vouches 2 | op, commit, op_first, nonce (= sender)      | checkpoint id? entries    |
//! | `GetCheckpoint`    | 0 manifest, 1 pages  | op, nonce (= the asker's identity)          | root, run or page indexes |
//! | `CheckpointPart`   | 0 manifest, 1 pages, 2 unavailable | op, nonce (= the responder) | root, run+proof or pages |
//! | `Requests`         |                      |                                             | a batch of requests       |
//! | `Replies`          |                      |                                             | a batch of replies        |
//! | `StartEpoch`       |                      | op, nonce (= the sender's identity)         | the configuration         |
//! | `EpochStarted`     |                      |                                             |                           |
//! | `Hello`            | 1 replica, 2 client  | client (identity), epoch (of its members)   | terms (see `greeting`)    |
//! | `Welcome`          |                      | client (the replica's identity)             | nonce, mac (`greeting`)   |
//! | `StatsRequest`     |                      |                                             |                           |
//! | `StatsReply`       |                      |                                             | text                      |
//!
//! An entry list is a `u32` count, then per entry: client `u64`, session `u64`, request
//! `u32`, timestamp `u64`, operation `u8`, body length `u32` (these are
//! [`ENTRY_HEADER_BYTES`](crate::protocol::ENTRY_HEADER_BYTES)), then the body. A checkpoint
//! travels in parts (paper 5.1): a NewState names it by its id (op `u64`, timestamp `u64`,
//! service pages `u32`, client-table pages `u32`, the Merkle root: 32 bytes); a
//! GetCheckpoint body is the root, then a manifest run (level `u8`, start `u32`, aligned)
//! or a `u32` count of page indexes (`u32`, strictly increasing); a CheckpointPart body is
//! the root, then a run (level, start, a `u32` count of digests, at most `2^level`, and a
//! `u32` count of proof digests, at most 32), or a `u32` count of pages, each an index
//! (strictly increasing), a `u32` length and its bytes. Every count is checked against the
//! bytes present before it sizes an allocation. Pages are checked against their digests by
//! the replica that asked for them (it holds the manifest). Small messages (`PrepareOk`,
//! `Commit`, ...) are a header alone.
//!
//! Reads (paper 6.3): operation 4, `Query`, is a strict read, ordered and logged like
//! `Apply`. Operation 5, `Read`, is a read at any replica: its body is the op its client
//! has seen (`u64`), then the query, and the gate refuses a `Read` whose body is shorter
//! than 8 bytes (single or in a batch), and a `Read` in any entry list (a read is never
//! ordered). Its answers are replies with status 5, `Read` (`op`: the answering replica's
//! commit number; `request`: the read's own number), or 6, `Behind` (not answered: ask
//! another replica).
//!
//! `Requests` and `Replies` are batch frames (`batch.rs`): a `u32` count, then per request
//! client `u64`, session `u64`, request `u32`, operation `u8`, body length `u32` and the
//! body ([`REQUEST_RECORD_BYTES`] fixed), or per reply client, session, request, op `u64`,
//! status `u8`, result length `u32` and the result ([`REPLY_RECORD_BYTES`] fixed). They mean
//! exactly what their messages sent one frame each would mean, in order, and cost one
//! header and one body checksum for all of them. The client library sends its requests
//! this way; a replica answers a connection in batches once that connection sent one.
//!
//! # Why nothing is parsed before both checksums pass
//!
//! The header checksum comes first because the header decides how many bytes to wait for:
//! a corrupted `size` believed for a moment could make a replica buffer gigabytes, or
//! desynchronise the stream so every later frame is misread. Once the header is known good,
//! its size is bounded by `message_bytes_max` before a byte of body is buffered. The body
//! checksum is then verified over the whole body before parsing starts, so the body parser
//! only ever sees bytes exactly as their sender wrote them: a parse failure after that is a
//! bug or version skew on the other side ([`DecodeError::Malformed`]), never line noise, and
//! a half-parsed message built from corrupt bytes can never reach the protocol core.
//!
//! # Range checks
//!
//! Checksums prove that a frame is what its sender wrote, not that the sender is correct.
//! After parsing, `range.rs` refuses numbers no correct peer sends
//! ([`DecodeError::OutOfRange`], naming the field): views and epochs above [`VIEW_MAX`] and
//! [`EPOCH_MAX`], ops and commits above [`OP_MAX`] (so the core's `+ 1` never wraps), a
//! commit above the op of the same message, a `DoViewChange` with more entries than
//! `op - commit`, entries that extend past the message's op, a checkpoint above the commit,
//! a promised or last normal view above the message's view. Past this gate the core
//! asserts instead of re-checking (one validation gate).
//!
//! # Zero copy
//!
//! [`decode`] splits the frame off the connection's read buffer and freezes it; every entry
//! body, reply result and snapshot is a `Bytes` slice of that frame. [`encode`] appends to a
//! caller-owned `BytesMut` with a single `reserve`, copying each payload once;
//! [`encode_segments`] leaves a checkpoint part's pages where they are and hands them
//! over by reference, as segments between the bytes it writes, for one vectored write:
//! the same frame, with no page copied.
//!
//! # End of stream
//!
//! `decode` returns `Ok(None)` until a whole frame is buffered. When the peer closes the
//! connection, [`is_partial`] on the leftover bytes tells "closed between frames" from
//! "vanished mid-frame".

mod batch;
mod decode;
mod encode;
mod error;
mod frame;
mod greeting;
mod header;
mod range;

pub use batch::{
    batch_frame_bytes, encode_batch, record_bytes, Batch, BatchKind, BatchMessages, BatchWriter,
    BATCH_COUNT_BYTES, REPLY_RECORD_BYTES, REQUEST_RECORD_BYTES,
};
pub use decode::{decode, is_partial};
pub use encode::{
    encode, encode_hello, encode_proof, encode_refusal, encode_segments, encode_stats_reply,
    encode_stats_request, encode_welcome, frame_bytes,
};
pub use error::DecodeError;
pub use frame::{Frame, Peer};
pub use greeting::{
    Hello, Limits, Mac, Nonce, Refusal, RefusalCode, Terms, Welcome, HELLO_BODY_BYTES_MAX,
    MAC_BYTES, MEMBERS_MAX, NONCE_BYTES, REFUSAL_TEXT_BYTES_MAX,
};
pub use header::{Command, Header, HEADER_BYTES, VERSION};
pub use range::{EPOCH_MAX, OP_MAX, VIEW_MAX};
