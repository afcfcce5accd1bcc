//! What the runtime measures about its replica: latency and size histograms, counters,
//! and their two outputs: a periodic one-line log summary and the JSON of a stats reply.
//!
//! Histograms are `hdrhistogram` with fixed bounds, allocated once at start-up; recording
//! never allocates (values above the bound are clamped).

use super::connections::ReadCounts;
use crate::client::{ConfigurationStats, HistogramSummary, ReplicaStats};
use crate::protocol::{Replica, Status};
use crate::service::StateMachine;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// One named histogram.
#[derive(Debug)]
pub struct Recorder {
    name: &'static str,
    histogram: Histogram<u64>,
}

impl Recorder {
    fn new(name: &'static str, highest: u64) -> Recorder {
        let histogram =
            Histogram::new_with_bounds(1, highest, 3).expect("static histogram bounds are valid");
        Recorder { name, histogram }
    }

    /// Records `value`, clamped to the histogram's range.
    pub fn record(&mut self, value: u64) {
        self.histogram.saturating_record(value.max(1));
    }

    /// Records `value` `count` times, clamped to the histogram's range.
    pub fn record_n(&mut self, value: u64, count: u64) {
        self.histogram.saturating_record_n(value.max(1), count);
    }

    /// The histogram itself.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// The value at `quantile` (0 when empty).
    pub fn quantile(&self, quantile: f64) -> u64 {
        self.histogram.value_at_quantile(quantile)
    }

    /// Count, mean and quantiles, as a stats reply carries them.
    pub fn summary(&self) -> HistogramSummary {
        let h = &self.histogram;
        HistogramSummary {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The runtime's own counters (the protocol's are in `Replica::stats`); the `runtime` of
/// a stats reply (`client::ReplicaStats`), where `connections_rejected` counts the I/O
/// threads' too.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Connections accepted from anyone.
    pub connections_accepted: u64,
    /// Connections closed because they broke a rule (decode error, handshake, overflow).
    pub connections_rejected: u64,
    /// The same, by the I/O threads (refreshed before each report; a stats reply adds it
    /// to `connections_rejected`).
    #[serde(skip)]
    pub connections_rejected_io: u64,
    /// Frames decoded.
    pub frames_received: u64,
    /// Client requests handed to the core.
    pub requests_received: u64,
    /// Replies written to clients.
    pub replies_sent: u64,
    /// Replies for clients with no live connection here (the client retries elsewhere).
    pub replies_unroutable: u64,
    /// Event loop iterations.
    pub loop_iterations: u64,
    /// Times the loop stopped reading clients because the core was full.
    pub backpressure_pauses: u64,
    /// Bytes read from sockets.
    pub bytes_received: u64,
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    /// Connections refused at accept (no slot, or too many from one address).
    pub connections_refused: u64,
    /// Frames refused for a number no correct peer sends (`DecodeError::OutOfRange`).
    pub frames_out_of_range: u64,
    /// Checkpoint parts of pages whose pages the page hasher's thread hashed.
    pub checkpoint_parts_hashed_off_loop: u64,
    /// Checkpoint parts of pages hashed on the loop (by the core) because the page
    /// hasher had `PARTS_MAX` parts already.
    pub checkpoint_parts_hashed_on_loop: u64,
    /// Handshakes refused for a configuration mismatch, a missing or wrong key, either way.
    pub handshakes_refused: u64,
    /// Rejection log lines not written because the same one was written within a minute.
    pub log_lines_suppressed: u64,
    /// Bytes of journal batches the data directory appended (`--durability disk`; these
    /// `storage_` counters are the process's, `storage::counters`, read at each reply).
    pub storage_journal_append_bytes: u64,
    /// Bytes of journal images written by compactions.
    pub storage_journal_compaction_bytes: u64,
    /// Bytes of zeros written to prepare journal files.
    pub storage_journal_zero_bytes: u64,
    /// Journal compactions.
    pub storage_journal_compactions: u64,
    /// Bytes of checkpoint files written.
    pub storage_checkpoint_file_bytes: u64,
    /// Checkpoint files written holding every page.
    pub storage_checkpoint_files_full: u64,
    /// Checkpoint files written holding only the pages their chain lacked.
    pub storage_checkpoint_files_incremental: u64,
    /// Pages checkpoint files named in an earlier file instead of writing them again.
    pub storage_checkpoint_pages_shared: u64,
    /// Time the event loop's thread ran on a core since it started, milliseconds (Linux:
    /// its `schedstat`, read at each reply; 0 elsewhere).
    pub loop_cpu_ms: u64,
    /// Time the event loop's thread was ready to run but waited for a core, milliseconds:
    /// what a machine with more busy threads than cores adds to its iterations, told
    /// apart from the loop's own work (`loop_cpu_ms`) and from its sleeps.
    pub loop_runqueue_wait_ms: u64,
}

impl Counters {
    /// Copies the data directory's byte counters (process-wide) in.
    fn add_storage_counters(&mut self) {
        use crate::storage::counters as storage;
        self.storage_journal_append_bytes = storage::JOURNAL_APPEND_BYTES.get();
        self.storage_journal_compaction_bytes = storage::JOURNAL_COMPACTION_BYTES.get();
        self.storage_journal_zero_bytes = storage::JOURNAL_ZERO_BYTES.get();
        self.storage_journal_compactions = storage::JOURNAL_COMPACTIONS.get();
        self.storage_checkpoint_file_bytes = storage::CHECKPOINT_FILE_BYTES.get();
        self.storage_checkpoint_files_full = storage::CHECKPOINT_FILES_FULL.get();
        self.storage_checkpoint_files_incremental = storage::CHECKPOINT_FILES_INCREMENTAL.get();
        self.storage_checkpoint_pages_shared = storage::CHECKPOINT_PAGES_SHARED.get();
    }

    /// Copies the calling thread's scheduler times in: called on the event loop's thread.
    fn add_loop_schedstat(&mut self) {
        // "<ns on a core> <ns waiting on a run queue> <timeslices>".
        let Ok(text) = std::fs::read_to_string("/proc/thread-self/schedstat") else {
            return;
        };
        let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(on_cpu)), Some(Ok(waiting))) = (fields.next(), fields.next()) {
            self.loop_cpu_ms = on_cpu / 1_000_000;
            self.loop_runqueue_wait_ms = waiting / 1_000_000;
        }
    }

    /// Adds what a read pass read and decoded.
    pub(crate) fn add_read(&mut self, counts: ReadCounts) {
        self.bytes_received += counts.bytes;
        self.frames_received += counts.frames;
        self.frames_out_of_range += counts.frames_out_of_range;
    }
}

/// Histograms and counters of one replica's runtime.
#[derive(Debug)]
pub struct Metrics {
    /// Request arrival at the primary to its reply, microseconds.
    pub request_commit_us: Recorder,
    /// Entries per Prepare sent.
    pub batch_entries: Recorder,
    /// Uncommitted ops when a Prepare is sent (the pipeline's depth in ops).
    pub pipeline_ops: Recorder,
    /// Wall time of one event loop iteration after poll returns, microseconds.
    pub loop_iteration_us: Recorder,
    /// Wall time of one checkpoint build on the builder thread, milliseconds.
    pub checkpoint_build_ms: Recorder,
    /// Counters.
    pub counters: Counters,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            request_commit_us: Recorder::new("request_commit_us", 60_000_000),
            batch_entries: Recorder::new("batch_entries", 1 << 20),
            pipeline_ops: Recorder::new("pipeline_ops", 1 << 24),
            loop_iteration_us: Recorder::new("loop_iteration_us", 60_000_000),
            checkpoint_build_ms: Recorder::new("checkpoint_build_ms", 3_600_000),
            counters: Counters::default(),
        }
    }
}

/// `Status` as a snake_case word for logs and JSON.
pub fn status_name(status: Status) -> String {
    let debug = format!("{status:?}");
    let mut name = String::with_capacity(debug.len() + 4);
    for (index, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

impl Metrics {
    /// Logs the periodic summary as structured fields; `ops_per_sec` is the commit rate
    /// over the last interval.
    pub fn log_summary<S: StateMachine>(&self, replica: &Replica<S>, ops_per_sec: f64) {
        tracing::info!(
            replica = replica.replica(),
            status = %status_name(replica.status()),
            view = replica.view(),
            op = replica.op(),
            commit = replica.commit(),
            commits_per_sec = ops_per_sec.round() as u64,
            request_commit_p50_us = self.request_commit_us.quantile(0.5),
            request_commit_p99_us = self.request_commit_us.quantile(0.99),
            batch_entries_p50 = self.batch_entries.quantile(0.5),
            batch_entries_p99 = self.batch_entries.quantile(0.99),
            loop_iteration_p99_us = self.loop_iteration_us.quantile(0.99),
            connections_accepted = self.counters.connections_accepted,
            connections_rejected =
                self.counters.connections_rejected + self.counters.connections_rejected_io,
            "summary"
        );
    }

    /// The document of a stats reply, as JSON, built on the event loop's thread (its
    /// scheduler times are the calling thread's); `histograms` is
    /// [`Metrics::histogram_summaries`]' output (possibly cached: it is the expensive
    /// part). `durability` is the mode's name and the batches handed to the storage
    /// thread (0 in memory).
    pub fn json<S: StateMachine>(
        &self,
        replica: &Replica<S>,
        connections: usize,
        durability: (&str, u64),
        histograms: &BTreeMap<String, HistogramSummary>,
    ) -> String {
        let mut runtime = self.counters.clone();
        runtime.connections_rejected += runtime.connections_rejected_io;
        runtime.add_storage_counters();
        runtime.add_loop_schedstat();
        let document = ReplicaStats {
            replica: replica.replica(),
            replica_id: replica.id(),
            epoch: replica.epoch(),
            configuration: Some(ConfigurationStats::of(replica.configuration())),
            epoch_start: replica.epoch_start(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            service: replica.service().name().to_string(),
            status: status_name(replica.status()).into(),
            is_primary: replica.is_primary(),
            view: replica.view(),
            op: replica.op(),
            commit: replica.commit(),
            checkpoint_op: replica.checkpoint_op(),
            log_entries: replica.log_entries() as u64,
            connections: connections as u64,
            durability: durability.0.to_string(),
            storage_batches: durability.1,
            counters: replica.stats().clone(),
            runtime,
            histograms: histograms.clone(),
            json: String::new(),
        };
        serde_json::to_string(&document).expect("a stats document always serializes")
    }

    /// The histograms of a stats reply, by name.
    pub fn histogram_summaries(&self) -> BTreeMap<String, HistogramSummary> {
        [
            &self.request_commit_us,
            &self.batch_entries,
            &self.pipeline_ops,
            &self.loop_iteration_us,
            &self.checkpoint_build_ms,
        ]
        .into_iter()
        .map(|recorder| (recorder.name.to_string(), recorder.summary()))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_are_snake_case() {
        assert_eq!(status_name(Status::Normal), "normal");
        assert_eq!(status_name(Status::ViewChange), "view_change");
        assert_eq!(status_name(Status::Recovering), "recovering");
    }

    #[test]
    fn recorders_clamp_and_render() {
        let mut metrics = Metrics::default();
        metrics.batch_entries.record(0);
        metrics.batch_entries.record(u64::MAX);
        let summary = metrics.batch_entries.summary();
        assert_eq!(summary.count, 2);
        assert_eq!(summary.p50, 1, "0 is clamped to the lowest value");
        assert!(summary.max >= 1 << 20, "u64::MAX is clamped to the highest");
    }

    /// The loop's scheduler times are the calling thread's, in milliseconds: a thread
    /// that computed for 20 ms reports at least that much on a core.
    #[cfg(target_os = "linux")]
    #[test]
    fn loop_times_are_the_calling_threads() {
        let on_cpu_ns = || -> Option<u64> {
            let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
            text.split_ascii_whitespace().next()?.parse().ok()
        };
        std::thread::spawn(move || {
            let Some(start) = on_cpu_ns() else {
                return; // A kernel without schedstat: the counters stay 0.
            };
            let mut spun = 0u64;
            while on_cpu_ns().expect("read before") < start + 20_000_000 {
                spun = std::hint::black_box(spun.wrapping_add(1));
            }
            let mut counters = Counters::default();
            counters.add_loop_schedstat();
            assert!(counters.loop_cpu_ms >= 20, "{counters:?}");
        })
        .join()
        .expect("the thread ran");
    }
}
