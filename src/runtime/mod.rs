//! The runtime: drives a [`Replica`](crate::protocol::Replica) over TCP with one mio
//! event loop per replica on a (optionally pinned) thread. The only module that touches
//! sockets, threads and clocks for the replica.
//!
//! Starting and configuring:
//! - [`server`]: start and stop a replica ([`ReplicaServer::spawn`]);
//! - [`options`]: what it needs, and the start-up checks;
//! - [`join`]: how a `--join` replica learns the cluster's configuration first.
//!
//! The event loop, one job per module:
//! - [`event_loop`]: the loop's state and its phases in order (`EventLoop::run`);
//! - `connections`: the set of one loop's connections and the read (read, decode, admit)
//!   and write steps every loop shares, the I/O threads included;
//! - [`connection`]: one socket's read buffer and bounded, vectored outbound queue;
//! - `admission`: the accept phase and the connection slots (shared, per address,
//!   reserved for replicas);
//! - [`handshake`]: the hello rules: who may send what;
//! - `inbound`: the read phase: what the gate admits goes to the core, replicas first;
//! - `clock`: the ticks owed to the core;
//! - `effects`: the one place the core's effects become I/O;
//! - `storage`: the storage phase: writes complete in memory, or go to the storage
//!   thread (`storage_thread`, `--durability disk`) and complete when it reports them;
//! - `checkpoint_builder`: the thread that builds checkpoints off the loop;
//! - `page_hasher`: the thread that hashes fetched checkpoint pages off the loop;
//! - `peers`: the peer table, keyed by replica identity (links, redial backoff; it grows
//!   and shrinks); `dial`: opening the links; `membership`: following the core's
//!   configuration (peers, hello terms, retirement) across reconfigurations;
//! - `routes`: where each client's replies go;
//! - `closing`: closes, refusals, rejection logs and the handshake deadline sweep;
//! - `hand_off`: the loop's side of the I/O threads; [`io_thread`]: the threads;
//! - [`metrics`]: histograms, counters, the log summary and the stats JSON;
//! - [`stats`]: the cached histogram half of a stats reply;
//! - [`rate`]: the token bucket that rate-limits stats requests per connection;
//! - [`throttle`]: once-a-minute logging of a peer's configuration mismatch.

mod admission;
mod checkpoint_builder;
mod clock;
mod closing;
pub mod committed;
pub mod connection;
mod connections;
mod dial;
mod effects;
pub mod event_loop;
mod hand_off;
pub mod handshake;
mod inbound;
pub mod io_thread;
pub mod join;
pub mod membership;
pub mod metrics;
pub mod options;
mod page_hasher;
mod page_keeper;
mod peers;
pub mod prometheus;
pub mod rate;
mod routes;
pub mod server;
pub mod stats;
pub mod status;
mod storage;
mod storage_thread;
pub mod throttle;

pub use clock::TICK;
pub use committed::{CommittedOp, CommittedOps};
pub use options::{Durability, ServerError, ServerOptions};
pub use server::{nonce, ReplicaServer};
pub use status::ReplicaStatus;
