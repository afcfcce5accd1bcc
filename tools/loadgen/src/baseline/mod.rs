//! The raw-TCP baseline: the data movement of one replicated operation with no protocol.
//! A client sends a request to a primary process, the primary forwards it to every backup
//! process, replies as soon as `f` backups have acknowledged it (cumulatively, as vsr's
//! PrepareOk does), and the reply goes back to the client. Same payloads, sessions and
//! connections as the vsr run, separate processes, loopback only. No checksums, no log,
//! no client table, no service: what is left is the cost of the sockets and copies.

pub mod client;
pub mod frame;
pub mod node;
