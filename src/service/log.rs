//! The log service: vsr as a log replicator. It keeps no state of its own and hands each
//! committed operation, in order and exactly once, to a callback.

use super::{Page, Snapshot, SnapshotError, StateMachine};
use bytes::Bytes;

/// Hands every committed operation to `on_commit(op, timestamp, operation)`.
pub struct LogService<F: FnMut(u64, u64, &Bytes)> {
    on_commit: F,
    /// The last op handed over, kept in snapshots so a restored replica knows where the
    /// stream resumes.
    op_last: u64,
}

impl<F: FnMut(u64, u64, &Bytes)> LogService<F> {
    /// A log service calling `on_commit` for each committed operation.
    pub fn new(on_commit: F) -> Self {
        LogService {
            on_commit,
            op_last: 0,
        }
    }

    /// The last op handed to the callback.
    pub fn op_last(&self) -> u64 {
        self.op_last
    }
}

impl<F: FnMut(u64, u64, &Bytes)> StateMachine for LogService<F> {
    fn name(&self) -> &'static str {
        "log"
    }

    fn apply(&mut self, op: u64, timestamp: u64, operation: &Bytes) -> Bytes {
        self.op_last = op;
        (self.on_commit)(op, timestamp, operation);
        Bytes::new()
    }

    fn query(&self, _query: &Bytes) -> Bytes {
        Bytes::copy_from_slice(&self.op_last.to_le_bytes())
    }

    /// One page: the last op handed over.
    fn snapshot(&mut self) -> Snapshot {
        let op_last = Bytes::copy_from_slice(&self.op_last.to_le_bytes());
        Snapshot::new(vec![Page::new(op_last)])
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        let [page] = snapshot.pages() else {
            return Err(SnapshotError("log snapshot is not one page"));
        };
        let bytes: [u8; 8] = page.bytes()[..]
            .try_into()
            .map_err(|_| SnapshotError("log snapshot is not 8 bytes"))?;
        self.op_last = u64::from_le_bytes(bytes);
        Ok(())
    }
}
