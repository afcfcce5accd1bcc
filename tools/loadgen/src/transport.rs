//! The one interface the load drivers use: submit an operation on an idle session, poll for
//! completions. It mirrors `vsr::client::PipelinedClient`, so the vsr client and the
//! raw-TCP baseline are driven by exactly the same loop.

use bytes::Bytes;
use std::time::Duration;

/// One finished operation.
#[derive(Debug)]
pub struct Done {
    /// The session it was submitted on (now idle again).
    pub session: usize,
    /// The reply, or why there is none (counted as an error, the session goes on).
    pub result: Result<Bytes, String>,
}

/// A pipelined client: many sessions, each with at most one operation in flight.
pub trait Transport {
    /// Sends `operation` on `session`, which must be idle.
    fn submit(&mut self, session: usize, operation: Bytes) -> anyhow::Result<()>;
    /// Flushes what was submitted and waits up to `timeout` for completions, appended to
    /// `done`. An `Err` means the transport as a whole failed and the run must end.
    fn poll(&mut self, done: &mut Vec<Done>, timeout: Duration) -> anyhow::Result<()>;
}
