//! The replicas' stats through the client library (`vsr::client::replica_stats`): every
//! replica asked at once, each within a deadline so that a stopped replica cannot hang the
//! report, and the facts a report needs combined: the view changes, the durability mode,
//! the epoch and the version the replicas run.

use std::net::SocketAddr;
use std::time::Duration;
use vsr::auth::ClusterKey;
use vsr::client::{ReplicaStats, StatsOptions};

/// How long one replica may take to answer: connect, handshake and reply.
const STATS_TIMEOUT: Duration = Duration::from_secs(3);

/// What the replicas that answered report, combined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// The highest view-change counter.
    pub view_counter: Option<u64>,
    /// The distinct durability modes (one, unless the replicas disagree), sorted.
    pub durability: Vec<String>,
    /// The highest epoch (`None`: no replica answered).
    pub epoch: Option<u64>,
    /// The distinct versions the replicas run (one, unless mid-upgrade), sorted.
    pub versions: Vec<String>,
}

impl ClusterStats {
    /// Asks every replica of `addresses` at once; the ones that do not answer in time are
    /// left out.
    pub fn read(
        addresses: &[SocketAddr],
        cluster_id: u128,
        cluster_key: Option<ClusterKey>,
    ) -> ClusterStats {
        let options = StatsOptions {
            cluster_id,
            cluster_key,
            timeout: STATS_TIMEOUT,
        };
        let answers: Vec<ReplicaStats> = std::thread::scope(|scope| {
            let askers: Vec<_> = addresses
                .iter()
                .map(|&address| {
                    let options = &options;
                    scope.spawn(move || vsr::client::replica_stats(address, options))
                })
                .collect();
            askers
                .into_iter()
                .filter_map(|asker| asker.join().ok()?.ok())
                .collect()
        });
        ClusterStats::of(&answers)
    }

    /// The facts of the replicas' stats `answers`.
    pub fn of(answers: &[ReplicaStats]) -> ClusterStats {
        let mut facts = ClusterStats::default();
        for stats in answers {
            let view_changes = stats.counters.view_changes;
            facts.view_counter = Some(
                facts
                    .view_counter
                    .map_or(view_changes, |v| v.max(view_changes)),
            );
            let epoch = u64::from(stats.epoch);
            facts.epoch = Some(facts.epoch.map_or(epoch, |e| e.max(epoch)));
            if !stats.durability.is_empty() {
                insert(&mut facts.durability, &stats.durability);
            }
            if let Some(version) = version(stats) {
                insert(&mut facts.versions, &version);
            }
        }
        facts
    }

    /// The durability mode for reports: `memory`, `disk`, `disk+memory` if the replicas
    /// differ, `None` if no replica answered.
    pub fn durability(&self) -> Option<String> {
        (!self.durability.is_empty()).then(|| self.durability.join("+"))
    }

    /// The version the replicas run for reports: `0.1.0`, `0.1.0+0.2.0` if they differ,
    /// `None` if no replica answered or none says.
    pub fn version(&self) -> Option<String> {
        (!self.versions.is_empty()).then(|| self.versions.join("+"))
    }
}

/// The `version` of a stats document (`ReplicaStats` has no field for it; replicas older
/// than the field do not send it).
fn version(stats: &ReplicaStats) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(stats.json()).ok()?;
    json.get("version")?.as_str().map(str::to_string)
}

/// Adds `value` to the sorted, distinct `values`.
fn insert(values: &mut Vec<String>, value: &str) {
    if let Err(at) = values.binary_search_by(|v| v.as_str().cmp(value)) {
        values.insert(at, value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica's stats document with the fields a report reads.
    fn stats(view_changes: u64, epoch: u32, durability: &str, version: &str) -> ReplicaStats {
        let json = format!(
            r#"{{"replica":0,"replica_id":0,"epoch":{epoch},"version":"{version}","status":"normal",
            "is_primary":true,"view":3,"op":10,"commit":10,"durability":"{durability}",
            "counters":{{"view_changes":{view_changes}}}}}"#
        );
        ReplicaStats::from_json(&json).unwrap()
    }

    #[test]
    fn combines_the_replicas_facts() {
        let facts = ClusterStats::of(&[
            stats(2, 0, "disk", "0.1.0"),
            stats(5, 1, "disk", "0.1.0"),
            stats(4, 1, "disk", "0.1.0"),
        ]);
        assert_eq!(facts.view_counter, Some(5));
        assert_eq!(facts.epoch, Some(1));
        assert_eq!(facts.durability().as_deref(), Some("disk"));
        assert_eq!(facts.version().as_deref(), Some("0.1.0"));
    }

    #[test]
    fn names_every_mode_and_version_when_the_replicas_differ() {
        let facts = ClusterStats::of(&[
            stats(0, 0, "memory", "0.2.0"),
            stats(0, 0, "disk", "0.1.0"),
            stats(0, 0, "memory", "0.1.0"),
        ]);
        assert_eq!(facts.durability().as_deref(), Some("disk+memory"));
        assert_eq!(facts.version().as_deref(), Some("0.1.0+0.2.0"));
    }

    #[test]
    fn knows_nothing_without_answers_and_tolerates_older_replicas() {
        let facts = ClusterStats::of(&[]);
        assert_eq!(facts, ClusterStats::default());
        assert_eq!((facts.durability(), facts.version()), (None, None));
        // A replica from before `epoch`, `version` and `durability` were reported.
        let old = ReplicaStats::from_json(
            r#"{"replica":1,"status":"normal","is_primary":false,"view":0,"op":0,"commit":0}"#,
        )
        .unwrap();
        let facts = ClusterStats::of(&[old]);
        assert_eq!(facts.epoch, Some(0));
        assert_eq!(facts.view_counter, Some(0));
        assert_eq!((facts.durability(), facts.version()), (None, None));
    }

    #[test]
    fn silent_replicas_cost_one_deadline_together() {
        // Listeners that never accept: the TCP handshake completes in the kernel, and then
        // nothing answers, as with a stopped (SIGSTOP) replica.
        let silent: Vec<std::net::TcpListener> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addresses: Vec<SocketAddr> = silent.iter().map(|l| l.local_addr().unwrap()).collect();
        let started = std::time::Instant::now();
        let facts = ClusterStats::read(&addresses, 0, None);
        let took = started.elapsed();
        assert_eq!(facts, ClusterStats::default());
        assert!(took >= STATS_TIMEOUT, "gave up after {took:?}");
        assert!(
            took < 2 * STATS_TIMEOUT,
            "asked one after the other: {took:?}"
        );
    }
}
