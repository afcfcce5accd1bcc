//! The baseline's client, a [`Transport`] built like vsr's pipelined client so that the
//! comparison measures the protocol, not two client designs: one mio event loop on the
//! caller's thread, sessions spread over connections (session `s` on connection
//! `s % connections`), submissions buffered and written once per `poll` with one write
//! per connection, replies read until the socket would block.

use super::frame;
use crate::transport::{Done, Transport};
use anyhow::Context;
use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bytes read from a socket per read call.
const READ_CHUNK_BYTES: usize = 256 << 10;

struct Connection {
    stream: TcpStream,
    write: Vec<u8>,
    written: usize,
    read: Vec<u8>,
}

impl Connection {
    /// Writes what the socket takes now; the rest waits for the next writable event.
    fn flush(&mut self) -> anyhow::Result<()> {
        while self.written < self.write.len() {
            match self.stream.write(&self.write[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("writing to the baseline primary"),
            }
        }
        self.write.clear();
        self.written = 0;
        Ok(())
    }

    /// Reads until the socket would block and appends a completion per reply frame.
    fn read_replies(&mut self, done: &mut Vec<Done>) -> anyhow::Result<()> {
        loop {
            let filled = self.read.len();
            self.read.resize(filled + READ_CHUNK_BYTES, 0);
            let result = self.stream.read(&mut self.read[filled..]);
            self.read.truncate(filled + *result.as_ref().unwrap_or(&0));
            match result {
                Ok(0) => anyhow::bail!("the baseline primary closed the connection"),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading from the baseline primary"),
            }
        }
        let mut pos = 0;
        while let Some(body) =
            frame::next_frame(&self.read, &mut pos, 4).map_err(anyhow::Error::msg)?
        {
            done.push(Done {
                session: frame::u32_at(body) as usize,
                result: Ok(Bytes::new()),
            });
        }
        self.read.drain(..pos);
        Ok(())
    }
}

/// A pipelined raw-TCP client of the baseline primary.
pub struct BaselineClient {
    poll: Poll,
    events: Events,
    connections: Vec<Connection>,
    /// `poll_each`'s completions (reused: no allocation per poll).
    done: Vec<Done>,
}

impl BaselineClient {
    /// Opens `min(connections, sessions)` connections to the primary.
    pub fn connect(
        primary: SocketAddr,
        sessions: usize,
        connections: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            sessions > 0 && connections > 0,
            "need at least one session and one connection"
        );
        let poll = Poll::new()?;
        let mut opened = Vec::with_capacity(connections);
        for i in 0..connections.min(sessions) {
            let stream = std::net::TcpStream::connect_timeout(&primary, timeout)
                .with_context(|| format!("connecting to the baseline primary {primary}"))?;
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(stream);
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            opened.push(Connection {
                stream,
                write: Vec::new(),
                written: 0,
                read: Vec::new(),
            });
        }
        Ok(BaselineClient {
            poll,
            events: Events::with_capacity(256),
            connections: opened,
            done: Vec::new(),
        })
    }

    /// One request through the whole chain: the readiness probe.
    pub fn round_trip(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.submit(0, Bytes::new())?;
        let mut done = Vec::new();
        self.poll(&mut done, timeout)?;
        anyhow::ensure!(!done.is_empty(), "no reply within {timeout:?}");
        Ok(())
    }
}

impl Transport for BaselineClient {
    fn submit(&mut self, session: usize, operation: Bytes) -> anyhow::Result<()> {
        let index = session % self.connections.len();
        let session = u32::try_from(session).context("session number above u32")?;
        frame::put_request(&mut self.connections[index].write, session, &operation);
        Ok(())
    }

    /// Returns as soon as at least one completion arrived, or at the timeout.
    fn poll(&mut self, done: &mut Vec<Done>, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let before = done.len();
        loop {
            for connection in &mut self.connections {
                connection.flush()?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.poll.poll(&mut self.events, Some(left)) {
                Ok(()) => {}
                // A signal (Ctrl-C) landed on this thread: the caller checks the stop flag.
                Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            for event in self.events.iter() {
                if event.is_readable() || event.is_read_closed() {
                    self.connections[event.token().0].read_replies(done)?;
                }
            }
            if done.len() > before || Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// The trait's default (poll, then submit), with the completions' buffer reused. The
    /// baseline's submit is an append to a `Vec`: nothing is gained by submitting earlier.
    fn poll_each(
        &mut self,
        timeout: Duration,
        on_done: &mut dyn FnMut(Done, Instant) -> anyhow::Result<Option<Bytes>>,
    ) -> anyhow::Result<()> {
        let mut done = std::mem::take(&mut self.done);
        let polled = self.poll(&mut done, timeout);
        let at = Instant::now();
        let mut result = polled;
        for completion in done.drain(..) {
            if result.is_err() {
                break;
            }
            let session = completion.session;
            result = match on_done(completion, at) {
                Ok(Some(operation)) => self.submit(session, operation),
                Ok(None) => Ok(()),
                Err(error) => Err(error),
            };
        }
        done.clear();
        self.done = done;
        result
    }
}
