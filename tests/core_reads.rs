//! Reads in the protocol core, one replica driven by hand: a strict read is an ordered
//! query that changes nothing; a read at a backup (paper 6.3.2) is answered with the
//! backup's commit number only once it has executed the op its client has seen, waits
//! (bounded in number and time) until then, and is told `Behind` otherwise.

use bytes::Bytes;
use vsr::protocol::{
    Body, Commit, Effect, Entry, Message, Op, Operation, Prepare, Replica, ReplicaIndex, Reply,
    ReplyStatus, Request, Start,
};
use vsr::service::kv::{KvOp, KvResult};
use vsr::service::Kv;
use vsr::Config;

const CLIENT: u64 = 7;
const SESSION: u64 = 1;

fn config() -> Config {
    Config::new(1, 3)
}

fn replica(index: ReplicaIndex, config: Config) -> Replica<Kv> {
    Replica::new(config, index, Kv::new(), Start::Fresh)
}

fn message(view: u32, replica: ReplicaIndex, body: Body) -> Message {
    Message {
        epoch: 0,
        view,
        replica,
        body,
    }
}

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn entry(request: u32, operation: Operation, body: Bytes) -> Entry {
    Entry {
        client: CLIENT,
        session: if operation == Operation::Register {
            0
        } else {
            SESSION
        },
        request,
        timestamp: 100,
        operation,
        body,
    }
}

/// Ops 1..=3: the client's registration (its session is op 1), `put a 1`, `put a 2`.
fn history() -> Vec<Entry> {
    let mut entries = vec![
        entry(1, Operation::Register, Bytes::new()),
        entry(1, Operation::Apply, KvOp::Put(b("a"), b("1")).encode()),
        entry(2, Operation::Apply, KvOp::Put(b("a"), b("2")).encode()),
    ];
    for (at, entry) in entries.iter_mut().enumerate() {
        entry.timestamp = 10 + at as u64; // Strictly increasing, as a primary stamps them.
    }
    entries
}

fn read(number: u32, seen: Op) -> Message {
    let request = Request {
        client: CLIENT,
        session: SESSION,
        request: number,
        operation: Operation::Read,
        body: Request::read_body(seen, &KvOp::Get(b("a")).encode()),
    };
    message(0, 0, Body::Request(request))
}

/// Feeds `input` and completes every write it issued, so that what it sends is out.
fn run(
    replica: &mut Replica<Kv>,
    input: impl FnOnce(&mut Replica<Kv>, &mut Vec<Effect>),
) -> Vec<Reply> {
    let mut effects = Vec::new();
    input(replica, &mut effects);
    let mut out = Vec::new();
    while !effects.is_empty() {
        for effect in std::mem::take(&mut effects) {
            match effect {
                Effect::Write { id, .. } => replica.on_persisted(id, &mut effects),
                Effect::Reply { message, .. } => match message.body {
                    Body::Reply(reply) => out.push(reply),
                    other => panic!("a reply effect holds {other:?}"),
                },
                // Built at once, as by an idle worker.
                Effect::BuildCheckpoint { build, .. } => {
                    if build.run() {
                        replica.on_checkpoint_built(&mut effects);
                    }
                }
                Effect::Send { .. } | Effect::Broadcast { .. } | Effect::KeepPages(_) => {}
            }
        }
    }
    replica.invariants();
    out
}

/// A backup (replica 1 of view 0) holding ops 1..=3, of which it has executed `commit`.
fn backup_holding_history(commit: Op, config: Config) -> Replica<Kv> {
    let mut backup = replica(1, config);
    let prepare = Prepare {
        op_first: 1,
        commit,
        actives_commit: 0,
        stamp: 0,
        entries: history(),
    };
    let replies = run(&mut backup, |r, e| {
        r.on_message(message(0, 0, Body::Prepare(prepare)), e)
    });
    assert!(replies.is_empty(), "a backup answers no request");
    assert_eq!(backup.op(), 3);
    assert_eq!(backup.commit(), commit);
    backup
}

fn value(reply: &Reply) -> Option<KvResult> {
    KvResult::decode(&reply.result)
}

#[test]
fn a_backup_answers_a_read_it_has_executed_far_enough_for_at_once() {
    let mut backup = backup_holding_history(2, config());
    let replies = run(&mut backup, |r, e| r.on_message(read(5, 2), e));
    assert_eq!(replies.len(), 1);
    let reply = &replies[0];
    assert_eq!(reply.status, ReplyStatus::Read);
    assert_eq!(
        (reply.client, reply.session, reply.request),
        (CLIENT, SESSION, 5)
    );
    assert_eq!(
        reply.op, 2,
        "the answer names the commit number it was read at"
    );
    assert_eq!(value(reply), Some(KvResult::Value(b("1"))));
    // A read older than the commit number is answered from the newer state: never older
    // than the session saw, possibly newer.
    let replies = run(&mut backup, |r, e| r.on_message(read(6, 0), e));
    assert_eq!(replies[0].op, 2);
    // A read changes nothing: not the state, not the client table.
    assert_eq!(backup.commit(), 2);
    assert_eq!(backup.client_table().get(CLIENT).unwrap().request, 1);
}

#[test]
fn a_read_waits_until_its_seen_op_executes() {
    let mut backup = backup_holding_history(1, config());
    // Seen op 3 (its own `put a 2`): the backup has executed only op 1.
    assert!(run(&mut backup, |r, e| r.on_message(read(1, 3), e)).is_empty());
    assert!(run(&mut backup, |r, e| r.on_message(read(2, 2), e)).is_empty());
    // The primary's commit number reaches op 2: the read that saw op 2 is answered.
    let commit = |op| {
        move |r: &mut Replica<Kv>, e: &mut Vec<Effect>| {
            r.on_message(
                message(
                    0,
                    0,
                    Body::Commit(Commit {
                        commit: op,
                        actives_commit: 0,
                        stamp: 0,
                    }),
                ),
                e,
            )
        }
    };
    let replies = run(&mut backup, commit(2));
    assert_eq!(replies.len(), 1);
    assert_eq!((replies[0].request, replies[0].op), (2, 2));
    assert_eq!(value(&replies[0]), Some(KvResult::Value(b("1"))));
    // Then op 3: the session reads its own write.
    let replies = run(&mut backup, commit(3));
    assert_eq!(replies.len(), 1);
    assert_eq!((replies[0].request, replies[0].op), (1, 3));
    assert_eq!(value(&replies[0]), Some(KvResult::Value(b("2"))));
}

#[test]
fn a_waiting_read_is_told_to_try_elsewhere_when_its_wait_runs_out() {
    let config = config();
    let wait_ticks = config.normal_timeout_ticks;
    let mut backup = backup_holding_history(3, config);
    // A seen op no replica holds yet (or ever will: a confused or hostile client).
    assert!(run(&mut backup, |r, e| r.on_message(read(9, 1_000_000), e)).is_empty());
    let mut answered = Vec::new();
    let mut ticks = 0;
    while answered.is_empty() {
        ticks += 1;
        assert!(ticks <= wait_ticks, "the read waited past its bound");
        // The primary stays heard from, so the backup stays normal meanwhile.
        let heartbeat = message(
            0,
            0,
            Body::Commit(Commit {
                commit: 3,
                actives_commit: 0,
                stamp: 0,
            }),
        );
        answered = run(&mut backup, |r, e| {
            r.on_message(heartbeat, e);
            r.on_tick(e)
        });
    }
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].status, ReplyStatus::Behind);
    assert_eq!((answered[0].request, answered[0].op), (9, 3));
    assert!(answered[0].result.is_empty());
    let stats = backup.stats();
    assert_eq!((stats.reads_waited, stats.reads_behind), (1, 1));
    assert_eq!(stats.reads_answered, 0);
}

#[test]
fn a_backup_holds_a_bounded_number_of_waiting_reads() {
    let mut config = config();
    config.clients_max = 4;
    let mut backup = backup_holding_history(1, config);
    let mut behind = 0;
    for number in 0..10 {
        let replies = run(&mut backup, |r, e| r.on_message(read(number, 3), e));
        behind += replies.len();
        assert!(replies
            .iter()
            .all(|reply| reply.status == ReplyStatus::Behind));
    }
    assert_eq!(
        behind, 6,
        "four wait (the client table's size), the rest try elsewhere"
    );
    let replies = run(&mut backup, |r, e| {
        r.on_message(
            message(
                0,
                0,
                Body::Commit(Commit {
                    commit: 3,
                    actives_commit: 0,
                    stamp: 0,
                }),
            ),
            e,
        )
    });
    assert_eq!(replies.len(), 4);
    assert!(replies
        .iter()
        .all(|reply| reply.status == ReplyStatus::Read && reply.op == 3));
}

#[test]
fn a_read_at_a_replica_that_is_not_normal_is_told_to_try_elsewhere() {
    let mut backup = backup_holding_history(1, config());
    assert!(run(&mut backup, |r, e| r.on_message(read(1, 3), e)).is_empty());
    // A StartViewChange for view 1 from another replica that has started it: with f = 1
    // that is enough for this replica to join the view change.
    let start_view_change = message(
        1,
        2,
        Body::StartViewChange(vsr::protocol::StartViewChange { sender_view: 1 }),
    );
    let replies = run(&mut backup, |r, e| r.on_message(start_view_change, e));
    assert_ne!(backup.status(), vsr::protocol::Status::Normal);
    assert_eq!(replies.len(), 1, "the waiting read is released");
    assert_eq!(replies[0].status, ReplyStatus::Behind);
    let replies = run(&mut backup, |r, e| r.on_message(read(2, 0), e));
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, ReplyStatus::Behind);
}

#[test]
fn a_strict_read_is_ordered_and_answered_by_query_without_changing_state() {
    let mut primary = replica(0, config());
    let mut backup = backup_holding_history(3, config());
    // The primary learns the same history as a new primary would: through a Prepare it
    // cannot take (it is the primary), so build it up by requests instead.
    let request = |number, operation, body| {
        let session = if operation == Operation::Register {
            0
        } else {
            SESSION
        };
        message(
            0,
            0,
            Body::Request(Request {
                client: CLIENT,
                session,
                request: number,
                operation,
                body,
            }),
        )
    };
    let mut ordered = Vec::new();
    let mut order = |primary: &mut Replica<Kv>, m: Message| {
        let mut effects = Vec::new();
        primary.on_message(m, &mut effects);
        primary.flush(&mut effects);
        for effect in effects {
            match effect {
                Effect::Broadcast { message, .. } => {
                    if let Body::Prepare(prepare) = message.body {
                        ordered.extend(prepare.entries);
                    }
                }
                Effect::Write { id, .. } => primary.on_persisted(id, &mut Vec::new()),
                _ => {}
            }
        }
    };
    order(&mut primary, request(1, Operation::Register, Bytes::new()));
    let query = KvOp::Get(b("a")).encode();
    // The session is op 1: a query in it, once the registration committed (here: the
    // backup's history committed it; the primary needs an acknowledgement).
    let ok = message(
        0,
        1,
        Body::PrepareOk(vsr::protocol::PrepareOk {
            op: 1,
            commit: 0,
            stamp: 0,
        }),
    );
    run(&mut primary, |r, e| r.on_message(ok, e));
    assert_eq!(primary.commit(), 1);
    order(&mut primary, request(1, Operation::Query, query.clone()));
    assert_eq!(ordered.len(), 2);
    assert_eq!(
        ordered[1].operation,
        Operation::Query,
        "a strict read is ordered"
    );
    let ok = message(
        0,
        1,
        Body::PrepareOk(vsr::protocol::PrepareOk {
            op: 2,
            commit: 0,
            stamp: 0,
        }),
    );
    let replies = run(&mut primary, |r, e| r.on_message(ok, e));
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, ReplyStatus::Ok);
    assert_eq!(replies[0].op, 2);
    assert_eq!(value(&replies[0]), Some(KvResult::Nil));
    // It took the session's request number, so a retry is answered from the table.
    assert_eq!(primary.client_table().get(CLIENT).unwrap().request, 1);
    let replies = run(&mut primary, |r, e| {
        r.on_message(request(1, Operation::Query, query), e)
    });
    assert_eq!((replies[0].op, replies[0].status), (2, ReplyStatus::Ok));
    // Every replica executes it with `query`: the backup's state is unchanged by it.
    let before = backup.service().clone();
    let prepare = Prepare {
        op_first: 4,
        commit: 4,
        actives_commit: 0,
        stamp: 0,
        entries: vec![entry(3, Operation::Query, KvOp::Get(b("a")).encode())],
    };
    run(&mut backup, |r, e| {
        r.on_message(message(0, 0, Body::Prepare(prepare)), e)
    });
    assert_eq!(backup.commit(), 4);
    assert!(*backup.service() == before, "a query changed the state");
}

#[test]
fn a_read_without_its_seen_op_is_dropped_not_answered() {
    // The wire's gate refuses it; a caller of the core that skips the gate gets a drop.
    let mut backup = backup_holding_history(3, config());
    let malformed = Request {
        client: CLIENT,
        session: SESSION,
        request: 1,
        operation: Operation::Read,
        body: Bytes::from_static(b"short"),
    };
    let replies = run(&mut backup, |r, e| {
        r.on_message(message(0, 0, Body::Request(malformed)), e)
    });
    assert!(replies.is_empty());
}
