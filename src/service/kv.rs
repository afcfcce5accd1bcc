//! The key-value service: put, get, delete and compare-and-swap over byte strings.
//!
//! Operations and results have a small binary encoding ([`KvOp::encode`],
//! [`KvResult::encode`]) so that clients and the simulator's reference model share it.
//! Snapshots are pages over hash buckets of the map, rebuilt only where the map changed
//! ([`Kv`]).

use super::{Page, Snapshot, SnapshotError, StateMachine, PAGE_BYTES_TARGET};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;

/// A key-value operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put(Bytes, Bytes),
    /// Read `key`.
    Get(Bytes),
    /// Remove `key`.
    Delete(Bytes),
    /// Set `key` to `new` only if its value is `old` (`None`: only if absent).
    Cas(Bytes, Option<Bytes>, Bytes),
}

/// The result of a key-value operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// A put, delete or successful compare-and-swap.
    Ok,
    /// The value read.
    Value(Bytes),
    /// The key is absent.
    Nil,
    /// A compare-and-swap failed; the current value (`None`: absent).
    CasFail(Option<Bytes>),
    /// The operation could not be decoded.
    Invalid,
}

const PUT: u8 = 1;
const GET: u8 = 2;
const DELETE: u8 = 3;
const CAS: u8 = 4;

fn put_field(buf: &mut BytesMut, field: &[u8]) {
    buf.put_u32_le(field.len() as u32);
    buf.put_slice(field);
}

fn put_option(buf: &mut BytesMut, field: Option<&Bytes>) {
    match field {
        None => buf.put_u8(0),
        Some(value) => {
            buf.put_u8(1);
            put_field(buf, value);
        }
    }
}

fn take_field(buf: &mut Bytes) -> Option<Bytes> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = buf.get_u32_le() as usize;
    (buf.remaining() >= len).then(|| buf.split_to(len))
}

fn take_option(buf: &mut Bytes) -> Option<Option<Bytes>> {
    if !buf.has_remaining() {
        return None;
    }
    match buf.get_u8() {
        0 => Some(None),
        1 => take_field(buf).map(Some),
        _ => None,
    }
}

impl KvOp {
    /// The operation's bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            KvOp::Put(key, value) => {
                buf.put_u8(PUT);
                put_field(&mut buf, key);
                put_field(&mut buf, value);
            }
            KvOp::Get(key) => {
                buf.put_u8(GET);
                put_field(&mut buf, key);
            }
            KvOp::Delete(key) => {
                buf.put_u8(DELETE);
                put_field(&mut buf, key);
            }
            KvOp::Cas(key, old, new) => {
                buf.put_u8(CAS);
                put_field(&mut buf, key);
                put_option(&mut buf, old.as_ref());
                put_field(&mut buf, new);
            }
        }
        buf.freeze()
    }

    /// Decodes an operation; `None` if the bytes are not one (trailing bytes included).
    pub fn decode(bytes: &Bytes) -> Option<KvOp> {
        let mut buf = bytes.clone();
        if !buf.has_remaining() {
            return None;
        }
        let op = match buf.get_u8() {
            PUT => KvOp::Put(take_field(&mut buf)?, take_field(&mut buf)?),
            GET => KvOp::Get(take_field(&mut buf)?),
            DELETE => KvOp::Delete(take_field(&mut buf)?),
            CAS => KvOp::Cas(
                take_field(&mut buf)?,
                take_option(&mut buf)?,
                take_field(&mut buf)?,
            ),
            _ => return None,
        };
        (!buf.has_remaining()).then_some(op)
    }

    /// Whether the operation only reads.
    pub fn is_read_only(&self) -> bool {
        matches!(self, KvOp::Get(_))
    }
}

const OK: u8 = 1;
const VALUE: u8 = 2;
const NIL: u8 = 3;
const CAS_FAIL: u8 = 4;
const INVALID: u8 = 5;

impl KvResult {
    /// The result's bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            KvResult::Ok => buf.put_u8(OK),
            KvResult::Value(value) => {
                buf.put_u8(VALUE);
                put_field(&mut buf, value);
            }
            KvResult::Nil => buf.put_u8(NIL),
            KvResult::CasFail(current) => {
                buf.put_u8(CAS_FAIL);
                put_option(&mut buf, current.as_ref());
            }
            KvResult::Invalid => buf.put_u8(INVALID),
        }
        buf.freeze()
    }

    /// Decodes a result; `None` if the bytes are not one.
    pub fn decode(bytes: &Bytes) -> Option<KvResult> {
        let mut buf = bytes.clone();
        if !buf.has_remaining() {
            return None;
        }
        let result = match buf.get_u8() {
            OK => KvResult::Ok,
            VALUE => KvResult::Value(take_field(&mut buf)?),
            NIL => KvResult::Nil,
            CAS_FAIL => KvResult::CasFail(take_option(&mut buf)?),
            INVALID => KvResult::Invalid,
            _ => return None,
        };
        (!buf.has_remaining()).then_some(result)
    }
}

/// Bytes of a record's two length fields in a page.
const RECORD_HEADER_BYTES: usize = 4 + 4;
/// The average bucket size the layout aims for: a changed key costs the rebuild of about
/// this many bytes (four pages) at the next checkpoint.
const BUCKET_BYTES_TARGET: u64 = 4 * PAGE_BYTES_TARGET as u64;
/// At most 2^24 buckets (256 GiB of records at the target); past that buckets grow.
const BUCKET_BITS_MAX: u32 = 24;

/// An in-memory key-value map whose snapshots are pages, rebuilt only where it changed.
///
/// Paging (see `ARCHITECTURE.md`, "Snapshots in pages"): records are ordered by a
/// deterministic 64-bit hash of their key, then the key, and split into 2^bits *buckets*
/// by the hash's top bits, so that a bucket is a contiguous range of the map. `bits` is the
/// smallest that keeps the average bucket at most `BUCKET_BYTES_TARGET`, computed from the
/// state at each snapshot, so the layout is a function of the map alone, never of its
/// history: two replicas holding equal maps produce identical pages. A bucket is
/// serialised into pages of at most [`PAGE_BYTES_TARGET`] bytes (or one record, when a
/// record is larger), cut at record boundaries. A snapshot rebuilds and re-hashes only the
/// buckets changed since the previous one and shares the other pages as they were.
///
/// Keys and values are copied into storage of their own when applied, so a stored entry
/// never pins the receive buffer of the frame it came in.
#[derive(Clone)]
pub struct Kv {
    /// Records by (hash of key, key).
    map: BTreeMap<(u64, Bytes), Bytes>,
    /// Bytes of all records as pages hold them: the basis of the layout.
    record_bytes: u64,
    /// The layout of the last snapshot: 2^bits buckets.
    bucket_bits: u32,
    /// Per bucket, its pages in the last snapshot; `None` when it changed since (or no
    /// snapshot used this layout yet). `pages.len() == 1 << bucket_bits`.
    pages: Vec<Option<Vec<Page>>>,
}

impl Default for Kv {
    fn default() -> Kv {
        Kv {
            map: BTreeMap::new(),
            record_bytes: 0,
            bucket_bits: 0,
            pages: vec![None],
        }
    }
}

/// Two maps are equal when they hold the same keys and values (pages are a cache).
impl PartialEq for Kv {
    fn eq(&self, other: &Kv) -> bool {
        self.map == other.map
    }
}

impl Eq for Kv {}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.map.iter().map(|((_, key), value)| (key, value)))
            .finish()
    }
}

/// A deterministic hash of a key, the same on every platform and release (the page
/// layout depends on it): 8 bytes at a time, then murmur3's 64-bit finaliser. Not a
/// defence against chosen keys; those only make one bucket, and so one rebuild, larger.
fn key_hash(key: &[u8]) -> u64 {
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

/// The bucket of `hash` among 2^bits: its top bits, so buckets are ranges in map order.
fn bucket_of(hash: u64, bits: u32) -> usize {
    hash.checked_shr(64 - bits).unwrap_or(0) as usize
}

/// The bucket layout for `record_bytes` of records.
fn bucket_bits_for(record_bytes: u64) -> u32 {
    let buckets = record_bytes.div_ceil(BUCKET_BYTES_TARGET).max(1);
    buckets.next_power_of_two().ilog2().min(BUCKET_BITS_MAX)
}

fn record_len(key: &[u8], value: &[u8]) -> u64 {
    (RECORD_HEADER_BYTES + key.len() + value.len()) as u64
}

impl Kv {
    /// An empty map.
    pub fn new() -> Kv {
        Kv::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Executes one operation: the semantics every replica and the reference model share.
    pub fn execute(&mut self, op: KvOp) -> KvResult {
        match op {
            KvOp::Put(key, value) => {
                self.put(key_hash(&key), key, &value);
                KvResult::Ok
            }
            KvOp::Get(key) => self.read(&key),
            KvOp::Delete(key) => {
                let hash = key_hash(&key);
                if let Some(value) = self.map.remove(&(hash, key.clone())) {
                    self.record_bytes -= record_len(&key, &value);
                    self.changed(hash);
                }
                KvResult::Ok
            }
            KvOp::Cas(key, old, new) => {
                let hash = key_hash(&key);
                let current = self.map.get(&(hash, key.clone()));
                if current == old.as_ref() {
                    self.put(hash, key, &new);
                    KvResult::Ok
                } else {
                    KvResult::CasFail(current.cloned())
                }
            }
        }
    }

    /// Sets `key` (whose hash is `hash`) to a copy of `value`; the key is copied too when
    /// it is new.
    fn put(&mut self, hash: u64, key: Bytes, value: &Bytes) {
        let value = Bytes::copy_from_slice(value);
        let added = record_len(&key, &value);
        match self.map.get_mut(&(hash, key.clone())) {
            Some(stored) => {
                self.record_bytes -= record_len(&key, stored);
                *stored = value;
            }
            None => {
                self.map.insert((hash, Bytes::copy_from_slice(&key)), value);
            }
        }
        self.record_bytes += added;
        self.changed(hash);
    }

    /// Marks the bucket holding `hash` as changed since the last snapshot.
    fn changed(&mut self, hash: u64) {
        let bucket = bucket_of(hash, self.bucket_bits);
        self.pages[bucket] = None;
    }

    fn read(&self, key: &Bytes) -> KvResult {
        match self.map.get(&(key_hash(key), key.clone())) {
            Some(value) => KvResult::Value(value.clone()),
            None => KvResult::Nil,
        }
    }

    /// Serialises bucket `bucket` of 2^bits into pages: records in map order, a page cut
    /// before a record that would take it past `PAGE_BYTES_TARGET`. One allocation holds
    /// the whole bucket; its pages are slices of it.
    fn build_bucket(&self, bucket: usize, bits: u32) -> Vec<Page> {
        let first = (bucket as u64).checked_shl(64 - bits).unwrap_or(0);
        let records = self
            .map
            .range((first, Bytes::new())..)
            .take_while(|((hash, _), _)| bucket_of(*hash, bits) == bucket);
        let mut buf = BytesMut::new();
        let mut cuts = Vec::new();
        let mut page_start = 0;
        for ((_, key), value) in records {
            let len = record_len(key, value) as usize;
            if buf.len() > page_start && buf.len() - page_start + len > PAGE_BYTES_TARGET {
                cuts.push(buf.len());
                page_start = buf.len();
            }
            put_field(&mut buf, key);
            put_field(&mut buf, value);
        }
        if buf.len() > page_start {
            cuts.push(buf.len());
        }
        let mut bucket_bytes = buf.freeze();
        let mut taken = 0;
        cuts.into_iter()
            .map(|cut| {
                let page = bucket_bytes.split_to(cut - taken);
                taken = cut;
                Page::new(page)
            })
            .collect()
    }

    /// Parses the records of a snapshot into a map, refusing anything `snapshot` would
    /// not produce: empty pages, a truncated record, records out of order or repeated.
    fn parse_pages(snapshot: &Snapshot) -> Result<Kv, SnapshotError> {
        let mut kv = Kv::new();
        let mut last: Option<(u64, Bytes)> = None;
        for page in snapshot.pages() {
            if page.is_empty() {
                return Err(SnapshotError("kv snapshot has an empty page"));
            }
            let mut buf = page.bytes().clone();
            while buf.has_remaining() {
                let key = take_field(&mut buf).ok_or(SnapshotError("kv page key truncated"))?;
                let value = take_field(&mut buf).ok_or(SnapshotError("kv page value truncated"))?;
                let at = (key_hash(&key), key);
                if last.as_ref().is_some_and(|last| *last >= at) {
                    return Err(SnapshotError("kv records out of order"));
                }
                kv.record_bytes += record_len(&at.1, &value);
                last = Some(at.clone());
                let key = Bytes::copy_from_slice(&at.1);
                kv.map.insert((at.0, key), Bytes::copy_from_slice(&value));
            }
        }
        Ok(kv)
    }
}

impl StateMachine for Kv {
    fn name(&self) -> &'static str {
        "kv"
    }

    fn apply(&mut self, _op: u64, _timestamp: u64, operation: &Bytes) -> Bytes {
        match KvOp::decode(operation) {
            Some(op) => self.execute(op).encode(),
            None => KvResult::Invalid.encode(),
        }
    }

    fn query(&self, query: &Bytes) -> Bytes {
        match KvOp::decode(query) {
            Some(KvOp::Get(key)) => self.read(&key).encode(),
            _ => KvResult::Invalid.encode(),
        }
    }

    /// Rebuilds the buckets changed since the last snapshot (all of them when the layout
    /// grew or shrank) and shares the pages of the others.
    fn snapshot(&mut self) -> Snapshot {
        let bits = bucket_bits_for(self.record_bytes);
        if bits != self.bucket_bits {
            self.bucket_bits = bits;
            self.pages = vec![None; 1 << bits];
        }
        let mut pages = Vec::new();
        for bucket in 0..self.pages.len() {
            if self.pages[bucket].is_none() {
                self.pages[bucket] = Some(self.build_bucket(bucket, bits));
            }
            pages.extend_from_slice(self.pages[bucket].as_deref().expect("just built"));
        }
        Snapshot::new(pages)
    }

    /// Parses every page, then checks that the pages are exactly the ones this map's own
    /// snapshot has (same records, same cuts), so a restored replica's later checkpoints
    /// equal everyone else's.
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        let mut restored = Kv::parse_pages(snapshot)?;
        let canonical = restored.snapshot();
        let same_pages = canonical.pages().len() == snapshot.pages().len()
            && (canonical.pages().iter())
                .zip(snapshot.pages())
                .all(|(ours, theirs)| ours.digest() == theirs.digest());
        if !same_pages {
            return Err(SnapshotError(
                "kv pages are not laid out as kv lays them out",
            ));
        }
        *self = restored;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn operations_round_trip_and_execute() {
        let mut kv = Kv::new();
        let script = [
            (KvOp::Get(b("a")), KvResult::Nil),
            (KvOp::Cas(b("a"), None, b("1")), KvResult::Ok),
            (
                KvOp::Cas(b("a"), None, b("2")),
                KvResult::CasFail(Some(b("1"))),
            ),
            (KvOp::Put(b("a"), b("3")), KvResult::Ok),
            (KvOp::Get(b("a")), KvResult::Value(b("3"))),
            (KvOp::Cas(b("a"), Some(b("3")), b("4")), KvResult::Ok),
            (KvOp::Delete(b("a")), KvResult::Ok),
            (
                KvOp::Cas(b("a"), Some(b("4")), b("5")),
                KvResult::CasFail(None),
            ),
        ];
        for (op, expected) in script {
            assert_eq!(KvOp::decode(&op.encode()), Some(op.clone()));
            let result = kv.apply(0, 0, &op.encode());
            assert_eq!(KvResult::decode(&result), Some(expected));
        }
    }

    /// A map of `count` keys with 100-byte values: about `count * 120` bytes of records.
    fn filled(count: u32) -> Kv {
        let mut kv = Kv::new();
        for i in 0..count {
            kv.execute(KvOp::Put(
                b(&format!("key {i}")),
                Bytes::from(vec![i as u8; 100]),
            ));
        }
        kv
    }

    /// The pages of `after` that are the very same allocation as in `before` (shared, not
    /// rebuilt), and the ones that are new.
    fn shared_and_rebuilt(before: &Snapshot, after: &Snapshot) -> (usize, usize) {
        let old: std::collections::HashSet<*const u8> =
            before.pages().iter().map(|p| p.bytes().as_ptr()).collect();
        let shared = (after.pages().iter())
            .filter(|p| old.contains(&p.bytes().as_ptr()))
            .count();
        (shared, after.pages().len() - shared)
    }

    #[test]
    fn snapshot_restores_the_same_state_and_digests() {
        let mut kv = filled(2000);
        let snapshot = kv.snapshot();
        assert!(
            snapshot.pages().len() > 16,
            "{} pages",
            snapshot.pages().len()
        );
        let mut other = Kv::new();
        other.restore(&snapshot).unwrap();
        assert_eq!(kv, other);
        assert_eq!(other.snapshot(), snapshot);
        assert_eq!(other.record_bytes, kv.record_bytes);
        for key in ["key 0", "key 1999", "key 2000"] {
            assert_eq!(other.read(&b(key)), kv.read(&b(key)));
        }
        // Small and empty maps too.
        for count in [0, 1, 3] {
            let snapshot = filled(count).snapshot();
            let mut other = filled(7);
            other.restore(&snapshot).unwrap();
            assert_eq!(other, filled(count));
            assert_eq!(other.snapshot(), snapshot);
        }
    }

    #[test]
    fn a_snapshot_rebuilds_only_the_changed_buckets() {
        let mut kv = filled(2000);
        let first = kv.snapshot();
        let buckets = 1 << kv.bucket_bits;
        assert!(buckets >= 8, "{buckets} buckets");
        // Nothing changed: every page is shared.
        let again = kv.snapshot();
        assert_eq!(shared_and_rebuilt(&first, &again), (first.pages().len(), 0));
        // One key changed: only its bucket's pages are rebuilt (same count, same layout).
        kv.execute(KvOp::Put(b("key 7"), Bytes::from(vec![0xee; 100])));
        let hash = key_hash(b"key 7");
        let bucket_pages = kv.pages[bucket_of(hash, kv.bucket_bits)].clone();
        assert!(bucket_pages.is_none(), "the bucket is marked changed");
        let second = kv.snapshot();
        let (shared, rebuilt) = shared_and_rebuilt(&again, &second);
        let rebuilt_bucket = kv.pages[bucket_of(hash, kv.bucket_bits)].as_ref().unwrap();
        assert_eq!(rebuilt, rebuilt_bucket.len());
        assert!(
            rebuilt <= first.pages().len() / 4,
            "{rebuilt} of {}",
            first.pages().len()
        );
        assert_eq!(shared + rebuilt, second.pages().len());
        // Reads, failed compare-and-swaps and deletes of absent keys change nothing.
        kv.execute(KvOp::Get(b("key 8")));
        kv.execute(KvOp::Cas(b("key 8"), None, b("x")));
        kv.execute(KvOp::Delete(b("absent")));
        assert_eq!(shared_and_rebuilt(&second, &kv.snapshot()).1, 0);
        // Every page within the target size.
        assert!(second.pages().iter().all(|p| p.len() <= PAGE_BYTES_TARGET));
    }

    #[test]
    fn replicas_applying_the_same_ops_take_the_same_snapshots() {
        // Replica a snapshots often (its layout changes as it grows), b only at the end,
        // c gets there in another order and with a detour: same map, same pages.
        let ops: Vec<KvOp> = (0..3000u32)
            .map(|i| match i % 7 {
                3 => KvOp::Delete(b(&format!("key {}", i / 2))),
                5 => KvOp::Cas(b(&format!("key {}", i / 3)), None, b("new")),
                _ => KvOp::Put(
                    b(&format!("key {}", i % 1500)),
                    Bytes::from(vec![i as u8; 60]),
                ),
            })
            .collect();
        let (mut a, mut b_) = (Kv::new(), Kv::new());
        for (i, op) in ops.iter().enumerate() {
            a.execute(op.clone());
            b_.execute(op.clone());
            if i % 97 == 0 {
                a.snapshot();
            }
        }
        let mut c = Kv::new();
        for op in ops.iter().rev() {
            if let KvOp::Put(key, _) = op {
                c.execute(KvOp::Put(key.clone(), b("detour")));
            }
        }
        c.snapshot();
        c.restore(&a.snapshot()).unwrap();
        assert_eq!(a.snapshot(), b_.snapshot());
        assert_eq!(c.snapshot(), b_.snapshot());
        // A map emptied again lays out like an empty map.
        for op in ops.iter() {
            if let KvOp::Put(key, _) = op {
                a.execute(KvOp::Delete(key.clone()));
            }
        }
        a.execute(KvOp::Delete(b("key 0")));
        let remaining: Vec<_> = a.map.keys().cloned().collect();
        for (_, key) in remaining {
            a.execute(KvOp::Delete(key));
        }
        assert_eq!(a.snapshot(), Kv::new().snapshot());
        assert!(a.snapshot().pages().is_empty());
    }

    #[test]
    fn corrupt_snapshots_are_refused_and_change_nothing() {
        let mut kv = filled(300);
        let snapshot = kv.snapshot();
        let page = |bytes: &[u8]| Page::new(Bytes::copy_from_slice(bytes));
        let first = snapshot.pages()[0].bytes().clone();
        let mut reversed = snapshot.pages().to_vec();
        reversed.reverse();
        let mut joined = BytesMut::new();
        snapshot.pages()[..2]
            .iter()
            .for_each(|p| joined.extend_from_slice(p.bytes()));
        let mut extra = snapshot.pages().to_vec();
        extra.push(snapshot.pages()[0].clone());
        let cases = [
            (vec![page(b"garbage")], "kv page key truncated"),
            (
                vec![page(&first[..first.len() - 1])],
                "kv page value truncated",
            ),
            (vec![page(&[1, 0, 0])], "kv page key truncated"),
            (vec![page(b"")], "kv snapshot has an empty page"),
            (reversed, "kv records out of order"),
            (extra, "kv records out of order"),
            (
                vec![page(&joined)],
                "kv pages are not laid out as kv lays them out",
            ),
            (
                snapshot.pages()[1..].to_vec(),
                "kv pages are not laid out as kv lays them out",
            ),
        ];
        let mut other = filled(5);
        for (pages, reason) in cases {
            assert_eq!(
                other.restore(&Snapshot::new(pages)),
                Err(SnapshotError(reason))
            );
            assert_eq!(other, filled(5), "a refused snapshot changes nothing");
        }
    }

    #[test]
    fn stored_entries_do_not_pin_the_operation_buffer() {
        let mut kv = Kv::new();
        let frame = Bytes::from(vec![b'k'; 64]);
        kv.execute(KvOp::Put(frame.slice(0..4), frame.slice(4..8)));
        let ((_, key), value) = kv.map.iter().next().unwrap();
        let inside = |slice: &Bytes| frame.as_ptr_range().contains(&slice.as_ptr());
        assert!(!inside(key) && !inside(value));
    }

    #[test]
    fn malformed_operations_are_invalid_not_panics() {
        let mut kv = Kv::new();
        let cases: [&[u8]; 4] = [b"", b"\x01", b"\x09abc", b"\x02\xff\xff\xff\xff"];
        for bytes in cases.map(Bytes::from_static) {
            assert_eq!(
                KvResult::decode(&kv.apply(0, 0, &bytes)),
                Some(KvResult::Invalid)
            );
        }
    }
}
