//! A replica's stats through the client library: [`replica_stats`] asks one replica over a
//! fresh connection (hello, with a key the proof, one stats request) and parses its JSON
//! into a [`ReplicaStats`]. `vsr stats` and `vsr admin status` are built on it.
//!
//! The document is the replica's (`runtime/metrics.rs` writes it), and the two sides are
//! released apart, so parsing tolerates change in both directions: a field this client
//! does not know is ignored, and an optional field the replica does not send (an older
//! replica, or one that does not have the concept yet, such as `epoch`) takes its
//! default. The fields every replica has always sent (index, status, view, op, commit,
//! is-primary) are required: a reply without them is [`StatsError::Malformed`], not a row
//! of zeros.
//!
//! Everything is bounded by [`StatsOptions::timeout`]: connecting, the handshake and the
//! reply share one deadline, so a replica that is stopped or silent costs at most that.

use super::{ClientError, RawConnection};
use crate::auth::ClusterKey;
use crate::protocol::configuration::Member;
use crate::protocol::{Configuration, Op, ReplicaId, ReplicaIndex, View};
use crate::wire::{self, Frame, Terms};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// How to reach a replica for its stats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsOptions {
    /// The cluster id the replica runs with (`--cluster-id`); another is refused.
    pub cluster_id: u128,
    /// The cluster key (`--cluster-key`), when the replica requires one.
    pub cluster_key: Option<ClusterKey>,
    /// The deadline of the whole exchange: connect, handshake and reply.
    pub timeout: Duration,
}

impl Default for StatsOptions {
    fn default() -> StatsOptions {
        StatsOptions {
            cluster_id: 0,
            cluster_key: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a replica's stats could not be had. Each variant is a different thing for an
/// operator to look at, so none is folded into another.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// No TCP connection to the replica (nothing listening, unreachable host).
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The replica refused the handshake: another cluster id, a missing or wrong key, or
    /// asked too often. The text is the replica's own reason.
    #[error("refused: {0}")]
    Refused(String),
    /// No reply within [`StatsOptions::timeout`] (a stopped or overloaded replica).
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection broke after it was opened, or the replica answered with frames a
    /// replica does not send.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The stats reply arrived but is not the document described by [`ReplicaStats`].
    #[error("malformed stats reply: {0}")]
    Malformed(String),
}

/// A replica's status, as its stats reply names it (`normal`, `view_change`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ReplicaStatus {
    /// Processing requests in its view.
    Normal,
    /// Choosing the primary of a new view (paper 4.2).
    ViewChange,
    /// Restarted without state, recovering (paper 4.3).
    Recovering,
    /// A status this client does not know yet (a newer replica), by its name.
    Other(String),
}

impl From<String> for ReplicaStatus {
    fn from(name: String) -> ReplicaStatus {
        match name.as_str() {
            "normal" => ReplicaStatus::Normal,
            "view_change" => ReplicaStatus::ViewChange,
            "recovering" => ReplicaStatus::Recovering,
            _ => ReplicaStatus::Other(name),
        }
    }
}

impl From<ReplicaStatus> for String {
    fn from(status: ReplicaStatus) -> String {
        status.to_string()
    }
}

impl std::fmt::Display for ReplicaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplicaStatus::Normal => "normal",
            ReplicaStatus::ViewChange => "view_change",
            ReplicaStatus::Recovering => "recovering",
            ReplicaStatus::Other(name) => name,
        })
    }
}

/// One replica's state and counters: the document of its stats reply, which the replica
/// serializes (`runtime::metrics::Metrics::json`) and this client parses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicaStats {
    /// The replica's index in its configuration.
    pub replica: ReplicaIndex,
    /// Its stable identity (`protocol::ReplicaId`); 0 from replicas that do not report one.
    #[serde(default)]
    pub replica_id: u64,
    /// The vsr version it runs (empty if not reported).
    #[serde(default)]
    pub version: String,
    /// The service it runs (`kv`, `null`, `log`, ...; empty if not reported).
    #[serde(default)]
    pub service: String,
    /// Its status.
    pub status: ReplicaStatus,
    /// Whether it is normal and the primary of its view.
    pub is_primary: bool,
    /// Its configuration epoch (paper 7); 0 from replicas that do not report one.
    #[serde(default)]
    pub epoch: u32,
    /// The configuration it is in (paper 7): absent from replicas that do not report it.
    #[serde(default)]
    pub configuration: Option<ConfigurationStats>,
    /// The op its epoch started after (the RECONFIGURATION's op; 0 in epoch 0).
    #[serde(default)]
    pub epoch_start: Op,
    /// Its view.
    pub view: View,
    /// The highest op in its log.
    pub op: Op,
    /// Its commit number (≤ `op`).
    pub commit: Op,
    /// The op of its latest checkpoint (0: none).
    #[serde(default)]
    pub checkpoint_op: Op,
    /// Entries in its in-memory log.
    #[serde(default)]
    pub log_entries: u64,
    /// Open connections (replicas and clients).
    #[serde(default)]
    pub connections: u64,
    /// Its durability mode (`memory` or `disk`; empty if not reported).
    #[serde(default)]
    pub durability: String,
    /// Batches handed to its storage thread (0 in memory).
    #[serde(default)]
    pub storage_batches: u64,
    /// The protocol's counters.
    #[serde(default)]
    pub counters: ProtocolCounters,
    /// The runtime's counters.
    #[serde(default)]
    pub runtime: RuntimeCounters,
    /// Latency and size histograms by name (`request_commit_us`, `batch_entries`, ...).
    #[serde(default)]
    pub histograms: BTreeMap<String, HistogramSummary>,
    /// The document as the replica sent it.
    #[serde(skip)]
    pub(crate) json: String,
}

/// A configuration as a stats reply carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigurationStats {
    /// Its epoch.
    pub epoch: u32,
    /// The lowest identity no configuration of the cluster has used.
    pub next_id: ReplicaId,
    /// The members, by index.
    pub members: Vec<MemberStats>,
    /// The witnesses' indexes (paper 6.1); absent from a replica that predates them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witnesses: Vec<u8>,
}

/// One member of a [`ConfigurationStats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStats {
    /// Its identity.
    pub id: ReplicaId,
    /// Its address (`host:port` for the TCP runtime).
    pub address: String,
}

impl ConfigurationStats {
    /// What a stats reply says of `configuration`.
    pub fn of(configuration: &Configuration) -> ConfigurationStats {
        ConfigurationStats {
            epoch: configuration.epoch(),
            next_id: configuration.next_id(),
            members: configuration
                .members()
                .iter()
                .map(|member| MemberStats {
                    id: member.id,
                    address: String::from_utf8_lossy(&member.address).into_owned(),
                })
                .collect(),
            witnesses: configuration.witnesses().iter().collect(),
        }
    }

    /// The configuration again; `None` if what the replica reported is not one.
    pub fn to_configuration(&self) -> Option<Configuration> {
        let members = self
            .members
            .iter()
            .map(|member| Member {
                id: member.id,
                address: Bytes::from(member.address.clone()),
            })
            .collect();
        let mut witnesses = crate::protocol::ReplicaSet::default();
        for &index in &self.witnesses {
            if index as usize >= self.members.len() {
                return None;
            }
            witnesses.insert(index);
        }
        Configuration::from_parts(self.epoch, members, self.next_id, witnesses)
    }

    /// The member addresses, by index (`None` if one is not `host:port`).
    pub fn addresses(&self) -> Option<Vec<SocketAddr>> {
        self.members
            .iter()
            .map(|member| member.address.parse().ok())
            .collect()
    }
}

/// The protocol core's counters, since the replica started.
pub type ProtocolCounters = crate::protocol::Stats;

/// The runtime's counters, since the replica started.
pub type RuntimeCounters = crate::runtime::metrics::Counters;

/// One histogram, summarised.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct HistogramSummary {
    /// Values recorded.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value recorded.
    pub max: u64,
}

impl ReplicaStats {
    /// Parses a stats reply's document.
    pub fn from_json(json: &str) -> Result<ReplicaStats, StatsError> {
        let mut stats: ReplicaStats =
            serde_json::from_str(json).map_err(|error| StatsError::Malformed(error.to_string()))?;
        if stats.commit > stats.op {
            return Err(StatsError::Malformed(format!(
                "commit {} is above op {}",
                stats.commit, stats.op
            )));
        }
        stats.json = json.to_string();
        Ok(stats)
    }

    /// The document as the replica sent it (with the fields this client does not know).
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// Asks the replica at `address` for its stats over a fresh connection, within
/// `options.timeout`.
pub fn replica_stats(
    address: SocketAddr,
    options: &StatsOptions,
) -> Result<ReplicaStats, StatsError> {
    let timeout = options.timeout;
    // Given one address, a stats request states no member list (the replica does not
    // check it) and no limits.
    let terms = Terms {
        cluster: options.cluster_id,
        epoch: 0,
        members: Vec::new(),
        limits: None,
    };
    let client = super::random_client_id();
    let mut connection = RawConnection::connect(
        address,
        client,
        terms,
        options.cluster_key.as_ref(),
        timeout,
    )
    .map_err(|error| connect_error(error, timeout))?;
    let mut out = BytesMut::new();
    wire::encode_stats_request(options.cluster_id, &mut out);
    connection
        .send(&out)
        .map_err(|error| exchange_error(error, timeout))?;
    let frame = connection
        .read_frame()
        .map_err(|error| exchange_error(error, timeout))?;
    let Frame::StatsReply(body) = frame else {
        return Err(StatsError::Protocol(format!(
            "the replica answered a stats request with a {} frame",
            frame.name()
        )));
    };
    let json = std::str::from_utf8(&body)
        .map_err(|error| StatsError::Malformed(format!("not UTF-8: {error}")))?;
    ReplicaStats::from_json(json)
}

/// An error while connecting and shaking hands: any I/O failure there means no usable
/// connection was made.
fn connect_error(error: ClientError, timeout: Duration) -> StatsError {
    match error {
        ClientError::Io(error) if error.kind() == std::io::ErrorKind::TimedOut => {
            StatsError::Timeout(timeout)
        }
        ClientError::Io(error) => StatsError::Connect(error),
        other => exchange_error(other, timeout),
    }
}

/// An error once connected.
fn exchange_error(error: ClientError, timeout: Duration) -> StatsError {
    match error {
        ClientError::Timeout => StatsError::Timeout(timeout),
        ClientError::Io(error) if error.kind() == std::io::ErrorKind::TimedOut => {
            StatsError::Timeout(timeout)
        }
        ClientError::Refused(reason) => StatsError::Refused(reason),
        other => StatsError::Protocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::metrics::Metrics;
    use crate::service::null::Null;
    use crate::{Config, Replica, Start};

    /// What a replica's runtime writes parses, field for field.
    #[test]
    fn parses_what_the_replica_writes() {
        let replica = Replica::new(Config::new(7, 3), 0, Null, Start::Fresh);
        let mut metrics = Metrics::default();
        metrics.counters.requests_received = 41;
        metrics.request_commit_us.record(250);
        metrics.counters.connections_rejected = 3;
        metrics.counters.connections_rejected_io = 4;
        let json = metrics.json(&replica, 2, ("disk", 5), &metrics.histogram_summaries());

        let stats = ReplicaStats::from_json(&json).unwrap();
        assert_eq!(stats.replica, 0);
        assert_eq!(stats.status, ReplicaStatus::Normal);
        assert!(stats.is_primary);
        assert_eq!(
            (stats.epoch, stats.view, stats.op, stats.commit),
            (0, 0, 0, 0)
        );
        assert_eq!(stats.connections, 2);
        assert_eq!(stats.durability, "disk");
        assert_eq!(stats.storage_batches, 5);
        assert_eq!(stats.runtime.requests_received, 41);
        assert_eq!(
            stats.runtime.connections_rejected, 7,
            "the I/O threads' included"
        );
        assert_eq!((stats.service.as_str(), stats.replica_id), ("null", 0));
        assert_eq!(stats.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(stats.histograms["request_commit_us"].count, 1);
        assert!(stats.histograms.contains_key("loop_iteration_us"));
        assert_eq!(stats.json(), json);
    }

    #[test]
    fn ignores_unknown_fields_and_defaults_missing_optional_ones() {
        let json = r#"{"replica":2,"status":"view_change","is_primary":false,"view":9,
            "op":12,"commit":10,"a_field_from_the_future":{"nested":[1,2]}}"#;
        let stats = ReplicaStats::from_json(json).unwrap();
        assert_eq!(stats.replica, 2);
        assert_eq!(stats.status, ReplicaStatus::ViewChange);
        assert_eq!((stats.view, stats.op, stats.commit), (9, 12, 10));
        assert_eq!(stats.epoch, 0);
        assert_eq!(stats.checkpoint_op, 0);
        assert_eq!(stats.durability, "");
        assert_eq!(stats.counters, ProtocolCounters::default());
        assert!(stats.histograms.is_empty());
    }

    #[test]
    fn keeps_an_unknown_status_by_name() {
        let json = r#"{"replica":1,"status":"transitioning","is_primary":false,"epoch":3,
            "view":0,"op":5,"commit":5}"#;
        let stats = ReplicaStats::from_json(json).unwrap();
        assert_eq!(stats.status, ReplicaStatus::Other("transitioning".into()));
        assert_eq!(stats.status.to_string(), "transitioning");
        assert_eq!(stats.epoch, 3);
    }

    #[test]
    fn refuses_what_is_not_a_stats_document() {
        let check = |json: &str, expected: &str| {
            let error = ReplicaStats::from_json(json).unwrap_err();
            assert!(matches!(error, StatsError::Malformed(_)), "{error:?}");
            assert!(
                error.to_string().contains(expected),
                "{error} lacks {expected}"
            );
        };
        check("", "EOF");
        check("null", "invalid type: null");
        check(
            r#"{"replica":0,"status":5,"is_primary":true,"view":0,"op":1,"commit":1}"#,
            "invalid type: integer `5`, expected a string",
        );
        check(
            r#"{"replica":0,"status":"normal","is_primary":true,"op":1,"commit":1}"#,
            "missing field `view`",
        );
        check(
            r#"{"replica":0,"status":"normal","is_primary":true,"view":0,"op":1,"commit":-1}"#,
            "invalid value",
        );
        check(
            r#"{"replica":0,"status":"normal","is_primary":true,"view":0,"op":1,"commit":2}"#,
            "commit 2 is above op 1",
        );
    }

    #[test]
    fn nothing_listening_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let error = replica_stats(address, &StatsOptions::default()).unwrap_err();
        assert!(matches!(error, StatsError::Connect(_)), "{error:?}");
    }

    #[test]
    fn a_silent_replica_is_a_timeout() {
        // Accepted by the kernel's backlog, never read: the reply never comes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let options = StatsOptions {
            timeout: Duration::from_millis(200),
            ..StatsOptions::default()
        };
        let started = std::time::Instant::now();
        let error = replica_stats(listener.local_addr().unwrap(), &options).unwrap_err();
        assert!(matches!(error, StatsError::Timeout(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
