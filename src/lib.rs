//! vsr: a high-throughput, batched Viewstamped Replication engine.
//!
//! See `ARCHITECTURE.md` for the code map. The protocol core ([`protocol::Replica`]) is
//! sans-IO; the runtime drives it over TCP and the simulator drives it under faults.
#![deny(missing_docs)]

pub mod auth;
pub mod client;
pub mod config;
pub mod protocol;
pub mod runtime;
pub mod service;
pub mod sim;
pub mod storage;
pub mod testing;
pub mod wire;

pub use config::{Config, ConfigError};
pub use protocol::{Effect, Replica, Start, Status};
pub use service::StateMachine;
