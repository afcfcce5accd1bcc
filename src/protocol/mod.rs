//! The protocol core: Viewstamped Replication Revisited (Liskov & Cowling 2012) as a pure,
//! deterministic state machine.
//!
//! Architecture invariant: nothing under `protocol/` touches a socket, a clock, a thread or
//! ambient randomness. Inputs are messages, ticks and the clock value the driver passes
//! in; outputs are [`Effect`]s written into a caller-owned buffer. That is what lets the
//! simulator replay any run from a seed.

pub mod client_table;
pub mod configuration;
pub mod effects;
pub mod log;
pub mod message;
pub mod replica;
pub mod replica_set;
pub mod stored;
pub mod timeout;

pub use configuration::{Configuration, ReplicaId};
pub use effects::{
    Audience, BuiltCheckpoint, CheckpointBuild, DurableState, Effect, KeepPages, Write, WriteId,
};
pub use message::*;
pub use replica::{lease_held_ns, lease_wait_ns, Replica, Start, Stats, Status, NOT_A_MEMBER};
pub use replica_set::ReplicaSet;
pub use stored::{FetchedPages, FormerWitnessLog, Inconsistent, Stored, StoredWrite};
