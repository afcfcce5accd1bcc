//! A replica's data directory on disk (`vsr replica --durability disk --data-dir DIR`):
//! file I/O and formats, no protocol logic (the only threads are `DataDir`'s own
//! background writers: the spare journal and checkpoint files). The runtime's storage
//! thread drives it; the core only ever sees the [`Stored`](crate::protocol::Stored)
//! image it reads back and the completions of the writes it issued.
//!
//! What the directory holds (each file has one job):
//! - `lock`: held with `flock` for as long as a process uses the directory, so a second
//!   process on the same directory refuses to start ([`lock`]);
//! - `meta`: the format version and whose directory it is (cluster id, replica index,
//!   replica count), checked on every start ([`meta`]);
//! - `journal`: the write-ahead journal, an append-only file of checksummed batches, one
//!   batch per group commit ([`journal`], with the record encoding in [`codec`]);
//! - `checkpoint-<op>`: a checkpoint's contents, written atomically before the batch that
//!   names it (by a thread of its own when the journal covers it, so that no group waits
//!   for it: `checkpoint_writer`); the journal holds only a marker. A file holds only the
//!   pages the earlier files it names (its bases) lack, and a table of every page
//!   ([`checkpoint_file`]);
//! - `journal.spare`: the next journal file, prepared and synced in the background,
//!   which the journal is compacted into when it is nearly full ([`spare`]);
//! - `journal.recycle`: the journal file the last compaction left, which becomes the
//!   next spare without a byte written (its blocks are; replay tells its old batches
//!   from the new ones by the file id every batch carries, see [`journal`]);
//! - `fetch`: the verified pages of an unfinished checkpoint fetch, a cache outside the
//!   journal's ordering (never synced; a torn tail or a page that fails its digest is
//!   dropped on reading), so that a fetch cut short by a crash resumes ([`fetch_file`]).
//!
//! [`DataDir`] puts them together: open (lock, check, read back, repair a torn tail; the
//! `fetch` file's pages come back in `Stored::fetched`),
//! append a batch with one `fdatasync`, and compact the journal to the latest
//! checkpoint when it fills up, so that it stays bounded on disk.

pub mod checkpoint_file;
mod checkpoint_writer;
pub mod codec;
pub mod counters;
mod data_dir;
mod error;
pub mod fetch_file;
mod files;
pub mod journal;
pub mod lock;
pub mod meta;
mod spare;

pub use data_dir::DataDir;
pub use error::StorageError;
pub use meta::{Identity, FORMAT_VERSION};
