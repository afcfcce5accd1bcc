//! The system under test: a vsr cluster (local, started here, or `--cluster`) or the raw-TCP
//! baseline (always local). A [`Target`] owns the local processes (dropping it stops them)
//! and opens [`Transport`]s to the cluster.

use crate::baseline::client::BaselineClient;
use crate::cli::{DurabilityKind, LoadArgs, ServiceKind};
use crate::cluster::{self, ProcessGuard};
use crate::driver::Measurement;
use crate::output;
use crate::report::Summary;
use crate::stats_probe::ClusterStats;
use crate::transport::Transport;
use crate::vsr_client;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vsr::client::ReadMode;

/// Which system a run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// vsr replicas through `vsr::client::PipelinedClient`.
    Vsr,
    /// The raw-TCP baseline (see `baseline`).
    TcpBaseline,
}

impl System {
    /// The column title in reports.
    pub fn title(self) -> &'static str {
        match self {
            System::Vsr => "vsr",
            System::TcpBaseline => "tcp baseline",
        }
    }
}

/// A running system: its addresses, and the guard of its local processes if we started them.
pub struct Target {
    /// Which system.
    pub system: System,
    /// Replica (or baseline node) addresses; the baseline primary first.
    pub addresses: Vec<SocketAddr>,
    /// The cluster id (vsr).
    pub cluster_id: u128,
    /// What `vsr --version` of the local `vsr` binary says, if there is one (the one that
    /// started the local cluster; with `--cluster`, `--vsr-bin` or the one next to
    /// `vsr-load`). The replicas' own version comes with their stats.
    vsr_version: Option<String>,
    request_timeout: Duration,
    /// How kv gets are read (`--reads`).
    reads: ReadMode,
    // Declared last: dropped after everything that might still talk to the processes.
    guard: Option<ProcessGuard>,
}

fn random_cluster_id() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut rng = crate::workload::Rng::new(nanos as u64 ^ ((std::process::id() as u64) << 32));
    ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128
}

impl Target {
    /// Starts (or, with `--cluster` for vsr, attaches to) the system and waits until it serves.
    pub fn start(system: System, args: &LoadArgs) -> anyhow::Result<Target> {
        match system {
            System::Vsr => Target::start_vsr(args),
            System::TcpBaseline => Target::start_baseline(args),
        }
    }

    fn start_vsr(args: &LoadArgs) -> anyhow::Result<Target> {
        vsr_client::ensure_available()?;
        vsr_client::set_cluster_key(args.cluster_key.as_deref())?;
        vsr_client::set_witnesses(&args.witnesses);
        // An existing cluster runs with `vsr replica`'s default id (0) unless told; a local
        // one gets a random id, so a stray process from another run cannot join it.
        let cluster_id = match (&args.cluster, args.cluster_id) {
            (_, Some(id)) => id,
            (Some(_), None) => 0,
            (None, None) => random_cluster_id(),
        };
        if let Some(addresses) = &args.cluster {
            let vsr_bin = args.vsr_bin.clone().or_else(existing_vsr_next_to_exe);
            let target = Target {
                system: System::Vsr,
                addresses: addresses.clone(),
                cluster_id,
                vsr_version: vsr_bin.as_deref().and_then(vsr_version),
                request_timeout: args.request_timeout,
                reads: args.reads,
                guard: None,
            };
            vsr_client::probe(&target.addresses, cluster_id, args.request_timeout)?;
            return Ok(target);
        }
        let vsr_bin = cluster::locate_vsr_binary(args.vsr_bin.as_deref())?;
        let addresses = cluster::free_loopback_addresses(args.replicas)?;
        let list = addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut guard = ProcessGuard::new(output::in_run_dir("vsr")?, args.keep_logs)?;
        for replica in 0..args.replicas {
            let data_dir = guard.log_dir().join(format!("data-{replica}"));
            let command = replica_command(&vsr_bin, args, &list, replica, cluster_id, &data_dir);
            guard.spawn(&format!("replica-{replica}"), command)?;
        }
        eprintln!(
            "vsr-load: started {} replicas on {list} (logs in {})",
            args.replicas,
            guard.log_dir().display()
        );
        cluster::wait_until_ready(
            &mut guard,
            "the local vsr cluster",
            args.startup_timeout,
            || vsr_client::probe(&addresses, cluster_id, Duration::from_secs(2)),
        )?;
        Ok(Target {
            system: System::Vsr,
            addresses,
            cluster_id,
            vsr_version: vsr_version(&vsr_bin),
            request_timeout: args.request_timeout,
            reads: args.reads,
            guard: Some(guard),
        })
    }

    fn start_baseline(args: &LoadArgs) -> anyhow::Result<Target> {
        let exe = std::env::current_exe()?;
        let addresses = cluster::free_loopback_addresses(args.replicas)?;
        let mut guard = ProcessGuard::new(output::in_run_dir("baseline")?, args.keep_logs)?;
        for (i, address) in addresses.iter().enumerate().skip(1) {
            let mut command = Command::new(&exe);
            command.args([
                "baseline-node",
                "--role",
                "backup",
                "--listen",
                &address.to_string(),
            ]);
            guard.spawn(&format!("baseline-backup-{i}"), command)?;
        }
        let backups = addresses[1..]
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // The primary waits for f of its 2f backups, like a vsr primary for f PrepareOks.
        let acks = (args.replicas - 1).div_ceil(2);
        let mut command = Command::new(&exe);
        command.args([
            "baseline-node",
            "--role",
            "primary",
            "--listen",
            &addresses[0].to_string(),
        ]);
        command.args(["--acks", &acks.to_string()]);
        if !backups.is_empty() {
            command.args(["--backups", &backups]);
        }
        guard.spawn("baseline-primary", command)?;
        let list = addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        eprintln!(
            "vsr-load: started the tcp baseline on {list} (logs in {})",
            guard.log_dir().display()
        );
        cluster::wait_until_ready(
            &mut guard,
            "the local tcp baseline",
            args.startup_timeout,
            || {
                BaselineClient::connect(addresses[0], 1, 1, Duration::from_secs(1))?
                    .round_trip(Duration::from_secs(2))
            },
        )?;
        Ok(Target {
            system: System::TcpBaseline,
            addresses,
            cluster_id: 0,
            vsr_version: None,
            request_timeout: args.request_timeout,
            reads: args.reads,
            guard: Some(guard),
        })
    }

    /// Opens a pipelined client with `sessions` sessions over `connections` connections.
    pub fn connect(
        &self,
        sessions: usize,
        connections: usize,
    ) -> anyhow::Result<Box<dyn Transport>> {
        match self.system {
            System::Vsr => vsr_client::connect(
                &self.addresses,
                self.cluster_id,
                self.request_timeout,
                sessions,
                connections,
                self.reads,
            ),
            System::TcpBaseline => Ok(Box::new(BaselineClient::connect(
                self.addresses[0],
                sessions,
                connections,
                Duration::from_secs(5),
            )?)),
        }
    }

    /// The summary of `measurement`, a run of `shape` on this target, with the cluster's
    /// facts read now and the view changes since `before`.
    pub fn summary(
        &self,
        args: &LoadArgs,
        shape: Shape,
        measurement: Measurement,
        before: &ClusterStats,
    ) -> Summary {
        let after = self.cluster_stats();
        Summary {
            system: self.system.title().to_string(),
            measurement,
            replicas: self.addresses.len(),
            sessions: shape.sessions,
            sessions_auto: shape.sessions_auto,
            connections: shape.connections,
            payload_bytes: args.payload_bytes,
            service: (self.system == System::Vsr).then(|| args.service.name()),
            reads: (self.system == System::Vsr
                && args.service == ServiceKind::Kv
                && args.read_fraction > 0.0)
                .then(|| (args.read_fraction, args.reads.name())),
            rate_target: args.rate,
            cluster_behind: shape.cluster_behind,
            view_changes: before
                .view_counter
                .zip(after.view_counter)
                .map(|(before, after)| after.saturating_sub(before)),
            durability: after.durability().or_else(|| before.durability()),
            epoch: after.epoch.or(before.epoch),
            vsr_version: self.vsr_version.clone(),
            replica_version: after.version().or_else(|| before.version()),
        }
    }

    /// The run went well: the local processes' logs may be removed when they stop (unless
    /// `--keep-logs`).
    pub fn succeeded(&mut self) {
        if let Some(guard) = &mut self.guard {
            guard.succeeded();
        }
    }

    /// What the replicas' stats say now, asked through the client library (nothing for the
    /// baseline, nor from replicas that do not answer in time).
    pub fn cluster_stats(&self) -> ClusterStats {
        if self.system != System::Vsr {
            return ClusterStats::default();
        }
        ClusterStats::read(&self.addresses, self.cluster_id, vsr_client::cluster_key())
    }
}

/// The command line of local replica `replica` of the cluster `list`; its data directory
/// (`--durability disk`) is `data_dir`.
fn replica_command(
    vsr_bin: &Path,
    args: &LoadArgs,
    list: &str,
    replica: usize,
    cluster_id: u128,
    data_dir: &Path,
) -> Command {
    let mut command = Command::new(vsr_bin);
    command.args([
        "replica",
        "--cluster",
        list,
        "--replica",
        &replica.to_string(),
    ]);
    command.args(["--service", args.service.name()]);
    command.args(["--cluster-id", &cluster_id.to_string()]);
    if let Some(key) = &args.cluster_key {
        command.arg("--cluster-key").arg(key);
    }
    if !args.witnesses.is_empty() {
        let list: Vec<String> = args.witnesses.iter().map(u8::to_string).collect();
        command.args(["--witnesses", &list.join(",")]);
    }
    command.args(["--durability", args.durability.name()]);
    if args.durability == DurabilityKind::Disk {
        command.arg("--data-dir").arg(data_dir);
    }
    command
}

/// How a load was run: its sessions and connections, and what sizing them found.
#[derive(Clone, Debug, Default)]
pub struct Shape {
    /// Sessions used.
    pub sessions: usize,
    /// Connections used.
    pub connections: usize,
    /// Whether the open loop sized the sessions itself.
    pub sessions_auto: bool,
    /// Open loop: why the cluster is what fell behind the rate (see `Summary`).
    pub cluster_behind: Option<String>,
}

/// The version `vsr --version` prints (`vsr 0.1.0` gives `0.1.0`), if the binary answers.
fn vsr_version(vsr_bin: &Path) -> Option<String> {
    let output = Command::new(vsr_bin).arg("--version").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    output.status.success().then(|| version.to_string())
}

fn existing_vsr_next_to_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join("vsr");
    candidate.is_file().then_some(candidate)
}
