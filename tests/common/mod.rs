//! Shared helpers of the process tests: a cluster of real `vsr replica` processes on
//! loopback ([`cluster`]) and a small blocking client that speaks raw frames ([`client`]).
//! Each test file uses part of them.
#![allow(dead_code)]

pub mod client;
pub mod cluster;
/// The port draw `vsr-load` uses for its local clusters, shared rather than copied.
#[path = "../../tools/loadgen/src/ports.rs"]
pub mod ports;

use std::time::{Duration, Instant};

/// Waits until `condition` holds, checking every few milliseconds, or fails after
/// `timeout` with `what` in the message.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A numeric field of a flat-enough JSON document (`"key":123`), the first one named `key`.
pub fn json_u64(json: &str, key: &str) -> Option<u64> {
    let needle = format!("\"{key}\":");
    let start = json.find(&needle)? + needle.len();
    let digits: String = json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A string field (`"key":"value"`), the first one named `key`.
pub fn json_str<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\":\"");
    let start = json.find(&needle)? + needle.len();
    let end = json[start..].find('"')?;
    Some(&json[start..start + end])
}

/// A boolean field (`"key":true`).
pub fn json_bool(json: &str, key: &str) -> Option<bool> {
    let needle = format!("\"{key}\":");
    let start = json.find(&needle)? + needle.len();
    if json[start..].starts_with("true") {
        Some(true)
    } else if json[start..].starts_with("false") {
        Some(false)
    } else {
        None
    }
}

/// A keyless hello from `peer` for `cluster`, stating no member list or limits (what a
/// tool given one address sends).
pub fn encode_hello(peer: vsr::wire::Peer, cluster: u128, out: &mut bytes::BytesMut) {
    let hello = vsr::wire::Hello {
        peer,
        terms: vsr::wire::Terms {
            cluster,
            epoch: 0,
            members: Vec::new(),
            limits: None,
        },
        nonce: None,
    };
    vsr::wire::encode_hello(&hello, out);
}
