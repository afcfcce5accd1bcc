//! [`PipelinedClient`]: many sessions in flight over a few connections, driven by the
//! caller's thread: the load generator's engine.
//!
//! Each session has at most one operation in flight (that is what the replicas' client
//! table needs for exactly-once execution); throughput comes from many sessions. Submits
//! only encode into a connection buffer; [`poll`](PipelinedClient::poll) writes every
//! connection's buffered requests with one `write` and collects replies.

use super::driver::{Completion, Driver};
use super::{ClientError, ClientOptions, ReadMode};
use crate::protocol::Operation;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A client with many sessions, each with at most one operation in flight.
pub struct PipelinedClient {
    driver: Driver,
}

impl PipelinedClient {
    /// Connects to the replicas at `addresses` (in configuration order) and registers
    /// `sessions` sessions, spread over `connections` connection slots (one TCP connection
    /// per replica per slot, opened on first use).
    pub fn connect(
        addresses: &[SocketAddr],
        options: ClientOptions,
        sessions: usize,
        connections: usize,
    ) -> Result<PipelinedClient, ClientError> {
        let mut driver = Driver::new(addresses, options, sessions, connections)?;
        driver.register_all()?;
        Ok(PipelinedClient { driver })
    }

    /// The number of sessions (valid `session` arguments are `0..sessions()`).
    pub fn sessions(&self) -> usize {
        self.driver.session_count()
    }

    /// Starts `operation` on `session`, which must be idle (its previous operation
    /// completed): otherwise `Busy`. It is sent on the next [`poll`](Self::poll); its
    /// deadline (`request_timeout`) starts now.
    ///
    /// # Panics
    /// If `session >= self.sessions()`.
    pub fn submit(&mut self, session: usize, operation: Bytes) -> Result<(), ClientError> {
        self.driver.submit(session, operation)
    }

    /// Like [`submit`](Self::submit) for the read-only `query`, in `mode` (see
    /// [`Client::read`](super::Client::read)).
    pub fn submit_read(
        &mut self,
        session: usize,
        query: Bytes,
        mode: ReadMode,
    ) -> Result<(), ClientError> {
        self.driver
            .submit_operation(session, mode.operation(), query)
    }

    /// Sends what was submitted, then waits up to `timeout` for operations to finish and
    /// appends them to `completions` (returning as soon as there is at least one). A
    /// timed-out or evicted operation completes with its error; an `Err` from `poll`
    /// itself means the event loop failed.
    pub fn poll(
        &mut self,
        completions: &mut Vec<Completion>,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        self.driver.poll(completions, timeout)
    }

    /// [`poll`](Self::poll) for a closed loop: each finished operation is handed to `next`
    /// as the reply is read, with the instant the replies of that pass were read, and the
    /// operation `next` returns (if any) is submitted on the same session at once; it
    /// leaves before `poll_each` returns. Returns once at least one operation finished or
    /// `timeout` passed.
    ///
    /// Why: with thousands of sessions, `poll` then `submit` visits each session's state
    /// twice, and between the two visits the rest of the pass's replies push it out of
    /// the cache; that second miss per operation was the largest single cost of `submit`
    /// in the load generator's profile.
    ///
    /// An operation `next` returns that cannot be submitted (too large) leaves its session
    /// idle; the first such error is returned once the pass is done.
    pub fn poll_each(
        &mut self,
        timeout: Duration,
        next: &mut dyn FnMut(Completion, Instant) -> Option<Bytes>,
    ) -> Result<(), ClientError> {
        let mut apply = |completion, at| next(completion, at).map(|op| (Operation::Apply, op));
        self.driver.poll_each(timeout, &mut apply)
    }

    /// [`poll_each`](Self::poll_each) where `next` also says what kind of operation it
    /// returns: `Apply`, or a read (`ReadMode::operation`: `Query`, `LeaseRead` or
    /// `Read`).
    pub fn poll_each_operation(
        &mut self,
        timeout: Duration,
        next: &mut dyn FnMut(Completion, Instant) -> Option<(Operation, Bytes)>,
    ) -> Result<(), ClientError> {
        self.driver.poll_each(timeout, next)
    }

    /// Requests dropped so far because a connection was closed or its buffer full (each
    /// is resent by its session's retry).
    pub fn dropped_messages(&self) -> u64 {
        self.driver.dropped_messages()
    }
}
