//! `vsr stats`: ask one replica for its counters and latency histograms (through
//! `vsr::client::replica_stats`), print the JSON.

use anyhow::Context;
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;
use vsr::client::StatsOptions;

/// Arguments of `vsr stats`.
#[derive(clap::Args)]
pub struct Args {
    /// The replica's address.
    #[arg(long)]
    address: String,
    /// The cluster id the replica runs with.
    #[arg(long, default_value_t = 0)]
    cluster_id: u128,
    /// The cluster's shared secret, when the replicas run with `--cluster-key`.
    #[arg(long, value_name = "FILE")]
    cluster_key: Option<std::path::PathBuf>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

/// Prints the replica's stats JSON on one line, as the replica sent it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let address = args
        .address
        .to_socket_addrs()
        .with_context(|| format!("cannot parse address {:?}", args.address))?
        .next()
        .with_context(|| format!("address {:?} resolves to nothing", args.address))?;
    let options = StatsOptions {
        cluster_id: args.cluster_id,
        cluster_key: crate::replica::load_key(args.cluster_key.as_deref())?,
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let stats = vsr::client::replica_stats(address, &options)
        .with_context(|| format!("no stats from {address}"))?;
    println!("{}", stats.json());
    Ok(ExitCode::SUCCESS)
}
