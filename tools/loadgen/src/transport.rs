//! The one interface the load drivers use: submit an operation on an idle session, poll for
//! completions. It mirrors `vsr::client::PipelinedClient`, so the vsr client and the
//! raw-TCP baseline are driven by exactly the same loop.

use bytes::Bytes;
use std::time::{Duration, Instant};

/// One finished operation.
#[derive(Debug)]
pub struct Done {
    /// The session it was submitted on (now idle again).
    pub session: usize,
    /// The reply, or why there is none (counted as an error, the session goes on).
    pub result: Result<Bytes, OpError>,
}

/// Why an operation has no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// A short name for counting errors by kind (`timeout`, `evicted`, `rejected`, ...).
    pub kind: &'static str,
    /// The full message.
    pub message: String,
}

/// A pipelined client: many sessions, each with at most one operation in flight.
pub trait Transport {
    /// Sends `operation` on `session`, which must be idle.
    fn submit(&mut self, session: usize, operation: Bytes) -> anyhow::Result<()>;
    /// Flushes what was submitted and waits up to `timeout` for completions, appended to
    /// `done`. An `Err` means the transport as a whole failed and the run must end.
    fn poll(&mut self, done: &mut Vec<Done>, timeout: Duration) -> anyhow::Result<()>;

    /// The closed loop's poll: like [`poll`](Self::poll), but each completion goes to
    /// `on_done` with the instant its reply was read (once the pass's sockets were read,
    /// before any completion is handled), and the operation `on_done` returns is submitted
    /// on that session. The first `Err` of `on_done` ends the poll and is returned.
    ///
    /// The default polls, then submits; a transport may instead submit as it goes (the vsr
    /// client does: its session's state is then still in the cache).
    fn poll_each(
        &mut self,
        timeout: Duration,
        on_done: &mut dyn FnMut(Done, Instant) -> anyhow::Result<Option<Bytes>>,
    ) -> anyhow::Result<()> {
        let mut done = Vec::new();
        self.poll(&mut done, timeout)?;
        let at = Instant::now();
        for completion in done {
            let session = completion.session;
            if let Some(operation) = on_done(completion, at)? {
                self.submit(session, operation)?;
            }
        }
        Ok(())
    }
}

/// Transports for tests: replies after a delay, from a function of the operation.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::collections::VecDeque;

    /// How a fake answers its n-th operation.
    pub type Answer = fn(u64, &Bytes) -> Result<Bytes, OpError>;

    /// The null service's answer: nothing.
    pub fn empty(_: u64, _: &Bytes) -> Result<Bytes, OpError> {
        Ok(Bytes::new())
    }

    /// Completes every operation `delay` after it was submitted (or, one at a time, after
    /// the previous one completed: a server that is saturated), with `answer`'s reply.
    pub struct Delayed {
        delay: Duration,
        answer: Answer,
        one_at_a_time: bool,
        submitted: u64,
        in_flight: VecDeque<(Instant, usize, Result<Bytes, OpError>)>,
    }

    impl Delayed {
        /// Answers every operation with an empty reply after `delay`.
        pub fn new(delay: Duration) -> Delayed {
            Delayed {
                delay,
                answer: empty,
                one_at_a_time: false,
                submitted: 0,
                in_flight: VecDeque::new(),
            }
        }

        /// Answers with `answer` instead.
        pub fn answering(self, answer: Answer) -> Delayed {
            Delayed { answer, ..self }
        }

        /// Serves one operation at a time: throughput 1 / delay whatever the sessions.
        pub fn one_at_a_time(self) -> Delayed {
            Delayed {
                one_at_a_time: true,
                ..self
            }
        }
    }

    impl Transport for Delayed {
        fn submit(&mut self, session: usize, operation: Bytes) -> anyhow::Result<()> {
            let result = (self.answer)(self.submitted, &operation);
            self.submitted += 1;
            let now = Instant::now();
            let start = match self.in_flight.back() {
                Some(&(last, _, _)) if self.one_at_a_time => last.max(now),
                _ => now,
            };
            self.in_flight
                .push_back((start + self.delay, session, result));
            Ok(())
        }

        fn poll(&mut self, done: &mut Vec<Done>, timeout: Duration) -> anyhow::Result<()> {
            let deadline = Instant::now() + timeout;
            let ready = self
                .in_flight
                .front()
                .map_or(deadline, |f| f.0.min(deadline));
            std::thread::sleep(ready.saturating_duration_since(Instant::now()));
            while let Some((ready, _, _)) = self.in_flight.front() {
                if *ready > Instant::now() {
                    break;
                }
                let (_, session, result) = self.in_flight.pop_front().expect("not empty");
                done.push(Done { session, result });
            }
            Ok(())
        }
    }
}
