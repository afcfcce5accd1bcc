//! `vsr stats`: ask one replica for its counters and latency histograms, print the JSON.

use anyhow::Context;
use bytes::BytesMut;
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;
use vsr::client::RawConnection;
use vsr::wire::{self, Frame, Terms};

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

/// Prints the replica's stats JSON on one line.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let address = args
        .address
        .to_socket_addrs()
        .with_context(|| format!("cannot parse address {:?}", args.address))?
        .next()
        .with_context(|| format!("address {:?} resolves to nothing", args.address))?;
    let key = crate::replica::load_key(args.cluster_key.as_deref())?;
    // Given one address, `vsr stats` states no member list (the replica does not check it).
    let terms = Terms {
        cluster: args.cluster_id,
        members: Vec::new(),
        limits: None,
    };
    let client = vsr::runtime::nonce();
    let mut connection = RawConnection::connect(address, client, terms, key.as_ref(), timeout)
        .with_context(|| format!("cannot talk to {address}"))?;
    let mut out = BytesMut::new();
    wire::encode_stats_request(args.cluster_id, &mut out);
    connection.send(&out)?;
    loop {
        match connection
            .read_frame()
            .with_context(|| format!("no stats reply from {address}"))?
        {
            Frame::StatsReply(text) => {
                println!("{}", String::from_utf8_lossy(&text));
                return Ok(ExitCode::SUCCESS);
            }
            _ => continue,
        }
    }
}
