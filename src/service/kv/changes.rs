//! The changes since a fold (see `Kv`): each changed key's latest value, or its deletion
//! when a bucket still holds it, readable by key and in state order.
//!
//! Kept compact, because a replica holds several checkpoint intervals of them (those
//! frozen for the fold in flight, and up to three growing while it runs): the keys and values are appended to blocks of bytes
//! of their own (a key's length, the key, the value's length, the value), and an ordered
//! index maps a key's hash to where its entry is. A change costs its bytes, 8 bytes of
//! lengths and a slot of the index (about 110 bytes for issue 12's 78-byte entries), not a
//! tree entry and two allocations of its own (about 220). A value replaced by one of the
//! same length is overwritten in place; one of another length is appended anew, and the
//! old entry stays as garbage until the changes are dropped (so [`Changes::entries`], not
//! [`Changes::len`], bounds the bytes).

use super::layout::bucket_hashes;
use std::collections::BTreeMap;
use std::ops::RangeBounds;

/// Bytes of a block of entries: large enough that its spare end is a small part of the
/// changes, small enough to come from the heap like the buckets.
const BLOCK_BYTES: usize = 64 << 10;

/// The value length of a deletion's entry.
const DELETED: u32 = u32::MAX;

/// The tag of an index slot that names a list in `shared` (keys sharing one hash) rather
/// than an entry.
const SHARED: u64 = 1 << 63;

/// Where an entry is: its block (high 32 bits) and its offset in the block.
type Address = u64;

/// An empty slot of the cache (no block has this index: blocks are fewer than 2^31).
const NONE: Address = u64::MAX;

/// The cache's largest size: 512 KiB of slots. Bounded, so that many changes cost no
/// more than their entries and the tree; past it, the keys written last are the ones
/// cached.
const CACHE_SLOTS_MAX: usize = 1 << 16;

/// The cache's size when it is first made (and no cache below this many live entries'
/// worth of need: a tree of a few hundred entries is a few cache lines).
const CACHE_SLOTS_MIN: usize = 256;

/// See the module docs.
///
/// Invariants: every index slot is either the address of one entry whose key has the
/// slot's hash, or `SHARED | i`, where `shared[i]` lists two or more entries whose keys
/// have that hash, in ascending key order; no key has two live entries; `len` counts the
/// live entries.
#[derive(Clone, Default)]
pub(super) struct Changes {
    /// Entries, appended; a block is allocated at its final size and never grows, so an
    /// address stays valid.
    blocks: Vec<Vec<u8>>,
    index: BTreeMap<u64, Address>,
    /// Entries of keys whose hashes collide (chosen keys; practically never otherwise).
    shared: Vec<Vec<Address>>,
    /// A direct-mapped cache in front of `index` for `find`: slot `hash mod its length`
    /// holds the live entry of some key of that hash (or `NONE`), so a lookup whose key
    /// is there reads one slot and the entry instead of descending the tree. A miss falls
    /// back to the tree, so whatever keys clients choose (they can make keys share a slot,
    /// or a hash: `key_hash` is not keyed), a lookup costs at most one slot more than the
    /// tree's O(log n): there are no probe runs to lengthen. Filled by `insert`/`repoint`
    /// (the latest key written wins the slot), kept exact by `remove`, dropped for good by
    /// `remove_buckets_below` (only a fold's frozen changes shrink so, and they take no
    /// writes). At most `CACHE_SLOTS_MAX` slots, two to four per live entry below that
    /// (8 bytes each, against a change's ~110).
    cache: Vec<Address>,
    len: usize,
    /// Entries appended, live or replaced.
    entries: usize,
}

/// One change, as a fold merges it: a key's latest value, or `None` when it was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Change<'a> {
    pub hash: u64,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

impl Changes {
    /// No changes.
    pub fn new() -> Changes {
        Changes::default()
    }

    /// Number of keys changed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries appended, including those a later change of their key replaced: what the
    /// blocks hold.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// The change of `key` (whose hash is `hash`): `Some(None)` when it was deleted, `None`
    /// when it did not change.
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<Option<&[u8]>> {
        let address = self.find(hash, key)?;
        Some(self.entry(address).1)
    }

    /// Records that `key` (whose hash is `hash`) is now `value` (`None`: deleted).
    pub fn set(&mut self, hash: u64, key: &[u8], value: Option<&[u8]>) {
        match self.find(hash, key) {
            Some(address) if self.overwrite(address, value) => {}
            Some(address) => {
                let moved = self.append(key, value);
                self.repoint(hash, address, moved);
            }
            None => {
                let address = self.append(key, value);
                self.insert(hash, key, address);
                self.len += 1;
            }
        }
    }

    /// Forgets the change of `key` (whose hash is `hash`), if any: the key is as the
    /// buckets hold it again. Its entry stays as garbage.
    pub fn remove(&mut self, hash: u64, key: &[u8]) {
        let Some(slot) = self.index.get(&hash).copied() else {
            return;
        };
        if slot & SHARED == 0 {
            if self.entry(slot).0 == key {
                self.index.remove(&hash);
                self.uncache(hash, slot);
                self.len -= 1;
            }
            return;
        }
        let list = &mut self.shared[(slot & !SHARED) as usize];
        if let Ok(at) = position_of(&self.blocks, list, key) {
            let address = list.remove(at);
            if list.is_empty() {
                self.index.remove(&hash);
            }
            self.uncache(hash, address);
            self.len -= 1;
        }
    }

    /// The changes in state order.
    pub fn iter(&self) -> impl Iterator<Item = Change<'_>> + '_ {
        self.changes_in(..)
    }

    /// The changes of keys in bucket `bucket` of 2^bits, in state order.
    pub fn in_bucket(&self, bucket: usize, bits: u32) -> impl Iterator<Item = Change<'_>> + '_ {
        self.changes_in(bucket_hashes(bucket, bits))
    }

    /// The hash of the first change in state order.
    pub fn first_hash(&self) -> Option<u64> {
        self.index.first_key_value().map(|(&hash, _)| hash)
    }

    /// Forgets the changes of buckets below `bucket` of 2^bits (a fold replaced them);
    /// once none is left, the blocks are freed.
    pub fn remove_buckets_below(&mut self, bucket: usize, bits: u32) {
        // Entries leave without their keys being read: the cache cannot tell which of its
        // slots they held, so it goes (a fold's frozen changes take no more writes).
        self.cache = Vec::new();
        while let Some(entry) = self.index.first_entry() {
            if super::layout::bucket_of(*entry.key(), bits) >= bucket {
                break;
            }
            let slot = entry.remove();
            self.len -= if slot & SHARED == 0 {
                1
            } else {
                std::mem::take(&mut self.shared[(slot & !SHARED) as usize]).len()
            };
        }
        if self.index.is_empty() {
            assert_eq!(self.len, 0, "every live change has a slot");
            *self = Changes::new();
        }
    }

    /// The changes whose hashes are in `hashes`, in state order.
    fn changes_in(&self, hashes: impl RangeBounds<u64>) -> impl Iterator<Item = Change<'_>> {
        self.index.range(hashes).flat_map(move |(&hash, slot)| {
            let addresses = if slot & SHARED == 0 {
                std::slice::from_ref(slot)
            } else {
                &self.shared[(slot & !SHARED) as usize][..]
            };
            addresses.iter().map(move |&address| {
                let (key, value) = self.entry(address);
                Change { hash, key, value }
            })
        })
    }

    /// The live entry of `key` (whose hash is `hash`).
    fn find(&self, hash: u64, key: &[u8]) -> Option<Address> {
        if let Some(&cached) = self.cache.get(cache_slot(hash, self.cache.len())) {
            // A live entry (the cache's invariant), so its key decides.
            if cached != NONE && self.entry(cached).0 == key {
                return Some(cached);
            }
        }
        let slot = *self.index.get(&hash)?;
        if slot & SHARED == 0 {
            return (self.entry(slot).0 == key).then_some(slot);
        }
        let list = &self.shared[(slot & !SHARED) as usize];
        let at = position_of(&self.blocks, list, key).ok()?;
        Some(list[at])
    }

    /// The key and value (`None`: deleted) of the entry at `address`.
    fn entry(&self, address: Address) -> (&[u8], Option<&[u8]>) {
        entry_in(&self.blocks, address)
    }

    /// Writes `value` over the value of the entry at `address` if it has the same length
    /// (or both are deletions); returns whether it did.
    fn overwrite(&mut self, address: Address, value: Option<&[u8]>) -> bool {
        let (key, old) = self.entry(address);
        if old.map(<[u8]>::len) != value.map(<[u8]>::len) {
            return false;
        }
        if let Some(value) = value {
            let (block, offset) = split(address);
            let at = offset + 4 + key.len() + 4;
            self.blocks[block][at..at + value.len()].copy_from_slice(value);
        }
        true
    }

    /// Appends an entry of `key` and `value`, in the last block if it fits, else in a new
    /// one (of `BLOCK_BYTES`, or the entry's size if larger).
    fn append(&mut self, key: &[u8], value: Option<&[u8]>) -> Address {
        let size = 4 + key.len() + 4 + value.map_or(0, <[u8]>::len);
        let fits = (self.blocks.last()).is_some_and(|b| b.capacity() - b.len() >= size);
        if !fits {
            assert!(self.blocks.len() < 1 << 31, "changes beyond 2^31 blocks");
            self.blocks.push(Vec::with_capacity(size.max(BLOCK_BYTES)));
        }
        let block_index = self.blocks.len() - 1;
        let block = &mut self.blocks[block_index];
        let offset = block.len();
        assert!(u32::try_from(offset).is_ok() && key.len() < DELETED as usize);
        block.extend_from_slice(&(key.len() as u32).to_le_bytes());
        block.extend_from_slice(key);
        match value {
            Some(value) => {
                assert!(value.len() < DELETED as usize, "a value of 4 GiB or more");
                block.extend_from_slice(&(value.len() as u32).to_le_bytes());
                block.extend_from_slice(value);
            }
            None => block.extend_from_slice(&DELETED.to_le_bytes()),
        }
        self.entries += 1;
        ((block_index as u64) << 32) | offset as u64
    }

    /// Puts the new entry at `address` in the index, for `key` (whose hash is `hash`),
    /// which has none.
    fn insert(&mut self, hash: u64, key: &[u8], address: Address) {
        self.cache_on_insert(hash, address);
        let Some(&slot) = self.index.get(&hash) else {
            self.index.insert(hash, address);
            return;
        };
        let list = if slot & SHARED == 0 {
            self.shared.push(vec![slot]);
            self.index
                .insert(hash, SHARED | (self.shared.len() - 1) as u64);
            self.shared.last_mut().expect("pushed")
        } else {
            &mut self.shared[(slot & !SHARED) as usize]
        };
        let at = position_of(&self.blocks, list, key).expect_err("a key without an entry");
        list.insert(at, address);
    }

    /// Makes the slot of the entry at `old` (of a key whose hash is `hash`) name the entry
    /// at `new` (of the same key) instead.
    fn repoint(&mut self, hash: u64, old: Address, new: Address) {
        // The only slot that can hold `old` is its hash's: it holds `new` now.
        if let Some(cached) = self.cache_slot_mut(hash) {
            *cached = new;
        }
        let slot = self.index.get_mut(&hash).expect("a live entry has a slot");
        if *slot & SHARED == 0 {
            assert_eq!(*slot, old);
            *slot = new;
        } else {
            let list = &mut self.shared[(*slot & !SHARED) as usize];
            let at = list.iter().position(|&a| a == old).expect("listed");
            list[at] = new;
        }
    }
}

impl Changes {
    /// Caches the new live entry at `address` of a key whose hash is `hash` (the caller
    /// is adding it to the index), growing the cache with the live entries first.
    fn cache_on_insert(&mut self, hash: u64, address: Address) {
        // Two to four slots per live entry: most keys then have a slot of their own.
        let want = ((self.len + 1).next_power_of_two() * 2).min(CACHE_SLOTS_MAX);
        if want >= CACHE_SLOTS_MIN && want > self.cache.len() && self.cache_in_use() {
            self.grow_cache(want);
        }
        if let Some(cached) = self.cache_slot_mut(hash) {
            *cached = address;
        }
    }

    /// Whether the cache is kept: not once `remove_buckets_below` dropped it (then the
    /// index has shrunk or emptied, and nothing is inserted any more; an empty changes
    /// made afresh starts with none and is allowed one).
    fn cache_in_use(&self) -> bool {
        !self.cache.is_empty() || self.index.len() < CACHE_SLOTS_MIN
    }

    /// A cache of `slots` slots holding the live entries of the index (the last of each
    /// slot in state order, and for keys sharing a hash, the first in key order).
    fn grow_cache(&mut self, slots: usize) {
        let mut cache = vec![NONE; slots];
        for (&hash, &slot) in &self.index {
            cache[cache_slot(hash, slots)] = if slot & SHARED == 0 {
                slot
            } else {
                self.shared[(slot & !SHARED) as usize][0]
            };
        }
        self.cache = cache;
    }

    /// The cache slot of `hash`; `None` without a cache.
    fn cache_slot_mut(&mut self, hash: u64) -> Option<&mut Address> {
        let at = cache_slot(hash, self.cache.len());
        self.cache.get_mut(at)
    }

    /// Forgets the cached entry at `address` of a key whose hash is `hash`, if cached:
    /// the entry is no longer live.
    fn uncache(&mut self, hash: u64, address: Address) {
        if let Some(cached) = self.cache_slot_mut(hash) {
            if *cached == address {
                *cached = NONE;
            }
        }
    }

    /// Checks the cache's invariant: every slot is `NONE` or the live entry of a key of
    /// a hash that maps there.
    #[cfg(test)]
    fn check_cache(&self) {
        for (at, &cached) in self.cache.iter().enumerate() {
            if cached == NONE {
                continue;
            }
            let (key, _) = self.entry(cached);
            let hash = *self
                .index
                .iter()
                .find(|(_, &slot)| {
                    slot == cached
                        || (slot & SHARED != 0
                            && self.shared[(slot & !SHARED) as usize].contains(&cached))
                })
                .map(|(hash, _)| hash)
                .unwrap_or_else(|| panic!("slot {at} caches a dead entry of {key:?}"));
            assert_eq!(cache_slot(hash, self.cache.len()), at);
        }
    }
}

/// The cache slot of `hash` among `slots` (a power of two; 0: no cache, any index is out
/// of range).
fn cache_slot(hash: u64, slots: usize) -> usize {
    if slots == 0 {
        return usize::MAX;
    }
    hash as usize & (slots - 1)
}

/// The block and offset of `address`.
fn split(address: Address) -> (usize, usize) {
    (
        (address >> 32) as usize,
        (address & u64::from(u32::MAX)) as usize,
    )
}

/// Where `key`'s entry is in `list` (entries of keys sharing a hash, in key order), or
/// where it would go.
fn position_of(blocks: &[Vec<u8>], list: &[Address], key: &[u8]) -> Result<usize, usize> {
    list.binary_search_by(|&address| entry_in(blocks, address).0.cmp(key))
}

/// The key and value (`None`: deleted) of the entry at `address` of `blocks`.
fn entry_in(blocks: &[Vec<u8>], address: Address) -> (&[u8], Option<&[u8]>) {
    let (block, offset) = split(address);
    let bytes = &blocks[block][offset..];
    let length = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let key_end = 4 + length(0) as usize;
    let value = match length(key_end) {
        DELETED => None,
        len => Some(&bytes[key_end + 4..key_end + 4 + len as usize]),
    };
    (&bytes[4..key_end], value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap as Model;

    /// Applies `ops` (hash, key, value: `Some(None)` deletes, `None` forgets) to changes
    /// and to a plain map of (hash, key), and checks that both read the same.
    fn check(ops: &[(u64, &str, Option<Option<&str>>)]) -> Changes {
        let mut changes = Changes::new();
        let mut model: Model<(u64, Vec<u8>), Option<Vec<u8>>> = Model::new();
        for &(hash, key, value) in ops {
            match value {
                Some(value) => {
                    changes.set(hash, key.as_bytes(), value.map(str::as_bytes));
                    model.insert((hash, key.into()), value.map(Into::into));
                }
                None => {
                    changes.remove(hash, key.as_bytes());
                    model.remove(&(hash, key.into()));
                }
            }
            let listed: Vec<_> = changes
                .iter()
                .map(|c| ((c.hash, c.key.to_vec()), c.value.map(<[u8]>::to_vec)))
                .collect();
            let expected: Vec<_> = model.clone().into_iter().collect();
            assert_eq!(listed, expected);
            assert_eq!(changes.len(), model.len());
            changes.check_cache();
            for ((hash, key), value) in &model {
                assert_eq!(changes.get(*hash, key), Some(value.as_deref()));
            }
        }
        changes
    }

    #[test]
    fn changes_read_as_a_map_of_hash_and_key() {
        let changes = check(&[
            (5, "a", Some(Some("1"))),
            (3, "b", Some(Some("22"))),
            (5, "a", Some(Some("9"))),   // same length: in place
            (5, "a", Some(Some("333"))), // another: appended
            (3, "b", Some(None)),
            (7, "c", Some(Some("x"))),
            (7, "c", None),
            (7, "c", None),
            (9, "d", Some(None)),
        ]);
        assert_eq!(changes.get(7, b"c"), None);
        assert_eq!(changes.get(5, b"b"), None, "another key of the same hash");
        assert_eq!(changes.entries(), 6);
    }

    #[test]
    fn keys_of_one_hash_are_kept_apart_in_key_order() {
        check(&[
            (1, "m", Some(Some("1"))),
            (1, "c", Some(Some("2"))),
            (1, "x", Some(None)),
            (0, "z", Some(Some("0"))),
            (1, "c", Some(Some("longer"))),
            (1, "m", None),
            (1, "a", Some(Some("3"))),
            (1, "x", None),
            (1, "c", None),
            (1, "a", None),
            (1, "q", Some(Some("4"))),
        ]);
    }

    #[test]
    fn buckets_and_their_removal() {
        let top = |bucket: u64| bucket << 62;
        let mut changes = Changes::new();
        for (bucket, key) in [(2, "c"), (0, "a"), (3, "d"), (0, "b"), (2, "e")] {
            changes.set(top(bucket), key.as_bytes(), Some(b"v"));
        }
        changes.set(top(0), b"b", None);
        let keys = |bucket| -> Vec<&[u8]> { changes.in_bucket(bucket, 2).map(|c| c.key).collect() };
        assert_eq!(keys(0), [b"a", b"b"]);
        assert!(keys(1).is_empty());
        assert_eq!(keys(2), [b"c", b"e"]);
        assert_eq!(keys(3), [b"d"]);
        changes.remove_buckets_below(3, 2);
        assert_eq!(changes.first_hash(), Some(top(3)));
        assert_eq!(changes.len(), 1);
        changes.remove_buckets_below(4, 2);
        assert!(changes.is_empty() && changes.blocks.is_empty());
    }

    #[test]
    fn the_cache_answers_as_the_index_does_through_growth_and_removal() {
        // Enough keys for the cache to grow twice; hashes shared by up to five keys (and
        // slots by many more), values of two lengths (in place and appended), deletions
        // and forgotten keys.
        let mut state = 0x1234_5678_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let keys: Vec<String> = (0..1500).map(|i| format!("key {i}")).collect();
        let mut ops = Vec::new();
        for _ in 0..6000 {
            let i = next(keys.len() as u64) as usize;
            let hash = (i as u64 % 300) << 55 | (i as u64 % 7);
            let value = match next(8) {
                0 => None,
                1 => Some(None),
                2 | 3 => Some(Some("a longer value")),
                _ => Some(Some("v")),
            };
            ops.push((hash, keys[i].as_str(), value));
        }
        let changes = check(&ops);
        assert!(changes.cache.len() >= CACHE_SLOTS_MIN, "the cache was made");
        let mut frozen = changes.clone();
        frozen.remove_buckets_below(1, 1);
        assert!(frozen.cache.is_empty());
        for &(hash, key, _) in &ops {
            let expected = match super::super::layout::bucket_of(hash, 1) {
                0 => None,
                _ => changes.get(hash, key.as_bytes()),
            };
            assert_eq!(frozen.get(hash, key.as_bytes()), expected);
        }
        assert!(!frozen.is_empty() && frozen.len() < changes.len());
    }

    #[test]
    fn large_entries_take_blocks_of_their_own() {
        let mut changes = Changes::new();
        let large = vec![7u8; BLOCK_BYTES * 2];
        changes.set(1, b"small", Some(b"v"));
        changes.set(2, b"large", Some(&large));
        changes.set(3, b"after", Some(b"w"));
        assert_eq!(changes.get(2, b"large"), Some(Some(&large[..])));
        assert_eq!(changes.get(3, b"after"), Some(Some(&b"w"[..])));
        assert_eq!(changes.blocks.len(), 3);
    }
}
