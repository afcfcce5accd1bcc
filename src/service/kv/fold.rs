//! Folding: the buckets as of the last fold, with the changes since applied, written into
//! buckets again, and the snapshot of the result.
//!
//! A fold works on a [`Fold`]: its inputs (the buckets and the changes, moved in, not
//! shared) and its progress, behind a read-write lock, so that it can run on another
//! thread while the map keeps executing (see `Kv::snapshot_deferred`) and looks up
//! through it. The fold rewrites the state a part at a time, in state order (each bucket
//! the changes touch, or every bucket of the coarser layout when the layout changes), and
//! swaps each part in once it is written, under the write lock: the new buckets go in, the
//! old buckets and the changes they took go out and are freed. Writing and hashing happen
//! under the read lock or none (only the fold changes the parts), so a lookup waits at
//! most for a swap. At every moment a lookup finds each part of the state exactly once,
//! written or as the old bucket with the changes over it, and at most one part exists
//! twice, whoever runs the fold. (A checkpoint that holds the previous snapshot's pages
//! keeps the records of the old buckets alive: they are its own.)

use super::bucket::Bucket;
use super::build::{Builder, Writer};
use super::changes::Changes;
use super::layout::{bucket_bits_for, bucket_of};
use super::merge::merge;
use crate::service::Snapshot;
use bytes::Bytes;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The buckets of one layout: 2^bits of them, each shared while unchanged.
pub(super) type Buckets = Arc<Vec<Arc<Bucket>>>;

/// What a fold produced: the buckets of the state it folded, and that state's snapshot
/// (empty for [`Fold::run_unhashed`]).
pub(super) struct Folded {
    pub buckets: Buckets,
    pub bits: u32,
    pub snapshot: Snapshot,
}

/// A fold: the state it folds and how far it got (module docs).
pub(super) struct Fold {
    parts: RwLock<Parts>,
    /// The largest page of the map.
    page_bytes: usize,
}

/// The state a fold folds, in two parts: the ranges of the state it wrote, in `new`, and
/// the others, as `old` with `frozen` over them.
///
/// Invariants: ranges are those of the coarser of the two layouts (2^`range_bits()`
/// buckets). A range below `done` is in `new` alone: no change of it is left in `frozen`,
/// and its `old` buckets are gone, unless `new` shares them unchanged (a layout that did
/// not change, where `new` holds every bucket from the start). A range from `done` on is
/// in `old` and `frozen` alone.
struct Parts {
    old: Vec<Option<Arc<Bucket>>>,
    old_bits: u32,
    frozen: Changes,
    new: Vec<Arc<Bucket>>,
    new_bits: u32,
    done: usize,
}

impl Parts {
    /// Bits of the ranges the fold replaces one at a time: a bucket of each layout lies
    /// within one range.
    fn range_bits(&self) -> u32 {
        self.old_bits.min(self.new_bits)
    }

    /// Marks the ranges below `done` replaced: the changes in them leave `frozen`.
    fn replaced_below(&mut self, done: usize) {
        let bits = self.range_bits();
        self.frozen.remove_buckets_below(done, bits);
        self.done = done;
    }
}

impl Fold {
    /// A fold of `changes` into `buckets` (of 2^`bits`), into the layout that
    /// `record_bytes` of records asks for, with pages of at most `page_bytes`.
    pub fn new(
        buckets: Buckets,
        bits: u32,
        changes: Changes,
        record_bytes: u64,
        page_bytes: usize,
    ) -> Fold {
        let old = Arc::unwrap_or_clone(buckets)
            .into_iter()
            .map(Some)
            .collect();
        Fold {
            parts: RwLock::new(Parts {
                old,
                old_bits: bits,
                frozen: changes,
                new: Vec::new(),
                new_bits: bucket_bits_for(record_bytes, page_bytes),
                done: 0,
            }),
            page_bytes,
        }
    }

    /// The parts, to read: by lookups, and by the fold while it writes a range (only the
    /// fold changes the parts, so what it read stays true until it replaces the range).
    fn read(&self) -> RwLockReadGuard<'_, Parts> {
        (self.parts.read()).expect("a fold never panics holding its parts")
    }

    /// The parts, to replace a range: held only as long as that takes (no writing of
    /// buckets, no hashing), so that lookups on the executing thread seldom wait.
    fn write(&self) -> RwLockWriteGuard<'_, Parts> {
        (self.parts.write()).expect("a fold never panics holding its parts")
    }

    /// The value of `key` (whose hash is `hash`) in the state the fold folds, wherever
    /// the fold got to.
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        let parts = self.read();
        if bucket_of(hash, parts.range_bits()) < parts.done {
            return parts.new[bucket_of(hash, parts.new_bits)].get(hash, key);
        }
        match parts.frozen.get(hash, key) {
            Some(change) => change.map(Bytes::copy_from_slice),
            None => (parts.old[bucket_of(hash, parts.old_bits)].as_ref())
                .expect("a range not replaced keeps its buckets")
                .get(hash, key),
        }
    }

    /// Runs the fold, hashing every written bucket's pages: the buckets and the snapshot
    /// of the state.
    pub fn run(&self) -> Folded {
        self.replace_all(true, &mut |_| {});
        self.finish(true)
    }

    /// [`Fold::run`], calling `replaced` after each range is replaced (tests look up
    /// every key there).
    #[cfg(test)]
    pub fn run_observed(&self, replaced: &mut dyn FnMut(&Fold)) -> Folded {
        self.replace_all(true, replaced);
        self.finish(true)
    }

    /// Runs the fold without hashing pages (the next snapshot hashes them): for a map that
    /// keeps too many changes between snapshots.
    pub fn run_unhashed(&self) -> (Buckets, u32) {
        self.replace_all(false, &mut |_| {});
        let folded = self.finish(false);
        (folded.buckets, folded.bits)
    }

    /// Writes and replaces every range the fold changes, in state order, calling
    /// `replaced` after each.
    fn replace_all(&self, hash: bool, replaced: &mut dyn FnMut(&Fold)) {
        let (old_bits, new_bits) = {
            let parts = self.read();
            assert_eq!(parts.done, 0, "a fold runs once");
            (parts.old_bits, parts.new_bits)
        };
        if old_bits == new_bits {
            self.rebuild_changed(hash, replaced);
        } else {
            self.relayout(hash, replaced);
        }
    }

    /// Rebuilds each bucket the changes touch, found from the changes themselves (so that
    /// a few changes cost a few buckets, whatever the number of buckets); the others are
    /// shared as they are.
    fn rebuild_changed(&self, hash: bool, replaced: &mut dyn FnMut(&Fold)) {
        let mut writer = Writer::default();
        {
            let mut parts = self.write();
            let shared = parts
                .old
                .iter()
                .map(|b| b.clone().expect("not replaced yet"));
            parts.new = shared.collect();
        }
        loop {
            let (index, mut bucket) = {
                let parts = self.read();
                let Some(first) = parts.frozen.first_hash() else {
                    break;
                };
                let index = bucket_of(first, parts.old_bits);
                let old = parts.old[index].as_ref().expect("not replaced yet");
                let changes = parts.frozen.in_bucket(index, parts.old_bits);
                merge(old.records(), changes).for_each(|record| writer.push(record));
                (index, writer.finish())
            };
            if hash {
                bucket.pages(self.page_bytes);
            }
            let old = {
                let mut parts = self.write();
                parts.new[index] = Arc::new(bucket);
                parts.replaced_below(index + 1);
                parts.old[index].take()
            };
            drop(old);
            replaced(self);
        }
        let mut parts = self.write();
        let all = parts.old.len();
        parts.replaced_below(all);
    }

    /// Rewrites every bucket into the new layout, a range at a time.
    fn relayout(&self, hash: bool, replaced: &mut dyn FnMut(&Fold)) {
        let (old_bits, new_bits, range_bits) = {
            let parts = self.read();
            (parts.old_bits, parts.new_bits, parts.range_bits())
        };
        let mut builder = Builder::new(new_bits);
        let (mut written, mut released) = (Vec::new(), Vec::new());
        for range in 0..1usize << range_bits {
            let olds = range << (old_bits - range_bits)..(range + 1) << (old_bits - range_bits);
            {
                let parts = self.read();
                for index in olds.clone() {
                    let old = parts.old[index].as_ref().expect("not replaced yet");
                    let changes = parts.frozen.in_bucket(index, old_bits);
                    merge(old.records(), changes).for_each(|record| builder.push(record));
                }
                written.extend(builder.take_before((range + 1) << (new_bits - range_bits)));
            }
            if hash {
                for bucket in &mut written {
                    bucket.pages(self.page_bytes);
                }
            }
            {
                let mut parts = self.write();
                parts.new.extend(written.drain(..).map(Arc::new));
                parts.replaced_below(range + 1);
                released.extend(olds.map(|index| parts.old[index].take()));
            }
            // Freed here, not holding the parts.
            released.clear();
            replaced(self);
        }
    }

    /// Every range replaced: the new buckets (their pages hashed, and the snapshot of
    /// them, if `hash`).
    fn finish(&self, hash: bool) -> Folded {
        let (buckets, bits) = {
            let mut parts = self.write();
            debug_assert!(parts.frozen.is_empty());
            debug_assert_eq!(parts.new.len(), 1 << parts.new_bits);
            // Every lookup goes to `new` now: handles of buckets shared unchanged go, so
            // that hashing them below does not copy them.
            parts.old = Vec::new();
            if hash {
                // Only a bucket written by a fold that did not hash is not hashed yet.
                for bucket in &mut parts.new {
                    if bucket.hashed_pages().is_none() {
                        Arc::make_mut(bucket).pages(self.page_bytes);
                    }
                }
            }
            (shared_table(&parts.new), parts.new_bits)
        };
        let snapshot = if hash {
            let mut pages = Vec::new();
            for bucket in buckets.iter() {
                pages.extend_from_slice(bucket.hashed_pages().expect("hashed above"));
            }
            Snapshot::new(pages)
        } else {
            Snapshot::empty()
        };
        Folded {
            buckets,
            bits,
            snapshot,
        }
    }
}

/// A table of its own of `buckets`' handles, at its exact size.
fn shared_table(buckets: &[Arc<Bucket>]) -> Buckets {
    let mut table = Vec::with_capacity(buckets.len());
    table.extend_from_slice(buckets);
    Arc::new(table)
}
