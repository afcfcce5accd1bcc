//! The null service: keeps nothing, answers nothing. Benchmarks use it to measure
//! replication alone.

use super::{SnapshotError, StateMachine};
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

    fn snapshot(&self) -> Bytes {
        Bytes::new()
    }

    fn restore(&mut self, _snapshot: &Bytes) -> Result<(), SnapshotError> {
        Ok(())
    }
}
