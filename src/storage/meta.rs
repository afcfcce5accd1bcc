//! The `meta` file: which format the directory is in and whose it is. Checked on every
//! start, before the journal is read: a directory of another cluster or another replica
//! (a mix-up of `--data-dir` arguments) would otherwise make this replica vouch for
//! another's log, and a newer format would be misread.
//!
//! The file is short text, written once atomically when the directory is created:
//!
//! ```text
//! vsr data directory
//! version 6
//! cluster 0
//! replica 2
//! replicas 3
//! ```

use super::files;
use super::StorageError;
use crate::protocol::ReplicaIndex;
use std::fmt;
use std::path::Path;

/// The meta file's name in the data directory.
pub const META_FILE: &str = "meta";
/// The format this build reads and writes. Raise it with any change to a file's layout.
///
/// - 1: the first format.
/// - 2: every journal batch carries its file's id (journal files are recycled); a
///   version 1 journal would read as the use of a file whose id is 0, and is refused
///   rather than guessed at.
/// - 3: a witness's journal (paper 6.1) holds log start records (`codec`, tag 8). A
///   version 2 build would read one as damage and recover instead of refusing the
///   directory, so the version moves on, and this build refuses a version 2 directory
///   by name as it refuses version 1 (one format per build).
/// - 4: checkpoint files are incremental (`checkpoint_file`: magic `VSRCKPT2`, a table
///   of every page naming the earlier file that holds it). A version 3 build would
///   refuse each file as damage and recover from the others; this build refuses a
///   version 3 directory by name instead.
/// - 5: a replica that becomes a witness drops its checkpoint (`codec`, tag 10), and a
///   witness that becomes active keeps its witness log's committed entries (tag 11). A
///   version 4 build would read either record as damage; this build refuses a version 4
///   directory by name.
/// - 6: the actives' commit record (tag 9) is the latest one, not the highest: a move
///   to an epoch with witnesses writes a lower number (`epoch::move_to_epoch`). A
///   version 5 build would keep the old epoch's higher number and trim by it, without
///   a sign of damage; this build refuses a version 5 directory by name.
pub const FORMAT_VERSION: u32 = 6;
const FIRST_LINE: &str = "vsr data directory";
/// A longer meta file is not one of ours.
const META_BYTES_MAX: usize = 4096;

/// Whose data directory it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster id (`--cluster-id`).
    pub cluster: u128,
    /// This replica's index.
    pub replica: ReplicaIndex,
    /// The number of replicas in the cluster.
    pub replicas: u8,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replica {} of {} in cluster {}",
            self.replica, self.replicas, self.cluster
        )
    }
}

/// Checks `directory`'s meta file against `identity`; `false` if it has none (a new
/// directory).
pub fn check_if_present(directory: &Path, identity: Identity) -> Result<bool, StorageError> {
    let path = directory.join(META_FILE);
    match files::read_if_exists(&path)? {
        Some(bytes) => check(&path, &bytes, identity).map(|()| true),
        None => Ok(false),
    }
}

/// Writes the meta file of a new directory, atomically.
pub fn create(directory: &Path, identity: Identity) -> Result<(), StorageError> {
    let text = format!(
        "{FIRST_LINE}\nversion {FORMAT_VERSION}\ncluster {}\nreplica {}\nreplicas {}\n",
        identity.cluster, identity.replica, identity.replicas
    );
    let path = directory.join(META_FILE);
    files::replace_atomically(
        directory,
        &directory.join("meta.tmp"),
        &path,
        text.as_bytes(),
    )?;
    Ok(())
}

/// Checks the meta file, or writes it if there is none.
#[cfg(test)]
fn check_or_create(directory: &Path, identity: Identity) -> Result<(), StorageError> {
    if !check_if_present(directory, identity)? {
        create(directory, identity)?;
    }
    Ok(())
}

fn check(path: &Path, bytes: &[u8], identity: Identity) -> Result<(), StorageError> {
    let malformed = |reason: &str| StorageError::Malformed {
        path: path.into(),
        reason: format!("not a vsr meta file: {reason}"),
    };
    if bytes.len() > META_BYTES_MAX {
        return Err(malformed("too long"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| malformed("not text"))?;
    let mut lines = text.lines();
    if lines.next() != Some(FIRST_LINE) {
        return Err(malformed("wrong first line"));
    }
    let mut field = |name: &str| -> Result<&str, StorageError> {
        lines
            .next()
            .and_then(|line| line.strip_prefix(name))
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| malformed(&format!("no {name} line")))
    };
    let version = field("version")?;
    let version: u32 = version.parse().map_err(|_| malformed("bad version"))?;
    if version != FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.into(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let found = Identity {
        cluster: field("cluster")?
            .parse()
            .map_err(|_| malformed("bad cluster"))?,
        replica: field("replica")?
            .parse()
            .map_err(|_| malformed("bad replica"))?,
        replicas: field("replicas")?
            .parse()
            .map_err(|_| malformed("bad replicas"))?,
    };
    if found != identity {
        return Err(StorageError::WrongOwner {
            path: path.into(),
            found: found.to_string(),
            expected: identity.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Identity = Identity {
        cluster: 7,
        replica: 1,
        replicas: 3,
    };

    #[test]
    fn a_new_directory_gets_a_meta_file_that_checks() {
        let directory = crate::storage::data_dir::tests::temp_dir("meta-new");
        check_or_create(&directory, US).unwrap();
        check_or_create(&directory, US).unwrap();
    }

    #[test]
    fn another_cluster_or_replica_is_refused_by_name() {
        let directory = crate::storage::data_dir::tests::temp_dir("meta-owner");
        check_or_create(&directory, US).unwrap();
        for other in [
            Identity { cluster: 8, ..US },
            Identity { replica: 2, ..US },
            Identity { replicas: 5, ..US },
        ] {
            let text = check_or_create(&directory, other).unwrap_err().to_string();
            assert!(
                text.contains("belongs to replica 1 of 3 in cluster 7"),
                "{text}"
            );
            assert!(text.contains(META_FILE), "{text}");
        }
    }

    #[test]
    fn an_unknown_version_or_garbage_is_refused_by_name() {
        let directory = crate::storage::data_dir::tests::temp_dir("meta-version");
        let path = directory.join(META_FILE);
        std::fs::write(
            &path,
            "vsr data directory\nversion 9\ncluster 7\nreplica 1\nreplicas 3\n",
        )
        .unwrap();
        let text = check_or_create(&directory, US).unwrap_err().to_string();
        assert!(text.contains("version 9 is not supported"), "{text}");
        // Every earlier format: before the journal's file ids (1), a witness's log start
        // records (2), incremental checkpoint files (3), a witness's dropped checkpoint
        // (4), an epoch's own actives' commit (5).
        for old in 1..FORMAT_VERSION {
            std::fs::write(
                &path,
                format!("vsr data directory\nversion {old}\ncluster 7\nreplica 1\nreplicas 3\n"),
            )
            .unwrap();
            let text = check_or_create(&directory, US).unwrap_err().to_string();
            let expected =
                format!("version {old} is not supported (this vsr reads version {FORMAT_VERSION})");
            assert!(text.contains(&expected), "{text}");
        }
        for garbage in [
            &b"\xff\xfe"[..],
            b"",
            b"vsr data directory\nversion x\n",
            &[b'a'; 9000],
        ] {
            std::fs::write(&path, garbage).unwrap();
            let text = check_or_create(&directory, US).unwrap_err().to_string();
            assert!(text.contains("not a vsr meta file"), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
    }
}
