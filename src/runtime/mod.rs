//! The runtime: drives a [`Replica`](crate::protocol::Replica) over TCP with one mio
//! event loop per replica on a (optionally pinned) thread. The only module that touches
//! sockets, threads and clocks for the replica.
//!
//! - [`server`]: start and stop a replica ([`ReplicaServer::spawn`]);
//! - [`options`]: what it needs, and the start-up checks;
//! - [`event_loop`]: the loop's phases, ticks, back-pressure and replica links;
//! - [`connection`]: one socket's read buffer and bounded, vectored outbound queue;
//! - [`handshake`]: the hello rules: who may send what;
//! - [`io_thread`]: optional I/O threads that own client connections;
//! - [`metrics`]: histograms, counters, the log summary and the stats JSON;
//! - [`stats`]: the cached histogram half of a stats reply;
//! - [`rate`]: the token bucket that rate-limits stats requests per connection;
//! - [`throttle`]: once-a-minute logging of a peer's configuration mismatch.

pub mod connection;
pub mod event_loop;
pub mod handshake;
pub mod io_thread;
pub mod metrics;
pub mod options;
pub mod rate;
pub mod server;
pub mod stats;
pub mod throttle;

pub use event_loop::TICK;
pub use options::{ServerError, ServerOptions};
pub use server::{nonce, ReplicaServer};
