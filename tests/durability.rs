//! `--durability disk` with real processes on 127.0.0.1: every replica killed with
//! SIGKILL at once under a write load and restarted on the same data directories loses
//! no acknowledged write; a data directory that is in use, of another cluster or replica,
//! truncated, overwritten with garbage, read-only or full gives a clear error or a
//! correct recovery through the protocol, never a panic and never silent loss.

mod common;

use bytes::Bytes;
use common::cluster::TestCluster;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vsr::client::{Client, ClientOptions};
use vsr::service::kv::{KvOp, KvResult};

const SECOND: Duration = Duration::from_secs(1);
/// Puts one writer thread makes at most.
const PUTS_MAX: u64 = 20_000;

fn options(cluster: &TestCluster) -> ClientOptions {
    ClientOptions {
        cluster_id: cluster.cluster,
        request_timeout: 3 * SECOND,
        ..ClientOptions::default()
    }
}

fn key(writer: usize, n: u64) -> Bytes {
    Bytes::from(format!("d{writer}-{n}"))
}

fn value(n: u64) -> Bytes {
    Bytes::from(format!("v{n}-{}", "x".repeat((n % 64) as usize)))
}

/// Writer threads putting `d{writer}-{n}`, each through the client library, recording
/// what was acknowledged. Bounded: each stops after `PUTS_MAX` puts or when told.
struct Load {
    acknowledged: Arc<Mutex<Vec<(usize, u64)>>>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &TestCluster, writers: usize) -> Load {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..writers)
            .map(|writer| {
                let addresses = cluster.addresses().to_vec();
                let options = options(cluster);
                let (acks, counter, stopping) = (acknowledged.clone(), count.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut client = None;
                    for n in 0..PUTS_MAX {
                        if stopping.load(Ordering::Relaxed) {
                            return;
                        }
                        if client.is_none() {
                            // Fails while every replica is down: retried after a pause (a
                            // refused connection fails at once, and n is bounded).
                            client = Client::connect(&addresses, options.clone()).ok();
                            if client.is_none() {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            continue;
                        }
                        let put = KvOp::Put(key(writer, n), value(n)).encode();
                        // An error is an unknown outcome: not counted; the client starts
                        // a fresh session for the next put.
                        if let Ok(result) = client.as_mut().expect("connected").call(put) {
                            assert_eq!(KvResult::decode(&result), Some(KvResult::Ok));
                            acks.lock().unwrap().push((writer, n));
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Load {
            acknowledged,
            count,
            stop,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn wait_for_progress(&self, more: usize, timeout: Duration) {
        let target = self.count() + more;
        common::wait_for(&format!("{more} more acknowledged puts"), timeout, || {
            self.count() >= target
        });
    }

    fn finish(mut self) -> Vec<(usize, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
        std::mem::take(&mut *self.acknowledged.lock().unwrap())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every acknowledged put reads back with its value.
fn check_all_read_back(cluster: &TestCluster, acknowledged: &[(usize, u64)]) {
    let options = ClientOptions {
        request_timeout: 10 * SECOND,
        ..options(cluster)
    };
    let mut reader = Client::connect(cluster.addresses(), options).unwrap();
    for &(writer, n) in acknowledged {
        let result = reader.call(KvOp::Get(key(writer, n)).encode()).unwrap();
        assert_eq!(
            KvResult::decode(&result),
            Some(KvResult::Value(value(n))),
            "acknowledged put d{writer}-{n} lost"
        );
    }
}

fn kill_all_and_restart(cluster: &mut TestCluster) {
    for i in 0..3 {
        cluster.kill9(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
}

fn assert_no_panic(cluster: &TestCluster) {
    for i in 0..3 {
        let log = cluster.log(i);
        assert!(!log.contains("panicked"), "replica {i} panicked:\n{log}");
    }
}

/// Runs `vsr` with `args` to its exit (at most 20 s); returns whether it succeeded and
/// its stderr.
fn run_to_exit(args: &[String]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + 20 * SECOND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vsr {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "vsr panicked:\n{stderr}");
    (status.success(), stderr)
}

/// `args` with `flag`'s value replaced (or the flag added).
fn with_arg(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut args = args.to_vec();
    match args.iter().position(|arg| arg == flag) {
        Some(at) => args[at + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
    args
}

/// Where a journal's batches end (what follows may be zeros or the batches of the file's
/// earlier use, once journal files are recycled).
fn used_bytes(journal: &Path) -> usize {
    let bytes = std::fs::read(journal).unwrap();
    vsr::storage::journal::replay(&bytes, "journal").valid_bytes as usize
}

#[test]
fn every_replica_killed_at_once_under_load_loses_no_acknowledged_write() {
    // A small checkpoint interval, so that checkpoints are written to their files and
    // the journals compacted while the load runs.
    let mut cluster = TestCluster::start_durable(3, "kv", &["--checkpoint-interval", "512"]);
    cluster.wait_until_serving(30 * SECOND);
    let stats = cluster.stats(0).unwrap();
    assert_eq!(common::json_str(&stats.json, "durability"), Some("disk"));
    let load = Load::start(&cluster, 4);
    load.wait_for_progress(1500, 60 * SECOND);

    for round in 0..2 {
        kill_all_and_restart(&mut cluster);
        let restarted = Instant::now();
        cluster.wait_until_serving(60 * SECOND);
        eprintln!(
            "round {round}: serving {:?} after the restart",
            restarted.elapsed()
        );
        load.wait_for_progress(300, 60 * SECOND);
    }
    let acknowledged = load.finish();
    eprintln!("{} puts acknowledged", acknowledged.len());
    check_all_read_back(&cluster, &acknowledged);
    assert_no_panic(&cluster);
    for i in 0..3 {
        let log = cluster.log(i);
        assert!(
            log.contains("restarting from storage"),
            "replica {i}:\n{log}"
        );
        // A crash is never damage: every restart resumed from an intact journal.
        assert!(!log.contains("damaged"), "replica {i}:\n{log}");
        assert!(!log.contains("does not fold"), "replica {i}:\n{log}");
        let files: Vec<String> = std::fs::read_dir(cluster.data_dir(i))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            files.iter().any(|name| name.starts_with("checkpoint-")),
            "replica {i} wrote no checkpoint file: {files:?}"
        );
        // Bounded: a journal that fills up is compacted into a spare of at most 64 MiB
        // (when it happens depends on timing: `storage::data_dir`'s unit tests check
        // the compaction itself).
        let journal = std::fs::metadata(cluster.data_dir(i).join("journal")).unwrap();
        assert!(
            journal.len() <= 64 << 20,
            "journal of replica {i}: {} bytes",
            journal.len()
        );
    }
}

/// Incremental checkpoint files written by `replica`'s data directory so far.
fn incremental_checkpoint_files(cluster: &TestCluster, replica: usize) -> u64 {
    (cluster.stats(replica).ok())
        .and_then(|stats| common::json_u64(&stats.json, "storage_checkpoint_files_incremental"))
        .unwrap_or(0)
}

/// How many checkpoint files `replica`'s last start read its checkpoint from (its
/// "data directory opened" line).
fn checkpoint_files_read_at_start(cluster: &TestCluster, replica: usize) -> Option<u64> {
    let log = cluster.log(replica);
    let line = log
        .lines()
        .rev()
        .find(|line| line.contains("data directory opened"))?;
    let start = line.find("checkpoint_files=")? + "checkpoint_files=".len();
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Checkpoints that change a few pages of a larger state write incremental files
/// (`storage::checkpoint_file`): every replica killed at once restarts from a chain of
/// files, and every acknowledged write reads back.
#[test]
fn every_replica_restarts_from_a_chain_of_incremental_checkpoint_files() {
    let mut cluster = TestCluster::start_durable(3, "kv", &["--checkpoint-interval", "256"]);
    cluster.wait_until_serving(30 * SECOND);
    let mut client = Client::connect(cluster.addresses(), options(&cluster)).unwrap();
    let mut written = std::collections::BTreeMap::new();
    let mut put = |client: &mut Client, key: Bytes, value: Bytes| {
        let result = client.call(KvOp::Put(key.clone(), value.clone()).encode());
        assert_eq!(KvResult::decode(&result.unwrap()), Some(KvResult::Ok));
        written.insert(key, value);
    };
    // A state of dozens of pages, then a hot set of five keys: each checkpoint after
    // changes a few of its pages.
    for n in 0..600 {
        put(
            &mut client,
            key(9, n),
            Bytes::from(vec![b'a' + (n % 26) as u8; 200]),
        );
    }
    let mut round = 0u64;
    common::wait_for(
        "two incremental checkpoint files on every replica",
        120 * SECOND,
        || {
            for _ in 0..64 {
                put(&mut client, key(9, round % 5), value(round));
                round += 1;
            }
            (0..3).all(|i| incremental_checkpoint_files(&cluster, i) >= 2)
        },
    );
    drop(client);
    for i in 0..3 {
        cluster.kill9(i);
    }
    for i in 0..3 {
        let files = std::fs::read_dir(cluster.data_dir(i))
            .unwrap()
            .flatten()
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("checkpoint-")
            })
            .count();
        assert!(files >= 2, "replica {i} holds {files} checkpoint files");
        cluster.restart(i);
    }
    cluster.wait_until_serving(60 * SECOND);
    for i in 0..3 {
        let read = checkpoint_files_read_at_start(&cluster, i);
        assert!(
            read >= Some(2),
            "replica {i} read its checkpoint from {read:?} files"
        );
        let log = cluster.log(i);
        assert!(!log.contains("damaged"), "replica {i}:\n{log}");
    }
    let mut reader = Client::connect(cluster.addresses(), options(&cluster)).unwrap();
    for (key, value) in &written {
        let result = reader.call(KvOp::Get(key.clone()).encode()).unwrap();
        assert_eq!(
            KvResult::decode(&result),
            Some(KvResult::Value(value.clone()))
        );
    }
    assert_no_panic(&cluster);
}

#[test]
fn a_data_directory_in_use_or_of_another_replica_or_cluster_is_refused() {
    let mut cluster = TestCluster::start_durable(3, "kv", &[]);
    cluster.wait_until_serving(30 * SECOND);
    let own = cluster.data_dir(0).display().to_string();

    // A second process on a directory in use.
    let (ok, stderr) = run_to_exit(cluster.args(0));
    assert!(!ok);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(stderr.contains(&own), "{stderr}");

    // Another cluster's directory, another replica's, and a missing --data-dir.
    cluster.kill9(0);
    let (ok, stderr) = run_to_exit(&with_arg(cluster.args(0), "--cluster-id", "99"));
    assert!(!ok);
    assert!(
        stderr.contains("belongs to replica 0 of 3 in cluster 0"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{own}/meta")), "{stderr}");
    cluster.kill9(2);
    let other = cluster.data_dir(2).display().to_string();
    let (ok, stderr) = run_to_exit(&with_arg(cluster.args(0), "--data-dir", &other));
    assert!(!ok);
    assert!(stderr.contains("belongs to replica 2 of 3"), "{stderr}");
    let memory: Vec<String> = cluster
        .args(0)
        .iter()
        .take_while(|arg| *arg != "--durability")
        .cloned()
        .collect();
    let (ok, stderr) = run_to_exit(&with_arg(&memory, "--durability", "disk"));
    assert!(!ok);
    assert!(
        stderr.contains("--durability disk needs --data-dir"),
        "{stderr}"
    );

    // The refusals changed nothing: both come back on their own directories.
    cluster.restart(0);
    cluster.restart(2);
    cluster.wait_until_serving(60 * SECOND);
    assert_no_panic(&cluster);
}

/// A way to damage a journal file, by name.
type Damage = (&'static str, fn(&Path));

#[test]
fn damaged_journals_recover_through_the_protocol() {
    let mut cluster = TestCluster::start_durable(3, "kv", &[]);
    cluster.wait_until_serving(30 * SECOND);
    let mut acknowledged = Vec::new();
    // One replica's journal is damaged per round (at most f = 1 lose their disk at once);
    // every replica is killed each time.
    let damages: [Damage; 3] = [
        ("truncated", |journal| {
            let used = used_bytes(journal) as u64;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(journal)
                .unwrap();
            file.set_len(used / 2 + 1234).unwrap();
        }),
        ("overwritten in the middle", |journal| {
            // Over the header of a batch in the middle (padding between batches holds
            // nothing, so garbage there is no damage).
            let mut bytes = std::fs::read(journal).unwrap();
            let middle = used_bytes(journal) / 2;
            let batch = (0..=middle / 4096)
                .rev()
                .map(|block| block * 4096)
                .find(|&at| bytes[at..].starts_with(b"VSRBATCH"))
                .expect("a batch before the middle");
            bytes[batch + 8..batch + 1008].fill(0xa5);
            std::fs::write(journal, bytes).unwrap();
        }),
        ("with garbage appended", |journal| {
            let mut bytes = std::fs::read(journal).unwrap();
            bytes.extend_from_slice(&[0x5a; 777]);
            std::fs::write(journal, bytes).unwrap();
        }),
    ];
    for (round, (what, damage)) in damages.into_iter().enumerate() {
        let load = Load::start(&cluster, 2);
        load.wait_for_progress(400, 60 * SECOND);
        let victim = round % 3;
        for i in 0..3 {
            cluster.kill9(i);
        }
        acknowledged.extend(load.finish());
        damage(&cluster.data_dir(victim).join("journal"));
        for i in 0..3 {
            cluster.restart(i);
        }
        cluster.wait_until_serving(60 * SECOND);
        let log = cluster.log(victim);
        assert!(
            log.contains("the data directory is damaged"),
            "replica {victim}, journal {what}: damage not noticed:\n{log}"
        );
        common::wait_for("the damaged replica to recover", 60 * SECOND, || {
            cluster
                .stats(victim)
                .is_ok_and(|s| s.status() == "normal" && s.u64("recoveries") >= 1)
        });
        check_all_read_back(&cluster, &acknowledged);
        eprintln!(
            "journal {what}: recovered, {} puts read back",
            acknowledged.len()
        );
    }
    assert_no_panic(&cluster);
}

/// Makes a file immutable (root) or read-only (anyone else) until dropped.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn new(path: &Path) -> ReadOnly {
        let immutable = Command::new("chattr").arg("+i").arg(path).status();
        if !immutable.is_ok_and(|status| status.success()) {
            let mut permissions = std::fs::metadata(path).unwrap().permissions();
            permissions.set_readonly(true);
            std::fs::set_permissions(path, permissions).unwrap();
        }
        ReadOnly(path.into())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        if let Ok(metadata) = std::fs::metadata(&self.0) {
            let mut permissions = metadata.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            permissions.set_readonly(false);
            let _ = std::fs::set_permissions(&self.0, permissions);
        }
    }
}

/// A small tmpfs mounted on a directory until dropped (needs root; `None` otherwise).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status();
        mounted
            .is_ok_and(|status| status.success())
            .then(|| SmallDisk(path.into()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_or_full_disk_stops_the_replica_with_a_clear_error() {
    let mut cluster = TestCluster::start_durable(3, "kv", &[]);
    cluster.wait_until_serving(30 * SECOND);

    // Read-only: refused at start, naming the file.
    cluster.kill9(0);
    let journal = cluster.data_dir(0).join("journal");
    {
        let _read_only = ReadOnly::new(&journal);
        let (ok, stderr) = run_to_exit(cluster.args(0));
        assert!(!ok);
        assert!(stderr.contains(&journal.display().to_string()), "{stderr}");
    }
    cluster.restart(0);
    cluster.wait_until_serving(60 * SECOND);

    // Full: replica 0 starts afresh on a 6 MiB tmpfs and stops when it fills, naming the
    // file; the others go on and nothing acknowledged is lost.
    cluster.kill9(0);
    std::fs::remove_dir_all(cluster.data_dir(0)).unwrap();
    let Some(_disk) = SmallDisk::mount(&cluster.data_dir(0), "6m") else {
        eprintln!("cannot mount a tmpfs here (not root): the full-disk half is not run");
        return;
    };
    cluster.restart(0);
    cluster.wait_until_serving(60 * SECOND);
    let load = Load::start(&cluster, 4);
    common::wait_for("replica 0 to stop on a full disk", 120 * SECOND, || {
        !cluster.is_running(0)
    });
    load.wait_for_progress(200, 60 * SECOND);
    let acknowledged = load.finish();
    let log = cluster.log(0);
    assert!(log.contains("No space left on device"), "{log}");
    assert!(
        log.contains(&cluster.data_dir(0).display().to_string()),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    check_all_read_back(&cluster, &acknowledged);
}

#[test]
fn a_restarted_replica_resumes_from_its_disk_and_a_torn_tail_is_no_damage() {
    let mut cluster = TestCluster::start_durable(3, "kv", &[]);
    cluster.wait_until_serving(30 * SECOND);
    let load = Load::start(&cluster, 2);
    load.wait_for_progress(300, 60 * SECOND);

    // The primary alone: it resumes from its journal (no recovery through the protocol)
    // and catches up on what it missed.
    let primary = cluster.primary().expect("one primary");
    cluster.kill9(primary);
    load.wait_for_progress(300, 60 * SECOND);
    cluster.restart(primary);
    load.wait_for_progress(300, 60 * SECOND);
    let acknowledged = load.finish();
    let serving = cluster.primary().expect("one primary");
    let commit = cluster.stats(serving).unwrap().u64("commit");
    common::wait_for("the restarted replica to catch up", 60 * SECOND, || {
        cluster
            .stats(primary)
            .is_ok_and(|s| s.status() == "normal" && s.u64("commit") >= commit)
    });
    assert_eq!(cluster.stats(primary).unwrap().u64("recoveries"), 0);
    assert!(cluster.log(primary).contains("restarting from storage"));

    // A batch cut short by a crash at the end of one journal: cut off on start, no
    // damage, no recovery.
    for i in 0..3 {
        cluster.kill9(i);
    }
    // Its first sector landed: the header of the next batch of the journal's file.
    let journal = cluster.data_dir(1).join("journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    let replay = vsr::storage::journal::replay(&bytes, "journal");
    let next = replay.valid_bytes as usize;
    let mut torn = Vec::new();
    vsr::storage::journal::encode_batch(
        replay.next_sequence,
        replay.file_id.expect("batches"),
        &mut torn,
        |out| out.extend_from_slice(&[0x5a; 10_000]),
    );
    bytes[next..next + 512].copy_from_slice(&torn[..512]);
    std::fs::write(&journal, bytes).unwrap();
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_until_serving(60 * SECOND);
    let log = cluster.log(1);
    assert!(log.contains("zeroing a torn batch"), "{log}");
    assert!(!log.contains("the data directory is damaged"), "{log}");
    assert_eq!(cluster.stats(1).unwrap().u64("recoveries"), 0);
    check_all_read_back(&cluster, &acknowledged);
    assert_no_panic(&cluster);
}
