//! [`DataDir`]: a replica's data directory, open and locked: read back on start, appended
//! one batch per group commit, compacted into a spare journal when it fills up.
//!
//! # Bounded without stalls
//!
//! A checkpoint lets the journal forget everything below it, but rewriting the journal at
//! every checkpoint would stall the group commits behind it (a write, two `fsync`s and a
//! rename, several times a second under load). Instead a checkpoint only trims the image
//! kept here (and, once the batch naming it is durable, removes the older checkpoint
//! files), and the journal is compacted when it is nearly full: into a spare file that a
//! background thread grew and synced meanwhile (`spare`), so the compaction costs one
//! small write, one `fdatasync` and a rename. The journal therefore holds at most about
//! [`JOURNAL_BYTES_MAX`] beyond the image at the latest checkpoint, and replay on open
//! folds what is there and trims it the same way. A spare holds at least
//! [`IMAGES_PER_SPARE`] times the image, and is never compacted into when the image would
//! fill more than half of it:
//! when a checkpoint interval's entries are larger than the maximum (entries of 1 KiB),
//! a journal compacted into a spare the image nearly fills is nearly full again at once,
//! and compacted again at the next group, the whole image written each time. The image
//! is bounded by the configuration (a checkpoint interval or so of entries above the
//! latest checkpoint), and so is the journal.
//!
//! # Recycled journal files
//!
//! The file a compaction leaves is not deleted: it is kept as `journal.recycle` (a hard
//! link made just before the spare is renamed over the journal) and becomes the next
//! spare, its blocks already allocated and written, so that a spare costs no zeros once
//! the journal has stopped growing (zeros written through the page cache, then with
//! `O_DIRECT`, were 10% and then a few percent of a loaded primary's CPU on 2 cores, and
//! all of it disk bandwidth that the journal's `fdatasync`s shared). Each use of a file
//! has its own random file id in every batch, so replay stops at the earlier use's
//! batches (`journal`'s docs). A fresh directory, or a spare larger than the last
//! journal, still gets zeros (for the part the recycled file does not cover). The cost
//! is disk space: once the journal has reached its size the directory keeps two files of
//! up to [`JOURNAL_BYTES_MAX`] at all times (the journal, and the next spare or the file
//! to recycle), where it held the second only from half full to the compaction before.
//!
//! # Checkpoint files in the background
//!
//! A checkpoint's file holds the pages its chain lacks (`checkpoint_file`: the whole
//! state when every page changed), and every replica takes its checkpoints at the same
//! ops: written before the batch that names it, every group queued behind that batch
//! would wait for the file (seconds for a large state), at all replicas at once. A
//! checkpoint whose batch leaves the journal holding every entry from the image's
//! checkpoint (or the first op) through the new checkpoint's op is *covered*: a restart
//! can rebuild its state from the older checkpoint and the journal. Such a checkpoint goes
//! to a writer thread (`checkpoint_writer`), the batch goes on without it, and the image
//! keeps the entries below it; once the file is written, synced, renamed and the
//! directory synced, its marker goes into the next batch (or one of its own), and only
//! then is the image trimmed and the older files its chain no longer needs removed. A
//! crash before the marker is durable restarts from the older checkpoint (its chain
//! whole) and the journal: nothing lost, only more to execute. A checkpoint that is not
//! covered (installed from another replica: the log was reset to it, and the entries
//! below it were never here) is written before its batch as before, and supersedes
//! whatever the writer has in hand.

use super::checkpoint_file::{self, Chain};
use super::checkpoint_writer::{CheckpointWriter, Written};
use super::codec::{self, CheckpointMarker};
use super::counters;
use super::fetch_file;
use super::files;
use super::journal;
use super::lock::DirLock;
use super::meta::{self, Identity};
use super::spare::{self, Spare};
use super::StorageError;
use crate::protocol::{Checkpoint, Stored, StoredWrite};
use crate::service::Snapshot;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tracing::{error, info, warn};

/// The journal's file name in the data directory.
pub const JOURNAL_FILE: &str = "journal";
/// Where a damaged journal is kept for inspection (the latest one only).
pub const DAMAGED_JOURNAL_FILE: &str = "journal.damaged";
const JOURNAL_TMP: &str = "journal.tmp";
/// The journal file a compaction left, kept to become the next spare.
pub const RECYCLE_FILE: &str = "journal.recycle";
/// The size the journal grows to before it is compacted (spares are this size at most):
/// at the 30-50 MB/s a loaded replica journals here, about one compaction a second.
pub const JOURNAL_BYTES_MAX: u64 = 64 << 20;

/// An open, locked data directory.
///
/// It keeps its own image of what the journal holds (every batch is folded into it), so
/// it can compact the journal without asking the core.
#[derive(Debug)]
pub struct DataDir {
    directory: PathBuf,
    journal_path: PathBuf,
    _lock: DirLock,
    journal: File,
    /// Bytes of the journal written; the next batch goes here (a block boundary).
    journal_bytes: u64,
    /// The journal file's length: whole chunks; past `journal_bytes`, zeros or the
    /// batches of the file's earlier use.
    file_bytes: u64,
    next_sequence: u64,
    /// The id of this use of the journal file, in every batch (`journal`'s docs).
    file_id: u64,
    /// What the journal holds, folded batch by batch; its checkpoint without pages
    /// (`without_pages`).
    image: Stored,
    /// The marker of `image`'s checkpoint (its file is written).
    marker: Option<CheckpointMarker>,
    /// The files reading `marker`'s checkpoint needs (its own and its bases).
    marker_files: Vec<u64>,
    /// A newer checkpoint's file was written: older ones go once its batch is durable.
    stale_checkpoints: bool,
    /// The next journal file, prepared in the background.
    spare: Spare,
    /// Checkpoint files written in the background (their markers follow).
    checkpoints: CheckpointWriter,
    /// Spares dropped because the image would have filled more than half of them.
    spares_too_small: u64,
    /// [`JOURNAL_BYTES_MAX`] (smaller in tests).
    journal_bytes_max: u64,
    /// Set when a batch did not fold into `image` (a bug in a writer or in the fold): the
    /// image no longer describes the journal, so the journal is no longer compacted. The
    /// next restart sees the same sequence and reports damage: safe, never silent.
    image_broken: Option<String>,
    /// Encoding space, kept for its capacity.
    buffer: Vec<u8>,
    /// What the `fetch` file held on open (its pages went to the image read back): where
    /// its writer goes on.
    fetch_read_back: fetch_file::ReadBack,
}

impl DataDir {
    /// Opens (creating it if missing) and locks `directory` for `identity`, checks its
    /// format and owner, and reads back what it holds. A torn tail is zeroed; damage is
    /// reported in the image (`Stored::damage`) and the journal is rewritten to what was
    /// verified, marked recovering, so that the replica recovers through the protocol
    /// even if it crashes again first. A fresh directory gives `Stored::default()`.
    pub fn open(directory: &Path, identity: Identity) -> Result<(DataDir, Stored), StorageError> {
        std::fs::create_dir_all(directory)
            .map_err(StorageError::io("create data directory", directory))?;
        let lock = DirLock::acquire(directory)?;
        // A directory that has a meta file was used: its journal must be there. A new one
        // gets its (empty) journal first and its meta file last, so that a meta file
        // always means the journal was created.
        let used = meta::check_if_present(directory, identity)?;
        let journal_path = directory.join(JOURNAL_FILE);
        let read_back = files::read_if_exists(&journal_path)?;
        let journal_missing = used && read_back.is_none();
        let bytes = read_back.unwrap_or_default();
        let mut replay = journal::replay(&bytes, &journal_path.display().to_string());
        let mut image = std::mem::take(&mut replay.image);
        if journal_missing {
            image.damage = Some(format!(
                "journal {} is missing from a data directory that was used",
                journal_path.display()
            ));
        }
        if !(bytes.len() as u64).is_multiple_of(journal::CHUNK_BYTES) {
            image.damage.get_or_insert(format!(
                "journal {} is {} bytes, not a whole number of {} MiB chunks: it was cut short or extended by something other than vsr",
                journal_path.display(),
                bytes.len(),
                journal::CHUNK_BYTES >> 20
            ));
        }
        let (marker, chain) = resolve_checkpoint(directory, &mut image, replay.last_marker);
        let marker_files = chain.files().collect();
        let journal = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&journal_path)
            .map_err(StorageError::io("open", &journal_path))?;
        let mut data_dir = DataDir {
            directory: directory.into(),
            journal_path,
            _lock: lock,
            journal,
            journal_bytes: replay.valid_bytes,
            file_bytes: bytes.len() as u64,
            next_sequence: replay.next_sequence,
            // A journal without a batch (fresh, or its first write torn) is a fresh use.
            file_id: replay.file_id.unwrap_or_else(journal::new_file_id),
            image: Stored::default(),
            marker,
            marker_files,
            stale_checkpoints: false,
            spare: Spare::default(),
            checkpoints: CheckpointWriter::new(directory, chain),
            spares_too_small: 0,
            journal_bytes_max: JOURNAL_BYTES_MAX,
            image_broken: None,
            buffer: Vec::new(),
            fetch_read_back: fetch_file::ReadBack::default(),
        };
        if let Some(damage) = image.damage.clone() {
            data_dir.set_damaged_image(&image, &damage)?;
        } else {
            if replay.torn_bytes > 0 {
                data_dir.zero_torn_tail(replay.torn_bytes)?;
            } else if replay.leftover {
                info!(
                    journal = %data_dir.journal_path.display(),
                    offset = data_dir.journal_bytes,
                    "the journal ends here; what follows is from the file's earlier use or a write cut short before its header landed, and is overwritten by the next batches"
                );
            }
            // The journal may hold entries below its latest checkpoint (it is compacted
            // only when full): the checkpoint stands for them.
            image.trim_to_checkpoint();
            data_dir.image = without_pages(image.clone());
        }
        files::sync_directory(directory)?; // The journal may have just been created.
        if !used {
            meta::create(directory, identity)?;
        }
        data_dir.remove_stale_files();
        // A spare is never part of the durable state; one a crash left behind is prepared
        // anew. A file to recycle is forgotten too: a crash between its link and the
        // compaction's rename leaves it naming the journal itself.
        let _ = std::fs::remove_file(directory.join(spare::SPARE_FILE));
        let _ = std::fs::remove_file(directory.join(RECYCLE_FILE));
        image.fetched = data_dir.read_fetched_pages()?;
        info!(
            directory = %directory.display(),
            checkpoint_files = data_dir.marker_files.len(),
            batches = replay.batches,
            journal_bytes = data_dir.journal_bytes,
            op = image.op(),
            commit = image.commit,
            checkpoint = image.checkpoint_op(),
            "data directory opened"
        );
        Ok((data_dir, image))
    }

    /// Reads the `fetch` file's pages (a cache: whatever it holds, the start goes on).
    fn read_fetched_pages(&mut self) -> Result<crate::protocol::FetchedPages, StorageError> {
        let path = fetch_file::path(&self.directory);
        let mut read_back = fetch_file::read(&self.directory)?;
        if read_back.fetched.root.is_some() || read_back.tail.is_some() {
            info!(
                file = %path.display(),
                pages = read_back.fetched.pages.len(),
                dropped_corrupt = read_back.fetched.dropped,
                tail = read_back.tail.unwrap_or("none"),
                "pages of an unfinished checkpoint fetch read back"
            );
        }
        let fetched = std::mem::take(&mut read_back.fetched);
        read_back.fetched.root = fetched.root;
        self.fetch_read_back = read_back;
        Ok(fetched)
    }

    /// The writer of the `fetch` file, going on after what [`DataDir::open`] read back.
    pub fn fetch_writer(&self) -> Result<fetch_file::Writer, StorageError> {
        fetch_file::Writer::open(&self.directory, &self.fetch_read_back)
    }

    /// The data directory's path.
    pub fn path(&self) -> &Path {
        &self.directory
    }

    /// Bytes the journal holds.
    pub fn journal_bytes(&self) -> u64 {
        self.journal_bytes
    }

    /// Makes `writes` durable as one batch: the newest checkpoint among them goes to its
    /// own file first, then the batch is appended and `fdatasync`ed once. On error nothing
    /// may be reported durable (the caller stops).
    pub fn append(&mut self, writes: &[StoredWrite]) -> Result<(), StorageError> {
        self.append_owned(&mut writes.to_vec())
    }

    /// As [`DataDir::append`], but folds the writes into the directory's image by moving
    /// them out of `writes` (left empty on success): no copy of their entry lists.
    ///
    /// A checkpoint the journal covers (see "Checkpoint files in the background" in the
    /// module docs) goes to the background writer instead of being written first; the
    /// marker of a file the writer finished goes into this batch.
    pub fn append_owned(&mut self, writes: &mut Vec<StoredWrite>) -> Result<(), StorageError> {
        if writes.is_empty() {
            return Ok(());
        }
        let newest = StoredWrite::newest_checkpoint(writes)
            .filter(|checkpoint| self.marker.is_none_or(|marker| marker.op < checkpoint.op));
        let mut written = self.checkpoints.poll().transpose()?;
        if let Some(checkpoint) = newest {
            if self.image_broken.is_none() && self.image.covers(writes, checkpoint.op) {
                if self.checkpoints.newest_pending() < Some(checkpoint.op) {
                    self.checkpoints.submit(checkpoint.clone());
                }
                // Its marker follows once the file is durable: until then the image
                // keeps the journal's entries below it.
                writes.retain(|write| !matches!(write, StoredWrite::Checkpoint(_)));
            } else {
                // Installed from another replica (or the journal lacks entries below it):
                // a restart needs its file, so it is written before the batch, and
                // supersedes every file the writer has in hand.
                self.checkpoints.abandon();
                written = None;
                let (marker, files) = self.checkpoints.write_now(checkpoint)?;
                self.marker = Some(marker);
                self.marker_files = files;
                self.stale_checkpoints = true;
            }
        }
        if let Some((checkpoint, marker, files)) = written {
            // A file the writer finished: its marker goes into this batch, before the
            // batch's own writes (which come after it in op order).
            if self.marker.is_none_or(|current| current.op < marker.op) {
                self.marker = Some(marker);
                self.marker_files = files;
                self.stale_checkpoints = true;
                writes.insert(0, StoredWrite::Checkpoint(checkpoint));
            }
        }
        self.append_batch(writes)
    }

    /// Writes a batch holding only the marker of a checkpoint file the background writer
    /// finished, if it did (so that an idle replica's journal names its newest checkpoint
    /// too). Returns whether one was written.
    pub fn append_finished_checkpoint(&mut self) -> Result<bool, StorageError> {
        match self.checkpoints.poll().transpose()? {
            Some(written) => self.append_marker(written),
            None => Ok(false),
        }
    }

    /// Writes the marker of a finished checkpoint file in a batch of its own, unless a
    /// newer checkpoint is named already. Returns whether it wrote one.
    fn append_marker(
        &mut self,
        (checkpoint, marker, files): Written,
    ) -> Result<bool, StorageError> {
        if self.marker.is_some_and(|current| current.op >= marker.op) {
            return Ok(false);
        }
        self.marker = Some(marker);
        self.marker_files = files;
        self.stale_checkpoints = true;
        self.append_batch(&mut vec![StoredWrite::Checkpoint(checkpoint)])?;
        Ok(true)
    }

    /// Whether a checkpoint file is being written in the background (its marker not yet
    /// in the journal).
    pub fn checkpoint_pending(&self) -> bool {
        self.checkpoints.is_busy()
    }

    /// Waits for the checkpoint files being written and puts their markers in the
    /// journal (tests: the storage thread polls instead).
    #[cfg(test)]
    pub fn finish_checkpoint_files(&mut self) {
        while self.checkpoints.is_busy() {
            if let Some(written) = self.checkpoints.wait() {
                self.append_marker(written.unwrap()).unwrap();
            }
        }
    }

    /// Encodes `writes` as the next batch with the current marker, writes and syncs it,
    /// and folds them into the image (moved out of `writes`).
    fn append_batch(&mut self, writes: &mut Vec<StoredWrite>) -> Result<(), StorageError> {
        let marker = self.marker;
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        journal::encode_batch(self.next_sequence, self.file_id, &mut buffer, |out| {
            for write in writes.iter() {
                codec::encode(write, checksum_for(write, marker), out);
            }
        });
        let written = self.write_and_sync(&buffer);
        counters::JOURNAL_APPEND_BYTES.add(buffer.len() as u64);
        self.buffer = buffer;
        written?;
        self.next_sequence += 1;
        let dropped = writes
            .iter()
            .any(|write| matches!(write, StoredWrite::CheckpointDropped));
        for write in writes.drain(..) {
            self.fold(write);
        }
        if dropped && self.image.checkpoint.is_none() {
            self.forget_checkpoint_files();
        }
        // What a compaction will write: entries below the checkpoint are in its file.
        self.image.trim_to_checkpoint();
        Ok(())
    }

    /// The replica dropped its checkpoint (it became a witness, paper 6.1): no file is
    /// needed any more, and none being written is wanted. The next `maintain` removes
    /// them; the next checkpoint, if the replica ever holds one again, starts a new chain.
    fn forget_checkpoint_files(&mut self) {
        self.checkpoints.abandon();
        self.checkpoints = CheckpointWriter::new(&self.directory, Chain::default());
        self.marker = None;
        self.marker_files.clear();
        self.stale_checkpoints = true;
    }

    /// The work that must not delay a group's completion, run after it: removes the
    /// checkpoint files the journal no longer names, compacts the journal into the spare
    /// when it is nearly full (or, past half full, just after a checkpoint), and starts
    /// preparing the next spare when it is half full.
    ///
    /// A compaction writes the image, everything above the latest checkpoint, and syncs
    /// it while the next groups wait: up to a checkpoint interval's entries (megabytes
    /// under load) at 3/4 full, but only the few entries above it just after a
    /// checkpoint was taken. So a spare that is ready (a recycled file is ready at once)
    /// is taken at the first checkpoint past half full.
    pub fn maintain(&mut self) -> Result<(), StorageError> {
        let checkpointed = std::mem::take(&mut self.stale_checkpoints);
        if checkpointed {
            self.remove_stale_files();
        }
        if self.image_broken.is_some() {
            return Ok(()); // The image cannot be written out: the journal grows in place.
        }
        let free = self.file_bytes.saturating_sub(self.journal_bytes);
        let nearly_full = free <= self.file_bytes / 4;
        let checkpointed = checkpointed
            && self.journal_bytes * 2 >= self.file_bytes
            && image_bytes(&self.image) * IMAGE_SHARE_MAX <= self.journal_bytes;
        if nearly_full || checkpointed {
            if let Some((file, bytes)) = self.spare.take_ready() {
                if image_bytes(&self.image) * 2 <= bytes {
                    self.compact_into(file, bytes)?;
                } else {
                    // The image would fill more than half of it: the compaction would
                    // free too little, and the next would follow at once (one per group,
                    // each writing and syncing the whole image: what a checkpoint
                    // interval of large entries did with spares capped at
                    // `JOURNAL_BYTES_MAX`). A spare sized for the image is prepared
                    // instead; meanwhile the journal grows in place.
                    drop(file);
                    let _ = std::fs::remove_file(self.directory.join(spare::SPARE_FILE));
                    self.spares_too_small += 1;
                }
            }
        }
        if self.spare.is_idle() && self.journal_bytes * 2 >= self.file_bytes {
            let journal = std::os::unix::fs::MetadataExt::ino(
                &self
                    .journal
                    .metadata()
                    .map_err(StorageError::io("stat", &self.journal_path))?,
            );
            let image = image_bytes(&self.image);
            let bytes = spare_bytes(self.file_bytes, image, self.journal_bytes_max);
            self.spare.prepare(&self.directory, bytes, journal);
        }
        Ok(())
    }

    /// Compacts the journal into the spare `file` (`bytes`, written and synced: zeros or
    /// a recycled journal's batches): the image at offset 0 under a new file id,
    /// `fdatasync`, then the journal linked as the file to recycle, the spare renamed over
    /// the journal and the directory synced. A crash before the rename leaves the old
    /// journal, after it the new one: both hold the image. An image too large for the
    /// spare is rewritten the slow way.
    fn compact_into(&mut self, file: File, bytes: u64) -> Result<(), StorageError> {
        let spare_path = self.directory.join(spare::SPARE_FILE);
        let recycle_path = self.directory.join(RECYCLE_FILE);
        let file_id = journal::new_file_id();
        let buffer = self.encode_image(None, file_id);
        let used = buffer.len() as u64;
        counters::JOURNAL_COMPACTIONS.add(1);
        if used > bytes {
            drop(file);
            let _ = std::fs::remove_file(&spare_path);
            self.buffer = buffer;
            return self.rewrite_journal(None);
        }
        counters::JOURNAL_COMPACTION_BYTES.add(used);
        let written = file
            .write_all_at(&buffer, 0)
            .map_err(StorageError::io("write", &spare_path))
            .and_then(|()| {
                file.sync_data()
                    .map_err(StorageError::io("fdatasync", &spare_path))
            });
        self.buffer = shrunk(buffer);
        written?;
        // Keep the journal's file for the next spare; without the link it is deleted.
        let _ = std::fs::remove_file(&recycle_path);
        let recycle = std::fs::hard_link(&self.journal_path, &recycle_path).is_ok();
        if let Err(error) = std::fs::rename(&spare_path, &self.journal_path) {
            if recycle {
                // It names the journal itself: never to be taken as a spare.
                let _ = std::fs::remove_file(&recycle_path);
            }
            return Err(StorageError::io("rename to", &self.journal_path)(error));
        }
        files::sync_directory(&self.directory)?;
        self.journal = file;
        self.journal_bytes = used;
        self.file_bytes = bytes;
        self.next_sequence += 1;
        self.file_id = file_id;
        Ok(())
    }

    /// `image` as one batch, the next in sequence, the first of a file's use `file_id`,
    /// in the encoding buffer (taken: hand it back with `self.buffer = ...`).
    /// The image's entries are encoded where they are, never copied into a write (a
    /// copy was the image's size again, on the storage thread, at every compaction).
    fn encode_image(&mut self, image: Option<&Stored>, file_id: u64) -> Vec<u8> {
        let image = image.unwrap_or(&self.image);
        let (before, after) = image_writes(image);
        let marker = self.marker;
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        journal::encode_batch(self.next_sequence, file_id, &mut buffer, |out| {
            for write in &before {
                codec::encode(write, checksum_for(write, marker), out);
            }
            if !image.entries.is_empty() {
                codec::encode_log_append(image.log_base + 1, &image.entries, out);
            }
            for write in &after {
                codec::encode(write, checksum_for(write, marker), out);
            }
        });
        buffer
    }

    fn write_and_sync(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let end = self.journal_bytes + bytes.len() as u64;
        if end > self.file_bytes {
            self.grow(end.next_multiple_of(journal::CHUNK_BYTES))?;
        }
        self.journal
            .write_all_at(bytes, self.journal_bytes)
            .map_err(StorageError::io("write", &self.journal_path))?;
        self.journal
            .sync_data()
            .map_err(StorageError::io("fdatasync", &self.journal_path))?;
        self.journal_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Grows the journal to `file_bytes` with zeros, written (not a sparse hole) and
    /// synced before any batch goes there: a batch then overwrites blocks the file
    /// system has already allocated, so its `fdatasync` flushes data only, with no
    /// metadata (block allocation, file size) to commit first.
    fn grow(&mut self, file_bytes: u64) -> Result<(), StorageError> {
        static ZEROS: [u8; journal::BLOCK_BYTES * 16] = [0; journal::BLOCK_BYTES * 16];
        let mut at = self.file_bytes;
        while at < file_bytes {
            let length = (file_bytes - at).min(ZEROS.len() as u64) as usize;
            self.journal
                .write_all_at(&ZEROS[..length], at)
                .map_err(StorageError::io("extend", &self.journal_path))?;
            counters::JOURNAL_ZERO_BYTES.add(length as u64);
            at += length as u64;
        }
        self.journal
            .sync_all()
            .map_err(StorageError::io("fsync", &self.journal_path))?;
        self.file_bytes = file_bytes;
        Ok(())
    }

    fn fold(&mut self, write: StoredWrite) {
        if self.image_broken.is_some() {
            return;
        }
        let write = match write {
            StoredWrite::Checkpoint(checkpoint) => {
                StoredWrite::Checkpoint(checkpoint_without_pages(checkpoint))
            }
            write => write,
        };
        if let Err(inconsistent) = self.image.apply(write) {
            error!(
                journal = %self.journal_path.display(),
                %inconsistent,
                "a batch does not fold into the journal's image: compaction stops, and the next restart will recover through the protocol"
            );
            self.image_broken = Some(inconsistent.to_string());
        }
    }

    /// Writes `image` (the directory's own without one) as the whole journal, atomically.
    fn rewrite_journal(&mut self, image: Option<&Stored>) -> Result<(), StorageError> {
        let file_id = journal::new_file_id();
        let mut buffer = self.encode_image(image, file_id);
        let used = buffer.len() as u64;
        counters::JOURNAL_COMPACTION_BYTES.add(used);
        buffer.resize((used.next_multiple_of(journal::CHUNK_BYTES)) as usize, 0);
        let temporary = self.directory.join(JOURNAL_TMP);
        let replaced =
            files::replace_atomically(&self.directory, &temporary, &self.journal_path, &buffer);
        let length = buffer.len() as u64;
        self.buffer = shrunk(buffer);
        self.journal = replaced?;
        self.journal_bytes = used;
        self.file_bytes = length;
        self.next_sequence += 1;
        self.file_id = file_id;
        Ok(())
    }

    /// Damage found on open: keep the damaged journal for inspection, and rewrite the
    /// journal to what was verified, marked recovering and joined, so that a crash before
    /// the core's first write still restarts into recovery, never as an intact or empty
    /// replica.
    fn set_damaged_image(&mut self, image: &Stored, damage: &str) -> Result<(), StorageError> {
        warn!(
            damage,
            "the data directory is damaged: recovering through the protocol"
        );
        let damaged = self.directory.join(DAMAGED_JOURNAL_FILE);
        let _ = std::fs::remove_file(&damaged);
        std::fs::hard_link(&self.journal_path, &damaged)
            .map_err(StorageError::io("keep the damaged journal as", &damaged))?;
        let mut marked = image.clone();
        marked.damage = None;
        marked.state.recovering = true;
        marked.state.joined = true;
        marked.trim_to_checkpoint();
        if marked.checkpoint.is_none() {
            self.marker = None;
            self.marker_files.clear();
        }
        self.rewrite_journal(Some(&marked))?;
        self.image = without_pages(marked);
        Ok(())
    }

    /// Overwrites a batch cut short by a crash (`torn_bytes` from the journal's end) with
    /// zeros, so that the journal ends where its last whole batch does (the next batch
    /// goes there).
    fn zero_torn_tail(&mut self, torn_bytes: u64) -> Result<(), StorageError> {
        warn!(
            journal = %self.journal_path.display(),
            offset = self.journal_bytes,
            torn_bytes,
            "zeroing a torn batch at the end of the journal (a write cut short by a crash; nothing relied on it)"
        );
        let zeros = vec![0u8; journal::BLOCK_BYTES * 64];
        let end = (self.journal_bytes + torn_bytes).min(self.file_bytes);
        let mut at = self.journal_bytes;
        while at < end {
            let length = (end - at).min(zeros.len() as u64) as usize;
            self.journal
                .write_all_at(&zeros[..length], at)
                .map_err(StorageError::io("write", &self.journal_path))?;
            at += length as u64;
        }
        self.journal
            .sync_data()
            .map_err(StorageError::io("fdatasync", &self.journal_path))
    }

    /// Checkpoint files the journal's marker does not need (its file and that file's
    /// bases), and temporary files a crash left; never those the background writer
    /// needs (the files it has in hand and the chain it writes them against).
    /// Called once a marker is durable: a file leaves only after the marker of a file
    /// that no longer needs it is.
    fn remove_stale_files(&self) {
        let keep = |op| {
            self.marker_files.contains(&op)
                || self.checkpoints.needed_files().any(|needed| needed == op)
        };
        let Ok(listing) = std::fs::read_dir(&self.directory) else {
            return;
        };
        for entry in listing.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let stale = match checkpoint_file::op_of(&name) {
                Some(op) => !keep(op),
                None => match name.strip_suffix(".tmp") {
                    Some(file) if name.starts_with("checkpoint-") => {
                        checkpoint_file::op_of(file).is_none_or(|op| !keep(op))
                    }
                    _ => false,
                },
            };
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The encoding buffer after it held a whole image: emptied, and no more than the
/// capacity small batches need kept (an image's worth is megabytes under load, kept for
/// nothing until the next compaction).
/// When it held [`TRIM_AFTER_BYTES`] or more, the heaps' free memory is handed back too
/// (`files::return_freed_memory`): glibc would keep the freed capacity resident.
fn shrunk(mut buffer: Vec<u8>) -> Vec<u8> {
    let large = buffer.capacity() >= TRIM_AFTER_BYTES;
    buffer.clear();
    buffer.shrink_to(journal::BLOCK_BYTES * 16);
    if large {
        files::return_freed_memory();
    }
    buffer
}

/// An encoding buffer this large is handed back to the system once emptied (smaller ones
/// are not worth a `malloc_trim`, which walks every heap of the process).
const TRIM_AFTER_BYTES: usize = 1 << 20;

/// The size of the spare prepared for a journal file of `file_bytes` whose image (what a
/// compaction writes) is about `image_bytes`: twice the file, so that a busy replica
/// reaches [`JOURNAL_BYTES_MAX`] after a few compactions and an idle one keeps a small
/// journal; and at least [`IMAGES_PER_SPARE`] times the image (past the maximum when a
/// checkpoint interval's entries are that large: the image is bounded by the
/// configuration, the file by it).
fn spare_bytes(file_bytes: u64, image_bytes: u64, journal_bytes_max: u64) -> u64 {
    (2 * file_bytes)
        .clamp(journal::CHUNK_BYTES, journal_bytes_max)
        .max(IMAGES_PER_SPARE * image_bytes)
        .next_multiple_of(journal::CHUNK_BYTES)
}

/// How many images a spare holds at least. A compaction rewrites the image, and the
/// groups append the journal's fill less the previous image before the next one: with 3
/// (as before) a compaction at 3/4 full rewrote 0.8 bytes per byte appended, and one just
/// after a checkpoint at half full 2 (with 1 KiB entries the image is tens of MB:
/// `perf/durability.md`); with 6, about 0.3 at 3/4 full, and at most 1/3 when a
/// checkpoint lets it compact early ([`IMAGE_SHARE_MAX`]), as long as the image has not
/// grown much since the spare was sized (it is bounded by the configuration; one that
/// outgrew half the spare gets a larger spare instead). Measured: 0.26 while filling a
/// large state, 0.09 on a hot set, against 0.61 and 0.48. The cost is disk space: a
/// journal file of up to 6 images (twice that with a recycled file: `spare`).
const IMAGES_PER_SPARE: u64 = 6;

/// A checkpoint lets the journal compact early (past half full) only when the image is
/// at most 1/this of the journal: early is for a compaction that writes little (at most
/// a third of what was appended since the last one).
const IMAGE_SHARE_MAX: u64 = 4;

/// About the bytes a compaction writes for `image`: its entries as the journal encodes
/// them, and a block for the rest (a few small records, the batch's framing).
fn image_bytes(image: &Stored) -> u64 {
    let kept = image
        .former_witness_log
        .iter()
        .flat_map(|kept| &kept.entries);
    let entries: u64 = (image.entries.iter().chain(kept))
        .map(|entry| codec::ENTRY_BYTES + entry.body.len() as u64)
        .sum();
    entries + journal::BLOCK_BYTES as u64
}

/// The checksum a checkpoint record carries: that of the file written for it. Older
/// checkpoints of the same batch are never read back (replay reads only the last
/// marker's file), so they carry 0.
fn checksum_for(write: &StoredWrite, marker: Option<CheckpointMarker>) -> u32 {
    match (write, marker) {
        (StoredWrite::Checkpoint(checkpoint), Some(marker)) if marker.op == checkpoint.op => {
            marker.checksum
        }
        _ => 0,
    }
}

/// `image` holding its checkpoint's op and timestamp, not its pages: the image is what a
/// compaction writes, and a compaction writes a checkpoint as its marker (the pages are
/// in its file, written before its marker is folded in: a checkpoint reaches the image
/// only in the batch of its file's marker, or after its file was written ahead of its
/// batch). Holding the pages here would keep every page of the latest durable checkpoint
/// alive after the replica released them, while the replica builds the next one (the
/// whole rewritten state twice at every checkpoint: `perf/kv_memory.md`).
fn without_pages(mut image: Stored) -> Stored {
    image.checkpoint = image.checkpoint.map(checkpoint_without_pages);
    image
}

fn checkpoint_without_pages(checkpoint: Checkpoint) -> Checkpoint {
    Checkpoint {
        service: Snapshot::empty(),
        clients: Snapshot::empty(),
        ..checkpoint
    }
}

/// The writes that rebuild `image` from nothing, but for its entries: those before
/// them, and those after (the entries go between, as one `LogAppend` from
/// `log_base + 1`, encoded from the image itself: `codec::encode_log_append`).
fn image_writes(image: &Stored) -> (Vec<StoredWrite>, Vec<StoredWrite>) {
    let mut before = Vec::with_capacity(2);
    if let Some(checkpoint) = &image.checkpoint {
        before.push(StoredWrite::Checkpoint(checkpoint.clone()));
    }
    if image.checkpoint.is_none() && image.log_base > 0 {
        // A witness's log, trimmed without a checkpoint (paper 6.1).
        before.push(StoredWrite::LogStart {
            base: image.log_base,
            timestamp: image.log_base_timestamp,
        });
    } else {
        before.push(StoredWrite::LogReset {
            base: image.log_base,
        });
    }
    let mut writes = Vec::with_capacity(3);
    if let Some((configuration, epoch_start)) = &image.configuration {
        writes.push(StoredWrite::Configuration {
            configuration: configuration.clone(),
            epoch_start: *epoch_start,
        });
    }
    writes.push(StoredWrite::State(image.state));
    writes.push(StoredWrite::Commit(image.commit));
    if let Some(actives_commit) = image.actives_commit {
        writes.push(StoredWrite::ActivesCommit(actives_commit));
    }
    if let Some(kept) = &image.former_witness_log {
        writes.push(StoredWrite::FormerWitnessLog(Some(kept.clone())));
    }
    (before, writes)
}

/// Reads the pages of the checkpoint the journal's last marker names into `image`, from
/// its file and the file's bases; returns the marker and the chain the next file is
/// written against. An unreadable file (or a base of it) is damage (its marker was
/// durable, so were the files); the image then holds no checkpoint, and the chain is
/// empty (the next file holds every page).
fn resolve_checkpoint(
    directory: &Path,
    image: &mut Stored,
    marker: Option<CheckpointMarker>,
) -> (Option<CheckpointMarker>, Chain) {
    let Some(marker) =
        marker.filter(|marker| Some(marker.op) == image.checkpoint.as_ref().map(|c| c.op))
    else {
        return (None, Chain::default());
    };
    match checkpoint_file::read(directory, &marker) {
        Ok((checkpoint, chain)) => {
            image.checkpoint = Some(checkpoint);
            (Some(marker), chain)
        }
        Err(reason) => {
            image.damage.get_or_insert(reason);
            image.checkpoint = None::<Checkpoint>;
            (None, Chain::default())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::journal::tests::{append, state};

    /// A fresh directory under the system's temporary directory, removed when dropped
    /// (journals of tens of megabytes would otherwise pile up run after run).
    pub(crate) fn temp_dir(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("vsr-storage-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// See [`temp_dir`].
    pub(crate) struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const US: Identity = Identity {
        cluster: 1,
        replica: 0,
        replicas: 3,
    };

    /// What `directory` reads back once `data_dir` is closed.
    fn reopened(directory: &Path, data_dir: DataDir) -> Stored {
        drop(data_dir);
        DataDir::open(directory, US).unwrap().1
    }

    /// Folds `writes` into `image`, as the core's view of what it wrote.
    fn fold(image: &mut Stored, writes: &[StoredWrite]) {
        for write in writes {
            image.apply(write.clone()).unwrap();
        }
    }

    /// Kept pages come back with the image of an otherwise empty directory (they hold no
    /// data), and a writer after the reopen appends to them for the same root.
    #[test]
    fn kept_pages_read_back_with_the_image_and_the_writer_goes_on() {
        use crate::service::snapshot::{Digest, Page};
        let directory = temp_dir("fetched");
        let (data_dir, image) = DataDir::open(&directory, US).unwrap();
        assert_eq!(image.fetched, Default::default());
        let page = |n: u8| Page::new(bytes::Bytes::from(vec![n; 300]));
        let root = Digest([5; 32]);
        let mut writer = data_dir.fetch_writer().unwrap();
        writer.add(root, &[page(1), page(2)]).unwrap();
        drop(writer);
        let (data_dir, image) = {
            drop(data_dir);
            DataDir::open(&directory, US).unwrap()
        };
        assert_eq!(image.fetched.root, Some(root));
        assert_eq!(image.fetched.pages, vec![page(1), page(2)]);
        assert!(!image.holds_data(), "kept pages vouch for nothing");
        let mut writer = data_dir.fetch_writer().unwrap();
        writer.add(root, &[page(3)]).unwrap();
        drop(writer);
        let image = reopened(&directory, data_dir);
        assert_eq!(image.fetched.pages, vec![page(1), page(2), page(3)]);
    }

    #[test]
    fn a_fresh_directory_is_empty_and_what_is_appended_reads_back() {
        let directory = temp_dir("fresh");
        let (mut data_dir, image) = DataDir::open(&directory, US).unwrap();
        assert_eq!(image, Stored::default());
        assert!(!image.holds_data());
        let mut expected = Stored::default();
        for n in 0..10u64 {
            let writes = [
                append(n * 5 + 1, 5),
                state(n as u32),
                StoredWrite::Commit(n * 5),
            ];
            data_dir.append(&writes).unwrap();
            fold(&mut expected, &writes);
        }
        assert_eq!(data_dir.journal_bytes() % journal::BLOCK_BYTES as u64, 0);
        let length = std::fs::metadata(directory.join(JOURNAL_FILE))
            .unwrap()
            .len();
        assert_eq!(length % journal::CHUNK_BYTES, 0);
        assert_eq!(reopened(&directory, data_dir), expected);
    }

    /// A witness (paper 6.1) keeps no checkpoint: its `LogStart`s trim the image, a
    /// compaction writes the image's base as one, and replay reads it back, base
    /// timestamp included; a skip past the log's end leaves an empty log after it.
    #[test]
    fn a_witness_image_is_trimmed_by_its_log_starts_compacted_and_read_back() {
        let directory = temp_dir("witness");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        let batches = [
            vec![append(1, 50), state(1), StoredWrite::Commit(45)],
            // Trimmed below the actives' commit: the entries above stay.
            vec![
                StoredWrite::LogStart {
                    base: 30,
                    timestamp: 30,
                },
                StoredWrite::Commit(48),
                StoredWrite::ActivesCommit(40),
            ],
        ];
        for writes in &batches {
            data_dir.append(writes).unwrap();
            fold(&mut expected, writes);
        }
        assert_eq!(
            (data_dir.image.log_base, data_dir.image.entries.len()),
            (30, 20),
            "the image forgets what the witness trimmed"
        );
        let image = reopened(&directory, data_dir);
        assert_eq!(image, expected);
        assert_eq!((image.log_base, image.log_base_timestamp), (30, 30));

        // A skip over committed ops it never held, past its log's end.
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let skip = [
            StoredWrite::LogTruncate { after: 60 },
            StoredWrite::LogStart {
                base: 60,
                timestamp: 59,
            },
            append(61, 5),
            StoredWrite::Commit(62),
        ];
        data_dir.append(&skip).unwrap();
        fold(&mut expected, &skip);
        assert_eq!((expected.log_base, expected.op()), (60, 65));
        // Compacted: the image is the whole journal, its base a log start.
        data_dir.rewrite_journal(None).unwrap();
        let image = reopened(&directory, data_dir);
        assert_eq!(image, expected);
        assert_eq!(
            (image.log_base, image.log_base_timestamp, image.commit),
            (60, 59, 62)
        );
        assert_eq!(image.actives_commit, Some(40), "compacted with the image");
        assert!(image.holds_data());

        // A damaged witness journal is rewritten to what was verified, its base kept.
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut damaged = expected.clone();
        damaged.entries.truncate(2);
        data_dir.set_damaged_image(&damaged, "test").unwrap();
        let image = reopened(&directory, data_dir);
        assert_eq!((image.log_base, image.op()), (60, 62));
        assert!(image.state.recovering && image.state.joined);
    }

    /// With witnesses an active's image keeps the entries above the actives' commit past
    /// its checkpoint, through compaction and replay.
    #[test]
    fn an_active_image_with_witnesses_keeps_the_entries_above_the_actives_commit() {
        let directory = temp_dir("actives-commit");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        let writes = [
            StoredWrite::ActivesCommit(0),
            append(1, 100),
            state(1),
            StoredWrite::Commit(90),
            StoredWrite::ActivesCommit(40),
        ];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        let checkpoint = checkpoint_file::tests::checkpoint(64);
        let writes = [StoredWrite::Checkpoint(checkpoint.clone()), append(101, 2)];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        data_dir.finish_checkpoint_files();
        data_dir.maintain().unwrap();
        assert_eq!(
            data_dir.image.log_base, 40,
            "kept above the actives' commit"
        );
        data_dir.rewrite_journal(None).unwrap();
        let image = reopened(&directory, data_dir);
        expected.trim_to_checkpoint();
        assert_eq!(image, expected);
        assert_eq!(image.checkpoint, Some(checkpoint));
        assert_eq!((image.log_base, image.op()), (40, 102));
        assert_eq!(image.actives_commit, Some(40));
    }

    #[test]
    fn a_checkpoint_replaces_the_older_checkpoint_file_and_restarts_from_it() {
        let directory = temp_dir("checkpoint");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        for n in 0..20u64 {
            let writes = [append(n * 5 + 1, 5), StoredWrite::Commit(n * 5)];
            data_dir.append(&writes).unwrap();
            fold(&mut expected, &writes);
        }
        let first = checkpoint_file::tests::checkpoint(60);
        let writes = [
            StoredWrite::Checkpoint(first.clone()),
            append(101, 3),
            state(2),
        ];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        data_dir.finish_checkpoint_files();
        data_dir.maintain().unwrap();
        assert_eq!(
            data_dir.image.log_base, 60,
            "the image is trimmed once the marker is in"
        );
        // A second checkpoint replaces the first's file once its batch is durable.
        let second = checkpoint_file::tests::checkpoint(90);
        let writes = [
            StoredWrite::Checkpoint(second.clone()),
            StoredWrite::Commit(95),
        ];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        data_dir.finish_checkpoint_files();
        assert!(checkpoint_file::path(&directory, 60).exists());
        data_dir.maintain().unwrap();
        assert!(checkpoint_file::path(&directory, 90).exists());
        assert!(!checkpoint_file::path(&directory, 60).exists());
        let more = [append(104, 2), StoredWrite::Commit(100)];
        data_dir.append(&more).unwrap();
        fold(&mut expected, &more);
        drop(data_dir);

        let (_, image) = DataDir::open(&directory, US).unwrap();
        expected.trim_to_checkpoint();
        assert_eq!(image, expected);
        assert_eq!(image.checkpoint, Some(second));
        assert_eq!((image.log_base, image.op()), (90, 105));
    }

    /// An active that becomes a witness (paper 6.1) drops its checkpoint: the image
    /// forgets it and keeps the log, the files go at the next upkeep (the one being
    /// written too), a compaction writes the image as a witness's, and a restart reads
    /// a witness's store back.
    #[test]
    fn a_dropped_checkpoint_leaves_a_witness_log_and_no_files() {
        let directory = temp_dir("dropped");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        let writes = [append(1, 100), StoredWrite::Commit(100)];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        let writes = [
            StoredWrite::Checkpoint(checkpoint_file::tests::checkpoint(60)),
            StoredWrite::Commit(100),
        ];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        data_dir.finish_checkpoint_files();
        data_dir.maintain().unwrap();
        assert_eq!(checkpoint_files(&directory), [60]);
        // A newer one is being written when the replica becomes a witness.
        let writes = [
            StoredWrite::Checkpoint(checkpoint_file::tests::checkpoint(90)),
            append(101, 2),
        ];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        let writes = [
            StoredWrite::CheckpointDropped,
            log_start_write(70),
            append(103, 1),
        ];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        assert!(
            !data_dir.checkpoint_pending(),
            "the file being written is abandoned"
        );
        assert_eq!(data_dir.image.checkpoint, None);
        data_dir.maintain().unwrap();
        assert_eq!(checkpoint_files(&directory), [] as [u64; 0]);
        assert!(!data_dir.append_finished_checkpoint().unwrap());
        drop(data_dir);

        let (mut data_dir, image) = DataDir::open(&directory, US).unwrap();
        assert_eq!(image.checkpoint, None);
        assert_eq!((image.log_base, image.op()), (70, 103));
        assert_eq!(image.entries, expected.entries);
        // Compacted, it reads back as a witness's store.
        data_dir.rewrite_journal(None).unwrap();
        drop(data_dir);
        let (_, compacted) = DataDir::open(&directory, US).unwrap();
        assert_eq!((compacted.log_base, compacted.op()), (70, 103));
        assert_eq!(compacted.checkpoint, None);
        assert_eq!(compacted.commit, 100);
    }

    /// A witness that became active keeps its witness log's committed entries aside
    /// (`StoredWrite::FormerWitnessLog`) while its log starts again from op 0: they read
    /// back, a compaction keeps them, and they go once a write says they are taken.
    #[test]
    fn a_former_witness_log_is_kept_through_compactions_until_taken() {
        use crate::protocol::FormerWitnessLog;
        let directory = temp_dir("former-witness");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        let writes = [log_start_write(40), append(41, 20), StoredWrite::Commit(60)];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        let StoredWrite::LogAppend { entries, .. } = append(41, 20) else {
            unreachable!()
        };
        let kept = FormerWitnessLog { base: 40, entries };
        let writes = [
            StoredWrite::FormerWitnessLog(Some(kept.clone())),
            StoredWrite::LogReset { base: 0 },
            append(1, 5),
        ];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        let image = reopened(&directory, data_dir);
        assert_eq!(image, expected);
        assert_eq!(image.former_witness_log.as_ref(), Some(&kept));
        assert_eq!((image.log_base, image.op()), (0, 5));

        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        data_dir.rewrite_journal(None).unwrap();
        let image = reopened(&directory, data_dir);
        assert_eq!(image, expected, "a compaction keeps them");

        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let writes = [append(6, 55), StoredWrite::FormerWitnessLog(None)];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        data_dir.rewrite_journal(None).unwrap();
        let image = reopened(&directory, data_dir);
        assert_eq!(image.former_witness_log, None);
        assert_eq!(image, expected);
    }

    fn log_start_write(base: u64) -> StoredWrite {
        StoredWrite::LogStart {
            base,
            timestamp: base,
        }
    }

    /// Appends batches of about 64 KiB (one entry each) from op `from` until `done`,
    /// running the upkeep after each as the storage thread does; returns the next op.
    fn fill(
        data_dir: &mut DataDir,
        expected: &mut Stored,
        mut from: u64,
        mut done: impl FnMut(&mut DataDir) -> bool,
    ) -> u64 {
        use crate::protocol::{Entry, Operation};
        while !done(data_dir) {
            let writes = [
                StoredWrite::LogAppend {
                    from,
                    entries: vec![Entry {
                        client: 1,
                        session: 1,
                        request: from as u32,
                        timestamp: from,
                        operation: Operation::Apply,
                        body: bytes::Bytes::from(vec![from as u8; 60 << 10]),
                    }],
                },
                StoredWrite::Commit(from),
            ];
            data_dir.append(&writes).unwrap();
            fold(expected, &writes);
            data_dir.maintain().unwrap();
            from += 1;
        }
        from
    }

    #[test]
    fn a_full_journal_is_compacted_into_the_spare_and_reads_back() {
        let directory = temp_dir("spare");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        // Half full: a spare twice the journal's size is being prepared.
        let next = fill(&mut data_dir, &mut expected, 1, |d| {
            d.journal_bytes() >= journal::CHUNK_BYTES / 2
        });
        assert_eq!(data_dir.file_bytes, journal::CHUNK_BYTES);
        assert!(
            !data_dir.spare.is_idle(),
            "a spare is prepared at half full"
        );
        data_dir.spare.wait();
        // The spare is ready, but the journal has room and no checkpoint came: no
        // compaction before 3/4 full.
        let next = fill(&mut data_dir, &mut expected, next, |d| {
            d.file_bytes != journal::CHUNK_BYTES
                || d.journal_bytes() >= journal::CHUNK_BYTES * 3 / 4 - (64 << 10)
        });
        assert_eq!(data_dir.file_bytes, journal::CHUNK_BYTES, "compacted early");
        // A checkpoint past half full: compacted at once, into an image that holds only
        // what follows the checkpoint (here, two entries of 60 KiB).
        let checkpoint = checkpoint_file::tests::checkpoint(next - 3);
        let writes = [StoredWrite::Checkpoint(checkpoint.clone())];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        data_dir.finish_checkpoint_files(); // Its marker follows the file.
                                            // The image names the checkpoint without holding its pages (its file does, and
                                            // the compaction below writes its marker; the reopen reads the pages back).
        let imaged = data_dir.image.checkpoint.as_ref().expect("the checkpoint");
        assert_eq!(
            (imaged.op, imaged.timestamp),
            (checkpoint.op, checkpoint.timestamp)
        );
        assert!(checkpoint.pages().count() > 0 && imaged.pages().count() == 0);
        data_dir.maintain().unwrap();
        // At least twice the journal, and six images of the one when it was prepared.
        assert!(data_dir.file_bytes >= 2 * journal::CHUNK_BYTES);
        assert!(
            data_dir.journal_bytes() <= 3 * (64 << 10),
            "{}",
            data_dir.journal_bytes()
        );
        assert!(
            data_dir.spare.is_idle(),
            "no new spare yet: the journal is small"
        );
        assert!(!directory.join(spare::SPARE_FILE).exists());
        // Without a checkpoint, the journal is compacted when it is nearly full (3/4),
        // into the previous journal's file, grown.
        let before = data_dir.file_bytes;
        let next = fill(&mut data_dir, &mut expected, next, |d| {
            d.spare.wait();
            d.file_bytes != before
        });
        let grown = data_dir.file_bytes;
        assert!(grown > before);
        // Its image holds every entry since the checkpoint: megabytes.
        assert!(data_dir.journal_bytes() > journal::CHUNK_BYTES);
        let more = [StoredWrite::Commit(next - 1), state(3)];
        data_dir.append(&more).unwrap();
        fold(&mut expected, &more);
        drop(data_dir);

        let length = std::fs::metadata(directory.join(JOURNAL_FILE))
            .unwrap()
            .len();
        assert_eq!(length, grown);
        let (data_dir, image) = DataDir::open(&directory, US).unwrap();
        expected.trim_to_checkpoint();
        assert_eq!(image, expected);
        assert_eq!(image.checkpoint, Some(checkpoint));
        drop(data_dir);
    }

    #[test]
    fn spares_double_the_journal_up_to_the_maximum_and_hold_six_images() {
        let chunk = journal::CHUNK_BYTES;
        let max = JOURNAL_BYTES_MAX;
        assert_eq!(spare_bytes(0, 0, max), chunk);
        assert_eq!(spare_bytes(chunk, 0, max), 2 * chunk);
        assert_eq!(spare_bytes(2 * chunk, 0, max), 4 * chunk);
        assert_eq!(spare_bytes(3 * chunk, chunk, max), 6 * chunk);
        assert_eq!(spare_bytes(3 * chunk, 2 * chunk, max), 12 * chunk);
        assert_eq!(spare_bytes(max - chunk, 0, max), max);
        assert_eq!(spare_bytes(4 * max, 0, max), max);
        // An image larger than a sixth of the maximum: the spare holds six.
        let image = max / 2 + 1;
        assert_eq!(
            spare_bytes(max, image, max),
            (6 * image).next_multiple_of(chunk)
        );
    }

    /// A journal whose image is most of it (a checkpoint interval of entries larger than
    /// the journal's maximum, no checkpoint yet) is not compacted into a spare it would
    /// mostly fill, which would free nothing and compact again at the next group: the
    /// spare is dropped, one six times the image is prepared, and compactions stay few.
    #[test]
    fn an_image_that_fills_most_of_the_spare_gets_a_larger_spare_not_a_compaction_per_group() {
        let directory = temp_dir("large-image");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        data_dir.journal_bytes_max = 2 * journal::CHUNK_BYTES;
        let mut expected = Stored::default();
        let (mut compactions, mut groups) = (0, 0);
        let mut sequence = data_dir.next_sequence;
        // No checkpoint ever: the image is the whole journal. 60 KiB entries up to 24 MiB.
        fill(&mut data_dir, &mut expected, 1, |d| {
            d.spare.wait();
            // A compaction's image batch takes a sequence number of its own (none has
            // been appended at the first call).
            compactions += (d.next_sequence - sequence).saturating_sub(1);
            sequence = d.next_sequence;
            groups += 1;
            d.journal_bytes() >= 24 << 20
        });
        assert!(groups > 300, "{groups}");
        assert!(
            (1..=8).contains(&compactions) && data_dir.spares_too_small == 0,
            "{compactions} compactions in {groups} groups, {} spares too small",
            data_dir.spares_too_small
        );
        assert!(data_dir.file_bytes > data_dir.journal_bytes_max);
        assert_eq!(reopened(&directory, data_dir), expected);
    }

    #[test]
    fn an_image_larger_than_the_spare_is_rewritten_the_slow_way() {
        let directory = temp_dir("small-spare");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        fill(&mut data_dir, &mut expected, 1, |d| {
            d.journal_bytes() >= 256 << 10
        });
        // A spare of one block cannot hold the image (about 256 KiB).
        let path = directory.join(spare::SPARE_FILE);
        let small = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        small.write_all_at(&[0; journal::BLOCK_BYTES], 0).unwrap();
        data_dir
            .compact_into(small, journal::BLOCK_BYTES as u64)
            .unwrap();
        assert!(!path.exists(), "the small spare is dropped");
        assert_eq!(data_dir.file_bytes % journal::CHUNK_BYTES, 0);
        assert_eq!(reopened(&directory, data_dir), expected);
    }

    #[test]
    fn a_spare_left_by_a_crash_is_removed_and_never_read() {
        let directory = temp_dir("stale-spare");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        let writes = [append(1, 4), StoredWrite::Commit(2)];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        drop(data_dir);
        // A spare holding a batch (it never does, but a crash mid-compaction before the
        // rename leaves one holding the image): the journal is what counts.
        let mut stray = Vec::new();
        journal::encode_batch(1, journal::tests::ID, &mut stray, |out| {
            codec::encode(&append(1, 9), 0, out);
        });
        std::fs::write(directory.join(spare::SPARE_FILE), &stray).unwrap();
        let (_, image) = DataDir::open(&directory, US).unwrap();
        assert_eq!(image, expected);
        assert!(!directory.join(spare::SPARE_FILE).exists());
    }

    #[test]
    fn a_torn_tail_is_cut_and_later_batches_follow_it() {
        let directory = temp_dir("torn");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        let writes = [append(1, 4), StoredWrite::Commit(2)];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        let file_id = data_dir.file_id;
        drop(data_dir);
        // The next batch, cut short by a crash after its first sector: it is zeroed.
        let path = directory.join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        assert_eq!(whole as u64 % journal::CHUNK_BYTES, 0);
        let second = journal::BLOCK_BYTES; // Where the next batch goes.
        let mut torn = Vec::new();
        journal::encode_batch(2, file_id, &mut torn, |out| {
            codec::encode(&append(5, 100), 0, out)
        });
        assert!(torn.len() > journal::BLOCK_BYTES);
        bytes[second..second + 512].copy_from_slice(&torn[..512]);
        std::fs::write(&path, &bytes).unwrap();
        let (mut data_dir, image) = DataDir::open(&directory, US).unwrap();
        assert_eq!(image, expected);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), whole);
        assert!(
            bytes[second..].iter().all(|&byte| byte == 0),
            "the torn batch is zeroed"
        );
        let writes = [append(5, 1)];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        drop(data_dir);
        // A write cut short before its header landed (bytes that are no header): the
        // journal ends before them, and the next batches overwrite them.
        let mut bytes = std::fs::read(&path).unwrap();
        let third = 2 * journal::BLOCK_BYTES;
        bytes[third + 700..third + 9000].fill(0x5a);
        std::fs::write(&path, &bytes).unwrap();
        let (mut data_dir, image) = DataDir::open(&directory, US).unwrap();
        assert_eq!(image, expected);
        assert_eq!(data_dir.journal_bytes(), third as u64);
        let writes = [append(6, 30), StoredWrite::Commit(5)];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        drop(data_dir);
        assert_eq!(DataDir::open(&directory, US).unwrap().1, expected);
    }

    /// The inode number of `path`.
    fn inode(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
    }

    #[test]
    fn the_file_a_compaction_leaves_is_recycled_as_the_next_spare() {
        let directory = temp_dir("recycle");
        let journal_path = directory.join(JOURNAL_FILE);
        let recycle_path = directory.join(RECYCLE_FILE);
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        // Each spare waited for, so that compactions come exactly at 3/4 full, just after
        // a checkpoint (so the image the compaction writes is small).
        let mut next = 1;
        let mut compact = |data_dir: &mut DataDir, expected: &mut Stored| {
            let before = inode(&journal_path);
            let nearly_full = data_dir.file_bytes.max(journal::CHUNK_BYTES) * 3 / 4 - (256 << 10);
            next = fill(data_dir, expected, next, |d| {
                d.spare.wait();
                d.journal_bytes() >= nearly_full
            });
            let checkpoint = checkpoint_file::tests::checkpoint(next - 3);
            let writes = [StoredWrite::Checkpoint(checkpoint)];
            data_dir.append(&writes).unwrap();
            // Its file is written in the background: wait for its marker, or on a loaded
            // machine the compaction may come first and copy the whole log.
            data_dir.finish_checkpoint_files();
            fold(expected, &writes);
            next = fill(data_dir, expected, next, |d| {
                d.spare.wait();
                inode(&journal_path) != before
            });
            before
        };
        let first = compact(&mut data_dir, &mut expected);
        let first_bytes = data_dir.file_bytes;
        assert!(first_bytes >= 2 * journal::CHUNK_BYTES);
        assert_eq!(inode(&recycle_path), first, "the first journal is kept");
        // The second compaction goes into the first journal's file, grown: its first
        // 4 MiB still hold the first use's batches.
        let second = compact(&mut data_dir, &mut expected);
        assert_eq!(
            inode(&journal_path),
            first,
            "the first journal's file is reused"
        );
        assert_eq!(inode(&recycle_path), second);
        assert!(data_dir.file_bytes > first_bytes);
        let bytes = std::fs::read(&journal_path).unwrap();
        let end = data_dir.journal_bytes() as usize;
        assert!(end < journal::CHUNK_BYTES as usize);
        assert!(
            bytes[end..journal::CHUNK_BYTES as usize]
                .windows(8)
                .any(|window| window == b"VSRBATCH"),
            "an earlier use's batches follow the journal's end"
        );
        // A few batches more, then a restart: the earlier use's batches count for nothing.
        let more = [append(next, 3), StoredWrite::Commit(next - 1), state(4)];
        data_dir.append(&more).unwrap();
        fold(&mut expected, &more);
        let image = reopened(&directory, data_dir);
        expected.trim_to_checkpoint();
        assert_eq!(image, expected);
        assert!(!recycle_path.exists(), "forgotten on open");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let more = [append(next + 3, 2), StoredWrite::Commit(next)];
        data_dir.append(&more).unwrap();
        fold(&mut expected, &more);
        expected.trim_to_checkpoint();
        assert_eq!(reopened(&directory, data_dir), expected);
    }

    #[test]
    fn a_file_to_recycle_that_is_the_journal_itself_is_never_used() {
        let directory = temp_dir("recycle-self");
        let journal_path = directory.join(JOURNAL_FILE);
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        let writes = [append(1, 4), StoredWrite::Commit(2)];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        // As a crash between the compaction's link and its rename leaves it.
        std::fs::hard_link(&journal_path, directory.join(RECYCLE_FILE)).unwrap();
        data_dir
            .spare
            .prepare(&directory, journal::CHUNK_BYTES, inode(&journal_path));
        data_dir.spare.wait();
        let (spare, bytes) = data_dir.spare.take_ready().expect("a spare of zeros");
        assert_eq!(bytes, journal::CHUNK_BYTES);
        let spare_inode = std::os::unix::fs::MetadataExt::ino(&spare.metadata().unwrap());
        assert_ne!(spare_inode, inode(&journal_path));
        assert!(!directory.join(RECYCLE_FILE).exists());
        drop(spare);
        assert_eq!(reopened(&directory, data_dir), expected);
        // And on open, the link is forgotten.
        std::fs::hard_link(&journal_path, directory.join(RECYCLE_FILE)).unwrap();
        let (data_dir, image) = DataDir::open(&directory, US).unwrap();
        assert_eq!(image, expected);
        assert!(!directory.join(RECYCLE_FILE).exists());
        assert_eq!(reopened(&directory, data_dir), expected);
    }

    #[test]
    fn damage_is_kept_recovering_across_restarts() {
        let directory = temp_dir("damage");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        for n in 0..3u64 {
            data_dir
                .append(&[append(n * 4 + 1, 4), state(1), StoredWrite::Commit(n * 4)])
                .unwrap();
        }
        drop(data_dir);
        let path = directory.join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[journal::BLOCK_BYTES + journal::HEADER_BYTES + 20] ^= 0x40; // The second batch.
        std::fs::write(&path, &bytes).unwrap();

        let (_, image) = DataDir::open(&directory, US).unwrap();
        let damage = image.damage.clone().expect("damage noticed");
        assert!(damage.contains(&path.display().to_string()), "{damage}");
        assert!(damage.contains("offset 4096"), "{damage}");
        assert_eq!(image.op(), 4, "only the first batch is kept");
        assert!(image.holds_data());
        assert!(directory.join(DAMAGED_JOURNAL_FILE).exists());
        // Restarted again before the core wrote anything: still recovering, still holding
        // data, never empty and never intact.
        let (_, image) = DataDir::open(&directory, US).unwrap();
        assert!(image.state.recovering && image.state.joined, "{image:?}");
        assert_eq!(image.op(), 4);
    }

    #[test]
    fn a_truncated_journal_is_damage() {
        let directory = temp_dir("truncated");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        for n in 0..3u64 {
            data_dir
                .append(&[append(n * 4 + 1, 4), StoredWrite::Commit(n * 4)])
                .unwrap();
        }
        drop(data_dir);
        let path = directory.join(JOURNAL_FILE);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(2 * journal::BLOCK_BYTES as u64 + 10).unwrap();
        drop(file);
        let (_, image) = DataDir::open(&directory, US).unwrap();
        let damage = image.damage.clone().expect("damage");
        assert!(damage.contains("cut short"), "{damage}");
        assert!(damage.contains(&path.display().to_string()), "{damage}");
        assert_eq!(image.op(), 8, "what was verified is kept");
    }

    #[test]
    fn a_missing_journal_is_damage_once_the_directory_was_used() {
        let directory = temp_dir("no-journal");
        drop(DataDir::open(&directory, US).unwrap());
        std::fs::remove_file(directory.join(JOURNAL_FILE)).unwrap();
        let (_, image) = DataDir::open(&directory, US).unwrap();
        assert!(image.damage.unwrap().contains("missing"));
    }

    #[test]
    fn a_missing_checkpoint_file_is_damage() {
        let directory = temp_dir("lost-checkpoint");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        data_dir
            .append(&[append(1, 10), StoredWrite::Commit(10)])
            .unwrap();
        let checkpoint = checkpoint_file::tests::checkpoint(8);
        data_dir
            .append(&[StoredWrite::Checkpoint(checkpoint), state(0)])
            .unwrap();
        data_dir.finish_checkpoint_files();
        drop(data_dir);
        std::fs::remove_file(checkpoint_file::path(&directory, 8)).unwrap();
        let (_, image) = DataDir::open(&directory, US).unwrap();
        let damage = image.damage.expect("damage");
        assert!(
            damage.contains("checkpoint-00000000000000000008"),
            "{damage}"
        );
        assert_eq!(image.checkpoint, None);
    }

    /// A checkpoint the journal covers is written in the background: the batch naming
    /// it goes on without its file, the image keeps the entries below it until the
    /// marker follows, and a crash in between restarts from the older checkpoint and the
    /// journal, losing nothing (its file is removed as stale).
    #[test]
    fn a_covered_checkpoint_is_written_in_the_background_and_its_marker_follows() {
        let directory = temp_dir("background");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        let mut expected = Stored::default();
        let writes = [append(1, 50), StoredWrite::Commit(50)];
        data_dir.append(&writes).unwrap();
        fold(&mut expected, &writes);
        let first = checkpoint_file::tests::checkpoint(40);
        let writes = [
            StoredWrite::Checkpoint(first.clone()),
            append(51, 5),
            StoredWrite::Commit(55),
        ];
        data_dir.append(&writes).unwrap();
        assert!(data_dir.checkpoint_pending());
        assert_eq!(
            data_dir.marker, None,
            "no marker before the file is durable"
        );
        assert_eq!(data_dir.image.log_base, 0, "the entries below it are kept");
        // A crash now: the journal has every entry, and no marker.
        let (mut data_dir, image) = {
            drop(data_dir);
            DataDir::open(&directory, US).unwrap()
        };
        assert_eq!(image.checkpoint, None);
        assert_eq!((image.log_base, image.op(), image.commit), (0, 55, 55));
        assert!(
            !checkpoint_file::path(&directory, 40).exists(),
            "a file its journal never named is removed as stale"
        );
        // Again, and this time the marker follows in the next batch.
        fold(&mut expected, &writes[1..]);
        data_dir
            .append(&[StoredWrite::Checkpoint(first.clone())])
            .unwrap();
        while data_dir.checkpoint_pending() {
            std::thread::sleep(std::time::Duration::from_millis(1));
            let next = [StoredWrite::Commit(55)];
            data_dir.append(&next).unwrap();
        }
        assert_eq!(data_dir.marker.map(|marker| marker.op), Some(40));
        assert_eq!(data_dir.image.log_base, 40);
        expected
            .apply(StoredWrite::Checkpoint(first.clone()))
            .unwrap();
        expected.trim_to_checkpoint();
        let image = reopened(&directory, data_dir);
        assert_eq!(image, expected);
        assert_eq!(image.checkpoint, Some(first));
    }

    /// A checkpoint installed from another replica (the log reset to it) is written
    /// before its batch, whatever the writer has in hand: nothing below it is in the
    /// journal, so a restart needs its file.
    #[test]
    fn an_installed_checkpoint_is_written_before_its_batch() {
        let directory = temp_dir("installed");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        data_dir
            .append(&[append(1, 50), StoredWrite::Commit(50)])
            .unwrap();
        let covered = checkpoint_file::tests::checkpoint(40);
        data_dir
            .append(&[StoredWrite::Checkpoint(covered)])
            .unwrap();
        assert!(data_dir.checkpoint_pending());
        let installed = checkpoint_file::tests::checkpoint(500);
        let writes = [
            StoredWrite::Checkpoint(installed.clone()),
            StoredWrite::LogReset { base: 500 },
            append(501, 2),
            StoredWrite::Commit(500),
        ];
        data_dir.append(&writes).unwrap();
        assert!(!data_dir.checkpoint_pending(), "the covered one is dropped");
        assert_eq!(data_dir.marker.map(|marker| marker.op), Some(500));
        data_dir.maintain().unwrap();
        assert!(!checkpoint_file::path(&directory, 40).exists());
        let image = reopened(&directory, data_dir);
        assert_eq!(image.checkpoint, Some(installed));
        assert_eq!((image.log_base, image.op()), (500, 502));
    }

    /// Checkpoints come faster than their files: the one waiting is replaced by the
    /// newer one, at most two are in hand, and the newest ends up named and read back.
    #[test]
    fn checkpoints_faster_than_their_files_write_only_the_newest_waiting() {
        let directory = temp_dir("faster");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        data_dir
            .append(&[append(1, 100), StoredWrite::Commit(100)])
            .unwrap();
        for op in [10, 20, 30, 40, 50] {
            let checkpoint = checkpoint_file::tests::checkpoint(op);
            data_dir
                .append(&[StoredWrite::Checkpoint(checkpoint)])
                .unwrap();
            assert!(data_dir.checkpoints.pending_ops().count() <= 2);
            assert_eq!(data_dir.checkpoints.newest_pending(), Some(op));
        }
        data_dir.finish_checkpoint_files();
        assert_eq!(data_dir.marker.map(|marker| marker.op), Some(50));
        data_dir.maintain().unwrap();
        let files: Vec<_> = std::fs::read_dir(&*directory)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("checkpoint-"))
            .collect();
        assert_eq!(files, vec!["checkpoint-00000000000000000050".to_string()]);
        let image = reopened(&directory, data_dir);
        assert_eq!(image.checkpoint_op(), 50);
        assert_eq!((image.log_base, image.op()), (50, 100));
    }

    /// The files of checkpoints in the writer's hands (and their temporary files) are
    /// never removed as stale by the upkeep.
    #[test]
    fn the_upkeep_never_removes_a_file_being_written() {
        let directory = temp_dir("upkeep");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        data_dir
            .append(&[append(1, 100), StoredWrite::Commit(100)])
            .unwrap();
        data_dir
            .append(
                &[StoredWrite::Checkpoint(checkpoint_file::tests::checkpoint(
                    60,
                ))],
            )
            .unwrap();
        let temporary = checkpoint_file::path(&directory, 60).with_extension("tmp");
        std::fs::write(directory.join("checkpoint-00000000000000000007.tmp"), b"x").unwrap();
        data_dir.stale_checkpoints = true;
        // Once the writer has created its file (temporary or renamed, not yet polled),
        // the file survives the upkeep.
        let written = checkpoint_file::path(&directory, 60);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !temporary.exists() && !written.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never started"
            );
            std::thread::yield_now();
        }
        data_dir.maintain().unwrap();
        assert!(!directory
            .join("checkpoint-00000000000000000007.tmp")
            .exists());
        data_dir.finish_checkpoint_files();
        assert!(checkpoint_file::path(&directory, 60).exists());
        assert!(!temporary.exists());
        assert_eq!(reopened(&directory, data_dir).checkpoint_op(), 60);
    }

    fn checkpoint_files(directory: &Path) -> Vec<u64> {
        let mut ops: Vec<u64> = std::fs::read_dir(directory)
            .unwrap()
            .flatten()
            .filter_map(|entry| checkpoint_file::op_of(&entry.file_name().to_string_lossy()))
            .collect();
        ops.sort_unstable();
        ops
    }

    /// Checkpoints that change a few pages write files of those pages against the
    /// earlier ones, and a restart reads the chain back. A crash between a file and its
    /// marker restarts from the chain the durable marker names; the files that chain
    /// needs are removed only once the marker of a file that no longer needs them is
    /// durable.
    #[test]
    fn a_chain_of_checkpoint_files_restarts_and_leaves_only_after_a_newer_marker() {
        use checkpoint_file::tests::paged;
        let directory = temp_dir("chain");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        data_dir
            .append(&[append(1, 100), StoredWrite::Commit(100)])
            .unwrap();
        let first = paged(10, 100, |_| 0);
        let second = paged(20, 100, |i| u8::from(i < 5));
        for checkpoint in [&first, &second] {
            data_dir
                .append(&[StoredWrite::Checkpoint(checkpoint.clone())])
                .unwrap();
            data_dir.finish_checkpoint_files();
            data_dir.maintain().unwrap();
        }
        assert_eq!(data_dir.marker_files, vec![10, 20]);
        assert_eq!(checkpoint_files(&directory), vec![10, 20], "the base stays");
        let (mut data_dir, image) = {
            drop(data_dir);
            DataDir::open(&directory, US).unwrap()
        };
        assert_eq!(image.checkpoint, Some(second.clone()));
        assert_eq!(data_dir.marker_files, vec![10, 20]);

        // Every page changes: a file of its own. A crash after it is written and
        // before its marker is durable restarts from the older chain, whole.
        let third = paged(30, 100, |_| 3);
        data_dir
            .append(&[StoredWrite::Checkpoint(third.clone())])
            .unwrap();
        let (_, marker, files) = data_dir.checkpoints.wait().unwrap().unwrap();
        assert_eq!(files, vec![30], "no page of the older files is live");
        assert!(checkpoint_file::path(&directory, 30).exists());
        data_dir.maintain().unwrap();
        assert_eq!(checkpoint_files(&directory), vec![10, 20, 30]);
        let (mut data_dir, image) = {
            drop(data_dir);
            DataDir::open(&directory, US).unwrap()
        };
        assert_eq!(image.checkpoint, Some(second));
        assert_eq!(checkpoint_files(&directory), vec![10, 20], "30 was stale");

        // Written again, its marker durable: only then do the older files go.
        data_dir
            .append(&[StoredWrite::Checkpoint(third.clone())])
            .unwrap();
        let written = data_dir.checkpoints.wait().unwrap().unwrap();
        assert_eq!(written.1, marker, "the same file, written again");
        data_dir.maintain().unwrap();
        assert_eq!(checkpoint_files(&directory), vec![10, 20, 30]);
        assert!(data_dir.append_marker(written).unwrap());
        assert_eq!(checkpoint_files(&directory), vec![10, 20, 30]);
        data_dir.maintain().unwrap();
        assert_eq!(checkpoint_files(&directory), vec![30]);
        let image = reopened(&directory, data_dir);
        assert_eq!(image.checkpoint, Some(third));
    }

    /// A damaged base (a middle link of the chain) is damage naming it, exactly as a
    /// damaged checkpoint file: the replica recovers through the protocol.
    #[test]
    fn a_damaged_base_is_damage_naming_the_file() {
        use checkpoint_file::tests::paged;
        let directory = temp_dir("chain-damage");
        let (mut data_dir, _) = DataDir::open(&directory, US).unwrap();
        data_dir
            .append(&[append(1, 100), StoredWrite::Commit(100)])
            .unwrap();
        for (op, changed) in [(10, 100), (20, 5), (30, 10)] {
            let checkpoint = paged(op, 100, |i| if i < changed { op as u8 } else { 10 });
            data_dir
                .append(&[StoredWrite::Checkpoint(checkpoint)])
                .unwrap();
            data_dir.finish_checkpoint_files();
            data_dir.maintain().unwrap();
        }
        assert_eq!(data_dir.marker_files, vec![10, 30]);
        drop(data_dir);
        let base = checkpoint_file::path(&directory, 10);
        let mut bytes = std::fs::read(&base).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&base, &bytes).unwrap();
        let (data_dir, image) = DataDir::open(&directory, US).unwrap();
        let damage = image.damage.expect("damage");
        assert!(damage.contains(&base.display().to_string()), "{damage}");
        assert_eq!(image.checkpoint, None);
        let image = reopened(&directory, data_dir);
        assert!(
            image.state.recovering && image.state.joined,
            "recovering, never intact or empty, after another restart"
        );
    }

    #[test]
    fn a_second_open_of_one_directory_is_refused() {
        let directory = temp_dir("twice");
        let (_first, _) = DataDir::open(&directory, US).unwrap();
        let error = DataDir::open(&directory, US).unwrap_err().to_string();
        assert!(error.contains("in use by another process"), "{error}");
    }
}
