//! Closing connections: why, who learns it, and what follows. A connection that broke a
//! rule is counted and logged (a configuration mismatch at ERROR, once a minute per peer;
//! anything else at WARN); one owed an explanation gets a refusal first and lingers until
//! it is written; a lost replica link is redialled after its backoff; a handshake that
//! takes too long is closed by the sweep.
//!
//! Closing one connection never affects another: one bad peer never takes the replica
//! down.

use super::connection::{Connection, Overflow};
use super::connections::peer_address;
use super::event_loop::EventLoop;
use super::handshake::{PeerState, Rejection};
use crate::service::StateMachine;
use crate::wire;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// How long a refused connection may take to read its refusal before it is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// How often handshake deadlines are checked.
pub(super) const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

impl<S: StateMachine> EventLoop<S> {
    /// Closes a connection whose peer does not read what we queue for it.
    pub(super) fn close_overflow(&mut self, token: usize, overflow: Overflow) {
        self.close(token, overflow.to_string(), true);
    }

    /// Closes one connection, logging why; a lost replica link is redialled after a backoff.
    pub(super) fn close(&mut self, token: usize, reason: String, rejected: bool) {
        let Some(mut connection) = self.connections.remove(self.poll.registry(), token) else {
            return;
        };
        self.slots.uncount(&mut connection.ip);
        let peer = connection.peer;
        if rejected {
            self.metrics.counters.connections_rejected += 1;
            let who = match peer.dialed_replica() {
                Some(index) => format!("replica {index}"),
                None => peer_ip(&connection),
            };
            self.log_rejection(who, "closing connection", reason.clone(), false);
        } else {
            let address = peer_address(&connection);
            debug!(replica = self.options.replica, %address, ?peer, %reason, "connection closed");
        }
        if let Some(index) = self.peers.by_token(token) {
            self.peers.on_lost(index, Instant::now());
        }
        // A failed dial is routine while a peer is down (one per backoff): not info.
        if matches!(peer, PeerState::Linked(_)) && !rejected && !connection.connecting {
            info!(replica = self.options.replica, ?peer, %reason, "replica connection closed");
        }
    }

    /// Closes a connection that broke a rule; a peer owed an explanation gets a refusal
    /// first (written before the close, within `REFUSAL_LINGER`).
    pub(super) fn reject(&mut self, token: usize, rejection: Rejection) {
        if let Rejection::RefusedByPeer(refusal) = &rejection {
            if refusal.code.is_configuration() {
                if let Some(index) = self.peers.by_token(token) {
                    // Not again for a while: only a person can fix a configuration.
                    self.peers.on_refused(index);
                }
            }
        }
        let configuration = rejection.is_configuration();
        let Some(refusal) = rejection.refusal() else {
            if !configuration {
                return self.close(token, rejection.to_string(), true);
            }
            // Refused by a peer: one clear line, then the ordinary close.
            let who = self
                .connections
                .get(token)
                .and_then(|c| c.peer.dialed_replica())
                .map_or_else(|| "?".to_string(), |index| format!("replica {index}"));
            self.metrics.counters.connections_rejected += 1;
            self.metrics.counters.handshakes_refused += 1;
            self.log_rejection(
                who,
                "our connection was refused",
                rejection.to_string(),
                true,
            );
            return self.close(token, rejection.to_string(), false);
        };
        let cluster = rejection
            .refusal_cluster()
            .unwrap_or(self.options.config.cluster);
        let now = Instant::now();
        let Some(connection) = self.connections.get_mut(token) else {
            return;
        };
        let pushed = connection.push_with(|out| wire::encode_refusal(&refusal, cluster, out));
        connection.closing = Some(now + REFUSAL_LINGER);
        // A refused connection holds no shared slot while it lingers.
        self.slots.uncount(&mut connection.ip);
        let who = match connection.peer.dialed_replica() {
            Some(index) => format!("replica {index}"),
            None => connection
                .stream
                .peer_addr()
                .map_or_else(|_| "?".to_string(), |a| a.ip().to_string()),
        };
        self.metrics.counters.connections_rejected += 1;
        if configuration {
            self.metrics.counters.handshakes_refused += 1;
        }
        self.log_rejection(who, "refusing connection", refusal.reason, configuration);
        if pushed.is_err() {
            self.close(token, "no room for the refusal".to_string(), false);
        }
    }

    /// Logs a rejection: a configuration mismatch at ERROR, anything else at WARN; the
    /// same reason from the same peer at most once per minute.
    pub(super) fn log_rejection(
        &mut self,
        who: String,
        what: &str,
        reason: String,
        configuration: bool,
    ) {
        if !self
            .throttle
            .allow((who.clone(), reason.clone()), Instant::now())
        {
            self.metrics.counters.log_lines_suppressed += 1;
            return;
        }
        let replica = self.options.replica;
        if configuration {
            error!(replica, peer = %who, "{what}: {reason} (logged once a minute per peer)");
        } else {
            warn!(replica, peer = %who, "{what}: {reason}");
        }
    }

    /// Closes connections whose handshake or refusal took too long.
    pub(super) fn sweep_if_due(&mut self, now: Instant) {
        if now < self.sweep_at {
            return;
        }
        self.sweep_at = now + SWEEP_INTERVAL;
        let timeout = self.options.handshake_timeout;
        let keyed = self.gate.key.is_some();
        for token in self.connections.tokens() {
            let Some(connection) = self.connections.get(token) else {
                continue;
            };
            if connection.closing.is_some_and(|deadline| now >= deadline) {
                self.close(token, "refusal not read in time".to_string(), false);
                continue;
            }
            // Our own unkeyed links carry messages before the welcome: they do not expire.
            let waiting = connection.peer.is_pending()
                || (keyed && matches!(connection.peer, PeerState::Dialed { .. }));
            if waiting && now.saturating_duration_since(connection.opened_at) >= timeout {
                let reason = format!("no handshake within {timeout:?}");
                self.close(token, reason, true);
            }
        }
    }
}

/// The address of `connection`'s peer without its port, for per-address log lines.
fn peer_ip(connection: &Connection) -> String {
    let address = peer_address(connection);
    address
        .rsplit_once(':')
        .map_or(address.clone(), |(ip, _)| ip.to_string())
}
