//! Installing a received kv snapshot: its pages become the buckets' own, after the checks a
//! received snapshot must pass before any of it becomes state.
//!
//! The pages came from another replica and their digests were verified at the wire's gate,
//! so their bytes are what the sender hashed: trusted as bytes, not as a layout (a faulty or
//! malicious sender hashes whatever it likes). The install therefore carries the digests
//! over without hashing, copies the bytes once (each bucket's pages into one buffer of the
//! bucket's own) and parses every record of the copy while it is still in cache: each record
//! whole, in strictly ascending state order, in the bucket its page lies in, and the
//! bucket's pages cut exactly where kv's own `snapshot` cuts them (from the records'
//! lengths alone: no page is compared or hashed again). Anything else is refused with an
//! error, never a panic. The parse reads each record's two lengths and hashes its key,
//! which the bucket's index needs anyway.

use super::bucket::{hash_high, Bucket};
use super::fold::Buckets;
use super::layout::{bucket_bits_for, bucket_of, key_hash};
use crate::service::{Page, Snapshot, SnapshotError};
use std::sync::Arc;

const EMPTY_PAGE: SnapshotError = SnapshotError("kv snapshot has an empty page");
const KEY_TRUNCATED: SnapshotError = SnapshotError("kv page key truncated");
const VALUE_TRUNCATED: SnapshotError = SnapshotError("kv page value truncated");
const OUT_OF_ORDER: SnapshotError = SnapshotError("kv records out of order");
const NOT_CANONICAL: SnapshotError = SnapshotError("kv pages are not laid out as kv lays them out");
const BUCKET_TOO_LARGE: SnapshotError = SnapshotError("kv bucket larger than 4 GiB");

/// A received snapshot as the state of a map.
pub(super) struct Restored {
    /// The 2^`bits` buckets, their pages the received ones (copied).
    pub buckets: Buckets,
    pub bits: u32,
    /// Bytes of all records as pages hold them.
    pub record_bytes: u64,
    /// Number of records (keys).
    pub keys: usize,
}

/// The buckets of `snapshot`, laid out in pages of at most `page_bytes`, if it is exactly
/// what kv's `snapshot` produces for some state (see the module docs).
///
/// The layout's size is the pages' bytes (pages hold records and nothing else), so the
/// buckets are known before any record is read: each received page goes to the bucket of
/// its first record, and each bucket is then built from its pages alone. Buckets come in
/// ascending order and a bucket holds a range of the hash, so records in ascending order
/// within each bucket are in ascending order throughout.
pub(super) fn restore(snapshot: &Snapshot, page_bytes: usize) -> Result<Restored, SnapshotError> {
    let mut rest = snapshot.pages();
    let record_bytes = rest.iter().map(|page| page.len() as u64).sum();
    let bits = bucket_bits_for(record_bytes, page_bytes);
    let mut buckets: Vec<Arc<Bucket>> = Vec::with_capacity(1 << bits);
    let mut keys = 0;
    let mut scratch = Index::default();
    while let Some(first) = rest.first() {
        let index = bucket_of(first_hash(first)?, bits);
        if index < buckets.len() {
            return Err(OUT_OF_ORDER);
        }
        let mut end = 1;
        while let Some(page) = rest.get(end) {
            if bucket_of(first_hash(page)?, bits) != index {
                break;
            }
            end += 1;
        }
        let bucket = bucket(&rest[..end], index, bits, page_bytes, &mut scratch)?;
        keys += bucket.keys();
        buckets.resize_with(index, Arc::default);
        buckets.push(Arc::new(bucket));
        rest = &rest[end..];
    }
    buckets.resize_with(1 << bits, Arc::default);
    Ok(Restored {
        buckets: Arc::new(buckets),
        bits,
        record_bytes,
        keys,
    })
}

/// The hash of the key of `page`'s first record.
fn first_hash(page: &Page) -> Result<u64, SnapshotError> {
    match PageRecords::new(page.bytes()).next() {
        None => Err(EMPTY_PAGE),
        Some(record) => Ok(key_hash(record?.1)),
    }
}

/// A bucket's index as it is parsed: reused from bucket to bucket, so that each bucket's
/// own is allocated once at its exact size.
#[derive(Default)]
struct Index {
    starts: Vec<u32>,
    highs: Vec<u32>,
}

/// Bucket `index` (of 2^`bits`) of `pages`, the received pages whose first records lie
/// in it: their bytes copied into the bucket's buffer, their digests carried over.
fn bucket(
    pages: &[Page],
    index: usize,
    bits: u32,
    page_bytes: usize,
    scratch: &mut Index,
) -> Result<Bucket, SnapshotError> {
    let len: usize = pages.iter().map(Page::len).sum();
    if u32::try_from(len).is_err() {
        return Err(BUCKET_TOO_LARGE);
    }
    let (records, pages) = Page::copied_together(pages);
    scratch.starts.clear();
    scratch.highs.clear();
    let mut last: Option<(u64, &[u8])> = None;
    let mut page_start = 0;
    for page in &pages {
        if page.is_empty() {
            return Err(EMPTY_PAGE);
        }
        for record in PageRecords::new(page.bytes()) {
            let (at, key) = record?;
            let hash = key_hash(key);
            if last.is_some_and(|last| last >= (hash, key)) {
                return Err(OUT_OF_ORDER);
            }
            if bucket_of(hash, bits) != index {
                // In order, so in a later bucket: the page straddles two.
                return Err(NOT_CANONICAL);
            }
            last = Some((hash, key));
            // Within the bucket, whose length fits a `u32` (checked above).
            scratch.starts.push((page_start + at) as u32);
            scratch.highs.push(hash_high(hash));
        }
        page_start += page.len();
    }
    let (starts, highs) = (scratch.starts.to_vec(), scratch.highs.to_vec());
    Bucket::with_pages(records, starts, highs, pages, page_bytes).ok_or(NOT_CANONICAL)
}

/// The records of one page's bytes, each field a `u32` length and its bytes: where each
/// record starts in the page, and its key.
struct PageRecords<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> PageRecords<'a> {
    fn new(bytes: &'a [u8]) -> PageRecords<'a> {
        PageRecords { bytes, at: 0 }
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.bytes[self.at..].split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let field = rest.get(..len)?;
        // `len` bytes of the page follow the length: no overflow.
        self.at += 4 + len;
        Some(field)
    }
}

impl<'a> Iterator for PageRecords<'a> {
    type Item = Result<(usize, &'a [u8]), SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at == self.bytes.len() {
            return None;
        }
        let start = self.at;
        let record = (self.field().ok_or(KEY_TRUNCATED)).and_then(|key| {
            self.field().ok_or(VALUE_TRUNCATED)?;
            Ok((start, key))
        });
        if record.is_err() {
            // Nothing after a truncated record can be read.
            self.at = self.bytes.len();
        }
        Some(record)
    }
}

/// The number of records of a page, for tests: its records parsed as a restore does.
#[cfg(test)]
pub(super) fn page_records(page: &Page) -> Result<usize, SnapshotError> {
    PageRecords::new(page.bytes()).try_fold(0, |count, record| record.map(|_| count + 1))
}
