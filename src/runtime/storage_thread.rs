//! The storage thread (`--durability disk`): owns the data directory and makes batches
//! durable, so the event loop never waits for the disk.
//!
//! The loop hands over one batch at a time and keeps collecting the next while this
//! thread writes and syncs: that is the group commit. Everything the loop's iterations
//! issued while an `fdatasync` ran goes into the next batch, so there is one `fdatasync`
//! per group, never one per op, and the disk's latency overlaps with the loop's work.
//! After each batch the thread sends back the highest write id it holds and wakes the
//! loop (`mio::Waker`); the loop calls `Replica::on_persisted`. Compaction after a
//! checkpoint runs here too, after the completion is sent.
//!
//! A failed write or sync is reported once and ends the thread: nothing after it is
//! reported durable, and the loop stops the replica (a disk that failed an `fdatasync`
//! may have dropped the data, so retrying could acknowledge what is lost).

use crate::protocol::{StoredWrite, WriteId};
use crate::storage::{DataDir, StorageError};
use crossbeam_channel::{Receiver, Sender};
use mio::Waker;
use std::sync::Arc;
use std::thread::JoinHandle;

/// From the loop: writes to make durable, in order, as one atomic batch.
#[derive(Debug)]
pub struct Batch {
    /// The writes' payloads, then a `StoredWrite::Commit`.
    pub writes: Vec<StoredWrite>,
    /// The id of the last `Effect::Write` among them.
    pub last_id: WriteId,
}

/// To the loop.
#[derive(Debug)]
pub enum Completion {
    /// Every write up to `id` is durable. `spare` is the batch's vector, emptied, for
    /// reuse.
    Durable {
        /// The highest write id durable.
        id: WriteId,
        /// An empty vector with capacity.
        spare: Vec<StoredWrite>,
    },
    /// The disk failed; nothing more will complete.
    Failed(StorageError),
}

/// The loop's handle on the storage thread.
#[derive(Debug)]
pub struct StorageThread {
    /// Batches to write (at most one waits: the loop sends the next after a completion).
    pub batches: Sender<Batch>,
    /// Completions.
    pub completions: Receiver<Completion>,
    thread: Option<JoinHandle<()>>,
}

impl StorageThread {
    /// Starts the thread on `data_dir`; it wakes `waker` after every completion.
    pub fn spawn(data_dir: DataDir, waker: Arc<Waker>) -> std::io::Result<StorageThread> {
        let (batches, to_thread) = crossbeam_channel::bounded(1);
        let (from_thread, completions) = crossbeam_channel::bounded(2);
        let thread = std::thread::Builder::new()
            .name("vsr-storage".into())
            .spawn(move || run(data_dir, &to_thread, &from_thread, &waker))?;
        Ok(StorageThread {
            batches,
            completions,
            thread: Some(thread),
        })
    }

    /// Stops the thread after the batch it is writing, and waits for it.
    pub fn stop(&mut self) {
        // Dropping the sender ends the thread's receive loop.
        let (closed, _) = crossbeam_channel::bounded(0);
        drop(std::mem::replace(&mut self.batches, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StorageThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    mut data_dir: DataDir,
    batches: &Receiver<Batch>,
    completions: &Sender<Completion>,
    waker: &Waker,
) {
    while let Ok(Batch {
        mut writes,
        last_id,
    }) = batches.recv()
    {
        let written = data_dir.append(&writes);
        writes.clear(); // Drops the payloads here, off the event loop.
        let completion = match written {
            Ok(()) => Completion::Durable {
                id: last_id,
                spare: writes,
            },
            Err(error) => Completion::Failed(error),
        };
        let failed = matches!(completion, Completion::Failed(_));
        if completions.send(completion).is_err() {
            return; // The loop is gone.
        }
        let _ = waker.wake();
        if failed {
            return;
        }
        if let Err(error) = data_dir.compact_if_due() {
            let _ = completions.send(Completion::Failed(error));
            let _ = waker.wake();
            return;
        }
    }
}
