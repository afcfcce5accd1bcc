//! The setup the checkpoint-transfer tests share (`core_checkpoint_transfer.rs`,
//! `core_checkpoint_release.rs`): a kv state of about 100 pages in the in-memory cluster,
//! and a replica cut off for long enough that it must fetch a checkpoint.
#![allow(dead_code)]

use bytes::Bytes;
use vsr::client::ClientSession;
use vsr::service::kv::{Kv, KvOp, KvResult};
use vsr::testing::MemoryCluster;
use vsr::Config;

/// Keys of the initial state: 400 values of 1000 bytes, about 100 pages of 4 KiB.
pub const KEYS: u32 = 400;
pub const VALUE_BYTES: usize = 1000;
/// Ops between two checkpoints.
pub const INTERVAL: u64 = 50;

pub fn config() -> Config {
    let mut config = Config::new(7, 3);
    config.checkpoint_interval_ops = INTERVAL;
    config.log_tail_ops = 10;
    // Small requests and a small window, so that a transfer takes many parts.
    config.checkpoint_request_pages_max = 4;
    config.checkpoint_fetch_requests_max = 2;
    config
}

pub fn value(key: u32, version: u8) -> Bytes {
    let mut value = vec![version; VALUE_BYTES];
    value[..4].copy_from_slice(&key.to_le_bytes());
    Bytes::from(value)
}

/// Puts `key = value(key, version)` for every key, one request at a time.
pub fn put_all(
    cluster: &mut MemoryCluster<Kv>,
    session: &mut ClientSession,
    keys: impl Iterator<Item = u32>,
    version: u8,
) {
    for key in keys {
        let op = KvOp::Put(Bytes::from(format!("key {key:05}")), value(key, version));
        let result = cluster.execute(session, op.encode());
        assert_eq!(
            KvResult::decode(&result),
            Some(KvResult::Ok),
            "put of key {key}"
        );
    }
}

/// Ticks until every replica that is up has executed `commit`, or panics.
pub fn settle(cluster: &mut MemoryCluster<Kv>, commit: u64) {
    for _ in 0..2_000 {
        cluster.tick();
        cluster.run(100_000);
        if cluster
            .replicas
            .iter()
            .zip(&cluster.down)
            .all(|(replica, down)| *down || replica.commit() >= commit)
        {
            return;
        }
    }
    let commits: Vec<u64> = cluster.replicas.iter().map(|r| r.commit()).collect();
    panic!("replicas did not reach commit {commit}: {commits:?}");
}

/// `cluster` (new, built with `config`) given the initial state everywhere, and its
/// session; replica 2 is then cut off while 40 of the keys (10%) change over several
/// checkpoint intervals, so that its log no longer reaches the others' (it must fetch
/// their checkpoint).
pub fn lagging(
    mut cluster: MemoryCluster<Kv>,
    config: &Config,
) -> (MemoryCluster<Kv>, ClientSession) {
    let mut session = ClientSession::new(1, 3, 100);
    cluster.register(&mut session);
    put_all(&mut cluster, &mut session, 0..KEYS, 1);
    let commit = cluster.replicas[0].commit();
    settle(&mut cluster, commit);
    cluster.down[2] = true;
    // 40 keys, each written 4 times: 160 ops, past three checkpoints.
    for _ in 0..4 {
        put_all(&mut cluster, &mut session, (0..KEYS).step_by(10), 2);
    }
    let primary_base = cluster.replicas[0].checkpoint_op();
    assert!(primary_base > cluster.replicas[2].commit() + config.log_tail_ops);
    (cluster, session)
}

/// Every replica holds replica 0's state.
pub fn assert_same_state(cluster: &MemoryCluster<Kv>) {
    for replica in 1..3 {
        assert!(
            cluster.replicas[replica].service() == cluster.replicas[0].service(),
            "replica {replica} holds another state"
        );
    }
}
