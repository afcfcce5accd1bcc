//! Reconfiguration (paper section 7) with real `vsr replica` processes on 127.0.0.1, under a
//! load of puts: grow 3 → 5, shrink to 3 members none of which is an original one (the
//! originals retire and exit 0), then replace one member. New members start with `vsr
//! replica --join` and warm up first; each change is `vsr admin reconfigure`. The load's
//! client was given the first configuration's addresses and follows the cluster; it never
//! sees an error. Every acknowledged put reads back at the end. Every wait has a deadline.

mod common;

use bytes::Bytes;
use common::cluster::{address_list, free_addresses, TestCluster};
use common::wait_for;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vsr::client::{Client, ClientOptions};
use vsr::service::kv::{KvOp, KvResult};

const SERVING_TIMEOUT: Duration = Duration::from_secs(20);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// The load stops by itself after this many puts or this long, whichever comes first.
const LOAD_PUTS_MAX: u64 = 200_000;
const LOAD_DURATION_MAX: Duration = Duration::from_secs(120);

fn client_options() -> ClientOptions {
    ClientOptions {
        // A change stalls writes for a moment; a client retries through it.
        request_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

/// Puts `key-N = value-N` one after another until stopped (or its bounds), returning the
/// number of puts acknowledged; any error fails the test (a client sees only retries).
fn start_load(addresses: Vec<SocketAddr>, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut client = Client::connect(&addresses, client_options()).expect("connect");
        let started = Instant::now();
        let mut acknowledged = 0;
        while !stop.load(Ordering::Relaxed)
            && acknowledged < LOAD_PUTS_MAX
            && started.elapsed() < LOAD_DURATION_MAX
        {
            let key = Bytes::from(format!("key-{acknowledged}"));
            let value = Bytes::from(format!("value-{acknowledged}"));
            let result = client
                .call(KvOp::Put(key, value).encode())
                .unwrap_or_else(|error| panic!("put {acknowledged} failed: {error}"));
            assert_eq!(KvResult::decode(&result), Some(KvResult::Ok));
            acknowledged += 1;
        }
        acknowledged
    })
}

/// `vsr admin reconfigure --cluster FROM --to TO`: its exit status and output.
fn reconfigure(from: &[SocketAddr], to: &[SocketAddr]) -> (bool, String, String) {
    reconfigure_with(from, to, &[])
}

/// `vsr admin reconfigure --cluster FROM --to TO EXTRA...`: its exit status and output.
fn reconfigure_with(
    from: &[SocketAddr],
    to: &[SocketAddr],
    extra: &[&str],
) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args([
            "admin",
            "reconfigure",
            "--cluster",
            &address_list(from),
            "--to",
            &address_list(to),
        ])
        .args(extra)
        .args(["--wait-ms", &CHANGE_TIMEOUT.as_millis().to_string()])
        .output()
        .expect("run vsr admin reconfigure");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    )
}

/// Waits until replica `i` reports `status` (and, if given, this epoch).
fn wait_status(cluster: &TestCluster, i: usize, status: &str, epoch: Option<u64>) {
    wait_for(&format!("replica {i} {status}"), CHANGE_TIMEOUT, || {
        cluster.stats(i).is_ok_and(|stats| {
            stats.status() == status && epoch.is_none_or(|e| stats.u64("epoch") == e)
        })
    });
}

/// Waits until learner `i` is within a few thousand ops of replica `reference`'s commit
/// (what `vsr admin reconfigure` asks of it: warm-up, paper 7.5).
fn wait_warm(cluster: &TestCluster, i: usize, reference: usize) {
    wait_status(cluster, i, "joining", None);
    wait_for(&format!("learner {i} warm"), CHANGE_TIMEOUT, || {
        let (Ok(learner), Ok(member)) = (cluster.stats(i), cluster.stats(reference)) else {
            return false;
        };
        learner.u64("commit") > 0 && learner.u64("commit") + 2_000 >= member.u64("commit")
    });
}

#[test]
fn grow_shrink_and_replace_under_load() {
    let mut cluster = TestCluster::start(3, "kv");
    cluster.wait_until_serving(SERVING_TIMEOUT);
    let first: Vec<SocketAddr> = cluster.addresses().to_vec();
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(first.clone(), stop.clone());
    let spare = free_addresses(4);

    // Grow 3 → 5: two learners warm up, then the change.
    let five: Vec<SocketAddr> = first
        .iter()
        .copied()
        .chain(spare[..2].iter().copied())
        .collect();
    let joiners = [
        cluster.join(&five, 3, &first, &[]),
        cluster.join(&five, 4, &first, &[]),
    ];
    for &i in &joiners {
        wait_warm(&cluster, i, 0);
    }
    let (ok, epoch, stderr) = reconfigure(&first, &five);
    assert!(ok, "grow refused: {stderr}");
    assert_eq!(epoch, "1");
    for i in 0..5 {
        wait_status(&cluster, i, "normal", Some(1));
    }

    // Shrink to 3 members without any original one: the originals retire and exit 0.
    let three: Vec<SocketAddr> = vec![spare[0], spare[1], spare[2]];
    let newcomer = cluster.join(&three, 2, &five, &[]);
    wait_warm(&cluster, newcomer, joiners[0]);
    let (ok, epoch, stderr) = reconfigure(&five, &three);
    assert!(ok, "shrink refused: {stderr}");
    assert_eq!(epoch, "2");
    for i in 0..3 {
        let status = cluster.wait_exit(i, CHANGE_TIMEOUT);
        assert_eq!(
            status,
            Ok(Some(0)),
            "original replica {i}:\n{}",
            cluster.log(i)
        );
    }

    // A repeated request changes nothing and says where the cluster is.
    let (ok, epoch, stderr) = reconfigure(&three, &three);
    assert!(ok, "a repeated change failed: {stderr}");
    assert_eq!(epoch, "2");

    // Replace one member.
    let replaced: Vec<SocketAddr> = vec![spare[0], spare[1], spare[3]];
    let replacement = cluster.join(&replaced, 2, &three, &[]);
    wait_warm(&cluster, replacement, joiners[0]);
    // Asked through an earlier configuration (three of its five replicas are gone).
    let (ok, epoch, stderr) = reconfigure(&five, &replaced);
    assert!(ok, "replace refused: {stderr}");
    assert_eq!(epoch, "3");
    let status = cluster.wait_exit(newcomer, CHANGE_TIMEOUT);
    assert_eq!(
        status,
        Ok(Some(0)),
        "replaced replica:\n{}",
        cluster.log(newcomer)
    );

    // A member restarted after the changes (its memory lost) with the arguments it was
    // first started with finds the current configuration and recovers in it.
    cluster.kill9(joiners[0]);
    cluster.restart(joiners[0]);
    wait_status(&cluster, joiners[0], "normal", Some(3));

    stop.store(true, Ordering::Relaxed);
    let acknowledged = load.join().expect("the load never fails");
    assert!(acknowledged > 0, "the load made progress");

    // `vsr kv` given an earlier configuration (three of its five replicas are gone)
    // follows the cluster too.
    let output = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args(["kv", "--cluster", &address_list(&five), "get", "key-0"])
        .output()
        .expect("run vsr kv");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "value value-0",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Every acknowledged put reads back, through a client that starts from an earlier
    // configuration (one of its members still runs) and follows to the current one.
    let mut client = Client::connect(&five[3..], client_options()).expect("connect");
    for n in 0..acknowledged {
        let key = Bytes::from(format!("key-{n}"));
        let result = client.call(KvOp::Get(key).encode()).expect("get");
        assert_eq!(
            KvResult::decode(&result),
            Some(KvResult::Value(Bytes::from(format!("value-{n}")))),
            "key-{n}"
        );
    }
}

#[test]
fn a_change_is_refused_while_a_new_member_is_missing() {
    let mut cluster = TestCluster::start(3, "kv");
    cluster.wait_until_serving(SERVING_TIMEOUT);
    let first: Vec<SocketAddr> = cluster.addresses().to_vec();
    let spare = free_addresses(2);
    let five: Vec<SocketAddr> = first.iter().copied().chain(spare).collect();
    let (ok, _, stderr) = reconfigure(&first, &five);
    assert!(!ok, "a change to members that do not run was accepted");
    assert!(stderr.contains("is not ready"), "{stderr}");
    // Four members: not 2f+1.
    let (ok, _, stderr) = reconfigure(&first, &five[..4]);
    assert!(!ok);
    assert!(stderr.contains("cannot follow"), "{stderr}");
    // Nothing changed.
    for i in 0..3 {
        assert_eq!(cluster.stats(i).unwrap().u64("epoch"), 0);
    }
}

/// With `--durability disk`, a grown cluster survives all its replicas killed at once: the
/// configuration and every acknowledged put come back from the data directories, the
/// joined members' included (restarted with the arguments they were started with).
#[test]
fn a_durable_cluster_keeps_its_new_members_across_a_total_crash() {
    let mut cluster = TestCluster::start_durable(3, "kv", &[]);
    cluster.wait_until_serving(SERVING_TIMEOUT);
    let first: Vec<SocketAddr> = cluster.addresses().to_vec();
    let mut client = Client::connect(&first, client_options()).expect("connect");
    let put = |client: &mut Client, n: u64| {
        let body = KvOp::Put(
            Bytes::from(format!("key-{n}")),
            Bytes::from(format!("value-{n}")),
        );
        let result = client.call(body.encode()).expect("put");
        assert_eq!(KvResult::decode(&result), Some(KvResult::Ok));
    };
    for n in 0..100 {
        put(&mut client, n);
    }
    let five: Vec<SocketAddr> = first.iter().copied().chain(free_addresses(2)).collect();
    let mut joiners = Vec::new();
    for index in [3, 4] {
        let data_dir = cluster.directory().join(format!("data-joiner-{index}"));
        let extra = [
            "--durability".to_string(),
            "disk".to_string(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
        ];
        joiners.push(cluster.join(&five, index, &first, &extra));
    }
    for &i in &joiners {
        wait_warm(&cluster, i, 0);
    }
    let (ok, epoch, stderr) = reconfigure(&first, &five);
    assert!(ok, "grow refused: {stderr}");
    assert_eq!(epoch, "1");
    for n in 100..200 {
        put(&mut client, n);
    }
    for i in 0..5 {
        cluster.kill9(i);
    }
    for i in 0..5 {
        cluster.restart(i);
    }
    for i in 0..5 {
        wait_status(&cluster, i, "normal", Some(1));
    }
    let mut client = Client::connect(&five, client_options()).expect("connect");
    for n in 0..200 {
        let result = client
            .call(KvOp::Get(Bytes::from(format!("key-{n}"))).encode())
            .expect("get");
        assert_eq!(
            KvResult::decode(&result),
            Some(KvResult::Value(Bytes::from(format!("value-{n}")))),
            "key-{n}"
        );
    }
}

/// Witnesses across a reconfiguration (paper 6.1 with 7) with real processes: three
/// replicas, 2 the witness. `--witnesses` names at most f members (refused otherwise, with
/// the reason); `--witnesses 0` on the same members makes 2 active (it fetches the state
/// first) and 0 a witness. Then replica 1, the other old active, is killed: the former
/// witness leads and answers what was written before the change.
#[test]
fn witnesses_change_roles_through_vsr_admin_reconfigure() {
    let mut cluster = TestCluster::start_with(3, "kv", &["--witnesses", "2"]);
    cluster.wait_until_serving(SERVING_TIMEOUT);
    let members: Vec<SocketAddr> = cluster.addresses().to_vec();
    let options = ClientOptions {
        witnesses: vsr::protocol::ReplicaSet::of(2),
        ..client_options()
    };
    let mut client = Client::connect(&members, options.clone()).expect("connect");
    let put = KvOp::Put(Bytes::from("before"), Bytes::from("the change"));
    client.call(put.encode()).expect("put");

    let (ok, _, stderr) = reconfigure_with(&members, &members, &["--witnesses", "0,1"]);
    assert!(!ok && stderr.contains("more than f witnesses"), "{stderr}");
    let (ok, _, stderr) = reconfigure_with(&members, &members, &["--witnesses", "3"]);
    assert!(!ok && stderr.contains("not an index of --to"), "{stderr}");
    let (ok, stdout, stderr) = reconfigure_with(&members, &members, &["--witnesses", "0"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "1");
    for i in 0..3 {
        wait_status(&cluster, i, "normal", Some(1));
    }
    cluster.kill(1);
    let mut client = Client::connect(&members, options).expect("connect");
    let get = KvOp::Get(Bytes::from("before"));
    let result = client.call(get.encode()).expect("get after the change");
    assert_eq!(
        KvResult::decode(&result),
        Some(KvResult::Value(Bytes::from("the change")))
    );
}

/// With `--durability disk` an active becomes a witness (paper 6.1 with 7): its store
/// drops its checkpoint, whose files go, and keeps its log. Then every replica is killed
/// at once and restarted from its data directory: each comes back in the new epoch
/// without damage, and everything written before and after the change reads back.
#[test]
fn a_durable_active_becomes_a_witness_and_survives_a_restart_of_all() {
    let mut cluster = TestCluster::start_durable(
        3,
        "kv",
        &["--witnesses", "2", "--checkpoint-interval", "64"],
    );
    cluster.wait_until_serving(SERVING_TIMEOUT);
    let members: Vec<SocketAddr> = cluster.addresses().to_vec();
    let before = ClientOptions {
        witnesses: vsr::protocol::ReplicaSet::of(2),
        ..client_options()
    };
    let mut client = Client::connect(&members, before).expect("connect");
    for n in 0..200 {
        let put = KvOp::Put(Bytes::from(format!("before-{n}")), Bytes::from("v"));
        client.call(put.encode()).expect("put before the change");
    }
    let checkpoint_files = |i: usize| {
        std::fs::read_dir(cluster.data_dir(i))
            .unwrap()
            .flatten()
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("checkpoint-")
            })
            .count()
    };
    wait_for("replica 0 writes a checkpoint file", CHANGE_TIMEOUT, || {
        checkpoint_files(0) > 0
    });
    let (ok, stdout, stderr) = reconfigure_with(&members, &members, &["--witnesses", "0"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "1");
    for i in 0..3 {
        wait_status(&cluster, i, "normal", Some(1));
    }
    let after = ClientOptions {
        witnesses: vsr::protocol::ReplicaSet::of(0),
        ..client_options()
    };
    let mut client = Client::connect(&members, after.clone()).expect("connect");
    for n in 0..200 {
        let put = KvOp::Put(Bytes::from(format!("after-{n}")), Bytes::from("w"));
        client.call(put.encode()).expect("put after the change");
    }
    // The witness's store dropped its checkpoint: its files go at the next group's
    // maintenance (the old actives' hand-over may keep them a little first).
    wait_for(
        "the witness's checkpoint files are removed",
        CHANGE_TIMEOUT,
        || {
            let put = KvOp::Put(Bytes::from("tick"), Bytes::from("t"));
            let _ = client.call(put.encode());
            checkpoint_files(0) == 0
        },
    );
    drop(client);
    for i in 0..3 {
        cluster.kill9(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    for i in 0..3 {
        wait_status(&cluster, i, "normal", Some(1));
    }
    let log = cluster.log(0);
    for trouble in ["does not fold", "damaged", "holds a checkpoint"] {
        assert!(
            !log.contains(trouble),
            "replica 0 logged {trouble:?}:\n{log}"
        );
    }
    let mut client = Client::connect(&members, after).expect("connect");
    for (prefix, value) in [("before", "v"), ("after", "w")] {
        for n in 0..200 {
            let get = KvOp::Get(Bytes::from(format!("{prefix}-{n}")));
            let result = client.call(get.encode()).expect("get after the restart");
            assert_eq!(
                KvResult::decode(&result),
                Some(KvResult::Value(Bytes::from(value))),
                "{prefix}-{n}"
            );
        }
    }
}
