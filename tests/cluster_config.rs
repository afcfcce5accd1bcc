//! `vsr replica` refuses configurations that cannot work: it exits non-zero with a clear
//! message before serving anything.

mod common;

use common::cluster::free_addresses;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `vsr replica ARGS`, expects a non-zero exit within a few seconds with `expected`
/// in its stderr.
fn check(args: &[&str], expected: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .arg("replica")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "vsr replica {args:?} still running after 10 s; expected it to refuse: {expected}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        !status.success(),
        "vsr replica {args:?} succeeded; stderr: {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "vsr replica {args:?}: expected {expected:?} in stderr:\n{stderr}"
    );
}

fn list(addresses: &[std::net::SocketAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn duplicate_addresses() {
    let a = free_addresses(2);
    let cluster = format!("{},{},{}", a[0], a[1], a[0]);
    check(&["--cluster", &cluster, "--replica", "1"], "appears twice");
}

#[test]
fn replica_index_out_of_range() {
    let cluster = list(&free_addresses(3));
    check(
        &["--cluster", &cluster, "--replica", "3"],
        "replica index 3 is out of range",
    );
}

#[test]
fn even_cluster() {
    let cluster = list(&free_addresses(2));
    check(
        &["--cluster", &cluster, "--replica", "0"],
        "odd number of replicas",
    );
}

#[test]
fn port_in_use() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut addresses = free_addresses(2);
    addresses.insert(0, holder.local_addr().unwrap());
    check(
        &["--cluster", &list(&addresses), "--replica", "0"],
        "cannot listen on",
    );
}

#[test]
fn unparsable_address() {
    let a = free_addresses(2);
    let cluster = format!("{},{},not-an-address", a[0], a[1]);
    check(
        &["--cluster", &cluster, "--replica", "0"],
        "cannot parse replica address",
    );
}

#[test]
fn inconsistent_limits() {
    let cluster = list(&free_addresses(3));
    check(
        &["--cluster", &cluster, "--replica", "0", "--pipeline", "0"],
        "pipeline_prepares_max must be greater than 0",
    );
}

#[test]
fn too_many_io_threads() {
    let cluster = list(&free_addresses(3));
    check(
        &[
            "--cluster",
            &cluster,
            "--replica",
            "0",
            "--io-threads",
            "65",
        ],
        "at most 64 I/O threads",
    );
}
