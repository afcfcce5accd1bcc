//! The storage phase: where the core's writes become durable, before the effects phase
//! sends anything. The core issues every change it must remember as an
//! `Effect::Write` and holds back the messages that vouch for it until
//! `Replica::on_persisted` reports the write complete (ARCHITECTURE.md, "No message
//! vouches for state a crash could lose").
//!
//! With `--durability memory` (the default) state lives in memory, so the phase completes
//! every write at once (`complete_writes_in_memory`): the messages it releases join this
//! iteration's effects, and every message leaves in the iteration that produced it.
//!
//! With `--durability disk`:
//! 1. as each input to the core returns, the loop captures the payload of every `Write`
//!    it issued (`EventLoop::capture_writes`, [`DiskWrites::capture`]): the entries and
//!    checkpoint are read from the replica before its next input, which may trim the
//!    log below them (one connection's reads are many inputs);
//! 2. the storage phase takes the storage thread's completions and reports them
//!    (`on_persisted`), which releases the messages that waited into this iteration's
//!    effects (and on the primary counts its own acknowledgement, which may commit ops);
//! 3. after the effects phase, [`EventLoop::hand_over_writes`] queues what was captured
//!    for the storage thread, with a `Commit` record, as one batch; the thread writes
//!    every batch queued while its previous `fdatasync` ran as one group, with one
//!    `fdatasync` (group commit, `storage_thread`).
//!
//! Pages a checkpoint fetch verified (`Effect::KeepPages`) are not writes: they go to
//! the page keeper's thread (`page_keeper`), unordered and unsynced, a cache that lets a
//! fetch cut short by a crash resume.
//!
//! The loop never blocks on the disk. A disk error stops the replica with the error
//! (naming the file); nothing it could not make durable is ever reported complete.

use super::event_loop::EventLoop;
use super::options::ServerError;
use super::page_keeper::PageKeeper;
use super::storage_thread::{Batch, Completion, StorageThread};
use crate::protocol::{Effect, KeepPages, Op, Replica, StoredWrite, Write, WriteId};
use crate::service::StateMachine;
use crossbeam_channel::{TryRecvError, TrySendError};

/// The loop's side of disk durability.
#[derive(Debug)]
pub(super) struct DiskWrites {
    thread: StorageThread,
    /// Captured and not yet handed over.
    pending: Vec<StoredWrite>,
    /// The id of the last write in `pending`.
    pending_last_id: WriteId,
    /// Batches handed over (for stats).
    pub(super) batches: u64,
    /// Writes the pages of checkpoint fetches (`Effect::KeepPages`), outside the
    /// journal's ordering.
    keeper: PageKeeper,
}

impl DiskWrites {
    /// The loop's side of `thread` and `keeper`.
    pub(super) fn new(thread: StorageThread, keeper: PageKeeper) -> DiskWrites {
        DiskWrites {
            thread,
            pending: Vec::with_capacity(64),
            pending_last_id: 0,
            batches: 0,
            keeper,
        }
    }

    /// Stops the storage thread and the page keeper (at shutdown).
    pub(super) fn stop(&mut self) {
        self.thread.stop();
        self.keeper.stop();
    }

    /// Hands fetched pages to the page keeper: never waits (`page_keeper`).
    pub(super) fn keep_pages(&mut self, keep: KeepPages) {
        self.keeper.keep(keep);
    }
}

impl<S: StateMachine> EventLoop<S> {
    /// The storage phase (see the module docs): in memory every write issued so far
    /// completes now; on disk, the writes the storage thread reported complete.
    #[inline]
    pub(super) fn storage_phase(&mut self) -> Result<(), ServerError> {
        match self.disk.as_mut() {
            None => {
                self.replica.complete_writes_in_memory(&mut self.effects);
                Ok(())
            }
            Some(disk) => disk.take_completions(&mut self.replica, &mut self.effects),
        }
    }

    /// After the effects phase, on disk: hands what was captured to the storage thread if
    /// it is idle.
    #[inline]
    pub(super) fn hand_over_writes(&mut self) -> Result<(), ServerError> {
        match self.disk.as_mut() {
            None => Ok(()),
            Some(disk) => disk.hand_over(self.replica.commit()),
        }
    }
}

impl DiskWrites {
    /// Captures the payload of write `id` from `replica`, as the input that issued it
    /// returns (`EventLoop::capture_writes`).
    pub(super) fn capture<S: StateMachine>(
        &mut self,
        replica: &Replica<S>,
        id: WriteId,
        write: Write,
    ) {
        debug_assert!(id > self.pending_last_id);
        // A checkpoint write takes the replica's current checkpoint: when one iteration
        // took two, the later one stands for both (`Stored::apply` accepts it twice).
        self.pending.push(StoredWrite::capture(replica, write));
        self.pending_last_id = id;
    }

    fn take_completions<S: StateMachine>(
        &mut self,
        replica: &mut Replica<S>,
        effects: &mut Vec<Effect>,
    ) -> Result<(), ServerError> {
        let mut durable = None;
        loop {
            match self.thread.completions.try_recv() {
                Ok(Completion::Durable(id)) => durable = Some(id),
                Ok(Completion::Failed(error)) => return Err(ServerError::Storage(error)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(ServerError::StorageThreadGone),
            }
        }
        if let Some(id) = durable {
            replica.on_persisted(id, effects);
        }
        Ok(())
    }

    fn hand_over(&mut self, commit: Op) -> Result<(), ServerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.pending.push(StoredWrite::Commit(commit));
        let spare = self
            .thread
            .spares
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(64));
        let batch = Batch {
            writes: std::mem::replace(&mut self.pending, spare),
            last_id: self.pending_last_id,
        };
        match self.thread.batches.try_send(batch) {
            Ok(()) => {
                self.batches += 1;
                Ok(())
            }
            // The queue is full: keep collecting, and hand it all over next time (never
            // block the loop on the disk).
            Err(TrySendError::Full(mut batch)) => {
                batch.writes.pop(); // The commit record, added again next time.
                self.pending = batch.writes;
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(ServerError::StorageThreadGone),
        }
    }
}
