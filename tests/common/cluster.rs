//! A cluster of real `vsr replica` processes on free 127.0.0.1 ports, for process tests.
//!
//! Every child is killed (SIGKILL) and reaped when the `TestCluster` drops, also when the
//! test panics; on a panic the tail of each replica's log is printed first. Each replica's
//! stderr goes to a log file (appended across restarts) that tests can search for logged
//! rejection reasons; the files are removed when the test passes.

use super::{json_bool, json_str, json_u64};
use bytes::BytesMut;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vsr::auth::ClusterKey;
use vsr::client::RawConnection;
use vsr::wire::{self, Frame, Terms};

/// A replica's answer to a stats request, with accessors for the fields tests use.
#[derive(Clone, Debug)]
pub struct ReplicaStats {
    /// The raw JSON.
    pub json: String,
}

impl ReplicaStats {
    /// `normal`, `view_change`, `recovering`, ...
    pub fn status(&self) -> &str {
        json_str(&self.json, "status").unwrap_or("?")
    }
    /// A numeric field anywhere in the document (`view`, `commit`, `recoveries`, ...).
    pub fn u64(&self, key: &str) -> u64 {
        json_u64(&self.json, key)
            .unwrap_or_else(|| panic!("no numeric field {key:?} in {}", self.json))
    }
    /// Whether the replica is the primary of its view.
    pub fn is_primary(&self) -> bool {
        json_bool(&self.json, "is_primary").unwrap_or(false)
    }
}

/// `addresses` as `--cluster` takes them: comma-separated.
pub fn address_list(addresses: &[SocketAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Free loopback addresses: bound together (so they differ), then released for the
/// replicas to bind. They are drawn at random below the ephemeral range
/// (`tools/loadgen/src/ports.rs`): a port taken with port 0 could be handed, between this
/// check and the replica's bind, to an outgoing connection of a test running at the same
/// time ("Address already in use" failed a CI run so).
pub fn free_addresses(count: usize) -> Vec<SocketAddr> {
    super::ports::free_loopback_addresses(count).expect("free test ports")
}

/// A running cluster of `vsr replica` processes.
pub struct TestCluster {
    addresses: Vec<SocketAddr>,
    args: Vec<Vec<String>>,
    children: Vec<Option<Child>>,
    logs: Vec<PathBuf>,
    /// The cluster id every replica runs with.
    pub cluster: u128,
    /// The cluster key every replica runs with (`--cluster-key`), if any.
    pub key: Option<ClusterKey>,
    /// The file holding it.
    pub key_file: Option<PathBuf>,
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid we spawned and have not reaped; no memory is involved.
    let result = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(result, 0, "kill({}, {signal}) failed", child.id());
}

impl TestCluster {
    /// Starts `count` replicas running `service` with default options.
    pub fn start(count: usize, service: &str) -> TestCluster {
        TestCluster::start_with(count, service, &[])
    }

    /// Starts `count` replicas running `service`, each with `extra` arguments.
    pub fn start_with(count: usize, service: &str, extra: &[&str]) -> TestCluster {
        TestCluster::start_keyed(count, service, extra, None)
    }

    /// Starts `count` replicas running `service` with `extra` arguments and, given `key`,
    /// `--cluster-key` naming a file that holds it.
    pub fn start_keyed(
        count: usize,
        service: &str,
        extra: &[&str],
        key: Option<&[u8]>,
    ) -> TestCluster {
        let mut cluster = TestCluster::build(count, service, extra, key);
        for i in 0..count {
            cluster.spawn(i);
        }
        cluster
    }

    /// Starts `count` replicas running `service` with `extra` arguments and
    /// `--durability disk`, each with its own data directory ([`TestCluster::data_dir`])
    /// under the cluster's directory.
    pub fn start_durable(count: usize, service: &str, extra: &[&str]) -> TestCluster {
        let mut cluster = TestCluster::build(count, service, extra, None);
        for i in 0..count {
            let data_dir = cluster.data_dir(i).display().to_string();
            cluster.args[i].extend([
                "--durability".to_string(),
                "disk".to_string(),
                "--data-dir".to_string(),
                data_dir,
            ]);
            cluster.spawn(i);
        }
        cluster
    }

    /// Replica `i`'s data directory with `start_durable`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.directory().join(format!("data-{i}"))
    }

    /// Replaces replica `i`'s arguments (for its next `restart`).
    pub fn set_args(&mut self, i: usize, args: Vec<String>) {
        self.args[i] = args;
    }

    /// A cluster whose replicas are not started yet.
    fn build(count: usize, service: &str, extra: &[&str], key: Option<&[u8]>) -> TestCluster {
        let addresses = free_addresses(count);
        let list = addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let directory = std::env::temp_dir().join(format!(
            "vsr-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        let key_file = key.map(|key| {
            let path = directory.join("cluster.key");
            std::fs::write(&path, key).unwrap();
            path
        });
        let key_arg = key_file.as_ref().map(|p| p.display().to_string());
        let cluster = TestCluster {
            args: (0..count)
                .map(|i| {
                    let mut args = vec!["replica", "--cluster", &list, "--service", service];
                    if let Some(key_arg) = &key_arg {
                        args.extend(["--cluster-key", key_arg.as_str()]);
                    }
                    args.extend_from_slice(extra);
                    let mut args: Vec<String> = args.into_iter().map(String::from).collect();
                    args.extend(["--replica".to_string(), i.to_string()]);
                    args
                })
                .collect(),
            logs: (0..count)
                .map(|i| directory.join(format!("replica-{i}.log")))
                .collect(),
            children: (0..count).map(|_| None).collect(),
            addresses,
            cluster: 0,
            key: key.map(|key| ClusterKey::from_bytes(key).unwrap()),
            key_file,
        };
        cluster
    }

    fn spawn(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "replica {i} is running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.logs[i])
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vsr"))
            .args(&self.args[i])
            .env(
                "RUST_LOG",
                std::env::var("VSR_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vsr replica");
        self.children[i] = Some(child);
    }

    /// Starts one more replica process, at `address` with `args` (after the binary's
    /// name; a member of another configuration, say, joining the cluster); returns its
    /// number for the other methods.
    pub fn spawn_extra(&mut self, address: SocketAddr, args: Vec<String>) -> usize {
        let i = self.children.len();
        let log = self.directory().join(format!("replica-{i}.log"));
        self.addresses.push(address);
        self.args.push(args);
        self.logs.push(log);
        self.children.push(None);
        self.spawn(i);
        i
    }

    /// Starts a kv replica of the configuration `new` at `new[index]` that joins the
    /// running configuration `old` (`vsr replica --join`), with `extra` arguments; returns
    /// its number.
    pub fn join(
        &mut self,
        new: &[SocketAddr],
        index: usize,
        old: &[SocketAddr],
        extra: &[String],
    ) -> usize {
        let mut args: Vec<String> = ["replica", "--service", "kv", "--cluster"]
            .map(String::from)
            .to_vec();
        args.extend([address_list(new), "--replica".into(), index.to_string()]);
        args.extend(["--join".into(), address_list(old)]);
        args.extend_from_slice(extra);
        self.spawn_extra(new[index], args)
    }

    /// Waits up to `timeout` for replica `i` to exit by itself, and reaps it; its exit
    /// code (`None`: killed by a signal), or an error if it still runs.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Result<Option<i32>, String> {
        let deadline = Instant::now() + timeout;
        let child = self.children[i].as_mut().expect("replica was started");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.children[i] = None;
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                return Err(format!("replica {i} still runs after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every replica's address, in configuration order.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// The arguments replica `i` runs with (after the binary's name).
    pub fn args(&self, i: usize) -> &[String] {
        &self.args[i]
    }

    /// Kills replica `i` with SIGTERM and reaps it.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.children[i].take().expect("replica is running");
        signal(&child, libc::SIGTERM);
        child.wait().unwrap();
    }

    /// Kills replica `i` with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill9(&mut self, i: usize) {
        let mut child = self.children[i].take().expect("replica is running");
        signal(&child, libc::SIGKILL);
        child.wait().unwrap();
    }

    /// Freezes replica `i` (SIGSTOP): its sockets stay open but nothing is read.
    pub fn stop(&mut self, i: usize) {
        signal(
            self.children[i].as_ref().expect("replica is running"),
            libc::SIGSTOP,
        );
    }

    /// Thaws replica `i` (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        signal(
            self.children[i].as_ref().expect("replica is running"),
            libc::SIGCONT,
        );
    }

    /// Starts replica `i` again with the same arguments (it was killed).
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Whether replica `i`'s process is alive.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.children[i]
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// Replica `i`'s process id.
    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().expect("replica is running").id()
    }

    /// Replica `i`'s resident memory in KiB (`VmRSS` in /proc).
    pub fn rss_kib(&self, i: usize) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid(i))).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The directory of this cluster's logs (and key file).
    pub fn directory(&self) -> PathBuf {
        self.logs[0].parent().unwrap().to_path_buf()
    }

    /// Replica `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.logs[i]) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Replica `i`'s stats, or why they could not be fetched.
    pub fn stats(&self, i: usize) -> Result<ReplicaStats, String> {
        fetch_stats(
            self.addresses[i],
            self.cluster,
            self.key.as_ref(),
            Duration::from_millis(500),
        )
        .map(|json| ReplicaStats { json })
    }

    /// Waits until every running replica is normal in one view with one primary.
    pub fn wait_until_serving(&mut self, timeout: Duration) {
        let running: Vec<usize> = (0..self.children.len())
            .filter(|&i| self.children[i].is_some())
            .collect();
        let deadline = Instant::now() + timeout;
        loop {
            let stats: Vec<_> = running.iter().map(|&i| self.stats(i)).collect();
            let serving = stats
                .iter()
                .all(|s| s.as_ref().is_ok_and(|s| s.status() == "normal"))
                && stats.windows(2).all(|w| {
                    w[0].as_ref().unwrap().u64("view") == w[1].as_ref().unwrap().u64("view")
                })
                && stats
                    .iter()
                    .filter(|s| s.as_ref().unwrap().is_primary())
                    .count()
                    == 1;
            if serving {
                return;
            }
            for &i in &running {
                assert!(self.is_running(i), "replica {i} exited:\n{}", self.log(i));
            }
            assert!(
                Instant::now() < deadline,
                "cluster not serving after {timeout:?}: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the replica that says it is primary, if exactly one running does.
    pub fn primary(&self) -> Option<usize> {
        let primaries: Vec<usize> = (0..self.children.len())
            .filter(|&i| {
                self.children[i].is_some()
                    && self
                        .stats(i)
                        .is_ok_and(|s| s.is_primary() && s.status() == "normal")
            })
            .collect();
        (primaries.len() == 1).then(|| primaries[0])
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            if let Some(child) = self.children[i].as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if std::thread::panicking() {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "---- replica {i} log tail ({}) ----",
                    self.logs[i].display()
                );
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        // A passing test leaves nothing behind; a failing one keeps its logs.
        if !std::thread::panicking() {
            if let Some(directory) = self.logs.first().and_then(|log| log.parent()) {
                let _ = std::fs::remove_dir_all(directory);
            }
        }
    }
}

/// Asks the replica at `address` for its stats over a fresh connection.
pub fn fetch_stats(
    address: SocketAddr,
    cluster: u128,
    key: Option<&ClusterKey>,
    timeout: Duration,
) -> Result<String, String> {
    let terms = Terms {
        cluster,
        epoch: 0,
        members: Vec::new(),
        limits: None,
    };
    let mut connection = RawConnection::connect(address, 0x5747_5354, terms, key, timeout)
        .map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    wire::encode_stats_request(cluster, &mut out);
    connection.send(&out).map_err(|e| e.to_string())?;
    loop {
        match connection.read_frame().map_err(|e| e.to_string())? {
            Frame::StatsReply(text) => return Ok(String::from_utf8_lossy(&text).into_owned()),
            _ => continue,
        }
    }
}
