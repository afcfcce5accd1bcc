//! Folding: the buckets as of the last fold, with the changes since applied, written into
//! buckets again, and the snapshot of the result.
//!
//! A fold is a pure function of its inputs, so it can run on another thread while the map
//! keeps executing (see `Kv::snapshot_deferred`): it reads the buckets and a frozen set of
//! changes, both shared and immutable, and returns new buckets that share every bucket
//! the changes did not touch. When the fold holds the only handle to the old buckets (a
//! fold on the executing thread), each old bucket is dropped as soon as it is rewritten,
//! so at most one bucket exists twice; when the map still reads them, they live until it
//! takes the new ones.

use super::bucket::Bucket;
use super::build::{Builder, Writer};
use super::layout::{bucket_bits_for, bucket_of, bucket_range, Position};
use super::merge::merge;
use crate::service::Snapshot;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The buckets of one layout: 2^bits of them, each shared while unchanged.
pub(super) type Buckets = Arc<Vec<Arc<Bucket>>>;

/// The changes since a fold, by (hash, key): a key's value, or `None` when it was deleted
/// and a bucket still holds it.
pub(super) type Changes = BTreeMap<Position, Option<Bytes>>;

/// What a fold produced: the buckets of the state it folded, and that state's snapshot.
pub(super) struct Folded {
    pub buckets: Buckets,
    pub bits: u32,
    pub snapshot: Snapshot,
}

/// `buckets` (of 2^`bits`) with `changes` applied, in the layout `record_bytes` of
/// records asks for: only the buckets the changes touch are rebuilt, unless the layout
/// changed (then all are). Every bucket's pages (of at most `page_bytes`) are hashed, so
/// the result's snapshot is ready.
pub(super) fn fold(
    buckets: Buckets,
    bits: u32,
    changes: &Changes,
    record_bytes: u64,
    page_bytes: usize,
) -> Folded {
    let new_bits = bucket_bits_for(record_bytes, page_bytes);
    // Handles to the buckets: the buckets themselves are copied only if rebuilt.
    let buckets = Arc::unwrap_or_clone(buckets);
    let mut buckets = if new_bits != bits {
        relayout(buckets, bits, new_bits, changes)
    } else {
        rebuild_changed(buckets, bits, changes)
    };
    let mut pages = Vec::new();
    for bucket in &mut buckets {
        // Unique unless the bucket was built by a fold without a snapshot and the map
        // still reads it: then its index is copied once to hash it here.
        pages.extend_from_slice(Arc::make_mut(bucket).pages(page_bytes));
    }
    Folded {
        buckets: Arc::new(buckets),
        bits: new_bits,
        snapshot: Snapshot::new(pages),
    }
}

/// `buckets` with `changes` applied, without hashing pages: the fold of a map that keeps
/// too many changes between snapshots (the pages are hashed by the next snapshot).
pub(super) fn fold_unhashed(
    buckets: Buckets,
    bits: u32,
    changes: &Changes,
    record_bytes: u64,
    page_bytes: usize,
) -> (Buckets, u32) {
    let new_bits = bucket_bits_for(record_bytes, page_bytes);
    let buckets = Arc::unwrap_or_clone(buckets);
    let buckets = if new_bits != bits {
        relayout(buckets, bits, new_bits, changes)
    } else {
        rebuild_changed(buckets, bits, changes)
    };
    (Arc::new(buckets), new_bits)
}

/// Rebuilds each bucket the changes touch, found from the changes themselves (so that a
/// few changes cost a few buckets, whatever the number of buckets).
fn rebuild_changed(
    mut buckets: Vec<Arc<Bucket>>,
    bits: u32,
    changes: &Changes,
) -> Vec<Arc<Bucket>> {
    let mut changed: Vec<usize> = (changes.keys())
        .map(|(hash, _)| bucket_of(*hash, bits))
        .collect();
    changed.dedup();
    let mut writer = Writer::default();
    for index in changed {
        let bucket = std::mem::take(&mut buckets[index]);
        let changes = changes.range(bucket_range(index, bits));
        merge(bucket.records(), changes).for_each(|record| writer.push(record));
        buckets[index] = Arc::new(writer.finish());
    }
    buckets
}

/// Rewrites every bucket into the layout of 2^`new_bits` buckets, dropping each old
/// handle once it is rewritten.
fn relayout(
    buckets: Vec<Arc<Bucket>>,
    bits: u32,
    new_bits: u32,
    changes: &Changes,
) -> Vec<Arc<Bucket>> {
    let mut builder = Builder::new(new_bits);
    for (index, bucket) in buckets.into_iter().enumerate() {
        let changes = changes.range(bucket_range(index, bits));
        merge(bucket.records(), changes).for_each(|record| builder.push(record));
    }
    shared(builder.finish())
}

/// `buckets` behind handles, in a table of their own size (collecting in place would keep
/// the buckets' larger table allocated for the handles).
pub(super) fn shared(buckets: Vec<Bucket>) -> Vec<Arc<Bucket>> {
    let mut handles = Vec::with_capacity(buckets.len());
    handles.extend(buckets.into_iter().map(Arc::new));
    handles
}
