//! Reads a replica's stats through `vsr stats --address A` (JSON on stdout), with a deadline
//! so a stuck replica cannot hang the report, and the facts a report needs from them: the
//! view-change counter, the durability mode and the epoch.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const STATS_TIMEOUT: Duration = Duration::from_secs(3);

/// One replica's stats JSON, or `None` if it cannot be read in time.
pub fn read(vsr_bin: &Path, address: SocketAddr, cluster_id: u128) -> Option<serde_json::Value> {
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
    serde_json::from_slice(&output.stdout).ok()
}

/// The view-change counter of a stats document: a `view_changes` counter, else the `view`
/// number (each view change raises it by at least 1).
pub fn view_counter(stats: &serde_json::Value) -> Option<u64> {
    find(stats, "view_changes")
        .and_then(serde_json::Value::as_u64)
        .or_else(|| find(stats, "view").and_then(serde_json::Value::as_u64))
}

/// The durability mode of a stats document (`"memory"` or `"disk"`).
pub fn durability(stats: &serde_json::Value) -> Option<String> {
    find(stats, "durability")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

/// The epoch of a stats document; 0 when it carries none (a cluster never reconfigured).
pub fn epoch(stats: &serde_json::Value) -> u64 {
    find(stats, "epoch")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// The first value under `key`, searched breadth-first through nested objects.
fn find<'a>(json: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    let mut queue = std::collections::VecDeque::from([json]);
    while let Some(value) = queue.pop_front() {
        if let Some(object) = value.as_object() {
            if let Some(found) = object.get(key) {
                return Some(found);
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
        assert_eq!(view_counter(&json), Some(2));
        let json = serde_json::json!({"replica": 0, "protocol": {"view": 3}});
        assert_eq!(view_counter(&json), Some(3));
        assert_eq!(view_counter(&serde_json::json!({})), None);
    }

    #[test]
    fn reads_durability_and_epoch() {
        let json = serde_json::json!({"durability": "disk", "counters": {"view_changes": 0}});
        assert_eq!(durability(&json).as_deref(), Some("disk"));
        assert_eq!(epoch(&json), 0);
        let json = serde_json::json!({"durability": "memory", "epoch": 4});
        assert_eq!(durability(&json).as_deref(), Some("memory"));
        assert_eq!(epoch(&json), 4);
        assert_eq!(durability(&serde_json::json!({})), None);
    }
}
