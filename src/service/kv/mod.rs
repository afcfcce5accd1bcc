//! The key-value service: put, get, delete and compare-and-swap over byte strings.
//!
//! Operations and results have a small binary encoding ([`KvOp::encode`],
//! [`KvResult::encode`], in `ops`) so that clients and the simulator's reference model
//! share it. The state is kept in the layout of its snapshot pages (see [`Kv`]): it costs
//! about the bytes it holds, and a snapshot (paper 5.1) shares the pages of every part of
//! the state that did not change since the previous one.
//!
//! Modules: `layout` (the key hash and the buckets it splits the state into), `bucket`
//! (one bucket's records, lookups, pages), `build` (writing buckets), `merge` (buckets and
//! the changes since they were built, as one sequence), `restore` (checking a received
//! snapshot), `ops` (the encoding).

mod bucket;
mod build;
mod layout;
mod merge;
mod ops;
mod restore;

pub use ops::{KvOp, KvResult};

use super::{Snapshot, SnapshotError, StateMachine};
use bucket::Bucket;
use build::{Builder, Writer};
use bytes::Bytes;
use layout::{bucket_bits_for, bucket_of, bucket_range, key_hash, record_len, Position, Record};
use merge::merge;
use std::collections::BTreeMap;

/// Changes kept beside the buckets before they are folded into them even without a
/// snapshot (a replica snapshots every `checkpoint_interval_ops`, so this matters to a `Kv`
/// used without checkpoints): at least this many, and at least a quarter of the keys, so
/// that a fold's rewrite of the buckets is amortised over as many changes.
const CHANGES_MIN: usize = 1 << 14;

/// An in-memory key-value map kept in the layout of its snapshot pages.
///
/// Layout (see `ARCHITECTURE.md`, "Snapshots in pages"): records are ordered by a
/// deterministic 64-bit hash of their key, then the key, and split into 2^bits *buckets*
/// by the hash's top bits, so that a bucket is a contiguous range of the state. A snapshot
/// uses the smallest `bits` that keeps the average bucket at most 16 KiB, computed from the
/// state's size at that moment, so the layout is a function of the state alone, never of
/// its history: two replicas holding equal maps produce identical pages. A bucket's pages
/// are its records cut at record boundaries into pages of at most `PAGE_BYTES_TARGET`
/// bytes (or one record, when a record is larger).
///
/// Storage: each bucket is one buffer holding its records exactly as its pages hold them,
/// and the pages are slices of it (`bucket`), so the state and the checkpoint that shares
/// its pages hold the bytes once: 8 bytes of index per record beyond the records (which
/// carry 8 bytes of lengths). Changes since the buckets were built are kept beside them
/// (`changes`); a snapshot *folds* them in, rebuilding and re-hashing only the buckets
/// they touch (all of them when the layout grows or shrinks), and shares the other
/// buckets' pages as they were. A bucket rebuilt while an older checkpoint still holds
/// its previous pages exists twice until that checkpoint is dropped. Keys and values are
/// copied when applied, so no entry pins the receive buffer of the frame it came in.
#[derive(Clone)]
pub struct Kv {
    /// The 2^`bucket_bits` buckets as of the last fold: bucket i holds the records whose
    /// hash's top bits are i, as they were then.
    buckets: Vec<Bucket>,
    bucket_bits: u32,
    /// Every key changed since the last fold, by (hash, key): its value, or `None` when it
    /// was deleted and a bucket still holds it. Keys and values are copies of their own.
    changes: BTreeMap<Position, Option<Bytes>>,
    /// Bytes of all current records as pages hold them: the basis of the layout.
    record_bytes: u64,
    /// Number of current keys.
    keys: usize,
}

impl Default for Kv {
    fn default() -> Kv {
        Kv {
            buckets: vec![Bucket::default()],
            bucket_bits: 0,
            changes: BTreeMap::new(),
            record_bytes: 0,
            keys: 0,
        }
    }
}

/// Two maps are equal when they hold the same keys and values (the layout is a cache).
impl PartialEq for Kv {
    fn eq(&self, other: &Kv) -> bool {
        fn pairs(kv: &Kv) -> impl Iterator<Item = (&[u8], &[u8])> {
            kv.records().map(|record| (record.key, record.value))
        }
        self.keys == other.keys && pairs(self).eq(pairs(other))
    }
}

impl Eq for Kv {}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = |field: &[u8]| Bytes::copy_from_slice(field);
        f.debug_map()
            .entries(
                self.records()
                    .map(|record| (bytes(record.key), bytes(record.value))),
            )
            .finish()
    }
}

impl Kv {
    /// An empty map.
    pub fn new() -> Kv {
        Kv::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Executes one operation: the semantics every replica and the reference model share.
    pub fn execute(&mut self, op: KvOp) -> KvResult {
        match op {
            KvOp::Put(key, value) => {
                self.put(key_hash(&key), &key, &value);
                KvResult::Ok
            }
            KvOp::Get(key) => self.read(&key),
            KvOp::Delete(key) => {
                self.delete(key_hash(&key), &key);
                KvResult::Ok
            }
            KvOp::Cas(key, old, new) => {
                let hash = key_hash(&key);
                let current = self.get(hash, &key);
                if current == old {
                    self.put(hash, &key, &new);
                    KvResult::Ok
                } else {
                    KvResult::CasFail(current)
                }
            }
        }
    }

    fn read(&self, key: &Bytes) -> KvResult {
        match self.get(key_hash(key), key) {
            Some(value) => KvResult::Value(value),
            None => KvResult::Nil,
        }
    }

    /// The value of `key` (whose hash is `hash`).
    fn get(&self, hash: u64, key: &Bytes) -> Option<Bytes> {
        match self.changes.get(&(hash, key.clone())) {
            Some(change) => change.clone(),
            None => self.bucket(hash).get(hash, key),
        }
    }

    /// The bucket that held `hash` at the last fold.
    fn bucket(&self, hash: u64) -> &Bucket {
        &self.buckets[bucket_of(hash, self.bucket_bits)]
    }

    /// Counts a change of `key` from `old` to `new` (`None`: absent).
    fn account(&mut self, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        if let Some(old) = old {
            self.record_bytes -= record_len(key, old);
            self.keys -= 1;
        }
        if let Some(new) = new {
            self.record_bytes += record_len(key, new);
            self.keys += 1;
        }
    }

    /// Sets `key` (whose hash is `hash`) to a copy of `value`; the key is copied too when
    /// it is not among the changes yet.
    fn put(&mut self, hash: u64, key: &Bytes, value: &[u8]) {
        let value = Bytes::copy_from_slice(value);
        let old = match self.changes.get_mut(&(hash, key.clone())) {
            Some(change) => change.replace(value.clone()),
            None => {
                let old = self.bucket(hash).get(hash, key);
                let key = Bytes::copy_from_slice(key);
                self.changes.insert((hash, key), Some(value.clone()));
                old
            }
        };
        self.account(key, old.as_deref(), Some(&value));
        self.fold_if_large();
    }

    /// Removes `key` (whose hash is `hash`), if present. A bucket that holds it gets a
    /// deletion among the changes; a key only among the changes just leaves them.
    fn delete(&mut self, hash: u64, key: &Bytes) {
        let at = (hash, key.clone());
        let in_bucket = self.bucket(hash).get(hash, key);
        let old = match (self.changes.get_mut(&at), &in_bucket) {
            (Some(change), Some(_)) => change.take(),
            (Some(_), None) => self.changes.remove(&at).flatten(),
            (None, Some(_)) => {
                let key = Bytes::copy_from_slice(key);
                self.changes.insert((hash, key), None);
                in_bucket.clone()
            }
            (None, None) => None,
        };
        self.account(key, old.as_deref(), None);
        self.fold_if_large();
    }

    /// Folds the changes into the buckets once they are many (see [`CHANGES_MIN`]).
    fn fold_if_large(&mut self) {
        if self.changes.len() > CHANGES_MIN.max(self.keys / 4) {
            self.fold();
        }
    }

    /// Rebuilds the buckets the changes touch, or all of them in the layout the state's
    /// size now asks for, and empties the changes.
    fn fold(&mut self) {
        let bits = bucket_bits_for(self.record_bytes);
        if bits != self.bucket_bits {
            self.relayout(bits);
        } else {
            self.rebuild_changed();
        }
        self.changes.clear();
    }

    /// Rebuilds each bucket the changes touch, found from the changes themselves (so that
    /// a few changes cost a few buckets, whatever the number of buckets).
    fn rebuild_changed(&mut self) {
        let bits = self.bucket_bits;
        let mut changed: Vec<usize> = (self.changes.keys())
            .map(|(hash, _)| bucket_of(*hash, bits))
            .collect();
        changed.dedup();
        let mut writer = Writer::default();
        for index in changed {
            let bucket = std::mem::take(&mut self.buckets[index]);
            let changes = self.changes.range(bucket_range(index, bits));
            merge(bucket.records(), changes).for_each(|record| writer.push(record));
            self.buckets[index] = writer.finish();
        }
    }

    /// Rewrites every bucket into the layout of 2^bits buckets. Old buckets are dropped one
    /// by one as they are rewritten, so this holds at most one bucket twice, not the state.
    fn relayout(&mut self, bits: u32) {
        let old_bits = std::mem::replace(&mut self.bucket_bits, bits);
        let mut builder = Builder::new(bits);
        for (index, bucket) in std::mem::take(&mut self.buckets).into_iter().enumerate() {
            let changes = self.changes.range(bucket_range(index, old_bits));
            merge(bucket.records(), changes).for_each(|record| builder.push(record));
        }
        self.buckets = builder.finish();
    }

    /// Heap bytes of the buckets: records, their index, page handles, the bucket table.
    #[cfg(test)]
    fn bucket_heap_bytes(&self) -> usize {
        let buckets = self.buckets.iter().map(|b| b.bytes() + b.index_bytes());
        buckets.sum::<usize>() + self.buckets.capacity() * size_of::<Bucket>()
    }

    /// The current records in state order.
    fn records(&self) -> impl Iterator<Item = Record<'_>> {
        merge(
            self.buckets.iter().flat_map(Bucket::records),
            self.changes.iter(),
        )
    }
}

impl StateMachine for Kv {
    fn name(&self) -> &'static str {
        "kv"
    }

    fn apply(&mut self, _op: u64, _timestamp: u64, operation: &Bytes) -> Bytes {
        match KvOp::decode(operation) {
            Some(op) => self.execute(op).encode(),
            None => KvResult::Invalid.encode(),
        }
    }

    fn query(&self, query: &Bytes) -> Bytes {
        match KvOp::decode(query) {
            Some(KvOp::Get(key)) => self.read(&key).encode(),
            _ => KvResult::Invalid.encode(),
        }
    }

    /// Folds the changes (rebuilding only the buckets they touch, or all when the layout
    /// changed), hashes the rebuilt buckets' pages and shares the others'.
    fn snapshot(&mut self) -> Snapshot {
        self.fold();
        let mut pages = Vec::new();
        for bucket in &mut self.buckets {
            pages.extend_from_slice(bucket.pages());
        }
        Snapshot::new(pages)
    }

    /// Checks every record, builds the buckets of the layout the state's size asks for,
    /// then checks that their pages are exactly the received ones (same records, same
    /// cuts), so a restored replica's later checkpoints equal everyone else's. The bytes
    /// are copied into buckets of this map's own: the received pages, and the message they
    /// came in, are not kept alive by the state. A byte comparison stands in for hashing
    /// again (the digests were verified at the wire's gate).
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        const NOT_CANONICAL: SnapshotError =
            SnapshotError("kv pages are not laid out as kv lays them out");
        let summary = restore::check(snapshot)?;
        let bits = bucket_bits_for(summary.record_bytes);
        let mut builder = Builder::new(bits);
        for record in restore::records(snapshot) {
            if !builder.fits(&record) {
                return Err(SnapshotError("kv bucket larger than 4 GiB"));
            }
            builder.push(record);
        }
        let mut buckets = builder.finish();
        let mut received = snapshot.pages();
        for bucket in &mut buckets {
            let taken = bucket.adopt_pages(received).ok_or(NOT_CANONICAL)?;
            received = &received[taken..];
        }
        if !received.is_empty() {
            return Err(NOT_CANONICAL);
        }
        *self = Kv {
            buckets,
            bucket_bits: bits,
            changes: BTreeMap::new(),
            record_bytes: summary.record_bytes,
            keys: summary.keys,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
