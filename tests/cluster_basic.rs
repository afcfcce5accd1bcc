//! Three `vsr replica` processes start, agree on a primary and serve a client; `vsr stats`
//! reports their state.

mod common;

use common::client::TestClient;
use common::cluster::TestCluster;
use common::{json_str, json_u64};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn three_replicas_start_and_serve() {
    check_serving(&[]);
}

/// The same through I/O threads that own the client connections.
#[test]
fn three_replicas_serve_through_io_threads() {
    check_serving(&["--io-threads", "2"]);
}

fn check_serving(extra: &[&str]) {
    let mut cluster = TestCluster::start_with(3, "kv", extra);
    cluster.wait_until_serving(30 * SECOND);
    let mut client =
        TestClient::connect(cluster.addresses(), cluster.cluster, 10 * SECOND).unwrap();
    let mut last_op = 0;
    for i in 0..20u32 {
        let op = client
            .put(
                format!("k{i}").as_bytes(),
                format!("v{i}").as_bytes(),
                10 * SECOND,
            )
            .unwrap();
        assert!(op > last_op, "ops increase: {op} after {last_op}");
        last_op = op;
    }
    for i in 0..20u32 {
        let value = client.get(format!("k{i}").as_bytes(), 10 * SECOND).unwrap();
        assert_eq!(value.as_deref(), Some(format!("v{i}").as_bytes()));
    }
    assert_eq!(client.get(b"absent", 10 * SECOND).unwrap(), None);

    // Every replica commits what the primary committed (backups learn it from the next
    // Prepare or the idle Commit heartbeat).
    for i in 0..3 {
        common::wait_for("every replica to commit the puts", 10 * SECOND, || {
            cluster.stats(i).is_ok_and(|s| s.u64("commit") >= last_op)
        });
    }

    // `vsr stats` prints the same document as one JSON line.
    let primary = cluster.primary().expect("one primary");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args([
            "stats",
            "--address",
            &cluster.addresses()[primary].to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "vsr stats failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = String::from_utf8(output.stdout).unwrap();
    assert_eq!(json_str(&json, "status"), Some("normal"), "{json}");
    assert!(json_u64(&json, "commit").unwrap() >= last_op, "{json}");
    assert!(
        json_u64(&json, "requests_received").unwrap() >= 41,
        "{json}"
    );
    assert!(json.contains("\"request_commit_us\":{\"count\":"), "{json}");
    assert!(json_u64(&json, "view_changes").is_some(), "{json}");
}

/// With a one-entry batch and a one-Prepare pipeline the primary is full almost all the
/// time: it stops reading clients (back-pressure) instead of queueing or dropping, and
/// every operation of many concurrent sessions still completes.
#[test]
fn backpressure_keeps_every_session_going() {
    use vsr::client::{ClientOptions, PipelinedClient};
    let extra = ["--pipeline", "1", "--batch-entries", "1"];
    let mut cluster = TestCluster::start_with(3, "null", &extra);
    cluster.wait_until_serving(30 * SECOND);
    let mut client =
        PipelinedClient::connect(cluster.addresses(), ClientOptions::default(), 32, 2).unwrap();
    let sessions = client.sessions();
    let (ops, mut submitted, mut done) = (3000u64, 0u64, 0u64);
    for session in 0..sessions {
        client
            .submit(session, bytes::Bytes::from_static(b"op"))
            .unwrap();
        submitted += 1;
    }
    let mut completions = Vec::new();
    let deadline = std::time::Instant::now() + 60 * SECOND;
    while done < ops {
        assert!(
            std::time::Instant::now() < deadline,
            "only {done} of {ops} operations completed"
        );
        client
            .poll(&mut completions, Duration::from_millis(100))
            .unwrap();
        for completion in completions.drain(..) {
            completion.result.expect("every operation completes");
            done += 1;
            if submitted < ops {
                client
                    .submit(completion.session, bytes::Bytes::from_static(b"op"))
                    .unwrap();
                submitted += 1;
            }
        }
    }
    let primary = cluster.primary().expect("one primary");
    let stats = cluster.stats(primary).unwrap();
    assert!(stats.u64("backpressure_pauses") > 0, "{}", stats.json);
    // Batches never exceed the configured entry limit.
    let batch_max = stats
        .json
        .split("\"batch_entries\":")
        .nth(1)
        .and_then(|h| common::json_u64(h, "max"));
    assert_eq!(batch_max, Some(1), "{}", stats.json);
}

/// `--metrics-address`: each replica serves Prometheus' text format at `/metrics`, with
/// the state and counters an operator watches, and refuses other paths.
#[test]
fn metrics_are_served_in_the_prometheus_format() {
    let mut cluster = TestCluster::start_with(3, "kv", &["--metrics-address", "127.0.0.1:0"]);
    cluster.wait_until_serving(30 * SECOND);
    let mut client =
        TestClient::connect(cluster.addresses(), cluster.cluster, 10 * SECOND).unwrap();
    let mut last_op = 0;
    for i in 0..10u32 {
        last_op = client
            .put(format!("k{i}").as_bytes(), b"v", 10 * SECOND)
            .unwrap();
    }
    let primary = cluster.primary().expect("one primary");
    let addresses: Vec<String> = (0..3)
        .map(|i| {
            let mut address = None;
            common::wait_for("the metrics address in the log", 10 * SECOND, || {
                address = metrics_address(&cluster.log(i));
                address.is_some()
            });
            address.unwrap()
        })
        .collect();
    for (i, address) in addresses.iter().enumerate() {
        let mut body = String::new();
        // Published once a second: wait for the puts to show.
        common::wait_for("the commit in the metrics", 10 * SECOND, || {
            body = http_get(address, "/metrics").1;
            gauge(&body, "vsr_commit").is_some_and(|commit| commit >= last_op)
        });
        assert_eq!(
            gauge(&body, "vsr_is_primary"),
            Some(u64::from(i == primary))
        );
        assert_eq!(gauge(&body, "vsr_epoch"), Some(0));
        assert!(body.contains("vsr_status{status=\"normal\"} 1"), "{body}");
        assert!(body.contains("vsr_replica_info{replica=\""), "{body}");
        assert!(body.contains("service=\"kv\""), "{body}");
        let stats = cluster.stats(i).unwrap();
        assert_eq!(json_str(&stats.json, "service"), Some("kv"));
        assert!(
            body.contains("# TYPE vsr_request_commit_seconds histogram"),
            "{body}"
        );
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
        if i == primary {
            assert!(
                gauge(&body, "vsr_requests_received_total").unwrap() >= 10,
                "{body}"
            );
            assert!(body.contains("vsr_peer_lag_ops{peer="), "{body}");
        }
        let (status, _) = http_get(address, "/other");
        assert!(status.contains("404"), "{status}");
    }
    // Logs for collectors: no colour codes when stderr is a file, structured fields.
    for i in 0..3 {
        let log = cluster.log(i);
        assert!(
            !log.contains('\u{1b}'),
            "colour codes in replica {i}'s log:\n{log}"
        );
        assert!(
            log.contains("recovering (paper 4.3)") && log.contains("joined=false"),
            "{log}"
        );
    }
}

/// The address in the "serving metrics at http://ADDRESS/metrics" log line.
fn metrics_address(log: &str) -> Option<String> {
    let start = log.find("serving metrics at http://")? + "serving metrics at http://".len();
    let end = start + log[start..].find("/metrics")?;
    Some(log[start..end].to_string())
}

/// GET `path` from `address`: the status line and the body.
fn http_get(address: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(10 * SECOND)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of the unlabelled sample `name`.
fn gauge(body: &str, name: &str) -> Option<u64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
