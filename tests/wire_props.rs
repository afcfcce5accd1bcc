//! Properties of the wire format: every message round-trips, every frame has exactly one
//! encoding, corruption and truncation are always rejected (never decoded into another
//! message), and the gate's checks happen in the documented order.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use std::net::SocketAddr;
use vsr::protocol::{
    Body, CheckpointContent, CheckpointId, CheckpointPart, CheckpointRequest, Commit,
    Configuration, DoViewChange, Entry, GetCheckpoint, GetState, Message, NewState, Operation,
    Prepare, PrepareOk, Recovery, RecoveryResponse, Reply, ReplyStatus, Request, StartEpoch,
    StartView, StartViewChange,
};
use vsr::service::{Digest, DIGEST_BYTES};
use vsr::wire::{
    self, BatchWriter, DecodeError, Frame, Header, Hello, Limits, Peer, Refusal, RefusalCode,
    Terms, Welcome, EPOCH_MAX, HEADER_BYTES, OP_MAX, VIEW_MAX,
};

const CLUSTER: u128 = 0x5eed_0000_0000_0000_0000_0000_0000_0001;
const MAX: u32 = 1 << 20;

// ---------------------------------------------------------------------------------------
// Strategies.

fn payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

/// The operations a log entry may hold (every one but `Read`).
fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Register),
        Just(Operation::Apply),
        Just(Operation::Reconfigure),
        Just(Operation::Query)
    ]
}

/// The operations a request may ask for: a read's body starts with the op it has seen.
fn request_operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        operation(),
        Just(Operation::Read),
        Just(Operation::LeaseRead)
    ]
}

/// A request's body for `operation` (a read's: the seen op, then the query).
fn request_body(operation: Operation, seen: u64, payload: Bytes) -> Bytes {
    match operation {
        Operation::Read | Operation::LeaseRead => Request::read_body(seen, &payload),
        _ => payload,
    }
}

fn status() -> impl Strategy<Value = ReplyStatus> {
    prop_oneof![
        Just(ReplyStatus::Ok),
        Just(ReplyStatus::Evicted),
        Just(ReplyStatus::Rejected),
        Just(ReplyStatus::NewEpoch),
        Just(ReplyStatus::Read),
        Just(ReplyStatus::Behind)
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        operation(),
        payload(),
    )
        .prop_map(
            |(client, session, request, timestamp, operation, body)| Entry {
                client,
                session,
                request,
                timestamp,
                operation,
                body,
            },
        )
}

fn entries(min: usize) -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec(entry(), min..8)
}

/// Op numbers in the gate's range, far enough below `OP_MAX` that any entry range fits.
fn op() -> impl Strategy<Value = u64> {
    prop_oneof![Just(1u64), 1..OP_MAX - 64]
}

/// Any number a correct peer may send as an op, commit or session.
fn any_op() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(OP_MAX), 0..=OP_MAX]
}

fn view() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(VIEW_MAX), 0..=VIEW_MAX]
}

/// Up to four pages, empty ones included.
fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; DIGEST_BYTES]>().prop_map(Digest)
}

/// A checkpoint's name, at most `op_max`, with at most 2^26 pages (the gate's bound).
fn checkpoint_id(op_max: u64) -> impl Strategy<Value = CheckpointId> {
    (
        0..=op_max,
        any::<u64>(),
        0..1u32 << 25,
        0..1u32 << 25,
        digest(),
    )
        .prop_map(
            |(op, timestamp, service_pages, clients_pages, root)| CheckpointId {
                op,
                timestamp,
                service_pages,
                clients_pages,
                root,
            },
        )
}

/// Strictly increasing page indexes.
fn page_indexes() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::btree_set(any::<u32>(), 0..8).prop_map(|set| set.into_iter().collect())
}

/// A manifest run's level and an aligned start.
fn run() -> impl Strategy<Value = (u8, u32)> {
    (0..32u8, any::<u32>()).prop_map(|(level, start)| (level, start >> level << level))
}

fn get_checkpoint() -> impl Strategy<Value = Body> {
    let part = prop_oneof![
        run().prop_map(|(level, start)| CheckpointRequest::Manifest { level, start }),
        page_indexes().prop_map(CheckpointRequest::Pages),
    ];
    (any_op(), digest(), any::<u64>(), part).prop_map(|(op, root, asker, part)| {
        Body::GetCheckpoint(GetCheckpoint {
            op,
            root,
            asker,
            part,
        })
    })
}

fn checkpoint_part() -> impl Strategy<Value = Body> {
    let manifest = (
        run(),
        prop::collection::vec(digest(), 0..5),
        prop::collection::vec(digest(), 0..5),
    )
        .prop_map(|((level, start), mut digests, proof)| {
            digests.truncate(1 << level.min(8));
            CheckpointContent::Manifest {
                level,
                start,
                digests,
                proof,
            }
        });
    let pages =
        (page_indexes(), prop::collection::vec(payload(), 8)).prop_map(|(indexes, payloads)| {
            CheckpointContent::Pages(indexes.into_iter().zip(payloads).collect())
        });
    let content = prop_oneof![manifest, pages, Just(CheckpointContent::Unavailable)];
    (any_op(), digest(), any::<u64>(), content).prop_map(|(op, root, responder, content)| {
        Body::CheckpointPart(CheckpointPart {
            op,
            root,
            responder,
            content,
        })
    })
}

/// A body whose numbers are all in the gate's range and consistent with each other and
/// with the envelope's `view`.
fn body(view: u32) -> impl Strategy<Value = Body> {
    prop_oneof![
        (
            (any::<u64>(), any_op(), any::<u32>()),
            request_operation(),
            any_op(),
            payload()
        )
            .prop_map(|((client, session, request), operation, seen, payload)| {
                Body::Request(Request {
                    client,
                    session,
                    request,
                    operation,
                    body: request_body(operation, seen, payload),
                })
            }),
        (
            any::<u64>(),
            any_op(),
            any::<u32>(),
            any_op(),
            status(),
            payload()
        )
            .prop_map(
                |(client, session, request, op, status, result)| Body::Reply(Reply {
                    client,
                    session,
                    request,
                    op,
                    status,
                    result
                })
            ),
        // The actives' commit at most the commit, as the gate requires.
        (op(), any_op(), any_op(), any::<u64>(), entries(1)).prop_map(
            |(op_first, a, b, stamp, entries)| {
                Body::Prepare(Prepare {
                    op_first,
                    commit: a.max(b),
                    actives_commit: a.min(b),
                    stamp,
                    entries,
                })
            }
        ),
        // A commit at most the op, as the gate requires.
        (any_op(), any_op(), any::<u64>()).prop_map(|(a, b, stamp)| Body::PrepareOk(PrepareOk {
            op: a.max(b),
            commit: a.min(b),
            stamp
        })),
        (any_op(), any_op(), any::<u64>()).prop_map(|(a, b, stamp)| Body::Commit(Commit {
            commit: a.max(b),
            actives_commit: a.min(b),
            stamp
        })),
        (0..=view).prop_map(|sender_view| Body::StartViewChange(StartViewChange { sender_view })),
        (0..=view, op(), 0..64u64, op(), entries(0)).prop_map(
            move |(last_normal_view, commit, extra, actives_commit, entries)| {
                // The entries follow the commit; the op may reach past them.
                let op = commit + entries.len() as u64 + extra;
                Body::DoViewChange(DoViewChange {
                    last_normal_view,
                    op,
                    commit,
                    actives_commit,
                    entries,
                })
            }
        ),
        (op(), 0..64u64, entries(0), any::<prop::sample::Index>()).prop_map(
            |(op_first, extra, entries, commit)| {
                let op = op_first + entries.len() as u64 + extra;
                Body::StartView(StartView {
                    op,
                    commit: commit.index(op as usize + 1) as u64,
                    op_first,
                    entries,
                })
            }
        ),
        any::<u64>().prop_map(|nonce| Body::Recovery(Recovery { nonce })),
        (
            any::<u64>(),
            any::<bool>(),
            any_op(),
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>()
        )
            .prop_map(|(nonce, empty, op, commit, start)| {
                let commit = commit.index(op.min(usize::MAX as u64 - 1) as usize + 1) as u64;
                Body::RecoveryResponse(RecoveryResponse {
                    nonce,
                    empty,
                    // Only a normal replica answers with state; an empty answer may
                    // come from either.
                    normal: !empty || op % 2 == 0,
                    op,
                    commit,
                    epoch_start: start.index(commit.min(usize::MAX as u64 - 1) as usize + 1) as u64,
                })
            }),
        (any_op(), prop::option::of(0..u64::MAX))
            .prop_map(|(op, learner)| Body::GetState(GetState { op, learner })),
        (op(), 0..64u64, entries(0), 0..64u64, any::<u64>())
            .prop_flat_map(|(op_first, extra, entries, below, sender)| {
                let op = op_first + entries.len() as u64 + extra;
                let commit = op.saturating_sub(below);
                (
                    prop::option::of(checkpoint_id(commit)),
                    Just((op_first, op, commit, entries, sender)),
                    any::<bool>(),
                )
            })
            .prop_map(
                |(checkpoint, (op_first, op, commit, entries, sender), vouches)| {
                    Body::NewState(NewState {
                        sender,
                        commit,
                        op,
                        vouches,
                        checkpoint,
                        op_first,
                        entries,
                    })
                }
            ),
        get_checkpoint(),
        checkpoint_part(),
    ]
}

/// A configuration of `epoch`: 3, 5 or 7 members with distinct identities from
/// `first_id` on, and addresses of any bytes.
fn configuration(epoch: u32) -> impl Strategy<Value = Configuration> {
    (
        prop_oneof![Just(3usize), Just(5), Just(7)].prop_flat_map(|count| {
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), count)
        }),
        0..1000u64,
    )
        .prop_map(move |(addresses, first_id)| {
            let mut bytes = BytesMut::new();
            bytes.extend_from_slice(&epoch.to_le_bytes());
            bytes.extend_from_slice(&(first_id + addresses.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&[addresses.len() as u8]);
            for (i, address) in addresses.iter().enumerate() {
                bytes.extend_from_slice(&(first_id + i as u64).to_le_bytes());
                bytes.extend_from_slice(&[address.len() as u8]);
                bytes.extend_from_slice(address);
            }
            Configuration::from_bytes(&bytes.freeze()).expect("a valid encoding")
        })
}

fn message() -> impl Strategy<Value = Message> {
    (0..=EPOCH_MAX, view(), any::<u8>()).prop_flat_map(|(epoch, view, replica)| {
        let start_epoch = (any::<u64>(), any_op(), configuration(epoch.max(1))).prop_map(
            |(sender, op, configuration)| {
                Body::StartEpoch(StartEpoch {
                    sender,
                    op,
                    configuration,
                })
            },
        );
        prop_oneof![
            14 => body(view).boxed(),
            1 => Just(Body::EpochStarted).boxed(),
            1 => start_epoch.boxed(),
        ]
        .prop_map(move |body| Message {
            // A StartEpoch names its epoch in the envelope too.
            epoch: match &body {
                Body::StartEpoch(start_epoch) => start_epoch.configuration.epoch(),
                _ => epoch,
            },
            view,
            replica,
            body,
        })
    })
}

/// One to eight requests, or replies, that share an envelope: what one batch frame holds.
fn batch_messages() -> impl Strategy<Value = Vec<Message>> {
    (0..=EPOCH_MAX, view(), any::<u8>(), any::<bool>()).prop_flat_map(
        |(epoch, view, replica, requests)| {
            let body = body(view).prop_filter("a request or a reply", move |body| {
                matches!(
                    (requests, body),
                    (true, Body::Request(_)) | (false, Body::Reply(_))
                )
            });
            prop::collection::vec(body, 1..8).prop_map(move |bodies| {
                bodies
                    .into_iter()
                    .map(|body| Message {
                        epoch,
                        view,
                        replica,
                        body,
                    })
                    .collect()
            })
        },
    )
}

/// `messages` in one batch frame, as written by the writer the runtime and client use.
fn batch_bytes(messages: &[Message], cluster: u128) -> BytesMut {
    let mut out = BytesMut::new();
    let (first, rest) = messages.split_first().expect("at least one");
    let mut writer = BatchWriter::begin(first, &mut out).expect("a request or a reply");
    for message in rest {
        assert!(writer.accepts(message, &out, usize::MAX));
        writer.push(message, &mut out);
    }
    assert_eq!(writer.len(), messages.len());
    writer.seal(cluster, &mut out);
    assert_eq!(out.len(), wire::batch_frame_bytes(messages));
    out
}

/// The decoded batch frame holding `messages`.
fn batch_of(messages: &[Message]) -> Frame {
    let mut bytes = batch_bytes(messages, CLUSTER);
    wire::decode(&mut bytes, CLUSTER, MAX)
        .expect("a written batch decodes")
        .expect("complete")
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        8 => message().prop_map(Frame::Message),
        3 => batch_messages().prop_map(|messages| batch_of(&messages)),
        2 => hello().prop_map(Frame::Hello),
        1 => (any::<u64>(), prop::option::of(any::<([u8; 32], [u8; 32])>()))
            .prop_map(|(replica, keyed)| Frame::Welcome(Welcome { replica, keyed })),
        1 => any::<[u8; 32]>().prop_map(Frame::Proof),
        1 => (refusal_code(), any::<u8>(), "[a-z ]{0,40}")
            .prop_map(|(code, version, reason)| {
                Frame::Refusal(Refusal {
                    code,
                    version,
                    reason,
                })
            }),
        1 => Just(Frame::StatsRequest),
        1 => payload().prop_map(Frame::StatsReply),
    ]
}

fn hello() -> impl Strategy<Value = Hello> {
    let peer = prop_oneof![
        any::<u64>().prop_map(Peer::Replica),
        any::<u64>().prop_map(Peer::Client),
    ];
    let member =
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port)));
    let limits = (
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()),
        (any::<u64>(), any::<u64>(), any::<u32>()),
    )
        .prop_map(
            |(
                (message_bytes_max, request_body_bytes_max, clients_max, checkpoint_interval_ops),
                (witnesses, lease_ticks, clock_drift_ppm),
            )| Limits {
                message_bytes_max,
                request_body_bytes_max,
                clients_max,
                checkpoint_interval_ops,
                witnesses,
                lease_ticks,
                clock_drift_ppm,
            },
        );
    (
        peer,
        prop::collection::vec(member, 0..6),
        prop::option::of(limits),
        prop::option::of(any::<[u8; 32]>()),
        any::<u32>(),
    )
        .prop_map(|(peer, members, limits, nonce, epoch)| Hello {
            peer,
            terms: Terms {
                cluster: CLUSTER,
                epoch,
                members,
                limits,
            },
            nonce,
        })
}

fn refusal_code() -> impl Strategy<Value = RefusalCode> {
    (1u8..=9).prop_map(|code| RefusalCode::from_u8(code).unwrap())
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn encode_frame(frame: &Frame, cluster: u128, out: &mut BytesMut) {
    match frame {
        // A hello carries its own cluster (the strategy's is CLUSTER).
        Frame::Hello(hello) if hello.terms.cluster == CLUSTER => {
            let mut hello = hello.clone();
            hello.terms.cluster = cluster;
            wire::encode_hello(&hello, out)
        }
        Frame::Hello(hello) => wire::encode_hello(hello, out),
        Frame::Welcome(welcome) => wire::encode_welcome(welcome, cluster, out),
        Frame::Proof(mac) => wire::encode_proof(mac, cluster, out),
        Frame::Refusal(refusal) => wire::encode_refusal(refusal, cluster, out),
        Frame::Message(message) => wire::encode(message, cluster, out),
        Frame::StatsRequest => wire::encode_stats_request(cluster, out),
        Frame::StatsReply(text) => wire::encode_stats_reply(text, cluster, out),
        Frame::Batch(batch) => wire::encode_batch(batch, cluster, out),
    }
}

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(frame, CLUSTER, &mut out);
    out.to_vec()
}

fn decode_all(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
    wire::decode(&mut BytesMut::from(bytes), CLUSTER, MAX)
}

/// The one round-trip check: encodes `frame`, decodes it back whole, and checks that the
/// frame was consumed exactly.
fn check_round_trip(frame: &Frame) {
    let bytes = encoded(frame);
    if let Frame::Message(message) = frame {
        assert_eq!(wire::frame_bytes(message), bytes.len());
    }
    let mut buf = BytesMut::from(&bytes[..]);
    let decoded = wire::decode(&mut buf, CLUSTER, MAX)
        .expect("valid frame")
        .expect("complete");
    assert_eq!(&decoded, frame);
    assert!(buf.is_empty());
    assert!(!wire::is_partial(&buf));
}

/// Rewrites a frame's header through `change`, then reseals both checksums: the result is a
/// frame whose checksums pass, so only the decoder's structural checks can reject it.
fn reseal(bytes: &mut [u8], change: impl FnOnce(&mut Header)) {
    let header_bytes: &mut [u8; HEADER_BYTES] = (&mut bytes[..HEADER_BYTES]).try_into().unwrap();
    let mut header = Header::read(header_bytes);
    change(&mut header);
    let body_end = bytes.len();
    header.checksum_body = crc32c::crc32c(&bytes[HEADER_BYTES..body_end]);
    let header_bytes: &mut [u8; HEADER_BYTES] = (&mut bytes[..HEADER_BYTES]).try_into().unwrap();
    header.write_sealed(header_bytes);
}

fn message_with(body: Body) -> Message {
    Message {
        epoch: 1,
        view: 2,
        replica: 1,
        body,
    }
}

fn entry_with(body: &'static [u8]) -> Entry {
    Entry {
        client: 7,
        session: 3,
        request: 9,
        timestamp: 1_700_000_000,
        operation: Operation::Apply,
        body: Bytes::from_static(body),
    }
}

/// 256 cases a property, from a fixed seed so that every run of the tests draws the same
/// cases (a flaky property would block landing); `PROPTEST_RNG_SEED=<n>` draws others,
/// for a sweep. Failures found either way go to `wire_props.proptest-regressions`.
fn config() -> ProptestConfig {
    let config = ProptestConfig::with_cases(256);
    if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
        return config;
    }
    ProptestConfig {
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7769_7265_0000_0001),
        ..config
    }
}

// ---------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_frame_round_trips(frame in frame()) {
        check_round_trip(&frame);
    }

    /// A batch carries exactly its messages, in order, with payloads sliced from the frame:
    /// what the receiver hands on is what the sender's messages were one by one.
    #[test]
    fn a_batch_yields_its_messages_in_order(messages in batch_messages()) {
        let Frame::Batch(batch) = batch_of(&messages) else {
            panic!("a batch frame decodes to a batch");
        };
        prop_assert_eq!(batch.len(), messages.len());
        let decoded: Vec<Message> = batch.into_iter().collect();
        prop_assert_eq!(decoded, messages);
    }

    /// A batch's replies read out bare (what the client does) are its messages' replies,
    /// in order, each with its batch's view; a batch of requests has none.
    #[test]
    fn a_batch_yields_its_bare_replies_in_order(messages in batch_messages()) {
        let Frame::Batch(batch) = batch_of(&messages) else {
            panic!("a batch frame decodes to a batch");
        };
        prop_assert_eq!(batch.view(), messages[0].view);
        let expected: Vec<Reply> = messages
            .iter()
            .filter_map(|message| match &message.body {
                Body::Reply(reply) => Some(reply.clone()),
                _ => None,
            })
            .collect();
        prop_assert_eq!(batch.replies().len(), expected.len());
        let replies: Vec<Reply> = batch.replies().collect();
        prop_assert_eq!(replies, expected);
    }

    /// Reading a batch part-way and keeping the rest (the runtime's back-pressure) loses
    /// nothing and repeats nothing.
    #[test]
    fn a_batch_read_part_way_resumes_where_it_stopped(
        messages in batch_messages(),
        stop in any::<prop::sample::Index>(),
    ) {
        let Frame::Batch(batch) = batch_of(&messages) else {
            panic!("a batch frame decodes to a batch");
        };
        let stop = stop.index(messages.len() + 1);
        let mut reader = batch.into_iter();
        let mut decoded: Vec<Message> = reader.by_ref().take(stop).collect();
        prop_assert_eq!(reader.remaining(), messages.len() - stop);
        decoded.extend(reader);
        prop_assert_eq!(decoded, messages);
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        max in any::<u32>(),
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = wire::decode(&mut buf, CLUSTER, max) {}
    }

    /// Any byte of a valid frame set to any value, with both checksums recomputed so the
    /// body parser sees it: no panic, and whatever decodes has exactly these bytes as its
    /// encoding (one encoding per frame).
    #[test]
    fn resealed_mutations_decode_canonically_or_fail(
        frame in frame(),
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut bytes = encoded(&frame);
        let position = position.index(bytes.len());
        bytes[position] = value;
        reseal(&mut bytes, |_| {});
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(decoded)) = wire::decode(&mut buf, CLUSTER, MAX) {
            let consumed = bytes.len() - buf.len();
            prop_assert_eq!(encoded(&decoded), &bytes[..consumed]);
        }
    }

    #[test]
    fn any_bit_flip_is_rejected(frame in frame(), bit in any::<prop::sample::Index>()) {
        let mut bytes = encoded(&frame);
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let result = decode_all(&bytes);
        // crc32c detects every single-bit error, so never `Ok(Some(_))` of any frame.
        prop_assert!(result.is_err(), "bit {} flipped, got {:?}", bit, result);
    }

    /// A frame cut short and followed by another frame: the second frame's bytes fill in
    /// the first one's body or header. That never decodes into a valid frame, unless the
    /// bytes that fill in happen to be the ones cut off (then it is the first frame,
    /// intact: its encoding is what the stream starts with).
    #[test]
    fn truncated_frame_followed_by_another_never_decodes(
        first in frame(),
        second in frame(),
        cut in any::<prop::sample::Index>(),
    ) {
        let first_bytes = encoded(&first);
        let cut = cut.index(first_bytes.len());
        let mut bytes = first_bytes[..cut].to_vec();
        bytes.extend_from_slice(&encoded(&second));
        let result = decode_all(&bytes);
        // The only frame that may come out is `second`, intact, when `cut == 0`, or
        // `first` when the second frame's leading bytes equal those cut off.
        match result {
            Ok(Some(decoded)) => {
                let second_intact = cut == 0 && decoded == second;
                let first_restored = decoded == first && bytes.starts_with(&first_bytes);
                prop_assert!(second_intact || first_restored, "{:?}", decoded);
            }
            Ok(None) | Err(_) => prop_assert!(cut > 0),
        }
    }

    #[test]
    fn partial_frames_wait_at_every_split_point(frame in frame()) {
        let bytes = encoded(&frame);
        for split in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..split]);
            prop_assert_eq!(wire::decode(&mut buf, CLUSTER, MAX), Ok(None));
            prop_assert_eq!(buf.len(), split, "nothing consumed while waiting");
            prop_assert_eq!(wire::is_partial(&buf), split > 0);
            buf.extend_from_slice(&bytes[split..]);
            prop_assert_eq!(wire::decode(&mut buf, CLUSTER, MAX), Ok(Some(frame.clone())));
        }
    }

    #[test]
    fn frames_back_to_back_decode_in_order(frames in prop::collection::vec(frame(), 0..8)) {
        let mut buf = BytesMut::new();
        for frame in &frames {
            encode_frame(frame, CLUSTER, &mut buf);
        }
        for frame in &frames {
            prop_assert_eq!(wire::decode(&mut buf, CLUSTER, MAX), Ok(Some(frame.clone())));
        }
        prop_assert_eq!(wire::decode(&mut buf, CLUSTER, MAX), Ok(None));
        prop_assert!(!wire::is_partial(&buf));
    }

    /// Another cluster's frames are refused, except its hello: the handshake compares the
    /// hello's cluster and answers in it, naming both ids.
    #[test]
    fn wrong_cluster_is_rejected(frame in frame(), cluster in any::<u128>()) {
        prop_assume!(cluster != CLUSTER);
        let mut buf = BytesMut::new();
        encode_frame(&frame, cluster, &mut buf);
        let result = wire::decode(&mut buf, CLUSTER, MAX);
        match frame {
            Frame::Hello(mut hello) => {
                hello.terms.cluster = cluster;
                prop_assert_eq!(result, Ok(Some(Frame::Hello(hello))));
            }
            _ => prop_assert_eq!(
                result,
                Err(DecodeError::WrongCluster { expected: CLUSTER, got: cluster })
            ),
        }
    }

    /// Only the header has arrived: a frame over the limit is refused before its body is
    /// buffered.
    #[test]
    fn oversize_is_rejected_from_the_header_alone(frame in frame()) {
        let bytes = encoded(&frame);
        let size = u32::try_from(bytes.len()).unwrap();
        let mut buf = BytesMut::from(&bytes[..HEADER_BYTES]);
        prop_assert_eq!(
            wire::decode(&mut buf, CLUSTER, size - 1),
            Err(DecodeError::TooLarge { size, max: size - 1 })
        );
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(wire::decode(&mut buf, CLUSTER, size), Ok(Some(frame)));
    }
}

// ---------------------------------------------------------------------------------------
// Examples: each variant the properties might under-sample, and each rejection reason.

#[test]
fn reply_round_trips_with_each_status() {
    for status in [
        ReplyStatus::Ok,
        ReplyStatus::Evicted,
        ReplyStatus::Rejected,
        ReplyStatus::Read,
        ReplyStatus::Behind,
    ] {
        check_round_trip(&Frame::Message(message_with(Body::Reply(Reply {
            client: u64::MAX,
            session: 12,
            request: u32::MAX,
            op: 99,
            status,
            result: Bytes::from_static(b"value 42"),
        }))));
    }
}

#[test]
fn new_state_round_trips_with_and_without_checkpoint() {
    let checkpoint = CheckpointId {
        op: 100,
        timestamp: 5,
        service_pages: 3,
        clients_pages: 1,
        root: Digest([9; DIGEST_BYTES]),
    };
    for checkpoint in [None, Some(checkpoint)] {
        for entries in [vec![], vec![entry_with(b"a"), entry_with(b"")]] {
            check_round_trip(&Frame::Message(message_with(Body::NewState(NewState {
                sender: 1,
                commit: 100,
                op: 102,
                vouches: true,
                checkpoint,
                op_first: 101,
                entries,
            }))));
        }
    }
}

#[test]
fn large_prepare_round_trips_and_slices_the_read_buffer() {
    let entries: Vec<Entry> = (0..1024).map(|_| entry_with(&[0xab; 64])).collect();
    let message = message_with(Body::Prepare(Prepare {
        op_first: 1,
        commit: 0,
        actives_commit: 0,
        stamp: 0,
        entries,
    }));
    let mut buf = BytesMut::new();
    wire::encode(&message, CLUSTER, &mut buf);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let decoded = wire::decode(&mut buf, CLUSTER, MAX).unwrap().unwrap();
    assert_eq!(decoded, Frame::Message(message));
    let Frame::Message(Message {
        body: Body::Prepare(prepare),
        ..
    }) = decoded
    else {
        unreachable!()
    };
    for entry in &prepare.entries {
        assert!(
            range.contains(&(entry.body.as_ptr() as usize)),
            "entry body was copied"
        );
    }
}

#[test]
fn hello_and_stats_round_trip() {
    let hello = |peer| {
        Frame::Hello(Hello {
            peer,
            terms: Terms {
                cluster: CLUSTER,
                epoch: 0,
                members: vec![
                    "127.0.0.1:7000".parse().unwrap(),
                    "[::1]:7001".parse().unwrap(),
                ],
                limits: Some(Limits::of(&vsr::Config::new(CLUSTER, 3))),
            },
            nonce: Some([9; 32]),
        })
    };
    check_round_trip(&hello(Peer::Replica(0)));
    check_round_trip(&hello(Peer::Replica(u64::MAX)));
    check_round_trip(&hello(Peer::Client(0x1234_5678_9abc)));
    check_round_trip(&Frame::StatsRequest);
    check_round_trip(&Frame::StatsReply(Bytes::from_static(
        b"commit 12\nview 3\n",
    )));
}

/// Encodes `body`, lets `corrupt` change the frame, and checks the decoder's verdict.
fn check_rejected(body: Body, corrupt: impl FnOnce(&mut Vec<u8>), expected: DecodeError) {
    let mut bytes = encoded(&Frame::Message(message_with(body)));
    corrupt(&mut bytes);
    assert_eq!(decode_all(&bytes), Err(expected));
}

fn request(operation: Operation) -> Body {
    Body::Request(Request {
        client: 1,
        session: 2,
        request: 3,
        operation,
        body: Bytes::from_static(b"put k v"),
    })
}

fn prepare() -> Body {
    Body::Prepare(Prepare {
        op_first: 5,
        commit: 4,
        actives_commit: 0,
        stamp: 0,
        entries: vec![entry_with(b"x")],
    })
}

#[test]
fn checksums_are_checked_header_first() {
    check_rejected(
        request(Operation::Apply),
        |b| b[10] ^= 1,
        DecodeError::HeaderChecksum,
    );
    check_rejected(
        request(Operation::Apply),
        |b| b[HEADER_BYTES] ^= 1,
        DecodeError::BodyChecksum,
    );
    // A body flip under a corrupt header is reported as the header's fault.
    check_rejected(
        request(Operation::Apply),
        |b| {
            b[HEADER_BYTES] ^= 1;
            b[0] ^= 1;
        },
        DecodeError::HeaderChecksum,
    );
}

#[test]
fn invalid_header_values_are_rejected_with_their_reason() {
    let body = || {
        Body::Commit(Commit {
            commit: 3,
            actives_commit: 0,
            stamp: 0,
        })
    };
    check_rejected(
        body(),
        |b| reseal(b, |h| h.command = 99),
        DecodeError::UnknownCommand(99),
    );
    check_rejected(
        body(),
        |b| reseal(b, |h| h.command = 0),
        DecodeError::UnknownCommand(0),
    );
    check_rejected(
        body(),
        |b| reseal(b, |h| h.size = 95),
        DecodeError::TooSmall,
    );
    check_rejected(
        body(),
        |b| reseal(b, |h| h.size = u32::MAX),
        DecodeError::TooLarge {
            size: u32::MAX,
            max: MAX,
        },
    );
    // Another wire version: nothing past the header checksum is read, the cluster and
    // the command included.
    for version in [0, wire::VERSION + 1, u8::MAX] {
        check_rejected(
            body(),
            |b| reseal(b, |h| h.version = version),
            DecodeError::OtherVersion {
                version,
                cluster: CLUSTER,
            },
        );
        check_rejected(
            body(),
            |b| {
                reseal(b, |h| {
                    h.version = version;
                    h.cluster = CLUSTER + 1;
                    h.command = 99;
                })
            },
            DecodeError::OtherVersion {
                version,
                cluster: CLUSTER + 1,
            },
        );
    }
    // A Commit's `nonce` is its lease stamp, its `op` the actives' commit (at most its
    // commit); its `op_first` is unused.
    check_rejected(
        body(),
        |b| reseal(b, |h| h.op_first = 1),
        DecodeError::Malformed("header field unused by this command is not zero"),
    );
    check_rejected(
        body(),
        |b| reseal(b, |h| h.op = 4),
        DecodeError::Malformed("commit's actives' commit beyond its commit"),
    );
    // So is a Prepare's.
    let prepare = Body::Prepare(Prepare {
        op_first: 5,
        commit: 3,
        actives_commit: 2,
        stamp: 0,
        entries: vec![entry_with(b"x")],
    });
    check_rejected(
        prepare,
        |b| reseal(b, |h| h.op = 4),
        DecodeError::Malformed("prepare's actives' commit beyond its commit"),
    );
    // A PrepareOk's commit is at most its op.
    check_rejected(
        Body::PrepareOk(PrepareOk {
            op: 3,
            commit: 3,
            stamp: 0,
        }),
        |b| reseal(b, |h| h.commit = 4),
        DecodeError::Malformed("prepare_ok commit beyond its op"),
    );
    check_rejected(
        body(),
        |b| {
            b.push(0);
            reseal(b, |h| h.size += 1);
        },
        DecodeError::Malformed("body on a command that has none"),
    );
}

#[test]
fn invalid_enum_codes_are_malformed() {
    check_rejected(
        request(Operation::Apply),
        |b| reseal(b, |h| h.code = 7),
        DecodeError::Malformed("unknown operation code"),
    );
    let reply = Body::Reply(Reply {
        client: 1,
        session: 1,
        request: 1,
        op: 1,
        status: ReplyStatus::Ok,
        result: Bytes::new(),
    });
    check_rejected(
        reply,
        |b| reseal(b, |h| h.code = 0),
        DecodeError::Malformed("unknown reply status"),
    );
    let response = Body::RecoveryResponse(RecoveryResponse {
        nonce: 1,
        empty: true,
        normal: false,
        op: 0,
        commit: 0,
        epoch_start: 0,
    });
    check_rejected(
        response,
        |b| reseal(b, |h| h.code = 4),
        DecodeError::Malformed("recovery_response flags other than empty and normal"),
    );
    // The entry's operation byte sits after client, session, request and timestamp.
    let operation_at = HEADER_BYTES + 4 + 8 + 8 + 4 + 8;
    check_rejected(
        prepare(),
        |b| {
            b[operation_at] = 0;
            reseal(b, |_| {});
        },
        DecodeError::Malformed("unknown entry operation code"),
    );
    for read in [Operation::Read, Operation::LeaseRead] {
        check_rejected(
            prepare(),
            |b| {
                b[operation_at] = read as u8;
                reseal(b, |_| {});
            },
            DecodeError::Malformed("a read is never a log entry"),
        );
    }
}

#[test]
fn a_read_request_carries_the_op_its_client_has_seen() {
    // A read at any replica and a lease read at the primary share their layout and gate.
    for operation in [Operation::Read, Operation::LeaseRead] {
        check_read_layout(operation);
    }
}

fn check_read_layout(operation: Operation) {
    let read = Request {
        client: 1,
        session: 2,
        request: 3,
        operation,
        body: Request::read_body(77, b"get k"),
    };
    assert_eq!(read.read_seen(), Some(77));
    assert_eq!(&read.read_query()[..], b"get k");
    check_round_trip(&Frame::Message(message_with(Body::Request(read.clone()))));
    // A query may be empty; the seen op may not be missing, in a single request...
    let empty_query = Request {
        body: Request::read_body(0, b""),
        ..read.clone()
    };
    check_round_trip(&Frame::Message(message_with(Body::Request(empty_query))));
    for short in [&b""[..], b"1234567"] {
        let truncated = Request {
            body: Bytes::copy_from_slice(short),
            ..read.clone()
        };
        let bytes = encoded(&Frame::Message(message_with(Body::Request(truncated))));
        assert_eq!(
            decode_all(&bytes),
            Err(DecodeError::Malformed(
                "read request without the op it has seen"
            ))
        );
    }
    // ... or in a batch record.
    let mut bytes = batch_bytes(
        &[batch_request(1, b"1234567"), batch_request(2, b"cde")],
        CLUSTER,
    )
    .to_vec();
    bytes[RECORDS + REQUEST_OPERATION_AT] = operation as u8;
    reseal(&mut bytes, |_| {});
    assert_eq!(
        decode_all(&bytes),
        Err(DecodeError::Malformed(
            "read request without the op it has seen"
        ))
    );
    // Other operations' bodies mean nothing to the gate.
    assert_eq!(request_body(Operation::Apply, 5, Bytes::new()).len(), 0);
    let apply = Request {
        operation: Operation::Apply,
        ..read
    };
    assert_eq!(apply.read_seen(), None);
    assert!(apply.read_query().is_empty());
}

#[test]
fn structurally_invalid_bodies_are_malformed() {
    let empty = Body::Prepare(Prepare {
        op_first: 5,
        commit: 4,
        actives_commit: 0,
        stamp: 0,
        entries: vec![],
    });
    check_rejected(
        empty,
        |_| {},
        DecodeError::Malformed("prepare without entries"),
    );
    check_rejected(
        prepare(),
        |b| reseal(b, |h| h.op_first = 0),
        DecodeError::Malformed("prepare starts at op 0"),
    );
    let two = Body::Prepare(Prepare {
        op_first: 1,
        commit: 0,
        actives_commit: 0,
        stamp: 0,
        entries: vec![entry_with(b""), entry_with(b"")],
    });
    check_rejected(
        two,
        |b| reseal(b, |h| h.op_first = u64::MAX),
        DecodeError::Malformed("entry op range overflows u64"),
    );
    check_rejected(
        prepare(),
        |b| {
            b[HEADER_BYTES] = 200; // the entry count
            reseal(b, |_| {});
        },
        DecodeError::Malformed("entry count exceeds body"),
    );
    check_rejected(
        prepare(),
        |b| {
            b.push(0);
            reseal(b, |h| h.size += 1);
        },
        DecodeError::Malformed("trailing bytes after body"),
    );
}

// ---------------------------------------------------------------------------------------
// Range checks: numbers no correct peer sends are refused by name, whatever the message.

proptest! {
    #![proptest_config(config())]

    /// A view or epoch in the headroom above its maximum (where the core's `+ 1` would
    /// come close to wrapping) is refused on every message.
    #[test]
    fn views_and_epochs_above_their_maximum_are_refused(
        message in message(),
        view in VIEW_MAX + 1..=u32::MAX,
        epoch in EPOCH_MAX + 1..=u32::MAX,
    ) {
        let mut bytes = encoded(&Frame::Message(message.clone()));
        reseal(&mut bytes, |h| h.view = view);
        prop_assert_eq!(
            decode_all(&bytes),
            Err(DecodeError::OutOfRange("view above the maximum"))
        );
        let mut bytes = encoded(&Frame::Message(message));
        reseal(&mut bytes, |h| h.epoch = epoch);
        prop_assert_eq!(
            decode_all(&bytes),
            Err(DecodeError::OutOfRange("epoch above the maximum"))
        );
    }

    /// Any op or commit header field set above `OP_MAX` is refused (never decoded into a
    /// message the core would do arithmetic on).
    #[test]
    fn ops_above_their_maximum_are_refused(
        message in message(),
        value in OP_MAX + 1..=u64::MAX,
        field in 0..3usize,
    ) {
        let mut bytes = encoded(&Frame::Message(message));
        let mut used = false;
        reseal(&mut bytes, |h| {
            let slot = match field {
                0 => &mut h.op,
                1 => &mut h.commit,
                _ => &mut h.op_first,
            };
            used = *slot != 0;
            *slot = value;
        });
        let result = decode_all(&bytes);
        if used {
            prop_assert!(
                matches!(result, Err(DecodeError::OutOfRange(_)) | Err(DecodeError::Malformed(_))),
                "{:?}", result
            );
        } else {
            prop_assert!(result.is_err(), "{:?}", result);
        }
    }
}

/// One message per rule, each with the one field a correct peer never sends.
/// A refusal is read whatever its sender's wire version, so that a node of another version
/// can say why it is refused; it keeps the version it was sent in (one encoding per frame).
#[test]
fn a_refusal_of_any_wire_version_is_read() {
    for version in [0, wire::VERSION, wire::VERSION + 1, u8::MAX] {
        let refusal = Refusal {
            code: RefusalCode::VersionDiffers,
            version,
            reason: "wire version 7 there, 1 here".to_string(),
        };
        let bytes = encoded(&Frame::Refusal(refusal.clone()));
        assert_eq!(bytes[39], version);
        check_round_trip(&Frame::Refusal(refusal.clone()));
        assert_eq!(decode_all(&bytes), Ok(Some(Frame::Refusal(refusal))));
    }
}

#[test]
fn contradictory_fields_are_refused_by_name() {
    let cases: Vec<(Message, &str)> = vec![
        (
            message_with(Body::GetState(GetState {
                op: u64::MAX,
                learner: None,
            })),
            "get_state op above the maximum op",
        ),
        (
            message_with(Body::StartViewChange(StartViewChange { sender_view: 3 })),
            "start_view_change sender view above its view",
        ),
        (
            message_with(Body::DoViewChange(DoViewChange {
                last_normal_view: 1,
                op: 4,
                commit: 5,
                actives_commit: 0,
                entries: vec![],
            })),
            "do_view_change commit above its op",
        ),
        (
            message_with(Body::DoViewChange(DoViewChange {
                last_normal_view: 3,
                op: 5,
                commit: 5,
                actives_commit: 0,
                entries: vec![],
            })),
            "do_view_change last normal view above its view",
        ),
        (
            message_with(Body::DoViewChange(DoViewChange {
                last_normal_view: 1,
                op: 5,
                commit: 4,
                actives_commit: 0,
                entries: vec![entry_with(b"a"), entry_with(b"b")],
            })),
            "do_view_change has more entries than op - commit",
        ),
        (
            message_with(Body::StartView(StartView {
                op: 3,
                commit: 4,
                op_first: 4,
                entries: vec![],
            })),
            "start_view commit above its op",
        ),
        (
            message_with(Body::StartView(StartView {
                op: 3,
                commit: 1,
                op_first: 3,
                entries: vec![entry_with(b"a"), entry_with(b"b")],
            })),
            "start_view entries beyond its op",
        ),
        (
            message_with(Body::RecoveryResponse(RecoveryResponse {
                nonce: 1,
                empty: false,
                normal: true,
                op: 1,
                commit: 2,
                epoch_start: 0,
            })),
            "recovery_response commit above its op",
        ),
        (
            message_with(Body::RecoveryResponse(RecoveryResponse {
                nonce: 1,
                empty: false,
                normal: true,
                op: 3,
                commit: 2,
                epoch_start: 3,
            })),
            "recovery_response epoch start above its commit",
        ),
        (
            message_with(Body::RecoveryResponse(RecoveryResponse {
                nonce: 1,
                empty: false,
                normal: false,
                op: 3,
                commit: 2,
                epoch_start: 0,
            })),
            "recovery_response with state from a replica that is not normal",
        ),
        (
            message_with(Body::NewState(NewState {
                sender: 1,
                commit: 5,
                op: 6,
                vouches: true,
                checkpoint: Some(CheckpointId {
                    op: 6,
                    timestamp: 1,
                    service_pages: 0,
                    clients_pages: 0,
                    root: Digest([0; DIGEST_BYTES]),
                }),
                op_first: 7,
                entries: vec![],
            })),
            "new_state checkpoint above its commit",
        ),
        (
            message_with(Body::NewState(NewState {
                sender: 1,
                commit: 6,
                op: 6,
                vouches: true,
                checkpoint: Some(CheckpointId {
                    op: 6,
                    timestamp: 1,
                    service_pages: 1 << 26,
                    clients_pages: 1,
                    root: Digest([0; DIGEST_BYTES]),
                }),
                op_first: 7,
                entries: vec![],
            })),
            "new_state checkpoint with more pages than any",
        ),
        (
            message_with(Body::Prepare(Prepare {
                op_first: OP_MAX,
                commit: 0,
                actives_commit: 0,
                stamp: 0,
                entries: vec![entry_with(b"a"), entry_with(b"b")],
            })),
            "prepare op or commit above the maximum op",
        ),
    ];
    for (message, reason) in cases {
        let bytes = encoded(&Frame::Message(message.clone()));
        assert_eq!(
            decode_all(&bytes),
            Err(DecodeError::OutOfRange(reason)),
            "{message:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Checkpoints in pages.

/// A CheckpointPart of `pages` (index, bytes).
fn pages_part(pages: Vec<(u32, Bytes)>) -> Frame {
    Frame::Message(message_with(Body::CheckpointPart(CheckpointPart {
        op: 64,
        root: Digest([3; DIGEST_BYTES]),
        responder: 2,
        content: CheckpointContent::Pages(pages),
    })))
}

/// Where the page count of a pages part sits: after the header and the root.
const PAGE_COUNT_AT: usize = HEADER_BYTES + DIGEST_BYTES;

proptest! {
    #![proptest_config(config())]

    /// Pages come back exactly, as slices of the frame (never copied), and the frame is
    /// the size the serving replica budgets for: per page its index, length and bytes.
    #[test]
    fn checkpoint_pages_round_trip_as_slices(
        indexes in page_indexes(),
        payloads in prop::collection::vec(payload(), 8),
    ) {
        let pages: Vec<(u32, Bytes)> = indexes.into_iter().zip(payloads).collect();
        let frame = pages_part(pages.clone());
        check_round_trip(&frame);
        let mut buf = BytesMut::from(&encoded(&frame)[..]);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let Ok(Some(Frame::Message(message))) = wire::decode(&mut buf, CLUSTER, MAX) else {
            unreachable!("checked above")
        };
        let Body::CheckpointPart(CheckpointPart { content: CheckpointContent::Pages(decoded), .. }) =
            message.body
        else {
            unreachable!("a pages part")
        };
        for ((index, page), (original_index, original)) in decoded.iter().zip(&pages) {
            prop_assert_eq!(index, original_index);
            prop_assert_eq!(page, original);
            if !page.is_empty() {
                prop_assert!(range.contains(&(page.as_ptr() as usize)), "a slice of the frame");
            }
        }
        prop_assert_eq!(
            encoded(&frame).len(),
            HEADER_BYTES + DIGEST_BYTES + 4 + pages.iter().map(|(_, p)| 8 + p.len()).sum::<usize>()
        );
    }

    /// A page count larger than the body could hold is refused before it sizes anything.
    #[test]
    fn a_page_count_beyond_the_body_is_refused(
        indexes in page_indexes(),
        payloads in prop::collection::vec(payload(), 8),
        count in 1u32..,
    ) {
        let pages: Vec<(u32, Bytes)> = indexes.into_iter().zip(payloads).collect();
        let mut frame = encoded(&pages_part(pages));
        let at = PAGE_COUNT_AT;
        let old = u32::from_le_bytes(frame[at..at + 4].try_into().unwrap());
        let count = old.saturating_add(count);
        let room = (frame.len() - at - 4) / 8;
        prop_assume!(count as usize > room);
        frame[at..at + 4].copy_from_slice(&count.to_le_bytes());
        reseal(&mut frame, |_| {});
        prop_assert_eq!(
            decode_all(&frame),
            Err(DecodeError::Malformed("checkpoint page count exceeds body"))
        );
    }
}

/// Page indexes that do not increase (a repeat, or out of order) have another encoding
/// of the same request: refused, in asks and in answers.
#[test]
fn page_indexes_must_increase() {
    let get = |indexes: Vec<u32>| {
        Frame::Message(message_with(Body::GetCheckpoint(GetCheckpoint {
            op: 1,
            root: Digest([1; DIGEST_BYTES]),
            asker: 4,
            part: CheckpointRequest::Pages(indexes),
        })))
    };
    let part =
        |indexes: Vec<u32>| pages_part(indexes.into_iter().map(|i| (i, Bytes::new())).collect());
    for indexes in [vec![3, 3], vec![5, 2], vec![0, 1, 1]] {
        // The encoder writes what it is given; the decoder refuses it.
        for frame in [get(indexes.clone()), part(indexes)] {
            assert_eq!(
                decode_all(&encoded(&frame)),
                Err(DecodeError::Malformed(
                    "checkpoint page indexes not increasing"
                ))
            );
        }
    }
    check_round_trip(&get(vec![0, 1, 7, u32::MAX]));
}

/// A manifest run is `2^level` pages from an aligned start, within `u32` pages, and
/// holds at most `2^level` digests.
#[test]
fn manifest_runs_are_aligned_and_bounded() {
    let ask = |level: u8, start: u32| {
        Frame::Message(message_with(Body::GetCheckpoint(GetCheckpoint {
            op: 1,
            root: Digest([1; DIGEST_BYTES]),
            asker: 4,
            part: CheckpointRequest::Manifest { level, start },
        })))
    };
    let answer = |level: u8, start: u32, digests: usize| {
        Frame::Message(message_with(Body::CheckpointPart(CheckpointPart {
            op: 1,
            root: Digest([1; DIGEST_BYTES]),
            responder: 4,
            content: CheckpointContent::Manifest {
                level,
                start,
                digests: vec![Digest([2; DIGEST_BYTES]); digests],
                proof: vec![],
            },
        })))
    };
    let refused = |frame: Frame, reason: &'static str| {
        assert_eq!(
            decode_all(&encoded(&frame)),
            Err(DecodeError::Malformed(reason))
        );
    };
    refused(ask(32, 0), "checkpoint manifest level beyond u32 pages");
    refused(ask(2, 6), "checkpoint manifest run not aligned");
    refused(answer(3, 4, 1), "checkpoint manifest run not aligned");
    refused(
        answer(1, 2, 3),
        "checkpoint manifest run longer than its level",
    );
    check_round_trip(&ask(31, 1 << 31));
    check_round_trip(&answer(2, 8, 4));
}

/// A StartEpoch names its epoch twice (envelope and configuration): a frame where they
/// differ, or a configuration that does not parse, comes from no correct replica.
#[test]
fn a_start_epoch_must_agree_with_its_envelope() {
    let configuration = Configuration::initial(3).propose(&[0, 1, 2], &[]);
    assert_eq!(configuration.epoch(), 1);
    let start_epoch = || {
        Body::StartEpoch(StartEpoch {
            sender: 4,
            op: 10,
            configuration: configuration.clone(),
        })
    };
    check_round_trip(&Frame::Message(message_with(start_epoch())));
    check_rejected(
        start_epoch(),
        |b| reseal(b, |h| h.epoch = 2),
        DecodeError::OutOfRange("start_epoch for another epoch than its envelope's"),
    );
    check_rejected(
        start_epoch(),
        |b| {
            // Cut the member count to zero: no configuration has no members.
            b[HEADER_BYTES + 4 + 8] = 0;
            reseal(b, |_| {});
        },
        DecodeError::Malformed("start_epoch configuration"),
    );
}

// ---------------------------------------------------------------------------------------
// Batch frames: each rejection reason, with both checksums valid so only the body's
// structure is judged.

fn batch_request(client: u64, body: &'static [u8]) -> Message {
    message_with(Body::Request(Request {
        client,
        session: 5,
        request: 9,
        operation: Operation::Apply,
        body: Bytes::from_static(body),
    }))
}

fn batch_reply(client: u64) -> Message {
    message_with(Body::Reply(Reply {
        client,
        session: 5,
        request: 9,
        op: 40,
        status: ReplyStatus::Ok,
        result: Bytes::from_static(b"ok"),
    }))
}

/// Two requests in a batch, with `corrupt` applied to the bytes and both checksums
/// resealed; the decoder must answer `expected`.
fn check_batch_rejected(corrupt: impl FnOnce(&mut Vec<u8>), expected: DecodeError) {
    let messages = [batch_request(1, b"ab"), batch_request(2, b"cde")];
    let mut bytes = batch_bytes(&messages, CLUSTER).to_vec();
    corrupt(&mut bytes);
    reseal(&mut bytes, |_| {});
    assert_eq!(decode_all(&bytes), Err(expected));
}

/// Where the records start, and each request record's field offsets within it.
const RECORDS: usize = HEADER_BYTES + wire::BATCH_COUNT_BYTES;
const REQUEST_OPERATION_AT: usize = 20;
const REQUEST_BODY_BYTES_AT: usize = 21;

fn set_count(bytes: &mut [u8], count: u32) {
    bytes[HEADER_BYTES..RECORDS].copy_from_slice(&count.to_le_bytes());
}

fn set_size(bytes: &mut [u8]) {
    let size = u32::try_from(bytes.len()).unwrap();
    bytes[8..12].copy_from_slice(&size.to_le_bytes());
}

#[test]
fn batches_of_requests_and_of_replies_round_trip() {
    check_round_trip(&batch_of(&[
        batch_request(1, b""),
        batch_request(2, b"xyz"),
    ]));
    check_round_trip(&batch_of(&[batch_reply(1), batch_reply(2), batch_reply(3)]));
}

#[test]
fn a_batch_writer_refuses_what_does_not_belong() {
    let first = batch_request(1, b"ab");
    let mut out = BytesMut::new();
    let writer = BatchWriter::begin(&first, &mut out).unwrap();
    assert!(
        !writer.accepts(&batch_reply(2), &out, usize::MAX),
        "another kind"
    );
    let mut other_view = batch_request(2, b"ab");
    other_view.view += 1;
    assert!(
        !writer.accepts(&other_view, &out, usize::MAX),
        "another envelope"
    );
    let size = writer.frame_bytes(&out);
    let next = batch_request(3, b"ab");
    let record = wire::record_bytes(&next);
    assert!(writer.accepts(&next, &out, size + record));
    assert!(
        !writer.accepts(&next, &out, size + record - 1),
        "over the limit"
    );
    let commit = message_with(Body::Commit(Commit {
        commit: 1,
        actives_commit: 0,
        stamp: 0,
    }));
    assert!(BatchWriter::begin(&commit, &mut BytesMut::new()).is_none());
}

#[test]
fn malformed_batches_are_rejected_with_their_reason() {
    check_batch_rejected(
        |b| {
            b.truncate(RECORDS);
            set_count(b, 0);
            set_size(b);
        },
        DecodeError::Malformed("empty batch"),
    );
    check_batch_rejected(
        |b| set_count(b, 1000),
        DecodeError::Malformed("batch count exceeds body"),
    );
    check_batch_rejected(
        |b| set_count(b, 1),
        DecodeError::Malformed("trailing bytes after body"),
    );
    check_batch_rejected(
        |b| {
            b.push(0);
            set_size(b);
        },
        DecodeError::Malformed("trailing bytes after body"),
    );
    check_batch_rejected(
        |b| b[RECORDS + REQUEST_BODY_BYTES_AT..][..4].copy_from_slice(&u32::MAX.to_le_bytes()),
        DecodeError::Malformed("payload length exceeds body"),
    );
    check_batch_rejected(
        |b| b[RECORDS + REQUEST_OPERATION_AT] = 77,
        DecodeError::Malformed("unknown operation code"),
    );
    check_batch_rejected(
        |b| {
            b.truncate(RECORDS + 3);
            set_count(b, 1);
            set_size(b);
        },
        DecodeError::Malformed("batch count exceeds body"),
    );
}

#[test]
fn a_malformed_last_record_rejects_the_whole_batch() {
    // The second record's operation code is broken: nothing of the batch, not even its
    // good first record, may pass the gate.
    let second = RECORDS + wire::REQUEST_RECORD_BYTES + 2;
    check_batch_rejected(
        |b| b[second + REQUEST_OPERATION_AT] = 0,
        DecodeError::Malformed("unknown operation code"),
    );
}

#[test]
fn batch_records_are_range_checked() {
    let mut out_of_range = batch_request(2, b"x");
    if let Body::Request(request) = &mut out_of_range.body {
        request.session = OP_MAX + 1;
    }
    let bytes = batch_bytes(&[batch_request(1, b"x"), out_of_range], CLUSTER);
    assert_eq!(
        decode_all(&bytes),
        Err(DecodeError::OutOfRange(
            "request session above the maximum op"
        ))
    );
}

#[test]
fn batch_headers_use_the_envelope_alone() {
    check_batch_rejected(
        |b| reseal(b, |h| h.op = 1),
        DecodeError::Malformed("header field unused by this command is not zero"),
    );
    check_batch_rejected(
        |b| reseal(b, |h| h.client = 1),
        DecodeError::Malformed("header field unused by this command is not zero"),
    );
}
