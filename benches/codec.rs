//! The wire codec alone: encode and decode of Prepares of various shapes, per message and in
//! bytes per second (`cargo bench --bench codec`).
//!
//! Shapes: 1, 64 and 1024 entries of 64-byte bodies (batching at increasing depth), and one
//! entry of a 1 KiB body (a payload-heavy request). Encoding reuses one buffer, as the
//! runtime does; decoding starts each iteration from a fresh copy of the frame in a buffer
//! that, like a connection's read buffer, has already had a frame split off (the copy is
//! made in the untimed setup, and the decoded frame is dropped untimed).
//!
//! Checkpoints (`checkpoint` group): the kv service's snapshot of 100,000 keys (about
//! 12 MB of records) taken from scratch (every page built and hashed) and after 64 puts
//! (only the changed buckets rebuilt), and decoding a NewState that carries that
//! checkpoint (every page's digest verified at the gate).

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use vsr::protocol::{Body, CheckpointContent, CheckpointPart, Entry, Message, Operation, Prepare};
use vsr::service::kv::KvOp;
use vsr::service::{Kv, StateMachine};
use vsr::wire;

const CLUSTER: u128 = 42;

fn prepare(entries: usize, body_bytes: usize) -> Message {
    let body = Bytes::from(vec![0x5a; body_bytes]);
    let entries = (0..entries as u64)
        .map(|i| Entry {
            client: 1000 + i,
            session: 7,
            request: i as u32 + 1,
            timestamp: 1_700_000_000_000 + i,
            operation: Operation::Apply,
            body: body.clone(),
        })
        .collect();
    Message {
        epoch: 0,
        view: 3,
        replica: 0,
        body: Body::Prepare(Prepare {
            op_first: 1,
            commit: 0,
            actives_commit: 0,
            stamp: 0,
            entries,
        }),
    }
}

fn shapes() -> Vec<(String, Message)> {
    vec![
        ("prepare_1x64B".to_string(), prepare(1, 64)),
        ("prepare_64x64B".to_string(), prepare(64, 64)),
        ("prepare_1024x64B".to_string(), prepare(1024, 64)),
        ("prepare_1x1KiB".to_string(), prepare(1, 1024)),
    ]
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, message) in shapes() {
        let frame_bytes = wire::frame_bytes(&message);
        group.throughput(Throughput::Bytes(frame_bytes as u64));
        let mut out = BytesMut::with_capacity(frame_bytes);
        group.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                out.clear();
                wire::encode(black_box(&message), CLUSTER, &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, message) in shapes() {
        let mut encoded = BytesMut::new();
        wire::encode(&message, CLUSTER, &mut encoded);
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter_batched(
                || steady_state_buffer(&encoded),
                |mut buf| wire::decode(&mut buf, CLUSTER, u32::MAX).expect("valid frame"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A read buffer holding `frame` after an earlier frame was split off it. Splitting the
/// first frame off a fresh buffer allocates its shared control block once; a connection's
/// buffer in steady state has long since paid that, so the setup pays it, untimed.
fn steady_state_buffer(frame: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(2 * frame.len());
    buf.extend_from_slice(frame);
    buf.extend_from_slice(frame);
    drop(buf.split_to(frame.len()));
    buf
}

/// 100,000 keys with 100-byte values, never snapshotted: every bucket is still to build.
fn kv_filled() -> Kv {
    let mut kv = Kv::new();
    for i in 0..100_000u32 {
        let key = Bytes::from(format!("key {i:08}"));
        kv.execute(KvOp::Put(key, Bytes::from(vec![i as u8; 100])));
    }
    kv
}

fn checkpoint(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(20);
    let fresh = kv_filled();
    group.bench_function("kv_snapshot_100k_keys_from_scratch", |b| {
        b.iter_batched(
            || fresh.clone(),
            // The map is returned so that dropping it is not timed.
            |mut kv| {
                let snapshot = kv.snapshot();
                (kv, snapshot)
            },
            BatchSize::LargeInput,
        )
    });
    let mut kv = fresh.clone();
    kv.snapshot();
    let mut round = 0u32;
    group.bench_function("kv_snapshot_100k_keys_after_64_puts", |b| {
        b.iter(|| {
            for i in 0..64u32 {
                let key = Bytes::from(format!("key {:08}", (round * 64 + i) * 7919 % 100_000));
                kv.execute(KvOp::Put(key, Bytes::from_static(&[1; 100])));
            }
            round += 1;
            kv.snapshot()
        })
    });
    let message = Message {
        epoch: 0,
        view: 3,
        replica: 0,
        // A checkpoint travels as pages in CheckpointParts: the largest answer of the
        // 100k-key state's pages that the default request asks for.
        body: Body::CheckpointPart(CheckpointPart {
            op: 1 << 16,
            root: vsr::service::Digest([7; 32]),
            responder: 1,
            content: CheckpointContent::Pages(
                kv.snapshot()
                    .pages()
                    .iter()
                    .take(256)
                    .enumerate()
                    .map(|(index, page)| (index as u32, page.bytes().clone()))
                    .collect(),
            ),
        }),
    };
    let mut encoded = BytesMut::new();
    wire::encode(&message, CLUSTER, &mut encoded);
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("decode_checkpoint_part_256_pages", |b| {
        b.iter_batched(
            || steady_state_buffer(&encoded),
            |mut buf| wire::decode(&mut buf, CLUSTER, u32::MAX).expect("valid frame"),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, encode, decode, checkpoint);
criterion_main!(benches);
