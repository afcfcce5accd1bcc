//! vsr: a high-throughput, batched Viewstamped Replication engine (Liskov and Cowling,
//! "Viewstamped Replication Revisited", 2012).
//!
//! Embed it three ways: run replicas of your own deterministic [`StateMachine`]
//! ([`runtime::ReplicaServer::spawn`]); run replicas of a plain log and read the stream of
//! committed operations ([`runtime::ReplicaServer::spawn_log`], below); or drive the
//! sans-IO core ([`protocol::Replica`]) yourself. Clients use [`client::Client`] (one call
//! at a time) or [`client::PipelinedClient`] (many sessions).
//!
//! ```
//! use std::time::Duration;
//! use vsr::bytes::Bytes;
//! use vsr::client::{Client, ClientOptions};
//! use vsr::runtime::{ReplicaServer, ServerOptions};
//!
//! // A single-replica cluster on any free port (a real cluster lists 2f+1 addresses,
//! // one process each, with `vsr replica` or this same call).
//! let options = ServerOptions::new(vec!["127.0.0.1:0".parse()?], 0, 7);
//! let (server, committed) = ReplicaServer::spawn_log(options)?;
//!
//! let client_options = ClientOptions { cluster_id: 7, ..ClientOptions::default() };
//! let mut client = Client::connect(&[server.address()], client_options)?;
//! client.call(Bytes::from_static(b"hello"))?; // Returns once committed.
//!
//! let op = committed.next_timeout(Duration::from_secs(10)).expect("committed");
//! assert_eq!(&op.operation[..], b"hello");
//! assert!(server.status().commit >= op.op);
//! server.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What a caller can rely on:
//! - **Order**: every replica executes (and streams) the same operations in the same
//!   order; a client's operations take effect in the order it issued them.
//! - **Exactly once**: an operation a call returned `Ok` for executed exactly once; a call
//!   that failed with a timeout executed at most once (the client's session table keeps a
//!   retry from running twice: paper 4.1).
//! - **Durability**: an operation is acknowledged once a majority (f+1 of 2f+1) holds it.
//!   In memory (the default), it survives any f replicas failing; with
//!   `Durability::Disk` it also survives every replica losing power at once.
//! - **View changes**: when the primary fails, the others elect the next one (paper 4.2);
//!   calls in flight are retried by the client library and complete, exactly once, in the
//!   new view. Nothing committed is lost or reordered; the stream only pauses.
//!
//! See `ARCHITECTURE.md` for the code map. The protocol core is sans-IO; the runtime
//! drives it over TCP and the simulator drives it under faults.
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

/// The byte buffers the public API takes and returns (`Bytes`), re-exported so that an
/// embedder's version always matches ours.
pub use bytes;
pub use config::{Config, ConfigError};
pub use protocol::{Effect, Replica, Start, Status};
pub use service::StateMachine;
