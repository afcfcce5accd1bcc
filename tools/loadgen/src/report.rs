//! What a run reports: the human table on stdout (one column per system, plus their ratio
//! when comparing), the `--json` summary with exactly the documented keys, and `--hgrm`.

use crate::driver::Measurement;
use crate::hgrm;
use anyhow::Context;
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
    /// Connections used.
    pub connections: usize,
    /// Bytes of payload per operation.
    pub payload_bytes: usize,
    /// View changes seen during the run (`None`: unknown, e.g. the baseline).
    pub view_changes: Option<u64>,
    /// The cluster's durability mode from its stats (`memory`, `disk`; `None`: unknown,
    /// e.g. the baseline).
    pub durability: Option<String>,
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

    /// The `--json` document: exactly the documented keys, in the documented order.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "ops": self.measurement.ops,
            "seconds": self.measurement.seconds,
            "ops_per_sec": self.ops_per_sec(),
            "latency_us": {
                "p50": self.latency_us(0.5),
                "p90": self.latency_us(0.9),
                "p99": self.latency_us(0.99),
                "p999": self.latency_us(0.999),
                "max": self.measurement.histogram.max(),
            },
            "replicas": self.replicas,
            "sessions": self.sessions,
            "payload_bytes": self.payload_bytes,
            "durability": self.durability,
        })
    }

    /// Writes `--json`.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.json())? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Writes `--hgrm` (milliseconds, as HdrHistogram's tools expect).
    pub fn write_hgrm(&self, path: &Path) -> anyhow::Result<()> {
        let text = hgrm::percentile_distribution(&self.measurement.histogram, 1000.0);
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// One table row: a label and how to read it from a summary.
struct Row {
    label: &'static str,
    value: fn(&Summary) -> f64,
    text: fn(&Summary) -> String,
}

fn rows() -> Vec<Row> {
    fn latency(q: f64) -> impl Fn(&Summary) -> f64 {
        move |s| s.latency_us(q) as f64
    }
    vec![
        Row {
            label: "ops",
            value: |s| s.measurement.ops as f64,
            text: |s| s.measurement.ops.to_string(),
        },
        Row {
            label: "seconds",
            value: |s| s.measurement.seconds,
            text: |s| format!("{:.2}", s.measurement.seconds),
        },
        Row {
            label: "ops/s",
            value: Summary::ops_per_sec,
            text: |s| format!("{:.0}", s.ops_per_sec()),
        },
        Row {
            label: "MB/s",
            value: Summary::mb_per_sec,
            text: |s| format!("{:.2}", s.mb_per_sec()),
        },
        Row {
            label: "p50 us",
            value: |s| latency(0.5)(s),
            text: |s| s.latency_us(0.5).to_string(),
        },
        Row {
            label: "p90 us",
            value: |s| latency(0.9)(s),
            text: |s| s.latency_us(0.9).to_string(),
        },
        Row {
            label: "p99 us",
            value: |s| latency(0.99)(s),
            text: |s| s.latency_us(0.99).to_string(),
        },
        Row {
            label: "p99.9 us",
            value: |s| latency(0.999)(s),
            text: |s| s.latency_us(0.999).to_string(),
        },
        Row {
            label: "max us",
            value: |s| s.measurement.histogram.max() as f64,
            text: |s| s.measurement.histogram.max().to_string(),
        },
        Row {
            label: "errors",
            value: |s| s.measurement.errors as f64,
            text: |s| s.measurement.errors.to_string(),
        },
        Row {
            label: "durability",
            value: |_| f64::NAN,
            text: |s| s.durability.clone().unwrap_or_else(|| "n/a".to_string()),
        },
        Row {
            label: "view changes",
            value: |s| s.view_changes.map_or(f64::NAN, |v| v as f64),
            text: |s| {
                s.view_changes
                    .map_or_else(|| "n/a".to_string(), |v| v.to_string())
            },
        },
    ]
}

/// The human table: one column per summary; with exactly two, a third column `ratio`
/// (first / second) for the rows where a ratio means something.
pub fn table(summaries: &[Summary]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if let Some(first) = summaries.first() {
        let _ = writeln!(
            out,
            "replicas {}  sessions {}  connections {}  payload {} B",
            first.replicas, first.sessions, first.connections, first.payload_bytes
        );
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
    for row in rows() {
        let _ = write!(out, "{:<14}", row.label);
        for summary in summaries {
            let _ = write!(out, "{:>16}", (row.text)(summary));
        }
        if ratio
            && !matches!(
                row.label,
                "seconds" | "errors" | "durability" | "view changes"
            )
        {
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
    for summary in summaries {
        if let Some(error) = &summary.measurement.first_error {
            let _ = writeln!(out, "{}: first error: {error}", summary.system);
        }
        if summary.measurement.unsent > 0 {
            let _ = writeln!(
                out,
                "{}: {} operations were due but never sent (the system fell behind the rate)",
                summary.system, summary.measurement.unsent
            );
        }
        if summary.measurement.interrupted {
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
                first_error: None,
                seconds: 2.0,
                histogram,
                unsent: 0,
                interrupted: false,
            },
            replicas: 3,
            sessions: 64,
            connections: 4,
            payload_bytes: 1000,
            view_changes: Some(0),
            durability: Some("memory".to_string()),
        }
    }

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let json = summary("vsr", 1000).json();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        let expected = [
            "ops",
            "seconds",
            "ops_per_sec",
            "latency_us",
            "replicas",
            "sessions",
            "payload_bytes",
            "durability",
        ];
        assert_eq!(keys, expected);
        assert_eq!(json["durability"], "memory");
        let latency: Vec<&String> = json["latency_us"].as_object().unwrap().keys().collect();
        assert_eq!(latency, ["p50", "p90", "p99", "p999", "max"]);
        assert_eq!(json["ops_per_sec"], 500.0);
    }

    #[test]
    fn comparison_table_has_a_ratio_column() {
        let text = table(&[summary("vsr", 1000), summary("tcp baseline", 2000)]);
        let ops_line = text.lines().find(|l| l.starts_with("ops/s")).unwrap();
        assert!(ops_line.trim_end().ends_with("0.50"), "{ops_line}");
        assert!(text.contains("MB/s"));
    }
}
