//! The peer table: our outbound link to each other replica, keyed by replica index, and
//! when to dial it. Pure bookkeeping (no sockets): the event loop's `dial` module opens the
//! connections and tells the table what happened.
//!
//! Each replica dials every other replica and sends on that link only; what a peer sends
//! us arrives on the link it dialled. So each direction has one owner and no connection
//! race needs resolving.
//!
//! The table grows and shrinks ([`Peers::add`], [`Peers::remove`]): reconfiguration (paper
//! section 7) will add the members of a new epoch and drop the old ones. Our own index is
//! never in it.

use crate::protocol::ReplicaIndex;
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

/// Our links to the other replicas, by replica index.
#[derive(Debug)]
pub struct Peers {
    own: ReplicaIndex,
    /// Indexed by replica index; `None` for our own index and for non-members.
    links: Vec<Option<PeerLink>>,
}

impl Peers {
    /// A link (not dialled yet, due at once) to every replica in `addresses` but `own`.
    pub fn new(own: ReplicaIndex, addresses: &[SocketAddr], now: Instant) -> Peers {
        assert!((own as usize) < addresses.len(), "our index is a member");
        let mut peers = Peers {
            own,
            links: Vec::with_capacity(addresses.len()),
        };
        for (index, address) in addresses.iter().enumerate() {
            if index != own as usize {
                peers.add(index as ReplicaIndex, *address, now);
            }
        }
        peers
    }

    /// Adds replica `index` at `address`, to be dialled at once.
    pub fn add(&mut self, index: ReplicaIndex, address: SocketAddr, now: Instant) {
        assert_ne!(index, self.own, "we never link to ourselves");
        assert!(!self.contains(index), "replica {index} is a peer already");
        let slot = index as usize;
        if self.links.len() <= slot {
            self.links.resize_with(slot + 1, || None);
        }
        self.links[slot] = Some(PeerLink {
            address,
            token: None,
            next_attempt: now,
            backoff: RECONNECT_BACKOFF_MIN,
            on_demand_after: now,
        });
    }

    /// Removes replica `index`; returns its link's connection, which the caller closes.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "reconfiguration (paper 7) will remove old members"
        )
    )]
    pub fn remove(&mut self, index: ReplicaIndex) -> Option<usize> {
        let link = self.links.get_mut(index as usize)?.take()?;
        while self.links.last().is_some_and(Option::is_none) {
            self.links.pop();
        }
        link.token
    }

    /// Whether replica `index` is a peer.
    pub fn contains(&self, index: ReplicaIndex) -> bool {
        self.link(index).is_some()
    }

    /// One past the largest peer index: `0..bound()` covers every peer (a loop that dials
    /// as it goes cannot hold the iterator of [`Peers::indices`]).
    pub fn bound(&self) -> ReplicaIndex {
        self.links.len() as ReplicaIndex
    }

    /// The connection of our link to `index`, if there is one.
    pub fn token(&self, index: ReplicaIndex) -> Option<usize> {
        self.link(index).and_then(|link| link.token)
    }

    /// The peer whose link is connection `token`.
    pub fn by_token(&self, token: usize) -> Option<ReplicaIndex> {
        self.links
            .iter()
            .position(|link| link.as_ref().is_some_and(|l| l.token == Some(token)))
            .map(|index| index as ReplicaIndex)
    }

    /// Every peer's link connection (`None`: not dialled), for a check over all links.
    pub fn tokens(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.links.iter().flatten().map(|link| link.token)
    }

    /// The address to redial `index` at, if it has no link and its backoff expired at `now`.
    pub fn due(&self, index: ReplicaIndex, now: Instant) -> Option<SocketAddr> {
        let link = self.link(index)?;
        (link.token.is_none() && now >= link.next_attempt).then_some(link.address)
    }

    /// The earliest scheduled redial of a missing link (for the poll timeout).
    pub fn next_attempt(&self) -> Option<Instant> {
        self.links
            .iter()
            .flatten()
            .filter(|link| link.token.is_none())
            .map(|link| link.next_attempt)
            .min()
    }

    /// The address to dial now because a message for `index` found no link, if the
    /// on-demand interval allows it (noting the attempt).
    pub fn dial_on_demand(&mut self, index: ReplicaIndex, now: Instant) -> Option<SocketAddr> {
        let link = self.link_mut(index)?;
        if link.token.is_some() || now < link.on_demand_after {
            return None;
        }
        link.on_demand_after = now + ON_DEMAND_INTERVAL;
        Some(link.address)
    }

    /// Our link to `index` is connection `token` from now on.
    pub fn on_dialled(&mut self, index: ReplicaIndex, token: usize) {
        let link = self.link_mut(index).expect("dialled peers are members");
        assert!(link.token.is_none(), "one link per peer");
        link.token = Some(token);
    }

    /// The link to `index` failed or closed: redial after the backoff, which doubles.
    pub fn on_lost(&mut self, index: ReplicaIndex, now: Instant) {
        let Some(link) = self.link_mut(index) else {
            return;
        };
        link.token = None;
        link.next_attempt = now + link.backoff;
        link.backoff = (link.backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }

    /// `index` welcomed our link: the next loss redials quickly again.
    pub fn on_welcomed(&mut self, index: ReplicaIndex) {
        if let Some(link) = self.link_mut(index) {
            link.backoff = RECONNECT_BACKOFF_MIN;
        }
    }

    /// `index` refused our link for its configuration: do not dial again for a while.
    pub fn on_refused(&mut self, index: ReplicaIndex) {
        if let Some(link) = self.link_mut(index) {
            link.backoff = link.backoff.max(REFUSED_BACKOFF);
        }
    }

    fn link(&self, index: ReplicaIndex) -> Option<&PeerLink> {
        self.links.get(index as usize).and_then(Option::as_ref)
    }

    fn link_mut(&mut self, index: ReplicaIndex) -> Option<&mut PeerLink> {
        self.links.get_mut(index as usize).and_then(Option::as_mut)
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

    fn indices(peers: &Peers) -> Vec<ReplicaIndex> {
        (0..peers.bound())
            .filter(|&index| peers.contains(index))
            .collect()
    }

    fn due(peers: &Peers, now: Instant) -> Vec<(ReplicaIndex, SocketAddr)> {
        (0..peers.bound())
            .filter_map(|index| Some((index, peers.due(index, now)?)))
            .collect()
    }

    #[test]
    fn every_member_but_us_is_a_peer_due_at_once() {
        let now = Instant::now();
        let peers = Peers::new(1, &addresses(3), now);
        assert_eq!(indices(&peers), [0, 2]);
        assert!(!peers.contains(1));
        let due = due(&peers, now);
        assert_eq!(due, [(0, addresses(3)[0]), (2, addresses(3)[2])]);
        assert_eq!(peers.next_attempt(), Some(now));
    }

    #[test]
    fn peers_are_added_and_removed_by_index() {
        let now = Instant::now();
        let mut peers = Peers::new(0, &addresses(3), now);
        let new = SocketAddr::from(([127, 0, 0, 1], 8004));
        peers.add(4, new, now);
        assert_eq!(indices(&peers), [1, 2, 4]);
        assert_eq!(peers.bound(), 5);
        assert!(!peers.contains(3));
        assert_eq!(peers.dial_on_demand(4, now), Some(new));

        peers.on_dialled(4, 9);
        assert_eq!(peers.by_token(9), Some(4));
        assert_eq!(peers.remove(4), Some(9), "the caller closes the link");
        assert_eq!(peers.by_token(9), None);
        assert_eq!(indices(&peers), [1, 2]);
        assert_eq!(peers.bound(), 3, "the table shrinks");
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
        let mut peers = Peers::new(0, &addresses(3), now);
        peers.add(1, addresses(3)[1], now);
    }

    #[test]
    #[should_panic(expected = "never link to ourselves")]
    fn we_are_never_our_own_peer() {
        let now = Instant::now();
        let mut peers = Peers::new(0, &addresses(3), now);
        peers.add(0, addresses(3)[0], now);
    }

    #[test]
    fn a_lost_link_is_redialled_after_a_doubling_backoff() {
        let now = Instant::now();
        let mut peers = Peers::new(0, &addresses(2), now);
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
        let mut peers = Peers::new(0, &addresses(2), now);
        peers.on_dialled(1, 3);
        peers.on_refused(1);
        peers.on_lost(1, now);
        assert_eq!(peers.next_attempt(), Some(now + REFUSED_BACKOFF));
    }

    #[test]
    fn on_demand_dials_are_limited_to_one_per_interval() {
        let now = Instant::now();
        let mut peers = Peers::new(0, &addresses(2), now);
        assert_eq!(peers.dial_on_demand(1, now), Some(addresses(2)[1]));
        assert_eq!(peers.dial_on_demand(1, now), None);
        let later = now + ON_DEMAND_INTERVAL;
        assert_eq!(peers.dial_on_demand(1, later), Some(addresses(2)[1]));
        peers.on_dialled(1, 5);
        let much_later = later + ON_DEMAND_INTERVAL;
        assert_eq!(peers.dial_on_demand(1, much_later), None, "linked already");
        assert_eq!(peers.dial_on_demand(2, much_later), None, "not a peer");
    }
}
