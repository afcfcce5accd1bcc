//! What a run reports: the human table on stdout (one column per system, plus their ratio
//! when comparing) with the run's facts above it and its verdicts below, the `--json`
//! summary (the keys scripts read first, in their documented order, then the rest of the
//! run), and `--hgrm`.

use crate::driver::Measurement;
use crate::hgrm;
use crate::sizing::SESSIONS_AUTO_MAX;
use anyhow::Context;
use hdrhistogram::Histogram;
use std::path::Path;

/// A finished run, ready to print.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Column title: `vsr` or `tcp baseline`.
    pub system: String,
    /// What was measured.
    pub measurement: Measurement,
    /// Replicas (or baseline nodes) in the cluster.
    pub replicas: usize,
    /// Sessions used.
    pub sessions: usize,
    /// Whether the open loop sized `sessions` itself (no `--sessions`).
    pub sessions_auto: bool,
    /// Connections used.
    pub connections: usize,
    /// Bytes of payload per operation.
    pub payload_bytes: usize,
    /// The service driven (`kv`, `null`); `None` for the baseline, which runs none.
    pub service: Option<&'static str>,
    /// kv with gets: the fraction of operations that are gets and how they were read
    /// (`strict`, `backup`); `None` when no operation was a read.
    pub reads: Option<(f64, &'static str)>,
    /// Open loop: the target rate in operations per second; `None`: closed loop.
    pub rate_target: Option<f64>,
    /// Open loop: why the cluster, not the generator, is what fell behind the rate (the
    /// auto-sizing saw throughput stay flat as sessions doubled).
    pub cluster_behind: Option<String>,
    /// View changes seen during the run (`None`: unknown, e.g. the baseline).
    pub view_changes: Option<u64>,
    /// The cluster's durability mode from its stats (`memory`, `disk`; `None`: unknown,
    /// e.g. the baseline).
    pub durability: Option<String>,
    /// The cluster's epoch from its stats (0 when they carry none; `None`: unknown).
    pub epoch: Option<u64>,
    /// The version of the local `vsr` binary (the one that started the local cluster, or
    /// `--vsr-bin`, or the one next to `vsr-load`); `None` if none is at hand.
    pub vsr_version: Option<String>,
    /// The version the replicas run, from their stats (`0.1.0+0.2.0` if they differ;
    /// `None`: unknown, e.g. the baseline).
    pub replica_version: Option<String>,
}

/// `{"p50", "p90", "p99", "p999", "max", "min", "mean", "stddev"}` of a histogram in us.
fn latency_json(histogram: &Histogram<u64>) -> serde_json::Value {
    let (min, mean, stddev) = if histogram.is_empty() {
        (0, 0.0, 0.0)
    } else {
        (histogram.min(), histogram.mean(), histogram.stdev())
    };
    serde_json::json!({
        "p50": histogram.value_at_quantile(0.5),
        "p90": histogram.value_at_quantile(0.9),
        "p99": histogram.value_at_quantile(0.99),
        "p999": histogram.value_at_quantile(0.999),
        "max": histogram.max(),
        "min": min,
        "mean": round1(mean),
        "stddev": round1(stddev),
    })
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

impl Summary {
    /// Successful operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        if self.measurement.seconds > 0.0 {
            self.measurement.ops as f64 / self.measurement.seconds
        } else {
            0.0
        }
    }

    /// Payload megabytes (10^6) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.ops_per_sec() * self.payload_bytes as f64 / 1e6
    }

    /// The latency at quantile `q`, in microseconds.
    pub fn latency_us(&self, q: f64) -> u64 {
        self.measurement.histogram.value_at_quantile(q)
    }

    /// `closed` or `open` (loop).
    pub fn mode(&self) -> &'static str {
        if self.rate_target.is_some() {
            "open"
        } else {
            "closed"
        }
    }

    /// The `--json` document: the keys scripts read first (`ops` to `payload_bytes`, and
    /// in `latency_us` `p50` to `max`), in their documented order, then the rest of the run.
    pub fn json(&self) -> serde_json::Value {
        let m = &self.measurement;
        serde_json::json!({
            "ops": m.ops,
            "seconds": m.seconds,
            "ops_per_sec": self.ops_per_sec(),
            "latency_us": latency_json(&m.histogram),
            "replicas": self.replicas,
            "sessions": self.sessions,
            "payload_bytes": self.payload_bytes,
            "durability": self.durability,
            "system": self.system,
            "mode": self.mode(),
            "service": self.service,
            "read_fraction": self.reads.map(|(fraction, _)| fraction),
            "reads": self.reads.map(|(_, mode)| mode),
            "rate_target": self.rate_target,
            "sessions_auto": self.sessions_auto,
            "connections": self.connections,
            "errors": m.errors,
            "errors_by_kind": m.errors_by_kind,
            "first_error": m.first_error,
            "unsent": m.unsent,
            "session_waits": m.session_waits,
            "send_wait_max_us": m.send_wait_max_us,
            "service_time_us": latency_json(&m.service_histogram),
            "cluster_behind": self.cluster_behind,
            "view_changes": self.view_changes,
            "epoch": self.epoch,
            "vsr_version": self.vsr_version,
            "replica_version": self.replica_version,
            "interrupted": m.interrupted,
        })
    }

    /// Writes `--json`.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.json())? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Writes `--hgrm` (milliseconds, as HdrHistogram's tools expect).
    /// In the open loop, the service times (uncorrected) go beside it as
    /// `<stem>.service.hgrm`, as wrk2 prints both distributions.
    pub fn write_hgrm(&self, path: &Path) -> anyhow::Result<()> {
        let mut files = vec![(path.to_path_buf(), &self.measurement.histogram)];
        if self.rate_target.is_some() {
            let service = crate::output::with_suffix(path, Some("service"));
            files.push((service, &self.measurement.service_histogram));
        }
        for (path, histogram) in files {
            let text = hgrm::percentile_distribution(histogram, 1000.0);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// The open loop's verdict on the rate: kept, the generator's limit, or the cluster's.
    fn rate_verdict(&self) -> Option<String> {
        let rate = self.rate_target?;
        let m = &self.measurement;
        if m.session_waits == 0 && m.unsent == 0 {
            return Some(format!(
                "held the open loop at {rate} ops/s with {} sessions: no operation waited \
                 for an idle session",
                self.sessions
            ));
        }
        let waited = format!(
            "{} operations due waited for an idle session (up to {} ms) and {} were never sent",
            m.session_waits,
            m.send_wait_max_us / 1000,
            m.unsent
        );
        if let Some(why) = &self.cluster_behind {
            return Some(format!(
                "the cluster falls behind {rate} ops/s: {why}; {waited}, and the corrected \
                 latency includes that queueing, as it would for real clients"
            ));
        }
        Some(self.generator_short(rate, &waited))
    }

    /// Why the load generator fell short of `rate` (operations `waited` for a session),
    /// and how many sessions would do.
    fn generator_short(&self, rate: f64, waited: &str) -> String {
        let h = &self.measurement.service_histogram;
        let mean_s = if h.is_empty() { 0.0 } else { h.mean() / 1e6 };
        let carry = if mean_s > 0.0 && self.sessions as f64 / mean_s < rate {
            format!(
                "; {} sessions at the measured mean service time of {:.0} us carry at most \
                 {:.0} ops/s",
                self.sessions,
                mean_s * 1e6,
                self.sessions as f64 / mean_s
            )
        } else {
            format!(
                "; the service time varies (p99 {} us) and {} sessions leave too little slack \
                 for the slow replies",
                h.value_at_quantile(0.99),
                self.sessions
            )
        };
        // Little's law with headroom: enough sessions for the rate at the p99.9 service time,
        // twice over.
        let needed = (2.0 * rate * h.value_at_quantile(0.999) as f64 / 1e6)
            .ceil()
            .max(self.sessions as f64 + 1.0);
        let advice = if self.sessions_auto {
            format!(
                "automatic sizing stopped at its cap of {SESSIONS_AUTO_MAX} sessions; rerun \
                 with --sessions {needed:.0} or more"
            )
        } else {
            format!(
                "rerun with --sessions {needed:.0} or more (2 x rate x p99.9 service time), or \
                 without --sessions to size them automatically"
            )
        };
        format!(
            "the load generator could not keep {rate} ops/s: {waited}{carry}. This is the \
             generator's limit, not the cluster's, and the corrected latency includes the \
             wait; {advice}"
        )
    }
}

/// One table row: a label and how to read it from a summary.
struct Row {
    label: &'static str,
    value: Box<dyn Fn(&Summary) -> f64>,
    text: Box<dyn Fn(&Summary) -> String>,
}

impl Row {
    fn new(
        label: &'static str,
        value: impl Fn(&Summary) -> f64 + 'static,
        text: impl Fn(&Summary) -> String + 'static,
    ) -> Row {
        Row {
            label,
            value: Box::new(value),
            text: Box::new(text),
        }
    }

    /// A latency statistic in whole microseconds; `service`: of the service time (from the
    /// actual send) instead of the latency.
    fn latency(label: &'static str, service: bool, stat: fn(&Histogram<u64>) -> f64) -> Row {
        let value = move |s: &Summary| {
            let histogram = if service {
                &s.measurement.service_histogram
            } else {
                &s.measurement.histogram
            };
            if histogram.is_empty() {
                0.0
            } else {
                stat(histogram)
            }
        };
        Row::new(label, value, move |s| format!("{:.0}", value(s)))
    }
}

fn quantile(q: f64) -> impl Fn(&Histogram<u64>) -> f64 {
    move |h| h.value_at_quantile(q) as f64
}

fn rows(open_loop: bool) -> Vec<Row> {
    let mut rows = vec![
        Row::new(
            "ops",
            |s| s.measurement.ops as f64,
            |s| s.measurement.ops.to_string(),
        ),
        Row::new(
            "seconds",
            |s| s.measurement.seconds,
            |s| format!("{:.2}", s.measurement.seconds),
        ),
        Row::new("ops/s", Summary::ops_per_sec, |s| {
            format!("{:.0}", s.ops_per_sec())
        }),
        Row::new("MB/s", Summary::mb_per_sec, |s| {
            format!("{:.2}", s.mb_per_sec())
        }),
        Row::latency("p50 us", false, |h| quantile(0.5)(h)),
        Row::latency("p90 us", false, |h| quantile(0.9)(h)),
        Row::latency("p99 us", false, |h| quantile(0.99)(h)),
        Row::latency("p99.9 us", false, |h| quantile(0.999)(h)),
        Row::latency("max us", false, |h| h.max() as f64),
        Row::latency("min us", false, |h| h.min() as f64),
        Row::latency("mean us", false, Histogram::mean),
        Row::latency("stddev us", false, Histogram::stdev),
    ];
    if open_loop {
        rows.extend([
            Row::latency("svc p50 us", true, |h| quantile(0.5)(h)),
            Row::latency("svc p99 us", true, |h| quantile(0.99)(h)),
            Row::latency("svc max us", true, |h| h.max() as f64),
            Row::new(
                "unsent",
                |s| s.measurement.unsent as f64,
                |s| s.measurement.unsent.to_string(),
            ),
        ]);
    }
    rows.extend([
        Row::new(
            "errors",
            |s| s.measurement.errors as f64,
            |s| s.measurement.errors.to_string(),
        ),
        Row::new(
            "durability",
            |_| f64::NAN,
            |s| s.durability.clone().unwrap_or_else(|| "n/a".to_string()),
        ),
        Row::new(
            "view changes",
            |s| s.view_changes.map_or(f64::NAN, |v| v as f64),
            |s| {
                s.view_changes
                    .map_or_else(|| "n/a".to_string(), |v| v.to_string())
            },
        ),
    ]);
    rows
}

/// Rows where a ratio of two systems means nothing.
const NO_RATIO: [&str; 5] = ["seconds", "errors", "unsent", "durability", "view changes"];

/// The facts of the run above the table: what ran, how, against what.
fn header(first: &Summary) -> String {
    let mut facts = vec![format!("{} loop", first.mode())];
    if let Some(rate) = first.rate_target {
        facts.push(format!("rate target {rate} ops/s"));
    }
    if let Some(service) = first.service {
        facts.push(format!("service {service}"));
    }
    if let Some((fraction, mode)) = first.reads {
        facts.push(format!("reads {fraction} {mode}"));
    }
    facts.push(format!("replicas {}", first.replicas));
    if let Some(epoch) = first.epoch {
        facts.push(format!("epoch {epoch}"));
    }
    if let Some(durability) = &first.durability {
        facts.push(format!("durability {durability}"));
    }
    facts.extend(versions(first));
    let sessions = if first.sessions_auto {
        format!("{} (sized automatically)", first.sessions)
    } else {
        first.sessions.to_string()
    };
    format!(
        "{}\nsessions {sessions}  connections {}  payload {} B\n",
        facts.join("  "),
        first.connections,
        first.payload_bytes
    )
}

/// The versions among the facts: the local binary's (`vsr 0.1.0`), then the replicas'
/// (`replicas run vsr 0.2.0`) when they differ from it or it is unknown.
fn versions(summary: &Summary) -> Vec<String> {
    let local = summary.vsr_version.as_deref();
    let mut facts: Vec<String> = local.map(|v| format!("vsr {v}")).into_iter().collect();
    if let Some(replicas) = summary.replica_version.as_deref() {
        if Some(replicas) != local {
            facts.push(format!("replicas run vsr {replicas}"));
        }
    }
    facts
}

/// The human table: one column per summary; with exactly two, a third column `ratio`
/// (first / second) for the rows where a ratio means something.
pub fn table(summaries: &[Summary]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if let Some(first) = summaries.first() {
        out += &header(first);
    }
    let _ = write!(out, "{:<14}", "");
    for summary in summaries {
        let _ = write!(out, "{:>16}", summary.system);
    }
    let ratio = summaries.len() == 2;
    if ratio {
        let _ = write!(out, "{:>10}", "ratio");
    }
    out.push('\n');
    let open_loop = summaries.iter().any(|s| s.rate_target.is_some());
    for row in rows(open_loop) {
        let _ = write!(out, "{:<14}", row.label);
        for summary in summaries {
            let _ = write!(out, "{:>16}", (row.text)(summary));
        }
        if ratio && !NO_RATIO.contains(&row.label) {
            let (a, b) = ((row.value)(&summaries[0]), (row.value)(&summaries[1]));
            let text = if b > 0.0 && a.is_finite() {
                format!("{:.2}", a / b)
            } else {
                "-".to_string()
            };
            let _ = write!(out, "{text:>10}");
        }
        out.push('\n');
    }
    if open_loop {
        let _ = writeln!(
            out,
            "(latency from each operation's intended send time, corrected for coordinated \
             omission; svc: service time from the actual send, uncorrected)"
        );
    }
    for summary in summaries {
        let m = &summary.measurement;
        if !m.errors_by_kind.is_empty() {
            let kinds: Vec<String> = m
                .errors_by_kind
                .iter()
                .map(|(kind, count)| format!("{kind} {count}"))
                .collect();
            let _ = writeln!(
                out,
                "{}: errors by kind: {}",
                summary.system,
                kinds.join(", ")
            );
        }
        if let Some(error) = &m.first_error {
            let _ = writeln!(out, "{}: first error: {error}", summary.system);
        }
        if let Some(verdict) = summary.rate_verdict() {
            let _ = writeln!(out, "{}: {verdict}", summary.system);
        }
        if m.interrupted {
            let _ = writeln!(
                out,
                "{}: interrupted (Ctrl-C); numbers cover the time run",
                summary.system
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::new_histogram;

    fn summary(system: &str, ops: u64) -> Summary {
        let mut histogram = new_histogram();
        histogram.record(100).unwrap();
        histogram.record(200).unwrap();
        Summary {
            system: system.to_string(),
            measurement: Measurement {
                ops,
                errors: 0,
                errors_by_kind: Default::default(),
                first_error: None,
                seconds: 2.0,
                service_histogram: histogram.clone(),
                histogram,
                unsent: 0,
                session_waits: 0,
                send_wait_max_us: 0,
                interrupted: false,
            },
            replicas: 3,
            sessions: 64,
            sessions_auto: false,
            connections: 4,
            payload_bytes: 1000,
            service: Some("null"),
            reads: None,
            rate_target: None,
            cluster_behind: None,
            view_changes: Some(0),
            durability: Some("memory".to_string()),
            epoch: Some(0),
            vsr_version: Some("0.1.0".to_string()),
            replica_version: Some("0.1.0".to_string()),
        }
    }

    /// An open-loop run at 1000 ops/s whose operations waited `waits` times for a session.
    fn open_loop(waits: u64, sessions_auto: bool) -> Summary {
        let mut summary = summary("vsr", 1000);
        summary.rate_target = Some(1000.0);
        summary.sessions = 2;
        summary.sessions_auto = sessions_auto;
        summary.measurement.session_waits = waits;
        summary.measurement.send_wait_max_us = 25_000;
        summary
    }

    #[test]
    fn json_keeps_the_documented_keys_first_and_carries_the_whole_run() {
        let mut summary = summary("vsr", 1000);
        summary.measurement.errors = 3;
        summary.measurement.errors_by_kind.insert("timeout", 3);
        let json = summary.json();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        let documented = [
            "ops",
            "seconds",
            "ops_per_sec",
            "latency_us",
            "replicas",
            "sessions",
            "payload_bytes",
        ];
        assert_eq!(keys[..documented.len()], documented);
        for key in [
            "durability",
            "system",
            "mode",
            "service",
            "rate_target",
            "sessions_auto",
            "connections",
            "errors",
            "errors_by_kind",
            "first_error",
            "unsent",
            "session_waits",
            "send_wait_max_us",
            "service_time_us",
            "cluster_behind",
            "view_changes",
            "epoch",
            "vsr_version",
            "replica_version",
            "interrupted",
        ] {
            assert!(json.get(key).is_some(), "no {key} in {json}");
        }
        let latency: Vec<&String> = json["latency_us"].as_object().unwrap().keys().collect();
        assert_eq!(
            latency,
            ["p50", "p90", "p99", "p999", "max", "min", "mean", "stddev"]
        );
        assert_eq!(json["ops_per_sec"], 500.0);
        assert_eq!(json["durability"], "memory");
        assert_eq!(json["mode"], "closed");
        assert_eq!(json["service"], "null");
        assert_eq!(json["epoch"], 0);
        assert_eq!(json["vsr_version"], "0.1.0");
        assert_eq!(json["replica_version"], "0.1.0");
        assert_eq!(json["errors_by_kind"]["timeout"], 3);
        assert_eq!(json["latency_us"]["min"], 100);
        assert_eq!(json["latency_us"]["mean"], 150.0);
        assert_eq!(json["latency_us"]["stddev"], 50.0);
    }

    #[test]
    fn comparison_table_has_a_ratio_column() {
        let text = table(&[summary("vsr", 1000), summary("tcp baseline", 2000)]);
        let ops_line = text.lines().find(|l| l.starts_with("ops/s")).unwrap();
        assert!(ops_line.trim_end().ends_with("0.50"), "{ops_line}");
        assert!(text.contains("MB/s"));
        let header = text.lines().next().unwrap();
        assert_eq!(
            header,
            "closed loop  service null  replicas 3  epoch 0  durability memory  vsr 0.1.0"
        );
    }

    #[test]
    fn the_facts_name_the_replicas_version_when_it_is_not_the_local_one() {
        let first_line = |summary: &Summary| header(summary).lines().next().unwrap().to_string();
        let mut summary = summary("vsr", 1000);
        summary.replica_version = Some("0.2.0".to_string());
        assert!(
            first_line(&summary).ends_with("  vsr 0.1.0  replicas run vsr 0.2.0"),
            "{}",
            first_line(&summary)
        );
        // `--cluster` with no local binary at hand: only the replicas' version.
        summary.vsr_version = None;
        assert!(
            first_line(&summary).ends_with("durability memory  replicas run vsr 0.2.0"),
            "{}",
            first_line(&summary)
        );
        summary.replica_version = None;
        assert!(first_line(&summary).ends_with("durability memory"));
    }

    #[test]
    fn an_open_loop_that_kept_its_rate_says_so() {
        let text = table(&[open_loop(0, false)]);
        assert!(text.contains("svc p99 us"), "{text}");
        assert!(text.contains("held the open loop at 1000 ops/s"), "{text}");
        assert_eq!(open_loop(0, false).json()["mode"], "open");
    }

    #[test]
    fn too_few_sessions_are_the_generators_limit_not_the_clusters() {
        let text = table(&[open_loop(40, false)]);
        assert!(
            text.contains("the load generator could not keep 1000 ops/s"),
            "{text}"
        );
        assert!(text.contains("not the cluster's"), "{text}");
        assert!(text.contains("without --sessions"), "{text}");
        assert!(!text.contains("cluster falls behind"), "{text}");
        let text = table(&[open_loop(40, true)]);
        assert!(text.contains("cap of 4096 sessions"), "{text}");
    }

    #[test]
    fn a_flat_sizing_blames_the_cluster() {
        let mut summary = open_loop(40, true);
        summary.cluster_behind = Some("doubling the sessions ...".to_string());
        let text = table(&[summary]);
        assert!(
            text.contains("the cluster falls behind 1000 ops/s"),
            "{text}"
        );
        assert!(!text.contains("generator could not"), "{text}");
    }
}
