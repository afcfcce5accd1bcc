//! Where a record lives: the deterministic key hash that orders the state, the buckets the
//! hash's top bits split it into, and how many buckets a state of a given size has. The
//! page layout of every replica depends on these functions alone, so they must never
//! change between releases without a format change.

use std::ops::Bound;

/// Bytes of a record's two length fields in a page.
pub(super) const RECORD_HEADER_BYTES: usize = 4 + 4;

/// The average bucket size the layout aims for, in pages: a changed key costs the
/// rebuild of about this many pages at the next checkpoint.
const BUCKET_PAGES_TARGET: u64 = 4;

/// At most 2^24 buckets (256 GiB of records at the target); past that buckets grow.
const BUCKET_BITS_MAX: u32 = 24;

/// One record as the state orders it: by `hash` (of the key), then the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Record<'a> {
    pub hash: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl Record<'_> {
    /// Bytes the record takes in a page.
    pub fn len(&self) -> u64 {
        record_len(self.key, self.value)
    }
}

/// Bytes a record of `key` and `value` takes in a page.
pub(super) fn record_len(key: &[u8], value: &[u8]) -> u64 {
    (RECORD_HEADER_BYTES + key.len() + value.len()) as u64
}

/// A deterministic hash of a key, the same on every platform and release (the page
/// layout depends on it): 8 bytes at a time, then murmur3's 64-bit finaliser. Not a
/// defence against chosen keys; those only make one bucket, and so one rebuild, larger.
pub(super) fn key_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, word: u64| (h ^ word).wrapping_mul(K).rotate_left(29);
    let mut h = (key.len() as u64).wrapping_mul(K);
    let mut chunks = key.chunks_exact(8);
    for chunk in &mut chunks {
        h = mix(h, u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(word));
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The bucket of `hash` among 2^bits: its top bits, so buckets are ranges in state order.
pub(super) fn bucket_of(hash: u64, bits: u32) -> usize {
    hash.checked_shr(64 - bits).unwrap_or(0) as usize
}

/// The bucket layout for `record_bytes` of records in pages of `page_bytes`: the fewest
/// buckets (a power of two) that keep the average at most `BUCKET_PAGES_TARGET` pages.
pub(super) fn bucket_bits_for(record_bytes: u64, page_bytes: usize) -> u32 {
    let bucket_bytes = BUCKET_PAGES_TARGET * page_bytes as u64;
    let buckets = record_bytes.div_ceil(bucket_bytes).max(1);
    buckets.next_power_of_two().ilog2().min(BUCKET_BITS_MAX)
}

/// The hashes of bucket `bucket` among 2^bits: from its first to the next bucket's first.
pub(super) fn bucket_hashes(bucket: usize, bits: u32) -> (Bound<u64>, Bound<u64>) {
    let first = |bucket: u64| bucket.checked_shl(64 - bits).unwrap_or(0);
    let start = Bound::Included(first(bucket as u64));
    let end = if bucket + 1 < 1 << bits {
        Bound::Excluded(first(bucket as u64 + 1))
    } else {
        Bound::Unbounded
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ranges_of_the_hash() {
        for bits in [0, 1, 5, 24] {
            for hash in [0, 1, u64::MAX / 3, u64::MAX] {
                let bucket = bucket_of(hash, bits);
                assert!(bucket < 1 << bits);
                let (start, end) = bucket_hashes(bucket, bits);
                let at = hash;
                assert!(match start {
                    Bound::Included(start) => start <= at,
                    _ => false,
                });
                assert!(match end {
                    Bound::Excluded(end) => at < end,
                    Bound::Unbounded => bucket + 1 == 1 << bits,
                    Bound::Included(_) => false,
                });
            }
        }
    }

    #[test]
    fn the_hash_and_the_layout_never_change() {
        // Pinned values: the page layout of every replica, and so every checkpoint digest,
        // depends on them.
        assert_eq!(key_hash(b""), 0);
        assert_eq!(key_hash(b"key 7"), 16_845_336_044_630_055_852);
        assert_eq!(key_hash(b"k000000000000042"), 2_949_257_649_864_249_180);
        let page = crate::service::PAGE_BYTES_TARGET;
        let bucket = BUCKET_PAGES_TARGET * page as u64;
        assert_eq!(bucket_bits_for(0, page), 0);
        assert_eq!(bucket_bits_for(bucket, page), 0);
        assert_eq!(bucket_bits_for(bucket + 1, page), 1);
        assert_eq!(bucket_bits_for(u64::MAX, page), BUCKET_BITS_MAX);
        assert_eq!(bucket_bits_for(4 * 64 + 1, 64), 1);
    }
}
