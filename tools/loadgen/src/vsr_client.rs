//! The vsr side of the [`Transport`] interface: `vsr::client::PipelinedClient` as is, and
//! the readiness probe (connect and register one session with the blocking `Client`).

use crate::transport::{Done, OpError, Transport};
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use vsr::auth::ClusterKey;
use vsr::client::{Client, ClientError, ClientOptions, Completion, PipelinedClient, ReadMode};
use vsr::protocol::{Operation, ReplicaSet};
use vsr::service::kv::KvOp;

/// The vsr client library is part of this build.
pub fn ensure_available() -> anyhow::Result<()> {
    Ok(())
}

/// `--witnesses`, set once at start-up for every client.
static WITNESSES: OnceLock<ReplicaSet> = OnceLock::new();

/// Takes `--witnesses` for every client this process opens.
pub fn set_witnesses(witnesses: &[u8]) {
    let mut set = ReplicaSet::default();
    for &witness in witnesses {
        set.insert(witness);
    }
    let _ = WITNESSES.set(set);
}

/// `--cluster-key`: its file and the key, set once at start-up for every client.
static CLUSTER_KEY: OnceLock<Option<(PathBuf, ClusterKey)>> = OnceLock::new();

/// Loads `--cluster-key` (if given) for every client this process opens.
pub fn set_cluster_key(path: Option<&Path>) -> anyhow::Result<()> {
    let key = match path {
        Some(path) => Some((path.to_path_buf(), ClusterKey::from_file(path)?)),
        None => None,
    };
    let _ = CLUSTER_KEY.set(key);
    Ok(())
}

/// The `--cluster-key` file, to pass on to the local replicas.
pub fn cluster_key_file() -> Option<&'static Path> {
    CLUSTER_KEY.get()?.as_ref().map(|(path, _)| path.as_path())
}

/// The `--cluster-key` key, for every connection to the replicas.
pub fn cluster_key() -> Option<ClusterKey> {
    CLUSTER_KEY.get().cloned().flatten().map(|(_, key)| key)
}

fn options(cluster_id: u128, request_timeout: Duration) -> ClientOptions {
    ClientOptions {
        cluster_id,
        request_timeout,
        cluster_key: cluster_key(),
        witnesses: WITNESSES.get().copied().unwrap_or_default(),
        ..ClientOptions::default()
    }
}

/// Connects once and completes a registration: the readiness probe of a cluster.
pub fn probe(addresses: &[SocketAddr], cluster_id: u128, timeout: Duration) -> anyhow::Result<()> {
    Client::connect(addresses, options(cluster_id, timeout))
        .map_err(|error| explain(error, addresses, cluster_id))?;
    Ok(())
}

/// A connection error with its likely cause: the replicas say why they refuse a client
/// (another cluster id, member list or key), and a timeout names what was tried.
fn explain(error: ClientError, addresses: &[SocketAddr], cluster_id: u128) -> anyhow::Error {
    let list = addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    match error {
        ClientError::Refused(reason) => anyhow::anyhow!(
            "the cluster at {list} refused the load generator: {reason} (this client runs \
             with --cluster-id {cluster_id}{}; they must match the replicas')",
            if cluster_key_file().is_some() {
                " and --cluster-key"
            } else {
                " and no --cluster-key"
            }
        ),
        ClientError::Disconnected => {
            anyhow::anyhow!("no replica of {list} accepted a connection: {error}")
        }
        ClientError::Timeout => anyhow::anyhow!(
            "the cluster at {list} did not register a session in time ({error}): is a quorum \
             of its replicas up?"
        ),
        other => anyhow::Error::from(other).context(format!("connecting to {list}")),
    }
}

/// A pipelined vsr client as a transport.
pub fn connect(
    addresses: &[SocketAddr],
    cluster_id: u128,
    request_timeout: Duration,
    sessions: usize,
    connections: usize,
    reads: ReadMode,
) -> anyhow::Result<Box<dyn Transport>> {
    let client = PipelinedClient::connect(
        addresses,
        options(cluster_id, request_timeout),
        sessions,
        connections,
    )
    .map_err(|error| explain(error, addresses, cluster_id))?;
    Ok(Box::new(VsrTransport {
        client,
        completions: Vec::with_capacity(sessions),
        reads,
    }))
}

struct VsrTransport {
    client: PipelinedClient,
    /// Reused between polls: no allocation per poll in steady state.
    completions: Vec<Completion>,
    /// How kv gets are sent.
    reads: ReadMode,
}

/// Whether `operation` is a kv get: a read-only query (`StateMachine::query`). A null
/// service operation never decodes as one (its bytes are letters, no kv tag).
fn is_kv_get(operation: &Bytes) -> bool {
    KvOp::decode(operation).is_some_and(|op| op.is_read_only())
}

impl Transport for VsrTransport {
    fn submit(&mut self, session: usize, operation: Bytes) -> anyhow::Result<()> {
        if is_kv_get(&operation) {
            return Ok(self.client.submit_read(session, operation, self.reads)?);
        }
        Ok(self.client.submit(session, operation)?)
    }

    fn poll(&mut self, done: &mut Vec<Done>, timeout: Duration) -> anyhow::Result<()> {
        match self.client.poll(&mut self.completions, timeout) {
            Ok(()) => {}
            // A signal (Ctrl-C) interrupted the wait: not a failure; the caller checks the
            // stop flag. Completions gathered before it are still delivered below.
            Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        done.extend(self.completions.drain(..).map(done_of));
        Ok(())
    }

    /// Submits as it goes (`PipelinedClient::poll_each`).
    fn poll_each(
        &mut self,
        timeout: Duration,
        on_done: &mut dyn FnMut(Done, Instant) -> anyhow::Result<Option<Bytes>>,
    ) -> anyhow::Result<()> {
        let mut failure = None;
        let mut next = |completion: Completion, at: Instant| {
            if failure.is_some() {
                return None; // The run ends: nothing more is started.
            }
            on_done(done_of(completion), at).unwrap_or_else(|error| {
                failure = Some(error);
                None
            })
        };
        let reads = self.reads.operation();
        let mut next_kind = |completion: Completion, at: Instant| {
            next(completion, at).map(|operation| match is_kv_get(&operation) {
                true => (reads, operation),
                false => (Operation::Apply, operation),
            })
        };
        let polled = self.client.poll_each_operation(timeout, &mut next_kind);
        if let Some(error) = failure {
            return Err(error);
        }
        match polled {
            Ok(()) => Ok(()),
            // As in `poll`: a signal is not a failure.
            Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn done_of(completion: Completion) -> Done {
    Done {
        session: completion.session,
        result: completion.result.map_err(|e| OpError {
            kind: error_kind(&e),
            message: e.to_string(),
        }),
    }
}

/// The short name an operation's error is counted under.
fn error_kind(error: &ClientError) -> &'static str {
    match error {
        ClientError::Timeout => "timeout",
        ClientError::Evicted => "evicted",
        ClientError::Rejected(_) => "rejected",
        ClientError::Refused(_) => "refused",
        ClientError::Disconnected => "disconnected",
        ClientError::Protocol(_) => "protocol",
        _ => "other",
    }
}
