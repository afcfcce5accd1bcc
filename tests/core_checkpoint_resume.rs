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

/// A loaded cluster whose replica 2 lost its data directory, restarted empty, and was
/// killed once it had fetched at least half of the checkpoint's pages. Returns the
/// cluster, the checkpoint's page count, and the first attempt's fetched pages.
fn killed_mid_transfer() -> (MemoryCluster<Kv>, u64, u64) {
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
