//! Installing a kv checkpoint received by state transfer, as a replica does on its event
//! loop (`restore_checkpoint`): `Kv::restore` of the received pages, then the map's own
//! snapshot (the same pages, kept instead of the received ones), then the Merkle tree over
//! their digests (`cargo bench --bench kv_restore`; `KV_RESTORE_KEYS=N`, 1,000,000 by
//! default, keys of 1 KiB values: about 1 GiB of records, as in
//! `perf/state_transfer.md`'s 1 GiB runs).
//!
//! The received pages are copies of the source's, each in a buffer of its own, as pages
//! that came in messages are (verified against their digests, as at the wire's gate, in
//! the untimed setup).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use vsr::service::kv::KvOp;
use vsr::service::merkle::MerkleTree;
use vsr::service::{Kv, Page, Snapshot, StateMachine};

const VALUE_BYTES: usize = 1024;

fn keys() -> u32 {
    std::env::var("KV_RESTORE_KEYS").map_or(1_000_000, |keys| {
        keys.parse().expect("KV_RESTORE_KEYS is a number")
    })
}

/// The snapshot of `keys` keys of 1 KiB values, its pages in buffers of their own.
fn received(keys: u32) -> Snapshot {
    let mut kv = Kv::new();
    for i in 0..keys {
        let key = Bytes::from(format!("key {i:012}"));
        kv.execute(KvOp::Put(key, Bytes::from(vec![i as u8; VALUE_BYTES])));
    }
    let pages = (kv.snapshot().pages().iter())
        .map(|page| {
            let copy = Bytes::copy_from_slice(page.bytes());
            Page::verified(copy, page.digest()).expect("the same bytes")
        })
        .collect();
    Snapshot::new(pages)
}

fn restore(c: &mut Criterion) {
    let keys = keys();
    let snapshot = received(keys);
    let mut group = c.benchmark_group("kv_restore");
    group.sample_size(10);
    group.bench_function(format!("restore_{keys}_keys_1k"), |b| {
        b.iter_batched(
            Kv::new,
            // The map is returned so that dropping it is not timed.
            |mut kv| {
                kv.restore(&snapshot).expect("a valid snapshot");
                kv
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function(format!("install_{keys}_keys_1k"), |b| {
        b.iter_batched(
            Kv::new,
            |mut kv| {
                kv.restore(&snapshot).expect("a valid snapshot");
                let own = kv.snapshot();
                let digests: Vec<_> = own.pages().iter().map(Page::digest).collect();
                (kv, own, MerkleTree::new(&digests))
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, restore);
criterion_main!(benches);
