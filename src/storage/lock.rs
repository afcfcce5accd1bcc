//! The data directory's lock: `flock(LOCK_EX | LOCK_NB)` on `DIR/lock`, held for the
//! life of the process. Two replicas writing one journal would interleave batches and
//! corrupt it, so the second refuses to start. The kernel drops a `flock` when its holder
//! dies (also on `kill -9`), so a crash never leaves a stale lock behind; the process id
//! written into the file only makes the error message more useful.

use super::StorageError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "lock";

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `directory`, or says who holds it.
    pub fn acquire(directory: &Path) -> Result<DirLock, StorageError> {
        let path = directory.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StorageError::io("open", &path))?;
        // SAFETY: flock(2) on a descriptor this function owns; no memory is involved.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StorageError::Locked {
                    directory: directory.into(),
                    path,
                    holder: (!holder.is_empty() && holder.len() <= 20).then(|| holder.into()),
                });
            }
            return Err(StorageError::Io {
                operation: "lock",
                path,
                error,
            });
        }
        // Informational only: never read back for a decision.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let directory = crate::storage::data_dir::tests::temp_dir("lock");
        let first = DirLock::acquire(&directory).unwrap();
        // flock locks belong to open file descriptions: a second open in the same process
        // conflicts just as another process's would.
        let error = DirLock::acquire(&directory).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("in use by another process"), "{text}");
        assert!(text.contains(&directory.display().to_string()), "{text}");
        assert!(text.contains(&std::process::id().to_string()), "{text}");
        drop(first);
        DirLock::acquire(&directory).unwrap();
    }
}
