//! The spare journal: the next journal file, its blocks written and synced in the
//! background so that the storage thread never waits for the file system to allocate
//! blocks.
//!
//! A batch's `fdatasync` is cheap only when it overwrites blocks the file system has
//! already allocated and written: then it flushes data and no metadata (`DataDir`'s
//! journal grows by writing zeros and syncing them for that reason). Growing costs a
//! write of zeros and an `fsync` of their blocks, several milliseconds on the disks we
//! measured: done by the storage thread, every group queued behind it waits that long. So
//! `DataDir` asks for a spare when its journal is half full, and when the journal is
//! nearly full it compacts into the spare (its image at offset 0, one `fdatasync`) and
//! renames it over the journal.
//!
//! A thread of its own prepares `journal.spare`: from the file the previous compaction
//! left (`journal.recycle`, renamed), whose blocks are all written already, so that
//! nothing is written at all when it is as large as the spare asked for (the usual case
//! once the journal has reached its size), and only the missing end is zero-filled when it
//! is smaller; or, with no such file (a fresh directory, the first compactions after a
//! start), from zeros. The old batches a recycled file holds are told from the new use's
//! by their file id (`journal`'s docs).
//!
//! A spare is never part of the durable state: until the rename it holds nothing that
//! replay reads, and a spare or a file to recycle left behind by a crash is removed on the
//! next open. A file to recycle that is the journal itself (a crash between the link and
//! the rename; or any mix-up) is never used: the thread compares inode numbers, and never
//! truncates or writes a file it did not create or rename itself.

use super::data_dir::RECYCLE_FILE;
use super::journal::CHUNK_BYTES;
use super::StorageError;
use crossbeam_channel::Receiver;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
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
    /// Written and synced: `bytes` long.
    Ready {
        file: File,
        bytes: u64,
    },
}

#[derive(Debug)]
struct Preparation {
    done: Receiver<Result<(File, u64), StorageError>>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Spare {
    /// Whether no spare is ready or being prepared.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Starts preparing a spare of `bytes` (written and synced) in `directory`, unless one
    /// is already ready or being prepared: from the file to recycle if there is one that
    /// is not the journal (inode number `journal`), otherwise from zeros.
    pub fn prepare(&mut self, directory: &Path, bytes: u64, journal: u64) {
        if !self.is_idle() {
            return;
        }
        let path = directory.join(SPARE_FILE);
        let recycle = directory.join(RECYCLE_FILE);
        let (sender, done) = crossbeam_channel::bounded(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("vsr-spare".into())
            .spawn(move || {
                let prepared = match recycled(&recycle, &path, bytes, journal, &cancelled) {
                    Ok(Some(ready)) => Ok(ready),
                    Ok(None) => fill_with_zeros(&path, bytes, &cancelled).map(|file| (file, bytes)),
                    Err(error) => Err(error),
                };
                let _ = sender.send(prepared);
            });
        match spawned {
            Ok(thread) => {
                self.state = State::Preparing(Preparation {
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
            if let Some(thread) = preparation.thread.take() {
                let _ = thread.join();
            }
            self.state = match result {
                Ok((file, bytes)) => State::Ready { file, bytes },
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

/// The file to recycle, renamed to `path` and made at least `bytes` long (the end it
/// lacks zero-filled and synced), with its length, if there is one, it is not the journal
/// (inode `journal`), and its length is a whole number of chunks no larger than
/// [`RECYCLED_LARGER_MAX`] times `bytes`. A larger one is removed: the spare is sized for
/// the journal's rate. One up to that much larger is used as it is: the size asked for
/// follows the image, which varies from compaction to compaction, and replacing a file
/// only somewhat larger by zeros cost the whole spare's bytes in writes each time
/// (`perf/durability.md`). `None` when there is none.
fn recycled(
    recycle: &Path,
    path: &PathBuf,
    bytes: u64,
    journal: u64,
    cancel: &AtomicBool,
) -> Result<Option<(File, u64)>, StorageError> {
    match std::fs::rename(recycle, path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io("rename to", path)(error)),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(StorageError::io("open", path))?;
    let metadata = file.metadata().map_err(StorageError::io("stat", path))?;
    let length = metadata.len();
    if metadata.ino() == journal
        || length > RECYCLED_LARGER_MAX * bytes
        || !length.is_multiple_of(CHUNK_BYTES)
    {
        drop(file);
        // Only the name goes: the journal itself keeps its own.
        std::fs::remove_file(path).map_err(StorageError::io("remove", path))?;
        return Ok(None);
    }
    if length < bytes {
        let direct = open_direct(path, bytes);
        write_zeros(
            direct.as_ref().unwrap_or(&file),
            path,
            length,
            bytes,
            cancel,
        )?;
        drop(direct);
        file.sync_all().map_err(StorageError::io("fsync", path))?;
    }
    Ok(Some((file, length.max(bytes))))
}

/// How much larger than the spare asked for a file to recycle may be and still be used.
const RECYCLED_LARGER_MAX: u64 = 2;

/// A second descriptor of `path` for writing with `O_DIRECT`, if the file system allows
/// it and `bytes` is a whole number of blocks.
fn open_direct(path: &Path, bytes: u64) -> Option<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
        .filter(|_| bytes.is_multiple_of(4096))
}

/// Creates `path` (a new file: what had that name is unlinked first, never truncated, as
/// it might be another name of a file in use) as `bytes` of zeros, written and synced.
///
/// The zeros go through a second descriptor opened with `O_DIRECT` where the file system
/// allows it: written through the page cache they cost a copy per byte, which profiled as
/// 10% of a primary's CPU under a full disk load on 2 cores (`perf/durability.md`); with
/// `O_DIRECT` the device reads them from one buffer. The file returned is opened without
/// it (the journal's writes are buffered). A file system without `O_DIRECT` (tmpfs) or a
/// length that is not a multiple of the block size gets the buffered writes.
fn fill_with_zeros(path: &PathBuf, bytes: u64, cancel: &AtomicBool) -> Result<File, StorageError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(StorageError::io("remove", path)(error));
        }
        _ => {}
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(StorageError::io("create", path))?;
    let direct = open_direct(path, bytes);
    write_zeros(direct.as_ref().unwrap_or(&file), path, 0, bytes, cancel)?;
    drop(direct);
    file.sync_all().map_err(StorageError::io("fsync", path))?;
    Ok(file)
}

/// Writes zeros into `file` from offset `from` up to `bytes`, syncing after each piece.
fn write_zeros(
    file: &File,
    path: &Path,
    from: u64,
    bytes: u64,
    cancel: &AtomicBool,
) -> Result<(), StorageError> {
    static ZEROS: AlignedZeros = AlignedZeros([0; ZEROS_BYTES]);
    let mut at = from;
    while at < bytes {
        if cancel.load(Ordering::Relaxed) {
            return Err(StorageError::io("prepare", path)(std::io::Error::other(
                "cancelled",
            )));
        }
        let length = (bytes - at).min(ZEROS_BYTES as u64) as usize;
        file.write_all_at(&ZEROS.0[..length], at)
            .map_err(StorageError::io("extend", path))?;
        super::counters::JOURNAL_ZERO_BYTES.add(length as u64);
        file.sync_data()
            .map_err(StorageError::io("fdatasync", path))?;
        at += length as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::data_dir::tests::temp_dir;

    /// Prepares a spare of `bytes` in `directory` (whose journal has no inode here) and
    /// waits for it.
    fn prepared(directory: &Path, bytes: u64) -> (File, u64) {
        let mut spare = Spare::default();
        spare.prepare(directory, bytes, 0);
        spare.wait();
        spare.take_ready().expect("a spare")
    }

    fn content(file: &File) -> Vec<u8> {
        let mut bytes = vec![0; file.metadata().unwrap().len() as usize];
        file.read_exact_at(&mut bytes, 0).unwrap();
        bytes
    }

    #[test]
    fn a_file_to_recycle_of_the_size_asked_for_is_used_as_it_is() {
        let directory = temp_dir("spare-same");
        let old: Vec<u8> = (0..CHUNK_BYTES).map(|n| (n % 251) as u8 + 1).collect();
        std::fs::write(directory.join(RECYCLE_FILE), &old).unwrap();
        let inode = std::fs::metadata(directory.join(RECYCLE_FILE))
            .unwrap()
            .ino();
        let (file, bytes) = prepared(&directory, CHUNK_BYTES);
        assert_eq!(bytes, CHUNK_BYTES);
        assert_eq!(file.metadata().unwrap().ino(), inode, "the same file");
        assert_eq!(content(&file), old, "nothing written");
        assert!(!directory.join(RECYCLE_FILE).exists());
        assert!(directory.join(SPARE_FILE).exists());
    }

    #[test]
    fn a_smaller_file_to_recycle_is_grown_with_zeros() {
        let directory = temp_dir("spare-grown");
        let old = vec![7u8; CHUNK_BYTES as usize];
        std::fs::write(directory.join(RECYCLE_FILE), &old).unwrap();
        let (file, bytes) = prepared(&directory, 3 * CHUNK_BYTES);
        assert_eq!(bytes, 3 * CHUNK_BYTES);
        let bytes = content(&file);
        assert_eq!(bytes.len() as u64, 3 * CHUNK_BYTES);
        assert_eq!(&bytes[..old.len()], &old[..]);
        assert!(bytes[old.len()..].iter().all(|&byte| byte == 0));
    }

    /// The size asked for follows the image: a file to recycle up to twice as large is
    /// used as it is (its length reported), not replaced by a spare's worth of zeros.
    #[test]
    fn a_somewhat_larger_file_to_recycle_is_used_as_it_is() {
        let directory = temp_dir("spare-larger");
        std::fs::write(
            directory.join(RECYCLE_FILE),
            vec![9u8; 2 * CHUNK_BYTES as usize],
        )
        .unwrap();
        let (file, bytes) = prepared(&directory, CHUNK_BYTES);
        assert_eq!(bytes, 2 * CHUNK_BYTES);
        let content = content(&file);
        assert_eq!(content.len() as u64, 2 * CHUNK_BYTES);
        assert!(content.iter().all(|&byte| byte == 9), "not rewritten");
    }

    #[test]
    fn a_much_larger_or_odd_file_to_recycle_is_replaced_by_zeros() {
        for length in [3 * CHUNK_BYTES, CHUNK_BYTES / 2, 0] {
            let directory = temp_dir("spare-odd");
            std::fs::write(directory.join(RECYCLE_FILE), vec![9u8; length as usize]).unwrap();
            let (file, bytes) = prepared(&directory, CHUNK_BYTES);
            assert_eq!(bytes, CHUNK_BYTES);
            let bytes = content(&file);
            assert_eq!(bytes.len() as u64, CHUNK_BYTES, "from {length}");
            assert!(bytes.iter().all(|&byte| byte == 0), "from {length}");
            assert!(!directory.join(RECYCLE_FILE).exists());
        }
    }

    #[test]
    fn with_nothing_to_recycle_a_spare_is_zeros() {
        let directory = temp_dir("spare-fresh");
        // Another name of a file in use, where the spare goes: never truncated.
        std::fs::write(directory.join("in-use"), [1u8; 10]).unwrap();
        std::fs::hard_link(directory.join("in-use"), directory.join(SPARE_FILE)).unwrap();
        let (file, _) = prepared(&directory, CHUNK_BYTES);
        assert!(content(&file).iter().all(|&byte| byte == 0));
        assert_eq!(std::fs::read(directory.join("in-use")).unwrap(), [1u8; 10]);
    }
}
