//! `--metrics-address HOST:PORT`: the replica's metrics in the Prometheus (OpenMetrics)
//! text format at `/metrics`, served by a thread of its own.
//!
//! The event loop never serves HTTP and never waits for a scrape: once a second it copies
//! what it measures into a [`Snapshot`] ([`MetricsExporter::publish`], a few dozen numbers
//! and the bucket counts of three histograms) under a mutex that the HTTP thread holds
//! only to clone it. Formatting and the HTTP exchange happen on the HTTP thread
//! (`tiny_http` for the server, `prometheus-client` for the format).
//!
//! Names follow Prometheus' conventions: `vsr_` prefix, base units in the name
//! (`_seconds`, `_bytes`), counters end in `_total`. Histograms are cumulative since the
//! start, as Prometheus expects (`rate()` over their buckets gives any recent window);
//! `vsr_request_commit_recent_seconds` also gives the quantiles of the last complete
//! 10-second window directly, for a glance without PromQL.

use super::metrics::{status_name, Metrics};
use crate::protocol::{Replica, Status};
use crate::service::StateMachine;
use hdrhistogram::Histogram;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the loop publishes a snapshot.
pub(super) const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// The window of `vsr_request_commit_recent_seconds`.
const RECENT_WINDOW: Duration = Duration::from_secs(10);
/// Upper bounds of the latency buckets, in seconds: 50 us to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
/// Upper bounds of the size buckets (entries per Prepare, ops in the pipeline).
const SIZE_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// One histogram as the encoder wants it: bucket counts, sum and count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets {
    /// (upper bound, observations above the previous bound and at or below this one),
    /// the last bound `+Inf` (the encoder makes them cumulative).
    pub buckets: Vec<(f64, u64)>,
    /// The sum of the observations.
    pub sum: f64,
    /// How many observations.
    pub count: u64,
}

impl Buckets {
    /// `histogram`'s observations (each `value × scale` in the exported unit) in buckets
    /// with upper bounds `bounds` (exported unit).
    fn of(histogram: &Histogram<u64>, bounds: &[f64], scale: f64) -> Buckets {
        let mut buckets = Vec::with_capacity(bounds.len() + 1);
        let mut below = 0; // Observations in the buckets so far.
        for &bound in bounds {
            // Recorded values are integers: the largest one at or below the bound.
            let highest = (bound / scale).floor() as u64;
            let cumulative = if highest == 0 {
                0
            } else {
                histogram.count_between(0, highest)
            };
            buckets.push((bound, cumulative - below));
            below = cumulative;
        }
        buckets.push((f64::INFINITY, histogram.len() - below));
        Buckets {
            buckets,
            sum: histogram.mean() * histogram.len() as f64 * scale,
            count: histogram.len(),
        }
    }
}

/// What one scrape reports: a copy of the loop's numbers at its last publish.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// This replica's index.
    pub replica: u8,
    /// `normal`, `view_change` or `recovering`.
    pub status: String,
    /// `memory` or `disk`.
    pub durability: &'static str,
    /// The service's name (`kv`, `null`, `log`, or an embedder's).
    pub service: &'static str,
    /// Gauges: (name, help, value).
    pub gauges: Vec<(&'static str, &'static str, i64)>,
    /// Counters: (name without `_total`, help, unit, value).
    pub counters: Vec<(&'static str, &'static str, Option<Unit>, u64)>,
    /// Per peer (index), how many ops its acknowledgements lag the primary's log (on the
    /// primary only).
    pub peer_lag_ops: Vec<(u8, u64)>,
    /// Request arrival to reply, seconds.
    pub request_commit: Buckets,
    /// Entries per Prepare.
    pub batch_entries: Buckets,
    /// Uncommitted ops when a Prepare is sent.
    pub pipeline_ops: Buckets,
    /// Quantiles (0.5, 0.9, 0.99, 0.999) of request-to-commit seconds over the last
    /// complete window; empty before the first one.
    pub request_commit_recent: Vec<(f64, f64)>,
}

/// Every status, for the enum-style `vsr_status{status="..."}` gauge.
const STATUSES: [Status; 3] = [Status::Normal, Status::ViewChange, Status::Recovering];

impl prometheus_client::collector::Collector for SharedSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let replica = snapshot.replica.to_string();
        let info = [
            ("replica", replica.as_str()),
            ("durability", snapshot.durability),
            ("service", snapshot.service),
            ("version", env!("CARGO_PKG_VERSION")),
        ];
        let mut metric = encoder.encode_descriptor(
            "vsr_replica",
            "This replica: its index, durability mode, service and vsr version",
            None,
            MetricType::Info,
        )?;
        metric.encode_info(&info)?;
        let mut family = encoder.encode_descriptor(
            "vsr_status",
            "1 for the replica's status (paper 4), 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for status in STATUSES {
            let name = status_name(status);
            let value = i64::from(name == snapshot.status);
            ConstGauge::new(value).encode(family.encode_family(&[("status", name.as_str())])?)?;
        }
        for (name, help, value) in &snapshot.gauges {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(*value).encode(metric)?;
        }
        for (name, help, unit, value) in &snapshot.counters {
            let metric =
                encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
            ConstCounter::new(*value).encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "vsr_peer_lag_ops",
            "On the primary: how many ops each backup's acknowledgements lag its log",
            None,
            MetricType::Gauge,
        )?;
        for (peer, lag) in &snapshot.peer_lag_ops {
            let peer = peer.to_string();
            ConstGauge::new(*lag as i64)
                .encode(family.encode_family(&[("peer", peer.as_str())])?)?;
        }
        let histograms = [
            (
                "vsr_request_commit",
                "From a request's arrival at the primary to its reply",
                Some(Unit::Seconds),
                &snapshot.request_commit,
            ),
            (
                "vsr_batch_entries",
                "Entries per Prepare sent",
                None,
                &snapshot.batch_entries,
            ),
            (
                "vsr_pipeline_ops",
                "Uncommitted ops when a Prepare is sent (the pipeline's depth)",
                None,
                &snapshot.pipeline_ops,
            ),
        ];
        for (name, help, unit, buckets) in histograms {
            let mut metric =
                encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Histogram)?;
            metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                buckets.sum,
                buckets.count,
                &buckets.buckets,
                None,
            )?;
        }
        let mut family = encoder.encode_descriptor(
            "vsr_request_commit_recent",
            "Quantiles of request-to-reply time over the last complete 10-second window",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (quantile, seconds) in &snapshot.request_commit_recent {
            let quantile = quantile.to_string();
            ConstGauge::new(*seconds)
                .encode(family.encode_family(&[("quantile", quantile.as_str())])?)?;
        }
        Ok(())
    }
}

/// The snapshot the loop publishes and scrapes read.
#[derive(Debug, Default)]
struct SharedSnapshot(Mutex<Snapshot>);

/// The loop's side: publishes snapshots and keeps the HTTP thread.
pub struct MetricsExporter {
    shared: Arc<SharedSnapshot>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    address: SocketAddr,
    publish_at: Instant,
    /// Request-to-commit latencies at the start of the current window.
    window_start: Option<Histogram<u64>>,
    window_started: Instant,
    recent: Vec<(f64, f64)>,
}

impl MetricsExporter {
    /// Listens on `address` (port 0: any free port, see [`MetricsExporter::address`]) and
    /// starts the HTTP thread.
    pub fn start(address: SocketAddr, now: Instant) -> std::io::Result<MetricsExporter> {
        let server = tiny_http::Server::http(address).map_err(std::io::Error::other)?;
        let address = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("the metrics server has no IP address"))?;
        let server = Arc::new(server);
        let shared = Arc::new(SharedSnapshot::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(shared.clone()));
        let thread = std::thread::Builder::new()
            .name("vsr-metrics".into())
            .spawn({
                let server = server.clone();
                move || serve(&server, &registry)
            })?;
        Ok(MetricsExporter {
            shared,
            server,
            thread: Some(thread),
            address,
            publish_at: now,
            window_start: None,
            window_started: now,
            recent: Vec::new(),
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Publishes a snapshot if one is due.
    pub(super) fn publish_if_due<S: StateMachine>(
        &mut self,
        now: Instant,
        replica: &Replica<S>,
        metrics: &Metrics,
        connections: usize,
        durability: (&'static str, u64),
    ) {
        if now < self.publish_at {
            return;
        }
        self.publish_at = now + PUBLISH_INTERVAL;
        self.roll_window(now, metrics.request_commit_us.histogram());
        let snapshot = snapshot(replica, metrics, connections, durability, &self.recent);
        *self.shared.0.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// Every `RECENT_WINDOW`: the quantiles of what was recorded since the last window
    /// began (the cumulative histogram minus its copy from then).
    fn roll_window(&mut self, now: Instant, latencies: &Histogram<u64>) {
        if now.duration_since(self.window_started) < RECENT_WINDOW && self.window_start.is_some() {
            return;
        }
        if let Some(start) = self.window_start.as_ref() {
            let mut window = latencies.clone();
            if window.subtract(start).is_ok() && !window.is_empty() {
                self.recent = [0.5, 0.9, 0.99, 0.999]
                    .into_iter()
                    .map(|q| (q, window.value_at_quantile(q) as f64 / 1e6))
                    .collect();
            } else {
                self.recent.clear();
            }
        }
        self.window_start = Some(latencies.clone());
        self.window_started = now;
    }
}

impl std::fmt::Debug for MetricsExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsExporter")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Drop for MetricsExporter {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The HTTP thread: `/metrics` gets the text format, anything else a 404.
fn serve(server: &tiny_http::Server, registry: &Registry) {
    let content_type = tiny_http::Header::from_bytes(
        &b"Content-Type"[..],
        &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
    )
    .expect("a valid header");
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or_default();
        let response = if path == "/metrics" && *request.method() == tiny_http::Method::Get {
            let mut body = String::with_capacity(8192);
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => tiny_http::Response::from_string(body).with_header(content_type.clone()),
                Err(_) => {
                    tiny_http::Response::from_string("encoding failed\n").with_status_code(500)
                }
            }
        } else {
            tiny_http::Response::from_string("vsr serves its metrics at /metrics\n")
                .with_status_code(404)
        };
        // A scraper that went away is its own business.
        let _ = request.respond(response);
    }
}

/// The snapshot of `replica` and `metrics` now.
pub fn snapshot<S: StateMachine>(
    replica: &Replica<S>,
    metrics: &Metrics,
    connections: usize,
    durability: (&'static str, u64),
    recent: &[(f64, f64)],
) -> Snapshot {
    let stats = replica.stats();
    let c = &metrics.counters;
    let signed = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    let gauges = vec![
        (
            "vsr_epoch",
            "The configuration epoch (paper 7)",
            i64::from(replica.epoch()),
        ),
        ("vsr_view", "The view (paper 4)", i64::from(replica.view())),
        ("vsr_op", "The highest op in the log", signed(replica.op())),
        (
            "vsr_commit",
            "The highest committed op",
            signed(replica.commit()),
        ),
        (
            "vsr_checkpoint_op",
            "The op of the latest checkpoint",
            signed(replica.checkpoint_op()),
        ),
        (
            "vsr_is_primary",
            "1 on the primary of the current view",
            i64::from(replica.is_primary()),
        ),
        (
            "vsr_log_entries",
            "Entries held in the log",
            replica.log_entries() as i64,
        ),
        (
            "vsr_pipeline_depth",
            "Prepares sent and not yet committed",
            replica.pipeline_depth() as i64,
        ),
        (
            "vsr_checkpoint_fetch_pages",
            "Pages of the checkpoint being fetched (0: no transfer under way)",
            signed(stats.checkpoint_fetch_pages),
        ),
        (
            "vsr_checkpoint_fetch_pages_held",
            "Pages of the checkpoint being fetched that are held",
            signed(stats.checkpoint_fetch_pages_held),
        ),
        (
            "vsr_connections",
            "Open connections (clients and replicas)",
            connections as i64,
        ),
    ];
    let counters = vec![
        (
            "vsr_view_changes",
            "View changes this replica took part in",
            None,
            stats.view_changes,
        ),
        (
            "vsr_views_started",
            "Views this replica started as the new primary",
            None,
            stats.views_started,
        ),
        (
            "vsr_recoveries",
            "Recoveries (paper 4.3) completed",
            None,
            stats.recoveries,
        ),
        (
            "vsr_state_transfers",
            "State transfers (paper 5.2) received",
            None,
            stats.state_transfers,
        ),
        (
            "vsr_checkpoint_transfers",
            "Checkpoints received by state transfer",
            None,
            stats.checkpoint_transfers,
        ),
        (
            "vsr_checkpoints",
            "Checkpoints taken",
            None,
            stats.checkpoints,
        ),
        (
            "vsr_checkpoints_skipped",
            "Checkpoint ops passed while the previous checkpoint was still being built",
            None,
            stats.checkpoints_skipped,
        ),
        (
            "vsr_reads_answered",
            "Reads at this replica (paper 6.3.2) answered",
            None,
            stats.reads_answered,
        ),
        (
            "vsr_reads_waited",
            "Reads at this replica held until it executed the client's seen op",
            None,
            stats.reads_waited,
        ),
        (
            "vsr_reads_behind",
            "Reads at this replica told to try another (Behind)",
            None,
            stats.reads_behind,
        ),
        (
            "vsr_lease_reads_answered",
            "Lease reads (paper 6.3.1) this primary answered from its state under a lease",
            None,
            stats.lease_reads_answered,
        ),
        (
            "vsr_lease_reads_fallen_back",
            "Lease reads this primary sent back to go through the log (no lease held)",
            None,
            stats.lease_reads_fallen_back,
        ),
        (
            "vsr_view_changes_held_by_lease",
            "Inputs that would have started or joined a view change, held back by a granted lease",
            None,
            stats.view_changes_held_by_lease,
        ),
        (
            "vsr_checkpoint_build_waits",
            "Times the event loop waited for a checkpoint build that took three intervals",
            None,
            stats.checkpoint_build_waits,
        ),
        (
            "vsr_checkpoint_build_holds",
            "Times this primary held ordering before a checkpoint op until a running build finished",
            None,
            stats.checkpoint_build_holds,
        ),
        (
            "vsr_checkpoint_fetches",
            "Checkpoint transfers (paper 5.1) started",
            None,
            stats.checkpoint_fetches,
        ),
        (
            "vsr_checkpoint_fetches_completed",
            "Checkpoint transfers completed",
            None,
            stats.checkpoint_fetches_completed,
        ),
        (
            "vsr_checkpoint_installs_prepared",
            "Completed checkpoint transfers whose install the service prepared off the loop",
            None,
            stats.checkpoint_installs_prepared,
        ),
        (
            "vsr_checkpoint_pages_fetched",
            "Checkpoint pages fetched from other replicas",
            None,
            stats.checkpoint_pages_fetched,
        ),
        (
            "vsr_checkpoint_bytes_fetched",
            "Bytes of checkpoint pages fetched from other replicas",
            None,
            stats.checkpoint_bytes_fetched,
        ),
        (
            "vsr_checkpoint_pages_reused",
            "Checkpoint pages not fetched: held already (same digest)",
            None,
            stats.checkpoint_pages_reused,
        ),
        (
            "vsr_checkpoint_pages_resumed",
            "Checkpoint pages not fetched: kept on disk by a fetch before a restart",
            None,
            stats.checkpoint_pages_resumed,
        ),
        (
            "vsr_checkpoint_pages_kept",
            "Verified checkpoint pages handed to the data directory to keep",
            None,
            stats.checkpoint_pages_kept,
        ),
        (
            "vsr_checkpoint_pages_read_back",
            "Kept checkpoint pages read back at the restart",
            None,
            stats.checkpoint_pages_read_back,
        ),
        (
            "vsr_checkpoint_pages_kept_corrupt",
            "Kept checkpoint pages dropped at the restart: bytes not matching their digest",
            None,
            stats.checkpoint_pages_kept_corrupt,
        ),
        (
            "vsr_checkpoint_pages_refetched",
            "Checkpoint pages asked for again (lost, corrupt, left out, or unavailable)",
            None,
            stats.checkpoint_pages_refetched,
        ),
        (
            "vsr_checkpoint_bytes_served",
            "Bytes of checkpoint pages sent to other replicas",
            None,
            stats.checkpoint_bytes_served,
        ),
        (
            "vsr_prepares_sent",
            "Prepares sent (batches)",
            None,
            stats.prepares_sent,
        ),
        (
            "vsr_witness_involvements",
            "Times this primary involved the witnesses (an active did not answer in time, or a view started)",
            None,
            stats.witness_involvements,
        ),
        (
            "vsr_entries_committed",
            "Entries committed and executed",
            None,
            stats.entries_committed,
        ),
        (
            "vsr_messages_dropped",
            "Protocol messages dropped (stale, out of place or invalid)",
            None,
            stats.messages_dropped,
        ),
        (
            "vsr_requests_received",
            "Client requests handed to the protocol",
            None,
            c.requests_received,
        ),
        (
            "vsr_replies_sent",
            "Replies written to clients",
            None,
            c.replies_sent,
        ),
        (
            "vsr_connections_accepted",
            "Connections accepted",
            None,
            c.connections_accepted,
        ),
        (
            "vsr_connections_rejected",
            "Connections closed for breaking a rule",
            None,
            c.connections_rejected + c.connections_rejected_io,
        ),
        (
            "vsr_received",
            "Bytes read from sockets",
            Some(Unit::Bytes),
            c.bytes_received,
        ),
        (
            "vsr_sent",
            "Bytes written to sockets",
            Some(Unit::Bytes),
            c.bytes_sent,
        ),
        (
            "vsr_storage_batches",
            "Batches handed to the storage thread (disk durability)",
            None,
            durability.1,
        ),
    ];
    let peer_lag_ops = replica
        .peer_acknowledged()
        .map(|acked| {
            acked
                .iter()
                .enumerate()
                .filter(|(peer, _)| *peer != replica.replica() as usize)
                .map(|(peer, &op)| (peer as u8, replica.op().saturating_sub(op)))
                .collect()
        })
        .unwrap_or_default();
    Snapshot {
        replica: replica.replica(),
        status: status_name(replica.status()),
        durability: durability.0,
        service: replica.service().name(),
        gauges,
        counters,
        peer_lag_ops,
        request_commit: Buckets::of(
            metrics.request_commit_us.histogram(),
            &LATENCY_BUCKETS_SECONDS,
            1e-6,
        ),
        batch_entries: Buckets::of(metrics.batch_entries.histogram(), &SIZE_BUCKETS, 1.0),
        pipeline_ops: Buckets::of(metrics.pipeline_ops.histogram(), &SIZE_BUCKETS, 1.0),
        request_commit_recent: recent.to_vec(),
    }
}

/// The text a scrape of `snapshot` returns (for tests).
#[cfg(test)]
fn render(snapshot: Snapshot) -> String {
    let shared = Arc::new(SharedSnapshot(Mutex::new(snapshot)));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(shared));
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry).unwrap();
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::protocol::Start;
    use crate::service::Null;

    #[test]
    fn a_snapshot_renders_as_openmetrics_with_conventional_names() {
        let replica = Replica::new(Config::new(1, 3), 0, Null, Start::Fresh);
        let mut metrics = Metrics::default();
        for micros in [80, 400, 900, 3_000, 2_000_000] {
            metrics.request_commit_us.record(micros);
        }
        metrics.counters.bytes_sent = 4096;
        let text = render(snapshot(
            &replica,
            &metrics,
            2,
            ("disk", 9),
            &[(0.5, 0.0009)],
        ));
        for line in [
            "vsr_replica_info{replica=\"0\",durability=\"disk\",service=\"null\",version=\"",
            "vsr_status{status=\"normal\"} 1",
            "vsr_status{status=\"recovering\"} 0",
            "vsr_view 0",
            "vsr_is_primary 1",
            "vsr_connections 2",
            "vsr_sent_bytes_total 4096",
            "vsr_storage_batches_total 9",
            "vsr_request_commit_seconds_count 5",
            "vsr_request_commit_seconds_bucket{le=\"0.0001\"} 1",
            "vsr_request_commit_seconds_bucket{le=\"0.001\"} 3",
            "vsr_request_commit_seconds_bucket{le=\"0.005\"} 4",
            "vsr_request_commit_seconds_bucket{le=\"+Inf\"} 5",
            "vsr_request_commit_recent_seconds{quantile=\"0.5\"} 0.0009",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        // One TYPE line per family, no name twice.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut unique = types.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(types.len(), unique.len(), "{text}");
    }

    #[test]
    fn the_recent_window_holds_only_what_was_recorded_in_it() {
        let now = Instant::now();
        let address = "127.0.0.1:0".parse().unwrap();
        let mut exporter = MetricsExporter::start(address, now).unwrap();
        let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        latencies.record(5_000_000).unwrap(); // Before the first window: never recent.
        exporter.roll_window(now, &latencies);
        assert!(exporter.recent.is_empty());
        for _ in 0..100 {
            latencies.record(1_000).unwrap();
        }
        exporter.roll_window(now + RECENT_WINDOW / 2, &latencies);
        assert!(exporter.recent.is_empty(), "the window is not complete yet");
        exporter.roll_window(now + RECENT_WINDOW, &latencies);
        let p999 = exporter.recent.iter().find(|(q, _)| *q == 0.999).unwrap().1;
        assert!(
            (0.000_99..0.001_01).contains(&p999),
            "{:?}",
            exporter.recent
        );
    }
}
