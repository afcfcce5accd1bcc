//! The client's options and its error type: what a user of [`Client`](super::Client) and
//! [`PipelinedClient`](super::PipelinedClient) configures, and every way a call can fail.

use std::time::Duration;

/// How a client talks to a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The cluster id every frame carries; must match the replicas' `--cluster-id`.
    pub cluster_id: u128,
    /// The overall deadline of one call, retries included (and of registering a session).
    pub request_timeout: Duration,
    /// How long one TCP connection attempt may take before it is abandoned and retried.
    pub connect_timeout: Duration,
    /// The largest frame accepted from a replica (must be at least the replicas' limit
    /// for replies to pass), and the bound of an operation's frame.
    pub message_bytes_max: u32,
    /// The largest operation the replicas take (their `request_body_bytes_max`). A larger
    /// one is refused here with [`ClientError::Rejected`], as the replicas would: they
    /// close a client connection that announces a larger frame, before reading it.
    pub request_body_bytes_max: u32,
    /// The cluster key (`--cluster-key`), when the replicas require one: each connection
    /// proves it, and checks the replica's proof, before any request is sent.
    pub cluster_key: Option<crate::auth::ClusterKey>,
    /// The witnesses of the cluster's first configuration (the replicas' `--witnesses`,
    /// paper 6.1): never primary and never answering reads, so the client sends them
    /// nothing. A later configuration the client follows says its own.
    pub witnesses: crate::protocol::ReplicaSet,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            cluster_id: 0,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            message_bytes_max: crate::Config::new(0, 1).message_bytes_max,
            request_body_bytes_max: crate::Config::new(0, 1).request_body_bytes_max,
            cluster_key: None,
            witnesses: crate::protocol::ReplicaSet::default(),
        }
    }
}

/// Why a call (or connecting) failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No reply within `request_timeout`. The operation may or may not have executed (at
    /// most once); the session was replaced, so the next call starts a fresh one.
    #[error("no reply within the request timeout; the operation may or may not have executed")]
    Timeout,
    /// The session was evicted from the replicas' client table while the operation was in
    /// flight: it may or may not have executed (at most once). The next call registers a
    /// fresh session first.
    #[error("the session was evicted; the operation may or may not have executed")]
    Evicted,
    /// Not one replica accepted a TCP connection within `connect_timeout`.
    #[error("could not connect to any replica")]
    Disconnected,
    /// The operating system refused something the client needs (the event loop).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Connecting failed and a replica sent a frame that does not decode (another
    /// protocol or version). During a call, such a connection is closed and retried, and
    /// the call ends in `Timeout` if no replica answers.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The session already has an operation in flight (the pipelined client allows one per
    /// session: that is what gives exactly-once execution).
    #[error("session {0} already has an operation in flight")]
    Busy(usize),
    /// The operation does not fit in one message.
    #[error("operation of {bytes} bytes exceeds the message limit of {max} bytes")]
    OperationTooLarge {
        /// The operation's size.
        bytes: usize,
        /// The limit it exceeds (the frame limit minus headers).
        max: usize,
    },
    /// The replicas refused the operation without executing it, for the reason given: it
    /// is larger than their `request_body_bytes_max`, or a reconfiguration the primary
    /// cannot accept (paper 7.1: not a valid successor, another one in progress).
    #[error("the replicas refused the operation: {0}")]
    Rejected(String),
    /// A quorum of replicas refused the client's hello: its configuration (cluster id,
    /// member list, key) is not theirs. Retrying cannot help.
    #[error("refused by the cluster: {0}")]
    Refused(String),
    /// The arguments cannot work (no addresses, no sessions, more than 255 replicas...).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}
