//! `vsr stats`: ask one replica for its counters and latency histograms, print the JSON.

use anyhow::{bail, Context};
use bytes::BytesMut;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vsr::wire::{self, Frame, Peer};

/// Arguments of `vsr stats`.
#[derive(clap::Args)]
pub struct Args {
    /// The replica's address.
    #[arg(long)]
    address: String,
    /// The cluster id the replica runs with.
    #[arg(long, default_value_t = 0)]
    cluster_id: u128,
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
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("cannot connect to {address}"))?;
    let mut out = BytesMut::new();
    wire::encode_hello(
        Peer::Client(vsr::runtime::nonce()),
        args.cluster_id,
        &mut out,
    );
    wire::encode_stats_request(args.cluster_id, &mut out);
    stream.write_all(&out)?;
    let deadline = Instant::now() + timeout;
    let mut buffer = BytesMut::with_capacity(64 << 10);
    let mut chunk = [0u8; 16 << 10];
    loop {
        match wire::decode(&mut buffer, args.cluster_id, 16 << 20) {
            Ok(Some(Frame::StatsReply(text))) => {
                println!("{}", String::from_utf8_lossy(&text));
                return Ok(ExitCode::SUCCESS);
            }
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(error) => bail!("bad frame from {address}: {error}"),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "no stats reply from {address} within {} ms",
                args.timeout_ms
            );
        }
        stream.set_read_timeout(Some(left))?;
        let read = stream
            .read(&mut chunk)
            .with_context(|| format!("no stats reply from {address}"))?;
        if read == 0 {
            bail!("{address} closed the connection without a stats reply (wrong --cluster-id?)");
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}
