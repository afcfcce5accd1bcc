//! The baseline's client, a [`Transport`]: sessions spread over connections as vsr's
//! pipelined client does (session `s` on connection `s % connections`). Submissions are
//! buffered and written once per `poll`, one write per connection; a reader thread per
//! connection turns reply frames into completions over a channel bounded by the number of
//! sessions (each has at most one reply outstanding, so it never fills).

use super::frame;
use crate::transport::{Done, Transport};
use anyhow::Context;
use bytes::Bytes;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

enum Event {
    Reply(usize),
    Failed(String),
}

struct Connection {
    stream: TcpStream,
    write: Vec<u8>,
    reader: Option<JoinHandle<()>>,
}

/// A pipelined raw-TCP client of the baseline primary.
pub struct BaselineClient {
    connections: Vec<Connection>,
    events: Receiver<Event>,
}

impl BaselineClient {
    /// Opens `connections` connections to the primary for `sessions` sessions.
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
        let (sender, events) = sync_channel(sessions + connections);
        let mut opened = Vec::with_capacity(connections);
        for _ in 0..connections.min(sessions) {
            let stream = TcpStream::connect_timeout(&primary, timeout)
                .with_context(|| format!("connecting to the baseline primary {primary}"))?;
            stream.set_nodelay(true)?;
            let reader_stream = stream.try_clone()?;
            let sender = sender.clone();
            let reader = std::thread::spawn(move || read_replies(reader_stream, sender));
            opened.push(Connection {
                stream,
                write: Vec::new(),
                reader: Some(reader),
            });
        }
        Ok(BaselineClient {
            connections: opened,
            events,
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

fn read_replies(mut stream: TcpStream, events: SyncSender<Event>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut filled = 0;
    loop {
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                let _ = events.send(Event::Failed(
                    "the baseline primary closed the connection".into(),
                ));
                return;
            }
            Ok(n) => n,
            Err(error) => {
                let _ = events.send(Event::Failed(format!(
                    "reading from the baseline primary: {error}"
                )));
                return;
            }
        };
        filled += n;
        let mut pos = 0;
        loop {
            match frame::next_frame(&buf[..filled], &mut pos, 4) {
                Ok(Some(body)) => {
                    if events
                        .send(Event::Reply(frame::u32_at(body) as usize))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = events.send(Event::Failed(error));
                    return;
                }
            }
        }
        buf.copy_within(pos..filled, 0);
        filled -= pos;
    }
}

impl Transport for BaselineClient {
    fn submit(&mut self, session: usize, operation: Bytes) -> anyhow::Result<()> {
        let index = session % self.connections.len();
        let session = u32::try_from(session).context("session number above u32")?;
        frame::put_request(&mut self.connections[index].write, session, &operation);
        Ok(())
    }

    fn poll(&mut self, done: &mut Vec<Done>, timeout: Duration) -> anyhow::Result<()> {
        for connection in &mut self.connections {
            if !connection.write.is_empty() {
                connection
                    .stream
                    .write_all(&connection.write)
                    .context("writing to the baseline primary")?;
                connection.write.clear();
            }
        }
        let first = match self.events.recv_timeout(timeout) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => return Ok(()),
            Err(RecvTimeoutError::Disconnected) => {
                anyhow::bail!("every baseline connection is closed")
            }
        };
        for event in std::iter::once(first).chain(self.events.try_iter()) {
            match event {
                Event::Reply(session) => done.push(Done {
                    session,
                    result: Ok(Bytes::new()),
                }),
                Event::Failed(error) => anyhow::bail!(error),
            }
        }
        Ok(())
    }
}

impl Drop for BaselineClient {
    fn drop(&mut self) {
        for connection in &mut self.connections {
            let _ = connection.stream.shutdown(Shutdown::Both);
        }
        for connection in &mut self.connections {
            if let Some(reader) = connection.reader.take() {
                let _ = reader.join();
            }
        }
    }
}
