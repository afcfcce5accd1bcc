//! Building buckets: records pushed in state order become buckets of one layout, each
//! buffer allocated once at its exact size (the records are written into scratch buffers
//! that are reused, then copied), so a bucket holds no spare capacity.

use super::bucket::{hash_high, Bucket};
use super::layout::{bucket_of, key_hash, Record};
use super::ops::put_field;
use bytes::Bytes;

/// Splits records pushed in state order into the 2^bits buckets of a layout.
pub(super) struct Builder {
    bits: u32,
    /// Buckets closed so far, taken or not: the bucket being written is the next one.
    closed: usize,
    /// Buckets closed and not taken yet.
    buckets: Vec<Bucket>,
    writer: Writer,
}

impl Builder {
    /// A builder of 2^bits buckets.
    pub fn new(bits: u32) -> Builder {
        Builder {
            bits,
            closed: 0,
            buckets: Vec::new(),
            writer: Writer::default(),
        }
    }

    /// Closes the buckets before `index` (the one being written included).
    fn close_before(&mut self, index: usize) {
        while self.closed < index {
            self.buckets.push(self.writer.finish());
            self.closed += 1;
        }
    }

    /// Adds `record` to its bucket; records come in state order.
    pub fn push(&mut self, record: Record<'_>) {
        let index = bucket_of(record.hash, self.bits);
        assert!(index >= self.closed, "records pushed out of order");
        self.close_before(index);
        self.writer.push(record);
    }

    /// The buckets before `index` not taken yet, closed: no record pushed after this
    /// call may belong to them.
    pub fn take_before(&mut self, index: usize) -> impl Iterator<Item = Bucket> + '_ {
        self.close_before(index);
        self.buckets.drain(..)
    }
}

/// Builds buckets one at a time from records pushed in state order, in scratch buffers it
/// reuses, so that every bucket's buffer is allocated once at its exact size.
#[derive(Default)]
pub(super) struct Writer {
    records: Vec<u8>,
    starts: Vec<u32>,
    highs: Vec<u32>,
}

impl Writer {
    /// Whether `record` can still be added: a bucket's offsets are `u32`, so a bucket holds
    /// at most 4 GiB (a layout of 2^24 buckets reaches that only past 64 PiB of state).
    pub fn fits(&self, record: &Record<'_>) -> bool {
        self.records.len() as u64 + record.len() <= u64::from(u32::MAX)
    }

    /// Appends `record`, which must come after the previous one in state order.
    pub fn push(&mut self, record: Record<'_>) {
        assert!(self.fits(&record), "a bucket is limited to 4 GiB");
        if cfg!(debug_assertions) {
            if let Some(&start) = self.starts.last() {
                let len =
                    u32::from_le_bytes(self.records[start as usize..][..4].try_into().unwrap());
                let last = &self.records[start as usize + 4..][..len as usize];
                assert!(
                    (key_hash(last), last) < (record.hash, record.key),
                    "records out of order"
                );
            }
        }
        self.starts.push(self.records.len() as u32);
        self.highs.push(hash_high(record.hash));
        put_field(&mut self.records, record.key);
        put_field(&mut self.records, record.value);
    }

    /// The bucket of the records pushed since the last call, its pages not hashed yet.
    pub fn finish(&mut self) -> Bucket {
        let records = Bytes::copy_from_slice(&self.records);
        let bucket = Bucket::new(records, self.starts.clone(), self.highs.clone());
        self.records.clear();
        self.starts.clear();
        self.highs.clear();
        bucket
    }
}
