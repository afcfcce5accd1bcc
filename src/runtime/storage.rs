//! The storage phase: where the core's writes become durable, before the effects phase
//! sends anything. The core issues every change it must remember as an
//! `Effect::Write` and holds back the messages that vouch for it until
//! `Replica::on_persisted` reports the write complete (ARCHITECTURE.md, "No message
//! vouches for state a crash could lose").
//!
//! Today state lives in memory, so the phase completes every write at once
//! (`complete_writes_in_memory`): the messages it releases join this iteration's effects,
//! and every message leaves in the iteration that produced it, as before writes existed.
//!
//! What the write-ahead log (`--durability disk`, not built yet) will do here: write what
//! the iteration's `Write` effects describe (the entries a `LogAppend` names are read with
//! `Replica::entry` now, before the core's next input), make it durable together (group
//! commit: one `fdatasync` per batch, not per op, pipelined so the loop does not wait for
//! the disk), and call `on_persisted` with the highest write completed, in this iteration
//! or a later one. The ordering rule holds either way: the core releases a dependent
//! message only after `on_persisted`.

use super::event_loop::EventLoop;
use crate::service::StateMachine;

impl<S: StateMachine> EventLoop<S> {
    /// The storage phase (see the module docs): with state in memory, every write issued
    /// so far completes now.
    #[inline]
    pub(super) fn storage_phase(&mut self) {
        self.replica.complete_writes_in_memory(&mut self.effects);
    }
}
