//! What one frame decodes to: a protocol message, or one of the few connection-level frames
//! that never reach the protocol core (the handshake that names the speaker and, with a
//! cluster key, proves it; and the stats exchange used by `vsr stats`).

use super::batch::{Batch, BatchKind};
use super::greeting::{Hello, Mac, Refusal, Welcome};
use crate::protocol::{ClientId, Message, ReplicaId};
use bytes::Bytes;

/// Who is speaking on a connection, announced by the first frame the connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A replica, by its identity (never reused; not its index, which changes with the
    /// configuration).
    Replica(ReplicaId),
    /// A client, by its id.
    Client(ClientId),
}

/// The `code` of a `Hello` frame from a replica.
pub(crate) const PEER_REPLICA: u8 = 1;
/// The `code` of a `Hello` frame from a client.
pub(crate) const PEER_CLIENT: u8 = 2;

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The speaker introduces itself (the first frame of a connection).
    Hello(Hello),
    /// The acceptor accepts a hello (with a key: and challenges the connector).
    Welcome(Welcome),
    /// The connector's answer to the acceptor's challenge.
    Proof(Mac),
    /// The handshake failed; the text says why.
    Refusal(Refusal),
    /// A protocol message for the core.
    Message(Message),
    /// Several client requests or replies in one frame, checked whole (`wire::batch`).
    Batch(Batch),
    /// Ask a replica for its counters.
    StatsRequest,
    /// A replica's counters, as human-readable text (a slice of the read buffer).
    StatsReply(Bytes),
}

impl Frame {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Welcome(_) => "welcome",
            Frame::Proof(_) => "proof",
            Frame::Refusal(_) => "refusal",
            Frame::Message(message) => message.body.name(),
            Frame::Batch(batch) => match batch.kind() {
                BatchKind::Requests => "requests",
                BatchKind::Replies => "replies",
            },
            Frame::StatsRequest => "stats_request",
            Frame::StatsReply(_) => "stats_reply",
        }
    }
}
