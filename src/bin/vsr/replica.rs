//! `vsr replica`: run one replica of a cluster over TCP until killed.

use anyhow::Context;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use vsr::runtime::{Durability, ReplicaServer, ServerOptions};
use vsr::service::{Kv, LogService, Null};

/// Arguments of `vsr replica`.
#[derive(clap::Args)]
pub struct Args {
    /// Every replica's address, comma-separated, in the same order on every replica.
    #[arg(long, value_delimiter = ',', required = true)]
    cluster: Vec<String>,
    /// This replica's index in `--cluster`.
    #[arg(long)]
    replica: u8,
    /// Indexes (in `--cluster`) of the members that are witnesses (paper 6.1), the same
    /// on every replica: they store the log and vote, but never execute, serve reads or
    /// lead. At most f. With `--durability disk` a witness keeps its log in its data
    /// directory, trimmed without checkpoints.
    #[arg(long, value_delimiter = ',', value_name = "I,J")]
    witnesses: Vec<u8>,
    /// The replicated service.
    #[arg(long, value_enum, default_value_t = Service::Kv)]
    service: Service,
    /// The cluster id; frames carrying another id are rejected.
    #[arg(long, default_value_t = 0)]
    cluster_id: u128,
    /// Prepares in flight before the primary waits.
    #[arg(long)]
    pipeline: Option<u32>,
    /// Entries in one Prepare.
    #[arg(long)]
    batch_entries: Option<u32>,
    /// Bytes in one Prepare.
    #[arg(long)]
    batch_bytes: Option<u32>,
    /// Ops between checkpoints of the service (paper 5.1).
    #[arg(long)]
    checkpoint_interval: Option<u64>,
    /// Committed entries kept below the latest checkpoint (default: the smaller of the
    /// checkpoint interval and 16384).
    #[arg(long)]
    log_tail: Option<u64>,
    /// Bytes of checkpoint pages this replica sends per tick (10 ms) to replicas fetching
    /// a checkpoint (default 64 MiB): throttles transfers so that they do not starve the
    /// normal case.
    #[arg(long)]
    checkpoint_serve_bytes_per_tick: Option<u64>,
    /// The largest message between replicas, in bytes (default 16 MiB, raised as the
    /// pipeline and batch limits need). It bounds what a peer can make this replica
    /// hold for one message; checkpoints of any size travel in parts within it (paper
    /// 5.1's pages). Use the same value on every replica.
    #[arg(long)]
    message_bytes_max: Option<u32>,
    /// The lease a backup grants its primary with each acknowledgement, in milliseconds
    /// (paper 6.3.1; default 500, a multiple of the 10 ms tick, below the 1 s normal
    /// timeout): lease reads are answered at the primary while it holds f of them, and a
    /// backup takes part in no view change until the one it granted ran out. 0: no
    /// leases (lease reads go through the log). Use the same value on every replica.
    #[arg(long)]
    lease_ms: Option<u64>,
    /// The bound on the drift of any replica's monotonic clock, in parts per million
    /// (default 10000: 1%; at most 100000). Lease arithmetic assumes it. Use the same
    /// value on every replica.
    #[arg(long)]
    clock_drift_ppm: Option<u32>,
    /// Pin the event loop to this core.
    #[arg(long)]
    core: Option<usize>,
    /// Extra I/O threads that own client connections (pinned to the cores after
    /// `--core`); 0: the event loop serves clients itself.
    #[arg(long, default_value_t = 0)]
    io_threads: usize,
    /// The cluster's shared secret (at least 16 bytes; trailing whitespace is ignored).
    /// Every replica and client must prove it holds the key before any frame is
    /// accepted. Without it the cluster is unauthenticated.
    #[arg(long, value_name = "FILE")]
    cluster_key: Option<std::path::PathBuf>,
    /// A connection that has not finished its handshake within this is closed.
    #[arg(long, default_value_t = 5000)]
    handshake_timeout_ms: u64,
    /// Connections from clients and not-yet-identified peers, together; replica links
    /// have slots of their own beyond these.
    #[arg(long, default_value_t = vsr::runtime::options::CONNECTIONS_MAX_DEFAULT)]
    connections_max: usize,
    /// Connections from one IP address (identified replicas excepted).
    #[arg(long, default_value_t = vsr::runtime::options::CONNECTIONS_PER_IP_MAX_DEFAULT)]
    connections_per_ip: usize,
    /// Where the replica keeps its log, checkpoint and view: `memory` (lost with the
    /// process; the replica recovers from the others) or `disk` (a write-ahead journal in
    /// `--data-dir`, which survives every replica crashing at once).
    #[arg(long, value_enum, default_value_t = DurabilityMode::Memory)]
    durability: DurabilityMode,
    /// The data directory of `--durability disk` (created if missing, locked while the
    /// replica runs; one per replica).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics from a thread of their own
    /// (port 0: any free port, named in the log).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_address: Option<std::net::SocketAddr>,
    /// Join a running cluster (paper 7.5): the addresses of its current configuration (or
    /// any earlier one whose replicas still answer), comma-separated. `--cluster` is then
    /// the configuration this replica will be a member of: it warms up as a learner until
    /// `vsr admin reconfigure --to` that configuration moves the cluster there. A member
    /// restarted after a change starts with --join too, and recovers in the current one.
    #[arg(long, value_delimiter = ',', value_name = "ADDRS")]
    join: Vec<String>,
}

/// `--durability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DurabilityMode {
    /// In memory only.
    Memory,
    /// A write-ahead journal in `--data-dir`.
    Disk,
}

/// The services `vsr replica` can run.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Service {
    /// Key-value store (put, get, delete, cas).
    Kv,
    /// Executes nothing (benchmarks).
    Null,
    /// Keeps nothing; logs each committed op at trace level.
    Log,
}

fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    let mut resolved = address.to_socket_addrs().with_context(|| {
        format!("cannot parse replica address {address:?} (expected HOST:PORT)")
    })?;
    resolved
        .next()
        .with_context(|| format!("replica address {address:?} resolves to nothing"))
}

fn options(args: &Args) -> anyhow::Result<ServerOptions> {
    let addresses = args
        .cluster
        .iter()
        .map(|a| resolve(a.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut options = ServerOptions::new(addresses, args.replica, args.cluster_id);
    let config = &mut options.config;
    if let Some(pipeline) = args.pipeline {
        config.pipeline_prepares_max = pipeline;
    }
    if let Some(entries) = args.batch_entries {
        config.batch_entries_max = entries;
    }
    if let Some(bytes) = args.batch_bytes {
        config.batch_bytes_max = bytes;
    }
    if let Some(interval) = args.checkpoint_interval {
        config.checkpoint_interval_ops = interval;
    }
    if let Some(bytes) = args.checkpoint_serve_bytes_per_tick {
        config.checkpoint_serve_bytes_per_tick = bytes;
    }
    if let Some(ms) = args.lease_ms {
        let tick_ms = vsr::runtime::TICK.as_millis() as u64;
        anyhow::ensure!(
            ms.is_multiple_of(tick_ms),
            "--lease-ms must be a multiple of the {tick_ms} ms tick"
        );
        config.lease_ticks = ms / tick_ms;
    }
    if let Some(ppm) = args.clock_drift_ppm {
        config.clock_drift_ppm = ppm;
    }
    for &witness in &args.witnesses {
        anyhow::ensure!(
            (witness as usize) < args.cluster.len(),
            "--witnesses {witness}: not an index of --cluster (0..{})",
            args.cluster.len()
        );
        config.witnesses.insert(witness);
    }
    if let Err(invalid) =
        vsr::protocol::configuration::check_witnesses(args.cluster.len(), &config.witnesses)
    {
        anyhow::bail!("--witnesses: {invalid}");
    }
    config.log_tail_ops = args
        .log_tail
        .unwrap_or(config.log_tail_ops.min(config.checkpoint_interval_ops));
    // The pipeline holds at least one full batch.
    config.pipeline_bytes_max = config.pipeline_bytes_max.max(config.batch_bytes_max as u64);
    if let Some(bytes) = args.message_bytes_max {
        config.message_bytes_max = bytes;
    }
    // A larger pipeline or batch needs larger view-change messages: derive the message
    // limit from them (the same arguments give the same limit on every replica), by the
    // rule `Config::validate` checks.
    let suffix_bytes = (config.pipeline_bytes_max + config.batch_bytes_max as u64) * 2 + 4096;
    if suffix_bytes > config.message_bytes_max as u64 {
        config.message_bytes_max =
            u32::try_from(suffix_bytes).context("--batch-bytes × --pipeline is too large")?;
    }
    options.core = args.core;
    options.io_threads = args.io_threads;
    options.cluster_key = load_key(args.cluster_key.as_deref())?;
    options.handshake_timeout = std::time::Duration::from_millis(args.handshake_timeout_ms);
    options.connections_max = args.connections_max;
    options.connections_per_ip_max = args.connections_per_ip;
    options.durability = match (args.durability, &args.data_dir) {
        (DurabilityMode::Memory, None) => Durability::Memory,
        (DurabilityMode::Disk, Some(directory)) => Durability::Disk(directory.clone()),
        (DurabilityMode::Disk, None) => {
            anyhow::bail!("--durability disk needs --data-dir DIR (one directory per replica)")
        }
        (DurabilityMode::Memory, Some(_)) => {
            anyhow::bail!("--data-dir is only used with --durability disk")
        }
    };
    options.metrics_address = args.metrics_address;
    options.join = args
        .join
        .iter()
        .map(|a| resolve(a.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(options)
}

/// The cluster key in `path`, if one is given; warns when others may read the file.
pub fn load_key(path: Option<&std::path::Path>) -> anyhow::Result<Option<vsr::auth::ClusterKey>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let key = vsr::auth::ClusterKey::from_file(path)?;
    if vsr::auth::readable_by_others(path) {
        tracing::warn!(
            path = %path.display(),
            "the cluster key file can be read by other users: chmod 600 it"
        );
    }
    Ok(Some(key))
}

/// Runs the replica until the process is killed, or until it retired after a
/// reconfiguration that left it out (then the exit status is 0).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for people: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    let options = options(&args)?;
    let server = match args.service {
        Service::Kv => ReplicaServer::spawn(options, Kv::new()),
        Service::Null => ReplicaServer::spawn(options, Null),
        Service::Log => ReplicaServer::spawn(
            options,
            LogService::new(|op: u64, _timestamp: u64, body: &bytes::Bytes| {
                tracing::trace!(op, bytes = body.len(), "committed");
            }),
        ),
    }?;
    server.join()?;
    Ok(ExitCode::SUCCESS)
}
