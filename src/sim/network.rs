//! The simulated network: a priority queue of deliveries ordered by time, with the
//! network's faults as plain verbs: `drop`, `duplicate`, `delay` (which also reorders),
//! `replay` (a long-delayed duplicate of an old message), and `partition` / `heal` of the
//! links between replicas.
//!
//! `replay` models what delays and duplicates within a few steps cannot: a message sent
//! long ago, say before its sender crashed, arriving after the sender restarted. The
//! network keeps a bounded sample of past replica-to-replica messages (view-change,
//! recovery and state-transfer messages always, the frequent normal-operation ones
//! rarely) and now and then delivers one again, at most `replay_age_max_steps` after it
//! was first sent.
//!
//! The network is bounded: at most `envelopes_max` messages are in flight, and a message
//! sent past that is dropped (as a congested real network would). Links between clients and
//! replicas are never partitioned; only drops and delays touch them.

use super::prng::Prng;
use crate::protocol::{Body, CheckpointContent, CheckpointPart, Message, ReplicaIndex};
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// An endpoint of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// A replica, by identity (`ReplicaId`: the simulator's replicas have small ones).
    Replica(ReplicaIndex),
    /// A client, by its position in the simulator's client list (`usize::MAX`: the
    /// administrator who asks for reconfigurations).
    Client(usize),
}

/// A message on its way.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// Who sent it.
    pub from: Node,
    /// Who receives it.
    pub to: Node,
    /// What it says.
    pub message: Message,
}

/// How the network mistreats messages. Probabilities are in parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkFaults {
    /// Chance that a message is lost.
    pub drop_ppm: u32,
    /// Chance that a message is delivered twice (each copy with its own delay).
    pub duplicate_ppm: u32,
    /// The shortest delay, in steps (at least 1: nothing arrives in the step it is sent).
    pub delay_min_steps: u64,
    /// The longest ordinary delay, in steps.
    pub delay_max_steps: u64,
    /// Chance that a message takes a long delay instead, overtaken by later ones.
    pub delay_long_ppm: u32,
    /// The longest such delay, in steps.
    pub delay_long_max_steps: u64,
    /// Chance, per message sent, that an old message from the sample is delivered again.
    pub replay_ppm: u32,
    /// The oldest a replayed message may be, in steps since it was first sent.
    pub replay_age_max_steps: u64,
    /// Chance that a message carrying checkpoint pages arrives with one page's bytes
    /// changed: a replica that serves a corrupted page (its memory or disk went bad; the
    /// frame's checksums are computed over what it sends). The receiver must find it by
    /// the page's digest and fetch the page again.
    pub corrupt_page_ppm: u32,
}

impl NetworkFaults {
    /// A well-behaved network: short delays, nothing lost or doubled.
    pub fn calm() -> NetworkFaults {
        NetworkFaults {
            drop_ppm: 0,
            duplicate_ppm: 0,
            delay_min_steps: 1,
            delay_max_steps: 3,
            delay_long_ppm: 0,
            delay_long_max_steps: 3,
            replay_ppm: 0,
            replay_age_max_steps: 0,
            corrupt_page_ppm: 0,
        }
    }
}

/// What the network did, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkCounts {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages handed to their receiver.
    pub delivered: u64,
    /// Messages lost at random.
    pub dropped: u64,
    /// Messages lost to a partition (or to a crashed receiver).
    pub blocked: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Messages given a long delay.
    pub delayed: u64,
    /// Messages lost because too many were in flight.
    pub overflowed: u64,
    /// Old messages delivered again (`replay`).
    pub replayed: u64,
    /// Messages held back for a later replay only (`hold`).
    pub held: u64,
    /// Checkpoint pages corrupted on their way (`corrupt_page`).
    pub pages_corrupted: u64,
}

/// Messages kept for `replay` at most.
const REPLAY_SAMPLE_MAX: usize = 64;

/// A queued delivery. The envelope itself waits in a slot of `Network::slots`, so that the
/// heap moves 24 bytes per sift instead of a whole message.
struct Pending {
    deliver_at: u64,
    sequence: u64,
    slot: u32,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Pending) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Pending) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    /// Reversed, so that the max-heap pops the earliest delivery; ties go in send order,
    /// which keeps a run deterministic.
    fn cmp(&self, other: &Pending) -> Ordering {
        (other.deliver_at, other.sequence).cmp(&(self.deliver_at, self.sequence))
    }
}

/// The network between `replica_count` replicas and any number of clients.
pub struct Network {
    replica_count: usize,
    /// `blocked[from * replica_count + to]`: messages from replica `from` to `to` are lost.
    blocked: Vec<bool>,
    queue: BinaryHeap<Pending>,
    /// Envelopes in flight, by slot; `free` lists the empty slots.
    slots: Vec<Option<Envelope>>,
    free: Vec<u32>,
    sequence: u64,
    envelopes_max: usize,
    /// Past replica-to-replica messages that `replay` may deliver again, with the step
    /// each was first sent at; at most `REPLAY_SAMPLE_MAX`.
    replay_sample: Vec<(u64, Envelope)>,
    /// The current fault rates.
    pub faults: NetworkFaults,
    /// What happened so far.
    pub counts: NetworkCounts,
    /// Log every fault the network injects to stderr.
    pub trace: bool,
}

impl Network {
    /// A network with no partitions and the given fault rates.
    pub fn new(replica_count: usize, faults: NetworkFaults, envelopes_max: usize) -> Network {
        assert!(replica_count > 0);
        assert!(envelopes_max > 0);
        Network {
            replica_count,
            blocked: vec![false; replica_count * replica_count],
            queue: BinaryHeap::with_capacity(envelopes_max),
            slots: Vec::new(),
            free: Vec::new(),
            sequence: 0,
            envelopes_max,
            replay_sample: Vec::with_capacity(REPLAY_SAMPLE_MAX),
            faults,
            counts: NetworkCounts::default(),
            trace: false,
        }
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Sends a message at step `now`, subject to the fault rates: it may be dropped,
    /// duplicated, and is always delayed. Partitions are applied at delivery time, so that
    /// a partition also catches messages already in flight.
    pub fn send(&mut self, prng: &mut Prng, now: u64, from: Node, to: Node, message: Message) {
        self.counts.sent += 1;
        let envelope = Envelope { from, to, message };
        if prng.chance(self.faults.replay_ppm) {
            self.replay(prng, now);
        }
        self.keep_for_replay(prng, now, &envelope);
        if prng.chance(self.faults.drop_ppm) {
            return self.drop(now, envelope);
        }
        if prng.chance(self.faults.duplicate_ppm) {
            self.duplicate(prng, now, &envelope);
        }
        let envelope = self.corrupt_page(prng, now, envelope);
        self.delay(prng, now, envelope);
    }

    /// `corrupt_page`: one byte of one checkpoint page changes (or one is added to an
    /// empty page), as a source with bad memory would send it.
    fn corrupt_page(&mut self, prng: &mut Prng, now: u64, mut envelope: Envelope) -> Envelope {
        let Body::CheckpointPart(CheckpointPart {
            content: CheckpointContent::Pages(pages),
            ..
        }) = &mut envelope.message.body
        else {
            return envelope;
        };
        if pages.is_empty() || !prng.chance(self.faults.corrupt_page_ppm) {
            return envelope;
        }
        let which = prng.below(pages.len() as u64) as usize;
        let mut bytes = pages[which].1.to_vec();
        match bytes.len() {
            0 => bytes.push(prng.below(256) as u8),
            len => bytes[prng.below(len as u64) as usize] ^= 1 + prng.below(255) as u8,
        }
        pages[which].1 = Bytes::from(bytes);
        self.counts.pages_corrupted += 1;
        self.log(now, "corrupt_page", &envelope);
        envelope
    }

    /// `drop`: the message is lost.
    fn drop(&mut self, now: u64, envelope: Envelope) {
        self.counts.dropped += 1;
        self.log(now, "drop", &envelope);
    }

    /// `duplicate`: a second copy travels with its own delay.
    fn duplicate(&mut self, prng: &mut Prng, now: u64, envelope: &Envelope) {
        self.counts.duplicated += 1;
        self.log(now, "duplicate", envelope);
        self.delay(prng, now, envelope.clone());
    }

    /// Maybe keeps a copy of a replica-to-replica message for a later `replay`,
    /// overwriting a random older one when the sample is full.
    fn keep_for_replay(&mut self, prng: &mut Prng, now: u64, envelope: &Envelope) {
        if self.faults.replay_ppm == 0 {
            return;
        }
        if !matches!(
            (envelope.from, envelope.to),
            (Node::Replica(_), Node::Replica(_))
        ) {
            return; // Clients retry by themselves; their old requests are not the concern.
        }
        // The messages that decide views, recoveries and transfers are rare and matter
        // most when stale; Prepares, PrepareOks and Commits would crowd them out.
        let keep_ppm = match envelope.message.body {
            Body::DoViewChange(_) | Body::StartView(_) | Body::RecoveryResponse(_) => 1_000_000,
            Body::StartViewChange(_) | Body::Recovery(_) => 300_000,
            Body::GetState(_) | Body::NewState(_) => 50_000,
            _ => 10_000,
        };
        if !prng.chance(keep_ppm) {
            return;
        }
        self.keep(prng, now, envelope.clone());
    }

    /// Puts an envelope in the replay sample, overwriting a random one when full.
    fn keep(&mut self, prng: &mut Prng, now: u64, envelope: Envelope) {
        let kept = (now, envelope);
        if self.replay_sample.len() < REPLAY_SAMPLE_MAX {
            self.replay_sample.push(kept);
        } else {
            let slot = prng.below(REPLAY_SAMPLE_MAX as u64) as usize;
            self.replay_sample[slot] = kept;
        }
    }

    /// `hold`: sends a message that is not delivered now but only kept for a later
    /// `replay`, as if delayed beyond anything ordinary (past its sender's restart, say).
    pub fn hold(&mut self, prng: &mut Prng, now: u64, from: Node, to: Node, message: Message) {
        self.counts.sent += 1;
        self.counts.held += 1;
        let envelope = Envelope { from, to, message };
        self.log(now, "hold", &envelope);
        self.keep(prng, now, envelope);
    }

    /// `replay`: delivers a random kept message again, as a duplicate delayed far beyond
    /// the ordinary delays; one older than `replay_age_max_steps` is forgotten instead.
    pub fn replay(&mut self, prng: &mut Prng, now: u64) {
        self.replay_where(prng, now, |_| true);
    }

    /// `replay` of a random kept message for which `wanted` holds (if any): for instance
    /// one addressed to a replica that just entered a view change, for that very view.
    pub fn replay_where(&mut self, prng: &mut Prng, now: u64, wanted: impl Fn(&Envelope) -> bool) {
        let candidates: Vec<usize> = (0..self.replay_sample.len())
            .filter(|&slot| wanted(&self.replay_sample[slot].1))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let slot = candidates[prng.below(candidates.len() as u64) as usize];
        let (sent_at, _) = self.replay_sample[slot];
        if now.saturating_sub(sent_at) > self.faults.replay_age_max_steps {
            self.replay_sample.swap_remove(slot);
            return;
        }
        let envelope = self.replay_sample[slot].1.clone();
        self.counts.replayed += 1;
        self.log(now, "replay", &envelope);
        self.delay(prng, now, envelope);
    }

    /// `delay`: queues an envelope for delivery after a random delay, sometimes a long one
    /// that lets later messages overtake it.
    fn delay(&mut self, prng: &mut Prng, now: u64, envelope: Envelope) {
        if self.queue.len() >= self.envelopes_max {
            self.counts.overflowed += 1;
            return;
        }
        let faults = self.faults;
        let delay_steps = if prng.chance(faults.delay_long_ppm) {
            self.counts.delayed += 1;
            self.log(now, "delay", &envelope);
            prng.between(
                faults.delay_max_steps,
                faults.delay_long_max_steps.max(faults.delay_max_steps),
            )
        } else {
            prng.between(faults.delay_min_steps, faults.delay_max_steps)
        };
        self.sequence += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(envelope);
                slot
            }
            None => {
                self.slots.push(Some(envelope));
                self.slots.len() as u32 - 1
            }
        };
        self.queue.push(Pending {
            deliver_at: now + delay_steps.max(1),
            sequence: self.sequence,
            slot,
        });
    }

    /// The next envelope due at or before `now` whose link is open; envelopes on blocked
    /// links are dropped on the way.
    pub fn pop_due(&mut self, now: u64) -> Option<Envelope> {
        loop {
            if self.queue.peek()?.deliver_at > now {
                return None;
            }
            let slot = self.queue.pop().expect("peeked").slot;
            let envelope = self.slots[slot as usize]
                .take()
                .expect("a queued slot is full");
            self.free.push(slot);
            if self.link_blocked(envelope.from, envelope.to) {
                self.counts.blocked += 1;
                self.log(now, "partition drops", &envelope);
                continue;
            }
            self.counts.delivered += 1;
            return Some(envelope);
        }
    }

    fn log(&self, now: u64, verb: &str, envelope: &Envelope) {
        if self.trace {
            let Envelope { from, to, message } = envelope;
            eprintln!(
                "step {now}: {verb} {from:?} -> {to:?} {} view {}",
                message.body.name(),
                message.view
            );
        }
    }

    /// Makes room for replicas up to `replica_count` (members added by a
    /// reconfiguration), keeping every cut link.
    pub fn grow(&mut self, replica_count: usize) {
        if replica_count <= self.replica_count {
            return;
        }
        let mut blocked = vec![false; replica_count * replica_count];
        for from in 0..self.replica_count {
            for to in 0..self.replica_count {
                blocked[from * replica_count + to] = self.blocked[from * self.replica_count + to];
            }
        }
        self.blocked = blocked;
        self.replica_count = replica_count;
    }

    /// Whether messages from `from` to `to` are currently lost.
    pub fn link_blocked(&self, from: Node, to: Node) -> bool {
        match (from, to) {
            (Node::Replica(a), Node::Replica(b))
                if (a as usize) < self.replica_count && (b as usize) < self.replica_count =>
            {
                self.blocked[a as usize * self.replica_count + b as usize]
            }
            _ => false,
        }
    }

    /// Blocks (or unblocks) the one-way link from replica `from` to replica `to`.
    pub fn set_link(&mut self, from: ReplicaIndex, to: ReplicaIndex, blocked: bool) {
        assert!((from as usize) < self.replica_count && (to as usize) < self.replica_count);
        self.blocked[from as usize * self.replica_count + to as usize] = blocked;
    }

    /// Symmetric partition: cuts every link between `group` and the other replicas.
    pub fn partition(&mut self, group: &[ReplicaIndex]) {
        for a in 0..self.replica_count as ReplicaIndex {
            for b in 0..self.replica_count as ReplicaIndex {
                if group.contains(&a) != group.contains(&b) {
                    self.set_link(a, b, true);
                }
            }
        }
    }

    /// Asymmetric partition: `group` can no longer send to the other replicas, but still
    /// hears them.
    pub fn partition_outbound(&mut self, group: &[ReplicaIndex]) {
        for &a in group {
            for b in 0..self.replica_count as ReplicaIndex {
                if !group.contains(&b) {
                    self.set_link(a, b, true);
                }
            }
        }
    }

    /// The cut links (`[from * replica_count + to]`), to cut the same again later.
    pub fn cut_links(&self) -> Vec<bool> {
        self.blocked.clone()
    }

    /// Cuts exactly the links of a [`Network::cut_links`] (and no others).
    /// Cut while the network was smaller (before a reconfiguration added replicas),
    /// they are the same links among the replicas there were then.
    pub fn set_cut_links(&mut self, blocked: &[bool]) {
        let then = blocked.len().isqrt();
        assert!(then * then == blocked.len() && then <= self.replica_count);
        self.heal();
        for from in 0..then {
            for to in 0..then {
                self.blocked[from * self.replica_count + to] = blocked[from * then + to];
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.blocked.iter_mut().for_each(|blocked| *blocked = false);
    }

    /// Whether any link is cut.
    pub fn partitioned(&self) -> bool {
        self.blocked.iter().any(|&blocked| blocked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Commit, DoViewChange};

    fn commit(n: u64) -> Message {
        Message {
            epoch: 0,
            view: 0,
            replica: 0,
            body: Body::Commit(Commit {
                commit: n,
                actives_commit: 0,
                stamp: 0,
            }),
        }
    }

    fn drain(network: &mut Network, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(envelope) = network.pop_due(now) {
            let Body::Commit(c) = envelope.message.body else {
                panic!()
            };
            out.push(c.commit);
        }
        out
    }

    #[test]
    fn delivers_in_time_order_then_send_order() {
        let mut prng = Prng::new(1);
        let faults = NetworkFaults {
            delay_min_steps: 1,
            delay_max_steps: 1,
            ..NetworkFaults::calm()
        };
        let mut network = Network::new(3, faults, 64);
        for n in 0..5 {
            network.send(&mut prng, 10, Node::Replica(0), Node::Replica(1), commit(n));
        }
        assert!(
            drain(&mut network, 10).is_empty(),
            "nothing arrives in the step it is sent"
        );
        assert_eq!(drain(&mut network, 11), vec![0, 1, 2, 3, 4]);
        assert_eq!(network.counts.delivered, 5);
    }

    #[test]
    fn long_delays_reorder() {
        let mut prng = Prng::new(2);
        let faults = NetworkFaults {
            delay_long_ppm: 500_000,
            delay_long_max_steps: 50,
            ..NetworkFaults::calm()
        };
        let mut network = Network::new(3, faults, 1024);
        for n in 0..200 {
            network.send(&mut prng, 0, Node::Replica(0), Node::Replica(1), commit(n));
        }
        let got = drain(&mut network, 100);
        assert_eq!(got.len(), 200);
        assert!(
            got.windows(2).any(|w| w[0] > w[1]),
            "some message overtakes another"
        );
        assert!(network.counts.delayed > 0);
    }

    #[test]
    fn drops_and_duplicates_at_their_rates() {
        let mut prng = Prng::new(3);
        let faults = NetworkFaults {
            drop_ppm: 200_000,
            duplicate_ppm: 100_000,
            ..NetworkFaults::calm()
        };
        let mut network = Network::new(3, faults, 100_000);
        for n in 0..10_000 {
            network.send(&mut prng, 0, Node::Client(0), Node::Replica(1), commit(n));
        }
        let got = drain(&mut network, 10).len() as u64;
        assert_eq!(
            got,
            10_000 - network.counts.dropped + network.counts.duplicated
        );
        assert!((1_700..2_300).contains(&network.counts.dropped));
        assert!((600..1_000).contains(&network.counts.duplicated));
    }

    #[test]
    fn partitions_block_links_until_healed() {
        let mut prng = Prng::new(4);
        let mut network = Network::new(3, NetworkFaults::calm(), 64);
        network.partition(&[0]);
        assert!(network.link_blocked(Node::Replica(0), Node::Replica(1)));
        assert!(network.link_blocked(Node::Replica(2), Node::Replica(0)));
        assert!(!network.link_blocked(Node::Replica(1), Node::Replica(2)));
        assert!(!network.link_blocked(Node::Client(0), Node::Replica(0)));
        network.send(&mut prng, 0, Node::Replica(0), Node::Replica(1), commit(1));
        network.send(&mut prng, 0, Node::Replica(1), Node::Replica(2), commit(2));
        assert_eq!(drain(&mut network, 5), vec![2]);
        assert_eq!(network.counts.blocked, 1);
        network.heal();
        assert!(!network.partitioned());
        network.partition_outbound(&[2]);
        assert!(network.link_blocked(Node::Replica(2), Node::Replica(1)));
        assert!(!network.link_blocked(Node::Replica(1), Node::Replica(2)));
    }

    #[test]
    fn replay_delivers_old_replica_messages_within_the_age_bound() {
        let mut prng = Prng::new(6);
        let faults = NetworkFaults {
            replay_ppm: 1,
            replay_age_max_steps: 100,
            ..NetworkFaults::calm()
        };
        let mut network = Network::new(3, faults, 1024);
        // DoViewChanges are always kept (Commits only rarely).
        let dvc = Message {
            body: Body::DoViewChange(DoViewChange {
                last_normal_view: 0,
                op: 0,
                commit: 0,
                actives_commit: 0,
                entries: Vec::new(),
            }),
            ..commit(0)
        };
        network.send(&mut prng, 0, Node::Replica(0), Node::Replica(1), dvc);
        network.send(&mut prng, 0, Node::Client(0), Node::Replica(1), commit(7));
        while network.pop_due(10).is_some() {}
        network.replay(&mut prng, 50);
        let replayed = network.pop_due(60).expect("a replay within the age bound");
        assert_eq!(
            replayed.from,
            Node::Replica(0),
            "client messages are not kept"
        );
        assert!(matches!(replayed.message.body, Body::DoViewChange(_)));
        network.replay(&mut prng, 200);
        assert!(network.pop_due(300).is_none(), "too old: forgotten instead");
        assert_eq!(network.counts.replayed, 1);
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut prng = Prng::new(5);
        let mut network = Network::new(3, NetworkFaults::calm(), 4);
        for n in 0..10 {
            network.send(&mut prng, 0, Node::Replica(0), Node::Replica(1), commit(n));
        }
        assert_eq!(network.in_flight(), 4);
        assert_eq!(network.counts.overflowed, 6);
    }
}
