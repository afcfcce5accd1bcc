//! STUB: API surface only, being replaced by the real implementation.
#![allow(missing_docs, unused)]
use super::*;
use crate::config::Config;
use crate::service::StateMachine;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status { Normal, ViewChange, Recovering }

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start { Fresh, Recover { nonce: u64 } }

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub view_changes: u64,
    pub recoveries: u64,
    pub state_transfers: u64,
    pub checkpoint_transfers: u64,
    pub checkpoints: u64,
    pub prepares_sent: u64,
    pub entries_committed: u64,
    pub messages_dropped: u64,
}

pub struct Replica<S> { service: S, stats: Stats }

impl<S: StateMachine> Replica<S> {
    pub fn new(config: Config, replica: ReplicaIndex, service: S, start: Start) -> Self { todo!() }
    pub fn on_message(&mut self, message: Message, effects: &mut Vec<Effect>) { todo!() }
    pub fn on_tick(&mut self, effects: &mut Vec<Effect>) { todo!() }
    pub fn flush(&mut self, effects: &mut Vec<Effect>) { todo!() }
    pub fn set_clock(&mut self, realtime_ns: u64) { todo!() }
    pub fn accepting_requests(&self) -> bool { todo!() }
    pub fn replica(&self) -> ReplicaIndex { todo!() }
    pub fn view(&self) -> View { todo!() }
    pub fn status(&self) -> Status { todo!() }
    pub fn op(&self) -> Op { todo!() }
    pub fn commit(&self) -> Op { todo!() }
    pub fn is_primary(&self) -> bool { todo!() }
    pub fn checkpoint_op(&self) -> Op { todo!() }
    pub fn log_entries(&self) -> usize { todo!() }
    /// The entry at `op`, if it is still in the log.
    pub fn entry(&self, op: Op) -> Option<&Entry> { todo!() }
    pub fn stats(&self) -> &Stats { &self.stats }
    pub fn service(&self) -> &S { &self.service }
    pub fn invariants(&self) { todo!() }
}
