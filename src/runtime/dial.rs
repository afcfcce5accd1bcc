//! Dialling peers: opening our link to each other replica, on schedule (after a lost link's
//! backoff) or on demand (a message found no link), and noticing when a dial completes.
//! The [`Peers`](super::peers::Peers) table decides when; this module opens the sockets.
//!
//! A link opens with our hello. With a cluster key, what is sent before the handshake is
//! done waits on the connection (`Connection::hold`): the peer reads nothing but our proof
//! first.

use super::connection::Connection;
use super::event_loop::EventLoop;
use super::handshake::PeerState;
use crate::protocol::ReplicaId;
use crate::service::StateMachine;
use crate::wire::{self, Hello, Peer};
use mio::net::TcpStream;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;
use tracing::debug;

impl<S: StateMachine> EventLoop<S> {
    /// The connection of our link to replica `id`, dialled now if there is none and the
    /// on-demand interval allows it.
    pub(super) fn link(&mut self, id: ReplicaId) -> Option<usize> {
        if let Some(token) = self.peers.token(id) {
            return Some(token);
        }
        let address = self.peers.dial_on_demand(id, Instant::now())?;
        match self.dial(id, address) {
            Ok(token) => self.peers.on_dialled(id, token),
            Err(error) => {
                debug!(replica = self.gate.own, peer = id, %error, "connect failed")
            }
        }
        self.peers.token(id)
    }

    /// Redials the lost links whose backoff expired at `now`.
    pub(super) fn dial_due(&mut self, now: Instant) {
        if self.peers.next_attempt().is_none_or(|next| next > now) {
            return;
        }
        for id in self.peers.ids() {
            let Some(address) = self.peers.due(id, now) else {
                continue;
            };
            match self.dial(id, address) {
                Ok(token) => self.peers.on_dialled(id, token),
                Err(error) => {
                    debug!(replica = self.gate.own, peer = id, %error, "connect failed");
                    self.peers.on_lost(id, now);
                }
            }
        }
    }

    /// Opens a link to replica `id` at `address` and queues our hello on it.
    fn dial(&mut self, id: ReplicaId, address: SocketAddr) -> io::Result<usize> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let nonce = match &self.gate.key {
            Some(_) => Some(crate::auth::fresh_nonce().map_err(io::Error::other)?),
            None => None,
        };
        let connection_id = self.connections.next_id();
        let queued_bytes_max = self.replica_queued_bytes_max;
        let frame_max = self.request_frame_bytes_max;
        let mut connection =
            Connection::new(stream, connection_id, true, queued_bytes_max, frame_max);
        // A welcome or a refusal comes back on our link, from the replica dialled.
        connection.peer = PeerState::Dialed { replica: id, nonce };
        let hello = Hello {
            peer: Peer::Replica(self.gate.own),
            terms: self.gate.terms.clone(),
            nonce,
        };
        connection
            .push_with(|out| wire::encode_hello(&hello, out))
            .expect("a hello fits any queue");
        if nonce.is_some() {
            connection.hold();
        }
        self.connections.insert(self.poll.registry(), connection)
    }

    /// An outbound connect completes when the socket has a peer address; it failed when
    /// the socket holds an error.
    pub(super) fn check_connected(&mut self, token: usize) {
        let Some(connection) = self.connections.get_mut(token) else {
            return;
        };
        let failure = match connection.stream.take_error() {
            Ok(Some(error)) | Err(error) => Some(error),
            Ok(None) => match connection.stream.peer_addr() {
                Ok(_) => None,
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
                Err(error) => Some(error),
            },
        };
        match failure {
            Some(error) => self.close(token, format!("connect failed: {error}"), false),
            // The backoff resets only when the peer welcomes us (a connection that is
            // then refused must not be redialled at once).
            None => connection.connecting = false,
        }
    }

    /// Whether every peer's link is up and welcomed (the protocol clock waits for it).
    pub(super) fn links_up(&self) -> bool {
        self.peers.tokens().all(|token| {
            token.is_some_and(|token| {
                self.connections
                    .get(token)
                    .is_some_and(|c| matches!(c.peer, PeerState::Linked(_)))
            })
        })
    }
}
