//! A fault-free in-memory cluster: replicas in one thread exchanging messages through
//! FIFO queues. Benches use it to measure the protocol core alone, and smoke tests use it
//! to drive normal operation; the fault-injecting simulator lives in `sim`.

pub mod forge;

use crate::client::{ClientSession, Outcome, Target};
use crate::config::Config;
use crate::protocol::{ClientId, Effect, Message, Replica, ReplicaIndex, Start};
use crate::service::StateMachine;
use std::collections::VecDeque;

/// Replicas connected by perfect FIFO links, and the replies addressed to clients.
pub struct MemoryCluster<S> {
    /// The replicas, by index.
    pub replicas: Vec<Replica<S>>,
    /// Messages in flight: (to, message).
    queue: VecDeque<(ReplicaIndex, Message)>,
    /// Replies delivered to clients, in order.
    pub replies: VecDeque<(ClientId, Message)>,
    effects: Vec<Effect>,
}

impl<S: StateMachine> MemoryCluster<S> {
    /// A fresh cluster of `config.replica_count` replicas built by `service(index)`.
    pub fn new(config: &Config, mut service: impl FnMut(ReplicaIndex) -> S) -> MemoryCluster<S> {
        let replicas = (0..config.replica_count)
            .map(|index| Replica::new(config.clone(), index, service(index), Start::Fresh))
            .collect();
        MemoryCluster {
            replicas,
            queue: VecDeque::new(),
            replies: VecDeque::new(),
            effects: Vec::new(),
        }
    }

    /// Hands `message` to replica `to` and queues what it emits.
    pub fn deliver(&mut self, to: ReplicaIndex, message: Message) {
        let mut effects = std::mem::take(&mut self.effects);
        self.replicas[to as usize].on_message(message, &mut effects);
        self.route(to, &mut effects);
        self.effects = effects;
    }

    /// Ends a batch on every replica (the event loop's end of iteration).
    pub fn flush(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        for index in 0..self.replicas.len() {
            self.replicas[index].flush(&mut effects);
            self.route(index as ReplicaIndex, &mut effects);
        }
        self.effects = effects;
    }

    /// Ticks every replica once.
    pub fn tick(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        for index in 0..self.replicas.len() {
            self.replicas[index].on_tick(&mut effects);
            self.route(index as ReplicaIndex, &mut effects);
        }
        self.effects = effects;
    }

    fn route(&mut self, from: ReplicaIndex, effects: &mut Vec<Effect>) {
        // State lives in memory only: every write completes at once.
        self.replicas[from as usize].complete_writes_in_memory(effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, message } => self.queue.push_back((to, message)),
                Effect::Broadcast { message } => {
                    for to in 0..self.replicas.len() as ReplicaIndex {
                        if to != from {
                            self.queue.push_back((to, message.clone()));
                        }
                    }
                }
                Effect::Reply { client, message } => self.replies.push_back((client, message)),
                Effect::Write { .. } => {} // Completed above.
            }
        }
    }

    /// Delivers queued messages (flushing after each) until none is left or `steps_max`
    /// were delivered; returns how many were.
    pub fn run(&mut self, steps_max: usize) -> usize {
        let mut steps = 0;
        while steps < steps_max {
            let Some((to, message)) = self.queue.pop_front() else {
                break;
            };
            self.deliver(to, message);
            self.flush();
            steps += 1;
        }
        steps
    }

    /// Sends a session's message where it asks.
    pub fn send_from_client(&mut self, target: Target, message: Message) {
        match target {
            Target::Replica(to) => self.queue.push_back((to, message)),
            Target::All => {
                for to in 0..self.replicas.len() as ReplicaIndex {
                    self.queue.push_back((to, message.clone()));
                }
            }
        }
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
}
