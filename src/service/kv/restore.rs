//! Reading a kv snapshot's pages back into records: the checks a received snapshot must
//! pass before any of it becomes state. Pages came from another replica; their digests
//! were verified at the wire's gate, their contents are checked here (refused, never a
//! panic, for anything kv's own `snapshot` would not produce).

use super::layout::{key_hash, Record};
use crate::service::{Snapshot, SnapshotError};

/// What a snapshot holds, found by [`check`].
pub(super) struct Summary {
    /// Bytes of all records as pages hold them.
    pub record_bytes: u64,
    /// Number of records (keys).
    pub keys: usize,
}

/// Checks every record of `snapshot`: no empty page, no truncated record, records in
/// strictly ascending state order (so none repeated).
pub(super) fn check(snapshot: &Snapshot) -> Result<Summary, SnapshotError> {
    let mut summary = Summary {
        record_bytes: 0,
        keys: 0,
    };
    let mut last: Option<(u64, &[u8])> = None;
    for page in snapshot.pages() {
        if page.is_empty() {
            return Err(SnapshotError("kv snapshot has an empty page"));
        }
        for record in PageRecords(page.bytes()) {
            let record = record?;
            if last.is_some_and(|last| last >= (record.hash, record.key)) {
                return Err(SnapshotError("kv records out of order"));
            }
            last = Some((record.hash, record.key));
            summary.record_bytes += record.len();
            summary.keys += 1;
        }
    }
    Ok(summary)
}

/// The records of a snapshot that passed [`check`], in order.
pub(super) fn records(snapshot: &Snapshot) -> impl Iterator<Item = Record<'_>> {
    (snapshot.pages().iter())
        .flat_map(|page| PageRecords(page.bytes()))
        .map(|record| record.expect("checked before"))
}

/// The records of one page's bytes, each field a `u32` length and its bytes.
struct PageRecords<'a>(&'a [u8]);

impl<'a> PageRecords<'a> {
    fn field(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let field = rest.get(..len)?;
        self.0 = &rest[len..];
        Some(field)
    }
}

impl<'a> Iterator for PageRecords<'a> {
    type Item = Result<Record<'a>, SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let record = (|| {
            let key = self.field().ok_or(SnapshotError("kv page key truncated"))?;
            let value = self
                .field()
                .ok_or(SnapshotError("kv page value truncated"))?;
            Ok(Record {
                hash: key_hash(key),
                key,
                value,
            })
        })();
        if record.is_err() {
            // Nothing after a truncated record can be read.
            self.0 = &[];
        }
        Some(record)
    }
}
