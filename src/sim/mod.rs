//! The deterministic simulator (in the style of TigerBeetle's VOPR): one thread, one seed,
//! N replicas running a service (the bundled `Kv`, or an embedder's own: [`SimService`]),
//! M clients, and a network that delays, drops, duplicates, reorders and
//! partitions, while replicas crash and restart (paper 4.3). Everything random comes from
//! one [`Prng`] built from the seed, and nothing reads a clock, so a seed replays a run bit
//! for bit.
//!
//! - [`prng`]: the random source; [`network`]: the faulty network;
//!   [`faults`]: fault rates drawn per seed; [`workload`]: the clients' operations;
//! - [`service`]: what a service must provide to be simulated; [`model`]: the reference
//!   model (a fresh instance of the service); [`checker`]: agreement, durability and
//!   linearizability checks, run after every step;
//! - [`watch`]: what deliveries show (multi-message transfers, the DoViewChanges a new
//!   primary heard, malformed messages between replicas, recoveries that end short of
//!   what committed before the restart); [`storage`]: what each replica's completed writes made durable, and
//!   that no message vouches for more;
//! - [`reads`]: how clients read (strict, or at backups, paper 6.3.2) and what the
//!   checker needs to hold a backup read to the causal rule;
//! - [`reconfigure`]: the reconfigurations a seed plans (paper 7) and the administrator
//!   who asks for them;
//! - [`cluster`]: the world and its step; [`run`]: one random run per seed;
//!   [`scenario`]: scripted scenarios for tests.
//!
//! Architecture invariant: the simulator drives `protocol::Replica` only through its public
//! API (`on_message`, `on_tick`, `flush`, `on_persisted`, `set_clock`) and reads it only through accessors;
//! it never reaches into the replica's state.

pub mod checker;
pub mod cluster;
pub mod disk;
pub mod faults;
pub mod lease;
pub mod model;
pub mod network;
pub mod prng;
pub mod reads;
pub mod reconfigure;
pub mod run;
pub mod scenario;
pub mod service;
pub mod storage;
pub mod watch;
pub mod workload;

pub use checker::{Checker, Failure};
pub use cluster::Cluster;
pub use prng::Prng;
pub use run::{run_seed, run_seed_of, RunOptions, RunSummary, Totals, Violation};
pub use scenario::Scenario;
pub use service::{SimService, WorkloadShape};
