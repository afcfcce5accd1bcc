//! Following the core's configuration (paper section 7): when a reconfiguration moves the
//! replica to another epoch, the peer table, the hello's terms and the reserved slots
//! follow; a replica that retired stops.
//!
//! The peers are the members of the current epoch and of the one before it: replicas of
//! the old epoch finish it (a view change there may still be needed to commit the
//! RECONFIGURATION) and serve its state to the new members, and a retiring replica
//! reminds the new members until f'+1 of them started the epoch. Anyone further back has
//! retired.
//!
//! Member addresses travel in the configuration as bytes (the core never reads them);
//! for the TCP runtime they are `host:port` text, checked by whoever proposed the
//! configuration (`vsr admin reconfigure`). One that does not parse is skipped with a
//! warning: that member cannot be reached, as if it were down.

use super::event_loop::EventLoop;
use super::handshake::PeerState;
use crate::protocol::{Configuration, ReplicaId};
use crate::service::StateMachine;
use std::net::SocketAddr;
use std::time::Instant;
use tracing::{info, warn};

/// The members of `configuration` with an address this runtime can dial.
pub fn member_addresses(configuration: &Configuration) -> Vec<(ReplicaId, SocketAddr)> {
    configuration
        .members()
        .iter()
        .filter_map(|member| match parse_address(&member.address) {
            Some(address) => Some((member.id, address)),
            None => {
                warn!(
                    epoch = configuration.epoch(),
                    member = member.id,
                    address = %String::from_utf8_lossy(&member.address),
                    "a member's address is not host:port; it cannot be reached"
                );
                None
            }
        })
        .collect()
}

/// A member address as the TCP runtime writes it: `ip:port` text.
pub fn parse_address(address: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(address).ok()?.parse().ok()
}

/// The address bytes of a member at `address`.
pub fn address_bytes(address: SocketAddr) -> bytes::Bytes {
    bytes::Bytes::from(address.to_string())
}

impl<S: StateMachine> EventLoop<S> {
    /// Brings the runtime in line with the core's configuration if its epoch moved since
    /// the last call (cheap otherwise: one comparison).
    pub(super) fn follow_configuration(&mut self) {
        let epoch = self.replica.epoch();
        if self.followed.as_ref().map(Configuration::epoch) == Some(epoch) {
            return;
        }
        let (current, members, mut peers) = {
            let mut configurations = self.replica.configurations();
            let current = configurations
                .next()
                .expect("a replica has a configuration");
            let members = member_addresses(current);
            let mut peers = members.clone();
            // A learner keeps no history in the core: the configuration it learned from
            // is the one followed before, whose replicas serve it the new epoch's start.
            let previous = configurations.next().or(self
                .followed
                .as_ref()
                .filter(|followed| followed.epoch() < epoch));
            if let Some(previous) = previous {
                peers.extend(member_addresses(previous));
            }
            (current.clone(), members, peers)
        };
        self.followed = Some(current);
        peers.sort_unstable();
        peers.dedup_by_key(|(id, _)| *id);
        let count = peers.len();
        self.gate.terms.epoch = epoch;
        self.gate.terms.members = members.iter().map(|&(_, address)| address).collect();
        self.slots.reserve_for(count);
        let closed = self.peers.sync(peers, Instant::now());
        for token in closed {
            self.close(
                token,
                "no longer a peer after a reconfiguration".into(),
                false,
            );
        }
        self.admit_new_members();
        info!(
            replica = self.gate.own,
            epoch,
            members = ?self.gate.terms.members,
            peers = self.peers.len(),
            "following the configuration"
        );
    }

    /// Connections accepted from identities no configuration listed then (learners) whose
    /// identity is a member now: they leave the shared pool and may send any replica
    /// message, as if they had said hello now (a new member's DoViewChange may be large).
    fn admit_new_members(&mut self) {
        let message_bytes_max = self.options.config.message_bytes_max;
        let tokens: Vec<usize> = self
            .connections
            .iter()
            .filter(|(_, connection)| {
                matches!(connection.peer, PeerState::Replica(id)
                    if self.replica.configurations().any(|c| c.contains_id(id)))
                    && connection.frame_bytes_max < message_bytes_max
            })
            .map(|(token, _)| token)
            .collect();
        for token in tokens {
            let connection = self.connections.live_mut(token);
            self.slots.uncount(&mut connection.ip);
            connection.frame_bytes_max = message_bytes_max;
        }
    }
}
