//! A small blocking client for process tests: one `ClientSession` (registration, request
//! numbers, retries to every replica after a timeout) driven over raw wire frames with a
//! mio poll. Tests use it instead of the client library so they depend only on the wire
//! format and the session logic.

use bytes::{Bytes, BytesMut};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vsr::client::{ClientSession, Outcome, ReadMode, Target};
use vsr::protocol::{Message, Op};
use vsr::service::kv::{KvOp, KvResult};
use vsr::wire::{self, Frame, Hello, Peer, Terms};

/// The client's tick, as the replicas'.
const TICK: Duration = Duration::from_millis(10);
/// Ticks before a request is retried to every replica.
const REQUEST_TIMEOUT_TICKS: u64 = 30;

/// A blocking client of one cluster.
pub struct TestClient {
    session: ClientSession,
    cluster: u128,
    addresses: Vec<SocketAddr>,
    poll: Poll,
    events: Events,
    streams: Vec<Option<TcpStream>>,
    buffers: Vec<BytesMut>,
    out: BytesMut,
    next_tick: Instant,
}

impl TestClient {
    /// A client with a random id; not registered yet.
    pub fn new(addresses: &[SocketAddr], cluster: u128) -> TestClient {
        TestClient {
            session: ClientSession::new(
                vsr::runtime::nonce(),
                addresses.len() as u8,
                REQUEST_TIMEOUT_TICKS,
            ),
            cluster,
            addresses: addresses.to_vec(),
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(64),
            streams: addresses.iter().map(|_| None).collect(),
            buffers: addresses.iter().map(|_| BytesMut::new()).collect(),
            out: BytesMut::new(),
            next_tick: Instant::now() + TICK,
        }
    }

    /// A registered client, or why not within `timeout`.
    pub fn connect(
        addresses: &[SocketAddr],
        cluster: u128,
        timeout: Duration,
    ) -> Result<TestClient, String> {
        let mut client = TestClient::new(addresses, cluster);
        let (target, message) = client.session.register();
        client.send(target, &message);
        match client.wait(Instant::now() + timeout)? {
            Outcome::Registered { .. } => Ok(client),
            other => Err(format!("registration answered {other:?}")),
        }
    }

    /// Runs one operation; returns its op number and result.
    pub fn call(&mut self, body: Bytes, timeout: Duration) -> Result<(Op, Bytes), String> {
        let deadline = Instant::now() + timeout;
        let (_, target, message) = self.session.submit(body).map_err(|e| e.to_string())?;
        self.send(target, &message);
        match self.wait(deadline)? {
            Outcome::Completed { op, result, .. } => Ok((op, result)),
            other => Err(format!("request answered {other:?}")),
        }
    }

    /// `put key value` on the kv service.
    pub fn put(&mut self, key: &[u8], value: &[u8], timeout: Duration) -> Result<Op, String> {
        let body = KvOp::Put(Bytes::copy_from_slice(key), Bytes::copy_from_slice(value)).encode();
        let (op, result) = self.call(body, timeout)?;
        match KvResult::decode(&result) {
            Some(KvResult::Ok) => Ok(op),
            other => Err(format!("put answered {other:?}")),
        }
    }

    /// `get key` on the kv service (`None`: absent).
    pub fn get(&mut self, key: &[u8], timeout: Duration) -> Result<Option<Bytes>, String> {
        let (_, result) = self.call(KvOp::Get(Bytes::copy_from_slice(key)).encode(), timeout)?;
        match KvResult::decode(&result) {
            Some(KvResult::Value(value)) => Ok(Some(value)),
            Some(KvResult::Nil) => Ok(None),
            other => Err(format!("get answered {other:?}")),
        }
    }

    /// `get key` on the kv service, read in `mode` (`None`: absent): a lease read goes
    /// to the replica this session believes is primary, and through the log if that
    /// one holds no lease.
    pub fn read_in(
        &mut self,
        key: &[u8],
        mode: ReadMode,
        timeout: Duration,
    ) -> Result<Option<Bytes>, String> {
        let deadline = Instant::now() + timeout;
        let query = KvOp::Get(Bytes::copy_from_slice(key)).encode();
        let (_, target, message) = self
            .session
            .submit_operation(mode.operation(), query)
            .map_err(|e| e.to_string())?;
        let message = message.clone();
        self.send(target, &message);
        let result = match self.wait(deadline)? {
            Outcome::Completed { result, .. } => result,
            other => return Err(format!("read answered {other:?}")),
        };
        match KvResult::decode(&result) {
            Some(KvResult::Value(value)) => Ok(Some(value)),
            Some(KvResult::Nil) => Ok(None),
            other => Err(format!("get answered {other:?}")),
        }
    }

    /// The view this session believes current (its primary is `view mod n`).
    pub fn view(&self) -> u32 {
        self.session.view()
    }

    fn send(&mut self, target: Target, message: &Message) {
        match target {
            Target::Replica(index) => self.send_to(index as usize, message),
            Target::All => (0..self.addresses.len()).for_each(|index| self.send_to(index, message)),
        }
    }

    /// Best effort, like the network: a failure drops the connection and the session's
    /// retry timer recovers.
    fn send_to(&mut self, index: usize, message: &Message) {
        self.out.clear();
        if self.streams[index].is_none() {
            let Ok(stream) = std::net::TcpStream::connect_timeout(
                &self.addresses[index],
                Duration::from_millis(200),
            ) else {
                return;
            };
            stream.set_nodelay(true).unwrap();
            stream.set_nonblocking(true).unwrap();
            let mut stream = TcpStream::from_std(stream);
            self.poll
                .registry()
                .register(&mut stream, Token(index), Interest::READABLE)
                .unwrap();
            self.streams[index] = Some(stream);
            self.buffers[index].clear();
            let hello = Hello {
                peer: Peer::Client(self.session.client()),
                terms: Terms {
                    cluster: self.cluster,
                    epoch: 0,
                    members: self.addresses.clone(),
                    limits: None,
                },
                nonce: None,
            };
            wire::encode_hello(&hello, &mut self.out);
        }
        wire::encode(message, self.cluster, &mut self.out);
        let stream = self.streams[index].as_mut().unwrap();
        let mut written = 0;
        let deadline = Instant::now() + Duration::from_secs(1);
        while written < self.out.len() {
            match stream.write(&self.out[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(_) => return self.drop_stream(index),
            }
        }
    }

    fn drop_stream(&mut self, index: usize) {
        if let Some(mut stream) = self.streams[index].take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
    }

    /// Drives the session until it reports an outcome or `deadline` passes.
    fn wait(&mut self, deadline: Instant) -> Result<Outcome, String> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err("timed out".into());
            }
            if now >= self.next_tick {
                self.next_tick = now + TICK;
                if let Some((target, message)) = self.session.on_tick() {
                    self.send(target, &message);
                }
            }
            let timeout = self.next_tick.min(deadline).saturating_duration_since(now);
            self.poll
                .poll(&mut self.events, Some(timeout))
                .map_err(|e| e.to_string())?;
            let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
            for index in ready {
                if let Some(outcome) = self.read(index)? {
                    return Ok(outcome);
                }
            }
        }
    }

    fn read(&mut self, index: usize) -> Result<Option<Outcome>, String> {
        let mut chunk = [0u8; 16 << 10];
        loop {
            let Some(stream) = self.streams[index].as_mut() else {
                return Ok(None);
            };
            match stream.read(&mut chunk) {
                Ok(0) => {
                    self.drop_stream(index);
                    return Ok(None);
                }
                Ok(n) => self.buffers[index].extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_stream(index);
                    return Ok(None);
                }
            }
        }
        let mut result = None;
        loop {
            match wire::decode(&mut self.buffers[index], self.cluster, 16 << 20) {
                Ok(Some(Frame::Message(message))) => {
                    if let Some(outcome) = self.session.on_message(&message) {
                        result = Some(outcome);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(result),
                Err(error) => return Err(format!("bad frame from replica {index}: {error}")),
            }
        }
    }
}
