//! The replicated service: the deterministic state machine the log drives (paper 4.1's
//! "upcall"), and the services that ship with vsr.
//!
//! A service sees only committed operations, in op order, each exactly once. `apply`
//! must be deterministic: the same operations with the same timestamps give the same
//! results and state on every replica. A checkpoint (paper 5.1) holds the service's state
//! as pages ([`Snapshot`], see [`snapshot`]).

pub mod deferred;
pub mod kv;
pub mod log;
pub mod merkle;
pub mod null;
pub mod prepared;
pub mod snapshot;

use bytes::Bytes;

pub use deferred::{Deferred, WeakDeferred};
pub use kv::Kv;
pub use log::LogService;
pub use null::Null;
pub use prepared::PreparedRestore;
pub use snapshot::{Digest, DigestMismatch, Page, Snapshot, DIGEST_BYTES, PAGE_BYTES_TARGET};

/// A deterministic state machine replicated by vsr.
pub trait StateMachine {
    /// Applies a committed operation and returns its result.
    ///
    /// `op` is the operation's position in the log and `timestamp` the primary's clock
    /// when it ordered it (paper 4.4); both are identical on every replica.
    fn apply(&mut self, op: u64, timestamp: u64, operation: &Bytes) -> Bytes;

    /// Answers a read-only query against the current state (fast reads, paper 6.3).
    fn query(&self, query: &Bytes) -> Bytes;

    /// The whole state as pages, for a checkpoint (paper 5.1).
    ///
    /// Must be deterministic: two replicas in the same state produce the same pages, in
    /// the same order (the replicas' checkpoints are compared page by page, and a page-diff
    /// transfer relies on it). Pages follow the size rule in [`snapshot`]. It takes `&mut
    /// self` so that a service can keep the pages of its previous snapshot and rebuild only
    /// those whose part of the state changed since (the bundled `kv` does).
    fn snapshot(&mut self) -> Snapshot;

    /// The snapshot of the state as it is now, built later: the same pages
    /// [`StateMachine::snapshot`] would return now, computed by whichever thread first runs
    /// the returned [`Deferred`], while this service goes on applying operations.
    ///
    /// A replica takes its checkpoints this way (paper 5.1's copy-on-write): the driver
    /// runs the build on a worker thread, so a service whose snapshot takes long (a large
    /// state, many changes) does not stall the event loop. A service that supports it
    /// captures what the build reads cheaply and immutably (shared, not copied). The
    /// default builds the snapshot here, at once: fine for a service whose snapshot is
    /// cheap. A replica asks for at most one build at a time and may drop a build
    /// unfinished (when it installs another state).
    fn snapshot_deferred(&mut self) -> Deferred<Snapshot> {
        Deferred::ready(self.snapshot())
    }

    /// The build of the last [`StateMachine::snapshot_deferred`] finished: a service that
    /// keeps state aside while a build runs (the state the build reads, beside the one it
    /// goes on with) may let go of it now. A replica calls it at its first input after the
    /// build finished, ticks included, so that an idle replica does not hold both. The
    /// default does nothing.
    fn snapshot_built(&mut self) {}

    /// Replaces the state with a snapshot taken by [`StateMachine::snapshot`], possibly on
    /// another replica.
    ///
    /// Every page's digest has been verified, but its contents came over the wire: a
    /// service must check them and refuse, never panic on, what its own `snapshot` would
    /// never produce. On error the state is unchanged.
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError>;

    /// The work of restoring `snapshot` that does not need this service, to run on another
    /// thread before [`StateMachine::restore_prepared`] installs it: for a large state,
    /// reading every page into a new state takes seconds, which the event loop must not
    /// stall for. The replica calls it once a checkpoint it fetched verified, has the
    /// driver run the returned [`Deferred`] on a worker thread (as it does a checkpoint's
    /// build), and installs the checkpoint once it ran. Whatever it computes must depend
    /// on `snapshot` alone (the service goes on executing meanwhile, and the result may be
    /// dropped unused). `None`, the default: nothing to prepare, `restore` does it all.
    fn prepare_restore(&self, snapshot: &Snapshot) -> Option<Deferred<PreparedRestore>> {
        let _ = snapshot;
        None
    }

    /// Replaces the state with `snapshot`, as [`StateMachine::restore`] does, given what
    /// [`StateMachine::prepare_restore`] computed from it (the same checks, the same
    /// refusals). A preparation it does not recognise, or one already taken, is not an
    /// error: it then restores from `snapshot`. The default ignores it.
    fn restore_prepared(
        &mut self,
        snapshot: &Snapshot,
        prepared: &PreparedRestore,
    ) -> Result<(), SnapshotError> {
        let _ = prepared;
        self.restore(snapshot)
    }

    /// The service's name, for `vsr stats` and the metrics (so that a client can tell
    /// which service a cluster runs).
    fn name(&self) -> &'static str {
        "custom"
    }
}

/// A snapshot could not be restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("corrupt snapshot: {0}")]
pub struct SnapshotError(pub &'static str);
