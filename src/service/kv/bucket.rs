//! One bucket of the kv state: its records serialised exactly as its snapshot pages hold
//! them, in one buffer of its own, with an index (each record's start and the top bits of
//! its key's hash) for lookups.
//!
//! The buffer *is* the state and the pages are slices of it: a bucket's bytes are held
//! once, by the live state and by every checkpoint that shares the bucket's pages. A
//! bucket is immutable once built; a change is a rebuild (see `fold` in the parent
//! module), so the pages a checkpoint holds never change under it.

use super::layout::{key_hash, Record};
use crate::service::Page;
#[cfg(test)]
use crate::service::PAGE_BYTES_TARGET;
use bytes::Bytes;
use std::cmp::Ordering;
use std::ops::Range;

/// A bucket's records (see the module docs).
///
/// Invariants: `records` is a sequence of records (`u32` key length, key, `u32` value
/// length, value) in strictly ascending (hash of key, key) order; `starts[i]` is where
/// record i begins and `highs[i]` the top 32 bits of its key's hash; `pages`, when
/// present, are `records` cut by [`page_cuts`] and hashed.
#[derive(Clone, Default)]
pub(super) struct Bucket {
    records: Bytes,
    starts: Vec<u32>,
    /// Searched instead of the records: a lookup's binary search then touches a few cache
    /// lines of this array and one record, not a record per step (twice as fast on a
    /// state larger than the caches, for 4 bytes a record).
    highs: Vec<u32>,
    /// `None` until the bucket's pages are first asked for (a snapshot hashes only the
    /// buckets built since the previous one).
    pages: Option<Vec<Page>>,
}

impl Bucket {
    /// A bucket of `records`, which begin at `starts` (see the type's invariants), its
    /// pages not hashed yet.
    pub fn new(records: Bytes, starts: Vec<u32>, highs: Vec<u32>) -> Bucket {
        debug_assert!(starts.iter().all(|&start| (start as usize) < records.len()));
        debug_assert_eq!(starts.len(), highs.len());
        Bucket {
            records,
            starts,
            highs,
            pages: None,
        }
    }

    /// Number of records.
    pub fn keys(&self) -> usize {
        self.starts.len()
    }

    /// Bytes of the records.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.records.len()
    }

    /// Heap bytes the bucket holds beyond its records: its index and page handles.
    #[cfg(test)]
    pub fn index_bytes(&self) -> usize {
        let pages = self.pages.as_ref().map_or(0, Vec::capacity);
        (self.starts.capacity() + self.highs.capacity()) * size_of::<u32>()
            + pages * size_of::<Page>()
    }

    /// The key and value of the record starting at `start`, as ranges of `records`.
    fn fields(&self, start: u32) -> (Range<usize>, Range<usize>) {
        let field = |at: usize| {
            let len = u32::from_le_bytes(self.records[at..at + 4].try_into().expect("4 bytes"));
            at + 4..at + 4 + len as usize
        };
        let key = field(start as usize);
        let value = field(key.end);
        (key, value)
    }

    fn record(&self, start: u32) -> Record<'_> {
        let (key, value) = self.fields(start);
        let key = &self.records[key];
        Record {
            hash: key_hash(key),
            key,
            value: &self.records[value],
        }
    }

    /// The records in state order.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> + Clone + '_ {
        self.starts.iter().map(|&start| self.record(start))
    }

    /// The value of `key` (whose hash is `hash`): a slice of the bucket, no copy.
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<Bytes> {
        let high = hash_high(hash);
        let first = self.highs.partition_point(|&stored| stored < high);
        let candidates = self.highs[first..]
            .iter()
            .take_while(|&&stored| stored == high);
        for (&start, _) in self.starts[first..].iter().zip(candidates) {
            let (at, value) = self.fields(start);
            let stored = &self.records[at];
            match (key_hash(stored), stored).cmp(&(hash, key)) {
                Ordering::Less => continue,
                Ordering::Equal => return Some(self.records.slice(value)),
                Ordering::Greater => break,
            }
        }
        None
    }

    /// Where the bucket's pages of `page_bytes` are cut (see [`page_cuts`]).
    fn cuts(&self, page_bytes: usize) -> Vec<Range<usize>> {
        page_cuts(&self.starts, self.records.len(), page_bytes)
    }

    /// The bucket's pages of at most `page_bytes` (the map's, always the same), hashed on
    /// the first call after a build.
    pub fn pages(&mut self, page_bytes: usize) -> &[Page] {
        let records = &self.records;
        let starts = &self.starts;
        self.pages.get_or_insert_with(|| {
            (page_cuts(starts, records.len(), page_bytes).into_iter())
                .map(|cut| Page::new(records.slice(cut)))
                .collect()
        })
    }

    /// The bucket's pages, if they were hashed since it was built.
    pub fn hashed_pages(&self) -> Option<&[Page]> {
        self.pages.as_deref()
    }

    /// A bucket of `records` (see [`Bucket::new`]) whose pages are `pages`, already
    /// hashed (a received snapshot's, copied into `records`): `None` unless they are
    /// `records` cut exactly where the bucket's own pages would be (see [`page_cuts`]), so
    /// that its pages, and the digests of its later snapshots, are everyone else's.
    pub fn with_pages(
        records: Bytes,
        starts: Vec<u32>,
        highs: Vec<u32>,
        pages: Vec<Page>,
        page_bytes: usize,
    ) -> Option<Bucket> {
        let mut bucket = Bucket::new(records, starts, highs);
        let cuts = bucket.cuts(page_bytes);
        let same = cuts.len() == pages.len()
            && (cuts.into_iter().zip(&pages)).all(|(cut, page)| {
                page.bytes().as_ptr_range() == bucket.records[cut].as_ptr_range()
            });
        same.then(|| {
            bucket.pages = Some(pages);
            bucket
        })
    }
}

/// The top 32 bits of a key's hash: ordered as the records are.
pub(super) fn hash_high(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// A bucket's page cuts: records in order, a page cut before a record that would take it
/// past `page_bytes` (so a page holds one record at least, and a record larger than that
/// is a page of its own). `starts` are the records' starts, `end` the end of the last one.
fn page_cuts(starts: &[u32], end: usize, page_bytes: usize) -> Vec<Range<usize>> {
    let mut cuts = Vec::new();
    let mut page_start = 0;
    for (i, &start) in starts.iter().enumerate() {
        let start = start as usize;
        let record_end = starts.get(i + 1).map_or(end, |&next| next as usize);
        if start > page_start && record_end - page_start > page_bytes {
            cuts.push(page_start..start);
            page_start = start;
        }
    }
    if end > page_start {
        cuts.push(page_start..end);
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::super::build::Writer;
    use super::*;

    fn record<'a>(key: &'a [u8], value: &'a [u8]) -> Record<'a> {
        Record {
            hash: key_hash(key),
            key,
            value,
        }
    }

    /// A bucket of `keys`, each with a value of `value_bytes`.
    fn bucket(keys: &[&str], value_bytes: usize) -> Bucket {
        let value = vec![7u8; value_bytes];
        let mut records: Vec<Record> = keys.iter().map(|k| record(k.as_bytes(), &value)).collect();
        records.sort_by_key(|r| (r.hash, r.key));
        let mut writer = Writer::default();
        records.into_iter().for_each(|r| writer.push(r));
        writer.finish()
    }

    #[test]
    fn a_bucket_finds_its_records_and_no_others() {
        let keys = ["a", "b", "key 1", "key 2", ""];
        let bucket = bucket(&keys, 3);
        for key in keys {
            let value = bucket.get(key_hash(key.as_bytes()), key.as_bytes());
            assert_eq!(value.as_deref(), Some(&[7u8; 3][..]), "{key}");
        }
        assert_eq!(bucket.get(key_hash(b"c"), b"c"), None);
        assert_eq!(bucket.records().count(), keys.len());
        assert_eq!(Bucket::default().get(0, b""), None);
    }

    #[test]
    fn pages_are_cut_at_records_within_the_target() {
        let keys: Vec<String> = (0..200).map(|i| format!("key {i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut small = bucket(&keys, 100);
        let pages = small.pages(PAGE_BYTES_TARGET).to_vec();
        assert!(pages.len() > 4);
        assert!(pages.iter().all(|p| p.len() <= PAGE_BYTES_TARGET));
        let joined: Vec<u8> = pages.iter().flat_map(|p| p.bytes().to_vec()).collect();
        assert_eq!(joined, small.records[..]);
        // A record larger than the target is a page of its own.
        let mut large = bucket(&["x", "y"], PAGE_BYTES_TARGET + 1);
        assert_eq!(large.pages(PAGE_BYTES_TARGET).len(), 2);
        assert!(Bucket::default().pages(PAGE_BYTES_TARGET).is_empty());
    }

    #[test]
    fn pages_are_taken_only_as_the_bucket_cuts_them() {
        let keys = ["a", "b", "c"];
        let mut ours = bucket(&keys, 2000);
        let pages = ours.pages(PAGE_BYTES_TARGET).to_vec();
        assert_eq!(pages.len(), 2);
        let with = |pages: &[Page]| {
            let (records, copies) = Page::copied_together(pages);
            let ours = ours.clone();
            Bucket::with_pages(records, ours.starts, ours.highs, copies, PAGE_BYTES_TARGET)
        };
        let mut copy = with(&pages).expect("cut as the bucket cuts");
        assert_eq!(copy.pages(PAGE_BYTES_TARGET), &pages[..]);
        assert_eq!(
            copy.records().collect::<Vec<_>>(),
            ours.records().collect::<Vec<_>>()
        );
        // The pages are the bucket's own bytes, not the received ones.
        let received = pages[0].bytes().as_ptr();
        assert_ne!(copy.pages(PAGE_BYTES_TARGET)[0].bytes().as_ptr(), received);
        // The same bytes cut elsewhere, or cut into the pages of another page size.
        let joined = Page::new(Bytes::copy_from_slice(&ours.records));
        assert!(with(&[joined]).is_none());
        let records = ours.records.clone();
        let split = [
            Page::new(records.slice(..10)),
            Page::new(records.slice(10..pages[0].len())),
            pages[1].clone(),
        ];
        assert!(with(&split).is_none());
        let (records, copies) = Page::copied_together(&pages);
        assert!(Bucket::with_pages(records, ours.starts, ours.highs, copies, 8000).is_none());
    }
}
