//! Admission: which connections the replica accepts, so that no one can fill its slots.
//!
//! Clients and connections that have not said who they are share `connections_max` slots
//! (a client on an I/O thread counts too); [`RESERVED_SLOTS_PER_REPLICA`] more per replica
//! stay reserved for replica links (its link to us and ours to it). One IP address may
//! hold `connections_per_ip_max` of the shared slots. When the shared slots are full, the
//! oldest connection still in its handshake is closed to make room (an idle attacker's
//! socket, not a working client); failing that, a newcomer may take a reserved slot, but
//! only to say it is a replica (a client hello there is refused).
//!
//! [`SharedSlots`] is the count; the accept phase below applies it.

use super::connection::Connection;
use super::event_loop::{EventLoop, CLIENT_QUEUED_BYTES_MAX};
use crate::service::StateMachine;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use tracing::{debug, warn};

/// Slots kept for replica links beyond `connections_max`, per replica of the cluster.
pub const RESERVED_SLOTS_PER_REPLICA: usize = 2;

/// The shared pool: connections that are not identified replicas, in all and per IP.
#[derive(Debug)]
pub struct SharedSlots {
    /// Counted connections of this loop (pending handshakes and clients).
    unreplicated: usize,
    /// The same per peer address; an address with none is not in the map.
    per_ip: HashMap<IpAddr, usize>,
    connections_max: usize,
    connections_per_ip_max: usize,
    reserved: usize,
}

impl SharedSlots {
    /// A pool of `connections_max` shared slots, at most `connections_per_ip_max` per
    /// address, beside the reserved slots of `replicas` replicas.
    pub fn new(connections_max: usize, connections_per_ip_max: usize, replicas: usize) -> Self {
        SharedSlots {
            unreplicated: 0,
            per_ip: HashMap::new(),
            connections_max,
            connections_per_ip_max,
            reserved: RESERVED_SLOTS_PER_REPLICA * replicas,
        }
    }

    /// Reserves slots for `replicas` replicas from now on (the peers of the configurations
    /// the replica is in change with a reconfiguration).
    pub fn reserve_for(&mut self, replicas: usize) {
        self.reserved = RESERVED_SLOTS_PER_REPLICA * replicas;
    }

    /// Why `ip` may not open another connection, if it may not.
    pub fn ip_refusal(&self, ip: IpAddr) -> Option<String> {
        let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        (from_ip >= self.connections_per_ip_max).then(|| {
            format!(
                "{from_ip} connections from this address already (--connections-per-ip {})",
                self.connections_per_ip_max
            )
        })
    }

    /// Whether a shared slot is free, with `io_clients` clients on the I/O threads.
    pub fn has_room(&self, io_clients: usize) -> bool {
        self.unreplicated + io_clients < self.connections_max
    }

    /// Whether more shared-pool connections are open than there are shared slots: the
    /// newest took a reserved slot.
    pub fn over(&self, io_clients: usize) -> bool {
        self.unreplicated + io_clients > self.connections_max
    }

    /// Every slot, shared and reserved.
    pub fn total(&self) -> usize {
        self.connections_max + self.reserved
    }

    /// The shared slots (`--connections-max`).
    pub fn connections_max(&self) -> usize {
        self.connections_max
    }

    /// Counts a connection accepted from `ip` in the pool; `counted` is the connection's
    /// `ip` field, which holds the address while the connection is counted.
    pub fn count(&mut self, counted: &mut Option<IpAddr>, ip: IpAddr) {
        assert!(counted.is_none(), "a connection is counted once");
        *counted = Some(ip);
        self.unreplicated += 1;
        *self.per_ip.entry(ip).or_insert(0) += 1;
    }

    /// Takes a connection out of the pool (it is a replica, is closing, or left this
    /// loop); one not in the pool (`counted` is `None`) is left alone.
    pub fn uncount(&mut self, counted: &mut Option<IpAddr>) {
        let Some(ip) = counted.take() else {
            return;
        };
        self.unreplicated -= 1;
        let count = self
            .per_ip
            .get_mut(&ip)
            .expect("counted addresses are known");
        *count -= 1;
        if *count == 0 {
            self.per_ip.remove(&ip);
        }
    }
}

impl<S: StateMachine> EventLoop<S> {
    /// The accept phase: takes every pending connection from the listener.
    pub(super) fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, address)) => {
                    self.metrics.counters.connections_accepted += 1;
                    if let Err(reason) = self.make_room(address.ip()) {
                        self.metrics.counters.connections_refused += 1;
                        self.log_rejection(
                            address.ip().to_string(),
                            "refusing connection",
                            reason,
                            false,
                        );
                        continue;
                    }
                    if let Err(error) = stream.set_nodelay(true) {
                        debug!(%address, %error, "cannot set TCP_NODELAY");
                    }
                    debug!(%address, "accepted connection");
                    // We only ever write handshake frames, replies and stats replies on
                    // accepted connections (replica traffic goes out on our own links).
                    let id = self.connections.next_id();
                    let frame_max = self.request_frame_bytes_max;
                    let connection =
                        Connection::new(stream, id, false, CLIENT_QUEUED_BYTES_MAX, frame_max);
                    match self.connections.insert(self.poll.registry(), connection) {
                        Ok(token) => {
                            let counted = &mut self.connections.live_mut(token).ip;
                            self.slots.count(counted, address.ip());
                        }
                        Err(error) => {
                            warn!(%address, %error, "cannot register accepted connection")
                        }
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Typically out of file descriptors: keep serving what we have.
                    warn!(%error, "accept failed");
                    return;
                }
            }
        }
    }

    /// Finds a slot for a new connection from `ip`, or says why there is none.
    fn make_room(&mut self, ip: IpAddr) -> Result<(), String> {
        if let Some(reason) = self.slots.ip_refusal(ip) {
            return Err(reason);
        }
        if self.slots.has_room(self.io.clients()) {
            return Ok(());
        }
        if let Some(oldest) = self.oldest_pending() {
            self.close(oldest, "closed to make room: all connection slots are taken and this one has not finished its handshake".to_string(), true);
            return Ok(());
        }
        if self.connections.live() < self.slots.total() {
            return Ok(());
        }
        Err(format!(
            "all {} connection slots are taken (--connections-max {})",
            self.slots.total(),
            self.slots.connections_max()
        ))
    }

    /// The accepted connection that has waited longest in its handshake (not one that is
    /// only writing its refusal).
    fn oldest_pending(&self) -> Option<usize> {
        self.connections
            .iter()
            .filter(|(_, c)| c.peer.is_pending() && c.closing.is_none())
            .min_by_key(|(_, c)| c.opened_at)
            .map(|(token, _)| token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_counts_per_address_and_reserves_slots_for_replicas() {
        let mut slots = SharedSlots::new(2, 1, 3);
        assert_eq!(slots.total(), 2 + 6);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let (mut first, mut second) = (None, None);
        assert!(slots.ip_refusal(a).is_none());
        slots.count(&mut first, a);
        assert!(slots
            .ip_refusal(a)
            .unwrap()
            .contains("1 connections from this address"));
        assert!(slots.has_room(0));
        assert!(
            !slots.has_room(1),
            "clients on I/O threads take shared slots"
        );
        slots.count(&mut second, b);
        assert!(!slots.has_room(0));
        assert!(!slots.over(0));
        assert!(slots.over(1));
        slots.uncount(&mut first);
        slots.uncount(&mut first);
        assert!(slots.ip_refusal(a).is_none());
        assert!(slots.has_room(0));
    }
}
