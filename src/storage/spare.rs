//! The spare journal: the next journal file, grown and synced in the background so that
//! the storage thread never waits for the file system to allocate blocks.
//!
//! A batch's `fdatasync` is cheap only when it overwrites blocks the file system has
//! already allocated: then it flushes data and no metadata (`DataDir`'s journal grows by
//! writing zeros and syncing them for that reason). Growing costs a write of zeros and an
//! `fsync` of their blocks, several milliseconds on the disks we measured: done by the
//! storage thread, every group queued behind it waits that long. So `DataDir` asks for a
//! spare when its journal is half full; a thread of its own writes `journal.spare` full
//! of zeros and syncs it, and when the journal is nearly full `DataDir` compacts into the
//! spare (its image at offset 0, one `fdatasync`) and renames it over the journal.
//!
//! A spare is never part of the durable state: until the rename it holds nothing but
//! zeros, and a spare left behind by a crash is removed on the next open.

use super::StorageError;
use crossbeam_channel::Receiver;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The spare's file name in the data directory.
pub const SPARE_FILE: &str = "journal.spare";

/// Zeros written per `pwrite`, and synced before the next: a spare written whole and
/// synced at the end made the journal's concurrent `fdatasync`s wait for tens of
/// megabytes (the device's cache flush is shared), 35-40 ms here instead of 0.3 ms;
/// synced a piece at a time, each flush the journal waits behind is small.
const ZEROS_BYTES: usize = 1 << 20;

/// The spare journal file of one data directory.
#[derive(Debug, Default)]
pub struct Spare {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Preparing(Preparation),
    /// Zero-filled and synced: `bytes` long.
    Ready {
        file: File,
        bytes: u64,
    },
}

#[derive(Debug)]
struct Preparation {
    bytes: u64,
    done: Receiver<Result<File, StorageError>>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Spare {
    /// Whether no spare is ready or being prepared.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Starts preparing a spare of `bytes` (zeros, synced) in `directory`, unless one is
    /// already ready or being prepared.
    pub fn prepare(&mut self, directory: &Path, bytes: u64) {
        if !self.is_idle() {
            return;
        }
        let path = directory.join(SPARE_FILE);
        let (sender, done) = crossbeam_channel::bounded(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("vsr-spare".into())
            .spawn(move || {
                let _ = sender.send(fill_with_zeros(&path, bytes, &cancelled));
            });
        match spawned {
            Ok(thread) => {
                self.state = State::Preparing(Preparation {
                    bytes,
                    done,
                    cancel,
                    thread: Some(thread),
                })
            }
            // No thread: the journal grows in place, as it does when no spare is ready.
            Err(error) => tracing::warn!(%error, "cannot start the spare journal's thread"),
        }
    }

    /// The spare, if it is ready: the file and its length. A preparation that failed (a
    /// full disk, say) is reported once as a warning and forgotten: the journal then grows
    /// in place, which reports the same error if the disk really is full.
    pub fn take_ready(&mut self) -> Option<(File, u64)> {
        if let State::Preparing(preparation) = &mut self.state {
            let result = preparation.done.try_recv().ok()?;
            let bytes = preparation.bytes;
            if let Some(thread) = preparation.thread.take() {
                let _ = thread.join();
            }
            self.state = match result {
                Ok(file) => State::Ready { file, bytes },
                Err(error) => {
                    tracing::warn!(%error, "the spare journal could not be prepared; the journal grows in place");
                    State::Idle
                }
            };
        }
        match std::mem::take(&mut self.state) {
            State::Ready { file, bytes } => Some((file, bytes)),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Waits until a preparation in progress ends (for tests).
    #[cfg(test)]
    pub fn wait(&mut self) {
        if let State::Preparing(preparation) = &mut self.state {
            if let Some(thread) = preparation.thread.take() {
                thread.join().unwrap();
            }
        }
    }
}

impl Drop for Spare {
    /// A preparation must not outlive its data directory: it would keep writing zeros into
    /// a file that the next process to open the directory may have made its journal.
    fn drop(&mut self) {
        if let State::Preparing(preparation) = &mut self.state {
            preparation.cancel.store(true, Ordering::Relaxed);
            if let Some(thread) = preparation.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Zeros aligned for `O_DIRECT` (the buffer, the offsets and the lengths all must be
/// multiples of the logical block size; 4096 covers every device we run on).
#[repr(align(4096))]
struct AlignedZeros([u8; ZEROS_BYTES]);

/// Creates `path` (replacing what is there) as `bytes` of zeros, written and synced.
///
/// The zeros go through a second descriptor opened with `O_DIRECT` where the file system
/// allows it: written through the page cache they cost a copy per byte, which profiled as
/// 10% of a primary's CPU under a full disk load on 2 cores (`perf/durability.md`); with
/// `O_DIRECT` the device reads them from one buffer. The file returned is opened without
/// it (the journal's writes are buffered). A file system without `O_DIRECT` (tmpfs) or a
/// length that is not a multiple of the block size gets the buffered writes.
fn fill_with_zeros(path: &PathBuf, bytes: u64, cancel: &AtomicBool) -> Result<File, StorageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(StorageError::io("create", path))?;
    let direct = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
        .filter(|_| bytes.is_multiple_of(4096));
    write_zeros(direct.as_ref().unwrap_or(&file), path, bytes, cancel)?;
    drop(direct);
    file.sync_all().map_err(StorageError::io("fsync", path))?;
    Ok(file)
}

/// Writes `bytes` of zeros into `file` from offset 0, syncing after each piece.
fn write_zeros(
    file: &File,
    path: &PathBuf,
    bytes: u64,
    cancel: &AtomicBool,
) -> Result<(), StorageError> {
    static ZEROS: AlignedZeros = AlignedZeros([0; ZEROS_BYTES]);
    let mut at = 0;
    while at < bytes {
        if cancel.load(Ordering::Relaxed) {
            return Err(StorageError::io("prepare", path)(std::io::Error::other(
                "cancelled",
            )));
        }
        let length = (bytes - at).min(ZEROS_BYTES as u64) as usize;
        file.write_all_at(&ZEROS.0[..length], at)
            .map_err(StorageError::io("extend", path))?;
        file.sync_data()
            .map_err(StorageError::io("fdatasync", path))?;
        at += length as u64;
    }
    Ok(())
}
