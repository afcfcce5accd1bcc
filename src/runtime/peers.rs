//! The peer table: our outbound link to each other replica, keyed by replica identity, and
//! when to dial it. Pure bookkeeping (no sockets): the event loop's `dial` module opens the
//! connections and tells the table what happened.
//!
//! Each replica dials every other replica and sends on that link only; what a peer sends
//! us arrives on the link it dialled. So each direction has one owner and no connection
//! race needs resolving. (A replica we do not dial, a learner, is answered on the link it
//! dialled to us.)
//!
//! Identities, not indexes: a replica's index changes with the configuration (paper
//! section 7), its identity never does. The table follows the configurations the core
//! is in ([`Peers::sync`]): the members of the current epoch and of the one before, whose
//! replicas still finish it and serve its state. Our own identity is never in it.

use crate::protocol::ReplicaId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The first wait before redialling a lost link; it doubles up to [`RECONNECT_BACKOFF_MAX`].
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The longest wait between dials of a link that keeps failing.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// After a peer refused our link for its configuration, wait at least this long before
/// dialling again (the backoff never resets on a refused handshake: only a person can fix
/// a configuration).
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(5);
/// Having something to send dials a missing link at once, but at most once per tick.
pub const ON_DEMAND_INTERVAL: Duration = super::clock::TICK;

/// Our outbound link to one other replica.
#[derive(Debug)]
struct PeerLink {
    address: SocketAddr,
    /// The link's connection while it exists (dialling, handshaking or linked).
    token: Option<usize>,
    /// The scheduled redial, when there is no link.
    next_attempt: Instant,
    backoff: Duration,
    /// Having something to send dials at once, ignoring the backoff, but at most once per
    /// `ON_DEMAND_INTERVAL`: a message that finds no link is otherwise lost, and at
    /// start-up, when the processes come up one after another, that would be the first
    /// Recovery's answers.
    on_demand_after: Instant,
}

/// Our links to the other replicas, by identity.
#[derive(Debug)]
pub struct Peers {
    own: ReplicaId,
    links: BTreeMap<ReplicaId, PeerLink>,
}

impl Peers {
    /// A link (not dialled yet, due at once) to every replica in `members` but `own`.
    pub fn new(
        own: ReplicaId,
        members: impl IntoIterator<Item = (ReplicaId, SocketAddr)>,
        now: Instant,
    ) -> Peers {
        let mut peers = Peers {
            own,
            links: BTreeMap::new(),
        };
        for (id, address) in members {
            if id != own {
                peers.add(id, address, now);
            }
        }
        peers
    }

    /// Adds replica `id` at `address`, to be dialled at once.
    pub fn add(&mut self, id: ReplicaId, address: SocketAddr, now: Instant) {
        assert_ne!(id, self.own, "we never link to ourselves");
        assert!(!self.contains(id), "replica {id} is a peer already");
        self.links.insert(
            id,
            PeerLink {
                address,
                token: None,
                next_attempt: now,
                backoff: RECONNECT_BACKOFF_MIN,
                on_demand_after: now,
            },
        );
    }

    /// Removes replica `id`; returns its link's connection, which the caller closes.
    pub fn remove(&mut self, id: ReplicaId) -> Option<usize> {
        self.links.remove(&id)?.token
    }

    /// Makes the table exactly `members` (but us): adds the new ones, removes the others
    /// (and a member whose address changed, added again at its new one). Returns the
    /// connections of removed links, which the caller closes.
    pub fn sync(
        &mut self,
        members: impl IntoIterator<Item = (ReplicaId, SocketAddr)>,
        now: Instant,
    ) -> Vec<usize> {
        let wanted: BTreeMap<ReplicaId, SocketAddr> = members
            .into_iter()
            .filter(|&(id, _)| id != self.own)
            .collect();
        let stale: Vec<ReplicaId> = self
            .links
            .iter()
            .filter(|(id, link)| wanted.get(id) != Some(&link.address))
            .map(|(&id, _)| id)
            .collect();
        let closed = stale.into_iter().filter_map(|id| self.remove(id)).collect();
        for (id, address) in wanted {
            if !self.contains(id) {
                self.add(id, address, now);
            }
        }
        closed
    }

    /// Whether replica `id` is a peer.
    pub fn contains(&self, id: ReplicaId) -> bool {
        self.links.contains_key(&id)
    }

    /// Every peer's identity, in order (a loop that dials as it goes cannot hold the
    /// table's iterator).
    pub fn ids(&self) -> Vec<ReplicaId> {
        self.links.keys().copied().collect()
    }

    /// How many peers there are.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// The connection of our link to `id`, if there is one.
    pub fn token(&self, id: ReplicaId) -> Option<usize> {
        self.links.get(&id).and_then(|link| link.token)
    }

    /// The peer whose link is connection `token`.
    pub fn by_token(&self, token: usize) -> Option<ReplicaId> {
        self.links
            .iter()
            .find(|(_, link)| link.token == Some(token))
            .map(|(&id, _)| id)
    }

    /// Every peer's link connection (`None`: not dialled), for a check over all links.
    pub fn tokens(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.links.values().map(|link| link.token)
    }

    /// The address to redial `id` at, if it has no link and its backoff expired at `now`.
    pub fn due(&self, id: ReplicaId, now: Instant) -> Option<SocketAddr> {
        let link = self.links.get(&id)?;
        (link.token.is_none() && now >= link.next_attempt).then_some(link.address)
    }

    /// The earliest scheduled redial of a missing link (for the poll timeout).
    pub fn next_attempt(&self) -> Option<Instant> {
        self.links
            .values()
            .filter(|link| link.token.is_none())
            .map(|link| link.next_attempt)
            .min()
    }

    /// The address to dial now because a message for `id` found no link, if the
    /// on-demand interval allows it (noting the attempt).
    pub fn dial_on_demand(&mut self, id: ReplicaId, now: Instant) -> Option<SocketAddr> {
        let link = self.links.get_mut(&id)?;
        if link.token.is_some() || now < link.on_demand_after {
            return None;
        }
        link.on_demand_after = now + ON_DEMAND_INTERVAL;
        Some(link.address)
    }

    /// Our link to `id` is connection `token` from now on.
    pub fn on_dialled(&mut self, id: ReplicaId, token: usize) {
        let link = self.links.get_mut(&id).expect("dialled peers are members");
        assert!(link.token.is_none(), "one link per peer");
        link.token = Some(token);
    }

    /// The link to `id` failed or closed: redial after the backoff, which doubles.
    pub fn on_lost(&mut self, id: ReplicaId, now: Instant) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        link.token = None;
        link.next_attempt = now + link.backoff;
        link.backoff = (link.backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }

    /// `id` welcomed our link: the next loss redials quickly again.
    pub fn on_welcomed(&mut self, id: ReplicaId) {
        if let Some(link) = self.links.get_mut(&id) {
            link.backoff = RECONNECT_BACKOFF_MIN;
        }
    }

    /// `id` refused our link for its configuration: do not dial again for a while.
    pub fn on_refused(&mut self, id: ReplicaId) {
        if let Some(link) = self.links.get_mut(&id) {
            link.backoff = link.backoff.max(REFUSED_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(count: u16) -> Vec<SocketAddr> {
        (0..count)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 7000 + i)))
            .collect()
    }

    fn members(count: u16) -> Vec<(ReplicaId, SocketAddr)> {
        addresses(count)
            .into_iter()
            .enumerate()
            .map(|(id, address)| (id as ReplicaId, address))
            .collect()
    }

    fn indices(peers: &Peers) -> Vec<ReplicaId> {
        peers.ids()
    }

    fn due(peers: &Peers, now: Instant) -> Vec<(ReplicaId, SocketAddr)> {
        peers
            .ids()
            .into_iter()
            .filter_map(|id| Some((id, peers.due(id, now)?)))
            .collect()
    }

    #[test]
    fn every_member_but_us_is_a_peer_due_at_once() {
        let now = Instant::now();
        let peers = Peers::new(1, members(3), now);
        assert_eq!(indices(&peers), [0, 2]);
        assert!(!peers.contains(1));
        let due = due(&peers, now);
        assert_eq!(due, [(0, addresses(3)[0]), (2, addresses(3)[2])]);
        assert_eq!(peers.next_attempt(), Some(now));
    }

    #[test]
    fn peers_are_added_and_removed_by_identity() {
        let now = Instant::now();
        let mut peers = Peers::new(0, members(3), now);
        let new = SocketAddr::from(([127, 0, 0, 1], 8004));
        peers.add(4, new, now);
        assert_eq!(indices(&peers), [1, 2, 4]);
        assert_eq!(peers.len(), 3);
        assert!(!peers.contains(3));
        assert_eq!(peers.dial_on_demand(4, now), Some(new));

        peers.on_dialled(4, 9);
        assert_eq!(peers.by_token(9), Some(4));
        assert_eq!(peers.remove(4), Some(9), "the caller closes the link");
        assert_eq!(peers.by_token(9), None);
        assert_eq!(indices(&peers), [1, 2]);
        assert_eq!(peers.len(), 2, "the table shrinks");
        assert_eq!(peers.remove(4), None, "removing twice is harmless");
        assert_eq!(peers.remove(1), None, "an undialled peer has no link");
        assert_eq!(indices(&peers), [2]);

        // A removed peer is forgotten: losing its link or a welcome changes nothing.
        peers.on_lost(4, now);
        peers.on_welcomed(1);
        assert_eq!(peers.dial_on_demand(1, now), None);
        assert_eq!(due(&peers, now).len(), 1);

        peers.add(1, addresses(3)[1], now);
        assert_eq!(indices(&peers), [1, 2]);
    }

    #[test]
    #[should_panic(expected = "a peer already")]
    fn a_peer_is_added_once() {
        let now = Instant::now();
        let mut peers = Peers::new(0, members(3), now);
        peers.add(1, addresses(3)[1], now);
    }

    #[test]
    #[should_panic(expected = "never link to ourselves")]
    fn we_are_never_our_own_peer() {
        let now = Instant::now();
        let mut peers = Peers::new(0, members(3), now);
        peers.add(0, addresses(3)[0], now);
    }

    #[test]
    fn a_lost_link_is_redialled_after_a_doubling_backoff() {
        let now = Instant::now();
        let mut peers = Peers::new(0, members(2), now);
        peers.on_dialled(1, 3);
        assert_eq!(due(&peers, now).len(), 0);
        assert_eq!(peers.next_attempt(), None, "a linked peer is not scheduled");

        peers.on_lost(1, now);
        assert_eq!(peers.token(1), None);
        assert_eq!(peers.next_attempt(), Some(now + RECONNECT_BACKOFF_MIN));
        assert_eq!(due(&peers, now).len(), 0);
        assert_eq!(due(&peers, now + RECONNECT_BACKOFF_MIN).len(), 1);

        peers.on_dialled(1, 3);
        peers.on_lost(1, now);
        assert_eq!(peers.next_attempt(), Some(now + 2 * RECONNECT_BACKOFF_MIN));
        for _ in 0..20 {
            peers.on_dialled(1, 3);
            peers.on_lost(1, now);
        }
        assert_eq!(peers.next_attempt(), Some(now + RECONNECT_BACKOFF_MAX));

        peers.on_welcomed(1);
        peers.on_dialled(1, 3);
        peers.on_lost(1, now);
        assert_eq!(peers.next_attempt(), Some(now + RECONNECT_BACKOFF_MIN));
    }

    #[test]
    fn a_refused_link_waits_at_least_the_refusal_backoff() {
        let now = Instant::now();
        let mut peers = Peers::new(0, members(2), now);
        peers.on_dialled(1, 3);
        peers.on_refused(1);
        peers.on_lost(1, now);
        assert_eq!(peers.next_attempt(), Some(now + REFUSED_BACKOFF));
    }

    #[test]
    fn on_demand_dials_are_limited_to_one_per_interval() {
        let now = Instant::now();
        let mut peers = Peers::new(0, members(2), now);
        assert_eq!(peers.dial_on_demand(1, now), Some(addresses(2)[1]));
        assert_eq!(peers.dial_on_demand(1, now), None);
        let later = now + ON_DEMAND_INTERVAL;
        assert_eq!(peers.dial_on_demand(1, later), Some(addresses(2)[1]));
        peers.on_dialled(1, 5);
        let much_later = later + ON_DEMAND_INTERVAL;
        assert_eq!(peers.dial_on_demand(1, much_later), None, "linked already");
        assert_eq!(peers.dial_on_demand(2, much_later), None, "not a peer");
    }

    #[test]
    fn sync_follows_the_configurations() {
        let now = Instant::now();
        let mut peers = Peers::new(0, members(3), now);
        peers.on_dialled(1, 11);
        peers.on_dialled(2, 12);
        // Epoch 1 keeps 0 and 2, drops 1, adds 5 and 6; 2 moved to another address.
        let moved = SocketAddr::from(([127, 0, 0, 1], 9002));
        let next = vec![
            (0, addresses(3)[0]),
            (2, moved),
            (5, SocketAddr::from(([127, 0, 0, 1], 9005))),
            (6, SocketAddr::from(([127, 0, 0, 1], 9006))),
        ];
        let mut closed = peers.sync(next, now);
        closed.sort_unstable();
        assert_eq!(closed, [11, 12], "the dropped and the moved links close");
        assert_eq!(indices(&peers), [2, 5, 6]);
        assert_eq!(peers.due(2, now), Some(moved));
        assert_eq!(peers.token(2), None);
    }
}
