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
//! the changes since they were built, as one sequence), `fold` (changes written into
//! buckets, and the snapshot of the result), `restore` (installing a received snapshot),
//! `ops` (the encoding).

mod bucket;
mod build;
mod changes;
mod fold;
mod layout;
mod merge;
mod ops;
mod restore;

pub use ops::{KvOp, KvResult};

use super::{Deferred, PreparedRestore, Snapshot, SnapshotError, StateMachine, PAGE_BYTES_TARGET};
use bytes::Bytes;
use changes::Changes;
use fold::{Buckets, Fold, Folded};
use layout::{bucket_of, key_hash, Record, RECORD_HEADER_BYTES};
use merge::merge;
use std::sync::Arc;

/// Changes kept beside the buckets before they are folded into them even without a
/// snapshot, in a `Kv` used without checkpoints: at least this many, and at least a
/// quarter of the keys, so that a fold's rewrite of the buckets is amortised over as many
/// changes. Counted as entries the changes hold, replaced ones included, so that a key
/// rewritten again and again does not grow them without bound. (A replica's `Kv` folds only in its checkpoints' builds, off the event loop:
/// see `Kv::deferred_snapshots`.)
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
/// (`changes`); a snapshot *folds* them in (`fold`), rebuilding and re-hashing only the
/// buckets they touch (all of them when the layout grows or shrinks), and shares the other
/// buckets' pages as they were. Keys and values are copied when applied, into the changes'
/// own blocks (`changes`), so no entry pins the receive buffer of the frame it came in.
///
/// Snapshots in the background (paper 5.1's copy-on-write): [`StateMachine::
/// snapshot_deferred`] moves the buckets and the changes as they are into a [`Fold`] and
/// hands it to whichever thread runs it, while the map goes on executing with a fresh set
/// of changes (`folding`); a lookup reads the changes, then the fold's state. The fold
/// replaces the buckets one at a time (`fold`): once a bucket is rewritten, lookups read
/// the new one and the old one is freed (and the frozen changes' index slots; their
/// bytes, a few MiB at most, once the last bucket is), so the map holds
/// the state about once while a fold runs, not its old buckets beside the new ones. The
/// map takes the fold's buckets at its next operation after the fold finished. (A
/// checkpoint that holds the previous snapshot keeps the records of its pages alive until
/// it is dropped: a bucket rebuilt meanwhile exists twice.)
#[derive(Clone)]
pub struct Kv {
    /// The 2^`bucket_bits` buckets as of the last fold that the map took: bucket i holds
    /// the records whose hash's top bits are i, as they were then. Empty, and never read,
    /// while a fold is in flight: they were moved into it.
    buckets: Buckets,
    bucket_bits: u32,
    /// A fold in flight (run elsewhere, or not yet): the buckets and the changes it
    /// folds.
    folding: Option<Folding>,
    /// Every key changed since the last fold (or since the changes were frozen for a fold
    /// in flight). Keys and values are copied into blocks of their own.
    changes: Changes,
    /// Bytes of all current records as pages hold them: the basis of the layout.
    record_bytes: u64,
    /// Number of current keys.
    keys: usize,
    /// Snapshots are taken deferred (by a replica, at its checkpoints): the changes wait
    /// for them, which fold them off the executing thread, instead of being folded here
    /// once they are many (a fold of a large state would stall the replica's event loop;
    /// the replica bounds the changes: a build gets at most three checkpoint intervals).
    deferred_snapshots: bool,
    /// The largest page (`PAGE_BYTES_TARGET` unless made smaller): part of the layout, so
    /// the same on every replica.
    page_bytes: usize,
}

/// A fold in flight (see [`Kv`]).
#[derive(Clone)]
struct Folding {
    /// What it folds, and how far it got: the state before the map's changes.
    state: Arc<Fold>,
    /// The fold, run by whoever needs it first.
    fold: Deferred<Folded>,
}

impl Default for Kv {
    fn default() -> Kv {
        Kv {
            buckets: Arc::new(vec![Arc::default()]),
            bucket_bits: 0,
            folding: None,
            changes: Changes::new(),
            record_bytes: 0,
            keys: 0,
            deferred_snapshots: false,
            page_bytes: PAGE_BYTES_TARGET,
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

    /// An empty map whose snapshots cut pages of at most `page_bytes` (1 to
    /// `PAGE_BYTES_TARGET`; buckets then aim at four such pages). Every replica of a
    /// cluster must use the same: a snapshot laid out for another size does not restore.
    /// The simulator uses tiny pages, so that a small state is many pages and a transfer
    /// takes many parts.
    pub fn with_page_bytes(page_bytes: usize) -> Kv {
        assert!(
            (1..=PAGE_BYTES_TARGET).contains(&page_bytes),
            "page size {page_bytes} out of 1..={PAGE_BYTES_TARGET}"
        );
        Kv {
            page_bytes,
            ..Kv::default()
        }
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
        self.take_finished_fold();
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
        match self.changes.get(hash, key) {
            Some(change) => change.map(Bytes::copy_from_slice),
            None => self.base_get(hash, key),
        }
    }

    /// The value of `key` before the changes: in the state of a fold in flight, or else
    /// in its bucket.
    fn base_get(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        match &self.folding {
            Some(folding) => folding.state.get(hash, key),
            None => self.buckets[bucket_of(hash, self.bucket_bits)].get(hash, key),
        }
    }

    /// Counts a change of a key of `key_len` bytes from a value of `old` bytes to one of
    /// `new` (`None`: absent).
    fn account(&mut self, key_len: usize, old: Option<usize>, new: Option<usize>) {
        let record_len = |value_len| (RECORD_HEADER_BYTES + key_len + value_len) as u64;
        if let Some(old) = old {
            self.record_bytes -= record_len(old);
            self.keys -= 1;
        }
        if let Some(new) = new {
            self.record_bytes += record_len(new);
            self.keys += 1;
        }
    }

    /// The length of the value of `key` (whose hash is `hash`), if present.
    fn value_len(&self, hash: u64, key: &Bytes) -> Option<usize> {
        match self.changes.get(hash, key) {
            Some(change) => change.map(<[u8]>::len),
            None => self.base_get(hash, key).as_deref().map(<[u8]>::len),
        }
    }

    /// Sets `key` (whose hash is `hash`) to `value`, both copied into the changes.
    fn put(&mut self, hash: u64, key: &Bytes, value: &[u8]) {
        let old = self.value_len(hash, key);
        self.changes.set(hash, key, Some(value));
        self.account(key.len(), old, Some(value.len()));
        self.fold_if_large();
    }

    /// Removes `key` (whose hash is `hash`), if present. A key the state before the
    /// changes holds gets a deletion among the changes; a key only among the changes just
    /// leaves them.
    fn delete(&mut self, hash: u64, key: &Bytes) {
        let in_base = self.base_get(hash, key).as_deref().map(<[u8]>::len);
        let old = match self.changes.get(hash, key) {
            Some(change) => change.map(<[u8]>::len),
            None => in_base,
        };
        if old.is_none() {
            return; // Absent already: nothing changes.
        }
        if in_base.is_some() {
            self.changes.set(hash, key, None);
        } else {
            self.changes.remove(hash, key);
        }
        self.account(key.len(), old, None);
        self.fold_if_large();
    }

    /// Folds the changes into the buckets once they are many (see [`CHANGES_MIN`]), here
    /// and without hashing, unless a fold is in flight (then they wait for the next one)
    /// or snapshots are deferred (then they wait for the next snapshot).
    fn fold_if_large(&mut self) {
        if self.folding.is_none()
            && !self.deferred_snapshots
            && self.changes.entries() > CHANGES_MIN.max(self.keys / 4)
        {
            (self.buckets, self.bucket_bits) = self.take_fold().run_unhashed();
        }
    }

    /// A fold of the changes into the buckets, both moved into it: this map reads neither
    /// until it takes the fold's result (or through the fold).
    fn take_fold(&mut self) -> Fold {
        Fold::new(
            std::mem::take(&mut self.buckets),
            self.bucket_bits,
            std::mem::take(&mut self.changes),
            self.record_bytes,
            self.page_bytes,
        )
    }

    /// Moves the buckets and the changes into a fold and returns it, to be run by whoever
    /// needs it first; a fold still in flight is finished (here, if nobody ran it) and
    /// taken first.
    fn start_fold(&mut self) -> Deferred<Folded> {
        if let Some(folding) = &self.folding {
            folding.fold.run();
            self.take_finished_fold();
        }
        let state = Arc::new(self.take_fold());
        let folded = state.clone();
        let fold = Deferred::new(move || folded.run());
        self.folding = Some(Folding {
            state,
            fold: fold.clone(),
        });
        fold
    }

    /// Takes the buckets of a fold that finished, dropping the fold (the new buckets hold
    /// all it held). The state is the same before and after.
    fn take_finished_fold(&mut self) {
        let Some(folded) = self.folding.as_ref().and_then(|f| f.fold.get()) else {
            return;
        };
        self.buckets = folded.buckets.clone();
        self.bucket_bits = folded.bits;
        self.folding = None;
    }

    /// Heap bytes of the buckets: records, their index, page handles, the bucket table.
    #[cfg(test)]
    fn bucket_heap_bytes(&self) -> usize {
        let buckets = self.buckets.iter().map(|b| b.bytes() + b.index_bytes());
        let handles = self.buckets.capacity() * size_of::<Arc<bucket::Bucket>>();
        buckets.sum::<usize>() + handles + self.buckets.len() * size_of::<bucket::Bucket>()
    }

    /// The current records in state order (a fold in flight is finished first, here if
    /// nobody ran it).
    fn records(&self) -> impl Iterator<Item = Record<'_>> {
        let buckets = match &self.folding {
            Some(folding) => &folding.fold.run().buckets,
            None => &self.buckets,
        };
        merge(
            buckets.iter().flat_map(|bucket| bucket.records()),
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

    /// A get, read straight from the query's bytes and answered with one allocation (the
    /// result's exact size), or none for an absent key: the bytes
    /// `KvResult::encode` makes of `Kv::execute`'s answer, without the key's copy out of
    /// the query, the value's copy out of the map and the growing encoding buffer.
    fn query(&self, query: &Bytes) -> Bytes {
        let Some(key) = ops::get_key(query) else {
            return ops::encoded_invalid();
        };
        let hash = key_hash(key);
        match self.changes.get(hash, key) {
            Some(Some(value)) => ops::encoded_value(value),
            Some(None) => ops::encoded_nil(),
            None => match self.base_get(hash, key) {
                Some(value) => ops::encoded_value(&value),
                None => ops::encoded_nil(),
            },
        }
    }

    /// Folds the changes (rebuilding only the buckets they touch, or all when the layout
    /// changed), hashes the rebuilt buckets' pages and shares the others', here.
    fn snapshot(&mut self) -> Snapshot {
        if let Some(folding) = &self.folding {
            folding.fold.run();
            self.take_finished_fold();
        }
        let folded = self.take_fold().run();
        (self.buckets, self.bucket_bits) = (folded.buckets, folded.bits);
        folded.snapshot
    }

    /// The same fold as [`Kv::snapshot`], run by the caller's worker: the map keeps
    /// executing meanwhile (see [`Kv`]).
    fn snapshot_deferred(&mut self) -> Deferred<Snapshot> {
        self.deferred_snapshots = true;
        let fold = self.start_fold();
        Deferred::new(move || {
            let snapshot = fold.run().snapshot.clone();
            return_freed_memory();
            snapshot
        })
    }

    /// Takes the fold's buckets at once. The fold let go of the old buckets as it went,
    /// and of the frozen changes; what an idle map would hold until its next operation
    /// without this is the fold's own table of bucket handles and the result's.
    fn snapshot_built(&mut self) {
        self.take_finished_fold();
    }

    /// Installs the received pages as the buckets' own (`restore`): each bucket's pages
    /// copied into one buffer, every record parsed and checked, the cuts checked against
    /// the ones this map would make, so a restored replica's later checkpoints equal
    /// everyone else's. The digests, verified at the wire's gate, are carried over, not
    /// computed again; the received pages, and the message they came in, are not kept
    /// alive by the state.
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        let restored = restore::restore(snapshot, self.page_bytes)?;
        self.install(restored);
        Ok(())
    }

    /// All of `restore` but the swap (the copies, the parse, the checks: a function of the
    /// pages alone), on the thread that runs it.
    fn prepare_restore(&self, snapshot: &Snapshot) -> Option<Deferred<PreparedRestore>> {
        let (snapshot, page_bytes) = (snapshot.clone(), self.page_bytes);
        Some(Deferred::new(move || {
            PreparedRestore::new(Prepared {
                page_bytes,
                restored: restore::restore(&snapshot, page_bytes),
            })
        }))
    }

    fn restore_prepared(
        &mut self,
        snapshot: &Snapshot,
        prepared: &PreparedRestore,
    ) -> Result<(), SnapshotError> {
        match prepared.take::<Prepared>() {
            // Laid out for this map's pages (always, unless handed another map's).
            Some(prepared) if prepared.page_bytes == self.page_bytes => {
                self.install(prepared.restored?);
                Ok(())
            }
            _ => self.restore(snapshot),
        }
    }
}

/// A restore prepared off the loop (`prepare_restore`): the buckets of the snapshot, or
/// why it is refused, for pages of `page_bytes`.
struct Prepared {
    page_bytes: usize,
    restored: Result<restore::Restored, SnapshotError>,
}

impl Kv {
    /// Replaces the state with `restored`'s buckets. A fold in flight is dropped with the
    /// state it folds.
    fn install(&mut self, restored: restore::Restored) {
        *self = Kv {
            buckets: restored.buckets,
            bucket_bits: restored.bits,
            folding: None,
            changes: Changes::new(),
            record_bytes: restored.record_bytes,
            keys: restored.keys,
            deferred_snapshots: self.deferred_snapshots,
            page_bytes: self.page_bytes,
        };
    }
}

/// Hands the free memory of the process's heaps back to the system, where whole pages of
/// it are free: called once a deferred fold finished, on the thread that ran it.
///
/// A fold frees the old version of every bucket it rewrote and the frozen changes, but the
/// allocator keeps that memory mapped, and the next fold's buckets, each a little larger
/// than the one it replaces, fit only part of those places: without this, a replica's
/// resident set holds the holes of every fold before (`perf/kv_memory.md`, 2026-12-02).
/// glibc only (`malloc_trim`); other allocators return memory by their own rules.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests;
