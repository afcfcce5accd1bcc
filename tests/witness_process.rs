//! Witnesses (paper 6.1) with real replica processes on 127.0.0.1: three replicas, the
//! third a witness (`--witnesses 2`). While both actives answer, the witness is sent
//! nothing; an active stopped (SIGSTOP) brings it in. An active dies (kill -9), writes go
//! on with the witness, the active comes back and recovers, then the other active dies:
//! every acknowledged write reads back, the witness never led, never executed and never
//! checkpointed. With `--durability disk`, every machine killed at once under a write
//! load (the witness involved and trimming its log) and restarted on its data directory
//! loses no acknowledged write. Every wait has a deadline; the load is bounded in count.

mod common;

use bytes::Bytes;
use common::cluster::TestCluster;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// Puts one writer thread makes at most.
const PUTS_MAX: u64 = 20_000;

/// The puts acknowledged (writer, n), their count, and the writer threads.
type Writers = (
    Arc<Mutex<Vec<(usize, u64)>>>,
    Arc<AtomicUsize>,
    Vec<std::thread::JoinHandle<()>>,
);

/// Writer threads putting `w{writer}-{n}` = `{n}` until told to stop (or `PUTS_MAX`),
/// each acknowledged put recorded; a put that fails (every replica down, a timeout) is
/// an unknown outcome, not recorded, and the writer connects again.
fn writers(cluster: &TestCluster, count: usize, stop: &Arc<AtomicBool>) -> Writers {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let acks = Arc::new(AtomicUsize::new(0));
    let threads = (0..count)
        .map(|writer| {
            let addresses = cluster.addresses().to_vec();
            let options = ClientOptions {
                cluster_id: cluster.cluster,
                request_timeout: 3 * SECOND,
                witnesses: ReplicaSet::of(WITNESS as u8),
                ..ClientOptions::default()
            };
            let (acknowledged, acks, stop) = (acknowledged.clone(), acks.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut client = None;
                for n in 0..PUTS_MAX {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some(connected) = client.as_mut() else {
                        client = Client::connect(&addresses, options.clone()).ok();
                        if client.is_none() {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        continue;
                    };
                    let put = KvOp::Put(
                        Bytes::from(format!("w{writer}-{n}")),
                        Bytes::from(n.to_string()),
                    );
                    match connected.call(put.encode()) {
                        Ok(result) => {
                            assert_eq!(KvResult::decode(&result), Some(KvResult::Ok));
                            acknowledged.lock().unwrap().push((writer, n));
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => client = None,
                    }
                }
            })
        })
        .collect();
    (acknowledged, acks, threads)
}

fn wait_for_acks(acks: &AtomicUsize, more: usize) {
    let target = acks.load(Ordering::Relaxed) + more;
    common::wait_for(
        &format!("{more} more acknowledged puts"),
        60 * SECOND,
        || acks.load(Ordering::Relaxed) >= target,
    );
}

/// Three replicas with data directories, the third a witness: every machine is killed
/// with SIGKILL at once, twice, under a write load that involves the witness (active 1
/// stopped for a while, so the witness holds entries and trims its journal), and
/// restarted on its directory. Every acknowledged write reads back; every replica
/// resumed from its journal (no damage, no recovery through the protocol needed).
#[test]
fn every_machine_killed_at_once_with_a_witness_on_disk_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start_durable(
        3,
        "kv",
        &["--witnesses", "2", "--checkpoint-interval", "512"],
    );
    cluster.wait_until_serving(30 * SECOND);
    let stop = Arc::new(AtomicBool::new(false));
    let (acknowledged, acks, threads) = writers(&cluster, 3, &stop);
    wait_for_acks(&acks, 500);
    // Active 1 stops answering: the primary involves the witness, which acknowledges,
    // commits and (told the actives' commit) trims its log and journal.
    cluster.stop(1);
    wait_for_acks(&acks, 1500);
    common::wait_for("the witness to hold entries", 30 * SECOND, || {
        cluster.stats(WITNESS).is_ok_and(|s| s.u64("op") > 0)
    });
    cluster.resume(1);
    wait_for_acks(&acks, 300);
    for round in 0..2 {
        for i in 0..3 {
            cluster.kill9(i);
        }
        for i in 0..3 {
            cluster.restart(i);
        }
        cluster.wait_until_serving(60 * SECOND);
        eprintln!("round {round}: serving again");
        wait_for_acks(&acks, 300);
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    eprintln!("{} puts acknowledged", acknowledged.len());
    let mut reader = client(&cluster);
    for &(writer, n) in &acknowledged {
        let get = KvOp::Get(Bytes::from(format!("w{writer}-{n}")));
        let result = reader.call(get.encode()).expect("read");
        assert_eq!(
            KvResult::decode(&result),
            Some(KvResult::Value(Bytes::from(n.to_string()))),
            "acknowledged put w{writer}-{n} lost"
        );
    }
    for i in 0..3 {
        let log = cluster.log(i);
        assert!(!log.contains("panicked"), "replica {i} panicked:\n{log}");
        assert!(
            log.contains("restarting from storage"),
            "replica {i}:\n{log}"
        );
        assert!(!log.contains("damaged"), "replica {i}:\n{log}");
        assert!(!log.contains("does not fold"), "replica {i}:\n{log}");
    }
    let witness = cluster.stats(WITNESS).expect("the witness's stats");
    assert_eq!(witness.u64("checkpoints"), 0, "{}", witness.json);
    assert!(!witness.is_primary());
    let files: Vec<String> = std::fs::read_dir(cluster.data_dir(WITNESS))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !files.iter().any(|name| name.starts_with("checkpoint-")),
        "a witness writes no checkpoint file: {files:?}"
    );
}
