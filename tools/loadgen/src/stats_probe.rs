//! Reads a replica's view-change counter through `vsr stats --address A` (JSON on stdout),
//! with a deadline so a stuck replica cannot hang the report. Prefers a `view_changes`
//! counter and falls back to the `view` number (each view change raises it by at least 1).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const STATS_TIMEOUT: Duration = Duration::from_secs(3);

/// The replica's view-change counter, or `None` if it cannot be read.
pub fn view_counter(vsr_bin: &Path, address: SocketAddr, cluster_id: u128) -> Option<u64> {
    let child = Command::new(vsr_bin)
        .args(["stats", "--address", &address.to_string()])
        .args(["--cluster-id", &cluster_id.to_string()])
        .args(
            crate::vsr_client::cluster_key_file()
                .map(|path| vec!["--cluster-key".as_ref(), path.as_os_str()])
                .unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let Ok(Ok(output)) = receiver.recv_timeout(STATS_TIMEOUT) else {
        // SAFETY: kill(2) on the pid of our own child that has not answered in time.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        return None;
    };
    if !output.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    find_number(&json, "view_changes").or_else(|| find_number(&json, "view"))
}

/// The first number under `key`, searched breadth-first through nested objects.
fn find_number(json: &serde_json::Value, key: &str) -> Option<u64> {
    let mut queue = std::collections::VecDeque::from([json]);
    while let Some(value) = queue.pop_front() {
        if let Some(object) = value.as_object() {
            if let Some(number) = object.get(key).and_then(serde_json::Value::as_u64) {
                return Some(number);
            }
            queue.extend(object.values());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_counters() {
        let json = serde_json::json!({"replica": 0, "protocol": {"view": 3, "view_changes": 2}});
        assert_eq!(find_number(&json, "view_changes"), Some(2));
        assert_eq!(find_number(&json, "view"), Some(3));
        assert_eq!(find_number(&json, "missing"), None);
    }
}
