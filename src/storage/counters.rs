//! Bytes the data directory wrote, by kind: what `vsr stats` reports as `storage_*` in
//! its runtime counters, so that a run can tell the journal's appends from its
//! compactions and from checkpoint files (`perf/durability.md`).
//!
//! Process-wide atomics, not fields of `DataDir`: the directory lives on the storage
//! thread and its checkpoint files are written by a thread of their own, while the stats
//! are read on the event loop. A `vsr replica` process has one data directory; a test
//! that opens several in one process sees their sum.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter.
pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds `value`.
    pub fn add(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    /// The sum so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bytes of journal batches appended (group commits and checkpoint markers).
pub static JOURNAL_APPEND_BYTES: Counter = Counter::new();
/// Bytes of journal images written by compactions (and rewrites on damage).
pub static JOURNAL_COMPACTION_BYTES: Counter = Counter::new();
/// Bytes of zeros written to prepare journal files (spares, and a journal grown in
/// place) so that a batch's `fdatasync` flushes no metadata.
pub static JOURNAL_ZERO_BYTES: Counter = Counter::new();
/// Journal compactions.
pub static JOURNAL_COMPACTIONS: Counter = Counter::new();
/// Bytes of checkpoint files written.
pub static CHECKPOINT_FILE_BYTES: Counter = Counter::new();
/// Checkpoint files written holding every page.
pub static CHECKPOINT_FILES_FULL: Counter = Counter::new();
/// Checkpoint files written holding only the pages the previous files lack.
pub static CHECKPOINT_FILES_INCREMENTAL: Counter = Counter::new();
/// Pages a checkpoint file named in an earlier file of its chain instead of holding.
pub static CHECKPOINT_PAGES_SHARED: Counter = Counter::new();
