//! Forged protocol messages, for checking that nothing a peer sends can make a replica
//! panic (the fuzz target `replica_messages` and `tests/forged_messages.rs`).
//!
//! The rule they check: a replica fed any sequence of messages, as if from authenticated
//! peers and without the wire's gate (which refuses many of them first), drops what
//! cannot come from a correct replica instead of panicking. The only panics allowed are
//! the core's own safety assertions about its own state, and the forger makes messages
//! that look like a correct replica's often enough (views and ops near the target's own)
//! to reach deep into every handler, and extreme values (views and ops at their maximum,
//! empty and overlong ranges) to reach every arithmetic edge; reads (paper 6.3) too, as
//! requests and as log entries.

use crate::client::ClientSession;
use crate::config::Config;
use crate::protocol::*;
use crate::service::kv::KvOp;
use crate::service::{Digest, Kv, DIGEST_BYTES};
use crate::testing::MemoryCluster;
use bytes::Bytes;

/// Reads the forger's choices from bytes (a fuzzer's input, or a PRNG's output); past the
/// end every choice is 0, so any input is a complete script.
pub struct Choices<'a> {
    bytes: &'a [u8],
}

impl<'a> Choices<'a> {
    /// Choices read from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Choices<'a> {
        Choices { bytes }
    }

    /// Whether every byte was used.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&first, rest)) => {
                self.bytes = rest;
                first
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |value, _| value << 8 | self.u8() as u64)
    }

    fn below(&mut self, n: u8) -> u8 {
        self.u8() % n
    }
}

/// A 3-replica in-memory cluster with a few committed ops and a checkpoint, the target of
/// forged messages.
pub fn target_cluster() -> MemoryCluster<Kv> {
    let mut config = Config::new(0xf0f0, 3);
    config.checkpoint_interval_ops = 8;
    config.log_tail_ops = 4;
    let mut cluster = MemoryCluster::new(&config, |_| Kv::new());
    let mut session = ClientSession::new(7, 3, 16);
    cluster.register(&mut session);
    for round in 0..20u8 {
        let op = KvOp::Put(Bytes::from_static(b"k"), Bytes::from(vec![round]));
        let (_, target, message) = session.submit(op.encode()).expect("idle session");
        cluster.send_from_client(target, message);
        for _ in 0..100 {
            cluster.run(10_000);
            let answered = std::mem::take(&mut cluster.replies)
                .into_iter()
                .any(|(_, reply)| session.on_message(&reply).is_some());
            if answered {
                break;
            }
            cluster.tick();
        }
    }
    let primary = &cluster.replicas[0];
    assert!(primary.commit() >= 20 && primary.checkpoint_op() > 0);
    cluster
}

/// Plays `choices` against `cluster`: forged messages to its replicas, interleaved with
/// ticks and with delivering what the replicas send each other. Returns how many forged
/// messages were delivered. Panics only if a replica does.
pub fn play(
    cluster: &mut MemoryCluster<Kv>,
    choices: &mut Choices<'_>,
    messages_max: usize,
) -> usize {
    let mut forged = 0;
    while forged < messages_max && !choices.is_empty() {
        match choices.below(16) {
            0 | 1 => cluster.tick(),
            2 | 3 => {
                cluster.run(64);
            }
            4 => {
                // A restart: the replica recovers (paper 4.3) among forged messages.
                let index = choices.below(3);
                let config = cluster.replicas[index as usize].config().clone();
                let start = Start::Recover {
                    nonce: choices.u64(),
                };
                cluster.replicas[index as usize] = Replica::new(config, index, Kv::new(), start);
            }
            _ => {
                let to = choices.below(3);
                let message = forge(&cluster.replicas[to as usize], choices);
                cluster.deliver(to.into(), message);
                cluster.flush();
                forged += 1;
            }
        }
        cluster.replies.clear();
    }
    forged
}

/// One forged message for `target`.
pub fn forge(target: &Replica<Kv>, c: &mut Choices<'_>) -> Message {
    let view = pick_view(target.view(), c);
    let replica = c.below(4);
    let mut epoch = pick_epoch(target.epoch(), c);
    let body = match c.below(17) {
        0 => Body::Prepare(Prepare {
            op_first: pick_op(target, c),
            commit: pick_op(target, c),
            actives_commit: pick_op(target, c),
            stamp: pick_op(target, c),
            entries: entries(c),
        }),
        1 => Body::PrepareOk(PrepareOk {
            op: pick_op(target, c),
            commit: pick_op(target, c),
            stamp: pick_op(target, c),
        }),
        2 => Body::Commit(Commit {
            commit: pick_op(target, c),
            actives_commit: pick_op(target, c),
            stamp: pick_op(target, c),
        }),
        3 => Body::StartViewChange(StartViewChange {
            sender_view: pick_view(target.view(), c),
        }),
        4 => {
            let entries = entries(c);
            let commit = pick_op(target, c);
            Body::DoViewChange(DoViewChange {
                last_normal_view: pick_view(target.view(), c),
                op: if c.below(4) == 0 {
                    pick_op(target, c)
                } else {
                    commit.saturating_add(entries.len() as Op)
                },
                commit,
                actives_commit: pick_op(target, c),
                entries,
            })
        }
        5 => {
            let entries = entries(c);
            let op_first = pick_op(target, c);
            Body::StartView(StartView {
                op: if c.below(4) == 0 {
                    pick_op(target, c)
                } else {
                    op_first
                        .saturating_add(entries.len() as Op)
                        .saturating_sub(1)
                },
                commit: pick_op(target, c),
                op_first,
                entries,
            })
        }
        6 => Body::Recovery(Recovery { nonce: c.u64() }),
        7 => Body::RecoveryResponse(RecoveryResponse {
            nonce: c.u64(),
            empty: c.below(2) == 0,
            normal: c.below(2) == 0,
            op: pick_op(target, c),
            commit: pick_op(target, c),
            epoch_start: pick_op(target, c),
        }),
        8 => Body::GetState(GetState {
            op: pick_op(target, c),
            learner: (c.below(4) == 0).then(|| c.below(8) as ReplicaId),
        }),
        9 => {
            let checkpoint = (c.below(3) == 0).then(|| CheckpointId {
                op: pick_op(target, c),
                timestamp: c.u64(),
                service_pages: c.below(4) as u32,
                clients_pages: c.below(3) as u32,
                root: pick_root(target, c),
            });
            Body::NewState(NewState {
                sender: c.below(8) as ReplicaId,
                commit: pick_op(target, c),
                op: pick_op(target, c),
                vouches: c.below(2) == 1,
                op_first: checkpoint
                    .as_ref()
                    .map_or_else(|| pick_op(target, c), |cp| cp.op.wrapping_add(1)),
                checkpoint,
                entries: entries(c),
            })
        }
        10 => Body::Request(Request {
            client: c.u64(),
            session: pick_op(target, c),
            request: c.u8() as u32,
            operation: operation(c),
            body: match c.below(4) {
                0 => configuration(target, c).to_bytes(),
                // A read's body (6.3): the op the client has seen, near the target's or
                // beyond any, then a query (a kv query or garbage).
                1 => Request::read_body(pick_op(target, c), &bytes(c)),
                _ => bytes(c),
            },
        }),
        12 | 13 => {
            let configuration = configuration(target, c);
            epoch = configuration.epoch();
            Body::StartEpoch(StartEpoch {
                sender: c.below(8) as ReplicaId,
                op: pick_op(target, c),
                configuration,
            })
        }
        14 => Body::EpochStarted,
        15 => Body::GetCheckpoint(GetCheckpoint {
            op: pick_op(target, c),
            root: pick_root(target, c),
            asker: c.below(8) as ReplicaId,
            part: if c.below(2) == 0 {
                let level = c.below(4);
                CheckpointRequest::Manifest {
                    level,
                    start: (c.below(4) as u32) << level,
                }
            } else {
                let mut indexes: Vec<u32> = (0..c.below(4)).map(|_| c.below(8) as u32).collect();
                indexes.sort_unstable();
                indexes.dedup();
                CheckpointRequest::Pages(indexes)
            },
        }),
        16 => Body::CheckpointPart(CheckpointPart {
            op: pick_op(target, c),
            root: pick_root(target, c),
            responder: c.below(8) as ReplicaId,
            content: match c.below(3) {
                0 => {
                    let level = c.below(3);
                    CheckpointContent::Manifest {
                        level,
                        start: (c.below(4) as u32) << level,
                        digests: (0..c.below(5)).map(|_| digest(c)).collect(),
                        proof: (0..c.below(4)).map(|_| digest(c)).collect(),
                    }
                }
                1 => {
                    let mut indexes: Vec<u32> =
                        (0..c.below(4)).map(|_| c.below(8) as u32).collect();
                    indexes.sort_unstable();
                    indexes.dedup();
                    CheckpointContent::Pages(indexes.into_iter().map(|i| (i, bytes(c))).collect())
                }
                _ => CheckpointContent::Unavailable,
            },
        }),
        _ => Body::Reply(Reply {
            client: c.u64(),
            session: 0,
            request: 0,
            op: 0,
            status: ReplyStatus::Ok,
            result: Bytes::new(),
        }),
    };
    Message {
        epoch,
        view,
        replica,
        body,
    }
}

fn pick_epoch(near: u32, c: &mut Choices<'_>) -> u32 {
    match c.below(4) {
        0 => near.saturating_sub(1),
        1 => near.saturating_add(1),
        _ => near,
    }
}

/// Any operation: also reads (paper 6.3), which a correct primary never orders, so an
/// entry holding one tests the gate and the execution path.
fn operation(c: &mut Choices<'_>) -> Operation {
    match c.below(6) {
        0 => Operation::Register,
        1 => Operation::Reconfigure,
        2 => Operation::Read,
        3 => Operation::LeaseRead,
        _ => Operation::Apply,
    }
}

/// A configuration near `target`'s: its successor with members kept, dropped or added
/// (sometimes including `target` itself, sometimes only it), or the same epoch again.
fn configuration(target: &Replica<Kv>, c: &mut Choices<'_>) -> Configuration {
    let current = target.configuration();
    let kept: Vec<ReplicaId> = current.ids().filter(|_| c.below(3) != 0).collect();
    let added: Vec<Bytes> = (0..c.below(4)).map(|_| bytes(c)).collect();
    let mut next = current.propose(&kept, &added);
    for _ in 0..c.below(2) {
        next = next.propose(&next.ids().collect::<Vec<_>>(), &[]);
    }
    next
}

fn pick_view(near: View, c: &mut Choices<'_>) -> View {
    match c.below(8) {
        0 => 0,
        1 => View::MAX,
        2 => VIEW_MAX,
        3 => c.u64() as View,
        _ => near.saturating_add(c.below(4) as View).saturating_sub(1),
    }
}

fn pick_op(target: &Replica<Kv>, c: &mut Choices<'_>) -> Op {
    match c.below(8) {
        0 => 0,
        1 => Op::MAX,
        2 => Op::MAX - c.below(4) as Op,
        3 => c.u64(),
        4 => target
            .commit()
            .saturating_add(c.below(4) as Op)
            .saturating_sub(1),
        _ => target
            .op()
            .saturating_add(c.below(6) as Op)
            .saturating_sub(2),
    }
}

fn entries(c: &mut Choices<'_>) -> Vec<Entry> {
    (0..c.below(5))
        .map(|_| Entry {
            client: c.u64() % 4 + 1,
            session: c.below(40) as Session,
            request: c.below(4) as RequestNumber,
            timestamp: c.u64(),
            operation: operation(c),
            body: bytes(c),
        })
        .collect()
}

/// The root of the target's checkpoint (so that a forged part may match what it
/// serves or fetches), or an arbitrary one.
fn pick_root(target: &Replica<Kv>, c: &mut Choices<'_>) -> Digest {
    match (c.below(2), target.checkpoint_id()) {
        (0, Some(id)) => id.root,
        _ => digest(c),
    }
}

fn digest(c: &mut Choices<'_>) -> Digest {
    let mut digest = [0; DIGEST_BYTES];
    digest.iter_mut().for_each(|byte| *byte = c.u8());
    Digest(digest)
}

fn bytes(c: &mut Choices<'_>) -> Bytes {
    Bytes::from((0..c.below(12)).map(|_| c.u8()).collect::<Vec<u8>>())
}
