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
pub struct PieceWriter {
    file: File,
    temporary: std::path::PathBuf,
    piece: Vec<u8>,
    piece_bytes: usize,
}

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
            piece: Vec::with_capacity(piece_bytes),
            piece_bytes,
        })
    }

    /// Appends `bytes`, writing and syncing each piece as it fills.
    pub fn append(&mut self, mut bytes: &[u8]) -> Result<(), StorageError> {
        while !bytes.is_empty() {
            let room = self.piece_bytes - self.piece.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.piece.extend_from_slice(now);
            bytes = rest;
            if self.piece.len() == self.piece_bytes {
                self.write_piece()?;
                self.file
                    .sync_data()
                    .map_err(StorageError::io("fdatasync", &self.temporary))?;
            }
        }
        Ok(())
    }

    fn write_piece(&mut self) -> Result<(), StorageError> {
        self.file
            .write_all(&self.piece)
            .map_err(StorageError::io("write", &self.temporary))?;
        self.piece.clear();
        Ok(())
    }

    /// Writes what is left, fsyncs the file, renames it to `path` and fsyncs `directory`.
    pub fn finish_as(mut self, directory: &Path, path: &Path) -> Result<(), StorageError> {
        self.write_piece()?;
        self.file
            .sync_all()
            .map_err(StorageError::io("fsync", &self.temporary))?;
        std::fs::rename(&self.temporary, path).map_err(StorageError::io("rename to", path))?;
        sync_directory(directory)
    }
}
