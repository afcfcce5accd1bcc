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
