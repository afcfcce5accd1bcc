//! The kv service's behaviour: operations, snapshots and restores, the layout's
//! determinism, and what the state keeps alive.

use super::layout::record_len;
use super::*;
use crate::service::{Page, PAGE_BYTES_TARGET};
use bytes::BytesMut;
use std::collections::{BTreeMap, HashSet};

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
    let old: HashSet<*const u8> = before.pages().iter().map(|p| p.bytes().as_ptr()).collect();
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
    let buckets = kv.buckets.len();
    assert!(buckets >= 8, "{buckets} buckets");
    // Nothing changed: every page is shared.
    let again = kv.snapshot();
    assert_eq!(shared_and_rebuilt(&first, &again), (first.pages().len(), 0));
    // One key changed: only its bucket's pages are rebuilt (same count, same layout),
    // and every other page keeps its digest.
    kv.execute(KvOp::Put(b("key 7"), Bytes::from(vec![0xee; 100])));
    assert_eq!(kv.changes.len(), 1, "the change waits for the next fold");
    let second = kv.snapshot();
    assert!(kv.changes.is_empty());
    let (shared, rebuilt) = shared_and_rebuilt(&again, &second);
    let bucket = bucket_of(key_hash(b"key 7"), kv.bucket_bits);
    assert_eq!(rebuilt, kv.buckets[bucket].hashed_pages().unwrap().len());
    assert!(
        rebuilt <= first.pages().len() / 4,
        "{rebuilt} of {}",
        first.pages().len()
    );
    assert_eq!(shared + rebuilt, second.pages().len());
    let digests = |s: &Snapshot| s.pages().iter().map(Page::digest).collect::<HashSet<_>>();
    // The value kept its size, so the cuts did not move: of the rebuilt pages, only
    // the one holding the key has a new digest (a page-diff transfer moves one page).
    assert_eq!(digests(&again).difference(&digests(&second)).count(), 1);
    // Reads, failed compare-and-swaps and deletes of absent keys change nothing.
    kv.execute(KvOp::Get(b("key 8")));
    kv.execute(KvOp::Cas(b("key 8"), None, b("x")));
    kv.execute(KvOp::Delete(b("absent")));
    assert!(kv.changes.is_empty());
    assert_eq!(shared_and_rebuilt(&second, &kv.snapshot()).1, 0);
    // A key put and deleted again between snapshots leaves nothing to rebuild.
    kv.execute(KvOp::Put(b("new"), b("1")));
    kv.execute(KvOp::Delete(b("new")));
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
    let remaining: Vec<Bytes> = a.records().map(|r| Bytes::copy_from_slice(r.key)).collect();
    for key in remaining {
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
    // The operation arrives as a slice of a larger receive buffer, as on a replica.
    let mut frame = BytesMut::from(&[0u8; 64][..]);
    frame.extend_from_slice(&KvOp::Put(b("key"), b("value")).encode());
    let frame = frame.freeze();
    let mut kv = Kv::new();
    kv.apply(1, 0, &frame.slice(64..));
    // No slice of the buffer survives the operation: the state owns its bytes, among
    // the changes and, after the fold, in the bucket.
    assert!(frame.is_unique(), "the state keeps a slice of the frame");
    let value = kv.get(key_hash(b"key"), &b("key")).unwrap();
    assert!(!frame.as_ptr_range().contains(&value.as_ptr()));
    kv.snapshot();
    assert!(frame.is_unique());
    let value = kv.get(key_hash(b"key"), &b("key")).unwrap();
    assert!(kv.buckets[0].hashed_pages().unwrap()[0]
        .bytes()
        .as_ptr_range()
        .contains(&value.as_ptr()));
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

#[test]
fn queries_other_than_gets_are_invalid_not_panics() {
    let mut kv = Kv::new();
    kv.execute(KvOp::Put(b("k"), b("v")));
    let get = KvOp::Get(b("k")).encode();
    let cases: Vec<Bytes> = vec![
        Bytes::new(),
        Bytes::from_static(b"\x02"),
        Bytes::from_static(b"\x02\x01\x00\x00"),
        Bytes::from_static(b"\x02\xff\xff\xff\xff"),
        Bytes::from_static(b"\x02\x02\x00\x00\x00k"),
        Bytes::from([&get[..], b"x"].concat()),
        get.slice(..get.len() - 1),
        KvOp::Put(b("k"), b("v")).encode(),
        KvOp::Delete(b("k")).encode(),
    ];
    for bytes in cases {
        assert_eq!(kv.query(&bytes), KvResult::Invalid.encode(), "{bytes:?}");
    }
    assert_eq!(kv.query(&get), KvResult::Value(b("v")).encode());
    assert_eq!(
        kv.query(&KvOp::Get(b("absent")).encode()),
        KvResult::Nil.encode()
    );
}

/// A small deterministic generator (splitmix64), so that every run checks the same ops.
struct Prng(u64);

impl Prng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// `count` random operations over `keys` keys: mostly puts (values of 0 to 199 bytes),
/// some deletes, compare-and-swaps that succeed or fail, and gets.
fn random_ops(seed: u64, count: usize, keys: u64) -> Vec<KvOp> {
    let mut prng = Prng(seed);
    (0..count)
        .map(|_| {
            let key = b(&format!("key {}", prng.below(keys)));
            let value = Bytes::from(vec![prng.below(256) as u8; prng.below(200) as usize]);
            match prng.below(10) {
                0 | 1 => KvOp::Delete(key),
                2 => KvOp::Cas(key, None, value),
                3 => KvOp::Cas(key, Some(b("never")), value),
                4 => KvOp::Get(key),
                _ => KvOp::Put(key, value),
            }
        })
        .collect()
}

/// The semantics of `op` on a plain ordered map: the model the compact layout must match.
fn model_execute(model: &mut BTreeMap<Bytes, Bytes>, op: KvOp) -> KvResult {
    match op {
        KvOp::Put(key, value) => {
            model.insert(key, value);
            KvResult::Ok
        }
        KvOp::Get(key) => model
            .get(&key)
            .cloned()
            .map_or(KvResult::Nil, KvResult::Value),
        KvOp::Delete(key) => {
            model.remove(&key);
            KvResult::Ok
        }
        KvOp::Cas(key, old, new) => {
            let current = model.get(&key).cloned();
            if current == old {
                model.insert(key, new);
                KvResult::Ok
            } else {
                KvResult::CasFail(current)
            }
        }
    }
}

/// Applies `ops` to a map and to the model, comparing every result; every
/// `snapshot_every` ops (0: never) takes a snapshot and checks that a fresh map restored
/// from it equals the map. Ends comparing contents, key count and record bytes.
fn check(ops: &[KvOp], snapshot_every: usize) -> Kv {
    let mut kv = Kv::new();
    let mut model = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let expected = model_execute(&mut model, op.clone());
        if let KvOp::Get(_) = op {
            // A query answers with the bytes of what executing the get answers.
            assert_eq!(
                kv.query(&op.encode()),
                expected.encode(),
                "query {i}: {op:?}"
            );
        }
        assert_eq!(kv.execute(op.clone()), expected, "op {i}: {op:?}");
        if snapshot_every > 0 && i % snapshot_every == 0 {
            let mut restored = Kv::new();
            restored.restore(&kv.snapshot()).unwrap();
            assert_eq!(restored, kv, "restored after op {i}");
        }
    }
    let mut contents: Vec<(&[u8], &[u8])> = kv.records().map(|r| (r.key, r.value)).collect();
    contents.sort();
    let expected: Vec<(&[u8], &[u8])> = model.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    assert_eq!(contents, expected);
    assert_eq!(kv.len(), model.len());
    let record_bytes: u64 = model.iter().map(|(k, v)| record_len(k, v)).sum();
    assert_eq!(kv.record_bytes, record_bytes);
    kv
}

#[test]
fn the_state_matches_a_plain_map_through_folds_and_snapshots() {
    // More changes than a fold waits for: the buckets are rewritten without a snapshot.
    let ops = random_ops(1, 3 * CHANGES_MIN, 40_000);
    let kv = check(&ops, 0);
    assert!(
        kv.changes.len() <= CHANGES_MIN,
        "{} changes",
        kv.changes.len()
    );
    assert!(
        kv.buckets.len() > 1,
        "folded into {} buckets",
        kv.buckets.len()
    );
    // Snapshots (and so folds) at all sorts of moments, on a state that grows, shrinks
    // and changes layout on the way.
    check(&random_ops(2, 20_000, 3000), 997);
    check(&random_ops(3, 3000, 20), 7);
}

#[test]
fn replicas_take_identical_snapshots_whatever_their_fold_and_snapshot_times() {
    let ops = random_ops(4, 2 * CHANGES_MIN + 5000, 30_000);
    // a snapshots often, b once at the end, c restores a's snapshot halfway and goes on.
    let (mut a, mut b_, mut c) = (Kv::new(), Kv::new(), Kv::new());
    for (i, op) in ops.iter().enumerate() {
        a.execute(op.clone());
        b_.execute(op.clone());
        if i % 501 == 0 {
            a.snapshot();
        }
        if i == ops.len() / 2 {
            c.restore(&a.snapshot()).unwrap();
        }
        if i > ops.len() / 2 {
            c.execute(op.clone());
        }
    }
    let snapshot = a.snapshot();
    assert!(
        snapshot.pages().len() > 100,
        "{} pages",
        snapshot.pages().len()
    );
    assert_eq!(b_.snapshot(), snapshot);
    assert_eq!(c.snapshot(), snapshot);
}

#[test]
fn a_map_costs_about_what_it_holds() {
    // Issue 12's entries: 16-byte keys and 62-byte values, 78 bytes of data each.
    let mut kv = Kv::new();
    let keys = 100_000u64;
    for i in 0..keys {
        kv.apply(
            i,
            0,
            &KvOp::Put(b(&format!("k{i:015}")), b(&format!("v{i:061}"))).encode(),
        );
    }
    let snapshot = kv.snapshot();
    assert!(kv.changes.is_empty());
    let data = keys as usize * 78;
    // 8 bytes of lengths and 8 of index per record, 64 bytes of handle per 4 KiB page.
    let held = kv.bucket_heap_bytes();
    assert!(
        held <= data * 5 / 4,
        "{held} bytes held for {data} bytes of data"
    );
    // The snapshot holds no bytes of its own: a bucket's pages are consecutive slices of
    // its one buffer.
    for bucket in kv.buckets.iter() {
        let pages = bucket.hashed_pages().unwrap().to_vec();
        let joined: usize = pages.iter().map(Page::len).sum();
        assert_eq!(joined, bucket.bytes());
        let consecutive = |w: &[Page]| w[0].bytes().as_ptr_range().end == w[1].bytes().as_ptr();
        assert!(pages.windows(2).all(consecutive));
    }
    assert_eq!(snapshot.bytes(), kv.record_bytes as usize);
}

#[test]
fn a_restored_map_keeps_nothing_of_the_message_its_pages_came_in() {
    let snapshot = filled(500).snapshot();
    // The pages as a decoder hands them over: slices of one received buffer.
    let mut frame = BytesMut::new();
    snapshot
        .pages()
        .iter()
        .for_each(|p| frame.extend_from_slice(p.bytes()));
    let frame = frame.freeze();
    let mut at = 0;
    let received: Vec<Page> = (snapshot.pages().iter())
        .map(|page| {
            at += page.len();
            Page::verified(frame.slice(at - page.len()..at), page.digest()).unwrap()
        })
        .collect();
    let received = Snapshot::new(received);
    let mut kv = Kv::new();
    kv.restore(&received).unwrap();
    assert_eq!(kv.snapshot(), snapshot);
    drop(received);
    assert!(
        frame.is_unique(),
        "the restored state keeps a slice of the message"
    );
}

#[test]
fn a_deferred_snapshot_is_the_state_when_it_was_asked_for() {
    // a builds its snapshots in the background, on a thread, while it executes the ops
    // after them; b takes the same snapshots at once. Every snapshot must be equal, every
    // answer the model's, and a restore of a deferred snapshot the state at its op.
    let ops = random_ops(5, 3 * CHANGES_MIN, 20_000);
    let (mut a, mut b_) = (Kv::new(), Kv::new());
    let mut model = BTreeMap::new();
    let mut builds: Vec<(usize, Deferred<Snapshot>, Kv, std::thread::JoinHandle<()>)> = vec![];
    for (i, op) in ops.iter().enumerate() {
        let expected = model_execute(&mut model, op.clone());
        assert_eq!(a.execute(op.clone()), expected, "op {i}: {op:?}");
        assert_eq!(b_.execute(op.clone()), expected, "op {i}: {op:?}");
        if i % 1777 == 0 {
            let build = a.snapshot_deferred();
            let worker = build.downgrade();
            // Sometimes the worker gets to it, sometimes the next snapshot runs it first.
            let thread = std::thread::spawn(move || {
                if i % 3 != 0 {
                    worker.run();
                }
            });
            builds.push((i, build, b_.clone(), thread));
            // b's snapshot now: what a's build must produce.
        }
    }
    assert!(a.folding.is_some() || builds.is_empty());
    assert_eq!(a, b_, "the maps hold the same state");
    for (i, build, mut then, thread) in builds {
        thread.join().unwrap();
        let expected = then.snapshot();
        assert_eq!(build.run(), &expected, "snapshot asked for after op {i}");
        let mut restored = Kv::new();
        restored.restore(build.run()).unwrap();
        assert_eq!(restored, then, "restored the snapshot of op {i}");
    }
    // The last fold is taken at the next operation, and the snapshots agree again.
    a.execute(KvOp::Get(b("key 1")));
    assert!(a.folding.is_none());
    assert_eq!(a.snapshot(), b_.snapshot());
}

#[test]
fn a_restore_drops_a_fold_in_flight() {
    let mut kv = filled(3000);
    kv.execute(KvOp::Put(b("changed"), b("1")));
    let build = kv.snapshot_deferred();
    let other = filled(10);
    kv.restore(&other.clone().snapshot()).unwrap();
    assert!(kv.folding.is_none());
    assert_eq!(kv, other);
    // The dropped fold still builds the state it was asked for, for whoever holds it.
    let mut expected = filled(3000);
    expected.execute(KvOp::Put(b("changed"), b("1")));
    assert_eq!(build.run(), &expected.snapshot());
}

#[test]
fn a_map_whose_snapshots_are_deferred_folds_only_in_them() {
    // A replica's map: its changes wait for the next checkpoint's fold (off the event
    // loop) however many they are, where a map without checkpoints folds them here.
    let mut kv = Kv::new();
    kv.snapshot_deferred().run();
    let ops = random_ops(6, 3 * CHANGES_MIN, 1_000_000);
    ops.iter().for_each(|op| drop(kv.execute(op.clone())));
    assert!(
        kv.changes.len() > CHANGES_MIN,
        "{} changes",
        kv.changes.len()
    );
    let mut plain = Kv::new();
    ops.iter().for_each(|op| drop(plain.execute(op.clone())));
    assert!(plain.changes.len() < kv.changes.len(), "folded here");
    assert_eq!(kv, plain);
    assert_eq!(kv.snapshot_deferred().run(), &plain.snapshot());
}

#[test]
fn tiny_pages_cut_a_small_state_into_many() {
    let ops = random_ops(7, 2000, 300);
    let (mut tiny, mut other_tiny, mut plain) =
        (Kv::with_page_bytes(64), Kv::with_page_bytes(64), Kv::new());
    for op in &ops {
        tiny.execute(op.clone());
        plain.execute(op.clone());
    }
    let snapshot = tiny.snapshot();
    assert!(
        snapshot.pages().len() > 20 * plain.snapshot().pages().len().max(1),
        "{} tiny pages",
        snapshot.pages().len()
    );
    // A page holds records up to the size, or one larger record.
    let records = |page: &Page| restore::page_records(page).unwrap();
    assert!(snapshot
        .pages()
        .iter()
        .all(|p| p.len() <= 64 || records(p) == 1));
    // Restored with the same page size it is the same map with the same pages; a map of
    // another page size refuses it.
    other_tiny.restore(&snapshot).unwrap();
    assert_eq!(other_tiny, tiny);
    assert_eq!(other_tiny.snapshot(), snapshot);
    assert!(Kv::new().restore(&snapshot).is_err());
    assert!(Kv::with_page_bytes(64).restore(&plain.snapshot()).is_err() || plain.len() < 2);
    // Deferred, too.
    tiny.execute(KvOp::Put(b("key 1"), b("changed")));
    plain.execute(KvOp::Put(b("key 1"), b("changed")));
    let deferred = tiny.snapshot_deferred().run().clone();
    other_tiny.restore(&deferred).unwrap();
    assert_eq!(other_tiny, plain);
}

/// `pages` mangled in one of the ways a faulty or malicious sender could hash and send:
/// its digests are right, its layout or contents are not what kv would produce (or are,
/// by chance: a changed value is just another state). Returns what was done.
fn mangle(pages: &mut Vec<Page>, prng: &mut Prng) -> &'static str {
    let page = |bytes: &[u8]| Page::new(Bytes::copy_from_slice(bytes));
    let i = prng.below(pages.len() as u64) as usize;
    let bytes = pages[i].bytes().clone();
    let at = prng.below(bytes.len() as u64 + 1) as usize;
    match prng.below(9) {
        0 => {
            let mut flipped = bytes.to_vec();
            flipped[at.min(bytes.len() - 1)] ^= 1 << prng.below(8);
            pages[i] = page(&flipped);
            "flip a bit"
        }
        1 => {
            pages[i] = page(&bytes[..at]);
            "truncate a page"
        }
        2 => {
            pages.splice(i..=i, [page(&bytes[..at]), page(&bytes[at..])]);
            "split a page"
        }
        3 if i + 1 < pages.len() => {
            let joined = [&bytes[..], pages[i + 1].bytes()].concat();
            pages.splice(i..i + 2, [page(&joined)]);
            "join two pages"
        }
        4 => {
            pages.remove(i);
            "drop a page"
        }
        5 => {
            pages.insert(i, pages[i].clone());
            "repeat a page"
        }
        6 if i + 1 < pages.len() => {
            pages.swap(i, i + 1);
            "swap two pages"
        }
        7 => {
            // A length field (or any 4 bytes) claiming far more than the page holds.
            let mut long = bytes.to_vec();
            let at = at.min(long.len().saturating_sub(4));
            let end = long.len().min(at + 4);
            long[at..end].copy_from_slice(&u32::MAX.to_le_bytes()[..end - at]);
            pages[i] = page(&long);
            "a huge length"
        }
        _ => {
            // The same bytes, cut into pages at random places.
            let all: Vec<u8> = pages.iter().flat_map(|p| p.bytes().to_vec()).collect();
            let mut cut = Vec::new();
            let mut start = 0;
            while start < all.len() {
                let end = (start + 1 + prng.below(150) as usize).min(all.len());
                cut.push(page(&all[start..end]));
                start = end;
            }
            *pages = cut;
            "cut the bytes elsewhere"
        }
    }
}

#[test]
fn a_restore_accepts_only_the_pages_kv_would_take_of_that_state() {
    // Tiny pages: many buckets and pages, records larger than a page among them.
    let mut source = Kv::with_page_bytes(64);
    for op in random_ops(11, 3000, 400) {
        source.execute(op);
    }
    let snapshot = source.snapshot();
    let before = Kv::with_page_bytes(64);
    let mut prng = Prng(5);
    let mut refused = 0;
    for round in 0..3000 {
        let mut pages = snapshot.pages().to_vec();
        let what = mangle(&mut pages, &mut prng);
        let received = Snapshot::new(pages);
        let mut kv = before.clone();
        let restored = kv.restore(&received);
        // The same outcome when prepared apart and installed (`prepare_restore`).
        let mut prepared_apart = before.clone();
        let prepared = prepared_apart
            .prepare_restore(&received)
            .expect("kv prepares");
        assert_eq!(
            prepared_apart.restore_prepared(&received, prepared.run()),
            restored,
            "round {round}: {what}: prepared apart"
        );
        assert_eq!(prepared_apart, kv, "round {round}: {what}: prepared apart");
        match restored {
            Err(_) => {
                refused += 1;
                assert_eq!(kv, before, "round {round}: {what}: refused, yet changed");
            }
            Ok(()) => {
                // Accepted: exactly the pages of the state it holds, built again from its
                // records and hashed, as any other replica would take them.
                let mut rebuilt = Kv::with_page_bytes(64);
                for record in kv.records() {
                    let (key, value) = (record.key, record.value);
                    rebuilt.execute(KvOp::Put(
                        Bytes::copy_from_slice(key),
                        Bytes::copy_from_slice(value),
                    ));
                }
                assert_eq!(
                    rebuilt.snapshot(),
                    received,
                    "round {round}: {what}: accepted"
                );
                assert_eq!(kv.snapshot(), received, "round {round}: {what}: kept");
                assert_eq!(
                    (kv.len(), kv.record_bytes),
                    (rebuilt.len(), rebuilt.record_bytes)
                );
            }
        }
    }
    assert!(
        refused > 2000,
        "only {refused} of 3000 mangled snapshots refused"
    );
}

/// A restore prepared on another thread while the map goes on executing installs the
/// snapshot's state, not the one it went on to; a preparation that is not kv's, or not
/// for its page size, or taken already, is not used: the snapshot is restored as usual.
#[test]
fn a_restore_prepared_apart_installs_the_snapshots_state() {
    let source = filled(2000);
    let snapshot = source.clone().snapshot();
    let mut kv = filled(10);
    let prepared = kv.prepare_restore(&snapshot).expect("kv prepares");
    let worker = prepared.downgrade();
    let thread = std::thread::spawn(move || worker.run());
    for i in 0..500 {
        kv.execute(KvOp::Put(b(&format!("meanwhile {i}")), b("x")));
    }
    assert!(thread.join().unwrap());
    kv.restore_prepared(&snapshot, prepared.run()).unwrap();
    assert_eq!(kv, source);
    assert_eq!(kv.snapshot(), snapshot);

    let foreign = PreparedRestore::new(7_u8);
    let mut kv = filled(10);
    kv.restore_prepared(&snapshot, &foreign).unwrap();
    assert_eq!(
        kv, source,
        "another service's preparation: restored as usual"
    );

    let other_size = Kv::with_page_bytes(64).prepare_restore(&snapshot).unwrap();
    let mut kv = filled(10);
    kv.restore_prepared(&snapshot, other_size.run()).unwrap();
    assert_eq!(kv, source, "prepared for other pages: restored as usual");

    let mut kv = filled(10);
    kv.restore_prepared(&snapshot, prepared.run()).unwrap();
    assert_eq!(kv, source, "taken already: restored as usual");
}

/// Runs `kv`'s deferred snapshot on another thread while this one reads every key of
/// `model` (the state, changes included) through the fold, again and again until the fold
/// is done, and once more after: every read must be the model's, wherever the fold got.
fn check_reads_during_a_fold(mut kv: Kv, model: &BTreeMap<Bytes, Bytes>, keys: &[Bytes]) {
    let build = kv.snapshot_deferred();
    let worker = build.downgrade();
    let thread = std::thread::spawn(move || worker.run());
    let mut rounds = 0;
    loop {
        let done = build.is_done();
        for key in keys {
            let expected = model
                .get(key)
                .cloned()
                .map_or(KvResult::Nil, KvResult::Value);
            assert_eq!(kv.read(key), expected, "{key:?} in round {rounds}");
            let query = KvOp::Get(key.clone()).encode();
            assert_eq!(
                kv.query(&query),
                expected.encode(),
                "query {key:?} in round {rounds}"
            );
        }
        rounds += 1;
        if done {
            break;
        }
    }
    assert!(thread.join().unwrap());
    let mut plain = Kv::with_page_bytes(kv.page_bytes);
    model
        .iter()
        .for_each(|(k, v)| drop(plain.execute(KvOp::Put(k.clone(), v.clone()))));
    assert_eq!(build.run(), &plain.snapshot());
    kv.execute(KvOp::Get(b("taken")));
    assert!(kv.folding.is_none());
    assert_eq!(kv, plain);
}

/// Keys before, then the changes: every `step`th key from `first` to `last` set to a
/// value, or deleted.
type FoldScript = (usize, Changed);
type Changed = (usize, usize, usize, Option<&'static str>);

const FOLD_SCRIPTS: [FoldScript; 4] = [
    // A third of the keys changed: the same layout, most buckets rebuilt.
    (4000, (0, 4000, 3, Some("changed value"))),
    // Twice the keys: a layout of twice the buckets.
    (3000, (3000, 6000, 1, Some("a new key's value"))),
    // Five in six deleted: a layout of a quarter of the buckets.
    (6000, (0, 5000, 1, None)),
    // From nothing to a thousand buckets at once.
    (0, (0, 6000, 1, Some("value"))),
];

/// A map of small pages, folded with the keys before, then changed; with the model of
/// its state and every key the script names.
fn scripted(
    before: usize,
    (first, last, step, value): Changed,
) -> (Kv, BTreeMap<Bytes, Bytes>, Vec<Bytes>) {
    let keys: Vec<Bytes> = (0..6000).map(|i| b(&format!("key {i}"))).collect();
    let mut kv = Kv::with_page_bytes(64);
    kv.snapshot_deferred().run();
    let mut model = BTreeMap::new();
    for key in &keys[..before] {
        let value = Bytes::from(format!("initial value of {key:?}"));
        model.insert(key.clone(), value.clone());
        kv.execute(KvOp::Put(key.clone(), value));
    }
    kv.snapshot_deferred().run();
    kv.execute(KvOp::Get(b("the fold taken")));
    for key in keys[first..last].iter().step_by(step) {
        match value {
            Some(value) => {
                model.insert(key.clone(), b(value));
                kv.execute(KvOp::Put(key.clone(), b(value)));
            }
            None => {
                model.remove(key);
                kv.execute(KvOp::Delete(key.clone()));
            }
        }
    }
    (kv, model, keys)
}

#[test]
fn reads_see_the_state_at_every_moment_of_a_fold() {
    for (before, changes) in FOLD_SCRIPTS {
        let (kv, model, keys) = scripted(before, changes);
        check_reads_during_a_fold(kv, &model, &keys);
    }
}

#[test]
fn every_lookup_at_every_step_of_a_fold_finds_the_folded_state() {
    // The same scripts, folded on this thread: after each range the fold replaces, every
    // key is looked up through the fold.
    for (before, changes) in FOLD_SCRIPTS {
        let (mut kv, model, keys) = scripted(before, changes);
        let bits = kv.bucket_bits;
        let fold = kv.take_fold();
        let mut steps = 0;
        let folded = fold.run_observed(&mut |fold| {
            steps += 1;
            for key in &keys {
                let value = fold.get(key_hash(key), key);
                assert_eq!(value.as_ref(), model.get(key), "{key:?} at step {steps}");
            }
        });
        // A range per rebuilt bucket, or per bucket of the coarser layout (one, from a
        // single bucket).
        assert!(steps > 1 || bits == 0, "{steps} steps");
        let mut plain = Kv::with_page_bytes(kv.page_bytes);
        model
            .iter()
            .for_each(|(k, v)| drop(plain.execute(KvOp::Put(k.clone(), v.clone()))));
        assert_eq!(folded.snapshot, plain.snapshot());
    }
}

#[test]
fn a_fold_lets_go_of_each_bucket_it_rebuilds() {
    // Before the map takes a finished fold (it has not executed anything since), the
    // buckets the fold rewrote are freed already; those it did not touch are shared.
    let mut kv = filled(3000);
    kv.snapshot_deferred().run();
    kv.execute(KvOp::Get(b("key 1")));
    assert!(kv.folding.is_none() && kv.buckets.len() > 4);
    let before: Vec<std::sync::Weak<bucket::Bucket>> =
        kv.buckets.iter().map(Arc::downgrade).collect();
    let changed = [b("key 7"), b("key 1234")];
    let touched: HashSet<usize> = (changed.iter())
        .map(|key| bucket_of(key_hash(key), kv.bucket_bits))
        .collect();
    for key in &changed {
        kv.execute(KvOp::Put(key.clone(), b("changed")));
    }
    kv.snapshot_deferred().run();
    assert!(kv.folding.is_some(), "not taken yet");
    for (index, bucket) in before.iter().enumerate() {
        let alive = bucket.upgrade().is_some();
        assert_eq!(alive, !touched.contains(&index), "bucket {index}");
    }
}

/// A measurement more than a check (`VSR_MEASURE=1 cargo test --release --lib
/// kv::tests::cost -- --nocapture`; without it, one small round): a get query of 16-byte keys among 1,000 (all in the changes, as under
/// `vsr-load --keys 1000`) and among 100,000 (folded into buckets, 1,000 changed since),
/// answered the way `query` did before (decode into `Bytes`, `execute`, `encode`) and as it
/// does now, alternating, medians of five; both give the same bytes.
#[test]
fn cost_of_a_get_query() {
    use std::time::Instant;
    let measure = std::env::var_os("VSR_MEASURE").is_some();
    let sizes: &[u32] = if measure { &[1_000, 100_000] } else { &[1_000] };
    for &keys in sizes {
        let mut kv = Kv::new();
        let key = |i: u32| Bytes::from(format!("key{i:013}"));
        for i in 0..keys {
            kv.execute(KvOp::Put(key(i), Bytes::from(vec![7u8; 62])));
        }
        if keys > 1_000 {
            drop(kv.snapshot());
            for i in 0..1_000 {
                kv.execute(KvOp::Put(key(i * 7), Bytes::from(vec![8u8; 62])));
            }
        }
        let queries: Vec<Bytes> = (0..4096u32)
            .map(|i| KvOp::Get(key(i.wrapping_mul(2_654_435_761) % keys)).encode())
            .collect();
        for query in &queries {
            let op = KvOp::decode(query).expect("a get");
            assert_eq!(kv.query(query), kv.execute(op).encode());
        }
        let (mut before, mut now) = (Vec::new(), Vec::new());
        let rounds = if measure { 200 } else { 1 };
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..rounds {
                for query in &queries {
                    let result = match KvOp::decode(query) {
                        Some(op @ KvOp::Get(_)) => kv.execute(op).encode(),
                        _ => KvResult::Invalid.encode(),
                    };
                    std::hint::black_box(result);
                }
            }
            before.push(start.elapsed().as_nanos() as f64 / (rounds * queries.len()) as f64);
            let start = Instant::now();
            for _ in 0..rounds {
                for query in &queries {
                    std::hint::black_box(kv.query(query));
                }
            }
            now.push(start.elapsed().as_nanos() as f64 / (rounds * queries.len()) as f64);
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{keys} keys: ns per get query: decode+execute+encode {:.0} (runs {:.0?}), query {:.0} (runs {:.0?})",
            median(before.clone()),
            before,
            median(now.clone()),
            now
        );
    }
}
