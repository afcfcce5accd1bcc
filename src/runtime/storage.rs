//! The storage phase: where the write-ahead log (`--durability disk`, not built yet) will
//! make the core's writes durable. Today it does nothing: state lives in memory.
//!
//! What will go here, and why it sits where it does in the phase sequence:
//! - the core will emit write effects (a Prepare's entries, a view or commit change) beside
//!   its messages; `execute_effects` hands the writes to this phase instead of carrying
//!   them out itself;
//! - this phase writes everything the iteration collected and makes it durable together
//!   (group commit: one write and one `fdatasync` per batch, not per op), then tells the
//!   core with `on_persisted`, whose effects (the PrepareOk, a reply) are carried out at
//!   once;
//! - it runs after the effects phase and before the write phase, so within an iteration
//!   no socket write can send a message that depends on a write not yet durable (a
//!   backup's PrepareOk only after its log holds the Prepare: paper 4.1's "after it has
//!   written the request to its log", which on disk means after the sync). The core only
//!   emits such messages after `on_persisted`, so an asynchronous log (completions a later
//!   iteration) keeps the rule too.

use super::event_loop::EventLoop;
use crate::service::StateMachine;

impl<S: StateMachine> EventLoop<S> {
    /// The storage phase (see the module docs): nothing to persist while state lives in
    /// memory.
    #[inline]
    pub(super) fn storage_phase(&mut self) {}
}
