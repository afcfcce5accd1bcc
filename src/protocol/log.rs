//! The replica's log: entries with consecutive op numbers after a `base` op.
//!
//! Entries at or below `base` are gone: either trimmed after a checkpoint (paper 5.1) or
//! never held because the replica restored a checkpoint at `base`. Invariant: the entry at
//! op `base + i + 1` is `entries[i]`, and timestamps strictly increase along the log.
//!
//! The log also remembers what changed since the replica last described it in writes
//! (`take_changes`), so that no handler can change the log and forget to persist it.

use super::message::{Entry, Op};
use std::collections::VecDeque;

/// The in-memory log.
#[derive(Clone, Debug, Default)]
pub struct Log {
    base: Op,
    base_timestamp: u64,
    entries: VecDeque<Entry>,
    /// The op up to which the writes issued so far describe this log; ≤ `op()`.
    written_op: Op,
    /// The base as the writes issued so far describe it (a reset describes its own;
    /// trims are described only by a witness: `LogChanges::started_after`).
    written_base: Op,
    /// Since the last `take_changes`: the log was reset to start after this op.
    reset_base: Option<Op>,
    /// Since the last `take_changes`: the lowest op kept by a truncation that removed
    /// entries already described by a write.
    truncated_after: Option<Op>,
}

/// How the log changed since the last [`Log::take_changes`], in the order a store must
/// apply it: reset, truncate, append.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogChanges {
    /// The log restarted empty after this op.
    pub reset_base: Option<Op>,
    /// The log's base and its timestamp now, when the base moved since the last call
    /// (trimmed, or reset): what a witness, which keeps no checkpoint, writes so that its
    /// store forgets too (`Write::LogStart`).
    pub started_after: Option<(Op, u64)>,
    /// Entries after this op were removed.
    pub truncated_after: Option<Op>,
    /// Entries `from..=to` were appended.
    pub appended: Option<(Op, Op)>,
}

impl Log {
    /// The op before the first entry held.
    pub fn base(&self) -> Op {
        self.base
    }

    /// The op of the last entry (or `base` when empty).
    pub fn op(&self) -> Op {
        self.base + self.entries.len() as Op
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entries are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The timestamp of the last entry (or of `base`).
    pub fn timestamp_last(&self) -> u64 {
        self.entries
            .back()
            .map_or(self.base_timestamp, |entry| entry.timestamp)
    }

    /// The entry at `op`, if held.
    pub fn get(&self, op: Op) -> Option<&Entry> {
        if op <= self.base {
            return None;
        }
        self.entries.get((op - self.base - 1) as usize)
    }

    /// Appends the entry for op `self.op() + 1`. Timestamps of a correct primary's log
    /// increase (`check_timestamps`, which the simulator runs); entries from the wire are
    /// not re-checked here, so that no peer can make an append panic.
    pub fn push(&mut self, entry: Entry) {
        self.entries.push_back(entry);
    }

    /// Drops every entry after `op` (uncommitted entries replaced by a view change).
    pub fn truncate(&mut self, op: Op) {
        assert!(op >= self.base, "truncate below the log base");
        self.entries.truncate((op - self.base) as usize);
        if op < self.written_op {
            self.written_op = op;
            self.truncated_after = Some(self.truncated_after.map_or(op, |after| after.min(op)));
        }
    }

    /// Drops every entry at or below `op` (after a checkpoint made them redundant).
    pub fn trim(&mut self, op: Op) {
        while self.base < op {
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            self.base += 1;
            self.base_timestamp = entry.timestamp;
        }
    }

    /// Empties the log and restarts it after `base` (a checkpoint restored at `base`).
    pub fn reset(&mut self, base: Op, base_timestamp: u64) {
        self.entries.clear();
        self.base = base;
        self.base_timestamp = base_timestamp;
        self.written_op = base;
        self.written_base = base;
        self.reset_base = Some(base);
        self.truncated_after = None;
    }

    /// What changed since the previous call; from now on the log counts as described.
    /// Entries trimmed before they were ever described need no write: the checkpoint that
    /// trimmed them covers them.
    pub fn take_changes(&mut self) -> LogChanges {
        debug_assert!(self.written_op <= self.op());
        let from = self.written_op.max(self.base) + 1;
        let to = self.op();
        self.written_op = to;
        let started_after = (self.base != self.written_base || self.reset_base.is_some())
            .then_some((self.base, self.base_timestamp));
        self.written_base = self.base;
        LogChanges {
            reset_base: self.reset_base.take(),
            started_after,
            truncated_after: self.truncated_after.take(),
            appended: (from <= to).then_some((from, to)),
        }
    }

    /// Clones the entries in `from ..= to` (both held), stopping early once `bytes_max` is
    /// reached (at least one entry is returned when the range is not empty).
    pub fn slice(&self, from: Op, to: Op, bytes_max: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        if from > to {
            return out;
        }
        assert!(from > self.base && to <= self.op(), "slice outside the log");
        let mut bytes = 0;
        for op in from..=to {
            let entry = self.get(op).expect("entry in range");
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Checks the timestamp invariant (O(n): for tests and the simulator).
    pub fn check_timestamps(&self) {
        let mut last = self.base_timestamp;
        for entry in &self.entries {
            assert!(
                entry.timestamp > last,
                "log timestamps must strictly increase"
            );
            last = entry.timestamp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::Operation;
    use bytes::Bytes;

    fn log_of(ops: Op) -> Log {
        let mut log = Log::default();
        for op in 1..=ops {
            log.push(Entry {
                client: 1,
                session: 1,
                request: op as u32,
                timestamp: op * 10,
                operation: Operation::Apply,
                body: Bytes::new(),
            });
        }
        log
    }

    #[test]
    fn a_moved_base_is_reported_once_with_its_timestamp() {
        let mut log = log_of(10);
        let changes = log.take_changes();
        assert_eq!(
            (changes.appended, changes.started_after),
            (Some((1, 10)), None)
        );
        // Trimmed: the new base and the timestamp of its op.
        log.trim(4);
        assert_eq!(log.take_changes().started_after, Some((4, 40)));
        assert_eq!(log.take_changes(), LogChanges::default());
        // Reset (a witness's skip): the reset, and the base it ends the input at.
        log.reset(20, 195);
        log.trim(20);
        let changes = log.take_changes();
        assert_eq!(changes.reset_base, Some(20));
        assert_eq!(changes.started_after, Some((20, 195)));
        assert_eq!(changes.appended, None);
    }
}
