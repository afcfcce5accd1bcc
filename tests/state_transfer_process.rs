//! Checkpoint transfer between real replica processes (issue 12): a state larger than any
//! message (a small version of `perf/state_transfer.sh`).
//!
//! A 3-replica kv cluster on disk holds ~24 MiB of values (more than the largest message,
//! 16 MiB), so a replica whose log no longer reaches the others' can only come back by
//! a checkpoint transfer in parts:
//! - restarted on its own data directory after missing a few hundred puts, it fetches
//!   only the pages that differ from the checkpoint it holds;
//! - restarted empty (its directory wiped), it recovers (paper 4.3) with a full transfer;
//!   killed (kill -9) once it has fetched a quarter of the pages and restarted, it
//!   resumes from the pages it kept on disk (`storage::fetch_file`) instead of starting
//!   over, and then holds every value: with one of the others killed, reads need it.
//!
//! The sources send pages by reference and the receivers hash them off their event loops
//! (`wire::encode_segments`, `runtime/page_hasher.rs`): every path of a real transfer.
//! The sources serve at most 256 KiB per tick each, so that the transfer lasts long
//! enough (about a second) to be caught partway.

mod common;

use bytes::Bytes;
use common::client::TestClient;
use common::cluster::TestCluster;
use common::wait_for;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);
/// 6,000 values of 4,000 bytes: ~24 MB of state.
const KEYS: u32 = 6_000;
const VALUE_BYTES: usize = 4_000;

fn value(key: u32, version: u8) -> Vec<u8> {
    let mut value = vec![version; VALUE_BYTES];
    value[..4].copy_from_slice(&key.to_le_bytes());
    value
}

fn key(key: u32) -> Vec<u8> {
    format!("key {key:06}").into_bytes()
}

fn put_all(client: &mut TestClient, keys: impl Iterator<Item = u32>, version: u8) {
    for k in keys {
        client
            .put(&key(k), &value(k, version), 10 * SECOND)
            .unwrap_or_else(|error| panic!("put of key {k}: {error}"));
    }
}

/// Waits until replica `i` is normal with a commit number at least the primary's now.
fn caught_up(cluster: &mut TestCluster, i: usize, primary: usize) {
    let target = cluster.stats(primary).unwrap().u64("commit");
    wait_for("the restarted replica to catch up", 60 * SECOND, || {
        cluster
            .stats(i)
            .is_ok_and(|s| s.status() == "normal" && s.u64("commit") >= target)
    });
}

#[test]
fn a_state_larger_than_a_message_is_transferred_in_parts() {
    let extra = [
        "--checkpoint-interval",
        "512",
        "--log-tail",
        "64",
        "--checkpoint-serve-bytes-per-tick",
        "262144",
    ];
    let mut cluster = TestCluster::start_durable(3, "kv", &extra);
    cluster.wait_until_serving(30 * SECOND);
    let mut client =
        TestClient::connect(cluster.addresses(), cluster.cluster, 10 * SECOND).unwrap();
    put_all(&mut client, 0..KEYS, 1);
    let primary = cluster.primary().expect("a primary");
    let backup = (0..3).find(|&i| i != primary).unwrap();
    let other = 3 - primary - backup;

    // Missing 600 puts (10% of the keys, past a checkpoint and the log tail): restarted
    // on its own directory, it fetches the differing pages only.
    cluster.kill9(backup);
    put_all(&mut client, (0..KEYS).step_by(10), 2);
    cluster.restart(backup);
    caught_up(&mut cluster, backup, primary);
    let stats = cluster.stats(backup).unwrap();
    let diff_bytes = stats.u64("checkpoint_bytes_fetched");
    let reused = stats.u64("checkpoint_pages_reused");
    assert_eq!(
        stats.u64("checkpoint_fetches_completed"),
        1,
        "{}",
        stats.json
    );
    assert!(reused > 0, "pages it held were reused: {}", stats.json);
    // Its pages were hashed off its event loop (`runtime/page_hasher.rs`) and checked by
    // the core against their manifest's digests.
    assert!(
        stats.u64("checkpoint_parts_hashed_off_loop") > 0,
        "{}",
        stats.json
    );

    // Empty: a full transfer, of more than a message holds, killed partway; the second
    // attempt takes the pages it kept from disk and fetches only the others.
    cluster.kill9(backup);
    std::fs::remove_dir_all(cluster.data_dir(backup)).unwrap();
    put_all(&mut client, (1..KEYS).step_by(10), 3);
    cluster.restart(backup);
    let mut first_bytes = 0;
    wait_for(
        "the wiped replica to fetch a quarter of the pages",
        60 * SECOND,
        || {
            cluster.stats(backup).is_ok_and(|s| {
                let pages = s.u64("checkpoint_fetch_pages");
                first_bytes = s.u64("checkpoint_bytes_fetched");
                pages > 0 && s.u64("checkpoint_fetch_pages_held") * 4 >= pages
            })
        },
    );
    cluster.kill9(backup);
    cluster.restart(backup);
    caught_up(&mut cluster, backup, primary);
    let stats = cluster.stats(backup).unwrap();
    let second_bytes = stats.u64("checkpoint_bytes_fetched");
    let resumed = stats.u64("checkpoint_pages_resumed");
    let full_bytes = first_bytes + second_bytes;
    assert!(
        full_bytes > 16 << 20,
        "a full transfer moves the whole state ({full_bytes} bytes)"
    );
    assert!(resumed > 0, "kept pages were reused: {}", stats.json);
    assert_eq!(
        stats.u64("checkpoint_pages_read_back"),
        stats.u64("checkpoint_pages_resumed"),
        "{}",
        stats.json
    );
    let state_bytes = KEYS as u64 * VALUE_BYTES as u64;
    assert!(
        second_bytes < state_bytes * 9 / 10,
        "the second attempt ({second_bytes} bytes) did not start from zero (state {state_bytes} bytes, first attempt {first_bytes})"
    );
    eprintln!(
        "diff transfer: {diff_bytes} bytes ({reused} pages reused); full: {first_bytes} bytes, killed, then {second_bytes} bytes ({resumed} pages kept on disk reused)"
    );
    assert!(
        diff_bytes * 5 < full_bytes,
        "the diff ({diff_bytes} bytes) is a small part of the state ({full_bytes} bytes)"
    );

    // With `other` gone, every commit needs the restarted replica: it holds the state.
    cluster.kill9(other);
    let mut client =
        TestClient::connect(cluster.addresses(), cluster.cluster, 10 * SECOND).unwrap();
    for k in (0..KEYS).step_by(97) {
        let version = if k % 10 == 1 {
            3
        } else if k % 10 == 0 {
            2
        } else {
            1
        };
        let got = client.get(&key(k), 10 * SECOND).unwrap();
        assert_eq!(got, Some(Bytes::from(value(k, version))), "key {k}");
    }
}
