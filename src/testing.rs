//! A fault-free in-memory cluster: replicas in one thread exchanging messages through
//! FIFO queues. Benches use it to measure the protocol core alone, and smoke and
//! reconfiguration tests use it to drive the protocol step by step; the fault-injecting
//! simulator lives in `sim`.
//!
//! Replicas are kept by identity (`ReplicaId`): in the initial configuration identity
//! and index are the same, and members added by a reconfiguration take the next
//! identities ([`MemoryCluster::add_joining`]).

pub mod forge;

use crate::client::{ClientSession, Outcome, Target};
use crate::config::Config;
use crate::protocol::client_table::RouteToken;
use crate::protocol::{
    CheckpointBuild, ClientId, Effect, Message, Replica, ReplicaId, ReplicaIndex, Start, Stored,
    StoredWrite,
};
use crate::service::StateMachine;
use bytes::Bytes;
use std::collections::VecDeque;

/// Decides whether a message from one replica to another is lost: `(from, to, message)`.
pub type DropFilter = Box<dyn FnMut(ReplicaId, ReplicaId, &Message) -> bool>;

/// Replicas connected by perfect FIFO links, and the replies addressed to clients.
pub struct MemoryCluster<S> {
    /// The replicas, by identity.
    pub replicas: Vec<Replica<S>>,
    /// Replicas that are down (crashed, or retired and shut down): they take no input and
    /// messages to them are lost.
    pub down: Vec<bool>,
    /// Messages in flight: (from, to, message); `from` is `None` for clients.
    queue: VecDeque<(Option<ReplicaId>, ReplicaId, Message)>,
    /// Replies delivered to clients, in order.
    pub replies: VecDeque<(ClientId, Message)>,
    /// Loses the messages it returns true for.
    pub drop_filter: Option<DropFilter>,
    /// With [`MemoryCluster::keep_stores`]: per replica, what its writes made durable
    /// (every write completes at once), for a restart from storage (`Start::Restart`).
    pub stores: Option<Vec<Stored>>,
    /// With [`MemoryCluster::defer_builds`]: the checkpoint builds asked for and not run
    /// yet, by replica; otherwise every build runs as soon as it is asked for.
    pub builds: Option<Vec<(ReplicaId, CheckpointBuild)>>,
    /// Per replica: whether its disk is stalled ([`MemoryCluster::stall_writes`]): its
    /// writes wait, captured, until [`MemoryCluster::release_writes`].
    stalled: Vec<bool>,
    /// The captured writes of stalled replicas, not yet in their stores.
    pending: Vec<Vec<StoredWrite>>,
    effects: Vec<Effect>,
}

impl<S: StateMachine> MemoryCluster<S> {
    /// A fresh cluster of `config.replica_count` replicas built by `service(index)`.
    pub fn new(config: &Config, mut service: impl FnMut(ReplicaIndex) -> S) -> MemoryCluster<S> {
        let replicas = (0..config.replica_count)
            .map(|index| Replica::new(config.clone(), index, service(index), Start::Fresh))
            .collect();
        let down = vec![false; config.replica_count as usize];
        MemoryCluster {
            replicas,
            down,
            queue: VecDeque::new(),
            replies: VecDeque::new(),
            drop_filter: None,
            stores: None,
            builds: None,
            stalled: vec![false; config.replica_count as usize],
            pending: vec![Vec::new(); config.replica_count as usize],
            effects: Vec::new(),
        }
    }

    /// Stalls replica `id`'s disk: from now on its writes do not complete (so nothing it
    /// holds back until they do leaves), as a storage thread stuck behind a large file
    /// would. With stores kept, what they would write is captured; a crash of the replica
    /// (`forget_pending_writes`) loses it, [`MemoryCluster::release_writes`] completes it.
    pub fn stall_writes(&mut self, id: ReplicaId) {
        self.stalled[id as usize] = true;
    }

    /// Ends a stall: the captured writes reach the store and complete.
    pub fn release_writes(&mut self, id: ReplicaId) {
        self.stalled[id as usize] = false;
        if let Some(stores) = &mut self.stores {
            for write in self.pending[id as usize].drain(..) {
                stores[id as usize]
                    .apply(write)
                    .expect("a correct replica's writes fold");
            }
        }
        let mut effects = Vec::new();
        self.route(id, &mut effects);
    }

    /// What a crash of a stalled replica loses: the writes it captured.
    pub fn forget_pending_writes(&mut self, id: ReplicaId) {
        self.stalled[id as usize] = false;
        self.pending[id as usize].clear();
    }

    /// Keeps checkpoint builds in [`MemoryCluster::builds`] until
    /// [`MemoryCluster::run_builds`] runs them, as a busy worker thread would.
    pub fn defer_builds(&mut self) {
        self.builds = Some(Vec::new());
    }

    /// Marks the deferred builds of replica `id` taken by a worker that has not finished
    /// them ([`CheckpointBuild::start`]): a primary then holds ordering before the op at
    /// which it would wait for them, until [`MemoryCluster::run_builds`].
    pub fn start_builds(&mut self, id: ReplicaId) {
        let builds = self.builds.as_ref().expect("builds are deferred");
        for (_, build) in builds.iter().filter(|(of, _)| *of == id) {
            build.start();
        }
    }

    /// Runs the deferred builds of replica `id` and tells it; returns how many it still
    /// wanted.
    pub fn run_builds(&mut self, id: ReplicaId) -> usize {
        let builds = self.builds.as_mut().expect("builds are deferred");
        let (theirs, others) = std::mem::take(builds)
            .into_iter()
            .partition(|(of, _)| *of == id);
        *builds = others;
        let wanted = theirs.iter().filter(|(_, build)| build.run()).count();
        if wanted > 0 && !self.down[id as usize] {
            let mut effects = Vec::new();
            self.replicas[id as usize].on_checkpoint_built(&mut effects);
            self.route(id, &mut effects);
        }
        wanted
    }

    /// Keeps every replica's writes in a store from now on (call it before any input:
    /// the stores start empty), folded as a driver with durable storage folds them.
    pub fn keep_stores(&mut self) {
        self.stores = Some(vec![Stored::default(); self.replicas.len()]);
    }

    /// Adds a replica that joins a later configuration (`Start::Join`) under the next
    /// identity, warming up from the newest configuration any replica knows, and returns
    /// that identity.
    pub fn add_joining(&mut self, service: S) -> ReplicaId {
        let id = self.replicas.len() as ReplicaId;
        let newest = self
            .replicas
            .iter()
            .map(|replica| replica.configuration())
            .max_by_key(|configuration| configuration.epoch())
            .expect("a cluster has replicas")
            .clone();
        let replica = Replica::in_configuration(
            self.replicas[0].config().clone(),
            newest,
            id,
            service,
            Start::Join { id },
        );
        self.replicas.push(replica);
        self.down.push(false);
        self.stalled.push(false);
        self.pending.push(Vec::new());
        if let Some(stores) = &mut self.stores {
            stores.push(Stored::default());
        }
        id
    }

    /// Hands `message` to replica `to` and queues what it emits (nothing if it is down).
    pub fn deliver(&mut self, to: ReplicaId, message: Message) {
        if self.down[to as usize] {
            return;
        }
        let mut effects = std::mem::take(&mut self.effects);
        // A client's request carries a route token, as the runtime's do: its client id.
        let route = match &message.body {
            crate::protocol::Body::Request(request) => Some(RouteToken(request.client)),
            _ => None,
        };
        self.replicas[to as usize].on_client_request(message, route, &mut effects);
        self.route(to, &mut effects);
        self.effects = effects;
    }

    /// Ends a batch on every replica that is up (the event loop's end of iteration).
    pub fn flush(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        for id in 0..self.replicas.len() {
            if !self.down[id] {
                self.replicas[id].flush(&mut effects);
                self.route(id as ReplicaId, &mut effects);
            }
        }
        self.effects = effects;
    }

    /// Ticks every replica that is up once.
    pub fn tick(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        for id in 0..self.replicas.len() {
            if !self.down[id] {
                self.replicas[id].on_tick(&mut effects);
                self.route(id as ReplicaId, &mut effects);
            }
        }
        self.effects = effects;
    }

    fn route(&mut self, from: ReplicaId, effects: &mut Vec<Effect>) {
        // Every write completes at once (in a store too, when kept), unless the
        // replica's disk is stalled: then its writes wait, captured.
        let replica = &mut self.replicas[from as usize];
        let stalled = self.stalled[from as usize];
        if !stalled {
            replica.complete_writes_in_memory(effects);
        }
        if let Some(stores) = &mut self.stores {
            let store = &mut stores[from as usize];
            let pending = &mut self.pending[from as usize];
            let mut wrote = false;
            for effect in effects.iter() {
                if let Effect::Write { write, .. } = effect {
                    let stored = StoredWrite::capture(replica, *write);
                    match stalled {
                        true => pending.push(stored),
                        false => store
                            .apply(stored)
                            .expect("a correct replica's writes fold"),
                    }
                    wrote = true;
                }
            }
            if wrote {
                let commit = StoredWrite::Commit(replica.commit());
                match stalled {
                    true => pending.push(commit),
                    false => store.apply(commit).expect("a commit number folds"),
                }
            }
        }
        let mut built = false;
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, message } => self.queue.push_back((Some(from), to, message)),
                Effect::Broadcast { message, audience } => {
                    let members = replica
                        .configuration_of(message.epoch)
                        .expect("a replica broadcasts in an epoch it knows");
                    for to in members.audience(audience).filter(|&to| to != from) {
                        self.queue.push_back((Some(from), to, message.clone()));
                    }
                }
                Effect::Reply {
                    client,
                    route,
                    message,
                } => {
                    // A token, when there is one, is the one its client's request came with.
                    assert!(route.is_none_or(|route| route == RouteToken(client)));
                    self.replies.push_back((client, message));
                }
                Effect::Write { .. } => {} // Completed above.
                // Kept at once, in the store (if kept): nothing waits for it.
                Effect::KeepPages(keep) => {
                    if let Some(stores) = &mut self.stores {
                        stores[from as usize].fetched.keep(&keep);
                    }
                }
                Effect::BuildCheckpoint { build, .. } => match &mut self.builds {
                    Some(builds) => builds.push((from, build)),
                    // Built at once, as if by a worker that was idle.
                    None => built |= build.run(),
                },
            }
        }
        // A retired replica shuts down (its driver's job).
        if replica.is_retired() {
            self.down[from as usize] = true;
        }
        if built {
            let mut effects = Vec::new();
            self.replicas[from as usize].on_checkpoint_built(&mut effects);
            self.route(from, &mut effects);
        }
    }

    /// Delivers queued messages (flushing after each) until none is left or `steps_max`
    /// were delivered; returns how many were.
    pub fn run(&mut self, steps_max: usize) -> usize {
        let mut steps = 0;
        while steps < steps_max {
            let Some((from, to, message)) = self.queue.pop_front() else {
                break;
            };
            let lost = match (&mut self.drop_filter, from) {
                (Some(filter), Some(from)) => filter(from, to, &message),
                _ => false,
            };
            if !lost && (to as usize) < self.replicas.len() {
                self.deliver(to, message);
                self.flush();
            }
            steps += 1;
        }
        steps
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Delivers the message in flight at `position` (in sending order), twice when
    /// `duplicate`, then flushes: a driver of its own can lose, reorder and duplicate
    /// messages. Returns false when there is none there.
    pub fn deliver_at(&mut self, position: usize, duplicate: bool) -> bool {
        let Some((from, to, message)) = self.queue.remove(position) else {
            return false;
        };
        let lost = match (&mut self.drop_filter, from) {
            (Some(filter), Some(from)) => filter(from, to, &message),
            _ => false,
        };
        if !lost && (to as usize) < self.replicas.len() {
            if duplicate {
                self.deliver(to, message.clone());
            }
            self.deliver(to, message);
            self.flush();
        }
        true
    }

    /// Sends a session's message where it asks (by index in the initial configuration).
    pub fn send_from_client(&mut self, target: Target, message: Message) {
        match target {
            Target::Replica(to) => self.send_to(to as ReplicaId, message),
            Target::All => {
                for to in 0..self.replicas.len() as ReplicaId {
                    self.send_to(to, message.clone());
                }
            }
        }
    }

    /// Queues a client's `message` to the replica with identity `to`.
    pub fn send_to(&mut self, to: ReplicaId, message: Message) {
        self.queue.push_back((None, to, message));
    }

    /// Registers `session`, running the cluster until it is registered.
    pub fn register(&mut self, session: &mut ClientSession) {
        let (target, message) = session.register();
        self.send_from_client(target, message);
        for _ in 0..1000 {
            self.run(10_000);
            while let Some((client, reply)) = self.replies.pop_front() {
                if client == session.client() {
                    if let Some(Outcome::Registered { .. }) = session.on_message(&reply) {
                        return;
                    }
                }
            }
            self.tick();
        }
        panic!("registration did not complete");
    }

    /// Submits `operation` for `session` and runs the cluster (ticking when it goes
    /// quiet) until its result arrives, which it returns; panics if it does not.
    pub fn execute(&mut self, session: &mut ClientSession, operation: Bytes) -> Bytes {
        let (_, target, message) = session.submit(operation).expect("the session is idle");
        self.send_from_client(target, message);
        self.await_result(session)
    }

    /// Runs the cluster (ticking when it goes quiet) until the result of the operation
    /// `session` has in flight arrives, which it returns; panics if it does not.
    pub fn await_result(&mut self, session: &mut ClientSession) -> Bytes {
        for _ in 0..100 {
            self.run(100_000);
            while let Some((_, reply)) = self.replies.pop_front() {
                if let Some(Outcome::Completed { result, .. }) = session.on_message(&reply) {
                    return result;
                }
            }
            self.tick();
        }
        panic!("the operation did not complete");
    }
}
