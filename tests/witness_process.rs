//! Witnesses (paper 6.1) with real replica processes on 127.0.0.1: three replicas, the
//! third a witness (`--witnesses 2`). While both actives answer, the witness is sent
//! nothing; an active stopped (SIGSTOP) brings it in. An active dies (kill -9), writes go
//! on with the witness, the active comes back and recovers, then the other active dies:
//! every acknowledged write reads back, the witness never led, never executed and never
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

/// Three replicas serving, the third a witness, replica 0 leading view 0.
fn start_with_witness() -> TestCluster {
    let mut cluster = TestCluster::start_with(3, "kv", &["--witnesses", "2"]);
    cluster.wait_until_serving(30 * SECOND);
    assert_eq!(cluster.primary(), Some(0), "view 0's primary is replica 0");
    cluster
}

/// Every key `put` wrote below `keys` reads back its value (a strict read).
fn read_back(client: &mut Client, keys: usize) {
    for key in 0..keys {
        let get = KvOp::Get(Bytes::from(format!("k{key}")));
        let result = client.read(get.encode(), ReadMode::Strict).expect("read");
        assert_eq!(
            KvResult::decode(&result),
            Some(KvResult::Value(Bytes::from(format!("v{key}")))),
            "key k{key}"
        );
    }
}

fn recovered(cluster: &TestCluster, replica: usize) -> bool {
    cluster
        .stats(replica)
        .is_ok_and(|s| s.status() == "normal" && s.u64("recoveries") >= 1)
}

#[test]
fn writes_survive_an_active_at_a_time_dying_with_a_witness() {
    let mut cluster = start_with_witness();
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
    read_back(&mut client, 150);
    let witness = cluster.stats(WITNESS).expect("the witness's stats");
    assert!(witness.u64("commit") >= 150, "{}", witness.json);
    assert_eq!(witness.u64("checkpoints"), 0, "{}", witness.json);
    assert!(!witness.is_primary());
}

#[test]
fn the_witness_is_sent_nothing_until_an_active_stops_answering() {
    let mut cluster = start_with_witness();
    let mut client = client(&cluster);
    for key in 0..100 {
        put(&mut client, key);
    }
    // A loaded machine may hold the active backup back past a prepare timeout, and
    // then the primary rightly involves the witness: whatever the witness holds, the
    // primary must have involved it.
    let witness_op = cluster
        .stats(WITNESS)
        .expect("the witness's stats")
        .u64("op");
    let involvements = cluster.stats(0).expect("stats").u64("witness_involvements");
    assert!(
        witness_op == 0 || involvements > 0,
        "the witness holds ops {witness_op} while both actives answered"
    );
    // Active 1 stops answering: after a prepare timeout the primary involves the
    // witness, and the writes commit with its acknowledgements.
    cluster.stop(1);
    for key in 100..150 {
        put(&mut client, key);
    }
    let primary = cluster.stats(0).expect("stats");
    assert!(
        primary.u64("witness_involvements") > involvements,
        "{}",
        primary.json
    );
    let witness = cluster.stats(WITNESS).expect("the witness's stats");
    assert!(witness.u64("op") > witness_op, "{}", witness.json);
    assert!(witness.u64("commit") <= primary.u64("commit"));
    cluster.resume(1);
    for key in 150..200 {
        put(&mut client, key);
    }
    read_back(&mut client, 200);
    assert_eq!(
        cluster.primary(),
        Some(0),
        "no view change: the witness stood in"
    );
}
