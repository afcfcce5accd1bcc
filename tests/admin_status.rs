//! `vsr admin status` against real `vsr replica` processes on 127.0.0.1: every replica has
//! a row, the one primary is named, lag is measured from the highest commit; a dead replica
//! gets a row that says so and the exit stays 0 while a majority serves; with a majority
//! dead, or the wrong cluster id or key, it exits 1 at once with a one-line reason.

mod common;

use common::client::TestClient;
use common::cluster::TestCluster;
use common::wait_for;
use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);
const KEY: &[u8] = b"a test key of at least sixteen bytes";

/// The outcome of one `vsr admin status` run.
#[derive(Debug)]
struct Status {
    success: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Status {
    /// The `--json` output's rows.
    fn rows(&self) -> Vec<Value> {
        let json: Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("--json output does not parse ({error}): {self:?}"));
        json.as_array().expect("a JSON array").clone()
    }
}

/// Runs `vsr admin status --cluster <the cluster's addresses>` with `extra` arguments.
fn admin_status(cluster: &TestCluster, extra: &[&str]) -> Status {
    let addresses: Vec<String> = cluster
        .addresses()
        .iter()
        .map(ToString::to_string)
        .collect();
    let started = Instant::now();
    let output: Output = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args(["admin", "status", "--cluster", &addresses.join(",")])
        .args(extra)
        .output()
        .expect("run vsr admin status");
    Status {
        success: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
        elapsed: started.elapsed(),
    }
}

#[test]
fn status_follows_replicas_going_down() {
    let mut cluster = TestCluster::start(3, "kv");
    cluster.wait_until_serving(30 * SECOND);
    let mut client =
        TestClient::connect(cluster.addresses(), cluster.cluster, 10 * SECOND).unwrap();
    let mut last_op = 0;
    for i in 0..10u32 {
        last_op = client
            .put(format!("k{i}").as_bytes(), b"v", 10 * SECOND)
            .unwrap();
    }
    for i in 0..3 {
        wait_for("every replica to commit the puts", 10 * SECOND, || {
            cluster.stats(i).is_ok_and(|s| s.u64("commit") >= last_op)
        });
    }

    // All three answer: one row each, in --cluster order, one primary, no lag when idle.
    let status = admin_status(&cluster, &["--json"]);
    assert!(status.success, "{status:?}");
    let rows = status.rows();
    assert_eq!(rows.len(), 3, "{status:?}");
    let primary = cluster.primary().expect("one primary");
    let commit_max = rows.iter().map(|r| r["commit"].as_u64().unwrap()).max();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["index"], i, "{row}");
        assert_eq!(row["address"], cluster.addresses()[i].to_string(), "{row}");
        assert_eq!(row["reachable"], true, "{row}");
        assert_eq!(row["replica"], i, "{row}");
        assert_eq!(row["status"], "normal", "{row}");
        assert_eq!(row["is_primary"], i == primary, "{row}");
        assert_eq!(row["epoch"], 0, "{row}");
        assert_eq!(row["durability"], "memory", "{row}");
        let (op, commit) = (row["op"].as_u64().unwrap(), row["commit"].as_u64().unwrap());
        assert!(commit >= last_op && commit <= op, "{row}");
        assert_eq!(
            row["lag"].as_u64(),
            Some(commit_max.unwrap() - commit),
            "{row}"
        );
        assert_eq!(row["lag"], 0, "an idle cluster has no lag: {row}");
    }

    // The table: a header and one line per replica between rules.
    let status = admin_status(&cluster, &[]);
    assert!(status.success, "{status:?}");
    let lines: Vec<&str> = status.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{}", status.stdout);
    assert!(
        lines[1].contains("| STATUS | PRIMARY |"),
        "{}",
        status.stdout
    );
    for i in 0..3 {
        let line = lines[3 + i];
        assert!(line.contains(&cluster.addresses()[i].to_string()), "{line}");
        assert!(line.contains("| normal |"), "{line}");
        let is_primary = if i == primary { "| yes " } else { "| no " };
        assert!(line.contains(is_primary), "{line}");
    }

    // A frozen backup (its socket accepts, nothing answers) costs the timeout, no more.
    let frozen = (primary + 1) % 3;
    cluster.stop(frozen);
    let status = admin_status(&cluster, &["--json", "--timeout-ms", "500"]);
    cluster.resume(frozen);
    assert!(status.success, "the other two serve: {status:?}");
    assert!(status.elapsed < 5 * SECOND, "{status:?}");
    let rows = status.rows();
    assert_eq!(rows[frozen]["reachable"], false, "{status:?}");
    assert_eq!(
        rows[frozen]["error"], "unreachable: no reply within 500ms",
        "{status:?}"
    );

    // The primary dies: its row says so, and once the others have elected a new one the
    // cluster is healthy again (exit 0).
    cluster.kill9(primary);
    let mut last = None;
    wait_for("a new primary in vsr admin status", 30 * SECOND, || {
        let status = admin_status(&cluster, &["--json"]);
        let done = status.success;
        last = Some(status);
        done
    });
    let status = last.unwrap();
    let rows = status.rows();
    assert_eq!(rows[primary]["reachable"], false, "{status:?}");
    let error = rows[primary]["error"].as_str().unwrap();
    assert!(error.starts_with("unreachable: cannot connect"), "{error}");
    assert_eq!(rows[primary]["commit"], Value::Null, "{status:?}");
    let primaries: Vec<usize> = (0..3).filter(|&i| rows[i]["is_primary"] == true).collect();
    assert_eq!(primaries.len(), 1, "{status:?}");
    assert_ne!(primaries[0], primary, "{status:?}");
    let table = admin_status(&cluster, &[]);
    assert!(table.success, "{table:?}");
    let line = table.stdout.lines().nth(3 + primary).unwrap().to_string();
    assert!(line.contains("| unreachable: cannot connect"), "{line}");

    // A second one dies: no majority, exit 1 with the reason on one line.
    let backup = (0..3).find(|&i| i != primary && i != primaries[0]).unwrap();
    cluster.kill9(backup);
    let status = admin_status(&cluster, &["--json"]);
    assert!(!status.success, "{status:?}");
    assert_eq!(status.rows().len(), 3, "{status:?}");
    assert_eq!(status.stderr.lines().count(), 1, "{status:?}");
    assert!(
        status.stderr.starts_with(
            "error: no primary: 1 of 3 replicas answered (unreachable: cannot connect"
        ),
        "{status:?}"
    );
}

#[test]
fn a_wrong_cluster_id_or_key_is_refused_at_once() {
    let mut cluster = TestCluster::start_keyed(3, "kv", &[], Some(KEY));
    cluster.wait_until_serving(30 * SECOND);
    let key_file = cluster.key_file.clone().unwrap().display().to_string();
    let wrong_key_file = cluster.directory().join("wrong.key");
    std::fs::write(&wrong_key_file, b"another key of at least sixteen bytes").unwrap();
    let wrong_key_file = wrong_key_file.display().to_string();

    // The right key: served.
    let status = admin_status(&cluster, &["--cluster-key", &key_file]);
    assert!(status.success, "{status:?}");

    // A hang would last the whole timeout; a refusal comes back at once.
    let timeout = ["--timeout-ms", "20000"];
    let cases: [(&[&str], &str); 3] = [
        (
            &["--cluster-key", &key_file, "--cluster-id", "9"],
            "refused: cluster id differs",
        ),
        (&["--cluster-key", &wrong_key_file], "refused: "),
        (&[], "refused: "),
    ];
    for (args, reason) in cases {
        let status = admin_status(&cluster, &[args, &timeout[..], &["--json"]].concat());
        assert!(!status.success, "{args:?}: {status:?}");
        assert!(status.elapsed < 10 * SECOND, "{args:?}: {status:?}");
        assert!(
            status
                .stderr
                .starts_with("error: no primary: 0 of 3 replicas answered (refused: "),
            "{args:?}: {status:?}"
        );
        assert_eq!(status.stderr.lines().count(), 1, "{args:?}: {status:?}");
        for row in status.rows() {
            assert_eq!(row["reachable"], false, "{row}");
            let error = row["error"].as_str().unwrap();
            assert!(error.starts_with(reason), "{args:?}: {error}");
        }
    }

    // `vsr stats` says the same through the same client API.
    let output = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args(["stats", "--address", &cluster.addresses()[0].to_string()])
        .args(["--cluster-key", &key_file, "--cluster-id", "9"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused: cluster id differs"), "{stderr}");
}
