//! The null service: keeps nothing, answers nothing. Benchmarks use it to measure
//! replication alone.

use super::{Snapshot, SnapshotError, StateMachine};
use bytes::Bytes;

/// A service that does nothing.
#[derive(Clone, Debug, Default)]
pub struct Null;

impl StateMachine for Null {
    fn apply(&mut self, _op: u64, _timestamp: u64, _operation: &Bytes) -> Bytes {
        Bytes::new()
    }

    fn query(&self, _query: &Bytes) -> Bytes {
        Bytes::new()
    }

    /// No state, no pages.
    fn snapshot(&mut self) -> Snapshot {
        Snapshot::empty()
    }

    fn name(&self) -> &'static str {
        "null"
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        if !snapshot.pages().is_empty() {
            return Err(SnapshotError("null snapshot has pages"));
        }
        Ok(())
    }
}
