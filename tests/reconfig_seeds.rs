//! Reconfigurations under random faults, seed by seed: a cluster of 3 or 5 replicas
//! grows, shrinks, replaces one member or all of them while two writers put values, with messages lost,
//! reordered and duplicated, links cut, and replicas crashing and coming back (half the
//! seeds keep their writes, `--durability disk`, and restart from them; the others lose
//! their memory). Every seed checks, all along, that replicas agree on every committed op
//! and that their invariants hold; after the faults stop, that the newest configuration
//! runs and that every acknowledged write reads back.
//!
//! This drives the core through the in-memory cluster (`vsr::testing`); the simulator's
//! own random seeds reconfigure too (`sim::reconfigure`), with its network and disks.

use bytes::Bytes;
use std::collections::BTreeMap;
use vsr::protocol::{
    Body, ClientId, Configuration, Entry, GetState, Message, Operation, ReplicaId, ReplyStatus,
    Request, RequestNumber, Session, Start, Status,
};
use vsr::service::kv::{Kv, KvOp, KvResult};
use vsr::testing::MemoryCluster;
use vsr::{Config, Replica};

/// Seeds run by `cargo test`; `RECONFIG_SEEDS=n` runs more.
const SEEDS_DEFAULT: u64 = 1000;

struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// A client with at most one request outstanding, resent to every member of the
/// configuration it knows until answered; a NewEpoch answer moves it to the configuration
/// named.
struct Client {
    id: ClientId,
    session: Session,
    request: RequestNumber,
    configuration: Configuration,
    outstanding: Option<(Operation, Bytes)>,
}

impl Client {
    fn new(id: ClientId, configuration: Configuration) -> Client {
        Client {
            id,
            session: 0,
            request: 0,
            configuration,
            outstanding: Some((Operation::Register, Bytes::new())),
        }
    }

    fn submit(&mut self, operation: Operation, body: Bytes) {
        assert!(self.outstanding.is_none());
        self.outstanding = Some((operation, body));
    }

    fn send(&self, cluster: &mut MemoryCluster<Kv>) {
        let Some((operation, body)) = &self.outstanding else {
            return;
        };
        let (session, request) = match operation {
            Operation::Register => (0, 1),
            _ => (self.session, self.request + 1),
        };
        for id in self.configuration.ids() {
            cluster.send_to(
                id,
                Message {
                    epoch: self.configuration.epoch(),
                    view: 0,
                    replica: 0,
                    body: Body::Request(Request {
                        client: self.id,
                        session,
                        request,
                        operation: *operation,
                        body: body.clone(),
                    }),
                },
            );
        }
    }

    /// Takes a reply addressed to this client; returns the answer to the outstanding
    /// request (status and result) once there is one.
    fn on_reply(&mut self, message: &Message) -> Option<(ReplyStatus, Bytes)> {
        let Body::Reply(reply) = &message.body else {
            return None;
        };
        let (operation, _) = self.outstanding.as_ref()?;
        let request = match operation {
            Operation::Register => 1,
            _ => self.request + 1,
        };
        // A registration's answer names the op it committed at as its session; a late copy
        // of it must not pass for the answer to the first request (both are number 1).
        let registration_reply = reply.status == ReplyStatus::Ok && reply.op == reply.session;
        let matches = match operation {
            Operation::Register => registration_reply || reply.status != ReplyStatus::Ok,
            _ => reply.session == self.session && !registration_reply,
        };
        if reply.request != request || !matches {
            return None;
        }
        match reply.status {
            ReplyStatus::NewEpoch => {
                let next = Configuration::from_bytes(&reply.result).expect("a configuration");
                if next.epoch() > self.configuration.epoch() {
                    self.configuration = next;
                }
                None
            }
            status => {
                match operation {
                    Operation::Register if reply.session != 0 => self.session = reply.session,
                    Operation::Register => {}
                    _ if status == ReplyStatus::Ok => self.request = request,
                    _ => {}
                }
                self.outstanding = None;
                Some((status, reply.result.clone()))
            }
        }
    }
}

/// A new member's ask for committed state before it is a member (warm-up, paper 7.5).
fn is_learner_ask(message: &Message) -> bool {
    matches!(
        message.body,
        Body::GetState(GetState {
            learner: Some(_),
            ..
        })
    )
}

struct Run {
    prng: Prng,
    config: Config,
    cluster: MemoryCluster<Kv>,
    writers: Vec<Client>,
    admin: Client,
    /// Per writer: its key, the value it sent last, and the last one acknowledged.
    last_sent: Vec<u64>,
    acknowledged: Vec<Option<u64>>,
    /// Replicas that crashed and have not come back (retired ones are down too, for good).
    crashed: Vec<bool>,
    /// New members warm up as learners; else their asks are lost, and they get the
    /// whole start by state transfer once the change commits.
    warm_up: bool,
    reconfigurations: u32,
}

impl Run {
    fn newest(&self) -> Configuration {
        self.cluster
            .replicas
            .iter()
            .map(|replica| replica.configuration().clone())
            .max_by_key(Configuration::epoch)
            .expect("replicas")
    }

    fn up(&self, id: usize) -> bool {
        !self.cluster.down[id]
    }

    fn describe(&self) -> String {
        let replicas: Vec<String> = self
            .cluster
            .replicas
            .iter()
            .enumerate()
            .map(|(id, r)| {
                format!(
                    "{id}: epoch {} (from op {}) {:?} view {} op {} commit {} dropped {}{}",
                    r.epoch(),
                    r.epoch_start(),
                    r.status(),
                    r.view(),
                    r.op(),
                    r.commit(),
                    r.stats().messages_dropped,
                    if self.cluster.down[id] { " (down)" } else { "" }
                )
            })
            .collect();
        format!("newest {:?}\n{}", self.newest(), replicas.join("\n"))
    }

    /// Replicas agree on every op any of them committed, and their invariants hold.
    fn check(&self) -> Result<(), String> {
        let mut committed: BTreeMap<u64, (usize, &Entry)> = BTreeMap::new();
        for (id, replica) in self.cluster.replicas.iter().enumerate() {
            replica.invariants();
            for op in replica.checkpoint_op().max(1)..=replica.commit() {
                let Some(entry) = replica.entry(op) else {
                    continue;
                };
                if let Some((other, seen)) = committed.insert(op, (id, entry)) {
                    if seen != entry {
                        return Err(format!("op {op}: replica {id} and {other} disagree"));
                    }
                }
            }
        }
        Ok(())
    }

    fn deliver_some(&mut self, count: usize, lossy: bool) {
        for _ in 0..count {
            let pending = self.cluster.in_flight();
            if pending == 0 {
                break;
            }
            // Mostly in order, sometimes a later one first.
            let position = if self.prng.chance(20) {
                self.prng.below(pending.min(64) as u64) as usize
            } else {
                0
            };
            if lossy && self.prng.chance(5) {
                // Lost.
                self.cluster.deliver_at(position, false);
                continue;
            }
            let duplicate = self.prng.chance(2);
            self.cluster.deliver_at(position, duplicate);
        }
    }

    fn handle_replies(&mut self) -> Result<(), String> {
        let replies: Vec<_> = self.cluster.replies.drain(..).collect();
        for (client, message) in replies {
            if client == self.admin.id {
                // Ok, or Rejected (proposed against a configuration that changed): either
                // way the administrator is free for the next change.
                self.admin.on_reply(&message);
                continue;
            }
            let Some(w) = self.writers.iter().position(|c| c.id == client) else {
                continue;
            };
            let was_put = matches!(self.writers[w].outstanding, Some((Operation::Apply, _)));
            if let Some((status, result)) = self.writers[w].on_reply(&message) {
                if was_put {
                    if status != ReplyStatus::Ok {
                        return Err(format!("writer {w}: put answered {status:?}"));
                    }
                    if KvResult::decode(&result) != Some(KvResult::Ok) {
                        return Err(format!("writer {w}: put result {result:?}"));
                    }
                    self.acknowledged[w] = Some(self.last_sent[w]);
                }
            }
        }
        Ok(())
    }

    fn maybe_reconfigure(&mut self) {
        if self.admin.outstanding.is_some() || self.reconfigurations >= 3 {
            return;
        }
        let newest = self.newest();
        // Only once every member runs the newest epoch (one change at a time; the core
        // refuses a second one while the first is under way anyway).
        let running = newest.ids().all(|id| {
            let replica = &self.cluster.replicas[id as usize];
            replica.epoch() == newest.epoch() && replica.status() == Status::Normal
        });
        if !running || !self.prng.chance(10) {
            return;
        }
        let ids: Vec<ReplicaId> = newest.ids().collect();
        let size = ids.len();
        let (kept, added): (Vec<ReplicaId>, usize) = match self.prng.below(4) {
            0 if size < 7 => (ids.clone(), 2),
            1 if size > 3 => (ids[..size - 2].to_vec(), 0),
            // Every member replaced (the new primary of view 0 is a new member too).
            2 if size == 3 => (Vec::new(), 3),
            _ => {
                let out = self.prng.below(size as u64) as usize;
                let kept = ids.iter().copied().filter(|&id| id != ids[out]).collect();
                (kept, 1)
            }
        };
        let mut addresses = Vec::new();
        for _ in 0..added {
            let id = self.cluster.add_joining(Kv::new());
            self.crashed.push(false);
            addresses.push(bytes(&format!("r{id}")));
        }
        let next = newest.propose(&kept, &addresses);
        self.admin.configuration = newest;
        self.admin.submit(Operation::Reconfigure, next.to_bytes());
        self.reconfigurations += 1;
    }

    /// Crashes one replica (at most one is down at a time), or brings a crashed one back
    /// without its memory, as its operator would: in the configuration it last knew (a
    /// new member that never started comes back joining).
    fn faults(&mut self) {
        let crashed: Vec<usize> = (0..self.crashed.len())
            .filter(|&id| self.crashed[id])
            .collect();
        if let Some(&id) = crashed.first() {
            if self.prng.chance(20) {
                self.restart(id);
            }
            return;
        }
        // Crashes are likelier while an epoch starts: that is when a mistake about who
        // holds the start would lose it.
        let starting =
            self.cluster.replicas.iter().any(|replica| {
                matches!(replica.status(), Status::Transitioning | Status::Retiring)
            });
        if !self.prng.chance(if starting { 25 } else { 3 }) {
            return;
        }
        let candidates: Vec<usize> = (0..self.cluster.replicas.len())
            .filter(|&id| {
                self.up(id) && !self.cluster.replicas[id].is_retired() && self.may_crash(id)
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let id = candidates[self.prng.below(candidates.len() as u64) as usize];
        self.cluster.down[id] = true;
        self.crashed[id] = true;
    }

    /// Whether crashing `id` keeps the failures within f in the newest configuration, the
    /// one before it and the one proposed (a reconfiguration may commit at any moment): a
    /// member that is down, or holds no state it can vouch for yet (recovering,
    /// transitioning, joining), counts as failed (the fault model of the paper: at most f
    /// failures per group).
    fn may_crash(&self, crashing: usize) -> bool {
        let newest = self.newest();
        let previous = self
            .cluster
            .replicas
            .iter()
            .find_map(|replica| replica.configuration_of(newest.epoch().wrapping_sub(1)))
            .cloned();
        let proposed = match &self.admin.outstanding {
            Some((Operation::Reconfigure, body)) => Configuration::from_bytes(body),
            _ => None,
        };
        let newest_epoch = newest.epoch();
        [Some(newest), previous, proposed]
            .into_iter()
            .flatten()
            .all(|configuration| {
                // In the newest epoch, a member still in an earlier one holds nothing of it yet.
                let behind =
                    |epoch: u32| configuration.epoch() == newest_epoch && epoch < newest_epoch;
                let failed = configuration
                    .ids()
                    .filter(|&id| {
                        let replica = &self.cluster.replicas[id as usize];
                        id as usize == crashing
                            || self.cluster.down[id as usize] && !replica.is_retired()
                            || behind(replica.epoch())
                            || !matches!(
                                replica.status(),
                                Status::Normal | Status::ViewChange | Status::Retiring
                            )
                    })
                    .count();
                failed <= configuration.faults_max()
            })
    }

    /// Brings crashed replica `id` back: from its store with disks, else without its
    /// memory, as its operator would start it (in the configuration it last knew; a new
    /// member that never started joins again). A replaced replica without a store is gone
    /// for good.
    fn restart(&mut self, id: usize) {
        let old = &self.cluster.replicas[id];
        let nonce = self.prng.next() | 1;
        let stored = match &self.cluster.stores {
            Some(stores) if stores[id].holds_data() || stores[id].configuration.is_some() => {
                Some(stores[id].clone())
            }
            _ => None,
        };
        let configuration = old.configuration().clone();
        let member = configuration.contains_id(id as ReplicaId);
        let start = match (stored, old.status()) {
            (Some(stored), _) => Start::Restart {
                stored: Box::new(stored),
                nonce,
            },
            (None, Status::Joining) => Start::Join {
                id: id as ReplicaId,
            },
            (None, _) if member => Start::Recover { nonce },
            (None, _) => {
                self.crashed[id] = false;
                return;
            }
        };
        self.cluster.replicas[id] = Replica::in_configuration(
            self.config.clone(),
            configuration,
            id as ReplicaId,
            Kv::new(),
            start,
        );
        self.cluster.down[id] = false;
        self.crashed[id] = false;
    }

    fn round(&mut self, faults: bool) -> Result<(), String> {
        for w in 0..self.writers.len() {
            if self.writers[w].outstanding.is_none() && self.writers[w].session != 0 {
                self.last_sent[w] += 1;
                let key = format!("w{w}");
                let value = format!("{}", self.last_sent[w]);
                self.writers[w].submit(
                    Operation::Apply,
                    KvOp::Put(bytes(&key), bytes(&value)).encode(),
                );
            }
            self.writers[w].send(&mut self.cluster);
        }
        if faults {
            self.maybe_reconfigure();
        }
        self.admin.send(&mut self.cluster);
        if faults {
            self.faults();
            let cut = self
                .prng
                .chance(10)
                .then(|| self.prng.below(self.cluster.replicas.len() as u64));
            let warm_up = self.warm_up;
            self.cluster.drop_filter = Some(Box::new(
                move |from: ReplicaId, to: ReplicaId, message: &Message| {
                    cut.is_some_and(|cut| from == cut || to == cut)
                        || !warm_up && is_learner_ask(message)
                },
            ));
        } else {
            let warm_up = self.warm_up;
            self.cluster.drop_filter = Some(Box::new(move |_, _, message: &Message| {
                !warm_up && is_learner_ask(message)
            }));
        }
        for _ in 0..4 {
            self.deliver_some(400, faults);
            self.handle_replies()?;
            self.check()?;
            self.cluster.tick();
        }
        Ok(())
    }

    fn settled(&self) -> bool {
        let newest = self.newest();
        let running = newest.ids().all(|id| {
            let replica = &self.cluster.replicas[id as usize];
            replica.epoch() == newest.epoch() && replica.status() == Status::Normal
        });
        running
            && self.admin.outstanding.is_none()
            && self.writers.iter().all(|w| w.outstanding.is_none())
    }
}

fn run_seed(seed: u64) -> Result<u32, String> {
    let mut prng = Prng(seed);
    let n = if prng.chance(50) { 3 } else { 5 };
    let mut config = Config::new(u128::from(seed) | 1 << 64, n);
    config.checkpoint_interval_ops = 16;
    config.log_tail_ops = 4;
    let disks = prng.chance(50);
    let warm_up = prng.chance(50);
    let mut cluster = MemoryCluster::new(&config, |_| Kv::new());
    if disks {
        cluster.keep_stores();
    }
    let initial = cluster.replicas[0].configuration().clone();
    let writers = (1..=2).map(|id| Client::new(id, initial.clone())).collect();
    let mut run = Run {
        prng,
        config,
        crashed: vec![false; n as usize],
        warm_up,
        cluster,
        writers,
        admin: Client::new(100, initial),
        last_sent: vec![0; 2],
        acknowledged: vec![None; 2],
        reconfigurations: 0,
    };
    for _ in 0..120 {
        run.round(true)
            .map_err(|e| format!("{e}\n{}", run.describe()))?;
    }
    // Faults stop: crashed replicas come back, and the cluster must settle.
    for id in 0..run.crashed.len() {
        if run.crashed[id] {
            run.restart(id);
        }
    }
    let mut rounds = 0;
    while !run.settled() {
        rounds += 1;
        if rounds > 400 {
            return Err(format!("did not settle\n{}", run.describe()));
        }
        run.round(false)
            .map_err(|e| format!("{e}\n{}", run.describe()))?;
        // `round` submits a new put for idle writers; that is fine: they finish too.
    }
    // Every acknowledged write reads back: each key has one writer, writing in order and
    // retrying each put until answered, so the value read is the last one it sent.
    let newest = run.newest();
    let mut reader = Client::new(200, newest);
    let mut answers = BTreeMap::new();
    for w in 0..run.writers.len() {
        let key = format!("w{w}");
        for attempt in 0.. {
            if attempt > 200 {
                return Err(format!("read of {key} never answered\n{}", run.describe()));
            }
            if reader.outstanding.is_none() {
                if reader.session == 0 {
                    reader.submit(Operation::Register, Bytes::new());
                } else if !answers.contains_key(&key) {
                    reader.submit(Operation::Apply, KvOp::Get(bytes(&key)).encode());
                } else {
                    break;
                }
            }
            reader.send(&mut run.cluster);
            run.cluster.run(1_000_000);
            let replies: Vec<_> = run.cluster.replies.drain(..).collect();
            for (client, message) in replies {
                if client == reader.id {
                    let was_get = matches!(reader.outstanding, Some((Operation::Apply, _)));
                    if let Some((_, result)) = reader.on_reply(&message) {
                        if was_get {
                            answers.insert(key.clone(), result);
                        }
                    }
                }
            }
            run.cluster.tick();
        }
        let read = KvResult::decode(&answers[&key]);
        let sent = run.last_sent[w];
        let expected = if sent == 0 {
            KvResult::Nil
        } else {
            KvResult::Value(bytes(&sent.to_string()))
        };
        if read != Some(expected.clone()) {
            return Err(format!(
                "{key}: read {read:?}, expected {expected:?} (acknowledged {:?})\n{}",
                run.acknowledged[w],
                run.describe()
            ));
        }
    }
    run.check()?;
    Ok(run.newest().epoch())
}

#[test]
fn reconfigurations_under_random_faults() {
    let seeds = std::env::var("RECONFIG_SEEDS")
        .ok()
        .and_then(|seeds| seeds.parse().ok())
        .unwrap_or(SEEDS_DEFAULT);
    let start: u64 = std::env::var("RECONFIG_SEED_START")
        .ok()
        .and_then(|start| start.parse().ok())
        .unwrap_or(0);
    let mut epochs = 0;
    for seed in start..start + seeds {
        match run_seed(seed) {
            Ok(epoch) => epochs += u64::from(epoch),
            Err(failure) => panic!("seed {seed}: {failure}"),
        }
    }
    // The seeds must actually reconfigure, or they test nothing new.
    assert!(
        epochs >= seeds,
        "only {epochs} epochs started over {seeds} seeds"
    );
}
