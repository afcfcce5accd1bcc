//! Witnesses (paper 6.1) with real replica processes on 127.0.0.1: three replicas, the
//! third a witness (`--witnesses 2`). An active dies (kill -9), writes go on with the
//! witness, the active comes back and recovers, then the other active dies: every
//! acknowledged write reads back, the witness never led, never executed and never
//! checkpointed. Every wait has a deadline; the load is bounded in count.

mod common;

use bytes::Bytes;
use common::cluster::TestCluster;
use std::time::Duration;
use vsr::client::{Client, ClientOptions, ReadMode};
use vsr::protocol::ReplicaSet;
use vsr::service::kv::{KvOp, KvResult};

const SECOND: Duration = Duration::from_secs(1);
const WITNESS: usize = 2;

fn client(cluster: &TestCluster) -> Client {
    let options = ClientOptions {
        cluster_id: cluster.cluster,
        request_timeout: 20 * SECOND,
        witnesses: ReplicaSet::of(WITNESS as u8),
        ..ClientOptions::default()
    };
    Client::connect(cluster.addresses(), options).expect("a session")
}

fn put(client: &mut Client, key: usize) {
    let op = KvOp::Put(
        Bytes::from(format!("k{key}")),
        Bytes::from(format!("v{key}")),
    );
    let result = client.call(op.encode()).expect("the put commits");
    assert_eq!(KvResult::decode(&result), Some(KvResult::Ok));
}

fn recovered(cluster: &TestCluster, replica: usize) -> bool {
    cluster
        .stats(replica)
        .is_ok_and(|s| s.status() == "normal" && s.u64("recoveries") >= 1)
}

#[test]
fn writes_survive_an_active_at_a_time_dying_with_a_witness() {
    let mut cluster = TestCluster::start_with(3, "kv", &["--witnesses", "2"]);
    cluster.wait_until_serving(30 * SECOND);
    assert_eq!(cluster.primary(), Some(0), "view 0's primary is replica 0");
    let mut client = client(&cluster);
    for key in 0..50 {
        put(&mut client, key);
    }
    // Active 1 dies: replica 0 and the witness commit without it.
    cluster.kill9(1);
    for key in 50..100 {
        put(&mut client, key);
    }
    // It comes back and recovers (paper 4.3); then active 0 dies, and replica 1 leads
    // with the witness.
    cluster.restart(1);
    common::wait_for("replica 1 to recover", 30 * SECOND, || {
        recovered(&cluster, 1)
    });
    cluster.kill9(0);
    for key in 100..150 {
        put(&mut client, key);
    }
    assert_eq!(cluster.primary(), Some(1), "the witness never leads");
    for key in 0..150 {
        let get = KvOp::Get(Bytes::from(format!("k{key}")));
        let result = client.read(get.encode(), ReadMode::Strict).expect("read");
        assert_eq!(
            KvResult::decode(&result),
            Some(KvResult::Value(Bytes::from(format!("v{key}")))),
            "key k{key}"
        );
    }
    let witness = cluster.stats(WITNESS).expect("the witness's stats");
    assert!(witness.u64("commit") >= 150, "{}", witness.json);
    assert_eq!(witness.u64("checkpoints"), 0, "{}", witness.json);
    assert!(!witness.is_primary());
}
