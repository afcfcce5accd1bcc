//! A checkpoint's contents in files of their own, `checkpoint-<op>` (paper 5.1: the
//! checkpoint replaces the log below it). Checkpoints do not go into the journal: they
//! are large and rare, and a compaction rewrites the journal's image, so a checkpoint in
//! it would be copied every time. A file is written atomically (`checkpoint-<op>.tmp`,
//! fsync, rename, fsync the directory) *before* the journal batch whose marker names it,
//! so a durable marker always finds its file.
//!
//! # Incremental files
//!
//! Consecutive checkpoints share the pages of the state that did not change (same bytes,
//! same digest), so a file holds only the pages its *chain* lacks: the earlier files it
//! names as its bases, each by op and payload checksum. Its page table lists every page
//! of the checkpoint (digest, length, which file holds the bytes and where), so reading
//! it back reads the file and its bases, and nothing else: a base's own bases play no
//! part (the table is flat, never a chain of chains).
//!
//! **The chain is bounded.** A file takes an earlier file as a base only if at least
//! half of that file's bytes are pages of the new checkpoint; the live pages of a base
//! that is mostly superseded are written into the new file instead (they are in memory:
//! the checkpoint holds every page). The bases' live pages are disjoint, so the bases
//! hold at most twice the state's bytes, and a restart reads at most that plus the new
//! file; at most [`BASES_MAX`] bases. A checkpoint that changed every page writes a file
//! of the whole state and has no base.
//!
//! Layout: a 64-byte header (magic `VSRCKPT2`, op `u64`, timestamp `u64`, payload bytes
//! `u64`, payload crc32c `u32`, zeros, header crc32c `u32` at 60), then the payload:
//! - the bases: a `u32` count, then per base its op `u64` and payload crc32c `u32`;
//! - the table of the service's pages, then the client table's: each a `u32` page count,
//!   then per page its SHA-256 digest, length `u32`, source `u32` (0: this file, `i`: the
//!   `i`-th base) and the offset `u64` of its bytes in the source's payload;
//! - the bytes of the pages this file holds.
//!
//! Reading checks both checksums of every file (a torn or corrupt file fails them, and
//! the error names it), that each base is the file the table was written against (its
//! op and checksum), bounds every count, length and offset by the bytes present, and
//! verifies every page against its digest.

use super::codec::{CheckpointMarker, Reader};
use super::counters;
use super::files;
use super::StorageError;
use crate::protocol::Checkpoint;
use crate::service::snapshot::{Digest, Page, Snapshot, DIGEST_BYTES};
use bytes::{BufMut, Bytes};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"VSRCKPT2";
const HEADER_BYTES: usize = 64;
const CHECKSUM_AT: usize = 60;
const PREFIX: &str = "checkpoint-";
/// A base's row: op and payload checksum.
const BASE_ROW_BYTES: usize = 8 + 4;
/// A page's row: digest, length, source, offset.
const PAGE_ROW_BYTES: usize = DIGEST_BYTES + 4 + 4 + 8;
/// The most bases a file names (a restart opens at most this many files more).
pub const BASES_MAX: usize = 16;

/// The file holding the checkpoint at `op`. Zero-padded so names sort by op.
pub fn path(directory: &Path, op: u64) -> PathBuf {
    directory.join(format!("{PREFIX}{op:020}"))
}

/// The op of a file named like a checkpoint (temporary files excluded).
pub fn op_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The files the newest checkpoint file was assembled from (itself and its bases), and
/// where each of its pages lies: what the next file is written against. Empty before
/// the first file (or after damage): the next file then holds every page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// The files, by op.
    files: BTreeMap<u64, FileSummary>,
    /// Where each page of the newest checkpoint lies, by digest.
    pages: HashMap<Digest, Location>,
}

/// What a file's readers check it against, and what it costs to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileSummary {
    /// Its payload's crc32c.
    checksum: u32,
    /// Its length.
    bytes: u64,
}

/// Where a page's bytes lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    /// The op of the file holding them.
    file: u64,
    /// Their offset in that file's payload.
    offset: u64,
    length: u32,
}

impl Chain {
    /// The ops of the chain's files: none of them may be removed while the chain may
    /// still be read or written against.
    pub fn files(&self) -> impl Iterator<Item = u64> + '_ {
        self.files.keys().copied()
    }

    /// The chain's bytes on disk.
    pub fn file_bytes(&self) -> u64 {
        self.files.values().map(|file| file.bytes).sum()
    }
}

/// A page's row in a file's table.
#[derive(Clone, Copy, Debug)]
struct Row {
    digest: Digest,
    length: u32,
    /// 0: the file itself; `i`: its `i`-th base.
    source: u32,
    offset: u64,
}

/// What the file of a checkpoint holds, decided against the chain before a byte is
/// written.
struct Plan<'a> {
    bases: Vec<(u64, FileSummary)>,
    /// The service's rows, then the client table's.
    rows: [Vec<Row>; 2],
    /// The pages whose bytes this file holds, in the order they follow the table.
    held: Vec<&'a Page>,
    /// The payload's bytes: the table's, then the held pages'.
    payload_bytes: u64,
}

impl<'a> Plan<'a> {
    /// Chooses the bases (earlier files at least half made of the checkpoint's pages,
    /// those with the most of them first) and lays out the rest.
    fn new(checkpoint: &'a Checkpoint, chain: &Chain) -> Plan<'a> {
        let snapshots = [&checkpoint.service, &checkpoint.clients];
        let bases = choose_bases(snapshots.iter().flat_map(|s| s.pages()), chain);
        let source_of: HashMap<u64, u32> = (bases.iter().enumerate())
            .map(|(index, (op, _))| (*op, index as u32 + 1))
            .collect();
        let pages: usize = snapshots.iter().map(|s| s.pages().len()).sum();
        let table_bytes = 4 + BASE_ROW_BYTES * bases.len() + 2 * 4 + PAGE_ROW_BYTES * pages;
        let mut offset = table_bytes as u64;
        let mut held = Vec::new();
        let mut here: HashMap<Digest, u64> = HashMap::new();
        let rows = snapshots.map(|snapshot| {
            (snapshot.pages().iter())
                .map(|page| {
                    let digest = page.digest();
                    let length = u32::try_from(page.len()).expect("a page fits a message");
                    let in_base = chain.pages.get(&digest).and_then(|location| {
                        let source = *source_of.get(&location.file)?;
                        Some((source, location.offset))
                    });
                    let (source, at) = in_base.unwrap_or_else(|| {
                        let at = *here.entry(digest).or_insert_with(|| {
                            held.push(page);
                            offset += page.len() as u64;
                            offset - page.len() as u64
                        });
                        (0, at)
                    });
                    Row {
                        digest,
                        length,
                        source,
                        offset: at,
                    }
                })
                .collect()
        });
        Plan {
            bases,
            rows,
            held,
            payload_bytes: offset,
        }
    }

    /// The table: bases, then each snapshot's rows.
    fn table(&self) -> Vec<u8> {
        let rows = self.rows.iter().map(Vec::len).sum::<usize>();
        let mut table = Vec::with_capacity(
            4 + BASE_ROW_BYTES * self.bases.len() + 2 * 4 + PAGE_ROW_BYTES * rows,
        );
        table.put_u32_le(self.bases.len() as u32);
        for (op, summary) in &self.bases {
            table.put_u64_le(*op);
            table.put_u32_le(summary.checksum);
        }
        for rows in &self.rows {
            table.put_u32_le(u32::try_from(rows.len()).expect("pages fit a message"));
            for row in rows {
                table.put_slice(&row.digest.0);
                table.put_u32_le(row.length);
                table.put_u32_le(row.source);
                table.put_u64_le(row.offset);
            }
        }
        table
    }

    /// The chain after the file at `op` (`summary`) was written: its bases and itself.
    fn chain_after(&self, op: u64, summary: FileSummary) -> Chain {
        let mut files: BTreeMap<u64, FileSummary> = self.bases.iter().copied().collect();
        files.insert(op, summary);
        let base_ops: Vec<u64> = self.bases.iter().map(|(op, _)| *op).collect();
        chain_of(op, &base_ops, &self.rows, files)
    }

    fn shared_pages(&self) -> u64 {
        (self.rows.iter().flatten())
            .filter(|row| row.source != 0)
            .count() as u64
    }
}

/// The chain's files worth keeping as bases of a file for `pages`: at least half of each
/// is pages of it (so the bases hold at most twice the state), the [`BASES_MAX`] with the
/// most bytes of it.
fn choose_bases<'a>(
    pages: impl Iterator<Item = &'a Page>,
    chain: &Chain,
) -> Vec<(u64, FileSummary)> {
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    let mut counted = std::collections::HashSet::new();
    for page in pages {
        if let Some(location) = chain.pages.get(&page.digest()) {
            if counted.insert(page.digest()) {
                *live.entry(location.file).or_default() += u64::from(location.length);
            }
        }
    }
    let mut bases: Vec<(u64, u64)> = (live.into_iter())
        .filter(|(file, live)| live * 2 >= chain.files[file].bytes)
        .collect();
    bases.sort_by_key(|(file, live)| (std::cmp::Reverse(*live), *file));
    bases.truncate(BASES_MAX);
    bases.sort_unstable();
    (bases.into_iter())
        .map(|(file, _)| (file, chain.files[&file]))
        .collect()
}

/// Bytes written per `write` and synced before the next piece: a checkpoint file written
/// whole and synced at the end would make the journal's concurrent `fdatasync`s wait
/// behind the device's flush of all of it (the spare's zeros did: `spare.rs`); synced a
/// piece at a time, each flush the journal waits behind is small.
const PIECE_BYTES: usize = 4 << 20;

/// Writes `checkpoint`'s file against `chain` (holding only the pages the chain's files
/// do not) atomically and durably (`checkpoint-<op>.tmp`, synced, renamed, the directory
/// synced); returns the marker that names it, and makes `chain` the new file's. Streams
/// the pages: the file is never assembled in memory (a checkpoint may be as large as the
/// state).
pub fn write(
    directory: &Path,
    checkpoint: &Checkpoint,
    chain: &mut Chain,
) -> Result<CheckpointMarker, StorageError> {
    // A file is written against older files only: a chain holding a file of this op or
    // a newer one (a file written for a checkpoint that was then abandoned, say) would
    // have the new file replace one of its own bases. It gets every page instead.
    if chain.files().any(|op| op >= checkpoint.op) {
        *chain = Chain::default();
    }
    let plan = Plan::new(checkpoint, chain);
    let table = plan.table();
    let held_bytes: u64 = plan.held.iter().map(|page| page.len() as u64).sum();
    assert_eq!(
        table.len() as u64 + held_bytes,
        plan.payload_bytes,
        "the held pages' offsets were laid out after a table of this size"
    );
    // The payload's checksum first (the header names it and comes first), then the
    // file: the pages are read twice, never copied whole.
    let mut checksum = crc32c::crc32c(&table);
    for page in &plan.held {
        checksum = crc32c::crc32c_append(checksum, page.bytes());
    }
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.put_slice(MAGIC);
    header.put_u64_le(checkpoint.op);
    header.put_u64_le(checkpoint.timestamp);
    header.put_u64_le(plan.payload_bytes);
    header.put_u32_le(checksum);
    header.resize(CHECKSUM_AT, 0);
    let header_checksum = crc32c::crc32c(&header[..CHECKSUM_AT]);
    header.put_u32_le(header_checksum);
    let target = path(directory, checkpoint.op);
    let temporary = target.with_extension("tmp");
    let mut file = files::PieceWriter::create(&temporary, PIECE_BYTES)?;
    file.append(&header)?;
    file.append(&table)?;
    for page in &plan.held {
        file.append(page.bytes())?;
    }
    file.finish_as(directory, &target)?;
    let bytes = HEADER_BYTES as u64 + plan.payload_bytes;
    count_written(&plan, bytes);
    *chain = plan.chain_after(checkpoint.op, FileSummary { checksum, bytes });
    Ok(CheckpointMarker {
        op: checkpoint.op,
        timestamp: checkpoint.timestamp,
        checksum,
    })
}

fn count_written(plan: &Plan, bytes: u64) {
    counters::CHECKPOINT_FILE_BYTES.add(bytes);
    if plan.bases.is_empty() {
        counters::CHECKPOINT_FILES_FULL.add(1);
    } else {
        counters::CHECKPOINT_FILES_INCREMENTAL.add(1);
    }
    counters::CHECKPOINT_PAGES_SHARED.add(plan.shared_pages());
}

/// Reads the checkpoint `marker` names, from its file and the file's bases, with the
/// chain to write the next file against; or says why it cannot be used (the text names
/// the file at fault).
pub fn read(directory: &Path, marker: &CheckpointMarker) -> Result<(Checkpoint, Chain), String> {
    let head_path = path(directory, marker.op);
    let head = read_file(&head_path)?;
    let in_head = |reason| format!("checkpoint file {}: {reason}", head_path.display());
    if head.op != marker.op
        || head.timestamp != marker.timestamp
        || head.checksum != marker.checksum
    {
        return Err(in_head("does not match the checkpoint the journal names"));
    }
    let table = Table::parse(&head.payload).map_err(in_head)?;
    let mut pages: [Vec<Option<Page>>; 2] =
        [table.rows[0].len(), table.rows[1].len()].map(|count| vec![None; count]);
    take_pages(&table, 0, &head.payload, &mut pages, false).map_err(in_head)?;
    let mut files = BTreeMap::from([(marker.op, head.summary())]);
    for (index, (op, checksum)) in table.bases.iter().enumerate() {
        let base_path = path(directory, *op);
        let in_base = |reason: &str| {
            format!(
                "checkpoint file {} (a base of {}): {reason}",
                base_path.display(),
                head_path.display()
            )
        };
        let base = read_file(&base_path).map_err(|error| {
            format!(
                "{error} (a base of checkpoint file {})",
                head_path.display()
            )
        })?;
        if base.op != *op || base.checksum != *checksum {
            return Err(in_base("is not the file it was written against"));
        }
        take_pages(&table, index as u32 + 1, &base.payload, &mut pages, true).map_err(in_base)?;
        files.insert(*op, base.summary());
    }
    let [service, clients] = pages.map(|pages| {
        Snapshot::new(
            pages
                .into_iter()
                .map(|page| page.expect("every source read"))
                .collect(),
        )
    });
    let base_ops: Vec<u64> = table.bases.iter().map(|(op, _)| *op).collect();
    let chain = chain_of(marker.op, &base_ops, &table.rows, files);
    let checkpoint = Checkpoint {
        op: marker.op,
        timestamp: marker.timestamp,
        service,
        clients,
    };
    Ok((checkpoint, chain))
}

/// A checkpoint file read whole, its checksums verified.
struct File {
    op: u64,
    timestamp: u64,
    checksum: u32,
    payload: Bytes,
}

impl File {
    fn summary(&self) -> FileSummary {
        FileSummary {
            checksum: self.checksum,
            bytes: (HEADER_BYTES + self.payload.len()) as u64,
        }
    }
}

/// Reads the file at `path` and checks its header and payload checksums (the error names
/// the file).
fn read_file(path: &Path) -> Result<File, String> {
    let bytes = match files::read_if_exists(path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(format!("checkpoint file {} is missing", path.display())),
        Err(error) => return Err(error.to_string()),
    };
    parse_file(Bytes::from(bytes))
        .map_err(|reason| format!("checkpoint file {}: {reason}", path.display()))
}

fn parse_file(bytes: Bytes) -> Result<File, &'static str> {
    if bytes.len() < HEADER_BYTES {
        return Err("shorter than its header");
    }
    let (header, payload) = bytes.split_at(HEADER_BYTES);
    let stored_checksum = u32::from_le_bytes(header[CHECKSUM_AT..].try_into().expect("4 bytes"));
    if &header[..8] != MAGIC || crc32c::crc32c(&header[..CHECKSUM_AT]) != stored_checksum {
        return Err("header fails its checksum");
    }
    let mut reader = Reader {
        bytes: &header[8..],
    };
    let op = reader.u64()?;
    let timestamp = reader.u64()?;
    let payload_bytes = reader.u64()?;
    let checksum = reader.u32()?;
    if payload_bytes != payload.len() as u64 || crc32c::crc32c(payload) != checksum {
        return Err("payload fails its checksum (cut short or corrupt)");
    }
    Ok(File {
        op,
        timestamp,
        checksum,
        payload: bytes.slice(HEADER_BYTES..),
    })
}

/// A file's table, parsed.
struct Table {
    /// Op and checksum of each base.
    bases: Vec<(u64, u32)>,
    rows: [Vec<Row>; 2],
}

impl Table {
    fn parse(payload: &[u8]) -> Result<Table, &'static str> {
        let mut reader = Reader { bytes: payload };
        let count = reader.u32()? as usize;
        if count > BASES_MAX {
            return Err("names more bases than any file may");
        }
        let mut bases = Vec::with_capacity(count);
        for _ in 0..count {
            bases.push((reader.u64()?, reader.u32()?));
        }
        let mut rows = [Vec::new(), Vec::new()];
        for snapshot in &mut rows {
            let count = reader.u32()? as usize;
            if count > reader.bytes.len() / PAGE_ROW_BYTES {
                return Err("page count exceeds the file");
            }
            snapshot.reserve_exact(count);
            for _ in 0..count {
                let row = Row {
                    digest: Digest(reader.array()?),
                    length: reader.u32()?,
                    source: reader.u32()?,
                    offset: reader.u64()?,
                };
                if row.source as usize > bases.len() {
                    return Err("a page names a base the file does not list");
                }
                snapshot.push(row);
            }
        }
        Ok(Table { bases, rows })
    }
}

/// Fills `pages` with the pages whose rows name `source`, out of its `payload`, each
/// checked against its digest; copied out of a base (`copy`), so that the base's buffer
/// is freed once read, sliced (no copy) out of the file itself.
fn take_pages(
    table: &Table,
    source: u32,
    payload: &Bytes,
    pages: &mut [Vec<Option<Page>>; 2],
    copy: bool,
) -> Result<(), &'static str> {
    for (rows, pages) in table.rows.iter().zip(pages.iter_mut()) {
        for (row, page) in rows.iter().zip(pages.iter_mut()) {
            if row.source != source {
                continue;
            }
            let start = usize::try_from(row.offset).map_err(|_| "a page lies past the file")?;
            let end = start
                .checked_add(row.length as usize)
                .filter(|end| *end <= payload.len())
                .ok_or("a page lies past the file")?;
            let bytes = match copy {
                true => Bytes::copy_from_slice(&payload[start..end]),
                false => payload.slice(start..end),
            };
            let verified = Page::verified(bytes, row.digest)
                .map_err(|_| "a page does not match its digest")?;
            *page = Some(verified);
        }
    }
    Ok(())
}

/// The chain of the file at `op` with bases at `base_ops` and pages `rows`, made of
/// `files`: where each page lies.
fn chain_of(
    op: u64,
    base_ops: &[u64],
    rows: &[Vec<Row>; 2],
    files: BTreeMap<u64, FileSummary>,
) -> Chain {
    let file_of = |source: u32| match source {
        0 => op,
        base => base_ops[base as usize - 1],
    };
    let pages = (rows.iter().flatten())
        .map(|row| {
            let location = Location {
                file: file_of(row.source),
                offset: row.offset,
                length: row.length,
            };
            (row.digest, location)
        })
        .collect();
    Chain { files, pages }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn checkpoint(op: u64) -> Checkpoint {
        Checkpoint {
            op,
            timestamp: op * 3,
            service: Snapshot::new(vec![
                Page::new(Bytes::from(vec![1u8; 100])),
                Page::new(Bytes::from(vec![op as u8; 5000])),
            ]),
            clients: Snapshot::from_blob(&Bytes::from(vec![9u8; 10])),
        }
    }

    /// A checkpoint of `pages` pages of 1,000 bytes, page `i` holding `version(i)`.
    pub(crate) fn paged(op: u64, pages: usize, version: impl Fn(usize) -> u8) -> Checkpoint {
        let page = |i: usize| {
            let mut bytes = vec![version(i); 1000];
            bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Page::new(Bytes::from(bytes))
        };
        Checkpoint {
            op,
            timestamp: op * 3,
            service: Snapshot::new((0..pages).map(page).collect()),
            clients: Snapshot::from_blob(&Bytes::from(vec![op as u8; 10])),
        }
    }

    fn file_bytes(directory: &Path, op: u64) -> u64 {
        std::fs::metadata(path(directory, op)).unwrap().len()
    }

    #[test]
    fn a_checkpoint_reads_back_and_any_damage_is_refused() {
        let directory = crate::storage::data_dir::tests::temp_dir("checkpoint");
        let written = checkpoint(64);
        let mut chain = Chain::default();
        let marker = write(&directory, &written, &mut chain).unwrap();
        let (read_back, read_chain) = read(&directory, &marker).unwrap();
        assert_eq!(read_back, written);
        assert_eq!(read_chain, chain, "the chain read back is the one written");
        assert!(!directory
            .join("checkpoint-00000000000000000064.tmp")
            .exists());
        assert_eq!(op_of("checkpoint-00000000000000000064"), Some(64));
        assert_eq!(op_of("checkpoint-00000000000000000064.tmp"), None);

        let file = path(&directory, 64);
        let bytes = std::fs::read(&file).unwrap();
        for at in (0..bytes.len()).step_by(97) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            std::fs::write(&file, &damaged).unwrap();
            let error = read(&directory, &marker).unwrap_err();
            assert!(error.contains(&file.display().to_string()), "{error}");
            std::fs::write(&file, &bytes[..at]).unwrap();
            read(&directory, &marker).unwrap_err();
        }
        std::fs::write(&file, &bytes).unwrap();
        let other = CheckpointMarker {
            checksum: marker.checksum ^ 1,
            ..marker
        };
        assert!(read(&directory, &other)
            .unwrap_err()
            .contains("does not match"));
        std::fs::remove_file(&file).unwrap();
        assert!(read(&directory, &marker).unwrap_err().contains("missing"));
    }

    /// Each file holds only the pages its chain lacks, and reads back whole from it.
    #[test]
    fn a_chain_of_files_holds_each_page_once_and_reads_back() {
        let directory = crate::storage::data_dir::tests::temp_dir("chain");
        let mut chain = Chain::default();
        let first = paged(10, 100, |_| 0);
        let marker = write(&directory, &first, &mut chain).unwrap();
        let full = file_bytes(&directory, 10);
        assert!(full > 100_000);
        // 10 pages change: the next file holds those 10 (and the table).
        let second = paged(20, 100, |i| u8::from(i < 10));
        let second_marker = write(&directory, &second, &mut chain).unwrap();
        let incremental = file_bytes(&directory, 20);
        assert!(incremental < 10_000 + 100 * 50 + 200, "{incremental}");
        assert_eq!(chain.files().collect::<Vec<_>>(), vec![10, 20]);
        // 10 others change, and 10 pages are new: a third file on both.
        let third = paged(30, 110, |i| {
            u8::from(i < 10) + 2 * u8::from((10..20).contains(&i))
        });
        let third_marker = write(&directory, &third, &mut chain).unwrap();
        assert!(file_bytes(&directory, 30) < 20_000 + 110 * 50 + 200);
        assert_eq!(chain.files().collect::<Vec<_>>(), vec![10, 20, 30]);
        for (marker, written) in [
            (marker, &first),
            (second_marker, &second),
            (third_marker, &third),
        ] {
            let (read_back, _) = read(&directory, &marker).unwrap();
            assert_eq!(&read_back, written);
        }
        assert_eq!(read(&directory, &third_marker).unwrap().1, chain);
        // Pages that repeat within one checkpoint are held once.
        let mut chain = Chain::default();
        let repeated = paged(40, 50, |_| 7);
        let page = repeated.service.pages()[0].clone();
        let twice = Checkpoint {
            service: Snapshot::new(vec![page.clone(), page]),
            ..repeated
        };
        let marker = write(&directory, &twice, &mut chain).unwrap();
        assert!(file_bytes(&directory, 40) < 2000);
        assert_eq!(read(&directory, &marker).unwrap().0, twice);
    }

    /// A checkpoint written again at an op its chain already holds (or past it) gets a
    /// file of every page: never one whose base is the file it replaces.
    #[test]
    fn a_file_is_never_written_against_a_file_of_its_own_op() {
        let directory = crate::storage::data_dir::tests::temp_dir("chain-same-op");
        let mut chain = Chain::default();
        write(&directory, &paged(10, 20, |_| 0), &mut chain).unwrap();
        let again = paged(10, 20, |i| u8::from(i < 2));
        let marker = write(&directory, &again, &mut chain).unwrap();
        assert_eq!(chain.files().collect::<Vec<_>>(), vec![10]);
        assert_eq!(read(&directory, &marker).unwrap().0, again);
    }

    /// A damaged, replaced or missing base is refused with its name, never read around.
    #[test]
    fn a_damaged_or_missing_link_of_the_chain_is_refused_by_name() {
        let directory = crate::storage::data_dir::tests::temp_dir("chain-damage");
        let mut chain = Chain::default();
        write(&directory, &paged(10, 50, |_| 0), &mut chain).unwrap();
        write(&directory, &paged(20, 50, |i| u8::from(i < 5)), &mut chain).unwrap();
        let marker = write(
            &directory,
            &paged(30, 50, |i| 2 * u8::from(i < 5)),
            &mut chain,
        )
        .unwrap();
        assert_eq!(chain.files().collect::<Vec<_>>(), vec![10, 30]);
        let base = path(&directory, 10);
        let bytes = std::fs::read(&base).unwrap();
        for at in (0..bytes.len()).step_by(331) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            std::fs::write(&base, &damaged).unwrap();
            let error = read(&directory, &marker).unwrap_err();
            assert!(error.contains(&base.display().to_string()), "{error}");
        }
        // Another file of the same op (a checkpoint written again differently).
        let mut other = Chain::default();
        write(&directory, &paged(10, 50, |_| 9), &mut other).unwrap();
        let error = read(&directory, &marker).unwrap_err();
        assert!(
            error.contains("not the file it was written against"),
            "{error}"
        );
        std::fs::remove_file(&base).unwrap();
        let error = read(&directory, &marker).unwrap_err();
        assert!(
            error.contains("missing") && error.contains(&base.display().to_string()),
            "{error}"
        );
    }

    /// A base most of whose pages changed is dropped from the chain: its live pages are
    /// written again, so the bases stay within twice the state.
    #[test]
    fn the_chain_stays_within_twice_the_state() {
        let directory = crate::storage::data_dir::tests::temp_dir("chain-bound");
        let mut chain = Chain::default();
        let state_bytes = 100 * 1000;
        for round in 0..40u64 {
            // Each round rewrites a fifth of the pages, in a sliding window: page i was
            // last written in the latest round r <= round with r % 5 == i / 20 (round 0
            // wrote them all).
            let checkpoint = paged(round + 1, 100, |i| {
                let back = (round + 5 - (i / 20) as u64) % 5;
                round.saturating_sub(back) as u8
            });
            let marker = write(&directory, &checkpoint, &mut chain).unwrap();
            let bases: u64 = (chain.files())
                .filter(|op| *op != marker.op)
                .map(|op| file_bytes(&directory, op))
                .sum();
            assert!(
                bases <= 2 * (state_bytes + 100 * PAGE_ROW_BYTES as u64 + 200),
                "round {round}: bases of {bases} bytes"
            );
            assert!(chain.files().count() <= BASES_MAX + 1);
            assert_eq!(read(&directory, &marker).unwrap().0, checkpoint);
        }
    }
}
