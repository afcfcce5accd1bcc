//! The vsr side of the [`Transport`] interface, over `vsr::client`.
//!
//! GAP: `vsr::client::{Client, PipelinedClient}` are not on main yet. Until they are, every
//! vsr mode fails here with this message instead of producing numbers.

use crate::transport::Transport;
use std::net::SocketAddr;
use std::time::Duration;

const MISSING: &str =
    "the vsr client library (vsr::client::PipelinedClient) is not available in this build yet; \
                       only `--baseline tcp` can run";

/// Fails at once if the vsr client library is missing from this build.
pub fn ensure_available() -> anyhow::Result<()> {
    anyhow::bail!(MISSING)
}

/// Connects once and completes a registration: the readiness probe of a cluster.
pub fn probe(
    _addresses: &[SocketAddr],
    _cluster_id: u128,
    _timeout: Duration,
) -> anyhow::Result<()> {
    anyhow::bail!(MISSING)
}

/// A pipelined vsr client as a transport.
pub fn connect(
    _addresses: &[SocketAddr],
    _cluster_id: u128,
    _request_timeout: Duration,
    _sessions: usize,
    _connections: usize,
) -> anyhow::Result<Box<dyn Transport>> {
    anyhow::bail!(MISSING)
}
