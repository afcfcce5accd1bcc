//! A checkpoint fetch cut short by a crash resumes (paper 5.1; `fetch_checkpoint.rs`,
//! "Pages kept across a crash"): the pages it verified were kept in the replica's store
//! (`Effect::KeepPages`), a restart reads them back, and the next fetch takes them by
//! digest, fetching only the others. Driven through the in-memory cluster with stores
//! kept (`MemoryCluster::keep_stores`), so every count is exact.

use bytes::Bytes;
use vsr::client::ClientSession;
use vsr::protocol::{FetchedPages, Replica, Start, Stored};
use vsr::service::kv::{Kv, KvOp, KvResult};
use vsr::testing::MemoryCluster;
use vsr::Config;

/// 400 values of 1000 bytes: about 100 pages of 4 KiB.
const KEYS: u32 = 400;
const VALUE_BYTES: usize = 1000;
const WIPED: usize = 2;

fn config() -> Config {
    let mut config = Config::new(7, 3);
    config.checkpoint_interval_ops = 50;
    config.log_tail_ops = 10;
    // Small requests, one at a time: the transfer takes many parts.
    config.checkpoint_request_pages_max = 4;
    config.checkpoint_fetch_requests_max = 1;
    config
}

fn put_all(cluster: &mut MemoryCluster<Kv>, session: &mut ClientSession) {
    for key in 0..KEYS {
        let mut value = vec![7u8; VALUE_BYTES];
        value[..4].copy_from_slice(&key.to_le_bytes());
        let op = KvOp::Put(Bytes::from(format!("key {key:05}")), Bytes::from(value));
        let result = cluster.execute(session, op.encode());
        assert_eq!(
            KvResult::decode(&result),
            Some(KvResult::Ok),
            "put of key {key}"
        );
    }
}

/// Ticks until `done` holds, or panics.
fn settle(cluster: &mut MemoryCluster<Kv>, what: &str, done: impl Fn(&MemoryCluster<Kv>) -> bool) {
    for _ in 0..2_000 {
        cluster.tick();
        cluster.run(100_000);
        if done(cluster) {
            return;
        }
    }
    panic!("{what}: not reached");
}

/// The wiped replica's process ends: messages in flight to it are lost with it.
fn crash(cluster: &mut MemoryCluster<Kv>) {
    cluster.down[WIPED] = true;
    cluster.run(1_000_000);
}

/// The wiped replica starts again from `stored`.
fn restart(cluster: &mut MemoryCluster<Kv>, stored: Stored, nonce: u64) {
    cluster.stores.as_mut().unwrap()[WIPED] = stored.clone();
    cluster.replicas[WIPED] = Replica::new(
        config(),
        WIPED as u8,
        Kv::new(),
        Start::Restart {
            stored: Box::new(stored),
            nonce,
        },
    );
    cluster.down[WIPED] = false;
}

/// A cluster with stores kept, every key put and every replica caught up; and the page
/// count of its checkpoint.
fn loaded_cluster() -> (MemoryCluster<Kv>, u64) {
    let mut cluster = MemoryCluster::new(&config(), |_| Kv::new());
    cluster.keep_stores();
    let mut session = ClientSession::new(1, 3, 100);
    cluster.register(&mut session);
    put_all(&mut cluster, &mut session);
    let commit = cluster.replicas[0].commit();
    settle(&mut cluster, "loaded", |c| {
        c.replicas.iter().all(|r| r.commit() >= commit)
    });
    let total = cluster.replicas[0].checkpoint().unwrap().pages().count() as u64;
    (cluster, total)
}

/// A loaded cluster whose replica 2 lost its data directory, restarted empty, and was
/// killed once it had fetched at least half of the checkpoint's pages. Returns the
/// cluster, the checkpoint's page count, and the first attempt's fetched pages.
fn killed_mid_transfer() -> (MemoryCluster<Kv>, u64, u64) {
    let (mut cluster, total) = loaded_cluster();
    assert!(total >= 90, "{total} pages");

    crash(&mut cluster);
    restart(&mut cluster, Stored::default(), 1);
    let mut progress = None;
    for _ in 0..200_000 {
        if cluster.run(1) == 0 {
            cluster.tick();
        }
        progress = cluster.replicas[WIPED].checkpoint_fetch_progress();
        if progress.is_some_and(|(_, held, pages)| held >= pages / 2) {
            break;
        }
    }
    let (_, held, pages) = progress.expect("a transfer under way");
    assert_eq!(pages, total);
    assert!(held < pages, "killed mid-transfer");
    let first = cluster.replicas[WIPED].stats();
    assert_eq!(first.checkpoint_pages_fetched, held);
    assert_eq!(
        first.checkpoint_pages_kept, held,
        "every verified page is kept"
    );
    crash(&mut cluster);
    let kept = &cluster.stores.as_ref().unwrap()[WIPED].fetched;
    assert_eq!(kept.pages.len() as u64, held);
    (cluster, total, held)
}

/// The second attempt, from the store as the crash left it, until the transfer is
/// installed; returns its stats.
fn resume(mut cluster: MemoryCluster<Kv>, stored: Stored) -> vsr::protocol::Stats {
    restart(&mut cluster, stored, 2);
    let commit = cluster.replicas[0].commit();
    settle(&mut cluster, "resumed", |c| {
        c.replicas[WIPED].commit() >= commit
    });
    assert!(
        cluster.replicas[WIPED].service() == cluster.replicas[0].service(),
        "the resumed replica holds another state"
    );
    // Installed and durable: the store forgets the pages.
    let store = &cluster.stores.as_ref().unwrap()[WIPED];
    assert_eq!(store.fetched, FetchedPages::default());
    for replica in &cluster.replicas {
        replica.invariants();
    }
    cluster.replicas[WIPED].stats().clone()
}

#[test]
fn a_wiped_replica_killed_mid_transfer_fetches_only_the_pages_it_had_not_kept() {
    let (cluster, total, kept) = killed_mid_transfer();
    let stored = cluster.stores.as_ref().unwrap()[WIPED].clone();
    let stats = resume(cluster, stored);
    assert_eq!(stats.checkpoint_pages_read_back, kept);
    assert_eq!(stats.checkpoint_pages_kept_corrupt, 0);
    assert_eq!(stats.checkpoint_pages_resumed, kept);
    assert_eq!(stats.checkpoint_pages_reused, kept);
    assert_eq!(stats.checkpoint_pages_fetched, total - kept);
    assert_eq!(stats.checkpoint_pages_refetched, 0);
    assert_eq!(stats.checkpoint_fetches_completed, 1);
}

/// One kept page's bytes are damaged on disk: reading back drops it (its digest does
/// not match), and the resumed fetch asks for it with the pages never kept.
#[test]
fn a_corrupt_kept_page_is_dropped_and_fetched_again() {
    let (cluster, total, kept) = killed_mid_transfer();
    let mut stored = cluster.stores.as_ref().unwrap()[WIPED].clone();
    let records = stored
        .fetched
        .pages
        .iter()
        .enumerate()
        .map(|(index, page)| {
            let mut bytes = page.bytes().to_vec();
            if index == 3 {
                bytes[10] ^= 0x01;
            }
            (page.digest(), Bytes::from(bytes))
        });
    stored.fetched = FetchedPages::read_back(stored.fetched.root, records.collect::<Vec<_>>());
    assert_eq!(stored.fetched.dropped, 1);
    let stats = resume(cluster, stored);
    assert_eq!(stats.checkpoint_pages_read_back, kept - 1);
    assert_eq!(stats.checkpoint_pages_kept_corrupt, 1);
    assert_eq!(stats.checkpoint_pages_resumed, kept - 1);
    assert_eq!(stats.checkpoint_pages_fetched, total - kept + 1);
}

/// Without the pages kept (a store that lost them), the second attempt starts from zero:
/// the counts above are the kept pages' doing.
#[test]
fn without_kept_pages_the_second_attempt_fetches_everything() {
    let (cluster, total, _) = killed_mid_transfer();
    let mut stored = cluster.stores.as_ref().unwrap()[WIPED].clone();
    stored.fetched = FetchedPages::default();
    let stats = resume(cluster, stored);
    assert_eq!(stats.checkpoint_pages_resumed, 0);
    assert_eq!(stats.checkpoint_pages_fetched, total);
}

/// A replica whose disk is still writing the checkpoint it installed from a transfer
/// (a checkpoint file holds the whole state) starts a second transfer, as when the
/// sources moved on during a long install: the second transfer files its kept pages
/// with the first's instead of replacing them, so a crash before the installed
/// checkpoint is durable still leaves its pages in the store, and the next attempt
/// fetches only what changed. (Before, the store held the second transfer's few new
/// pages and the restart fetched everything again: `perf/state_transfer.md`, the 1 GiB
/// runs of 2026-12-02.)
#[test]
fn a_transfer_started_before_the_installed_checkpoint_is_durable_keeps_the_pages_too() {
    let (mut cluster, total) = loaded_cluster();
    let mut session = ClientSession::new(2, 3, 100);
    cluster.register(&mut session);

    // Wiped and restarted empty; its disk stalls once the transfer is under way, so the
    // checkpoint it installs never becomes durable.
    crash(&mut cluster);
    restart(&mut cluster, Stored::default(), 1);
    for _ in 0..200_000 {
        if cluster.replicas[WIPED]
            .checkpoint_fetch_progress()
            .is_some()
        {
            break;
        }
        if cluster.run(1) == 0 {
            cluster.tick();
        }
    }
    assert!(cluster.replicas[WIPED]
        .checkpoint_fetch_progress()
        .is_some());
    cluster.stall_writes(WIPED as u64);
    settle(&mut cluster, "first install", |c| {
        c.replicas[WIPED].checkpoint_op() > 0
    });
    let first = cluster.replicas[WIPED].checkpoint().unwrap().clone();
    assert_eq!(first.pages().count() as u64, total);

    // Cut off while the others write new values to a third of the keys and trim their
    // logs past it; back, it needs a newer checkpoint: a second transfer.
    cluster.down[WIPED] = true;
    for key in 0..KEYS / 3 {
        let op = KvOp::Put(
            Bytes::from(format!("key {key:05}")),
            Bytes::from(vec![9u8; VALUE_BYTES]),
        );
        let result = cluster.execute(&mut session, op.encode());
        assert_eq!(KvResult::decode(&result), Some(KvResult::Ok));
    }
    cluster.down[WIPED] = false;
    settle(&mut cluster, "second install", |c| {
        c.replicas[WIPED].checkpoint_op() > first.op
    });
    let second = cluster.replicas[WIPED].stats().clone();
    assert_eq!(second.checkpoint_fetches_completed, 2);

    // Killed before either checkpoint reached its disk: the store has no checkpoint, but
    // it kept the pages of both transfers.
    crash(&mut cluster);
    cluster.forget_pending_writes(WIPED as u64);
    let stored = cluster.stores.as_ref().unwrap()[WIPED].clone();
    assert_eq!(stored.checkpoint, None, "no checkpoint became durable");
    let kept: std::collections::HashSet<_> = stored
        .fetched
        .pages
        .iter()
        .map(|page| page.digest())
        .collect();
    assert!(
        first.pages().all(|page| kept.contains(&page.digest())),
        "the first transfer's pages were replaced by the second's"
    );

    // The third attempt takes them back and fetches only the pages no transfer fetched.
    let stats = resume(cluster, stored);
    assert_eq!(stats.checkpoint_pages_read_back, kept.len() as u64);
    assert!(
        stats.checkpoint_pages_fetched < total / 4,
        "fetched {} of {total} pages again",
        stats.checkpoint_pages_fetched
    );
}
