//! Checkpoint files written in the background, so that a group commit never waits for
//! one.
//!
//! A checkpoint's file (`checkpoint_file`) holds every page its chain lacks (the whole
//! state when every page changed, and for the first file): written on the storage
//! thread before the batch that names it, as it was, every group queued behind that batch
//! waited for the file's writes, two `fsync`s and a rename (several milliseconds for a
//! small state, seconds for a large one, at every checkpoint of every replica at once,
//! since they all checkpoint at the same ops). `DataDir` hands a checkpoint that the
//! journal already covers to this writer instead and goes on appending batches; the
//! journal's marker for it follows in a later batch, once the file is durable
//! (`DataDir`'s docs say when a checkpoint is covered, and why the order keeps a restart
//! safe).
//!
//! One file is written at a time by a thread of its own; at most one more checkpoint
//! waits behind it (a newer one replaces it: only the newest needs a file), so the
//! journal's marker lags the newest checkpoint by at most the file being written and
//! the one waiting.
//!
//! The writer keeps the chain (`checkpoint_file::Chain`) each file is written against:
//! the chain of the last file it wrote, read back on open, or empty. A file is written
//! against the last file written, whether or not its marker is durable yet: the files of
//! the chain in hand are never removed as stale (`needed_files`), so the chain a pending
//! write reads from stays on disk, and the files of the chain the durable marker names
//! are kept by `DataDir` itself.

use super::checkpoint_file::{self, Chain};
use super::codec::CheckpointMarker;
use super::StorageError;
use crate::protocol::Checkpoint;
use crossbeam_channel::Receiver;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// A file written: the checkpoint, the marker that names it, and the ops of the files
/// that reading it needs (itself and its bases).
pub type Written = (Checkpoint, CheckpointMarker, Vec<u64>);

/// The background writer of one data directory's checkpoint files.
#[derive(Debug)]
pub struct CheckpointWriter {
    directory: PathBuf,
    writing: Option<Writing>,
    /// The next checkpoint to write once `writing` is done.
    queued: Option<Checkpoint>,
    /// The chain the next file is written against; `None` while a thread writes against
    /// it (it comes back with the file).
    chain: Option<Chain>,
    /// The files of the chain in hand or with the thread.
    chain_files: Vec<u64>,
}

#[derive(Debug)]
struct Writing {
    op: u64,
    done: Receiver<(Result<Written, StorageError>, Chain)>,
    thread: Option<JoinHandle<()>>,
}

impl CheckpointWriter {
    /// A writer for `directory`'s checkpoint files, writing the next against `chain`.
    pub fn new(directory: &Path, chain: Chain) -> CheckpointWriter {
        CheckpointWriter {
            directory: directory.into(),
            writing: None,
            queued: None,
            chain_files: chain.files().collect(),
            chain: Some(chain),
        }
    }

    /// Whether a file is being written or waits to be.
    pub fn is_busy(&self) -> bool {
        self.writing.is_some() || self.queued.is_some()
    }

    /// The files that must not be removed as stale: those of the checkpoints being
    /// written or waiting (and their temporary files), and the chain they are written
    /// against.
    pub fn needed_files(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending_ops().chain(self.chain_files.iter().copied())
    }

    /// The ops of the checkpoints being written or waiting.
    pub fn pending_ops(&self) -> impl Iterator<Item = u64> + '_ {
        let writing = self.writing.as_ref().map(|writing| writing.op);
        writing
            .into_iter()
            .chain(self.queued.as_ref().map(|c| c.op))
    }

    /// The newest op submitted and not yet returned by [`CheckpointWriter::poll`].
    pub fn newest_pending(&self) -> Option<u64> {
        self.pending_ops().max()
    }

    /// Writes `checkpoint`'s file in the background, after the one being written; a
    /// checkpoint already waiting is replaced (its file is never written: only the
    /// newest matters). Never blocks.
    pub fn submit(&mut self, checkpoint: Checkpoint) {
        assert!(
            self.newest_pending().is_none_or(|op| op < checkpoint.op),
            "checkpoints are submitted in op order"
        );
        self.queued = Some(checkpoint);
        self.start_queued();
    }

    /// The file written, if the one being written is done (and starts the one waiting).
    pub fn poll(&mut self) -> Option<Result<Written, StorageError>> {
        let (result, chain) = self.writing.as_ref()?.done.try_recv().ok()?;
        self.finish_writing();
        self.take_back(chain);
        self.start_queued();
        Some(result)
    }

    /// The chain a file was written against comes back (the new file's, if written).
    fn take_back(&mut self, chain: Chain) {
        self.chain_files = chain.files().collect();
        self.chain = Some(chain);
    }

    /// Writes `checkpoint`'s file now, on the caller's thread, against the chain in
    /// hand (a checkpoint installed from another replica: its batch waits for it).
    /// Nothing may be in hand ([`CheckpointWriter::abandon`] first).
    pub fn write_now(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> Result<(CheckpointMarker, Vec<u64>), StorageError> {
        assert!(!self.is_busy(), "files are written one at a time");
        let chain = self.chain.get_or_insert_with(Chain::default);
        let marker = checkpoint_file::write(&self.directory, checkpoint, chain)?;
        self.chain_files = chain.files().collect();
        Ok((marker, self.chain_files.clone()))
    }

    /// Waits for the file being written (if any) and returns it; the one waiting is
    /// started.
    pub fn wait(&mut self) -> Option<Result<Written, StorageError>> {
        let writing = self.writing.as_ref()?;
        let (result, chain) = writing.done.recv().unwrap_or_else(|_| {
            // The chain went with the thread: the next file holds every page.
            let error = StorageError::Io {
                operation: "write the checkpoint file",
                path: checkpoint_file::path(&self.directory, writing.op),
                error: std::io::Error::other("its writer thread ended without an answer"),
            };
            (Err(error), Chain::default())
        });
        self.finish_writing();
        self.take_back(chain);
        self.start_queued();
        Some(result)
    }

    /// Waits for every file submitted and drops them all: a checkpoint installed from
    /// another replica supersedes them (their files are removed as stale).
    pub fn abandon(&mut self) {
        self.queued = None;
        let _ = self.wait();
    }

    fn finish_writing(&mut self) {
        if let Some(mut writing) = self.writing.take() {
            if let Some(thread) = writing.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn start_queued(&mut self) {
        if self.writing.is_some() {
            return;
        }
        let Some(checkpoint) = self.queued.take() else {
            return;
        };
        let op = checkpoint.op;
        let (sender, done) = crossbeam_channel::bounded(1);
        let directory = self.directory.clone();
        let mut chain = self.chain.take().unwrap_or_default();
        let spawned = std::thread::Builder::new()
            .name("vsr-checkpoint".into())
            .spawn(move || {
                let written = checkpoint_file::write(&directory, &checkpoint, &mut chain)
                    .map(|marker| (checkpoint, marker, chain.files().collect()));
                let _ = sender.send((written, chain));
            });
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(error) => {
                // No thread: report it as the write's failure (the caller stops, as for
                // any storage error).
                let (sender, failed) = crossbeam_channel::bounded(1);
                let error = StorageError::Io {
                    operation: "start the checkpoint writer for",
                    path: checkpoint_file::path(&self.directory, op),
                    error,
                };
                let _ = sender.send((Err(error), Chain::default()));
                self.writing = Some(Writing {
                    op,
                    done: failed,
                    thread: None,
                });
                return;
            }
        };
        self.writing = Some(Writing { op, done, thread });
    }
}

impl Drop for CheckpointWriter {
    /// A file must not be written into a directory that the next process to open it may
    /// be cleaning up: wait for the one being written (the one waiting is dropped).
    fn drop(&mut self) {
        self.queued = None;
        self.finish_writing();
    }
}
