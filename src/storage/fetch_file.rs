//! `fetch`: the pages of an unfinished checkpoint fetch, kept so that a replica killed
//! mid-transfer resumes where it was instead of starting over (`Effect::KeepPages`; the
//! receiver is `protocol/replica/fetch_checkpoint.rs`).
//!
//! It is a cache, not state: a page read back is used only once its SHA-256 matches a
//! digest of a manifest run that verified against the root a NewState named. So it is
//! written outside the journal's ordering, by a thread of its own, never synced; a crash
//! may lose, tear or garble its tail, and reading it back keeps what is intact and drops
//! the rest, counted, never failing the start.
//!
//! Layout: a 64-byte header (magic `VSRFETC1`, the 32-byte root of the checkpoint being
//! fetched, zeros, header crc32c `u32` at 60), then records, each: the page's SHA-256
//! digest (32 bytes), its length `u32`, a crc32c `u32` of digest, length and bytes, then
//! the bytes. Reading stops at the first record that is cut short or fails its crc (a
//! torn or garbled tail: nothing after it is framed reliably); a record whose crc holds
//! but whose bytes do not hash to its digest is dropped and counted. The file holds one
//! checkpoint's pages at most: pages for another root truncate it first.

use super::StorageError;
use crate::protocol::FetchedPages;
use crate::service::snapshot::{Digest, Page, DIGEST_BYTES};
use bytes::{BufMut, Bytes};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name in the data directory.
pub const FETCH_FILE: &str = "fetch";
const MAGIC: &[u8; 8] = b"VSRFETC1";
const HEADER_BYTES: usize = 64;
const CHECKSUM_AT: usize = 60;
/// Digest, length and crc of a record.
const RECORD_HEADER_BYTES: usize = DIGEST_BYTES + 8;

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct ReadBack {
    /// The pages, each digest computed again (mismatches dropped and counted).
    pub fetched: FetchedPages,
    /// Bytes of the file that are whole records (and the header); past them, a torn or
    /// garbled tail, which the [`Writer`] overwrites.
    pub valid_bytes: u64,
    /// Why reading stopped before the file's end (`None`: it did not).
    pub tail: Option<&'static str>,
}

/// The file in `directory`.
pub fn path(directory: &Path) -> PathBuf {
    directory.join(FETCH_FILE)
}

/// Reads the kept pages back. A missing file is none kept; an unreadable one (an I/O
/// error) is an error naming it; whatever its contents, nothing here fails or panics.
pub fn read(directory: &Path) -> Result<ReadBack, StorageError> {
    let path = path(directory);
    match super::files::read_if_exists(&path)? {
        None => Ok(ReadBack::default()),
        Some(bytes) => Ok(parse(Bytes::from(bytes))),
    }
}

/// Parses a file's contents (see the module docs); pages are slices of `bytes`.
pub fn parse(bytes: Bytes) -> ReadBack {
    let Some(root) = parse_header(&bytes) else {
        return ReadBack {
            tail: (!bytes.is_empty()).then_some("the header fails its checksum"),
            ..ReadBack::default()
        };
    };
    let mut records = Vec::new();
    let mut at = HEADER_BYTES;
    let mut tail = None;
    while at < bytes.len() {
        match parse_record(&bytes, at) {
            Ok((digest, page, next)) => {
                records.push((digest, page));
                at = next;
            }
            Err(reason) => {
                tail = Some(reason);
                break;
            }
        }
    }
    ReadBack {
        fetched: FetchedPages::read_back(Some(root), records),
        valid_bytes: at as u64,
        tail,
    }
}

fn parse_header(bytes: &[u8]) -> Option<Digest> {
    let header = bytes.get(..HEADER_BYTES)?;
    let checksum = u32::from_le_bytes(header[CHECKSUM_AT..].try_into().expect("4 bytes"));
    if &header[..8] != MAGIC || crc32c::crc32c(&header[..CHECKSUM_AT]) != checksum {
        return None;
    }
    let root: [u8; DIGEST_BYTES] = header[8..8 + DIGEST_BYTES].try_into().expect("32 bytes");
    Some(Digest(root))
}

/// The record at `at`: its digest, its bytes and where the next one starts.
fn parse_record(bytes: &Bytes, at: usize) -> Result<(Digest, Bytes, usize), &'static str> {
    let Some(head) = bytes.get(at..at + RECORD_HEADER_BYTES) else {
        return Err("a record's header is cut short");
    };
    let digest = Digest(head[..DIGEST_BYTES].try_into().expect("32 bytes"));
    let length = u32::from_le_bytes(head[DIGEST_BYTES..DIGEST_BYTES + 4].try_into().expect("4"));
    let checksum = u32::from_le_bytes(head[DIGEST_BYTES + 4..].try_into().expect("4 bytes"));
    let start = at + RECORD_HEADER_BYTES;
    let end = start
        .checked_add(length as usize)
        .filter(|&end| end <= bytes.len())
        .ok_or("a record's bytes are cut short")?;
    let mut crc = crc32c::crc32c(&head[..DIGEST_BYTES + 4]);
    crc = crc32c::crc32c_append(crc, &bytes[start..end]);
    if crc != checksum {
        return Err("a record fails its checksum");
    }
    Ok((digest, bytes.slice(start..end), end))
}

fn header(root: &Digest) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.put_slice(MAGIC);
    header.put_slice(&root.0);
    header.resize(CHECKSUM_AT, 0);
    let checksum = crc32c::crc32c(&header);
    header.put_u32_le(checksum);
    header
}

fn encode_record(page: &Page, out: &mut Vec<u8>) {
    let start = out.len();
    out.put_slice(&page.digest().0);
    // A page travelled in one message: its length fits a u32.
    out.put_u32_le(u32::try_from(page.len()).expect("a page fits a message"));
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..]), page.bytes());
    out.put_u32_le(crc);
    out.put_slice(page.bytes());
}

/// Appends pages to the file: never synced (see the module docs).
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    /// The open file and the root its header names; `None`: write a new one first.
    file: Option<(File, Digest)>,
    buffer: Vec<u8>,
}

impl Writer {
    /// A writer for the file in `directory` that [`read`] found as `read_back`: pages
    /// for the same root are appended after its whole records, others start it afresh.
    pub fn open(directory: &Path, read_back: &ReadBack) -> Result<Writer, StorageError> {
        let path = path(directory);
        let mut writer = Writer {
            path,
            file: None,
            buffer: Vec::new(),
        };
        if let Some(root) = read_back.fetched.root {
            let file = OpenOptions::new()
                .write(true)
                .open(&writer.path)
                .map_err(StorageError::io("open", &writer.path))?;
            // The torn tail goes: the next records are written where it began.
            file.set_len(read_back.valid_bytes)
                .map_err(StorageError::io("truncate", &writer.path))?;
            writer.file = Some((file, root));
        }
        Ok(writer)
    }

    /// Appends `pages` of the checkpoint whose root is `root` (a new root first empties
    /// the file).
    pub fn add(&mut self, root: Digest, pages: &[Page]) -> Result<(), StorageError> {
        self.buffer.clear();
        let file = match self.file.take() {
            Some((file, held)) if held == root => file,
            _ => {
                self.buffer.extend_from_slice(&header(&root));
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&self.path)
                    .map_err(StorageError::io("create", &self.path))?
            }
        };
        for page in pages {
            encode_record(page, &mut self.buffer);
        }
        let mut file = file;
        // Opened for writing at its end: created empty, or truncated to whole records
        // and then only appended to.
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(StorageError::io("seek", &self.path))?;
        file.write_all(&self.buffer)
            .map_err(StorageError::io("write", &self.path))?;
        self.file = Some((file, root));
        Ok(())
    }

    /// Removes the file: its pages are of no more use.
    pub fn clear(&mut self) -> Result<(), StorageError> {
        self.file = None;
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StorageError::Io {
                operation: "remove",
                path: self.path.clone(),
                error,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::data_dir::tests::temp_dir;

    fn page(n: u8, len: usize) -> Page {
        Page::new(Bytes::from(vec![n; len]))
    }

    fn root(n: u8) -> Digest {
        Digest([n; DIGEST_BYTES])
    }

    fn written(pages: &[Page]) -> (crate::storage::data_dir::tests::TempDir, Vec<u8>) {
        let directory = temp_dir("fetch");
        let mut writer = Writer::open(&directory, &ReadBack::default()).unwrap();
        writer.add(root(1), &pages[..1]).unwrap();
        writer.add(root(1), &pages[1..]).unwrap();
        let bytes = std::fs::read(path(&directory)).unwrap();
        (directory, bytes)
    }

    #[test]
    fn pages_read_back_and_a_missing_file_is_none() {
        let directory = temp_dir("fetch-missing");
        let read_back = read(&directory).unwrap();
        assert_eq!(read_back.fetched, FetchedPages::default());
        let pages = vec![page(1, 100), page(2, 0), page(3, 5000)];
        let (directory, bytes) = written(&pages);
        let read_back = read(&directory).unwrap();
        assert_eq!(read_back.fetched.pages, pages);
        assert_eq!(read_back.fetched.root, Some(root(1)));
        assert_eq!(read_back.valid_bytes, bytes.len() as u64);
        assert_eq!((read_back.fetched.dropped, read_back.tail), (0, None));
    }

    #[test]
    fn a_torn_tail_keeps_the_whole_records_before_it_and_is_overwritten() {
        let pages = vec![page(1, 100), page(2, 300), page(3, 200)];
        let (directory, bytes) = written(&pages);
        let whole: Vec<usize> = (1..bytes.len())
            .filter(|&cut| parse(Bytes::copy_from_slice(&bytes[..cut])).tail.is_none())
            .collect();
        // Only the header's end and the records' ends are whole.
        assert_eq!(whole.len(), pages.len(), "{whole:?}");
        for cut in HEADER_BYTES..bytes.len() {
            let read_back = parse(Bytes::copy_from_slice(&bytes[..cut]));
            let intact = read_back.fetched.pages.len();
            assert_eq!(read_back.fetched.pages, pages[..intact]);
            assert_eq!(read_back.fetched.dropped, 0);
            assert!(read_back.valid_bytes <= cut as u64);
        }
        // A writer resumes after the whole records: the torn one is gone.
        std::fs::write(path(&directory), &bytes[..bytes.len() - 7]).unwrap();
        let read_back = read(&directory).unwrap();
        assert_eq!(read_back.tail, Some("a record's bytes are cut short"));
        let mut writer = Writer::open(&directory, &read_back).unwrap();
        writer.add(root(1), &[page(9, 10)]).unwrap();
        let again = read(&directory).unwrap();
        assert_eq!(
            again.fetched.pages,
            vec![page(1, 100), page(2, 300), page(9, 10)]
        );
        assert_eq!(again.tail, None);
    }

    #[test]
    fn garbage_is_dropped_never_a_panic() {
        let pages = vec![page(1, 100), page(2, 300), page(3, 200)];
        let (_directory, bytes) = written(&pages);
        // Any byte changed: the header is refused, or reading stops at the record that
        // holds it (its crc), or the digest catches it.
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x41;
            let read_back = parse(Bytes::from(damaged));
            let pages_read = &read_back.fetched.pages;
            assert!(pages_read.len() < pages.len(), "byte {at}");
            assert!(pages_read.iter().all(|page| pages.contains(page)));
        }
        // Not a fetch file at all.
        for junk in [vec![0u8; 10], vec![0xff; 4096], b"VSRFETC1".repeat(20)] {
            let read_back = parse(Bytes::from(junk));
            assert!(read_back.fetched.pages.is_empty());
            assert_eq!(read_back.fetched.root, None);
            assert_eq!(read_back.valid_bytes, 0);
        }
    }

    #[test]
    fn a_record_whose_bytes_do_not_hash_to_its_digest_is_dropped_and_counted() {
        let good = page(1, 100);
        let mut bytes = header(&root(1));
        encode_record(&good, &mut bytes);
        // A record framed correctly (its crc holds) whose digest is another page's.
        let lying = page(2, 50);
        let start = bytes.len();
        bytes.put_slice(&page(3, 1).digest().0);
        bytes.put_u32_le(50);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[start..]), lying.bytes());
        bytes.put_u32_le(crc);
        bytes.put_slice(lying.bytes());
        encode_record(&page(4, 10), &mut bytes);
        let read_back = parse(Bytes::from(bytes));
        assert_eq!(read_back.fetched.pages, vec![good, page(4, 10)]);
        assert_eq!(read_back.fetched.dropped, 1);
        assert_eq!(read_back.tail, None);
    }

    #[test]
    fn pages_of_another_transfer_start_the_file_afresh_and_clear_removes_it() {
        let (directory, _) = written(&[page(1, 100), page(2, 300)]);
        let read_back = read(&directory).unwrap();
        let mut writer = Writer::open(&directory, &read_back).unwrap();
        writer.add(root(7), &[page(5, 20)]).unwrap();
        let read_back = read(&directory).unwrap();
        assert_eq!(read_back.fetched.root, Some(root(7)));
        assert_eq!(read_back.fetched.pages, vec![page(5, 20)]);
        writer.clear().unwrap();
        assert!(!path(&directory).exists());
        writer.clear().unwrap(); // Twice is harmless.
        writer.add(root(8), &[page(6, 1)]).unwrap();
        assert_eq!(read(&directory).unwrap().fetched.pages, vec![page(6, 1)]);
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let directory = temp_dir("fetch-dir");
        std::fs::create_dir(path(&directory)).unwrap(); // A directory where the file goes.
        let error = read(&directory).unwrap_err().to_string();
        assert!(
            error.contains(&path(&directory).display().to_string()),
            "{error}"
        );
    }
}
