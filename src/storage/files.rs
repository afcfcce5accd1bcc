//! The few file-system steps every durable file here is built from: write a file whole
//! and durably under a temporary name, then rename it over the real one and make the
//! rename durable (so a crash leaves either the old file or the new one, never a mix).

use super::StorageError;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Makes the directory's entries (creations, renames, removals) durable.
pub fn sync_directory(directory: &Path) -> Result<(), StorageError> {
    File::open(directory)
        .and_then(|handle| handle.sync_all())
        .map_err(StorageError::io("fsync directory", directory))
}

/// Writes `bytes` to `temporary`, fsyncs it and renames it to `path`, then fsyncs the
/// directory. Returns the open file (now named `path`).
pub fn replace_atomically(
    directory: &Path,
    temporary: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<File, StorageError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(temporary)
        .map_err(StorageError::io("create", temporary))?;
    file.write_all(bytes)
        .map_err(StorageError::io("write", temporary))?;
    file.sync_all()
        .map_err(StorageError::io("fsync", temporary))?;
    std::fs::rename(temporary, path).map_err(StorageError::io("rename to", path))?;
    sync_directory(directory)?;
    Ok(file)
}

/// Reads a whole file; `None` if it does not exist.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(StorageError::Io {
            operation: "read",
            path: path.into(),
            error,
        }),
    }
}

/// A file written front to back in pieces under a temporary name, each piece synced
/// before the next is written (so that no `fsync` of it has more than a piece to flush:
/// the journal's `fdatasync`s share the device's flushes), then renamed over its real
/// name like [`replace_atomically`] does.
///
/// A piece goes out in writes of [`WRITE_BYTES`] at most, from a buffer that small: a
/// buffer of a whole piece (4 MiB for checkpoint files) stayed resident in the writer
/// thread's heap after every file, freed but never handed back (`perf/kv_memory.md`).
pub struct PieceWriter {
    file: File,
    temporary: std::path::PathBuf,
    /// Bytes not yet written.
    buffer: Vec<u8>,
    piece_bytes: usize,
    /// Bytes of the current piece written and not yet synced.
    unsynced: usize,
}

/// The most a [`PieceWriter`] buffers before a write.
pub const WRITE_BYTES: usize = 64 << 10;

impl PieceWriter {
    /// Creates (or truncates) `temporary`; pieces of `piece_bytes`.
    pub fn create(temporary: &Path, piece_bytes: usize) -> Result<PieceWriter, StorageError> {
        assert!(piece_bytes > 0);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(temporary)
            .map_err(StorageError::io("create", temporary))?;
        Ok(PieceWriter {
            file,
            temporary: temporary.into(),
            buffer: Vec::with_capacity(piece_bytes.min(WRITE_BYTES)),
            piece_bytes,
            unsynced: 0,
        })
    }

    /// Appends `bytes`, writing them as the buffer fills and syncing each piece as it is
    /// complete.
    pub fn append(&mut self, mut bytes: &[u8]) -> Result<(), StorageError> {
        let buffer_bytes = self.piece_bytes.min(WRITE_BYTES);
        while !bytes.is_empty() {
            // Room in the buffer, and in the piece (a piece ends exactly at its size).
            let room = (buffer_bytes - self.buffer.len())
                .min(self.piece_bytes - self.unsynced - self.buffer.len());
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = rest;
            if self.buffer.len() == buffer_bytes
                || self.unsynced + self.buffer.len() == self.piece_bytes
            {
                self.write_buffer()?;
                if self.unsynced == self.piece_bytes {
                    self.file
                        .sync_data()
                        .map_err(StorageError::io("fdatasync", &self.temporary))?;
                    self.unsynced = 0;
                }
            }
        }
        Ok(())
    }

    fn write_buffer(&mut self) -> Result<(), StorageError> {
        self.file
            .write_all(&self.buffer)
            .map_err(StorageError::io("write", &self.temporary))?;
        self.unsynced += self.buffer.len();
        self.buffer.clear();
        Ok(())
    }

    /// Writes what is left, fsyncs the file, renames it to `path` and fsyncs `directory`.
    pub fn finish_as(mut self, directory: &Path, path: &Path) -> Result<(), StorageError> {
        self.write_buffer()?;
        self.file
            .sync_all()
            .map_err(StorageError::io("fsync", &self.temporary))?;
        std::fs::rename(&self.temporary, path).map_err(StorageError::io("rename to", path))?;
        sync_directory(directory)
    }
}

/// Hands the free memory of the process's heaps back to the system, where whole pages of
/// it are free: called on a storage thread after it freed a large buffer. glibc keeps a
/// freed block below its (dynamically raised) trim threshold mapped in the thread's
/// arena for good otherwise: megabytes per storage thread, resident for nothing
/// (`perf/kv_memory.md`, 2026-12-02, "Where disk mode's extra memory goes"). glibc only
/// (`malloc_trim`); other allocators return memory by their own rules.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the sizes of the appends and of the pieces (smaller than a write, not a
    /// multiple of it, several writes), the file holds exactly the bytes appended.
    #[test]
    fn a_piece_writer_writes_every_byte_in_order() {
        let directory = crate::storage::data_dir::tests::temp_dir("pieces");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for piece_bytes in [1000, WRITE_BYTES, WRITE_BYTES + 1, 3 * WRITE_BYTES - 5] {
            for append_bytes in [1, 999, 70_000, bytes.len()] {
                // Fewer bytes where that makes many appends.
                let length = if append_bytes == 1 {
                    20_011
                } else {
                    bytes.len()
                };
                let expected = &bytes[..length];
                let temporary = directory.join("file.tmp");
                let target = directory.join("file");
                let mut writer = PieceWriter::create(&temporary, piece_bytes).unwrap();
                for now in expected.chunks(append_bytes) {
                    writer.append(now).unwrap();
                    assert!(writer.buffer.len() < WRITE_BYTES.min(piece_bytes));
                    assert!(writer.unsynced + writer.buffer.len() < piece_bytes);
                }
                writer.finish_as(&directory, &target).unwrap();
                let written = std::fs::read(&target).unwrap();
                assert!(
                    written == expected,
                    "pieces {piece_bytes}, appends {append_bytes}"
                );
                assert!(!temporary.exists());
            }
        }
    }
}
