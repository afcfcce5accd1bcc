//! Short, bounded runs of each mode of the `vsr-load` binary on loopback. Every child
//! `vsr-load` is killed if a test fails (its own children die with it: PR_SET_PDEATHSIG),
//! and the tests take a lock so that only one cluster runs at a time on a 2-core machine.

#[path = "../src/ports.rs"]
mod ports;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Held by a test for as long as its processes run (a failed test does not block the rest).
fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A running `vsr-load`, killed on drop.
struct Run {
    child: Child,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn spawn(args: &[&str]) -> Run {
    spawn_in(&std::env::current_dir().unwrap(), args)
}

/// `vsr-load args` started in the working directory `dir`.
fn spawn_in(dir: &std::path::Path, args: &[&str]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_vsr-load"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vsr-load starts");
    Run { child }
}

/// Runs `vsr-load args` to completion within `timeout` (killing it past that).
fn run(args: &[&str], timeout: Duration) -> Finished {
    run_in(&std::env::current_dir().unwrap(), args, timeout)
}

/// [`run`] in the working directory `dir`.
fn run_in(dir: &std::path::Path, args: &[&str], timeout: Duration) -> Finished {
    let mut run = spawn_in(dir, args);
    let mut stdout = run.child.stdout.take().unwrap();
    let mut stderr = run.child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "vsr-load {args:?} did not finish within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vsr-load-test-{}-{name}", std::process::id()))
}

fn table_value(stdout: &str, row: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row} row in:\n{stdout}"));
    line[row.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn assert_success(finished: &Finished) {
    assert_eq!(
        finished.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        finished.stdout,
        finished.stderr
    );
}

const SHORT: [&str; 4] = ["--duration", "2s", "--warmup", "300ms"];

#[test]
fn baseline_closed_loop_writes_the_documented_json() {
    let _lock = one_cluster_at_a_time();
    let json_path = temp_path("baseline.json");
    let hgrm_path = temp_path("baseline.hgrm");
    let mut args = vec![
        "--baseline",
        "tcp",
        "--sessions",
        "16",
        "--connections",
        "2",
        "--payload-bytes",
        "128",
    ];
    args.extend(SHORT);
    args.extend([
        "--json",
        json_path.to_str().unwrap(),
        "--hgrm",
        hgrm_path.to_str().unwrap(),
    ]);
    let finished = run(&args, Duration::from_secs(60));
    assert_success(&finished);
    assert!(
        table_value(&finished.stdout, "ops/s") > 0.0,
        "{}",
        finished.stdout
    );
    assert!(
        finished.stderr.contains("ops/s  p50"),
        "no progress line:\n{}",
        finished.stderr
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // The keys scripts read come first, in their documented order; newer keys follow.
    assert_eq!(
        keys[..7],
        [
            "ops",
            "seconds",
            "ops_per_sec",
            "latency_us",
            "replicas",
            "sessions",
            "payload_bytes"
        ]
    );
    assert_eq!(json["durability"], serde_json::Value::Null, "{json}");
    assert!(json["ops"].as_u64().unwrap() > 0);
    assert_eq!(json["replicas"], 3);
    assert_eq!(json["sessions"], 16);
    assert_eq!(json["payload_bytes"], 128);
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            json["latency_us"][key].as_u64().unwrap() > 0,
            "{key}: {json}"
        );
    }
    let hgrm = std::fs::read_to_string(&hgrm_path).unwrap();
    assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
    assert!(hgrm.contains("#[Max     ="));
    let _ = std::fs::remove_file(json_path);
    let _ = std::fs::remove_file(hgrm_path);
}

#[test]
fn baseline_open_loop_holds_the_rate() {
    let _lock = one_cluster_at_a_time();
    let mut args = vec![
        "--baseline",
        "tcp",
        "--rate",
        "500",
        "--sessions",
        "32",
        "--quiet",
    ];
    args.extend(SHORT);
    let finished = run(&args, Duration::from_secs(60));
    assert_success(&finished);
    let rate = table_value(&finished.stdout, "ops/s");
    assert!(
        (300.0..=700.0).contains(&rate),
        "open loop at 500/s measured {rate}:\n{}",
        finished.stdout
    );
}

#[test]
fn baseline_tiny_sweep_writes_csv_and_svg() {
    let _lock = one_cluster_at_a_time();
    let csv = temp_path("sweep.csv");
    let svg = temp_path("sweep.svg");
    let args = [
        "--baseline",
        "tcp",
        "--sweep",
        "--sweep-sessions-max",
        "4",
        "--duration",
        "400ms",
        "--warmup",
        "100ms",
        "--quiet",
        "--csv",
        csv.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ];
    let finished = run(&args, Duration::from_secs(60));
    assert_success(&finished);
    assert!(finished.stdout.contains("knee: "), "{}", finished.stdout);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("sessions,connections,ops_per_sec"));
    assert!(text.lines().count() >= 2, "{text}");
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let _ = std::fs::remove_file(csv);
    let _ = std::fs::remove_file(svg);
}

/// The processes whose command line mentions `needle` (from /proc).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn ctrl_c_reports_and_stops_the_baseline_processes() {
    check_ctrl_c(
        &["--baseline", "tcp"],
        "vsr-load: started the tcp baseline on ",
    );
}

#[test]
fn ctrl_c_reports_and_stops_the_local_replicas() {
    check_ctrl_c(&[], "vsr-load: started 3 replicas on ");
}

/// Starts a 60 s run, interrupts it once load flows, and expects a report, exit code 130
/// and none of the local processes left (found by their addresses on /proc cmdlines).
fn check_ctrl_c(extra: &[&str], address_line: &str) {
    let _lock = one_cluster_at_a_time();
    let mut args = vec!["--duration", "60s", "--warmup", "0s"];
    args.extend_from_slice(extra);
    let mut run = spawn(&args);
    let mut stderr = BufReader::new(run.child.stderr.take().unwrap());
    // Wait for the address line, then for the first progress line (the load is running).
    let mut addresses = None;
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "vsr-load ended early"
        );
        if let Some(rest) = line.strip_prefix(address_line) {
            addresses = Some(rest.split_whitespace().next().unwrap().to_string());
        }
        if line.contains("ops/s") {
            break;
        }
    }
    let addresses = addresses.expect("the address line");
    let second = addresses.split(',').nth(1).unwrap().to_string();
    assert!(
        !processes_mentioning(&second).is_empty(),
        "the second local process is not running"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(run.child.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "vsr-load did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    let mut stdout = String::new();
    run.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(stdout.contains("interrupted"), "{stdout}");
    for address in addresses.split(',') {
        assert!(
            processes_mentioning(address).is_empty(),
            "a process on {address} outlived vsr-load"
        );
    }
}

#[test]
fn vsr_closed_loop_kv_mix_writes_the_documented_json() {
    let _lock = one_cluster_at_a_time();
    let json_path = temp_path("vsr.json");
    let hgrm_path = temp_path("vsr.hgrm");
    let mut args = vec!["--service", "kv", "--read-fraction", "0.5", "--keys", "100"];
    args.extend([
        "--sessions",
        "16",
        "--connections",
        "2",
        "--payload-bytes",
        "100",
    ]);
    args.extend(SHORT);
    args.extend([
        "--json",
        json_path.to_str().unwrap(),
        "--hgrm",
        hgrm_path.to_str().unwrap(),
    ]);
    let finished = run(&args, Duration::from_secs(90));
    assert_success(&finished);
    assert!(
        table_value(&finished.stdout, "ops/s") > 0.0,
        "{}",
        finished.stdout
    );
    assert_eq!(
        table_value(&finished.stdout, "errors"),
        0.0,
        "{}",
        finished.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert!(json["ops"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(json["replicas"], 3);
    assert_eq!(json["sessions"], 16);
    assert_eq!(json["payload_bytes"], 100);
    assert_eq!(json["durability"], "memory", "{json}");
    assert!(
        json["latency_us"]["p99"].as_u64().unwrap() >= json["latency_us"]["p50"].as_u64().unwrap()
    );
    assert!(std::fs::read_to_string(&hgrm_path)
        .unwrap()
        .contains("#[Mean    ="));
    let _ = std::fs::remove_file(json_path);
    let _ = std::fs::remove_file(hgrm_path);
}

#[test]
fn vsr_disk_cluster_reports_its_durability_mode() {
    let _lock = one_cluster_at_a_time();
    let json_path = temp_path("disk.json");
    let args = [
        "--durability",
        "disk",
        "--sessions",
        "4",
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
        "--quiet",
        "--json",
        json_path.to_str().unwrap(),
    ];
    let finished = run(&args, Duration::from_secs(90));
    assert_success(&finished);
    let row = finished
        .stdout
        .lines()
        .find(|l| l.starts_with("durability"))
        .unwrap_or_else(|| panic!("no durability row:\n{}", finished.stdout));
    assert!(row.trim_end().ends_with("disk"), "{row}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(json["durability"], "disk", "{json}");
    let _ = std::fs::remove_file(json_path);
}

#[test]
fn vsr_open_loop_holds_a_modest_rate() {
    let _lock = one_cluster_at_a_time();
    let mut args = vec!["--rate", "300", "--sessions", "32", "--quiet"];
    args.extend(SHORT);
    let finished = run(&args, Duration::from_secs(90));
    assert_success(&finished);
    let rate = table_value(&finished.stdout, "ops/s");
    assert!(
        (150.0..=450.0).contains(&rate),
        "open loop at 300/s measured {rate}:\n{}",
        finished.stdout
    );
}

#[test]
fn vsr_open_loop_sizes_its_sessions_and_reports_both_latencies() {
    let _lock = one_cluster_at_a_time();
    let json_path = temp_path("open.json");
    let mut args = vec![
        "--rate",
        "300",
        "--quiet",
        "--json",
        json_path.to_str().unwrap(),
    ];
    let hgrm_path = temp_path("open.hgrm");
    args.extend(["--hgrm", hgrm_path.to_str().unwrap()]);
    args.extend(SHORT);
    let finished = run(&args, Duration::from_secs(90));
    assert_success(&finished);
    assert!(
        finished
            .stdout
            .contains("held the open loop at 300 ops/s with 64 sessions"),
        "{}",
        finished.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(json["mode"], "open", "{json}");
    assert_eq!(json["rate_target"], 300.0, "{json}");
    assert_eq!(json["sessions_auto"], true, "{json}");
    assert_eq!(json["session_waits"], 0, "{json}");
    // Each operation's latency from its intended send time is at least its service time.
    for q in ["p50", "p99", "max"] {
        let corrected = json["latency_us"][q].as_u64().unwrap();
        let service = json["service_time_us"][q].as_u64().unwrap();
        assert!(service > 0 && corrected >= service, "{q}: {json}");
    }
    // Both distributions, as wrk2 prints them: corrected, and the service time beside it.
    let service_hgrm = temp_path("open.service.hgrm");
    for path in [&hgrm_path, &service_hgrm] {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("#[Mean    ="), "{}", path.display());
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(json_path);
}

#[test]
fn vsr_open_loop_names_too_few_sessions_as_its_own_limit() {
    let _lock = one_cluster_at_a_time();
    // One session cannot carry 100,000 ops/s: that needs a 10 us round trip through three
    // replicas.
    let mut args = vec!["--rate", "100000", "--sessions", "1", "--quiet"];
    args.extend(SHORT);
    let finished = run(&args, Duration::from_secs(90));
    assert_success(&finished);
    assert!(
        finished
            .stdout
            .contains("the load generator could not keep 100000 ops/s"),
        "{}",
        finished.stdout
    );
    assert!(finished.stdout.contains("not the cluster's"));
    assert!(!finished.stdout.contains("cluster falls behind"));
    assert!(table_value(&finished.stdout, "unsent") > 0.0);
}

#[test]
fn vsr_tiny_sweep_prints_the_knee() {
    let _lock = one_cluster_at_a_time();
    let csv = temp_path("vsr-sweep.csv");
    let svg = temp_path("vsr-sweep.svg");
    let args = [
        "--sweep",
        "--sweep-sessions-max",
        "4",
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
        "--quiet",
        "--csv",
        csv.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ];
    let finished = run(&args, Duration::from_secs(90));
    assert_success(&finished);
    assert!(finished.stdout.contains("knee: "), "{}", finished.stdout);
    assert!(std::fs::read_to_string(&csv).unwrap().lines().count() >= 2);
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let _ = std::fs::remove_file(csv);
    let _ = std::fs::remove_file(svg);
}

#[test]
fn compare_runs_vsr_and_the_baseline_side_by_side() {
    let _lock = one_cluster_at_a_time();
    let json_path = temp_path("compare.json");
    let args = [
        "--compare",
        "--sessions",
        "8",
        "--connections",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--quiet",
        "--json",
        json_path.to_str().unwrap(),
    ];
    let finished = run(&args, Duration::from_secs(120));
    assert_success(&finished);
    let header = finished
        .stdout
        .lines()
        .find(|l| l.contains("ratio"))
        .unwrap_or_default();
    assert!(
        header.contains("vsr") && header.contains("tcp baseline"),
        "{}",
        finished.stdout
    );
    assert!(table_value(&finished.stdout, "ops/s") > 0.0);
    let baseline_json = json_path.with_file_name(format!(
        "{}.baseline.json",
        json_path.file_stem().unwrap().to_string_lossy()
    ));
    for path in [&json_path, &baseline_json] {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(
            json["ops"].as_u64().unwrap() > 0,
            "{}: {json}",
            path.display()
        );
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn check_finds_the_kv_service_linearizable() {
    let _lock = one_cluster_at_a_time();
    let args = [
        "--check",
        "--service",
        "kv",
        "--sessions",
        "8",
        "--duration",
        "2s",
    ];
    let finished = run(&args, Duration::from_secs(90));
    assert_success(&finished);
    assert!(
        finished.stdout.contains("verdict: linearizable"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stdout.contains("key check-0: linearizable"),
        "{}",
        finished.stdout
    );
}

/// The `vsr` binary next to `vsr-load` (built with cargo if it is not there yet).
fn vsr_binary() -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_vsr-load")).with_file_name("vsr");
    if !path.is_file() {
        let target_dir = path.parent().unwrap().parent().unwrap();
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .args(["build", "-p", "vsr", "--bin", "vsr", "--target-dir"])
            .arg(target_dir)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building vsr failed");
    }
    path
}

/// Three `vsr replica` processes started by the test itself (so that they can run another
/// service or cluster id than the load generator expects); killed on drop.
struct Replicas {
    children: Vec<Child>,
    addresses: Vec<String>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SAFETY: kill(2) on our own children; SIGCONT first in case a test stopped them.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Replicas {
    /// Starts three replicas of `service` with `cluster_id` and waits (with a deadline)
    /// until every one reports status normal.
    fn start(service: &str, cluster_id: &str) -> Replicas {
        let addresses: Vec<String> = ports::free_loopback_addresses(3)
            .expect("free loopback ports")
            .iter()
            .map(ToString::to_string)
            .collect();
        let vsr = vsr_binary();
        let mut replicas = Replicas {
            children: Vec::new(),
            addresses,
        };
        for replica in 0..3 {
            let child = Command::new(&vsr)
                .args(["replica", "--cluster", &replicas.list()])
                .args(["--replica", &replica.to_string(), "--service", service])
                .args(["--cluster-id", cluster_id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("vsr replica starts");
            replicas.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for address in replicas.addresses.clone() {
            loop {
                let output = Command::new(&vsr)
                    .args(["stats", "--address", &address, "--cluster-id", cluster_id])
                    .args(["--timeout-ms", "500"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&output.stdout).contains("\"status\":\"normal\"") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {address} not normal within 30 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        replicas
    }

    fn list(&self) -> String {
        self.addresses.join(",")
    }

    /// SIGSTOPs replicas `indices` (they keep their sockets but answer nothing).
    fn freeze(&self, indices: &[usize]) {
        for &i in indices {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(self.children[i].id() as libc::pid_t, libc::SIGSTOP) };
        }
    }
}

/// A run against `replicas` that must end in an error naming `cause`, well before its 30 s
/// duration, and print no table.
fn check_stops_with(replicas: &Replicas, extra: &[&str], cause: &str) {
    let list = replicas.list();
    let mut args = vec!["--cluster", list.as_str(), "--duration", "30s", "--quiet"];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let finished = run(&args, Duration::from_secs(25));
    assert_eq!(finished.code, Some(1), "stdout:\n{}", finished.stdout);
    assert!(
        finished.stderr.contains(cause),
        "expected {cause:?} in:\n{}",
        finished.stderr
    );
    assert!(
        !finished.stdout.contains("ops/s"),
        "a table was printed:\n{}",
        finished.stdout
    );
    assert!(started.elapsed() < Duration::from_secs(10), "not prompt");
}

#[test]
fn a_null_load_on_a_kv_cluster_stops_naming_kv() {
    let _lock = one_cluster_at_a_time();
    let replicas = Replicas::start("kv", "7");
    check_stops_with(
        &replicas,
        &["--cluster-id", "7", "--service", "null"],
        "wrong reply: the cluster runs the kv service, not null",
    );
}

#[test]
fn a_kv_load_on_a_null_cluster_stops_naming_null() {
    let _lock = one_cluster_at_a_time();
    let replicas = Replicas::start("null", "7");
    check_stops_with(
        &replicas,
        &[
            "--cluster-id",
            "7",
            "--service",
            "kv",
            "--read-fraction",
            "0.5",
        ],
        "wrong reply: the cluster runs the null (or log) service, not kv",
    );
    // The same cluster with the right options and another cluster id: refused, named.
    check_stops_with(
        &replicas,
        &["--cluster-id", "8", "--service", "null"],
        "refused the load generator: cluster id differs",
    );
}

/// The facts of a run against an existing cluster come from the replicas' stats, asked
/// through the client library: with no `vsr` binary at hand (`--vsr-bin` names none) the
/// report still has the cluster's durability mode, epoch, view changes and version.
#[test]
fn a_cluster_run_reports_the_replicas_facts_without_a_local_binary() {
    let _lock = one_cluster_at_a_time();
    let replicas = Replicas::start("null", "7");
    let list = replicas.list();
    let json_path = temp_path("facts.json");
    let args = [
        "--cluster",
        list.as_str(),
        "--cluster-id",
        "7",
        "--vsr-bin",
        "/nonexistent/vsr",
        "--sessions",
        "4",
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
        "--quiet",
        "--json",
        json_path.to_str().unwrap(),
    ];
    let finished = run(&args, Duration::from_secs(60));
    assert_success(&finished);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json_path);
    let output = Command::new(vsr_binary())
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(output.stdout).unwrap();
    let version = version.split_whitespace().nth(1).unwrap();
    assert_eq!(json["durability"], "memory", "{json}");
    assert_eq!(json["epoch"], 0, "{json}");
    assert_eq!(json["view_changes"], 0, "{json}");
    assert_eq!(json["replica_version"], version, "{json}");
    assert_eq!(json["vsr_version"], serde_json::Value::Null, "{json}");
    let facts = finished.stdout.lines().next().unwrap_or_default();
    assert!(
        facts.contains(&format!(
            "epoch 0  durability memory  replicas run vsr {version}"
        )),
        "{}",
        finished.stdout
    );
}

#[test]
fn every_operation_failing_stops_the_run() {
    let _lock = one_cluster_at_a_time();
    let replicas = Replicas::start("null", "7");
    let list = replicas.list();
    let args = [
        "--cluster",
        list.as_str(),
        "--cluster-id",
        "7",
        "--sessions",
        "8",
        "--request-timeout",
        "300ms",
        "--duration",
        "60s",
        "--warmup",
        "0s",
    ];
    let mut load = spawn(&args);
    let mut stderr = BufReader::new(load.child.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !line.contains("ops/s") {
        assert!(Instant::now() < deadline, "no progress line");
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "vsr-load ended early"
        );
    }
    // Without two of three replicas there is no quorum: every operation times out.
    replicas.freeze(&[1, 2]);
    let frozen_at = Instant::now();
    let status = loop {
        if let Some(status) = load.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(20),
            "vsr-load did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.contains("every operation is failing"), "{rest}");
    assert!(rest.contains("timeout"), "{rest}");
}

/// A fresh, empty directory for one test.
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = temp_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn logs_go_after_a_good_run_and_stay_with_keep_logs_or_a_failure() {
    let _lock = one_cluster_at_a_time();
    let base = fresh_dir("logs");
    let short = [
        "--sessions",
        "2",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--quiet",
    ];
    // A good run: the run directory is named, then removed with the logs in it.
    let out = base.join("good");
    let mut args = vec!["--out-dir", out.to_str().unwrap()];
    args.extend(short);
    let finished = run_in(&base, &args, Duration::from_secs(60));
    assert_success(&finished);
    assert!(
        finished
            .stderr
            .contains(&format!("run directory {}", out.display())),
        "{}",
        finished.stderr
    );
    assert!(!out.exists(), "left behind: {:?}", entries(&out));
    // --keep-logs keeps them.
    let out = base.join("kept");
    let mut args = vec!["--out-dir", out.to_str().unwrap(), "--keep-logs"];
    args.extend(short);
    assert_success(&run_in(&base, &args, Duration::from_secs(60)));
    assert!(
        out.join("vsr/replica-0.log").is_file(),
        "{:?}",
        entries(&out)
    );
    // A failed run keeps them: an operation over the message limit ends it with an error.
    let out = base.join("failed");
    let mut args = vec![
        "--out-dir",
        out.to_str().unwrap(),
        "--payload-bytes",
        "20000000",
    ];
    args.extend(short);
    let finished = run_in(&base, &args, Duration::from_secs(60));
    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("logs kept in"),
        "{}",
        finished.stderr
    );
    assert!(
        out.join("vsr/replica-0.log").is_file(),
        "{:?}",
        entries(&out)
    );
    // Nothing was written into the working directory.
    assert_eq!(entries(&base), ["failed", "kept"]);
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn a_sweep_writes_json_and_hgrm_per_level_and_its_plot_into_the_run_directory() {
    let _lock = one_cluster_at_a_time();
    let base = fresh_dir("sweep-out");
    let out = base.join("run");
    let json = base.join("level.json");
    let hgrm = base.join("level.hgrm");
    let args = [
        "--sweep",
        "--sweep-sessions-max",
        "2",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--quiet",
        "--out-dir",
        out.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--hgrm",
        hgrm.to_str().unwrap(),
    ];
    let finished = run_in(&base, &args, Duration::from_secs(90));
    assert_success(&finished);
    for sessions in [1, 2] {
        let path = base.join(format!("level.sessions-{sessions}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; {:?}", path.display(), entries(&base)));
        let level: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(level["sessions"], sessions, "{level}");
        assert_eq!(level["durability"], "memory", "{level}");
        assert!(base
            .join(format!("level.sessions-{sessions}.hgrm"))
            .is_file());
    }
    let svg = std::fs::read_to_string(out.join("sweep.svg")).unwrap();
    assert!(svg.contains("knee ("), "the knee is not marked on the plot");
    assert!(out.join("sweep.csv").is_file());
    // The replicas' logs went; the sweep's files stayed; the working directory holds only
    // what was asked for.
    assert_eq!(entries(&out), ["sweep.csv", "sweep.svg"]);
    let _ = std::fs::remove_dir_all(base);
}
