//! The command line of `vsr-load`: one flat set of options for the load modes, plus the
//! hidden `baseline-node` subcommand that the raw-TCP baseline runs as its processes.

use crate::baseline::node::NodeArgs;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use vsr::client::ReadMode;

/// `vsr-load`: drive a vsr cluster (a local one it starts, or `--cluster`) and measure it.
#[derive(Parser, Debug)]
#[command(name = "vsr-load", version, about = "Load generator for vsr clusters")]
pub struct Cli {
    /// Hidden modes of the same binary (the baseline's processes).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The load options.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Subcommands other than the default load run.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// One process of the raw-TCP baseline (primary or backup); started by `--baseline tcp`.
    #[command(hide = true)]
    BaselineNode(NodeArgs),
}

/// The order in which kv operations pick their keys.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    /// Uniformly at random over `--keys` (from a fixed seed).
    Random,
    /// Key 0, 1, 2, ... and around again: the first `--keys` puts write every key once
    /// (to fill a store of a known size, as `perf/state_transfer.sh` does).
    Sequential,
}

/// Which service the replicas run.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// The key-value store: puts and gets (`--read-fraction`) over `--keys` keys.
    Kv,
    /// The null service: every operation is `--payload-bytes` opaque bytes.
    Null,
}

impl ServiceKind {
    /// The name `vsr replica --service` takes.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Kv => "kv",
            ServiceKind::Null => "null",
        }
    }
}

/// Where the local cluster's replicas keep their state (`vsr replica --durability`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurabilityKind {
    /// In memory only.
    Memory,
    /// A write-ahead journal per replica, in a data directory of the run.
    Disk,
}

impl DurabilityKind {
    /// The name `vsr replica --durability` takes.
    pub fn name(self) -> &'static str {
        match self {
            DurabilityKind::Memory => "memory",
            DurabilityKind::Disk => "disk",
        }
    }
}

/// What `--baseline` replaces vsr with.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaselineKind {
    /// Raw loopback TCP: client → primary → backups → ack → reply, no protocol.
    Tcp,
}

/// Options of a load run.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Drive this running cluster (`A0,A1,A2`) instead of starting a local one.
    #[arg(long, value_delimiter = ',')]
    pub cluster: Option<Vec<SocketAddr>>,
    /// Replicas of the local cluster.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// The cluster id the replicas and clients share (default: 0 with `--cluster`, random for
    /// a local cluster).
    #[arg(long)]
    pub cluster_id: Option<u128>,
    /// The cluster's shared secret (`vsr replica --cluster-key`): the local cluster is
    /// started with it, and every client connection proves it.
    #[arg(long, value_name = "FILE")]
    pub cluster_key: Option<PathBuf>,
    /// Indexes of the members that are witnesses (`vsr replica --witnesses`, paper 6.1):
    /// the local cluster is started with them, and clients send them nothing.
    #[arg(long, value_delimiter = ',', value_name = "I,J")]
    pub witnesses: Vec<u8>,
    /// The local cluster's durability mode (a `--cluster` runs in its own; every report
    /// states the mode the replicas' stats give).
    #[arg(long, value_enum, default_value_t = DurabilityKind::Memory)]
    pub durability: DurabilityKind,
    /// The `vsr` binary for the local cluster (default: next to this executable, built if absent).
    #[arg(long)]
    pub vsr_bin: Option<PathBuf>,
    /// Client sessions, each with one request in flight (closed loop) or at most one (open
    /// loop). Default 64; 8 for `--check`, whose search grows fast with concurrency.
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Connections the sessions are spread over (for vsr: client connection slots, each
    /// holding one TCP connection per replica).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Open loop: send this many operations per second, latency from the intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured time, e.g. `10s`, `500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before measuring starts (not recorded).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Bytes of each operation's payload (the value of a kv put; the whole op for null).
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// The replicated service.
    #[arg(long, value_enum, default_value_t = ServiceKind::Null)]
    pub service: ServiceKind,
    /// kv: fraction of operations that are gets (the rest are puts).
    #[arg(long, default_value_t = 0.0)]
    pub read_fraction: f64,
    /// kv: how gets are read: `strict` (ordered through the log, linearizable), `lease`
    /// (paper 6.3.1: at the primary from its state while it holds a lease, through the
    /// log otherwise; linearizable) or `backup` (paper 6.3.2: at any replica that has
    /// executed what the session has seen; causal, may be stale). Gets are read-only
    /// queries in every mode.
    #[arg(long, default_value_t = ReadMode::Strict)]
    pub reads: ReadMode,
    /// kv: number of distinct keys.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// kv: the order operations pick their keys in.
    #[arg(long, value_enum, default_value_t = KeyOrder::Random)]
    pub key_order: KeyOrder,
    /// Per-request timeout of the client library.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Deadline for the local cluster to start serving.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub startup_timeout: Duration,
    /// Write the run's summary as JSON to this file (with `--compare`, the baseline's goes
    /// beside it as `<stem>.baseline.json`; with `--sweep`, one per level as
    /// `<stem>.sessions-<N>.json`; the same for `--hgrm`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the latency histogram in HdrHistogram's percentile-distribution format.
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Run the raw-TCP baseline instead of vsr.
    #[arg(long, value_enum)]
    pub baseline: Option<BaselineKind>,
    /// Run vsr and then the tcp baseline with the same options; print both and their ratio.
    #[arg(long)]
    pub compare: bool,
    /// Sweep rising load (sessions ×2 per level) until throughput stops rising.
    #[arg(long)]
    pub sweep: bool,
    /// Sweep: the largest session count tried.
    #[arg(long, default_value_t = 4096)]
    pub sweep_sessions_max: usize,
    /// Sweep: CSV output (default: `sweep.csv` in the run directory).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Sweep: SVG throughput/latency plot (default: `sweep.svg` in the run directory).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// The run directory: local processes' logs and data, and the sweep's files when not
    /// given (default: a new directory under the system temp dir, printed when used).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Keep the local processes' logs (and data directories) after a run that went well;
    /// they are always kept when it did not.
    #[arg(long)]
    pub keep_logs: bool,
    /// Check linearizability of a put/get/cas workload (kv service) instead of measuring.
    #[arg(long)]
    pub check: bool,
    /// Check: number of keys (few, so operations contend). Default: one per 3 sessions,
    /// at least 3, which keeps about 3 operations in flight per key so the search stays small.
    #[arg(long)]
    pub check_keys: Option<u64>,
    /// Check: stop submitting after this many operations.
    #[arg(long, default_value_t = 20_000)]
    pub check_ops_max: usize,
    /// Check: search states explored per key before the verdict is "unknown".
    #[arg(long, default_value_t = 2_000_000)]
    pub check_states_max: u64,
    /// No per-second progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Parses `10s`, `250ms`, `2m`, `1h`, `1.5s`, `100us` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 10s, 500ms)"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use h, m, s, ms, us)"
            ))
        }
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("not a duration: {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl LoadArgs {
    /// Keys of `--check`: `--check-keys`, or one per 3 sessions (at least 3).
    pub fn check_keys(&self) -> u64 {
        self.check_keys
            .unwrap_or_else(|| (self.sessions() as u64).div_ceil(3).max(3))
    }

    /// Sessions to use: `--sessions`, or the mode's default.
    pub fn sessions(&self) -> usize {
        self.sessions.unwrap_or(if self.check { 8 } else { 64 })
    }

    /// Start-up checks of option combinations that cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.sessions() >= 1, "--sessions must be at least 1");
        anyhow::ensure!(self.connections >= 1, "--connections must be at least 1");
        anyhow::ensure!(self.replicas >= 1, "--replicas must be at least 1");
        anyhow::ensure!(self.replicas <= 255, "--replicas must be at most 255");
        anyhow::ensure!(!self.duration.is_zero(), "--duration must be positive");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.read_fraction),
            "--read-fraction must be within 0..=1"
        );
        anyhow::ensure!(self.keys >= 1, "--keys must be at least 1");
        if let Some(rate) = self.rate {
            anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be positive");
        }
        let modes = [self.sweep, self.check, self.compare]
            .iter()
            .filter(|m| **m)
            .count();
        anyhow::ensure!(
            modes <= 1,
            "--sweep, --check and --compare are separate modes: pick one"
        );
        anyhow::ensure!(
            !(self.compare && self.baseline.is_some()),
            "--compare already runs the tcp baseline"
        );
        anyhow::ensure!(
            !(self.check && self.baseline.is_some()),
            "--check needs the kv service of vsr, not a baseline"
        );
        anyhow::ensure!(
            !(self.check && self.reads == ReadMode::Backup),
            "--check verifies linearizability, and backup reads are causal (may be stale): \
             use --reads strict"
        );
        anyhow::ensure!(
            !(self.sweep && self.rate.is_some()),
            "--sweep raises sessions (closed loop); drop --rate"
        );
        anyhow::ensure!(self.check_keys() >= 1, "--check-keys must be at least 1");
        if let Some(cluster) = &self.cluster {
            anyhow::ensure!(!cluster.is_empty(), "--cluster needs at least one address");
            anyhow::ensure!(
                self.durability == DurabilityKind::Memory,
                "--durability sets up a local cluster; a --cluster runs in its own mode"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
