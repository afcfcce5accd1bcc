//! The committed-op stream: vsr as a log replicator, without a `StateMachine` of your
//! own. [`ReplicaServer::spawn_log`](super::ReplicaServer::spawn_log) runs a replica of
//! the log service (`service::LogService`) whose every committed operation goes into a
//! channel that [`CommittedOps`] reads.
//!
//! What the stream guarantees: operations arrive in op order, each once per replica
//! process, and only once committed (a majority holds it; it survives any f failures,
//! and with `--durability disk` all replicas crashing at once). Every replica delivers
//! the same sequence. A view change never reorders or retracts what was delivered; it
//! may delay the next operation. A replica restarted from a checkpoint (or brought up to
//! date by one) resumes after the checkpoint's op: operations before it are not
//! delivered again, so an embedder that needs them all keeps its own position (`op`).
//!
//! The channel is bounded ([`COMMITTED_OPS_QUEUED_MAX`]): a consumer that falls that far
//! behind makes the replica wait for it, which is backpressure on the whole cluster when
//! the replica is the primary. Consume promptly, or hand the operations on.

use crate::service::LogService;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use std::time::Duration;

/// Operations delivered and not yet read, at most.
pub const COMMITTED_OPS_QUEUED_MAX: usize = 65_536;

/// One committed operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOp {
    /// Its position in the log: rising, but not without gaps, since the ops that
    /// register client sessions are the library's and are not streamed (nor, after a
    /// restart from a checkpoint, the ops before it).
    pub op: u64,
    /// The primary's clock when it ordered the operation (nanoseconds since the Unix
    /// epoch, never decreasing: paper 4.4).
    pub timestamp: u64,
    /// The operation's bytes, as the client sent them.
    pub operation: Bytes,
}

/// The stream of a replica's committed operations. As an iterator it blocks for the
/// next one and ends when the replica stops.
#[derive(Debug)]
pub struct CommittedOps {
    receiver: Receiver<CommittedOp>,
}

impl CommittedOps {
    /// The next operation, waiting at most `timeout`; `None` on timeout or once the
    /// replica stopped and everything was read.
    pub fn next_timeout(&self, timeout: Duration) -> Option<CommittedOp> {
        self.receiver.recv_timeout(timeout).ok()
    }

    /// The next operation if one is waiting.
    pub fn try_next(&self) -> Option<CommittedOp> {
        self.receiver.try_recv().ok()
    }

    /// The channel itself, to `select!` over with others.
    pub fn receiver(&self) -> &Receiver<CommittedOp> {
        &self.receiver
    }
}

impl Iterator for CommittedOps {
    type Item = CommittedOp;

    fn next(&mut self) -> Option<CommittedOp> {
        self.receiver.recv().ok()
    }
}

/// The log service feeding a new stream, and the stream.
pub(super) fn log_service() -> (LogService<impl FnMut(u64, u64, &Bytes)>, CommittedOps) {
    let (sender, receiver): (Sender<CommittedOp>, _) =
        crossbeam_channel::bounded(COMMITTED_OPS_QUEUED_MAX);
    let service = LogService::new(move |op, timestamp, operation: &Bytes| {
        // A consumer that dropped its end wants no more: the replica goes on without it.
        let _ = sender.send(CommittedOp {
            op,
            timestamp,
            operation: operation.clone(),
        });
    });
    (service, CommittedOps { receiver })
}
