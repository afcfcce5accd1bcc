//! The storage thread (`--durability disk`): owns the data directory and makes batches
//! durable, so the event loop never waits for the disk.
//!
//! The loop hands over what each iteration wrote as soon as the iteration ends; the
//! thread takes everything queued, writes it as one journal batch and syncs it once:
//! that is the group commit. Everything the loop's iterations issued while an
//! `fdatasync` ran goes into the next group, so there is one `fdatasync` per group,
//! never one per op, the next group starts the moment the previous sync returns, and the
//! disk's latency overlaps with the loop's work. After each group the thread sends back
//! the highest write id it made durable and wakes the loop (`mio::Waker`); the loop calls
//! `Replica::on_persisted`. The directory's upkeep (`DataDir::maintain`: removing old
//! checkpoint files, compacting a full journal into its spare) runs here too, after the
//! completion is sent. A checkpoint's file is written by a thread of `DataDir`'s own
//! (`storage::checkpoint_writer`); while one is, the thread also wakes every
//! [`CHECKPOINT_POLL`] to put its marker in a batch of its own if no group comes.
//!
//! A failed write or sync is reported once and ends the thread: nothing after it is
//! reported durable, and the loop stops the replica (a disk that failed an `fdatasync`
//! may have dropped the data, so retrying could acknowledge what is lost).

use crate::protocol::{StoredWrite, WriteId};
use crate::storage::{DataDir, StorageError};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::Waker;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
    /// Every write up to `id` is durable.
    Durable(WriteId),
    /// The disk failed; nothing more will complete.
    Failed(StorageError),
}

/// Batches queued for the thread, at most. The loop keeps collecting while the queue is
/// full (it never blocks), so this only bounds the channel.
const QUEUED_BATCHES_MAX: usize = 1024;
/// Emptied vectors handed back for reuse, at most.
const SPARES_MAX: usize = 16;

/// The loop's handle on the storage thread.
#[derive(Debug)]
pub struct StorageThread {
    /// Batches to write, in order.
    pub batches: Sender<Batch>,
    /// Completions.
    pub completions: Receiver<Completion>,
    /// Emptied batch vectors, to reuse.
    pub spares: Receiver<Vec<StoredWrite>>,
    thread: Option<JoinHandle<()>>,
}

impl StorageThread {
    /// Starts the thread on `data_dir`; it wakes `waker` after every completion.
    pub fn spawn(data_dir: DataDir, waker: Arc<Waker>) -> std::io::Result<StorageThread> {
        let (batches, to_thread) = crossbeam_channel::bounded(QUEUED_BATCHES_MAX);
        // Room for every completion until the loop reads them: at most one per group,
        // and a group takes at least one queued batch.
        let (from_thread, completions) = crossbeam_channel::bounded(QUEUED_BATCHES_MAX + 2);
        let (spare_sender, spares) = crossbeam_channel::bounded(SPARES_MAX);
        let channels = Channels {
            batches: to_thread,
            completions: from_thread,
            spares: spare_sender,
        };
        let thread = std::thread::Builder::new()
            .name("vsr-storage".into())
            .spawn(move || run(data_dir, &channels, &waker))?;
        Ok(StorageThread {
            batches,
            completions,
            spares,
            thread: Some(thread),
        })
    }

    /// Stops the thread after the group it is writing, and waits for it.
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

/// The thread's ends of the channels.
struct Channels {
    batches: Receiver<Batch>,
    completions: Sender<Completion>,
    spares: Sender<Vec<StoredWrite>>,
}

/// How often an idle thread looks whether a checkpoint file written in the background is
/// done, to write its marker (a busy one does at every group).
const CHECKPOINT_POLL: Duration = Duration::from_millis(10);

fn run(mut data_dir: DataDir, channels: &Channels, waker: &Waker) {
    let mut group: Vec<StoredWrite> = Vec::with_capacity(256);
    loop {
        let first = if data_dir.checkpoint_pending() {
            match channels.batches.recv_timeout(CHECKPOINT_POLL) {
                Ok(batch) => batch,
                Err(RecvTimeoutError::Timeout) => {
                    // Nothing to report: no write of the loop's is in this batch.
                    if let Err(error) = data_dir.append_finished_checkpoint() {
                        let _ = channels.completions.send(Completion::Failed(error));
                        let _ = waker.wake();
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match channels.batches.recv() {
                Ok(batch) => batch,
                Err(_) => return,
            }
        };
        // The group: the batch that woke us and every one queued behind it.
        let mut last_id = first.last_id;
        take(&mut group, first, &channels.spares);
        while let Ok(next) = channels.batches.try_recv() {
            last_id = next.last_id;
            take(&mut group, next, &channels.spares);
        }
        let written = data_dir.append_owned(&mut group);
        group.clear(); // Drops what is left here, off the event loop.
        let completion = match written {
            Ok(()) => Completion::Durable(last_id),
            Err(error) => Completion::Failed(error),
        };
        let failed = matches!(completion, Completion::Failed(_));
        if channels.completions.send(completion).is_err() {
            return; // The loop is gone.
        }
        let _ = waker.wake();
        if failed {
            return;
        }
        if let Err(error) = data_dir.maintain() {
            let _ = channels.completions.send(Completion::Failed(error));
            let _ = waker.wake();
            return;
        }
    }
}

/// Moves `batch`'s writes into `group` and hands its emptied vector back to the loop.
fn take(group: &mut Vec<StoredWrite>, mut batch: Batch, spares: &Sender<Vec<StoredWrite>>) {
    group.append(&mut batch.writes);
    let _ = spares.try_send(batch.writes);
}
