//! The client side: sans-IO session logic ([`ClientSession`]) and its drivers over TCP: a
//! blocking [`Client`] with one session and a [`PipelinedClient`] with many; and a
//! replica's stats ([`replica_stats`]), for tools.
//!
//! Architecture invariant: `session` decides what to send and when (paper 4.1 client
//! side, 4.5); `driver` and `connection` only move bytes and keep time.

mod blocking;
mod connection;
mod driver;
mod id;
mod index;
mod options;
mod pipelined;
mod raw;
pub mod session;
mod stats;

pub use blocking::Client;
pub use driver::{Completion, RETRY_TIMEOUT_TICKS, TICK};
pub use id::random_client_id;
pub use options::{ClientError, ClientOptions};
pub use pipelined::PipelinedClient;
pub use raw::RawConnection;
pub use session::{ClientSession, Outcome, ReadMode, SubmitError, Target};
pub use stats::{
    replica_stats, ConfigurationStats, HistogramSummary, MemberStats, ProtocolCounters,
    ReplicaStats, ReplicaStatus, RuntimeCounters, StatsError, StatsOptions,
};
