//! The set of connections one mio loop owns, and the read and write steps every loop
//! runs on them: the replica's event loop and each I/O thread hold a [`ConnectionSet`]
//! and call the same [`next_inbound`] and [`ConnectionSet::write`], so reading, decoding,
//! admitting and writing behave alike wherever a connection lives.
//!
//! Tokens are slab indices (mio's `Token(index)`): a closed connection's index is reused,
//! so anything that must outlive a connection (a client's reply route) also keeps the
//! connection's id, which is never reused.

use super::connection::{Connection, ReadOutcome};
use super::handshake::{self, Admitted, Gate, Rejection};
use crate::wire::DecodeError;
use mio::event::Event;
use mio::{Interest, Registry, Token};
use std::io;
use std::ops::Range;

/// The connections of one loop, indexed by their mio token.
#[derive(Debug)]
pub struct ConnectionSet {
    /// A slab: the index is the mio token; `None` is a free slot listed in `free`.
    slots: Vec<Option<Connection>>,
    /// Per slot, how many connections left it (wrapping): with the slot's index, names
    /// one connection in a client's reply route token (`routes::ReplyToken`), so a token
    /// of a closed connection does not reach the next one in its slot.
    generations: Vec<u16>,
    free: Vec<usize>,
    /// The next connection id this set hands out (ids are unique in the process as long
    /// as one set, the replica's event loop, hands them all out).
    id_next: u64,
}

impl ConnectionSet {
    /// An empty set with room for `capacity` connections before it grows.
    pub fn with_capacity(capacity: usize) -> ConnectionSet {
        ConnectionSet {
            slots: Vec::with_capacity(capacity),
            generations: Vec::with_capacity(capacity),
            free: Vec::new(),
            id_next: 1,
        }
    }

    /// A fresh connection id (never 0, never reused).
    pub fn next_id(&mut self) -> u64 {
        let id = self.id_next;
        self.id_next += 1;
        id
    }

    /// Registers `connection`'s socket with `registry` for reads and writes and keeps it;
    /// returns its token. On error the connection is dropped (its socket closes).
    pub fn insert(&mut self, registry: &Registry, mut connection: Connection) -> io::Result<usize> {
        let token = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.generations.push(0);
            self.slots.len() - 1
        });
        assert!(self.slots[token].is_none(), "a free slot is empty");
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) = registry.register(&mut connection.stream, Token(token), interest) {
            self.free.push(token);
            return Err(error);
        }
        self.slots[token] = Some(connection);
        Ok(token)
    }

    /// Deregisters and takes out connection `token` (the caller closes or hands it over).
    pub fn remove(&mut self, registry: &Registry, token: usize) -> Option<Connection> {
        let mut connection = self.slots.get_mut(token)?.take()?;
        let _ = registry.deregister(&mut connection.stream);
        self.generations[token] = self.generations[token].wrapping_add(1);
        self.free.push(token);
        Some(connection)
    }

    /// Connection `token`, if it is live.
    pub fn get(&self, token: usize) -> Option<&Connection> {
        self.slots.get(token).and_then(Option::as_ref)
    }

    /// Connection `token`, if it is live.
    pub fn get_mut(&mut self, token: usize) -> Option<&mut Connection> {
        self.slots.get_mut(token).and_then(Option::as_mut)
    }

    /// The generation of slot `token`: how many connections left it (wrapping).
    pub fn generation(&self, token: usize) -> u16 {
        self.generations.get(token).copied().unwrap_or(0)
    }

    /// Connection `token`, if it is live and the slot's generation is `generation`.
    pub fn get_mut_of(&mut self, token: usize, generation: u16) -> Option<&mut Connection> {
        if self.generation(token) != generation {
            return None;
        }
        self.get_mut(token)
    }

    /// Connection `token`, which the caller knows is live.
    pub fn live_mut(&mut self, token: usize) -> &mut Connection {
        self.get_mut(token).expect("the connection is live")
    }

    /// Every token that may hold a connection, for a phase that visits them in order.
    /// (A range, not an iterator over the slots: a phase closes connections as it goes.)
    pub fn tokens(&self) -> Range<usize> {
        0..self.slots.len()
    }

    /// The live connections and their tokens.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Connection)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(token, slot)| slot.as_ref().map(|c| (token, c)))
    }

    /// How many connections are live.
    pub fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Notes the readiness `event` reports on its connection (edge-triggered: the flags
    /// stay set until a read or write returns `WouldBlock`); returns the connection.
    pub fn on_event(&mut self, event: &Event) -> Option<&mut Connection> {
        let connection = self.get_mut(event.token().0)?;
        connection.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
        connection.writable |= event.is_writable() || event.is_error();
        Some(connection)
    }

    /// Writes connection `token`'s output if it has any and its socket takes it.
    pub fn write(&mut self, token: usize) -> Written {
        let Some(connection) = self.get_mut(token) else {
            return Written::Nothing;
        };
        if !connection.has_output() || !connection.writable || connection.connecting {
            return Written::Nothing;
        }
        match connection.write() {
            Ok(bytes) => Written::Bytes(bytes),
            Err(error) => Written::Failed(error),
        }
    }
}

/// What [`ConnectionSet::write`] did.
#[derive(Debug)]
pub enum Written {
    /// Nothing to write, or the socket is not writable now.
    Nothing,
    /// Wrote this many bytes (possibly 0, possibly not all of the output).
    Bytes(usize),
    /// The socket failed: the connection must be closed.
    Failed(io::Error),
}

/// One connection's share of a read phase: how much it may read before the others get
/// their turn, and what it read and decoded since the caller last took the counts.
#[derive(Debug)]
pub struct ReadPass {
    budget_bytes: usize,
    read_bytes: usize,
    counts: ReadCounts,
}

/// What a read pass read and decoded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadCounts {
    /// Bytes read from the socket.
    pub bytes: u64,
    /// Frames decoded (admitted or not).
    pub frames: u64,
    /// Frames refused for a number no correct peer sends.
    pub frames_out_of_range: u64,
}

impl ReadPass {
    /// A pass that stops reading the socket once `budget_bytes` were read.
    pub fn new(budget_bytes: usize) -> ReadPass {
        ReadPass {
            budget_bytes,
            read_bytes: 0,
            counts: ReadCounts::default(),
        }
    }

    /// What was read and decoded since the last call (the budget is not reset).
    pub fn take_counts(&mut self) -> ReadCounts {
        std::mem::take(&mut self.counts)
    }
}

/// What [`next_inbound`] found.
#[derive(Debug)]
pub enum Inbound {
    /// A frame that passed the gate.
    Admitted(Admitted),
    /// A frame the gate refused: the connection is rejected.
    Rejected(Rejection),
    /// The connection must be closed (`rejected`: it broke a rule).
    Close {
        /// Why, for the log.
        reason: String,
        /// Whether it broke a rule (counted and logged as a rejection).
        rejected: bool,
    },
    /// Nothing more until the socket is readable again.
    Idle,
    /// The pass's budget is spent and the socket may hold more: read it again soon.
    BudgetSpent,
}

/// The read loop shared by every loop: decodes the next frame from what `connection`
/// buffered and passes it through `gate`; while no whole frame is buffered, reads the
/// socket once more, until `WouldBlock`, the end of the stream or the pass's budget.
///
/// Decoding is zero-copy (bodies are `Bytes` slices of the read buffer) and a frame's
/// size is checked against the connection's limit from its header, before its body is
/// buffered. The caller applies back-pressure by not calling this again.
pub fn next_inbound(
    connection: &mut Connection,
    gate: &Gate,
    cluster: u128,
    pass: &mut ReadPass,
) -> Inbound {
    loop {
        match connection.decode(cluster) {
            Ok(Some(frame)) => {
                pass.counts.frames += 1;
                return match gate.admit(&mut connection.peer, frame) {
                    Ok(admitted) => Inbound::Admitted(admitted),
                    Err(rejection) => Inbound::Rejected(rejection),
                };
            }
            Ok(None) => {}
            Err(error) => {
                if matches!(error, DecodeError::OutOfRange(_)) {
                    pass.counts.frames_out_of_range += 1;
                }
                if let Some(rejection) = handshake::undecodable(&connection.peer, error) {
                    return Inbound::Rejected(rejection);
                }
                return Inbound::Close {
                    reason: format!("decode error: {error}"),
                    rejected: true,
                };
            }
        }
        if !connection.readable || connection.connecting {
            return Inbound::Idle;
        }
        if pass.read_bytes >= pass.budget_bytes {
            return Inbound::BudgetSpent;
        }
        match connection.read_once() {
            Ok(ReadOutcome::Data(read)) => {
                pass.read_bytes += read;
                pass.counts.bytes += read as u64;
            }
            Ok(ReadOutcome::WouldBlock) => return Inbound::Idle,
            Ok(ReadOutcome::Closed) => {
                let partial = connection.buffered_bytes();
                let reason =
                    format!("peer closed the connection ({partial} bytes of a partial frame left)");
                return Inbound::Close {
                    reason,
                    rejected: false,
                };
            }
            Err(error) => {
                return Inbound::Close {
                    reason: format!("read error: {error}"),
                    rejected: false,
                }
            }
        }
    }
}

/// Where a connection's peer is, for the log ("?" once the socket has no peer).
pub fn peer_address(connection: &Connection) -> String {
    connection
        .stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |address| address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::routes::ReplyToken;
    use mio::net::TcpStream;
    use mio::Poll;
    use std::net::TcpListener;

    fn connection(listener: &TcpListener, id: u64) -> (Connection, std::net::TcpStream) {
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let stream = TcpStream::from_std(server);
        (Connection::new(stream, id, false, 1 << 20, 1 << 20), client)
    }

    #[test]
    fn a_reply_token_of_a_closed_connection_does_not_reach_the_next_one_in_its_slot() {
        let poll = Poll::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut set = ConnectionSet::with_capacity(4);
        let (first, _first_peer) = connection(&listener, 1);
        let slot = set.insert(poll.registry(), first).unwrap();
        let token = ReplyToken {
            slot,
            generation: set.generation(slot),
            arrived_us: 0,
        };
        let token = ReplyToken::unpack(token.pack().unwrap());
        assert_eq!(
            set.get_mut_of(token.slot, token.generation).map(|c| c.id),
            Some(1)
        );
        // The connection closes and another takes its slot.
        set.remove(poll.registry(), slot).unwrap();
        let (second, _second_peer) = connection(&listener, 2);
        assert_eq!(set.insert(poll.registry(), second).unwrap(), slot);
        assert!(set.get_mut_of(token.slot, token.generation).is_none());
        let generation = set.generation(slot);
        assert_eq!(set.get_mut_of(slot, generation).map(|c| c.id), Some(2));
    }
}
