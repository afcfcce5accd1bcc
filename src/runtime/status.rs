//! [`ReplicaStatus`]: what an embedder can ask a running replica at any time (its role,
//! view, op, commit), without a round trip through the network.
//!
//! The event loop stores its state into a few atomics in every iteration, before the
//! iteration's messages and replies leave (so a client holding a reply sees its commit
//! here); relaxed stores: a reader sees a recent state, each field at most one iteration
//! old, never a torn value. [`ReplicaServer::status`](super::ReplicaServer::status)
//! reads them from any thread.

use crate::protocol::{Replica, Status};
use crate::service::StateMachine;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// A running replica's state, as of its event loop's latest iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Normal, view change or recovering (paper 4).
    pub status: Status,
    /// Whether it is the primary of its view (and normal): the replica that orders
    /// requests.
    pub is_primary: bool,
    /// The configuration epoch (paper 7).
    pub epoch: u32,
    /// The view.
    pub view: u32,
    /// The highest op in its log.
    pub op: u64,
    /// The highest op it knows committed (and has executed).
    pub commit: u64,
}

/// The loop's side: written every iteration, read by [`ReplicaStatus`] users.
#[derive(Debug)]
pub(super) struct SharedStatus {
    status: AtomicU8,
    is_primary: AtomicBool,
    epoch: AtomicU32,
    view: AtomicU32,
    op: AtomicU64,
    commit: AtomicU64,
}

impl Default for SharedStatus {
    fn default() -> SharedStatus {
        SharedStatus {
            status: AtomicU8::new(encode(Status::Recovering)),
            is_primary: AtomicBool::new(false),
            epoch: AtomicU32::new(0),
            view: AtomicU32::new(0),
            op: AtomicU64::new(0),
            commit: AtomicU64::new(0),
        }
    }
}

impl SharedStatus {
    /// Stores `replica`'s state.
    pub(super) fn publish<S: StateMachine>(&self, replica: &Replica<S>) {
        self.status
            .store(encode(replica.status()), Ordering::Relaxed);
        self.is_primary
            .store(replica.is_primary(), Ordering::Relaxed);
        self.epoch.store(replica.epoch(), Ordering::Relaxed);
        self.view.store(replica.view(), Ordering::Relaxed);
        self.op.store(replica.op(), Ordering::Relaxed);
        self.commit.store(replica.commit(), Ordering::Relaxed);
    }

    /// The latest state stored.
    pub(super) fn read(&self) -> ReplicaStatus {
        ReplicaStatus {
            status: decode(self.status.load(Ordering::Relaxed)),
            is_primary: self.is_primary.load(Ordering::Relaxed),
            epoch: self.epoch.load(Ordering::Relaxed),
            view: self.view.load(Ordering::Relaxed),
            op: self.op.load(Ordering::Relaxed),
            commit: self.commit.load(Ordering::Relaxed),
        }
    }
}

fn encode(status: Status) -> u8 {
    match status {
        Status::Normal => 0,
        Status::ViewChange => 1,
        Status::Recovering => 2,
        Status::Transitioning => 3,
        Status::Retiring => 4,
        Status::Joining => 5,
    }
}

fn decode(status: u8) -> Status {
    match status {
        0 => Status::Normal,
        1 => Status::ViewChange,
        3 => Status::Transitioning,
        4 => Status::Retiring,
        5 => Status::Joining,
        _ => Status::Recovering,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::protocol::Start;
    use crate::service::Null;

    #[test]
    fn what_is_published_reads_back() {
        let shared = SharedStatus::default();
        assert_eq!(shared.read().status, Status::Recovering);
        assert!(!shared.read().is_primary);
        let replica = Replica::new(Config::new(1, 3), 0, Null, Start::Fresh);
        shared.publish(&replica);
        let status = shared.read();
        assert_eq!(status.status, Status::Normal);
        assert!(status.is_primary);
        assert_eq!(
            (status.epoch, status.view, status.op, status.commit),
            (0, 0, 0, 0)
        );
        for s in [Status::Normal, Status::ViewChange, Status::Recovering] {
            assert_eq!(decode(encode(s)), s);
        }
    }
}
