//! What a replica server needs to start, and the start-up checks that reject a
//! configuration that cannot work before any thread or socket exists.

use super::handshake::Gate;
use crate::auth::ClusterKey;
use crate::config::{Config, ConfigError};
use crate::protocol::{ReplicaIndex, ENTRY_HEADER_BYTES};
use crate::wire::{Limits, Terms, HEADER_BYTES, HELLO_BODY_BYTES_MAX};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// The most I/O threads a replica runs.
pub const IO_THREADS_MAX: usize = 64;
/// Default of [`ServerOptions::handshake_timeout`].
pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default of [`ServerOptions::connections_max`].
pub const CONNECTIONS_MAX_DEFAULT: usize = 4096;
/// Default of [`ServerOptions::join_timeout`].
pub const JOIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default of [`ServerOptions::connections_per_ip_max`].
pub const CONNECTIONS_PER_IP_MAX_DEFAULT: usize = 1024;

/// How to run one replica: the cluster's addresses, which one is ours, the protocol's
/// limits, and where the event loop runs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Every replica's address, in configuration order (paper 4: the configuration).
    pub addresses: Vec<SocketAddr>,
    /// Our index in `addresses`.
    pub replica: ReplicaIndex,
    /// The protocol's limits; `config.replica_count` must equal `addresses.len()`.
    pub config: Config,
    /// Pin the event loop to this core (`None`: let the OS schedule it).
    pub core: Option<usize>,
    /// Extra I/O threads that own client connections (0: the event loop serves them).
    /// With `core` set, I/O thread i is pinned to core `core + 1 + i` if it exists.
    pub io_threads: usize,
    /// The cluster key: every connection must prove it holds it before any protocol
    /// frame is accepted (`None`: the cluster is unauthenticated).
    pub cluster_key: Option<ClusterKey>,
    /// An accepted connection that has not finished its handshake by then is closed.
    pub handshake_timeout: Duration,
    /// Connections from clients and from peers that have not said who they are, all
    /// together. Beyond them, `2 × replicas` slots stay reserved for the replicas' links.
    pub connections_max: usize,
    /// Connections from one IP address, except identified replicas.
    pub connections_per_ip_max: usize,
    /// Where the replica's state lives across a crash.
    pub durability: Durability,
    /// Serve Prometheus metrics at `http://ADDRESS/metrics` (port 0: any free port,
    /// reported by `ReplicaServer::metrics_address` and in the log).
    pub metrics_address: Option<SocketAddr>,
    /// Replicas of the running cluster to join (`--join`, paper 7.5): non-empty, the
    /// replica asks them (and `addresses`) for the cluster's configuration before it
    /// starts, and warms up as a learner if `addresses` is a configuration it is not a
    /// member of yet (see `runtime::join`). Empty: `addresses` is the cluster's first
    /// configuration.
    pub join: Vec<SocketAddr>,
    /// How long a joining replica asks for the configuration before it gives up.
    pub join_timeout: Duration,
}

/// Where a replica keeps what it must not forget (its log, checkpoint and view).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// In memory only, as in the paper's model: a restarted replica recovers from the
    /// others, and losing more than f replicas at once loses data.
    #[default]
    Memory,
    /// In a write-ahead journal in this data directory (`crate::storage`): every
    /// acknowledged write survives all replicas crashing at once.
    Disk(PathBuf),
}

impl Durability {
    /// `memory` or `disk`, as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Durability::Memory => "memory",
            Durability::Disk(_) => "disk",
        }
    }
}

impl ServerOptions {
    /// Options with default limits for the cluster at `addresses`.
    pub fn new(addresses: Vec<SocketAddr>, replica: ReplicaIndex, cluster: u128) -> ServerOptions {
        let replica_count = u8::try_from(addresses.len()).unwrap_or(u8::MAX);
        ServerOptions {
            // The core's `tick_ns` is the runtime's tick: leases are counted in it.
            config: Config {
                tick_ns: super::clock::TICK.as_nanos() as u64,
                ..Config::new(cluster, replica_count)
            },
            addresses,
            replica,
            core: None,
            io_threads: 0,
            cluster_key: None,
            handshake_timeout: HANDSHAKE_TIMEOUT_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX_DEFAULT,
            durability: Durability::Memory,
            metrics_address: None,
            join: Vec::new(),
            join_timeout: JOIN_TIMEOUT_DEFAULT,
        }
    }

    /// The largest frame accepted before a connection's handshake completes, and on client
    /// connections: the largest request (header, entry fields, body) or hello. Only an
    /// identified replica may send up to `message_bytes_max`.
    pub fn request_frame_bytes_max(&self) -> u32 {
        let request =
            HEADER_BYTES + ENTRY_HEADER_BYTES + self.config.request_body_bytes_max as usize;
        let hello = HEADER_BYTES + HELLO_BODY_BYTES_MAX;
        u32::try_from(request.max(hello))
            .unwrap_or(u32::MAX)
            .min(self.config.message_bytes_max)
    }

    /// Our listening address.
    pub fn address(&self) -> SocketAddr {
        self.addresses[self.replica as usize]
    }

    /// The handshake rules of this replica: its terms (cluster, members, shared limits)
    /// and key.
    pub fn gate(&self) -> Gate {
        Gate {
            // Epoch 0's identity; the event loop sets the core's own.
            own: self.replica.into(),
            terms: Terms {
                cluster: self.config.cluster,
                epoch: 0,
                members: self.addresses.clone(),
                limits: Some(Limits::of(&self.config)),
            },
            key: self.cluster_key.clone(),
        }
    }

    /// Rejects options that cannot work. Binding the port is checked by `spawn`.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.addresses.len() > u8::MAX as usize {
            return Err(ServerError::TooManyReplicas(self.addresses.len()));
        }
        if self.config.replica_count as usize != self.addresses.len() {
            return Err(ServerError::CountMismatch {
                addresses: self.addresses.len(),
                replica_count: self.config.replica_count,
            });
        }
        self.config.validate()?;
        if self.replica as usize >= self.addresses.len() {
            return Err(ServerError::ReplicaOutOfRange {
                replica: self.replica,
                count: self.addresses.len(),
            });
        }
        if self.addresses.len() > 1 {
            if let Some(index) = self.addresses.iter().position(|a| a.port() == 0) {
                return Err(ServerError::PortZero { replica: index });
            }
        }
        for (second, address) in self.addresses.iter().enumerate() {
            if let Some(first) = self.addresses[..second].iter().position(|a| a == address) {
                return Err(ServerError::DuplicateAddress {
                    address: *address,
                    first,
                    second,
                });
            }
        }
        if self.connections_max == 0 {
            return Err(ServerError::Zero("connections_max"));
        }
        if self.connections_per_ip_max == 0 {
            return Err(ServerError::Zero("connections_per_ip_max"));
        }
        if self.handshake_timeout.is_zero() {
            return Err(ServerError::Zero("handshake_timeout"));
        }
        if self.io_threads > IO_THREADS_MAX {
            return Err(ServerError::TooManyIoThreads(self.io_threads));
        }
        if let Some(core) = self.core {
            let count = core_affinity::get_core_ids().map_or(0, |ids| ids.len());
            if !core_affinity::get_core_ids().is_some_and(|ids| ids.iter().any(|id| id.id == core))
            {
                return Err(ServerError::CoreOutOfRange { core, count });
            }
        }
        Ok(())
    }
}

/// Why a replica server cannot start or stopped.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The protocol's limits are inconsistent.
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// More replicas than a `u8` index can name.
    #[error("a cluster has at most 255 replicas, got {0}")]
    TooManyReplicas(usize),
    /// The address list and the configuration disagree.
    #[error("the cluster lists {addresses} addresses but the configuration says {replica_count} replicas")]
    CountMismatch {
        /// Addresses given.
        addresses: usize,
        /// `Config::replica_count`.
        replica_count: u8,
    },
    /// Our index names no replica.
    #[error("replica index {replica} is out of range: the cluster has {count} replicas (0..={})", count - 1)]
    ReplicaOutOfRange {
        /// The index given.
        replica: ReplicaIndex,
        /// The cluster size.
        count: usize,
    },
    /// Two replicas at one address could never both listen.
    #[error("address {address} appears twice in the cluster (replicas {first} and {second})")]
    DuplicateAddress {
        /// The repeated address.
        address: SocketAddr,
        /// Its first index.
        first: usize,
        /// Its second index.
        second: usize,
    },
    /// Port 0 (any free port) in a cluster of several replicas: the others could not
    /// know where to reach this one.
    #[error("replica {replica}'s address has port 0: only a single-replica cluster may let the system choose its port, since the other replicas must know every address")]
    PortZero {
        /// The replica whose address has port 0.
        replica: usize,
    },
    /// A limit that must be positive is 0.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    /// More I/O threads than `IO_THREADS_MAX`.
    #[error("--io-threads {0}: at most {IO_THREADS_MAX} I/O threads")]
    TooManyIoThreads(usize),
    /// `--core` names no core of this machine.
    #[error("core {core} does not exist or cannot be pinned (this machine reports {count} cores)")]
    CoreOutOfRange {
        /// The core asked for.
        core: usize,
        /// Cores available.
        count: usize,
    },
    /// Our port cannot be bound (in use, or not a local address).
    #[error("cannot listen on {address}: {error}")]
    Bind {
        /// Our address.
        address: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The event loop failed on the OS's side.
    #[error("event loop I/O error: {0}")]
    Io(std::io::Error),
    /// The event loop's thread panicked.
    #[error("the replica thread panicked")]
    Panicked,
    /// The data directory cannot be opened, or a write to it failed: the replica stops
    /// rather than acknowledge anything that is not durable.
    #[error("storage: {0}")]
    Storage(crate::storage::StorageError),
    /// A `--join` replica could not learn the cluster's configuration, or its own cannot
    /// follow it.
    #[error("join: {0}")]
    Join(String),
    /// The storage thread ended without saying why (it panicked).
    #[error("storage: the storage thread stopped unexpectedly")]
    StorageThreadGone,
}

// Manual conversions: the messages above already include the cause, so the causes are
// not also chained as `source` (an error report would print them twice).
impl From<ConfigError> for ServerError {
    fn from(error: ConfigError) -> ServerError {
        ServerError::Config(error)
    }
}

impl From<std::io::Error> for ServerError {
    fn from(error: std::io::Error) -> ServerError {
        ServerError::Io(error)
    }
}
