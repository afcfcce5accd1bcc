//! The replicated service: the deterministic state machine the log drives (paper 4.1's
//! "upcall"), and the services that ship with vsr.
//!
//! A service sees only committed operations, in op order, each exactly once. `apply`
//! must be deterministic: the same operations with the same timestamps give the same
//! results and state on every replica.

pub mod kv;
pub mod log;
pub mod null;

use bytes::Bytes;

pub use kv::Kv;
pub use log::LogService;
pub use null::Null;

/// A deterministic state machine replicated by vsr.
pub trait StateMachine {
    /// Applies a committed operation and returns its result.
    ///
    /// `op` is the operation's position in the log and `timestamp` the primary's clock
    /// when it ordered it (paper 4.4); both are identical on every replica.
    fn apply(&mut self, op: u64, timestamp: u64, operation: &Bytes) -> Bytes;

    /// Answers a read-only query against the current state (fast reads, paper 6.3).
    fn query(&self, query: &Bytes) -> Bytes;

    /// The whole state as bytes, for a checkpoint (paper 5.1). Must be deterministic: two
    /// replicas in the same state produce the same bytes.
    fn snapshot(&self) -> Bytes;

    /// Replaces the state with a snapshot taken by [`StateMachine::snapshot`].
    fn restore(&mut self, snapshot: &Bytes) -> Result<(), SnapshotError>;
}

/// A snapshot could not be restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("corrupt snapshot: {0}")]
pub struct SnapshotError(pub &'static str);
