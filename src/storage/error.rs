//! Why a data directory cannot be used. Every variant names the file it is about, so an
//! operator knows where to look; nothing here panics on what it finds on disk.

use std::path::PathBuf;
use thiserror::Error;

/// A data directory that cannot be opened or written.
#[derive(Debug, Error)]
pub enum StorageError {
    /// A file operation failed (a full or read-only disk, missing permissions, ...).
    #[error("{operation} {}: {error}", path.display())]
    Io {
        /// What was being done ("write", "fdatasync", "rename to", ...).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// Another process holds the directory's lock.
    #[error("data directory {} is in use by another process{} (lock file {})", directory.display(), holder.as_ref().map(|pid| format!(" (pid {pid})")).unwrap_or_default(), path.display())]
    Locked {
        /// The data directory.
        directory: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// The holder's process id, as it wrote it into the lock file.
        holder: Option<String>,
    },
    /// The directory belongs to another cluster or replica.
    #[error("{}: this data directory belongs to {found}, not to {expected}; give each replica its own directory", path.display())]
    WrongOwner {
        /// The `meta` file.
        path: PathBuf,
        /// Whose it is.
        found: String,
        /// Who we are.
        expected: String,
    },
    /// The directory was written by a format this build does not read.
    #[error("{}: data format version {found} is not supported (this vsr reads version {supported})", path.display())]
    UnsupportedVersion {
        /// The `meta` file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A file that must be well-formed is not (the `meta` file).
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl StorageError {
    /// An I/O error on `path`.
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.into();
        move |error| StorageError::Io {
            operation,
            path,
            error,
        }
    }
}
